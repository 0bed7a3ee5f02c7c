//! session service: `<prefix>.session.v1.<op>`.

use super::{Device, SecretText};
use crate::{IssuerId, IssuerPolicy, Region, SessionId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

pub const CREATE_SESSION: &str = "create_session";
pub const REFRESH: &str = "refresh";
pub const REVOKE: &str = "revoke";
pub const REVOKE_ALL: &str = "revoke_all";
pub const LIST: &str = "list";
pub const KEY_RING: &str = "key_ring";
pub const ROTATE_KEY: &str = "rotate_key";
pub const REVOKE_KEYS: &str = "revoke_keys";
pub const INIT_ISSUER: &str = "init_issuer";
pub const SIGN_VERIFICATION: &str = "sign_verification";
/// A session-shaped answer that is not a session (request: `CreateSession`):
/// a token with the issuer's current key id and plausible claims whose MAC is
/// made with a throw-away key, so it looks like any other token and never
/// verifies; a refresh token that was never stored. Nothing is recorded.
pub const DECOY_SESSION: &str = "decoy_session";
/// One page of the revocations that still matter in one region (request:
/// `RevokedSessions`, answer: `store::RevokedSessionPage`): what an edge
/// rebuilds its revocation set from, read from the regional stores, the
/// authoritative home of every revocation.
pub const REVOKED_SESSIONS: &str = "revoked_sessions";
/// Revoke every session of one of a user's devices (users, issue 11).
pub const REVOKE_DEVICE: &str = "revoke_device";
/// An edge that rotates refresh tokens itself found a reused one (the store
/// has already revoked the session as compromised): the session service
/// makes that known everywhere, as for any revocation (request:
/// `ReportReuse`).
pub const REPORT_REUSE: &str = "report_reuse";

super::operation::operations!(service "session" {
    InitIssuer => super::Done = INIT_ISSUER,
    CreateSession => IssuedSession = CREATE_SESSION,
    Refresh => IssuedSession = REFRESH,
    Revoke => super::store::SessionRecord = REVOKE,
    RevokeAll => Revoked = REVOKE_ALL,
    List => SessionList = LIST,
    KeyRingRequest => KeyRing = KEY_RING,
    IssuerKeys => RotatedKey = ROTATE_KEY,
    RevokeKeys => RevokedKeys = REVOKE_KEYS,
    SignVerification => SecretText = SIGN_VERIFICATION,
    DecoySession => IssuedSession = DECOY_SESSION,
    RevokedSessions => super::store::RevokedSessionPage = REVOKED_SESSIONS,
    RevokeDevice => Revoked = REVOKE_DEVICE,
    ReportReuse => super::Done = REPORT_REUSE,
});

/// No session token lives longer than this (the policy's maximum
/// `session_lifetime_seconds`), so a revocation matters at most this long
/// after it was made.
pub const MAX_TOKEN_LIFETIME_SECONDS: i64 = 86_400;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedSessions {
    pub region: Region,
    pub after: Option<super::store::RevokedCursor>,
    pub limit: u32,
    /// Only revocations made after this (unix seconds); see the store's.
    #[serde(default)]
    pub since: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignVerification {
    pub issuer_id: IssuerId,
    pub verification_id: String,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub verified_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSession {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub region: Region,
    pub policy: IssuerPolicy,
    pub device: Device,
}

/// A session-shaped answer that is not a session (see [`DECOY_SESSION`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DecoySession(pub CreateSession);

/// A new or refreshed session: a short-lived signed token and the opaque
/// refresh token that rotates on every use.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedSession {
    pub session_id: SessionId,
    pub session_token: SecretText,
    pub refresh_token: SecretText,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refresh {
    pub issuer_id: IssuerId,
    pub policy: IssuerPolicy,
    pub refresh_token: SecretText,
    pub device: Device,
}

/// Revoke one session. `region` is known when the caller holds the session
/// token; otherwise the session index says where it lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoke {
    pub issuer_id: IssuerId,
    pub session_id: SessionId,
    pub region: Option<Region>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeAll {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    /// The user's region when the caller knows it (the deletion-worker: the
    /// directory refuses lookups of a user being deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    pub session_ids: Vec<SessionId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct List {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub region: Option<Region>,
    /// Which page (absent: the first page of the default size).
    #[serde(default)]
    pub page: Option<crate::page::Page>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionList {
    pub data: Vec<super::store::SessionRecord>,
    #[serde(default)]
    pub has_more: bool,
}

/// Revoke every live session of `device_id`, one of `user_id`'s devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeDevice {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub device_id: crate::ids::DeviceId,
}

/// edge-guard asks for an issuer's ring. `nonce` (fresh random per fetch,
/// see `idm_crypto::key_transport`) is bound into every sealed key of the
/// reply, so a recorded reply cannot be replayed to an edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRingRequest {
    pub issuer_id: IssuerId,
    pub nonce: String,
}

/// The issuer whose signing keys an operation acts on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuerKeys {
    pub issuer_id: IssuerId,
}

/// Emergency revocation of every signing key of an issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeKeys {
    pub issuer_id: IssuerId,
    /// The API key that asked (recorded in the event, for the audit trail).
    pub actor_key_id: crate::ApiKeyId,
}

/// One signing key as it crosses the bus: never the secret itself, only the
/// secret sealed under the edge/session transport key (base64 of
/// `nonce ‖ ciphertext`, associated data = issuer, kid, fetch nonce).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSigningKey {
    pub kid: String,
    pub sealed_secret: String,
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRing {
    pub issuer_id: IssuerId,
    pub keys: Vec<SealedSigningKey>,
    /// What an edge needs to rotate refresh tokens itself, read in the same
    /// snapshot as the keys (docs/SESSIONS.md, "Refresh in one bus hop").
    /// Absent from a session service of an earlier release: an edge then
    /// refreshes through the session service, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRules>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRules {
    /// The issuer's latest emergency key revocation: a session created at or
    /// before it can no longer be refreshed.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub sessions_not_before: Option<Timestamp>,
}

/// A reused refresh token, found by an edge: the store named the session
/// compromised (and revoked it) in its answer to `store.refresh_session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportReuse {
    pub issuer_id: IssuerId,
    pub region: Region,
    pub session_id: SessionId,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotatedKey {
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// The answer to an emergency key revocation.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokedKeys {
    /// The fresh key that signs from now on.
    pub kid: String,
    /// Every key that stopped verifying.
    pub revoked_kids: Vec<String>,
    /// Sessions created at or before this instant can no longer be refreshed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub sessions_not_before: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitIssuer {
    pub issuer_id: IssuerId,
}

/// Broadcast on `<prefix>.session.revoked.<issuer>`; every edge adds the ids
/// to its revocation set until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedBroadcast {
    pub issuer_id: IssuerId,
    pub sessions: Vec<RevokedSession>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedSession {
    pub session_id: SessionId,
    /// Unix seconds after which no token of the session can verify anyway.
    pub until: i64,
    pub compromised: bool,
}

/// Refresh tokens name the region whose store holds the session, so a refresh
/// is routed without any lookup: `idmrt_<region>_<43 chars of base64url>`.
pub const REFRESH_TOKEN_PREFIX: &str = "idmrt_";

/// The one answer for a refresh token that is malformed, unknown, spent
/// beyond the leeway's reach or another issuer's: nothing tells them apart.
pub fn refresh_token_invalid() -> crate::ApiError {
    crate::ApiError::new(
        crate::ErrorCode::SessionInvalid,
        "the refresh token is not valid",
    )
}

/// A store's `not_found` to a rotation (another issuer's token is simply
/// absent from this issuer's schema) is [`refresh_token_invalid`] too.
pub fn refresh_error(error: crate::ApiError) -> crate::ApiError {
    if error.code == crate::ErrorCode::NotFound {
        refresh_token_invalid()
    } else {
        error
    }
}

pub fn refresh_token_region(token: &str) -> Option<Region> {
    let rest = token.strip_prefix(REFRESH_TOKEN_PREFIX)?;
    let (region, body) = rest.split_once('_')?;
    (body.len() == 43
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(())?;
    Region::parse(region).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rollout: a ring from a session service of an earlier release has
    /// no refresh rules, and an edge then refreshes through that service.
    #[test]
    fn a_ring_without_refresh_rules_says_so() -> Result<(), serde_json::Error> {
        let issuer = IssuerId::generate();
        let earlier: KeyRing =
            serde_json::from_value(serde_json::json!({ "issuer_id": issuer, "keys": [] }))?;
        assert_eq!(earlier.refresh, None);
        let now = KeyRing {
            issuer_id: issuer,
            keys: Vec::new(),
            refresh: Some(RefreshRules::default()),
        };
        let round_trip: KeyRing = serde_json::from_value(serde_json::to_value(&now)?)?;
        assert_eq!(round_trip.refresh, Some(RefreshRules::default()));
        Ok(())
    }
}
