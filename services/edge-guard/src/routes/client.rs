//! Client routes: called from browsers with a restricted key (origin-checked)
//! or from backends with a secret key.

use super::{body, Reply};
use crate::access::Incoming;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idm_core::proto::auth::{Authenticated, SignIn, SignUp};
use idm_core::proto::session;
use idm_core::proto::store::GetSessionUser;
use idm_core::proto::user::User;
use idm_core::proto::SecretText;
use idm_core::text::{check_password, DisplayName};
use idm_core::{ApiError, Email};
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpBody {
    #[schema(format = Email)]
    email: String,
    #[schema(value_type = String, min_length = 8, max_length = 256)]
    password: SecretText,
    #[schema(max_length = 200)]
    name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    #[schema(format = Email)]
    email: String,
    password: SecretText,
}

/// Seconds from now until `at`, at least 0.
fn seconds_until(at: idm_core::Timestamp) -> i64 {
    (at - idm_core::now()).whole_seconds().max(0)
}

fn json_response(
    status: StatusCode,
    body: impl serde::Serialize,
    cookies: &[Option<HeaderValue>],
) -> Response {
    let mut response = (status, Json(body)).into_response();
    for cookie in cookies.iter().flatten() {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer that starts or renews a session. Header mode (as before): the
/// tokens in the body, and the session cookie too. Cookie mode
/// (`Idm-Session-Mode: cookie`, docs/SESSIONS.md): the session and refresh
/// cookies, and a body without `session_token` and `refresh_token`.
pub(super) fn issued_response(
    incoming: &Incoming,
    status: StatusCode,
    body: impl serde::Serialize,
    session_token: &SecretText,
    refresh_token: &SecretText,
    expires_at: idm_core::Timestamp,
    refresh_seconds: i64,
) -> Result<Response, ApiError> {
    let jar = incoming.jar();
    let session_cookie = jar.session(Some((session_token.expose(), seconds_until(expires_at))));
    if !incoming.cookie_mode()? {
        return Ok(json_response(status, body, &[session_cookie]));
    }
    let mut value = serde_json::to_value(body).map_err(|e| ApiError::internal_from(&e))?;
    if let Some(object) = value.as_object_mut() {
        object.remove("session_token");
        object.remove("refresh_token");
    }
    let refresh_cookie = jar.refresh(Some((refresh_token.expose(), refresh_seconds)));
    Ok(json_response(
        status,
        value,
        &[session_cookie, refresh_cookie],
    ))
}

/// How long a refresh cookie is kept: the issuer's idle timeout, after
/// which the refresh token no longer refreshes anyway.
fn refresh_seconds(policy: &idm_core::IssuerPolicy) -> i64 {
    i64::from(policy.session_idle_timeout_seconds)
}

pub(super) fn session_response(
    incoming: &Incoming,
    policy: &idm_core::IssuerPolicy,
    status: StatusCode,
    signed_in: Authenticated,
) -> Result<Response, ApiError> {
    issued_response(
        incoming,
        status,
        &signed_in,
        &signed_in.session_token,
        &signed_in.refresh_token,
        signed_in.expires_at,
        refresh_seconds(policy),
    )
}

/// Signs a new user up and in.
#[utoipa::path(post, path = "/v1/client/sign_up", tag = "client", request_body = SignUpBody,
    responses((status = 201, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie; in cookie mode (`Idm-Session-Mode: cookie`) the refresh cookie too, and the body has no tokens")))))]
pub async fn sign_up(
    incoming: Incoming,
    request: Result<Json<SignUpBody>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    let email = incoming
        .app
        .waf
        .check_email(&caller.key.policy, &request.email)?;
    check_password(request.password.expose())?;
    let name = request
        .name
        .as_deref()
        .map(|n| DisplayName::parse("name", n))
        .transpose()?;
    let call = SignUp {
        ctx: caller.ctx(),
        email,
        password: request.password,
        name,
        device: caller.device(),
    };
    let app = &incoming.app;
    let signed_in = app
        .waf
        .password_work(&caller.key, app.bus.send(&call))
        .await?;
    Ok(session_response(
        &incoming,
        &caller.key.policy,
        StatusCode::CREATED,
        signed_in,
    )?)
}

/// Password sign-in; `401 mfa_required` carries an `mfa_token` for `/v1/client/mfa/verify`.
#[utoipa::path(post, path = "/v1/client/sign_in", tag = "client", request_body = SignInBody,
    responses((status = 200, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie; in cookie mode (`Idm-Session-Mode: cookie`) the refresh cookie too, and the body has no tokens")))))]
pub async fn sign_in(
    incoming: Incoming,
    request: Result<Json<SignInBody>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    // A malformed address cannot belong to anyone: same answer as a wrong one.
    let email = Email::parse(&request.email).map_err(|_| {
        ApiError::new(
            idm_core::ErrorCode::InvalidCredentials,
            "the email or password is not correct",
        )
    })?;
    if request.password.expose().len() > 1024 {
        return Err(ApiError::validation("password is too long").into());
    }
    let call = SignIn {
        ctx: caller.ctx(),
        email,
        password: request.password,
        device: caller.device(),
    };
    let app = &incoming.app;
    let signed_in = app
        .waf
        .password_work(&caller.key, app.bus.send(&call))
        .await?;
    Ok(session_response(
        &incoming,
        &caller.key.policy,
        StatusCode::OK,
        signed_in,
    )?)
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/client/me", tag = "client",
    responses((status = 200, description = "The user", body = User)))]
pub async fn me(incoming: Incoming) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    // Verified first (signature under the issuer's ring, expiry, this
    // replica's revocation set): only then is the token's region trusted,
    // or an answer remembered for the session used.
    let session = incoming.session(&caller).await?;
    let issuer = &caller.key.issuer_id;
    let bus = &incoming.app.bus;
    let (body, remembered) = incoming
        .app
        .me_cache
        .answer(issuer, &session.sid, (&session.sub, session.reg), || {
            session_user(bus, issuer, &session)
        })
        .await?;
    let from = if remembered { "memory" } else { "store" };
    metrics::counter!("idm_edge_me_answers_total", "from" => from).increment(1);
    Ok(json_body(body))
}

/// The session's user as `/me` answers it, read from the store of the
/// region the verified token names.
async fn session_user(
    bus: &idm_bus::Bus,
    issuer: &idm_core::IssuerId,
    session: &idm_crypto::session_token::SessionClaims,
) -> Result<Bytes, ApiError> {
    // The token names the user's region (`reg`, signed with the rest), so
    // the edge asks that region's store directly: one bus hop and one
    // statement, instead of the user service, its directory and then the
    // store (issue 10). The store answers only for a live session of this
    // user in this issuer's schema; see docs/PERFORMANCE.md for why a user
    // being deleted is refused no later than before.
    let region = session.reg;
    let stored = bus
        .send_to(
            region,
            &GetSessionUser {
                issuer_id: issuer.clone(),
                user_id: session.sub.clone(),
                session_id: session.sid.clone(),
            },
        )
        .await?;
    // The residency check the user service made on this path: the store
    // must be the token's region's, with that region's jurisdiction.
    if let Some(why) = stored.store.refusal(region) {
        tracing::error!(%region, answered = %stored.store.region, %why, "store refused");
        return Err(ApiError::new(
            idm_core::ErrorCode::ResidencyViolation,
            "the store's region or jurisdiction does not match the placement",
        ));
    }
    let user = User {
        id: stored.id,
        email: stored.email,
        email_verified: stored.email_verified,
        name: stored.name,
        region,
        metadata: stored.metadata,
        mfa_enabled: stored.mfa_enabled,
        created_at: stored.created_at,
    };
    Ok(Bytes::from(
        serde_json::to_vec(&user).map_err(|e| ApiError::internal_from(&e))?,
    ))
}

/// A JSON body serialised before (what `Json` would send for it).
fn json_body(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// Header mode: the refresh token. Cookie mode: absent (the body is
    /// `{}` or empty), the refresh cookie is read instead.
    #[schema(value_type = Option<String>)]
    refresh_token: Option<SecretText>,
}

/// Rotates the refresh token: the presented one is consumed, a new pair comes back.
#[utoipa::path(post, path = "/v1/client/token/refresh", tag = "client", request_body(content = RefreshBody, description = "Header mode: `refresh_token`; cookie mode (`Idm-Session-Mode: cookie`): `{}` or no body, the refresh cookie is read"),
    responses((status = 200, description = "The new session token and refresh token (cookie mode: `session_id` and `expires_at` only)", body = session::IssuedSession, headers(("Set-Cookie" = String, description = "The session cookie; in cookie mode the refresh cookie too")))))]
pub async fn refresh(
    incoming: Incoming,
    request: Result<Bytes, BytesRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let raw = request.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                idm_core::ErrorCode::PayloadTooLarge,
                "the request body is too large",
            )
        } else {
            ApiError::invalid_request(rejection.body_text())
        }
    })?;
    let request: RefreshBody = if raw.iter().all(u8::is_ascii_whitespace) {
        RefreshBody::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| ApiError::invalid_request(e.to_string()))?
    };
    let invalid = session::refresh_token_invalid;
    let jar = incoming.jar();
    let refresh_token =
        match (incoming.cookie_mode()?, request.refresh_token) {
            (false, Some(token)) => token,
            (false, None) => return Err(ApiError::invalid_request(
                "refresh_token is required (or Idm-Session-Mode: cookie, on the issuer's own host)",
            )
            .into()),
            (true, Some(_)) => {
                return Err(ApiError::validation(
                    "in the cookie mode the refresh token comes from its cookie, not the body",
                )
                .into())
            }
            (true, None) => {
                crate::access::csrf_check(&incoming.method, &incoming.headers)?;
                SecretText::new(
                    crate::cookies::Jar::read(&incoming.headers, jar.refresh_name())
                        .ok_or_else(invalid)?,
                )
            }
        };
    if refresh_token.expose().len() > 256 {
        return Err(invalid().into());
    }
    let call = session::Refresh {
        issuer_id: caller.key.issuer_id.clone(),
        policy: caller.key.policy.clone(),
        refresh_token,
        device: caller.device(),
    };
    let issued = crate::refresh::refresh(&incoming.app, call).await?;
    Ok(issued_response(
        &incoming,
        StatusCode::OK,
        &issued,
        &issued.session_token,
        &issued.refresh_token,
        issued.expires_at,
        refresh_seconds(&caller.key.policy),
    )?)
}

/// The answer to a sign-out.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SignedOut {
    revoked: bool,
    session_id: idm_core::SessionId,
}

/// Revokes the caller's session and clears the session and refresh cookies.
#[utoipa::path(post, path = "/v1/client/sign_out", tag = "client",
    responses((status = 200, description = "The session is revoked", body = SignedOut,
        headers(("Set-Cookie" = String, description = "Clears the session cookie")))))]
pub async fn sign_out(incoming: Incoming) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let claims = incoming.session(&caller).await?;
    let call = session::Revoke {
        issuer_id: caller.key.issuer_id.clone(),
        session_id: claims.sid,
        region: Some(claims.reg),
        reason: "sign_out".into(),
    };
    let revoked = incoming.app.bus.send(&call).await?;
    let jar = incoming.jar();
    Ok(json_response(
        StatusCode::OK,
        SignedOut {
            revoked: true,
            session_id: revoked.id,
        },
        &[jar.session(None), jar.refresh(None)],
    ))
}

/// The signed-in user's live sessions, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/client/sessions", tag = "client", params(super::profiles::ListQuery),
    responses((status = 200, description = "The sessions", body = session::SessionList)))]
pub async fn my_sessions(
    incoming: Incoming,
    params: Result<
        axum::extract::Query<super::profiles::ListQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Reply<Json<session::SessionList>> {
    let caller = incoming.authorize().await?;
    let claims = incoming.session(&caller).await?;
    let call = session::List {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: claims.sub,
        region: Some(claims.reg),
        page: Some(super::profiles::page_of(params)?),
    };
    Ok(Json(incoming.app.bus.send(&call).await?))
}
