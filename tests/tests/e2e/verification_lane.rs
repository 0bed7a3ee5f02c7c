//! The verification lane (services/edge-guard/src/verification_lane.rs):
//! `POST /v1/sessions/verify` is answered in front of the public router.
//! Whatever the router's layers gave the route it must still give: the
//! request id, the metrics, the issuer host check, the body limit and the
//! stable JSON errors; every other method on the path still reaches the
//! router. Tried as a caller would: another tenant's key, a restricted
//! key, another issuer's host, a wrong method, malformed and oversized
//! bodies, and a client making up its own request id.

use crate::first_party::issuer_host;
use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;

const PATH: &str = "/v1/sessions/verify";
const ORIGIN: &str = "http://app.lane.test";

async fn tenant_with_session(
    platform: &Platform,
    name: &str,
) -> anyhow::Result<(Tenant, String, String)> {
    let tenant = platform.create_account(name).await?;
    platform.allow_origins(&tenant, &["app.lane.test"]).await?;
    let email = idm_testkit::unique_email("lane");
    let r = platform
        .sign_up(&tenant, ORIGIN, None, &email, "a long lane passphrase")
        .await?;
    anyhow::ensure!(r.status == 201, "sign-up failed: {} {}", r.status, r.json);
    Ok((tenant, r.str("/session_token"), r.str("/session_id")))
}

async fn verify(
    platform: &Platform,
    headers: &[(&str, &str)],
    token: &str,
) -> anyhow::Result<Response> {
    platform
        .send(
            Method::POST,
            PATH,
            headers,
            Some(json!({ "session_token": token })),
        )
        .await
}

fn request_id(r: &Response) -> Option<&str> {
    r.headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_lane_answers_verification_as_the_router_did() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let (a, token, session_id) = tenant_with_session(platform, "Lane A").await?;
    let (b, _, _) = tenant_with_session(platform, "Lane B").await?;
    let mine = format!("Bearer {}", a.secret_key);

    // Valid: the session, and the request id continued from the caller,
    // which on this platform is a trusted proxy (loopback; whom the edge
    // believes is `edge::by_default_no_proxy_is_believed_not_even_loopback`).
    let r = verify(
        platform,
        &[
            ("authorization", &mine),
            ("x-request-id", "req-chosen-by-client"),
        ],
        &token,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(!r.str("/region").is_empty(), "{}", r.json);
    assert_eq!(r.str("/session_id"), session_id, "{}", r.json);
    assert!(!r.str("/expires_at").is_empty());
    assert_eq!(request_id(&r), Some("req-chosen-by-client"));

    // Another tenant's secret key with A's session: refused, as any key of
    // another issuer is.
    let theirs = format!("Bearer {}", b.secret_key);
    let r = verify(platform, &[("authorization", &theirs)], &token).await?;
    assert_eq!(r.status, 401, "{}", r.json);
    assert!(request_id(&r).is_some_and(|id| id.starts_with("req_")));
    // A's restricted key: a backend route, whatever the origin says.
    let restricted = format!("Bearer {}", a.restricted_key);
    let r = verify(
        platform,
        &[("authorization", &restricted), ("origin", ORIGIN)],
        &token,
    )
    .await?;
    assert_eq!(r.code(), Some("insufficient_scope"), "{}", r.json);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    // No key at all.
    let r = verify(platform, &[], &token).await?;
    assert_eq!(r.code(), Some("unauthenticated"), "{}", r.json);

    // On B's own host, only B's keys: A's key with A's session is refused
    // before anything is verified.
    let r = verify(
        platform,
        &[("host", &issuer_host(&b)), ("authorization", &mine)],
        &token,
    )
    .await?;
    assert_eq!(r.code(), Some("issuer_host_mismatch"), "{}", r.json);
    // And on A's own host it verifies.
    let r = verify(
        platform,
        &[("host", &issuer_host(&a)), ("authorization", &mine)],
        &token,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // Other methods on the path are the router's: a JSON 405, not the
    // lane's.
    let r = platform
        .send(Method::GET, PATH, &[("authorization", &mine)], None)
        .await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), Some("method_not_allowed"), "{}", r.json);

    // Malformed, unknown, missing and oversized bodies: the stable codes.
    for body in [
        b"{\"session_token\": ".to_vec(),
        br#"{"session_token": "x", "admin": true}"#.to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        Vec::new(),
    ] {
        let r = platform.send_raw(PATH, &a.secret_key, body).await?;
        assert_eq!(r.code(), Some("invalid_request"), "{}", r.json);
    }
    let huge = format!(r#"{{"session_token": "{}"}}"#, "x".repeat(128 * 1024));
    let r = platform
        .send_raw(PATH, &a.secret_key, huge.into_bytes())
        .await?;
    assert_eq!(r.code(), Some("payload_too_large"), "{}", r.json);
    let r = verify(platform, &[("authorization", &mine)], "not-a-token").await?;
    assert_eq!(r.status, 401, "{}", r.json);

    // The request histogram counts the lane's answers under the route's
    // pattern with their outcomes, as it counts the router's.
    let ops = platform.edge_ops.first().copied();
    let ops = ops.ok_or_else(|| anyhow::anyhow!("the edge has no ops address"))?;
    let metrics = reqwest::get(format!("http://{ops}/metrics"))
        .await?
        .text()
        .await?;
    for outcome in [
        "ok",
        "insufficient_scope",
        "issuer_host_mismatch",
        "payload_too_large",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("idm_http_request_duration_seconds_count")
                    && l.contains(r#"route="/v1/sessions/verify""#)
                    && l.contains(&format!(r#"outcome="{outcome}""#))),
            "no {outcome} series for the lane's route"
        );
    }
    Ok(())
}
