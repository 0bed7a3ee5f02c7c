//! The public HTTP API (API.md), one module per resource. Each handler
//! authorises first, turns the body into domain types, then makes one bus call.

mod api_keys;
mod client;
mod issuer;
mod passwordless;
mod personal_tokens;
mod sessions;
mod users;
mod verifications;

use crate::App;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use idm_core::{ApiError, ErrorCode};
use idm_telemetry::http::HttpError;
use std::sync::Arc;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/v1/issuer",
            get(issuer::get_issuer).patch(issuer::update_issuer),
        )
        .route("/v1/issuers", post(issuer::create_issuer))
        .route("/v1/api_keys", post(api_keys::create).get(api_keys::list))
        .route("/v1/api_keys/{id}", delete(api_keys::revoke))
        .route("/v1/users", post(users::create).get(users::find_by_email))
        .route("/v1/users/{id}", get(users::get))
        .route("/v1/sessions/verify", post(sessions::verify))
        .route("/v1/sessions/{id}/revoke", post(sessions::revoke))
        .route("/v1/users/{id}/sessions", get(sessions::list_for_user))
        .route(
            "/v1/users/{id}/sessions/revoke_all",
            post(sessions::revoke_all),
        )
        .route(
            "/v1/session_keys/rotate",
            post(sessions::rotate_signing_key),
        )
        .route(
            "/v1/session_keys/revoke",
            post(sessions::revoke_signing_keys),
        )
        .route(
            "/v1/users/{id}/personal_tokens",
            post(personal_tokens::create).get(personal_tokens::list),
        )
        .route(
            "/v1/users/{id}/personal_tokens/{token_id}",
            delete(personal_tokens::revoke),
        )
        .route("/v1/personal_tokens/verify", post(personal_tokens::verify))
        .route("/v1/client/token/refresh", post(client::refresh))
        .route("/v1/client/sign_out", post(client::sign_out))
        .route("/v1/client/sessions", get(client::my_sessions))
        .route(
            "/v1/client/magic_links",
            post(passwordless::send_magic_link),
        )
        .route(
            "/v1/client/magic_links/verify",
            post(passwordless::verify_magic_link),
        )
        .route(
            "/v1/client/email_codes",
            post(passwordless::send_email_code),
        )
        .route(
            "/v1/client/email_codes/verify",
            post(passwordless::verify_email_code),
        )
        .route("/v1/client/mfa/totp", post(passwordless::enroll_totp))
        .route(
            "/v1/client/mfa/totp/confirm",
            post(passwordless::confirm_totp),
        )
        .route("/v1/client/mfa/verify", post(passwordless::verify_mfa))
        .route("/v1/verifications", post(verifications::start))
        .route("/v1/verifications/check", post(verifications::check))
        .route("/v1/client/sign_up", post(client::sign_up))
        .route("/v1/client/sign_in", post(client::sign_in))
        .route("/v1/client/me", get(client::me))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn not_found() -> HttpError {
    HttpError(ApiError::not_found("route"))
}

async fn method_not_allowed() -> HttpError {
    HttpError(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    ))
}

/// A JSON body, or the stable error for why it is not one: too large is
/// `payload_too_large`, anything else malformed is `invalid_request`.
pub fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match parsed {
        Ok(Json(value)) => Ok(value),
        Err(rejection) if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE => Err(
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large"),
        ),
        Err(rejection) => Err(ApiError::invalid_request(rejection.body_text())),
    }
}

pub fn query<T>(parsed: Result<axum::extract::Query<T>, QueryRejection>) -> Result<T, ApiError> {
    parsed
        .map(|q| q.0)
        .map_err(|e| ApiError::invalid_request(e.body_text()))
}

pub type Reply<T> = Result<T, HttpError>;
