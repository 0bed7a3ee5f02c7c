//! `GET /v1/client/me` answered from this edge's memory (issue 10,
//! docs/PERFORMANCE.md "Hot paths, seventh round").
//!
//! An answer is remembered per session, as the session's own store gave
//! it (that store confirmed the session live when it answered), for at most
//! `EDGE_ME_CACHE_TTL_MS`. It is forgotten earlier when the user's store
//! announces a change to the user (`user.changed`: profile, address, its
//! verification, MFA, purge, move), and is never used for a session this
//! edge knows to be revoked: the route verifies the token and checks the
//! revocation set before it looks here. What a lost broadcast can cost is
//! bounded by the TTL: a change, or a revocation made in a store behind
//! every edge's back, is seen at most that much later.
//!
//! Residency: an EU user's data never leaves the EU (docs/REGIONS.md), so an
//! edge remembers an EU user's answer only when it runs in the EU
//! (`EDGE_JURISDICTION=eu`); elsewhere such answers pass through, as before.
//!
//! A read that started before a change must not be remembered after it:
//! every change takes a tick of a clock, every read notes the clock before
//! it asks the store, and an answer is used only while no change of its
//! user has a later tick than its read.

use axum::body::Bytes;
use idm_core::{IssuerId, Jurisdiction, Region, SessionId, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Keys, the entry and the cache's own bookkeeping, roughly.
const ENTRY_OVERHEAD_BYTES: u32 = 256;

type SessionKey = (IssuerId, SessionId);
type UserKey = (IssuerId, UserId);

#[derive(Clone)]
pub struct MeCache {
    /// `None`: disabled (`EDGE_ME_CACHE_TTL_MS=0`), every `/me` asks the store.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    answers: moka::sync::Cache<SessionKey, Arc<Remembered>>,
    /// The tick of each user's latest change, kept as long as an answer
    /// read before it could still be alive (the same TTL). Unbounded on
    /// purpose: a mark evicted or refused for room would let a stale answer
    /// through; its size is changes per second × the TTL.
    changed: moka::sync::Cache<UserKey, u64>,
    clock: AtomicU64,
    /// Where this edge runs (`EDGE_JURISDICTION`).
    jurisdiction: Jurisdiction,
}

struct Remembered {
    user_id: UserId,
    /// The response body, serialised once.
    body: Bytes,
    read_at: u64,
}

/// A store read about to be made: the clock before it.
#[derive(Debug, Clone, Copy)]
pub struct Reading(u64);

impl MeCache {
    /// `max_bytes` bounds the remembered bodies plus a per-entry overhead
    /// (metadata can make one body kilobytes long: a count of entries would
    /// not bound the memory).
    pub fn new(ttl: Duration, max_bytes: u64, jurisdiction: Jurisdiction) -> Self {
        if ttl.is_zero() || max_bytes == 0 {
            return Self { inner: None };
        }
        Self {
            inner: Some(Arc::new(Inner {
                answers: moka::sync::Cache::builder()
                    .max_capacity(max_bytes)
                    .weigher(|_, remembered: &Arc<Remembered>| {
                        u32::try_from(remembered.body.len())
                            .unwrap_or(u32::MAX)
                            .saturating_add(ENTRY_OVERHEAD_BYTES)
                    })
                    .time_to_live(ttl)
                    .build(),
                changed: moka::sync::Cache::builder().time_to_live(ttl).build(),
                clock: AtomicU64::new(0),
                jurisdiction,
            })),
        }
    }

    /// The remembered answer for this session of this user, unless the user
    /// changed since it was read.
    pub fn get(&self, issuer: &IssuerId, session: &SessionId, user: &UserId) -> Option<Bytes> {
        let inner = self.inner.as_ref()?;
        let remembered = inner.answers.get(&(issuer.clone(), session.clone()))?;
        // A session id names one user; anything else is not this answer.
        if &remembered.user_id != user || inner.changed_since(issuer, user, remembered.read_at) {
            return None;
        }
        Some(remembered.body.clone())
    }

    /// Call before asking the store; pass the result to [`MeCache::keep`].
    pub fn reading(&self) -> Reading {
        Reading(
            self.inner
                .as_ref()
                .map_or(0, |inner| inner.clock.load(Ordering::Acquire)),
        )
    }

    /// Remembers the store's answer for this session of a user of
    /// `region`, unless the user changed after `reading` was taken or the
    /// region's data may not be kept where this edge runs.
    pub fn keep(
        &self,
        reading: Reading,
        issuer: &IssuerId,
        session: &SessionId,
        (user, region): (&UserId, Region),
        body: Bytes,
    ) {
        let Some(inner) = &self.inner else { return };
        let pinned_elsewhere =
            region.jurisdiction() == Jurisdiction::Eu && inner.jurisdiction != Jurisdiction::Eu;
        if pinned_elsewhere || inner.changed_since(issuer, user, reading.0) {
            return;
        }
        inner.answers.insert(
            (issuer.clone(), session.clone()),
            Arc::new(Remembered {
                user_id: user.clone(),
                body,
                read_at: reading.0,
            }),
        );
    }

    /// The user's store announced a change: no answer read before now is
    /// used again.
    pub fn user_changed(&self, issuer: &IssuerId, user: &UserId) {
        let Some(inner) = &self.inner else { return };
        let tick = inner.clock.fetch_add(1, Ordering::AcqRel) + 1;
        inner.changed.insert((issuer.clone(), user.clone()), tick);
    }

    /// After a bus reconnect: a change announced meanwhile may be lost.
    pub fn forget_all(&self) {
        if let Some(inner) = &self.inner {
            inner.answers.invalidate_all();
        }
    }
}

impl Inner {
    fn changed_since(&self, issuer: &IssuerId, user: &UserId, read_at: u64) -> bool {
        self.changed
            .get(&(issuer.clone(), user.clone()))
            .is_some_and(|tick| tick > read_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (IssuerId, SessionId, UserId) {
        (
            IssuerId::generate(),
            SessionId::generate(),
            UserId::generate(),
        )
    }

    fn cache() -> MeCache {
        MeCache::new(Duration::from_secs(60), 1 << 20, Jurisdiction::Global)
    }

    /// A store answer read now for a user of a region outside the EU.
    fn keep_now(
        cache: &MeCache,
        issuer: &IssuerId,
        session: &SessionId,
        user: &UserId,
        body: &'static [u8],
    ) {
        let reading = cache.reading();
        cache.keep(
            reading,
            issuer,
            session,
            (user, Region::Apac),
            Bytes::from_static(body),
        );
    }

    #[test]
    fn an_answer_is_used_for_its_own_session_and_user_only() {
        let cache = cache();
        let (issuer, session, user) = ids();
        keep_now(&cache, &issuer, &session, &user, b"A");
        assert_eq!(
            cache.get(&issuer, &session, &user).as_deref(),
            Some(&b"A"[..])
        );
        assert!(cache.get(&issuer, &session, &UserId::generate()).is_none());
        assert!(cache.get(&issuer, &SessionId::generate(), &user).is_none());
        assert!(cache.get(&IssuerId::generate(), &session, &user).is_none());
    }

    #[test]
    fn a_change_drops_the_users_answers_and_another_users_stay() {
        let cache = cache();
        let (issuer, session, user) = ids();
        let (other_session, other_user) = (SessionId::generate(), UserId::generate());
        keep_now(&cache, &issuer, &session, &user, b"A");
        keep_now(&cache, &issuer, &other_session, &other_user, b"B");
        cache.user_changed(&issuer, &user);
        assert!(cache.get(&issuer, &session, &user).is_none());
        assert!(cache.get(&issuer, &other_session, &other_user).is_some());
        // The same user id under another issuer is another user.
        let elsewhere = IssuerId::generate();
        keep_now(&cache, &elsewhere, &session, &user, b"C");
        cache.user_changed(&IssuerId::generate(), &user);
        assert!(cache.get(&elsewhere, &session, &user).is_some());
        // A read after the change is remembered again.
        keep_now(&cache, &issuer, &session, &user, b"A2");
        assert_eq!(
            cache.get(&issuer, &session, &user).as_deref(),
            Some(&b"A2"[..])
        );
    }

    #[test]
    fn a_read_that_started_before_a_change_is_not_remembered() {
        let cache = cache();
        let (issuer, session, user) = ids();
        let reading = cache.reading();
        // The change is announced while the store's answer is on its way.
        cache.user_changed(&issuer, &user);
        cache.keep(
            reading,
            &issuer,
            &session,
            (&user, Region::Apac),
            Bytes::from_static(b"old"),
        );
        assert!(cache.get(&issuer, &session, &user).is_none());
    }

    #[test]
    fn an_eu_users_answer_is_remembered_only_by_an_edge_in_the_eu() {
        let (issuer, session, user) = ids();
        let outside = cache();
        outside.keep(
            outside.reading(),
            &issuer,
            &session,
            (&user, Region::Weur),
            Bytes::new(),
        );
        assert!(outside.get(&issuer, &session, &user).is_none());
        let inside = MeCache::new(Duration::from_secs(60), 1 << 20, Jurisdiction::Eu);
        for region in [Region::Weur, Region::Eeur, Region::Wnam] {
            let session = SessionId::generate();
            inside.keep(
                inside.reading(),
                &issuer,
                &session,
                (&user, region),
                Bytes::new(),
            );
            assert!(inside.get(&issuer, &session, &user).is_some(), "{region}");
        }
    }

    #[test]
    fn disabled_or_forgotten_remembers_nothing() {
        let (issuer, session, user) = ids();
        let off = MeCache::new(Duration::ZERO, 1 << 20, Jurisdiction::Eu);
        off.keep(
            off.reading(),
            &issuer,
            &session,
            (&user, Region::Apac),
            Bytes::new(),
        );
        assert!(off.get(&issuer, &session, &user).is_none());
        let cache = cache();
        cache.keep(
            cache.reading(),
            &issuer,
            &session,
            (&user, Region::Apac),
            Bytes::new(),
        );
        cache.forget_all();
        assert!(cache.get(&issuer, &session, &user).is_none());
    }
}
