//! The audit log (`GET /v1/audit_events`, the operator's
//! `GET /admin/v1/audit_events`) and the event catalogue: one table says,
//! for every route that changes state, which event it emits (or why none),
//! and the tests below derive from it.

use idm_edge_guard::ROUTES;
use idm_testkit::{Platform, Tenant, APP_ORIGIN};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What a state-changing route emits.
#[derive(Debug, Clone, Copy)]
enum Emits {
    /// This event, proven by [`every_event_emitting_route_emits_its_event`].
    Event(&'static str),
    /// This event, proven by the named test (flows that need a second factor
    /// or a mailed code, exercised there).
    EventProvenBy(&'static str, &'static str),
    /// Nothing, for this reason.
    Nothing(&'static str),
}

/// Every route of the edge's table that is not a GET. A route added to the
/// table without a row here fails [`every_state_changing_route_is_in_the_event_table`].
const EVENT_TABLE: &[(&str, &str, Emits)] = &[
    ("PATCH", "/v1/issuer", Emits::Event("issuer.updated")),
    (
        "POST",
        "/v1/issuers",
        Emits::Nothing("a new issuer has no subscribers yet; its keys are in its own audit log"),
    ),
    (
        "POST",
        "/v1/issuer/domains",
        Emits::Nothing("domain setup: not in the API.md catalogue"),
    ),
    (
        "DELETE",
        "/v1/issuer/domains/{domain}",
        Emits::Nothing("domain setup: not in the API.md catalogue"),
    ),
    (
        "POST",
        "/v1/issuer/domains/{domain}/verify",
        Emits::Nothing("domain setup: not in the API.md catalogue"),
    ),
    ("POST", "/v1/api_keys", Emits::Event("api_key.created")),
    (
        "DELETE",
        "/v1/api_keys/{id}",
        Emits::Event("api_key.revoked"),
    ),
    ("POST", "/v1/users", Emits::Event("user.created")),
    (
        "POST",
        "/v1/sessions/verify",
        Emits::Nothing("a read: changes nothing"),
    ),
    (
        "POST",
        "/v1/sessions/{id}/revoke",
        Emits::Event("session.revoked"),
    ),
    (
        "POST",
        "/v1/users/{id}/sessions/revoke_all",
        Emits::Event("session.revoked"),
    ),
    (
        "POST",
        "/v1/session_keys/rotate",
        Emits::Nothing("a routine rotation; old keys keep verifying"),
    ),
    (
        "POST",
        "/v1/session_keys/revoke",
        Emits::Event("session_keys.revoked"),
    ),
    (
        "POST",
        "/v1/users/{id}/personal_tokens",
        Emits::Nothing("not in the API.md catalogue"),
    ),
    (
        "DELETE",
        "/v1/users/{id}/personal_tokens/{token_id}",
        Emits::Nothing("not in the API.md catalogue"),
    ),
    (
        "POST",
        "/v1/personal_tokens/verify",
        Emits::Nothing("a read: changes nothing"),
    ),
    (
        "POST",
        "/v1/users/{id}/factors/unlock",
        Emits::EventProvenBy("factor.unlocked", "second_factors"),
    ),
    ("POST", "/v1/client/sign_up", Emits::Event("user.created")),
    (
        "POST",
        "/v1/client/sign_in",
        Emits::Event("session.created"),
    ),
    (
        "POST",
        "/v1/client/token/refresh",
        Emits::EventProvenBy("session.compromised", "revocation (on reuse)"),
    ),
    (
        "POST",
        "/v1/client/sign_out",
        Emits::Event("session.revoked"),
    ),
    (
        "POST",
        "/v1/client/magic_links",
        Emits::Nothing("sends mail; the session comes at verify"),
    ),
    (
        "POST",
        "/v1/client/magic_links/verify",
        Emits::EventProvenBy("session.created", "passwordless"),
    ),
    (
        "POST",
        "/v1/client/email_codes",
        Emits::Nothing("sends mail; the session comes at verify"),
    ),
    (
        "POST",
        "/v1/client/email_codes/verify",
        Emits::EventProvenBy("session.created", "passwordless"),
    ),
    (
        "POST",
        "/v1/client/mfa/totp",
        Emits::Nothing("enrollment starts; mfa.enabled comes at confirm"),
    ),
    (
        "DELETE",
        "/v1/client/mfa/totp",
        Emits::EventProvenBy("mfa.disabled", "step_up"),
    ),
    (
        "POST",
        "/v1/client/mfa/backup_codes",
        Emits::EventProvenBy("mfa.backup_codes_regenerated", "step_up"),
    ),
    (
        "POST",
        "/v1/client/password",
        Emits::EventProvenBy("password.changed", "step_up"),
    ),
    (
        "POST",
        "/v1/client/mfa/totp/confirm",
        Emits::EventProvenBy("mfa.enabled", "mfa"),
    ),
    (
        "POST",
        "/v1/client/mfa/verify",
        Emits::EventProvenBy("session.created", "mfa"),
    ),
    (
        "POST",
        "/v1/verifications",
        Emits::Nothing("the verification API keeps nothing"),
    ),
    (
        "POST",
        "/v1/verifications/check",
        Emits::Nothing("the verification API keeps nothing"),
    ),
    (
        "POST",
        "/v1/webhook_endpoints",
        Emits::Event("webhook_endpoint.created"),
    ),
    (
        "PATCH",
        "/v1/webhook_endpoints/{id}",
        Emits::Event("webhook_endpoint.updated"),
    ),
    (
        "DELETE",
        "/v1/webhook_endpoints/{id}",
        Emits::Event("webhook_endpoint.deleted"),
    ),
    (
        "POST",
        "/v1/webhook_endpoints/{id}/rotate_secret",
        Emits::Event("webhook_endpoint.secret_rotated"),
    ),
    (
        "POST",
        "/v1/webhook_endpoints/{id}/replay",
        Emits::Nothing("redelivers existing events"),
    ),
    (
        "POST",
        "/v1/webhook_messages/{id}/retry",
        Emits::Nothing("redelivers an existing event"),
    ),
    // The user's life (issue 11).
    (
        "PATCH",
        "/v1/users/{id}",
        Emits::EventProvenBy("user.updated", "profiles"),
    ),
    (
        "DELETE",
        "/v1/users/{id}/devices/{device_id}",
        Emits::EventProvenBy("session.revoked", "devices"),
    ),
    (
        "POST",
        "/v1/users/{id}/consents",
        Emits::Nothing("consent history is the user's own record, kept in the region; not in the API.md catalogue"),
    ),
    (
        "POST",
        "/v1/client/password_resets",
        Emits::Nothing("only sends a code: nothing changes until it is confirmed"),
    ),
    (
        "POST",
        "/v1/client/password_resets/confirm",
        Emits::EventProvenBy("password.changed", "password_reset"),
    ),
    (
        "DELETE",
        "/v1/client/password",
        Emits::EventProvenBy("password.changed", "password_reset"),
    ),
    (
        "POST",
        "/v1/client/email_changes/confirm",
        Emits::EventProvenBy("email.changed", "profiles"),
    ),
    (
        "POST",
        "/v1/organizations",
        Emits::EventProvenBy("organization.created", "organizations"),
    ),
    (
        "PATCH",
        "/v1/organizations/{id}",
        Emits::EventProvenBy("organization.updated", "organizations"),
    ),
    (
        "DELETE",
        "/v1/organizations/{id}",
        Emits::EventProvenBy("organization.deleted", "organizations"),
    ),
    (
        "POST",
        "/v1/organizations/{id}/memberships",
        Emits::EventProvenBy("membership.created", "organizations"),
    ),
    (
        "PATCH",
        "/v1/organizations/{id}/memberships/{user_id}",
        Emits::EventProvenBy("membership.updated", "organizations"),
    ),
    (
        "DELETE",
        "/v1/organizations/{id}/memberships/{user_id}",
        Emits::EventProvenBy("membership.deleted", "organizations"),
    ),
    (
        "DELETE",
        "/v1/users/{id}",
        Emits::EventProvenBy("user.deleted", "deletion (when the cascade ends)"),
    ),
    (
        "POST",
        "/v1/users/{id}/move",
        Emits::EventProvenBy("user.moved", "user_moves (when the move's job ends)"),
    ),
];

#[test]
fn every_state_changing_route_is_in_the_event_table() {
    let mut missing = Vec::new();
    for route in ROUTES.iter().filter(|r| r.method != Method::GET) {
        let rows = EVENT_TABLE
            .iter()
            .filter(|(m, p, _)| *m == route.method.as_str() && *p == route.path)
            .count();
        if rows != 1 {
            missing.push(format!("{} {} ({rows} rows)", route.method, route.path));
        }
    }
    assert!(
        missing.is_empty(),
        "routes without exactly one row in EVENT_TABLE: {missing:?}"
    );
    for (method, path, emits) in EVENT_TABLE {
        assert!(
            ROUTES
                .iter()
                .any(|r| r.method.as_str() == *method && r.path == *path),
            "{method} {path} is in the event table but not a route"
        );
        match emits {
            Emits::Event(t) => {
                assert!(
                    idm_core::proto::event::DomainEvent::TYPES.contains(t),
                    "{t}"
                );
            }
            Emits::EventProvenBy(t, test) => {
                assert!(
                    idm_core::proto::event::DomainEvent::TYPES.contains(t),
                    "{t}"
                );
                assert!(
                    !test.is_empty(),
                    "{method} {path}: name the test that proves {t}"
                );
            }
            Emits::Nothing(reason) => {
                assert!(
                    !reason.is_empty(),
                    "{method} {path}: say why it emits nothing"
                );
            }
        }
    }
}

async fn wait_count(
    platform: &Platform,
    issuer: &str,
    event: &str,
    above: u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = platform.count_events(issuer, event).await?;
        if n > above || Instant::now() > deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `method path` for `tenant` (with what the route needs set up
/// first); `None` when the table's route has no recipe here.
async fn call_route(
    platform: &Platform,
    tenant: &Tenant,
    method: &str,
    path: &str,
) -> anyhow::Result<Option<u16>> {
    let key = tenant.secret_key.as_str();
    let user =
        |email: String| json!({"email": email, "password": "correct horse battery staple 9"});
    let sign_up = || async {
        let email = idm_testkit::unique_email("catalogue");
        let r = platform
            .sign_up(
                tenant,
                APP_ORIGIN,
                None,
                &email,
                "correct horse battery staple 9",
            )
            .await?;
        anyhow::ensure!(r.status == 201, "{}", r.json);
        Ok::<_, anyhow::Error>((email, r))
    };
    // An endpoint on a public name: created, never delivered to (these
    // tests subscribe it to nothing they emit).
    let new_endpoint = || async {
        let r = platform
            .backend(
                Method::POST,
                "/v1/webhook_endpoints",
                key,
                Some(json!({"url": "https://hooks.example.com/idmesh", "events": ["mfa.enabled"]})),
            )
            .await?;
        Ok::<_, anyhow::Error>((r.status, r.str("/id")))
    };
    let status = match (method, path) {
        ("PATCH", "/v1/issuer") => {
            platform
                .backend(
                    Method::PATCH,
                    path,
                    key,
                    Some(json!({"allowed_origins": ["app.example.com"]})),
                )
                .await?
                .status
        }
        ("POST", "/v1/api_keys") => {
            platform
                .backend(
                    Method::POST,
                    path,
                    key,
                    Some(json!({"kind": "restricted", "name": "t"})),
                )
                .await?
                .status
        }
        ("DELETE", "/v1/api_keys/{id}") => {
            let id = platform
                .backend(
                    Method::POST,
                    "/v1/api_keys",
                    key,
                    Some(json!({"kind": "restricted", "name": "t"})),
                )
                .await?
                .str("/id");
            platform
                .backend(Method::DELETE, &format!("/v1/api_keys/{id}"), key, None)
                .await?
                .status
        }
        ("POST", "/v1/users") => {
            platform
                .backend(
                    Method::POST,
                    path,
                    key,
                    Some(user(idm_testkit::unique_email("catalogue"))),
                )
                .await?
                .status
        }
        ("POST", "/v1/webhook_endpoints") => new_endpoint().await?.0,
        ("PATCH", "/v1/webhook_endpoints/{id}") => {
            let (_, id) = new_endpoint().await?;
            platform
                .backend(
                    Method::PATCH,
                    &format!("/v1/webhook_endpoints/{id}"),
                    key,
                    Some(json!({"events": ["user.created"]})),
                )
                .await?
                .status
        }
        ("DELETE", "/v1/webhook_endpoints/{id}") => {
            let (_, id) = new_endpoint().await?;
            platform
                .backend(
                    Method::DELETE,
                    &format!("/v1/webhook_endpoints/{id}"),
                    key,
                    None,
                )
                .await?
                .status
        }
        ("POST", "/v1/webhook_endpoints/{id}/rotate_secret") => {
            let (_, id) = new_endpoint().await?;
            platform
                .backend(
                    Method::POST,
                    &format!("/v1/webhook_endpoints/{id}/rotate_secret"),
                    key,
                    Some(json!({})),
                )
                .await?
                .status
        }
        ("POST", "/v1/sessions/{id}/revoke") => {
            let (_, r) = sign_up().await?;
            let session = r.str("/session_id");
            let session = if session.is_empty() {
                r.str("/session/id")
            } else {
                session
            };
            let verified = platform
                .backend(
                    Method::POST,
                    "/v1/sessions/verify",
                    key,
                    Some(json!({"session_token": r.str("/session_token")})),
                )
                .await?;
            let id = if session.is_empty() {
                verified.str("/session_id")
            } else {
                session
            };
            platform
                .backend(
                    Method::POST,
                    &format!("/v1/sessions/{id}/revoke"),
                    key,
                    None,
                )
                .await?
                .status
        }
        ("POST", "/v1/users/{id}/sessions/revoke_all") => {
            let (_, r) = sign_up().await?;
            let id = r.str("/user/id");
            platform
                .backend(
                    Method::POST,
                    &format!("/v1/users/{id}/sessions/revoke_all"),
                    key,
                    None,
                )
                .await?
                .status
        }
        ("POST", "/v1/session_keys/revoke") => {
            platform
                .backend(Method::POST, path, key, None)
                .await?
                .status
        }
        ("POST", "/v1/client/sign_up") => sign_up().await?.1.status,
        ("POST", "/v1/client/sign_in") => {
            let (email, _) = sign_up().await?;
            platform
                .sign_in(tenant, APP_ORIGIN, &email, "correct horse battery staple 9")
                .await?
                .status
        }
        ("POST", "/v1/client/sign_out") => {
            let (_, r) = sign_up().await?;
            platform
                .client_call(
                    0,
                    tenant,
                    Method::POST,
                    path,
                    Some(&r.str("/session_token")),
                    None,
                )
                .await?
                .status
        }
        _ => return Ok(None),
    };
    Ok(Some(status))
}

#[tokio::test]
async fn every_event_emitting_route_emits_its_event() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Catalogue").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let mut without_recipe = Vec::new();
    for (method, path, emits) in EVENT_TABLE {
        let Emits::Event(event) = emits else { continue };
        let before = platform.count_events(&tenant.issuer_id, event).await?;
        match call_route(platform, &tenant, method, path).await? {
            None => without_recipe.push(format!("{method} {path}")),
            Some(status) => {
                assert!(
                    (200..300).contains(&status),
                    "{method} {path} answered {status}"
                );
                let after = wait_count(platform, &tenant.issuer_id, event, before).await?;
                assert!(after > before, "{method} {path} did not emit {event}");
            }
        }
    }
    assert!(
        without_recipe.is_empty(),
        "routes said to emit an event but without a recipe in call_route: {without_recipe:?}"
    );
    Ok(())
}

async fn audit(
    platform: &Platform,
    key: &str,
    query: &str,
) -> anyhow::Result<idm_testkit::Response> {
    platform
        .backend(Method::GET, &format!("/v1/audit_events{query}"), key, None)
        .await
}

/// Waits until the issuer's audit log holds `n` events matching `query`.
async fn audit_until(
    platform: &Platform,
    key: &str,
    query: &str,
    n: usize,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = audit(platform, key, query).await?;
        anyhow::ensure!(r.status == 200, "{}", r.json);
        if r.json["data"].as_array().is_some_and(|d| d.len() >= n) || Instant::now() > deadline {
            return Ok(r.json);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_audit_log_names_actor_request_and_network_and_stays_with_its_issuer(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Audited").await?;
    let b = platform.create_account("Elsewhere").await?;
    let created = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "auditor", "scopes": ["audit:read"]})),
        )
        .await?;
    assert_eq!(created.status, 201);
    let request_id = created
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let auditor_key = created.str("/key");
    let auditor_id = created.str("/id");
    let revoked = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "restricted", "name": "short-lived"})),
        )
        .await?
        .str("/id");
    platform
        .backend(
            Method::DELETE,
            &format!("/v1/api_keys/{revoked}"),
            &a.secret_key,
            None,
        )
        .await?;
    platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &a.secret_key,
            Some(json!({"allowed_origins": ["app.example.com"]})),
        )
        .await?;
    platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &b.secret_key,
            Some(json!({"kind": "restricted", "name": "b's"})),
        )
        .await?;

    let log = audit_until(platform, &auditor_key, "", 5).await?;
    let data = log["data"].as_array().cloned().unwrap_or_default();
    let types: Vec<&str> = data.iter().filter_map(|e| e["type"].as_str()).collect();
    // Newest first.
    assert_eq!(
        types,
        [
            "issuer.updated",
            "api_key.revoked",
            "api_key.created",
            "api_key.created",
            "account.created"
        ],
        "{log}"
    );
    // The operator created the account: the oldest event, the operator's.
    assert_eq!(data[4]["actor"], "operator", "{log}");
    assert_eq!(data[4]["data"], json!({"account_id": a.account_id}));
    let first = &data[3];
    assert_eq!(
        first["data"],
        json!({"key_id": auditor_id, "kind": "secret"})
    );
    assert_eq!(first["issuer_id"], a.issuer_id.as_str());
    assert_eq!(first["request_id"], request_id.as_str());
    assert_eq!(first["network"], "127.0.0.0/24");
    // The actor is the key that made the call (the account's first key).
    let actor = first["actor"].as_str().unwrap_or_default().to_owned();
    assert!(actor.starts_with("key_") && actor != auditor_id, "{first}");
    assert_eq!(data[0]["data"], json!({"fields": ["allowed_origins"]}));
    assert!(
        !log.to_string().contains(&b.issuer_id),
        "never another issuer's events"
    );

    // Filters: type (exact and family), actor, time; cursor pagination.
    let r = audit_until(platform, &auditor_key, "?type=api_key.revoked", 1).await?;
    assert_eq!(r["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["data"][0]["data"]["key_id"], revoked.as_str());
    let r = audit(platform, &auditor_key, "?type=api_key.*").await?;
    assert_eq!(r.json["data"].as_array().map(Vec::len), Some(3));
    let r = audit(platform, &auditor_key, &format!("?actor={actor}")).await?;
    assert_eq!(r.json["data"].as_array().map(Vec::len), Some(4));
    let r = audit(
        platform,
        &auditor_key,
        "?actor=key_0192c0de0000700080000000000000aa",
    )
    .await?;
    assert_eq!(r.json["data"], json!([]));
    let r = audit(platform, &auditor_key, "?since=2999-01-01T00:00:00Z").await?;
    assert_eq!(r.json["data"], json!([]));
    let r = audit(
        platform,
        &auditor_key,
        "?until=2999-01-01T00:00:00Z&limit=2",
    )
    .await?;
    assert_eq!(r.json["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.json["has_more"], true);
    let cursor = r.json["data"][1]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let next = audit(
        platform,
        &auditor_key,
        &format!("?limit=2&starting_after={cursor}"),
    )
    .await?;
    assert_eq!(next.json["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        next.json["has_more"], true,
        "account.created is older still"
    );
    assert_eq!(next.json["data"][0]["type"], "api_key.created");
    assert_eq!(r.json["data"][1]["type"], "api_key.revoked");
    for (query, code) in [
        ("?limit=0", "validation_failed"),
        ("?limit=101", "validation_failed"),
        ("?since=yesterday", "validation_failed"),
        ("?type=DROP%20TABLE", "validation_failed"),
    ] {
        let r = audit(platform, &auditor_key, query).await?;
        assert_eq!((r.status, r.code()), (422, Some(code)), "{query}");
    }
    let r = audit(platform, &auditor_key, "?colour=red").await?;
    assert_eq!((r.status, r.code()), (400, Some("invalid_request")));

    // Another issuer sees only its own; restricted keys and keys without
    // the audit scope are refused.
    let theirs = audit_until(platform, &b.secret_key, "", 2).await?;
    assert_eq!(theirs["data"].as_array().map(Vec::len), Some(2));
    for event in theirs["data"].as_array().into_iter().flatten() {
        assert_eq!(event["issuer_id"], b.issuer_id.as_str());
    }
    let r = audit(platform, &a.restricted_key, "").await?;
    assert_eq!((r.status, r.code()), (403, Some("insufficient_scope")));
    let no_audit = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "no audit", "scopes": ["users:read"]})),
        )
        .await?
        .str("/key");
    let r = audit(platform, &no_audit, "").await?;
    assert_eq!((r.status, r.code()), (403, Some("insufficient_scope")));

    // The operator's view spans issuers; it needs the operator token.
    let admin = |query: String, token: Option<String>| {
        let mut request = reqwest::Client::new().get(format!(
            "http://{}/admin/v1/audit_events{query}",
            platform.account_addr
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let r = admin(
        format!("?issuer_id={}", a.issuer_id),
        Some(platform.operator_token.clone()),
    )
    .await?;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await?;
    assert!(
        body["data"].as_array().is_some_and(|d| d.len() >= 5),
        "{body}"
    );
    let r = admin("?limit=100".into(), Some(platform.operator_token.clone())).await?;
    let body: Value = r.json().await?;
    let issuers: std::collections::HashSet<&str> = body["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|e| e["issuer_id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        issuers.len() >= 2,
        "the operator sees every issuer: {issuers:?}"
    );
    let r = admin(String::new(), None).await?;
    assert_eq!(r.status(), 401);
    let r = admin(String::new(), Some(a.secret_key.clone())).await?;
    assert_eq!(r.status(), 401);

    // Append-only, ids only.
    let db = platform.global().await?;
    let changed = db
        .execute(
            "UPDATE account.audit_events SET actor = 'someone' WHERE issuer_id = $1",
            &[&a.issuer_id],
        )
        .await;
    assert!(changed.is_err(), "audit rows cannot be changed");
    let deleted = db
        .execute(
            "DELETE FROM account.audit_events WHERE issuer_id = $1",
            &[&a.issuer_id],
        )
        .await;
    assert!(deleted.is_err(), "audit rows cannot be deleted");
    // The deletion cascade may clear the network (personal data), and only that.
    let cleared = db
        .execute(
            "UPDATE account.audit_events SET network = NULL WHERE issuer_id = $1",
            &[&a.issuer_id],
        )
        .await?;
    assert!(cleared >= 4);
    Ok(())
}

#[tokio::test]
async fn a_session_acts_for_its_user_and_a_restricted_key_for_itself() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Actors").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let email = idm_testkit::unique_email("actor");
    let signed_up = platform
        .sign_up(
            &tenant,
            APP_ORIGIN,
            None,
            &email,
            "correct horse battery staple 9",
        )
        .await?;
    assert_eq!(signed_up.status, 201, "{}", signed_up.json);
    let user_id = signed_up.str("/user/id");
    let r = platform
        .client_call(
            0,
            &tenant,
            Method::POST,
            "/v1/client/sign_out",
            Some(&signed_up.str("/session_token")),
            None,
        )
        .await?;
    assert!((200..300).contains(&r.status), "{}", r.json);
    let created = audit_until(platform, &tenant.secret_key, "?type=user.created", 1).await?;
    // Sign-up has no session yet: the restricted key acts.
    let actor = created["data"][0]["actor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(actor.starts_with("key_"), "{created}");
    let keys = platform
        .backend(Method::GET, "/v1/api_keys", &tenant.secret_key, None)
        .await?;
    let restricted = keys.json["data"]
        .as_array()
        .and_then(|d| d.iter().find(|k| k["kind"] == "restricted"))
        .map(|k| k["id"].clone());
    assert_eq!(restricted, Some(json!(actor)));
    let revoked = audit_until(platform, &tenant.secret_key, "?type=session.revoked", 1).await?;
    assert_eq!(revoked["data"][0]["actor"], user_id.as_str(), "{revoked}");
    assert_eq!(revoked["data"][0]["network"], "127.0.0.0/24");
    let by_user = audit(platform, &tenant.secret_key, &format!("?actor={user_id}")).await?;
    assert!(by_user.json["data"]
        .as_array()
        .is_some_and(|d| !d.is_empty() && d.iter().all(|e| e["actor"] == user_id.as_str())));
    Ok(())
}

/// The operator's actions and each step of a deletion land in the issuer's
/// audit log too, next to what its keys do.
#[tokio::test]
async fn operator_actions_and_deletion_steps_are_audited() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = platform.create_account("Operated").await?;
    let operator = |method: Method, path: String, body: Value| {
        reqwest::Client::new()
            .request(method, format!("http://{}{path}", platform.account_addr))
            .bearer_auth(platform.operator_token.clone())
            .json(&body)
            .send()
    };
    let r = operator(
        Method::PUT,
        format!("/admin/v1/accounts/{}/plan", a.account_id),
        json!({}),
    )
    .await?;
    assert_eq!(r.status(), 200);
    let r = operator(
        Method::POST,
        format!("/admin/v1/issuers/{}/provision", a.issuer_id),
        json!({"regions": ["oc"]}),
    )
    .await?;
    assert_eq!(r.status(), 200);
    let log = audit_until(platform, &a.secret_key, "?actor=operator", 3).await?;
    let types: Vec<&str> = log["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "issuer.provisioned",
            "account.plan_changed",
            "account.created"
        ],
        "{log}"
    );
    assert_eq!(
        log["data"][0]["data"],
        json!({"regions": ["oc"], "complete": true})
    );

    // A deletion: one event per step, ids only.
    let user = platform
        .backend(
            Method::POST,
            "/v1/users",
            &a.secret_key,
            Some(json!({"email": idm_testkit::unique_email("audited"), "region": "oc"})),
        )
        .await?;
    assert_eq!(user.status, 201, "{}", user.json);
    let user_id = user.str("/id");
    let r = platform
        .backend(
            Method::DELETE,
            &format!("/v1/users/{user_id}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.status, 202, "{}", r.json);
    let steps = audit_until(
        platform,
        &a.secret_key,
        "?type=user.deletion_step_completed",
        idm_core::proto::deletion::STEPS.len(),
    )
    .await?;
    let mut done: Vec<String> = steps["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["data"]["user_id"] == user_id.as_str())
        .filter_map(|e| e["data"]["step"].as_str().map(str::to_owned))
        .collect();
    done.reverse();
    assert_eq!(done, idm_core::proto::deletion::STEPS, "{steps}");
    assert!(!steps.to_string().contains('@'), "{steps}");
    Ok(())
}
