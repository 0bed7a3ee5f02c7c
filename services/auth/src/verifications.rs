//! The verification API: prove someone controls an address without creating
//! a user. The address exists only in the Redis entry (and the queued mail)
//! until the code is used or expires; nothing is written to Postgres.

use crate::codes::{self, Kind};
use crate::mail::OutgoingMail;
use crate::signin::at_least;
use crate::{Error, State};
use idm_core::proto::auth::*;
use idm_core::proto::{session, SecretText};
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
        .put(
            Kind::Verification,
            &req.ctx.issuer_id,
            &id,
            &code,
            req.email.as_str(),
            state.verification_ttl,
        )
        .await?;
    let minutes = state.verification_ttl.as_secs() / 60;
    state
        .mail
        .enqueue(&OutgoingMail {
            id: format!("mail_{}", idm_crypto::random_token::<12>()),
            to: req.email.canonical().to_owned(),
            subject: format!("Your verification code: {code}"),
            text: format!("Your verification code is {code}\n\nIt expires in {minutes} minutes.\n"),
        })
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
    let email = result?;
    let sign = session::SignVerification {
        issuer_id: req.ctx.issuer_id.clone(),
        verification_id: req.id.clone(),
        email: email.clone(),
        verified_at: state.codes.clock().now(),
    };
    let token: SecretText = state
        .bus
        .call("session", session::SIGN_VERIFICATION, &sign)
        .await?;
    Ok(VerificationResult {
        verified: true,
        email,
        token,
    })
}

async fn redeem(state: &State, req: &CheckVerification) -> Result<String, Error> {
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
    let expected = state.codes.mac(&req.id, code);
    if !idm_crypto::ct_eq(&entry.mac, &expected)
        || !state
            .codes
            .consume(Kind::Verification, &req.ctx.issuer_id, &req.id, &expected)
            .await?
    {
        return Err(codes::invalid().into());
    }
    Ok(entry.payload)
}
