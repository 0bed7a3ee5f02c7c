//! Operator routes on the internal ops listener (`EDGE_OPS_ADDR`, never the
//! public port), guarded by `EDGE_OPERATOR_TOKEN`:
//! - `GET /admin/v1/bans`: running bans on this replica;
//! - `DELETE /admin/v1/bans/{ip}` (optionally `?issuer_id=`): lifts every ban
//!   covering the address, on every replica and in Redis;
//! - `GET /openapi.json`: their OpenAPI document (`docs/openapi-ops.json`),
//!   built from `OPS_ROUTES` like the public one (`crate::openapi`).

use crate::App;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use idm_core::{ApiError, ErrorCode, IssuerId};
use idm_telemetry::http::HttpError;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;

/// One operator route: mounted and described from this table.
pub(crate) struct OpsRoute {
    pub method: http::Method,
    pub path: &'static str,
    /// Codes beyond the operator token's `unauthenticated` and `internal`.
    pub errors: &'static [ErrorCode],
    handler: fn() -> MethodRouter<Arc<App>>,
    pub doc: fn() -> crate::routes::RouteDoc,
}

macro_rules! ops_route {
    ($method:ident $path:literal, $handler:ident, [$($code:ident),*]) => {
        OpsRoute {
            method: http::Method::$method,
            path: $path,
            errors: &[$(ErrorCode::$code),*],
            handler: || on(MethodFilter::$method, $handler),
            doc: || {
                let (schemas, paths, _): (_, _, MethodRouter<Arc<App>>) =
                    utoipa_axum::routes!($handler);
                (schemas, paths)
            },
        }
    };
}

pub(crate) static OPS_ROUTES: &[OpsRoute] = &[
    ops_route!(GET "/admin/v1/bans", list, []),
    ops_route!(DELETE "/admin/v1/bans/{ip}", lift, [ValidationFailed, NotFound, InvalidRequest]),
];

pub(crate) fn routes(app: Arc<App>) -> Router {
    OPS_ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, (route.handler)())
        })
        .route("/openapi.json", get(crate::openapi::serve_ops))
        .with_state(app)
}

/// The bans running on this replica.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct BanList {
    data: Vec<crate::waf::BanView>,
}

/// The answer to a lift.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Lifted {
    #[schema(value_type = String)]
    ip: IpAddr,
    /// How many bans ended.
    lifted: usize,
}

fn operator(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "a valid operator token is required",
        )
    };
    let expected = app
        .waf
        .config()
        .operator_token
        .as_ref()
        .ok_or_else(refused)?;
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Hash both sides so the comparison is constant-time in the length too.
    let same = idm_crypto::ct_eq(
        &idm_crypto::sha256(given.as_bytes()),
        &idm_crypto::sha256(expected.expose_secret().as_bytes()),
    );
    if same {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Running bans on this replica.
#[utoipa::path(get, path = "/admin/v1/bans", tag = "operator",
    responses((status = 200, description = "The bans", body = BanList)))]
async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<BanList>, HttpError> {
    operator(&app, &headers)?;
    Ok(Json(BanList {
        data: app.waf.bans(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LiftQuery {
    /// Only this issuer's bans (default: every issuer's).
    #[param(value_type = Option<IssuerId>)]
    issuer_id: Option<String>,
}

/// Lifts every ban covering the address, on every replica and in Redis.
#[utoipa::path(delete, path = "/admin/v1/bans/{ip}", tag = "operator",
    params(("ip" = String, Path, description = "An IPv4 or IPv6 address"), LiftQuery),
    responses((status = 200, description = "How many bans ended", body = Lifted)))]
async fn lift(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(ip): Path<String>,
    query: Result<Query<LiftQuery>, QueryRejection>,
) -> Result<Json<Lifted>, HttpError> {
    operator(&app, &headers)?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::validation("the path must end in an IP address"))?;
    let query = crate::routes::query(query)?;
    let issuer = query
        .issuer_id
        .as_deref()
        .map(IssuerId::parse)
        .transpose()?;
    let lifted = app.waf.lift(ip, issuer.as_ref()).await;
    Ok(Json(Lifted { ip, lifted }))
}
