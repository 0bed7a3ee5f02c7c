//! Browser origins and the issuer's allowed-origin list.
//!
//! A browser sends `Origin: scheme://host[:port]` and nothing else, so
//! anything more (userinfo, path, query, fragment, a list) is refused outright
//! rather than stripped and then matched: stripping is how `evil.com/mybrand.com`
//! style bypasses happen. For the same reason a request's `Origin` must be in
//! its canonical serialization: it is compared, never normalised. The
//! tenant's own `allowed_origins` entries are normalised when saved (and
//! shown back normalised), since the tenant is not the adversary there.

use crate::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginHost {
    Domain(String),
    Ip(IpAddr),
}

/// A parsed `Origin` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: OriginHost,
    pub port: Option<u16>,
}

fn not_allowed(message: &str) -> ApiError {
    ApiError::new(ErrorCode::OriginNotAllowed, message)
}

/// A domain exactly as a browser serializes it: lower-case LDH labels (IDN
/// already in punycode), none empty, no trailing dot, no `*`, no `_`.
fn is_canonical_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl Origin {
    /// Accepts only the canonical serialization a browser sends:
    /// `scheme://host[:port]` with a lower-case scheme and host, IDN in
    /// punycode, no default port, no trailing dot. Anything else (upper
    /// case, a percent-encoded or `*` host, `:443`, a trailing slash, a
    /// path, userinfo, …) is refused, never normalised and then matched:
    /// every normalisation is a second spelling an attacker can try.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        if raw.is_empty() || raw.len() > 2048 {
            return Err(not_allowed("the Origin header is missing or too long"));
        }
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || !c.is_ascii())
        {
            return Err(not_allowed("the Origin header has forbidden characters"));
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| not_allowed("the Origin is not scheme://host"))?;
        if scheme != "http" && scheme != "https" {
            return Err(not_allowed("the Origin scheme must be http or https"));
        }
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '\\']) {
            return Err(not_allowed("the Origin must be only scheme://host[:port]"));
        }
        let url = url::Url::parse(raw).map_err(|_| not_allowed("the Origin is not a valid URL"))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) if is_canonical_domain(d) => {
                OriginHost::Domain(d.to_owned())
            }
            Some(url::Host::Domain(_)) => {
                return Err(not_allowed("the Origin host is not a canonical host name"))
            }
            Some(url::Host::Ipv4(ip)) => OriginHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => OriginHost::Ip(IpAddr::V6(ip)),
            None => return Err(not_allowed("the Origin has no host")),
        };
        // The URL parser's own serialization of the origin is what a browser
        // sends; any difference means the header was spelled another way.
        if url.origin().ascii_serialization() != raw {
            return Err(not_allowed(
                "the Origin is not in the canonical form a browser sends",
            ));
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            host,
            port: url.port(),
        })
    }

    pub fn is_localhost(&self) -> bool {
        match &self.host {
            OriginHost::Domain(d) => d == "localhost" || d.ends_with(".localhost"),
            OriginHost::Ip(ip) => ip.is_loopback(),
        }
    }
}

/// One entry of an issuer's `allowed_origins`: an exact host, or `*.domain`
/// which matches subdomains at any depth but not `domain` itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AllowedOrigin {
    Host(String),
    Subdomains(String),
    Ip(IpAddr),
}

fn invalid_entry(raw: &str, why: &str) -> ApiError {
    let shown: String = raw.chars().take(80).collect();
    ApiError::validation(format!("allowed origin '{shown}' is invalid: {why}"))
}

fn ascii_host(raw: &str, entry: &str) -> Result<String, ApiError> {
    let host = raw.strip_suffix('.').unwrap_or(raw);
    if host.is_empty() || host.split('.').any(str::is_empty) {
        return Err(invalid_entry(entry, "empty label"));
    }
    let ascii = idna::domain_to_ascii_strict(host)
        .map_err(|_| invalid_entry(entry, "not a valid host name"))?;
    let labels_ok = ascii.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok {
        return Err(invalid_entry(entry, "not a valid host name"));
    }
    Ok(ascii)
}

impl AllowedOrigin {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let entry = raw.trim();
        if entry.is_empty() || entry.len() > 253 {
            return Err(invalid_entry(raw, "empty or too long"));
        }
        if entry.contains("://") {
            return Err(invalid_entry(raw, "give the host only, without a scheme"));
        }
        if entry.contains(['/', '?', '#', '@', '\\', ' ', ',']) {
            return Err(invalid_entry(raw, "give the host only, without a path"));
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(AllowedOrigin::Ip(ip));
        }
        if entry.contains(':') {
            return Err(invalid_entry(
                raw,
                "ports are not part of an entry; any port matches",
            ));
        }
        if let Some(domain) = entry.strip_prefix("*.") {
            if domain.contains('*') {
                return Err(invalid_entry(raw, "only one leading wildcard is allowed"));
            }
            let ascii = ascii_host(domain, raw)?;
            // `*.co.uk` or `*.github.io` would admit every stranger who can
            // register a name there. The list is the maintained public
            // suffix list (ICANN and private sections) shipped in `psl`.
            if !ascii.contains('.') || psl::suffix_str(&ascii) == Some(ascii.as_str()) {
                return Err(invalid_entry(
                    raw,
                    "a wildcard needs a registrable domain under it, not a public suffix",
                ));
            }
            return Ok(AllowedOrigin::Subdomains(ascii));
        }
        if entry.contains('*') {
            return Err(invalid_entry(raw, "a wildcard may only be a leading '*.'"));
        }
        Ok(AllowedOrigin::Host(ascii_host(entry, raw)?))
    }

    pub fn matches(&self, origin: &Origin) -> bool {
        match (self, &origin.host) {
            (AllowedOrigin::Host(h), OriginHost::Domain(d)) => h == d,
            (AllowedOrigin::Subdomains(base), OriginHost::Domain(d)) => {
                d.len() > base.len() + 1
                    && d.ends_with(base.as_str())
                    && d.as_bytes()[d.len() - base.len() - 1] == b'.'
            }
            (AllowedOrigin::Ip(ip), OriginHost::Ip(o)) => ip == o,
            _ => false,
        }
    }
}

pub fn origin_allowed(allowed: &[AllowedOrigin], origin: &Origin) -> bool {
    allowed.iter().any(|a| a.matches(origin))
}

/// A tenant's custom domain (`auth.mybrand.com`), or the cookie `Domain`
/// of one: a host name normalised like an allowed-origin entry (lower case,
/// IDN in punycode, no trailing dot), at least two labels, and not itself a
/// public suffix (a cookie for `co.uk` would be everyone's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let entry = raw.trim();
        let invalid = |why: &str| {
            let shown: String = raw.chars().take(80).collect();
            ApiError::validation(format!("domain '{shown}' is invalid: {why}"))
        };
        if entry.is_empty() || entry.len() > 253 {
            return Err(invalid("empty or too long"));
        }
        if entry.contains(['/', '?', '#', '@', '\\', ' ', ',', ':', '*'])
            || entry.parse::<IpAddr>().is_ok()
        {
            return Err(invalid("give a host name only"));
        }
        let ascii = ascii_host(entry, raw)?.to_ascii_lowercase();
        if !ascii.contains('.') || psl::suffix_str(&ascii) == Some(ascii.as_str()) {
            return Err(invalid("a public suffix or a single label"));
        }
        Ok(Self(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self` is `other` or a parent domain of it.
    pub fn covers(&self, other: &DomainName) -> bool {
        other.0 == self.0
            || (other.0.len() > self.0.len() + 1
                && other.0.ends_with(self.0.as_str())
                && other.0.as_bytes()[other.0.len() - self.0.len() - 1] == b'.')
    }
}

impl std::fmt::Display for DomainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DomainName {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, ApiError> {
        Self::parse(&raw)
    }
}

impl From<DomainName> for String {
    fn from(d: DomainName) -> String {
        d.0
    }
}

impl std::fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowedOrigin::Host(h) => f.write_str(h),
            AllowedOrigin::Subdomains(d) => write!(f, "*.{d}"),
            AllowedOrigin::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl TryFrom<String> for AllowedOrigin {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, ApiError> {
        Self::parse(&raw)
    }
}

impl From<AllowedOrigin> for String {
    fn from(a: AllowedOrigin) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_host_names_below_a_public_suffix() {
        let d = |s: &str| DomainName::parse(s).map(|d| d.0);
        assert_eq!(
            d("Auth.MyBrand.com.").ok().as_deref(),
            Some("auth.mybrand.com")
        );
        assert_eq!(
            d("auth.mybrand.test").ok().as_deref(),
            Some("auth.mybrand.test")
        );
        for bad in [
            "",
            "com",
            "co.uk",
            "github.io",
            "localhost",
            "127.0.0.1",
            "*.a.com",
            "a.com:443",
            "https://a.com",
            "a..com",
            "a.com/x",
            "-a.com",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        let parent = DomainName::parse("mybrand.com").ok();
        let child = DomainName::parse("auth.mybrand.com").ok();
        let other = DomainName::parse("notmybrand.com").ok();
        if let (Some(p), Some(c), Some(o)) = (parent, child, other) {
            assert!(p.covers(&c) && c.covers(&c) && !c.covers(&p) && !o.covers(&c));
        } else {
            unreachable!("valid domains refused");
        }
    }

    fn allowed(entries: &[&str]) -> Vec<AllowedOrigin> {
        entries
            .iter()
            .filter_map(|e| AllowedOrigin::parse(e).ok())
            .collect()
    }

    fn ok(list: &[AllowedOrigin], origin: &str) -> bool {
        Origin::parse(origin)
            .map(|o| origin_allowed(list, &o))
            .unwrap_or(false)
    }

    #[test]
    fn exact_and_wildcard_entries_match_as_documented() {
        let list = allowed(&[
            "mybrand.com",
            "*.apps.mybrand.com",
            "bücher.de",
            "localhost",
        ]);
        assert!(ok(&list, "https://mybrand.com"));
        assert!(ok(&list, "https://mybrand.com:8443"));
        assert!(ok(&list, "http://mybrand.com"));
        assert!(ok(&list, "https://a.b.apps.mybrand.com"));
        assert!(!ok(&list, "https://apps.mybrand.com"));
        assert!(ok(&list, "https://xn--bcher-kva.de"));
        assert!(ok(&list, "http://localhost:3000"));
        let ips = allowed(&["127.0.0.1", "::1"]);
        assert!(ok(&ips, "http://127.0.0.1:3000"));
        assert!(ok(&ips, "http://[::1]:3000"));
    }

    /// Every other spelling of an allowed origin, and the `*` label that
    /// would match a wildcard entry. Each parses in a lenient URL parser to
    /// something the list allows; each must be refused as it is.
    #[test]
    fn non_canonical_spellings_of_allowed_origins_are_refused() {
        let list = allowed(&[
            "mybrand.com",
            "*.apps.mybrand.com",
            "bücher.de",
            "127.0.0.1",
            "::1",
        ]);
        // What each spelling below means: allowed, in its canonical form.
        for canonical in [
            "https://mybrand.com",
            "https://a.apps.mybrand.com",
            "https://xn--bcher-kva.de",
            "https://127.0.0.1",
            "https://[::1]",
        ] {
            assert!(ok(&list, canonical), "{canonical}");
        }
        for (bad, why) in [
            ("https://MyBrand.com", "upper-case host"),
            ("https://MYBRAND.COM", "upper-case host"),
            ("HTTPS://mybrand.com", "upper-case scheme"),
            ("Https://mybrand.com", "mixed-case scheme"),
            ("https://%6Dybrand.com", "percent-encoded host"),
            ("https://mybrand%2Ecom", "percent-encoded dot"),
            ("https://mybr%61nd.com", "percent-encoded letter"),
            ("https://*.apps.mybrand.com", "a `*` label"),
            ("https://*.mybrand.com", "a `*` label"),
            ("https://a.*.apps.mybrand.com", "an inner `*` label"),
            ("https://mybrand.com:443", "the default port spelled out"),
            ("http://mybrand.com:80", "the default port spelled out"),
            ("https://mybrand.com:", "an empty port"),
            ("https://mybrand.com:08443", "a port with a leading zero"),
            ("https://mybrand.com/", "a trailing slash"),
            ("https://mybrand.com/path", "a path"),
            ("https://mybrand.com?", "an empty query"),
            ("https://mybrand.com#", "an empty fragment"),
            ("https://user@mybrand.com", "userinfo"),
            ("https://user:pw@mybrand.com", "userinfo"),
            ("https://mybrand.com.", "a trailing dot"),
            ("https://a..apps.mybrand.com", "an empty label"),
            ("https://a_b.apps.mybrand.com", "an underscore"),
            ("https://-a.apps.mybrand.com", "a leading hyphen"),
            ("https://XN--BCHER-KVA.de", "upper-case punycode"),
            ("https://bücher.de", "a Unicode host"),
            ("https://mybrand。com", "an ideographic full stop"),
            ("https://ｍybrand.com", "a full-width letter"),
            ("https://0x7f.0.0.1", "a hex IPv4 address"),
            ("https://127.1", "a short IPv4 address"),
            ("https://0177.0.0.1", "an octal IPv4 address"),
            ("https://2130706433", "a numeric IPv4 address"),
            ("https://[0:0::1]", "a non-canonical IPv6 address"),
            ("https://[0000::1]", "a non-canonical IPv6 address"),
            ("https:/mybrand.com", "one slash"),
            ("https:///mybrand.com", "three slashes"),
            ("https://mybrand.com\\", "a backslash"),
            ("https://mybrand.com ", "a trailing space"),
        ] {
            assert!(
                matches!(Origin::parse(bad), Err(e) if e.code == ErrorCode::OriginNotAllowed),
                "{bad:?} ({why}) must be refused as origin_not_allowed"
            );
            assert!(!ok(&list, bad), "{bad:?}");
        }
    }

    #[test]
    fn lookalikes_and_smuggled_origins_are_refused() {
        let list = allowed(&["mybrand.com"]);
        for bad in [
            "",
            "null",
            "https://mybrand.com.evil.com",
            "https://evilmybrand.com",
            "https://evil.com/mybrand.com",
            "https://mybrand.com@evil.com",
            "https://evil.com#mybrand.com",
            "https://evil.com?mybrand.com",
            "https://mybrand.com/",
            "https://mybrand.com, https://evil.com",
            " https://mybrand.com",
            "https://mybrand.com\t",
            "ftp://mybrand.com",
            "javascript://mybrand.com",
            "https://127.0.0.1",
            "mybrand.com",
        ] {
            assert!(!ok(&list, bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn entries_are_validated_when_saved() {
        for bad in [
            "*",
            "*.",
            "https://mybrand.com",
            "mybrand.com/x",
            "mybrand.com:443",
            "a..b.com",
            "*.com",
            "*.co.uk",
            "*.github.io",
            "*.com.au",
            "*.xn--p1ai",
            "x.*.com",
            "",
        ] {
            assert!(AllowedOrigin::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["*.mybrand.co.uk", "*.mybrand.github.io", "*.apps.internal"] {
            assert!(AllowedOrigin::parse(good).is_ok(), "{good:?}");
        }
        assert_eq!(
            AllowedOrigin::parse("MyBrand.com.")
                .map(|a| a.to_string())
                .ok(),
            Some("mybrand.com".into())
        );
    }
}
