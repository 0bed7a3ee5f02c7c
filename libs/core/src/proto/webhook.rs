//! webhook service: `<prefix>.webhook.v1.<op>` (docs/WEBHOOKS.md).
//!
//! Every request names the issuer the edge authenticated; the service
//! loads endpoints, messages and attempts by id *and* issuer, so another
//! issuer's id is a plain `not_found`.

use crate::ids::{EventId, WebhookAttemptId, WebhookEndpointId, WebhookMessageId};
use crate::{IssuerId, Timestamp};
use serde::{Deserialize, Serialize};

pub const CREATE_ENDPOINT: &str = "create_endpoint";
pub const LIST_ENDPOINTS: &str = "list_endpoints";
pub const GET_ENDPOINT: &str = "get_endpoint";
pub const UPDATE_ENDPOINT: &str = "update_endpoint";
pub const DELETE_ENDPOINT: &str = "delete_endpoint";
pub const ROTATE_SECRET: &str = "rotate_secret";
pub const LIST_MESSAGES: &str = "list_messages";
pub const RETRY_MESSAGE: &str = "retry_message";
pub const LIST_ATTEMPTS: &str = "list_attempts";
pub const REPLAY: &str = "replay";

super::operation::operations!(service "webhook" {
    CreateEndpoint => CreatedEndpoint = CREATE_ENDPOINT,
    ListEndpoints => EndpointList = LIST_ENDPOINTS,
    EndpointRef => Endpoint = GET_ENDPOINT,
    UpdateEndpoint => Endpoint = UPDATE_ENDPOINT,
    DeleteEndpoint => Endpoint = DELETE_ENDPOINT,
    RotateSecret => RotatedSecret = ROTATE_SECRET,
    ListMessages => MessageList = LIST_MESSAGES,
    RetryMessage => Message = RETRY_MESSAGE,
    ListAttempts => AttemptList = LIST_ATTEMPTS,
    Replay => Replayed = REPLAY,
});

pub use crate::page::Page;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateEndpoint {
    pub issuer_id: IssuerId,
    pub url: String,
    /// Event types delivered; empty means every type.
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListEndpoints {
    pub issuer_id: IssuerId,
    pub page: Page,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRef {
    pub issuer_id: IssuerId,
    pub endpoint_id: WebhookEndpointId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeleteEndpoint(pub EndpointRef);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateEndpoint {
    pub issuer_id: IssuerId,
    pub endpoint_id: WebhookEndpointId,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateSecret {
    pub issuer_id: IssuerId,
    pub endpoint_id: WebhookEndpointId,
    /// How long the old secret keeps signing next to the new one (the
    /// service's default when absent; 0 ends it at once).
    pub overlap_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListMessages {
    pub issuer_id: IssuerId,
    /// `pending`, `delivered` or `failed` (dead letters); all when absent.
    pub status: Option<String>,
    pub endpoint_id: Option<WebhookEndpointId>,
    pub page: Page,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryMessage {
    pub issuer_id: IssuerId,
    pub message_id: WebhookMessageId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListAttempts {
    pub issuer_id: IssuerId,
    pub endpoint_id: WebhookEndpointId,
    pub page: Page,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replay {
    pub issuer_id: IssuerId,
    pub endpoint_id: WebhookEndpointId,
    #[serde(with = "time::serde::rfc3339")]
    pub since: Timestamp,
}

/// A webhook endpoint (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    #[schema(value_type = String)]
    pub id: WebhookEndpointId,
    #[schema(value_type = String)]
    pub issuer_id: IssuerId,
    pub url: String,
    /// Event types delivered; empty means every type.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why it was disabled: `gone` (the receiver answered 410),
    /// `failing` (it failed continuously for the disable period) or
    /// `tenant` (switched off through the API).
    pub disabled_reason: Option<String>,
    /// Until when the previous secret also signs (after a rotation).
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// A new endpoint with its signing secret (`whsec_…`), shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    #[schema(value_type = String)]
    pub secret: super::SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    #[schema(value_type = String)]
    pub secret: super::SecretText,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointList {
    pub data: Vec<Endpoint>,
    pub has_more: bool,
}

/// One event's delivery to one endpoint, across its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    #[schema(value_type = String)]
    pub id: WebhookMessageId,
    #[schema(value_type = String)]
    pub endpoint_id: WebhookEndpointId,
    /// Also the `webhook-id` header: the same on every attempt and replay.
    #[schema(value_type = String)]
    pub event_id: EventId,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (retries exhausted, or the
    /// endpoint disabled: a dead letter, kept and replayable).
    pub status: String,
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageList {
    pub data: Vec<Message>,
    pub has_more: bool,
}

/// One HTTP attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    #[schema(value_type = String)]
    pub id: WebhookAttemptId,
    #[schema(value_type = String)]
    pub message_id: WebhookMessageId,
    #[schema(value_type = String)]
    pub event_id: EventId,
    /// 1 for the first attempt of the message.
    pub attempt: u32,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// The receiver's status, absent when none came (refused, timed out).
    pub status_code: Option<u16>,
    /// Why it failed, in words (never a secret).
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The first bytes of the receiver's answer (UTF-8, lossy).
    pub response_excerpt: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: Timestamp,
    /// When the next attempt is due, if there will be one.
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_retry_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptList {
    pub data: Vec<Attempt>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Messages queued (again) for the endpoint.
    pub queued: u64,
}
