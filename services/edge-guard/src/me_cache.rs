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
    /// Async so that the requests of one session that miss at the same time
    /// share one store read (`try_get_with`).
    answers: moka::future::Cache<SessionKey, Arc<Remembered>>,
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
                answers: moka::future::Cache::builder()
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
    #[cfg(test)]
    async fn get(&self, issuer: &IssuerId, session: &SessionId, user: &UserId) -> Option<Bytes> {
        let inner = self.inner.as_ref()?;
        let remembered = inner
            .answers
            .get(&(issuer.clone(), session.clone()))
            .await?;
        inner
            .usable(&remembered, issuer, user)
            .then(|| remembered.body.clone())
    }

    /// The answer for this session of a user of `region`: remembered, or
    /// read with `read` once for every request of the session that misses
    /// at the same moment (a popular session whose answer expires does not
    /// send a burst to its store). The second value says whether it came
    /// from memory or from a read (this request's or one it joined: `false`
    /// only for a remembered answer).
    pub async fn answer<R, Fut>(
        &self,
        issuer: &IssuerId,
        session: &SessionId,
        (user, region): (&UserId, Region),
        read: R,
    ) -> Result<(Bytes, bool), idm_core::ApiError>
    where
        R: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, idm_core::ApiError>>,
    {
        let Some(inner) = self.inner.as_ref().filter(|inner| inner.may_keep(region)) else {
            return Ok((read().await?, false));
        };
        let key = (issuer.clone(), session.clone());
        // The clock before anything is read for this request: an answer read
        // before a change it may already have heard of is never served.
        let reading = inner.clock.load(Ordering::Acquire);
        if let Some(remembered) = inner.answers.get(&key).await {
            if inner.usable(&remembered, issuer, user) {
                return Ok((remembered.body.clone(), true));
            }
            inner.answers.invalidate(&key).await;
        }
        let shared = inner
            .answers
            .try_get_with(key, async {
                Ok::<_, idm_core::ApiError>(Arc::new(Remembered {
                    user_id: user.clone(),
                    body: read().await?,
                    read_at: reading,
                }))
            })
            .await
            .map_err(|e| (*e).clone())?;
        // This request's own read, or one that began no earlier than this
        // request did, or one no change of the user has followed: any change
        // it misses came after this request began.
        let current =
            shared.read_at >= reading || !inner.changed_since(issuer, user, shared.read_at);
        if &shared.user_id == user && current {
            return Ok((shared.body.clone(), false));
        }
        // Joined a read that began before a change this request had heard
        // of: read again, for this request alone (the stale entry is never
        // served from memory: `usable` refuses it).
        Ok((read().await?, false))
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
    /// A session id names one user; anything else is not this answer, and
    /// an answer read before its user's latest change is stale.
    fn usable(&self, remembered: &Remembered, issuer: &IssuerId, user: &UserId) -> bool {
        &remembered.user_id == user && !self.changed_since(issuer, user, remembered.read_at)
    }

    /// An EU user's answer is kept only by an edge in the EU.
    fn may_keep(&self, region: Region) -> bool {
        region.jurisdiction() != Jurisdiction::Eu || self.jurisdiction == Jurisdiction::Eu
    }

    fn changed_since(&self, issuer: &IssuerId, user: &UserId, read_at: u64) -> bool {
        self.changed
            .get(&(issuer.clone(), user.clone()))
            .is_some_and(|tick| tick > read_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

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

    /// Asks for the answer of a user outside the EU, read as `body`.
    async fn ask(
        cache: &MeCache,
        issuer: &IssuerId,
        session: &SessionId,
        user: &UserId,
        body: &'static [u8],
    ) -> (Bytes, bool) {
        cache
            .answer(issuer, session, (user, Region::Apac), || async {
                Ok(Bytes::from_static(body))
            })
            .await
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn an_answer_is_used_for_its_own_session_and_user_only() {
        let cache = cache();
        let (issuer, session, user) = ids();
        assert!(!ask(&cache, &issuer, &session, &user, b"A").await.1);
        let again = ask(&cache, &issuer, &session, &user, b"other").await;
        assert_eq!((&again.0[..], again.1), (&b"A"[..], true));
        assert!(cache
            .get(&issuer, &session, &UserId::generate())
            .await
            .is_none());
        assert!(cache
            .get(&issuer, &SessionId::generate(), &user)
            .await
            .is_none());
        assert!(cache
            .get(&IssuerId::generate(), &session, &user)
            .await
            .is_none());
    }

    #[tokio::test]
    async fn a_change_drops_the_users_answers_and_another_users_stay() {
        let cache = cache();
        let (issuer, session, user) = ids();
        let (other_session, other_user) = (SessionId::generate(), UserId::generate());
        ask(&cache, &issuer, &session, &user, b"A").await;
        ask(&cache, &issuer, &other_session, &other_user, b"B").await;
        cache.user_changed(&issuer, &user);
        assert!(cache.get(&issuer, &session, &user).await.is_none());
        assert!(cache
            .get(&issuer, &other_session, &other_user)
            .await
            .is_some());
        // The same user id under another issuer is another user.
        let elsewhere = IssuerId::generate();
        ask(&cache, &elsewhere, &session, &user, b"C").await;
        cache.user_changed(&IssuerId::generate(), &user);
        assert!(cache.get(&elsewhere, &session, &user).await.is_some());
        // A read after the change is remembered again.
        let fresh = ask(&cache, &issuer, &session, &user, b"A2").await;
        assert_eq!((&fresh.0[..], fresh.1), (&b"A2"[..], false));
        assert_eq!(
            cache.get(&issuer, &session, &user).await.as_deref(),
            Some(&b"A2"[..])
        );
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_change_is_not_remembered() {
        let cache = cache();
        let (issuer, session, user) = ids();
        let answered = cache
            .answer(&issuer, &session, (&user, Region::Apac), || async {
                // The change is announced while the store's answer is on its way.
                cache.user_changed(&issuer, &user);
                Ok(Bytes::from_static(b"old"))
            })
            .await;
        assert!(answered.is_ok());
        assert!(cache.get(&issuer, &session, &user).await.is_none());
    }

    #[tokio::test]
    async fn misses_of_one_session_at_the_same_moment_share_one_read() {
        let cache = cache();
        let (issuer, session, user) = ids();
        let reads = AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Bytes::from_static(b"A"))
        };
        let answers = futures::future::join_all(
            (0..8).map(|_| cache.answer(&issuer, &session, (&user, Region::Apac), read)),
        )
        .await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|(b, _)| &b[..] == b"A")));
        // A failed read is shared by the ones that joined it, never kept.
        let other = SessionId::generate();
        let failed = futures::future::join_all((0..4).map(|_| {
            cache.answer(&issuer, &other, (&user, Region::Apac), || async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(idm_core::ApiError::not_found("user"))
            })
        }))
        .await;
        assert!(failed.iter().all(Result::is_err));
        assert!(cache.get(&issuer, &other, &user).await.is_none());
    }

    #[tokio::test]
    async fn a_request_after_a_change_never_takes_a_read_that_began_before_it() {
        let cache = cache();
        let (issuer, session, user) = ids();
        let release = tokio::sync::Notify::new();
        let started = tokio::sync::Notify::new();
        let first = cache.answer(&issuer, &session, (&user, Region::Apac), || async {
            started.notify_one();
            release.notified().await;
            Ok(Bytes::from_static(b"old"))
        });
        let second = async {
            started.notified().await;
            // The change is heard while the first read is in flight; this
            // request starts after it and joins that read.
            cache.user_changed(&issuer, &user);
            let joined = cache.answer(&issuer, &session, (&user, Region::Apac), || async {
                Ok(Bytes::from_static(b"new"))
            });
            let (answer, _) = tokio::join!(joined, async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                release.notify_one();
            });
            answer
        };
        let (first, second) = tokio::join!(first, second);
        // The first request began before the change: its own read is its answer.
        assert_eq!(first.ok().map(|(b, _)| b), Some(Bytes::from_static(b"old")));
        assert_eq!(
            second.ok().map(|(b, _)| b),
            Some(Bytes::from_static(b"new"))
        );
        assert!(cache.get(&issuer, &session, &user).await.is_none());
    }

    #[tokio::test]
    async fn an_eu_users_answer_is_remembered_only_by_an_edge_in_the_eu() {
        let (issuer, session, user) = ids();
        let read = || async { Ok(Bytes::new()) };
        let outside = cache();
        outside
            .answer(&issuer, &session, (&user, Region::Weur), read)
            .await
            .ok();
        assert!(outside.get(&issuer, &session, &user).await.is_none());
        let inside = MeCache::new(Duration::from_secs(60), 1 << 20, Jurisdiction::Eu);
        for region in [Region::Weur, Region::Eeur, Region::Wnam] {
            let session = SessionId::generate();
            inside
                .answer(&issuer, &session, (&user, region), read)
                .await
                .ok();
            assert!(
                inside.get(&issuer, &session, &user).await.is_some(),
                "{region}"
            );
        }
    }

    #[tokio::test]
    async fn disabled_or_forgotten_remembers_nothing() {
        let (issuer, session, user) = ids();
        let off = MeCache::new(Duration::ZERO, 1 << 20, Jurisdiction::Eu);
        ask(&off, &issuer, &session, &user, b"A").await;
        assert!(off.get(&issuer, &session, &user).await.is_none());
        let cache = cache();
        ask(&cache, &issuer, &session, &user, b"A").await;
        cache.forget_all();
        assert!(cache.get(&issuer, &session, &user).await.is_none());
    }
}
