//! The process-wide Prometheus recorder: real histogram buckets for every
//! latency, `# HELP` for every family of the catalog
//! (`idm_core::metric`), process metrics (CPU, memory, open files) and the
//! build-info gauge, refreshed when `/metrics` is scraped.

use idm_core::metric::{self, Kind};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Bucket upper bounds (seconds) of every histogram: 0.5 ms (a cached
/// lookup) to 10 s (beyond the bus time-out), dense where the edge's
/// latency objectives sit (10 ms – 1 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The git commit the binary was built from: `IDM_GIT_COMMIT` at build time
/// (the Dockerfile passes it), else `unknown`. Read at compile time rather
/// than by a build script, so local builds are not rebuilt on every commit.
pub const GIT_COMMIT: &str = match option_env!("IDM_GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets(LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests embed several
        // services in one process); the handle still renders ours.
        let _ = metrics::set_global_recorder(recorder);
        describe_catalog();
        let process = metrics_process::Collector::default();
        process.describe();
        Exporter { handle, process }
    })
}

fn describe_catalog() {
    for m in metric::ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    exporter().handle.clone()
}

/// The Prometheus text of this process, with the scrape-time gauges
/// (pools, process) brought up to date first.
pub fn render() -> String {
    let exporter = exporter();
    metric::run_scrape_hooks();
    exporter.process.collect();
    exporter.handle.render()
}

/// `idm_build_info{service, version, commit} 1`.
pub fn record_build_info(service: &'static str) {
    exporter();
    metrics::gauge!(
        metric::BUILD_INFO.name,
        "service" => service,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => GIT_COMMIT
    )
    .set(1.0);
}
