//! The deletion service's bus operations (called by the edge).

use crate::{storage, Error, State};
use idm_core::ids::{DeletionId, MoveId};
use idm_core::proto::deletion::directory::BeginDeletion;
use idm_core::proto::deletion::{Deletion, GetDeletion, StartDeletion};
use idm_core::proto::moves::directory::BeginMove;
use idm_core::proto::moves::{GetMove, StartMove, UserMove};
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
    state
        .queue
        .enqueue(target.deletion_id.as_str(), "start")
        .await?;
    tracing::info!(deletion = %target.deletion_id, region = %target.region, "deletion started");
    let job = storage::job(&state.db, target.deletion_id.as_str(), Some(&req.issuer_id))
        .await?
        .ok_or_else(|| ApiError::internal_from(&"a job just recorded is missing"))?;
    show(&state, &job).await
}

pub async fn get_deletion(state: Arc<State>, req: GetDeletion) -> Result<Deletion, Error> {
    let job = storage::job(&state.db, req.deletion_id.as_str(), Some(&req.issuer_id))
        .await?
        .ok_or_else(|| ApiError::not_found("deletion"))?;
    show(&state, &job).await
}

// ---- Regions at scale: moving a user ----

async fn show_move(state: &State, job: &storage::JobRow) -> Result<UserMove, Error> {
    let steps = storage::steps(&state.db, &job.id).await?;
    storage::move_view(job, &steps)
}

/// Starts moving a user to another region, or answers the unfinished move
/// of the user (whatever region this request names): one move at a time.
/// The directory checks the rules and records the move id first, so two
/// racing requests get one job; a request after a crash between the two
/// records finds the directory's id and records its job.
#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id, user = %req.user_id, to = %req.to))]
pub async fn start_move(state: Arc<State>, req: StartMove) -> Result<UserMove, Error> {
    let issuer = req.ctx.issuer_id.clone();
    if let Some(job) = storage::unfinished_move_of_user(&state.db, &issuer, &req.user_id).await? {
        return show_move(&state, &job).await;
    }
    let target = state
        .bus
        .send(&BeginMove {
            ctx: req.ctx,
            user_id: req.user_id.clone(),
            move_id: MoveId::generate(),
            to: req.to,
        })
        .await?;
    storage::insert_move(
        &state.db,
        &target.move_id,
        &issuer,
        &req.user_id,
        target.from,
        target.to,
    )
    .await?;
    state
        .queue
        .enqueue(target.move_id.as_str(), "start")
        .await?;
    tracing::info!(move_id = %target.move_id, from = %target.from, to = %target.to, "user move started");
    let job = storage::job(&state.db, target.move_id.as_str(), Some(&issuer))
        .await?
        .ok_or_else(|| ApiError::internal_from(&"a move just recorded is missing"))?;
    show_move(&state, &job).await
}

pub async fn get_move(state: Arc<State>, req: GetMove) -> Result<UserMove, Error> {
    let job = storage::job(&state.db, req.move_id.as_str(), Some(&req.issuer_id))
        .await?
        .filter(storage::JobRow::is_move)
        .ok_or_else(|| ApiError::not_found("user move"))?;
    show_move(&state, &job).await
}
