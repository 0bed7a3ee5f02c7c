//! The email guard on every route that takes an address: strict syntax
//! (`Email::parse`), then the issuer's deny list, its allow list, and the
//! maintained list of disposable domains shipped in the `mailchecker` crate.
//! A listed domain covers its subdomains (`x.mailinator.com` is as disposable
//! as `mailinator.com`). Messages never repeat the address.

use idm_core::waf_policy::WafPolicy;
use idm_core::{ApiError, Email, ErrorCode};
use std::collections::HashSet;
use std::sync::LazyLock;

/// `mailchecker::is_valid` scans its 55,000-entry list linearly for every
/// suffix; a set makes each lookup O(1). Built once, at start-up.
static DISPOSABLE: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| mailchecker::blacklist().into_iter().collect());

/// Builds the disposable set now rather than on the first request.
pub fn warm() -> usize {
    DISPOSABLE.len()
}

/// `a.b.example.com`, `b.example.com`, `example.com`, `com`.
fn suffixes(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |d| d.split_once('.').map(|(_, rest)| rest))
}

fn disposable() -> ApiError {
    ApiError::new(
        ErrorCode::DisposableEmail,
        "addresses at this email domain are not accepted",
    )
}

pub fn check_email(policy: &WafPolicy, raw: &str) -> Result<Email, ApiError> {
    let email = Email::parse(raw)?;
    let domain = email.domain();
    let listed = |list: &[idm_core::waf_policy::MailDomain]| {
        suffixes(domain).any(|s| list.iter().any(|d| d.as_str() == s))
    };
    if listed(&policy.email_deny_domains) {
        return Err(disposable());
    }
    if listed(&policy.email_allow_domains) {
        return Ok(email);
    }
    if suffixes(domain).any(|s| DISPOSABLE.contains(s)) {
        metrics::counter!("idm_edge_waf_rejections_total", "reason" => "disposable_email")
            .increment(1);
        return Err(disposable());
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm_core::waf_policy::MailDomain;

    fn code(policy: &WafPolicy, raw: &str) -> Option<ErrorCode> {
        check_email(policy, raw).err().map(|e| e.code)
    }

    #[test]
    fn disposable_domains_and_their_subdomains_are_refused() {
        let p = WafPolicy::default();
        for raw in [
            "a@mailinator.com",
            "a@MAILINATOR.com",
            "a@x.y.mailinator.com",
            "a@guerrillamailblock.com",
            "a@10minutemail.com",
            "a@mailinator.com.",
        ] {
            assert_eq!(code(&p, raw), Some(ErrorCode::DisposableEmail), "{raw}");
        }
        for raw in [
            "a@gmail.com",
            "a@example.com",
            "a@mailinator.com.mybrand.com",
        ] {
            assert_eq!(code(&p, raw), None, "{raw}");
        }
    }

    #[test]
    fn syntax_comes_first() {
        let p = WafPolicy::default();
        for raw in ["\"a\"@mailinator.com", "a@[127.0.0.1]", "a@localhost", ""] {
            assert_eq!(code(&p, raw), Some(ErrorCode::InvalidEmail), "{raw}");
        }
    }

    #[test]
    fn issuer_lists_deny_always_and_allow_over_the_disposable_list() -> Result<(), ApiError> {
        let p = WafPolicy {
            email_deny_domains: vec![MailDomain::parse("competitor.com")?],
            email_allow_domains: vec![
                MailDomain::parse("mailinator.com")?,
                MailDomain::parse("competitor.com")?,
            ],
            ..WafPolicy::default()
        };
        assert_eq!(code(&p, "a@mailinator.com"), None);
        assert_eq!(code(&p, "a@sub.mailinator.com"), None);
        assert_eq!(
            code(&p, "a@competitor.com"),
            Some(ErrorCode::DisposableEmail)
        );
        assert_eq!(
            code(&p, "a@eu.competitor.com"),
            Some(ErrorCode::DisposableEmail)
        );
        assert_eq!(
            code(&p, "a@guerrillamailblock.com"),
            Some(ErrorCode::DisposableEmail)
        );
        Ok(())
    }
}
