//! The verified-token cache: token -> identity, until the token's `exp`. Sharded, bounded.
//! Keys are the whole token (compared in full on a hit), so a hash collision can never let an
//! unverified token through.

use super::Identity;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Entries per shard; 16 x 1024 tokens of ~1 KiB is ~16 MiB at most.
const SHARD_CAPACITY: usize = 1024;

struct Entry {
    /// Valid while `now <= valid_until` (the token's exp plus clock skew).
    valid_until: u64,
    identity: Arc<Identity>,
}

/// A bounded map from verified token to identity.
pub struct TokenCache {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<Box<str>, Entry>>>,
}

impl TokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        TokenCache {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, token: &str) -> &Mutex<HashMap<Box<str>, Entry>> {
        &self.shards[self.hasher.hash_one(token) as usize % SHARDS]
    }

    /// The identity of `token` if it was verified and is still valid at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Identity>> {
        let shard = self.shard(token).lock().ok()?;
        let entry = shard.get(token)?;
        (now <= entry.valid_until).then(|| Arc::clone(&entry.identity))
    }

    /// Forgets every token (the keys they were verified with may be gone).
    pub fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                shard.clear();
            }
        }
    }

    /// Remembers a verified token until `valid_until`.
    pub fn insert(&self, token: &str, valid_until: u64, identity: &Arc<Identity>) {
        let Ok(mut shard) = self.shard(token).lock() else {
            return;
        };
        if shard.len() >= SHARD_CAPACITY {
            let now = super::jwt::unix_now();
            shard.retain(|_, entry| entry.valid_until >= now);
            if shard.len() >= SHARD_CAPACITY {
                // Still full of live tokens: drop an arbitrary one rather than grow.
                if let Some(victim) = shard.keys().next().cloned() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            token.into(),
            Entry {
                valid_until,
                identity: Arc::clone(identity),
            },
        );
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new()
    }
}
