//! The four rate-limit algorithms as pure state transitions: (state, now) -> (decision, state).
//! Times are milliseconds; bucket levels are kept in thousandths of a request so that refill and
//! drain rates stay exact in integers. The same functions serve every store.

/// Which algorithm a policy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// At most `limit` per window aligned to the clock.
    FixedWindow,
    /// The previous window's count weighted by its overlap, plus the current count.
    SlidingWindow,
    /// `limit` tokens per window refill continuously; holds at most `burst`.
    TokenBucket,
    /// A queue of `burst` draining at `limit` per window; admits while not full.
    LeakyBucket,
}

/// A policy's numbers for one request (tiers already applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub window_ms: u64,
    /// Bucket capacity (token and leaky buckets).
    pub burst: u64,
}

/// One key's state; the meaning of the fields depends on the algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// Window start, or last refill/drain time. 0 = never used.
    pub at: u64,
    /// Count in the current window, or bucket level in thousandths.
    pub value: u64,
    /// Count in the previous window (sliding window).
    pub previous: u64,
}

/// The outcome for one policy, with what the headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the quota is fully available again.
    pub reset_secs: u64,
    /// Seconds to wait before a retry can succeed (0 when allowed).
    pub retry_after_secs: u64,
}

const MILLI: u64 = 1000;

/// Milliseconds for `milli` thousandths of a request to refill (or drain) at `limit` per window.
fn ms_to_flow(quota: Quota, milli: u64) -> u64 {
    (u128::from(milli) * u128::from(quota.window_ms.max(1)))
        .div_ceil(u128::from((quota.limit * MILLI).max(1))) as u64
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Decides one request at `now` (ms, never 0) and returns the new state.
pub fn decide(algorithm: Algorithm, quota: Quota, state: State, now: u64) -> (Decision, State) {
    match algorithm {
        Algorithm::FixedWindow => fixed_window(quota, state, now),
        Algorithm::SlidingWindow => sliding_window(quota, state, now),
        Algorithm::TokenBucket => token_bucket(quota, state, now),
        Algorithm::LeakyBucket => leaky_bucket(quota, state, now),
    }
}

/// At most `limit` per window aligned to the clock.
fn fixed_window(quota: Quota, state: State, now: u64) -> (Decision, State) {
    let limit = quota.limit;
    let window = quota.window_ms.max(1);
    let start = now - now % window;
    let count = if state.at == start { state.value } else { 0 };
    let reset_ms = start + window - now;
    let allowed = count < limit;
    let count = count + u64::from(allowed);
    let decision = Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        reset_secs: ceil_secs(reset_ms),
        retry_after_secs: if allowed {
            0
        } else {
            ceil_secs(reset_ms).max(1)
        },
    };
    (
        decision,
        State {
            at: start,
            value: count,
            previous: 0,
        },
    )
}

/// The previous window's count weighted by its remaining overlap, plus the current count.
fn sliding_window(quota: Quota, state: State, now: u64) -> (Decision, State) {
    let limit = quota.limit;
    let window = quota.window_ms.max(1);
    let start = now - now % window;
    let (current, previous) = if state.at == start {
        (state.value, state.previous)
    } else if state.at + window == start {
        (0, state.value)
    } else {
        (0, 0)
    };
    let elapsed = now - start;
    // estimate x window = previous x (window - elapsed) + current x window
    let weighted = |current: u64| previous * (window - elapsed) + current * window;
    let allowed = weighted(current + 1) <= limit * window;
    let current = current + u64::from(allowed);
    let used = weighted(current).div_ceil(window);
    let reset_ms = start + window - now;
    let retry_after_secs = if allowed {
        0
    } else if current >= limit || previous == 0 {
        ceil_secs(reset_ms).max(1)
    } else {
        // Wait until the previous window's share has decayed enough for one more.
        let room = (limit - current - 1) * window; // what previous x (window - e) may be
        let target_elapsed = window - room / previous;
        ceil_secs(target_elapsed.saturating_sub(elapsed)).max(1)
    };
    let decision = Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(used),
        reset_secs: ceil_secs(reset_ms),
        retry_after_secs,
    };
    (
        decision,
        State {
            at: start,
            value: current,
            previous,
        },
    )
}

/// `limit` tokens per window refill continuously up to `burst`; a request takes one.
fn token_bucket(quota: Quota, state: State, now: u64) -> (Decision, State) {
    let limit = quota.limit;
    let window = quota.window_ms.max(1);
    let burst = quota.burst;
    let capacity = burst.max(1) * MILLI;
    let tokens = if state.at == 0 {
        capacity
    } else {
        let refill = u128::from(now.saturating_sub(state.at)) * u128::from(limit * MILLI)
            / u128::from(window);
        (u128::from(state.value) + refill).min(u128::from(capacity)) as u64
    };
    let allowed = tokens >= MILLI;
    let tokens = tokens - if allowed { MILLI } else { 0 };
    let decision = Decision {
        allowed,
        limit: burst.max(1),
        remaining: tokens / MILLI,
        reset_secs: ceil_secs(ms_to_flow(quota, capacity - tokens)),
        retry_after_secs: if allowed {
            0
        } else {
            ceil_secs(ms_to_flow(quota, MILLI - tokens)).max(1)
        },
    };
    (
        decision,
        State {
            at: now,
            value: tokens,
            previous: 0,
        },
    )
}

/// A queue of `burst` draining at `limit` per window; a request joins while there is room.
fn leaky_bucket(quota: Quota, state: State, now: u64) -> (Decision, State) {
    let limit = quota.limit;
    let window = quota.window_ms.max(1);
    let burst = quota.burst;
    let capacity = burst.max(1) * MILLI;
    let drained =
        u128::from(now.saturating_sub(state.at)) * u128::from(limit * MILLI) / u128::from(window);
    let level = if state.at == 0 {
        0
    } else {
        u128::from(state.value).saturating_sub(drained) as u64
    };
    let allowed = level + MILLI <= capacity;
    let level = level + if allowed { MILLI } else { 0 };
    let decision = Decision {
        allowed,
        limit: burst.max(1),
        remaining: (capacity - level) / MILLI,
        reset_secs: ceil_secs(ms_to_flow(quota, level)),
        retry_after_secs: if allowed {
            0
        } else {
            ceil_secs(ms_to_flow(quota, level + MILLI - capacity)).max(1)
        },
    };
    (
        decision,
        State {
            at: now,
            value: level,
            previous: 0,
        },
    )
}

/// Gives back what an admitted request took (when a later policy rejected it).
pub fn refund(algorithm: Algorithm, state: State) -> State {
    match algorithm {
        Algorithm::FixedWindow | Algorithm::SlidingWindow => State {
            value: state.value.saturating_sub(1),
            ..state
        },
        Algorithm::TokenBucket => State {
            value: state.value + MILLI,
            ..state
        },
        Algorithm::LeakyBucket => State {
            value: state.value.saturating_sub(MILLI),
            ..state
        },
    }
}

/// How long a key must be idle before its state equals a fresh one (so it can be forgotten).
pub fn forget_after_ms(algorithm: Algorithm, quota: Quota) -> u64 {
    let window = quota.window_ms.max(1);
    match algorithm {
        Algorithm::FixedWindow => window,
        Algorithm::SlidingWindow => 2 * window,
        Algorithm::TokenBucket | Algorithm::LeakyBucket => window
            .saturating_mul(quota.burst.max(1))
            .div_ceil(quota.limit.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    const ALL: [Algorithm; 4] = [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
    ];

    fn run(algorithm: Algorithm, quota: Quota, times: &[u64]) -> (Vec<bool>, State) {
        let mut state = State::default();
        let mut allowed = Vec::new();
        for &now in times {
            let (decision, next) = decide(algorithm, quota, state, now);
            allowed.push(decision.allowed);
            state = next;
        }
        (allowed, state)
    }

    fn quota(limit: u64, burst: u64) -> Quota {
        Quota {
            limit,
            window_ms: MINUTE,
            burst,
        }
    }

    #[test]
    fn fixed_window_admits_limit_per_aligned_window() {
        let start = 10 * MINUTE;
        let (allowed, _) = run(
            Algorithm::FixedWindow,
            quota(3, 3),
            &[start, start + 1, start + 2, start + 3],
        );
        assert_eq!(allowed, vec![true, true, true, false]);
        let full = State {
            at: start,
            value: 3,
            previous: 0,
        };
        let (decision, _) = decide(Algorithm::FixedWindow, quota(3, 3), full, start + 15_000);
        assert_eq!(
            (
                decision.allowed,
                decision.retry_after_secs,
                decision.reset_secs
            ),
            (false, 45, 45)
        );
        let (decision, _) = decide(Algorithm::FixedWindow, quota(3, 3), full, start + MINUTE);
        assert!(decision.allowed, "a new window starts fresh");
        assert_eq!(decision.remaining, 2);
    }

    #[test]
    fn sliding_window_has_no_double_burst_at_the_edge() {
        let start = 10 * MINUTE;
        let q = quota(10, 10);
        // 10 requests at the very end of one window...
        let mut state = State::default();
        for i in 0..10 {
            let (d, next) = decide(Algorithm::SlidingWindow, q, state, start + MINUTE - 10 + i);
            assert!(d.allowed);
            state = next;
        }
        // ...leave almost no room at the start of the next one (a fixed window would allow 10 more).
        let mut admitted = 0;
        for i in 0..10 {
            let (d, next) = decide(Algorithm::SlidingWindow, q, state, start + MINUTE + 100 + i);
            admitted += u64::from(d.allowed);
            state = next;
        }
        assert_eq!(admitted, 0);
        // Half-way through, half of the previous window still counts.
        let (d, _) = decide(
            Algorithm::SlidingWindow,
            q,
            state,
            start + MINUTE + MINUTE / 2,
        );
        assert!(d.allowed);
        assert_eq!(d.remaining, 4, "5 weighted + 1 new of 10");
    }

    #[test]
    fn sliding_window_at_twice_the_rate_lets_the_limit_through_per_window() {
        let q = quota(100, 100);
        let mut state = State::default();
        let mut per_window = std::collections::BTreeMap::new();
        // 200 requests per minute, evenly spaced, for 10 minutes.
        for i in 0..2000u64 {
            let now = 60 * MINUTE + i * 300;
            let (d, next) = decide(Algorithm::SlidingWindow, q, state, now);
            state = next;
            *per_window.entry(now / MINUTE).or_insert(0u64) += u64::from(d.allowed);
        }
        for (&window, &admitted) in per_window.iter().skip(1) {
            assert!(
                (95..=105).contains(&admitted),
                "window {window}: {admitted}"
            );
        }
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_refill_rate() {
        let q = Quota {
            limit: 60,
            window_ms: MINUTE,
            burst: 5,
        }; // one token per second
        let t = 1_000_000;
        let (allowed, state) = run(Algorithm::TokenBucket, q, &[t, t, t, t, t, t]);
        assert_eq!(allowed, vec![true, true, true, true, true, false]);
        let (d, _) = decide(Algorithm::TokenBucket, q, state, t + 500);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        let (d, state) = decide(Algorithm::TokenBucket, q, state, t + 1000);
        assert!(d.allowed, "one token after a second");
        let (d, _) = decide(Algorithm::TokenBucket, q, state, t + 60_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4, "refill stops at the burst");
    }

    #[test]
    fn leaky_bucket_admits_while_not_full_and_drains_at_the_rate() {
        let q = Quota {
            limit: 60,
            window_ms: MINUTE,
            burst: 3,
        };
        let t = 1_000_000;
        let (allowed, state) = run(Algorithm::LeakyBucket, q, &[t, t, t, t]);
        assert_eq!(allowed, vec![true, true, true, false]);
        let (d, state) = decide(Algorithm::LeakyBucket, q, state, t + 1000);
        assert!(d.allowed, "one drained after a second");
        let (d, _) = decide(Algorithm::LeakyBucket, q, state, t + 1000);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
    }

    #[test]
    fn refunds_undo_an_admission() {
        for algorithm in ALL {
            let q = quota(5, 5);
            let (_, before) = decide(algorithm, q, State::default(), 1_000_000);
            let (d, after) = decide(algorithm, q, before, 1_000_000);
            assert!(d.allowed);
            assert_eq!(refund(algorithm, after), before, "{algorithm:?}");
        }
    }

    #[test]
    fn idle_keys_become_fresh() {
        let q = quota(10, 10);
        for algorithm in ALL {
            let (_, used) = run(algorithm, q, &[1_000_000; 10]);
            let later = 1_000_000 + forget_after_ms(algorithm, q) + MINUTE;
            let (from_used, _) = decide(algorithm, q, used, later);
            let (from_fresh, _) = decide(algorithm, q, State::default(), later);
            assert_eq!(from_used.remaining, from_fresh.remaining, "{algorithm:?}");
        }
    }
}
