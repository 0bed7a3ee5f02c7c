//! The deletion service's bus operations (called by the edge).

use crate::{storage, Error, State};
use idm_core::ids::DeletionId;
use idm_core::proto::deletion::directory::BeginDeletion;
use idm_core::proto::deletion::{Deletion, GetDeletion, StartDeletion};
use idm_core::ApiError;
use std::sync::Arc;

async fn show(state: &State, job: &storage::JobRow) -> Result<Deletion, Error> {
    let steps = storage::steps(&state.db, &job.id).await?;
    storage::view(job, &steps)
}

/// Starts the deletion of a user, or answers the job that already exists
/// for it (one job per user: a second request is not a second job).
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn start_deletion(state: Arc<State>, req: StartDeletion) -> Result<Deletion, Error> {
    if let Some(job) = storage::job_of_user(&state.db, &req.issuer_id, &req.user_id).await? {
        // Its message, if it was lost, is queued again by the sweeper.
        return show(&state, &job).await;
    }
    // The directory records the id first: two racing requests get one job.
    let target = state
        .bus
        .send(&BeginDeletion {
            issuer_id: req.issuer_id.clone(),
            user_id: req.user_id.clone(),
            deletion_id: DeletionId::generate(),
        })
        .await?;
    storage::insert_job(
        &state.db,
        &target.deletion_id,
        &req.issuer_id,
        &req.user_id,
        target.region,
    )
    .await?;
    state.queue.enqueue(&target.deletion_id, "start").await?;
    tracing::info!(deletion = %target.deletion_id, region = %target.region, "deletion started");
    let job = storage::job(&state.db, &target.deletion_id, Some(&req.issuer_id))
        .await?
        .ok_or_else(|| ApiError::internal_from(&"a job just recorded is missing"))?;
    show(&state, &job).await
}

pub async fn get_deletion(state: Arc<State>, req: GetDeletion) -> Result<Deletion, Error> {
    let job = storage::job(&state.db, &req.deletion_id, Some(&req.issuer_id))
        .await?
        .ok_or_else(|| ApiError::not_found("deletion"))?;
    show(&state, &job).await
}
