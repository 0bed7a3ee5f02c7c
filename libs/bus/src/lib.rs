//! The one place that owns NATS request/reply for idmesh: subjects, headers
//! (W3C trace context and request id), timeouts, the reply envelope and error
//! mapping, and the serving loop every service uses.
//!
//! Subjects are `<prefix>.<service>.v1.<operation>`; regional stores use
//! `<prefix>.store.<region>.v1.<operation>`. A missing responder or a timeout
//! is `upstream_unavailable`, never a hang.

pub mod acl;
mod context;
pub mod deadline;
pub mod durable;
pub mod events;
pub mod nats_config;
mod server;
mod trace;

pub use acl::{Identity, Served, Stream, Target};
pub use context::{
    current as current_context, current_request_id, network_of, set_actor, Actor, RequestContext,
};
pub use deadline::{within_deadline, HEADER_DEADLINE};
pub use events::Events;
pub use idm_core::proto::{Operation, ServiceOperation, StoreOperation};
pub use server::{serve, Handlers};
pub use trace::{outgoing_headers, remote_parent, traceparent_of};

use idm_core::config::{NatsAuth, ServiceBasics};
use idm_core::{metric, ApiError, ErrorCode, Region};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

pub const HEADER_REQUEST_ID: &str = "idm-request-id";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_TRACESTATE: &str = "tracestate";
/// The calling service's identity (see [`acl`]); the serving loop checks it.
pub const HEADER_CALLER: &str = "idm-caller";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("NATS credentials {path}: {reason}")]
    Credentials { path: String, reason: String },
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
    identity: Identity,
    /// `identity`'s name, sent in [`HEADER_CALLER`] with every request.
    caller: std::sync::Arc<str>,
    /// Copies kept of each JetStream stream this service creates.
    stream_replicas: usize,
    stream_placement: idm_core::config::StreamPlacement,
}

/// The servers of `IDM_NATS_URL`: one URL, or a comma-separated list (the
/// nodes of a cluster). The client connects to one of them at random and,
/// when that server goes away, to another (the servers a cluster announces
/// are added to the list too).
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| BusError::Connect {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(BusError::Connect {
            url: urls.to_owned(),
            reason: "no server URL".into(),
        });
    }
    Ok(addrs)
}

/// The client options of `identity`: its own inbox prefix (only it may read
/// below it), its nkey, and TLS when a CA is configured.
pub fn connect_options(
    identity: Identity,
    prefix: &str,
    auth: &NatsAuth,
) -> Result<async_nats::ConnectOptions, BusError> {
    use secrecy::ExposeSecret;
    let mut options = async_nats::ConnectOptions::new()
        .name(identity.name())
        .custom_inbox_prefix(identity.inbox_prefix(prefix))
        .connection_timeout(Duration::from_secs(5));
    if let Some(seed) = &auth.nkey_seed {
        // Checked here so a wrong seed is a start-up error naming the
        // problem, not a connection that silently keeps retrying.
        nats_config::user_key_from_seed(seed.expose_secret()).map_err(|reason| {
            BusError::Credentials {
                path: format!("nkey seed of {identity}"),
                reason,
            }
        })?;
        options = options.nkey(seed.expose_secret().trim().to_owned());
    }
    if let Some(ca) = &auth.tls_ca_file {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    match (&auth.tls_cert_file, &auth.tls_key_file) {
        (Some(cert), Some(key)) => {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            return Err(BusError::Credentials {
                path: "NATS client certificate".into(),
                reason: "give both the certificate and its key, or neither".into(),
            })
        }
    }
    Ok(options)
}

impl Bus {
    /// Connects as `identity` with the credentials in `basics`. The first
    /// connection is retried in the background (readiness says when it is
    /// up); the server's refusals (bad credentials, permission violations)
    /// are logged as errors.
    pub async fn connect(basics: &ServiceBasics, identity: Identity) -> Result<Self, BusError> {
        let url = basics.nats_url.as_str();
        let servers = server_addrs(url)?;
        let client = connect_options(identity, &basics.subject_prefix, &basics.nats_auth)?
            .retry_on_initial_connect()
            .event_callback(move |event| async move {
                match event {
                    async_nats::Event::ServerError(e) => {
                        tracing::error!(identity = %identity, error = %e, "NATS server refused an operation")
                    }
                    async_nats::Event::ClientError(e) => {
                        tracing::warn!(identity = %identity, error = %e, "NATS client error")
                    }
                    other => tracing::debug!(identity = %identity, event = %other, "NATS connection event"),
                }
            })
            .connect(servers)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            prefix: basics.subject_prefix.clone(),
            timeout: basics.request_timeout,
            identity,
            caller: identity.name().into(),
            stream_replicas: basics.nats_stream_replicas.max(1),
            stream_placement: basics.nats_stream_placement.clone(),
        })
    }

    /// How many copies of each JetStream stream to keep
    /// (`IDM_NATS_STREAM_REPLICAS`).
    pub fn stream_replicas(&self) -> usize {
        self.stream_replicas
    }

    /// Gets the stream `config.name`, creating it if it is missing. An
    /// existing stream is left as it is; if its replica count differs from
    /// the configured one (a deployment grown from one server to a
    /// cluster), that is logged, as changing it is an operator's decision
    /// (`nats stream edit <name> --replicas 3`, see docs/MESSAGING.md).
    pub async fn ensure_stream(
        &self,
        js: &async_nats::jetstream::Context,
        mut config: async_nats::jetstream::stream::Config,
    ) -> Result<async_nats::jetstream::stream::Stream, BusError> {
        config.num_replicas = self.stream_replicas;
        if !self.stream_placement.is_empty() {
            config.placement = Some(async_nats::jetstream::stream::Placement {
                cluster: self.stream_placement.cluster.clone(),
                tags: self.stream_placement.tags.clone(),
            });
        }
        let name = config.name.clone();
        let subject = config.subjects.first().cloned().unwrap_or_default();
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| BusError::Subscribe {
                subject: subject.clone(),
                reason: format!("stream {name}: {e}"),
            })?;
        let replicas = stream.cached_info().config.num_replicas;
        if replicas != self.stream_replicas {
            tracing::warn!(
                stream = %name,
                replicas,
                configured = self.stream_replicas,
                "the stream keeps a different number of copies than configured (IDM_NATS_STREAM_REPLICAS); edit the stream to change it"
            );
        }
        let placed = stream
            .cached_info()
            .config
            .placement
            .clone()
            .unwrap_or_default();
        if !self.stream_placement.is_empty()
            && (placed.cluster != self.stream_placement.cluster
                || placed.tags != self.stream_placement.tags)
        {
            // Moving a stream moves its data: an operator's decision.
            tracing::warn!(
                stream = %name,
                cluster = ?placed.cluster,
                tags = ?placed.tags,
                "the stream is placed other than configured (IDM_NATS_STREAM_CLUSTER / _TAGS); edit the stream to move it"
            );
        }
        Ok(stream)
    }

    /// Who this connection is on the bus.
    pub fn identity(&self) -> Identity {
        self.identity
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
        // Heard from the moment this returns (a revocation broadcast right
        // after an edge starts must not pass it by).
        self.confirm_subscriptions().await;
        let identity = self.identity;
        let topic = topic.to_owned();
        Ok(tokio::spawn(async move {
            use tracing::Instrument;
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = messages.next() => match next { Some(m) => m, None => break },
                };
                let span = tracing::info_span!("bus.broadcast", otel.kind = "consumer", otel.name = %topic, service = %identity, subject = %message.subject, request_id = tracing::field::Empty, trace_id = tracing::field::Empty);
                let ctx = RequestContext::from_headers_in(&span, message.headers.as_ref());
                let started = Instant::now();
                let outcome = match serde_json::from_slice::<T>(&message.payload) {
                    Ok(value) => {
                        ctx.scope(handler(value).instrument(span)).await;
                        "ok"
                    }
                    Err(e) => {
                        span.in_scope(|| tracing::warn!(error = %e, %subject, "ignored a malformed broadcast"));
                        "malformed"
                    }
                };
                metrics::histogram!(metric::BUS_MESSAGE_DURATION.name, "consumer" => topic.clone(), "outcome" => outcome)
                    .record(started.elapsed().as_secs_f64());
            }
        }))
    }

    /// Serves what this identity serves in the permission table: a
    /// service's `<prefix>.<service>.v1.*` in the queue group `<service>`,
    /// or a store's `<prefix>.store.<region>.v1.*` in `store-<region>` (see
    /// [`serve`]). Every handler must be of an operation of that target.
    pub async fn serve<S: Send + Sync + 'static>(
        &self,
        handlers: Handlers<S>,
        state: std::sync::Arc<S>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let Some(served) = self.identity.serves() else {
            return Err(BusError::Subscribe {
                subject: format!("{}.*", self.prefix),
                reason: format!(
                    "{} serves nothing in the permission table (libs/bus/src/acl.rs)",
                    self.identity
                ),
            });
        };
        serve(self, served, handlers, state, shutdown).await
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

    /// Sends `request` to the service that answers it and decodes the reply:
    /// the service, operation and reply type all come from the request's
    /// type ([`Operation`]).
    pub async fn send<O: ServiceOperation>(&self, request: &O) -> Result<O::Reply, ApiError> {
        self.check_call(O::TARGET, O::NAME)?;
        let Target::Service(service) = O::TARGET else {
            // A `ServiceOperation` always names a service (`operations!`).
            return Err(ApiError::internal());
        };
        self.request(self.subject(service, O::NAME), request).await
    }

    /// Sends `request` to the regional store of `region`.
    pub async fn send_to<O: StoreOperation>(
        &self,
        region: Region,
        request: &O,
    ) -> Result<O::Reply, ApiError> {
        self.check_call(Target::Store, O::NAME)?;
        self.request(self.store_subject(region, O::NAME), request)
            .await
    }

    /// The table's verdict before sending: a call missing from it would be
    /// refused by the server (a silent time-out) and by the handler, so it
    /// fails here at once with a message that says where to look.
    fn check_call(&self, target: Target, op: &str) -> Result<(), ApiError> {
        if acl::may_call(self.identity, target, op) {
            return Ok(());
        }
        tracing::error!(identity = %self.identity, %target, op, "call missing from the bus permission table");
        Err(ApiError::new(
            ErrorCode::CallerNotAllowed,
            format!(
                "{} may not call {target}.{op} (libs/bus/src/acl.rs)",
                self.identity
            ),
        ))
    }

    #[tracing::instrument(name = "bus.request", skip_all, fields(otel.kind = "client", otel.name = %operation_label(&subject), subject = %subject))]
    async fn request<Req, Resp>(&self, subject: String, request: &Req) -> Result<Resp, ApiError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request).map_err(|e| {
            tracing::error!(error = %e, "request did not serialise");
            ApiError::internal()
        })?;
        let mut headers = outgoing_headers();
        headers.insert(HEADER_CALLER, &*self.caller);
        let (deadline, budget) = deadline::for_request(self.timeout);
        if budget.is_zero() {
            // The request being handled has already been given up on.
            return Err(unavailable(&subject, "the caller's deadline has passed"));
        }
        headers.insert(HEADER_DEADLINE, deadline.to_string());
        let started = Instant::now();
        let op = operation_label(&subject);
        // While the connection is down a request would only sit in the
        // client's buffer until the timeout: fail at once instead, so a NATS
        // outage costs callers nothing but a 503. (Before the first connect,
        // `Pending`, requests wait as usual: a service is still starting.)
        if self.client.connection_state() == async_nats::connection::State::Disconnected {
            metrics::histogram!(metric::BUS_CLIENT_DURATION.name, "subject" => op, "outcome" => ErrorCode::UpstreamUnavailable.as_str())
                .record(started.elapsed().as_secs_f64());
            return Err(unavailable(&subject, "bus disconnected"));
        }
        let sent = self
            .client
            .request_with_headers(subject.clone(), headers, payload.into());
        let outcome = tokio::time::timeout(budget, sent).await;
        let reply = match outcome {
            Err(_) => Err(unavailable(&subject, "timed out")),
            Ok(Err(e)) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => unavailable(&subject, "no responder"),
                async_nats::RequestErrorKind::TimedOut => unavailable(&subject, "timed out"),
                async_nats::RequestErrorKind::Other => unavailable(&subject, "request failed"),
                // Refused by the client before sending: a bug here, not an outage.
                async_nats::RequestErrorKind::InvalidSubject
                | async_nats::RequestErrorKind::MaxPayloadExceeded => {
                    tracing::error!(error = %e, "request not sent");
                    ApiError::internal()
                }
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
        metrics::histogram!(metric::BUS_CLIENT_DURATION.name, "subject" => op, "outcome" => outcome_label)
            .record(started.elapsed().as_secs_f64());
        reply
    }

    /// Returns once the server has processed every subscription this connection
    /// made so far. async-nats' `flush` only empties the socket buffer: a caller
    /// on another connection could still be told "no responders" by a server
    /// that has not read the SUB yet (seen as a `503 upstream_unavailable` right
    /// after a service restarted under load). A server handles one connection's
    /// messages in order, so a message published to our own inbox and routed
    /// back to us comes after the SUBs before it. Bounded: after 5 s the start
    /// goes on as before.
    pub(crate) async fn confirm_subscriptions(&self) {
        use futures::StreamExt;
        let client = &self.client;
        let probe = client.new_inbox();
        let Ok(mut echo) = client.subscribe(probe.clone()).await else {
            self.flush().await;
            return;
        };
        if client.publish(probe, bytes::Bytes::new()).await.is_ok() {
            self.flush().await;
            if tokio::time::timeout(std::time::Duration::from_secs(5), echo.next())
                .await
                .is_err()
            {
                tracing::warn!(
                    "the bus server did not confirm this connection's subscriptions within 5 s"
                );
            }
        }
        let _ = echo.unsubscribe().await;
    }

    /// Fire-and-forget core-NATS publish (cache invalidation, revocation).
    pub async fn broadcast<T: Serialize>(&self, subject: String, message: &T) {
        let payload = match serde_json::to_vec(message) {
            Ok(p) => p,
            Err(e) => return tracing::error!(error = %e, "broadcast did not serialise"),
        };
        let sent = self
            .client
            .publish_with_headers(subject, outgoing_headers(), payload.into())
            .await;
        if let Err(e) = sent {
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
pub(crate) fn operation_label(subject: &str) -> String {
    subject
        .split('.')
        .skip(1)
        .filter(|t| *t != "v1")
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_nats_url_is_one_server_or_a_comma_separated_cluster() {
        let one = server_addrs("nats://127.0.0.1:4222").unwrap();
        assert_eq!(one.len(), 1);
        let three =
            server_addrs("nats://nats-1:4222, nats://nats-2:4222,nats://nats-3:4222,").unwrap();
        let hosts: Vec<&str> = three.iter().map(|a| a.host()).collect();
        assert_eq!(hosts, ["nats-1", "nats-2", "nats-3"]);
        assert!(server_addrs("").is_err());
        assert!(server_addrs(" , ").is_err());
        let bad = server_addrs("nats://ok:4222,http://[::1")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("http://[::1"), "{bad}");
    }
}
