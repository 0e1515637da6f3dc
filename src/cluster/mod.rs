//! A node of a replicated cluster: the IO shell around one [`Shard`] core per shard.
//!
//! Every node runs a replica of every shard (static membership, `--peers`). One event-loop
//! thread owns the node's single UDP socket, which carries both client requests and PEER
//! datagrams (spec §"Node-to-node protocol"), and all of the node's shard replicas. For each
//! datagram it:
//!
//! 1. tells PEER datagrams from client requests by the message type;
//! 2. PEER: checks the cluster id and the sender, and hands each record to its shard;
//!    client request: computes the resource's shard ([`shard_of`]) and hands the request to
//!    that shard's replica, which proposes it (leader), answers it from its lease (STATUS),
//!    or refuses it, which the loop turns into NOT_LEADER with the leader's address as hint;
//! 3. flushes: for every shard the datagram touched, persists its Raft state (per
//!    `--durability`, [`storage`]), then packs every Raft message bound for the same peer —
//!    of all shards — into as few PEER datagrams as fit, sends them, and sends the shards'
//!    client replies.
//!
//! Timers: the loop keeps each shard's next deadline and blocks in `recv_from` until the
//! earliest, so an idle node sleeps. No protocol decision is taken here; every rule lives in
//! the cores and the codec.
//!
//! # Durability and restarts
//!
//! `fsync` and `os` keep every shard's Raft log, vote and snapshot in `--data-dir` (see
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

pub mod keys;
pub mod settings;
pub mod storage;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use udplock_protocol::{
    shard_of, AuthTrailer, Hint, MessageType, PeerDatagram, PeerHeader, PeerWriter, Reply, Request,
    Status, APPEND_FIXED_LEN, DATAGRAM_LEN_MAX, HEADER_LEN, PEER_DATAGRAM_LEN_MAX,
    PEER_RECORD_HEADER_LEN, REPLY_LEN_MIN, REQUEST_LEN_MIN, SHARDS_MAX,
};

use self::keys::{KeyFileCheck, KeyFileWatch, KeySet};
use self::storage::{DataDir, Durability, ShardFiles, ShardStore};
use crate::clock::BootInstant;
use crate::core::lock_table::{self, Command};
use crate::core::peer_auth::{AuthDrop, PeerAuth};
use crate::core::raft::{self, wire, Message, NodeId};
use crate::core::restart::{self, Boot, Found, Mark, Start};
use crate::core::shard::{self, Shard, ShardStats};
use crate::core::time::Instant;
use crate::node::{
    bind, encode_reply, error_reply, fencing_token_first_from_wall_clock, recv_error_is_transient,
    reply_type, table_request, wall_clock_micros, NodeStats, ReadTimer,
};

/// Shards of a cluster unless `--shards` says otherwise: enough that leaders spread evenly
/// over a handful of nodes, few enough that idle shards cost little.
pub const SHARDS_DEFAULT: u32 = 64;

/// Datagrams handled between two flushes at most: bounds how long the first one's answer
/// waits behind the others.
const DRAIN_MAX: usize = 64;

/// Wake-ups that skip draining after a drain found nothing.
const DRAIN_SKIP: u8 = 7;

/// How often a node whose shards still ask the others before they take part (spec §8.5)
/// says so in its log, naming who answered what: often enough that an operator waiting for
/// a cluster to form sees why it does not, seldom enough not to flood.
const RECOVERY_LOG_PERIOD: crate::core::time::Duration =
    crate::core::time::Duration::from_millis(10_000);

/// How often a node that dropped node-to-node datagrams for failing the authentication
/// checks (spec §8.11) says so in its log, with a count per reason and source: often enough
/// that an operator sees an attack or a node with the wrong key within seconds, seldom
/// enough that a flood of forgeries costs one line per period, never one per datagram.
pub const AUTH_DROP_LOG_PERIOD: crate::core::time::Duration =
    crate::core::time::Duration::from_millis(10_000);

/// How often the loop publishes its shards' state for [`ClusterNode::shard_stats`].
const STATS_PERIOD: crate::core::time::Duration = crate::core::time::Duration::from_millis(5);

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
    pub durability: Durability,
    /// Where `fsync` and `os` keep their files.
    pub data_dir: Option<PathBuf>,
    /// Pin the event-loop thread to this CPU.
    pub cpu: Option<usize>,
    /// Snapshot cadence of every shard replica (see `core::shard`): a snapshot every
    /// `compact_every` applied entries (0: never), the log dropped up to it `compact_keep`
    /// entries later.
    pub compact_every: u64,
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
            durability: Durability::Memory,
            data_dir: None,
            cpu: None,
            compact_every: shard::COMPACT_EVERY_DEFAULT,
            compact_keep: shard::COMPACT_KEEP_DEFAULT,
            new_cluster: false,
            keys: None,
            key_file: None,
        }
    }

    /// The address this node listens on.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.peers
            .iter()
            .find(|&&(id, _)| id == self.node_id)
            .map(|&(_, addr)| addr)
    }

    /// Identifies the cluster in every PEER datagram (spec §8.1), so nodes of two clusters
    /// that share addresses never mix, and nodes whose lock tables would decide differently
    /// never form one: the shard hash of the sorted node list, the shard count and the
    /// lock-table limits every replica must share, written
    /// `1@127.0.0.1:7101,2@127.0.0.1:7102/64/limits` (see [`ClusterConfig::limits_text`]).
    /// The settings a leader logs (default TTL, retry-after hint, startup grace; spec §8.8)
    /// are not in it: nodes may differ in them.
    pub fn cluster_id(&self) -> u64 {
        let text = format!("{}/{}", self.membership(), self.limits_text());
        udplock_protocol::shard_hash(text.as_bytes()).max(1)
    }

    /// Who is in the cluster (spec §8.1): its nodes sorted by id, `/`, its shard count —
    /// `1@127.0.0.1:7101,2@127.0.0.1:7102/64`. What a data directory records (with the node
    /// id), since a node's Raft state belongs to one node of one membership, whatever the
    /// other settings.
    pub fn membership(&self) -> String {
        format!("{}/{}", self.nodes_text(), self.shards)
    }

    /// The node list sorted by id, as the spec writes it (§8.1): `1@127.0.0.1:7101,2@…`.
    pub fn nodes_text(&self) -> String {
        let mut peers = self.peers.clone();
        peers.sort();
        let nodes: Vec<String> = peers
            .iter()
            .map(|(id, addr)| format!("{id}@{addr}"))
            .collect();
        nodes.join(",")
    }

    /// What this node's data directory must record (see [`storage::DataDir`]).
    pub fn identity(&self) -> storage::Identity {
        let membership = self.membership();
        storage::Identity {
            membership_id: udplock_protocol::shard_hash(membership.as_bytes()).max(1),
            membership,
            node: self.node_id,
        }
    }

    /// The lock-table settings that decide outcomes and that every replica reads itself,
    /// in the spec's order (§8.1): replicas that differ in any would apply the same log
    /// differently, so they must be identical.
    pub fn limits_text(&self) -> String {
        let t = &self.table;
        format!(
            "{},{},{},{},{},{},{},{},{}",
            t.resources_max,
            t.waiters_per_resource_max,
            t.waiters_max,
            t.holds_per_lock_max,
            t.sessions_max,
            t.answers_per_session_max,
            t.session_idle_ms,
            t.ttl_ms_max,
            t.wait_ms_max
        )
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(format!("shards must be 1..={SHARDS_MAX}"));
        }
        if self.node_id == 0 || self.peers.iter().any(|&(id, _)| id == 0) {
            return Err("node ids must be greater than zero".into());
        }
        if self.listen().is_none() {
            return Err(format!("node id {} is not in the peer list", self.node_id));
        }
        for (i, &(id, addr)) in self.peers.iter().enumerate() {
            if self.peers[..i]
                .iter()
                .any(|&(other, a)| other == id || a == addr)
            {
                return Err(format!("peer {id}@{addr} is listed twice"));
            }
        }
        if self.keys.is_some() && self.key_file.is_some() {
            return Err("keys and a key file: name one (the key file is read at start)".into());
        }
        if self.durability != Durability::Memory && self.data_dir.is_none() {
            return Err(format!(
                "durability {} needs a data directory",
                self.durability.name()
            ));
        }
        self.shard_config(0).validate().map_err(|e| e.to_string())
    }

    /// The node that should lead `shard` when it is up: the nodes by id, in turn, so
    /// leaders spread evenly (each shard's leader hands over to it, see
    /// [`Shard::set_preferred_leader`]).
    pub fn preferred_leader(&self, shard: u32) -> NodeId {
        let mut ids: Vec<NodeId> = self.peers.iter().map(|&(id, _)| id).collect();
        ids.sort_unstable();
        ids[shard as usize % ids.len()]
    }

    fn shard_config(&self, shard: u32) -> shard::Config {
        shard::Config {
            shard,
            raft: raft::Config {
                id: self.node_id,
                voters: self.peers.iter().map(|&(id, _)| id).collect(),
                // One Append always fits one PEER datagram, with room for the trailer of
                // an authenticated one (spec §8.11) whether or not this node sends with a
                // key: keys change while it runs.
                // One snapshot chunk fits one PEER datagram too.
                snapshot_chunk_max: udplock_protocol::SNAPSHOT_CHUNK_MAX,
                append_bytes_max: PEER_DATAGRAM_LEN_MAX
                    - HEADER_LEN
                    - PEER_RECORD_HEADER_LEN
                    - APPEND_FIXED_LEN
                    - udplock_protocol::AUTH_TRAILER_LEN,
                ..self.raft.clone()
            },
            table: self.table.clone(),
        }
    }
}

/// A running cluster node. Dropping it stops the node.
pub struct ClusterNode {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Asks the loop to hand every shard it leads to another node (graceful leave).
    leaving: Arc<AtomicBool>,
    stats: Arc<NodeStats>,
    shard_stats: Arc<Mutex<Vec<ShardStats>>>,
    /// What this node last heard of each peer's settings (spec §8.10).
    peer_settings: Arc<Mutex<BTreeMap<NodeId, settings::PeerSettingsView>>>,
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
        let socket = bind(listen)?;
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
        config: ClusterConfig,
        mut dir: Option<DataDir>,
    ) -> io::Result<ClusterNode> {
        let local_addr = socket.local_addr()?;
        let (key_watch, keys) = open_keys(&config)?;
        let epoch = BootInstant::now();
        let sync = config.durability == Durability::Fsync;
        // Spec §8.5: what each shard's storage holds decides how its replica starts.
        let storage_new = dir.as_ref().is_none_or(DataDir::is_new);
        let boot = dir.as_ref().map_or(Boot::Kept, DataDir::boot);
        let mut starts = Vec::with_capacity(config.shards as usize);
        let mut stores = Vec::with_capacity(config.shards as usize);
        for shard in 0..config.shards {
            let (found, store) = match &dir {
                None => (Found::Nothing, None),
                Some(d) => match d.shard_files(shard) {
                    ShardFiles::Marked(mark) => (Found::Marked(mark), None),
                    ShardFiles::Missing => (Found::Nothing, None),
                    // Not trusted, so not read (`decide` ignores what was found).
                    ShardFiles::Present if boot == Boot::Changed => (Found::Nothing, None),
                    ShardFiles::Present => {
                        let (store, p) = ShardStore::open(d.path(), shard, sync)?;
                        let found = Found::Files {
                            hard: p.hard,
                            snapshot: p.snapshot,
                            log: p.log,
                        };
                        (found, Some(store))
                    }
                },
            };
            starts.push(restart::decide(
                found,
                storage_new,
                config.new_cluster,
                boot,
            ));
            stores.push(store);
        }
        let marks: Vec<Option<Mark>> = starts.iter().map(Start::mark).collect();
        if let Some(d) = dir.as_mut() {
            // The marks first: from here on a crash makes the next start rejoin again.
            let set: Vec<(u32, Option<Mark>)> = (0..config.shards)
                .filter(|&s| marks[s as usize].is_some())
                .map(|s| (s, marks[s as usize]))
                .collect();
            d.set_marks(&set)?;
            d.record_identity(&config.identity())?;
            d.record_boot()?;
            for (shard, store) in stores.iter_mut().enumerate() {
                if marks[shard].is_some() {
                    *store = Some(ShardStore::open_empty(d.path(), shard as u32, sync)?);
                }
            }
        }
        log_start(&config, dir.as_ref(), storage_new, &starts);
        let mut shards = Vec::with_capacity(config.shards as usize);
        // One budget per node for what peers can make its shards hold or log (issue 8).
        let shared = raft::NodeShared::new();
        for (shard, start) in (0..config.shards).zip(starts) {
            let seed = rand::random::<u64>() ^ u64::from(shard);
            let mut replica = Shard::start(config.shard_config(shard), seed, start, Instant::ZERO)
                .map_err(|e| invalid(Some(format!("shard {shard}: {e}"))))?;
            replica.share(shared.clone());
            replica.set_preferred_leader(Some(config.preferred_leader(shard)));
            replica.set_compaction(config.compact_every, config.compact_keep);
            shards.push(replica);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(NodeStats::default());
        let shard_stats = Arc::new(Mutex::new(Vec::new()));
        let peer_settings = Arc::new(Mutex::new(BTreeMap::new()));
        let shared_keys = Arc::new(Mutex::new(keys.clone()));
        // Spec §8.11: a number this node never used before, so that its peers tell its
        // datagrams from those of its earlier lives (raised if a peer shows the clock went
        // back).
        let incarnation = wall_clock_micros().max(1);
        let event_loop = ClusterLoop {
            auth: PeerAuth::new(
                config.node_id,
                incarnation,
                config.peers.iter().map(|&(id, _)| id),
                keys,
            ),
            key_watch,
            keys: shared_keys.clone(),
            auth_drops: BTreeMap::new(),
            auth_drops_since: Instant::ZERO,
            settings: settings::PeerSettingsLog::new(&config, peer_settings.clone(), &shared),
            settings_next: Instant::ZERO,
            node_id: config.node_id,
            cluster_id: config.cluster_id(),
            addr_of: config.peers.iter().copied().collect(),
            socket,
            deadlines: shards.iter().map(Shard::poll_timeout).collect(),
            // Every shard, so the first flush sends what starting produced (a recovering
            // replica's first TermQuery).
            touched: vec![true; shards.len()],
            touched_list: (0..shards.len() as u32).collect(),
            shards,
            stores,
            dir,
            marks,
            recovery_logged: Instant::ZERO,
            stats: stats.clone(),
            shard_stats: shard_stats.clone(),
            stats_published: Instant::ZERO,
            epoch,
            read_timer: ReadTimer::default(),
            out: [0; PEER_DATAGRAM_LEN_MAX],
            outgoing: Vec::new(),
            failed: None,
            leaving: false,
            drain_skips: 0,
        };
        let leaving = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let leaving = leaving.clone();
            let cpu = config.cpu;
            std::thread::Builder::new()
                .name(format!("udplock-node-{}", config.node_id))
                .spawn(move || {
                    if let Some(id) = cpu {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                            log::warn!("udplock node: could not pin the event loop to CPU {id}");
                        }
                    }
                    event_loop.run(&stop, &leaving)
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
            local_addr,
            stop,
            leaving,
            stats,
            shard_stats,
            peer_settings,
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
    pub fn peer_settings(&self) -> BTreeMap<NodeId, settings::PeerSettingsView> {
        self.peer_settings
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

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

    /// Leaves gracefully: hands every shard this node leads to an up-to-date peer
    /// (leadership transfer, thesis §3.10), waits until it leads none or `within` passes,
    /// then stops. Clients see a redirect instead of an election timeout. Returns how many
    /// shards it still led when it stopped (0: all handed over).
    pub fn leave(mut self, within: StdDuration) -> usize {
        self.leaving.store(true, Ordering::Release);
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
fn log_start(config: &ClusterConfig, dir: Option<&DataDir>, storage_new: bool, starts: &[Start]) {
    let id = config.node_id;
    let total = starts.len();
    let rejoin = starts.iter().filter(|s| matches!(s, Start::Rejoin)).count();
    let new = starts.iter().filter(|s| matches!(s, Start::New)).count();
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
    if new > 0 {
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
    if config.keys.is_none() && config.key_file.is_none() {
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
fn log_keys(id: NodeId, set: &KeySet, from: &str) {
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

/// The loop's state.
struct ClusterLoop {
    /// Seals every node-to-node datagram sent, and checks every one received before any
    /// shard or settings state sees it (spec §8.11).
    auth: PeerAuth,
    /// The key file, checked for changes (`None`: keys fixed at start).
    key_watch: Option<KeyFileWatch>,
    /// The keys in force, for [`ClusterNode::keys`].
    keys: Arc<Mutex<KeySet>>,
    /// Datagrams dropped by the authentication checks since `auth_drops_since`, per reason
    /// and source, for the next log line ([`AUTH_DROP_LOG_PERIOD`]). Sources are listed
    /// nodes' addresses (checked before), so it holds at most 8 entries per peer.
    auth_drops: BTreeMap<(AuthDrop, SocketAddr), u64>,
    auth_drops_since: Instant,
    node_id: NodeId,
    cluster_id: u64,
    addr_of: HashMap<NodeId, SocketAddr>,
    socket: UdpSocket,
    shards: Vec<Shard>,
    stores: Vec<Option<ShardStore>>,
    /// The data directory (`fsync`, `os`), locked while the loop runs.
    dir: Option<DataDir>,
    /// The recovery mark each shard's storage carries (see `core::restart`).
    marks: Vec<Option<Mark>>,
    /// When the loop last said which shards still ask the others before taking part.
    recovery_logged: Instant,
    /// The settings exchange (spec §8.10), and when this node next sends its own.
    settings: settings::PeerSettingsLog,
    settings_next: Instant,
    /// Each shard's `poll_timeout`, refreshed whenever the shard is touched.
    deadlines: Vec<Instant>,
    /// Shards an input touched since the last flush (flag per shard, and their list).
    touched: Vec<bool>,
    touched_list: Vec<u32>,
    stats: Arc<NodeStats>,
    shard_stats: Arc<Mutex<Vec<ShardStats>>>,
    stats_published: Instant,
    /// On the suspend-aware clock (`crate::clock`): Raft leases and lock leases must count
    /// while the machine sleeps.
    epoch: BootInstant,
    read_timer: ReadTimer,
    out: [u8; PEER_DATAGRAM_LEN_MAX],
    /// Set when the node must stop (it could not persist).
    failed: Option<String>,
    /// Handing its shards over before it stops.
    leaving: bool,
    /// Wake-ups left that do not drain the socket (see `drain_socket`).
    drain_skips: u8,
    /// Raft messages drained in one flush: (peer, shard, message).
    outgoing: Vec<(NodeId, u16, Message)>,
}

impl ClusterLoop {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn run(mut self, stop: &AtomicBool, leaving: &AtomicBool) -> Result<(), String> {
        // Room for the largest datagram of either kind, plus one byte to see oversized ones.
        let mut buf = vec![0u8; PEER_DATAGRAM_LEN_MAX.max(DATAGRAM_LEN_MAX) + 1];
        while !stop.load(Ordering::Acquire) {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            let now = self.now();
            if leaving.load(Ordering::Relaxed) {
                if !self.leaving {
                    self.leaving = true;
                    for replica in &mut self.shards {
                        replica.set_leaving();
                    }
                }
                self.hand_over(now);
            }
            for shard in 0..self.shards.len() {
                if self.deadlines[shard] <= now {
                    self.shards[shard].handle_timeout(now);
                    self.touch(shard as u32);
                }
            }
            self.flush();
            self.publish_stats(now);
            self.log_recovery(now);
            self.send_settings(now);
            self.check_key_file(now);
            self.log_auth_drops(now);
            let next = self
                .deadlines
                .iter()
                .copied()
                .min()
                .map(|d| d.min(self.settings_next))
                .map(|d| match &self.key_watch {
                    Some(w) => d.min(w.next_check()),
                    None => d,
                });
            let now = self.now();
            self.read_timer.arm(&self.socket, next, now);
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    NodeStats::bump(&self.stats.datagrams);
                    self.handle_datagram(&buf[..len], from);
                    self.drain_socket(&mut buf);
                    self.flush();
                }
                Err(e) if recv_error_is_transient(&e) => {}
                Err(e) => {
                    log::error!("udplock node: recv failed: {e}; retrying");
                    std::thread::sleep(StdDuration::from_millis(1));
                }
            }
        }
        Ok(())
    }

    /// Handles whatever else already waits on the socket (up to [`DRAIN_MAX`]) before the
    /// flush, so that under load many proposals travel in one Append and many answers in one
    /// PEER datagram (batching); when idle it costs one `recv` that finds nothing.
    ///
    /// Draining costs three system calls, wasted when nothing waits (one request at a time),
    /// so after a drain that found nothing the next [`DRAIN_SKIP`] wake-ups do not try.
    fn drain_socket(&mut self, buf: &mut [u8]) {
        if self.drain_skips > 0 {
            self.drain_skips -= 1;
            return;
        }
        if self.socket.set_nonblocking(true).is_err() {
            return;
        }
        let mut found = 0;
        for _ in 0..DRAIN_MAX {
            match self.socket.recv_from(buf) {
                Ok((len, from)) => {
                    found += 1;
                    NodeStats::bump(&self.stats.datagrams);
                    self.handle_datagram(&buf[..len], from);
                }
                Err(_) => break,
            }
        }
        let _ = self.socket.set_nonblocking(false);
        if found == 0 {
            self.drain_skips = DRAIN_SKIP;
        }
    }

    /// Graceful leave: each shard this node leads goes to the first peer (after this node,
    /// by id) that is up to date. Called on every loop turn while leaving; Raft ignores a
    /// second transfer while one runs.
    fn hand_over(&mut self, now: Instant) {
        let mut peers: Vec<NodeId> = self.addr_of.keys().copied().collect();
        peers.sort_unstable();
        let first_after = peers.iter().position(|&id| id > self.node_id).unwrap_or(0);
        peers.rotate_left(first_after);
        for shard in 0..self.shards.len() {
            let replica = &mut self.shards[shard];
            if replica.raft().role() != raft::Role::Leader
                || replica.raft().transferring_to().is_some()
            {
                continue;
            }
            let target = peers
                .iter()
                .copied()
                .find(|&id| id != self.node_id && replica.raft().follower_caught_up(id, now));
            if let Some(target) = target {
                let _ = replica.transfer_leadership(now, target);
                self.touch(shard as u32);
            }
        }
    }

    fn touch(&mut self, shard: u32) {
        if !self.touched[shard as usize] {
            self.touched[shard as usize] = true;
            self.touched_list.push(shard);
        }
    }

    fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let msg_type = datagram
            .get(udplock_protocol::header::field::MSG_TYPE)
            .copied();
        if msg_type == Some(MessageType::Peer.to_wire()) {
            return self.handle_peer(datagram, from);
        }
        if msg_type == Some(MessageType::PeerSettings.to_wire()) {
            return self.handle_peer_settings(datagram, from);
        }
        if datagram.len() > DATAGRAM_LEN_MAX {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        // Read-only, answered by any node from its own view; the lock-request decoder does
        // not read it (spec §4.7, §8.9).
        if msg_type == Some(MessageType::ShardStatus.to_wire()) {
            return self.answer_shard_status(datagram, from);
        }
        if msg_type == Some(MessageType::NodeSettings.to_wire()) {
            return self.answer_node_settings(datagram, from);
        }
        let request = match Request::decode(datagram) {
            Ok(r) => r,
            Err(e) => return self.answer_undecodable(datagram, e, from),
        };
        // Spec §2.2: a request shorter than the smallest reply is never answered.
        if datagram.len() < REQUEST_LEN_MIN {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        NodeStats::bump(&self.stats.requests);
        let table_request = table_request(&request, from, datagram.len());
        let resource = match table_request.command {
            Command::Acquire { resource, .. }
            | Command::Release { resource, .. }
            | Command::Renew { resource, .. }
            | Command::Status { resource, .. }
            | Command::Configure { resource, .. } => resource,
        };
        let shard = shard_of(resource, self.shards.len() as u32);
        let now = self.now();
        let kind = table_request.command.kind();
        match self.shards[shard as usize].handle_request(now, table_request) {
            Ok(()) => self.touch(shard),
            Err(not_leader) => {
                // Not remembered: the client resends the same request to the leader.
                let hint = not_leader
                    .leader_hint
                    .and_then(|id| self.addr_of.get(&id).copied())
                    .map_or(Hint::None, Hint::Leader);
                let reply = Reply {
                    hint,
                    ..Reply::bare(
                        reply_type(kind),
                        request.session_id,
                        request.request_id,
                        request.attempt,
                        Status::NotLeader,
                    )
                };
                let mut out = [0u8; REPLY_LEN_MIN];
                if let Ok(len) = reply.encode(&mut out) {
                    self.send(&out[..len], from);
                }
            }
        }
    }

    /// Spec §3.2: an ERROR_REPLY if the codec names a status for the fault and the reply
    /// fits in the request; otherwise a silent drop.
    fn answer_undecodable(
        &self,
        datagram: &[u8],
        error: udplock_protocol::DecodeError,
        from: SocketAddr,
    ) {
        let mut out = [0u8; REPLY_LEN_MIN];
        match error_reply(datagram, error, &mut out) {
            Some(len) => {
                NodeStats::bump(&self.stats.error_replies);
                self.send(&out[..len], from);
            }
            None => NodeStats::bump(&self.stats.dropped),
        }
    }

    /// SHARD_STATUS (spec §4.7, §8.9): this node's own view of its shards from `first_shard`
    /// on, as many as fit in a reply no longer than the request (§2.2). Touches no shard,
    /// logs and remembers nothing; a follower answers as readily as a leader.
    fn answer_shard_status(&mut self, datagram: &[u8], from: SocketAddr) {
        use crate::core::raft::Role;
        use udplock_protocol::{
            ShardRole, ShardStatusEntries, ShardStatusEntry, ShardStatusReply, ShardStatusRequest,
        };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let request = match ShardStatusRequest::decode(datagram) {
            Ok(r) => r,
            Err(e) => return self.answer_undecodable(datagram, e, from),
        };
        if datagram.len() < REQUEST_LEN_MIN {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        NodeStats::bump(&self.stats.requests);
        let fit = ShardStatusReply::entries_that_fit(datagram.len());
        let entries: Vec<ShardStatusEntry> = self
            .shards
            .iter()
            .enumerate()
            .skip(usize::from(request.first_shard))
            .take(fit)
            .map(|(shard, replica)| {
                let stats = replica.stats();
                ShardStatusEntry {
                    // ClusterConfig::validate keeps shards below SHARDS_MAX (4096).
                    shard: shard as u16,
                    role: match stats.role {
                        Some(Role::Leader) => ShardRole::Leader,
                        Some(Role::Candidate) => ShardRole::Candidate,
                        Some(Role::PreCandidate) => ShardRole::PreCandidate,
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
        let reply = ShardStatusReply {
            session_id: request.session_id,
            request_id: request.request_id,
            attempt: request.attempt,
            status: Status::Ok,
            node_id: self.node_id,
            shards_total: self.shards.len() as u16,
            first_shard: request.first_shard,
            entries: ShardStatusEntries::from_slice(&entries),
        };
        match reply.encode(&mut out) {
            Ok(len) => {
                assert!(
                    len <= datagram.len(),
                    "shard status reply larger than request"
                );
                self.send(&out[..len], from);
            }
            Err(e) => log::error!("udplock node: shard status reply did not encode: {e}"),
        }
    }

    /// Spec §8.10: every `SETTINGS_PERIOD`, this node's settings to every other node.
    fn send_settings(&mut self, now: Instant) {
        if now < self.settings_next {
            return;
        }
        self.settings_next = now + settings::SETTINGS_PERIOD;
        let mut peers: Vec<(NodeId, SocketAddr)> =
            self.addr_of.iter().map(|(&id, &a)| (id, a)).collect();
        peers.sort_unstable();
        for (id, addr) in peers {
            if id == self.node_id {
                continue;
            }
            // Encoded for each peer: each gets its own trailer (spec §8.11).
            let datagram = udplock_protocol::PeerSettings {
                header: PeerHeader {
                    cluster_id: self.cluster_id,
                    from: self.node_id,
                },
                auth: None,
                values: udplock_protocol::SettingValues::from_slice(self.settings.own()),
            };
            let room = self.auth.trailer_room(id);
            let end = self.out.len() - room;
            let len = match datagram.encode(&mut self.out[..end]) {
                Ok(len) => len,
                Err(e) => return log::error!("udplock node: settings did not encode: {e}"),
            };
            self.send_peer(id, len, addr);
        }
    }

    /// Spec §8.10: a peer's settings, heard only from a listed node at its listed address;
    /// never answered, and nothing but this node's report of them changes.
    fn handle_peer_settings(&mut self, datagram: &[u8], source: SocketAddr) {
        let Ok(p) = udplock_protocol::PeerSettings::decode(datagram) else {
            NodeStats::bump(&self.stats.dropped);
            return;
        };
        let from = p.header.from;
        if from == self.node_id || self.addr_of.get(&from) != Some(&source) {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        if !self.authenticated(from, datagram, p.auth.as_ref(), source) {
            return;
        }
        let now = self.now();
        self.settings.heard(now, from, source, &p);
    }

    /// NODE_SETTINGS (spec §4.8, §5.7): this node's cluster id and settings, as many as fit
    /// in a reply no longer than the request (§2.2). Changes nothing.
    fn answer_node_settings(&mut self, datagram: &[u8], from: SocketAddr) {
        use udplock_protocol::{NodeSettingsReply, NodeSettingsRequest, SettingValues};
        let request = match NodeSettingsRequest::decode(datagram) {
            Ok(r) => r,
            Err(e) => return self.answer_undecodable(datagram, e, from),
        };
        if datagram.len() < REQUEST_LEN_MIN {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        NodeStats::bump(&self.stats.requests);
        let own = self.settings.own();
        let fit = NodeSettingsReply::entries_that_fit(datagram.len()).min(own.len());
        let reply = NodeSettingsReply {
            session_id: request.session_id,
            request_id: request.request_id,
            attempt: request.attempt,
            status: Status::Ok,
            node_id: self.node_id,
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
                self.send(&out[..len], from);
            }
            Err(e) => log::error!("udplock node: node settings reply did not encode: {e}"),
        }
    }

    fn handle_peer(&mut self, datagram: &[u8], source: SocketAddr) {
        let Ok(peer) = PeerDatagram::decode(datagram) else {
            NodeStats::bump(&self.stats.dropped);
            return;
        };
        let PeerHeader { cluster_id, from } = peer.header;
        // The sender must be a listed node and the datagram must come from its listed
        // address: a peer that is not in the list cannot speak for one that is.
        if cluster_id != self.cluster_id
            || from == self.node_id
            || self.addr_of.get(&from) != Some(&source)
        {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        // Spec §8.11: nothing of a datagram that fails the checks reaches a shard.
        if !self.authenticated(from, datagram, peer.auth.as_ref(), source) {
            return;
        }
        NodeStats::bump(&self.stats.peer_received);
        let now = self.now();
        for (shard, record) in peer.records() {
            let Some(replica) = self.shards.get_mut(usize::from(shard)) else {
                continue;
            };
            replica.handle_message(now, from, wire::from_wire(&record));
            self.touch(u32::from(shard));
        }
    }

    /// Persists every touched shard, then sends its Raft messages (packed per peer) and its
    /// client replies (each already sized against its own request by the shard, spec §2.2).
    fn flush(&mut self) {
        if self.touched_list.is_empty() {
            return;
        }
        let touched = std::mem::take(&mut self.touched_list);
        let mut replies = Vec::new();
        for &shard in &touched {
            let s = shard as usize;
            self.touched[s] = false;
            if self.shards[s].wants_wall_clock() {
                // A new leader of an empty log: INIT's first token is the wall clock now,
                // read here because the core has no clock (spec §8.8).
                let now = self.now();
                self.shards[s].propose_init(now, fencing_token_first_from_wall_clock());
            }
            // A replica's recovery mark (see `core::restart`) goes down before the state it
            // covers is written, and comes off only after the recovered state is.
            let mark = restart::mark(self.shards[s].raft());
            if mark > self.marks[s] {
                if let Err(e) = self.set_mark(shard, mark) {
                    return self.fail_stop(s, format!("shard {shard}: cannot mark it: {e}"));
                }
            }
            // Without a store (`memory`) the delta is never taken: it costs nothing then.
            if let Some(store) = self.stores[s].as_mut() {
                let persist = self.shards[s].take_persist();
                if let Err(e) = persist.map_or(Ok(()), |p| store.write(&p)) {
                    return self.fail_stop(
                        s,
                        format!("shard {shard}: cannot persist the Raft log: {e}"),
                    );
                }
            }
            if mark < self.marks[s] {
                if let Err(e) = self.set_mark(shard, mark) {
                    return self.fail_stop(s, format!("shard {shard}: cannot unmark it: {e}"));
                }
            }
            while let Some((to, msg)) = self.shards[s].poll_message() {
                self.outgoing.push((to, shard as u16, msg));
            }
            while let Some(reply) = self.shards[s].poll_reply() {
                replies.push(reply);
            }
            self.deadlines[s] = self.shards[s].poll_timeout();
        }
        self.touched_list = touched;
        self.touched_list.clear();
        self.send_peer_messages();
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        for r in &replies {
            match encode_reply(r, &mut out) {
                Ok(len) => {
                    NodeStats::bump(&self.stats.replies);
                    let _ = self.socket.send_to(&out[..len], r.to);
                }
                Err(e) => log::error!("udplock node: reply did not encode: {e}"),
            }
        }
    }

    /// Nothing the current input produced may leave. Raft's state in memory is already ahead
    /// of the disk (a leader counts its own log toward a majority), so going on could
    /// acknowledge what a crash would lose: stop instead (fail-stop), like a crash the
    /// cluster already survives.
    fn fail_stop(&mut self, s: usize, why: String) {
        let why = format!("{why}; stopping");
        log::error!("udplock node: {why}");
        while self.shards[s].poll_message().is_some() {}
        while self.shards[s].poll_reply().is_some() {}
        self.failed = Some(why);
        self.outgoing.clear();
        self.touched_list.clear();
        self.touched.fill(false);
    }

    fn set_mark(&mut self, shard: u32, mark: Option<Mark>) -> io::Result<()> {
        if let Some(dir) = &self.dir {
            dir.set_marks(&[(shard, mark)])?;
        }
        self.marks[shard as usize] = mark;
        Ok(())
    }

    /// Every [`RECOVERY_LOG_PERIOD`] while some shard still asks the other nodes before it
    /// takes part (spec §8.5): how many, and what the others answered the first of them.
    fn log_recovery(&mut self, now: Instant) {
        if now < self.recovery_logged + RECOVERY_LOG_PERIOD {
            return;
        }
        // Once per period whatever it finds: this runs on every turn of the loop.
        self.recovery_logged = now;
        let asking: Vec<usize> = (0..self.shards.len())
            .filter(|&s| self.shards[s].raft().asking())
            .collect();
        let Some(&first) = asking.first() else {
            return;
        };
        let answers = self.shards[first].raft().rejoin_answers();
        let mut peers: Vec<NodeId> = self.addr_of.keys().copied().collect();
        peers.sort_unstable();
        let heard: Vec<String> = peers
            .iter()
            .filter(|&&id| id != self.node_id)
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
            self.node_id,
            asking.len(),
            self.shards.len(),
            heard.join(", ")
        );
    }

    /// Coalesces: one PEER datagram per peer carries the records of every shard, as many as
    /// fit; more datagrams only when they do not.
    fn send_peer_messages(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let mut outgoing = std::mem::take(&mut self.outgoing);
        // Stable: each shard's messages to one peer keep their order.
        outgoing.sort_by_key(|&(to, _, _)| to);
        let header = PeerHeader {
            cluster_id: self.cluster_id,
            from: self.node_id,
        };
        let mut i = 0;
        while i < outgoing.len() {
            let to = outgoing[i].0;
            let Some(&addr) = self.addr_of.get(&to) else {
                i += 1;
                continue;
            };
            // Room for the authentication trailer (spec §8.11) that `send_peer` appends.
            let room = self.auth.trailer_room(to);
            let mut writer = PeerWriter::with_trailer_room(&mut self.out, header, room);
            while i < outgoing.len() && outgoing[i].0 == to {
                let (_, shard, ref msg) = outgoing[i];
                if wire::push(&mut writer, shard, msg).is_ok() {
                    i += 1;
                    continue;
                }
                if writer.record_count() == 0 {
                    log::error!("udplock node: a Raft message does not fit a datagram; dropped");
                    i += 1;
                    continue;
                }
                let len = writer.finish();
                self.send_peer(to, len, addr);
                writer = PeerWriter::with_trailer_room(&mut self.out, header, room);
            }
            let len = writer.finish();
            if len > 0 {
                self.send_peer(to, len, addr);
            }
        }
        outgoing.clear();
        self.outgoing = outgoing;
    }

    /// Sends the node-to-node datagram of `len` bytes in `out`, encoded for node `to` with
    /// the room [`PeerAuth::trailer_room`] asked for, sealed (spec §8.11).
    fn send_peer(&mut self, to: NodeId, len: usize, addr: SocketAddr) {
        let len = self.auth.seal(to, &mut self.out, len);
        match self.socket.send_to(&self.out[..len], addr) {
            Ok(_) => NodeStats::bump(&self.stats.peer_sent),
            Err(_) => NodeStats::bump(&self.stats.send_errors),
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
        let Err(reason) = self.auth.check(from, datagram, auth) else {
            return true;
        };
        NodeStats::bump(&self.stats.auth_dropped[reason.index()]);
        *self.auth_drops.entry((reason, source)).or_default() += 1;
        false
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
            self.node_id,
            AUTH_DROP_LOG_PERIOD.as_millis() / 1000,
            named.join(", ")
        );
        if expected {
            log::info!("{line}; expected once per peer after a node starts");
        } else {
            log::warn!("{line}");
        }
    }

    /// About every [`keys::KEY_FILE_CHECK_MS`]: applies a changed key file, or keeps the keys
    /// in force and says why the new file is refused.
    fn check_key_file(&mut self, now: Instant) {
        let Some(watch) = self.key_watch.as_mut() else {
            return;
        };
        match watch.check(now) {
            KeyFileCheck::Unchanged => {}
            KeyFileCheck::Refused(e) => {
                NodeStats::bump(&self.stats.key_file_errors);
                log::error!(
                    "udplock node {}: the key file {} changed but is refused, the keys in \
                     force stay ({}): {e}",
                    self.node_id,
                    watch.path().display(),
                    self.auth.keys().describe()
                );
            }
            KeyFileCheck::Changed(keys) => {
                let from = format!(" reloaded from {}", watch.path().display());
                log_keys(self.node_id, &keys, &from);
                if let Ok(mut shared) = self.keys.lock() {
                    *shared = keys.clone();
                }
                self.auth.set_keys(keys);
                NodeStats::bump(&self.stats.key_reloads);
            }
        }
    }

    fn send(&self, datagram: &[u8], to: SocketAddr) {
        match self.socket.send_to(datagram, to) {
            Ok(_) => NodeStats::bump(&self.stats.replies),
            Err(_) => NodeStats::bump(&self.stats.send_errors),
        }
    }

    fn publish_stats(&mut self, now: Instant) {
        if now < self.stats_published + STATS_PERIOD {
            return;
        }
        self.stats_published = now;
        if let Ok(mut stats) = self.shard_stats.lock() {
            stats.clear();
            stats.extend(self.shards.iter().map(Shard::stats));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::raft::Entry;

    /// Raft fills an Append up to `append_bytes_max` (entries counted as data plus
    /// `ENTRY_OVERHEAD`); the loop must be able to send it in one datagram that keeps room
    /// for the authentication trailer (spec §8.11), or the shard never replicates a full
    /// batch: the message is dropped as too large, and sent again, for ever.
    #[test]
    fn a_full_append_fits_an_authenticated_datagram() {
        let peers = (1..=3)
            .map(|id| (id, SocketAddr::from(([127, 0, 0, 1], 7100 + id as u16))))
            .collect();
        let config = ClusterConfig::new(1, peers).shard_config(0).raft;
        for data_len in [1, 13, 60, 200, 567] {
            let per_entry = data_len + raft::ENTRY_OVERHEAD;
            let count = config.append_bytes_max / per_entry;
            let entries: Vec<Entry> = (1..=count as u64)
                .map(|index| Entry {
                    term: 1,
                    index,
                    data: vec![7; data_len],
                })
                .collect();
            let append = Message::Append {
                term: 1,
                prev_log_index: 0,
                prev_log_term: 0,
                entries,
                leader_commit: 0,
                round: 1,
                transfer_to: None,
            };
            let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
            let header = PeerHeader {
                cluster_id: 1,
                from: 1,
            };
            let mut writer =
                PeerWriter::with_trailer_room(&mut buf, header, udplock_protocol::AUTH_TRAILER_LEN);
            assert!(
                wire::push(&mut writer, 0, &append).is_ok(),
                "{count} entries of {data_len} bytes do not fit"
            );
        }
    }

    #[test]
    fn the_cluster_id_is_the_specs_example() {
        let peers = (1..=3)
            .rev()
            .map(|id| (id, SocketAddr::from(([127, 0, 0, 1], 7100 + id as u16))))
            .collect();
        // spec §8.1, computed independently of this crate (default limits).
        let config = ClusterConfig::new(2, peers);
        assert_eq!(config.cluster_id(), 0xA44E_6338_C6FB_5C28);
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
