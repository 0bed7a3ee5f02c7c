//! Email addresses, parsed strictly once at the boundary.
//!
//! Deliberately narrower than RFC 5322: no quoted local parts, no IP-literal or
//! single-label domains, no non-ASCII local parts. Those are legal but are
//! almost only ever used to slip past filters.

use crate::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

const MAX_TOTAL: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_LABEL: usize = 63;

/// A syntactically valid address. `as_str` is the user's own form (trimmed,
/// domain lower-cased); `canonical` is the case-folded, punycode form that
/// uniqueness and the blind index use.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    display: String,
    canonical: String,
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidEmail, message)
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b)
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("email is empty"));
        }
        if trimmed.len() > MAX_TOTAL * 4 {
            return Err(invalid("email is too long"));
        }
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or_else(|| invalid("email has no @"))?;
        if local.contains('@') || local.starts_with('"') {
            return Err(invalid("quoted local parts are not accepted"));
        }
        if local.is_empty() || local.len() > MAX_LOCAL {
            return Err(invalid("the part before @ must be 1 to 64 characters"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid("the part before @ has a misplaced dot"));
        }
        if !local.bytes().all(|b| b == b'.' || is_atext(b)) {
            return Err(invalid(
                "the part before @ has characters that are not allowed",
            ));
        }
        let ascii_domain = parse_domain(domain)?;
        let display = format!("{local}@{}", domain.trim_end_matches('.').to_lowercase());
        let canonical = format!("{}@{ascii_domain}", local.to_ascii_lowercase());
        if canonical.len() > MAX_TOTAL {
            return Err(invalid("email is too long"));
        }
        Ok(Self { display, canonical })
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }

    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    pub fn domain(&self) -> &str {
        self.canonical
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default()
    }
}

/// A DNS name fit for mail: IDN converted to punycode, at least two labels,
/// each 1..=63 of letters, digits and inner hyphens, and a non-numeric TLD.
fn parse_domain(domain: &str) -> Result<String, ApiError> {
    if domain.starts_with('[') {
        return Err(invalid("IP-literal domains are not accepted"));
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("the domain is not valid"));
    }
    let ascii = idna::domain_to_ascii_strict(domain)
        .map_err(|_| invalid("the domain is not a valid name"))?;
    if ascii.len() > 253 {
        return Err(invalid("the domain is too long"));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid("the domain needs at least two labels"));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(invalid("the domain has an invalid label"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("the domain's last label cannot be numeric"));
    }
    Ok(ascii)
}

impl TryFrom<String> for Email {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, ApiError> {
        Self::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> String {
        email.display
    }
}

impl std::fmt::Debug for Email {
    // Personal data stays out of debug output and therefore out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses_and_folds_case_for_the_canonical_form() {
        let e = Email::parse("  Ada.Lovelace+x@Example.COM ").ok();
        assert_eq!(
            e.as_ref().map(Email::as_str),
            Some("Ada.Lovelace+x@example.com")
        );
        assert_eq!(
            e.as_ref().map(Email::canonical),
            Some("ada.lovelace+x@example.com")
        );
        let idn = Email::parse("a@bücher.de").ok();
        assert_eq!(
            idn.as_ref().map(Email::canonical),
            Some("a@xn--bcher-kva.de")
        );
    }

    #[test]
    fn refuses_tricky_forms() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "\"a b\"@example.com",
            "a@[127.0.0.1]",
            "a@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@-x.com",
            "a@x-.com",
            "a@example.123",
            "ü@example.com",
            "a@@example.com",
            "a@example..com",
        ] {
            assert_eq!(
                Email::parse(bad).map_err(|e| e.code).err(),
                Some(ErrorCode::InvalidEmail),
                "{bad}"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long_label = format!("a@{}.com", "b".repeat(64));
        assert!(Email::parse(&long_label).is_err());
    }

    #[test]
    fn debug_output_hides_the_address() {
        let e = Email::parse("secret@example.com").ok();
        assert!(!format!("{e:?}").contains("secret"));
    }
}
