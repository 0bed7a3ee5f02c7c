//! Who is really calling: the peer address, or, when the peer is a trusted
//! proxy, the first untrusted hop of `X-Forwarded-For` read from the right.
//! The left-most entries are whatever the client wrote, so they are never
//! believed on their own.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn client_ip(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut last_trusted = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>().map(canonical) {
            Ok(ip) if is_trusted(trusted, ip) => last_trusted = ip,
            Ok(ip) => return ip,
            // A garbled hop means the chain cannot be trusted past this point.
            Err(_) => return last_trusted,
        }
    }
    last_trusted
}

/// The country header, only when it was set by a trusted proxy.
pub fn country(
    trusted: &[IpNet],
    peer: IpAddr,
    headers: &HeaderMap,
    header: &str,
) -> Option<String> {
    if !is_trusted(trusted, peer) {
        return None;
    }
    headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .and_then(idm_core::Country::parse)
        .map(|c| c.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|n| n.parse().ok()).collect()
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = xff.parse() {
            h.insert("x-forwarded-for", v);
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn untrusted_peers_are_taken_as_they_are() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(&trusted, ip("203.0.113.9"), &headers("1.2.3.4")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn spoofed_left_entries_change_nothing() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers("6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("198.51.100.7"));
        let h = headers("garbage, 198.51.100.7");
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn country_is_only_believed_from_a_trusted_proxy() {
        let trusted = nets(&["127.0.0.1/32"]);
        let mut h = HeaderMap::new();
        h.insert("cf-ipcountry", http::HeaderValue::from_static("de"));
        assert_eq!(
            country(&trusted, ip("127.0.0.1"), &h, "cf-ipcountry").as_deref(),
            Some("DE")
        );
        assert_eq!(country(&trusted, ip("192.0.2.1"), &h, "cf-ipcountry"), None);
    }
}
