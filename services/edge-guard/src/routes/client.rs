//! Client routes: called from browsers with a restricted key (origin-checked)
//! or from backends with a secret key.

use super::{body, Reply};
use crate::access::{Incoming, SESSION_COOKIE};
use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idm_core::proto::auth::{Authenticated, SignIn, SignUp};
use idm_core::proto::session;
use idm_core::proto::user::{GetUser, User};
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

/// `body` as JSON with the session cookie set to `token` (or cleared):
/// `__Host-` prefix, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain.
fn with_session_cookie(
    app: &crate::App,
    status: StatusCode,
    body: impl serde::Serialize,
    token: Option<(&str, idm_core::Timestamp)>,
) -> Response {
    let secure = if app.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = match token {
        Some((token, expires_at)) => {
            let max_age = (expires_at - idm_core::now()).whole_seconds().max(0);
            format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
        }
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) fn session_response(
    app: &crate::App,
    status: StatusCode,
    signed_in: Authenticated,
) -> Response {
    let token = signed_in.session_token.clone();
    with_session_cookie(
        app,
        status,
        &signed_in,
        Some((token.expose(), signed_in.expires_at)),
    )
}

/// Signs a new user up and in.
#[utoipa::path(post, path = "/v1/client/sign_up", tag = "client", request_body = SignUpBody,
    responses((status = 201, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie `__Host-idm_session`")))))]
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
        &incoming.app,
        StatusCode::CREATED,
        signed_in,
    ))
}

/// Password sign-in; `401 mfa_required` carries an `mfa_token` for `/v1/client/mfa/verify`.
#[utoipa::path(post, path = "/v1/client/sign_in", tag = "client", request_body = SignInBody,
    responses((status = 200, description = "The user and the session", body = Authenticated, headers(("Set-Cookie" = String, description = "The session cookie `__Host-idm_session`")))))]
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
    Ok(session_response(&incoming.app, StatusCode::OK, signed_in))
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/client/me", tag = "client",
    responses((status = 200, description = "The user", body = User)))]
pub async fn me(incoming: Incoming) -> Reply<Json<User>> {
    let caller = incoming.authorize().await?;
    let session = incoming.session(&caller).await?;
    let found = incoming
        .app
        .bus
        .send(&GetUser {
            issuer_id: caller.key.issuer_id.clone(),
            user_id: session.sub,
        })
        .await?;
    Ok(Json(found))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: SecretText,
}

/// Rotates the refresh token: the presented one is consumed, a new pair comes back.
#[utoipa::path(post, path = "/v1/client/token/refresh", tag = "client", request_body = RefreshBody,
    responses((status = 200, description = "The new session token and refresh token", body = session::IssuedSession, headers(("Set-Cookie" = String, description = "The session cookie `__Host-idm_session`")))))]
pub async fn refresh(
    incoming: Incoming,
    request: Result<Json<RefreshBody>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    if request.refresh_token.expose().len() > 256 {
        return Err(ApiError::new(
            idm_core::ErrorCode::SessionInvalid,
            "the refresh token is not valid",
        )
        .into());
    }
    let call = session::Refresh {
        issuer_id: caller.key.issuer_id.clone(),
        policy: caller.key.policy.clone(),
        refresh_token: request.refresh_token,
        device: caller.device(),
    };
    let issued = incoming.app.bus.send(&call).await?;
    let token = issued.session_token.clone();
    Ok(with_session_cookie(
        &incoming.app,
        StatusCode::OK,
        &issued,
        Some((token.expose(), issued.expires_at)),
    ))
}

/// The answer to a sign-out.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SignedOut {
    revoked: bool,
    session_id: idm_core::SessionId,
}

/// Revokes the caller's session and clears the cookie.
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
    Ok(with_session_cookie(
        &incoming.app,
        StatusCode::OK,
        SignedOut {
            revoked: true,
            session_id: revoked.id,
        },
        None,
    ))
}

/// The signed-in user's sessions.
#[utoipa::path(get, path = "/v1/client/sessions", tag = "client",
    responses((status = 200, description = "The sessions", body = session::SessionList)))]
pub async fn my_sessions(incoming: Incoming) -> Reply<Json<session::SessionList>> {
    let caller = incoming.authorize().await?;
    let claims = incoming.session(&caller).await?;
    let call = session::List {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: claims.sub,
        region: Some(claims.reg),
    };
    Ok(Json(incoming.app.bus.send(&call).await?))
}
