//! Span export over OTLP HTTP/protobuf, when an endpoint is configured.
//!
//! Why HTTP/protobuf and not gRPC: the gRPC exporter brings `tonic` and `h2`
//! (a large compile on a 2-core builder) for no gain at our span volumes;
//! every collector (OpenTelemetry Collector, Jaeger, Tempo) accepts OTLP on
//! HTTP (port 4318). Why our own HTTP client: the exporter's built-in ones
//! are reqwest 0.13 (a second reqwest and TLS stack next to the workspace's)
//! or hyper with HTTP/2 (`h2` again); hyper-util's HTTP/1 client with
//! rustls is already in the tree, and 40 lines here drive it.
//!
//! Spans are batched on the SDK's own exporter thread, never on the
//! service's runtime; the client runs a small current-thread runtime on that
//! thread, so a slow collector can delay only span export, never a request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use idm_core::config::ConfigError;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::OnceLock;
use std::time::Duration;

/// Where and how much to export, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The collector's traces URL (`…/v1/traces`).
    pub traces_endpoint: String,
    /// Share of new traces recorded (0.0–1.0); a trace continued from a
    /// caller follows the caller's decision.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A collector's answer is a small status message; anything larger is refused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

fn invalid(var: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_owned(),
        reason: reason.to_string(),
    }
}

impl OtlpConfig {
    /// `None` (export off) unless an endpoint is set:
    /// `IDM_OTEL_EXPORTER_OTLP_ENDPOINT`, else the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL, to which
    /// `/v1/traces` is appended, as the specification says).
    pub fn from_env(service: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_vars(service, |var| std::env::var(var).ok())
    }

    /// [`OtlpConfig::from_env`] with the variables `lookup` gives.
    pub fn from_vars(
        service: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let non_empty = |var: &str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (var.to_owned(), v))
        };
        let endpoint = match non_empty("IDM_OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some((var, base)) => Some((var, traces_url(&base))),
            None => match non_empty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(full) => Some(full),
                None => non_empty("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .map(|(var, base)| (var, traces_url(&base))),
            },
        };
        let Some((var, traces_endpoint)) = endpoint else {
            return Ok(None);
        };
        let parsed: http::Uri = traces_endpoint
            .parse()
            .map_err(|e| invalid(&var, format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(invalid(
                &var,
                "must be an http:// or https:// URL with a host (OTLP over HTTP, port 4318)",
            ));
        }
        let sample_ratio = match non_empty("IDM_OTEL_SAMPLE_RATIO") {
            None => 1.0,
            Some((var, raw)) => raw
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| invalid(&var, "a number from 0 to 1"))?,
        };
        let service_name = non_empty("OTEL_SERVICE_NAME")
            .map(|(_, name)| name)
            .unwrap_or_else(|| service.to_owned());
        Ok(Some(Self {
            traces_endpoint,
            sample_ratio,
            service_name,
        }))
    }

    /// A tracer provider batching spans to the collector.
    pub fn provider(&self) -> Result<SdkTracerProvider, ConfigError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient::new(
                self.traces_endpoint.starts_with("https:"),
            )?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(self.traces_endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| invalid("IDM_OTEL_EXPORTER_OTLP_ENDPOINT", e.to_string()))?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                self.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(self.service_name.clone())
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build())
    }
}

fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// hyper-util's HTTP/1 client over rustls (the system's roots), driven by a
/// current-thread runtime created on first use on the exporter's thread.
#[derive(Debug)]
struct ExportClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl ExportClient {
    /// The system's CA certificates are required for an `https` collector
    /// only; a plain-HTTP one (a local agent) works without any.
    fn new(https: bool) -> Result<Self, ConfigError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(std::sync::Arc::clone(&provider))
        {
            Ok(builder) => builder,
            Err(e) if https => return Err(invalid("OTLP exporter CA certificates", e)),
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| invalid("OTLP exporter TLS", e))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(Self {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            runtime: OnceLock::new(),
        })
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, HttpError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(self.runtime.get_or_init(|| runtime))
    }

    async fn exchange(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // The batch processor calls this on its own thread; a runtime cannot
        // be blocked on from inside another one.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err("the OTLP client runs on the span exporter's thread only".into());
        }
        self.runtime()?.block_on(async {
            tokio::time::timeout(EXPORT_TIMEOUT, self.exchange(request))
                .await
                .map_err(|_| HttpError::from("the collector did not answer in time"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, ConfigError> {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpConfig::from_vars("auth", |var| vars.get(var).cloned())
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() -> Result<(), ConfigError> {
        assert_eq!(config(&[])?, None);
        assert_eq!(config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])?, None);
        assert_eq!(config(&[("IDM_OTEL_SAMPLE_RATIO", "0.5")])?, None);
        Ok(())
    }

    #[test]
    fn idm_endpoint_wins_and_the_standard_variables_are_honoured() -> Result<(), ConfigError> {
        let both = config(&[
            ("IDM_OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4318"),
        ])?;
        assert_eq!(
            both.map(|c| (c.traces_endpoint, c.sample_ratio, c.service_name)),
            Some(("http://collector:4318/v1/traces".into(), 1.0, "auth".into()))
        );
        let standard = config(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://otel.example/custom/path",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4318"),
            ("OTEL_SERVICE_NAME", "auth-eu"),
            ("IDM_OTEL_SAMPLE_RATIO", "0.25"),
        ])?;
        assert_eq!(
            standard.map(|c| (c.traces_endpoint, c.sample_ratio, c.service_name)),
            Some((
                "https://otel.example/custom/path".into(),
                0.25,
                "auth-eu".into()
            ))
        );
        Ok(())
    }

    #[test]
    fn bad_endpoints_and_ratios_name_their_variable() {
        let var_of = |e: ConfigError| match e {
            ConfigError::Invalid { var, .. } | ConfigError::Missing(var) => var,
        };
        for vars in [
            vec![("IDM_OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4318")],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://jaeger:4317")],
        ] {
            let expected = vars[0].0;
            assert_eq!(config(&vars).err().map(var_of).as_deref(), Some(expected));
        }
        for ratio in ["1.5", "-0.1", "half"] {
            let vars = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
                ("IDM_OTEL_SAMPLE_RATIO", ratio),
            ];
            assert_eq!(
                config(&vars).err().map(var_of).as_deref(),
                Some("IDM_OTEL_SAMPLE_RATIO")
            );
        }
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_once() {
        assert_eq!(
            traces_url("http://jaeger:4318"),
            "http://jaeger:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://jaeger:4318/"),
            "http://jaeger:4318/v1/traces"
        );
    }
}
