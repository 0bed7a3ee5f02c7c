//! Domain events on JetStream: stream `<PREFIX>_EVENTS` holding subjects
//! `<prefix>.events.<issuer>.<type>`, kept for a retention period and read by
//! webhook delivery and the audit log. Publishing waits for the stream's ack,
//! so an event the caller was told about is durably stored.

use crate::{Bus, BusError};
use async_nats::jetstream;
use idm_core::ids::EventId;
use idm_core::proto::event::{DomainEvent, Event};
use idm_core::{ApiError, IssuerId};
use std::time::Duration;

const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct Events {
    js: jetstream::Context,
    prefix: String,
    identity: crate::Identity,
}

/// The stream's name for a subject prefix (stream names cannot hold dots).
pub fn stream_name(prefix: &str) -> String {
    crate::Stream::Events.name(prefix)
}

impl Events {
    /// Creates the stream if it does not exist yet (idempotent).
    pub async fn ensure(bus: &Bus) -> Result<Self, BusError> {
        let js = jetstream::new(bus.client().clone());
        let config = jetstream::stream::Config {
            name: stream_name(bus.prefix()),
            subjects: vec![format!("{}.events.>", bus.prefix())],
            max_age: RETENTION,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        bus.ensure_stream(&js, config).await?;
        Ok(Self {
            js,
            prefix: bus.prefix().to_owned(),
            identity: bus.identity(),
        })
    }

    /// Publishes `event` for `issuer` and waits for the stream's ack.
    pub async fn publish(
        &self,
        issuer: &IssuerId,
        event: DomainEvent,
    ) -> Result<EventId, ApiError> {
        let event_type = event.event_type();
        if !crate::acl::may_publish_event(self.identity, event_type) {
            // The server would refuse the publish; say so at once and where.
            tracing::error!(identity = %self.identity, event_type, "event type missing from the bus permission table");
            return Err(ApiError::new(
                idm_core::ErrorCode::CallerNotAllowed,
                format!(
                    "{} may not publish {event_type} events (libs/bus/src/acl.rs)",
                    self.identity
                ),
            ));
        }
        // The audit fields come from the request being handled (the edge
        // names the actor), so publishers need not pass them.
        let request = crate::context::in_request();
        let actor = request.as_ref().and_then(|ctx| ctx.actor());
        let event = Event {
            id: EventId::generate(),
            event_type: event_type.to_owned(),
            issuer_id: issuer.clone(),
            occurred_at: idm_core::now(),
            data: event.data().map_err(|e| ApiError::internal_from(&e))?,
            actor: Some(
                actor
                    .as_ref()
                    .map_or_else(|| "system".to_owned(), |a| a.actor.clone()),
            ),
            request_id: request.as_ref().map(|ctx| ctx.request_id.clone()),
            network: actor.and_then(|a| a.network),
        };
        let subject = format!("{}.events.{}.{}", self.prefix, issuer, event_type);
        let payload = serde_json::to_vec(&event).map_err(|e| ApiError::internal_from(&e))?;
        let mut headers = crate::outgoing_headers();
        // Lets JetStream drop a duplicate if a retry publishes the same event.
        headers.insert("Nats-Msg-Id", event.id.as_str());
        // Retried through a stream leader election (the id makes it safe).
        crate::durable::publish_acked(&self.js, subject, headers, payload.into())
            .await
            .map_err(|e| ApiError::upstream(format!("event not stored: {e}")))?;
        Ok(event.id)
    }
}

/// How long a pulled event stays with one consumer without an answer.
const CONSUMER_ACK_WAIT: Duration = Duration::from_secs(30);
/// Events pulled ahead of handling.
const CONSUMER_BATCH: usize = 64;

/// Reads `EVENTS` through the durable consumer `durable` (which the
/// permission table must grant the identity) until `shutdown`: each event is
/// handed to `handle` and acknowledged when it returns `Ok`, redelivered
/// with back-off (0.5 s doubling to 30 s) when it returns `Err`; a message
/// that is not an event is dropped loudly. Delivery is at least once:
/// handlers must be idempotent (the event id is the natural key).
///
/// A consumer created on a stream that already holds events starts from
/// the oldest one retained.
pub async fn consume<F, Fut>(
    bus: &Bus,
    durable: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
    handle: F,
) -> Result<tokio::task::JoinHandle<()>, BusError>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let events = Events::ensure(bus).await?;
    let name = stream_name(bus.prefix());
    let subscribe_error = |e: &dyn std::fmt::Display| BusError::Subscribe {
        subject: format!("{name} consumer {durable}"),
        reason: e.to_string(),
    };
    let stream = events
        .js
        .get_stream(&name)
        .await
        .map_err(|e| subscribe_error(&e))?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: CONSUMER_ACK_WAIT,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| subscribe_error(&e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(CONSUMER_BATCH)
        .messages()
        .await
        .map_err(|e| subscribe_error(&e))?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = messages.next() => match next {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, durable, "event stream read failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    None => break,
                },
            };
            let event: Event = match serde_json::from_slice(&message.payload) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(error = %e, subject = %message.subject, durable, "dropping a message that is not an event");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let span = tracing::info_span!(
                "events.consume",
                otel.kind = "consumer",
                consumer = durable,
                event = %event.id,
                attempt = delivered,
                request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            let ctx = crate::RequestContext::from_headers_in(&span, message.headers.as_ref());
            let started = std::time::Instant::now();
            let outcome = {
                use tracing::Instrument;
                ctx.scope(handle(event).instrument(span)).await
            };
            let label = match outcome {
                Ok(()) => {
                    if let Err(e) = message.ack().await {
                        tracing::warn!(error = %e, durable, "event handled but not acknowledged; it may come again");
                    }
                    "handled"
                }
                Err(e) => {
                    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
                    let delay = Duration::from_millis(500 * 2u64.pow(exponent))
                        .min(Duration::from_secs(30));
                    tracing::warn!(error = %e, durable, retry_in_ms = delay.as_millis() as u64, "event not handled; will retry");
                    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                    "retried"
                }
            };
            metrics::histogram!(idm_core::metric::BUS_MESSAGE_DURATION.name, "consumer" => durable, "outcome" => label)
                .record(started.elapsed().as_secs_f64());
        }
    }))
}
