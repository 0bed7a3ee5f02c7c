//! Captures every log line the in-process platform writes, at debug level
//! and above for every crate (dependencies included, through the same filter
//! the services use, asked to be as verbose as it allows), so tests can
//! assert what never appears in logs. Set `IDM_TEST_LOG=1` to also print them.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

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
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(Arc::clone(&buffer));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(idm_telemetry::log_filter("debug,tokio_postgres=trace"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
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
