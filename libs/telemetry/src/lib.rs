//! Logging, metrics and the operational HTTP surface every service shares:
//! `tracing` set-up, a Prometheus recorder, `/healthz`, `/readyz`, `/metrics`,
//! a per-request span and metrics layer, graceful HTTP serving and signals.

pub mod http;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Installs the global `tracing` subscriber once per process. `RUST_LOG`
/// picks levels (default `info`); `IDM_LOG_FORMAT=json` gives JSON lines.
pub fn init_tracing() {
    let filter = log_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
    let json = std::env::var("IDM_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Dependencies that log query parameters or message payloads (personal
/// data, password hashes) at debug level. They are capped at `info` whatever
/// the requested levels say, so raising verbosity cannot leak them.
const NEVER_VERBOSE: &[&str] = &["tokio_postgres", "postgres_protocol", "async_nats", "redis"];

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

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embed several
            // services in one process); the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A readiness probe: `Ok` when the service's own dependencies answer.
pub type ReadinessCheck = idm_core::Probe;

/// Ready when every probe is (checked in order; the first failure is reported).
pub fn all_of(probes: Vec<idm_core::Probe>) -> ReadinessCheck {
    Arc::new(move || {
        let probes = probes.clone();
        Box::pin(async move {
            for probe in probes {
                probe().await?;
            }
            Ok(())
        })
    })
}

/// Readiness: Redis answers `PING`.
pub fn redis_probe(redis: redis::aio::ConnectionManager) -> idm_core::Probe {
    probe(move || {
        let mut redis = redis.clone();
        async move {
            redis::cmd("PING")
                .query_async::<String>(&mut redis)
                .await
                .map(drop)
                .map_err(|e| format!("redis: {e}"))
        }
    })
}

/// A probe from an async closure (for dependencies without their own).
pub fn probe<F, Fut>(check: F) -> idm_core::Probe
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

/// `/healthz` (the process is alive), `/readyz` (dependencies answer) and
/// `/metrics` (Prometheus text).
pub fn ops_routes(ready: ReadinessCheck) -> Router {
    let handle = metrics_handle();
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    match ready().await {
                        Ok(()) => (
                            ::http::StatusCode::OK,
                            axum::Json(serde_json::json!({"status": "ready"})),
                        ),
                        Err(reason) => (
                            ::http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(
                                serde_json::json!({"status": "not_ready", "reason": reason}),
                            ),
                        ),
                    }
                }
            }),
        )
        .route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Records `idm_http_requests_seconds{method, route, status}` for every
/// request. The route is the matched pattern, so ids do not explode labels.
pub async fn http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    metrics::histogram!(
        "idm_http_requests_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response.into_response()
}

/// Binds `addr` (port 0 picks a free port) and serves `router` until
/// `shutdown`, finishing in-flight requests. Returns the bound address.
pub async fn serve_http(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "HTTP server stopped with an error");
        }
    });
    Ok((bound, handle))
}

/// A token cancelled on SIGTERM or Ctrl-C, for `main`.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        trigger.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    token
}

/// A started service: where its HTTP listener is bound, and the tasks that
/// finish once shutdown has drained them.
pub struct Running {
    pub http_addr: SocketAddr,
    /// A second, internal listener (edge-guard's ops port), when there is one.
    pub ops_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn new(http_addr: SocketAddr, tasks: Vec<tokio::task::JoinHandle<()>>) -> Self {
        Self {
            http_addr,
            ops_addr: None,
            tasks,
        }
    }

    pub fn with_ops_addr(mut self, addr: SocketAddr) -> Self {
        self.ops_addr = Some(addr);
        self
    }

    /// Waits until every task has stopped (after the shutdown token fires).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// `ops_routes` plus the request span and metrics layers, for services whose
/// only HTTP surface is operational.
pub fn ops_router(ready: ReadinessCheck) -> Router {
    with_http_layers(ops_routes(ready))
}

/// The layers every HTTP surface gets: a span per request and metrics.
pub fn with_http_layers(router: Router) -> Router {
    router
        .layer(axum::middleware::from_fn(http_metrics))
        .layer(axum::middleware::from_fn(http::request_context))
}
