use super::profiles::{page_of, ListQuery};
use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use idm_core::proto::account::{
    self, ApiKeyInfo, ApiKeyList, CreateApiKey, CreatedApiKey, RevokeApiKey,
};
use idm_core::{ApiError, ApiKeyId, KeyKind, Scope};
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[schema(value_type = KeyKind)]
    kind: String,
    name: String,
    /// Secret keys only; the creating key's scopes (never more) when absent.
    #[schema(value_type = Option<Vec<Scope>>)]
    scopes: Option<Vec<String>>,
}

/// A new API key of this issuer: the key text is in the answer once.
#[utoipa::path(post, path = "/v1/api_keys", tag = "api_keys", request_body = NewKey,
    responses((status = 201, description = "The key, shown once", body = CreatedApiKey)))]
pub async fn create(
    incoming: Incoming,
    new: Result<Json<NewKey>, JsonRejection>,
) -> Reply<(StatusCode, Json<CreatedApiKey>)> {
    let caller = incoming.authorize().await?;
    let new = body(new)?;
    let kind = match new.kind.as_str() {
        "secret" => KeyKind::Secret,
        "restricted" => KeyKind::Restricted,
        _ => return Err(ApiError::validation("kind must be 'secret' or 'restricted'").into()),
    };
    let scopes = new
        .scopes
        .map(|list| {
            list.iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let request = CreateApiKey {
        issuer_id: caller.key.issuer_id.clone(),
        created_by: caller.key.key_id.clone(),
        kind,
        name: new.name,
        scopes,
    };
    let created = incoming.app.bus.send(&request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A page of the issuer's keys, newest first, revoked ones included (never
/// the key text).
#[utoipa::path(get, path = "/v1/api_keys", tag = "api_keys", params(ListQuery),
    responses((status = 200, description = "The keys", body = ApiKeyList)))]
pub async fn list(
    incoming: Incoming,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<ApiKeyList>> {
    let caller = incoming.authorize().await?;
    let page = page_of(params)?;
    let keys = incoming
        .app
        .bus
        .send(&account::ListApiKeys {
            issuer_id: caller.key.issuer_id.clone(),
            page,
        })
        .await?;
    Ok(Json(keys))
}

/// Revokes a key of this issuer.
#[utoipa::path(delete, path = "/v1/api_keys/{id}", tag = "api_keys",
    params(("id" = ApiKeyId, Path, description = "The key's id")),
    responses((status = 200, description = "The revoked key", body = ApiKeyInfo)))]
pub async fn revoke(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<ApiKeyInfo>> {
    let caller = incoming.authorize().await?;
    let key_id = ApiKeyId::parse(&id)?;
    let request = RevokeApiKey {
        issuer_id: caller.key.issuer_id.clone(),
        key_id,
    };
    let revoked = incoming.app.bus.send(&request).await?;
    Ok(Json(revoked))
}
