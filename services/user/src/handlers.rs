//! Bus operations of the directory.

use crate::{directory, placement, Error, State};
use idm_core::proto::event::{self, DomainEvent};
use idm_core::proto::store::{self, StoredUser};
use idm_core::proto::user::Locate;
use idm_core::proto::user::*;
use idm_core::proto::Done;
use idm_core::{ApiError, ErrorCode, Jurisdiction, Region, UserId};
use std::sync::Arc;

pub async fn init_issuer(state: Arc<State>, req: InitIssuer) -> Result<Done, Error> {
    state.index_keys.create(&req.issuer_id).await?;
    Ok(Done::default())
}

pub(crate) fn view(user: StoredUser, region: Region) -> User {
    User {
        id: user.id,
        email: user.email,
        email_verified: user.email_verified,
        name: user.name,
        region,
        metadata: user.metadata,
        mfa_enabled: user.mfa_enabled,
        created_at: user.created_at,
    }
}

/// The store must say it is the region we asked for, with that region's
/// jurisdiction: data that must stay in the EU is never sent to (or kept
/// in) a store that does not declare `eu`, and a best-effort region's store
/// claiming `eu` is as misconfigured. A refusal is remembered for `/readyz`.
pub(crate) fn check_store(
    state: &State,
    asked: Region,
    answered: &store::StoreInfo,
) -> Result<(), ApiError> {
    match answered.refusal(asked) {
        None => Ok(()),
        Some(why) => {
            tracing::error!(%asked, answered = %answered.region, jurisdiction = %answered.jurisdiction, %why, "store refused");
            state.stores.refused(asked);
            Err(ApiError::new(
                ErrorCode::ResidencyViolation,
                "the store's region or jurisdiction does not match the placement",
            ))
        }
    }
}

fn is_unavailable(e: &ApiError) -> bool {
    matches!(
        e.code,
        ErrorCode::UpstreamUnavailable | ErrorCode::RegionUnavailable
    )
}

/// The region `create_user` would choose first, without creating anything.
pub async fn placement(state: Arc<State>, req: Place) -> Result<Placed, Error> {
    let (region, _) = placement::choose(
        &req.ctx.policy,
        None,
        req.country.as_deref(),
        state.default_region,
    )?;
    Ok(Placed { region })
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn create_user(state: Arc<State>, req: CreateUser) -> Result<User, Error> {
    let issuer = &req.ctx.issuer_id;
    let metadata =
        idm_core::text::parse_metadata(req.metadata.unwrap_or_else(|| serde_json::json!({})))?;
    if let Some(password) = &req.password {
        idm_core::text::check_password(password.expose())?;
    }
    let (chosen, reason) = placement::choose(
        &req.ctx.policy,
        req.region,
        req.country.as_deref(),
        state.default_region,
    )?;
    let index = state.index_keys.index(issuer, &req.email).await?;
    let user_id = UserId::generate();
    if !directory::reserve(&state.db, issuer, &user_id, chosen, reason, &index).await? {
        return Err(ApiError::conflict("a user with this email already exists").into());
    }
    let request = store::CreateUser {
        issuer_id: issuer.clone(),
        user_id: user_id.clone(),
        email: req.email.clone(),
        name: req.name.map(String::from),
        metadata,
        password: req.password,
    };
    let mut last_error = ApiError::new(
        ErrorCode::RegionUnavailable,
        format!("region {chosen} is unavailable"),
    );
    for region in placement::candidates(&req.ctx.policy, chosen) {
        if region != chosen {
            tracing::warn!(from = %chosen, to = %region, "placing in a fallback region");
            directory::move_reservation(&state.db, &user_id, region, chosen).await?;
        }
        // Asked first, before any personal data is sent: a store announcing
        // the wrong jurisdiction never receives the user.
        let announced = state.stores.announced(&state.bus, region).await;
        let reply: Result<StoredUser, ApiError> = match announced {
            Ok(info) => match check_store(&state, region, &info) {
                Ok(()) => state.bus.send_to(region, &request).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match reply.and_then(|u| check_store(&state, region, &u.store).map(|()| u)) {
            Ok(stored) => {
                directory::activate(&state.db, &user_id).await?;
                tracing::info!(user = %user_id, %region, "user created");
                // The user exists from here on: a lost event is logged, not
                // turned into an error that would make the caller retry a
                // creation that happened.
                let created = DomainEvent::UserCreated(event::UserCreated {
                    user_id: user_id.clone(),
                    region,
                });
                if let Err(e) = state.events.publish(&req.ctx.issuer_id, created).await {
                    tracing::error!(user = %user_id, code = %e.code, "user.created not published");
                }
                return Ok(view(stored, region));
            }
            Err(e) if is_unavailable(&e) => last_error = e,
            Err(e) => {
                directory::release(&state.db, &user_id).await?;
                return Err(e.into());
            }
        }
    }
    directory::release(&state.db, &user_id).await?;
    if chosen.jurisdiction() == Jurisdiction::Eu {
        last_error = ApiError::new(
            ErrorCode::RegionUnavailable,
            format!("region {chosen} is unavailable and EU data is never placed elsewhere"),
        )
        .with_details(serde_json::json!({ "retry_after": 5, "region": chosen }));
    } else if last_error.code == ErrorCode::UpstreamUnavailable {
        last_error.code = ErrorCode::RegionUnavailable;
    }
    Err(last_error.into())
}

async fn fetch(
    state: &State,
    issuer: &idm_core::IssuerId,
    user: UserId,
    region: Region,
) -> Result<User, Error> {
    let stored = state
        .bus
        .send_to(
            region,
            &store::GetUser {
                issuer_id: issuer.clone(),
                user_id: user,
            },
        )
        .await?;
    check_store(state, region, &stored.store)?;
    Ok(view(stored, region))
}

pub async fn get_user(state: Arc<State>, req: GetUser) -> Result<User, Error> {
    let region = directory::region_of_user(&state.db, &req.issuer_id, &req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    fetch(&state, &req.issuer_id, req.user_id, region).await
}

pub async fn find_by_email(state: Arc<State>, req: FindByEmail) -> Result<User, Error> {
    let index = state.index_keys.index(&req.issuer_id, &req.email).await?;
    let (user, region) = directory::by_index(&state.db, &req.issuer_id, &index)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    fetch(&state, &req.issuer_id, user, region).await
}

pub async fn locate(state: Arc<State>, Locate(req): Locate) -> Result<Located, Error> {
    let index = state.index_keys.index(&req.issuer_id, &req.email).await?;
    let location = directory::by_index(&state.db, &req.issuer_id, &index)
        .await?
        .map(|(user_id, region)| Location { user_id, region });
    Ok(Located { location })
}

/// What the regional store of a user holds: the tables of an issuer's
/// store schema (see `services/user-store/migrations`).
pub const DATA_CATEGORIES: [&str; 8] = [
    "profile",
    "credentials",
    "second_factors",
    "sessions",
    "refresh_tokens",
    "personal_tokens",
    // Users (issue 11).
    "devices",
    "consents",
];

/// The residency evidence: the directory's placement row, and what the
/// region's store announces about itself (asked now; the last answer when
/// it is down, none if it never answered).
pub async fn residency(
    state: Arc<State>,
    GetResidency(req): GetResidency,
) -> Result<Residency, Error> {
    let placed = directory::placement_of(&state.db, &req.issuer_id, &req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let region = placed.region;
    let database = match state.stores.announced(&state.bus, region).await {
        Ok(info) => {
            check_store(&state, region, &info)?;
            Some(info.database)
        }
        Err(_) => state
            .stores
            .last_known(region)
            .filter(|info| info.refusal(region).is_none())
            .map(|info| info.database),
    };
    let jurisdiction = region.jurisdiction();
    Ok(Residency {
        user_id: req.user_id,
        region,
        jurisdiction,
        placement: match jurisdiction {
            Jurisdiction::Eu => PlacementKind::Hard,
            Jurisdiction::Global => PlacementKind::BestEffort,
        },
        store: format!("user-store-{region}"),
        database,
        placed_at: placed.placed_at,
        reason: placed.reason,
        unavailable_region: placed.unavailable_region,
        moved_from: placed.moved_from,
        moved_at: placed.moved_at,
        data_categories: DATA_CATEGORIES.iter().map(|c| (*c).to_owned()).collect(),
    })
}
