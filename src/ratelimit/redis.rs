//! The shared store: one round trip per policy decision to Redis (a server, a Sentinel-watched
//! master or a Cluster, through [`RedisLink`]), running a Lua script (`decide.lua`, EVALSHA with
//! a reload on NOSCRIPT) that decides atomically with Redis's clock. A decision touches one key,
//! so it lives in one Cluster slot. Keys carry TTLs. While Redis is unreachable, `on_error`
//! decides; the transitions are logged.

use super::algorithm::{Algorithm, Decision, Quota};
use super::synced::{Ask, SyncedStore};
use crate::config::RedisSpec;
use crate::fleet::link::RedisLink;
use crate::observability::metrics::RateLimitStoreMetrics;
use log::{info, warn};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a decision could not be had from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

/// A Redis connection (made lazily, re-made automatically) and the decision script.
pub struct RedisStore {
    link: Arc<RedisLink>,
    script: redis::Script,
    timeout: Duration,
    unreachable: AtomicBool,
    metrics: RateLimitStoreMetrics,
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::FixedWindow => "fixed_window",
        Algorithm::SlidingWindow => "sliding_window",
        Algorithm::TokenBucket => "token_bucket",
        Algorithm::LeakyBucket => "leaky_bucket",
    }
}

impl RedisStore {
    /// A store on `spec`'s Redis; nothing is connected until the first decision.
    pub fn new(spec: &RedisSpec) -> Self {
        RedisStore {
            link: Arc::new(RedisLink::new(spec)),
            script: redis::Script::new(include_str!("decide.lua")),
            timeout: spec.timeout,
            unreachable: AtomicBool::new(false),
            metrics: RateLimitStoreMetrics::new(),
        }
    }

    /// Takes one request from `key` (or, with `refund`, gives one back).
    pub async fn apply(
        &self,
        key: &str,
        algorithm: Algorithm,
        quota: Quota,
        ttl_ms: u64,
        refund: bool,
    ) -> Result<Decision, StoreUnavailable> {
        let started = Instant::now();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(key)
            .arg(algorithm_name(algorithm))
            .arg(quota.limit)
            .arg(quota.window_ms)
            .arg(quota.burst)
            .arg(if refund { "refund" } else { "take" })
            .arg(ttl_ms.max(1000));
        let mut reply = self.call(&invocation).await;
        if let Ok(Err(error)) = &reply {
            if worth_another_connection(error) {
                // The connection died under us (Redis restarted, a Sentinel failover, an idle
                // socket cut): one more try on a fresh one, so an instance that was idle during
                // the failover does not fail its first request after it.
                self.link.failed();
                reply = self.call(&invocation).await;
            }
        }
        let values = self.settle(started, reply)?;
        if values.len() != 5 {
            self.link.failed();
            self.unavailable(&format!("unexpected reply {values:?}"));
            return Err(StoreUnavailable);
        }
        Ok(Decision {
            allowed: values[0] == 1,
            limit: values[1],
            remaining: values[2],
            reset_secs: values[3],
            retry_after_secs: values[4],
        })
    }

    /// Records a call's duration and what came of it: a recovery is logged; a failure or a
    /// timeout is counted and the connection given up (a Sentinel master is asked for again).
    fn settle<T>(
        &self,
        started: Instant,
        reply: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreUnavailable> {
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        let why = match reply {
            Ok(Ok(value)) => {
                if self.unreachable.swap(false, Relaxed) {
                    info!("rate-limit store: Redis answers again");
                }
                return Ok(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.link.failed();
        self.unavailable(&why);
        Err(StoreUnavailable)
    }

    /// One run of the decision script, bounded by the timeout.
    async fn call(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<redis::RedisResult<Vec<u64>>, tokio::time::error::Elapsed> {
        let deciding = async {
            let mut connection = self.link.connection().await?;
            invocation.invoke_async::<Vec<u64>>(&mut connection).await
        };
        tokio::time::timeout(self.timeout, deciding).await
    }

    /// Decides a local-first policy: from this instance's view when it is fresh, else exactly in
    /// Redis (which starts syncing the key).
    pub async fn decide_synced(
        &self,
        synced: &SyncedStore,
        ask: &Ask<'_>,
        refund: bool,
    ) -> Result<Decision, StoreUnavailable> {
        if refund {
            synced.refund(ask.key);
            return Ok(Decision {
                allowed: true,
                limit: ask.limit,
                remaining: 0,
                reset_secs: 0,
                retry_after_secs: 0,
            });
        }
        if let Some(decision) = synced.decide(ask) {
            return Ok(decision);
        }
        let started = Instant::now();
        let reply =
            tokio::time::timeout(self.timeout, synced.decide_exactly(&self.link, ask)).await;
        self.settle(started, reply)
    }

    /// Counts a failed decision; the first of a run is logged.
    fn unavailable(&self, why: &str) {
        self.metrics.errors.inc();
        if !self.unreachable.swap(true, Relaxed) {
            warn!(
                "rate-limit store: Redis unavailable ({why}); applying rate_limits.redis.on_error"
            );
        }
    }
}

/// Errors a fresh connection may cure: the socket is gone, or the server is no longer the master.
fn worth_another_connection(error: &redis::RedisError) -> bool {
    error.is_connection_dropped()
        || error.is_io_error()
        || error.is_connection_refusal()
        || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}
