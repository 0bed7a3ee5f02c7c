//! Per-request context carried across services in NATS headers: the request
//! id and W3C trace context. Held in a task-local so calls made while
//! handling a request inherit it without threading it through every function.

use async_nats::HeaderMap;
use std::sync::{Arc, Mutex};

/// `idm-actor`: who the request acts for (audit log), set by the edge.
pub const HEADER_ACTOR: &str = "idm-actor";
/// `idm-network`: the caller's network (`/24` or `/48`), set by the edge.
pub const HEADER_NETWORK: &str = "idm-network";

/// Who a request acts for: `key_…` (an API key), `usr_…` (an end user with
/// a session), `operator`, or `system` (no request). Recorded with the
/// events the request causes (the audit log), never used for authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub actor: String,
    /// The caller's network, never its address.
    pub network: Option<String>,
}

/// Shared by the clones of one request's context, so the edge can name the
/// actor once it has authenticated the key (inside the request's scope).
#[derive(Debug, Clone, Default)]
pub struct ActorSlot(Arc<Mutex<Option<Actor>>>);

impl ActorSlot {
    fn get(&self) -> Option<Actor> {
        self.0.lock().ok().and_then(|a| a.clone())
    }

    fn set(&self, actor: Actor) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(actor);
        }
    }
}

fn header_value_ok(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: String,
    pub tracestate: Option<String>,
    /// When the caller stops waiting (unix ms, see [`crate::deadline`]);
    /// calls made while handling the request inherit it.
    pub deadline_ms: Option<u64>,
    /// Who the request acts for (see [`Actor`]).
    pub actor: ActorSlot,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

fn random<const N: usize>() -> [u8; N] {
    // Trace and request ids are not secrets, but they are made for every
    // request: from the thread-local generator, not a `getrandom` system
    // call each (uuid's v4 made one per 16 bytes, three per request, which
    // showed in profiles of session verification).
    use rand::Rng as _;
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

pub(crate) fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    matches!(parts.as_slice(), [v, t, s, f]
        if v.len() == 2 && t.len() == 32 && s.len() == 16 && f.len() == 2
        && value.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
        && *t != "00000000000000000000000000000000")
}

impl RequestContext {
    /// A fresh context for a request that arrived without one.
    pub fn new_root() -> Self {
        Self {
            request_id: format!("req_{}", hex::encode(random::<12>())),
            traceparent: format!(
                "00-{}-{}-01",
                hex::encode(random::<16>()),
                hex::encode(random::<8>())
            ),
            tracestate: None,
            deadline_ms: None,
            actor: ActorSlot::default(),
        }
    }

    /// Continues an incoming trace (HTTP or NATS headers), or starts one.
    pub fn continue_from(
        request_id: Option<&str>,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Self {
        let mut ctx = Self::new_root();
        if let Some(id) = request_id.filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic())
        }) {
            ctx.request_id = id.to_owned();
        }
        if let Some(tp) = traceparent.filter(|tp| valid_traceparent(tp)) {
            // Same trace, new span for this hop.
            let trace_id = &tp[3..35];
            ctx.traceparent = format!(
                "00-{trace_id}-{}-{}",
                hex::encode(random::<8>()),
                &tp[53..55]
            );
            ctx.tracestate = tracestate.filter(|s| s.len() <= 512).map(str::to_owned);
        }
        ctx
    }

    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(crate::HEADER_REQUEST_ID, self.request_id.as_str());
        headers.insert(crate::HEADER_TRACEPARENT, self.traceparent.as_str());
        if let Some(state) = &self.tracestate {
            headers.insert(crate::HEADER_TRACESTATE, state.as_str());
        }
        if let Some(actor) = self.actor.get() {
            headers.insert(HEADER_ACTOR, actor.actor.as_str());
            if let Some(network) = &actor.network {
                headers.insert(HEADER_NETWORK, network.as_str());
            }
        }
        headers
    }

    /// Who the request acts for, if anyone said.
    pub fn actor(&self) -> Option<Actor> {
        self.actor.get()
    }

    /// Names who the request acts for (the edge, once it has authenticated
    /// the caller); calls and events made after it carry it.
    pub fn set_actor(&self, actor: &str, network: Option<String>) {
        if header_value_ok(actor) {
            self.actor.set(Actor {
                actor: actor.to_owned(),
                network: network.filter(|n| header_value_ok(n)),
            });
        }
    }

    /// Reads the actor headers of an incoming message (from a peer service).
    pub(crate) fn read_actor(&self, headers: Option<&HeaderMap>) {
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        if let Some(actor) = get(HEADER_ACTOR) {
            self.set_actor(actor, get(HEADER_NETWORK).map(str::to_owned));
        }
    }

    pub fn from_headers(headers: Option<&HeaderMap>) -> Self {
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let mut ctx = Self::continue_from(
            get(crate::HEADER_REQUEST_ID),
            get(crate::HEADER_TRACEPARENT),
            get(crate::HEADER_TRACESTATE),
        );
        ctx.deadline_ms = crate::deadline::parse(headers);
        ctx.read_actor(headers);
        ctx
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// Runs `f` with this context as the current one (for work that does
    /// not wait, such as building an answer).
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

/// The current request's id (a fresh one outside a request), without
/// copying the rest of its context.
pub fn current_request_id() -> String {
    CURRENT
        .try_with(|ctx| ctx.request_id.clone())
        .unwrap_or_else(|_| RequestContext::new_root().request_id)
}

/// The context of the request being handled, if any.
pub fn in_request() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Names who the current request acts for (no-op outside a request).
pub fn set_actor(actor: &str, network: Option<String>) {
    let _ = CURRENT.try_with(|ctx| ctx.set_actor(actor, network));
}

/// The network an address belongs to, as the audit log records it: the
/// `/24` of an IPv4 address, the `/48` of an IPv6 one (a v4-mapped address
/// counts as IPv4).
pub fn network_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(std::net::IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

/// The context of the request being handled, or a fresh root outside one.
pub fn current() -> RequestContext {
    CURRENT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| RequestContext::new_root())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_trace_is_continued_and_garbage_is_replaced() {
        let root = RequestContext::new_root();
        let next =
            RequestContext::continue_from(Some(&root.request_id), Some(&root.traceparent), None);
        assert_eq!(next.trace_id(), root.trace_id());
        assert_ne!(next.traceparent, root.traceparent);
        assert_eq!(next.request_id, root.request_id);
        let fresh = RequestContext::continue_from(Some("bad id with spaces"), Some("00-zz"), None);
        assert_ne!(fresh.request_id, "bad id with spaces");
        assert_eq!(fresh.trace_id().len(), 32);
    }

    #[test]
    fn the_actor_travels_in_headers_and_networks_hide_the_address() {
        let ctx = RequestContext::new_root();
        ctx.set_actor(
            "key_1",
            Some(network_of(
                "203.0.113.77"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            )),
        );
        let headers = ctx.to_headers();
        let next = RequestContext::from_headers(Some(&headers));
        assert_eq!(
            next.actor(),
            Some(Actor {
                actor: "key_1".into(),
                network: Some("203.0.113.0/24".into())
            })
        );
        let v6: std::net::IpAddr = "2001:db8:abcd:12::1"
            .parse()
            .unwrap_or(std::net::IpAddr::from([0u16; 8]));
        assert_eq!(network_of(v6), "2001:db8:abcd::/48");
        ctx.set_actor("bad actor with spaces", None);
        assert_eq!(ctx.actor().map(|a| a.actor), Some("key_1".into()));
    }
}
