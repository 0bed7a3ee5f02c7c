//! Profile changes: name and metadata, the address (once the new one is
//! proven), removing the password, and reading a page of users at once.

use super::{IssuerStore, UserRow};
use crate::Error;
use idm_core::{ApiError, Email, UserId};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};

impl IssuerStore {
    /// Sets each field given (`name: Some(None)` clears the name).
    pub async fn update_profile(
        &self,
        id: &UserId,
        name: Option<Option<&str>>,
        metadata: Option<&serde_json::Value>,
    ) -> Result<Option<UserRow>, DbError> {
        Ok(sqlx::query_as!(
            UserRow,
            "UPDATE users SET
                 name = CASE WHEN $2 THEN $3 ELSE name END,
                 metadata = COALESCE($4, metadata),
                 updated_at = now()
               WHERE id = $1
               RETURNING id, email, email_verified, name, metadata, mfa_enabled, created_at",
            id.as_str(),
            name.is_some(),
            name.flatten(),
            metadata,
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await?)
    }

    /// The users among `ids` that this store holds.
    pub async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRow>, DbError> {
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        Ok(sqlx::query_as!(
            UserRow,
            "SELECT id, email, email_verified, name, metadata, mfa_enabled, created_at
               FROM users WHERE id = ANY($1)",
            &ids,
        )
        .fetch_all(&mut *self.client.conn().await)
        .await?)
    }

    /// The proven new address replaces the old one, verified.
    pub async fn change_email(
        &self,
        id: &UserId,
        email: &Email,
    ) -> Result<Option<UserRow>, DbError> {
        Ok(sqlx::query_as!(
            UserRow,
            "UPDATE users SET email = $2, email_canonical = $3, email_verified = true, updated_at = now()
               WHERE id = $1
               RETURNING id, email, email_verified, name, metadata, mfa_enabled, created_at",
            id.as_str(),
            email.as_str(),
            email.canonical(),
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await?)
    }

    /// Removes the password, only while the address is verified (magic
    /// links and email codes still sign the user in). `not_found` for an
    /// unknown user, `conflict` when it would leave no way in.
    pub async fn remove_password(&self, id: &UserId) -> Result<(), Error> {
        let row = sqlx::query!(
            "SELECT email_verified, password_hash IS NOT NULL AS \"has_password!\" FROM users WHERE id = $1",
            id.as_str(),
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| ApiError::not_found("user"))?;
        if !row.has_password {
            return Err(ApiError::conflict("the user has no password").into());
        }
        let done = sqlx::query!(
            "UPDATE users SET password_hash = NULL, updated_at = now()
               WHERE id = $1 AND email_verified",
            id.as_str(),
        )
        .execute(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?
        .rows_affected();
        if done == 0 {
            return Err(ApiError::conflict(
                "the password is the only way to sign in: verify the address first (magic link or email code)",
            )
            .into());
        }
        Ok(())
    }
}
