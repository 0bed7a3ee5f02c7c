//! Request deadlines across the bus. Every request carries the moment its
//! caller stops waiting ([`HEADER_DEADLINE`], absolute unix milliseconds):
//! the caller's own timeout, or sooner when the caller is itself handling a
//! request whose deadline comes first, so a chain of calls never outlives
//! the request that started it. The serving loop drops a request whose
//! deadline has passed before its handler runs (nobody would read the
//! answer), and handlers bound their own waits (a queue for a hashing slot,
//! say) with [`within_deadline`].
//!
//! Absolute times assume the hosts' clocks agree (NTP); a server whose clock
//! runs ahead by more than a request's budget would drop work it could still
//! answer, so docs/OPERATIONS.md asks for synchronised clocks.

use async_nats::HeaderMap;
use idm_core::{ApiError, ErrorCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The caller's deadline, in unix milliseconds.
pub const HEADER_DEADLINE: &str = "idm-deadline-ms";

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The deadline a message carries, if it carries a well-formed one.
pub(crate) fn parse(headers: Option<&HeaderMap>) -> Option<u64> {
    headers
        .and_then(|h| h.get(HEADER_DEADLINE))
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
}

/// How late a message is (its deadline passed that long ago), or `None`
/// while its caller still waits (or it names no deadline).
pub(crate) fn overdue(headers: Option<&HeaderMap>) -> Option<u64> {
    let deadline = parse(headers)?;
    let now = unix_ms_now();
    (now >= deadline).then(|| now - deadline)
}

/// The deadline of a request sent now with `timeout`: the sooner of
/// `now + timeout` and the deadline of the request being handled, and the
/// time left until it.
pub(crate) fn for_request(timeout: Duration) -> (u64, Duration) {
    let now = unix_ms_now();
    let own = now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    let deadline = crate::context::current()
        .deadline_ms
        .map_or(own, |inherited| inherited.min(own));
    (
        deadline,
        Duration::from_millis(deadline.saturating_sub(now)),
    )
}

/// What is left of the current request's deadline; `None` outside a request
/// that carries one.
pub fn remaining() -> Option<Duration> {
    crate::context::current()
        .deadline_ms
        .map(|deadline| Duration::from_millis(deadline.saturating_sub(unix_ms_now())))
}

/// Runs `work` until the current request's deadline (without one, to the
/// end). Past it the work is dropped (a queued waiter leaves its queue) and
/// the answer is `overloaded`: the caller has given up, and a retry later
/// is what it should do.
pub async fn within_deadline<F: std::future::Future>(work: F) -> Result<F::Output, ApiError> {
    match remaining() {
        None => Ok(work.await),
        Some(left) => tokio::time::timeout(left, work).await.map_err(|_| {
            ApiError::new(
                ErrorCode::Overloaded,
                "the caller's deadline passed while the work waited",
            )
            .with_details(serde_json::json!({ "retry_after": 1 }))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(deadline: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_DEADLINE, deadline);
        headers
    }

    #[test]
    fn only_a_passed_well_formed_deadline_is_overdue() {
        let now = unix_ms_now();
        assert!(overdue(Some(&with(&(now - 5).to_string()))).is_some_and(|late| late >= 5));
        assert_eq!(overdue(Some(&with(&(now + 60_000).to_string()))), None);
        for junk in ["", "soon", "-5", "0", "1.5"] {
            assert_eq!(overdue(Some(&with(junk))), None, "{junk:?}");
        }
        assert_eq!(overdue(None), None);
    }

    #[tokio::test]
    async fn an_inherited_deadline_shortens_an_onward_call() {
        let (own, left) = for_request(Duration::from_secs(5));
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(4));
        let mut ctx = crate::RequestContext::new_root();
        ctx.deadline_ms = Some(unix_ms_now() + 200);
        let (inherited, left) = ctx
            .scope(async { for_request(Duration::from_secs(5)) })
            .await;
        assert!(inherited < own);
        assert!(left <= Duration::from_millis(200));
    }
}
