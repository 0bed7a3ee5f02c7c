//! The delivery loop. Messages wait in the database (`webhook.messages`,
//! `next_attempt_at`), never in NATS: a retry due in ten hours survives
//! restarts of this service and of NATS, and no stream ack is held for it.
//!
//! The loop claims due messages (`FOR UPDATE SKIP LOCKED`, then a lease in
//! `locked_until`, so replicas share the work and a crashed replica's claim
//! runs out), but only as many per endpoint as that endpoint has free
//! delivery slots (`WEBHOOK_ENDPOINT_CONCURRENCY`): an endpoint that hangs
//! fills its own slots until its attempts time out, and never delays
//! another endpoint's messages. New events wake the loop at once; retries
//! are found by polling (`WEBHOOK_POLL_INTERVAL_MS`).

use crate::config::Delivery;
use crate::sender::Outcome;
use crate::{signing, storage, Error, State};
use bytes::Bytes;
use idm_core::metric;
use idm_core::proto::event::{self, DomainEvent};
use idm_core::{IssuerId, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Messages looked at per claim.
const CLAIM_BATCH: i64 = 200;

/// Delivery slots: one semaphore per endpoint, and one for all.
pub struct Slots {
    per_endpoint: usize,
    total: Arc<Semaphore>,
    endpoints: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Slots {
    pub fn new(delivery: &Delivery) -> Self {
        Self {
            per_endpoint: delivery.endpoint_concurrency,
            total: Arc::new(Semaphore::new(delivery.total_concurrency)),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Endpoints with every slot taken.
    fn busy(&self) -> Vec<String> {
        self.endpoints
            .lock()
            .map(|e| {
                e.iter()
                    .filter(|(_, s)| s.available_permits() == 0)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn try_take(&self, endpoint: &str) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let semaphore = {
            let mut endpoints = self.endpoints.lock().ok()?;
            // Endpoints with every slot free are forgotten, so the map
            // holds only the busy ones.
            if endpoints.len() > 10_000 {
                let per = self.per_endpoint;
                endpoints.retain(|_, s| s.available_permits() < per);
            }
            Arc::clone(
                endpoints
                    .entry(endpoint.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint))),
            )
        };
        let own = semaphore.try_acquire_owned().ok()?;
        let all = Arc::clone(&self.total).try_acquire_owned().ok()?;
        Some((own, all))
    }
}

/// Runs the loop until `shutdown`.
pub fn spawn(state: Arc<State>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let claimed = match claim(&state).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming due webhook messages failed");
                    0
                }
            };
            if claimed > 0 {
                // More may be due: look again at once (yielding first).
                tokio::task::yield_now().await;
                if !shutdown.is_cancelled() {
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = state.wake.notified() => {}
                _ = tokio::time::sleep(state.delivery.poll_interval) => {}
            }
        }
    })
}

/// Deletes what the retention period lets go (delivered messages and the
/// events nothing refers to), in batches, until `shutdown`.
pub fn spawn_pruning(
    state: Arc<State>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = (state.delivery.retention / 10)
            .clamp(Duration::from_millis(100), Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let before = idm_core::now() - state.delivery.retention;
            loop {
                let pruned = async {
                    let client = state.db.get().await?;
                    storage::prune(&client, before, 10_000).await
                }
                .await;
                match pruned {
                    Ok((0, 0)) => break,
                    Ok((messages, events)) => {
                        tracing::info!(messages, events, "webhook rows past the retention deleted");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning webhook rows failed; tried again later");
                        break;
                    }
                }
            }
        }
    })
}

/// Claims what is due and has a free slot; spawns one task per message.
async fn claim(state: &Arc<State>) -> Result<usize, Error> {
    let now = idm_core::now();
    let lease_until = now + state.delivery.timeout + Duration::from_secs(30);
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    let busy = state.slots.busy();
    let due = storage::due_messages(&tx, now, CLAIM_BATCH, &busy).await?;
    let mut chosen = Vec::new();
    for message in due {
        if let Some(permits) = state.slots.try_take(&message.endpoint_id) {
            chosen.push((message.id, permits));
        }
    }
    if chosen.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
    storage::lease(&tx, &ids, lease_until).await?;
    tx.commit().await?;
    let count = chosen.len();
    for (id, permits) in chosen {
        let state = Arc::clone(state);
        let span = tracing::info_span!("webhook.deliver", otel.kind = "producer", message = %id);
        tokio::spawn(
            async move {
                if let Err(e) = deliver(&state, &id).await {
                    tracing::warn!(error = %e, "webhook delivery could not be recorded; the lease runs out and it is tried again");
                }
                drop(permits);
                // A slot is free: something may be waiting for it.
                state.wake.notify_one();
            }
            .instrument(span),
        );
    }
    Ok(count)
}

/// The delay before attempt `next` (1-based: 1 is the first), with jitter.
pub fn delay_before(delivery: &Delivery, next: usize) -> Option<Duration> {
    let base = *delivery.schedule.get(next.checked_sub(1)?)?;
    if base.is_zero() || delivery.jitter <= 0.0 {
        return Some(base);
    }
    use rand::RngExt as _;
    let factor = 1.0 + rand::rng().random_range(-delivery.jitter..=delivery.jitter);
    Some(base.mul_f64(factor.max(0.0)))
}

fn open_secret(
    state: &State,
    endpoint: &str,
    sealed: &[u8],
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, Error> {
    let opened = state.secrets.open(sealed, endpoint.as_bytes())?;
    let text = String::from_utf8_lossy(&opened.plaintext).into_owned();
    let text = zeroize::Zeroizing::new(text);
    Ok(signing::key_bytes(&text))
}

/// One attempt of one message, and its record.
async fn deliver(state: &Arc<State>, message_id: &str) -> Result<(), Error> {
    let Some(d) = storage::delivery(&state.db.get().await?, message_id).await? else {
        return Ok(());
    };
    let now = idm_core::now();
    if !d.enabled {
        storage::fail_message(
            &state.db.get().await?,
            message_id,
            "the endpoint is disabled",
            now,
        )
        .await?;
        return Ok(());
    }
    let mut keys = Vec::new();
    if let Some(key) = open_secret(state, &d.endpoint_id, &d.sealed_secret)? {
        keys.push(key);
    }
    if let (Some(previous), Some(until)) = (&d.sealed_previous_secret, d.previous_secret_expires_at)
    {
        if until > now {
            if let Some(key) = open_secret(state, &d.endpoint_id, previous)? {
                keys.push(key);
            }
        }
    }
    // The body: the event's envelope, without the audit fields.
    let body = serde_json::to_vec(&serde_json::json!({
        "id": d.event_id,
        "type": d.event_type,
        "issuer_id": d.issuer_id,
        "occurred_at": d.occurred_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "data": d.data,
    }))
    .map_err(|e| idm_core::ApiError::internal_from(&e))?;
    let timestamp = now.unix_timestamp();
    let signature = signing::signature_header(&keys, &d.event_id, timestamp, &body);
    let headers = vec![
        ("webhook-id", d.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let outcome = state.sender.post(&d.url, headers, Bytes::from(body)).await;
    record(state, &d, &outcome, now).await
}

async fn record(
    state: &Arc<State>,
    d: &storage::Delivery,
    outcome: &Outcome,
    attempted_at: Timestamp,
) -> Result<(), Error> {
    let attempt = d.attempts + 1;
    let now = idm_core::now();
    let succeeded = outcome.succeeded();
    let next_retry_at = if succeeded || outcome.gone() {
        None
    } else {
        delay_before(
            &state.delivery,
            usize::try_from(attempt).unwrap_or(usize::MAX) + 1,
        )
        .map(|delay| now + delay)
    };
    let label = if succeeded {
        "delivered"
    } else if next_retry_at.is_some() {
        "retried"
    } else {
        "failed"
    };
    metrics::counter!(metric::WEBHOOK_DELIVERIES.name, "outcome" => label).increment(1);
    metrics::histogram!(metric::WEBHOOK_DELIVERY_DURATION.name, "outcome" => label)
        .record(outcome.latency.as_secs_f64());
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    storage::insert_attempt(
        &tx,
        &storage::AttemptRecord {
            message_id: &d.message_id,
            endpoint_id: &d.endpoint_id,
            issuer_id: &d.issuer_id,
            event_id: &d.event_id,
            attempt,
            succeeded,
            status_code: outcome.status.map(i32::from),
            error: outcome.error.clone(),
            latency_ms: i64::try_from(outcome.latency.as_millis()).unwrap_or(i64::MAX),
            response_excerpt: outcome.excerpt.clone(),
            attempted_at,
            next_retry_at,
        },
    )
    .await?;
    let status = if succeeded {
        "delivered"
    } else if next_retry_at.is_some() {
        "pending"
    } else {
        "failed"
    };
    storage::settle_message(
        &tx,
        &d.message_id,
        status,
        attempt,
        next_retry_at,
        outcome.status.map(i32::from),
        outcome.error.as_deref(),
        now,
    )
    .await?;
    let mut disabled = None;
    if succeeded {
        storage::endpoint_succeeded(&tx, &d.endpoint_id).await?;
    } else if outcome.gone() {
        if storage::disable_endpoint(&tx, &d.endpoint_id, "gone", now).await? {
            disabled = Some("gone");
        }
    } else if let Some(since) = storage::endpoint_failed(&tx, &d.endpoint_id, now).await? {
        if now - since >= state.delivery.disable_after
            && storage::disable_endpoint(&tx, &d.endpoint_id, "failing", now).await?
        {
            disabled = Some("failing");
        }
    }
    tx.commit().await?;
    tracing::info!(
        endpoint = %d.endpoint_id,
        event = %d.event_id,
        attempt,
        status = outcome.status,
        outcome = label,
        error = outcome.error.as_deref().unwrap_or(""),
        "webhook attempt"
    );
    if let Some(reason) = disabled {
        metrics::counter!(metric::WEBHOOK_ENDPOINTS_DISABLED.name, "reason" => reason).increment(1);
        tracing::warn!(endpoint = %d.endpoint_id, reason, "webhook endpoint disabled");
        announce_disabled(state, &d.issuer_id, &d.endpoint_id, reason).await;
    }
    Ok(())
}

/// Tells the tenant (an event, delivered to its other endpoints and kept in
/// the audit log). A failure to publish is logged: the endpoint's state
/// (`enabled: false`, `disabled_reason`) says it too.
async fn announce_disabled(state: &State, issuer: &str, endpoint: &str, reason: &str) {
    let (Ok(issuer), Ok(endpoint_id)) = (
        IssuerId::parse(issuer),
        idm_core::ids::WebhookEndpointId::parse(endpoint),
    ) else {
        return;
    };
    let published = state
        .events
        .publish(
            &issuer,
            DomainEvent::WebhookEndpointDisabled(event::WebhookEndpointDisabled {
                endpoint_id,
                reason: reason.to_owned(),
            }),
        )
        .await;
    if let Err(e) = published {
        tracing::error!(error = %e, "webhook_endpoint.disabled not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_jitter_within_bounds_and_ends() {
        let delivery = Delivery::default();
        assert_eq!(delay_before(&delivery, 1), Some(Duration::ZERO));
        for _ in 0..100 {
            let d = delay_before(&delivery, 3).unwrap_or_default();
            assert!(
                d >= Duration::from_secs(240) && d <= Duration::from_secs(360),
                "{d:?}"
            );
        }
        assert!(delay_before(&delivery, 8).is_some());
        assert_eq!(delay_before(&delivery, 9), None);
        assert_eq!(delay_before(&delivery, 0), None);
    }
}
