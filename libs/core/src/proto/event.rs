//! Events on the JetStream `EVENTS` stream, subject
//! `<prefix>.events.<issuer>.<type>`. Payloads carry ids, never personal data.

use crate::ids::OrganizationId;
use crate::{ApiKeyId, IssuerId, Region, SessionId, Timestamp, UserId};
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
pub const USER_CREATED: &str = "user.created";
pub const USER_UPDATED: &str = "user.updated";
/// The user's address changed (after the new address was proven).
pub const EMAIL_CHANGED: &str = "email.changed";
pub const API_KEY_CREATED: &str = "api_key.created";
pub const API_KEY_REVOKED: &str = "api_key.revoked";
pub const ISSUER_UPDATED: &str = "issuer.updated";
pub const ORGANIZATION_CREATED: &str = "organization.created";
pub const ORGANIZATION_UPDATED: &str = "organization.updated";
pub const ORGANIZATION_DELETED: &str = "organization.deleted";
pub const MEMBERSHIP_CREATED: &str = "membership.created";
pub const MEMBERSHIP_UPDATED: &str = "membership.updated";
pub const MEMBERSHIP_DELETED: &str = "membership.deleted";
// deletion: the user-deletion workflow (deletion-worker)
/// The deletion cascade finished: nothing of the user is left.
pub const USER_DELETED: &str = "user.deleted";
/// A step of a deletion kept failing past `DELETION_STALL_AFTER`; the job
/// keeps retrying.
pub const USER_DELETION_STALLED: &str = "user.deletion_stalled";
/// The webhook service disabled an endpoint (410 Gone, or failing for the
/// disable period).
pub const WEBHOOK_ENDPOINT_DISABLED: &str = "webhook_endpoint.disabled";
// Administrative events the audit log must hold (issue 12).
pub const WEBHOOK_ENDPOINT_CREATED: &str = "webhook_endpoint.created";
pub const WEBHOOK_ENDPOINT_UPDATED: &str = "webhook_endpoint.updated";
pub const WEBHOOK_ENDPOINT_DELETED: &str = "webhook_endpoint.deleted";
pub const WEBHOOK_ENDPOINT_SECRET_ROTATED: &str = "webhook_endpoint.secret_rotated";
/// An operator lifted a ban.
pub const IP_BAN_LIFTED: &str = "ip.ban_lifted";
/// One step of a user's deletion finished (the job's progress, ids only).
pub const USER_DELETION_STEP_COMPLETED: &str = "user.deletion_step_completed";
/// Operator actions on the account service's own API.
pub const ACCOUNT_CREATED: &str = "account.created";
pub const ACCOUNT_PLAN_CHANGED: &str = "account.plan_changed";
pub const ISSUER_PROVISIONED: &str = "issuer.provisioned";
/// A user's data moved to another region (copied, verified, switched, and
/// the source deleted).
pub const USER_MOVED: &str = "user.moved";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: crate::ids::EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub issuer_id: IssuerId,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: Timestamp,
    pub data: serde_json::Value,
    /// Who caused it, for the audit log (stamped by `Events::publish` from
    /// the request context): `key_…` (an API key), `usr_…` (an end user),
    /// `operator` or `system`. Not part of the webhook body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The caller's network (`/24` of IPv4, `/48` of IPv6), never the
    /// address. Not part of the webhook body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
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
    UserCreated(UserCreated),
    UserUpdated(UserUpdated),
    EmailChanged(UserRef),
    ApiKeyCreated(ApiKeyChanged),
    ApiKeyRevoked(ApiKeyChanged),
    IssuerUpdated(IssuerUpdated),
    OrganizationCreated(OrganizationChanged),
    OrganizationUpdated(OrganizationChanged),
    OrganizationDeleted(OrganizationChanged),
    MembershipCreated(MembershipChanged),
    MembershipUpdated(MembershipChanged),
    MembershipDeleted(MembershipChanged),
    UserDeleted(UserDeleted),
    UserDeletionStalled(UserDeletionStalled),
    WebhookEndpointDisabled(WebhookEndpointDisabled),
    WebhookEndpointCreated(WebhookEndpointChanged),
    WebhookEndpointUpdated(WebhookEndpointChanged),
    WebhookEndpointDeleted(WebhookEndpointChanged),
    WebhookEndpointSecretRotated(WebhookEndpointChanged),
    IpBanLifted(IpBanLifted),
    UserDeletionStepCompleted(UserDeletionStepCompleted),
    AccountCreated(AccountChanged),
    AccountPlanChanged(AccountChanged),
    IssuerProvisioned(IssuerProvisioned),
    UserMoved(UserMoved),
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
        USER_CREATED,
        USER_UPDATED,
        EMAIL_CHANGED,
        API_KEY_CREATED,
        API_KEY_REVOKED,
        ISSUER_UPDATED,
        ORGANIZATION_CREATED,
        ORGANIZATION_UPDATED,
        ORGANIZATION_DELETED,
        MEMBERSHIP_CREATED,
        MEMBERSHIP_UPDATED,
        MEMBERSHIP_DELETED,
        USER_DELETED,
        USER_DELETION_STALLED,
        WEBHOOK_ENDPOINT_DISABLED,
        WEBHOOK_ENDPOINT_CREATED,
        WEBHOOK_ENDPOINT_UPDATED,
        WEBHOOK_ENDPOINT_DELETED,
        WEBHOOK_ENDPOINT_SECRET_ROTATED,
        IP_BAN_LIFTED,
        USER_DELETION_STEP_COMPLETED,
        ACCOUNT_CREATED,
        ACCOUNT_PLAN_CHANGED,
        ISSUER_PROVISIONED,
        USER_MOVED,
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
            DomainEvent::UserCreated(_) => USER_CREATED,
            DomainEvent::UserUpdated(_) => USER_UPDATED,
            DomainEvent::EmailChanged(_) => EMAIL_CHANGED,
            DomainEvent::ApiKeyCreated(_) => API_KEY_CREATED,
            DomainEvent::ApiKeyRevoked(_) => API_KEY_REVOKED,
            DomainEvent::IssuerUpdated(_) => ISSUER_UPDATED,
            DomainEvent::OrganizationCreated(_) => ORGANIZATION_CREATED,
            DomainEvent::OrganizationUpdated(_) => ORGANIZATION_UPDATED,
            DomainEvent::OrganizationDeleted(_) => ORGANIZATION_DELETED,
            DomainEvent::MembershipCreated(_) => MEMBERSHIP_CREATED,
            DomainEvent::MembershipUpdated(_) => MEMBERSHIP_UPDATED,
            DomainEvent::MembershipDeleted(_) => MEMBERSHIP_DELETED,
            DomainEvent::UserDeleted(_) => USER_DELETED,
            DomainEvent::UserDeletionStalled(_) => USER_DELETION_STALLED,
            DomainEvent::WebhookEndpointDisabled(_) => WEBHOOK_ENDPOINT_DISABLED,
            DomainEvent::WebhookEndpointCreated(_) => WEBHOOK_ENDPOINT_CREATED,
            DomainEvent::WebhookEndpointUpdated(_) => WEBHOOK_ENDPOINT_UPDATED,
            DomainEvent::WebhookEndpointDeleted(_) => WEBHOOK_ENDPOINT_DELETED,
            DomainEvent::WebhookEndpointSecretRotated(_) => WEBHOOK_ENDPOINT_SECRET_ROTATED,
            DomainEvent::IpBanLifted(_) => IP_BAN_LIFTED,
            DomainEvent::UserDeletionStepCompleted(_) => USER_DELETION_STEP_COMPLETED,
            DomainEvent::AccountCreated(_) => ACCOUNT_CREATED,
            DomainEvent::AccountPlanChanged(_) => ACCOUNT_PLAN_CHANGED,
            DomainEvent::IssuerProvisioned(_) => ISSUER_PROVISIONED,
            DomainEvent::UserMoved(_) => USER_MOVED,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: UserId,
    pub region: Region,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user_id: UserId,
    /// Names of the fields that changed (`name`, `metadata`, ...), never
    /// their values.
    pub fields: Vec<String>,
}

/// `api_key.created` and `api_key.revoked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyChanged {
    pub key_id: ApiKeyId,
    pub kind: crate::KeyKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuerUpdated {
    /// Names of the settings that changed (`allowed_origins`, `policy`, ...).
    pub fields: Vec<String>,
}

/// `organization.created/updated/deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationChanged {
    pub organization_id: OrganizationId,
}

/// `membership.created/updated/deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipChanged {
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    /// The role after the change (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `user.deleted`: the cascade finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: UserId,
    pub deletion_id: crate::ids::DeletionId,
    pub region: Region,
}

/// `user.moved`: ids and regions only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMoved {
    pub user_id: UserId,
    pub move_id: crate::ids::MoveId,
    pub from_region: Region,
    pub to_region: Region,
}

/// `user.deletion_stalled`: `step` kept failing; the job keeps retrying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDeletionStalled {
    pub user_id: UserId,
    pub deletion_id: crate::ids::DeletionId,
    pub step: String,
    pub attempts: i32,
}

/// `webhook_endpoint.disabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpointDisabled {
    pub endpoint_id: crate::ids::WebhookEndpointId,
    /// `gone` (410) or `failing` (failed continuously for the period).
    pub reason: String,
}

/// `webhook_endpoint.created/updated/deleted/secret_rotated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpointChanged {
    pub endpoint_id: crate::ids::WebhookEndpointId,
}

/// `ip.ban_lifted`: an operator ended the bans of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpBanLifted {
    pub ip: String,
    pub by: String,
}

/// `user.deletion_step_completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDeletionStepCompleted {
    pub user_id: UserId,
    pub deletion_id: crate::ids::DeletionId,
    pub step: String,
}

/// `account.created` and `account.plan_changed` (published for each of the
/// account's issuers, whose audit logs they belong to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountChanged {
    pub account_id: crate::AccountId,
}

/// `issuer.provisioned`: an operator pre-provisioned regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuerProvisioned {
    pub regions: Vec<Region>,
    pub complete: bool,
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
