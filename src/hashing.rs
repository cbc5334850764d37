//! Keyed hashes for in-process tables. Client-controlled input (addresses, header values, URLs)
//! is hashed with a randomly keyed 128-bit SipHash-1-3, so it can neither collide on purpose nor
//! predict where it lands; tables whose keys already are such hashes use them as they are.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::{BuildHasher, Hasher};

/// A 128-bit keyed hasher, randomly keyed when created.
#[derive(Clone)]
pub struct Keyed128 {
    keys: (u64, u64),
}

impl Keyed128 {
    /// A hasher with fresh random keys.
    pub fn new() -> Self {
        Keyed128 {
            keys: (rand::random(), rand::random()),
        }
    }

    /// The hash of the byte strings `feed` writes, in order (each framed by its length).
    pub fn hash(&self, feed: impl FnOnce(&mut dyn FnMut(&[u8]))) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        feed(&mut |bytes: &[u8]| {
            hasher.write_u64(bytes.len() as u64);
            hasher.write(bytes);
        });
        hasher.finish128().as_u128()
    }

    /// The same hash as [`Keyed128::hash`] of one byte string of `len` bytes, fed in pieces: a
    /// caller can hash a string it never assembles.
    pub fn hash_pieces(&self, len: usize, feed: impl FnOnce(&mut dyn FnMut(&[u8]))) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        hasher.write_u64(len as u64);
        feed(&mut |bytes: &[u8]| hasher.write(bytes));
        hasher.finish128().as_u128()
    }
}

impl Default for Keyed128 {
    fn default() -> Self {
        Self::new()
    }
}

/// For maps keyed by a [`Keyed128`] hash (or another keyed hash): the key's low 64 bits are
/// already uniformly distributed and unpredictable, so hashing them again buys nothing.
#[derive(Clone, Copy, Default)]
pub struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

/// The hasher of [`Prehashed`].
#[derive(Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only integer keys are expected; fold anything else in rather than lose it.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
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
        assert_ne!(of(&[b"ab", b"c"]) >> 64, of(&[b"a", b"bc"]) >> 64);
        let other = Keyed128::new();
        assert_ne!(of(&[b"x"]), other.hash(|write| write(b"x")));
    }

    #[test]
    fn a_string_hashed_in_pieces_hashes_as_a_whole() {
        let hasher = Keyed128::new();
        let whole = b"api.example/v1/items?page=2\0route";
        let expected = hasher.hash(|write| write(whole));
        for split in [0, 1, 7, 8, 9, 16, whole.len()] {
            let (a, b) = whole.split_at(split);
            let pieces = hasher.hash_pieces(whole.len(), |write| {
                write(a);
                write(b);
            });
            assert_eq!(pieces, expected, "split at {split}");
        }
        assert_ne!(
            hasher.hash_pieces(whole.len() + 1, |write| write(whole)),
            expected
        );
    }

    #[test]
    fn prehashed_keys_hash_to_their_low_bits() {
        assert_eq!(
            Prehashed.hash_one(0xdead_beef_u128 | (7 << 64)),
            0xdead_beef
        );
        assert_eq!(Prehashed.hash_one(42_u64), 42);
    }
}
