//! Sessions and their rotating refresh tokens. Every change to a session
//! happens in a transaction that holds the session row's lock, so a refresh
//! and a revocation (or two refreshes) of one session are strictly ordered:
//! a refresh can never win against a revocation that committed first.

use super::{corrupt, IssuerStore};
use crate::Error;
use idm_core::page::Page;
use idm_core::proto::session::MAX_TOKEN_LIFETIME_SECONDS;
use idm_core::proto::store::{
    CreateSession, RefreshOutcome, RefreshSession, RevokedCursor, RevokedSessionPage,
    RevokedSessionRecord, SessionRecord,
};
use idm_core::{ApiError, ErrorCode, IssuerId, SessionId, UserId};
use idm_db::sqlx::{self, Row as _};
use idm_db::{Db, DbError, GenericClient};

/// A session's columns as stored. The statements below list them
/// literally (`s.id, s.user_id, s.created_at, s.last_active_at,
/// s.expires_at, s.revoked_at, s.revoke_reason, s.user_agent, s.ip`):
/// compile-time checked statements cannot be assembled from constants.
struct SessionRow {
    id: String,
    user_id: String,
    created_at: idm_core::Timestamp,
    last_active_at: idm_core::Timestamp,
    expires_at: idm_core::Timestamp,
    revoked_at: Option<idm_core::Timestamp>,
    revoke_reason: Option<String>,
    user_agent: Option<String>,
    ip: Option<String>,
    device_id: Option<String>,
}

fn record(row: SessionRow) -> Result<SessionRecord, DbError> {
    Ok(SessionRecord {
        id: SessionId::parse(&row.id).map_err(|_| corrupt())?,
        user_id: UserId::parse(&row.user_id).map_err(|_| corrupt())?,
        created_at: row.created_at,
        last_active_at: row.last_active_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
        revoke_reason: row.revoke_reason,
        user_agent: row.user_agent,
        ip: row.ip,
        device_id: row
            .device_id
            .as_deref()
            .map(idm_core::ids::DeviceId::parse)
            .transpose()
            .map_err(|_| corrupt())?,
    })
}

/// The session a revoked or compromised refresh belongs to, as the error a
/// client sees.
fn revoked_error(reason: Option<&str>) -> ApiError {
    if reason == Some("compromised") {
        ApiError::new(
            ErrorCode::SessionCompromised,
            "the session was revoked because a refresh token was reused",
        )
    } else {
        ApiError::new(ErrorCode::SessionRevoked, "the session has been revoked")
    }
}

async fn revoke_locked(
    db: &impl GenericClient,
    session: &str,
    reason: &str,
) -> Result<Option<SessionRecord>, DbError> {
    let row = sqlx::query_as!(
SessionRow,
"UPDATE sessions s SET revoked_at = COALESCE(s.revoked_at, now()), revoke_reason = COALESCE(s.revoke_reason, $2)
                 WHERE s.id = $1 RETURNING s.id, s.user_id, s.created_at, s.last_active_at, s.expires_at, s.revoked_at, s.revoke_reason, s.user_agent, s.ip, s.device_id",
session,
reason,
)
        .fetch_optional(&mut *db.conn().await)
        .await?;
    sqlx::query!(
"UPDATE refresh_tokens SET invalidated_at = now() WHERE session_id = $1 AND invalidated_at IS NULL",
session,
)
    .execute(&mut *db.conn().await)
    .await?;
    row.map(record).transpose()
}

impl IssuerStore {
    pub async fn insert_session(
        &mut self,
        s: &CreateSession,
    ) -> Result<Option<SessionRecord>, Error> {
        let tx = self.client.transaction().await?;
        let device = super::devices::seen(&tx, &s.user_id, &s.device).await?;
        // Inserting only when the user exists keeps a session from pointing nowhere.
        let row = sqlx::query_as!(
SessionRow,
"INSERT INTO sessions AS s (id, user_id, expires_at, user_agent, ip, device_id)
                     SELECT $1, id, $3, $4, $5, $6 FROM users WHERE id = $2
                     RETURNING s.id, s.user_id, s.created_at, s.last_active_at, s.expires_at, s.revoked_at, s.revoke_reason, s.user_agent, s.ip, s.device_id",
s.session_id.as_str(),
s.user_id.as_str(),
s.expires_at,
s.device.user_agent.as_deref(),
s.device.ip.as_deref(),
device.as_deref(),
)
        .fetch_optional(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        let Some(row) = row else { return Ok(None) };
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
            &s.refresh_token_hash,
            s.session_id.as_str(),
        )
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        tx.commit().await?;
        Ok(Some(record(row)?))
    }

    /// Rotation with reuse detection. A token that may rotate is rotated by
    /// one statement (`idm_refresh_rotate`, migration 0008: the session lock,
    /// the read and the writes in one round trip); anything else (a spent
    /// token, a revoked or expired session, an unknown token) wrote nothing
    /// there and is decided again here from the start, in one transaction
    /// under the session lock.
    pub async fn refresh(&mut self, r: &RefreshSession) -> Result<RefreshOutcome, Error> {
        let rotated = sqlx::query_as!(
            SessionRow,
            r#"SELECT id AS "id!", user_id AS "user_id!", created_at AS "created_at!",
                      last_active_at AS "last_active_at!", expires_at AS "expires_at!",
                      revoked_at, revoke_reason, user_agent, ip, device_id
                 FROM public.idm_refresh_rotate($1, $2, $3, $4, $5, $6)"#,
            &r.token_hash,
            f64::from(r.idle_timeout_seconds),
            &r.new_token_hash,
            r.successor_sealed.as_deref(),
            r.device.user_agent.as_deref(),
            r.device.ip.as_deref(),
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        if let Some(session) = rotated {
            return Ok(RefreshOutcome::Rotated {
                session: record(session)?,
            });
        }
        self.refresh_refused_or_replayed(r).await
    }

    /// The refresh that did not simply rotate: a replay within the leeway
    /// (the successor handed out again), a reuse (the session revoked as
    /// compromised), or a refusal. The rotation arm is kept, so the outcome
    /// is right even if the token became rotatable in between (it cannot:
    /// a spent token stays spent).
    async fn refresh_refused_or_replayed(
        &mut self,
        r: &RefreshSession,
    ) -> Result<RefreshOutcome, Error> {
        let tx = self.client.transaction().await?;
        // Lock first, read second: under READ COMMITTED a statement that had
        // to wait for the lock still sees its older snapshot in subqueries,
        // so the read must be a new statement taken after the lock is held.
        sqlx::query!(
"SELECT s.id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1 FOR UPDATE OF s",
&r.token_hash,
)
        .fetch_optional(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        // Read, and when the token may rotate, rotate, in one statement
        // (issue 10: one round trip instead of four): consume the token,
        // insert its successor, touch the session and its device. The `ok`
        // arm holds the row only when nothing below would refuse or treat
        // it as a replay, so the writes happen exactly when the old
        // sequence of statements made them; `touched_at` is set exactly when
        // they did.
        let row = sqlx::query!(
r#"WITH cur AS (
    SELECT s.id, s.user_id, s.created_at, s.last_active_at, s.expires_at, s.revoked_at, s.revoke_reason, s.user_agent, s.ip, s.device_id,
           t.consumed_at IS NOT NULL AS consumed,
           t.invalidated_at IS NOT NULL AS invalidated,
           s.expires_at <= now() AS past_absolute,
           s.last_active_at < now() - make_interval(secs => $2) AS past_idle,
           t.consumed_at > now() - make_interval(secs => $3) AS within_leeway,
           t.successor_hash, t.successor_sealed,
           (SELECT n.consumed_at IS NULL AND n.invalidated_at IS NULL FROM refresh_tokens n WHERE n.token_hash = t.successor_hash) AS successor_live
      FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.token_hash = $1
), ok AS (
    SELECT id, device_id FROM cur
     WHERE revoked_at IS NULL AND NOT consumed AND NOT invalidated AND NOT past_absolute AND NOT past_idle
), spend AS (
    UPDATE refresh_tokens SET consumed_at = now(), successor_hash = $4, successor_sealed = $5
     WHERE token_hash = $1 AND EXISTS (SELECT 1 FROM ok)
), successor AS (
    INSERT INTO refresh_tokens (token_hash, session_id) SELECT $4, id FROM ok
), touched AS (
    UPDATE sessions s SET last_active_at = now(), user_agent = COALESCE($6, s.user_agent), ip = COALESCE($7, s.ip)
      FROM ok WHERE s.id = ok.id
    RETURNING s.last_active_at, s.user_agent, s.ip
), device AS (
    UPDATE devices d SET last_seen_at = now() FROM ok WHERE d.id = ok.device_id
)
SELECT cur.id AS "id!", cur.user_id AS "user_id!", cur.created_at AS "created_at!",
       cur.last_active_at AS "last_active_at!", cur.expires_at AS "expires_at!",
       cur.revoked_at AS "revoked_at?", cur.revoke_reason AS "revoke_reason?",
       cur.user_agent AS "user_agent?", cur.ip AS "ip?", cur.device_id AS "device_id?",
       cur.consumed AS "consumed!", cur.invalidated AS "invalidated!",
       cur.past_absolute AS "past_absolute!", cur.past_idle AS "past_idle!",
       cur.within_leeway AS "within_leeway?", cur.successor_hash AS "successor_hash?",
       cur.successor_sealed AS "successor_sealed?", cur.successor_live AS "successor_live?",
       touched.last_active_at AS "touched_at?", touched.user_agent AS "touched_user_agent?",
       touched.ip AS "touched_ip?"
  FROM cur LEFT JOIN touched ON true"#,
&r.token_hash,
f64::from(r.idle_timeout_seconds),
f64::from(r.leeway_seconds),
&r.new_token_hash,
r.successor_sealed.as_deref(),
r.device.user_agent.as_deref(),
r.device.ip.as_deref(),
)
            .fetch_optional(&mut *tx.conn().await)
            .await
            .map_err(DbError::from)?;
        let Some(row) = row else {
            return Err(idm_core::proto::session::refresh_token_invalid().into());
        };
        if let Some(touched_at) = row.touched_at {
            tx.commit().await?;
            return Ok(RefreshOutcome::Rotated {
                session: record(SessionRow {
                    id: row.id,
                    user_id: row.user_id,
                    created_at: row.created_at,
                    last_active_at: touched_at,
                    expires_at: row.expires_at,
                    revoked_at: row.revoked_at,
                    revoke_reason: row.revoke_reason,
                    user_agent: row.touched_user_agent,
                    ip: row.touched_ip,
                    device_id: row.device_id,
                })?,
            });
        }
        let (consumed, invalidated, past_absolute, past_idle) = (
            row.consumed,
            row.invalidated,
            row.past_absolute,
            row.past_idle,
        );
        let within_leeway: Option<bool> = row.within_leeway;
        let successor_hash: Option<String> = row.successor_hash;
        let successor_sealed: Option<String> = row.successor_sealed;
        let successor_live: Option<bool> = row.successor_live;
        let session = record(SessionRow {
            id: row.id,
            user_id: row.user_id,
            created_at: row.created_at,
            last_active_at: row.last_active_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            revoke_reason: row.revoke_reason,
            user_agent: row.user_agent,
            ip: row.ip,
            device_id: row.device_id,
        })?;

        if session.revoked_at.is_some() {
            return Err(revoked_error(session.revoke_reason.as_deref()).into());
        }
        if consumed || invalidated {
            let replay = r.leeway_seconds > 0
                && !invalidated
                && within_leeway == Some(true)
                && successor_live == Some(true);
            if let (true, Some(sealed), Some(hash)) = (replay, successor_sealed, successor_hash) {
                sqlx::query!(
                    "UPDATE sessions SET last_active_at = now() WHERE id = $1",
                    session.id.as_str(),
                )
                .execute(&mut *tx.conn().await)
                .await
                .map_err(DbError::from)?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Replayed {
                    session,
                    successor_sealed: sealed,
                    successor_hash: hash,
                });
            }
            let revoked = revoke_locked(&tx, session.id.as_str(), "compromised")
                .await?
                .unwrap_or(session);
            tx.commit().await?;
            return Ok(RefreshOutcome::Compromised { session: revoked });
        }
        // Past its end (the statement above rotated nothing).
        debug_assert!(past_absolute || past_idle);
        Err(ApiError::new(ErrorCode::SessionInvalid, "the session has expired").into())
    }

    pub async fn revoke_session(
        &mut self,
        session: &SessionId,
        reason: &str,
    ) -> Result<Option<SessionRecord>, Error> {
        let tx = self.client.transaction().await?;
        let revoked = revoke_locked(&tx, session.as_str(), reason).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    pub async fn revoke_user_sessions(
        &mut self,
        user: &UserId,
        reason: &str,
    ) -> Result<Vec<SessionRecord>, Error> {
        let tx = self.client.transaction().await?;
        let rows = sqlx::query_as!(
SessionRow,
"UPDATE sessions s SET revoked_at = now(), revoke_reason = $2
                     WHERE s.user_id = $1 AND s.revoked_at IS NULL RETURNING s.id, s.user_id, s.created_at, s.last_active_at, s.expires_at, s.revoked_at, s.revoke_reason, s.user_agent, s.ip, s.device_id",
user.as_str(),
reason,
)
        .fetch_all(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        sqlx::query!(
"UPDATE refresh_tokens SET invalidated_at = now()
             WHERE invalidated_at IS NULL AND session_id IN (SELECT id FROM sessions WHERE user_id = $1)",
user.as_str(),
)
        .execute(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        tx.commit().await?;
        Ok(rows.into_iter().map(record).collect::<Result<_, _>>()?)
    }

    /// The user's live sessions, newest first, a page at a time: after the
    /// session `starting_after` (another user's, or an unknown id, is
    /// `not_found`), one row more than the page to know whether more follow.
    pub async fn sessions_of(
        &self,
        user: &UserId,
        page: &Page,
    ) -> Result<(Vec<SessionRecord>, bool), Error> {
        let (after_at, after_id) = match &page.starting_after {
            None => (None, None),
            Some(raw) => {
                let id = SessionId::parse(raw)?;
                let at = sqlx::query_scalar!(
                    "SELECT created_at FROM sessions WHERE id = $1 AND user_id = $2",
                    id.as_str(),
                    user.as_str(),
                )
                .fetch_optional(&mut *self.client.conn().await)
                .await
                .map_err(DbError::from)?
                .ok_or_else(|| ApiError::not_found("session"))?;
                (Some(at), Some(id))
            }
        };
        let rows = sqlx::query_as!(
SessionRow,
"SELECT s.id, s.user_id, s.created_at, s.last_active_at, s.expires_at, s.revoked_at, s.revoke_reason, s.user_agent, s.ip, s.device_id FROM sessions s
                     WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                       AND ($2::timestamptz IS NULL OR (s.created_at, s.id) < ($2, $3))
                     ORDER BY s.created_at DESC, s.id DESC LIMIT $4",
user.as_str(),
after_at,
after_id.as_ref().map(SessionId::as_str),
page.fetch(),
)
        .fetch_all(&mut *self.client.conn().await)
        .await
        .map_err(DbError::from)?;
        let records = rows.into_iter().map(record).collect::<Result<_, _>>()?;
        Ok(page.cut(records))
    }
}

/// The most revocations one page may hold (about 110 bytes each on the
/// wire, well under NATS's 1 MB message limit).
pub const MAX_REVOKED_PAGE: u32 = 2_000;
/// Slack for clocks: a token is signed on the session service's clock,
/// `revoked_at` comes from this database's.
const CLOCK_SLACK_SECONDS: i64 = 60;

/// Revoked sessions of every issuer in this region whose tokens could still
/// verify (neither past the session's end nor older than the longest token
/// lifetime), in (issuer, session) order after `after`. This is the
/// authoritative list edges rebuild their revocation sets from, every 10 s
/// per edge, so it reads the region's revocation log (store migration 7:
/// one table outside the issuer schemas, written by triggers in the same
/// transaction as every revocation) with one indexed statement: its cost is
/// the revocations it returns, not the number of issuers in the region
/// (walking every schema made it grow with tenants; docs/PERFORMANCE.md,
/// "Regions at scale").
pub async fn revoked_sessions(
    db: &Db,
    after: Option<&RevokedCursor>,
    limit: u32,
    since: Option<i64>,
) -> Result<RevokedSessionPage, Error> {
    let limit = limit.clamp(1, MAX_REVOKED_PAGE) as usize;
    // Schema-qualified statements need no session state: any pooled
    // connection serves them.
    let pool = db.pool();
    let from_schema = after
        .map(|c| c.issuer_id.store_schema())
        .unwrap_or_default();
    let after_session = after.map(|c| c.session_id.as_str()).unwrap_or_default();
    let window = (MAX_TOKEN_LIFETIME_SECONDS + CLOCK_SLACK_SECONDS) as f64;
    // 0: since the epoch, i.e. every revocation inside the window.
    let since = since.unwrap_or(0) as f64;
    // Rows whose tokens have all ended serve no edge: pruned a bounded
    // batch at a time, so the log stays the size of one token lifetime.
    let pruned = sqlx::query(
        "DELETE FROM public.idm_revocation_log WHERE (schema_name, session_id) IN
           (SELECT schema_name, session_id FROM public.idm_revocation_log
             WHERE expires_at < now() - interval '1 hour' LIMIT 1000)",
    )
    .execute(pool)
    .await;
    match pruned {
        Ok(_) => {}
        // No issuer has placed data in this region yet (schemas, and with
        // the first one the log, are made on first use): nothing revoked.
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some(super::schemas::UNDEFINED_TABLE) =>
        {
            return Ok(RevokedSessionPage {
                data: Vec::new(),
                next: None,
            });
        }
        Err(e) => return Err(DbError::from(e).into()),
    }
    // The log is not a compile-time checked statement: it lives outside the
    // issuer schemas the checked macros are prepared against.
    let rows = sqlx::query(
        "SELECT schema_name, session_id,
                ceil(extract(epoch FROM LEAST(expires_at, revoked_at + make_interval(secs => $3))))::bigint AS until,
                compromised
           FROM public.idm_revocation_log
          WHERE revoked_at > GREATEST(now() - make_interval(secs => $3), to_timestamp($5))
            AND expires_at > now()
            AND (schema_name, session_id) > ($1::text COLLATE \"C\", $2::text COLLATE \"C\")
          ORDER BY schema_name, session_id
          LIMIT $4",
    )
    .bind(&from_schema)
    .bind(after_session)
    .bind(window)
    .bind(limit as i64)
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(DbError::from)?;
    let mut data = Vec::with_capacity(rows.len());
    for row in &rows {
        let Ok(issuer_id) = IssuerId::parse(row.get(0)) else {
            continue; // a schema named like an issuer that is not one
        };
        data.push(RevokedSessionRecord {
            issuer_id,
            session_id: SessionId::parse(row.get(1)).map_err(|_| corrupt())?,
            until: row.get(2),
            compromised: row.get(3),
        });
    }
    let next = (data.len() >= limit)
        .then(|| data.last())
        .flatten()
        .map(|last| RevokedCursor {
            issuer_id: last.issuer_id.clone(),
            session_id: last.session_id.clone(),
        });
    Ok(RevokedSessionPage { data, next })
}
