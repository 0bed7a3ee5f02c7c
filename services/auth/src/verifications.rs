//! The verification API: prove someone controls an address without creating
//! a user. The address is never kept in the clear, not even for the code's
//! lifetime: the Redis entry (keyed by a hash of the `ver_` id) holds a MAC of
//! the code bound to the id and the address, and a keyed hash of the address;
//! the caller presents the address again at check time. The queued mail is
//! sealed. Nothing is written to Postgres except, after wrong codes, the
//! address's keyed hash in the failure ledger (see budget.rs).

use crate::budget::Budget;
use crate::codes::{self, Kind};
use crate::mail::Letter;
use crate::signin::at_least;
use crate::{Error, State};
use idm_core::proto::auth::*;
use idm_core::proto::session;
use std::sync::Arc;
use std::time::Instant;

fn well_formed_id(id: &str) -> bool {
    id.len() == 36 && id.starts_with("ver_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn send_verification(
    state: Arc<State>,
    req: SendVerification,
) -> Result<VerificationStarted, Error> {
    let id = format!("ver_{}", hex::encode(idm_crypto::random_bytes::<16>()));
    let code = idm_crypto::random_digits(6);
    state
        .codes
        .put_bound(
            Kind::Verification,
            &req.ctx.issuer_id,
            &id,
            &mac_subject(&id, &req.email),
            &code,
            &state.codes.address_tag(&req.ctx.issuer_id, &req.email),
            state.verification_ttl,
        )
        .await?;
    let minutes = state.verification_ttl.as_secs() / 60;
    state
        .mail
        .send(
            &req.ctx,
            req.email.canonical(),
            &Letter::VerificationCode { code, minutes },
        )
        .await?;
    let expires_at = state.codes.clock().now() + state.verification_ttl;
    Ok(VerificationStarted { id, expires_at })
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn check_verification(
    state: Arc<State>,
    req: CheckVerification,
) -> Result<VerificationResult, Error> {
    let started = Instant::now();
    let result = redeem(&state, &req).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    result?;
    let email = req.email.as_str().to_owned();
    let sign = session::SignVerification {
        issuer_id: req.ctx.issuer_id.clone(),
        verification_id: req.id.clone(),
        email: email.clone(),
        verified_at: state.codes.clock().now(),
    };
    let token = state.bus.send(&sign).await?;
    Ok(VerificationResult {
        verified: true,
        email,
        token,
    })
}

/// The code's MAC is bound to the id and the address, so a code is only good
/// for the address it was sent to.
fn mac_subject(id: &str, email: &idm_core::Email) -> String {
    format!("{id}\u{0}{}", email.canonical())
}

async fn redeem(state: &State, req: &CheckVerification) -> Result<(), Error> {
    let code = req.code.expose();
    if !well_formed_id(&req.id) || !crate::passwordless::six_digits(code) {
        return Err(codes::invalid().into());
    }
    let entry = state
        .codes
        .attempt(
            Kind::Verification,
            &req.ctx.issuer_id,
            &req.id,
            state.max_code_attempts,
        )
        .await?;
    // Another address than the one mailed never matches, and must not spend
    // that other address's budget either.
    let tag = state
        .codes
        .address_tag_of(&entry, &req.ctx.issuer_id, &req.email);
    if !idm_crypto::ct_eq(entry.payload.as_bytes(), tag.as_bytes()) {
        return Err(codes::invalid().into());
    }
    let charge = state
        .budgets
        .charge(
            Budget::Verification,
            &req.ctx.issuer_id,
            req.email.canonical(),
        )
        .await?;
    let expected = state
        .codes
        .mac_of(&entry, &mac_subject(&req.id, &req.email), code);
    if !idm_crypto::ct_eq(&entry.mac, &expected) {
        state.budgets.failed(charge).await?;
        return Err(codes::invalid().into());
    }
    let won = state.codes.consume(&entry, &expected).await?;
    state.budgets.succeeded(charge).await?;
    if won {
        Ok(())
    } else {
        Err(codes::invalid().into())
    }
}
