//! The `directory` schema: user id → region, and the blind email index.
//! No plaintext personal data is stored here.

use crate::Error;
use idm_core::proto::user::PlacementReason;
use idm_core::{ApiError, IssuerId, Region, Timestamp, UserId};
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};

/// The `directory` schema: SQL files under `services/user/migrations/`.
pub static MIGRATIONS: idm_db::Migrator = sqlx::migrate!("./migrations");

/// A placement that a crashed sign-up left pending this long may be taken over.
const STALE_PENDING_SECONDS: f64 = 60.0;

/// Reserves the address for a new user. `false` when it is taken.
pub async fn reserve(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
    reason: PlacementReason,
    index: &[u8],
) -> Result<bool, Error> {
    let row = sqlx::query!(
        "INSERT INTO directory.users (id, issuer_id, region, email_index, placement_reason) VALUES ($1, $2, $3, $4, $6)
             ON CONFLICT (issuer_id, email_index) DO UPDATE
                 SET id = EXCLUDED.id, region = EXCLUDED.region, created_at = now(),
                     placement_reason = EXCLUDED.placement_reason, unavailable_region = NULL
                 WHERE directory.users.status = 'pending'
                   AND directory.users.created_at < now() - make_interval(secs => $5)
             RETURNING id",
        user.as_str(),
        issuer.as_str(),
        region.as_str(),
        index,
        STALE_PENDING_SECONDS,
        reason.as_str(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(row.is_some())
}

/// The reservation moves to a fallback region because `unavailable` (the
/// region first chosen) is down; the evidence says so.
pub async fn move_reservation(
    db: &Db,
    user: &UserId,
    region: Region,
    unavailable: Region,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE directory.users SET region = $2, placement_reason = 'fallback', unavailable_region = $3
             WHERE id = $1 AND status = 'pending'",
        user.as_str(),
        region.as_str(),
        unavailable.as_str(),
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

pub async fn activate(db: &Db, user: &UserId) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE directory.users SET status = 'active', placed_at = now() WHERE id = $1",
        user.as_str(),
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

pub async fn release(db: &Db, user: &UserId) -> Result<(), Error> {
    sqlx::query!(
        "DELETE FROM directory.users WHERE id = $1 AND status = 'pending'",
        user.as_str(),
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

fn region_of(raw: &str) -> Result<Region, Error> {
    Region::parse(raw).map_err(|e| ApiError::internal_from(&e).into())
}

/// The region of an active user of `issuer`; another issuer's user is absent.
/// A user being deleted is refused (`deletion_in_progress`): it can no
/// longer be read, changed or signed in to.
pub async fn region_of_user(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
) -> Result<Option<Region>, Error> {
    let row = sqlx::query!(
        "SELECT region, status, deletion_id, move_id FROM directory.users
             WHERE id = $1 AND issuer_id = $2 AND status IN ('active', 'deleting', 'moving')",
        user.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    match row {
        None => Ok(None),
        Some(r) if r.status == "deleting" => Err(being_deleted(r.deletion_id.as_deref()).into()),
        Some(r) if r.status == "moving" => Err(being_moved(r.move_id.as_deref()).into()),
        Some(r) => region_of(&r.region).map(Some),
    }
}

/// `user_being_moved`, naming the job: while a move copies and verifies the
/// user's data, nothing may change it (a change would be lost or copied
/// half), so reads, writes and deletion wait for the switch.
pub fn being_moved(move_id: Option<&str>) -> ApiError {
    ApiError::new(
        idm_core::ErrorCode::UserBeingMoved,
        "the user is being moved to another region; retry once the move has finished",
    )
    .with_details(serde_json::json!({ "move_id": move_id }))
}

/// `deletion_in_progress`, naming the job.
pub fn being_deleted(deletion_id: Option<&str>) -> ApiError {
    ApiError::new(
        idm_core::ErrorCode::DeletionInProgress,
        "the user is being deleted",
    )
    .with_details(serde_json::json!({ "deletion_id": deletion_id }))
}

/// Marks a user of `issuer` `deleting` under `deletion` (unless it already
/// is, then the first deletion id stays): the region and the recorded id, or
/// `None` for an unknown user (or another issuer's, or one still pending).
pub async fn begin_deletion(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
    deletion: &str,
) -> Result<Option<(Region, String)>, Error> {
    let row = sqlx::query!(
        r#"UPDATE directory.users
               SET status = 'deleting', deletion_id = COALESCE(deletion_id, $3)
             WHERE id = $1 AND issuer_id = $2 AND status IN ('active', 'deleting')
             RETURNING region, deletion_id AS "deletion_id!""#,
        user.as_str(),
        issuer.as_str(),
        deletion,
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    if row.is_none() {
        // A user being moved is deleted after the move: deleting it now
        // would race the copy (its data could survive in the target).
        let moving = sqlx::query_scalar!(
            "SELECT move_id FROM directory.users
                 WHERE id = $1 AND issuer_id = $2 AND status = 'moving'",
            user.as_str(),
            issuer.as_str(),
        )
        .fetch_optional(&mut *db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?;
        if let Some(move_id) = moving {
            return Err(being_moved(move_id.as_deref()).into());
        }
    }
    row.map(|r| Ok((region_of(&r.region)?, r.deletion_id)))
        .transpose()
}

/// A move the directory recorded: its id, and from where to where.
pub struct MoveRecord {
    pub move_id: String,
    pub from: Region,
    pub to: Region,
}

/// Marks an active user of `issuer` `moving` to `to` under `move_id`, after
/// `check(from)` accepts the move; a user already moving answers the move
/// first recorded (whatever `to` this call asked). `None` for an unknown
/// user (or another issuer's, or one still pending); `deletion_in_progress`
/// for one being deleted. The row is locked while `check` runs, so two
/// racing requests record one move.
pub async fn begin_move<F>(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
    move_id: &str,
    to: Region,
    check: F,
) -> Result<Option<MoveRecord>, Error>
where
    F: FnOnce(Region) -> Result<(), ApiError>,
{
    let mut client = db.get().await?;
    let tx = client.transaction().await?;
    let row = sqlx::query!(
        "SELECT region, status, deletion_id, move_id, move_to FROM directory.users
             WHERE id = $1 AND issuer_id = $2 AND status IN ('active', 'deleting', 'moving')
             FOR UPDATE",
        user.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *tx.conn().await)
    .await
    .map_err(DbError::from)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let from = region_of(&row.region)?;
    match (row.status.as_str(), row.move_id, row.move_to) {
        ("deleting", _, _) => Err(being_deleted(row.deletion_id.as_deref()).into()),
        ("moving", Some(recorded), Some(target)) => Ok(Some(MoveRecord {
            move_id: recorded,
            from,
            to: region_of(&target)?,
        })),
        ("moving", _, _) => Err(ApiError::internal_from(&"a moving user without its move").into()),
        _ => {
            check(from)?;
            sqlx::query!(
                "UPDATE directory.users SET status = 'moving', move_id = $2, move_to = $3
                     WHERE id = $1",
                user.as_str(),
                move_id,
                to.as_str(),
            )
            .execute(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
            tx.commit().await?;
            Ok(Some(MoveRecord {
                move_id: move_id.to_owned(),
                from,
                to,
            }))
        }
    }
}

/// Points a moving user's row at `to` and makes it active again, with the
/// evidence (`moved`, `moved_from`, `moved_at`, placed now). Idempotent:
/// `false` when it had already switched (a repeated step).
pub async fn switch_region(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
    move_id: &str,
    from: Region,
    to: Region,
) -> Result<bool, Error> {
    let done = sqlx::query!(
        "UPDATE directory.users
            SET region = $4, status = 'active', placement_reason = 'moved', unavailable_region = NULL,
                moved_from = $5, moved_at = now(), placed_at = now(), move_id = NULL, move_to = NULL
          WHERE id = $1 AND issuer_id = $2 AND status = 'moving' AND move_id = $3",
        user.as_str(),
        issuer.as_str(),
        move_id,
        to.as_str(),
        from.as_str(),
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    if done.rows_affected() == 1 {
        return Ok(true);
    }
    // Already switched by an earlier attempt whose answer was lost: the row
    // points at the target with this move's evidence.
    let switched = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM directory.users
            WHERE id = $1 AND issuer_id = $2 AND region = $3 AND moved_from = $4
              AND status IN ('active', 'deleting')"#,
        user.as_str(),
        issuer.as_str(),
        to.as_str(),
        from.as_str(),
    )
    .fetch_one(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    if switched == 1 {
        Ok(false)
    } else {
        Err(ApiError::internal_from(&"the user is neither moving under this move nor moved").into())
    }
}

/// Removes the directory row of a user being deleted (its blind email index
/// goes with it): 1 when it was there, 0 when already gone.
pub async fn purge(db: &Db, issuer: &IssuerId, user: &UserId) -> Result<u64, Error> {
    let done = sqlx::query!(
        "DELETE FROM directory.users WHERE id = $1 AND issuer_id = $2 AND status = 'deleting'",
        user.as_str(),
        issuer.as_str(),
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(done.rows_affected())
}

pub async fn by_index(
    db: &Db,
    issuer: &IssuerId,
    index: &[u8],
) -> Result<Option<(UserId, Region)>, Error> {
    let row = sqlx::query!(
"SELECT id, region FROM directory.users WHERE issuer_id = $1 AND email_index = $2 AND status = 'active'",
issuer.as_str(),
index,
)
        .fetch_optional(&mut *db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?;
    row.map(|r| {
        Ok((
            UserId::parse(&r.id).map_err(|e| ApiError::internal_from(&e))?,
            region_of(&r.region)?,
        ))
    })
    .transpose()
}

/// What the directory knows of a user's placement.
pub struct Placement {
    pub region: Region,
    pub reason: PlacementReason,
    pub unavailable_region: Option<Region>,
    pub placed_at: Timestamp,
    pub moved_from: Option<Region>,
    pub moved_at: Option<Timestamp>,
}

/// The placement of an active user of `issuer`; another issuer's is absent.
pub async fn placement_of(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
) -> Result<Option<Placement>, Error> {
    let row = sqlx::query!(
        r#"SELECT region, placement_reason, unavailable_region,
                  COALESCE(placed_at, created_at) AS "placed_at!",
                  status, deletion_id, move_id, moved_from, moved_at
             FROM directory.users WHERE id = $1 AND issuer_id = $2 AND status IN ('active', 'deleting', 'moving')"#,
        user.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    if let Some(r) = &row {
        if r.status == "deleting" {
            return Err(being_deleted(r.deletion_id.as_deref()).into());
        }
        if r.status == "moving" {
            return Err(being_moved(r.move_id.as_deref()).into());
        }
    }
    row.map(|r| {
        Ok(Placement {
            region: region_of(&r.region)?,
            reason: r
                .placement_reason
                .as_deref()
                .and_then(PlacementReason::parse)
                .unwrap_or(PlacementReason::Unrecorded),
            unavailable_region: r.unavailable_region.as_deref().map(region_of).transpose()?,
            placed_at: r.placed_at,
            moved_from: r.moved_from.as_deref().map(region_of).transpose()?,
            moved_at: r.moved_at,
        })
    })
    .transpose()
}

// ---- Users (issue 11): listing and address changes ----

/// One row of the user list: who, and which region to read the profile from.
pub struct Listed {
    pub id: UserId,
    pub region: Region,
}

/// What `GET /v1/users` filters on (all on directory columns).
pub struct ListFilter {
    pub region: Option<Region>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

/// A page of the issuer's active users, newest first (directory creation
/// time, then id). Each statement walks one partial index from the cursor
/// (`users_by_issuer_created`, or `users_by_issuer_region_created` with a
/// region), so a page costs the same whatever the issuer's size, and no
/// statement reads another issuer's rows. `starting_after` must be one of
/// the issuer's users (`not_found` otherwise).
pub async fn list(
    db: &Db,
    issuer: &IssuerId,
    page: &idm_core::page::Page,
    filter: &ListFilter,
) -> Result<(Vec<Listed>, bool), Error> {
    let client = db.get().await?;
    let (after_at, after_id) = match &page.starting_after {
        None => (None, None),
        Some(raw) => {
            let id = UserId::parse(raw)?;
            let at = sqlx::query_scalar!(
                "SELECT created_at FROM directory.users WHERE id = $1 AND issuer_id = $2 AND status = 'active'",
                id.as_str(),
                issuer.as_str(),
            )
            .fetch_optional(&mut *client.conn().await)
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| ApiError::not_found("user"))?;
            (Some(at), Some(id))
        }
    };
    let after_id = after_id.as_ref().map(UserId::as_str);
    let rows: Vec<(String, String)> = match filter.region {
        Some(region) => sqlx::query!(
            "SELECT id, region FROM directory.users
              WHERE issuer_id = $1 AND status = 'active' AND region = $2
                AND ($3::timestamptz IS NULL OR created_at > $3)
                AND ($4::timestamptz IS NULL OR created_at < $4)
                AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
              ORDER BY created_at DESC, id DESC LIMIT $7",
            issuer.as_str(),
            region.as_str(),
            filter.created_after,
            filter.created_before,
            after_at,
            after_id,
            page.fetch(),
        )
        .fetch_all(&mut *client.conn().await)
        .await
        .map_err(DbError::from)?
        .into_iter()
        .map(|r| (r.id, r.region))
        .collect(),
        None => sqlx::query!(
            "SELECT id, region FROM directory.users
              WHERE issuer_id = $1 AND status = 'active'
                AND ($2::timestamptz IS NULL OR created_at > $2)
                AND ($3::timestamptz IS NULL OR created_at < $3)
                AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
              ORDER BY created_at DESC, id DESC LIMIT $6",
            issuer.as_str(),
            filter.created_after,
            filter.created_before,
            after_at,
            after_id,
            page.fetch(),
        )
        .fetch_all(&mut *client.conn().await)
        .await
        .map_err(DbError::from)?
        .into_iter()
        .map(|r| (r.id, r.region))
        .collect(),
    };
    let listed = rows
        .into_iter()
        .map(|(id, region)| {
            Ok(Listed {
                id: UserId::parse(&id).map_err(|e| ApiError::internal_from(&e))?,
                region: region_of(&region)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(page.cut(listed))
}

/// Moves a user's blind index to `index` atomically with `apply` (the
/// regional store's change): the directory row is updated and locked in a
/// transaction, `apply` runs, and the transaction commits only if `apply`
/// succeeded; otherwise it rolls back and the old index stays. While it is
/// open, the new index is held (a sign-up with that address waits on it,
/// then finds it taken). `conflict` when another user of the issuer has the
/// address, `not_found` when the user is not active.
pub async fn move_index<T, F>(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
    index: &[u8],
    apply: F,
) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    let mut client = db.get().await?;
    let tx = client.transaction().await?;
    let moved = sqlx::query_scalar!(
        "UPDATE directory.users SET email_index = $3
          WHERE id = $1 AND issuer_id = $2 AND status = 'active' RETURNING id",
        user.as_str(),
        issuer.as_str(),
        index,
    )
    .fetch_optional(&mut *tx.conn().await)
    .await
    .map_err(DbError::from)
    .map_err(|e| -> Error {
        if e.is_unique_violation() {
            ApiError::conflict("a user with this email already exists").into()
        } else {
            e.into()
        }
    })?;
    if moved.is_none() {
        return Err(ApiError::not_found("user").into());
    }
    let applied = apply.await?;
    tx.commit().await?;
    Ok(applied)
}
