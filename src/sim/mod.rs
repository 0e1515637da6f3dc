//! A deterministic whole-service simulator (issue 3 §5: "the main test"): whole nodes
//! ([`Node`], the core a real node runs: routing, authentication, coalescing, redirects, and
//! its shard replicas — Raft plus the replicated lock table, one per shard) fed the datagrams
//! a real node would get, and lock clients that follow the spec's client rules, over a
//! simulated network, on simulated drifting clocks. A random run has 1, 4 or 16 shards by
//! its seed ([`shards_of_seed`]; `--shards` sets any count), over which the clients'
//! resources spread by `udplock_protocol::shard_of`; a scenario has one.
//!
//! One `u64` seed drives everything, through ChaCha8 generators (whose streams are the same
//! in every version, unlike `rand`'s `StdRng`; the Raft cores draw their timers from them
//! too): the network (latency, loss, duplication, reordering, delay spikes), every node's and
//! every client's clock rate and offset, every node's rng seed (also after each restart),
//! every client's session id and workload, each replica's snapshot cadence, the cluster key,
//! and the faults (partitions of every shape, an isolated leader, crashes and restarts,
//! pauses, leadership transfers, graceful leaves: a node hands over every shard it leads,
//! stops, and comes back later; junk snapshots a faulty peer sends a follower as if from its
//! leader; and steps of a node's clock rate within the drift bound, see `clock.rs`). The
//! faults aimed at a leader pick a shard first, half the time one the clients use. One seed
//! in three also spreads leaders (whoever leads a shard hands it to its preferred node once
//! that one is caught up), one in five snapshots at the production cadence
//! ([`SimConfig::production_compaction`]), one in four has
//! leaders that answer OVERLOADED whenever two proposals are uncommitted, and one in four
//! (`KEYLESS_SEEDS_EVERY`) runs without a cluster key, as every scenario does; the others
//! authenticate every node-to-node datagram (spec §8.11), so the network's duplicates,
//! late copies and a restarted node's first exchanges go through the checks a real node
//! makes. Nothing reads a real clock, and no decision depends on a hash map's iteration
//! order, so a failing seed fails the same way every time: the report carries a digest of
//! the whole event trace (`trace.rs`), which a test compares across two runs of a seed.
//!
//! # Data flow
//!
//! Events wait in one queue ordered by (true time, sequence number). Delivering one calls
//! into exactly one core with that core's own clock reading:
//!
//! ```text
//!   peer datagram  ──> Node::handle_datagram ─┐                  ┌─> poll_persist  ─> ShardStore<SimDisk>
//!   node timer     ──> Node::handle_timeout  ├─> (the node core) ┤   (before anything leaves)
//!   client request ──> encoded (wire.rs) ────┘                  └─> poll_transmit ─> network ─> node
//!                                                                                  └─> decoded ─> client
//!   client timer   ──> Client::wake / reply ──> Client::on_reply ──> requests ─> network ─> node
//! ```
//!
//! The checkers read the replicas (`Node::shards`), each shard on its own, and the Raft
//! messages inside the PEER
//! datagrams (decoded by the codec, `wire.rs`); the nodes know nothing of it. Under a
//! scenario, whose script may hold a Raft message back and deliver it late, each message
//! travels as its own (unauthenticated) datagram.
//!
//! Persistence ("fsync before send"): every disk node owns a `SimDisk` (`disk.rs`, its
//! data directory) and stores through the real storage code: after every call into a node
//! and before delivering anything it produced, the simulator hands each write the node hands
//! out ([`Node::poll_persist`]) to [`store::store_write`], the function the real shell calls
//! too (the recovery mark, the Raft delta through [`ShardStore::write`], the mark after, in
//! that order, with the syncs the node's durability asks for), and checks that no datagram
//! names a write not yet stored. A crash drops the node (a process crash keeps everything
//! written); a restart reopens its files from the disk ([`ShardStore::open_on`]) and builds a
//! new core (a fresh rng seed, its clock reading, a new incarnation) through the decision a
//! real start makes, [`crate::core::restart::decide`], for each shard, marking and emptying
//! the shards without state as the real start does. The identity and the boot record of the
//! directory (`cluster::storage::DataDir`) are modelled (`SimNode::identity`,
//! `SimNode::boot_recorded`): both are written synced, once per start.
//!
//! Lost state: a restart may find the node's storage gone — a `memory` node, which loses it
//! on every restart, or a disk node whose directory comes back empty once
//! (`SimDisk::wipe`: a replaced disk, a mistyped or emptied `--data-dir`). Either must
//! rejoin by the rule of spec §8.5; each node's command line may keep `--new-cluster` (as a
//! unit file would), which must not change that. At most a minority is without its state at
//! any time (no protocol survives more), and every run starts as a new cluster: each node
//! new, starting once all the others said they are new too.
//!
//! Power loss (`SimDisk::lose_power`: every file and the directory revert to what was last
//! synced): an `fsync` node's restart may follow one at any time (its syncs kept everything
//! it acknowledged). In one random seed in `OS_SEEDS_EVERY` every node writes with
//! `--durability os`: its stores never sync, and the kernel writes its page cache back
//! (`SimDisk::writeback`) at random moments while it runs. A restart may follow a power
//! loss of that node (only while a majority of the others are up and hold their state, and at
//! most a minority is without state): its files revert to what was written back, which may
//! lack a vote it gave and entries it acknowledged, and its boot id changes. The boot record
//! its runs keep in the directory then differs from the boot id, so every shard rejoins by
//! the rule of spec §8.5 ([`restart::boot`]); the checkers catch a node that trusted such
//! files.
//!
//! Failed and torn writes: while a disk node stores what one input produced, one of the
//! writes it makes may fail at a random byte (`SimDisk::fail_write`; a disk writes whole
//! sectors), and the process may die in the middle of it (nothing then cleans up). The node
//! stops (fail-stop, as the real shell exits: nothing that input produced leaves) and
//! restarts from what its files hold.
//!
//! # Phases
//!
//! A run has a *safety phase* with faults (loss, duplication and reordering are always on),
//! then a *liveness phase*: the network healed, crashed nodes restarted, paused ones woken.
//! Named [`Scenario`]s replace the random faults by a script (see `scenarios.rs`).
//!
//! # Checkers
//!
//! Outside the nodes, each per shard: after every call into a node, for its replicas (only
//! an input changes a replica), election safety, state machine safety and leader
//! completeness; after every event, lease safety and no false forgery:
//!
//! - **election safety** (Raft §5.2): at most one leader per term;
//! - **state machine safety** (Raft §5.4.3): every replica applies the same entry at each
//!   index (read through `shard.raft()` as the shard applies them);
//! - **leader completeness** (Raft §5.4): a new leader's log holds every entry applied so far;
//! - **lease safety** (issue 3 §1): at no instant of true time do two replicas both hold a
//!   valid leader lease, each judged on its own drifting clock; and a replica that holds one
//!   is backed by a majority (itself included) that accepted an Append or snapshot chunk of
//!   its term from it within the last `election_timeout_min` of true time (a lease resting on
//!   answers that no follower gave, issue 7 A3, fails here);
//! - **no false forgery** (issue 7 D): no replica drops a message as coming from a faulty or
//!   forged peer ([`crate::core::raft::Raft::faulty_drops`]) but the junk snapshots the
//!   simulator itself sends, and no node drops a datagram as forged (spec §8.11.5 checks 1
//!   and 2) but those junk datagrams: every other peer here is correct. (Drops for age —
//!   the network's duplicates, datagrams of an earlier life — are expected.)
//!
//! After the run, on the clients' history (see `check.rs` for the exact rules): mutual
//! exclusion, fencing order (both per resource), durability of acknowledged answers against
//! the final committed log of the resource's shard, linearizability with that log as the
//! witness order, doubts (no client touches a lock again before an answer settled the
//! RELEASE of it it gave up on, spec §7.1.5), and liveness (in every shard a leader with a
//! valid lease within [`LEADER_AFTER_HEAL_MAX`] of healing; every client operation
//! started after the settle time answered within its bound; every replica applies what was
//! committed a second before the end).
//!
//! A failure names the seed and the command that reproduces it.

mod check;
mod clients;
mod clock;
mod disk;
mod scenarios;
#[cfg(test)]
mod tests;
mod trace;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use udplock_protocol::Status;

use self::check::{History, Outcome, PROBE};
use self::clients::{Client, ReplyMsg, CLIENT_IDS, RESOURCES};
use self::clock::Clock;
use self::disk::SimDisk;
pub use self::scenarios::Scenario;
use self::scenarios::Script;
use self::trace::Trace;
use crate::core::lock_table::{self, Request};
use crate::core::node::{self, Node, NodeStats, ShardWrite};
use crate::core::peer_auth::{AuthDrop, KeySet};
use crate::core::raft::{self, Entry, Message, NodeId, Role};
use crate::core::replica::{self, Replica};
use crate::core::restart::{self, Boot, Found, Mark};
use crate::core::time::{Duration, Instant};
use crate::store::{self, ShardFiles, ShardStore};
use std::sync::Arc;

/// What one simulation run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Cluster size (3 or 5 make sense).
    pub nodes: usize,
    /// Shards of the cluster: every node holds a replica of each, and clients' resources
    /// spread over them by `udplock_protocol::shard_of`. [`SimConfig::new`] draws it from
    /// the seed ([`SHARD_COUNTS`]); the scenarios run one.
    pub shards: u32,
    /// Simulated time with faults.
    pub safety_phase: Duration,
    /// Simulated time after healing everything.
    pub liveness_phase: Duration,
    /// Whether the safety phase injects partitions, crashes and pauses (loss, duplication and
    /// reordering are always on).
    pub faults: bool,
    /// Simulated lock clients (at most 8).
    pub clients: usize,
    /// Resources they contend for (at most 4): few, so that they contend.
    pub resources: usize,
    /// A named scenario instead of random faults.
    pub scenario: Option<Scenario>,
    /// Every replica snapshots at the shard's production cadence
    /// (`replica::COMPACT_EVERY_DEFAULT`, `COMPACT_KEEP_DEFAULT`) instead of the short ones of
    /// [`COMPACTION_CADENCES`]. [`SimConfig::new`] sets it for one seed in
    /// [`PRODUCTION_COMPACTION_SEEDS_EVERY`]; a run must apply that many entries to a shard
    /// before it snapshots, which takes minutes of simulated time (`--seconds 240`).
    pub production_compaction: bool,
    /// A mutation experiment, never set by the sweep: a paused node's clock stands still
    /// while it is paused, as `CLOCK_MONOTONIC` does while a Linux machine is suspended.
    /// Without it a pause is a suspend on the clock the shells really read (`crate::clock`,
    /// `CLOCK_BOOTTIME`), which kept counting. With it the lease-safety checker fires (a
    /// leader wakes inside a lease its followers stopped honouring), which is why the shells
    /// must not read `std::time::Instant` (issue 7 item 4).
    pub clock_stops_during_pauses: bool,
    /// A mutation experiment, never set by the sweep: the clock faults go beyond the drift
    /// bound — a running leader's clock stands still for a while (its timers and its lease
    /// stop with it), or a follower's jumps forward (its patience with the leader ends
    /// early). Without it they stay within the bound (rate steps, see `clock_fault`). With
    /// it the lease-safety checker fires: the spec's one assumption about clocks is the
    /// bound (client protocol §6.4, "The clock").
    pub clock_faults_beyond_bound: bool,
}

impl SimConfig {
    /// A run of `seconds` of faults then 5 s of healed network, 6 clients on 3 resources
    /// (what `udplock sim --seed N --nodes K --seconds S` runs).
    pub fn new(seed: u64, nodes: usize, seconds: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            shards: shards_of_seed(seed),
            safety_phase: Duration::from_millis(seconds * 1_000),
            liveness_phase: Duration::from_millis(5_000),
            faults: true,
            clients: 6,
            resources: 3,
            scenario: None,
            production_compaction: seed % PRODUCTION_COMPACTION_SEEDS_EVERY == 3,
            clock_stops_during_pauses: false,
            clock_faults_beyond_bound: false,
        }
    }
}

/// What a successful run saw.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub simulated: Duration,
    pub events: u64,
    pub messages_delivered: u64,
    pub entries_applied: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub pauses: u64,
    /// Client operations started, answered finally, given up at their deadline.
    pub ops: u64,
    pub ops_answered: u64,
    pub ops_gave_up: u64,
    /// OK answers to ACQUIRE received.
    pub grants: u64,
    /// STATUS answers received.
    pub reads: u64,
    /// Snapshots replicas took or installed, and how many of those came from a leader
    /// (InstallSnapshot) or a restart rather than the replica's own state.
    pub snapshots: u64,
    pub snapshots_received: u64,
    /// Restarts that lost the node's state and went through the rejoin rule: of `memory`
    /// nodes, and of disk nodes whose directory came back empty.
    pub amnesia_restarts: u64,
    /// OVERLOADED answers that reached clients.
    pub overloaded: u64,
    /// Leadership transfers a fault started.
    pub transfers: u64,
    /// Graceful leaves (a node hands its leadership over, then stops) that completed, and how
    /// many of those handed leadership over first (the others did not lead, or could not
    /// hand over before `LEAVE_WITHIN`).
    pub leaves: u64,
    pub leaves_handed_over: u64,
    pub disk_losses: u64,
    /// Restarts of `os` nodes after a power loss (their files reverted to what the kernel
    /// had written back; see the module docs).
    pub power_losses: u64,
    /// Restarts of `fsync` nodes after a power loss (their files hold what they synced).
    pub fsync_power_losses: u64,
    /// Writes that failed part-way or were torn (the node stopped, see the module docs).
    pub torn_writes: u64,
    /// Junk snapshots a faulty peer sent a follower (see `SimNode::junk_snapshots`).
    pub junk_snapshots: u64,
    /// Clock faults (see `Sim::clock_fault`): steps of a clock's rate within the drift bound,
    /// or in the `clock_faults_beyond_bound` experiment stalls and jumps.
    pub clock_faults: u64,
    /// A digest of the whole event trace: every event delivered, in order, with its true
    /// time and the bytes it carried (see `trace.rs`). Equal for two runs of one seed.
    pub trace: u64,
}

/// A checker fired (or the run could not make progress): the seed reproduces it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub nodes: usize,
    pub shards: u32,
    /// The safety phase, whole seconds (the CLI's `--seconds`).
    pub seconds: u64,
    pub scenario: Option<Scenario>,
    pub at: Instant,
    pub what: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({} nodes, {} shards) failed at {:?}: {}\n  reproduce: ",
            self.seed, self.nodes, self.shards, self.at, self.what
        )?;
        match self.scenario {
            Some(s) => write!(
                f,
                "cargo test --test tests -- --exact it::sim::{} (scenario {s:?}, seed {})",
                s.test_name(),
                self.seed
            ),
            None => {
                write!(
                    f,
                    "udplock sim --seed {} --nodes {} --seconds {}",
                    self.seed, self.nodes, self.seconds
                )?;
                if self.shards != shards_of_seed(self.seed) {
                    write!(f, " --shards {}", self.shards)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SimFailure {}

/// Network model: per-message latency, loss, duplication, rare spikes (which also reorder).
const LATENCY_MIN: Duration = Duration::from_micros(50);
const LATENCY_MAX: Duration = Duration::from_micros(2_000);
const SPIKE_PROBABILITY: f64 = 0.01;
const SPIKE_MAX: Duration = Duration::from_micros(80_000);
const LOSS: f64 = 0.02;
const DUPLICATION: f64 = 0.02;
/// After healing, some replica must hold a valid leader lease within this (PreVote, an
/// election, the no-op's commit; a node paused until the heal may first have to step down).
pub const LEADER_AFTER_HEAL_MAX: Duration = Duration::from_millis(1_000);
/// Every replica must apply, by the end, what was committed this long before it.
const CATCH_UP: Duration = Duration::from_millis(1_000);
/// Events at one instant of simulated time beyond which the run has stopped making progress
/// (a core asking to be woken again and again without time moving): a failure, not a hang.
const EVENTS_PER_INSTANT_MAX: u64 = 100_000;
/// Endpoint number of client `i` in the partition table (nodes are 1..=n).
const CLIENT_ENDPOINT: u64 = 1_000;
/// The reply address of scenario probes.
const PROBE_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9)),
    9_999,
);

/// A clock within ± half the drift bound of true time, so any two clocks differ by at most
/// the bound, from a random offset.
fn random_clock(rng: &mut ChaCha8Rng, drift_bound_ppm: u32) -> Clock {
    let half = i64::from(drift_bound_ppm / 2);
    Clock::new(rng.gen_range(-half..=half), rng.gen_range(0..1_000_000_000))
}

#[derive(Clone, Debug)]
enum Event {
    /// A node-to-node datagram (PEER, PEER_SETTINGS), as sent.
    Peer {
        to: NodeId,
        from: NodeId,
        datagram: Arc<Vec<u8>>,
    },
    Request {
        to: NodeId,
        from: usize,
        request: Request<'static>,
    },
    Reply {
        to: usize,
        from: NodeId,
        msg: ReplyMsg,
        /// The digest of the datagram the node sent ([`Trace::of`]).
        digest: u64,
    },
    Timer {
        node: NodeId,
        generation: u64,
    },
    ClientWake {
        client: usize,
        generation: u64,
    },
    Fault,
    Heal,
    Restart {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    /// The kernel of `os` node `node` writes its page cache back to the disk.
    Writeback {
        node: NodeId,
    },
    /// Note the commit index the replicas must all reach by the end.
    CatchUpMark,
    /// Leader `from` starts handing leadership of `shard` to `to` (a fault or a scenario; an
    /// event, so that what it sends passes a script's `on_send` like anything else).
    Transfer {
        from: NodeId,
        to: NodeId,
        shard: u32,
    },
    /// Node `node` is leaving gracefully (`ClusterNode::leave`, SIGTERM): while it leads it
    /// hands leadership to a caught-up peer, then it stops; it gives up handing over at
    /// `until` and stops anyway.
    Leave {
        node: NodeId,
        until: Instant,
        /// It led when it began to leave.
        led: bool,
        /// The node's `crashes` then: a crash ends the leave.
        incarnation: u64,
    },
}

impl Event {
    /// Mixes this event into the run's trace: its kind, endpoints, and the digest of the
    /// bytes it carries (a request's bytes are mixed in as they reach the node).
    fn trace(&self, trace: &mut Trace) {
        match self {
            Event::Peer { to, from, datagram } => {
                trace.word(1);
                trace.word(*to);
                trace.word(*from);
                trace.bytes(datagram);
            }
            Event::Request { to, from, request } => {
                trace.word(2);
                trace.word(*to);
                trace.word(*from as u64);
                trace.word(request.id.session);
                trace.word(request.id.request);
                trace.word(request.attempt.into());
            }
            Event::Reply {
                to, from, digest, ..
            } => {
                trace.word(3);
                trace.word(*to as u64);
                trace.word(*from);
                trace.word(*digest);
            }
            Event::Timer { node, generation } => {
                trace.word(4);
                trace.word(*node);
                trace.word(*generation);
            }
            Event::ClientWake { client, generation } => {
                trace.word(5);
                trace.word(*client as u64);
                trace.word(*generation);
            }
            Event::Fault => trace.word(6),
            Event::Heal => trace.word(7),
            Event::Restart { node } => {
                trace.word(8);
                trace.word(*node);
            }
            Event::Resume { node } => {
                trace.word(9);
                trace.word(*node);
            }
            Event::Writeback { node } => {
                trace.word(10);
                trace.word(*node);
            }
            Event::CatchUpMark => trace.word(11),
            Event::Transfer { from, to, shard } => {
                trace.word(12);
                trace.word(*from);
                trace.word(*to);
                trace.word((*shard).into());
            }
            Event::Leave {
                node,
                until,
                led,
                incarnation,
            } => {
                trace.word(13);
                trace.word(*node);
                trace.word(until.as_micros());
                trace.word((*led).into());
                trace.word(*incarnation);
            }
        }
    }
}

struct SimNode {
    id: NodeId,
    /// The node's core while it runs: the code a real node runs, fed bytes.
    node: Option<Node>,
    /// Its counters (this incarnation's).
    stats: Arc<NodeStats>,
    /// Its data directory: the shards' files and recovery marks, written by the real
    /// storage code (see the module docs).
    disk: SimDisk,
    /// Each shard's files, open while the node runs (`None` under `memory`).
    stores: Vec<Option<ShardStore<SimDisk>>>,
    /// Durability `os`: its stores do not sync; the kernel writes back at random moments.
    os: bool,
    /// The boot id the directory's boot record holds (`DataDir::record_boot`, written
    /// synced; an `os` node's only).
    boot_recorded: Option<u64>,
    /// The machine's boot id: a power loss starts another boot.
    boot: u64,
    /// This node keeps no state (durability `memory`): every restart loses it.
    memory: bool,
    /// Snapshot cadence `(every, keep)` in random runs: each node its own, as real nodes
    /// compact independently (thesis §5), so a follower's snapshot may be newer than its
    /// leader's.
    compaction: (u64, u64),
    /// The node's data directory records it (what a real node writes at its first start).
    identity: bool,
    /// Its command line has `--new-cluster` (kept in a unit file for every start, or not).
    new_cluster: bool,
    /// Its own values of the settings a leader logs (spec §8.8), which differ between nodes
    /// and may change at a restart (a rolling change); every replica must apply each command
    /// with the logged ones.
    settings: replica::LoggedSettings,
    clock: Clock,
    paused_until: Option<Instant>,
    /// When the current pause began.
    paused_since: Option<Instant>,
    timer_generation: u64,
    /// How often this node crashed (or stopped).
    crashes: u64,
    /// Entries this incarnation applied, per shard (the replica's applied index, as last
    /// observed).
    applied: Vec<u64>,
    /// Per shard, the term this incarnation's replica was last seen leading.
    was_leader_in: Vec<Option<u64>>,
    /// Per shard, the latest Append or snapshot chunk this node accepted from a leader:
    /// (term, leader, true time). Kept across crashes: it records what the node received.
    heard_leader: Vec<Option<(u64, NodeId, Instant)>>,
    /// Junk snapshots (valid framing, garbage bytes, as if from its leader: a faulty peer, or
    /// a forgery on a cluster without a key) delivered to this incarnation, to any shard:
    /// each may be dropped as faulty, and must change nothing else (issue 8).
    junk_snapshots: u64,
    /// Unauthenticated junk datagrams sent to this incarnation of a node that has a key: each
    /// must be dropped by the authentication checks (spec §8.11) and counted as such.
    junk_unauthenticated: u64,
    /// The last write of this incarnation's core that was stored (its `seq`).
    stored_seq: u64,
    /// The shards its replicas lead (in some term), as of the last call into it.
    leading: Vec<usize>,
}

impl SimNode {
    /// Its replica of `shard`, while it runs.
    pub(crate) fn replica(&self, shard: usize) -> Option<&Replica> {
        self.node.as_ref().map(|n| &n.shards()[shard])
    }

    /// Every shard replica runs with the state it persisted (none rejoins by spec §8.5).
    fn whole(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| n.shards().iter().all(|s| !s.raft().rejoining()))
    }

    /// Opens the shards' files and decides how each replica starts, as a real node's start
    /// does (`ClusterNode::start_with`: [`restart::decide`] on what the directory holds and
    /// what its boot record says), then marks the shards without state, records the
    /// identity and the boot, and opens the marked shards' files empty.
    fn open_stores(&mut self) -> std::io::Result<Vec<restart::Start>> {
        let shards = self.stores.len() as u32;
        let sync = !self.os;
        self.disk.restart();
        self.stores.iter_mut().for_each(|s| *s = None);
        if self.memory {
            let decide = |_| restart::decide(Found::Nothing, true, self.new_cluster, Boot::Kept);
            return Ok((0..shards).map(decide).collect());
        }
        let storage_new = !self.identity && !self.disk.any_named("shard-");
        // An `os` node's boot record against its boot id (`DataDir::open`).
        let boot = match self.boot_recorded {
            Some(recorded) => {
                restart::boot(Some(&recorded.to_string()), Some(&self.boot.to_string()))
            }
            None => Boot::Kept,
        };
        let mut starts = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            let found = match store::shard_files(&self.disk, shard) {
                ShardFiles::Marked(mark) => Found::Marked(mark),
                ShardFiles::Missing => Found::Nothing,
                ShardFiles::Present if boot == Boot::Changed => Found::Nothing,
                ShardFiles::Present => {
                    let (store, p) = ShardStore::open_on(self.disk.clone(), shard, sync)?;
                    self.stores[shard as usize] = Some(store);
                    Found::Files {
                        hard: p.hard,
                        snapshot: p.snapshot,
                        log: p.log,
                    }
                }
            };
            starts.push(restart::decide(found, storage_new, self.new_cluster, boot));
        }
        let marks: Vec<(u32, Option<Mark>)> = (0..shards)
            .map(|s| (s, starts[s as usize].mark()))
            .filter(|(_, mark)| mark.is_some())
            .collect();
        store::set_marks(&self.disk, sync, &marks)?;
        self.identity = true;
        if self.os {
            // Once the marks are set (`DataDir::record_boot`); written synced.
            self.boot_recorded = Some(self.boot);
        }
        for (shard, _) in marks {
            let store = ShardStore::open_empty_on(self.disk.clone(), shard, sync)?;
            self.stores[shard as usize] = Some(store);
        }
        Ok(starts)
    }

    /// Some shard of it is without state: its node keeps none, or a shard's storage is
    /// marked as recovering.
    fn stateless(&self) -> bool {
        self.memory
            || (0..self.stores.len() as u32)
                .any(|s| matches!(store::shard_files(&self.disk, s), ShardFiles::Marked(_)))
    }
}

/// An entry some replica applied: the term and data, and when it first was.
struct Applied {
    term: u64,
    data: Vec<u8>,
    at: Instant,
    /// The current term of the first replica that applied it: at least the term in which the
    /// entry was committed (that replica learned the commit from a leader of that term or a
    /// later one).
    committed_by_term: u64,
}

pub(crate) struct Sim {
    config: SimConfig,
    shard_config: replica::Config,
    /// The cluster's keys (spec §8.11): most random runs have one; the others and the
    /// scenarios run without, where a datagram held back and delivered late can be rebuilt
    /// from its messages, and a faulty peer's junk reaches Raft.
    keys: KeySet,
    cluster_id: u64,
    /// A node's wall clock reads this plus its local clock, in µs (INIT's first token).
    wall_clock_base_us: u64,
    rng: ChaCha8Rng,
    now: Instant,
    seq: u64,
    events: BTreeMap<(Instant, u64), Event>,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    client_by_addr: HashMap<SocketAddr, usize>,
    /// (from, to) endpoint pairs whose datagrams are dropped (at send and at delivery).
    blocked: BTreeSet<(u64, u64)>,
    heal_at: Instant,
    end: Instant,
    healed: bool,
    /// Per shard, entry `i` at position `i - 1`, as first applied.
    applied: Vec<Vec<Applied>>,
    /// Per shard, term → the node that led it.
    leaders: Vec<BTreeMap<u64, NodeId>>,
    /// Per shard, when a replica first held a valid lease after healing.
    leader_after_heal: Vec<Option<Instant>>,
    /// Per shard, the commit index every replica must reach by the end.
    catch_up_index: Vec<Option<u64>>,
    hist: History,
    /// Scenario probes awaiting a reply, by request id.
    probes: HashMap<lock_table::RequestId, usize>,
    /// The length of the shortest datagram each request reached a node in, by request id:
    /// no reply to it may be longer (spec §2.2), judged on the bytes, not on what the
    /// request's conversion says its budget is.
    request_lens: HashMap<lock_table::RequestId, usize>,
    probe_next: u64,
    script: Option<Script>,
    report: SimReport,
    /// The digest of every event delivered so far (see `trace.rs`).
    trace: Trace,
    /// Per shard, the last holder of a valid lease `check_leases` saw: (the event it saw
    /// it after, `report.events`; node; term).
    lease_seen: Vec<(u64, NodeId, u64)>,
    /// Reused for every PEER datagram delivered (see `wire::peer_glance`).
    from_leader_buf: Vec<(u16, u64)>,
    outbox: Vec<(NodeId, Request<'static>)>,
}

/// Runs one simulation.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    assert!(config.nodes >= 1);
    assert!(config.clients <= CLIENT_IDS.len() && config.resources <= RESOURCES.len());
    assert!(config.resources >= 1);
    // A core that panics (its own assertions are the first line of checking) is a failure
    // of this seed like any other: report it with the command that reproduces it.
    let failure = |at: Instant, payload: Box<dyn std::any::Any + Send>| {
        let what = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        SimFailure {
            seed: config.seed,
            nodes: config.nodes,
            shards: config.shards,
            seconds: config.safety_phase.as_millis() / 1_000,
            scenario: config.scenario,
            at,
            what: format!("panicked: {what}"),
        }
    };
    let mut sim = panic::catch_unwind(|| Sim::new(config.clone()))
        .map_err(|payload| failure(Instant::ZERO, payload))??;
    let result = panic::catch_unwind(AssertUnwindSafe(|| sim.run()));
    match result {
        Ok(result) => result.map(|()| sim.report),
        Err(payload) => Err(failure(sim.now, payload)),
    }
}

/// Runs a named scenario with `seed`.
pub fn run_scenario(scenario: Scenario, seed: u64) -> Result<SimReport, SimFailure> {
    run(&scenario.config(seed))
}

impl Sim {
    fn new(config: SimConfig) -> Result<Sim, SimFailure> {
        assert!(
            config.shards >= 1 && (config.scenario.is_none() || config.shards == 1),
            "scenarios run one shard"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let voters: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let mut raft = raft::Config {
            id: 1,
            voters: voters.clone(),
            ..raft::Config::default()
        };
        if let Some(s) = config.scenario {
            s.adjust(&mut raft);
        }
        let drift_ppm = raft.drift_bound_ppm;
        let mut table = lock_table::Config::default();
        if overload_seed(&config) {
            table.retry_after_ms = OVERLOAD_RETRY_AFTER_MS;
        }
        if let Some(s) = config.scenario {
            s.adjust_table(&mut table);
        }
        let shard_config = replica::Config {
            shard: 0,
            raft,
            table,
        };
        let shards = config.shards as usize;
        // Every node's wall clock reads this plus its own local clock (in µs): INIT takes it.
        let wall_clock_base_us = rng.gen_range(1..1_000_000_000);
        let nodes = voters
            .iter()
            .map(|&id| SimNode {
                id,
                node: None,
                stats: Arc::default(),
                disk: SimDisk::new(),
                stores: (0..shards).map(|_| None).collect(),
                os: os_seed(&config),
                boot_recorded: None,
                boot: 1,
                memory: false,
                compaction: match COMPACTION_CADENCES[rng.gen_range(0..COMPACTION_CADENCES.len())] {
                    _ if config.production_compaction => (
                        replica::COMPACT_EVERY_DEFAULT,
                        replica::COMPACT_KEEP_DEFAULT,
                    ),
                    cadence => cadence,
                },
                identity: false,
                // A cluster's first start needs the flag; a unit file may keep it afterwards.
                new_cluster: true,
                settings: logged_settings(&mut rng),
                clock: random_clock(&mut rng, drift_ppm),
                paused_until: None,
                paused_since: None,
                timer_generation: 0,
                crashes: 0,
                applied: vec![0; shards],
                was_leader_in: vec![None; shards],
                heard_leader: vec![None; shards],
                junk_snapshots: 0,
                junk_unauthenticated: 0,
                stored_seq: 0,
                leading: Vec::new(),
            })
            .collect();
        let scripted = config.scenario.is_some_and(|s| s.scripted_clients());
        let clients: Vec<Client> = (0..config.clients)
            .map(|idx| {
                let clock = random_clock(&mut rng, drift_ppm);
                let seed = rng.gen();
                Client::new(
                    idx,
                    config.nodes,
                    config.shards,
                    config.resources,
                    clock,
                    seed,
                    drift_ppm,
                    scripted,
                    Instant::ZERO,
                )
            })
            .collect();
        let client_by_addr = clients.iter().map(|c| (c.addr, c.idx)).collect();
        let heal_at = Instant::ZERO + config.safety_phase;
        let end = heal_at + config.liveness_phase;
        let script = config.scenario.map(Script::new);
        let secret: [u8; 32] = rng.gen();
        let keys = if keyless_seed(&config) {
            KeySet::unauthenticated()
        } else {
            KeySet::single(udplock_protocol::ClusterKey::new(&secret))
        };
        let cluster_id = cluster_config(&config, &shard_config, 1).cluster_id();
        let mut sim = Sim {
            config,
            shard_config,
            keys,
            cluster_id,
            wall_clock_base_us,
            rng,
            now: Instant::ZERO,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            clients,
            client_by_addr,
            blocked: BTreeSet::new(),
            heal_at,
            end,
            healed: false,
            applied: (0..shards).map(|_| Vec::new()).collect(),
            leaders: vec![BTreeMap::new(); shards],
            leader_after_heal: vec![None; shards],
            catch_up_index: vec![None; shards],
            hist: History::default(),
            probes: HashMap::new(),
            request_lens: HashMap::new(),
            probe_next: 1,
            script,
            report: SimReport::default(),
            trace: Trace::default(),
            lease_seen: vec![(0, 0, 0); shards],
            from_leader_buf: Vec::new(),
            outbox: Vec::new(),
        };
        for id in voters {
            sim.start_node(id)?;
            // Later starts: the unit file kept `--new-cluster`, or the operator removed it.
            let keep = sim.rng.gen_bool(0.5);
            sim.node(id).new_cluster = keep;
        }
        for c in 0..sim.clients.len() {
            sim.arm_client(c);
        }
        if sim.config.faults && sim.config.scenario.is_none() {
            let first = Duration::from_millis(sim.rng.gen_range(200..1_500));
            sim.schedule(first, Event::Fault);
        }
        if os_seed(&sim.config) {
            for node in 1..=sim.nodes.len() as NodeId {
                let after = sim.rng.gen_range(WRITEBACK_INTERVAL_MS);
                sim.schedule(Duration::from_millis(after), Event::Writeback { node });
            }
        }
        sim.schedule_at(heal_at, Event::Heal);
        sim.schedule_at(end - CATCH_UP, Event::CatchUpMark);
        Ok(sim)
    }

    fn fail(&self, what: String) -> SimFailure {
        self.fail_at(self.now, what)
    }

    fn fail_at(&self, at: Instant, what: String) -> SimFailure {
        SimFailure {
            seed: self.config.seed,
            nodes: self.config.nodes,
            shards: self.config.shards,
            seconds: self.config.safety_phase.as_millis() / 1_000,
            scenario: self.config.scenario,
            at,
            what,
        }
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        self.events.insert((self.now + after, self.seq), event);
    }

    fn schedule_at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at.max(self.now), self.seq), event);
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn start_node(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let seed = self.rng.gen();
        let mut config = cluster_config(&self.config, &self.shard_config, id);
        let now = self.now;
        let overload = overload_seed(&self.config);
        let random = self.config.scenario.is_none();
        let n = self.node(id);
        config.table.ttl_default_ms = n.settings.ttl_default_ms;
        config.table.retry_after_ms = n.settings.retry_after_ms;
        config.table.startup_grace_ms = n.settings.startup_grace_ms;
        if overload {
            // Every node answers with the long hint of those seeds (see `overload_seed`).
            config.table.retry_after_ms = OVERLOAD_RETRY_AFTER_MS;
        }
        config.stores_state = !n.memory;
        if random {
            // Random runs snapshot often, so compaction, InstallSnapshot and restarts from a
            // snapshot happen under every fault; most scenarios keep whole logs to point at
            // entries.
            (config.compact_every, config.compact_keep) = n.compaction;
        }
        let local = n.clock.local(now);
        // What the node's data directory shows it, and its decision, as a real node's start
        // reads them (`ClusterNode::start_with`).
        let starts = n
            .open_stores()
            .map_err(|e| format!("node {id} cannot start on its files: {e}"));
        let starts = starts.map_err(|what| self.fail(what))?;
        let stats = Arc::new(NodeStats::default());
        // Spec §8.11: a number this node never used before (the wall clock at its start).
        let incarnation = self.wall_clock_base_us + local.as_micros() + 1;
        let keys = self.keys.clone();
        let mut core = Node::new(
            config,
            starts,
            keys,
            incarnation,
            seed,
            stats.clone(),
            local,
        )
        .expect("the node starts: its configuration is valid, its snapshot decodes");
        core.set_wall_clock(local, self.wall_clock_base_us + local.as_micros());
        let n = self.node(id);
        n.node = Some(core);
        n.stats = stats;
        n.applied.fill(0);
        n.was_leader_in.fill(None);
        n.junk_snapshots = 0;
        n.junk_unauthenticated = 0;
        n.stored_seq = 0;
        self.after_call(id)
    }

    fn crash(&mut self, id: NodeId) {
        let n = self.node(id);
        n.node = None;
        n.leading.clear();
        n.timer_generation += 1;
        n.crashes += 1;
        self.report.crashes += 1;
    }

    fn run(&mut self) -> Result<(), SimFailure> {
        let mut same_instant = 0;
        while let Some(((at, _), event)) = self.events.pop_first() {
            if at > self.end {
                break;
            }
            same_instant = if at == self.now { same_instant + 1 } else { 0 };
            if same_instant > EVENTS_PER_INSTANT_MAX {
                return Err(self.fail(format!(
                    "no progress: over {EVENTS_PER_INSTANT_MAX} events at one instant (last: \
                     {event:?})"
                )));
            }
            self.now = at;
            self.report.events += 1;
            self.trace.word(at.as_micros());
            event.trace(&mut self.trace);
            self.handle(event)?;
            self.check_leases()?;
            if let Some(mut script) = self.script.take() {
                let result = script.step(self);
                self.script = Some(script);
                result?;
            }
        }
        self.now = self.end;
        self.report.simulated = self.end.saturating_since(Instant::ZERO);
        self.report.trace = self.trace.digest();
        self.finish()
    }

    fn handle(&mut self, event: Event) -> Result<(), SimFailure> {
        match event {
            Event::Peer { to, from, datagram } => {
                if self.blocked.contains(&(from, to)) {
                    return Ok(());
                }
                if let Some(until) = self.node(to).paused_until {
                    // A frozen process: the datagram waits in its socket buffer.
                    self.schedule_at(until, Event::Peer { to, from, datagram });
                    return Ok(());
                }
                // What it carries, read by the checkers (the node reads it itself): the
                // (shard, term) of each Append or snapshot chunk from a leader.
                let mut from_leader = std::mem::take(&mut self.from_leader_buf);
                let ack = wire::peer_glance(&datagram, &mut from_leader);
                let now = self.now;
                let n = self.node(to);
                let local = n.clock.local(now);
                let Some(core) = n.node.as_mut() else {
                    return Ok(()); // crashed: lost
                };
                core.handle_datagram(local, wire::node_addr(from), &datagram);
                for &(shard, term) in &from_leader {
                    let Some(replica) = core.shards().get(usize::from(shard)) else {
                        continue;
                    };
                    let raft = replica.raft();
                    if raft.term() == term && raft.leader() == Some(from) {
                        n.heard_leader[usize::from(shard)] = Some((term, from, now));
                    }
                }
                self.from_leader_buf = from_leader;
                self.report.messages_delivered += 1;
                self.after_call(to)?;
                if let Some(mut script) = self.script.take() {
                    let result = script.after_peer(self, to, from, ack);
                    self.script = Some(script);
                    result?;
                }
            }
            Event::Request { to, from, request } => {
                if self.blocked.contains(&(CLIENT_ENDPOINT + from as u64, to)) {
                    return Ok(());
                }
                if let Some(until) = self.node(to).paused_until {
                    self.schedule_at(until, Event::Request { to, from, request });
                    return Ok(());
                }
                self.deliver_request(to, from, request)?;
            }
            Event::Reply { to, from, msg, .. } => {
                if self.blocked.contains(&(from, CLIENT_ENDPOINT + to as u64)) {
                    return Ok(());
                }
                if matches!(&msg, ReplyMsg::Answer(r) if r.answer.status == Status::Overloaded) {
                    self.report.overloaded += 1;
                }
                let now = self.now;
                let mut out = std::mem::take(&mut self.outbox);
                self.clients[to].on_reply(now, from, msg, &mut self.hist, &mut out);
                self.send_requests(to, &mut out);
                self.outbox = out;
                self.arm_client(to);
            }
            Event::Timer { node, generation } => {
                let now = self.now;
                let base = self.wall_clock_base_us;
                let n = self.node(node);
                if n.timer_generation != generation || n.node.is_none() {
                    return Ok(());
                }
                if let Some(until) = n.paused_until {
                    self.schedule_at(until, Event::Timer { node, generation });
                    return Ok(());
                }
                let local = n.clock.local(now);
                let core = n.node.as_mut().expect("running");
                if core.poll_timeout() <= local {
                    // As the shell does on its timer turns: the wall clock, then the timers.
                    core.set_wall_clock(local, base + local.as_micros());
                    core.handle_timeout(local);
                }
                self.after_call(node)?;
            }
            Event::ClientWake { client, generation } => {
                if self.clients[client].generation != generation {
                    return Ok(());
                }
                let now = self.now;
                let mut out = std::mem::take(&mut self.outbox);
                self.clients[client].wake(now, &mut self.hist, &mut out);
                self.send_requests(client, &mut out);
                self.outbox = out;
                self.arm_client(client);
            }
            Event::Fault => {
                if !self.healed {
                    self.inject_fault()?;
                    let next = Duration::from_millis(self.rng.gen_range(100..1_500));
                    self.schedule(next, Event::Fault);
                }
            }
            Event::Heal => self.heal()?,
            Event::Restart { node } => {
                if self.node(node).node.is_none() {
                    // Lost state (see the module docs). A `memory` node loses it on every
                    // restart, so it restarts only while a majority of the others are up and
                    // hold theirs (else it waits); a disk node may come back without its
                    // directory once. Nodes without state — `memory` ones, and disk ones
                    // marked as rejoining — stay a minority: no protocol survives more.
                    let whole = self
                        .nodes
                        .iter()
                        .filter(|n| n.id != node && n.whole())
                        .count();
                    let others_whole = whole > self.nodes.len() / 2;
                    let stateless_others = self
                        .nodes
                        .iter()
                        .filter(|n| n.id != node && n.stateless())
                        .count();
                    let room = stateless_others < (self.nodes.len() - 1) / 2;
                    let memory = self.node(node).memory;
                    if memory && !others_whole {
                        self.schedule(Duration::from_millis(200), Event::Restart { node });
                        return Ok(());
                    }
                    if self.config.scenario.is_none() && self.rng.gen_bool(0.2) {
                        // Restarted with other settings (a rolling change).
                        let settings = logged_settings(&mut self.rng);
                        self.node(node).settings = settings;
                    }
                    let os = self.node(node).os;
                    if memory {
                        self.report.amnesia_restarts += 1;
                    } else if os
                        && others_whole
                        && room
                        && self.rng.gen_bool(POWER_LOSS_PROBABILITY)
                    {
                        // The node crashed with its machine: the files hold what the kernel
                        // had written back, and the machine boots again.
                        let n = self.node(node);
                        n.disk.lose_power();
                        n.boot += 1;
                        self.report.power_losses += 1;
                    } else if self.config.scenario.is_none()
                        && others_whole
                        && room
                        && self.rng.gen_bool(0.3)
                    {
                        let n = self.node(node);
                        n.disk.wipe();
                        n.identity = false;
                        n.boot_recorded = None;
                        if self.rng.gen_bool(0.5) {
                            // From now on a `memory` node.
                            self.node(node).memory = true;
                            self.report.amnesia_restarts += 1;
                        } else {
                            self.report.disk_losses += 1;
                        }
                    } else if !os
                        && self.config.scenario.is_none()
                        && self.rng.gen_bool(FSYNC_POWER_LOSS_PROBABILITY)
                    {
                        // An `fsync` node's machine lost power: its files hold what it synced,
                        // which is everything it acknowledged, so any number of these may
                        // happen at once.
                        let n = self.node(node);
                        n.disk.lose_power();
                        n.boot += 1;
                        self.report.fsync_power_losses += 1;
                    }
                    self.start_node(node)?;
                }
            }
            Event::Writeback { node } => {
                let n = self.node(node);
                assert!(n.os, "only os nodes write back");
                if n.node.is_some() {
                    n.disk.writeback();
                }
                let after = self.rng.gen_range(WRITEBACK_INTERVAL_MS);
                self.schedule(Duration::from_millis(after), Event::Writeback { node });
            }
            Event::Resume { node } => {
                let now = self.now;
                if self
                    .node(node)
                    .paused_until
                    .is_some_and(|until| until <= now)
                {
                    self.resume(node)?;
                }
            }
            Event::Transfer { from, to, shard } => {
                if let Some(until) = self.node(from).paused_until {
                    self.schedule_at(until, Event::Transfer { from, to, shard });
                    return Ok(());
                }
                let now = self.now;
                let n = self.node(from);
                let local = n.clock.local(now);
                if let Some(core) = n.node.as_mut() {
                    core.transfer_leadership(local, shard, to);
                }
                self.after_call(from)?;
            }
            leave @ Event::Leave { .. } => self.leave_step(leave)?,
            Event::CatchUpMark => {
                for shard in 0..self.catch_up_index.len() {
                    let commit = self
                        .nodes
                        .iter()
                        .filter_map(|n| n.replica(shard))
                        .map(|s| s.raft().commit_index())
                        .max();
                    self.catch_up_index[shard] = commit;
                }
            }
        }
        Ok(())
    }

    fn deliver_request(
        &mut self,
        to: NodeId,
        from: usize,
        request: Request<'static>,
    ) -> Result<(), SimFailure> {
        let now = self.now;
        self.report.messages_delivered += 1;
        let datagram = wire::request_datagram(&request, None);
        self.trace.bytes(&datagram);
        let len = self
            .request_lens
            .entry(request.id)
            .or_insert(datagram.len());
        *len = (*len).min(datagram.len());
        let n = self.node(to);
        let local = n.clock.local(now);
        let Some(core) = n.node.as_mut() else {
            return Ok(());
        };
        core.handle_datagram(local, request.reply_to, &datagram);
        let _ = from;
        self.after_call(to)
    }

    fn resume(&mut self, node: NodeId) -> Result<(), SimFailure> {
        let (now, stops) = (self.now, self.config.clock_stops_during_pauses);
        let n = self.node(node);
        if let (true, Some(since)) = (stops, n.paused_since) {
            n.clock.stand_still(since, now);
        }
        n.paused_until = None;
        n.paused_since = None;
        if let Some(mut script) = self.script.take() {
            let result = script.on_resume(self, node);
            self.script = Some(script);
            result?;
        }
        if self.node(node).node.is_some() {
            self.after_call(node)?;
        }
        Ok(())
    }

    /// After any call into a node: store what its core hands out to store, send what it
    /// hands out to send, re-arm its timer, observe what it applied.
    fn after_call(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let now = self.now;
        let i = (id - 1) as usize;
        {
            let n = &self.nodes[i];
            let Some(core) = n.node.as_ref() else {
                return Ok(());
            };
            // Every node here is correct: a message one of them dropped as faulty or
            // malformed was a correct message misjudged (but for the junk snapshots a faulty
            // peer sent it, to any of its shards).
            let drops: u64 = core.shards().iter().map(|s| s.raft().faulty_drops()).sum();
            if drops > n.junk_snapshots {
                return Err(self.fail(format!(
                    "node {id} dropped {drops} message(s) of correct peers as faulty or \
                     malformed (its log says which)"
                )));
            }
            // Nor does a correct peer's datagram fail the authentication checks for anything
            // but its age (a duplicate, one from an earlier life of either end: spec §8.11).
            let misjudged: u64 = [
                AuthDrop::Unauthenticated,
                AuthDrop::UnknownKey,
                AuthDrop::BadMac,
                AuthDrop::WrongReceiver,
            ]
            .iter()
            .map(|&r| n.stats.auth_dropped(r))
            .sum();
            if misjudged > n.junk_unauthenticated {
                return Err(self.fail(format!(
                    "node {id} dropped {misjudged} datagram(s) of correct peers as forged \
                     (spec §8.11)"
                )));
            }
        }
        // The writes first, in order: nothing below leaves before what it depends on is
        // stored (the core names it; this shell, like the real one, stores everything first).
        loop {
            let n = &mut self.nodes[i];
            let Some(write) = n.node.as_mut().and_then(Node::poll_persist) else {
                break;
            };
            n.stored_seq = write.seq;
            if write.raft.as_ref().is_some_and(|p| p.snapshot.is_some()) {
                self.report.snapshots += 1;
            }
            if self.nodes[i].memory {
                // A `memory` node writes nothing: its shell drops the writes.
                continue;
            }
            let armed = self.arm_torn_write(id, &write);
            let n = &mut self.nodes[i];
            let store = n.stores[write.shard as usize].as_mut();
            let stored = store::store_write(&n.disk, !n.os, store, &write);
            let torn = armed && !n.disk.disarm();
            match stored {
                Ok(()) if !torn => {}
                Ok(()) => {
                    return Err(self.fail(format!(
                        "node {id}: a write the disk failed was stored without an error"
                    )));
                }
                Err(_) if torn => {
                    // Fail-stop, as the real shell does: nothing that input produced leaves,
                    // and the node restarts from what its files hold.
                    self.report.torn_writes += 1;
                    self.crash(id);
                    let down = Duration::from_millis(self.rng.gen_range(50..1_000));
                    self.schedule(down, Event::Restart { node: id });
                    return Ok(());
                }
                Err(e) => {
                    return Err(self.fail(format!(
                        "node {id} failed to store a write of shard {}: {e}",
                        write.shard
                    )));
                }
            }
        }
        let mut transmits = Vec::new();
        let timer_local;
        {
            let n = &mut self.nodes[i];
            let core = n.node.as_mut().expect("running");
            let mut buf = vec![0u8; udplock_protocol::PEER_DATAGRAM_LEN_MAX];
            while let Some(t) = core.poll_transmit(&mut buf) {
                transmits.push((t, buf[..t.len].to_vec()));
            }
            timer_local = core.poll_timeout();
            n.timer_generation += 1;
        }
        for (t, datagram) in transmits {
            if t.after > self.nodes[i].stored_seq {
                return Err(self.fail(format!(
                    "node {id} handed out a datagram that depends on write {} before that \
                     write",
                    t.after
                )));
            }
            if t.to_peer {
                let Some(to) = wire::node_at(t.to, self.nodes.len()) else {
                    return Err(self.fail(format!("node {id} sent a peer datagram to {}", t.to)));
                };
                self.send_peer(id, to, datagram);
                continue;
            }
            let Some(msg) = wire::reply_msg(&datagram, t.to, self.nodes.len()) else {
                return Err(self.fail(format!(
                    "node {id} sent {} a datagram no client can read",
                    t.to
                )));
            };
            let asked = match &msg {
                ReplyMsg::Answer(r) => r.id,
                ReplyMsg::NotLeader { id, .. } => *id,
            };
            match self.request_lens.get(&asked) {
                Some(&len) if datagram.len() > len => {
                    return Err(self.fail(format!(
                        "amplification: node {id} answered a request of {len} bytes with {} \
                         bytes ({msg:?}; spec §2.2)",
                        datagram.len()
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(self.fail(format!(
                        "node {id} answered a request no node received: {msg:?}"
                    )));
                }
            }
            if t.to == PROBE_ADDR {
                if let ReplyMsg::Answer(reply) = msg {
                    if let Some(&op) = self.probes.get(&reply.id) {
                        self.hist.answered(op, now, *reply);
                        self.report.reads += 1;
                    }
                }
                continue;
            }
            let Some(&client) = self.client_by_addr.get(&t.to) else {
                return Err(self.fail(format!(
                    "node {id} answered an address no client has: {msg:?}"
                )));
            };
            self.send_reply(id, client, msg, &datagram);
        }
        let n = self.node(id);
        let at = n.clock.true_time(timer_local).max(now);
        let generation = n.timer_generation;
        self.schedule_at(
            at,
            Event::Timer {
                node: id,
                generation,
            },
        );
        self.observe_applied(id)
    }

    /// Sometimes (random runs, before healing) the write of what the last input produced
    /// fails part-way or is torn by a crash: arms the node's disk to fail one of the writes
    /// `write` makes, at a random byte ([`SimDisk::fail_write`]). True if it did.
    fn arm_torn_write(&mut self, id: NodeId, write: &ShardWrite) -> bool {
        let Some(persist) = &write.raft else {
            return false;
        };
        if !self.config.faults || self.config.scenario.is_some() || self.healed {
            return false;
        }
        if !self.rng.gen_bool(TORN_WRITE_PROBABILITY) {
            return false;
        }
        // The writes `ShardStore::write` makes for it: the hard state; a snapshot and the
        // log rewritten after it, or the appended entries.
        let writes = usize::from(persist.hard.is_some())
            + match &persist.snapshot {
                Some(_) => 2,
                None => usize::from(!persist.entries.is_empty()),
            };
        if writes == 0 {
            return false;
        }
        let skip = self.rng.gen_range(0..writes);
        let (pick, dies) = (self.rng.gen(), self.rng.gen_bool(0.5));
        self.node(id).disk.fail_write(skip, pick, dies);
        true
    }

    /// Latency, loss, duplication for one datagram; `None` if it is lost.
    fn copies(&mut self, from: u64, to: u64) -> Vec<Duration> {
        if from == to || self.blocked.contains(&(from, to)) || self.rng.gen_bool(LOSS) {
            return Vec::new();
        }
        let copies = if self.rng.gen_bool(DUPLICATION) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let mut latency = self
                    .rng
                    .gen_range(LATENCY_MIN.as_micros()..=LATENCY_MAX.as_micros());
                if self.rng.gen_bool(SPIKE_PROBABILITY) {
                    latency += self.rng.gen_range(0..=SPIKE_MAX.as_micros());
                }
                Duration::from_micros(latency)
            })
            .collect()
    }

    /// A node-to-node datagram from `from` to `to`, through the network. Under a scenario
    /// (whose clusters have no key) the script sees each Raft message it carries and may
    /// hold one back to deliver late itself; each message then travels alone, as its own
    /// datagram.
    fn send_peer(&mut self, from: NodeId, to: NodeId, datagram: Vec<u8>) {
        let Some(mut script) = self.script.take() else {
            let datagram = Arc::new(datagram);
            for latency in self.copies(from, to) {
                let datagram = datagram.clone();
                self.schedule(latency, Event::Peer { to, from, datagram });
            }
            return;
        };
        let messages = wire::peer_messages(&datagram);
        if messages.is_empty() {
            // PEER_SETTINGS: no Raft message in it, nothing for a script to see.
            self.script = Some(script);
            let datagram = Arc::new(datagram);
            for latency in self.copies(from, to) {
                let datagram = datagram.clone();
                self.schedule(latency, Event::Peer { to, from, datagram });
            }
            return;
        }
        assert!(
            !self.keys.is_authenticated(),
            "scenarios run without keys: held datagrams are rebuilt"
        );
        let mut deliver = Vec::new();
        for (shard, msg) in messages {
            // A scenario may hold a message back (to deliver it late itself) or copy it.
            if script.on_send(self, from, to, &msg) {
                deliver.push((shard, msg));
            }
        }
        self.script = Some(script);
        for message in deliver {
            let datagram = Arc::new(wire::peer_datagram(self.cluster_id, from, &[message]));
            for latency in self.copies(from, to) {
                let datagram = datagram.clone();
                self.schedule(latency, Event::Peer { to, from, datagram });
            }
        }
    }

    /// Delivers `msg` from `from` to `to` after `after`, as a datagram the network delayed
    /// (partitions apply at delivery, as to any datagram).
    pub(crate) fn deliver_late(&mut self, from: NodeId, to: NodeId, msg: Message, after: Duration) {
        let datagram = Arc::new(wire::peer_datagram(self.cluster_id, from, &[(0, msg)]));
        self.schedule(after, Event::Peer { to, from, datagram });
    }

    fn send_reply(&mut self, from: NodeId, to: usize, msg: ReplyMsg, datagram: &[u8]) {
        let digest = Trace::of(datagram);
        for latency in self.copies(from, CLIENT_ENDPOINT + to as u64) {
            let msg = msg.clone();
            self.schedule(
                latency,
                Event::Reply {
                    to,
                    from,
                    msg,
                    digest,
                },
            );
        }
    }

    fn send_requests(&mut self, from: usize, out: &mut Vec<(NodeId, Request<'static>)>) {
        for (to, request) in out.drain(..) {
            self.hist.copy_sent(request.id, self.now);
            for latency in self.copies(CLIENT_ENDPOINT + from as u64, to) {
                self.schedule(latency, Event::Request { to, from, request });
            }
        }
    }

    fn arm_client(&mut self, client: usize) {
        let c = &mut self.clients[client];
        c.generation += 1;
        let generation = c.generation;
        if let Some(local) = c.next_wake() {
            let at = c.clock.true_time(local);
            if at <= self.end {
                self.schedule_at(at, Event::ClientWake { client, generation });
            }
        }
    }

    fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The nodes whose replica of `shard` leads (in some term).
    fn leaders_now(&self, shard: usize) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| {
                n.replica(shard)
                    .is_some_and(|s| s.raft().role() == Role::Leader)
            })
            .map(|n| n.id)
            .collect()
    }

    /// The shard a fault aimed at a leader picks: half the time the shard of a resource the
    /// clients use, else any.
    fn fault_shard(&mut self) -> usize {
        let shards = self.config.shards;
        if self.rng.gen_bool(0.5) {
            let resource = RESOURCES[self.rng.gen_range(0..self.config.resources)];
            udplock_protocol::shard_of(resource, shards) as usize
        } else {
            self.rng.gen_range(0..shards as usize)
        }
    }

    fn block_both(&mut self, a: u64, b: u64) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    fn pause(&mut self, node: NodeId, for_: Duration) -> bool {
        let (now, until) = (self.now, self.now + for_);
        let n = self.node(node);
        if n.paused_until.is_some() || n.node.is_none() {
            return false;
        }
        n.paused_until = Some(until);
        n.paused_since = Some(now);
        self.report.pauses += 1;
        self.schedule_at(until, Event::Resume { node });
        true
    }

    fn inject_fault(&mut self) -> Result<(), SimFailure> {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let fault = self.rng.gen_range(0..13);
        // The shard whose leader the leader-aimed faults (3, 5, 9, 10, 12) pick.
        let shard = if self.config.shards > 1 && matches!(fault, 3 | 5 | 9 | 10 | 12) {
            self.fault_shard()
        } else {
            0
        };
        match fault {
            // Symmetric partition into two groups.
            0 => {
                self.blocked.clear();
                let split: Vec<bool> = ids.iter().map(|_| self.rng.gen_bool(0.5)).collect();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if split[i] != split[j] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
                self.report.partitions += 1;
            }
            // Asymmetric: one node can send but not receive, or the reverse.
            1 => {
                let victim = ids[self.rng.gen_range(0..ids.len())];
                let inbound = self.rng.gen_bool(0.5);
                for &other in &ids {
                    if other != victim {
                        let pair = if inbound {
                            (other, victim)
                        } else {
                            (victim, other)
                        };
                        self.blocked.insert(pair);
                    }
                }
                self.report.partitions += 1;
            }
            // Partial: two nodes cannot talk to each other, both talk to the rest.
            2 => {
                let a = ids[self.rng.gen_range(0..ids.len())];
                let b = ids[self.rng.gen_range(0..ids.len())];
                if a != b {
                    self.block_both(a, b);
                }
                self.report.partitions += 1;
            }
            // Isolate whoever leads from the other replicas, and sometimes from clients too
            // (else clients keep reaching a leader that cannot commit).
            3 => {
                let with_clients = self.rng.gen_bool(0.5);
                for l in self.leaders_now(shard) {
                    for &other in &ids {
                        if other != l {
                            self.block_both(l, other);
                        }
                    }
                    if with_clients {
                        for c in 0..self.clients.len() {
                            self.block_both(l, CLIENT_ENDPOINT + c as u64);
                        }
                    }
                }
                self.report.partitions += 1;
            }
            // Crash a node (keeping a majority up most of the time), restart it later.
            4 => {
                let running = self.running();
                if !running.is_empty()
                    && (running.len() * 2 > ids.len() + 1 || self.rng.gen_bool(0.2))
                {
                    let victim = running[self.rng.gen_range(0..running.len())];
                    self.crash(victim);
                    let down = Duration::from_millis(self.rng.gen_range(50..2_000));
                    self.schedule(down, Event::Restart { node: victim });
                }
            }
            // Pause a node (a GC pause, a stopped VM): it wakes believing what it believed.
            // Pausing the leader is the interesting case, so it is chosen half the time.
            5 => {
                let leaders = self.leaders_now(shard);
                let victim = if !leaders.is_empty() && self.rng.gen_bool(0.5) {
                    leaders[0]
                } else {
                    ids[self.rng.gen_range(0..ids.len())]
                };
                let for_ = Duration::from_millis(self.rng.gen_range(50..1_500));
                self.pause(victim, for_);
            }
            // Cut one client off from one node (a partial partition between client and
            // cluster: it must find another way in).
            6 => {
                if !self.clients.is_empty() {
                    let c = self.rng.gen_range(0..self.clients.len()) as u64;
                    let node = ids[self.rng.gen_range(0..ids.len())];
                    self.block_both(CLIENT_ENDPOINT + c, node);
                    self.report.partitions += 1;
                }
            }
            // A leader hands leadership to another node (graceful leave, leader spreading),
            // under whatever faults are on: its TimeoutNow may be lost or come late.
            9 => {
                if let Some(&from) = self.leaders_now(shard).first() {
                    let others: Vec<NodeId> =
                        ids.iter().copied().filter(|&id| id != from).collect();
                    let to = others[self.rng.gen_range(0..others.len())];
                    let shard = shard as u32;
                    self.schedule(Duration::ZERO, Event::Transfer { from, to, shard });
                    self.report.transfers += 1;
                }
            }
            // A node leaves gracefully (SIGTERM on `udplock server`): it declines to take
            // shards over, hands over what it leads, stops, and is restarted later.
            10 => {
                let running = self.running();
                let leaders = self.leaders_now(shard);
                if running.len() * 2 > ids.len() + 1 {
                    // The leader half the time: handing over is the interesting part.
                    let node = match leaders.first() {
                        Some(&leader) if self.rng.gen_bool(0.5) => leader,
                        _ => running[self.rng.gen_range(0..running.len())],
                    };
                    if self.node(node).paused_until.is_none() {
                        let now = self.now;
                        let n = self.node(node);
                        let incarnation = n.crashes;
                        let local = n.clock.local(now);
                        let mut led = false;
                        if let Some(core) = n.node.as_mut() {
                            core.start_leaving(local);
                            led = core.leading() > 0;
                        }
                        let leave = Event::Leave {
                            node,
                            until: now + LEAVE_WITHIN,
                            led,
                            incarnation,
                        };
                        self.schedule(Duration::ZERO, leave);
                    }
                }
            }
            // A faulty peer (or a forger, on a cluster without a key) sends a follower a
            // complete snapshot of garbage, as if from its leader: the follower must drop it
            // and keep its state, and still restart from what it persisted (issue 8).
            11 => return self.send_junk_snapshot(),
            // A node's clock changes rate (or, in an experiment, stalls or jumps).
            12 => return self.clock_fault(shard),
            // Heal the network for a while.
            _ => self.blocked.clear(),
        }
        Ok(())
    }

    /// Fault 12 (see `inject_fault`): a node's clock changes (see `clock.rs`). Within the
    /// drift bound, as in every random run: one clock's rate steps to another rate within ±
    /// half the bound; or, half the time when `shard` has a leader, the leader's clock steps
    /// to the slowest rate and every other node's to the fastest, so the leader's lease lasts
    /// longest in true time while its followers' patience is shortest — the edge the lease's
    /// margin is for (spec §8.5, "Leader lease"). Beyond the bound (the
    /// `clock_faults_beyond_bound` experiment): the leader's clock stands still for 50 ms to
    /// 1.5 s while it runs, or a node's clock jumps forward by as much.
    fn clock_fault(&mut self, shard: usize) -> Result<(), SimFailure> {
        let half = i64::from(self.shard_config.raft.drift_bound_ppm / 2);
        let leader = self.leaders_now(shard).first().copied();
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let now = self.now;
        let adversarial = leader.is_some() && self.rng.gen_bool(0.5);
        if self.config.clock_faults_beyond_bound {
            let by = Duration::from_millis(self.rng.gen_range(50..1_500));
            match leader {
                Some(leader) if adversarial => self.node(leader).clock.stand_still(now, now + by),
                _ => {
                    let victim = ids[self.rng.gen_range(0..ids.len())];
                    self.node(victim).clock.jump(now, by);
                }
            }
        } else if let (Some(leader), true) = (leader, adversarial) {
            for &id in &ids {
                let rate = if id == leader { -half } else { half };
                self.node(id).clock.set_rate(now, rate);
            }
        } else {
            let victim = ids[self.rng.gen_range(0..ids.len())];
            let rate = self.rng.gen_range(-half..=half);
            self.node(victim).clock.set_rate(now, rate);
        }
        self.report.clock_faults += 1;
        // Timers were set on the old clocks: set them again (a paused node's are at resume).
        for id in ids {
            if self.node(id).paused_until.is_none() {
                self.after_call(id)?;
            }
        }
        Ok(())
    }

    /// Fault 11 (see `inject_fault`): one chunk holding a whole snapshot of garbage (it does
    /// not even start with the snapshot magic), beyond the follower's commit index, of its
    /// term, from the leader it follows, in a PEER datagram from the leader's address but
    /// without a trailer; round 0, so its answer counts for nothing at the leader. A node
    /// with a key drops it as unauthenticated (spec §8.11); one without lets Raft judge it.
    fn send_junk_snapshot(&mut self) -> Result<(), SimFailure> {
        let shards = self.config.shards as usize;
        // (follower, its leader, shard)
        let followers: Vec<(NodeId, NodeId, usize)> = self
            .nodes
            .iter()
            .filter(|n| n.paused_until.is_none())
            .flat_map(|n| (0..shards).map(move |shard| (n, shard)))
            .filter_map(|(n, shard)| {
                let raft = n.replica(shard)?.raft();
                let leader = raft.leader().filter(|_| raft.role() == Role::Follower)?;
                Some((n.id, leader, shard))
            })
            .collect();
        if followers.is_empty() {
            return Ok(());
        }
        let (to, from, shard) = followers[self.rng.gen_range(0..followers.len())];
        let len = self.rng.gen_range(1..=udplock_protocol::SNAPSHOT_CHUNK_MAX);
        let mut data: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
        data[0] = 0;
        let ahead = self.rng.gen_range(1..100);
        let now = self.now;
        let (cluster_id, keyed) = (self.cluster_id, self.keys.is_authenticated());
        let n = &mut self.nodes[(to - 1) as usize];
        let local = n.clock.local(now);
        let raft = n.replica(shard).expect("a running follower").raft();
        let (term, commit) = (raft.term(), raft.commit_index());
        let junk = Message::InstallSnapshot {
            term,
            last_index: commit + ahead,
            last_term: term,
            offset: 0,
            total_len: len as u64,
            data,
            round: 0,
        };
        let datagram = wire::peer_datagram(cluster_id, from, &[(shard as u16, junk)]);
        self.trace.bytes(&datagram);
        if keyed {
            n.junk_unauthenticated += 1;
        } else {
            n.junk_snapshots += 1;
        }
        let core = n.node.as_mut().expect("a running follower");
        core.handle_datagram(local, wire::node_addr(from), &datagram);
        if keyed && n.stats.auth_dropped(AuthDrop::Unauthenticated) < n.junk_unauthenticated {
            return Err(self.fail(format!(
                "node {to} with a cluster key took an unauthenticated datagram (spec §8.11)"
            )));
        }
        self.report.junk_snapshots += 1;
        self.after_call(to)
    }

    /// One turn of a graceful leave (see `Event::Leave`): `ClusterNode::leave` — the node's
    /// core hands each shard it leads to a caught-up peer on every input, and the shell
    /// stops it once it leads none or its patience ends.
    fn leave_step(&mut self, leave: Event) -> Result<(), SimFailure> {
        let Event::Leave {
            node,
            until,
            led,
            incarnation,
        } = leave
        else {
            unreachable!("a Leave event");
        };
        let (now, healed) = (self.now, self.healed);
        let interval = self.shard_config.raft.heartbeat_interval;
        let n = self.node(node);
        if n.crashes != incarnation || healed {
            // It crashed meanwhile (and may run again as a new process), or the run is in its
            // healed phase, where nothing stops: the leave ends here.
            return Ok(());
        }
        if let Some(paused) = n.paused_until {
            self.schedule_at(paused, leave);
            return Ok(());
        }
        let local = n.clock.local(now);
        let Some(core) = n.node.as_mut() else {
            return Ok(());
        };
        core.start_leaving(local);
        let leads = core.leading() > 0;
        if leads && now < until {
            self.after_call(node)?;
            self.schedule(interval, leave);
            return Ok(());
        }
        let handed_over = led && !leads;
        self.crash(node);
        self.report.leaves += 1;
        self.report.leaves_handed_over += u64::from(handed_over);
        let down = Duration::from_millis(self.rng.gen_range(50..2_000));
        self.schedule(down, Event::Restart { node });
        Ok(())
    }

    fn heal(&mut self) -> Result<(), SimFailure> {
        self.healed = true;
        self.blocked.clear();
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            if self.node(id).node.is_none() {
                // A node that keeps no state comes back without it (`start_node`), whenever
                // it restarts.
                if self.node(id).memory {
                    self.report.amnesia_restarts += 1;
                }
                self.start_node(id)?;
            }
            if self.node(id).paused_until.is_some() {
                self.resume(id)?;
            }
        }
        Ok(())
    }

    /// A STATUS handed straight to `node` (scenarios), recorded in the history as an
    /// operation sent and answered at this instant. `Ok(true)` if the node answered it.
    fn probe_status(&mut self, node: NodeId, resource: usize) -> Result<bool, SimFailure> {
        let request = Request {
            id: lock_table::RequestId {
                session: u64::MAX,
                request: self.probe_next,
            },
            attempt: 0,
            reply_to: PROBE_ADDR,
            body: udplock_protocol::RequestBody::Status {
                resource: RESOURCES[resource],
            },
            datagram_len: udplock_protocol::STATUS_REQUEST_LEN as u16,
        };
        self.probe_next += 1;
        let now = self.now;
        let action = clients::Action::Status { resource };
        let op = self.hist.begin(PROBE, request, action, now);
        self.probes.insert(request.id, op);
        let datagram = wire::request_datagram(&request, Some(udplock_protocol::STATUS_REQUEST_LEN));
        self.trace.bytes(&datagram);
        let len = self
            .request_lens
            .entry(request.id)
            .or_insert(datagram.len());
        *len = (*len).min(datagram.len());
        let n = self.node(node);
        let local = n.clock.local(now);
        let Some(core) = n.node.as_mut() else {
            return Ok(false);
        };
        core.handle_datagram(local, PROBE_ADDR, &datagram);
        self.after_call(node)?;
        // Not answered (NOT_LEADER, or later), or OVERLOADED ("come back shortly"): it
        // serves nothing.
        let served = matches!(
            self.hist.ops[op].outcome,
            Outcome::Answered { reply, .. } if reply.answer.status != Status::Overloaded
        );
        Ok(served)
    }

    /// After a call into node `id` (only an input changes a replica): state machine safety
    /// (every replica applies the same entries, in order), election safety and leader
    /// completeness, for each of its shards; and which shards it leads now, for the lease
    /// checker.
    fn observe_applied(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let i = (id - 1) as usize;
        for shard in 0..self.applied.len() {
            self.observe_applied_shard(id, shard)?;
            self.check_leader(i, shard)?;
        }
        let n = &mut self.nodes[i];
        n.leading.clear();
        if let Some(core) = n.node.as_ref() {
            let leading = core.shards().iter().enumerate();
            n.leading.extend(
                leading
                    .filter(|(_, r)| r.raft().role() == Role::Leader)
                    .map(|(s, _)| s),
            );
        }
        Ok(())
    }

    /// State machine safety for node `id`'s replica of `shard`.
    fn observe_applied_shard(&mut self, id: NodeId, s: usize) -> Result<(), SimFailure> {
        let now = self.now;
        let i = (id - 1) as usize;
        let Some(shard) = self.nodes[i].replica(s) else {
            return Ok(());
        };
        let applied_index = shard.applied_index();
        let current_term = shard.raft().term();
        let from = self.nodes[i].applied[s] + 1;
        if applied_index + 1 < from {
            return Err(self.fail(format!(
                "node {id} shard {s}: applied index went back from {} to {applied_index}",
                from - 1
            )));
        }
        let applied = &mut self.applied[s];
        // A snapshot (installed from the leader, or restored at restart) stands for the
        // entries it covers: others applied those, and they are no longer in this log.
        let snapshot = shard.raft().snapshot_meta();
        if snapshot.index >= from {
            self.report.snapshots_received += 1;
            if let Some(a) = applied.get((snapshot.index - 1) as usize) {
                if a.term != snapshot.term {
                    let what = format!(
                        "state machine safety: node {id} shard {s} holds a snapshot through {} \
                         of term {}, where term {} was applied",
                        snapshot.index, snapshot.term, a.term
                    );
                    return Err(self.fail(what));
                }
            }
        }
        let from = from.max(snapshot.index + 1);
        for index in from..=applied_index {
            let entry = shard
                .raft()
                .entry(index)
                .expect("an applied entry is in the log");
            match applied.get((index - 1) as usize) {
                Some(a) if (a.term, &a.data) != (entry.term, &entry.data) => {
                    let what = format!(
                        "state machine safety: node {id} shard {s} applied (term {}) at index \
                         {index} where another applied (term {})",
                        entry.term, a.term
                    );
                    return Err(self.fail(what));
                }
                Some(_) => {}
                None => {
                    assert_eq!(applied.len() as u64, index - 1);
                    applied.push(Applied {
                        term: entry.term,
                        data: entry.data.clone(),
                        at: now,
                        committed_by_term: current_term,
                    });
                    self.report.entries_applied += 1;
                }
            }
        }
        self.nodes[i].applied[s] = applied_index;
        Ok(())
    }

    /// Election safety, and leader completeness at the moment a node becomes leader: node
    /// `i`'s replica of shard `s`.
    fn check_leader(&mut self, i: usize, s: usize) -> Result<(), SimFailure> {
        let (id, term, newly) = {
            let n = &self.nodes[i];
            let Some(shard) = n.replica(s) else {
                return Ok(());
            };
            if shard.raft().role() != Role::Leader {
                return Ok(());
            }
            let term = shard.raft().term();
            (n.id, term, n.was_leader_in[s] != Some(term))
        };
        match self.leaders[s].get(&term) {
            Some(&other) if other != id => {
                return Err(self.fail(format!(
                    "election safety: nodes {other} and {id} both lead term {term} of shard {s}"
                )));
            }
            Some(_) => {}
            None => {
                self.leaders[s].insert(term, id);
                self.report.leaders_elected += 1;
            }
        }
        if newly {
            self.nodes[i].was_leader_in[s] = Some(term);
            let raft = self.nodes[i].replica(s).expect("running").raft();
            // Raft §5.4: an entry committed in a term is in the log of every leader of every
            // LATER term. A node may still win an older term late (a vote granted long ago,
            // delivered after a pause); it need not hold what later terms committed, and can
            // never commit anything over it.
            for (position, a) in self.applied[s].iter().enumerate() {
                let index = position as u64 + 1;
                if a.committed_by_term >= term || index <= raft.snapshot_meta().index {
                    continue;
                }
                let held = raft.entry(index);
                if held.is_none_or(|e| e.term != a.term || e.data != a.data) {
                    return Err(self.fail(format!(
                        "leader completeness: node {id}, leader of term {term} of shard {s}, \
                         lacks applied entry {index} (term {})",
                        a.term
                    )));
                }
            }
        }
        Ok(())
    }

    /// Lease safety, per shard: two nodes never both hold a valid lease at one instant of
    /// true time.
    fn check_leases(&mut self) -> Result<(), SimFailure> {
        // Every valid lease: only a leader holds one, and a replica becomes leader only on
        // an input, after which `observe_applied` lists it. A paused node acts on nothing,
        // its lease included.
        let event = self.report.events;
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.paused_until.is_some() || n.leading.is_empty() {
                continue;
            }
            let local = n.clock.local(self.now);
            for k in 0..n.leading.len() {
                let n = &self.nodes[i];
                let s = n.leading[k];
                let raft = n.replica(s).expect("running").raft();
                if !raft.lease_valid(local) {
                    continue;
                }
                let (id, term) = (n.id, raft.term());
                let (seen_at, other, other_term) = self.lease_seen[s];
                if seen_at == event {
                    return Err(self.fail(format!(
                        "lease safety: nodes {:?} (id, term) all hold a valid leader lease of \
                         shard {s}",
                        [(other, other_term), (id, term)]
                    )));
                }
                self.lease_seen[s] = (event, id, term);
                self.check_lease_backed(s, id, term)?;
            }
        }
        Ok(())
    }

    /// Node `id`'s valid lease of shard `s` in `term` rests on a majority that heard from it
    /// in its term since the start of an acknowledged round, which is less than
    /// `election_timeout_min` of true time ago (the lease is shorter by the drift bound):
    /// check that such a majority exists.
    fn check_lease_backed(&mut self, s: usize, id: NodeId, term: u64) -> Result<(), SimFailure> {
        let window = self.shard_config.raft.election_timeout_min;
        let heard = self
            .nodes
            .iter()
            .filter(|n| {
                n.id == id
                    || n.heard_leader[s].is_some_and(|(t, leader, at)| {
                        (t, leader) == (term, id) && at + window > self.now
                    })
            })
            .count();
        if heard * 2 <= self.nodes.len() {
            return Err(self.fail(format!(
                "lease safety: node {id} holds a lease in term {term} of shard {s}, but only \
                 {heard} node(s), itself included, heard from it in that term within the last \
                 {window:?}"
            )));
        }
        if self.healed && self.leader_after_heal[s].is_none() {
            self.leader_after_heal[s] = Some(self.now);
        }
        Ok(())
    }

    /// The checkers that judge the whole run.
    fn finish(&mut self) -> Result<(), SimFailure> {
        for op in &self.hist.ops {
            if op.client != PROBE && matches!(op.outcome, Outcome::Answered { .. }) {
                let read = matches!(
                    op.request.body,
                    udplock_protocol::RequestBody::Status { .. }
                );
                self.report.reads += u64::from(read);
            }
            match op.outcome {
                Outcome::Answered { .. } if op.client != PROBE => self.report.ops_answered += 1,
                Outcome::GaveUp { .. } => self.report.ops_gave_up += 1,
                _ => {}
            }
        }
        self.report.ops = self.hist.ops.iter().filter(|o| o.client != PROBE).count() as u64;
        self.report.grants = self.hist.grants.len() as u64;
        let fail = |sim: &Sim, (at, what): (Instant, String)| sim.fail_at(at, what);
        check::check_mutual_exclusion(&self.hist).map_err(|e| fail(self, e))?;
        check::check_fencing(&self.hist).map_err(|e| fail(self, e))?;
        check::check_doubts(&self.hist).map_err(|e| fail(self, e))?;
        // Each resource's shard: its log holds every logged request on the resource.
        let resource_shards: Vec<u32> = RESOURCES
            .iter()
            .map(|r| udplock_protocol::shard_of(r, self.config.shards))
            .collect();
        for s in 0..self.applied.len() {
            self.check_shard_log(s, &resource_shards)?;
        }
        if let Some(mut script) = self.script.take() {
            let result = script.finish(self);
            self.script = Some(script);
            result?;
        }
        // Liveness.
        for (s, &after_heal) in self.leader_after_heal.iter().enumerate() {
            match after_heal {
                Some(at) if at <= self.heal_at + LEADER_AFTER_HEAL_MAX => {}
                at => {
                    return Err(self.fail(format!(
                        "liveness: no replica of shard {s} held a valid leader lease within \
                         {LEADER_AFTER_HEAL_MAX:?} of healing (first at {at:?})"
                    )));
                }
            }
        }
        check::check_liveness(&self.hist, self.heal_at, self.end).map_err(|e| fail(self, e))?;
        for (s, &mark) in self.catch_up_index.iter().enumerate() {
            let Some(mark) = mark else { continue };
            for n in &self.nodes {
                if n.applied[s] < mark {
                    return Err(self.fail(format!(
                        "liveness: node {} applied only up to {} of the {mark} entries of \
                         shard {s} committed {CATCH_UP:?} before the end",
                        n.id, n.applied[s]
                    )));
                }
            }
        }
        Ok(())
    }

    /// State machine safety of shard `s`'s final log, then durability and linearizability of
    /// the operations on its resources against it.
    fn check_shard_log(&self, s: usize, resource_shards: &[u32]) -> Result<(), SimFailure> {
        let fail = |(at, what): (Instant, String)| self.fail_at(at, what);
        // The final committed log: the longest committed prefix (all agree, see above).
        let best = self
            .nodes
            .iter()
            .filter_map(|n| n.replica(s))
            .max_by_key(|r| r.raft().commit_index())
            .expect("every node runs after healing");
        let commit = best.raft().commit_index() as usize;
        let applied = &self.applied[s];
        let effect: Vec<Instant> = applied.iter().map(|a| a.at).collect();
        if effect.len() < commit {
            return Err(self.fail(format!(
                "committed index {commit} of shard {s} was never applied by any replica \
                 (applied {})",
                effect.len()
            )));
        }
        // The committed log as applied (the best replica may have compacted its prefix);
        // the part it still holds must agree with it.
        let log: Vec<Entry> = applied[..commit]
            .iter()
            .enumerate()
            .map(|(position, a)| Entry {
                term: a.term,
                index: position as u64 + 1,
                data: a.data.clone(),
            })
            .collect();
        let held = best
            .raft()
            .log()
            .iter()
            .filter(|e| e.index as usize <= commit);
        for (e, a) in held.map(|e| (e, &applied[e.index as usize - 1])) {
            if e.term != a.term || e.data != a.data {
                return Err(self.fail(format!(
                    "state machine safety: the final log of shard {s} holds term {} at index \
                     {}, where term {} was applied",
                    e.term, e.index, a.term
                )));
            }
        }
        let on_shard = |resource: usize| resource_shards[resource] as usize == s;
        check::check_log(
            &self.hist,
            &log,
            &effect,
            &self.shard_config.table,
            on_shard,
        )
        .map_err(fail)
    }
}

/// One random seed in this many (those with `seed % OVERLOAD_SEEDS_EVERY` one below it) runs
/// with leaders that take at most [`OVERLOAD_UNCOMMITTED_MAX`] uncommitted proposals, so
/// that clients are answered OVERLOADED often, under every fault.
const OVERLOAD_SEEDS_EVERY: u64 = 4;
const OVERLOAD_UNCOMMITTED_MAX: u64 = 2;
/// The retry-after hint of those seeds: long, as a server in its startup grace sends, so that
/// an OVERLOADED often comes within its hint of a client's deadline.
const OVERLOAD_RETRY_AFTER_MS: u32 = 300;

/// One random seed in this many (those with `seed % KEYLESS_SEEDS_EVERY == 1`) runs a
/// cluster without keys, as do the scenarios; the others authenticate every node-to-node
/// datagram (spec §8.11).
const KEYLESS_SEEDS_EVERY: u64 = 4;

fn keyless_seed(config: &SimConfig) -> bool {
    config.scenario.is_some() || config.seed % KEYLESS_SEEDS_EVERY == 1
}

/// Shard counts a random run draws from ([`shards_of_seed`]), in turn: one shard (the
/// single node's case, and the cheapest: half the seeds), a few (leaders spread over the
/// nodes, PEER datagrams carry several shards' messages), and many (most shards idle: their
/// heartbeats, elections and snapshots still run, beside the busy ones; a 16-shard seed
/// costs about twice a 1-shard one, so a quarter of the seeds, which keeps the CI sweep's
/// time within half again of the one-shard sweep's).
pub const SHARD_COUNTS: [u32; 4] = [1, 4, 1, 16];

/// The shard count of random seed `seed`: one of [`SHARD_COUNTS`] in turn for each block of
/// four seeds, so every count meets every one of the seed classes chosen by `seed % 4`
/// (keyless, `os`, OVERLOADED) and by `seed % 3` (spread leaders).
pub fn shards_of_seed(seed: u64) -> u32 {
    SHARD_COUNTS[(seed / 4 % SHARD_COUNTS.len() as u64) as usize]
}

/// Node `id`'s view of the simulated cluster: every node at its address (`wire::node_addr`),
/// `config.shards` shards with the run's Raft and table settings, leaders spread on the seeds that have a
/// preferred leader, and the low cap on uncommitted proposals of the OVERLOADED seeds.
fn cluster_config(config: &SimConfig, shard: &replica::Config, id: NodeId) -> node::Config {
    let peers = (1..=config.nodes as NodeId)
        .map(|node| (node, wire::node_addr(node)))
        .collect();
    let mut cluster = node::Config {
        shards: config.shards,
        raft: shard.raft.clone(),
        table: shard.table.clone(),
        spread_leaders: spread_leaders(config),
        ..node::Config::new(id, peers)
    };
    if overload_seed(config) {
        // Leaders answer OVERLOADED whenever two proposals are uncommitted, so clients meet
        // it under every fault (issue 7: its paths were never simulated).
        cluster.uncommitted_max = OVERLOAD_UNCOMMITTED_MAX;
    }
    if let Some((every, keep)) = config.scenario.and_then(|s| s.compaction()) {
        (cluster.compact_every, cluster.compact_keep) = (every, keep);
    }
    cluster
}

fn overload_seed(config: &SimConfig) -> bool {
    config.scenario.is_none() && config.seed % OVERLOAD_SEEDS_EVERY == OVERLOAD_SEEDS_EVERY - 1
}

/// How long a leaving node tries to hand its leadership over before it stops anyway (the
/// shell's `udplock server` waits about as long on SIGTERM).
const LEAVE_WITHIN: Duration = Duration::from_millis(2_000);

/// One random seed in three spreads leaders (spec §8.1): each shard has a preferred leader
/// (`node::Config::preferred_leader`), to which whoever leads it hands it once that node is
/// caught up.
fn spread_leaders(config: &SimConfig) -> bool {
    config.scenario.is_none() && config.seed % 3 == 1
}

/// One random seed in this many (those with `seed % PRODUCTION_COMPACTION_SEEDS_EVERY == 3`)
/// snapshots at the production cadence ([`SimConfig::production_compaction`]): a snapshot
/// taken from thousands of entries, with the whole default log kept behind it.
pub const PRODUCTION_COMPACTION_SEEDS_EVERY: u64 = 5;

/// Snapshot cadences `(every, keep)` a replica of a random run draws from (see `start_node`):
/// small, so that every run takes snapshots and a node cut off or restarted catches up
/// through InstallSnapshot; different per node, so that snapshots of different ages meet (the
/// shard's default, 16,384, would take no snapshot in a run of a few thousand entries).
const COMPACTION_CADENCES: [(u64, u64); 3] = [(64, 8), (128, 16), (512, 64)];

/// A node's own default TTL, OVERLOADED retry hint and startup grace (spec §8.8): different
/// on every node, so that a replica applying a command with its own values rather than the
/// logged ones answers differently from the others (and from the checkers' replay).
fn logged_settings(rng: &mut ChaCha8Rng) -> replica::LoggedSettings {
    replica::LoggedSettings {
        ttl_default_ms: rng.gen_range(1_000..60_000),
        retry_after_ms: rng.gen_range(1..50),
        startup_grace_ms: if rng.gen_bool(0.3) {
            rng.gen_range(1..300)
        } else {
            0
        },
    }
}

/// Chance that persisting what one input changed fails part-way or is torn (see the module
/// docs): a few times per run, on top of the crash faults.
const TORN_WRITE_PROBABILITY: f64 = 0.0005;

/// One random seed in this many (those with `seed % OS_SEEDS_EVERY == 2`) runs its nodes
/// with `--durability os` (see the module docs).
const OS_SEEDS_EVERY: u64 = 4;

fn os_seed(config: &SimConfig) -> bool {
    config.scenario.is_none() && config.seed % OS_SEEDS_EVERY == 2
}

/// How often (ms) an `os` node's kernel writes its page cache back: Linux wakes its flusher
/// every 5 s and writes what has been dirty for 30 s; shorter here, so that a power loss may
/// find the disk a little or a lot behind.
const WRITEBACK_INTERVAL_MS: std::ops::Range<u64> = 200..6_000;

/// Chance that a restart of an `os` node follows a power loss (when a minority can lose its
/// state; see the module docs).
const POWER_LOSS_PROBABILITY: f64 = 0.5;

/// Chance that a restart of an `fsync` node follows a power loss (any number at once: their
/// files hold everything they acknowledged).
const FSYNC_POWER_LOSS_PROBABILITY: f64 = 0.3;
