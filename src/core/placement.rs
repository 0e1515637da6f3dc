//! Placement: which nodes should hold each shard's replicas, and the next single membership
//! change that brings a shard closer to that.
//!
//! ```text
//!   member table (SWIM) ─┐                                       ┌─> targets(shard)
//!   shard's voters and   ├─> Planner::next_change(shard, ..) ────┤
//!   learners, now        ┘                                       └─> Option<MembershipChange>
//! ```
//!
//! - **Targets** (spec §8.13): rendezvous ("highest random weight") hashing, Thaler &
//!   Ravishankar 1998. Every candidate node gets a weight per shard
//!   (`udplock_protocol::placement_weight`, SHA-256 of the node id and the shard index); a
//!   shard's targets are its `replicas` (R) candidates of highest weight. Every node computes
//!   the same targets from the same member table, with no agreement of its own, and a node
//!   that joins or fails moves only the replicas it must (see `tests`).
//! - **Candidates**: members alive or suspect, or dead for no longer than `dead_after`. A
//!   suspicion (often false, SWIM §4.2) or a restart moves nothing; a member that left, or has
//!   been dead longer than `dead_after`, is replaced.
//! - **The planner** returns one change at a time, in this order: nothing while the shard's
//!   live voters are not a majority (nothing could commit, see [`Planner::next_change`]);
//!   remove a learner that is no longer a target; remove a voter whose replica was replaced
//!   (its node lost its state; it is then a missing target like any other, added back as
//!   a new replica); remove a voter that left or has been dead longer than `dead_after`; promote a caught-up learner that is a target; add a missing
//!   target as a learner (one catching up at a time); remove a live voter that is no longer a
//!   target, but only once R target voters are in place, so the shard never drops below the
//!   replication wanted to make room. Applying each change through Raft (single-server
//!   changes, thesis §4.1, learners first, thesis §4.2.1) and asking again converges on the
//!   targets.
//!
//! Pure: no IO, no clock; `now` comes in. The planner only proposes: whether and when a change
//! is safe to make is Raft's decision, and neither placement nor SWIM ever decides who holds a
//! lock (issue 10 §2).

use std::collections::BTreeMap;

use crate::core::raft::{MembershipChange, NodeId};
use crate::core::swim::{MemberInfo, State};
use crate::core::time::{Duration, Instant};
use crate::core::ConfigError;
use udplock_protocol::placement_weight;

/// Replicas per shard when the operator does not choose (spec §8.13): three copies survive
/// one failure with a majority left, the usual choice of Raft deployments.
pub const REPLICAS_DEFAULT: usize = 3;
/// Most replicas per shard (spec §8.13). Every voter counts in every commit's majority and
/// receives every entry, so each one costs the leader bandwidth and latency; a lock service
/// gains no safety from more than seven copies (three failures survived).
pub const REPLICAS_MAX: usize = 7;

/// How long a member must have been dead before its replicas are replaced, unless the
/// operator chooses (`--dead-after-ms`, spec §8.13): a minute is longer than a process
/// restart, a reboot or a short network partition takes, so none of them moves a replica
/// (each move copies a shard); a machine that stays away longer is replaced. It must not
/// exceed SWIM's `dead_keep` (the member table must still list the dead member by then,
/// see [`Planner`]'s `is_gone`).
pub const DEAD_AFTER_DEFAULT: Duration = Duration::from_millis(60_000);

/// Refuses a replica count outside `1..=REPLICAS_MAX`.
pub fn validate_replicas(replicas: usize) -> Result<(), ConfigError> {
    if replicas == 0 || replicas > REPLICAS_MAX {
        return Err(ConfigError {
            field: "replicas",
            rule: "must be 1 to REPLICAS_MAX (7)",
        });
    }
    Ok(())
}

/// `nodes` ranked for `shard` (spec §8.13): highest weight first, the lower id on a tie.
/// Duplicates are kept; callers pass sets.
pub fn rank(shard: u32, nodes: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut weighted: Vec<(u64, NodeId)> = nodes
        .into_iter()
        .map(|n| (placement_weight(n, shard), n))
        .collect();
    weighted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    weighted.into_iter().map(|(_, n)| n).collect()
}

/// The first `replicas` of `candidates` ranked for `shard` (all of them when fewer).
pub fn targets(
    shard: u32,
    candidates: impl IntoIterator<Item = NodeId>,
    replicas: usize,
) -> Vec<NodeId> {
    let mut ranked = rank(shard, candidates);
    ranked.truncate(replicas);
    ranked
}

/// What the member table says of one node (SWIM's states, with the time of death the
/// dead-after rule needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Suspected, not yet confirmed dead: often a false alarm (SWIM §4.2), so it moves nothing.
    Suspect,
    /// Confirmed dead (SWIM's confirm) since `since`.
    Dead {
        since: Instant,
    },
    /// Left on purpose: it will not come back under this incarnation.
    Left,
}

impl Liveness {
    /// What a SWIM member table entry says (`Swim::members`, `Node::members`).
    pub fn of(member: &MemberInfo) -> Liveness {
        match member.state {
            State::Alive => Liveness::Alive,
            State::Suspect => Liveness::Suspect,
            State::Dead => Liveness::Dead {
                since: member.since,
            },
            State::Left => Liveness::Left,
        }
    }
}

/// The planner's member table from SWIM's (the node itself included, as SWIM lists it).
pub fn liveness_table(members: &[MemberInfo]) -> BTreeMap<NodeId, Liveness> {
    members.iter().map(|m| (m.id, Liveness::of(m))).collect()
}

/// One shard's membership as its leader's log has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardMembers {
    pub voters: Vec<NodeId>,
    /// Non-voting replicas, each with whether it has caught up with the leader's log (the
    /// leader knows: `raft::Raft::learner_caught_up`, the rule promotion is accepted by).
    pub learners: Vec<(NodeId, bool)>,
    /// Voters whose replica was replaced (`raft::MemberReplicas::replaced`: the node lost
    /// its state and answers as a new replica, spec §8.5 "Replica identities"): such a
    /// voter counts for nothing until it is removed, added back as a learner and promoted.
    pub replaced: Vec<NodeId>,
    /// Voters the leader heard from lately under the replica id named, itself included
    /// (`raft::Raft::voter_heard_lately`): they answer whatever the membership layer says —
    /// a node whose leave was announced while it still runs, one held dead across an
    /// asymmetric fault —, so entries commit with them.
    pub heard: Vec<NodeId>,
}

impl ShardMembers {
    fn is_replica(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.iter().any(|&(l, _)| l == id)
    }
}

/// Decides the next change of a shard's membership. See the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planner {
    /// R: replicas wanted per shard.
    pub replicas: usize,
    /// How long a member must have been dead before its replicas are replaced: long enough
    /// that a restart, a reboot or a short partition moves nothing (a move copies the shard).
    pub dead_after: Duration,
}

impl Planner {
    pub fn new(replicas: usize, dead_after: Duration) -> Result<Planner, ConfigError> {
        validate_replicas(replicas)?;
        Ok(Planner {
            replicas,
            dead_after,
        })
    }

    /// Whether `liveness` makes a node a candidate for replicas at `now`.
    fn is_candidate(&self, liveness: Liveness, now: Instant) -> bool {
        match liveness {
            Liveness::Alive | Liveness::Suspect => true,
            Liveness::Dead { since } => now.saturating_since(since) <= self.dead_after,
            Liveness::Left => false,
        }
    }

    /// Whether `liveness` means the node is gone for placement: left, or dead longer than
    /// `dead_after`. A node absent from the table is unknown, not gone (a table still
    /// filling at start must not make the planner evict voters); the member table must
    /// therefore keep dead members for at least `dead_after`.
    fn is_gone(&self, liveness: Liveness, now: Instant) -> bool {
        !self.is_candidate(liveness, now)
    }

    /// The targets of `shard`: its `replicas` highest-ranked candidates.
    pub fn targets(
        &self,
        shard: u32,
        members: &BTreeMap<NodeId, Liveness>,
        now: Instant,
    ) -> Vec<NodeId> {
        let candidates = members
            .iter()
            .filter(|(_, &l)| self.is_candidate(l, now))
            .map(|(&id, _)| id);
        targets(shard, candidates, self.replicas)
    }

    /// Whether a majority of the shard's voters is alive or suspect (not dead, not gone,
    /// not unknown) or heard by the leader lately ([`ShardMembers::heard`]), and not
    /// replaced (a replaced voter's answers count for nothing, spec
    /// §8.5 "Replica identities"). Without it no entry commits, a membership change included: the shard
    /// is unavailable until enough of its voters come back, and no single-server change can
    /// help (each needs the old majority to commit it, thesis §4.1). Replacing the voters of
    /// a shard that lost its majority for good takes an operator's forced reconfiguration,
    /// which may lose committed entries; the planner never pretends to do it.
    pub fn has_live_majority(
        &self,
        shard_members: &ShardMembers,
        members: &BTreeMap<NodeId, Liveness>,
    ) -> bool {
        let live = shard_members
            .voters
            .iter()
            .filter(|v| {
                matches!(members.get(v), Some(Liveness::Alive | Liveness::Suspect))
                    || shard_members.heard.contains(v)
            })
            .filter(|v| !shard_members.replaced.contains(v))
            .count();
        live * 2 > shard_members.voters.len()
    }

    /// The next single change that brings `shard` closer to its targets, or `None` when it
    /// is there, when it must wait (a learner still catching up, fewer candidates than R), or
    /// when nothing can commit (no live majority of voters, [`Planner::has_live_majority`]).
    /// Called by the shard's leader; the change goes through Raft, then it asks again.
    pub fn next_change(
        &self,
        shard: u32,
        shard_members: &ShardMembers,
        members: &BTreeMap<NodeId, Liveness>,
        now: Instant,
    ) -> Option<MembershipChange> {
        let ShardMembers {
            voters,
            learners,
            replaced,
            heard,
        } = shard_members;
        assert!(
            heard.iter().all(|h| voters.contains(h)),
            "shard {shard}: only a voter is heard as one"
        );
        assert!(!voters.is_empty(), "shard {shard} has no voter");
        assert!(
            replaced.iter().all(|r| voters.contains(r)),
            "shard {shard}: only a voter is replaced"
        );
        assert!(
            learners.iter().all(|(l, _)| !voters.contains(l)),
            "shard {shard}: a node is both voter and learner"
        );
        if !self.has_live_majority(shard_members, members) {
            return None;
        }
        let targets = self.targets(shard, members, now);
        let is_target = |id: &NodeId| targets.contains(id);
        let gone = |id: &NodeId| members.get(id).is_some_and(|&l| self.is_gone(l, now));

        // A learner that is no longer a target: it copies the log for nothing.
        if let Some(&(id, _)) = learners.iter().find(|(l, _)| !is_target(l)) {
            return Some(MembershipChange::Remove(id));
        }
        // A voter whose replica was replaced: it counts for nothing, so removing it costs
        // no safety, and its node, a target again once it is out, comes back as a new
        // replica through the learner steps below (spec §8.5 "Replica identities").
        if voters.len() > 1 {
            if let Some(&id) = replaced.first() {
                return Some(MembershipChange::Remove(id));
            }
        }
        // A voter gone for good. Removing a failed voter never lowers the number of further
        // failures the shard survives (⌊(n−1)/2⌋ of the rest instead of ⌊n/2⌋ of n with one
        // down), and its replacement then needs a smaller majority while it catches up.
        if voters.len() > 1 {
            if let Some(&id) = voters.iter().find(|v| gone(v)) {
                return Some(MembershipChange::Remove(id));
            }
        }
        // Targets in rank order: the best-placed first.
        for &t in &targets {
            if learners.contains(&(t, true)) {
                return Some(MembershipChange::Promote(t));
            }
        }
        // One learner catching up at a time bounds the snapshot traffic a shard causes.
        if learners.iter().all(|&(_, caught_up)| caught_up) {
            if let Some(&t) = targets.iter().find(|&&t| !shard_members.is_replica(t)) {
                return Some(MembershipChange::AddLearner(t));
            }
        }
        // A live voter displaced by a better-ranked node, once R target voters are in place
        // (never shrink below the replication wanted to make room). Never a suspect or a
        // briefly dead one: it would be back in the targets when it recovers.
        let target_voters = voters.iter().filter(|v| is_target(v)).count();
        if target_voters >= self.replicas {
            let displaced = voters
                .iter()
                .filter(|v| !is_target(v) && members.get(v) == Some(&Liveness::Alive));
            if let Some(&id) = rank(shard, displaced.copied()).last() {
                return Some(MembershipChange::Remove(id));
            }
        }
        None
    }
}

/// What happens when one node joins `nodes` nodes (ids 1..=nodes) holding `shards` shards of
/// `replicas` each: issue 10's target, "a joining node takes about R/N of all replicas; no
/// other replica moves". Deterministic (the weights are a fixed function); printed by
/// `udplock swim-sim --placement`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JoinReport {
    pub nodes: u64,
    pub shards: u32,
    /// Shards the joining node becomes a target of.
    pub taken: u32,
    /// Replica changes other than "one node out, the joiner in" in a shard: 0 by
    /// rendezvous hashing's property.
    pub moved_elsewhere: u32,
    /// Most and fewest replicas one node holds after the join (the spread; the mean is
    /// shards·R/(nodes+1)).
    pub per_node_max: u32,
    pub per_node_min: u32,
}

impl JoinReport {
    /// The share of the shards the joiner takes; R/N (N counting it) is expected.
    pub fn share(&self) -> f64 {
        f64::from(self.taken) / f64::from(self.shards)
    }
}

/// Replica changes from `before` to `after` other than `joiner` coming in and, when
/// `before` was full, one node going out to make room for it.
fn moved_elsewhere_in(before: &[NodeId], after: &[NodeId], joiner: NodeId, replicas: usize) -> u32 {
    let added = after.iter().filter(|a| !before.contains(a)).count() as u32;
    let dropped = before.iter().filter(|b| !after.contains(b)).count() as u32;
    if after.contains(&joiner) {
        let full = u32::from(before.len() == replicas);
        (added - 1) + dropped.abs_diff(full)
    } else {
        added + dropped
    }
}

/// Computes [`JoinReport`] for node `nodes + 1` joining nodes `1..=nodes`.
pub fn join_report(nodes: u64, shards: u32, replicas: usize) -> JoinReport {
    let joiner = nodes + 1;
    let mut per_node = vec![0u32; joiner as usize + 1];
    let (mut taken, mut moved_elsewhere) = (0, 0);
    for s in 0..shards {
        let before = targets(s, 1..=nodes, replicas);
        let after = targets(s, 1..=joiner, replicas);
        taken += u32::from(after.contains(&joiner));
        moved_elsewhere += moved_elsewhere_in(&before, &after, joiner, replicas);
        for &n in &after {
            per_node[n as usize] += 1;
        }
    }
    let held = &per_node[1..];
    JoinReport {
        nodes,
        shards,
        taken,
        moved_elsewhere,
        per_node_max: held.iter().copied().max().unwrap_or(0),
        per_node_min: held.iter().copied().min().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MembershipChange::{AddLearner, Promote, Remove};

    const DEAD_AFTER: Duration = Duration::from_millis(60_000);

    fn planner() -> Planner {
        Planner::new(REPLICAS_DEFAULT, DEAD_AFTER).unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1_000)
    }

    fn alive(ids: impl IntoIterator<Item = NodeId>) -> BTreeMap<NodeId, Liveness> {
        ids.into_iter().map(|id| (id, Liveness::Alive)).collect()
    }

    fn shard(voters: &[NodeId], learners: &[(NodeId, bool)]) -> ShardMembers {
        ShardMembers {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            replaced: Vec::new(),
            heard: Vec::new(),
        }
    }

    /// A shard whose targets among nodes 1..=n are not all of its voters: (shard, targets,
    /// the ranking of all n).
    fn a_shard(n: NodeId) -> (u32, Vec<NodeId>, Vec<NodeId>) {
        let shard = 5;
        let ranking = rank(shard, 1..=n);
        (shard, ranking[..REPLICAS_DEFAULT].to_vec(), ranking)
    }

    #[test]
    fn ranking_and_targets_match_the_spec_vectors() {
        let file = include_str!("../../spec/vectors/placement.txt");
        let mut checked = 0;
        for block in file.split("\n[").skip(1) {
            let field = |key: &str| -> Vec<NodeId> {
                let line = block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key} = ")))
                    .unwrap();
                line.split_whitespace()
                    .map(|w| w.parse().unwrap())
                    .collect()
            };
            let shard = field("shard")[0] as u32;
            assert_eq!(rank(shard, field("nodes")), field("ranking"));
            assert_eq!(
                targets(shard, field("nodes"), REPLICAS_DEFAULT),
                field("replicas")
            );
            checked += 1;
        }
        assert!(checked >= 4);
    }

    #[test]
    fn the_member_table_comes_from_swim_with_the_time_of_death() {
        let addr = std::net::SocketAddr::from(([10, 0, 0, 1], 7000));
        let info = |id, state, since| MemberInfo {
            id,
            addr,
            incarnation: 3,
            state,
            since,
        };
        let table = liveness_table(&[
            info(1, State::Alive, at(0)),
            info(2, State::Suspect, at(5)),
            info(3, State::Dead, at(7)),
            info(4, State::Left, at(9)),
        ]);
        assert_eq!(table[&1], Liveness::Alive);
        assert_eq!(table[&2], Liveness::Suspect);
        assert_eq!(table[&3], Liveness::Dead { since: at(7) });
        assert_eq!(table[&4], Liveness::Left);
    }

    #[test]
    fn replicas_outside_the_limit_are_refused() {
        assert!(Planner::new(0, DEAD_AFTER).is_err());
        assert!(Planner::new(REPLICAS_MAX + 1, DEAD_AFTER).is_err());
        assert!(Planner::new(1, DEAD_AFTER).is_ok());
        assert!(Planner::new(REPLICAS_MAX, DEAD_AFTER).is_ok());
    }

    #[test]
    fn a_missing_target_is_added_as_a_learner_first() {
        // One node held the shard; four more joined.
        let (s, targets, _) = a_shard(5);
        let only = targets[0];
        let change = planner().next_change(s, &shard(&[only], &[]), &alive(1..=5), at(0));
        assert_eq!(change, Some(AddLearner(targets[1])));
    }

    #[test]
    fn a_caught_up_target_learner_is_promoted_and_one_catching_up_is_not() {
        let (s, t, _) = a_shard(5);
        let members = alive(1..=5);
        let catching_up = shard(&[t[0]], &[(t[1], false)]);
        // Not promoted, and no second learner while it catches up.
        assert_eq!(
            planner().next_change(s, &catching_up, &members, at(0)),
            None
        );
        let caught_up = shard(&[t[0]], &[(t[1], true)]);
        assert_eq!(
            planner().next_change(s, &caught_up, &members, at(0)),
            Some(Promote(t[1]))
        );
    }

    #[test]
    fn a_displaced_voter_is_removed_only_once_r_target_voters_are_in_place() {
        // Voters were the top three of nodes 1..=4; node 5 joined and outranks one of them
        // (in the first shard where it does).
        let new = 5;
        let s = (0..)
            .find(|&s| targets(s, 1..=5, REPLICAS_DEFAULT).contains(&new))
            .unwrap();
        let ranking = rank(s, 1..=5);
        let old = targets(s, 1..=4, REPLICAS_DEFAULT);
        let displaced = *old.iter().find(|o| !ranking[..3].contains(o)).unwrap();
        let members = alive(1..=5);
        // The newcomer still a learner: two target voters, so the displaced one stays.
        let before = shard(&old, &[(new, false)]);
        assert_eq!(planner().next_change(s, &before, &members, at(0)), None);
        let mut voters = old.clone();
        voters.push(new);
        assert_eq!(
            planner().next_change(s, &shard(&voters, &[]), &members, at(0)),
            Some(Remove(displaced))
        );
    }

    #[test]
    fn a_voter_dead_longer_than_dead_after_is_removed_and_a_briefly_dead_or_suspect_one_is_not() {
        let (s, t, ranking) = a_shard(5);
        let voters = t.clone();
        let mut members = alive(1..=5);
        let now = at(100_000);
        // Suspect: nothing moves.
        members.insert(t[2], Liveness::Suspect);
        assert_eq!(
            planner().next_change(s, &shard(&voters, &[]), &members, now),
            None
        );
        // Dead for less than dead_after: nothing moves either (still a target).
        let since = at(100_000 - 59_000);
        members.insert(t[2], Liveness::Dead { since });
        assert_eq!(
            planner().next_change(s, &shard(&voters, &[]), &members, now),
            None
        );
        // Dead for longer: removed first, then its replacement (the fourth-ranked) is added.
        let since = at(100_000 - 61_000);
        members.insert(t[2], Liveness::Dead { since });
        assert_eq!(
            planner().next_change(s, &shard(&voters, &[]), &members, now),
            Some(Remove(t[2]))
        );
        assert_eq!(
            planner().next_change(s, &shard(&t[..2], &[]), &members, now),
            Some(AddLearner(ranking[3]))
        );
        // A member that left is gone at once.
        members.insert(t[2], Liveness::Left);
        assert_eq!(
            planner().next_change(s, &shard(&voters, &[]), &members, at(0)),
            Some(Remove(t[2]))
        );
    }

    #[test]
    fn a_learner_no_longer_a_target_is_removed() {
        let (s, t, ranking) = a_shard(5);
        let members = alive(1..=5);
        let loser = ranking[4];
        assert_eq!(
            planner().next_change(s, &shard(&t, &[(loser, true)]), &members, at(0)),
            Some(Remove(loser))
        );
        // Also when it is still catching up.
        assert_eq!(
            planner().next_change(s, &shard(&t, &[(loser, false)]), &members, at(0)),
            Some(Remove(loser))
        );
    }

    #[test]
    fn a_shard_with_fewer_candidates_than_r_keeps_what_it_has() {
        let s = 9;
        // Two nodes, R = 3: both voters, nothing to add, nothing to remove.
        assert_eq!(
            planner().next_change(s, &shard(&[1, 2], &[]), &alive([1, 2]), at(0)),
            None
        );
        // Three voters, one briefly dead: it stays, and nothing is added in its place.
        let mut members = alive([1, 2, 3]);
        members.insert(3, Liveness::Dead { since: at(0) });
        assert_eq!(
            planner().next_change(s, &shard(&[1, 2, 3], &[]), &members, at(1_000)),
            None
        );
    }

    #[test]
    fn a_shard_without_a_live_majority_of_voters_gets_no_change() {
        // Two of three voters dead for good: nothing can commit, so nothing is proposed,
        // though nodes 4 and 5 are alive and would be targets.
        let s = 3;
        let mut members = alive([1, 4, 5]);
        members.insert(2, Liveness::Dead { since: at(0) });
        members.insert(3, Liveness::Left);
        let sm = shard(&[1, 2, 3], &[]);
        assert!(!planner().has_live_majority(&sm, &members));
        assert_eq!(planner().next_change(s, &sm, &members, at(1_000_000)), None);
        // Voters the table does not know count as down, too.
        assert!(!planner().has_live_majority(&shard(&[1, 7, 8], &[]), &members));
        assert!(planner().has_live_majority(&shard(&[1, 4, 7], &[]), &members));
    }

    #[test]
    fn a_replaced_voter_is_removed_first_then_added_back_as_a_new_replica() {
        let (s, t, ranking) = a_shard(5);
        let members = alive(1..=5);
        let loser = ranking[4];
        // Its node lost its state: removed before anything else but a learner that is no
        // longer a target.
        let mut sm = shard(&t, &[(loser, true)]);
        sm.replaced = vec![t[1]];
        assert_eq!(
            planner().next_change(s, &sm, &members, at(0)),
            Some(Remove(loser))
        );
        sm.learners.clear();
        assert_eq!(
            planner().next_change(s, &sm, &members, at(0)),
            Some(Remove(t[1]))
        );
        // Out, it is a missing target: added back as a learner (a new replica), promoted
        // once caught up.
        let out = shard(&[t[0], t[2]], &[]);
        assert_eq!(
            planner().next_change(s, &out, &members, at(0)),
            Some(AddLearner(t[1]))
        );
        let back = shard(&[t[0], t[2]], &[(t[1], true)]);
        assert_eq!(
            planner().next_change(s, &back, &members, at(0)),
            Some(Promote(t[1]))
        );
        // A replaced voter counts for nothing: with two voters, one replaced, no majority is
        // live, and nothing is proposed (nothing could commit).
        let mut pair = shard(&t[..2], &[]);
        pair.replaced = vec![t[1]];
        assert!(!planner().has_live_majority(&pair, &members));
        assert_eq!(planner().next_change(s, &pair, &members, at(0)), None);
    }

    /// Found by `udplock sim --seed 189 --nodes 5 --joined`: a shard of voters {4, 3} whose
    /// node 3 announced its leave but ran on (its stop cut short), with a caught-up learner:
    /// SWIM holds 3 gone, so the planner saw no live majority and waited for ever, while
    /// node 3 answered and every entry committed. A voter the leader hears counts as live;
    /// the gone one is removed and the learner promoted.
    #[test]
    fn a_voter_the_leader_hears_counts_as_live_whatever_swim_says() {
        let mut members = alive([1, 2, 4, 5]);
        members.insert(3, Liveness::Left);
        let s = 3;
        let mut sm = shard(&[4, 3], &[(2, true)]);
        assert!(!planner().has_live_majority(&sm, &members));
        assert_eq!(planner().next_change(s, &sm, &members, at(0)), None);
        sm.heard = vec![4, 3];
        assert!(planner().has_live_majority(&sm, &members));
        assert_eq!(
            planner().next_change(s, &sm, &members, at(0)),
            Some(Remove(3))
        );
    }

    /// Applies the planner's changes one by one (a learner catches up in the step after it is
    /// added) until it has nothing to say; checks every step is one change and the shard never
    /// has fewer target voters than it started with. Returns the final membership.
    fn converge(
        s: u32,
        mut sm: ShardMembers,
        members: &BTreeMap<NodeId, Liveness>,
        now: Instant,
    ) -> ShardMembers {
        let p = planner();
        let targets = p.targets(s, members, now);
        let target_voters =
            |sm: &ShardMembers| sm.voters.iter().filter(|v| targets.contains(v)).count();
        let floor = target_voters(&sm);
        for _ in 0..64 {
            // Learners catch up between two decisions.
            for l in &mut sm.learners {
                l.1 = true;
            }
            let Some(change) = p.next_change(s, &sm, members, now) else {
                return sm;
            };
            match change {
                AddLearner(id) => {
                    assert!(!sm.is_replica(id));
                    sm.learners.push((id, false));
                }
                Promote(id) => {
                    let i = sm.learners.iter().position(|l| l.0 == id).unwrap();
                    sm.learners.remove(i);
                    sm.voters.push(id);
                }
                Remove(id) => {
                    sm.voters.retain(|&v| v != id);
                    sm.learners.retain(|l| l.0 != id);
                }
            }
            assert!(!sm.voters.is_empty());
            assert!(target_voters(&sm) >= floor, "{change:?} shrank {sm:?}");
        }
        panic!("no convergence: {sm:?}");
    }

    #[test]
    fn applying_the_changes_one_at_a_time_converges_on_the_targets() {
        for s in 0..64 {
            // From one bootstrap node to eight members.
            let members = alive(1..=8);
            let end = converge(s, shard(&[1], &[]), &members, at(0));
            let mut voters = end.voters.clone();
            voters.sort_unstable();
            let mut want = planner().targets(s, &members, at(0));
            want.sort_unstable();
            assert_eq!(voters, want, "shard {s}");
            assert!(end.learners.is_empty());
            // Then one of them dies for good: replaced by the next in rank.
            let mut members = members;
            members.insert(want[0], Liveness::Dead { since: at(0) });
            let later = at(0) + Duration::from_micros(DEAD_AFTER.as_micros() + 1);
            let end = converge(s, end, &members, later);
            let mut voters = end.voters;
            voters.sort_unstable();
            let mut want = planner().targets(s, &members, later);
            want.sort_unstable();
            assert_eq!(voters, want, "shard {s} after a death");
        }
    }

    /// Issue 10's target: a joining node takes about R/N of the shards, and no replica other
    /// than those moving to it changes (rendezvous hashing's property, Thaler & Ravishankar
    /// §3). Deterministic: the weights are a fixed function. The share is a binomial count,
    /// so it is checked where the shards are many enough for 10 points to be several
    /// standard deviations (at 512 shards, at most 2 points); the property everywhere.
    #[test]
    fn a_joining_node_moves_only_the_replicas_it_takes() {
        for shards in [1u32, 7, 64, 512] {
            for n in 1u64..=24 {
                let r = join_report(n, shards, REPLICAS_DEFAULT);
                assert_eq!(r.moved_elsewhere, 0, "{r:?}");
                assert!(r.per_node_max <= shards, "{r:?}");
                if shards >= 512 {
                    // R/N of the shards (N counting the joiner, at most all).
                    let want = (REPLICAS_DEFAULT as f64 / (n + 1) as f64).min(1.0);
                    assert!((r.share() - want).abs() <= 0.10, "{r:?}: R/N {want:.3}");
                    assert!(r.per_node_min > 0, "{r:?}");
                }
            }
        }
    }

    /// The report's counter fires when replicas move other than to the joiner.
    #[test]
    fn moved_elsewhere_counts_every_other_change() {
        let r = REPLICAS_DEFAULT;
        assert_eq!(moved_elsewhere_in(&[1, 2, 3], &[1, 9, 3], 9, r), 0);
        assert_eq!(moved_elsewhere_in(&[1, 2], &[1, 2, 9], 9, r), 0);
        assert_eq!(moved_elsewhere_in(&[1, 2, 3], &[1, 2, 3], 9, r), 0);
        // Another node in as well, or a node out of a shard the joiner did not enter.
        assert_eq!(moved_elsewhere_in(&[1, 2, 3], &[4, 9, 3], 9, r), 2);
        assert_eq!(moved_elsewhere_in(&[1, 2, 3], &[1, 2, 4], 9, r), 2);
        // A node out of a shard that had room for the joiner.
        assert_eq!(moved_elsewhere_in(&[1, 2], &[1, 9], 9, r), 1);
    }
}
