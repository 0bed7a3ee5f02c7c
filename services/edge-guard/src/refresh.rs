//! Refresh in one bus hop (docs/SESSIONS.md, "Refresh in one bus hop"): the
//! refresh token names its region, so this edge asks that region's store to
//! rotate it and signs the new session token with the issuer's ring, which
//! it already holds to verify tokens (HMAC keys that verify can also sign,
//! so signing here gives the edge no new power over session tokens).
//!
//! The session service stays in the path for what is rare: a reused token
//! (it makes the compromise known everywhere), and an edge whose ring came
//! from a session service of an earlier release, or a retry whose successor
//! that release sealed (it rotates and signs, as it did before).

use crate::App;
use idm_core::proto::session::{
    self, refresh_error, refresh_token_invalid, refresh_token_region, IssuedSession, ReportReuse,
};
use idm_core::proto::store::{self, SessionRecord};
use idm_core::proto::SecretText;
use idm_core::{ApiError, ErrorCode, IssuerId, Region};
use idm_crypto::{refresh_token, session_token};

fn counted(path: &'static str) {
    metrics::counter!("idm_edge_refreshes_total", "path" => path).increment(1);
}

/// Rotates `call.refresh_token` for `call.issuer_id`: a new session token and
/// refresh token, or the same successor again for a retry within the
/// issuer's reuse leeway, or `refresh_token_reused` (the session is then
/// revoked everywhere).
pub async fn refresh(app: &App, call: session::Refresh) -> Result<IssuedSession, ApiError> {
    let issuer = &call.issuer_id;
    let ring = app.sessions.ring(issuer).await?;
    let (Some(rules), Some(signing_key)) = (ring.refresh.as_ref(), ring.current()) else {
        counted("session");
        return app.bus.send(&call).await;
    };
    let presented = call.refresh_token.expose();
    let region = refresh_token_region(presented).ok_or_else(refresh_token_invalid)?;
    let token_hash = refresh_token::hash(presented);
    let (successor, successor_hash) = refresh_token::generate(region);
    // Kept, sealed to this exact predecessor, only while a retry within the
    // leeway may need it; the store can never read it.
    let successor_sealed = (call.policy.refresh_reuse_leeway_seconds > 0)
        .then(|| {
            refresh_token::seal_successor(signing_key, issuer, &token_hash, successor.expose())
        })
        .transpose()
        .map_err(|e| ApiError::internal_from(&e))?;
    let request = store::RefreshSession::under_policy(
        issuer.clone(),
        token_hash.clone(),
        successor_hash,
        successor_sealed,
        &call.policy,
        call.device.clone(),
    );
    let outcome = app
        .bus
        .send_to(region, &request)
        .await
        .map_err(refresh_error)?;
    let (session, sealed_successor) = match outcome.into_rotation() {
        Ok(rotated) => rotated,
        Err(compromised) => {
            counted("store");
            return Err(report_reuse(app, issuer, region, &compromised).await);
        }
    };
    // Checked before anything is opened: after an emergency key revocation
    // the key that sealed a replayed successor is gone, and so is the session.
    if let Some(cutoff) = rules.sessions_not_before {
        if session.created_at <= cutoff {
            counted("store");
            return Err(end_after_key_revocation(app, issuer, region, &session).await);
        }
    }
    let refresh_token = match sealed_successor {
        None => successor,
        Some(sealed) => match refresh_token::successor_kid(&sealed) {
            Some(kid) => {
                let ring = app.sessions.ring_with(issuer, kid).await?;
                let key = ring.find(kid).ok_or_else(|| {
                    ApiError::internal_from(&"the key that sealed a successor is not in the ring")
                })?;
                let opened = refresh_token::open_successor(&sealed, key, issuer, &token_hash)
                    .map_err(|e| ApiError::internal_from(&e))?;
                SecretText::new(opened.as_str().to_owned())
            }
            // Sealed by the session service of an earlier release, under its
            // master key: it opens it. The store answers its retry the same
            // way, since nothing has consumed the successor.
            None => {
                counted("session");
                return app.bus.send(&call).await;
            }
        },
    };
    let (token, expires_at) = session_token::issue(
        signing_key,
        issuer,
        &session,
        region,
        call.policy.session_lifetime_seconds,
    )
    .map_err(|e| ApiError::internal_from(&e))?;
    counted("store");
    Ok(IssuedSession {
        session_id: session.id,
        session_token: SecretText::new(token),
        refresh_token,
        expires_at,
    })
}

/// The store has revoked the session as compromised; the session service
/// makes it known to every edge (and sends the event) before the caller is
/// answered, as for any revocation.
async fn report_reuse(
    app: &App,
    issuer: &IssuerId,
    region: Region,
    session: &SessionRecord,
) -> ApiError {
    tracing::warn!(session = %session.id, "refresh token reused: session revoked as compromised");
    let report = ReportReuse {
        issuer_id: issuer.clone(),
        region,
        session_id: session.id.clone(),
    };
    match app.bus.send(&report).await {
        Ok(_) => ApiError::new(
            ErrorCode::RefreshTokenReused,
            "this refresh token was already used; the session has been revoked",
        ),
        Err(e) => e,
    }
}

/// A session created before the issuer's latest emergency key revocation:
/// its refresh token must not mint tokens under the new key. It is also
/// ended in its store, so it stops being listed.
async fn end_after_key_revocation(
    app: &App,
    issuer: &IssuerId,
    region: Region,
    session: &SessionRecord,
) -> ApiError {
    let revoke = store::RevokeSession {
        issuer_id: issuer.clone(),
        session_id: session.id.clone(),
        reason: "signing_keys_revoked".into(),
    };
    if let Err(e) = app.bus.send_to(region, &revoke).await {
        // The refresh is refused either way; the session just stays listed.
        tracing::warn!(error = %e, session = %session.id, "session from before a key revocation not marked revoked");
    }
    ApiError::new(
        ErrorCode::SessionRevoked,
        "the application revoked its signing keys; sign in again",
    )
}
