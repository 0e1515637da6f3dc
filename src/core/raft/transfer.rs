//! Leadership transfer (thesis §3.10): the leader names its target in the rounds of the
//! transfer, brings it up to date and sends it TimeoutNow; voters let a transfer vote override
//! stickiness only for the node the leader's latest round names (spec §8.5, "Leadership
//! transfer"). Why this keeps the lease safe is argued in `lease.rs`.

use super::rejoin::Recovery;
use super::{Message, NodeId, NotLeader, Raft, Role};
use crate::core::time::Instant;

/// A leadership transfer in progress (thesis §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Transfer {
    pub(super) to: NodeId,
    /// Abandoned if the leader still leads then.
    pub(super) deadline: Instant,
    /// The round in which TimeoutNow was last sent (0: not yet; it is sent once `to` matched
    /// the whole log, and again in each later round, in case it was lost or overtook the
    /// Append that names `to`).
    pub(super) timeout_now_round: u64,
}

/// What the highest round a follower received from the leader of `term` said about a
/// leadership transfer: `to`, the node that leader is handing over to in that round, if any.
/// Each round says one thing (a leader starts a new round when it starts or abandons a
/// transfer), and rounds grow within a term, so the highest round is the leader's latest
/// word, however the network reordered its Appends. A voter lets a transfer vote override
/// stickiness only for the node it names; the target obeys TimeoutNow only if it names it
/// (spec §8.5, "Leadership transfer").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TransferSeen {
    pub(super) term: u64,
    pub(super) round: u64,
    pub(super) to: Option<NodeId>,
}

impl Raft {
    /// Leader only: hands leadership to voter `to` (thesis §3.10), for a graceful shutdown or
    /// to spread leaders. The leader stops taking proposals (they get `NotLeader` naming
    /// `to`), starts a heartbeat round whose Appends name `to`, brings `to` up to date, then
    /// sends it TimeoutNow (again each round until the transfer ends); `to` starts an
    /// election at once, which voters whose latest round names it grant despite stickiness.
    /// The leader gives up its lease at once, because those voters no longer keep the promise
    /// the lease rests on. If `to` has not taken over within `election_timeout_min`, the
    /// leader abandons the transfer: it starts a round that names nobody, and regains its
    /// lease once a majority acknowledges that round or a later one (`lease.rs`).
    /// Ignored if `to` is this node, not a voter (or one whose replica was replaced: it could
    /// not take over), or a transfer is already running.
    pub fn transfer_leadership(&mut self, now: Instant, to: NodeId) -> Result<(), NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.config.id || !self.may_take_over(to) || self.transfer.is_some() {
            return Ok(());
        }
        log::info!(
            "raft {}: transferring leadership of term {} to {to}",
            self.config.id,
            self.hard.term
        );
        self.transfer = Some(Transfer {
            to,
            deadline: now + self.config.election_timeout_min,
            timeout_now_round: 0,
        });
        self.lease_from_round = u64::MAX;
        self.lease_start = None;
        // A round of its own, so that every round says one thing about the transfer. It also
        // sends TimeoutNow if `to` is caught up already.
        self.start_round(now);
        assert!(!self.lease_valid(now));
        self.check_invariants();
        Ok(())
    }

    /// Leader: whether voter `id` stores the whole log and answered within two heartbeat
    /// intervals (a transfer to it would complete at once), as the replica the
    /// configuration names (spec §8.5, "Replica identities": a node whose replica was
    /// replaced may not campaign, so a transfer to it could never complete).
    pub fn follower_caught_up(&self, id: NodeId, now: Instant) -> bool {
        let recent = self.config.heartbeat_interval.as_micros().saturating_mul(2);
        self.role == Role::Leader
            && self.progress.iter().any(|p| {
                p.id == id
                    && self.membership().counts(id, p.replica)
                    && p.matched == self.log.last_index()
                    && now.saturating_since(p.heard_at).as_micros() < recent
            })
    }

    /// Whether a transfer to `id` could complete: a voter that, if the configuration names
    /// replica ids, answered as the replica named (one whose replica was replaced may not
    /// campaign, spec §8.5 "Replica identities").
    fn may_take_over(&self, id: NodeId) -> bool {
        let membership = self.membership();
        let heard = self.progress.iter().find(|p| p.id == id).map(|p| p.replica);
        membership.is_voter(id)
            && (membership.replicas.is_none() || heard.is_some_and(|r| membership.counts(id, r)))
    }

    /// The node a transfer in progress hands leadership to.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    /// Sends TimeoutNow to the transfer's target once it matches the whole log, at most once
    /// per round (each round resends it, in case it was lost or overtook the round's Append
    /// naming the target, which the target needs to obey it). Returns the target if it sent.
    pub(super) fn send_timeout_now_if_caught_up(&mut self) -> Option<NodeId> {
        let round = self.round;
        let transfer = self.transfer.filter(|t| t.timeout_now_round != round)?;
        let last = self.log.last_index();
        let caught_up = self
            .progress
            .iter()
            .any(|p| p.id == transfer.to && p.matched == last);
        if caught_up {
            self.transfer = Some(Transfer {
                timeout_now_round: round,
                ..transfer
            });
            let term = self.hard.term;
            self.send(transfer.to, Message::TimeoutNow { term });
            return Some(transfer.to);
        }
        None
    }

    /// A node about to leave declines to take over shards (a TimeoutNow is ignored), so
    /// leaders are not handed to it while it hands its own away.
    pub fn decline_transfers(&mut self) {
        self.declines_transfers = true;
    }

    /// A follower that heard a round of the current leader records what it said about a
    /// transfer, if it is the highest round it heard in this term (see `TransferSeen`).
    pub(super) fn note_round(&mut self, round: u64, transfer_to: Option<NodeId>) {
        assert!(self.role == Role::Follower);
        let seen = self.transfer_seen;
        if seen.term != self.hard.term || round >= seen.round {
            self.transfer_seen = TransferSeen {
                term: self.hard.term,
                round,
                // Only a voter can be a target (another id comes from a faulty peer).
                to: transfer_to.filter(|&to| self.membership().is_voter(to)),
            };
        }
    }

    /// Whether the latest word of the leader of this node's current term hands leadership to
    /// `candidate`: the highest round it received names it, or, on the leader itself, its
    /// transfer in progress does.
    pub(super) fn transfer_names(&self, candidate: NodeId) -> bool {
        match self.role {
            Role::Leader => self.transfer.is_some_and(|t| t.to == candidate),
            _ => {
                self.transfer_seen.term == self.hard.term
                    && self.transfer_seen.to == Some(candidate)
            }
        }
    }

    pub(super) fn handle_timeout_now(&mut self, now: Instant, from: NodeId, term: u64) {
        // Only the leader of this node's current term may ask it to take over, and only while
        // its latest round names this node: a TimeoutNow that arrives after the transfer was
        // abandoned is stale (`lease.rs`).
        if term != self.hard.term
            || self.role != Role::Follower
            || self.leader != Some(from)
            || !self.transfer_names(self.config.id)
            || self.declines_transfers
            || self.recovery != Recovery::None
            || !self.may_campaign()
        {
            return;
        }
        log::info!(
            "raft {}: taking over from {from} after term {term}",
            self.config.id
        );
        self.role = Role::PreCandidate;
        self.grants.clear();
        self.count_grant(self.config.id, self.hard.replica);
        self.start_election_as(now, true);
    }
}
