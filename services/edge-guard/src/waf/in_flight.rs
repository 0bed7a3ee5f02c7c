//! Requests in flight per issuer on this replica. Past
//! `EDGE_MAX_IN_FLIGHT_PER_ISSUER` an issuer's next request is answered
//! `503 overloaded` with `Retry-After` at once, before it costs anything
//! downstream: one tenant's flood cannot hold every connection, task and
//! bus request of the edge while the others wait behind it.

use idm_core::{ApiError, ErrorCode, IssuerId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct InFlight {
    max: usize,
    counts: Mutex<HashMap<IssuerId, usize>>,
}

/// One request counted until dropped (when its response is sent).
pub struct Ticket {
    owner: Arc<InFlight>,
    issuer: IssuerId,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn enter(self: &Arc<Self>, issuer: &IssuerId) -> Result<Ticket, ApiError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(issuer.clone()).or_default();
        if *count >= self.max {
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                "too many requests of this application are in progress; retry shortly",
            )
            .with_details(super::retry_details(std::time::Duration::from_secs(1))));
        }
        *count += 1;
        Ok(Ticket {
            owner: Arc::clone(self),
            issuer: issuer.clone(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.issuer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.issuer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issuer_past_its_cap_is_shed_and_others_are_not() {
        let gate = Arc::new(InFlight::new(2));
        let (c, b) = (IssuerId::generate(), IssuerId::generate());
        let first = gate.enter(&c);
        let second = gate.enter(&c);
        assert!(first.is_ok() && second.is_ok());
        let shed = gate.enter(&c).err();
        assert_eq!(shed.as_ref().map(|e| e.code), Some(ErrorCode::Overloaded));
        assert!(shed
            .and_then(|e| e.details)
            .is_some_and(|d| d["retry_after"] == 1));
        assert!(gate.enter(&b).is_ok());
        drop(first);
        assert!(gate.enter(&c).is_ok());
    }
}
