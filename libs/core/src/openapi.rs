//! OpenAPI schemas for the domain newtypes that travel as plain strings.
//!
//! The wire structs derive `utoipa::ToSchema`; the newtypes below serialize
//! through `String` (`#[serde(try_from = "String", into = "String")]`), so
//! their schema is written here once: a string, with the pattern its `parse`
//! accepts where one exists, so a generated client (or a fuzzer) sees the same
//! rule the server enforces.

use crate::ids::{
    AccountId, ApiKeyId, DeletionId, EventId, IssuerId, OrganizationId, PersonalTokenId, SessionId,
    UserId, WebhookEndpointId,
};
use crate::origin::AllowedOrigin;
use crate::proto::SecretText;
use crate::scope::Scope;
use crate::waf_policy::MailDomain;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

fn string(description: &str, pattern: Option<String>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .into()
}

macro_rules! string_schema {
    ($ty:ty, $description:expr, $pattern:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string($description, $pattern)
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

macro_rules! id_schema {
    ($($ty:ident),* $(,)?) => {$(
        string_schema!(
            $ty,
            concat!("An opaque ", stringify!($ty), ": its type prefix, then 32 lowercase hex digits."),
            Some(format!("^{}[0-9a-f]{{32}}$", $ty::PREFIX))
        );
    )*};
}

id_schema!(
    UserId,
    SessionId,
    IssuerId,
    AccountId,
    ApiKeyId,
    OrganizationId,
    DeletionId,
    WebhookEndpointId,
    EventId,
    PersonalTokenId,
);

string_schema!(
    Scope,
    "`<resource>:<read|write|manage|delete>`; `*` as the resource means every resource.",
    Some(
        "^(\\*|users|sessions|organizations|webhooks|audit|issuers|api_keys):(read|write|manage|delete)$"
            .to_owned()
    )
);
string_schema!(
    AllowedOrigin,
    "An origin (`https://app.example.com`) or a wildcard subdomain pattern (`https://*.example.com`).",
    None
);
string_schema!(
    SecretText,
    "A secret (a password, a token or a code): shown once, never logged.",
    None
);
string_schema!(
    MailDomain,
    "A mail domain in canonical form (lower case, punycode); it covers its subdomains.",
    None
);
