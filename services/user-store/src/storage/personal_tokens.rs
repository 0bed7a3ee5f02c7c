//! Personal access tokens: only the SHA-256 of a token is stored.

use super::{corrupt, IssuerStore};
use crate::Error;
use idm_core::proto::store::{CreatePersonalToken, PersonalToken};
use idm_core::{ApiError, PersonalTokenId, UserId};
use idm_db::sqlx::{self, AssertSqlSafe, Row as _};
use idm_db::{DbError, GenericClient, Row};

const COLUMNS: &str = "id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at";

fn token(row: &Row) -> Result<PersonalToken, Error> {
    Ok(PersonalToken {
        id: PersonalTokenId::parse(row.get(0)).map_err(|_| corrupt())?,
        user_id: UserId::parse(row.get(1)).map_err(|_| corrupt())?,
        name: row.get(2),
        scopes: serde_json::from_value(row.get(3)).map_err(|e| ApiError::internal_from(&e))?,
        created_at: row.get(4),
        expires_at: row.get(5),
        revoked_at: row.get(6),
        last_used_at: row.get(7),
    })
}

impl IssuerStore {
    pub async fn insert_personal_token(
        &self,
        t: &CreatePersonalToken,
    ) -> Result<Option<PersonalToken>, Error> {
        let scopes = serde_json::to_value(&t.scopes).map_err(|e| ApiError::internal_from(&e))?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO personal_tokens (id, user_id, name, scopes, token_hash, expires_at)
                     SELECT $1, id, $3, $4, $5, $6 FROM users WHERE id = $2
                     RETURNING {COLUMNS}"
        )))
        .bind(t.token_id.as_str())
        .bind(t.user_id.as_str())
        .bind(&t.name)
        .bind(&scopes)
        .bind(&t.token_hash)
        .bind(t.expires_at)
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        row.as_ref().map(token).transpose()
    }

    pub async fn personal_tokens_of(&self, user: &UserId) -> Result<Vec<PersonalToken>, Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM personal_tokens WHERE user_id = $1 ORDER BY created_at DESC"
        )))
        .bind(user.as_str())
        .fetch_all(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        rows.iter().map(token).collect()
    }

    pub async fn revoke_personal_token(
        &self,
        user: &UserId,
        id: &PersonalTokenId,
    ) -> Result<Option<PersonalToken>, Error> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE personal_tokens SET revoked_at = COALESCE(revoked_at, now())
                     WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
        )))
        .bind(id.as_str())
        .bind(user.as_str())
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        row.as_ref().map(token).transpose()
    }

    /// The live token with this hash (not revoked, not expired), marking it used.
    pub async fn use_personal_token(&self, hash: &str) -> Result<Option<PersonalToken>, Error> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE personal_tokens SET last_used_at = now()
                     WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                     RETURNING {COLUMNS}"
        )))
        .bind(hash)
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        row.as_ref().map(token).transpose()
    }
}
