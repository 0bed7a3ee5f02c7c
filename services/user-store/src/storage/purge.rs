//! The regional step of a user deletion: every row that refers to the user,
//! in every table of the issuer's schema, then the user row itself.
//!
//! The tables are discovered from the catalogue (any table with a `user_id`
//! column), not listed here, so a table added by a later migration (devices,
//! consents, ...) is covered without touching this code. Table names come
//! from the catalogue of the issuer's own schema and are checked
//! identifiers: the one statement here that is built at run time (sqlx's
//! macros need a fixed table name); see docs/DESIGN-NOTES.md.

use super::IssuerStore;
use crate::Error;
use idm_core::{IssuerId, UserId};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};
use std::collections::BTreeMap;

/// The tables of `schema` with a `user_id` column, by name: what the purge
/// and a move's copy cover, found in the catalogue so a later table cannot
/// be missed.
pub(super) async fn tables_with_user_id<C: GenericClient>(
    client: &C,
    schema: &str,
) -> Result<Vec<String>, DbError> {
    sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "table!"
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ($1::text)::name AND a.attname = 'user_id' AND NOT a.attisdropped
              AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            ORDER BY 1"#,
        schema,
    )
    .fetch_all(&mut *client.conn().await)
    .await
    .map_err(DbError::from)
}

impl IssuerStore {
    /// Revokes every live personal token of the user: how many.
    pub async fn revoke_all_personal_tokens(&self, user: &UserId) -> Result<i64, DbError> {
        let done = sqlx::query!(
            "UPDATE personal_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            user.as_str(),
        )
        .execute(&mut *self.client.conn().await)
        .await?;
        Ok(done.rows_affected() as i64)
    }

    /// Deletes the user's rows from every table of the schema, then the
    /// user, in one transaction: a count per table. Idempotent (a second
    /// run finds nothing).
    pub async fn purge_user(
        &mut self,
        issuer: &IssuerId,
        user: &UserId,
    ) -> Result<BTreeMap<String, i64>, Error> {
        let schema = issuer.store_schema();
        let tx = self.client.transaction().await?;
        let tables = tables_with_user_id(&tx, &schema).await?;
        // The user's revoked sessions whose tokens could still verify stay
        // known to edges rebuilding their revocation sets: ids and times
        // only. Tombstones past their token's end go at the same time.
        sqlx::query!(
            "INSERT INTO revoked_session_tombstones (id, revoked_at, expires_at, revoke_reason)
                 SELECT id, revoked_at, expires_at, revoke_reason FROM sessions
                  WHERE user_id = $1 AND revoked_at IS NOT NULL AND expires_at > now()
                 ON CONFLICT (id) DO NOTHING",
            user.as_str(),
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        sqlx::query!("DELETE FROM revoked_session_tombstones WHERE expires_at < now()")
            .execute(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
        let mut removed = BTreeMap::new();
        for table in tables {
            // Both names are checked identifiers (lowercase letters, digits
            // and `_`), as everywhere a schema is named at run time.
            let statement = format!(
                "DELETE FROM {}.{} WHERE user_id = $1",
                idm_db::safe_identifier(&schema)?,
                idm_db::safe_identifier(&table)?
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(user.as_str())
                .execute(&mut *tx.conn().await)
                .await
                .map_err(DbError::from)?;
            removed.insert(table, done.rows_affected() as i64);
        }
        // Rows that refer to the user through another table (refresh tokens
        // through their session) go with it: the foreign keys cascade.
        let done = sqlx::query!("DELETE FROM users WHERE id = $1", user.as_str())
            .execute(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
        removed.insert("users".to_owned(), done.rows_affected() as i64);
        tx.commit().await?;
        Ok(removed)
    }
}
