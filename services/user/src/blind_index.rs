//! Per-issuer blind-index keys: 32 random bytes each, sealed under the master
//! key in `directory.issuer_keys`, cached in memory once opened.

use crate::Error;
use idm_core::{ApiError, Email, IssuerId};
use idm_crypto::MasterKeys;
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};
use std::sync::Arc;
use zeroize::Zeroizing;

type Key = Arc<Zeroizing<Vec<u8>>>;

pub struct IndexKeys {
    db: Db,
    master: MasterKeys,
    cache: moka::future::Cache<IssuerId, Key>,
}

impl IndexKeys {
    pub fn new(db: Db, master: MasterKeys) -> Self {
        Self {
            db,
            master,
            cache: moka::future::Cache::new(10_000),
        }
    }

    /// Creates the issuer's key if it has none (idempotent).
    pub async fn create(&self, issuer: &IssuerId) -> Result<(), Error> {
        let sealed = self.master.seal(
            &idm_crypto::random_bytes::<32>(),
            issuer.as_str().as_bytes(),
        )?;
        sqlx::query!(
"INSERT INTO directory.issuer_keys (issuer_id, sealed_key) VALUES ($1, $2) ON CONFLICT (issuer_id) DO NOTHING",
issuer.as_str(),
&sealed,
)
            .execute(&mut *self.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?;
        Ok(())
    }

    async fn key(&self, issuer: &IssuerId) -> Result<Key, Error> {
        let load = async {
            let row = sqlx::query!(
                "SELECT sealed_key FROM directory.issuer_keys WHERE issuer_id = $1",
                issuer.as_str(),
            )
            .fetch_optional(&mut *self.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?;
            let sealed: Vec<u8> = row.ok_or_else(|| ApiError::not_found("issuer"))?.sealed_key;
            let opened = self
                .master
                .open(&sealed, issuer.as_str().as_bytes())
                .inspect_err(|e| {
                    tracing::error!(issuer = %issuer, error = %e, "a blind-index key does not open");
                })?;
            if opened.needs_reseal() {
                // Re-seal on read; the background pass catches the rest.
                if let Err(e) = self.reseal_row(issuer, &sealed).await {
                    tracing::warn!(issuer = %issuer, error = %e, "blind-index key not re-sealed");
                }
            }
            Ok::<Key, Error>(Arc::new(opened.plaintext))
        };
        self.cache
            .try_get_with(issuer.clone(), load)
            .await
            .map_err(|e| match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(shared) => Error::Api(ApiError::internal_from(&shared)),
            })
    }

    /// Re-seals one issuer's key under the current master key,
    /// compare-and-swap on the value read (`false`: nothing to do, or
    /// another replica changed it first).
    async fn reseal_row(&self, issuer: &IssuerId, old: &[u8]) -> Result<bool, Error> {
        let Some(new) = self.master.reseal(old, issuer.as_str().as_bytes())? else {
            return Ok(false);
        };
        let done = sqlx::query!(
            "UPDATE directory.issuer_keys SET sealed_key = $3 WHERE issuer_id = $1 AND sealed_key = $2",
            issuer.as_str(),
            old,
            &new,
        )
        .execute(&mut *self.db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        Ok(done == 1)
    }

    /// One pass over every issuer's key: each not yet sealed under the
    /// current master key (with its key id) is re-sealed. Idempotent and
    /// safe with several replicas at once (compare-and-swap per row).
    pub async fn reseal_all(&self) -> Result<idm_crypto::keyring::ResealPass, Error> {
        let rows = sqlx::query!(
            "SELECT issuer_id, sealed_key FROM directory.issuer_keys ORDER BY issuer_id",
        )
        .fetch_all(&mut *self.db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?;
        let mut pass = idm_crypto::keyring::ResealPass::default();
        for row in rows {
            if self.master.is_current(&row.sealed_key) {
                continue;
            }
            let Ok(issuer) = IssuerId::parse(&row.issuer_id) else {
                pass.unreadable += 1;
                continue;
            };
            match self.reseal_row(&issuer, &row.sealed_key).await {
                Ok(true) => pass.resealed += 1,
                // Changed meanwhile: every writer seals under the current key.
                Ok(false) => {}
                Err(Error::Crypto(_)) => pass.unreadable += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(pass)
    }

    /// HMAC-SHA256 of the canonical address under the issuer's key.
    pub async fn index(&self, issuer: &IssuerId, email: &Email) -> Result<Vec<u8>, Error> {
        let key = self.key(issuer).await?;
        Ok(idm_crypto::hmac_sha256(&key, email.canonical().as_bytes()).to_vec())
    }
}
