//! A digest of a run's whole event trace: every event the simulator delivers, in order, with
//! its true time, its kind and endpoints, and a digest of the bytes it hands a core (a
//! datagram to a node, a reply to a client). Two runs of one seed must give the same digest
//! (`tests/it/sim.rs`): a run is a function of its seed, down to every byte and microsecond,
//! not only in its report.
//!
//! The hash is written here, not taken from `std` (whose `DefaultHasher` may change between
//! Rust versions), so a digest means the same in every build. It mixes whole 64-bit words
//! (FxHash's rotate-xor-multiply step): cheap beside the cores, and it need only tell traces
//! apart, never resist an adversary.

/// FxHash's multiplier (from Firefox's hash; odd, with well-spread bits).
const MIX: u64 = 0x517c_c1b7_2722_0a95;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trace {
    hash: u64,
}

impl Trace {
    /// The digest so far.
    pub(crate) fn digest(&self) -> u64 {
        self.hash
    }

    /// Mixes in one word.
    pub(crate) fn word(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(MIX);
    }

    /// Mixes in `bytes` and their length (so that no two byte strings mix in alike just by
    /// trailing zeros).
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            self.word(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        self.word(u64::from_le_bytes(last));
        self.word(bytes.len() as u64);
    }

    /// The digest of `bytes` alone.
    pub(crate) fn of(bytes: &[u8]) -> u64 {
        let mut trace = Trace::default();
        trace.bytes(bytes);
        trace.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::Trace;

    #[test]
    fn the_digest_tells_bytes_order_and_length_apart() {
        let of = Trace::of;
        assert_ne!(of(b"abcdefgh12"), of(b"abcdefgh21"));
        assert_ne!(of(b"abc"), of(b"abc\0"));
        assert_ne!(of(b""), of(b"\0"));
        let (mut a, mut b) = (Trace::default(), Trace::default());
        a.word(1);
        a.word(2);
        b.word(2);
        b.word(1);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(of(b"same bytes"), of(b"same bytes"));
    }
}
