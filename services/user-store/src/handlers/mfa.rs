//! Email verification flag, TOTP and backup-code operations of a regional store.

use crate::handlers::announce_user_changed;
use crate::storage::IssuerStore;
use crate::{Error, State};
use idm_core::proto::store::DisableTotp;
use idm_core::proto::store::GetCredentials;
use idm_core::proto::store::GetTotp;
use idm_core::proto::store::*;
use idm_core::proto::Done;
use idm_core::ApiError;
use std::sync::Arc;

fn found(ok: bool) -> Result<Done, Error> {
    if ok {
        Ok(Done::default())
    } else {
        Err(ApiError::not_found("user").into())
    }
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn prove_email(state: Arc<State>, req: ProveEmail) -> Result<EmailProven, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    let proven = store
        .prove_email(&req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    announce_user_changed(&state, &req.issuer_id, &req.user_id).await;
    if proven.first_proof && (proven.password_cleared || proven.mfa_cleared) {
        tracing::warn!(
            password = proven.password_cleared,
            mfa = proven.mfa_cleared,
            "first proof of the address cleared credentials set before it"
        );
    }
    Ok(proven)
}

pub async fn credentials(
    state: Arc<State>,
    GetCredentials(req): GetCredentials,
) -> Result<Credentials, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    store
        .credentials(&req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user").into())
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn disable_totp(
    state: Arc<State>,
    DisableTotp(req): DisableTotp,
) -> Result<Accepted, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    let accepted = store.disable_totp(&req.user_id).await?;
    announce_user_changed(&state, &req.issuer_id, &req.user_id).await;
    Ok(Accepted { accepted })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn replace_backup_codes(
    state: Arc<State>,
    req: ReplaceBackupCodes,
) -> Result<Accepted, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    Ok(Accepted {
        accepted: store
            .replace_backup_codes(&req.user_id, &req.backup_code_hashes)
            .await?,
    })
}

/// Sealed TOTP secrets of every issuer in the region, for auth's re-seal
/// pass after a master-key rotation (they stay sealed: the store cannot
/// open them).
#[tracing::instrument(skip_all, fields(region = %state.region, limit = req.limit))]
pub async fn list_sealed_totp(
    state: Arc<State>,
    req: ListSealedTotp,
) -> Result<SealedTotpPage, Error> {
    crate::storage::sealed_totp(&state.db, req.after.as_ref(), req.limit).await
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn reseal_totp(state: Arc<State>, req: ResealTotp) -> Result<Accepted, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    Ok(Accepted {
        accepted: store
            .reseal_totp(&req.user_id, req.slot, &req.old_sealed, &req.new_sealed)
            .await?,
    })
}

pub async fn set_pending_totp(state: Arc<State>, req: SetPendingTotp) -> Result<Done, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    found(
        store
            .set_pending_totp(&req.user_id, &req.sealed_secret)
            .await?,
    )
}

pub async fn get_totp(state: Arc<State>, GetTotp(req): GetTotp) -> Result<TotpState, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    store
        .totp_state(&req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user").into())
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn enable_totp(state: Arc<State>, req: EnableTotp) -> Result<Done, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    let enabled = store
        .enable_totp(&req.user_id, &req.backup_code_hashes, req.step)
        .await?;
    announce_user_changed(&state, &req.issuer_id, &req.user_id).await;
    found(enabled)
}

pub async fn use_totp_step(state: Arc<State>, req: UseTotpStep) -> Result<Accepted, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    Ok(Accepted {
        accepted: store.use_totp_step(&req.user_id, req.step).await?,
    })
}

pub async fn use_backup_code(state: Arc<State>, req: UseBackupCode) -> Result<Accepted, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    Ok(Accepted {
        accepted: store.use_backup_code(&req.user_id, &req.code_hash).await?,
    })
}
