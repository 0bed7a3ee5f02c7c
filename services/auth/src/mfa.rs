//! TOTP enrollment and confirmation, removing TOTP, new backup codes, and
//! the second step of sign-in. TOTP secrets are sealed here
//! (XChaCha20-Poly1305 under the auth master key, bound to issuer and user)
//! before the regional store keeps them. Replacing or removing the second
//! factor needs the current one in the same request (see step_up.rs).

use crate::codes::{self, Kind};
use crate::second_factor::{self, aad, backup_code_hash, new_backup_code, open_secret};
use crate::signin::{self, at_least, PendingMfa};
use crate::step_up::{self, Changing};
use crate::{budget::Budget, notices, totp, Error, State};
use base64::Engine;
use idm_core::proto::auth::*;
use idm_core::proto::event::DomainEvent;
use idm_core::proto::store::{self};
use idm_core::proto::{event, Done, IssuerContext, SecretText};
use idm_core::{ApiError, ErrorCode};
use std::sync::Arc;
use std::time::Instant;

const BACKUP_CODES: usize = 10;

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id, user = %req.user_id))]
pub async fn enroll_totp(
    state: Arc<State>,
    EnrollTotp(req): EnrollTotp,
) -> Result<TotpEnrollment, Error> {
    let user = signin::get_user(&state, &req.ctx, req.user_id.clone()).await?;
    let secret = zeroize::Zeroizing::new(idm_crypto::random_bytes::<{ totp::SECRET_BYTES }>());
    // The authenticator's entry names the tenant: the same address at two
    // tenants gives two entries a person can tell apart.
    let issuer = totp::issuer_label(&req.ctx.issuer_name, &state.mail.platform_name());
    let generator = totp::totp(secret.as_ref(), Some(&issuer), &user.email)
        .map_err(|e| ApiError::internal_from(&e))?;
    let url = generator
        .to_url()
        .map_err(|e| ApiError::internal_from(&e))?;
    let sealed = state
        .master
        .seal(secret.as_ref(), &aad(&req.ctx.issuer_id, &req.user_id))?;
    // Only the pending slot changes: the active authenticator (if any) keeps
    // working until a confirmation with a step-up proof replaces it.
    let request = store::SetPendingTotp {
        issuer_id: req.ctx.issuer_id.clone(),
        user_id: req.user_id,
        sealed_secret: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    let _ = state.bus.send_to(req.region, &request).await?;
    Ok(TotpEnrollment {
        secret: SecretText::new(totp::base32(secret.as_ref())),
        otpauth_url: SecretText::new(url),
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.session.ctx.issuer_id, user = %req.session.user_id))]
pub async fn confirm_totp(state: Arc<State>, req: ConfirmTotp) -> Result<BackupCodes, Error> {
    let started = Instant::now();
    let result = confirm(&state, &req).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    result
}

fn fresh_backup_codes(state: &State, user: &idm_core::UserId) -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..BACKUP_CODES).map(|_| new_backup_code()).collect();
    let hashes = codes
        .iter()
        .map(|c| backup_code_hash(state, user, c))
        .collect();
    (codes, hashes)
}

async fn confirm(state: &State, req: &ConfirmTotp) -> Result<BackupCodes, Error> {
    let s = &req.session;
    let current = second_factor::totp_state(state, &s.ctx.issuer_id, &s.user_id, s.region).await?;
    let sealed = current
        .pending_sealed
        .ok_or_else(|| ApiError::new(ErrorCode::CodeInvalid, "start a TOTP enrollment first"))?;
    let secret = open_secret(state, &s.ctx.issuer_id, &s.user_id, &sealed)?;
    let generator =
        totp::totp(&secret, None, "confirm").map_err(|e| ApiError::internal_from(&e))?;
    let step = totp::matching_step(&generator, req.code.expose(), state.codes.clock().unix())
        .ok_or_else(codes::invalid)?;
    // The new code is checked first, so a typo does not use up the proof.
    let replacing = current.mfa_enabled;
    if replacing {
        let credentials = step_up::credentials(state, s).await?;
        step_up::require(state, s, &req.step_up, Changing::SecondFactor, &credentials).await?;
    }
    let (backup_codes, backup_code_hashes) = fresh_backup_codes(state, &s.user_id);
    let request = store::EnableTotp {
        issuer_id: s.ctx.issuer_id.clone(),
        user_id: s.user_id.clone(),
        backup_code_hashes,
        step,
    };
    let _ = state.bus.send_to(s.region, &request).await?;
    if replacing {
        // A lock on the old authenticator means nothing for the new one.
        state
            .budgets
            .clear(Budget::Totp, &s.ctx.issuer_id, s.user_id.as_str())
            .await?;
    }
    state
        .events
        .publish(
            &s.ctx.issuer_id,
            DomainEvent::MfaEnabled(event::MfaEnabled {
                user_id: s.user_id.clone(),
                method: "totp".into(),
                replaced: replacing,
            }),
        )
        .await?;
    let notice = if replacing {
        notices::Notice::TotpReplaced
    } else {
        notices::Notice::TotpEnabled
    };
    notices::send_to_user(state, &s.ctx, &s.user_id, notice).await?;
    Ok(BackupCodes {
        backup_codes: backup_codes.into_iter().map(SecretText::new).collect(),
    })
}

fn not_enabled() -> ApiError {
    ApiError::not_found("two-step verification")
}

#[tracing::instrument(skip_all, fields(issuer = %req.session.ctx.issuer_id, user = %req.session.user_id))]
pub async fn disable_totp(state: Arc<State>, DisableTotp(req): DisableTotp) -> Result<Done, Error> {
    let s = &req.session;
    let credentials = step_up::credentials(&state, s).await?;
    if !credentials.mfa_enabled {
        return Err(not_enabled().into());
    }
    step_up::require(
        &state,
        s,
        &req.step_up,
        Changing::SecondFactor,
        &credentials,
    )
    .await?;
    let request = store::DisableTotp(store::GetUser {
        issuer_id: s.ctx.issuer_id.clone(),
        user_id: s.user_id.clone(),
    });
    let removed = state.bus.send_to(s.region, &request).await?;
    if !removed.accepted {
        return Err(not_enabled().into());
    }
    state
        .budgets
        .clear(Budget::Totp, &s.ctx.issuer_id, s.user_id.as_str())
        .await?;
    state
        .events
        .publish(
            &s.ctx.issuer_id,
            DomainEvent::MfaDisabled(event::MfaDisabled {
                user_id: s.user_id.clone(),
                method: "totp".into(),
                reason: None,
            }),
        )
        .await?;
    notices::send_to_user(&state, &s.ctx, &s.user_id, notices::Notice::TotpDisabled).await?;
    Ok(Done::default())
}

#[tracing::instrument(skip_all, fields(issuer = %req.session.ctx.issuer_id, user = %req.session.user_id))]
pub async fn regenerate_backup_codes(
    state: Arc<State>,
    RegenerateBackupCodes(req): RegenerateBackupCodes,
) -> Result<BackupCodes, Error> {
    let s = &req.session;
    let credentials = step_up::credentials(&state, s).await?;
    if !credentials.mfa_enabled {
        return Err(not_enabled().into());
    }
    step_up::require(
        &state,
        s,
        &req.step_up,
        Changing::SecondFactor,
        &credentials,
    )
    .await?;
    let (backup_codes, backup_code_hashes) = fresh_backup_codes(&state, &s.user_id);
    let request = store::ReplaceBackupCodes {
        issuer_id: s.ctx.issuer_id.clone(),
        user_id: s.user_id.clone(),
        backup_code_hashes,
    };
    let replaced = state.bus.send_to(s.region, &request).await?;
    if !replaced.accepted {
        return Err(not_enabled().into());
    }
    state
        .events
        .publish(
            &s.ctx.issuer_id,
            DomainEvent::MfaBackupCodesRegenerated(event::UserRef {
                user_id: s.user_id.clone(),
            }),
        )
        .await?;
    notices::send_to_user(
        &state,
        &s.ctx,
        &s.user_id,
        notices::Notice::BackupCodesRegenerated,
    )
    .await?;
    Ok(BackupCodes {
        backup_codes: backup_codes.into_iter().map(SecretText::new).collect(),
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn verify_mfa(state: Arc<State>, req: VerifyMfa) -> Result<Authenticated, Error> {
    let started = Instant::now();
    let result = second_step(&state, &req).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    let pending = result?;
    let user = signin::get_user(&state, &req.ctx, pending.user_id).await?;
    signin::open_session(&state, &req.ctx, user, req.device).await
}

/// The MFA token names the user; the code is judged against that user's
/// budget, so a fresh token (another password sign-in) buys no new guesses.
async fn second_step(state: &State, req: &VerifyMfa) -> Result<PendingMfa, Error> {
    let ctx: &IssuerContext = &req.ctx;
    let token = req.mfa_token.expose();
    if token.len() != 43 {
        return Err(codes::invalid().into());
    }
    if req.code.is_some() == req.backup_code.is_some() {
        return Err(ApiError::validation("give exactly one of code and backup_code").into());
    }
    let entry = state
        .codes
        .attempt(
            Kind::MfaToken,
            &ctx.issuer_id,
            token,
            state.max_code_attempts,
        )
        .await?;
    let expected = state.codes.mac_of(&entry, token, token);
    if !idm_crypto::ct_eq(&entry.mac, &expected) {
        return Err(codes::invalid().into());
    }
    let pending: PendingMfa =
        serde_json::from_str(&entry.payload).map_err(|e| ApiError::internal_from(&e))?;
    let (user, region) = (&pending.user_id, pending.region);
    match (&req.code, &req.backup_code) {
        (Some(code), _) => {
            second_factor::check_totp(state, ctx, user, region, code.expose()).await?;
        }
        (None, Some(backup)) => {
            second_factor::use_backup_code(state, ctx, user, region, backup.expose()).await?;
        }
        (None, None) => return Err(codes::invalid().into()),
    }
    if !state.codes.consume(&entry, &expected).await? {
        return Err(codes::invalid().into());
    }
    Ok(pending)
}
