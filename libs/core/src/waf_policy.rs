//! The edge guard's per-issuer knobs: IP velocity per route class, strikes and
//! bans, the email deny and allow lists, per-recipient send limits and the
//! monthly send quota. Every field has a default, so `{}` (or no `waf` at
//! all) is a sane policy; unknown fields are refused so a typo cannot silently
//! leave a limit at its default.

use crate::email::mail_domain;
use crate::ApiError;
use serde::{Deserialize, Serialize};

/// A sliding-window limit: at most `limit` requests in any `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct VelocityLimit {
    pub limit: u32,
    pub window_seconds: u32,
}

impl VelocityLimit {
    pub const fn new(limit: u32, window_seconds: u32) -> Self {
        Self {
            limit,
            window_seconds,
        }
    }
}

impl Default for VelocityLimit {
    fn default() -> Self {
        Self::new(300, 60)
    }
}

/// A domain in a policy list, kept in canonical form (lower case, punycode,
/// no trailing dot). It covers its subdomains too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MailDomain(String);

impl MailDomain {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        mail_domain(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MailDomain {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, ApiError> {
        Self::parse(&raw)
    }
}

impl From<MailDomain> for String {
    fn from(d: MailDomain) -> String {
        d.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WafPolicy {
    /// Secret-key routes. Generous: these are the tenant's own servers.
    pub backend: VelocityLimit,
    /// `/v1/client/…`: one browser, one person.
    pub client: VelocityLimit,
    /// `/v1/verifications…`: every call can send an email.
    pub verification: VelocityLimit,
    /// IPv6 clients are limited per network of this length (a /64 is one
    /// subscriber; an attacker gets a whole /64 for free).
    pub ipv6_prefix_len: u8,
    /// Breaches (at most one per route class per velocity window) that ban
    /// the IP when they fall inside `strike_window_seconds`.
    pub strikes_to_ban: u32,
    pub strike_window_seconds: u32,
    /// Whether breaches by secret-key callers count as strikes. Off by
    /// default: a secret key is the tenant's own server, and banning it for
    /// hours over a traffic spike is an outage; its breaches are still 429.
    pub secret_key_strikes: bool,
    /// The first ban's length; each later ban within `offence_memory_seconds`
    /// of the previous one doubles, up to `max_ban_seconds`.
    pub ban_seconds: u32,
    pub max_ban_seconds: u32,
    pub offence_memory_seconds: u32,
    /// Emails (codes, magic links, verifications) to one normalised
    /// recipient per `recipient_window_seconds`.
    pub recipient_limit: u32,
    pub recipient_window_seconds: u32,
    /// Emails the account may send per calendar month (UTC).
    pub monthly_email_quota: u32,
    /// Always refused (`disposable_email`), with their subdomains.
    pub email_deny_domains: Vec<MailDomain>,
    /// Accepted even when the disposable list names them (deny still wins).
    pub email_allow_domains: Vec<MailDomain>,
}

/// IPv6 clients are limited per network of between these many bits. Finer
/// than a /64 is refused: anyone holds a whole /64, so a /128 limit is free to
/// evade and lets one attacker fill the ban table with one address after
/// another.
pub const MIN_IPV6_PREFIX: u8 = 32;
pub const MAX_IPV6_PREFIX: u8 = 64;

const HOUR: u32 = 3600;
const DAY: u32 = 24 * HOUR;
const MAX_LIST: usize = 1000;

impl Default for WafPolicy {
    fn default() -> Self {
        Self {
            backend: VelocityLimit::new(3000, 60),
            client: VelocityLimit::new(300, 60),
            verification: VelocityLimit::new(30, 60),
            ipv6_prefix_len: 64,
            strikes_to_ban: 3,
            strike_window_seconds: HOUR,
            secret_key_strikes: false,
            ban_seconds: 4 * HOUR,
            max_ban_seconds: 7 * DAY,
            offence_memory_seconds: 30 * DAY,
            recipient_limit: 10,
            recipient_window_seconds: HOUR,
            monthly_email_quota: 10_000,
            email_deny_domains: Vec::new(),
            email_allow_domains: Vec::new(),
        }
    }
}

fn within(name: &str, value: u32, min: u32, max: u32) -> Result<(), ApiError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "waf.{name} must be between {min} and {max}"
        )))
    }
}

impl WafPolicy {
    pub fn validate(&self) -> Result<(), ApiError> {
        for (name, v) in [
            ("backend", self.backend),
            ("client", self.client),
            ("verification", self.verification),
        ] {
            within(&format!("{name}.limit"), v.limit, 1, 10_000_000)?;
            within(&format!("{name}.window_seconds"), v.window_seconds, 1, DAY)?;
        }
        if !(MIN_IPV6_PREFIX..=MAX_IPV6_PREFIX).contains(&self.ipv6_prefix_len) {
            return Err(ApiError::validation(format!(
                "waf.ipv6_prefix_len must be between {MIN_IPV6_PREFIX} and {MAX_IPV6_PREFIX}"
            )));
        }
        within("strikes_to_ban", self.strikes_to_ban, 1, 1000)?;
        within(
            "strike_window_seconds",
            self.strike_window_seconds,
            1,
            30 * DAY,
        )?;
        within("ban_seconds", self.ban_seconds, 1, 365 * DAY)?;
        within(
            "max_ban_seconds",
            self.max_ban_seconds,
            self.ban_seconds,
            365 * DAY,
        )?;
        within(
            "offence_memory_seconds",
            self.offence_memory_seconds,
            1,
            365 * DAY,
        )?;
        within("recipient_limit", self.recipient_limit, 1, 1_000_000)?;
        within(
            "recipient_window_seconds",
            self.recipient_window_seconds,
            1,
            30 * DAY,
        )?;
        if self.email_deny_domains.len() > MAX_LIST || self.email_allow_domains.len() > MAX_LIST {
            return Err(ApiError::validation(format!(
                "waf email domain lists hold at most {MAX_LIST} entries"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_default_and_validates() {
        let parsed: Result<WafPolicy, _> = serde_json::from_str("{}");
        assert_eq!(parsed.ok(), Some(WafPolicy::default()));
        assert!(WafPolicy::default().validate().is_ok());
    }

    #[test]
    fn unknown_fields_and_bad_domains_are_refused() {
        assert!(serde_json::from_str::<WafPolicy>(r#"{"strikes":3}"#).is_err());
        assert!(serde_json::from_str::<WafPolicy>(r#"{"client":{"limt":3}}"#).is_err());
        assert!(
            serde_json::from_str::<WafPolicy>(r#"{"email_deny_domains":["localhost"]}"#).is_err()
        );
        let p: Result<WafPolicy, _> =
            serde_json::from_str(r#"{"email_allow_domains":["Bücher.DE"]}"#);
        assert_eq!(
            p.ok().map(|p| p.email_allow_domains),
            Some(vec![MailDomain("xn--bcher-kva.de".into())])
        );
    }

    #[test]
    fn ipv6_prefixes_from_32_to_64_are_accepted() {
        for len in [32, 48, 56, 64] {
            let p = WafPolicy {
                ipv6_prefix_len: len,
                ..WafPolicy::default()
            };
            assert!(p.validate().is_ok(), "/{len}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let bad = [
            WafPolicy {
                client: VelocityLimit::new(0, 60),
                ..WafPolicy::default()
            },
            WafPolicy {
                ipv6_prefix_len: 8,
                ..WafPolicy::default()
            },
            // One address per network with one-strike bans would let a single
            // /64 fill the ban table.
            WafPolicy {
                ipv6_prefix_len: 128,
                strikes_to_ban: 1,
                ..WafPolicy::default()
            },
            WafPolicy {
                ipv6_prefix_len: 65,
                ..WafPolicy::default()
            },
            WafPolicy {
                ban_seconds: 100,
                max_ban_seconds: 50,
                ..WafPolicy::default()
            },
            WafPolicy {
                strikes_to_ban: 0,
                ..WafPolicy::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }
}
