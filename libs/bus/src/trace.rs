//! OpenTelemetry spans across NATS. A hop's span (an HTTP request at the
//! edge, a bus request being handled, a queued mail being delivered) becomes
//! the child of the caller's span named by the incoming `traceparent`, and
//! everything sent while it runs names the current span as its parent, so a
//! sign-in is one trace across every service it touches.
//!
//! Without an OpenTelemetry layer (export not configured) the OpenTelemetry
//! calls here find no layer and do nothing; the W3C context is then carried
//! exactly as [`RequestContext`] always did (same trace id, a fresh span id
//! per hop), so logs still correlate.

use crate::context::{valid_traceparent, RequestContext};
use async_nats::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The caller's span that a W3C `traceparent` (with its `tracestate`)
/// names, as a remote parent; `None` when it is missing or malformed.
pub fn remote_parent(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<opentelemetry::Context> {
    let value = traceparent.filter(|tp| valid_traceparent(tp))?;
    let trace_id = TraceId::from_hex(value.get(3..35)?).ok()?;
    let span_id = SpanId::from_hex(value.get(36..52)?).ok()?;
    let flags = u8::from_str_radix(value.get(53..55)?, 16).ok()?;
    let state = tracestate
        .filter(|s| s.len() <= 512)
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let parent = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    parent
        .is_valid()
        .then(|| opentelemetry::Context::new().with_remote_span_context(parent))
}

/// `span`'s own `traceparent` and `tracestate`, when an OpenTelemetry layer
/// records it (sampled or not: an unsampled span still has ids, and its
/// flags tell the next hop not to record either).
pub fn traceparent_of(span: &tracing::Span) -> Option<(String, Option<String>)> {
    let context = span.context();
    let otel = context.span();
    let own = otel.span_context();
    if !own.is_valid() {
        return None;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        own.trace_id(),
        own.span_id(),
        own.trace_flags().to_u8()
    );
    let state = own.trace_state().header();
    Some((traceparent, (!state.is_empty()).then_some(state)))
}

impl RequestContext {
    /// [`RequestContext::continue_from`] for the hop whose span is `span`
    /// (just created, not yet entered): the span's parent becomes the
    /// caller's span named by `traceparent`, and the returned context names
    /// `span`, so its trace id is the one the exporter sees.
    pub fn continue_in(
        span: &tracing::Span,
        request_id: Option<&str>,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Self {
        let mut ctx = Self::continue_from(request_id, traceparent, tracestate);
        if let Some(parent) = remote_parent(traceparent, tracestate) {
            // Fails only without a layer (nothing to do) or on a span
            // already started (a bug that a test of the parent links shows).
            let _ = span.set_parent(parent);
        }
        if let Some((own, state)) = traceparent_of(span) {
            ctx.traceparent = own;
            ctx.tracestate = state.or(ctx.tracestate);
        }
        record_ids(span, &ctx);
        ctx
    }

    /// [`RequestContext::continue_in`] from NATS headers.
    pub fn from_headers_in(span: &tracing::Span, headers: Option<&HeaderMap>) -> Self {
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let mut ctx = Self::continue_in(
            span,
            get(crate::HEADER_REQUEST_ID),
            get(crate::HEADER_TRACEPARENT),
            get(crate::HEADER_TRACESTATE),
        );
        ctx.deadline_ms = crate::deadline::parse(headers);
        ctx.read_actor(headers);
        ctx
    }

    /// A fresh trace rooted at `span`: what the edge does with a request
    /// whose trace and request id it does not believe.
    pub fn root_in(span: &tracing::Span) -> Self {
        Self::continue_in(span, None, None, None)
    }
}

/// Fills the `request_id` and `trace_id` fields a hop's span declares
/// (`tracing::field::Empty` until the context is known).
fn record_ids(span: &tracing::Span, ctx: &RequestContext) {
    span.record("request_id", ctx.request_id.as_str());
    span.record("trace_id", ctx.trace_id());
}

/// Headers for a message sent now (a request, an event, a queued job): the
/// current request id, and trace context naming the current span as parent.
pub fn outgoing_headers() -> HeaderMap {
    let mut ctx = crate::context::current();
    if let Some((own, state)) = traceparent_of(&tracing::Span::current()) {
        ctx.traceparent = own;
        ctx.tracestate = state.or(ctx.tracestate);
    }
    ctx.to_headers()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_names_a_remote_sampled_parent() {
        let parent = remote_parent(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("vendor=abc"),
        );
        let parent = parent.as_ref().map(|cx| cx.span().span_context().clone());
        let parent = parent.unwrap_or(SpanContext::NONE);
        assert!(parent.is_remote() && parent.is_sampled());
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(parent.trace_state().header(), "vendor=abc");
    }

    #[test]
    fn malformed_or_zero_ids_name_no_parent() {
        for bad in [
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert!(remote_parent(Some(bad), None).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_an_opentelemetry_layer_the_context_is_carried_as_before() {
        let span = tracing::info_span!(
            "hop",
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty
        );
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = RequestContext::continue_in(&span, Some("req-1"), Some(incoming), None);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.request_id, "req-1");
        assert!(traceparent_of(&span).is_none());
    }
}
