//! `Idempotency-Key` on creating routes: a retry answers with the first
//! result, another body with the same key is refused, concurrent retries do
//! not both run, and keys are scoped to the caller's issuer and API key.

use idm_testkit::Platform;
use reqwest::Method;
use serde_json::{json, Value};

/// A backend call with a secret key and an idempotency key.
async fn post(
    platform: &Platform,
    path: &str,
    key: &str,
    idempotency_key: &str,
    body: Value,
) -> anyhow::Result<idm_testkit::Response> {
    let auth = format!("Bearer {key}");
    platform
        .send(
            Method::POST,
            path,
            &[
                ("authorization", &auth),
                ("idempotency-key", idempotency_key),
            ],
            Some(body),
        )
        .await
}

async fn user_count(platform: &Platform, tenant_key: &str, email: &str) -> anyhow::Result<u16> {
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users?email={email}"),
            tenant_key,
            None,
        )
        .await?;
    Ok(r.status)
}

/// Users of the issuer in the global directory.
async fn directory_users(platform: &Platform, issuer_id: &str) -> anyhow::Result<i64> {
    let global = platform.global().await?;
    Ok(global
        .query_one(
            "SELECT count(*) FROM directory.users WHERE issuer_id = $1",
            &[&issuer_id],
        )
        .await?
        .get(0))
}

#[tokio::test]
async fn a_retry_answers_with_the_first_result_and_creates_once() -> anyhow::Result<()> {
    // Own platform: reads every idempotency record in Redis.
    let platform = Platform::start().await?;
    let tenant = platform.create_account("Idem").await?;
    let body = json!({"email": "once@example.com", "region": "wnam"});

    let first = post(
        &platform,
        "/v1/users",
        &tenant.secret_key,
        "k-1",
        body.clone(),
    )
    .await?;
    assert_eq!(first.status, 201, "{}", first.json);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = post(
        &platform,
        "/v1/users",
        &tenant.secret_key,
        "k-1",
        body.clone(),
    )
    .await?;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(again.json, first.json, "the same user, not a second one");
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    // Exactly one user exists: without the key, the same body is a conflict.
    assert_eq!(
        user_count(&platform, &tenant.secret_key, "once@example.com").await?,
        200
    );
    let plain = platform
        .backend(Method::POST, "/v1/users", &tenant.secret_key, Some(body))
        .await?;
    assert_eq!(plain.code(), Some("conflict"), "{}", plain.json);
    assert_eq!(directory_users(&platform, &tenant.issuer_id).await?, 1);

    // The same key with another body is refused, and creates nothing.
    let other = post(
        &platform,
        "/v1/users",
        &tenant.secret_key,
        "k-1",
        json!({"email": "other@example.com", "region": "wnam"}),
    )
    .await?;
    assert_eq!(
        (other.status, other.code()),
        (409, Some("idempotency_conflict")),
        "{}",
        other.json
    );
    assert_eq!(
        user_count(&platform, &tenant.secret_key, "other@example.com").await?,
        404
    );

    // A key that is not a token of printable characters is refused.
    let bad = post(
        &platform,
        "/v1/users",
        &tenant.secret_key,
        &"x".repeat(300),
        json!({"email": "long@example.com"}),
    )
    .await?;
    assert_eq!((bad.status, bad.code()), (400, Some("invalid_request")));

    // A first answer that is an error is kept too (it is not transient):
    // the retry gets the same 409, not a different outcome.
    let dup = post(
        &platform,
        "/v1/users",
        &tenant.secret_key,
        "k-2",
        json!({"email": "once@example.com", "region": "wnam"}),
    )
    .await?;
    assert_eq!(dup.code(), Some("conflict"));
    let dup_again = post(
        &platform,
        "/v1/users",
        &tenant.secret_key,
        "k-2",
        json!({"email": "once@example.com", "region": "wnam"}),
    )
    .await?;
    assert_eq!(dup_again.json["error"]["code"], dup.json["error"]["code"]);
    assert!(dup_again.headers.get("idempotent-replayed").is_some());

    // An API key: the retry returns the same key text, and only one exists.
    let key_body = json!({"kind": "secret", "name": "ci", "scopes": ["users:read"]});
    let k1 = post(
        &platform,
        "/v1/api_keys",
        &tenant.secret_key,
        "key-1",
        key_body.clone(),
    )
    .await?;
    let k2 = post(
        &platform,
        "/v1/api_keys",
        &tenant.secret_key,
        "key-1",
        key_body,
    )
    .await?;
    assert_eq!(k1.status, 201, "{}", k1.json);
    assert_eq!(k1.json, k2.json);
    let listed = platform
        .backend(Method::GET, "/v1/api_keys", &tenant.secret_key, None)
        .await?;
    let named_ci = listed.json["data"]
        .as_array()
        .map(|keys| keys.iter().filter(|k| k["name"] == "ci").count());
    assert_eq!(named_ci, Some(1));
    // The stored answer is sealed: the key text is nowhere in Redis.
    let mut redis = redis::Client::open(idm_testkit::redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}idem:*", platform.redis_prefix))
        .query_async(&mut redis)
        .await?;
    assert!(!names.is_empty());
    for name in names {
        let value: String = redis::cmd("GET").arg(&name).query_async(&mut redis).await?;
        assert!(
            !value.contains(&k1.str("/key")),
            "the key text is stored in clear"
        );
        assert!(!value.contains("once@example.com"));
        assert!(!name.contains("key-1") && !name.contains(&tenant.issuer_id));
        let ttl: i64 = redis::cmd("TTL").arg(&name).query_async(&mut redis).await?;
        assert!(ttl > 23 * 3600 && ttl <= 24 * 3600, "ttl {ttl}");
    }
    platform.stop().await
}

/// Retries sent together: one runs, the others wait their turn (409
/// `idempotency_in_progress`) or replay its answer; never two creations.
#[tokio::test]
async fn concurrent_retries_create_one_resource() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Race").await?;
    let body = json!({"name": "Racing issuer"});
    let attempts = (0..8).map(|_| {
        post(
            platform,
            "/v1/issuers",
            &tenant.secret_key,
            "race",
            body.clone(),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    let mut created = Vec::new();
    for answer in answers {
        let answer = answer?;
        match answer.status {
            201 => created.push(answer.json),
            409 => assert_eq!(
                answer.code(),
                Some("idempotency_in_progress"),
                "{}",
                answer.json
            ),
            other => anyhow::bail!("unexpected {other}: {}", answer.json),
        }
    }
    assert!(!created.is_empty());
    let ids: std::collections::BTreeSet<String> = created
        .iter()
        .map(|j| j["issuer"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one issuer, whatever the interleaving: {ids:?}"
    );
    // After the race, a retry replays the issuer that was created.
    let later = post(platform, "/v1/issuers", &tenant.secret_key, "race", body).await?;
    assert_eq!(later.status, 201);
    assert!(ids.contains(later.json["issuer"]["id"].as_str().unwrap_or_default()));
    let global = platform.global().await?;
    let issuers: i64 = global
        .query_one(
            "SELECT count(*) FROM account.issuers WHERE name = 'Racing issuer' AND account_id = $1",
            &[&tenant.account_id],
        )
        .await?
        .get(0);
    assert_eq!(issuers, 1);
    Ok(())
}

/// Attacker: another tenant that uses the same idempotency key (guessed or
/// leaked) never sees the first tenant's answer; it creates its own.
#[tokio::test]
async fn keys_are_scoped_to_the_tenant_and_the_api_key() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let victim = platform.create_account("Victim").await?;
    let attacker = platform.create_account("Attacker").await?;
    let body = json!({"kind": "secret", "name": "deploy", "scopes": ["users:read"]});
    let first = post(
        platform,
        "/v1/api_keys",
        &victim.secret_key,
        "shared-key",
        body.clone(),
    )
    .await?;
    assert_eq!(first.status, 201, "{}", first.json);
    let victims_key = first.str("/key");

    let theirs = post(
        platform,
        "/v1/api_keys",
        &attacker.secret_key,
        "shared-key",
        body.clone(),
    )
    .await?;
    assert_eq!(theirs.status, 201, "{}", theirs.json);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
    assert_ne!(theirs.str("/key"), victims_key);
    assert_eq!(theirs.str("/issuer_id"), attacker.issuer_id);
    assert!(!theirs.json.to_string().contains(&victims_key));

    // Another body under the same key in the attacker's scope conflicts only
    // with the attacker's own first request, never reveals the victim's.
    let probe = post(
        platform,
        "/v1/api_keys",
        &attacker.secret_key,
        "shared-key",
        json!({"kind": "secret", "name": "probe"}),
    )
    .await?;
    assert_eq!(probe.code(), Some("idempotency_conflict"));
    assert!(!probe.json.to_string().contains(&victims_key));

    // Even another key of the victim's own issuer does not replay it: the
    // scope is the API key, so that key's request creates its own.
    let other = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &victim.secret_key,
            Some(json!({"kind": "secret", "name": "ops", "scopes": ["api_keys:manage", "users:read"]})),
        )
        .await?;
    assert_eq!(other.status, 201, "{}", other.json);
    let via_other_key = post(
        platform,
        "/v1/api_keys",
        &other.str("/key"),
        "shared-key",
        body,
    )
    .await?;
    assert_eq!(via_other_key.status, 201, "{}", via_other_key.json);
    assert!(via_other_key.headers.get("idempotent-replayed").is_none());
    assert_ne!(via_other_key.str("/key"), victims_key);
    Ok(())
}

/// A restricted (publishable) key: sign-up retries replay the session, the
/// key cannot reach backend creating routes, and a replay still passes the
/// origin check (a foreign page cannot read a stored answer).
#[tokio::test]
async fn restricted_keys_replay_sign_ups_only_from_allowed_origins() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Shop").await?;
    platform
        .allow_origins(&tenant, &["shop.example.com"])
        .await?;
    let body = json!({"email": "buyer@example.com", "password": "correct horse battery staple"});
    let headers = |origin: &'static str| {
        vec![
            (
                "authorization".to_owned(),
                format!("Bearer {}", tenant.restricted_key),
            ),
            ("idempotency-key".to_owned(), "signup-1".to_owned()),
            ("origin".to_owned(), origin.to_owned()),
        ]
    };
    let send = |origin: &'static str, body: Value| {
        let h = headers(origin);
        let platform = &platform;
        async move {
            let refs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            platform
                .send(Method::POST, "/v1/client/sign_up", &refs, Some(body))
                .await
        }
    };
    // A browser may send the header: the preflight allows it, and the
    // replay marker is readable by the page.
    let preflight = platform
        .send(
            Method::OPTIONS,
            "/v1/client/sign_up",
            &[
                ("origin", "https://shop.example.com"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type, idempotency-key",
                ),
            ],
            None,
        )
        .await?;
    assert_eq!(preflight.status, 204, "{}", preflight.json);
    let header = |r: &idm_testkit::Response, name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header(&preflight, "access-control-allow-headers").contains("idempotency-key"));
    let first = send("https://shop.example.com", body.clone()).await?;
    assert_eq!(first.status, 201, "{}", first.json);
    let again = send("https://shop.example.com", body.clone()).await?;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(again.json, first.json);
    assert!(header(&again, "access-control-expose-headers").contains("idempotent-replayed"));
    assert!(
        again.headers.get("set-cookie").is_some(),
        "the replay sets the cookie too"
    );
    assert_eq!(directory_users(platform, &tenant.issuer_id).await?, 1);

    // A foreign origin with the same key and body is refused before any
    // replay: the stored session is not handed out.
    let foreign = send("https://evil.example", body.clone()).await?;
    assert_eq!(
        foreign.code(),
        Some("origin_not_allowed"),
        "{}",
        foreign.json
    );
    assert!(!foreign
        .json
        .to_string()
        .contains(&first.str("/session_token")));

    // Another password with the same key: a conflict, not the session.
    let guess = send(
        "https://shop.example.com",
        json!({"email": "buyer@example.com", "password": "another guess entirely"}),
    )
    .await?;
    assert_eq!(guess.code(), Some("idempotency_conflict"));
    assert!(!guess
        .json
        .to_string()
        .contains(&first.str("/session_token")));

    // The restricted key cannot create backend resources, key or no key.
    let auth = format!("Bearer {}", tenant.restricted_key);
    let r = platform
        .send(
            Method::POST,
            "/v1/users",
            &[
                ("authorization", &auth),
                ("idempotency-key", "u-1"),
                ("origin", "https://shop.example.com"),
            ],
            Some(json!({"email": "x@example.com"})),
        )
        .await?;
    assert_eq!(r.code(), Some("insufficient_scope"));
    Ok(())
}

/// The operator's `POST /admin/v1/accounts` (account service, stored in
/// PostgreSQL): a retry is the same account, another name is refused.
#[tokio::test]
async fn operator_account_creation_is_idempotent() -> anyhow::Result<()> {
    // Own platform: counts accounts across the platform by name.
    let platform = Platform::start().await?;
    let create = |key: &'static str, name: &'static str| {
        platform
            .http
            .post(format!(
                "http://{}/admin/v1/accounts",
                platform.account_addr
            ))
            .bearer_auth(&platform.operator_token)
            .header("idempotency-key", key)
            .json(&json!({ "name": name }))
            .send()
    };
    let first = create("acct-1", "Acme").await?;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await?;
    let again = create("acct-1", "Acme").await?;
    assert_eq!(again.status(), 201);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: Value = again.json().await?;
    assert_eq!(
        again, first,
        "the same account and keys, not a second account"
    );
    let other = create("acct-1", "Other").await?;
    assert_eq!(other.status(), 409);
    let other: Value = other.json().await?;
    assert_eq!(other["error"]["code"], "idempotency_conflict");

    let global = platform.global().await?;
    let accounts: i64 = global
        .query_one(
            "SELECT count(*) FROM account.accounts WHERE name IN ('Acme', 'Other')",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(accounts, 1);
    // The stored answer is sealed: the secret key is not in the table.
    let secret = first["secret_key"].as_str().unwrap_or_default().to_owned();
    let rows = global
        .query("SELECT key_hash, sealed FROM account.idempotency_keys", &[])
        .await?;
    assert_eq!(rows.len(), 1);
    for row in rows {
        let name: String = row.get(0);
        let sealed: Vec<u8> = row.get(1);
        assert!(!name.contains("acct-1"));
        assert!(!String::from_utf8_lossy(&sealed).contains(&secret));
    }
    platform.stop().await
}

/// Redis unreachable: a request that asks for idempotency is refused (503,
/// nothing created) rather than served without the guarantee; a request
/// without the header is served as ever.
#[tokio::test]
async fn without_redis_idempotent_requests_are_refused_not_duplicated() -> anyhow::Result<()> {
    // Own platform: adds an edge without Redis.
    let mut platform = Platform::start().await?;
    // Replica 1 has a Redis that never answers (nothing listens on port 1).
    platform
        .add_edge_with(|c| c.redis_url = "redis://127.0.0.1:1".to_owned())
        .await?;
    let tenant = platform.create_account("NoRedis").await?;
    let auth = format!("Bearer {}", tenant.secret_key);
    let body = json!({"email": "careful@example.com", "region": "wnam"});
    let refused = platform
        .send_to(
            1,
            Method::POST,
            "/v1/users",
            &[("authorization", &auth), ("idempotency-key", "k")],
            Some(body.clone()),
        )
        .await?;
    assert_eq!(
        (refused.status, refused.code()),
        (503, Some("upstream_unavailable")),
        "{}",
        refused.json
    );
    assert!(refused.headers.get("retry-after").is_some());
    assert_eq!(directory_users(&platform, &tenant.issuer_id).await?, 0);
    let plain = platform
        .send_to(
            1,
            Method::POST,
            "/v1/users",
            &[("authorization", &auth)],
            Some(body),
        )
        .await?;
    assert_eq!(plain.status, 201, "{}", plain.json);
    platform.stop().await
}
