//! auth service: `<prefix>.auth.v1.<op>`.

use super::{Device, IssuerContext, SecretText};
use crate::Timestamp;
use serde::{Deserialize, Serialize};

pub const SIGN_UP: &str = "sign_up";
pub const SIGN_IN: &str = "sign_in";
pub const SEND_MAGIC_LINK: &str = "send_magic_link";
pub const VERIFY_MAGIC_LINK: &str = "verify_magic_link";
pub const SEND_EMAIL_CODE: &str = "send_email_code";
pub const VERIFY_EMAIL_CODE: &str = "verify_email_code";
pub const ENROLL_TOTP: &str = "enroll_totp";
pub const CONFIRM_TOTP: &str = "confirm_totp";
pub const VERIFY_MFA: &str = "verify_mfa";
pub const SEND_VERIFICATION: &str = "send_verification";
pub const CHECK_VERIFICATION: &str = "check_verification";
pub const DISABLE_TOTP: &str = "disable_totp";
pub const REGENERATE_BACKUP_CODES: &str = "regenerate_backup_codes";
pub const CHANGE_PASSWORD: &str = "change_password";
pub const UNLOCK_FACTORS: &str = "unlock_factors";
// Users (issue 11): password reset, removing a password, address changes.
pub const SEND_PASSWORD_RESET: &str = "send_password_reset";
pub const CONFIRM_PASSWORD_RESET: &str = "confirm_password_reset";
pub const REMOVE_PASSWORD: &str = "remove_password";
pub const START_EMAIL_CHANGE: &str = "start_email_change";
pub const CONFIRM_EMAIL_CHANGE: &str = "confirm_email_change";

super::operation::operations!(service "auth" {
    SignUp => Authenticated = SIGN_UP,
    SignIn => Authenticated = SIGN_IN,
    SendMagicLink => super::Done = SEND_MAGIC_LINK,
    VerifyMagicLink => Authenticated = VERIFY_MAGIC_LINK,
    SendEmailCode => super::Done = SEND_EMAIL_CODE,
    VerifyEmailCode => Authenticated = VERIFY_EMAIL_CODE,
    EnrollTotp => TotpEnrollment = ENROLL_TOTP,
    ConfirmTotp => BackupCodes = CONFIRM_TOTP,
    VerifyMfa => Authenticated = VERIFY_MFA,
    DisableTotp => super::Done = DISABLE_TOTP,
    RegenerateBackupCodes => BackupCodes = REGENERATE_BACKUP_CODES,
    ChangePassword => PasswordChanged = CHANGE_PASSWORD,
    UnlockFactors => Unlocked = UNLOCK_FACTORS,
    SendVerification => VerificationStarted = SEND_VERIFICATION,
    CheckVerification => VerificationResult = CHECK_VERIFICATION,
    SendPasswordReset => super::Done = SEND_PASSWORD_RESET,
    ConfirmPasswordReset => Authenticated = CONFIRM_PASSWORD_RESET,
    RemovePassword => PasswordChanged = REMOVE_PASSWORD,
    StartEmailChange => super::user::PendingEmailChange = START_EMAIL_CHANGE,
    ConfirmEmailChange => super::user::User = CONFIRM_EMAIL_CHANGE,
});

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignUp {
    pub ctx: IssuerContext,
    pub email: crate::Email,
    pub password: SecretText,
    pub name: Option<crate::text::DisplayName>,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignIn {
    pub ctx: IssuerContext,
    pub email: crate::Email,
    pub password: SecretText,
    pub device: Device,
}

/// A signed-in user: the body of sign-up and sign-in responses.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Authenticated {
    pub user: super::user::User,
    pub session_id: crate::SessionId,
    pub session_token: SecretText,
    pub refresh_token: SecretText,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendMagicLink {
    pub ctx: IssuerContext,
    pub email: crate::Email,
    /// Already checked against the issuer's allowed origins by the edge.
    pub redirect_url: String,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyMagicLink {
    pub ctx: IssuerContext,
    pub code: SecretText,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendEmailCode {
    pub ctx: IssuerContext,
    pub email: crate::Email,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyEmailCode {
    pub ctx: IssuerContext,
    pub email: crate::Email,
    pub code: SecretText,
    pub device: Device,
}

/// The signed-in user's own session, as the edge verified it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    pub ctx: IssuerContext,
    pub user_id: crate::UserId,
    pub region: crate::Region,
    pub session_id: crate::SessionId,
}

/// A proof of the account's credentials given inside the request that
/// changes them (step-up): exactly one field. A session alone is never
/// enough to change a credential, however fresh it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepUp {
    pub current_password: Option<SecretText>,
    /// A current TOTP code of the enabled authenticator.
    pub totp_code: Option<SecretText>,
    pub backup_code: Option<SecretText>,
    /// A code mailed to the account's own address (`POST /v1/client/email_codes`).
    pub email_code: Option<SecretText>,
}

impl StepUp {
    pub fn is_empty(&self) -> bool {
        self.current_password.is_none()
            && self.totp_code.is_none()
            && self.backup_code.is_none()
            && self.email_code.is_none()
    }
}

/// A credential change that needs only the session and its step-up proof
/// (removing TOTP, regenerating backup codes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SteppedUp {
    pub session: SessionUser,
    pub step_up: StepUp,
}

/// Start (or restart) TOTP enrolment for the signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnrollTotp(pub SessionUser);

/// Remove TOTP (and the backup codes) after a step-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisableTotp(pub SteppedUp);

/// Replace the backup codes after a step-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegenerateBackupCodes(pub SteppedUp);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangePassword {
    pub session: SessionUser,
    pub step_up: StepUp,
    pub new_password: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PasswordChanged {
    pub changed: bool,
    /// Other sessions of the user that were ended by the change.
    pub revoked_sessions: usize,
}

/// An operator (the tenant's backend) clears a user's factor locks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnlockFactors {
    pub ctx: IssuerContext,
    pub user_id: crate::UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unlocked {
    pub user_id: crate::UserId,
    /// Whether any failure count or lock was cleared.
    pub cleared: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TotpEnrollment {
    /// Base32, for manual entry.
    pub secret: SecretText,
    pub otpauth_url: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmTotp {
    pub session: SessionUser,
    pub code: SecretText,
    /// Required when TOTP is already enabled (replacing the authenticator).
    #[serde(default)]
    pub step_up: StepUp,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupCodes {
    pub backup_codes: Vec<SecretText>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyMfa {
    pub ctx: IssuerContext,
    pub mfa_token: SecretText,
    pub code: Option<SecretText>,
    pub backup_code: Option<SecretText>,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendVerification {
    pub ctx: IssuerContext,
    pub email: crate::Email,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerificationStarted {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckVerification {
    pub ctx: IssuerContext,
    pub id: String,
    /// Presented again at check time: nothing stored holds the address.
    pub email: crate::Email,
    pub code: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerificationResult {
    pub verified: bool,
    pub email: String,
    /// Signed by the issuer: which address was verified, and when.
    pub token: SecretText,
}

// ---- Users (issue 11) ----

/// Mails a reset code to `email` if it has an account; the answer is the
/// same either way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendPasswordReset {
    pub ctx: IssuerContext,
    pub email: crate::Email,
    /// Checked against the issuer's allowed origins by the edge; the mail
    /// links there with `idm_reset_code=` (the code is in the mail anyway).
    #[serde(default)]
    pub redirect_url: Option<String>,
}

/// Uses a reset code up: the new password replaces the old one, the other
/// sessions end (unless `revoke_other_sessions` is false), and the answer is
/// a session (or `mfa_required`, as for any sign-in).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmPasswordReset {
    pub ctx: IssuerContext,
    pub code: SecretText,
    pub new_password: SecretText,
    pub revoke_other_sessions: bool,
    pub device: Device,
}

/// Removes the password (with a step-up proof), only while another way to
/// sign in remains (a verified address: magic links and email codes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemovePassword(pub SteppedUp);

/// Mails a confirmation code to the new address of a user (the user
/// service checked that no other user of the issuer has it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartEmailChange {
    pub ctx: IssuerContext,
    pub user_id: crate::UserId,
    pub region: crate::Region,
    pub email: crate::Email,
    #[serde(default)]
    pub redirect_url: Option<String>,
}

/// The code mailed to the new address: applies the change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmEmailChange {
    pub ctx: IssuerContext,
    pub code: SecretText,
}
