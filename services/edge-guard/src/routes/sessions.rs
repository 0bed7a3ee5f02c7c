use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::Json;
use idm_core::proto::session::{self, SessionList};
use idm_core::proto::store::SessionRecord;
use idm_core::proto::SecretText;
use idm_core::Timestamp;
use idm_core::{SessionId, UserId};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    session_token: SecretText,
}

#[derive(Serialize)]
pub struct VerifiedSession {
    session_id: idm_core::SessionId,
    user_id: idm_core::UserId,
    region: idm_core::Region,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: Timestamp,
}

/// For tenant backends: is this session token valid for my issuer?
pub async fn verify(
    incoming: Incoming,
    request: Result<Json<VerifyRequest>, JsonRejection>,
) -> Reply<Json<VerifiedSession>> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    let claims = incoming
        .app
        .verify_session(&caller.key, request.session_token.expose())
        .await?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp)
        .map_err(|e| idm_core::ApiError::internal_from(&e))?;
    Ok(Json(VerifiedSession {
        session_id: claims.sid,
        user_id: claims.sub,
        region: claims.reg,
        expires_at,
    }))
}

pub async fn list_for_user(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<SessionList>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let request = session::List {
        issuer_id: caller.key.issuer_id.clone(),
        user_id,
        region: None,
    };
    Ok(Json(
        incoming
            .app
            .bus
            .call("session", session::LIST, &request)
            .await?,
    ))
}

pub async fn revoke(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<SessionRecord>> {
    let caller = incoming.authorize().await?;
    let session_id = SessionId::parse(&id)?;
    let request = session::Revoke {
        issuer_id: caller.key.issuer_id.clone(),
        session_id,
        region: None,
        reason: "revoked_by_backend".into(),
    };
    Ok(Json(
        incoming
            .app
            .bus
            .call("session", session::REVOKE, &request)
            .await?,
    ))
}

pub async fn revoke_all(
    incoming: Incoming,
    Path(id): Path<String>,
) -> Reply<Json<session::Revoked>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let request = session::RevokeAll {
        issuer_id: caller.key.issuer_id.clone(),
        user_id,
    };
    Ok(Json(
        incoming
            .app
            .bus
            .call("session", session::REVOKE_ALL, &request)
            .await?,
    ))
}

pub async fn rotate_signing_key(incoming: Incoming) -> Reply<Json<session::RotatedKey>> {
    let caller = incoming.authorize().await?;
    let request = session::IssuerKeys {
        issuer_id: caller.key.issuer_id.clone(),
    };
    Ok(Json(
        incoming
            .app
            .bus
            .call("session", session::ROTATE_KEY, &request)
            .await?,
    ))
}

/// Emergency: every earlier signing key of the caller's issuer stops
/// verifying now, and every session of the issuer must sign in again.
pub async fn revoke_signing_keys(incoming: Incoming) -> Reply<Json<session::RevokedKeys>> {
    let caller = incoming.authorize().await?;
    let request = session::RevokeKeys {
        issuer_id: caller.key.issuer_id.clone(),
        actor_key_id: caller.key.key_id.clone(),
    };
    let revoked: session::RevokedKeys = incoming
        .app
        .bus
        .call("session", session::REVOKE_KEYS, &request)
        .await?;
    // This replica stops accepting the old keys before it answers; the
    // others drop them on the `config.changed` broadcast.
    incoming.app.sessions.forget(&caller.key.issuer_id).await;
    Ok(Json(revoked))
}
