use super::{body, Reply};
use crate::access::{Access, Incoming};
use axum::extract::rejection::JsonRejection;
use axum::Json;
use idm_core::proto::SecretText;
use idm_core::scope::{Level, Resource};
use idm_core::{Scope, Timestamp};
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
    let caller = incoming
        .authorize(Access::Backend(Scope::new(Resource::Sessions, Level::Read)))
        .await?;
    let request = body(request)?;
    let claims = incoming
        .app
        .sessions
        .verify(&caller.key.issuer_id, request.session_token.expose())
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
