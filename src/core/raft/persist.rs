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
//! # Reporting what is stored (thesis §10.2.1)
//!
//! A leader may send its entries to its followers while it writes them to its own disk, and
//! counts itself toward a majority only for what its disk holds: `durable`, the highest
//! index through which the stored log holds this log's entries. Each [`Persist`] says what
//! the stored log ends with once it is applied (`last_index`, `last_term`: the in-memory
//! log's last entry when it was taken), and the shell reports each delta stored, in order,
//! with [`Raft::persisted`]. It moves `durable`:
//!
//! - **a report** raises it to the delta's last index if this log still holds an entry of
//!   the delta's last term there. Sound by Log Matching (Raft §5.3): two logs that hold an
//!   entry of the same index and term hold the same entries up to it, so the stored log
//!   (this node's log as it was when the delta was taken) and the log now agree through
//!   that index. A truncation in between cannot leave the same term there: a cut at `c <=
//!   index` removed an entry that conflicted with a leader's at `c`; an entry of that term
//!   at `index` again would, by Log Matching, bring back the very prefix that was cut.
//!   So a report for a cut suffix does not count;
//! - **a truncation** (a follower's conflict, Raft §5.3) lowers it below the cut: the stored
//!   log holds the cut entries until the cut is stored;
//! - **a snapshot installed from the leader** keeps it when the log's suffix was kept (the
//!   stored log still agrees through it, and the snapshot stands for committed entries it
//!   agreed with), else lowers it to the commit index before the install (committed entries
//!   match every leader's, Leader Completeness, and were stored); the snapshot's own write,
//!   once reported, raises it again. Compaction leaves it as it is; a report whose last
//!   index a snapshot has covered since is ignored (its term is no longer known), which only
//!   delays counting until the next report;
//! - **a restored replica** starts with its whole log durable (it was read from the disk).
//!
//! Only a leader reads it (`advance_commit`); a follower's acknowledgements leave only once
//! its writes are stored (the node core's `Transmit::after`), and a follower that becomes
//! leader has had every write before its vote stored. With [`super::Config::appended_is_durable`]
//! (a node without storage) the whole log counts at once.
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
use super::{Entry, HardState, Raft, Role, SnapshotMeta};

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
    /// The stored log's last index and term once this delta is applied: the in-memory log's
    /// when it was taken (0, 0: empty). The shell reports them back with [`Raft::persisted`]
    /// once the delta is stored.
    pub last_index: u64,
    pub last_term: u64,
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
        // What it leaves stored ends where its log does.
        if let Some(last) = self.entries.last() {
            assert!((self.last_index, self.last_term) == (last.index, last.term));
        } else if let Some((meta, _)) = &self.snapshot {
            assert!((self.last_index, self.last_term) == (meta.index, meta.term));
        } else if let Some(from) = self.log_from {
            assert!(
                self.last_index == from - 1,
                "a cut to {} ends at {}",
                from - 1,
                self.last_index
            );
        }
    }
}

impl Raft {
    /// What changed since the last call and must be stored before anything produced since
    /// may leave (but a leader's Appends: module docs); `None`: nothing to store. Call it
    /// after every input (and after [`Raft::compact`]), store what it returns, and report it
    /// stored with [`Raft::persisted`]. Each change is handed out once: a shell that cannot
    /// store it must stop (fail-stop), as a crash would.
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
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
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

    /// The shell stored a delta whose stored log ends at `(index, term)` ([`Persist`]'s
    /// `last_index`, `last_term`), and every delta handed out before it. Raises `durable` if
    /// this log still holds `term` at `index` (see the module docs for why that is sound);
    /// a leader may then commit more (thesis §10.2.1), so drain `poll_committed` and
    /// `poll_message` after it as after any input.
    pub fn persisted(&mut self, index: u64, term: u64) {
        if index > self.durable && self.log.term_at(index) == Some(term) {
            self.durable = index;
            if self.role == Role::Leader {
                self.advance_commit();
            }
        }
        self.check_invariants();
    }

    /// The highest index through which this node's stored log holds its log, as reported.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// What the leader counts for itself toward a majority: `durable`, or the whole log for
    /// a node without storage ([`super::Config::appended_is_durable`]).
    pub(super) fn own_durable(&self) -> u64 {
        if self.config.appended_is_durable {
            self.log.last_index()
        } else {
            self.durable
        }
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
    use super::super::{Config, Message, NodeId};
    use super::*;
    use crate::core::time::Instant;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            data: vec![index as u8].into(),
        }
    }

    fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
        Message::Append {
            term,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries.into(),
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
                last_index: 2,
                last_term: 1,
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

    /// Node 1 of voters 1, 2, 3, elected in term 1 (its no-op at index 1), with what it
    /// handed out taken but not reported stored.
    fn leader_of_three() -> Raft {
        let config = Config {
            id: 1,
            voters: vec![1, 2, 3],
            ..Config::default()
        };
        let mut raft = Raft::new(config, 7, HardState::default(), Vec::new(), Instant::ZERO);
        let now = raft.poll_timeout();
        raft.handle_timeout(now);
        let granted = |term| Message::PreVoteReply {
            term,
            granted: true,
            replica: 2,
        };
        raft.handle_message(now, 2, granted(1));
        raft.handle_message(
            now,
            2,
            Message::VoteReply {
                term: 1,
                granted: true,
                replica: 2,
            },
        );
        assert_eq!(raft.role(), Role::Leader);
        assert!(raft.take_persist().is_some());
        raft
    }

    fn ack(raft: &Raft, from: NodeId, match_index: u64) -> Message {
        Message::AppendReply {
            term: raft.term(),
            success: true,
            match_index,
            round: raft.round(),
            life: from,
            replica: from,
        }
    }

    /// Thesis §10.2.1: an entry commits once a majority has it durable, the leader among them
    /// or not; a leader whose own write is not reported stored does not count itself.
    #[test]
    fn a_leader_counts_itself_only_once_its_write_is_reported() {
        let now = Instant::from_micros(1);
        let mut raft = leader_of_three();
        let index = raft.propose(now, vec![7]).unwrap();
        let stored = raft.take_persist().expect("the entry");
        assert_eq!((stored.last_index, stored.last_term), (index, 1));
        raft.handle_message(now, 2, ack(&raft, 2, index));
        assert_eq!(
            raft.commit_index(),
            0,
            "one follower of three is no majority"
        );
        // The majority without the leader.
        raft.handle_message(now, 3, ack(&raft, 3, index));
        assert_eq!(raft.commit_index(), index);
        // Or with it, once its write is reported.
        let mut raft = leader_of_three();
        let index = raft.propose(now, vec![7]).unwrap();
        let stored = raft.take_persist().expect("the entry");
        raft.handle_message(now, 2, ack(&raft, 2, index));
        assert_eq!(raft.commit_index(), 0);
        raft.persisted(stored.last_index, stored.last_term);
        assert_eq!((raft.durable(), raft.commit_index()), (index, index));
    }

    #[test]
    fn a_single_voter_commits_once_its_write_is_reported() {
        let now = Instant::from_micros(1);
        let mut raft = Raft::new(Config::default(), 7, HardState::default(), Vec::new(), now);
        let now = raft.poll_timeout();
        raft.handle_timeout(now);
        assert_eq!(
            raft.role(),
            Role::Leader,
            "alone: elected at its first timeout"
        );
        let index = raft.propose(now, vec![7]).unwrap();
        assert_eq!(raft.commit_index(), 0, "not inside propose");
        assert_eq!(raft.poll_committed(), None);
        let stored = raft.take_persist().expect("the no-op and the entry");
        assert_eq!(raft.commit_index(), 0, "taken is not stored");
        raft.persisted(stored.last_index, stored.last_term);
        assert_eq!(raft.commit_index(), index);
        // Restored from its files: all of it is durable.
        let restored = Raft::new(
            Config::default(),
            8,
            raft.hard_state(),
            raft.log().to_vec(),
            now,
        );
        assert_eq!(restored.durable(), index);
        // A node without storage counts its log as it appends.
        let volatile = Config {
            appended_is_durable: true,
            ..Config::default()
        };
        let mut raft = Raft::new(volatile, 7, HardState::default(), Vec::new(), now);
        raft.handle_timeout(raft.poll_timeout());
        let index = raft.propose(now, vec![7]).unwrap();
        assert_eq!(raft.commit_index(), index);
    }

    /// Log Matching (Raft §5.3): a report counts only if the log still holds the reported
    /// term at the reported index; a cut suffix, even one filled again by a later leader at
    /// the same index, does not.
    #[test]
    fn a_report_for_a_cut_suffix_does_not_count() {
        let now = Instant::from_micros(1);
        let mut raft = follower();
        raft.take_persist();
        let old = vec![entry(1, 1), entry(1, 2), entry(1, 3)];
        raft.handle_message(now, 1, append(1, (0, 0), old, 1));
        let first = raft.take_persist().expect("three entries");
        assert_eq!((first.last_index, first.last_term), (3, 1));
        // Leader 3 of term 2 replaces entries 2 and 3 before the first write is reported.
        raft.handle_message(now, 3, append(2, (1, 1), vec![entry(2, 2), entry(2, 3)], 1));
        let second = raft.take_persist().expect("the cut and two entries");
        raft.persisted(first.last_index, first.last_term);
        assert_eq!(
            raft.durable(),
            0,
            "index 3 holds term 2 now, not the reported 1"
        );
        raft.persisted(second.last_index, second.last_term);
        assert_eq!(raft.durable(), 3);
        // A cut lowers it below the cut at once: the stored log holds the cut entries.
        raft.handle_message(now, 1, append(3, (1, 1), vec![entry(3, 2)], 1));
        assert_eq!(raft.durable(), 1);
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
