//! Changing credentials from a session: the password, removing TOTP, new
//! backup codes. Each needs a step-up proof in the same request (the current
//! password, a TOTP code, a backup code or an email code; auth decides which
//! count for which change), never the session alone.

use super::passwordless::{session_user, too_long};
use super::{body, Reply};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::Json;
use idm_core::proto::auth::{
    self, BackupCodes, ChangePassword, PasswordChanged, StepUp, SteppedUp,
};
use idm_core::proto::SecretText;
use idm_core::ApiError;
use serde::Deserialize;

use crate::access::Incoming;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpBody {
    pub current_password: Option<SecretText>,
    pub totp_code: Option<SecretText>,
    pub backup_code: Option<SecretText>,
    pub email_code: Option<SecretText>,
}

impl StepUpBody {
    /// Bounds the sizes before anything leaves the edge.
    pub fn checked(self) -> Result<StepUp, ApiError> {
        if let Some(password) = &self.current_password {
            if password.expose().len() > 1024 {
                return Err(ApiError::validation("current_password is too long"));
            }
        }
        for code in [&self.totp_code, &self.backup_code, &self.email_code]
            .into_iter()
            .flatten()
        {
            too_long(code, 32)?;
        }
        Ok(StepUp {
            current_password: self.current_password,
            totp_code: self.totp_code,
            backup_code: self.backup_code,
            email_code: self.email_code,
        })
    }
}

/// A JSON body that may be absent (a `DELETE` often has none): empty means
/// no proof, which auth answers with `step_up_required`.
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_request(format!("the body is not valid JSON: {e}")))
}

/// The answer to removing TOTP.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MfaRemoved {
    mfa_enabled: bool,
}

/// Removes TOTP (with a step-up proof in the body).
#[utoipa::path(delete, path = "/v1/client/mfa/totp", tag = "client",
    request_body(content = Option<StepUpBody>, description = "One step-up proof"),
    responses((status = 200, description = "TOTP is off", body = MfaRemoved)))]
pub async fn remove_totp(incoming: Incoming, raw: Bytes) -> Reply<Json<MfaRemoved>> {
    let session = session_user(&incoming).await?;
    let step_up = optional_body::<StepUpBody>(&raw)?.checked()?;
    let _ = incoming
        .app
        .bus
        .send(&auth::DisableTotp(SteppedUp { session, step_up }))
        .await?;
    Ok(Json(MfaRemoved { mfa_enabled: false }))
}

/// New backup codes (with a step-up proof); the old ones stop working.
#[utoipa::path(post, path = "/v1/client/mfa/backup_codes", tag = "client",
    request_body(content = Option<StepUpBody>, description = "One step-up proof"),
    responses((status = 200, description = "The new codes, shown once", body = BackupCodes)))]
pub async fn regenerate_backup_codes(incoming: Incoming, raw: Bytes) -> Reply<Json<BackupCodes>> {
    let session = session_user(&incoming).await?;
    let step_up = optional_body::<StepUpBody>(&raw)?.checked()?;
    Ok(Json(
        incoming
            .app
            .bus
            .send(&auth::RegenerateBackupCodes(SteppedUp { session, step_up }))
            .await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    #[schema(value_type = String, min_length = 8, max_length = 256)]
    new_password: SecretText,
    current_password: Option<SecretText>,
    totp_code: Option<SecretText>,
    backup_code: Option<SecretText>,
    email_code: Option<SecretText>,
}

/// Changes the password (with a step-up proof); other sessions end.
#[utoipa::path(post, path = "/v1/client/password", tag = "client", request_body = PasswordBody,
    responses((status = 200, description = "Changed", body = PasswordChanged)))]
pub async fn change_password(
    incoming: Incoming,
    request: Result<Json<PasswordBody>, JsonRejection>,
) -> Reply<Json<PasswordChanged>> {
    let session = session_user(&incoming).await?;
    let request = body(request)?;
    idm_core::text::check_password(request.new_password.expose())?;
    let step_up = StepUpBody {
        current_password: request.current_password,
        totp_code: request.totp_code,
        backup_code: request.backup_code,
        email_code: request.email_code,
    }
    .checked()?;
    let call = ChangePassword {
        session,
        step_up,
        new_password: request.new_password,
    };
    Ok(Json(incoming.app.bus.send(&call).await?))
}
