//! `/v1/webhook_endpoints` and `/v1/webhook_messages` (docs/WEBHOOKS.md),
//! answered by the webhook service.

use super::profiles::{page_of, ListQuery};
use super::{body, query, Reply};
use crate::access::Incoming;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use idm_core::ids::{WebhookEndpointId, WebhookMessageId};
use idm_core::proto::webhook::{
    AttemptList, CreateEndpoint, CreatedEndpoint, DeleteEndpoint, Endpoint, EndpointList,
    EndpointRef, ListAttempts, ListEndpoints, ListMessages, Message, MessageList, Page, Replay,
    Replayed, RetryMessage, RotateSecret, RotatedSecret, UpdateEndpoint,
};
use idm_core::ApiError;
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where events are POSTed: `https` (plain `http` only where the
    /// operator allows it), never an internal address.
    #[schema(max_length = 2048)]
    url: String,
    /// Event types to deliver (API.md "Events"); empty or absent: all.
    #[serde(default)]
    events: Vec<String>,
    #[schema(max_length = 256)]
    description: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointChange {
    #[schema(max_length = 2048)]
    url: Option<String>,
    events: Option<Vec<String>>,
    /// `false` stops deliveries; `true` resumes them (also after the
    /// service disabled the endpoint).
    enabled: Option<bool>,
    #[schema(max_length = 256)]
    description: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// How long the old secret keeps signing next to the new one
    /// (default 24 h, at most 7 days, 0 ends it at once).
    overlap_seconds: Option<u64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaySince {
    /// Events that happened at or after this time (RFC 3339) are delivered
    /// again.
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    since: idm_core::Timestamp,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessageQuery {
    /// `pending`, `delivered` or `failed` (dead letters).
    status: Option<String>,
    /// Only this endpoint's messages.
    endpoint_id: Option<String>,
    /// How many (1 to 100, default 20).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// The last id of the previous page.
    starting_after: Option<String>,
}

/// A new endpoint; its signing secret (`whsec_…`) is in the answer once.
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks", request_body = NewEndpoint,
    responses((status = 201, description = "The endpoint and its secret, shown once", body = CreatedEndpoint)))]
pub async fn create(
    incoming: Incoming,
    new: Result<Json<NewEndpoint>, JsonRejection>,
) -> Reply<(StatusCode, Json<CreatedEndpoint>)> {
    let caller = incoming.authorize().await?;
    let new = body(new)?;
    let created = incoming
        .app
        .bus
        .send(&CreateEndpoint {
            issuer_id: caller.key.issuer_id.clone(),
            url: new.url,
            events: new.events,
            description: new.description,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The issuer's endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks", params(ListQuery),
    responses((status = 200, description = "The endpoints", body = EndpointList)))]
pub async fn list(
    incoming: Incoming,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<EndpointList>> {
    let caller = incoming.authorize().await?;
    let page = page_of(params)?;
    let list = incoming
        .app
        .bus
        .send(&ListEndpoints {
            issuer_id: caller.key.issuer_id.clone(),
            page,
        })
        .await?;
    Ok(Json(list))
}

/// One endpoint (never its secret).
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses((status = 200, description = "The endpoint", body = Endpoint)))]
pub async fn get(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<Endpoint>> {
    let caller = incoming.authorize().await?;
    let endpoint_id = WebhookEndpointId::parse(&id)?;
    let found = incoming
        .app
        .bus
        .send(&EndpointRef {
            issuer_id: caller.key.issuer_id.clone(),
            endpoint_id,
        })
        .await?;
    Ok(Json(found))
}

/// Changes the url, the event types, the description, or enables and
/// disables the endpoint.
#[utoipa::path(patch, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", request_body = EndpointChange,
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses((status = 200, description = "The endpoint", body = Endpoint)))]
pub async fn update(
    incoming: Incoming,
    Path(id): Path<String>,
    change: Result<Json<EndpointChange>, JsonRejection>,
) -> Reply<Json<Endpoint>> {
    let caller = incoming.authorize().await?;
    let endpoint_id = WebhookEndpointId::parse(&id)?;
    let change = body(change)?;
    let updated = incoming
        .app
        .bus
        .send(&UpdateEndpoint {
            issuer_id: caller.key.issuer_id.clone(),
            endpoint_id,
            url: change.url,
            events: change.events,
            enabled: change.enabled,
            description: change.description,
        })
        .await?;
    Ok(Json(updated))
}

/// Deletes the endpoint with its messages and attempts.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses((status = 200, description = "The deleted endpoint", body = Endpoint)))]
pub async fn delete(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<Endpoint>> {
    let caller = incoming.authorize().await?;
    let endpoint_id = WebhookEndpointId::parse(&id)?;
    let deleted = incoming
        .app
        .bus
        .send(&DeleteEndpoint(EndpointRef {
            issuer_id: caller.key.issuer_id.clone(),
            endpoint_id,
        }))
        .await?;
    Ok(Json(deleted))
}

/// A new signing secret, shown once; the old one keeps signing (a second
/// signature in `webhook-signature`) until `previous_secret_expires_at`.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", tag = "webhooks",
    request_body = Option<Rotation>,
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses((status = 200, description = "The endpoint and its new secret", body = RotatedSecret)))]
pub async fn rotate_secret(
    incoming: Incoming,
    Path(id): Path<String>,
    rotation: Result<Json<Rotation>, JsonRejection>,
) -> Reply<Json<RotatedSecret>> {
    let caller = incoming.authorize().await?;
    let endpoint_id = WebhookEndpointId::parse(&id)?;
    // The body is optional.
    let rotation = match rotation {
        Err(JsonRejection::MissingJsonContentType(_)) => Rotation::default(),
        other => body(other)?,
    };
    let rotated = incoming
        .app
        .bus
        .send(&RotateSecret {
            issuer_id: caller.key.issuer_id.clone(),
            endpoint_id,
            overlap_seconds: rotation.overlap_seconds,
        })
        .await?;
    Ok(Json(rotated))
}

/// The endpoint's delivery attempts, newest first: status code, latency,
/// the start of the answer, and when the next retry is due.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/attempts", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)"), ListQuery),
    responses((status = 200, description = "The attempts", body = AttemptList)))]
pub async fn attempts(
    incoming: Incoming,
    Path(id): Path<String>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<AttemptList>> {
    let caller = incoming.authorize().await?;
    let endpoint_id = WebhookEndpointId::parse(&id)?;
    let page = page_of(params)?;
    let list = incoming
        .app
        .bus
        .send(&ListAttempts {
            issuer_id: caller.key.issuer_id.clone(),
            endpoint_id,
            page,
        })
        .await?;
    Ok(Json(list))
}

/// Delivers again every event since a time that the endpoint subscribes to.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/replay", tag = "webhooks", request_body = ReplaySince,
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)")),
    responses((status = 202, description = "How many messages were queued", body = Replayed)))]
pub async fn replay(
    incoming: Incoming,
    Path(id): Path<String>,
    since: Result<Json<ReplaySince>, JsonRejection>,
) -> Reply<(StatusCode, Json<Replayed>)> {
    let caller = incoming.authorize().await?;
    let endpoint_id = WebhookEndpointId::parse(&id)?;
    let since = body(since)?;
    let replayed = incoming
        .app
        .bus
        .send(&Replay {
            issuer_id: caller.key.issuer_id.clone(),
            endpoint_id,
            since: since.since,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(replayed)))
}

/// Messages (one event for one endpoint), newest first; `?status=failed`
/// lists the dead letters.
#[utoipa::path(get, path = "/v1/webhook_messages", tag = "webhooks", params(MessageQuery),
    responses((status = 200, description = "The messages", body = MessageList)))]
pub async fn messages(
    incoming: Incoming,
    params: Result<Query<MessageQuery>, QueryRejection>,
) -> Reply<Json<MessageList>> {
    let caller = incoming.authorize().await?;
    let params = query(params)?;
    let endpoint_id = params
        .endpoint_id
        .as_deref()
        .map(WebhookEndpointId::parse)
        .transpose()
        .map_err(|_| ApiError::validation("endpoint_id is not an endpoint id"))?;
    let list = incoming
        .app
        .bus
        .send(&ListMessages {
            issuer_id: caller.key.issuer_id.clone(),
            status: params.status,
            endpoint_id,
            page: Page::parse(params.limit.as_deref(), params.starting_after.as_deref())?,
        })
        .await?;
    Ok(Json(list))
}

/// Delivers one message again, from its first attempt.
#[utoipa::path(post, path = "/v1/webhook_messages/{id}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "The message's id (`msg_…`)")),
    responses((status = 202, description = "The message, queued", body = Message)))]
pub async fn retry(
    incoming: Incoming,
    Path(id): Path<String>,
) -> Reply<(StatusCode, Json<Message>)> {
    let caller = incoming.authorize().await?;
    let message_id = WebhookMessageId::parse(&id)?;
    let message = incoming
        .app
        .bus
        .send(&RetryMessage {
            issuer_id: caller.key.issuer_id.clone(),
            message_id,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}
