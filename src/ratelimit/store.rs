//! The in-process store: sharded maps of key -> state, bounded by `max_keys`. When a shard is
//! full, keys idle long enough to be equivalent to fresh ones go first (nothing is lost), then
//! the least recently used.

use super::algorithm::State;
use crate::hashing::Prehashed;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 64;

struct Entry {
    state: State,
    last_used: u64,
    /// Idle this long, the state equals a fresh one.
    forget_after: u64,
}

/// Sharded, bounded key -> state map.
pub struct LocalStore {
    shards: Vec<Mutex<HashMap<u128, Entry, Prehashed>>>,
    per_shard: usize,
    epoch: Instant,
}

impl LocalStore {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        LocalStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            per_shard: (max_keys / SHARDS).max(16),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds on the store's clock (never 0).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Runs `update` on `key`'s state (fresh when unknown) and stores the result.
    pub fn update<R>(
        &self,
        key: u128,
        now: u64,
        forget_after: u64,
        update: impl FnOnce(&mut State) -> R,
    ) -> R {
        // The map indexes by the low bits: the shard comes from the high ones.
        let shard = &self.shards[((key >> 64) as usize) % SHARDS];
        let Ok(mut map) = shard.lock() else {
            // A poisoned shard (a panic elsewhere): decide from a fresh state rather than fail.
            return update(&mut State::default());
        };
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            evict(&mut map, now, self.per_shard);
        }
        let entry = map.entry(key).or_insert(Entry {
            state: State::default(),
            last_used: now,
            forget_after,
        });
        entry.last_used = now;
        entry.forget_after = entry.forget_after.max(forget_after);
        update(&mut entry.state)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict(map: &mut HashMap<u128, Entry, Prehashed>, now: u64, capacity: usize) {
    map.retain(|_, entry| now.saturating_sub(entry.last_used) < entry.forget_after);
    if map.len() < capacity {
        return;
    }
    // Still full of live keys: drop the least recently used eighth in one pass.
    let mut ages: Vec<u64> = map.values().map(|e| e.last_used).collect();
    let cut = ages.len() / 8;
    ages.select_nth_unstable(cut);
    let threshold = ages[cut];
    map.retain(|_, entry| entry.last_used > threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_stays_bounded_and_forgets_idle_keys_first() {
        let store = LocalStore::new(SHARDS * 16);
        for key in 0..10_000u128 {
            store.update(key, key as u64 + 1, 1_000_000, |state| state.value += 1);
        }
        assert!(store.len() <= SHARDS * 16, "{}", store.len());
        // A recently used key survives pressure.
        let hot = 9_999u128;
        assert_eq!(store.update(hot, 20_000, 1_000_000, |s| s.value), 1);
        // Idle keys are dropped before live ones.
        let store = LocalStore::new(SHARDS * 16);
        for key in 0..(SHARDS as u128 * 16) {
            store.update(key, 1, 10, |s| s.value = 7);
        }
        store.update(SHARDS as u128 * 16, 1_000, 10, |s| s.value = 1);
        assert!(store.len() <= SHARDS * 16);
    }
}
