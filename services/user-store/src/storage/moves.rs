//! A user's rows when the user moves to another region: exported by the
//! source store, imported by the target store, and digested by both so the
//! deletion-worker can compare them before the directory switches.
//!
//! Like `purge_user`, the tables are discovered from the catalogue of the
//! issuer's schema, not listed here, so a table added by a later migration
//! is moved without touching this code:
//! - `users` (the user's own row, by `id`),
//! - every table with a `user_id` column,
//! - every table without one that has a foreign key to one of those (the
//!   rows reached through it: refresh tokens through their session).
//!
//! A foreign key of more than one column to such a table, or a table two
//! keys away from the user, is refused rather than skipped (a table that
//! cannot be moved must not be forgotten).
//! Tables are ordered so each comes after the tables it refers to.
//! Statements name tables at run time (checked identifiers from the
//! issuer's own catalogue), as `purge_user` does; see docs/DESIGN-NOTES.md.

use super::IssuerStore;
use crate::Error;
use idm_core::proto::moves::store::{TableDigest, UserDigest, UserRows};
use idm_core::{ApiError, IssuerId, UserId};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};
use std::collections::{BTreeMap, BTreeSet};

/// How the user's rows of one table are found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    /// `users`: `id = $1`.
    Own,
    /// `user_id = $1`.
    UserId,
    /// `<column> = $1`: a foreign key to `users` by another name.
    Column(String),
    /// `<column> IN (SELECT <parent_column> FROM <parent> WHERE user_id = $1)`.
    Via {
        column: String,
        parent: String,
        parent_column: String,
    },
}

#[derive(Debug, Clone)]
struct UserTable {
    name: String,
    filter: Filter,
}

impl UserTable {
    /// `FROM <schema>.<table> t WHERE ...` selecting the user's rows.
    fn rows_clause(&self, schema: &str) -> Result<String, DbError> {
        let schema = idm_db::safe_identifier(schema)?;
        let table = idm_db::safe_identifier(&self.name)?;
        Ok(match &self.filter {
            Filter::Own => format!("FROM {schema}.{table} t WHERE t.id = $1"),
            Filter::UserId => format!("FROM {schema}.{table} t WHERE t.user_id = $1"),
            Filter::Column(column) => format!(
                "FROM {schema}.{table} t WHERE t.{} = $1",
                idm_db::safe_identifier(column)?
            ),
            Filter::Via {
                column,
                parent,
                parent_column,
            } => format!(
                "FROM {schema}.{table} t WHERE t.{} IN (SELECT p.{} FROM {schema}.{} p WHERE p.user_id = $1)",
                idm_db::safe_identifier(column)?,
                idm_db::safe_identifier(parent_column)?,
                idm_db::safe_identifier(parent)?,
            ),
        })
    }
}

/// The user's tables of `schema`, parents before children.
async fn user_tables<C: GenericClient>(client: &C, schema: &str) -> Result<Vec<UserTable>, Error> {
    let with_user_id = super::purge::tables_with_user_id(client, schema).await?;
    let keys = sqlx::query!(
        r#"SELECT child.relname::text AS "child!", parent.relname::text AS "parent!",
                  cardinality(k.conkey) AS "columns!",
                  ca.attname::text AS "column!", pa.attname::text AS "parent_column!"
             FROM pg_constraint k
             JOIN pg_class child ON child.oid = k.conrelid
             JOIN pg_class parent ON parent.oid = k.confrelid
             JOIN pg_namespace n ON n.oid = child.relnamespace
             JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = k.conkey[1]
             JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1]
            WHERE k.contype = 'f' AND n.nspname = ($1::text)::name
            ORDER BY 1, 2, 4"#,
        schema,
    )
    .fetch_all(&mut *client.conn().await)
    .await
    .map_err(DbError::from)?;
    let owned: BTreeSet<&str> = with_user_id.iter().map(String::as_str).collect();
    let mut tables: Vec<UserTable> = vec![UserTable {
        name: "users".to_owned(),
        filter: Filter::Own,
    }];
    tables.extend(
        with_user_id
            .iter()
            .filter(|t| t.as_str() != "users")
            .map(|t| UserTable {
                name: t.clone(),
                filter: Filter::UserId,
            }),
    );
    for key in &keys {
        let reached = !owned.contains(key.child.as_str())
            && key.child != "users"
            && (owned.contains(key.parent.as_str()) || key.parent == "users");
        if !reached || tables.iter().any(|t| t.name == key.child) {
            continue;
        }
        if key.columns != 1 {
            return Err(ApiError::internal_from(&format!(
                "table {} refers to {} with a {}-column key: it cannot be moved",
                key.child, key.parent, key.columns
            ))
            .into());
        }
        tables.push(UserTable {
            name: key.child.clone(),
            filter: if key.parent == "users" {
                Filter::Column(key.column.clone())
            } else {
                Filter::Via {
                    column: key.column.clone(),
                    parent: key.parent.clone(),
                    parent_column: key.parent_column.clone(),
                }
            },
        });
    }
    // One hop only: a table reached through a table reached this way would
    // be left behind, so it is refused (the move fails loudly instead).
    for key in &keys {
        let via_parent = tables.iter().any(|t| {
            t.name == key.parent && matches!(t.filter, Filter::Via { .. } | Filter::Column(_))
        });
        if via_parent && !tables.iter().any(|t| t.name == key.child) {
            return Err(ApiError::internal_from(&format!(
                "table {} is two foreign keys away from the user: it cannot be moved",
                key.child
            ))
            .into());
        }
    }
    // Parents first: repeatedly take a table whose parents (among these
    // tables) are all placed. A cycle cannot be ordered: refuse it.
    let names: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    let parents = |table: &str| -> BTreeSet<String> {
        keys.iter()
            .filter(|k| k.child == table && k.parent != table && names.contains(&k.parent))
            .map(|k| k.parent.clone())
            .collect()
    };
    let mut ordered: Vec<UserTable> = Vec::with_capacity(tables.len());
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while !tables.is_empty() {
        let Some(next) = tables
            .iter()
            .position(|t| parents(&t.name).is_subset(&placed))
        else {
            return Err(ApiError::internal_from(
                &"the user's tables refer to each other in a cycle",
            )
            .into());
        };
        let table = tables.remove(next);
        placed.insert(table.name.clone());
        ordered.push(table);
    }
    Ok(ordered)
}

/// One snapshot of every table for the rest of the transaction, and UTC
/// for the JSON of its times (so the same row reads the same everywhere).
/// Must run first in the transaction.
async fn snapshot_in_utc<C: GenericClient>(tx: &C) -> Result<(), DbError> {
    sqlx::raw_sql(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL TimeZone = 'UTC'",
    )
    .execute(&mut *tx.conn().await)
    .await?;
    Ok(())
}

impl IssuerStore {
    /// Every row of the user in the issuer's schema, per table, parents
    /// first. Rows are `to_jsonb` of the row with times in UTC, so the
    /// same row reads the same in every region.
    pub async fn export_user(
        &mut self,
        issuer: &IssuerId,
        user: &UserId,
    ) -> Result<UserRows, Error> {
        let schema = issuer.store_schema();
        let tx = self.client.transaction().await?;
        snapshot_in_utc(&tx).await?;
        let mut rows = UserRows::default();
        for table in user_tables(&tx, &schema).await? {
            let statement = format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) {}",
                table.rows_clause(&schema)?
            );
            let found: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
                .bind(user.as_str())
                .fetch_one(&mut *tx.conn().await)
                .await
                .map_err(DbError::from)?;
            let found = match found {
                serde_json::Value::Array(found) => found,
                _ => Vec::new(),
            };
            rows.tables.push((table.name, found));
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Replaces the user's rows here with `rows` (from the source region),
    /// in one transaction: the user's rows already here (an earlier,
    /// interrupted copy) are deleted first, children first, then `rows` are
    /// inserted parents first. Running it twice leaves one copy. A table the
    /// rows name that this schema does not have is refused (the two
    /// regions' schemas differ: nothing is written).
    pub async fn import_user(
        &mut self,
        issuer: &IssuerId,
        user: &UserId,
        rows: &UserRows,
    ) -> Result<BTreeMap<String, i64>, Error> {
        let schema = issuer.store_schema();
        let tx = self.client.transaction().await?;
        let tables = user_tables(&tx, &schema).await?;
        for (name, _) in &rows.tables {
            if !tables.iter().any(|t| &t.name == name) {
                return Err(ApiError::internal_from(&format!(
                    "table {name} of the source region has no counterpart here"
                ))
                .into());
            }
        }
        for table in tables.iter().rev() {
            let statement = format!("DELETE {}", table.rows_clause(&schema)?);
            // `DELETE FROM x t WHERE ...`: rows_clause starts with FROM.
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(user.as_str())
                .execute(&mut *tx.conn().await)
                .await
                .map_err(DbError::from)?;
        }
        let mut copied = BTreeMap::new();
        for table in &tables {
            let Some((_, found)) = rows.tables.iter().find(|(name, _)| name == &table.name) else {
                continue;
            };
            let qualified = format!(
                "{}.{}",
                idm_db::safe_identifier(&schema)?,
                idm_db::safe_identifier(&table.name)?
            );
            let statement = format!(
                "INSERT INTO {qualified} SELECT * FROM jsonb_populate_recordset(NULL::{qualified}, $1)"
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(serde_json::Value::Array(found.clone()))
                .execute(&mut *tx.conn().await)
                .await
                .map_err(DbError::from)?;
            copied.insert(table.name.clone(), done.rows_affected() as i64);
        }
        tx.commit().await?;
        Ok(copied)
    }

    /// Per table of the user: the row count and an MD5 over the rows' JSON
    /// (times in UTC, sorted bytewise), comparable between regions.
    pub async fn digest_user(
        &mut self,
        issuer: &IssuerId,
        user: &UserId,
    ) -> Result<UserDigest, Error> {
        let schema = issuer.store_schema();
        let tx = self.client.transaction().await?;
        snapshot_in_utc(&tx).await?;
        let mut digest = UserDigest::default();
        for table in user_tables(&tx, &schema).await? {
            let statement = format!(
                "SELECT count(*), md5(coalesce(string_agg(to_jsonb(t)::text, E'\\n' ORDER BY to_jsonb(t)::text COLLATE \"C\"), '')) {}",
                table.rows_clause(&schema)?
            );
            let (rows, checksum): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(statement))
                .bind(user.as_str())
                .fetch_one(&mut *tx.conn().await)
                .await
                .map_err(DbError::from)?;
            digest
                .tables
                .insert(table.name, TableDigest { rows, checksum });
        }
        tx.commit().await?;
        Ok(digest)
    }
}
