//! The `DELETIONS` work queue: one message per job, `<prefix>.deletions.jobs`,
//! file-backed, each message carrying the job id (and nothing personal):
//! deletions and user moves alike.

use async_nats::jetstream;
use idm_bus::{Bus, BusError};
use idm_core::ApiError;
use serde::{Deserialize, Serialize};

#[derive(Clone)]
pub struct Queue {
    pub js: jetstream::Context,
    pub stream: String,
    subject: String,
}

/// What a message says: which job to run (a deletion's or a move's id; the
/// field keeps its first name so queued messages still parse).
#[derive(Debug, Serialize, Deserialize)]
pub struct JobMessage {
    #[serde(rename = "deletion_id")]
    pub job_id: String,
}

impl Queue {
    pub async fn ensure(bus: &Bus) -> Result<Self, BusError> {
        let js = jetstream::new(bus.client().clone());
        let stream = idm_bus::Stream::Deletions.name(bus.prefix());
        let subject = format!("{}.deletions.jobs", bus.prefix());
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
        })
    }

    /// Queues `job` and waits for the stream to store it. The message id is
    /// the job id plus `round`, so a retry of the same publish is dropped as
    /// a duplicate while a later re-queue (`round` differs) is not.
    pub async fn enqueue(&self, job: &str, round: &str) -> Result<(), ApiError> {
        let payload = serde_json::to_vec(&JobMessage {
            job_id: job.to_owned(),
        })
        .map_err(|e| ApiError::internal_from(&e))?;
        let mut headers = idm_bus::outgoing_headers();
        headers.insert("Nats-Msg-Id", format!("{job}:{round}").as_str());
        idm_bus::durable::publish_acked(&self.js, self.subject.clone(), headers, payload.into())
            .await
            .map_err(|e| ApiError::upstream(format!("deletion job not queued: {e}")))?;
        Ok(())
    }
}
