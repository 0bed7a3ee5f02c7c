//! TOTP state and backup codes. Secrets arrive sealed by the auth service and
//! are stored sealed; replay protection and single use are enforced here with
//! conditional updates, so two concurrent uses cannot both succeed.

use super::IssuerStore;
use crate::Error;
use idm_core::proto::store::{Credentials, EmailProven, TotpState};
use idm_core::{ApiError, UserId};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};

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
