//! Where a magic link may lead: back to the application, checked with the
//! same strictness as a browser `Origin`. The URL's origin must be written in
//! its canonical form (what a browser would send as `Origin`: lower-case
//! host, no default port, no percent-encoding), pass the issuer's https rule
//! and match its allowed origins; no userinfo, fragment, whitespace or
//! control characters; and the URL must not already carry the code
//! parameter, or the mailed link would hold two codes and a client reading
//! the first would sign the victim into whatever account the attacker chose.

use crate::access::scheme_permitted;
use idm_core::origin::origin_allowed;
use idm_core::{AllowedOrigin, ApiError, IssuerPolicy, Origin};

/// The query parameter that carries a magic link's code.
pub const CODE_PARAMETER: &str = "idm_magic_code";

fn refuse() -> ApiError {
    ApiError::validation(
        "redirect_url must be a URL on one of the application's allowed origins, written canonically, without the code parameter",
    )
}

pub fn check_redirect(
    policy: &IssuerPolicy,
    allowed: &[AllowedOrigin],
    raw: &str,
) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > 2048 {
        return Err(refuse());
    }
    // The URL parser silently drops tabs and newlines and trims spaces: a
    // string that would change under parsing is refused, not repaired.
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse());
    }
    let url = url::Url::parse(raw).map_err(|_| refuse())?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(refuse());
    }
    let canonical = url.origin().ascii_serialization();
    let rest = raw.strip_prefix(canonical.as_str()).ok_or_else(refuse)?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return Err(refuse());
    }
    let origin = Origin::parse(&canonical).map_err(|_| refuse())?;
    if !scheme_permitted(policy, &origin) || !origin_allowed(allowed, &origin) {
        return Err(refuse());
    }
    if url
        .query_pairs()
        .any(|(name, _)| name.eq_ignore_ascii_case(CODE_PARAMETER))
    {
        return Err(refuse());
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> Vec<AllowedOrigin> {
        entries
            .iter()
            .filter_map(|o| AllowedOrigin::parse(o).ok())
            .collect()
    }

    fn https_only() -> IssuerPolicy {
        IssuerPolicy {
            require_https_origins: true,
            ..IssuerPolicy::default()
        }
    }

    #[test]
    fn canonical_urls_on_allowed_origins_pass() {
        let list = allowed(&["app.example.com", "*.apps.example.com", "localhost"]);
        let policy = IssuerPolicy::default();
        for good in [
            "https://app.example.com",
            "https://app.example.com/welcome?x=1",
            "https://app.example.com:8443/a",
            "https://a.b.apps.example.com/",
            "http://app.example.com/",
            "http://localhost:3000/callback",
        ] {
            assert!(check_redirect(&policy, &list, good).is_ok(), "{good}");
        }
        assert!(check_redirect(&https_only(), &list, "http://localhost:3000/cb").is_ok());
    }

    #[test]
    fn hostile_redirects_are_refused() {
        let list = allowed(&["app.example.com"]);
        let policy = IssuerPolicy::default();
        for bad in [
            "https://evil.com/app.example.com",
            "https://app.example.com@evil.com/",
            "https://user@app.example.com/",
            "https://app.example.com.evil.com/",
            "https://evilapp.example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "//evil.com",
            "/relative",
            "not a url",
            "",
            "https://APP.example.com/",
            "https://app.example.com:443/",
            "https://app%2Eexample.com/",
            "https:\\\\app.example.com/",
            "https:/app.example.com/",
            "https://app.exa\tmple.com/",
            "https://app.example.com/\n",
            " https://app.example.com/",
            "https://app.example.com/#frag",
            "https://app.example.com/?idm_magic_code=attacker",
            "https://app.example.com/?a=1&IDM_MAGIC_CODE=attacker",
            "https://app.example.com/?idm%5Fmagic%5Fcode=attacker",
            "https://[::1]/",
            "https://127.0.0.1/",
            "ftp://app.example.com/",
        ] {
            assert!(check_redirect(&policy, &list, bad).is_err(), "{bad:?}");
        }
        assert!(check_redirect(
            &policy,
            &list,
            &format!("https://app.example.com/{}", "a".repeat(2100))
        )
        .is_err());
    }

    #[test]
    fn https_is_required_when_the_issuer_requires_it() {
        let list = allowed(&["app.example.com"]);
        assert!(check_redirect(&https_only(), &list, "http://app.example.com/").is_err());
        assert!(check_redirect(&https_only(), &list, "https://app.example.com/").is_ok());
    }
}
