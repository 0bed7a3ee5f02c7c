//! Bus operations: the edge's `/v1/webhook_endpoints` and
//! `/v1/webhook_messages` routes. Every lookup is by id *and* issuer.

use crate::{signing, storage, Error, State};
use idm_core::ids::WebhookEndpointId;
use idm_core::proto::event::{DomainEvent, WebhookEndpointChanged};
use idm_core::proto::webhook::*;
use idm_core::{ApiError, ErrorCode, IssuerId};
use std::sync::Arc;

/// Endpoints one issuer may have.
const MAX_ENDPOINTS: i64 = 50;
/// Event types one endpoint may list.
const MAX_EVENT_TYPES: usize = 64;
/// Events one replay may queue.
const MAX_REPLAY: i64 = 10_000;

fn event_types(types: Vec<String>) -> Result<Vec<String>, ApiError> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(ApiError::validation(format!(
            "at most {MAX_EVENT_TYPES} event types"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if !DomainEvent::TYPES.contains(&t.as_str()) {
            let shown: String = t.chars().take(64).collect();
            return Err(
                ApiError::validation(format!("unknown event type '{shown}'"))
                    .with_details(serde_json::json!({ "field": "events" })),
            );
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.sort();
    Ok(out)
}

fn description(text: Option<String>) -> Result<Option<String>, ApiError> {
    match text {
        Some(d) if d.chars().count() > 256 => Err(ApiError::validation(
            "description is longer than 256 characters",
        )),
        Some(d) if d.chars().any(char::is_control) => {
            Err(ApiError::validation("description holds control characters"))
        }
        Some(d) if d.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// The page as this service reads it: a bus caller's `0` is the default
/// size, more than 100 is refused (the edge already checked its callers).
fn checked(page: &Page) -> Result<Page, ApiError> {
    let limit = match page.limit {
        0 => idm_core::page::DEFAULT_LIMIT,
        n @ 1..=idm_core::page::MAX_LIMIT => n,
        _ => return Err(ApiError::validation("limit must be between 1 and 100")),
    };
    Ok(Page {
        limit,
        starting_after: page.starting_after.clone(),
    })
}

async fn checked_url(state: &State, raw: &str) -> Result<String, ApiError> {
    let url = state.guard.check_url(raw)?;
    state.guard.check_resolved(&url).await?;
    Ok(url.to_string())
}

fn seal(state: &State, endpoint: &WebhookEndpointId, secret: &str) -> Result<Vec<u8>, Error> {
    Ok(state
        .secrets
        .seal(secret.as_bytes(), endpoint.as_str().as_bytes())?)
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn create_endpoint(
    state: Arc<State>,
    req: CreateEndpoint,
) -> Result<CreatedEndpoint, Error> {
    let url = checked_url(&state, &req.url).await?;
    let events = event_types(req.events)?;
    let description = description(req.description)?;
    let client = state.db.get().await?;
    if storage::count_endpoints(&client, &req.issuer_id).await? >= MAX_ENDPOINTS {
        return Err(ApiError::new(
            ErrorCode::PlanLimitReached,
            format!("an issuer may have at most {MAX_ENDPOINTS} webhook endpoints"),
        )
        .into());
    }
    let now = idm_core::now();
    let endpoint = Endpoint {
        id: WebhookEndpointId::generate(),
        issuer_id: req.issuer_id,
        url,
        events,
        description,
        enabled: true,
        disabled_reason: None,
        previous_secret_expires_at: None,
        created_at: now,
        updated_at: now,
    };
    let secret = signing::new_secret();
    let sealed = seal(&state, &endpoint.id, secret.expose())?;
    storage::insert_endpoint(&client, &endpoint, &sealed).await?;
    tracing::info!(endpoint = %endpoint.id, "webhook endpoint created");
    audit(&state, &endpoint, DomainEvent::WebhookEndpointCreated).await;
    Ok(CreatedEndpoint { endpoint, secret })
}

/// Publishes an endpoint change for the audit log (and for the tenant's
/// other endpoints). The change is committed: a failure is logged, not
/// returned, so the caller is not told a change that happened failed.
async fn audit(
    state: &State,
    endpoint: &Endpoint,
    event: fn(WebhookEndpointChanged) -> DomainEvent,
) {
    let event = event(WebhookEndpointChanged {
        endpoint_id: endpoint.id.clone(),
    });
    let event_type = event.event_type();
    if let Err(e) = state.events.publish(&endpoint.issuer_id, event).await {
        tracing::error!(endpoint = %endpoint.id, event_type, code = %e.code, "event not published");
    }
}

pub async fn list_endpoints(state: Arc<State>, req: ListEndpoints) -> Result<EndpointList, Error> {
    let page = checked(&req.page)?;
    let client = state.db.get().await?;
    let rows = storage::list_endpoints(
        &client,
        &req.issuer_id,
        page.limit,
        page.starting_after.as_deref(),
    )
    .await?;
    let (data, has_more) = page.cut(rows);
    Ok(EndpointList { data, has_more })
}

async fn load(
    state: &State,
    issuer: &IssuerId,
    id: &WebhookEndpointId,
) -> Result<storage::StoredEndpoint, Error> {
    storage::endpoint(&state.db.get().await?, issuer, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint").into())
}

pub async fn get_endpoint(state: Arc<State>, req: EndpointRef) -> Result<Endpoint, Error> {
    Ok(load(&state, &req.issuer_id, &req.endpoint_id)
        .await?
        .endpoint)
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, endpoint = %req.endpoint_id))]
pub async fn update_endpoint(state: Arc<State>, req: UpdateEndpoint) -> Result<Endpoint, Error> {
    let url = match &req.url {
        Some(raw) => Some(checked_url(&state, raw).await?),
        None => None,
    };
    let events = req.events.map(event_types).transpose()?;
    let description_change = req.description.map(|d| description(Some(d))).transpose()?;
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    let mut endpoint = storage::endpoint_for_update(&tx, &req.issuer_id, &req.endpoint_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?
        .endpoint;
    if let Some(url) = url {
        endpoint.url = url;
    }
    if let Some(events) = events {
        endpoint.events = events;
    }
    if let Some(description) = description_change {
        endpoint.description = description;
    }
    match req.enabled {
        Some(true) if !endpoint.enabled => {
            endpoint.enabled = true;
            endpoint.disabled_reason = None;
        }
        Some(false) if endpoint.enabled => {
            endpoint.enabled = false;
            endpoint.disabled_reason = Some("tenant".into());
        }
        _ => {}
    }
    endpoint.updated_at = idm_core::now();
    storage::save_endpoint(&tx, &endpoint).await?;
    tx.commit().await?;
    audit(&state, &endpoint, DomainEvent::WebhookEndpointUpdated).await;
    Ok(endpoint)
}

#[tracing::instrument(skip_all, fields(issuer = %req.0.issuer_id, endpoint = %req.0.endpoint_id))]
pub async fn delete_endpoint(state: Arc<State>, req: DeleteEndpoint) -> Result<Endpoint, Error> {
    let DeleteEndpoint(req) = req;
    let endpoint = load(&state, &req.issuer_id, &req.endpoint_id)
        .await?
        .endpoint;
    if !storage::delete_endpoint(&state.db.get().await?, &req.issuer_id, &req.endpoint_id).await? {
        return Err(ApiError::not_found("webhook endpoint").into());
    }
    tracing::info!("webhook endpoint deleted");
    audit(&state, &endpoint, DomainEvent::WebhookEndpointDeleted).await;
    Ok(endpoint)
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, endpoint = %req.endpoint_id))]
pub async fn rotate_secret(state: Arc<State>, req: RotateSecret) -> Result<RotatedSecret, Error> {
    let overlap = match req.overlap_seconds {
        Some(s) if s > 7 * 24 * 3600 => {
            return Err(ApiError::validation("overlap_seconds is at most 604800 (7 days)").into())
        }
        Some(s) => std::time::Duration::from_secs(s),
        None => state.delivery.secret_overlap,
    };
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    let stored = storage::endpoint_for_update(&tx, &req.issuer_id, &req.endpoint_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let now = idm_core::now();
    let secret = signing::new_secret();
    let sealed = seal(&state, &req.endpoint_id, secret.expose())?;
    let (previous, until) = if overlap.is_zero() {
        (None, None)
    } else {
        (Some(stored.sealed_secret.as_slice()), Some(now + overlap))
    };
    storage::save_secrets(&tx, &req.endpoint_id, &sealed, previous, until, now).await?;
    tx.commit().await?;
    let mut endpoint = stored.endpoint;
    endpoint.previous_secret_expires_at = until;
    endpoint.updated_at = now;
    tracing::info!("webhook secret rotated");
    audit(&state, &endpoint, DomainEvent::WebhookEndpointSecretRotated).await;
    Ok(RotatedSecret { endpoint, secret })
}

const STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

pub async fn list_messages(state: Arc<State>, req: ListMessages) -> Result<MessageList, Error> {
    let page = checked(&req.page)?;
    if let Some(status) = &req.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::validation("status must be pending, delivered or failed").into());
        }
    }
    let client = state.db.get().await?;
    let rows = storage::list_messages(
        &client,
        &req.issuer_id,
        req.status.as_deref(),
        req.endpoint_id.as_ref().map(WebhookEndpointId::as_str),
        page.limit,
        page.starting_after.as_deref(),
    )
    .await?;
    let (data, has_more) = page.cut(rows);
    Ok(MessageList { data, has_more })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, message = %req.message_id))]
pub async fn retry_message(state: Arc<State>, req: RetryMessage) -> Result<Message, Error> {
    let client = state.db.get().await?;
    let message = storage::message(&client, &req.issuer_id, &req.message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook message"))?;
    let endpoint = load(&state, &req.issuer_id, &message.endpoint_id)
        .await?
        .endpoint;
    if !endpoint.enabled {
        return Err(ApiError::conflict("the endpoint is disabled: enable it first").into());
    }
    if message.status != "pending" {
        storage::requeue(&client, message.id.as_str(), idm_core::now()).await?;
        state.wake.notify_one();
    }
    Ok(storage::message(&client, &req.issuer_id, &req.message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook message"))?)
}

pub async fn list_attempts(state: Arc<State>, req: ListAttempts) -> Result<AttemptList, Error> {
    let page = checked(&req.page)?;
    // The endpoint must be the issuer's (a plain 404 otherwise).
    load(&state, &req.issuer_id, &req.endpoint_id).await?;
    let rows = storage::list_attempts(
        &state.db.get().await?,
        &req.issuer_id,
        &req.endpoint_id,
        page.limit,
        page.starting_after.as_deref(),
    )
    .await?;
    let (data, has_more) = page.cut(rows);
    Ok(AttemptList { data, has_more })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, endpoint = %req.endpoint_id))]
pub async fn replay(state: Arc<State>, req: Replay) -> Result<Replayed, Error> {
    let now = idm_core::now();
    if req.since > now {
        return Err(ApiError::validation("since is in the future").into());
    }
    let endpoint = load(&state, &req.issuer_id, &req.endpoint_id)
        .await?
        .endpoint;
    if !endpoint.enabled {
        return Err(ApiError::conflict("the endpoint is disabled: enable it first").into());
    }
    let queued = storage::replay(
        &state.db.get().await?,
        &endpoint,
        req.since,
        now,
        MAX_REPLAY,
    )
    .await?;
    state.wake.notify_one();
    tracing::info!(queued, "webhook replay queued");
    Ok(Replayed { queued })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filters_are_known_types_deduplicated() {
        assert_eq!(
            event_types(vec![
                "user.created".into(),
                "user.created".into(),
                "session.revoked".into()
            ])
            .ok(),
            Some(vec![
                "session.revoked".to_owned(),
                "user.created".to_owned()
            ])
        );
        assert!(event_types(vec!["user.*".into()]).is_err());
        assert!(event_types(vec!["nope".into()]).is_err());
    }
}
