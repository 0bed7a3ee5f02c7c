//! One tenant cannot starve another (issue 9 §4). Before: 300 concurrent
//! sign-ins for unknown users from one tenant pushed another tenant's
//! sign-in from 0.1 s to `503` after 5 s. Now the flooding tenant holds at
//! most its share of the store's Argon2 workers and connections (and of
//! the edge's requests in flight); its excess is shed at once with
//! `429`/`503` and `Retry-After`, and the other tenant's sign-ins go on.

use crate::factor_kit::tenant;
use idm_testkit::Platform;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://app.example.com";

/// What one of the flood's sign-ins got: status, code, `Retry-After`.
type Outcome = (u16, Option<String>, Option<u64>);

// Several threads, as each service has in a deployment: on one, the
// flood's HTTP work would queue B's behind it in the test's own scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_from_one_tenant_does_not_starve_another() -> anyhow::Result<()> {
    // The whole platform shares this machine's cores with the flood. One
    // hashing worker per store leaves the other services a core, as their
    // own machines would in a deployment; otherwise the flood's admitted
    // Argon2 work alone keeps every core busy and the test measures the
    // CPU, not the fairness.
    // Own platform: loads the stores, with options of its own.
    let platform = Arc::new(
        Platform::start_with(idm_testkit::Options {
            store_hash_workers: 1,
            ..idm_testkit::Options::default()
        })
        .await?,
    );
    let b = tenant(&platform, "Steady B").await?;
    let c = tenant(&platform, "Flooding C").await?;
    // C's per-address limit out of the way: one test process plays a flood
    // from many addresses, so the store's fair share and the edge's
    // in-flight cap are what meet it.
    platform
        .set_waf_policy(
            &c,
            json!({ "client": { "limit": 10_000_000, "window_seconds": 60 } }),
        )
        .await?;
    let r = platform
        .sign_up(
            &b,
            ORIGIN,
            None,
            "steady.user@example.com",
            "b-password-123",
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = platform
        .sign_up(&c, ORIGIN, None, "real.user@example.com", "c-password-123")
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);

    // C: 300 concurrent clients signing in again and again, unknown users
    // and wrong passwords, until B is done.
    let done = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..300)
        .map(|i| {
            let platform = Arc::clone(&platform);
            let c = c.clone();
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut outcomes: Vec<Outcome> = Vec::new();
                let mut n = 0u32;
                while !done.load(Ordering::Relaxed) {
                    n += 1;
                    let email = if i % 2 == 0 {
                        format!("nobody.{i}.{n}@example.com")
                    } else {
                        "real.user@example.com".to_owned()
                    };
                    match platform
                        .sign_in(&c, ORIGIN, &email, "wrong-password-1")
                        .await
                    {
                        Ok(r) => {
                            let retry = r
                                .headers
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse().ok());
                            outcomes.push((r.status, r.code().map(str::to_owned), retry));
                            if let Some(seconds) = retry {
                                // Told when to come back, each client does
                                // (no client library hammers a 503); the
                                // 300 of them keep the flood going.
                                tokio::time::sleep(Duration::from_secs(seconds)).await;
                            }
                        }
                        Err(e) => outcomes.push((0, Some(e.to_string()), None)),
                    }
                }
                outcomes
            })
        })
        .collect();
    // Let the flood build up before B starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // B: a steady sign-in every 200 ms.
    let mut b_results = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let r = platform
            .sign_in(&b, ORIGIN, "steady.user@example.com", "b-password-123")
            .await?;
        b_results.push((r.status, r.code().map(str::to_owned), started.elapsed()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut c_outcomes: Vec<Outcome> = Vec::new();
    for worker in flood {
        c_outcomes.extend(worker.await?);
    }

    // Every one of B's sign-ins succeeded: no 5xx, no time-out.
    eprintln!("B: {b_results:?}");
    assert!(
        b_results.iter().all(|(status, _, _)| *status == 200),
        "B was starved: {b_results:?}"
    );
    // C got answers, and its excess was shed with 429/503 and Retry-After,
    // never left to time out in a queue.
    let shed: Vec<&Outcome> = c_outcomes
        .iter()
        .filter(|(status, _, _)| matches!(status, 429 | 503))
        .collect();
    let refused = c_outcomes.iter().filter(|(s, _, _)| *s == 401).count();
    eprintln!(
        "C: {} sign-ins, {} shed, {} answered invalid_credentials; B: {:?}",
        c_outcomes.len(),
        shed.len(),
        refused,
        b_results.iter().map(|r| r.2).max()
    );
    assert!(!shed.is_empty(), "C's flood was never shed");
    assert!(refused > 0, "C itself was starved of its share");
    for (status, code, retry) in &shed {
        assert!(
            matches!(code.as_deref(), Some("overloaded" | "rate_limited")),
            "{status} {code:?}"
        );
        assert!(
            retry.is_some_and(|s| s >= 1),
            "{status} {code:?} without Retry-After"
        );
    }
    let unexpected: Vec<&Outcome> = c_outcomes
        .iter()
        .filter(|(status, _, _)| !matches!(status, 401 | 429 | 503))
        .collect();
    assert!(
        unexpected.is_empty(),
        "C got answers other than refusals and sheds (a time-out is a queue): {:?}",
        &unexpected[..unexpected.len().min(5)]
    );
    // And once the flood is over, C's own sign-ins work again.
    let r = platform
        .sign_in(&c, ORIGIN, "real.user@example.com", "c-password-123")
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    match Arc::try_unwrap(platform) {
        Ok(platform) => platform.stop().await,
        Err(_) => Ok(()),
    }
}
