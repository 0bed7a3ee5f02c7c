//! Captures every log line the in-process platform writes, at debug level
//! and above for every crate (dependencies included, through the same filter
//! the services use, asked to be as verbose as it allows), so tests can
//! assert what never appears in logs. Set `IDM_TEST_LOG=1` to also print them.
//! A test binary may also capture spans (see `spans`); then the one
//! subscriber of the process does both.

use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(data);
        }
        if std::env::var_os("IDM_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn install() {
    install_with(None);
}

/// Installs the process's subscriber (log capture, plus span export to
/// `spans` when given) unless one is installed already; `true` if this call
/// installed it.
pub(crate) fn install_with(spans: Option<&SdkTracerProvider>) -> bool {
    let mut installed = false;
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(Arc::clone(&buffer));
        let logs = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(idm_telemetry::log_filter(
                "debug,sqlx=trace,tokio_postgres=trace",
            ));
        installed = tracing_subscriber::registry()
            .with(logs)
            .with(spans.map(idm_telemetry::otel_layer))
            .try_init()
            .is_ok();
        buffer
    });
    installed
}

/// Everything logged in this process so far.
pub fn captured_logs() -> String {
    BUFFER
        .get()
        .and_then(|b| {
            b.lock()
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default()
}
