//! Magic links and email codes. Sending always answers the same way whether
//! or not the address has an account, so neither reveals who is registered.
//! Email codes are judged against the address's failure budget, which a
//! resend does not refill; a magic link (unguessable) is the way past an
//! email-code lock, and a successful one clears it.

use crate::budget::Budget;
use crate::codes::{self, Kind};
use crate::mail::Letter;
use crate::signin::{self, at_least};
use crate::{Error, State};
use base64::Engine;
use idm_core::proto::auth::*;
use idm_core::proto::Done;
use idm_core::{ApiError, Email, IssuerId};
use std::sync::Arc;
use std::time::Instant;

const MAGIC_CODE_LEN: usize = 43;

/// The address a magic link signs in, sealed under a key derived from the
/// master key *and* the link's code: what Redis holds opens only for whoever
/// holds the link.
fn link_sealer(state: &State, code: &str) -> idm_crypto::MasterKeys {
    state
        .master
        .derive_sealing_keys(&format!("idmesh/auth/magic-link/v1/{code}"))
}

fn seal_address(
    state: &State,
    issuer: &IssuerId,
    code: &str,
    email: &Email,
) -> Result<String, Error> {
    let sealed =
        link_sealer(state, code).seal(email.as_str().as_bytes(), issuer.as_str().as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

fn open_address(
    state: &State,
    issuer: &IssuerId,
    code: &str,
    sealed: &str,
) -> Result<Email, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| ApiError::internal_from(&e))?;
    let opened = link_sealer(state, code).open(&bytes, issuer.as_str().as_bytes())?;
    let text = std::str::from_utf8(&opened.plaintext).map_err(|e| ApiError::internal_from(&e))?;
    Ok(Email::parse(text)?)
}

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
    let sealed = seal_address(&state, &req.ctx.issuer_id, &code, &req.email)?;
    state
        .codes
        .put(
            Kind::MagicLink,
            &req.ctx.issuer_id,
            &code,
            &code,
            &sealed,
            state.magic_link_ttl,
        )
        .await?;
    let minutes = state.magic_link_ttl.as_secs() / 60;
    state
        .mail
        .send(
            &req.ctx,
            req.email.canonical(),
            &Letter::MagicLink {
                link: link.to_string(),
                minutes,
            },
        )
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
    // The link proved the address: it is the recovery path of a locked
    // email code for that address.
    state
        .budgets
        .clear(Budget::EmailCode, &req.ctx.issuer_id, email.canonical())
        .await?;
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
    let expected = state.codes.mac_of(&entry, code, code);
    if !idm_crypto::ct_eq(&entry.mac, &expected) || !state.codes.consume(&entry, &expected).await? {
        return Err(codes::invalid().into());
    }
    open_address(state, &req.ctx.issuer_id, code, &entry.payload)
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
            "",
            state.email_code_ttl,
        )
        .await?;
    let minutes = state.email_code_ttl.as_secs() / 60;
    state
        .mail
        .send(
            &req.ctx,
            req.email.canonical(),
            &Letter::EmailCode { code, minutes },
        )
        .await?;
    Ok(Done::default())
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn verify_email_code(
    state: Arc<State>,
    req: VerifyEmailCode,
) -> Result<Authenticated, Error> {
    let started = Instant::now();
    let result = redeem_email_code(&state, &req.ctx, &req.email, req.code.expose()).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    result?;
    let user = signin::user_for_address(&state, &req.ctx, &req.email, &req.device)
        .await?
        .ok_or_else(codes::invalid)?;
    signin::complete(&state, &req.ctx, user, req.device).await
}

/// Uses up the email code of `email`, charged to the address's budget (so a
/// resend buys no new guesses). Also the step-up proof `email_code`.
pub(crate) async fn redeem_email_code(
    state: &State,
    ctx: &idm_core::proto::IssuerContext,
    email: &Email,
    code: &str,
) -> Result<(), Error> {
    if !six_digits(code) {
        return Err(codes::invalid().into());
    }
    let subject = email.canonical();
    let entry = state
        .codes
        .attempt(
            Kind::EmailCode,
            &ctx.issuer_id,
            subject,
            state.max_code_attempts,
        )
        .await?;
    // Charged only once a code exists: nobody can spend the budget of an
    // address that was not mailed a code.
    let charge = state
        .budgets
        .charge(Budget::EmailCode, &ctx.issuer_id, subject)
        .await?;
    let expected = state.codes.mac_of(&entry, subject, code);
    if !idm_crypto::ct_eq(&entry.mac, &expected) {
        state.budgets.failed(charge).await?;
        return Err(codes::invalid().into());
    }
    let won = state.codes.consume(&entry, &expected).await?;
    // The code was right even if another use of it won: not a wrong guess.
    state.budgets.succeeded(charge).await?;
    if won {
        Ok(())
    } else {
        Err(codes::invalid().into())
    }
}
