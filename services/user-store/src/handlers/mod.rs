//! Bus operations of a regional store.

use idm_core::proto::store::GetStoreInfo;
pub mod mfa;
pub mod personal_tokens;
pub mod profiles;
pub mod sessions;
// deletion: the regional steps of a user deletion
pub mod deletion;
// Regions at scale: moving a user between regions
pub mod moves;

use crate::storage::{self, IssuerStore};
use crate::{Error, State};
use idm_core::proto::store::*;
use idm_core::proto::Done;
use idm_core::ApiError;
use std::sync::Arc;

pub(crate) fn info_of(state: &State) -> StoreInfo {
    StoreInfo {
        region: state.region,
        jurisdiction: state.jurisdiction,
        database: state.database_label.clone(),
    }
}

/// Tells every edge that what it remembers of this user is stale (the `/me`
/// cache). Called after the change committed and before its caller is
/// answered: the broadcast leaves on this connection ahead of the reply, so
/// it reaches an edge's connection before the answer to the change can
/// reach it through any service (the edge then applies it in its listener
/// task, concurrently with requests). A lost broadcast (NATS delivers at
/// most once) leaves an edge answering from memory for at most its cache's
/// TTL (docs/PERFORMANCE.md).
pub(crate) async fn announce_user_changed(
    state: &State,
    issuer_id: &idm_core::IssuerId,
    user_id: &idm_core::UserId,
) {
    if let Some(bus) = &state.bus {
        let subject = bus.broadcast_subject(USER_CHANGED_TOPIC, issuer_id.as_str());
        let change = UserChanged {
            issuer_id: issuer_id.clone(),
            user_id: user_id.clone(),
        };
        bus.broadcast(subject, &change).await;
    }
}

pub async fn info(state: Arc<State>, _: GetStoreInfo) -> Result<StoreInfo, Error> {
    Ok(info_of(&state))
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, region = %state.region))]
pub async fn provision_issuer(state: Arc<State>, req: ProvisionIssuer) -> Result<StoreInfo, Error> {
    storage::schemas::provision(&state.db, &req.issuer_id, &state.schemas).await?;
    Ok(info_of(&state))
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id, region = %state.region))]
pub async fn create_user(state: Arc<State>, req: CreateUser) -> Result<StoredUser, Error> {
    // The hash first, then the connection: every handler takes the two in
    // this order, so none holds a connection while it queues for a worker.
    let hash = match &req.password {
        Some(password) => Some(
            hash_slot(&state, &req.issuer_id)
                .await?
                .hash(password.expose())
                .await?,
        ),
        None => None,
    };
    let store = IssuerStore::open_provisioning(&state, &req.issuer_id).await?;
    let row = store
        .insert_user(
            &req.user_id,
            &req.email,
            req.name.as_deref(),
            &req.metadata,
            hash.as_deref(),
        )
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ApiError::conflict("a user with this email already exists").into()
            } else {
                Error::from(e)
            }
        })?;
    storage::user_from_row(&row, info_of(&state))
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn get_user(state: Arc<State>, req: GetUser) -> Result<StoredUser, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let row = store
        .user(&req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    storage::user_from_row(&row, info_of(&state))
}

/// The user of a live session, for `GET /v1/client/me` straight from the
/// edge: one statement after the handle. The edge verified the token (its
/// issuer's key ring, expiry, its revocation set); this store is the
/// authority on the session itself, so a session revoked here (by a
/// sign-out, a reuse, or the first step of a user deletion) is refused even
/// by an edge that missed the broadcast.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn get_session_user(state: Arc<State>, req: GetSessionUser) -> Result<StoredUser, Error> {
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    let found = store
        .session_user(&req.user_id, &req.session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    match found.session {
        storage::SessionState::Live => storage::user_from_row(&found.user, info_of(&state)),
        storage::SessionState::Revoked { compromised: true } => Err(ApiError::new(
            idm_core::ErrorCode::SessionCompromised,
            "the session was revoked because a refresh token was reused",
        )
        .into()),
        storage::SessionState::Revoked { compromised: false } => Err(ApiError::new(
            idm_core::ErrorCode::SessionRevoked,
            "the session has been revoked",
        )
        .into()),
        storage::SessionState::Unknown => Err(ApiError::new(
            idm_core::ErrorCode::SessionInvalid,
            "the session is not valid",
        )
        .into()),
    }
}

/// Hashes the new password here, in the region, and replaces the old hash.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn set_password(state: Arc<State>, req: SetPassword) -> Result<Done, Error> {
    idm_core::text::check_password(req.password.expose())?;
    let hash = hash_slot(&state, &req.issuer_id)
        .await?
        .hash(req.password.expose())
        .await?;
    let store = IssuerStore::open(&state, &req.issuer_id).await?;
    if store.user(&req.user_id).await?.is_none() {
        return Err(ApiError::not_found("user").into());
    }
    store.set_password_hash(&req.user_id, &hash).await?;
    Ok(Done::default())
}

/// A hashing worker within the issuer's fair share, waiting no longer than
/// the caller does (`503 overloaded` past the share or the deadline).
async fn hash_slot<'a>(
    state: &'a State,
    issuer: &idm_core::IssuerId,
) -> Result<idm_crypto::HashSlot<'a>, Error> {
    Ok(idm_bus::within_deadline(state.hasher.slot(issuer.as_str())).await??)
}

/// Always runs one Argon2 verification, against a dummy hash when the user
/// or their password is unknown, so timing does not tell them apart.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn verify_password(
    state: Arc<State>,
    req: VerifyPassword,
) -> Result<PasswordChecked, Error> {
    // The worker is taken before the user is looked up, known or not, so
    // the issuer's fair share (and a refusal past it) applies alike to
    // unknown users and wrong passwords and says nothing about either.
    let slot = hash_slot(&state, &req.issuer_id).await?;
    let (store, stored) = match &req.user_id {
        Some(user_id) => {
            let store = IssuerStore::open(&state, &req.issuer_id).await?;
            let hash = store.password_hash(user_id).await?;
            (Some(store), hash)
        }
        None => (None, None),
    };
    let verdict = slot
        .verify(stored.as_deref(), req.password.expose())
        .await?;
    if verdict.needs_rehash {
        if let (Some(store), Some(user_id)) = (&store, &req.user_id) {
            let fresh = slot.hash(req.password.expose()).await?;
            store.set_password_hash(user_id, &fresh).await?;
        }
    }
    Ok(PasswordChecked {
        valid: verdict.valid,
    })
}
