//! The public API's OpenAPI 3.1 document, built from the route table.
//!
//! Each handler carries a `#[utoipa::path]` attribute (summary, parameters,
//! request body, success responses); the route table (`routes::ROUTES`) adds
//! what the table alone knows: the method and path it is mounted at, its
//! access class (hence its security requirement and the errors every route
//! of that class can answer) and the errors particular to it. Building the
//! document from the table means a route cannot be served undescribed; the
//! tests below also check that each handler's attribute names the same
//! method and path as its table line, and that `docs/openapi.json` is this
//! document (regenerate it with `IDM_UPDATE_OPENAPI=1 cargo test -p
//! idm-edge-guard openapi`).

use crate::access::Access;
use crate::routes::ROUTES;
use http::Method;
use idm_core::ErrorCode;
use std::collections::BTreeMap;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::response::{ResponseBuilder, Responses};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, OpenApiBuilder, RefOr, Required};
use utoipa::{PartialSchema, ToSchema};

/// Security scheme names used in the document.
const API_KEY: &str = "api_key";
const BEARER_API_KEY: &str = "bearer_api_key";
const SESSION_TOKEN: &str = "session_token";
const SESSION_COOKIE: &str = "session_cookie";

/// Routes served on the public port outside the table: they need no key.
pub const UNAUTHENTICATED_ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The error envelope every failure has: `{"error": {...}}`.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// One error: a stable code (the contract), a human message and the request
/// id. Some codes add machine-readable fields next to these (`mfa_token` on
/// `mfa_required`, `retry_after` in seconds on 429s and bans).
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub request_id: String,
}

/// The document, as served at `GET /openapi.json` and committed as
/// `docs/openapi.json`.
pub fn document() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("idmesh public API")
                .version("1")
                .description(Some(
                    "The API edge-guard serves. Errors are \
                     `{\"error\": {\"code\", \"message\", \"request_id\"}}` with stable codes; each \
                     operation lists the codes it can answer under each status. Every POST that \
                     creates something accepts `Idempotency-Key` (docs/OPENAPI.md).",
                ))
                .build(),
        )
        .build();
    let mut components = utoipa::openapi::Components::new();
    components.add_security_schemes_from_iter([
        (
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Idm-Api-Key",
                "An API key: `ath_sec_{live,test}_…` (secret, server side, scoped) or \
                 `rk_{live,test}_…` (restricted: client and verification routes only, from an \
                 allowed Origin). Required when `Authorization` carries a session token.",
            ))),
        ),
        (
            BEARER_API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The API key as `Authorization: Bearer <key>` (when no session token \
                         needs that header).",
                    ))
                    .build(),
            ),
        ),
        (
            SESSION_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session token as `Authorization: Bearer <session_token>`, with the \
                         key in `Idm-Api-Key`.",
                    ))
                    .build(),
            ),
        ),
        (
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::access::SESSION_COOKIE,
                "The session cookie set by sign-in (Secure, HttpOnly, SameSite=Lax, Path=/); \
                 `__Secure-idm_session` with the tenant's `Domain` on a custom domain that sets \
                 one. With `Idm-Session-Mode: cookie` (on an issuer's own host) the refresh \
                 token is the `__Secure-idm_refresh` cookie. A state-changing request \
                 authenticated by the cookie must send `Idm-Api-Key` (`csrf_check_failed`).",
            ))),
        ),
    ]);
    let mut schemas = Vec::new();
    <ErrorEnvelope as ToSchema>::schemas(&mut schemas);
    schemas.push((
        <ErrorEnvelope as ToSchema>::name().into_owned(),
        ErrorEnvelope::schema(),
    ));
    schemas.push((
        <ErrorBody as ToSchema>::name().into_owned(),
        ErrorBody::schema(),
    ));
    for route in ROUTES {
        let (route_schemas, paths) = (route.doc)();
        schemas.extend(route_schemas);
        let Some(mut operation) = paths.paths.into_values().find_map(single_operation) else {
            continue;
        };
        describe(&mut operation, route);
        doc.paths
            .add_path_operation(route.path, vec![http_method(&route.method)], operation);
    }
    for (method, path) in UNAUTHENTICATED_ROUTES {
        let operation = unauthenticated(path);
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        doc.paths
            .add_path_operation(path, vec![http_method(&method)], operation);
    }
    components.schemas.extend(schemas);
    doc.components = Some(components);
    doc
}

/// The document as pretty JSON with a final newline (the committed file).
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

const OPERATOR_TOKEN: &str = "operator_token";

/// The operator routes of the edge's internal ops listener
/// (`EDGE_OPS_ADDR`), served there at `GET /openapi.json` and committed as
/// `docs/openapi-ops.json`. Never served on the public port.
pub fn ops_document() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("idmesh edge-guard operator API")
                .version("1")
                .description(Some(
                    "Served on edge-guard's internal ops listener (EDGE_OPS_ADDR), never the \
                     public port; every call needs `Authorization: Bearer <EDGE_OPERATOR_TOKEN>`.",
                ))
                .build(),
        )
        .build();
    let mut components = utoipa::openapi::Components::new();
    components.add_security_scheme(
        OPERATOR_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("`EDGE_OPERATOR_TOKEN`"))
                .build(),
        ),
    );
    let mut schemas = Vec::new();
    <ErrorEnvelope as ToSchema>::schemas(&mut schemas);
    schemas.push((
        <ErrorEnvelope as ToSchema>::name().into_owned(),
        ErrorEnvelope::schema(),
    ));
    schemas.push((
        <ErrorBody as ToSchema>::name().into_owned(),
        ErrorBody::schema(),
    ));
    for route in crate::waf::admin::OPS_ROUTES {
        let (route_schemas, paths) = (route.doc)();
        schemas.extend(route_schemas);
        let Some(mut operation) = paths.paths.into_values().find_map(single_operation) else {
            continue;
        };
        let none: [&str; 0] = [];
        operation.security = Some(vec![SecurityRequirement::new(OPERATOR_TOKEN, none)]);
        let mut codes = vec![ErrorCode::Unauthenticated, ErrorCode::Internal];
        codes.extend(route.errors.iter().copied());
        add_errors(&mut operation.responses, &codes);
        doc.paths
            .add_path_operation(route.path, vec![http_method(&route.method)], operation);
    }
    doc.paths.add_path_operation(
        "/openapi.json",
        vec![HttpMethod::Get],
        unauthenticated("/openapi.json"),
    );
    components.schemas.extend(schemas);
    doc.components = Some(components);
    doc
}

pub fn ops_document_json() -> String {
    let mut text = ops_document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

fn single_operation(item: PathItem) -> Option<Operation> {
    item.get
        .or(item.post)
        .or(item.put)
        .or(item.patch)
        .or(item.delete)
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        _ => HttpMethod::Get,
    }
}

/// Whether the route reads a body or query (so it can answer 400/413).
fn takes_input(operation: &Operation) -> bool {
    operation.request_body.is_some()
        || operation.parameters.as_ref().is_some_and(|params| {
            params.iter().any(|p| match p {
                RefOr::T(p) => matches!(p.parameter_in, ParameterIn::Query),
                RefOr::Ref(_) => false,
            })
        })
}

/// Every code a route of this kind can answer before or around its own work.
pub fn common_errors(access: Access, session: bool, input: bool, creates: bool) -> Vec<ErrorCode> {
    use ErrorCode::*;
    let mut codes = vec![
        Unauthenticated,
        InvalidApiKey,
        IpBanned,
        RateLimited,
        Internal,
        UpstreamUnavailable,
        Overloaded,
        // On an issuer's own host, a key of another issuer.
        IssuerHostMismatch,
    ];
    match access {
        Access::Backend(_) => codes.push(InsufficientScope),
        Access::Client | Access::Verification => {
            codes.extend([OriginNotAllowed, SessionModeUnavailable]);
        }
    }
    if session {
        // `not_found`: the session's user (or its factor) is gone.
        codes.extend([SessionInvalid, SessionRevoked, SessionCompromised, NotFound]);
        // A cookie-authenticated state change without `Idm-Api-Key`.
        codes.push(CsrfCheckFailed);
    }
    if input {
        codes.extend([InvalidRequest, PayloadTooLarge]);
    }
    if creates {
        codes.extend([IdempotencyConflict, IdempotencyInProgress]);
    }
    codes
}

/// The operation as the table describes it: security, errors, headers.
fn describe(operation: &mut Operation, route: &crate::routes::Route) {
    let input = takes_input(operation);
    let creates = crate::idempotency::applies(&route.method, route.path);
    let mut codes = common_errors(route.access, route.session, input, creates);
    codes.extend(route.errors.iter().copied());
    operation.security = Some(security(route.session));
    if creates {
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        parameters.push(RefOr::T(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry safe: a repeat with the same key and body within 24 hours \
                     answers with the first response instead of creating again; the same key \
                     with another body is `409 idempotency_conflict`, and while the first is \
                     still running `409 idempotency_in_progress`. Keys are scoped to the \
                     issuer; at most 255 printable ASCII characters.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[\\x21-\\x7e]+$")),
                ))
                .build(),
        ));
    }
    add_errors(&mut operation.responses, &codes);
}

/// Any key, in either header; session routes also need the session.
fn security(session: bool) -> Vec<SecurityRequirement> {
    let none: [&str; 0] = [];
    if session {
        vec![
            SecurityRequirement::new(API_KEY, none).add(SESSION_TOKEN, none),
            SecurityRequirement::new(API_KEY, none).add(SESSION_COOKIE, none),
            SecurityRequirement::new(BEARER_API_KEY, none).add(SESSION_COOKIE, none),
        ]
    } else {
        vec![
            SecurityRequirement::new(API_KEY, none),
            SecurityRequirement::new(BEARER_API_KEY, none),
        ]
    }
}

/// One response per status, whose schema is the envelope with `code`
/// narrowed to the codes this route answers with that status.
fn add_errors(responses: &mut Responses, codes: &[ErrorCode]) {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        let list = by_status.entry(code.http_status()).or_default();
        if !list.contains(code) {
            list.push(*code);
        }
    }
    for (status, mut codes) in by_status {
        codes.sort_by_key(|c| c.as_str());
        let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        let description = format!(
            "{}: {}",
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error"),
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(error_schema(&names)))
                .build(),
        );
        if status == 429 || status == 503 {
            response = response.header(
                "Retry-After",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                    .description(Some("Seconds to wait before trying again, when known."))
                    .build(),
            );
        }
        responses
            .responses
            .insert(status.to_string(), RefOr::T(response.build()));
    }
}

/// `ErrorEnvelope`, with `error.code` narrowed to `codes`.
fn error_schema(codes: &[&str]) -> Schema {
    let narrowed = ObjectBuilder::new().property(
        "error",
        ObjectBuilder::new().property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().copied())),
        ),
    );
    Schema::AllOf(
        AllOfBuilder::new()
            .item(Ref::from_schema_name("ErrorEnvelope"))
            .item(narrowed)
            .build(),
    )
}

fn unauthenticated(path: &str) -> Operation {
    let (summary, ok) = match path {
        "/openapi.json" => ("This document.", "The OpenAPI document."),
        "/healthz" => ("Liveness: the process answers.", "`{\"status\": \"ok\"}`"),
        _ => (
            "Readiness: the edge can reach the bus.",
            "`{\"status\": \"ready\"}`",
        ),
    };
    let mut responses = ResponseBuilder::new().description(ok).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
            .build(),
    );
    if path == "/openapi.json" {
        responses = responses.header(
            "Cache-Control",
            utoipa::openapi::HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        );
    }
    let mut builder = OperationBuilder::new()
        .summary(Some(summary))
        .tag("operations")
        .operation_id(Some(match path {
            "/openapi.json" => "openapi",
            "/healthz" => "healthz",
            _ => "readyz",
        }))
        .security(SecurityRequirement::default())
        .response("200", responses.build());
    if path == "/readyz" {
        builder = builder.response(
            "503",
            ResponseBuilder::new()
                .description("Not ready: `{\"status\": \"not_ready\", \"reason\"}`")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                        .build(),
                )
                .build(),
        );
    }
    builder.build()
}

/// `GET /openapi.json`: public, no key, cacheable.
pub async fn serve() -> axum::response::Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    json_response(DOCUMENT.get_or_init(document_json).clone())
}

/// `GET /openapi.json` on the ops listener.
pub async fn serve_ops() -> axum::response::Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    json_response(DOCUMENT.get_or_init(ops_document_json).clone())
}

fn json_response(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn committed_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(name)
    }

    /// CI fails when the committed documents and the code disagree.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        check_committed("openapi.json", &document_json());
    }

    #[test]
    fn the_committed_ops_document_is_the_generated_one() {
        check_committed("openapi-ops.json", &ops_document_json());
        // Every operator route is described at its table line's method.
        let doc = ops_document();
        for route in crate::waf::admin::OPS_ROUTES {
            assert!(
                doc.paths
                    .get_path_operation(route.path, http_method(&route.method))
                    .is_some(),
                "{} {}",
                route.method,
                route.path
            );
            let (_, paths) = (route.doc)();
            assert!(
                paths
                    .get_path_operation(route.path, http_method(&route.method))
                    .is_some(),
                "the #[utoipa::path] of {} {} disagrees with its table line",
                route.method,
                route.path
            );
        }
    }

    fn check_committed(name: &str, generated: &str) {
        let path = committed_path(name);
        if std::env::var_os("IDM_UPDATE_OPENAPI").is_some() {
            let written = std::fs::write(&path, generated);
            assert!(
                written.is_ok(),
                "cannot write {}: {written:?}",
                path.display()
            );
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/{name} differs from the document the code generates; \
             regenerate it with `IDM_UPDATE_OPENAPI=1 cargo test -p idm-edge-guard openapi` \
             and commit the result"
        );
    }

    /// Every route the router mounts is in the document, at the method and
    /// path of its table line, and the handler's own attribute agrees.
    #[test]
    fn every_routed_operation_is_documented_and_nothing_else() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ] {
                if let Some(op) = op {
                    documented.insert((method.to_owned(), path.clone()));
                    assert!(
                        !op.responses.responses.is_empty(),
                        "{method} {path} documents no response"
                    );
                }
            }
        }
        let mut routed = BTreeSet::new();
        for route in ROUTES {
            routed.insert((route.method.to_string(), route.path.to_owned()));
            let (_, paths) = (route.doc)();
            let item = paths.paths.get(route.path);
            assert!(
                item.is_some(),
                "the #[utoipa::path] of {} {} names another path",
                route.method,
                route.path
            );
            let op = paths.get_path_operation(route.path, http_method(&route.method));
            assert!(
                op.is_some(),
                "the #[utoipa::path] of {} {} names another method",
                route.method,
                route.path
            );
        }
        for (method, path) in UNAUTHENTICATED_ROUTES {
            routed.insert(((*method).to_owned(), (*path).to_owned()));
        }
        assert_eq!(routed, documented);
    }

    /// Each operation's error responses name its stable codes, and the
    /// statuses match the codes' mapping.
    #[test]
    fn error_responses_carry_their_codes() {
        let json = serde_json::to_value(document()).unwrap_or_default();
        let op = &json["paths"]["/v1/users"]["post"];
        let conflict = &op["responses"]["409"]["content"]["application/json"]["schema"]["allOf"][1]
            ["properties"]["error"]["properties"]["code"]["enum"];
        let codes: Vec<&str> = conflict
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert!(codes.contains(&"conflict"), "{codes:?}");
        assert!(codes.contains(&"idempotency_conflict"), "{codes:?}");
        assert_eq!(json["openapi"], "3.1.0");
        assert!(op["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "Idempotency-Key")));
        assert!(json["components"]["securitySchemes"]["api_key"].is_object());
    }
}
