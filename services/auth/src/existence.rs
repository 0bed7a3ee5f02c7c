//! Hiding whether an address has an account (issuer policy
//! `hide_account_existence`): sign-up of a taken address answers exactly like
//! a fresh sign-up, with a user object of the same shape (a new id, the
//! region a fresh sign-up would get) and a decoy session that never verifies,
//! and the existing owner gets a notice instead. Nothing about the existing
//! account appears in the answer.

use crate::notices::{self, Notice};
use crate::{Error, State};
use idm_core::proto::auth::{Authenticated, SignUp};
use idm_core::proto::store::{self};
use idm_core::proto::{session, user};
use idm_core::UserId;
use std::time::Duration;

const NOTICE_WINDOW: Duration = Duration::from_secs(3600);

pub async fn answer_as_fresh(state: &State, req: &SignUp) -> Result<Authenticated, Error> {
    let placed = state
        .bus
        .send(&user::Place {
            ctx: req.ctx.clone(),
            country: req.device.country.clone(),
        })
        .await?;
    // A fresh sign-up hashes the password in its region: spend the same.
    let _ = state
        .bus
        .send_to(
            placed.region,
            &store::VerifyPassword {
                issuer_id: req.ctx.issuer_id.clone(),
                user_id: None,
                password: req.password.clone(),
            },
        )
        .await?;
    // One notice per address and hour, however often someone tries: the
    // notice must not become a way to flood the owner's inbox.
    if state
        .codes
        .first_within(
            "signup-notice",
            &req.ctx.issuer_id,
            req.email.canonical(),
            NOTICE_WINDOW,
        )
        .await?
    {
        notices::send(state, &req.ctx, req.email.as_str(), Notice::SignUpAttempt).await?;
    }
    let user = user::User {
        id: UserId::generate(),
        email: req.email.as_str().to_owned(),
        email_verified: false,
        name: req.name.clone().map(String::from),
        region: placed.region,
        metadata: serde_json::json!({}),
        mfa_enabled: false,
        created_at: as_stored(idm_core::now()),
    };
    let decoy = state
        .bus
        .send(&session::DecoySession(session::CreateSession {
            issuer_id: req.ctx.issuer_id.clone(),
            user_id: user.id.clone(),
            region: user.region,
            policy: req.ctx.policy.clone(),
            device: req.device.clone(),
        }))
        .await?;
    Ok(Authenticated {
        user,
        session_id: decoy.session_id,
        session_token: decoy.session_token,
        refresh_token: decoy.refresh_token,
        expires_at: decoy.expires_at,
    })
}

/// A time as Postgres would have stored it (microseconds): a real user's
/// `created_at` never has nanoseconds, so a decoy's must not either.
fn as_stored(t: idm_core::Timestamp) -> idm_core::Timestamp {
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .unwrap_or(t)
}
