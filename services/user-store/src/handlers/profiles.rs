//! Users (issue 11): profile changes, a page of users at once, address
//! changes, removing a password, devices and consent.

use crate::handlers::{announce_user_changed, info_of};
use crate::storage::{self, IssuerStore};
use crate::{Error, State};
use idm_core::proto::store::*;
use idm_core::proto::Done;
use idm_core::ApiError;
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn update_profile(state: Arc<State>, req: UpdateProfile) -> Result<StoredUser, Error> {
    let metadata = req
        .metadata
        .map(idm_core::text::parse_metadata)
        .transpose()?;
    let name = req
        .name
        .map(|n| {
            n.map(|n| idm_core::text::DisplayName::parse("name", &n))
                .transpose()
        })
        .transpose()?;
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let row = store
        .update_profile(
            &req.user_id,
            name.as_ref().map(|n| n.as_ref().map(|n| n.as_str())),
            metadata.as_ref(),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    announce_user_changed(&state, &req.issuer_id, &req.user_id).await;
    storage::user_from_row(&row, info_of(&state))
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, users = req.user_ids.len()))]
pub async fn get_users(state: Arc<State>, req: GetUsers) -> Result<StoredUsers, Error> {
    if req.user_ids.len() > MAX_USERS_PER_BATCH {
        return Err(
            ApiError::validation(format!("at most {MAX_USERS_PER_BATCH} users at once")).into(),
        );
    }
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let rows = store.users_by_ids(&req.user_ids).await?;
    let info = info_of(&state);
    Ok(StoredUsers {
        data: rows
            .iter()
            .map(|row| storage::user_from_row(row, info.clone()))
            .collect::<Result<_, _>>()?,
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn change_email(state: Arc<State>, req: ChangeEmail) -> Result<StoredUser, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let row = store
        .change_email(&req.user_id, &req.email)
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ApiError::conflict("a user with this email already exists").into()
            } else {
                Error::from(e)
            }
        })?
        .ok_or_else(|| ApiError::not_found("user"))?;
    announce_user_changed(&state, &req.issuer_id, &req.user_id).await;
    storage::user_from_row(&row, info_of(&state))
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn remove_password(
    state: Arc<State>,
    RemovePassword(req): RemovePassword,
) -> Result<Done, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    store.remove_password(&req.user_id).await?;
    Ok(Done::default())
}

pub async fn list_devices(state: Arc<State>, req: ListDevices) -> Result<Devices, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let (data, has_more) = store.devices_of(&req.user_id, &req.page).await?;
    Ok(Devices { data, has_more })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn add_consent(state: Arc<State>, req: AddConsent) -> Result<ConsentRecord, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    Ok(store
        .add_consent(&req)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?)
}

pub async fn list_consents(state: Arc<State>, req: ListConsents) -> Result<Consents, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let (data, has_more) = if req.current {
        store.current_consents(&req.user_id, &req.page).await?
    } else {
        store.consents_of(&req.user_id, &req.page).await?
    };
    Ok(Consents { data, has_more })
}
