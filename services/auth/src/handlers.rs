//! Sign-up and password sign-in.

use crate::{existence, signin};
use crate::{Error, State};
use idm_core::proto::auth::*;
use idm_core::proto::store::{self};
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
    if !req.ctx.policy.hide_account_existence {
        let created = create_user(&state, &req).await?;
        return signin::open_session(&state, &req.ctx, created, req.device).await;
    }
    // Both outcomes take at least the same minimum time, and both run one
    // Argon2 computation in a store, so neither the answer nor its timing
    // says whether the address was taken.
    let started = Instant::now();
    let result = match create_user(&state, &req).await {
        Ok(created) => signin::open_session(&state, &req.ctx, created, req.device.clone()).await,
        Err(Error::Api(e)) if e.code == ErrorCode::Conflict => {
            existence::answer_as_fresh(&state, &req).await
        }
        Err(e) => Err(e),
    };
    signin::at_least(started, state.min_sign_in).await;
    result
}

async fn create_user(state: &State, req: &SignUp) -> Result<user::User, Error> {
    Ok(state
        .bus
        .send(&user::CreateUser {
            ctx: req.ctx.clone(),
            email: req.email.clone(),
            password: Some(req.password.clone()),
            name: req.name.clone(),
            region: None,
            metadata: None,
            country: req.device.country.clone(),
        })
        .await?)
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
    if req.ctx.policy.require_verified_email_for_password && !found.email_verified {
        // Same answer as a wrong password: the password of an unproven
        // address may have been set by someone else (pre-hijacking).
        signin::at_least(started, state.min_sign_in).await;
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the email or password is not correct",
        )
        .into());
    }
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
    let checked = state
        .bus
        .send_to(
            region,
            &store::VerifyPassword {
                issuer_id: req.ctx.issuer_id.clone(),
                user_id: location.as_ref().map(|l| l.user_id.clone()),
                password: req.password.clone(),
            },
        )
        .await?;
    Ok(location.filter(|_| checked.valid))
}
