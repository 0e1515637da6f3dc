//! Named scenarios: the classic ways a replicated lock service goes wrong, each forced by a
//! script instead of random faults, then judged by every checker of an ordinary run plus an
//! assertion that the dangerous situation really arose (a script that never got there proves
//! nothing, so that is a failure too).
//!
//! A script is a small state machine: after every event [`Script::step`] looks at the cluster
//! and, once its condition holds, acts (blocks links, crashes, pauses, probes a node with a
//! STATUS, queues a scripted client's request) and moves to its next step. Partitions apply
//! at delivery too, so a block also drops what is already in flight.

use super::check::Outcome;
use super::clients::{Action, CLIENT_IDS, RESOURCES};
use crate::core::lock_table::Command;
use udplock_protocol::{LogCommand, Status};

use super::{Sim, SimConfig, SimFailure, CLIENT_ENDPOINT};
use crate::core::lock_table;
use crate::core::raft::{self, NodeId, Role};
use crate::core::time::{Duration, Instant};

/// The named scenarios (one test each in `tests/it/sim.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A leader is paused past its lease while the others elect a new one; on waking it
    /// still believes it leads and is at once asked a STATUS: it must refuse (its lease
    /// expired on its own clock), never answer from its stale table.
    StaleLeaderRead,
    /// Raft §5.4.2, Figure 8: an entry of an old term is stored on a majority by a later
    /// leader that then crashes before its own entry commits; it must not have counted as
    /// committed, because a leader of an intermediate term overwrites it (5 nodes, one entry
    /// per Append so that the old entry and the new leader's no-op travel apart).
    Figure8,
    /// A rotating partial partition: every 700 ms the current leader and one follower lose
    /// each other while both still reach the third node. Service must go on, safely.
    PartialPartition,
    /// A holder's lease and a waiter's wait deadline both pass while the leader is paused;
    /// the new leader applies them late. The waiter whose deadline came first must be timed
    /// out, not granted; a later waiter gets the lock with a new token, never overlapping.
    LateHandOff,
    /// The leader commits a command and dies before any follower learns the commit index. The
    /// new leader must not serve a STATUS before it has applied that committed prefix.
    NewLeaderUnapplied,
    /// An acquire commits, its grant is lost, the leader dies; the client retransmits to the
    /// new leader and must get the original answer (same token, hold count 1).
    DuplicateAfterFailover,
    /// Issue 7 item 2 (spec §7.1.5): a RELEASE is answered OVERLOADED until its deadline (its
    /// session has an ACQUIRE queued that the client gave up on, and a session may have one
    /// queued) while a copy of it is still in the network. That copy arrives once the queue
    /// entry is gone and frees the lock, and another client is granted it. The client must not
    /// go on believing it holds the lock, and settles the release before it touches the lock
    /// again.
    OverloadedRelease,
    /// Issue 7 item 7 (spec §7.1.5): a RELEASE whose copy numbered 18 was executed but whose
    /// answers were all lost is sent again before the client's next try-acquire of the lock.
    /// The remembered answer echoes attempt 18: the replay must go on with the next attempt
    /// number, or it drops that answer and the try-acquire gives up although the node answers
    /// every copy at once.
    ReleaseReplay,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::StaleLeaderRead,
        Scenario::Figure8,
        Scenario::PartialPartition,
        Scenario::LateHandOff,
        Scenario::NewLeaderUnapplied,
        Scenario::DuplicateAfterFailover,
        Scenario::OverloadedRelease,
        Scenario::ReleaseReplay,
    ];

    /// The test in `tests/it/sim.rs` that runs it.
    pub fn test_name(self) -> &'static str {
        match self {
            Scenario::StaleLeaderRead => "scenario_stale_leader_read",
            Scenario::Figure8 => "scenario_figure_8",
            Scenario::PartialPartition => "scenario_partial_partition",
            Scenario::LateHandOff => "scenario_late_hand_off",
            Scenario::NewLeaderUnapplied => "scenario_new_leader_unapplied",
            Scenario::DuplicateAfterFailover => "scenario_duplicate_after_failover",
            Scenario::OverloadedRelease => "scenario_overloaded_release",
            Scenario::ReleaseReplay => "scenario_release_replay",
        }
    }

    /// The run for `seed`.
    pub fn config(self, seed: u64) -> SimConfig {
        let (nodes, clients, resources, safety_ms) = match self {
            Scenario::StaleLeaderRead => (3, 4, 2, 4_000),
            Scenario::Figure8 => (5, 1, 1, 8_000),
            Scenario::PartialPartition => (3, 6, 2, 6_000),
            Scenario::LateHandOff => (3, 3, 1, 5_000),
            Scenario::NewLeaderUnapplied => (3, 6, 2, 4_000),
            Scenario::DuplicateAfterFailover => (3, 1, 1, 5_000),
            Scenario::OverloadedRelease => (3, 2, 2, 10_000),
            Scenario::ReleaseReplay => (3, 1, 1, 6_000),
        };
        SimConfig {
            seed,
            nodes,
            safety_phase: Duration::from_millis(safety_ms),
            liveness_phase: Duration::from_millis(3_000),
            faults: false,
            clients,
            resources,
            scenario: Some(self),
            clock_stops_during_pauses: false,
        }
    }

    pub(super) fn adjust(self, raft: &mut raft::Config) {
        if self == Scenario::Figure8 {
            raft.entries_per_append_max = 1;
        }
    }

    /// Limits of the lock table for this scenario.
    pub(super) fn adjust_table(self, table: &mut lock_table::Config) {
        if self == Scenario::OverloadedRelease {
            // One queued ACQUIRE per session: any other request of that session is answered
            // OVERLOADED while it waits.
            table.answers_per_session_max = 1;
        }
    }

    pub(super) fn scripted_clients(self) -> bool {
        matches!(
            self,
            Scenario::Figure8
                | Scenario::LateHandOff
                | Scenario::DuplicateAfterFailover
                | Scenario::OverloadedRelease
                | Scenario::ReleaseReplay
        )
    }
}

pub(super) struct Script {
    scenario: Scenario,
    step: u32,
    /// Nodes the script singled out (meaning per scenario).
    a: NodeId,
    b: NodeId,
    x: NodeId,
    /// A log index, a term, a token, a count (meaning per scenario).
    index: u64,
    term: u64,
    token: u64,
    count: u64,
    /// When the current step began.
    since: Instant,
}

/// The attempt number of the RELEASE copy that scenario ReleaseReplay delivers late.
const REPLAYED_ATTEMPT: u16 = 18;

/// First byte of a REQUEST log command.
fn is_request(data: &[u8]) -> bool {
    matches!(LogCommand::decode(data), Ok(LogCommand::Request { .. }))
}

impl Sim {
    /// The one node that leads with a valid lease, if there is one.
    fn stable_leader(&self) -> Option<NodeId> {
        let mut found = None;
        for n in &self.nodes {
            let Some(s) = n.shard.as_ref() else { continue };
            if n.paused_until.is_none() && s.raft().lease_valid(n.clock.local(self.now)) {
                if found.is_some() {
                    return None;
                }
                found = Some(n.id);
            }
        }
        found
    }

    fn shard_of(&self, id: NodeId) -> Option<&crate::core::shard::Shard> {
        self.nodes[(id - 1) as usize].shard.as_ref()
    }

    fn isolate(&mut self, id: NodeId) {
        for other in 1..=self.nodes.len() as u64 {
            if other != id {
                self.block_both(id, other);
            }
        }
        for c in 0..self.clients.len() as u64 {
            self.block_both(id, CLIENT_ENDPOINT + c);
        }
    }

    fn client_do(&mut self, client: usize, action: Action) {
        let local = self.clients[client].clock.local(self.now);
        self.clients[client].push_action(local, action);
        self.arm_client(client);
    }

    /// `client`'s latest operation: its request (as first sent) and its outcome.
    fn last_op(&self, client: usize) -> Option<(lock_table::Request<'static>, Outcome)> {
        self.hist
            .ops
            .iter()
            .rev()
            .find(|o| o.client == client)
            .map(|o| (o.request, o.outcome))
    }

    /// Whether `node`'s applied table shows `resource` without a holder.
    fn free_at(&self, node: NodeId, resource: usize) -> bool {
        self.shard_of(node)
            .and_then(|s| s.table())
            .is_some_and(|t| {
                t.read_status(Instant::ZERO, RESOURCES[resource])
                    .1
                    .is_empty()
            })
    }

    /// Cuts `client` off from every node, both ways.
    fn cut_client(&mut self, client: usize) {
        for node in 1..=self.nodes.len() as u64 {
            self.block_both(node, CLIENT_ENDPOINT + client as u64);
        }
    }

    /// The outcome of `client`'s latest operation.
    fn last_outcome(&self, client: usize) -> Option<Outcome> {
        self.hist
            .ops
            .iter()
            .rev()
            .find(|o| o.client == client)
            .map(|o| o.outcome)
    }
}

impl Script {
    pub fn new(scenario: Scenario) -> Script {
        Script {
            scenario,
            step: 0,
            a: 0,
            b: 0,
            x: 0,
            index: 0,
            term: 0,
            token: 0,
            count: 0,
            since: Instant::ZERO,
        }
    }

    fn next(&mut self, sim: &Sim) {
        self.step += 1;
        self.since = sim.now;
    }

    fn fail(&self, sim: &Sim, what: String) -> SimFailure {
        sim.fail(format!("scenario {:?}: {what}", self.scenario))
    }

    /// After every event.
    pub fn step(&mut self, sim: &mut Sim) -> Result<(), SimFailure> {
        if sim.healed {
            return Ok(());
        }
        let ms = |n: u64| Instant::ZERO + Duration::from_millis(n);
        match (self.scenario, self.step) {
            // ---- StaleLeaderRead ----
            (Scenario::StaleLeaderRead, 0) => {
                let Some(l) = sim.stable_leader() else {
                    return Ok(());
                };
                if sim.now >= ms(1_000) && !sim.hist.grants.is_empty() {
                    sim.pause(l, Duration::from_millis(1_200));
                    self.a = l;
                    self.term = sim.shard_of(l).expect("running").raft().term();
                    self.next(sim);
                }
            }
            // ---- Figure8 ----
            (Scenario::Figure8, 0) => {
                let Some(s1) = sim.stable_leader() else {
                    return Ok(());
                };
                let raft = sim.shard_of(s1).expect("running").raft();
                let settled = sim.nodes.iter().all(|n| {
                    n.shard
                        .as_ref()
                        .is_some_and(|s| s.raft().commit_index() == raft.last_index())
                });
                if sim.now >= ms(500) && settled {
                    self.a = s1;
                    self.b = s1 % sim.nodes.len() as u64 + 1;
                    self.index = raft.last_index() + 1;
                    self.term = raft.term();
                    for other in 1..=sim.nodes.len() as u64 {
                        if other != self.a && other != self.b {
                            sim.block_both(self.a, other);
                        }
                    }
                    sim.client_do(
                        0,
                        Action::Acquire {
                            resource: 0,
                            wait_ms: 0,
                            ttl_ms: 2_000,
                        },
                    );
                    self.next(sim);
                }
            }
            (Scenario::Figure8, 1) => {
                // Wait until s2 stored s1's new entry (and nobody else did).
                let stored = sim
                    .shard_of(self.b)
                    .and_then(|s| s.raft().entry(self.index))
                    .is_some_and(|e| e.term == self.term && is_request(&e.data));
                if stored {
                    sim.crash(self.a);
                    sim.isolate(self.a);
                    sim.isolate(self.b);
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(1_000) {
                    return Err(self.fail(sim, "s2 never stored s1's entry".into()));
                }
            }
            (Scenario::Figure8, 2) => {
                // A leader X of a later term among the other three: it holds a different
                // entry (its no-op) at the index. Crash it before it replicates anything.
                let x = (1..=sim.nodes.len() as u64).find(|&id| {
                    sim.shard_of(id).is_some_and(|s| {
                        s.raft().role() == Role::Leader && s.raft().term() > self.term
                    })
                });
                let Some(x) = x else { return Ok(()) };
                let entry = sim.shard_of(x).and_then(|s| s.raft().entry(self.index));
                let Some(entry) = entry else {
                    return Err(self.fail(sim, format!("leader {x} has no entry {}", self.index)));
                };
                self.x = x;
                self.count = entry.term; // X's term at the index
                sim.crash(x);
                sim.isolate(x);
                // s1 comes back; s1 and s2 reach everyone but X.
                sim.blocked.clear();
                sim.isolate(x);
                sim.start_node(self.a)?;
                self.next(sim);
            }
            // (Step 3 advances in `after_peer`.)
            (Scenario::Figure8, 3) if sim.now > self.since + Duration::from_millis(3_000) => {
                return Err(self.fail(
                    sim,
                    "no leader Y among s1, s2 replicated the old entry".into(),
                ));
            }
            (Scenario::Figure8, 4) => {
                // X alone can win now (its last term is the highest among the reachable).
                let leader = (1..=sim.nodes.len() as u64).find(|&id| {
                    sim.shard_of(id)
                        .is_some_and(|s| s.raft().role() == Role::Leader)
                });
                if let Some(l) = leader {
                    let s = sim.shard_of(l).expect("running");
                    if s.raft().commit_index() >= self.index {
                        sim.blocked.clear();
                        for id in [self.a, self.b] {
                            if sim.shard_of(id).is_none() {
                                sim.start_node(id)?;
                            }
                        }
                        self.next(sim);
                    }
                }
            }
            // ---- PartialPartition ----
            (Scenario::PartialPartition, _)
                if sim.now >= ms(1_000) && sim.now >= self.since + Duration::from_millis(700) =>
            {
                let leaders = sim.leaders_now();
                if let Some(&l) = leaders.first() {
                    let others: Vec<NodeId> =
                        (1..=sim.nodes.len() as u64).filter(|&id| id != l).collect();
                    let f = others[(self.step as usize) % others.len()];
                    sim.blocked.clear();
                    sim.block_both(l, f);
                    sim.report.partitions += 1;
                    if self.step == 0 {
                        self.token = sim.hist.grants.len() as u64;
                    }
                    self.next(sim);
                }
            }
            // ---- LateHandOff ----
            (Scenario::LateHandOff, 0) if sim.now >= ms(500) && sim.stable_leader().is_some() => {
                sim.client_do(
                    0,
                    Action::Acquire {
                        resource: 0,
                        wait_ms: 0,
                        ttl_ms: 400,
                    },
                );
                self.next(sim);
            }
            (Scenario::LateHandOff, 1) => match sim.last_outcome(0) {
                Some(Outcome::Answered { reply, .. }) if reply.answer.status == Status::Ok => {
                    self.token = reply.answer.fencing_token;
                    let waits = [(1, 150), (2, 3_000)];
                    for (client, wait_ms) in waits {
                        sim.client_do(
                            client,
                            Action::Acquire {
                                resource: 0,
                                wait_ms,
                                ttl_ms: 1_000,
                            },
                        );
                    }
                    self.next(sim);
                }
                Some(Outcome::Answered { .. }) | Some(Outcome::GaveUp { .. }) => {
                    return Err(self.fail(sim, "the first acquire was not granted".into()));
                }
                _ => {}
            },
            (Scenario::LateHandOff, 2) => {
                let Some(l) = sim.stable_leader() else {
                    return Ok(());
                };
                let waiters = sim
                    .shard_of(l)
                    .and_then(|s| s.table())
                    .map(|t| t.read_status(Instant::ZERO, RESOURCES[0]).0.waiter_count);
                if waiters == Some(2) {
                    self.a = l;
                    sim.pause(l, Duration::from_millis(1_500));
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(150) {
                    return Err(self.fail(sim, "the two waiters were not queued in time".into()));
                }
            }
            // ---- NewLeaderUnapplied ----
            (Scenario::NewLeaderUnapplied, 0) => {
                if sim.now < ms(1_000) {
                    return Ok(());
                }
                let Some(l) = sim.stable_leader() else {
                    return Ok(());
                };
                let raft = sim.shard_of(l).expect("running").raft();
                let commit = raft.commit_index();
                let ahead = sim.nodes.iter().filter(|n| n.id != l).all(|n| {
                    n.shard
                        .as_ref()
                        .is_some_and(|s| s.raft().commit_index() < commit)
                });
                let fresh = raft.entry(commit).is_some_and(|e| is_request(&e.data));
                if ahead && fresh {
                    self.a = l;
                    self.index = commit;
                    self.term = raft.term();
                    sim.crash(l);
                    sim.isolate(l); // drops the Appends that would carry the commit index
                    self.next(sim);
                }
            }
            (Scenario::NewLeaderUnapplied, 1) => {
                let leader = (1..=sim.nodes.len() as u64).find(|&id| {
                    sim.shard_of(id).is_some_and(|s| {
                        s.raft().role() == Role::Leader && s.raft().term() > self.term
                    })
                });
                let Some(n) = leader else { return Ok(()) };
                let applied = sim.shard_of(n).expect("running").applied_index();
                if applied >= self.index {
                    return Err(self.fail(
                        sim,
                        format!(
                            "the new leader {n} had already applied {applied} >= {}",
                            self.index
                        ),
                    ));
                }
                self.b = n;
                if sim.probe_status(n, 0)? {
                    return Err(self.fail(
                        sim,
                        format!(
                            "new leader {n} answered STATUS having applied {applied} of {} \
                             committed entries",
                            self.index
                        ),
                    ));
                }
                self.next(sim);
            }
            (Scenario::NewLeaderUnapplied, 2) => {
                let Some(s) = sim.shard_of(self.b) else {
                    return Err(self.fail(sim, "the new leader vanished".into()));
                };
                let applied = s.applied_index();
                // One probe per millisecond: a ReadIndex STATUS starts a heartbeat round at
                // once, so probing after every event would never let time move.
                if sim.now < self.since + Duration::from_micros(1_000 * self.token) {
                    return Ok(());
                }
                self.token += 1;
                if sim.probe_status(self.b, 0)? {
                    if applied < self.index {
                        return Err(self.fail(
                            sim,
                            format!("STATUS answered with {applied} of {} applied", self.index),
                        ));
                    }
                    self.count += 1;
                    // Restart the old leader and let the run go on.
                    sim.blocked.clear();
                    sim.start_node(self.a)?;
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(1_000) {
                    return Err(self.fail(sim, "the new leader never served a STATUS".into()));
                }
            }
            // ---- DuplicateAfterFailover ----
            (Scenario::DuplicateAfterFailover, 0) => {
                let Some(l) = sim.stable_leader() else {
                    return Ok(());
                };
                if sim.now >= ms(500) {
                    self.a = l;
                    // The grant will be lost: the leader cannot reach the client.
                    sim.blocked.insert((l, CLIENT_ENDPOINT));
                    sim.client_do(
                        0,
                        Action::Acquire {
                            resource: 0,
                            wait_ms: 0,
                            ttl_ms: 5_000,
                        },
                    );
                    self.next(sim);
                }
            }
            (Scenario::DuplicateAfterFailover, 1) => {
                let granted = sim
                    .shard_of(self.a)
                    .and_then(|s| s.table())
                    .map(|t| t.read_status(Instant::ZERO, RESOURCES[0]).1)
                    .is_some_and(|holder| holder.as_slice() == CLIENT_IDS[0]);
                if granted && self.index == 0 {
                    // No more copies reach it either (each would become a log entry that a
                    // new leader could commit and answer, which is another path).
                    sim.blocked.insert((CLIENT_ENDPOINT, self.a));
                    let s = sim.shard_of(self.a).expect("running");
                    self.index = s.raft().last_index();
                    self.term = s.raft().term();
                }
                // Crash it once every replica applied its whole log: a new leader then has
                // no answer of its own to send, only the retransmission can get one.
                let everywhere = self.index > 0
                    && sim.nodes.iter().all(|n| {
                        n.shard
                            .as_ref()
                            .is_some_and(|s| s.applied_index() >= self.index)
                    });
                if everywhere {
                    sim.crash(self.a);
                    sim.isolate(self.a);
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(500) {
                    return Err(self.fail(sim, "the first leader never granted".into()));
                }
            }
            (Scenario::DuplicateAfterFailover, 2) => match sim.last_outcome(0) {
                Some(Outcome::Answered { reply, .. }) => {
                    let a = reply.answer;
                    if a.status != Status::Ok || a.hold_count != 1 {
                        return Err(
                            self.fail(sim, format!("the retransmitted acquire was answered {a:?}"))
                        );
                    }
                    self.token = a.fencing_token;
                    sim.client_do(0, Action::Release { resource: 0 });
                    sim.blocked.clear();
                    sim.start_node(self.a)?;
                    self.next(sim);
                }
                Some(Outcome::GaveUp { .. }) => {
                    return Err(self.fail(sim, "the client gave up on its acquire".into()));
                }
                _ => {}
            },
            // ---- OverloadedRelease (client 0 is C, client 1 is D) ----
            (Scenario::OverloadedRelease, 0)
                if sim.now >= ms(500) && sim.stable_leader().is_some() =>
            {
                let hold = |resource| Action::Acquire {
                    resource,
                    wait_ms: 0,
                    ttl_ms: 20_000,
                };
                sim.client_do(1, hold(1));
                sim.client_do(0, hold(0));
                self.next(sim);
            }
            (Scenario::OverloadedRelease, 1) => {
                let granted = |c| {
                    matches!(sim.last_outcome(c), Some(Outcome::Answered { reply, .. })
                        if reply.answer.status == Status::Ok)
                };
                if granted(0) && granted(1) {
                    // C asks for D's lock, but none of its copies gets through: it gives up.
                    sim.cut_client(0);
                    sim.client_do(
                        0,
                        Action::Acquire {
                            resource: 1,
                            wait_ms: 2_500,
                            ttl_ms: 1_000,
                        },
                    );
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(1_000) {
                    return Err(self.fail(sim, "the two locks were not granted".into()));
                }
            }
            (Scenario::OverloadedRelease, 2) => match sim.last_op(0) {
                Some((request, Outcome::GaveUp { .. })) => {
                    // Its first copy was only late: it reaches the leader now, which queues
                    // it in C's session behind D.
                    let Some(l) = sim.stable_leader() else {
                        return Ok(());
                    };
                    sim.blocked.clear();
                    self.a = l;
                    sim.deliver_request(l, 0, request)?;
                    self.next(sim);
                }
                Some((_, Outcome::Answered { reply, .. })) => {
                    return Err(self.fail(sim, format!("C's acquire was answered {reply:?}")));
                }
                _ => {}
            },
            (Scenario::OverloadedRelease, 3) => {
                let waiters = sim
                    .shard_of(self.a)
                    .and_then(|s| s.table())
                    .map(|t| t.read_status(Instant::ZERO, RESOURCES[1]).0.waiter_count);
                if waiters == Some(1) {
                    sim.client_do(0, Action::Release { resource: 0 });
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(200) {
                    return Err(self.fail(sim, "C's late acquire was not queued".into()));
                }
            }
            (Scenario::OverloadedRelease, 4) => match sim.last_op(0) {
                Some((request, outcome)) if !matches!(outcome, Outcome::Pending) => {
                    if let Command::Release { .. } = request.command {
                        if let Outcome::Answered { reply, .. } = outcome {
                            if reply.answer.status != Status::Overloaded {
                                return Err(
                                    self.fail(sim, format!("the release got through: {reply:?}"))
                                );
                            }
                        }
                        // The queued acquire leaves (D hands it the lock it no longer wants).
                        sim.client_do(1, Action::Release { resource: 1 });
                        self.next(sim);
                    }
                }
                _ => {}
            },
            (Scenario::OverloadedRelease, 5) => {
                if matches!(sim.last_outcome(1), Some(Outcome::Answered { .. })) {
                    // The release's first copy arrives at last.
                    let release = sim
                        .hist
                        .ops
                        .iter()
                        .rev()
                        .find(|o| o.client == 0 && matches!(o.action, Action::Release { .. }))
                        .map(|o| o.request)
                        .expect("C's release");
                    let Some(l) = sim.stable_leader() else {
                        return Ok(());
                    };
                    self.a = l;
                    sim.deliver_request(l, 0, release)?;
                    self.next(sim);
                }
            }
            (Scenario::OverloadedRelease, 6) => {
                if sim.free_at(self.a, 0) {
                    sim.client_do(
                        1,
                        Action::Acquire {
                            resource: 0,
                            wait_ms: 0,
                            ttl_ms: 2_000,
                        },
                    );
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(500) {
                    return Err(self.fail(sim, "the late release copy never freed the lock".into()));
                }
            }
            (Scenario::OverloadedRelease, 7) => match sim.last_outcome(1) {
                Some(Outcome::Answered { reply, .. }) if reply.answer.status == Status::Ok => {
                    // C touches the lock again: its doubt is settled first.
                    sim.client_do(
                        0,
                        Action::Acquire {
                            resource: 0,
                            wait_ms: 0,
                            ttl_ms: 1_000,
                        },
                    );
                    self.next(sim);
                }
                Some(Outcome::Answered { reply, .. }) => {
                    return Err(self.fail(sim, format!("D's acquire was answered {reply:?}")));
                }
                _ => {}
            },
            (Scenario::OverloadedRelease, 8) => match sim.last_outcome(0) {
                Some(Outcome::Answered { reply, .. }) => {
                    if reply.answer.status != Status::LockAcquisitionTimeout {
                        return Err(self.fail(sim, format!("C's acquire was answered {reply:?}")));
                    }
                    self.next(sim);
                }
                Some(Outcome::GaveUp { .. }) => {
                    return Err(self.fail(
                        sim,
                        "C's acquire gave up: its doubtful release was never settled".into(),
                    ));
                }
                _ => {}
            },
            // ---- ReleaseReplay ----
            (Scenario::ReleaseReplay, 0) if sim.now >= ms(500) && sim.stable_leader().is_some() => {
                sim.client_do(
                    0,
                    Action::Acquire {
                        resource: 0,
                        wait_ms: 0,
                        ttl_ms: 20_000,
                    },
                );
                self.next(sim);
            }
            (Scenario::ReleaseReplay, 1) => match sim.last_outcome(0) {
                Some(Outcome::Answered { reply, .. }) if reply.answer.status == Status::Ok => {
                    sim.cut_client(0);
                    sim.client_do(0, Action::Release { resource: 0 });
                    self.next(sim);
                }
                Some(Outcome::Answered { .. }) | Some(Outcome::GaveUp { .. }) => {
                    return Err(self.fail(sim, "the lock was not granted".into()));
                }
                _ => {}
            },
            (Scenario::ReleaseReplay, 2) => match sim.last_op(0) {
                Some((mut request, Outcome::GaveUp { .. })) => {
                    // Its copy numbered 18 (a 2 s release sends more than 20) got through
                    // after all; every answer to C is still lost.
                    let Some(l) = sim.stable_leader() else {
                        return Ok(());
                    };
                    self.a = l;
                    request.attempt = REPLAYED_ATTEMPT;
                    sim.deliver_request(l, 0, request)?;
                    self.next(sim);
                }
                Some((_, Outcome::Answered { reply, .. })) => {
                    return Err(self.fail(sim, format!("the release was answered {reply:?}")));
                }
                _ => {}
            },
            (Scenario::ReleaseReplay, 3) => {
                if sim.free_at(self.a, 0) {
                    sim.blocked.clear();
                    sim.client_do(
                        0,
                        Action::Acquire {
                            resource: 0,
                            wait_ms: 0,
                            ttl_ms: 1_000,
                        },
                    );
                    self.next(sim);
                } else if sim.now > self.since + Duration::from_millis(500) {
                    return Err(self.fail(sim, "the late release copy never freed the lock".into()));
                }
            }
            (Scenario::ReleaseReplay, 4) => match sim.last_outcome(0) {
                Some(Outcome::Answered { reply, .. }) if reply.answer.status == Status::Ok => {
                    self.next(sim);
                }
                Some(Outcome::Answered { reply, .. }) => {
                    return Err(self.fail(sim, format!("the try-acquire was answered {reply:?}")));
                }
                Some(Outcome::GaveUp { .. }) => {
                    return Err(self.fail(
                        sim,
                        "the try-acquire gave up: the doubtful release was never settled, \
                         though the node answered every copy"
                            .into(),
                    ));
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    /// After a peer message was delivered (and its outputs sent). `ack` is the match index
    /// of a successful AppendReply.
    pub fn after_peer(
        &mut self,
        sim: &mut Sim,
        to: NodeId,
        from: NodeId,
        ack: Option<u64>,
    ) -> Result<(), SimFailure> {
        if (self.scenario, self.step) != (Scenario::Figure8, 3) {
            return Ok(());
        }
        let s1 = self.a;
        let s2 = self.b;
        let leader = sim
            .shard_of(to)
            .is_some_and(|s| s.raft().role() == Role::Leader);
        if (to != s1 && to != s2) || !leader || from == s1 || from == s2 || ack != Some(self.index)
        {
            return Ok(());
        }
        // Y (s1 or s2) leads a later term and has just learned that a third node stored the
        // old-term entry: a majority holds it, but Y's own no-op is on at most two nodes.
        let holders = (1..=sim.nodes.len() as u64)
            .filter(|&id| {
                sim.shard_of(id)
                    .and_then(|s| s.raft().entry(self.index))
                    .is_some_and(|e| e.term == self.term)
            })
            .count();
        if holders * 2 <= sim.nodes.len() {
            return Ok(());
        }
        let y = to;
        let other = if y == s1 { s2 } else { s1 };
        sim.crash(y);
        sim.blocked.clear();
        sim.isolate(y);
        sim.isolate(other);
        sim.start_node(self.x)?;
        self.next(sim);
        Ok(())
    }

    /// Before a paused node processes anything after waking.
    pub fn on_resume(&mut self, sim: &mut Sim, node: NodeId) -> Result<(), SimFailure> {
        if (self.scenario, self.step) != (Scenario::StaleLeaderRead, 1) || node != self.a {
            return Ok(());
        }
        let still_leads = sim
            .shard_of(node)
            .is_some_and(|s| s.raft().role() == Role::Leader && s.raft().term() == self.term);
        let newer = sim.leaders.keys().any(|&t| t > self.term);
        if !still_leads || !newer {
            return Err(self.fail(
                sim,
                format!("not the stale-leader situation (still leads: {still_leads}, newer leader: {newer})"),
            ));
        }
        if sim.probe_status(node, 0)? {
            return Err(self.fail(
                sim,
                format!("the stale leader {node} answered a STATUS after a pause past its lease"),
            ));
        }
        self.next(sim);
        Ok(())
    }

    /// After the run: did the scenario reach its situation, and did it end as it must?
    pub fn finish(&mut self, sim: &Sim) -> Result<(), SimFailure> {
        let reached = match self.scenario {
            Scenario::StaleLeaderRead => self.step >= 2,
            Scenario::Figure8 => self.step >= 5,
            Scenario::PartialPartition => self.step >= 4,
            Scenario::LateHandOff => self.step >= 3,
            Scenario::NewLeaderUnapplied => self.step >= 3,
            Scenario::DuplicateAfterFailover => self.step >= 3,
            Scenario::OverloadedRelease => self.step >= 9,
            Scenario::ReleaseReplay => self.step >= 5,
        };
        if !reached {
            return Err(self.fail(sim, format!("never got past step {}", self.step)));
        }
        match self.scenario {
            Scenario::Figure8 => {
                // The old-term entry was overwritten by X's: it never was committed.
                let best = sim
                    .nodes
                    .iter()
                    .filter_map(|n| n.shard.as_ref())
                    .max_by_key(|s| s.raft().commit_index())
                    .expect("running");
                let term = best.raft().entry(self.index).map(|e| e.term);
                if term != Some(self.count) {
                    return Err(self.fail(
                        sim,
                        format!(
                            "entry {} has term {term:?} in the final log, not X's {}",
                            self.index, self.count
                        ),
                    ));
                }
            }
            Scenario::PartialPartition => {
                let during = sim.hist.grants.len() as u64 - self.token;
                if during < 10 {
                    return Err(self.fail(
                        sim,
                        format!("only {during} grants during the partial partitions"),
                    ));
                }
            }
            Scenario::LateHandOff => {
                let outcome = |client| sim.last_outcome(client);
                if let Some(Outcome::Answered { reply, .. }) = outcome(1) {
                    if reply.answer.status == Status::Ok {
                        return Err(self.fail(
                            sim,
                            format!(
                                "the waiter whose deadline passed first was granted: {reply:?}"
                            ),
                        ));
                    }
                }
                match outcome(2) {
                    Some(Outcome::Answered { reply, .. })
                        if reply.answer.status == Status::Ok
                            && reply.answer.queued
                            && reply.answer.fencing_token > self.token => {}
                    other => {
                        return Err(self.fail(
                            sim,
                            format!("the patient waiter was not handed the lock: {other:?}"),
                        ))
                    }
                }
            }
            Scenario::DuplicateAfterFailover => {
                let id = sim
                    .hist
                    .ops
                    .iter()
                    .find(|o| o.client == 0)
                    .expect("the acquire")
                    .request
                    .id;
                let copies = sim
                    .applied
                    .iter()
                    .filter(|a| a.term > self.term)
                    .filter(|a| match LogCommand::decode(&a.data) {
                        Ok(LogCommand::Request {
                            session_id,
                            request_id,
                            ..
                        }) => session_id == id.session && request_id == id.request,
                        _ => false,
                    })
                    .count();
                if copies == 0 {
                    return Err(self.fail(
                        sim,
                        "the retransmitted acquire never reached a later leader's log".into(),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
