//! Publishing to a JetStream stream until it says "stored", through the
//! short outages of a cluster: when the node leading a stream dies, the
//! stream has no leader until the other replicas elect one (a few seconds),
//! and a publish meanwhile gets no ack (it times out) or no responder. Each
//! message carries a `Nats-Msg-Id`, so the stream drops the copy a retry
//! may add when the first attempt was in fact stored; retrying is safe.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::publish::PublishAck;
use async_nats::HeaderMap;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// How long one attempt waits for its ack.
const ATTEMPT: Duration = Duration::from_millis(1_500);
/// How long all attempts may take: below the callers' default request
/// timeout (5 s), so a caller hears a clean error rather than its own
/// time-out while we still try.
const BUDGET: Duration = Duration::from_millis(4_000);

/// Why a durable publish failed, after its retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PublishFailed(String);

/// Publishes `payload` to `subject` and waits for the stream's ack,
/// retrying (with back-off, within a budget of 4 s or the current request's
/// deadline, whichever comes first) while the stream cannot answer: no ack in time, no responder, a connection being re-established.
/// `headers` must carry a `Nats-Msg-Id` for the retries to be idempotent.
pub async fn publish_acked(
    js: &async_nats::jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<PublishAck, PublishFailed> {
    let started = Instant::now();
    // Retries stop at the current request's deadline when it comes first
    // (its caller would not read the answer); one full attempt is always
    // made, as the message records something that already happened.
    let budget = crate::deadline::remaining()
        .map_or(BUDGET, |left| BUDGET.min(left))
        .max(ATTEMPT);
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        let left = budget.saturating_sub(started.elapsed());
        let outcome = tokio::time::timeout(ATTEMPT.min(left), async {
            js.publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await?
                .await
        })
        .await;
        let error = match outcome {
            Ok(Ok(ack)) => {
                if attempt > 1 {
                    tracing::info!(%subject, attempt, "stored after retries");
                }
                return Ok(ack);
            }
            Ok(Err(e)) => match e.kind() {
                PublishErrorKind::StreamNotFound
                | PublishErrorKind::TimedOut
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::Other => e.to_string(),
                // Refused for good (a limit, a payload too large): no retry.
                _ => return Err(PublishFailed(e.to_string())),
            },
            Err(_) => "no ack in time".to_owned(),
        };
        if started.elapsed() + pause >= budget {
            return Err(PublishFailed(format!("{error} (after {attempt} attempts)")));
        }
        tracing::debug!(%subject, attempt, error = %error, "stream did not store the message; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
        attempt += 1;
    }
}
