//! Failure budgets per subject: how many times a factor may be guessed wrong,
//! across every token, resend and replica. A TOTP budget belongs to the user,
//! an email-code or verification budget to the address; minting a new MFA
//! token or mailing a new code never refills it.
//!
//! Every attempt is charged *before* it is checked, in one Redis script, so
//! parallel guesses cannot slip past the limit: attempts beyond it are
//! refused without being checked. The first `backoff_after` failures are
//! free; after that each attempt must wait (`backoff`, doubling with each
//! further failure; `too_many_attempts` with `Retry-After`); at `lock_after`
//! the factor is locked (`factor_locked`). A success clears the budget.
//!
//! Redis is not the only copy: each failure is also written to the ledger
//! (Postgres), and when Redis comes back empty (the issuer's `loaded` marker
//! is gone) the issuer's budgets are rebuilt from the ledger before any
//! attempt is judged. See docs/SECURITY.md for the thresholds, the recovery
//! paths and why the paths that stay open are safe.

use crate::ledger;
use idm_cache::Connection;
use idm_core::clock::Clock;
use idm_core::{ApiError, ErrorCode, IssuerId};
use idm_db::Db;
use std::time::Duration;

/// What a budget protects; each has its own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// TOTP codes of one user (sign-in and step-up).
    Totp,
    /// Email sign-in codes sent to one address.
    EmailCode,
    /// Verification API codes sent to one address.
    Verification,
}

impl Budget {
    pub fn tag(self) -> &'static str {
        match self {
            Budget::Totp => "totp",
            Budget::EmailCode => "emailcode",
            Budget::Verification => "verification",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        [Budget::Totp, Budget::EmailCode, Budget::Verification]
            .into_iter()
            .find(|b| b.tag() == tag)
    }

    /// A TOTP lock lasts until a backup code or an operator clears it: its
    /// user has other ways in. An address lock ends when the failure memory
    /// passes, because for some users a code is the only way in.
    fn locked_until_recovery(self) -> bool {
        matches!(self, Budget::Totp)
    }
}

/// The thresholds (`AUTH_FACTOR_*`, `AUTH_FAILURE_MEMORY_SECONDS`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures that cost nothing but the minimum response time.
    pub backoff_after: u32,
    /// Failures at which the factor locks.
    pub lock_after: u32,
    /// The wait after the `backoff_after`-th failure; each later failure
    /// doubles it.
    pub backoff: Duration,
    /// The longest wait between attempts once backing off.
    pub max_backoff: Duration,
    /// How long failures are remembered after the last one (and how long an
    /// address lock lasts).
    pub memory: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            backoff_after: 5,
            lock_after: 10,
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(900),
            memory: Duration::from_secs(24 * 3600),
        }
    }
}

/// A charged attempt: settle it with `failed` or `succeeded`.
#[must_use]
pub struct Charge {
    budget: Budget,
    issuer: IssuerId,
    subject_hash: String,
    /// Failures counted so far, this attempt included.
    failures: u32,
    /// This attempt is the one that locks the factor if it fails.
    pub locks_on_failure: bool,
}

pub struct Budgets {
    redis: Connection,
    db: Db,
    prefix: String,
    /// Current first, then the previous master key's, during a rotation.
    subject_keys: Vec<zeroize::Zeroizing<[u8; 32]>>,
    clock: Clock,
    limits: Limits,
    reloading: tokio::sync::Mutex<()>,
}

// KEYS: budget hash, loaded marker. ARGV: now, backoff_after, lock_after,
// max backoff seconds, memory seconds, locked until recovery (1/0), backoff
// seconds.
// Returns {0} reload first · {1, failures} charged · {2, failures} locked ·
// {3, seconds} back off.
const CHARGE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, 0} end
local now = tonumber(ARGV[1])
local forget = tonumber(redis.call('HGET', KEYS[1], 'forget') or '0')
if forget > 0 and now >= forget then redis.call('DEL', KEYS[1]) end
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
if redis.call('HGET', KEYS[1], 'locked') == '1' then return {2, f} end
local nxt = tonumber(redis.call('HGET', KEYS[1], 'next') or '0')
if now < nxt then return {3, nxt - now} end
f = f + 1
redis.call('HSET', KEYS[1], 'f', f)
if f >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'next', now + math.min(tonumber(ARGV[7]) * 2 ^ (f - tonumber(ARGV[2])), tonumber(ARGV[4])))
end
local locked = f >= tonumber(ARGV[3])
if locked then redis.call('HSET', KEYS[1], 'locked', '1') end
if locked and ARGV[6] == '1' then
  redis.call('HDEL', KEYS[1], 'forget')
  redis.call('PERSIST', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'forget', now + tonumber(ARGV[5]))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
end
return {1, f}
";

// Rebuilds one budget from its ledger row without lowering what Redis has.
// KEYS: budget hash. ARGV: failures, locked (1/0), forget (0 = never), now,
// backoff_after, max backoff seconds, backoff seconds.
const SEED: &str = r"
local now = tonumber(ARGV[4])
local f = math.max(tonumber(redis.call('HGET', KEYS[1], 'f') or '0'), tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'f', f)
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'locked', '1') end
if f >= tonumber(ARGV[5]) then
  local nxt = now + math.min(tonumber(ARGV[7]) * 2 ^ (f - tonumber(ARGV[5])), tonumber(ARGV[6]))
  if nxt > tonumber(redis.call('HGET', KEYS[1], 'next') or '0') then redis.call('HSET', KEYS[1], 'next', nxt) end
end
if ARGV[3] == '0' then
  redis.call('HDEL', KEYS[1], 'forget')
  redis.call('PERSIST', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'forget', ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.max(1, tonumber(ARGV[3]) - now))
end
return f
";

// Moves a subject's state from its hash under the previous master key
// (KEYS[2]) to its hash under the current one (KEYS[1]), keeping the worse
// of the two: the higher count, a lock, the later back-off, no expiry for a
// persisted lock. 1 if there was anything to move.
const MERGE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('RENAME', KEYS[2], KEYS[1]) return 1 end
local f = math.max(tonumber(redis.call('HGET', KEYS[1], 'f') or '0'), tonumber(redis.call('HGET', KEYS[2], 'f') or '0'))
redis.call('HSET', KEYS[1], 'f', f)
if redis.call('HGET', KEYS[2], 'locked') == '1' then redis.call('HSET', KEYS[1], 'locked', '1') end
local nxt = math.max(tonumber(redis.call('HGET', KEYS[1], 'next') or '0'), tonumber(redis.call('HGET', KEYS[2], 'next') or '0'))
if nxt > 0 then redis.call('HSET', KEYS[1], 'next', nxt) end
if redis.call('TTL', KEYS[2]) == -1 then
  redis.call('HDEL', KEYS[1], 'forget')
  redis.call('PERSIST', KEYS[1])
end
redis.call('DEL', KEYS[2])
return 1
";

fn redis_down(e: redis::RedisError) -> ApiError {
    ApiError::upstream(format!("failure budgets unavailable: {e}"))
}

pub fn locked() -> ApiError {
    ApiError::new(
        ErrorCode::FactorLocked,
        "too many failed attempts: this factor is locked until a recovery path clears it",
    )
}

impl Budgets {
    pub fn new(
        redis: Connection,
        db: Db,
        prefix: String,
        master: &idm_crypto::MasterKeys,
        clock: Clock,
        limits: Limits,
    ) -> Self {
        Self {
            redis,
            db,
            prefix,
            subject_keys: master.derive_all("idmesh/auth/failure-budget-subject/v1"),
            clock,
            limits,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The keyed hash naming `subject` (a user id, or a canonical address).
    /// The subject's hash under every configured master key, current first.
    fn subject_hashes(&self, budget: Budget, issuer: &IssuerId, subject: &str) -> Vec<String> {
        self.subject_keys
            .iter()
            .map(|key| {
                hex::encode(idm_crypto::hmac_sha256(
                    key.as_ref(),
                    format!("{}\u{0}{issuer}\u{0}{subject}", budget.tag()).as_bytes(),
                ))
            })
            .collect()
    }

    /// During a master-key rotation: moves what the subject's budget holds
    /// under its hash by the previous key (in Redis and in the ledger) to
    /// its hash by the current key, so counts and locks survive the
    /// rotation. Nothing to do (one Redis round trip) once moved.
    async fn carry_over(
        &self,
        budget: Budget,
        issuer: &IssuerId,
        hashes: &[String],
    ) -> Result<(), ApiError> {
        let Some((current, older)) = hashes.split_first() else {
            return Ok(());
        };
        for old in older {
            let mut redis = self.redis.clone();
            let moved: i64 = redis::Script::new(MERGE)
                .key(self.key(budget.tag(), issuer.as_str(), current))
                .key(self.key(budget.tag(), issuer.as_str(), old))
                .invoke_async(&mut redis)
                .await
                .map_err(redis_down)?;
            if moved == 1 {
                ledger::rekey(&self.db, issuer, budget.tag(), old, current).await?;
                metrics::counter!("idm_auth_budget_rekeyed_total", "budget" => budget.tag())
                    .increment(1);
            }
        }
        Ok(())
    }

    /// `<prefix>budget:{<issuer>}:<budget>:<subject>`: an issuer's budgets
    /// and its marker share a hash tag, so on a Redis Cluster the charge
    /// script's two keys sit on one node, and a node that comes back empty
    /// loses the marker together with the budgets it held.
    fn key(&self, budget: &str, issuer: &str, subject_hash: &str) -> String {
        idm_cache::tagged(
            &format!("{}budget:", self.prefix),
            issuer,
            &format!(":{budget}:{subject_hash}"),
        )
    }

    /// Set once `issuer`'s budgets were rebuilt from the ledger.
    fn marker(&self, issuer: &str) -> String {
        idm_cache::tagged(&format!("{}budget:", self.prefix), issuer, ":loaded")
    }

    /// Charges one attempt at `subject`, or refuses it: `factor_locked`, or
    /// `too_many_attempts` with `retry_after` while backing off.
    pub async fn charge(
        &self,
        budget: Budget,
        issuer: &IssuerId,
        subject: &str,
    ) -> Result<Charge, ApiError> {
        let hashes = self.subject_hashes(budget, issuer, subject);
        let subject_hash = hashes.first().cloned().unwrap_or_default();
        let key = self.key(budget.tag(), issuer.as_str(), &subject_hash);
        for _ in 0..2 {
            if hashes.len() > 1 {
                self.carry_over(budget, issuer, &hashes).await?;
            }
            let mut redis = self.redis.clone();
            let (status, value): (i64, i64) = redis::Script::new(CHARGE)
                .key(&key)
                .key(self.marker(issuer.as_str()))
                .arg(self.clock.unix())
                .arg(self.limits.backoff_after)
                .arg(self.limits.lock_after)
                .arg(self.limits.max_backoff.as_secs())
                .arg(self.limits.memory.as_secs())
                .arg(if budget.locked_until_recovery() { 1 } else { 0 })
                .arg(self.limits.backoff.as_secs())
                .invoke_async(&mut redis)
                .await
                .map_err(redis_down)?;
            match status {
                0 => self.reload(issuer).await?,
                1 => {
                    let failures = u32::try_from(value).unwrap_or(u32::MAX);
                    metrics::counter!("idm_auth_budget_charged_total", "budget" => budget.tag())
                        .increment(1);
                    return Ok(Charge {
                        budget,
                        issuer: issuer.clone(),
                        subject_hash,
                        failures,
                        locks_on_failure: failures >= self.limits.lock_after,
                    });
                }
                2 => {
                    metrics::counter!("idm_auth_budget_refused_total", "budget" => budget.tag(), "why" => "locked").increment(1);
                    return Err(locked());
                }
                _ => {
                    metrics::counter!("idm_auth_budget_refused_total", "budget" => budget.tag(), "why" => "backoff").increment(1);
                    return Err(ApiError::new(
                        ErrorCode::TooManyAttempts,
                        "too many failed attempts: wait before trying again",
                    )
                    .with_details(serde_json::json!({ "retry_after": value.max(1) })));
                }
            }
        }
        Err(ApiError::upstream(
            "failure budgets could not be loaded into Redis",
        ))
    }

    /// The attempt failed: the count already stands in Redis; make it durable.
    pub async fn failed(&self, charge: Charge) -> Result<(), ApiError> {
        let forget_at = if charge.locks_on_failure && charge.budget.locked_until_recovery() {
            None
        } else {
            Some(self.clock.unix() + self.limits.memory.as_secs() as i64)
        };
        if charge.locks_on_failure {
            tracing::warn!(budget = charge.budget.tag(), issuer = %charge.issuer, "factor locked after repeated failures");
            metrics::counter!("idm_auth_factor_locked_total", "budget" => charge.budget.tag())
                .increment(1);
        }
        ledger::record(
            &self.db,
            &ledger::Row {
                issuer_id: charge.issuer.to_string(),
                budget: charge.budget.tag().to_owned(),
                subject_hash: charge.subject_hash,
                failures: charge.failures,
                locked: charge.locks_on_failure,
                forget_at,
            },
        )
        .await
    }

    /// The attempt succeeded: the subject starts afresh.
    pub async fn succeeded(&self, charge: Charge) -> Result<(), ApiError> {
        let key = self.key(
            charge.budget.tag(),
            charge.issuer.as_str(),
            &charge.subject_hash,
        );
        let mut redis = self.redis.clone();
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut redis)
            .await
            .map_err(redis_down)?;
        // Only a subject that had failed before can have a ledger row.
        if charge.failures > 1 {
            ledger::clear(
                &self.db,
                &charge.issuer,
                charge.budget.tag(),
                &charge.subject_hash,
            )
            .await?;
        }
        Ok(())
    }

    /// A recovery path (backup code, magic link, operator) clears `subject`'s
    /// budget and lock. `true` if there was anything to clear.
    pub async fn clear(
        &self,
        budget: Budget,
        issuer: &IssuerId,
        subject: &str,
    ) -> Result<bool, ApiError> {
        // Under every configured key: a recovery clears a lock recorded
        // before a master-key rotation too.
        let mut cleared = false;
        for subject_hash in self.subject_hashes(budget, issuer, subject) {
            let key = self.key(budget.tag(), issuer.as_str(), &subject_hash);
            let mut redis = self.redis.clone();
            let in_redis: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .map_err(redis_down)?;
            let in_ledger = ledger::clear(&self.db, issuer, budget.tag(), &subject_hash).await?;
            cleared |= in_redis > 0 || in_ledger;
        }
        Ok(cleared)
    }

    /// Prunes the ledger of rows past their time, once an hour, until
    /// `shutdown`.
    pub fn spawn_pruning(
        self: &std::sync::Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let budgets = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                match ledger::prune(&budgets.db, budgets.clock.unix()).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "failure ledger pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "failure ledger not pruned"),
                }
            }
        })
    }

    /// Rebuilds every budget of `issuer` that still counts from the ledger,
    /// then marks the issuer as loaded. Replicas may do this at once:
    /// seeding never lowers a count, so the result is the same. Per issuer,
    /// so an emptied Redis (or one emptied cluster node) costs each issuer
    /// one indexed read on its next charge, not one read of every row.
    async fn reload(&self, issuer: &IssuerId) -> Result<(), ApiError> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut redis = self.redis.clone();
        let marked: bool = redis::cmd("EXISTS")
            .arg(self.marker(issuer.as_str()))
            .query_async(&mut redis)
            .await
            .map_err(redis_down)?;
        if marked {
            return Ok(());
        }
        let now = self.clock.unix();
        let rows = ledger::active(&self.db, issuer, now).await?;
        for row in &rows {
            let Some(budget) = Budget::from_tag(&row.budget) else {
                // Written by a newer version: keep it, but it cannot be ours.
                tracing::warn!(budget = %row.budget, "unknown budget in the failure ledger");
                continue;
            };
            let _: i64 = redis::Script::new(SEED)
                .key(self.key(budget.tag(), &row.issuer_id, &row.subject_hash))
                .arg(row.failures)
                .arg(if row.locked { 1 } else { 0 })
                .arg(row.forget_at.unwrap_or(0))
                .arg(now)
                .arg(self.limits.backoff_after)
                .arg(self.limits.max_backoff.as_secs())
                .arg(self.limits.backoff.as_secs())
                .invoke_async(&mut redis)
                .await
                .map_err(redis_down)?;
        }
        redis::cmd("SET")
            .arg(self.marker(issuer.as_str()))
            .arg(now)
            .query_async::<()>(&mut redis)
            .await
            .map_err(redis_down)?;
        tracing::info!(
            issuer_id = %issuer,
            budgets = rows.len(),
            "failure budgets rebuilt in Redis from the ledger"
        );
        metrics::counter!("idm_auth_budget_reloads_total").increment(1);
        Ok(())
    }
}
