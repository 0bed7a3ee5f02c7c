//! What a public request meets before the router: the ban gate
//! (`ban_gate.rs`) for every request, then the verification lane
//! (`verification_lane.rs`) for its one route, or the router with every
//! layer (`lib.rs`) for everything else.
//!
//! Both stand in front of the router's route matching rather than inside
//! it, so that neither a banned caller nor a verification pays for the
//! router's matching and per-route boxing (docs/PERFORMANCE.md, "Hot
//! paths, eighth round" and "ninth round").

use crate::{ban_gate, routes, verification_lane, App};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use http::Method;
use idm_telemetry::Surface;
use std::sync::Arc;

#[derive(Clone)]
pub struct Front {
    pub app: Arc<App>,
    pub surface: Surface,
    /// The public router with every layer.
    full: Router,
}

/// `full` with the ban gate and the verification lane in front of it.
/// Without the lane's route in the table (a refactoring that renamed it),
/// the gate and the full stack alone: the lane never serves a route the
/// table does not describe.
pub fn in_front_of(full: Router, app: Arc<App>, surface: Surface) -> Router {
    let body_limit = app.config.max_body_bytes;
    let front = Front { app, surface, full };
    let Some(access) = routes::access_of(&Method::POST, verification_lane::PATH) else {
        tracing::warn!(
            path = verification_lane::PATH,
            "the verification lane's route is not in the route table; it is served by the full stack"
        );
        return Router::new().fallback(gated).with_state(front);
    };
    let lane = move |State(front): State<Front>, request: Request| {
        verification_lane::verify(front, access, request)
    };
    Router::new()
        .route(verification_lane::PATH, post(lane).fallback(gated))
        .layer(DefaultBodyLimit::max(body_limit))
        .fallback(gated)
        .with_state(front)
}

/// Every request but a verification: the ban gate, then the full stack.
async fn gated(State(front): State<Front>, request: Request) -> Response {
    match ban_gate::refusal(&front.app, &front.surface, request).await {
        Ok(refused) => refused,
        Err(request) => {
            let mut full = front.full;
            match tower_service::Service::call(&mut full, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }
}
