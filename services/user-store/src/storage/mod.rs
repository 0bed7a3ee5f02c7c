//! Storage for one region: issuer-scoped handles over the region's database.

mod mfa;
mod personal_tokens;
mod sessions;

pub use sessions::revoked_sessions;

use crate::Error;
use idm_core::proto::store::{StoreInfo, StoredUser};
use idm_core::{ApiError, IssuerId, UserId};
use idm_db::{Client, Db, DbError, Row};

/// Applies pending store migrations to every issuer schema in this region.
pub async fn migrate_all_issuers(db: &Db) -> Result<(), Error> {
    let mut client = db.get().await?;
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'iss\\_%'",
            &[],
        )
        .await
        .map_err(DbError::from)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for schema in schemas {
        idm_db::migrate(&mut client, &schema, crate::migrations::STORE).await?;
    }
    Ok(())
}

pub async fn provision(db: &Db, issuer: &IssuerId) -> Result<(), Error> {
    let mut client = db.get().await?;
    idm_db::migrate(
        &mut client,
        &issuer.store_schema(),
        crate::migrations::STORE,
    )
    .await?;
    Ok(())
}

/// A connection bound to one issuer's schema. The only way to query users:
/// queries never name an issuer, so they cannot mix issuers. It holds one
/// of the issuer's fair share of connections, so an issuer flooding the
/// store waits (or is refused) within its own share while the others get
/// theirs.
pub struct IssuerStore {
    pub(super) client: Client,
    _share: idm_core::fair_share::Slot,
}

impl IssuerStore {
    pub async fn open(state: &crate::State, issuer: &IssuerId) -> Result<Self, Error> {
        // Waiting ends with the caller's deadline: nobody would read the answer.
        let share = idm_bus::within_deadline(state.connections.enter(issuer.as_str()))
            .await?
            .map_err(|refused| {
                metrics::counter!(idm_core::metric::STORE_SHED.name, "resource" => "db")
                    .increment(1);
                crate::error::overloaded(
                    "the store is busy with this application's requests; retry shortly",
                    refused.retry_after,
                )
            })?;
        let client = state.db.get().await?;
        let schema = issuer.store_schema();
        // One round trip: set the search path only if the schema exists.
        let found = client
            .query_opt("SELECT set_config('search_path', nspname, false) FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(DbError::from)?;
        match found {
            Some(_) => Ok(Self {
                client,
                _share: share,
            }),
            None => Err(ApiError::not_found("issuer").into()),
        }
    }

    pub async fn insert_user(
        &self,
        id: &UserId,
        email: &idm_core::Email,
        name: Option<&str>,
        metadata: &serde_json::Value,
        password_hash: Option<&str>,
    ) -> Result<Row, DbError> {
        Ok(self
            .client
            .query_one(
                "INSERT INTO users (id, email, email_canonical, name, metadata, password_hash)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING id, email, email_verified, name, metadata, mfa_enabled, created_at",
                &[
                    &id.as_str(),
                    &email.as_str(),
                    &email.canonical(),
                    &name,
                    metadata,
                    &password_hash,
                ],
            )
            .await?)
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<Row>, DbError> {
        Ok(self
            .client
            .query_opt(
                "SELECT id, email, email_verified, name, metadata, mfa_enabled, created_at FROM users WHERE id = $1",
                &[&id.as_str()],
            )
            .await?)
    }

    pub async fn password_hash(&self, id: &UserId) -> Result<Option<String>, DbError> {
        let row = self
            .client
            .query_opt(
                "SELECT password_hash FROM users WHERE id = $1",
                &[&id.as_str()],
            )
            .await?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
    }

    pub async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<(), DbError> {
        self.client
            .execute(
                "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
                &[&id.as_str(), &hash],
            )
            .await?;
        Ok(())
    }
}

pub(super) fn corrupt() -> DbError {
    DbError::BadIdentifier("stored id".into())
}

pub fn user_from_row(row: &Row, store: StoreInfo) -> Result<StoredUser, Error> {
    Ok(StoredUser {
        id: UserId::parse(row.get(0)).map_err(|_| corrupt())?,
        email: row.get(1),
        email_verified: row.get(2),
        name: row.get(3),
        metadata: row.get(4),
        mfa_enabled: row.get(5),
        created_at: row.get(6),
        store,
    })
}
