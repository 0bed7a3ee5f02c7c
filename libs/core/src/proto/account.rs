//! account service: `<prefix>.account.v1.<op>`.

use crate::{
    AccountId, AllowedOrigin, ApiKeyId, IssuerId, IssuerPolicy, KeyKind, KeyMode, Scope, Timestamp,
};
use serde::{Deserialize, Serialize};

pub const RESOLVE_KEY: &str = "resolve_key";
pub const GET_ISSUER: &str = "get_issuer";
pub const UPDATE_ISSUER: &str = "update_issuer";
pub const CREATE_ISSUER: &str = "create_issuer";
pub const CREATE_API_KEY: &str = "create_api_key";
pub const LIST_API_KEYS: &str = "list_api_keys";
pub const REVOKE_API_KEY: &str = "revoke_api_key";
pub const RESOLVE_HOST: &str = "resolve_host";
pub const ADD_DOMAIN: &str = "add_domain";
pub const LIST_DOMAINS: &str = "list_domains";
pub const REMOVE_DOMAIN: &str = "remove_domain";
pub const VERIFY_DOMAIN: &str = "verify_domain";
pub const LIST_AUDIT_EVENTS: &str = "list_audit_events";

super::operation::operations!(service "account" {
    ResolveKey => Resolved = RESOLVE_KEY,
    IssuerRef => Issuer = GET_ISSUER,
    UpdateIssuer => Issuer = UPDATE_ISSUER,
    CreateIssuer => CreatedIssuer = CREATE_ISSUER,
    CreateApiKey => CreatedApiKey = CREATE_API_KEY,
    ListApiKeys => ApiKeyList = LIST_API_KEYS,
    RevokeApiKey => ApiKeyInfo = REVOKE_API_KEY,
    ResolveHost => ResolvedHost = RESOLVE_HOST,
    AddDomain => IssuerDomain = ADD_DOMAIN,
    ListDomains => DomainList = LIST_DOMAINS,
    RemoveDomain => IssuerDomain = REMOVE_DOMAIN,
    VerifyDomain => IssuerDomain = VERIFY_DOMAIN,
    ListAuditEvents => AuditEventList = LIST_AUDIT_EVENTS,
});

/// Look a key up by the hex SHA-256 of its full text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveKey {
    pub key_hash: String,
}

/// Everything edge-guard needs to authorise a call, cached per key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyConfig {
    pub key_id: ApiKeyId,
    pub account_id: AccountId,
    pub issuer_id: IssuerId,
    pub issuer_mode: KeyMode,
    /// The issuer's display name (branding of its mail and TOTP entries).
    #[serde(default)]
    pub issuer_name: String,
    pub kind: KeyKind,
    pub mode: KeyMode,
    pub scopes: Vec<Scope>,
    pub allowed_origins: Vec<AllowedOrigin>,
    pub policy: IssuerPolicy,
    /// The account's plan: the ceilings the edge caps the policy's limits
    /// and quotas with.
    #[serde(default)]
    pub plan: crate::AccountPlan,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    /// `None` when no live key has this hash.
    pub key: Option<KeyConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuerRef {
    pub issuer_id: IssuerId,
}

/// A page of the issuer's API keys, newest first (revoked ones included,
/// with `revoked_at`): an issuer may hold any number of keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListApiKeys {
    pub issuer_id: IssuerId,
    pub page: crate::page::Page,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issuer {
    pub id: IssuerId,
    pub account_id: AccountId,
    pub name: String,
    pub mode: KeyMode,
    pub allowed_origins: Vec<AllowedOrigin>,
    pub policy: IssuerPolicy,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The account's plan (the ceilings of `policy.waf`), shown to the
    /// tenant by `GET /v1/issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::AccountPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateIssuer {
    pub issuer_id: IssuerId,
    pub allowed_origins: Option<Vec<AllowedOrigin>>,
    pub policy: Option<IssuerPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateIssuer {
    pub account_id: AccountId,
    /// The key asking. Its record decides: a test key cannot create a live
    /// issuer, and the new issuer's first key gets this key's scopes.
    pub created_by: ApiKeyId,
    pub name: String,
    pub mode: KeyMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedIssuer {
    pub issuer: Issuer,
    pub secret_key: super::SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateApiKey {
    pub issuer_id: IssuerId,
    /// The key asking: the new key's scopes must be within this key's own.
    pub created_by: ApiKeyId,
    pub kind: KeyKind,
    pub name: String,
    /// For secret keys; `None` means the creating key's scopes (never more).
    /// Must be `None` for restricted keys.
    pub scopes: Option<Vec<Scope>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    pub id: ApiKeyId,
    pub issuer_id: IssuerId,
    pub kind: KeyKind,
    pub mode: KeyMode,
    pub name: String,
    pub hint: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key itself: shown once, never stored.
    pub key: super::SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyInfo>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeApiKey {
    pub issuer_id: IssuerId,
    pub key_id: ApiKeyId,
}

/// Which issuer a per-issuer host serves (docs/EDGE.md, "Per-issuer
/// hosts"): a platform subdomain names the issuer, a custom domain is looked
/// up among the verified ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveHost {
    Issuer(IssuerId),
    Domain(crate::DomainName),
}

/// What the edge needs to answer for a per-issuer host before any key is
/// seen: preflights, origin checks for every answer, the cookie `Domain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuerHost {
    pub issuer_id: IssuerId,
    pub allowed_origins: Vec<AllowedOrigin>,
    pub policy: IssuerPolicy,
    /// The session cookie's `Domain` on this host (a custom domain only,
    /// when the tenant set one); `None`: a host-only `__Host-` cookie.
    pub cookie_domain: Option<crate::DomainName>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedHost {
    /// `None`: no issuer is served there (unknown, or not verified yet).
    pub host: Option<IssuerHost>,
}

/// Register a custom domain for the issuer; unusable until verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddDomain {
    pub issuer_id: IssuerId,
    pub domain: crate::DomainName,
    /// The cookie `Domain`: the domain itself or a parent of it.
    pub cookie_domain: Option<crate::DomainName>,
}

/// The issuer's custom domains (the same body as [`IssuerRef`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListDomains(pub IssuerRef);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveDomain {
    pub issuer_id: IssuerId,
    pub domain: crate::DomainName,
}

/// Look the domain's TXT record up now; verified when it holds the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyDomain {
    pub issuer_id: IssuerId,
    pub domain: crate::DomainName,
}

/// The DNS record that proves control of a custom domain.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainChallenge {
    /// Always `TXT`.
    pub record_type: String,
    /// `_idmesh-challenge.<domain>`
    pub name: String,
    /// `idmesh-domain-verification=<token>`
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuerDomain {
    #[schema(value_type = String)]
    pub domain: crate::DomainName,
    #[schema(value_type = Option<String>)]
    pub cookie_domain: Option<crate::DomainName>,
    pub verified: bool,
    pub challenge: DomainChallenge,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub verified_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainList {
    pub data: Vec<IssuerDomain>,
}

/// Broadcast on `<prefix>.config.changed.<issuer>` whenever anything an edge
/// caches for that issuer changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub issuer_id: IssuerId,
    /// The hash of a revoked key, so edges can drop exactly that entry.
    pub key_hash: Option<String>,
}

/// The audit log of one issuer (`GET /v1/audit_events`), newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListAuditEvents {
    pub issuer_id: IssuerId,
    pub filter: AuditFilter,
}

/// Filters of the audit log (the tenant's and the operator's view).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    /// An event type (`api_key.created`) or a family (`api_key.*`).
    pub event_type: Option<String>,
    pub actor: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub since: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub until: Option<Timestamp>,
    /// 1..=100.
    pub limit: u32,
    /// An audit event id (`evt_…`): the page continues after it.
    pub starting_after: Option<String>,
}

/// One audit record: ids only, never personal data.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// The event's id (`evt_…`).
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = String)]
    pub issuer_id: IssuerId,
    /// `key_…`, `usr_…`, `operator` or `system`.
    pub actor: String,
    pub request_id: Option<String>,
    /// The caller's network (`/24` or `/48`), when the event came from a
    /// request.
    pub network: Option<String>,
    /// The event's data (ids and non-personal fields).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEventList {
    pub data: Vec<AuditEvent>,
    pub has_more: bool,
}
