//! 128-bit keyed hashes for in-process tables: two SipHash-1-3 instances with random keys,
//! so client-controlled input can neither collide on purpose nor predict where it lands.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

/// A 128-bit keyed hasher, randomly keyed when created.
pub struct Keyed128(RandomState, RandomState);

impl Keyed128 {
    /// A hasher with fresh random keys.
    pub fn new() -> Self {
        Keyed128(RandomState::new(), RandomState::new())
    }

    /// The hash of the byte strings `feed` writes, in order (each framed by its length).
    pub fn hash(&self, feed: impl FnOnce(&mut dyn FnMut(&[u8]))) -> u128 {
        let mut first = self.0.build_hasher();
        let mut second = self.1.build_hasher();
        feed(&mut |bytes: &[u8]| {
            bytes.hash(&mut first);
            bytes.hash(&mut second);
        });
        (u128::from(first.finish()) << 64) | u128::from(second.finish())
    }
}

impl Default for Keyed128 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_keys_matter() {
        let hasher = Keyed128::new();
        let of = |parts: &[&[u8]]| {
            hasher.hash(|write| {
                for part in parts {
                    write(part)
                }
            })
        };
        assert_eq!(of(&[b"ab", b"c"]), of(&[b"ab", b"c"]));
        assert_ne!(of(&[b"ab", b"c"]), of(&[b"a", b"bc"]));
        let other = Keyed128::new();
        assert_ne!(of(&[b"x"]), other.hash(|write| write(b"x")));
    }
}
