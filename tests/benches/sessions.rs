//! Session throughput through edge-guard: `cargo bench -p idm-e2e --bench sessions`.
//!
//! Starts the whole platform in this process (real PostgreSQL, Redis, NATS),
//! then, for a fixed time each, drives with concurrent HTTP clients:
//! - `POST /v1/sessions/verify` (stateless HMAC check + revocation set at the edge),
//! - `POST /v1/client/token/refresh` (full rotation: edge → session → regional
//!   store transaction → new signed token), each worker following its own chain.
//!
//! The load generator shares the machine's cores with every service, so the
//! numbers are a floor for a dedicated deployment. Tunables: `BENCH_SECONDS`
//! (default 10), `BENCH_CONCURRENCY` (default 32).

use idm_testkit::{Options, Platform, Tenant};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u64>,
}

fn report(name: &str, elapsed: Duration, mut outcomes: Vec<Outcome>) {
    let ok: u64 = outcomes.iter().map(|o| o.ok).sum();
    let failed: u64 = outcomes.iter().map(|o| o.failed).sum();
    let mut latencies: Vec<u64> = outcomes
        .iter_mut()
        .flat_map(|o| o.latencies_us.drain(..))
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{name:<28} {:>9.0} req/s   ok {ok:>7}  failed {failed:>4}   p50 {:>6.2} ms   p99 {:>6.2} ms",
        ok as f64 / elapsed.as_secs_f64(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
    );
}

async fn run_verify(
    name: &str,
    platform: &Platform,
    tenant: &Tenant,
    token: &str,
    seconds: u64,
    concurrency: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| async move {
        let mut outcome = Outcome {
            ok: 0,
            failed: 0,
            latencies_us: Vec::new(),
        };
        while Instant::now() < deadline {
            let t = Instant::now();
            let r = platform
                .backend(
                    Method::POST,
                    "/v1/sessions/verify",
                    &tenant.secret_key,
                    Some(json!({"session_token": token})),
                )
                .await;
            match r {
                Ok(r) if r.status == 200 => outcome.ok += 1,
                _ => outcome.failed += 1,
            }
            outcome.latencies_us.push(t.elapsed().as_micros() as u64);
        }
        outcome
    });
    let outcomes = futures::future::join_all(workers).await;
    report(name, started.elapsed(), outcomes);
    Ok(())
}

async fn run_refresh(
    platform: &Platform,
    tenant: &Tenant,
    seconds: u64,
    concurrency: u64,
) -> anyhow::Result<()> {
    let mut chains = Vec::new();
    for i in 0..concurrency {
        let r = platform
            .sign_in(
                tenant,
                "https://app.example.com",
                "bench@example.com",
                "correct horse battery",
            )
            .await?;
        anyhow::ensure!(r.status == 200, "sign-in {i} failed: {}", r.json);
        chains.push(r.str("/refresh_token"));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = chains.into_iter().map(|mut token| async move {
        let mut outcome = Outcome {
            ok: 0,
            failed: 0,
            latencies_us: Vec::new(),
        };
        while Instant::now() < deadline {
            let t = Instant::now();
            match platform.refresh(tenant, &token).await {
                Ok(r) if r.status == 200 => {
                    outcome.ok += 1;
                    token = r.str("/refresh_token");
                }
                _ => {
                    outcome.failed += 1;
                    break;
                }
            }
            outcome.latencies_us.push(t.elapsed().as_micros() as u64);
        }
        outcome
    });
    let outcomes = futures::future::join_all(workers).await;
    report("refresh (rotation)", started.elapsed(), outcomes);
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
    // All load comes from one address: lift the WAF's per-address limits.
    platform
        .set_waf_policy(
            &tenant,
            json!({
                "backend": { "limit": 10000000, "window_seconds": 60 },
                "client": { "limit": 10000000, "window_seconds": 60 },
            }),
        )
        .await?;
    let signed_up = platform
        .sign_up(
            &tenant,
            "https://app.example.com",
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
    println!("idmesh session benchmark: {seconds} s per scenario, {concurrency} concurrent clients, {} cores", std::thread::available_parallelism().map(usize::from).unwrap_or(0));
    // Warm caches and connection pools.
    run_verify(
        "(warm-up)",
        &platform,
        &tenant,
        &signed_up.str("/session_token"),
        1,
        concurrency,
    )
    .await?;
    run_verify(
        "session verify",
        &platform,
        &tenant,
        &signed_up.str("/session_token"),
        seconds,
        concurrency,
    )
    .await?;
    run_refresh(&platform, &tenant, seconds, concurrency).await?;
    platform.stop().await
}
