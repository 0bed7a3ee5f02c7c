//! Who may call what: the API key (checksum first, then the cached hash
//! lookup), its mode, its kind against the route class, scopes for secret
//! keys, and the browser origin for restricted keys. Every public route goes
//! through `Incoming::authorize` before it does anything else; the route's
//! `Access` comes from the route table (`routes::ROUTES`), never from the
//! handler, so the table the scope matrix test walks is the one enforced.

use crate::waf::RouteClass;
use crate::{client_ip, cors, App};
use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use http::HeaderMap;
use idm_core::origin::origin_allowed;
use idm_core::proto::account::KeyConfig;
use idm_core::proto::{Device, IssuerContext};
use idm_core::scope::any_grants;
use idm_core::{ApiError, ApiKey, ErrorCode, KeyKind, Origin, Scope};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The session cookie's name on the shared host (and on an issuer host
/// without a cookie `Domain`), with `Secure`: `cookies::Jar` decides.
pub const SESSION_COOKIE: &str = "__Host-idm_session";
pub const API_KEY_HEADER: &str = "idm-api-key";
pub const SESSION_MODE_HEADER: &str = "idm-session-mode";

/// The class of a route, which decides the keys that may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Secret keys holding the scope.
    Backend(Scope),
    /// Restricted keys from an allowed origin, or secret keys.
    Client,
    /// The verification API: either key, like client routes.
    Verification,
}

/// A request's transport facts, extracted once.
pub struct Incoming {
    pub app: Arc<App>,
    pub headers: HeaderMap,
    /// The TCP peer; `None` only if the server was built without connect
    /// info, and then every call is refused rather than given an address.
    peer: Option<SocketAddr>,
    /// The route's access class from the route table; `None` (a handler
    /// mounted outside the table) refuses every call.
    access: Option<Access>,
    /// The WAF's route class, from the path.
    pub class: RouteClass,
    /// Where a passed origin check is noted for the CORS response headers.
    cors: cors::Grant,
    /// Set when the idempotency layer already authorised this request, so
    /// it is not counted (by the WAF) twice.
    authorized: Option<Caller>,
    pub method: http::Method,
    /// The issuer the request's host serves (`hosts.rs`), if any.
    pub host: Option<crate::hosts::ServedHost>,
}

impl FromRequestParts<Arc<App>> for Incoming {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            app: Arc::clone(app),
            headers: parts.headers.clone(),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            access: parts.extensions.get::<Access>().copied(),
            class: RouteClass::of_path(parts.uri.path()),
            cors: parts
                .extensions
                .get::<cors::Grant>()
                .cloned()
                .unwrap_or_default(),
            authorized: parts
                .extensions
                .get::<crate::idempotency::Authorized>()
                .map(|a| a.0.clone()),
            method: parts.method.clone(),
            host: parts.extensions.get::<crate::hosts::ServedHost>().cloned(),
        })
    }
}

/// An authorised caller.
#[derive(Clone)]
pub struct Caller {
    pub key: Arc<KeyConfig>,
    pub ip: IpAddr,
    pub country: Option<String>,
    pub user_agent: Option<String>,
    /// The request's place among its issuer's requests in flight, shared
    /// by the clones of one request's caller (the idempotency layer keeps
    /// one): the place is given back when the last of them is dropped.
    _in_flight: Arc<crate::waf::Ticket>,
}

impl Caller {
    pub fn ctx(&self) -> IssuerContext {
        IssuerContext {
            issuer_id: self.key.issuer_id.clone(),
            account_id: self.key.account_id.clone(),
            policy: self.key.policy.clone(),
            issuer_name: self.key.issuer_name.clone(),
        }
    }

    pub fn device(&self) -> Device {
        Device {
            ip: Some(self.ip.to_string()),
            user_agent: self.user_agent.clone(),
            country: self.country.clone(),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn api_key_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The API key: the `Idm-Api-Key` header when present, else
/// `Authorization: Bearer <key>`. Never guessed from the value's shape, so a
/// garbled key is reported as an invalid key, not as a missing one.
fn api_key_text(headers: &HeaderMap) -> Option<&str> {
    api_key_header(headers).or_else(|| bearer(headers))
}

/// Where a session token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Bearer,
    Cookie,
}

/// The session token: `Authorization: Bearer <token>` when the key came in
/// `Idm-Api-Key`, else the session cookie named `cookie`.
pub fn session_token(headers: &HeaderMap, cookie: &str) -> Option<(String, TokenSource)> {
    if api_key_header(headers).is_some() {
        if let Some(value) = bearer(headers) {
            return Some((value.to_owned(), TokenSource::Bearer));
        }
    }
    crate::cookies::Jar::read(headers, cookie).map(|v| (v, TokenSource::Cookie))
}

/// Whether the request asks for the cookie session mode
/// (`Idm-Session-Mode: cookie`; `header` or no header: the header mode).
pub fn cookie_mode(headers: &HeaderMap) -> Result<bool, ApiError> {
    let mut all = headers.get_all(SESSION_MODE_HEADER).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(false),
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"cookie") => Ok(true),
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"header") => Ok(false),
        _ => Err(ApiError::invalid_request(
            "Idm-Session-Mode must be `cookie` or `header`",
        )),
    }
}

/// CSRF (docs/EDGE.md, "CSRF"): a request authenticated by a cookie that
/// changes state must carry `Idm-Api-Key`, a header no cross-site form can
/// send and no cross-site script can send without a preflight that only the
/// issuer's origins pass. `SameSite=Lax` is not relied on.
pub fn csrf_check(method: &http::Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let safe = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if safe || api_key_header(headers).is_some_and(|k| !k.is_empty()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::CsrfCheckFailed,
            "a cookie-authenticated request that changes state must send the Idm-Api-Key header",
        ))
    }
}

/// An issuer that requires https accepts plain http only from localhost.
/// Shared by the `Origin` check and the magic-link redirect check, so both
/// apply the same rule.
pub(crate) fn scheme_permitted(policy: &idm_core::IssuerPolicy, origin: &Origin) -> bool {
    !policy.require_https_origins || origin.scheme == "https" || origin.is_localhost()
}

/// The request's origin if `allowed` lists it. Only the `Origin` header
/// counts: a `Referer` never stands in for a missing one.
pub(crate) fn origin_verdict(
    allowed: &[idm_core::AllowedOrigin],
    policy: &idm_core::IssuerPolicy,
    headers: &HeaderMap,
) -> Result<http::HeaderValue, ApiError> {
    let raw = cors::single_origin(headers)?;
    let text = raw
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::OriginNotAllowed, "the Origin header is not text"))?;
    let origin = Origin::parse(text)?;
    if !scheme_permitted(policy, &origin) {
        return Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            "this application requires https origins",
        ));
    }
    if origin_allowed(allowed, &origin) {
        Ok(raw.clone())
    } else {
        Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            "the origin is not allowed for this key",
        ))
    }
}

/// A browser sends no `Origin` on a same-origin `GET` or `HEAD` (a page
/// served behind the same reverse proxy as the API). Such a request is
/// recognised by `Sec-Fetch-Site: same-origin`, a header page scripts
/// cannot set, and only for those methods: every other request keeps the
/// `Origin` check.
fn same_origin_read(method: &http::Method, headers: &HeaderMap) -> bool {
    matches!(*method, http::Method::GET | http::Method::HEAD)
        && !headers.contains_key(http::header::ORIGIN)
        && {
            let mut all = headers.get_all("sec-fetch-site").iter();
            matches!((all.next(), all.next()), (Some(v), None) if v.as_bytes() == b"same-origin")
        }
}

/// The origin verdict for a restricted key: `Ok(Some(origin))` to echo in
/// the CORS headers, `Ok(None)` for a same-origin read (no CORS needed).
fn check_origin(
    key: &KeyConfig,
    method: &http::Method,
    headers: &HeaderMap,
) -> Result<Option<http::HeaderValue>, ApiError> {
    if same_origin_read(method, headers) {
        return Ok(None);
    }
    origin_verdict(&key.allowed_origins, &key.policy, headers).map(Some)
}

/// Whether the presented key is the stored one as it stands: same kind and
/// mode, and the issuer still in that mode.
fn fits(parsed: &ApiKey, key: &KeyConfig) -> bool {
    parsed.kind() == key.kind && parsed.mode() == key.mode && key.mode == key.issuer_mode
}

/// The request's key when it is well formed, cached on this replica and
/// live: what can be known of the caller without any lookup (the ban gate
/// asks; a miss is left to `Incoming::authorize`).
pub(crate) async fn cached_key(app: &App, headers: &HeaderMap) -> Option<Arc<KeyConfig>> {
    let parsed = ApiKey::parse(api_key_text(headers)?).ok()?;
    let key = app
        .keys
        .cached(&idm_crypto::api_key_hash(&parsed))
        .await??;
    fits(&parsed, &key).then_some(key)
}

/// The origin to grant CORS to when `key` (a restricted key) is called from
/// a page its issuer allows: `authorize`'s own origin check.
pub(crate) fn origin_grant(
    key: &KeyConfig,
    method: &http::Method,
    headers: &HeaderMap,
) -> Option<http::HeaderValue> {
    check_origin(key, method, headers).ok().flatten()
}

impl Incoming {
    /// The session cookies of this request's host.
    pub fn jar(&self) -> crate::cookies::Jar {
        crate::cookies::Jar::new(self.app.config.cookie_secure, self.host.as_ref())
    }

    /// Whether the answer keeps the tokens in cookies (and out of the
    /// body). Cookie mode needs an issuer's own host: on the shared API
    /// host every tenant's cookie would share one name.
    pub fn cookie_mode(&self) -> Result<bool, ApiError> {
        let cookie = cookie_mode(&self.headers)?;
        if cookie && self.host.is_none() {
            return Err(ApiError::new(
                ErrorCode::SessionModeUnavailable,
                "cookie sessions are served on the issuer's own host (a platform subdomain or a verified custom domain)",
            ));
        }
        Ok(cookie)
    }

    /// Authorises the caller for this route's access class (from the table).
    pub async fn authorize(&self) -> Result<Caller, ApiError> {
        if let Some(caller) = &self.authorized {
            return Ok(caller.clone());
        }
        let invalid = || ApiError::new(ErrorCode::InvalidApiKey, "the API key is not valid");
        let (Some(access), Some(peer)) = (self.access, self.peer) else {
            tracing::error!(access = ?self.access, peer = ?self.peer, "a route is missing its access class or peer address");
            return Err(ApiError::internal());
        };
        self.cookie_mode()?;
        let raw = api_key_text(&self.headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "an API key is required (Authorization: Bearer <key>)",
            )
        })?;
        let parsed = ApiKey::parse(raw)?;
        let hash = idm_crypto::api_key_hash(&parsed);
        let trusted = &self.app.config.trusted_proxies;
        let ip = client_ip::client_ip(trusted, peer.ip(), &self.headers);
        let cached = match self.app.keys.cached(&hash).await {
            Some(entry) => entry,
            None => {
                // Only a cache miss costs a lookup; a network's misses are budgeted.
                self.app.waf.allow_key_lookup(ip).await?;
                self.app.keys.resolve(&hash).await?
            }
        };
        let key = cached.ok_or_else(invalid)?;
        if !fits(&parsed, &key) {
            return Err(invalid());
        }
        // On an issuer's own host, only that issuer's keys.
        if let Some(host) = &self.host {
            if host.issuer.issuer_id != key.issuer_id {
                return Err(ApiError::new(
                    ErrorCode::IssuerHostMismatch,
                    "this API key belongs to another issuer than the one this host serves",
                ));
            }
        }
        // The origin verdict is taken before the WAF so that an allowed page
        // can read a 429 or 403 answer, and enforced after it so that
        // refused origins still count towards the velocity limit.
        let origin = match (access, key.kind) {
            (Access::Client | Access::Verification, KeyKind::Restricted) => {
                Some(check_origin(&key, &self.method, &self.headers))
            }
            _ => None,
        };
        if let Some(Ok(Some(allowed))) = &origin {
            self.cors.allow(allowed.clone());
        }
        self.app.waf.guard(&key, self.class, ip).await?;
        if let Some(Err(refused)) = origin {
            return Err(refused);
        }
        let in_flight = self.app.waf.admit(&key)?;
        match (access, key.kind) {
            (Access::Backend(scope), KeyKind::Secret) => {
                if !any_grants(&key.scopes, scope) {
                    return Err(ApiError::new(
                        ErrorCode::InsufficientScope,
                        format!("this key lacks the {scope} scope"),
                    ));
                }
            }
            (Access::Backend(_), KeyKind::Restricted) => {
                return Err(ApiError::new(
                    ErrorCode::InsufficientScope,
                    "restricted keys may only call client and verification routes",
                ));
            }
            (Access::Client | Access::Verification, _) => {}
        }
        let user_agent = self
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect());
        // The audit log's actor: the key, from this network (calls and
        // events made for this request carry it).
        idm_bus::set_actor(key.key_id.as_str(), Some(idm_bus::network_of(ip)));
        Ok(Caller {
            ip,
            country: client_ip::country(
                trusted,
                peer.ip(),
                &self.headers,
                &self.app.config.country_header,
            ),
            user_agent,
            key,
            _in_flight: Arc::new(in_flight),
        })
    }

    /// The verified session of a client-route caller.
    pub async fn session(
        &self,
        caller: &Caller,
    ) -> Result<idm_crypto::session_token::SessionClaims, ApiError> {
        let (token, source) = session_token(&self.headers, self.jar().session_name())
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "a session is required"))?;
        if source == TokenSource::Cookie {
            csrf_check(&self.method, &self.headers)?;
        }
        let claims = self.app.verify_session(&caller.key, &token).await?;
        // A session acts for its user.
        idm_bus::set_actor(claims.sub.as_str(), Some(idm_bus::network_of(caller.ip)));
        Ok(claims)
    }
}
