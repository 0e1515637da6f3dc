//! Raft consensus for one shard, as a pure deterministic state machine: leader election with
//! PreVote, log replication, the commit rule, CheckQuorum and a leader lease. No IO, no clock,
//! no global randomness: the caller passes `now` and a seed in, and drains what to send. The
//! rules on the wire are spec §8.5 (`spec/node-protocol.md`), and the simulator (`crate::sim`)
//! runs this core with checkers of its safety; citations are to the Raft paper
//! ("Raft §5.x", Ongaro & Ousterhout 2014) and Ongaro's thesis ("thesis §x", *Consensus:
//! Bridging Theory and Practice*, 2014).
//!
//! # Data flow
//!
//! ```text
//!   datagram ──> handle_message(now, from, msg) ─┐
//!   timer    ──> handle_timeout(now)            ├─> state ──> take_persist(): store it
//!   client   ──> propose(now, data)             ─┘                  │
//!   stored   ──> persisted(index, term) ─> durable: what a leader counts for itself
//!                                                                   v
//!                            poll_message() ──> (to, Message) datagrams, in order
//!                            poll_snapshot() ──> a snapshot installed from the leader (first)
//!                            poll_committed() ──> committed entries, index order, once each
//!                            poll_timeout() ──> when to call handle_timeout next
//!                            lease_valid(now) ──> may the leader answer from its own state?
//! ```
//!
//! One owner thread per node takes one input, takes what [`Raft::take_persist`] hands it
//! (the delta since the last call: see `persist.rs`), stores it and reports it stored
//! ([`Raft::persisted`]), and drains the outputs. Messages are sent only after the state
//! that caused them is durable, so a vote or an acknowledged entry survives a crash (Raft
//! §5, Figure 2, "persistent state"), with one exception: a leader's Appends may leave while
//! it writes their entries (thesis §10.2.1), because it counts itself toward a majority only
//! for what was reported stored (`durable`). So an entry commits once a majority has it
//! durable, the leader among them or not, and a single voter commits once its write is
//! reported, not inside `propose` (unless its log counts as durable once appended,
//! [`Config::appended_is_durable`], for a node that stores nothing). A leader's `propose` only
//! appends to the log; the Appends that carry new entries are built when the shell drains
//! `poll_message`, so proposals made between two drains travel together (batching, up to
//! `entries_per_append_max` entries per Append).
//!
//! # Roles
//!
//! - **Follower**: answers the leader's Appends (consistency check and conflict truncation,
//!   Raft §5.3) and votes. Its election timer, drawn afresh from
//!   `[election_timeout_min, election_timeout_max)` with the seeded rng each time it is
//!   reset (Raft §5.2), restarts on every Append of the current leader and on every vote it
//!   grants.
//! - **PreCandidate** (thesis §9.6): the timer fired. It asks every voter "would you vote for
//!   me in term + 1?" without changing its own term, so a node cut off from the cluster
//!   cannot inflate terms and, on rejoining, depose a healthy leader. Only a majority of
//!   grants starts a real election.
//! - **Candidate**: term + 1, votes for itself, asks for votes (Raft §5.2).
//! - **Leader**: appends a no-op of its term (so it can commit, Raft §5.4.2, and learn the
//!   commit index, thesis §6.4), sends an Append to every follower each
//!   `heartbeat_interval`, replicates proposals, and commits an index once a majority stores
//!   it *and* it is of the current term (Raft §5.4.2, Figure 8). Older entries commit with it.
//!
//! # Files
//!
//! One concern per file, each with the `impl Raft` block of its inputs and outputs; this file
//! holds the types, the public API that belongs to no single concern, and the dispatch of
//! inputs to the handlers:
//!
//! - `election.rs`: PreVote, Vote, stickiness; becoming follower, candidate or leader (Raft
//!   §5.2, §5.4.1; thesis §4.2.3, §9.6).
//! - `replication.rs`: Append and AppendReply, each follower's progress and flow control,
//!   the commit rule, answers of an earlier life (Raft §5.3, §5.4; spec §8.5).
//! - `lease.rs`: heartbeat rounds, the leader lease and why it is safe, CheckQuorum,
//!   ReadIndex confirmation (thesis §6.4, §6.4.1, §6.2).
//! - `snapshot.rs`: log compaction, InstallSnapshot sent and received, the state machine's
//!   check of a received snapshot (Raft §7; thesis §5; spec §8.5).
//! - `transfer.rs`: leadership transfer and TimeoutNow (thesis §3.10).
//! - `membership.rs`: the configuration in the log (voters and learners), single-server
//!   changes and when a leader may propose one (thesis §4; spec §8.5, "Configuration").
//! - `rejoin.rs`: a node without its state rejoining: TermQuery and its answers, the
//!   recovery states (spec §8.5).
//! - `entries.rs`: the log itself; `persist.rs`: what to store, as a delta; `shared.rs`: the
//!   budgets a node's Raft groups share. The messages themselves ([`Message`]) are the
//!   protocol crate's [`RaftMessage`], so the PEER records need no mapping of their own.
//!
//! # Bounds
//!
//! The log holds what has not been compacted: bounded once the shell compacts. Per follower,
//! at most `APPENDS_IN_FLIGHT_MAX` Appends' worth of unacknowledged entries, or
//! `SNAPSHOT_CHUNKS_IN_FLIGHT_MAX` snapshot chunks, are in flight; a follower buffers at most
//! one partial snapshot of at most `SNAPSHOT_LEN_MAX` bytes, and the Raft groups of one node
//! at most [`SNAPSHOT_RECEIVE_BYTES_MAX`] together ([`NodeShared`]: a transfer reserves its
//! length when it starts, is refused if it does not fit, and is dropped once it stops
//! growing); log lines about peer input are bounded per node and kind
//! ([`PEER_LOG_LINES_MAX`]); the leader remembers the start
//! time of at most `ROUNDS_TRACKED_MAX` rounds; the outbox holds what one input produced (a
//! few messages per voter, or a window of chunks). A message from a voter makes this node
//! send that voter at most one message (spec §8.5, "One record back per record"): a leader
//! fills a follower's window only on its heartbeat rounds and proposals, and each answer
//! brings one more message, so a forged or repeated answer amplifies nothing.

/// Writes a log line about peer input if this node's budget for its kind allows it
/// ([`PEER_LOG_LINES_MAX`] per [`PEER_LOG_PERIOD`]), telling how many were skipped before it.
macro_rules! peer_log {
    ($raft:expr, $now:expr, $kind:ident, $level:ident, $($arg:tt)+) => {
        if let Some(skipped) = $raft.shared.peer_log.admit(PeerLogKind::$kind, $now) {
            log::$level!("{}{skipped}", format_args!($($arg)+));
        }
    };
}

mod election;
mod entries;
mod lease;
mod membership;
mod persist;
mod rejoin;
mod replication;
pub(crate) mod shared;
mod snapshot;
mod transfer;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
pub use udplock_protocol::RaftMessage;
use udplock_protocol::{LogEntry, PeerEntry};

use self::entries::RaftLog;
pub use self::entries::ENTRY_MEMORY_OVERHEAD;
use self::membership::MembershipOf;
pub use self::membership::{
    MemberReplicas, Membership, MembershipError, SnapshotMembership, CATCH_UP_ENTRIES_MAX,
};
pub use self::persist::Persist;
use self::rejoin::{Recovery, TermAnswer};
use self::replication::{Progress, Sending};
pub(crate) use self::shared::Skipped;
pub use self::shared::{
    NodeShared, PeerLogKind, PEER_LOG_LINES_MAX, PEER_LOG_PERIOD, SNAPSHOT_RECEIVE_BYTES_MAX,
    SNAPSHOT_RECEIVE_STALL_TIMEOUTS,
};
use self::snapshot::{Check, SnapshotReceive};
use self::transfer::{Transfer, TransferSeen};
use crate::core::time::{Duration, Instant};

/// A voter's identity, unique within a shard.
pub type NodeId = u64;

/// A replica's identity on its node (spec §8.5, "Replica identities"): a random non-zero
/// number the replica draws when it starts without state (fresh, new, or rejoining) and
/// keeps with its state. A replica that lost its state comes back with a new one, so every
/// configuration that names the old one treats it as a new server. 0 names no replica: a
/// learner not heard from yet, or a hard state stored before replica ids existed.
pub type ReplicaId = u64;

/// One single-server change of a shard's membership (thesis §4.1): the shard's leader
/// proposes it as a log entry, and the new configuration takes effect on every replica as
/// soon as the entry is in its log. Changing one server at a time keeps any majority of the
/// old voters overlapping any majority of the new ones, so two leaders of one term can never
/// both win. The placement of replicas (`core::placement`) decides which change comes next;
/// Raft decides whether and when it is safe to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Start replicating the shard to a node that neither votes nor counts towards any
    /// majority until it is promoted: a new replica catches up first (thesis §4.2.1), so
    /// adding it never leaves the shard waiting on a node with an empty log.
    AddLearner(NodeId),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Stop replicating the shard to a node, voter or learner. A leader that removes itself
    /// steps down once the change is committed (thesis §4.2.2).
    Remove(NodeId),
}

/// Unacknowledged Appends (each up to `entries_per_append_max` entries) the leader pipelines to
/// one follower before it waits for an answer. Bounds the memory a slow follower costs in
/// messages and the entries resent after a loss, while keeping a follower that acknowledges
/// promptly from ever waiting on the window.
pub const APPENDS_IN_FLIGHT_MAX: u64 = 4;

/// Unacknowledged snapshot chunks the leader sends one follower before it waits for an
/// answer: about 10 KB with the default chunk size, so a transfer costs a few round trips per
/// window while a lossy path wastes at most a window of resends.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: u64 = 8;

/// The largest snapshot (bytes) a follower accepts: it buffers a transfer in memory until it
/// is complete, so this bounds what a forged or faulty InstallSnapshot can make it allocate.
/// A shard's state machine is a lock table (a few hundred bytes per held lock), far below
/// this; a leader whose snapshot is larger cannot bring a follower up to date (it logs why).
pub const SNAPSHOT_LEN_MAX: u64 = 256 * 1024 * 1024;

/// Heartbeat rounds whose start time the leader remembers while waiting for a majority to
/// acknowledge them. A round older than `election_timeout_min` can no longer give a lease,
/// so with the default timers (150 ms, a round every 30 ms) about six ever matter.
/// Forgetting the oldest only means the lease is not extended by it, which is safe.
pub const ROUNDS_TRACKED_MAX: usize = 64;

/// The largest term a node accepts in a message. Terms grow by one per election, so a real
/// cluster never comes near it; a message beyond it comes from a faulty or forged peer, and
/// adopting it would leave no room for `term + 1`.
pub const TERM_MAX: u64 = u64::MAX / 2;

/// How far above its own term the term of a message may be: a message beyond it comes from
/// a faulty or forged peer and is dropped (spec §8.5, "Terms far ahead"). Without it one
/// message of term `TERM_MAX` (a bit flip, a bug, a forgery on a cluster without a key) made
/// its receiver adopt a term with no room for an election, which then spread to every node
/// and left the shard without a leader for ever (issue 8). Correct nodes never come near it:
/// terms grow by one per election, elections need an election timeout each (at least
/// 150 ms by default, PreVote keeps a cut-off node from counting up), so a node this far
/// behind would have missed 2^32 elections, years of nothing but elections. Dropping a
/// message is always safe in Raft (it is a loss); a faulty peer now needs 2^31 messages, each
/// adopted in turn, to bring a shard to `TERM_MAX`.
pub const TERM_AHEAD_MAX: u64 = 1 << 32;

/// Whether a complete snapshot received from a leader may replace this replica's state: the
/// state machine's own decoder, run on the whole snapshot before Raft installs it (so before
/// the shell persists it or replaces its state). `Err` says why not (spec §8.5, "Receiving a
/// snapshot"). Raft alone treats snapshot bytes as opaque and accepts any.
pub type SnapshotCheck = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// Mixed into the rng seed to draw the life id (`Raft::life`) from a stream of its own.
const LIFE_SEED_SALT: u64 = 0x6c69_6665_2069_6473;
/// Mixed into the rng seed to draw a replica id (`HardState::replica`) from a stream of its
/// own, so drawing it changes no timer.
const REPLICA_SEED_SALT: u64 = 0x7265_706c_6963_6173;

/// Parts per million in one: the unit of `drift_bound_ppm`.
const PPM: u64 = 1_000_000;

/// Static configuration of one voter of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The voters before any configuration entry (thesis §4.1; `membership.rs`): the
    /// configuration of a shard whose log holds no CONFIG. 1, 3 or 5 typical: a majority must
    /// stay up for the shard to make progress. `id` need not be one of them (a node that
    /// joins later as a learner). At most `CONFIG_MEMBERS_MAX`; no id 0.
    pub voters: Vec<NodeId>,
    /// Shortest election timeout, and how long a node that heard from a leader refuses to
    /// vote (stickiness). Bounds the lease, so it sets how long a shard is unavailable after
    /// its leader dies. Default 150 ms.
    pub election_timeout_min: Duration,
    /// Election timeouts are drawn from `[min, max)`: the spread makes split votes rare
    /// (Raft §5.2). Default 300 ms.
    pub election_timeout_max: Duration,
    /// Time between heartbeat rounds. At most half of `election_timeout_min`, so a follower
    /// hears at least two before it may suspect the leader. Default 30 ms.
    pub heartbeat_interval: Duration,
    /// Clock rate difference allowed between any two nodes, parts per million (default
    /// 10_000 = 1 %). The lease is shortened by it.
    pub drift_bound_ppm: u32,
    /// Batching: most entries in one Append (default 256).
    pub entries_per_append_max: usize,
    /// Most bytes of entries in one Append, each entry counted as its data plus
    /// [`ENTRY_OVERHEAD`] (default `usize::MAX`). The node sets it so one Append fits one
    /// datagram; an entry larger than this still travels, alone.
    pub append_bytes_max: usize,
    /// Most snapshot bytes in one InstallSnapshot chunk (default 1_300): with the chunk's
    /// fixed fields and the datagram header, one chunk fits one 1400-byte datagram, so a
    /// chunk is never fragmented and a loss costs one chunk.
    pub snapshot_chunk_max: usize,
    /// This node's log counts as durable as soon as it is appended (default false: only once
    /// the shell reports it stored, [`Raft::persisted`]). For a node that stores nothing
    /// (durability `memory`): its memory is as durable as its log ever gets, so a single
    /// voter commits inside `propose` and a leader counts its whole log toward a majority
    /// (the node core sets it from `stores_state`). A node that stores its log and sets it
    /// counts entries its disk may not hold yet: a crash then loses an entry a majority
    /// was counted to hold. Only tests set it so, to show the simulator's checkers catch
    /// that ordering.
    #[doc(hidden)]
    pub appended_is_durable: bool,
}

/// What one entry costs in an Append beyond its data, for `append_bytes_max`: its term (8
/// bytes) and data length (2) on the wire (spec: APPEND record).
pub const ENTRY_OVERHEAD: usize = 10;

impl Default for Config {
    fn default() -> Config {
        Config {
            id: 1,
            voters: vec![1],
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(30),
            drift_bound_ppm: 10_000,
            entries_per_append_max: 256,
            append_bytes_max: usize::MAX,
            snapshot_chunk_max: 1_300,
            appended_is_durable: false,
        }
    }
}

impl Config {
    /// Refuses memberships and timer combinations that would break safety or liveness.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // `voters` may be empty: a replica that a leader is adding to a joined cluster's
        // shard (spec §8.1, `core::node`) knows no configuration until its log (or snapshot)
        // names one; with no static voter it counts nobody and never campaigns until then.
        for (position, voter) in self.voters.iter().enumerate() {
            if self.voters[..position].contains(voter) {
                return Err(ConfigError {
                    field: "voters",
                    rule: "must not name a voter twice (a majority would be miscounted)",
                });
            }
        }
        if self.voters.len() > udplock_protocol::CONFIG_MEMBERS_MAX {
            return Err(ConfigError {
                field: "voters",
                rule: "must name at most CONFIG_MEMBERS_MAX (16) voters (a configuration \
                       entry holds no more, spec §8.7)",
            });
        }
        if self.voters.contains(&0) {
            return Err(ConfigError {
                field: "voters",
                rule: "must not name node 0 (no node has that id)",
            });
        }
        // `id` need not be a voter: a node outside the static voters starts as a non-member
        // that never campaigns, and joins once a leader adds it (`membership.rs`).
        if self.id == 0 {
            return Err(ConfigError {
                field: "id",
                rule: "must not be 0",
            });
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError {
                field: "election_timeout_min",
                rule: "must be less than election_timeout_max (randomised timeouts avoid \
                       split votes)",
            });
        }
        if self.heartbeat_interval == Duration::ZERO {
            return Err(ConfigError {
                field: "heartbeat_interval",
                rule: "must be greater than zero (a leader would send heartbeats without end)",
            });
        }
        if self.heartbeat_interval.as_micros().saturating_mul(2)
            > self.election_timeout_min.as_micros()
        {
            return Err(ConfigError {
                field: "heartbeat_interval",
                rule: "must be at most half of election_timeout_min, so a follower hears two \
                       heartbeats before it may start an election",
            });
        }
        if u64::from(self.drift_bound_ppm) >= PPM {
            return Err(ConfigError {
                field: "drift_bound_ppm",
                rule: "must be less than 1000000 (100 %)",
            });
        }
        if self.entries_per_append_max == 0 {
            return Err(ConfigError {
                field: "entries_per_append_max",
                rule: "must be greater than zero (no entry could ever be replicated)",
            });
        }
        if self.snapshot_chunk_max == 0 {
            return Err(ConfigError {
                field: "snapshot_chunk_max",
                rule: "must be greater than zero (no snapshot could ever be sent)",
            });
        }
        Ok(())
    }

    /// How long a lease lasts on the leader's clock after the start of a round a majority
    /// acknowledged: `election_timeout_min / (1 + drift_bound)`, rounded down (see the module
    /// docs for why).
    pub fn lease_duration(&self) -> Duration {
        let min_us = u128::from(self.election_timeout_min.as_micros());
        let lease_us = min_us * u128::from(PPM) / u128::from(PPM + u64::from(self.drift_bound_ppm));
        Duration::from_micros(u64::try_from(lease_us).expect("at most election_timeout_min"))
    }

    /// Votes that make a majority of the static voters (the configuration before any CONFIG
    /// entry; see [`Membership::quorum`] for the one in force).
    #[cfg(test)]
    pub(crate) fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

pub use crate::core::ConfigError;

/// What a node must persist before it sends anything (Raft Figure 2, "persistent state").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term this node has seen; never decreases.
    pub term: u64,
    /// Whom this node voted for in `term`, if anyone: at most one vote per term.
    pub voted_for: Option<NodeId>,
    /// This replica's id ([`ReplicaId`]): stored with its state, so a replica restored from
    /// its own state keeps it. 0 in a hard state that never held one (a fresh replica before
    /// it draws one, or a file of the format before replica ids): [`Raft::restore`] draws
    /// one then and hands it to `take_persist` at once.
    pub replica: ReplicaId,
}

/// One log entry. Empty `data` is a leader's no-op (clients never propose empty data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: u64,
    /// Its position in the log, 1 first.
    pub index: u64,
    /// The command, opaque to Raft. Shared, never copied: the log, every Append that carries
    /// the entry to a follower and the shell's storage hold the one allocation (an Append
    /// costs a reference count per entry, not a copy of its data).
    pub data: Arc<[u8]>,
}

/// The entries of an Append as this core holds them ([`Message`]): the single entry of the
/// steady state (one proposal per round trip) inline, so that an Append costs no allocation of
/// its own; two or more in a vector. Reads as a slice (`Deref`), in log order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Entries {
    /// None: a heartbeat.
    #[default]
    Empty,
    /// Exactly one entry.
    One(Entry),
    /// Two or more entries (never fewer: `from_iter` makes the other two forms).
    Many(Vec<Entry>),
}

impl std::ops::Deref for Entries {
    type Target = [Entry];

    fn deref(&self) -> &[Entry] {
        match self {
            Entries::Empty => &[],
            Entries::One(entry) => std::slice::from_ref(entry),
            Entries::Many(entries) => entries,
        }
    }
}

impl FromIterator<Entry> for Entries {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> Entries {
        let mut entries = entries.into_iter();
        let Some(first) = entries.next() else {
            return Entries::Empty;
        };
        let Some(second) = entries.next() else {
            return Entries::One(first);
        };
        let mut many = Vec::with_capacity(2 + entries.size_hint().0);
        many.extend([first, second]);
        many.extend(entries);
        Entries::Many(many)
    }
}

impl From<Vec<Entry>> for Entries {
    fn from(entries: Vec<Entry>) -> Entries {
        if entries.len() < 2 {
            entries.into_iter().collect()
        } else {
            Entries::Many(entries)
        }
    }
}

impl IntoIterator for Entries {
    type Item = Entry;
    type IntoIter = EntriesIntoIter;

    fn into_iter(self) -> EntriesIntoIter {
        match self {
            Entries::Empty => EntriesIntoIter {
                one: None,
                many: Vec::new().into_iter(),
            },
            Entries::One(entry) => EntriesIntoIter {
                one: Some(entry),
                many: Vec::new().into_iter(),
            },
            Entries::Many(entries) => EntriesIntoIter {
                one: None,
                many: entries.into_iter(),
            },
        }
    }
}

/// [`Entries`] taken by value, in log order.
#[derive(Debug)]
pub struct EntriesIntoIter {
    /// The inline entry, if that is the form.
    one: Option<Entry>,
    /// The vector's entries (an empty vector, which allocates nothing, otherwise).
    many: std::vec::IntoIter<Entry>,
}

impl Iterator for EntriesIntoIter {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        self.one.take().or_else(|| self.many.next())
    }
}

/// What a snapshot covers: the state machine after applying the entries through `index`,
/// the last of which has term `term`. Index 0 (and term 0) means no snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
}

/// What voters send each other: the one Raft message type, defined (with each variant's
/// meaning and paper section) in the protocol crate, here holding its payloads as owned
/// values: an Append's entries as this core's [`Entries`] (each one's data shared with the
/// log, not copied), a snapshot chunk's bytes as a `Vec<u8>`. The node core writes it as a
/// PEER record ([`udplock_protocol::PeerWriter::push`]) and makes one of a decoded record
/// ([`udplock_protocol::PeerMessage::into_owned`]).
///
/// Where this core acts on each: [`Raft::handle_message`] dispatches them; an Append's
/// `transfer_to` feeds `TransferSeen` (`transfer.rs`); TermQuery and its two answers are
/// `rejoin.rs`'s ([`Raft::rejoin`], [`Raft::start_new`]); a snapshot chunk's data is at most
/// `Config::snapshot_chunk_max` bytes.
pub type Message = RaftMessage<Entries, Vec<u8>>;

/// An entry on the wire: its term and data; its index is implicit (spec §8.5).
impl LogEntry for Entry {
    fn peer_entry(&self) -> PeerEntry<'_> {
        PeerEntry {
            term: self.term,
            data: &self.data,
        }
    }

    fn from_peer_entry(index: u64, entry: PeerEntry<'_>) -> Entry {
        Entry {
            term: entry.term,
            index,
            data: Arc::from(entry.data),
        }
    }
}

/// A node's role in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// `propose` on a node that does not lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// Who this node believes leads its current term, if it knows.
    pub leader_hint: Option<NodeId>,
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.leader_hint {
            Some(leader) => write!(f, "not the leader (node {leader} leads)"),
            None => write!(f, "not the leader (leader unknown)"),
        }
    }
}

impl std::error::Error for NotLeader {}

/// One voter's Raft state machine. See the module docs.
#[derive(Debug)]
pub struct Raft {
    config: Config,
    rng: ChaCha8Rng,
    /// `config.lease_duration()`, computed once.
    lease_duration: Duration,
    /// `membership().quorum()`, computed when the configuration changes (`adopt_membership`).
    quorum: usize,
    /// The log's configuration generation `quorum` and `progress` were computed for.
    membership_generation: u64,

    /// Changed only through `set_hard`.
    hard: HardState,
    /// `hard` changed since the last `take_persist`.
    hard_changed: bool,
    log: RaftLog,
    /// The highest index through which the shell's stored log holds this log's entries, as
    /// reported ([`Raft::persisted`]); what a leader counts for itself toward a majority
    /// (thesis §10.2.1). At most `log.last_index()`; see `persist.rs` for how it moves.
    durable: u64,
    /// Highest index known committed. Not persisted: a restarted node learns it again.
    commit_index: u64,
    /// The highest commit index a leader's Append told this node (it may not hold those
    /// entries yet): `commit_index` reaches it once the log has caught up.
    leader_commit_heard: u64,
    /// Highest index `poll_committed` has returned (or a snapshot covered).
    returned_index: u64,
    /// The data of the snapshot the log was compacted into (`log.snapshot()`), to send.
    snapshot_data: Option<Arc<Vec<u8>>>,
    /// A snapshot installed from the leader that `poll_snapshot` has not returned yet.
    snapshot_installed: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// Follower: the snapshot transfer in progress, if any.
    snapshot_receive: Option<SnapshotReceive>,
    /// Decides whether a complete snapshot may be installed (see [`Raft::set_snapshot_check`]).
    snapshot_check: Option<Check>,
    /// Reads the configuration an installed snapshot records (see
    /// [`Raft::set_snapshot_membership`]).
    snapshot_membership: Option<MembershipOf>,
    /// The budgets this node's Raft groups share (snapshot transfers, log lines).
    shared: NodeShared,

    role: Role,
    /// Who leads `hard.term`, if known.
    leader: Option<NodeId>,
    /// When this node last heard from a live leader (itself while leading counts; see
    /// `leader_contact_recent`). Start-up counts as contact: see `lease.rs`.
    leader_contact: Instant,
    /// When a follower or (pre-)candidate starts a new (pre-)election.
    election_deadline: Instant,
    /// Voters that granted this (pre-)candidacy, self included, each with the replica id
    /// its grant carried.
    grants: Vec<(NodeId, ReplicaId)>,

    // Leader only (reset on becoming leader).
    /// One per other voter, in `config.voters` order.
    progress: Vec<Progress>,
    /// The current heartbeat round; increases over the node's lifetime.
    round: u64,
    /// Start times of rounds not yet acknowledged by a majority, oldest first.
    round_starts: VecDeque<(u64, Instant)>,
    /// Start of the latest round a majority acknowledged in this term.
    lease_start: Option<Instant>,
    heartbeat_deadline: Instant,
    /// CheckQuorum: when the leader steps down unless it hears from a majority first.
    quorum_deadline: Instant,
    /// Index of this term's no-op: once committed, the leader knows the commit index.
    noop_index: u64,
    /// Proposals were appended since the last drain: build their Appends in `poll_message`.
    flush_pending: bool,
    /// A leadership transfer in progress: to whom, until when, and whether TimeoutNow left.
    transfer: Option<Transfer>,
    /// Rounds before this one give no lease: `u64::MAX` while a transfer runs (the voters
    /// that heard its rounds would elect its target despite stickiness), the first round
    /// started after it was abandoned once it was (see `lease.rs`).
    lease_from_round: u64,
    /// Set by `decline_transfers`.
    declines_transfers: bool,
    /// Follower: what the latest round it received from the leader of its term said about a
    /// leadership transfer (see `TransferSeen`).
    transfer_seen: TransferSeen,
    /// Rejoining without state (see `rejoin`); `None` for a node with its state.
    recovery: Recovery,
    /// This instance's life id: drawn at random when it starts and sent in every answer to
    /// a leader, so that the leader can tell this life's answers from those of an earlier
    /// life of the node, which may have lost its state since (see `current_life`).
    life: u64,

    outbox: VecDeque<(NodeId, Message)>,
    /// Messages dropped because only a faulty or forged peer sends them (see
    /// [`Raft::faulty_drops`]).
    faulty_drops: u64,
}

impl Raft {
    /// `state` and `log` are what the node persisted (empty for a fresh node). Log indexes
    /// start at 1. Panics on an invalid `config` (validate it at start-up) or a persisted
    /// pair that could not have been written by this code. The same as [`Raft::restore`]
    /// without a snapshot.
    pub fn new(
        config: Config,
        rng_seed: u64,
        state: HardState,
        log: Vec<Entry>,
        now: Instant,
    ) -> Raft {
        Raft::restore(config, rng_seed, state, None, log, now)
    }

    /// A node restarting from what it persisted: its hard state, its latest snapshot (meta
    /// and data, kept to send to followers) if it has one, and the log entries after the
    /// snapshot (indexes `meta.index + 1 ..`). The commit index starts at the snapshot's last
    /// index and `poll_committed` continues after it (the shell loads its state machine from
    /// the snapshot itself; `poll_snapshot` does not return it). Panics like [`Raft::new`].
    pub fn restore(
        config: Config,
        rng_seed: u64,
        state: HardState,
        snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
        log: Vec<Entry>,
        now: Instant,
    ) -> Raft {
        Raft::restore_with_membership(config, rng_seed, state, snapshot, None, log, now)
    }

    /// [`Raft::restore`] from a snapshot that records the configuration as of its last index
    /// (`membership`; `None`: it records none, so the static `Config::voters` hold before
    /// the log's first CONFIG). Spec §8.5, "Configuration".
    pub fn restore_with_membership(
        config: Config,
        rng_seed: u64,
        state: HardState,
        snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
        membership: Option<Membership>,
        log: Vec<Entry>,
        now: Instant,
    ) -> Raft {
        let (snapshot_meta, snapshot_data) = match snapshot {
            Some((meta, data)) if meta.index > 0 => (meta, Some(data)),
            Some((meta, _)) => {
                assert!(meta.term == 0, "snapshot of index 0 has term {}", meta.term);
                (SnapshotMeta::default(), None)
            }
            None => (SnapshotMeta::default(), None),
        };
        if let Err(error) = config.validate() {
            panic!("{error}");
        }
        // A vote may be for a node of a configuration since changed: any node but none.
        assert!(state.voted_for != Some(0), "persisted vote for node 0");
        let base = match membership {
            Some(membership) if snapshot_meta.index > 0 => membership,
            _ => Membership::of_voters(&config.voters),
        };
        let log = RaftLog::from_persisted(snapshot_meta, log, state.term, base);
        // A replica without an id draws one (spec §8.5, "Replica identities"): one that
        // starts without state, or one restored from a file that predates replica ids.
        let mut state = state;
        let drew_replica = state.replica == 0;
        if drew_replica {
            let mut draw = ChaCha8Rng::seed_from_u64(rng_seed ^ REPLICA_SEED_SALT);
            state.replica = loop {
                let replica = draw.gen::<u64>();
                if replica != 0 {
                    break replica;
                }
            };
        }
        let lease_duration = config.lease_duration();
        let quorum = log.configs().latest().quorum();
        let membership_generation = log.configs().generation();
        // The life id comes from a stream of its own, so drawing it changes no timer.
        let life = ChaCha8Rng::seed_from_u64(rng_seed ^ LIFE_SEED_SALT).gen::<u64>();
        let mut raft = Raft {
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            lease_duration,
            quorum,
            membership_generation,
            hard: state,
            // A drawn replica id is stored before anything that carries it leaves.
            hard_changed: drew_replica,
            // What it was restored from is stored.
            durable: log.last_index(),
            log,
            commit_index: snapshot_meta.index,
            leader_commit_heard: 0,
            returned_index: snapshot_meta.index,
            snapshot_data,
            snapshot_installed: None,
            snapshot_receive: None,
            snapshot_check: None,
            snapshot_membership: None,
            shared: NodeShared::new(),
            role: Role::Follower,
            leader: None,
            leader_contact: now,
            election_deadline: now,
            grants: Vec::with_capacity(config.voters.len()),
            progress: Vec::with_capacity(config.voters.len()),
            round: 0,
            round_starts: VecDeque::with_capacity(ROUNDS_TRACKED_MAX),
            lease_start: None,
            heartbeat_deadline: Instant::MAX,
            quorum_deadline: Instant::MAX,
            noop_index: 0,
            flush_pending: false,
            transfer: None,
            lease_from_round: 0,
            declines_transfers: false,
            transfer_seen: TransferSeen::default(),
            recovery: Recovery::None,
            life,
            outbox: VecDeque::new(),
            faulty_drops: 0,
            config,
        };
        raft.reset_election_timer(now);
        raft.campaign_at_once_if_alone(now);
        raft
    }

    /// Takes one message from node `from`, a member of this node's configuration or not
    /// (thesis §4.1: a new member hears from the leader before it has the entry that adds it;
    /// only voters count in any tally, `membership.rs`). Messages from itself or from node 0
    /// are dropped.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        if from == self.config.id || from == 0 {
            log::debug!("raft {}: dropping a message from {from}", self.config.id);
            return;
        }
        self.drop_stalled_snapshot(now);
        if msg.term() > TERM_MAX || msg.term() > self.hard.term.saturating_add(TERM_AHEAD_MAX) {
            peer_log!(
                self,
                now,
                Term,
                error,
                "raft {}: dropping a message of term {} from {from}, beyond TERM_MAX or more \
                 than TERM_AHEAD_MAX above this node's term {} (faulty peer?)",
                self.config.id,
                msg.term(),
                self.hard.term
            );
            self.faulty_drops += 1;
            return;
        }
        if matches!(self.recovery, Recovery::Querying { .. })
            && !matches!(
                msg,
                Message::TermQuery { .. }
                    | Message::TermReply { .. }
                    | Message::NoStateReply { .. }
            )
        {
            // Rejoining without state: nothing is acted on until the terms of a quorum of
            // the others are known (see `rejoin`).
            return;
        }
        match msg {
            Message::PreVote {
                term,
                last_log_index,
                last_log_term,
            } => self.handle_pre_vote(now, from, term, last_log_index, last_log_term),
            Message::PreVoteReply {
                term,
                granted,
                replica,
            } => self.handle_pre_vote_reply(now, from, term, granted, replica),
            Message::Vote {
                term,
                last_log_index,
                last_log_term,
                transfer,
            } => self.handle_vote(now, from, term, last_log_index, last_log_term, transfer),
            Message::VoteReply {
                term,
                granted,
                replica,
            } => self.handle_vote_reply(now, from, term, granted, replica),
            Message::Append {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
                transfer_to,
            } => self.handle_append(
                now,
                from,
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                (round, transfer_to),
            ),
            Message::AppendReply {
                term,
                success,
                match_index,
                round,
                life,
                replica,
            } => self.handle_append_reply(
                now,
                from,
                term,
                success,
                match_index,
                (round, life, replica),
            ),
            Message::TimeoutNow { term } => self.handle_timeout_now(now, from, term),
            Message::TermQuery { nonce, .. } => self.handle_term_query(from, nonce),
            Message::TermReply {
                term,
                last_index,
                nonce,
            } => self.handle_term_answer(now, from, nonce, TermAnswer::State { term, last_index }),
            Message::NoStateReply { term, nonce, new } => {
                // A node without state is at term 0; another term is a faulty peer's.
                if term == 0 {
                    self.handle_term_answer(now, from, nonce, TermAnswer::NoState { new });
                }
            }
            Message::InstallSnapshot {
                term,
                last_index,
                last_term,
                offset,
                total_len,
                data,
                round,
            } => self.handle_install_snapshot(
                now,
                from,
                term,
                SnapshotMeta {
                    index: last_index,
                    term: last_term,
                },
                offset,
                total_len,
                data,
                round,
            ),
            Message::InstallSnapshotReply {
                term,
                last_index,
                received,
                round,
                life,
                replica,
            } => self.handle_install_snapshot_reply(
                now,
                from,
                term,
                last_index,
                received,
                (round, life, replica),
            ),
        }
        // The log may hold another configuration now (an Append, a snapshot).
        self.adopt_membership(now);
        self.release_departed();
        self.check_caught_up();
        self.check_invariants();
    }

    /// Fires whatever timer is due: a leader's CheckQuorum or heartbeat, anyone else's
    /// election timer. Call when `now >= poll_timeout()`; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drop_stalled_snapshot(now);
        if self.role == Role::Leader {
            self.refresh_quorum_deadline(now);
            if now >= self.quorum_deadline {
                // CheckQuorum (thesis §6.2): no majority heard within election_timeout_min.
                log::info!(
                    "raft {}: stepping down in term {}: no majority heard from",
                    self.config.id,
                    self.hard.term
                );
                self.become_follower(now, self.hard.term, None);
                self.check_invariants();
                return;
            }
            if self.transfer.is_some_and(|t| now >= t.deadline) {
                // Thesis §3.10: the target did not take over within an election timeout;
                // lead on. A round of its own names nobody; once a majority acknowledged it
                // (or a later one), no transfer election can win while the lease it gives
                // runs (`lease.rs`).
                log::info!(
                    "raft {}: leadership transfer abandoned in term {}",
                    self.config.id,
                    self.hard.term
                );
                self.transfer = None;
                self.lease_from_round = self.round + 1;
                self.start_round(now);
            }
            if now >= self.heartbeat_deadline {
                self.start_round(now);
            }
        } else if let Recovery::Querying {
            next_query, nonce, ..
        } = self.recovery
        {
            if now >= next_query {
                if let Recovery::Querying { next_query, .. } = &mut self.recovery {
                    *next_query = now + self.config.heartbeat_interval;
                }
                self.broadcast(Message::TermQuery { term: 0, nonce });
            }
        } else if now >= self.election_deadline {
            if matches!(self.recovery, Recovery::CatchingUp { .. }) || !self.may_campaign() {
                // No campaign before catching up, nor by a learner or a removed node
                // (thesis §4.2.1, §4.2.3): wait for the leader.
                self.reset_election_timer(now);
            } else {
                self.start_pre_vote(now);
            }
        }
        self.check_invariants();
    }

    /// Leader only: appends `data` (non-empty) to the log; returns its index. The entry is
    /// sent with the next drain of `poll_message`, together with every other entry proposed
    /// since the last one.
    pub fn propose(&mut self, now: Instant, data: impl Into<Arc<[u8]>>) -> Result<u64, NotLeader> {
        let data = data.into();
        assert!(
            !data.is_empty(),
            "empty data is reserved for the leader's no-op"
        );
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(transfer) = self.transfer {
            // Thesis §3.10: no new entries while handing over; the target leads next.
            return Err(NotLeader {
                leader_hint: Some(transfer.to),
            });
        }
        assert!(
            Membership::of_entry(&data).is_none(),
            "a configuration is changed through propose_membership"
        );
        let index = self.append_own(data);
        self.flush_pending = true;
        // A leader alone is its own majority: it commits here only if its log counts as
        // durable once appended (`Config::appended_is_durable`), else once it is reported
        // stored (`persisted`).
        self.advance_commit();
        assert!(self.log.last_index() == index);
        // `now` is not needed yet: a proposal starts no timer of its own.
        let _ = now;
        self.check_invariants();
        Ok(index)
    }

    /// The next message to send, with its destination. Drain after every `handle_*`,
    /// `propose` and `persisted`, once what `take_persist` returned is stored (a leader's
    /// Appends may leave before: see the module docs).
    pub fn poll_message(&mut self) -> Option<(NodeId, Message)> {
        if self.flush_pending {
            self.flush_pending = false;
            if self.role == Role::Leader {
                for position in 0..self.progress.len() {
                    self.send_append(position, Sending::Proposals);
                }
            }
        }
        self.outbox.pop_front()
    }

    /// Committed entries not yet returned, in index order, each exactly once per instance (a
    /// restarted instance returns them again as they become known committed, from index 1,
    /// or from after the snapshot it was restored from). Never an entry a snapshot covers;
    /// returns nothing while `poll_snapshot` holds a snapshot the shell has not taken.
    pub fn poll_committed(&mut self) -> Option<Entry> {
        let mut entry = Entry {
            term: 0,
            index: 0,
            data: Arc::default(),
        };
        self.poll_committed_into(&mut entry).then_some(entry)
    }

    /// [`Raft::poll_committed`] into `entry` (its data shared with the log: no allocation or
    /// copy per entry); false, `entry` unchanged, when there is none.
    pub fn poll_committed_into(&mut self, entry: &mut Entry) -> bool {
        assert!(self.returned_index <= self.commit_index);
        if self.returned_index == self.commit_index || self.snapshot_installed.is_some() {
            return false;
        }
        assert!(self.returned_index >= self.log.snapshot().index);
        self.returned_index += 1;
        let logged = self.log.entry(self.returned_index);
        assert!(logged.index == self.returned_index);
        entry.term = logged.term;
        entry.index = logged.index;
        entry.data = Arc::clone(&logged.data);
        true
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Instant {
        match self.role {
            Role::Leader => {
                let transfer = self.transfer.map_or(Instant::MAX, |t| t.deadline);
                self.heartbeat_deadline
                    .min(self.quorum_deadline)
                    .min(transfer)
            }
            _ => {
                let timer = match self.recovery {
                    Recovery::Querying { next_query, .. } => next_query,
                    _ => self.election_deadline,
                };
                let stall = self.snapshot_stall();
                self.snapshot_receive
                    .as_ref()
                    .map_or(timer, |r| timer.min(r.progress_at + stall))
            }
        }
    }

    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// The entries the log still holds, `first_index()` first: index 1 until the shell
    /// compacts (or a snapshot is installed), after that the entries after the snapshot.
    pub fn log(&self) -> &[Entry] {
        self.log.entries()
    }

    /// First index still in the log (snapshot index + 1; 1 without a snapshot).
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    /// What the latest snapshot covers (index 0: none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.log.snapshot()
    }

    /// The latest snapshot's data, if there is a snapshot.
    pub fn snapshot_data(&self) -> Option<&Arc<Vec<u8>>> {
        self.snapshot_data.as_ref()
    }

    /// Makes this Raft group share `shared` with the node's other groups (see [`NodeShared`]):
    /// the budget of incoming snapshot transfers and of log lines about peer input. A partial
    /// transfer in progress is dropped (it held the previous budget).
    pub fn share(&mut self, shared: NodeShared) {
        self.snapshot_receive = None;
        self.shared = shared;
    }

    /// The budgets this group shares with the node's others.
    pub fn shared(&self) -> &NodeShared {
        &self.shared
    }

    /// The memory the entries after the log's snapshot take: each one's data plus
    /// [`ENTRY_MEMORY_OVERHEAD`] (what a shard's log-bytes limit counts).
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Index of the last entry in the log (0 if empty).
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The entry at `index`, if the log holds it (`None` for a compacted one).
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.log.first_index() || index > self.log.last_index() {
            return None;
        }
        Some(self.log.entry(index))
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> u64 {
        self.hard.term
    }

    /// Who this node believes leads the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }

    /// The highest commit index a leader told this node: a follower whose log has not caught
    /// up holds less. Once `commit_index` reaches it, what this node applied is as recent as
    /// what that leader had committed (a joined node drops a replica whose applied
    /// configuration no longer names it only then, `core::node`).
    pub fn leader_commit_heard(&self) -> u64 {
        self.leader_commit_heard.max(self.commit_index)
    }

    /// This instance's life id, sent in its answers (see `Raft::current_life`).
    pub fn life(&self) -> u64 {
        self.life
    }

    /// This replica's id (spec §8.5, "Replica identities"), sent in every answer that is
    /// counted: drawn when it started without state, kept with its state.
    pub fn replica(&self) -> ReplicaId {
        self.hard.replica
    }

    /// Messages this instance dropped because only a faulty or forged peer sends them:
    /// malformed ones, a term beyond [`TERM_MAX`] or more than [`TERM_AHEAD_MAX`] above this
    /// node's, a second leader of a term, an Append or a snapshot that contradicts a committed
    /// entry or this node's snapshot, a snapshot larger than [`SNAPSHOT_LEN_MAX`], a complete
    /// snapshot the state machine's check refuses ([`Raft::set_snapshot_check`]). Among
    /// correct nodes it stays 0 whatever the network does (loss, duplication, reordering,
    /// delay, restarts): the simulator fails a run in which it does not, so a correct message
    /// mistaken for a forgery is found.
    pub fn faulty_drops(&self) -> u64 {
        self.faulty_drops
    }

    /// The largest value that a majority of voters has reached: the leader's `own` (if it is
    /// a voter: a leader being removed counts not itself, thesis §4.2.2) and one per voting
    /// follower. Learners count towards no majority (thesis §4.2.1), and a voter counts only
    /// with the replica id the configuration names for it (spec §8.5, "Replica
    /// identities"): a node whose replies carry another (it lost its state since) counts as
    /// a voter that never answered, 0. A follower not heard from yet in this term (replica
    /// id unknown, 0) counts with the values it started with: nothing acknowledged, and the
    /// leader's start as its last contact (CheckQuorum's grace, as before replica ids).
    fn quorum_value(&self, own: u64, per_follower: impl Fn(&Progress) -> u64) -> u64 {
        let [value] = self.quorum_values([own], |p| [per_follower(p)]);
        value
    }

    /// [`Raft::quorum_value`] of `N` quantities at once: one walk over the voters, each
    /// one's standing in the configuration looked up once (an acknowledgement moves the
    /// CheckQuorum contact, the lease round and the commit index together).
    fn quorum_values<const N: usize>(
        &self,
        own: [u64; N],
        per_follower: impl Fn(&Progress) -> [u64; N],
    ) -> [u64; N] {
        let membership = self.log.configs().latest();
        assert!(self.quorum == membership.quorum());
        // Per quantity, the values, largest first, sorted as they come in (a few voters: at
        // most CONFIG_MEMBERS_MAX, spec §8.7), on the stack: this runs on every
        // acknowledgement.
        let mut values = [[0u64; udplock_protocol::CONFIG_MEMBERS_MAX]; N];
        let mut len = 0;
        if membership.is_voter(self.config.id) {
            let counts = membership.counts(self.config.id, self.hard.replica);
            put_sorted(&mut values, &mut len, if counts { own } else { [0; N] });
        }
        for p in self.progress.iter().filter(|p| p.voter) {
            let counts = p.replica == 0 || membership.counts(p.id, p.replica);
            put_sorted(
                &mut values,
                &mut len,
                if counts { per_follower(p) } else { [0; N] },
            );
        }
        assert!(len == membership.voters.len());
        values.map(|values| values[self.quorum - 1])
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        assert!(to != self.config.id);
        self.outbox.push_back((to, msg));
    }

    /// Sends `msg` to every other voter of this node's configuration.
    fn broadcast(&mut self, msg: Message) {
        let voters = &self.log.configs().latest().voters;
        for &to in voters {
            if to != self.config.id {
                self.outbox.push_back((to, msg.clone()));
            }
        }
    }

    /// Cheap invariants checked after every input, in release builds too.
    fn check_invariants(&self) {
        assert!(self.log.snapshot().index <= self.returned_index);
        assert!(self.returned_index <= self.commit_index);
        assert!(self.snapshot_data.is_some() == (self.log.snapshot().index > 0));
        assert!(self.commit_index <= self.log.last_index());
        assert!(self.durable <= self.log.last_index());
        assert!(self.log.last_term() <= self.hard.term);
        assert!(self.hard.replica != 0, "a replica without an id");
        match self.role {
            Role::Leader => {
                assert!(self.hard.voted_for == Some(self.config.id));
                assert!(self.leader == Some(self.config.id));
                let membership = self.log.configs().latest();
                // One progress per other member, and besides the members, nodes removed that
                // have not learnt it yet. Counted without walking the members: they are
                // distinct, so the others are all of them but this node if it is one.
                let mut departing = 0;
                for p in &self.progress {
                    if p.departing.is_some() {
                        assert!(!p.voter && !membership.contains(p.id));
                        departing += 1;
                    }
                }
                let members = membership.voters.len() + membership.learners.len();
                let others = members - usize::from(membership.contains(self.config.id));
                assert!(self.progress.len() == others + departing);
                assert!(self.quorum == membership.quorum());
            }
            Role::Candidate => assert!(self.hard.voted_for == Some(self.config.id)),
            Role::Follower | Role::PreCandidate => assert!(self.progress.is_empty()),
        }
    }
}

/// Puts one voter's `row` of values into `values` (the first `len` of each column sorted,
/// largest first; see `Raft::quorum_values`), and counts it in `len`.
#[inline(always)]
fn put_sorted<const N: usize>(
    values: &mut [[u64; udplock_protocol::CONFIG_MEMBERS_MAX]; N],
    len: &mut usize,
    row: [u64; N],
) {
    assert!(
        *len < udplock_protocol::CONFIG_MEMBERS_MAX,
        "at most CONFIG_MEMBERS_MAX voters"
    );
    for (column, value) in values.iter_mut().zip(row) {
        let mut at = *len;
        while at > 0 && column[at - 1] < value {
            column[at] = column[at - 1];
            at -= 1;
        }
        column[at] = value;
    }
    *len += 1;
}
