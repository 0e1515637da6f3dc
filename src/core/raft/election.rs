//! Elections (Raft §5.2, §5.4.1): the election timer, PreVote (thesis §9.6), Vote, leader
//! stickiness (thesis §4.2.3), and the role changes: to follower, to (pre-)candidate, to
//! leader with its no-op (Raft §5.4.2, thesis §6.4).
//!
//! Votes (real and pre-) are granted only to a log at least as up to date as the voter's
//! (Raft §5.4.1) and only by a node that has not heard from a live leader within
//! `election_timeout_min` (leader stickiness, thesis §4.2.3 and §9.6). Such a node ignores a
//! Vote of a higher term entirely: it neither grants it nor adopts the term; the one exception
//! is a transfer vote for the node its leader's latest round names (`lease.rs`).

use std::sync::Arc;

use rand::Rng;

use super::rejoin::Recovery;
use super::replication::Progress;
use super::{HardState, Message, NodeId, PeerLogKind, Raft, ReplicaId, Role, TERM_MAX};
use crate::core::time::{Duration, Instant};

impl Raft {
    /// Whether this node heard from a live leader within `election_timeout_min`, and so
    /// refuses to vote or to adopt the term of a Vote (stickiness, thesis §4.2.3). A leader
    /// counts as hearing from itself.
    fn leader_contact_recent(&self, now: Instant) -> bool {
        self.role == Role::Leader
            || now.saturating_since(self.leader_contact) < self.config.election_timeout_min
    }

    /// A lone voter (a single node) campaigns at its first timer instead of an election
    /// timeout later: no other leader can exist for it to wait for, and no other voter's
    /// stickiness to respect, so it is its own majority at once (a new single node serves as
    /// soon as it starts). Called where a node starts to take part: at start, and when it
    /// stops asking the others (spec §8.5 rule 6, with no others).
    pub(super) fn campaign_at_once_if_alone(&mut self, now: Instant) {
        if self.quorum == 1
            && self.role == Role::Follower
            && self.recovery == Recovery::None
            && self.may_campaign()
        {
            self.election_deadline = now;
        }
    }

    pub(super) fn reset_election_timer(&mut self, now: Instant) {
        let min_us = self.config.election_timeout_min.as_micros();
        let max_us = self.config.election_timeout_max.as_micros();
        assert!(min_us < max_us);
        let timeout = Duration::from_micros(self.rng.gen_range(min_us..max_us));
        self.election_deadline = now + timeout;
        assert!(self.election_deadline >= now + self.config.election_timeout_min);
    }

    pub(super) fn start_pre_vote(&mut self, now: Instant) {
        assert!(self.role != Role::Leader && self.may_campaign());
        if self.hard.term >= TERM_MAX {
            // No term is left to campaign in (every node would drop it); only a faulty peer
            // brings a node here (`TERM_AHEAD_MAX`). Nothing this node could send would help.
            peer_log!(
                self,
                now,
                Term,
                error,
                "raft {}: term {} leaves no room for an election (faulty peer?)",
                self.config.id,
                self.hard.term
            );
            self.reset_election_timer(now);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.grants.clear();
        self.count_grant(self.config.id, self.hard.replica);
        self.reset_election_timer(now);
        if self.grants.len() >= self.quorum {
            self.start_election(now);
            return;
        }
        let msg = Message::PreVote {
            term: self.hard.term + 1,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        self.broadcast(msg);
    }

    fn start_election(&mut self, now: Instant) {
        self.start_election_as(now, false);
    }

    /// A real election; `transfer`: started by TimeoutNow, so voters ignore stickiness.
    pub(super) fn start_election_as(&mut self, now: Instant, transfer: bool) {
        assert!(self.role == Role::PreCandidate && (transfer || self.grants.len() >= self.quorum));
        self.set_hard(HardState {
            term: self.hard.term + 1,
            voted_for: Some(self.config.id),
            replica: self.hard.replica,
        });
        self.role = Role::Candidate;
        self.leader = None;
        self.grants.clear();
        self.count_grant(self.config.id, self.hard.replica);
        self.reset_election_timer(now);
        log::debug!(
            "raft {}: campaigning in term {}",
            self.config.id,
            self.hard.term
        );
        if self.grants.len() >= self.quorum {
            self.become_leader(now);
            return;
        }
        let msg = Message::Vote {
            term: self.hard.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        self.broadcast(msg);
    }

    pub(super) fn handle_pre_vote(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
    ) {
        // Never changes this node's term (thesis §9.6). The asked term is not compared with
        // ours: a candidate whose term is behind learns ours from the VoteReply of the real
        // election this grant lets it start (one lost election, no disruption: a Vote of a
        // lower term changes nobody's term). Refusing it instead could leave a cluster
        // without a leader when the only up-to-date log sits on a node with a lagging term.
        let granted = self.recovery == Recovery::None
            && !self.leader_contact_recent(now)
            && self.log.is_up_to_date(last_log_index, last_log_term);
        let reply_term = if granted { term } else { self.hard.term };
        self.send(
            from,
            Message::PreVoteReply {
                term: reply_term,
                granted,
                replica: self.hard.replica,
            },
        );
    }

    pub(super) fn handle_pre_vote_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        granted: bool,
        replica: ReplicaId,
    ) {
        // Replies to an older pre-vote, or refusals, change nothing (and never the term).
        if self.role != Role::PreCandidate || !granted || term != self.hard.term + 1 {
            return;
        }
        self.count_grant(from, replica);
        if self.grants.len() >= self.quorum {
            self.start_election(now);
        }
    }

    pub(super) fn handle_vote(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
        transfer: bool,
    ) {
        // A transfer vote overrides stickiness only for the node the leader of this term
        // chose in its latest round (or, on the leader, its transfer in progress), for the
        // next term: the leader gave up its lease when it started that transfer, and regains
        // one only from a round that names nobody (thesis §3.10; `lease.rs`). A
        // vote already granted to this candidate in this term may be granted again (a
        // resend changes nothing).
        let chosen = transfer
            && ((term == self.hard.term + 1 && self.transfer_names(from))
                || (term == self.hard.term && self.hard.voted_for == Some(from)));
        let sticky = !chosen && self.leader_contact_recent(now);
        if term > self.hard.term {
            if sticky {
                // Thesis §4.2.3: within election_timeout_min of hearing from a leader, neither
                // adopt the term nor vote. This is what the lease relies on.
                return;
            }
            self.become_follower(now, term, None);
        }
        if term < self.hard.term {
            let reply = Message::VoteReply {
                term: self.hard.term,
                granted: false,
                replica: self.hard.replica,
            };
            self.send(from, reply);
            return;
        }
        // One vote per term (Raft §5.2); voting again for the same candidate answers a resend.
        let granted = self.hard.voted_for.is_none_or(|voted| voted == from)
            && self.recovery == Recovery::None
            && !sticky
            && self.role != Role::Leader
            && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted {
            // A candidate or leader has voted for itself, so only a follower or a
            // pre-candidate (which gives up its pre-election) gets here.
            assert!(matches!(self.role, Role::Follower | Role::PreCandidate));
            if self.role == Role::PreCandidate {
                self.become_follower(now, self.hard.term, None);
            }
            self.set_hard(HardState {
                term: self.hard.term,
                voted_for: Some(from),
                replica: self.hard.replica,
            });
            log::debug!(
                "raft {}: votes for {from} in term {} (log {}/{}, theirs {last_log_index}/{last_log_term})",
                self.config.id,
                self.hard.term,
                self.log.last_index(),
                self.log.last_term()
            );
            self.reset_election_timer(now);
        }
        let reply = Message::VoteReply {
            term: self.hard.term,
            granted,
            replica: self.hard.replica,
        };
        self.send(from, reply);
    }

    pub(super) fn handle_vote_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        granted: bool,
        replica: ReplicaId,
    ) {
        if term > self.hard.term {
            self.become_follower(now, term, None);
            return;
        }
        if self.role != Role::Candidate || term != self.hard.term || !granted {
            return;
        }
        self.count_grant(from, replica);
        if self.grants.len() >= self.quorum {
            self.become_leader(now);
        }
    }

    /// Counts a (pre-)vote granted by `from` with replica id `replica`, once, if this node's
    /// configuration names `from` as a voter with that replica id (any, in the static
    /// configuration): a learner's or a stranger's grant counts for nothing (thesis §4.2.1),
    /// nor does one of a replica that replaced the configured one after losing its state
    /// (spec §8.5, "Replica identities": it is a new server, not yet a voter).
    pub(super) fn count_grant(&mut self, from: NodeId, replica: ReplicaId) {
        if self.membership().counts(from, replica) && !self.grants.iter().any(|g| g.0 == from) {
            self.grants.push((from, replica));
        }
        assert!(self.grants.len() <= self.membership().voters.len());
    }

    /// Moves to follower of `term` (a later term clears the vote). Leaving leadership counts
    /// as leader contact, so the former leader refuses votes until its own lease has run out.
    pub(super) fn become_follower(&mut self, now: Instant, term: u64, leader: Option<NodeId>) {
        assert!(term >= self.hard.term, "term {term} < {}", self.hard.term);
        if term > self.hard.term {
            self.set_hard(HardState {
                term,
                voted_for: None,
                replica: self.hard.replica,
            });
        }
        if self.role == Role::Leader {
            self.leader_contact = now;
            self.progress.clear();
            self.round_starts.clear();
            self.lease_start = None;
            self.heartbeat_deadline = Instant::MAX;
            self.quorum_deadline = Instant::MAX;
            self.flush_pending = false;
            self.transfer = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.grants.clear();
        self.reset_election_timer(now);
        assert!(!self.lease_valid(now));
    }

    fn become_leader(&mut self, now: Instant) {
        assert!(self.role == Role::Candidate && self.grants.len() >= self.quorum);
        assert!(self.hard.voted_for == Some(self.config.id));
        log::info!("raft {}: leader of term {}", self.config.id, self.hard.term);
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.grants.clear();
        // A leader receives no snapshot: its budget goes back to the node.
        self.snapshot_receive = None;
        self.transfer = None;
        self.lease_from_round = 0;
        let next = self.log.last_index() + 1;
        self.progress.clear();
        let membership = self.log.configs().latest();
        for id in membership.members().filter(|&id| id != self.config.id) {
            let voter = membership.is_voter(id);
            self.progress.push(Progress::new(id, voter, next, now));
        }
        self.round_starts.clear();
        self.lease_start = None;
        self.flush_pending = false;
        // Raft §5.4.2 / thesis §6.4: an entry of the new term, so that entries of earlier
        // terms can commit with it and the leader learns the commit index.
        self.noop_index = self.append_own(Arc::default());
        self.quorum_deadline = now + self.config.election_timeout_min;
        self.start_round(now);
        self.advance_commit();
    }
}
