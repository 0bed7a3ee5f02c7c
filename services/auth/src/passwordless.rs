//! Magic links and email codes. Sending always answers the same way whether
//! or not the address has an account, so neither reveals who is registered.

use crate::codes::{self, Kind};
use crate::mail::OutgoingMail;
use crate::signin::{self, at_least};
use crate::{Error, State};
use idm_core::proto::auth::*;
use idm_core::proto::Done;
use idm_core::{ApiError, Email};
use std::sync::Arc;
use std::time::Instant;

const MAGIC_CODE_LEN: usize = 43;

fn well_formed_magic_code(code: &str) -> bool {
    code.len() == MAGIC_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn six_digits(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Whether mail should go out: the address has an account, or may get one.
async fn deliverable(
    state: &State,
    ctx: &idm_core::proto::IssuerContext,
    email: &Email,
) -> Result<bool, Error> {
    Ok(ctx.policy.allow_sign_up || signin::find_user(state, ctx, email).await?.is_some())
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn send_magic_link(state: Arc<State>, req: SendMagicLink) -> Result<Done, Error> {
    if !deliverable(&state, &req.ctx, &req.email).await? {
        return Ok(Done::default());
    }
    let code = idm_crypto::random_token::<32>();
    let mut link = url::Url::parse(&req.redirect_url)
        .map_err(|_| ApiError::validation("redirect_url is not a URL"))?;
    link.query_pairs_mut().append_pair("idm_magic_code", &code);
    state
        .codes
        .put(
            Kind::MagicLink,
            &req.ctx.issuer_id,
            &code,
            &code,
            req.email.as_str(),
            state.magic_link_ttl,
        )
        .await?;
    let minutes = state.magic_link_ttl.as_secs() / 60;
    state
        .mail
        .enqueue(&OutgoingMail {
            id: format!("mail_{}", idm_crypto::random_token::<12>()),
            to: req.email.canonical().to_owned(),
            subject: "Your sign-in link".into(),
            text: format!("Sign in with this link:\n\n{link}\n\nIt works once and expires in {minutes} minutes. If you did not ask for it, ignore this message.\n"),
        })
        .await?;
    Ok(Done::default())
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn verify_magic_link(
    state: Arc<State>,
    req: VerifyMagicLink,
) -> Result<Authenticated, Error> {
    let started = Instant::now();
    let result = redeem_magic_link(&state, &req).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    let email = result?;
    let user = signin::user_for_address(&state, &req.ctx, &email, &req.device)
        .await?
        .ok_or_else(codes::invalid)?;
    signin::complete(&state, &req.ctx, user, req.device).await
}

async fn redeem_magic_link(state: &State, req: &VerifyMagicLink) -> Result<Email, Error> {
    let code = req.code.expose();
    if !well_formed_magic_code(code) {
        return Err(codes::invalid().into());
    }
    // Guessing attempts each hit a different key; the edge limits their rate.
    let entry = state
        .codes
        .attempt(Kind::MagicLink, &req.ctx.issuer_id, code, 3)
        .await?;
    let expected = state.codes.mac(code, code);
    if !idm_crypto::ct_eq(&entry.mac, &expected)
        || !state
            .codes
            .consume(Kind::MagicLink, &req.ctx.issuer_id, code, &expected)
            .await?
    {
        return Err(codes::invalid().into());
    }
    Ok(Email::parse(&entry.payload)?)
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn send_email_code(state: Arc<State>, req: SendEmailCode) -> Result<Done, Error> {
    if !deliverable(&state, &req.ctx, &req.email).await? {
        return Ok(Done::default());
    }
    let code = idm_crypto::random_digits(6);
    state
        .codes
        .put(
            Kind::EmailCode,
            &req.ctx.issuer_id,
            req.email.canonical(),
            &code,
            req.email.as_str(),
            state.email_code_ttl,
        )
        .await?;
    let minutes = state.email_code_ttl.as_secs() / 60;
    state
        .mail
        .enqueue(&OutgoingMail {
            id: format!("mail_{}", idm_crypto::random_token::<12>()),
            to: req.email.canonical().to_owned(),
            subject: format!("Your sign-in code: {code}"),
            text: format!("Your sign-in code is {code}\n\nIt expires in {minutes} minutes. If you did not ask for it, ignore this message.\n"),
        })
        .await?;
    Ok(Done::default())
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn verify_email_code(
    state: Arc<State>,
    req: VerifyEmailCode,
) -> Result<Authenticated, Error> {
    let started = Instant::now();
    let result = redeem_email_code(&state, &req).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    result?;
    let user = signin::user_for_address(&state, &req.ctx, &req.email, &req.device)
        .await?
        .ok_or_else(codes::invalid)?;
    signin::complete(&state, &req.ctx, user, req.device).await
}

async fn redeem_email_code(state: &State, req: &VerifyEmailCode) -> Result<(), Error> {
    let code = req.code.expose();
    if !six_digits(code) {
        return Err(codes::invalid().into());
    }
    let subject = req.email.canonical();
    let entry = state
        .codes
        .attempt(
            Kind::EmailCode,
            &req.ctx.issuer_id,
            subject,
            state.max_code_attempts,
        )
        .await?;
    let expected = state.codes.mac(subject, code);
    if !idm_crypto::ct_eq(&entry.mac, &expected)
        || !state
            .codes
            .consume(Kind::EmailCode, &req.ctx.issuer_id, subject, &expected)
            .await?
    {
        return Err(codes::invalid().into());
    }
    Ok(())
}
