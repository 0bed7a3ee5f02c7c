//! Logging, traces, metrics and the operational HTTP surface every service
//! shares: `tracing` set-up with optional OTLP span export, a Prometheus
//! recorder, `/healthz`, `/readyz`, `/metrics`, a per-request span and
//! metrics layer, graceful HTTP serving and signals.

pub mod http;
mod logging;
pub mod otlp;
mod prometheus;

pub use http::Surface;
pub use logging::{init_tracing, log_filter, otel_layer, Telemetry};
pub use prometheus::{
    metrics_handle, record_build_info, render as render_metrics, LATENCY_BUCKETS,
};

use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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
pub fn redis_probe<C>(redis: C) -> idm_core::Probe
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
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
/// `/metrics` (Prometheus text) of `service`.
pub fn ops_routes(service: &'static str, ready: ReadinessCheck) -> Router {
    record_build_info(service);
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
        .route("/metrics", get(|| std::future::ready(prometheus::render())))
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
    /// The service's long-lived tasks (serving loops, listeners, consumers),
    /// each named for the error that says which one ended.
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

/// A task of a running service ended (or panicked) while nobody had asked
/// the service to stop: a bus subscription closed for good, an HTTP server
/// that failed. The service cannot do its job any more, so `run` returns
/// this and `main` exits non-zero (the orchestrator restarts it) rather
/// than staying up with a green `/readyz`.
#[derive(Debug, thiserror::Error)]
#[error("the service's {task} task {how} before shutdown was requested")]
pub struct Stopped {
    pub task: &'static str,
    pub how: &'static str,
}

impl Running {
    pub fn new(
        http_addr: SocketAddr,
        tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    ) -> Self {
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

    /// Waits until every task has stopped. After `shutdown` fires that is a
    /// graceful stop (`Ok`). A task that ends before it fires is an error:
    /// `shutdown` is then cancelled so the other tasks drain as on SIGTERM,
    /// and once they have, the first such task is named in the `Err`.
    pub async fn wait(self, shutdown: &CancellationToken) -> Result<(), Stopped> {
        use futures::StreamExt;
        let mut tasks: futures::stream::FuturesUnordered<_> = self
            .tasks
            .into_iter()
            .map(|(task, handle)| async move { (task, handle.await) })
            .collect();
        let mut first = None;
        while let Some((task, ended)) = tasks.next().await {
            let how = match ended {
                Err(e) if e.is_panic() => "panicked",
                _ if shutdown.is_cancelled() => continue,
                Err(_) => "was cancelled",
                Ok(()) => "ended",
            };
            tracing::error!(
                task,
                how,
                "a service task stopped unexpectedly; shutting down"
            );
            shutdown.cancel();
            first.get_or_insert(Stopped { task, how });
        }
        first.map_or(Ok(()), Err)
    }
}

/// `ops_routes` plus the request span and metrics layers, for services whose
/// only HTTP surface is operational.
pub fn ops_router(service: &'static str, ready: ReadinessCheck) -> Router {
    with_http_layers(ops_routes(service, ready), Surface::internal(service))
}

/// The layers every HTTP surface gets: a span per request (continuing the
/// caller's trace when `surface` believes it) and metrics.
pub fn with_http_layers(router: Router, surface: Surface) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        surface,
        http::request_context,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a client would try it: requests with made-up methods over a real
    /// connection, then the histogram's series in `/metrics`' text.
    #[tokio::test]
    async fn made_up_methods_do_not_mint_series() -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = metrics_handle();
        let router = with_http_layers(
            Router::new().route("/made-up-methods", get(|| async { "ok" })),
            Surface::public("test", |_| false),
        );
        let (addr, _server) =
            serve_http(([127, 0, 0, 1], 0).into(), router, CancellationToken::new()).await?;
        for method in ["GET", "FOOBAR1", "FOOBAR2", "FOOBAR3"] {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream
                .write_all(
                    format!("{method} /made-up-methods HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
        }
        let text = crate::prometheus::render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("route=\"/made-up-methods\"") && l.contains("_count"))
            .collect();
        assert!(
            series.iter().any(|l| l.contains("method=\"GET\"")),
            "{series:?}"
        );
        assert!(
            series.iter().any(|l| l.contains("method=\"other\"")),
            "{series:?}"
        );
        assert!(!text.contains("FOOBAR"), "{series:?}");
        Ok(())
    }

    #[test]
    fn a_made_up_method_is_one_series() -> Result<(), ::http::method::InvalidMethod> {
        assert_eq!(http::method_label(&::http::Method::POST), "POST");
        for made_up in ["FOO", "BAR1", "BAR2"] {
            let method = ::http::Method::from_bytes(made_up.as_bytes())?;
            assert_eq!(http::method_label(&method), "other");
        }
        Ok(())
    }
}
