//! The durable copy of failure budgets (schema `auth` in the global
//! database). Redis is the atomic gate every replica shares; this ledger is
//! what Redis is rebuilt from when it comes back empty, so a restart of Redis
//! never resets a budget or lifts a lock. It holds keyed hashes of subjects
//! (never an address or a user id in the clear) and only subjects that have
//! failed recently or are locked: a success deletes the row.

use idm_core::{ApiError, IssuerId};
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};

pub const SCHEMA: &str = "auth";

/// The `auth` schema: SQL files under `services/auth/migrations/`.
pub static MIGRATIONS: idm_db::Migrator = sqlx::migrate!("./migrations");

/// One subject's durable failure state.
pub struct Row {
    pub issuer_id: String,
    pub budget: String,
    pub subject_hash: String,
    pub failures: u32,
    pub locked: bool,
    pub forget_at: Option<i64>,
}

fn unavailable(e: DbError) -> ApiError {
    tracing::error!(error = %e, "failure ledger unavailable");
    ApiError::upstream("the failure ledger is unavailable")
}

pub async fn migrate(db: &Db) -> Result<(), DbError> {
    idm_db::migrate(db, SCHEMA, &MIGRATIONS).await?;
    Ok(())
}

/// Records a failure count; never lowers one already recorded.
pub async fn record(db: &Db, row: &Row) -> Result<(), ApiError> {
    let client = db.get().await.map_err(unavailable)?;
    let failures = i32::try_from(row.failures).unwrap_or(i32::MAX);
    sqlx::query!(
"INSERT INTO auth.failure_ledger (issuer_id, budget, subject_hash, failures, locked, forget_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (issuer_id, budget, subject_hash) DO UPDATE SET
                failures = GREATEST(failure_ledger.failures, EXCLUDED.failures),
                locked = failure_ledger.locked OR EXCLUDED.locked,
                forget_at = CASE WHEN failure_ledger.locked AND failure_ledger.forget_at IS NULL
                                 THEN NULL ELSE EXCLUDED.forget_at END,
                updated_at = now()",
&row.issuer_id,
&row.budget,
&row.subject_hash,
failures,
row.locked,
row.forget_at,
)
    .execute(&mut *client.conn().await)
    .await
    .map_err(|e| unavailable(e.into()))?;
    Ok(())
}

/// Forgets a subject (after a success or a recovery). `true` if it had a row.
pub async fn clear(
    db: &Db,
    issuer: &IssuerId,
    budget: &str,
    subject_hash: &str,
) -> Result<bool, ApiError> {
    let client = db.get().await.map_err(unavailable)?;
    let n = sqlx::query!(
"DELETE FROM auth.failure_ledger WHERE issuer_id = $1 AND budget = $2 AND subject_hash = $3",
issuer.as_str(),
budget,
subject_hash,
)
    .execute(&mut *client.conn().await)
    .await
    .map_err(|e| unavailable(e.into()))?
    .rows_affected();
    Ok(n > 0)
}

/// Moves a subject's row from its hash under the previous master key to its
/// hash under the current one (a master-key rotation), merged with any row
/// already there: the higher count, a lock, no expiry for a lasting lock.
pub async fn rekey(
    db: &Db,
    issuer: &IssuerId,
    budget: &str,
    old_hash: &str,
    new_hash: &str,
) -> Result<(), ApiError> {
    let client = db.get().await.map_err(unavailable)?;
    sqlx::query!(
        "WITH moved AS (
             DELETE FROM auth.failure_ledger
             WHERE issuer_id = $1 AND budget = $2 AND subject_hash = $3
             RETURNING failures, locked, forget_at)
         INSERT INTO auth.failure_ledger (issuer_id, budget, subject_hash, failures, locked, forget_at)
             SELECT $1, $2, $4, failures, locked, forget_at FROM moved
         ON CONFLICT (issuer_id, budget, subject_hash) DO UPDATE SET
             failures = GREATEST(failure_ledger.failures, EXCLUDED.failures),
             locked = failure_ledger.locked OR EXCLUDED.locked,
             forget_at = CASE
                 WHEN (failure_ledger.locked AND failure_ledger.forget_at IS NULL)
                   OR (EXCLUDED.locked AND EXCLUDED.forget_at IS NULL) THEN NULL
                 ELSE GREATEST(failure_ledger.forget_at, EXCLUDED.forget_at) END,
             updated_at = now()",
        issuer.as_str(),
        budget,
        old_hash,
        new_hash,
    )
    .execute(&mut *client.conn().await)
    .await
    .map_err(|e| unavailable(e.into()))?;
    Ok(())
}

/// Deletes the rows that no longer count at `now`. Returns how many.
pub async fn prune(db: &Db, now: i64) -> Result<u64, ApiError> {
    let client = db.get().await.map_err(unavailable)?;
    let done = sqlx::query!(
        "DELETE FROM auth.failure_ledger WHERE forget_at IS NOT NULL AND forget_at <= $1",
        now,
    )
    .execute(&mut *client.conn().await)
    .await
    .map_err(|e| unavailable(e.into()))?;
    Ok(done.rows_affected())
}

/// Every row of `issuer` that still counts at `now` (through the primary
/// key: an issuer's rows, not the table).
pub async fn active(db: &Db, issuer: &IssuerId, now: i64) -> Result<Vec<Row>, ApiError> {
    let client = db.get().await.map_err(unavailable)?;
    let rows = sqlx::query!(
        "SELECT issuer_id, budget, subject_hash, failures, locked, forget_at
             FROM auth.failure_ledger
             WHERE issuer_id = $1 AND (forget_at IS NULL OR forget_at > $2)",
        issuer.as_str(),
        now,
    )
    .fetch_all(&mut *client.conn().await)
    .await
    .map_err(|e| unavailable(e.into()))?;
    Ok(rows
        .iter()
        .map(|r| Row {
            issuer_id: r.issuer_id.clone(),
            budget: r.budget.clone(),
            subject_hash: r.subject_hash.clone(),
            failures: u32::try_from(r.failures).unwrap_or(0),
            locked: r.locked,
            forget_at: r.forget_at,
        })
        .collect())
}
