//! Checking a user's second factor, wherever it is asked for (the second step
//! of sign-in, or a step-up proof): TOTP codes against the user's failure
//! budget, backup codes as the recovery path that clears a TOTP lock.

use crate::budget::Budget;
use crate::{codes, notices, totp, Error, State};
use base64::Engine;
use idm_core::proto::event::DomainEvent;
use idm_core::proto::store::GetUser;
use idm_core::proto::store::{self, TotpState};
use idm_core::proto::{event, IssuerContext};
use idm_core::{ApiError, ErrorCode, IssuerId, Region, UserId};

pub fn aad(issuer: &IssuerId, user: &UserId) -> Vec<u8> {
    format!("totp/{issuer}/{user}").into_bytes()
}

pub fn open_secret(
    state: &State,
    issuer: &IssuerId,
    user: &UserId,
    sealed: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| ApiError::internal_from(&e))?;
    let opened = state.master.open(&bytes, &aad(issuer, user)).inspect_err(
        |e| tracing::error!(issuer = %issuer, error = %e, "a TOTP secret does not open"),
    )?;
    Ok(opened.plaintext)
}

/// `open_secret` for a secret read from the user's store: one still sealed
/// under the previous master key is written back re-sealed (best effort; the
/// background pass catches what this misses).
pub async fn open_stored_secret(
    state: &State,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
    slot: store::TotpSlot,
    sealed: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let secret = open_secret(state, issuer, user, sealed)?;
    if state.master.has_previous() {
        if let Err(e) = crate::reseal::reseal_one(state, issuer, user, region, slot, sealed).await {
            tracing::warn!(issuer = %issuer, error = %e, "TOTP secret not re-sealed");
        }
    }
    Ok(secret)
}

pub async fn totp_state(
    state: &State,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
) -> Result<TotpState, Error> {
    Ok(state
        .bus
        .send_to(
            region,
            &store::GetTotp(GetUser {
                issuer_id: issuer.clone(),
                user_id: user.clone(),
            }),
        )
        .await?)
}

/// A backup code: 10 characters of base32 shown as `xxxxx-xxxxx` (50 bits).
pub fn new_backup_code() -> String {
    let raw = totp::base32(&idm_crypto::random_bytes::<7>()).to_ascii_lowercase();
    format!("{}-{}", &raw[..5], &raw[5..10])
}

pub fn backup_code_hash(state: &State, user: &UserId, code: &str) -> String {
    backup_code_hashes(state, user, code)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// The code's hash under every configured master key, current first:
/// during a rotation a code issued before it is found by its old hash.
fn backup_code_hashes(state: &State, user: &UserId, code: &str) -> Vec<String> {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    state
        .codes
        .macs(&format!("backup/{user}"), &normalized)
        .iter()
        .map(|mac| idm_crypto::sha256_hex(mac))
        .collect()
}

/// Checks a TOTP code of the user's active authenticator. The attempt is
/// charged to the user's TOTP budget before it is checked, whichever MFA
/// token or session it came with; a used time step counts as a failure.
pub async fn check_totp(
    state: &State,
    ctx: &IssuerContext,
    user: &UserId,
    region: Region,
    code: &str,
) -> Result<(), Error> {
    let charge = state
        .budgets
        .charge(Budget::Totp, &ctx.issuer_id, user.as_str())
        .await?;
    let locks = charge.locks_on_failure;
    match totp_matches(state, &ctx.issuer_id, user, region, code).await? {
        TotpCheck::Valid => {
            state.budgets.succeeded(charge).await?;
            Ok(())
        }
        // A replayed code counts as a failure (it must never clear the
        // budget, and is no free try), but says what happened: the person
        // typed the code they just used, and the next one will work.
        outcome @ (TotpCheck::Wrong | TotpCheck::AlreadyUsed) => {
            state.budgets.failed(charge).await?;
            if locks {
                locked_now(state, ctx, user).await?;
            }
            Err(match outcome {
                TotpCheck::AlreadyUsed => already_used(),
                _ => codes::invalid(),
            }
            .into())
        }
    }
}

enum TotpCheck {
    Valid,
    Wrong,
    /// Right for its time step, but that step was already used.
    AlreadyUsed,
}

fn already_used() -> ApiError {
    ApiError::new(
        ErrorCode::CodeAlreadyUsed,
        "this code was already used: wait for your authenticator app to show the next code (a new one every 30 seconds) and enter that one",
    )
}

async fn totp_matches(
    state: &State,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
    code: &str,
) -> Result<TotpCheck, Error> {
    let current = totp_state(state, issuer, user, region).await?;
    let Some(sealed) = current.active_sealed else {
        return Ok(TotpCheck::Wrong);
    };
    let secret = open_stored_secret(
        state,
        issuer,
        user,
        region,
        store::TotpSlot::Active,
        &sealed,
    )
    .await?;
    let generator = totp::totp(&secret, None, "verify").map_err(|e| ApiError::internal_from(&e))?;
    let Some(step) = totp::matching_step(&generator, code, state.codes.clock().unix()) else {
        return Ok(TotpCheck::Wrong);
    };
    let used = store::UseTotpStep {
        issuer_id: issuer.clone(),
        user_id: user.clone(),
        step,
    };
    let reply = state.bus.send_to(region, &used).await?;
    Ok(if reply.accepted {
        TotpCheck::Valid
    } else {
        TotpCheck::AlreadyUsed
    })
}

/// Uses up one backup code. Backup codes carry 50 random bits each, so they
/// are not budgeted per user (ten of them cannot be guessed at any rate the
/// edge allows), which keeps them open as the way past a TOTP lock: a
/// success clears the user's TOTP budget.
pub async fn use_backup_code(
    state: &State,
    ctx: &IssuerContext,
    user: &UserId,
    region: Region,
    code: &str,
) -> Result<(), Error> {
    let mut accepted = false;
    for code_hash in backup_code_hashes(state, user, code) {
        let used = store::UseBackupCode {
            issuer_id: ctx.issuer_id.clone(),
            user_id: user.clone(),
            code_hash,
        };
        if state.bus.send_to(region, &used).await?.accepted {
            accepted = true;
            break;
        }
    }
    if !accepted {
        return Err(codes::invalid().into());
    }
    if state
        .budgets
        .clear(Budget::Totp, &ctx.issuer_id, user.as_str())
        .await?
    {
        state
            .events
            .publish(
                &ctx.issuer_id,
                DomainEvent::FactorUnlocked(event::FactorUnlocked {
                    user_id: user.clone(),
                    factor: Some("totp".into()),
                    by: "backup_code".into(),
                }),
            )
            .await?;
    }
    Ok(())
}

/// The failure that just locked a user's TOTP: an event for the tenant, and
/// a notice to the user (whoever caused it knew their first factor).
async fn locked_now(state: &State, ctx: &IssuerContext, user: &UserId) -> Result<(), Error> {
    state
        .events
        .publish(
            &ctx.issuer_id,
            DomainEvent::FactorLocked(event::FactorLocked {
                user_id: user.clone(),
                factor: "totp".into(),
            }),
        )
        .await?;
    notices::send_to_user(state, ctx, user, notices::Notice::TotpLocked).await
}
