//! API-key scopes: `<resource>:<level>`.
//!
//! `manage` implies `write` implies `read`. `delete` stands alone: destroying
//! data is never granted as a side effect of another scope. `*` as the
//! resource means every resource.

use crate::ApiError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Users,
    Sessions,
    Organizations,
    Webhooks,
    Audit,
    Issuers,
    ApiKeys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Read,
    Write,
    Manage,
    Delete,
}

impl Resource {
    pub const ALL: [Resource; 7] = [
        Resource::Users,
        Resource::Sessions,
        Resource::Organizations,
        Resource::Webhooks,
        Resource::Audit,
        Resource::Issuers,
        Resource::ApiKeys,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::Sessions => "sessions",
            Resource::Organizations => "organizations",
            Resource::Webhooks => "webhooks",
            Resource::Audit => "audit",
            Resource::Issuers => "issuers",
            Resource::ApiKeys => "api_keys",
        }
    }
}

impl Level {
    const ALL: [Level; 4] = [Level::Read, Level::Write, Level::Manage, Level::Delete];

    fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Manage => "manage",
            Level::Delete => "delete",
        }
    }

    fn implies(self, required: Level) -> bool {
        use Level::*;
        matches!(
            (self, required),
            (Read, Read)
                | (Write, Read | Write)
                | (Manage, Read | Write | Manage)
                | (Delete, Delete)
        )
    }
}

/// One granted or required scope. `resource: None` is the `*` wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope {
    resource: Option<Resource>,
    level: Level,
}

impl Scope {
    pub const fn new(resource: Resource, level: Level) -> Self {
        Self {
            resource: Some(resource),
            level,
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::validation(format!(
                "'{}' is not a scope (<resource>:<read|write|manage|delete>)",
                raw.chars().take(40).collect::<String>()
            ))
        };
        let (resource, level) = raw.split_once(':').ok_or_else(bad)?;
        let level = Level::ALL
            .into_iter()
            .find(|l| l.as_str() == level)
            .ok_or_else(bad)?;
        let resource = if resource == "*" {
            None
        } else {
            Some(
                Resource::ALL
                    .into_iter()
                    .find(|r| r.as_str() == resource)
                    .ok_or_else(bad)?,
            )
        };
        Ok(Self { resource, level })
    }

    /// Every scope there is: what a key gets when none are asked for.
    pub fn all() -> Vec<Scope> {
        Level::ALL
            .into_iter()
            .map(|level| Scope {
                resource: None,
                level,
            })
            .collect()
    }

    pub fn grants(&self, required: Scope) -> bool {
        let resource_ok = match (self.resource, required.resource) {
            (None, _) => true,
            (Some(held), Some(needed)) => held == needed,
            (Some(_), None) => false,
        };
        resource_ok && self.level.implies(required.level)
    }
}

pub fn any_grants(held: &[Scope], required: Scope) -> bool {
    held.iter().any(|s| s.grants(required))
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = self.resource.map_or("*", Resource::as_str);
        write!(f, "{resource}:{}", self.level.as_str())
    }
}

impl TryFrom<String> for Scope {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, ApiError> {
        Self::parse(&raw)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(raw: &str) -> Scope {
        match Scope::parse(raw) {
            Ok(s) => s,
            Err(e) => unreachable!("{e}"),
        }
    }

    #[test]
    fn levels_imply_downwards_but_delete_stands_alone() {
        assert!(s("users:manage").grants(s("users:read")));
        assert!(s("users:write").grants(s("users:read")));
        assert!(!s("users:read").grants(s("users:write")));
        assert!(!s("users:manage").grants(s("users:delete")));
        assert!(!s("users:delete").grants(s("users:read")));
        assert!(!s("sessions:manage").grants(s("users:read")));
        assert!(s("*:manage").grants(s("api_keys:write")));
    }

    #[test]
    fn parse_rejects_unknowns_and_round_trips() {
        assert!(Scope::parse("users").is_err());
        assert!(Scope::parse("users:admin").is_err());
        assert!(Scope::parse("things:read").is_err());
        assert_eq!(s("api_keys:delete").to_string(), "api_keys:delete");
        assert_eq!(Scope::all().len(), 4);
    }
}
