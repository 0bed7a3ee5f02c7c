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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    session_token: SecretText,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VerifiedSession {
    session_id: idm_core::SessionId,
    user_id: idm_core::UserId,
    region: idm_core::Region,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

/// For tenant backends: is this session token valid for my issuer?
#[utoipa::path(post, path = "/v1/sessions/verify", tag = "sessions", request_body = VerifyRequest,
    responses((status = 200, description = "The session is valid", body = VerifiedSession)))]
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

/// A user's live sessions, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/users/{id}/sessions", tag = "sessions",
    params(("id" = UserId, Path, description = "The user's id"), super::profiles::ListQuery),
    responses((status = 200, description = "The sessions", body = SessionList)))]
pub async fn list_for_user(
    incoming: Incoming,
    Path(id): Path<String>,
    params: Result<
        axum::extract::Query<super::profiles::ListQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Reply<Json<SessionList>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let request = session::List {
        issuer_id: caller.key.issuer_id.clone(),
        user_id,
        region: None,
        page: Some(super::profiles::page_of(params)?),
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Revokes one session.
#[utoipa::path(post, path = "/v1/sessions/{id}/revoke", tag = "sessions",
    params(("id" = SessionId, Path, description = "The session's id")),
    responses((status = 200, description = "The revoked session", body = SessionRecord)))]
pub async fn revoke(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<SessionRecord>> {
    let caller = incoming.authorize().await?;
    let session_id = SessionId::parse(&id)?;
    let request = session::Revoke {
        issuer_id: caller.key.issuer_id.clone(),
        session_id,
        region: None,
        reason: "revoked_by_backend".into(),
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Revokes every session of a user.
#[utoipa::path(post, path = "/v1/users/{id}/sessions/revoke_all", tag = "sessions",
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 200, description = "The sessions revoked", body = session::Revoked)))]
pub async fn revoke_all(
    incoming: Incoming,
    Path(id): Path<String>,
) -> Reply<Json<session::Revoked>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let request = session::RevokeAll {
        issuer_id: caller.key.issuer_id.clone(),
        user_id,
        region: None,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// A new signing key for this issuer; earlier keys verify until their sessions end.
#[utoipa::path(post, path = "/v1/session_keys/rotate", tag = "sessions",
    responses((status = 200, description = "The new key's id", body = session::RotatedKey)))]
pub async fn rotate_signing_key(incoming: Incoming) -> Reply<Json<session::RotatedKey>> {
    let caller = incoming.authorize().await?;
    let request = session::IssuerKeys {
        issuer_id: caller.key.issuer_id.clone(),
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Emergency: every earlier signing key of the caller's issuer stops
/// verifying now, and every session of the issuer must sign in again.
#[utoipa::path(post, path = "/v1/session_keys/revoke", tag = "sessions",
    responses((status = 200, description = "The keys revoked", body = session::RevokedKeys)))]
pub async fn revoke_signing_keys(incoming: Incoming) -> Reply<Json<session::RevokedKeys>> {
    let caller = incoming.authorize().await?;
    let request = session::RevokeKeys {
        issuer_id: caller.key.issuer_id.clone(),
        actor_key_id: caller.key.key_id.clone(),
    };
    let revoked = incoming.app.bus.send(&request).await?;
    // This replica stops accepting the old keys before it answers; the
    // others drop them on the `config.changed` broadcast.
    incoming.app.sessions.forget(&caller.key.issuer_id).await;
    Ok(Json(revoked))
}
