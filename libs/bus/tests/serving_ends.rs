//! A serving loop whose subscription closes for good takes the service down
//! with an error (so `main` exits non-zero and the orchestrator restarts
//! it), while a stop asked for on the shutdown token is still a clean exit.
//! The loop is joined exactly as every service's `run` joins its tasks
//! (`idm_telemetry::Running::wait`).

use idm_bus::{Bus, Handlers, Identity};
use idm_core::proto::session;
use idm_core::ApiError;
use idm_telemetry::Running;
use idm_testkit::NatsServer;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Serving {
    nats: NatsServer,
    bus: Bus,
    running: Running,
    shutdown: CancellationToken,
}

/// The session identity serving `key_ring` on a fresh nats-server.
async fn serving() -> anyhow::Result<Serving> {
    let prefix = format!("te{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let nats = NatsServer::start(&prefix, None).await?;
    let basics = nats.basics(Identity::Session, Duration::from_secs(2));
    let bus = Bus::connect(&basics, Identity::Session).await?;
    let handlers = Handlers::new().on(|_: Arc<()>, req: session::KeyRingRequest| async move {
        Ok::<_, ApiError>(session::KeyRing {
            issuer_id: req.issuer_id,
            keys: Vec::new(),
            refresh: None,
        })
    });
    let shutdown = CancellationToken::new();
    let loop_task = bus.serve(handlers, Arc::new(()), shutdown.clone()).await?;
    let running = Running::new(basics.http_addr, vec![("bus", loop_task)]);
    Ok(Serving {
        nats,
        bus,
        running,
        shutdown,
    })
}

#[tokio::test]
async fn a_subscription_closed_for_good_is_an_error_that_stops_the_service() -> anyhow::Result<()> {
    let s = serving().await?;
    let shutdown = s.shutdown.clone();
    let waiting = tokio::spawn(async move { s.running.wait(&shutdown).await });
    // Still serving: nothing has ended.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    // Every subscription of the connection ends, for good.
    s.bus.client().drain().await?;
    let stopped = tokio::time::timeout(Duration::from_secs(5), waiting).await??;
    let error = stopped.err().map(|e| (e.task, e.how));
    assert_eq!(error, Some(("bus", "ended")));
    // The rest of the service was told to stop too.
    assert!(s.shutdown.is_cancelled());
    s.nats.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_stop_on_the_shutdown_token_is_a_clean_exit() -> anyhow::Result<()> {
    let s = serving().await?;
    let shutdown = s.shutdown.clone();
    let waiting = tokio::spawn(async move { s.running.wait(&shutdown).await });
    s.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), waiting).await??;
    assert!(stopped.is_ok(), "{stopped:?}");
    s.nats.stop().await;
    Ok(())
}
