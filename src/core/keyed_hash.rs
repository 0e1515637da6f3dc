//! The keyed hash of ids that come from the network (the lock table's session and resource
//! ids, the replica's client source addresses): SipHash-1-3, the function and round counts
//! std's `RandomState` uses, written out for two inputs, one `u64` and one byte string.
//!
//! The sessions map and the resource index need a keyed hash against flooding. std's hasher
//! takes any stream of writes: it buffers them byte by byte, and hashing a `[u8]` writes
//! its length first; a session id took about 140 instructions, a 16-byte resource id about
//! 200 (callgrind, `cpu_workload`), and every replica hashes both for every request it
//! applies. SipHash of the bytes themselves, read a word at a time, is the same function
//! without that overhead (the final word carries the length, so none is prefixed).
//!
//! Reference: J.-P. Aumasson, D. J. Bernstein, "SipHash: a fast short-input PRF"
//! (INDOCRYPT 2012), §2: the state initialization, SipRound, the message words
//! (little-endian, the last holding the remaining bytes and the length in its top byte),
//! and the finalization.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// SipHash-1-3 under a key drawn per table: random per table against hash flooding. The
/// key only decides where a session or resource sits in memory, never an output.
#[derive(Clone, Copy)]
pub(crate) struct KeyedHash {
    k0: u64,
    k1: u64,
}

/// The key stays out of every debug print (as std's `RandomState` keeps its own).
impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash { .. }")
    }
}

impl KeyedHash {
    /// A fresh random key, taken from std's `RandomState` (its hashes of two constants under
    /// its own random key: unpredictable without that key).
    pub(crate) fn new() -> KeyedHash {
        let random = RandomState::new();
        KeyedHash {
            k0: random.hash_one(0u64),
            k1: random.hash_one(1u64),
        }
    }

    /// The hash of `word`'s 8 little-endian bytes (a session id).
    pub(crate) fn of_u64(&self, word: u64) -> u64 {
        siphash_u64::<1, 3>(self.k0, self.k1, word)
    }

    /// The hash of `bytes` (a resource id).
    pub(crate) fn of_bytes(&self, bytes: &[u8]) -> u64 {
        siphash::<1, 3>(self.k0, self.k1, bytes)
    }
}

/// The state before the first word (paper §2).
fn initial(k0: u64, k1: u64) -> [u64; 4] {
    [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ]
}

/// One message word through `C` compression rounds.
#[inline(always)]
fn compress<const C: usize>(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    for _ in 0..C {
        sip_round(v);
    }
    v[0] ^= m;
}

/// The finalization: `D` rounds, then the state folded into the hash.
#[inline(always)]
fn finish<const D: usize>(mut v: [u64; 4]) -> u64 {
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipHash-c-d (`C` compression rounds, `D` finalization rounds) of `bytes` under the key
/// (`k0`, `k1`) (paper §2).
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut v = initial(k0, k1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        compress::<C>(
            &mut v,
            u64::from_le_bytes(word.try_into().expect("8 bytes")),
        );
    }
    // The last word: the bytes left over, then the length's low byte at the top.
    let mut last = [0u8; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = bytes.len() as u8;
    compress::<C>(&mut v, u64::from_le_bytes(last));
    finish::<D>(v)
}

/// [`siphash`] of `word.to_le_bytes()`: one word, then the last word holding the length (8)
/// alone.
fn siphash_u64<const C: usize, const D: usize>(k0: u64, k1: u64, word: u64) -> u64 {
    let mut v = initial(k0, k1);
    compress::<C>(&mut v, word);
    compress::<C>(&mut v, 8u64 << 56);
    finish::<D>(v)
}

/// SipRound (paper §2).
#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    /// The paper's test vector (Appendix A, SipHash-2-4): key 00 01 .. 0f, message 00 01 ..
    /// 07 (8 bytes); output bytes 62 24 93 9a 79 f5 f5 93, little-endian.
    #[test]
    fn siphash_2_4_gives_the_papers_vector() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let m = [0, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(
            siphash_u64::<2, 4>(k0, k1, u64::from_le_bytes(m)),
            0x93f5_f579_9a93_2462
        );
        assert_eq!(siphash::<2, 4>(k0, k1, &m), 0x93f5_f579_9a93_2462);
    }

    /// The same function as std's SipHash-2-4 (`SipHasher`, documented as such) on byte
    /// strings of every length up to 40, and on one u64, for many keys: the rounds, the
    /// padding and the finalization are SipHash's; SipHash-1-3 differs only in the round
    /// counts.
    #[test]
    #[allow(deprecated)]
    fn siphash_2_4_matches_std() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let std = |k0, k1, bytes: &[u8]| {
            let mut std = std::hash::SipHasher::new_with_keys(k0, k1);
            std.write(bytes);
            std.finish()
        };
        for _ in 0..200 {
            let (k0, k1, m) = (next(), next(), next());
            assert_eq!(
                siphash_u64::<2, 4>(k0, k1, m),
                std(k0, k1, &m.to_le_bytes())
            );
            let bytes: Vec<u8> = (0..40).map(|_| next() as u8).collect();
            for len in 0..=bytes.len() {
                let bytes = &bytes[..len];
                assert_eq!(siphash::<2, 4>(k0, k1, bytes), std(k0, k1, bytes), "{len}");
            }
        }
    }

    /// A u64 hashes as its 8 little-endian bytes do.
    #[test]
    fn a_u64_hashes_as_its_bytes() {
        let key = KeyedHash::new();
        for word in [0, 1, 0x0102_0304_0506_0708, u64::MAX] {
            assert_eq!(key.of_u64(word), key.of_bytes(&word.to_le_bytes()));
        }
    }

    /// Two tables key their hashes apart; one table hashes an id the same every time.
    #[test]
    fn each_table_has_its_own_key() {
        let (a, b) = (KeyedHash::new(), KeyedHash::new());
        assert_eq!(a.of_u64(7), a.of_u64(7));
        assert_eq!(a.of_bytes(b"lock"), a.of_bytes(b"lock"));
        assert_ne!((a.k0, a.k1), (b.k0, b.k1));
        assert_ne!(a.of_u64(7), b.of_u64(7));
    }
}
