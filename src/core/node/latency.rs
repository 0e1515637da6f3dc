//! Request latency as the node sees it (a client datagram in → its final reply out), in
//! fixed-bucket histograms of atomic counters: the node's core records each request with the
//! `now` it is given (no clock here), and any thread reads them while the node runs, without
//! a lock (the Prometheus endpoint, `crate::cluster::metrics`).
//!
//! The buckets are fixed, not adaptive (Prometheus' classic histogram): a record is one
//! binary search over [`LATENCY_BUCKETS_US`] and two relaxed counter increments, and two
//! scrapes of the same histogram subtract bucket by bucket.
//!
//! One writer: only the node's own thread records (each node has its own [`Histogram`]s),
//! so an increment is a relaxed load and store, not a locked read-modify-write (two of
//! those cost about 20 ns on every request of a single node, 2 % of its work). Readers on
//! other threads see each counter whole, never torn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use udplock_protocol::RequestKind;

use crate::core::lock_table::RequestId;
use crate::core::time::{Duration, Instant};

/// Upper bounds of the buckets, in µs (inclusive, as Prometheus' `le`): from a loopback
/// round trip (10 µs) to the longest wait an acquire may ask for (`wait_ms_max`, 300 s), about
/// 1-2-5 per decade, so that a p50 of ~15 µs and a hand-off after seconds both land in a bucket
/// that says something. Observations above the last go to `+Inf` only.
pub const LATENCY_BUCKETS_US: [u64; 22] = [
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

const _: () = {
    let mut i = 1;
    while i < LATENCY_BUCKETS_US.len() {
        assert!(LATENCY_BUCKETS_US[i - 1] < LATENCY_BUCKETS_US[i]);
        i += 1;
    }
};

/// Counters per bucket: one per bound, and one above the last (`+Inf`).
pub const LATENCY_COUNTERS: usize = LATENCY_BUCKETS_US.len() + 1;

/// Requests the node remembers the arrival of while it waits for their final reply. A request
/// whose reply never comes (its proposal was lost with a leader change; the client retries)
/// stays until [`LATENCY_PENDING_AGE_MAX`]; beyond this many, new requests are not timed
/// (counted in `NodeStats::latency_untracked`) rather than memory growing: 16,384 entries of
/// ~40 bytes, under a megabyte.
pub const LATENCY_PENDING_MAX: usize = 16_384;

/// Arrivals of one input kept beside the table ([`PendingRequests`]) until the input's
/// replies are collected: a one-voter shard answers a request in the input that brings it,
/// so its requests are timed without a keyed hash of their id going in and out of the
/// table. A batch of inputs (the shell drains up to 64 datagrams before it collects) past
/// this many goes into the table directly; a linear search of 16 costs less than one hash.
pub const LATENCY_FRESH_MAX: usize = 16;

/// A request still waiting for its reply after this long is forgotten when the table of
/// pending requests is full: longer than any acquire may wait (300 s) plus the retransmission
/// grace (60 s), so a request that is still being answered is never dropped.
pub const LATENCY_PENDING_AGE_MAX: Duration = Duration::from_millis(360_000);

/// The shortest time between two sweeps of a full table for requests older than
/// [`LATENCY_PENDING_AGE_MAX`]: a flood keeps the table full, and a sweep costs a pass over it.
pub const LATENCY_SWEEP_INTERVAL: Duration = Duration::from_millis(1_000);

/// One fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// `counts[i]`: observations in (`LATENCY_BUCKETS_US[i - 1]`, `LATENCY_BUCKETS_US[i]`];
    /// the last, above every bound. Not cumulative (one add per record); the reader sums.
    counts: [AtomicU64; LATENCY_COUNTERS],
    /// Sum of every observation, in µs (2^64 µs is 584,000 years).
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `d`. Only one thread may record into a histogram (see the
    /// module docs): a second writer would lose counts (never memory safety).
    pub fn record(&self, d: Duration) {
        let us = d.as_micros();
        let i = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        assert!(i < LATENCY_COUNTERS);
        assert!(i == LATENCY_BUCKETS_US.len() || us <= LATENCY_BUCKETS_US[i]);
        let add = |c: &AtomicU64, n: u64| {
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
        };
        add(&self.counts[i], 1);
        add(&self.sum_us, us);
    }

    /// The counts as of now (each counter read once; a record running meanwhile may be in
    /// some and not others, which the next read corrects).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram as read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket, not cumulative (see [`Histogram`]).
    pub counts: [u64; LATENCY_COUNTERS],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Observations in all: the sum of the buckets (so that `+Inf` equals it, as the
    /// exposition format requires, even when read during a record).
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Cumulative counts per upper bound in µs, `None` for `+Inf` last.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let bounds = LATENCY_BUCKETS_US.iter().map(|&b| Some(b)).chain([None]);
        bounds
            .zip(self.counts.iter())
            .scan(0u64, |total, (bound, &n)| {
                *total += n;
                Some((bound, *total))
            })
    }
}

/// What a latency is recorded under: the request type, and for an acquire whether it waited
/// in a queue first (its latency is then mostly the wait, which says nothing of the node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyOp {
    Acquire,
    /// An acquire answered after it waited in the lock's queue (granted on a hand-off, or
    /// timed out).
    AcquireWaited,
    Release,
    Renew,
    Status,
    Configure,
    Keepalive,
    CancelWait,
}

impl LatencyOp {
    /// Every one, in the order of `NodeStats::latency`.
    pub const ALL: [LatencyOp; 8] = [
        LatencyOp::Acquire,
        LatencyOp::AcquireWaited,
        LatencyOp::Release,
        LatencyOp::Renew,
        LatencyOp::Status,
        LatencyOp::Configure,
        LatencyOp::Keepalive,
        LatencyOp::CancelWait,
    ];

    /// The op a final answer of `kind` is recorded under; `waited`: it was queued first.
    pub fn of(kind: RequestKind, waited: bool) -> LatencyOp {
        match kind {
            RequestKind::Acquire if waited => LatencyOp::AcquireWaited,
            RequestKind::Acquire => LatencyOp::Acquire,
            RequestKind::Release => LatencyOp::Release,
            RequestKind::Renew => LatencyOp::Renew,
            RequestKind::Status => LatencyOp::Status,
            RequestKind::Configure => LatencyOp::Configure,
            RequestKind::Keepalive => LatencyOp::Keepalive,
            RequestKind::CancelWait => LatencyOp::CancelWait,
        }
    }

    /// Its index in [`LatencyOp::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its label value (`type="..."`).
    pub fn name(self) -> &'static str {
        match self {
            LatencyOp::Acquire => "acquire",
            LatencyOp::AcquireWaited => "acquire_waited",
            LatencyOp::Release => "release",
            LatencyOp::Renew => "renew",
            LatencyOp::Status => "status",
            LatencyOp::Configure => "configure",
            LatencyOp::Keepalive => "keepalive",
            LatencyOp::CancelWait => "cancel_wait",
        }
    }
}

/// The arrival of every request handed to a shard and not answered finally yet, by its id:
/// the first copy this node took, and its attempt number (a retransmit does not restart the
/// clock). Bounded by [`LATENCY_PENDING_MAX`].
///
/// A copy that arrives after its request was answered gets the remembered answer again,
/// which echoes the attempt it was first produced for (spec §6.6): older than the copy, so
/// [`PendingRequests::answered`] does not time it twice. A copy redirected here from another
/// node (NOT_LEADER) is timed from its arrival here.
#[derive(Debug, Default)]
pub struct PendingRequests {
    arrivals: HashMap<RequestId, (Instant, u16)>,
    /// Arrivals since the latest [`PendingRequests::settle`], not in `arrivals` (at most
    /// [`LATENCY_FRESH_MAX`]; see there).
    fresh: Vec<(RequestId, Instant, u16)>,
    /// When a full table was last swept for old entries.
    swept_at: Option<Instant>,
}

impl PendingRequests {
    /// Remembers that copy `attempt` of `id` arrived at `now`, unless a copy of it is already
    /// waiting. `false`: the table is full, the request is not timed.
    pub fn arrived(&mut self, id: RequestId, attempt: u16, now: Instant) -> bool {
        // (`contains_key` of an empty map hashes nothing.)
        if self.fresh.iter().any(|f| f.0 == id) || self.arrivals.contains_key(&id) {
            return true;
        }
        if self.len() >= LATENCY_PENDING_MAX {
            self.sweep(now);
            if self.len() >= LATENCY_PENDING_MAX {
                return false;
            }
        }
        if self.fresh.len() < LATENCY_FRESH_MAX {
            self.fresh.push((id, now, attempt));
        } else {
            self.arrivals.insert(id, (now, attempt));
        }
        assert!(self.len() <= LATENCY_PENDING_MAX);
        true
    }

    /// The time from `id`'s arrival to its final answer at `now`, made for copy `attempt`,
    /// forgetting it; `None` if it was not timed, or the answer is a remembered one made for
    /// an earlier copy than the one timed.
    pub fn answered(&mut self, id: RequestId, attempt: u16, now: Instant) -> Option<Duration> {
        let (at, first) = match self.fresh.iter().position(|f| f.0 == id) {
            Some(i) => {
                let (_, at, first) = self.fresh.swap_remove(i);
                (at, first)
            }
            None if self.arrivals.is_empty() => return None,
            None => self.arrivals.remove(&id)?,
        };
        (attempt >= first).then(|| now.saturating_since(at))
    }

    /// The replies of the latest inputs are collected: what is still waiting for its reply
    /// goes into the table.
    pub fn settle(&mut self) {
        for (id, at, attempt) in self.fresh.drain(..) {
            let earlier = self.arrivals.insert(id, (at, attempt));
            debug_assert!(earlier.is_none(), "a request pending twice");
        }
        assert!(self.arrivals.len() <= LATENCY_PENDING_MAX);
    }

    /// Requests waiting for their reply.
    pub fn len(&self) -> usize {
        self.arrivals.len() + self.fresh.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arrivals.is_empty() && self.fresh.is_empty()
    }

    /// Forgets requests older than [`LATENCY_PENDING_AGE_MAX`], at most once per
    /// [`LATENCY_SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|at| now < at + LATENCY_SWEEP_INTERVAL)
        {
            return;
        }
        self.swept_at = Some(now);
        let young = |at: Instant| now.saturating_since(at) < LATENCY_PENDING_AGE_MAX;
        self.arrivals.retain(|_, &mut (at, _)| young(at));
        self.fresh.retain(|&(_, at, _)| young(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_is_not_below_it() {
        let h = Histogram::default();
        for d in [
            0,
            10,
            11,
            20,
            999,
            1_000,
            300_000_000,
            300_000_001,
            u64::MAX / 4,
        ] {
            h.record(us(d));
        }
        let s = h.snapshot();
        // le=10: 0 and 10 (a bound is inclusive); le=20: 11 and 20; le=1000: 999 and 1000.
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 2);
        assert_eq!(s.counts[6], 2);
        assert_eq!(s.counts[LATENCY_BUCKETS_US.len() - 1], 1);
        // Above the last bound: +Inf only.
        assert_eq!(s.counts[LATENCY_BUCKETS_US.len()], 2);
        assert_eq!(s.count(), 9);
        assert_eq!(
            s.sum_us,
            10 + 11 + 20 + 999 + 1_000 + 300_000_000 + 300_000_001 + u64::MAX / 4
        );
    }

    #[test]
    fn cumulative_counts_rise_to_the_total_at_inf() {
        let h = Histogram::default();
        h.record(us(15));
        h.record(us(15));
        h.record(us(4_000));
        let cumulative: Vec<_> = h.snapshot().cumulative().collect();
        assert_eq!(cumulative.len(), LATENCY_COUNTERS);
        assert_eq!(cumulative[0], (Some(10), 0));
        assert_eq!(cumulative[1], (Some(20), 2));
        assert_eq!(cumulative[7], (Some(2_000), 2));
        assert_eq!(cumulative[8], (Some(5_000), 3));
        assert_eq!(*cumulative.last().unwrap(), (None, 3));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn every_op_has_its_own_index_and_name() {
        for (i, op) in LatencyOp::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        let mut names: Vec<_> = LatencyOp::ALL.iter().map(|o| o.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), LatencyOp::ALL.len());
        assert_eq!(
            LatencyOp::of(RequestKind::Acquire, true),
            LatencyOp::AcquireWaited
        );
        for kind in RequestKind::ALL {
            assert_ne!(LatencyOp::of(kind, false), LatencyOp::AcquireWaited);
        }
    }

    fn id(request: u64) -> RequestId {
        RequestId {
            session: 7,
            request,
        }
    }

    #[test]
    fn a_request_is_timed_from_its_first_copy_once() {
        let mut p = PendingRequests::default();
        let t0 = Instant::ZERO + us(1_000);
        assert!(p.arrived(id(1), 0, t0));
        // A retransmit does not restart the clock; the answer may name it.
        assert!(p.arrived(id(1), 1, t0 + us(500)));
        assert_eq!(p.answered(id(1), 1, t0 + us(700)), Some(us(700)));
        // Answered once: a second reply to the same copy is not timed again.
        assert_eq!(p.answered(id(1), 1, t0 + us(900)), None);
        assert!(p.is_empty());
        // A late retransmit gets the answer remembered for copy 1: not a request of its own.
        assert!(p.arrived(id(1), 2, t0 + us(1_000)));
        assert_eq!(p.answered(id(1), 1, t0 + us(1_001)), None);
        assert!(p.is_empty());
        // A copy redirected here (its first copy went to another node) is timed from here.
        assert!(p.arrived(id(2), 3, t0));
        assert_eq!(p.answered(id(2), 3, t0 + us(40)), Some(us(40)));
    }

    /// A request answered in the input that brought it, and one answered inputs later (it
    /// went into the table when the first input's replies were collected), are each timed
    /// once from their arrival; a batch past LATENCY_FRESH_MAX goes into the table at once.
    #[test]
    fn requests_are_timed_whether_answered_in_their_input_or_later() {
        let mut p = PendingRequests::default();
        let t0 = Instant::ZERO + us(1_000);
        assert!(p.arrived(id(1), 0, t0));
        assert!(p.arrived(id(2), 0, t0 + us(5)));
        assert_eq!(p.answered(id(1), 0, t0 + us(30)), Some(us(30)));
        p.settle();
        assert_eq!(p.len(), 1);
        // A retransmit of the waiting one does not restart its clock.
        assert!(p.arrived(id(2), 1, t0 + us(900)));
        p.settle();
        assert_eq!(p.len(), 1);
        assert_eq!(p.answered(id(2), 1, t0 + us(1_005)), Some(us(1_000)));
        assert!(p.is_empty());
        let batch = 3 * LATENCY_FRESH_MAX as u64;
        for r in 0..batch {
            assert!(p.arrived(id(10 + r), 0, t0 + us(r)));
        }
        assert_eq!(p.len(), batch as usize);
        for r in (0..batch).rev() {
            assert_eq!(p.answered(id(10 + r), 0, t0 + us(100)), Some(us(100 - r)));
        }
        assert!(p.is_empty());
        p.settle();
        assert!(p.is_empty());
    }

    #[test]
    fn a_full_table_forgets_only_requests_older_than_the_age_limit() {
        let mut p = PendingRequests::default();
        let t0 = Instant::ZERO + us(1);
        for r in 0..LATENCY_PENDING_MAX as u64 {
            assert!(p.arrived(id(r + 1), 0, t0));
        }
        // Full, nothing old: the next is not timed, and nothing is forgotten.
        let later = t0 + us(1_000_000);
        assert!(!p.arrived(id(u64::MAX), 0, later));
        assert_eq!(p.len(), LATENCY_PENDING_MAX);
        // Past the age limit (and the sweep interval): the old ones go.
        let old = t0 + LATENCY_PENDING_AGE_MAX + us(1_000_000);
        assert!(p.arrived(id(u64::MAX), 0, old));
        assert_eq!(p.len(), 1);
    }
}
