//! TOTP state and backup codes. Secrets arrive sealed by the auth service and
//! are stored sealed; replay protection and single use are enforced here with
//! conditional updates, so two concurrent uses cannot both succeed.

use super::IssuerStore;
use crate::Error;
use idm_core::proto::store::{
    Credentials, EmailProven, SealedTotp, SealedTotpCursor, SealedTotpPage, TotpSlot, TotpState,
};
use idm_core::{ApiError, IssuerId, UserId};
use idm_db::sqlx::{self, AssertSqlSafe, Row as _};
use idm_db::{Db, DbError, GenericClient};

/// The most users one page of sealed TOTP secrets may hold.
pub const MAX_SEALED_TOTP_PAGE: u32 = 500;
/// Issuer schemas read by one statement.
const SCHEMAS_PER_STATEMENT: usize = 64;

/// Users of every issuer in this region holding a sealed TOTP secret, in
/// (issuer, user) order after `after`: what auth's re-seal pass walks after
/// a master-key rotation. Schema-qualified, one issuer per `UNION` arm.
pub async fn sealed_totp(
    db: &Db,
    after: Option<&SealedTotpCursor>,
    limit: u32,
) -> Result<SealedTotpPage, Error> {
    let limit = limit.clamp(1, MAX_SEALED_TOTP_PAGE) as usize;
    let pool = db.pool();
    let from_schema = after
        .map(|c| c.issuer_id.store_schema())
        .unwrap_or_default();
    let after_user = after.map(|c| c.user_id.as_str()).unwrap_or_default();
    let schemas = sqlx::query_scalar!(
        r#"SELECT nspname::text AS "nspname!" FROM pg_namespace
           WHERE nspname LIKE 'iss\_%' AND nspname >= ($1::text)::name ORDER BY nspname"#,
        from_schema,
    )
    .fetch_all(pool)
    .await
    .map_err(DbError::from)?;
    let mut data = Vec::new();
    for chunk in schemas.chunks(SCHEMAS_PER_STATEMENT) {
        let remaining = (limit - data.len()) as i64;
        let mut arms = Vec::with_capacity(chunk.len());
        for schema in chunk {
            let schema = idm_db::safe_identifier(schema)?;
            arms.push(format!(
                "(SELECT '{schema}'::text AS schema, id, totp_pending_sealed, totp_secret_sealed
                  FROM {schema}.users
                  WHERE (totp_pending_sealed IS NOT NULL OR totp_secret_sealed IS NOT NULL)
                    AND ('{schema}' <> $1 OR id COLLATE \"C\" > $2)
                  ORDER BY id COLLATE \"C\" LIMIT $3)"
            ));
        }
        let sql = format!(
            "SELECT schema, id, totp_pending_sealed, totp_secret_sealed FROM ({}) AS sealed
             ORDER BY schema COLLATE \"C\", id COLLATE \"C\" LIMIT $3",
            arms.join(" UNION ALL ")
        );
        // Schema names are interpolated (checked by safe_identifier above):
        // a statement over a dynamic set of schemas cannot be compile-time
        // checked, so this one stays a runtime query.
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&from_schema)
            .bind(after_user)
            .bind(remaining)
            .fetch_all(pool)
            .await
            .map_err(DbError::from)?;
        for row in &rows {
            let Ok(issuer_id) = IssuerId::parse(row.get(0)) else {
                continue; // a schema named like an issuer that is not one
            };
            data.push(SealedTotp {
                issuer_id,
                user_id: UserId::parse(row.get(1)).map_err(|_| super::corrupt())?,
                pending_sealed: row.get(2),
                active_sealed: row.get(3),
            });
        }
        if data.len() >= limit {
            break;
        }
    }
    let next = (data.len() >= limit)
        .then(|| data.last())
        .flatten()
        .map(|last| SealedTotpCursor {
            issuer_id: last.issuer_id.clone(),
            user_id: last.user_id.clone(),
        });
    Ok(SealedTotpPage { data, next })
}

impl IssuerStore {
    /// Marks the address proven. The first proof of an unverified account
    /// also drops every credential set before it, in one transaction with the
    /// flag, so no request can see the account verified with an unproven
    /// password or authenticator still in place.
    pub async fn prove_email(&mut self, user: &UserId) -> Result<Option<EmailProven>, Error> {
        let tx = self.client.transaction().await?;
        let Some(row) = sqlx::query!(
            "SELECT email_verified, password_hash IS NOT NULL AS \"had_password!\",
                        mfa_enabled OR totp_pending_sealed IS NOT NULL AS \"had_mfa!\"
                 FROM users WHERE id = $1 FOR UPDATE",
            user.as_str(),
        )
        .fetch_optional(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?
        else {
            return Ok(None);
        };
        let (verified, had_password, had_mfa): (bool, bool, bool) =
            (row.email_verified, row.had_password, row.had_mfa);
        if verified {
            return Ok(Some(EmailProven {
                first_proof: false,
                password_cleared: false,
                mfa_cleared: false,
            }));
        }
        sqlx::query!(
            "UPDATE users SET email_verified = true, password_hash = NULL, mfa_enabled = false,
                    totp_secret_sealed = NULL, totp_pending_sealed = NULL, totp_last_step = NULL,
                    updated_at = now()
             WHERE id = $1",
            user.as_str(),
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        sqlx::query!("DELETE FROM backup_codes WHERE user_id = $1", user.as_str(),)
            .execute(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
        tx.commit().await?;
        Ok(Some(EmailProven {
            first_proof: true,
            password_cleared: had_password,
            mfa_cleared: had_mfa,
        }))
    }

    pub async fn credentials(&self, user: &UserId) -> Result<Option<Credentials>, Error> {
        let row = sqlx::query!(
"SELECT password_hash IS NOT NULL AS \"has_password!\", mfa_enabled, email_verified FROM users WHERE id = $1",
user.as_str(),
)
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        Ok(row.map(|r| Credentials {
            has_password: r.has_password,
            mfa_enabled: r.mfa_enabled,
            email_verified: r.email_verified,
        }))
    }

    /// Turns TOTP off and deletes the backup codes. `false` when it was not on.
    pub async fn disable_totp(&mut self, user: &UserId) -> Result<bool, Error> {
        let tx = self.client.transaction().await?;
        let n = sqlx::query!(
            "UPDATE users SET mfa_enabled = false, totp_secret_sealed = NULL,
                        totp_pending_sealed = NULL, updated_at = now()
                 WHERE id = $1 AND mfa_enabled",
            user.as_str(),
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        sqlx::query!("DELETE FROM backup_codes WHERE user_id = $1", user.as_str(),)
            .execute(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Replaces every backup code of a user whose TOTP is on. `false` otherwise.
    pub async fn replace_backup_codes(
        &mut self,
        user: &UserId,
        hashes: &[String],
    ) -> Result<bool, Error> {
        let tx = self.client.transaction().await?;
        let enabled = sqlx::query!(
            "SELECT 1 AS one FROM users WHERE id = $1 AND mfa_enabled FOR UPDATE",
            user.as_str(),
        )
        .fetch_optional(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?
        .is_some();
        if !enabled {
            return Ok(false);
        }
        set_backup_codes(&tx, user, hashes).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces a sealed TOTP secret if it still holds `old` (auth re-sealed
    /// it under its current master key). `false` when it changed meanwhile.
    pub async fn reseal_totp(
        &self,
        user: &UserId,
        slot: TotpSlot,
        old: &str,
        new: &str,
    ) -> Result<bool, Error> {
        let n = match slot {
            TotpSlot::Active => sqlx::query!(
                "UPDATE users SET totp_secret_sealed = $3 WHERE id = $1 AND totp_secret_sealed = $2",
                user.as_str(),
                old,
                new,
            )
            .execute(&mut *self.client.conn().await)
            .await,
            TotpSlot::Pending => sqlx::query!(
                "UPDATE users SET totp_pending_sealed = $3 WHERE id = $1 AND totp_pending_sealed = $2",
                user.as_str(),
                old,
                new,
            )
            .execute(&mut *self.client.conn().await)
            .await,
        }
        .map_err(DbError::from)?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn set_pending_totp(&self, user: &UserId, sealed: &str) -> Result<bool, Error> {
        let n = sqlx::query!(
            "UPDATE users SET totp_pending_sealed = $2, updated_at = now() WHERE id = $1",
            user.as_str(),
            sealed,
        )
        .execute(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn totp_state(&self, user: &UserId) -> Result<Option<TotpState>, Error> {
        let row = sqlx::query!(
"SELECT mfa_enabled, totp_pending_sealed, totp_secret_sealed, totp_last_step FROM users WHERE id = $1",
user.as_str(),
)
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        Ok(row.map(|r| TotpState {
            mfa_enabled: r.mfa_enabled,
            pending_sealed: r.totp_pending_sealed,
            active_sealed: r.totp_secret_sealed,
            last_step: r.totp_last_step,
        }))
    }

    /// Promotes the pending secret and replaces the backup codes, in one transaction.
    pub async fn enable_totp(
        &mut self,
        user: &UserId,
        backup_hashes: &[String],
        step: i64,
    ) -> Result<bool, Error> {
        let tx = self.client.transaction().await?;
        let n = sqlx::query!(
            "UPDATE users SET totp_secret_sealed = totp_pending_sealed, totp_pending_sealed = NULL,
                        totp_last_step = $2, mfa_enabled = true, updated_at = now()
                 WHERE id = $1 AND totp_pending_sealed IS NOT NULL",
            user.as_str(),
            step,
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        if n != 1 {
            return Err(ApiError::new(
                idm_core::ErrorCode::CodeInvalid,
                "there is no pending TOTP enrollment",
            )
            .into());
        }
        set_backup_codes(&tx, user, backup_hashes).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records `step` as used if it is later than every step used before.
    pub async fn use_totp_step(&self, user: &UserId, step: i64) -> Result<bool, Error> {
        let n = sqlx::query!(
"UPDATE users SET totp_last_step = $2 WHERE id = $1 AND mfa_enabled AND (totp_last_step IS NULL OR totp_last_step < $2)",
user.as_str(),
step,
)
        .execute(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn use_backup_code(&self, user: &UserId, hash: &str) -> Result<bool, Error> {
        let n = sqlx::query!(
"UPDATE backup_codes SET used_at = now() WHERE code_hash = $1 AND user_id = $2 AND used_at IS NULL",
hash,
user.as_str(),
)
        .execute(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        Ok(n == 1)
    }
}

/// Inside the caller's transaction: the user's backup codes become exactly
/// `hashes` (the old set is gone, so a code from it no longer works).
async fn set_backup_codes(
    tx: &idm_db::Transaction<'_>,
    user: &UserId,
    hashes: &[String],
) -> Result<(), DbError> {
    let mut conn = tx.conn().await;
    sqlx::query!("DELETE FROM backup_codes WHERE user_id = $1", user.as_str(),)
        .execute(&mut *conn)
        .await?;
    for hash in hashes {
        sqlx::query!(
            "INSERT INTO backup_codes (code_hash, user_id) VALUES ($1, $2)",
            hash,
            user.as_str(),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
