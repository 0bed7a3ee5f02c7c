//! The verification lane: `POST /v1/sessions/verify`, the call a tenant's
//! backend makes on every request it serves, answered in front of the
//! public router rather than through it.
//!
//! Through the router a verification also paid for the router's layers
//! (CORS and host resolution, the body limit and state extensions, the
//! request span and metrics as separate layers, each boxing the request's
//! future again): 3–6 µs of the edge's 36–44 µs per verification, measured
//! A/B (docs/PERFORMANCE.md, "Hot paths, eighth round"). The lane keeps
//! every check and every observable the stack gives this route, done once,
//! in one future:
//!
//! - the ban gate (`ban_gate.rs`), which every request meets first;
//! - the request span, trace context, `x-request-id` and the request
//!   histogram (`idm_telemetry::http::observe`, what the stack's own layer
//!   calls);
//! - the issuer host (`cors::host_of`): on an issuer's own host only that
//!   issuer's keys (`issuer_host_mismatch`);
//! - the body limit (`EDGE_MAX_BODY_BYTES`) and the JSON rejections;
//! - the route table's access class for this route and the handler itself
//!   (`routes::sessions::verify`: the key, the WAF, the scope, the token,
//!   the revocation set).
//!
//! What the stack adds for other routes does not apply here: the route is
//! a backend route (no CORS headers, no `Vary: Origin`), creates nothing
//! (no idempotency record) and is not a probe. Every other method on the
//! path, and every other path, goes to the full stack (`front_door.rs`
//! puts the lane in front of it).

use crate::access::Access;
use crate::front_door::Front;
use crate::{cors, routes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idm_telemetry::http::HttpError;

pub const PATH: &str = "/v1/sessions/verify";

/// Answers a verification (`access`: the route table's class for it).
pub async fn verify(front: Front, access: Access, request: Request) -> Response {
    let Front { app, surface, .. } = front;
    let request = match crate::ban_gate::refusal(&app, &surface, request).await {
        Ok(refused) => return refused,
        Err(request) => request,
    };
    idm_telemetry::http::observe(&surface, PATH, request, |request| async move {
        let host = match cors::host_of(&app, &request).await {
            Ok(host) => host,
            Err(e) => return HttpError(e).into_response(),
        };
        let (mut parts, body) = request.into_parts();
        // What the router's layers put there for `Incoming` to read.
        parts.extensions.insert(access);
        if let Some(host) = host {
            parts.extensions.insert(host);
        }
        let incoming = match crate::access::Incoming::from_request_parts(&mut parts, &app).await {
            Ok(incoming) => incoming,
            Err(never) => match never {},
        };
        let json = Json::from_request(Request::from_parts(parts, body), &()).await;
        routes::sessions::verify(incoming, json)
            .await
            .into_response()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    /// The lane answers one route as the table describes it; if the route
    /// became one that creates (idempotency) or a browser route (CORS),
    /// the lane would skip what the stack does for it.
    #[test]
    fn the_lanes_route_is_a_backend_route_that_creates_nothing() {
        assert!(matches!(
            routes::access_of(&Method::POST, PATH),
            Some(Access::Backend(_))
        ));
        assert!(!crate::idempotency::applies(&Method::POST, PATH));
        assert_eq!(
            crate::waf::RouteClass::of_path(PATH),
            crate::waf::RouteClass::Backend
        );
    }
}
