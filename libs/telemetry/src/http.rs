//! The single mapping from `ApiError` to the HTTP wire format, and the
//! middleware that gives every request a request id and trace context.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idm_bus::RequestContext;
use idm_core::ApiError;
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
        // `details.retry_after` (seconds) on a 429 or a ban also becomes the
        // standard `Retry-After` header.
        let retry_after = self
            .0
            .details
            .as_ref()
            .and_then(|d| d.get("retry_after"))
            .and_then(serde_json::Value::as_u64);
        let mut error = serde_json::json!({
            "code": self.0.code,
            "message": self.0.message,
            "request_id": idm_bus::current_context().request_id,
        });
        if let (Some(details), Some(obj)) = (self.0.details, error.as_object_mut()) {
            if let Some(extra) = details.as_object() {
                for (k, v) in extra {
                    obj.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        let mut response =
            (status, axum::Json(serde_json::json!({ "error": error }))).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}

/// Continues (or starts) the trace, scopes the request in it so bus calls
/// carry it on, opens the request span and echoes `x-request-id`.
pub async fn request_context(request: Request, next: Next) -> Response {
    let ctx = {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        RequestContext::continue_from(
            header(REQUEST_ID_HEADER),
            header("traceparent"),
            header("tracestate"),
        )
    };
    let request_id = ctx.request_id.clone();
    let span = tracing::info_span!(
        "http.request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %ctx.request_id,
        trace_id = %ctx.trace_id(),
    );
    let mut response = ctx.scope(next.run(request)).instrument(span).await;
    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

impl HttpError {
    /// For middleware that must answer with a plain `Response`.
    pub fn into_response_now(self) -> Response {
        self.into_response()
    }
}
