//! Making a revocation visible everywhere within a second: the revoked ids go
//! into a Redis sorted set (so an edge that restarts reloads them for the
//! tokens' remaining lifetime) and out on a broadcast every edge replica
//! hears, before the caller is answered. An event records each one.

use crate::State;
use idm_core::proto::event;
use idm_core::proto::session::{revocation_set_key, RevokedBroadcast, RevokedSession};
use idm_core::proto::store::SessionRecord;
use idm_core::{ApiError, IssuerId};

/// No session token lives longer than this (the policy maximum).
const MAX_TOKEN_LIFETIME_SECONDS: i64 = 86_400;

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

    let key = revocation_set_key(&state.redis_prefix);
    let mut pipe = redis::pipe();
    for r in &revoked {
        pipe.zadd(
            &key,
            format!("{issuer}/{}/{}", r.session_id, u8::from(r.compromised)),
            r.until,
        )
        .ignore();
    }
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg("-inf")
        .arg(now)
        .ignore();
    let mut redis = state.redis.clone();
    if let Err(e) = pipe.query_async::<()>(&mut redis).await {
        // The broadcast below still reaches every running edge; only an edge
        // restarting before Redis returns could miss this revocation.
        tracing::error!(error = %e, "revocation set not updated in Redis");
    }

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

    let event_type = if compromised {
        event::SESSION_COMPROMISED
    } else {
        event::SESSION_REVOKED
    };
    for s in sessions {
        let data = serde_json::json!({ "session_id": s.id, "user_id": s.user_id, "reason": s.revoke_reason });
        state.events.publish(issuer, event_type, data).await?;
    }
    Ok(())
}
