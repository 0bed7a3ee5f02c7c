//! Webhook delivery throughput to a local receiver (issue 12):
//! `cargo bench -p idm-e2e --bench webhooks`.
//!
//! Starts the whole platform in this process, creates one tenant with
//! `BENCH_ENDPOINTS` endpoints (default 1) on an axum receiver on
//! 127.0.0.1 that answers 204 at once, stops the webhook service, publishes
//! `BENCH_EVENTS` events (default 2000) to `EVENTS` (as the account service
//! would: `api_key.created`), starts the webhook service again and measures
//! the time until the receiver got every delivery: the consumer's fan-out
//! into the database, the delivery loop, signing, the HTTP exchange and the
//! attempt records, end to end. Reports deliveries per second. Tunables:
//! `BENCH_ENDPOINT_CONCURRENCY` (slots per endpoint, default 16),
//! `BENCH_POOL` (the webhook service's database connections, default 8).
//! Everything shares the machine's cores.

use idm_core::proto::event::{ApiKeyChanged, DomainEvent};
use idm_testkit::{Identity, Platform};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = env("BENCH_EVENTS", 2000);
    let endpoints = env("BENCH_ENDPOINTS", 1).max(1);
    let concurrency = env("BENCH_ENDPOINT_CONCURRENCY", 16);
    let pool = env("BENCH_POOL", 8);
    let mut platform = Platform::start_with(idm_testkit::Options {
        webhook_delivery: idm_webhook::Delivery {
            endpoint_concurrency: concurrency,
            ..idm_testkit::test_webhook_delivery()
        },
        webhook_pool_size: pool,
        ..idm_testkit::Options::default()
    })
    .await?;
    let tenant = platform.create_account("Bench").await?;

    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let app = axum::Router::new().fallback(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for i in 0..endpoints {
        let r = platform
            .backend(
                reqwest::Method::POST,
                "/v1/webhook_endpoints",
                &tenant.secret_key,
                Some(json!({"url": format!("http://{addr}/hook/{i}"), "events": ["api_key.created"]})),
            )
            .await?;
        anyhow::ensure!(r.status == 201, "{}", r.json);
    }

    platform.stop_service("webhook").await?;
    let bus = platform.bus(Identity::Account).await?;
    let stream = idm_bus::Events::ensure(&bus).await?;
    let issuer = idm_core::IssuerId::parse(&tenant.issuer_id)?;
    let published = Instant::now();
    {
        use futures::StreamExt;
        let results: Vec<_> = futures::stream::iter(0..events)
            .map(|_| {
                let stream = stream.clone();
                let issuer = issuer.clone();
                async move {
                    stream
                        .publish(
                            &issuer,
                            DomainEvent::ApiKeyCreated(ApiKeyChanged {
                                key_id: idm_core::ApiKeyId::generate(),
                                kind: idm_core::KeyKind::Secret,
                            }),
                        )
                        .await
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for r in results {
            r.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    let publishing = published.elapsed();

    let expected = events * endpoints;
    let started = Instant::now();
    platform.start_service("webhook").await?;
    let deadline = started + Duration::from_secs(600);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let got = received.load(Ordering::Relaxed);
    println!(
        "webhooks: {got}/{expected} deliveries ({events} events x {endpoints} endpoint(s), {concurrency} slots per endpoint, {pool} DB connections) in {:.2} s: {:.0} deliveries/s (publishing the events took {:.2} s, {:.0}/s)",
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
        publishing.as_secs_f64(),
        events as f64 / publishing.as_secs_f64(),
    );
    platform.stop().await?;
    anyhow::ensure!(got == expected, "not every delivery arrived");
    Ok(())
}
