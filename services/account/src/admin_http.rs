//! The operator API on the account service's own port.

use crate::provisioning::{self, NewIssuer};
use crate::State;
use axum::extract::rejection::JsonRejection;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use idm_core::text::DisplayName;
use idm_core::{AccountId, ApiError, ErrorCode, KeyMode, Scope};
use idm_telemetry::http::HttpError;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::sync::Arc;

pub fn routes(state: Arc<State>) -> Router {
    Router::new()
        .route("/admin/v1/accounts", post(create_account))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    name: String,
}

fn operator(state: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Hash both sides so the comparison is constant-time in the length too.
    let expected = idm_crypto::sha256(state.operator_token.expose_secret().as_bytes());
    if idm_crypto::ct_eq(&idm_crypto::sha256(given.as_bytes()), &expected) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "a valid operator token is required",
        ))
    }
}

async fn create_account(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Json<NewAccount>, JsonRejection>,
) -> Result<axum::response::Response, HttpError> {
    operator(&state, &headers)?;
    let Json(body) = body.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let Some(key) = crate::idempotency::key(&headers)? else {
        let (status, created) = new_account(&state, body).await?;
        return Ok((status, Json(created)).into_response());
    };
    // The request as parsed: the same name is the same request.
    let fingerprint = body.name.clone();
    Ok(
        crate::idempotency::run(&state, &key, fingerprint.as_bytes(), || {
            new_account(&state, body)
        })
        .await?,
    )
}

async fn new_account(
    state: &State,
    body: NewAccount,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let name = DisplayName::parse("name", &body.name)?;
    let account = AccountId::generate();
    let NewIssuer {
        issuer,
        secret_key,
        restricted_key,
    } = provisioning::create_issuer(
        state,
        &account,
        Some(name.as_str()),
        format!("{} (live)", name.as_str()),
        KeyMode::Live,
        Scope::all(),
        true,
    )
    .await
    .map_err(ApiError::from)?;
    let created_at = issuer.created_at;
    Ok((
        StatusCode::CREATED,
        serde_json::json!({
            "account": { "id": account, "name": name.as_str(), "created_at": created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default() },
            "issuer": issuer,
            "secret_key": secret_key,
            "restricted_key": restricted_key,
        }),
    ))
}
