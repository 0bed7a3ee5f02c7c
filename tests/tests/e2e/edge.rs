//! The edge guard, tried the way an attacker would: origin tricks and CORS,
//! spoofed forwarding headers, IP velocity, strikes and bans across replicas,
//! the email guard, a key-guessing flood against the config cache, a Redis
//! outage, and a real browser (headless Chromium).
//!
//! The test kit trusts no proxy unless a test asks for it: tests that set
//! `X-Forwarded-For` start with `Options::behind_loopback_proxy()`, so the
//! header picks the client address a request is judged as.

use anyhow::Context;
use idm_testkit::{Options, Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ORIGIN: &str = "https://mybrand.com";

async fn tenant(platform: &Platform, name: &str, origins: &[&str]) -> anyhow::Result<Tenant> {
    let t = platform.create_account(name).await?;
    platform.allow_origins(&t, origins).await?;
    Ok(t)
}

/// `GET /v1/client/me` with the restricted key and `extra` headers on edge
/// `replica`. Without a session the edge answers `401 unauthenticated` once
/// the key, the origin and the WAF let the call through.
async fn me(
    platform: &Platform,
    replica: usize,
    t: &Tenant,
    extra: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let mut headers = vec![("idm-api-key", t.restricted_key.as_str())];
    headers.extend_from_slice(extra);
    platform
        .send_to(replica, Method::GET, "/v1/client/me", &headers, None)
        .await
}

fn passed(r: &Response) -> bool {
    r.status == 401 && r.code() == Some("unauthenticated")
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn retry_after(r: &Response) -> u64 {
    header(r, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status code, for
/// header values no well-behaved client library would send.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf[..n]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

#[tokio::test]
async fn origins_are_parsed_strictly_and_matched_exactly() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = tenant(
        platform,
        "Origins",
        &[
            "mybrand.com",
            "*.apps.mybrand.com",
            "bücher.de",
            "localhost",
        ],
    )
    .await?;

    for origin in [
        "https://mybrand.com",
        "https://mybrand.com:8443",
        "http://mybrand.com",
        "https://a.apps.mybrand.com",
        "https://x.y.apps.mybrand.com",
        "https://xn--bcher-kva.de",
        "http://localhost:3000",
    ] {
        let r = me(platform, 0, &t, &[("origin", origin)]).await?;
        assert!(passed(&r), "{origin} must pass: {} {}", r.status, r.json);
        // The allowed origin is echoed exactly, with credentials, never `*`.
        assert_eq!(
            header(&r, "access-control-allow-origin").as_deref(),
            Some(origin)
        );
        assert_eq!(
            header(&r, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert!(header(&r, "vary").is_some_and(|v| v.contains("Origin")));
    }

    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("origin", "null")],
        vec![("origin", "https://mybrand.com.evil.com")],
        vec![("origin", "https://evilmybrand.com")],
        vec![("origin", "https://evil.com/mybrand.com")],
        vec![("origin", "https://mybrand.com/")],
        vec![("origin", "https://mybrand.com@evil.com")],
        vec![("origin", "https://user:pw@mybrand.com")],
        vec![("origin", "https://evil.com#mybrand.com")],
        vec![("origin", "https://evil.com?mybrand.com")],
        vec![("origin", "https://mybrand .com")],
        vec![("origin", "https://mybrand.com\tx")],
        vec![("origin", "ftp://mybrand.com")],
        vec![("origin", "chrome-extension://mybrand.com")],
        vec![("origin", "file://mybrand.com")],
        vec![("origin", "mybrand.com")],
        vec![("origin", "//mybrand.com")],
        vec![("origin", "https://127.0.0.1")],
        vec![("origin", "https://[::1]")],
        vec![("origin", "https://apps.mybrand.com")],
        vec![("origin", "https://mybrand.com, https://evil.com")],
        // Other spellings of allowed origins: compared, never normalised.
        vec![("origin", "https://MyBrand.COM")],
        vec![("origin", "HTTPS://MYBRAND.COM")],
        vec![("origin", "https://mybrand.com.")],
        vec![("origin", "https://mybrand.com:443")],
        vec![("origin", "https://%6Dybrand.com")],
        vec![("origin", "https://*.apps.mybrand.com")],
        vec![("origin", "https://XN--BCHER-KVA.de")],
        vec![("origin", ORIGIN), ("origin", ORIGIN)],
        vec![("origin", ORIGIN), ("origin", "https://evil.com")],
        vec![("referer", "https://mybrand.com/login")],
        vec![("referer", "https://mybrand.com/"), ("origin", "null")],
    ];
    for headers in refused {
        let r = me(platform, 0, &t, &headers).await?;
        assert_eq!(
            (r.status, r.code()),
            (403, Some("origin_not_allowed")),
            "{headers:?}: {}",
            r.json
        );
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            None,
            "{headers:?}"
        );
        assert_eq!(header(&r, "access-control-allow-credentials"), None);
    }

    // Bytes a browser never sends: control characters are refused by the
    // HTTP parser, non-ASCII by the origin check.
    let addr = platform.edges[0];
    let request = |origin: &[u8]| {
        let mut r = format!(
            "GET /v1/client/me HTTP/1.1\r\nhost: {addr}\r\nidm-api-key: {}\r\norigin: ",
            t.restricted_key
        )
        .into_bytes();
        r.extend_from_slice(origin);
        r.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        r
    };
    assert_eq!(
        raw_status(addr, &request(b"https://mybrand.com")).await?,
        401
    );
    for bad in [
        &b"https://mybrand.com\x01"[..],
        b"https://myb\x00rand.com",
        b"https://mybr\xc3\xa4nd.com",
        b"https://m\x7fybrand.com",
    ] {
        let status = raw_status(addr, &request(bad)).await?;
        assert!(status == 400 || status == 403, "{bad:?} answered {status}");
    }
    Ok(())
}

#[tokio::test]
async fn allowed_origins_are_validated_when_saved() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = platform.create_account("Lists").await?;
    for entry in [
        "https://mybrand.com",
        "mybrand.com/app",
        "mybrand.com:443",
        "*",
        "*.",
        "*.com",
        "*.co.uk",
        "*.github.io",
        "*.s3.amazonaws.com",
        "x.*.mybrand.com",
        "a..b.com",
        ".mybrand.com",
        "",
        "mybrand.com?x",
        "user@mybrand.com",
    ] {
        let r = platform
            .backend(
                Method::PATCH,
                "/v1/issuer",
                &t.secret_key,
                Some(json!({ "allowed_origins": [entry] })),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (422, Some("validation_failed")),
            "{entry:?}"
        );
    }
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &t.secret_key,
            Some(json!({ "allowed_origins": ["*.mybrand.co.uk", "MyBrand.com.", "bücher.de"] })),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json.pointer("/allowed_origins"),
        Some(&json!([
            "*.mybrand.co.uk",
            "mybrand.com",
            "xn--bcher-kva.de"
        ]))
    );
    Ok(())
}

#[tokio::test]
async fn an_issuer_may_require_https_except_for_localhost() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = tenant(platform, "Https", &["mybrand.com", "localhost"]).await?;
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &t.secret_key,
            Some(json!({ "policy": { "require_https_origins": true } })),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = me(platform, 0, &t, &[("origin", "http://mybrand.com")]).await?;
        if r.code() == Some("origin_not_allowed") {
            break;
        }
        assert!(Instant::now() < deadline, "http still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(passed(&me(platform, 0, &t, &[("origin", ORIGIN)]).await?));
    assert!(passed(
        &me(platform, 0, &t, &[("origin", "http://localhost:5173")]).await?
    ));
    Ok(())
}

async fn preflight(
    platform: &Platform,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    platform.send(Method::OPTIONS, path, headers, None).await
}

#[tokio::test]
async fn preflights_are_answered_at_the_edge_without_credentials() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = tenant(platform, "Preflight", &["mybrand.com"]).await?;
    let ok = preflight(
        platform,
        "/v1/client/sign_in",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
    )
    .await?;
    assert_eq!(ok.status, 204);
    assert_eq!(
        header(&ok, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    let methods = header(&ok, "access-control-allow-methods").unwrap_or_default();
    let allowed_headers = header(&ok, "access-control-allow-headers").unwrap_or_default();
    assert!(
        methods.contains("POST") && !methods.contains('*'),
        "{methods}"
    );
    assert!(
        allowed_headers.contains("authorization")
            && allowed_headers.contains("idm-api-key")
            && !allowed_headers.contains('*'),
        "{allowed_headers}"
    );
    let vary = ok
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    assert!(vary.contains("Origin"), "{vary}");
    // A preflight carries no key, so it never grants credentials.
    assert_eq!(header(&ok, "access-control-allow-credentials"), None);
    assert!(header(&ok, "access-control-max-age").is_some());

    // Verification routes are browser-facing too.
    let r = preflight(
        platform,
        "/v1/verifications",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
        ],
    )
    .await?;
    assert_eq!(r.status, 204);

    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        // Backend routes are never callable from a browser.
        (
            "/v1/users",
            vec![
                ("origin", ORIGIN),
                ("access-control-request-method", "POST"),
            ],
        ),
        (
            "/v1/issuer",
            vec![
                ("origin", ORIGIN),
                ("access-control-request-method", "PATCH"),
            ],
        ),
        (
            "/v1/client/sign_in",
            vec![
                ("origin", "null"),
                ("access-control-request-method", "POST"),
            ],
        ),
        (
            "/v1/client/sign_in",
            vec![
                ("origin", "https://evil.com/mybrand.com"),
                ("access-control-request-method", "POST"),
            ],
        ),
        (
            "/v1/client/sign_in",
            vec![
                ("origin", ORIGIN),
                ("origin", ORIGIN),
                ("access-control-request-method", "POST"),
            ],
        ),
        (
            "/v1/client/sign_in",
            vec![("origin", ORIGIN), ("access-control-request-method", "PUT")],
        ),
        (
            "/v1/client/sign_in",
            vec![
                ("origin", ORIGIN),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-forwarded-for"),
            ],
        ),
    ];
    for (path, headers) in refused {
        let r = preflight(platform, path, &headers).await?;
        assert_eq!(r.status, 403, "{path} {headers:?}");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            None,
            "{path} {headers:?}"
        );
    }

    // An unlisted but well-formed origin gets a credential-less preflight
    // (the issuer is unknown until the key arrives); the real request is
    // then refused, with no CORS headers the page could read it by.
    let evil = preflight(
        platform,
        "/v1/client/sign_in",
        &[
            ("origin", "https://evil.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await?;
    assert_eq!(evil.status, 204);
    assert_eq!(header(&evil, "access-control-allow-credentials"), None);
    let r = platform
        .sign_in(
            &t,
            "https://evil.com",
            "nobody@example.com",
            "whatever pass",
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, Some("origin_not_allowed")));
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    Ok(())
}

/// The default edge (like `EDGE_TRUSTED_PROXIES` unset, and like the local
/// run) believes no proxy, not even loopback: a forwarded address and a
/// country header from the test process itself are ignored.
#[tokio::test]
async fn by_default_no_proxy_is_believed_not_even_loopback() -> anyhow::Result<()> {
    // Own platform: needs the default edge, which trusts no proxy.
    let platform = Platform::start().await?;
    let t = tenant(&platform, "No proxy", &["app.example.com", "mybrand.com"]).await?;
    platform
        .set_waf_policy(
            &t,
            json!({ "client": { "limit": 3, "window_seconds": 600 } }),
        )
        .await?;
    // Four "different clients" are one client: the peer.
    let mut codes = Vec::new();
    for i in 0..4 {
        let xff = format!("203.0.113.{i}");
        let r = me(
            &platform,
            0,
            &t,
            &[("origin", ORIGIN), ("x-forwarded-for", xff.as_str())],
        )
        .await?;
        codes.push(r.code().map(str::to_owned));
    }
    assert_eq!(codes[3].as_deref(), Some("rate_limited"), "{codes:?}");

    // The country header is not believed: placement falls to the default.
    platform
        .set_waf_policy(
            &t,
            json!({ "client": { "limit": 300, "window_seconds": 60 } }),
        )
        .await?;
    let r = platform
        .sign_up(
            &t,
            "https://app.example.com",
            Some("jp"),
            "kenji@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.str("/user/region"), "weur", "jp would have been apac");
    platform.stop().await
}

#[tokio::test]
async fn the_client_address_comes_only_from_trusted_proxies() -> anyhow::Result<()> {
    // Own platform: adds an edge replica.
    let mut platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    // A second edge that trusts no proxy: X-Forwarded-For means nothing to it.
    platform
        .add_edge_with(|c| c.trusted_proxies.clear())
        .await?;
    let t = tenant(&platform, "Spoof", &["mybrand.com"]).await?;
    platform
        .set_waf_policy(
            &t,
            json!({ "client": { "limit": 3, "window_seconds": 600 } }),
        )
        .await?;
    let from = |xff: &'static str| [("origin", ORIGIN), ("x-forwarded-for", xff)];

    for _ in 0..3 {
        assert!(passed(&me(&platform, 0, &t, &from("198.51.100.7")).await?));
    }
    let r = me(&platform, 0, &t, &from("198.51.100.7")).await?;
    assert_eq!((r.status, r.code()), (429, Some("rate_limited")));
    assert!(retry_after(&r) >= 1, "{:?}", r.headers);
    // Made-up entries to the left of the real client change nothing.
    for spoofed in [
        "6.6.6.6, 198.51.100.7",
        "1.1.1.1, 2.2.2.2, 198.51.100.7",
        "garbage, 198.51.100.7",
        "198.51.100.8, 198.51.100.7",
    ] {
        let r = me(&platform, 0, &t, &from(spoofed)).await?;
        assert_eq!(r.code(), Some("rate_limited"), "{spoofed}");
    }
    // A trusted hop on the right is skipped: the client is the next one left.
    let r = me(&platform, 0, &t, &from("198.51.100.7, 127.0.0.1")).await?;
    assert_eq!(r.code(), Some("rate_limited"));
    // A different real client is not affected.
    assert!(passed(&me(&platform, 0, &t, &from("198.51.100.8")).await?));

    // The untrusting edge judges everyone by the peer address, whatever the header says.
    let mut results = Vec::new();
    for i in 0..4 {
        let xff = format!("203.0.113.{i}");
        let r = me(
            &platform,
            1,
            &t,
            &[("origin", ORIGIN), ("x-forwarded-for", xff.as_str())],
        )
        .await?;
        results.push(r.code().map(str::to_owned));
    }
    assert_eq!(results[3].as_deref(), Some("rate_limited"), "{results:?}");
    platform.stop().await
}

#[tokio::test]
async fn velocity_is_per_issuer_and_route_class_and_ipv6_per_slash_64() -> anyhow::Result<()> {
    // Own platform: breaches velocity limits on purpose.
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let a = tenant(&platform, "Velocity A", &["mybrand.com"]).await?;
    let b = tenant(&platform, "Velocity B", &["mybrand.com"]).await?;
    platform
        .set_waf_policy(
            &a,
            json!({
                "client": { "limit": 2, "window_seconds": 600 },
                "backend": { "limit": 1000, "window_seconds": 60 },
            }),
        )
        .await?;
    let ip = [("origin", ORIGIN), ("x-forwarded-for", "192.0.2.44")];
    assert!(passed(&me(&platform, 0, &a, &ip).await?));
    assert!(passed(&me(&platform, 0, &a, &ip).await?));
    assert_eq!(
        me(&platform, 0, &a, &ip).await?.code(),
        Some("rate_limited")
    );
    // Another issuer, and another route class of the same issuer, are separate.
    assert!(passed(&me(&platform, 0, &b, &ip).await?));
    let auth = format!("Bearer {}", a.secret_key);
    let r = platform
        .send(
            Method::GET,
            "/v1/issuer",
            &[("authorization", &auth), ("x-forwarded-for", "192.0.2.44")],
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // IPv6: every address of one /64 shares the budget; the next /64 does not.
    let v6 = |xff: &'static str| [("origin", ORIGIN), ("x-forwarded-for", xff)];
    assert!(passed(
        &me(&platform, 0, &a, &v6("2001:db8:aa:1::1")).await?
    ));
    assert!(passed(
        &me(&platform, 0, &a, &v6("2001:db8:aa:1:ffff:ffff:ffff:fffe")).await?
    ));
    assert_eq!(
        me(&platform, 0, &a, &v6("2001:db8:aa:1:1234::9"))
            .await?
            .code(),
        Some("rate_limited")
    );
    assert!(passed(
        &me(&platform, 0, &a, &v6("2001:db8:aa:2::1")).await?
    ));
    // An IPv4-mapped IPv6 address is the IPv4 client.
    assert_eq!(
        me(&platform, 0, &a, &v6("::ffff:192.0.2.44")).await?.code(),
        Some("rate_limited")
    );
    // Refused origins count too: they cannot be used to probe for free.
    let c_ip = [
        ("origin", "https://evil.com"),
        ("x-forwarded-for", "192.0.2.45"),
    ];
    for _ in 0..2 {
        assert_eq!(
            me(&platform, 0, &a, &c_ip).await?.code(),
            Some("origin_not_allowed")
        );
    }
    assert_eq!(
        me(&platform, 0, &a, &c_ip).await?.code(),
        Some("rate_limited")
    );
    platform.stop().await
}

/// Calls until the answer is `ip_banned` (or the deadline passes); returns
/// the ban answer and how many `rate_limited` answers came before it.
async fn breach_until_banned(
    platform: &Platform,
    t: &Tenant,
    xff: &str,
) -> anyhow::Result<(Response, usize)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut limited = 0;
    loop {
        let r = me(
            platform,
            0,
            t,
            &[("origin", ORIGIN), ("x-forwarded-for", xff)],
        )
        .await?;
        match r.code() {
            Some("ip_banned") => return Ok((r, limited)),
            Some("rate_limited") => limited += 1,
            _ => {}
        }
        anyhow::ensure!(Instant::now() < deadline, "no ban after 20 s of breaches");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

async fn within_a_second<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not happen within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn strikes_ban_on_every_replica_repeat_bans_double_and_operators_lift() -> anyhow::Result<()>
{
    // Own platform: two replicas, bans, and the platform-wide ban list.
    let mut platform = Platform::start_with(Options {
        edge_replicas: 2,
        ..Options::behind_loopback_proxy()
    })
    .await?;
    let t = tenant(&platform, "Bans", &["mybrand.com"]).await?;
    let other = tenant(&platform, "Bystander", &["mybrand.com"]).await?;
    platform
        .set_waf_policy(
            &t,
            json!({
                "client": { "limit": 2, "window_seconds": 1 },
                "strikes_to_ban": 2,
                "strike_window_seconds": 60,
                "ban_seconds": 2,
                "max_ban_seconds": 8,
            }),
        )
        .await?;
    let attacker = "198.51.100.66";

    // One breach is a strike (429), not yet a ban.
    let (ban, limited) = breach_until_banned(&platform, &t, attacker).await?;
    assert!(limited >= 1, "the first breach must be answered 429");
    assert_eq!(ban.status, 403);
    let first_ban = retry_after(&ban);
    assert!(first_ban >= 1);

    // Every replica refuses it, from memory.
    within_a_second("the ban reaching replica 1", || async {
        let r = me(
            &platform,
            1,
            &t,
            &[("origin", ORIGIN), ("x-forwarded-for", attacker)],
        )
        .await?;
        Ok(r.code() == Some("ip_banned"))
    })
    .await?;
    // Only this issuer, only this address.
    assert!(passed(
        &me(
            &platform,
            0,
            &other,
            &[("origin", ORIGIN), ("x-forwarded-for", attacker)]
        )
        .await?
    ));
    assert!(passed(
        &me(
            &platform,
            0,
            &t,
            &[("origin", ORIGIN), ("x-forwarded-for", "198.51.100.67")]
        )
        .await?
    ));

    // The ip.banned event holds the network and ids, nothing personal.
    let deadline = Instant::now() + Duration::from_secs(5);
    let event = loop {
        if let Some(e) = platform.last_event(&t.issuer_id, "ip.banned").await? {
            break e;
        }
        anyhow::ensure!(Instant::now() < deadline, "no ip.banned event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event["type"], "ip.banned");
    assert_eq!(event["issuer_id"], Value::String(t.issuer_id.clone()));
    assert_eq!(event["data"]["ip"], "198.51.100.66/32");
    assert_eq!(event["data"]["offence"], 1);
    assert!(!event.to_string().contains('@'));

    // The ban expires by itself…
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = me(
            &platform,
            0,
            &t,
            &[("origin", ORIGIN), ("x-forwarded-for", attacker)],
        )
        .await?;
        if r.code() != Some("ip_banned") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the ban never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …and the repeat offender's next ban is longer.
    let (second, _) = breach_until_banned(&platform, &t, attacker).await?;
    assert!(
        retry_after(&second) > first_ban.min(2),
        "second ban {} s after a first of {first_ban} s",
        retry_after(&second)
    );
    assert!(platform.count_events(&t.issuer_id, "ip.banned").await? >= 2);

    // The operator listing shows it; the lift needs the operator token and
    // is not reachable on the public port.
    let listed = platform
        .edge_ops(0, Method::GET, "/admin/v1/bans", None)
        .await?;
    assert_eq!(listed.status, 200);
    assert!(listed.json.to_string().contains("198.51.100.66/32"));
    let path = format!("/admin/v1/bans/{attacker}");
    for token in ["", "not-the-operator-token"] {
        let r = platform
            .edge_ops(0, Method::DELETE, &path, Some(token))
            .await?;
        assert_eq!((r.status, r.code()), (401, Some("unauthenticated")));
    }
    let r = platform.send(Method::DELETE, &path, &[], None).await?;
    assert_eq!(r.status, 404);
    let lifted = platform.edge_ops(0, Method::DELETE, &path, None).await?;
    assert_eq!(lifted.status, 200, "{}", lifted.json);
    assert!(lifted.json["lifted"].as_u64().unwrap_or(0) >= 1);
    // The operator's lift is in the issuer's audit trail.
    assert_eq!(
        platform
            .last_event(&t.issuer_id, "ip.ban_lifted")
            .await?
            .map(|e| e["data"].clone()),
        Some(json!({"ip": "198.51.100.66/32", "by": "operator"}))
    );
    for replica in 0..2 {
        within_a_second("the lift reaching every replica", || async {
            let r = me(
                &platform,
                replica,
                &t,
                &[("origin", ORIGIN), ("x-forwarded-for", attacker)],
            )
            .await?;
            Ok(r.code() != Some("ip_banned"))
        })
        .await?;
    }

    // A replica that starts while a ban runs refuses at once (loaded from Redis).
    platform
        .set_waf_policy(
            &t,
            json!({
                "client": { "limit": 2, "window_seconds": 1 },
                "strikes_to_ban": 1,
                "ban_seconds": 600,
            }),
        )
        .await?;
    breach_until_banned(&platform, &t, attacker).await?;
    platform.add_edge().await?;
    let r = me(
        &platform,
        2,
        &t,
        &[("origin", ORIGIN), ("x-forwarded-for", attacker)],
    )
    .await?;
    assert_eq!(r.code(), Some("ip_banned"));
    platform.stop().await
}

#[tokio::test]
async fn the_email_guard_covers_every_route_that_takes_an_address() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = tenant(platform, "Mail guard", &["mybrand.com"]).await?;
    let cases = [
        ("\"quoted\"@example.com", "invalid_email"),
        ("a@[127.0.0.1]", "invalid_email"),
        ("a@[IPv6:::1]", "invalid_email"),
        ("a@localhost", "invalid_email"),
        ("a@example", "invalid_email"),
        ("ü@example.com", "invalid_email"),
        ("a@bü\u{200b}cher.de", "invalid_email"),
        ("a@\u{ff45}xample.com", "invalid_email"),
        ("a@mailinator.com", "disposable_email"),
        ("a@eu.mailinator.com", "disposable_email"),
        ("A@MAILINATOR.COM.", "disposable_email"),
        ("a@10minutemail.com", "disposable_email"),
    ];
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_label = format!("a@{}.com", "b".repeat(64));
    let all: Vec<(&str, &str)> = cases
        .iter()
        .copied()
        .chain([
            (long_local.as_str(), "invalid_email"),
            (long_label.as_str(), "invalid_email"),
        ])
        .collect();
    for (address, code) in &all {
        let r = platform
            .sign_up(&t, ORIGIN, None, address, "correct horse battery")
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (422, Some(*code)),
            "sign_up {address}"
        );
        assert!(
            !r.json.to_string().contains(address),
            "the answer echoes the address"
        );
        let r = platform
            .backend(
                Method::POST,
                "/v1/users",
                &t.secret_key,
                Some(json!({ "email": address })),
            )
            .await?;
        assert_eq!((r.status, r.code()), (422, Some(*code)), "create {address}");
        let r = platform
            .http
            .get(format!("{}/v1/users", platform.edge_url(0)))
            .bearer_auth(&t.secret_key)
            .query(&[("email", address)])
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: Value = r.json().await?;
        assert_eq!(
            (status, body.pointer("/error/code").and_then(Value::as_str)),
            (422, Some(*code)),
            "find {address}"
        );
    }

    // The issuer's own lists: allow beats the disposable list, deny always wins.
    platform
        .set_waf_policy(
            &t,
            json!({
                "email_allow_domains": ["mailinator.com", "partner.example"],
                "email_deny_domains": ["competitor.example", "partner.example"],
            }),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = platform
            .sign_up(
                &t,
                ORIGIN,
                None,
                "ok@mailinator.com",
                "correct horse battery",
            )
            .await?;
        if r.status == 201 {
            break;
        }
        assert_eq!(r.code(), Some("disposable_email"));
        assert!(Instant::now() < deadline, "the allow list never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for address in [
        "x@competitor.example",
        "x@eu.competitor.example",
        "x@partner.example",
    ] {
        let r = platform
            .backend(
                Method::POST,
                "/v1/users",
                &t.secret_key,
                Some(json!({ "email": address })),
            )
            .await?;
        assert_eq!(r.code(), Some("disposable_email"), "{address}");
    }
    // Ordinary and internationalised addresses still go through.
    for address in ["Ada.Lovelace+x@Example.com", "zoe@bücher.de"] {
        let r = platform
            .backend(
                Method::POST,
                "/v1/users",
                &t.secret_key,
                Some(json!({ "email": address })),
            )
            .await?;
        assert_eq!(r.status, 201, "{address}: {}", r.json);
    }
    // A policy list entry is validated like an address's domain.
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &t.secret_key,
            Some(json!({ "policy": { "waf": { "email_deny_domains": ["[127.0.0.1]"] } } })),
        )
        .await?;
    assert_eq!(r.code(), Some("validation_failed"));
    Ok(())
}

#[tokio::test]
async fn origin_edits_reach_every_replica_within_a_second() -> anyhow::Result<()> {
    // Own platform: two edge replicas.
    let platform = Platform::start_with(Options {
        edge_replicas: 2,
        ..Options::default()
    })
    .await?;
    let t = tenant(&platform, "Edits", &["mybrand.com", "other.example"]).await?;
    for replica in 0..2 {
        assert!(passed(
            &me(&platform, replica, &t, &[("origin", ORIGIN)]).await?
        ));
    }
    platform.allow_origins(&t, &["other.example"]).await?;
    for replica in 0..2 {
        within_a_second("the origin edit reaching every replica", || async {
            let r = me(&platform, replica, &t, &[("origin", ORIGIN)]).await?;
            Ok(r.code() == Some("origin_not_allowed"))
        })
        .await?;
    }
    platform.stop().await
}

/// Index and sequential scans of `account.api_keys`, by Postgres's own
/// statistics, once every backend has flushed them (an idle backend flushes
/// within 10 s).
async fn key_table_reads(platform: &Platform) -> anyhow::Result<i64> {
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    let db = platform.global().await?;
    let row = db
        .query_one(
            "SELECT (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint
             FROM pg_stat_user_tables WHERE schemaname = 'account' AND relname = 'api_keys'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

fn random_restricted_key() -> String {
    let random = idm_crypto::random_bytes::<32>();
    idm_core::ApiKey::from_random(
        idm_core::KeyKind::Restricted,
        idm_core::KeyMode::Live,
        &random,
    )
    .expose()
    .to_owned()
}

/// Sends `requests` (key, client address) pairs, 32 at a time; returns the
/// answers' error codes (or the status when there is none).
async fn flood(
    platform: &Platform,
    requests: Vec<(String, Option<String>)>,
) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt;
    let results: Vec<anyhow::Result<String>> = futures::stream::iter(requests)
        .map(|(key, ip)| async move {
            let mut headers = vec![("idm-api-key", key.as_str()), ("origin", ORIGIN)];
            if let Some(ip) = ip.as_deref() {
                headers.push(("x-forwarded-for", ip));
            }
            let r = platform
                .send(Method::GET, "/v1/client/me", &headers, None)
                .await?;
            Ok(r.code()
                .map(str::to_owned)
                .unwrap_or_else(|| r.status.to_string()))
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

#[tokio::test]
async fn a_key_flood_reads_the_key_table_a_bounded_number_of_times() -> anyhow::Result<()> {
    // Own platform: the platform-wide key-lookup budget and key table reads.
    let platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let t = tenant(&platform, "Flood", &["mybrand.com"]).await?;
    platform
        .set_waf_policy(
            &t,
            json!({ "client": { "limit": 1000000, "window_seconds": 60 } }),
        )
        .await?;
    let before = key_table_reads(&platform).await?;

    // 10,000 requests with one valid key: one lookup, however concurrent.
    let valid = vec![(t.restricted_key.clone(), None); 10_000];
    let codes = flood(&platform, valid).await?;
    assert!(
        codes.iter().all(|c| c == "unauthenticated"),
        "{:?}",
        &codes[..5]
    );
    let after_valid = key_table_reads(&platform).await?;
    assert!(
        after_valid - before <= 3,
        "10,000 calls with one key read the key table {} times",
        after_valid - before
    );

    // 10,000 requests with 1,000 made-up (checksum-valid) keys from one
    // address: its lookup budget runs out, the rest never reach the database.
    let keys: Vec<String> = (0..1000).map(|_| random_restricted_key()).collect();
    let one_address: Vec<(String, Option<String>)> = keys
        .iter()
        .flat_map(|k| std::iter::repeat_n((k.clone(), None), 10))
        .collect();
    let codes = flood(&platform, one_address).await?;
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    assert!(limited > 0);
    assert!(codes
        .iter()
        .all(|c| c == "rate_limited" || c == "invalid_api_key"));
    let after_one_address = key_table_reads(&platform).await?;
    assert!(
        after_one_address - after_valid <= 130,
        "1,000 unknown keys from one address read the key table {} times",
        after_one_address - after_valid
    );

    // The same from 1,000 addresses (each within its budget): one read per
    // distinct key, never one per request (negative cache, coalesced misses).
    let keys: Vec<String> = (0..1000).map(|_| random_restricted_key()).collect();
    let spread: Vec<(String, Option<String>)> = keys
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            let ip = format!("198.18.{}.{}", i / 256, i % 256);
            std::iter::repeat_n((k.clone(), Some(ip)), 10)
        })
        .collect();
    let codes = flood(&platform, spread).await?;
    assert!(
        codes.iter().all(|c| c == "invalid_api_key"),
        "{:?}",
        &codes[..5]
    );
    let after_spread = key_table_reads(&platform).await?;
    println!(
        "key table reads: one valid key ×10,000: {}; 1,000 unknown keys ×10 from one address: {} ({limited} answered rate_limited); from 1,000 addresses: {}",
        after_valid - before,
        after_one_address - after_valid,
        after_spread - after_one_address
    );
    assert!(
        after_spread - after_one_address <= 1010,
        "1,000 unknown keys ×10 read the key table {} times",
        after_spread - after_one_address
    );
    platform.stop().await
}

/// A private redis-server on a free port, killed when dropped.
struct SpareRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl SpareRedis {
    async fn start(port: u16) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let spare = Self {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while spare.conn().await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(spare)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn conn(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let mut c = redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(c)
    }

    async fn keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let mut c = self.conn().await?;
        Ok(redis::cmd("KEYS").arg(pattern).query_async(&mut c).await?)
    }

    async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_memory_and_recovers() -> anyhow::Result<()> {
    // A dedicated edge on a Redis of its own, so stopping it disturbs no other test.
    let port = free_port()?;
    let mut redis = SpareRedis::start(port).await?;
    // Own platform: adds an edge on a Redis it kills, reads edge metrics.
    let mut platform = Platform::start_with(Options::behind_loopback_proxy()).await?;
    let url = redis.url();
    platform.add_edge_with(move |c| c.redis_url = url).await?;
    let edge = 1;
    let t = tenant(&platform, "Outage", &["mybrand.com"]).await?;
    platform
        .set_waf_policy(
            &t,
            json!({ "client": { "limit": 3, "window_seconds": 600 } }),
        )
        .await?;
    let gauge = format!("idm_edge_redis_fallback{{redis=\"127.0.0.1:{port}\"}}");
    let burst = |ip: &'static str| {
        let platform = &platform;
        let t = &t;
        async move {
            let mut codes = Vec::new();
            for _ in 0..4 {
                let r = me(
                    platform,
                    edge,
                    t,
                    &[("origin", ORIGIN), ("x-forwarded-for", ip)],
                )
                .await?;
                codes.push(r.code().unwrap_or_default().to_owned());
            }
            anyhow::Ok(codes)
        }
    };
    let expected = [
        "unauthenticated",
        "unauthenticated",
        "unauthenticated",
        "rate_limited",
    ];

    // Redis up: the limit holds and its counters are in Redis.
    assert_eq!(burst("192.0.2.10").await?, expected);
    let pattern = format!("{}waf:{{v:client:*192.0.2.10*", platform.redis_prefix);
    assert!(!redis.keys(&pattern).await?.is_empty());
    assert!(platform
        .edge_metrics(edge)
        .await?
        .contains(&format!("{gauge} 0")));

    // Redis gone: the edge keeps serving and limiting, from memory, and says so.
    redis.kill().await?;
    assert_eq!(burst("192.0.2.11").await?, expected);
    let metrics = platform.edge_metrics(edge).await?;
    assert!(metrics.contains(&format!("{gauge} 1")), "{gauge} not 1");
    // Session checks and everything else still work on that edge.
    assert!(passed(
        &me(&platform, edge, &t, &[("origin", ORIGIN)]).await?
    ));

    // Redis back: the edge returns to it.
    let redis = SpareRedis::start(port).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !platform
        .edge_metrics(edge)
        .await?
        .contains(&format!("{gauge} 0"))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the edge never returned to Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(burst("192.0.2.12").await?, expected);
    let pattern = format!("{}waf:{{v:client:*192.0.2.12*", platform.redis_prefix);
    assert!(!redis.keys(&pattern).await?.is_empty());
    drop(redis);
    platform.stop().await
}

// ---------------------------------------------------------------------------
// A real browser.

/// Debian's Chromium, installed when missing and possible (root with apt).
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return Some(path);
    }
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if is_root {
        let _ = std::process::Command::new("apt-get")
            .args(["update", "-qq"])
            .status();
        let _ = std::process::Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    path.exists().then_some(path)
}

fn page(edge: &str, key: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>sign in</title></head><body>
<pre id="out">pending</pre>
<script>
const out = document.getElementById("out");
fetch("{edge}/v1/client/sign_in", {{
  method: "POST",
  headers: {{ "authorization": "Bearer {key}", "content-type": "application/json" }},
  body: JSON.stringify({{ email: "browser@example.com", password: "correct horse battery" }}),
}})
  .then(async (r) => {{
    const body = await r.json();
    out.textContent = "status:" + r.status + " user:" + (body.user ? body.user.id : "")
      + " code:" + (body.error ? body.error.code : "");
  }})
  .catch((e) => {{ out.textContent = "refused:" + e.name; }});
</script></body></html>"#
    )
}

/// What the page wrote, read with `chromium --dump-dom`.
async fn load_in_chromium(browser: &std::path::Path, url: &str) -> anyhow::Result<String> {
    let profile = std::env::temp_dir().join(format!(
        "idm-chromium-{}",
        idm_crypto::sha256_hex(&idm_crypto::random_bytes::<8>())
    ));
    std::fs::create_dir_all(&profile)?;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--host-resolver-rules=MAP *.test 127.0.0.1",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--dump-dom", url])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    let text = dom
        .split_once("<pre id=\"out\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(text, _)| text.to_owned())
        .unwrap_or_else(|| format!("no output: {dom}"));
    Ok(text)
}

#[tokio::test]
async fn a_browser_page_on_an_allowed_origin_signs_in_and_others_are_refused() -> anyhow::Result<()>
{
    let Some(browser) = chromium() else {
        println!("SKIPPED: headless Chromium is not installed and could not be (apt-get install chromium)");
        return Ok(());
    };
    // Own platform: serves the page a browser loads.
    let platform = Platform::start().await?;
    let t = tenant(&platform, "Browser", &["app.mybrand.test"]).await?;
    let r = platform
        .sign_up(
            &t,
            "https://app.mybrand.test",
            None,
            "browser@example.com",
            "correct horse battery",
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);

    // One tiny page server; the browser reaches it under two names.
    let html = page(&platform.edge_url(0), &t.restricted_key);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let allowed = load_in_chromium(&browser, &format!("http://app.mybrand.test:{port}/")).await?;
    assert!(
        allowed.starts_with("status:200 user:usr_"),
        "allowed page: {allowed}"
    );
    let refused = load_in_chromium(&browser, &format!("http://evil.test:{port}/")).await?;
    assert!(refused.starts_with("refused:"), "other page: {refused}");
    server.abort();
    platform.stop().await
}

/// What `tests/browser/devtools.py` saw of one page: the page's result, the
/// browser's own cookie jar afterwards, and its console.
struct SeenPage {
    result: Value,
    cookies: Vec<Value>,
    console: Vec<String>,
}

/// Loads `urls` in turn in one headless Chromium (one cookie jar), driven
/// over the DevTools protocol.
async fn devtools(browser: &std::path::Path, urls: &[String]) -> anyhow::Result<Vec<SeenPage>> {
    let driver = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/devtools.py");
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("python3")
            .arg(driver)
            .arg(browser)
            .args(urls)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    anyhow::ensure!(
        output.status.success(),
        "devtools driver: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout)?;
    let pages = seen["pages"].as_array().cloned().unwrap_or_default();
    Ok(pages
        .into_iter()
        .map(|page| SeenPage {
            result: page["result"].clone(),
            cookies: page["cookies"].as_array().cloned().unwrap_or_default(),
            console: page["console"]
                .as_array()
                .map(|lines| {
                    lines
                        .iter()
                        .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

fn jar_cookie<'a>(page: &'a SeenPage, name: &str) -> Option<&'a Value> {
    page.cookies.iter().find(|c| c["name"] == name)
}

/// Issue 16, in the browser itself: a page on the tenant's app origin
/// (`app.mybrand.test`) signs up against the tenant's verified custom domain
/// (`auth.mybrand.test`) with `credentials: "include"` and the cookie mode;
/// the session lands in the browser's cookie jar as an `HttpOnly` cookie of
/// `mybrand.test` (read over DevTools, `Storage.getCookies`), `/me` works
/// with the cookie alone, the refresh rotates in its own cookie, and
/// sign-out empties the jar. A page of another site that the issuer allows
/// gets an answer but no cookie travels (SameSite=Lax); a page on an origin
/// the issuer does not list is blocked by the browser (its console says so).
///
/// Plain http with `EDGE_COOKIE_SECURE=false` (Chromium drops `Secure`
/// cookies set over http from a non-localhost host); the `Secure` flag and
/// the `__Host-`/`__Secure-` prefixes are checked over HTTP in
/// `first_party.rs` and in the edge's unit tests.
#[tokio::test]
async fn a_browser_keeps_a_first_party_session_in_cookies_on_the_tenants_domain(
) -> anyhow::Result<()> {
    let Some(browser) = chromium() else {
        println!("SKIPPED: headless Chromium is not installed and could not be (apt-get install chromium)");
        return Ok(());
    };
    // Own platform: an extra edge without `Secure` cookies (plain http).
    let mut platform = Platform::start().await?;
    let edge = platform.add_edge_with(|c| c.cookie_secure = false).await?;
    let t = tenant(
        &platform,
        "Browser cookies",
        &["app.mybrand.test", "other.test"],
    )
    .await?;
    crate::first_party::verified_domain(&platform, &t, "auth.mybrand.test", Some("mybrand.test"))
        .await?;

    let config = json!({
        "api": format!("http://auth.mybrand.test:{}", edge.port()),
        "key": t.restricted_key,
        "email": idm_testkit::unique_email("browser"),
        "password": "correct horse battery",
    });
    let html = format!(
        "<!doctype html><html><head><title>app</title></head><body>\
         <script>window.IDM = {config};</script>\
         <script type=\"module\" src=\"/first_party.js\"></script></body></html>"
    );
    // The page drives the browser client as built by ops/js-client.sh.
    let client_js =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js/dist/idmesh.js");
    let client_js = std::fs::read_to_string(&client_js).with_context(|| {
        format!(
            "{} is missing: run `npm --prefix clients/js ci && npm --prefix clients/js run build` (ops/test.sh does)",
            client_js.display()
        )
    })?;
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || {
                let html = html.clone();
                async move { axum::response::Html(html) }
            }),
        )
        .route(
            "/first_party.js",
            axum::routing::get(|| async {
                (
                    [("content-type", "text/javascript")],
                    include_str!("../../browser/first_party.js"),
                )
            }),
        )
        .route(
            "/idmesh.js",
            axum::routing::get(move || {
                let client_js = client_js.clone();
                async move { ([("content-type", "text/javascript")], client_js) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let urls: Vec<String> = [
        ("app.mybrand.test", "signup"),
        ("other.test", "cross"),
        ("evil.test", "evil"),
        ("app.mybrand.test", "signout"),
    ]
    .iter()
    .map(|(host, step)| format!("http://{host}:{port}/?step={step}"))
    .collect();
    let seen = devtools(&browser, &urls).await;
    server.abort();
    let seen = seen?;
    anyhow::ensure!(seen.len() == 4, "{} pages seen", seen.len());

    // Signed up, /me with the cookie alone, refreshed, /me again.
    let up = &seen[0];
    assert_eq!(up.result["sign_up"], 201, "{} {:?}", up.result, up.console);
    assert_eq!(up.result["tokens_in_body"], false);
    assert_eq!(up.result["me"], 200, "{}", up.result);
    assert_eq!(up.result["me_id"], up.result["user_id"]);
    assert_eq!(up.result["refresh"], 200, "{}", up.result);
    assert_eq!(up.result["refresh_tokens_in_body"], false);
    assert_eq!(up.result["me_after_refresh"], 200);
    // HttpOnly: invisible to the page's own script…
    assert_eq!(up.result["document_cookie"], "");
    // …but in the browser's jar, first-party to the tenant's site.
    let session = jar_cookie(up, "idm_session")
        .ok_or_else(|| anyhow::anyhow!("no session cookie: {:?}", up.cookies))?;
    assert_eq!(session["domain"], ".mybrand.test");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    let refresh = jar_cookie(up, "idm_refresh")
        .ok_or_else(|| anyhow::anyhow!("no refresh cookie: {:?}", up.cookies))?;
    assert_eq!(refresh["domain"], "auth.mybrand.test");
    assert_eq!(refresh["path"], "/v1/client/token/refresh");
    assert_eq!(refresh["httpOnly"], true);

    // Another site, allowed: the answer is readable, the cookie stays home.
    let cross = &seen[1];
    assert_eq!(
        cross.result["me"], 401,
        "{} {:?}",
        cross.result, cross.console
    );
    assert_eq!(cross.result["code"], "unauthenticated");

    // A disallowed origin: the browser itself refuses the page the answer.
    let evil = &seen[2];
    assert_eq!(evil.result["me"], 0, "{}", evil.result);
    assert!(
        evil.console
            .iter()
            .any(|l| l.contains("blocked by CORS policy")),
        "{:?}",
        evil.console
    );

    // Sign-out: revoked, and the jar is empty again.
    let out = &seen[3];
    assert_eq!(
        out.result["sign_out"], 200,
        "{} {:?}",
        out.result, out.console
    );
    assert_eq!(out.result["me"], 401);
    assert_eq!(out.result["session_left"], serde_json::Value::Null);
    assert!(
        jar_cookie(out, "idm_session").is_none(),
        "{:?}",
        out.cookies
    );
    assert!(
        jar_cookie(out, "idm_refresh").is_none(),
        "{:?}",
        out.cookies
    );
    platform.stop().await
}
