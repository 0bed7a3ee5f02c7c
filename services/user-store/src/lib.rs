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
use idm_core::proto::store as op;
use idm_crypto::PasswordHasher;
use idm_db::Db;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub region: idm_core::Region,
    pub db: Db,
    pub hasher: PasswordHasher,
    /// The pool's connections, shared fairly between issuers: every
    /// issuer-scoped handle holds one of these (see `storage::IssuerStore`).
    pub connections: FairShare,
}

/// Starts the store and returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    // Handles set an issuer's search_path on their connection: the pool
    // resets every connection it hands out again (see IssuerStore::open).
    let db = Db::connect_session_resetting(config.database_url(), config.pool_size)?
        .named(format!("store-{}", config.region));
    storage::migrate_all_issuers(&db).await?;
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
    let state = Arc::new(State {
        region: config.region,
        db: db.clone(),
        hasher,
        connections,
    });
    let handlers = Handlers::new()
        .on(op::INFO, handlers::info)
        .on(op::PROVISION_ISSUER, handlers::provision_issuer)
        .on(op::CREATE_USER, handlers::create_user)
        .on(op::GET_USER, handlers::get_user)
        .on(op::VERIFY_PASSWORD, handlers::verify_password)
        .on(op::CREATE_SESSION, handlers::sessions::create_session)
        .on(op::REFRESH_SESSION, handlers::sessions::refresh_session)
        .on(op::REVOKE_SESSION, handlers::sessions::revoke_session)
        .on(
            op::REVOKE_USER_SESSIONS,
            handlers::sessions::revoke_user_sessions,
        )
        .on(op::LIST_SESSIONS, handlers::sessions::list_sessions)
        .on(
            op::LIST_REVOKED_SESSIONS,
            handlers::sessions::list_revoked_sessions,
        )
        .on(op::CREATE_PERSONAL_TOKEN, handlers::personal_tokens::create)
        .on(op::LIST_PERSONAL_TOKENS, handlers::personal_tokens::list)
        .on(op::REVOKE_PERSONAL_TOKEN, handlers::personal_tokens::revoke)
        .on(op::VERIFY_PERSONAL_TOKEN, handlers::personal_tokens::verify)
        .on(op::MARK_EMAIL_VERIFIED, handlers::mfa::prove_email)
        .on(op::CREDENTIALS, handlers::mfa::credentials)
        .on(op::DISABLE_TOTP, handlers::mfa::disable_totp)
        .on(
            op::REPLACE_BACKUP_CODES,
            handlers::mfa::replace_backup_codes,
        )
        .on(op::SET_PASSWORD, handlers::set_password)
        .on(op::SET_PENDING_TOTP, handlers::mfa::set_pending_totp)
        .on(op::GET_TOTP, handlers::mfa::get_totp)
        .on(op::ENABLE_TOTP, handlers::mfa::enable_totp)
        .on(op::USE_TOTP_STEP, handlers::mfa::use_totp_step)
        .on(op::USE_BACKUP_CODE, handlers::mfa::use_backup_code);
    let serving = bus
        .serve_store(config.region, handlers, state, shutdown.clone())
        .await?;

    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("user-store", ready),
        shutdown,
    )
    .await?;
    tracing::info!(region = %config.region, %http_addr, "user-store started");
    Ok(Running::new(http_addr, vec![serving, http]))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
