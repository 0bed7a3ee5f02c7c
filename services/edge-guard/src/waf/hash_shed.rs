//! Password work an issuer's store just refused is refused at the edge for
//! a moment.
//!
//! A regional store gives each issuer at most its share of Argon2 workers
//! and answers past it with `503 overloaded` (`idm_core::fair_share`). That
//! keeps the flooding issuer out of the others' workers, but every refused
//! sign-in has still crossed the edge, auth, the user service's directory
//! lookup and the store before it was refused, and at a few hundred per
//! second that CPU is taken from every tenant. So when a store refuses an
//! issuer's password work, this replica refuses that issuer's next
//! password requests itself for a short window, at the cost of one map
//! lookup, and sends them back with the same `503 overloaded` and
//! `Retry-After`. Only the refused issuer, only password routes (its
//! sessions, reads and other routes are untouched), only on this replica,
//! and only for the window: the first request after it goes through and
//! finds out whether the store has room again.

use idm_core::{ApiError, ErrorCode, IssuerId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many remembered issuers, expired entries are swept on insert,
/// so the map holds only issuers refused within one window.
const SWEEP_ABOVE: usize = 1024;

pub struct HashShed {
    window: Duration,
    until: Mutex<HashMap<IssuerId, Instant>>,
}

impl HashShed {
    /// `window` zero turns it off.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            until: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(503 overloaded)` while the issuer's last password request was
    /// refused by its store less than a window ago.
    pub fn check(&self, issuer: &IssuerId) -> Result<(), ApiError> {
        if self.window.is_zero() {
            return Ok(());
        }
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        match until.get(issuer) {
            Some(&end) if end > Instant::now() => Err(ApiError::new(
                ErrorCode::Overloaded,
                "the store is busy with this application's sign-ins; retry shortly",
            )
            .with_details(super::retry_details(end - Instant::now()))),
            Some(_) => {
                until.remove(issuer);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Remembers a store's refusal (`overloaded`) of the issuer's password
    /// work; any other outcome changes nothing.
    pub fn note<T>(&self, issuer: &IssuerId, outcome: &Result<T, ApiError>) {
        let Err(err) = outcome else { return };
        if err.code != ErrorCode::Overloaded || self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.len() >= SWEEP_ABOVE {
            until.retain(|_, end| *end > now);
        }
        until.insert(issuer.clone(), now + self.window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overloaded() -> Result<(), ApiError> {
        Err(ApiError::new(ErrorCode::Overloaded, "busy"))
    }

    #[test]
    fn a_refused_issuer_is_refused_at_the_edge_for_the_window_only() {
        let shed = HashShed::new(Duration::from_millis(50));
        let (c, b) = (IssuerId::generate(), IssuerId::generate());
        shed.note(&c, &overloaded());
        let refused = shed.check(&c).err().map(|e| e.code);
        assert_eq!(refused, Some(ErrorCode::Overloaded));
        // Another issuer, and other outcomes, are untouched.
        assert!(shed.check(&b).is_ok());
        shed.note(
            &b,
            &Err::<(), _>(ApiError::new(ErrorCode::InvalidCredentials, "no")),
        );
        shed.note(&b, &Ok(()));
        assert!(shed.check(&b).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(shed.check(&c).is_ok());
    }

    #[test]
    fn a_zero_window_never_refuses() {
        let shed = HashShed::new(Duration::ZERO);
        let c = IssuerId::generate();
        shed.note(&c, &overloaded());
        assert!(shed.check(&c).is_ok());
    }

    #[test]
    fn the_map_holds_only_issuers_refused_within_a_window() {
        let shed = HashShed::new(Duration::from_millis(1));
        for _ in 0..(SWEEP_ABOVE + 10) {
            shed.note(&IssuerId::generate(), &overloaded());
        }
        std::thread::sleep(Duration::from_millis(5));
        shed.note(&IssuerId::generate(), &overloaded());
        let held = shed.until.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(held < SWEEP_ABOVE, "{held} entries kept");
    }
}
