//! The keyed hash of a session id (`LockTable::session_key`): SipHash-1-3, the function and
//! round counts std's `RandomState` uses, written out for its one input, a `u64`.
//!
//! Session ids come from the network, so the sessions map needs a keyed hash against
//! flooding. std's hasher takes any byte stream: for one `u64` it buffers the bytes, then
//! pads and finishes, about 140 instructions on x86-64 (callgrind, `cpu_workload`), and a
//! request hashes its session id on every replica that applies it. The same SipHash of
//! exactly one 8-byte word is the two compression steps and the finalization alone.
//!
//! Reference: J.-P. Aumasson, D. J. Bernstein, "SipHash: a fast short-input PRF"
//! (INDOCRYPT 2012), §2: the state initialization, SipRound, the message words
//! (little-endian, the last holding the length in its top byte), and the finalization.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// SipHash-1-3 of one `u64` under a key drawn per table: random per table against hash
/// flooding. The key only decides where a session sits in memory, never an output.
#[derive(Clone, Copy)]
pub(super) struct SessionHasher {
    k0: u64,
    k1: u64,
}

impl SessionHasher {
    /// A hasher with a fresh random key, taken from std's `RandomState` (its hashes of two
    /// constants under its own random key: unpredictable without that key).
    pub(super) fn new() -> SessionHasher {
        let random = RandomState::new();
        SessionHasher {
            k0: random.hash_one(0u64),
            k1: random.hash_one(1u64),
        }
    }

    pub(super) fn hash(&self, id: u64) -> u64 {
        siphash::<1, 3>(self.k0, self.k1, id)
    }
}

/// SipHash-c-d (`C` compression rounds, `D` finalization rounds) of the 8-byte message
/// `word.to_le_bytes()` under the key (`k0`, `k1`) (paper §2).
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, word: u64) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    // The message's one word, then the last word: no bytes left over, the length (8) in
    // its top byte.
    for m in [word, 8u64 << 56] {
        v[3] ^= m;
        for _ in 0..C {
            sip_round(&mut v);
        }
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
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
    /// 07 (the 8-byte input here); output bytes 62 24 93 9a 79 f5 f5 93, little-endian.
    #[test]
    fn siphash_2_4_gives_the_papers_vector() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let m = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(siphash::<2, 4>(k0, k1, m), 0x93f5_f579_9a93_2462);
    }

    /// The same function as std's SipHash-2-4 (`SipHasher`, documented as such) on one u64
    /// written little-endian, for many keys and words: the rounds, the padding and the
    /// finalization are SipHash's; SipHash-1-3 differs only in the round counts.
    #[test]
    #[allow(deprecated)]
    fn siphash_2_4_matches_std() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..1_000 {
            let (k0, k1, m) = (next(), next(), next());
            let mut std = std::hash::SipHasher::new_with_keys(k0, k1);
            std.write(&m.to_le_bytes());
            assert_eq!(
                siphash::<2, 4>(k0, k1, m),
                std.finish(),
                "{k0:x} {k1:x} {m:x}"
            );
        }
    }

    /// Two tables key their hashes apart; one table hashes an id the same every time.
    #[test]
    fn each_hasher_has_its_own_key() {
        let (a, b) = (SessionHasher::new(), SessionHasher::new());
        assert_eq!(a.hash(7), a.hash(7));
        assert_ne!((a.k0, a.k1), (b.k0, b.k1));
        assert_ne!(a.hash(7), b.hash(7));
    }
}
