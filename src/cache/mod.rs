//! Response caching: a bounded in-memory store, HTTP freshness, the cache key and how a request
//! was answered. The gateway wires these into Pingora's cache phases.

pub mod key;
pub mod policy;
pub mod store;

use crate::config::CacheSettings;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::{CacheablePredictor, Predictor};
use pingora_cache::{CacheOptionOverrides, CachePhase, HttpCache};
use std::sync::OnceLock;
use std::time::Duration;
use store::MemoryStore;

/// Pingora's cache phases need `'static` parts: the process has one store, lock table and
/// predictor, created with the first configuration and resized by later ones.
static STORE: OnceLock<MemoryStore> = OnceLock::new();
static LOCKS: OnceLock<CacheLock> = OnceLock::new();
static PREDICTOR: OnceLock<Predictor<16>> = OnceLock::new();

/// Keys remembered as uncacheable per predictor shard (16 shards).
const PREDICTOR_SHARD_CAPACITY: usize = 1024;

/// A response refused only because the request carried credentials says nothing about the
/// next anonymous request, so it is not remembered as uncacheable.
fn skip_remembering(reason: &'static str) -> bool {
    reason == policy::CREDENTIALS
}

/// The shared response cache as the request path uses it.
pub struct Cache {
    store: &'static MemoryStore,
    locks: &'static CacheKeyLockImpl,
    predictor: &'static (dyn CacheablePredictor + Sync),
    lock_timeout: Duration,
}

impl Cache {
    /// The process-wide cache with `settings` applied.
    pub fn shared(settings: &CacheSettings) -> Cache {
        let mut created = false;
        let store = STORE.get_or_init(|| {
            created = true;
            MemoryStore::new(settings.max_size, settings.max_object_size)
        });
        if !created {
            store.set_limits(settings.max_size, settings.max_object_size);
        }
        store.set_tag_header(settings.tag_header.clone());
        let locks = LOCKS.get_or_init(|| CacheLock::new(settings.lock_timeout));
        let predictor = PREDICTOR
            .get_or_init(|| Predictor::new(PREDICTOR_SHARD_CAPACITY, Some(skip_remembering)));
        Cache {
            store,
            locks,
            predictor,
            lock_timeout: settings.lock_timeout,
        }
    }

    /// The storage, for purging and statistics.
    pub fn store(&self) -> &'static MemoryStore {
        self.store
    }

    /// Turns caching on for one request.
    pub fn enable(&self, cache: &mut HttpCache) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.lock_timeout);
        cache.enable(
            self.store,
            None,
            Some(self.predictor),
            Some(self.locks),
            Some(overrides),
        );
        cache.set_max_file_size_bytes(self.store.max_object_size());
    }
}

/// How the cache answered a request: the `X-Cache` header and the metric's `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache (fresh, or revalidated with the origin).
    Hit,
    /// Fetched from the origin (absent, expired, or the response is not storable).
    Miss,
    /// Served stale because the origin failed (`stale-if-error`).
    Stale,
    /// Served stale while a background request refreshes it (`stale-while-revalidate`).
    Updating,
    /// The cache was not consulted (method, or the key is known not to be storable).
    Bypass,
}

impl CacheStatus {
    /// Every status, in metric-slot order.
    pub const ALL: [CacheStatus; 5] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Bypass,
    ];

    /// The status after the cache phases ran (`looked_up`: the store was consulted).
    pub fn of(phase: CachePhase, looked_up: bool) -> Self {
        match phase {
            CachePhase::Hit | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
                CacheStatus::Hit
            }
            CachePhase::Stale => CacheStatus::Stale,
            CachePhase::StaleUpdating => CacheStatus::Updating,
            CachePhase::Miss | CachePhase::Expired => CacheStatus::Miss,
            // `Uninit` once looked up: an aggregation route looks its store up itself.
            CachePhase::Disabled(_) | CachePhase::Uninit if looked_up => CacheStatus::Miss,
            CachePhase::Disabled(_)
            | CachePhase::Bypass
            | CachePhase::Uninit
            | CachePhase::CacheKey => CacheStatus::Bypass,
        }
    }

    /// The `X-Cache` value.
    pub fn header_value(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Updating => "updating",
            CacheStatus::Bypass => "bypass",
        }
    }

    /// Index into [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The body came from the store.
    pub fn from_store(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Updating
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::NoCacheReason;

    #[test]
    fn phases_map_to_the_five_statuses() {
        assert_eq!(CacheStatus::of(CachePhase::Hit, true), CacheStatus::Hit);
        assert_eq!(
            CacheStatus::of(CachePhase::Revalidated, true),
            CacheStatus::Hit
        );
        assert_eq!(
            CacheStatus::of(CachePhase::Expired, true),
            CacheStatus::Miss
        );
        assert_eq!(CacheStatus::of(CachePhase::Stale, true), CacheStatus::Stale);
        assert_eq!(
            CacheStatus::of(CachePhase::StaleUpdating, true),
            CacheStatus::Updating
        );
        let uncacheable = CachePhase::Disabled(NoCacheReason::OriginNotCache);
        assert_eq!(CacheStatus::of(uncacheable, true), CacheStatus::Miss);
        assert_eq!(CacheStatus::of(uncacheable, false), CacheStatus::Bypass);
        assert_eq!(
            CacheStatus::of(CachePhase::Bypass, false),
            CacheStatus::Bypass
        );
        for (index, status) in CacheStatus::ALL.iter().enumerate() {
            assert_eq!(status.index(), index);
        }
    }
}
