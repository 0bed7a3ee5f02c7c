//! The monthly email quota of an account: one Redis counter per account,
//! mode and calendar month (UTC), incremented only while under the limit, so
//! a refused send leaves the count where it was and nothing is queued. Test
//! issuers count apart from live ones: a test send never uses live quota.
//!
//! While Redis is away each replica continues from the last count it saw
//! for that account and remembers what it let through; when Redis is back
//! those sends are added to the shared counter (`hand_back`), so an outage
//! can overshoot the quota only by what other replicas sent meanwhile.

use super::fallback::RedisLink;
use idm_cache::Connection;
use idm_core::{AccountId, KeyMode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::{Date, Month, OffsetDateTime, Time};

/// KEYS: counter. ARGV: limit, expiry (unix seconds). Returns {taken, count}.
const TAKE_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return {0, n - 1}
end
return {1, n}
";

/// KEYS: counter. ARGV: floor, expiry (unix seconds).
const FLOOR_SCRIPT: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return 1
";

const MAX_LOCAL_ENTRIES: usize = 100_000;

#[derive(Default, Clone, Copy)]
struct Local {
    /// The last count Redis reported.
    seen: u64,
    /// Sends let through from memory since Redis went away.
    unsynced: u64,
}

pub struct Quota {
    redis: Arc<RedisLink>,
    script: redis::Script,
    local: Mutex<HashMap<String, Local>>,
}

/// The first instant of the month after `now`.
fn next_month(now: OffsetDateTime) -> OffsetDateTime {
    let (year, month) = match now.month() {
        Month::December => (now.year() + 1, Month::January),
        m => (now.year(), m.next()),
    };
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
        .unwrap_or(now + Duration::from_secs(31 * 86_400))
}

fn month_key(now: OffsetDateTime) -> String {
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

/// The counter's key. Live keeps the name it had before modes were counted
/// apart, so a deployment does not reset this month's live counts.
fn counter_key(account: &AccountId, mode: KeyMode, now: OffsetDateTime) -> String {
    match mode {
        KeyMode::Live => format!("quota:{account}:{}", month_key(now)),
        KeyMode::Test => format!("quota:{account}:test:{}", month_key(now)),
    }
}

impl Quota {
    pub fn new(redis: Arc<RedisLink>) -> Self {
        Self {
            redis,
            script: redis::Script::new(TAKE_SCRIPT),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one send from the monthly quota of the account's `mode`
    /// issuers, or says how long until the quota renews.
    pub async fn take(
        &self,
        account: &AccountId,
        mode: KeyMode,
        limit: u32,
    ) -> Result<(), Duration> {
        let now = idm_core::now();
        let renews = next_month(now);
        let until_renewal = Duration::try_from(renews - now).unwrap_or(Duration::from_secs(1));
        let key = self.redis.key(&counter_key(account, mode, now));
        let expire_at = (renews + Duration::from_secs(7 * 86_400)).unix_timestamp();
        let script = &self.script;
        let redis_key = key.clone();
        let answer = self
            .redis
            .run(|mut conn| async move {
                script
                    .key(&redis_key)
                    .arg(limit)
                    .arg(expire_at)
                    .invoke_async::<Vec<u64>>(&mut conn)
                    .await
            })
            .await;
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() > MAX_LOCAL_ENTRIES {
            // Past months are of no further use once handed back.
            let month = month_key(now);
            local.retain(|k, l| k.ends_with(&month) || l.unsynced > 0);
        }
        match answer.as_deref() {
            Some([taken, count]) => {
                // Remember the latest count (unless sends from memory are
                // still waiting to be handed back).
                let entry = local.entry(key).or_default();
                if entry.unsynced == 0 {
                    entry.seen = *count;
                }
                if *taken == 1 {
                    Ok(())
                } else {
                    Err(until_renewal)
                }
            }
            _ => {
                let entry = local.entry(key).or_default();
                if entry.seen + entry.unsynced >= u64::from(limit) {
                    return Err(until_renewal);
                }
                entry.unsynced += 1;
                Ok(())
            }
        }
    }

    /// Raises this month's counters that Redis lost (it came back empty) to
    /// the last count this replica saw, so a restart of Redis does not hand
    /// every account a fresh month of mail. Never lowers a counter.
    pub async fn write_back(&self) -> Option<usize> {
        let month = month_key(idm_core::now());
        let floors: Vec<(String, u64)> = {
            let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            local
                .iter()
                .filter(|(k, l)| k.ends_with(&month) && l.seen > 0)
                .map(|(k, l)| (k.clone(), l.seen))
                .collect()
        };
        if floors.is_empty() {
            return Some(0);
        }
        let expire_at =
            (next_month(idm_core::now()) + Duration::from_secs(7 * 86_400)).unix_timestamp();
        let count = floors.len();
        self.redis
            .run(|mut conn| async move {
                let script = redis::Script::new(FLOOR_SCRIPT);
                for (key, seen) in floors {
                    script
                        .key(key)
                        .arg(seen)
                        .arg(expire_at)
                        .invoke_async::<()>(&mut conn)
                        .await?;
                }
                Ok(())
            })
            .await
            .map(|()| count)
    }

    /// Adds the sends counted in memory to the Redis counters (called once
    /// Redis answers again, before requests use it).
    pub async fn hand_back(&self, mut conn: Connection) {
        let pending: Vec<(String, u64)> = {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            let pending = local
                .iter()
                .filter(|(_, l)| l.unsynced > 0)
                .map(|(k, l)| (k.clone(), l.unsynced))
                .collect();
            local.clear();
            pending
        };
        let expire_at =
            (next_month(idm_core::now()) + Duration::from_secs(7 * 86_400)).unix_timestamp();
        for (key, count) in pending {
            let done: redis::RedisResult<()> = redis::pipe()
                .incr(&key, count)
                .ignore()
                .expire_at(&key, expire_at)
                .ignore()
                .query_async(&mut conn)
                .await;
            if let Err(e) = done {
                tracing::error!(error = %e, count, "sends made during the Redis outage were not added to the quota");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn months_roll_over_including_december() {
        assert_eq!(
            next_month(datetime!(2025-12-31 23:59:59 UTC)),
            datetime!(2026-01-01 0:00 UTC)
        );
        assert_eq!(
            next_month(datetime!(2025-02-10 12:00 UTC)),
            datetime!(2025-03-01 0:00 UTC)
        );
        assert_eq!(month_key(datetime!(2025-02-10 12:00 UTC)), "2025-02");
    }
}
