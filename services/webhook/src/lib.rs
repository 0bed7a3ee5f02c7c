//! webhook: delivers events to tenant endpoints, signed per Standard Webhooks, with retries and an SSRF guard.
//!
//! This is the running skeleton: it connects to PostgreSQL and NATS, owns its
//! `webhook` schema, and serves health, readiness and metrics. Its behaviour
//! arrives with the issue that specifies it.

use idm_core::config::{ConfigError, Env, ServiceBasics};
use idm_db::Db;
use idm_telemetry::Running;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// `WEBHOOK_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub database_url: SecretString,
    pub pool_size: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("WEBHOOK");
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8087)?,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 4)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] idm_db::DbError),
    #[error(transparent)]
    Bus(#[from] idm_bus::BusError),
    #[error(transparent)]
    Stopped(#[from] idm_telemetry::Stopped),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("HTTP listener: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = Db::connect(config.database_url.expose_secret(), config.pool_size)?.named("webhook");
    idm_db::migrate(&db, "webhook", &idm_db::Migrator::DEFAULT).await?;
    let bus = idm_bus::Bus::connect(&config.basics, idm_bus::Identity::Webhook).await?;
    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("webhook", ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "webhook started");
    Ok(Running::new(http_addr, vec![("http", http)]))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
