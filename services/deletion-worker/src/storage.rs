//! The `deletion` schema: jobs and their steps.

use crate::Error;
use idm_core::ids::{DeletionId, MoveId};
use idm_core::proto::deletion::{
    Deletion, DeletionStatus, DeletionStep, Receipt, ReceiptStep, StepStatus, STEPS,
};
use idm_core::proto::moves::{MoveStep, UserMove, STEPS as MOVE_STEPS};
use idm_core::{ApiError, IssuerId, Region, Timestamp, UserId};
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct JobRow {
    pub id: String,
    pub issuer_id: String,
    pub user_id: String,
    pub region: String,
    pub status: String,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub receipt: Option<serde_json::Value>,
    /// `deletion` or `move`.
    pub kind: String,
    /// A move's target region.
    pub target_region: Option<String>,
}

pub struct StepRow {
    pub position: i32,
    pub name: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub completed_at: Option<Timestamp>,
    pub location: Option<String>,
    pub removed: Option<serde_json::Value>,
}

fn corrupt(what: &str) -> Error {
    ApiError::internal_from(&format!("deletion row does not parse: {what}")).into()
}

impl JobRow {
    pub fn deletion_id(&self) -> Result<DeletionId, Error> {
        DeletionId::parse(&self.id).map_err(|_| corrupt("id"))
    }
    pub fn issuer(&self) -> Result<IssuerId, Error> {
        IssuerId::parse(&self.issuer_id).map_err(|_| corrupt("issuer_id"))
    }
    pub fn user(&self) -> Result<UserId, Error> {
        UserId::parse(&self.user_id).map_err(|_| corrupt("user_id"))
    }
    pub fn region(&self) -> Result<Region, Error> {
        Region::parse(&self.region).map_err(|_| corrupt("region"))
    }
    pub fn move_id(&self) -> Result<MoveId, Error> {
        MoveId::parse(&self.id).map_err(|_| corrupt("id"))
    }
    pub fn target(&self) -> Result<Region, Error> {
        self.target_region
            .as_deref()
            .and_then(|r| Region::parse(r).ok())
            .ok_or_else(|| corrupt("target_region"))
    }
    pub fn is_move(&self) -> bool {
        self.kind == "move"
    }
}

fn job_status(raw: &str) -> Result<DeletionStatus, Error> {
    match raw {
        "running" => Ok(DeletionStatus::Running),
        "stalled" => Ok(DeletionStatus::Stalled),
        "completed" => Ok(DeletionStatus::Completed),
        _ => Err(corrupt("status")),
    }
}

fn step_status(raw: &str) -> Result<StepStatus, Error> {
    match raw {
        "pending" => Ok(StepStatus::Pending),
        "failing" => Ok(StepStatus::Failing),
        "completed" => Ok(StepStatus::Completed),
        _ => Err(corrupt("step status")),
    }
}

/// The API view of a job.
pub fn view(job: &JobRow, steps: &[StepRow]) -> Result<Deletion, Error> {
    let receipt = job
        .receipt
        .clone()
        .map(serde_json::from_value::<Receipt>)
        .transpose()
        .map_err(|_| corrupt("receipt"))?;
    Ok(Deletion {
        id: job.deletion_id()?,
        user_id: job.user()?,
        status: job_status(&job.status)?,
        region: job.region()?,
        steps: steps
            .iter()
            .map(|s| {
                Ok(DeletionStep {
                    name: s.name.clone(),
                    status: step_status(&s.status)?,
                    attempts: s.attempts,
                    last_error: s.last_error.clone(),
                    completed_at: s.completed_at,
                })
            })
            .collect::<Result<_, Error>>()?,
        receipt,
        created_at: job.created_at,
        completed_at: job.completed_at,
    })
}

pub async fn job_of_user(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
) -> Result<Option<JobRow>, Error> {
    Ok(sqlx::query_as!(
        JobRow,
        "SELECT id, issuer_id, user_id, region, status, created_at, completed_at, receipt, kind, target_region
             FROM deletion.jobs WHERE issuer_id = $1 AND user_id = $2 AND kind = 'deletion'",
        issuer.as_str(),
        user.as_str(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?)
}

/// A job by id; `issuer` scopes it (another issuer's job is absent).
/// The id is a deletion's or a move's (their prefixes differ).
pub async fn job(db: &Db, id: &str, issuer: Option<&IssuerId>) -> Result<Option<JobRow>, Error> {
    Ok(sqlx::query_as!(
        JobRow,
        "SELECT id, issuer_id, user_id, region, status, created_at, completed_at, receipt, kind, target_region
             FROM deletion.jobs WHERE id = $1 AND ($2::text IS NULL OR issuer_id = $2)",
        id,
        issuer.map(|i| i.as_str()),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?)
}

pub async fn steps(db: &Db, id: &str) -> Result<Vec<StepRow>, Error> {
    Ok(sqlx::query_as!(
        StepRow,
        "SELECT position, name, status, attempts, last_error, completed_at, location, removed
             FROM deletion.steps WHERE job_id = $1 ORDER BY position",
        id,
    )
    .fetch_all(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?)
}

/// Records a new deletion job and its steps (nothing if it is already
/// recorded).
pub async fn insert_job(
    db: &Db,
    id: &DeletionId,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
) -> Result<(), Error> {
    insert(db, id.as_str(), issuer, user, region, None, &STEPS).await
}

/// Records a new move job and its steps (nothing if it is already
/// recorded, or the user has another unfinished move).
pub async fn insert_move(
    db: &Db,
    id: &MoveId,
    issuer: &IssuerId,
    user: &UserId,
    from: Region,
    to: Region,
) -> Result<(), Error> {
    insert(db, id.as_str(), issuer, user, from, Some(to), &MOVE_STEPS).await
}

async fn insert(
    db: &Db,
    id: &str,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
    target: Option<Region>,
    steps: &[&str],
) -> Result<(), Error> {
    let mut client = db.get().await?;
    let tx = client.transaction().await?;
    let inserted = sqlx::query!(
        "INSERT INTO deletion.jobs (id, issuer_id, user_id, region, kind, target_region)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        id,
        issuer.as_str(),
        user.as_str(),
        region.as_str(),
        if target.is_some() { "move" } else { "deletion" },
        target.map(|t| t.as_str()),
    )
    .execute(&mut *tx.conn().await)
    .await
    .map_err(DbError::from)?;
    if inserted.rows_affected() == 1 {
        let names: Vec<String> = steps.iter().map(|s| (*s).to_owned()).collect();
        let positions: Vec<i32> = (0..steps.len() as i32).collect();
        sqlx::query!(
            "INSERT INTO deletion.steps (job_id, position, name)
                 SELECT $1, p, n FROM unnest($2::int[], $3::text[]) AS s(p, n)",
            id,
            &positions,
            &names,
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
    }
    tx.commit().await?;
    Ok(())
}

/// The user's unfinished move, if any (at most one).
pub async fn unfinished_move_of_user(
    db: &Db,
    issuer: &IssuerId,
    user: &UserId,
) -> Result<Option<JobRow>, Error> {
    Ok(sqlx::query_as!(
        JobRow,
        "SELECT id, issuer_id, user_id, region, status, created_at, completed_at, receipt, kind, target_region
             FROM deletion.jobs
             WHERE issuer_id = $1 AND user_id = $2 AND kind = 'move' AND status <> 'completed'",
        issuer.as_str(),
        user.as_str(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?)
}

/// Sets a completed step back to pending (a copy that did not verify is
/// made again).
pub async fn redo_step(db: &Db, id: &str, name: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE deletion.steps SET status = 'pending', completed_at = NULL
             WHERE job_id = $1 AND name = $2",
        id,
        name,
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// Marks a move completed (its steps are its record).
pub async fn complete_move(db: &Db, id: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE deletion.jobs SET status = 'completed', completed_at = now(), updated_at = now(),
                lease_until = NULL
             WHERE id = $1",
        id,
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// The API view of a move.
pub fn move_view(job: &JobRow, steps: &[StepRow]) -> Result<UserMove, Error> {
    Ok(UserMove {
        id: job.move_id()?,
        user_id: job.user()?,
        status: job_status(&job.status)?,
        from_region: job.region()?,
        to_region: job.target()?,
        steps: steps
            .iter()
            .map(|s| {
                Ok(MoveStep {
                    name: s.name.clone(),
                    status: step_status(&s.status)?,
                    attempts: s.attempts,
                    last_error: s.last_error.clone(),
                    location: s.location.clone(),
                    counts: s
                        .removed
                        .clone()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or_default(),
                    completed_at: s.completed_at,
                })
            })
            .collect::<Result<_, Error>>()?,
        created_at: job.created_at,
        completed_at: job.completed_at,
    })
}

/// Takes the job for one attempt, unless another worker holds it or it is
/// finished: the job, or `None`.
pub async fn lease(db: &Db, id: &str, hold: Duration) -> Result<Option<JobRow>, Error> {
    Ok(sqlx::query_as!(
        JobRow,
        "UPDATE deletion.jobs SET lease_until = now() + make_interval(secs => $2)
             WHERE id = $1 AND status <> 'completed' AND (lease_until IS NULL OR lease_until < now())
             RETURNING id, issuer_id, user_id, region, status, created_at, completed_at, receipt, kind, target_region",
        id,
        hold.as_secs_f64(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?)
}

pub async fn renew(db: &Db, id: &str, hold: Duration) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE deletion.jobs SET lease_until = now() + make_interval(secs => $2) WHERE id = $1",
        id,
        hold.as_secs_f64(),
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

pub async fn release(db: &Db, id: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE deletion.jobs SET lease_until = NULL, updated_at = now() WHERE id = $1",
        id,
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

pub async fn step_succeeded(
    db: &Db,
    id: &str,
    position: i32,
    location: &str,
    removed: &BTreeMap<String, i64>,
) -> Result<(), Error> {
    let removed = serde_json::to_value(removed).map_err(|e| ApiError::internal_from(&e))?;
    sqlx::query!(
        "UPDATE deletion.steps SET status = 'completed', attempts = attempts + 1,
                completed_at = now(), location = $3, removed = $4
             WHERE job_id = $1 AND position = $2",
        id,
        position,
        location,
        removed,
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// Records a failed attempt: the step's attempts and how long it has been
/// failing.
pub async fn step_failed(
    db: &Db,
    id: &str,
    position: i32,
    error: &str,
) -> Result<(i32, Duration), Error> {
    let row = sqlx::query!(
        r#"UPDATE deletion.steps SET status = 'failing', attempts = attempts + 1, last_error = $3,
                failing_since = COALESCE(failing_since, now())
             WHERE job_id = $1 AND position = $2
             RETURNING attempts, extract(epoch FROM now() - failing_since)::float8 AS "failing_for!""#,
        id,
        position,
        error,
    )
    .fetch_one(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok((
        row.attempts,
        Duration::from_secs_f64(row.failing_for.max(0.0)),
    ))
}

/// A stalled job whose failing step went through is running again (a later
/// step that keeps failing stalls it anew).
pub async fn unstall(db: &Db, id: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE deletion.jobs SET status = 'running', stalled_at = NULL, updated_at = now()
             WHERE id = $1 AND status = 'stalled'",
        id,
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// Marks a running job stalled: `true` when this call did.
pub async fn mark_stalled(db: &Db, id: &str) -> Result<bool, Error> {
    let done = sqlx::query!(
        "UPDATE deletion.jobs SET status = 'stalled', stalled_at = now(), updated_at = now()
             WHERE id = $1 AND status = 'running'",
        id,
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(done.rows_affected() == 1)
}

pub async fn complete(db: &Db, id: &str, receipt: &Receipt) -> Result<(), Error> {
    let receipt = serde_json::to_value(receipt).map_err(|e| ApiError::internal_from(&e))?;
    sqlx::query!(
        "UPDATE deletion.jobs SET status = 'completed', completed_at = now(), updated_at = now(),
                receipt = $2, lease_until = NULL
             WHERE id = $1",
        id,
        receipt,
    )
    .execute(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// Unfinished jobs nobody has touched for `idle` (their message may have
/// been lost before it was stored): the sweeper queues them again.
pub async fn idle_jobs(db: &Db, idle: Duration) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM deletion.jobs
             WHERE status <> 'completed' AND updated_at < now() - make_interval(secs => $1)
               AND (lease_until IS NULL OR lease_until < now())
             ORDER BY updated_at LIMIT 100",
        idle.as_secs_f64(),
    )
    .fetch_all(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?)
}

/// How many jobs are `stalled` now (every issuer).
pub async fn stalled_jobs(db: &Db) -> Result<i64, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM deletion.jobs WHERE status = 'stalled'"#
    )
    .fetch_one(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?)
}

/// The receipt of a finished job, from its steps.
pub fn receipt(job: &JobRow, steps: &[StepRow], completed_at: Timestamp) -> Result<Receipt, Error> {
    Ok(Receipt {
        deletion_id: job.deletion_id()?,
        user_id: job.user()?,
        issuer_id: job.issuer()?,
        region: job.region()?,
        steps: steps
            .iter()
            .map(|s| ReceiptStep {
                step: s.name.clone(),
                location: s.location.clone().unwrap_or_default(),
                removed: s
                    .removed
                    .clone()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default(),
                at: s.completed_at.unwrap_or(completed_at),
            })
            .collect(),
        completed_at,
    })
}
