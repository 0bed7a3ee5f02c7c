//! Client routes: called from browsers with a restricted key (origin-checked)
//! or from backends with a secret key.

use super::{body, Reply};
use crate::access::{Access, Incoming, SESSION_COOKIE};
use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idm_core::proto::auth::{self, Authenticated, SignIn, SignUp};
use idm_core::proto::user::{self, GetUser, User};
use idm_core::proto::SecretText;
use idm_core::text::{check_password, DisplayName};
use idm_core::{ApiError, Email};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignUpBody {
    email: String,
    password: SecretText,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    email: String,
    password: SecretText,
}

/// The session in JSON and as the `__Host-` cookie (Secure, HttpOnly,
/// SameSite=Lax, Path=/, no Domain).
fn session_response(app: &crate::App, status: StatusCode, signed_in: Authenticated) -> Response {
    let max_age = (signed_in.expires_at - idm_core::now())
        .whole_seconds()
        .max(0);
    let secure = if app.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        signed_in.session_token.expose()
    );
    let mut response = (status, Json(signed_in)).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn sign_up(
    incoming: Incoming,
    request: Result<Json<SignUpBody>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize(Access::Client).await?;
    let request = body(request)?;
    let email = Email::parse(&request.email)?;
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
    let signed_in: Authenticated = incoming.app.bus.call("auth", auth::SIGN_UP, &call).await?;
    Ok(session_response(
        &incoming.app,
        StatusCode::CREATED,
        signed_in,
    ))
}

pub async fn sign_in(
    incoming: Incoming,
    request: Result<Json<SignInBody>, JsonRejection>,
) -> Reply<Response> {
    let caller = incoming.authorize(Access::Client).await?;
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
    let signed_in: Authenticated = incoming.app.bus.call("auth", auth::SIGN_IN, &call).await?;
    Ok(session_response(&incoming.app, StatusCode::OK, signed_in))
}

pub async fn me(incoming: Incoming) -> Reply<Json<User>> {
    let caller = incoming.authorize(Access::Client).await?;
    let session = incoming.session(&caller).await?;
    let found: User = incoming
        .app
        .bus
        .call(
            "user",
            user::GET_USER,
            &GetUser {
                issuer_id: caller.key.issuer_id.clone(),
                user_id: session.sub,
            },
        )
        .await?;
    Ok(Json(found))
}
