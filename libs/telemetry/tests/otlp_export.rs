//! The OTLP exporter as configured for production (our HTTP client, the
//! batch processor) delivers spans to a collector: a stand-in collector on
//! a local port receives `POST /v1/traces` with a protobuf body naming the
//! span and the service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;

/// One export request: its content type and body.
type Export = (String, Vec<u8>);

#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<Export>>>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_over_otlp_http() {
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let kind = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.0.lock().unwrap().push((kind, body.to_vec()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = idm_telemetry::otlp::OtlpConfig::from_vars("auth", |var| {
        (var == "IDM_OTEL_EXPORTER_OTLP_ENDPOINT").then(|| format!("http://{addr}"))
    })
    .unwrap()
    .expect("export configured");
    let provider = config.provider().unwrap();
    let subscriber = tracing_subscriber::registry().with(idm_telemetry::otel_layer(&provider));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("bus.handle", otel.name = "auth.sign_in_exported");
        span.in_scope(|| tracing::info!("inside"));
    });
    // Shutting down flushes the batch (on the exporter's own thread).
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();

    let received = received.0.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "one export request");
    let (content_type, body) = &received[0];
    assert_eq!(content_type, "application/x-protobuf");
    let contains = |needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("auth.sign_in_exported"), "the span's name");
    assert!(contains("service.name") && contains("auth"), "the resource");
}
