//! Delegation: what a key may create. A new key, or a new issuer's first key,
//! is never stronger than the key that asked for it, and a test key's reach
//! stays in test. The creating key is read from storage here rather than
//! taken from the caller, so a key revoked a moment ago creates nothing.

use crate::{storage, Error};
use idm_core::scope::check_delegation;
use idm_core::{AccountId, ApiError, ApiKeyId, ErrorCode, IssuerId, KeyKind, KeyMode, Scope};
use idm_db::GenericClient;

pub use storage::KeyHolder;

fn gone() -> ApiError {
    ApiError::new(ErrorCode::InvalidApiKey, "the API key is not valid")
}

/// The live key `key` of `issuer`, as a delegator. Only secret keys delegate.
pub async fn creator_in_issuer(
    db: &impl GenericClient,
    key: &ApiKeyId,
    issuer: &IssuerId,
) -> Result<KeyHolder, Error> {
    let holder = storage::key_holder(db, key)
        .await?
        .filter(|h| &h.issuer_id == issuer)
        .ok_or_else(gone)?;
    secret_only(holder)
}

/// The live key `key` of any issuer of `account`, as a delegator.
pub async fn creator_in_account(
    db: &impl GenericClient,
    key: &ApiKeyId,
    account: &AccountId,
) -> Result<KeyHolder, Error> {
    let holder = storage::key_holder(db, key)
        .await?
        .filter(|h| &h.account_id == account)
        .ok_or_else(gone)?;
    secret_only(holder)
}

fn secret_only(holder: KeyHolder) -> Result<KeyHolder, Error> {
    match holder.kind {
        KeyKind::Secret => Ok(holder),
        KeyKind::Restricted => Err(ApiError::new(
            ErrorCode::InsufficientScope,
            "restricted keys cannot create keys or issuers",
        )
        .into()),
    }
}

/// The scopes a new key of `kind` gets when `creator` asks for `requested`:
/// a secret key gets what was asked if the creator holds all of it, or the
/// creator's own scopes when nothing was asked (never "all"); a restricted
/// key has none (it reaches only client and verification routes, which every
/// secret key reaches too, so it is never stronger than its creator).
pub fn scopes_for_new_key(
    creator: &KeyHolder,
    kind: KeyKind,
    requested: Option<Vec<Scope>>,
) -> Result<Vec<Scope>, ApiError> {
    match (kind, requested) {
        (KeyKind::Restricted, None) => Ok(Vec::new()),
        (KeyKind::Restricted, Some(_)) => Err(ApiError::validation(
            "restricted keys have no scopes: they only reach client and verification routes",
        )),
        (KeyKind::Secret, None) => Ok(creator.scopes.clone()),
        (KeyKind::Secret, Some(list)) if list.is_empty() => Err(ApiError::validation(
            "scopes must not be empty; omit them for a key with this key's scopes",
        )),
        (KeyKind::Secret, Some(list)) => {
            check_delegation(&creator.scopes, &list)?;
            Ok(list)
        }
    }
}

/// Whether `creator` may create an issuer in `mode`: only live keys create
/// live issuers. A test key is what a developer's laptop, a CI job or a
/// staging box holds; letting it reach production data would make every
/// test key a production credential. Refused as `insufficient_scope`: the
/// caller needs a stronger credential, exactly as with a missing scope.
pub fn check_issuer_mode(creator: &KeyHolder, mode: KeyMode) -> Result<(), ApiError> {
    match (creator.mode, mode) {
        (KeyMode::Test, KeyMode::Live) => Err(ApiError::new(
            ErrorCode::InsufficientScope,
            "a test key cannot create a live issuer; use a live key of this account",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(mode: KeyMode, scopes: &[&str]) -> KeyHolder {
        KeyHolder {
            issuer_id: IssuerId::generate(),
            account_id: AccountId::generate(),
            kind: KeyKind::Secret,
            mode,
            scopes: scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect(),
        }
    }

    fn scopes(raw: &[&str]) -> Vec<Scope> {
        raw.iter().filter_map(|s| Scope::parse(s).ok()).collect()
    }

    #[test]
    fn a_new_key_without_scopes_gets_the_creators_never_all() {
        let creator = holder(KeyMode::Live, &["api_keys:manage"]);
        assert_eq!(
            scopes_for_new_key(&creator, KeyKind::Secret, None).ok(),
            Some(scopes(&["api_keys:manage"]))
        );
        assert_eq!(
            scopes_for_new_key(&creator, KeyKind::Restricted, None).ok(),
            Some(Vec::new())
        );
    }

    #[test]
    fn a_new_key_never_widens() {
        let creator = holder(KeyMode::Live, &["api_keys:manage", "users:write"]);
        let ask = |raw: &[&str]| {
            scopes_for_new_key(&creator, KeyKind::Secret, Some(scopes(raw))).map_err(|e| e.code)
        };
        assert!(ask(&["api_keys:read", "users:read"]).is_ok());
        for wider in [
            &["*:manage"][..],
            &["users:manage"],
            &["api_keys:delete"],
            &["users:read", "sessions:read"],
        ] {
            assert_eq!(ask(wider), Err(ErrorCode::InsufficientScope), "{wider:?}");
        }
        assert_eq!(ask(&[]), Err(ErrorCode::ValidationFailed));
    }

    #[test]
    fn only_live_keys_create_live_issuers() {
        let test_key = holder(KeyMode::Test, &["*:manage"]);
        let live_key = holder(KeyMode::Live, &["issuers:manage"]);
        assert_eq!(
            check_issuer_mode(&test_key, KeyMode::Live).map_err(|e| e.code),
            Err(ErrorCode::InsufficientScope)
        );
        assert!(check_issuer_mode(&test_key, KeyMode::Test).is_ok());
        assert!(check_issuer_mode(&live_key, KeyMode::Live).is_ok());
        assert!(check_issuer_mode(&live_key, KeyMode::Test).is_ok());
    }
}
