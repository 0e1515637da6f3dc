//! What a replica must store, handed out as a delta (raft-rs's `Ready`, quinn's poll shape):
//! Raft notes each change where it happens — every hard-state change, and every path through
//! the log's `push`, `truncate_from`, `compact` and `install` — and [`Raft::take_persist`]
//! hands the shell exactly what changed since the last call, so storage never compares its
//! files with the log to find out.
//!
//! ```text
//!   handle_message / handle_timeout / propose / compact ──> state changes, noted
//!                                          take_persist() ──> Persist ──> storage writes it
//!                                          poll_message() ──> may leave once it is stored
//! ```
//!
//! A replica built from what it persisted ([`Raft::restore`]) starts with nothing to
//! persist, and so does one rejoining without state ([`Raft::rejoin`], [`Raft::start_new`],
//! whose storage the shell opened empty) while it asks the others: the replica id it drew
//! (spec §8.5, "Replica identities") is handed out when it stops asking, before any answer
//! that carries it leaves. A replica built by [`Raft::new`] with an empty hard state, or
//! restored from one stored without a replica id (`HardState::replica` 0), hands out its
//! hard state with the id it drew in its first delta.

use std::sync::Arc;

use super::entries::LogChanges;
use super::{Entry, HardState, Raft, SnapshotMeta};

/// What a replica must have stored before anything its inputs since the last
/// [`Raft::take_persist`] produced may leave (messages, replies). Applied in field order:
/// the hard state, then the snapshot, then the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// The hard state, when it changed.
    pub hard: Option<HardState>,
    /// A new snapshot (compaction, or one installed from the leader), written before the
    /// log: the stored log is then rewritten to hold exactly `entries` after it (and
    /// `log_from` is its index + 1).
    pub snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// Without a snapshot: the stored log keeps its entries up to `log_from - 1` and then
    /// holds `entries` (which start at `log_from`; none: the log was cut back to
    /// `log_from - 1`). `None` with `entries` empty: log unchanged.
    pub log_from: Option<u64>,
    pub entries: Vec<Entry>,
}

impl Persist {
    /// The shape every delta has (asserted where it is made; storage may assert it too).
    pub fn check(&self) {
        if let Some((meta, _)) = &self.snapshot {
            assert!(
                meta.index > 0 && meta.term > 0,
                "persisting snapshot {meta:?}"
            );
            assert!(
                self.log_from == Some(meta.index + 1),
                "a snapshot through {} with a log from {:?}",
                meta.index,
                self.log_from
            );
        }
        match self.log_from {
            None => assert!(self.entries.is_empty(), "entries without a log_from"),
            Some(from) => assert!(from >= 1, "log_from 0"),
        }
        let mut term_previous = self.snapshot.as_ref().map_or(0, |(meta, _)| meta.term);
        for (position, entry) in self.entries.iter().enumerate() {
            let from = self.log_from.expect("checked above");
            assert!(
                entry.index == from + position as u64,
                "entry {} at position {position} of a delta from {from}",
                entry.index
            );
            assert!(
                entry.term > 0 && entry.term >= term_previous,
                "entry {} of term {} after term {term_previous}",
                entry.index,
                entry.term
            );
            if let Some(hard) = self.hard {
                assert!(
                    entry.term <= hard.term,
                    "entry {} after the term",
                    entry.index
                );
            }
            term_previous = entry.term;
        }
    }
}

impl Raft {
    /// What changed since the last call and must be stored before anything produced since
    /// may leave; `None`: nothing to store. Call it after every input (and after
    /// [`Raft::compact`]), and store what it returns before draining `poll_message` or acting
    /// on `poll_committed`. Each change is handed out once: a shell that cannot store it must
    /// stop (fail-stop), as a crash would.
    pub fn take_persist(&mut self) -> Option<Persist> {
        let hard = std::mem::take(&mut self.hard_changed).then_some(self.hard);
        let (snapshot, log_from, entries) = match self.log.take_changes() {
            None => (None, None, Vec::new()),
            Some(LogChanges::Snapshot) => {
                let meta = self.log.snapshot();
                let data = self.snapshot_data.clone().expect("a snapshot has data");
                (
                    Some((meta, data)),
                    Some(meta.index + 1),
                    self.log.entries().to_vec(),
                )
            }
            Some(LogChanges::From(from)) => {
                let at = (from - self.log.first_index()) as usize;
                (None, Some(from), self.log.entries()[at..].to_vec())
            }
        };
        if hard.is_none() && log_from.is_none() {
            return None;
        }
        let persist = Persist {
            hard,
            snapshot,
            log_from,
            entries,
        };
        persist.check();
        // What it leaves stored is this replica's log: its last entry is the log's.
        if persist.log_from.is_some() {
            let last = persist.entries.last().map_or_else(
                || (persist.log_from.expect("set") - 1, None),
                |e| (e.index, Some(e.term)),
            );
            assert!(last.0 == self.log.last_index());
            assert!(last.1.is_none_or(|term| term == self.log.last_term()));
        }
        Some(persist)
    }

    /// Sets the hard state (every change goes through here, so that `take_persist` hands it
    /// out). Terms never decrease, and a node votes at most once per term (Raft §5.2).
    pub(super) fn set_hard(&mut self, hard: HardState) {
        assert!(
            hard.term > self.hard.term
                || (hard.term == self.hard.term
                    && self
                        .hard
                        .voted_for
                        .is_none_or(|v| Some(v) == hard.voted_for)),
            "hard state {:?} after {:?}: a term went back or a vote changed",
            hard,
            self.hard
        );
        if hard != self.hard {
            self.hard = hard;
            self.hard_changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Message};
    use super::*;
    use crate::core::time::Instant;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            data: vec![index as u8],
        }
    }

    fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
        Message::Append {
            term,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
            round: 1,
            transfer_to: None,
        }
    }

    fn follower() -> Raft {
        let config = Config {
            id: 2,
            voters: vec![1, 2, 3],
            ..Config::default()
        };
        Raft::new(config, 7, HardState::default(), Vec::new(), Instant::ZERO)
    }

    #[test]
    fn a_delta_says_what_changed_and_only_once() {
        let now = Instant::from_micros(1);
        let mut raft = follower();
        let fresh = HardState {
            term: 0,
            voted_for: None,
            replica: raft.replica(),
        };
        assert_ne!(fresh.replica, 0);
        assert_eq!(
            raft.take_persist().map(|p| (p.hard, p.log_from)),
            Some((Some(fresh), None)),
            "a fresh replica stores the replica id it drew, and nothing else"
        );
        assert_eq!(raft.take_persist(), None, "handed out once");
        raft.handle_message(now, 1, append(1, (0, 0), vec![entry(1, 1), entry(1, 2)], 0));
        let p = raft.take_persist().expect("a term and two entries");
        assert_eq!(
            p,
            Persist {
                hard: Some(HardState {
                    term: 1,
                    voted_for: None,
                    replica: raft.replica(),
                }),
                snapshot: None,
                log_from: Some(1),
                entries: vec![entry(1, 1), entry(1, 2)],
            }
        );
        assert_eq!(raft.take_persist(), None, "handed out once");
        // The same Append again changes nothing.
        raft.handle_message(now, 1, append(1, (0, 0), vec![entry(1, 1), entry(1, 2)], 0));
        assert_eq!(raft.take_persist(), None);
        // Leader 3 of term 2 replaces entry 2 (Raft §5.3): cut back to 1, then its entries.
        raft.handle_message(now, 3, append(2, (1, 1), vec![entry(2, 2), entry(2, 3)], 1));
        let p = raft.take_persist().expect("a conflict");
        assert_eq!(p.hard.map(|h| h.term), Some(2));
        assert_eq!(
            (p.log_from, p.entries),
            (Some(2), vec![entry(2, 2), entry(2, 3)])
        );
        // Compaction: the snapshot, and the whole log after it.
        while raft.poll_committed().is_some() {}
        raft.compact(1, Arc::new(vec![1]));
        let p = raft.take_persist().expect("a snapshot");
        assert_eq!(p.hard, None);
        assert_eq!(
            p.snapshot.map(|(meta, _)| meta),
            Some(SnapshotMeta { index: 1, term: 1 })
        );
        assert_eq!(
            (p.log_from, p.entries),
            (Some(2), vec![entry(2, 2), entry(2, 3)])
        );
    }

    #[test]
    fn a_restored_or_rejoining_replica_has_nothing_to_store_until_it_takes_part() {
        let now = Instant::from_micros(1);
        let mut raft = follower();
        raft.handle_message(now, 1, append(1, (0, 0), vec![entry(1, 1), entry(1, 2)], 2));
        while raft.poll_committed().is_some() {}
        raft.compact(1, Arc::new(vec![1]));
        let config = raft.config.clone();
        let snapshot = Some((raft.snapshot_meta(), Arc::new(vec![1])));
        let mut restored = Raft::restore(
            config.clone(),
            1,
            raft.hard_state(),
            snapshot,
            raft.log().to_vec(),
            now,
        );
        assert_eq!(restored.take_persist(), None);
        assert_eq!(restored.replica(), raft.replica(), "keeps its replica id");
        let only_replica = |raft: &mut Raft| {
            let stored = raft.take_persist().expect("the replica id");
            assert_eq!(stored.log_from, None);
            assert_eq!(
                stored.hard,
                Some(HardState {
                    term: 0,
                    voted_for: None,
                    replica: raft.replica(),
                })
            );
            assert_eq!(raft.take_persist(), None);
            raft.replica()
        };
        let mut rejoined = Raft::rejoin(config.clone(), 2, now);
        assert_eq!(rejoined.take_persist(), None, "asking");
        let mut new = Raft::start_new(config.clone(), 3, now);
        assert_eq!(new.take_persist(), None, "asking");
        assert!(rejoined.replica() != raft.replica() && new.replica() != rejoined.replica());
        // Once it stops asking (here: every other node said it is new too), its id.
        for (from, nonce) in [(1, new_nonce(&mut new)), (3, new_nonce(&mut new))] {
            let answer = Message::NoStateReply {
                term: 0,
                nonce,
                new: true,
            };
            new.handle_message(now, from, answer);
        }
        assert!(!new.rejoining());
        only_replica(&mut new);
        // A hard state stored before replica ids (a version 1 file): a fresh id, stored.
        let old = HardState {
            replica: 0,
            ..raft.hard_state()
        };
        let mut upgraded = Raft::restore(config, 4, old, None, Vec::new(), now);
        let stored = upgraded.take_persist().expect("the replica id");
        assert_eq!(
            stored.hard.map(|h| (h.term, h.replica)),
            Some((old.term, upgraded.replica()))
        );
        assert_ne!(upgraded.replica(), 0);
    }

    /// The nonce of the TermQuery `raft` sent (it asks every other voter).
    fn new_nonce(raft: &mut Raft) -> u64 {
        raft.outbox
            .iter()
            .find_map(|(_, m)| match m {
                Message::TermQuery { nonce, .. } => Some(*nonce),
                _ => None,
            })
            .expect("asking")
    }

    #[test]
    #[should_panic(expected = "a vote changed")]
    fn a_second_vote_in_a_term_is_a_bug() {
        let mut raft = follower();
        raft.set_hard(HardState {
            term: 3,
            voted_for: Some(1),
            replica: raft.replica(),
        });
        raft.set_hard(HardState {
            term: 3,
            voted_for: Some(3),
            replica: raft.replica(),
        });
    }
}
