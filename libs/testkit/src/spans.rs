//! The spans the in-process platform creates, exported to memory through the
//! same OpenTelemetry layer the services use in production (only the
//! exporter differs), so tests can follow one request across every service.
//!
//! The process has one subscriber: a test binary that captures spans calls
//! [`capture_spans`] before it starts any platform. Tests running in
//! parallel share the capture; each picks its own trace by id.

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The exporter and its provider (kept alive for the whole process), or why
/// capture could not be installed.
static CAPTURE: OnceLock<Result<(InMemorySpanExporter, SdkTracerProvider), String>> =
    OnceLock::new();

/// One finished span, as the exporter received it.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    /// The OpenTelemetry name (`otel.name` when the span sets one).
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for the root of a trace.
    pub parent_span_id: Option<String>,
    /// The parent came from another process's (or service's) headers.
    pub parent_is_remote: bool,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    pub attributes: BTreeMap<String, String>,
}

impl CapturedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Handle on the process's span capture.
#[derive(Clone)]
pub struct Spans {
    exporter: InMemorySpanExporter,
}

/// Starts capturing spans for this process (idempotent). Fails when the test
/// kit's log capture was installed first (a platform was started before).
pub fn capture_spans() -> anyhow::Result<Spans> {
    let capture = CAPTURE.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        if crate::logs::install_with(Some(&provider)) {
            Ok((exporter, provider))
        } else {
            Err("capture_spans() must run before the first Platform::start of the process".into())
        }
    });
    match capture {
        Ok((exporter, _)) => Ok(Spans {
            exporter: exporter.clone(),
        }),
        Err(why) => anyhow::bail!("{why}"),
    }
}

fn kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

impl Spans {
    /// Every span finished so far in this process.
    pub fn all(&self) -> anyhow::Result<Vec<CapturedSpan>> {
        let spans = self
            .exporter
            .get_finished_spans()
            .map_err(|e| anyhow::anyhow!("reading captured spans: {e}"))?;
        Ok(spans
            .into_iter()
            .map(|span| CapturedSpan {
                name: span.name.into_owned(),
                trace_id: span.span_context.trace_id().to_string(),
                span_id: span.span_context.span_id().to_string(),
                parent_span_id: (span.parent_span_id != SpanId::INVALID)
                    .then(|| span.parent_span_id.to_string()),
                parent_is_remote: span.parent_span_is_remote,
                kind: kind(&span.span_kind),
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect(),
            })
            .collect())
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> anyhow::Result<Vec<CapturedSpan>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect())
    }

    /// Waits (up to `patience`) until `ready` holds for the captured spans;
    /// spans end a moment after the response that ends their request.
    pub async fn wait_for(
        &self,
        patience: std::time::Duration,
        ready: impl Fn(&[CapturedSpan]) -> bool,
    ) -> anyhow::Result<Vec<CapturedSpan>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let spans = self.all()?;
            if ready(&spans) || tokio::time::Instant::now() >= deadline {
                return Ok(spans);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
