//! Fuzzes the public API with schemathesis against a real platform
//! (`ops/api-fuzz.sh` runs this; see docs/OPENAPI.md).
//!
//! Starts an isolated platform (idm-testkit, like the e2e tests), creates an
//! account with generous WAF limits (so the fuzzer reaches the handlers rather
//! than the rate limiter), signs a user up for a session, then runs
//! `schemathesis run` against the edge's own `/openapi.json` with the secret
//! key in `Idm-Api-Key` and the session in `Authorization: Bearer`. The exit
//! code is schemathesis's.
//!
//! Environment: `IDM_SCHEMATHESIS` (the schemathesis executable, default
//! `schemathesis`), `IDM_FUZZ_MAX_EXAMPLES` (per operation, default 25),
//! `IDM_FUZZ_SEED`, `IDM_FUZZ_REPORT_DIR` (a JUnit report is written there
//! when set), `IDM_FUZZ_KEY=restricted` (fuzz with the publishable key from
//! an allowed `Origin` instead of the secret key); extra arguments are passed
//! to schemathesis.

use idm_testkit::Platform;
use reqwest::Method;
use serde_json::json;

/// Checks that fail the run: server errors, statuses the document does not
/// list, and bodies or content types that do not match it.
const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance";

/// Operations that end the session the fuzzer signs in with.
const SESSION_ENDING: &str = "^/v1/(client/sign_out|session_keys/revoke)$";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let schemathesis =
        std::env::var("IDM_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let max_examples = std::env::var("IDM_FUZZ_MAX_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let seed = std::env::var("IDM_FUZZ_SEED").unwrap_or_else(|_| "1".to_owned());
    let extra: Vec<String> = std::env::args().skip(1).collect();

    // Fuzzing sends more mail than the default plan's quota allows a month.
    let platform = Platform::start_with(idm_testkit::Options {
        default_plan: idm_core::AccountPlan {
            monthly_email_quota: 1_000_000,
            ..idm_testkit::roomy_plan()
        },
        ..idm_testkit::Options::default()
    })
    .await?;
    let tenant = platform.create_account("Fuzz").await?;
    let limit = |limit: u32| json!({"limit": limit, "window_seconds": 60});
    platform
        .set_waf_policy(
            &tenant,
            json!({
                "backend": limit(1_000_000),
                "client": limit(1_000_000),
                "verification": limit(1_000_000),
                "recipient_limit": 1_000_000,
                "monthly_email_quota": 1_000_000,
            }),
        )
        .await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let signed_up = platform
        .sign_up(
            &tenant,
            "https://app.example.com",
            None,
            "fuzz@example.com",
            "a long enough fuzzing password",
        )
        .await?;
    anyhow::ensure!(signed_up.status == 201, "sign-up: {}", signed_up.json);
    let session = signed_up.str("/session_token");
    // Real resources for the path parameters, so operations on `{id}` reach
    // their handlers' success paths (and their answers get checked against
    // the document) instead of only answering `404`.
    let user = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": "someone@example.com", "region": "weur"})),
        )
        .await?;
    anyhow::ensure!(user.status == 201, "user: {}", user.json);
    let user_id = user.str("/id");
    let token = platform
        .backend(
            Method::POST,
            &format!("/v1/users/{user_id}/personal_tokens"),
            &tenant.secret_key,
            Some(json!({"name": "fuzz", "scopes": ["repo:read"]})),
        )
        .await?;
    anyhow::ensure!(token.status == 201, "token: {}", token.json);
    let spare_key = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &tenant.secret_key,
            Some(json!({"kind": "restricted", "name": "spare"})),
        )
        .await?;
    anyhow::ensure!(spare_key.status == 201, "key: {}", spare_key.json);
    let other_session = platform
        .sign_up(
            &tenant,
            "https://app.example.com",
            None,
            "other@example.com",
            "another long fuzzing password",
        )
        .await?;
    anyhow::ensure!(
        other_session.status == 201,
        "sign-up: {}",
        other_session.json
    );
    let config = std::env::temp_dir().join(format!("idm-api-fuzz-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            r#"[[operations]]
include-path-regex = '^/v1/users/\{{id\}}(/sessions|/sessions/revoke_all|/personal_tokens|/factors/unlock)?$'
parameters = {{ "path.id" = "{user_id}" }}

[[operations]]
include-path = "/v1/users/{{id}}/personal_tokens/{{token_id}}"
parameters = {{ "path.id" = "{user_id}", "path.token_id" = "{token_id}" }}

[[operations]]
include-path = "/v1/api_keys/{{id}}"
parameters = {{ "path.id" = "{key_id}" }}

[[operations]]
include-path = "/v1/sessions/{{id}}/revoke"
parameters = {{ "path.id" = "{session_id}" }}
"#,
            token_id = token.str("/id"),
            key_id = spare_key.str("/id"),
            session_id = other_session.str("/session_id"),
        ),
    )?;

    let restricted = std::env::var("IDM_FUZZ_KEY").is_ok_and(|k| k == "restricted");
    let key = if restricted {
        tenant.restricted_key.clone()
    } else {
        tenant.secret_key.clone()
    };
    let edge = platform.edge_url(0);
    // Two passes: the operations that end the caller's own session run last,
    // so the others are fuzzed with a live session.
    let passes = [
        ("--exclude-path-regex", SESSION_ENDING),
        ("--include-path-regex", SESSION_ENDING),
    ];
    let mut code = 0;
    for (filter, pattern) in passes {
        let mut command = tokio::process::Command::new(&schemathesis);
        command
            .arg("--config-file")
            .arg(&config)
            .args(["--no-color", "run"])
            .arg(format!("{edge}/openapi.json"))
            .args(["--url", &edge])
            .args(["--checks", CHECKS])
            .args(["--max-examples", &max_examples])
            .args(["--seed", &seed])
            // One worker: with more, the coverage phase trips a CPython
            // 3.11 `ast` bug ("AST constructor recursion depth mismatch").
            .args(["--workers", "1"])
            .args(["--request-timeout", "10"])
            .args(["--header", &format!("Idm-Api-Key: {key}")])
            .args(["--header", &format!("Authorization: Bearer {session}")])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--suppress-health-check", "all"])
            .args(["--generation-database", "none"])
            .args([filter, pattern]);
        if restricted {
            command.args(["--header", "Origin: https://app.example.com"]);
        }
        if let Ok(dir) = std::env::var("IDM_FUZZ_REPORT_DIR") {
            command.args(["--report", "junit", "--report-dir", &dir]);
        }
        command.args(&extra);
        match command.status().await {
            Ok(status) => {
                if !status.success() {
                    code = status.code().unwrap_or(1);
                }
            }
            Err(e) => {
                eprintln!("cannot run {schemathesis}: {e}");
                code = 1;
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&config);
    platform.stop().await?;
    std::process::exit(code);
}
