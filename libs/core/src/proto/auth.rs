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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authenticated {
    pub user: super::user::User,
    pub session_id: crate::SessionId,
    pub session_token: SecretText,
    pub refresh_token: SecretText,
    #[serde(with = "time::serde::rfc3339")]
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpEnrollment {
    /// Base32, for manual entry.
    pub secret: SecretText,
    pub otpauth_url: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmTotp {
    pub session: SessionUser,
    pub code: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerificationStarted {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckVerification {
    pub ctx: IssuerContext,
    pub id: String,
    pub code: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerificationResult {
    pub verified: bool,
    pub email: String,
    /// Signed by the issuer: which address was verified, and when.
    pub token: SecretText,
}
