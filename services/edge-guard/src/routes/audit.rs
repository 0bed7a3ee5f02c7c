//! `GET /v1/audit_events`: the issuer's audit log (docs/WEBHOOKS.md, "Audit
//! log"), kept by the account service.

use super::{query, Reply};
use crate::access::Incoming;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::Json;
use idm_core::proto::account::{AuditEventList, AuditFilter, ListAuditEvents};
use idm_core::ApiError;
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// An event type (`api_key.created`) or a family (`api_key.*`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// `key_…`, `usr_…`, `operator` or `system`.
    actor: Option<String>,
    /// Events at or after this time (RFC 3339).
    since: Option<String>,
    /// Events before this time (RFC 3339).
    until: Option<String>,
    /// 1 to 100 (default 20).
    limit: Option<u32>,
    /// The event id after which the page starts (newest first).
    starting_after: Option<String>,
}

fn time(field: &str, raw: Option<&str>) -> Result<Option<idm_core::Timestamp>, ApiError> {
    raw.map(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::validation(format!("{field} must be an RFC 3339 time")))
    })
    .transpose()
}

/// The issuer's audit events, newest first: who (`actor`), what (`type`,
/// `data` with ids only), when, from which network and in which request.
#[utoipa::path(get, path = "/v1/audit_events", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "The audit events", body = AuditEventList)))]
pub async fn list(
    incoming: Incoming,
    params: Result<Query<AuditQuery>, QueryRejection>,
) -> Reply<Json<AuditEventList>> {
    let caller = incoming.authorize().await?;
    let q = query(params)?;
    if matches!(q.limit, Some(0) | Some(101..)) {
        return Err(ApiError::validation("limit must be between 1 and 100").into());
    }
    let filter = AuditFilter {
        event_type: q.event_type,
        actor: q.actor,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        limit: q.limit.unwrap_or(20),
        starting_after: q.starting_after,
    };
    let list = incoming
        .app
        .bus
        .send(&ListAuditEvents {
            issuer_id: caller.key.issuer_id.clone(),
            filter,
        })
        .await?;
    Ok(Json(list))
}
