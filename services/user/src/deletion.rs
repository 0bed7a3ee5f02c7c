//! The directory's part of a user deletion (called by the deletion-worker):
//! mark the user `deleting`, remove their memberships, remove their
//! directory row and blind email index entry. Each is idempotent.

use crate::{directory, organizations, Error, State};
use idm_core::ids::DeletionId;
use idm_core::proto::deletion::directory::*;
use idm_core::proto::deletion::Removed;
use idm_core::ApiError;
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn begin(state: Arc<State>, req: BeginDeletion) -> Result<DeletionTarget, Error> {
    let (region, recorded) = directory::begin_deletion(
        &state.db,
        &req.issuer_id,
        &req.user_id,
        req.deletion_id.as_str(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    let deletion_id = DeletionId::parse(&recorded).map_err(|e| ApiError::internal_from(&e))?;
    tracing::info!(deletion = %deletion_id, %region, "user marked for deletion");
    Ok(DeletionTarget {
        deletion_id,
        region,
    })
}

pub async fn remove_memberships(
    state: Arc<State>,
    RemoveUserMemberships(req): RemoveUserMemberships,
) -> Result<Removed, Error> {
    let n = organizations::remove_all_of_user(&state, &req).await?;
    Ok(Removed {
        removed: [("memberships".to_owned(), n)].into(),
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn purge_entry(
    state: Arc<State>,
    PurgeDirectoryEntry(req): PurgeDirectoryEntry,
) -> Result<Removed, Error> {
    let n = directory::purge(&state.db, &req.issuer_id, &req.user_id).await?;
    Ok(Removed {
        // The row carries the blind email index entry: both go at once.
        removed: [
            ("directory_entries".to_owned(), n as i64),
            ("blind_index_entries".to_owned(), n as i64),
        ]
        .into(),
    })
}
