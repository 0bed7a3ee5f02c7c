//! Outgoing mail: flows enqueue on the `MAIL` JetStream work queue and return
//! at once; the courier delivers. A message leaves the queue only when the
//! transport accepted it, so an SMTP outage delays mail but never loses it.

mod courier;
mod transport;

pub use courier::spawn_courier;
pub use transport::Transport;

use async_nats::jetstream;
use idm_bus::{Bus, BusError};
use idm_core::ApiError;
use serde::{Deserialize, Serialize};

/// One message to deliver. It holds an address and a code, so it lives only
/// in the work queue, which deletes it once delivered.
#[derive(Serialize, Deserialize)]
pub struct OutgoingMail {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub text: String,
}

impl std::fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutgoingMail({})", self.id)
    }
}

#[derive(Clone)]
pub struct MailQueue {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl MailQueue {
    pub async fn ensure(bus: &Bus) -> Result<Self, BusError> {
        let js = jetstream::new(bus.client().clone());
        let stream = format!(
            "{}_MAIL",
            bus.prefix().to_ascii_uppercase().replace(['-', '.'], "_")
        );
        let subject = format!("{}.mail.outgoing", bus.prefix());
        js.get_or_create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::Subscribe {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            js,
            stream,
            subject,
        })
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Queues `mail`; returns once the stream has stored it.
    pub async fn enqueue(&self, mail: &OutgoingMail) -> Result<(), ApiError> {
        let payload = serde_json::to_vec(mail).map_err(|e| ApiError::internal_from(&e))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", mail.id.as_str());
        let ack = self
            .js
            .publish_with_headers(self.subject.clone(), headers, payload.into())
            .await
            .map_err(|e| ApiError::upstream(format!("mail queue unavailable: {e}")))?;
        ack.await
            .map_err(|e| ApiError::upstream(format!("mail not queued: {e}")))?;
        metrics::counter!("idm_mail_enqueued_total").increment(1);
        Ok(())
    }
}
