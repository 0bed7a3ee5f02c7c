//! The operator API on the account service's own port: accounts, and each
//! account's plan (the ceilings of its issuers' limits and quotas). Only
//! the operator token opens it; tenant keys never reach it (the public edge
//! does not route `/admin`, and a key is not the token).

use crate::provisioning::{self, NewIssuer};
use crate::State;
use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use idm_core::proto::event::{self, DomainEvent};
use idm_core::text::DisplayName;
use idm_core::{AccountId, AccountPlan, ApiError, ErrorCode, IssuerId, KeyMode, Region, Scope};
use idm_telemetry::http::HttpError;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::sync::Arc;

pub fn routes(state: Arc<State>) -> Router {
    Router::new()
        .route("/admin/v1/accounts", post(create_account))
        .route("/admin/v1/accounts/{id}/plan", get(get_plan).put(put_plan))
        .route("/admin/v1/issuers/{id}/provision", post(provision_issuer))
        .route("/admin/v1/audit_events", get(audit_events))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    name: String,
}

fn operator(state: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Hash both sides so the comparison is constant-time in the length too.
    let expected = idm_crypto::sha256(state.operator_token.expose_secret().as_bytes());
    if idm_crypto::ct_eq(&idm_crypto::sha256(given.as_bytes()), &expected) {
        // What the operator does is audited as the operator's.
        idm_bus::set_actor("operator", None);
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "a valid operator token is required",
        ))
    }
}

async fn create_account(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Result<Json<NewAccount>, JsonRejection>,
) -> Result<axum::response::Response, HttpError> {
    operator(&state, &headers)?;
    let Json(body) = body.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let Some(key) = crate::idempotency::key(&headers)? else {
        let (status, created) = new_account(&state, body).await?;
        return Ok((status, Json(created)).into_response());
    };
    // The request as parsed: the same name is the same request.
    let fingerprint = body.name.clone();
    Ok(
        crate::idempotency::run(&state, &key, fingerprint.as_bytes(), || {
            new_account(&state, body)
        })
        .await?,
    )
}

async fn new_account(
    state: &State,
    body: NewAccount,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let name = DisplayName::parse("name", &body.name)?;
    let account = AccountId::generate();
    let NewIssuer {
        issuer,
        secret_key,
        restricted_key,
    } = provisioning::create_issuer(
        state,
        &account,
        Some(name.as_str()),
        format!("{} (live)", name.as_str()),
        KeyMode::Live,
        Scope::all(),
        true,
    )
    .await
    .map_err(ApiError::from)?;
    crate::handlers::publish(
        state,
        &issuer.id,
        DomainEvent::AccountCreated(event::AccountChanged {
            account_id: account.clone(),
        }),
    )
    .await;
    let created_at = issuer.created_at;
    Ok((
        StatusCode::CREATED,
        serde_json::json!({
            "account": { "id": account, "name": name.as_str(), "created_at": created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default() },
            "issuer": issuer,
            "secret_key": secret_key,
            "restricted_key": restricted_key,
        }),
    ))
}

async fn connection(state: &State) -> Result<idm_db::Client, ApiError> {
    Ok(state.db.get().await.map_err(crate::Error::from)?)
}

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    // A malformed id names no account: the same answer as an unknown one.
    AccountId::parse(raw).map_err(|_| ApiError::not_found("account"))
}

fn plan_body(account: &AccountId, plan: &AccountPlan, custom: bool) -> serde_json::Value {
    serde_json::json!({ "account_id": account, "plan": plan, "custom": custom })
}

/// The account's plan (`custom: false` when it is the deployment's default).
async fn get_plan(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    operator(&state, &headers)?;
    let account = account_id(&id)?;
    let client = connection(&state).await?;
    let (plan, custom) =
        crate::storage::account_plan(&client, &account, &state.default_plan, false)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(plan_body(&account, &plan, custom)))
}

/// Replaces the account's plan (fields not given take the built-in
/// defaults). Issuers keep their stored limits; the edge caps those above
/// the new plan at once (every issuer's cached key config is dropped), and
/// new limits above it are refused.
async fn put_plan(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<AccountPlan>, JsonRejection>,
) -> Result<Json<serde_json::Value>, HttpError> {
    operator(&state, &headers)?;
    let account = account_id(&id)?;
    let Json(plan) = body.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    plan.validate()?;
    let client = connection(&state).await?;
    if !crate::storage::set_plan(&client, &account, &plan)
        .await
        .map_err(ApiError::from)?
    {
        return Err(ApiError::not_found("account").into());
    }
    let issuers = crate::storage::issuers_of(&client, &account)
        .await
        .map_err(ApiError::from)?;
    for issuer in &issuers {
        crate::handlers::broadcast_change(&state, issuer, None).await;
        crate::handlers::publish(
            &state,
            issuer,
            DomainEvent::AccountPlanChanged(event::AccountChanged {
                account_id: account.clone(),
            }),
        )
        .await;
    }
    tracing::info!(account = %account, issuers = issuers.len(), "account plan set");
    Ok(Json(plan_body(&account, &plan, true)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProvisionRequest {
    /// Default: every region the issuer's policy permits.
    #[serde(default)]
    regions: Option<Vec<Region>>,
}

/// Pre-provisions an issuer's schema in regions before their first user
/// (regions are otherwise provisioned on first use). Idempotent; a region
/// that fails is named and the rest are done, so calling again finishes
/// the job: `200` when every region is provisioned, else `503
/// region_unavailable` with each region's outcome in `details`.
async fn provision_issuer(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, HttpError> {
    operator(&state, &headers)?;
    // The body is optional, so parsed here rather than by `Json`.
    let body: ProvisionRequest = if body.is_empty() {
        ProvisionRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid_request(e.to_string()))?
    };
    let issuer_id = IssuerId::parse(&id).map_err(|_| ApiError::not_found("issuer"))?;
    let issuer = {
        let client = connection(&state).await?;
        crate::storage::issuer(&client, &issuer_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("issuer"))?
    };
    let permitted = issuer.policy.permitted_regions();
    let regions = match body.regions {
        Some(asked) => {
            if asked.is_empty() {
                return Err(ApiError::validation("regions must name at least one region").into());
            }
            if let Some(outside) = asked.iter().find(|r| !permitted.contains(r)) {
                return Err(ApiError::new(
                    ErrorCode::ResidencyViolation,
                    format!("region {outside} is outside the issuer's permitted regions"),
                )
                .into());
            }
            asked
        }
        None => permitted,
    };
    let outcome = provisioning::provision_regions(&state, &issuer_id, &regions).await;
    let failed = outcome.iter().filter(|r| !r.provisioned).count();
    crate::handlers::publish(
        &state,
        &issuer_id,
        DomainEvent::IssuerProvisioned(event::IssuerProvisioned {
            regions: outcome
                .iter()
                .filter(|r| r.provisioned)
                .map(|r| r.region)
                .collect(),
            complete: failed == 0,
        }),
    )
    .await;
    tracing::info!(issuer = %issuer_id, regions = regions.len(), failed, "issuer pre-provisioned");
    let body =
        serde_json::json!({ "issuer_id": issuer_id, "regions": outcome, "complete": failed == 0 });
    if failed > 0 {
        return Err(ApiError::new(
            ErrorCode::RegionUnavailable,
            format!(
                "{failed} of {} regions could not be provisioned; call again to finish",
                regions.len()
            ),
        )
        .with_details(body)
        .into());
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    issuer_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    starting_after: Option<String>,
}

fn rfc3339(field: &str, raw: Option<&str>) -> Result<Option<idm_core::Timestamp>, ApiError> {
    raw.map(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::validation(format!("{field} must be an RFC 3339 time")))
    })
    .transpose()
}

/// The audit log across issuers (or of one, with `?issuer_id=`).
async fn audit_events(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    params: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<idm_core::proto::account::AuditEventList>, HttpError> {
    operator(&state, &headers)?;
    let axum::extract::Query(q) = params.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let issuer = q
        .issuer_id
        .as_deref()
        .map(idm_core::IssuerId::parse)
        .transpose()
        .map_err(|_| ApiError::validation("issuer_id is not an issuer id"))?;
    let filter = idm_core::proto::account::AuditFilter {
        event_type: q.event_type,
        actor: q.actor,
        since: rfc3339("since", q.since.as_deref())?,
        until: rfc3339("until", q.until.as_deref())?,
        limit: q.limit.unwrap_or(20),
        starting_after: q.starting_after,
    };
    let client = connection(&state).await?;
    let list = crate::audit::list(&client, issuer.as_ref(), &filter)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(list))
}
