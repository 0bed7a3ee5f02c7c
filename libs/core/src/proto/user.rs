//! user service (the global directory): `<prefix>.user.v1.<op>`.

use super::{IssuerContext, SecretText};
use crate::{Email, IssuerId, Region, Timestamp, UserId};
use serde::{Deserialize, Serialize};

pub const CREATE_USER: &str = "create_user";
pub const GET_USER: &str = "get_user";
pub const FIND_BY_EMAIL: &str = "find_by_email";
pub const LOCATE: &str = "locate";
pub const INIT_ISSUER: &str = "init_issuer";
pub const PLACEMENT: &str = "placement";
pub const CREATE_PERSONAL_TOKEN: &str = "create_personal_token";
pub const LIST_PERSONAL_TOKENS: &str = "list_personal_tokens";
pub const REVOKE_PERSONAL_TOKEN: &str = "revoke_personal_token";
pub const VERIFY_PERSONAL_TOKEN: &str = "verify_personal_token";

super::operation::operations!(service "user" {
    InitIssuer => super::Done = INIT_ISSUER,
    CreateUser => User = CREATE_USER,
    GetUser => User = GET_USER,
    FindByEmail => User = FIND_BY_EMAIL,
    Locate => Located = LOCATE,
    Place => Placed = PLACEMENT,
    NewPersonalToken => CreatedPersonalToken = CREATE_PERSONAL_TOKEN,
    ListPersonalTokens => super::store::PersonalTokens = LIST_PERSONAL_TOKENS,
    PersonalTokenRef => super::store::PersonalToken = REVOKE_PERSONAL_TOKEN,
    VerifyPersonalToken => super::store::PersonalToken = VERIFY_PERSONAL_TOKEN,
});

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUser {
    pub ctx: IssuerContext,
    pub email: Email,
    pub password: Option<SecretText>,
    pub name: Option<crate::text::DisplayName>,
    /// An explicit region asked for by the caller (backend API only).
    pub region: Option<Region>,
    pub metadata: Option<serde_json::Value>,
    /// Country from the trusted proxy header, used for placement.
    pub country: Option<String>,
}

/// The public user object (API.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
    pub region: Region,
    pub metadata: serde_json::Value,
    pub mfa_enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUser {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

/// A user's personal tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListPersonalTokens(pub GetUser);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindByEmail {
    pub issuer_id: IssuerId,
    pub email: Email,
}

/// Where a user lives, if the address is known (no profile is read).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Locate(pub FindByEmail);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Location {
    pub user_id: UserId,
    pub region: Region,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Located {
    pub location: Option<Location>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitIssuer {
    pub issuer_id: IssuerId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPersonalToken {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub name: crate::text::DisplayName,
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<Timestamp>,
}

/// The token text appears here once and is never stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedPersonalToken {
    #[serde(flatten)]
    pub info: super::store::PersonalToken,
    pub token: SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersonalTokenRef {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub token_id: crate::PersonalTokenId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyPersonalToken {
    pub issuer_id: IssuerId,
    pub token: SecretText,
}

/// Where a new user signing up from `country` would be placed (nothing is
/// created): what an answer that must look like a fresh sign-up shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Place {
    pub ctx: IssuerContext,
    pub country: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placed {
    pub region: Region,
}
