//! `session_keys.session_index`: session id → issuer, user and region.

use crate::Error;
use idm_core::{ApiError, IssuerId, Region, SessionId, Timestamp, UserId};
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};

pub async fn record(
    db: &Db,
    session: &SessionId,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
    expires_at: Timestamp,
) -> Result<(), Error> {
    sqlx::query!(
"INSERT INTO session_keys.session_index (session_id, issuer_id, user_id, region, expires_at) VALUES ($1, $2, $3, $4, $5)",
session.as_str(),
issuer.as_str(),
user.as_str(),
region.as_str(),
expires_at,
)
        .execute(&mut *db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?;
    Ok(())
}

/// The region of a session of `issuer`; another issuer's session is absent.
pub async fn region_of(
    db: &Db,
    issuer: &IssuerId,
    session: &SessionId,
) -> Result<Option<Region>, Error> {
    let row = sqlx::query!(
        "SELECT region FROM session_keys.session_index WHERE session_id = $1 AND issuer_id = $2",
        session.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    row.map(|r| Region::parse(&r.region).map_err(|e| ApiError::internal_from(&e).into()))
        .transpose()
}
