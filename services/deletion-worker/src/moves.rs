//! The steps of a user move (docs/REGIONS.md "Moving a user"), run by the
//! same cascade as deletions: leased, retried with back-off, each step
//! idempotent so a worker that dies anywhere leaves a job the next one
//! finishes.
//!
//! - `revoke_sessions`, `revoke_personal_tokens`: in the source, through the
//!   session service (the revocation broadcast reaches every edge) and the
//!   source store; the copy then carries them revoked.
//! - `copy`: the target store pulls the user's rows from the source store
//!   and replaces its own copy with them (the rows never pass through this
//!   worker).
//! - `verify`: both stores' row counts and checksums per table must be
//!   equal; otherwise the copy is made again.
//! - `switch_directory`: the directory points at the target, the user is
//!   active again, the evidence says `moved`.
//! - `delete_source`: `purge_user` in the source region.
//! - `emit_user_moved`.

use crate::cascade::StepResult;
use crate::storage::{JobRow, StepRow};
use crate::State;
use idm_core::proto::deletion::store::{PurgeUser, RevokeUserPersonalTokens};
use idm_core::proto::deletion::UserToDelete;
use idm_core::proto::event::{DomainEvent, UserMoved};
use idm_core::proto::moves::directory::SwitchRegion;
use idm_core::proto::moves::store::{CopyUserFrom, DigestUser};
use idm_core::proto::moves::STEPS;
use idm_core::proto::session::RevokeAll;
use idm_core::ApiError;

pub(crate) async fn run_step(state: &State, job: &JobRow, step: &StepRow) -> StepResult {
    let issuer = job.issuer().map_err(ApiError::from)?;
    let user = job.user().map_err(ApiError::from)?;
    let from = job.region().map_err(ApiError::from)?;
    let to = job.target().map_err(ApiError::from)?;
    let move_id = job.move_id().map_err(ApiError::from)?;
    let schema = issuer.store_schema();
    let target = UserToDelete {
        issuer_id: issuer.clone(),
        user_id: user.clone(),
    };
    match step.name.as_str() {
        "revoke_sessions" => {
            let revoked = state
                .bus
                .send(&RevokeAll {
                    issuer_id: issuer,
                    user_id: user,
                    region: Some(from),
                })
                .await?;
            Ok((
                "session service (revocation broadcast to every edge)".to_owned(),
                [(
                    "sessions_revoked".to_owned(),
                    revoked.session_ids.len() as i64,
                )]
                .into(),
            ))
        }
        "revoke_personal_tokens" => {
            let done = state
                .bus
                .send_to(from, &RevokeUserPersonalTokens(target))
                .await?;
            Ok((format!("store {from}, schema {schema}"), done.removed))
        }
        "copy" => {
            let done = state
                .bus
                .send_to(
                    to,
                    &CopyUserFrom {
                        issuer_id: issuer,
                        user_id: user,
                        from,
                    },
                )
                .await?;
            Ok((
                format!("store {from} to store {to}, schema {schema}"),
                done.removed,
            ))
        }
        "verify" => {
            let ask = DigestUser {
                issuer_id: issuer,
                user_id: user,
            };
            let source = state.bus.send_to(from, &ask).await?;
            let copy = state.bus.send_to(to, &ask).await?;
            if source != copy {
                let differing: Vec<&str> = source
                    .tables
                    .keys()
                    .chain(copy.tables.keys())
                    .filter(|t| source.tables.get(*t) != copy.tables.get(*t))
                    .map(String::as_str)
                    .collect();
                return Err(ApiError::conflict(format!(
                    "the copy in {to} differs from {from} in {}; copying again",
                    differing.join(", ")
                )));
            }
            let mut counts: std::collections::BTreeMap<String, i64> = source
                .tables
                .iter()
                .map(|(table, digest)| (table.clone(), digest.rows))
                .collect();
            counts.insert("tables_verified".to_owned(), source.tables.len() as i64);
            Ok((
                format!("stores {from} and {to}: row counts and checksums per table"),
                counts,
            ))
        }
        "switch_directory" => {
            let done = state
                .bus
                .send(&SwitchRegion {
                    issuer_id: issuer,
                    user_id: user,
                    move_id,
                    from,
                    to,
                })
                .await?;
            Ok(("directory".to_owned(), done.removed))
        }
        "delete_source" => {
            let done = state.bus.send_to(from, &PurgeUser(target)).await?;
            Ok((format!("store {from}, schema {schema}"), done.removed))
        }
        "emit_user_moved" => {
            state
                .events
                .publish(
                    &issuer,
                    DomainEvent::UserMoved(UserMoved {
                        user_id: user,
                        move_id,
                        from_region: from,
                        to_region: to,
                    }),
                )
                .await?;
            Ok((
                "EVENTS".to_owned(),
                [("events_emitted".to_owned(), 1)].into(),
            ))
        }
        other => {
            debug_assert!(!STEPS.contains(&other));
            Err(ApiError::internal_from(&format!(
                "unknown move step {other}"
            )))
        }
    }
}
