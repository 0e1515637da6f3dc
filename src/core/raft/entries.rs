//! The replicated log of one node: the entries after its latest snapshot, in index order,
//! with the few questions Raft asks of it (term at an index, is a candidate's log up to date,
//! where does a conflicting run of one term start). Every change goes through
//! [`RaftLog::push`], [`RaftLog::truncate_from`], [`RaftLog::compact`] or
//! [`RaftLog::install`], which assert the shape the rest of the core relies on: index `i` is
//! at position `i - first_index()`, and terms never decrease along the log (Raft §5.3: a
//! leader only appends entries of its own term, which is never below an earlier one).
//!
//! Log compaction (Raft §7, thesis §5): the entries through `snapshot.index` are gone,
//! replaced by the state machine snapshot the shell took (or received). The log remembers the
//! snapshot's last index and term, so the consistency check of the first Append after it
//! (`prev_log_index == snapshot.index`) and the election restriction still work.
//!
//! Persistence: each of those four changes also notes what the stored log must change (the
//! first index it replaces, or a new snapshot), so that [`super::Raft::take_persist`] hands
//! the shell exactly that ([`super::Persist`]) rather than the shell comparing its files with
//! the log afterwards.

use super::membership::{Configs, Membership};
use super::{Entry, SnapshotMeta};

/// The log, owned by [`super::Raft`].
#[derive(Debug)]
pub(super) struct RaftLog {
    /// What the entries before `entries` were compacted into; index 0 = none.
    snapshot: SnapshotMeta,
    /// Indexes `snapshot.index + 1 ..`.
    entries: Vec<Entry>,
    /// What changed since the last [`RaftLog::take_changes`]: the stored log is to be cut
    /// back to before this index and to hold the entries from it (a push or a truncation
    /// since; the lowest index any of them touched).
    changed_from: Option<u64>,
    /// The snapshot changed since (compaction or an installed one): the stored log is to be
    /// rewritten whole after it.
    snapshot_changed: bool,
    /// The configurations the snapshot and the entries hold (`membership.rs`), kept in step
    /// with every change.
    configs: Configs,
    /// The entries' memory: each one's data plus [`ENTRY_MEMORY_OVERHEAD`] (what the
    /// shard's log-bytes limit counts, `core::replica`), kept in step with every change.
    bytes: u64,
}

/// What one entry costs in memory beyond its data: the `Entry` itself in the log's vector
/// (32 bytes: term, index and the data's pointer and length), the shared data's two reference
/// counts (16 bytes) and the data allocation's header and rounding (up to 24 bytes with a
/// 16-byte-aligned allocator).
pub const ENTRY_MEMORY_OVERHEAD: usize = 72;

const _: () = assert!(std::mem::size_of::<Entry>() <= 32);

/// What `entry` counts for in [`RaftLog::bytes`].
fn entry_bytes(entry: &Entry) -> u64 {
    (entry.data.len() + ENTRY_MEMORY_OVERHEAD) as u64
}

/// What the stored log must change since the last [`RaftLog::take_changes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LogChanges {
    /// A new snapshot: the stored log is rewritten to hold every entry after it.
    Snapshot,
    /// The stored log keeps its entries before this index and holds this log's from it on.
    From(u64),
}

impl RaftLog {
    /// Takes the snapshot meta and the log after it that a node persisted. `term` is the
    /// persisted current term: no entry can be of a later term, because a node adopts a term
    /// before it stores anything of it.
    /// `base` is the configuration as of the snapshot (the static one without a snapshot).
    pub(super) fn from_persisted(
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        term: u64,
        base: Membership,
    ) -> RaftLog {
        assert!(
            (snapshot.index == 0) == (snapshot.term == 0),
            "persisted snapshot {snapshot:?}: index and term are both 0 or neither"
        );
        assert!(
            snapshot.term <= term,
            "persisted snapshot of term {} after current term {term}",
            snapshot.term
        );
        let mut term_previous = snapshot.term;
        for (position, entry) in entries.iter().enumerate() {
            assert!(
                entry.index == snapshot.index + position as u64 + 1,
                "persisted log: entry at position {position} has index {} (snapshot {})",
                entry.index,
                snapshot.index
            );
            assert!(
                entry.term >= term_previous && entry.term <= term && entry.term > 0,
                "persisted log: entry {} has term {} after term {term_previous} (current term {term})",
                entry.index,
                entry.term
            );
            term_previous = entry.term;
        }
        let mut configs = Configs::new(base);
        for entry in &entries {
            configs.pushed(entry.index, &entry.data);
        }
        // What was persisted needs no persisting.
        RaftLog {
            snapshot,
            bytes: entries.iter().map(entry_bytes).sum(),
            entries,
            changed_from: None,
            snapshot_changed: false,
            configs,
        }
    }

    /// What changed since the last call (`None`: nothing), and forgets it: the caller hands it
    /// to storage now.
    pub(super) fn take_changes(&mut self) -> Option<LogChanges> {
        let from = self.changed_from.take();
        if std::mem::take(&mut self.snapshot_changed) {
            return Some(LogChanges::Snapshot);
        }
        let from = from?;
        // Without a new snapshot nothing before the current one was touched: every change
        // since the last call was a push or truncation after it.
        assert!(
            from >= self.first_index() && from <= self.last_index() + 1,
            "log changed from {from}, outside {}..={}",
            self.first_index(),
            self.last_index() + 1
        );
        Some(LogChanges::From(from))
    }

    /// Notes that the entries from `index` on changed (see `changed_from`).
    fn changed(&mut self, index: u64) {
        self.changed_from = Some(self.changed_from.map_or(index, |from| from.min(index)));
    }

    /// The configurations the log holds.
    pub(super) fn configs(&self) -> &Configs {
        &self.configs
    }

    /// The memory the entries still held take (each one's data and
    /// [`ENTRY_MEMORY_OVERHEAD`]).
    pub(super) fn bytes(&self) -> u64 {
        debug_assert_eq!(
            self.bytes,
            self.entries.iter().map(entry_bytes).sum::<u64>()
        );
        self.bytes
    }

    /// The entries still held, `first_index()` first.
    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn snapshot(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// The first index still held (whether or not an entry is there yet).
    pub(super) fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    /// Index of the last entry, the snapshot's when no entry follows it, 0 when empty.
    pub(super) fn last_index(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    /// Term of the last entry, the snapshot's when no entry follows it, 0 when empty.
    pub(super) fn last_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.term, |entry| entry.term)
    }

    /// Term of the entry at `index`; the snapshot's last index answers with the snapshot's
    /// term (index 0, the empty prefix every log shares, with term 0). `None` past the end and
    /// before the snapshot's last index (compacted away).
    pub(super) fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return None;
        }
        self.entries
            .get((index - self.first_index()) as usize)
            .map(|entry| entry.term)
    }

    /// The entry at `index` (first_index..=last_index).
    pub(super) fn entry(&self, index: u64) -> &Entry {
        assert!(
            index >= self.first_index() && index <= self.last_index(),
            "entry {index} of {}..={}",
            self.first_index(),
            self.last_index()
        );
        &self.entries[(index - self.first_index()) as usize]
    }

    /// Up to `count_max` entries from `first` (first_index..=last_index + 1; the latter gives
    /// none) whose data plus `ENTRY_OVERHEAD` each add up to at most `bytes_max`, but at least
    /// one entry if any exists and `count_max > 0`.
    pub(super) fn slice(&self, first: u64, count_max: usize, bytes_max: usize) -> &[Entry] {
        assert!(first >= self.first_index() && first <= self.last_index() + 1);
        let start = (first - self.first_index()) as usize;
        let mut end = self.entries.len().min(start.saturating_add(count_max));
        let mut bytes = 0usize;
        for (offset, entry) in self.entries[start..end].iter().enumerate() {
            bytes = bytes.saturating_add(entry.data.len() + super::ENTRY_OVERHEAD);
            if bytes > bytes_max && offset > 0 {
                end = start + offset;
                break;
            }
        }
        &self.entries[start..end]
    }

    /// Appends one entry at `last_index + 1`.
    pub(super) fn push(&mut self, entry: Entry) {
        assert!(
            entry.index == self.last_index() + 1,
            "appending entry {} after {}",
            entry.index,
            self.last_index()
        );
        assert!(
            entry.term >= self.last_term() && entry.term > 0,
            "appending entry {} of term {} after term {}",
            entry.index,
            entry.term,
            self.last_term()
        );
        self.changed(entry.index);
        self.configs.pushed(entry.index, &entry.data);
        self.bytes += entry_bytes(&entry);
        self.entries.push(entry);
    }

    /// Removes the entries at `index` and after. The caller asserts they are not committed
    /// (which also keeps `index` after the snapshot: a snapshot holds committed entries only).
    pub(super) fn truncate_from(&mut self, index: u64) {
        assert!(index >= self.first_index() && index <= self.last_index());
        let cut = (index - self.first_index()) as usize;
        self.bytes -= self.entries[cut..].iter().map(entry_bytes).sum::<u64>();
        self.entries.truncate(cut);
        self.changed(index);
        self.configs.truncated(index);
        assert!(self.last_index() == index - 1);
    }

    /// Drops the entries through `index` (held, after the snapshot): the shell's snapshot of
    /// its state machine now covers them (Raft §7).
    pub(super) fn compact(&mut self, index: u64) {
        assert!(index >= self.first_index() && index <= self.last_index());
        let term = self.entry(index).term;
        let cut = (index - self.snapshot.index) as usize;
        self.bytes -= self.entries[..cut].iter().map(entry_bytes).sum::<u64>();
        self.entries.drain(..cut);
        self.configs.compacted(index);
        self.snapshot = SnapshotMeta { index, term };
        self.snapshot_changed = true;
        assert!(self.first_index() == index + 1);
        assert!(self.term_at(index) == Some(term));
    }

    /// Installs a snapshot received from the leader (Raft §7): if this log holds the
    /// snapshot's last entry with the same term, the entries after it are kept (they may be
    /// what the leader sent after the snapshot; Log Matching makes them agree with it),
    /// otherwise the whole log is discarded. Returns whether the suffix was kept. The
    /// snapshot records `membership` (`None`: none, so `fallback`, the static one).
    pub(super) fn install(
        &mut self,
        snapshot: SnapshotMeta,
        membership: Option<Membership>,
        fallback: &Membership,
    ) -> bool {
        assert!(snapshot.index > self.snapshot.index && snapshot.term >= self.snapshot.term);
        let kept = self.term_at(snapshot.index) == Some(snapshot.term);
        if kept {
            let cut = (snapshot.index - self.snapshot.index) as usize;
            self.bytes -= self.entries[..cut].iter().map(entry_bytes).sum::<u64>();
            self.entries.drain(..cut);
        } else {
            self.entries.clear();
            self.bytes = 0;
        }
        self.configs
            .installed(snapshot.index, membership, fallback, kept);
        self.snapshot = snapshot;
        self.snapshot_changed = true;
        assert!(self.term_at(snapshot.index) == Some(snapshot.term));
        assert!(self
            .entries
            .first()
            .is_none_or(|e| e.index == snapshot.index + 1));
        kept
    }

    /// Raft §5.4.1 (election restriction): a log ending in `(last_log_term, last_log_index)` is
    /// at least as up to date as this one if its last term is later, or equal with an index
    /// at least as high. After compaction with no entry left, this log ends in its snapshot.
    pub(super) fn is_up_to_date(&self, last_log_index: u64, last_log_term: u64) -> bool {
        (last_log_term, last_log_index) >= (self.last_term(), self.last_index())
    }

    /// The first index of the run of entries that share the term of the entry at `index`
    /// (first_index..=last_index), never before `first_index`. When a leader disagrees with
    /// this node at `index`, the follower suggests it retry from before the run (the
    /// optimisation at the end of Raft §5.3): one round trip per conflicting term instead of
    /// one per entry. It may resend a few entries that already matched; the follower skips
    /// those.
    pub(super) fn run_start(&self, index: u64) -> u64 {
        let term = self.entry(index).term;
        let mut first = index;
        while first > self.first_index() && self.entry(first - 1).term == term {
            first -= 1;
        }
        assert!(first >= self.first_index() && first <= index);
        first
    }
}
