//! Events on the JetStream `EVENTS` stream, subject
//! `<prefix>.events.<issuer>.<type>`. Payloads carry ids, never personal data.

use crate::{IssuerId, Timestamp};
use serde::{Deserialize, Serialize};

pub const SESSION_CREATED: &str = "session.created";
pub const SESSION_REVOKED: &str = "session.revoked";
pub const SESSION_COMPROMISED: &str = "session.compromised";
/// Every signing key of an issuer was revoked in an emergency.
pub const SESSION_KEYS_REVOKED: &str = "session_keys.revoked";
pub const MFA_ENABLED: &str = "mfa.enabled";
pub const MFA_DISABLED: &str = "mfa.disabled";
pub const MFA_BACKUP_CODES_REGENERATED: &str = "mfa.backup_codes_regenerated";
/// A factor reached its failure threshold and waits for a recovery path.
pub const FACTOR_LOCKED: &str = "factor.locked";
pub const FACTOR_UNLOCKED: &str = "factor.unlocked";
pub const PASSWORD_CHANGED: &str = "password.changed";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: crate::ids::EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub issuer_id: IssuerId,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: Timestamp,
    pub data: serde_json::Value,
}
