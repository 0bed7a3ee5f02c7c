//! Security claims, tried the way an attacker would.

use idm_testkit::{Platform, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://app.example.com";

async fn two_tenants(platform: &Platform) -> anyhow::Result<(Tenant, Tenant)> {
    let a = platform.create_account("Tenant A").await?;
    let b = platform.create_account("Tenant B").await?;
    platform.allow_origins(&a, &["app.example.com"]).await?;
    platform.allow_origins(&b, &["app.example.com"]).await?;
    Ok((a, b))
}

#[tokio::test]
async fn another_tenants_keys_and_sessions_see_nothing() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let (a, b) = two_tenants(platform).await?;
    let signed_up = platform
        .sign_up(
            &a,
            ORIGIN,
            Some("de"),
            "victim@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(signed_up.status, 201);
    let user_id = signed_up.str("/user/id");
    let token = signed_up.str("/session_token");

    // B's secret key cannot read A's user by id or find it by email.
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user_id}"),
            &b.secret_key,
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    let r = platform
        .backend(
            Method::GET,
            "/v1/users?email=victim@example.com",
            &b.secret_key,
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    // …while A's own key can.
    let r = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{user_id}"),
            &a.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.status, 200);
    // B cannot list or revoke A's keys.
    let a_keys = platform
        .backend(Method::GET, "/v1/api_keys", &a.secret_key, None)
        .await?;
    let a_key_id = a_keys.str("/data/0/id");
    assert!(a_key_id.starts_with("key_"));
    let b_keys = platform
        .backend(Method::GET, "/v1/api_keys", &b.secret_key, None)
        .await?;
    assert!(!b_keys.json.to_string().contains(&a_key_id));
    assert!(
        !a_keys.json.to_string().contains(&a.secret_key),
        "a listing must never show the key"
    );
    let r = platform
        .backend(
            Method::DELETE,
            &format!("/v1/api_keys/{a_key_id}"),
            &b.secret_key,
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    // B's issuer is B's.
    let r = platform
        .backend(Method::GET, "/v1/issuer", &b.secret_key, None)
        .await?;
    assert_eq!(r.str("/id"), b.issuer_id);

    // A's session token at B: session_invalid, through the client API and backend verification.
    let bearer = format!("Bearer {token}");
    let r = platform
        .send(
            Method::GET,
            "/v1/client/me",
            &[
                ("idm-api-key", &b.restricted_key),
                ("authorization", &bearer),
                ("origin", ORIGIN),
            ],
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, Some("session_invalid")));
    let r = platform
        .backend(
            Method::POST,
            "/v1/sessions/verify",
            &b.secret_key,
            Some(json!({"session_token": token})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, Some("session_invalid")));
    let r = platform
        .backend(
            Method::POST,
            "/v1/sessions/verify",
            &a.secret_key,
            Some(json!({"session_token": token})),
        )
        .await?;
    assert_eq!(r.status, 200);

    // A tampered token: every part altered in turn.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 4);
    let mut forgeries = Vec::new();
    for i in 1..4 {
        let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        let first = p[i].remove(0);
        p[i].insert(0, if first == 'A' { 'B' } else { 'A' });
        forgeries.push(p.join("."));
    }
    forgeries.push(token[..token.len() - 3].to_owned());
    forgeries.push(format!("{token}x"));
    forgeries.push("idm1.nokey.e30.AAAA".to_owned());
    forgeries.push("not-a-token".to_owned());
    for forged in forgeries {
        let r = platform
            .backend(
                Method::POST,
                "/v1/sessions/verify",
                &a.secret_key,
                Some(json!({"session_token": forged})),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (401, Some("session_invalid")),
            "{forged}"
        );
        let bearer = format!("Bearer {forged}");
        let r = platform
            .send(
                Method::GET,
                "/v1/client/me",
                &[
                    ("idm-api-key", &a.restricted_key),
                    ("authorization", &bearer),
                    ("origin", ORIGIN),
                ],
                None,
            )
            .await?;
        assert_eq!(r.code(), Some("session_invalid"), "{forged}");
    }
    Ok(())
}

#[tokio::test]
async fn keys_are_checked_for_shape_existence_kind_scope_mode_and_origin() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let (a, _b) = two_tenants(platform).await?;

    // A restricted key cannot call any backend route, even from an allowed origin.
    let rk = format!("Bearer {}", a.restricted_key);
    let backend_routes = [
        (Method::GET, "/v1/issuer"),
        (Method::PATCH, "/v1/issuer"),
        (Method::POST, "/v1/issuers"),
        (Method::POST, "/v1/api_keys"),
        (Method::GET, "/v1/api_keys"),
        (
            Method::DELETE,
            "/v1/api_keys/key_0190f0f0f0f07000800000000000abcd",
        ),
        (Method::POST, "/v1/users"),
        (
            Method::GET,
            "/v1/users/usr_0190f0f0f0f07000800000000000abcd",
        ),
        (Method::GET, "/v1/users?email=a@example.com"),
        (Method::POST, "/v1/sessions/verify"),
    ];
    for (method, path) in backend_routes.clone() {
        let r = platform
            .send(
                method.clone(),
                path,
                &[("authorization", &rk), ("origin", ORIGIN)],
                Some(json!({})),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("insufficient_scope")),
            "{method} {path}"
        );
    }

    // A key with users:read can read but cannot create.
    let created = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({"kind": "secret", "name": "reader", "scopes": ["users:read"]})),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let reader = created.str("/key");
    assert!(reader.starts_with("ath_sec_live_"));
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &reader,
            Some(json!({"email": "new@example.com"})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, Some("insufficient_scope")));
    let r = platform
        .backend(
            Method::GET,
            "/v1/users?email=new@example.com",
            &reader,
            None,
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (404, Some("not_found")),
        "read is allowed, and nothing was created"
    );
    let r = platform
        .backend(Method::GET, "/v1/api_keys", &reader, None)
        .await?;
    assert_eq!(r.code(), Some("insufficient_scope"));

    // Malformed, unknown, other-mode keys.
    let live = idm_core::ApiKey::parse(&a.secret_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = live.expose().trim_start_matches("ath_sec_live_");
    let random = bs58_decode(body)?;
    let other_mode =
        idm_core::ApiKey::from_random(idm_core::KeyKind::Secret, idm_core::KeyMode::Test, &random);
    let as_restricted = idm_core::ApiKey::from_random(
        idm_core::KeyKind::Restricted,
        idm_core::KeyMode::Live,
        &random,
    );
    let unknown = idm_core::ApiKey::from_random(
        idm_core::KeyKind::Secret,
        idm_core::KeyMode::Live,
        &[9u8; 32],
    );
    let mut typo = a.secret_key.clone();
    typo.pop();
    typo.push(if a.secret_key.ends_with('a') {
        'b'
    } else {
        'a'
    });
    for bad in [
        "garbage".to_owned(),
        "ath_sec_live_".to_owned(),
        typo,
        unknown.expose().to_owned(),
        other_mode.expose().to_owned(),
        as_restricted.expose().to_owned(),
        format!("{} ", "ath_sec_live_x".repeat(20)),
    ] {
        let r = platform
            .backend(Method::GET, "/v1/issuer", &bad, None)
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (401, Some("invalid_api_key")),
            "{bad}"
        );
    }
    let r = platform.send(Method::GET, "/v1/issuer", &[], None).await?;
    assert_eq!((r.status, r.code()), (401, Some("unauthenticated")));

    // Restricted keys: the origin must be allowed.
    let sign_up = json!({"email": "o@example.com", "password": "correct horse battery"});
    for origin in [
        None,
        Some("null"),
        Some("https://evil.com"),
        Some("https://app.example.com.evil.com"),
        Some("https://evil.com/app.example.com"),
        Some("https://app.example.com@evil.com"),
        // An allowed origin spelled as no browser spells it.
        Some("https://APP.example.com:8443"),
        Some("https://app.example.com:443"),
        Some("https://app.example.com/"),
    ] {
        let mut headers = vec![("authorization", rk.as_str())];
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        let r = platform
            .send(
                Method::POST,
                "/v1/client/sign_up",
                &headers,
                Some(sign_up.clone()),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("origin_not_allowed")),
            "{origin:?}"
        );
    }
    let r = platform
        .send(
            Method::POST,
            "/v1/client/sign_up",
            &[
                ("authorization", &rk),
                ("origin", "https://app.example.com:8443"),
            ],
            Some(sign_up),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    Ok(())
}

fn bs58_decode(text: &str) -> anyhow::Result<[u8; 32]> {
    // The key body is base58(random ‖ crc32): recover the random part.
    let full = bs58::decode(text).into_vec()?;
    anyhow::ensure!(full.len() == 36, "unexpected key length {}", full.len());
    let mut random = [0u8; 32];
    random.copy_from_slice(&full[..32]);
    Ok(random)
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_edge_replica_within_a_second() -> anyhow::Result<()> {
    // Own platform: adds an edge replica.
    let mut platform = Platform::start().await?;
    platform.add_edge().await?;
    let tenant = platform.create_account("Revoker").await?;
    let created = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &tenant.secret_key,
            Some(json!({"kind": "secret", "name": "doomed"})),
        )
        .await?;
    let doomed = created.str("/key");
    let doomed_id = created.str("/id");
    let auth = format!("Bearer {doomed}");
    // Warm both replicas' caches.
    for replica in 0..2 {
        let r = platform
            .send_to(
                replica,
                Method::GET,
                "/v1/issuer",
                &[("authorization", &auth)],
                None,
            )
            .await?;
        assert_eq!(r.status, 200);
    }
    let r = platform
        .backend(
            Method::DELETE,
            &format!("/v1/api_keys/{doomed_id}"),
            &tenant.secret_key,
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(!r.str("/revoked_at").is_empty());
    let revoked_at = Instant::now();
    for replica in 0..2 {
        loop {
            let r = platform
                .send_to(
                    replica,
                    Method::GET,
                    "/v1/issuer",
                    &[("authorization", &auth)],
                    None,
                )
                .await?;
            if r.code() == Some("invalid_api_key") {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "replica {replica} still accepts the revoked key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The other key is untouched.
    let r = platform
        .backend(Method::GET, "/v1/issuer", &tenant.secret_key, None)
        .await?;
    assert_eq!(r.status, 200);
    platform.stop().await
}
