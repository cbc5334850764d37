//! The bounded in-memory [`Storage`] behind every caching route.
//!
//! Entries live in 16 read-mostly shards keyed by the 128-bit cache hash; a hit is a shard read
//! lock, a reference-count bump of the body and an LRU promotion. Writes (a fill, a revalidation,
//! an eviction, a purge) are serialized by one mutex that also guards the purge index, and make
//! room before they insert, so the bytes held never exceed `max_size`. Fills in progress are
//! charged against the same bound as their buffers grow: the stored entries make room for them,
//! and a fill that finds no room left (every byte is held by other fills) stops being a fill,
//! its response streaming on uncached.
//!
//! The LRU is one list (Pingora's `pingora-lru` with a single shard), so eviction order is exact:
//! a sharded LRU evicts from a random shard, which in a small cache can be the object just
//! stored. A promotion is a few pointer writes under that list's lock.

use super::key::url_of;
use crate::observability::metrics::CacheMetrics;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_lru::Lru;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

const SHARDS: usize = 16;
/// Unused fill capacity kept rather than copying the body once more.
const SLACK: usize = 256;
/// A fill's first buffer: what an origin's `Content-Length` alone can make us allocate.
const FIRST_FILL_BUFFER: usize = 64 << 10;

/// Bytes charged per entry on top of its body, headers and URL: the entry record with its
/// response header map, its shard slot, its LRU node and its purge-index slot.
/// `cargo bench --bench cache -- overhead` measures what the allocator really hands out.
pub const ENTRY_OVERHEAD: usize = 1152;
/// Bytes charged per stored header on top of its name and value: its buckets in the header map
/// and in Pingora's case-preserving name map.
pub const HEADER_OVERHEAD: usize = 128;

/// The response metadata of an entry, kept in the form that rebuilds a [`CacheMeta`] without
/// deserializing (Pingora's own encoding compresses headers, which a hit would pay for).
#[derive(Clone)]
struct StoredMeta {
    fresh_until: SystemTime,
    created: SystemTime,
    /// Where age counts from: the last revalidation.
    epoch: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<HashBinary>,
    header: ResponseHeader,
}

impl StoredMeta {
    fn from_meta(meta: &CacheMeta) -> Self {
        StoredMeta {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            epoch: meta.epoch(),
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: meta.response_header_copy(),
        }
    }

    fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        if self.epoch != self.created {
            meta.set_epoch_override(self.epoch);
        }
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        meta
    }

    fn header_bytes(&self) -> usize {
        let header = &self.header;
        let fields: usize = header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
            .sum();
        fields + header.get_reason_phrase().map_or(0, str::len)
    }
}

struct Entry {
    url: Arc<str>,
    /// Purge tags from the response's tag header.
    tags: Box<[Arc<str>]>,
    meta: StoredMeta,
    body: Bytes,
    /// What the entry is charged against `max_size`.
    weight: usize,
}

/// Tags kept per entry, and their longest length: an origin cannot make the index grow
/// without bound through one response.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 256;
/// The index's cost of one tag of one entry, charged to the entry.
const TAG_OVERHEAD: usize = 64;

impl Entry {
    fn new(url: Arc<str>, meta: StoredMeta, body: Bytes, tag_header: &http::HeaderName) -> Self {
        let tags = tags_of(&meta.header, tag_header);
        let weight = body.len()
            + meta.header_bytes()
            + url.len()
            + tags.len() * TAG_OVERHEAD
            + ENTRY_OVERHEAD;
        Entry {
            url,
            tags,
            meta,
            body,
            weight,
        }
    }
}

/// The purge tags a response carries in `name`: separated by commas (`Cache-Tag`) or spaces
/// (`Surrogate-Key`), each once.
fn tags_of(header: &ResponseHeader, name: &http::HeaderName) -> Box<[Arc<str>]> {
    let mut tags: Vec<Arc<str>> = Vec::new();
    for value in header.headers.get_all(name) {
        let Ok(text) = value.to_str() else { continue };
        for tag in text.split(|c: char| c == ',' || c.is_ascii_whitespace()) {
            if tags.len() == MAX_TAGS {
                break;
            }
            if !tag.is_empty() && tag.len() <= MAX_TAG_LEN && !tags.iter().any(|t| &**t == tag) {
                tags.push(Arc::from(tag));
            }
        }
    }
    tags.into_boxed_slice()
}

/// Which entries a purge picks.
pub enum Selection<'a> {
    /// Every route and variant of one `host/path?query`.
    Url(&'a str),
    /// Every URL starting so.
    Prefix(&'a str),
    /// Every entry carrying any of these tags.
    Tags(&'a [String]),
}

/// What a purge does to the entries it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    Remove,
    /// Soft purge: stale at once, revalidated before the next use.
    MarkStale,
}

/// Counters shown in `/status`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Usage {
    pub entries: usize,
    pub bytes: usize,
    /// Buffers of fills in progress, charged against `max_size` too.
    pub filling: usize,
    pub max_size: usize,
    pub evictions: u64,
}

/// Where each URL's entries (one per route and variant) are, for purging.
/// Where entries are found for purging: by URL (ordered, for prefixes) and by tag.
#[derive(Default)]
struct Index {
    urls: BTreeMap<Arc<str>, Vec<u128>>,
    tags: HashMap<Arc<str>, Vec<u128>>,
}

fn unlist(list: &mut HashMap<Arc<str>, Vec<u128>>, key: &Arc<str>, hash: u128) {
    if let Some(hashes) = list.get_mut(key) {
        hashes.retain(|h| *h != hash);
        if hashes.is_empty() {
            list.remove(key);
        }
    }
}

/// The bounded in-memory cache storage.
pub struct MemoryStore {
    shards: [RwLock<HashMap<u128, Arc<Entry>>>; SHARDS],
    /// Serializes every change and holds the purge index.
    writer: Mutex<Index>,
    /// The response header whose values are an entry's purge tags.
    tag_header: RwLock<http::HeaderName>,
    lru: Lru<u128, 1>,
    max_size: AtomicUsize,
    max_object_size: AtomicUsize,
    bytes: AtomicUsize,
    /// Charged to fills in progress (changed under the writer lock); the LRU's limit is
    /// `max_size` minus this.
    filling: AtomicUsize,
    entries: AtomicUsize,
    evictions: AtomicU64,
    metrics: CacheMetrics,
}

fn slot(hash: u128) -> u64 {
    hash as u64
}

fn hash_of(binary: HashBinary) -> u128 {
    u128::from_be_bytes(binary)
}

impl MemoryStore {
    /// An empty store holding at most `max_size` bytes, objects up to `max_object_size`.
    pub fn new(max_size: usize, max_object_size: usize) -> Self {
        let store = MemoryStore {
            shards: Default::default(),
            writer: Mutex::new(Index::default()),
            tag_header: RwLock::new(http::HeaderName::from_static("cache-tag")),
            lru: Lru::with_capacity(max_size, 1024),
            max_size: AtomicUsize::new(max_size),
            max_object_size: AtomicUsize::new(max_object_size),
            bytes: AtomicUsize::new(0),
            filling: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            metrics: CacheMetrics::new(),
        };
        store.publish();
        store
    }

    /// The response header that tags entries from now on (a reload may change it).
    pub fn set_tag_header(&self, name: http::HeaderName) {
        *self.tag_header.write() = name;
    }

    fn new_entry(&self, url: Arc<str>, meta: StoredMeta, body: Bytes) -> Entry {
        Entry::new(url, meta, body, &self.tag_header.read())
    }

    /// Applies new limits (a reload), evicting at once if the store shrank.
    pub fn set_limits(&self, max_size: usize, max_object_size: usize) {
        let mut index = self.writer.lock();
        self.max_object_size.store(max_object_size, Relaxed);
        self.max_size.store(max_size, Relaxed);
        self.limit_stored(&mut index);
    }

    /// Sets the LRU's limit to what fills leave of `max_size` and evicts down to it (caller
    /// holds the writer lock).
    fn limit_stored(&self, index: &mut Index) {
        let max_size = self.max_size.load(Relaxed);
        self.lru
            .set_weight_limit(max_size.saturating_sub(self.filling.load(Relaxed)));
        self.evict_to_limit(index, None);
        self.publish();
    }

    /// Charges `bytes` more to fills in progress, evicting stored entries to make room; false
    /// (nothing charged) when fills alone would exceed `max_size`.
    fn charge_fill(&self, bytes: usize) -> bool {
        let mut index = self.writer.lock();
        let filling = self.filling.load(Relaxed) + bytes;
        if filling > self.max_size.load(Relaxed) {
            return false;
        }
        self.filling.store(filling, Relaxed);
        self.limit_stored(&mut index);
        true
    }

    /// Gives back `bytes` charged to a fill (caller holds the writer lock).
    fn release_fill_locked(&self, bytes: usize) {
        let filling = self.filling.load(Relaxed).saturating_sub(bytes);
        self.filling.store(filling, Relaxed);
        self.lru
            .set_weight_limit(self.max_size.load(Relaxed).saturating_sub(filling));
    }

    /// The largest object stored.
    pub fn max_object_size(&self) -> usize {
        self.max_object_size.load(Relaxed)
    }

    /// Entries, bytes and evictions so far.
    pub fn usage(&self) -> Usage {
        Usage {
            entries: self.entries.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            filling: self.filling.load(Relaxed),
            max_size: self.max_size.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
        }
    }

    fn shard(&self, hash: u128) -> &RwLock<HashMap<u128, Arc<Entry>>> {
        &self.shards[(hash >> 64) as usize % SHARDS]
    }

    fn get(&self, hash: u128) -> Option<Arc<Entry>> {
        self.shard(hash).read().get(&hash).cloned()
    }

    /// The entry under `hash` when it may answer as it is at `now`: fresh, and not one variant of
    /// a `Vary` response (those take Pingora's cache phases, which pick the variant). A hit
    /// promotes the entry as a lookup does.
    pub fn fresh(&self, hash: u128, now: SystemTime) -> Option<FreshHit> {
        let entry = self.get(hash)?;
        let meta = &entry.meta;
        // Pingora's rule (`CacheMeta::is_fresh`): fresh up to and including `fresh_until`.
        if meta.fresh_until < now || meta.variance.is_some() {
            return None;
        }
        self.lru.promote(slot(hash));
        Some(FreshHit {
            header: Box::new(meta.header.clone()),
            body: entry.body.clone(),
            age: now.duration_since(meta.epoch).unwrap_or_default().as_secs(),
        })
    }

    /// Stores `entry` under `hash`, replacing any previous one; evicts first to make room.
    /// Returns the weight stored (0: the entry alone is larger than the store).
    fn commit(&self, hash: u128, entry: Entry) -> usize {
        self.commit_fill(hash, entry, 0)
    }

    /// Stores a whole response the gateway made itself (an aggregated answer) under `hash`,
    /// fresh for `ttl`, purgeable as `url`.
    pub fn insert(
        &self,
        hash: u128,
        url: &str,
        header: ResponseHeader,
        body: Bytes,
        ttl: std::time::Duration,
    ) -> std::result::Result<(), &'static str> {
        if body.len() > self.max_object_size() {
            return Err("it is larger than cache.max_object_size");
        }
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + ttl, now, 0, 0, header);
        let entry = self.new_entry(url.into(), StoredMeta::from_meta(&meta), body);
        match self.commit(hash, entry) {
            0 => Err("it is larger than the whole cache"),
            _ => Ok(()),
        }
    }

    /// `commit` for a fill that had `charged` bytes: they are given back as the entry goes in.
    fn commit_fill(&self, hash: u128, entry: Entry, charged: usize) -> usize {
        let mut index = self.writer.lock();
        self.release_fill_locked(charged);
        self.remove_locked(&mut index, hash);
        let weight = entry.weight;
        self.lru.admit(slot(hash), hash, weight);
        let stored = self.evict_to_limit(&mut index, Some(hash));
        if stored {
            index
                .urls
                .entry(Arc::clone(&entry.url))
                .or_default()
                .push(hash);
            for tag in entry.tags.iter() {
                index.tags.entry(Arc::clone(tag)).or_default().push(hash);
            }
            self.shard(hash).write().insert(hash, Arc::new(entry));
            self.bytes.fetch_add(weight, Relaxed);
            self.entries.fetch_add(1, Relaxed);
        }
        self.publish();
        if stored {
            weight
        } else {
            0
        }
    }

    /// Evicts least recently used entries until the limit holds. Returns false if `admitted`
    /// (just admitted to the LRU, not yet stored) was among them.
    fn evict_to_limit(&self, index: &mut Index, admitted: Option<u128>) -> bool {
        let mut kept = true;
        for (victim, _) in self.lru.evict_to_limit() {
            if Some(victim) == admitted {
                kept = false;
                continue;
            }
            if self.drop_stored(index, victim) {
                self.evictions.fetch_add(1, Relaxed);
                self.metrics.evictions.inc();
            }
        }
        kept
    }

    /// Removes an entry everywhere (caller holds the writer lock).
    fn remove_locked(&self, index: &mut Index, hash: u128) -> bool {
        self.lru.remove(slot(hash));
        self.drop_stored(index, hash)
    }

    /// Removes an entry from its shard and the index; the LRU no longer tracks it.
    fn drop_stored(&self, index: &mut Index, hash: u128) -> bool {
        let Some(entry) = self.shard(hash).write().remove(&hash) else {
            return false;
        };
        if let Some(hashes) = index.urls.get_mut(&entry.url) {
            hashes.retain(|h| *h != hash);
            if hashes.is_empty() {
                index.urls.remove(&entry.url);
            }
        }
        for tag in entry.tags.iter() {
            unlist(&mut index.tags, tag, hash);
        }
        self.bytes.fetch_sub(entry.weight, Relaxed);
        self.entries.fetch_sub(1, Relaxed);
        true
    }

    fn publish(&self) {
        self.metrics.publish(
            self.bytes.load(Relaxed),
            self.entries.load(Relaxed),
            self.max_size.load(Relaxed),
        );
    }

    /// Removes every entry (all routes and variants) of `url` (`host/path?query`).
    pub fn purge_url(&self, url: &str) -> usize {
        self.purge(Selection::Url(url), Purge::Remove)
    }

    /// Removes every entry whose URL starts with `prefix`.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        self.purge(Selection::Prefix(prefix), Purge::Remove)
    }

    /// Removes (or marks stale) the entries `selection` picks; returns how many there were.
    /// Costs the entries picked, not the entries stored.
    pub fn purge(&self, selection: Selection<'_>, how: Purge) -> usize {
        let mut index = self.writer.lock();
        let mut picked: Vec<u128> = match selection {
            Selection::Url(url) => index.urls.get(url).cloned().unwrap_or_default(),
            Selection::Prefix(prefix) => index
                .urls
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(url, _)| url.starts_with(prefix))
                .flat_map(|(_, hashes)| hashes.iter().copied())
                .collect(),
            Selection::Tags(tags) => tags
                .iter()
                .filter_map(|tag| index.tags.get(tag.as_str()))
                .flatten()
                .copied()
                .collect(),
        };
        picked.sort_unstable();
        picked.dedup();
        let count = match how {
            Purge::Remove => picked
                .into_iter()
                .filter(|hash| self.remove_locked(&mut index, *hash))
                .count(),
            Purge::MarkStale => picked
                .into_iter()
                .filter(|hash| self.mark_stale_locked(*hash))
                .count(),
        };
        self.publish();
        count
    }

    /// Makes an entry stale at once (a soft purge): the next request revalidates it, and it may
    /// still answer when the origin fails, within its stale-if-error window.
    fn mark_stale_locked(&self, hash: u128) -> bool {
        let mut shard = self.shard(hash).write();
        let Some(entry) = shard.get(&hash) else {
            return false;
        };
        let stale = SystemTime::now()
            .checked_sub(std::time::Duration::from_secs(1))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut meta = entry.meta.clone();
        meta.fresh_until = meta.fresh_until.min(stale);
        let replaced = Entry {
            url: Arc::clone(&entry.url),
            tags: entry.tags.clone(),
            meta,
            body: entry.body.clone(),
            weight: entry.weight,
        };
        shard.insert(hash, Arc::new(replaced));
        true
    }
}

/// A fresh stored response, as [`MemoryStore::fresh`] hands it out.
pub struct FreshHit {
    /// The stored response header (without `Age`).
    pub header: Box<ResponseHeader>,
    pub body: Bytes,
    /// Seconds since the response was received or last revalidated, the origin's `Age` included
    /// (RFC 9111 §4.2.3): the `Age` to send.
    pub age: u64,
}

/// The bytes a hit handler of this store will still hand out (`None`: another store's).
pub fn hit_body_len(handler: &(dyn HandleHit + Send + Sync)) -> Option<u64> {
    let hit = handler.as_any().downcast_ref::<Hit>()?;
    Some(if hit.done {
        0
    } else {
        hit.end.saturating_sub(hit.start) as u64
    })
}

/// Reads a stored body: one shared buffer, sliced for ranges.
struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done || self.start >= self.end {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek to {start} past the body's {} bytes", self.body.len()),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |end| end.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Collects a response body while it streams to the client; stored when complete.
struct Fill {
    store: &'static MemoryStore,
    hash: u128,
    url: Arc<str>,
    meta: Option<StoredMeta>,
    body: BytesMut,
    /// The body size the origin announced (capped at `max_object_size`; 0: unknown).
    expected: usize,
    /// Bytes charged to the store for `body`'s buffer.
    charged: usize,
}

impl Fill {
    /// Grows the buffer to hold `needed` bytes, charging the store first.
    fn make_room(&mut self, needed: usize) -> Result<()> {
        if needed <= self.body.capacity() {
            return Ok(());
        }
        // Only data that arrived makes the buffer grow: towards the announced size once the
        // first buffer is full (one allocation for an honest origin), else by doubling.
        let target = if self.expected >= needed && self.body.capacity() >= FIRST_FILL_BUFFER {
            self.expected
        } else {
            needed
                .max(self.body.capacity() * 2)
                .max(FIRST_FILL_BUFFER.min(self.expected.max(needed)))
                .min(self.store.max_object_size())
        };
        let more = target.saturating_sub(self.charged);
        if !self.store.charge_fill(more) {
            return Error::e_explain(
                ErrorType::InternalError,
                "fills in progress hold all of cache.max_size; this response is not cached",
            );
        }
        self.charged += more;
        // A buffer of exactly `target` (`reserve` may double past it, beyond what was charged).
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.body);
        self.body = grown;
        Ok(())
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if self.charged > 0 {
            let _index = self.store.writer.lock();
            self.store.release_fill_locked(self.charged);
        }
    }
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        let needed = self.body.len() + data.len();
        if needed > self.store.max_object_size() {
            return Error::e_explain(
                ErrorType::InternalError,
                "the response is larger than cache.max_object_size",
            );
        }
        self.make_room(needed)?;
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let Some(meta) = self.meta.take() else {
            return Error::e_explain(ErrorType::InternalError, "cache fill finished twice");
        };
        // Keep the buffer when it is the body's size, else copy so no slack stays allocated.
        let body = if self.body.capacity() - self.body.len() <= SLACK {
            std::mem::take(&mut self.body).freeze()
        } else {
            Bytes::copy_from_slice(&self.body)
        };
        let url = Arc::clone(&self.url);
        let charged = std::mem::take(&mut self.charged);
        let weight =
            self.store
                .commit_fill(self.hash, self.store.new_entry(url, meta, body), charged);
        Ok(MissFinishType::Created(weight))
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = hash_of(key.combined_bin());
        let Some(entry) = self.get(hash) else {
            return Ok(None);
        };
        self.lru.promote(slot(hash));
        let hit = Hit {
            body: entry.body.clone(),
            start: 0,
            end: entry.body.len(),
            done: false,
        };
        Ok(Some((entry.meta.to_meta(), Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let url: Arc<str> = String::from_utf8_lossy(url_of(key)).into();
        let expected = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(self.max_object_size());
        Ok(Box::new(Fill {
            store: self,
            hash: hash_of(key.combined_bin()),
            url,
            meta: Some(StoredMeta::from_meta(meta)),
            body: BytesMut::new(),
            expected,
            charged: 0,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = hash_of(target.key().combined_bin());
        let removed = {
            let mut index = self.writer.lock();
            let removed = self.remove_locked(&mut index, hash);
            self.publish();
            removed
        };
        Ok(if removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = hash_of(key.combined_bin());
        let Some(old) = self.get(hash) else {
            return Ok(false);
        };
        let entry = self.new_entry(
            Arc::clone(&old.url),
            StoredMeta::from_meta(meta),
            old.body.clone(),
        );
        Ok(self.commit(hash, entry) > 0)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests;
