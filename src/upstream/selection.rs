//! Backend selection algorithms. Each one proposes candidates in its own order and takes the
//! first the caller accepts (healthy, not drained, not already tried by this request).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Longest walk along a weighted sequence or hash ring before falling back to a plain scan.
const MAX_SEQUENCE_WALK: usize = 64;
/// Ring points per unit of weight for consistent hashing (as in ketama).
const RING_POINTS_PER_WEIGHT: usize = 160;
/// Ring size beyond which heavy pools get fewer points per unit of weight (never below one), so
/// weights keep their ratio however large they are while the ring stays small.
const MAX_RING_POINTS: usize = 1 << 16;
/// Smooth weighted sequences longer than this are built from proportionally reduced weights.
const MAX_SEQUENCE_LEN: u64 = 1 << 16;

/// What a selector needs to know about one backend.
pub trait Candidate {
    fn weight(&self) -> u32;
    fn in_flight(&self) -> u32;
}

/// A compiled selection algorithm over a fixed backend list.
#[derive(Debug)]
pub enum Selector {
    /// Every non-drained backend in turn, ignoring weights.
    RoundRobin { next: AtomicUsize, order: Vec<u16> },
    /// nginx's smooth weighted round-robin, precomputed as one period (A,A,B,A,A,B for 2:1).
    Weighted {
        next: AtomicUsize,
        sequence: Vec<u16>,
    },
    /// Weighted random choice.
    Random { cumulative: Vec<u64> },
    /// Hash ring: the same key goes to the same backend while it is available.
    ConsistentHash { ring: Vec<(u64, u16)> },
    /// Fewest requests in flight relative to weight; ties rotate.
    LeastRequests { next: AtomicUsize },
}

impl Selector {
    /// A round-robin selector.
    pub fn round_robin(weights: &[u32]) -> Self {
        let order = (0..weights.len())
            .filter(|&i| weights[i] > 0)
            .map(|i| i as u16)
            .collect();
        Selector::RoundRobin {
            next: AtomicUsize::new(0),
            order,
        }
    }

    /// A smooth weighted round-robin selector.
    pub fn weighted(weights: &[u32]) -> Self {
        Selector::Weighted {
            next: AtomicUsize::new(0),
            sequence: smooth_sequence(weights),
        }
    }

    /// A weighted random selector.
    pub fn random(weights: &[u32]) -> Self {
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                total += u64::from(w);
                total
            })
            .collect();
        Selector::Random { cumulative }
    }

    /// A consistent-hash selector; `labels` identify backends so the ring survives reordering.
    pub fn consistent_hash(weights: &[u32], labels: &[String]) -> Self {
        let total_weight: usize = weights.iter().map(|&w| w as usize).sum();
        let per_weight = (MAX_RING_POINTS / total_weight.max(1)).clamp(1, RING_POINTS_PER_WEIGHT);
        let mut ring = Vec::with_capacity(total_weight * per_weight);
        for (index, (&weight, label)) in weights.iter().zip(labels).enumerate() {
            for replica in 0..weight as usize * per_weight {
                let point = hash_bytes(format!("{label}#{replica}").as_bytes());
                ring.push((point, index as u16));
            }
        }
        ring.sort_unstable();
        Selector::ConsistentHash { ring }
    }

    /// A least-requests selector.
    pub fn least_requests() -> Self {
        Selector::LeastRequests {
            next: AtomicUsize::new(0),
        }
    }

    /// Whether this algorithm uses the request's hash key.
    pub fn needs_key(&self) -> bool {
        matches!(self, Selector::ConsistentHash { .. })
    }

    /// The first acceptable backend in this algorithm's order, or None when none is acceptable.
    pub fn pick<C: Candidate>(
        &self,
        backends: &[C],
        key: u64,
        accept: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let usable = |i: usize| backends[i].weight() > 0 && accept(i);
        match self {
            Selector::RoundRobin { next, order } => {
                if order.is_empty() {
                    return None;
                }
                let start = next.fetch_add(1, Relaxed);
                (0..order.len())
                    .map(|step| order[(start + step) % order.len()] as usize)
                    .find(|&i| usable(i))
            }
            Selector::Weighted { next, sequence } => {
                if sequence.is_empty() {
                    return None;
                }
                let start = next.fetch_add(1, Relaxed) % sequence.len();
                let walk = sequence.len().min(MAX_SEQUENCE_WALK);
                (0..walk)
                    .map(|step| sequence[(start + step) % sequence.len()] as usize)
                    .find(|&i| usable(i))
                    .or_else(|| scan_from(sequence[start] as usize, backends.len(), usable))
            }
            Selector::Random { cumulative } => {
                let total = *cumulative.last()?;
                if total == 0 {
                    return None;
                }
                let ticket = rand::random::<u64>() % total;
                let first = cumulative.partition_point(|&upper| upper <= ticket);
                scan_from(first, backends.len(), usable)
            }
            Selector::ConsistentHash { ring } => {
                if ring.is_empty() {
                    return None;
                }
                let start = ring.partition_point(|&(point, _)| point < key) % ring.len();
                let walk = ring.len().min(MAX_SEQUENCE_WALK * 4);
                (0..walk)
                    .map(|step| ring[(start + step) % ring.len()].1 as usize)
                    .find(|&i| usable(i))
                    .or_else(|| scan_from(ring[start].1 as usize, backends.len(), usable))
            }
            Selector::LeastRequests { next } => least_loaded(backends, next, usable),
        }
    }
}

/// The usable backend with the fewest requests in flight for its weight; ties go to the first
/// from a rotating start, so equal backends share the load.
fn least_loaded<C: Candidate>(
    backends: &[C],
    next: &AtomicUsize,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let count = backends.len();
    if count == 0 {
        return None;
    }
    let start = next.fetch_add(1, Relaxed);
    let mut best: Option<usize> = None;
    for step in 0..count {
        let i = (start + step) % count;
        if !usable(i) {
            continue;
        }
        best = match best {
            None => Some(i),
            Some(b) if less_loaded(&backends[i], &backends[b]) => Some(i),
            keep => keep,
        };
    }
    best
}

/// in_flight(a)/weight(a) < in_flight(b)/weight(b), without division.
fn less_loaded<C: Candidate>(a: &C, b: &C) -> bool {
    u64::from(a.in_flight()) * u64::from(b.weight())
        < u64::from(b.in_flight()) * u64::from(a.weight())
}

fn scan_from(first: usize, count: usize, usable: impl Fn(usize) -> bool) -> Option<usize> {
    (0..count)
        .map(|step| (first + step) % count)
        .find(|&i| usable(i))
}

/// One period of nginx's smooth weighted round-robin over `weights` (zero weights never appear).
pub fn smooth_sequence(weights: &[u32]) -> Vec<u16> {
    let divisor = weights
        .iter()
        .copied()
        .filter(|&w| w > 0)
        .fold(0, gcd)
        .max(1);
    let mut reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w / divisor)).collect();
    let total: u64 = reduced.iter().sum();
    if total > MAX_SEQUENCE_LEN {
        for weight in reduced.iter_mut().filter(|w| **w > 0) {
            *weight = (*weight * MAX_SEQUENCE_LEN / total).max(1);
        }
    }
    let total: i64 = reduced.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; reduced.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (index, weight) in reduced.iter().enumerate() {
            current[index] += *weight as i64;
            if current[index] > current[best] {
                best = index;
            }
        }
        current[best] -= total;
        sequence.push(best as u16);
    }
    sequence
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// FNV-1a followed by a 64-bit finaliser: stable across runs and builds, well spread.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        weight: u32,
        in_flight: u32,
    }

    impl Candidate for Fake {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn in_flight(&self) -> u32 {
            self.in_flight
        }
    }

    fn fakes(weights: &[u32]) -> Vec<Fake> {
        weights
            .iter()
            .map(|&weight| Fake {
                weight,
                in_flight: 0,
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_sequence_interleaves_like_nginx() {
        assert_eq!(smooth_sequence(&[2, 1]), vec![0, 1, 0]);
        assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        // 3:1 must not bunch as A,A,A,B in a way that sends two Bs together; each period has exactly the weights.
        let seq = smooth_sequence(&[3, 1]);
        assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 1);
        assert_eq!(
            smooth_sequence(&[4, 2]),
            vec![0, 1, 0],
            "weights are reduced by their gcd"
        );
    }

    #[test]
    fn zero_weight_backends_are_never_in_the_sequence() {
        let seq = smooth_sequence(&[1, 0, 1]);
        assert!(!seq.contains(&1));
        assert_eq!(seq.len(), 2);
    }

    #[test]
    fn huge_weights_are_scaled_down_but_keep_every_backend() {
        let seq = smooth_sequence(&[10_000, 9_999, 1, 7, 3, 10_000, 10_000, 9_001]);
        assert!(seq.len() as u64 <= MAX_SEQUENCE_LEN + 8);
        for backend in 0..8u16 {
            assert!(seq.contains(&backend), "backend {backend} lost");
        }
    }

    #[test]
    fn weighted_selection_skips_unacceptable_backends() {
        let backends = fakes(&[3, 1]);
        let selector = Selector::weighted(&[3, 1]);
        for _ in 0..10 {
            assert_eq!(selector.pick(&backends, 0, |i| i == 1), Some(1));
        }
        assert_eq!(selector.pick(&backends, 0, |_| false), None);
    }

    #[test]
    fn round_robin_ignores_weights_but_not_drained_backends() {
        let backends = fakes(&[5, 0, 1]);
        let selector = Selector::round_robin(&[5, 0, 1]);
        let picks: Vec<_> = (0..4)
            .map(|_| selector.pick(&backends, 0, |_| true).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn random_selection_follows_weights() {
        let backends = fakes(&[9, 1, 0]);
        let selector = Selector::random(&[9, 1, 0]);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[selector.pick(&backends, 0, |_| true).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((8_500..9_500).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_when_needed() {
        let labels: Vec<String> = (0..4).map(|i| format!("10.0.0.{i}:80")).collect();
        let backends = fakes(&[1, 1, 1, 1]);
        let selector = Selector::consistent_hash(&[1, 1, 1, 1], &labels);
        let mut moved = 0;
        let mut spread = [0usize; 4];
        for key in 0..1000u64 {
            let hash = hash_bytes(&key.to_le_bytes());
            let first = selector.pick(&backends, hash, |_| true).unwrap();
            assert_eq!(
                selector.pick(&backends, hash, |_| true),
                Some(first),
                "same key, same backend"
            );
            spread[first] += 1;
            let without_two = selector.pick(&backends, hash, |i| i != 2).unwrap();
            if first != 2 {
                assert_eq!(
                    without_two, first,
                    "keys not on the removed backend stay put"
                );
            } else {
                moved += 1;
            }
        }
        assert!(spread.iter().all(|&n| n > 150), "{spread:?}");
        assert_eq!(moved, spread[2]);
    }

    #[test]
    fn consistent_hash_keeps_large_weight_ratios() {
        for (heavy, light) in [(1000u32, 100u32), (10_000, 1_000), (300, 100)] {
            let labels = vec!["10.0.0.1:80".to_string(), "10.0.0.2:80".to_string()];
            let backends = fakes(&[heavy, light]);
            let selector = Selector::consistent_hash(&[heavy, light], &labels);
            let mut counts = [0usize; 2];
            for key in 0..100_000u64 {
                let hash = hash_bytes(&key.to_le_bytes());
                counts[selector.pick(&backends, hash, |_| true).unwrap()] += 1;
            }
            let share = counts[0] as f64 / 100_000.0;
            let expected = f64::from(heavy) / f64::from(heavy + light);
            assert!(
                (share - expected).abs() < 0.02,
                "{heavy}:{light} gave {counts:?}"
            );
        }
    }

    #[test]
    fn least_requests_prefers_the_least_loaded_relative_to_weight() {
        let mut backends = fakes(&[1, 1, 2]);
        backends[0].in_flight = 5;
        backends[1].in_flight = 2;
        backends[2].in_flight = 3; // 3/2 = 1.5 < 2
        let selector = Selector::least_requests();
        assert_eq!(selector.pick(&backends, 0, |_| true), Some(2));
        assert_eq!(selector.pick(&backends, 0, |i| i != 2), Some(1));
    }
}
