//! Wire types for calls between services over NATS. One module per service
//! that answers them; the operation name is the last subject token.
//!
//! These are the single definition of each message: services, edge-guard and
//! the test kit all use them, so the contract lives in one place.

pub mod account;
pub mod auth;
pub mod event;
pub mod operation;
pub mod session;
pub mod store;
pub mod user;
// deletion: organizations and the deletion workflow
pub mod deletion;
// Regions at scale: moving a user between regions.
pub mod moves;
pub mod organization;
pub mod webhook;

pub use operation::{Operation, OperationInfo, ServiceOperation, StoreOperation, Target};

use crate::{AccountId, IssuerId, IssuerPolicy};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret that must cross the bus (a password on its way to the regional
/// store that hashes it, a freshly minted token on its way to the client).
/// Its `Debug` is redacted, so it cannot reach a log by accident.
#[derive(Clone)]
pub struct SecretText(SecretString);

impl SecretText {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Who is calling, as established by edge-guard from the API key: services
/// trust it because only the identities the bus permission table
/// (`idm_bus::acl`) allows can publish each internal subject, and the
/// serving loop checks the caller against the same table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuerContext {
    pub issuer_id: IssuerId,
    pub account_id: AccountId,
    pub policy: IssuerPolicy,
    /// The issuer's display name (its `name`): what its users see in mail
    /// and in their authenticator app. Empty from an older edge.
    #[serde(default)]
    pub issuer_name: String,
}

/// The caller's device as seen at the edge, recorded with sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Device {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// ISO country from the trusted proxy header, when there is one.
    pub country: Option<String>,
}

/// Operations with no meaningful result reply with this.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Done {}
