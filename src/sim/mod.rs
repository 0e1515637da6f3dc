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
//! pauses, leadership transfers, graceful stops: a node hands over every shard it leads,
//! stops — half the time announcing a SWIM leave, as `--leave-on-stop` does, half the time
//! not, as a plain SIGTERM — and comes back later; junk snapshots a faulty peer sends a follower as if from its
//! leader; and steps of a node's clock rate within the drift bound, see `clock.rs`). The
//! faults aimed at a leader pick a shard first, half the time one the clients use. One seed
//! in three also spreads leaders (whoever leads a shard hands it to its preferred node once
//! that one is caught up), one in five snapshots at the production cadence
//! ([`SimConfig::production_compaction`]), one in four has
//! leaders that answer OVERLOADED whenever two proposals are uncommitted, one in four on 4
//! nodes or more moves replicas by single-server membership changes while it runs
//! (`membership.rs`: remove a voter, add it back as a learner, promote it), and one in four
//! (`KEYLESS_SEEDS_EVERY`, never a joined one) runs without a cluster key, as every
//! scenario does; the others authenticate every node-to-node datagram (spec §8.11), so the
//! network's duplicates, late copies and a restarted node's first exchanges go through the
//! checks a real node makes. One seed in seven (`JOINED_SEEDS_EVERY`; every seed with `udplock sim --joined`)
//! runs a joined cluster ([`SimConfig::joined`]): node 1 bootstraps it and holds every shard,
//! the others join through it as SWIM members and get and lose replicas as the placement
//! mover adds and removes them (`placement.rs`; and crash, pause, leave and restart with the
//! shards whose files they hold, like any node); the membership checker holds every running member
//! alive everywhere at the end; each of its clients is given one node and discovers the
//! others through the members' tables (MEMBERS, spec §7.1.8), as a real client given one
//! address does. Nothing reads a real clock, and no decision depends on a
//! hash map's iteration order, so a failing seed fails the same way every time: the report carries a digest of
//! the whole event trace (`trace.rs`), which a test compares across two runs of a seed.
//!
//! # Data flow
//!
//! Events wait in one queue ordered by (true time, sequence number). Delivering one calls
//! into exactly one core with that core's own clock reading:
//!
//! ```text
//!   peer datagram  ──> Node::handle_datagram ─┐                  ┌─> poll_persist  ─> Wal<SimDisk> (one commit)
//!   node timer     ──> Node::handle_timeout  ├─> (the node core) ┤   (a moment later: Node::stored)
//!   client request ──> (its datagram) ───────┘                  └─> poll_transmit ─> network ─> node
//!   store event    ──> Node::stored ─────────┘                       (once its `after` is stored)
//!                                                                                  └─> decoded ─> client
//!   client timer   ──> Client::wake / reply ──> Client::on_reply ──> datagrams ─> network ─> node
//! ```
//!
//! The checkers read the replicas (`Node::shards`), each shard on its own, and the Raft
//! messages inside the PEER
//! datagrams (decoded by the codec, `wire.rs`); the nodes know nothing of it. Under a
//! scenario, whose script may hold a Raft message back and deliver it late, each message
//! travels as its own (unauthenticated) datagram.
//!
//! Persistence: every disk node owns a `SimDisk` (`disk.rs`, its data directory) and stores
//! through the real storage code, in the background as the `fsync` shell's writer thread
//! does: the writes a node hands out ([`Node::poll_persist`]) wait until an `Event::Store` a
//! random moment later hands each to `DataDir::apply`, then commits them once
//! (`DataDir::commit`: group commit), as the real shell does (the recovery mark, the Raft
//! delta into the node's write-ahead log [`Wal`], the mark after, in that order, with the
//! syncs the node's durability asks for), and reports them stored ([`Node::stored`]); each
//! datagram waits until the writes it names (`Transmit::after`) are stored, so a leader's
//! Appends leave while it writes them (Raft thesis §10.2.1). A scenario stores at once, as
//! every shell once did. The log's segments are tiny here (`disk::SIM_SEGMENT_BYTES`), so
//! that every run rolls them over and retires them, and the shards that hold the oldest
//! back are compacted (`Node::compact`) as the real shell does. A crash drops the node and
//! the writes it had not stored yet (a process crash keeps everything stored); a restart
//! opens its data directory ([`crate::cluster::storage::DataDir`] over the node's
//! `SimDisk`: its identity, boot record and recovery marks) and its log through the
//! functions a real start runs (`cluster::storage::open_shards`, which decides per shard
//! with [`crate::core::restart::decide`], then `settle_start`, which marks the shards
//! without state, records the identity and the boot and starts the marked shards empty),
//! and builds a new core from that (a fresh rng seed, its clock reading, a new
//! incarnation).
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
//! Failed and torn writes: while a disk node stores and commits what one input produced, one
//! of the writes it makes (a snapshot's, or the commit's) may fail at a random byte (`SimDisk::fail_write`; a disk writes whole
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
//!   and 2) but those junk datagrams, and no node's core drops a datagram as undecodable, not
//!   for it or too long (`NodeStats::dropped`): every other peer here is correct. (Drops for
//!   age — the network's duplicates, datagrams of an earlier life — are expected.)
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
//!
//! # Files
//!
//! This file holds the configuration, the report, the failure, the event queue and the run
//! loop; `network.rs` the datagrams in flight and their delivery; `nodes.rs` a simulated
//! node (its core, disk, clock, start and crash) and the shell's work after every call into
//! it; `disk.rs` the simulated disk and the storing of writes through the real storage code;
//! `faults.rs` drawing and applying the random faults; `invariants.rs` the checkers that read
//! the replicas; `check.rs` the checkers of the clients' history; `clients.rs` the clients
//! (the real call core); `clock.rs` the drifting clocks; `scenarios.rs` the scripted runs;
//! `wire.rs` the codec glue; `trace.rs` the trace digest; `membership.rs` the replicas moved
//! by membership changes. `swim.rs` is apart: the SWIM-only scale simulation of the
//! membership core (`udplock swim-sim`, thousands of members; the cluster runs above run SWIM
//! inside their node cores).

pub(crate) mod check;
mod clients;
mod clock;
mod disk;
mod faults;
mod holds;
mod invariants;
mod membership;
mod network;
mod nodes;
mod placement;
mod removal;
mod scenarios;
pub mod swim;
#[cfg(test)]
mod tests;
mod trace;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use udplock_protocol::Status;

use self::check::{History, Outcome, PROBE};
use self::clients::{Client, Outgoing, ReplyMsg, CLIENT_IDS, RESOURCES};
use self::clock::Clock;
use self::disk::{os_seed, SimDisk, WRITEBACK_INTERVAL_MS};
use self::invariants::Applied;
use self::nodes::SimNode;
pub use self::scenarios::Scenario;
use self::scenarios::Script;
use self::trace::Trace;
use crate::core::lock_table::{self, Request};
use crate::core::node::{self, Node, NodeStats};
use crate::core::peer_auth::{AuthDrop, KeySet};
use crate::core::raft::{self, Entry, Message, NodeId, Role};
use crate::core::replica::{self, Replica};
use crate::core::restart;
use crate::core::time::{Duration, Instant};
use crate::store::{self, Wal};
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
    /// `COMPACTION_CADENCES`. [`SimConfig::new`] sets it for one seed in
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
    /// A mutation experiment, never set by the sweep: a disk node's leaders count their own
    /// log toward a majority as soon as they append to it (`raft::Config::appended_is_durable`)
    /// rather than once it is reported stored, while their writes are still stored a moment
    /// later (`disk.rs`). A leader then answers an entry that only it and a minority hold, and
    /// a crash before its write loses it; with it the durability checkers fire (Raft thesis
    /// §10.2.1: an entry commits once a majority has it durable).
    pub leader_counts_unstored_appends: bool,
    /// A mutation experiment, never set by the sweep: every datagram leaves as soon as the
    /// core hands it out, before the writes it waits for (`Transmit::after` ignored), so a
    /// follower acknowledges entries, and votes, that a crash then loses. With it the
    /// durability checkers fire (Raft §5, Figure 2: persistent state before answering).
    pub sends_before_stored: bool,
    /// The run asks shards' leaders for single-server membership changes while clients run
    /// and faults happen (`membership.rs`); it fails if none commits. [`SimConfig::new`] sets
    /// it for one seed in `MEMBERSHIP_SEEDS_EVERY`.
    pub membership_changes: bool,
    /// A joined cluster (spec §8.1, `udplock server --bootstrap` / `--join`): node 1
    /// bootstraps it and holds every shard; every other node starts joined with node 1 as
    /// its seed, holding no replica until the placement mover adds it to shards
    /// (`placement.rs`). The simulator builds
    /// their `node::Config` as `cluster::join::discover` would have (the cluster id, the seed
    /// with its id): a node's own join discovery is not simulated. Each client is given one
    /// node (drawn from its seed) and finds the others by the real client's discovery
    /// (spec §7.1.8, `core::call::discovery`), through MEMBERS datagrams on the simulated
    /// network. [`SimConfig::new`] sets it for one seed in [`JOINED_SEEDS_EVERY`];
    /// `udplock sim --joined` for every seed.
    pub joined: bool,
    /// In a joined run: replicas move by the nodes' placement driver rather than by the
    /// simulator's random mover ([`driver_seed`]; `udplock sim --joined` keeps the seed's).
    pub placement_by_driver: bool,
    /// A shard to follow on stderr (`udplock sim --watch SHARD`), never set by the sweep:
    /// each node's replica of it (role, term, vote, leader, commit and last index, lease,
    /// recovery) whenever one of them changes, how each start decided it (spec §8.5), and
    /// the faults, restarts and heal between: what a failing seed's shard went through.
    pub watch: Option<u32>,
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
            leader_counts_unstored_appends: false,
            sends_before_stored: false,
            membership_changes: membership::membership_seed(seed, nodes) && !joined_seed(seed),
            joined: joined_seed(seed),
            placement_by_driver: driver_seed(seed),
            watch: None,
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
    /// RETRY answers (address validation, spec §7.2.5) that reached clients: one per
    /// client session and node at least, more after restarts (a new node key).
    pub address_retries: u64,
    /// Of the RETRYs nodes sent, those to a genuine token outside its time window (spec
    /// §7.2.5, "Expiry"): a session older than the token lifetime, or wall clocks skewed
    /// beyond the bound (which the simulator never sets up).
    pub address_tokens_expired: u64,
    /// Leadership transfers a fault started.
    pub transfers: u64,
    /// Graceful stops (a node hands its leadership over, then stops) that completed: those
    /// that announced no leave (`ClusterNode::stop`, SIGTERM) and those that announced one
    /// (`ClusterNode::leave`, `--leave-on-stop`); and how many of either handed leadership
    /// over first (the others did not lead, or could not hand over before `LEAVE_WITHIN`).
    pub stops: u64,
    pub leaves: u64,
    pub stops_handed_over: u64,
    pub disk_losses: u64,
    /// Restarts of `os` nodes after a power loss (their files reverted to what the kernel
    /// had written back; see the module docs).
    pub power_losses: u64,
    /// Restarts of `fsync` nodes after a power loss (their files hold what they synced).
    pub fsync_power_losses: u64,
    /// Datagrams a disk node sent while a write it had handed out earlier was not stored
    /// yet: a leader's Appends sent while it writes their entries (Raft thesis §10.2.1).
    pub sent_before_own_write: u64,
    /// Writes that failed part-way or were torn (the node stopped, see the module docs).
    pub torn_writes: u64,
    /// Snapshots taken because a shard's live entries held a node's write-ahead log's oldest
    /// segment back (`Node::compact`), the most segments a node's log held at once, and the
    /// most segments one node's log retired (deleted) in one incarnation; and the shards
    /// whose live entries were written again instead (nothing to compact).
    pub wal_compactions: u64,
    pub wal_relocations: u64,
    pub wal_segments_max: u64,
    pub wal_segments_retired: u64,
    /// Junk snapshots a faulty peer sent a follower (see `SimNode::junk_snapshots`).
    pub junk_snapshots: u64,
    /// Clock faults (see `Sim::clock_fault`): steps of a clock's rate within the drift bound,
    /// or in the `clock_faults_beyond_bound` experiment stalls and jumps.
    pub clock_faults: u64,
    /// Deaths the nodes' SWIM members declared (spec §8.12; one per node that declared it),
    /// and of those, how many were declared after the heal of a node that ran then: the
    /// network was healthy, so each is a false positive (a suspicion started before the heal
    /// may still end so; not a failure, since SWIM decides nothing, but visible). Partitions
    /// and pauses during the safety phase legitimately cause the others.
    pub swim_deaths: u64,
    pub swim_deaths_healed: u64,
    /// Membership changes the simulator asked for that a leader accepted or refused, and
    /// CONFIG entries the replicas applied (committed changes; `membership.rs`).
    pub membership_proposed: u64,
    pub membership_refused: u64,
    /// Removals of a voter whose replica was replaced (it lost its state while the shard's
    /// configuration named its replica id), asked for by `membership.rs`.
    pub membership_replaced: u64,
    pub membership_changes: u64,
    /// Joined runs (`placement.rs`): changes the simulator asked for that a leader accepted
    /// or refused, and replicas nodes created on a leader's record and dropped (removed, or
    /// orphans) while they ran.
    pub placement_proposed: u64,
    pub placement_refused: u64,
    /// Removals of a voter that the mover (`placement.rs`) or the membership cycle
    /// (`membership.rs`) drew but did not ask for: the remaining voters would have lacked a
    /// majority holding their state (`Sim::removal_keeps_majority`).
    pub voter_removals_withheld: u64,
    pub replicas_created: u64,
    pub replicas_dropped: u64,
    /// Joins a forger without the key sent a node of a joined cluster (`send_forged_join`).
    pub forged_joins: u64,
    /// Operator REMOVEs of joined runs (`removal.rs`) that took effect (a crashed node held
    /// dead, removed), and those that had to change nothing and did not (under another key,
    /// replayed, at another incarnation).
    pub removals: u64,
    pub removals_refused: u64,
    /// Crashes and stops of joined nodes (not static voters, [`SimConfig::joined`]).
    pub joined_crashes: u64,
    /// Joined runs, whose clients are each given one node and discover the others (spec
    /// §7.1.8, the real client's `core::call::discovery`): MEMBERS_REPLY pages the clients'
    /// discovery took, member tables that changed a client's ring, and clients that had an
    /// answer to a lock request from a node they were not given.
    pub members_pages: u64,
    pub rings_adopted: u64,
    pub clients_beyond_given: u64,
    /// Replies to a client's call dropped because they came from a node the client did not
    /// know yet (spec §7.1.4 rule 5: a leader it never sent to answered a request its
    /// predecessor had logged, before discovery listed it). Each asks for a refresh; the
    /// liveness checker holds the calls to their bounds all the same.
    pub replies_from_unknown: u64,
    /// KEEPALIVEs (spec §4.11) answered OK that listed the client's hold: with its bit set
    /// (the hold renewed), and with it clear (the hold dropped at once).
    pub keepalives_renewed: u64,
    pub keepalives_dropped: u64,
    /// CANCEL_WAITs of random clients answered OK (spec §4.12): all, those that took their
    /// waiter out of the queue, and those that found the grant had crossed them.
    pub cancels: u64,
    pub cancels_removed: u64,
    pub cancels_crossed: u64,
    /// HOLDS reads (random runs) answered OK, and the holds they listed, each checked
    /// against the history (`holds.rs`).
    pub holds_pages: u64,
    pub holds_listed: u64,
    /// Sealed-client seeds: final answers UNAUTHENTICATED to the client whose key no node
    /// lists (spec §7.2.6); it never got another.
    pub unauthenticated: u64,
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
    /// The run was a joined cluster ([`SimConfig::joined`]).
    pub joined: bool,
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
                if self.joined && !joined_seed(self.seed) {
                    write!(f, " --joined")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SimFailure {}

/// The SWIM protocol period of the simulated nodes (`node::Config::swim_period`; a real
/// node's default is 1 s): short enough that a node declared dead during the faults is
/// alive again everywhere well within the shortest liveness phase (3 s): a listed node held
/// dead is asked again every `SWIM_RECONNECT_PERIODS` (5) periods, and a suspicion left
/// over from the faults is refuted within a period or two of the buddy system's ping.
pub const SWIM_PERIOD: Duration = Duration::from_millis(100);

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

/// How far a node's wall clock reads from true time, at most: half the skew the nodes'
/// address tokens allow (spec §7.2.5), so any two nodes' wall clocks differ by at most
/// `ADDRESS_TOKEN_SKEW_S` and every node accepts every other's tokens.
const WALL_CLOCK_SKEW_US_MAX: i64 = udplock_protocol::ADDRESS_TOKEN_SKEW_S as i64 * 1_000_000 / 2;

/// Node `id`'s wall-clock error in run `seed`, within ± [`WALL_CLOCK_SKEW_US_MAX`] µs. A hash
/// of the seed and the id (SplitMix64's finalizer), not a draw from the run's rng, so that
/// it changed no other draw of any seed.
fn wall_clock_skew_us(seed: u64, id: NodeId) -> i64 {
    let mut z = seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED_CA11_C10C_C0DE;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let span = 2 * WALL_CLOCK_SKEW_US_MAX as u64 + 1;
    (z % span) as i64 - WALL_CLOCK_SKEW_US_MAX
}

/// A clock within ± half the drift bound of true time, so any two clocks differ by at most
/// the bound, from a random offset.
/// Mixed into the seed for the stream of store delays (`Sim::store_rng`).
const STORE_SEED_SALT: u64 = 0x7374_6f72_6564_7573;

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
    /// A client's request datagram, as it encoded it.
    Request {
        to: NodeId,
        from: usize,
        id: lock_table::RequestId,
        datagram: Arc<Vec<u8>>,
    },
    Reply {
        to: usize,
        from: NodeId,
        msg: ReplyMsg,
        /// What the client's key made of the datagram's seal (spec §7.1.10).
        seal: crate::core::call::Seal,
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
    /// Disk node `node` stores the writes its core handed out since the last one, and
    /// reports them stored (`disk.rs`); `generation` as [`SimNode::store_generation`].
    Store {
        node: NodeId,
        generation: u64,
    },
    /// Note the commit index the replicas must all reach by the end.
    CatchUpMark,
    /// Ask a shard's leader for the next membership change (`membership.rs`).
    Membership,
    /// The `n`-th HOLDS read of a random run (`holds.rs`).
    HoldsRead {
        n: u64,
    },
    /// Ask a shard's leader of a joined run for the next placement change (`placement.rs`).
    Placement,
    /// An operator's REMOVE, authentic, forged or stale, to a node of a joined run
    /// (`removal.rs`).
    Removal,
    /// Leader `from` starts handing leadership of `shard` to `to` (a fault or a scenario; an
    /// event, so that what it sends passes a script's `on_send` like anything else).
    Transfer {
        from: NodeId,
        to: NodeId,
        shard: u32,
    },
    /// Node `node` is stopping gracefully (`ClusterNode::stop`, SIGTERM; with `announce`,
    /// `ClusterNode::leave`, `--leave-on-stop`): while it leads it hands leadership to a
    /// caught-up peer, then it stops; it gives up handing over at `until` and stops anyway.
    Leave {
        node: NodeId,
        /// It announces a SWIM leave (the others hold it left, and placement replaces its
        /// replicas at once); else they find it dead (SWIM), and placement waits dead-after.
        announce: bool,
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
            Event::Request {
                to, from, datagram, ..
            } => {
                trace.word(2);
                trace.word(*to);
                trace.word(*from as u64);
                trace.bytes(datagram);
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
            Event::Store { node, generation } => {
                trace.word(18);
                trace.word(*node);
                trace.word(*generation);
            }
            Event::CatchUpMark => trace.word(11),
            Event::Membership => trace.word(14),
            Event::HoldsRead { n } => {
                trace.word(17);
                trace.word(*n);
            }
            Event::Placement => trace.word(15),
            Event::Removal => trace.word(16),
            Event::Transfer { from, to, shard } => {
                trace.word(12);
                trace.word(*from);
                trace.word(*to);
                trace.word((*shard).into());
            }
            Event::Leave {
                node,
                announce,
                until,
                led,
                incarnation,
            } => {
                trace.word(13);
                trace.word(*node);
                trace.word((*announce).into());
                trace.word(until.as_micros());
                trace.word((*led).into());
                trace.word(*incarnation);
            }
        }
    }
}

pub(crate) struct Sim {
    config: SimConfig,
    shard_config: replica::Config,
    /// The cluster's keys (spec §8.11): most random runs have one; the others and the
    /// scenarios run without, where a datagram held back and delivered late can be rebuilt
    /// from its messages, and a faulty peer's junk reaches Raft.
    keys: KeySet,
    cluster_id: u64,
    /// A node's wall clock reads this plus true time plus its own skew
    /// ([`wall_clock_skew_us`]), in µs: INIT's first token, the address tokens' time.
    wall_clock_base_us: u64,
    rng: ChaCha8Rng,
    /// Draws how long each disk node takes to store its writes (`disk.rs`), from a stream of
    /// its own, so that those draws shift none of the faults' and the network's.
    store_rng: ChaCha8Rng,
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
    /// Per shard, the configuration of the last leader seen (`after_call`): the faults
    /// that take a node's state respect it also while that leader and every other replica
    /// naming the node are down (`Sim::state_loss_keeps_majorities`).
    leader_configs: Vec<Option<crate::core::raft::Membership>>,
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
    outbox: Vec<Outgoing>,
    /// The operator's removals of a joined run (`removal.rs`).
    removals: removal::Removals,
    /// The last line `--watch` printed (`Sim::watch`): it prints only changes.
    watched: String,
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
            joined: config.joined,
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
        let store_seed = config.seed ^ STORE_SEED_SALT;
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
        // Every node's wall clock reads this plus true time plus its own skew (in µs): INIT
        // takes it, and the address tokens (spec §7.2.5). Far enough from 0 that no skew
        // takes it below.
        let wall_clock_base_us = rng.gen_range(1..1_000_000_000) + WALL_CLOCK_SKEW_US_MAX as u64;
        let nodes = voters
            .iter()
            .map(|&id| SimNode {
                id,
                node: None,
                stats: Arc::default(),
                disk: SimDisk::new(),
                voter: !config.joined || id == BOOTSTRAP_NODE,
                joined: config.joined,
                wal: None,
                shards: shards as u32,
                os: os_seed(&config),
                dir: None,
                boot: 1,
                memory: false,
                compaction: match COMPACTION_CADENCES[rng.gen_range(0..COMPACTION_CADENCES.len())] {
                    _ if config.production_compaction => (
                        replica::COMPACT_EVERY_DEFAULT,
                        replica::COMPACT_KEEP_DEFAULT,
                    ),
                    cadence => cadence,
                },
                // A cluster's first start needs the flag; a unit file may keep it afterwards.
                // A joined cluster's: its bootstrap node's `--bootstrap` alone.
                new_cluster: !config.joined || id == BOOTSTRAP_NODE,
                settings: logged_settings(&mut rng),
                clock: random_clock(&mut rng, drift_ppm),
                paused_until: None,
                paused_since: None,
                timer_generation: 0,
                crashes: 0,
                applied: vec![0; shards],
                held: vec![false; shards],
                was_leader_in: vec![None; shards],
                heard_leader: vec![None; shards],
                junk_snapshots: 0,
                junk_unauthenticated: 0,
                stored_seq: 0,
                handed_seq: 0,
                reported_seq: 0,
                unstored: Vec::new(),
                waiting: Vec::new(),
                store_generation: 0,
                store_scheduled: false,
                leading: Vec::new(),
            })
            .collect();
        let scripted = config.scenario.is_some_and(|s| s.scripted_clients());
        let mut clients: Vec<Client> = (0..config.clients)
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
                    // A static run's clients are given every node; a joined run's one node,
                    // and they find the others by the real client's discovery (spec §7.1.8).
                    config.joined,
                    Instant::ZERO,
                )
            })
            .collect();
        if sealed_clients_seed(&config) {
            let wrong = clients.len() - 1;
            for c in &mut clients {
                let hex = match c.idx == wrong {
                    true => SIM_WRONG_CLIENT_KEY,
                    false => SIM_CLIENT_KEY,
                };
                c.set_key(sim_client_key(hex), c.idx == wrong);
            }
        }
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
        let removals = removal::Removals::new(config.seed);
        let mut sim = Sim {
            config,
            shard_config,
            keys,
            cluster_id,
            wall_clock_base_us,
            rng,
            store_rng: ChaCha8Rng::seed_from_u64(store_seed),
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
            leader_configs: vec![None; shards],
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
            removals,
            watched: String::new(),
        };
        sim.hist.keyless_to_the_nodes = sim
            .clients
            .iter()
            .filter(|c| c.wrong_key)
            .map(|c| c.idx)
            .collect();
        for id in voters {
            sim.start_node(id)?;
            // Later starts: the unit file kept `--new-cluster`, or the operator removed it.
            let keep = sim.rng.gen_bool(0.5);
            // (A joined node's start has no such flag; the bootstrap node's restarts set it,
            // as `udplock server` does for the voter its directory records: spec §8.1, "The
            // first configuration".)
            let joined = sim.config.joined;
            let n = sim.node(id);
            n.new_cluster = n.voter && (keep || joined);
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
        sim.arm_membership();
        sim.arm_placement();
        sim.arm_removal();
        sim.schedule_at(heal_at, Event::Heal);
        sim.schedule_at(end - CATCH_UP, Event::CatchUpMark);
        if sim.config.scenario.is_none() {
            sim.schedule(holds::HOLDS_READ_PERIOD, Event::HoldsRead { n: 0 });
        }
        Ok(sim)
    }

    /// `--watch` (see [`SimConfig::watch`]): after an event, each node's replica of `shard`,
    /// if any of them changed.
    fn watch(&mut self, shard: usize) {
        let at = self.now.as_micros();
        let mut line = String::new();
        for n in &self.nodes {
            let paused = if n.paused_until.is_some() {
                " paused"
            } else {
                ""
            };
            let Some(raft) = n.replica(shard).map(|r| r.raft()) else {
                let what = if n.node.is_some() {
                    "no replica"
                } else {
                    "down"
                };
                line.push_str(&format!(" | {}: {what}", n.id));
                continue;
            };
            let recovery = match () {
                _ if raft.asking_as_new() => " asking-as-new",
                _ if raft.asking() => " asking",
                _ if raft.rejoining() => " catching-up",
                _ => "",
            };
            line.push_str(&format!(
                " | {}:{paused} {:?} t{} vote {:?} leader {:?} commit {} last {} lease {}{recovery}",
                n.id,
                raft.role(),
                raft.term(),
                raft.hard_state().voted_for,
                raft.leader(),
                raft.commit_index(),
                raft.last_index(),
                raft.lease_valid(n.clock.local(self.now)),
            ));
        }
        if line != self.watched {
            eprintln!("{at:>10}us shard {shard}{line}");
            self.watched = line;
        }
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
            joined: self.config.joined,
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
            // `--watch`: the events that are not traffic or timers, by name.
            match event {
                _ if self.config.watch.is_none() => {}
                Event::Peer { .. }
                | Event::Request { .. }
                | Event::Reply { .. }
                | Event::Timer { .. }
                | Event::ClientWake { .. }
                | Event::Store { .. } => {}
                ref other => eprintln!("{:>10}us {other:?}", at.as_micros()),
            }
            self.handle(event)?;
            if let Some(shard) = self.config.watch {
                self.watch(shard as usize);
            }
            self.check_leases()?;
            if let Some(mut script) = self.script.take() {
                let result = script.step(self);
                self.script = Some(script);
                result?;
            }
        }
        self.now = self.end;
        self.report.simulated = self.end.saturating_since(Instant::ZERO);
        for n in &self.nodes {
            let expired = n
                .stats
                .address_tokens_expired
                .load(std::sync::atomic::Ordering::Relaxed);
            self.report.address_tokens_expired += expired;
        }
        self.report.trace = self.trace.digest();
        self.finish()
    }

    /// Node `id`'s wall clock at true time `now`, in µs since 1970: as NTP keeps a real
    /// node's, it follows true time (its rate does not drift with the node's monotonic
    /// clock), off by the node's own skew, within the bound of spec §7.2.5.
    fn wall_clock_us(&self, id: NodeId, now: Instant) -> u64 {
        let skewed = self.wall_clock_base_us as i64
            + now.as_micros() as i64
            + wall_clock_skew_us(self.config.seed, id);
        u64::try_from(skewed).expect("the base keeps every wall clock positive")
    }

    fn handle(&mut self, event: Event) -> Result<(), SimFailure> {
        match event {
            Event::Peer { to, from, datagram } => self.deliver_peer(to, from, datagram)?,
            Event::Request {
                to,
                from,
                id,
                datagram,
            } => {
                if self.blocked.contains(&(CLIENT_ENDPOINT + from as u64, to)) {
                    return Ok(());
                }
                if let Some(until) = self.node(to).paused_until {
                    let event = Event::Request {
                        to,
                        from,
                        id,
                        datagram,
                    };
                    self.schedule_at(until, event);
                    return Ok(());
                }
                self.deliver_request_datagram(to, from, id, &datagram)?;
            }
            Event::Reply {
                to,
                from,
                msg,
                seal,
                ..
            } => {
                if self.blocked.contains(&(from, CLIENT_ENDPOINT + to as u64)) {
                    return Ok(());
                }
                if matches!(&msg, ReplyMsg::Answer(r) if r.answer.status == Status::Overloaded) {
                    self.report.overloaded += 1;
                }
                if matches!(&msg, ReplyMsg::Retry { .. }) {
                    self.report.address_retries += 1;
                }
                let now = self.now;
                let mut out = std::mem::take(&mut self.outbox);
                self.clients[to].on_reply(now, from, msg, seal, &mut self.hist, &mut out);
                self.send_requests(to, &mut out);
                self.outbox = out;
                self.arm_client(to);
            }
            Event::Timer { node, generation } => {
                let now = self.now;
                let wall = self.wall_clock_us(node, now);
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
                    core.set_wall_clock(local, wall);
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
            Event::Restart { node } => self.restart(node)?,
            Event::Writeback { node } => self.writeback(node),
            Event::Store { node, generation } => self.store_event(node, generation)?,
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
            Event::Membership => self.membership_step()?,
            Event::HoldsRead { n } => {
                self.read_holds(n)?;
                if self.now + holds::HOLDS_READ_PERIOD < self.end {
                    let next = Event::HoldsRead { n: n + 1 };
                    self.schedule(holds::HOLDS_READ_PERIOD, next);
                }
            }
            Event::Placement => self.placement_step()?,
            Event::Removal => self.removal_step()?,
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
        let datagram =
            wire::request_datagram(&request, Some(udplock_protocol::STATUS_REQUEST_LEN), None);
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

/// One random seed in this many (those with `seed % CLIENT_KEYS_SEEDS_EVERY == 2`) runs its
/// nodes with a client key file (spec §7.2.6) of one key and `none *`: the simulated clients
/// send without keys, as a deployment turning keys on does, so every request goes through
/// the nodes' client authentication, and every answer a shard produces later is sent only
/// by a node that received a copy of its request (a new leader after a failover sends none:
/// the client's next copy gets it).
const CLIENT_KEYS_SEEDS_EVERY: u64 = 11;

/// The client key of the simulator's key files, and one they never list (the wrong key).
const SIM_CLIENT_KEY: &str = "5be1d2c3a4f506172839aa4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";
const SIM_WRONG_CLIENT_KEY: &str =
    "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";

/// One random seed in this many (those with `seed % SEALED_CLIENTS_SEEDS_EVERY == 0`) runs
/// its nodes with a client key file that authorizes the simulated clients' ids by prefix
/// (spec §7.2.6), and no `none` line; every client seals its requests with that key and reads
/// the seals of the answers (spec §7.1.10), but the last, which seals with a key the file
/// does not list: each of its requests must be answered UNAUTHENTICATED, none have an
/// effect (`Client::key_violation`). Takes precedence over [`CLIENT_KEYS_SEEDS_EVERY`].
const SEALED_CLIENTS_SEEDS_EVERY: u64 = 3;

fn sealed_clients_seed(config: &SimConfig) -> bool {
    // Not the production-compaction seeds: their snapshots need every client's entries.
    config.scenario.is_none()
        && config.seed % SEALED_CLIENTS_SEEDS_EVERY == 0
        && !config.production_compaction
}

/// A client key from its 64 hex digits.
fn sim_client_key(hex: &str) -> udplock_protocol::ClientKey {
    let mut secret = [0u8; udplock_protocol::CLIENT_KEY_LEN];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    udplock_protocol::ClientKey::new(secret)
}

fn client_keys_seed(config: &SimConfig) -> bool {
    config.scenario.is_none() && config.seed % CLIENT_KEYS_SEEDS_EVERY == 2
}

fn keyless_seed(config: &SimConfig) -> bool {
    // A joined cluster needs a key (`udplock server --join` refuses to start without one):
    // a stranger's join is accepted only authenticated (spec §8.3 rule 3, §8.11).
    config.scenario.is_some() || (config.seed % KEYLESS_SEEDS_EVERY == 1 && !config.joined)
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
        raft: crate::core::raft::Config {
            appended_is_durable: config.leader_counts_unstored_appends,
            ..shard.raft.clone()
        },
        table: shard.table.clone(),
        spread_leaders: spread_leaders(config),
        swim_period: SWIM_PERIOD,
        // Joined runs move shards by the nodes' driver or by the simulator's random mover
        // (`SimConfig::placement_driver`); a static cluster has no placement.
        placement: config
            .placement_driver()
            .then(|| crate::core::placement::Planner::new(3, SIM_DEAD_AFTER).expect("3 replicas")),
        ..node::Config::new(id, peers)
    };
    if config.joined {
        // Spec §8.1: node 1 bootstrapped the cluster (it alone is a voter); the others
        // joined through it, as `cluster::join::discover` hands a joining node its seed.
        let first = (BOOTSTRAP_NODE, wire::node_addr(BOOTSTRAP_NODE));
        let bootstrap = id == BOOTSTRAP_NODE;
        cluster.peers = if bootstrap { vec![first] } else { Vec::new() };
        cluster.joined = Some(node::Joined {
            cluster_id: joined_cluster_id(config.seed),
            addr: wire::node_addr(id),
            seeds: if bootstrap { Vec::new() } else { vec![first] },
        });
    }
    if sealed_clients_seed(config) {
        // The clients' ids (`c0` ...) by their prefix, and no `none` line: a request without
        // a key, or with a key not listed, is answered UNAUTHENTICATED.
        let file = crate::client_keys::ClientKeyFile::parse(&format!("{SIM_CLIENT_KEY} c\n"))
            .expect("a valid key file");
        cluster.client_keys = Some(std::sync::Arc::new(file));
    } else if client_keys_seed(config) {
        let file =
            crate::client_keys::ClientKeyFile::parse(&format!("{SIM_CLIENT_KEY} sim/\nnone *\n"))
                .expect("a valid key file");
        cluster.client_keys = Some(std::sync::Arc::new(file));
    }
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

/// One random seed in this many (those with `seed % JOINED_SEEDS_EVERY == 5`; 7 is prime to
/// the other classes' 3, 4 and 5, so a joined run meets each of them) runs a joined cluster
/// ([`SimConfig::joined`]).
pub const JOINED_SEEDS_EVERY: u64 = 7;

/// Whether random seed `seed` runs a joined cluster (see [`JOINED_SEEDS_EVERY`]).
pub fn joined_seed(seed: u64) -> bool {
    seed % JOINED_SEEDS_EVERY == 5
}

/// How long a node must be dead before the placement driver of a joined run replaces its
/// replicas (`node::Config::placement`, `--dead-after-ms`): short, so that crashes of the
/// safety phase (50 ms to 2 s) both do and do not outlast it.
pub const SIM_DEAD_AFTER: Duration = Duration::from_millis(1_000);

/// Whether a joined run of random seed `seed` moves its replicas by the nodes' own
/// placement driver (`core::node`'s `placing`, issue 10): every other joined seed. The rest
/// use the random mover (`placement.rs`), which reaches configurations the driver never
/// makes ([`SimConfig::placement_driver`]).
pub fn driver_seed(seed: u64) -> bool {
    (seed / JOINED_SEEDS_EVERY) % 2 == 1
}

impl SimConfig {
    /// The run moves replicas by the placement driver (a joined run whose
    /// `placement_by_driver` is set).
    pub fn placement_driver(&self) -> bool {
        self.joined && self.placement_by_driver
    }
}

/// The id a forger's join announces in a joined run (`Sim::send_forged_join`): no node's,
/// at an address no node has.
pub(crate) const FORGED_JOINER: NodeId = 200;

/// The node that bootstraps a joined run: the static voter of every shard.
pub(crate) const BOOTSTRAP_NODE: NodeId = 1;

/// A joined run's cluster id: what `--bootstrap` draws at random, here from the seed
/// (non-zero, spec §8.1).
fn joined_cluster_id(seed: u64) -> u64 {
    udplock_protocol::shard_hash(format!("joined sim {seed}").as_bytes()).max(1)
}

fn overload_seed(config: &SimConfig) -> bool {
    config.scenario.is_none() && config.seed % OVERLOAD_SEEDS_EVERY == OVERLOAD_SEEDS_EVERY - 1
}

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
