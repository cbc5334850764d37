//! Canary splits: which arm (pool) of a split route a request goes to. A tester's forced arm
//! first, then the caller's sticky arm, else a smooth weighted sequence per request.
//!
//! Sticky callers are placed by weighted rendezvous hashing: each arm scores the caller by
//! `weight / -ln(u)`, `u` a stable hash of (caller, arm name) in (0, 1), and the best score
//! wins. A caller's scores change only with the weights, so a reweighting moves only the
//! callers it must: an arm that grows only gains callers, one that shrinks only loses them,
//! and a new arm only takes callers. The hash is the same in every process and release, so a
//! fleet of gateways agrees on each caller's arm.

use crate::config::{CallerKey, ForceSource, SplitSpec};
use crate::upstream::selection::{hash_bytes, smooth_sequence};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A split route's arms, prepared at load.
pub struct SplitPlan {
    arms: Box<[Arm]>,
    /// Arm indices in a smooth weighted order, for requests without a caller key.
    sequence: Box<[usize]>,
    next: AtomicUsize,
    /// Where a request's caller key comes from (`None`: no stickiness).
    pub sticky: Option<CallerKey>,
    /// Where a tester names the arm to take.
    pub force: Option<ForceSource>,
}

struct Arm {
    pool: usize,
    name: Box<str>,
    weight: f64,
    /// The arm's part of every caller's hash: its name's, so arms keep their callers when
    /// arms are added, removed or reordered.
    seed: u64,
}

/// How the arm was chosen (the access log's `arm_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    Forced,
    Sticky,
    Weighted,
}

impl ChosenBy {
    /// The access-log value.
    pub fn label(self) -> &'static str {
        match self {
            ChosenBy::Forced => "forced",
            ChosenBy::Sticky => "sticky",
            ChosenBy::Weighted => "weighted",
        }
    }
}

/// The arm one request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmChoice {
    /// Index into the split's arms.
    pub arm: usize,
    pub by: ChosenBy,
}

impl SplitPlan {
    /// The plan for `spec`; `pool_name` names each arm's pool.
    pub fn new<'a>(spec: &SplitSpec, pool_name: impl Fn(usize) -> &'a str) -> Self {
        let arms: Box<[Arm]> = spec
            .arms
            .iter()
            .map(|arm| {
                let name = pool_name(arm.upstream);
                Arm {
                    pool: arm.upstream,
                    name: name.into(),
                    weight: f64::from(arm.weight),
                    seed: hash_bytes(name.as_bytes()),
                }
            })
            .collect();
        let weights: Vec<u32> = spec.arms.iter().map(|arm| arm.weight).collect();
        let sequence = smooth_sequence(&weights)
            .into_iter()
            .map(usize::from)
            .collect();
        SplitPlan {
            arms,
            sequence,
            next: AtomicUsize::new(0),
            sticky: spec.sticky.clone(),
            force: spec.force.clone(),
        }
    }

    /// The arm for a request: the one `forced` names (any arm, even one of weight 0, so
    /// testers reach a release before it takes traffic), else the caller's, else the next in
    /// the weighted sequence.
    pub fn choose(&self, forced: Option<&[u8]>, caller: Option<&[u8]>) -> ArmChoice {
        if let Some(arm) = forced.and_then(|name| self.arm_named(name)) {
            return ArmChoice {
                arm,
                by: ChosenBy::Forced,
            };
        }
        if let Some(arm) = caller.and_then(|key| self.sticky_arm(key)) {
            return ArmChoice {
                arm,
                by: ChosenBy::Sticky,
            };
        }
        let arm = match self.sequence.len() {
            0 => 0,
            len => self.sequence[self.next.fetch_add(1, Relaxed) % len],
        };
        ArmChoice {
            arm,
            by: ChosenBy::Weighted,
        }
    }

    /// The pool of `arm`.
    pub fn pool(&self, arm: usize) -> usize {
        self.arms.get(arm).map_or(0, |a| a.pool)
    }

    /// The name of `arm`'s upstream.
    pub fn arm_name(&self, arm: usize) -> &str {
        self.arms.get(arm).map_or("", |a| &a.name)
    }

    /// How many arms there are.
    pub fn len(&self) -> usize {
        self.arms.len()
    }

    /// Whether the split has no arms.
    pub fn is_empty(&self) -> bool {
        self.arms.is_empty()
    }

    fn arm_named(&self, name: &[u8]) -> Option<usize> {
        self.arms.iter().position(|arm| arm.name.as_bytes() == name)
    }

    fn sticky_arm(&self, caller: &[u8]) -> Option<usize> {
        if caller.is_empty() {
            return None;
        }
        let caller = hash_bytes(caller);
        let mut best: Option<(usize, f64)> = None;
        for (index, arm) in self.arms.iter().enumerate() {
            if arm.weight <= 0.0 {
                continue;
            }
            let score = arm.weight / -unit_interval(mix(caller ^ arm.seed)).ln();
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((index, score));
            }
        }
        best.map(|(index, _)| index)
    }
}

/// A 64-bit finaliser (SplitMix64's): every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The top 53 bits as a number strictly between 0 and 1 (so `ln` is finite and negative).
fn unit_interval(hash: u64) -> f64 {
    ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SplitTarget;

    const NAMES: [&str; 4] = ["v1", "v2", "v3", "v4"];

    fn plan(weights: &[(usize, u32)]) -> SplitPlan {
        let spec = SplitSpec {
            arms: weights
                .iter()
                .map(|&(upstream, weight)| SplitTarget { upstream, weight })
                .collect(),
            sticky: Some(CallerKey::Consumer),
            force: None,
        };
        SplitPlan::new(&spec, |pool| NAMES[pool])
    }

    /// The pool each of `n` callers lands on.
    fn placement(plan: &SplitPlan, n: usize) -> Vec<usize> {
        (0..n)
            .map(|caller| {
                let key = format!("user-{caller}");
                plan.pool(plan.choose(None, Some(key.as_bytes())).arm)
            })
            .collect()
    }

    fn share(placement: &[usize], pool: usize) -> f64 {
        placement.iter().filter(|&&p| p == pool).count() as f64 / placement.len() as f64
    }

    /// (from, to) for each caller whose pool changed.
    fn moves(before: &[usize], after: &[usize]) -> Vec<(usize, usize)> {
        before
            .iter()
            .zip(after)
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (*a, *b))
            .collect()
    }

    #[test]
    fn sticky_callers_are_spread_by_weight_and_stay_put() {
        let plan = plan(&[(0, 90), (1, 10)]);
        let first = placement(&plan, 20_000);
        let share_v2 = share(&first, 1);
        assert!((0.09..0.11).contains(&share_v2), "{share_v2}");
        assert_eq!(placement(&plan, 20_000), first);
    }

    #[test]
    fn reweighting_moves_only_the_callers_it_must() {
        let before = placement(&plan(&[(0, 90), (1, 10)]), 20_000);
        let after = placement(&plan(&[(0, 80), (1, 20)]), 20_000);
        let moved = moves(&before, &after);
        let moved_share = moved.len() as f64 / before.len() as f64;
        assert!((0.09..0.11).contains(&moved_share), "{moved_share}");
        assert!(moved.iter().all(|&(from, to)| from == 0 && to == 1));
    }

    #[test]
    fn a_new_arm_only_takes_callers_and_order_does_not_matter() {
        let two = placement(&plan(&[(0, 50), (1, 50)]), 20_000);
        let three = placement(&plan(&[(0, 50), (2, 25), (1, 50)]), 20_000);
        let moved = moves(&two, &three);
        assert!(moved.iter().all(|&(_, to)| to == 2), "{:?}", &moved[..3]);
        let share_v3 = share(&three, 2);
        assert!((0.18..0.22).contains(&share_v3), "{share_v3}");
        let reordered = placement(&plan(&[(1, 50), (0, 50)]), 20_000);
        assert_eq!(reordered, two);
    }

    #[test]
    fn a_drained_arm_gets_no_sticky_callers_but_can_be_forced() {
        let plan = plan(&[(0, 1), (1, 0)]);
        assert!(placement(&plan, 2_000).iter().all(|&p| p == 0));
        let forced = plan.choose(Some(b"v2"), Some(b"user-1"));
        assert_eq!((plan.pool(forced.arm), forced.by), (1, ChosenBy::Forced));
        // A name that is no arm of this split is not a choice.
        let unknown = plan.choose(Some(b"v9"), Some(b"user-1"));
        assert_eq!((plan.pool(unknown.arm), unknown.by), (0, ChosenBy::Sticky));
    }

    #[test]
    fn requests_without_a_caller_follow_the_weighted_sequence() {
        let plan = plan(&[(0, 3), (1, 1)]);
        let picks: Vec<usize> = (0..8)
            .map(|_| {
                let choice = plan.choose(None, None);
                assert_eq!(choice.by, ChosenBy::Weighted);
                plan.pool(choice.arm)
            })
            .collect();
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 2);
        let empty = plan.choose(None, Some(b""));
        assert_eq!(empty.by, ChosenBy::Weighted);
    }
}
