//! The session cookies (docs/SESSIONS.md, "Cookie mode").
//!
//! - session: `__Host-idm_session` (host-only, `Path=/`), or, when the
//!   custom domain names a cookie `Domain`, `__Secure-idm_session` with that
//!   `Domain` (the `__Host-` prefix forbids one);
//! - refresh: `__Secure-idm_refresh`, host-only, `Path=/v1/client/token/refresh`
//!   (so it travels with refreshes only; `__Host-` would force `Path=/`).
//!
//! Both `HttpOnly; SameSite=Lax` and `Secure`, unless `EDGE_COOKIE_SECURE=false`
//! (local development over plain http), which also drops the prefixes:
//! browsers refuse a prefixed cookie without `Secure`.

use crate::hosts::ServedHost;
use http::header::{HeaderMap, HeaderValue, COOKIE};
use idm_core::DomainName;

pub const REFRESH_PATH: &str = "/v1/client/token/refresh";

/// The cookies of one request's host.
pub struct Jar {
    secure: bool,
    domain: Option<DomainName>,
}

impl Jar {
    pub fn new(secure: bool, host: Option<&ServedHost>) -> Self {
        Self {
            secure,
            domain: host.and_then(|h| h.issuer.cookie_domain.clone()),
        }
    }

    pub fn session_name(&self) -> &'static str {
        match (self.secure, &self.domain) {
            (true, None) => "__Host-idm_session",
            (true, Some(_)) => "__Secure-idm_session",
            (false, _) => "idm_session",
        }
    }

    pub fn refresh_name(&self) -> &'static str {
        if self.secure {
            "__Secure-idm_refresh"
        } else {
            "idm_refresh"
        }
    }

    /// The value of cookie `name` in the request (the first one).
    pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.to_owned())
            .filter(|value| !value.is_empty())
    }

    fn build(
        &self,
        name: &str,
        value: &str,
        path: &str,
        domain: bool,
        max_age: i64,
    ) -> Option<HeaderValue> {
        let mut cookie =
            format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}");
        if let (true, Some(domain)) = (domain, &self.domain) {
            cookie.push_str("; Domain=");
            cookie.push_str(domain.as_str());
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).ok()
    }

    /// Sets (or, with `None`, clears) the session cookie.
    pub fn session(&self, token: Option<(&str, i64)>) -> Option<HeaderValue> {
        let (value, max_age) = token.unwrap_or(("", 0));
        self.build(self.session_name(), value, "/", true, max_age)
    }

    /// Sets (or clears) the refresh cookie.
    pub fn refresh(&self, token: Option<(&str, i64)>) -> Option<HeaderValue> {
        let (value, max_age) = token.unwrap_or(("", 0));
        self.build(self.refresh_name(), value, REFRESH_PATH, false, max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm_core::proto::account::IssuerHost;
    use std::sync::Arc;

    fn host(domain: Option<&str>) -> ServedHost {
        ServedHost {
            issuer: Arc::new(IssuerHost {
                issuer_id: idm_core::IssuerId::generate(),
                allowed_origins: vec![],
                policy: idm_core::IssuerPolicy::default(),
                cookie_domain: domain.and_then(|d| DomainName::parse(d).ok()),
            }),
        }
    }

    fn text(v: Option<HeaderValue>) -> String {
        v.and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn prefixes_follow_the_rules_browsers_enforce() {
        let plain = Jar::new(true, Some(&host(None)));
        assert_eq!(
            text(plain.session(Some(("t", 60)))),
            "__Host-idm_session=t; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert_eq!(
            text(plain.refresh(Some(("r", 60)))),
            "__Secure-idm_refresh=r; Path=/v1/client/token/refresh; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let scoped = Jar::new(true, Some(&host(Some("mybrand.com"))));
        assert_eq!(
            text(scoped.session(None)),
            "__Secure-idm_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Domain=mybrand.com; Secure"
        );
        // The refresh cookie stays on the auth host even then.
        assert!(!text(scoped.refresh(None)).contains("Domain"));
        let insecure = Jar::new(false, None);
        assert_eq!(insecure.session_name(), "idm_session");
        assert!(!text(insecure.session(None)).contains("Secure"));
    }
}
