//! Events on the JetStream `EVENTS` stream, subject
//! `<prefix>.events.<issuer>.<type>`. Payloads carry ids, never personal data.

use crate::{ApiKeyId, IssuerId, SessionId, Timestamp, UserId};
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
/// The edge banned a network (WAF strikes).
pub const IP_BANNED: &str = "ip.banned";

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

/// Everything published on the `EVENTS` stream: one variant per event type,
/// its payload the event's `data`. Publishers build one of these
/// (`idm_bus::Events::publish`), which writes the envelope ([`Event`]) and
/// the subject from [`DomainEvent::event_type`], so an event's type string
/// and the shape of its data are written in one place.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DomainEvent {
    SessionCreated(SessionCreated),
    SessionRevoked(SessionEnded),
    SessionCompromised(SessionEnded),
    SessionKeysRevoked(SessionKeysRevoked),
    MfaEnabled(MfaEnabled),
    MfaDisabled(MfaDisabled),
    MfaBackupCodesRegenerated(UserRef),
    FactorLocked(FactorLocked),
    FactorUnlocked(FactorUnlocked),
    PasswordChanged(PasswordChanged),
    IpBanned(IpBanned),
}

impl DomainEvent {
    /// Every event type, as the permission table and the docs name them.
    pub const TYPES: &'static [&'static str] = &[
        SESSION_CREATED,
        SESSION_REVOKED,
        SESSION_COMPROMISED,
        SESSION_KEYS_REVOKED,
        MFA_ENABLED,
        MFA_DISABLED,
        MFA_BACKUP_CODES_REGENERATED,
        FACTOR_LOCKED,
        FACTOR_UNLOCKED,
        PASSWORD_CHANGED,
        IP_BANNED,
    ];

    /// The stable `type` string (the last subject token).
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::SessionCreated(_) => SESSION_CREATED,
            DomainEvent::SessionRevoked(_) => SESSION_REVOKED,
            DomainEvent::SessionCompromised(_) => SESSION_COMPROMISED,
            DomainEvent::SessionKeysRevoked(_) => SESSION_KEYS_REVOKED,
            DomainEvent::MfaEnabled(_) => MFA_ENABLED,
            DomainEvent::MfaDisabled(_) => MFA_DISABLED,
            DomainEvent::MfaBackupCodesRegenerated(_) => MFA_BACKUP_CODES_REGENERATED,
            DomainEvent::FactorLocked(_) => FACTOR_LOCKED,
            DomainEvent::FactorUnlocked(_) => FACTOR_UNLOCKED,
            DomainEvent::PasswordChanged(_) => PASSWORD_CHANGED,
            DomainEvent::IpBanned(_) => IP_BANNED,
        }
    }

    /// The event's `data` (the variant's payload, without a tag).
    pub fn data(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCreated {
    pub session_id: SessionId,
    pub user_id: UserId,
}

/// `session.revoked` and `session.compromised`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnded {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionKeysRevoked {
    /// The API key that asked.
    pub actor_key_id: ApiKeyId,
    pub request_id: String,
    pub revoked_kids: Vec<String>,
    pub new_kid: String,
    #[serde(with = "time::serde::rfc3339")]
    pub sessions_not_before: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaEnabled {
    pub user_id: UserId,
    pub method: String,
    /// An enabled authenticator was replaced.
    pub replaced: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaDisabled {
    pub user_id: UserId,
    pub method: String,
    /// Absent when the user removed it; `unproven_address` when the first
    /// proof of the address cleared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRef {
    pub user_id: UserId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorLocked {
    pub user_id: UserId,
    pub factor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorUnlocked {
    pub user_id: UserId,
    /// The factor unlocked; absent when an operator cleared every lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<String>,
    /// `backup_code` or `operator`.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordChanged {
    pub user_id: UserId,
    /// Other sessions ended by the change.
    pub revoked_sessions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpBanned {
    pub ip: String,
    pub route_class: String,
    pub ban_seconds: u64,
    /// RFC 3339.
    pub banned_until: Option<String>,
    pub offence: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_unique_and_dotted() {
        for (i, t) in DomainEvent::TYPES.iter().enumerate() {
            assert!(!DomainEvent::TYPES[i + 1..].contains(t), "{t} twice");
            assert!(t.contains('.') && !t.contains(['*', '>', ' ']), "{t}");
        }
    }

    #[test]
    fn the_data_is_the_payload_without_a_tag() {
        let user_id = UserId::generate();
        let event = DomainEvent::FactorUnlocked(FactorUnlocked {
            user_id: user_id.clone(),
            factor: None,
            by: "operator".into(),
        });
        assert_eq!(event.event_type(), FACTOR_UNLOCKED);
        assert_eq!(
            event.data().ok(),
            Some(serde_json::json!({ "user_id": user_id, "by": "operator" }))
        );
    }
}
