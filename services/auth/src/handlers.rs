//! Sign-up and password sign-in.

use crate::{Error, State};
use idm_core::proto::auth::*;
use idm_core::proto::store::{self, PasswordChecked};
use idm_core::proto::{session, user, IssuerContext};
use idm_core::{ApiError, ErrorCode, Region};
use std::sync::Arc;
use std::time::Instant;

async fn open_session(
    state: &State,
    ctx: &IssuerContext,
    user: user::User,
    device: idm_core::proto::Device,
) -> Result<Authenticated, Error> {
    let issued: session::IssuedSession = state
        .bus
        .call(
            "session",
            session::CREATE_SESSION,
            &session::CreateSession {
                issuer_id: ctx.issuer_id.clone(),
                user_id: user.id.clone(),
                region: user.region,
                policy: ctx.policy.clone(),
                device,
            },
        )
        .await?;
    Ok(Authenticated {
        user,
        session_id: issued.session_id,
        session_token: issued.session_token,
        refresh_token: issued.refresh_token,
        expires_at: issued.expires_at,
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn sign_up(state: Arc<State>, req: SignUp) -> Result<Authenticated, Error> {
    if !req.ctx.policy.allow_sign_up {
        return Err(ApiError::invalid_request("sign-up is disabled for this application").into());
    }
    idm_core::text::check_password(req.password.expose())?;
    let created: user::User = state
        .bus
        .call(
            "user",
            user::CREATE_USER,
            &user::CreateUser {
                ctx: req.ctx.clone(),
                email: req.email,
                password: Some(req.password),
                name: req.name,
                region: None,
                metadata: None,
                country: req.device.country.clone(),
            },
        )
        .await?;
    open_session(&state, &req.ctx, created, req.device).await
}

/// Unknown user and wrong password both run one Argon2 verification (the
/// store uses a dummy hash for the former) and both answer no sooner than the
/// configured minimum, with the same error.
#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn sign_in(state: Arc<State>, req: SignIn) -> Result<Authenticated, Error> {
    let started = Instant::now();
    let outcome = check_password(&state, &req).await;
    let located = match outcome {
        Ok(Some(location)) => location,
        Ok(None) => {
            tokio::time::sleep_until((started + state.min_sign_in).into()).await;
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "the email or password is not correct",
            )
            .into());
        }
        Err(e) => return Err(e),
    };
    let found: user::User = state
        .bus
        .call(
            "user",
            user::GET_USER,
            &user::GetUser {
                issuer_id: req.ctx.issuer_id.clone(),
                user_id: located.user_id,
            },
        )
        .await?;
    open_session(&state, &req.ctx, found, req.device).await
}

async fn check_password(state: &State, req: &SignIn) -> Result<Option<user::Location>, Error> {
    let located: user::Located = state
        .bus
        .call(
            "user",
            user::LOCATE,
            &user::FindByEmail {
                issuer_id: req.ctx.issuer_id.clone(),
                email: req.email.clone(),
            },
        )
        .await?;
    // For an unknown user, any permitted region's store runs the dummy check.
    let region = located
        .location
        .as_ref()
        .map(|l| l.region)
        .or_else(|| req.ctx.policy.permitted_regions().first().copied())
        .unwrap_or(Region::Weur);
    let checked: PasswordChecked = state
        .bus
        .call_store(
            region,
            store::VERIFY_PASSWORD,
            &store::VerifyPassword {
                issuer_id: req.ctx.issuer_id.clone(),
                user_id: located.location.as_ref().map(|l| l.user_id.clone()),
                password: req.password.clone(),
            },
        )
        .await?;
    Ok(located.location.filter(|_| checked.valid))
}
