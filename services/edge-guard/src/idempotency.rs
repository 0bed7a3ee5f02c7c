//! `Idempotency-Key` on the routes that create something (API.md): a retry
//! with the same key and the same request within 24 hours answers with the
//! first response instead of creating a second resource.
//!
//! - Scope: the key's issuer and the API key itself, so a tenant can never
//!   reach another tenant's stored answer, whatever key text it guesses.
//! - The caller is authorised first (WAF, origin, scope) on every attempt,
//!   replays included; the handler then reuses that authorisation rather than
//!   counting the request twice.
//! - Fingerprint: SHA-256 of method, path, query, session mode
//!   (`Idm-Session-Mode`) and body. The same key with
//!   another fingerprint is `409 idempotency_conflict`.
//! - Concurrency: the first attempt claims the key with `SET NX` (a running
//!   marker that expires after `RUNNING_TTL`, so a crashed replica cannot
//!   block the key for a day); another attempt meanwhile gets
//!   `409 idempotency_in_progress` and may retry.
//! - What is kept: answers below 500 except 429 (a failure that a retry could
//!   turn into a success is not pinned: the marker is dropped instead).
//! - At rest: Redis holds only a hash of scope and key as the name and the
//!   answer sealed under a key derived from the client's idempotency key,
//!   which Redis never sees (a sign-up answer carries session tokens).
//! - Redis unavailable: a request that asks for idempotency gets
//!   `503 upstream_unavailable` rather than a create without the guarantee.
//!   Losing Redis's data loses at most the replay of answers given in the
//!   last 24 hours (docs/OPENAPI.md).

use crate::access::{Caller, Incoming};
use crate::App;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use idm_cache::Connection;
use idm_core::{ApiError, ErrorCode};
use idm_telemetry::http::HttpError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that is a replay of the first one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long an answer is kept for retries.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a running attempt holds its key without finishing.
const RUNNING_TTL: Duration = Duration::from_secs(120);
const MAX_KEY_LEN: usize = 255;
/// Answers larger than this are not kept (none of the creating routes
/// answers with anything near it).
const MAX_STORED_BODY: usize = 256 * 1024;
/// Response headers a replay repeats.
const KEPT_HEADERS: [&str; 3] = ["content-type", "set-cookie", "cache-control"];

/// The routes that create something and so honour `Idempotency-Key`.
pub const CREATING_ROUTES: &[&str] = &[
    "/v1/issuers",
    "/v1/api_keys",
    "/v1/users",
    "/v1/users/{id}/personal_tokens",
    "/v1/client/sign_up",
    // Users (issue 11).
    "/v1/users/{id}/consents",
    // deletion
    "/v1/organizations",
    "/v1/organizations/{id}/memberships",
    "/v1/webhook_endpoints",
];

/// Whether the route at `method path` (the table's pattern) honours the header.
pub fn applies(method: &Method, path: &str) -> bool {
    method == Method::POST && CREATING_ROUTES.contains(&path)
}

/// A caller authorised by this layer, for the handler to reuse.
#[derive(Clone)]
pub(crate) struct Authorized(pub Caller);

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    Running {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        /// base64 of the sealed `Answer`.
        sealed: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

pub struct Store {
    target: idm_cache::Target,
    manager: tokio::sync::Mutex<Option<Connection>>,
    prefix: String,
    timeout: Duration,
}

fn unavailable() -> ApiError {
    ApiError::upstream("the idempotency store is unavailable; retry later")
        .with_details(serde_json::json!({ "retry_after": 1 }))
}

impl Store {
    pub fn new(redis_url: &str, prefix: &str, timeout: Duration) -> Result<Self, crate::Error> {
        let target = idm_cache::Target::parse(redis_url)
            .map_err(|e| crate::Error::Redis(format!("EDGE_REDIS_URL is not usable: {e}")))?;
        Ok(Self {
            target,
            manager: tokio::sync::Mutex::new(None),
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    async fn connection(&self) -> Result<Connection, ApiError> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let settings = idm_cache::Settings {
            connection_timeout: self.timeout,
            response_timeout: self.timeout,
            retries: 1,
            ..idm_cache::Settings::default()
        };
        let manager = tokio::time::timeout(self.timeout * 4, self.target.connect(settings))
            .await
            .map_err(|_| unavailable())?
            .map_err(|e| {
                tracing::warn!(error = %e, "idempotency store: cannot connect to Redis");
                unavailable()
            })?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ApiError> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|_| unavailable())?
            .map_err(|e| {
                tracing::warn!(error = %e, "idempotency store: Redis command failed");
                unavailable()
            })
    }
}

/// The names derived from one client key in one scope: the Redis key (a
/// hash) and the sealing key (another hash, which Redis never sees).
struct Slot {
    redis_key: String,
    sealing: idm_crypto::aead::MasterKey,
}

impl Slot {
    fn new(prefix: &str, scope: &str, key: &str) -> Self {
        let material = |purpose: &str| {
            let mut data = Vec::with_capacity(purpose.len() + scope.len() + key.len() + 2);
            data.extend_from_slice(purpose.as_bytes());
            data.push(0);
            data.extend_from_slice(scope.as_bytes());
            data.push(0);
            data.extend_from_slice(key.as_bytes());
            idm_crypto::sha256(&data)
        };
        Self {
            redis_key: format!(
                "{prefix}idem:{}",
                hex::encode(material("idmesh/idempotency/name/v1"))
            ),
            sealing: idm_crypto::aead::MasterKey::from_key_bytes(&material(
                "idmesh/idempotency/seal/v1",
            )),
        }
    }
}

fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let text = value
        .to_str()
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_KEY_LEN)
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid_request(
                "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            )
        })?;
    Ok(text.to_owned())
}

/// The middleware on every creating route (see `routes::routes`).
pub async fn layer(Extension(app): Extension<Arc<App>>, request: Request, next: Next) -> Response {
    match guarded(app, request, next).await {
        Ok(response) => response,
        Err(error) => HttpError(error).into_response(),
    }
}

async fn guarded(app: Arc<App>, request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(raw) = request.headers().get(HEADER) else {
        return Ok(next.run(request).await);
    };
    let key = parse_key(raw)?;
    let (mut parts, body) = request.into_parts();
    let incoming = match Incoming::from_request_parts(&mut parts, &app).await {
        Ok(incoming) => incoming,
        Err(never) => match never {},
    };
    let caller = incoming.authorize().await?;
    let bytes = axum::body::to_bytes(body, app.config.max_body_bytes)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large"))?;
    let fingerprint = {
        let mut data = Vec::with_capacity(bytes.len() + 64);
        data.extend_from_slice(parts.method.as_str().as_bytes());
        data.push(0);
        data.extend_from_slice(
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or_default()
                .as_bytes(),
        );
        data.push(0);
        // The session mode decides the answer's shape (tokens in the body
        // or in cookies): a retry in the other mode is another request.
        let cookie_mode = crate::access::cookie_mode(&parts.headers).unwrap_or(false);
        data.extend_from_slice(if cookie_mode { b"cookie" } else { b"header" });
        data.push(0);
        data.extend_from_slice(&bytes);
        idm_crypto::sha256_hex(&data)
    };
    let scope = format!("{}/{}", caller.key.issuer_id, caller.key.key_id);
    let slot = Slot::new(&app.idempotency.prefix, &scope, &key);
    parts.extensions.insert(Authorized(caller));
    let request = Request::from_parts(parts, Body::from(bytes));
    let store = &app.idempotency;

    let running = serde_json::to_string(&Record::Running {
        fingerprint: fingerprint.clone(),
    })
    .map_err(|e| ApiError::internal_from(&e))?;
    let claimed: Option<String> = store
        .command(
            redis::cmd("SET")
                .arg(&slot.redis_key)
                .arg(&running)
                .arg("NX")
                .arg("PX")
                .arg(RUNNING_TTL.as_millis() as u64),
        )
        .await?;
    if claimed.is_none() {
        return earlier(store, &slot, &fingerprint).await;
    }

    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        // A retry may succeed: let it run again.
        let _: Result<i64, _> = store.command(redis::cmd("DEL").arg(&slot.redis_key)).await;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_STORED_BODY).await else {
        let _: Result<i64, _> = store.command(redis::cmd("DEL").arg(&slot.redis_key)).await;
        return Err(ApiError::internal_from(
            &"a created answer too large to keep",
        ));
    };
    let answer = Answer {
        status: parts.status.as_u16(),
        headers: KEPT_HEADERS
            .iter()
            .flat_map(|name| {
                parts
                    .headers
                    .get_all(*name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(|v| ((*name).to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let stored = seal(&slot, &fingerprint, &answer)?;
    // The resource exists now: failing to keep the answer must not turn
    // into an error for this attempt (a retry would then create again, as
    // without the header; the log says so).
    if let Err(e) = store
        .command::<()>(
            redis::cmd("SET")
                .arg(&slot.redis_key)
                .arg(stored)
                .arg("EX")
                .arg(TTL.as_secs()),
        )
        .await
    {
        tracing::error!(error = %e, "idempotency store: the answer could not be kept");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn seal(slot: &Slot, fingerprint: &str, answer: &Answer) -> Result<String, ApiError> {
    use base64::Engine;
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(answer).map_err(|e| ApiError::internal_from(&e))?,
    );
    let sealed = slot
        .sealing
        .seal(&plain, slot.redis_key.as_bytes())
        .map_err(|e| ApiError::internal_from(&e))?;
    serde_json::to_string(&Record::Done {
        fingerprint: fingerprint.to_owned(),
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    })
    .map_err(|e| ApiError::internal_from(&e))
}

/// The key was claimed before: replay, conflict or in progress.
async fn earlier(store: &Store, slot: &Slot, fingerprint: &str) -> Result<Response, ApiError> {
    use base64::Engine;
    let found: Option<String> = store
        .command(redis::cmd("GET").arg(&slot.redis_key))
        .await?;
    let in_progress = || {
        ApiError::new(
            ErrorCode::IdempotencyInProgress,
            "a request with this Idempotency-Key is still running; retry later",
        )
        .with_details(serde_json::json!({ "retry_after": 1 }))
    };
    let conflict = || {
        ApiError::new(
            ErrorCode::IdempotencyConflict,
            "this Idempotency-Key was used with another request",
        )
    };
    // Gone between the two commands (the running marker expired): the
    // caller may simply retry.
    let Some(found) = found else {
        return Err(in_progress());
    };
    let record: Record = serde_json::from_str(&found).map_err(|e| ApiError::internal_from(&e))?;
    let (stored_fingerprint, sealed) = match &record {
        Record::Running { fingerprint } => (fingerprint, None),
        Record::Done {
            fingerprint,
            sealed,
        } => (fingerprint, Some(sealed)),
    };
    if !idm_crypto::ct_eq(stored_fingerprint.as_bytes(), fingerprint.as_bytes()) {
        return Err(conflict());
    }
    let Some(sealed) = sealed else {
        return Err(in_progress());
    };
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| ApiError::internal_from(&e))?;
    let plain = slot
        .sealing
        .open(&sealed, slot.redis_key.as_bytes())
        .map_err(|e| ApiError::internal_from(&e))?;
    let answer: Answer = serde_json::from_slice(&plain).map_err(|e| ApiError::internal_from(&e))?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response.headers_mut().insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_printable_ascii() {
        assert!(parse_key(&HeaderValue::from_static("a-b_c.1")).is_ok());
        assert!(parse_key(&HeaderValue::from_static("")).is_err());
        assert!(parse_key(&HeaderValue::from_static("has space")).is_err());
        let long = "k".repeat(256);
        assert!(HeaderValue::from_str(&long)
            .ok()
            .is_some_and(|v| parse_key(&v).is_err()));
    }

    #[test]
    fn the_slot_depends_on_scope_and_key_and_hides_both() {
        let a = Slot::new("p:", "iss_1/key_1", "k");
        let b = Slot::new("p:", "iss_2/key_2", "k");
        let c = Slot::new("p:", "iss_1/key_1", "k2");
        assert_ne!(a.redis_key, b.redis_key);
        assert_ne!(a.redis_key, c.redis_key);
        assert!(!a.redis_key.contains("iss_1"));
        // Another scope's sealing key does not open this scope's answer.
        let sealed = a.sealing.seal(b"x", a.redis_key.as_bytes());
        assert!(sealed
            .ok()
            .is_some_and(|s| b.sealing.open(&s, a.redis_key.as_bytes()).is_err()));
    }

    #[test]
    fn every_creating_route_is_a_post_in_the_table() {
        for path in CREATING_ROUTES {
            assert!(
                crate::routes::ROUTES
                    .iter()
                    .any(|r| r.path == *path && r.method == Method::POST),
                "{path}"
            );
        }
    }
}
