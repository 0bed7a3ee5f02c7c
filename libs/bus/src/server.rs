//! The serving loop: one queue-group subscription per service (so replicas
//! share load), a task per message, typed handlers, and a drain on shutdown
//! that lets in-flight requests finish. Every request's caller is checked
//! against the permission table before its handler runs (see [`authorise`]),
//! and a request whose deadline has passed is dropped unanswered (see
//! [`crate::deadline`]).

use crate::acl::{self, Identity, Served, Target};
use crate::{Bus, BusError, Reply, RequestContext};
use bytes::Bytes;
use futures::StreamExt;
use idm_core::proto::Operation;
use idm_core::ApiError;
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
    map: HashMap<&'static str, Handler<S>>,
    /// The targets of the registered operations: all must be the one served.
    targets: Vec<(Target, &'static str)>,
    /// Operations registered twice (the second would silently win).
    duplicates: Vec<&'static str>,
}

impl<S: Send + Sync + 'static> Default for Handlers<S> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            targets: Vec::new(),
            duplicates: Vec::new(),
        }
    }
}

impl<S: Send + Sync + 'static> Handlers<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler of operation `O` (named by the handler's
    /// request type, whose reply type it must return). A payload that does
    /// not decode as `O` is answered `invalid_request` without reaching the
    /// handler.
    pub fn on<O, E, F, Fut>(mut self, handler: F) -> Self
    where
        O: Operation,
        E: Into<ApiError> + 'static,
        F: Fn(Arc<S>, O) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O::Reply, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler<S> = Arc::new(move |state: Arc<S>, payload: Bytes| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let request: O = serde_json::from_slice(&payload)
                    .map_err(|e| ApiError::invalid_request(format!("malformed message: {e}")))?;
                let response = handler(state, request).await.map_err(Into::into)?;
                let body = serde_json::to_vec(&Reply::Ok(response)).map_err(|e| {
                    tracing::error!(error = %e, "reply did not serialise");
                    ApiError::internal()
                })?;
                Ok(Bytes::from(body))
            })
        });
        if self.map.insert(O::NAME, erased).is_some() {
            self.duplicates.push(O::NAME);
        }
        self.targets.push((O::TARGET, O::NAME));
        self
    }

    /// Every registered operation belongs to `target`, and none twice.
    fn check(&self, target: Target) -> Result<(), String> {
        if let Some(op) = self.duplicates.first() {
            return Err(format!("operation '{op}' has two handlers"));
        }
        match self.targets.iter().find(|(t, _)| *t != target) {
            Some((other, op)) => Err(format!(
                "the handler of {other}.{op} is registered on {target}'s loop"
            )),
            None => Ok(()),
        }
    }
}

/// Who sent `message`, if it may call `op` on `target`.
///
/// The caller names itself in [`crate::HEADER_CALLER`]; the name is believed
/// only when the reply subject lies in that identity's own inbox, which the
/// NATS server lets no one else read. So a forged name can at most make the
/// handler answer the named identity, never the forger, and the server's
/// per-subject publish permissions (generated from the same table) already
/// decide who can send the request at all. The table check here catches a
/// server config that drifted from the table.
pub fn authorise(
    prefix: &str,
    target: Target,
    op: &str,
    headers: Option<&async_nats::HeaderMap>,
    reply: Option<&str>,
) -> Result<Identity, ApiError> {
    let refuse = |why: String| ApiError::new(idm_core::ErrorCode::CallerNotAllowed, why);
    let claimed = headers
        .and_then(|h| h.get(crate::HEADER_CALLER))
        .map(|v| v.as_str())
        .ok_or_else(|| refuse("the request names no caller".into()))?;
    let caller = Identity::parse(claimed)
        .ok_or_else(|| refuse("the request names an unknown caller".into()))?;
    let inbox = format!("{}.", caller.inbox_prefix(prefix));
    if !reply.is_some_and(|r| r.starts_with(&inbox)) {
        return Err(refuse(format!(
            "the reply subject is not in {caller}'s inbox"
        )));
    }
    if !acl::may_call(caller, target, op) {
        return Err(refuse(format!("{caller} may not call {target}.{op}")));
    }
    Ok(caller)
}

/// Serves `served`'s subjects (`<base>.*`) in its queue group until
/// `shutdown`, then stops taking messages and waits for the ones in flight.
/// The returned handle finishes when the drain is complete. Only the
/// identity the table says serves them may (the server refuses the others).
pub async fn serve<S: Send + Sync + 'static>(
    bus: &Bus,
    served: Served,
    handlers: Handlers<S>,
    state: Arc<S>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let subject = format!("{}.*", served.subject_base(bus.prefix()));
    if bus.identity().serves() != Some(served) {
        return Err(BusError::Subscribe {
            subject,
            reason: format!(
                "{} does not serve it in the permission table (libs/bus/src/acl.rs)",
                bus.identity()
            ),
        });
    }
    let target = served.target();
    handlers
        .check(target)
        .map_err(|reason| BusError::Subscribe {
            subject: subject.clone(),
            reason,
        })?;
    let mut subscription = bus
        .client()
        .queue_subscribe(subject.clone(), served.queue_group())
        .await
        .map_err(|e| BusError::Subscribe {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
    // Make sure the server has the subscription before callers are told we are up.
    bus.confirm_subscriptions().await;
    let client = bus.client().clone();
    let prefix: Arc<str> = bus.prefix().into();
    let identity = bus.identity();
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
            let prefix = Arc::clone(&prefix);
            tracker.spawn(async move {
                let op = message.subject.rsplit('.').next().unwrap_or_default().to_owned();
                let caller = authorise(&prefix, target, &op, message.headers.as_ref(), message.reply.as_deref());
                let caller_name = caller.as_ref().map_or_else(|_| "refused".to_owned(), |c| c.name());
                let subject_label = crate::operation_label(&message.subject);
                // The root of this service's part of the trace: a child of
                // the caller's `bus.request` span.
                let span = tracing::info_span!("bus.handle", otel.kind = "server", otel.name = %subject_label, service = %identity, subject = %message.subject, caller = %caller_name, request_id = tracing::field::Empty, trace_id = tracing::field::Empty);
                let ctx = RequestContext::from_headers_in(&span, message.headers.as_ref());
                // The caller has given up: running the handler would only
                // take capacity from callers still waiting, and nobody would
                // read the reply.
                if let Some(late_ms) = crate::deadline::overdue(message.headers.as_ref()) {
                    metrics::counter!(idm_core::metric::BUS_EXPIRED.name, "subject" => subject_label, "caller" => caller_name).increment(1);
                    span.in_scope(|| tracing::debug!(late_ms, "dropped: the caller's deadline had passed"));
                    return;
                }
                let started = Instant::now();
                let answer = async {
                    if let Err(refused) = caller {
                        tracing::warn!(reason = %refused.message, "caller refused");
                        return Err(refused);
                    }
                    match handlers.get(op.as_str()) {
                        // A handler that panics answers `internal` at once,
                        // rather than leaving its caller to time out (and
                        // report the service as unavailable).
                        Some(handler) => {
                            use futures::FutureExt;
                            std::panic::AssertUnwindSafe(handler(state, message.payload.clone()))
                                .catch_unwind()
                                .await
                                .unwrap_or_else(|_| {
                                    tracing::error!("the handler panicked");
                                    Err(ApiError::internal())
                                })
                        }
                        None => Err(ApiError::new(idm_core::ErrorCode::NotFound, format!("unknown operation '{op}'"))),
                    }
                };
                let result = ctx.scope(answer.instrument(span.clone())).await;
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => e.code.as_str(),
                };
                let elapsed = started.elapsed();
                metrics::histogram!(idm_core::metric::BUS_SERVER_DURATION.name, "subject" => subject_label, "caller" => caller_name, "outcome" => outcome)
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

#[cfg(test)]
mod tests {
    use super::*;
    use idm_core::proto::session;

    fn headers(caller: &str) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(crate::HEADER_CALLER, caller);
        headers
    }

    const SESSION: Target = Target::Service("session");

    async fn key_ring(
        _: Arc<()>,
        req: session::KeyRingRequest,
    ) -> Result<session::KeyRing, ApiError> {
        Ok(session::KeyRing {
            issuer_id: req.issuer_id,
            keys: Vec::new(),
            refresh: None,
        })
    }

    async fn store_info(
        _: Arc<()>,
        _: idm_core::proto::store::GetStoreInfo,
    ) -> Result<idm_core::proto::store::StoreInfo, ApiError> {
        Err(ApiError::internal())
    }

    #[test]
    fn a_loop_takes_only_its_own_operations_each_once() {
        let own = Handlers::<()>::new().on(key_ring);
        assert_eq!(own.check(SESSION), Ok(()));
        // The operation belongs to the stores, not to this loop.
        let stray = Handlers::<()>::new().on(key_ring).on(store_info);
        let refused = stray.check(SESSION).err().unwrap_or_default();
        assert!(refused.contains("store.info"), "{refused}");
        let twice = Handlers::<()>::new().on(key_ring).on(key_ring);
        assert!(twice.check(SESSION).is_err());
    }

    #[test]
    fn the_caller_is_believed_only_with_its_own_inbox_and_a_row_in_the_table() {
        let edge = headers("edge-guard");
        let edge_inbox = "_INBOX_idm_edge-guard.abc.1";
        assert_eq!(
            authorise(
                "idm",
                SESSION,
                session::KEY_RING,
                Some(&edge),
                Some(edge_inbox)
            )
            .ok(),
            Some(Identity::EdgeGuard)
        );
        let refused = |caller: Option<&async_nats::HeaderMap>, reply: Option<&str>| {
            authorise("idm", SESSION, session::KEY_RING, caller, reply)
                .err()
                .map(|e| e.code)
        };
        let not_allowed = Some(idm_core::ErrorCode::CallerNotAllowed);
        // No name, an unknown name, no reply subject, another's inbox, the
        // right inbox under another deployment's prefix.
        assert_eq!(refused(None, Some(edge_inbox)), not_allowed);
        assert_eq!(
            refused(Some(&headers("root")), Some(edge_inbox)),
            not_allowed
        );
        assert_eq!(refused(Some(&edge), None), not_allowed);
        assert_eq!(
            refused(Some(&edge), Some("_INBOX_idm_auth.abc.1")),
            not_allowed
        );
        assert_eq!(
            refused(Some(&edge), Some("_INBOX_idm2_edge-guard.x")),
            not_allowed
        );
        assert_eq!(
            refused(Some(&edge), Some("_INBOX_idm_edge-guardx.1")),
            not_allowed
        );
        // Drift: a server config that let auth publish key_ring would still
        // meet this check.
        assert_eq!(
            refused(Some(&headers("auth")), Some("_INBOX_idm_auth.abc.1")),
            not_allowed
        );
        assert_eq!(
            refused(Some(&headers("admin")), Some("_INBOX_idm_admin.abc.1")),
            not_allowed
        );
    }
}
