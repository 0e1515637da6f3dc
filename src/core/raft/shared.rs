//! What the Raft groups of one node (one per shard) share: the memory budget of incoming
//! snapshot transfers, and the budget of log lines that peer input may cause. Each is bounded
//! per node, not per shard: with 64 shards, a bound per shard would be 64 times too loose.
//!
//! A node makes one [`NodeShared`] and gives a clone to every shard replica
//! ([`super::Raft::share`]); a `Raft` built alone has one of its own. The handles are cheap
//! clones of one shared state behind an `Arc`. Pure: no IO, no clock (callers pass `now`),
//! and deterministic when one thread drives every shard, as a node and the simulator do.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::time::{Duration, Instant};

/// Bytes of incoming snapshot transfers one node holds at once, over all its shards: each
/// partial transfer reserves its whole announced length when it starts, and a transfer that
/// does not fit is refused until another ends (spec §8.5, "Receiving a snapshot"). Without it
/// a node kept every shard's partial transfer 1:1, up to `SNAPSHOT_LEN_MAX` (256 MiB) each: 16
/// GiB with 64 shards, for anyone who could send it chunks. Equal to `SNAPSHOT_LEN_MAX`, so
/// the largest snapshot a leader may send always fits on its own, and this is the most a
/// node spends on transfers beside its own tables (whose snapshots are of the same order). A
/// shard's snapshot is typically far smaller (a few hundred bytes per held lock), so many
/// transfers run at once; the largest ones take turns (a refused one's leader retries every
/// heartbeat round).
pub const SNAPSHOT_RECEIVE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A partial transfer that has not grown for this many of the longest election timeouts
/// (3 s with the default 300 ms) is dropped, with its reservation, so one whose leader went
/// away (or that a forged chunk started) cannot keep a genuine transfer out of the budget for
/// ever. A live leader sends a follower in transfer at least one chunk per heartbeat round,
/// at most half the shortest election timeout apart, so a live transfer grows many times in
/// that span unless nearly every chunk is lost; a leader silent that long has been replaced
/// (its followers elect another after one election timeout), and a new leader sends its own
/// snapshot. Dropping a live transfer costs its restart, nothing else.
pub const SNAPSHOT_RECEIVE_STALL_TIMEOUTS: u64 = 10;

/// Log lines of one kind (see [`PeerLogKind`]) that peer input may cause per
/// [`PEER_LOG_PERIOD`] on one node; further ones are counted and the count is told with the
/// next line of that kind. A forged or faulty peer can send records at line rate: an
/// APPEND_REPLY of term 2^63 - 1 made every node log about 70 KB/s for ever (issue 8).
/// Enough to see what is wrong, and at most about one line per second per kind.
pub const PEER_LOG_LINES_MAX: u32 = 10;

/// The period of [`PEER_LOG_LINES_MAX`].
pub const PEER_LOG_PERIOD: Duration = Duration::from_millis(10_000);

/// The budgets one node's Raft groups share (see the module docs).
#[derive(Clone, Debug)]
pub struct NodeShared {
    pub(super) snapshots: SnapshotBudget,
    pub(super) peer_log: PeerLog,
}

impl NodeShared {
    /// A node's budgets at their defaults.
    pub fn new() -> NodeShared {
        NodeShared::with_snapshot_bytes_max(SNAPSHOT_RECEIVE_BYTES_MAX)
    }

    /// With another snapshot budget (tests).
    pub fn with_snapshot_bytes_max(bytes_max: u64) -> NodeShared {
        NodeShared {
            snapshots: SnapshotBudget::new(bytes_max),
            peer_log: PeerLog::new(),
        }
    }

    /// Bytes the node's partial snapshot transfers hold reserved now.
    pub fn snapshot_bytes_reserved(&self) -> u64 {
        self.snapshots.reserved()
    }

    /// Log lines about peer input skipped so far (see [`PEER_LOG_LINES_MAX`]).
    pub fn peer_log_skipped(&self) -> u64 {
        self.peer_log.skipped_total()
    }

    /// Log lines about peer input written so far.
    pub fn peer_log_written(&self) -> u64 {
        self.peer_log.written_total()
    }

    pub(crate) fn peer_log(&self) -> &PeerLog {
        &self.peer_log
    }
}

impl Default for NodeShared {
    fn default() -> NodeShared {
        NodeShared::new()
    }
}

/// The node's budget of bytes for partial snapshot transfers ([`SNAPSHOT_RECEIVE_BYTES_MAX`]).
#[derive(Clone, Debug)]
pub(super) struct SnapshotBudget {
    inner: Arc<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    bytes_max: u64,
    reserved: AtomicU64,
}

impl SnapshotBudget {
    fn new(bytes_max: u64) -> SnapshotBudget {
        SnapshotBudget {
            inner: Arc::new(BudgetState {
                bytes_max,
                reserved: AtomicU64::new(0),
            }),
        }
    }

    pub(super) fn bytes_max(&self) -> u64 {
        self.inner.bytes_max
    }

    pub(super) fn reserved(&self) -> u64 {
        self.inner.reserved.load(Ordering::SeqCst)
    }

    /// `bytes` more, if they fit: held until the [`Reservation`] is dropped.
    pub(super) fn reserve(&self, bytes: u64) -> Option<Reservation> {
        let max = self.inner.bytes_max;
        self.inner
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(bytes).filter(|&total| total <= max)
            })
            .ok()?;
        assert!(self.reserved() <= max);
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes of a [`SnapshotBudget`] held by one partial transfer; given back when dropped, so
/// every way a transfer ends (installed, replaced, dropped, the replica gone) frees them.
#[derive(Debug)]
pub(super) struct Reservation {
    budget: SnapshotBudget,
    bytes: u64,
}

impl Reservation {
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let before = self
            .budget
            .inner
            .reserved
            .fetch_sub(self.bytes, Ordering::SeqCst);
        assert!(
            before >= self.bytes,
            "a reservation gave back more than it held"
        );
    }
}

/// What a log line about peer input is about: each kind has its own budget of lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerLogKind {
    /// A term beyond `TERM_MAX` or far ahead of this node's (`TERM_AHEAD_MAX`).
    Term,
    /// A record that breaks the form Raft expects of it.
    Malformed,
    /// A record that contradicts Raft (a second leader, a committed entry, a snapshot).
    Contradicts,
    /// A snapshot refused: too large, or it does not decode.
    SnapshotRefused,
    /// A snapshot transfer that the node's budget cannot hold now.
    SnapshotNoRoom,
    /// A partial snapshot transfer dropped because it stopped growing.
    SnapshotStalled,
    /// A leader steps down for a later term in an answer.
    SteppingDown,
    /// A follower answers from a new life: the leader replicates to it from scratch.
    NewLife,
    /// A committed log entry that the shard cannot apply.
    BadEntry,
    /// A peer's settings differ from this node's, or agree again (PEER_SETTINGS).
    Settings,
}

const KINDS: usize = 10;

impl PeerLogKind {
    fn index(self) -> usize {
        match self {
            PeerLogKind::Term => 0,
            PeerLogKind::Malformed => 1,
            PeerLogKind::Contradicts => 2,
            PeerLogKind::SnapshotRefused => 3,
            PeerLogKind::SnapshotNoRoom => 4,
            PeerLogKind::SteppingDown => 5,
            PeerLogKind::NewLife => 6,
            PeerLogKind::BadEntry => 7,
            PeerLogKind::SnapshotStalled => 8,
            PeerLogKind::Settings => 9,
        }
    }
}

/// The node's budget of log lines about peer input ([`PEER_LOG_LINES_MAX`] per kind per
/// [`PEER_LOG_PERIOD`]).
#[derive(Clone, Debug)]
pub(crate) struct PeerLog {
    inner: Arc<Mutex<PeerLogState>>,
}

#[derive(Debug, Default)]
struct PeerLogState {
    kinds: [KindState; KINDS],
    written: u64,
    skipped: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct KindState {
    /// Start of the current period (the first line after the previous one ended).
    period_start: Option<Instant>,
    /// Lines written in the current period.
    lines: u32,
    /// Lines skipped since the last one written.
    skipped: u64,
}

/// How many lines of a kind were skipped before the one being written: shown after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Skipped(pub(crate) u64);

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 {
            write!(f, " ({} more like it not logged before this one)", self.0)?;
        }
        Ok(())
    }
}

impl PeerLog {
    fn new() -> PeerLog {
        PeerLog {
            inner: Arc::new(Mutex::new(PeerLogState::default())),
        }
    }

    /// Whether a line of `kind` may be written at `now`; if so, how many were skipped before
    /// it (write them with it). Otherwise the line is counted as skipped.
    pub(crate) fn admit(&self, kind: PeerLogKind, now: Instant) -> Option<Skipped> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let k = &mut state.kinds[kind.index()];
        if k.period_start
            .is_none_or(|start| now >= start + PEER_LOG_PERIOD)
        {
            k.period_start = Some(now);
            k.lines = 0;
        }
        if k.lines >= PEER_LOG_LINES_MAX {
            k.skipped += 1;
            state.skipped += 1;
            return None;
        }
        k.lines += 1;
        let skipped = std::mem::take(&mut k.skipped);
        state.written += 1;
        assert!(state.kinds[kind.index()].lines <= PEER_LOG_LINES_MAX);
        Some(Skipped(skipped))
    }

    fn skipped_total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).skipped
    }

    fn written_total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).written
    }
}

/// Counts the log lines (info and above) each test thread writes: a logger of its own,
/// installed once for the test binary (no other test installs one). For tests that bound
/// what peer input can make a node log.
#[cfg(test)]
pub(crate) mod log_lines {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        static LINES: Cell<u64> = const { Cell::new(0) };
    }

    struct Counter;

    impl log::Log for Counter {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Info
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                LINES.with(|lines| lines.set(lines.get() + 1));
            }
        }
        fn flush(&self) {}
    }

    /// Lines this thread has written so far.
    pub(crate) fn written() -> u64 {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            if log::set_boxed_logger(Box::new(Counter)).is_ok() {
                log::set_max_level(log::LevelFilter::Info);
            }
        });
        LINES.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_holds_at_most_its_bytes_and_frees_them_when_a_reservation_ends() {
        let budget = SnapshotBudget::new(100);
        let a = budget.reserve(60).expect("fits");
        assert!(budget.reserve(41).is_none(), "over the budget");
        assert!(budget.reserve(u64::MAX).is_none(), "no overflow");
        let b = budget.reserve(40).expect("fits exactly");
        assert_eq!(budget.reserved(), 100);
        drop(a);
        assert_eq!(budget.reserved(), 40);
        let c = budget.clone().reserve(60).expect("freed");
        drop((b, c));
        assert_eq!(budget.reserved(), 0);
    }

    #[test]
    fn log_lines_of_a_kind_are_bounded_per_period_and_the_skipped_ones_counted() {
        let log = PeerLog::new();
        let t0 = Instant::from_micros(5);
        let written = (0..1_000)
            .filter(|_| log.admit(PeerLogKind::Term, t0).is_some())
            .count();
        assert_eq!(written, PEER_LOG_LINES_MAX as usize);
        // Another kind has its own budget.
        assert_eq!(log.admit(PeerLogKind::Malformed, t0), Some(Skipped(0)));
        // Within the period: still refused; after it, the first line tells the skipped.
        assert_eq!(
            log.admit(
                PeerLogKind::Term,
                t0 + PEER_LOG_PERIOD - Duration::from_micros(1)
            ),
            None
        );
        let skipped = 1_000 - PEER_LOG_LINES_MAX as u64 + 1;
        assert_eq!(
            log.admit(PeerLogKind::Term, t0 + PEER_LOG_PERIOD),
            Some(Skipped(skipped))
        );
        assert_eq!(log.skipped_total(), skipped);
        assert_eq!(log.written_total(), PEER_LOG_LINES_MAX as u64 + 2);
        assert!(Skipped(skipped).to_string().contains(&skipped.to_string()));
    }
}
