//! Users (issue 11): password reset by email, removing a password, and the
//! proof of a new address before it replaces the old one.
//!
//! Reset and address-change codes are like magic links: 32 random bytes
//! (43 characters), stored in Redis under a keyed hash of the code, single
//! use, expiring with the magic-link lifetime, a few attempts at most. What
//! the entry holds is sealed under a key derived from the master key and the
//! code itself, so Redis alone never shows whose reset or which new address.

use crate::codes::{self, Kind};
use crate::mail::Letter;
use crate::signin::{self, at_least};
use crate::step_up::{self, Changing};
use crate::{notices, passwords, Error, State};
use base64::Engine;
use idm_core::proto::auth::*;
use idm_core::proto::event::{self, DomainEvent};
use idm_core::proto::user::{self, PendingEmailChange};
use idm_core::proto::{store, Done};
use idm_core::{ApiError, Email, ErrorCode, IssuerId, Region, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Attempts at one code (each code is unguessable; the edge limits guessing).
const MAX_ATTEMPTS: u32 = 3;
const CODE_LEN: usize = 43;

fn well_formed(code: &str) -> bool {
    code.len() == CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a reset or address-change code stands for.
#[derive(Serialize, Deserialize)]
struct Pending {
    user_id: UserId,
    region: Region,
    /// The new address (address changes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

fn sealer(state: &State, kind: &str, code: &str) -> idm_crypto::MasterKeys {
    state
        .master
        .derive_sealing_keys(&format!("idmesh/auth/{kind}/v1/{code}"))
}

fn seal(
    state: &State,
    kind: &str,
    issuer: &IssuerId,
    code: &str,
    pending: &Pending,
) -> Result<String, Error> {
    let plain = serde_json::to_vec(pending).map_err(|e| ApiError::internal_from(&e))?;
    let sealed = sealer(state, kind, code).seal(&plain, issuer.as_str().as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

fn open(
    state: &State,
    kind: &str,
    issuer: &IssuerId,
    code: &str,
    sealed: &str,
) -> Result<Pending, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| ApiError::internal_from(&e))?;
    let opened = sealer(state, kind, code).open(&bytes, issuer.as_str().as_bytes())?;
    Ok(serde_json::from_slice(&opened.plaintext).map_err(|e| ApiError::internal_from(&e))?)
}

/// `redirect_url` with the code appended as `param`.
fn link(redirect_url: Option<&str>, param: &str, code: &str) -> Result<Option<String>, Error> {
    let Some(raw) = redirect_url else {
        return Ok(None);
    };
    let mut url =
        url::Url::parse(raw).map_err(|_| ApiError::validation("redirect_url is not a URL"))?;
    url.query_pairs_mut().append_pair(param, code);
    Ok(Some(url.to_string()))
}

/// Uses up a code of `kind`: `code_invalid` (unknown, wrong, or used by a
/// concurrent request), `code_expired`, `too_many_attempts`.
async fn redeem(
    state: &State,
    kind: Kind,
    sealing: &str,
    issuer: &IssuerId,
    code: &str,
) -> Result<Pending, Error> {
    if !well_formed(code) {
        return Err(codes::invalid().into());
    }
    let entry = state
        .codes
        .attempt(kind, issuer, code, MAX_ATTEMPTS)
        .await?;
    let expected = state.codes.mac_of(&entry, code, code);
    if !idm_crypto::ct_eq(&entry.mac, &expected) || !state.codes.consume(&entry, &expected).await? {
        return Err(codes::invalid().into());
    }
    open(state, sealing, issuer, code, &entry.payload)
}

/// Mails a reset code if the address has an account; the same answer (and
/// no mail) otherwise.
#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn send_password_reset(state: Arc<State>, req: SendPasswordReset) -> Result<Done, Error> {
    let Some(location) = signin::find_user(&state, &req.ctx, &req.email).await? else {
        return Ok(Done::default());
    };
    let code = idm_crypto::random_token::<32>();
    let pending = Pending {
        user_id: location.user_id,
        region: location.region,
        email: None,
    };
    let sealed = seal(
        &state,
        "password-reset",
        &req.ctx.issuer_id,
        &code,
        &pending,
    )?;
    state
        .codes
        .put(
            Kind::PasswordReset,
            &req.ctx.issuer_id,
            &code,
            &code,
            &sealed,
            state.magic_link_ttl,
        )
        .await?;
    let letter = Letter::PasswordReset {
        link: link(req.redirect_url.as_deref(), "idm_reset_code", &code)?,
        code,
        minutes: state.magic_link_ttl.as_secs() / 60,
    };
    state
        .mail
        .send(&req.ctx, req.email.canonical(), &letter)
        .await?;
    Ok(Done::default())
}

/// The code proves the address: it counts as the address's proof (as a
/// magic link would), the new password replaces the old one, the other
/// sessions end unless asked otherwise, and a sign-in completes (a user
/// with TOTP still needs the second factor: `mfa_required`).
#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn confirm_password_reset(
    state: Arc<State>,
    req: ConfirmPasswordReset,
) -> Result<Authenticated, Error> {
    // A weak password is refused before the code is used up.
    idm_core::text::check_password(req.new_password.expose())?;
    let started = Instant::now();
    let redeemed = redeem(
        &state,
        Kind::PasswordReset,
        "password-reset",
        &req.ctx.issuer_id,
        req.code.expose(),
    )
    .await;
    if redeemed.is_err() {
        at_least(started, state.min_verify).await;
    }
    let pending = redeemed?;
    let owner = signin::get_user(&state, &req.ctx, pending.user_id).await?;
    let email = Email::parse(&owner.email)?;
    let user = signin::user_for_address(&state, &req.ctx, &email, &req.device)
        .await?
        .ok_or_else(codes::invalid)?;
    let end_sessions = req.revoke_other_sessions.then_some(None);
    passwords::replace_password(
        &state,
        &req.ctx,
        &user.id,
        user.region,
        &req.new_password,
        end_sessions,
    )
    .await?;
    signin::complete(&state, &req.ctx, user, req.device).await
}

/// Removes the password with a step-up proof, while another way to sign in
/// remains (a verified address).
#[tracing::instrument(skip_all, fields(issuer = %req.0.session.ctx.issuer_id, user = %req.0.session.user_id))]
pub async fn remove_password(
    state: Arc<State>,
    req: RemovePassword,
) -> Result<PasswordChanged, Error> {
    let SteppedUp { session, step_up } = req.0;
    let credentials = step_up::credentials(&state, &session).await?;
    if !credentials.has_password {
        return Err(ApiError::conflict("the user has no password").into());
    }
    if !credentials.email_verified {
        return Err(ApiError::conflict(
            "the password is the only way to sign in: verify the address first (magic link or email code)",
        )
        .into());
    }
    step_up::require(&state, &session, &step_up, Changing::Password, &credentials).await?;
    let request = store::RemovePassword(store::GetUser {
        issuer_id: session.ctx.issuer_id.clone(),
        user_id: session.user_id.clone(),
    });
    let _ = state.bus.send_to(session.region, &request).await?;
    state
        .events
        .publish(
            &session.ctx.issuer_id,
            DomainEvent::PasswordChanged(event::PasswordChanged {
                user_id: session.user_id.clone(),
                revoked_sessions: 0,
            }),
        )
        .await?;
    notices::send_to_user(
        &state,
        &session.ctx,
        &session.user_id,
        notices::Notice::PasswordRemoved,
    )
    .await?;
    Ok(PasswordChanged {
        changed: true,
        revoked_sessions: 0,
    })
}

/// Mails a confirmation code to the new address (the user service checked
/// it is free in the issuer).
#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id, user = %req.user_id))]
pub async fn start_email_change(
    state: Arc<State>,
    req: StartEmailChange,
) -> Result<PendingEmailChange, Error> {
    let code = idm_crypto::random_token::<32>();
    let pending = Pending {
        user_id: req.user_id,
        region: req.region,
        email: Some(req.email.as_str().to_owned()),
    };
    let sealed = seal(&state, "email-change", &req.ctx.issuer_id, &code, &pending)?;
    state
        .codes
        .put(
            Kind::EmailChange,
            &req.ctx.issuer_id,
            &code,
            &code,
            &sealed,
            state.magic_link_ttl,
        )
        .await?;
    let letter = Letter::EmailChange {
        link: link(req.redirect_url.as_deref(), "idm_email_change_code", &code)?,
        code,
        minutes: state.magic_link_ttl.as_secs() / 60,
    };
    state
        .mail
        .send(&req.ctx, req.email.canonical(), &letter)
        .await?;
    Ok(PendingEmailChange {
        status: "pending".into(),
        expires_at: idm_core::now() + state.magic_link_ttl,
    })
}

/// The code mailed to the new address: the change is applied (blind index
/// and store together, see the user service), or `conflict` if the address
/// was taken meanwhile.
#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id))]
pub async fn confirm_email_change(
    state: Arc<State>,
    req: ConfirmEmailChange,
) -> Result<user::User, Error> {
    let started = Instant::now();
    let redeemed = redeem(
        &state,
        Kind::EmailChange,
        "email-change",
        &req.ctx.issuer_id,
        req.code.expose(),
    )
    .await;
    if redeemed.is_err() {
        at_least(started, state.min_verify).await;
    }
    let pending = redeemed?;
    let email = pending
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()?
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "an address change without address"))?;
    let before = signin::get_user(&state, &req.ctx, pending.user_id.clone()).await?;
    let changed = state
        .bus
        .send(&user::ApplyEmailChange {
            issuer_id: req.ctx.issuer_id.clone(),
            user_id: pending.user_id,
            email,
        })
        .await?;
    // The old address hears of it (it no longer reaches the account).
    notices::send(
        &state,
        &req.ctx,
        &before.email,
        notices::Notice::EmailChanged,
    )
    .await?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked_before_any_lookup() {
        assert!(well_formed(&idm_crypto::random_token::<32>()));
        assert!(!well_formed("short"));
        assert!(!well_formed(&"a".repeat(42)));
        assert!(!well_formed(&format!("{}!", "a".repeat(42))));
    }

    #[test]
    fn the_link_carries_the_code() {
        let url = link(
            Some("https://app.example.com/reset?x=1"),
            "idm_reset_code",
            "abc",
        )
        .ok()
        .flatten();
        assert_eq!(
            url.as_deref(),
            Some("https://app.example.com/reset?x=1&idm_reset_code=abc")
        );
        assert!(matches!(link(None, "p", "c"), Ok(None)));
    }
}
