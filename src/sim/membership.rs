//! Membership changes while clients run and faults happen (issue 10, Raft thesis §4): in a
//! run with [`SimConfig::membership_changes`], every few hundred milliseconds the simulator
//! asks the leader of a random shard for the next single-server change of a cycle that moves
//! a replica out and back: remove a voter (the leader itself sometimes), add it back as a
//! learner, promote it once caught up. Which change comes next is read from the leader's own
//! configuration, so a change that was refused, lost with a deposed leader or truncated is
//! simply asked for again.
//!
//! Replica identities (spec §8.5): the faults take the state of nodes (`memory` nodes, wiped
//! directories) also while shards have explicit configurations, and a replica that lost its
//! state comes back with a new replica id, a new server that counts for nothing. The leader's
//! `Raft::member_replicas` shows such a *replaced* voter (the id named differs from the one
//! heard), and the cycle replaces it before anything else: remove the old (node, replica),
//! add the node back as a learner (named with its new replica id), promote it
//! (`SimReport::membership_replaced` counts the removals). No other voter is removed while
//! the rest would lack a majority holding their state (`Sim::removal_keeps_majority`): the
//! faults keep the nodes without state a minority of every configuration, and a removal after
//! a loss must too.
//!
//! After the heal only the changes that bring every node back are asked for (once some
//! change has committed), so the shard ends fully replicated and the catch-up check holds for
//! every node. The run fails if no
//! change ever committed (`SimReport::membership_changes`, counted from the CONFIG entries
//! the replicas apply), so a rule that refused every change cannot pass unnoticed.

use super::*;
use crate::core::raft::{Membership, MembershipChange};

/// The first change is asked for this long after the start, then every
/// [`MEMBERSHIP_STEP_MS`] (a random draw in the range).
const MEMBERSHIP_FIRST_MS: std::ops::Range<u64> = 500..1_000;
const MEMBERSHIP_STEP_MS: std::ops::Range<u64> = 200..800;
/// After the heal: quicker, so every shard is whole again well before the end.
const MEMBERSHIP_RESTORE_STEP_MS: std::ops::Range<u64> = 20..60;

/// One random seed in this many asks for membership changes (`SimConfig::new`).
pub const MEMBERSHIP_SEEDS_EVERY: u64 = 4;

/// Whether a random run of `seed` on `nodes` nodes makes membership changes: one seed in
/// [`MEMBERSHIP_SEEDS_EVERY`], on 4 nodes or more. On 3, a removal leaves 2 voters, which
/// survive no loss of state (a majority of 2 is both): a node that rejoins by spec §8.5 then
/// waits for a leader that only its own vote could elect, and the shard stays without one.
/// The simulator's faults take the state of any minority of the nodes, so such runs would
/// fail on that, not on a rule; a real 3-node shard is moved by adding first (3 → 4 → 3).
pub fn membership_seed(seed: u64, nodes: usize) -> bool {
    nodes >= 4 && seed % MEMBERSHIP_SEEDS_EVERY == 2
}

impl Sim {
    /// Schedules the first change of a run that makes them.
    pub(super) fn arm_membership(&mut self) {
        if self.config.membership_changes {
            let first = Duration::from_millis(self.rng.gen_range(MEMBERSHIP_FIRST_MS));
            self.schedule(first, Event::Membership);
        }
    }

    /// A leader of `shard` (a running, unpaused node that leads it) and its configuration:
    /// the one of the highest term, or with `deposed` the one of the lowest, which may not
    /// know yet that it was deposed (a partition): a change it makes is the kind a later
    /// leader's may conflict with (Ongaro's single-server change bug). With them, the voters
    /// whose replica that leader knows was replaced (see the module docs).
    pub(super) fn shard_leader(
        &self,
        shard: usize,
        deposed: bool,
    ) -> Option<(NodeId, Membership, Vec<NodeId>)> {
        let leaders = self.nodes.iter().filter(|n| n.paused_until.is_none());
        let mut leaders: Vec<(u64, NodeId, &crate::core::raft::Raft)> = leaders
            .filter_map(|n| {
                let raft = n.replica(shard)?.raft();
                (raft.role() == Role::Leader).then(|| (raft.term(), n.id, raft))
            })
            .collect();
        leaders.sort_unstable_by_key(|&(term, id, _)| (term, id));
        let chosen = if deposed {
            leaders.first()
        } else {
            leaders.last()
        };
        chosen.map(|&(_, id, raft)| {
            let replaced = raft.member_replicas().into_iter().filter(|m| m.replaced());
            (
                id,
                raft.membership().clone(),
                replaced.map(|m| m.id).collect(),
            )
        })
    }

    /// Running nodes that some running replica's configuration names with a replica id
    /// other than the one their replica of that shard holds now: they lost their state since
    /// (spec §8.5, "Replica identities") and count for nothing there until the cycle replaces
    /// them, so the faults treat them as nodes without state (`faults.rs`).
    pub(super) fn replaced_nodes(&self) -> Vec<NodeId> {
        let mut replaced = Vec::new();
        for shard in 0..self.config.shards as usize {
            for n in &self.nodes {
                let Some(membership) = n.replica(shard).map(|r| r.raft().membership()) else {
                    continue;
                };
                for other in &self.nodes {
                    if other.node.is_none() {
                        continue;
                    }
                    // A running node of a joined run may hold no replica of a shard a
                    // configuration names it in: it lost its state (its shard files) since.
                    let mine = other.replica(shard).map(|r| r.raft().replica());
                    let named = membership.replica_of(other.id);
                    if membership.is_voter(other.id)
                        && named.is_some_and(|named| Some(named) != mine)
                        && !replaced.contains(&other.id)
                    {
                        replaced.push(other.id);
                    }
                }
            }
        }
        replaced
    }

    /// Whether `node` may lose its state now without taking any shard's last majority: in
    /// every configuration a running replica holds that names `node` a voter, a majority of
    /// the voters are other nodes that run and hold the replica it names (joined runs, whose
    /// shards live on subsets of the nodes, down to two voters while they move: a node that
    /// loses its state there may be the half without which no entry ever commits again, and
    /// no protocol survives that). Crashed nodes count as not holding their replicas; the
    /// last leader's configuration counts too (its replicas may all be down).
    pub(super) fn state_loss_keeps_majorities(&self, node: NodeId) -> bool {
        for shard in 0..self.config.shards as usize {
            let running = self
                .nodes
                .iter()
                .filter_map(|n| n.replica(shard).map(|r| r.raft().membership()));
            for membership in running.chain(self.leader_configs[shard].as_ref()) {
                if !membership.is_voter(node) {
                    continue;
                }
                let intact = membership
                    .voters
                    .iter()
                    .filter(|&&v| v != node && self.holds_named_replica(shard, membership, v))
                    .count();
                if intact * 2 <= membership.voters.len() {
                    return false;
                }
            }
        }
        true
    }

    /// Whether node `v` runs and holds the replica of `shard` that `membership` names it with
    /// (any, in the static configuration), not rejoining: a voter that counts. A crashed node
    /// does not (a `memory` one lost its state; a disk one may lose its directory or power
    /// when it restarts).
    fn holds_named_replica(&self, shard: usize, membership: &Membership, v: NodeId) -> bool {
        let holder = self.nodes.iter().find(|o| o.id == v);
        let held = holder.and_then(|o| o.replica(shard)).map(|r| r.raft());
        held.is_some_and(|raft| {
            !raft.rejoining()
                && membership
                    .replica_of(v)
                    .is_none_or(|id| id == raft.replica())
        })
    }

    /// Whether `change`, asked of a leader whose configuration of `shard` is `membership`,
    /// leaves a majority of the voters holding their state. The faults take a node's state
    /// only where that keeps every configuration's majority (`state_loss_keeps_majorities`),
    /// but a removal after the loss can make the lost replica half of the voters: found by
    /// `udplock sim --seed 9059 --nodes 5 --seconds 60 --joined`, where voters {2, 1, 4} lost
    /// node 2's state (a `memory` node stopped) and the mover removed voter 1 52 ms later,
    /// within the election timeout in which the leader still counted node 2 as live (Raft's
    /// `MembershipError::LiveMajorityLost` rule can see no sooner), leaving {2, 4}: no
    /// majority could ever answer again. Together with the faults' rule, the nodes without
    /// their state stay a minority of every configuration, which is what Raft survives; the
    /// simulator, which knows who lost what, asks only for removals that keep it so.
    /// Removing a voter that does not count itself, or a learner, is always allowed.
    pub(super) fn removal_keeps_majority(
        &self,
        shard: usize,
        membership: &Membership,
        change: MembershipChange,
    ) -> bool {
        let MembershipChange::Remove(removed) = change else {
            return true;
        };
        if !membership.is_voter(removed) || !self.holds_named_replica(shard, membership, removed) {
            return true;
        }
        let rest = membership.voters.iter().filter(|&&v| v != removed);
        let intact = rest
            .clone()
            .filter(|&&v| self.holds_named_replica(shard, membership, v))
            .count();
        intact * 2 > rest.count()
    }

    /// Asks a random shard's leader for the next change of the cycle (see the module docs);
    /// after the heal, the leader of a shard that lacks a node, for the change that brings it
    /// back.
    pub(super) fn membership_step(&mut self) -> Result<(), SimFailure> {
        // After the heal, only what brings nodes back; unless no change has committed yet
        // (the faults left no leader long enough): then the cycle goes on.
        let restoring = self.now >= self.heal_at && self.report.membership_changes > 0;
        let step = if restoring {
            MEMBERSHIP_RESTORE_STEP_MS
        } else {
            MEMBERSHIP_STEP_MS
        };
        let next = Duration::from_millis(self.rng.gen_range(step));
        if self.now + next < self.end {
            self.schedule(next, Event::Membership);
        }
        let shards = self.config.shards as usize;
        let first = self.rng.gen_range(0..shards);
        let deposed = !restoring && self.rng.gen_bool(0.5);
        let nodes = self.nodes.len();
        let chosen = (0..shards)
            .map(|k| (first + k) % shards)
            .filter_map(|shard| Some((shard, self.shard_leader(shard, deposed)?)))
            .find(|(_, (_, m, replaced))| {
                !restoring || m.voters.len() < nodes || !replaced.is_empty()
            });
        let Some((shard, (leader, membership, replaced))) = chosen else {
            return Ok(());
        };
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let change = if let Some(&learner) = membership.learners.first() {
            MembershipChange::Promote(learner)
        } else if let Some(&missing) = ids.iter().find(|&&id| !membership.contains(id)) {
            MembershipChange::AddLearner(missing)
        } else if let Some(&old) = replaced.first() {
            // A voter whose replica lost its state: replace it (module docs).
            self.report.membership_replaced += 1;
            MembershipChange::Remove(old)
        } else if restoring {
            return Ok(());
        } else {
            MembershipChange::Remove(ids[self.rng.gen_range(0..ids.len())])
        };
        if !self.removal_keeps_majority(shard, &membership, change) {
            self.report.voter_removals_withheld += 1;
            return Ok(());
        }
        let now = self.now;
        let n = self.node(leader);
        let local = n.clock.local(now);
        let core = n.node.as_mut().expect("a leader runs");
        match core.change_membership(local, shard as u32, change) {
            Ok(_) => self.report.membership_proposed += 1,
            Err(_) => self.report.membership_refused += 1,
        }
        self.after_call(leader)
    }
}
