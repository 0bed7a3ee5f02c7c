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

    /// The mailbox as send limits see it, so that one inbox has one budget
    /// however it is spelled: case folded, `+tag` removed, and for Gmail the
    /// dots removed and `googlemail.com` folded into `gmail.com`.
    ///
    /// `+tag` is removed for every domain, not only for a list of providers:
    /// most mail hosts (Gmail, Google Workspace, Outlook, iCloud, Fastmail,
    /// Proton, Yandex and any Postfix with the default delimiter) deliver
    /// `a+x@` to `a@`, and a custom domain cannot be asked. Over-merging only
    /// makes two real mailboxes share a send budget; under-merging lets one
    /// inbox be flooded. Never used for identity: the stored address keeps
    /// the user's own form.
    pub fn normalized_for_limits(&self) -> String {
        let (local, domain) = self
            .canonical
            .rsplit_once('@')
            .unwrap_or((self.canonical.as_str(), ""));
        let domain = match domain {
            "googlemail.com" => "gmail.com",
            other => other,
        };
        let base = local.split_once('+').map_or(local, |(base, _)| base);
        let base = if domain == "gmail.com" {
            base.replace('.', "")
        } else {
            base.to_owned()
        };
        format!("{base}@{domain}")
    }
}

/// A mail domain as given in a policy list: the same rules as the domain of
/// an address, returned in its canonical (lower-case, punycode) form.
pub fn mail_domain(raw: &str) -> Result<String, ApiError> {
    parse_domain(raw.trim()).map_err(|e| ApiError::validation(e.message))
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
    // UTS 46 silently maps some characters (zero-width space, full-width
    // letters, ideographic full stops) to others, so a domain that converts
    // cleanly can still look unlike the mailbox it reaches. Each label must
    // be exactly its ASCII form or exactly its Unicode form.
    let (unicode, _) = idna::domain_to_unicode(&ascii);
    let given = domain.to_lowercase();
    let given_labels: Vec<&str> = given.split('.').collect();
    let faithful = given_labels.len() == labels.len()
        && given_labels
            .iter()
            .zip(&labels)
            .zip(unicode.split('.'))
            .all(|((g, a), u)| g == a || *g == u);
    if !faithful {
        return Err(invalid("the domain is not a valid internationalised name"));
    }
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
        for ok in ["a@xn--bcher-kva.de", "a@BÜCHER.de", "a@faß.de"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
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
            "a@[IPv6:::1]",
            "a@127.0.0.1",
            "a@xn--zz.com",
            "a@bü\u{200b}cher.de",
            "a@-.com",
            "a\u{0}@example.com",
            "a@example.com\u{7}",
            "a@\u{ff45}xample.com",
            "a@example\u{3002}com",
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
        let long_domain = format!("a@{}com", "b1234567.".repeat(29));
        assert!(Email::parse(&long_domain).is_err());
        // Every part within its own limit, the whole over 254.
        let domain = format!(
            "{}.{}.{}.{}.com",
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(60),
            "e".repeat(15)
        );
        assert!(Email::parse(&format!("a@{domain}")).is_ok());
        assert!(Email::parse(&format!("{}@{domain}", "a".repeat(64))).is_err());
    }

    fn limits_key(raw: &str) -> String {
        Email::parse(raw)
            .map(|e| e.normalized_for_limits())
            .unwrap_or_default()
    }

    #[test]
    fn limits_fold_sub_addresses_gmail_dots_and_case() {
        assert_eq!(limits_key("a.b+1@gmail.com"), "ab@gmail.com");
        assert_eq!(limits_key("ab+2@googlemail.com"), "ab@gmail.com");
        assert_eq!(limits_key("A.B@GMail.com"), "ab@gmail.com");
        assert_eq!(limits_key("a.b+x+y@Outlook.com"), "a.b@outlook.com");
        assert_eq!(limits_key("Ada+news@example.com"), "ada@example.com");
        // Dots matter outside Gmail.
        assert_ne!(limits_key("a.b@example.com"), limits_key("ab@example.com"));
        // The stored form is untouched.
        assert_eq!(
            Email::parse("A.B+1@gmail.com")
                .ok()
                .map(|e| e.as_str().to_owned()),
            Some("A.B+1@gmail.com".to_owned())
        );
    }

    #[test]
    fn policy_domains_are_canonicalised() {
        assert_eq!(
            mail_domain("Bücher.DE.").ok().as_deref(),
            Some("xn--bcher-kva.de")
        );
        assert!(mail_domain("localhost").is_err());
        assert!(mail_domain("[127.0.0.1]").is_err());
    }

    #[test]
    fn debug_output_hides_the_address() {
        let e = Email::parse("secret@example.com").ok();
        assert!(!format!("{e:?}").contains("secret"));
    }
}
