//! Per-request context carried across services in NATS headers: the request
//! id and W3C trace context. Held in a task-local so calls made while
//! handling a request inherit it without threading it through every function.

use async_nats::HeaderMap;

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: String,
    pub tracestate: Option<String>,
    /// When the caller stops waiting (unix ms, see [`crate::deadline`]);
    /// calls made while handling the request inherit it.
    pub deadline_ms: Option<u64>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
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
            request_id: format!("req_{}", hex(&random::<12>())),
            traceparent: format!("00-{}-{}-01", hex(&random::<16>()), hex(&random::<8>())),
            tracestate: None,
            deadline_ms: None,
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
            ctx.traceparent = format!("00-{trace_id}-{}-{}", hex(&random::<8>()), &tp[53..55]);
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
        headers
    }

    pub fn from_headers(headers: Option<&HeaderMap>) -> Self {
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let mut ctx = Self::continue_from(
            get(crate::HEADER_REQUEST_ID),
            get(crate::HEADER_TRACEPARENT),
            get(crate::HEADER_TRACESTATE),
        );
        ctx.deadline_ms = crate::deadline::parse(headers);
        ctx
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
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
}
