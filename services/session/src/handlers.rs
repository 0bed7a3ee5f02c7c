//! Bus operations of the session service.

use crate::key_ring::Ring;
use crate::{revocation, session_index, Error, State};
use base64::Engine;
use idm_core::proto::event::DomainEvent;
use idm_core::proto::session::*;
use idm_core::proto::store::{self, SessionRecord};
use idm_core::proto::{event, user, Done, SecretText};
use idm_core::{ApiError, ErrorCode, IssuerId, IssuerPolicy, Region, SessionId, UserId};
use idm_crypto::refresh_token;
use idm_crypto::session_token;
use std::sync::Arc;

pub async fn init_issuer(state: Arc<State>, req: InitIssuer) -> Result<Done, Error> {
    state.keys.ensure_key(&req.issuer_id).await?;
    Ok(Done::default())
}

/// The store's revocation reason for a session whose refresh token was reused.
const COMPROMISED: &str = "compromised";

/// Signs a session token for `session` with the ring's current key, never
/// past the session's own end. The same ring says whether the session
/// predates a key revocation, so a revocation racing this refresh cannot be
/// missed.
async fn sign(
    state: &State,
    issuer: &IssuerId,
    ring: &Ring,
    session: &SessionRecord,
    region: Region,
    policy: &IssuerPolicy,
) -> Result<(SecretText, idm_core::Timestamp), Error> {
    refuse_if_before_key_revocation(state, issuer, region, session, ring.sessions_not_before)
        .await?;
    let key = ring
        .current()
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    let (token, expires_at) = session_token::issue(
        key,
        issuer,
        session,
        region,
        policy.session_lifetime_seconds,
    )?;
    Ok((SecretText::new(token), expires_at))
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, region = %req.region))]
pub async fn create_session(state: Arc<State>, req: CreateSession) -> Result<IssuedSession, Error> {
    let session_id = SessionId::generate();
    let (refresh_token, refresh_token_hash) = refresh_token::generate(req.region);
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
    let ring = state.keys.ring(&req.issuer_id).await?;
    let (session_token, expires_at) = sign(
        &state,
        &req.issuer_id,
        &ring,
        &record,
        req.region,
        &req.policy,
    )
    .await?;
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

/// Rotates a refresh token. A token that was already used compromises its
/// session (unless the issuer allows a short leeway and this is a retry of
/// the latest rotation, which gets that same successor again).
///
/// Edges whose ring carries [`RefreshRules`] rotate at the store themselves
/// (edge-guard's `refresh` module, one bus hop); this operation serves
/// edges of an earlier release and a retry whose successor was sealed by
/// one (see [`open_successor`]).
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn refresh(state: Arc<State>, req: Refresh) -> Result<IssuedSession, Error> {
    let presented = req.refresh_token.expose();
    let region = refresh_token_region(presented).ok_or_else(refresh_token_invalid)?;
    let token_hash = refresh_token::hash(presented);
    let ring = state.keys.ring(&req.issuer_id).await?;
    let signing_key = ring
        .current()
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    let (successor, successor_hash) = refresh_token::generate(region);
    // The successor is kept, sealed to this exact predecessor, only while a
    // retry within the leeway may need it; the store can never read it.
    let successor_sealed = (req.policy.refresh_reuse_leeway_seconds > 0)
        .then(|| {
            refresh_token::seal_successor(
                signing_key,
                &req.issuer_id,
                &token_hash,
                successor.expose(),
            )
        })
        .transpose()?;
    let request = store::RefreshSession::under_policy(
        req.issuer_id.clone(),
        token_hash.clone(),
        successor_hash,
        successor_sealed,
        &req.policy,
        req.device,
    );
    let outcome = state
        .bus
        .send_to(region, &request)
        .await
        .map_err(refresh_error)?;
    let (session, sealed_successor) = match outcome.into_rotation() {
        Ok(rotated) => rotated,
        Err(session) => {
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
    // Before anything is opened: after an emergency key revocation the key
    // that sealed a replayed successor is gone, and so is the session.
    refuse_if_before_key_revocation(
        &state,
        &req.issuer_id,
        region,
        &session,
        ring.sessions_not_before,
    )
    .await?;
    let refresh_token = match sealed_successor {
        None => successor,
        Some(sealed) => open_successor(&state, &ring, &req.issuer_id, &token_hash, &sealed).await?,
    };
    let (session_token, expires_at) =
        sign(&state, &req.issuer_id, &ring, &session, region, &req.policy).await?;
    Ok(IssuedSession {
        session_id: session.id,
        session_token,
        refresh_token,
        expires_at,
    })
}

/// The successor a replayed rotation stored: sealed under a ring key (by an
/// edge or by this service), or, from a release before the ring sealed them,
/// under this service's master key (gone one leeway, 60 s at most, after
/// the upgrade).
async fn open_successor(
    state: &State,
    ring: &Ring,
    issuer: &IssuerId,
    predecessor_hash: &str,
    sealed: &str,
) -> Result<SecretText, Error> {
    let Some(kid) = refresh_token::successor_kid(sealed) else {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|e| ApiError::internal_from(&e))?;
        let opened = state
            .keys
            .master()
            .open(&sealed, predecessor_hash.as_bytes())?
            .plaintext;
        let token = String::from_utf8(opened.to_vec()).map_err(|e| ApiError::internal_from(&e))?;
        return Ok(SecretText::new(token));
    };
    // A key rotated in moments ago by another replica may not be cached yet.
    let fresh;
    let key = match ring.find(kid) {
        Some(key) => key,
        None => {
            state.keys.forget(issuer).await;
            fresh = state.keys.ring(issuer).await?;
            fresh.find(kid).ok_or_else(|| {
                ApiError::internal_from(&"the key that sealed a successor is not in the ring")
            })?
        }
    };
    let opened = refresh_token::open_successor(sealed, key, issuer, predecessor_hash)?;
    Ok(SecretText::new(opened.as_str().to_owned()))
}

/// An edge found a reused refresh token: the store has already revoked the
/// session as compromised. Revoking is idempotent there (the first reason
/// and time stay), so asking the store again both confirms the record and
/// gives the broadcast and the event the store's own copy, not the edge's.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, session = %req.session_id, region = %req.region))]
pub async fn report_reuse(state: Arc<State>, req: ReportReuse) -> Result<Done, Error> {
    let revoke = store::RevokeSession {
        issuer_id: req.issuer_id.clone(),
        session_id: req.session_id,
        reason: COMPROMISED.into(),
    };
    let record = state.bus.send_to(req.region, &revoke).await?;
    let compromised = record.revoke_reason.as_deref() == Some(COMPROMISED);
    tracing::warn!(session = %record.id, compromised, "refresh token reused: session revoked");
    revocation::announce(
        &state,
        &req.issuer_id,
        std::slice::from_ref(&record),
        compromised,
    )
    .await?;
    Ok(Done::default())
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
        refresh: Some(RefreshRules {
            sessions_not_before: ring.sessions_not_before,
        }),
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
