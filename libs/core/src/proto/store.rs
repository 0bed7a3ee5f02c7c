//! user-store, one per region: `<prefix>.store.<region>.v1.<op>`.
//! Every operation is scoped to one issuer's schema by `issuer_id`.

use super::SecretText;
use crate::{IssuerId, Jurisdiction, Region, SessionId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

pub const INFO: &str = "info";
pub const PROVISION_ISSUER: &str = "provision_issuer";
pub const CREATE_USER: &str = "create_user";
pub const GET_USER: &str = "get_user";
/// The user a live session belongs to (`GET /v1/client/me`, asked by the
/// edge of the region the session token names).
pub const GET_SESSION_USER: &str = "get_session_user";
pub const VERIFY_PASSWORD: &str = "verify_password";
pub const CREATE_SESSION: &str = "create_session";
pub const REFRESH_SESSION: &str = "refresh_session";
pub const REVOKE_SESSION: &str = "revoke_session";
pub const REVOKE_USER_SESSIONS: &str = "revoke_user_sessions";
pub const LIST_SESSIONS: &str = "list_sessions";
pub const CREATE_PERSONAL_TOKEN: &str = "create_personal_token";
pub const LIST_PERSONAL_TOKENS: &str = "list_personal_tokens";
pub const REVOKE_PERSONAL_TOKEN: &str = "revoke_personal_token";
pub const VERIFY_PERSONAL_TOKEN: &str = "verify_personal_token";
pub const MARK_EMAIL_VERIFIED: &str = "mark_email_verified";
pub const SET_PENDING_TOTP: &str = "set_pending_totp";
pub const GET_TOTP: &str = "get_totp";
pub const ENABLE_TOTP: &str = "enable_totp";
pub const USE_TOTP_STEP: &str = "use_totp_step";
pub const USE_BACKUP_CODE: &str = "use_backup_code";
pub const DISABLE_TOTP: &str = "disable_totp";
pub const REPLACE_BACKUP_CODES: &str = "replace_backup_codes";
pub const SET_PASSWORD: &str = "set_password";
pub const CREDENTIALS: &str = "credentials";
/// The revocations that still matter in this region, every issuer, a page at
/// a time (request: `ListRevokedSessions`, answer: `RevokedSessionPage`).
pub const LIST_REVOKED_SESSIONS: &str = "list_revoked_sessions";
/// The sealed TOTP secrets of every issuer in the region, a page at a time
/// (auth's re-seal pass after a master-key rotation).
pub const LIST_SEALED_TOTP: &str = "list_sealed_totp";
/// Replaces one sealed TOTP secret, compare-and-swap on the old value.
pub const RESEAL_TOTP: &str = "reseal_totp";
// Users (issue 11): profiles, email changes, devices, consents.
pub const UPDATE_PROFILE: &str = "update_profile";
pub const GET_USERS: &str = "get_users";
pub const CHANGE_EMAIL: &str = "change_email";
pub const REMOVE_PASSWORD: &str = "remove_password";
pub const LIST_DEVICES: &str = "list_devices";
pub const REVOKE_DEVICE: &str = "revoke_device";
pub const ADD_CONSENT: &str = "add_consent";
pub const LIST_CONSENTS: &str = "list_consents";

super::operation::operations!(store {
    GetStoreInfo => StoreInfo = INFO,
    ProvisionIssuer => StoreInfo = PROVISION_ISSUER,
    CreateUser => StoredUser = CREATE_USER,
    GetUser => StoredUser = GET_USER,
    GetSessionUser => StoredUser = GET_SESSION_USER,
    VerifyPassword => PasswordChecked = VERIFY_PASSWORD,
    CreateSession => SessionRecord = CREATE_SESSION,
    RefreshSession => RefreshOutcome = REFRESH_SESSION,
    RevokeSession => SessionRecord = REVOKE_SESSION,
    RevokeUserSessions => SessionRecords = REVOKE_USER_SESSIONS,
    ListSessions => SessionRecords = LIST_SESSIONS,
    ListRevokedSessions => RevokedSessionPage = LIST_REVOKED_SESSIONS,
    CreatePersonalToken => PersonalToken = CREATE_PERSONAL_TOKEN,
    ListPersonalTokens => PersonalTokens = LIST_PERSONAL_TOKENS,
    RevokePersonalToken => PersonalToken = REVOKE_PERSONAL_TOKEN,
    VerifyPersonalToken => PersonalToken = VERIFY_PERSONAL_TOKEN,
    ProveEmail => EmailProven = MARK_EMAIL_VERIFIED,
    GetCredentials => Credentials = CREDENTIALS,
    DisableTotp => Accepted = DISABLE_TOTP,
    ReplaceBackupCodes => Accepted = REPLACE_BACKUP_CODES,
    SetPassword => super::Done = SET_PASSWORD,
    SetPendingTotp => super::Done = SET_PENDING_TOTP,
    GetTotp => TotpState = GET_TOTP,
    EnableTotp => super::Done = ENABLE_TOTP,
    UseTotpStep => Accepted = USE_TOTP_STEP,
    UseBackupCode => Accepted = USE_BACKUP_CODE,
    ListSealedTotp => SealedTotpPage = LIST_SEALED_TOTP,
    ResealTotp => Accepted = RESEAL_TOTP,
    UpdateProfile => StoredUser = UPDATE_PROFILE,
    GetUsers => StoredUsers = GET_USERS,
    ChangeEmail => StoredUser = CHANGE_EMAIL,
    RemovePassword => super::Done = REMOVE_PASSWORD,
    ListDevices => Devices = LIST_DEVICES,
    RevokeDevice => SessionRecords = REVOKE_DEVICE,
    AddConsent => ConsentRecord = ADD_CONSENT,
    ListConsents => Consents = LIST_CONSENTS,
});

/// What the store says about itself (region and jurisdiction); no fields.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct GetStoreInfo {}

/// What a store says about itself, from its own configuration: the router
/// refuses a store whose `jurisdiction` is not its region's (see
/// `Region::jurisdiction`) before sending it any data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub region: Region,
    pub jurisdiction: Jurisdiction,
    /// The database server holding the region's data: `host:port/dbname`
    /// without credentials, or an operator's label (`STORE_DATABASE_LABEL`).
    #[serde(default)]
    pub database: String,
}

impl StoreInfo {
    /// `None` when the store may hold `asked`'s data; otherwise why not.
    pub fn refusal(&self, asked: Region) -> Option<String> {
        if self.region != asked {
            Some(format!("the store of {asked} answered as {}", self.region))
        } else if self.jurisdiction != asked.jurisdiction() {
            Some(format!(
                "the store of {asked} announces jurisdiction {}, not {}",
                self.jurisdiction.as_str(),
                asked.jurisdiction().as_str()
            ))
        } else {
            None
        }
    }
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

/// Broadcast topic (`<prefix>.user.changed.<issuer>`): a store sends it
/// after every committed change to what `GET /v1/client/me` shows (profile,
/// address, its verification, MFA), after a user's rows are purged and after
/// a moving user's rows are copied in; every edge drops what it remembers of
/// the user (its `/me` cache). Sent before the change's own caller is
/// answered, on the same connection.
pub const USER_CHANGED_TOPIC: &str = "user.changed";

/// The message on [`USER_CHANGED_TOPIC`]: ids only, no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChanged {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUser {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

/// The user of a session, answered only while the session is live in this
/// store: not revoked (a revocation the asking edge has not heard of yet is
/// refused here too), not past its end, and belonging to that user in the
/// issuer's own schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetSessionUser {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub session_id: SessionId,
}

/// Which credentials a user has.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GetCredentials(pub GetUser);

/// Remove TOTP and the backup codes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisableTotp(pub GetUser);

/// The TOTP state (sealed secrets and the last accepted step).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GetTotp(pub GetUser);

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
    /// The absolute end of the session, however often it is refreshed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
    /// Hex SHA-256 of the first refresh token; the token itself never arrives.
    pub refresh_token_hash: String,
    pub device: super::Device,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_active_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    pub revoke_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The device the session was opened from (`GET /v1/users/{id}/devices`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub device_id: Option<crate::ids::DeviceId>,
}

/// Consume `token_hash` and put `new_token_hash` in its place, atomically
/// with respect to every other refresh and revocation of the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshSession {
    pub issuer_id: IssuerId,
    pub token_hash: String,
    pub new_token_hash: String,
    /// The new token sealed by the session service (never readable here),
    /// kept only while a replay within the leeway may ask for it again.
    pub successor_sealed: Option<String>,
    pub idle_timeout_seconds: u32,
    pub leeway_seconds: u32,
    pub device: super::Device,
}

impl RefreshSession {
    /// The rotation of `token_hash` into `new_token_hash` under the issuer's
    /// session policy (idle timeout, reuse leeway).
    pub fn under_policy(
        issuer_id: IssuerId,
        token_hash: String,
        new_token_hash: String,
        successor_sealed: Option<String>,
        policy: &crate::IssuerPolicy,
        device: super::Device,
    ) -> Self {
        Self {
            issuer_id,
            token_hash,
            new_token_hash,
            successor_sealed,
            idle_timeout_seconds: policy.session_idle_timeout_seconds,
            leeway_seconds: policy.refresh_reuse_leeway_seconds,
            device,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// The token was live: it is consumed and the new one stored.
    Rotated { session: SessionRecord },
    /// The token was rotated moments ago (within the leeway) and its successor
    /// is still unused: the caller gets that same successor back.
    Replayed {
        session: SessionRecord,
        successor_sealed: String,
        successor_hash: String,
    },
    /// The token was already used: the session is now revoked as compromised
    /// and every refresh token of it is dead.
    Compromised { session: SessionRecord },
}

impl RefreshOutcome {
    /// The session and, for a retry within the leeway, the sealed successor
    /// to give back again; `Err` with the session when the token was reused
    /// (the store has just revoked it as compromised).
    pub fn into_rotation(self) -> Result<(SessionRecord, Option<String>), Box<SessionRecord>> {
        match self {
            RefreshOutcome::Rotated { session } => Ok((session, None)),
            RefreshOutcome::Replayed {
                session,
                successor_sealed,
                ..
            } => Ok((session, Some(successor_sealed))),
            RefreshOutcome::Compromised { session } => Err(Box::new(session)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeSession {
    pub issuer_id: IssuerId,
    pub session_id: SessionId,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserSessions {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    /// For lists: which page (absent: the first page of the default size).
    #[serde(default)]
    pub page: Option<crate::page::Page>,
}

/// Revoke every session of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevokeUserSessions(pub UserSessions);

/// A user's sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListSessions(pub UserSessions);

/// A user's personal tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListPersonalTokens(pub UserSessions);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecords {
    pub data: Vec<SessionRecord>,
    /// Lists: more follow after the last one.
    #[serde(default)]
    pub has_more: bool,
}

/// Where a page of revocations ends: issuers in id order, then sessions in
/// id order within an issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCursor {
    pub issuer_id: IssuerId,
    pub session_id: SessionId,
}

/// Revoked sessions of every issuer in one region whose tokens could still
/// verify, after `after`, at most `limit` (capped by the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListRevokedSessions {
    pub after: Option<RevokedCursor>,
    pub limit: u32,
    /// Only revocations made after this (unix seconds): an edge catching
    /// up on broadcasts it may have missed. `None`: all that still matter.
    #[serde(default)]
    pub since: Option<i64>,
}

/// One revocation as the regional store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSessionRecord {
    pub issuer_id: IssuerId,
    pub session_id: SessionId,
    /// Unix seconds after which no token of the session can verify anyway.
    pub until: i64,
    /// Revoked because a refresh token was reused.
    pub compromised: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedSessionPage {
    pub data: Vec<RevokedSessionRecord>,
    /// Ask again with this cursor; `None` when the region has no more.
    pub next: Option<RevokedCursor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatePersonalToken {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub token_id: crate::PersonalTokenId,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<Timestamp>,
    pub token_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PersonalToken {
    pub id: crate::PersonalTokenId,
    pub user_id: UserId,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PersonalTokens {
    pub data: Vec<PersonalToken>,
    #[serde(default)]
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokePersonalToken {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub token_id: crate::PersonalTokenId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyPersonalToken {
    pub issuer_id: IssuerId,
    pub token_hash: String,
}

/// A TOTP secret sealed by the auth service; the store never sees it open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPendingTotp {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub sealed_secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpState {
    pub mfa_enabled: bool,
    pub pending_sealed: Option<String>,
    pub active_sealed: Option<String>,
    /// The last time step accepted; a code of this step or earlier is a replay.
    pub last_step: Option<i64>,
}

/// Where a listing of sealed TOTP secrets goes on from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedTotpCursor {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

/// The users of every issuer in one region that hold a sealed TOTP secret
/// (active or pending), in (issuer, user) order after `after`, at most
/// `limit` (capped by the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListSealedTotp {
    pub after: Option<SealedTotpCursor>,
    pub limit: u32,
}

/// One user's sealed TOTP secrets, as stored (never open here).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedTotp {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub pending_sealed: Option<String>,
    pub active_sealed: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedTotpPage {
    pub data: Vec<SealedTotp>,
    /// Ask again with this cursor; `None` when the region has no more.
    pub next: Option<SealedTotpCursor>,
}

/// Which of a user's TOTP secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TotpSlot {
    Active,
    Pending,
}

/// Replace the sealed secret in `slot` with `new_sealed` only if it still
/// holds `old_sealed` (the same secret re-sealed under the current master
/// key; a concurrent change wins).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResealTotp {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub slot: TotpSlot,
    pub old_sealed: String,
    pub new_sealed: String,
}

/// Promote the pending secret, store the backup codes' hashes, and record the
/// step of the confirming code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnableTotp {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub backup_code_hashes: Vec<String>,
    pub step: i64,
}

/// Accept `step` only if it is later than the last accepted one (atomic).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UseTotpStep {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub step: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UseBackupCode {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub code_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: bool,
}

/// The address has just been proven by a passwordless proof (magic link or
/// email code). The first proof of an unverified account also clears every
/// credential set before it (password, TOTP, backup codes), in the same
/// transaction: whoever set them never showed they own the address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProveEmail {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailProven {
    /// The account was unverified until now.
    pub first_proof: bool,
    pub password_cleared: bool,
    pub mfa_cleared: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplaceBackupCodes {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub backup_code_hashes: Vec<String>,
}

/// Hashed here, in the region; the previous hash is replaced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPassword {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub password: SecretText,
}

/// Which credentials a user has (never the credentials themselves).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Credentials {
    pub has_password: bool,
    pub mfa_enabled: bool,
    pub email_verified: bool,
}

// ---- Users (issue 11): profiles, email changes, devices, consents ----

/// A profile change: each field present is set (`name: Some(None)` clears
/// the name); absent fields stay as they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateProfile {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::user::present"
    )]
    pub name: Option<Option<String>>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// Several users at once (a page of the user list), in no particular
/// order; ids the store does not hold are left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUsers {
    pub issuer_id: IssuerId,
    pub user_ids: Vec<UserId>,
}

/// The most users one `GetUsers` may ask for.
pub const MAX_USERS_PER_BATCH: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredUsers {
    pub data: Vec<StoredUser>,
}

/// The new address was proven: it replaces the old one and counts as
/// verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeEmail {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub email: crate::Email,
}

/// Removes the password, refused (`conflict`) unless the address is
/// verified (magic links and email codes then still sign the user in).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemovePassword(pub GetUser);

/// A device a user's sessions were opened from: the user agent and the IP
/// network (/24 for IPv4, /48 for IPv6), never the full address.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceRecord {
    #[schema(value_type = String)]
    pub id: crate::ids::DeviceId,
    pub user_id: UserId,
    pub user_agent: Option<String>,
    pub ip_network: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
    /// Sessions of this device still live.
    pub active_sessions: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListDevices {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub page: crate::page::Page,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Devices {
    pub data: Vec<DeviceRecord>,
    pub has_more: bool,
}

/// Revokes every live session of one device of the user (`not_found` when
/// the device is not the user's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeDevice {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub device_id: crate::ids::DeviceId,
}

/// One consent decision, appended to the user's history. `session_id`, when
/// given, must be the user's; its device is recorded with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddConsent {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub consent_id: crate::ids::ConsentId,
    pub purpose: String,
    pub version: String,
    pub granted: bool,
    pub session_id: Option<SessionId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentRecord {
    #[schema(value_type = String)]
    pub id: crate::ids::ConsentId,
    pub user_id: UserId,
    pub purpose: String,
    pub version: String,
    pub granted: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
    #[schema(value_type = Option<String>)]
    pub session_id: Option<SessionId>,
    #[schema(value_type = Option<String>)]
    pub device_id: Option<crate::ids::DeviceId>,
}

/// The history (newest first, paginated), or with `current` the latest
/// record of each purpose (at most one page of purposes, by purpose).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListConsents {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub page: crate::page::Page,
    #[serde(default)]
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Consents {
    pub data: Vec<ConsentRecord>,
    pub has_more: bool,
}
