//! session: session lifecycle and each issuer's HMAC key ring. Session rows
//! live in the user's regional store; signing keys live sealed under the
//! master key in the global `session_keys` schema.

mod config;
mod error;
mod handlers;
mod key_ring;

pub use config::Config;
pub use error::Error;

use idm_bus::{Bus, Handlers};
use idm_core::proto::session as op;
use idm_db::Db;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub bus: Bus,
    pub keys: key_ring::KeyRings,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = Db::connect(config.database_url(), config.pool_size)?;
    idm_db::migrate(&mut db.get().await?, "session_keys", key_ring::MIGRATIONS).await?;
    let bus = Bus::connect(
        &config.basics.nats_url,
        &config.basics.subject_prefix,
        config.basics.request_timeout,
        "session",
    )
    .await?;
    let master = idm_crypto::MasterKey::from_base64(config.master_key())?;
    let state = Arc::new(State {
        bus: bus.clone(),
        keys: key_ring::KeyRings::new(db.clone(), master),
    });
    let handlers = Handlers::new()
        .on(op::INIT_ISSUER, handlers::init_issuer)
        .on(op::CREATE_SESSION, handlers::create_session)
        .on(op::KEY_RING, handlers::key_ring);
    let serving = idm_bus::serve(
        &bus,
        format!("{}.session.v1", bus.prefix()),
        "session".into(),
        handlers,
        state,
        shutdown.clone(),
    )
    .await?;
    let ready: idm_telemetry::ReadinessCheck = Arc::new(move || {
        let db = db.clone();
        let connected = bus.is_connected();
        Box::pin(async move {
            db.ping().await.map_err(|e| e.to_string())?;
            if connected {
                Ok(())
            } else {
                Err("NATS is not connected".into())
            }
        })
    });
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router(ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "session started");
    Ok(Running::new(http_addr, vec![serving, http]))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
