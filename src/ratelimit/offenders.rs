//! The top offenders of a policy: a space-saving sketch (Metwally, Agrawal, El Abbadi, 2005) of
//! the keys it limited, in fixed memory. Every key limited more than 1/`capacity` of the time is
//! in it; a key's count is never below its true count and at most `error` above it. Only
//! limited requests are recorded, so admitted traffic costs nothing here.

/// One tracked key.
struct Slot {
    /// The key's 128-bit hash: compared on every record, so the label is built only once.
    id: u128,
    label: Box<str>,
    count: u64,
    /// How much of `count` may belong to keys this slot held before.
    error: u64,
}

/// A key as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offender {
    pub key: String,
    /// Times limited (an upper bound).
    pub limited: u64,
    /// At most this much of `limited` may be other keys'.
    pub error: u64,
}

/// A bounded summary of the keys a policy limited most.
pub struct Offenders {
    slots: parking_lot::Mutex<Vec<Slot>>,
    capacity: usize,
}

impl Offenders {
    /// A sketch tracking `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Offenders {
            slots: parking_lot::Mutex::new(Vec::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    /// Counts one limited request of key `id`; `label` names it the first time it is tracked.
    pub fn record(&self, id: u128, label: impl FnOnce() -> String) {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.iter_mut().find(|slot| slot.id == id) {
            slot.count += 1;
            return;
        }
        if slots.len() < self.capacity {
            slots.push(Slot {
                id,
                label: label().into(),
                count: 1,
                error: 0,
            });
            return;
        }
        // The least counted key gives its place; the newcomer inherits its count as error.
        if let Some(slot) = slots.iter_mut().min_by_key(|slot| slot.count) {
            let floor = slot.count;
            *slot = Slot {
                id,
                label: label().into(),
                count: floor + 1,
                error: floor,
            };
        }
    }

    /// The `n` most limited keys, most first.
    pub fn top(&self, n: usize) -> Vec<Offender> {
        let slots = self.slots.lock();
        let mut top: Vec<Offender> = slots
            .iter()
            .map(|slot| Offender {
                key: slot.label.to_string(),
                limited: slot.count,
                error: slot.error,
            })
            .collect();
        drop(slots);
        top.sort_by(|a, b| b.limited.cmp(&a.limited).then_with(|| a.key.cmp(&b.key)));
        top.truncate(n);
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_keys_survive_a_flood_of_one_off_keys_with_bounded_counts() {
        let sketch = Offenders::new(16);
        let mut truth = std::collections::HashMap::new();
        // Three heavy keys (20 %, 15 %, 10 % of 4,000: each above 1/16 of the stream, the
        // sketch's guarantee) among 2,200 keys seen once.
        let mut stream = Vec::new();
        for (key, times) in [(1u128, 800), (2, 600), (3, 400)] {
            stream.extend(std::iter::repeat_n(key, times));
        }
        stream.extend(1_000..3_200u128);
        // Interleave deterministically so heavy keys are spread through the flood.
        let mut order: Vec<usize> = (0..stream.len()).collect();
        order.sort_by_key(|&i| (i * 7919) % stream.len());
        for &i in &order {
            let key = stream[i];
            *truth.entry(key).or_insert(0u64) += 1;
            sketch.record(key, || format!("k{key}"));
        }
        let top = sketch.top(3);
        let names: Vec<&str> = top.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(names, ["k1", "k2", "k3"], "{top:?}");
        for offender in &top {
            let key: u128 = offender.key[1..].parse().unwrap();
            let real = truth[&key];
            assert!(
                offender.limited >= real,
                "never under: {offender:?} vs {real}"
            );
            assert!(
                offender.limited - offender.error <= real,
                "{offender:?} vs {real}"
            );
        }
        assert_eq!(sketch.slots.lock().len(), 16, "fixed memory");
    }

    #[test]
    fn the_label_is_built_once_per_tracked_key() {
        let sketch = Offenders::new(4);
        let mut built = 0;
        for _ in 0..100 {
            sketch.record(7, || {
                built += 1;
                "seven".into()
            });
        }
        assert_eq!(built, 1);
        assert_eq!(
            sketch.top(5),
            [Offender {
                key: "seven".into(),
                limited: 100,
                error: 0
            }]
        );
    }
}
