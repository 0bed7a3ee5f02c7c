//! Signing keys as an attacker sees them: read off the bus, held stolen, or
//! after an emergency revocation (issue 9, sections 1 and 5).

use crate::factor_kit::{tenant, verify};
use base64::Engine;
use futures::StreamExt;
use idm_core::{IssuerId, Region, SessionId, UserId};
use idm_crypto::session_token::{self, RingKey, SessionClaims};
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://app.example.com";
const PASSWORD: &str = "correct horse battery";

/// The claims of a real session, re-signed by `key` with the given times.
fn forge(
    key: &RingKey,
    real: &Response,
    issuer: &str,
    iat: i64,
    exp: i64,
) -> anyhow::Result<String> {
    let claims = SessionClaims {
        iss: IssuerId::parse(issuer)?,
        sid: SessionId::parse(&real.str("/session_id"))?,
        sub: UserId::parse(&real.str("/user/id"))?,
        reg: Region::parse(&real.str("/user/region"))?,
        iat,
        exp,
    };
    Ok(session_token::sign(key, &claims)?)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Every byte string a field of `value` could decode to (raw, base64 in both
/// alphabets, hex), and every 32-byte window of each: all the keys an
/// eavesdropper could try.
fn candidate_keys(value: &Value) -> Vec<[u8; 32]> {
    let mut strings = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                out.push(k.clone());
                walk(v, out);
            }),
            other => out.push(other.to_string()),
        }
    }
    walk(value, &mut strings);
    let mut decoded: Vec<Vec<u8>> = Vec::new();
    for s in &strings {
        decoded.push(s.as_bytes().to_vec());
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            if let Ok(bytes) = engine.decode(s) {
                decoded.push(bytes);
            }
        }
        if s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes: Vec<u8> = (0..s.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                .collect();
            decoded.push(bytes);
        }
    }
    let mut keys: Vec<[u8; 32]> = decoded
        .iter()
        .flat_map(|bytes| bytes.windows(32).filter_map(|w| w.try_into().ok()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The first message on `subscription` within five seconds.
async fn next_within(
    subscription: &mut async_nats::Subscriber,
) -> anyhow::Result<async_nats::Message> {
    tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("subscription closed"))
}

#[tokio::test]
async fn key_ring_replies_read_off_the_bus_sign_nothing_the_edge_accepts() -> anyhow::Result<()> {
    // Own platform: takes the next key-ring request on the bus to be its own.
    let platform = Platform::start().await?;
    let a = tenant(&platform, "Snooped").await?;
    let signed_up = platform
        .sign_up(&a, ORIGIN, None, "snoop@example.com", PASSWORD)
        .await?;
    assert_eq!(signed_up.status, 201, "{}", signed_up.json);

    // The eavesdropper listens to key-ring requests and to every reply inbox.
    let observer = platform.bus_observer().await?;
    let mut requests = observer
        .subscribe(format!("{}.session.v1.key_ring", platform.prefix))
        .await?;
    let mut replies = observer.subscribe(">").await?;
    observer.flush().await?;

    // The edge's first verification for this issuer fetches the ring.
    let token = signed_up.str("/session_token");
    assert_eq!(verify(&platform, 0, &a, &token).await?.status, 200);
    let request = next_within(&mut requests).await?;
    let reply_to = request
        .reply
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no reply subject"))?;
    let started = Instant::now();
    let reply = loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "no key-ring reply seen"
        );
        let m = next_within(&mut replies).await?;
        if m.subject == reply_to {
            break m;
        }
    };
    let snooped: Value = serde_json::from_slice(&reply.payload)?;
    let kid = token.split('.').nth(1).unwrap_or_default().to_owned();
    assert!(
        snooped.to_string().contains(&kid),
        "the reply is the ring: {snooped}"
    );

    // An attacker holding the edge's NATS credentials (not its transport
    // key) can also ask for the ring itself.
    let stolen_edge = platform.nats.connect(idm_bus::Identity::EdgeGuard).await?;
    let key_ring = format!("{}.session.v1.key_ring", platform.prefix);
    let asked = edge_request(
        &stolen_edge,
        &key_ring,
        json!({
            "issuer_id": a.issuer_id,
            "nonce": "eavesdropper-chosen-nonce-000000",
        }),
    )
    .await?;
    let asked: Value = serde_json::from_slice(&asked.payload)?;
    assert!(asked.to_string().contains(&kid), "{asked}");

    // The real key, as stolen from the database, never appears in either…
    let real = platform.signing_keys(&a.issuer_id).await?;
    assert_eq!(real.len(), 1);
    let mut candidates = candidate_keys(&snooped);
    candidates.extend(candidate_keys(&asked));
    assert!(
        candidates.len() > 40,
        "the sealed key was examined: {}",
        candidates.len()
    );
    assert!(!candidates.iter().any(|c| c == real[0].secret.as_ref()));

    // …and no field decodes to a key that signs a token the edge accepts.
    let (iat, exp) = (now(), now() + 300);
    for candidate in &candidates {
        let key = RingKey {
            kid: kid.clone(),
            secret: zeroize::Zeroizing::new(*candidate),
        };
        let forged = forge(&key, &signed_up, &a.issuer_id, iat, exp)?;
        let r = verify(&platform, 0, &a, &forged).await?;
        assert_eq!(
            (r.status, r.code()),
            (401, Some("session_invalid")),
            "{}",
            r.json
        );
    }
    // Positive control: the same forgery with the real key is accepted, so
    // the loop above would have caught a key in the clear.
    let forged = forge(&real[0], &signed_up, &a.issuer_id, iat, exp)?;
    assert_eq!(verify(&platform, 0, &a, &forged).await?.status, 200);

    // A request without a proper nonce gets nothing.
    let bare = edge_request(
        &stolen_edge,
        &key_ring,
        json!({ "issuer_id": a.issuer_id, "nonce": "" }),
    )
    .await?;
    let bare: Value = serde_json::from_slice(&bare.payload)?;
    assert_eq!(bare["error"]["code"], json!("invalid_request"), "{bare}");
    platform.stop().await
}

#[tokio::test]
async fn a_validly_signed_token_beyond_the_issuers_session_lifetime_is_refused(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Lifetimes").await?;
    let signed_up = platform
        .sign_up(&a, ORIGIN, None, "life@example.com", PASSWORD)
        .await?;
    assert_eq!(signed_up.status, 201, "{}", signed_up.json);
    // The attacker holds the issuer's real signing key.
    let keys = platform.signing_keys(&a.issuer_id).await?;
    let key = &keys[0];
    let t = now();
    let year = 365 * 86_400;
    let me = |token: String| {
        let platform = &platform;
        let a = &a;
        async move {
            platform
                .client_call(0, a, Method::GET, "/v1/client/me", Some(&token), None)
                .await
        }
    };

    // A one-year token, and one "issued" a year from now with a short life.
    for (iat, exp) in [
        (t, t + year),
        (t - 10, t + 86_400),
        (t + year, t + year + 300),
    ] {
        let forged = forge(key, &signed_up, &a.issuer_id, iat, exp)?;
        let r = verify(platform, 0, &a, &forged).await?;
        assert_eq!(
            (r.status, r.code()),
            (401, Some("session_invalid")),
            "{iat}..{exp}: {}",
            r.json
        );
        let r = me(forged).await?;
        assert_eq!(r.code(), Some("session_invalid"), "{}", r.json);
    }
    // A token within the default lifetime (600 s) passes, on both paths.
    let normal = forge(key, &signed_up, &a.issuer_id, t, t + 600)?;
    let r = verify(platform, 0, &a, &normal).await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(me(normal.clone()).await?.status, 200);
    assert_eq!(me(signed_up.str("/session_token")).await?.status, 200);

    // The limit is the issuer's: lowering it refuses longer tokens at once.
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &a.secret_key,
            Some(json!({ "policy": { "session_lifetime_seconds": 120 } })),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let started = Instant::now();
    loop {
        let r = verify(platform, 0, &a, &normal).await?;
        if r.code() == Some("session_invalid") {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "still {}",
            r.json
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let short = forge(key, &signed_up, &a.issuer_id, t, t + 120)?;
    assert_eq!(verify(platform, 0, &a, &short).await?.status, 200);
    Ok(())
}

async fn sessions_of(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    n: usize,
) -> anyhow::Result<Vec<Response>> {
    let mut out = vec![
        platform
            .sign_up(tenant, ORIGIN, None, email, PASSWORD)
            .await?,
    ];
    while out.len() < n {
        out.push(platform.sign_in(tenant, ORIGIN, email, PASSWORD).await?);
    }
    for s in &out {
        anyhow::ensure!(!s.str("/session_token").is_empty(), "{}", s.json);
    }
    Ok(out)
}

#[tokio::test]
async fn an_emergency_key_revocation_ends_every_session_of_that_issuer_only() -> anyhow::Result<()>
{
    // Own platform: adds an edge replica.
    let mut platform = Platform::start().await?;
    platform.add_edge().await?;
    let a = tenant(&platform, "Breached").await?;
    let b = tenant(&platform, "Bystander").await?;
    let a_sessions = sessions_of(&platform, &a, "victim@example.com", 2).await?;
    let b_sessions = sessions_of(&platform, &b, "other@example.com", 1).await?;
    // Both edges have verified (and cached the rings of) both issuers.
    for replica in 0..2 {
        for (t, s) in [
            (&a, &a_sessions[0]),
            (&a, &a_sessions[1]),
            (&b, &b_sessions[0]),
        ] {
            assert_eq!(
                verify(&platform, replica, t, &s.str("/session_token"))
                    .await?
                    .status,
                200
            );
        }
    }
    let kid = |token: &str| token.split('.').nth(1).unwrap_or_default().to_owned();
    let old_kid = kid(&a_sessions[0].str("/session_token"));
    let b_kid = kid(&b_sessions[0].str("/session_token"));
    // A graceful rotation first: the rotated-out key would verify for a day.
    let rotated = platform
        .backend(Method::POST, "/v1/session_keys/rotate", &a.secret_key, None)
        .await?;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let after_rotation = platform
        .sign_in(&a, ORIGIN, "victim@example.com", PASSWORD)
        .await?;
    assert_eq!(
        verify(&platform, 1, &a, &a_sessions[0].str("/session_token"))
            .await?
            .status,
        200
    );

    // Refused without the scope, and with a restricted key.
    let reader = platform
        .backend(
            Method::POST,
            "/v1/api_keys",
            &a.secret_key,
            Some(json!({ "kind": "secret", "name": "reader", "scopes": ["sessions:read"] })),
        )
        .await?;
    assert_eq!(reader.status, 201, "{}", reader.json);
    let reader_key = reader.str("/key");
    let r = platform
        .backend(Method::POST, "/v1/session_keys/revoke", &reader_key, None)
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("insufficient_scope")),
        "{}",
        r.json
    );
    let r = platform
        .send(
            Method::POST,
            "/v1/session_keys/revoke",
            &[
                ("authorization", &format!("Bearer {}", a.restricted_key)),
                ("origin", ORIGIN),
            ],
            None,
        )
        .await?;
    assert_eq!(r.code(), Some("insufficient_scope"));
    assert_eq!(
        verify(&platform, 0, &a, &a_sessions[0].str("/session_token"))
            .await?
            .status,
        200
    );

    // The emergency revocation.
    let revoked = platform
        .backend(Method::POST, "/v1/session_keys/revoke", &a.secret_key, None)
        .await?;
    assert_eq!(revoked.status, 200, "{}", revoked.json);
    let new_kid = revoked.str("/kid");
    let revoked_kids: Vec<String> = serde_json::from_value(revoked.json["revoked_kids"].clone())?;
    assert_eq!(
        revoked_kids.len(),
        2,
        "both the rotated-out and the current key: {}",
        revoked.json
    );
    assert!(revoked_kids.contains(&old_kid) && revoked_kids.contains(&rotated.str("/kid")));
    assert!(!revoked_kids.contains(&new_kid));

    // Every earlier token is refused on every edge replica, at once.
    for replica in 0..2 {
        for s in a_sessions.iter().chain([&after_rotation]) {
            let started = Instant::now();
            loop {
                let r = verify(&platform, replica, &a, &s.str("/session_token")).await?;
                if r.code() == Some("session_invalid") {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(1),
                    "replica {replica} still answers {} {}",
                    r.status,
                    r.json
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Their refresh tokens mint nothing: every session must sign in again.
    for s in a_sessions.iter().chain([&after_rotation]) {
        let r = platform.refresh(&a, &s.str("/refresh_token")).await?;
        assert_eq!(
            (r.status, r.code()),
            (401, Some("session_revoked")),
            "{}",
            r.json
        );
    }
    // The stolen old key signs nothing the edge accepts any more.
    let stolen = platform.signing_keys(&a.issuer_id).await?;
    let t = now();
    for key in stolen.iter().filter(|k| k.kid != new_kid) {
        let forged = forge(key, &a_sessions[0], &a.issuer_id, t, t + 300)?;
        assert_eq!(
            verify(&platform, 1, &a, &forged).await?.code(),
            Some("session_invalid")
        );
    }
    // A fresh sign-in gets the new key and works everywhere, and refreshes.
    let fresh = platform
        .sign_in(&a, ORIGIN, "victim@example.com", PASSWORD)
        .await?;
    assert_eq!(kid(&fresh.str("/session_token")), new_kid);
    for replica in 0..2 {
        assert_eq!(
            verify(&platform, replica, &a, &fresh.str("/session_token"))
                .await?
                .status,
            200
        );
    }
    let refreshed = platform.refresh(&a, &fresh.str("/refresh_token")).await?;
    assert_eq!(refreshed.status, 200, "{}", refreshed.json);
    // A later rotation does not bring the revoked keys back.
    let r = platform
        .backend(Method::POST, "/v1/session_keys/rotate", &a.secret_key, None)
        .await?;
    assert_eq!(r.status, 200);
    let r = verify(&platform, 0, &a, &a_sessions[0].str("/session_token")).await?;
    assert_eq!(r.code(), Some("session_invalid"));

    // Issuer B is untouched: same key, its session verifies and refreshes.
    for replica in 0..2 {
        assert_eq!(
            verify(&platform, replica, &b, &b_sessions[0].str("/session_token"))
                .await?
                .status,
            200
        );
    }
    let r = platform
        .refresh(&b, &b_sessions[0].str("/refresh_token"))
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(kid(&r.str("/session_token")), b_kid);

    // The event says who did it and what it revoked (ids only).
    let event = platform
        .last_event(&a.issuer_id, "session_keys.revoked")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no session_keys.revoked event"))?;
    assert_eq!(event["issuer_id"], json!(a.issuer_id));
    assert_eq!(event["data"]["new_kid"], json!(new_kid));
    assert_eq!(event["data"]["revoked_kids"], revoked.json["revoked_kids"]);
    assert!(event["data"]["actor_key_id"]
        .as_str()
        .is_some_and(|k| k.starts_with("key_")));
    assert!(!event["data"]["request_id"]
        .as_str()
        .unwrap_or_default()
        .is_empty());
    assert_eq!(
        platform
            .count_events(&b.issuer_id, "session_keys.revoked")
            .await?,
        0
    );
    platform.stop().await
}

/// A raw request as edge-guard's identity would send it (its caller header,
/// its own inbox), from a client holding the edge's NATS credentials.
async fn edge_request(
    client: &async_nats::Client,
    subject: &str,
    body: Value,
) -> anyhow::Result<async_nats::Message> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(idm_bus::HEADER_CALLER, "edge-guard");
    Ok(tokio::time::timeout(
        Duration::from_secs(5),
        client.request_with_headers(
            subject.to_owned(),
            headers,
            serde_json::to_vec(&body)?.into(),
        ),
    )
    .await??)
}
