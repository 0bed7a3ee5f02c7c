//! The `webhook` schema: endpoints (secrets sealed), the events received,
//! one message per (endpoint, event) with its retry state, and attempts.

use crate::Error;
use idm_core::ids::{EventId, WebhookAttemptId, WebhookEndpointId, WebhookMessageId};
use idm_core::proto::event::Event;
use idm_core::proto::webhook::{Attempt, Endpoint, Message};
use idm_core::{ApiError, IssuerId, Timestamp};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};

fn internal<T>(parsed: Result<T, ApiError>) -> Result<T, Error> {
    parsed.map_err(|e| ApiError::internal_from(&e).into())
}

fn sql_err(e: sqlx::Error) -> Error {
    DbError::from(e).into()
}

/// An endpoint as stored, with its sealed secrets.
pub struct StoredEndpoint {
    pub endpoint: Endpoint,
    pub sealed_secret: Vec<u8>,
}

#[allow(dead_code)] // Selected whole; the delivery path reads the rest.
struct EndpointRow {
    id: String,
    issuer_id: String,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    sealed_secret: Vec<u8>,
    sealed_previous_secret: Option<Vec<u8>>,
    previous_secret_expires_at: Option<Timestamp>,
    failing_since: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl EndpointRow {
    fn into_stored(self) -> Result<StoredEndpoint, Error> {
        Ok(StoredEndpoint {
            endpoint: Endpoint {
                id: internal(WebhookEndpointId::parse(&self.id))?,
                issuer_id: internal(IssuerId::parse(&self.issuer_id))?,
                url: self.url,
                events: self.events,
                description: self.description,
                enabled: self.enabled,
                disabled_reason: self.disabled_reason,
                previous_secret_expires_at: self.previous_secret_expires_at,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
            sealed_secret: self.sealed_secret,
        })
    }
}

pub async fn insert_endpoint(
    db: &impl GenericClient,
    endpoint: &Endpoint,
    sealed_secret: &[u8],
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO webhook.endpoints (id, issuer_id, url, events, description, enabled,
             sealed_secret, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, true, $6, $7, $7)",
        endpoint.id.as_str(),
        endpoint.issuer_id.as_str(),
        &endpoint.url,
        &endpoint.events,
        endpoint.description.as_deref(),
        sealed_secret,
        endpoint.created_at,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

pub async fn count_endpoints(db: &impl GenericClient, issuer: &IssuerId) -> Result<i64, Error> {
    let count = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM webhook.endpoints WHERE issuer_id = $1"#,
        issuer.as_str()
    )
    .fetch_one(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(count)
}

pub async fn endpoint(
    db: &impl GenericClient,
    issuer: &IssuerId,
    id: &WebhookEndpointId,
) -> Result<Option<StoredEndpoint>, Error> {
    let row = sqlx::query_as!(
        EndpointRow,
        "SELECT id, issuer_id, url, events, description, enabled, disabled_reason, sealed_secret,
                sealed_previous_secret, previous_secret_expires_at, failing_since, created_at, updated_at
         FROM webhook.endpoints WHERE id = $1 AND issuer_id = $2",
        id.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    row.map(EndpointRow::into_stored).transpose()
}

/// The same, locked for an update in the caller's transaction.
pub async fn endpoint_for_update(
    db: &impl GenericClient,
    issuer: &IssuerId,
    id: &WebhookEndpointId,
) -> Result<Option<StoredEndpoint>, Error> {
    let row = sqlx::query_as!(
        EndpointRow,
        "SELECT id, issuer_id, url, events, description, enabled, disabled_reason, sealed_secret,
                sealed_previous_secret, previous_secret_expires_at, failing_since, created_at, updated_at
         FROM webhook.endpoints WHERE id = $1 AND issuer_id = $2 FOR UPDATE",
        id.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    row.map(EndpointRow::into_stored).transpose()
}

/// A page of the issuer's endpoints, newest first (ids sort by time).
pub async fn list_endpoints(
    db: &impl GenericClient,
    issuer: &IssuerId,
    limit: u32,
    starting_after: Option<&str>,
) -> Result<Vec<Endpoint>, Error> {
    let rows = sqlx::query_as!(
        EndpointRow,
        "SELECT id, issuer_id, url, events, description, enabled, disabled_reason, sealed_secret,
                sealed_previous_secret, previous_secret_expires_at, failing_since, created_at, updated_at
         FROM webhook.endpoints
         WHERE issuer_id = $1 AND ($2::text IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        issuer.as_str(),
        starting_after,
        i64::from(limit) + 1,
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    rows.into_iter()
        .map(|r| r.into_stored().map(|s| s.endpoint))
        .collect()
}

/// Writes the changeable fields of `endpoint` back.
pub async fn save_endpoint(db: &impl GenericClient, endpoint: &Endpoint) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook.endpoints
         SET url = $3, events = $4, description = $5, enabled = $6, disabled_reason = $7,
             failing_since = CASE WHEN $6 AND NOT enabled THEN NULL ELSE failing_since END,
             updated_at = $8
         WHERE id = $1 AND issuer_id = $2",
        endpoint.id.as_str(),
        endpoint.issuer_id.as_str(),
        &endpoint.url,
        &endpoint.events,
        endpoint.description.as_deref(),
        endpoint.enabled,
        endpoint.disabled_reason.as_deref(),
        endpoint.updated_at,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

pub async fn save_secrets(
    db: &impl GenericClient,
    id: &WebhookEndpointId,
    sealed: &[u8],
    sealed_previous: Option<&[u8]>,
    previous_expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook.endpoints
         SET sealed_secret = $2, sealed_previous_secret = $3, previous_secret_expires_at = $4,
             updated_at = $5
         WHERE id = $1",
        id.as_str(),
        sealed,
        sealed_previous,
        previous_expires_at,
        now,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

pub async fn delete_endpoint(
    db: &impl GenericClient,
    issuer: &IssuerId,
    id: &WebhookEndpointId,
) -> Result<bool, Error> {
    let done = sqlx::query!(
        "DELETE FROM webhook.endpoints WHERE id = $1 AND issuer_id = $2",
        id.as_str(),
        issuer.as_str(),
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(done.rows_affected() > 0)
}

/// Records an event from the stream (once) and queues a message for each
/// enabled endpoint of its issuer that subscribes to its type and existed
/// when it happened. Returns how many messages were queued. Events of an
/// issuer without any endpoint are not kept (nothing could replay them).
pub async fn fan_out(db: &impl GenericClient, event: &Event, now: Timestamp) -> Result<u64, Error> {
    if !has_endpoints(db, &event.issuer_id).await? {
        return Ok(0);
    }
    sqlx::query!(
        "INSERT INTO webhook.events (id, issuer_id, type, occurred_at, data)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        event.id.as_str(),
        event.issuer_id.as_str(),
        &event.event_type,
        event.occurred_at,
        &event.data,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    let endpoints = sqlx::query_scalar!(
        "SELECT id FROM webhook.endpoints
         WHERE issuer_id = $1 AND enabled AND created_at <= $3
           AND (cardinality(events) = 0 OR $2 = ANY(events))",
        event.issuer_id.as_str(),
        &event.event_type,
        event.occurred_at,
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    let mut queued = 0;
    for endpoint in endpoints {
        let id = WebhookMessageId::generate();
        let done = sqlx::query!(
            "INSERT INTO webhook.messages (id, endpoint_id, issuer_id, event_id, event_type, status,
                 next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6)
             ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            id.as_str(),
            endpoint,
            event.issuer_id.as_str(),
            event.id.as_str(),
            &event.event_type,
            now,
        )
        .execute(&mut *db.conn().await)
        .await
        .map_err(sql_err)?;
        queued += done.rows_affected();
    }
    Ok(queued)
}

/// A due message, claimed.
pub struct Due {
    pub id: String,
    pub endpoint_id: String,
}

/// Due messages (oldest due first) of endpoints not in `busy` (those whose
/// slots are all taken: their backlog must not hide other endpoints'
/// messages from the claim), locked until the caller's transaction ends;
/// rows another replica holds are skipped.
pub async fn due_messages(
    db: &impl GenericClient,
    now: Timestamp,
    limit: i64,
    busy: &[String],
) -> Result<Vec<Due>, Error> {
    let rows = sqlx::query_as!(
        Due,
        "SELECT id, endpoint_id FROM webhook.messages
         WHERE status = 'pending' AND next_attempt_at <= $1
           AND (locked_until IS NULL OR locked_until < $1)
           AND endpoint_id <> ALL($3)
         ORDER BY next_attempt_at LIMIT $2
         FOR UPDATE SKIP LOCKED",
        now,
        limit,
        busy,
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(rows)
}

pub async fn lease(db: &impl GenericClient, ids: &[String], until: Timestamp) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook.messages SET locked_until = $2 WHERE id = ANY($1)",
        ids,
        until,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

/// Everything one attempt needs.
pub struct Delivery {
    pub message_id: String,
    pub endpoint_id: String,
    pub issuer_id: String,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: Timestamp,
    pub data: serde_json::Value,
    pub attempts: i32,
    pub url: String,
    pub enabled: bool,
    pub sealed_secret: Vec<u8>,
    pub sealed_previous_secret: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<Timestamp>,
}

pub async fn delivery(db: &impl GenericClient, message: &str) -> Result<Option<Delivery>, Error> {
    let row = sqlx::query_as!(
        Delivery,
        "SELECT m.id AS message_id, m.endpoint_id, m.issuer_id, m.event_id, m.event_type,
                e.occurred_at, e.data, m.attempts, p.url, p.enabled, p.sealed_secret,
                p.sealed_previous_secret, p.previous_secret_expires_at
         FROM webhook.messages m
         JOIN webhook.events e ON e.id = m.event_id
         JOIN webhook.endpoints p ON p.id = m.endpoint_id
         WHERE m.id = $1 AND m.status = 'pending'",
        message,
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(row)
}

/// One attempt's record.
pub struct AttemptRecord<'a> {
    pub message_id: &'a str,
    pub endpoint_id: &'a str,
    pub issuer_id: &'a str,
    pub event_id: &'a str,
    pub attempt: i32,
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub attempted_at: Timestamp,
    pub next_retry_at: Option<Timestamp>,
}

pub async fn insert_attempt(db: &impl GenericClient, a: &AttemptRecord<'_>) -> Result<(), Error> {
    let id = WebhookAttemptId::generate();
    sqlx::query!(
        "INSERT INTO webhook.attempts (id, message_id, endpoint_id, issuer_id, event_id, attempt,
             outcome, status_code, error, latency_ms, response_excerpt, attempted_at, next_retry_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        id.as_str(),
        a.message_id,
        a.endpoint_id,
        a.issuer_id,
        a.event_id,
        a.attempt,
        if a.succeeded { "succeeded" } else { "failed" },
        a.status_code,
        a.error.as_deref(),
        a.latency_ms,
        a.response_excerpt.as_deref(),
        a.attempted_at,
        a.next_retry_at,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

/// Settles a message after an attempt: `pending` with its next time,
/// `delivered`, or `failed` (a dead letter).
#[allow(clippy::too_many_arguments)]
pub async fn settle_message(
    db: &impl GenericClient,
    id: &str,
    status: &str,
    attempts: i32,
    next_attempt_at: Option<Timestamp>,
    status_code: Option<i32>,
    error: Option<&str>,
    now: Timestamp,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook.messages
         SET status = $2, attempts = $3, next_attempt_at = $4, locked_until = NULL,
             last_status_code = $5, last_error = $6, updated_at = $7
         WHERE id = $1",
        id,
        status,
        attempts,
        next_attempt_at,
        status_code,
        error,
        now,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

/// A success: the endpoint is not failing any more.
pub async fn endpoint_succeeded(db: &impl GenericClient, endpoint: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook.endpoints SET failing_since = NULL
         WHERE id = $1 AND failing_since IS NOT NULL",
        endpoint,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

/// A failure: returns since when the endpoint has been failing.
pub async fn endpoint_failed(
    db: &impl GenericClient,
    endpoint: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, Error> {
    let since = sqlx::query_scalar!(
        "UPDATE webhook.endpoints SET failing_since = COALESCE(failing_since, $2)
         WHERE id = $1 RETURNING failing_since",
        endpoint,
        now,
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(since.flatten())
}

/// Disables an enabled endpoint; true if this call did it.
pub async fn disable_endpoint(
    db: &impl GenericClient,
    endpoint: &str,
    reason: &str,
    now: Timestamp,
) -> Result<bool, Error> {
    let done = sqlx::query!(
        "UPDATE webhook.endpoints SET enabled = false, disabled_reason = $2, updated_at = $3
         WHERE id = $1 AND enabled",
        endpoint,
        reason,
        now,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(done.rows_affected() > 0)
}

struct MessageRow {
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i32,
    next_attempt_at: Option<Timestamp>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: Timestamp,
}

impl MessageRow {
    fn into_message(self) -> Result<Message, Error> {
        Ok(Message {
            id: internal(WebhookMessageId::parse(&self.id))?,
            endpoint_id: internal(WebhookEndpointId::parse(&self.endpoint_id))?,
            event_id: internal(EventId::parse(&self.event_id))?,
            event_type: self.event_type,
            status: self.status,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            next_attempt_at: self.next_attempt_at,
            last_status_code: self.last_status_code.and_then(|c| u16::try_from(c).ok()),
            last_error: self.last_error,
            created_at: self.created_at,
        })
    }
}

pub async fn list_messages(
    db: &impl GenericClient,
    issuer: &IssuerId,
    status: Option<&str>,
    endpoint: Option<&str>,
    limit: u32,
    starting_after: Option<&str>,
) -> Result<Vec<Message>, Error> {
    let rows = sqlx::query_as!(
        MessageRow,
        "SELECT id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at,
                last_status_code, last_error, created_at
         FROM webhook.messages
         WHERE issuer_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR endpoint_id = $3) AND ($4::text IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
        issuer.as_str(),
        status,
        endpoint,
        starting_after,
        i64::from(limit) + 1,
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    rows.into_iter().map(MessageRow::into_message).collect()
}

pub async fn message(
    db: &impl GenericClient,
    issuer: &IssuerId,
    id: &WebhookMessageId,
) -> Result<Option<Message>, Error> {
    let row = sqlx::query_as!(
        MessageRow,
        "SELECT id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at,
                last_status_code, last_error, created_at
         FROM webhook.messages WHERE id = $1 AND issuer_id = $2",
        id.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    row.map(MessageRow::into_message).transpose()
}

/// Queues a message again from its first attempt.
pub async fn requeue(db: &impl GenericClient, id: &str, now: Timestamp) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook.messages
         SET status = 'pending', attempts = 0, next_attempt_at = $2, locked_until = NULL,
             updated_at = $2
         WHERE id = $1",
        id,
        now,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

/// Queues every event of the issuer since `since` that the endpoint
/// subscribes to (again, when it was sent before). At most `cap` events.
pub async fn replay(
    db: &impl GenericClient,
    endpoint: &Endpoint,
    since: Timestamp,
    now: Timestamp,
    cap: i64,
) -> Result<u64, Error> {
    let events = sqlx::query!(
        "SELECT id, type AS event_type FROM webhook.events
         WHERE issuer_id = $1 AND occurred_at >= $2
           AND (cardinality($3::text[]) = 0 OR type = ANY($3))
         ORDER BY occurred_at LIMIT $4",
        endpoint.issuer_id.as_str(),
        since,
        &endpoint.events,
        cap,
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    let mut queued = 0;
    for event in events {
        let id = WebhookMessageId::generate();
        let done = sqlx::query!(
            "INSERT INTO webhook.messages (id, endpoint_id, issuer_id, event_id, event_type, status,
                 next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6)
             ON CONFLICT (endpoint_id, event_id) DO UPDATE
             SET status = 'pending', attempts = 0, next_attempt_at = $6, locked_until = NULL,
                 updated_at = $6
             WHERE webhook.messages.status <> 'pending'",
            id.as_str(),
            endpoint.id.as_str(),
            endpoint.issuer_id.as_str(),
            &event.id,
            &event.event_type,
            now,
        )
        .execute(&mut *db.conn().await)
        .await
        .map_err(sql_err)?;
        queued += done.rows_affected();
    }
    Ok(queued)
}

struct AttemptRow {
    id: String,
    message_id: String,
    event_id: String,
    attempt: i32,
    outcome: String,
    status_code: Option<i32>,
    error: Option<String>,
    latency_ms: i64,
    response_excerpt: Option<String>,
    attempted_at: Timestamp,
    next_retry_at: Option<Timestamp>,
}

pub async fn list_attempts(
    db: &impl GenericClient,
    issuer: &IssuerId,
    endpoint: &WebhookEndpointId,
    limit: u32,
    starting_after: Option<&str>,
) -> Result<Vec<Attempt>, Error> {
    let rows = sqlx::query_as!(
        AttemptRow,
        "SELECT id, message_id, event_id, attempt, outcome, status_code, error, latency_ms,
                response_excerpt, attempted_at, next_retry_at
         FROM webhook.attempts
         WHERE endpoint_id = $1 AND issuer_id = $2 AND ($3::text IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        endpoint.as_str(),
        issuer.as_str(),
        starting_after,
        i64::from(limit) + 1,
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    rows.into_iter()
        .map(|r| {
            Ok(Attempt {
                id: internal(WebhookAttemptId::parse(&r.id))?,
                message_id: internal(WebhookMessageId::parse(&r.message_id))?,
                event_id: internal(EventId::parse(&r.event_id))?,
                attempt: u32::try_from(r.attempt).unwrap_or(0),
                outcome: r.outcome,
                status_code: r.status_code.and_then(|c| u16::try_from(c).ok()),
                error: r.error,
                latency_ms: u64::try_from(r.latency_ms).unwrap_or(0),
                response_excerpt: r.response_excerpt,
                attempted_at: r.attempted_at,
                next_retry_at: r.next_retry_at,
            })
        })
        .collect()
}

/// Messages of disabled endpoints are not sent: they become dead letters.
pub async fn fail_message(
    db: &impl GenericClient,
    id: &str,
    error: &str,
    now: Timestamp,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE webhook.messages
         SET status = 'failed', next_attempt_at = NULL, locked_until = NULL, last_error = $2,
             updated_at = $3
         WHERE id = $1",
        id,
        error,
        now,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

/// Every endpoint's sealed secrets, for the re-seal pass.
pub struct SealedRow {
    pub id: String,
    pub sealed_secret: Vec<u8>,
    pub sealed_previous_secret: Option<Vec<u8>>,
}

pub async fn sealed_secrets(db: &impl GenericClient) -> Result<Vec<SealedRow>, Error> {
    let rows = sqlx::query_as!(
        SealedRow,
        "SELECT id, sealed_secret, sealed_previous_secret FROM webhook.endpoints ORDER BY id"
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(rows)
}

/// Compare-and-swap of one sealed value (`previous`: the old secret's
/// column); false when it changed meanwhile.
pub async fn reseal(
    db: &impl GenericClient,
    id: &str,
    previous: bool,
    old: &[u8],
    new: &[u8],
) -> Result<bool, Error> {
    let done = if previous {
        sqlx::query!(
            "UPDATE webhook.endpoints SET sealed_previous_secret = $3
             WHERE id = $1 AND sealed_previous_secret = $2",
            id,
            old,
            new,
        )
        .execute(&mut *db.conn().await)
        .await
    } else {
        sqlx::query!(
            "UPDATE webhook.endpoints SET sealed_secret = $3 WHERE id = $1 AND sealed_secret = $2",
            id,
            old,
            new,
        )
        .execute(&mut *db.conn().await)
        .await
    }
    .map_err(sql_err)?;
    Ok(done.rows_affected() > 0)
}

/// Whether the issuer has any endpoint (events of issuers without one are
/// not kept).
pub async fn has_endpoints(db: &impl GenericClient, issuer: &IssuerId) -> Result<bool, Error> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhook.endpoints WHERE issuer_id = $1) AS "exists!""#,
        issuer.as_str()
    )
    .fetch_one(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(exists)
}

/// Deletes delivered messages (their attempts go with them) last changed
/// before `before`, then the events no message refers to any more that
/// happened before it; at most `batch` of each. Dead letters and pending
/// messages stay. Returns `(messages, events)` deleted.
pub async fn prune(
    db: &impl GenericClient,
    before: Timestamp,
    batch: i64,
) -> Result<(u64, u64), Error> {
    let messages = sqlx::query!(
        "DELETE FROM webhook.messages WHERE id IN (
             SELECT id FROM webhook.messages
             WHERE status = 'delivered' AND updated_at < $1 LIMIT $2)",
        before,
        batch,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?
    .rows_affected();
    let events = sqlx::query!(
        "DELETE FROM webhook.events WHERE id IN (
             SELECT e.id FROM webhook.events e
             WHERE e.occurred_at < $1
               AND NOT EXISTS (SELECT 1 FROM webhook.messages m WHERE m.event_id = e.id)
             LIMIT $2)",
        before,
        batch,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?
    .rows_affected();
    Ok((messages, events))
}
