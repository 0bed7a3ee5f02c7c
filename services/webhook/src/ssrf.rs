//! The SSRF guard: endpoint URLs must not reach inside.
//!
//! - At creation (and update) the URL is parsed: `https` only (unless the
//!   operator set `WEBHOOK_ALLOW_HTTP`), no credentials, an IP literal or a
//!   name that is decidably internal (`localhost`) is refused
//!   (`ssrf_refused`).
//! - At delivery the name is resolved by [`GuardedResolver`], which *is* the
//!   connector's resolver: the addresses it checked are the ones the
//!   connection is made to, so a DNS answer that changes between the check
//!   and the connect (rebinding) cannot slip through. Every address of the
//!   answer must be allowed, or none is used.
//! - Refused: unspecified, loopback, private (RFC 1918, CGNAT, ULA),
//!   link-local (and so the cloud metadata address 169.254.169.254),
//!   multicast, broadcast, reserved, documentation and benchmarking ranges,
//!   in IPv4 and IPv6, IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4)
//!   judged by the IPv4 address it carries. The operator's allowlist
//!   (`WEBHOOK_ALLOWED_NETWORKS`) wins over all of these.

use hyper_util::client::legacy::connect::dns::Name;
use idm_core::{ApiError, ErrorCode};
use ipnet::IpNet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// The policy: the allowlist and whether plain HTTP is allowed.
#[derive(Debug, Clone)]
pub struct Guard {
    pub allowed_networks: Arc<Vec<IpNet>>,
    pub allow_http: bool,
}

/// Why a delivery was not even attempted.
#[derive(Debug, thiserror::Error)]
#[error("ssrf_refused: {0}")]
pub struct Refused(pub String);

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::SsrfRefused, message)
}

impl Guard {
    /// Whether a connection to `ip` may be made.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allowed_networks.iter().any(|net| net.contains(&ip)) || !is_internal(ip)
    }

    /// Checks an endpoint URL as given by a tenant, returning it parsed.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, ApiError> {
        if raw.len() > MAX_URL_LEN {
            return Err(ApiError::validation(format!(
                "url is longer than {MAX_URL_LEN} characters"
            )));
        }
        let url = url::Url::parse(raw)
            .map_err(|e| ApiError::validation(format!("url is not a valid URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(ApiError::validation("url must use https")),
            _ => return Err(ApiError::validation("url must be an https URL")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ApiError::validation("url must not carry credentials"));
        }
        match url.host() {
            None => return Err(ApiError::validation("url has no host")),
            Some(url::Host::Ipv4(ip)) => self.check_literal(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_literal(IpAddr::V6(ip))?,
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                // Names that always mean this machine (RFC 6761); other
                // names are judged by what they resolve to.
                let loopback_name = name == "localhost" || name.ends_with(".localhost");
                if loopback_name && !self.ip_allowed(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
                    return Err(refused(format!("{name} is this machine")));
                }
            }
        }
        Ok(url)
    }

    fn check_literal(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.ip_allowed(ip) {
            Ok(())
        } else {
            Err(refused(format!("{ip} is an internal address")))
        }
    }

    /// At creation: resolve the name now (briefly) and refuse it when it
    /// points inside today. A name that does not resolve yet is accepted;
    /// every delivery checks again.
    pub async fn check_resolved(&self, url: &url::Url) -> Result<(), ApiError> {
        let Some(url::Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let lookup = tokio::net::lookup_host((name, url.port_or_known_default().unwrap_or(443)));
        let Ok(Ok(addrs)) = tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await
        else {
            return Ok(());
        };
        for addr in addrs {
            self.check_literal(addr.ip())?;
        }
        Ok(())
    }

    pub fn resolver(&self) -> GuardedResolver {
        GuardedResolver {
            guard: self.clone(),
        }
    }
}

/// The connector's resolver: resolves, then refuses the whole answer if any
/// address in it is internal.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Guard,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        Box::pin(async move {
            type BoxError = Box<dyn std::error::Error + Send + Sync>;
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(BoxError::from)?
                .collect();
            if addrs.is_empty() {
                return Err(BoxError::from(format!("{host} has no address")));
            }
            if let Some(bad) = addrs.iter().find(|a| !guard.ip_allowed(a.ip())) {
                return Err(BoxError::from(Refused(format!(
                    "{host} resolves to an internal address ({})",
                    bad.ip()
                ))));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// Whether `ip` is inside (not a public unicast address).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        // CGNAT 100.64.0.0/10
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 0)
        // benchmarking 198.18.0.0/15
        || (a == 198 && (b == 18 || b == 19))
        // reserved 240.0.0.0/4
        || a >= 240
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let s = ip.segments();
    // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 64:ff9b::/96.
    let embedded = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_unspecified() && !ip.is_loopback() {
        return internal_v4(embedded());
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return internal_v4(embedded());
    }
    // 6to4 2002:a.b.c.d::/48.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return internal_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // unique local fc00::/7 (includes AWS's fd00:ec2::254)
        || (s[0] & 0xfe00) == 0xfc00
        // link-local fe80::/10 and site-local fec0::/10
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // documentation 2001:db8::/32, Teredo 2001::/32
        || (s[0] == 0x2001 && (s[1] == 0x0db8 || s[1] == 0))
        // discard-only 100::/64
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allowed: &[&str], allow_http: bool) -> Guard {
        Guard {
            allowed_networks: Arc::new(allowed.iter().filter_map(|n| n.parse().ok()).collect()),
            allow_http,
        }
    }

    #[test]
    fn internal_addresses_are_refused_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(is_internal(parsed), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"] {
            let parsed: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert!(!is_internal(parsed), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_at_creation() {
        let g = guard(&[], false);
        assert!(g.check_url("https://hooks.example.com/in").is_ok());
        let code = |r: Result<url::Url, ApiError>| r.err().map(|e| e.code);
        assert_eq!(
            code(g.check_url("http://hooks.example.com/")),
            Some(ErrorCode::ValidationFailed)
        );
        assert_eq!(
            code(g.check_url("ftp://hooks.example.com/")),
            Some(ErrorCode::ValidationFailed)
        );
        assert_eq!(
            code(g.check_url("https://u:p@hooks.example.com/")),
            Some(ErrorCode::ValidationFailed)
        );
        for inside in [
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://[::1]/",
            "https://[::ffff:7f00:1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost:8443/",
            "https://foo.localhost/",
        ] {
            assert_eq!(
                code(g.check_url(inside)),
                Some(ErrorCode::SsrfRefused),
                "{inside}"
            );
        }
        let tests = guard(&["127.0.0.0/8"], true);
        assert!(tests.check_url("http://127.0.0.1:9/").is_ok());
        assert!(!tests.ip_allowed(
            "10.0.0.1"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        ));
    }
}
