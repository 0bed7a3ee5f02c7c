//! Session operations of a regional store.

use crate::storage::{self, IssuerStore};
use crate::{Error, State};
use idm_core::proto::store::ListSessions;
use idm_core::proto::store::RevokeUserSessions;
use idm_core::proto::store::*;
use idm_core::ApiError;
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, session = %req.session_id))]
pub async fn create_session(state: Arc<State>, req: CreateSession) -> Result<SessionRecord, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    store
        .insert_session(&req)
        .await?
        .ok_or_else(|| ApiError::not_found("user").into())
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn refresh_session(
    state: Arc<State>,
    req: RefreshSession,
) -> Result<RefreshOutcome, Error> {
    let mut store = match IssuerStore::open(&state, &req.issuer_id).await {
        // No data here, so no such token: the same answer as an unknown one.
        Err(Error::NoSchema) => {
            return Err(idm_core::proto::session::refresh_token_invalid().into())
        }
        other => other?,
    };
    store.refresh(&req).await
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, session = %req.session_id))]
pub async fn revoke_session(state: Arc<State>, req: RevokeSession) -> Result<SessionRecord, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    store
        .revoke_session(&req.session_id, &req.reason)
        .await?
        .ok_or_else(|| ApiError::not_found("session").into())
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn revoke_user_sessions(
    state: Arc<State>,
    RevokeUserSessions(req): RevokeUserSessions,
) -> Result<SessionRecords, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    Ok(SessionRecords {
        data: store
            .revoke_user_sessions(&req.user_id, "revoked_all")
            .await?,
        has_more: false,
    })
}

pub async fn list_sessions(
    state: Arc<State>,
    ListSessions(req): ListSessions,
) -> Result<SessionRecords, Error> {
    let store = match IssuerStore::open(&state, &req.issuer_id).await {
        Err(Error::NoSchema) => {
            return Ok(SessionRecords {
                data: Vec::new(),
                has_more: false,
            })
        }
        other => other?,
    };
    let page = req.page.unwrap_or_default();
    let (data, has_more) = store.sessions_of(&req.user_id, &page).await?;
    Ok(SessionRecords { data, has_more })
}

/// The region's revocations that still matter, for edges rebuilding their
/// revocation sets (through the session service).
#[tracing::instrument(skip_all, fields(region = %state.region, limit = req.limit))]
pub async fn list_revoked_sessions(
    state: Arc<State>,
    req: ListRevokedSessions,
) -> Result<RevokedSessionPage, Error> {
    storage::revoked_sessions(&state.db, req.after.as_ref(), req.limit, req.since).await
}

/// Revokes every live session of one of the user's devices.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, device = %req.device_id))]
pub async fn revoke_device(state: Arc<State>, req: RevokeDevice) -> Result<SessionRecords, Error> {
    let mut store = IssuerStore::open(&state, &req.issuer_id).await?;
    let revoked = store
        .revoke_device(&req.user_id, &req.device_id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    Ok(SessionRecords {
        data: revoked,
        has_more: false,
    })
}
