//! Bus operations of the session service.

use crate::{revocation, session_index, Error, State};
use base64::Engine;
use idm_core::proto::event::DomainEvent;
use idm_core::proto::session::*;
use idm_core::proto::store::{self, RefreshOutcome, SessionRecord};
use idm_core::proto::{event, user, Done, SecretText};
use idm_core::{ApiError, ErrorCode, IssuerId, IssuerPolicy, Region, SessionId, UserId};
use idm_crypto::session_token::{self, SessionClaims};
use std::sync::Arc;

pub async fn init_issuer(state: Arc<State>, req: InitIssuer) -> Result<Done, Error> {
    state.keys.ensure_key(&req.issuer_id).await?;
    Ok(Done::default())
}

/// A fresh refresh token for a session in `region`, and the hash we store.
pub(crate) fn new_refresh_token(region: Region) -> (SecretText, String) {
    let token = format!(
        "{REFRESH_TOKEN_PREFIX}{region}_{}",
        idm_crypto::random_token::<32>()
    );
    let hash = idm_crypto::sha256_hex(token.as_bytes());
    (SecretText::new(token), hash)
}

/// Signs a session token for `session`, never past the session's own end.
async fn sign(
    state: &State,
    issuer: &IssuerId,
    session: &SessionRecord,
    region: Region,
    policy: &IssuerPolicy,
) -> Result<(SecretText, idm_core::Timestamp), Error> {
    let ring = state.keys.ring(issuer).await?;
    // The same ring that signs says whether the session predates a key
    // revocation, so a revocation racing this refresh cannot be missed.
    refuse_if_before_key_revocation(state, issuer, region, session, ring.sessions_not_before)
        .await?;
    let key = ring
        .current()
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    let now = idm_core::now();
    let expires_at = (now + time::Duration::seconds(i64::from(policy.session_lifetime_seconds)))
        .min(session.expires_at);
    let claims = SessionClaims {
        iss: issuer.clone(),
        sid: session.id.clone(),
        sub: session.user_id.clone(),
        reg: region,
        iat: now.unix_timestamp(),
        exp: expires_at.unix_timestamp(),
    };
    Ok((
        SecretText::new(session_token::sign(key, &claims)?),
        expires_at,
    ))
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, region = %req.region))]
pub async fn create_session(state: Arc<State>, req: CreateSession) -> Result<IssuedSession, Error> {
    let session_id = SessionId::generate();
    let (refresh_token, refresh_token_hash) = new_refresh_token(req.region);
    let absolute_end = idm_core::now()
        + time::Duration::seconds(i64::from(req.policy.session_absolute_timeout_seconds));
    let record = state
        .bus
        .send_to(
            req.region,
            &store::CreateSession {
                issuer_id: req.issuer_id.clone(),
                session_id: session_id.clone(),
                user_id: req.user_id.clone(),
                expires_at: absolute_end,
                refresh_token_hash,
                device: req.device,
            },
        )
        .await?;
    session_index::record(
        &state.db,
        &record.id,
        &req.issuer_id,
        &record.user_id,
        req.region,
        record.expires_at,
    )
    .await?;
    let (session_token, expires_at) =
        sign(&state, &req.issuer_id, &record, req.region, &req.policy).await?;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::SessionCreated(event::SessionCreated {
                session_id: record.id.clone(),
                user_id: record.user_id.clone(),
            }),
        )
        .await?;
    tracing::info!(session = %record.id, "session created");
    Ok(IssuedSession {
        session_id: record.id,
        session_token,
        refresh_token,
        expires_at,
    })
}

fn invalid_refresh() -> ApiError {
    ApiError::new(ErrorCode::SessionInvalid, "the refresh token is not valid")
}

/// Rotates a refresh token. A token that was already used compromises its
/// session (unless the issuer allows a short leeway and this is a retry of
/// the latest rotation, which gets that same successor again).
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn refresh(state: Arc<State>, req: Refresh) -> Result<IssuedSession, Error> {
    let presented = req.refresh_token.expose();
    let region = refresh_token_region(presented).ok_or_else(invalid_refresh)?;
    let token_hash = idm_crypto::sha256_hex(presented.as_bytes());
    let (successor, successor_hash) = new_refresh_token(region);
    let leeway = req.policy.refresh_reuse_leeway_seconds;
    // The successor is kept, sealed to this exact predecessor, only while a
    // retry within the leeway may need it; the store can never read it.
    let successor_sealed = if leeway > 0 {
        let sealed = state
            .keys
            .master()
            .seal(successor.expose().as_bytes(), token_hash.as_bytes())?;
        Some(base64::engine::general_purpose::STANDARD.encode(sealed))
    } else {
        None
    };
    let request = store::RefreshSession {
        issuer_id: req.issuer_id.clone(),
        token_hash: token_hash.clone(),
        new_token_hash: successor_hash,
        successor_sealed,
        idle_timeout_seconds: req.policy.session_idle_timeout_seconds,
        leeway_seconds: leeway,
        device: req.device,
    };
    let outcome = state.bus.send_to(region, &request).await.map_err(|e| {
        // Another issuer's token is simply unknown in this issuer's schema.
        if e.code == ErrorCode::NotFound {
            invalid_refresh()
        } else {
            e
        }
    })?;
    let (session, refresh_token) = match outcome {
        RefreshOutcome::Rotated { session } => (session, successor),
        RefreshOutcome::Replayed {
            session,
            successor_sealed,
            ..
        } => {
            let sealed = base64::engine::general_purpose::STANDARD
                .decode(successor_sealed)
                .map_err(|e| ApiError::internal_from(&e))?;
            let opened = state
                .keys
                .master()
                .open(&sealed, token_hash.as_bytes())?
                .plaintext;
            let token =
                String::from_utf8(opened.to_vec()).map_err(|e| ApiError::internal_from(&e))?;
            (session, SecretText::new(token))
        }
        RefreshOutcome::Compromised { session } => {
            tracing::warn!(session = %session.id, "refresh token reused: session revoked as compromised");
            revocation::announce(&state, &req.issuer_id, std::slice::from_ref(&session), true)
                .await?;
            return Err(ApiError::new(
                ErrorCode::RefreshTokenReused,
                "this refresh token was already used; the session has been revoked",
            )
            .into());
        }
    };
    let (session_token, expires_at) =
        sign(&state, &req.issuer_id, &session, region, &req.policy).await?;
    Ok(IssuedSession {
        session_id: session.id,
        session_token,
        refresh_token,
        expires_at,
    })
}

/// Refuses (and ends in its store) a session created before the issuer's
/// latest emergency key revocation: its refresh token must not mint tokens
/// under the new key.
async fn refuse_if_before_key_revocation(
    state: &State,
    issuer: &IssuerId,
    region: Region,
    session: &SessionRecord,
    sessions_not_before: Option<idm_core::Timestamp>,
) -> Result<(), Error> {
    let Some(cutoff) = sessions_not_before else {
        return Ok(());
    };
    if session.created_at > cutoff {
        return Ok(());
    }
    let revoke = store::RevokeSession {
        issuer_id: issuer.clone(),
        session_id: session.id.clone(),
        reason: "signing_keys_revoked".into(),
    };
    if let Err(e) = state.bus.send_to(region, &revoke).await {
        // The refresh is refused either way; the session just stays listed.
        tracing::warn!(error = %e, session = %session.id, "session from before a key revocation not marked revoked");
    }
    Err(ApiError::new(
        ErrorCode::SessionRevoked,
        "the application revoked its signing keys; sign in again",
    )
    .into())
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, session = %req.session_id))]
pub async fn revoke(state: Arc<State>, req: Revoke) -> Result<SessionRecord, Error> {
    let region = match req.region {
        Some(region) => region,
        None => session_index::region_of(&state.db, &req.issuer_id, &req.session_id)
            .await?
            .ok_or_else(|| ApiError::not_found("session"))?,
    };
    let revoke = store::RevokeSession {
        issuer_id: req.issuer_id.clone(),
        session_id: req.session_id,
        reason: req.reason,
    };
    let record = state.bus.send_to(region, &revoke).await?;
    revocation::announce(&state, &req.issuer_id, std::slice::from_ref(&record), false).await?;
    Ok(record)
}

async fn region_of_user(state: &State, issuer: &IssuerId, user: &UserId) -> Result<Region, Error> {
    let found = state
        .bus
        .send(&user::GetUser {
            issuer_id: issuer.clone(),
            user_id: user.clone(),
        })
        .await?;
    Ok(found.region)
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn revoke_all(state: Arc<State>, req: RevokeAll) -> Result<Revoked, Error> {
    let region = match req.region {
        Some(region) => region,
        None => region_of_user(&state, &req.issuer_id, &req.user_id).await?,
    };
    let request = store::RevokeUserSessions(store::UserSessions {
        issuer_id: req.issuer_id.clone(),
        user_id: req.user_id,
        page: None,
    });
    let revoked = state.bus.send_to(region, &request).await?;
    revocation::announce(&state, &req.issuer_id, &revoked.data, false).await?;
    Ok(Revoked {
        session_ids: revoked.data.into_iter().map(|s| s.id).collect(),
    })
}

pub async fn list(state: Arc<State>, req: List) -> Result<SessionList, Error> {
    let region = match req.region {
        Some(region) => region,
        None => region_of_user(&state, &req.issuer_id, &req.user_id).await?,
    };
    let request = store::ListSessions(store::UserSessions {
        issuer_id: req.issuer_id,
        user_id: req.user_id,
        page: req.page,
    });
    let sessions = state.bus.send_to(region, &request).await?;
    Ok(SessionList {
        data: sessions.data,
        has_more: sessions.has_more,
    })
}

/// Revokes every session of one of the user's devices through the same
/// path as any revocation: recorded in the regional store first, then
/// broadcast to every edge (and an event per session).
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, device = %req.device_id))]
pub async fn revoke_device(state: Arc<State>, req: RevokeDevice) -> Result<Revoked, Error> {
    let region = region_of_user(&state, &req.issuer_id, &req.user_id).await?;
    let request = store::RevokeDevice {
        issuer_id: req.issuer_id.clone(),
        user_id: req.user_id,
        device_id: req.device_id,
    };
    let revoked = state.bus.send_to(region, &request).await?;
    revocation::announce(&state, &req.issuer_id, &revoked.data, false).await?;
    Ok(Revoked {
        session_ids: revoked.data.into_iter().map(|s| s.id).collect(),
    })
}

/// The issuer's ring for edge-guard, every secret sealed under the transport
/// key and bound to the edge's fetch nonce: a reply read off the bus (or
/// replayed to an edge) is useless.
pub async fn key_ring(state: Arc<State>, req: KeyRingRequest) -> Result<KeyRing, Error> {
    if !idm_crypto::key_transport::nonce_is_well_formed(&req.nonce) {
        return Err(ApiError::invalid_request("a fresh nonce is required").into());
    }
    let ring = state.keys.ring(&req.issuer_id).await?;
    let keys = ring
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let sealed = state.transport.seal(&req.issuer_id, k, &req.nonce)?;
            Ok(SealedSigningKey {
                kid: k.kid.clone(),
                sealed_secret: base64::engine::general_purpose::STANDARD.encode(sealed),
                current: i == 0,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(KeyRing {
        issuer_id: req.issuer_id,
        keys,
    })
}

/// Tells every edge and session replica to drop its cached ring of `issuer`.
async fn announce_ring_change(state: &State, issuer: &IssuerId) {
    let subject = state
        .bus
        .broadcast_subject("config.changed", issuer.as_str());
    state
        .bus
        .broadcast(
            subject,
            &idm_core::proto::account::ConfigChanged {
                issuer_id: issuer.clone(),
                key_hash: None,
            },
        )
        .await;
    state.bus.flush().await;
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn rotate_key(state: Arc<State>, req: IssuerKeys) -> Result<RotatedKey, Error> {
    let (kid, created_at) = state.keys.rotate(&req.issuer_id).await?;
    announce_ring_change(&state, &req.issuer_id).await;
    tracing::info!(%kid, "signing key rotated");
    Ok(RotatedKey { kid, created_at })
}

/// Emergency revocation: every earlier key of the issuer stops verifying on
/// every edge as soon as the broadcast lands (before this answers), and no
/// session created until now can be refreshed (see docs/SESSIONS.md).
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, actor = %req.actor_key_id))]
pub async fn revoke_keys(state: Arc<State>, req: RevokeKeys) -> Result<RevokedKeys, Error> {
    let revocation = state.keys.revoke_all(&req.issuer_id).await?;
    announce_ring_change(&state, &req.issuer_id).await;
    tracing::warn!(
        new_kid = %revocation.new_kid,
        revoked = ?revocation.revoked_kids,
        "every signing key of the issuer was revoked"
    );
    let answer = RevokedKeys {
        kid: revocation.new_kid,
        revoked_kids: revocation.revoked_kids,
        sessions_not_before: revocation.sessions_not_before,
    };
    let request_id = idm_bus::current_context().request_id;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::SessionKeysRevoked(event::SessionKeysRevoked {
                actor_key_id: req.actor_key_id,
                request_id,
                revoked_kids: answer.revoked_kids.clone(),
                new_kid: answer.kid.clone(),
                sessions_not_before: answer.sessions_not_before,
            }),
        )
        .await?;
    Ok(answer)
}

/// Signs a verification result with the issuer's current key.
pub async fn sign_verification(
    state: Arc<State>,
    req: SignVerification,
) -> Result<SecretText, Error> {
    let ring = state.keys.ring(&req.issuer_id).await?;
    let key = ring
        .current()
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    let claims = session_token::VerificationClaims {
        iss: req.issuer_id,
        vid: req.verification_id,
        email: req.email,
        verified_at: req.verified_at.unix_timestamp(),
    };
    Ok(SecretText::new(session_token::sign_verification(
        key, &claims,
    )?))
}
