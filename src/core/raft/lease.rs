//! Heartbeat rounds, the leader lease (thesis §6.4.1), CheckQuorum (thesis §6.2) and
//! ReadIndex confirmation (thesis §6.4): what lets a leader answer reads from its own state,
//! and why no other leader can exist meanwhile.
//!
//! # Lease (thesis §6.4.1) and why it is safe
//!
//! Each heartbeat starts a *round*: the leader numbers it, remembers its start time `s` on its
//! own clock, and every Append it builds from then until the next round carries that number.
//! A follower echoes the number of the Append it answers. When a majority (the leader
//! included) has answered round `r` or later, the leader holds a lease until
//! `s_r + election_timeout_min / (1 + drift_bound)`, on its own clock.
//!
//! Why no other leader can exist before then: every follower in that majority received an
//! Append of the leader's term built at or after `s_r`, and from that moment on it neither
//! grants a vote (pre- or real) nor starts an election for `election_timeout_min` on its own
//! clock (stickiness, `election.rs`; its election timer is never shorter than that). Clocks
//! may run apart by at most `drift_bound`, so `election_timeout_min` on a follower's clock is
//! at least `election_timeout_min / (1 + drift_bound)` on the leader's. A new leader needs
//! votes from a majority, and every majority contains a member of the acknowledging one, so no
//! leader of a later term can be elected while the lease runs. The leader itself never votes
//! while it leads (but for its own transfer's target, while it holds no lease: below), and after
//! stepping down it refuses votes for `election_timeout_min` more, which outlasts its own
//! lease. A node that restarts has forgotten when it last heard a leader, so
//! it assumes it heard one at start-up and refuses votes for `election_timeout_min` too.
//! Only answers to this leader's own rounds count. A follower answers an Append (or a
//! snapshot chunk) of its own term with that request's round, and one of an earlier term with
//! its later term and round 0, which deposes a leader of an earlier term and counts for
//! nothing else. Round numbers start at 1 again whenever a node restarts, but a node leads a
//! term at most once, in one life (it campaigns only in a term later than any it voted in,
//! and a node that lost its state rejoins having voted in the latest term a quorum knows), so
//! an answer of the leader's term with a round other than 0 answers one of this life's rounds:
//! no answer sent to an earlier life of the leader ever counts (see `answering_follower`).
//!
//! `lease_valid` further requires that the leader has committed an entry of its own term (its
//! no-op): before that it may not know every committed entry (thesis §6.4), so answering from
//! its own state could miss a committed command.
//!
//! Leadership transfer (thesis §3.10) is the one exception to stickiness, and it is kept
//! narrow so that the argument above still holds. A transfer vote overrides stickiness only
//! for the node that the voter's *latest word* names: the `transfer_to` of the highest round
//! it received from the leader of its term (`TransferSeen`; a snapshot chunk names nobody).
//! A leader names a target only in the rounds of a transfer in progress (it starts a round
//! when it starts or abandons one, so every round says one thing) and holds no lease while
//! one runs. When it abandons a transfer it starts a round naming nobody, and takes a lease
//! only from that round or a later one (`lease_from_round`). Every member of a majority that
//! acknowledged such a round received an Append of that round or a later one, naming nobody;
//! its latest word stays so (an older round naming the target that arrives later changes
//! nothing) until the leader starts another transfer, which ends the lease at once. So while
//! the lease runs such a member refuses a transfer vote as it refuses any vote, and a
//! TimeoutNow delivered arbitrarily late elects nobody (its receiver obeys it only if its own
//! latest word names it, and its voters would not follow). A leader whose transfer does not
//! complete therefore holds a lease again one round trip to a majority after it abandons the
//! transfer, at most `election_timeout_min` after it started it.
//!
//! # Membership changes (thesis §4; `membership.rs`)
//!
//! The argument above needs "every majority that can elect a leader overlaps the majority
//! that acknowledged the round". With a configuration that changes, what a lease counts is
//! the voters of the leader's configuration *when it counts* (`quorum_value`: never a learner,
//! never the leader itself once it is being removed), and a candidate counts the voters of
//! *its* configuration. Those two may differ, and the lease stays safe because they differ by
//! at most one voter:
//!
//! - Configurations form a chain: a leader appends a CONFIG only once the previous one is
//!   committed and once it has committed an entry of its own term (Ongaro's correction), and
//!   each differs from its predecessor by one server (`propose_membership` asserts it).
//!   Without the second condition two leaders of different terms could each append a child of
//!   the same configuration, two voters apart (the test
//!   `a_change_waits_for_an_entry_of_the_leaders_term_so_two_configurations_never_split`).
//!   So any configuration a node can campaign with while this leader leads is its own, its
//!   committed predecessor, or (once its own is committed) nothing newer that it did not
//!   create: only a leader appends configurations, and none other can be elected meanwhile.
//! - Adjacent configurations' majorities overlap: adding a voter to `n`, a majority of the
//!   old (⌊n/2⌋+1) and one of the new (⌊(n+1)/2⌋+1) together exceed `n + 1`; removing one,
//!   a majority of the old less the removed node (⌊n/2⌋) and one of the new (⌊(n−1)/2⌋+1)
//!   together exceed `n − 1`.
//!
//! So a lease taken in the new configuration holds against a candidate that still uses the
//! old one, and the other way round. A leader that adopts a new configuration nevertheless
//! drops its lease and takes one again only from a round started after the change and
//! acknowledged by a majority of the new voters (`adopt_membership` sets `lease_from_round`):
//! it costs one round trip of lease per change, and a lease then always rests on the
//! configuration in force, which is what the simulator's lease checker can see. A learner's
//! acknowledgement never counts: it makes no promise the argument can use, since a learner's
//! grant is not counted by any candidate either, but the candidate that promotes it in its
//! own log would count it. A removed leader's own acknowledgement no longer counts from the
//! moment it appends its removal; it steps down once the removal commits.
//!
//! # CheckQuorum (thesis §6.2)
//!
//! A leader that has not heard from a majority (itself included) within
//! `election_timeout_min` steps down, so a leader cut off from the cluster stops serving
//! clients on its own instead of waiting for a message of a later term that may never reach
//! it. `poll_timeout` includes that deadline, so the step-down happens on time.

use super::replication::Sending;
use super::{Raft, Role, ROUNDS_TRACKED_MAX};
use crate::core::time::{Duration, Instant};

/// The next heartbeat after `now`: the next multiple of `interval` on this node's clock, so
/// the heartbeats of every shard a node leads fall on the same instants and travel together
/// (one datagram per peer per interval, however many shards). At most `interval` away.
pub(super) fn next_heartbeat(now: Instant, interval: Duration) -> Instant {
    let step = interval.as_micros().max(1);
    Instant::from_micros(
        (now.as_micros() / step)
            .saturating_add(1)
            .saturating_mul(step),
    )
}

impl Raft {
    /// Leader lease (thesis §6.4.1): true only if this node leads, has committed an entry of
    /// its term, and `now` (its own clock) is before the start of the latest heartbeat round
    /// a majority acknowledged plus `election_timeout_min / (1 + drift_bound)`. While true,
    /// no other node can have been elected leader (module docs).
    pub fn lease_valid(&self, now: Instant) -> bool {
        if self.role != Role::Leader || self.commit_index < self.noop_index {
            return false;
        }
        match self.lease_start {
            Some(start) => now < start + self.lease_duration,
            None => false,
        }
    }

    /// ReadIndex (thesis §6.4), for reads when the lease cannot be used: leader only, once
    /// its no-op committed (so its commit index covers everything committed before). Starts
    /// a heartbeat round now and returns its number. Once [`Raft::confirmed_round`] reaches
    /// it, a majority acknowledged this node as leader after the call, so no other leader had
    /// committed anything newer: the applied state answers any read that arrived before it.
    pub fn confirm_leadership(&mut self, now: Instant) -> Option<u64> {
        if self.role != Role::Leader || self.commit_index < self.noop_index {
            return None;
        }
        self.start_round(now);
        self.check_invariants();
        Some(self.round)
    }

    /// Leader: the latest heartbeat round a majority (itself included) acknowledged in this
    /// term; 0 otherwise.
    pub fn confirmed_round(&mut self) -> u64 {
        if self.role != Role::Leader {
            return 0;
        }
        self.quorum_value(self.round, |p| p.acked_round)
    }

    /// The latest heartbeat round this node started (0 before it first led): rounds grow over
    /// the node's lifetime, so no round a majority acknowledges, and none that
    /// [`Raft::confirm_leadership`] returned, is beyond it.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Starts a heartbeat round: numbers it, remembers its start for the lease, and sends
    /// every follower an Append (with whatever entries it still needs).
    pub(super) fn start_round(&mut self, now: Instant) {
        assert!(self.role == Role::Leader);
        self.round += 1;
        if self.round_starts.len() == ROUNDS_TRACKED_MAX {
            self.round_starts.pop_front();
        }
        self.round_starts.push_back((self.round, now));
        self.heartbeat_deadline = next_heartbeat(now, self.config.heartbeat_interval);
        for position in 0..self.progress.len() {
            self.send_append(position, Sending::Round);
        }
        self.send_timeout_now_if_caught_up();
        let [heard, round] = self.quorum_values([now.as_micros(), self.round], |p| {
            [p.heard_at.as_micros(), p.acked_round]
        });
        self.set_quorum_deadline(heard);
        self.set_lease_round(round);
        assert!(self.heartbeat_deadline > now);
    }

    /// After a follower's answer (which may have moved its contact time, acknowledged round
    /// and matched index): the CheckQuorum deadline, the lease and, if `matched_more`, the
    /// commit index (Raft §5.4.2), from one walk over the voters. The same as
    /// `refresh_quorum_deadline`, a lease refresh and `advance_commit` in turn: none of them
    /// changes what the others read.
    pub(super) fn refresh_after_answer(&mut self, now: Instant, matched_more: bool) {
        assert!(self.role == Role::Leader);
        let own = [now.as_micros(), self.round, self.own_durable()];
        let [heard, round, matched] =
            self.quorum_values(own, |p| [p.heard_at.as_micros(), p.acked_round, p.matched]);
        self.set_quorum_deadline(heard);
        self.set_lease_round(round);
        if matched_more {
            self.commit_majority(matched);
        }
    }

    /// Moves the lease to the start of `round`, the latest round a majority acknowledged (the
    /// leader acknowledges its own current round).
    fn set_lease_round(&mut self, round: u64) {
        assert!(self.role == Role::Leader);
        if round < self.lease_from_round {
            return;
        }
        while let Some(&(oldest, start)) = self.round_starts.front() {
            if oldest > round {
                break;
            }
            if oldest == round {
                assert!(self.lease_start.is_none_or(|lease| lease <= start));
                self.lease_start = Some(start);
                break;
            }
            self.round_starts.pop_front();
        }
    }

    /// CheckQuorum: the leader must hear from a majority (itself, now, included) within
    /// election_timeout_min of the latest time it did.
    pub(super) fn refresh_quorum_deadline(&mut self, now: Instant) {
        assert!(self.role == Role::Leader);
        let heard = self.quorum_value(now.as_micros(), |p| p.heard_at.as_micros());
        self.set_quorum_deadline(heard);
    }

    /// CheckQuorum's deadline from `heard`, the latest time (µs) a majority was heard from.
    fn set_quorum_deadline(&mut self, heard: u64) {
        self.quorum_deadline = Instant::from_micros(heard) + self.config.election_timeout_min;
    }
}
