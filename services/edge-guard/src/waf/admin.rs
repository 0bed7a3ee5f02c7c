//! Operator routes on the internal ops listener (`EDGE_OPS_ADDR`, never the
//! public port), guarded by `EDGE_OPERATOR_TOKEN`:
//! - `GET /admin/v1/bans`: running bans on this replica;
//! - `DELETE /admin/v1/bans/{ip}` (optionally `?issuer_id=`): lifts every ban
//!   covering the address, on every replica and in Redis.

use crate::App;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{delete, get};
use axum::{Json, Router};
use idm_core::{ApiError, ErrorCode, IssuerId};
use idm_telemetry::http::HttpError;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;

pub(crate) fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/admin/v1/bans", get(list))
        .route("/admin/v1/bans/{ip}", delete(lift))
        .with_state(app)
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

async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, HttpError> {
    operator(&app, &headers)?;
    Ok(Json(serde_json::json!({ "data": app.waf.bans() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftQuery {
    issuer_id: Option<String>,
}

async fn lift(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(ip): Path<String>,
    query: Result<Query<LiftQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, HttpError> {
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
    Ok(Json(serde_json::json!({ "ip": ip, "lifted": lifted })))
}
