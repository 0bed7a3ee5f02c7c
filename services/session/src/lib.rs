//! session: session lifecycle and each issuer's HMAC key ring. Session rows
//! and refresh tokens live in the user's regional store; signing keys live
//! sealed under the master key in the global `session_keys` schema, next to
//! a session-id → region index used to revoke a session by id.

mod config;
mod decoy;
mod error;
mod handlers;
mod key_ring;
mod migrations;
mod revocation;
mod session_index;

pub use config::Config;
pub use error::Error;
pub use key_ring::open_stored_key;

use idm_bus::{Bus, Events, Handlers};
use idm_core::proto::account::ConfigChanged;
use idm_core::proto::session as op;
use idm_db::Db;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub bus: Bus,
    pub db: Db,
    pub keys: key_ring::KeyRings,
    /// Seals signing keys for edge-guard (never the master key).
    pub transport: idm_crypto::KeyTransport,
    pub events: Events,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = Db::connect(config.database_url(), config.pool_size)?.named("session");
    idm_db::migrate(&db, "session_keys", &migrations::SESSION_KEYS).await?;
    let bus = Bus::connect(&config.basics, idm_bus::Identity::Session).await?;
    let events = Events::ensure(&bus).await?;
    let master = idm_crypto::MasterKey::from_base64(config.master_key())?;
    let transport = idm_crypto::KeyTransport::from_base64(config.key_transport_key())?;
    let state = Arc::new(State {
        bus: bus.clone(),
        db: db.clone(),
        keys: key_ring::KeyRings::new(db.clone(), master),
        transport,
        events,
    });
    // Another replica rotated a key: drop the cached ring.
    let on_change = Arc::clone(&state);
    let rotations = bus
        .on_broadcast(
            "config.changed",
            shutdown.clone(),
            move |change: ConfigChanged| {
                let state = Arc::clone(&on_change);
                async move { state.keys.forget(&change.issuer_id).await }
            },
        )
        .await?;
    let handlers = Handlers::new()
        .on(op::INIT_ISSUER, handlers::init_issuer)
        .on(op::CREATE_SESSION, handlers::create_session)
        .on(op::REFRESH, handlers::refresh)
        .on(op::REVOKE, handlers::revoke)
        .on(op::REVOKE_ALL, handlers::revoke_all)
        .on(op::LIST, handlers::list)
        .on(op::KEY_RING, handlers::key_ring)
        .on(op::ROTATE_KEY, handlers::rotate_key)
        .on(op::REVOKE_KEYS, handlers::revoke_keys)
        .on(op::SIGN_VERIFICATION, handlers::sign_verification)
        .on(op::DECOY_SESSION, decoy::decoy_session)
        .on(op::REVOKED_SESSIONS, revocation::revoked_sessions);
    let serving = bus
        .serve_service("session", handlers, state, shutdown.clone())
        .await?;
    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("session", ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "session started");
    Ok(Running::new(http_addr, vec![serving, rotations, http]))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
