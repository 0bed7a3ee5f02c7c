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
    let master =
        idm_crypto::MasterKeys::from_base64(config.master_key(), config.master_key_previous())?;
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
    let resealing = {
        let state = Arc::clone(&state);
        idm_crypto::keyring::spawn_resealing(
            "session",
            "signing_keys",
            shutdown.clone().cancelled_owned(),
            move || {
                let state = Arc::clone(&state);
                async move { state.keys.reseal_all().await }
            },
        )
    };
    let handlers = Handlers::new()
        .on(handlers::init_issuer)
        .on(handlers::create_session)
        .on(handlers::refresh)
        .on(handlers::revoke)
        .on(handlers::revoke_all)
        .on(handlers::list)
        .on(handlers::key_ring)
        .on(handlers::rotate_key)
        .on(handlers::revoke_keys)
        .on(handlers::sign_verification)
        .on(decoy::decoy_session)
        .on(revocation::revoked_sessions)
        .on(handlers::revoke_device)
        .on(handlers::report_reuse);
    let serving = bus.serve(handlers, state, shutdown.clone()).await?;
    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("session", ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "session started");
    Ok(Running::new(
        http_addr,
        vec![
            ("bus", serving),
            ("key rotation", rotations),
            ("re-seal", resealing),
            ("http", http),
        ],
    ))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
