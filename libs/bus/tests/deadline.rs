//! Request deadlines on a real nats-server with the permission table's
//! identities (edge-guard calling `session.key_ring`, a pair the table
//! allows): the deadline travels in the headers, onward calls inherit the
//! sooner one, and work whose caller has given up is never done.

use idm_bus::{Bus, Handlers, Identity, RequestContext, HEADER_CALLER, HEADER_DEADLINE};
use idm_core::config::ServiceBasics;
use idm_core::proto::session;
use idm_core::{ApiError, ErrorCode};
use idm_testkit::NatsServer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
struct Seen {
    /// Handlers started.
    calls: AtomicUsize,
    /// Handlers that got past the slow gate.
    ran: AtomicUsize,
    deadlines: Mutex<Vec<Option<u64>>>,
    /// Held by one handler at a time, for `hold` each.
    gate: tokio::sync::Mutex<()>,
}

struct Bench {
    nats: NatsServer,
    seen: Arc<Seen>,
    stop: CancellationToken,
}

fn basics(nats: &NatsServer, identity: Identity, timeout: Duration) -> ServiceBasics {
    nats.basics(identity, timeout)
}

/// A nats-server with the session identity serving `key_ring`: a handler
/// that records the deadline it inherited, then (when asked with the nonce
/// `hold:<n>`) queues for a one-at-a-time gate bounded by the deadline
/// and holds it for `n` ms.
async fn bench() -> anyhow::Result<Bench> {
    let prefix = format!("tb{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let nats = NatsServer::start(&prefix, None).await?;
    let server = Bus::connect(
        &basics(&nats, Identity::Session, Duration::from_secs(5)),
        Identity::Session,
    )
    .await?;
    let seen = Arc::new(Seen::default());
    let handlers = Handlers::new().on(|seen: Arc<Seen>, req: session::KeyRingRequest| async move {
        seen.calls.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut list) = seen.deadlines.lock() {
            list.push(idm_bus::current_context().deadline_ms);
        }
        let hold = req.nonce.strip_prefix("hold:").and_then(|n| n.parse().ok());
        if let Some(hold) = hold {
            let _held = idm_bus::within_deadline(seen.gate.lock()).await?;
            seen.ran.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(hold)).await;
        }
        Ok::<_, ApiError>(session::KeyRing {
            issuer_id: req.issuer_id,
            keys: Vec::new(),
            refresh: None,
        })
    });
    let stop = CancellationToken::new();
    server
        .serve(handlers, Arc::clone(&seen), stop.clone())
        .await?;
    Ok(Bench { nats, seen, stop })
}

fn key_ring(nonce: &str) -> session::KeyRingRequest {
    session::KeyRingRequest {
        issuer_id: idm_core::IssuerId::generate(),
        nonce: nonce.to_owned(),
    }
}

/// `key_ring("")` as JSON, for requests sent by hand.
fn body() -> bytes::Bytes {
    serde_json::to_vec(&key_ring("")).unwrap_or_default().into()
}

async fn edge(nats: &NatsServer, timeout: Duration) -> anyhow::Result<Bus> {
    Ok(Bus::connect(
        &basics(nats, Identity::EdgeGuard, timeout),
        Identity::EdgeGuard,
    )
    .await?)
}

#[tokio::test]
async fn the_deadline_travels_and_onward_calls_inherit_the_sooner_one() -> anyhow::Result<()> {
    let b = bench().await?;
    let caller = edge(&b.nats, Duration::from_secs(2)).await?;

    let before = now_ms();
    caller.send(&key_ring("")).await?;
    let after = now_ms();
    // A call made while handling a request whose caller waits only 300 ms.
    let mut ctx = RequestContext::new_root();
    let inherited = now_ms() + 300;
    ctx.deadline_ms = Some(inherited);
    ctx.scope(caller.send(&key_ring(""))).await?;

    let seen = b
        .seen
        .deadlines
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    assert_eq!(seen.len(), 2);
    let own = seen[0].unwrap_or(0);
    assert!(
        (before + 2000..=after + 2000).contains(&own),
        "{own} not within the 2 s timeout of {before}..{after}"
    );
    assert_eq!(seen[1], Some(inherited));
    b.stop.cancel();
    b.nats.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_request_whose_deadline_passed_is_never_handled() -> anyhow::Result<()> {
    let b = bench().await?;
    // As edge-guard (its own credentials and inbox), by hand, so the
    // deadline header can say anything.
    let raw = b.nats.connect(Identity::EdgeGuard).await?;
    let subject = format!("{}.session.v1.{}", b.nats.prefix, session::KEY_RING);
    let send = |deadline: u64| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADER_CALLER, "edge-guard");
        headers.insert(HEADER_DEADLINE, deadline.to_string().as_str());
        let raw = raw.clone();
        let subject = subject.clone();
        async move {
            tokio::time::timeout(
                Duration::from_millis(700),
                raw.request_with_headers(subject, headers, body()),
            )
            .await
        }
    };
    let late = send(now_ms() - 1000).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a request past its deadline was answered"
    );
    assert_eq!(b.seen.calls.load(Ordering::SeqCst), 0);
    // The same request with time left is served: only the deadline differed.
    let timely = send(now_ms() + 5000).await;
    assert!(matches!(timely, Ok(Ok(_))), "{timely:?}");
    assert_eq!(b.seen.calls.load(Ordering::SeqCst), 1);

    // A call made under an inherited deadline that has passed is not sent.
    let caller = edge(&b.nats, Duration::from_secs(2)).await?;
    let mut ctx = RequestContext::new_root();
    ctx.deadline_ms = Some(now_ms() - 1);
    let refused = ctx.scope(caller.send(&key_ring(""))).await;
    assert_eq!(
        refused.err().map(|e| e.code),
        Some(ErrorCode::UpstreamUnavailable)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.seen.calls.load(Ordering::SeqCst), 1);
    b.stop.cancel();
    b.nats.stop().await;
    Ok(())
}

#[tokio::test]
async fn queued_work_is_dropped_when_its_caller_gives_up() -> anyhow::Result<()> {
    let b = bench().await?;
    // Callers that wait 300 ms for a handler that holds its one slot for
    // 600 ms: the first one gets the slot; the rest stop waiting while
    // queued, and their work is dropped instead of done for nobody.
    let caller = edge(&b.nats, Duration::from_millis(300)).await?;
    let calls = (0..6).map(|_| {
        let caller = caller.clone();
        async move { caller.send(&key_ring("hold:600")).await }
    });
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(Result::is_err), "{answers:?}");
    // Long after every caller gave up, only the first handler ever got
    // past the queue (on a loaded machine some requests may arrive after
    // their deadline and be dropped before queueing: also never run).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = b.seen.calls.load(Ordering::SeqCst);
    assert!((1..=6).contains(&calls), "{calls}");
    assert_eq!(b.seen.ran.load(Ordering::SeqCst), 1);
    b.stop.cancel();
    b.nats.stop().await;
    Ok(())
}
