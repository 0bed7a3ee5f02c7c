use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use idm_core::proto::user::{CreateUser, GetResidency, GetUser, Residency, User};
use idm_core::proto::SecretText;
use idm_core::text::{check_password, parse_metadata, DisplayName};
use idm_core::{Region, UserId};
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(format = Email)]
    email: String,
    #[schema(value_type = Option<String>, min_length = 8, max_length = 256)]
    password: Option<SecretText>,
    #[schema(max_length = 200)]
    name: Option<String>,
    /// Where to place the user; by default from the caller's country and
    /// the issuer's policy.
    #[schema(value_type = Option<Region>)]
    region: Option<String>,
    /// Free-form JSON the tenant keeps with the user.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// Creates a user in the issuer's store of the chosen region.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, description = "The user", body = User)))]
pub async fn create(
    incoming: Incoming,
    new: Result<Json<NewUser>, JsonRejection>,
) -> Reply<(StatusCode, Json<User>)> {
    let caller = incoming.authorize().await?;
    let new = body(new)?;
    let email = incoming
        .app
        .waf
        .check_email(&caller.key.policy, &new.email)?;
    if let Some(password) = &new.password {
        check_password(password.expose())?;
    }
    let request = CreateUser {
        ctx: caller.ctx(),
        email,
        password: new.password,
        name: new
            .name
            .as_deref()
            .map(|n| DisplayName::parse("name", n))
            .transpose()?,
        region: new.region.as_deref().map(Region::parse).transpose()?,
        metadata: new.metadata.map(parse_metadata).transpose()?,
        country: caller.country.clone(),
    };
    let created = incoming.app.bus.send(&request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One user, with the region that holds it.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 200, description = "The user", body = User)))]
pub async fn get(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<User>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let found = incoming
        .app
        .bus
        .send(&GetUser {
            issuer_id: caller.key.issuer_id.clone(),
            user_id,
        })
        .await?;
    Ok(Json(found))
}

/// Where the user's personal data lives and why: region, jurisdiction,
/// hard or best-effort placement, the store and database server holding it,
/// when and why it was placed there (`country`, `hint`, `default`, or
/// `fallback` with the region that was down), and the data categories held
/// there. See docs/REGIONS.md.
#[utoipa::path(get, path = "/v1/users/{id}/residency", tag = "users",
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 200, description = "The residency evidence", body = Residency)))]
pub async fn residency(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<Residency>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let evidence = incoming
        .app
        .bus
        .send(&GetResidency(GetUser {
            issuer_id: caller.key.issuer_id.clone(),
            user_id,
        }))
        .await?;
    Ok(Json(evidence))
}

/// The operator's recovery path: clears a user's factor locks and failure
/// counts (TOTP, and email codes to the user's address).
#[utoipa::path(post, path = "/v1/users/{id}/factors/unlock", tag = "users",
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 200, description = "Whether anything was cleared", body = idm_core::proto::auth::Unlocked)))]
pub async fn unlock_factors(
    incoming: Incoming,
    Path(id): Path<String>,
) -> Reply<Json<idm_core::proto::auth::Unlocked>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    Ok(Json(
        incoming
            .app
            .bus
            .send(&idm_core::proto::auth::UnlockFactors {
                ctx: caller.ctx(),
                user_id,
            })
            .await?,
    ))
}
