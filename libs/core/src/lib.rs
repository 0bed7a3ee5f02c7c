//! Shared domain types and wire contracts for every idmesh service.
//!
//! Everything that crosses a boundary (HTTP, NATS, storage) is parsed into one
//! of these types first, so the rest of the code never re-checks its input.

pub mod api_key;
pub mod clock;
pub mod config;
pub mod email;
pub mod error;
pub mod fair_share;
pub mod ids;
pub mod metric;
mod openapi;
pub mod origin;
pub mod page;
pub mod plan;
pub mod policy;
pub mod proto;
pub mod region;
pub mod scope;
pub mod text;
pub mod waf_policy;

pub use api_key::{ApiKey, KeyKind, KeyMode};
pub use email::Email;
pub use error::{ApiError, ErrorCode, ErrorInfo, ERROR_CODES};
pub use ids::{AccountId, ApiKeyId, IssuerId, PersonalTokenId, SessionId, UserId};
pub use origin::{AllowedOrigin, DomainName, Origin};
pub use plan::AccountPlan;
pub use policy::{IssuerPolicy, MailBranding};
pub use region::{Country, Jurisdiction, Region};
pub use scope::Scope;
pub use waf_policy::WafPolicy;

/// Timestamps on the wire are RFC 3339 UTC.
pub type Timestamp = time::OffsetDateTime;

/// Current time; one place so that a controllable clock can be added later.
pub fn now() -> Timestamp {
    time::OffsetDateTime::now_utc()
}

/// A readiness probe: `Ok` when one dependency answers. Defined here so that
/// the db and bus crates can offer probes without depending on telemetry.
pub type Probe = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;
