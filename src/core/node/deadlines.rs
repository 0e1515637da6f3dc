//! Each shard's next deadline, and the earliest of them in O(1).
//!
//! The shell asks the node for its next timer ([`Node::poll_timeout`](super::Node::poll_timeout))
//! on every turn of its loop, and a shard's deadline moves after each input that touches it:
//! a leader's heartbeat slides forward with every APPEND it sends, so the shard with the
//! earliest deadline is also the busiest, and its deadline moves *later* on nearly every
//! flush. Keeping the minimum by rescanning every shard then cost O(shards) per flush (about a
//! tenth of the node's own instructions per replicated request at 64 shards). A tournament
//! tree (a binary heap laid out by index, each inner slot the earlier of its two children)
//! keeps it in O(log shards) per change instead, and most changes stop after a level or two
//! (an ancestor whose value does not change leaves every one above it as it was).

use crate::core::time::Instant;

/// Per shard, its next deadline ([`Instant::MAX`]: none), and their minimum.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// Slot `leaves + i` holds shard `i`'s deadline (the slots past the last shard hold
    /// [`Instant::MAX`]); slot `k` below `leaves` (`k >= 1`) the earlier of slots `2k` and
    /// `2k + 1`; slot 0 is unused. So slot 1 is the earliest of all.
    tree: Vec<Instant>,
    /// The number of leaves: the number of shards rounded up to a power of two (at least 1).
    leaves: usize,
    /// The number of shards.
    len: usize,
}

impl Deadlines {
    /// The deadlines `at` (one per shard).
    pub(super) fn new(at: impl ExactSizeIterator<Item = Instant>) -> Deadlines {
        let len = at.len();
        let leaves = len.next_power_of_two().max(1);
        let mut tree = vec![Instant::MAX; 2 * leaves];
        for (slot, at) in tree[leaves..].iter_mut().zip(at) {
            *slot = at;
        }
        for k in (1..leaves).rev() {
            tree[k] = tree[2 * k].min(tree[2 * k + 1]);
        }
        let deadlines = Deadlines { tree, leaves, len };
        deadlines.check();
        deadlines
    }

    /// Shard `i`'s deadline.
    pub(super) fn get(&self, i: usize) -> Instant {
        assert!(i < self.len, "shard {i} of {}", self.len);
        self.tree[self.leaves + i]
    }

    /// Sets shard `i`'s deadline to `at`: O(log shards), and less when the earliest of its
    /// subtree does not change.
    pub(super) fn set(&mut self, i: usize, at: Instant) {
        assert!(i < self.len, "shard {i} of {}", self.len);
        let mut k = self.leaves + i;
        if self.tree[k] == at {
            // Unchanged (a touch that did not move it): nothing above moves either.
            return;
        }
        self.tree[k] = at;
        while k > 1 {
            k /= 2;
            let earliest = self.tree[2 * k].min(self.tree[2 * k + 1]);
            if self.tree[k] == earliest {
                // Every slot above depends on this one alone among those that changed.
                break;
            }
            self.tree[k] = earliest;
        }
        debug_assert!(self.min() <= at);
    }

    /// The earliest deadline ([`Instant::MAX`] if none).
    pub(super) fn min(&self) -> Instant {
        self.tree[1]
    }

    /// The number of shards.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every shard's deadline, in shard order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Instant> + '_ {
        self.tree[self.leaves..self.leaves + self.len]
            .iter()
            .copied()
    }

    /// The tree's invariant: each inner slot is the earlier of its children, and the
    /// padding leaves hold no deadline. O(shards): for debug builds and tests.
    pub(super) fn check(&self) {
        assert_eq!(self.tree.len(), 2 * self.leaves);
        assert!(self.leaves.is_power_of_two() && self.len <= self.leaves);
        debug_assert!(self.tree[self.leaves + self.len..]
            .iter()
            .all(|&t| t == Instant::MAX));
        debug_assert!(
            (1..self.leaves).all(|k| self.tree[k] == self.tree[2 * k].min(self.tree[2 * k + 1]))
        );
        debug_assert_eq!(
            self.iter().min().unwrap_or(Instant::MAX),
            self.min(),
            "the earliest deadline is kept"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain list, over every shard count up to 9 (powers of two and not) and a
    /// deterministic sequence of moves earlier, later, to none and back.
    #[test]
    fn the_minimum_follows_every_change() {
        for len in 0..=9usize {
            let at = |x: u64| Instant::from_micros(x);
            let mut plain: Vec<Instant> = (0..len as u64).map(|i| at(100 + 7 * i)).collect();
            let mut tree = Deadlines::new(plain.iter().copied());
            let mut x: u64 = 12345;
            for _ in 0..500 {
                assert_eq!(
                    tree.min(),
                    plain.iter().copied().min().unwrap_or(Instant::MAX)
                );
                assert!(tree.iter().eq(plain.iter().copied()));
                if len == 0 {
                    break;
                }
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (x >> 33) as usize % len;
                let t = match (x >> 20) % 5 {
                    0 => Instant::MAX,
                    1 => tree.min(),
                    _ => at((x >> 40) % 1000),
                };
                tree.set(i, t);
                plain[i] = t;
                assert_eq!(tree.get(i), t);
                tree.check();
            }
            assert_eq!(tree.len(), len);
        }
    }
}
