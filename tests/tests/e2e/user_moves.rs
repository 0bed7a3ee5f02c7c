//! Moving a user between regions (`POST /v1/users/{id}/move`, docs/REGIONS.md
//! "Moving a user"): copy, verify, switch the directory, delete the source,
//! within the EU or among best-effort regions and never out of the EU;
//! resumable after a crash of the worker at any step. Where the data is is
//! checked by reading every regional database directly.

use crate::factor_kit::{code_at, mfa_token, post, tenant, verify_totp, ORIGIN, PASSWORD};
use idm_core::Region;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn schema(tenant: &Tenant) -> String {
    format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"))
}

async fn start_move(
    platform: &Platform,
    key: &str,
    user: &str,
    body: Option<Value>,
) -> anyhow::Result<Response> {
    platform
        .backend(Method::POST, &format!("/v1/users/{user}/move"), key, body)
        .await
}

async fn get_move(platform: &Platform, key: &str, id: &str) -> anyhow::Result<Response> {
    platform
        .backend(Method::GET, &format!("/v1/user_moves/{id}"), key, None)
        .await
}

/// Polls the move until it is completed.
async fn wait_completed(
    platform: &Platform,
    tenant: &Tenant,
    id: &str,
    within: Duration,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let r = get_move(platform, &tenant.secret_key, id).await?;
        if r.status == 200 && r.json["status"] == json!("completed") {
            return Ok(r.json);
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "the move never completed: {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The user's rows in `region`, per table of the issuer's schema: rows that
/// mention the user's id, and rows that mention one of the user's sessions
/// there (refresh tokens). Tables without such rows are left out; no schema
/// there is no rows.
async fn rows_in(
    platform: &Platform,
    tenant: &Tenant,
    region: Region,
    user: &str,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let schema = schema(tenant);
    let db = platform.region_db(region).await?;
    let tables = db
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
            &[&schema],
        )
        .await?;
    let sessions: Vec<String> = if tables.iter().any(|t| t.get::<_, String>(0) == "sessions") {
        db.query(
            &format!("SELECT id FROM {schema}.sessions WHERE user_id = $1"),
            &[&user],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    } else {
        Vec::new()
    };
    let mut found = BTreeMap::new();
    for table in tables {
        let table: String = table.get(0);
        // Revoked sessions' ids and times, kept for edges rebuilding their
        // revocation sets after the rows are gone (no personal data).
        if table == "revoked_session_tombstones" {
            continue;
        }
        let n: i64 = db
            .query_one(
                &format!(
                    "SELECT count(*) FROM {schema}.\"{table}\" t
                      WHERE t::text LIKE '%' || $1 || '%'
                         OR EXISTS (SELECT 1 FROM unnest($2::text[]) s WHERE t::text LIKE '%' || s || '%')"
                ),
                &[&user, &sessions],
            )
            .await?
            .get(0);
        if n > 0 {
            found.insert(table, n);
        }
    }
    Ok(found)
}

/// The user's row of `users` in `region` as JSON text minus nothing: the
/// password hash and sealed TOTP secret must arrive unchanged.
async fn credentials_in(
    platform: &Platform,
    tenant: &Tenant,
    region: Region,
    user: &str,
) -> anyhow::Result<Option<(Option<String>, Option<String>)>> {
    let db = platform.region_db(region).await?;
    let schema = schema(tenant);
    let exists: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = db
        .query_opt(
            &format!("SELECT password_hash, totp_secret_sealed FROM {schema}.users WHERE id = $1"),
            &[&user],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The directory's row: (region, status, placement reason, moved_from).
async fn directory_row(
    platform: &Platform,
    user: &str,
) -> anyhow::Result<(String, String, Option<String>, Option<String>)> {
    let db = platform.global().await?;
    let r = db
        .query_one(
            "SELECT region, status, placement_reason, moved_from FROM directory.users WHERE id = $1",
            &[&user],
        )
        .await?;
    Ok((r.get(0), r.get(1), r.get(2), r.get(3)))
}

/// How many move jobs the worker recorded for the user.
async fn move_jobs(platform: &Platform, user: &str) -> anyhow::Result<i64> {
    let db = platform.global().await?;
    Ok(db
        .query_one(
            "SELECT count(*) FROM deletion.jobs WHERE user_id = $1 AND kind = 'move'",
            &[&user],
        )
        .await?
        .get(0))
}

/// A user in `region` with a password, a TOTP factor (and backup codes), a
/// signed-in session (refresh token, device), a consent and a personal
/// token: rows in most tables of the schema. Returns (user id, TOTP
/// secret, session token, personal token).
async fn rich_user(
    platform: &Platform,
    tenant: &Tenant,
    region: Region,
    email: &str,
) -> anyhow::Result<(String, String, String, String)> {
    let created = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": email, "password": PASSWORD, "region": region.as_str()})),
        )
        .await?;
    anyhow::ensure!(created.status == 201, "create: {}", created.json);
    let user = created.str("/id");
    let signed_in = platform.sign_in(tenant, ORIGIN, email, PASSWORD).await?;
    anyhow::ensure!(signed_in.status == 200, "sign-in: {}", signed_in.json);
    let session = signed_in.str("/session_token");
    let session_id = signed_in.str("/session_id");
    let enrolled = post(
        platform,
        tenant,
        "/v1/client/mfa/totp",
        Some(&session),
        json!({}),
    )
    .await?;
    anyhow::ensure!(enrolled.status == 200, "enroll: {}", enrolled.json);
    let secret = enrolled.str("/secret");
    let code = code_at(&secret, platform.clock.unix())?;
    let confirmed = post(
        platform,
        tenant,
        "/v1/client/mfa/totp/confirm",
        Some(&session),
        json!({ "code": code }),
    )
    .await?;
    anyhow::ensure!(confirmed.status == 200, "confirm: {}", confirmed.json);
    let consent = platform
        .backend(
            Method::POST,
            &format!("/v1/users/{user}/consents"),
            &tenant.secret_key,
            Some(json!({"purpose": "marketing.email", "version": "v1", "granted": true, "session_id": session_id})),
        )
        .await?;
    anyhow::ensure!(consent.status == 201, "consent: {}", consent.json);
    let token = platform
        .backend(
            Method::POST,
            &format!("/v1/users/{user}/personal_tokens"),
            &tenant.secret_key,
            Some(json!({"name": "CI", "scopes": ["repo:read"]})),
        )
        .await?;
    anyhow::ensure!(token.status == 201, "personal token: {}", token.json);
    Ok((user, secret, session, token.str("/token")))
}

/// Signs in with the password and a TOTP code: the new session token.
async fn sign_in_with_totp(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    secret: &str,
) -> anyhow::Result<Response> {
    // A later step than any code used before.
    platform.clock.advance(30);
    let token = mfa_token(platform, tenant, email).await?;
    let code = code_at(secret, platform.clock.unix())?;
    verify_totp(platform, tenant, &token, &code).await
}

/// Moves a rich user from `from` to `to` and checks everything the move
/// promises, reading every regional database.
async fn move_and_check(
    platform: &Platform,
    tenant: &Tenant,
    from: Region,
    to: Region,
) -> anyhow::Result<()> {
    let email = idm_testkit::unique_email("mover");
    let (user, secret, old_session, old_token) = rich_user(platform, tenant, from, &email).await?;
    let before = rows_in(platform, tenant, from, &user).await?;
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "backup_codes",
        "devices",
        "consents",
        "personal_tokens",
    ] {
        assert!(before.contains_key(table), "{table} missing: {before:?}");
    }
    let credentials = credentials_in(platform, tenant, from, &user).await?;
    assert!(
        credentials
            .as_ref()
            .is_some_and(|(hash, totp)| hash.is_some() && totp.is_some()),
        "{credentials:?}"
    );
    for region in Region::ALL.into_iter().filter(|r| *r != from) {
        assert_eq!(
            rows_in(platform, tenant, region, &user).await?,
            BTreeMap::new(),
            "{region} before the move"
        );
    }

    let started = start_move(
        platform,
        &tenant.secret_key,
        &user,
        Some(json!({"region": to.as_str()})),
    )
    .await?;
    assert_eq!(started.status, 202, "{}", started.json);
    let id = started.str("/id");
    assert!(id.starts_with("mov_"), "{id}");
    assert_eq!(started.json["from_region"], json!(from.as_str()));
    assert_eq!(started.json["to_region"], json!(to.as_str()));
    let names: Vec<&str> = started.json["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, idm_core::proto::moves::STEPS);

    let done = wait_completed(platform, tenant, &id, Duration::from_secs(60)).await?;
    for step in done["steps"].as_array().into_iter().flatten() {
        assert_eq!(step["status"], json!("completed"), "{done}");
    }
    assert!(done["completed_at"].is_string(), "{done}");
    // The verification compared every table's rows in both regions.
    let verified = &done["steps"][3];
    assert_eq!(verified["name"], json!("verify"));
    assert_eq!(verified["counts"]["users"], json!(1), "{done}");
    assert!(
        verified["counts"]["tables_verified"].as_i64() >= Some(7),
        "{done}"
    );

    // Every row is in the target, once, and nowhere else.
    assert_eq!(rows_in(platform, tenant, to, &user).await?, before);
    for region in Region::ALL.into_iter().filter(|r| *r != to) {
        assert_eq!(
            rows_in(platform, tenant, region, &user).await?,
            BTreeMap::new(),
            "{region} after the move"
        );
    }
    assert_eq!(
        credentials_in(platform, tenant, to, &user).await?,
        credentials
    );
    assert_eq!(
        directory_row(platform, &user).await?,
        (
            to.as_str().to_owned(),
            "active".to_owned(),
            Some("moved".to_owned()),
            Some(from.as_str().to_owned())
        )
    );

    // The evidence names the new region and says it was moved.
    let evidence = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user}/residency"),
            &tenant.secret_key,
            None,
        )
        .await?;
    assert_eq!(evidence.status, 200, "{}", evidence.json);
    assert_eq!(evidence.json["region"], json!(to.as_str()));
    assert_eq!(evidence.json["store"], json!(format!("user-store-{to}")));
    assert_eq!(evidence.json["reason"], json!("moved"));
    assert_eq!(evidence.json["moved_from"], json!(from.as_str()));
    assert!(evidence.json["moved_at"].is_string(), "{}", evidence.json);
    let got = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user}"),
            &tenant.secret_key,
            None,
        )
        .await?;
    assert_eq!(got.json["region"], json!(to.as_str()), "{}", got.json);

    // The old session named the old region: it was revoked at the move.
    let verified = crate::factor_kit::verify(platform, 0, tenant, &old_session).await?;
    assert_eq!(verified.status, 401, "{}", verified.json);
    // So did the personal token (it names the old region).
    let r = platform
        .backend(
            Method::POST,
            "/v1/personal_tokens/verify",
            &tenant.secret_key,
            Some(json!({ "token": old_token })),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("unauthenticated")),
        "{}",
        r.json
    );
    // The same password and the same authenticator work in the new region.
    let signed_in = sign_in_with_totp(platform, tenant, &email, &secret).await?;
    assert_eq!(signed_in.status, 200, "{}", signed_in.json);
    let session = signed_in.str("/session_token");
    let verified = crate::factor_kit::verify(platform, 0, tenant, &session).await?;
    assert_eq!(verified.status, 200, "{}", verified.json);

    let event = platform.last_event(&tenant.issuer_id, "user.moved").await?;
    assert_eq!(
        event.map(|e| e["data"].clone()),
        Some(json!({
            "user_id": user,
            "move_id": id,
            "from_region": from.as_str(),
            "to_region": to.as_str(),
        }))
    );
    Ok(())
}

#[tokio::test]
async fn a_best_effort_user_moves_with_every_row_and_signs_in_as_before() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Mover").await?;
    move_and_check(platform, &a, Region::Wnam, Region::Enam).await
}

#[tokio::test]
async fn an_eu_user_moves_within_the_eu_only() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "EU mover").await?;
    move_and_check(platform, &a, Region::Weur, Region::Eeur).await?;

    // Out of the EU: refused, nothing written anywhere.
    let email = idm_testkit::unique_email("stays");
    let created = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": email, "password": PASSWORD, "region": "weur"})),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let user = created.str("/id");
    for target in ["wnam", "apac", "afr"] {
        let r = start_move(
            platform,
            &a.secret_key,
            &user,
            Some(json!({"region": target})),
        )
        .await?;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("residency_violation")),
            "{}",
            r.json
        );
    }
    assert_eq!(move_jobs(platform, &user).await?, 0);
    assert_eq!(
        directory_row(platform, &user).await?,
        (
            "weur".to_owned(),
            "active".to_owned(),
            Some("hint".to_owned()),
            None
        )
    );
    for region in Region::ALL.into_iter().filter(|r| *r != Region::Weur) {
        assert_eq!(
            rows_in(platform, &a, region, &user).await?,
            BTreeMap::new(),
            "{region}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn moves_outside_the_policy_another_tenants_and_bad_requests_are_refused(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Policy mover").await?;
    let b = tenant(platform, "Other tenant").await?;
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &a.secret_key,
            Some(json!({"policy": {"allowed_regions": ["wnam", "enam", "weur"]}})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let email = idm_testkit::unique_email("policy");
    let created = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": email, "password": PASSWORD, "region": "wnam"})),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let user = created.str("/id");
    let to = |region: &str| Some(json!({ "region": region }));

    // A region outside allowed_regions.
    let r = start_move(platform, &a.secret_key, &user, to("sam")).await?;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("residency_violation")),
        "{}",
        r.json
    );
    // The region it is in.
    let r = start_move(platform, &a.secret_key, &user, to("wnam")).await?;
    assert_eq!(
        (r.status, r.code()),
        (422, Some("validation_failed")),
        "{}",
        r.json
    );
    // Bad input: unknown region, no body, another field, a malformed id.
    let r = start_move(platform, &a.secret_key, &user, to("mars")).await?;
    assert_eq!(r.status / 100, 4, "{}", r.json);
    assert!(
        matches!(r.code(), Some("validation_failed" | "invalid_request")),
        "{}",
        r.json
    );
    let r = start_move(platform, &a.secret_key, &user, None).await?;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("invalid_request")),
        "{}",
        r.json
    );
    let r = start_move(
        platform,
        &a.secret_key,
        &user,
        Some(json!({"region": "enam", "force": true})),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (400, Some("invalid_request")),
        "{}",
        r.json
    );
    // Malformed ids are unknown ids (as everywhere): 404.
    let r = start_move(platform, &a.secret_key, "not-a-user", to("enam")).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    for id in ["del_nope", "mov_nope", &format!("mov_{}", "0".repeat(32))] {
        let r = get_move(platform, &a.secret_key, id).await?;
        assert_eq!(
            (r.status, r.code()),
            (404, Some("not_found")),
            "{id}: {}",
            r.json
        );
    }
    // An unknown (well-formed) user.
    let unknown = format!("usr_{}", "0".repeat(32));
    let r = start_move(platform, &a.secret_key, &unknown, to("enam")).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    // Another tenant's key: the user does not exist for it.
    let r = start_move(platform, &b.secret_key, &user, to("enam")).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    // A key without users:manage.
    let reader = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "reader", "scopes": ["users:read"]})),
        )
        .await?;
    assert_eq!(reader.status, 201, "{}", reader.json);
    let r = start_move(platform, &reader.str("/key"), &user, to("enam")).await?;
    assert_eq!(r.status, 403, "{}", r.json);
    let writer = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "writer", "scopes": ["users:write"]})),
        )
        .await?;
    assert_eq!(writer.status, 201, "{}", writer.json);
    let r = start_move(platform, &writer.str("/key"), &user, to("enam")).await?;
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(move_jobs(platform, &user).await?, 0);
    assert_eq!(
        directory_row(platform, &user).await?,
        (
            "wnam".to_owned(),
            "active".to_owned(),
            Some("hint".to_owned()),
            None
        )
    );

    // Into the EU from best-effort, even where the policy allows the
    // region: a move stays within one jurisdiction.
    let r = start_move(platform, &a.secret_key, &user, to("weur")).await?;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("residency_violation")),
        "{}",
        r.json
    );
    assert_eq!(move_jobs(platform, &user).await?, 0);

    // The job belongs to the tenant: another's key does not see it, a
    // reading key does.
    let r = start_move(platform, &a.secret_key, &user, to("enam")).await?;
    assert_eq!(r.status, 202, "{}", r.json);
    let id = r.str("/id");
    let r = get_move(platform, &b.secret_key, &id).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let r = get_move(platform, &reader.str("/key"), &id).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    wait_completed(platform, &a, &id, Duration::from_secs(60)).await?;
    assert_eq!(
        rows_in(platform, &a, Region::Wnam, &user).await?,
        BTreeMap::new()
    );
    assert_eq!(
        rows_in(platform, &a, Region::Enam, &user)
            .await?
            .get("users"),
        Some(&1)
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_move_requests_make_one_job() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Racing mover").await?;
    let email = idm_testkit::unique_email("race");
    let created = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": email, "password": PASSWORD, "region": "oc"})),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let user = created.str("/id");
    let requests = (0..6).map(|i| {
        let target = if i % 2 == 0 { "apac" } else { "sam" };
        start_move(
            platform,
            &a.secret_key,
            &user,
            Some(json!({ "region": target })),
        )
    });
    let answers = futures::future::join_all(requests).await;
    let mut ids = std::collections::BTreeSet::new();
    let mut targets = std::collections::BTreeSet::new();
    for answer in answers {
        let r = answer?;
        assert_eq!(r.status, 202, "{}", r.json);
        ids.insert(r.str("/id"));
        targets.insert(r.str("/to_region"));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(move_jobs(platform, &user).await?, 1);
    let id = ids.into_iter().next().unwrap_or_default();
    let target = Region::parse(&targets.into_iter().next().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    wait_completed(platform, &a, &id, Duration::from_secs(60)).await?;
    for region in Region::ALL {
        let rows = rows_in(platform, &a, region, &user).await?;
        assert_eq!(
            rows.get("users").copied().unwrap_or(0),
            i64::from(region == target),
            "{region}: {rows:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_move_survives_the_worker_crashing_after_each_step_and_refuses_a_down_target(
) -> anyhow::Result<()> {
    // Own platform: stops a store and kills the deletion worker.
    let mut platform = Platform::start_with(Options::default()).await?;
    let a = tenant(&platform, "Crashing mover").await?;
    let email = idm_testkit::unique_email("crash");
    let (user, secret, _, _) = rich_user(&platform, &a, Region::Wnam, &email).await?;
    let before = rows_in(&platform, &a, Region::Wnam, &user).await?;

    // A target store that is down: refused upfront, nothing written.
    platform.stop_service("user-store-sam").await?;
    let r = start_move(
        &platform,
        &a.secret_key,
        &user,
        Some(json!({"region": "sam"})),
    )
    .await?;
    assert_eq!(
        (r.status, r.code()),
        (503, Some("region_unavailable")),
        "{}",
        r.json
    );
    assert_eq!(move_jobs(&platform, &user).await?, 0);
    assert_eq!(directory_row(&platform, &user).await?.1, "active");
    platform.start_service("user-store-sam").await?;

    // The worker dies right after copying, after switching the directory
    // and after deleting the source, each time before recording the step.
    let crash_at = ["copy", "switch_directory", "delete_source"];
    for step in crash_at {
        idm_deletion_worker::failpoint::crash_after(&user, step);
    }
    let started = start_move(
        &platform,
        &a.secret_key,
        &user,
        Some(json!({"region": "enam"})),
    )
    .await?;
    assert_eq!(started.status, 202, "{}", started.json);
    let id = started.str("/id");
    for step in crash_at {
        let waited = Instant::now();
        while !idm_deletion_worker::failpoint::hit(&user, step) {
            anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(60),
                "never reached {step}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if step == "copy" {
            // Mid-move: the user can be neither read, changed nor deleted,
            // and signing in fails as for an unknown address.
            let r = platform
                .backend(
                    Method::GET,
                    &format!("/v1/users/{user}"),
                    &a.secret_key,
                    None,
                )
                .await?;
            assert_eq!(
                (r.status, r.code()),
                (409, Some("user_being_moved")),
                "{}",
                r.json
            );
            assert_eq!(r.json["error"]["move_id"], json!(id), "{}", r.json);
            let r = platform
                .backend(
                    Method::DELETE,
                    &format!("/v1/users/{user}"),
                    &a.secret_key,
                    None,
                )
                .await?;
            assert_eq!(
                (r.status, r.code()),
                (409, Some("user_being_moved")),
                "{}",
                r.json
            );
            let r = platform.sign_in(&a, ORIGIN, &email, PASSWORD).await?;
            assert_eq!(
                (r.status, r.code()),
                (401, Some("invalid_credentials")),
                "{}",
                r.json
            );
            // A second request answers the running job.
            let again = start_move(
                &platform,
                &a.secret_key,
                &user,
                Some(json!({"region": "sam"})),
            )
            .await?;
            assert_eq!(again.status, 202, "{}", again.json);
            assert_eq!(again.str("/id"), id);
            assert_eq!(again.str("/to_region"), "enam");
        }
        platform.kill_service("deletion-worker").await?;
        platform.start_service("deletion-worker").await?;
    }
    let done = wait_completed(&platform, &a, &id, Duration::from_secs(90)).await?;
    // The crashed steps ran again (their first run was never recorded).
    for (i, name) in idm_core::proto::moves::STEPS.iter().enumerate() {
        let attempts = done["steps"][i]["attempts"].as_i64().unwrap_or(0);
        assert!(attempts >= 1, "{name}: {done}");
    }
    assert_eq!(move_jobs(&platform, &user).await?, 1);
    // No row lost, none duplicated, none left behind.
    assert_eq!(rows_in(&platform, &a, Region::Enam, &user).await?, before);
    for region in Region::ALL.into_iter().filter(|r| *r != Region::Enam) {
        assert_eq!(
            rows_in(&platform, &a, region, &user).await?,
            BTreeMap::new(),
            "{region}"
        );
    }
    assert_eq!(
        directory_row(&platform, &user).await?,
        (
            "enam".to_owned(),
            "active".to_owned(),
            Some("moved".to_owned()),
            Some("wnam".to_owned())
        )
    );
    let signed_in = sign_in_with_totp(&platform, &a, &email, &secret).await?;
    assert_eq!(signed_in.status, 200, "{}", signed_in.json);
    platform.stop().await
}
