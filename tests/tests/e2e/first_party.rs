//! First-party sessions (issue 16, docs/EDGE.md "Per-issuer hosts" and
//! docs/SESSIONS.md "Cookie mode"): the edge resolves the issuer from the
//! `Host` before anything else, answers preflights for exactly that
//! issuer's origins with credentials, keeps the tokens in `HttpOnly`
//! cookies when asked, refuses cookie-authenticated state changes without
//! `Idm-Api-Key` (CSRF), recognises same-origin reads by
//! `Sec-Fetch-Site`, and makes every answer to an allowed origin readable.
//! Tried as an attacker too: another tenant's key on the host, a replayed
//! refresh cookie, a custom domain used before it was proved, a spoofed
//! origin. The real browser is in `edge.rs`
//! (`a_browser_keeps_a_first_party_session_in_cookies_on_the_tenants_domain`).

use idm_testkit::{Platform, Response, Tenant, ISSUER_HOST_SUFFIX};
use reqwest::Method;
use serde_json::{json, Value};

/// The platform subdomain of the tenant's issuer.
pub fn issuer_host(t: &Tenant) -> String {
    format!("{}.{ISSUER_HOST_SUFFIX}", t.issuer_id.replace('_', "-"))
}

async fn tenant(platform: &Platform, name: &str, origins: &[&str]) -> anyhow::Result<Tenant> {
    let t = platform.create_account(name).await?;
    platform.allow_origins(&t, origins).await?;
    Ok(t)
}

/// A request to the edge as `host`.
async fn at(
    platform: &Platform,
    host: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> anyhow::Result<Response> {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    platform.send(method, path, &all, body).await
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

fn set_cookies(r: &Response) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// The `Set-Cookie` line for cookie `name`.
fn set_cookie(r: &Response, name: &str) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// The value `Set-Cookie` gives cookie `name`.
fn cookie_value(r: &Response, name: &str) -> Option<String> {
    set_cookie(r, name).and_then(|c| {
        c.split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, v)| v.to_owned())
    })
}

/// Readable by the page at `origin`, with credentials.
fn readable_by(r: &Response, origin: &str) -> bool {
    header(r, "access-control-allow-origin") == Some(origin)
        && header(r, "access-control-allow-credentials") == Some("true")
        && header(r, "access-control-expose-headers").is_some_and(|h| h.contains("retry-after"))
}

fn no_cors(r: &Response) -> bool {
    header(r, "access-control-allow-origin").is_none()
        && header(r, "access-control-allow-credentials").is_none()
}

fn preflight_headers(origin: &str) -> [(&str, &str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "idm-api-key, idm-session-mode, content-type, idempotency-key",
        ),
    ]
}

#[tokio::test]
async fn an_issuer_host_answers_preflights_for_its_own_origins_with_credentials(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Host A", &["app.a-tenant.test"]).await?;
    let b = tenant(platform, "Host B", &["app.b-tenant.test"]).await?;
    let host_a = issuer_host(&a);
    let origin_a = "http://app.a-tenant.test";
    let origin_b = "http://app.b-tenant.test";

    let ok = at(
        platform,
        &host_a,
        Method::OPTIONS,
        "/v1/client/sign_up",
        &preflight_headers(origin_a),
        None,
    )
    .await?;
    assert_eq!(ok.status, 204);
    assert_eq!(header(&ok, "access-control-allow-origin"), Some(origin_a));
    assert_eq!(
        header(&ok, "access-control-allow-credentials"),
        Some("true")
    );
    let allowed = header(&ok, "access-control-allow-headers").unwrap_or_default();
    for h in [
        "idm-api-key",
        "idm-session-mode",
        "content-type",
        "idempotency-key",
    ] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
    let vary: Vec<&str> = ok
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(vary.iter().any(|v| v.contains("Origin")), "{vary:?}");

    // Another tenant's origin on A's host: refused, nothing to read.
    let other = at(
        platform,
        &host_a,
        Method::OPTIONS,
        "/v1/client/sign_up",
        &preflight_headers(origin_b),
        None,
    )
    .await?;
    assert_eq!(other.status, 403);
    assert!(no_cors(&other));
    // …and B's origin on B's host is fine.
    let own = at(
        platform,
        &issuer_host(&b),
        Method::OPTIONS,
        "/v1/client/sign_up",
        &preflight_headers(origin_b),
        None,
    )
    .await?;
    assert_eq!(own.status, 204);

    // Backend routes are never for browsers, even on the issuer's host.
    let backend = at(
        platform,
        &host_a,
        Method::OPTIONS,
        "/v1/users",
        &preflight_headers(origin_a),
        None,
    )
    .await?;
    assert_eq!(backend.status, 403);
    assert!(no_cors(&backend));

    // The shared host answers as before: no credentials.
    let shared = platform
        .send(
            Method::OPTIONS,
            "/v1/client/sign_up",
            &preflight_headers(origin_a),
            None,
        )
        .await?;
    assert_eq!(shared.status, 204);
    assert_eq!(header(&shared, "access-control-allow-credentials"), None);

    // A platform subdomain that names no issuer serves nothing.
    let nobody = format!("iss-{}.{ISSUER_HOST_SUFFIX}", "0".repeat(32));
    for host in [nobody.as_str(), &format!("www.{ISSUER_HOST_SUFFIX}")] {
        let r = at(
            platform,
            host,
            Method::OPTIONS,
            "/v1/client/sign_up",
            &preflight_headers(origin_a),
            None,
        )
        .await?;
        assert_eq!(r.status, 404, "{host}");
        assert!(no_cors(&r));
    }
    Ok(())
}

#[tokio::test]
async fn another_issuers_key_is_refused_on_an_issuer_host() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let a = tenant(platform, "Mine", &["app.mine.test"]).await?;
    let b = tenant(platform, "Theirs", &["app.mine.test"]).await?;
    let host_a = issuer_host(&a);
    let origin = "http://app.mine.test";
    // B lists A's origin too, so only the host decides.
    let theirs = at(
        platform,
        &host_a,
        Method::GET,
        "/v1/client/me",
        &[("idm-api-key", &b.restricted_key), ("origin", origin)],
        None,
    )
    .await?;
    assert_eq!(theirs.status, 403, "{}", theirs.json);
    assert_eq!(theirs.code(), Some("issuer_host_mismatch"));
    let auth = format!("Bearer {}", b.secret_key);
    let secret = at(
        platform,
        &host_a,
        Method::GET,
        "/v1/issuer",
        &[("authorization", &auth)],
        None,
    )
    .await?;
    assert_eq!(secret.code(), Some("issuer_host_mismatch"));
    // A's own key passes the host (and then wants a session).
    let mine = at(
        platform,
        &host_a,
        Method::GET,
        "/v1/client/me",
        &[("idm-api-key", &a.restricted_key), ("origin", origin)],
        None,
    )
    .await?;
    assert_eq!(mine.code(), Some("unauthenticated"));
    // A's session is not B's either: signed up on A's host, presented on B's.
    let email = idm_testkit::unique_email("host");
    let signed = at(
        platform,
        &host_a,
        Method::POST,
        "/v1/client/sign_up",
        &[
            ("idm-api-key", &a.restricted_key),
            ("origin", origin),
            ("idm-session-mode", "cookie"),
        ],
        Some(json!({"email": email, "password": "correct horse battery"})),
    )
    .await?;
    assert_eq!(signed.status, 201, "{}", signed.json);
    let cookie = format!(
        "__Host-idm_session={}",
        cookie_value(&signed, "__Host-idm_session").unwrap_or_default()
    );
    let stolen = at(
        platform,
        &issuer_host(&b),
        Method::GET,
        "/v1/client/me",
        &[
            ("idm-api-key", &b.restricted_key),
            ("origin", origin),
            ("cookie", &cookie),
        ],
        None,
    )
    .await?;
    assert_eq!(stolen.status, 401, "{}", stolen.json);
    Ok(())
}

#[tokio::test]
async fn every_answer_to_an_allowed_origin_is_readable_and_a_refused_origin_reads_nothing(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = tenant(platform, "Readable", &["app.readable.test"]).await?;
    let host = issuer_host(&t);
    let origin = "http://app.readable.test";
    // 401: no key at all.
    let no_key = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/me",
        &[("origin", origin)],
        None,
    )
    .await?;
    assert_eq!(no_key.status, 401);
    assert!(readable_by(&no_key, origin), "{:?}", no_key.headers);
    // 401: a garbled key.
    let bad_key = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/me",
        &[("origin", origin), ("idm-api-key", "rk_live_nope")],
        None,
    )
    .await?;
    assert_eq!(bad_key.status, 401);
    assert!(readable_by(&bad_key, origin));
    // 404: no such route.
    let missing = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/nothing",
        &[("origin", origin)],
        None,
    )
    .await?;
    assert_eq!(missing.status, 404);
    assert!(readable_by(&missing, origin));
    // 400: an unknown session mode.
    let mode = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/me",
        &[
            ("origin", origin),
            ("idm-api-key", &t.restricted_key),
            ("idm-session-mode", "both"),
        ],
        None,
    )
    .await?;
    assert_eq!(mode.code(), Some("invalid_request"));
    assert!(readable_by(&mode, origin));
    // A refused origin reads none of them.
    for path in ["/v1/client/me", "/v1/client/nothing"] {
        let evil = at(
            platform,
            &host,
            Method::GET,
            path,
            &[("origin", "http://evil.test")],
            None,
        )
        .await?;
        assert!(evil.status >= 400);
        assert!(no_cors(&evil), "{path}: {:?}", evil.headers);
    }
    // 429 with Retry-After, readable.
    platform
        .set_waf_policy(&t, json!({"client": {"limit": 2, "window_seconds": 60}}))
        .await?;
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            at(
                platform,
                &host,
                Method::GET,
                "/v1/client/me",
                &[("origin", origin), ("idm-api-key", &t.restricted_key)],
                None,
            )
            .await?,
        );
    }
    let limited = last.ok_or_else(|| anyhow::anyhow!("no answer"))?;
    assert_eq!(limited.status, 429, "{}", limited.json);
    assert!(header(&limited, "retry-after").is_some());
    assert!(readable_by(&limited, origin));
    Ok(())
}

#[tokio::test]
async fn cookie_mode_keeps_both_tokens_in_http_only_cookies_and_rotates_them() -> anyhow::Result<()>
{
    let platform = Platform::shared().await?;
    let t = tenant(platform, "Cookies", &["app.cookies.test"]).await?;
    let host = issuer_host(&t);
    let origin = "http://app.cookies.test";
    let key = t.restricted_key.as_str();
    let cookie_headers = [
        ("idm-api-key", key),
        ("origin", origin),
        ("idm-session-mode", "cookie"),
    ];
    let email = idm_testkit::unique_email("cookie");
    let up = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/sign_up",
        &cookie_headers,
        Some(json!({"email": email, "password": "correct horse battery"})),
    )
    .await?;
    assert_eq!(up.status, 201, "{}", up.json);
    assert!(readable_by(&up, origin));
    // The body keeps the user and the session's id and end, never a token.
    assert!(up.str("/user/id").starts_with("usr_"));
    assert!(up.str("/session_id").starts_with("ses_"));
    assert!(!up.str("/expires_at").is_empty());
    assert!(up.json.get("session_token").is_none() && up.json.get("refresh_token").is_none());
    let session = set_cookie(&up, "__Host-idm_session").unwrap_or_default();
    for attribute in ["Path=/;", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age="] {
        assert!(
            session.contains(attribute),
            "{attribute} missing: {session}"
        );
    }
    assert!(!session.contains("Domain="));
    let refresh = set_cookie(&up, "__Secure-idm_refresh").unwrap_or_default();
    for attribute in [
        "Path=/v1/client/token/refresh",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
    ] {
        assert!(
            refresh.contains(attribute),
            "{attribute} missing: {refresh}"
        );
    }
    let session_1 = cookie_value(&up, "__Host-idm_session").unwrap_or_default();
    let refresh_1 = cookie_value(&up, "__Secure-idm_refresh").unwrap_or_default();
    assert!(session_1.starts_with("idm1.") && refresh_1.starts_with("idmrt_"));

    // /me with the cookie alone (and the key, as the browser client sends).
    let cookie = format!("__Host-idm_session={session_1}");
    let me = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/me",
        &[
            ("idm-api-key", key),
            ("origin", origin),
            ("cookie", &cookie),
        ],
        None,
    )
    .await?;
    assert_eq!(me.status, 200, "{}", me.json);
    assert_eq!(me.str("/id"), up.str("/user/id"));
    assert!(readable_by(&me, origin));

    // Refresh: `{}` and the refresh cookie; both cookies rotate.
    let refresh_cookie = format!("__Secure-idm_refresh={refresh_1}");
    let mut refresh_headers = cookie_headers.to_vec();
    refresh_headers.push(("cookie", &refresh_cookie));
    let renewed = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/token/refresh",
        &refresh_headers,
        Some(json!({})),
    )
    .await?;
    assert_eq!(renewed.status, 200, "{}", renewed.json);
    assert!(
        renewed.json.get("refresh_token").is_none() && renewed.json.get("session_token").is_none()
    );
    let session_2 = cookie_value(&renewed, "__Host-idm_session").unwrap_or_default();
    let refresh_2 = cookie_value(&renewed, "__Secure-idm_refresh").unwrap_or_default();
    assert!(session_2.starts_with("idm1.") && refresh_2.starts_with("idmrt_"));
    assert_ne!(refresh_2, refresh_1);
    // A refresh token in the body is not how the cookie mode works.
    let in_body = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/token/refresh",
        &cookie_headers,
        Some(json!({"refresh_token": refresh_2})),
    )
    .await?;
    assert_eq!(in_body.code(), Some("validation_failed"));

    // The old refresh cookie replayed: reuse, the session is compromised.
    let replay = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/token/refresh",
        &refresh_headers,
        None,
    )
    .await?;
    assert_eq!(replay.status, 401, "{}", replay.json);
    assert_eq!(replay.code(), Some("refresh_token_reused"));
    let after = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/me",
        &[
            ("idm-api-key", key),
            ("origin", origin),
            ("cookie", &format!("__Host-idm_session={session_2}")),
        ],
        None,
    )
    .await?;
    assert_eq!(after.status, 401, "{}", after.json);

    // A fresh session, then sign-out clears both cookies.
    let signed_in = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/sign_in",
        &cookie_headers,
        Some(json!({"email": email, "password": "correct horse battery"})),
    )
    .await?;
    assert_eq!(signed_in.status, 200, "{}", signed_in.json);
    let session_3 = cookie_value(&signed_in, "__Host-idm_session").unwrap_or_default();
    let cookie_3 = format!("__Host-idm_session={session_3}");
    let out = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/sign_out",
        &[
            ("idm-api-key", key),
            ("origin", origin),
            ("idm-session-mode", "cookie"),
            ("cookie", &cookie_3),
        ],
        None,
    )
    .await?;
    assert_eq!(out.status, 200, "{}", out.json);
    for name in ["__Host-idm_session", "__Secure-idm_refresh"] {
        let cleared = set_cookie(&out, name).unwrap_or_default();
        assert!(
            cleared.starts_with(&format!("{name}=;")) && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
    }
    let gone = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/me",
        &[
            ("idm-api-key", key),
            ("origin", origin),
            ("cookie", &cookie_3),
        ],
        None,
    )
    .await?;
    assert_eq!(gone.code(), Some("session_revoked"));

    // Header mode on the same host is as before: tokens in the body.
    let header_mode = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/sign_in",
        &[("idm-api-key", key), ("origin", origin)],
        Some(json!({"email": email, "password": "correct horse battery"})),
    )
    .await?;
    assert_eq!(header_mode.status, 200);
    assert!(header_mode.str("/session_token").starts_with("idm1."));
    assert!(header_mode.str("/refresh_token").starts_with("idmrt_"));

    // The shared host has no cookie mode: every tenant's cookie would share a name.
    let shared = platform
        .send(
            Method::POST,
            "/v1/client/sign_in",
            &cookie_headers,
            Some(json!({"email": email, "password": "correct horse battery"})),
        )
        .await?;
    assert_eq!(shared.status, 400);
    assert_eq!(shared.code(), Some("session_mode_unavailable"));
    Ok(())
}

#[tokio::test]
async fn a_cookie_authenticated_state_change_without_the_key_header_is_refused(
) -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let t = tenant(platform, "Csrf", &["app.csrf.test"]).await?;
    let host = issuer_host(&t);
    let origin = "http://app.csrf.test";
    let key = t.restricted_key.as_str();
    let up = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/sign_up",
        &[("idm-api-key", key), ("origin", origin), ("idm-session-mode", "cookie")],
        Some(json!({"email": idm_testkit::unique_email("csrf"), "password": "correct horse battery"})),
    )
    .await?;
    assert_eq!(up.status, 201, "{}", up.json);
    let session = format!(
        "__Host-idm_session={}",
        cookie_value(&up, "__Host-idm_session").unwrap_or_default()
    );
    let refresh = format!(
        "__Secure-idm_refresh={}",
        cookie_value(&up, "__Secure-idm_refresh").unwrap_or_default()
    );
    // The key in `Authorization` (a header a form cannot send either, but
    // not the one the rule names) with the cookie: refused on POSTs.
    let bearer = format!("Bearer {key}");
    let sign_out = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/sign_out",
        &[
            ("authorization", &bearer),
            ("origin", origin),
            ("cookie", &session),
        ],
        None,
    )
    .await?;
    assert_eq!(sign_out.status, 403, "{}", sign_out.json);
    assert_eq!(sign_out.code(), Some("csrf_check_failed"));
    let refreshed = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/token/refresh",
        &[
            ("authorization", &bearer),
            ("origin", origin),
            ("idm-session-mode", "cookie"),
            ("cookie", &refresh),
        ],
        None,
    )
    .await?;
    assert_eq!(refreshed.code(), Some("csrf_check_failed"));
    // A read with the cookie is fine without it (GET changes nothing).
    let me = at(
        platform,
        &host,
        Method::GET,
        "/v1/client/me",
        &[
            ("authorization", &bearer),
            ("origin", origin),
            ("cookie", &session),
        ],
        None,
    )
    .await?;
    assert_eq!(me.status, 200, "{}", me.json);
    // The session survived the refused sign-out, and the refused refresh
    // consumed nothing: with the header, both work.
    let ok = at(
        platform,
        &host,
        Method::POST,
        "/v1/client/token/refresh",
        &[
            ("idm-api-key", key),
            ("origin", origin),
            ("idm-session-mode", "cookie"),
            ("cookie", &refresh),
        ],
        None,
    )
    .await?;
    assert_eq!(ok.status, 200, "{}", ok.json);
    Ok(())
}

#[tokio::test]
async fn a_same_origin_read_is_recognised_by_sec_fetch_site_and_nothing_else() -> anyhow::Result<()>
{
    let platform = Platform::shared().await?;
    let t = tenant(platform, "Proxy", &["app.proxy.test"]).await?;
    let key = t.restricted_key.as_str();
    let get = |extra: Vec<(&'static str, &'static str)>| {
        let mut headers = vec![("idm-api-key", key)];
        headers.extend(extra);
        async move {
            platform
                .send(Method::GET, "/v1/client/me", &headers, None)
                .await
        }
    };
    // No Origin and no Sec-Fetch-Site: refused, as before.
    assert_eq!(get(vec![]).await?.code(), Some("origin_not_allowed"));
    // The browser's own marker of a same-origin request: the origin check
    // is satisfied (the call then wants a session).
    let same = get(vec![("sec-fetch-site", "same-origin")]).await?;
    assert_eq!(same.code(), Some("unauthenticated"), "{}", same.json);
    assert!(no_cors(&same));
    for other in ["same-site", "cross-site", "none", "Same-Origin"] {
        assert_eq!(
            get(vec![("sec-fetch-site", other)]).await?.code(),
            Some("origin_not_allowed"),
            "{other}"
        );
    }
    // Twice is not once.
    assert_eq!(
        get(vec![
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "same-origin")
        ])
        .await?
        .code(),
        Some("origin_not_allowed")
    );
    // An Origin present is checked as always, whatever Sec-Fetch-Site says.
    assert_eq!(
        get(vec![
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://evil.test")
        ])
        .await?
        .code(),
        Some("origin_not_allowed")
    );
    // Only reads: a POST without Origin stays refused.
    let post = platform
        .send(
            Method::POST,
            "/v1/client/sign_in",
            &[("idm-api-key", key), ("sec-fetch-site", "same-origin")],
            Some(json!({"email": "a@example.com", "password": "x"})),
        )
        .await?;
    assert_eq!(post.code(), Some("origin_not_allowed"));
    Ok(())
}

/// Registers `domain` for the tenant (secret key).
async fn add_domain(
    platform: &Platform,
    t: &Tenant,
    domain: &str,
    cookie_domain: Option<&str>,
) -> anyhow::Result<Response> {
    let mut body = json!({"domain": domain});
    if let Some(c) = cookie_domain {
        body["cookie_domain"] = json!(c);
    }
    platform
        .backend(
            Method::POST,
            "/v1/issuer/domains",
            &t.secret_key,
            Some(body),
        )
        .await
}

/// Registers and verifies `domain` through the test DNS server.
pub async fn verified_domain(
    platform: &Platform,
    t: &Tenant,
    domain: &str,
    cookie_domain: Option<&str>,
) -> anyhow::Result<()> {
    let added = add_domain(platform, t, domain, cookie_domain).await?;
    anyhow::ensure!(added.status == 201, "{}", added.json);
    platform.dns.set_txt(
        &added.str("/challenge/name"),
        &added.str("/challenge/value"),
    );
    let verified = platform
        .backend(
            Method::POST,
            &format!("/v1/issuer/domains/{domain}/verify"),
            &t.secret_key,
            None,
        )
        .await?;
    anyhow::ensure!(verified.status == 200, "{}", verified.json);
    Ok(())
}

#[tokio::test]
async fn a_custom_domain_serves_its_issuer_only_once_control_is_proved() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let brand = format!(
        "brand{}.test",
        &idm_crypto::sha256_hex(&idm_crypto::random_bytes::<8>())[..10]
    );
    let domain = format!("auth.{brand}");
    let origin_host = format!("app.{brand}");
    let origin = format!("http://{origin_host}");
    let t = tenant(platform, "Custom", &[&origin_host]).await?;
    let other = tenant(platform, "Squatter", &[&origin_host]).await?;

    // The cookie Domain must be the domain or a parent of it.
    for bad in ["other.test", "test", &format!("x.{domain}")] {
        let r = add_domain(platform, &t, &domain, Some(bad)).await?;
        assert_eq!(r.status, 422, "{bad}: {}", r.json);
    }
    let added = add_domain(platform, &t, &domain, Some(&brand)).await?;
    assert_eq!(added.status, 201, "{}", added.json);
    assert_eq!(added.json["verified"], json!(false));
    assert_eq!(added.str("/challenge/record_type"), "TXT");
    assert_eq!(
        added.str("/challenge/name"),
        format!("_idmesh-challenge.{domain}")
    );
    let value = added.str("/challenge/value");
    assert!(value.starts_with("idmesh-domain-verification="));

    // Restricted keys cannot manage domains; another tenant cannot claim,
    // verify or delete this one.
    let restricted = platform
        .send(
            Method::POST,
            "/v1/issuer/domains",
            &[("idm-api-key", &t.restricted_key), ("origin", &origin)],
            Some(json!({"domain": format!("x.{brand}")})),
        )
        .await?;
    assert_eq!(restricted.status, 403);
    let squat = add_domain(platform, &other, &domain, None).await?;
    assert_eq!(squat.status, 409, "{}", squat.json);
    for (method, path) in [
        (Method::POST, format!("/v1/issuer/domains/{domain}/verify")),
        (Method::DELETE, format!("/v1/issuer/domains/{domain}")),
    ] {
        let r = platform
            .backend(method, &path, &other.secret_key, None)
            .await?;
        assert_eq!(r.status, 404, "{path}: {}", r.json);
    }
    let listed = platform
        .backend(Method::GET, "/v1/issuer/domains", &other.secret_key, None)
        .await?;
    assert_eq!(listed.json["data"], json!([]));

    // Before verification the host is not the issuer's: no credentials,
    // no cookie mode.
    let cookie_headers = [
        ("idm-api-key", t.restricted_key.as_str()),
        ("origin", origin.as_str()),
        ("idm-session-mode", "cookie"),
    ];
    let email = idm_testkit::unique_email("custom");
    let body = json!({"email": email, "password": "correct horse battery"});
    let early = at(
        platform,
        &domain,
        Method::OPTIONS,
        "/v1/client/sign_up",
        &preflight_headers(&origin),
        None,
    )
    .await?;
    assert_eq!(header(&early, "access-control-allow-credentials"), None);
    let early = at(
        platform,
        &domain,
        Method::POST,
        "/v1/client/sign_up",
        &cookie_headers,
        Some(body.clone()),
    )
    .await?;
    assert_eq!(
        early.code(),
        Some("session_mode_unavailable"),
        "{}",
        early.json
    );
    // The record missing, then wrong: still not verified.
    let verify = format!("/v1/issuer/domains/{domain}/verify");
    let r = platform
        .backend(Method::POST, &verify, &t.secret_key, None)
        .await?;
    assert_eq!(r.code(), Some("domain_not_verified"), "{}", r.json);
    platform.dns.set_txt(
        &format!("_idmesh-challenge.{domain}"),
        "idmesh-domain-verification=guess",
    );
    // The squatter's own token, published by the squatter, proves nothing for this tenant.
    let r = platform
        .backend(Method::POST, &verify, &t.secret_key, None)
        .await?;
    assert_eq!(r.code(), Some("domain_not_verified"));
    platform
        .dns
        .set_txt(&format!("_idmesh-challenge.{domain}"), &value);
    let r = platform
        .backend(Method::POST, &verify, &t.secret_key, None)
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["verified"], json!(true));

    // Now it is the issuer's own host (every edge dropped its cached "no
    // issuer here" on the change broadcast).
    let mut served = false;
    for _ in 0..50 {
        let pre = at(
            platform,
            &domain,
            Method::OPTIONS,
            "/v1/client/sign_up",
            &preflight_headers(&origin),
            None,
        )
        .await?;
        if pre.status == 204 && header(&pre, "access-control-allow-credentials") == Some("true") {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "the verified domain is not served as the issuer's");
    let up = at(
        platform,
        &domain,
        Method::POST,
        "/v1/client/sign_up",
        &cookie_headers,
        Some(body),
    )
    .await?;
    assert_eq!(up.status, 201, "{}", up.json);
    let session = set_cookie(&up, "__Secure-idm_session").unwrap_or_default();
    assert!(
        session.contains(&format!("Domain={brand}")) && session.contains("Secure"),
        "{session}"
    );
    // The refresh cookie stays on the auth host.
    let refresh = set_cookie(&up, "__Secure-idm_refresh").unwrap_or_default();
    assert!(
        !refresh.is_empty() && !refresh.contains("Domain="),
        "{refresh}"
    );
    let cookie = format!(
        "__Secure-idm_session={}",
        cookie_value(&up, "__Secure-idm_session").unwrap_or_default()
    );
    let me = at(
        platform,
        &domain,
        Method::GET,
        "/v1/client/me",
        &[
            ("idm-api-key", &t.restricted_key),
            ("origin", &origin),
            ("cookie", &cookie),
        ],
        None,
    )
    .await?;
    assert_eq!(me.status, 200, "{}", me.json);
    // The other tenant's key is refused there.
    let theirs = at(
        platform,
        &domain,
        Method::GET,
        "/v1/client/me",
        &[
            ("idm-api-key", &other.restricted_key),
            ("origin", &origin),
            ("cookie", &cookie),
        ],
        None,
    )
    .await?;
    assert_eq!(theirs.code(), Some("issuer_host_mismatch"));

    let listed = platform
        .backend(Method::GET, "/v1/issuer/domains", &t.secret_key, None)
        .await?;
    assert_eq!(listed.json["data"][0]["domain"], json!(domain));
    // Removed: served as the shared host again, at once.
    let removed = platform
        .backend(
            Method::DELETE,
            &format!("/v1/issuer/domains/{domain}"),
            &t.secret_key,
            None,
        )
        .await?;
    assert_eq!(removed.status, 200, "{}", removed.json);
    let mut shared_again = false;
    for _ in 0..50 {
        let r = at(
            platform,
            &domain,
            Method::OPTIONS,
            "/v1/client/sign_up",
            &preflight_headers(&origin),
            None,
        )
        .await?;
        if header(&r, "access-control-allow-credentials").is_none() {
            shared_again = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        shared_again,
        "the removed domain is still served as the issuer's"
    );
    Ok(())
}
