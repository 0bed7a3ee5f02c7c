//! Bus operations of the session service.

use crate::{Error, State};
use base64::Engine;
use idm_core::proto::session::*;
use idm_core::proto::store::{self, SessionRecord};
use idm_core::proto::{Done, SecretText};
use idm_core::{ApiError, SessionId};
use idm_crypto::session_token::{self, SessionClaims};
use std::sync::Arc;

pub async fn init_issuer(state: Arc<State>, req: InitIssuer) -> Result<Done, Error> {
    state.keys.ensure_key(&req.issuer_id).await?;
    Ok(Done::default())
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, region = %req.region))]
pub async fn create_session(state: Arc<State>, req: CreateSession) -> Result<IssuedSession, Error> {
    let ring = state.keys.ring(&req.issuer_id).await?;
    let key = ring
        .current()
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    let session_id = SessionId::generate();
    let now = idm_core::now();
    let expires_at = now + time::Duration::seconds(i64::from(req.lifetime_seconds));
    let record: SessionRecord = state
        .bus
        .call_store(
            req.region,
            store::CREATE_SESSION,
            &store::CreateSession {
                issuer_id: req.issuer_id.clone(),
                session_id: session_id.clone(),
                user_id: req.user_id.clone(),
                expires_at,
                device: req.device,
            },
        )
        .await?;
    let claims = SessionClaims {
        iss: req.issuer_id,
        sid: record.id.clone(),
        sub: record.user_id,
        reg: req.region,
        iat: now.unix_timestamp(),
        exp: expires_at.unix_timestamp(),
    };
    let token = session_token::sign(key, &claims);
    tracing::info!(session = %record.id, "session created");
    Ok(IssuedSession {
        session_id: record.id,
        session_token: SecretText::new(token),
        expires_at,
    })
}

pub async fn key_ring(state: Arc<State>, req: KeyRingRequest) -> Result<KeyRing, Error> {
    let ring = state.keys.ring(&req.issuer_id).await?;
    let keys = ring
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| SigningKey {
            kid: k.kid.clone(),
            secret: SecretText::new(
                base64::engine::general_purpose::STANDARD.encode(k.secret.as_ref()),
            ),
            current: i == 0,
        })
        .collect();
    Ok(KeyRing {
        issuer_id: req.issuer_id,
        keys,
    })
}
