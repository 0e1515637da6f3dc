//! A node of a replicated cluster: the IO shell around its core, [`crate::core::node::Node`].
//! The single node is one too: a cluster of one voter and one shard
//! ([`ClusterConfig::single`], `crate::single`), whose restarts in `memory` mode are made safe
//! by its lease horizon file ([`horizon`]).
//!
//! Every node runs a replica of every shard (static membership, `--peers`); in a joined
//! cluster (`--bootstrap`, `--join`, spec §8.1) the first node starts with every one, and
//! the nodes that joined hold the replicas leaders add them to (created, and their files,
//! on a leader's first record; dropped, files deleted, when removed: `ShardWrite::create`,
//! `remove`, [`storage::DataDir::apply`]; [`join`] finds the cluster before the node
//! starts). One event-loop
//! thread owns the node's single UDP socket, which carries both client requests and
//! node-to-node datagrams (spec §8), the clock, the disk and the key file; the core owns
//! every protocol decision. The loop:
//!
//! 1. blocks in `recvmmsg` until a datagram or the core's next deadline
//!    (`Node::poll_timeout`), so an idle node sleeps; the same call takes the datagrams
//!    already queued behind the first (`socket::RecvBatch`);
//! 2. hands the core those datagrams (`Node::handle_datagram`), and more batches while they
//!    come full (up to `DRAIN_MAX` datagrams), so that under load many requests share one
//!    Append and many answers one PEER datagram; or the timer (`Node::handle_timeout`);
//! 3. stores every write the core hands out (`Node::poll_persist`: a recovery mark and the
//!    Raft delta, per `--durability`, [`storage`]), commits them to the node's write-ahead
//!    log at once (one write, one `fdatasync` under `fsync`), has the shards that hold the
//!    log's oldest segment back compacted (`Node::compact`), reports what is stored
//!    (`Node::stored`: a leader counts its own entries toward a majority only then), then
//!    sends every datagram it hands out (`Node::poll_transmit`), gathered into one
//!    `sendmmsg` (a leader's APPENDs to its followers and the flush's answers in one system
//!    call, `socket::SendBatch`). The core names, for each
//!    datagram, the last write it depends on (a leader's Appends need not wait for its own
//!    new entries). Under `os` this loop stores and commits them all first; under `fsync` it
//!    hands them to the node's writer thread (`writer.rs`) and goes on receiving and
//!    answering: the writer stores everything handed over so far, syncs once, sends the
//!    datagrams that waited for those writes and wakes the loop, which reports them. A
//!    write that fails stops the node (fail-stop).
//!
//! # Durability and restarts
//!
//! `fsync` and `os` keep every shard's Raft log and vote (in one write-ahead log) and
//! snapshot in `--data-dir` (see
//! [`storage`] for what each survives), which is locked while the node runs and records
//! which node of which cluster it belongs to. `memory` keeps nothing.
//!
//! A shard replica that finds no state of its own — always under `memory`; under `fsync`
//! and `os` when its files are missing (a replaced disk, an emptied or mistyped directory,
//! another `HOME`) or a rejoin was cut short — has lost what it voted and acknowledged, so it
//! must not act as the node it was, whatever the durability. It rejoins by the rule of spec
//! §8.5 (`Raft::rejoin`): it learns a term from a quorum of the others that hold state, and
//! neither votes nor campaigns until it has caught up with a leader. The decision is
//! [`crate::core::restart::decide`], shared with the simulator. A cluster therefore survives
//! the loss of a minority's state.
//!
//! A cluster's first start (`new_cluster`, `--new-cluster`): every replica starts *new* and
//! asks too, and starts fresh only once EVERY other node answers that it holds no state
//! beyond term 0 (spec §8.5 rule 6). Next to a running cluster a new replica simply rejoins,
//! so the flag may stay in a unit file. A total loss, where nobody can answer with state,
//! waits for an operator, unless every node is new (then it is a new cluster: its startup
//! grace must cover the longest lease clients may still count).

mod event_loop;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod metrics;
mod writer;

/// The log target of membership events (a node joined, suspected, dead, alive again, left):
/// the `udplock` command shows them at `info` by default.
pub const MEMBERS_LOG_TARGET: &str = "udplock::members";
// `horizon`, `join`, `keys` and `storage` are the node's own machinery, public only for the
// `udplock` binary and the tests: hidden from the documentation, with no promise of
// stability. What a configuration names is re-exported below.
#[doc(hidden)]
pub mod horizon;
#[doc(hidden)]
pub mod join;
#[doc(hidden)]
pub mod keys;
pub(crate) mod socket;
#[doc(hidden)]
pub mod storage;

pub use self::keys::KeySet;
pub use self::storage::Durability;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use self::event_loop::ClusterLoop;
use self::horizon::HorizonFile;
use self::keys::KeyFileWatch;
use self::socket::{bind, wall_clock_micros, ReadTimer, SendBatch};
use self::storage::DataDir;
use crate::clock::BootInstant;
use crate::core::lock_table;
use crate::core::node::settings::PeerSettingsView;
use crate::core::node::{self, Node, NodeStats};
use crate::core::placement::Planner;
use crate::core::raft::{self, NodeId};
use crate::core::replica::{self, ShardStats};
use crate::core::restart::{Boot, Start};
use crate::core::swim::MemberInfo;
use crate::core::time::{Duration, Instant};

pub use crate::core::node::{AUTH_DROP_LOG_PERIOD, SHARDS_DEFAULT};

/// What a cluster node needs to start.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's id: one of `peers`.
    pub node_id: NodeId,
    /// Every node of the cluster, this one included: id and the address it listens on.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// Shards of the cluster (same on every node; fixed when the cluster is created).
    pub shards: u32,
    /// Raft timers and limits (`id`, `voters` and `append_bytes_max` are set per node).
    pub raft: raft::Config,
    /// Limits of each shard's lock table (same on every node).
    pub table: lock_table::Config,
    /// Limits over all the replicas this node holds (`node::limits`; each node its own).
    pub limits: node::limits::NodeLimits,
    /// What a node stores before it acknowledges (`memory`, `os`, `fsync`; see
    /// [`Durability`]).
    pub durability: Durability,
    /// Where `fsync` and `os` keep their files.
    pub data_dir: Option<PathBuf>,
    /// Pin the event-loop thread to this CPU.
    pub cpu: Option<usize>,
    /// Snapshot cadence of every shard replica (see `core::replica`): a snapshot every
    /// `compact_every` applied entries (0: never), the log dropped up to it `compact_keep`
    /// entries later.
    pub compact_every: u64,
    /// Entries kept in the log behind the latest snapshot (see `compact_every`), so a
    /// follower that lags by fewer catches up from the log instead of a snapshot.
    pub compact_keep: u64,
    /// This start may create the cluster (`--new-cluster`): a replica whose storage never
    /// held anything (an empty, new data directory, or `memory`) starts *new* rather than
    /// rejoining (spec §8.5 rule 6; see [`crate::core::restart`]). Safe on every start: a new
    /// replica starts fresh only when every other node says it is new too, and rejoins next
    /// to a cluster that holds state. Without it, storage that holds nothing always rejoins,
    /// so the nodes of a new cluster started without it wait for each other for ever.
    pub new_cluster: bool,
    /// The cluster keys (spec §8.11): the key this node authenticates its node-to-node
    /// datagrams with, and the keys (or *none*) it accepts. `None`: no keys, peer traffic is
    /// NOT authenticated — any host that can send this node UDP can forge it and make two
    /// clients hold one lock (the node says so loudly at start). Leave it `None` when
    /// `key_file` is set. ([`start_local_cluster`] gives its nodes a random key when neither
    /// is set.)
    pub keys: Option<KeySet>,
    /// A key file (`--cluster-key-file`, see [`keys`]): read at start (a bad one refuses the
    /// start), then checked about every [`keys::KEY_FILE_CHECK_MS`] and applied when it
    /// changes, without a restart.
    pub key_file: Option<PathBuf>,
    /// The lease horizon file ([`horizon`], spec §7.2.4) of a one-voter node without a disk
    /// (`memory`): restarted at the same address, it grants nothing a client may still hold.
    /// `None` for every other node (a replicated or stored node rejoins by spec §8.5, or
    /// restores its log), and for a single node nobody can have preceded (an ephemeral port)
    /// or whose operator takes care of restarts (`startup_grace_ms`).
    pub state_file: Option<PathBuf>,
    /// SWIM's protocol period among the nodes (`node::Config::swim_period`, spec §8.12):
    /// 1 s by default; no flag sets it yet (tests shorten it).
    pub swim_period: Duration,
    /// A joined cluster (`--bootstrap`, `--join`; spec §8.1): its cluster id, the address
    /// this node announces, the seeds (see [`node::Joined`]). `None`: the static form.
    pub joined: Option<node::Joined>,
    /// The address to bind when it is not the one the others use (`--listen 0.0.0.0:P`
    /// with `--advertise HOST:P`); `None`: bind [`ClusterConfig::listen`].
    pub bind: Option<SocketAddr>,
    /// Placement in a joined cluster (`--replicas`, `--dead-after-ms`; spec §8.13; see
    /// `node::Config::placement`): replicas per shard and how long a dead member waits
    /// before its replicas are replaced. Ignored by a static cluster (every node holds
    /// every shard). `None`: no node proposes changes (tests that make them).
    pub placement: Option<Planner>,
    /// Address validation of client requests (spec §7.2.5; `--address-validation`): on by
    /// default. Off only where every host that can reach the node is trusted: a source that
    /// never receives at its address can then create sessions, waiters and holds.
    pub address_validation: bool,
    /// Client keys (spec §7.2.6; `--client-key-file`): which keys the node accepts and which
    /// client ids each authorizes; `None`: no client authentication. Fixed, unless
    /// [`ClusterConfig::client_key_file`] names a file (which replaces it at start and on
    /// every change). Requires address validation.
    pub client_keys: Option<std::sync::Arc<crate::client_keys::ClientKeyFile>>,
    /// The client key file (`--client-key-file`): read at start (it then gives
    /// [`ClusterConfig::client_keys`]) and about every second after, a changed file applied
    /// without a restart (a bad one keeps the keys in force and logs why).
    pub client_key_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// Node `node_id` of a cluster of `peers`, with default shards, timers and limits, in
    /// `memory` mode (set `durability` and `data_dir` for a server).
    pub fn new(node_id: NodeId, peers: Vec<(NodeId, SocketAddr)>) -> ClusterConfig {
        ClusterConfig {
            node_id,
            peers,
            shards: SHARDS_DEFAULT,
            raft: raft::Config::default(),
            table: lock_table::Config::default(),
            limits: node::limits::NodeLimits::DEFAULT,
            durability: Durability::Memory,
            data_dir: None,
            cpu: None,
            compact_every: replica::COMPACT_EVERY_DEFAULT,
            compact_keep: replica::COMPACT_KEEP_DEFAULT,
            new_cluster: false,
            keys: None,
            key_file: None,
            state_file: None,
            swim_period: node::Config::new(node_id, Vec::new()).swim_period,
            joined: None,
            bind: None,
            placement: node::Config::new(node_id, Vec::new()).placement,
            address_validation: true,
            client_keys: None,
            client_key_file: None,
        }
    }

    /// The single node (`udplock server` without `--peers`): a cluster of one voter, node 1
    /// at `listen`, with one shard (so its limits are not multiplied by the shard count),
    /// new on every start that finds no state (nobody else can vouch for anything, spec §8.5
    /// rule 6), in `memory` mode (set `durability`, `data_dir` or `state_file`).
    pub fn single(listen: SocketAddr) -> ClusterConfig {
        ClusterConfig {
            shards: 1,
            new_cluster: true,
            // No peer traffic: no key to use or to ask for.
            keys: Some(KeySet::unauthenticated()),
            ..ClusterConfig::new(1, vec![(1, listen)])
        }
    }

    /// A cluster of one voter: no peer traffic, nobody to rejoin with.
    pub fn is_single(&self) -> bool {
        self.peers.len() == 1
    }

    /// The cluster as this node's core sees it (no addresses to bind, no disk, no keys).
    pub fn node_config(&self) -> node::Config {
        node::Config {
            node_id: self.node_id,
            peers: self.peers.clone(),
            shards: self.shards,
            raft: self.raft.clone(),
            table: self.table.clone(),
            limits: self.limits,
            compact_every: self.compact_every,
            compact_keep: self.compact_keep,
            // Without a store (`memory`) the core hands out no write: nothing to store.
            stores_state: self.durability != Durability::Memory,
            keeps_lease_horizon: self.state_file.is_some(),
            // `fsync` syncs on the writer thread (`writer.rs`); `os` writes inline.
            stores_in_background: self.durability == Durability::Fsync,
            swim_period: self.swim_period,
            joined: self.joined.clone(),
            placement: self.placement,
            address_validation: self.address_validation,
            client_keys: self.client_keys.clone(),
            ..node::Config::new(self.node_id, self.peers.clone())
        }
    }

    /// The address this node listens on.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.node_config().listen()
    }

    /// The cluster id of every PEER datagram (spec §8.1): see [`node::Config::cluster_id`].
    pub fn cluster_id(&self) -> u64 {
        self.node_config().cluster_id()
    }

    /// Who is in the cluster (spec §8.1): see [`node::Config::membership`].
    pub fn membership(&self) -> String {
        self.node_config().membership()
    }

    /// What this node's data directory must record (see [`storage::DataDir`]).
    pub fn identity(&self) -> storage::Identity {
        let membership = self.membership();
        storage::Identity {
            membership_id: udplock_protocol::shard_hash(membership.as_bytes()).max(1),
            membership,
            node: self.node_id,
            joined: self.joined.as_ref().map(|j| j.cluster_id),
        }
    }

    /// The node that should lead `shard` when it is up: see
    /// [`node::Config::preferred_leader`].
    pub fn preferred_leader(&self, shard: u32) -> NodeId {
        self.node_config().preferred_leader(shard)
    }

    /// Refuses settings that cannot work together; the error says which and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.keys.is_some() && self.key_file.is_some() {
            return Err("keys and a key file: name one (the key file is read at start)".into());
        }
        if self.state_file.is_some() && (!self.is_single() || self.durability != Durability::Memory)
        {
            return Err(
                "a lease horizon file is for a single node in memory mode (a replicated or \
                 stored node needs none)"
                    .into(),
            );
        }
        if self.durability != Durability::Memory && self.data_dir.is_none() {
            return Err(format!(
                "durability {} needs a data directory",
                self.durability.name()
            ));
        }
        self.node_config().validate()
    }
}

/// What [`ClusterNode`] asks its loop to do before it stops: nothing yet, a graceful stop
/// ([`Node::start_stopping`]), or a graceful stop that announces a leave
/// ([`Node::start_leaving`]).
pub(crate) const GRACEFUL_NONE: u8 = 0;
pub(crate) const GRACEFUL_STOP: u8 = 1;
pub(crate) const GRACEFUL_LEAVE: u8 = 2;

/// A running cluster node. Dropping it stops the node.
pub struct ClusterNode {
    node_id: NodeId,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Asks the loop to hand every shard it leads to another node before it stops
    /// ([`ClusterNode::stop`], [`ClusterNode::leave`]): one of the `GRACEFUL_*` values.
    graceful: Arc<AtomicU8>,
    stats: Arc<NodeStats>,
    shard_stats: Arc<Mutex<Vec<ShardStats>>>,
    /// What this node last heard of each peer's settings (spec §8.10).
    peer_settings: Arc<Mutex<BTreeMap<NodeId, PeerSettingsView>>>,
    /// The members SWIM knows (spec §8.12), as the loop last published them.
    members: Arc<Mutex<Vec<MemberInfo>>>,
    /// The limits each other node reports reached (spec §8.14), as the loop last published
    /// them.
    peer_loads: Arc<Mutex<Vec<(NodeId, u16)>>>,
    /// The cluster keys in force (spec §8.11): as started with, or as last reloaded.
    keys: Arc<Mutex<KeySet>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl ClusterNode {
    /// Binds the node's address and starts its event loop.
    pub fn start(config: ClusterConfig) -> io::Result<ClusterNode> {
        config.validate().map_err(|e| invalid(Some(e)))?;
        let listen = config.listen().ok_or_else(|| invalid(None))?;
        // The directory's lock before the address: a second process started on the same
        // directory is told that, rather than that the address is taken.
        let dir = open_data_dir(&config)?;
        let socket = bind(config.bind.unwrap_or(listen))?;
        ClusterNode::start_with(socket, config, dir)
    }

    /// Starts the event loop on a socket already bound to this node's address (so a local
    /// cluster can bind every port before any node starts).
    pub fn start_on(socket: UdpSocket, config: ClusterConfig) -> io::Result<ClusterNode> {
        config.validate().map_err(|e| invalid(Some(e)))?;
        let dir = open_data_dir(&config)?;
        ClusterNode::start_with(socket, config, dir)
    }

    fn start_with(
        socket: UdpSocket,
        mut config: ClusterConfig,
        mut dir: Option<DataDir>,
    ) -> io::Result<ClusterNode> {
        let local_addr = socket.local_addr()?;
        let (key_watch, keys) = open_keys(&config)?;
        // Spec §7.2.6: the client key file, read now and watched by the loop.
        let client_key_watch = match &config.client_key_file {
            Some(path) => {
                let (file, text) = crate::client_keys::ClientKeyFile::read_with_text(path)
                    .map_err(|e| invalid(Some(e)))?;
                config.client_keys = Some(Arc::new(file));
                Some(event_loop::ClientKeyWatch {
                    path: path.clone(),
                    text,
                    next_check: Instant::ZERO,
                })
            }
            None => None,
        };
        let horizon = open_horizon(&mut config)?;
        let epoch = BootInstant::now();
        // Spec §8.5: what each shard's storage holds decides how its replica starts.
        let storage_new = dir.as_ref().is_none_or(DataDir::is_new);
        let (starts, mut wal) = storage::open_shards(
            dir.as_ref(),
            config.shards,
            config.new_cluster,
            config.joined.is_some(),
        )?;
        // A lone voter whose directory held its state, now lost or untrusted, could only wait
        // for ever; say so and stop instead.
        let lost = dir.is_some() && !storage_new;
        if config.is_single() && lost && starts.iter().any(|s| matches!(s, Some(Start::Rejoin))) {
            return Err(invalid(Some(single_without_state(&config, dir.as_ref()))));
        }
        if let (Some(d), Some(wal)) = (dir.as_mut(), wal.as_mut()) {
            storage::settle_start(d, &config.identity(), &starts, wal)?;
        }
        log_start(&config, dir.as_ref(), storage_new, &starts);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(NodeStats::default());
        let shard_stats = Arc::new(Mutex::new(Vec::new()));
        let peer_settings = Arc::new(Mutex::new(BTreeMap::new()));
        let members = Arc::new(Mutex::new(Vec::new()));
        let peer_loads = Arc::new(Mutex::new(Vec::new()));
        let shared_keys = Arc::new(Mutex::new(keys.clone()));
        // Spec §8.11: a number this node never used before, so that its peers tell its
        // datagrams from those of its earlier lives (raised if a peer shows the clock went
        // back).
        let incarnation = wall_clock_micros().max(1);
        let now = Instant::from_micros(epoch.elapsed().as_micros() as u64);
        let mut node = Node::new(
            config.node_config(),
            starts,
            keys,
            incarnation,
            rand::random::<u64>(),
            stats.clone(),
            now,
        )
        .map_err(|e| invalid(Some(e)))?;
        node.set_wall_clock(now, wall_clock_micros());
        // Spec §7.2.5: without a cluster key, this node's tokens are made with a secret of
        // its own, drawn from the operating system at every start.
        let mut address_secret = [0u8; node::address::ADDRESS_SECRET_LEN];
        getrandom::getrandom(&mut address_secret)
            .map_err(|e| invalid(Some(format!("no randomness for address tokens: {e}"))))?;
        node.set_address_secret(&address_secret);
        // Published before the loop's first turn, so that `/ready` never sees no shards.
        if let Ok(mut published) = shard_stats.lock() {
            *published = node.shard_stats();
        }
        let dir = dir.map(Arc::new);
        // Under `fsync` a thread of its own stores and syncs, off the loop (`writer`).
        let (writer, wal) = match (&dir, wal) {
            (Some(d), Some(mut wal)) if config.durability == Durability::Fsync => {
                let d = d.clone();
                let store: writer::StoreBatch = Box::new(move |jobs| {
                    for job in jobs {
                        match job {
                            writer::Job::Write(write) => d.apply(&mut wal, write)?,
                            writer::Job::Relocate {
                                shard,
                                snapshot,
                                log,
                            } => wal.relocate(*shard, *snapshot, log),
                        }
                    }
                    d.commit(&mut wal)?;
                    Ok(wal.holding_back())
                });
                let name = format!("udplock-writer-{}", config.node_id);
                let w = writer::Writer::spawn(name, store, &socket, local_addr, stats.clone())?;
                (Some(w), None)
            }
            (_, wal) => (None, wal),
        };
        let event_loop = ClusterLoop {
            node,
            socket,
            key_watch,
            client_key_watch,
            keys: shared_keys.clone(),
            wal,
            dir,
            writer,
            batch: Vec::new(),
            horizon,
            stored: 0,
            reported: 0,
            stats: stats.clone(),
            shard_stats: shard_stats.clone(),
            peer_settings: peer_settings.clone(),
            members: members.clone(),
            peer_loads: peer_loads.clone(),
            stats_published: Instant::ZERO,
            shard_stats_version: None,
            stats_dirty: true,
            epoch,
            read_timer: ReadTimer::default(),
            out: SendBatch::default(),
            drains: !config.is_single(),
        };
        let graceful = Arc::new(AtomicU8::new(GRACEFUL_NONE));
        let thread = {
            let stop = stop.clone();
            let graceful = graceful.clone();
            let cpu = config.cpu;
            std::thread::Builder::new()
                .name(format!("udplock-node-{}", config.node_id))
                .spawn(move || {
                    if let Some(id) = cpu {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                            log::warn!("udplock node: could not pin the event loop to CPU {id}");
                        }
                    }
                    event_loop.run(&stop, &graceful)
                })?
        };
        log::info!(
            "udplock node {} listening on {local_addr} ({} shards, {} nodes, durability {})",
            config.node_id,
            config.shards,
            config.peers.len(),
            config.durability.name()
        );
        Ok(ClusterNode {
            node_id: config.node_id,
            local_addr,
            stop,
            graceful,
            stats,
            shard_stats,
            peer_settings,
            members,
            peer_loads,
            keys: shared_keys,
            thread: Some(thread),
        })
    }

    /// The cluster keys in force (spec §8.11): as the node started, or as its key file last
    /// changed to. Key ids only are shown by its `Debug` and [`KeySet::describe`].
    pub fn keys(&self) -> KeySet {
        match self.keys.lock() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// What this node last heard of each peer's settings (spec §8.10): per peer, the
    /// settings that differ from this node's and whether their cluster ids differ. Peers
    /// not heard from yet are missing.
    pub fn peer_settings(&self) -> BTreeMap<NodeId, PeerSettingsView> {
        self.peer_settings
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Every node SWIM knows of (spec §8.12), this one first: id, address, state,
    /// incarnation, as of at most a few milliseconds ago. Informs operators only.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Per other node, the limits per node it reports reached in a live load report (spec
    /// §8.14), as of at most a few milliseconds ago: what this node's leaders refuse to
    /// raise beside their own counts. Nodes with nothing reached are missing.
    pub fn peer_loads(&self) -> Vec<(NodeId, u16)> {
        self.peer_loads
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Serves this node's Prometheus metrics and its health and readiness endpoints on
    /// `listener` (`--metrics-listen`, [`metrics`]), from a thread of their own, until the
    /// returned handle is dropped.
    pub fn serve_metrics(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<http::MetricsServer> {
        http::MetricsServer::start(
            listener,
            metrics::Source {
                node_id: self.node_id,
                stats: self.stats.clone(),
                shard_stats: self.shard_stats.clone(),
                members: self.members.clone(),
                peer_loads: self.peer_loads.clone(),
            },
        )
    }

    /// The address the node's socket is bound to (with the actual port when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's counters (datagrams, requests, drops), updated live by its event loop.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Every shard's role, term, leader, commit index and table counters, as of at most a few
    /// milliseconds ago.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.shard_stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// False once the event loop has stopped (on its own: see [`ClusterNode::wait`]).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Blocks until the node stops; `Err` says why it stopped on its own (it stops rather
    /// than go on without the durability it promises, e.g. when its disk fails).
    pub fn wait(mut self) -> Result<(), String> {
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err("the node's event loop panicked".into()),
        }
    }

    /// Stops the event loop at once and waits for it: to the rest of the cluster this looks
    /// like a crash (its shards elect new leaders after an election timeout).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    /// Stops gracefully: hands every shard this node leads to an up-to-date peer
    /// (leadership transfer, thesis §3.10), waits until it leads none or `within` passes,
    /// then stops, announcing no leave ([`Node::start_stopping`]): the others hold it suspect,
    /// then dead (SWIM), and a joined cluster replaces its replicas only once it has been
    /// dead for `--dead-after-ms`, so a restart moves none. Clients see a redirect instead
    /// of an election timeout. Returns how many shards it still led when it stopped (0: all
    /// handed over).
    pub fn stop(self, within: StdDuration) -> usize {
        self.stop_gracefully(GRACEFUL_STOP, within)
    }

    /// Leaves for good: stops as [`ClusterNode::stop`] does, and announces a SWIM leave
    /// ([`Node::start_leaving`]), so that the others hold it *left* and a joined cluster
    /// replaces its replicas at once (decommissioning, `--leave-on-stop`). Returns how many
    /// shards it still led when it stopped.
    pub fn leave(self, within: StdDuration) -> usize {
        self.stop_gracefully(GRACEFUL_LEAVE, within)
    }

    fn stop_gracefully(mut self, how: u8, within: StdDuration) -> usize {
        assert!(how == GRACEFUL_STOP || how == GRACEFUL_LEAVE);
        self.graceful.store(how, Ordering::Release);
        let deadline = std::time::Instant::now() + within;
        let led = |node: &ClusterNode| {
            node.shard_stats()
                .iter()
                .filter(|s| s.role == Some(raft::Role::Leader))
                .count()
        };
        // The loop publishes its shards' state every few milliseconds.
        std::thread::sleep(StdDuration::from_millis(10));
        while led(&self) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(StdDuration::from_millis(5));
        }
        let still_led = led(&self);
        self.stop_thread();
        still_led
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            // Wake the loop from its blocking recv with an empty datagram (dropped).
            let local = if self.local_addr.is_ipv4() {
                SocketAddr::from(([127, 0, 0, 1], 0))
            } else {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
            };
            if let Ok(waker) = UdpSocket::bind(local) {
                let mut to = self.local_addr;
                if to.ip().is_unspecified() {
                    to.set_ip(local.ip());
                }
                let _ = waker.send_to(&[], to);
            }
            let _ = t.join();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Says how the node's shards start (spec §8.5): a replica without state of its own rejoins,
/// and the log says so and why, so an operator waiting for a cluster to form knows what for.
fn log_start(
    config: &ClusterConfig,
    dir: Option<&DataDir>,
    storage_new: bool,
    starts: &[Option<Start>],
) {
    let id = config.node_id;
    let total = starts.len();
    let rejoin = starts
        .iter()
        .filter(|s| matches!(s, Some(Start::Rejoin)))
        .count();
    let new = starts
        .iter()
        .filter(|s| matches!(s, Some(Start::New)))
        .count();
    if config.joined.is_some() {
        // Spec §8.1: a joined cluster's node holds the shards it has state of; the others a
        // leader adds it to later.
        let held = starts.iter().filter(|s| s.is_some()).count();
        log::info!("udplock node {id}: holds {held} of {total} shards");
    }
    let why = match dir {
        None => "durability memory keeps nothing".to_string(),
        Some(d) if storage_new => {
            format!("the data directory {} holds nothing", d.path().display())
        }
        Some(d) if d.boot() == Boot::Changed => format!(
            "--durability os wrote {} in another boot of this machine",
            d.path().display()
        ),
        Some(d) => format!(
            "their files in {} are missing, or a rejoin was cut short",
            d.path().display()
        ),
    };
    if rejoin > 0 {
        let hint = if storage_new && !config.new_cluster {
            " If this is the cluster's first start, start every node with --new-cluster."
        } else {
            ""
        };
        log::warn!(
            "udplock node {id}: {rejoin} of {total} shards have no state of their own ({why}): \
             rejoining. Each waits for a quorum of the other nodes that hold state before it \
             votes or acknowledges anything (spec §8.5).{hint}"
        );
    }
    if config.is_single() {
        // Nobody to ask: a new single node starts at once (spec §8.5 rule 6, no others).
        if new > 0 {
            // The node that bootstrapped a joined cluster is its one voter for now, not a
            // single node: others join it.
            let what = match config.joined {
                Some(_) => "bootstrapping a new cluster as its only voter",
                None => "a single node",
            };
            log::info!("udplock node {id}: {what}, starting empty ({why})");
        }
    } else if new > 0 {
        log::warn!(
            "udplock node {id}: {new} of {total} shards start new ({why}; --new-cluster): each \
             starts once every other node answers that it is new too, and rejoins instead if \
             the cluster already holds state (spec §8.5)."
        );
    }
    if config.new_cluster && rejoin + new == 0 {
        log::info!("udplock node {id}: holds its state; --new-cluster changes nothing");
    }
}

/// Why a single node whose storage it cannot trust does not start: a lone voter cannot rejoin
/// (spec §8.5: nobody can vouch for its term or its log), and starting empty would forget
/// locks clients hold. What the operator can do instead.
fn single_without_state(config: &ClusterConfig, dir: Option<&DataDir>) -> String {
    let path = dir.map_or_else(String::new, |d| d.path().display().to_string());
    let why = match dir {
        Some(d) if d.boot() == Boot::Changed => {
            "it was written by --durability os in another boot of this machine, and a power \
             loss may have dropped any of it (--durability fsync survives one)"
        }
        _ => "its shard's files are missing or a recovery was cut short",
    };
    format!(
        "single node {}: the state in {path} cannot be trusted: {why}. A single node cannot \
         rejoin (nobody can vouch for it), and starting empty would forget the locks clients \
         hold. To start empty, move the directory away and start with --startup-grace set \
         to the longest lease clients use (spec §7.2.4)",
        config.listen().map_or_else(String::new, |a| a.to_string())
    )
}

/// The lease horizon file of a single node in memory mode (`None` without one): opened, and
/// the node's startup grace raised to cover every lease its predecessor may have granted.
fn open_horizon(config: &mut ClusterConfig) -> io::Result<Option<HorizonFile>> {
    let Some(path) = &config.state_file else {
        return Ok(None);
    };
    let (file, grace_ms) = HorizonFile::open(path, config.table.ttl_ms_max)?;
    if grace_ms > config.table.startup_grace_ms {
        log::warn!(
            "udplock node: a previous node granted leases until {grace_ms} ms from now ({}); \
             granting nothing until then",
            path.display()
        );
        config.table.startup_grace_ms = grace_ms;
    }
    Ok(Some(file))
}

/// The node's data directory (`fsync`, `os`), opened and locked; `None` for `memory`.
fn open_data_dir(config: &ClusterConfig) -> io::Result<Option<DataDir>> {
    match (&config.data_dir, config.durability) {
        (Some(path), Durability::Fsync | Durability::Os) => {
            let sync = config.durability == Durability::Fsync;
            let boot_id = storage::current_boot_id();
            DataDir::open(path, &config.identity(), sync, boot_id.as_deref()).map(Some)
        }
        _ => Ok(None),
    }
}

/// The keys a node starts with (spec §8.11): its key file's (read now: a bad one refuses the
/// start), its configuration's, or none. Says which in the log, and says loudly when peer
/// traffic is not authenticated.
fn open_keys(config: &ClusterConfig) -> io::Result<(Option<KeyFileWatch>, KeySet)> {
    let (watch, keys, from) = match (&config.key_file, &config.keys) {
        (Some(path), _) => {
            let (watch, keys) =
                KeyFileWatch::open(path).map_err(|e| invalid(Some(e.to_string())))?;
            let from = format!(" (from {})", path.display());
            (Some(watch), keys, from)
        }
        (None, Some(keys)) => (None, keys.clone(), String::new()),
        (None, None) => (None, KeySet::unauthenticated(), String::new()),
    };
    let id = config.node_id;
    if config.is_single() && config.keys.is_some() && config.key_file.is_none() {
        // The single node (`ClusterConfig::single`): no peer traffic to authenticate.
    } else if config.keys.is_none() && config.key_file.is_none() {
        log::warn!(
            "udplock node {id}: peer traffic is NOT authenticated (no cluster key): any host \
             that can send this node UDP can forge node-to-node datagrams and make two \
             clients hold one lock. Give every node the same key: udplock keygen FILE, then \
             --cluster-key-file FILE (README, \"Securing a cluster\")."
        );
    } else {
        log_keys(id, &keys, &from);
    }
    Ok((watch, keys))
}

/// One line naming the keys in force (key ids, never key bytes); a warning when they let
/// unauthenticated datagrams in or out.
pub(crate) fn log_keys(id: NodeId, set: &KeySet, from: &str) {
    if set.is_authenticated() {
        log::info!(
            target: keys::LOG_TARGET,
            "udplock node {id}: cluster keys{from}: {}",
            set.describe()
        );
    } else {
        log::warn!(
            target: keys::LOG_TARGET,
            "udplock node {id}: cluster keys{from}: {}: unauthenticated peer datagrams are \
             {} (fine while turning keys on or off, step by step; until then any host that \
             can send this node UDP can forge them)",
            set.describe(),
            if set.send().is_none() {
                "sent and accepted"
            } else {
                "accepted"
            }
        );
    }
}

fn invalid(reason: Option<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        reason.unwrap_or_else(|| "invalid cluster configuration".into()),
    )
}

/// Starts `nodes` cluster nodes in this process on loopback ports (each its own thread and
/// socket), in `memory` mode: what `udplock dev` and the embedded benchmark run. It is always
/// a new cluster: every node starts new (`new_cluster`), and the shards start once every node
/// has heard from every other (spec §8.5 rule 6), a round trip after the last node starts.
/// Its nodes share the template's keys or key file; without either, a new random key
/// (`Some(KeySet::unauthenticated())` runs it without keys).
pub fn start_local_cluster(nodes: usize, template: &ClusterConfig) -> io::Result<Vec<ClusterNode>> {
    let keys = match (&template.keys, &template.key_file) {
        (None, None) => Some(keys::random_key_set()),
        (keys, _) => keys.clone(),
    };
    let sockets = (0..nodes)
        .map(|_| bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<io::Result<Vec<_>>>()?;
    let peers = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| Ok((i as NodeId + 1, s.local_addr()?)))
        .collect::<io::Result<Vec<_>>>()?;
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let config = ClusterConfig {
                node_id: i as NodeId + 1,
                peers: peers.clone(),
                new_cluster: true,
                keys: keys.clone(),
                ..template.clone()
            };
            ClusterNode::start_on(socket, config)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_id_is_the_specs_example() {
        let peers = (1..=3)
            .rev()
            .map(|id| (id, SocketAddr::from(([127, 0, 0, 1], 7100 + id as u16))))
            .collect();
        // spec §8.1, computed independently of this crate (default limits).
        let config = ClusterConfig::new(2, peers);
        assert_eq!(config.cluster_id(), 0x44DB_5B3E_2CA8_089A);
        assert_eq!(config.identity().membership_id, 0x0217_7EB5_B0C8_F755);
        // Different limits: another cluster (their replicas would decide differently).
        let mut other = config.clone();
        other.table.ttl_ms_max -= 1;
        assert_ne!(other.cluster_id(), config.cluster_id());
        // The settings the leader logs may differ (spec §8.8): the same cluster.
        let mut logged = config.clone();
        logged.table.ttl_default_ms += 1;
        logged.table.retry_after_ms += 1;
        logged.table.startup_grace_ms += 1;
        assert_eq!(logged.cluster_id(), config.cluster_id());
    }
}
