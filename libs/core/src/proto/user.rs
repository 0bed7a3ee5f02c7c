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
pub const RESIDENCY: &str = "residency";
// Users (issue 11).
pub const UPDATE_USER: &str = "update_user";
pub const LIST_USERS: &str = "list_users";
pub const APPLY_EMAIL_CHANGE: &str = "apply_email_change";
pub const LIST_DEVICES: &str = "list_devices";
pub const ADD_CONSENT: &str = "add_consent";
pub const LIST_CONSENTS: &str = "list_consents";

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
    GetResidency => Residency = RESIDENCY,
    UpdateUser => UpdatedUser = UPDATE_USER,
    ListUsers => UserList = LIST_USERS,
    ApplyEmailChange => User = APPLY_EMAIL_CHANGE,
    ListDevices => super::store::Devices = LIST_DEVICES,
    AddConsent => super::store::ConsentRecord = ADD_CONSENT,
    ListConsents => super::store::Consents = LIST_CONSENTS,
});

/// Where a user's data lives, and why (`GET /v1/users/{id}/residency`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GetResidency(pub GetUser);

/// `hard`: the data never leaves the jurisdiction (EU regions; no fallback,
/// no move out). `best_effort`: the nearest healthy region may stand in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementKind {
    Hard,
    BestEffort,
}

/// Why the user was placed where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementReason {
    /// The region nearest the country of sign-up.
    Country,
    /// The backend asked for this region (`region` on `POST /v1/users`).
    Hint,
    /// The issuer's (or the deployment's) default region.
    Default,
    /// The region first chosen (`unavailable_region`) was down; this is the
    /// nearest healthy best-effort region.
    Fallback,
    /// Placed before reasons were recorded.
    Unrecorded,
    /// Moved here from another region (`moved_from`, `moved_at`) by
    /// `POST /v1/users/{id}/move`.
    Moved,
}

impl PlacementReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementReason::Country => "country",
            PlacementReason::Hint => "hint",
            PlacementReason::Default => "default",
            PlacementReason::Fallback => "fallback",
            PlacementReason::Unrecorded => "unrecorded",
            PlacementReason::Moved => "moved",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            PlacementReason::Country,
            PlacementReason::Hint,
            PlacementReason::Default,
            PlacementReason::Fallback,
            PlacementReason::Unrecorded,
            PlacementReason::Moved,
        ]
        .into_iter()
        .find(|r| r.as_str() == raw)
    }
}

/// The residency evidence of one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Residency {
    pub user_id: UserId,
    pub region: Region,
    pub jurisdiction: crate::Jurisdiction,
    pub placement: PlacementKind,
    /// The regional store holding the data (`user-store-<region>`).
    pub store: String,
    /// The database server holding it, as the store announces it:
    /// `host:port/dbname` without credentials, or the operator's label.
    /// Null when the store could not be asked just now.
    pub database: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub placed_at: Timestamp,
    pub reason: PlacementReason,
    /// With `reason: fallback`: the region that was down.
    pub unavailable_region: Option<Region>,
    /// With `reason: moved`: the region the data was moved from (and
    /// deleted from), and when the directory switched.
    #[serde(default)]
    pub moved_from: Option<Region>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub moved_at: Option<Timestamp>,
    /// What the regional store holds for the user (profile, credentials,
    /// second factors, sessions, refresh tokens, personal tokens); the
    /// global directory holds only the id → region row and a blind index.
    pub data_categories: Vec<String>,
}

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

/// A user's personal tokens, a page at a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPersonalTokens {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    #[serde(default)]
    pub page: crate::page::Page,
}

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

// ---- Users (issue 11) ----

/// `PATCH /v1/users/{id}`: each field present is changed. A new `email` is
/// not applied here: a code goes to the new address, and the change happens
/// when it is confirmed (`POST /v1/client/email_changes/confirm`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateUser {
    pub ctx: IssuerContext,
    pub user_id: UserId,
    /// `Some(None)` clears the name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub name: Option<Option<crate::text::DisplayName>>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub email: Option<Email>,
    /// Where the confirmation link leads (checked by the edge).
    #[serde(default)]
    pub redirect_url: Option<String>,
}

/// An address change waiting for the new address to be proven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingEmailChange {
    /// `pending`: a code was mailed to the new address.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// The user after a `PATCH`, and the address change it started, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdatedUser {
    #[serde(flatten)]
    pub user: User,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_change: Option<PendingEmailChange>,
}

/// `GET /v1/users`: newest first, filtered by region and creation time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListUsers {
    pub issuer_id: IssuerId,
    pub page: crate::page::Page,
    #[serde(default)]
    pub region: Option<Region>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub created_after: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub created_before: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserList {
    pub data: Vec<User>,
    pub has_more: bool,
}

/// The new address was proven (auth redeemed the code): move the blind
/// index and the store's profile to it, or `conflict` if it was taken since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyEmailChange {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub email: Email,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListDevices {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    /// Known when the caller holds the user's session.
    #[serde(default)]
    pub region: Option<Region>,
    pub page: crate::page::Page,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddConsent {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub purpose: String,
    pub version: String,
    pub granted: bool,
    #[serde(default)]
    pub session_id: Option<crate::SessionId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListConsents {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub page: crate::page::Page,
    #[serde(default)]
    pub current: bool,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value:
/// what a `PATCH` needs to tell "keep" from "clear" across the bus.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
