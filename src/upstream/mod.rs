//! Upstream pools: backends with their live state, selection, in-flight accounting and the
//! in-flight cap. Active health checks live in `health`.

pub mod grpc_health;
pub mod health;
pub mod outlier;
pub mod selection;

use crate::config::{HashKey, HealthCheckSpec, OutlierSpec, Selection, UpstreamSpec};
use crate::observability::metrics::{BackendMetrics, PoolMetrics};
use http::HeaderValue;
use log::{info, warn};
use outlier::{Change, Outcome, OutlierState};
use pingora_core::upstreams::peer::HttpPeer;
use selection::{Candidate, Selector};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// One backend of a pool and its live state.
pub struct Backend {
    pub address: SocketAddr,
    /// `ip:port`, as shown in metrics, logs and `/status`.
    pub label: String,
    /// The label as a `Host` value, for a request that came without one (HTTP/1.0).
    pub host: HeaderValue,
    pub weight: u32,
    /// Active health: false keeps the backend out of selection.
    pub healthy: AtomicBool,
    pub in_flight: AtomicU32,
    /// Prebuilt peer with every timeout set; cloned per request.
    pub peer: HttpPeer,
    pub metrics: BackendMetrics,
    /// Passive health from live traffic (used when the pool has `outlier_detection`).
    pub outlier: OutlierState,
    /// Health-check bookkeeping, touched only by the checker task.
    pub(crate) check_streak: health::Streak,
}

impl Candidate for Backend {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }
}

/// A named pool of backends.
pub struct Pool {
    pub name: String,
    pub backends: Vec<Backend>,
    selector: Selector,
    pub hash_key: HashKey,
    pub in_flight: AtomicU32,
    pub max_concurrent_requests: Option<u32>,
    pub health_check: Option<HealthCheckSpec>,
    pub outlier_detection: Option<OutlierSpec>,
    /// Epoch of the millisecond clock that ejection times use.
    clock: Instant,
    /// No backend is healthy and not ejected: ejection is being ignored.
    panic: AtomicBool,
    pub metrics: PoolMetrics,
}

impl Pool {
    /// Builds a pool from its validated spec.
    pub fn new(spec: &UpstreamSpec) -> Self {
        let weights: Vec<u32> = spec.targets.iter().map(|t| t.weight).collect();
        let labels: Vec<String> = spec.targets.iter().map(|t| t.address.to_string()).collect();
        let selector = match spec.selection {
            Selection::RoundRobin => Selector::round_robin(&weights),
            Selection::WeightedRoundRobin => Selector::weighted(&weights),
            Selection::Random => Selector::random(&weights),
            Selection::ConsistentHash => Selector::consistent_hash(&weights, &labels),
            Selection::LeastRequests => Selector::least_requests(),
        };
        let backends = spec
            .targets
            .iter()
            .zip(labels)
            .map(|(target, label)| Backend {
                address: target.address,
                weight: target.weight,
                healthy: AtomicBool::new(true),
                in_flight: AtomicU32::new(0),
                peer: build_peer(spec, target.address),
                metrics: BackendMetrics::new(&spec.name, &label, spec.outlier_detection.is_some()),
                outlier: OutlierState::default(),
                // `ip:port` is always a valid header value; the fallback is never taken.
                host: HeaderValue::from_str(&label)
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                label,
                check_streak: health::Streak::default(),
            })
            .collect();
        Pool {
            name: spec.name.clone(),
            backends,
            selector,
            hash_key: spec.hash_key.clone(),
            in_flight: AtomicU32::new(0),
            max_concurrent_requests: spec.max_concurrent_requests,
            health_check: spec.health_check.clone(),
            outlier_detection: spec.outlier_detection.clone(),
            clock: Instant::now(),
            panic: AtomicBool::new(false),
            metrics: PoolMetrics::new(&spec.name),
        }
    }

    /// Takes over the active-health state of the backends `old` (the same pool before a
    /// reload) has at the same addresses; new backends wait for their first probe.
    pub fn inherit_health(&self, old: &Pool) {
        for backend in &self.backends {
            let Some(previous) = old.backends.iter().find(|b| b.address == backend.address) else {
                continue;
            };
            let healthy = previous.healthy.load(Relaxed);
            backend.healthy.store(healthy, Relaxed);
            backend.metrics.healthy.set(i64::from(healthy));
            backend.check_streak.inherit(&previous.check_streak);
        }
    }

    /// Milliseconds on the pool's ejection clock (never 0, which means "not ejected").
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64 + 1
    }

    fn in_rotation(&self, index: usize, now: u64) -> bool {
        let backend = &self.backends[index];
        backend.weight > 0 && backend.healthy.load(Relaxed) && !backend.outlier.is_ejected(now)
    }

    /// Whether selection needs the request's hash key (consistent hashing).
    pub fn needs_key(&self) -> bool {
        self.selector.needs_key()
    }

    /// A healthy, non-drained, non-ejected backend that `tried` does not contain. When no
    /// backend at all is healthy and not ejected, ejection is ignored (panic mode) rather than
    /// failing every request; unhealthy backends stay out either way.
    pub fn pick(&self, key: u64, tried: &Tried) -> Option<usize> {
        let now = if self.outlier_detection.is_some() {
            self.now_ms()
        } else {
            0
        };
        let picked = self.selector.pick(&self.backends, key, |i| {
            self.in_rotation(i, now) && !tried.contains(i)
        });
        if picked.is_some() || self.outlier_detection.is_none() {
            self.set_panic(false);
            return picked;
        }
        if (0..self.backends.len()).any(|i| self.in_rotation(i, now)) {
            self.set_panic(false);
            return None; // every backend in rotation was already tried by this request
        }
        let picked = self.selector.pick(&self.backends, key, |i| {
            self.backends[i].healthy.load(Relaxed) && !tried.contains(i)
        });
        if picked.is_some() {
            self.set_panic(true);
            self.metrics.panic_requests.inc();
        }
        picked
    }

    fn set_panic(&self, panic: bool) {
        if self.panic.load(Relaxed) != panic && self.panic.swap(panic, Relaxed) != panic {
            self.metrics.panic.set(i64::from(panic));
            if panic {
                warn!("upstream {}: every backend is ejected or unhealthy; panic mode: ignoring ejection", self.name);
            } else {
                info!("upstream {}: leaves panic mode", self.name);
            }
        }
    }

    /// Whether the pool is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.panic.load(Relaxed)
    }

    /// Whether another attempt could find a backend this request has not tried.
    pub fn has_untried(&self, tried: &Tried) -> bool {
        let now = if self.outlier_detection.is_some() {
            self.now_ms()
        } else {
            0
        };
        let untried = |eligible: &dyn Fn(usize) -> bool| {
            (0..self.backends.len()).any(|i| eligible(i) && !tried.contains(i))
        };
        if (0..self.backends.len()).any(|i| self.in_rotation(i, now)) {
            untried(&|i| self.in_rotation(i, now))
        } else {
            untried(&|i| self.backends[i].weight > 0 && self.backends[i].healthy.load(Relaxed))
        }
    }

    /// Feeds one attempt's outcome to the backend's outlier state and acts on it.
    pub fn record(&self, index: usize, outcome: Outcome) {
        let Some(spec) = &self.outlier_detection else {
            return;
        };
        let backend = &self.backends[index];
        let now = self.now_ms();
        self.end_ejection_if_expired(backend, now);
        match backend.outlier.record(outcome, spec) {
            Change::None => {}
            Change::Restored => info!(
                "upstream {} backend {}: passed probation, fresh again",
                self.name, backend.label
            ),
            Change::WantsEjection(reason) => {
                if !self.may_eject_another(spec, now) {
                    log::debug!(
                        "upstream {} backend {}: not ejected, max_ejection_percent reached",
                        self.name,
                        backend.label
                    );
                    return;
                }
                if let Some((until, times)) = backend.outlier.eject(now, spec) {
                    backend.metrics.ejected(reason);
                    warn!(
                        "upstream {} backend {}: ejected for {} ms ({}, ejection #{times})",
                        self.name,
                        backend.label,
                        until - now,
                        reason.label()
                    );
                }
            }
        }
    }

    /// Never more than `max_ejection_percent` of the pool out, but one backend always may be.
    fn may_eject_another(&self, spec: &OutlierSpec, now: u64) -> bool {
        let total = self.backends.len();
        let ejected = self
            .backends
            .iter()
            .filter(|b| b.outlier.is_ejected(now))
            .count();
        if total <= 1 {
            return false;
        }
        ejected == 0 || (ejected + 1) * 100 <= spec.max_ejection_percent as usize * total
    }

    fn end_ejection_if_expired(&self, backend: &Backend, now: u64) {
        if backend.outlier.end_expired(now) {
            backend.metrics.returned();
            info!(
                "upstream {} backend {}: ejection over, back on probation",
                self.name, backend.label
            );
        }
    }

    /// Returns every backend whose ejection time is over (run periodically, so returns are
    /// logged and visible in metrics even without traffic).
    pub fn sweep_ejections(&self) {
        if self.outlier_detection.is_none() {
            return;
        }
        let now = self.now_ms();
        for backend in &self.backends {
            self.end_ejection_if_expired(backend, now);
        }
    }

    /// Whether any backend can take traffic.
    pub fn is_ready(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.weight > 0 && b.healthy.load(Relaxed))
    }

    /// Reserves a request slot in the pool, or None when `max_concurrent_requests` is reached.
    pub fn acquire(self: &Arc<Self>) -> Option<Lease> {
        let previous = self.in_flight.fetch_add(1, Relaxed);
        if let Some(limit) = self.max_concurrent_requests {
            if previous >= limit {
                self.in_flight.fetch_sub(1, Relaxed);
                self.metrics.in_flight_cap_refused.inc();
                return None;
            }
        }
        Some(Lease {
            pool: Arc::clone(self),
            backend: None,
        })
    }
}

/// Concurrent requests multiplexed on one h2 connection to a backend.
const H2_STREAMS_PER_CONNECTION: usize = 100;

fn build_peer(spec: &UpstreamSpec, address: SocketAddr) -> HttpPeer {
    let (tls, sni) = match &spec.tls {
        Some(tls) => (true, tls.sni.clone()),
        None => (false, String::new()),
    };
    let mut peer = HttpPeer::new(address, tls, sni);
    let options = &mut peer.options;
    options.connection_timeout = Some(spec.connect_timeout);
    options.total_connection_timeout = Some(spec.connect_timeout * 2);
    options.read_timeout = Some(spec.read_timeout);
    options.write_timeout = Some(spec.write_timeout);
    options.idle_timeout = Some(spec.idle_timeout);
    if let Some(tls) = &spec.tls {
        options.verify_cert = tls.verify;
        options.verify_hostname = tls.verify;
    }
    if spec.http2 {
        // With TLS, h2 is offered by ALPN with h1 as fallback; without TLS this is h2c (prior knowledge).
        if spec.tls.is_some() {
            options.set_http_version(2, 1);
        } else {
            options.set_http_version(2, 2);
        }
        // Pingora's default of one stream per h2 connection would forgo multiplexing.
        options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer
}

/// Backends one request has already tried (small: retries are capped by configuration).
#[derive(Debug, Default, Clone)]
pub struct Tried {
    indices: [u16; 8],
    len: u8,
}

impl Tried {
    /// Remembers `index`; beyond eight attempts the oldest entries still count.
    pub fn insert(&mut self, index: usize) {
        let slot = usize::from(self.len) % self.indices.len();
        self.indices[slot] = index as u16;
        self.len = self.len.saturating_add(1);
    }

    /// Whether `index` was tried.
    pub fn contains(&self, index: usize) -> bool {
        let used = usize::from(self.len).min(self.indices.len());
        self.indices[..used].contains(&(index as u16))
    }

    /// Number of attempts recorded.
    pub fn count(&self) -> usize {
        usize::from(self.len)
    }
}

/// A reserved slot in a pool (and, once picked, on one backend); released on drop.
pub struct Lease {
    pool: Arc<Pool>,
    backend: Option<usize>,
}

impl Lease {
    /// Moves this request's in-flight count to `backend`.
    pub fn assign(&mut self, backend: usize) {
        if let Some(previous) = self.backend.replace(backend) {
            self.pool.backends[previous].in_flight.fetch_sub(1, Relaxed);
        }
        self.pool.backends[backend].in_flight.fetch_add(1, Relaxed);
    }

    /// The pool this lease is in.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The index of the backend currently assigned.
    pub fn backend_index(&self) -> Option<usize> {
        self.backend
    }

    /// The backend currently assigned.
    pub fn backend(&self) -> Option<&Backend> {
        self.backend.map(|i| &self.pool.backends[i])
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(backend) = self.backend {
            self.pool.backends[backend].in_flight.fetch_sub(1, Relaxed);
        }
        self.pool.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_remembers_attempts() {
        let mut tried = Tried::default();
        assert!(!tried.contains(0));
        tried.insert(3);
        tried.insert(0);
        assert!(tried.contains(3) && tried.contains(0) && !tried.contains(1));
        assert_eq!(tried.count(), 2);
    }
}
