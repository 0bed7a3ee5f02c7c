use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use idm_core::proto::account::{
    self, ApiKeyInfo, ApiKeyList, CreateApiKey, CreatedApiKey, IssuerRef, RevokeApiKey,
};
use idm_core::{ApiError, ApiKeyId, KeyKind, Scope};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    kind: String,
    name: String,
    scopes: Option<Vec<String>>,
}

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
    let created: CreatedApiKey = incoming
        .app
        .bus
        .call("account", account::CREATE_API_KEY, &request)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(incoming: Incoming) -> Reply<Json<ApiKeyList>> {
    let caller = incoming.authorize().await?;
    let keys: ApiKeyList = incoming
        .app
        .bus
        .call(
            "account",
            account::LIST_API_KEYS,
            &IssuerRef {
                issuer_id: caller.key.issuer_id.clone(),
            },
        )
        .await?;
    Ok(Json(keys))
}

pub async fn revoke(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<ApiKeyInfo>> {
    let caller = incoming.authorize().await?;
    let key_id = ApiKeyId::parse(&id)?;
    let request = RevokeApiKey {
        issuer_id: caller.key.issuer_id.clone(),
        key_id,
    };
    let revoked: ApiKeyInfo = incoming
        .app
        .bus
        .call("account", account::REVOKE_API_KEY, &request)
        .await?;
    Ok(Json(revoked))
}
