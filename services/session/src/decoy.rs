//! Decoy sessions, for answers that must look like a fresh sign-up without
//! giving anyone a session (an issuer that hides which addresses have
//! accounts). The token carries the issuer's current key id and well-formed
//! claims, so nothing in the response tells it apart from a real one; its MAC
//! is made with a random key that is dropped at once, so it never verifies.

use crate::{Error, State};
use idm_core::proto::session::DecoySession;
use idm_core::proto::session::IssuedSession;
use idm_core::proto::SecretText;
use idm_core::{ApiError, SessionId};
use idm_crypto::session_token::{self, RingKey, SessionClaims};
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn decoy_session(
    state: Arc<State>,
    DecoySession(req): DecoySession,
) -> Result<IssuedSession, Error> {
    let ring = state.keys.ring(&req.issuer_id).await?;
    let current = ring
        .current()
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    let throwaway = RingKey {
        kid: current.kid.clone(),
        secret: zeroize::Zeroizing::new(idm_crypto::random_bytes::<32>()),
    };
    let now = idm_core::now();
    let expires_at = now + time::Duration::seconds(i64::from(req.policy.session_lifetime_seconds));
    let session_id = SessionId::generate();
    let claims = SessionClaims {
        iss: req.issuer_id,
        sid: session_id.clone(),
        sub: req.user_id,
        reg: req.region,
        iat: now.unix_timestamp(),
        exp: expires_at.unix_timestamp(),
    };
    // The refresh token is never stored, so it is refused like any unknown one.
    let (refresh_token, _) = idm_crypto::refresh_token::generate(req.region);
    Ok(IssuedSession {
        session_id,
        session_token: SecretText::new(session_token::sign(&throwaway, &claims)?),
        refresh_token,
        expires_at,
    })
}
