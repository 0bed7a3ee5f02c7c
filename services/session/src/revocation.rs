//! Making a revocation visible everywhere within a second: by the time this
//! runs the regional store has recorded it (`revoked_at`, the authoritative
//! and durable copy an edge that starts or reconnects reloads from, see
//! [`revoked_sessions`]); the ids then go out on a broadcast every edge
//! replica hears, before the caller is answered. An event records each one.

use crate::{Error, State};
use idm_core::proto::event;
use idm_core::proto::session::{
    RevokedBroadcast, RevokedSession, RevokedSessions, MAX_TOKEN_LIFETIME_SECONDS,
};
use idm_core::proto::store::{self, RevokedSessionPage, SessionRecord};
use idm_core::{ApiError, IssuerId};
use std::sync::Arc;

pub async fn announce(
    state: &State,
    issuer: &IssuerId,
    sessions: &[SessionRecord],
    compromised: bool,
) -> Result<(), ApiError> {
    if sessions.is_empty() {
        return Ok(());
    }
    let now = idm_core::now().unix_timestamp();
    let revoked: Vec<RevokedSession> = sessions
        .iter()
        .map(|s| RevokedSession {
            session_id: s.id.clone(),
            until: s
                .expires_at
                .unix_timestamp()
                .min(now + MAX_TOKEN_LIFETIME_SECONDS),
            compromised,
        })
        .collect();

    let subject = state
        .bus
        .broadcast_subject("session.revoked", issuer.as_str());
    state
        .bus
        .broadcast(
            subject,
            &RevokedBroadcast {
                issuer_id: issuer.clone(),
                sessions: revoked,
            },
        )
        .await;
    state.bus.flush().await;

    for s in sessions {
        let ended = event::SessionEnded {
            session_id: s.id.clone(),
            user_id: s.user_id.clone(),
            reason: s.revoke_reason.clone(),
        };
        let event = if compromised {
            event::DomainEvent::SessionCompromised(ended)
        } else {
            event::DomainEvent::SessionRevoked(ended)
        };
        state.events.publish(issuer, event).await?;
    }
    Ok(())
}

/// One page of one region's revocations that still matter, read from its
/// store: what an edge rebuilds its revocation set from (at start, after a
/// bus reconnect). Region by region, so a store that is down keeps only its
/// own region's sessions from being vouched for.
#[tracing::instrument(skip_all, fields(region = %req.region))]
pub async fn revoked_sessions(
    state: Arc<State>,
    req: RevokedSessions,
) -> Result<RevokedSessionPage, Error> {
    Ok(state
        .bus
        .send_to(
            req.region,
            &store::ListRevokedSessions {
                after: req.after,
                limit: req.limit,
                since: req.since,
            },
        )
        .await?)
}
