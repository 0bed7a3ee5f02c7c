//! `Idempotency-Key` on `POST /admin/v1/accounts` (the operator's creating
//! route), with the semantics of the edge's (docs/OPENAPI.md): a retry with
//! the same key and body within 24 hours answers with the first answer; the
//! same key with another body is `409 idempotency_conflict`; while the first
//! runs, `409 idempotency_in_progress`. The record is a row of
//! `account.idempotency_keys` (this service has PostgreSQL and no Redis),
//! named by a hash of the key and holding the answer sealed under a key
//! derived from the client's key, which the database never sees (the answer
//! carries the account's first secret key).

use crate::Error;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use idm_core::{ApiError, ErrorCode};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};
use std::future::Future;

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;

/// The client's key, when the request has one.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_KEY_LEN)
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .map(|t| Some(t.to_owned()))
        .ok_or_else(|| {
            ApiError::invalid_request(
                "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            )
        })
}

fn derive(purpose: &str, key: &str) -> [u8; 32] {
    let mut data = Vec::with_capacity(purpose.len() + key.len() + 12);
    data.extend_from_slice(purpose.as_bytes());
    data.push(0);
    data.extend_from_slice(b"operator");
    data.push(0);
    data.extend_from_slice(key.as_bytes());
    idm_crypto::sha256(&data)
}

fn db(e: impl Into<DbError>) -> ApiError {
    ApiError::from(Error::Db(e.into()))
}

/// Runs `create` once per key and fingerprint; replays its answer after.
pub async fn run<F, Fut>(
    state: &crate::State,
    key: &str,
    fingerprint: &[u8],
    create: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let name = hex_of(&derive("idmesh/idempotency/name/v1", key));
    let sealing =
        idm_crypto::aead::MasterKey::from_key_bytes(&derive("idmesh/idempotency/seal/v1", key));
    let fingerprint = idm_crypto::sha256_hex(fingerprint);
    let client = state.db.get().await.map_err(db)?;
    sqlx::query!(
        "DELETE FROM account.idempotency_keys WHERE key_hash = $1 AND expires_at < now()",
        &name,
    )
    .execute(&mut *client.conn().await)
    .await
    .map_err(db)?;
    let claimed = sqlx::query!(
        "INSERT INTO account.idempotency_keys (key_hash, fingerprint, expires_at)
             VALUES ($1, $2, now() + interval '120 seconds') ON CONFLICT DO NOTHING",
        &name,
        &fingerprint,
    )
    .execute(&mut *client.conn().await)
    .await
    .map_err(db)?
    .rows_affected()
        == 1;
    if !claimed {
        let row = sqlx::query!(
            "SELECT fingerprint, sealed FROM account.idempotency_keys WHERE key_hash = $1",
            &name,
        )
        .fetch_optional(&mut *client.conn().await)
        .await
        .map_err(db)?;
        let in_progress = || {
            ApiError::new(
                ErrorCode::IdempotencyInProgress,
                "a request with this Idempotency-Key is still running; retry later",
            )
            .with_details(serde_json::json!({ "retry_after": 1 }))
        };
        let Some(row) = row else {
            return Err(in_progress());
        };
        let stored: String = row.fingerprint;
        if !idm_crypto::ct_eq(stored.as_bytes(), fingerprint.as_bytes()) {
            return Err(ApiError::new(
                ErrorCode::IdempotencyConflict,
                "this Idempotency-Key was used with another request",
            ));
        }
        let Some(sealed) = row.sealed else {
            return Err(in_progress());
        };
        let plain = sealing
            .open(&sealed, name.as_bytes())
            .map_err(|e| ApiError::internal_from(&e))?;
        let (status, body): (u16, serde_json::Value) =
            serde_json::from_slice(&plain).map_err(|e| ApiError::internal_from(&e))?;
        let mut response = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            axum::Json(body),
        )
            .into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }
    match create().await {
        Ok((status, body)) => {
            let plain = zeroize::Zeroizing::new(
                serde_json::to_vec(&(status.as_u16(), &body))
                    .map_err(|e| ApiError::internal_from(&e))?,
            );
            let sealed = sealing
                .seal(&plain, name.as_bytes())
                .map_err(|e| ApiError::internal_from(&e))?;
            // The account exists now: failing to keep the answer must not
            // fail this attempt (a retry would create again, as without the
            // header; the log says so).
            if let Err(e) = sqlx::query!(
                "UPDATE account.idempotency_keys
                     SET sealed = $2, expires_at = now() + interval '24 hours'
                     WHERE key_hash = $1",
                &name,
                &sealed,
            )
            .execute(&mut *client.conn().await)
            .await
            {
                tracing::error!(error = %e, "idempotency: the answer could not be kept");
            }
            Ok((status, axum::Json(body)).into_response())
        }
        Err(error) => {
            // Nothing was created: a retry runs again.
            let _ = sqlx::query!(
                "DELETE FROM account.idempotency_keys WHERE key_hash = $1",
                &name,
            )
            .execute(&mut *client.conn().await)
            .await;
            Err(error)
        }
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
