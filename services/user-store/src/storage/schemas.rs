//! Issuer schemas in this region: created when the region first needs one
//! (lazy provisioning), brought up to date by `idm-user-store migrate` (or at
//! start-up), and refused while behind.
//!
//! Why lazily: an issuer used to get ~30 empty relations in each of the
//! eight regional databases when its account was created, so 10,000 issuers
//! meant ~300,000 relations per database before anyone signed up (see
//! docs/REGIONS.md "Schemas per issuer"). Now a schema exists where the
//! issuer has users, or where an operator pre-provisioned it.

use crate::Error;
use futures::{stream, StreamExt};
use idm_core::IssuerId;
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};
use std::collections::HashSet;
use std::sync::Mutex;

/// PostgreSQL's `undefined_table`.
pub(super) const UNDEFINED_TABLE: &str = "42P01";

/// The schema version this build serves: the highest store migration.
pub fn required_version() -> i64 {
    crate::migrations::STORE
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Schemas this process has seen at the required version. A schema never
/// goes back a version, so an entry stays true for the life of the process;
/// at most one entry per issuer with data in the region.
#[derive(Default)]
pub struct CurrentSchemas(Mutex<HashSet<String>>);

impl CurrentSchemas {
    pub fn contains(&self, schema: &str) -> bool {
        self.0
            .lock()
            .map(|set| set.contains(schema))
            .unwrap_or(false)
    }

    pub fn insert(&self, schema: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(schema.to_owned());
        }
    }
}

/// Refuses a schema behind the version this build needs: serving it would
/// run statements against tables or columns it does not have yet. The
/// connection's `search_path` is the issuer's schema.
pub(super) async fn check_version(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    current: &CurrentSchemas,
) -> Result<(), Error> {
    if current.contains(schema) {
        return Ok(());
    }
    // sqlx's own bookkeeping table, not part of the store's schema, so the
    // checked macros (which know the schema from the migrations) cannot see it.
    let version: i64 = match sqlx::query_scalar(
        "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&mut *conn)
    .await
    {
        Ok(version) => version,
        // The schema is being created by a concurrent first write (the
        // schema exists, its first migration not yet): no data here yet.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_TABLE) => {
            return Err(Error::NoSchema)
        }
        Err(e) => return Err(DbError::from(e).into()),
    };
    let required = required_version();
    if version < required {
        return Err(Error::SchemaBehind { version, required });
    }
    current.insert(schema);
    Ok(())
}

/// Creates `issuer`'s schema and applies every migration (idempotent: each
/// schema migrates under its own advisory lock, each migration in its own
/// transaction, so concurrent callers and a crash midway are both safe).
pub async fn provision(db: &Db, issuer: &IssuerId, current: &CurrentSchemas) -> Result<(), Error> {
    let schema = issuer.store_schema();
    idm_db::migrate(db, &schema, &crate::migrations::STORE)
        .await
        .map_err(|e| {
            if e.is_unavailable() {
                Error::Db(e)
            } else {
                Error::Migration(format!("{schema}: {e}"))
            }
        })?;
    current.insert(&schema);
    Ok(())
}

/// What one migration pass did.
#[derive(Debug, Default, serde::Serialize)]
pub struct MigrationReport {
    /// Issuer schemas found in the region.
    pub schemas: usize,
    /// Schemas that were behind and were brought up to date.
    pub migrated: usize,
    /// Schemas that could not be migrated, with why; the next pass retries them.
    pub failed: Vec<(String, String)>,
    pub required_version: i64,
}

/// Brings every issuer schema in the region to the required version,
/// `parallel` schemas at a time. A schema that fails is reported and the
/// others go on: a later pass picks up exactly what is left.
pub async fn migrate_all(db: &Db, parallel: usize) -> Result<MigrationReport, Error> {
    let schemas = sqlx::query_scalar!(
        r#"SELECT nspname::text AS "nspname!" FROM pg_namespace WHERE nspname LIKE 'iss\_%' ORDER BY nspname"#
    )
    .fetch_all(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    let required = required_version();
    let mut report = MigrationReport {
        schemas: schemas.len(),
        required_version: required,
        ..Default::default()
    };
    let results = stream::iter(schemas)
        .map(|schema| async move {
            let before = version_of(db, &schema).await;
            let result = idm_db::migrate(db, &schema, &crate::migrations::STORE).await;
            (schema, before, result)
        })
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>()
        .await;
    for (schema, before, result) in results {
        match result {
            Ok(()) if before.is_none_or(|v| v < required) => report.migrated += 1,
            Ok(()) => {}
            Err(e) => {
                tracing::error!(%schema, error = %e, "schema migration failed");
                report.failed.push((schema, e.to_string()));
            }
        }
    }
    report.failed.sort();
    Ok(report)
}

/// The schema's applied version; `None` when it cannot be read (a schema
/// created by a crash before its first migration has no table yet).
async fn version_of(db: &Db, schema: &str) -> Option<i64> {
    let client = db.get().await.ok()?;
    let sql = format!(
        "SELECT coalesce(max(version), 0) FROM {}._sqlx_migrations WHERE success",
        idm_db::safe_identifier(schema).ok()?
    );
    let version = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *client.conn().await)
        .await
        .ok();
    version
}
