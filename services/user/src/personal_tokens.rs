//! Personal access tokens, routed to the owner's region. The token names its
//! region (`idm_pat_<region>_<random>`), so verification needs no lookup; the
//! store keeps only its SHA-256.

use crate::{directory, Error, State};
use idm_core::proto::store::{self, PersonalToken, PersonalTokens};
use idm_core::proto::user::ListPersonalTokens;
use idm_core::proto::user::*;
use idm_core::proto::SecretText;
use idm_core::{ApiError, ErrorCode, IssuerId, PersonalTokenId, Region, UserId};
use std::sync::Arc;

const PREFIX: &str = "idm_pat_";
const MAX_SCOPES: usize = 50;

fn region_of_token(token: &str) -> Option<Region> {
    let (region, body) = token.strip_prefix(PREFIX)?.split_once('_')?;
    (body.len() == 43).then_some(())?;
    Region::parse(region).ok()
}

/// Tenant-defined scopes: short, printable, no spaces.
fn check_scopes(scopes: &[String]) -> Result<(), ApiError> {
    if scopes.len() > MAX_SCOPES {
        return Err(ApiError::validation(format!("at most {MAX_SCOPES} scopes")));
    }
    for scope in scopes {
        let ok = !scope.is_empty()
            && scope.len() <= 64
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":._-*/".contains(&b));
        if !ok {
            return Err(ApiError::validation(
                "scopes are 1 to 64 of letters, digits and : . _ - * /",
            ));
        }
    }
    Ok(())
}

async fn region_of_user(state: &State, issuer: &IssuerId, user: &UserId) -> Result<Region, Error> {
    directory::region_of_user(&state.db, issuer, user)
        .await?
        .ok_or_else(|| ApiError::not_found("user").into())
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn create(
    state: Arc<State>,
    req: NewPersonalToken,
) -> Result<CreatedPersonalToken, Error> {
    check_scopes(&req.scopes)?;
    if req.expires_at.is_some_and(|at| at <= idm_core::now()) {
        return Err(ApiError::validation("expires_at must be in the future").into());
    }
    let region = region_of_user(&state, &req.issuer_id, &req.user_id).await?;
    let token = format!("{PREFIX}{region}_{}", idm_crypto::random_token::<32>());
    let request = store::CreatePersonalToken {
        issuer_id: req.issuer_id,
        user_id: req.user_id,
        token_id: PersonalTokenId::generate(),
        name: req.name.as_str().to_owned(),
        scopes: req.scopes,
        expires_at: req.expires_at,
        token_hash: idm_crypto::sha256_hex(token.as_bytes()),
    };
    let info = state.bus.send_to(region, &request).await?;
    Ok(CreatedPersonalToken {
        info,
        token: SecretText::new(token),
    })
}

pub async fn list(state: Arc<State>, req: ListPersonalTokens) -> Result<PersonalTokens, Error> {
    let region = region_of_user(&state, &req.issuer_id, &req.user_id).await?;
    let request = store::ListPersonalTokens(store::UserSessions {
        issuer_id: req.issuer_id,
        user_id: req.user_id,
        page: Some(req.page),
    });
    Ok(state.bus.send_to(region, &request).await?)
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, token = %req.token_id))]
pub async fn revoke(state: Arc<State>, req: PersonalTokenRef) -> Result<PersonalToken, Error> {
    let region = region_of_user(&state, &req.issuer_id, &req.user_id).await?;
    let request = store::RevokePersonalToken {
        issuer_id: req.issuer_id,
        user_id: req.user_id,
        token_id: req.token_id,
    };
    Ok(state.bus.send_to(region, &request).await?)
}

pub async fn verify(state: Arc<State>, req: VerifyPersonalToken) -> Result<PersonalToken, Error> {
    let invalid = || {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "the personal token is not valid",
        )
    };
    let token = req.token.expose();
    let region = region_of_token(token).ok_or_else(invalid)?;
    let request = store::VerifyPersonalToken {
        issuer_id: req.issuer_id,
        token_hash: idm_crypto::sha256_hex(token.as_bytes()),
    };
    let reply: Result<PersonalToken, ApiError> = state.bus.send_to(region, &request).await;
    reply.map_err(|e| {
        if e.code == ErrorCode::NotFound {
            invalid().into()
        } else {
            e.into()
        }
    })
}
