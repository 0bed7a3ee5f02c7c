//! The courier: a durable pull consumer on the `MAIL` work queue. Each
//! message is acknowledged only after the transport accepted it; a failure
//! is negatively acknowledged with an exponential back-off (0.5 s doubling to
//! 30 s), so JetStream redelivers it until it goes through.
//!
//! A courier that dies (killed, crashed, its host lost) holds messages it
//! pulled but never settled; JetStream hands them to another courier only
//! after the ack wait. So the wait is short ([`ACK_WAIT`]), a send that runs
//! long keeps its message by reporting progress, and a courier pulls a few
//! messages at a time ([`PULL_BATCH`]) rather than the client's default of
//! 200: a crash then delays a handful of codes by seconds, not a queue's
//! worth by a minute.

use super::{Letterhead, MailQueue, OutgoingMail, Transport};
use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use idm_core::metric;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a pulled message stays with one courier without a word from it.
const ACK_WAIT: Duration = Duration::from_secs(20);
/// While a send runs, progress is reported this often (well inside
/// [`ACK_WAIT`], so a slow relay never causes a second copy).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// A relay that stops answering mid-conversation (lettre's own time-out does
/// not cover every wait) must not hold a message, and the courier, forever:
/// past this the send counts as failed and the message is retried.
const SEND_DEADLINE: Duration = Duration::from_secs(60);
/// Messages pulled ahead of delivery.
const PULL_BATCH: usize = 4;

fn backoff(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    Duration::from_millis(500 * 2u64.pow(exponent)).min(Duration::from_secs(30))
}

pub async fn spawn_courier(
    queue: &MailQueue,
    transport: Transport,
    letterhead: Letterhead,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, idm_bus::BusError> {
    let subscribe_error = |e: &dyn std::fmt::Display| idm_bus::BusError::Subscribe {
        subject: queue.stream_name().to_owned(),
        reason: e.to_string(),
    };
    let stream = queue
        .js
        .get_stream(queue.stream_name())
        .await
        .map_err(|e| subscribe_error(&e))?;
    // Create or update: a deployment whose durable consumer was made with
    // other settings (an earlier release's longer ack wait) gets these.
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("courier".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            ..Default::default()
        })
        .await
        .map_err(|e| subscribe_error(&e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .messages()
        .await
        .map_err(|e| subscribe_error(&e))?;
    let queue = queue.clone();
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = messages.next() => match next {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "mail queue read failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    None => break,
                },
            };
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Idm-Mail-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            // A child of the span that queued the message (every attempt is
            // one more child of it).
            let span = tracing::info_span!(
                "mail.deliver",
                otel.kind = "consumer",
                service = "auth",
                mail = %id,
                attempt = delivered,
                request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            let ctx = idm_bus::RequestContext::from_headers_in(&span, message.headers.as_ref());
            let started = std::time::Instant::now();
            let outcome = ctx
                .scope(
                    deliver(&queue, &transport, &letterhead, &id, &message, delivered)
                        .instrument(span),
                )
                .await;
            metrics::counter!(metric::MAIL_DELIVERIES.name, "outcome" => outcome).increment(1);
            metrics::histogram!(metric::BUS_MESSAGE_DURATION.name, "consumer" => "mail.courier", "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
        }
    }))
}

/// Delivers one queued message and settles it with the stream; the outcome
/// is `delivered`, `retried` (negatively acknowledged with back-off) or
/// `dropped` (it can never be delivered).
async fn deliver(
    queue: &MailQueue,
    transport: &Transport,
    letterhead: &Letterhead,
    id: &str,
    message: &async_nats::jetstream::Message,
    delivered: i64,
) -> &'static str {
    let mail: OutgoingMail = match queue.open(id, &message.payload) {
        Ok(mail) => mail,
        Err(e) => {
            tracing::error!(error = %e, "dropping a mail message that does not open");
            let _ = message.ack_with(AckKind::Term).await;
            return "dropped";
        }
    };
    let built = match letterhead.build(&mail) {
        Ok(built) => built,
        Err(e) => {
            // A message that cannot be built never will be: drop it loudly.
            tracing::error!(error = %e, "mail cannot be built; dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return "dropped";
        }
    };
    let sent = {
        let send = transport.send(built);
        tokio::pin!(send);
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        let deadline = tokio::time::sleep(SEND_DEADLINE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                sent = &mut send => break sent.map_err(|e| e.to_string()),
                _ = &mut deadline => break Err(format!(
                    "the relay did not finish within {} s",
                    SEND_DEADLINE.as_secs()
                )),
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    };
    match sent {
        Ok(()) => {
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "delivered but not acknowledged; it may be sent again");
            }
            "delivered"
        }
        Err(e) => {
            let delay = backoff(delivered);
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "delivery failed; will retry");
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            "retried"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(50), Duration::from_secs(30));
    }
}
