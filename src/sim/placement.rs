//! Replicas on demand while clients run and faults happen (issue 10 placement, spec §8.1):
//! in a joined run ([`SimConfig::joined`]) every few hundred milliseconds the simulator asks
//! the leader of a random shard for one single-server change that puts the shard on another
//! subset of the nodes: add a node the configuration lacks as a learner (its node creates a
//! replica on the leader's first APPEND or INSTALL_SNAPSHOT), promote a learner, remove a
//! learner (its node drops the replica once it applies that), or remove a voter where enough
//! remain and a majority of them hold their state (`Sim::removal_keeps_majority`: the
//! simulator knows which node lost its state, the leader only what answered lately). Joined
//! nodes crash, restart with the shards whose files they hold, lose their
//! state (holding nothing then), and are added again, all while the checkers watch.
//!
//! Which change comes next is read from the leader's own configuration, so one that was
//! refused (promotion is, while spec §8.5 rule 8 stands: a joined node is no static voter),
//! lost with a deposed leader or truncated is simply asked for again. After the heal, only
//! until a replica was dropped, a learner is added and removed (never promoted), or where
//! every node is a voter one other than the leader is removed, so every member has the
//! liveness phase to catch up. The run fails
//! if no replica was ever created or dropped ([`SimReport::replicas_created`],
//! [`SimReport::replicas_dropped`], counted as the nodes run): a scenario that never
//! exercised it cannot pass unnoticed.

use super::*;
use crate::core::raft::MembershipChange;

/// The first change is asked for this long after the start, then every
/// [`PLACEMENT_STEP_MS`] (a random draw in the range).
const PLACEMENT_FIRST_MS: std::ops::Range<u64> = 300..800;
const PLACEMENT_STEP_MS: std::ops::Range<u64> = 150..600;

/// A voter is removed only while the shard keeps at least this many after it. Two survive
/// crashes but not the loss of either's state, which the faults therefore spare them
/// (`Sim::state_loss_keeps_majorities`).
const VOTERS_KEPT_MIN: usize = 2;

impl Sim {
    /// Schedules the first change of a joined run.
    pub(super) fn arm_placement(&mut self) {
        let mover = self.config.joined && !self.config.placement_driver();
        if mover && self.config.scenario.is_none() {
            let first = Duration::from_millis(self.rng.gen_range(PLACEMENT_FIRST_MS));
            self.schedule(first, Event::Placement);
        }
    }

    /// Asks a random shard's leader for the next change (see the module docs).
    pub(super) fn placement_step(&mut self) -> Result<(), SimFailure> {
        // After the heal, only while no replica was dropped yet (the faults kept every
        // removal from a node that could apply it): a learner added, then removed, with the
        // rest of the liveness phase to catch up.
        let healed = self.now >= self.heal_at;
        if healed && self.report.replicas_dropped > 0 {
            return Ok(());
        }
        let next = Duration::from_millis(self.rng.gen_range(PLACEMENT_STEP_MS));
        if self.now + next < self.end {
            self.schedule(next, Event::Placement);
        }
        // Half the time a shard with a learner, so that learners come and go on many
        // shards as on few.
        let shards = self.config.shards as usize;
        let with_learner: Vec<usize> = (0..shards)
            .filter(|&s| {
                self.shard_leader(s, false)
                    .is_some_and(|(_, m, _)| !m.learners.is_empty())
            })
            .collect();
        let shard = if !with_learner.is_empty() && self.rng.gen_bool(0.5) {
            with_learner[self.rng.gen_range(0..with_learner.len())]
        } else {
            self.rng.gen_range(0..shards)
        };
        let Some((leader, membership, replaced)) = self.shard_leader(shard, false) else {
            return Ok(());
        };
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let missing: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|&id| !membership.contains(id))
            .collect();
        // A voter whose replica lost its state is replaced first (as the planner does,
        // `core::placement`): removing another could leave it half of the voters.
        let change = if let Some(&voter) = replaced.first() {
            MembershipChange::Remove(voter)
        } else if let Some(&learner) = membership.learners.first() {
            if !healed && self.rng.gen_bool(0.5) {
                MembershipChange::Promote(learner)
            } else {
                MembershipChange::Remove(learner)
            }
        } else if !healed && membership.voters.len() > VOTERS_KEPT_MIN && self.rng.gen_bool(0.3) {
            let voters = &membership.voters;
            MembershipChange::Remove(voters[self.rng.gen_range(0..voters.len())])
        } else if !missing.is_empty() {
            MembershipChange::AddLearner(missing[self.rng.gen_range(0..missing.len())])
        } else if healed && membership.voters.len() > VOTERS_KEPT_MIN {
            // Every node a voter and nothing dropped yet: a voter other than the leader goes
            // (its node drops the replica), the leader keeps leading.
            let others: Vec<NodeId> = membership
                .voters
                .iter()
                .copied()
                .filter(|&v| v != leader)
                .collect();
            MembershipChange::Remove(others[self.rng.gen_range(0..others.len())])
        } else {
            return Ok(());
        };
        // Not a removal that leaves the voters without a majority holding their state
        // (`removal_keeps_majority`): asked again at a later step.
        if !self.removal_keeps_majority(shard, &membership, change) {
            self.report.voter_removals_withheld += 1;
            return Ok(());
        }
        let now = self.now;
        let n = self.node(leader);
        let local = n.clock.local(now);
        let core = n.node.as_mut().expect("a leader runs");
        match core.change_membership(local, shard as u32, change) {
            Ok(_) => self.report.placement_proposed += 1,
            Err(_) => self.report.placement_refused += 1,
        }
        self.after_call(leader)
    }
}
