//! The global `tracing` subscriber: log lines (text or JSON, `RUST_LOG`
//! levels with the personal-data caps) and, when an OTLP endpoint is
//! configured, OpenTelemetry spans. Each has its own filter, so raising or
//! lowering log verbosity never changes what is traced. Without an endpoint
//! no OpenTelemetry layer is installed at all: spans cost what they cost
//! before.

use crate::otlp::OtlpConfig;
use idm_core::config::ConfigError;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Dependencies that log query parameters or message payloads (personal
/// data, password hashes) at debug level. They are capped at `info` whatever
/// the requested levels say, so raising verbosity cannot leak them.
/// (`sqlx` logs every statement's text at debug; the tests' direct database
/// access still goes through tokio-postgres.)
const NEVER_VERBOSE: &[&str] = &[
    "sqlx",
    "tokio_postgres",
    "postgres_protocol",
    "async_nats",
    "redis",
];

/// `directives` (RUST_LOG syntax) with the personal-data caps applied last,
/// so they win over anything the directives ask for.
pub fn log_filter(directives: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in NEVER_VERBOSE {
        if let Ok(cap) = format!("{target}=info").parse() {
            filter = filter.add_directive(cap);
        }
    }
    filter
}

/// Keeps span export running; dropping it (at the end of `main`) flushes
/// the spans still batched.
#[must_use = "dropping it stops span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "spans still batched were not all exported");
            }
        }
    }
}

/// Installs the global subscriber once per process, for `service`.
/// `RUST_LOG` picks log levels (default `info`), `IDM_LOG_FORMAT=json`
/// gives JSON lines, and the OTLP variables (see [`OtlpConfig::from_env`])
/// turn span export on.
pub fn init_tracing(service: &'static str) -> Result<Telemetry, ConfigError> {
    let filter = log_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let json = std::env::var("IDM_LOG_FORMAT").is_ok_and(|f| f == "json");
    let export = OtlpConfig::from_env(service)?;
    let provider = export.as_ref().map(OtlpConfig::provider).transpose()?;
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_target(true)
            .boxed()
    } else {
        // Colour only on a terminal: escape codes in a log file or a
        // container's log are noise to whoever reads or parses it.
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(provider.as_ref().map(otel_layer))
        .try_init();
    if let Some(export) = &export {
        // Host and port only: a URL may carry credentials.
        let collector = export
            .traces_endpoint
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| {
                let host = uri.host()?.to_owned();
                Some(
                    uri.port_u16()
                        .map_or(host.clone(), |p| format!("{host}:{p}")),
                )
            })
            .unwrap_or_default();
        tracing::info!(
            collector = %collector,
            sample_ratio = export.sample_ratio,
            service_name = %export.service_name,
            "exporting spans over OTLP"
        );
    }
    Ok(Telemetry { provider })
}

/// The OpenTelemetry layer over `provider`: every `info` span of idmesh (the
/// request, bus and delivery spans and the services' instrumented
/// operations) becomes an exported span; dependencies are held to the same
/// caps as logs. Public so the test kit can install it with an in-memory
/// exporter.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("idmesh"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(log_filter("info"))
}
