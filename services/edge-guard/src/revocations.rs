//! Revoked sessions, answered from memory on every replica, failing closed.
//!
//! Filled from the authoritative list, the regional stores (each session row
//! records `revoked_at`; read region by region through the session service,
//! see [`Revocations::reload`]), at start and after every bus reconnect, and
//! by the `session.revoked` broadcasts in between (which are at most once: a
//! replica that was disconnected may have missed some). Redis plays no part:
//! losing it loses no revocation.
//!
//! The set never forgets a revocation before the session's tokens could have
//! expired (`until`): there is no capacity eviction. When the set is full, a
//! revocation that does not fit marks its issuer as *shed*: that issuer's
//! sessions are answered `503 overloaded` (with `Retry-After`) instead of
//! being vouched for, until expired entries make room and a reload from the
//! authoritative list has put every revocation back. Likewise, while the bus
//! is disconnected, before the first load, and for a region whose store has
//! not answered the load yet, sessions are answered `503
//! upstream_unavailable`: this replica cannot know what it missed. A store
//! that is down therefore blocks only its own region's sessions.

use idm_bus::Bus;
use idm_core::proto::session::{RevokedBroadcast, RevokedSessions};
use idm_core::{ApiError, ErrorCode, Region};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks at the bus connection (a reconnect is noticed
/// within this).
const POLL: Duration = Duration::from_millis(100);
/// How often expired entries are dropped and a shed issuer retried.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How soon a region whose revocations did not load is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often a current replica reads the revocations made lately, in case a
/// broadcast was lost without a reconnect.
const CATCH_UP_EVERY: Duration = Duration::from_secs(10);
/// How far before the last catch-up the next one reads (clock skew between
/// edges and the stores, transactions that committed late).
const CATCH_UP_SLACK_SECONDS: i64 = 60;
/// Beyond this many shed issuers, every issuer is shed (bounds the shed list).
const MAX_SHED_ISSUERS: usize = 10_000;
/// Revocations asked for per page.
const PAGE: u32 = 1_000;
/// Every region's bit in `Shared::loaded`.
const ALL_LOADED: u8 = u8::MAX;

/// Whether a revoked session was revoked as compromised.
type Compromised = bool;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Unix seconds until which a token of the session could still verify.
    until: i64,
    compromised: Compromised,
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    /// Issuer → sequence number of its latest revocation that did not fit.
    shed: HashMap<String, u64>,
    /// Sequence number from which every issuer is shed (the shed list overflowed).
    shed_all: Option<u64>,
    seq: u64,
    last_sweep: i64,
}

impl Table {
    fn sweep(&mut self, now: i64) {
        self.entries.retain(|_, e| e.until > now);
        self.last_sweep = now;
    }

    fn is_shed(&self, issuer: &str) -> bool {
        self.shed_all.is_some() || self.shed.contains_key(issuer)
    }
}

fn entry_key(issuer: &str, session: &str) -> String {
    format!("{issuer}/{session}")
}

fn region_bit(region: Region) -> u8 {
    let index = Region::ALL.iter().position(|r| *r == region).unwrap_or(0);
    1 << index
}

struct Shared {
    table: RwLock<Table>,
    capacity: usize,
    /// Connected to the bus since the last reload was attempted.
    current: AtomicBool,
    /// One bit per region (its index in `Region::ALL`): that region's
    /// revocations were loaded since the last (re)connect.
    loaded: AtomicU8,
}

#[derive(Clone)]
pub struct Revocations {
    shared: Arc<Shared>,
}

fn retry_in(seconds: u64) -> serde_json::Value {
    serde_json::json!({ "retry_after": seconds.max(1) })
}

/// A reload that left some regions out: their sessions stay refused.
#[derive(Debug, thiserror::Error)]
#[error("revocations not loaded for {}", .failed.iter().map(|(r, e)| format!("{r} ({e})")).collect::<Vec<_>>().join(", "))]
pub struct ReloadError {
    pub failed: Vec<(Region, ApiError)>,
}

impl Revocations {
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: RwLock::new(Table::default()),
                capacity: capacity.max(1),
                current: AtomicBool::new(false),
                loaded: AtomicU8::new(0),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.shared.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.shared.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn is_loaded(&self, region: Region) -> bool {
        self.shared.loaded.load(Ordering::Acquire) & region_bit(region) != 0
    }

    /// Regions whose revocations are not loaded on this connection.
    fn missing(&self) -> Vec<Region> {
        Region::ALL
            .into_iter()
            .filter(|r| !self.is_loaded(*r))
            .collect()
    }

    /// Readiness: the set has been loaded on the current bus connection
    /// (a region whose store is down does not make the replica unready; its
    /// sessions alone are refused).
    pub fn probe(&self) -> idm_core::Probe {
        let this = self.clone();
        Arc::new(move || {
            let current = this.shared.current.load(Ordering::Acquire);
            Box::pin(async move {
                if current {
                    Ok(())
                } else {
                    Err("the revocation set is not loaded".to_owned())
                }
            })
        })
    }

    /// `Ok(None)`: not revoked; `Ok(Some(compromised))`: revoked; `Err`: this
    /// replica cannot tell right now (503 with `Retry-After`), so it refuses.
    /// `region` is where the session lives (from its verified token).
    pub fn check(
        &self,
        issuer: &str,
        session: &str,
        region: Region,
    ) -> Result<Option<Compromised>, ApiError> {
        let now = idm_core::now().unix_timestamp();
        let table = self.read();
        if let Some(entry) = table.entries.get(&entry_key(issuer, session)) {
            if entry.until > now {
                return Ok(Some(entry.compromised));
            }
        }
        if !self.shared.current.load(Ordering::Acquire) {
            return Err(ApiError::new(
                ErrorCode::UpstreamUnavailable,
                "session revocations are being reloaded; try again shortly",
            )
            .with_details(retry_in(1)));
        }
        if !self.is_loaded(region) {
            return Err(ApiError::new(
                ErrorCode::UpstreamUnavailable,
                format!(
                    "session revocations of region {region} are not loaded yet; try again shortly"
                ),
            )
            .with_details(retry_in(RETRY_EVERY.as_secs())));
        }
        if table.is_shed(issuer) {
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                "too many revoked sessions to vouch for this one; try again shortly",
            )
            .with_details(retry_in(SWEEP_EVERY.as_secs())));
        }
        Ok(None)
    }

    /// Remembers a revocation until `until`; never evicts another one.
    pub fn add(&self, issuer: &str, session: &str, until: i64, compromised: bool) {
        let now = idm_core::now().unix_timestamp();
        if until <= now {
            return;
        }
        let key = entry_key(issuer, session);
        let mut table = self.write();
        if let Some(entry) = table.entries.get_mut(&key) {
            entry.until = entry.until.max(until);
            entry.compromised |= compromised;
            return;
        }
        if table.entries.len() >= self.shared.capacity && table.last_sweep < now {
            table.sweep(now);
        }
        if table.entries.len() >= self.shared.capacity {
            table.seq += 1;
            let seq = table.seq;
            if table.shed.len() >= MAX_SHED_ISSUERS {
                table.shed.clear();
                table.shed_all = Some(seq);
            } else {
                table.shed.insert(issuer.to_owned(), seq);
            }
            metrics::counter!("idm_edge_revocations_shed_total").increment(1);
            tracing::error!(
                issuer_id = issuer,
                capacity = self.shared.capacity,
                "revocation set full: this issuer's sessions are refused (503) until there is room (raise EDGE_REVOCATION_CAPACITY)"
            );
            return;
        }
        table.entries.insert(key, Entry { until, compromised });
        metrics::gauge!("idm_edge_revocations").set(table.entries.len() as f64);
    }

    /// Every revocation of `region` that still matters, page by page, from
    /// its regional store (through the session service), into the set.
    async fn load_region(
        &self,
        bus: &Bus,
        region: Region,
        since: Option<i64>,
    ) -> Result<usize, ApiError> {
        let mut after = None;
        let mut count = 0;
        loop {
            let page = bus
                .send(&RevokedSessions {
                    region,
                    after,
                    limit: PAGE,
                    since,
                })
                .await?;
            count += page.data.len();
            for r in &page.data {
                self.add(
                    r.issuer_id.as_str(),
                    r.session_id.as_str(),
                    r.until,
                    r.compromised,
                );
            }
            match page.next {
                Some(next) if !page.data.is_empty() => after = Some(next),
                _ => break,
            }
        }
        let loaded = self
            .shared
            .loaded
            .fetch_or(region_bit(region), Ordering::AcqRel)
            | region_bit(region);
        metrics::gauge!(idm_core::metric::EDGE_REVOCATION_REGIONS_LOADED.name)
            .set(f64::from(loaded.count_ones()));
        Ok(count)
    }

    /// Loads `regions` at once (a slow store delays only its own region).
    async fn load_regions(
        &self,
        bus: &Bus,
        regions: Vec<Region>,
        since: Option<i64>,
    ) -> Result<usize, ReloadError> {
        let loads = regions.iter().map(|r| self.load_region(bus, *r, since));
        let results = futures::future::join_all(loads).await;
        let mut count = 0;
        let mut failed = Vec::new();
        for (region, result) in regions.into_iter().zip(results) {
            match result {
                Ok(n) => count += n,
                Err(e) => failed.push((region, e)),
            }
        }
        if failed.is_empty() {
            Ok(count)
        } else {
            Err(ReloadError { failed })
        }
    }

    /// Puts every authoritative revocation of every region into the set.
    /// Issuers shed before the reload began are cleared if every region
    /// loaded; the set is then current (until the bus disconnects), with
    /// the regions that did not load still refused until they do.
    pub async fn reload(&self, bus: &Bus) -> Result<usize, ReloadError> {
        let before = self.read().seq;
        let loaded = self.load_regions(bus, Region::ALL.to_vec(), None).await;
        if loaded.is_ok() {
            let mut table = self.write();
            table.shed.retain(|_, seq| *seq > before);
            if table.shed_all.is_some_and(|seq| seq <= before) {
                table.shed_all = None;
            }
        }
        self.shared.current.store(true, Ordering::Release);
        loaded
    }

    /// Applies `session.revoked` broadcasts until shutdown.
    pub async fn listen(
        &self,
        bus: &Bus,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, crate::Error> {
        let this = self.clone();
        let task = bus
            .on_broadcast(
                "session.revoked",
                shutdown,
                move |broadcast: RevokedBroadcast| {
                    for s in &broadcast.sessions {
                        this.add(
                            broadcast.issuer_id.as_str(),
                            s.session_id.as_str(),
                            s.until,
                            s.compromised,
                        );
                    }
                    std::future::ready(())
                },
            )
            .await?;
        Ok(task)
    }

    /// Watches the bus connection until shutdown: while it is down the set
    /// is not current (sessions get 503); after every (re)connect
    /// `on_reconnect` runs (the caller drops caches that broadcasts keep
    /// fresh: key rings, API keys) and the set is reloaded (a broadcast that
    /// revoked sessions or keys may have been missed). Regions that did not
    /// load are retried every second. Also drops expired entries and retries
    /// shed issuers.
    pub fn watch(
        &self,
        bus: Bus,
        on_reconnect: impl Fn() + Send + 'static,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            // The connection the set was last loaded on (start() loads first).
            let mut loaded_on = this
                .shared
                .current
                .load(Ordering::Acquire)
                .then(|| bus.client().statistics().connects.load(Ordering::Acquire));
            let mut cleared_for = loaded_on;
            let mut next_attempt = tokio::time::Instant::now();
            let mut next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
            let mut next_catch_up = tokio::time::Instant::now() + CATCH_UP_EVERY;
            // Revocations made before this (unix seconds) are in the set.
            let mut caught_up_to = idm_core::now().unix_timestamp();
            let mut reported: Vec<Region> = Vec::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => {}
                }
                if !bus.is_connected() {
                    if this.shared.current.swap(false, Ordering::AcqRel) {
                        tracing::warn!("bus disconnected: sessions are refused until it reconnects and revocations are reloaded");
                    }
                    continue;
                }
                let now = tokio::time::Instant::now();
                let connects = bus.client().statistics().connects.load(Ordering::Acquire);
                let reconnected = loaded_on != Some(connects);
                let sweep_due = now >= next_sweep;
                if sweep_due {
                    next_sweep = now + SWEEP_EVERY;
                    let seconds = idm_core::now().unix_timestamp();
                    this.write().sweep(seconds);
                }
                let shed = {
                    let table = this.read();
                    table.shed_all.is_some() || !table.shed.is_empty()
                };
                let stale = !this.shared.current.load(Ordering::Acquire);
                let partial = this.shared.loaded.load(Ordering::Acquire) != ALL_LOADED;
                let full = reconnected || stale || (shed && sweep_due);
                if !(full || partial) && now >= next_catch_up {
                    // Broadcasts are at most once even on a healthy
                    // connection (a revocation committed by a session
                    // service that died before broadcasting it, a slow
                    // consumer): read what was revoked lately, with slack.
                    next_catch_up = now + CATCH_UP_EVERY;
                    let started = idm_core::now().unix_timestamp();
                    let since = caught_up_to - CATCH_UP_SLACK_SECONDS;
                    match this
                        .load_regions(&bus, Region::ALL.to_vec(), Some(since))
                        .await
                    {
                        Ok(_) => caught_up_to = started,
                        Err(e) => {
                            tracing::debug!(error = %e, "revocation catch-up incomplete; retried")
                        }
                    }
                    continue;
                }
                if !(full || partial) || now < next_attempt {
                    continue;
                }
                if reconnected && cleared_for != Some(connects) {
                    // Once per connection, even if the reload has to be retried.
                    this.shared.current.store(false, Ordering::Release);
                    this.shared.loaded.store(0, Ordering::Release);
                    metrics::gauge!(idm_core::metric::EDGE_REVOCATION_REGIONS_LOADED.name).set(0.0);
                    on_reconnect();
                    cleared_for = Some(connects);
                }
                // The subscriptions are re-sent on reconnect; the flush makes
                // sure the server has them before the list is read, so nothing
                // revoked in between falls through.
                bus.flush().await;
                let result = if full {
                    caught_up_to = idm_core::now().unix_timestamp();
                    this.reload(&bus).await
                } else {
                    this.load_regions(&bus, this.missing(), None).await
                };
                if full {
                    loaded_on = Some(connects);
                }
                match result {
                    Ok(count) => {
                        if full || !reported.is_empty() {
                            tracing::info!(count, reconnected, "revocation set reloaded");
                        }
                        reported.clear();
                    }
                    Err(e) => {
                        let failed: Vec<Region> = e.failed.iter().map(|(r, _)| *r).collect();
                        // Once per change, not every second.
                        if failed != reported {
                            tracing::error!(error = %e, "revocations not loaded; those regions' sessions stay refused");
                            reported = failed;
                        }
                        next_attempt = now + RETRY_EVERY;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Region = Region::Weur;

    fn current(capacity: usize) -> Revocations {
        let r = Revocations::new(capacity);
        r.shared.current.store(true, Ordering::Release);
        r.shared.loaded.store(ALL_LOADED, Ordering::Release);
        r
    }

    #[test]
    fn a_full_set_never_forgets_and_sheds_the_issuer_that_did_not_fit() {
        let r = current(3);
        let later = idm_core::now().unix_timestamp() + 600;
        for s in ["s1", "s2", "s3"] {
            r.add("iss_a", s, later, false);
        }
        // The fourth does not fit: nothing is evicted, its issuer is shed.
        r.add("iss_b", "s4", later, true);
        for s in ["s1", "s2", "s3"] {
            assert_eq!(r.check("iss_a", s, HERE).ok(), Some(Some(false)), "{s}");
        }
        let shed = r.check("iss_b", "s4", HERE).err();
        assert_eq!(shed.as_ref().map(|e| e.code), Some(ErrorCode::Overloaded));
        assert!(shed
            .and_then(|e| e.details)
            .and_then(|d| d["retry_after"].as_u64())
            .is_some_and(|s| s >= 1));
        // Any session of the shed issuer, not only the one revoked, is refused…
        assert!(r.check("iss_b", "other", HERE).is_err());
        // …while other issuers are still vouched for.
        assert_eq!(r.check("iss_a", "live", HERE).ok(), Some(None));
        // Updating an existing entry needs no room.
        r.add("iss_a", "s1", later + 60, true);
        assert_eq!(r.check("iss_a", "s1", HERE).ok(), Some(Some(true)));
    }

    #[test]
    fn expired_entries_make_room_and_are_never_answered() {
        let r = current(2);
        let now = idm_core::now().unix_timestamp();
        r.add("iss_a", "gone", now - 1, false);
        assert_eq!(r.check("iss_a", "gone", HERE).ok(), Some(None));
        {
            let mut table = r.write();
            table.entries.insert(
                entry_key("iss_a", "old"),
                Entry {
                    until: now - 5,
                    compromised: false,
                },
            );
            table.last_sweep = now - 10;
        }
        r.add("iss_a", "x", now + 60, false);
        // Full (old + x); adding sweeps the expired one instead of shedding.
        r.add("iss_a", "y", now + 60, false);
        assert_eq!(r.check("iss_a", "y", HERE).ok(), Some(Some(false)));
        assert_eq!(r.check("iss_a", "x", HERE).ok(), Some(Some(false)));
        assert!(!r.read().is_shed("iss_a"));
    }

    #[test]
    fn an_unloaded_set_refuses_but_still_answers_known_revocations() {
        let r = Revocations::new(10);
        let later = idm_core::now().unix_timestamp() + 600;
        r.add("iss_a", "s1", later, false);
        assert_eq!(r.check("iss_a", "s1", HERE).ok(), Some(Some(false)));
        assert_eq!(
            r.check("iss_a", "s2", HERE).err().map(|e| e.code),
            Some(ErrorCode::UpstreamUnavailable)
        );
    }

    #[test]
    fn a_region_not_loaded_is_refused_while_the_others_are_vouched_for() {
        let r = Revocations::new(10);
        r.shared.current.store(true, Ordering::Release);
        r.shared
            .loaded
            .store(ALL_LOADED & !region_bit(Region::Weur), Ordering::Release);
        assert_eq!(r.check("iss_a", "s1", Region::Wnam).ok(), Some(None));
        let refused = r.check("iss_a", "s1", Region::Weur).err();
        assert_eq!(
            refused.as_ref().map(|e| e.code),
            Some(ErrorCode::UpstreamUnavailable)
        );
        assert!(refused
            .and_then(|e| e.details)
            .and_then(|d| d["retry_after"].as_u64())
            .is_some_and(|s| s >= 1));
        assert_eq!(r.missing(), vec![Region::Weur]);
        // Every region has its own bit.
        let bits: u8 = Region::ALL
            .iter()
            .map(|r| region_bit(*r))
            .fold(0, |a, b| a | b);
        assert_eq!(bits, ALL_LOADED);
    }

    #[test]
    fn many_shed_issuers_shed_everyone_with_a_bounded_list() {
        let r = current(1);
        let later = idm_core::now().unix_timestamp() + 600;
        r.add("iss_0", "s", later, false);
        for i in 1..=MAX_SHED_ISSUERS + 1 {
            r.add(&format!("iss_{i}"), "s", later, false);
        }
        let table = r.read();
        assert!(table.shed.len() <= MAX_SHED_ISSUERS);
        assert!(table.shed_all.is_some());
        drop(table);
        assert!(r.check("iss_never_seen", "s", HERE).is_err());
    }
}
