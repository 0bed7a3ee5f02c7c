//! Creating issuers: their per-issuer keys, then the global rows in one
//! transaction. Regional stores are provisioned lazily (see [`init_issuer`]),
//! so creating an issuer touches no regional database and works while a
//! region is down.

use crate::{storage, Error, State};
use futures::future::join_all;
use idm_core::proto::account::{ApiKeyInfo, Issuer};
use idm_core::proto::store::{ProvisionIssuer, StoreInfo};
use idm_core::proto::{session, user, SecretText};
use idm_core::{
    AccountId, ApiError, ApiKeyId, ErrorCode, IssuerId, IssuerPolicy, KeyKind, KeyMode, Region,
    Scope,
};

/// Registers a new issuer with the services that keep per-issuer state
/// globally (its session signing keys, its blind-index key). The regional
/// stores are not asked: an issuer's schema is created in a region when
/// that region first needs it (its first user placed there), or ahead of
/// time by [`provision_regions`]. See docs/REGIONS.md "Schemas per issuer".
async fn init_issuer(state: &State, issuer: &IssuerId) -> Result<(), Error> {
    let _ = state
        .bus
        .send(&session::InitIssuer {
            issuer_id: issuer.clone(),
        })
        .await?;
    let _ = state
        .bus
        .send(&user::InitIssuer {
            issuer_id: issuer.clone(),
        })
        .await?;
    Ok(())
}

/// How pre-provisioning went in one region.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegionProvisioning {
    pub region: Region,
    pub provisioned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Creates `issuer`'s schema in each of `regions` now rather than on first
/// use. Idempotent, and each region on its own: a region that fails is
/// reported and the others are done, so running it again finishes the job.
pub async fn provision_regions(
    state: &State,
    issuer: &IssuerId,
    regions: &[Region],
) -> Vec<RegionProvisioning> {
    let calls = regions.iter().map(|&region| async move {
        let reply: Result<StoreInfo, ApiError> = state
            .bus
            .send_to(
                region,
                &ProvisionIssuer {
                    issuer_id: issuer.clone(),
                },
            )
            .await;
        let error = match reply {
            Ok(info) if info.region == region && info.jurisdiction == region.jurisdiction() => None,
            Ok(info) => {
                tracing::error!(%region, answered = %info.region, "a store answered for the wrong region");
                Some(format!(
                    "the store answered as {} ({})",
                    info.region, info.jurisdiction
                ))
            }
            Err(e) => {
                tracing::warn!(%region, code = %e.code, "provisioning failed");
                Some(e.message)
            }
        };
        RegionProvisioning {
            region,
            provisioned: error.is_none(),
            error,
        }
    });
    join_all(calls).await
}

/// A new key of `kind` for `issuer` holding exactly `scopes` (decided by the
/// caller: see `delegation`); the key text exists only in the result.
pub fn new_key(
    issuer: &IssuerId,
    kind: KeyKind,
    mode: KeyMode,
    name: String,
    scopes: Vec<Scope>,
) -> (ApiKeyInfo, SecretText, String) {
    let (key, hash) = idm_crypto::new_api_key(kind, mode);
    let info = ApiKeyInfo {
        id: ApiKeyId::generate(),
        issuer_id: issuer.clone(),
        kind,
        mode,
        name,
        hint: key.hint(),
        scopes,
        created_at: idm_core::now(),
        revoked_at: None,
    };
    (info, SecretText::new(key.expose()), hash)
}

/// Refuses (`plan_limit_reached`) a new issuer for `account` once it has
/// as many as its plan allows. Inside a transaction the account's row stays
/// locked until it ends, so concurrent creations are counted one by one.
pub async fn check_issuer_allowance(
    db: &impl idm_db::GenericClient,
    default_plan: &idm_core::AccountPlan,
    account: &AccountId,
) -> Result<(), Error> {
    let (plan, _) = storage::account_plan(db, account, default_plan, true)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let issuers = storage::issuers_of(db, account).await?.len();
    if issuers >= plan.max_issuers as usize {
        return Err(ApiError::new(
            ErrorCode::PlanLimitReached,
            format!(
                "the account's plan allows {} issuers and it has {issuers}",
                plan.max_issuers
            ),
        )
        .into());
    }
    Ok(())
}

pub struct NewIssuer {
    pub issuer: Issuer,
    pub secret_key: SecretText,
    pub restricted_key: Option<SecretText>,
}

/// Provisions an issuer everywhere and stores it with its first keys: a
/// secret key holding `first_key_scopes` (every scope only for the
/// operator's new account; otherwise the creating key's) and, when asked, a
/// restricted key. `new_account` is written in the same transaction when given.
pub async fn create_issuer(
    state: &State,
    account: &AccountId,
    new_account: Option<&str>,
    name: String,
    mode: KeyMode,
    first_key_scopes: Vec<Scope>,
    with_restricted_key: bool,
) -> Result<NewIssuer, Error> {
    let issuer = Issuer {
        id: IssuerId::generate(),
        account_id: account.clone(),
        name,
        mode,
        allowed_origins: Vec::new(),
        policy: IssuerPolicy::default(),
        created_at: idm_core::now(),
        plan: None,
    };
    init_issuer(state, &issuer.id).await?;

    let (secret_info, secret_key, secret_hash) = new_key(
        &issuer.id,
        KeyKind::Secret,
        mode,
        "default secret key".into(),
        first_key_scopes,
    );
    let restricted = with_restricted_key.then(|| {
        new_key(
            &issuer.id,
            KeyKind::Restricted,
            mode,
            "default restricted key".into(),
            Vec::new(),
        )
    });

    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    match new_account {
        Some(account_name) => storage::insert_account(&tx, account, account_name).await?,
        None => check_issuer_allowance(&tx, &state.default_plan, account).await?,
    }
    storage::insert_issuer(&tx, &issuer).await?;
    storage::insert_key(&tx, &secret_info, &secret_hash).await?;
    if let Some((info, _, hash)) = &restricted {
        storage::insert_key(&tx, info, hash).await?;
    }
    tx.commit().await?;
    tracing::info!(issuer = %issuer.id, account = %account, "issuer created");
    Ok(NewIssuer {
        issuer,
        secret_key,
        restricted_key: restricted.map(|(_, key, _)| key),
    })
}
