//! The one place that owns NATS request/reply for idmesh: subjects, headers
//! (W3C trace context and request id), timeouts, the reply envelope and error
//! mapping, and the serving loop every service uses.
//!
//! Subjects are `<prefix>.<service>.v1.<operation>`; regional stores use
//! `<prefix>.store.<region>.v1.<operation>`. A missing responder or a timeout
//! is `upstream_unavailable`, never a hang.

mod context;
pub mod events;
mod server;

pub use context::{current as current_context, RequestContext};
pub use events::Events;
pub use server::{serve, Handlers};

use idm_core::{ApiError, ErrorCode, Region};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

pub const HEADER_REQUEST_ID: &str = "idm-request-id";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_TRACESTATE: &str = "tracestate";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
}

/// A reply on the wire: exactly one of `ok` or `error`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Error(ApiError),
}

#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    prefix: String,
    timeout: Duration,
}

impl Bus {
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
        name: &str,
    ) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Readiness: the NATS connection is up.
    pub fn probe(&self) -> idm_core::Probe {
        let client = self.client.clone();
        std::sync::Arc::new(move || {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            Box::pin(async move {
                if connected {
                    Ok(())
                } else {
                    Err("NATS is not connected".to_owned())
                }
            })
        })
    }

    /// Runs `handler` for every message broadcast on `<prefix>.<topic>.*`
    /// (every replica hears every message) until `shutdown`. Subscribed
    /// before this returns; malformed messages are logged and skipped.
    pub async fn on_broadcast<T, F, Fut>(
        &self,
        topic: &str,
        shutdown: tokio_util::sync::CancellationToken,
        handler: F,
    ) -> Result<tokio::task::JoinHandle<()>, BusError>
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        use futures::StreamExt;
        let subject = self.broadcast_subject(topic, "*");
        let mut messages =
            self.client
                .subscribe(subject.clone())
                .await
                .map_err(|e| BusError::Subscribe {
                    subject: subject.clone(),
                    reason: e.to_string(),
                })?;
        self.flush().await;
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = messages.next() => match next { Some(m) => m, None => break },
                };
                match serde_json::from_slice::<T>(&message.payload) {
                    Ok(value) => handler(value).await,
                    Err(e) => tracing::warn!(error = %e, %subject, "ignored a malformed broadcast"),
                }
            }
        }))
    }

    /// Serves `<prefix>.<service>.v1.*` in the queue group `<service>` (see
    /// [`serve`]): the usual way a service answers.
    pub async fn serve_service<S: Send + Sync + 'static>(
        &self,
        service: &str,
        handlers: Handlers<S>,
        state: std::sync::Arc<S>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        serve(
            self,
            format!("{}.{service}.v1", self.prefix),
            service.to_owned(),
            handlers,
            state,
            shutdown,
        )
        .await
    }

    /// `<prefix>.<service>.v1.<op>`.
    pub fn subject(&self, service: &str, op: &str) -> String {
        format!("{}.{service}.v1.{op}", self.prefix)
    }

    /// `<prefix>.store.<region>.v1.<op>`.
    pub fn store_subject(&self, region: Region, op: &str) -> String {
        format!("{}.store.{region}.v1.{op}", self.prefix)
    }

    /// Broadcast subjects (`config.changed`, `session.revoked`), per issuer.
    pub fn broadcast_subject(&self, topic: &str, issuer: &str) -> String {
        format!("{}.{topic}.{issuer}", self.prefix)
    }

    /// Calls `service`'s `op` and decodes its reply.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        op: &str,
        request: &Req,
    ) -> Result<Resp, ApiError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.request(self.subject(service, op), request).await
    }

    /// Calls the regional store of `region`.
    pub async fn call_store<Req, Resp>(
        &self,
        region: Region,
        op: &str,
        request: &Req,
    ) -> Result<Resp, ApiError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.request(self.store_subject(region, op), request).await
    }

    #[tracing::instrument(name = "bus.request", skip_all, fields(subject = %subject))]
    pub async fn request<Req, Resp>(&self, subject: String, request: &Req) -> Result<Resp, ApiError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request).map_err(|e| {
            tracing::error!(error = %e, "request did not serialise");
            ApiError::internal()
        })?;
        let headers = context::current().to_headers();
        let started = Instant::now();
        let sent = self
            .client
            .request_with_headers(subject.clone(), headers, payload.into());
        let outcome = tokio::time::timeout(self.timeout, sent).await;
        let op = operation_label(&subject);
        let reply = match outcome {
            Err(_) => Err(unavailable(&subject, "timed out")),
            Ok(Err(e)) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => unavailable(&subject, "no responder"),
                async_nats::RequestErrorKind::TimedOut => unavailable(&subject, "timed out"),
                async_nats::RequestErrorKind::Other => unavailable(&subject, "request failed"),
            }),
            Ok(Ok(message)) => match serde_json::from_slice::<Reply<Resp>>(&message.payload) {
                Ok(Reply::Ok(value)) => Ok(value),
                Ok(Reply::Error(error)) => Err(error),
                Err(e) => {
                    tracing::error!(error = %e, "reply did not decode");
                    Err(ApiError::internal())
                }
            },
        };
        let outcome_label = match &reply {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        metrics::histogram!("idm_bus_client_seconds", "op" => op, "outcome" => outcome_label)
            .record(started.elapsed().as_secs_f64());
        reply
    }

    /// Fire-and-forget core-NATS publish (cache invalidation, revocation).
    pub async fn broadcast<T: Serialize>(&self, subject: String, message: &T) {
        let payload = match serde_json::to_vec(message) {
            Ok(p) => p,
            Err(e) => return tracing::error!(error = %e, "broadcast did not serialise"),
        };
        if let Err(e) = self.client.publish(subject, payload.into()).await {
            tracing::warn!(error = %e, "broadcast failed");
        }
    }

    pub async fn flush(&self) {
        let _ = self.client.flush().await;
    }
}

fn unavailable(subject: &str, why: &str) -> ApiError {
    let target = subject
        .split('.')
        .skip(1)
        .take_while(|t| *t != "v1")
        .collect::<Vec<_>>()
        .join(".");
    ApiError::new(
        ErrorCode::UpstreamUnavailable,
        format!("{target} is unavailable ({why})"),
    )
}

/// `service.op` (or `store.region.op`) without the deployment prefix, as a
/// bounded metric label.
fn operation_label(subject: &str) -> String {
    subject
        .split('.')
        .skip(1)
        .filter(|t| *t != "v1")
        .collect::<Vec<_>>()
        .join(".")
}
