//! The replicated log of one node: entries in index order, index 1 first, with the few
//! questions Raft asks of it (term at an index, is a candidate's log up to date, where does a
//! conflicting run of one term start). Every change goes through [`RaftLog::push`] or
//! [`RaftLog::truncate_from`], which assert the shape the rest of the core relies on:
//! index `i` is at position `i - 1`, and terms never decrease along the log (Raft §5.3: a
//! leader only appends entries of its own term, which is never below an earlier one).
//!
//! There is no compaction in this step, so the whole log stays in memory.

use super::Entry;

/// The log, owned by [`super::Raft`].
#[derive(Debug)]
pub(super) struct RaftLog {
    entries: Vec<Entry>,
}

impl RaftLog {
    /// Takes the log a node persisted. `term` is the persisted current term: no entry can be
    /// of a later term, because a node adopts a term before it stores anything of it.
    pub(super) fn from_persisted(entries: Vec<Entry>, term: u64) -> RaftLog {
        let mut term_previous = 0;
        for (position, entry) in entries.iter().enumerate() {
            assert!(
                entry.index == position as u64 + 1,
                "persisted log: entry at position {position} has index {}",
                entry.index
            );
            assert!(
                entry.term >= term_previous && entry.term <= term && entry.term > 0,
                "persisted log: entry {} has term {} after term {term_previous} (current term {term})",
                entry.index,
                entry.term
            );
            term_previous = entry.term;
        }
        RaftLog { entries }
    }

    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Index of the last entry, 0 when empty.
    pub(super) fn last_index(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Term of the last entry, 0 when empty.
    pub(super) fn last_term(&self) -> u64 {
        self.entries.last().map_or(0, |entry| entry.term)
    }

    /// Term of the entry at `index`; index 0 is the empty prefix every log shares (term 0);
    /// `None` past the end.
    pub(super) fn term_at(&self, index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.entries
            .get((index - 1) as usize)
            .map(|entry| entry.term)
    }

    /// The entry at `index` (1..=last_index).
    pub(super) fn entry(&self, index: u64) -> &Entry {
        assert!(
            index >= 1 && index <= self.last_index(),
            "entry {index} of {}",
            self.last_index()
        );
        &self.entries[(index - 1) as usize]
    }

    /// Up to `count_max` entries starting at `first` (which may be `last_index + 1`: none).
    /// Up to `count_max` entries from `first` whose data plus `ENTRY_OVERHEAD` each add up
    /// to at most `bytes_max`, but at least one entry if any exists and `count_max > 0`.
    pub(super) fn slice(&self, first: u64, count_max: usize, bytes_max: usize) -> &[Entry] {
        assert!(first >= 1 && first <= self.last_index() + 1);
        let start = (first - 1) as usize;
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
        self.entries.push(entry);
    }

    /// Removes the entries at `index` and after. The caller asserts they are not committed.
    pub(super) fn truncate_from(&mut self, index: u64) {
        assert!(index >= 1 && index <= self.last_index());
        self.entries.truncate((index - 1) as usize);
        assert!(self.last_index() == index - 1);
    }

    /// Raft §5.4.1 (election restriction): a log ending in `(last_log_term, last_log_index)` is
    /// at least as up to date as this one if its last term is later, or equal with an index
    /// at least as high.
    pub(super) fn is_up_to_date(&self, last_log_index: u64, last_log_term: u64) -> bool {
        (last_log_term, last_log_index) >= (self.last_term(), self.last_index())
    }

    /// The first index of the run of entries that share the term of the entry at `index`
    /// (1..=last_index). When a leader disagrees with this node at `index`, the follower
    /// suggests it retry from before the run (the optimisation at the end of Raft §5.3):
    /// one round trip per conflicting term instead of one per entry. It may resend a few
    /// entries that already matched; the follower skips those.
    pub(super) fn run_start(&self, index: u64) -> u64 {
        let term = self.entry(index).term;
        let mut first = index;
        while first > 1 && self.entry(first - 1).term == term {
            first -= 1;
        }
        assert!(first >= 1 && first <= index);
        first
    }
}
