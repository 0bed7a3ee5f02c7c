//! The cascade: a durable pull consumer (`cascade`) on the `DELETIONS` work
//! queue. Each delivery leases its job, runs the remaining steps in order,
//! and settles the message: acknowledged when every step succeeded,
//! negatively acknowledged with an exponential, jittered back-off when one
//! failed (JetStream hands it back after the delay, to this worker or
//! another). While a step runs, progress is reported, so the message stays
//! with this worker; a worker that dies stops reporting, and the message is
//! redelivered after the ack wait (its lease lapses at the same time).

use crate::queue::JobMessage;
use crate::storage::{self, JobRow, StepRow};
use crate::{Error, State};
use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use idm_core::proto::deletion::account::ForgetAuditNetworks;
use idm_core::proto::deletion::auth::ForgetUser;
use idm_core::proto::deletion::directory::{PurgeDirectoryEntry, RemoveUserMemberships};
use idm_core::proto::deletion::store::{PurgeUser, RevokeUserPersonalTokens};
use idm_core::proto::deletion::{UserToDelete, STEPS};
use idm_core::proto::event::{
    DomainEvent, UserDeleted, UserDeletionStalled, UserDeletionStepCompleted,
};
use idm_core::proto::session::RevokeAll;
use idm_core::{metric, ApiError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const CONSUMER: &str = "cascade";
/// Jobs pulled ahead of running them.
const PULL_BATCH: usize = 4;
/// One step's call may not hold the job longer than this.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

/// The delay before retry number `attempts` (1 = after the first failure):
/// `base` doubling up to `max`, then between half and all of it (jitter, so
/// jobs failing on the same outage do not retry in lockstep).
pub fn backoff(attempts: i32, base: Duration, max: Duration) -> Duration {
    let exponent = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let full = base.saturating_mul(2u32.saturating_pow(exponent)).min(max);
    let [a, b] = idm_crypto::random_bytes::<2>();
    let fraction = f64::from(u16::from_le_bytes([a, b])) / f64::from(u16::MAX);
    full.mul_f64(0.5 + fraction / 2.0)
}

pub async fn spawn(
    state: Arc<State>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, idm_bus::BusError> {
    let subscribe_error = |e: &dyn std::fmt::Display| idm_bus::BusError::Subscribe {
        subject: state.queue.stream.clone(),
        reason: e.to_string(),
    };
    let stream = state
        .queue
        .js
        .get_stream(&state.queue.stream)
        .await
        .map_err(|e| subscribe_error(&e))?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: state.config.ack_wait,
            ..Default::default()
        })
        .await
        .map_err(|e| subscribe_error(&e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .messages()
        .await
        .map_err(|e| subscribe_error(&e))?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = messages.next() => match next {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "deletion queue read failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    None => break,
                },
            };
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let span = tracing::info_span!(
                "deletion.run",
                otel.kind = "consumer",
                service = "deletion-worker",
                deletion = tracing::field::Empty,
                delivery = delivered,
                request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            let ctx = idm_bus::RequestContext::from_headers_in(&span, message.headers.as_ref());
            let state = Arc::clone(&state);
            // Jobs run side by side: one stuck on an outage does not hold
            // the others back.
            tokio::spawn(ctx.scope(settle(state, message, shutdown.clone()).instrument(span)));
        }
    }))
}

/// Runs one delivery and settles its message.
async fn settle(
    state: Arc<State>,
    message: async_nats::jetstream::Message,
    shutdown: CancellationToken,
) {
    let job: JobMessage = match serde_json::from_slice(&message.payload) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(error = %e, "dropping a deletion message that does not parse");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    tracing::Span::current().record("deletion", job.job_id.as_str());
    let outcome = {
        let run = attempt(&state, &job);
        tokio::pin!(run);
        let mut progress = tokio::time::interval(state.config.ack_wait / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                // Stopping: the attempt is abandoned unsettled, as a crash
                // would; the message comes back after the ack wait, when
                // the lease has lapsed too.
                _ = shutdown.cancelled() => return,
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                    let _ = storage::renew(&state.db, job.job_id.as_str(), state.config.ack_wait).await;
                }
            }
        }
    };
    match outcome {
        Ok(Outcome::Done) => {
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "job finished but its message was not acknowledged; a redelivery finds it finished");
            }
        }
        Ok(Outcome::Retry(delay)) => {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        }
        // A failpoint (tests): behave as a worker that died here, leaving
        // the message unsettled and the lease held until they lapse.
        Ok(Outcome::Crashed) => {}
        Err(e) => {
            // The job's own state could not be read or written (the
            // deletion database is down): try again later.
            let delay = state.config.retry_max;
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "deletion attempt could not run");
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        }
    }
}

enum Outcome {
    /// Finished (now or before), or unknown: the message is done.
    Done,
    /// Deliver again after this delay.
    Retry(Duration),
    /// A failpoint stopped the attempt as a crash would (tests only).
    Crashed,
}

async fn attempt(state: &State, job: &JobMessage) -> Result<Outcome, Error> {
    let Some(row) = storage::lease(&state.db, &job.job_id, state.config.ack_wait).await? else {
        return Ok(match storage::job(&state.db, &job.job_id, None).await? {
            Some(row) if row.status != "completed" => {
                // Another worker holds it (a duplicate message): look again
                // once its lease would have lapsed.
                Outcome::Retry(state.config.ack_wait)
            }
            _ => Outcome::Done,
        });
    };
    let outcome = run_steps(state, &row).await;
    if matches!(outcome, Ok(Outcome::Crashed)) {
        return outcome;
    }
    storage::release(&state.db, &row.id).await?;
    outcome
}

async fn run_steps(state: &State, job: &JobRow) -> Result<Outcome, Error> {
    let steps = storage::steps(&state.db, &job.id).await?;
    for step in steps.iter().filter(|s| s.status != "completed") {
        let run = async {
            if job.is_move() {
                crate::moves::run_step(state, job, step).await
            } else {
                run_step(state, job, step).await
            }
        };
        let result = tokio::time::timeout(STEP_DEADLINE, run)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::upstream(format!(
                    "no answer within {} s",
                    STEP_DEADLINE.as_secs()
                )))
            });
        match result {
            Ok((location, removed)) => {
                metrics::counter!(metric::DELETION_STEPS.name, "step" => step.name.clone(), "outcome" => "done")
                    .increment(1);
                tracing::info!(step = %step.name, attempts = step.attempts + 1, kind = %job.kind, "step done");
                if crate::failpoint::take(&job.user_id, &step.name) {
                    tracing::warn!(step = %step.name, "failpoint: the worker stops as if it crashed after this step, before recording it");
                    return Ok(Outcome::Crashed);
                }
                // Announced before it is recorded: a worker that dies in
                // between repeats the step and the announcement (at least
                // once), never neither.
                if !job.is_move() {
                    announce_step(state, job, &step.name).await;
                }
                storage::step_succeeded(&state.db, &job.id, step.position, &location, &removed)
                    .await?;
                if step.status == "failing" {
                    storage::unstall(&state.db, &job.id).await?;
                }
            }
            Err(e) => {
                // The code and message only: they name ids, never data.
                let error = format!("{}: {}", e.code.as_str(), e.message);
                // A copy that does not verify is made again on the retry.
                if job.is_move() && step.name == "verify" && e.code == idm_core::ErrorCode::Conflict
                {
                    storage::redo_step(&state.db, &job.id, "copy").await?;
                }
                let (attempts, failing_for) =
                    storage::step_failed(&state.db, &job.id, step.position, &error).await?;
                let delay = backoff(attempts, state.config.retry_base, state.config.retry_max);
                metrics::counter!(metric::DELETION_STEPS.name, "step" => step.name.clone(), "outcome" => "failed")
                    .increment(1);
                metrics::counter!(metric::DELETION_STEP_RETRIES.name, "step" => step.name.clone())
                    .increment(1);
                tracing::warn!(step = %step.name, attempts, error = %error,
                    retry_in_ms = delay.as_millis() as u64, "deletion step failed; will retry");
                if failing_for >= state.config.stall_after && job.status == "running" {
                    if job.is_move() {
                        if storage::mark_stalled(&state.db, &job.id).await? {
                            tracing::error!(move_id = %job.id, step = %step.name, attempts, "user move stalled; still retrying");
                        }
                    } else {
                        stall(state, job, &step.name, attempts).await;
                    }
                }
                return Ok(Outcome::Retry(delay));
            }
        }
    }
    if job.is_move() {
        storage::complete_move(&state.db, &job.id).await?;
        tracing::info!(move_id = %job.id, "user move completed");
        return Ok(Outcome::Done);
    }
    let steps = storage::steps(&state.db, &job.id).await?;
    let receipt = storage::receipt(job, &steps, idm_core::now())?;
    storage::complete(&state.db, &job.id, &receipt).await?;
    tracing::info!(deletion = %job.id, "user deletion completed");
    Ok(Outcome::Done)
}

/// `user.deletion_stalled`'s sibling for the audit log: one step done.
async fn announce_step(state: &State, job: &JobRow, step: &str) {
    let event = (|| {
        Ok::<_, Error>((
            job.issuer()?,
            DomainEvent::UserDeletionStepCompleted(UserDeletionStepCompleted {
                user_id: job.user()?,
                deletion_id: job.deletion_id()?,
                step: step.to_owned(),
            }),
        ))
    })();
    let published = match event {
        Ok((issuer, event)) => state
            .events
            .publish(&issuer, event)
            .await
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = published {
        tracing::warn!(error = %e, %step, "deletion step not announced to the audit log");
    }
}

/// Surfaces a step that keeps failing: the job shows `stalled` and
/// `user.deletion_stalled` is emitted (once); retries go on.
async fn stall(state: &State, job: &JobRow, step: &str, attempts: i32) {
    let event = (|| {
        Ok::<_, Error>(DomainEvent::UserDeletionStalled(UserDeletionStalled {
            user_id: job.user()?,
            deletion_id: job.deletion_id()?,
            step: step.to_owned(),
            attempts,
        }))
    })();
    let published = match (event, job.issuer()) {
        (Ok(event), Ok(issuer)) => state
            .events
            .publish(&issuer, event)
            .await
            .map_err(Error::from),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match published {
        Ok(_) => match storage::mark_stalled(&state.db, &job.id).await {
            Ok(_) => {
                tracing::error!(deletion = %job.id, %step, attempts, "deletion stalled; still retrying")
            }
            Err(e) => tracing::warn!(error = %e, "stall not recorded; next failure tries again"),
        },
        Err(e) => tracing::warn!(error = %e, "stall not announced; next failure tries again"),
    }
}

pub(crate) type StepResult = Result<(String, BTreeMap<String, i64>), ApiError>;

async fn run_step(state: &State, job: &JobRow, step: &StepRow) -> StepResult {
    let issuer = job.issuer().map_err(ApiError::from)?;
    let user = job.user().map_err(ApiError::from)?;
    let region = job.region().map_err(ApiError::from)?;
    let target = UserToDelete {
        issuer_id: issuer.clone(),
        user_id: user.clone(),
    };
    let schema = issuer.store_schema();
    match step.name.as_str() {
        "revoke_sessions" => {
            // Through the session service: its revocation broadcast reaches
            // every edge replica.
            let revoked = state
                .bus
                .send(&RevokeAll {
                    issuer_id: issuer,
                    user_id: user,
                    region: Some(region),
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
                .send_to(region, &RevokeUserPersonalTokens(target))
                .await?;
            Ok((format!("store {region}, schema {schema}"), done.removed))
        }
        "remove_memberships" => {
            let done = state.bus.send(&RemoveUserMemberships(target)).await?;
            Ok(("directory (organizations)".to_owned(), done.removed))
        }
        "delete_regional_data" => {
            let done = state.bus.send_to(region, &PurgeUser(target)).await?;
            Ok((format!("store {region}, schema {schema}"), done.removed))
        }
        "delete_directory_entries" => {
            // Auth's Redis keys first: while the directory row exists a
            // retry still finds the user's issuer and id there.
            let mut removed = state.bus.send(&ForgetUser(target.clone())).await?.removed;
            // The audit log keeps its rows (ids only) but not the networks
            // they came from: personal data outside the region.
            let audit = state.bus.send(&ForgetAuditNetworks(target.clone())).await?;
            removed.extend(audit.removed);
            let done = state.bus.send(&PurgeDirectoryEntry(target)).await?;
            removed.extend(done.removed);
            Ok((
                "directory, auth's Redis keys and the audit log's networks".to_owned(),
                removed,
            ))
        }
        "emit_user_deleted" => {
            let deletion_id = job.deletion_id().map_err(ApiError::from)?;
            state
                .events
                .publish(
                    &issuer,
                    DomainEvent::UserDeleted(UserDeleted {
                        user_id: user,
                        deletion_id,
                        region,
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
                "unknown deletion step {other}"
            )))
        }
    }
}

/// Queues again the unfinished jobs nobody has touched for a while (a
/// message lost before the stream stored it), at start and then every
/// minute. A job whose message is only waiting out its back-off is not
/// idle for that long.
pub fn spawn_sweeper(
    state: Arc<State>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let idle = state.config.retry_max + state.config.ack_wait * 4;
        let mut every = tokio::time::interval(Duration::from_secs(60).min(idle));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            match storage::stalled_jobs(&state.db).await {
                Ok(n) => metrics::gauge!(metric::DELETION_JOBS_STALLED.name).set(n as f64),
                Err(e) => tracing::warn!(error = %e, "stalled deletion jobs not counted"),
            }
            let jobs = match storage::idle_jobs(&state.db, idle).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "deletion sweep could not read jobs");
                    continue;
                }
            };
            for id in jobs {
                let round = format!("sweep-{}", idm_core::now().unix_timestamp());
                match state.queue.enqueue(&id, &round).await {
                    Ok(()) => {
                        tracing::info!(deletion = %id, "idle deletion job queued again");
                        let _ = storage::release(&state.db, &id).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "idle deletion job not queued"),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half_to_all() {
        let (base, max) = (Duration::from_millis(500), Duration::from_secs(60));
        for (attempts, full) in [(1, 500), (2, 1_000), (3, 2_000), (8, 60_000), (50, 60_000)] {
            for _ in 0..20 {
                let delay = backoff(attempts, base, max).as_millis();
                assert!(
                    delay >= full / 2 && delay <= full,
                    "attempt {attempts}: {delay} ms outside {}..={full}",
                    full / 2
                );
            }
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| backoff(8, base, max).as_millis()).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
