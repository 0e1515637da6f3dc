//! Log replication (Raft §5.3, §5.4): the leader's Appends to each follower (probing, then
//! pipelining within `APPENDS_IN_FLIGHT_MAX`, at most one message back per answer), the
//! follower's consistency check and conflict truncation, the AppendReply that moves the
//! leader's view of each follower, and the commit rule (Raft §5.4.2, Figure 8). Whose answers
//! count is decided here too: those of the leader's own term and rounds, from the follower's
//! current life.
//!
//! # Answers of an earlier life (spec §8.5)
//!
//! A follower that restarts without its state (`rejoin`) no longer holds what it acknowledged
//! before. Each instance draws a random life id and sends it in every answer; a leader counts
//! a follower's acknowledgements only from the life it knows, and on hearing from a later life
//! (an answer to a round after the previous sign of life, or a TermQuery) forgets what the
//! follower held and starts replicating to it from scratch. A late acknowledgement of an
//! earlier life answers a round the leader started before it heard from the later one, so it
//! never counts again (`current_life`). Without this a late copy of an old acknowledgement
//! made the leader believe the follower held entries it had lost, and never send them.

use super::snapshot::SnapshotSend;
use std::sync::Arc;

use super::{
    Entries, Entry, Message, NodeId, PeerLogKind, Raft, ReplicaId, Role, APPENDS_IN_FLIGHT_MAX,
};
use crate::core::time::Instant;

/// What a leader knows about one follower (Raft Figure 2, "volatile state on leaders").
#[derive(Clone, Debug)]
pub(super) struct Progress {
    pub(super) id: NodeId,
    /// A voter of the leader's configuration (else a learner, or a node being removed: it
    /// counts towards no majority).
    pub(super) voter: bool,
    /// Next index to send.
    pub(super) next: u64,
    /// Highest index known to be stored on the follower and to match the leader's log.
    pub(super) matched: u64,
    /// Not yet known where the logs agree: send one Append at a time (`probe_sent`) until an
    /// answer says; otherwise pipeline up to `APPENDS_IN_FLIGHT_MAX` Appends.
    pub(super) probing: bool,
    pub(super) probe_sent: bool,
    /// Latest round the follower acknowledged (lease).
    pub(super) acked_round: u64,
    /// The follower's life whose answers count for `matched` and `next`, once known (see
    /// `Raft::current_life`).
    pub(super) life: Option<u64>,
    /// The replica id of the follower's latest counted answer (0: none yet). Its
    /// acknowledgements count only if the configuration names it with this id (spec §8.5,
    /// "Replica identities").
    pub(super) replica: ReplicaId,
    /// This leader's round when it last learnt that the follower had started afresh: every
    /// answer of an earlier life answers a round at or below it.
    pub(super) life_floor: u64,
    /// When the leader last heard from it in this term (CheckQuorum).
    pub(super) heard_at: Instant,
    /// A snapshot transfer, while `next <= ` the leader's snapshot index.
    pub(super) snapshot: SnapshotSend,
    /// A node the latest configuration removed (`voter` is false): `(index of that CONFIG,
    /// the round in which the leader's commit first covered it)`. It is sent the log until
    /// it has the CONFIG and acknowledged a later round, whose Appends told it the CONFIG
    /// is committed, so that it learns it was removed (`Raft::release_departed`).
    pub(super) departing: Option<(u64, Option<u64>)>,
}

impl Progress {
    /// Forgets what the follower was known to hold (it may have lost it): probes again from
    /// after the leader's last entry, `last`, and rewinds from the follower's answers.
    pub(super) fn start_over(&mut self, last: u64) {
        self.matched = 0;
        self.next = last + 1;
        self.probing = true;
        self.probe_sent = false;
        self.snapshot = SnapshotSend::default();
    }
}

/// Why a leader sends a follower what it needs, which bounds how much it sends at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sending {
    /// A heartbeat round: at least one message (an empty Append if nothing else), and as
    /// much as the flow-control window allows.
    Round,
    /// Proposals were appended: entries as the window allows, nothing if it has none to send.
    Proposals,
    /// The follower answered: at most one message back to it, so that no message, forged or
    /// not, makes the leader send its sender more than one (issue 8: no amplification). Each
    /// answer brings one more, so a window the round filled stays full; what is left waits for
    /// the next answer or round.
    Answer,
}

impl Raft {
    /// Appends an entry of the leader's term to its own log.
    pub(super) fn append_own(&mut self, data: Arc<[u8]>) -> u64 {
        assert!(self.role == Role::Leader);
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.hard.term,
            index,
            data,
        });
        index
    }

    /// Sends follower `position` what it needs. A heartbeat always sends at least one Append
    /// (possibly empty); otherwise only entries are sent, within the flow-control window, and
    /// at most one Append in answer to the follower (see `Sending`).
    pub(super) fn send_append(&mut self, position: usize, why: Sending) {
        assert!(self.role == Role::Leader);
        if self.progress[position].next <= self.log.snapshot().index {
            self.send_snapshot(position, why);
            return;
        }
        let heartbeat = why == Sending::Round;
        let batch_max = self.config.entries_per_append_max;
        let window = (batch_max as u64).saturating_mul(APPENDS_IN_FLIGHT_MAX);
        let last = self.log.last_index();
        let mut must_send = heartbeat;
        loop {
            let progress = &self.progress[position];
            assert!(progress.matched < progress.next && progress.next <= last + 1);
            let has_entries = progress.next <= last;
            let window_open = if progress.probing {
                // Until an answer says where the logs agree, one Append at a time (a
                // heartbeat resends it, in case it was lost).
                !progress.probe_sent || must_send
            } else {
                progress.next - 1 - progress.matched < window
            };
            let with_entries = has_entries && window_open;
            if !with_entries && !must_send {
                return;
            }
            let first = progress.next;
            let id = progress.id;
            let msg = self.append_message(first, if with_entries { batch_max } else { 0 });
            let sent = match &msg {
                Message::Append { entries, .. } => entries.len() as u64,
                _ => unreachable!(),
            };
            self.send(id, msg);
            must_send = false;
            let progress = &mut self.progress[position];
            if progress.probing {
                progress.probe_sent = true;
                return;
            }
            // Pipelining: assume it arrives; a failure answer rewinds `next`.
            progress.next += sent;
            if sent == 0 || why == Sending::Answer {
                return;
            }
        }
    }

    /// An Append of up to `count_max` entries starting at `first`: each entry shares its
    /// data with the log (a reference count, no copy), and one entry needs no allocation.
    fn append_message(&self, first: u64, count_max: usize) -> Message {
        let prev_log_index = first - 1;
        let entries: Entries = self
            .log
            .slice(first, count_max, self.config.append_bytes_max)
            .iter()
            .cloned()
            .collect();
        assert!(entries.len() <= self.config.entries_per_append_max);
        Message::Append {
            term: self.hard.term,
            prev_log_index,
            prev_log_term: self
                .log
                .term_at(prev_log_index)
                .expect("prev is in the log"),
            entries,
            leader_commit: self.commit_index,
            round: self.round,
            transfer_to: self.transfer.map(|t| t.to),
        }
    }

    /// The common start of a leader's handling of a follower's answer: a later term deposes
    /// it; an earlier term, or an answer reaching a node that no longer leads, is stale.
    /// `Some(position)` of the follower's progress when the answer is to be acted on.
    ///
    /// Round 0 marks the answer of a follower whose term was already later than the request's
    /// (`handle_append`, `handle_install_snapshot`): it answers a request of an EARLIER term,
    /// perhaps one this node sent in a previous life, whose round numbers started at 1 as
    /// this life's do. Only its term counts. Every other answer carries the term of the
    /// request it answers, so one of this leader's term answers a request of this term, which
    /// only this node, in this life, sent: a node leads a term at most once (it must campaign
    /// in a later term than any it voted in, a restart included; a node that lost its state
    /// rejoins having voted in the latest term a quorum knows, spec §8.5). So its round is one
    /// of this life's, and its acknowledgement is real (issue 7 A3).
    pub(super) fn answering_follower(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        round: u64,
    ) -> Option<usize> {
        if term > self.hard.term {
            peer_log!(
                self,
                now,
                SteppingDown,
                info,
                "raft {}: stepping down: node {from} is in term {term}",
                self.config.id
            );
            self.become_follower(now, term, None);
            return None;
        }
        if term < self.hard.term || self.role != Role::Leader || round == 0 {
            return None;
        }
        self.progress.iter().position(|p| p.id == from)
    }

    /// Whether an answer of `life` to round `round` comes from the follower's current life,
    /// the only one whose acknowledgements may count (issue 7 B5): a node that lost its state
    /// (durability `memory`) no longer holds what an earlier life acknowledged, and a leader
    /// that counted a late copy of such an acknowledgement would never send that node what it
    /// lacks. Every answer of an earlier life answers an Append (or chunk) that the leader
    /// sent before that life ended, so before it processed the first message of any later
    /// life: its round is at most the leader's round then, `life_floor`. So:
    /// - the life already known: counts;
    /// - another life answering a round above `life_floor`: a life newer than every one seen
    ///   before. The leader forgets what the follower held (it may have lost it), notes the
    ///   new life and its own current round as the new floor, and counts the answer;
    /// - another life answering a round up to `life_floor`: an earlier life, or the new one
    ///   answering an old round; ignored either way (the next round brings a fresh answer).
    ///
    /// A TermQuery (only a node that lost its state sends one) sets `life_floor` likewise and
    /// forgets the known life. Life ids are random 64-bit numbers, so two lives of one node
    /// share one with probability 2^-64; and an answer from a node that restarted WITH its
    /// state merely makes the leader resend what that node already holds.
    ///
    /// An answer that counts also tells the leader the follower's replica id (spec §8.5,
    /// "Replica identities"), kept in its progress: acknowledgements count under it
    /// (`quorum_value`), and a configuration names it. If it differs from the one known, the
    /// replica lost its state and started again: another log, so the leader forgets what the
    /// follower held and probes it afresh, as for a new follower.
    pub(super) fn current_life(
        &mut self,
        now: Instant,
        position: usize,
        life: u64,
        round: u64,
        replica: ReplicaId,
    ) -> bool {
        let last = self.log.last_index();
        let leader_round = self.round;
        let progress = &mut self.progress[position];
        if replica == 0 {
            // Names no replica: only a faulty peer sends it.
            return false;
        }
        if progress.life == Some(life) {
            if progress.replica != replica {
                // One life has one replica id; another is a faulty peer's: drop it.
                return false;
            }
            return true;
        }
        if round <= progress.life_floor {
            return false;
        }
        if progress.replica != replica {
            if progress.replica != 0 {
                peer_log!(
                    self,
                    now,
                    NewLife,
                    info,
                    "raft {}: node {} answers as replica {replica:#x}, was {:#x}: a new server",
                    self.config.id,
                    progress.id,
                    progress.replica
                );
                progress.start_over(last);
                progress.acked_round = 0;
            }
            progress.replica = replica;
        }
        if progress.life.is_some() {
            peer_log!(
                self,
                now,
                NewLife,
                info,
                "raft {}: node {} restarted; replicating to it from scratch",
                self.config.id,
                progress.id
            );
            progress.start_over(last);
        }
        progress.life = Some(life);
        progress.life_floor = leader_round;
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Entries,
        leader_commit: u64,
        (round, transfer_to): (u64, Option<NodeId>),
    ) {
        if term < self.hard.term {
            // A deposed leader: tell it the newer term so it steps down. Round 0: this
            // answers no round of a leader of `self.hard.term` (see `answering_follower`).
            let reply = Message::AppendReply {
                term: self.hard.term,
                success: false,
                match_index: 0,
                round: 0,
                life: self.life,
                replica: self.hard.replica,
            };
            self.send(from, reply);
            return;
        }
        let well_formed = entries.iter().enumerate().all(|(offset, entry)| {
            entry.index == prev_log_index + 1 + offset as u64
                && entry.term <= term
                && entry.term > 0
        }) && entries.windows(2).all(|pair| pair[0].term <= pair[1].term)
            && entries
                .first()
                .is_none_or(|entry| entry.term >= prev_log_term)
            && prev_log_term <= term;
        if !well_formed {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed Append from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        // Election Safety (Raft §5.2) makes the rest impossible among correct nodes: a second
        // leader of this term, or a leader that disagrees with a committed entry. Such an
        // Append comes from a faulty or forged peer; it is dropped, never acted on.
        let second_leader = term == self.hard.term
            && (self.role == Role::Leader || self.leader.is_some_and(|leader| leader != from));
        let rewrites_committed = self
            .log
            .term_at(prev_log_index)
            .is_some_and(|t| t != prev_log_term && prev_log_index <= self.commit_index)
            || entries.iter().any(|entry| {
                entry.index <= self.commit_index
                    && self
                        .log
                        .term_at(entry.index)
                        .is_some_and(|t| t != entry.term)
            });
        if second_leader || rewrites_committed {
            peer_log!(
                self,
                now,
                Contradicts,
                error,
                "raft {}: dropping an Append of term {term} from {from} that contradicts \
                 {} (faulty peer?)",
                self.config.id,
                if second_leader {
                    "the leader of this term"
                } else {
                    "a committed entry"
                }
            );
            self.faulty_drops += 1;
            return;
        }
        if term > self.hard.term || self.role != Role::Follower {
            self.become_follower(now, term, Some(from));
        }
        assert!(self.leader.is_none_or(|leader| leader == from));
        self.leader = Some(from);
        self.leader_contact = now;
        self.reset_election_timer(now);
        self.note_round(round, transfer_to);

        let mut prev_log_index = prev_log_index;
        let mut prev_log_term = prev_log_term;
        // Entries before this many are covered by the snapshot (skipped, not stored).
        let mut covered = 0;
        let snapshot = self.log.snapshot();
        if prev_log_index < snapshot.index {
            // The entries through the snapshot are committed here, so they match the leader's
            // (Leader Completeness, Raft §5.4): skip them and check at the snapshot instead.
            let covered_snapshot = snapshot.index - prev_log_index;
            if (entries.len() as u64) < covered_snapshot {
                let reply = Message::AppendReply {
                    term: self.hard.term,
                    success: true,
                    match_index: prev_log_index + entries.len() as u64,
                    round,
                    life: self.life,
                    replica: self.hard.replica,
                };
                self.send(from, reply);
                return;
            }
            covered = covered_snapshot as usize;
            let term_at_snapshot = entries[..covered]
                .last()
                .map_or(prev_log_term, |entry| entry.term);
            if term_at_snapshot != snapshot.term {
                peer_log!(
                    self,
                    now,
                    Contradicts,
                    error,
                    "raft {}: dropping an Append of term {term} from {from} that contradicts \
                     the snapshot (faulty peer?)",
                    self.config.id
                );
                self.faulty_drops += 1;
                return;
            }
            prev_log_term = term_at_snapshot;
            prev_log_index = snapshot.index;
        }

        // Consistency check (Raft §5.3).
        let reply = match self.log.term_at(prev_log_index) {
            Some(prev_term) if prev_term == prev_log_term => {
                let last_new = prev_log_index + (entries.len() - covered) as u64;
                self.accept_entries(entries.into_iter().skip(covered));
                self.adopt_membership(now);
                assert!(self.log.last_index() >= last_new);
                let commit = leader_commit.min(last_new);
                self.leader_commit_heard = self.leader_commit_heard.max(leader_commit);
                if commit > self.commit_index {
                    self.set_commit(commit);
                }
                Message::AppendReply {
                    term: self.hard.term,
                    success: true,
                    match_index: last_new,
                    round,
                    life: self.life,
                    replica: self.hard.replica,
                }
            }
            Some(_) => {
                // Committed entries match the leader's (Leader Completeness, Raft §5.4).
                assert!(
                    prev_log_index > self.commit_index,
                    "leader {from} disagrees at committed index {prev_log_index}"
                );
                let hint = (self.log.run_start(prev_log_index) - 1).max(self.commit_index);
                Message::AppendReply {
                    term: self.hard.term,
                    success: false,
                    match_index: hint,
                    round,
                    life: self.life,
                    replica: self.hard.replica,
                }
            }
            None => Message::AppendReply {
                term: self.hard.term,
                success: false,
                match_index: self.log.last_index(),
                round,
                life: self.life,
                replica: self.hard.replica,
            },
        };
        self.send(from, reply);
    }

    /// Stores entries that passed the consistency check. An entry already present with the same term is kept (an old or duplicated Append must
    /// not cut a longer log short); one that conflicts is removed with all that follow it
    /// (Raft §5.3).
    fn accept_entries(&mut self, entries: impl Iterator<Item = Entry>) {
        assert!(
            self.role == Role::Follower,
            "a leader never overwrites its log"
        );
        for entry in entries {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => {}
                Some(_) => {
                    assert!(
                        entry.index > self.commit_index,
                        "truncating committed entry {} (commit {})",
                        entry.index,
                        self.commit_index
                    );
                    self.log.truncate_from(entry.index);
                    // The stored log holds the cut entries until the cut is stored.
                    self.durable = self.durable.min(entry.index - 1);
                    self.log.push(entry);
                }
                None => self.log.push(entry),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        success: bool,
        match_index: u64,
        (round, life, replica): (u64, u64, ReplicaId),
    ) {
        let Some(position) = self.answering_follower(now, from, term, round) else {
            return;
        };
        let last = self.log.last_index();
        if round > self.round || match_index > last {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed AppendReply from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        if !self.current_life(now, position, life, round, replica) {
            return;
        }
        let progress = &mut self.progress[position];
        progress.heard_at = progress.heard_at.max(now);
        progress.acked_round = progress.acked_round.max(round);
        progress.probe_sent = false;
        let mut matched_more = false;
        if success {
            if match_index > progress.matched {
                progress.matched = match_index;
                matched_more = true;
            }
            progress.next = progress.next.max(match_index + 1);
            progress.probing = false;
        } else if progress.probing && match_index + 1 >= progress.next {
            // Answers an older probe: nothing new.
        } else {
            // Rewind to the follower's hint, never below what it is known to hold.
            progress.next = (match_index + 1)
                .min(progress.next)
                .max(progress.matched + 1);
            progress.probing = true;
        }
        assert!(progress.matched < progress.next && progress.next <= last + 1);
        self.refresh_after_answer(now, matched_more);
        let mut timeout_now_to = None;
        if matched_more {
            timeout_now_to = self.send_timeout_now_if_caught_up();
            self.step_down_if_removed(now);
            if self.role != Role::Leader {
                return;
            }
        }
        // At most one message back to the follower (see `Sending`).
        if timeout_now_to != Some(from) {
            self.send_append(position, Sending::Answer);
        }
    }

    /// Raft §5.4.2: commit the highest index a majority stores, if it is of the current term.
    /// The leader counts for itself only what its own storage holds (`durable`), so that it
    /// may send entries while it writes them (thesis §10.2.1): an entry commits once a
    /// majority has it durable, the leader among them or not.
    pub(super) fn advance_commit(&mut self) {
        assert!(self.role == Role::Leader);
        let own = self.own_durable();
        let majority_index = self.quorum_value(own, |p| p.matched);
        self.commit_majority(majority_index);
    }

    /// Commits `majority_index`, the highest index a majority stores, if it is later than
    /// the commit index and of the current term (Raft §5.4.2, Figure 8).
    pub(super) fn commit_majority(&mut self, majority_index: u64) {
        assert!(self.role == Role::Leader);
        if majority_index > self.commit_index
            && self.log.term_at(majority_index) == Some(self.hard.term)
        {
            self.set_commit(majority_index);
        }
    }

    fn set_commit(&mut self, index: u64) {
        assert!(index > self.commit_index, "commit index never decreases");
        assert!(index <= self.log.last_index());
        self.commit_index = index;
    }
}
