//! A user moving between regions (called by the deletion-worker, and the
//! export by the target store): see docs/REGIONS.md "Moving a user".

use crate::storage::IssuerStore;
use crate::{Error, State};
use idm_core::proto::deletion::Removed;
use idm_core::proto::moves::store::{CopyUserFrom, DigestUser, ExportUser, UserDigest, UserRows};
use idm_core::{ApiError, ErrorCode, Jurisdiction, Region};
use std::sync::Arc;

/// Data held in the EU never goes to a store outside it, whoever asks.
fn check_residency(from: Region, to: Region) -> Result<(), ApiError> {
    if from.jurisdiction() == Jurisdiction::Eu && to.jurisdiction() != Jurisdiction::Eu {
        return Err(ApiError::new(
            ErrorCode::ResidencyViolation,
            format!("data in {from} may not leave the EU (asked to go to {to})"),
        ));
    }
    Ok(())
}

/// The source's side: the user's rows, for the target store.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, to = %req.to))]
pub async fn export_user(state: Arc<State>, req: ExportUser) -> Result<UserRows, Error> {
    check_residency(state.region, req.to)?;
    if req.to == state.region {
        return Err(ApiError::validation("a user cannot be copied onto its own region").into());
    }
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    let rows = store.export_user(&req.issuer_id, &req.user_id).await?;
    if rows
        .tables
        .first()
        .is_none_or(|(_, users)| users.is_empty())
    {
        return Err(ApiError::not_found("user").into());
    }
    Ok(rows)
}

/// The target's side: pulls the rows from the source store and replaces
/// the user's rows here with them. The issuer's schema is created here
/// first if this region has none yet (as for a first sign-up).
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, from = %req.from))]
pub async fn copy_user_from(state: Arc<State>, req: CopyUserFrom) -> Result<Removed, Error> {
    check_residency(req.from, state.region)?;
    let bus = state
        .bus
        .as_ref()
        .ok_or_else(|| ApiError::internal_from(&"this store has no bus to reach the source"))?;
    let rows = bus
        .send_to(
            req.from,
            &ExportUser {
                issuer_id: req.issuer_id.clone(),
                user_id: req.user_id.clone(),
                to: state.region,
            },
        )
        .await?;
    let mut store = IssuerStore::open_provisioning(&state, &req.issuer_id).await?;
    let copied = store
        .import_user(&req.issuer_id, &req.user_id, &rows)
        .await?;
    drop(store);
    crate::handlers::announce_user_changed(&state, &req.issuer_id, &req.user_id).await;
    tracing::info!(tables = copied.len(), "moving user's rows copied here");
    Ok(Removed { removed: copied })
}

/// Row counts and checksums of the user's rows here, per table.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn digest_user(state: Arc<State>, req: DigestUser) -> Result<UserDigest, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    store.digest_user(&req.issuer_id, &req.user_id).await
}
