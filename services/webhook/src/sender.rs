//! One HTTP attempt: hyper-util's HTTP/1 client over rustls (the system's
//! roots), whose resolver is the SSRF guard's ([`crate::ssrf`]). Redirects
//! are never followed (the client does not), the connect and the whole
//! attempt have time limits, and at most `max_response_bytes` of an answer
//! are read.

use crate::config::Delivery;
use crate::ssrf::{Guard, GuardedResolver, Refused};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::time::{Duration, Instant};

/// The excerpt of an answer kept with an attempt.
const EXCERPT_BYTES: usize = 1024;

#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    guard: Guard,
    timeout: Duration,
    max_response_bytes: usize,
}

/// What came of one attempt.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency: Duration,
    pub excerpt: Option<String>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

impl Sender {
    pub fn new(guard: Guard, delivery: &Delivery) -> Self {
        let mut http = HttpConnector::new_with_resolver(guard.resolver());
        http.enforce_http(false);
        http.set_connect_timeout(Some(delivery.connect_timeout));
        http.set_nodelay(true);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(std::sync::Arc::clone(&provider))
        {
            Ok(builder) => builder,
            Err(e) => {
                tracing::warn!(error = %e, "no system CA certificates: https endpoints will fail");
                let empty = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    })
                    .unwrap_or_else(|_| {
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    });
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(delivery.endpoint_concurrency.max(1))
            .build(connector);
        Self {
            client,
            guard,
            timeout: delivery.timeout,
            max_response_bytes: delivery.max_response_bytes,
        }
    }

    /// POSTs `body` to `url` with `headers`; never fails, it tells.
    pub async fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome {
            status: None,
            error: Some(error),
            latency: started.elapsed(),
            excerpt: None,
        };
        // The URL is checked again: the operator's settings may have changed
        // since it was stored, and an IP literal never reaches the resolver.
        let url = match self.guard.check_url(url) {
            Ok(url) => url,
            Err(e) => return failed(format!("{}: {}", e.code.info().name, e.message)),
        };
        let uri: http::Uri = match url.as_str().parse() {
            Ok(uri) => uri,
            Err(e) => return failed(format!("invalid url: {e}")),
        };
        let mut request = http::Request::builder().method(http::Method::POST).uri(uri);
        request = request
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "idmesh-webhooks/1");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(e) => return failed(format!("request not built: {e}")),
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(describe)?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut read: Vec<u8> = Vec::new();
            let mut cut = false;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    let room = self.max_response_bytes.saturating_sub(read.len());
                    read.extend_from_slice(&data[..data.len().min(room)]);
                    if data.len() > room {
                        // Past the cap the connection is dropped unread.
                        cut = true;
                        break;
                    }
                }
            }
            Ok::<_, String>((status, read, cut))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => failed(format!(
                "no complete answer within {} ms",
                self.timeout.as_millis()
            )),
            Ok(Err(e)) => failed(e),
            Ok(Ok((status, read, cut))) => {
                let mut excerpt =
                    String::from_utf8_lossy(&read[..read.len().min(EXCERPT_BYTES)]).into_owned();
                if cut {
                    excerpt.push_str(" [answer cut at the size limit]");
                }
                Outcome {
                    status: Some(status),
                    error: (!(200..300).contains(&status))
                        .then(|| format!("the endpoint answered {status}")),
                    latency: started.elapsed(),
                    excerpt: (!excerpt.is_empty()).then_some(excerpt),
                }
            }
        }
    }
}

/// The error of a failed exchange in words, naming an SSRF refusal.
fn describe(error: hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        source = e.source();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    if error.is_connect() {
        format!("connection failed: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sender(allowed: &[&str]) -> Sender {
        let guard = Guard {
            allowed_networks: Arc::new(allowed.iter().filter_map(|n| n.parse().ok()).collect()),
            allow_http: true,
        };
        let delivery = Delivery {
            timeout: Duration::from_millis(800),
            max_response_bytes: 4096,
            ..Delivery::default()
        };
        Sender::new(guard, &delivery)
    }

    /// A receiver answering a redirect, a huge body, or hanging.
    async fn receiver() -> std::net::SocketAddr {
        use axum::routing::post;
        let app = axum::Router::new()
            .route(
                "/redirect",
                post(|| async {
                    (
                        http::StatusCode::TEMPORARY_REDIRECT,
                        [(http::header::LOCATION, "http://169.254.169.254/latest")],
                    )
                }),
            )
            .route("/huge", post(|| async { "x".repeat(1024 * 1024) }))
            .route(
                "/hang",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else {
            return std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        };
        let addr = listener
            .local_addr()
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    #[tokio::test]
    async fn redirects_are_not_followed_answers_are_capped_and_time_is_bounded() {
        let addr = receiver().await;
        let s = sender(&["127.0.0.0/8"]);
        let redirect = s
            .post(&format!("http://{addr}/redirect"), vec![], Bytes::new())
            .await;
        assert_eq!(redirect.status, Some(307));
        assert!(!redirect.succeeded());
        let huge = s
            .post(&format!("http://{addr}/huge"), vec![], Bytes::new())
            .await;
        assert_eq!(huge.status, Some(200));
        assert!(huge
            .excerpt
            .as_deref()
            .is_some_and(|e| e.len() < 2048 && e.ends_with("[answer cut at the size limit]")));
        let hang = s
            .post(&format!("http://{addr}/hang"), vec![], Bytes::new())
            .await;
        assert!(hang.latency < Duration::from_secs(3));
        assert!(hang
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no complete answer")));
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_at_delivery_by_literal_and_by_name() {
        let addr = receiver().await;
        // No allowlist: loopback is refused, as an IP literal (checked
        // before the request) and as a name (checked by the resolver the
        // connection uses).
        let s = sender(&[]);
        let literal = s
            .post(&format!("http://{addr}/huge"), vec![], Bytes::new())
            .await;
        assert_eq!(literal.status, None);
        assert!(literal
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("ssrf_refused")));
        let mut resolver = s.guard.resolver();
        let name: hyper_util::client::legacy::connect::dns::Name = match "localhost".parse() {
            Ok(name) => name,
            Err(_) => return,
        };
        let resolved = tower_service::Service::call(&mut resolver, name).await;
        let refused = resolved.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.starts_with("ssrf_refused"), "{refused}");
        // A public name's answer is checked the same way and passes.
        let ok = sender(&["127.0.0.0/8"]);
        let mut resolver = ok.guard.resolver();
        if let Ok(name) = "localhost".parse() {
            let addrs: Vec<_> = tower_service::Service::call(&mut resolver, name)
                .await
                .map(|a| a.collect())
                .unwrap_or_default();
            assert!(addrs
                .iter()
                .all(|a: &std::net::SocketAddr| a.ip().is_loopback()));
        }
    }
}
