//! The serving loop: one queue-group subscription per service (so replicas
//! share load), a task per message, typed handlers, and a drain on shutdown
//! that lets in-flight requests finish.

use crate::{Bus, BusError, Reply, RequestContext};
use bytes::Bytes;
use futures::StreamExt;
use idm_core::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

type Answer = Pin<Box<dyn Future<Output = Result<Bytes, ApiError>> + Send>>;
type Handler<S> = Arc<dyn Fn(Arc<S>, Bytes) -> Answer + Send + Sync>;

/// Operation name → typed handler.
pub struct Handlers<S> {
    map: HashMap<String, Handler<S>>,
}

impl<S: Send + Sync + 'static> Default for Handlers<S> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
}

impl<S: Send + Sync + 'static> Handlers<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `op`. A payload that does not decode as `Req` is answered
    /// `invalid_request` without reaching the handler.
    pub fn on<Req, Resp, E, F, Fut>(mut self, op: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        E: Into<ApiError> + 'static,
        F: Fn(Arc<S>, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler<S> = Arc::new(move |state: Arc<S>, payload: Bytes| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let request: Req = serde_json::from_slice(&payload)
                    .map_err(|e| ApiError::invalid_request(format!("malformed message: {e}")))?;
                let response = handler(state, request).await.map_err(Into::into)?;
                let body = serde_json::to_vec(&Reply::Ok(response)).map_err(|e| {
                    tracing::error!(error = %e, "reply did not serialise");
                    ApiError::internal()
                })?;
                Ok(Bytes::from(body))
            })
        });
        self.map.insert(op.to_owned(), erased);
        self
    }
}

/// Serves `<subject_base>.*` in queue group `queue` until `shutdown`, then
/// stops taking messages and waits for the ones in flight. The returned
/// handle finishes when the drain is complete.
pub async fn serve<S: Send + Sync + 'static>(
    bus: &Bus,
    subject_base: String,
    queue: String,
    handlers: Handlers<S>,
    state: Arc<S>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let subject = format!("{subject_base}.*");
    let mut subscription = bus
        .client()
        .queue_subscribe(subject.clone(), queue)
        .await
        .map_err(|e| BusError::Subscribe {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
    // Make sure the server has the subscription before callers are told we are up.
    bus.flush().await;
    let client = bus.client().clone();
    let handlers = Arc::new(handlers.map);
    let tracker = TaskTracker::new();
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = subscription.next() => match next {
                    Some(message) => message,
                    None => break,
                },
            };
            let handlers = Arc::clone(&handlers);
            let state = Arc::clone(&state);
            let client = client.clone();
            tracker.spawn(async move {
                let ctx = RequestContext::from_headers(message.headers.as_ref());
                let op = message.subject.rsplit('.').next().unwrap_or_default().to_owned();
                let span = tracing::info_span!("bus.handle", subject = %message.subject, request_id = %ctx.request_id, trace_id = %ctx.trace_id());
                let started = Instant::now();
                let answer = async {
                    match handlers.get(&op) {
                        Some(handler) => handler(state, message.payload.clone()).await,
                        None => Err(ApiError::new(idm_core::ErrorCode::NotFound, format!("unknown operation '{op}'"))),
                    }
                };
                let result = ctx.scope(answer.instrument(span.clone())).await;
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => e.code.as_str(),
                };
                let elapsed = started.elapsed();
                metrics::histogram!("idm_bus_server_seconds", "op" => op.clone(), "outcome" => outcome)
                    .record(elapsed.as_secs_f64());
                span.in_scope(|| tracing::debug!(outcome, elapsed_ms = elapsed.as_millis() as u64, "handled"));
                let body = result.unwrap_or_else(|error| {
                    Bytes::from(serde_json::to_vec(&Reply::<()>::Error(error)).unwrap_or_default())
                });
                if let Some(reply) = message.reply {
                    if let Err(e) = client.publish(reply, body).await {
                        span.in_scope(|| tracing::warn!(error = %e, "reply could not be sent"));
                    }
                }
            });
        }
        let _ = subscription.unsubscribe().await;
        tracker.close();
        tracker.wait().await;
    }))
}
