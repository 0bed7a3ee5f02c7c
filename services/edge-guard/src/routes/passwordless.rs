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

type Accepted = Reply<(StatusCode, Json<Sent>)>;

/// The answer to a send: the same whether or not the address has an account.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Sent {
    sent: bool,
}

/// Hands a send to auth and answers `202`: the same answer whether or not the
/// address has an account, so sending never reveals who is registered.
async fn accepted<O>(incoming: &Incoming, call: &O) -> Accepted
where
    O: idm_bus::ServiceOperation<Reply = idm_core::proto::Done>,
{
    incoming.app.bus.send(call).await?;
    Ok((StatusCode::ACCEPTED, Json(Sent { sent: true })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkRequest {
    #[schema(format = Email)]
    email: String,
    redirect_url: String,
}

/// Mails a sign-in link that leads to `redirect_url` (an allowed origin).
#[utoipa::path(post, path = "/v1/client/magic_links", tag = "client", request_body = MagicLinkRequest,
    responses((status = 202, description = "Sent (the same answer for unknown addresses)", body = Sent)))]
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
    accepted(&incoming, &call).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeOnly {
    code: SecretText,
}

/// Exchanges a magic link's code for a session.
#[utoipa::path(post, path = "/v1/client/magic_links/verify", tag = "client", request_body = CodeOnly,
    responses((status = 200, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie; in cookie mode (`Idm-Session-Mode: cookie`) the refresh cookie too, and the body has no tokens")))))]
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
    let signed_in = incoming.app.bus.send(&call).await?;
    Ok(session_response(
        &incoming,
        &caller.key.policy,
        StatusCode::OK,
        signed_in,
    )?)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailOnly {
    #[schema(format = Email)]
    email: String,
}

/// Mails a one-time sign-in code.
#[utoipa::path(post, path = "/v1/client/email_codes", tag = "client", request_body = EmailOnly,
    responses((status = 202, description = "Sent (the same answer for unknown addresses)", body = Sent)))]
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
    accepted(&incoming, &call).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailAndCode {
    #[schema(format = Email)]
    email: String,
    code: SecretText,
}

/// Exchanges an emailed code for a session.
#[utoipa::path(post, path = "/v1/client/email_codes/verify", tag = "client", request_body = EmailAndCode,
    responses((status = 200, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie; in cookie mode (`Idm-Session-Mode: cookie`) the refresh cookie too, and the body has no tokens")))))]
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
    let signed_in = incoming.app.bus.send(&call).await?;
    Ok(session_response(
        &incoming,
        &caller.key.policy,
        StatusCode::OK,
        signed_in,
    )?)
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

/// Starts TOTP enrollment: a secret to confirm with `/v1/client/mfa/totp/confirm`.
#[utoipa::path(post, path = "/v1/client/mfa/totp", tag = "client",
    responses((status = 200, description = "The secret, for the authenticator app", body = TotpEnrollment)))]
pub async fn enroll_totp(incoming: Incoming) -> Reply<Json<TotpEnrollment>> {
    let session = session_user(&incoming).await?;
    Ok(Json(
        incoming.app.bus.send(&auth::EnrollTotp(session)).await?,
    ))
}

/// The new authenticator's code, plus a step-up proof when it replaces an
/// enabled one (the fields of `credentials::StepUpBody`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotpBody {
    code: SecretText,
    totp_code: Option<SecretText>,
    backup_code: Option<SecretText>,
    current_password: Option<SecretText>,
    email_code: Option<SecretText>,
}

#[utoipa::path(post, path = "/v1/client/mfa/totp/confirm", tag = "client", request_body = ConfirmTotpBody,
    responses((status = 200, description = "TOTP is on; the backup codes, shown once", body = BackupCodes)))]
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
    Ok(Json(incoming.app.bus.send(&call).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaRequest {
    mfa_token: SecretText,
    code: Option<SecretText>,
    backup_code: Option<SecretText>,
}

/// The second factor after `mfa_required`: a TOTP code or a backup code.
#[utoipa::path(post, path = "/v1/client/mfa/verify", tag = "client", request_body = MfaRequest,
    responses((status = 200, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie; in cookie mode (`Idm-Session-Mode: cookie`) the refresh cookie too, and the body has no tokens")))))]
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
    let signed_in = incoming.app.bus.send(&call).await?;
    Ok(session_response(
        &incoming,
        &caller.key.policy,
        StatusCode::OK,
        signed_in,
    )?)
}
