//! Consent: an append-only history of decisions per purpose (the table
//! refuses updates), each with when and from which session and device.

use super::{corrupt, IssuerStore};
use crate::Error;
use idm_core::ids::{ConsentId, DeviceId};
use idm_core::page::Page;
use idm_core::proto::store::{AddConsent, ConsentRecord};
use idm_core::{ApiError, SessionId, UserId};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};

struct ConsentRow {
    id: String,
    user_id: String,
    purpose: String,
    version: String,
    granted: bool,
    recorded_at: idm_core::Timestamp,
    session_id: Option<String>,
    device_id: Option<String>,
}

fn consent(row: ConsentRow) -> Result<ConsentRecord, Error> {
    Ok(ConsentRecord {
        id: ConsentId::parse(&row.id).map_err(|_| corrupt())?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt())?,
        purpose: row.purpose,
        version: row.version,
        granted: row.granted,
        recorded_at: row.recorded_at,
        session_id: row
            .session_id
            .as_deref()
            .map(SessionId::parse)
            .transpose()
            .map_err(|_| corrupt())?,
        device_id: row
            .device_id
            .as_deref()
            .map(DeviceId::parse)
            .transpose()
            .map_err(|_| corrupt())?,
    })
}

impl IssuerStore {
    /// Appends a decision. `None` when the user is not here; `not_found`
    /// when the session given is not the user's.
    pub async fn add_consent(&self, c: &AddConsent) -> Result<Option<ConsentRecord>, Error> {
        let device = match &c.session_id {
            None => None,
            Some(session) => sqlx::query_scalar!(
                "SELECT device_id FROM sessions WHERE id = $1 AND user_id = $2",
                session.as_str(),
                c.user_id.as_str(),
            )
            .fetch_optional(&mut *self.client.conn().await)
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| ApiError::not_found("session"))?,
        };
        let row = sqlx::query_as!(
            ConsentRow,
            "INSERT INTO consents (id, user_id, purpose, version, granted, session_id, device_id)
                 SELECT $1, id, $3, $4, $5, $6, $7 FROM users WHERE id = $2
                 RETURNING id, user_id, purpose, version, granted, recorded_at, session_id, device_id",
            c.consent_id.as_str(),
            c.user_id.as_str(),
            c.purpose,
            c.version,
            c.granted,
            c.session_id.as_ref().map(SessionId::as_str),
            device,
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        row.map(consent).transpose()
    }

    /// The history, newest first, a page at a time.
    pub async fn consents_of(
        &self,
        user: &UserId,
        page: &Page,
    ) -> Result<(Vec<ConsentRecord>, bool), Error> {
        let (after_at, after_id) = match &page.starting_after {
            None => (None, None),
            Some(raw) => {
                let id = ConsentId::parse(raw)?;
                let at = sqlx::query_scalar!(
                    "SELECT recorded_at FROM consents WHERE id = $1 AND user_id = $2",
                    id.as_str(),
                    user.as_str(),
                )
                .fetch_optional(&mut *self.client.conn().await)
                .await
                .map_err(DbError::from)?
                .ok_or_else(|| ApiError::not_found("consent"))?;
                (Some(at), Some(id))
            }
        };
        let rows = sqlx::query_as!(
            ConsentRow,
            "SELECT id, user_id, purpose, version, granted, recorded_at, session_id, device_id
               FROM consents
              WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (recorded_at, id) < ($2, $3))
              ORDER BY recorded_at DESC, id DESC LIMIT $4",
            user.as_str(),
            after_at,
            after_id.as_ref().map(ConsentId::as_str),
            page.fetch(),
        )
        .fetch_all(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        let records = rows.into_iter().map(consent).collect::<Result<_, _>>()?;
        Ok(page.cut(records))
    }

    /// The latest decision of each purpose, by purpose, a page at a time
    /// (`starting_after` is a purpose).
    pub async fn current_consents(
        &self,
        user: &UserId,
        page: &Page,
    ) -> Result<(Vec<ConsentRecord>, bool), Error> {
        let rows = sqlx::query_as!(
            ConsentRow,
            "SELECT DISTINCT ON (purpose) id, user_id, purpose, version, granted, recorded_at, session_id, device_id
               FROM consents
              WHERE user_id = $1 AND ($2::text IS NULL OR purpose > $2)
              ORDER BY purpose, recorded_at DESC, id DESC LIMIT $3",
            user.as_str(),
            page.starting_after.as_deref(),
            page.fetch(),
        )
        .fetch_all(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        let records = rows.into_iter().map(consent).collect::<Result<_, _>>()?;
        Ok(page.cut(records))
    }
}
