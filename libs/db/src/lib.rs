//! PostgreSQL access shared by every service: a pool (over TLS when the URL's
//! `sslmode` asks for it, see `tls`), versioned migrations per schema
//! (serialised by an advisory lock so replicas can start together), and
//! error classification by SQLSTATE, never by message text.

mod tls;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::borrow::Cow;
use std::str::FromStr;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

pub use deadpool_postgres::{GenericClient, Object as Client, Transaction};
pub use tokio_postgres::{types::ToSql, Row};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL is invalid: {0}")]
    Config(String),
    #[error("no database connection: {0}")]
    Pool(String),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("'{0}' is not a safe SQL identifier")]
    BadIdentifier(String),
}

impl DbError {
    fn sql_state(&self) -> Option<&SqlState> {
        match self {
            DbError::Postgres(e) => e.code(),
            _ => None,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        self.sql_state() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    /// The schema or table is not there (e.g. an issuer not provisioned).
    pub fn is_undefined_object(&self) -> bool {
        matches!(self.sql_state(), Some(s) if *s == SqlState::UNDEFINED_TABLE || *s == SqlState::INVALID_SCHEMA_NAME)
    }

    /// The database cannot be reached or is going away (restarting, shutting
    /// down, out of connections): a 503 for the caller, never a 500. By
    /// SQLSTATE (class 08 connection exceptions, 57P0x shutdowns, 53300), a
    /// closed connection, or an I/O error under the driver.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Postgres(e) => {
                if e.is_closed() {
                    return true;
                }
                if let Some(state) = e.code() {
                    let code = state.code();
                    return code.starts_with("08")
                        || code.starts_with("57P")
                        || *state == SqlState::TOO_MANY_CONNECTIONS;
                }
                std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
            }
            _ => false,
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Pool(e.to_string())
    }
}

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// The `pool` label of its metrics (`unnamed` until [`Db::named`]).
    name: Cow<'static, str>,
}

impl Db {
    /// A lazily-connecting pool; the first `get` opens the first connection.
    pub fn connect(url: &str, max_size: usize) -> Result<Self, DbError> {
        Self::connect_with(url, max_size, RecyclingMethod::Fast)
    }

    /// As [`Db::connect`], for pools whose users change session settings
    /// (the regional stores set an issuer's `search_path` on each handle):
    /// every connection handed out again has first been through
    /// `RESET ALL`, so no setting made for one issuer's request can reach
    /// the next checkout, whoever takes it and whatever it forgets to set.
    /// One round trip per checkout; see docs/DESIGN-NOTES.md ("search_path").
    pub fn connect_session_resetting(url: &str, max_size: usize) -> Result<Self, DbError> {
        Self::connect_with(
            url,
            max_size,
            RecyclingMethod::Custom("RESET ALL".to_owned()),
        )
    }

    fn connect_with(
        url: &str,
        max_size: usize,
        recycling_method: RecyclingMethod,
    ) -> Result<Self, DbError> {
        let (url, tls) = tls::split_url(url)?;
        let mut config =
            tokio_postgres::Config::from_str(&url).map_err(|e| DbError::Config(e.to_string()))?;
        let manager_config = ManagerConfig { recycling_method };
        let manager = match tls {
            tls::PgTls::Off => Manager::from_config(config, NoTls, manager_config),
            tls::PgTls::On { mode, root_cert } => {
                config.ssl_mode(mode);
                let client = tls::client_config(root_cert.as_ref())?;
                let connector = tokio_postgres_rustls::MakeRustlsConnect::new(client);
                Manager::from_config(config, connector, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Config(e.to_string()))?;
        Ok(Self {
            pool,
            name: Cow::Borrowed("unnamed"),
        })
    }

    /// Names the pool in its metrics (the owning service, or
    /// `store-<region>`) and reports its use at every scrape: connections
    /// in use and idle, the maximum, and callers waiting.
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        let name = self.name.clone();
        let pool = self.pool.weak();
        idm_core::metric::on_scrape(Box::new(move || {
            let Some(pool) = pool.upgrade() else {
                return false;
            };
            let status = pool.status();
            let gauge = |m: idm_core::metric::Metric, state: Option<&'static str>, value: usize| {
                let value = value as f64;
                match state {
                    Some(state) => {
                        metrics::gauge!(m.name, "pool" => name.clone(), "state" => state).set(value)
                    }
                    None => metrics::gauge!(m.name, "pool" => name.clone()).set(value),
                }
            };
            use idm_core::metric::{DB_POOL_CONNECTIONS, DB_POOL_MAX_CONNECTIONS, DB_POOL_WAITING};
            gauge(
                DB_POOL_CONNECTIONS,
                Some("in_use"),
                status.size - status.available,
            );
            gauge(DB_POOL_CONNECTIONS, Some("idle"), status.available);
            gauge(DB_POOL_MAX_CONNECTIONS, None, status.max_size);
            gauge(DB_POOL_WAITING, None, status.waiting);
            true
        }));
        self
    }

    /// A pooled connection; how long it took is
    /// `idm_db_pool_wait_duration_seconds`.
    pub async fn get(&self) -> Result<Client, DbError> {
        let started = std::time::Instant::now();
        let client = self.pool.get().await;
        metrics::histogram!(
            idm_core::metric::DB_POOL_WAIT_DURATION.name,
            "pool" => self.name.clone(),
            "outcome" => if client.is_ok() { "ok" } else { "error" }
        )
        .record(started.elapsed().as_secs_f64());
        Ok(client?)
    }

    /// Readiness: the database answers a query.
    pub fn probe(&self) -> idm_core::Probe {
        let db = self.clone();
        std::sync::Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await.map_err(|e| format!("database: {e}")) })
        })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        self.get().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// Identifiers interpolated into SQL (schema names) must pass this.
pub fn safe_identifier(name: &str) -> Result<&str, DbError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if ok {
        Ok(name)
    } else {
        Err(DbError::BadIdentifier(name.chars().take(64).collect()))
    }
}

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Applies the pending `migrations` to `schema`, creating it if needed. Runs
/// in one transaction under an advisory lock on the schema name, so two
/// replicas starting at once apply each migration exactly once.
pub async fn migrate(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> Result<usize, DbError> {
    let schema = safe_identifier(schema)?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&schema])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}._migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         SET LOCAL search_path TO {schema};"
    ))
    .await?;
    let applied: Vec<i32> = tx
        .query(&format!("SELECT version FROM {schema}._migrations"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut count = 0;
    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            &format!("INSERT INTO {schema}._migrations (version, name) VALUES ($1, $2)"),
            &[&m.version, &m.name],
        )
        .await?;
        count += 1;
    }
    tx.commit().await?;
    if count > 0 {
        tracing::info!(schema, count, "migrations applied");
    }
    Ok(count)
}

#[cfg(test)]
mod unavailable_tests {
    use super::*;

    #[tokio::test]
    async fn a_database_nobody_answers_for_is_unavailable_not_an_internal_error() {
        // Nothing listens on port 1.
        let db = Db::connect("postgres://postgres@127.0.0.1:1/none", 1);
        let error = match db {
            Ok(db) => db.get().await.err(),
            Err(e) => Some(e),
        };
        assert!(error.is_some_and(|e| e.is_unavailable()));
        assert!(!DbError::BadIdentifier("x".into()).is_unavailable());
    }
}
