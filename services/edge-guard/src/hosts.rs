//! Per-issuer hosts (docs/EDGE.md, "Per-issuer hosts"): the issuer a request
//! is for, read from its `Host` before anything else, so that a preflight,
//! which carries no key, can be answered for exactly that issuer's origins
//! and with credentials, and the session cookie is first-party to the
//! tenant's site.
//!
//! Two kinds: a platform subdomain, `<handle>.<EDGE_ISSUER_HOST_SUFFIX>`,
//! whose handle is the issuer id with `_` written `-` (`iss-0190…`: a DNS
//! label cannot hold `_`); and a tenant's custom domain, served only once
//! the tenant proved control of it (account service, `domains.rs`). Any
//! other host is the shared API host, as before.
//!
//! Answers are cached like key configs (bounded, TTL, misses coalesced and
//! budgeted per client network, negative answers too) and dropped on every
//! `config.changed` broadcast.

use idm_bus::Bus;
use idm_core::proto::account::{IssuerHost, ResolveHost};
use idm_core::{ApiError, DomainName, IssuerId};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The issuer a request's host serves, put in the request's extensions.
#[derive(Clone, Debug)]
pub struct ServedHost {
    pub issuer: Arc<IssuerHost>,
}

type Entry = Option<Arc<IssuerHost>>;

pub struct Hosts {
    bus: Bus,
    /// `auth.idmesh.example`: platform subdomains are `<handle>.<suffix>`.
    suffix: Option<String>,
    cache: moka::future::Cache<String, Entry>,
}

/// What the `Host` names.
#[derive(Debug, PartialEq, Eq)]
enum Named {
    /// Under the platform suffix: this issuer, or nothing (unknown handle).
    Platform(Option<IssuerId>),
    Custom(DomainName),
    Shared,
}

/// The request's host name, lower case, without port; `None` when absent
/// or not text.
pub fn host_name(uri: &http::Uri, headers: &http::HeaderMap) -> Option<String> {
    let raw = match uri.host() {
        Some(host) => host.to_owned(),
        None => {
            let value = headers.get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            authority.host().to_owned()
        }
    };
    Some(raw.to_ascii_lowercase())
}

impl Hosts {
    pub fn new(bus: Bus, suffix: Option<String>, ttl: Duration, capacity: u64) -> Self {
        Self {
            bus,
            suffix: suffix.map(|s| s.trim_matches('.').to_ascii_lowercase()),
            cache: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    fn classify(&self, host: &str) -> Named {
        classify(self.suffix.as_deref(), host)
    }

    /// The issuer this host serves; `None` for the shared host. A platform
    /// subdomain naming no issuer is `404 not_found`. `budget` is called
    /// before a lookup that is not cached (the client network's key-lookup
    /// budget).
    pub async fn resolve<F, Fut>(
        &self,
        host: &str,
        budget: F,
    ) -> Result<Option<ServedHost>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), ApiError>>,
    {
        let unknown = || ApiError::not_found("issuer host");
        let (cache_key, question, platform) = match self.classify(host) {
            Named::Shared => return Ok(None),
            Named::Platform(None) => return Err(unknown()),
            Named::Platform(Some(id)) => (format!("i:{id}"), ResolveHost::Issuer(id), true),
            Named::Custom(domain) => (format!("d:{domain}"), ResolveHost::Domain(domain), false),
        };
        let entry = match self.cache.get(&cache_key).await {
            Some(entry) => entry,
            None => {
                budget().await?;
                let bus = self.bus.clone();
                self.cache
                    .try_get_with(cache_key, async move {
                        metrics::counter!("idm_edge_host_lookups_total").increment(1);
                        let resolved = bus.send(&question).await?;
                        Ok::<_, ApiError>(resolved.host.map(Arc::new))
                    })
                    .await
                    .map_err(|e| (*e).clone())?
            }
        };
        match entry {
            Some(issuer) => Ok(Some(ServedHost { issuer })),
            None if platform => Err(unknown()),
            // A custom domain not (yet) verified is served as the shared
            // host: no credentials, no cookies, no issuer of its own.
            None => Ok(None),
        }
    }

    /// After any configuration change (origins, policy, a domain verified
    /// or removed) or a bus reconnect.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

fn classify(suffix: Option<&str>, host: &str) -> Named {
    if let Some(suffix) = suffix {
        if let Some(label) = host
            .strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix('.'))
        {
            let id = label
                .strip_prefix("iss-")
                .filter(|body| !body.contains(['.', '_']))
                .and_then(|body| IssuerId::parse(&format!("iss_{body}")).ok());
            return Named::Platform(id);
        }
        if host == suffix {
            return Named::Shared;
        }
    }
    // An IP literal, a single label or a trailing dot is never a
    // tenant's domain (and costs no lookup).
    if host.ends_with('.') || host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return Named::Shared;
    }
    match DomainName::parse(host) {
        Ok(domain) if domain.as_str() == host => Named::Custom(domain),
        _ => Named::Shared,
    }
}

/// The platform subdomain of an issuer under `suffix` (the tests build it
/// the same way, from the issuer id).
#[cfg(test)]
pub fn platform_host(issuer: &IssuerId, suffix: &str) -> String {
    format!("{}.{suffix}", issuer.as_str().replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_platform_subdomains_custom_domains_or_shared() {
        let suffix = Some("auth.idmesh.test");
        let id = IssuerId::generate();
        let host = platform_host(&id, "auth.idmesh.test");
        assert!(host.starts_with("iss-") && !host.contains('_'));
        assert_eq!(classify(suffix, &host), Named::Platform(Some(id)));
        for unknown in [
            "iss-nothex.auth.idmesh.test",
            "a.iss-x.auth.idmesh.test",
            "www.auth.idmesh.test",
            "iss_0190.auth.idmesh.test",
        ] {
            assert_eq!(
                classify(suffix, unknown),
                Named::Platform(None),
                "{unknown}"
            );
        }
        assert_eq!(classify(suffix, "auth.idmesh.test"), Named::Shared);
        for shared in [
            "127.0.0.1",
            "localhost",
            "auth.mybrand.test.",
            "[::1]",
            "test",
        ] {
            assert_eq!(classify(suffix, shared), Named::Shared, "{shared}");
        }
        assert!(matches!(
            classify(suffix, "auth.mybrand.test"),
            Named::Custom(_)
        ));
        assert!(matches!(classify(None, &host), Named::Custom(_)));
    }
}
