//! Purges that reach every instance (`cache.purge_channel`). An instance purges its own cache
//! first, then appends the purge to a log in Redis (a stream under the channel's hash tag,
//! numbered by a sequence) and announces it on the pub/sub channel, in one script. Each
//! instance follows the channel from a thread of its own and keeps a cursor (the log's epoch and
//! the last sequence it has seen): the next number is applied at once; anything else, a
//! reconnection and a periodic check read the log from the cursor. When the log cannot cover
//! what was missed (trimmed, or Redis lost its data and started a new epoch), the whole cache is
//! emptied: no instance keeps serving a purged object.

use super::link::{LinkError, RedisLink};
use crate::cache::store::{MemoryStore, Purge, Selection};
use crate::config::RedisSpec;
use crate::observability::metrics::{self, FleetPurge};
use futures_util::StreamExt;
use log::{info, warn};
use redis::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Entries the log keeps (about; Redis trims in whole nodes).
const LOG_LENGTH: usize = 10_000;
/// Entries read from the log per call while catching up.
const REPLAY_BATCH: usize = 256;
/// How often a follower checks the log even when the channel is quiet.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Purges kept while Redis is unreachable; more collapse into one purge of everything.
const MAX_QUEUED: usize = 1_000;
/// How long the admin API waits to hear that a purge reached Redis.
const PUBLISH_WAIT: Duration = Duration::from_secs(3);
/// Calls of the follower never time out faster than this (purges are off the request path).
const MIN_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// What a purge picks, in the form cache entries are indexed by (`host/path?query`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    Url(String),
    Prefix(String),
    Tags(Vec<String>),
}

/// One purge, as the admin API takes it and the channel carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PurgeOrder {
    #[serde(flatten)]
    pub pick: Pick,
    /// Mark stale instead of removing.
    #[serde(default)]
    pub soft: bool,
}

impl PurgeOrder {
    /// Every entry, removed.
    pub fn everything() -> Self {
        PurgeOrder {
            pick: Pick::Prefix(String::new()),
            soft: false,
        }
    }

    /// Purges `store`; how many entries were picked.
    pub fn apply(&self, store: &MemoryStore) -> usize {
        let how = if self.soft {
            Purge::MarkStale
        } else {
            Purge::Remove
        };
        match &self.pick {
            Pick::Url(url) => store.purge(Selection::Url(url), how),
            Pick::Prefix(prefix) => store.purge(Selection::Prefix(prefix), how),
            Pick::Tags(tags) => store.purge(Selection::Tags(tags), how),
        }
    }
}

/// How far a follower has read the purge log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `None` until the first look at the log.
    epoch: Option<String>,
    last: u64,
}

/// What a follower makes of an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// The very next purge: apply it.
    Next,
    /// Seen already.
    Old,
    /// Something was missed: read the log.
    Gap,
}

/// What a follower does after looking at the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catch {
    /// Nothing new.
    UpToDate,
    /// Apply the log's entries from the cursor on.
    Replay,
    /// The log cannot tell what was missed: empty the cache. The cursor now stands at the
    /// log's end.
    Flush,
}

impl Cursor {
    /// The announcement of purge `seq` in `epoch`.
    pub fn heard(&self, epoch: &str, seq: u64) -> Heard {
        match &self.epoch {
            Some(ours) if ours == epoch && seq == self.last + 1 => Heard::Next,
            Some(ours) if ours == epoch && seq <= self.last => Heard::Old,
            _ => Heard::Gap,
        }
    }

    /// Purge `seq` was applied (or was this instance's own).
    pub fn advance(&mut self, seq: u64) {
        self.last = self.last.max(seq);
    }

    /// The log stands at `seq` in `epoch`; its first entry from the cursor on is `first`.
    pub fn look(&mut self, epoch: &str, seq: u64, first: Option<u64>) -> Catch {
        let same_epoch = self.epoch.as_deref() == Some(epoch);
        let first_look = self.epoch.is_none();
        if first_look || !same_epoch || seq < self.last {
            // A first look adopts the log as it is; a new epoch or a sequence gone backwards
            // (a failover lost writes) means purges may be lost for good.
            self.epoch = Some(epoch.to_string());
            self.last = seq;
            return if first_look {
                Catch::UpToDate
            } else {
                Catch::Flush
            };
        }
        if seq == self.last {
            return Catch::UpToDate;
        }
        if first == Some(self.last + 1) {
            Catch::Replay
        } else {
            // Trimmed past the cursor.
            self.last = seq;
            Catch::Flush
        }
    }

    /// The sequence the log is read from next.
    pub fn next(&self) -> u64 {
        self.last + 1
    }
}

/// Whether a purge reached Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// In the log and announced.
    Published,
    /// Kept until Redis answers again.
    Queued,
}

impl Delivery {
    /// The admin API's word for it.
    pub fn label(self) -> &'static str {
        match self {
            Delivery::Published => "published",
            Delivery::Queued => "queued",
        }
    }
}

struct Request {
    order: PurgeOrder,
    reply: oneshot::Sender<Delivery>,
}

/// This instance's end of the purge channel: a thread follows it until the bus is dropped.
pub struct PurgeBus {
    requests: mpsc::Sender<Request>,
}

impl PurgeBus {
    /// Starts following `channel` over `redis`, purging `store`.
    pub fn start(
        redis: &RedisSpec,
        channel: &str,
        store: &'static MemoryStore,
    ) -> std::io::Result<Self> {
        let (requests, receiver) = mpsc::channel(64);
        let mut spec = redis.clone();
        spec.timeout = spec.timeout.max(MIN_CALL_TIMEOUT);
        let follower = Follower {
            link: Arc::new(RedisLink::new(&spec)),
            channel: channel.to_string(),
            keys: ["epoch", "seq", "log"].map(|part| format!("{{{channel}}}:{part}")),
            origin: format!("{:016x}", rand::random::<u64>()),
            store,
            cursor: Cursor::default(),
            queued: VecDeque::new(),
            down: false,
            requests: receiver,
            publish: redis::Script::new(include_str!("publish.lua")),
            sync: redis::Script::new(include_str!("sync.lua")),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("purge-channel".into())
            .spawn(move || runtime.block_on(follower.run()))?;
        Ok(PurgeBus { requests })
    }

    /// Sends `order` (already applied here) to every other instance.
    pub async fn send(&self, order: PurgeOrder) -> Delivery {
        let (reply, answer) = oneshot::channel();
        let request = Request { order, reply };
        if self.requests.send(request).await.is_err() {
            return Delivery::Queued;
        }
        match tokio::time::timeout(PUBLISH_WAIT, answer).await {
            Ok(Ok(delivery)) => delivery,
            _ => Delivery::Queued,
        }
    }
}

/// Why following stopped.
enum Stop {
    /// The bus was dropped (a reload without the channel, or shutdown).
    Dropped,
    /// Redis went away; try again.
    Lost(String),
}

impl From<LinkError> for Stop {
    fn from(error: LinkError) -> Self {
        Stop::Lost(error.to_string())
    }
}

impl From<redis::RedisError> for Stop {
    fn from(error: redis::RedisError) -> Self {
        Stop::Lost(error.to_string())
    }
}

struct Follower {
    link: Arc<RedisLink>,
    channel: String,
    /// Epoch, sequence and log keys, under one hash tag.
    keys: [String; 3],
    /// Names this process in the log: its own purges are not applied twice.
    origin: String,
    store: &'static MemoryStore,
    cursor: Cursor,
    queued: VecDeque<PurgeOrder>,
    /// Redis is unreachable and that was logged.
    down: bool,
    requests: mpsc::Receiver<Request>,
    publish: redis::Script,
    sync: redis::Script,
}

impl Follower {
    async fn run(mut self) {
        metrics::purge_channel_up(false);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow(&mut backoff).await {
                Stop::Dropped => break,
                Stop::Lost(why) => {
                    metrics::purge_channel_up(false);
                    if !self.down {
                        warn!(
                            "cache.purge_channel `{}`: Redis unreachable ({why}); purges made here are queued and sent when it answers",
                            self.channel
                        );
                        self.down = true;
                    }
                }
            }
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    request = self.requests.recv() => match request {
                        Some(request) => {
                            self.queue(request.order);
                            let _ = request.reply.send(Delivery::Queued);
                        }
                        None => {
                            metrics::purge_channel_up(false);
                            return;
                        }
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        metrics::purge_channel_up(false);
    }

    /// Subscribes, catches up, sends what was queued, then follows until something breaks.
    async fn follow(&mut self, backoff: &mut Duration) -> Stop {
        let mut pubsub = match self.link.subscriber().await {
            Ok(pubsub) => pubsub,
            Err(error) => return error.into(),
        };
        if let Err(error) = pubsub.subscribe(&self.channel).await {
            return error.into();
        }
        // Subscribed before reading the log: nothing falls between the two.
        if let Err(stop) = self.catch_up().await {
            return stop;
        }
        while let Some(order) = self.queued.front().cloned() {
            if let Err(stop) = self.publish(&order).await {
                return stop;
            }
            self.queued.pop_front();
            metrics::fleet_purge(FleetPurge::Published);
        }
        metrics::purge_channel_up(true);
        *backoff = Duration::from_millis(100);
        if std::mem::take(&mut self.down) {
            info!("cache.purge_channel `{}`: following again", self.channel);
        }
        let mut messages = pubsub.into_on_message();
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Stop::Lost("the subscription closed".into());
                    };
                    let payload: String = match message.get_payload() {
                        Ok(payload) => payload,
                        Err(_) => continue,
                    };
                    if let Err(stop) = self.announced(&payload).await {
                        return stop;
                    }
                }
                request = self.requests.recv() => {
                    let Some(request) = request else { return Stop::Dropped };
                    match self.publish(&request.order).await {
                        Ok(()) => {
                            metrics::fleet_purge(FleetPurge::Published);
                            let _ = request.reply.send(Delivery::Published);
                        }
                        Err(stop) => {
                            self.queue(request.order);
                            let _ = request.reply.send(Delivery::Queued);
                            return stop;
                        }
                    }
                }
                _ = resync.tick() => {
                    if let Err(stop) = self.catch_up().await {
                        return stop;
                    }
                }
            }
        }
    }

    /// Keeps `order` until Redis answers; past the bound, everything is purged instead.
    fn queue(&mut self, order: PurgeOrder) {
        metrics::fleet_purge(FleetPurge::Queued);
        if self.queued.len() >= MAX_QUEUED {
            self.queued.clear();
            self.queued.push_back(PurgeOrder::everything());
        } else {
            self.queued.push_back(order);
        }
    }

    /// A call of one of the log's scripts: the epoch, sequence and log keys, and the epoch to
    /// set if Redis holds none (both scripts take them first).
    fn on_log<'s>(&self, script: &'s redis::Script) -> redis::ScriptInvocation<'s> {
        let mut call = script.prepare_invoke();
        for key in &self.keys {
            call.key(key);
        }
        call.arg(epoch_candidate());
        call
    }

    async fn publish(&self, order: &PurgeOrder) -> Result<(), Stop> {
        let json = serde_json::to_string(order).map_err(|e| Stop::Lost(e.to_string()))?;
        let mut connection = self.link.connection().await?;
        let mut call = self.on_log(&self.publish);
        call.arg(&self.origin)
            .arg(json)
            .arg(LOG_LENGTH)
            .arg(&self.channel);
        let result: Result<Value, _> = call.invoke_async(&mut connection).await;
        result.map(drop).map_err(|error| {
            self.link.failed();
            error.into()
        })
    }

    /// An announcement `epoch seq origin json` heard on the channel.
    async fn announced(&mut self, payload: &str) -> Result<(), Stop> {
        let mut fields = payload.splitn(4, ' ');
        let (Some(epoch), Some(Ok(seq)), Some(origin), Some(json)) = (
            fields.next(),
            fields.next().map(str::parse::<u64>),
            fields.next(),
            fields.next(),
        ) else {
            warn!("cache.purge_channel: ignoring a message edgegate did not write: {payload:.80}");
            return Ok(());
        };
        match self.cursor.heard(epoch, seq) {
            Heard::Old => Ok(()),
            Heard::Next => {
                self.take(seq, origin, json);
                Ok(())
            }
            Heard::Gap => self.catch_up().await,
        }
    }

    /// Applies purge `seq` unless it is this instance's own, and moves the cursor past it.
    fn take(&mut self, seq: u64, origin: &str, json: &str) {
        self.cursor.advance(seq);
        if origin == self.origin {
            return;
        }
        match serde_json::from_str::<PurgeOrder>(json) {
            Ok(order) => {
                let purged = order.apply(self.store);
                metrics::fleet_purge(FleetPurge::Applied);
                info!("cache.purge_channel: purge #{seq} from another instance picked {purged} entries");
            }
            Err(error) => warn!("cache.purge_channel: purge #{seq} is unreadable: {error}"),
        }
    }

    /// Reads the log from the cursor and applies what was missed (or empties the cache).
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let mut connection = self.link.connection().await?;
            let mut call = self.on_log(&self.sync);
            call.arg(self.cursor.next()).arg(REPLAY_BATCH);
            let reply: Value = match call.invoke_async(&mut connection).await {
                Ok(reply) => reply,
                Err(error) => {
                    self.link.failed();
                    return Err(error.into());
                }
            };
            let Some((epoch, seq, entries)) = log_state(reply) else {
                return Err(Stop::Lost("unexpected reply to the sync script".into()));
            };
            match self
                .cursor
                .look(&epoch, seq, entries.first().map(|e| e.seq))
            {
                Catch::UpToDate => return Ok(()),
                Catch::Flush => {
                    let purged = PurgeOrder::everything().apply(self.store);
                    metrics::fleet_purge(FleetPurge::Flushed);
                    warn!(
                        "cache.purge_channel `{}`: purges may have been missed (Redis lost or trimmed its purge log); emptied the cache ({purged} entries)",
                        self.channel
                    );
                    return Ok(());
                }
                Catch::Replay => {
                    let before = self.cursor.next();
                    for entry in entries {
                        if entry.seq != self.cursor.next() {
                            break;
                        }
                        self.take(entry.seq, &entry.origin, &entry.purge);
                    }
                    if self.cursor.next() == before {
                        return Err(Stop::Lost("the purge log did not advance".into()));
                    }
                }
            }
        }
    }
}

/// The epoch a call sets when Redis holds none: random, so a dataset started again after a
/// loss never gets the epoch it had.
fn epoch_candidate() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One purge as the log holds it.
struct LogEntry {
    seq: u64,
    origin: String,
    purge: String,
}

/// `{epoch, seq, entries}` from the sync script.
fn log_state(reply: Value) -> Option<(String, u64, Vec<LogEntry>)> {
    let Value::Array(mut parts) = reply else {
        return None;
    };
    if parts.len() != 3 {
        return None;
    }
    let entries = parts.pop()?;
    let seq = parts.pop()?;
    let epoch = parts.pop()?;
    let epoch: String = redis::from_redis_value(epoch).ok()?;
    let seq: u64 = redis::from_redis_value(seq).ok()?;
    let Value::Array(entries) = entries else {
        return None;
    };
    let entries = entries.into_iter().filter_map(log_entry).collect();
    Some((epoch, seq, entries))
}

/// `[id, [field, value, ...]]` with id `SEQ-0`.
fn log_entry(value: Value) -> Option<LogEntry> {
    let (id, fields): (String, Vec<(String, String)>) = redis::from_redis_value(value).ok()?;
    let seq = id.split_once('-')?.0.parse().ok()?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    Some(LogEntry {
        seq,
        origin: field("origin")?,
        purge: field("purge")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_look_adopts_the_log_without_flushing() {
        let mut cursor = Cursor::default();
        assert_eq!(cursor.look("e1", 40, None), Catch::UpToDate);
        assert_eq!(cursor.next(), 41);
        assert_eq!(cursor.heard("e1", 41), Heard::Next);
        assert_eq!(cursor.heard("e1", 40), Heard::Old);
        assert_eq!(cursor.heard("e1", 42), Heard::Gap);
        assert_eq!(cursor.heard("e2", 41), Heard::Gap);
    }

    #[test]
    fn missed_entries_still_in_the_log_are_replayed() {
        let mut cursor = Cursor::default();
        cursor.look("e1", 5, None);
        assert_eq!(cursor.look("e1", 9, Some(6)), Catch::Replay);
        cursor.advance(6);
        assert_eq!(cursor.next(), 7);
        assert_eq!(cursor.look("e1", 9, Some(7)), Catch::Replay);
        cursor.advance(9);
        assert_eq!(cursor.look("e1", 9, None), Catch::UpToDate);
    }

    #[test]
    fn what_the_log_cannot_cover_empties_the_cache() {
        // Trimmed past the cursor.
        let mut cursor = Cursor::default();
        cursor.look("e1", 5, None);
        assert_eq!(cursor.look("e1", 20_000, Some(10_000)), Catch::Flush);
        assert_eq!(cursor.next(), 20_001);
        // Redis lost its data: a new epoch, even with a higher sequence.
        assert_eq!(cursor.look("e2", 30_000, Some(20_001)), Catch::Flush);
        assert_eq!(cursor.heard("e2", 30_001), Heard::Next);
        // A failover lost writes: the sequence went backwards.
        assert_eq!(cursor.look("e2", 12, None), Catch::Flush);
        assert_eq!(cursor.heard("e2", 13), Heard::Next);
    }

    #[test]
    fn orders_travel_as_the_admin_api_writes_them() {
        let order: PurgeOrder =
            serde_json::from_str(r#"{"tags":["a","b"],"soft":true}"#).expect("parses");
        assert_eq!(
            order,
            PurgeOrder {
                pick: Pick::Tags(vec!["a".into(), "b".into()]),
                soft: true
            }
        );
        let json = serde_json::to_string(&PurgeOrder::everything()).expect("serializes");
        assert_eq!(json, r#"{"prefix":"","soft":false}"#);
    }

    #[test]
    fn log_entries_parse_from_xrange_replies() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("e1"),
            Value::Int(7),
            Value::Array(vec![Value::Array(vec![
                bulk("7-0"),
                Value::Array(vec![
                    bulk("origin"),
                    bulk("abc"),
                    bulk("purge"),
                    bulk(r#"{"url":"h/x"}"#),
                ]),
            ])]),
        ]);
        let (epoch, seq, entries) = log_state(reply).expect("parses");
        assert_eq!((epoch.as_str(), seq), ("e1", 7));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].seq, 7);
        assert_eq!(entries[0].origin, "abc");
        assert_eq!(entries[0].purge, r#"{"url":"h/x"}"#);
    }
}
