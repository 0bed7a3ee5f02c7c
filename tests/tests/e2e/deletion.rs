//! User deletion as a durable workflow: `DELETE /v1/users/{id}` starts a
//! job on the `DELETIONS` queue whose steps revoke sessions and personal
//! tokens, remove memberships, delete the user's regional data, the
//! directory and blind-index entries, and emit `user.deleted`. Afterwards
//! nothing in any region, the directory or Redis refers to the user.

use idm_core::Region;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

async fn tenant(platform: &Platform, name: &str) -> anyhow::Result<Tenant> {
    let tenant = platform.create_account(name).await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    Ok(tenant)
}

fn schema(tenant: &Tenant) -> String {
    format!("iss_{}", tenant.issuer_id.trim_start_matches("iss_"))
}

pub(crate) async fn delete(
    platform: &Platform,
    tenant: &Tenant,
    user: &str,
) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::DELETE,
            &format!("/v1/users/{user}"),
            &tenant.secret_key,
            None,
        )
        .await
}

async fn job(platform: &Platform, tenant: &Tenant, id: &str) -> anyhow::Result<Response> {
    platform
        .backend(
            Method::GET,
            &format!("/v1/deletions/{id}"),
            &tenant.secret_key,
            None,
        )
        .await
}

/// Polls the job until `done` says so (or fails after `within`).
pub(crate) async fn wait_for(
    platform: &Platform,
    tenant: &Tenant,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        // Not readable for a moment while NATS restarts: ask again.
        let r = job(platform, tenant, id).await?;
        if r.status == 200 && done(&r.json) {
            return Ok(r.json);
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "job never got there: {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn status(job: &Value) -> &str {
    job["status"].as_str().unwrap_or_default()
}

/// Every row of the issuer's schema, in every region, that mentions the
/// user (any column: the row as text), as `region.table`.
async fn regional_traces(
    platform: &Platform,
    tenant: &Tenant,
    user: &str,
) -> anyhow::Result<Vec<String>> {
    let schema = schema(tenant);
    let mut found = Vec::new();
    for region in Region::ALL {
        let db = platform.region_db(region).await?;
        let tables = db
            .query(
                "SELECT table_name::text FROM information_schema.tables
                  WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
                &[&schema],
            )
            .await?;
        for table in tables {
            let table: String = table.get(0);
            let n: i64 = db
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {schema}.\"{table}\" t WHERE t::text LIKE '%' || $1 || '%'"
                    ),
                    &[&user],
                )
                .await?
                .get(0);
            if n > 0 {
                found.push(format!("{region}.{table}"));
            }
        }
    }
    Ok(found)
}

/// Every row of the global `directory` schema that mentions the user.
async fn directory_traces(platform: &Platform, user: &str) -> anyhow::Result<Vec<String>> {
    let db = platform.global().await?;
    let tables = db
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = 'directory' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await?;
    let mut found = Vec::new();
    for table in tables {
        let table: String = table.get(0);
        let n: i64 = db
            .query_one(
                &format!("SELECT count(*) FROM directory.\"{table}\" t WHERE t::text LIKE '%' || $1 || '%'"),
                &[&user],
            )
            .await?
            .get(0);
        if n > 0 {
            found.push(table);
        }
    }
    Ok(found)
}

/// Every Redis key of this platform whose name or value mentions the user.
async fn redis_traces(platform: &Platform, user: &str) -> anyhow::Result<Vec<String>> {
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", platform.redis_prefix))
        .query_async(&mut redis)
        .await?;
    let mut found = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await?;
        let value: String = match kind.as_str() {
            "string" => redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<Vec<u8>>>(&mut redis)
                .await?
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default(),
            "hash" => {
                let all: Vec<Vec<u8>> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await?;
                all.iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            _ => String::new(),
        };
        if key.contains(user) || value.contains(user) {
            found.push(key);
        }
    }
    Ok(found)
}

#[tokio::test]
async fn a_deleted_user_leaves_no_trace_and_loses_every_session() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Deleting").await?;
    let b = tenant(platform, "Bystander").await?;
    let email = idm_testkit::unique_email("leaving");
    let client = platform.client(&a).in_country("au");
    let signed_up = client.sign_up(&email, PASSWORD).await?.ok()?;
    let user = signed_up.user.id.to_string();
    let region = signed_up.user.region;
    let second = client.sign_in(&email, PASSWORD).await?.ok()?;
    // A personal token, an organization membership: everything a user has.
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/users/{user}/personal_tokens"),
            &a.secret_key,
            Some(json!({"name": "CLI", "scopes": ["repo:read"]})),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let token = r.str("/token");
    let org = platform
        .backend(
            Method::POST,
            "/v1/organizations",
            &a.secret_key,
            Some(json!({"name": "Team"})),
        )
        .await?;
    let org_id = org.str("/id");
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/organizations/{org_id}/memberships"),
            &a.secret_key,
            Some(json!({"user_id": user, "role": "member"})),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert!(!regional_traces(platform, &a, &user).await?.is_empty());

    // Refused: a restricted key, another issuer (a plain 404), an unknown user.
    let r = platform
        .backend(
            Method::DELETE,
            &format!("/v1/users/{user}"),
            &a.restricted_key,
            None,
        )
        .await?;
    assert!([401, 403].contains(&r.status), "{} {}", r.status, r.json);
    let r = delete(platform, &b, &user).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{}", r.json);
    let r = delete(platform, &a, "usr_00000000000000000000000000000000").await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    let r = delete(platform, &a, "not-an-id").await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));

    let started = delete(platform, &a, &user).await?;
    assert_eq!(started.status, 202, "{}", started.json);
    let id = started.str("/id");
    assert!(id.starts_with("del_"), "{id}");
    assert_eq!(started.str("/user_id"), user);
    let names: Vec<&str> = started.json["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "revoke_sessions",
            "revoke_personal_tokens",
            "remove_memberships",
            "delete_regional_data",
            "delete_directory_entries",
            "emit_user_deleted"
        ]
    );
    // A second request is the same job, not a second one.
    let again = delete(platform, &a, &user).await?;
    assert_eq!((again.status, again.str("/id")), (202, id.clone()));
    // Another issuer cannot read the job; restricted keys cannot either.
    let r = job(platform, &b, &id).await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/deletions/{id}"),
            &a.restricted_key,
            None,
        )
        .await?;
    assert!([401, 403].contains(&r.status), "{} {}", r.status, r.json);
    let r = job(platform, &a, "del_nope").await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));

    let done = wait_for(platform, &a, &id, Duration::from_secs(60), |j| {
        status(j) == "completed"
    })
    .await?;
    for step in done["steps"].as_array().into_iter().flatten() {
        assert_eq!(step["status"], json!("completed"), "{done}");
        assert!(step["attempts"].as_i64() >= Some(1), "{done}");
    }
    // The receipt: what was removed where and when, ids and counts only.
    let receipt = &done["receipt"];
    assert_eq!(receipt["user_id"], json!(user));
    assert_eq!(receipt["region"], json!(region));
    assert_eq!(
        receipt["steps"].as_array().map(Vec::len),
        Some(6),
        "{receipt}"
    );
    assert_eq!(
        receipt["steps"][0]["removed"]["sessions_revoked"],
        json!(2),
        "{receipt}"
    );
    assert_eq!(
        receipt["steps"][1]["removed"]["personal_tokens_revoked"],
        json!(1),
        "{receipt}"
    );
    assert_eq!(
        receipt["steps"][2]["removed"]["memberships"],
        json!(1),
        "{receipt}"
    );
    assert_eq!(
        receipt["steps"][3]["removed"]["users"],
        json!(1),
        "{receipt}"
    );
    assert_eq!(
        receipt["steps"][4]["removed"]["directory_entries"],
        json!(1),
        "{receipt}"
    );
    assert!(!receipt.to_string().contains(&email), "{receipt}");
    assert!(!receipt.to_string().contains('@'), "{receipt}");

    // Nothing refers to the user: any region, the directory, Redis.
    assert_eq!(
        regional_traces(platform, &a, &user).await?,
        Vec::<String>::new()
    );
    assert_eq!(
        directory_traces(platform, &user).await?,
        Vec::<String>::new()
    );
    assert_eq!(redis_traces(platform, &user).await?, Vec::<String>::new());
    // The audit log keeps its rows about the user (ids only) but not the
    // networks they came from: the sign-up and sign-in were made from the
    // user's own address.
    let global = platform.global().await?;
    let audit: Vec<(i64, i64)> = global
        .query(
            "SELECT count(*), count(network) FROM account.audit_events
              WHERE issuer_id = $1 AND (actor = $2 OR data->>'user_id' = $2)",
            &[&a.issuer_id, &user],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let (rows, with_network) = audit.first().copied().unwrap_or_default();
    assert!(rows > 0, "the audit log still says what happened");
    assert_eq!(
        with_network, 0,
        "no network of the user is left in the audit log"
    );
    assert!(
        receipt["steps"][4]["removed"]["audit_networks"]
            .as_i64()
            .is_some_and(|n| n > 0),
        "{receipt}"
    );

    // The sessions are over on every edge, sign-in and the token fail.
    for session in [&signed_up.session_token, &second.session_token] {
        let r = client.me(session.expose()).await?;
        assert!(r.error().is_ok(), "a deleted user's session still works");
    }
    assert!(client
        .refresh(second.refresh_token.expose())
        .await?
        .error()
        .is_ok());
    let r = platform
        .sign_in(&a, "https://app.example.com", &email, PASSWORD)
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("invalid_credentials")),
        "{}",
        r.json
    );
    let r = platform
        .backend(
            Method::POST,
            "/v1/personal_tokens/verify",
            &a.secret_key,
            Some(json!({"token": token})),
        )
        .await?;
    assert_eq!(r.status, 401, "{}", r.json);
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.code(), Some("not_found"));

    // Announced with ids only.
    let deleted = platform.last_event(&a.issuer_id, "user.deleted").await?;
    assert_eq!(
        deleted.map(|e| e["data"].clone()),
        Some(json!({"user_id": user, "deletion_id": id, "region": region}))
    );
    let left = platform
        .last_event(&a.issuer_id, "membership.deleted")
        .await?;
    assert_eq!(
        left.map(|e| e["data"]["user_id"].clone()),
        Some(json!(user))
    );

    // Deleting again: the finished job, not a second one.
    let r = delete(platform, &a, &user).await?;
    assert_eq!(
        (r.status, r.str("/id"), r.str("/status")),
        (202, id.clone(), "completed".to_owned())
    );
    // The address is free again: its index entry went with the user.
    let back = client.sign_up(&email, PASSWORD).await?.ok()?;
    assert_ne!(back.user.id.to_string(), user);
    Ok(())
}

#[tokio::test]
async fn a_deletion_stalls_visibly_while_the_store_is_down_and_survives_worker_and_nats_restarts(
) -> anyhow::Result<()> {
    // Own platform: stops a store and kills the deletion worker.
    let mut platform = Platform::start_with(Options::default()).await?;
    let a = tenant(&platform, "Outage").await?;
    let created = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": "stuck@example.com", "password": PASSWORD, "region": "oc"})),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let user = created.str("/id");
    let signed_in = platform
        .sign_in(&a, "https://app.example.com", "stuck@example.com", PASSWORD)
        .await?;
    assert_eq!(signed_in.status, 200, "{}", signed_in.json);
    let org = platform
        .backend(
            Method::POST,
            "/v1/organizations",
            &a.secret_key,
            Some(json!({"name": "Ops"})),
        )
        .await?;
    let org_id = org.str("/id");

    platform.stop_service("user-store-oc").await?;
    let started = delete(&platform, &a, &user).await?;
    assert_eq!(started.status, 202, "{}", started.json);
    let id = started.str("/id");

    // Being deleted: it cannot be read, changed or signed in to.
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
        (409, Some("deletion_in_progress")),
        "{}",
        r.json
    );
    assert_eq!(r.json["error"]["deletion_id"], json!(id), "{}", r.json);
    let r = platform
        .backend(
            Method::POST,
            &format!("/v1/organizations/{org_id}/memberships"),
            &a.secret_key,
            Some(json!({"user_id": user, "role": "member"})),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (409, Some("deletion_in_progress")),
        "{}",
        r.json
    );
    let r = platform
        .sign_in(&a, "https://app.example.com", "stuck@example.com", PASSWORD)
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("invalid_credentials")),
        "{}",
        r.json
    );

    // The store's steps fail, are retried, and the job says so.
    let stalled = wait_for(&platform, &a, &id, Duration::from_secs(60), |j| {
        status(j) == "stalled"
    })
    .await?;
    let failing = &stalled["steps"][0];
    assert_eq!(failing["name"], json!("revoke_sessions"), "{stalled}");
    assert_eq!(failing["status"], json!("failing"), "{stalled}");
    assert!(failing["attempts"].as_i64() >= Some(2), "{stalled}");
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{stalled}"
    );
    assert_eq!(stalled["steps"][3]["status"], json!("pending"), "{stalled}");
    let event = platform
        .last_event(&a.issuer_id, "user.deletion_stalled")
        .await?;
    assert_eq!(
        event.map(|e| (e["data"]["deletion_id"].clone(), e["data"]["step"].clone())),
        Some((json!(id), json!("revoke_sessions")))
    );
    // Still retrying: the attempts go up.
    let later = wait_for(&platform, &a, &id, Duration::from_secs(30), |j| {
        j["steps"][0]["attempts"].as_i64() > failing["attempts"].as_i64()
    })
    .await?;
    assert_eq!(status(&later), "stalled");

    // The worker dies mid-job and a new one carries on retrying.
    platform.kill_service("deletion-worker").await?;
    platform.start_service("deletion-worker").await?;
    let before = later["steps"][0]["attempts"].as_i64();
    wait_for(&platform, &a, &id, Duration::from_secs(30), |j| {
        j["steps"][0]["attempts"].as_i64() > before
    })
    .await?;
    // NATS restarts (the queue is on disk), then the store comes back: the
    // running worker finishes the job by itself.
    platform.nats.shut_down().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    platform.nats.start_again().await?;
    platform.start_service("user-store-oc").await?;
    let done = wait_for(&platform, &a, &id, Duration::from_secs(90), |j| {
        status(j) == "completed"
    })
    .await?;
    assert!(done["steps"][0]["attempts"].as_i64() >= Some(3), "{done}");
    assert_eq!(
        done["receipt"]["steps"][0]["removed"]["sessions_revoked"],
        json!(1),
        "{done}"
    );
    assert_eq!(
        done["receipt"]["steps"][3]["removed"]["users"],
        json!(1),
        "{done}"
    );
    assert_eq!(
        regional_traces(&platform, &a, &user).await?,
        Vec::<String>::new()
    );
    assert_eq!(
        directory_traces(&platform, &user).await?,
        Vec::<String>::new()
    );
    let r = platform
        .client_call(
            0,
            &a,
            Method::GET,
            "/v1/client/me",
            Some(&signed_in.str("/session_token")),
            None,
        )
        .await?;
    assert_eq!(r.status, 401, "{}", r.json);
    // An edge that starts after the purge builds its revocation set from
    // the stores: the deleted user's revoked session is still there (as a
    // tombstone holding the session id and times only).
    let tombstones: i64 = platform
        .region_db(Region::Oc)
        .await?
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.revoked_session_tombstones WHERE id = $1",
                schema(&a)
            ),
            &[&signed_in.str("/session_id")],
        )
        .await?
        .get(0);
    assert_eq!(tombstones, 1);
    platform.add_edge().await?;
    let fresh = platform.edges.len() - 1;
    let r = platform
        .client_call(
            fresh,
            &a,
            Method::GET,
            "/v1/client/me",
            Some(&signed_in.str("/session_token")),
            None,
        )
        .await?;
    assert_eq!(
        r.status, 401,
        "a fresh edge accepts a deleted user's session: {}",
        r.json
    );
    // What a tenant backend asks (stateless at the edge): revoked there too.
    let r =
        crate::factor_kit::verify(&platform, fresh, &a, &signed_in.str("/session_token")).await?;
    assert_eq!(
        (r.status, r.code()),
        (401, Some("session_revoked")),
        "{}",
        r.json
    );
    assert_eq!(
        platform.count_events(&a.issuer_id, "user.deleted").await?,
        1
    );
    platform.stop().await
}

#[tokio::test]
async fn a_regional_step_that_keeps_failing_stalls_the_job_then_completes() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Locked region").await?;
    let created = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": idm_testkit::unique_email("locked"), "region": "sam"})),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let user = created.str("/id");

    // The regional database holds the users table locked: the purge of the
    // user row cannot finish (the earlier steps touch other tables).
    let mut db = platform.region_db(Region::Sam).await?;
    let lock = db.transaction().await?;
    lock.batch_execute(&format!(
        "LOCK TABLE {}.users IN ACCESS EXCLUSIVE MODE",
        schema(&a)
    ))
    .await?;
    let started = delete(platform, &a, &user).await?;
    assert_eq!(started.status, 202, "{}", started.json);
    let id = started.str("/id");
    let stalled = wait_for(platform, &a, &id, Duration::from_secs(60), |j| {
        status(j) == "stalled"
    })
    .await;
    // Release the lock whatever happened, then judge.
    lock.rollback().await?;
    let stalled = stalled?;
    let steps = stalled["steps"].as_array().cloned().unwrap_or_default();
    let state: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        state,
        [
            ("revoke_sessions", "completed"),
            ("revoke_personal_tokens", "completed"),
            ("remove_memberships", "completed"),
            ("delete_regional_data", "failing"),
            ("delete_directory_entries", "pending"),
            ("emit_user_deleted", "pending"),
        ],
        "{stalled}"
    );
    assert!(steps[3]["attempts"].as_i64() >= Some(1), "{stalled}");
    assert!(
        steps[3]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{stalled}"
    );
    let event = platform
        .last_event(&a.issuer_id, "user.deletion_stalled")
        .await?
        .map(|e| e["data"].clone())
        .unwrap_or_default();
    assert_eq!(
        (&event["user_id"], &event["deletion_id"], &event["step"]),
        (&json!(user), &json!(id), &json!("delete_regional_data")),
        "{event}"
    );

    // The lock is gone: the job completes by itself, and nothing is left.
    let done = wait_for(platform, &a, &id, Duration::from_secs(60), |j| {
        status(j) == "completed"
    })
    .await?;
    assert!(done["steps"][3]["attempts"].as_i64() >= Some(2), "{done}");
    assert_eq!(
        regional_traces(platform, &a, &user).await?,
        Vec::<String>::new()
    );
    assert_eq!(
        directory_traces(platform, &user).await?,
        Vec::<String>::new()
    );
    Ok(())
}
