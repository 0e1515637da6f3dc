//! The placement driver (spec §8.13, issue 10 §2): what calls the planner
//! (`core::placement`). Every [`PLACEMENT_PASS_INTERVAL`], a node of a joined cluster with
//! `Config::placement` set runs one pass over the shards it leads:
//!
//! ```text
//!   SWIM member table ──> liveness_table ─┐
//!   each led shard: its latest config,    ├─> Planner::next_change ─┬─> Some(change): propose it
//!   learners caught up, voters replaced  ─┘                         └─> None: rebalance its leader
//! ```
//!
//! - **One change at a time per shard**: the planner returns one single-server change (Raft
//!   thesis §4.1; learners first, §4.2.1), proposed through the shard's replica. Raft refuses
//!   what may not happen yet (a change pending, no entry of the leader's term committed, a
//!   transfer running); the next pass asks again, from the leader's log, so a refused, lost
//!   or truncated change needs no memory here.
//! - **Leadership** (thesis §3.10): a shard on its targets (nothing to change) is led by its
//!   *preferred* node, the best-ranked target that is a voter. A leader that is not it hands
//!   the shard over once that node is alive (SWIM), caught up, and no transfer runs. Only
//!   the preferred node never transfers away, so leadership converges instead of
//!   ping-ponging. A leader whose next change is its own removal first hands the shard to
//!   the best-ranked target voter that can take it at once (when one can), so the shard is
//!   not left without a leader for an election timeout (thesis §4.2.2).
//!
//! Pure, like the rest of the node: `now` comes in, nothing else is read. A pass costs
//! O(shards led) planner calls, each O(R + members), and reuses one
//! [`ShardMembers`](crate::core::placement::ShardMembers).

use super::Node;
use crate::core::placement::{liveness_table, Liveness};
use crate::core::raft::{MembershipChange, MembershipError, NodeId, Role};
use crate::core::replica::SPREAD_AFTER;
use crate::core::time::{Duration, Instant};

/// How often a node runs a placement pass. Short beside everything a pass waits for (a
/// change committing, a learner catching up, a member confirmed dead), so one step follows
/// the last within about a heartbeat round; long enough that the passes, each O(shards led),
/// cost nothing measurable beside the shards' own traffic. A pass that finds nothing to do
/// changes nothing.
pub const PLACEMENT_PASS_INTERVAL: Duration = Duration::from_millis(100);

/// The log target every placement decision is logged under (info: each change proposed and
/// each leadership hand-over; debug: the changes Raft refused for now), so that a server's
/// default log shows them (`main.rs`) and an operator can filter them alone (`RUST_LOG`).
pub const PLACEMENT_LOG_TARGET: &str = "udplock::placement";

impl Node {
    /// Whether this node runs placement passes: a joined cluster's node with a planner (a
    /// static cluster holds every shard on every node: nothing to place).
    pub(super) fn runs_placement(&self) -> bool {
        self.config.joined.is_some() && self.config.placement.is_some()
    }

    /// One placement pass, if due (see the module docs).
    pub(super) fn place(&mut self, now: Instant) {
        if !self.runs_placement() || now < self.placement_next {
            return;
        }
        self.placement_next = now + PLACEMENT_PASS_INTERVAL;
        // A stopping node hands its shards over and takes nothing on (`hand_over`).
        if self.stopping {
            return;
        }
        // The member table is read once per pass, and only by a node that leads a shard.
        if self.leading() == 0 {
            return;
        }
        let planner = self.config.placement.expect("runs_placement");
        let me = self.config.node_id;
        let members = liveness_table(&self.swim.members());
        let mut sm = std::mem::take(&mut self.placing);
        for s in 0..self.shards.len() {
            let handed_by = self.handed_by[s];
            let Some(replica) = self.shards[s].as_mut() else {
                continue;
            };
            let raft = replica.raft();
            if raft.role() != Role::Leader || raft.transferring_to().is_some() {
                continue;
            }
            let shard = s as u32;
            let membership = raft.membership();
            sm.voters.clear();
            sm.voters.extend_from_slice(&membership.voters);
            sm.learners.clear();
            sm.learners.extend(
                membership
                    .learners
                    .iter()
                    .map(|&l| (l, raft.learner_caught_up(l, now))),
            );
            sm.replaced.clear();
            sm.replaced.extend(
                membership
                    .voters
                    .iter()
                    .copied()
                    .filter(|&v| raft.voter_replaced(v)),
            );
            sm.heard.clear();
            sm.heard.extend(
                membership
                    .voters
                    .iter()
                    .copied()
                    .filter(|&v| raft.voter_heard_lately(v, now)),
            );
            let change = planner.next_change(shard, &sm, &members, now);
            // On its targets, or about to remove its own leader (displaced by better-ranked
            // nodes): the shard goes to its preferred leader, the best-ranked target that
            // votes, if that one can take it now. A leader that removed itself would leave
            // the shard without one for an election timeout (thesis §4.2.2); handed over
            // first, the new leader removes it without a gap.
            let removes_me = change == Some(MembershipChange::Remove(me));
            if change.is_none() || removes_me {
                let targets = planner.targets(shard, &members, now);
                let ready = |t: NodeId| {
                    t != me
                        && members.get(&t) == Some(&Liveness::Alive)
                        && raft.follower_caught_up(t, now)
                };
                let mut voters = targets
                    .iter()
                    .copied()
                    .filter(|&t| raft.membership().is_voter(t));
                // On its targets: the preferred one only (or leadership would not settle),
                // but not the node that handed this replica the shard less than
                // `SPREAD_AFTER` ago: a node that stops without a leave hands its shards over
                // and is alive and caught up until its process ends, and a shard handed
                // straight back would have the transfer declined, refusing proposals until
                // it is abandoned. About to remove itself: the best-ranked target voter that
                // can take over now (the preferred one gets the shard from it later); if none
                // can, the leader removes itself and the shard elects one.
                let handed_back = |t: NodeId| {
                    handed_by.is_some_and(|(by, at)| by == t && now < at + SPREAD_AFTER)
                };
                let to = if removes_me {
                    voters.find(|&t| ready(t))
                } else {
                    voters.next().filter(|&t| ready(t) && !handed_back(t))
                };
                if let Some(to) = to {
                    log::info!(
                        target: PLACEMENT_LOG_TARGET,
                        "udplock node {me}: shard {shard}: handing leadership to node {to} \
                         ({})",
                        if removes_me {
                            "a target, before removing this node"
                        } else {
                            "its preferred node"
                        }
                    );
                    let _ = replica.transfer_leadership(now, to);
                    self.touch(shard);
                    continue;
                }
            }
            let Some(change) = change else {
                continue;
            };
            match replica.change_membership(now, change) {
                Ok(index) => log::info!(
                    target: PLACEMENT_LOG_TARGET,
                    "udplock node {me}: shard {shard}: proposing {change:?} (entry {index}; \
                     voters {:?}, learners {:?})",
                    sm.voters,
                    sm.learners
                ),
                // Asked again by the next pass (a removal that would leave no live majority
                // waits until the remaining voters answer).
                Err(
                    e @ (MembershipError::ChangePending { .. }
                    | MembershipError::NoCommitInTerm
                    | MembershipError::LiveMajorityLost { .. }
                    | MembershipError::NotLeader(_)),
                ) => log::debug!(
                    target: PLACEMENT_LOG_TARGET,
                    "udplock node {me}: shard {shard}: {change:?} not now: {e}"
                ),
                Err(e) => log::info!(
                    target: PLACEMENT_LOG_TARGET,
                    "udplock node {me}: shard {shard}: {change:?} refused: {e}"
                ),
            }
            self.touch(shard);
        }
        self.placing = sm;
        assert!(self.placement_next > now);
    }
}
