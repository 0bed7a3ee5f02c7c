//! The ban gate: a caller its issuer has banned is refused before the
//! request reaches the router (its route matching, its layers, its
//! telemetry) or any handler; `front_door.rs` puts it in front of both
//! the router and the verification lane.
//!
//! Bans are per issuer (`waf/bans.rs`: one tenant's policy must not lock
//! a shared address out of every other tenant's application), so the
//! refusal needs the caller's issuer, which only its key names. Inside the
//! stack that meant the whole router first: the request span and
//! histogram, host and CORS resolution, route matching, the key, and only
//! then the ban, which is why a refused ban cost as much edge CPU as a
//! served verification (docs/PERFORMANCE.md, "Hot paths, ninth round").
//! The gate asks in this order, each step from this replica's memory:
//!
//! 1. does any issuer ban the client's network (`Waf::may_be_banned`: one
//!    atomic load while nothing is banned, a hash lookup per IPv6 prefix
//!    length in use otherwise)? Almost every request stops here and goes
//!    on to the stack;
//! 2. is the request's key well formed, cached and live (`cached_key`; an
//!    uncached key is left to the stack, which looks it up under the key
//!    lookup budget);
//! 3. on an issuer's own host, is it that issuer's key (otherwise the
//!    stack answers `issuer_host_mismatch`);
//! 4. does the key's issuer ban the network (`Waf::banned`, which counts
//!    the refusal as the stack's WAF check does)?
//!
//! The answer is the stack's: `403 ip_banned` with `Retry-After`, the
//! `x-request-id` the request would have had, and the CORS headers the
//! stack would add (the host's grant, or the restricted key's origin
//! check). The one difference is the telemetry: the request span is at
//! debug level and the request histogram gets no sample
//! (`idm_telemetry::http::refuse_quietly`); the refusals are counted in
//! `idm_edge_rate_limit_decisions_total{decision="banned"}` and
//! `idm_edge_waf_rejections_total{reason="ip_banned"}` (docs/EDGE.md).

use crate::access::{cached_key, origin_grant};
use crate::waf::RouteClass;
use crate::{client_ip, cors, hosts, App};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http::request::Parts;
use idm_telemetry::Surface;
use std::net::{IpAddr, SocketAddr};

/// The answer to `request` when its issuer bans its network, or the
/// request back (the stack decides) in every other case, including every
/// case the gate cannot decide from memory.
pub async fn refusal(app: &App, surface: &Surface, request: Request) -> Result<Response, Request> {
    let Some(ip) = banned_by_someone(app, &request) else {
        return Err(request);
    };
    // Split so that nothing borrowed from the request (whose body is not
    // `Sync`) is held across an await.
    let (parts, body) = request.into_parts();
    match refusal_of(app, surface, &parts, ip).await {
        Some(refused) => Ok(refused),
        None => Err(Request::from_parts(parts, body)),
    }
}

/// The client's address, when some issuer bans its network.
fn banned_by_someone(app: &App, request: &Request) -> Option<IpAddr> {
    if !app.waf.bans_running() {
        return None;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0;
    let ip = client_ip::client_ip(&app.config.trusted_proxies, peer.ip(), request.headers());
    app.waf.may_be_banned(ip).then_some(ip)
}

async fn refusal_of(app: &App, surface: &Surface, parts: &Parts, ip: IpAddr) -> Option<Response> {
    let headers = &parts.headers;
    let key = cached_key(app, headers).await?;
    let host = cors::served_host(app, hosts::host_name(&parts.uri, headers), Some(ip))
        .await
        .ok()?;
    if host
        .as_ref()
        .is_some_and(|host| host.issuer.issuer_id != key.issuer_id)
    {
        return None;
    }
    let class = RouteClass::of_path(parts.uri.path());
    let refused = app.waf.banned(&key, class, ip)?;
    let granted = host
        .as_ref()
        .and_then(|host| cors::host_grant(class, host, headers))
        .or_else(|| {
            (class.is_browser_facing() && key.kind == idm_core::KeyKind::Restricted)
                .then(|| origin_grant(&key, &parts.method, headers))
                .flatten()
        });
    let mut response = idm_telemetry::http::refuse_quietly(surface, parts, refused);
    cors::decorate(&mut response, class, granted.as_ref());
    Some(response)
}
