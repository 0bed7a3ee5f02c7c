//! Edge-guard rejection and acceptance throughput:
//! `cargo bench -p idm-e2e --bench edge`.
//!
//! Starts the whole platform in this process (real PostgreSQL, Redis, NATS)
//! and, for a fixed time each, drives with concurrent HTTP clients:
//! - a plain axum handler on 127.0.0.1 (the ceiling: HTTP and the load
//!   generator, nothing else), measured in the same run;
//! - a banned address (key from the cache, ban from memory: no Redis, no NATS);
//! - a refused origin (key from the cache, one Redis velocity script, refusal);
//! - an accepted restricted-key call that the edge answers itself (key, origin,
//!   ban, Redis velocity; `GET /v1/client/me` without a session is 401);
//! - an accepted restricted-key call end to end (`GET /v1/client/me` with a
//!   session: plus the session check and a NATS call to the user service and
//!   the regional store).
//!
//! The load generator shares the machine's cores with every service, so the
//! numbers are a floor. Tunables: `BENCH_SECONDS` (default 10),
//! `BENCH_CONCURRENCY` (default 32).

use idm_testkit::{Options, Platform};
use serde_json::json;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const ORIGIN: &str = "https://app.example.com";

struct Scenario {
    name: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    expect: u16,
}

async fn run(
    http: &reqwest::Client,
    s: &Scenario,
    seconds: u64,
    concurrency: u64,
    print: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut latencies = Vec::new();
        while Instant::now() < deadline {
            let t = Instant::now();
            let mut request = http.get(&s.url);
            for (name, value) in &s.headers {
                request = request.header(*name, value);
            }
            match request.send().await {
                Ok(r) if r.status().as_u16() == s.expect => {
                    let _ = r.bytes().await;
                    ok += 1;
                }
                _ => failed += 1,
            }
            latencies.push(t.elapsed().as_micros() as u64);
        }
        (ok, failed, latencies)
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = started.elapsed();
    let ok: u64 = results.iter().map(|r| r.0).sum();
    let failed: u64 = results.iter().map(|r| r.1).sum();
    let mut latencies: Vec<u64> = results.into_iter().flat_map(|r| r.2).collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    if !print {
        return Ok(());
    }
    println!(
        "{:<44} {:>8.0} req/s   ok {ok:>7}  failed {failed:>4}   p50 {:>6.2} ms   p99 {:>6.2} ms",
        s.name,
        ok as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env("BENCH_SECONDS", 10);
    let concurrency = env("BENCH_CONCURRENCY", 32);
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let tenant = platform.create_account("Bench").await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;

    // Ban one address: a limit of 1 and one strike.
    let banned_ip = "198.51.100.66";
    platform
        .set_waf_policy(
            &tenant,
            json!({
                "client": { "limit": 1, "window_seconds": 3600 },
                "strikes_to_ban": 1,
                "ban_seconds": 86400,
            }),
        )
        .await?;
    let rk = tenant.restricted_key.clone();
    let mut code = String::new();
    for _ in 0..3 {
        let r = platform
            .send(
                reqwest::Method::GET,
                "/v1/client/me",
                &[
                    ("idm-api-key", rk.as_str()),
                    ("origin", ORIGIN),
                    ("x-forwarded-for", banned_ip),
                ],
                None,
            )
            .await?;
        code = r.code().unwrap_or_default().to_owned();
    }
    anyhow::ensure!(code == "ip_banned", "the address was not banned: {code}");
    // Then limits nobody in the benchmark reaches.
    platform
        .set_waf_policy(
            &tenant,
            json!({ "client": { "limit": 10000000, "window_seconds": 60 } }),
        )
        .await?;
    let signed_up = platform
        .sign_up(
            &tenant,
            ORIGIN,
            Some("de"),
            "bench@example.com",
            "correct horse battery",
        )
        .await?;
    anyhow::ensure!(
        signed_up.status == 201,
        "sign-up failed: {}",
        signed_up.json
    );
    let session = format!("Bearer {}", signed_up.str("/session_token"));

    // The plain handler, on its own listener in this process.
    let plain = axum::Router::new().route(
        "/plain",
        axum::routing::get(|| async { axum::Json(json!({ "ok": true })) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plain_addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, plain).await;
    });

    let me = format!("{}/v1/client/me", platform.edge_url(0));
    let key = |extra: &[(&'static str, &str)]| {
        let mut h = vec![("idm-api-key", rk.clone())];
        h.extend(extra.iter().map(|(n, v)| (*n, (*v).to_owned())));
        h
    };
    let scenarios = [
        Scenario {
            name: "plain axum handler (baseline)",
            url: format!("http://{plain_addr}/plain"),
            headers: Vec::new(),
            expect: 200,
        },
        Scenario {
            name: "banned IP rejected (403 ip_banned)",
            url: me.clone(),
            headers: key(&[("origin", ORIGIN), ("x-forwarded-for", banned_ip)]),
            expect: 403,
        },
        Scenario {
            name: "origin rejected (403 origin_not_allowed)",
            url: me.clone(),
            headers: key(&[("origin", "https://evil.example")]),
            expect: 403,
        },
        Scenario {
            name: "restricted key accepted, edge only (401)",
            url: me.clone(),
            headers: key(&[("origin", ORIGIN)]),
            expect: 401,
        },
        Scenario {
            name: "restricted key accepted, /me end to end",
            url: me.clone(),
            headers: key(&[("origin", ORIGIN), ("authorization", session.as_str())]),
            expect: 200,
        },
    ];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .build()?;
    println!(
        "idmesh edge benchmark: {seconds} s per scenario, {concurrency} concurrent clients, {} cores",
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(0)
    );
    for s in &scenarios {
        // Warm caches and connections.
        run(&http, s, 1, concurrency, false).await?;
    }
    for s in &scenarios {
        run(&http, s, seconds, concurrency, true).await?;
    }
    platform.stop().await
}
