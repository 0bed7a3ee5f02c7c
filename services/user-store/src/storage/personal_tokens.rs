//! Personal access tokens: only the SHA-256 of a token is stored.

use super::{corrupt, IssuerStore};
use crate::Error;
use idm_core::page::Page;
use idm_core::proto::store::{CreatePersonalToken, PersonalToken};
use idm_core::{ApiError, PersonalTokenId, UserId};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};

/// A token's columns as stored (the statements below list them literally:
/// compile-time checked statements cannot be assembled from constants).
struct TokenRow {
    id: String,
    user_id: String,
    name: String,
    scopes: serde_json::Value,
    created_at: idm_core::Timestamp,
    expires_at: Option<idm_core::Timestamp>,
    revoked_at: Option<idm_core::Timestamp>,
    last_used_at: Option<idm_core::Timestamp>,
}

fn token(row: TokenRow) -> Result<PersonalToken, Error> {
    Ok(PersonalToken {
        id: PersonalTokenId::parse(&row.id).map_err(|_| corrupt())?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt())?,
        name: row.name,
        scopes: serde_json::from_value(row.scopes).map_err(|e| ApiError::internal_from(&e))?,
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        last_used_at: row.last_used_at,
    })
}

impl IssuerStore {
    pub async fn insert_personal_token(
        &self,
        t: &CreatePersonalToken,
    ) -> Result<Option<PersonalToken>, Error> {
        let scopes = serde_json::to_value(&t.scopes).map_err(|e| ApiError::internal_from(&e))?;
        let row = sqlx::query_as!(
TokenRow,
"INSERT INTO personal_tokens (id, user_id, name, scopes, token_hash, expires_at)
                     SELECT $1, id, $3, $4, $5, $6 FROM users WHERE id = $2
                     RETURNING id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at",
t.token_id.as_str(),
t.user_id.as_str(),
&t.name,
&scopes,
&t.token_hash,
t.expires_at,
)
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        row.map(token).transpose()
    }

    /// The user's tokens, newest first, a page at a time.
    pub async fn personal_tokens_of(
        &self,
        user: &UserId,
        page: &Page,
    ) -> Result<(Vec<PersonalToken>, bool), Error> {
        let (after_at, after_id) = match &page.starting_after {
            None => (None, None),
            Some(raw) => {
                let id = PersonalTokenId::parse(raw)?;
                let at = sqlx::query_scalar!(
                    "SELECT created_at FROM personal_tokens WHERE id = $1 AND user_id = $2",
                    id.as_str(),
                    user.as_str(),
                )
                .fetch_optional(&mut *self.client.conn().await)
                .await
                .map_err(DbError::from)?
                .ok_or_else(|| ApiError::not_found("personal_token"))?;
                (Some(at), Some(id))
            }
        };
        let rows = sqlx::query_as!(
TokenRow,
"SELECT id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at FROM personal_tokens
                     WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
                     ORDER BY created_at DESC, id DESC LIMIT $4",
user.as_str(),
after_at,
after_id.as_ref().map(PersonalTokenId::as_str),
page.fetch(),
)
        .fetch_all(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        let tokens = rows.into_iter().map(token).collect::<Result<_, _>>()?;
        Ok(page.cut(tokens))
    }

    pub async fn revoke_personal_token(
        &self,
        user: &UserId,
        id: &PersonalTokenId,
    ) -> Result<Option<PersonalToken>, Error> {
        let row = sqlx::query_as!(
TokenRow,
"UPDATE personal_tokens SET revoked_at = COALESCE(revoked_at, now())
                     WHERE id = $1 AND user_id = $2 RETURNING id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at",
id.as_str(),
user.as_str(),
)
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        row.map(token).transpose()
    }

    /// The live token with this hash (not revoked, not expired), marking it used.
    pub async fn use_personal_token(&self, hash: &str) -> Result<Option<PersonalToken>, Error> {
        let row = sqlx::query_as!(
TokenRow,
"UPDATE personal_tokens SET last_used_at = now()
                     WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                     RETURNING id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at",
hash,
)
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        row.map(token).transpose()
    }
}
