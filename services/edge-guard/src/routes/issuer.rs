use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::Json;
use idm_core::proto::account::{CreateIssuer, CreatedIssuer, Issuer, IssuerRef, UpdateIssuer};
use idm_core::text::DisplayName;
use idm_core::{AllowedOrigin, ApiError, IssuerPolicy, KeyMode};
use serde::Deserialize;

/// The key's issuer.
#[utoipa::path(get, path = "/v1/issuer", tag = "issuers",
    responses((status = 200, description = "The issuer", body = Issuer)))]
pub async fn get_issuer(incoming: Incoming) -> Reply<Json<Issuer>> {
    let caller = incoming.authorize().await?;
    let issuer = incoming
        .app
        .bus
        .send(&IssuerRef {
            issuer_id: caller.key.issuer_id.clone(),
        })
        .await?;
    Ok(Json(issuer))
}

/// The fields to change; a policy patch changes only the fields it names.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerPatch {
    #[schema(value_type = Option<Vec<AllowedOrigin>>)]
    allowed_origins: Option<Vec<String>>,
    /// Any fields of `IssuerPolicy`.
    #[schema(value_type = Option<Object>)]
    policy: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Changes the issuer's allowed origins and policy.
#[utoipa::path(patch, path = "/v1/issuer", tag = "issuers", request_body = IssuerPatch,
    responses((status = 200, description = "The issuer as changed", body = Issuer)))]
pub async fn update_issuer(
    incoming: Incoming,
    patch: Result<Json<IssuerPatch>, JsonRejection>,
) -> Reply<Json<Issuer>> {
    let caller = incoming.authorize().await?;
    let patch = body(patch)?;
    let allowed_origins = patch
        .allowed_origins
        .map(|list| {
            list.iter()
                .map(|o| AllowedOrigin::parse(o))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    // A policy patch changes only the fields it names.
    let policy = match patch.policy {
        None => None,
        Some(changes) => {
            let mut merged = serde_json::to_value(&caller.key.policy)
                .map_err(|e| ApiError::internal_from(&e))?;
            if let Some(current) = merged.as_object_mut() {
                current.extend(changes);
            }
            let policy: IssuerPolicy = serde_json::from_value(merged)
                .map_err(|e| ApiError::validation(format!("policy: {e}")))?;
            policy.validate()?;
            Some(policy)
        }
    };
    let update = UpdateIssuer {
        issuer_id: caller.key.issuer_id.clone(),
        allowed_origins,
        policy,
    };
    let issuer = incoming.app.bus.send(&update).await?;
    Ok(Json(issuer))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIssuer {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// `live` or `test`; the calling key's mode when absent.
    #[schema(value_type = Option<KeyMode>)]
    mode: Option<String>,
}

/// Another issuer in the same account, with its first secret key (shown once).
#[utoipa::path(post, path = "/v1/issuers", tag = "issuers", request_body = NewIssuer,
    responses((status = 201, description = "The issuer and its first secret key", body = CreatedIssuer)))]
pub async fn create_issuer(
    incoming: Incoming,
    new: Result<Json<NewIssuer>, JsonRejection>,
) -> Reply<(StatusCode, Json<CreatedIssuer>)> {
    let caller = incoming.authorize().await?;
    let new = body(new)?;
    let name = DisplayName::parse("name", &new.name)?;
    let mode = new
        .mode
        .as_deref()
        .map(KeyMode::parse)
        .transpose()?
        .unwrap_or(caller.key.issuer_mode);
    let request = CreateIssuer {
        account_id: caller.key.account_id.clone(),
        created_by: caller.key.key_id.clone(),
        name: name.as_str().to_owned(),
        mode,
    };
    let created = incoming.app.bus.send(&request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}
