//! Passive outlier ejection: per-backend streaks fed by live traffic. A backend with too many
//! 5xx or gateway failures in a row is ejected for `base_ejection_time` x (times ejected), capped
//! at `max_ejection_time`; it then returns on probation, where one more failure ejects it again
//! (for longer) and a streak of successes makes it fresh.

use crate::config::OutlierSpec;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Successes in a row after which a backend on probation counts as fresh again.
pub const PROBATION_SUCCESSES: u32 = 5;

/// What one attempt on a backend told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any response below 500.
    Success,
    /// 500, 501, 505.. : the backend answered, badly.
    ServerError,
    /// Connect error, timeout, reset, or a 502/503/504 answer.
    GatewayFailure,
}

impl Outcome {
    /// Classifies a response status.
    pub fn from_status(status: u16) -> Self {
        match status {
            502..=504 => Outcome::GatewayFailure,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}

/// Why a backend was ejected (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGatewayFailures,
    /// A failure while on probation after an earlier ejection.
    Probation,
}

impl Reason {
    /// All reasons, in label order.
    pub const ALL: [Reason; 3] = [
        Reason::Consecutive5xx,
        Reason::ConsecutiveGatewayFailures,
        Reason::Probation,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayFailures => "consecutive_gateway_failures",
            Reason::Probation => "probation",
        }
    }
}

/// What recording an outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The streak calls for ejection (the caller applies the pool's cap, then `eject`).
    WantsEjection(Reason),
    /// A probation streak completed: the backend is fresh again.
    Restored,
}

/// One backend's passive-health state. Times are milliseconds on the pool's clock (never 0).
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Ejected until this time; 0 = in service.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    probation: AtomicBool,
    probation_successes: AtomicU32,
}

/// A snapshot for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierStatus {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failures: u32,
    pub ejected_for_ms: Option<u64>,
    pub times_ejected: u32,
    pub probation: bool,
}

impl OutlierState {
    /// Whether the backend is out of rotation at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && now < until
    }

    /// Ends an expired ejection: true exactly once, when the backend returns on probation.
    pub fn end_expired(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Relaxed);
        if until == 0 || now < until {
            return false;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
        self.probation_successes.store(0, Relaxed);
        self.probation.store(true, Relaxed);
        true
    }

    /// Counts one outcome and says whether it calls for ejection.
    pub fn record(&self, outcome: Outcome, spec: &OutlierSpec) -> Change {
        if self.ejected_until.load(Relaxed) != 0 {
            // Attempts that were in flight when the backend was ejected say nothing new.
            return Change::None;
        }
        match outcome {
            Outcome::Success => {
                self.consecutive_5xx.store(0, Relaxed);
                self.consecutive_gateway.store(0, Relaxed);
                if self.probation.load(Relaxed)
                    && self.probation_successes.fetch_add(1, Relaxed) + 1 >= PROBATION_SUCCESSES
                    && self.probation.swap(false, Relaxed)
                {
                    self.times_ejected.store(0, Relaxed);
                    return Change::Restored;
                }
                Change::None
            }
            Outcome::ServerError | Outcome::GatewayFailure => {
                self.probation_successes.store(0, Relaxed);
                let fives = self.consecutive_5xx.fetch_add(1, Relaxed) + 1;
                let gateway = if outcome == Outcome::GatewayFailure {
                    self.consecutive_gateway.fetch_add(1, Relaxed) + 1
                } else {
                    self.consecutive_gateway.store(0, Relaxed);
                    0
                };
                if self.probation.load(Relaxed) {
                    Change::WantsEjection(Reason::Probation)
                } else if spec.consecutive_gateway_failures > 0
                    && gateway >= spec.consecutive_gateway_failures
                {
                    Change::WantsEjection(Reason::ConsecutiveGatewayFailures)
                } else if spec.consecutive_5xx > 0 && fives >= spec.consecutive_5xx {
                    Change::WantsEjection(Reason::Consecutive5xx)
                } else {
                    Change::None
                }
            }
        }
    }

    /// Ejects the backend from `now`; returns (until, times ejected) or None when another thread
    /// ejected it first.
    pub fn eject(&self, now: u64, spec: &OutlierSpec) -> Option<(u64, u32)> {
        let times = self.times_ejected.load(Relaxed).saturating_add(1);
        let duration = spec
            .base_ejection_time
            .saturating_mul(times)
            .min(spec.max_ejection_time)
            .as_millis() as u64;
        let until = now + duration.max(1);
        self.ejected_until
            .compare_exchange(0, until, Relaxed, Relaxed)
            .ok()?;
        self.times_ejected.store(times, Relaxed);
        self.probation.store(false, Relaxed);
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
        Some((until, times))
    }

    /// The state as `/status` shows it.
    pub fn snapshot(&self, now: u64) -> OutlierStatus {
        let until = self.ejected_until.load(Relaxed);
        OutlierStatus {
            consecutive_5xx: self.consecutive_5xx.load(Relaxed),
            consecutive_gateway_failures: self.consecutive_gateway.load(Relaxed),
            ejected_for_ms: (until != 0 && now < until).then(|| until - now),
            times_ejected: self.times_ejected.load(Relaxed),
            probation: self.probation.load(Relaxed),
        }
    }
}

/// How often expired ejections are ended when no traffic does it first.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Background service that returns backends whose ejection time is over.
pub struct Sweeper {
    pools: super::health::PoolSource,
}

impl Sweeper {
    /// A sweeper for the pools `pools` returns (those with outlier detection).
    pub fn new(pools: super::health::PoolSource) -> Self {
        Sweeper { pools }
    }
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let mut ticker = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    for pool in (self.pools)() {
                        if pool.outlier_detection.is_some() {
                            pool.sweep_ejections();
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec() -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 3,
            consecutive_gateway_failures: 2,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn a_streak_of_5xx_wants_ejection_and_a_success_resets_it() {
        let state = OutlierState::default();
        let spec = spec();
        assert_eq!(state.record(Outcome::ServerError, &spec), Change::None);
        assert_eq!(state.record(Outcome::ServerError, &spec), Change::None);
        assert_eq!(state.record(Outcome::Success, &spec), Change::None);
        assert_eq!(state.record(Outcome::ServerError, &spec), Change::None);
        assert_eq!(state.record(Outcome::ServerError, &spec), Change::None);
        assert_eq!(
            state.record(Outcome::ServerError, &spec),
            Change::WantsEjection(Reason::Consecutive5xx)
        );
    }

    #[test]
    fn gateway_failures_have_their_own_shorter_streak() {
        let state = OutlierState::default();
        let spec = spec();
        assert_eq!(state.record(Outcome::GatewayFailure, &spec), Change::None);
        assert_eq!(
            state.record(Outcome::GatewayFailure, &spec),
            Change::WantsEjection(Reason::ConsecutiveGatewayFailures)
        );
        let state = OutlierState::default();
        state.record(Outcome::GatewayFailure, &spec);
        state.record(Outcome::ServerError, &spec);
        assert_eq!(
            state.record(Outcome::GatewayFailure, &spec),
            Change::WantsEjection(Reason::Consecutive5xx),
            "a 500 breaks the gateway streak but 502s and 500s are all 5xx"
        );
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let state = OutlierState::default();
        let spec = spec();
        assert_eq!(state.eject(1_000, &spec), Some((11_000, 1)));
        assert!(state.is_ejected(10_999) && !state.is_ejected(11_000));
        assert_eq!(state.eject(2_000, &spec), None, "already ejected");
        assert_eq!(
            state.record(Outcome::ServerError, &spec),
            Change::None,
            "no news while ejected"
        );
        assert!(!state.end_expired(10_999));
        assert!(state.end_expired(11_000));
        assert!(!state.end_expired(11_001), "returns once");
        assert!(state.snapshot(11_000).probation);
        assert_eq!(
            state.record(Outcome::GatewayFailure, &spec),
            Change::WantsEjection(Reason::Probation),
            "one failure on probation is enough"
        );
        assert_eq!(
            state.eject(12_000, &spec),
            Some((32_000, 2)),
            "twice the base"
        );
        assert!(state.end_expired(32_000));
        assert_eq!(
            state.eject(40_000, &spec),
            Some((65_000, 3)),
            "capped at max_ejection_time"
        );
    }

    #[test]
    fn a_probation_streak_of_successes_makes_the_backend_fresh() {
        let state = OutlierState::default();
        let spec = spec();
        state.eject(0, &spec);
        state.end_expired(10_000);
        for _ in 1..PROBATION_SUCCESSES {
            assert_eq!(state.record(Outcome::Success, &spec), Change::None);
        }
        assert_eq!(state.record(Outcome::Success, &spec), Change::Restored);
        let snapshot = state.snapshot(10_000);
        assert!(!snapshot.probation);
        assert_eq!(snapshot.times_ejected, 0);
        assert_eq!(
            state.eject(20_000, &spec),
            Some((30_000, 1)),
            "fresh: base time again"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(Outcome::from_status(200), Outcome::Success);
        assert_eq!(Outcome::from_status(404), Outcome::Success);
        assert_eq!(Outcome::from_status(500), Outcome::ServerError);
        assert_eq!(Outcome::from_status(503), Outcome::GatewayFailure);
    }
}
