//! Outgoing mail: flows enqueue on the `MAIL` JetStream work queue and return
//! at once; the courier delivers. A message leaves the queue only when the
//! transport accepted it, so an SMTP outage delays mail but never loses it.
//! Queued messages are sealed (XChaCha20-Poly1305, key derived from the auth
//! master key), so an address and its code never sit in the stream's files in
//! the clear, however long an outage lasts.

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
    sealer: std::sync::Arc<idm_crypto::MasterKeys>,
}

const SEALING_PURPOSE: &str = "idmesh/auth/mail-queue/v1";

impl MailQueue {
    pub async fn ensure(bus: &Bus, master: &idm_crypto::MasterKeys) -> Result<Self, BusError> {
        let js = jetstream::new(bus.client().clone());
        let stream = idm_bus::Stream::Mail.name(bus.prefix());
        let subject = format!("{}.mail.outgoing", bus.prefix());
        bus.ensure_stream(
            &js,
            jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![subject.clone()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self {
            js,
            stream,
            subject,
            sealer: std::sync::Arc::new(master.derive_sealing_keys(SEALING_PURPOSE)),
        })
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Queues `mail`; returns once the stream has stored it.
    pub async fn enqueue(&self, mail: &OutgoingMail) -> Result<(), ApiError> {
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(mail).map_err(|e| ApiError::internal_from(&e))?,
        );
        let payload = self
            .sealer
            .seal(&json, mail.id.as_bytes())
            .map_err(|e| ApiError::internal_from(&e))?;
        // Request id and trace context: the courier's delivery span is a
        // child of the flow that queued the message.
        let mut headers = idm_bus::outgoing_headers();
        headers.insert("Nats-Msg-Id", mail.id.as_str());
        // The id is the associated data the courier needs to open the seal.
        headers.insert("Idm-Mail-Id", mail.id.as_str());
        // Retried through a stream leader election (the id makes it safe).
        idm_bus::durable::publish_acked(&self.js, self.subject.clone(), headers, payload.into())
            .await
            .map_err(|e| ApiError::upstream(format!("mail not queued: {e}")))?;
        metrics::counter!(idm_core::metric::MAIL_ENQUEUED.name).increment(1);
        Ok(())
    }
}

impl MailQueue {
    /// Opens a queued message (the courier's side of `enqueue`): one queued
    /// before a master-key rotation opens with the previous key.
    pub(crate) fn open(&self, id: &str, sealed: &[u8]) -> Result<OutgoingMail, String> {
        let json = self
            .sealer
            .open(sealed, id.as_bytes())
            .map_err(|e| e.to_string())?
            .plaintext;
        serde_json::from_slice(&json).map_err(|e| e.to_string())
    }
}
