//! Per-issuer blind-index keys: 32 random bytes each, sealed under the master
//! key in `directory.issuer_keys`, cached in memory once opened.

use crate::Error;
use idm_core::{ApiError, Email, IssuerId};
use idm_crypto::MasterKey;
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};
use std::sync::Arc;
use zeroize::Zeroizing;

type Key = Arc<Zeroizing<Vec<u8>>>;

pub struct IndexKeys {
    db: Db,
    master: MasterKey,
    cache: moka::future::Cache<IssuerId, Key>,
}

impl IndexKeys {
    pub fn new(db: Db, master: MasterKey) -> Self {
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
            let opened = self.master.open(&sealed, issuer.as_str().as_bytes())?;
            Ok::<Key, Error>(Arc::new(opened))
        };
        self.cache
            .try_get_with(issuer.clone(), load)
            .await
            .map_err(|e| match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(shared) => Error::Api(ApiError::internal_from(&shared)),
            })
    }

    /// HMAC-SHA256 of the canonical address under the issuer's key.
    pub async fn index(&self, issuer: &IssuerId, email: &Email) -> Result<Vec<u8>, Error> {
        let key = self.key(issuer).await?;
        Ok(idm_crypto::hmac_sha256(&key, email.canonical().as_bytes()).to_vec())
    }
}
