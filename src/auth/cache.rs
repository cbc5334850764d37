//! The verified-token cache: token -> identity, until the token's `exp`. Sharded, bounded.
//! Entries keep the whole token and a hit compares it in full, so a hash collision can never
//! let an unverified token through; the map itself is keyed by the token's hash, computed once.
//! Only verified tokens are ever inserted, so clients cannot fill a shard with colliding keys and
//! a fast non-cryptographic hash is enough.

use super::Identity;
use crate::hashing::Prehashed;
use foldhash::quality::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Entries per shard; 16 x 1024 tokens of ~1 KiB is ~16 MiB at most.
const SHARD_CAPACITY: usize = 1024;

struct Entry {
    token: Box<str>,
    /// Valid while `now <= valid_until` (the token's exp plus clock skew).
    valid_until: u64,
    identity: Arc<Identity>,
}

/// A bounded map from verified token to identity.
pub struct TokenCache {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<u64, Entry, Prehashed>>>,
}

impl TokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        TokenCache {
            hasher: RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }

    /// The token's hash and its shard (chosen by the high bits; the map uses the low ones).
    fn locate(&self, token: &str) -> (u64, &Mutex<HashMap<u64, Entry, Prehashed>>) {
        let hash = self.hasher.hash_one(token);
        (hash, &self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// The identity of `token` if it was verified and is still valid at `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Identity>> {
        let (hash, shard) = self.locate(token);
        let shard = shard.lock().ok()?;
        let entry = shard.get(&hash)?;
        (*entry.token == *token && now <= entry.valid_until).then(|| Arc::clone(&entry.identity))
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
        let (hash, shard) = self.locate(token);
        let Ok(mut shard) = shard.lock() else {
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
        // A colliding token replaces the one before it, which is then verified again when seen.
        shard.insert(
            hash,
            Entry {
                token: token.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(consumer: &str) -> Arc<Identity> {
        Arc::new(Identity {
            consumer: Some(consumer.into()),
            ..Identity::default()
        })
    }

    #[test]
    fn hits_only_the_same_token_until_it_expires() {
        let cache = TokenCache::new();
        cache.insert("token-a", 100, &identity("alice"));
        cache.insert("token-b", 200, &identity("bob"));
        let consumer = |token: &str, now: u64| {
            cache
                .get(token, now)
                .and_then(|identity| identity.consumer.clone())
        };
        assert_eq!(consumer("token-a", 100).as_deref(), Some("alice"));
        assert_eq!(consumer("token-b", 150).as_deref(), Some("bob"));
        assert_eq!(consumer("token-a", 101), None, "expired");
        assert_eq!(consumer("token-c", 0), None, "never verified");
        assert_eq!(consumer("token-", 0), None, "a prefix is another token");
        cache.clear();
        assert_eq!(consumer("token-b", 150), None);
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::new();
        let alice = identity("alice");
        for n in 0..SHARDS * SHARD_CAPACITY * 2 {
            cache.insert(&format!("token-{n}"), u64::MAX, &alice);
        }
        let held: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS * SHARD_CAPACITY, "{held}");
        let last = format!("token-{}", SHARDS * SHARD_CAPACITY * 2 - 1);
        assert!(cache.get(&last, 0).is_some(), "the newest token is kept");
    }
}
