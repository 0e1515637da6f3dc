//! Membership changes (thesis §4): who votes, who only learns, and how a leader changes that
//! one server at a time.
//!
//! # The configuration lives in the log (thesis §4.1; spec §8.5, "Configuration")
//!
//! A shard's configuration is a [`Membership`]: its voters and its learners. It travels as a
//! log entry whose data is a CONFIG command (spec §8.7), and a replica uses the latest CONFIG
//! in its log, committed or not, from the moment the entry is appended: if a conflicting
//! leader truncates it away, the previous one holds again; once compacted away, the one its
//! snapshot recorded; before any, every node of the static `Config::voters` votes (today's
//! clusters work unchanged). [`Configs`] keeps that list for the log (`entries.rs` tells it of
//! every push, truncation, compaction and installed snapshot), and [`Raft`] re-reads the
//! latest whenever it changed (`Raft::adopt_membership`).
//!
//! # Who counts
//!
//! Only voters, and only those of the configuration of the node that counts: the PreVote and
//! Vote tallies, the commit rule, the lease, CheckQuorum and ReadIndex are majorities of
//! `Membership::voters` (`Raft::quorum_value`, `Raft::count_grant`).
//!
//! # Replica identities (spec §8.5)
//!
//! A CONFIG names each member as a replica: its node id and its replica id
//! ([`super::ReplicaId`]), drawn when the replica started without state and kept with its
//! state. A grant or an acknowledgement counts only if the counter's configuration names its
//! sender with the replica id the answer carries ([`Membership::counts`]); a node counts
//! itself, and campaigns, only if its configuration names its own replica id. So a replica
//! that lost its state and came back is a *new server*: the old one is a server that crashed
//! for ever (its votes and acknowledgements stay counted where they were, as a crashed
//! server's do), and the new one counts for nothing until a leader removes the old, adds the
//! new as a learner, and promotes it once caught up (thesis §4.2.1). Safety is then Raft's
//! own (thesis §4), for any configuration: no rejoin quorum is involved. The static
//! configuration (no CONFIG in the log yet) names no replica ids: every static voter counts
//! whatever replica id it answers with, and a replica without state rejoins it by spec §8.5
//! rules 1–7. The first CONFIG a leader writes names, for every voter it keeps, the replica
//! id it heard from it ([`MembershipError::ReplicaUnknown`] until it has). Learners receive Appends
//! and snapshots like any follower (thesis §4.2.1: a new server catches up before it can slow
//! a majority down), but never start a (pre-)election and their grants count for nobody.
//! A node acts on messages from nodes outside its configuration (thesis §4.1): a new member
//! hears from the leader before it has the entry that adds it, and a removed one answers until
//! it learns that it was removed.
//!
//! # One change at a time, and only when it is safe ([`Raft::propose_membership`])
//!
//! A single-server change keeps every majority of the old voters overlapping every majority
//! of the new ones, so no two leaders of one term can be elected by the two. That argument
//! holds between *consecutive* configurations only, so a leader proposes a change only when
//! - its previous CONFIG is committed (at most one change pending, thesis §4.1), and
//! - it has committed an entry of its own term (its no-op). Ongaro's correction (raft-dev,
//!   2015): without it, a leader of term 1 may append change C1 and be deposed before C1
//!   commits; a leader of term 2 that never saw C1 appends C2 and commits it with a majority
//!   of C2; the leader of term 1 comes back (term 3), with C1 in its log elected by a majority
//!   of C1 that overlaps no majority of C2, and commits C1 over C2: two configurations differ
//!   from their common ancestor by two servers, and committed entries are lost. Once a leader
//!   has committed an entry of its term, every configuration a later leader can hold descends
//!   from its own.
//!
//! A learner is promoted only once caught up ([`CATCH_UP_ENTRIES_MAX`]), so promoting it does
//! not make the shard wait on a node with an empty log. A leader that the committed
//! configuration no longer names as a voter steps down (thesis §4.2.2); until then it
//! replicates and commits without counting itself. A node that is no longer a voter starts
//! no (pre-)elections; one that does not know yet that it was removed is kept from disrupting
//! the shard by PreVote and leader stickiness (thesis §4.2.3): the voters hear from their
//! leader and refuse it.

use std::fmt;
use std::sync::Arc;

use udplock_protocol::{
    LogCommand, LogCommandKind, ReplicaRef, Replicas, CONFIG_MEMBERS_MAX, CONFIG_MEMBER_LEN,
};

use super::replication::Progress;
use super::snapshot::SnapshotSend;
use super::{MembershipChange, NodeId, NotLeader, Raft, ReplicaId, Role};
use crate::core::time::Instant;

/// How far behind the leader's last index a learner's matched index may be for the learner to
/// be promoted: "caught up" (thesis §4.2.1 asks for a learner that would not hold the shard up
/// once it votes). 64 entries: about two full Appends of a busy shard, a few round trips
/// of replication; a learner that matched at least once (so its log agrees with the leader's)
/// and is this close finishes within a heartbeat round or two. A larger bound would let a
/// promoted voter hold up commits while it catches up; a smaller one could starve a learner
/// under steady load. Promoting one further behind is refused ([`MembershipError::NotCaughtUp`]).
pub const CATCH_UP_ENTRIES_MAX: u64 = 64;

/// A shard's configuration: who votes, who only learns (spec §8.5, "Configuration"), and
/// under which replica ids (spec §8.5, "Replica identities").
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Membership {
    /// At least one; majorities are of these.
    pub voters: Vec<NodeId>,
    /// Receive the log; never vote, never count.
    pub learners: Vec<NodeId>,
    /// The replica id the configuration names each member with, one per member (a learner's
    /// may be 0: not known yet); `None` for the static configuration, which names none: a
    /// static voter counts with any replica id.
    pub replicas: Option<Vec<(NodeId, ReplicaId)>>,
}

impl Membership {
    /// Every node votes, none learns (the static configuration).
    pub fn of_voters(voters: &[NodeId]) -> Membership {
        Membership {
            voters: voters.to_vec(),
            learners: Vec::new(),
            replicas: None,
        }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// The replica id this configuration names `id` with: `None` for a node it does not
    /// name, or for any node in the static configuration (which names no replica ids).
    pub fn replica_of(&self, id: NodeId) -> Option<ReplicaId> {
        let replicas = self.replicas.as_ref()?;
        replicas.iter().find(|m| m.0 == id).map(|m| m.1)
    }

    /// Whether a grant or an acknowledgement of replica `replica` of node `id` counts in
    /// this configuration: `id` is a voter, named with `replica` (any replica of a voter of
    /// the static configuration counts). Spec §8.5, "Replica identities".
    /// Replica id 0 names no replica and never counts.
    pub fn counts(&self, id: NodeId, replica: ReplicaId) -> bool {
        replica != 0
            && self.is_voter(id)
            && match &self.replicas {
                None => true,
                Some(_) => self.replica_of(id) == Some(replica),
            }
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Votes (or acknowledgements) that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration a log entry's data sets, if it is a CONFIG command (spec §8.7).
    pub fn of_entry(data: &[u8]) -> Option<Membership> {
        // Every entry pushed comes here: the kind byte first (a CONFIG decodes only with
        // it), so the other commands are not decoded twice (their apply decodes them).
        if data.first() != Some(&LogCommandKind::Config.to_wire()) {
            return None;
        }
        match LogCommand::decode(data) {
            Ok(LogCommand::Config { voters, learners }) => Some(Membership {
                voters: voters.iter().map(|m| m.node).collect(),
                learners: learners.iter().map(|m| m.node).collect(),
                replicas: Some(
                    voters
                        .iter()
                        .chain(learners.iter())
                        .map(|m| (m.node, m.replica))
                        .collect(),
                ),
            }),
            _ => None,
        }
    }

    /// The CONFIG command (spec §8.7) that sets this configuration: a log entry's data.
    /// Panics on a configuration the command cannot hold (the static one, which names no
    /// replica ids; callers check the rest with [`Membership::after`] and
    /// `Raft::propose_membership`).
    pub fn to_entry(&self) -> Vec<u8> {
        let named = |ids: &[NodeId]| -> Vec<ReplicaRef> {
            ids.iter()
                .map(|&node| ReplicaRef {
                    node,
                    replica: self.replica_of(node).expect("every member named"),
                })
                .collect()
        };
        let (voters, learners) = (named(&self.voters), named(&self.learners));
        let mut voter_bytes = vec![0u8; CONFIG_MEMBER_LEN * voters.len()];
        let mut learner_bytes = vec![0u8; CONFIG_MEMBER_LEN * learners.len()];
        let command = LogCommand::Config {
            voters: Replicas::write(&voters, &mut voter_bytes).expect("sized"),
            learners: Replicas::write(&learners, &mut learner_bytes).expect("sized"),
        };
        let mut data = vec![0u8; command.encoded_len()];
        let len = command.encode(&mut data).expect(
            "a configuration of at least one voter, distinct non-zero ids, voters' replica ids \
             non-zero, bounded",
        );
        assert!(len == data.len());
        data
    }

    /// The configuration after `change`, or why the change does not apply to this one (the
    /// checks that depend on the configuration alone; the leader checks the rest). The
    /// members it keeps keep the replica ids this one names; the member the change adds or
    /// promotes, and every member if this is the static configuration, are named with
    /// replica 0, for the leader to fill in (`Raft::propose_membership`).
    pub fn after(&self, change: MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if id == 0 {
                    return Err(MembershipError::NodeIdZero);
                }
                if self.contains(id) {
                    return Err(MembershipError::AlreadyMember(id));
                }
                if self.voters.len() + self.learners.len() >= CONFIG_MEMBERS_MAX {
                    return Err(MembershipError::TooManyMembers);
                }
                next.learners.push(id);
            }
            MembershipChange::Promote(id) => {
                if !self.is_learner(id) {
                    return Err(MembershipError::NotALearner(id));
                }
                next.learners.retain(|&l| l != id);
                next.voters.push(id);
            }
            MembershipChange::Remove(id) => {
                if !self.contains(id) {
                    return Err(MembershipError::NotAMember(id));
                }
                if self.voters == [id] {
                    return Err(MembershipError::LastVoter(id));
                }
                next.voters.retain(|&v| v != id);
                next.learners.retain(|&l| l != id);
            }
        }
        assert!(!next.voters.is_empty());
        let changed = match change {
            MembershipChange::AddLearner(id) | MembershipChange::Promote(id) => Some(id),
            MembershipChange::Remove(_) => None,
        };
        let replicas = next
            .members()
            .map(|id| {
                let kept = (Some(id) != changed).then(|| self.replica_of(id)).flatten();
                (id, kept.unwrap_or(0))
            })
            .collect();
        next.replicas = Some(replicas);
        Ok(next)
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.replicas {
            None => write!(
                f,
                "voters {:?} (static), learners {:?}",
                self.voters, self.learners
            ),
            Some(replicas) => {
                let named = |ids: &[NodeId]| -> Vec<String> {
                    ids.iter()
                        .map(|&id| {
                            let replica = replicas.iter().find(|m| m.0 == id).map_or(0, |m| m.1);
                            format!("{id}:{replica:x}")
                        })
                        .collect()
                };
                write!(
                    f,
                    "voters {:?}, learners {:?}",
                    named(&self.voters),
                    named(&self.learners)
                )
            }
        }
    }
}

/// One member of a configuration as [`Raft::member_replicas`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberReplicas {
    pub id: NodeId,
    pub voter: bool,
    /// The replica id the configuration names it with (`None`: the static configuration
    /// names none; `Some(0)`: a learner not known yet).
    pub named: Option<ReplicaId>,
    /// The replica id the leader last heard from it (`None`: not a leader, or not heard).
    pub heard: Option<ReplicaId>,
}

impl MemberReplicas {
    /// A voter whose node answers with another replica than the one named: its replica
    /// lost its state, and the voter counts for nothing until it is replaced.
    pub fn replaced(&self) -> bool {
        self.voter
            && matches!((self.named, self.heard), (Some(named), Some(heard)) if named != heard)
    }
}

/// The configuration a snapshot's data records (as of its last index), read by the state
/// machine that wrote it ([`Raft::set_snapshot_membership`]): `None` for a snapshot that
/// records none (the static configuration then holds).
pub type SnapshotMembership = Arc<dyn Fn(&[u8]) -> Option<Membership> + Send + Sync>;

/// A [`SnapshotMembership`] in a `Raft` (which is `Debug`).
#[derive(Clone)]
pub(super) struct MembershipOf(pub(super) SnapshotMembership);

impl fmt::Debug for MembershipOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotMembership")
    }
}

/// Why a leader refuses a membership change ([`Raft::propose_membership`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// Only the leader changes the configuration (or it is handing leadership over).
    NotLeader(NotLeader),
    /// The previous change, at this index, is not committed yet: one at a time (thesis §4.1).
    ChangePending { index: u64 },
    /// The leader has not committed an entry of its own term yet (its no-op): a change now
    /// could conflict with one of an earlier leader (Ongaro, raft-dev 2015; module docs).
    NoCommitInTerm,
    /// AddLearner of a node already a voter or learner.
    AlreadyMember(NodeId),
    /// Remove of a node that is neither voter nor learner.
    NotAMember(NodeId),
    /// Promote of a node that is not a learner.
    NotALearner(NodeId),
    /// Promote of a learner whose log is not within [`CATCH_UP_ENTRIES_MAX`] of the leader's
    /// last index (`matched`: what it is known to hold; 0 before it first answered).
    NotCaughtUp { id: NodeId, matched: u64, last: u64 },
    /// Promote of a learner caught up by what it matched, but not heard from within two
    /// heartbeat intervals: its replica may have lost its state since
    /// ([`Raft::learner_caught_up`]). Nothing changed; retry once it answers again.
    NotHeardLately(NodeId),
    /// Remove of the only voter: nobody could ever commit again.
    LastVoter(NodeId),
    /// AddLearner beyond `CONFIG_MEMBERS_MAX` members (spec §8.7).
    TooManyMembers,
    /// Node id 0 names no node.
    NodeIdZero,
    /// The change would name this node as a voter, but the leader knows no replica id for
    /// it: it has not heard from it in this term (spec §8.5, "Replica identities": a voter
    /// counts only under the replica id the configuration names, so one must be named).
    /// Nothing changed; retry once the node has answered the leader.
    ReplicaUnknown(NodeId),
    /// Remove of a node that would leave fewer than a majority of the remaining voters that
    /// the leader (itself included, if it stays) heard from, under the replica ids named,
    /// within the longest election timeout: the new configuration could commit nothing until
    /// more of them answer, and if they lost their state never again (etcd refuses such a
    /// removal too). Nothing changed; `live` of `voters` answered.
    LiveMajorityLost {
        id: NodeId,
        live: usize,
        voters: usize,
    },
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::NotLeader(not_leader) => write!(f, "{not_leader}"),
            MembershipError::ChangePending { index } => {
                write!(
                    f,
                    "the previous membership change (entry {index}) is not committed"
                )
            }
            MembershipError::NoCommitInTerm => {
                write!(f, "the leader has not committed an entry of its term yet")
            }
            MembershipError::AlreadyMember(id) => write!(f, "node {id} is already a member"),
            MembershipError::NotAMember(id) => write!(f, "node {id} is not a member"),
            MembershipError::NotALearner(id) => write!(f, "node {id} is not a learner"),
            MembershipError::NotCaughtUp { id, matched, last } => write!(
                f,
                "learner {id} holds the log through {matched} of {last}: not within \
                 {CATCH_UP_ENTRIES_MAX} entries"
            ),
            MembershipError::NotHeardLately(id) => write!(
                f,
                "learner {id} has not answered within two heartbeat intervals: it may have \
                 lost its state since it caught up (nothing changed)"
            ),
            MembershipError::LastVoter(id) => write!(f, "node {id} is the last voter"),
            MembershipError::TooManyMembers => {
                write!(f, "at most {CONFIG_MEMBERS_MAX} voters and learners")
            }
            MembershipError::NodeIdZero => write!(f, "node id 0 names no node"),
            MembershipError::LiveMajorityLost { id, live, voters } => write!(
                f,
                "removing node {id} would leave {live} of {voters} voters that answered the \
                 leader recently: no majority (nothing changed)"
            ),
            MembershipError::ReplicaUnknown(id) => write!(
                f,
                "no replica id known for node {id}: the leader has not heard from it (nothing \
                 changed)"
            ),
        }
    }
}

impl std::error::Error for MembershipError {}

/// The configurations a log holds: the one as of the snapshot (or the static one) and every
/// CONFIG entry after it, in index order. Owned by the log (`entries.rs`).
#[derive(Debug)]
pub(super) struct Configs {
    /// As of the snapshot's last index; the static one before any CONFIG.
    base: Membership,
    /// `(index, configuration)` of each CONFIG entry after the snapshot, ascending.
    logged: Vec<(u64, Membership)>,
    /// Bumped on every change of `latest()`, so `Raft` re-reads it only then.
    generation: u64,
}

impl Configs {
    pub(super) fn new(base: Membership) -> Configs {
        Configs {
            base,
            logged: Vec::new(),
            generation: 0,
        }
    }

    /// The configuration in force: the latest in the log.
    pub(super) fn latest(&self) -> &Membership {
        self.logged.last().map_or(&self.base, |(_, m)| m)
    }

    /// The index of the latest CONFIG entry still in the log (0: none after the snapshot).
    pub(super) fn latest_index(&self) -> u64 {
        self.logged.last().map_or(0, |&(index, _)| index)
    }

    /// The configuration as of `index` (at or after the snapshot's last index).
    pub(super) fn at(&self, index: u64) -> &Membership {
        self.logged
            .iter()
            .rev()
            .find(|&&(at, _)| at <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// An entry was appended at `index`.
    pub(super) fn pushed(&mut self, index: u64, data: &[u8]) {
        assert!(self.logged.last().is_none_or(|&(at, _)| at < index));
        if let Some(membership) = Membership::of_entry(data) {
            self.logged.push((index, membership));
            self.generation += 1;
        }
    }

    /// The entries from `index` on were removed.
    pub(super) fn truncated(&mut self, index: u64) {
        let before = self.logged.len();
        self.logged.retain(|&(at, _)| at < index);
        if self.logged.len() != before {
            self.generation += 1;
        }
    }

    /// The entries through `index` were compacted into a snapshot: its configuration is the
    /// one in force at `index`.
    pub(super) fn compacted(&mut self, index: u64) {
        let base = self.at(index).clone();
        self.logged.retain(|&(at, _)| at > index);
        self.base = base;
    }

    /// A snapshot through `index` was installed, recording `membership` (`None`: a snapshot
    /// that records none, taken before any CONFIG: the static one, `fallback`). `kept`: the
    /// entries after it stayed.
    pub(super) fn installed(
        &mut self,
        index: u64,
        membership: Option<Membership>,
        fallback: &Membership,
        kept: bool,
    ) {
        if kept {
            self.logged.retain(|&(at, _)| at > index);
        } else {
            self.logged.clear();
        }
        self.base = membership.unwrap_or_else(|| fallback.clone());
        self.generation += 1;
    }
}

impl Raft {
    /// The configuration this node uses now: the latest in its log (see the module docs).
    pub fn membership(&self) -> &Membership {
        self.log.configs().latest()
    }

    /// How to read the configuration a snapshot from a leader records (spec §8.5: a snapshot
    /// is an image of the state and the configuration as of its last index). Without one an
    /// installed snapshot records none: the static `Config::voters` hold after it.
    pub fn set_snapshot_membership(&mut self, of: SnapshotMembership) {
        self.snapshot_membership = Some(MembershipOf(of));
    }

    /// The configuration as of `index` (at or after the snapshot's last index, at most the
    /// last index): what a snapshot through `index` records.
    pub fn membership_at(&self, index: u64) -> &Membership {
        assert!(index >= self.log.snapshot().index && index <= self.log.last_index());
        self.log.configs().at(index)
    }

    /// Leader only: proposes one single-server change of the shard's configuration, which
    /// takes effect here at once (thesis §4.1) and on every replica as its log gets the entry.
    /// Returns the entry's index. Refused (see [`MembershipError`]) unless this node leads,
    /// is not handing leadership over, has committed an entry of its term, has no change
    /// pending, and the change applies: a learner added that is not a member, a learner
    /// promoted that is caught up, a member removed that is not the last voter, and every
    /// voter of the new configuration named with a replica id (module docs, "Replica
    /// identities"; [`MembershipError::ReplicaUnknown`]).
    pub fn propose_membership(
        &mut self,
        now: Instant,
        change: MembershipChange,
    ) -> Result<u64, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader(NotLeader {
                leader_hint: self.leader,
            }));
        }
        if let Some(transfer) = self.transfer {
            return Err(MembershipError::NotLeader(NotLeader {
                leader_hint: Some(transfer.to),
            }));
        }
        if self.commit_index < self.noop_index {
            return Err(MembershipError::NoCommitInTerm);
        }
        let pending = self.log.configs().latest_index();
        if pending > self.commit_index {
            return Err(MembershipError::ChangePending { index: pending });
        }
        let mut next = self.membership().after(change)?;
        if let MembershipChange::Promote(id) = change {
            if !self.learner_log_caught_up(id) {
                let last = self.log.last_index();
                let matched = self.learner_progress(id).map_or(0, |p| p.matched);
                return Err(MembershipError::NotCaughtUp { id, matched, last });
            }
            if !self.learner_heard_lately(id, now) {
                return Err(MembershipError::NotHeardLately(id));
            }
        }
        // Spec §8.5, "Replica identities": name every member the change adds or promotes,
        // and every member of the static configuration it leaves, with the replica id the
        // leader heard from it (its own, for itself). `matched` above came from answers of
        // that very replica: a replica id that changes starts its progress over.
        let heard = |id: NodeId| -> ReplicaId {
            if id == self.config.id {
                self.hard.replica
            } else {
                // Not a departing replica's (removed, not yet told): the node added back
                // may hold a new one by now.
                self.progress
                    .iter()
                    .find(|p| p.id == id && p.departing.is_none())
                    .map_or(0, |p| p.replica)
            }
        };
        let mut replicas = next.replicas.take().expect("after names replicas");
        for (id, replica) in &mut replicas {
            if *replica == 0 {
                *replica = heard(*id);
            }
            if *replica == 0 && next.is_voter(*id) {
                return Err(MembershipError::ReplicaUnknown(*id));
            }
        }
        next.replicas = Some(replicas);
        if let MembershipChange::Remove(id) = change {
            let live = next
                .voters
                .iter()
                .filter(|&&v| self.answers_as(v, next.replica_of(v), now))
                .count();
            if live * 2 <= next.voters.len() {
                let voters = next.voters.len();
                return Err(MembershipError::LiveMajorityLost { id, live, voters });
            }
        }
        log::info!(
            "raft {}: proposing {change:?} in term {}: {next}",
            self.config.id,
            self.hard.term
        );
        // Single-server change (thesis §4.1): the voters differ by at most one node, so every
        // majority of the old overlaps every majority of the new (`lease.rs`).
        let current = self.membership();
        let differ = current
            .voters
            .iter()
            .filter(|v| !next.is_voter(**v))
            .count()
            + next
                .voters
                .iter()
                .filter(|v| !current.is_voter(**v))
                .count();
        assert!(differ <= 1, "{change:?}: {current} → {next}");
        let index = self.append_own(next.to_entry().into());
        assert!(self.log.configs().latest_index() == index);
        self.adopt_membership(now);
        self.flush_pending = true;
        // A leader alone is its own majority.
        self.advance_commit();
        self.step_down_if_removed(now);
        self.check_invariants();
        Ok(index)
    }

    /// Spec §8.1, "The first configuration": the bootstrap node of a joined cluster, leading
    /// a shard whose log names no configuration yet and whose static configuration is itself
    /// alone, writes that configuration into the log, naming its replica id. From then on the
    /// shard's configuration is explicit: no replica of a joined cluster ever counts static
    /// voters after a restart, and one the bootstrap node holds again later (created when a
    /// leader added it back) cannot mistake the bootstrap's static voters for its own. `None`
    /// (nothing appended) unless all of that holds.
    pub fn propose_first_membership(&mut self, now: Instant) -> Option<u64> {
        let me = self.config.id;
        let alone = self.config.voters == [me];
        if self.role != Role::Leader || self.transfer.is_some() || !alone {
            return None;
        }
        if self.membership().replicas.is_some() {
            return None;
        }
        let first = Membership {
            voters: vec![me],
            learners: Vec::new(),
            replicas: Some(vec![(me, self.hard.replica)]),
        };
        assert_ne!(self.hard.replica, 0, "a replica knows its own id");
        log::info!(
            "raft {me}: the first configuration, in term {}: {first}",
            self.hard.term
        );
        let index = self.append_own(first.to_entry().into());
        assert!(self.log.configs().latest_index() == index);
        self.adopt_membership(now);
        self.flush_pending = true;
        self.advance_commit();
        self.check_invariants();
        Some(index)
    }

    /// Leader only: whether voter `id` of its configuration answered within the longest
    /// election timeout as the replica the configuration names (itself: always). What a
    /// placement driver counts as live, whatever the membership layer says (a node that
    /// announced its leave and still runs, or one held dead across an asymmetric fault,
    /// still answers); the rule a removal must leave a majority of (`LiveMajorityLost`).
    pub fn voter_heard_lately(&self, id: NodeId, now: Instant) -> bool {
        self.role == Role::Leader
            && self.membership().is_voter(id)
            && self.answers_as(id, self.membership().replica_of(id), now)
    }

    /// Whether node `id` is this node, or answered within the longest election timeout as
    /// `replica` (the id a configuration names; `None`: a configuration of no replica ids).
    fn answers_as(&self, id: NodeId, replica: Option<ReplicaId>, now: Instant) -> bool {
        let window = self.config.election_timeout_max;
        id == self.config.id
            || self.progress.iter().any(|p| {
                p.id == id
                    && p.departing.is_none()
                    && now.saturating_since(p.heard_at) <= window
                    && replica == Some(p.replica)
            })
    }

    /// Leader only: whether learner `id` is caught up (thesis §4.2.1) and may be promoted now:
    /// its log is ([`Raft::learner_log_caught_up`]) and it answered lately
    /// ([`Raft::learner_heard_lately`]). The one rule [`Raft::propose_membership`] accepts a
    /// `Promote` by, so a placement driver that asks it first proposes only promotions the
    /// leader accepts.
    pub fn learner_caught_up(&self, id: NodeId, now: Instant) -> bool {
        self.learner_log_caught_up(id) && self.learner_heard_lately(id, now)
    }

    /// The progress of learner `id`'s present replica (not of one removed and departing).
    fn learner_progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress
            .iter()
            .find(|p| p.id == id && p.departing.is_none())
    }

    /// Leader only: whether learner `id` has matched the leader's log at least once (so its
    /// log agrees with the leader's) and holds it through at least [`CATCH_UP_ENTRIES_MAX`]
    /// entries before the leader's last, from the CONFIG that made it a learner on.
    fn learner_log_caught_up(&self, id: NodeId) -> bool {
        let last = self.log.last_index();
        // And it holds the CONFIG that made it a learner (the latest: one change at a time).
        // Found by `udplock sim --seed 124 --nodes 3` (a joined run): a node removed and added
        // again acknowledged, with the replica it was about to drop, entries just short of
        // the CONFIG adding it back; promoted on those, it then applied its removal and
        // dropped that replica (the latest CONFIG in its log did not name it), leaving a
        // voter that no longer existed. Holding the CONFIG, a replica is never dropped
        // (spec §8.1, "Replicas on demand").
        let added_at = self.log.configs().latest_index();
        self.role == Role::Leader
            && self.membership().is_learner(id)
            && self.learner_progress(id).is_some_and(|p| {
                p.matched != 0 && p.matched >= added_at && last - p.matched <= CATCH_UP_ENTRIES_MAX
            })
    }

    /// Leader only: whether learner `id` answered within two heartbeat intervals. What it
    /// matched may be older than its replica: a node whose replica lost its state (a
    /// `memory` node restarted, a disk lost) holds a new replica, or none yet, and a promotion
    /// on the old one's answers names a voter that no longer exists. Going from one voter to
    /// two, that leaves a configuration no majority of which can ever answer again, which no
    /// leader could undo (found by `udplock sim --seed 438 --nodes 5 --joined`: a learner's
    /// node crashed without its state, the leader promoted it 800 ms later, and the shard had
    /// no leader to the end). Answering lately leaves a window of two heartbeats, not of
    /// however long the node was away.
    fn learner_heard_lately(&self, id: NodeId, now: Instant) -> bool {
        let recent = self.config.heartbeat_interval.as_micros().saturating_mul(2);
        self.learner_progress(id)
            .is_some_and(|p| now.saturating_since(p.heard_at).as_micros() < recent)
    }

    /// Re-reads the configuration if the log's changed since the last call: the quorum, and
    /// on a leader one progress per other member (kept for those that stay, fresh for new
    /// ones: probing from after the last entry). Grants from nodes that no longer vote stop
    /// counting.
    pub(super) fn adopt_membership(&mut self, now: Instant) {
        let generation = self.log.configs().generation();
        if generation == self.membership_generation {
            return;
        }
        self.membership_generation = generation;
        let membership = self.log.configs().latest().clone();
        self.quorum = membership.quorum();
        self.grants
            .retain(|&(id, replica)| membership.counts(id, replica));
        log::debug!("raft {}: configuration {membership}", self.config.id);
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            let mut progress =
                Vec::with_capacity(membership.voters.len() + membership.learners.len());
            for id in membership.members().filter(|&id| id != self.config.id) {
                let voter = membership.is_voter(id);
                // A node added back while its removed replica was still departing starts
                // afresh: what the leader heard came from that replica, which its node may
                // have dropped since (spec §8.5, "Replica identities": a new server).
                let kept = self
                    .progress
                    .iter()
                    .position(|p| p.id == id && p.departing.is_none());
                match kept {
                    Some(position) => {
                        let mut kept = self.progress[position].clone();
                        kept.voter = voter;
                        kept.departing = None;
                        progress.push(kept);
                    }
                    None => progress.push(Progress::new(id, voter, next, now)),
                }
            }
            // A node this configuration removed is still sent the log until it learns that
            // (`release_departed`): it drops its replica then (`core::node`).
            let removed_at = self.log.configs().latest_index();
            for old in &self.progress {
                if removed_at > 0 && !membership.contains(old.id) {
                    let mut departing = old.clone();
                    departing.voter = false;
                    departing.departing = Some(old.departing.map_or((removed_at, None), |d| d));
                    progress.push(departing);
                }
            }
            self.progress = progress;
            // The lease starts afresh from a round the new voters acknowledge (`lease.rs`):
            // one round trip without it, and a lease always rests on the configuration in
            // force.
            self.lease_start = None;
            self.lease_from_round = self.lease_from_round.max(self.round + 1);
            if self.transfer.is_some_and(|t| !membership.is_voter(t.to)) {
                // The target no longer votes: it could not win. Lead on; lease from a round
                // that names nobody (as when a transfer is abandoned, `lease.rs`).
                self.transfer = None;
                self.lease_from_round = self.round + 1;
            }
        }
    }

    /// Leader: forgets each node the latest configuration removed (see
    /// `Progress::departing`) once it holds the CONFIG that removed it and acknowledged a
    /// round whose Appends carried a commit index covering it: it then knows it was removed.
    /// Thesis §4.2.2 leaves the removed server to be shut down; a joined cluster's node drops
    /// its replica when it applies its removal, so it must get to apply it.
    pub(super) fn release_departed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let (commit, round) = (self.commit_index, self.round);
        let mut departing = false;
        for p in &mut self.progress {
            if let Some((index, None)) = p.departing {
                if commit >= index {
                    p.departing = Some((index, Some(round)));
                }
            }
            departing |= p.departing.is_some();
        }
        if !departing {
            // Nothing to release (the usual case: this runs after every input).
            return;
        }
        self.progress.retain(|p| match p.departing {
            Some((index, Some(round))) => p.matched < index || p.acked_round <= round,
            _ => true,
        });
    }

    /// Thesis §4.2.2: a leader that the committed configuration no longer names as a voter
    /// steps down once that configuration is committed (until then it leads, without
    /// counting itself in any majority).
    pub(super) fn step_down_if_removed(&mut self, now: Instant) {
        if self.role != Role::Leader
            || self.membership().counts(self.config.id, self.hard.replica)
            || self.log.configs().latest_index() > self.commit_index
        {
            return;
        }
        log::info!(
            "raft {}: stepping down in term {}: no longer a voter ({})",
            self.config.id,
            self.hard.term,
            self.membership()
        );
        self.become_follower(now, self.hard.term, None);
    }

    /// Whether this node may start a (pre-)election: a voter of its configuration, or of
    /// the committed one before it while the latest, which removes it, is not known
    /// committed. The latter case is a leader that proposed its own removal and lost its
    /// leadership before the removal committed: its log may be the only one that is up to
    /// date, so without it the shard could stay without a leader. It campaigns as any
    /// candidate does, counting the voters of its latest configuration (not itself), whose
    /// majorities overlap those of the one before (single-server change); once elected it
    /// commits its removal and steps down (thesis §4.2.2).
    ///
    /// "Voter" is by replica (spec §8.5, "Replica identities"): a configuration that names
    /// this node with another replica id names a replica this one replaced, and this one
    /// waits to be added and promoted.
    pub(super) fn may_campaign(&self) -> bool {
        let (id, replica) = (self.config.id, self.hard.replica);
        let configs = self.log.configs();
        configs.latest().counts(id, replica)
            || (configs.latest_index() > self.commit_index
                && configs.at(self.commit_index).counts(id, replica))
    }

    /// For each member of the configuration in force, the replica id it names and, on a
    /// leader, the one the leader last heard from it (its own for itself; `None` elsewhere,
    /// and for a follower not heard from yet in this term). A placement driver reads it to
    /// find a voter whose replica was replaced (named ≠ heard): that voter counts for
    /// nothing until it is removed, added back as a learner and promoted (spec §8.5,
    /// "Replica identities").
    pub fn member_replicas(&self) -> Vec<MemberReplicas> {
        self.membership()
            .members()
            .map(|id| self.member_replica(id))
            .collect()
    }

    /// Whether `id` is a voter whose replica was replaced ([`MemberReplicas::replaced`]),
    /// without collecting the others: what a placement driver asks of each voter.
    pub fn voter_replaced(&self, id: NodeId) -> bool {
        self.member_replica(id).replaced()
    }

    /// [`Raft::member_replicas`]' entry for node `id`.
    fn member_replica(&self, id: NodeId) -> MemberReplicas {
        let membership = self.membership();
        let heard = if self.role != Role::Leader {
            None
        } else if id == self.config.id {
            Some(self.hard.replica)
        } else {
            self.progress
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.replica)
                .filter(|&r| r != 0)
        };
        MemberReplicas {
            id,
            voter: membership.is_voter(id),
            named: membership.replica_of(id),
            heard,
        }
    }
}

impl Progress {
    /// What a new leader (or a leader that adds a member) knows of a follower: nothing yet;
    /// it probes from after its last entry, `next`.
    pub(super) fn new(id: NodeId, voter: bool, next: u64, now: Instant) -> Progress {
        Progress {
            id,
            voter,
            next,
            matched: 0,
            probing: true,
            probe_sent: false,
            acked_round: 0,
            life: None,
            life_floor: 0,
            replica: 0,
            heard_at: now,
            snapshot: SnapshotSend::default(),
            departing: None,
        }
    }
}
