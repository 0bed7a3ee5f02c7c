//! Personal access token operations of a regional store.

use crate::storage::IssuerStore;
use crate::{Error, State};
use idm_core::proto::store::ListPersonalTokens;
use idm_core::proto::store::*;
use idm_core::{ApiError, ErrorCode};
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn create(state: Arc<State>, req: CreatePersonalToken) -> Result<PersonalToken, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    store
        .insert_personal_token(&req)
        .await?
        .ok_or_else(|| ApiError::not_found("user").into())
}

pub async fn list(
    state: Arc<State>,
    ListPersonalTokens(req): ListPersonalTokens,
) -> Result<PersonalTokens, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let page = req.page.unwrap_or_default();
    let (data, has_more) = store.personal_tokens_of(&req.user_id, &page).await?;
    Ok(PersonalTokens { data, has_more })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, token = %req.token_id))]
pub async fn revoke(state: Arc<State>, req: RevokePersonalToken) -> Result<PersonalToken, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    store
        .revoke_personal_token(&req.user_id, &req.token_id)
        .await?
        .ok_or_else(|| ApiError::not_found("personal token").into())
}

pub async fn verify(state: Arc<State>, req: VerifyPersonalToken) -> Result<PersonalToken, Error> {
    let found = match IssuerStore::open(&state, &req.issuer_id).await {
        // No data here, so no such token: the same answer as an unknown one.
        Err(Error::NoSchema) => None,
        other => other?.use_personal_token(&req.token_hash).await?,
    };
    found.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "the personal token is not valid",
        )
        .into()
    })
}
