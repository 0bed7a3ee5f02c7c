//! PostgreSQL access shared by every service, on sqlx: a pool (over TLS
//! when the URL's `sslmode` asks for it, see `tls`), versioned migrations
//! per schema (serialised by an advisory lock so replicas can start
//! together), and error classification by SQLSTATE, never by message text.

mod tls;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Executor as _, Postgres};
use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// A pooled connection idle at least this long is pinged before it is handed
/// out. One used more recently needs no ping: sqlx pings every connection
/// it takes back (which also flushes a dropped transaction's ROLLBACK), so
/// it answered moments ago, and sqlx's default ping before every checkout
/// was a second round trip per request for nothing (issue 10, "Hot paths,
/// sixth round"). A database that restarts while a connection sits idle
/// takes longer than this, so that connection is still pinged and replaced.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

pub use sqlx;
pub use sqlx::migrate::Migrator;
pub use sqlx::postgres::PgRow as Row;
pub use sqlx::PgConnection;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL is invalid: {0}")]
    Config(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Refused at once: the database could not be reached moments ago and
    /// no connection is open (see [`Db::get`]).
    #[error("database unreachable (a connection failed moments ago)")]
    Down,
    #[error("'{0}' is not a safe SQL identifier")]
    BadIdentifier(String),
}

/// SQLSTATEs this crate classifies by (PostgreSQL Appendix A).
mod state {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const INVALID_SCHEMA_NAME: &str = "3F000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
}

impl DbError {
    fn sql_state(&self) -> Option<Cow<'_, str>> {
        match self {
            DbError::Sqlx(e) => e.as_database_error().and_then(|d| d.code()),
            _ => None,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        self.sql_state().as_deref() == Some(state::UNIQUE_VIOLATION)
    }

    /// The schema or table is not there (e.g. an issuer not provisioned).
    pub fn is_undefined_object(&self) -> bool {
        matches!(
            self.sql_state().as_deref(),
            Some(state::UNDEFINED_TABLE | state::INVALID_SCHEMA_NAME)
        )
    }

    /// The database cannot be reached or is going away (restarting, shutting
    /// down, out of connections): a 503 for the caller, never a 500. By
    /// SQLSTATE (class 08 connection exceptions, 57P0x shutdowns, 53300), a
    /// pool that timed out or closed, a dead connection task, or an I/O
    /// error under the driver.
    pub fn is_unavailable(&self) -> bool {
        let e = match self {
            DbError::Sqlx(e) => e,
            DbError::Down => return true,
            _ => return false,
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Io(_) => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == state::TOO_MANY_CONNECTIONS
            }),
            _ => false,
        }
    }
}

impl From<sqlx::migrate::MigrateError> for DbError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) => DbError::Sqlx(e),
            other => DbError::Sqlx(sqlx::Error::Migrate(Box::new(other))),
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    /// The `pool` label of its metrics (`unnamed` until [`Db::named`]).
    name: Cow<'static, str>,
    /// Callers inside [`Db::get`] right now (sqlx does not count them).
    waiting: Arc<AtomicUsize>,
    /// Until when (ms since the Unix epoch) callers that would need a new
    /// connection are refused at once: set when one could not be made.
    down_until_ms: Arc<AtomicU64>,
    /// Whether [`Db::get`] resets session settings before handing a
    /// connection out ([`Db::connect_session_resetting`]).
    resetting: bool,
}

/// How long a caller may wait for a first connection when none is open.
/// Waiting for a busy pool keeps the full 5 s (`acquire_timeout`), but with
/// no connection open a long wait means the server is not answering.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(2);

/// After a connection could not be made, callers needing one are refused at
/// once for this long; then one caller tries again. So with the database
/// down, requests answer 503 at once instead of each waiting out the pool's
/// 5 s, and recovery is noticed within a second.
const DOWN_HOLD: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Db {
    /// A lazily-connecting pool; the first `get` opens the first connection.
    /// Must be called inside the Tokio runtime (sqlx starts its reaper).
    pub fn connect(url: &str, max_size: usize) -> Result<Self, DbError> {
        Self::connect_with(url, max_size, false, None)
    }

    /// As [`Db::connect`], for pools whose users change session settings
    /// (the regional stores set an issuer's `search_path` on each handle).
    /// No checkout starts from what an earlier one left behind:
    ///
    /// - [`Db::get`] runs `RESET ALL` before handing the connection out, so
    ///   every plain checkout starts from the server's defaults, whatever
    ///   the last user of the connection set or forgot to set;
    /// - [`Db::get_in_schema`] skips that round trip and sets the one
    ///   setting an issuer handle changes, `search_path`, in the statement
    ///   that checks the schema exists, before any statement of the caller.
    ///
    /// So the reset costs a round trip only on the plain checkouts (few:
    /// migrations, catalogue walks, probes), not on every request the way
    /// a reset at release did (issue 10: `RESET ALL` after every handle was
    /// a fifth of a store's CPU under `GET /v1/client/me`). A connection the
    /// reset fails on is closed, never reused. See docs/DESIGN-NOTES.md
    /// ("search_path").
    ///
    /// `max_age` closes a connection once it is that old (when it is next
    /// released, or by the reaper when idle): a PostgreSQL backend keeps a
    /// catalog cache entry for every relation it has touched and never
    /// shrinks it, so a connection that served thousands of issuer schemas
    /// holds hundreds of MiB (docs/REGIONS.md, "Connections at scale").
    /// `None` keeps sqlx's default of 30 minutes.
    pub fn connect_session_resetting(
        url: &str,
        max_size: usize,
        max_age: Option<Duration>,
    ) -> Result<Self, DbError> {
        Self::connect_with(url, max_size, true, max_age)
    }

    fn connect_with(
        url: &str,
        max_size: usize,
        resetting: bool,
        max_age: Option<Duration>,
    ) -> Result<Self, DbError> {
        // No statement logging by sqlx: its per-statement check is a
        // `tracing::enabled!` probe, which under per-layer filters leaves the
        // thread's filter state set, so the next span made on that thread
        // (a bus call's client span) is dropped by the OpenTelemetry layer
        // and the trace loses a link (tests/tests/observability.rs caught
        // it). Statement text is personal data anyway; slow statements show
        // in the pool and request metrics.
        let options = tls::connect_options(url)?.disable_statement_logging();
        let max = u32::try_from(max_size.max(1)).unwrap_or(u32::MAX);
        let mut pool = PgPoolOptions::new()
            .max_connections(max)
            // Waiting and connecting together end within 5 s, as before.
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        if let Some(age) = max_age {
            pool = pool.max_lifetime(age);
        }
        Ok(Self {
            pool: pool.connect_lazy_with(options),
            name: Cow::Borrowed("unnamed"),
            waiting: Arc::new(AtomicUsize::new(0)),
            down_until_ms: Arc::new(AtomicU64::new(0)),
            resetting,
        })
    }

    /// Names the pool in its metrics (the owning service, or
    /// `store-<region>`) and reports its use at every scrape: connections
    /// in use and idle, the maximum, and callers waiting.
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        let name = self.name.clone();
        let pool = self.pool.clone();
        let waiting = Arc::downgrade(&self.waiting);
        idm_core::metric::on_scrape(Box::new(move || {
            // The pool is gone once every `Db` clone (and with it every
            // strong count of `waiting`) is.
            let Some(waiting) = waiting.upgrade() else {
                return false;
            };
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
            let size = pool.size() as usize;
            let idle = pool.num_idle().min(size);
            gauge(DB_POOL_CONNECTIONS, Some("in_use"), size - idle);
            gauge(DB_POOL_CONNECTIONS, Some("idle"), idle);
            gauge(
                DB_POOL_MAX_CONNECTIONS,
                None,
                pool.options().get_max_connections() as usize,
            );
            gauge(DB_POOL_WAITING, None, waiting.load(Ordering::Relaxed));
            true
        }));
        self
    }

    /// A pooled connection; how long it took is
    /// `idm_db_pool_wait_duration_seconds`. On a session-resetting pool it
    /// comes with the server's default settings (`RESET ALL`).
    pub async fn get(&self) -> Result<Client, DbError> {
        let mut client = self.checkout().await?;
        if self.resetting {
            let conn = client.conn.get_mut();
            if let Err(e) = conn.execute("RESET ALL").await {
                conn.close_on_drop();
                return Err(e.into());
            }
        }
        Ok(client)
    }

    /// A pooled connection whose `search_path` is `schema` alone, or `None`
    /// when the database has no such schema (the connection goes back to
    /// the pool unused). One round trip: the path is set by the statement
    /// that looks the schema up. On a session-resetting pool this is the
    /// only checkout without `RESET ALL`, which is safe because the path is
    /// the only session setting a handle changes and it is overwritten here
    /// before the caller runs anything.
    pub async fn get_in_schema(&self, schema: &str) -> Result<Option<Client>, DbError> {
        let mut client = self.checkout().await?;
        let set: Option<String> = sqlx::query_scalar(
            "SELECT set_config('search_path', quote_ident(nspname), false) FROM pg_namespace WHERE nspname = ($1::text)::name",
        )
        .bind(schema)
        .fetch_optional(&mut **client.conn.get_mut())
        .await?;
        Ok(set.map(|_| client))
    }

    async fn checkout(&self) -> Result<Client, DbError> {
        let started = std::time::Instant::now();
        // No connection open: the caller needs a new one.
        let cold = self.pool.size() == 0;
        if cold && now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            self.record_wait(started, "refused");
            return Err(DbError::Down);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let conn = if cold {
            tokio::time::timeout(FIRST_CONNECTION_WAIT, self.pool.acquire())
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        } else {
            self.pool.acquire().await
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match conn {
            Ok(conn) => {
                self.down_until_ms.store(0, Ordering::Relaxed);
                self.record_wait(started, "ok");
                Ok(Client {
                    conn: Mutex::new(conn),
                })
            }
            Err(e) => {
                let e = DbError::from(e);
                if e.is_unavailable() && self.pool.size() == 0 {
                    let hold = u64::try_from(DOWN_HOLD.as_millis()).unwrap_or(1000);
                    self.down_until_ms.store(now_ms() + hold, Ordering::Relaxed);
                }
                self.record_wait(started, "error");
                Err(e)
            }
        }
    }

    fn record_wait(&self, started: std::time::Instant, outcome: &'static str) {
        metrics::histogram!(
            idm_core::metric::DB_POOL_WAIT_DURATION.name,
            "pool" => self.name.clone(),
            "outcome" => outcome
        )
        .record(started.elapsed().as_secs_f64());
    }

    /// The sqlx pool itself, for statements that need no session state. On
    /// a session-resetting pool its connections may still carry the path
    /// the last [`Db::get_in_schema`] set: only catalogue and
    /// schema-qualified statements belong here.
    pub fn pool(&self) -> &PgPool {
        &self.pool
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
        self.get().await?.conn().await.execute("SELECT 1").await?;
        Ok(())
    }
}

/// The connection a statement runs on, borrowed from a [`Client`] or a
/// [`Transaction`]: `query.fetch_one(&mut *db.conn().await)`.
pub type Conn<'a> = MappedMutexGuard<'a, PgConnection>;

/// A pooled connection. sqlx runs statements on `&mut PgConnection`; the
/// (never contended) mutex lets storage functions take `&Client` or
/// `&Transaction` alike through [`GenericClient`], as they did before.
pub struct Client {
    conn: Mutex<PoolConnection<Postgres>>,
}

impl Client {
    /// Begins a transaction; dropped without [`Transaction::commit`] it is
    /// rolled back (sqlx queues the ROLLBACK before the next statement or
    /// the connection's release).
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, DbError> {
        let conn: &mut PgConnection = self.conn.get_mut();
        let tx = sqlx::Connection::begin(conn).await?;
        Ok(Transaction { tx: Mutex::new(tx) })
    }
}

/// A transaction on a [`Client`]'s connection.
pub struct Transaction<'c> {
    tx: Mutex<sqlx::Transaction<'c, Postgres>>,
}

impl Transaction<'_> {
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.into_inner().commit().await?;
        Ok(())
    }
}

/// Either a connection or a transaction on one.
pub trait GenericClient: Send + Sync {
    fn conn(&self) -> impl Future<Output = Conn<'_>> + Send;
}

impl GenericClient for Client {
    async fn conn(&self) -> Conn<'_> {
        MutexGuard::map(self.conn.lock().await, |c| &mut **c)
    }
}

impl GenericClient for Transaction<'_> {
    async fn conn(&self) -> Conn<'_> {
        MutexGuard::map(self.tx.lock().await, |t| &mut **t)
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

/// Applies `migrator`'s pending migrations to `schema`, creating it if
/// needed. Each service's migrations are SQL files under its `migrations/`
/// directory, embedded with `sqlx::migrate!`, written unqualified: they run
/// with `schema` as the `search_path`, so one set serves every issuer's
/// store schema. Applied versions are recorded in `<schema>._sqlx_migrations`.
///
/// - Serialised per schema by a session advisory lock on the schema name:
///   two replicas starting together apply each migration once (the second
///   waits, then finds nothing to do), while different schemas migrate in
///   parallel.
/// - Resumable: each migration commits in its own transaction with its
///   record, so a run interrupted between two migrations continues at the
///   first one not recorded.
/// - Databases migrated before sqlx (the old `<schema>._migrations` list,
///   same version numbers): the versions listed there are recorded as
///   applied without running them again; the old table stays, unread.
///
/// Runs on a pooled connection (provisioning an issuer in every region
/// must not open a fresh connection per region): on success the lock is
/// released and the path reset before the connection goes back; on any
/// error the connection is closed instead, so neither can outlive the run
/// in the pool. Schema names are interpolated
/// (checked by [`safe_identifier`]): DDL cannot bind identifiers, so these
/// statements stay runtime-checked, and so do the few catalog reads next to
/// them, which keeps this crate (built by every service) free of offline
/// query data.
pub async fn migrate(db: &Db, schema: &str, migrator: &Migrator) -> Result<(), DbError> {
    let schema = safe_identifier(schema)?;
    let mut client = db.get().await?;
    let conn = client.conn.get_mut();
    let result = async {
        migrate_on(conn, schema, migrator).await?;
        sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(schema)
            .execute(&mut **conn)
            .await?;
        conn.execute("RESET search_path").await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        conn.close_on_drop();
    }
    result
}

async fn migrate_on(
    conn: &mut PgConnection,
    schema: &str,
    migrator: &Migrator,
) -> Result<(), DbError> {
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(schema)
        .execute(&mut *conn)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema};"
    )))
    .execute(&mut *conn)
    .await?;
    let scoped = Migrator {
        migrations: migrator.migrations.clone(),
        ignore_missing: false,
        // The lock above, per schema; sqlx's own is one per database.
        locking: false,
        no_tx: false,
        table_name: Cow::Owned(format!("{schema}._sqlx_migrations")),
        create_schemas: Cow::Borrowed(&[]),
    };
    let old_list: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = '_migrations')",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await?;
    if old_list {
        let old: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT version FROM {schema}._migrations ORDER BY version"
        )))
        .fetch_all(&mut *conn)
        .await?;
        // The old list applied versions in order from 1, so "up to the
        // highest" is exactly the listed ones.
        if let Some(&last) = old.last() {
            scoped
                .run_direct(Some(i64::from(last)), &mut *conn, true)
                .await?;
        }
    }
    let before: i64 = applied_count(conn, schema).await?;
    scoped.run_direct(None, &mut *conn, false).await?;
    let applied = applied_count(conn, schema).await? - before;
    if applied > 0 {
        tracing::info!(schema, applied, "migrations applied");
    }
    Ok(())
}

async fn applied_count(conn: &mut PgConnection, schema: &str) -> Result<i64, DbError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = '_sqlx_migrations')",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Ok(0);
    }
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}._sqlx_migrations WHERE success"
    )))
    .fetch_one(&mut *conn)
    .await?)
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
