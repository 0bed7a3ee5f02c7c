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
        let event = Event {
            id: EventId::generate(),
            event_type: event_type.to_owned(),
            issuer_id: issuer.clone(),
            occurred_at: idm_core::now(),
            data: event.data().map_err(|e| ApiError::internal_from(&e))?,
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
