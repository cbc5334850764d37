//! The in-process store: sharded maps of key -> state, bounded by `max_keys`. A key is only
//! ever dropped once it has been idle long enough to equal a fresh one, so no client's limit is
//! reset by others' traffic. Room is made with bounded work per insert: each shard keeps its keys
//! in a queue and a new key checks at most a few of them, oldest first (a live one goes to the
//! back). When none of them can go, the shard is full of keys in use: the new key is decided
//! as a fresh one and not stored, and the decision is counted.

use super::algorithm::State;
use crate::hashing::Prehashed;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 64;
/// Keys a new key may check for one that can go.
const EVICTION_PROBES: usize = 8;
/// At most one "store full" warning per this many milliseconds.
const FULL_WARNING_EVERY_MS: u64 = 60_000;

struct Entry {
    state: State,
    last_used: u64,
    /// Idle this long, the state equals a fresh one.
    forget_after: u64,
}

impl Entry {
    fn forgettable(&self, now: u64) -> bool {
        now.saturating_sub(self.last_used) >= self.forget_after
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<u128, Entry, Prehashed>,
    /// Every key of `map` once, roughly oldest first.
    order: VecDeque<u128>,
}

impl Shard {
    /// Drops the forgettable keys among the next `EVICTION_PROBES` of the queue; whether any was.
    fn make_room(&mut self, now: u64) -> bool {
        let mut freed = false;
        for _ in 0..EVICTION_PROBES.min(self.order.len()) {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            match self.map.get(&key) {
                Some(entry) if !entry.forgettable(now) => self.order.push_back(key),
                _ => {
                    self.map.remove(&key);
                    freed = true;
                }
            }
        }
        freed
    }
}

/// Sharded, bounded key -> state map.
pub struct LocalStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    epoch: Instant,
    /// When the last "store full" warning was logged (store milliseconds; 0: never).
    warned_full_at: AtomicU64,
}

impl LocalStore {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_keys / SHARDS).max(16),
            epoch: Instant::now(),
            warned_full_at: AtomicU64::new(0),
        }
    }

    /// Milliseconds on the store's clock (never 0).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Runs `update` on `key`'s state (fresh when unknown) and stores the result (not when the
    /// store is full of keys in use).
    pub fn update<R>(
        &self,
        key: u128,
        now: u64,
        forget_after: u64,
        update: impl FnOnce(&mut State) -> R,
    ) -> R {
        // The map indexes by the low bits: the shard comes from the high ones.
        let shard = &self.shards[((key >> 64) as usize) % SHARDS];
        let Ok(mut shard) = shard.lock() else {
            // A poisoned shard (a panic elsewhere): decide from a fresh state rather than fail.
            return update(&mut State::default());
        };
        if !shard.map.contains_key(&key)
            && shard.map.len() >= self.per_shard
            && !shard.make_room(now)
        {
            drop(shard);
            self.full(now);
            return update(&mut State::default());
        }
        let shard = &mut *shard;
        let entry = shard.map.entry(key).or_insert_with(|| {
            shard.order.push_back(key);
            Entry {
                state: State::default(),
                last_used: now,
                forget_after,
            }
        });
        entry.last_used = now;
        entry.forget_after = entry.forget_after.max(forget_after);
        update(&mut entry.state)
    }

    fn full(&self, now: u64) {
        crate::observability::metrics::ratelimit_store_full();
        let last = self.warned_full_at.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= FULL_WARNING_EVERY_MS)
            && self
                .warned_full_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "the local rate-limit store is full of keys in use (rate_limits.max_keys): new keys \
                 are decided as fresh and not tracked until old ones expire"
            );
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok())
            .map(|s| s.map.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPACITY: usize = SHARDS * 16;

    #[test]
    fn the_store_stays_bounded() {
        let store = LocalStore::new(CAPACITY);
        for key in 0..10_000u128 {
            store.update(key << 64 | key, key as u64 + 1, 1_000_000, |state| {
                state.value += 1
            });
        }
        assert!(store.len() <= CAPACITY, "{}", store.len());
    }

    #[test]
    fn a_key_in_use_is_never_reset_by_a_flood_of_new_keys() {
        let store = LocalStore::new(CAPACITY);
        let hot = u128::MAX - 7; // not among the flood's keys
        store.update(hot, 1, 60_000, |state| state.value = 5);
        // 100x the capacity of new keys within the hot key's window.
        for key in 1..=(CAPACITY as u128 * 100) {
            let key = key << 64 | key;
            store.update(key, 2 + (key as u64 % 1000), 60_000, |state| {
                state.value = 1
            });
        }
        assert_eq!(store.update(hot, 30_000, 60_000, |state| state.value), 5);
        assert!(store.len() <= CAPACITY);
    }

    #[test]
    fn keys_idle_past_their_window_make_room_for_new_ones() {
        let store = LocalStore::new(CAPACITY);
        for key in 0..(CAPACITY as u128 * 4) {
            store.update(key << 64 | key, 1, 10, |state| state.value = 7);
        }
        // Much later, every old key is forgettable: every new key is stored.
        let fresh: Vec<u128> = (0..CAPACITY as u128)
            .map(|key| (key + 1_000_000) << 64 | key)
            .collect();
        for &key in &fresh {
            store.update(key, 1_000, 60_000, |state| state.value = 3);
        }
        let kept = fresh
            .iter()
            .filter(|&&key| store.update(key, 1_001, 60_000, |state| state.value) == 3)
            .count();
        // Shards fill unevenly (keys spread by hash), so a few may have found theirs full.
        assert!(kept > CAPACITY * 9 / 10, "{kept}");
    }
}
