//! User deletion jobs (API.md; docs/LIFECYCLE.md).

use super::Reply;
use crate::access::Incoming;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use idm_core::ids::DeletionId;
use idm_core::proto::deletion::{Deletion, GetDeletion, StartDeletion};
use idm_core::UserId;

/// Starts deleting a user: `202` with the job. A user already being (or
/// already) deleted answers its existing job; an unknown user is a 404.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 202, description = "The deletion job", body = Deletion)))]
pub async fn delete_user(
    incoming: Incoming,
    Path(id): Path<String>,
) -> Reply<(StatusCode, Json<Deletion>)> {
    let caller = incoming.authorize().await?;
    let request = StartDeletion {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: UserId::parse(&id)?,
    };
    let job = incoming.app.bus.send(&request).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// A deletion job: each step's status, attempts and last error, and the
/// receipt once completed.
#[utoipa::path(get, path = "/v1/deletions/{id}", tag = "users",
    params(("id" = String, Path, description = "The deletion's id")),
    responses((status = 200, description = "The deletion job", body = Deletion)))]
pub async fn get(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<Deletion>> {
    let caller = incoming.authorize().await?;
    let request = GetDeletion {
        issuer_id: caller.key.issuer_id.clone(),
        deletion_id: DeletionId::parse(&id)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}
