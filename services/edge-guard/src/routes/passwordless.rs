//! Magic links, email codes and the second factor: client routes.

use super::client::session_response;
use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use idm_core::proto::auth::{
    self, Authenticated, BackupCodes, ConfirmTotp, SessionUser, TotpEnrollment,
};
use idm_core::proto::SecretText;
use idm_core::ApiError;
use serde::Deserialize;

pub(super) fn too_long(secret: &SecretText, max: usize) -> Result<(), ApiError> {
    if secret.expose().len() > max {
        Err(ApiError::new(
            idm_core::ErrorCode::CodeInvalid,
            "the code is not valid",
        ))
    } else {
        Ok(())
    }
}

type Accepted = Reply<(StatusCode, Json<serde_json::Value>)>;

/// Hands a send to auth and answers `202`: the same answer whether or not the
/// address has an account, so sending never reveals who is registered.
async fn accepted(incoming: &Incoming, op: &str, call: &impl serde::Serialize) -> Accepted {
    let _: idm_core::proto::Done = incoming.app.bus.call("auth", op, call).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "sent": true })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkRequest {
    email: String,
    redirect_url: String,
}

pub async fn send_magic_link(
    incoming: Incoming,
    request: Result<Json<MagicLinkRequest>, JsonRejection>,
) -> Accepted {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    let email = incoming
        .app
        .waf
        .check_email(&caller.key.policy, &request.email)?;
    let redirect_url = crate::redirect::check_redirect(
        &caller.key.policy,
        &caller.key.allowed_origins,
        &request.redirect_url,
    )?;
    incoming.app.waf.allow_send(&caller.key, &email).await?;
    let call = auth::SendMagicLink {
        ctx: caller.ctx(),
        email,
        redirect_url,
        device: caller.device(),
    };
    accepted(&incoming, auth::SEND_MAGIC_LINK, &call).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeOnly {
    code: SecretText,
}

pub async fn verify_magic_link(
    incoming: Incoming,
    request: Result<Json<CodeOnly>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    too_long(&request.code, 128)?;
    let call = auth::VerifyMagicLink {
        ctx: caller.ctx(),
        code: request.code,
        device: caller.device(),
    };
    let signed_in: Authenticated = incoming
        .app
        .bus
        .call("auth", auth::VERIFY_MAGIC_LINK, &call)
        .await?;
    Ok(session_response(&incoming.app, StatusCode::OK, signed_in))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailOnly {
    email: String,
}

pub async fn send_email_code(
    incoming: Incoming,
    request: Result<Json<EmailOnly>, JsonRejection>,
) -> Accepted {
    let caller = incoming.authorize().await?;
    let email = incoming
        .app
        .waf
        .check_email(&caller.key.policy, &body(request)?.email)?;
    incoming.app.waf.allow_send(&caller.key, &email).await?;
    let call = auth::SendEmailCode {
        ctx: caller.ctx(),
        email,
        device: caller.device(),
    };
    accepted(&incoming, auth::SEND_EMAIL_CODE, &call).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailAndCode {
    email: String,
    code: SecretText,
}

pub async fn verify_email_code(
    incoming: Incoming,
    request: Result<Json<EmailAndCode>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    let email = incoming
        .app
        .waf
        .check_email(&caller.key.policy, &request.email)?;
    too_long(&request.code, 32)?;
    let call = auth::VerifyEmailCode {
        ctx: caller.ctx(),
        email,
        code: request.code,
        device: caller.device(),
    };
    let signed_in: Authenticated = incoming
        .app
        .bus
        .call("auth", auth::VERIFY_EMAIL_CODE, &call)
        .await?;
    Ok(session_response(&incoming.app, StatusCode::OK, signed_in))
}

pub(super) async fn session_user(incoming: &Incoming) -> Result<SessionUser, ApiError> {
    let caller = incoming.authorize().await?;
    let claims = incoming.session(&caller).await?;
    Ok(SessionUser {
        ctx: caller.ctx(),
        user_id: claims.sub,
        region: claims.reg,
        session_id: claims.sid,
    })
}

pub async fn enroll_totp(incoming: Incoming) -> Reply<Json<TotpEnrollment>> {
    let session = session_user(&incoming).await?;
    Ok(Json(
        incoming
            .app
            .bus
            .call("auth", auth::ENROLL_TOTP, &session)
            .await?,
    ))
}

/// The new authenticator's code, plus a step-up proof when it replaces an
/// enabled one (the fields of `credentials::StepUpBody`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotpBody {
    code: SecretText,
    totp_code: Option<SecretText>,
    backup_code: Option<SecretText>,
    current_password: Option<SecretText>,
    email_code: Option<SecretText>,
}

pub async fn confirm_totp(
    incoming: Incoming,
    request: Result<Json<ConfirmTotpBody>, JsonRejection>,
) -> Reply<Json<BackupCodes>> {
    let session = session_user(&incoming).await?;
    let request = body(request)?;
    too_long(&request.code, 32)?;
    let step_up = super::credentials::StepUpBody {
        current_password: request.current_password,
        totp_code: request.totp_code,
        backup_code: request.backup_code,
        email_code: request.email_code,
    }
    .checked()?;
    let call = ConfirmTotp {
        session,
        code: request.code,
        step_up,
    };
    Ok(Json(
        incoming
            .app
            .bus
            .call("auth", auth::CONFIRM_TOTP, &call)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaRequest {
    mfa_token: SecretText,
    code: Option<SecretText>,
    backup_code: Option<SecretText>,
}

pub async fn verify_mfa(
    incoming: Incoming,
    request: Result<Json<MfaRequest>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    too_long(&request.mfa_token, 128)?;
    for code in request.code.iter().chain(request.backup_code.iter()) {
        too_long(code, 32)?;
    }
    let call = auth::VerifyMfa {
        ctx: caller.ctx(),
        mfa_token: request.mfa_token,
        code: request.code,
        backup_code: request.backup_code,
        device: caller.device(),
    };
    let signed_in: Authenticated = incoming
        .app
        .bus
        .call("auth", auth::VERIFY_MFA, &call)
        .await?;
    Ok(session_response(&incoming.app, StatusCode::OK, signed_in))
}
