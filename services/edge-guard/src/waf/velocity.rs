//! Sliding-window rate limits (IP velocity, key lookups, per-recipient sends).
//!
//! The algorithm is the sliding-window counter: time is cut into fixed
//! windows of the limit's length; a request at fraction `f` of the current
//! window sees `previous × (1 − f) + current` requests in the last window
//! length. It needs two integers per key, never bursts to twice the limit at
//! a window edge (as a fixed window does), and is exact when traffic is even
//! across the previous window. Rejected requests are not counted, so a client
//! that slows down gets back in at the rate the limit allows.
//!
//! In Redis the read-decide-increment runs as one Lua script, so replicas
//! never race; without Redis the same arithmetic runs on per-replica memory.
//!
//! **Leases** (issue 10: the script's round trip was 16–18 % of the edge's
//! CPU on every accepted call). When a window has plenty of room left (at
//! least [`LEASE_MIN_ROOM`] requests), the script counts up to
//! [`LEASE_MAX`] requests at once (never more than 1/[`LEASE_SHARE`] of the
//! room) and this replica admits the extra ones from memory, without asking
//! Redis again, until they are used up or the window ends. They are counted
//! in Redis before they are used, so a limit is never exceeded, whatever the
//! number of replicas; the price is the other way round: requests leased
//! but not used (at most `LEASE_MAX` per key and replica, left over when
//! the traffic moves to another replica or the window ends) count against
//! the limit, so a client can be refused up to that many requests early per
//! replica. With less room than `LEASE_MIN_ROOM` (every small limit, and
//! every limit close to being reached) each request asks Redis, exactly as
//! before. Leases are only used in the window they were counted in, and
//! only for the limit they were counted against (a changed limit asks anew).

use super::fallback::RedisLink;
use idm_core::waf_policy::VelocityLimit;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most requests one answer of the script may count ahead for this replica.
pub const LEASE_MAX: u64 = 64;
/// Leases are granted only while at least this many requests still fit.
pub const LEASE_MIN_ROOM: u64 = 256;
/// A lease takes at most this fraction (1/n) of the room left.
pub const LEASE_SHARE: u64 = 32;

// `room`: how many more requests fit now (the sliding estimate
// `prev × (w − e) + (cur + n) × w ≤ limit × w`, solved for n). One is
// counted, or a lease of up to ARGV[4] when the room is at least ARGV[5]
// (never more than room / ARGV[6]). Answers {allowed, prev, cur, counted}.
const SCRIPT: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local e = tonumber(ARGV[3])
local room = math.floor((limit * w - prev * (w - e)) / w) - cur
if room < 1 then
  return {0, prev, cur, 0}
end
local n = 1
if room >= tonumber(ARGV[5]) then
  n = math.max(1, math.min(tonumber(ARGV[4]), math.floor(room / tonumber(ARGV[6]))))
end
cur = redis.call('INCRBY', KEYS[1], n)
if cur == n then redis.call('PEXPIRE', KEYS[1], 2 * w + 1000) end
return {1, prev, cur, n}
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// When a rejected caller may succeed again (whole seconds, at least 1).
    pub retry_after: Duration,
}

impl Decision {
    pub const ALLOW: Decision = Decision {
        allowed: true,
        retry_after: Duration::ZERO,
    };
}

/// The decision for one more request, given the counts of the previous and
/// current fixed windows and how far (`elapsed` ms) into the current one we are.
pub fn decide(prev: u64, cur: u64, limit: u64, window_ms: u64, elapsed: u64) -> Decision {
    let w = window_ms.max(1);
    let e = elapsed.min(w - 1);
    let weighted = |prev: u64, elapsed: u64| prev.saturating_mul(w - elapsed);
    if weighted(prev, e).saturating_add((cur + 1).saturating_mul(w)) <= limit.saturating_mul(w) {
        return Decision::ALLOW;
    }
    // Earliest moment the estimate leaves room for one more request.
    let wait_ms = if cur < limit && prev > 0 {
        // Later in this window, once enough of `prev` has slid out.
        let room = (limit - cur - 1).saturating_mul(w) / prev;
        let at = w.saturating_sub(room);
        at.saturating_sub(e).max(1)
    } else {
        // In the next window, where `cur` becomes the sliding-out part.
        let room = (limit.saturating_sub(1))
            .saturating_mul(w)
            .checked_div(cur)
            .unwrap_or(w);
        (w - e) + w.saturating_sub(room)
    };
    Decision {
        allowed: false,
        retry_after: Duration::from_secs(wait_ms.div_ceil(1000).max(1)),
    }
}

pub fn now_ms() -> u64 {
    u64::try_from(idm_core::now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[derive(Default)]
struct Slot {
    index: u64,
    prev: u64,
    cur: u64,
}

/// Requests already counted in Redis for this replica and not used yet.
struct Lease {
    window_ms: u64,
    index: u64,
    limit: u64,
    left: u64,
}

/// Sliding windows in Redis, or in this replica's memory while Redis is away.
pub struct Velocity {
    redis: Arc<RedisLink>,
    script: redis::Script,
    memory: moka::sync::Cache<String, Arc<Mutex<Slot>>>,
    leases: moka::sync::Cache<String, Arc<Mutex<Lease>>>,
}

impl Velocity {
    pub fn new(redis: Arc<RedisLink>) -> Self {
        Self {
            redis,
            script: redis::Script::new(SCRIPT),
            memory: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(2 * 86_400))
                .build(),
            // A lease lives one window at most; an idle one is worthless.
            leases: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
        }
    }

    /// One request from this replica's lease for `key`, if it holds one for
    /// this window and this limit.
    fn take_lease(&self, key: &str, window_ms: u64, index: u64, limit: u64) -> bool {
        let Some(lease) = self.leases.get(key) else {
            return false;
        };
        let mut lease = lease.lock().unwrap_or_else(|p| p.into_inner());
        if lease.left > 0
            && lease.index == index
            && lease.window_ms == window_ms
            && lease.limit == limit
        {
            lease.left -= 1;
            true
        } else {
            false
        }
    }

    /// Keeps `extra` requests counted in Redis for `key`'s current window.
    fn keep_lease(&self, key: &str, window_ms: u64, index: u64, limit: u64, extra: u64) {
        let lease = self.leases.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Lease {
                window_ms,
                index,
                limit,
                left: 0,
            }))
        });
        let mut lease = lease.lock().unwrap_or_else(|p| p.into_inner());
        if lease.index == index && lease.window_ms == window_ms && lease.limit == limit {
            lease.left += extra;
        } else {
            // What is left of an older window or limit stays counted there
            // (refusing a little early, never admitting too much).
            *lease = Lease {
                window_ms,
                index,
                limit,
                left: extra,
            };
        }
    }

    /// Counts one request against `limit` for `key` (a name under the WAF
    /// prefix, e.g. `v:client:<issuer>:<network>`), unless it is over.
    pub async fn hit(&self, key: &str, limit: VelocityLimit) -> Decision {
        let window_ms = u64::from(limit.window_seconds.max(1)) * 1000;
        let max = u64::from(limit.limit);
        let now = now_ms();
        let index = now / window_ms;
        let elapsed = now % window_ms;
        if self.take_lease(key, window_ms, index, max) {
            return Decision::ALLOW;
        }
        // Both windows under one hash tag: one cluster slot for the script.
        let cur_key = self.redis.tagged_key(key, &format!(":{window_ms}:{index}"));
        let prev_key = self
            .redis
            .tagged_key(key, &format!(":{window_ms}:{}", index.saturating_sub(1)));
        let script = &self.script;
        let answer = self
            .redis
            .run(|mut conn| async move {
                script
                    .key(&cur_key)
                    .key(&prev_key)
                    .arg(max)
                    .arg(window_ms)
                    .arg(elapsed)
                    .arg(LEASE_MAX)
                    .arg(LEASE_MIN_ROOM)
                    .arg(LEASE_SHARE)
                    .invoke_async::<Vec<u64>>(&mut conn)
                    .await
            })
            .await;
        match answer.as_deref() {
            Some([1, _, _, counted]) => {
                if *counted > 1 {
                    self.keep_lease(key, window_ms, index, max, counted - 1);
                }
                Decision::ALLOW
            }
            Some([1, ..]) => Decision::ALLOW,
            Some([0, prev, cur, ..]) => decide(*prev, *cur, max, window_ms, elapsed),
            _ => self.memory_hit(key, max, window_ms, index, elapsed),
        }
    }

    /// Drops the in-memory windows whose key satisfies `matches` (a lift).
    pub fn forget_memory(&self, matches: impl Fn(&str) -> bool) {
        let doomed: Vec<String> = self
            .memory
            .iter()
            .filter(|(k, _)| matches(k.as_str()))
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in doomed {
            self.memory.invalidate(&k);
        }
        // Lease keys lack the memory keys' `:<window_ms>` suffix.
        let doomed: Vec<String> = self
            .leases
            .iter()
            .filter(|(k, _)| matches(&format!("{k}:")))
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in doomed {
            self.leases.invalidate(&k);
        }
    }

    fn memory_hit(
        &self,
        key: &str,
        max: u64,
        window_ms: u64,
        index: u64,
        elapsed: u64,
    ) -> Decision {
        let slot = self.memory.get_with(format!("{key}:{window_ms}"), || {
            Arc::new(Mutex::new(Slot::default()))
        });
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.index != index {
            slot.prev = if slot.index + 1 == index { slot.cur } else { 0 };
            slot.cur = 0;
            slot.index = index;
        }
        let decision = decide(slot.prev, slot.cur, max, window_ms, elapsed);
        if decision.allowed {
            slot.cur += 1;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_within_one_window() {
        let mut cur = 0;
        for _ in 0..5 {
            assert!(decide(0, cur, 5, 60_000, 10_000).allowed);
            cur += 1;
        }
        let d = decide(0, cur, 5, 60_000, 10_000);
        assert!(!d.allowed);
        // Full window from empty: wait for the next window plus the slide.
        assert!(d.retry_after >= Duration::from_secs(50));
    }

    #[test]
    fn the_previous_window_slides_out_gradually() {
        // 10 requests last window, limit 10: at the very start nothing fits…
        assert!(!decide(10, 0, 10, 60_000, 0).allowed);
        // …half-way through, half of them have slid out.
        assert!(decide(10, 4, 10, 60_000, 30_000).allowed);
        assert!(!decide(10, 5, 10, 60_000, 30_000).allowed);
        // No burst of 2× the limit across a window edge.
        assert!(!decide(10, 1, 10, 60_000, 1_000).allowed);
    }

    #[test]
    fn retry_after_points_at_the_first_moment_that_fits() {
        let (prev, cur, limit, w) = (10, 4, 10, 60_000);
        let d = decide(prev, cur, limit, w, 20_000);
        assert!(!d.allowed);
        let later = 20_000 + d.retry_after.as_millis() as u64;
        assert!(decide(prev, cur, limit, w, later).allowed);
        assert!(!decide(prev, cur, limit, w, later - 1_001).allowed);
    }

    #[test]
    fn a_limit_of_one_is_honoured() {
        assert!(decide(0, 0, 1, 1_000, 0).allowed);
        let d = decide(0, 1, 1, 1_000, 500);
        assert!(!d.allowed);
        assert!(d.retry_after >= Duration::from_secs(1));
    }
}
