//! user-store, one per region: `<prefix>.store.<region>.v1.<op>`.
//! Every operation is scoped to one issuer's schema by `issuer_id`.

use super::SecretText;
use crate::{IssuerId, Jurisdiction, Region, SessionId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

pub const INFO: &str = "info";
pub const PROVISION_ISSUER: &str = "provision_issuer";
pub const CREATE_USER: &str = "create_user";
pub const GET_USER: &str = "get_user";
pub const VERIFY_PASSWORD: &str = "verify_password";
pub const CREATE_SESSION: &str = "create_session";

/// What a store says about itself; the router checks `jurisdiction` before
/// sending it data that must stay in a jurisdiction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub region: Region,
    pub jurisdiction: Jurisdiction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionIssuer {
    pub issuer_id: IssuerId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUser {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub email: crate::Email,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    /// Hashed here, in the region; never stored or returned as given.
    pub password: Option<SecretText>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredUser {
    pub id: UserId,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    pub mfa_enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// Which store answered: checked against the directory by the caller.
    pub store: StoreInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUser {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

/// `user_id: None` runs a dummy verification so an unknown user costs the
/// same as a wrong password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyPassword {
    pub issuer_id: IssuerId,
    pub user_id: Option<UserId>,
    pub password: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordChecked {
    pub valid: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSession {
    pub issuer_id: IssuerId,
    pub session_id: SessionId,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
    pub device: super::Device,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
}
