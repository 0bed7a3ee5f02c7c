//! A serving loop counts as started only once the bus server has its
//! subscription: a call from another connection made the moment `serve`
//! returns is answered, never refused for want of a responder (async-nats'
//! `flush` alone only empties the socket buffer; see
//! `server::confirm_subscriptions`).

use idm_bus::{Bus, Handlers, Identity};
use idm_core::proto::session;
use idm_core::{ApiError, IssuerId};
use idm_testkit::NatsServer;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_call_made_as_serve_returns_is_answered() -> anyhow::Result<()> {
    let prefix = format!("ts{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let nats = NatsServer::start(&prefix, None).await?;
    let caller = Bus::connect(
        &nats.basics(Identity::EdgeGuard, TIMEOUT),
        Identity::EdgeGuard,
    )
    .await?;
    for round in 0..20 {
        // A fresh connection each round, as a restarted service has.
        let server =
            Bus::connect(&nats.basics(Identity::Session, TIMEOUT), Identity::Session).await?;
        let handlers = Handlers::new().on(|_: Arc<()>, req: session::KeyRingRequest| async move {
            Ok::<_, ApiError>(session::KeyRing {
                issuer_id: req.issuer_id,
                keys: Vec::new(),
                refresh: None,
            })
        });
        let shutdown = CancellationToken::new();
        let serving = server
            .serve(handlers, Arc::new(()), shutdown.clone())
            .await?;
        let issuer = IssuerId::generate();
        let answer = caller
            .send(&session::KeyRingRequest {
                issuer_id: issuer.clone(),
                nonce: uuid::Uuid::new_v4().simple().to_string(),
            })
            .await;
        assert_eq!(
            answer.map(|ring| ring.issuer_id).map_err(|e| e.code),
            Ok(issuer),
            "round {round}"
        );
        shutdown.cancel();
        let _ = serving.await;
        server.client().drain().await?;
    }
    nats.stop().await;
    Ok(())
}
