//! Outgoing mail: flows enqueue on the `MAIL` JetStream work queue and return
//! at once; the courier delivers. A message leaves the queue only when the
//! transport accepted it, so an SMTP outage delays mail but never loses it.
//! Queued messages are sealed (XChaCha20-Poly1305, key derived from the auth
//! master key), so an address and its code never sit in the stream's files in
//! the clear, however long an outage lasts.

mod compose;
mod courier;
mod letterhead;
#[cfg(test)]
mod tests;
mod transport;

pub use compose::{display_name, Letter};
pub use courier::spawn_courier;
pub use letterhead::Letterhead;
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
    /// The same words as `text`, as escaped HTML (empty from a release
    /// before HTML parts: the courier then sends text only).
    #[serde(default)]
    pub html: String,
    /// The issuer's display name, for `From`.
    #[serde(default)]
    pub from_name: String,
    #[serde(default)]
    pub issuer_id: String,
    /// The issuer's own sender address, used only if verified (courier).
    #[serde(default)]
    pub sender: Option<String>,
}

impl OutgoingMail {
    /// `letter` to `to`, in the name of the issuer of `ctx`.
    pub fn compose(
        ctx: &idm_core::proto::IssuerContext,
        platform_name: &str,
        to: &str,
        letter: &Letter,
    ) -> Self {
        let brand = compose::Brand {
            name: compose::display_name(&ctx.issuer_name, platform_name),
            logo_url: ctx.policy.mail.logo_url.clone(),
        };
        let rendered = compose::render(&brand, letter);
        Self {
            id: format!("mail_{}", idm_crypto::random_token::<12>()),
            to: to.to_owned(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            from_name: brand.name,
            issuer_id: ctx.issuer_id.as_str().to_owned(),
            sender: ctx.policy.mail.sender.clone(),
        }
    }
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
    /// The name mail carries when the issuer's is unknown.
    platform_name: String,
}

const SEALING_PURPOSE: &str = "idmesh/auth/mail-queue/v1";

impl MailQueue {
    pub async fn ensure(
        bus: &Bus,
        master: &idm_crypto::MasterKeys,
        platform_name: String,
    ) -> Result<Self, BusError> {
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
            platform_name,
        })
    }

    /// The name that stands in for an issuer's when it is unknown.
    pub fn platform_name(&self) -> String {
        self.platform_name.clone()
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Composes `letter` to `to` in the name of the issuer of `ctx` and
    /// queues it.
    pub async fn send(
        &self,
        ctx: &idm_core::proto::IssuerContext,
        to: &str,
        letter: &Letter,
    ) -> Result<(), ApiError> {
        self.enqueue(&OutgoingMail::compose(ctx, &self.platform_name, to, letter))
            .await
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
