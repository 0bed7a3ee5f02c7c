//! The regional steps of a user deletion (called by the deletion-worker).

use crate::storage::IssuerStore;
use crate::{Error, State};
use idm_core::proto::deletion::store::{PurgeUser, RevokeUserPersonalTokens};
use idm_core::proto::deletion::Removed;
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn revoke_personal_tokens(
    state: Arc<State>,
    RevokeUserPersonalTokens(req): RevokeUserPersonalTokens,
) -> Result<Removed, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let n = store.revoke_all_personal_tokens(&req.user_id).await?;
    Ok(Removed {
        removed: [("personal_tokens_revoked".to_owned(), n)].into(),
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn purge_user(state: Arc<State>, PurgeUser(req): PurgeUser) -> Result<Removed, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    let removed = store.purge_user(&req.issuer_id, &req.user_id).await?;
    drop(store);
    crate::handlers::announce_user_changed(&state, &req.issuer_id, &req.user_id).await;
    tracing::info!(tables = removed.len(), "user's regional data deleted");
    Ok(Removed { removed })
}
