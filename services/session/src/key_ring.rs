//! Per-issuer signing keys: 32 random bytes each, sealed under the master
//! key with the issuer and key id as associated data. The newest key signs;
//! a rotated-out key keeps verifying for the longest token lifetime (one
//! day), then drops out of the ring. An emergency revocation takes every key
//! out of the ring at once and records the instant, before which no session
//! of the issuer may be refreshed any more.

use crate::Error;
use idm_core::{ApiError, IssuerId};
use idm_crypto::session_token::RingKey;
use idm_crypto::MasterKeys;
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};
use std::sync::Arc;

/// An issuer's keys, newest (the signing key) first.
pub struct Ring {
    pub keys: Vec<RingKey>,
    /// The latest emergency revocation: sessions created at or before it are
    /// dead (read together with the keys, so a refresh that signs with the
    /// new key always sees the revocation that created it).
    pub sessions_not_before: Option<idm_core::Timestamp>,
}

impl Ring {
    pub fn current(&self) -> Option<&RingKey> {
        self.keys.first()
    }

    pub fn find(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

pub struct KeyRings {
    db: Db,
    master: MasterKeys,
    cache: moka::future::Cache<IssuerId, Arc<Ring>>,
}

fn aad(issuer: &IssuerId, kid: &str) -> Vec<u8> {
    format!("{issuer}/{kid}").into_bytes()
}

/// Opens a signing key as stored in `session_keys.keys` (for operators'
/// tooling and tests that must act as an attacker holding the real key).
pub fn open_stored_key(
    master: &MasterKeys,
    issuer: &IssuerId,
    kid: &str,
    sealed: &[u8],
) -> Result<RingKey, idm_crypto::CryptoError> {
    open_with(master, issuer, kid, sealed).map(|(key, _)| key)
}

/// Opens a stored signing key with the current or the previous master key;
/// `true` when the row needs a re-seal.
fn open_with(
    master: &MasterKeys,
    issuer: &IssuerId,
    kid: &str,
    sealed: &[u8],
) -> Result<(RingKey, bool), idm_crypto::CryptoError> {
    let opened = master.open(sealed, &aad(issuer, kid))?;
    let needs_reseal = opened.needs_reseal();
    let secret: [u8; 32] = opened
        .plaintext
        .as_slice()
        .try_into()
        .map_err(|_| idm_crypto::CryptoError::Unseal)?;
    Ok((
        RingKey {
            kid: kid.to_owned(),
            secret: zeroize::Zeroizing::new(secret),
        },
        needs_reseal,
    ))
}

/// What an emergency revocation did.
pub struct Revocation {
    pub new_kid: String,
    pub revoked_kids: Vec<String>,
    pub sessions_not_before: idm_core::Timestamp,
}

impl KeyRings {
    pub fn new(db: Db, master: MasterKeys) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(std::time::Duration::from_secs(60))
            .build();
        Self { db, master, cache }
    }

    /// Gives the issuer its first key unless it already has one.
    pub async fn ensure_key(&self, issuer: &IssuerId) -> Result<(), Error> {
        let kid = format!("k{}", hex::encode(idm_crypto::random_bytes::<8>()));
        let secret = idm_crypto::random_bytes::<32>();
        let sealed = self.master.seal(&secret, &aad(issuer, &kid))?;
        let mut client = self.db.get().await?;
        let tx = client.transaction().await?;
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            issuer.as_str(),
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        sqlx::query!(
"INSERT INTO session_keys.keys (kid, issuer_id, sealed_secret)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM session_keys.keys WHERE issuer_id = $2)",
&kid,
issuer.as_str(),
&sealed,
)
                 .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        tx.commit().await?;
        self.cache.invalidate(issuer).await;
        Ok(())
    }

    /// A new signing key for the issuer; the previous one only verifies now.
    pub async fn rotate(&self, issuer: &IssuerId) -> Result<(String, idm_core::Timestamp), Error> {
        let kid = format!("k{}", hex::encode(idm_crypto::random_bytes::<8>()));
        let sealed = self
            .master
            .seal(&idm_crypto::random_bytes::<32>(), &aad(issuer, &kid))?;
        let mut client = self.db.get().await?;
        let tx = client.transaction().await?;
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            issuer.as_str(),
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        let retired = sqlx::query!(
"UPDATE session_keys.keys SET retired_at = now() WHERE issuer_id = $1 AND retired_at IS NULL",
issuer.as_str(),
)
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        if retired == 0 {
            return Err(ApiError::not_found("issuer").into());
        }
        let row = sqlx::query!(
"INSERT INTO session_keys.keys (kid, issuer_id, sealed_secret) VALUES ($1, $2, $3) RETURNING created_at",
&kid,
issuer.as_str(),
&sealed,
)
            .fetch_one(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
        tx.commit().await?;
        self.cache.invalidate(issuer).await;
        Ok((kid, row.created_at))
    }

    /// Emergency: every key of the issuer stops verifying now (not after a
    /// day, as with [`rotate`](Self::rotate)), a fresh key signs from now on,
    /// and sessions created until now can no longer be refreshed.
    pub async fn revoke_all(&self, issuer: &IssuerId) -> Result<Revocation, Error> {
        let kid = format!("k{}", hex::encode(idm_crypto::random_bytes::<8>()));
        let sealed = self
            .master
            .seal(&idm_crypto::random_bytes::<32>(), &aad(issuer, &kid))?;
        let mut client = self.db.get().await?;
        let tx = client.transaction().await?;
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            issuer.as_str(),
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        let revoked = sqlx::query!(
            "UPDATE session_keys.keys
                 SET revoked_at = now(), retired_at = coalesce(retired_at, now())
                 WHERE issuer_id = $1 AND revoked_at IS NULL
                 RETURNING kid",
            issuer.as_str(),
        )
        .fetch_all(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        if revoked.is_empty() {
            return Err(ApiError::not_found("issuer").into());
        }
        let row = sqlx::query!(
"INSERT INTO session_keys.keys (kid, issuer_id, sealed_secret) VALUES ($1, $2, $3) RETURNING created_at",
&kid,
issuer.as_str(),
&sealed,
)
            .fetch_one(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
        tx.commit().await?;
        self.cache.invalidate(issuer).await;
        let mut revoked_kids: Vec<String> = revoked.into_iter().map(|r| r.kid).collect();
        revoked_kids.sort();
        Ok(Revocation {
            new_kid: kid,
            revoked_kids,
            // `now()` is the transaction's start: the same instant as revoked_at.
            sessions_not_before: row.created_at,
        })
    }

    pub async fn forget(&self, issuer: &IssuerId) {
        self.cache.invalidate(issuer).await;
    }

    pub fn master(&self) -> &MasterKeys {
        &self.master
    }

    /// Re-seals one row under the current master key, compare-and-swap on
    /// the value read (another replica that got there first wins; `false`).
    async fn reseal_row(&self, issuer: &IssuerId, kid: &str, old: &[u8]) -> Result<bool, Error> {
        let Some(new) = self.master.reseal(old, &aad(issuer, kid))? else {
            return Ok(false);
        };
        let done = sqlx::query!(
            "UPDATE session_keys.keys SET sealed_secret = $3 WHERE kid = $1 AND sealed_secret = $2",
            kid,
            old,
            &new,
        )
        .execute(&mut *self.db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        Ok(done == 1)
    }

    /// One pass over every stored signing key: each not yet sealed under the
    /// current master key (with its key id) is re-sealed. Idempotent and safe
    /// with several replicas running it at once (compare-and-swap per row).
    pub async fn reseal_all(&self) -> Result<idm_crypto::keyring::ResealPass, Error> {
        let rows = sqlx::query!(
            "SELECT kid, issuer_id, sealed_secret FROM session_keys.keys ORDER BY kid",
        )
        .fetch_all(&mut *self.db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?;
        let mut pass = idm_crypto::keyring::ResealPass::default();
        for row in rows {
            if self.master.is_current(&row.sealed_secret) {
                continue;
            }
            let Ok(issuer) = IssuerId::parse(&row.issuer_id) else {
                pass.unreadable += 1;
                continue;
            };
            match self.reseal_row(&issuer, &row.kid, &row.sealed_secret).await {
                Ok(true) => pass.resealed += 1,
                // Changed meanwhile: every writer seals under the current key.
                Ok(false) => {}
                Err(Error::Crypto(_)) => pass.unreadable += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(pass)
    }

    pub async fn ring(&self, issuer: &IssuerId) -> Result<Arc<Ring>, Error> {
        let load = async {
            // One statement, so the keys and the latest revocation are one snapshot.
            let rows = sqlx::query!(
"SELECT kid, sealed_secret,
                            (SELECT max(revoked_at) FROM session_keys.keys WHERE issuer_id = $1) AS latest_revocation
                     FROM session_keys.keys
                     WHERE issuer_id = $1 AND revoked_at IS NULL
                       AND (retired_at IS NULL OR retired_at > now() - interval '1 day')
                     ORDER BY created_at DESC, kid",
issuer.as_str(),
)
            .fetch_all(&mut *self.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?;
            let mut keys = Vec::with_capacity(rows.len());
            let mut sessions_not_before = None;
            for row in rows {
                sessions_not_before = row.latest_revocation;
                let kid: String = row.kid;
                let sealed: Vec<u8> = row.sealed_secret;
                let (key, needs_reseal) = open_with(&self.master, issuer, &kid, &sealed)
                    .inspect_err(|e| {
                        tracing::error!(issuer = %issuer, kid = %kid, error = %e, "a signing key does not open");
                    })?;
                if needs_reseal {
                    // Re-seal on read; the background pass catches the rest.
                    if let Err(e) = self.reseal_row(issuer, &kid, &sealed).await {
                        tracing::warn!(issuer = %issuer, error = %e, "signing key not re-sealed");
                    }
                }
                keys.push(key);
            }
            if keys.is_empty() {
                return Err(ApiError::not_found("issuer").into());
            }
            Ok::<_, Error>(Arc::new(Ring {
                keys,
                sessions_not_before,
            }))
        };
        self.cache
            .try_get_with(issuer.clone(), load)
            .await
            .map_err(|e| match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(shared) => Error::Api(ApiError::internal_from(&shared)),
            })
    }
}
