//! The shared store: one round trip per policy decision to a `redis-server`, through a Lua script
//! (`decide.lua`, EVALSHA with a reload on NOSCRIPT) that decides atomically with Redis's clock.
//! Keys carry TTLs. While Redis is unreachable, `on_error` decides; the transitions are logged.

use super::algorithm::{Algorithm, Decision, Quota};
use crate::observability::metrics::RateLimitStoreMetrics;
use log::{info, warn};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Why a decision could not be had from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

/// A Redis connection (made lazily, re-made automatically) and the decision script.
pub struct RedisStore {
    client: redis::Client,
    manager: tokio::sync::OnceCell<ConnectionManager>,
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
    /// A store for `url` (validated at load); nothing is connected until the first decision.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        Ok(RedisStore {
            client,
            manager: tokio::sync::OnceCell::new(),
            script: redis::Script::new(include_str!("decide.lua")),
            timeout,
            unreachable: AtomicBool::new(false),
            metrics: RateLimitStoreMetrics::new(),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreUnavailable> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(100))))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .map_err(|error| {
                warn!("rate-limit store: cannot set up the Redis connection: {error}");
                StoreUnavailable
            })?;
        Ok(manager.clone())
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
        let mut connection = self.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(key)
            .arg(algorithm_name(algorithm))
            .arg(quota.limit)
            .arg(quota.window_ms)
            .arg(quota.burst)
            .arg(if refund { "refund" } else { "take" })
            .arg(ttl_ms.max(1000));
        let reply = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<Vec<u64>>(&mut connection),
        )
        .await;
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match reply {
            Ok(Ok(values)) if values.len() == 5 => {
                if self.unreachable.swap(false, Relaxed) {
                    info!("rate-limit store: Redis answers again");
                }
                Ok(Decision {
                    allowed: values[0] == 1,
                    limit: values[1],
                    remaining: values[2],
                    reset_secs: values[3],
                    retry_after_secs: values[4],
                })
            }
            other => {
                self.metrics.errors.inc();
                if !self.unreachable.swap(true, Relaxed) {
                    let why = match other {
                        Ok(Ok(values)) => format!("unexpected reply {values:?}"),
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => format!("no answer within {:?}", self.timeout),
                    };
                    warn!("rate-limit store: Redis unavailable ({why}); applying rate_limits.redis.on_error");
                }
                Err(StoreUnavailable)
            }
        }
    }
}
