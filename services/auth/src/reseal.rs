//! Moving TOTP secrets to the current master key after a rotation. They are
//! sealed here but kept in the user's regional store (each issuer's own
//! schema), so the pass walks every region's store a page at a time and
//! writes each secret back re-sealed, compare-and-swap on the old value (a
//! concurrent enrollment or another replica's pass wins). A secret opened
//! under the previous key on a sign-in is re-sealed there and then too.

use crate::{Error, State};
use base64::Engine;
use idm_core::proto::store::{ListSealedTotp, ResealTotp, TotpSlot};
use idm_core::{IssuerId, Region, UserId};
use idm_crypto::keyring::ResealPass;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the pass runs after the one at start-up.
const RESEAL_EVERY: Duration = Duration::from_secs(600);
const PAGE: u32 = 200;

/// Re-seals one stored secret under the current key. `Ok(true)` when it was
/// written; `Ok(false)` when nothing needed doing or it changed meanwhile.
pub async fn reseal_one(
    state: &State,
    issuer: &IssuerId,
    user: &UserId,
    region: Region,
    slot: TotpSlot,
    sealed: &str,
) -> Result<bool, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| idm_core::ApiError::internal_from(&e))?;
    let Some(new) = state
        .master
        .reseal(&bytes, &crate::second_factor::aad(issuer, user))?
    else {
        return Ok(false);
    };
    let reply = state
        .bus
        .send_to(
            region,
            &ResealTotp {
                issuer_id: issuer.clone(),
                user_id: user.clone(),
                slot,
                old_sealed: sealed.to_owned(),
                new_sealed: base64::engine::general_purpose::STANDARD.encode(new),
            },
        )
        .await?;
    Ok(reply.accepted)
}

/// Whether a stored secret is already sealed under the current key (tells
/// without opening it).
fn is_current(state: &State, sealed: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .is_ok_and(|bytes| state.master.is_current(&bytes))
}

/// One pass over one region's sealed secrets.
async fn pass_region(state: &State, region: Region) -> Result<ResealPass, Error> {
    let mut pass = ResealPass::default();
    let mut after = None;
    loop {
        let page = state
            .bus
            .send_to(
                region,
                &ListSealedTotp {
                    after: after.take(),
                    limit: PAGE,
                },
            )
            .await?;
        for row in &page.data {
            for (slot, sealed) in [
                (TotpSlot::Active, &row.active_sealed),
                (TotpSlot::Pending, &row.pending_sealed),
            ] {
                let Some(sealed) = sealed else { continue };
                if is_current(state, sealed) {
                    continue;
                }
                match reseal_one(state, &row.issuer_id, &row.user_id, region, slot, sealed).await {
                    Ok(true) => pass.resealed += 1,
                    // Changed meanwhile: every writer seals under the current key.
                    Ok(false) => {}
                    Err(Error::Crypto(_)) => pass.unreadable += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(pass),
        }
    }
}

/// One pass over every region. `None` when a region's store did not answer
/// (the gauge keeps its last value rather than under-count).
pub async fn pass(state: &State) -> Option<ResealPass> {
    let mut total = ResealPass::default();
    let mut complete = true;
    for region in Region::ALL {
        match pass_region(state, region).await {
            Ok(pass) => total.add(pass),
            Err(e) => {
                complete = false;
                tracing::warn!(%region, error = %e, "TOTP re-seal pass incomplete in a region; retried later");
            }
        }
    }
    complete.then_some(total)
}

/// At start-up, then every [`RESEAL_EVERY`], publishing
/// `idm_sealed_rows_previous_key{service="auth",rows="totp_secrets"}`.
pub fn spawn(state: Arc<State>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RESEAL_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Some(pass) = pass(&state).await {
                pass.publish("auth", "totp_secrets");
            }
        }
    })
}
