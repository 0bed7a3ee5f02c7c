//! auth's part of a user deletion (called by the deletion-worker): the
//! user's pending second-factor sign-ins (Redis entries whose payload names
//! the user) and their TOTP failure budget (Redis and the ledger). Codes
//! keyed by an address expire by themselves within minutes and hold keyed
//! hashes only. Idempotent.

use crate::budget::Budget;
use crate::{Error, State};
use idm_core::proto::deletion::auth::ForgetUser;
use idm_core::proto::deletion::Removed;
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn forget_user(state: Arc<State>, ForgetUser(req): ForgetUser) -> Result<Removed, Error> {
    let pending = state
        .codes
        .forget_user(&req.issuer_id, req.user_id.as_str())
        .await?;
    let budget = state
        .budgets
        .clear(Budget::Totp, &req.issuer_id, req.user_id.as_str())
        .await?;
    Ok(Removed {
        removed: [
            ("pending_mfa_sign_ins".to_owned(), pending),
            ("failure_budgets".to_owned(), i64::from(budget)),
        ]
        .into(),
    })
}
