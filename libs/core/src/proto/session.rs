//! session service: `<prefix>.session.v1.<op>`.

use super::{Device, SecretText};
use crate::{IssuerId, Region, SessionId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

pub const CREATE_SESSION: &str = "create_session";
pub const KEY_RING: &str = "key_ring";
pub const INIT_ISSUER: &str = "init_issuer";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSession {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub region: Region,
    pub lifetime_seconds: u32,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedSession {
    pub session_id: SessionId,
    pub session_token: SecretText,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRingRequest {
    pub issuer_id: IssuerId,
}

/// One signing key. The secret is base64 of 32 bytes; it crosses the bus only
/// to edge-guard, which verifies session tokens statelessly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub secret: SecretText,
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRing {
    pub issuer_id: IssuerId,
    pub keys: Vec<SigningKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitIssuer {
    pub issuer_id: IssuerId,
}
