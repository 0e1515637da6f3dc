//! A cluster node as one pure state machine over bytes (quinn-proto's `Connection` shape,
//! raft-rs's `Ready`): datagrams and timer expiries in; storage writes, datagrams and the next
//! deadline out. No socket, no clock, no disk, no thread, no global randomness: the IO shell
//! (`crate::cluster`) and the simulator (`crate::sim`) drive the same code.
//!
//! A node holds a replica ([`Replica`]) of every shard of the cluster (static membership), or
//! of some of them (a joined cluster, below), and everything between them and the wire:
//!
//! - **routing**: a client request goes to the replica of its resource's shard
//!   ([`shard_of`]); a PEER datagram's records go to their shards' replicas;
//! - **redirects**: a replica that cannot serve a request makes the node answer NOT_LEADER
//!   with the leader's address as hint (spec §7.1.7);
//! - **read-only answers** from the node's own view: SHARD_STATUS (spec §4.7, §8.9) and
//!   NODE_SETTINGS (spec §4.8) and MEMBERS (spec §4.9, [`members`]), each no longer than its
//!   request (spec §2.2);
//! - **authentication** of every node-to-node datagram in and out (spec §8.11, [`PeerAuth`]);
//! - **coalescing**: the Raft messages of every shard bound for one peer travel in as few PEER
//!   datagrams as fit (spec §8.2);
//! - **the settings exchange** (spec §8.10, [`settings`]);
//! - **leader spreading and graceful stop**: each shard's preferred leader, and handing every
//!   shard over before the node stops (Raft thesis §3.10); a stop announces no SWIM leave
//!   unless asked ([`Node::start_stopping`], [`Node::start_leaving`]), so that a restart
//!   moves no replica;
//! - **the address book** (spec §8.3 rule 3, [`book`]): the nodes this node sends to and
//!   accepts from — the listed ones, a joined node's seeds, every SWIM member — at the
//!   address SWIM holds or the member last proved; a node it does not know is heard only
//!   announcing itself, authenticated, with SWIM records alone;
//! - **joined clusters** (spec §8.1, [`Joined`]): a random cluster id and seeds instead of a
//!   node list; the node that bootstrapped the cluster is its static voter and starts with
//!   every shard, a joined node holds the replicas leaders add it to (for a shard it does not
//!   hold it answers lock requests NOT_LEADER, without a hint; SHARD_STATUS with the role
//!   "no replica", spec §5.6);
//! - **replicas on demand** (spec §8.1; joined clusters only): the replicas are a slot per
//!   shard, `None` where not held (every per-shard lookup O(1); the timer scan reads one
//!   deadline per shard, `Instant::MAX` for an empty slot; at most `shards` replicas, so
//!   memory is bounded by the configuration). An authenticated APPEND or INSTALL_SNAPSHOT
//!   of a shard not held creates a fresh replica ([`Start::Fresh`]: no state, no static
//!   voter) and its files ([`ShardWrite::create`], marked first, the mark off once its
//!   applied configuration names this node); no other record does. A replica is dropped,
//!   its files deleted ([`ShardWrite::remove`]), once it applied all its leader committed
//!   and neither its applied nor its latest configuration names this node (the leader keeps
//!   sending a removed node the log until it knows: `raft::Raft::leader_commit_heard`), or
//!   as an orphan ([`ORPHAN_ELECTION_TIMEOUTS`]); a shard just dropped is not created again
//!   for [`DROP_QUIET_ELECTION_TIMEOUTS`];
//! - **membership** (spec §8.12, issue 10): one SWIM member ([`Swim`], `core::swim`) runs
//!   among the listed nodes and the seeds. It starts by joining through every listed peer (SWIM's own join:
//!   a full-state exchange with each), so each node learns the others as SWIM does, by their
//!   answers, rather than taking the list as the truth; and since the list is static, a
//!   listed node held dead or gone is asked again every [`SWIM_RECONNECT_PERIODS`] periods
//!   (Serf's reconnect), so that two sides of a healed partition, each holding the other
//!   dead, find each other; so is one member it holds dead, in turn (a member held dead on
//!   stale news hears of it and refutes, though nobody pings it). Its messages travel as SWIM records of the PEER datagrams,
//!   coalesced with the Raft records and sealed like them; they depend on no write. SWIM
//!   only informs operators ([`Node::members`], [`Node::poll_member_event`], [`NodeStats`]):
//!   nothing in Raft or the lock tables reads it;
//! - **placement** (spec §8.13, [`placing`]): in a joined cluster, each shard's leader moves
//!   the shard onto its targets (from SWIM's member table) one single-server change at a
//!   time through Raft, and hands leadership to the shard's preferred node.
//!
//! # Driving it
//!
//! ```text
//!   handle_datagram(now, from, bytes) ─┐                ┌─> poll_persist()  -> ShardWrite   (store it)
//!   handle_timeout(now)               ─┼─> shards ──────┼─> poll_transmit() -> Transmit     (send it)
//!   start_stopping(), set_keys(..)    ─┘                └─> poll_timeout()  -> Instant      (sleep until)
//! ```
//!
//! After one or more inputs (a shell may hand over every datagram waiting on its socket
//! first, so that they share Appends and PEER datagrams), the shell drains `poll_persist`,
//! then `poll_transmit`. Every [`Transmit`] names the last [`ShardWrite`] it depends on
//! (`after`): the shell must not send it before every write up to that one is stored as its
//! durability mode promises (Raft's persistence rule: a vote or an acknowledged entry must
//! survive what the mode survives). A shell that cannot store a write must stop without
//! sending anything that depends on it (fail-stop): the core's memory is already ahead of the
//! disk.
//!
//! The shell tells the core what it stored, [`Node::stored`]`(now, seq)`: every write up to
//! `seq`. A leader counts its own log toward a majority only once it is stored (Raft thesis
//! §10.2.1, `raft::persist`), so a report may commit entries, and is followed, like any
//! input, by draining `poll_persist` and `poll_transmit`. A shell may store writes in the
//! background (the simulator does) and send each datagram once its `after` is stored.
//!
//! ## What a datagram waits for (`Transmit::after`)
//!
//! A write is a **leader append** when the replica that produced it leads its shard when it
//! is handed out and the write holds nothing but entries of that leader's term appended to
//! its log (no hard state, snapshot, cut, mark, creation, removal or lease horizon). Every
//! other write is a **state write**. The node keeps, per shard, the last write and the last
//! state write handed out (`shard_seqs`): shards are independent Raft groups, so what one
//! shard's message says rests on that shard's writes alone. Writes are stored in `seq`
//! order, so waiting for one write waits for every write before it.
//!
//! - A Raft record only a leader sends (Append, with entries or without, InstallSnapshot
//!   chunks, TimeoutNow) waits for its shard's last state write: what it says depends on the
//!   leader's term and vote (stored before it could win, and before any later term's, all
//!   state writes), on committed state (an InstallSnapshot, whose compaction is a state
//!   write), and on its entries, which need not be on the leader's disk before they go
//!   (thesis §10.2.1: an entry counts toward a majority only where it is durable, and the
//!   leader counts itself only once its write is reported).
//! - Any other Raft record (a follower's acknowledgement, a vote) waits for its shard's last
//!   write; a SWIM record waits for none (membership is not persisted). A PEER datagram
//!   waits for the latest of what its records wait for. Under
//!   [`Config::stores_in_background`] the records that wait for no write still unstored go
//!   in datagrams of their own, ahead of the others (`pack_peer_messages`).
//! - A client reply waits for its shard's last state write too: it follows a commit, which
//!   counts only durable copies, and an apply; nothing it says rests on the leader's own
//!   appends. The lease horizon write of a memory-mode single node (spec §7.2.4) covers the
//!   leases of every shard: it is handed out before the replies it covers are queued, and
//!   every reply waits for the last one (`horizon_seq`).
//! - Node-wide datagrams with no shard (settings, load reports) wait for every write handed
//!   out (`write_seq`).
//!
//! The first fencing token of a new shard's table is the wall clock (spec §8.8); the core has
//! none, so the shell tells it the wall clock with [`Node::set_wall_clock`].

pub mod address;
pub mod book;
pub mod client_auth;
pub mod config;
mod deadlines;
pub mod holds;
pub mod latency;
pub mod limits;
pub mod load;
pub mod members;
pub mod placing;
pub mod remove;
pub mod requests;
pub mod settings;
pub mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use udplock_protocol::{
    reached, shard_of, AddressTokenCheck, AuthTrailer, ClientKey, EncodeError, Hint, MessageType,
    NodeSettingsReply, NodeSettingsRequest, PeerDatagram, PeerHeader, PeerLoad, PeerRecord,
    PeerSettings, PeerWriter, Reply, Request, RequestBody, SettingValues, ShardRole,
    ShardStatusEntries, ShardStatusEntry, ShardStatusReply, ShardStatusRequest, Status,
    CLIENT_AUTH_TRAILER_LEN, DATAGRAM_LEN_MAX, PEER_DATAGRAM_LEN_MAX, REPLY_LEN_MIN,
    REQUEST_LEN_MIN,
};

use self::address::{AddressValidation, ADDRESS_SECRET_LEN};
use self::book::AddressBook;
use self::client_auth::{reply_budget, ClientAuth, ClientAuthDrop, Verified};
pub use self::config::{Config, Joined, JOIN_SEEDS_MAX, SHARDS_DEFAULT};
use self::deadlines::Deadlines;
use self::limits::{limit_name, NodeLimits, SessionSeen, Usage};
use self::load::LoadReports;
use self::requests::{encode_reply, error_reply, table_request};
use self::settings::{PeerSettingsLog, PeerSettingsView, SETTINGS_PERIOD};
pub use self::stats::NodeStats;
use crate::client_keys::Authorization;
use crate::core::lock_table;
use crate::core::peer_auth::{AuthDrop, KeySet, PeerAuth};
use crate::core::raft::{self, Message, NodeId, Role};
use crate::core::replica::in_flight::InFlight;
use crate::core::replica::{Replica, ShardStats};
use crate::core::restart::{self, Mark, Start};
use crate::core::swim::{self, Swim};
use crate::core::time::{Duration, Instant};

/// How often a node whose shards still ask the others before they take part (spec §8.5)
/// says so in its log, naming who answered what: often enough that an operator waiting for
/// a cluster to form sees why it does not, seldom enough not to flood.
pub const RECOVERY_LOG_PERIOD: Duration = Duration::from_millis(10_000);

/// How often a node that dropped node-to-node datagrams for failing the authentication
/// checks (spec §8.11) says so in its log, with a count per reason and source: often enough
/// that an operator sees an attack or a node with the wrong key within seconds, seldom
/// enough that a flood of forgeries costs one line per period, never one per datagram.
pub const AUTH_DROP_LOG_PERIOD: Duration = Duration::from_millis(10_000);

/// The shortest time between two PEER_SETTINGS a node sends one peer in answer to datagrams
/// of that peer's it dropped as made for an earlier life of this node (spec §8.11.5, check 4:
/// `StaleReceiver`). The answer tells the peer this node's incarnation, so that the next
/// datagram it sends passes: without it, two nodes that send each other nothing but
/// questions (a follower and a node rejoining without state, spec §8.5) would wait for the
/// periodic exchange, up to [`SETTINGS_PERIOD`]. Short beside any Raft timer, long enough that
/// replayed or delayed datagrams make a node answer at most a hundred times a second.
pub const STALE_ANSWER_INTERVAL: Duration = Duration::from_millis(10);

/// Datagrams waiting for [`Node::poll_transmit`] at most. Each input produces a bounded
/// number (one answer per client request; per touched shard, its messages and replies), and
/// the shell drains them after every batch of inputs, so this is never reached by a shell
/// that follows the contract; past it, the oldest wait and new client answers are dropped
/// (clients retransmit) rather than memory growing.
pub const TRANSMITS_QUEUED_MAX: usize = 65_536;

/// How far past the latest lease the lease horizon file is written (spec §7.2.4,
/// [`Config::keeps_lease_horizon`]), so that a steady stream of grants rewrites it about once
/// per this period instead of on every grant. The price: a restart waits up to this much
/// longer than the leases it protects.
pub const LEASE_HORIZON_AHEAD: Duration = Duration::from_millis(1_000);

/// Every this many SWIM protocol periods, the listed nodes SWIM holds dead or gone (or has
/// not heard of yet) get a full-state exchange, as at the join. SWIM alone never probes a
/// dead member again, so without it the two sides of a healed partition would each hold the
/// other dead for good; a listed node is expected back. Each exchange makes a node that
/// runs refute its death (SWIM §4.2). Often enough that a healed cluster knows itself again
/// within seconds, seldom enough that a dead node costs each other one datagram per
/// 5 periods.
pub const SWIM_RECONNECT_PERIODS: u32 = 5;

/// [`SWIM_RECONNECT_PERIODS`] protocol periods of `config`.
fn reconnect_interval(config: &Config) -> Duration {
    let us = config.swim_period.as_micros();
    Duration::from_micros(us.saturating_mul(u64::from(SWIM_RECONNECT_PERIODS)))
}

/// (reason, source) pairs of authentication drops remembered for one log line
/// ([`AUTH_DROP_LOG_PERIOD`]); beyond it, drops are counted under the unspecified address.
/// Forged datagrams from nodes the book does not know come from any source (spec §8.3
/// rule 3), so the map is bounded rather than one entry per source.
pub const AUTH_DROP_SOURCES_MAX: usize = 256;

/// Membership events waiting for [`Node::poll_member_event`]; the oldest is dropped beyond
/// it (a shell that logs them drains after every input; the simulator reads them too).
pub const MEMBER_EVENTS_MAX: usize = swim::EVENTS_MAX;

/// After a node drops a replica (removed from its shard), a leader's records for the shard
/// create none for this many election timeouts (`election_timeout_max`): the leader that
/// removed it sends it the log until it has acknowledged a round after learning of the
/// removal (`raft::Progress::departing`), and those Appends, or any the network delays or
/// duplicates, would otherwise create at once a replica no leader completes. A leader that
/// adds the node back within it is heard once it ends. Two: well past a round trip and a
/// heartbeat round, short beside how long placement takes to change a shard again.
pub const DROP_QUIET_ELECTION_TIMEOUTS: u64 = 2;

/// A joined node's replica whose applied configuration does not name its node (one created
/// on demand and not caught up yet, or one removed that has not applied all its leader
/// committed) and that has heard no APPEND or INSTALL_SNAPSHOT for this many election
/// timeouts (`election_timeout_max`) is dropped (an orphan): what created it was stale
/// (delayed, duplicated, or from a leader since deposed whose entry adding this node was
/// cut), or the leader that removed it stopped sending before it caught up. A learner being
/// caught up hears from its leader every heartbeat; four election timeouts is what a leader
/// change takes several times over, so a live one is never dropped.
pub const ORPHAN_ELECTION_TIMEOUTS: u64 = 4;

/// Buffers kept for reuse once their datagram left: enough for a busy batch, so the steady
/// state allocates nothing per datagram.
const SPARE_BUFFERS_MAX: usize = 256;

/// How often at most a joined node hands out the members to record in its data directory
/// ([`Node::poll_members_record`]): often enough that a restart finds members that were
/// there a second before, rarely enough that a cluster whose members come and go costs a
/// small file write a second.
pub const MEMBERS_RECORD_INTERVAL: Duration = Duration::from_millis(1_000);

/// What the shell must store for one shard replica, in this order: the recovery mark
/// `mark_first` (if any), the Raft state `raft` (if any), then the mark `mark_then` (if any).
/// A mark (see `core::restart`) goes down before the state it covers is written, and comes
/// off only after the recovered state is.
#[derive(Debug)]
pub struct ShardWrite {
    /// Numbers every write, from 1; a [`Transmit`] names the last one it depends on.
    pub seq: u64,
    pub shard: u32,
    /// A stronger recovery mark to set before anything else.
    pub mark_first: Option<Mark>,
    /// The replica's Raft state that changed (raft-rs's `Ready`): a delta, to apply as is.
    pub raft: Option<raft::Persist>,
    /// The mark the shard carries after the state is written (`Some(None)`: remove it).
    pub mark_then: Option<Option<Mark>>,
    /// The node's lease horizon file (a one-voter node without a store,
    /// [`Config::keeps_lease_horizon`]) must name this wall-clock time, in µs since the Unix
    /// epoch: no lease the node granted runs past it (spec §7.2.4).
    pub lease_horizon_us: Option<u64>,
    /// The shard's replica was created by this write's input (a leader's record, see
    /// [`Node`] "Replicas on demand"): the shell sets `mark_first` (always `Rejoin` then),
    /// THEN creates the shard's files empty, then stores the rest. Mark first: a crash in
    /// between leaves a mark, and the next start holds nothing of the shard.
    pub create: bool,
    /// The shard's replica was dropped (removed from the shard's configuration): the shell
    /// deletes every file of the shard, marks included, and closes it. Nothing else is set;
    /// no later write names the shard until a new replica of it is created.
    pub remove: bool,
}

impl ShardWrite {
    /// A write of `shard` that stores nothing yet (the fields to store are set over it; the
    /// node numbers it when it hands it out).
    pub(crate) fn of(shard: u32) -> ShardWrite {
        ShardWrite {
            seq: 0,
            shard,
            mark_first: None,
            raft: None,
            mark_then: None,
            lease_horizon_us: None,
            create: false,
            remove: false,
        }
    }
}

/// A datagram [`Node::poll_transmit`] wrote into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub len: usize,
    /// Send only once every [`ShardWrite`] with `seq <= after` is stored (0: none needed).
    pub after: u64,
    /// A node-to-node datagram (else an answer to a client).
    pub to_peer: bool,
}

/// The writes of one shard a datagram may have to wait for (module docs, "What a datagram
/// waits for").
#[derive(Clone, Copy, Default)]
struct ShardSeqs {
    /// The last write of the shard handed out.
    write: u64,
    /// The last state write of the shard handed out.
    state: u64,
}

/// One datagram waiting to leave.
struct Queued {
    to: SocketAddr,
    bytes: Vec<u8>,
    after: u64,
    to_peer: bool,
}

/// A cluster node's core: every shard replica and the rules between them and the wire.
pub struct Node {
    config: Config,
    cluster_id: u64,
    /// Seals every node-to-node datagram sent, and checks every one received before any
    /// shard or settings state sees it (spec §8.11).
    auth: PeerAuth,
    /// Datagrams dropped by the authentication checks since `auth_drops_since`, per reason
    /// and source, for the next log line ([`AUTH_DROP_LOG_PERIOD`]); at most
    /// [`AUTH_DROP_SOURCES_MAX`] entries.
    auth_drops: BTreeMap<(AuthDrop, SocketAddr), u64>,
    auth_drops_since: Instant,
    /// When this node last answered each peer's stale datagrams ([`STALE_ANSWER_INTERVAL`]).
    stale_answered: BTreeMap<NodeId, Instant>,
    /// The settings exchange (spec §8.10), and when this node next sends its own.
    settings: PeerSettingsLog,
    settings_next: Instant,
    /// Limits reached, told to the leaders of this node's shards and heard from the other
    /// nodes (spec §8.14).
    loads: LoadReports,
    /// Each shard's replica, indexed by shard (`config.shards` slots): `None` where this
    /// node holds none (see "Replicas on demand" in [`Node`]). Every per-shard lookup is
    /// O(1); at most `config.shards` replicas, so memory is bounded by configuration.
    shards: Vec<Option<Replica>>,
    /// Replicas held (the `Some`s of `shards`).
    held: usize,
    /// Per shard, what its replica keeps as last counted (zero where none is held), and
    /// their sum: what the node's limits bound (`limits`). Recounted whenever a shard is
    /// touched, so a leader admits against counts no older than the input before.
    usage: Vec<Usage>,
    usage_total: Usage,
    /// The recovery mark each shard's storage carries, as far as the writes handed out go.
    marks: Vec<Option<Mark>>,
    /// Each shard's `poll_timeout`, refreshed whenever the shard is touched
    /// ([`Instant::MAX`] where none is held, so the timer scan skips it for free), and the
    /// earliest of them, which [`Node::poll_timeout`] reads (the shell calls it on every
    /// turn of its loop): kept in O(log shards) per change ([`deadlines`]).
    deadlines: Deadlines,
    /// Per shard: the replica's applied configuration names this node (voter or learner).
    /// Once it has and then no longer does, the replica was removed: it is dropped.
    named: Vec<bool>,
    /// Per shard: the next write of the shard creates its files ([`ShardWrite::create`]).
    creating: Vec<bool>,
    /// Per shard: records create no replica of it before this time (a replica was dropped,
    /// [`DROP_QUIET_ELECTION_TIMEOUTS`]).
    quiet_until: Vec<Instant>,
    /// Per shard: the node whose TimeoutNow (a leadership transfer, thesis §3.10) this
    /// node's replica last received, and when. Placement hands the shard back to that node
    /// only `SPREAD_AFTER` later (`placing`): a node that stops hands its shards over while
    /// alive and caught up, and would decline to take one straight back.
    handed_by: Vec<Option<(NodeId, Instant)>>,
    /// Per shard: a joined node's replica not named (by its applied configuration) is
    /// dropped at this time, unless a leader's record comes first
    /// ([`ORPHAN_ELECTION_TIMEOUTS`]; [`Instant::MAX`] for one named, or a static cluster's).
    orphan_at: Vec<Instant>,
    /// Replicas created on demand so far: each draws its own seed from it, so a replica
    /// created again after a drop never repeats an earlier one's draws.
    creations: u64,
    /// The node's seed (each replica's is derived from it).
    rng_seed: u64,
    /// What every replica of the node shares (the per-node budget, issue 8).
    shared: raft::NodeShared,
    /// Each source's requests in flight over every shard this node leads (spec §9.1), shared
    /// by its replicas.
    in_flight: InFlight,
    /// Shards an input touched since the last flush (flag per shard, and their list).
    touched: Vec<bool>,
    /// Bumped whenever a replica may have changed ([`Node::shard_stats_version`]).
    shard_stats_version: u64,
    touched_list: Vec<u32>,
    /// When the node last said which shards still ask the others before taking part.
    recovery_logged: Instant,
    /// Handing its shards over before it stops, taking none over ([`Node::start_stopping`]).
    stopping: bool,
    /// Its SWIM member announced its leave ([`Node::start_leaving`]; implies `stopping`).
    leaving: bool,
    /// The time of the latest input: what the writes and datagrams it produced are
    /// collected at (INIT's wall clock, spec §8.8).
    now: Instant,
    /// The wall clock minus `now`, in µs, as the shell last said ([`Node::set_wall_clock`]).
    wall_clock_offset_us: i128,
    stats: Arc<NodeStats>,
    /// The arrival of each request a shard took and has not answered finally yet, for the
    /// latency histograms ([`NodeStats::latency`]).
    pending: latency::PendingRequests,
    /// Up to when (core time) the lease horizon writes handed out cover leases
    /// ([`Config::keeps_lease_horizon`]).
    horizon_covered: Instant,
    /// Writes handed out so far (the last one's `seq`), and those not yet handed out.
    write_seq: u64,
    writes: VecDeque<ShardWrite>,
    /// Per shard, the last write handed out and the last state write handed out (every write
    /// but a leader's own append: see "What a datagram waits for" in the module docs): what
    /// its Raft records and its replies wait for. Only ever grow.
    shard_seqs: Vec<ShardSeqs>,
    /// The last lease horizon write handed out ([`Config::keeps_lease_horizon`]): every
    /// reply waits for it, whatever its shard.
    horizon_seq: u64,
    /// The last write the shell reported stored ([`Node::stored`]).
    stored_seq: u64,
    /// Per write with a Raft delta handed out and not yet reported stored: (seq, shard, the
    /// stored log's last index and term once it is). At most the writes handed out since
    /// the last report.
    unreported: VecDeque<(u64, u32, u64, u64)>,
    /// Raft messages drained in one flush: (peer, shard, message).
    outgoing: Vec<(NodeId, u16, Message)>,
    /// Client answers drained in one flush, with their shard (empty between flushes: kept
    /// for its room).
    replies: Vec<(u32, crate::core::lock_table::Reply)>,
    /// The SWIM member among the listed nodes (spec §8.12), its messages not yet packed
    /// (peer, message), its events not yet polled, and when it next asks the listed nodes it
    /// holds dead again ([`SWIM_RECONNECT_PERIODS`]).
    swim: Swim,
    swim_outgoing: Vec<(NodeId, swim::Message)>,
    /// Room for the records of one PEER datagram, read once by `PeerDatagram::decode_visiting`
    /// (empty between datagrams: kept for its allocation, see [`relabel`]).
    peer_records: Vec<PeerRecord<'static>>,
    member_events: VecDeque<swim::Event>,
    swim_reconnect_at: Instant,
    /// The member held dead that [`Node::reconnect_swim`] asked last (it asks them in turn).
    swim_reconnect_last: NodeId,
    /// A node this node has not heard of sent it a datagram since the last reconnect turn:
    /// the next asks the alive member after `swim_refresh_last` for its whole table.
    swim_missing: bool,
    swim_refresh_last: NodeId,
    /// SWIM's table version the last members record was made from, and when
    /// ([`Node::poll_members_record`]).
    members_recorded: (Option<u64>, Instant),
    /// When the next placement pass runs ([`placing`]), and the shard membership buffer
    /// its passes reuse.
    placement_next: Instant,
    placing: crate::core::placement::ShardMembers,
    /// Who this node sends to and accepts from, at which address (spec §8.3 rule 3).
    book: AddressBook,
    /// MEMBERS' sorted view of the member table, per table version (spec §4.9).
    members_view: members::MembersView,
    transmits: VecDeque<Queued>,
    spare: Vec<Vec<u8>>,
    /// Where a flush encodes its datagrams before `queue` copies them out
    /// ([`PEER_DATAGRAM_LEN_MAX`] bytes, never zeroed again: each encoder writes every byte
    /// of what it returns).
    scratch: Vec<u8>,
    /// Address validation of client requests (spec §7.2.5).
    address: AddressValidation,
    /// Client keys, and the key each pending request's answers are sealed with (§7.2.6).
    client_auth: ClientAuth,
}

impl Node {
    /// A node whose shard replicas start as `starts` says (one per shard, from
    /// [`restart::decide`] over what the shell's storage holds), at core time `now`.
    /// `incarnation` is a number this node never used before (spec §8.11: the shell reads the
    /// wall clock); `rng_seed` seeds every replica's election timers. `Err` if the
    /// configuration is refused or a persisted snapshot does not decode.
    /// `starts` has one slot per shard: `None` where the node holds no replica (a joined
    /// cluster's node, spec §8.1; a static cluster's node holds every shard).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        starts: Vec<Option<Start>>,
        keys: KeySet,
        incarnation: u64,
        rng_seed: u64,
        stats: Arc<NodeStats>,
        now: Instant,
    ) -> Result<Node, String> {
        config.validate()?;
        assert_eq!(starts.len(), config.shards as usize, "one slot per shard");
        assert!(
            config.joined.is_some() || starts.iter().all(Option::is_some),
            "a static cluster's node holds every shard"
        );
        if !config.holds_replicas()
            && starts
                .iter()
                .any(|s| matches!(s, Some(Start::New | Start::Rejoin)))
        {
            // Both ask the static voters, of which this node knows none.
            return Err("only a static voter starts a replica new or rejoining".into());
        }
        let marks: Vec<Option<Mark>> = starts
            .iter()
            .map(|s| s.as_ref().and_then(Start::mark))
            .collect();
        // One budget per node for what peers can make its shards hold or log (issue 8).
        let shared = raft::NodeShared::new();
        // One count per node of each source's requests in flight (spec §9.1).
        let in_flight = InFlight::new(config.limits.in_flight_per_source_max);
        let mut shards = Vec::with_capacity(config.shards as usize);
        for (shard, start) in (0..config.shards).zip(starts) {
            let replica = match start {
                Some(start) => {
                    // Different per shard, so the replicas of one node do not time out
                    // together.
                    let seed = rng_seed ^ u64::from(shard).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let mut replica_config = config.shard_config(shard);
                    if config.joined.is_some() && matches!(start, Start::Restore { .. }) {
                        // A joined cluster's shard names its voters in its log from its
                        // first term on (spec §8.1, "The first configuration"): no
                        // restored replica counts static voters, not even the bootstrap
                        // node's (one it holds again, created when a leader added it back,
                        // would elect itself alone on a log that holds no CONFIG yet).
                        replica_config.raft.voters.clear();
                    }
                    Some(
                        start_replica(
                            &config,
                            &shared,
                            &in_flight,
                            replica_config,
                            seed,
                            start,
                            now,
                        )
                        .map_err(|e| format!("shard {shard}: {e}"))?,
                    )
                }
                None => None,
            };
            shards.push(replica);
        }
        let me = config.node_id;
        let named: Vec<bool> = shards
            .iter()
            .map(|r| r.as_ref().is_some_and(|r| names(r, me)))
            .collect();
        let held = shards.iter().filter(|r| r.is_some()).count();
        // Its own stream: the replicas' seeds are the node's xor a multiple of the shard.
        let swim_seed = rng_seed.rotate_left(32) ^ 0x5317_u64;
        // SWIM starts at the §8.11 incarnation, above every incarnation of its earlier lives,
        // so their deaths cannot override its Alive (swim::Config::start_incarnation).
        let swim_config = swim::Config {
            start_incarnation: incarnation,
            ..config.swim_config()?
        };
        let mut swim = Swim::new(swim_config, swim_seed, now).map_err(|e| e.to_string())?;
        let joined_seeds = config.joined.as_ref().map_or(&[][..], |j| &j.seeds);
        let seeds: Vec<SocketAddr> = config
            .peers
            .iter()
            .chain(joined_seeds)
            .filter(|&&(id, _)| id != config.node_id)
            .map(|&(_, addr)| addr)
            .collect();
        swim.join(now, &seeds);
        let auth = PeerAuth::new(
            config.node_id,
            incarnation,
            config.peers.iter().chain(joined_seeds).map(|&(id, _)| id),
            keys,
        );
        let mut node = Node {
            cluster_id: config.cluster_id(),
            auth,
            auth_drops: BTreeMap::new(),
            auth_drops_since: now,
            stale_answered: BTreeMap::new(),
            settings: PeerSettingsLog::new(&config, &shared),
            settings_next: now,
            loads: LoadReports::default(),
            deadlines: Deadlines::new(
                shards
                    .iter()
                    .map(|r| r.as_ref().map_or(Instant::MAX, Replica::poll_timeout)),
            ),
            // Every shard held, so the first flush hands out what starting produced (a
            // recovering replica's first TermQuery).
            touched: shards.iter().map(Option::is_some).collect(),
            shard_stats_version: 0,
            touched_list: (0..shards.len() as u32)
                .filter(|&s| shards[s as usize].is_some())
                .collect(),
            creating: vec![false; shards.len()],
            quiet_until: vec![Instant::ZERO; shards.len()],
            handed_by: vec![None; shards.len()],
            orphan_at: vec![Instant::MAX; shards.len()],
            named,
            usage: vec![Usage::default(); shards.len()],
            usage_total: Usage::default(),
            creations: 0,
            rng_seed,
            shared: shared.clone(),
            in_flight,
            held,
            shards,
            marks,
            recovery_logged: now,
            stopping: false,
            leaving: false,
            now,
            wall_clock_offset_us: 0,
            stats,
            pending: latency::PendingRequests::default(),
            horizon_covered: Instant::ZERO,
            write_seq: 0,
            writes: VecDeque::new(),
            shard_seqs: vec![ShardSeqs::default(); config.shards as usize],
            horizon_seq: 0,
            stored_seq: 0,
            unreported: VecDeque::new(),
            outgoing: Vec::new(),
            replies: Vec::new(),
            swim,
            swim_outgoing: Vec::new(),
            peer_records: Vec::new(),
            member_events: VecDeque::new(),
            swim_reconnect_at: now + reconnect_interval(&config),
            swim_reconnect_last: 0,
            swim_missing: false,
            swim_refresh_last: 0,
            members_recorded: (None, Instant::ZERO),
            placement_next: now + placing::PLACEMENT_PASS_INTERVAL,
            placing: Default::default(),
            book: AddressBook::default(),
            members_view: members::MembersView::default(),
            transmits: VecDeque::new(),
            spare: Vec::new(),
            scratch: vec![0; PEER_DATAGRAM_LEN_MAX],
            address: AddressValidation::new(config.address_validation, rng_seed),
            client_auth: ClientAuth::new(config.client_keys.clone()),
            config,
        };
        for shard in 0..node.config.shards {
            node.count_usage(shard);
        }
        node.refresh_book();
        node.drain_swim();
        node.check();
        Ok(node)
    }

    /// The invariants that hold between inputs.
    fn check(&self) {
        let shards = self.config.shards as usize;
        assert_eq!(self.shards.len(), shards);
        assert!(self.held <= shards);
        assert!(
            self.config.joined.is_some() || self.held == shards,
            "static: every shard"
        );
        assert_eq!(self.deadlines.len(), shards);
        // O(shards) in debug builds only (its O(1) part always), as this runs after every
        // datagram: the earliest deadline is kept.
        self.deadlines.check();
        assert_eq!(self.marks.len(), shards);
        assert!(!self.leaving || self.stopping, "a leave is a stop");
        assert_eq!(self.named.len(), shards);
        // O(shards): in debug builds only, as this runs after every datagram.
        debug_assert_eq!(
            self.shards.iter().filter(|r| r.is_some()).count(),
            self.held,
            "the held count agrees"
        );
        debug_assert!((0..shards).all(|s| !self.named[s] || self.orphan_at[s] == Instant::MAX));
        debug_assert!((0..shards).all(|s| self.shards[s].is_some()
            || (self.deadlines.get(s) == Instant::MAX
                && self.marks[s].is_none()
                && !self.named[s])));
        // O(shards): in debug builds only, as this runs after every datagram.
        debug_assert_eq!(
            self.touched.iter().filter(|&&t| t).count(),
            self.touched_list.len(),
            "touched flags and list agree"
        );
        assert!(self.touched_list.len() <= self.shards.len());
        // O(shards): the node's usage is the sum of its shards' (`count_usage`).
        debug_assert_eq!(
            self.usage.iter().map(|u| u.resources).sum::<u64>(),
            self.usage_total.resources
        );
        debug_assert_eq!(
            self.usage.iter().map(|u| u.log_bytes).sum::<u64>(),
            self.usage_total.log_bytes
        );
        assert!(self.transmits.len() <= TRANSMITS_QUEUED_MAX);
        assert!(self.member_events.len() <= MEMBER_EVENTS_MAX);
        assert!(self.book.joiners() <= book::JOINERS_MAX);
        // O(nodes): every node of the book has authentication state (sealing for it and
        // checking its datagrams need it).
        debug_assert!(self.book.nodes().all(|(id, _)| self.auth.knows(id)));
        // Per-node state is of nodes of the book (or joiners on their way in) alone: a node
        // SWIM forgot leaves nothing behind.
        debug_assert!(self
            .settings
            .views()
            .keys()
            .all(|&id| self.book.address_of(id).is_some()));
    }

    /// Its counters (the ones the shell reads too).
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The shard replicas, by shard number (`None`: not held).
    pub fn shards(&self) -> &[Option<Replica>] {
        &self.shards
    }

    /// This node's replica of `shard`, if it holds one.
    pub fn replica(&self, shard: u32) -> Option<&Replica> {
        self.shards.get(shard as usize).and_then(Option::as_ref)
    }

    /// The replicas this node holds, with their shard numbers.
    pub fn replicas(&self) -> impl Iterator<Item = (u32, &Replica)> + '_ {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(s, r)| Some((s as u32, r.as_ref()?)))
    }

    /// How many shards this node holds a replica of.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Changes when what [`Node::shard_stats`] returns may have: the same version, the same
    /// stats. A shell that publishes them periodically can skip the copy of every shard's
    /// while nothing moved. (A replica changes only in an input that touches its shard, or
    /// in the flush after it: both bump it.)
    pub fn shard_stats_version(&self) -> u64 {
        self.shard_stats_version
    }

    /// Every shard's role, term, leader, commit index and table counters, by shard; a shard
    /// this node holds no replica of has `role: None` and zeros.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .map(|r| r.as_ref().map_or_else(ShardStats::default, Replica::stats))
            .collect()
    }

    /// What this node last heard of each peer's settings (spec §8.10).
    pub fn peer_settings(&self) -> &BTreeMap<NodeId, PeerSettingsView> {
        self.settings.views()
    }

    /// Every node SWIM knows of, this one first: id, address, state, incarnation (spec
    /// §8.12). Informs operators only.
    pub fn members(&self) -> Vec<swim::MemberInfo> {
        self.swim.members()
    }

    /// A joined node's members to record in its data directory, if they are due: SWIM's
    /// table changed since the last record, [`MEMBERS_RECORD_INTERVAL`] passed, and some
    /// other member is alive or suspect (a node cut off from everyone keeps its last record).
    /// The members alive or suspect, by id, at most [`JOIN_SEEDS_MAX`]. A restart asks
    /// them as well as its seeds (the first node of a cluster has none), so that it finds
    /// the cluster when the seeds it was given are gone (the storage module of the shell
    /// says how the file is kept); the shell and the simulator call it after every input.
    pub fn poll_members_record(&mut self, now: Instant) -> Option<Vec<(NodeId, SocketAddr)>> {
        let version = self.swim.version();
        let (recorded, at) = self.members_recorded;
        if self.config.joined.is_none()
            || recorded == Some(version)
            || (recorded.is_some() && now < at + MEMBERS_RECORD_INTERVAL)
        {
            return None;
        }
        let me = self.config.node_id;
        let mut members: Vec<(NodeId, SocketAddr)> = self
            .swim
            .members()
            .iter()
            .filter(|m| m.id != me && matches!(m.state, swim::State::Alive | swim::State::Suspect))
            .map(|m| (m.id, m.addr))
            .collect();
        members.sort_unstable();
        members.truncate(JOIN_SEEDS_MAX);
        self.members_recorded = (Some(version), now);
        (!members.is_empty()).then_some(members)
    }

    /// The next membership event (a node joined, is suspected, alive again, dead, left; this
    /// node refuted a suspicion), for the shell's log. At most [`MEMBER_EVENTS_MAX`] wait.
    pub fn poll_member_event(&mut self) -> Option<swim::Event> {
        self.member_events.pop_front()
    }

    /// The SWIM member (for its counters and timers).
    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    /// The cluster keys in force (spec §8.11).
    pub fn keys(&self) -> &KeySet {
        self.auth.keys()
    }

    /// Applies a changed client key file (spec §7.2.6): later requests are checked and
    /// sealed with it. Only a node that started with one (`Config::client_keys`).
    pub fn set_client_keys(&mut self, keys: Arc<crate::client_keys::ClientKeyFile>) {
        assert!(
            self.client_auth.is_on(),
            "client keys on a node started without"
        );
        self.config.client_keys = Some(keys.clone());
        self.client_auth.set_keys(keys);
    }

    /// The secret of this node's address tokens when it has no cluster key (spec §7.2.5):
    /// the shell's, 32 bytes from the operating system. Until set, one drawn from the core's
    /// seed (the simulator's, reproducible).
    pub fn set_address_secret(&mut self, secret: &[u8; ADDRESS_SECRET_LEN]) {
        self.address.set_secret(secret);
    }

    /// New cluster keys (a changed key file), in force from the next datagram on.
    pub fn set_keys(&mut self, keys: KeySet) {
        self.auth.set_keys(keys);
        self.address.keys_changed();
    }

    /// The wall clock, in µs since the Unix epoch, read at core time `now`. A new leader of
    /// an empty log takes its first fencing token from it (spec §8.8); call it at start and
    /// from time to time (e.g. on every timer), so that it follows the wall clock.
    pub fn set_wall_clock(&mut self, now: Instant, wall_clock_us: u64) {
        self.wall_clock_offset_us = i128::from(wall_clock_us) - i128::from(now.as_micros());
    }

    /// The time now, just before the shell collects the outputs of its latest inputs
    /// ([`Node::poll_persist`], [`Node::poll_transmit`]): the latency a reply records
    /// ([`NodeStats::latency`]) runs to it, so it includes the work of the input that made
    /// the reply. Optional: without it, the time of that input.
    pub fn set_time(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Time passes (never backwards: the shells' clock is monotonic).
    fn advance(&mut self, now: Instant) {
        assert!(
            now >= self.now,
            "time went back: {now:?} after {:?}",
            self.now
        );
        self.now = now;
    }

    fn wall_clock(&self, now: Instant) -> u64 {
        let wall = i128::from(now.as_micros()) + self.wall_clock_offset_us;
        u64::try_from(wall.max(0)).unwrap_or(u64::MAX)
    }

    /// Stop gracefully: hand every shard this node leads to an up-to-date peer (Raft thesis
    /// §3.10), and take none over. The shell stops the node once it leads none (see
    /// [`Node::leading`]) or its patience ends. No SWIM leave is announced: the others hold
    /// the stopped node suspect, then dead (SWIM §4.2), and placement replaces its replicas
    /// only once it has been dead for dead-after (spec §8.13), so a restart within that
    /// moves nothing — what a rolling restart wants (as Consul's servers,
    /// `leave_on_terminate = false`). To retire the node at once, [`Node::start_leaving`].
    pub fn start_stopping(&mut self, now: Instant) {
        self.advance(now);
        if !self.stopping {
            self.stopping = true;
            for replica in self.shards.iter_mut().flatten() {
                replica.set_leaving();
            }
        }
        self.hand_over(now);
        assert!(self.stopping);
        self.check();
    }

    /// Leave for good: stop gracefully as [`Node::start_stopping`] does, and announce a
    /// SWIM leave (`Left` at this node's incarnation, [`Swim::leave`], spec §8.12
    /// "Stopping"), so that the others hold it *left* and placement replaces its replicas at
    /// once (spec §8.13): decommissioning. A restart under a higher incarnation makes it a
    /// member again.
    pub fn start_leaving(&mut self, now: Instant) {
        self.start_stopping(now);
        if !self.leaving {
            self.leaving = true;
            self.swim.leave(now);
            self.drain_swim();
        }
        assert!(self.stopping && self.leaving);
        self.check();
    }

    /// Whether [`Node::start_stopping`] (or [`Node::start_leaving`]) was called: the node
    /// hands its shards over and takes none.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Whether [`Node::start_leaving`] was called (its SWIM member says `Left` then).
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Hands `shard`'s leadership to node `to` (Raft thesis §3.10), if this node leads it:
    /// what graceful leave and leader spreading do, for an operator or a test to ask.
    pub fn transfer_leadership(&mut self, now: Instant, shard: u32, to: NodeId) {
        self.advance(now);
        if let Some(Some(replica)) = self.shards.get_mut(shard as usize) {
            let _ = replica.transfer_leadership(now, to);
            self.touch(shard);
        }
        self.check();
    }

    /// Asks this node's replica of `shard`, if it leads, for one single-server change of the
    /// shard's Raft configuration (thesis §4; `raft::Raft::propose_membership` says when it
    /// is refused): what placement, an operator or a test decides. Raft messages reach
    /// learners like any listed peer. Returns the CONFIG entry's index.
    pub fn change_membership(
        &mut self,
        now: Instant,
        shard: u32,
        change: raft::MembershipChange,
    ) -> Result<u64, raft::MembershipError> {
        self.advance(now);
        let result = match self.shards.get_mut(shard as usize) {
            Some(Some(replica)) => {
                let result = replica.change_membership(now, change);
                self.touch(shard);
                result
            }
            _ => Err(raft::MembershipError::NotLeader(raft::NotLeader {
                leader_hint: None,
            })),
        };
        self.check();
        result
    }

    /// How many shards this node leads.
    pub fn leading(&self) -> usize {
        self.replicas()
            .filter(|(_, s)| s.raft().role() == Role::Leader)
            .count()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        let mut own = self.settings_next;
        if self.runs_swim() {
            own = own
                .min(self.swim.poll_timeout())
                .min(self.swim_reconnect_at);
        }
        if self.runs_placement() {
            own = own.min(self.placement_next);
        }
        self.deadlines.min().min(own)
    }

    /// Sets shard `s`'s deadline to `at`, keeping the earliest of all.
    fn set_deadline(&mut self, s: usize, at: Instant) {
        self.deadlines.set(s, at);
    }

    /// Whether SWIM has anyone to probe: a one-voter node (the single node) has nobody, so
    /// its member never runs a period and never wakes the node.
    fn runs_swim(&self) -> bool {
        self.config.peers.len() > 1 || self.config.joined.is_some()
    }

    /// Timers: every shard whose deadline passed, the settings exchange, the log lines due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        // Instant::MAX where no replica is held: never due (nor any when the earliest is not:
        // the scan is skipped).
        if self.deadlines.min() <= now {
            for shard in 0..self.shards.len() {
                if self.deadlines.get(shard) <= now {
                    let replica = self.shards[shard].as_mut().expect("a deadline: held");
                    replica.handle_timeout(now);
                    self.touch(shard as u32);
                }
            }
        }
        if self.stopping {
            self.hand_over(now);
        }
        if self.runs_swim() {
            if self.swim.poll_timeout() <= now {
                self.swim.handle_timeout(now);
                self.refresh_book();
            }
            self.reconnect_swim(now);
            self.drain_swim();
        }
        self.place(now);
        self.send_settings(now);
        self.report_load(now);
        self.log_recovery(now);
        self.log_auth_drops(now);
        self.check();
    }

    /// One datagram from `from`, of either kind (client request or node-to-node).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.advance(now);
        let msg_type = datagram
            .get(udplock_protocol::header::field::MSG_TYPE)
            .copied();
        if msg_type == Some(MessageType::Peer.to_wire()) {
            self.handle_peer(now, datagram, from);
        } else if msg_type == Some(MessageType::PeerSettings.to_wire()) {
            self.handle_peer_settings(now, datagram, from);
        } else if msg_type == Some(MessageType::PeerLoad.to_wire()) {
            self.handle_peer_load(now, datagram, from);
        } else if datagram.len() > DATAGRAM_LEN_MAX {
            NodeStats::bump(&self.stats.dropped);
        } else if msg_type == Some(MessageType::ShardStatus.to_wire()) {
            // Read-only, answered by any node from its own view; the lock-request decoder
            // does not read it (spec §4.7, §8.9).
            self.answer_shard_status(datagram, from);
        } else if msg_type == Some(MessageType::NodeSettings.to_wire()) {
            self.answer_node_settings(datagram, from);
        } else if msg_type == Some(MessageType::Members.to_wire()) {
            // Read-only, from this node's SWIM table (spec §4.9).
            self.answer_members(datagram, from);
        } else if msg_type == Some(MessageType::Holds.to_wire()) {
            // Read-only, answered by the shard's leader from its applied table (spec §4.13).
            self.answer_holds(now, datagram, from);
        } else if msg_type == Some(MessageType::Remove.to_wire()) {
            // An operator's removal: authenticated, or dropped unanswered (spec §4.10).
            self.answer_remove(now, datagram, from);
        } else {
            self.handle_request(now, datagram, from);
        }
        if self.stopping {
            // An acknowledgement may have made a peer caught up enough to take a shard.
            self.hand_over(now);
        }
        self.report_load(now);
        self.check();
    }

    /// The next write to store (see [`ShardWrite`] for the order within one). Drain before
    /// [`Node::poll_transmit`].
    pub fn poll_persist(&mut self) -> Option<ShardWrite> {
        self.flush();
        self.writes.pop_front()
    }

    /// The shell stored every write handed out up to `seq` (as its durability mode
    /// promises). Each replica learns what its stored log now holds (`Raft::persisted`): a
    /// leader may commit, apply and answer, so drain `poll_persist` and `poll_transmit` after
    /// it as after any input. Reports never go back; one for a write not handed out is a
    /// shell's bug.
    pub fn stored(&mut self, now: Instant, seq: u64) {
        self.advance(now);
        let handed_out = self.write_seq - self.writes.len() as u64;
        assert!(
            seq <= handed_out,
            "write {seq} reported stored, {handed_out} handed out"
        );
        assert!(
            seq >= self.stored_seq,
            "stored {seq} after {}",
            self.stored_seq
        );
        self.stored_seq = seq;
        while let Some(&(write, shard, index, term)) = self.unreported.front() {
            if write > seq {
                break;
            }
            self.unreported.pop_front();
            // A dropped replica's reports were forgotten with it (`drop_replica`).
            let replica = self.shards[shard as usize]
                .as_mut()
                .expect("reports of a held replica");
            replica.persisted(now, index, term);
            self.touch(shard);
        }
        if self.stopping {
            // A commit may have made a peer caught up enough to take a shard.
            self.hand_over(now);
        }
        self.check();
    }

    /// The next datagram to send, written into `buf` (at least [`PEER_DATAGRAM_LEN_MAX`]
    /// bytes); `None` when nothing waits.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        self.flush();
        let queued = self.transmits.pop_front()?;
        let len = queued.bytes.len();
        buf[..len].copy_from_slice(&queued.bytes);
        let transmit = Transmit {
            to: queued.to,
            len,
            after: queued.after,
            to_peer: queued.to_peer,
        };
        self.recycle(queued.bytes);
        Some(transmit)
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS_MAX {
            bytes.clear();
            self.spare.push(bytes);
        }
    }

    fn queue(&mut self, to: SocketAddr, bytes: Vec<u8>, after: u64, to_peer: bool) {
        if self.transmits.len() >= TRANSMITS_QUEUED_MAX {
            // A shell that does not drain: keep what waits (it may carry votes and
            // acknowledgements in order) and drop the new datagram; its sender retransmits.
            NodeStats::bump(&self.stats.dropped);
            return self.recycle(bytes);
        }
        self.transmits.push_back(Queued {
            to,
            bytes,
            after,
            to_peer,
        });
    }

    /// Queues a client answer of `len` bytes in `out` (it depends on no write).
    fn answer(&mut self, out: &[u8], to: SocketAddr) {
        let mut bytes = self.buffer();
        bytes.extend_from_slice(out);
        self.queue(to, bytes, 0, false);
    }

    fn touch(&mut self, shard: u32) {
        self.count_usage(shard);
        self.shard_stats_version += 1;
        if !self.touched[shard as usize] {
            self.touched[shard as usize] = true;
            self.touched_list.push(shard);
        }
    }

    /// Spec §9.1: past half its log-bytes limit, the node compacts the longest log it can
    /// now, whatever that shard's cadence. Each shard compacts on its own cadence and at half
    /// its own limit, but 64 shards' logs below those can add up past the node's: without
    /// this its leaders would refuse every request, and no log would ever reach its own
    /// trigger. Some shard holds at least the average, so one compaction frees at least
    /// that much (less its uncommitted tail). `flush` calls it once past half.
    #[cold]
    #[inline(never)]
    fn relieve_log_pressure(&mut self) {
        let mut longest: Vec<u32> = (0..self.config.shards)
            .filter(|&s| self.usage[s as usize].log_bytes > 0)
            .collect();
        longest.sort_unstable_by_key(|&s| std::cmp::Reverse(self.usage[s as usize].log_bytes));
        for shard in longest {
            let Some(replica) = self.shards[shard as usize].as_mut() else {
                continue;
            };
            if replica.compact_now() {
                self.touch(shard);
                return;
            }
        }
    }

    /// Compacts `shard`'s log now, whatever its cadence (`Replica::compact_now`): the shell
    /// asks it for a shard whose live entries hold its write-ahead log's oldest segment back
    /// (`store::Wal::holding_back`); the snapshot's write moves them into the current one.
    /// Returns whether the log shrank (false: no replica held, or nothing applied since the
    /// last snapshot, or a snapshot being sent).
    pub fn compact(&mut self, shard: u32) -> bool {
        let Some(replica) = self.shards.get_mut(shard as usize).and_then(Option::as_mut) else {
            return false;
        };
        let compacted = replica.compact_now();
        if compacted {
            self.touch(shard);
        }
        compacted
    }

    /// Recounts what `shard`'s replica keeps (nothing if none is held) into the node's total.
    fn count_usage(&mut self, shard: u32) {
        let s = shard as usize;
        let now = self.shards[s].as_ref().map_or(Usage::default(), Usage::of);
        let before = std::mem::replace(&mut self.usage[s], now);
        self.usage_total.replace(&before, &now);
    }

    /// Spec §8.1 "Replicas on demand": a fresh replica of `shard`, which this node does not
    /// hold, for a leader's APPEND or INSTALL_SNAPSHOT (authenticated, spec §8.11) to go to.
    /// It starts as a new server does (thesis §4.2.1; [`Start::Fresh`]): term 0, an empty
    /// log, and no static voter, so it counts nobody and never campaigns until its log (or
    /// a snapshot) gives it a configuration. Its first write marks its storage and creates
    /// the shard's files ([`ShardWrite::create`]).
    fn create_replica(&mut self, now: Instant, shard: u32) {
        let s = shard as usize;
        assert!(self.shards[s].is_none() && self.config.joined.is_some());
        assert!(self.marks[s].is_none() && !self.named[s]);
        self.creations += 1;
        // Its own stream, different per shard and per creation.
        let seed = self.rng_seed
            ^ u64::from(shard).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ self.creations.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut replica_config = self.config.shard_config(shard);
        // Not the static voters: they would make the bootstrap node, re-added after a
        // removal, a voter of an empty log that elects itself alone.
        replica_config.raft.voters.clear();
        let mut replica = start_replica(
            &self.config,
            &self.shared,
            &self.in_flight,
            replica_config,
            seed,
            Start::Fresh,
            now,
        )
        .expect("a fresh replica has no snapshot to decode");
        if self.stopping {
            // As every replica it held when it began to stop: it takes nothing over.
            replica.set_leaving();
        }
        log::info!(
            "udplock node {}: shard {shard}: a leader adds this node; replica created",
            self.config.node_id
        );
        self.orphan_at[s] = now + self.election_timeouts(ORPHAN_ELECTION_TIMEOUTS);
        self.set_deadline(s, replica.poll_timeout().min(self.orphan_at[s]));
        self.shards[s] = Some(replica);
        self.held += 1;
        self.creating[s] = self.config.stores_state;
        self.touch(shard);
    }

    /// Drops this node's replica of `shard`, which its applied configuration no longer names
    /// (see "Replicas on demand"): the shell deletes the shard's files. Called by `flush`
    /// once the replica's last write and messages are collected.
    fn drop_replica(&mut self, shard: u32, orphan: bool) {
        let s = shard as usize;
        let mut replica = self.shards[s].take().expect("a replica to drop");
        self.count_usage(shard);
        // (Without a store nothing is ever taken.)
        assert!(
            !self.config.stores_state || replica.take_persist().is_none(),
            "a dropped replica has no pending write"
        );
        assert!(replica.raft().role() != Role::Leader);
        self.held -= 1;
        self.set_deadline(s, Instant::MAX);
        self.marks[s] = None;
        self.named[s] = false;
        self.creating[s] = false;
        self.orphan_at[s] = Instant::MAX;
        self.quiet_until[s] = self.now + self.election_timeouts(DROP_QUIET_ELECTION_TIMEOUTS);
        let why = if orphan {
            "created, but no leader completed it"
        } else {
            "removed from its configuration"
        };
        log::info!(
            "udplock node {}: shard {shard}: {why}; replica dropped",
            self.config.node_id
        );
        // Its files go: what it stored is no longer its to report.
        self.unreported.retain(|&(_, s, _, _)| s != shard);
        if self.config.stores_state {
            self.push_write(ShardWrite {
                remove: true,
                ..ShardWrite::of(shard)
            });
        }
    }

    /// Hands `write` out next ([`Node::poll_persist`]), numbered after the last one; notes
    /// whether it is a state write (module docs, "What a datagram waits for") and what its
    /// Raft delta leaves stored, to report with [`Node::stored`].
    fn push_write(&mut self, write: ShardWrite) {
        self.write_seq += 1;
        let state = !self.leader_append(&write);
        let seqs = &mut self.shard_seqs[write.shard as usize];
        seqs.write = self.write_seq;
        if state {
            seqs.state = self.write_seq;
        }
        if write.lease_horizon_us.is_some() {
            self.horizon_seq = self.write_seq;
        }
        if let Some(p) = &write.raft {
            self.unreported
                .push_back((self.write_seq, write.shard, p.last_index, p.last_term));
        }
        self.writes.push_back(ShardWrite {
            seq: self.write_seq,
            ..write
        });
    }

    /// Whether `write` is a leader append: its shard's replica leads, and it holds nothing but
    /// entries of the leader's term added to the end of its log.
    fn leader_append(&self, write: &ShardWrite) -> bool {
        let Some(p) = &write.raft else {
            return false;
        };
        let Some(replica) = self.shards[write.shard as usize].as_ref() else {
            return false;
        };
        let raft = replica.raft();
        let only_entries = write.mark_first.is_none()
            && write.mark_then.is_none()
            && write.lease_horizon_us.is_none()
            && !write.create
            && !write.remove
            && p.hard.is_none()
            && p.snapshot.is_none();
        only_entries
            && raft.role() == Role::Leader
            && !p.entries.is_empty()
            && p.entries.iter().all(|e| e.term == raft.term())
            && p.log_from == p.entries.first().map(|e| e.index)
    }

    /// `n` times the longest election timeout.
    fn election_timeouts(&self, n: u64) -> Duration {
        let us = self.config.raft.election_timeout_max.as_micros();
        Duration::from_micros(us.saturating_mul(n))
    }

    /// The recovery mark `shard`'s storage must carry: what its recovery says
    /// ([`restart::mark`]). A created replica carries `Rejoin` only around its creation write
    /// (`ShardWrite::create`): once its files exist it is a replica like any other, whose
    /// acknowledged entries a restart keeps (a learner promoted since counts on them).
    fn wanted_mark(&self, shard: usize) -> Option<Mark> {
        let replica = self.shards[shard].as_ref().expect("held");
        let raft = replica.raft();
        let mark = restart::mark(raft);
        // The bootstrap node's replica of a joined cluster's shard is new until the shard's
        // first configuration is in its log (spec §8.1): a restart before then starts it new
        // again, after it restores it with no static voters.
        let first_unwritten = self.config.joined.is_some()
            && !replica.config().raft.voters.is_empty()
            && raft.membership().replicas.is_none();
        if first_unwritten && mark.is_none() {
            return Some(Mark::New);
        }
        mark
    }

    /// A client request for a lock (ACQUIRE, RELEASE, RENEW, STATUS, CONFIGURE, KEEPALIVE).
    fn handle_request(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        let Some((request, token, auth)) =
            self.admit(datagram, from, Request::decode_authenticated)
        else {
            return;
        };
        let kind = request.body.kind();
        // Spec §7.2.6, first check: the MAC of an authenticated request, before address
        // validation (so that a client whose key this node does not know hears
        // UNAUTHENTICATED, not a RETRY it could not verify). Stateless.
        let key_id = match self.client_auth.verify(datagram, auth.map(|a| a.key_id)) {
            Verified::Pass(key_id) => key_id,
            Verified::UnknownKey => {
                self.refuse_client(
                    &request,
                    datagram.len(),
                    None,
                    ClientAuthDrop::UnknownKey,
                    from,
                );
                return;
            }
            Verified::BadMac => {
                NodeStats::bump(&self.stats.client_auth[ClientAuthDrop::BadMac.index()]);
                return;
            }
        };
        // Spec §7.2.1 step 2a, §7.2.5: no state for a source that has not shown it receives
        // at its address. Before anything that reads state, NOT_LEADER included.
        // The wall clock in seconds since 1970, modulo 2^32 (the token's `issued`, §7.2.5).
        let now_s = (self.wall_clock(now) / 1_000_000) as u32;
        let keys = self.auth.keys();
        let check =
            self.address
                .admits(keys, kind, from, request.session_id, token.as_ref(), now_s);
        if check != AddressTokenCheck::Valid {
            let token = self.address.token(keys, from, request.session_id, now_s);
            let reply = Reply {
                hint: Hint::AddressToken(token),
                ..Reply::bare(
                    kind.reply_type(),
                    request.session_id,
                    request.request_id,
                    request.attempt,
                    Status::Retry,
                )
            };
            NodeStats::bump(&self.stats.address_retries);
            if check != AddressTokenCheck::Forged {
                NodeStats::bump(&self.stats.address_tokens_expired);
            }
            // admit() dropped every request shorter than REQUEST_LEN_MIN (spec §2.2), and
            // the decoder every authenticated one shorter than AUTH_REQUEST_LEN_MIN.
            self.answer_client(&reply, key_id, datagram.len(), from);
            return;
        }
        // Spec §7.2.6, second check (after address validation, before the session gate):
        // the key, or the file's `none` line, authorizes the request. Nothing is created.
        match self.client_auth.authorize(key_id, &request.body) {
            Authorization::Allowed => {}
            Authorization::Unauthenticated => {
                let why = ClientAuthDrop::Unauthenticated;
                self.refuse_client(&request, datagram.len(), None, why, from);
                return;
            }
            Authorization::Forbidden => {
                let why = ClientAuthDrop::Forbidden;
                self.refuse_client(&request, datagram.len(), key_id, why, from);
                return;
            }
        }
        // A copy of a request this node is still to answer, sealed otherwise than the
        // earlier copies: someone else's, after the request's answer (spec §7.2.6).
        let id = lock_table::RequestId {
            session: request.session_id,
            request: request.request_id,
        };
        if self.client_auth.conflicts(id, key_id) {
            let why = match key_id {
                Some(_) => ClientAuthDrop::Forbidden,
                None => ClientAuthDrop::Unauthenticated,
            };
            self.refuse_client(&request, datagram.len(), key_id, why, from);
            return;
        }
        let shard = match request.body {
            // A KEEPALIVE names its shard and the shard count it was computed with (spec
            // §4.11): another count, or a shard that does not exist, is the client's error,
            // answered (never remembered: no table saw it) like a field out of range. Tokens
            // name holds only within one shard, so a KEEPALIVE of a client that counts
            // shards differently must not reach any table — unless this node has one shard:
            // one table issued every token, whatever count the client computed with.
            RequestBody::Keepalive { shard, shards, .. }
                if u32::from(shard) >= u32::from(shards)
                    || (self.config.shards != 1 && u32::from(shards) != self.config.shards) =>
            {
                let reply = Reply::bare(
                    kind.reply_type(),
                    request.session_id,
                    request.request_id,
                    request.attempt,
                    Status::InvalidArgument,
                );
                self.answer_client(&reply, key_id, datagram.len(), from);
                return;
            }
            RequestBody::Keepalive { .. } if self.config.shards == 1 => 0,
            RequestBody::Keepalive { shard, .. } => u32::from(shard),
            _ => shard_of(request.body.resource(), self.config.shards),
        };
        // Spec §7.2.6, third check: a KEEPALIVE names only holds of ids its key authorizes,
        // and no token the shard has not issued; checked by the leader at admission (a
        // token's holder never changes, so no replica checks again when it applies).
        if let RequestBody::Keepalive { tokens, .. } = request.body {
            let verdict = self.shards[shard as usize]
                .as_ref()
                .filter(|r| self.client_auth.is_on() && r.raft().role() == Role::Leader)
                .map(|replica| {
                    let raft = replica.raft();
                    let settled = replica.applied_index() >= raft.commit_index()
                        && raft
                            .entry(raft.commit_index())
                            .is_some_and(|e| e.term == raft.term());
                    let verdict = self.client_auth.authorize_tokens(
                        key_id,
                        tokens.iter(),
                        replica.table(),
                        settled,
                    );
                    (verdict, replica.config().table.retry_after_ms)
                });
            match verdict {
                None | Some((Some(Authorization::Allowed), _)) => {}
                Some((Some(Authorization::Unauthenticated), _)) => {
                    let why = ClientAuthDrop::Unauthenticated;
                    self.refuse_client(&request, datagram.len(), None, why, from);
                    return;
                }
                Some((Some(Authorization::Forbidden), _)) => {
                    let why = ClientAuthDrop::Forbidden;
                    self.refuse_client(&request, datagram.len(), key_id, why, from);
                    return;
                }
                Some((None, retry_after_ms)) => {
                    // A token above what this new leader applied: it may have been issued by
                    // a command it has not applied yet; come back shortly.
                    self.answer_overloaded(&request, retry_after_ms, key_id, datagram.len(), from);
                    return;
                }
            }
        }
        let outcome = match self.shards[shard as usize].as_mut() {
            // A joined cluster's node that holds no replica of the shard (spec §8.1): it
            // cannot name the leader (no Raft record of the shard reaches it; SWIM carries
            // no shard map; placement targets are not leaders), so no hint: the client
            // moves on along its ring (spec §7.1.7 rule 5, §7.1.8 rule 2).
            None => Err(None),
            Some(replica) => {
                let budget = reply_budget(kind, datagram.len(), key_id.is_some());
                let table_request = table_request(&request, from, budget);
                let refused = kind.is_logged() && replica.raft().role() == Role::Leader && {
                    let session = SessionSeen::of(replica.table(), request.session_id);
                    // An ACQUIRE or CONFIGURE of a resource its shard knows creates none.
                    let known = matches!(
                        request.body,
                        RequestBody::Acquire { .. } | RequestBody::Configure { .. }
                    ) && replica
                        .table()
                        .is_some_and(|t| t.knows(request.body.resource()));
                    let raised = NodeLimits::raises(&request.body, session, known);
                    let own = self.config.limits.reached(&self.usage_total);
                    // Spec §8.14 rule 4: the other replicas' nodes' reports too.
                    let membership = replica.raft().membership();
                    let me = self.config.node_id;
                    let others = membership
                        .voters
                        .iter()
                        .chain(&membership.learners)
                        .copied()
                        .filter(|&id| id != me);
                    let reported = self.loads.reached_by(now, others);
                    limit_name((own | reported) & raised).is_some()
                };
                // The shard's answers to this request are sealed with this copy's key.
                let id = lock_table::RequestId {
                    session: request.session_id,
                    request: request.request_id,
                };
                // An earlier copy's record (the request waits in a queue) outlives a refused
                // copy: its answer is still to be sealed.
                let earlier = self.client_auth.recorded(id);
                self.client_auth.record(id, key_id);
                if !refused {
                    let taken = replica
                        .handle_request(now, table_request)
                        .map(|()| shard)
                        .map_err(|not_leader| not_leader.leader_hint);
                    if taken.is_err() {
                        // Not taken: this node will not answer it (NOT_LEADER below).
                        self.client_auth.forget(id);
                    }
                    taken
                } else if replica.answer_remembered(&table_request) {
                    // Spec §9.1 rule 6: a copy of a request that took effect gets its
                    // remembered answer at any limit (nothing is logged for it).
                    Ok(shard)
                } else {
                    if !earlier {
                        self.client_auth.forget(id);
                    }
                    NodeStats::bump(&self.stats.overloaded_node_limits);
                    let retry_after_ms = replica.config().table.retry_after_ms;
                    self.answer_overloaded(&request, retry_after_ms, key_id, datagram.len(), from);
                    return;
                }
            }
        };
        match outcome {
            Ok(shard) => {
                let id = lock_table::RequestId {
                    session: request.session_id,
                    request: request.request_id,
                };
                if !self.pending.arrived(id, request.attempt, now) {
                    NodeStats::bump(&self.stats.latency_untracked);
                }
                self.touch(shard)
            }
            Err(leader_hint) => {
                // Not remembered: the client resends the same request to the leader.
                let hint = leader_hint
                    .and_then(|id| self.book.address_of(id))
                    .map_or(Hint::None, Hint::Leader);
                let reply = Reply {
                    hint,
                    ..Reply::bare(
                        kind.reply_type(),
                        request.session_id,
                        request.request_id,
                        request.attempt,
                        Status::NotLeader,
                    )
                };
                self.answer_client(&reply, key_id, datagram.len(), from);
            }
        }
    }

    /// Answers `request` OVERLOADED with a retry-after (spec §9.1): nothing changed.
    fn answer_overloaded(
        &mut self,
        request: &Request<'_>,
        retry_after_ms: u32,
        key_id: Option<u32>,
        request_len: usize,
        to: SocketAddr,
    ) {
        let reply = Reply {
            hint: Hint::RetryAfter { ms: retry_after_ms },
            ..Reply::bare(
                request.body.kind().reply_type(),
                request.session_id,
                request.request_id,
                request.attempt,
                Status::Overloaded,
            )
        };
        self.answer_client(&reply, key_id, request_len, to);
    }

    /// Sends `reply`, an answer the node makes at once to a lock request of `request_len`
    /// bytes, sealed with the copy's key (spec §7.2.6). Never longer than the request (spec
    /// §2.2 rules 5 and 7: an authenticated request is at least 100 bytes, a sealed bare
    /// reply 100).
    fn answer_client(
        &mut self,
        reply: &Reply<'_>,
        key_id: Option<u32>,
        request_len: usize,
        to: SocketAddr,
    ) {
        let key = key_id.and_then(|id| self.client_auth.key(id));
        // verify() passed only keys the file lists.
        assert_eq!(
            key.is_some(),
            key_id.is_some(),
            "sealing with a verified key"
        );
        let mut out = [0u8; REPLY_LEN_MIN + CLIENT_AUTH_TRAILER_LEN];
        match reply.encode_sealed(&mut out, key) {
            Ok(len) => {
                assert!(
                    len <= request_len,
                    "{:?} larger than its request",
                    reply.status
                );
                self.answer(&out[..len], to);
            }
            Err(e) => log::error!("udplock node: reply did not encode: {e}"),
        }
    }

    /// Refuses a lock request by client authentication (spec §7.2.6): UNAUTHENTICATED,
    /// unsealed (`key_id` None), or FORBIDDEN, sealed with the copy's key; counted by `why`.
    /// Not remembered; no state saw the request.
    fn refuse_client(
        &mut self,
        request: &Request<'_>,
        request_len: usize,
        key_id: Option<u32>,
        why: ClientAuthDrop,
        to: SocketAddr,
    ) {
        NodeStats::bump(&self.stats.client_auth[why.index()]);
        let status = match why {
            ClientAuthDrop::Forbidden => Status::Forbidden,
            _ => Status::Unauthenticated,
        };
        let reply = Reply::bare(
            request.body.kind().reply_type(),
            request.session_id,
            request.request_id,
            request.attempt,
            status,
        );
        self.answer_client(&reply, key_id, request_len, to);
    }

    /// A client datagram, decoded by `decode`: `None` if it is not to be served — it did not
    /// decode (answered by an ERROR_REPLY when the spec says so, §3.2), or it is shorter than
    /// the smallest reply and so is never answered (§2.2).
    fn admit<'d, T>(
        &mut self,
        datagram: &'d [u8],
        from: SocketAddr,
        decode: impl FnOnce(&'d [u8]) -> Result<T, udplock_protocol::DecodeError>,
    ) -> Option<T> {
        let decoded = match decode(datagram) {
            Ok(d) => d,
            Err(e) => {
                self.answer_undecodable(datagram, e, from);
                return None;
            }
        };
        if datagram.len() < REQUEST_LEN_MIN {
            NodeStats::bump(&self.stats.dropped);
            return None;
        }
        NodeStats::bump(&self.stats.requests);
        Some(decoded)
    }

    /// Spec §3.2: an ERROR_REPLY if the codec names a status for the fault and the reply
    /// fits in the request; otherwise a silent drop.
    fn answer_undecodable(
        &mut self,
        datagram: &[u8],
        error: udplock_protocol::DecodeError,
        from: SocketAddr,
    ) {
        let mut out = [0u8; REPLY_LEN_MIN];
        match error_reply(datagram, error, &mut out) {
            Some(len) => {
                assert!(len <= datagram.len(), "ERROR_REPLY larger than its request");
                NodeStats::bump(&self.stats.error_replies);
                self.answer(&out[..len], from);
            }
            None => NodeStats::bump(&self.stats.dropped),
        }
    }

    /// SHARD_STATUS (spec §4.7, §8.9): this node's own view of its shards from `first_shard`
    /// on, as many as fit in a reply no longer than the request (§2.2). Touches no shard,
    /// logs and remembers nothing; a follower answers as readily as a leader.
    fn answer_shard_status(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(request) = self.admit(datagram, from, ShardStatusRequest::decode) else {
            return;
        };
        let fit = ShardStatusReply::entries_that_fit(datagram.len());
        let entries: Vec<ShardStatusEntry> = self
            .shards
            .iter()
            .enumerate()
            .skip(usize::from(request.first_shard))
            .take(fit)
            .map(|(shard, replica)| {
                let Some(replica) = replica else {
                    // A shard this node holds no replica of (a joined cluster's node, spec
                    // §5.6, §8.1): "no replica", every other field zero.
                    return ShardStatusEntry {
                        shard: shard as u16,
                        role: ShardRole::NoReplica,
                        leader_id: 0,
                        term: 0,
                        commit_index: 0,
                        applied_index: 0,
                        held: 0,
                        waiters: 0,
                    };
                };
                let stats = replica.stats();
                ShardStatusEntry {
                    // Config::validate keeps shards below SHARDS_MAX (4096).
                    shard: shard as u16,
                    // Spec §5.6: a follower whose latest configuration names it a learner
                    // says "learner"; a (pre-)candidate or leader says what it does, which
                    // a replica whose committed configuration names it a voter may still
                    // do (spec §8.5).
                    role: match stats.role {
                        Some(Role::Leader) => ShardRole::Leader,
                        Some(Role::Candidate) => ShardRole::Candidate,
                        Some(Role::PreCandidate) => ShardRole::PreCandidate,
                        Some(Role::Follower) | None if stats.learner => ShardRole::Learner,
                        Some(Role::Follower) | None => ShardRole::Follower,
                    },
                    leader_id: stats.leader.unwrap_or(0),
                    term: stats.term,
                    commit_index: stats.commit_index,
                    applied_index: stats.applied_index,
                    held: u32::try_from(stats.table.held).unwrap_or(u32::MAX),
                    waiters: u32::try_from(stats.table.waiters).unwrap_or(u32::MAX),
                }
            })
            .collect();
        self.send_shard_status(datagram, from, &request, &entries);
    }

    /// The SHARD_STATUS_REPLY to `request` (in `datagram`, from `from`) with `entries`.
    fn send_shard_status(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        request: &ShardStatusRequest,
        entries: &[ShardStatusEntry],
    ) {
        let reply = ShardStatusReply {
            session_id: request.session_id,
            request_id: request.request_id,
            attempt: request.attempt,
            status: Status::Ok,
            node_id: self.config.node_id,
            // Config::validate keeps shards within SHARDS_MAX (4096).
            shards_total: self.config.shards as u16,
            first_shard: request.first_shard,
            entries: ShardStatusEntries::from_slice(entries),
        };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        match reply.encode(&mut out) {
            Ok(len) => {
                assert!(
                    len <= datagram.len(),
                    "shard status reply larger than request"
                );
                self.answer(&out[..len], from);
            }
            Err(e) => log::error!("udplock node: shard status reply did not encode: {e}"),
        }
    }

    /// NODE_SETTINGS (spec §4.8, §5.7): this node's cluster id and settings, as many as fit
    /// in a reply no longer than the request (§2.2). Changes nothing.
    fn answer_node_settings(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(request) = self.admit(datagram, from, NodeSettingsRequest::decode) else {
            return;
        };
        let own = self.settings.own();
        let fit = NodeSettingsReply::entries_that_fit(datagram.len()).min(own.len());
        let reply = NodeSettingsReply {
            session_id: request.session_id,
            request_id: request.request_id,
            attempt: request.attempt,
            status: Status::Ok,
            node_id: self.config.node_id,
            cluster_id: self.cluster_id,
            values: SettingValues::from_slice(&own[..fit]),
        };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        match reply.encode(&mut out) {
            Ok(len) => {
                assert!(
                    len <= datagram.len(),
                    "node settings reply larger than request"
                );
                self.answer(&out[..len], from);
            }
            Err(e) => log::error!("udplock node: node settings reply did not encode: {e}"),
        }
    }

    /// Whether `from` is another node this node knows and `source` its address in the
    /// address book ([`book`]): a node that is not in the book cannot speak for one that is.
    fn listed_peer(&self, from: NodeId, source: SocketAddr) -> bool {
        from != self.config.node_id && self.book.knows(from, source)
    }

    /// A PEER datagram (spec §8.2): checked, authenticated, then each record to its shard.
    /// Its records are read once, into the node's reused room for them.
    fn handle_peer(&mut self, now: Instant, datagram: &[u8], source: SocketAddr) {
        let mut records = relabel(std::mem::take(&mut self.peer_records));
        self.handle_peer_records(now, datagram, source, &mut records);
        self.peer_records = relabel(records);
    }

    /// [`Node::handle_peer`] with `records`, empty, to collect the datagram's records in.
    fn handle_peer_records<'d>(
        &mut self,
        now: Instant,
        datagram: &'d [u8],
        source: SocketAddr,
        records: &mut Vec<PeerRecord<'d>>,
    ) {
        debug_assert!(records.is_empty());
        // All checked before any is acted on: a datagram with a bad record is dropped whole.
        let Ok(peer) = PeerDatagram::decode_visiting(datagram, |r| records.push(r)) else {
            NodeStats::bump(&self.stats.dropped);
            return;
        };
        assert_eq!(records.len(), peer.record_count());
        let PeerHeader { cluster_id, from } = peer.header;
        if cluster_id != self.cluster_id || from == self.config.node_id {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        // Spec §8.3 rule 3: a node the book does not know (or not at this address) is heard
        // only announcing itself, authenticated, with SWIM records alone.
        let known = self.listed_peer(from, source);
        if !known && !self.admit_stranger(from, source, datagram, &peer) {
            return;
        }
        // Spec §8.11: nothing of a datagram that fails the checks reaches a shard.
        if !self.authenticated(from, datagram, peer.auth.as_ref(), source) {
            return;
        }
        if !known {
            let swim_addr = self
                .swim
                .members()
                .iter()
                .find(|m| m.id == from)
                .map(|m| m.addr);
            if self.book.prove(from, source, swim_addr) {
                log::info!(
                    "udplock node {}: node {from} announced itself at {source} (spec §8.3)",
                    self.config.node_id
                );
            }
        }
        NodeStats::bump(&self.stats.peer_received);
        let mut swim = false;
        for record in records.drain(..) {
            let (shard, record) = match record {
                PeerRecord::Raft { shard, msg } => (shard, msg),
                // Spec §8.12: to the membership, as from the (listed, authenticated) sender.
                PeerRecord::Swim(msg) => {
                    NodeStats::bump(&self.stats.swim_received);
                    self.swim
                        .handle_message(now, from, source, msg.into_owned());
                    swim = true;
                    continue;
                }
            };
            if usize::from(shard) >= self.shards.len() {
                continue;
            }
            let msg: Message = record.into_owned();
            let s = usize::from(shard);
            // Only what a leader sends creates a replica (see "Replicas on demand").
            let from_leader = matches!(
                msg,
                Message::Append { .. } | Message::InstallSnapshot { .. }
            );
            if self.shards[s].is_none() {
                if !from_leader || self.config.joined.is_none() || now < self.quiet_until[s] {
                    continue;
                }
                self.create_replica(now, u32::from(shard));
            }
            if from_leader && !self.named[s] && self.config.joined.is_some() {
                self.orphan_at[s] = now + self.election_timeouts(ORPHAN_ELECTION_TIMEOUTS);
            }
            if matches!(msg, Message::TimeoutNow { .. }) {
                self.handed_by[s] = Some((from, now));
            }
            let replica = self.shards[usize::from(shard)]
                .as_mut()
                .expect("held or just created");
            replica.handle_message(now, from, msg);
            self.touch(u32::from(shard));
        }
        if swim {
            self.refresh_book();
            self.drain_swim();
        }
    }

    /// Counts a node-to-node datagram of `from` dropped by spec §8.3 rule 3: as from an
    /// unknown node if the book knows no node `from` (a member not heard of yet: gossip
    /// reaches members one after the other), else as dropped (a known node's id from another
    /// address: not ours).
    fn count_unknown(&mut self, from: NodeId) {
        match self.book.address_of(from) {
            None => {
                NodeStats::bump(&self.stats.peer_unknown);
                // This node's table may lack a member (see `reconnect_swim`).
                self.swim_missing = true;
            }
            Some(_) => NodeStats::bump(&self.stats.dropped),
        }
    }

    /// Spec §8.3 rule 3, for a PEER datagram of `from` that the address book does not know
    /// at `source`: it passes only if it carries SWIM records alone, one of them `from`'s own
    /// update at `source`, and rules 1–2 of §8.11 (which need no state of the sender). Then,
    /// and only then, the sender gets authentication state (bounded, [`book::JOINERS_MAX`])
    /// for rules 3–5. Nothing else is kept of a sender that fails.
    fn admit_stranger(
        &mut self,
        from: NodeId,
        source: SocketAddr,
        datagram: &[u8],
        peer: &PeerDatagram<'_>,
    ) -> bool {
        if !book::stranger_announces_itself(peer, from, source) {
            self.count_unknown(from);
            return false;
        }
        if let Err(reason) = self.auth.check_stranger(datagram, peer.auth.as_ref()) {
            NodeStats::bump(&self.stats.auth_dropped[reason.index()]);
            self.count_auth_drop(reason, source);
            return false;
        }
        if !self.auth.knows(from) {
            if let Some(evicted) = self.book.admit_joiner(from) {
                self.auth.remove_peer(evicted);
                self.stale_answered.remove(&evicted);
            }
            self.auth.add_peer(from);
        }
        true
    }

    /// Rebuilds the address book from the static list, the seeds and SWIM's table if the
    /// table moved since the last rebuild (`AddressBook::refresh`), and keeps the per-node
    /// state in step: every node in it has an authentication entry, a
    /// node that left it (forgotten by SWIM) loses its own, its settings view (spec §8.10)
    /// and the rest, so that what this node keeps is bounded by its book.
    fn refresh_book(&mut self) {
        let swim = &self.swim;
        let Some(gone) = self
            .book
            .refresh(&self.config, swim.version(), || swim.members())
        else {
            return;
        };
        for gone in gone {
            self.auth.remove_peer(gone);
            self.stale_answered.remove(&gone);
            self.settings.forget(gone);
            self.loads.forget(gone);
        }
        for (id, _) in self.book.nodes() {
            self.auth.add_peer(id);
        }
    }

    /// Takes what the SWIM member produced: its messages, to be packed with the next flush
    /// (SWIM names receivers by address: the address book says which node that is, and a
    /// message to an address it does not know is dropped, spec §8.3 rule 3), and its events,
    /// which also refresh the member counts in [`NodeStats`].
    fn drain_swim(&mut self) {
        while let Some(t) = self.swim.poll_transmit() {
            match self.book.node_at(t.to) {
                Some(id) if id != self.config.node_id => self.swim_outgoing.push((id, t.msg)),
                _ => NodeStats::bump(&self.stats.swim_unroutable),
            }
        }
        let mut changed = false;
        while let Some(event) = self.swim.poll_event() {
            changed = true;
            if self.member_events.len() >= MEMBER_EVENTS_MAX {
                self.member_events.pop_front();
            }
            self.member_events.push_back(event);
        }
        if changed {
            self.stats.set_members(&self.swim.members());
        }
    }

    /// [`SWIM_RECONNECT_PERIODS`]: a full-state exchange with every listed node SWIM holds
    /// dead or gone, or has not heard of, with one member it holds dead, and, if a node it
    /// has not heard of spoke to it, with one member it holds alive.
    fn reconnect_swim(&mut self, now: Instant) {
        if now < self.swim_reconnect_at {
            return;
        }
        self.swim_reconnect_at = now + reconnect_interval(&self.config);
        // A joined node's seeds too: the cluster's first node, restarted after the others
        // held it dead, knows nobody until someone asks it again.
        let seeds = self.config.joined.as_ref().map_or(&[][..], |j| &j.seeds);
        let mut absent: Vec<SocketAddr> = self
            .config
            .peers
            .iter()
            .chain(seeds)
            .filter(|&&(id, _)| {
                id != self.config.node_id
                    && !matches!(
                        self.swim.member(id),
                        Some((swim::State::Alive | swim::State::Suspect, _))
                    )
            })
            .filter_map(|&(id, _)| self.book.address_of(id))
            .collect();
        // And one member SWIM holds dead, in turn (Serf's reconnect asks any failed member):
        // stale news of a death may reach this node after the member talked to it last, and
        // nobody pings a member held dead, nor do acks carry news it did not ask for (spec
        // §8.3 rule 5), so without this it would hear of it only at its next full-state
        // exchange — and not at all from a node with no listed peers, like the first node
        // of a joined cluster.
        let dead: Vec<(NodeId, SocketAddr)> = self
            .swim
            .members()
            .iter()
            .filter(|m| m.state == swim::State::Dead && m.id != self.config.node_id)
            .map(|m| (m.id, m.addr))
            .collect();
        let next = dead
            .iter()
            .find(|&&(id, _)| id > self.swim_reconnect_last)
            .or(dead.first());
        if let Some(&(id, addr)) = next {
            self.swim_reconnect_last = id;
            if !absent.contains(&addr) {
                absent.push(addr);
            }
        }
        // A node it has not heard of spoke to it (`count_unknown`): its table may lack
        // members whose news ran out before it came (a node that restarted and joined a seed
        // that knew few), and it drops their pings (spec §8.3 rule 3). Ask one member it
        // holds alive, in turn, for its whole table: never the unknown sender (its source is
        // unproven; an answer there would reflect), and once per turn whatever a forger sends.
        if std::mem::take(&mut self.swim_missing) {
            let alive: Vec<(NodeId, SocketAddr)> = self
                .swim
                .members()
                .iter()
                .filter(|m| m.state == swim::State::Alive && m.id != self.config.node_id)
                .map(|m| (m.id, m.addr))
                .collect();
            let next = alive
                .iter()
                .find(|&&(id, _)| id > self.swim_refresh_last)
                .or(alive.first());
            if let Some(&(id, addr)) = next {
                self.swim_refresh_last = id;
                if !absent.contains(&addr) {
                    absent.push(addr);
                }
            }
        }
        if !absent.is_empty() && !self.leaving {
            self.swim.join(now, &absent);
        }
    }

    /// Spec §8.10: a peer's settings, heard only from a node of the address book at its
    /// address there; never answered, and nothing but this node's report of them changes.
    fn handle_peer_settings(&mut self, now: Instant, datagram: &[u8], source: SocketAddr) {
        let Ok(p) = PeerSettings::decode(datagram) else {
            NodeStats::bump(&self.stats.dropped);
            return;
        };
        let from = p.header.from;
        if !self.listed_peer(from, source) {
            self.count_unknown(from);
            return;
        }
        if !self.authenticated(from, datagram, p.auth.as_ref(), source) {
            return;
        }
        self.settings.heard(now, from, source, &p);
    }

    /// Spec §8.14: a peer's limits reached, heard only from a node of the address book at its
    /// address there, of this cluster; never answered.
    fn handle_peer_load(&mut self, now: Instant, datagram: &[u8], source: SocketAddr) {
        let taken = self.take_peer_load(now, datagram, source);
        let counter = match taken {
            true => &self.stats.load_received,
            false => &self.stats.load_dropped,
        };
        NodeStats::bump(counter);
    }

    /// [`Node::handle_peer_load`]'s checks: true if the report was taken (a dropped one is
    /// counted here by its reason).
    fn take_peer_load(&mut self, now: Instant, datagram: &[u8], source: SocketAddr) -> bool {
        let Ok(p) = PeerLoad::decode(datagram) else {
            NodeStats::bump(&self.stats.dropped);
            return false;
        };
        let from = p.header.from;
        if !self.listed_peer(from, source) {
            self.count_unknown(from);
            return false;
        }
        if !self.authenticated(from, datagram, p.auth.as_ref(), source) {
            return false;
        }
        if p.header.cluster_id != self.cluster_id {
            NodeStats::bump(&self.stats.dropped);
            return false;
        }
        // Bits this revision does not know are ignored (spec §8.14).
        self.loads.heard(now, from, p.reached & reached::ALL);
        true
    }

    /// The limits each other node reports reached in a report still live at `now` (spec
    /// §8.14 rule 3), by node id; nodes whose report is zero or expired are missing. What a
    /// leader adds to its own counts when it admits a request (for metrics and tests).
    pub fn peer_loads(&self, now: Instant) -> Vec<(NodeId, u16)> {
        self.loads.live(now).collect()
    }

    /// Spec §8.14 rule 2: this node's limits reached, to the other nodes that lead a shard it
    /// holds, when the value changes, to a new leader, and every period while not zero.
    fn report_load(&mut self, now: Instant) {
        // What the replicas hold as applied: entries not applied yet are counted by the
        // leaders that admitted them (their own check, rule 3), and a replica catching up on
        // a long log (after a restart) would otherwise report every limit reached.
        let applied = Usage {
            unapplied: 0,
            ..self.usage_total
        };
        let value = self.config.limits.reached(&applied);
        if self.stats.load_reached.load(Ordering::Relaxed) != u64::from(value) {
            self.stats
                .load_reached
                .store(u64::from(value), Ordering::Relaxed);
        }
        if !self.loads.wants_look(now, value) {
            return;
        }
        let me = self.config.node_id;
        let leaders: std::collections::BTreeSet<NodeId> = self
            .replicas()
            .filter(|(_, r)| r.raft().role() != Role::Leader)
            .filter_map(|(_, r)| r.raft().leader())
            .filter(|&id| id != me)
            .collect();
        for id in self.loads.due(now, value, &leaders) {
            let Some(addr) = self.book.address_of(id) else {
                continue;
            };
            let datagram = PeerLoad {
                header: PeerHeader {
                    cluster_id: self.cluster_id,
                    from: me,
                },
                auth: None,
                reached: value,
            };
            let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
            match datagram.encode(&mut out) {
                Ok(len) => {
                    NodeStats::bump(&self.stats.load_sent);
                    self.queue_peer(id, addr, &mut out, len, self.write_seq);
                }
                Err(e) => log::error!("udplock node: load report did not encode: {e}"),
            }
        }
    }

    /// Spec §8.11, rules 1–5, for a node-to-node datagram from the listed node `from` at its
    /// listed address `source`: true to go on; false if dropped (counted by reason, and
    /// remembered for the next log line).
    fn authenticated(
        &mut self,
        from: NodeId,
        datagram: &[u8],
        auth: Option<&AuthTrailer>,
        source: SocketAddr,
    ) -> bool {
        let before = self.auth.peer_incarnation(from);
        let Err(reason) = self.auth.check(from, datagram, auth) else {
            if before != 0 && self.auth.peer_incarnation(from) > before {
                self.peer_restarted(from);
            }
            return true;
        };
        NodeStats::bump(&self.stats.auth_dropped[reason.index()]);
        self.count_auth_drop(reason, source);
        if reason == AuthDrop::StaleReceiver {
            self.answer_stale(from, source);
        }
        false
    }

    /// Node `from` restarted: an authenticated datagram of its carried a higher incarnation
    /// than the last one (spec §8.11; only ever once per restart, a replay never passes). It
    /// may know nobody now — the cluster's first node restarts with no seeds — and it drops
    /// what this node made for its earlier life (check 4, `StaleReceiver`), answering with
    /// its incarnation (`answer_stale`): which is how this node learned it. Exchange the
    /// whole table with it at once (SWIM's join, spec §8.12), rather than wait for this
    /// node's next probe of it, which would introduce this node only a round later: until
    /// then it drops every Raft record of this node (§8.3 rule 3), and a shard whose
    /// voters are it and this node elects no one.
    fn peer_restarted(&mut self, from: NodeId) {
        if !self.runs_swim() || self.leaving {
            return;
        }
        if let Some(addr) = self.book.address_of(from) {
            self.swim.join(self.now, &[addr]);
            self.drain_swim();
        }
    }

    /// Remembers a drop for the next log line, per reason and source: at most
    /// [`AUTH_DROP_SOURCES_MAX`] pairs (strangers' sources are anyone's), the rest counted
    /// under the unspecified address.
    fn count_auth_drop(&mut self, reason: AuthDrop, source: SocketAddr) {
        let key = if self.auth_drops.len() < AUTH_DROP_SOURCES_MAX
            || self.auth_drops.contains_key(&(reason, source))
        {
            (reason, source)
        } else {
            (reason, SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        *self.auth_drops.entry(key).or_default() += 1;
    }

    /// Spec §8.11.5: the peer `from` sent a datagram that passed checks 1 to 3 (so it comes
    /// from a node with the key, and this node now knows its life) but was made for an
    /// earlier life of this node. Tell it this node's life at once, with a PEER_SETTINGS
    /// (at most one per [`STALE_ANSWER_INTERVAL`]), rather than at the next periodic one.
    fn answer_stale(&mut self, from: NodeId, source: SocketAddr) {
        let now = self.now;
        if self
            .stale_answered
            .get(&from)
            .is_some_and(|&at| now < at + STALE_ANSWER_INTERVAL)
        {
            return;
        }
        self.stale_answered.insert(from, now);
        self.send_settings_to(from, source);
    }

    /// Graceful stop (Raft thesis §3.10): each shard this node leads goes to the first voter
    /// of the shard's configuration (the latest in its log, thesis §4.1: in a joined cluster
    /// each shard has its own voters; in a static one they are the listed peers) that is
    /// caught up, in id order after this node (wrapping): every leaving node spreads its
    /// shards the same deterministic way. Called on every input while stopping; Raft ignores
    /// a second transfer while one runs. A shard with no other caught-up voter stays.
    fn hand_over(&mut self, now: Instant) {
        let me = self.config.node_id;
        for shard in 0..self.shards.len() {
            let Some(replica) = self.shards[shard].as_mut() else {
                continue;
            };
            let raft = replica.raft();
            if raft.role() != Role::Leader || raft.transferring_to().is_some() {
                continue;
            }
            // The ids above this node first, ascending, then those below: no allocation.
            let target = raft
                .membership()
                .voters
                .iter()
                .copied()
                .filter(|&id| id != me && raft.follower_caught_up(id, now))
                .min_by_key(|&id| (id < me, id));
            if let Some(target) = target {
                assert!(raft.membership().is_voter(target));
                let _ = replica.transfer_leadership(now, target);
                self.touch(shard as u32);
            }
        }
    }

    /// Collects what the touched shards produced: the writes first (INIT proposed where a new
    /// leader wants it, the recovery marks around the Raft delta), then their Raft messages
    /// (packed per peer) and client answers, each naming the last write.
    ///
    /// Inlined into `poll_persist` and `poll_transmit`, which the shell calls until they hand
    /// out nothing, so that most calls cost these two checks alone: the work, when there is
    /// some, is in functions of its own (their frames are not paid for otherwise).
    #[inline]
    fn flush(&mut self) {
        // Past half the node's log-bytes limit (the check here, the work out of line).
        if self.usage_total.log_bytes >= self.config.limits.log_bytes_max / 2 {
            self.relieve_log_pressure();
        }
        if self.touched_list.is_empty() && self.swim_outgoing.is_empty() {
            return;
        }
        self.flush_touched();
    }

    /// The work of [`Node::flush`] when there is some. Apart, because the shell drains
    /// `poll_persist` and `poll_transmit` until they hand out nothing, so most calls find
    /// nothing touched: they do not pay for this frame (its datagram buffers) that way.
    #[inline(never)]
    fn flush_touched(&mut self) {
        let touched = std::mem::take(&mut self.touched_list);
        if !touched.is_empty() {
            // INIT, the first configuration or a drop below may change a shard's stats.
            self.shard_stats_version += 1;
        }
        let mut replies = std::mem::take(&mut self.replies);
        debug_assert!(replies.is_empty());
        let orphan_after = self.election_timeouts(ORPHAN_ELECTION_TIMEOUTS);
        for &shard in &touched {
            let s = shard as usize;
            self.touched[s] = false;
            let (now, wall) = (self.now, self.wall_clock(self.now));
            let Some(replica) = self.shards[s].as_mut() else {
                continue;
            };
            // Whether the replica may have changed since `touch` counted it last.
            let mut changed = false;
            if replica.wants_wall_clock() {
                // A new leader of an empty log: INIT's first token is the wall clock now
                // (spec §8.8).
                replica.propose_init(now, wall);
                changed = true;
            }
            if self.config.joined.is_some() {
                // The bootstrap node's first term: the shard's configuration goes into its
                // log (spec §8.1, "The first configuration").
                replica.propose_first_membership(now);
                changed = true;
            }
            if changed {
                self.count_usage(shard);
            } else {
                // A shard is touched after each change of its replica, and `touch` counted it
                // then: counting it again here would find the same.
                debug_assert_eq!(self.usage[s], Usage::of(replica), "shard {shard}");
            }
            let replica = self.shards[s].as_mut().expect("held");
            let named = names(replica, self.config.node_id);
            // Removed: it was named, and the configuration it applied no longer names it,
            // nor does the latest in its log, and it applied all its leader said was
            // committed (a replica catching up replays every earlier removal of its node
            // before the entry that added it again). A leader that removed itself steps
            // down when the removal commits (thesis §4.2.2); it is dropped once it has.
            let raft = replica.raft();
            let removed = self.config.joined.is_some()
                && self.named[s]
                && !named
                && !raft.membership().contains(self.config.node_id)
                && replica.applied_index() >= raft.leader_commit_heard()
                && raft.role() != Role::Leader;
            self.named[s] = named;
            if named {
                self.orphan_at[s] = Instant::MAX;
            } else if self.orphan_at[s] == Instant::MAX && self.config.joined.is_some() {
                self.orphan_at[s] = now + orphan_after;
            }
            // An orphan is a follower that no configuration names, not even one in its log
            // not applied yet: a replica elected by a transfer before it applied the entry
            // that added it is no orphan. Otherwise the timer is armed again.
            let orphan = !named
                && self.orphan_at[s] <= now
                && raft.role() == Role::Follower
                && !raft.membership().contains(self.config.node_id);
            if !named && self.orphan_at[s] <= now && !orphan {
                self.orphan_at[s] = now + orphan_after;
            }
            let mark = self.wanted_mark(s);
            let create = std::mem::take(&mut self.creating[s]);
            let mut mark_first = (mark > self.marks[s]).then_some(mark).flatten();
            let mut mark_then = (mark < self.marks[s]).then_some(mark);
            if create {
                // The mark before the files, always (see `ShardWrite::create`), even for a
                // replica its first record already named: off again once its state is.
                assert!(self.marks[s].is_none());
                mark_first = Some(Mark::Rejoin);
                mark_then = (mark != mark_first).then_some(mark);
            }
            let replica = self.shards[s].as_mut().expect("held");
            // Without a store the delta is never taken: it costs nothing then.
            let raft = if self.config.stores_state {
                replica.take_persist()
            } else {
                None
            };
            let stored = mark_first.is_some() || raft.is_some() || mark_then.is_some();
            if stored && self.config.stores_state {
                self.push_write(ShardWrite {
                    mark_first,
                    raft,
                    mark_then,
                    create,
                    ..ShardWrite::of(shard)
                });
            }
            self.marks[s] = mark;
            let replica = self.shards[s].as_mut().expect("held");
            self.stats.locks.add(&replica.take_led_counts());
            while let Some((to, msg)) = replica.poll_message() {
                self.outgoing.push((to, shard as u16, msg));
            }
            while let Some(reply) = replica.poll_reply() {
                replies.push((shard, reply));
            }
            let deadline = replica.poll_timeout().min(self.orphan_at[s]);
            self.set_deadline(s, deadline);
            if self.config.keeps_lease_horizon {
                self.cover_lease_horizon(shard);
            }
            if removed || orphan {
                self.drop_replica(shard, orphan);
            }
        }
        self.touched_list = touched;
        self.touched_list.clear();
        self.pack_peer_messages();
        if !replies.is_empty() {
            self.queue_replies(&replies);
        }
        replies.clear();
        self.replies = replies;
        self.pending.settle();
    }

    /// Encodes, seals and queues the client answers `replies` (of one flush, with their
    /// shards).
    fn queue_replies(&mut self, replies: &[(u32, crate::core::lock_table::Reply)]) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = &mut scratch[..DATAGRAM_LEN_MAX];
        for &(shard, ref r) in replies {
            // WAITING is no answer: the request is timed until its final one.
            if r.answer.status != Status::Waiting {
                if let Some(d) = self.pending.answered(r.id, r.attempt, self.now) {
                    let op = latency::LatencyOp::of(r.kind, r.answer.queued);
                    self.stats.latency[op.index()].record(d);
                }
            }
            // Spec §7.2.6: sealed with the key of the latest copy received here; not sent
            // if none reached this node (the client's next copy gets it, sealed).
            let last = r.answer.status != Status::Waiting;
            let Some(key) = self.client_auth.seal_for(r.id, last) else {
                continue;
            };
            match encode_reply(r, out).and_then(|len| seal_reply(out, len, key)) {
                Ok(len) => {
                    let mut bytes = self.buffer();
                    bytes.extend_from_slice(&out[..len]);
                    // Its shard's state writes and the lease horizon (module docs, "What a
                    // datagram waits for").
                    let after = self.shard_seqs[shard as usize].state.max(self.horizon_seq);
                    self.queue(r.to, bytes, after, false);
                }
                Err(e) => log::error!("udplock node: reply did not encode: {e}"),
            }
        }
        self.scratch = scratch;
    }

    /// Spec §7.2.4, for a one-voter node without a store ([`Config::keeps_lease_horizon`]):
    /// if `shard` granted or extended a lease past what the lease horizon file covers, a
    /// write naming a later horizon ([`LEASE_HORIZON_AHEAD`] beyond), which every answer
    /// collected after it depends on.
    fn cover_lease_horizon(&mut self, shard: u32) {
        let Some(horizon) = self.shards[shard as usize]
            .as_ref()
            .and_then(Replica::lease_horizon)
        else {
            return;
        };
        if horizon <= self.horizon_covered {
            return;
        }
        let covered = horizon + LEASE_HORIZON_AHEAD;
        self.horizon_covered = covered;
        self.push_write(ShardWrite {
            lease_horizon_us: Some(self.wall_clock(covered)),
            ..ShardWrite::of(shard)
        });
        assert!(self.horizon_covered > horizon);
    }

    /// Coalesces: one PEER datagram per peer carries the SWIM messages and the Raft records
    /// of every shard, as many as fit; more datagrams only when they do not. Each is sealed
    /// for its receiver (spec §8.11) and waits for the writes its records wait for (module
    /// docs, "What a datagram waits for"): SWIM records for none, a shard's leader messages
    /// for its last state write, its other records for its last write.
    ///
    /// With [`Config::stores_in_background`], the Raft records for one peer that wait for no
    /// write still unstored go first, in datagrams of their own, and the rest after: a
    /// leader's Append to a follower then leaves at once, in parallel with its own write
    /// (thesis §10.2.1), however many other shards' acknowledgements this node owes the same
    /// peer after its next sync.
    fn pack_peer_messages(&mut self) {
        if self.outgoing.is_empty() && self.swim_outgoing.is_empty() {
            return;
        }
        let mut outgoing = std::mem::take(&mut self.outgoing);
        let mut swim_outgoing = std::mem::take(&mut self.swim_outgoing);
        let split = self.config.stores_in_background;
        let stored = self.stored_seq;
        let waits = |after: u64| split && after > stored;
        // Stable: each shard's messages to one peer keep their order, and SWIM's too (a
        // shard's records all wait alike, unless it changed role within the flush). Without
        // the split, by peer alone.
        outgoing
            .sort_by_key(|(to, shard, msg)| (*to, split && waits(self.record_after(*shard, msg))));
        swim_outgoing.sort_by_key(|&(to, _)| to);
        let header = PeerHeader {
            cluster_id: self.cluster_id,
            from: self.config.node_id,
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = &mut scratch[..PEER_DATAGRAM_LEN_MAX];
        let (mut i, mut j) = (0, 0);
        loop {
            let to = match (outgoing.get(i), swim_outgoing.get(j)) {
                (Some(&(a, _, _)), Some(&(b, _))) => a.min(b),
                (Some(&(a, _, _)), None) => a,
                (None, Some(&(b, _))) => b,
                (None, None) => break,
            };
            let raft_for = |i: usize| outgoing.get(i).is_some_and(|m| m.0 == to);
            let swim_for = |j: usize| swim_outgoing.get(j).is_some_and(|m| m.0 == to);
            let Some(addr) = self.book.address_of(to) else {
                while raft_for(i) {
                    i += 1;
                }
                while swim_for(j) {
                    j += 1;
                }
                continue;
            };
            // Room for the authentication trailer (spec §8.11) that `seal` appends.
            let room = self.auth.trailer_room(to);
            let mut writer = PeerWriter::with_trailer_room(out, header, room);
            // The last write the datagram's records wait for, and whether that one is
            // still unstored where it matters (`waits`).
            let mut after = 0;
            let mut announced = false;
            // SWIM first: its acks are timed (a late one makes a healthy node suspect).
            while swim_for(j) || raft_for(i) {
                let swim = swim_for(j);
                let record_after = match swim {
                    true => 0,
                    false => self.record_after(outgoing[i].1, &outgoing[i].2),
                };
                let starts_waiting = !waits(after) && waits(record_after);
                let announcing = !swim && announced;
                if (starts_waiting || announcing) && writer.record_count() > 0 {
                    // A question or a full-state exchange introduces this node (spec §8.12):
                    // a receiver that does not know it yet (it restarted, or never heard of
                    // it) acts on it only in a datagram of SWIM records alone (§8.3 rule 3),
                    // so the Raft records go in the next. And records that wait for a sync
                    // do not hold back the ones before them that need not.
                    let len = writer.finish();
                    self.queue_peer(to, addr, out, len, after);
                    writer = PeerWriter::with_trailer_room(out, header, room);
                    after = 0;
                    announced = false;
                }
                let pushed = if swim {
                    writer.push_swim(&swim_outgoing[j].1)
                } else {
                    let (_, shard, ref msg) = outgoing[i];
                    writer.push(shard, msg)
                };
                if pushed.is_err() && writer.record_count() > 0 {
                    // Full: this datagram goes, the message starts the next.
                    let len = writer.finish();
                    self.queue_peer(to, addr, out, len, after);
                    writer = PeerWriter::with_trailer_room(out, header, room);
                    after = 0;
                    announced = false;
                    continue;
                }
                if pushed.is_err() {
                    log::error!("udplock node: a peer message does not fit a datagram; dropped");
                }
                if pushed.is_ok() {
                    after = after.max(record_after);
                }
                if swim {
                    if pushed.is_ok() {
                        NodeStats::bump(&self.stats.swim_sent);
                        announced |= announces(&swim_outgoing[j].1);
                    }
                    j += 1;
                } else {
                    i += 1;
                }
            }
            let len = writer.finish();
            if len > 0 {
                self.queue_peer(to, addr, out, len, after);
            }
        }
        self.scratch = scratch;
        outgoing.clear();
        swim_outgoing.clear();
        self.outgoing = outgoing;
        self.swim_outgoing = swim_outgoing;
    }

    /// The write a Raft record of `shard` waits for (module docs, "What a datagram waits
    /// for"): a leader message, its shard's last state write; any other, its shard's last
    /// write.
    fn record_after(&self, shard: u16, msg: &Message) -> u64 {
        let seqs = self.shard_seqs[shard as usize];
        match only_a_leader_sends(msg) {
            true => seqs.state,
            false => seqs.write,
        }
    }

    /// Seals the node-to-node datagram of `len` bytes in `out` (encoded for node `to` with
    /// the room [`PeerAuth::trailer_room`] asked for) and queues it.
    /// It may leave once every write up to `after` is stored.
    fn queue_peer(&mut self, to: NodeId, addr: SocketAddr, out: &mut [u8], len: usize, after: u64) {
        let len = self.auth.seal(to, out, len);
        let mut bytes = self.buffer();
        bytes.extend_from_slice(&out[..len]);
        NodeStats::bump(&self.stats.peer_sent);
        self.queue(addr, bytes, after, true);
    }

    /// Spec §8.10: every [`SETTINGS_PERIOD`], this node's settings to the nodes of its book
    /// that are due (`PeerSettingsLog::due`: new ones and changed ones, and some in turn).
    fn send_settings(&mut self, now: Instant) {
        if now < self.settings_next {
            return;
        }
        self.settings_next = now + SETTINGS_PERIOD;
        let peers = self.settings.due(self.book.nodes());
        for (id, addr) in peers {
            self.send_settings_to(id, addr);
        }
    }

    /// This node's settings to node `id` at `addr`, encoded for it: each peer gets its own
    /// trailer (spec §8.11).
    fn send_settings_to(&mut self, id: NodeId, addr: SocketAddr) {
        let datagram = PeerSettings {
            header: PeerHeader {
                cluster_id: self.cluster_id,
                from: self.config.node_id,
            },
            auth: None,
            values: SettingValues::from_slice(self.settings.own()),
        };
        let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
        let end = out.len() - self.auth.trailer_room(id);
        match datagram.encode(&mut out[..end]) {
            Ok(len) => self.queue_peer(id, addr, &mut out, len, self.write_seq),
            Err(e) => log::error!("udplock node: settings did not encode: {e}"),
        }
    }

    /// Every [`RECOVERY_LOG_PERIOD`] while some shard still asks the other nodes before it
    /// takes part (spec §8.5): how many, and what the others answered the first of them.
    fn log_recovery(&mut self, now: Instant) {
        if now < self.recovery_logged + RECOVERY_LOG_PERIOD {
            return;
        }
        self.recovery_logged = now;
        let asking: Vec<u32> = self
            .replicas()
            .filter(|(_, r)| r.raft().asking())
            .map(|(s, _)| s)
            .collect();
        let Some(&first) = asking.first() else {
            return;
        };
        let answers = self.replica(first).expect("held").raft().rejoin_answers();
        let mut peers: Vec<NodeId> = self.config.peers.iter().map(|&(id, _)| id).collect();
        peers.sort_unstable();
        let heard: Vec<String> = peers
            .iter()
            .filter(|&&id| id != self.config.node_id)
            .map(|&id| match answers.iter().find(|a| a.0 == id) {
                Some((_, Some(term), _)) => format!("node {id} holds state (term {term})"),
                Some((_, None, true)) => format!("node {id} is new"),
                Some((_, None, false)) => format!("node {id} holds no state and is not new"),
                None => format!("node {id} has not answered"),
            })
            .collect();
        log::warn!(
            "udplock node {}: {} of {} shards still wait before they take part (spec §8.5); \
             shard {first}: {}",
            self.config.node_id,
            asking.len(),
            self.held,
            heard.join(", ")
        );
    }

    /// Every [`AUTH_DROP_LOG_PERIOD`], if any datagram failed the authentication checks: one
    /// line with how many, per reason and source.
    fn log_auth_drops(&mut self, now: Instant) {
        if now < self.auth_drops_since + AUTH_DROP_LOG_PERIOD {
            return;
        }
        self.auth_drops_since = now;
        if self.auth_drops.is_empty() {
            return;
        }
        let drops = std::mem::take(&mut self.auth_drops);
        let total: u64 = drops.values().sum();
        let named: Vec<String> = drops
            .iter()
            .map(|(&(reason, source), n)| format!("{n} {reason} from {source}"))
            .collect();
        // A datagram made before its receiver was heard from (StaleReceiver) is expected once
        // per peer after either end starts: not worth a warning on its own.
        let expected = drops.keys().all(|&(r, _)| r == AuthDrop::StaleReceiver);
        let line = format!(
            "udplock node {}: dropped {total} peer datagrams in the last {} s: {} (spec §8.11)",
            self.config.node_id,
            AUTH_DROP_LOG_PERIOD.as_millis() / 1000,
            named.join(", ")
        );
        if expected {
            log::info!("{line}; expected once per peer after a node starts");
        } else {
            log::warn!("{line}");
        }
    }
}

/// A replica of `shard` set up as the node runs every one: sharing the node's budget, its
/// preferred leader, compaction and proposal limits.
fn start_replica(
    config: &Config,
    shared: &raft::NodeShared,
    in_flight: &InFlight,
    replica_config: crate::core::replica::Config,
    seed: u64,
    start: Start,
    now: Instant,
) -> Result<Replica, String> {
    let shard = replica_config.shard;
    let mut replica = Replica::start(replica_config, seed, start, now)?;
    replica.share(shared.clone());
    replica.share_in_flight(in_flight.clone());
    // A joined node lists no voter: no preferred leader to name (placement will).
    if config.spread_leaders && !config.peers.is_empty() {
        replica.set_preferred_leader(Some(config.preferred_leader(shard)));
    }
    replica.set_compaction(config.compact_every, config.compact_keep);
    replica.set_uncommitted_max(config.uncommitted_max);
    Ok(replica)
}

/// Whether the configuration `replica` applied (committed; the static one before any CONFIG)
/// names node `me`, as voter or learner.
/// Whether a SWIM message of this node's introduces it: a question (PING, PING_REQ) and a
/// full-state exchange carry this node's own alive UPDATE (`Swim::question`, spec §8.12).
/// `records` emptied, as a vector of records borrowing from another datagram. Reuses the
/// allocation: collecting a vector's `into_iter().map(..)` into one of an element type of the
/// same size and alignment happens in place (std's in-place collection), and the map never
/// runs on an empty vector. Were std to allocate anew, only the reuse would be lost.
fn relabel<'a, 'b>(mut records: Vec<PeerRecord<'a>>) -> Vec<PeerRecord<'b>> {
    records.clear();
    records
        .into_iter()
        .map(|_| unreachable!("emptied"))
        .collect()
}

fn announces(msg: &swim::Message) -> bool {
    matches!(
        msg,
        swim::Message::Ping { .. } | swim::Message::PingReq { .. } | swim::Message::PushPull { .. }
    )
}

/// Whether only a leader sends `msg`, resting on no write of its own but those of its term
/// and vote (module docs, "What a datagram waits for"): an Append (entries or none), a
/// snapshot chunk, a TimeoutNow.
fn only_a_leader_sends(msg: &Message) -> bool {
    matches!(
        msg,
        Message::Append { .. } | Message::InstallSnapshot { .. } | Message::TimeoutNow { .. }
    )
}

fn names(replica: &Replica, me: NodeId) -> bool {
    match replica.applied_membership() {
        Some(membership) => membership.contains(me),
        None => replica.config().raft.voters.contains(&me),
    }
}

#[cfg(test)]
mod tests;

/// Seals the reply of `len` bytes at the start of `out` with `key` (spec §7.2.6), or leaves
/// it as it is; returns the length to send.
fn seal_reply(out: &mut [u8], len: usize, key: Option<&ClientKey>) -> Result<usize, EncodeError> {
    match key {
        None => Ok(len),
        Some(key) => key.seal_reply(out, len),
    }
}
