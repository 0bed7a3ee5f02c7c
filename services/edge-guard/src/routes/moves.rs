//! Moving a user to another region (docs/REGIONS.md "Moving a user").

use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use idm_core::ids::MoveId;
use idm_core::proto::moves::{GetMove, StartMove, UserMove};
use idm_core::{Region, UserId};
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The region to move the user's data to: the other EU region for an
    /// EU user, another best-effort region for a best-effort user (within
    /// the issuer's allowed regions).
    #[schema(value_type = Region)]
    region: String,
}

/// Moves the user's data to another region: `202` with the move job
/// (copy, verify, switch the directory, delete the source). While it runs
/// the user answers `409 user_being_moved` to reads, changes, deletion and
/// sign-in attempts fail as for an unknown address; the user's sessions and
/// personal tokens are revoked (they name the old region). A user already
/// moving answers the running job.
#[utoipa::path(post, path = "/v1/users/{id}/move", tag = "users", request_body = MoveRequest,
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 202, description = "The move job", body = UserMove)))]
pub async fn start(
    incoming: Incoming,
    Path(id): Path<String>,
    request: Result<Json<MoveRequest>, JsonRejection>,
) -> Reply<(StatusCode, Json<UserMove>)> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let request = body(request)?;
    let to = Region::parse(&request.region)?;
    let job = incoming
        .app
        .bus
        .send(&StartMove {
            ctx: caller.ctx(),
            user_id,
            to,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// A move job: each step's status, attempts, last error, where it acted and
/// what it counted (rows copied and verified per table, ...).
#[utoipa::path(get, path = "/v1/user_moves/{id}", tag = "users",
    params(("id" = String, Path, description = "The move's id")),
    responses((status = 200, description = "The move job", body = UserMove)))]
pub async fn get(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<UserMove>> {
    let caller = incoming.authorize().await?;
    let request = GetMove {
        issuer_id: caller.key.issuer_id.clone(),
        move_id: MoveId::parse(&id)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}
