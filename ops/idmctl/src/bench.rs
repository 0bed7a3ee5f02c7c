//! The limits `ops/bench` measures next to the platform's figures, in the
//! same run on the same machine (docs/PERFORMANCE.md):
//!
//! - `bench-baseline`: a plain axum handler answering a small JSON body, the
//!   ceiling for any HTTP figure (same HTTP stack, no work behind it);
//! - `bench-argon2`: Argon2id with the platform's parameters on every core,
//!   the ceiling for password sign-in (hashes per second);
//! - `bench-nats`: a raw NATS request/reply echo, and the same echo made
//!   through `idm_bus` (headers, deadline, JSON envelope, metrics), the
//!   ceiling for and the cost of one bus hop.
//!
//! Each prints one JSON object on stdout for the script to read.

use anyhow::Context as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `bench-baseline --listen ADDR`: serves `GET|POST /plain` until killed.
pub fn baseline(listen: &str) -> anyhow::Result<()> {
    let listen: std::net::SocketAddr = listen.parse().context("--listen is HOST:PORT")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            // The same answer shape as the platform's small JSON replies.
            async fn plain() -> axum::Json<serde_json::Value> {
                axum::Json(serde_json::json!({ "ok": true }))
            }
            let router = axum::Router::new().route("/plain", axum::routing::get(plain).post(plain));
            let listener = tokio::net::TcpListener::bind(listen).await?;
            axum::serve(listener, router).await?;
            Ok(())
        })
}

/// `bench-argon2 --seconds N [--threads N]`: Argon2id with the platform's
/// parameters on `threads` OS threads (default: every core), each reusing
/// one memory block, for about `seconds`.
pub fn argon2(seconds: u64, threads: usize) -> anyhow::Result<()> {
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    let p = idm_crypto::PasswordParams::default();
    let params = Params::new(
        p.memory_kib,
        p.iterations,
        p.parallelism,
        Some(Params::DEFAULT_OUTPUT_LEN),
    )
    .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
    } else {
        threads
    };
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, done, params) = (stop.clone(), done.clone(), params.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                let mut blocks = vec![Block::new(); params.block_count()];
                let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
                while !stop.load(Ordering::Relaxed) {
                    argon
                        .hash_password_into_with_memory(
                            b"correct horse battery",
                            b"0123456789abcdef",
                            &mut out,
                            &mut blocks,
                        )
                        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("argon2 worker panicked"))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hashes = done.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "threads": threads,
            "hashes": hashes,
            "per_second": hashes as f64 / elapsed,
            "ms_per_hash": elapsed * 1000.0 * threads as f64 / hashes.max(1) as f64,
        })
    );
    Ok(())
}

/// `bench-nats --url URL --seconds N --concurrency C`: request/reply on an
/// unauthenticated NATS server, raw (bytes echoed) and through `idm_bus`
/// (the edge's typed key-ring call, answered by a responder that decodes
/// the request and frames a reply, the least a bus handler does).
pub fn nats(url: &str, seconds: u64, concurrency: usize) -> anyhow::Result<()> {
    let url = url.to_owned();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let responder = async_nats::connect(&url).await?;
            // The responder: raw echo, and the bus shape (decode the request,
            // answer the `Reply` envelope) a bus handler does at least.
            let bus_subject = format!(
                "bench.session.v1.{}",
                <idm_core::proto::session::KeyRingRequest as idm_bus::Operation>::NAME
            );
            for (subject, framed) in [("bench.raw".to_owned(), false), (bus_subject, true)] {
                let mut sub = responder.queue_subscribe(subject, "bench".into()).await?;
                let client = responder.clone();
                tokio::spawn(async move {
                    use futures::StreamExt as _;
                    while let Some(message) = sub.next().await {
                        let Some(reply) = message.reply else { continue };
                        let payload = if framed {
                            use idm_core::proto::session::{KeyRing, KeyRingRequest};
                            match serde_json::from_slice::<KeyRingRequest>(&message.payload) {
                                Ok(asked) => serde_json::to_vec(&idm_bus::Reply::<KeyRing>::Ok(
                                    KeyRing {
                                        issuer_id: asked.issuer_id,
                                        keys: Vec::new(),
                                        refresh: None,
                                    },
                                ))
                                .unwrap_or_default()
                                .into(),
                                Err(_) => continue,
                            }
                        } else {
                            message.payload
                        };
                        let _ = client.publish(reply, payload).await;
                    }
                });
            }
            responder.flush().await?;
            let raw = async_nats::connect(&url).await?;
            let basics = idm_core::config::ServiceBasics {
                nats_url: url.clone(),
                nats_stream_replicas: 1,
                nats_stream_placement: Default::default(),
                nats_auth: Default::default(),
                subject_prefix: "bench".into(),
                http_addr: ([127, 0, 0, 1], 0).into(),
                request_timeout: Duration::from_secs(5),
            };
            let bus = idm_bus::Bus::connect(&basics, idm_bus::Identity::EdgeGuard).await?;
            let asked = idm_core::proto::session::KeyRingRequest {
                issuer_id: idm_core::IssuerId::generate(),
                nonce: "x".repeat(43),
            };
            let body = bytes::Bytes::from(serde_json::to_vec(&asked)?);
            // Warm both paths.
            for _ in 0..100 {
                raw.request("bench.raw", body.clone()).await?;
                bus.send(&asked)
                    .await
                    .map_err(|e| anyhow::anyhow!("bus echo: {e:?}"))?;
            }
            let raw_result = drive(seconds, concurrency, move || {
                let (raw, body) = (raw.clone(), body.clone());
                async move { raw.request("bench.raw", body).await.is_ok() }
            })
            .await;
            let asked = Arc::new(asked);
            let bus_result = drive(seconds, concurrency, move || {
                let (bus, asked) = (bus.clone(), asked.clone());
                async move { bus.send(asked.as_ref()).await.is_ok() }
            })
            .await;
            println!(
                "{}",
                serde_json::json!({ "concurrency": concurrency, "raw": raw_result, "bus": bus_result })
            );
            anyhow::Ok(())
        })
}

/// Runs `call` from `concurrency` tasks (spread over the runtime's
/// threads, as a service's callers are) for `seconds`: rate and latencies.
async fn drive<F, Fut>(seconds: u64, concurrency: usize, call: F) -> serde_json::Value
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if call().await {
                        latencies.push(t.elapsed().as_micros() as u64);
                    } else {
                        failed += 1;
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut failed = 0u64;
    let mut latencies: Vec<u64> = Vec::new();
    for task in futures::future::join_all(tasks).await {
        match task {
            Ok((l, f)) => {
                latencies.extend(l);
                failed += f;
            }
            Err(_) => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    serde_json::json!({
        "per_second": latencies.len() as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "failed": failed,
    })
}
