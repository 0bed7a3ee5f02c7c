//! Where should a session token be verified? `cargo bench -p idm-e2e --bench verify_paths`
//!
//! The numbers behind the key-transport decision (docs/SECURITY.md): the
//! edge verifying statelessly against a cached ring (what idmesh does, with
//! the ring fetched sealed) against the edge asking the session service over
//! the bus for every verification. Measured:
//! - the primitives on one core: HMAC-SHA256 token verification, unsealing
//!   one key (XChaCha20-Poly1305; once per ring fetch), and Ed25519
//!   verification (what public verification keys would cost per request);
//! - the same HTTP server (axum, in process) answering either from its own
//!   memory or after one NATS request/reply to a verifying responder, driven
//!   by concurrent HTTP clients;
//! - the NATS round trip alone.
//!
//! Load generator, server and responder share the machine's cores, as in the
//! other benches. Tunables: `BENCH_SECONDS` (default 10), `BENCH_CONCURRENCY`
//! (default 32).

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use idm_core::{IssuerId, Region, SessionId, UserId};
use idm_crypto::session_token::{self, RingKey, SessionClaims};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Verifier {
    issuer: IssuerId,
    ring: Vec<RingKey>,
}

impl Verifier {
    fn verify(&self, token: &str) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        session_token::verify(token, &self.issuer, now, |kid| {
            self.ring.iter().find(|k| k.kid == kid)
        })
        .is_ok()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct VerifyRequest {
    token: String,
}

fn per_op(name: &str, iterations: u32, mut op: impl FnMut() -> bool) {
    let started = Instant::now();
    let mut ok = 0u32;
    for _ in 0..iterations {
        ok += u32::from(op());
    }
    let elapsed = started.elapsed();
    assert_eq!(ok, iterations, "{name} failed");
    println!(
        "{name:<44} {:>9.2} µs/op   {:>10.0} ops/s on one core",
        elapsed.as_secs_f64() * 1e6 / f64::from(iterations),
        f64::from(iterations) / elapsed.as_secs_f64()
    );
}

fn report(name: &str, elapsed: Duration, ok: u64, failed: u64, mut latencies: Vec<u64>) {
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "{name:<44} {:>9.0} req/s   ok {ok:>7}  failed {failed:>4}   p50 {:>6.2} ms   p99 {:>6.2} ms",
        ok as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
}

/// Runs `call` from `concurrency` workers for `seconds`.
async fn drive<F, Fut>(name: &str, seconds: u64, concurrency: u64, call: F)
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let call = call.clone();
        async move {
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let t = Instant::now();
                if call().await {
                    ok += 1;
                } else {
                    failed += 1;
                }
                latencies.push(t.elapsed().as_micros() as u64);
            }
            (ok, failed, latencies)
        }
    });
    let results = futures::future::join_all(workers).await;
    let elapsed = started.elapsed();
    let ok = results.iter().map(|r| r.0).sum();
    let failed = results.iter().map(|r| r.1).sum();
    let latencies = results.into_iter().flat_map(|r| r.2).collect();
    report(name, elapsed, ok, failed, latencies);
}

async fn stateless(State(app): State<Arc<App>>, body: String) -> http::StatusCode {
    if app.verifier.verify(&body) {
        http::StatusCode::OK
    } else {
        http::StatusCode::UNAUTHORIZED
    }
}

async fn via_bus(State(app): State<Arc<App>>, body: String) -> http::StatusCode {
    let Ok(payload) = serde_json::to_vec(&VerifyRequest { token: body }) else {
        return http::StatusCode::BAD_REQUEST;
    };
    let asked = app.bus.request(app.subject.clone(), payload.into()).await;
    match asked.map(|reply| serde_json::from_slice::<bool>(&reply.payload)) {
        Ok(Ok(true)) => http::StatusCode::OK,
        _ => http::StatusCode::UNAUTHORIZED,
    }
}

/// The per-verification alternative measured here is one NATS request/reply
/// with a JSON body each way: what `Bus::call` costs, without the platform's
/// permission table (which has no room for a benchmark's made-up service).
struct App {
    verifier: Verifier,
    bus: async_nats::Client,
    subject: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env("BENCH_SECONDS", 10);
    let concurrency = env("BENCH_CONCURRENCY", 32);
    println!(
        "idmesh verification paths: {seconds} s per scenario, {concurrency} concurrent clients, {} cores",
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(0)
    );
    let issuer = IssuerId::generate();
    let key = RingKey {
        kid: "kbench".into(),
        secret: zeroize::Zeroizing::new(idm_crypto::random_bytes::<32>()),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = SessionClaims {
        iss: issuer.clone(),
        sid: SessionId::generate(),
        sub: UserId::generate(),
        reg: Region::Weur,
        iat: now,
        exp: now + 3600,
    };
    let token = session_token::sign(&key, &claims)?;

    // Primitives.
    let verifier = Verifier {
        issuer: issuer.clone(),
        ring: vec![RingKey {
            kid: key.kid.clone(),
            secret: key.secret.clone(),
        }],
    };
    per_op("HMAC token verification", 200_000, || {
        verifier.verify(&token)
    });
    use base64::Engine;
    let transport = idm_crypto::KeyTransport::from_base64(
        &base64::engine::general_purpose::STANDARD.encode(idm_crypto::random_bytes::<32>()),
    )?;
    let nonce = idm_crypto::key_transport::new_nonce();
    let sealed = transport.seal(&issuer, &key, &nonce)?;
    per_op("unseal one ring key (per ring fetch)", 200_000, || {
        transport.open(&issuer, &key.kid, &nonce, &sealed).is_ok()
    });
    {
        use ed25519_dalek::{Signer, SigningKey, Verifier as _};
        let signing = SigningKey::from_bytes(&idm_crypto::random_bytes::<32>());
        let public = signing.verifying_key();
        let signature = signing.sign(token.as_bytes());
        per_op("Ed25519 verification (public keys)", 20_000, || {
            public.verify(token.as_bytes(), &signature).is_ok()
        });
    }

    // A verifying responder on the bus, as the session service would be.
    let prefix = format!(
        "vb{}",
        &idm_crypto::sha256_hex(&idm_crypto::random_bytes::<8>())[..10]
    );
    let shutdown = CancellationToken::new();
    let nats =
        std::env::var("IDM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let responder_bus = async_nats::connect(&nats).await?;
    let responder = Arc::new(Verifier {
        issuer: issuer.clone(),
        ring: vec![RingKey {
            kid: key.kid.clone(),
            secret: key.secret.clone(),
        }],
    });
    let subject = format!("{prefix}.bench.v1.verify");
    let mut requests = responder_bus
        .queue_subscribe(subject.clone(), "bench".into())
        .await?;
    responder_bus.flush().await?;
    let serving = {
        let shutdown = shutdown.clone();
        let client = responder_bus.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = requests.next() => match next { Some(m) => m, None => break },
                };
                let verified = serde_json::from_slice::<VerifyRequest>(&message.payload)
                    .is_ok_and(|r| responder.verify(&r.token));
                if let (Some(reply), Ok(body)) = (message.reply, serde_json::to_vec(&verified)) {
                    let _ = client.publish(reply, body.into()).await;
                }
            }
        })
    };
    let bus = async_nats::connect(&nats).await?;
    let app = Arc::new(App {
        verifier,
        bus: bus.clone(),
        subject,
    });
    let router = Router::new()
        .route("/stateless", post(stateless))
        .route("/via_bus", post(via_bus))
        .with_state(Arc::clone(&app));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await;
    });
    let http = reqwest::Client::new();
    let call = |path: &'static str| {
        let http = http.clone();
        let token = token.clone();
        move || {
            let http = http.clone();
            let token = token.clone();
            async move {
                http.post(format!("http://{addr}{path}"))
                    .body(token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        }
    };
    drive("(warm-up)", 1, concurrency, call("/stateless")).await;
    drive("(warm-up)", 1, concurrency, call("/via_bus")).await;
    drive(
        "HTTP, stateless verification",
        seconds,
        concurrency,
        call("/stateless"),
    )
    .await;
    drive(
        "HTTP + bus round trip per verification",
        seconds,
        concurrency,
        call("/via_bus"),
    )
    .await;
    let bus_subject = app.subject.clone();
    let bus_only = || {
        let bus = bus.clone();
        let token = token.clone();
        let subject = bus_subject.clone();
        async move {
            let Ok(payload) = serde_json::to_vec(&VerifyRequest { token }) else {
                return false;
            };
            match bus.request(subject, payload.into()).await {
                Ok(reply) => serde_json::from_slice::<bool>(&reply.payload).unwrap_or(false),
                Err(_) => false,
            }
        }
    };
    drive(
        "bus round trip alone (no HTTP)",
        seconds,
        concurrency,
        bus_only,
    )
    .await;
    shutdown.cancel();
    let _ = server.await;
    let _ = serving.await;
    Ok(())
}
