//! The single mapping from `ApiError` to the HTTP wire format, and the
//! middleware that gives every request a request id and trace context.

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idm_bus::RequestContext;
use idm_core::ApiError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// An `ApiError` on its way out: `{"error": {code, message, request_id}}`
/// with the code's status.
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = http::StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let details = self
            .0
            .details
            .as_ref()
            .and_then(serde_json::Value::as_object);
        // `details.retry_after` (seconds) on a 429 or a ban also becomes the
        // standard `Retry-After` header. Every 503 carries one: a shed or
        // unavailable dependency is worth retrying shortly, and a client
        // told when backs off instead of hammering.
        let retry_after = details
            .and_then(|d| d.get("retry_after"))
            .and_then(serde_json::Value::as_u64)
            .or((status == http::StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        let request_id = idm_bus::current_request_id();
        let body = serde_json::to_vec(&ErrorEnvelope {
            error: ErrorBody {
                code: self.0.code,
                message: &self.0.message,
                request_id: &request_id,
                details,
            },
        })
        .unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"the error could not be written"}}"#.to_vec()
        });
        let mut response = (
            status,
            [(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        // For the metrics layer's `outcome` label.
        response.extensions_mut().insert(self.0.code);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

/// `{"error": {code, message, request_id, ...details}}`, written from the
/// error itself rather than through a `serde_json::Value` built for each
/// answer (1.5 µs an answer, docs/PERFORMANCE.md "ninth round").
#[derive(serde::Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

/// The fixed fields and the details' own fields in one object, in key
/// order (as a JSON object built from them would have them); a detail
/// named like a fixed field never replaces it.
struct ErrorBody<'a> {
    code: idm_core::ErrorCode,
    message: &'a str,
    request_id: &'a str,
    details: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl serde::Serialize for ErrorBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fixed = [
            ("code", Fixed::Code(self.code)),
            ("message", Fixed::Text(self.message)),
            ("request_id", Fixed::Text(self.request_id)),
        ];
        let mut map = serializer.serialize_map(None)?;
        let mut fixed = fixed.iter().peekable();
        for (key, value) in self.details.into_iter().flatten() {
            while let Some((name, field)) = fixed.next_if(|(name, _)| *name <= key.as_str()) {
                map.serialize_entry(name, field)?;
            }
            if !matches!(key.as_str(), "code" | "message" | "request_id") {
                map.serialize_entry(key, value)?;
            }
        }
        for (name, field) in fixed {
            map.serialize_entry(name, field)?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Fixed<'a> {
    Code(idm_core::ErrorCode),
    Text(&'a str),
}

/// An HTTP surface as the request layer sees it: which service it belongs
/// to, and whose trace context and request id it continues.
#[derive(Clone)]
pub struct Surface {
    service: &'static str,
    believe: Believe,
}

#[derive(Clone)]
enum Believe {
    /// Internal listeners (ops ports, the operator API): only the platform's
    /// own callers and operators reach them.
    Everyone,
    /// The public edge: a client could otherwise pick the trace its
    /// requests land in (or collide with another's) and the request id
    /// support staff search logs by. Only peers this accepts (the trusted
    /// proxies) are believed; everyone else gets a fresh trace and id.
    Peers(Arc<dyn Fn(IpAddr) -> bool + Send + Sync>),
}

impl Surface {
    /// An internal surface of `service`: incoming trace context is continued.
    pub fn internal(service: &'static str) -> Self {
        Self {
            service,
            believe: Believe::Everyone,
        }
    }

    /// A public surface of `service`: incoming `traceparent`, `tracestate`
    /// and `x-request-id` are continued only from a peer `trusted` accepts.
    pub fn public(
        service: &'static str,
        trusted: impl Fn(IpAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            service,
            believe: Believe::Peers(Arc::new(trusted)),
        }
    }

    fn believes(&self, extensions: &http::Extensions) -> bool {
        match &self.believe {
            Believe::Everyone => true,
            Believe::Peers(trusted) => extensions
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|ConnectInfo(peer)| trusted(peer.ip())),
        }
    }
}

/// Probes and scrapes: logged and traced at debug level only, so a
/// Prometheus scrape every few seconds is not a trace of its own.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The request layer every HTTP surface gets (`with_http_layers`): the
/// matched route's [`observe`].
pub async fn request_context(
    State(surface): State<Surface>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched")
        .to_owned();
    observe(&surface, &route, request, |request| next.run(request)).await
}

/// Answers `request` with `handle` inside the request span (the root of
/// this service's part of the trace, or of the whole trace at the edge),
/// continuing or starting the trace in it and scoping the request in its
/// context so bus calls carry it on; records
/// `idm_http_request_duration_seconds{method, route, status, outcome}` and
/// echoes `x-request-id`. `route` is the matched pattern, so ids do not
/// explode labels; the outcome is `ok` or the error code the response
/// carries (see [`HttpError`]). One function rather than a layer each, so a
/// route served outside the router (the edge's verification lane) is
/// observed exactly like the rest.
pub async fn observe<F, Fut>(
    surface: &Surface,
    route: &str,
    request: Request,
    handle: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let started = Instant::now();
    let method = method_label(request.method());
    let name = format!("{method} {route}");
    macro_rules! request_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "http.request",
                otel.kind = "server",
                otel.name = %name,
                otel.status_code = tracing::field::Empty,
                service = surface.service,
                method = %request.method(),
                path = %request.uri().path(),
                http.route = %route,
                http.response.status_code = tracing::field::Empty,
                request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            )
        };
    }
    let span = if is_probe(request.uri().path()) {
        request_span!(tracing::Level::DEBUG)
    } else {
        request_span!(tracing::Level::INFO)
    };
    let ctx = context_in(surface, request.headers(), request.extensions(), &span);
    let request_id = ctx.request_id.clone();
    let mut response = ctx.scope(handle(request)).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let outcome = match response.extensions().get::<idm_core::ErrorCode>() {
        Some(code) => code.as_str(),
        None if status.is_client_error() || status.is_server_error() => "error",
        None => "ok",
    };
    metrics::histogram!(
        idm_core::metric::HTTP_REQUEST_DURATION.name,
        "method" => method,
        "route" => route.to_owned(),
        "status" => status.as_u16().to_string(),
        "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
    echo_request_id(&mut response, &request_id);
    response
}

/// Answers a request refused before any route (the edge's ban gate) with
/// `refusal`, under a request id and trace as [`observe`] gives them, but
/// in a request span at debug level and with no histogram sample: a flood
/// refused this way costs neither a span at the level operators run nor a
/// sample per request (the caller counts its refusals in its own counters).
pub fn refuse_quietly(
    surface: &Surface,
    request: &http::request::Parts,
    refusal: ApiError,
) -> Response {
    let span = tracing::debug_span!(
        "http.request",
        service = surface.service,
        method = %request.method,
        path = %request.uri.path(),
        refused_before_routing = true,
        request_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let ctx = context_in(surface, &request.headers, &request.extensions, &span);
    let request_id = ctx.request_id.clone();
    let mut response = span.in_scope(|| ctx.sync_scope(|| HttpError(refusal).into_response()));
    echo_request_id(&mut response, &request_id);
    response
}

/// The request's context in `span`: continued from the caller when the
/// surface believes it, a fresh trace and request id otherwise.
fn context_in(
    surface: &Surface,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
    span: &tracing::Span,
) -> RequestContext {
    if surface.believes(extensions) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        RequestContext::continue_in(
            span,
            header(REQUEST_ID_HEADER),
            header("traceparent"),
            header("tracestate"),
        )
    } else {
        RequestContext::root_in(span)
    }
}

fn echo_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = http::HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
}

/// The method as a label: the standard ones by name, any other `other`,
/// so made-up methods cannot mint a series each (nor a span name each).
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

impl HttpError {
    /// For middleware that must answer with a plain `Response`.
    pub fn into_response_now(self) -> Response {
        self.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm_core::ErrorCode;

    fn retry_after(error: ApiError) -> Option<String> {
        HttpError(error)
            .into_response()
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    #[test]
    fn every_503_says_when_to_come_back() {
        // A dependency down (NATS, a database): one second unless told otherwise.
        assert_eq!(
            retry_after(ApiError::upstream("the bus is down")).as_deref(),
            Some("1")
        );
        assert_eq!(
            retry_after(ApiError::new(ErrorCode::RegionUnavailable, "weur is down")).as_deref(),
            Some("1")
        );
        let shed = ApiError::new(ErrorCode::Overloaded, "later")
            .with_details(serde_json::json!({ "retry_after": 5 }));
        assert_eq!(retry_after(shed).as_deref(), Some("5"));
        // Other errors carry none.
        assert_eq!(retry_after(ApiError::internal()), None);
        assert_eq!(retry_after(ApiError::not_found("user")), None);
    }

    /// The body written field by field is byte for byte the object built
    /// from the error's fields and its details (sorted keys, the fixed
    /// fields winning over details of the same name), for details before,
    /// between and after the fixed fields, and none.
    #[tokio::test]
    async fn the_error_body_is_the_fields_and_details_in_key_order() -> Result<(), axum::Error> {
        let details = [
            None,
            Some(serde_json::json!({ "retry_after": 5 })),
            Some(serde_json::json!({
                "allowed": ["a"], "code": "spoofed", "field": "email",
                "nested": { "z": 1, "a": 2 }, "request_id": "spoofed", "zone": null,
            })),
        ];
        for details in details {
            let mut error = ApiError::new(ErrorCode::RateLimited, "slow \"down\" ✓");
            if let Some(details) = details.clone() {
                error = error.with_details(details);
            }
            let context = RequestContext::root_in(&tracing::Span::none());
            let request_id = context.request_id.clone();
            let response = context
                .scope(async move { HttpError(error).into_response() })
                .await;
            assert_eq!(
                response.headers().get(http::header::CONTENT_TYPE),
                Some(&http::HeaderValue::from_static("application/json"))
            );
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            let mut expected = serde_json::json!({
                "code": "rate_limited",
                "message": "slow \"down\" ✓",
                "request_id": request_id,
            });
            if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
                (details, expected.as_object_mut())
            {
                for (k, v) in extra {
                    obj.entry(k).or_insert(v);
                }
            }
            let expected = serde_json::json!({ "error": expected }).to_string();
            assert_eq!(String::from_utf8_lossy(&body), expected);
        }
        Ok(())
    }
    fn request_from_a_client(trace_id: &str) -> Request {
        let mut request = Request::new(axum::body::Body::empty());
        let headers = request.headers_mut();
        headers.insert(
            REQUEST_ID_HEADER,
            http::HeaderValue::from_static("req-client"),
        );
        if let Ok(tp) = http::HeaderValue::from_str(&format!("00-{trace_id}-00f067aa0ba902b7-01")) {
            headers.insert("traceparent", tp);
        }
        request
    }

    /// The request id answered and the trace id the handler ran under.
    async fn observed(surface: &Surface, trace_id: &str) -> (String, String) {
        let response = observe(surface, "/r", request_from_a_client(trace_id), |_| async {
            let ctx = idm_bus::current_context();
            let mut response = Response::new(axum::body::Body::empty());
            for (name, value) in [
                ("seen-id", ctx.request_id.as_str()),
                ("seen-trace", ctx.trace_id()),
            ] {
                if let Ok(value) = http::HeaderValue::from_str(value) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        })
        .await;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let answered = header(REQUEST_ID_HEADER);
        assert_eq!(
            header("seen-id"),
            answered,
            "the handler ran under another id"
        );
        (answered, header("seen-trace"))
    }

    /// A caller's request id and trace are continued only when the surface
    /// believes the caller; the handler runs in the request's context, and
    /// the answer names the request id that context carries.
    #[tokio::test]
    async fn only_a_believed_caller_chooses_the_request_id_and_trace() {
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        // No peer address: not a trusted proxy, whatever the surface trusts.
        let public = Surface::public("test", |_| true);
        let (answered, trace) = observed(&public, trace_id).await;
        assert!(answered.starts_with("req_"), "{answered}");
        assert_ne!(trace, trace_id);
        assert_eq!(trace.len(), 32, "{trace}");
        let internal = Surface::internal("test");
        let (answered, trace) = observed(&internal, trace_id).await;
        assert_eq!(answered, "req-client");
        assert_eq!(trace, trace_id);
    }
}
