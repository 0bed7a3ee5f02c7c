//! webhook: delivers events to tenant endpoints, signed per Standard
//! Webhooks, with retries, attempt history, replay and an SSRF guard
//! (docs/WEBHOOKS.md).
//!
//! - `handlers`: the bus operations behind `/v1/webhook_endpoints` and
//!   `/v1/webhook_messages`;
//! - the durable consumer `webhook` on `EVENTS` records each event and
//!   queues one message per subscribed endpoint (`storage::fan_out`), then
//!   acknowledges it: the stream's ack is never held for a retry;
//! - `dispatch`: the delivery loop over the queued messages;
//! - `sender` and `ssrf`: one HTTP attempt, and what it may reach;
//! - `signing`: secrets and signatures.

mod config;
mod dispatch;
mod error;
mod handlers;
mod sender;
mod signing;
pub mod ssrf;
mod storage;

pub use config::{Config, Delivery, DEFAULT_SCHEDULE_MS};
pub use error::Error;

use idm_bus::{Bus, Handlers};
use idm_db::Db;
use idm_telemetry::Running;
use secrecy::ExposeSecret;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

static MIGRATIONS: idm_db::Migrator = idm_db::sqlx::migrate!("./migrations");

/// What endpoint secrets are sealed for (the master key derives one key
/// per purpose).
pub const SECRET_PURPOSE: &str = "idmesh/webhook/endpoint-secret/v1";

pub(crate) struct State {
    pub db: Db,
    pub events: idm_bus::Events,
    pub secrets: idm_crypto::MasterKeys,
    pub guard: ssrf::Guard,
    pub sender: sender::Sender,
    pub delivery: Delivery,
    pub slots: dispatch::Slots,
    /// Wakes the delivery loop (a new message, a freed slot).
    pub wake: tokio::sync::Notify,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = Db::connect(config.database_url.expose_secret(), config.pool_size)?.named("webhook");
    idm_db::migrate(&db, "webhook", &MIGRATIONS).await?;
    let secrets = config.master_keys()?.derive_sealing_keys(SECRET_PURPOSE);
    let bus = Bus::connect(&config.basics, idm_bus::Identity::Webhook).await?;
    let events = idm_bus::Events::ensure(&bus).await?;
    let guard = ssrf::Guard {
        allowed_networks: Arc::new(config.delivery.allowed_networks.clone()),
        allow_http: config.delivery.allow_http,
    };
    if config.delivery.allow_http || !config.delivery.allowed_networks.is_empty() {
        tracing::warn!(
            allow_http = config.delivery.allow_http,
            allowed_networks = ?config.delivery.allowed_networks,
            "webhook SSRF guard relaxed by the operator"
        );
    }
    let state = Arc::new(State {
        db: db.clone(),
        events,
        secrets,
        sender: sender::Sender::new(guard.clone(), &config.delivery),
        guard,
        slots: dispatch::Slots::new(&config.delivery),
        delivery: config.delivery.clone(),
        wake: tokio::sync::Notify::new(),
    });
    let handlers = Handlers::new()
        .on(handlers::create_endpoint)
        .on(handlers::list_endpoints)
        .on(handlers::get_endpoint)
        .on(handlers::update_endpoint)
        .on(handlers::delete_endpoint)
        .on(handlers::rotate_secret)
        .on(handlers::list_messages)
        .on(handlers::retry_message)
        .on(handlers::list_attempts)
        .on(handlers::replay);
    let serving = bus
        .serve(handlers, Arc::clone(&state), shutdown.clone())
        .await?;
    let consumer = {
        let state = Arc::clone(&state);
        idm_bus::events::consume(&bus, "webhook", shutdown.clone(), move |event| {
            let state = Arc::clone(&state);
            async move {
                let queued = async {
                    let mut client = state.db.get().await?;
                    let tx = client.transaction().await?;
                    let queued = storage::fan_out(&tx, &event, idm_core::now()).await?;
                    tx.commit().await?;
                    Ok::<_, Error>(queued)
                }
                .await
                .map_err(|e| e.to_string())?;
                if queued > 0 {
                    state.wake.notify_one();
                }
                Ok(())
            }
        })
        .await?
    };
    let delivering = dispatch::spawn(Arc::clone(&state), shutdown.clone());
    let pruning = dispatch::spawn_pruning(Arc::clone(&state), shutdown.clone());
    let resealing = {
        let state = Arc::clone(&state);
        idm_crypto::keyring::spawn_resealing(
            "webhook",
            "endpoint_secrets",
            shutdown.clone().cancelled_owned(),
            move || {
                let state = Arc::clone(&state);
                async move { reseal_all(&state).await }
            },
        )
    };
    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("webhook", ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "webhook started");
    Ok(Running::new(
        http_addr,
        vec![
            ("bus", serving),
            ("events", consumer),
            ("delivery", delivering),
            ("resealing", resealing),
            ("pruning", pruning),
            ("http", http),
        ],
    ))
}

/// Moves every endpoint secret still sealed under the previous master key
/// (or untagged) to the current one, compare-and-swap per value.
async fn reseal_all(state: &State) -> Result<idm_crypto::keyring::ResealPass, Error> {
    let client = state.db.get().await?;
    let mut pass = idm_crypto::keyring::ResealPass::default();
    for row in storage::sealed_secrets(&client).await? {
        let values = std::iter::once((false, row.sealed_secret))
            .chain(row.sealed_previous_secret.map(|v| (true, v)));
        for (previous, sealed) in values {
            if state.secrets.is_current(&sealed) {
                continue;
            }
            match state.secrets.reseal(&sealed, row.id.as_bytes()) {
                Ok(Some(new)) => {
                    if storage::reseal(&client, &row.id, previous, &sealed, &new).await? {
                        pass.resealed += 1;
                    }
                }
                Ok(None) => {}
                Err(_) => pass.unreadable += 1,
            }
        }
    }
    Ok(pass)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
