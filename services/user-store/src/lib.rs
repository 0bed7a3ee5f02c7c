//! user-store: one issuer-isolated identity store per region.
//!
//! Each issuer has its own Postgres schema in this region's database; every
//! query runs on an issuer-scoped handle whose `search_path` is that schema,
//! so no query can reach another issuer's users. Passwords are hashed and
//! verified here, so hashes never leave the region.

mod config;
mod error;
mod handlers;
mod migrations;
mod storage;

pub use config::Config;
pub use error::Error;

use idm_bus::{Bus, Handlers};
use idm_core::fair_share::FairShare;
use idm_crypto::PasswordHasher;
use idm_db::Db;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub region: idm_core::Region,
    /// What this store announces (from its configuration).
    pub jurisdiction: idm_core::Jurisdiction,
    pub database_label: String,
    pub db: Db,
    pub hasher: PasswordHasher,
    /// The pool's connections, shared fairly between issuers: every
    /// issuer-scoped handle holds one of these (see `storage::IssuerStore`).
    pub connections: FairShare,
    /// Issuer schemas known to be at the version this build needs.
    pub schemas: storage::schemas::CurrentSchemas,
    /// Asks the source store for a moving user's rows (`copy_user_from`);
    /// `None` only in storage tests that run without NATS.
    pub bus: Option<Bus>,
}

/// Starts the store and returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    // Handles set an issuer's search_path on their connection: the pool
    // resets every connection it hands out again (see IssuerStore::open).
    let db = Db::connect_session_resetting(
        config.database_url(),
        config.pool_size,
        Some(config.connection_max_age),
    )?
    .named(format!("store-{}", config.region));
    if config.migrate_on_start {
        let report = storage::schemas::migrate_all(&db, config.migrate_parallel).await?;
        if let Some((schema, error)) = report.failed.first() {
            return Err(Error::Migration(format!(
                "{} of {} issuer schemas could not be migrated (first: {schema}: {error})",
                report.failed.len(),
                report.schemas
            )));
        }
    }
    let hasher = PasswordHasher::with_queue(
        config.password,
        config.max_parallel_hashes,
        (config.hash_queue > 0).then_some(config.hash_queue),
    )?;
    let db_queue = match config.db_queue {
        0 => config.pool_size * 8,
        n => n,
    };
    let connections = FairShare::new(config.pool_size, db_queue);
    let bus = Bus::connect(&config.basics, idm_bus::Identity::UserStore(config.region)).await?;
    let database_label = config.database_label();
    let state = Arc::new(State {
        region: config.region,
        jurisdiction: config.jurisdiction,
        database_label: database_label.clone(),
        db: db.clone(),
        hasher,
        connections,
        schemas: Default::default(),
        bus: Some(bus.clone()),
    });
    let handlers = Handlers::new()
        .on(handlers::info)
        .on(handlers::provision_issuer)
        .on(handlers::create_user)
        .on(handlers::get_user)
        .on(handlers::get_session_user)
        .on(handlers::verify_password)
        .on(handlers::sessions::create_session)
        .on(handlers::sessions::refresh_session)
        .on(handlers::sessions::revoke_session)
        .on(handlers::sessions::revoke_user_sessions)
        .on(handlers::sessions::list_sessions)
        .on(handlers::sessions::list_revoked_sessions)
        .on(handlers::personal_tokens::create)
        .on(handlers::personal_tokens::list)
        .on(handlers::personal_tokens::revoke)
        .on(handlers::personal_tokens::verify)
        .on(handlers::mfa::prove_email)
        .on(handlers::mfa::credentials)
        .on(handlers::mfa::disable_totp)
        .on(handlers::mfa::replace_backup_codes)
        .on(handlers::set_password)
        .on(handlers::mfa::set_pending_totp)
        .on(handlers::mfa::get_totp)
        .on(handlers::mfa::enable_totp)
        .on(handlers::mfa::use_totp_step)
        .on(handlers::mfa::use_backup_code)
        .on(handlers::mfa::list_sealed_totp)
        .on(handlers::mfa::reseal_totp)
        .on(handlers::sessions::revoke_device)
        .on(handlers::profiles::update_profile)
        .on(handlers::profiles::get_users)
        .on(handlers::profiles::change_email)
        .on(handlers::profiles::remove_password)
        .on(handlers::profiles::list_devices)
        .on(handlers::profiles::add_consent)
        .on(handlers::profiles::list_consents)
        // deletion
        .on(handlers::deletion::revoke_personal_tokens)
        .on(handlers::deletion::purge_user)
        // Regions at scale: moving a user
        .on(handlers::moves::export_user)
        .on(handlers::moves::copy_user_from)
        .on(handlers::moves::digest_user);
    let serving = bus.serve(handlers, state, shutdown.clone()).await?;

    // A store configured with another jurisdiction than its region's is
    // never ready: the user service refuses it too, but the operator
    // should see it here first.
    let (region, jurisdiction) = (config.region, config.jurisdiction);
    if jurisdiction != region.jurisdiction() {
        tracing::error!(%region, %jurisdiction, "configured with the wrong jurisdiction for the region; the user service will refuse this store");
    }
    let announced = idm_telemetry::probe(move || async move {
        if jurisdiction == region.jurisdiction() {
            Ok(())
        } else {
            Err(format!(
                "misconfigured: region {region} announces jurisdiction {jurisdiction}, not {}",
                region.jurisdiction()
            ))
        }
    });
    let ready = idm_telemetry::all_of(vec![announced, db.probe(), bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("user-store", ready),
        shutdown,
    )
    .await?;
    tracing::info!(region = %config.region, jurisdiction = %config.jurisdiction, database = %database_label, %http_addr, "user-store started");
    Ok(Running::new(
        http_addr,
        vec![("bus", serving), ("http", http)],
    ))
}

pub use storage::schemas::MigrationReport;

/// `idm-user-store migrate`: brings every issuer schema of this region to the
/// version this build needs, and reports what it did. Safe to run while
/// stores serve, to run again, and to resume after a crash: each schema
/// migrates under its own advisory lock and each migration is one
/// transaction.
pub async fn migrate(config: &Config) -> Result<MigrationReport, Error> {
    let db = Db::connect(config.database_url(), 2 + config.migrate_parallel)?
        .named(format!("store-migrate-{}", config.region));
    storage::schemas::migrate_all(&db, config.migrate_parallel).await
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
