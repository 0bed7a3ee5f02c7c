//! deletion-worker: runs user deletion as a durable, retried cascade (see
//! ARCHITECTURE.md "Deletion" and docs/LIFECYCLE.md).
//!
//! `start_deletion` (from the edge's `DELETE /v1/users/{id}`) marks the user
//! `deleting` in the directory, records a job and its steps in the
//! `deletion` schema, and puts one message on the `DELETIONS` work queue.
//! The cascade ([`cascade`]) is a durable consumer of that queue: each
//! delivery runs the job's remaining steps in order; a failing step is
//! recorded (attempts, last error) and the message negatively acknowledged
//! with an exponential, jittered back-off, so JetStream hands it back until
//! every step succeeded. State lives in PostgreSQL and the message in a
//! file-backed stream: a restart of the worker or of NATS loses nothing.
//!
//! It runs user moves between regions the same way (`start_move`, the
//! steps in [`moves`]): see docs/REGIONS.md "Moving a user" for why here.

mod cascade;
pub mod failpoint;
mod handlers;
// Regions at scale: user moves run as jobs of this worker.
mod moves;
mod queue;
mod storage;

use idm_core::config::{ConfigError, Env, ServiceBasics};
use idm_core::{ApiError, ErrorCode};
use idm_db::Db;
use idm_telemetry::Running;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `DELETION_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub database_url: SecretString,
    pub pool_size: usize,
    /// A step still failing this long after its first failure marks the job
    /// `stalled` and emits `user.deletion_stalled` (it keeps retrying).
    pub stall_after: Duration,
    /// The first retry waits about this long; each further one twice as
    /// long (with jitter), up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a delivered job stays with one worker without a word from
    /// it (progress is reported while a step runs): after a worker dies,
    /// its job is handed to another after this.
    pub ack_wait: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("DELETION");
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8086)?,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 4)?,
            stall_after: Duration::from_secs(env.parse("STALL_AFTER_SECONDS", 600u64)?),
            retry_base: Duration::from_millis(env.parse("RETRY_BASE_MS", 500u64)?),
            retry_max: Duration::from_secs(env.parse("RETRY_MAX_SECONDS", 60u64)?),
            ack_wait: Duration::from_secs(env.parse("ACK_WAIT_SECONDS", 30u64)?.max(2)),
        })
    }

    /// The settings for tests: short stall threshold, back-off and ack wait.
    pub fn for_tests(basics: ServiceBasics, database_url: SecretString) -> Self {
        Self {
            basics,
            database_url,
            pool_size: 2,
            stall_after: Duration::from_secs(3),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(1),
            ack_wait: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
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

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Api(api) => api,
            Error::Db(db) if db.is_unavailable() => {
                tracing::error!(error = %db, "deletion database unavailable");
                ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "the deletion service is unavailable",
                )
            }
            other => ApiError::internal_from(&other),
        }
    }
}

/// The `deletion` schema: SQL files under `services/deletion-worker/migrations/`.
static MIGRATIONS: idm_db::Migrator = idm_db::sqlx::migrate!("./migrations");

pub(crate) struct State {
    pub db: Db,
    pub bus: idm_bus::Bus,
    pub events: idm_bus::Events,
    pub queue: queue::Queue,
    pub config: Config,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = Db::connect(config.database_url.expose_secret(), config.pool_size)?.named("deletion");
    idm_db::migrate(&db, "deletion", &MIGRATIONS).await?;
    let bus = idm_bus::Bus::connect(&config.basics, idm_bus::Identity::DeletionWorker).await?;
    let events = idm_bus::Events::ensure(&bus).await?;
    let queue = queue::Queue::ensure(&bus).await?;
    let state = Arc::new(State {
        db: db.clone(),
        bus: bus.clone(),
        events,
        queue,
        config: config.clone(),
    });
    let handlers = idm_bus::Handlers::new()
        .on(handlers::start_deletion)
        .on(handlers::get_deletion)
        .on(handlers::start_move)
        .on(handlers::get_move);
    let serving = bus
        .serve(handlers, Arc::clone(&state), shutdown.clone())
        .await?;
    let consuming = cascade::spawn(Arc::clone(&state), shutdown.clone()).await?;
    let sweeping = cascade::spawn_sweeper(Arc::clone(&state), shutdown.clone());
    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("deletion-worker", ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "deletion-worker started");
    Ok(Running::new(
        http_addr,
        vec![
            ("bus", serving),
            ("cascade", consuming),
            ("sweeper", sweeping),
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
