//! user: the global directory. Places new users in a region, keeps only the
//! user id → region row and a blind email index (HMAC of the canonical email
//! under a per-issuer key), and routes user reads and writes to the regional
//! store that holds the user's data.

mod blind_index;
mod config;
mod deletion;
mod directory;
mod error;
mod handlers;
// Regions at scale: moving a user between regions.
mod moves;
mod organizations;
mod personal_tokens;
mod placement;
mod profiles;
mod stores;

pub use config::Config;
pub use error::Error;

use idm_bus::{Bus, Handlers};
use idm_db::Db;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub db: Db,
    pub bus: Bus,
    /// Publishes to `EVENTS` (user, organization and membership changes).
    pub events: idm_bus::Events,
    pub index_keys: blind_index::IndexKeys,
    pub default_region: idm_core::Region,
    pub stores: stores::Stores,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = Db::connect(config.database_url(), config.pool_size)?.named("user");
    idm_db::migrate(&db, "directory", &directory::MIGRATIONS).await?;
    let bus = Bus::connect(&config.basics, idm_bus::Identity::User).await?;
    let events = idm_bus::Events::ensure(&bus).await?;
    let master =
        idm_crypto::MasterKeys::from_base64(config.master_key(), config.master_key_previous())?;
    let state = Arc::new(State {
        db: db.clone(),
        bus: bus.clone(),
        events,
        index_keys: blind_index::IndexKeys::new(db.clone(), master),
        default_region: config.default_region,
        stores: stores::Stores::default(),
    });
    let resealing = {
        let state = Arc::clone(&state);
        idm_crypto::keyring::spawn_resealing(
            "user",
            "blind_index_keys",
            shutdown.clone().cancelled_owned(),
            move || {
                let state = Arc::clone(&state);
                async move { state.index_keys.reseal_all().await }
            },
        )
    };
    let handlers = Handlers::new()
        .on(handlers::init_issuer)
        .on(handlers::create_user)
        .on(handlers::get_user)
        .on(handlers::find_by_email)
        .on(handlers::locate)
        .on(handlers::placement)
        .on(handlers::residency)
        .on(personal_tokens::create)
        .on(personal_tokens::list)
        .on(personal_tokens::revoke)
        .on(personal_tokens::verify)
        .on(profiles::update_user)
        .on(profiles::list_users)
        .on(profiles::apply_email_change)
        .on(profiles::list_devices)
        .on(profiles::add_consent)
        .on(profiles::list_consents)
        // deletion: organizations, memberships and the directory's
        // deletion steps
        .on(organizations::create)
        .on(organizations::get)
        .on(organizations::list)
        .on(organizations::update)
        .on(organizations::delete)
        .on(organizations::add_member)
        .on(organizations::list_members)
        .on(organizations::update_member)
        .on(organizations::remove_member)
        .on(organizations::list_for_user)
        .on(deletion::begin)
        .on(deletion::remove_memberships)
        .on(deletion::purge_entry)
        .on(moves::begin)
        .on(moves::switch);
    let serving = bus
        .serve(handlers, Arc::clone(&state), shutdown.clone())
        .await?;
    // Not ready while any store announces another jurisdiction than its
    // region's (the stores are refused meanwhile); a store that is down is
    // its region's outage, not the directory's.
    let probing = Arc::clone(&state);
    let stores_ok = idm_telemetry::probe(move || {
        let state = Arc::clone(&probing);
        async move { state.stores.misconfigured(&state.bus).await }
    });
    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe(), stores_ok]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("user", ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "user started");
    Ok(Running::new(
        http_addr,
        vec![("bus", serving), ("re-seal", resealing), ("http", http)],
    ))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
