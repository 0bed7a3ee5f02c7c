//! CORS at the edge, for the browser-facing routes only (`/v1/client/…` and
//! `/v1/verifications…`). docs/EDGE.md explains the design; in short:
//!
//! - A preflight carries no key, so it cannot know which issuer's
//!   `allowed_origins` apply. It is answered for any well-formed browser
//!   origin (the same strict parser as the real check) with the explicit
//!   methods and headers and *without* `Access-Control-Allow-Credentials`:
//!   it promises nothing but "you may send the request". Backend routes,
//!   malformed origins, `null`, repeated origins and unlisted methods or
//!   headers get no CORS headers at all.
//! - The real request carries the restricted key, and `Incoming::authorize`
//!   refuses an origin the key's issuer does not list (`origin_not_allowed`,
//!   before any work). Only when the origin passed that check does the
//!   response get `Access-Control-Allow-Origin: <that origin>` and
//!   `Access-Control-Allow-Credentials: true`; a refused origin's page cannot
//!   even read the refusal.
//!
//! On a per-issuer host (`hosts.rs`) the issuer is known before any key:
//! a preflight is answered only for that issuer's allowed origins, with
//! `Access-Control-Allow-Credentials: true` (the cookie mode needs it), and
//! every answer to an allowed origin, errors included (a missing key, an
//! unknown route, a 429, a 5xx), carries the CORS headers.
//!
//! Hand-written rather than `tower_http::cors`: its origin predicate runs
//! before the handler and cannot depend on the key's issuer, which is the
//! whole decision here.

use crate::hosts::ServedHost;
use crate::waf::RouteClass;
use crate::App;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use idm_core::{ApiError, ErrorCode, Origin};
use idm_telemetry::http::HttpError;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

pub const ALLOWED_METHODS: &str = "GET, POST, DELETE";
/// `idempotency-key`: a browser sign-up retried after a timeout (docs/OPENAPI.md).
/// `idm-session-mode`: the cookie session mode (docs/SESSIONS.md).
pub const ALLOWED_HEADERS: &str =
    "authorization, content-type, idm-api-key, idm-session-mode, idempotency-key, x-request-id, traceparent, tracestate";
const EXPOSED_HEADERS: &str = "x-request-id, retry-after, idempotent-replayed";
const MAX_AGE_SECONDS: &str = "600";

/// Set by `Incoming::authorize` when a restricted key's origin check passed:
/// the exact `Origin` value to echo on the response.
#[derive(Clone, Default)]
pub struct Grant(Arc<OnceLock<HeaderValue>>);

impl Grant {
    pub fn allow(&self, origin: HeaderValue) {
        let _ = self.0.set(origin);
    }
}

/// The request's single `Origin` header, when there is exactly one.
pub fn single_origin(headers: &HeaderMap) -> Result<&HeaderValue, ApiError> {
    let mut all = headers.get_all(header::ORIGIN).iter();
    match (all.next(), all.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            "restricted keys need an Origin header",
        )),
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorCode::OriginNotAllowed,
            "more than one Origin header",
        )),
    }
}

fn refuse(message: &str) -> Response {
    HttpError(ApiError::new(ErrorCode::OriginNotAllowed, message)).into_response_now()
}

fn vary(response: &mut Response, value: &'static str) {
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static(value));
}

/// The request's origin when `host`'s issuer allows it (the same rules
/// as a restricted key's check: `access::check_origin`).
pub fn host_allows(host: &ServedHost, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    crate::access::origin_verdict(&host.issuer.allowed_origins, &host.issuer.policy, headers)
}

fn preflight(class: RouteClass, host: Option<&ServedHost>, headers: &HeaderMap) -> Response {
    if !class.is_browser_facing() {
        return refuse("backend routes are not callable from browsers");
    }
    let origin = match host {
        // The issuer is known: its own origins only.
        Some(host) => match host_allows(host, headers) {
            Ok(origin) => origin,
            Err(e) => return HttpError(e).into_response_now(),
        },
        None => {
            let origin = match single_origin(headers) {
                Ok(origin) => origin,
                Err(e) => return HttpError(e).into_response_now(),
            };
            let parsed = origin
                .to_str()
                .map_err(|_| ())
                .and_then(|o| Origin::parse(o).map_err(|_| ()));
            if parsed.is_err() {
                return refuse("the Origin is not a browser origin");
            }
            origin.clone()
        }
    };
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default();
    if !ALLOWED_METHODS.split(", ").any(|m| m == method) {
        return refuse("the method is not allowed from browsers");
    }
    let requested_ok = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .all(|v| {
            v.to_str().is_ok_and(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .all(|h| {
                        ALLOWED_HEADERS
                            .split(", ")
                            .any(|allowed| allowed.eq_ignore_ascii_case(h))
                    })
            })
        });
    if !requested_ok {
        return refuse("a requested header is not allowed from browsers");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if host.is_some() {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECONDS),
    );
    vary(
        &mut response,
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    );
    response
}

/// The issuer the request's `Host` serves, if any (`hosts.rs`). `ip` is
/// the client's: an uncached host costs a lookup, budgeted like an unknown
/// key.
pub(crate) async fn served_host(
    app: &App,
    name: Option<String>,
    ip: Option<IpAddr>,
) -> Result<Option<ServedHost>, ApiError> {
    let Some(name) = name else {
        return Ok(None);
    };
    app.hosts
        .resolve(&name, || async move {
            match ip {
                Some(ip) => app.waf.allow_key_lookup(ip).await,
                None => Err(ApiError::internal()),
            }
        })
        .await
}

/// The issuer host `request` is addressed to, if any (its own host or a
/// verified custom domain; looked up once, then cached).
/// (The future does not borrow `request`, whose body is not `Sync`.)
pub(crate) fn host_of<'a>(
    app: &'a App,
    request: &Request,
) -> impl std::future::Future<Output = Result<Option<ServedHost>, ApiError>> + Send + 'a {
    let name = crate::hosts::host_name(request.uri(), request.headers());
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| {
            crate::client_ip::client_ip(&app.config.trusted_proxies, c.0.ip(), request.headers())
        });
    served_host(app, name, ip)
}

/// Middleware for the public router: resolves the issuer host first, then
/// answers preflights, and adds the CORS headers to responses whose request
/// passed an origin check (the host issuer's, or the key's).
pub async fn layer(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let class = RouteClass::of_path(request.uri().path());
    let host = match host_of(&app, &request).await {
        Ok(host) => host,
        Err(e) => return HttpError(e).into_response_now(),
    };
    let is_preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        return preflight(class, host.as_ref(), request.headers());
    }
    let grant = Grant::default();
    if let Some(host) = host {
        // Decided before any key: even a 401 for a missing key is readable.
        if let Some(origin) = host_grant(class, &host, request.headers()) {
            grant.allow(origin);
        }
        request.extensions_mut().insert(host);
    }
    request.extensions_mut().insert(grant.clone());
    let mut response = next.run(request).await;
    decorate(&mut response, class, grant.0.get());
    response
}

/// The origin an issuer host grants before any key: its issuer's allowed
/// origins, on browser routes.
pub(crate) fn host_grant(
    class: RouteClass,
    host: &ServedHost,
    headers: &HeaderMap,
) -> Option<HeaderValue> {
    if !class.is_browser_facing() || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    host_allows(host, headers).ok()
}

/// What every answer on a route of `class` gets: `Vary: Origin` on
/// browser routes, and the CORS headers for the origin `granted`, if any.
pub(crate) fn decorate(response: &mut Response, class: RouteClass, granted: Option<&HeaderValue>) {
    if class.is_browser_facing() {
        vary(response, "Origin");
    }
    if let Some(origin) = granted {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
}
