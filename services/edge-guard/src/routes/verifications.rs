//! The verification API: either key (restricted keys origin-checked).

use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::Json;
use idm_core::proto::auth::{
    CheckVerification, SendVerification, VerificationResult, VerificationStarted,
};
use idm_core::proto::SecretText;
use idm_core::{ApiError, Email};
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Start {
    #[schema(format = Email)]
    email: String,
}

/// Sends a one-time code to the address; nothing about it is kept.
#[utoipa::path(post, path = "/v1/verifications", tag = "verifications", request_body = Start,
    responses((status = 202, description = "The code was sent", body = VerificationStarted)))]
pub async fn start(
    incoming: Incoming,
    request: Result<Json<Start>, JsonRejection>,
) -> Reply<(StatusCode, Json<VerificationStarted>)> {
    let caller = incoming.authorize().await?;
    let email = incoming
        .app
        .waf
        .check_email(&caller.key.policy, &body(request)?.email)?;
    incoming.app.waf.allow_send(&caller.key, &email).await?;
    let started = incoming
        .app
        .bus
        .send(&SendVerification {
            ctx: caller.ctx(),
            email,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    id: String,
    /// The address the code was sent to, presented again: nothing stored
    /// holds it.
    #[schema(format = Email)]
    email: String,
    code: SecretText,
}

/// Checks a code; success erases it and answers with a signed result.
#[utoipa::path(post, path = "/v1/verifications/check", tag = "verifications", request_body = Check,
    responses((status = 200, description = "The address is verified", body = VerificationResult)))]
pub async fn check(
    incoming: Incoming,
    request: Result<Json<Check>, JsonRejection>,
) -> Reply<Json<VerificationResult>> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    let email = Email::parse(&request.email)?;
    if request.id.len() > 64 || request.code.expose().len() > 32 {
        return Err(
            ApiError::new(idm_core::ErrorCode::CodeInvalid, "the code is not valid").into(),
        );
    }
    let call = CheckVerification {
        ctx: caller.ctx(),
        id: request.id,
        email,
        code: request.code,
    };
    Ok(Json(incoming.app.bus.send(&call).await?))
}
