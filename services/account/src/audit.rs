//! The audit log: the durable consumer `audit` on `EVENTS` appends every
//! event to `account.audit_events` (ids only, append-only by a trigger);
//! tenants read their issuer's (`GET /v1/audit_events`, through the edge),
//! the operator every issuer's (`GET /admin/v1/audit_events`).

use crate::{Error, State};
use idm_core::proto::account::{AuditEvent, AuditEventList, AuditFilter, ListAuditEvents};
use idm_core::proto::deletion::account::ForgetAuditNetworks;
use idm_core::proto::deletion::Removed;
use idm_core::proto::event::Event;
use idm_core::{ApiError, IssuerId, Timestamp};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};
use std::sync::Arc;

fn sql_err(e: sqlx::Error) -> Error {
    DbError::from(e).into()
}

/// Appends one event (again: nothing, the id is the key).
pub async fn record(db: &impl GenericClient, event: &Event) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO account.audit_events (id, issuer_id, type, actor, request_id, network, data,
             occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        event.id.as_str(),
        event.issuer_id.as_str(),
        &event.event_type,
        event.actor.as_deref().unwrap_or("system"),
        event.request_id.as_deref(),
        event.network.as_deref(),
        &event.data,
        event.occurred_at,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    Ok(())
}

/// Starts the consumer.
pub async fn spawn_consumer(
    state: &Arc<State>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let db = state.db.clone();
    Ok(
        idm_bus::events::consume(&state.bus, "audit", shutdown, move |event| {
            let db = db.clone();
            async move {
                let client = db.get().await.map_err(|e| e.to_string())?;
                record(&client, &event).await.map_err(|e| e.to_string())
            }
        })
        .await?,
    )
}

fn short(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._*-".contains(&b))
    {
        return Err(ApiError::validation(format!(
            "{field} is not a valid filter"
        )));
    }
    Ok(())
}

struct Row {
    id: String,
    issuer_id: String,
    event_type: String,
    actor: String,
    request_id: Option<String>,
    network: Option<String>,
    data: serde_json::Value,
    occurred_at: Timestamp,
}

/// A page of audit events, newest first; `issuer` `None` spans issuers (the
/// operator's view).
pub async fn list(
    db: &impl GenericClient,
    issuer: Option<&IssuerId>,
    filter: &AuditFilter,
) -> Result<AuditEventList, Error> {
    let limit = match filter.limit {
        0 => 20,
        n @ 1..=100 => n,
        _ => return Err(ApiError::validation("limit must be between 1 and 100").into()),
    };
    let (exact, family) = match filter.event_type.as_deref() {
        None => (None, None),
        Some(t) => {
            short("type", t)?;
            match t.strip_suffix(".*") {
                // `_` is a LIKE wildcard: escaped.
                Some(family) => (None, Some(format!("{}.%", family.replace('_', "\\_")))),
                None => (Some(t.to_owned()), None),
            }
        }
    };
    if let Some(actor) = &filter.actor {
        short("actor", actor)?;
    }
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, issuer_id, type AS event_type, actor, request_id, network, data, occurred_at
         FROM account.audit_events
         WHERE ($1::text IS NULL OR issuer_id = $1)
           AND ($2::text IS NULL OR type = $2) AND ($3::text IS NULL OR type LIKE $3)
           AND ($4::text IS NULL OR actor = $4)
           AND ($5::timestamptz IS NULL OR occurred_at >= $5)
           AND ($6::timestamptz IS NULL OR occurred_at < $6)
           AND ($7::text IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8"#,
        issuer.map(IssuerId::as_str),
        exact,
        family,
        filter.actor.as_deref(),
        filter.since,
        filter.until,
        filter.starting_after.as_deref(),
        i64::from(limit) + 1,
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(sql_err)?;
    let has_more = rows.len() > limit as usize;
    let data = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| {
            Ok(AuditEvent {
                id: r.id,
                event_type: r.event_type,
                issuer_id: IssuerId::parse(&r.issuer_id)
                    .map_err(|e| Error::from(ApiError::internal_from(&e)))?,
                actor: r.actor,
                request_id: r.request_id,
                network: r.network,
                data: r.data,
                occurred_at: r.occurred_at,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(AuditEventList { data, has_more })
}

/// `list_audit_events`: one issuer's log.
pub async fn list_audit_events(
    state: Arc<State>,
    req: ListAuditEvents,
) -> Result<AuditEventList, Error> {
    let client = state.db.get().await?;
    list(&client, Some(&req.issuer_id), &req.filter).await
}

/// `forget_audit_networks` (a step of a user's deletion): clears the IP
/// network of every audit row the user acted in or that is about the user.
/// The rows stay (ids only; the table is append-only but for this), so the
/// log still says what happened. Idempotent: a second run clears nothing.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn forget_audit_networks(
    state: Arc<State>,
    ForgetAuditNetworks(req): ForgetAuditNetworks,
) -> Result<Removed, Error> {
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    // The same lock every insert about this user takes (migration 0006):
    // rows committed before are cleared here, rows inserted after see the
    // user as forgotten.
    sqlx::query!(
        "SELECT account.audit_subject_lock($1, $2)",
        req.issuer_id.as_str(),
        req.user_id.as_str(),
    )
    .execute(&mut *tx.conn().await)
    .await
    .map_err(sql_err)?;
    sqlx::query!(
        "INSERT INTO account.audit_forgotten_users (issuer_id, user_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        req.issuer_id.as_str(),
        req.user_id.as_str(),
    )
    .execute(&mut *tx.conn().await)
    .await
    .map_err(sql_err)?;
    let done = sqlx::query!(
        "UPDATE account.audit_events SET network = NULL
          WHERE issuer_id = $1 AND network IS NOT NULL
            AND (actor = $2 OR data->>'user_id' = $2)",
        req.issuer_id.as_str(),
        req.user_id.as_str(),
    )
    .execute(&mut *tx.conn().await)
    .await
    .map_err(sql_err)?;
    tx.commit().await?;
    Ok(Removed {
        removed: [(
            "audit_networks".to_owned(),
            i64::try_from(done.rows_affected()).unwrap_or(i64::MAX),
        )]
        .into(),
    })
}
