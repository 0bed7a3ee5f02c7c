//! Users (issue 11): profile changes, address changes (applied once the new
//! address is proven), the user list, devices and consent. The directory
//! holds no personal data, so each of these routes to the user's regional
//! store; the list reads ids from the directory and profiles from the
//! stores, one batch per region.

use crate::handlers::{check_store, view};
use crate::{directory, Error, State};
use idm_core::proto::auth;
use idm_core::proto::event::{self, DomainEvent};
use idm_core::proto::store::{self, StoredUser};
use idm_core::proto::user::*;
use idm_core::{ApiError, IssuerId, Region, UserId};
use std::collections::BTreeMap;
use std::sync::Arc;

async fn region_of(state: &State, issuer: &IssuerId, user: &UserId) -> Result<Region, Error> {
    directory::region_of_user(&state.db, issuer, user)
        .await?
        .ok_or_else(|| ApiError::not_found("user").into())
}

/// Asks `region`'s store, and checks that the store answering is that
/// region's (the same residency check as every user read).
async fn stored<O>(state: &State, region: Region, request: &O) -> Result<User, Error>
where
    O: idm_bus::StoreOperation<Reply = StoredUser>,
{
    let stored = state.bus.send_to(region, request).await?;
    check_store(state, region, &stored.store)?;
    Ok(view(stored, region))
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id, user = %req.user_id))]
pub async fn update_user(state: Arc<State>, req: UpdateUser) -> Result<UpdatedUser, Error> {
    let issuer = &req.ctx.issuer_id;
    let region = region_of(&state, issuer, &req.user_id).await?;
    if req.name.is_none() && req.metadata.is_none() && req.email.is_none() {
        return Err(ApiError::validation("give at least one of name, metadata, email").into());
    }
    let metadata = req
        .metadata
        .map(idm_core::text::parse_metadata)
        .transpose()?;
    // The new address must be free in the whole issuer (every region): the
    // blind index says so without reading any store.
    if let Some(email) = &req.email {
        let index = state.index_keys.index(issuer, email).await?;
        match directory::by_index(&state.db, issuer, &index).await? {
            Some((owner, _)) if owner == req.user_id => {
                return Err(ApiError::validation("this is already the user's address").into())
            }
            Some(_) => {
                return Err(ApiError::conflict("a user with this email already exists").into())
            }
            None => {}
        }
    }
    let mut fields = Vec::new();
    let user = if req.name.is_some() || metadata.is_some() {
        if req.name.is_some() {
            fields.push("name".to_owned());
        }
        if metadata.is_some() {
            fields.push("metadata".to_owned());
        }
        let request = store::UpdateProfile {
            issuer_id: issuer.clone(),
            user_id: req.user_id.clone(),
            name: req.name.map(|n| n.map(|n| n.as_str().to_owned())),
            metadata,
        };
        stored(&state, region, &request).await?
    } else {
        let request = store::GetUser {
            issuer_id: issuer.clone(),
            user_id: req.user_id.clone(),
        };
        stored(&state, region, &request).await?
    };
    let email_change = match req.email {
        Some(email) => Some(
            state
                .bus
                .send(&auth::StartEmailChange {
                    ctx: req.ctx.clone(),
                    user_id: req.user_id.clone(),
                    region,
                    email,
                    redirect_url: req.redirect_url,
                })
                .await?,
        ),
        None => None,
    };
    if !fields.is_empty() {
        // The change happened: a lost event is logged, not turned into an
        // error that would make the caller retry it.
        let updated = DomainEvent::UserUpdated(event::UserUpdated {
            user_id: req.user_id.clone(),
            fields,
        });
        if let Err(e) = state.events.publish(issuer, updated).await {
            tracing::error!(user = %req.user_id, code = %e.code, "user.updated not published");
        }
    }
    Ok(UpdatedUser { user, email_change })
}

/// The new address was proven (auth redeemed the code mailed to it): the
/// blind index moves to it in a directory transaction that commits only
/// once the regional store has the new address too.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn apply_email_change(state: Arc<State>, req: ApplyEmailChange) -> Result<User, Error> {
    let issuer = &req.issuer_id;
    let region = region_of(&state, issuer, &req.user_id).await?;
    let before = stored(
        &state,
        region,
        &store::GetUser {
            issuer_id: issuer.clone(),
            user_id: req.user_id.clone(),
        },
    )
    .await?;
    let index = state.index_keys.index(issuer, &req.email).await?;
    let mut applied: Option<User> = None;
    let change = store::ChangeEmail {
        issuer_id: issuer.clone(),
        user_id: req.user_id.clone(),
        email: req.email.clone(),
    };
    let outcome = directory::move_index(&state.db, issuer, &req.user_id, &index, async {
        let user = stored(&state, region, &change).await?;
        applied = Some(user.clone());
        Ok(user)
    })
    .await;
    let user = match outcome {
        Ok(user) => user,
        Err(e) => {
            // The store changed but the directory did not commit: put the
            // old address back so the two agree again.
            if applied.is_some() {
                if let Ok(old) = idm_core::Email::parse(&before.email) {
                    let undo = store::ChangeEmail {
                        issuer_id: issuer.clone(),
                        user_id: req.user_id.clone(),
                        email: old,
                    };
                    if let Err(undo_error) = state.bus.send_to(region, &undo).await {
                        tracing::error!(error = %undo_error, "the address change could not be undone in the store");
                    }
                }
            }
            return Err(e);
        }
    };
    let changed = DomainEvent::EmailChanged(event::UserRef {
        user_id: req.user_id.clone(),
    });
    if let Err(e) = state.events.publish(issuer, changed).await {
        tracing::error!(user = %req.user_id, code = %e.code, "email.changed not published");
    }
    tracing::info!(user = %req.user_id, "address changed");
    Ok(user)
}

/// A page of the issuer's users: ids and regions from the directory (one
/// index range scan), then the profiles from each region's store, one
/// `get_users` per region asked at once, put back in the directory's order.
/// A user the store no longer holds (deleted meanwhile) is left out; a
/// region that does not answer fails the page (`region_unavailable`) rather
/// than silently dropping its users.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn list_users(state: Arc<State>, req: ListUsers) -> Result<UserList, Error> {
    let filter = directory::ListFilter {
        region: req.region,
        created_after: req.created_after,
        created_before: req.created_before,
    };
    let (listed, has_more) = directory::list(&state.db, &req.issuer_id, &req.page, &filter).await?;
    let mut by_region: BTreeMap<Region, Vec<UserId>> = BTreeMap::new();
    for row in &listed {
        by_region
            .entry(row.region)
            .or_default()
            .push(row.id.clone());
    }
    let asks = by_region.into_iter().map(|(region, user_ids)| {
        let state = Arc::clone(&state);
        let request = store::GetUsers {
            issuer_id: req.issuer_id.clone(),
            user_ids,
        };
        async move {
            let answer = state.bus.send_to(region, &request).await;
            (region, answer)
        }
    });
    let mut profiles: BTreeMap<UserId, User> = BTreeMap::new();
    for (region, answer) in futures::future::join_all(asks).await {
        let answer = answer.map_err(|e| {
            if matches!(e.code, idm_core::ErrorCode::UpstreamUnavailable) {
                ApiError::new(
                    idm_core::ErrorCode::RegionUnavailable,
                    format!("region {region} is unavailable"),
                )
            } else {
                e
            }
        })?;
        for user in answer.data {
            check_store(&state, region, &user.store)?;
            profiles.insert(user.id.clone(), view(user, region));
        }
    }
    let data = listed
        .into_iter()
        .filter_map(|row| profiles.remove(&row.id))
        .collect();
    Ok(UserList { data, has_more })
}

pub async fn list_devices(state: Arc<State>, req: ListDevices) -> Result<store::Devices, Error> {
    let region = match req.region {
        Some(region) => region,
        None => region_of(&state, &req.issuer_id, &req.user_id).await?,
    };
    Ok(state
        .bus
        .send_to(
            region,
            &store::ListDevices {
                issuer_id: req.issuer_id,
                user_id: req.user_id,
                page: req.page,
            },
        )
        .await?)
}

/// A purpose: lowercase letters, digits and `_ . : -`, 1 to 64 long.
fn check_purpose(purpose: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&purpose.len())
        && purpose.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "purpose must be 1 to 64 of a-z, 0-9, _ . : -",
        ))
    }
}

/// A version: 1 to 32 printable ASCII characters without spaces.
fn check_version(version: &str) -> Result<(), ApiError> {
    if (1..=32).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::validation(
            "version must be 1 to 32 printable characters without spaces",
        ))
    }
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn add_consent(
    state: Arc<State>,
    req: AddConsent,
) -> Result<store::ConsentRecord, Error> {
    check_purpose(&req.purpose)?;
    check_version(&req.version)?;
    let region = region_of(&state, &req.issuer_id, &req.user_id).await?;
    Ok(state
        .bus
        .send_to(
            region,
            &store::AddConsent {
                issuer_id: req.issuer_id,
                user_id: req.user_id,
                consent_id: idm_core::ids::ConsentId::generate(),
                purpose: req.purpose,
                version: req.version,
                granted: req.granted,
                session_id: req.session_id,
            },
        )
        .await?)
}

pub async fn list_consents(state: Arc<State>, req: ListConsents) -> Result<store::Consents, Error> {
    if req.current {
        if let Some(after) = &req.page.starting_after {
            check_purpose(after)?;
        }
    }
    let region = region_of(&state, &req.issuer_id, &req.user_id).await?;
    Ok(state
        .bus
        .send_to(
            region,
            &store::ListConsents {
                issuer_id: req.issuer_id,
                user_id: req.user_id,
                page: req.page,
                current: req.current,
            },
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_versions_are_bounded() {
        assert!(check_purpose("marketing.email").is_ok());
        assert!(check_purpose("").is_err());
        assert!(check_purpose("Marketing").is_err());
        assert!(check_purpose(&"a".repeat(65)).is_err());
        assert!(check_version("2024-01").is_ok());
        assert!(check_version("v 1").is_err());
        assert!(check_version("").is_err());
    }
}
