//! One resource's FIFO queue of waiting acquires.
//!
//! Waiters leave from the head (granted, or timed out there) and from the middle (a waiter with
//! a short wait_ms behind one with a long wait_ms times out first). Removing from the middle of
//! a `VecDeque` shifts up to half the queue, so a waiter that leaves from the middle is marked
//! dead instead (a tombstone) and skipped later. Two rules keep that cheap and bounded:
//! - dead entries at the head are popped at once, so the head is always a live waiter;
//! - when dead entries outnumber live ones the queue is compacted. A compaction of `n` entries
//!   removes at least `n / 2` tombstones, each made once, so it costs O(1) amortized per
//!   waiter, and the queue never holds more than twice its live waiters (plus one).
//!
//! Entries are pushed in increasing `seq` order and compaction keeps the order, so a waiter is
//! found by binary search on `seq` in O(log n).

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::RequestId;
use crate::core::time::Instant;

/// A queued acquire.
pub(super) struct Waiter {
    /// Unique over the whole table and increasing in enqueue order: sorts the queue (for the
    /// binary search) and orders this waiter's deadline timer among timers due at once.
    pub(super) seq: u64,
    /// Where the answer goes back to (session, request).
    pub(super) id: RequestId,
    /// The address of the latest copy received: a client that moved gets its answer.
    pub(super) reply_to: SocketAddr,
    /// The client that will hold the lock; emptied when the waiter dies, to free it early.
    pub(super) client: Box<[u8]>,
    /// Receive time of the first copy + wait_ms: answer LOCK_ACQUISITION_TIMEOUT from then on.
    pub(super) deadline: Instant,
    /// The acquire's ttl_ms (0 = the resource's default, resolved when granted).
    pub(super) ttl_ms: u32,
    /// Highest attempt number received for this request, echoed in the answer.
    pub(super) attempt: u16,
    /// False for a tombstone (left the queue from the middle).
    pub(super) live: bool,
}

/// A FIFO queue of waiters whose head is always live.
pub(super) struct WaitQueue {
    entries: VecDeque<Waiter>,
    /// Live entries (the rest are tombstones).
    live: u32,
}

impl WaitQueue {
    pub(super) fn new() -> WaitQueue {
        WaitQueue {
            entries: VecDeque::new(),
            live: 0,
        }
    }

    /// Waiters still waiting.
    pub(super) fn live(&self) -> u32 {
        self.live
    }

    /// The live waiters, head first: what a snapshot records (tombstones are no state).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Waiter> + '_ {
        self.entries.iter().filter(|waiter| waiter.live)
    }

    /// Entries the buffer holds without growing.
    pub(super) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// No entry, not even a tombstone: what a queue with no live waiter is (the head is
    /// always live).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries including tombstones (memory held).
    #[cfg(test)]
    pub(super) fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Appends `waiter`, whose `seq` must exceed every queued one.
    pub(super) fn push(&mut self, waiter: Waiter) {
        assert!(waiter.live, "a tombstone is never queued");
        assert!(
            self.entries.back().is_none_or(|last| last.seq < waiter.seq),
            "waiters are queued in increasing seq order"
        );
        self.entries.push_back(waiter);
        self.live += 1;
    }

    /// The longest-waiting live waiter.
    pub(super) fn front(&self) -> Option<&Waiter> {
        let head = self.entries.front()?;
        assert!(head.live, "the head of a wait queue is always live");
        Some(head)
    }

    /// Removes and returns the head; the queue must not be empty.
    pub(super) fn pop_front(&mut self) -> Waiter {
        let head = self
            .entries
            .pop_front()
            .expect("pop_front on an empty queue");
        assert!(head.live, "the head of a wait queue is always live");
        self.live -= 1;
        self.tidy();
        head
    }

    /// The live waiter with `seq`, for updating its reply address and attempt.
    pub(super) fn find_mut(&mut self, seq: u64) -> Option<&mut Waiter> {
        let index = self.entries.binary_search_by_key(&seq, |w| w.seq).ok()?;
        let waiter = &mut self.entries[index];
        waiter.live.then_some(waiter)
    }

    /// Takes the live waiter with `seq` out of the queue, wherever it is; it must be there.
    pub(super) fn remove(&mut self, seq: u64) -> Waiter {
        let index = self
            .entries
            .binary_search_by_key(&seq, |w| w.seq)
            .expect("the waiter to remove is queued");
        let entry = &mut self.entries[index];
        assert!(entry.live, "waiter {seq} left the queue twice");
        entry.live = false;
        let waiter = Waiter {
            seq: entry.seq,
            id: entry.id,
            reply_to: entry.reply_to,
            client: std::mem::take(&mut entry.client),
            deadline: entry.deadline,
            ttl_ms: entry.ttl_ms,
            attempt: entry.attempt,
            live: true,
        };
        self.live -= 1;
        self.tidy();
        waiter
    }

    /// Restores the two rules: live head, at most as many tombstones as live waiters.
    fn tidy(&mut self) {
        while self.entries.front().is_some_and(|head| !head.live) {
            self.entries.pop_front();
        }
        let dead = self.entries.len() - self.live as usize;
        if dead > self.live as usize {
            self.entries.retain(|w| w.live);
            // Give back the memory a burst of waiters left behind.
            if self.entries.capacity() > 4 * self.entries.len().max(4) {
                self.entries.shrink_to_fit();
            }
        }
        assert!(self.entries.len() <= 2 * self.live as usize + 1);
        assert!(self.entries.front().is_none_or(|head| head.live));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn waiter(seq: u64) -> Waiter {
        Waiter {
            seq,
            id: RequestId {
                session: 1,
                request: seq,
            },
            reply_to: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            client: Box::from(&b"c"[..]),
            deadline: Instant::from_micros(seq),
            ttl_ms: 0,
            attempt: 0,
            live: true,
        }
    }

    #[test]
    fn removal_from_the_middle_keeps_fifo_order_and_bounds_tombstones() {
        let mut queue = WaitQueue::new();
        for seq in 1..=10 {
            queue.push(waiter(seq));
        }
        // Remove every odd waiter after the head: tombstones stay until they outnumber the live.
        for seq in [3, 5, 7, 9] {
            assert_eq!(queue.remove(seq).seq, seq);
            assert!(queue.find_mut(seq).is_none());
        }
        assert_eq!(queue.live(), 6);
        assert!(queue.entries() <= 2 * 6 + 1);
        for seq in [2, 4, 6, 8, 10] {
            queue.remove(seq);
        }
        assert_eq!(queue.live(), 1);
        assert_eq!(
            queue.entries(),
            1,
            "compacted once tombstones outnumber live waiters"
        );
        assert_eq!(queue.pop_front().seq, 1);
        assert_eq!(queue.live(), 0);
        assert!(queue.front().is_none());
    }

    #[test]
    fn dead_entries_at_the_head_are_popped_at_once() {
        let mut queue = WaitQueue::new();
        for seq in 1..=4 {
            queue.push(waiter(seq));
        }
        queue.remove(2);
        queue.remove(1);
        assert_eq!(queue.front().map(|w| w.seq), Some(3));
        assert_eq!(queue.entries(), 2);
        queue.find_mut(4).expect("queued").attempt = 7;
        assert_eq!(queue.pop_front().seq, 3);
        assert_eq!(queue.pop_front().attempt, 7);
    }
}
