use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use idm_core::proto::store::{PersonalToken, PersonalTokens};
use idm_core::proto::user::{
    self, CreatedPersonalToken, NewPersonalToken, PersonalTokenRef, VerifyPersonalToken,
};
use idm_core::proto::SecretText;
use idm_core::scope::check_personal_token_scopes;
use idm_core::text::DisplayName;
use idm_core::{ApiError, PersonalTokenId, UserId};
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// The tenant's own scopes; in idmesh's namespace only what the key holds.
    scopes: Vec<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<String>,
}

/// A personal token for a user: the token text is in the answer once.
#[utoipa::path(post, path = "/v1/users/{id}/personal_tokens", tag = "personal_tokens",
    params(("id" = UserId, Path, description = "The user's id")), request_body = NewToken,
    responses((status = 201, description = "The token, shown once", body = CreatedPersonalToken)))]
pub async fn create(
    incoming: Incoming,
    Path(id): Path<String>,
    new: Result<Json<NewToken>, JsonRejection>,
) -> Reply<(StatusCode, Json<CreatedPersonalToken>)> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let new = body(new)?;
    let expires_at = new
        .expires_at
        .map(|at| time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339))
        .transpose()
        .map_err(|_| ApiError::validation("expires_at must be an RFC 3339 time"))?;
    // A token's scopes are the tenant's vocabulary, except idmesh's own
    // namespace, where it may only claim what this key holds (SECURITY.md).
    check_personal_token_scopes(&caller.key.scopes, &new.scopes)?;
    let request = NewPersonalToken {
        issuer_id: caller.key.issuer_id.clone(),
        user_id,
        name: DisplayName::parse("name", &new.name)?,
        scopes: new.scopes,
        expires_at,
    };
    let created = incoming.app.bus.send(&request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A user's personal tokens (never the token text), newest first, a page at a time.
#[utoipa::path(get, path = "/v1/users/{id}/personal_tokens", tag = "personal_tokens",
    params(("id" = UserId, Path, description = "The user's id"), super::profiles::ListQuery),
    responses((status = 200, description = "The tokens", body = PersonalTokens)))]
pub async fn list(
    incoming: Incoming,
    Path(id): Path<String>,
    params: Result<
        axum::extract::Query<super::profiles::ListQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Reply<Json<PersonalTokens>> {
    let caller = incoming.authorize().await?;
    let request = user::ListPersonalTokens {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: UserId::parse(&id)?,
        page: super::profiles::page_of(params)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Revokes a personal token.
#[utoipa::path(delete, path = "/v1/users/{id}/personal_tokens/{token_id}", tag = "personal_tokens",
    params(("id" = UserId, Path, description = "The user's id"),
        ("token_id" = PersonalTokenId, Path, description = "The token's id")),
    responses((status = 200, description = "The revoked token", body = PersonalToken)))]
pub async fn revoke(
    incoming: Incoming,
    Path((user, token)): Path<(String, String)>,
) -> Reply<Json<PersonalToken>> {
    let caller = incoming.authorize().await?;
    let request = PersonalTokenRef {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: UserId::parse(&user)?,
        token_id: PersonalTokenId::parse(&token)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    token: SecretText,
}

/// For tenant backends: whose token is this, and what may it do?
#[utoipa::path(post, path = "/v1/personal_tokens/verify", tag = "personal_tokens",
    request_body = VerifyBody,
    responses((status = 200, description = "The token's owner and scopes", body = PersonalToken)))]
pub async fn verify(
    incoming: Incoming,
    request: Result<Json<VerifyBody>, JsonRejection>,
) -> Reply<Json<PersonalToken>> {
    let caller = incoming.authorize().await?;
    let request = body(request)?;
    if request.token.expose().len() > 256 {
        return Err(ApiError::new(
            idm_core::ErrorCode::Unauthenticated,
            "the personal token is not valid",
        )
        .into());
    }
    let call = VerifyPersonalToken {
        issuer_id: caller.key.issuer_id.clone(),
        token: request.token,
    };
    Ok(Json(incoming.app.bus.send(&call).await?))
}
