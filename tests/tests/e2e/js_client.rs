//! The browser client (`clients/js`, built to `dist/idmesh.js`) against the
//! running platform, from Node in header mode: `clients/js/test/platform.mjs`
//! drives it, and this test checks its report against what the platform says
//! (the backend API). Cookie mode runs in headless Chromium (edge.rs).

use crate::factor_kit::{tenant, verify};
use anyhow::Context;
use idm_testkit::Platform;
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;

const PASSWORD: &str = "correct horse battery";

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// Node 20 or later, or why not.
fn node() -> Result<PathBuf, String> {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node is not installed ({e})"))?;
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("node answered an unreadable version {version:?}"))?;
    if major < 20 {
        return Err(format!("node {version} is older than 20"));
    }
    Ok(PathBuf::from("node"))
}

#[tokio::test]
async fn the_browser_client_signs_up_refreshes_once_for_concurrent_callers_and_signs_out(
) -> anyhow::Result<()> {
    let node = match node() {
        Ok(node) => node,
        Err(why) => {
            println!("SKIPPED: {why}; ops/test.sh installs Node.js and builds clients/js");
            return Ok(());
        }
    };
    let dist = client_dir().join("dist/idmesh.js");
    // With Node present a missing build is a failure, not a skip: ops/test.sh
    // builds the client before the suite.
    anyhow::ensure!(
        dist.exists(),
        "{} is missing: run `npm --prefix clients/js ci && npm --prefix clients/js run build` (ops/test.sh does)",
        dist.display()
    );
    let platform = Platform::shared().await?;
    let tenant = tenant(platform, "JS").await?;
    let email = "node-client@example.com";
    let out = tokio::process::Command::new(node)
        .arg(client_dir().join("test/platform.mjs"))
        .env("IDM_EDGE_URL", platform.edge_url(0))
        .env("IDM_RESTRICTED_KEY", &tenant.restricted_key)
        .env("IDM_ORIGIN", "https://app.example.com")
        .env("IDM_EMAIL", email)
        .env("IDM_PASSWORD", PASSWORD)
        .kill_on_drop(true)
        .output()
        .await
        .context("running clients/js/test/platform.mjs")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "platform.mjs failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("platform.mjs printed no report: {stderr}"))?;

    let user_id = report["user_id"].as_str().context("no user id")?;
    assert_eq!(report["me_id"], user_id, "{report}");
    assert_eq!(report["me_after_refresh"], user_id, "{report}");
    let session_id = report["signed_up_session"].as_str().context("no session")?;
    // Three concurrent refreshes were one rotation of one session: a second
    // rotation of the same refresh token would have compromised it.
    assert_eq!(
        report["concurrent_refresh_sessions"],
        serde_json::json!([session_id]),
        "{report}"
    );
    assert_eq!(report["wrong_password"], "invalid_credentials", "{report}");
    assert_eq!(report["signed_out_session"], Value::Null, "{report}");
    // Signed out, the client holds no token to send.
    assert_eq!(report["me_after_sign_out"], "unauthenticated", "{report}");
    assert_eq!(
        report["session_changes"],
        serde_json::json!([session_id, session_id, Value::Null]),
        "{report}"
    );

    // The platform agrees: the user exists as signed up, and the token the
    // client held last is revoked for the tenant's backend too.
    let user = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user_id}"),
            &tenant.secret_key,
            None,
        )
        .await?;
    assert_eq!(user.status, 200, "{}", user.json);
    assert_eq!(user.json["email"], email);
    assert_eq!(user.json["name"], "Node Client");
    let last = report["last_session_token"]
        .as_str()
        .context("no last token")?;
    let verified = verify(platform, 0, &tenant, last).await?;
    assert_eq!(verified.status, 401, "{}", verified.json);
    assert_eq!(verified.code(), Some("session_revoked"));

    Ok(())
}
