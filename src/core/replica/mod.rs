//! One replica of one shard: a [`Raft`] log whose committed commands drive a [`LockTable`],
//! as a pure deterministic state machine (no IO, no clock, no global randomness). The node
//! runs one per shard; the simulator runs the same code.
//!
//! # Replicating the lock table (spec §"Log commands")
//!
//! The lock table is already deterministic given its `(now, input)` sequence, so the log
//! carries exactly that sequence: every client request that changes state becomes a REQUEST
//! command stamped with the leader's *log time*, and a TICK command carries a time at which
//! the table's timers (lease expiry, wait deadlines, idle sessions) are due. Every replica
//! applies committed commands in log order with the stamp as `now`, so every replica holds
//! the same locks, queues, fencing counter and idempotency table (each session's remembered
//! answers), and a retransmit that reaches a new leader gets the first answer again. Expiry
//! is decided when a TICK is *applied*, against the replicated expiry: a renew or a new grant
//! committed before it moved the expiry, so a stale TICK cannot free a newer hold (this is
//! what the "expire command carrying the token" guards against; deciding at apply
//! time makes the token unnecessary).
//!
//! Replies leave only from the leader, only after the command committed and was applied (a
//! follower applies the same command and drops the reply). A leader also sends the answers
//! of commands an earlier leader proposed, when they commit under it: a waiter queued under
//! the old leader gets its grant from the new one, at the address the log recorded.
//!
//! # Log time
//!
//! Stamps must never decrease along the log, and must never run ahead of real time (a lease
//! counted on a clock that runs fast ends early). A leader starts its log clock at its
//! election from the largest stamp in its log and advances it with its own clock:
//! `log_now = base_stamp + (now - elected_at)`. Across a leader change log time therefore
//! *pauses* between the old leader's last stamp and the new leader's election: every lease
//! in flight ends later in real time than it would have under the old leader, never earlier,
//! so no client's own count (which starts before the grant) outlasts the server's. A new
//! leader restarts nothing: a lock's remaining time simply resumes.
//!
//! # Reads
//!
//! STATUS is answered by the leader from its applied state while its Raft lease is valid
//! (thesis §6.4.1; the lease starts only once the leader's no-op committed, so its applied
//! state includes every committed command); without the lease it is held until a heartbeat
//! round started after it is acknowledged (ReadIndex, thesis §6.4). Either way, a STATUS whose
//! lock has a timer due (a lease that ended) waits for the TICK that fires it, so it never
//! shows a state the lock no longer has (spec §7.2.1). The answer names the holder only if it
//! fits in the STATUS's own datagram, whose length the held request keeps (spec §2.2).
//!
//! # Snapshots (thesis §5)
//!
//! Every [`COMPACT_EVERY_DEFAULT`] applied entries the replica serializes its state (the
//! table, whether INIT was applied, the last stamp) as of its applied index, and once
//! [`COMPACT_KEEP_DEFAULT`] more entries have been applied it hands that snapshot to Raft,
//! which drops the log up to it. The delay keeps a short tail so a follower that is only a
//! little behind gets entries, not a whole snapshot. A follower too far behind receives the
//! leader's snapshot (InstallSnapshot) and replaces its state with it before applying any
//! later entry. The snapshot format is this module's (`SHARD_SNAPSHOT_MAGIC`): node-internal
//! in version 1. Since format version 3 it records Raft's configuration as of its index (the
//! last CONFIG applied, spec §8.5 "Configuration"), which Raft reads back when the replica
//! restarts from it or installs it from a leader; a snapshot of an older version records
//! none (its log had none: the static voters hold). Since version 4 that CONFIG names each
//! member's replica id (spec §8.7); a version 3 snapshot that records a configuration (node
//! ids only) is refused, since which replicas count cannot be recovered from it, and one that
//! records none is read.
//!
//! # Bounds
//!
//! Uncommitted proposals are capped at [`UNCOMMITTED_MAX`] (a request over it gets
//! OVERLOADED, changing nothing); a retransmit of a request whose first copy is still
//! uncommitted is dropped (its answer comes when that copy commits); one source address may
//! have at most [`IN_FLIGHT_PER_SOURCE_MAX`] of them. The log's memory after
//! its snapshot is capped at [`LOG_BYTES_PER_SHARD_MAX`] the same way, and a replica past half
//! of it compacts at once; the table's limits keep every snapshot within `SNAPSHOT_LEN_MAX`
//! ([`Config::validate`]), so a snapshot can always be taken and sent, and the log never
//! grows for good (spec §9).

#[cfg(test)]
mod tests;

pub mod in_flight;

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use udplock_protocol::{
    LogCommand, RequestBody, RequestKind, Status, LOG_COMMAND_LEN_MAX, REPLY_LEN_MIN,
};

use self::in_flight::{InFlight, Source, SourceCounts};
use crate::core::lock_table::{self, Answer, IdBuf, LockTable, Reply, Request, RequestId};
use crate::core::raft::{
    self, Entry, HardState, Membership, Message, NodeId, NotLeader, Raft, Role, SnapshotMeta,
};
use crate::core::time::Instant;
use crate::core::ConfigError;

/// STATUS requests a leader holds while it confirms its leadership (ReadIndex, thesis §6.4)
/// or waits for the TICK that fires their lock's due timers (spec §7.2.1). One more gets
/// OVERLOADED.
pub const READS_PENDING_MAX: usize = 1_024;

/// How long a replica must have led a shard before it hands it to the shard's preferred
/// leader: long enough that leadership does not bounce while a cluster starts or heals.
pub const SPREAD_AFTER: crate::core::time::Duration =
    crate::core::time::Duration::from_millis(1_000);

/// Applied entries between two snapshots of a replica's state (see the module docs).
pub const COMPACT_EVERY_DEFAULT: u64 = 16_384;

/// Entries kept in the log after a snapshot, for followers a little behind.
pub const COMPACT_KEEP_DEFAULT: u64 = 1_024;

/// The first bytes of a shard snapshot, then its format version: 2 since the snapshot holds
/// the logged settings, 3 since it holds Raft's configuration, 4 since that configuration
/// names replica ids (versions 1 to 3 are still read; see the module docs for version 3).
pub const SHARD_SNAPSHOT_MAGIC: [u8; 4] = *b"ULSH";
const SHARD_SNAPSHOT_VERSION: u8 = 4;

/// The values of the settings a leader logs (spec §8.8) because replicas may differ in them:
/// every command applies with those of the last SETTINGS before it, whatever the replica's
/// own, so nodes need not share them (an operator changes them with a rolling restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedSettings {
    pub ttl_default_ms: u32,
    pub retry_after_ms: u32,
    pub startup_grace_ms: u32,
}

impl LoggedSettings {
    /// A replica's own values.
    pub fn of(table: &lock_table::Config) -> LoggedSettings {
        LoggedSettings {
            ttl_default_ms: table.ttl_default_ms,
            retry_after_ms: table.retry_after_ms,
            startup_grace_ms: table.startup_grace_ms,
        }
    }

    /// The values a SETTINGS log command carries (`None` for another command).
    fn of_command(command: &LogCommand<'_>) -> Option<LoggedSettings> {
        match *command {
            LogCommand::Settings {
                ttl_default_ms,
                retry_after_ms,
                startup_grace_ms,
            } => Some(LoggedSettings {
                ttl_default_ms,
                retry_after_ms,
                startup_grace_ms,
            }),
            _ => None,
        }
    }

    /// `table` with these values.
    fn over(self, table: &lock_table::Config) -> lock_table::Config {
        lock_table::Config {
            ttl_default_ms: self.ttl_default_ms,
            retry_after_ms: self.retry_after_ms,
            startup_grace_ms: self.startup_grace_ms,
            ..table.clone()
        }
    }

    fn command(self) -> LogCommand<'static> {
        LogCommand::Settings {
            ttl_default_ms: self.ttl_default_ms,
            retry_after_ms: self.retry_after_ms,
            startup_grace_ms: self.startup_grace_ms,
        }
    }
}

/// A persisted or received snapshot: what it covers and its bytes.
pub type Snapshot = (SnapshotMeta, Arc<Vec<u8>>);

/// Proposals a leader keeps uncommitted at once. Bounds the log's unreplicated tail (memory,
/// and the work a new leader's re-basing scan does) when followers fall behind; a request
/// over it gets OVERLOADED with `retry_after_ms`.
pub const UNCOMMITTED_MAX: u64 = 4_096;

/// Requests from one source address (IP, any port) a shard's leader keeps proposed and not
/// yet applied at once; one more gets OVERLOADED (spec §9). A quarter of
/// [`UNCOMMITTED_MAX`]: one host (a flood, or one busy client machine) cannot take a shard's
/// whole window of uncommitted proposals from everyone else. Over all the shards a node
/// leads, the node's own limit applies too (`NodeLimits::in_flight_per_source_max`, spec
/// §9.1; [`in_flight`]).
pub const IN_FLIGHT_PER_SOURCE_MAX: u32 = 1_024;

const _: () = assert!(4 * IN_FLIGHT_PER_SOURCE_MAX as u64 <= UNCOMMITTED_MAX);

/// Memory the log of one shard may take after its snapshot (each entry's data plus
/// [`raft::ENTRY_MEMORY_OVERHEAD`], [`Raft::log_bytes`]) before its leader refuses client
/// requests with OVERLOADED (spec §9). Past half of it the replica compacts at once, whatever
/// the cadence; the log passes it only while it cannot compact — a follower is receiving the
/// current snapshot (`Raft::sending_snapshot`), or snapshots are off — so it bounds the log
/// for good: beyond it grow only the leader's own few entries (TICKs, no-ops, settings,
/// configuration changes). 16 MiB: above the default cadence's log (17,408 entries of at most
/// 647 bytes, 11.3 MB), so it refuses nothing while compaction runs.
pub const LOG_BYTES_PER_SHARD_MAX: u64 = 16 * 1024 * 1024;

// Compacting at half the limit leaves less than half: the uncommitted tail alone, which
// cannot be compacted, stays below it, so a compaction always frees room.
const _: () = assert!(
    UNCOMMITTED_MAX * ((LOG_COMMAND_LEN_MAX + raft::ENTRY_MEMORY_OVERHEAD) as u64)
        < LOG_BYTES_PER_SHARD_MAX / 2
);

/// Static configuration of one replica of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Which shard (for logs and status).
    pub shard: u32,
    pub raft: raft::Config,
    /// Limits of the replicated table. Must be identical on every replica (the table's
    /// decisions depend on them). `fencing_token_first` is ignored: the INIT command fixes it
    /// (see [`Replica::propose_init`]).
    pub table: lock_table::Config,
}

/// Bytes a shard snapshot holds around its table at most: magic, version, stamp, settings
/// (13), and the configuration marker with a CONFIG command (at most `LOG_COMMAND_LEN_MAX`),
/// and the table marker.
pub const SNAPSHOT_ENVELOPE_LEN_MAX: u64 = (4 + 1 + 8 + 13 + 1 + LOG_COMMAND_LEN_MAX + 1) as u64;

// The default table limits keep every snapshot sendable (spec §9, "Limits per node").
const _: () = assert!(
    lock_table::Config::DEFAULT.snapshot_len_max() + SNAPSHOT_ENVELOPE_LEN_MAX
        <= udplock_protocol::SNAPSHOT_LEN_MAX
);

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.raft.validate()?;
        lock_table::Config {
            fencing_token_first: 1,
            ..self.table.clone()
        }
        .validate()?;
        // A snapshot larger than SNAPSHOT_LEN_MAX could be sent to no follower and would
        // stop the shard compacting (its log would grow for good): the limits must keep the
        // longest one the table can take within it (spec §9).
        if self.table.snapshot_len_max() + SNAPSHOT_ENVELOPE_LEN_MAX
            > udplock_protocol::SNAPSHOT_LEN_MAX
        {
            return Err(ConfigError {
                field: "resources_max",
                rule: "with sessions_max, answers_per_session_max and waiters_max, must keep \
                       the longest snapshot a shard can take (544 bytes a resource, 321 a \
                       waiter, 28 + 34 per answer a session) within SNAPSHOT_LEN_MAX \
                       (268435456 bytes)",
            });
        }
        Ok(())
    }
}

/// A client request as the node decoded it, owning nothing: ids borrow from the datagram.
pub type ClientRequest<'a> = Request<'a>;

/// The leader's log clock (see the module docs).
#[derive(Clone, Copy, Debug)]
struct LogClock {
    /// The term it belongs to.
    term: u64,
    /// Log time at the election.
    base: Instant,
    /// This node's clock at the election.
    elected_at: Instant,
    /// The latest stamp this leader proposed (`base` until its first): stamps never decrease
    /// along the log, so each proposal's is at least this one.
    stamped: Instant,
}

impl LogClock {
    fn log_time(&self, now: Instant) -> Instant {
        self.base + now.saturating_since(self.elected_at)
    }

    /// This node's clock when log time reaches `at` (now if already past).
    fn local_time(&self, at: Instant, now: Instant) -> Instant {
        if at <= self.base {
            return now;
        }
        self.elected_at + at.saturating_since(self.base)
    }
}

/// Counters for status pages and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// `None`: the node holds no replica of the shard (`core::node::Node::shard_stats`).
    pub role: Option<Role>,
    /// The latest configuration in this replica's log names its node a learner (Raft
    /// thesis §4.2.1: it receives the log and counts in no majority); SHARD_STATUS reports
    /// such a follower with the role "learner" (spec §5.6). False without a replica.
    pub learner: bool,
    /// The latest configuration in this replica's log names its node, a voter or a learner:
    /// false for a replica a joined node created on demand for a leader's APPEND that has
    /// not yet caught up on a configuration naming it, or one removed and not dropped yet
    /// (spec §8.1 "Replicas on demand"). False without a replica.
    pub named: bool,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub log_len: u64,
    pub table: lock_table::Stats,
    /// Peer messages Raft dropped as coming from a faulty or forged peer
    /// ([`Raft::faulty_drops`]): 0 among correct nodes.
    pub faulty_drops: u64,
    /// Bytes of the latest snapshot Raft holds (0: none yet).
    pub snapshot_bytes: u64,
}

/// One replica of one shard; see the module docs.
pub struct Replica {
    config: Config,
    raft: Raft,
    /// `None` until the INIT command is applied.
    table: Option<LockTable>,
    /// Index and stamp of the last applied command.
    applied_index: u64,
    applied_stamp: Instant,
    /// Set while this replica leads (for the term it leads).
    clock: Option<LogClock>,
    /// Index of the TICK proposed and not yet applied.
    tick_pending: Option<u64>,
    /// This replica leads a log without INIT and has not proposed it yet: it waits for the
    /// shell's wall clock ([`Replica::propose_init`]) and proposes nothing else meanwhile.
    init_wanted: bool,
    /// Requests proposed in the current term and not yet applied, by id.
    proposed: HashMap<RequestId, Proposed>,
    /// The committed entry being applied; its buffer is reused (`Raft::poll_committed_into`).
    applying: Entry,
    /// How many of `proposed` came from each source address ([`IN_FLIGHT_PER_SOURCE_MAX`]),
    /// added to the node's counts ([`in_flight`]).
    in_flight: SourceCounts,
    /// The request [`Replica::handle_request`] is proposing, with its index, until the
    /// input settles: only then does it go into `proposed` and `in_flight`, if it did not
    /// apply meanwhile. A one-voter shard commits and applies it inside the same input, so
    /// its requests never touch those two maps (four keyed hashes each, on the hot path).
    proposing: Option<(RequestId, u64)>,
    replies: VecDeque<Reply>,
    /// STATUS requests waiting for a heartbeat round to confirm leadership: (round, request).
    reads: VecDeque<(u64, PendingRead)>,
    /// The node that should lead this shard when it can (spreads leaders over the nodes).
    preferred_leader: Option<NodeId>,
    /// A transfer to the preferred leader was tried in the current term.
    spread_tried_in: u64,
    /// Scratch for encoding a command.
    buf: Vec<u8>,
    /// Snapshot cadence (see the module docs).
    compact_every: u64,
    compact_keep: u64,
    /// Uncommitted proposals beyond which requests get OVERLOADED ([`UNCOMMITTED_MAX`]).
    uncommitted_max: u64,
    /// Log memory beyond which requests get OVERLOADED ([`LOG_BYTES_PER_SHARD_MAX`]).
    log_bytes_max: u64,
    /// A snapshot taken, waiting for `compact_keep` more applied entries before Raft gets it.
    snapshot_pending: Option<Snapshot>,
    /// No snapshot is taken before this applied index (one came out too large).
    compact_not_before: u64,
    /// The settings of the last SETTINGS applied (spec §8.8); `None` before the first, when
    /// the table uses this replica's own (as with a log written before SETTINGS existed,
    /// whose nodes shared every setting).
    settings: Option<LoggedSettings>,
    /// Raft's configuration as of the applied index: that of the last CONFIG applied, or of
    /// the snapshot this replica started from; `None` before any (the static voters).
    membership: Option<Membership>,
    /// Lock state changes this replica applied while it led the shard, not yet taken by
    /// [`Replica::take_led_counts`] (monitoring: the node adds them to its counters).
    led: lock_table::Counts,
}

/// A request proposed and not yet applied (`Replica::proposed`).
#[derive(Clone, Copy, Debug)]
struct Proposed {
    /// Its entry's index.
    index: u64,
    /// Where it came from, hashed when it was admitted: counted in `in_flight` under it, and
    /// taken out under it when it applies (no second hash of the address).
    source: Source,
}

/// A STATUS held for ReadIndex.
struct PendingRead {
    to: std::net::SocketAddr,
    id: RequestId,
    attempt: u16,
    resource: IdBuf,
    /// Its reply's byte budget: the length of its own datagram (spec §2.2 rule 5).
    reply_len_max: u16,
    /// Log time at its receipt: it is answered with every timer due by then fired.
    at: Instant,
}

impl PendingRead {
    /// A STATUS held until it can be answered: where to, and its own byte budget.
    fn of(request: &ClientRequest<'_>, resource: &[u8], reply_len_max: u16, at: Instant) -> Self {
        PendingRead {
            to: request.reply_to,
            id: request.id,
            attempt: request.attempt,
            resource: IdBuf::new(resource),
            reply_len_max,
            at,
        }
    }
}

impl Replica {
    /// A replica from what it persisted (empty for a fresh one). Panics if `config` does not
    /// validate.
    pub fn new(
        config: Config,
        rng_seed: u64,
        state: HardState,
        log: Vec<Entry>,
        now: Instant,
    ) -> Replica {
        Replica::restore(config, rng_seed, state, None, log, now).expect("no snapshot to decode")
    }

    /// A replica restarting WITHOUT its state (durability `memory`, or its files are gone):
    /// it rejoins by Raft's rule (`Raft::rejoin`) and serves nothing until it has caught up.
    pub fn rejoin(config: Config, rng_seed: u64, now: Instant) -> Replica {
        let mut shard = Replica::new(config, rng_seed, HardState::default(), Vec::new(), now);
        shard.raft = Raft::rejoin(shard.config.raft.clone(), rng_seed, now);
        shard.raft.set_snapshot_check(snapshot_check(&shard.config));
        shard
            .raft
            .set_snapshot_membership(Arc::new(snapshot_membership));
        shard.settle(now);
        shard.check_invariants();
        shard
    }

    /// Leader only: proposes one single-server change of the shard's Raft configuration
    /// (`Raft::propose_membership`, which says when it is refused). Returns the entry's index.
    pub fn change_membership(
        &mut self,
        now: Instant,
        change: raft::MembershipChange,
    ) -> Result<u64, raft::MembershipError> {
        let result = self.raft.propose_membership(now, change);
        self.settle(now);
        self.check_invariants();
        result
    }

    /// The bootstrap node's first configuration of a joined cluster's shard
    /// (`Raft::propose_first_membership`, spec §8.1).
    pub fn propose_first_membership(&mut self, now: Instant) -> Option<u64> {
        let index = self.raft.propose_first_membership(now);
        self.settle(now);
        self.check_invariants();
        index
    }

    /// A replica WITHOUT state that is new (`--new-cluster`): it asks like [`Replica::rejoin`]
    /// and starts fresh only once every other node says it is new too (`Raft::start_new`).
    pub fn start_new(config: Config, rng_seed: u64, now: Instant) -> Replica {
        let mut shard = Replica::new(config, rng_seed, HardState::default(), Vec::new(), now);
        shard.raft = Raft::start_new(shard.config.raft.clone(), rng_seed, now);
        shard.raft.set_snapshot_check(snapshot_check(&shard.config));
        shard
            .raft
            .set_snapshot_membership(Arc::new(snapshot_membership));
        shard.settle(now);
        shard.check_invariants();
        shard
    }

    /// A replica restarting from a persisted snapshot (if any) and the log after it. `Err`
    /// if the snapshot does not decode.
    pub fn restore(
        config: Config,
        rng_seed: u64,
        state: HardState,
        snapshot: Option<Snapshot>,
        log: Vec<Entry>,
        now: Instant,
    ) -> Result<Replica, String> {
        if let Err(error) = config.validate() {
            panic!("{error}");
        }
        let decoded = match &snapshot {
            Some((meta, data)) => Some((*meta, decode_snapshot(&config, data)?)),
            None => None,
        };
        let membership = decoded.as_ref().and_then(|(_, d)| d.membership.clone());
        let mut raft = Raft::restore_with_membership(
            config.raft.clone(),
            rng_seed,
            state,
            snapshot,
            membership,
            log,
            now,
        );
        raft.set_snapshot_check(snapshot_check(&config));
        raft.set_snapshot_membership(Arc::new(snapshot_membership));
        let mut shard = Replica {
            config,
            raft,
            table: None,
            applied_index: 0,
            applied_stamp: Instant::ZERO,
            clock: None,
            tick_pending: None,
            init_wanted: false,
            proposed: HashMap::new(),
            applying: Entry {
                term: 0,
                index: 0,
                data: Arc::default(),
            },
            in_flight: SourceCounts::alone(IN_FLIGHT_PER_SOURCE_MAX),
            proposing: None,
            replies: VecDeque::new(),
            reads: VecDeque::new(),
            preferred_leader: None,
            spread_tried_in: 0,
            buf: vec![0; LOG_COMMAND_LEN_MAX],
            compact_every: COMPACT_EVERY_DEFAULT,
            compact_keep: COMPACT_KEEP_DEFAULT,
            uncommitted_max: UNCOMMITTED_MAX,
            log_bytes_max: LOG_BYTES_PER_SHARD_MAX,
            snapshot_pending: None,
            compact_not_before: 0,
            led: lock_table::Counts::default(),
            settings: None,
            membership: None,
        };
        if let Some((meta, decoded)) = decoded {
            shard.table = decoded.table;
            shard.applied_index = meta.index;
            shard.applied_stamp = decoded.stamp;
            shard.settings = decoded.settings;
            shard.membership = decoded.membership;
        }
        shard.settle(now);
        shard.check_invariants();
        Ok(shard)
    }

    /// Snapshot cadence: a snapshot every `every` applied entries, handed to Raft (which then
    /// drops the log up to it) `keep` entries later. `every == 0` turns snapshots off.
    pub fn set_compaction(&mut self, every: u64, keep: u64) {
        self.compact_every = every;
        self.compact_keep = keep;
        self.check_invariants();
    }

    /// Lowers the cap on uncommitted proposals (default [`UNCOMMITTED_MAX`], at least 1): the
    /// simulator makes leaders answer OVERLOADED often with it.
    pub fn set_uncommitted_max(&mut self, max: u64) {
        self.uncommitted_max = max.clamp(1, UNCOMMITTED_MAX);
        self.check_invariants();
    }

    /// Lowers the log-bytes limit (default [`LOG_BYTES_PER_SHARD_MAX`]): tests reach it
    /// with a few requests.
    pub fn set_log_bytes_max(&mut self, max: u64) {
        self.log_bytes_max = max.min(LOG_BYTES_PER_SHARD_MAX);
        self.check_invariants();
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client request. Changing requests are proposed (answered once committed); STATUS is
    /// answered at once from the leader's lease. `Err`: this replica cannot serve it; the
    /// hint names the leader if known.
    pub fn handle_request(
        &mut self,
        now: Instant,
        request: ClientRequest<'_>,
    ) -> Result<(), NotLeader> {
        let result = self.take_request(now, request);
        self.check_invariants();
        result
    }

    /// [`Replica::handle_request`] but for the invariants' check.
    fn take_request(&mut self, now: Instant, request: ClientRequest<'_>) -> Result<(), NotLeader> {
        let leading = self.leading();
        let Some(clock) = self.clock.filter(|_| leading) else {
            return Err(self.not_leader());
        };
        let log_now = clock.log_time(now);
        if let RequestBody::Status { resource } = request.body {
            let reply_len_max = request.datagram_len;
            if !self.raft.lease_valid(now) {
                // No lease (clocks are not trusted now, e.g. after a leadership transfer):
                // confirm leadership with a heartbeat round first (ReadIndex).
                if self.reads.len() >= READS_PENDING_MAX {
                    self.push_overloaded(&request);
                    return Ok(());
                }
                let Some(round) = self.raft.confirm_leadership(now) else {
                    // A new leader whose first entry has not committed yet does not know
                    // every committed command: it cannot answer, but it is the leader, so the
                    // client should come back here shortly rather than go elsewhere.
                    self.push_overloaded(&request);
                    return Ok(());
                };
                assert!(round > 0 && round == self.raft.round());
                let read = PendingRead::of(&request, resource, reply_len_max, log_now);
                self.reads.push_back((round, read));
                self.settle(now);
                return Ok(());
            }
            if self
                .table
                .as_ref()
                .is_some_and(|table| table.timers_due(log_now, resource))
            {
                // Spec §7.2.1: the answer is the state after every timer due at receipt. Those
                // of this lock fire only when the TICK (proposed at once, in `settle`) applies,
                // so the read waits for it, under the lease (round 0: nothing to confirm).
                if self.reads.len() >= READS_PENDING_MAX {
                    self.push_overloaded(&request);
                    return Ok(());
                }
                let read = PendingRead::of(&request, resource, reply_len_max, log_now);
                self.reads.push_back((0, read));
                self.settle(now);
                return Ok(());
            }
            let (answer, holder) = match &self.table {
                Some(table) => table.read_status(log_now.max(self.applied_stamp), resource),
                // Before INIT applies no lock can be held: every lock is free.
                None => (Answer::bare(Status::Ok), IdBuf::EMPTY),
            };
            let (holder, holder_truncated) = lock_table::fit_holder(holder, reply_len_max);
            self.replies.push_back(Reply {
                to: request.reply_to,
                id: request.id,
                attempt: request.attempt,
                kind: RequestKind::Status,
                answer,
                holder,
                holder_truncated,
            });
            return Ok(());
        }
        if self.init_wanted {
            // INIT comes before every other command (spec §8.8); the shell proposes it as soon
            // as this input is handled, so the client should come back here shortly.
            self.push_overloaded(&request);
            return Ok(());
        }
        if self.proposed.contains_key(&request.id) {
            // The first copy is on its way through the log; its answer comes when it commits.
            return Ok(());
        }
        // Spec §9: a log this long refuses what would make it longer, until it compacts.
        if self.raft.last_index() - self.raft.commit_index() >= self.uncommitted_max
            || self.raft.log_bytes() >= self.log_bytes_max
        {
            self.refuse_at_limit(&request);
            return Ok(());
        }
        // Hashed once for the two limits and the count.
        let source = self.in_flight.key(request.reply_to.ip());
        // Spec §9 (per shard) and §9.1 (per node, over every shard the node leads).
        if self.in_flight.get(source) >= IN_FLIGHT_PER_SOURCE_MAX
            || self.in_flight.node_full(source)
        {
            self.refuse_at_limit(&request);
            return Ok(());
        }
        let command = log_command(log_now, &request);
        let index = self.propose(now, &command)?;
        assert!(self.proposing.is_none());
        self.proposing = Some((request.id, index));
        self.settle(now);
        // Still in flight (not applied, and still this leader's): counted from now on.
        if let Some((id, index)) = self.proposing.take() {
            self.in_flight.add(source);
            let earlier = self.proposed.insert(id, Proposed { index, source });
            assert!(earlier.is_none(), "a request proposed twice in a term");
        }
        Ok(())
    }

    /// True when this replica leads a log that holds no INIT yet: the shell must call
    /// [`Replica::propose_init`] with its wall clock before it hands this replica anything else
    /// (client requests get OVERLOADED until then).
    pub fn wants_wall_clock(&self) -> bool {
        self.init_wanted && self.leading()
    }

    /// Proposes INIT with `wall_clock_us`, the wall-clock time in microseconds since the Unix
    /// epoch that the shell read just now: the shard's first fencing token (spec §8.8). Read
    /// when INIT is proposed, not when the node started, so that it is above every token an
    /// earlier incarnation of the shard issued until now (spec §7.2.4); the core has no clock
    /// of its own, so the shell passes it in. Does nothing unless
    /// [`Replica::wants_wall_clock`].
    pub fn propose_init(&mut self, now: Instant, wall_clock_us: u64) {
        if !self.wants_wall_clock() {
            return;
        }
        // Room for 2^62 grants after it (lock_table::Config::validate); 0 is "no token".
        let token_first = wall_clock_us.clamp(1, u64::MAX / 2);
        // Refused only while handing leadership over: then the next leader proposes it.
        if self.propose(now, &LogCommand::Init { token_first }).is_ok() {
            self.init_wanted = false;
        }
        self.settle(now);
        self.check_invariants();
    }

    /// Hands this shard's leadership to `to` (thesis §3.10): for a graceful shutdown. Client
    /// requests meanwhile get NOT_LEADER naming `to`.
    pub fn transfer_leadership(&mut self, now: Instant, to: NodeId) -> Result<(), NotLeader> {
        self.raft.transfer_leadership(now, to)?;
        self.settle(now);
        self.check_invariants();
        Ok(())
    }

    /// The node that should lead this shard whenever it is up to date: once this replica
    /// has led for [`SPREAD_AFTER`], it hands the shard over (once per term), so leaders
    /// spread evenly over the nodes instead of piling up on whoever won the elections.
    pub fn set_preferred_leader(&mut self, node: Option<NodeId>) {
        self.preferred_leader = node;
        self.check_invariants();
    }

    /// Makes this replica count its requests in flight per source into its node's counts
    /// (`node`, shared by every replica of the node; spec §9.1).
    pub fn share_in_flight(&mut self, node: InFlight) {
        self.in_flight.share(node);
        // Sources are hashed under the node's key from now on.
        for proposed in self.proposed.values_mut() {
            proposed.source = self.in_flight.key(proposed.source.ip());
        }
        self.check_invariants();
    }

    /// Makes this replica share `shared` with the node's other shard replicas: the budget of
    /// incoming snapshot transfers and of log lines about peer input (`raft::NodeShared`).
    pub fn share(&mut self, shared: raft::NodeShared) {
        self.raft.share(shared);
        self.check_invariants();
    }

    /// This replica's node is leaving: it hands nothing to it and takes no shard over.
    pub fn set_leaving(&mut self) {
        self.preferred_leader = None;
        self.raft.decline_transfers();
        self.check_invariants();
    }

    /// A Raft message from another replica of this shard.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        self.raft.handle_message(now, from, msg);
        self.settle(now);
        self.check_invariants();
    }

    /// The shell stored what this replica handed out, up to a delta whose stored log ends at
    /// `(index, term)` (`Raft::persisted`): a leader may commit, apply and answer.
    pub fn persisted(&mut self, now: Instant, index: u64, term: u64) {
        self.raft.persisted(index, term);
        self.settle(now);
        self.check_invariants();
    }

    /// Call when `now >= poll_timeout()`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.raft.poll_timeout() {
            self.raft.handle_timeout(now);
        }
        self.settle(now);
        self.check_invariants();
    }

    /// The next Raft message to send. Drain after every `handle_*`, after persisting
    /// `hard_state()` and the log (Raft's persistence contract).
    pub fn poll_message(&mut self) -> Option<(NodeId, Message)> {
        self.raft.poll_message()
    }

    /// The next answer to send to a client (leader only). Drain after persisting, like
    /// messages: an answer may depend on this replica's own log being durable.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Instant {
        let raft = self.raft.poll_timeout();
        match (self.clock, self.tick_pending, &self.table) {
            // While handing over, the leader proposes nothing (Raft refuses it): the table's
            // timers wait for the new leader, or for the transfer to be abandoned (a Raft
            // deadline, so this replica wakes then).
            (Some(clock), None, Some(table))
                if self.leading() && self.raft.transferring_to().is_none() =>
            {
                match table.poll_timeout() {
                    // The table's timers run on log time; wake when this node's clock gets
                    // there.
                    Some(due) => raft.min(clock.local_time(due, clock.elected_at)),
                    None => raft,
                }
            }
            _ => raft,
        }
    }

    /// The configuration as of the applied index (spec §8.5, "Configuration"): the latest
    /// CONFIG applied, or the one the snapshot it started from records; `None` before any
    /// (the static voters then hold).
    pub fn applied_membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn hard_state(&self) -> HardState {
        self.raft.hard_state()
    }

    /// What this replica must have stored before anything its inputs since the last call
    /// produced may leave (see [`Raft::take_persist`]); `None`: nothing.
    pub fn take_persist(&mut self) -> Option<raft::Persist> {
        self.raft.take_persist()
    }

    /// Index of the last log entry applied to the table (0 before the first).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Until when, on this node's clock, a lease this replica granted may run: its table's
    /// lease horizon (log time) at its log clock's rate. `None` unless it leads (only a
    /// leader's answers grant) or while no lease was ever granted. What the lease horizon
    /// file of a one-voter node without a disk must cover (spec §7.2.4).
    pub fn lease_horizon(&self) -> Option<Instant> {
        let clock = self.clock.filter(|_| self.leading())?;
        let horizon = self.table.as_ref()?.lease_horizon();
        (horizon > Instant::ZERO).then(|| clock.local_time(horizon, clock.elected_at))
    }

    /// Lock state changes applied while leading since the last call (monitoring).
    pub fn take_led_counts(&mut self) -> lock_table::Counts {
        std::mem::take(&mut self.led)
    }

    /// The applied lock table (`None` before the INIT command is applied).
    pub fn table(&self) -> Option<&LockTable> {
        self.table.as_ref()
    }

    /// HOLDS (spec §4.13, §8.9): a page of this shard's holds from `cursor` whose holders'
    /// client ids start with `prefix`, within `budget` bytes of entries, read from the applied
    /// table under the leader lease, as of the log time of `now`. Read-only: nothing is
    /// proposed, remembered or held back. HOLDS takes no ReadIndex round: without a valid
    /// lease the answer is OVERLOADED ([`HoldsRefusal::NoLease`]), an operator's listing is
    /// worth a retry.
    pub fn read_holds(
        &self,
        now: Instant,
        cursor: u64,
        prefix: &[u8],
        budget: usize,
    ) -> Result<lock_table::HoldsPage<'_>, HoldsRefusal> {
        let Some(clock) = self.clock.filter(|_| self.leading()) else {
            return Err(HoldsRefusal::NotLeader(self.not_leader()));
        };
        if !self.raft.lease_valid(now) {
            return Err(HoldsRefusal::NoLease {
                retry_after_ms: self.config.table.retry_after_ms,
            });
        }
        let at = clock.log_time(now).max(self.applied_stamp);
        Ok(match &self.table {
            Some(table) => table.holds_page(at, cursor, prefix, budget),
            // Before INIT applies no lock can be held.
            None => lock_table::HoldsPage {
                entries: Vec::new(),
                next_cursor: 0,
                examined: 0,
            },
        })
    }

    pub fn stats(&self) -> ShardStats {
        ShardStats {
            role: Some(self.raft.role()),
            learner: self.raft.membership().is_learner(self.config.raft.id),
            named: self.raft.membership().contains(self.config.raft.id),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit_index: self.raft.commit_index(),
            applied_index: self.applied_index,
            log_len: self.raft.last_index(),
            faulty_drops: self.raft.faulty_drops(),
            snapshot_bytes: self
                .raft
                .snapshot_data()
                .map_or(0, |data| data.len() as u64),
            table: self
                .table
                .as_ref()
                .map(LockTable::stats)
                .unwrap_or_default(),
        }
    }

    /// What holds after every input, checked at the end of each (as Raft checks its own),
    /// in release builds too: a broken one is a bug in this code, never bad input (Raft drops
    /// forged peer input, and every replica skips a committed entry it cannot apply alike).
    /// Checks that walk a queue run in debug builds only (tests and the simulator): the rest
    /// is a few comparisons per input.
    fn check_invariants(&self) {
        let commit = self.raft.commit_index();
        let last = self.raft.last_index();
        let applied = self.applied_index;
        // `settle` applies everything committed before an input returns, and nothing else:
        // only what a majority stores changes the table.
        assert!(
            applied == commit,
            "shard {}: applied {applied}, committed {commit}",
            self.config.shard
        );
        // Raft's snapshot is one this replica took of its own applied state, or installed.
        assert!(self.raft.snapshot_meta().index <= applied);
        if let Some((meta, _)) = &self.snapshot_pending {
            assert!(self.raft.snapshot_meta().index < meta.index && meta.index <= applied);
        }
        // The table exists once INIT applied, an entry of the applied prefix; its clock is
        // the applied stamp (it never saw a later time).
        if let Some(table) = &self.table {
            assert!(applied > 0 && table.clock() <= self.applied_stamp);
        }
        assert!(self.spread_tried_in <= self.raft.term());
        assert!(self.reads.len() <= READS_PENDING_MAX);
        assert!(self.proposed.len() as u64 <= UNCOMMITTED_MAX);
        // Each proposed request is an entry of its own, after the applied prefix.
        assert!(self.proposed.len() as u64 <= last - applied);
        // Between inputs every request in flight is in `proposed`.
        assert!(self.proposing.is_none(), "a proposal left unsettled");
        // Every proposed request is counted once, under its source.
        debug_assert_eq!(self.in_flight.total(), self.proposed.len() as u64);
        let Some(clock) = self.clock else {
            // Only a leader keeps a log clock, proposes, answers or holds reads: whatever it
            // kept for them goes when it stops leading.
            assert!(self.raft.role() != Role::Leader);
            assert!(self.tick_pending.is_none() && !self.init_wanted);
            assert!(self.proposed.is_empty() && self.replies.is_empty() && self.reads.is_empty());
            return;
        };
        // The log clock is the current term's, on a leader.
        assert!(self.raft.role() == Role::Leader && clock.term == self.raft.term());
        // Log time never goes back along the log: everything applied is stamped at or
        // before the latest stamp this leader proposed, which is at least its base.
        assert!(clock.base <= clock.stamped && self.applied_stamp <= clock.stamped);
        // INIT is wanted only while the log has none, so nothing applied created the table.
        assert!(!self.init_wanted || self.table.is_none());
        if let Some(tick) = self.tick_pending {
            // The TICK this leader proposed and has not applied yet is in its log.
            assert!(applied < tick && tick <= last);
            let entry = self
                .raft
                .entry(tick)
                .expect("an unapplied entry is in the log");
            assert!(matches!(
                LogCommand::decode(&entry.data),
                Ok(LogCommand::Tick { .. })
            ));
        }
        if cfg!(debug_assertions) {
            for &Proposed { index, .. } in self.proposed.values() {
                assert!(applied < index && index <= last);
            }
            // A held STATUS waits for a round this leader started (0: none), and rounds grow.
            let round = self.raft.round();
            let mut previous = 0;
            for &(read_round, _) in &self.reads {
                assert!(read_round <= round);
                if read_round > 0 {
                    assert!(read_round >= previous);
                    previous = read_round;
                }
            }
        }
    }

    fn leading(&self) -> bool {
        self.raft.role() == Role::Leader
            && self
                .clock
                .is_some_and(|clock| clock.term == self.raft.term())
    }

    fn not_leader(&self) -> NotLeader {
        let leader_hint = self.raft.leader().filter(|&id| id != self.config.raft.id);
        NotLeader { leader_hint }
    }

    /// A logged request met a limit (spec §9, §9.1): OVERLOADED, unless the request took
    /// effect already — then its remembered answer, which wins over every limit.
    fn refuse_at_limit(&mut self, request: &ClientRequest<'_>) {
        if !self.answer_remembered(request) {
            self.push_overloaded(request);
        }
    }

    /// If this replica leads and its table remembers the final answer to `request` (an
    /// earlier copy took effect), queues that answer for [`Replica::poll_reply`] and returns
    /// true; else changes nothing and returns false. For a request refused at a limit
    /// (spec §9.1 rule 6): the limit must not hide from a client that its request took
    /// effect. The answer is read from the applied table, so it is committed, and it is what
    /// logging the copy again would answer; nothing is logged, so a limit on the log or on
    /// the node's counts cannot stand in its way.
    pub fn answer_remembered(&mut self, request: &ClientRequest<'_>) -> bool {
        assert!(
            request.body.kind().is_logged(),
            "STATUS is never remembered"
        );
        if !self.leading() {
            return false;
        }
        let Some(reply) = self
            .table
            .as_ref()
            .and_then(|t| t.remembered_reply(request))
        else {
            return false;
        };
        assert!(reply.id == request.id && reply.kind == request.body.kind());
        self.replies.push_back(reply);
        true
    }

    fn push_overloaded(&mut self, request: &ClientRequest<'_>) {
        let retry_after_ms = self.config.table.retry_after_ms;
        self.replies.push_back(Reply {
            to: request.reply_to,
            id: request.id,
            attempt: request.attempt,
            kind: request.body.kind(),
            answer: Answer {
                retry_after_ms,
                ..Answer::bare(Status::Overloaded)
            },
            holder: IdBuf::EMPTY,
            holder_truncated: false,
        });
    }

    /// Answers the held STATUS requests whose round a majority acknowledged (ReadIndex; round
    /// 0 needs none) and that can be answered with every timer due at their receipt fired
    /// (spec §7.2.1): at the current log time if none of their lock is due now, else as of the
    /// applied stamp once a TICK at or after their receipt has applied (the table's state is
    /// exact at that stamp, which lies between the receipt and now).
    fn answer_reads(&mut self, now: Instant) {
        if self.reads.is_empty() {
            return;
        }
        let confirmed = self.raft.confirmed_round();
        let log_now = self
            .clock
            .map_or(self.applied_stamp, |clock| clock.log_time(now))
            .max(self.applied_stamp);
        // In place, in arrival order: a read not ready yet stays where it is.
        self.reads.retain(|&(round, ref read)| {
            let resource = read.resource.as_slice();
            let at = match &self.table {
                _ if round > confirmed => None,
                Some(table) if table.timers_due(log_now, resource) => {
                    (self.applied_stamp >= read.at).then_some(self.applied_stamp)
                }
                _ => Some(log_now),
            };
            let Some(at) = at else {
                return true;
            };
            let (answer, holder) = match &self.table {
                Some(table) => table.read_status(at, resource),
                None => (Answer::bare(Status::Ok), IdBuf::EMPTY),
            };
            // Sized against its own request, not against whatever datagram is being handled
            // when the round is confirmed (spec §2.2 rule 5).
            let (holder, holder_truncated) = lock_table::fit_holder(holder, read.reply_len_max);
            self.replies.push_back(Reply {
                to: read.to,
                id: read.id,
                attempt: read.attempt,
                kind: RequestKind::Status,
                answer,
                holder,
                holder_truncated,
            });
            false
        });
    }

    /// Leader spreading (see `set_preferred_leader`).
    fn spread(&mut self, now: Instant) {
        let (Some(preferred), Some(clock)) = (self.preferred_leader, self.clock) else {
            return;
        };
        let term = self.raft.term();
        if preferred == self.config.raft.id
            || !self.leading()
            || self.spread_tried_in == term
            || now < clock.elected_at + SPREAD_AFTER
            || !self.raft.follower_caught_up(preferred, now)
        {
            return;
        }
        self.spread_tried_in = term;
        log::info!(
            "shard {}: handing leadership to its preferred node {preferred}",
            self.config.shard
        );
        let _ = self.raft.transfer_leadership(now, preferred);
    }

    fn propose(&mut self, now: Instant, command: &LogCommand<'_>) -> Result<u64, NotLeader> {
        let len = command
            .encode(&mut self.buf)
            .expect("the scratch buffer fits every command");
        let index = self.raft.propose(now, &self.buf[..len])?;
        // Log time never goes back along the log (module docs, "Log time"): this leader
        // stamps from its election's base on, with its own clock, which never goes back.
        if let (Some(clock), Some(stamp)) = (self.clock.as_mut(), stamp_of(command)) {
            assert!(
                stamp >= clock.stamped,
                "shard {}: stamp {stamp:?} proposed after {:?}",
                self.config.shard,
                clock.stamped
            );
            clock.stamped = stamp;
        }
        assert!(index > self.applied_index && index == self.raft.last_index());
        Ok(index)
    }

    /// After every input: follows role changes, applies what committed, proposes a TICK if a
    /// table timer is due.
    fn settle(&mut self, now: Instant) {
        let term = self.raft.term();
        if self.raft.role() == Role::Leader {
            if self.clock.map(|clock| clock.term) != Some(term) {
                self.become_leader(now, term);
            }
        } else if self.clock.is_some() {
            self.clock = None;
            self.tick_pending = None;
            self.init_wanted = false;
            self.proposed.clear();
            self.in_flight.clear();
            self.proposing = None;
            self.replies.clear();
            self.reads.clear();
        }
        self.apply_committed(now);
        self.answer_reads(now);
        self.propose_tick(now);
        self.spread(now);
    }

    fn become_leader(&mut self, now: Instant, term: u64) {
        // The largest stamp in the log: the applied prefix's, or a later one in the tail
        // (stamps never decrease along the log, so the last stamped entry has it).
        let mut base = self.applied_stamp;
        let mut has_init = self.table.is_some();
        // The settings the log will hold at its end (spec §8.8).
        let mut logged = self.settings;
        let first_unapplied = self.applied_index + 1;
        for index in first_unapplied..=self.raft.last_index() {
            let Some(entry) = self.raft.entry(index) else {
                continue;
            };
            match LogCommand::decode(&entry.data) {
                Ok(LogCommand::Init { .. }) => has_init = true,
                Ok(LogCommand::Tick { stamp }) | Ok(LogCommand::Request { stamp, .. }) => {
                    base = base.max(Instant::from_micros(stamp));
                }
                Ok(command @ LogCommand::Settings { .. }) => {
                    logged = LoggedSettings::of_command(&command);
                }
                Ok(LogCommand::Config { .. }) | Err(_) => {}
            }
        }
        log::info!(
            "shard {}: node {} leads term {term} from log time {base:?}",
            self.config.shard,
            self.config.raft.id
        );
        self.clock = Some(LogClock {
            term,
            base,
            elected_at: now,
            stamped: base,
        });
        self.tick_pending = None;
        self.proposed.clear();
        self.in_flight.clear();
        self.proposing = None;
        self.replies.clear();
        // INIT is proposed with the wall clock of the moment (spec §8.8), which the shell
        // passes in right after this input (`propose_init`); the table it creates takes the
        // settings logged before it.
        self.init_wanted = !has_init;
        // Spec §8.8: before any request this leader proposes, the log says the settings it
        // applies with (unless it already does), so every replica applies its commands alike.
        let own = LoggedSettings::of(&self.config.table);
        if logged != Some(own) {
            self.propose(now, &own.command())
                .expect("a leader accepts proposals");
        }
    }

    fn propose_tick(&mut self, now: Instant) {
        if !self.leading() || self.tick_pending.is_some() || self.raft.transferring_to().is_some() {
            return;
        }
        let (Some(clock), Some(table)) = (self.clock, &self.table) else {
            return;
        };
        let log_now = clock.log_time(now);
        if table.poll_timeout().is_some_and(|due| due <= log_now) {
            let tick = LogCommand::Tick {
                stamp: log_now.as_micros(),
            };
            let Ok(index) = self.propose(now, &tick) else {
                return;
            };
            self.tick_pending = Some(index);
            // A single voter commits inside propose.
            self.apply_committed(now);
        }
    }

    /// Installs what the leader's snapshot says, then applies committed entries, then takes
    /// or hands over a snapshot when due.
    fn apply_committed(&mut self, now: Instant) {
        while let Some((meta, data)) = self.raft.poll_snapshot() {
            self.install(meta, &data);
        }
        // Most calls (one per input) find nothing newly committed: they take no entry.
        if self.raft.commit_index() > self.applied_index {
            self.apply_entries(now);
        }
        self.compact();
    }

    /// Applies every entry committed beyond the applied index, in order.
    fn apply_entries(&mut self, now: Instant) {
        let mut entry = std::mem::replace(
            &mut self.applying,
            Entry {
                term: 0,
                index: 0,
                data: Arc::default(),
            },
        );
        while self.raft.poll_committed_into(&mut entry) {
            self.apply(now, &entry);
        }
        self.applying = entry;
        assert!(self.applied_index == self.raft.commit_index());
    }

    /// Replaces this replica's state with a snapshot from the leader (thesis §5.3). Raft
    /// installs only a snapshot that [`snapshot_check`] accepted, which decodes it the same
    /// way: a faulty or forged one never gets here (spec §8.5, "Receiving a snapshot").
    fn install(&mut self, meta: SnapshotMeta, data: &[u8]) {
        // Raft installs only a snapshot beyond its commit index, which this replica applied
        // through: the applied index never goes back.
        assert!(meta.index > self.applied_index && self.clock.is_none());
        let decoded = decode_snapshot(&self.config, data)
            .expect("Raft installs only a snapshot that decoded (snapshot_check)");
        self.table = decoded.table;
        self.applied_index = meta.index;
        self.applied_stamp = decoded.stamp;
        self.settings = decoded.settings;
        self.membership = decoded.membership;
        self.tick_pending = None;
        self.proposed.clear();
        self.in_flight.clear();
        self.proposing = None;
        self.replies.clear();
        self.snapshot_pending = None;
    }

    /// Compacts the log through the applied index now, whatever the cadence, if it can (the
    /// node's log-bytes limit is near: `core::node::limits`); returns whether the log
    /// shrank.
    pub fn compact_now(&mut self) -> bool {
        let before = self.raft.log_bytes();
        self.compact_forced(true);
        self.check_invariants();
        self.raft.log_bytes() < before
    }

    /// Takes a snapshot every `compact_every` applied entries, and gives Raft the pending one
    /// once `compact_keep` more entries are applied.
    fn compact(&mut self) {
        self.compact_forced(false);
    }

    /// [`Replica::compact`], or at once (without the kept tail) with `force`. Called after
    /// every input: the checks that find nothing to do (nearly always) are kept apart from
    /// the work, so they cost a few instructions.
    fn compact_forced(&mut self, force: bool) {
        // While a follower receives the current snapshot, a new one would restart that
        // transfer from its first byte; under steady load it would never end.
        if self.compact_every == 0 || self.raft.sending_snapshot() {
            return;
        }
        // Past half its log-bytes limit the log is compacted now, whatever the cadence and
        // without the kept tail, before its leader has to refuse requests (spec §9).
        let bytes_due = force || self.raft.log_bytes() >= self.log_bytes_max / 2;
        if let Some((meta, _)) = &self.snapshot_pending {
            if self.applied_index >= meta.index + self.compact_keep || bytes_due {
                let (meta, data) = self.snapshot_pending.take().expect("pending");
                self.raft.compact(meta.index, data);
            }
            return;
        }
        let since = self.applied_index - self.raft.snapshot_meta().index;
        let due = since >= self.compact_every || (bytes_due && since > 0);
        if !due || self.applied_index < self.compact_not_before {
            return;
        }
        self.take_snapshot(bytes_due);
    }

    /// Takes the snapshot [`Replica::compact_forced`] found due (`bytes_due`: past half the
    /// log-bytes limit), and gives it to Raft at once if nothing is kept.
    #[inline(never)]
    fn take_snapshot(&mut self, bytes_due: bool) {
        assert!(self.snapshot_pending.is_none());
        let mut data = Vec::new();
        data.extend_from_slice(&SHARD_SNAPSHOT_MAGIC);
        data.push(SHARD_SNAPSHOT_VERSION);
        data.extend_from_slice(&self.applied_stamp.as_micros().to_be_bytes());
        match self.settings {
            Some(s) => {
                data.push(1);
                for value in [s.ttl_default_ms, s.retry_after_ms, s.startup_grace_ms] {
                    data.extend_from_slice(&value.to_be_bytes());
                }
            }
            None => data.push(0),
        }
        // Raft's configuration as of the applied index is the one it compacts into this
        // snapshot (the log's latest CONFIG through it; the static one before any).
        assert!(
            self.applied_index >= self.raft.snapshot_meta().index
                && self.applied_index <= self.raft.last_index()
        );
        let static_voters = Membership::of_voters(&self.config.raft.voters);
        assert!(
            self.membership.as_ref().unwrap_or(&static_voters)
                == self.raft.membership_at(self.applied_index),
            "the applied configuration is Raft's as of the applied index"
        );
        match &self.membership {
            Some(membership) => {
                data.push(1);
                data.extend_from_slice(&membership.to_entry());
            }
            None => data.push(0),
        }
        match &self.table {
            Some(table) => {
                data.push(1);
                table.snapshot(&mut data);
            }
            None => data.push(0),
        }
        if data.len() as u64 > udplock_protocol::SNAPSHOT_LEN_MAX {
            // No follower could receive it: keep the log instead (followers catch up from
            // entries), and try again after as many entries.
            log::error!(
                "shard {}: a snapshot of {} bytes is above SNAPSHOT_LEN_MAX; the log is kept \
                 (lower the table limits to bound it)",
                self.config.shard,
                data.len()
            );
            self.compact_not_before = self.applied_index + self.compact_every;
            return;
        }
        let term = self
            .raft
            .entry(self.applied_index)
            .map_or(self.raft.snapshot_meta().term, |e| e.term);
        let meta = SnapshotMeta {
            index: self.applied_index,
            term,
        };
        // Kept until the next one (Raft sends it to followers): without the spare capacity
        // growing it left, so a node's snapshots take what the limits say (README, "Memory
        // per node").
        data.shrink_to_fit();
        self.snapshot_pending = Some((meta, Arc::new(data)));
        if self.compact_keep == 0 || bytes_due {
            self.compact_forced(bytes_due);
        }
    }

    /// Applies one committed entry to the table, identically on every replica. `local_now`
    /// (this node's clock) only paces log lines; the entry's stamp is its time.
    fn apply(&mut self, local_now: Instant, entry: &Entry) {
        assert!(entry.index == self.applied_index + 1);
        self.applied_index = entry.index;
        if self.tick_pending == Some(entry.index) {
            self.tick_pending = None;
        }
        if entry.data.is_empty() {
            return; // a leader's no-op
        }
        let command = match LogCommand::decode(&entry.data) {
            Ok(command) => command,
            Err(error) => {
                // Every replica holds the same bytes, so every replica skips it alike. Only a
                // faulty or forged peer's entries get here: log within the node's budget.
                if let Some(skipped) = self.bad_entry_line(local_now) {
                    log::error!(
                        "shard {}: entry {} does not decode ({error:?}); skipped{skipped}",
                        self.config.shard,
                        entry.index
                    );
                }
                return;
            }
        };
        // Monitoring: the leader logs each lock state change and counts it, once per
        // cluster; followers apply the same silently.
        let leading = self.leading();
        let before = self.table.as_mut().map(|table| {
            table.set_log_shard(leading.then_some(self.config.shard));
            table.set_replying(leading);
            table.counts()
        });
        match command {
            LogCommand::Init { token_first } => {
                if self.table.is_none() {
                    let table = match self.settings {
                        Some(settings) => settings.over(&self.config.table),
                        None => self.config.table.clone(),
                    };
                    self.table = Some(LockTable::new(lock_table::Config {
                        fencing_token_first: token_first,
                        ..table
                    }));
                }
            }
            command @ LogCommand::Settings { .. } => {
                let settings = LoggedSettings::of_command(&command).expect("a SETTINGS command");
                // Checked against limits every replica shares (the cluster id holds them),
                // so every replica takes or skips it alike.
                if let Err(error) = settings.over(&self.config.table).validate() {
                    if let Some(skipped) = self.bad_entry_line(local_now) {
                        log::error!(
                            "shard {}: entry {} sets {error}; skipped{skipped}",
                            self.config.shard,
                            entry.index
                        );
                    }
                    return;
                }
                self.settings = Some(settings);
                if let Some(table) = self.table.as_mut() {
                    table
                        .set_logged_settings(
                            settings.ttl_default_ms,
                            settings.retry_after_ms,
                            settings.startup_grace_ms,
                        )
                        .expect("validated above");
                }
            }
            // Raft's configuration (spec §8.7): who replicates the log, not the table's
            // state; recorded as of the applied index for the next snapshot.
            LogCommand::Config { .. } => {
                self.membership = Membership::of_entry(&entry.data);
            }
            LogCommand::Tick { stamp } => {
                let now = self.stamp(stamp);
                if let Some(table) = self.table.as_mut() {
                    table.handle_timeout(now);
                }
            }
            command @ LogCommand::Request { .. } => {
                let (stamp, request) = logged_request(&command).expect("a REQUEST command");
                let now = self.stamp(stamp);
                if self.proposing == Some((request.id, entry.index)) {
                    // Applied inside the input that proposed it: never counted.
                    self.proposing = None;
                } else if self.proposed.is_empty() {
                    // Not counted (a follower's case): no hash.
                } else if let MapEntry::Occupied(proposed) = self.proposed.entry(request.id) {
                    // One hash of the id for the lookup and the removal (keyed SipHash: ids
                    // come from the network).
                    if proposed.get().index == entry.index {
                        let Proposed { source, .. } = proposed.remove();
                        // The logged address is the proposing copy's (`log_command`).
                        debug_assert_eq!(source.ip(), request.reply_to.ip());
                        self.in_flight.remove(source);
                    }
                }
                if let Some(table) = self.table.as_mut() {
                    table.handle_request(now, request);
                }
            }
        }
        if let (true, Some(table)) = (leading, self.table.as_ref()) {
            self.led
                .add(&table.counts().since(&before.unwrap_or_default()));
        }
        if let Some(table) = self.table.as_mut() {
            // Moved in one go (a reply is ~350 bytes): the leader's to its clients. A
            // follower's table built none (`set_replying` above).
            if leading {
                table.move_replies_into(&mut self.replies);
            } else {
                assert!(table.poll_reply().is_none(), "a follower's table replied");
            }
        }
    }

    /// Whether a line about a committed entry this replica cannot apply may be written now
    /// (the node's budget of lines about peer input, [`raft::PEER_LOG_LINES_MAX`]).
    fn bad_entry_line(&self, now: Instant) -> Option<raft::Skipped> {
        self.raft
            .shared()
            .peer_log()
            .admit(raft::PeerLogKind::BadEntry, now)
    }

    /// The time a command applies at: its stamp, never before the previous one.
    fn stamp(&mut self, stamp: u64) -> Instant {
        self.applied_stamp = self.applied_stamp.max(Instant::from_micros(stamp));
        self.applied_stamp
    }
}

/// The REQUEST command for a client request, stamped `log_now`.
fn log_command<'a>(log_now: Instant, request: &ClientRequest<'a>) -> LogCommand<'a> {
    assert!(request.body.kind().is_logged(), "STATUS is never logged");
    LogCommand::Request {
        stamp: log_now.as_micros(),
        session_id: request.id.session,
        request_id: request.id.request,
        attempt: request.attempt,
        room_for_waiting: request.room_for_waiting(),
        reply_to: request.reply_to,
        body: request.body,
    }
}

/// The stamp a command carries, if it carries one (TICK and REQUEST).
fn stamp_of(command: &LogCommand<'_>) -> Option<Instant> {
    match *command {
        LogCommand::Tick { stamp } | LogCommand::Request { stamp, .. } => {
            Some(Instant::from_micros(stamp))
        }
        _ => None,
    }
}

/// The lock-table request a REQUEST log command applies (the inverse of `log_command`),
/// with its stamp (µs); `None` for another command.
///
/// The log keeps of the copy's datagram length only whether it paid for a WAITING and a final
/// answer (spec §8.7, `room_for_waiting`): that is all the answers of a logged request depend
/// on (only a STATUS answer, never logged, depends on more), so it applies with the shortest
/// length that pays the same.
pub fn logged_request<'a>(command: &LogCommand<'a>) -> Option<(u64, Request<'a>)> {
    let LogCommand::Request {
        stamp,
        session_id,
        request_id,
        attempt,
        room_for_waiting,
        reply_to,
        body,
    } = *command
    else {
        return None;
    };
    let datagram_len = if room_for_waiting {
        2 * REPLY_LEN_MIN
    } else {
        REPLY_LEN_MIN
    };
    let request = Request {
        id: RequestId {
            session: session_id,
            request: request_id,
        },
        attempt,
        reply_to,
        body,
        datagram_len: datagram_len as u16,
    };
    assert_eq!(request.room_for_waiting(), room_for_waiting);
    Some((stamp, request))
}

/// What a shard snapshot holds (see the module docs).
struct DecodedSnapshot {
    table: Option<LockTable>,
    stamp: Instant,
    settings: Option<LoggedSettings>,
    membership: Option<Membership>,
}

/// Raft's check of a complete snapshot from a leader (spec §8.5, "Receiving a snapshot"): it
/// must decode as `config`'s replica would restore it, table included, before it replaces
/// anything or is persisted; a junk one would otherwise silence the replica and, once on
/// disk, keep its node from restarting (issue 8).
fn snapshot_check(config: &Config) -> raft::SnapshotCheck {
    let config = config.clone();
    Arc::new(move |data: &[u8]| decode_snapshot(&config, data).map(|_| ()))
}

/// The configuration a shard snapshot records (Raft's `SnapshotMembership`), read from its
/// header without restoring the table; `None` for one that records none. Raft asks only for
/// a snapshot that [`snapshot_check`] accepted.
fn snapshot_membership(data: &[u8]) -> Option<Membership> {
    let (at, version) = snapshot_header(data).ok()?;
    if version < 3 {
        return None;
    }
    read_membership(data, at, version).ok()?.0
}

/// The offset after the settings of a shard snapshot, and its version.
fn snapshot_header(data: &[u8]) -> Result<(usize, u8), String> {
    if data.len() < 4 + 1 + 8 || data[..4] != SHARD_SNAPSHOT_MAGIC {
        return Err("not a shard snapshot".into());
    }
    let version = data[4];
    if !(1..=SHARD_SNAPSHOT_VERSION).contains(&version) {
        return Err(format!("shard snapshot version {version} unknown"));
    }
    let at = match (version, data.get(13)) {
        (1, _) => 13,
        (_, Some(0)) => 14,
        (_, Some(1)) => 14 + 12,
        _ => return Err("bad settings marker".into()),
    };
    Ok((at, version))
}

/// The configuration marker at `at` and the CONFIG command after it (spec §8.7); the offset
/// after them. Version 3 recorded CONFIGs without replica ids: refused (module docs).
fn read_membership(
    data: &[u8],
    at: usize,
    version: u8,
) -> Result<(Option<Membership>, usize), String> {
    match data.get(at) {
        Some(0) => Ok((None, at + 1)),
        Some(1) if version < 4 => Err("a version 3 snapshot's configuration names no replica \
                                       ids (spec 8.5, \"Replica identities\")"
            .into()),
        Some(1) => {
            let counts = data
                .get(at + 2..at + 4)
                .ok_or("the snapshot's configuration is cut short")?;
            let members = counts[0] as usize + counts[1] as usize;
            let len = 3 + udplock_protocol::CONFIG_MEMBER_LEN * members;
            let command = data
                .get(at + 1..at + 1 + len)
                .ok_or("the snapshot's configuration is cut short")?;
            let membership =
                Membership::of_entry(command).ok_or("the snapshot's configuration is bad")?;
            Ok((Some(membership), at + 1 + len))
        }
        _ => Err("bad configuration marker".into()),
    }
}

/// The table, the last stamp, the logged settings and Raft's configuration a shard snapshot
/// holds (see the module docs). Reads versions 1 (without settings) and 2 (without a
/// configuration) too.
fn decode_snapshot(config: &Config, data: &[u8]) -> Result<DecodedSnapshot, String> {
    let (_, version) = snapshot_header(data)?;
    let stamp = Instant::from_micros(u64::from_be_bytes(data[5..13].try_into().expect("8 bytes")));
    let mut at = 13;
    let settings = if version == 1 {
        None
    } else {
        match data.get(at) {
            Some(0) => {
                at += 1;
                None
            }
            Some(1) if data.len() >= at + 1 + 12 => {
                let u32_at = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().expect("4"));
                let settings = LoggedSettings {
                    ttl_default_ms: u32_at(at + 1),
                    retry_after_ms: u32_at(at + 5),
                    startup_grace_ms: u32_at(at + 9),
                };
                settings
                    .over(&config.table)
                    .validate()
                    .map_err(|e| format!("the snapshot's settings: {e}"))?;
                at += 13;
                Some(settings)
            }
            _ => return Err("bad settings marker".into()),
        }
    };
    let membership = if version >= 3 {
        let (membership, after) = read_membership(data, at, version)?;
        at = after;
        membership
    } else {
        None
    };
    let table_config = match settings {
        Some(s) => s.over(&config.table),
        None => config.table.clone(),
    };
    let table = match data.get(at) {
        Some(0) if data.len() == at + 1 => None,
        Some(1) => {
            let table =
                LockTable::restore(table_config, &data[at + 1..]).map_err(|e| e.to_string())?;
            if table.clock() > stamp {
                // Later entries are stamped from `stamp` on: the table's clock would go back.
                return Err("the snapshot's stamp is behind its table's clock".into());
            }
            Some(table)
        }
        _ => return Err("bad table marker".into()),
    };
    Ok(DecodedSnapshot {
        table,
        stamp,
        settings,
        membership,
    })
}

/// Why a replica did not answer a HOLDS ([`Replica::read_holds`], spec §4.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldsRefusal {
    /// It does not lead the shard: NOT_LEADER, with the leader it knows of.
    NotLeader(NotLeader),
    /// It leads without a valid lease (after a transfer, or before its term's first entry
    /// committed): OVERLOADED with this retry-after hint.
    NoLease {
        /// The hint: the shard's `retry_after_ms`.
        retry_after_ms: u32,
    },
}
