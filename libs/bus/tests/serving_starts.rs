//! A serving loop or a broadcast listener counts as started only once the
//! bus server has its subscription: a call from another connection made the
//! moment `serve` returns is answered, never refused for want of a
//! responder, and a broadcast sent the moment `on_broadcast` returns is
//! heard (async-nats' `flush` alone only empties the socket buffer; see
//! `Bus::confirm_subscriptions`). Without it both fail within 20 rounds.

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

#[tokio::test]
async fn a_broadcast_sent_as_the_listener_starts_is_heard() -> anyhow::Result<()> {
    let prefix = format!("tb{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let nats = NatsServer::start(&prefix, None).await?;
    let sender = Bus::connect(&nats.basics(Identity::Session, TIMEOUT), Identity::Session).await?;
    for round in 0..20 {
        // A fresh connection each round, as a starting edge has.
        let listener = Bus::connect(
            &nats.basics(Identity::EdgeGuard, TIMEOUT),
            Identity::EdgeGuard,
        )
        .await?;
        let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let listening = listener
            .on_broadcast(
                "session.revoked",
                shutdown.clone(),
                move |revoked: session::RevokedBroadcast| {
                    let heard_tx = heard_tx.clone();
                    async move {
                        let _ = heard_tx.send(revoked.issuer_id);
                    }
                },
            )
            .await?;
        let issuer = IssuerId::generate();
        sender
            .broadcast(
                sender.broadcast_subject("session.revoked", issuer.as_str()),
                &session::RevokedBroadcast {
                    issuer_id: issuer.clone(),
                    sessions: Vec::new(),
                },
            )
            .await;
        sender.flush().await;
        let got = tokio::time::timeout(Duration::from_secs(2), heard.recv()).await;
        assert_eq!(got.ok().flatten(), Some(issuer), "round {round}");
        shutdown.cancel();
        let _ = listening.await;
        listener.client().drain().await?;
    }
    nats.stop().await;
    Ok(())
}
