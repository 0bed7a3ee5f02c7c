//! The operator's recovery path: the tenant's backend (a secret key with
//! `users:manage`) clears a user's factor locks and failure counts, after
//! checking the person some other way. Every other path is in the flows
//! themselves (a backup code clears a TOTP lock; a magic link clears the
//! email-code lock of its address).

use crate::budget::Budget;
use crate::{signin, Error, State};
use idm_core::proto::auth::{UnlockFactors, Unlocked};
use idm_core::proto::event;
use idm_core::proto::event::DomainEvent;
use idm_core::Email;
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id, user = %req.user_id))]
pub async fn unlock_factors(state: Arc<State>, req: UnlockFactors) -> Result<Unlocked, Error> {
    let user = signin::get_user(&state, &req.ctx, req.user_id.clone()).await?;
    let issuer = &req.ctx.issuer_id;
    let totp = state
        .budgets
        .clear(Budget::Totp, issuer, user.id.as_str())
        .await?;
    let email = Email::parse(&user.email)?;
    let email_code = state
        .budgets
        .clear(Budget::EmailCode, issuer, email.canonical())
        .await?;
    let cleared = totp || email_code;
    if cleared {
        state
            .events
            .publish(
                issuer,
                DomainEvent::FactorUnlocked(event::FactorUnlocked {
                    user_id: user.id.clone(),
                    factor: None,
                    by: "operator".into(),
                }),
            )
            .await?;
    }
    Ok(Unlocked {
        user_id: user.id,
        cleared,
    })
}
