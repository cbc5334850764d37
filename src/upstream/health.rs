//! Active health checks: a Pingora background service probing every backend of every pool that
//! has a `health_check`, flipping `Backend::healthy` after the configured streaks.
//! The proxy service depends on it, so no traffic is taken before the first pass is done.
//! After a configuration reload it checks the new pools; a reload probes new backends once
//! before they take traffic (`probe_new_backends`).

use super::{Backend, Pool};
use crate::config::{HealthCheckSpec, Probe};
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::watch;

/// Consecutive probe results of one backend.
#[derive(Debug, Default)]
pub struct Streak {
    successes: AtomicU32,
    failures: AtomicU32,
    /// A first probe has decided this backend's health (its result counts at once).
    probed: AtomicBool,
}

impl Streak {
    /// Carries `other`'s state over (the same backend in a reloaded pool).
    pub fn inherit(&self, other: &Streak) {
        self.successes.store(other.successes.load(Relaxed), Relaxed);
        self.failures.store(other.failures.load(Relaxed), Relaxed);
        self.probed.store(other.probed.load(Relaxed), Relaxed);
    }
}

/// The pools of the configuration in force (it changes on reload).
pub type PoolSource = Arc<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>;

type DynCheck = Arc<dyn HealthCheck + Send + Sync>;

struct CheckedPool {
    pool: Arc<Pool>,
    spec: HealthCheckSpec,
    /// One probe per backend (the HTTP Host header may differ per backend).
    probes: Vec<(DynCheck, pingora_load_balancing::Backend)>,
}

/// The background service running every pool's checks.
pub struct HealthChecker {
    pools: PoolSource,
    /// Bumped after every reload.
    reloads: watch::Receiver<u64>,
}

impl HealthChecker {
    /// Checks the pools `pools` returns, again after each change of `reloads`.
    pub fn new(pools: PoolSource, reloads: watch::Receiver<u64>) -> Self {
        HealthChecker { pools, reloads }
    }
}

/// Probes for every pool with a `health_check`.
fn checked_pools(pools: &[Arc<Pool>]) -> Vec<Arc<CheckedPool>> {
    pools.iter().filter_map(CheckedPool::new).collect()
}

/// Probes, once, the backends of `pools` that have never been probed (a reload's new backends),
/// so they take traffic only if they pass.
pub async fn probe_new_backends(pools: &[Arc<Pool>]) {
    for pool in checked_pools(pools) {
        pool.run_pass(true).await;
    }
}

fn build_probe(spec: &HealthCheckSpec, backend: &Backend) -> DynCheck {
    let tls = backend.peer.is_tls();
    let sni = backend.peer.sni.clone();
    match &spec.probe {
        Probe::Tcp => {
            let mut check = if tls {
                TcpHealthCheck::new_tls(&sni)
            } else {
                TcpHealthCheck::new()
            };
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            Arc::from(check as Box<dyn HealthCheck + Send + Sync>)
        }
        Probe::Grpc { host } => {
            let authority = host.clone().unwrap_or_else(|| backend.label.clone());
            Arc::new(super::grpc_health::GrpcHealthCheck::new(
                &backend.peer,
                authority,
                spec.timeout,
            ))
        }
        Probe::Http {
            path,
            host,
            expected_statuses,
        } => {
            let host = host.clone().unwrap_or_else(|| backend.label.clone());
            let mut check = HttpHealthCheck::new(&host, tls);
            check.peer_template.sni = sni;
            check.peer_template.options.verify_cert = backend.peer.options.verify_cert;
            check.peer_template.options.verify_hostname = backend.peer.options.verify_hostname;
            check.peer_template.options.connection_timeout = Some(spec.timeout);
            check.peer_template.options.read_timeout = Some(spec.timeout);
            check.peer_template.options.write_timeout = Some(spec.timeout);
            if let Ok(mut request) = RequestHeader::build("GET", path.as_bytes(), None) {
                // Validation already checked the path and host; a failure here keeps Pingora's default probe.
                if request
                    .insert_header(http::header::HOST, host.as_str())
                    .is_ok()
                    && request
                        .insert_header(http::header::USER_AGENT, "edgegate-health-check")
                        .is_ok()
                {
                    check.req = request;
                }
            }
            let expected = expected_statuses.clone();
            check.validator = Some(Box::new(move |response| {
                if expected.contains(&response.status.as_u16()) {
                    Ok(())
                } else {
                    pingora_error::Error::e_explain(
                        pingora_error::ErrorType::CustomCode(
                            "unexpected status",
                            response.status.as_u16(),
                        ),
                        "health check",
                    )
                }
            }));
            Arc::new(check)
        }
    }
}

impl CheckedPool {
    fn new(pool: &Arc<Pool>) -> Option<Arc<Self>> {
        let spec = pool.health_check.clone()?;
        let probes = pool
            .backends
            .iter()
            .map(|backend| {
                let target = pingora_load_balancing::Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(backend.address),
                    weight: 1,
                    ext: http::Extensions::new(),
                };
                (build_probe(&spec, backend), target)
            })
            .collect();
        Some(Arc::new(CheckedPool {
            pool: Arc::clone(pool),
            spec,
            probes,
        }))
    }

    /// Probes every backend concurrently and applies the results (`only_new`: just the
    /// backends never probed).
    async fn run_pass(self: &Arc<Self>, only_new: bool) {
        let mut jobs = tokio::task::JoinSet::new();
        for index in 0..self.probes.len() {
            if only_new && self.pool.backends[index].check_streak.probed.load(Relaxed) {
                continue;
            }
            let this = Arc::clone(self);
            jobs.spawn(async move {
                let (probe, target) = &this.probes[index];
                // The probe has its own connect/read timeouts; this bounds anything else (a slow body).
                let limit = this.spec.timeout * 2;
                let result = match tokio::time::timeout(limit, probe.check(target)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {limit:?}")),
                };
                (index, result)
            });
        }
        while let Some(joined) = jobs.join_next().await {
            if let Ok((index, result)) = joined {
                self.apply(&self.pool.backends[index], result);
            }
        }
    }

    fn apply(&self, backend: &Backend, result: Result<(), String>) {
        let was_healthy = backend.healthy.load(Relaxed);
        let streak = &backend.check_streak;
        // The first probe of a backend decides at once; later ones need their streak.
        let first = !streak.probed.swap(true, Relaxed);
        let now_healthy = match &result {
            Ok(()) => {
                streak.failures.store(0, Relaxed);
                let successes = streak.successes.fetch_add(1, Relaxed) + 1;
                was_healthy || first || successes >= self.spec.healthy_threshold
            }
            Err(_) => {
                streak.successes.store(0, Relaxed);
                let failures = streak.failures.fetch_add(1, Relaxed) + 1;
                was_healthy && !first && failures < self.spec.unhealthy_threshold
            }
        };
        if now_healthy == was_healthy && !first {
            return;
        }
        backend.healthy.store(now_healthy, Relaxed);
        backend.metrics.healthy.set(i64::from(now_healthy));
        match result {
            Ok(()) if !was_healthy || first => {
                info!(
                    "upstream {} backend {} is healthy",
                    self.pool.name, backend.label
                )
            }
            Err(error) => warn!(
                "upstream {} backend {} is unhealthy: {error}",
                self.pool.name, backend.label
            ),
            Ok(()) => {}
        }
    }

    async fn run_forever(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(self.spec.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the first pass already ran
        loop {
            tokio::select! {
                _ = ticker.tick() => self.run_pass(false).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let pools = checked_pools(&(self.pools)());
        for pool in &pools {
            pool.run_pass(true).await;
        }
        ready.notify_ready();
        crate::lifecycle::run_each_until_shutdown(
            pools,
            || checked_pools(&(self.pools)()),
            self.reloads.clone(),
            shutdown,
            |pool, shutdown| Arc::clone(pool).run_forever(shutdown),
        )
        .await;
    }
}
