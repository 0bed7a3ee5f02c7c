//! API-key configs cached in memory ("pool insulation"): bounded, with a TTL,
//! concurrent misses for one key coalesced into a single lookup, unknown keys
//! cached negatively, and entries dropped on every replica the moment the
//! account service broadcasts a change.

use idm_bus::Bus;
use idm_core::proto::account::{ConfigChanged, KeyConfig, ResolveKey};
use idm_core::ApiError;
use std::sync::Arc;
use std::time::Duration;

type Entry = Option<Arc<KeyConfig>>;

#[derive(Clone)]
pub struct KeyCache {
    bus: Bus,
    cache: moka::future::Cache<String, Entry>,
}

impl KeyCache {
    pub fn new(bus: Bus, ttl: Duration, capacity: u64) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .support_invalidation_closures()
            .build();
        Self { bus, cache }
    }

    /// The cached answer for this hash, if any (a hit, positive or negative,
    /// never leaves this replica's memory).
    pub async fn cached(&self, key_hash: &str) -> Option<Entry> {
        self.cache.get(key_hash).await
    }

    /// The live key with this hash, or `None`. Lookup failures are not cached.
    pub async fn resolve(&self, key_hash: &str) -> Result<Entry, ApiError> {
        let bus = self.bus.clone();
        let hash = key_hash.to_owned();
        self.cache
            .try_get_with(key_hash.to_owned(), async move {
                metrics::counter!("idm_edge_key_lookups_total").increment(1);
                let resolved = bus.send(&ResolveKey { key_hash: hash }).await?;
                Ok::<_, ApiError>(resolved.key.map(Arc::new))
            })
            .await
            .map_err(|e| (*e).clone())
    }

    /// Drops every cached key (after a bus reconnect: a `config.changed`
    /// broadcast revoking a key or changing a policy may have been missed).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    pub async fn apply(&self, change: &ConfigChanged) {
        if let Some(hash) = &change.key_hash {
            self.cache.invalidate(hash).await;
        }
        let issuer = change.issuer_id.clone();
        // Origins or policy changed: every cached key of the issuer is stale.
        let dropped = self.cache.invalidate_entries_if(move |_, entry| {
            entry.as_ref().is_some_and(|k| k.issuer_id == issuer)
        });
        if let Err(e) = dropped {
            tracing::error!(error = %e, "could not invalidate cached keys; clearing the cache");
            self.cache.invalidate_all();
        }
    }
}
