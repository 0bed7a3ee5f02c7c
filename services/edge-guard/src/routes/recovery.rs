//! Users (issue 11), client routes: password reset by email, removing a
//! password, confirming a new address, and the signed-in user's devices.

use super::client::session_response;
use super::credentials::StepUpBody;
use super::passwordless::{session_user, too_long};
use super::profiles::{page_of, ListQuery};
use super::{body, Reply};
use crate::access::Incoming;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use idm_core::proto::auth::{self, Authenticated, PasswordChanged, SteppedUp};
use idm_core::proto::store::Devices;
use idm_core::proto::user::{ListDevices, User};
use idm_core::proto::SecretText;
use idm_core::ApiError;
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[schema(format = Email)]
    email: String,
    /// Where the link in the mail leads (an allowed origin), with
    /// `idm_reset_code=` appended; the code is in the mail either way.
    redirect_url: Option<String>,
}

/// The answer to a reset request: the same whether or not the address has
/// an account.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ResetSent {
    sent: bool,
}

/// Mails a password-reset code if the address has an account; `202` either way.
#[utoipa::path(post, path = "/v1/client/password_resets", tag = "client", request_body = ResetRequest,
    responses((status = 202, description = "Sent (the same answer for unknown addresses)", body = ResetSent)))]
pub async fn request_reset(
    incoming: Incoming,
    request: Result<Json<ResetRequest>, JsonRejection>,
) -> Reply<(StatusCode, Json<ResetSent>)> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    let email = incoming
        .app
        .waf
        .check_email(&caller.key.policy, &request.email)?;
    let redirect_url = request
        .redirect_url
        .as_deref()
        .map(|raw| {
            crate::redirect::check_redirect(&caller.key.policy, &caller.key.allowed_origins, raw)
        })
        .transpose()?;
    incoming.app.waf.allow_send(&caller.key, &email).await?;
    let call = auth::SendPasswordReset {
        ctx: caller.ctx(),
        email,
        redirect_url,
    };
    incoming.app.bus.send(&call).await?;
    Ok((StatusCode::ACCEPTED, Json(ResetSent { sent: true })))
}

fn revoke_by_default() -> bool {
    true
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The code from the mail.
    #[schema(value_type = String)]
    code: SecretText,
    #[schema(value_type = String, min_length = 8, max_length = 256)]
    new_password: SecretText,
    /// End every other session of the user (default `true`).
    #[serde(default = "revoke_by_default")]
    revoke_other_sessions: bool,
}

/// Uses a reset code: the new password replaces the old one, the other
/// sessions end (unless `revoke_other_sessions: false`), and a session
/// starts (or `401 mfa_required`, as for any sign-in).
#[utoipa::path(post, path = "/v1/client/password_resets/confirm", tag = "client", request_body = ResetConfirm,
    responses((status = 200, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie; in cookie mode (`Idm-Session-Mode: cookie`) the refresh cookie too, and the body has no tokens")))))]
pub async fn confirm_reset(
    incoming: Incoming,
    request: Result<Json<ResetConfirm>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    too_long(&request.code, 128)?;
    idm_core::text::check_password(request.new_password.expose())?;
    let call = auth::ConfirmPasswordReset {
        ctx: caller.ctx(),
        code: request.code,
        new_password: request.new_password,
        revoke_other_sessions: request.revoke_other_sessions,
        device: caller.device(),
    };
    let app = &incoming.app;
    let signed_in = app
        .waf
        .password_work(&caller.key, app.bus.send(&call))
        .await?;
    Ok(session_response(
        &incoming,
        &caller.key.policy,
        StatusCode::OK,
        signed_in,
    )?)
}

/// Removes the password (with a step-up proof in the body), only while the
/// address is verified so magic links and email codes still sign in.
#[utoipa::path(delete, path = "/v1/client/password", tag = "client",
    request_body(content = Option<StepUpBody>, description = "One step-up proof"),
    responses((status = 200, description = "Removed", body = PasswordChanged)))]
pub async fn remove_password(incoming: Incoming, raw: Bytes) -> Reply<Json<PasswordChanged>> {
    let session = session_user(&incoming).await?;
    let step_up = if raw.iter().all(u8::is_ascii_whitespace) {
        StepUpBody::default()
    } else {
        serde_json::from_slice::<StepUpBody>(&raw)
            .map_err(|e| ApiError::invalid_request(format!("the body is not valid JSON: {e}")))?
    }
    .checked()?;
    Ok(Json(
        incoming
            .app
            .bus
            .send(&auth::RemovePassword(SteppedUp { session, step_up }))
            .await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChangeConfirm {
    /// The code mailed to the new address.
    #[schema(value_type = String)]
    code: SecretText,
}

/// Confirms a new address with the code mailed to it: the address changes
/// (and counts as verified).
#[utoipa::path(post, path = "/v1/client/email_changes/confirm", tag = "client", request_body = EmailChangeConfirm,
    responses((status = 200, description = "The user with the new address", body = User)))]
pub async fn confirm_email_change(
    incoming: Incoming,
    request: Result<Json<EmailChangeConfirm>, JsonRejection>,
) -> Reply<Json<User>> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    too_long(&request.code, 128)?;
    let call = auth::ConfirmEmailChange {
        ctx: caller.ctx(),
        code: request.code,
    };
    Ok(Json(incoming.app.bus.send(&call).await?))
}

/// The signed-in user's devices, most recently seen first.
#[utoipa::path(get, path = "/v1/client/devices", tag = "client", params(ListQuery),
    responses((status = 200, description = "The devices", body = Devices)))]
pub async fn my_devices(
    incoming: Incoming,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<Devices>> {
    let caller = incoming.authorize().await?;
    let claims = incoming.session(&caller).await?;
    let request = ListDevices {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: claims.sub,
        region: Some(claims.reg),
        page: page_of(params)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}
