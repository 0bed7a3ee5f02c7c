//! The last step of every sign-in (password, magic link, email code, MFA):
//! a user with MFA enabled gets an `mfa_token` to finish with a second
//! factor; everyone else gets a session.

use crate::codes::Kind;
use crate::{Error, State};
use idm_core::proto::auth::Authenticated;
use idm_core::proto::{event, session, store, user, Device, IssuerContext};
use idm_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What an MFA token stands for, kept in Redis under the token's hash.
#[derive(Serialize, Deserialize)]
pub struct PendingMfa {
    pub user_id: idm_core::UserId,
    pub region: idm_core::Region,
}

pub async fn open_session(
    state: &State,
    ctx: &IssuerContext,
    user: user::User,
    device: Device,
) -> Result<Authenticated, Error> {
    let issued = state
        .bus
        .send(&session::CreateSession {
            issuer_id: ctx.issuer_id.clone(),
            user_id: user.id.clone(),
            region: user.region,
            policy: ctx.policy.clone(),
            device,
        })
        .await?;
    Ok(Authenticated {
        user,
        session_id: issued.session_id,
        session_token: issued.session_token,
        refresh_token: issued.refresh_token,
        expires_at: issued.expires_at,
    })
}

/// A session, or `401 mfa_required` carrying a fresh single-use `mfa_token`.
pub async fn complete(
    state: &State,
    ctx: &IssuerContext,
    user: user::User,
    device: Device,
) -> Result<Authenticated, Error> {
    if !user.mfa_enabled {
        return open_session(state, ctx, user, device).await;
    }
    let token = idm_crypto::random_token::<32>();
    let pending = serde_json::to_string(&PendingMfa {
        user_id: user.id.clone(),
        region: user.region,
    })
    .map_err(|e| ApiError::internal_from(&e))?;
    state
        .codes
        .put(
            Kind::MfaToken,
            &ctx.issuer_id,
            &token,
            &token,
            &pending,
            state.mfa_token_ttl,
        )
        .await?;
    Err(
        ApiError::new(ErrorCode::MfaRequired, "a second factor is required")
            .with_details(serde_json::json!({ "mfa_token": token }))
            .into(),
    )
}

/// Holds a failed verification until the configured minimum has passed, so
/// failure paths cannot be told apart (or timed against success) cheaply.
pub async fn at_least(started: Instant, floor: std::time::Duration) {
    tokio::time::sleep_until((started + floor).into()).await;
}

pub async fn find_user(
    state: &State,
    ctx: &IssuerContext,
    email: &idm_core::Email,
) -> Result<Option<user::Location>, Error> {
    let located = state
        .bus
        .send(&user::Locate(user::FindByEmail {
            issuer_id: ctx.issuer_id.clone(),
            email: email.clone(),
        }))
        .await?;
    Ok(located.location)
}

pub async fn get_user(
    state: &State,
    ctx: &IssuerContext,
    user_id: idm_core::UserId,
) -> Result<user::User, Error> {
    Ok(state
        .bus
        .send(&user::GetUser {
            issuer_id: ctx.issuer_id.clone(),
            user_id,
        })
        .await?)
}

/// The user an address belongs to, created (verified, without a password) when
/// the issuer allows sign-up; `None` when neither. The caller has just proven
/// the address (magic link or email code).
///
/// Account pre-hijacking: someone may have signed up with this address and a
/// password without ever proving it, and kept a session, waiting for the
/// owner to arrive. So the first proof of an unverified account clears every
/// credential set before it (in the store, atomically with the flag) and ends
/// every session of the account before the owner gets theirs.
pub async fn user_for_address(
    state: &State,
    ctx: &IssuerContext,
    email: &idm_core::Email,
    device: &Device,
) -> Result<Option<user::User>, Error> {
    let (user, created) = match find_user(state, ctx, email).await? {
        Some(location) => (get_user(state, ctx, location.user_id).await?, false),
        None if ctx.policy.allow_sign_up => {
            let create = user::CreateUser {
                ctx: ctx.clone(),
                email: email.clone(),
                password: None,
                name: None,
                region: None,
                metadata: None,
                country: device.country.clone(),
            };
            (state.bus.send(&create).await?, true)
        }
        None => return Ok(None),
    };
    let prove = store::ProveEmail {
        issuer_id: ctx.issuer_id.clone(),
        user_id: user.id.clone(),
    };
    let proven = state.bus.send_to(user.region, &prove).await?;
    if proven.first_proof && !created {
        let ended = state
            .bus
            .send(&session::RevokeAll {
                issuer_id: ctx.issuer_id.clone(),
                user_id: user.id.clone(),
                region: Some(user.region),
            })
            .await?;
        tracing::info!(
            user = %user.id,
            sessions = ended.session_ids.len(),
            password = proven.password_cleared,
            mfa = proven.mfa_cleared,
            "first proof of the address: earlier credentials and sessions ended"
        );
        if proven.mfa_cleared {
            state
                .events
                .publish(
                    &ctx.issuer_id,
                    event::DomainEvent::MfaDisabled(event::MfaDisabled {
                        user_id: user.id.clone(),
                        method: "totp".into(),
                        reason: Some("unproven_address".into()),
                    }),
                )
                .await?;
        }
    }
    Ok(Some(user::User {
        email_verified: true,
        mfa_enabled: user.mfa_enabled && !proven.mfa_cleared,
        ..user
    }))
}
