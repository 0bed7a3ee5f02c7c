//! API-key scopes: `<resource>:<level>`.
//!
//! `manage` implies `write` implies `read`. `delete` stands alone: destroying
//! data is never granted as a side effect of another scope. `*` as the
//! resource means every resource, including resources added later.
//!
//! Delegation (a key creating a key, an issuer or a personal token) never
//! widens: `check_delegation` is the one rule, docs/SECURITY.md the story.

use crate::{ApiError, ErrorCode};
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

    pub fn as_str(self) -> &'static str {
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
    pub const ALL: [Level; 4] = [Level::Read, Level::Write, Level::Manage, Level::Delete];

    pub fn as_str(self) -> &'static str {
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

    /// Every scope that can be written: each level on each resource and on
    /// `*`. For exhaustive tests and for building the strongest key that
    /// still lacks one scope.
    pub fn every() -> impl Iterator<Item = Scope> {
        std::iter::once(None)
            .chain(Resource::ALL.into_iter().map(Some))
            .flat_map(|resource| {
                Level::ALL
                    .into_iter()
                    .map(move |level| Scope { resource, level })
            })
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

/// The delegation rule: a credential holding `held` may hand out `wanted`
/// (to a new key, a new issuer's first key, or a personal token) only when
/// every wanted scope is granted by one held scope.
///
/// One held scope per wanted scope is exact, not conservative: `grants` is a
/// partial order (`*` above every resource; `manage` > `write` > `read`;
/// `delete` alone), so a wanted scope's rights are covered by a set of held
/// scopes only if the wanted scope itself is. In particular `*:<level>` needs
/// a held `*:<level>` (or stronger): holding that level on every resource
/// listed today is not enough, because `*` also covers resources added later.
pub fn check_delegation(held: &[Scope], wanted: &[Scope]) -> Result<(), ApiError> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !any_grants(held, **w))
        .map(Scope::to_string)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InsufficientScope,
        format!(
            "a key cannot grant scopes it does not hold: {}",
            missing.join(", ")
        ),
    ))
}

/// Whether a free-form scope string (a personal token's) lies in idmesh's own
/// namespace: `*…`, or `<resource>:…` for one of idmesh's resources (in any
/// letter case, since a tenant's checker might fold it).
fn names_a_platform_scope(raw: &str) -> bool {
    let head = raw
        .split_once(':')
        .map_or(raw, |(head, _)| head)
        .to_ascii_lowercase();
    raw.starts_with('*') || Resource::ALL.iter().any(|r| r.as_str() == head)
}

/// A personal token's scopes, checked against the key that mints it.
///
/// Tenant-defined scopes (`repo:read`, `billing.view`) are the tenant's own
/// vocabulary and pass. idmesh's namespace is reserved: a scope that starts
/// with `*` or names an idmesh resource must be a well-formed idmesh scope
/// (`validation_failed` otherwise) that the minting key itself holds
/// (`insufficient_scope` otherwise), so a token can never claim more of
/// idmesh than the key that made it.
pub fn check_personal_token_scopes(held: &[Scope], requested: &[String]) -> Result<(), ApiError> {
    let mut platform = Vec::new();
    for raw in requested.iter().filter(|r| names_a_platform_scope(r)) {
        let scope = Scope::parse(raw).map_err(|_| {
            ApiError::validation(format!(
                "'{}' is in idmesh's scope namespace but is not an idmesh scope",
                raw.chars().take(64).collect::<String>()
            ))
        })?;
        platform.push(scope);
    }
    check_delegation(held, &platform)
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
        assert_eq!(Scope::every().count(), 32);
        for scope in Scope::every() {
            assert_eq!(Scope::parse(&scope.to_string()).ok(), Some(scope));
        }
    }

    fn set(raw: &[&str]) -> Vec<Scope> {
        raw.iter().map(|r| s(r)).collect()
    }

    fn delegable(held: &[&str], wanted: &[&str]) -> bool {
        check_delegation(&set(held), &set(wanted)).is_ok()
    }

    #[test]
    fn delegation_follows_the_lattice() {
        // Implied levels may be handed on; stronger ones may not.
        assert!(delegable(&["users:manage"], &["users:read", "users:write"]));
        assert!(delegable(&["users:manage"], &["users:manage"]));
        assert!(!delegable(&["users:write"], &["users:manage"]));
        assert!(!delegable(&["users:read"], &["users:write"]));
        // delete is never implied, and implies nothing.
        assert!(!delegable(&["users:manage"], &["users:delete"]));
        assert!(!delegable(&["*:manage"], &["users:delete"]));
        assert!(!delegable(&["users:delete"], &["users:read"]));
        assert!(delegable(&["*:delete"], &["api_keys:delete"]));
        // `*` covers each resource, but no list of resources covers `*`.
        assert!(delegable(&["*:read"], &["audit:read", "issuers:read"]));
        let every_resource_read: Vec<String> = Resource::ALL
            .iter()
            .map(|r| format!("{}:read", r.as_str()))
            .collect();
        let every_resource_read: Vec<&str> =
            every_resource_read.iter().map(String::as_str).collect();
        assert!(!delegable(&every_resource_read, &["*:read"]));
        assert!(!delegable(&["*:read"], &["*:write"]));
        assert!(delegable(&["*:manage"], &["*:write"]));
        // The classic escalation: only api_keys:manage, asking for more.
        assert!(!delegable(&["api_keys:manage"], &["*:manage"]));
        assert!(!delegable(&["api_keys:manage"], &["users:read"]));
        assert!(delegable(&["api_keys:manage"], &["api_keys:read"]));
        // Nothing wanted is always fine; nothing held grants nothing.
        assert!(delegable(&[], &[]));
        assert!(!delegable(&[], &["users:read"]));
        let refused = check_delegation(&set(&["users:read"]), &set(&["users:read", "*:delete"]));
        assert_eq!(
            refused.map_err(|e| (e.code, e.message.contains("*:delete"))),
            Err((ErrorCode::InsufficientScope, true))
        );
    }

    /// The rights a scope set stands for, computed from the documented
    /// lattice as plain data (not from `grants`): pairs of (resource,
    /// level), where resource `None` is a resource added after today, which
    /// only `*` reaches.
    fn rights(scopes: &[Scope]) -> std::collections::BTreeSet<(Option<usize>, usize)> {
        let below = |level: Level| -> &'static [Level] {
            match level {
                Level::Read => &[Level::Read],
                Level::Write => &[Level::Read, Level::Write],
                Level::Manage => &[Level::Read, Level::Write, Level::Manage],
                Level::Delete => &[Level::Delete],
            }
        };
        let index = |r: Resource| Resource::ALL.iter().position(|x| *x == r);
        let level_index = |l: Level| Level::ALL.iter().position(|x| *x == l).unwrap_or(99);
        let mut out = std::collections::BTreeSet::new();
        for scope in scopes {
            let resources: Vec<Option<usize>> = match scope.resource {
                Some(r) => vec![index(r)],
                None => std::iter::once(None)
                    .chain(Resource::ALL.into_iter().map(index))
                    .collect(),
            };
            for r in resources {
                for l in below(scope.level) {
                    out.insert((r, level_index(*l)));
                }
            }
        }
        out
    }

    #[test]
    fn delegation_is_exactly_inclusion_of_rights_for_every_small_set() {
        let every: Vec<Scope> = Scope::every().collect();
        let mut held_sets: Vec<Vec<Scope>> = vec![Vec::new()];
        for (i, a) in every.iter().enumerate() {
            held_sets.push(vec![*a]);
            for b in &every[i + 1..] {
                held_sets.push(vec![*a, *b]);
            }
        }
        let mut refusals = 0;
        for held in &held_sets {
            let held_rights = rights(held);
            for wanted in &every {
                let expected = rights(&[*wanted]).is_subset(&held_rights);
                let got = check_delegation(held, &[*wanted]).is_ok();
                assert_eq!(got, expected, "held {held:?}, wanted {wanted}");
                refusals += usize::from(!got);
            }
        }
        // The test is not vacuous: most combinations are refused.
        assert!(refusals > held_sets.len() * 16);
    }

    #[test]
    fn personal_token_scopes_stay_within_the_minting_key() {
        let key = set(&["users:manage"]);
        let ok = |wanted: &[&str]| {
            let wanted: Vec<String> = wanted.iter().map(|w| (*w).to_owned()).collect();
            check_personal_token_scopes(&key, &wanted).map_err(|e| e.code)
        };
        // The tenant's own vocabulary is the tenant's.
        assert_eq!(ok(&["repo:read", "billing.view", "admin"]), Ok(()));
        // idmesh's namespace: only what the key holds.
        assert_eq!(ok(&["users:read", "users:manage"]), Ok(()));
        for wider in ["api_keys:manage", "users:delete", "*:read", "sessions:read"] {
            assert_eq!(ok(&[wider]), Err(ErrorCode::InsufficientScope), "{wider}");
        }
        for malformed in [
            "*",
            "*:*",
            "users:*",
            "users:admin",
            "Users:manage",
            "*anything",
            "API_KEYS:read",
        ] {
            assert_eq!(
                ok(&[malformed]),
                Err(ErrorCode::ValidationFailed),
                "{malformed}"
            );
        }
    }
}
