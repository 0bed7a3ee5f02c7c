//! The ban gate (services/edge-guard/src/ban_gate.rs): a caller its issuer
//! banned is refused in front of the router, with the answer the router
//! would have given (status, code, `Retry-After`, request id, CORS) and
//! none of its per-request telemetry. Tried as an attacker and a bystander
//! would: the banned issuer's other keys and routes, a page the issuer
//! does not list, the verification lane, another tenant's key from the
//! same address, another issuer's host, a neighbour in the same IPv6 /64.

use crate::first_party::issuer_host;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://app.gate.test";

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /v1/client/me` with `key` as `Idm-Api-Key` and `extra` headers.
async fn me(platform: &Platform, key: &str, extra: &[(&str, &str)]) -> anyhow::Result<Response> {
    let mut headers = vec![("idm-api-key", key)];
    headers.extend_from_slice(extra);
    platform
        .send(Method::GET, "/v1/client/me", &headers, None)
        .await
}

/// Breaches the client limit from `address` until the issuer bans it.
async fn ban(platform: &Platform, t: &Tenant, address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = me(
            platform,
            &t.restricted_key,
            &[("origin", ORIGIN), ("x-forwarded-for", address)],
        )
        .await?;
        if r.code() == Some("ip_banned") {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "no ban after 20 s of breaches");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Counts {
    histogram: f64,
    decisions: f64,
}

async fn counts(platform: &Platform) -> anyhow::Result<Counts> {
    let metrics = platform.edge_metrics(0).await?;
    Ok(Counts {
        histogram: sum(
            &metrics,
            "idm_http_request_duration_seconds_count",
            &[r#"outcome="ip_banned""#],
        ),
        decisions: sum(
            &metrics,
            "idm_edge_rate_limit_decisions_total",
            &[r#"decision="banned""#],
        ),
    })
}

fn assert_banned(r: &Response, what: &str) {
    assert_eq!(
        (r.status, r.code()),
        (403, Some("ip_banned")),
        "{what}: {}",
        r.json
    );
    let retry: u64 = header(r, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retry >= 1, "{what}: no Retry-After");
    assert!(header(r, "x-request-id").is_some(), "{what}: no request id");
}

#[tokio::test]
async fn a_banned_caller_is_refused_in_front_of_the_router_as_the_router_would(
) -> anyhow::Result<()> {
    // Own platform: the test counts the edge's ban refusals, which other
    // tests' bans would move.
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let banned = platform.create_account("Gate").await?;
    let bystander = platform.create_account("Gate bystander").await?;
    for t in [&banned, &bystander] {
        platform.allow_origins(t, &["app.gate.test"]).await?;
    }
    platform
        .set_waf_policy(
            &banned,
            json!({
                "client": { "limit": 2, "window_seconds": 1 },
                "strikes_to_ban": 1,
                "ban_seconds": 600,
            }),
        )
        .await?;
    // The policy change dropped the issuer's cached keys; the secret key is
    // cached again by a call from elsewhere (the gate never looks a key up).
    let secret = format!("Bearer {}", banned.secret_key);
    let r = platform
        .send(
            Method::GET,
            "/v1/users",
            &[
                ("authorization", &secret),
                ("x-forwarded-for", "198.51.100.79"),
            ],
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let attacker = "198.51.100.80";
    // The first ban is decided inside the router, by the WAF check that
    // counted the breach.
    ban(&platform, &banned, attacker).await?;
    let before = counts(&platform).await?;
    let mut refused_by_the_gate = 0.0;

    // From a page the issuer lists: the refusal is readable there, under
    // the request id the (trusted) proxy chose, like the router's.
    let r = me(
        &platform,
        &banned.restricted_key,
        &[
            ("origin", ORIGIN),
            ("x-forwarded-for", attacker),
            ("x-request-id", "gate-request-1"),
        ],
    )
    .await?;
    assert_banned(&r, "allowed page");
    refused_by_the_gate += 1.0;
    assert_eq!(header(&r, "x-request-id"), Some("gate-request-1"));
    assert_eq!(r.str("/error/request_id"), "gate-request-1");
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert!(header(&r, "access-control-expose-headers").is_some_and(|h| h.contains("retry-after")));
    assert_eq!(header(&r, "vary"), Some("Origin"));

    // From a page the issuer does not list: refused, and unreadable there.
    let r = me(
        &platform,
        &banned.restricted_key,
        &[
            ("origin", "https://attacker.example"),
            ("x-forwarded-for", attacker),
        ],
    )
    .await?;
    assert_banned(&r, "unlisted page");
    refused_by_the_gate += 1.0;
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    // The ban is the issuer's: its secret key on a backend route, and the
    // verification lane, are refused too (no CORS on backend routes).
    let r = platform
        .send(
            Method::GET,
            "/v1/users",
            &[("authorization", &secret), ("x-forwarded-for", attacker)],
            None,
        )
        .await?;
    assert_banned(&r, "secret key, backend route");
    refused_by_the_gate += 1.0;
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "vary"), None);
    let r = platform
        .send(
            Method::POST,
            "/v1/sessions/verify",
            &[("authorization", &secret), ("x-forwarded-for", attacker)],
            Some(json!({ "session_token": "anything" })),
        )
        .await?;
    assert_banned(&r, "verification lane");
    refused_by_the_gate += 1.0;

    // On the issuer's own host the host's grant makes it readable.
    let own_host = issuer_host(&banned);
    let r = me(
        &platform,
        &banned.restricted_key,
        &[
            ("host", &own_host),
            ("origin", ORIGIN),
            ("x-forwarded-for", attacker),
        ],
    )
    .await?;
    assert_banned(&r, "own host");
    refused_by_the_gate += 1.0;
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ORIGIN));

    // Nobody else is refused: another tenant's keys from the same address,
    // the banned issuer's key from another address, no key at all.
    let r = me(
        &platform,
        &bystander.restricted_key,
        &[("origin", ORIGIN), ("x-forwarded-for", attacker)],
    )
    .await?;
    assert_eq!(r.code(), Some("unauthenticated"), "{}", r.json);
    let theirs = format!("Bearer {}", bystander.secret_key);
    let r = platform
        .send(
            Method::POST,
            "/v1/sessions/verify",
            &[("authorization", &theirs), ("x-forwarded-for", attacker)],
            Some(json!({ "session_token": "anything" })),
        )
        .await?;
    assert_eq!(r.status, 401, "{}", r.json);
    let r = me(
        &platform,
        &banned.restricted_key,
        &[("origin", ORIGIN), ("x-forwarded-for", "198.51.100.81")],
    )
    .await?;
    assert_eq!(r.code(), Some("unauthenticated"), "{}", r.json);
    let r = platform
        .send(
            Method::GET,
            "/v1/client/me",
            &[("origin", ORIGIN), ("x-forwarded-for", attacker)],
            None,
        )
        .await?;
    assert_eq!(r.code(), Some("unauthenticated"), "{}", r.json);
    // A key that is not well formed is the router's to refuse.
    let r = me(
        &platform,
        "rk_test_not-a-key",
        &[("origin", ORIGIN), ("x-forwarded-for", attacker)],
    )
    .await?;
    assert_eq!(r.code(), Some("invalid_api_key"), "{}", r.json);
    // On another issuer's host the banned key is refused for the host.
    let r = me(
        &platform,
        &banned.restricted_key,
        &[
            ("host", &issuer_host(&bystander)),
            ("origin", ORIGIN),
            ("x-forwarded-for", attacker),
        ],
    )
    .await?;
    assert_eq!(r.code(), Some("issuer_host_mismatch"), "{}", r.json);

    // IPv6: the issuer bans the attacker's /64 (its policy's default); a
    // neighbour in it is refused in front of the router, the next /64 is not.
    ban(&platform, &banned, "2001:db8:7:1::10").await?;
    let mid = counts(&platform).await?;
    let r = me(
        &platform,
        &banned.restricted_key,
        &[
            ("origin", ORIGIN),
            ("x-forwarded-for", "2001:db8:7:1:ffff::2"),
        ],
    )
    .await?;
    assert_banned(&r, "same /64");
    let r = me(
        &platform,
        &banned.restricted_key,
        &[("origin", ORIGIN), ("x-forwarded-for", "2001:db8:7:2::10")],
    )
    .await?;
    assert_eq!(r.code(), Some("unauthenticated"), "{}", r.json);
    let after = counts(&platform).await?;

    // None of the gate's refusals reached the router (no request-histogram
    // sample); each is counted as a ban decision.
    assert_eq!(
        mid.histogram - before.histogram,
        1.0,
        "only the IPv6 ban's first refusal came from the router"
    );
    assert_eq!(after.histogram, mid.histogram);
    assert_eq!(mid.decisions - before.decisions, refused_by_the_gate + 1.0);
    assert_eq!(after.decisions - mid.decisions, 1.0);
    platform.stop().await
}
