//! auth service: `<prefix>.auth.v1.<op>`.

use super::{Device, IssuerContext, SecretText};
use crate::Timestamp;
use serde::{Deserialize, Serialize};

pub const SIGN_UP: &str = "sign_up";
pub const SIGN_IN: &str = "sign_in";

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
