//! Operational behaviour: health, readiness, metrics, the bus's failure
//! mode, regions going down, trace propagation and what logs never hold.

use idm_core::Region;
use idm_testkit::{Options, Platform};
use reqwest::Method;
use serde_json::json;

const ORIGIN: &str = "https://app.example.com";

#[tokio::test]
async fn every_service_reports_health_readiness_and_metrics() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Ops").await?;
    platform
        .backend(Method::GET, "/v1/issuer", &tenant.secret_key, None)
        .await?;
    let services: Vec<String> = platform.service_addrs.keys().cloned().collect();
    assert_eq!(services.len(), 15, "{services:?}");
    for service in &services {
        let (status, body) = platform.get_service(service, "/healthz").await?;
        assert_eq!(status, 200, "{service} healthz: {body}");
        let (status, body) = platform.get_service(service, "/readyz").await?;
        assert_eq!(status, 200, "{service} readyz: {body}");
    }
    let (status, metrics) = platform.get_service("account", "/metrics").await?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("idm_bus_server_duration_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("idm_http_request_duration_seconds"));
    // Edge-guard's public port never serves metrics.
    let r = platform.send(Method::GET, "/metrics", &[], None).await?;
    assert_eq!(r.status, 404);
    Ok(())
}

#[tokio::test]
async fn a_call_nobody_answers_is_upstream_unavailable_not_a_hang() -> anyhow::Result<()> {
    // Own platform: stops services.
    let platform = Platform::start().await?;
    // On the bus, as the edge (allowed to call account.get_issuer), with the
    // account service stopped: no responder, answered at once.
    platform.stop_service("account").await?;
    let bus = platform.bus(idm_testkit::Identity::EdgeGuard).await?;
    let reply = bus
        .send(&idm_core::proto::account::IssuerRef {
            issuer_id: idm_core::IssuerId::generate(),
        })
        .await;
    let error = reply.err().map(|e| e.code);
    assert_eq!(error, Some(idm_core::ErrorCode::UpstreamUnavailable));
    platform.stop().await?;

    // Through HTTP: with the user service stopped, sign-up says so.
    let platform = Platform::start().await?;
    let tenant = platform.create_account("Lonely").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    platform.stop_service("user").await?;
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            None,
            "x@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (503, Some("upstream_unavailable")),
        "{}",
        r.json
    );
    platform.stop().await
}

#[tokio::test]
async fn eu_users_never_leave_the_eu_and_best_effort_regions_fall_back() -> anyhow::Result<()> {
    // Own platform: stops regional stores, counts every user and issuer.
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let tenant = platform.create_account("Regions").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    platform.stop_service("user-store-weur").await?;
    platform.stop_service("user-store-oc").await?;

    // An EU sign-up fails clearly rather than landing elsewhere; nothing is left behind.
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("fr"),
            "eu@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (503, Some("region_unavailable")),
        "{}",
        r.json
    );
    let global = platform.global().await?;
    let rows: i64 = global
        .query_one("SELECT count(*) FROM directory.users", &[])
        .await?
        .get(0);
    assert_eq!(rows, 0);
    // A best-effort region falls back to its nearest neighbour.
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("au"),
            "oz@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(
        (r.status, r.str("/user/region")),
        (201, "apac".into()),
        "{}",
        r.json
    );
    // The other EU region still takes EU users.
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("pl"),
            "pl@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!((r.status, r.str("/user/region")), (201, "eeur".into()));

    // An issuer pinned to the EU refuses an explicit non-EU region.
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &tenant.secret_key,
            Some(json!({"policy": {"residency": "eu"}})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &tenant.secret_key,
            Some(json!({"email": "us@example.com", "region": "wnam"})),
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, Some("residency_violation")));
    // A US sign-up goes to the EU default (weur, down): a clear error, never another region…
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("us"),
            "us@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (503, Some("region_unavailable")),
        "{}",
        r.json
    );
    // …until the issuer names an EU default that is up.
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &tenant.secret_key,
            Some(json!({"policy": {"default_region": "eeur"}})),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("us"),
            "us@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(
        (r.status, r.str("/user/region")),
        (201, "eeur".into()),
        "{}",
        r.json
    );

    // A new account needs no region (schemas are created on first use), so
    // one can be made while weur is down, and its users land elsewhere.
    let late = platform.create_account("While weur is down").await?;
    let r = platform
        .backend(
            Method::POST,
            "/v1/users",
            &late.secret_key,
            Some(json!({"email": "late@example.com", "region": "eeur"})),
        )
        .await?;
    assert_eq!(
        (r.status, r.str("/region")),
        (201, "eeur".into()),
        "{}",
        r.json
    );
    platform.stop().await
}

#[tokio::test]
async fn one_trace_spans_edge_service_and_store_and_logs_hold_no_secrets() -> anyhow::Result<()> {
    // Own platform: asserts on the logs.
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let tenant = platform.create_account("Logs").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    let password = format!("pw-{}-plaintext", uuid_like());
    let email = format!("{}@example.com", uuid_like());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let rk = format!("Bearer {}", tenant.restricted_key);
    let r = platform
        .send(
            Method::POST,
            "/v1/client/sign_up",
            &[
                ("authorization", &rk),
                ("origin", ORIGIN),
                ("traceparent", &traceparent),
                ("x-request-id", "req-from-client-1"),
                ("cf-ipcountry", "jp"),
            ],
            Some(json!({"email": email, "password": password})),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(
        r.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("req-from-client-1")
    );
    let token = r.str("/session_token");
    let r = platform.sign_in(&tenant, ORIGIN, &email, &password).await?;
    assert_eq!(r.status, 200);
    let r = platform
        .sign_in(&tenant, ORIGIN, &email, &format!("{password}-wrong"))
        .await?;
    assert_eq!(r.status, 401);

    let logs = idm_testkit::captured_logs();
    // The trace reached auth, user, session and the regional store.
    for hop in [
        ".auth.v1.sign_up",
        ".user.v1.create_user",
        ".store.apac.v1.create_user",
        ".session.v1.create_session",
    ] {
        let hit = logs
            .lines()
            .any(|l| l.contains(trace_id) && l.contains(hop) && l.contains("req-from-client-1"));
        assert!(hit, "no log line for {hop} in trace {trace_id}");
    }
    assert!(
        !logs.contains(&password),
        "a plaintext password reached the logs"
    );
    assert!(
        !logs.contains(&tenant.secret_key) && !logs.contains(&tenant.restricted_key),
        "an API key reached the logs"
    );
    assert!(!logs.contains(&token), "a session token reached the logs");
    let leaking: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&email))
        .take(3)
        .collect();
    assert!(
        leaking.is_empty(),
        "an email address reached the logs: {leaking:#?}"
    );
    platform.stop().await
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}{}", Region::ALL.len())
}
