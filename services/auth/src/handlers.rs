//! Sign-up and password sign-in.

use crate::signin;
use crate::{Error, State};
use idm_core::proto::auth::*;
use idm_core::proto::store::{self, PasswordChecked};
use idm_core::proto::user;
use idm_core::{ApiError, ErrorCode, Region};
use std::sync::Arc;
use std::time::Instant;

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
    signin::open_session(&state, &req.ctx, created, req.device).await
}

/// Unknown user and wrong password both run one Argon2 verification (the
/// store uses a dummy hash for the former) and both answer no sooner than the
/// configured minimum, with the same error.
#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn sign_in(state: Arc<State>, req: SignIn) -> Result<Authenticated, Error> {
    let started = Instant::now();
    let located = match check_password(&state, &req).await? {
        Some(location) => location,
        None => {
            signin::at_least(started, state.min_sign_in).await;
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "the email or password is not correct",
            )
            .into());
        }
    };
    let found = signin::get_user(&state, &req.ctx, located.user_id).await?;
    signin::complete(&state, &req.ctx, found, req.device).await
}

async fn check_password(state: &State, req: &SignIn) -> Result<Option<user::Location>, Error> {
    let location = signin::find_user(state, &req.ctx, &req.email).await?;
    // For an unknown user, any permitted region's store runs the dummy check.
    let region = location
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
                user_id: location.as_ref().map(|l| l.user_id.clone()),
                password: req.password.clone(),
            },
        )
        .await?;
    Ok(location.filter(|_| checked.valid))
}
