//! Local-first shared limits (`sync: { interval }` on a window policy in the Redis store). Each
//! instance decides on its own from its last view of the fleet's count, and a thread of its own
//! reconciles with Redis in batches every interval: no Redis round trip on the request path.
//!
//! Each sync **leases** the instance a share of what is left: the limit minus the fleet's count
//! minus the other instances' live leases, split over the live instances (`count.lua`). An
//! instance admits locally only within its lease, and a lease outlives the instance's use of it
//! by an interval, so the fleet never admits past the limit; the price is that an instance with
//! no traffic holds a lease others cannot use until it lapses, so a key whose traffic moves
//! between instances fills up a little more slowly. A key seen for the first time here, at the
//! start of a window, or not synced for a while is decided exactly, in Redis (which leases too).
//!
//! Redis keys: `edgegate:rls:{<key hash>}:<window start ms>` counters and `...:leases` hashes
//! (one hash tag, so a decision's keys share a Cluster slot), and a sorted set
//! `edgegate:rls:instances:<interval ms>` of live instances (score: last heartbeat).

use super::algorithm::Decision;
use crate::config::RedisSpec;
use crate::fleet::link::RedisLink;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

const SHARDS: usize = 16;
/// A key not touched for this many intervals is no longer synced (its next request is decided
/// exactly again).
const RETAIN_INTERVALS: u64 = 20;
/// A view older than this many intervals is not trusted.
const STALE_INTERVALS: u64 = 4;
/// Keys synced per round at most (the rest wait for the next round).
const MAX_BATCH: usize = 20_000;
/// Concurrent script calls in one round.
const IN_FLIGHT: usize = 256;
/// Key of the live-instance set (per sync interval).
const INSTANCES_KEY: &str = "edgegate:rls:instances";

/// One key's local view and local counts.
struct Counter {
    /// `edgegate:rls:{hash}` (without the window).
    base: Arc<str>,
    limit: u64,
    window_ms: u64,
    sliding: bool,
    /// Start (Redis clock, ms) of the window the counts below are for.
    window_start: u64,
    /// The fleet's count in this window at the last sync (this instance's pushes included).
    fleet_current: u64,
    /// The fleet's count in the previous window (sliding windows).
    fleet_previous: u64,
    /// Admitted here, being pushed by the sync in progress.
    in_flight: u64,
    /// Admitted here since the last collection.
    unpushed: u64,
    /// Admitted here under the current lease.
    granted: u64,
    /// This instance's lease: what it may admit until the next sync answers.
    allowance: u64,
    /// Local clock (ms since the store's epoch) of the last sync answer and the last request.
    synced_at: u64,
    touched_at: u64,
}

impl Counter {
    /// A key's counter for the window starting at `window_start`, with nothing counted yet.
    fn fresh(
        base: Arc<str>,
        limit: u64,
        window_ms: u64,
        sliding: bool,
        window_start: u64,
        local: u64,
    ) -> Self {
        Counter {
            base,
            limit,
            window_ms,
            sliding,
            window_start,
            fleet_current: 0,
            fleet_previous: 0,
            in_flight: 0,
            unpushed: 0,
            granted: 0,
            allowance: 0,
            synced_at: local,
            touched_at: local,
        }
    }

    fn window_key(&self, start: u64) -> String {
        format!("{}:{start}", self.base)
    }

    /// This key's part of a sync (or exact) call at `now`, pushing `push` admissions.
    fn pending(&self, key: u128, now: u64, push: u64) -> Pending {
        Pending {
            key,
            window_start: self.window_start,
            window_ms: self.window_ms,
            limit: self.limit,
            weight: self.weight(now),
            current_key: self.window_key(self.window_start),
            previous_key: self.window_key(self.window_start.saturating_sub(self.window_ms)),
            leases_key: self.leases_key(),
            push,
        }
    }

    fn leases_key(&self) -> String {
        format!("{}:{}:leases", self.base, self.window_start)
    }

    /// The sliding-window weight argument of `count.lua` at `now` (0 for fixed windows).
    fn weight(&self, now: u64) -> u64 {
        if self.sliding {
            self.window_ms - now.saturating_sub(self.window_start).min(self.window_ms)
        } else {
            0
        }
    }

    /// The previous window's weight in a sliding window at `now`.
    fn previous_weight(&self, now: u64) -> u64 {
        self.fleet_previous * self.weight(now) / self.window_ms.max(1)
    }

    /// Requests counted in the window so far, as far as this instance knows.
    fn used(&self, now: u64) -> u64 {
        self.previous_weight(now) + self.fleet_current + self.in_flight + self.unpushed
    }

    /// Moves the counts to the window that contains `now`; what was not pushed yet for the old
    /// window is returned (key, count) to be pushed there.
    fn roll(&mut self, now: u64) -> Option<(String, u64)> {
        let start = now - now % self.window_ms.max(1);
        if start == self.window_start {
            return None;
        }
        let leftover =
            (self.unpushed > 0).then(|| (self.window_key(self.window_start), self.unpushed));
        let total = self.fleet_current + self.in_flight + self.unpushed;
        self.fleet_previous = if start == self.window_start + self.window_ms {
            total
        } else {
            0
        };
        self.window_start = start;
        self.fleet_current = 0;
        self.in_flight = 0;
        self.unpushed = 0;
        self.granted = 0;
        leftover
    }

    fn decision(&self, allowed: bool, now: u64) -> Decision {
        let reset_ms =
            self.window_start + self.window_ms - now.min(self.window_start + self.window_ms);
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used(now)),
            reset_secs: reset_ms.div_ceil(1000),
            retry_after_secs: if allowed {
                0
            } else {
                reset_ms.div_ceil(1000).max(1)
            },
        }
    }
}

/// What a request needs from the store for one synced policy.
pub struct Ask<'a> {
    pub key: u128,
    /// Builds `edgegate:rls:{hash}` (only when the key is new here).
    pub base: &'a (dyn Fn() -> String + Sync),
    pub limit: u64,
    pub window_ms: u64,
    pub sliding: bool,
}

/// The local views of every synced policy's keys, and the fleet facts the sync keeps fresh.
pub struct SyncedStore {
    shards: Vec<parking_lot::Mutex<HashMap<u128, Counter>>>,
    /// Pushes for windows that ended before their counts were collected.
    leftovers: parking_lot::Mutex<Vec<(String, u64)>>,
    /// Live instances (at least 1).
    instances: AtomicU64,
    /// Redis clock minus the local clock, ms.
    offset_ms: AtomicI64,
    epoch: Instant,
    interval_ms: u64,
    instance: String,
    /// The sync thread's own connection.
    link: Arc<RedisLink>,
    /// The live-instance set of this interval.
    instances_key: String,
    script: redis::Script,
    heartbeat: redis::Script,
}

impl SyncedStore {
    /// A store syncing every `interval` with `redis`; the thread that syncs lives as long as the
    /// store.
    pub fn start(redis: &RedisSpec, interval: Duration) -> std::io::Result<Arc<Self>> {
        let mut spec = redis.clone();
        // Syncs are off the request path: they may take longer than a decision's timeout.
        spec.timeout = spec.timeout.max(interval).max(Duration::from_millis(250));
        let link = Arc::new(RedisLink::new(&spec));
        let store = Arc::new(SyncedStore {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
            leftovers: Default::default(),
            instances: AtomicU64::new(1),
            offset_ms: AtomicI64::new(unix_ms() as i64),
            epoch: Instant::now(),
            interval_ms: interval.as_millis().max(1) as u64,
            instance: format!("{:016x}", rand::random::<u64>()),
            link,
            instances_key: format!("{INSTANCES_KEY}:{}", interval.as_millis()),
            script: redis::Script::new(include_str!("count.lua")),
            heartbeat: redis::Script::new(include_str!("heartbeat.lua")),
        });
        let weak = Arc::downgrade(&store);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("ratelimit-sync".into())
            .spawn(move || runtime.block_on(sync_loop(weak, interval)))?;
        Ok(store)
    }

    fn local_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Now on Redis's clock (as last measured), ms.
    fn now(&self, local: u64) -> u64 {
        (local as i64 + self.offset_ms.load(Relaxed)).max(0) as u64
    }

    fn shard(&self, key: u128) -> &parking_lot::Mutex<HashMap<u128, Counter>> {
        &self.shards[(key >> 96) as usize % SHARDS]
    }

    /// Decides locally from a fresh view; `None` when this key has no fresh view here (decide it
    /// with [`SyncedStore::decide_exactly`]).
    pub fn decide(&self, ask: &Ask<'_>) -> Option<Decision> {
        let local = self.local_ms();
        let now = self.now(local);
        let mut shard = self.shard(ask.key).lock();
        let counter = shard.get_mut(&ask.key)?;
        if local.saturating_sub(counter.synced_at) > STALE_INTERVALS * self.interval_ms {
            return None;
        }
        counter.limit = ask.limit;
        counter.touched_at = local;
        if let Some(leftover) = counter.roll(now) {
            // A new window has no lease yet: decide exactly, which leases.
            counter.allowance = 0;
            self.leftovers.lock().push(leftover);
            return None;
        }
        let allowed = counter.granted < counter.allowance && counter.used(now) < counter.limit;
        if allowed {
            counter.granted += 1;
            counter.unpushed += 1;
        }
        Some(counter.decision(allowed, now))
    }

    /// Gives back one request (another policy refused it).
    pub fn refund(&self, key: u128) {
        if let Some(counter) = self.shard(key).lock().get_mut(&key) {
            counter.unpushed = counter.unpushed.saturating_sub(1);
            counter.granted = counter.granted.saturating_sub(1);
        }
    }

    /// How long a lease stays reserved in Redis: an interval past the moment this instance
    /// stops trusting its view.
    fn lease_ms(&self) -> u64 {
        (STALE_INTERVALS + 1) * self.interval_ms
    }

    /// A run of `count.lua` for `item`: push its admissions, decide one request here too with
    /// `take`, and lease this instance its share among `instances`.
    fn count_call(
        &self,
        item: &Pending,
        take: bool,
        instances: u64,
    ) -> redis::ScriptInvocation<'_> {
        let mut call = self.script.key(&item.current_key);
        call.key(&item.previous_key)
            .key(&item.leases_key)
            .arg(item.push)
            .arg(u8::from(take))
            .arg(item.limit)
            .arg(item.weight)
            .arg(item.window_ms)
            .arg(item.window_ms * 2 + 1_000)
            .arg(&self.instance)
            .arg(instances)
            .arg(self.lease_ms());
        call
    }

    /// Decides in Redis (one round trip over the request path's `link`), leases, and starts
    /// (or resumes) syncing the key.
    pub async fn decide_exactly(
        &self,
        link: &Arc<RedisLink>,
        ask: &Ask<'_>,
    ) -> redis::RedisResult<Decision> {
        let local = self.local_ms();
        let now = self.now(local);
        let window_ms = ask.window_ms.max(1);
        let start = now - now % window_ms;
        // What this instance admitted and has not pushed yet goes with the call.
        let (base, push) = {
            let mut shard = self.shard(ask.key).lock();
            match shard.get_mut(&ask.key) {
                Some(counter) if counter.window_start == start => (
                    Arc::clone(&counter.base),
                    std::mem::take(&mut counter.unpushed),
                ),
                _ => (Arc::from((ask.base)()), 0),
            }
        };
        let mut counter = Counter::fresh(base, ask.limit, window_ms, ask.sliding, start, local);
        let reply = async {
            let mut connection = link.connection().await?;
            let pending = counter.pending(ask.key, now, push);
            self.count_call(&pending, true, self.instances.load(Relaxed))
                .invoke_async::<(u64, u64, u64, u64)>(&mut connection)
                .await
        }
        .await;
        let mut shard = self.shard(ask.key).lock();
        let (admitted, current, previous, lease) = match reply {
            Ok(reply) => reply,
            Err(error) => {
                if let Some(existing) = shard.get_mut(&ask.key) {
                    existing.unpushed += push;
                }
                return Err(error);
            }
        };
        counter.fleet_current = current;
        counter.fleet_previous = if ask.sliding { previous } else { 0 };
        counter.allowance = lease;
        let decision = counter.decision(admitted == 1, now);
        match shard.get_mut(&ask.key) {
            // Admissions made here meanwhile (under a lease a sync brought) stay counted, and
            // come out of the new lease.
            Some(existing) if existing.window_start == start => {
                counter.unpushed = existing.unpushed;
                counter.granted = existing.unpushed;
                counter.in_flight = existing.in_flight;
                *existing = counter;
            }
            Some(existing) => {
                if existing.unpushed > 0 {
                    let leftover = (
                        existing.window_key(existing.window_start),
                        existing.unpushed,
                    );
                    self.leftovers.lock().push(leftover);
                }
                *existing = counter;
            }
            None => {
                shard.insert(ask.key, counter);
            }
        }
        Ok(decision)
    }

    /// One sync round: heartbeat, then push and refresh every key touched lately.
    async fn sync_once(&self) -> redis::RedisResult<()> {
        let mut connection = self.link.connection().await?;
        let sent_at = self.local_ms();
        let (redis_now, instances): (u64, u64) = self
            .heartbeat
            .key(&self.instances_key)
            .arg(&self.instance)
            .arg(self.interval_ms * STALE_INTERVALS.max(3))
            .invoke_async(&mut connection)
            .await?;
        let received_at = self.local_ms();
        let local_mid = (sent_at + received_at) / 2;
        self.offset_ms
            .store(redis_now as i64 - local_mid as i64, Relaxed);
        self.instances.store(instances.max(1), Relaxed);

        let leftovers = std::mem::take(&mut *self.leftovers.lock());
        let pushes = leftovers.into_iter().map(|(key, count)| {
            let mut connection = connection.clone();
            async move {
                let _: redis::RedisResult<()> = redis::cmd("INCRBY")
                    .arg(&key)
                    .arg(count)
                    .query_async(&mut connection)
                    .await;
            }
        });
        futures_util::future::join_all(pushes).await;

        let batch = self.collect();
        for chunk in batch.chunks(IN_FLIGHT) {
            let instances = self.instances.load(Relaxed);
            let calls = chunk.iter().map(|item| {
                let mut connection = connection.clone();
                let call = self.count_call(item, false, instances);
                async move {
                    call.invoke_async::<(u64, u64, u64, u64)>(&mut connection)
                        .await
                }
            });
            let replies = futures_util::future::join_all(calls).await;
            for (item, reply) in chunk.iter().zip(replies) {
                self.answered(item, reply.ok());
            }
        }
        Ok(())
    }

    /// Takes every recently touched key's unpushed count (now in flight); forgets idle keys.
    fn collect(&self) -> Vec<Pending> {
        let local = self.local_ms();
        let now = self.now(local);
        let retain = RETAIN_INTERVALS * self.interval_ms;
        let mut batch = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.retain(|_, counter| {
                local.saturating_sub(counter.touched_at) <= retain || counter.unpushed > 0
            });
            for (key, counter) in shard.iter_mut() {
                if batch.len() >= MAX_BATCH {
                    break;
                }
                if let Some(leftover) = counter.roll(now) {
                    self.leftovers.lock().push(leftover);
                }
                counter.in_flight += counter.unpushed;
                let push = std::mem::take(&mut counter.unpushed);
                batch.push(counter.pending(*key, now, push));
            }
        }
        batch
    }

    /// Applies one key's sync answer (`None`: the call failed; the push is retried next round).
    fn answered(&self, item: &Pending, reply: Option<(u64, u64, u64, u64)>) {
        let local = self.local_ms();
        let mut shard = self.shard(item.key).lock();
        let Some(counter) = shard.get_mut(&item.key) else {
            return;
        };
        if counter.window_start != item.window_start {
            // The window rolled meanwhile: the push landed in the old window's key.
            return;
        }
        counter.in_flight = counter.in_flight.saturating_sub(item.push);
        match reply {
            Some((_, current, previous, lease)) => {
                counter.fleet_current = current;
                counter.fleet_previous = if counter.sliding { previous } else { 0 };
                // What was admitted since the collection was under the old lease, which the
                // new one does not count: it comes out of the new one.
                counter.granted = counter.unpushed;
                counter.allowance = lease;
                counter.synced_at = local;
            }
            None => counter.unpushed += item.push,
        }
    }

    /// Keys held now (for tests and `/status`).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live instances as the last heartbeat counted them.
    pub fn instances(&self) -> u64 {
        self.instances.load(Relaxed)
    }
}

/// One key's part of a sync round.
struct Pending {
    key: u128,
    window_start: u64,
    window_ms: u64,
    limit: u64,
    weight: u64,
    current_key: String,
    previous_key: String,
    leases_key: String,
    push: u64,
}

/// Syncs every `interval` until the store is dropped; failures are logged once per outage.
async fn sync_loop(store: Weak<SyncedStore>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        match store.sync_once().await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    log::info!("rate-limit sync: Redis answers again");
                }
            }
            Err(error) => {
                if !failing {
                    log::warn!(
                        "rate-limit sync: {error}; synced policies fall back to exact decisions (and rate_limits.redis.on_error) until Redis answers"
                    );
                    failing = true;
                }
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(limit: u64, sliding: bool) -> Counter {
        Counter::fresh("k".into(), limit, 1_000, sliding, 10_000, 0)
    }

    #[test]
    fn the_previous_window_weighs_by_its_overlap_in_sliding_windows() {
        let mut c = counter(100, true);
        c.fleet_previous = 60;
        assert_eq!(c.previous_weight(10_000), 60);
        assert_eq!(c.previous_weight(10_250), 45);
        assert_eq!(c.previous_weight(10_999), 0);
        c.fleet_current = 20;
        c.unpushed = 5;
        assert_eq!(c.used(10_500), 30 + 20 + 5);
        assert_eq!(counter(100, false).previous_weight(10_000), 0);
    }

    #[test]
    fn rolling_a_window_returns_what_was_not_pushed_and_carries_the_total() {
        let mut c = counter(100, true);
        c.fleet_current = 40;
        c.in_flight = 3;
        c.unpushed = 2;
        assert_eq!(c.roll(10_999), None, "same window");
        let leftover = c.roll(11_100);
        assert_eq!(leftover, Some(("k:10000".to_string(), 2)));
        assert_eq!(
            (c.window_start, c.fleet_previous, c.fleet_current),
            (11_000, 45, 0)
        );
        assert_eq!((c.in_flight, c.unpushed), (0, 0));
        // Skipping a whole window forgets the previous one.
        assert_eq!(c.roll(13_500), None);
        assert_eq!((c.window_start, c.fleet_previous), (13_000, 0));
    }

    #[test]
    fn a_decision_reports_what_is_left_and_when_the_window_ends() {
        let mut c = counter(10, false);
        c.fleet_current = 7;
        let d = c.decision(true, 10_400);
        assert_eq!(
            (d.limit, d.remaining, d.reset_secs, d.retry_after_secs),
            (10, 3, 1, 0)
        );
        c.fleet_current = 10;
        let d = c.decision(false, 10_400);
        assert_eq!((d.remaining, d.retry_after_secs), (0, 1));
    }
}
