//! Users (issue 11), backend routes: changing a profile, listing an
//! issuer's users, a user's devices and consent records. The list query
//! (`limit`, `starting_after`) is shared by every list of the API.

use super::{body, query, Reply};
use crate::access::Incoming;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use idm_core::ids::DeviceId;
use idm_core::page::Page;
use idm_core::proto::session;
use idm_core::proto::store::{ConsentRecord, Consents, Devices};
use idm_core::proto::user::{
    AddConsent, FindByEmail, ListConsents, ListDevices, ListUsers, UpdateUser, UpdatedUser, User,
    UserList,
};
use idm_core::text::{parse_metadata, DisplayName};
use idm_core::{ApiError, Region, SessionId, UserId};
use serde::{Deserialize, Deserializer, Serialize};

/// `?limit=&starting_after=`: the page of a list (API.md "Lists").
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// How many (1 to 100, default 20).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// The last id of the previous page.
    starting_after: Option<String>,
}

impl ListQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        Page::parse(self.limit.as_deref(), self.starting_after.as_deref())
    }
}

/// The page a list query asks for (`validation_failed` for a bad limit).
pub fn page_of(params: Result<Query<ListQuery>, QueryRejection>) -> Result<Page, ApiError> {
    query(params)?.page()
}

/// `"name": null` clears, an absent `name` keeps.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new display name; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200)]
    name: Option<Option<String>>,
    /// Replaces the metadata (a JSON object, at most 8 KiB).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// A new address: not applied now. A code is mailed to it, and the
    /// change happens when it is confirmed
    /// (`POST /v1/client/email_changes/confirm`).
    #[schema(format = Email)]
    email: Option<String>,
    /// Where the confirmation link leads (an allowed origin); the code is
    /// in the mail either way.
    redirect_url: Option<String>,
}

/// Changes a user's name and metadata; a new email starts a verification
/// of the new address (`email_change` in the answer).
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 200, description = "The user, and the pending address change", body = UpdatedUser)))]
pub async fn update(
    incoming: Incoming,
    Path(id): Path<String>,
    patch: Result<Json<UserPatch>, JsonRejection>,
) -> Reply<Json<UpdatedUser>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let patch = body(patch)?;
    let name = match patch.name {
        None => None,
        Some(None) => Some(None),
        Some(Some(name)) => Some(Some(DisplayName::parse("name", &name)?)),
    };
    let metadata = patch.metadata.map(parse_metadata).transpose()?;
    let email = patch
        .email
        .as_deref()
        .map(|email| incoming.app.waf.check_email(&caller.key.policy, email))
        .transpose()?;
    let redirect_url = match (&email, patch.redirect_url.as_deref()) {
        (_, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::validation("redirect_url goes with a new email").into())
        }
        (Some(_), Some(raw)) => Some(crate::redirect::check_redirect(
            &caller.key.policy,
            &caller.key.allowed_origins,
            raw,
        )?),
    };
    if let Some(email) = &email {
        incoming.app.waf.allow_send(&caller.key, email).await?;
    }
    let request = UpdateUser {
        ctx: caller.ctx(),
        user_id,
        name,
        metadata,
        email,
        redirect_url,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// One user by address (answers that user, not a list).
    email: Option<String>,
    /// How many (1 to 100, default 20).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// The last user id of the previous page.
    starting_after: Option<String>,
    /// Only users placed in this region.
    #[param(value_type = Option<Region>)]
    region: Option<String>,
    /// Only users created after this time (RFC 3339).
    created_after: Option<String>,
    /// Only users created before this time (RFC 3339).
    created_before: Option<String>,
}

/// A user (`?email=`), or a page of users.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum UsersAnswer {
    One(User),
    Many(UserList),
}

fn time_param(field: &str, raw: Option<&str>) -> Result<Option<idm_core::Timestamp>, ApiError> {
    raw.map(|raw| {
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::validation(format!("{field} must be an RFC 3339 time")))
    })
    .transpose()
}

/// The issuer's users, newest first (`?email=`: the one user with that
/// address). Filters: `region`, `created_after`, `created_before`.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UsersQuery),
    responses((status = 200, description = "A page of users, or with `email` the user", body = UsersAnswer)))]
pub async fn list(
    incoming: Incoming,
    params: Result<Query<UsersQuery>, QueryRejection>,
) -> Reply<Json<UsersAnswer>> {
    let caller = incoming.authorize().await?;
    let params = query(params)?;
    if let Some(email) = &params.email {
        let listing = params.limit.is_some()
            || params.starting_after.is_some()
            || params.region.is_some()
            || params.created_after.is_some()
            || params.created_before.is_some();
        if listing {
            return Err(
                ApiError::validation("email finds one user: give no list parameters").into(),
            );
        }
        let email = incoming.app.waf.check_email(&caller.key.policy, email)?;
        let found = incoming
            .app
            .bus
            .send(&FindByEmail {
                issuer_id: caller.key.issuer_id.clone(),
                email,
            })
            .await?;
        return Ok(Json(UsersAnswer::One(found)));
    }
    let page = Page::parse(params.limit.as_deref(), params.starting_after.as_deref())?;
    let created_after = time_param("created_after", params.created_after.as_deref())?;
    let created_before = time_param("created_before", params.created_before.as_deref())?;
    let request = ListUsers {
        issuer_id: caller.key.issuer_id.clone(),
        page,
        region: params.region.as_deref().map(Region::parse).transpose()?,
        created_after,
        created_before,
    };
    Ok(Json(UsersAnswer::Many(
        incoming.app.bus.send(&request).await?,
    )))
}

/// The devices a user's sessions were opened from, most recently seen first.
#[utoipa::path(get, path = "/v1/users/{id}/devices", tag = "users",
    params(("id" = UserId, Path, description = "The user's id"), ListQuery),
    responses((status = 200, description = "The devices", body = Devices)))]
pub async fn devices(
    incoming: Incoming,
    Path(id): Path<String>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<Devices>> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let request = ListDevices {
        issuer_id: caller.key.issuer_id.clone(),
        user_id,
        region: None,
        page: page_of(params)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Ends every session of one of the user's devices (the revocation reaches
/// every edge).
#[utoipa::path(delete, path = "/v1/users/{id}/devices/{device_id}", tag = "users",
    params(("id" = UserId, Path, description = "The user's id"),
        ("device_id" = String, Path, description = "The device's id (`dev_…`)")),
    responses((status = 200, description = "The sessions ended", body = session::Revoked)))]
pub async fn revoke_device(
    incoming: Incoming,
    Path((id, device)): Path<(String, String)>,
) -> Reply<Json<session::Revoked>> {
    let caller = incoming.authorize().await?;
    let request = session::RevokeDevice {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: UserId::parse(&id)?,
        device_id: DeviceId::parse(&device)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// What the consent is for (`a-z 0-9 _ . : -`, at most 64).
    #[schema(max_length = 64)]
    purpose: String,
    /// The version of the text agreed to (at most 32, no spaces).
    #[schema(max_length = 32)]
    version: String,
    /// Granted (`true`) or withdrawn (`false`).
    granted: bool,
    /// The session it was given in (its device is recorded too).
    #[schema(value_type = Option<String>)]
    session_id: Option<String>,
}

/// Records a consent decision (appended; earlier ones stay in the history).
#[utoipa::path(post, path = "/v1/users/{id}/consents", tag = "users", request_body = NewConsent,
    params(("id" = UserId, Path, description = "The user's id")),
    responses((status = 201, description = "The record", body = ConsentRecord)))]
pub async fn add_consent(
    incoming: Incoming,
    Path(id): Path<String>,
    new: Result<Json<NewConsent>, JsonRejection>,
) -> Reply<(StatusCode, Json<ConsentRecord>)> {
    let caller = incoming.authorize().await?;
    let user_id = UserId::parse(&id)?;
    let new = body(new)?;
    let session_id = new
        .session_id
        .as_deref()
        .map(|raw| {
            SessionId::parse(raw)
                .map_err(|_| ApiError::validation("session_id is not a session id"))
        })
        .transpose()?;
    let request = AddConsent {
        issuer_id: caller.key.issuer_id.clone(),
        user_id,
        purpose: new.purpose,
        version: new.version,
        granted: new.granted,
        session_id,
    };
    Ok((
        StatusCode::CREATED,
        Json(incoming.app.bus.send(&request).await?),
    ))
}

async fn consents_of(
    incoming: Incoming,
    id: String,
    params: Result<Query<ListQuery>, QueryRejection>,
    current: bool,
) -> Reply<Json<Consents>> {
    let caller = incoming.authorize().await?;
    let request = ListConsents {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: UserId::parse(&id)?,
        page: page_of(params)?,
        current,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// The consent history, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/consents", tag = "users",
    params(("id" = UserId, Path, description = "The user's id"), ListQuery),
    responses((status = 200, description = "The records", body = Consents)))]
pub async fn consents(
    incoming: Incoming,
    Path(id): Path<String>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<Consents>> {
    consents_of(incoming, id, params, false).await
}

/// The current decision of each purpose (the latest record), by purpose;
/// `starting_after` is a purpose.
#[utoipa::path(get, path = "/v1/users/{id}/consents/current", tag = "users",
    params(("id" = UserId, Path, description = "The user's id"), ListQuery),
    responses((status = 200, description = "The latest record of each purpose", body = Consents)))]
pub async fn current_consents(
    incoming: Incoming,
    Path(id): Path<String>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<Consents>> {
    consents_of(incoming, id, params, true).await
}
