//! Failpoints for the crash tests: `crash_after(user, step)` makes the
//! worker behave, once, as if it died right after doing `step` of that
//! user's job and before recording it (the message unsettled, the lease
//! held), so a test can kill and restart the worker exactly there. Keyed by
//! user so tests sharing a process do not disturb one another; empty (one
//! atomic load per step) unless a test armed one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ARMED_ANY: AtomicBool = AtomicBool::new(false);
static ARMED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static HIT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Arms a one-shot crash after `step` of `user`'s job.
pub fn crash_after(user: &str, step: &str) {
    if let Ok(mut armed) = ARMED.lock() {
        armed.push((user.to_owned(), step.to_owned()));
        ARMED_ANY.store(true, Ordering::SeqCst);
    }
}

/// Whether the worker has stopped at that failpoint.
pub fn hit(user: &str, step: &str) -> bool {
    HIT.lock()
        .map(|hit| hit.iter().any(|(u, s)| u == user && s == step))
        .unwrap_or(false)
}

/// Disarms and reports the failpoint of `user` at `step`, if armed.
pub(crate) fn take(user: &str, step: &str) -> bool {
    if !ARMED_ANY.load(Ordering::SeqCst) {
        return false;
    }
    let Ok(mut armed) = ARMED.lock() else {
        return false;
    };
    let Some(i) = armed.iter().position(|(u, s)| u == user && s == step) else {
        return false;
    };
    let point = armed.remove(i);
    if let Ok(mut hit) = HIT.lock() {
        hit.push(point);
    }
    true
}
