//! The single node: a cluster of one voter and one shard (issue 9 item 5).
//!
//! `udplock server` without `--peers` runs the same node core (`core::node::Node`) and the
//! same IO shell ([`ClusterNode`]) as every node of a replicated cluster, configured by
//! [`ClusterConfig::single`]: one voter, so Raft commits each command inside `propose` and
//! the leader answers in the input that brought the request; one shard, so its limits are not
//! multiplied by a shard count; and nobody to ask at start (spec §8.5 rule 6 with no others),
//! so a new single node leads at once. SHARD_STATUS and NODE_SETTINGS answer as on any node.
//!
//! # Restarts
//!
//! One vocabulary with the cluster ([`crate::cluster`], "Durability and restarts"):
//!
//! - `memory` (the default for a single node, as before): no disk. Its restart safety is the
//!   lease horizon file ([`crate::cluster::horizon`], spec §7.2.4): before any answer that
//!   grants or extends a lease past what the file covers leaves, the file covers it, and a
//!   node that starts with the file grants nothing until the time it names. Fencing tokens
//!   start at the wall clock (spec §8.8), so they keep increasing across restarts.
//! - `fsync` / `os`: its Raft log, vote and snapshot in a data directory, as a cluster node's;
//!   a restart restores its locks and needs no horizon file. A lone voter cannot rejoin
//!   (nobody can vouch for it), so one whose files cannot be trusted refuses to start and
//!   says what to do.
//!
//! [`SingleNode`] and [`SingleConfig`] are thin wrappers kept for the library's users: the
//! configuration of a single node, and a handle to the running [`ClusterNode`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cluster::storage::Durability;
use crate::cluster::{ClusterConfig, ClusterNode};
use crate::core::lock_table;
pub use crate::core::node::NodeStats;
use crate::core::replica::ShardStats;

/// What a single node needs to start.
#[derive(Clone, Debug)]
pub struct SingleConfig {
    /// Address to bind the UDP socket to (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Limits and defaults of the lock table (its first fencing token is the wall clock when
    /// the shard starts, spec §8.8: `fencing_token_first` is not used).
    pub table: lock_table::Config,
    /// Limits of the node as a whole (`core::node::limits`): with one shard, the table's
    /// limits and these both apply.
    pub limits: crate::core::node::limits::NodeLimits,
    /// Pin the event-loop thread to this CPU (`None`: let the OS place it). A pinned loop
    /// wakes on a known, warm CPU; keep other busy threads off it.
    pub cpu: Option<usize>,
    /// The lease horizon file (see [`crate::cluster::horizon`]; `memory` only): makes a
    /// restart at the same address safe without an operator's grace period. `None` for a node
    /// nobody can have preceded (an ephemeral port) or when the operator takes care of
    /// restarts.
    pub state_file: Option<PathBuf>,
    /// What its state survives: `memory` (nothing; the horizon file protects restarts),
    /// `os` or `fsync` (its Raft log in `data_dir`, see [`crate::cluster::storage`]).
    pub durability: Durability,
    /// Where `fsync` and `os` keep their files.
    pub data_dir: Option<PathBuf>,
    /// Address validation of client requests (spec §7.2.5): on by default; see
    /// [`ClusterConfig::address_validation`].
    pub address_validation: bool,
    /// Client keys (spec §7.2.6): see [`ClusterConfig::client_keys`].
    pub client_keys: Option<std::sync::Arc<crate::client_keys::ClientKeyFile>>,
}

impl SingleConfig {
    /// A node on `listen` with the default limits, in memory, without a horizon file.
    pub fn new(listen: SocketAddr) -> SingleConfig {
        SingleConfig {
            listen,
            table: lock_table::Config::default(),
            limits: crate::core::node::limits::NodeLimits::DEFAULT,
            cpu: None,
            state_file: None,
            durability: Durability::Memory,
            data_dir: None,
            address_validation: true,
            client_keys: None,
        }
    }

    /// The one-voter cluster this is.
    pub fn cluster_config(&self) -> ClusterConfig {
        let mut config = ClusterConfig::single(self.listen);
        config.table = self.table.clone();
        config.limits = self.limits;
        config.cpu = self.cpu;
        config.state_file = self.state_file.clone();
        config.durability = self.durability;
        config.data_dir = self.data_dir.clone();
        config.address_validation = self.address_validation;
        config.client_keys = self.client_keys.clone();
        config
    }
}

/// Starts a one-voter cluster node ([`ClusterConfig::single`], adjusted as the caller likes).
/// On port 0 it binds first, so that its address, which is its identity in the cluster
/// (spec §8.1), is the port the kernel picked.
pub fn start_single(mut config: ClusterConfig) -> io::Result<ClusterNode> {
    match config.listen() {
        Some(listen) if listen.port() == 0 && config.is_single() => {
            let socket = crate::cluster::socket::bind(listen)?;
            config.peers = vec![(config.node_id, socket.local_addr()?)];
            ClusterNode::start_on(socket, config)
        }
        _ => ClusterNode::start(config),
    }
}

/// A running single node. Dropping it stops the node.
pub struct SingleNode {
    inner: ClusterNode,
}

impl SingleNode {
    /// Binds the socket and starts the event-loop thread. Port 0 picks a free port
    /// ([`SingleNode::local_addr`] tells which).
    ///
    /// # Example
    /// ```
    /// use udplock::single::{SingleConfig, SingleNode};
    ///
    /// let node = SingleNode::start(SingleConfig::new("127.0.0.1:0".parse().unwrap()))?;
    /// let client = udplock::Client::connect(&[node.local_addr()]).unwrap();
    /// assert_eq!(client.status("orders/42").unwrap().hold_count, 0);
    /// node.shutdown();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start(config: SingleConfig) -> io::Result<SingleNode> {
        Ok(SingleNode {
            inner: start_single(config.cluster_config())?,
        })
    }

    /// The address the node answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// The node's counters.
    pub fn stats(&self) -> &NodeStats {
        self.inner.stats()
    }

    /// Its one shard's role, term, commit index and table counters, as of at most a few
    /// milliseconds ago.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.inner.shard_stats()
    }

    /// False once the event loop has stopped on its own (see [`SingleNode::wait`]).
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// Blocks until the node stops; `Err` says why it stopped on its own (it stops rather
    /// than go on without the restart safety it promises, e.g. when its disk or its lease
    /// horizon file cannot be written).
    pub fn wait(self) -> Result<(), String> {
        self.inner.wait()
    }

    /// Stops the event loop and waits for it.
    pub fn shutdown(self) {
        self.inner.shutdown();
    }

    /// The running node as what it is: a one-voter cluster node.
    pub fn cluster_node(&self) -> &ClusterNode {
        &self.inner
    }
}
