//! Opaque, type-prefixed identifiers (`usr_…`, `iss_…`). The body is a UUIDv7
//! in lowercase hex so ids sort by creation time and index well.

use serde::{Deserialize, Serialize};

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            pub fn parse(raw: &str) -> Result<Self, crate::ApiError> {
                let body = raw.strip_prefix($prefix).ok_or_else(|| {
                    crate::ApiError::not_found(stringify!($name))
                })?;
                if body.len() == 32 && body.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(crate::ApiError::not_found(stringify!($name)))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id without its prefix: safe as a SQL identifier fragment.
            pub fn body(&self) -> &str {
                &self.0[$prefix.len()..]
            }
        }

        impl TryFrom<String> for $name {
            type Error = crate::ApiError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(UserId, "usr_");
prefixed_id!(SessionId, "ses_");
prefixed_id!(IssuerId, "iss_");
prefixed_id!(AccountId, "acct_");
prefixed_id!(ApiKeyId, "key_");
prefixed_id!(OrganizationId, "org_");
prefixed_id!(DeletionId, "del_");
// Regions at scale: moving a user between regions.
prefixed_id!(MoveId, "mov_");
prefixed_id!(WebhookEndpointId, "whe_");
prefixed_id!(EventId, "evt_");
prefixed_id!(PersonalTokenId, "pat_");
// Users helper (issue 11): devices seen in sessions, consent records.
prefixed_id!(DeviceId, "dev_");
prefixed_id!(ConsentId, "cns_");
// Webhooks: one event's delivery to one endpoint, and each HTTP attempt.
prefixed_id!(WebhookMessageId, "msg_");
prefixed_id!(WebhookAttemptId, "att_");

impl IssuerId {
    /// The Postgres schema that holds this issuer's identity store in every
    /// region. Derived from the validated id, so it is always a safe identifier.
    pub fn store_schema(&self) -> String {
        format!("iss_{}", self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_and_prefixes_are_checked() {
        let id = UserId::generate();
        assert!(id.as_str().starts_with("usr_"));
        assert_eq!(UserId::parse(id.as_str()).ok(), Some(id.clone()));
        assert!(IssuerId::parse(id.as_str()).is_err());
        assert!(UserId::parse("usr_../../etc").is_err());
        assert!(UserId::parse("usr_0123456789ABCDEF0123456789abcdef").is_err());
    }

    #[test]
    fn store_schema_is_a_plain_identifier() {
        let id = IssuerId::generate();
        let schema = id.store_schema();
        assert!(schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    }
}
