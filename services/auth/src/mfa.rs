//! TOTP enrollment and confirmation, backup codes, and the second step of
//! sign-in. TOTP secrets are sealed here (XChaCha20-Poly1305 under the auth
//! master key, bound to issuer and user) before the regional store keeps them.

use crate::codes::{self, Kind};
use crate::signin::{self, at_least, PendingMfa};
use crate::{totp, Error, State};
use base64::Engine;
use idm_core::proto::auth::*;
use idm_core::proto::store::{self, Accepted, TotpState};
use idm_core::proto::user::GetUser;
use idm_core::proto::{event, Done, IssuerContext, SecretText};
use idm_core::{ApiError, ErrorCode, IssuerId, Region, UserId};
use std::sync::Arc;
use std::time::Instant;

const BACKUP_CODES: usize = 10;

fn aad(issuer: &IssuerId, user: &UserId) -> Vec<u8> {
    format!("totp/{issuer}/{user}").into_bytes()
}

fn open_secret(
    state: &State,
    issuer: &IssuerId,
    user: &UserId,
    sealed: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| ApiError::internal_from(&e))?;
    Ok(state.master.open(&bytes, &aad(issuer, user))?)
}

async fn totp_state(
    state: &State,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
) -> Result<TotpState, Error> {
    Ok(state
        .bus
        .call_store(
            region,
            store::GET_TOTP,
            &GetUser {
                issuer_id: issuer.clone(),
                user_id: user.clone(),
            },
        )
        .await?)
}

/// A backup code: 10 characters of base32 shown as `xxxxx-xxxxx` (50 bits).
fn new_backup_code() -> String {
    let raw = totp::base32(&idm_crypto::random_bytes::<7>()).to_ascii_lowercase();
    format!("{}-{}", &raw[..5], &raw[5..10])
}

fn backup_code_hash(state: &State, user: &UserId, code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    idm_crypto::sha256_hex(&state.codes.mac(&format!("backup/{user}"), &normalized))
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id, user = %req.user_id))]
pub async fn enroll_totp(state: Arc<State>, req: SessionUser) -> Result<TotpEnrollment, Error> {
    let user = signin::get_user(&state, &req.ctx, req.user_id.clone()).await?;
    let secret = zeroize::Zeroizing::new(idm_crypto::random_bytes::<{ totp::SECRET_BYTES }>());
    let generator =
        totp::totp(secret.as_ref(), &user.email).map_err(|e| ApiError::internal_from(&e))?;
    let url = generator
        .to_url()
        .map_err(|e| ApiError::internal_from(&e))?;
    let sealed = state
        .master
        .seal(secret.as_ref(), &aad(&req.ctx.issuer_id, &req.user_id))?;
    let request = store::SetPendingTotp {
        issuer_id: req.ctx.issuer_id.clone(),
        user_id: req.user_id,
        sealed_secret: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    let _: Done = state
        .bus
        .call_store(req.region, store::SET_PENDING_TOTP, &request)
        .await?;
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

async fn confirm(state: &State, req: &ConfirmTotp) -> Result<BackupCodes, Error> {
    let s = &req.session;
    let current = totp_state(state, &s.ctx.issuer_id, &s.user_id, s.region).await?;
    let sealed = current
        .pending_sealed
        .ok_or_else(|| ApiError::new(ErrorCode::CodeInvalid, "start a TOTP enrollment first"))?;
    let secret = open_secret(state, &s.ctx.issuer_id, &s.user_id, &sealed)?;
    let generator = totp::totp(&secret, "confirm").map_err(|e| ApiError::internal_from(&e))?;
    let step = totp::matching_step(&generator, req.code.expose(), state.codes.clock().unix())
        .ok_or_else(codes::invalid)?;
    let backup_codes: Vec<String> = (0..BACKUP_CODES).map(|_| new_backup_code()).collect();
    let request = store::EnableTotp {
        issuer_id: s.ctx.issuer_id.clone(),
        user_id: s.user_id.clone(),
        backup_code_hashes: backup_codes
            .iter()
            .map(|c| backup_code_hash(state, &s.user_id, c))
            .collect(),
        step,
    };
    let _: Done = state
        .bus
        .call_store(s.region, store::ENABLE_TOTP, &request)
        .await?;
    state
        .events
        .publish(
            &s.ctx.issuer_id,
            event::MFA_ENABLED,
            serde_json::json!({ "user_id": s.user_id, "method": "totp" }),
        )
        .await?;
    Ok(BackupCodes {
        backup_codes: backup_codes.into_iter().map(SecretText::new).collect(),
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn verify_mfa(state: Arc<State>, req: VerifyMfa) -> Result<Authenticated, Error> {
    let started = Instant::now();
    let result = second_factor(&state, &req).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    let pending = result?;
    let user = signin::get_user(&state, &req.ctx, pending.user_id).await?;
    signin::open_session(&state, &req.ctx, user, req.device).await
}

async fn second_factor(state: &State, req: &VerifyMfa) -> Result<PendingMfa, Error> {
    let ctx: &IssuerContext = &req.ctx;
    let token = req.mfa_token.expose();
    if token.len() != 43 {
        return Err(codes::invalid().into());
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
    let expected = state.codes.mac(token, token);
    if !idm_crypto::ct_eq(&entry.mac, &expected) {
        return Err(codes::invalid().into());
    }
    let pending: PendingMfa =
        serde_json::from_str(&entry.payload).map_err(|e| ApiError::internal_from(&e))?;
    let accepted = match (&req.code, &req.backup_code) {
        (Some(code), None) => {
            let current =
                totp_state(state, &ctx.issuer_id, &pending.user_id, pending.region).await?;
            let sealed = current.active_sealed.ok_or_else(codes::invalid)?;
            let secret = open_secret(state, &ctx.issuer_id, &pending.user_id, &sealed)?;
            let generator =
                totp::totp(&secret, "verify").map_err(|e| ApiError::internal_from(&e))?;
            let step = totp::matching_step(&generator, code.expose(), state.codes.clock().unix())
                .ok_or_else(codes::invalid)?;
            let used = store::UseTotpStep {
                issuer_id: ctx.issuer_id.clone(),
                user_id: pending.user_id.clone(),
                step,
            };
            let reply: Accepted = state
                .bus
                .call_store(pending.region, store::USE_TOTP_STEP, &used)
                .await?;
            reply.accepted
        }
        (None, Some(backup)) => {
            let used = store::UseBackupCode {
                issuer_id: ctx.issuer_id.clone(),
                user_id: pending.user_id.clone(),
                code_hash: backup_code_hash(state, &pending.user_id, backup.expose()),
            };
            let reply: Accepted = state
                .bus
                .call_store(pending.region, store::USE_BACKUP_CODE, &used)
                .await?;
            reply.accepted
        }
        _ => return Err(ApiError::validation("give exactly one of code and backup_code").into()),
    };
    if !accepted
        || !state
            .codes
            .consume(Kind::MfaToken, &ctx.issuer_id, token, &expected)
            .await?
    {
        return Err(codes::invalid().into());
    }
    Ok(pending)
}
