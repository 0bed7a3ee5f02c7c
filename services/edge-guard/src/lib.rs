//! edge-guard: the only public ingress. Authenticates API keys (checksum,
//! then a cached hash lookup), checks origins for restricted keys and scopes
//! for secret keys, verifies session tokens statelessly, then forwards each
//! call over NATS and maps the reply to HTTP.

mod access;
mod client_ip;
mod config;
mod error;
mod key_cache;
mod routes;
mod session_keys;

pub use config::Config;
pub use error::Error;

use futures::StreamExt;
use idm_bus::Bus;
use idm_core::proto::account::ConfigChanged;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct App {
    pub bus: Bus,
    pub config: Config,
    pub keys: key_cache::KeyCache,
    pub sessions: session_keys::SessionKeys,
}

/// Applies `config.changed` broadcasts; every replica hears every one.
async fn listen_for_changes(
    app: Arc<App>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let subject = app.bus.broadcast_subject("config.changed", "*");
    let mut changes = app
        .bus
        .client()
        .subscribe(subject)
        .await
        .map_err(|e| Error::Subscribe(e.to_string()))?;
    app.bus.flush().await;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = changes.next() => match next { Some(m) => m, None => break },
            };
            match serde_json::from_slice::<ConfigChanged>(&message.payload) {
                Ok(change) => {
                    app.keys.apply(&change).await;
                    app.sessions.forget(&change.issuer_id).await;
                    tracing::debug!(issuer = %change.issuer_id, "cached configuration dropped");
                }
                Err(e) => tracing::warn!(error = %e, "ignored a malformed config.changed message"),
            }
        }
    }))
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let bus = Bus::connect(
        &config.basics.nats_url,
        &config.basics.subject_prefix,
        config.basics.request_timeout,
        "edge-guard",
    )
    .await?;
    let app = Arc::new(App {
        keys: key_cache::KeyCache::new(
            bus.clone(),
            config.key_cache_ttl,
            config.key_cache_capacity,
        ),
        sessions: session_keys::SessionKeys::new(bus.clone()),
        bus: bus.clone(),
        config: config.clone(),
    });
    let listener = listen_for_changes(Arc::clone(&app), shutdown.clone()).await?;

    let ready: idm_telemetry::ReadinessCheck = Arc::new(move || {
        let connected = bus.is_connected();
        Box::pin(async move {
            if connected {
                Ok(())
            } else {
                Err("NATS is not connected".into())
            }
        })
    });
    let probes = idm_telemetry::ops_routes(Arc::clone(&ready))
        .route_layer(axum::middleware::from_fn(strip_metrics));
    let public = routes::router(app)
        .merge(probes)
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes));
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::with_http_layers(public),
        shutdown.clone(),
    )
    .await?;
    let (ops_addr, ops) =
        idm_telemetry::serve_http(config.ops_addr, idm_telemetry::ops_router(ready), shutdown)
            .await?;
    tracing::info!(%http_addr, %ops_addr, "edge-guard started");
    Ok(Running::new(http_addr, vec![listener, http, ops]))
}

/// `/metrics` is served on the internal ops port only, never publicly.
async fn strip_metrics(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path() == "/metrics" {
        return idm_telemetry::http::HttpError(idm_core::ApiError::not_found("route"))
            .into_response_now();
    }
    next.run(request).await
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
