//! Changing a password. `set_password` is the one place a password is
//! replaced, so password reset (which proves the address instead of giving a
//! step-up proof) reuses it: the new hash, every other session ended, the
//! event, and the notice to the owner.

use crate::step_up::{self, Changing};
use crate::{notices, Error, State};
use idm_core::proto::auth::{ChangePassword, PasswordChanged};
use idm_core::proto::event::DomainEvent;
use idm_core::proto::store::{self};
use idm_core::proto::{event, session, IssuerContext, SecretText};
use idm_core::{Region, SessionId, UserId};
use std::sync::Arc;

#[tracing::instrument(skip_all, fields(issuer = %req.session.ctx.issuer_id, user = %req.session.user_id))]
pub async fn change_password(
    state: Arc<State>,
    req: ChangePassword,
) -> Result<PasswordChanged, Error> {
    idm_core::text::check_password(req.new_password.expose())?;
    let s = &req.session;
    let credentials = step_up::credentials(&state, s).await?;
    step_up::require(&state, s, &req.step_up, Changing::Password, &credentials).await?;
    let revoked = set_password(
        &state,
        &s.ctx,
        &s.user_id,
        s.region,
        &req.new_password,
        Some(&s.session_id),
    )
    .await?;
    Ok(PasswordChanged {
        changed: true,
        revoked_sessions: revoked,
    })
}

/// Replaces the user's password and ends every session but `keep` (none for
/// a reset). Returns how many sessions were ended.
pub async fn set_password(
    state: &State,
    ctx: &IssuerContext,
    user: &UserId,
    region: Region,
    password: &SecretText,
    keep: Option<&SessionId>,
) -> Result<usize, Error> {
    replace_password(state, ctx, user, region, password, Some(keep)).await
}

/// `set_password`, where `end_sessions: None` leaves every session live (a
/// reset whose caller asked to keep the other sessions).
pub async fn replace_password(
    state: &State,
    ctx: &IssuerContext,
    user: &UserId,
    region: Region,
    password: &SecretText,
    end_sessions: Option<Option<&SessionId>>,
) -> Result<usize, Error> {
    let request = store::SetPassword {
        issuer_id: ctx.issuer_id.clone(),
        user_id: user.clone(),
        password: password.clone(),
    };
    let _ = state.bus.send_to(region, &request).await?;
    let revoked = match end_sessions {
        Some(keep) => end_other_sessions(state, ctx, user, region, keep).await?,
        None => 0,
    };
    state
        .events
        .publish(
            &ctx.issuer_id,
            DomainEvent::PasswordChanged(event::PasswordChanged {
                user_id: user.clone(),
                revoked_sessions: revoked,
            }),
        )
        .await?;
    notices::send_to_user(state, ctx, user, notices::Notice::PasswordChanged).await?;
    Ok(revoked)
}

async fn end_other_sessions(
    state: &State,
    ctx: &IssuerContext,
    user: &UserId,
    region: Region,
    keep: Option<&SessionId>,
) -> Result<usize, Error> {
    let now = idm_core::now();
    let mut ended = 0;
    // Every live session, a page at a time (the list is paginated; a
    // revoked session still anchors the next page).
    let mut page = idm_core::page::Page {
        limit: idm_core::page::MAX_LIMIT,
        starting_after: None,
    };
    loop {
        let list = state
            .bus
            .send(&session::List {
                issuer_id: ctx.issuer_id.clone(),
                user_id: user.clone(),
                region: Some(region),
                page: Some(page.clone()),
            })
            .await?;
        for live in list
            .data
            .iter()
            .filter(|s| s.revoked_at.is_none() && s.expires_at > now && Some(&s.id) != keep)
        {
            let _ = state
                .bus
                .send(&session::Revoke {
                    issuer_id: ctx.issuer_id.clone(),
                    session_id: live.id.clone(),
                    region: Some(region),
                    reason: "password_changed".into(),
                })
                .await?;
            ended += 1;
        }
        match list.data.last() {
            Some(last) if list.has_more => {
                page.starting_after = Some(last.id.as_str().to_owned());
            }
            _ => break,
        }
    }
    Ok(ended)
}
