//! What a node core needs to know about its cluster: who is in it, how many shards it has,
//! and the Raft and lock-table settings every replica runs with. Pure: the IO shell's
//! configuration (`cluster::ClusterConfig`: addresses to bind, data directory, durability,
//! key file) builds one.

use std::net::SocketAddr;

use udplock_protocol::{
    APPEND_FIXED_LEN, AUTH_TRAILER_LEN, HEADER_LEN, PEER_DATAGRAM_LEN_MAX, PEER_RECORD_HEADER_LEN,
    SHARDS_MAX, SNAPSHOT_CHUNK_MAX,
};

use super::limits::NodeLimits;
use crate::core::lock_table;
use crate::core::placement::{self, Planner};
use crate::core::raft::{self, NodeId};
use crate::core::replica;
use crate::core::swim;
use crate::core::time::Duration;

/// Shards of a cluster unless configured otherwise: enough that leaders spread evenly over a
/// handful of nodes, few enough that idle shards cost little.
pub const SHARDS_DEFAULT: u32 = 64;

/// The cluster as one node sees it.
#[derive(Clone, Debug)]
pub struct Config {
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
    /// Limits over all the replicas this node holds (`super::limits`); each node has its
    /// own (they decide admission at a leader, never how a command applies).
    pub limits: NodeLimits,
    /// Snapshot cadence of every shard replica (see `core::replica`): a snapshot every
    /// `compact_every` applied entries (0: never), the log dropped up to it `compact_keep`
    /// entries later.
    pub compact_every: u64,
    pub compact_keep: u64,
    /// Each shard has a preferred leader ([`Config::preferred_leader`]), to which whoever
    /// leads it hands it once that node is caught up, so leaders spread evenly. On in every
    /// real cluster; the simulator turns it off for some seeds.
    pub spread_leaders: bool,
    /// Uncommitted proposals per shard beyond which requests get OVERLOADED (at most
    /// [`replica::UNCOMMITTED_MAX`], the default; the simulator lowers it for some seeds so
    /// that clients meet OVERLOADED under every fault).
    pub uncommitted_max: u64,
    /// The shell keeps the replicas' state (durability `fsync` or `os`): the core hands out
    /// what to store ([`super::Node::poll_persist`]). Without (`memory`) it hands out nothing,
    /// and collects nothing to hand out.
    pub stores_state: bool,
    /// The shell keeps a lease horizon file (spec §7.2.4) in place of the replicas' state: a
    /// one-voter node without a store (the single node under durability `memory`), whose
    /// restart must not grant what a client may still hold. The core then hands out a write
    /// naming the horizon ([`super::ShardWrite::lease_horizon_us`]) before any answer that
    /// grants or extends a lease past what the file covers.
    pub keeps_lease_horizon: bool,
    /// The shell stores writes in the background (an `fsync` node's writer thread), so a
    /// datagram that waits for a write waits for a disk sync. The core then puts the Raft
    /// records that wait for no write still unstored (a leader's Appends, mostly) in PEER
    /// datagrams of their own, rather than hold them a sync behind the acknowledgements of
    /// other shards bound for the same peer. Off (a shell that stores every write before it
    /// sends), one datagram per peer carries both: fewer datagrams, and nothing waits long.
    pub stores_in_background: bool,
    /// SWIM's protocol period among the nodes (SWIM §3.1's T'; see [`Config::swim_config`]
    /// for the timers derived from it). Default 1 s (memberlist's LAN profile); the
    /// simulator shortens it so that detection and recovery fit its runs.
    pub swim_period: Duration,
    /// A joined cluster (`--bootstrap`, `--join`; spec §8.1): its random cluster id, this
    /// node's advertised address and the members to join SWIM through. `None`: the static
    /// form (`--peers`), whose cluster id is derived from the node list.
    pub joined: Option<Joined>,
    /// Placement (spec §8.13, issue 10 §2): in a joined cluster, each shard's leader moves
    /// the shard onto its targets one single-server change at a time, and hands leadership
    /// to its preferred node (`super::placing`). Default: [`placement::REPLICAS_DEFAULT`]
    /// replicas, [`placement::DEAD_AFTER_DEFAULT`]. `None`: nothing proposes changes (an
    /// operator or a test does; the simulator, which runs its own mover). A static cluster
    /// (`joined: None`) ignores it: every node holds every shard.
    pub placement: Option<Planner>,
    /// Address validation (spec §7.2.5): a lock request that can create or change state is
    /// served only with the address token of its source and session, else answered RETRY.
    /// On by default; `udplock server --address-validation off` for trusted networks (and
    /// unit tests that speak raw requests).
    pub address_validation: bool,
    /// Client keys (spec §7.2.6, `--client-key-file`): which keys the node accepts and which
    /// client ids each authorizes. `None`: no client authentication (an AUTH request is
    /// answered UNAUTHENTICATED). Requires `address_validation`.
    pub client_keys: Option<std::sync::Arc<crate::client_keys::ClientKeyFile>>,
}

/// What a node of a joined cluster (spec §8.1) starts knowing. The shell learns it: the
/// cluster id from the data directory (a restart) or a seed (over the client protocol,
/// NODE_SETTINGS and MEMBERS, spec §4.8, §4.9), and `seeds` from the seeds' member tables.
/// Discovery is IO with retries and deadlines, so it stays in the shell; the core starts
/// from its result, so the simulator and the tests can start a joined node without any.
///
/// The node that bootstrapped the cluster (the node whose id is in [`Config::peers`]) is the
/// static voter of every shard and starts with every replica. A node that joins is a SWIM
/// member and a peer (addresses, authentication), and holds the replicas of the shards
/// leaders add it to (spec §8.1, "Replicas on demand"; `super::Node`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// Drawn at random (non-zero) when the cluster was bootstrapped (spec §8.1).
    pub cluster_id: u64,
    /// The address this node announces (`--advertise`, default the listen address): in its
    /// own SWIM UPDATE, and as the hint that redirects clients to it.
    pub addr: SocketAddr,
    /// Members to join SWIM through, with their ids (authenticated PEER datagrams name their
    /// receiver, spec §8.11): the seed and the members it listed. Empty for the node that
    /// bootstraps the cluster.
    pub seeds: Vec<(NodeId, SocketAddr)>,
}

/// Seeds a joined node starts with at most (a seed's member table may be long): SWIM's
/// full-state exchange with each of them reaches the whole table anyway.
pub const JOIN_SEEDS_MAX: usize = 16;

impl Config {
    /// Node `node_id` of a cluster of `peers`, with default shards, timers and limits.
    pub fn new(node_id: NodeId, peers: Vec<(NodeId, SocketAddr)>) -> Config {
        Config {
            node_id,
            peers,
            shards: SHARDS_DEFAULT,
            raft: raft::Config::default(),
            table: lock_table::Config::default(),
            limits: NodeLimits::DEFAULT,
            compact_every: replica::COMPACT_EVERY_DEFAULT,
            compact_keep: replica::COMPACT_KEEP_DEFAULT,
            spread_leaders: true,
            uncommitted_max: replica::UNCOMMITTED_MAX,
            stores_state: false,
            keeps_lease_horizon: false,
            stores_in_background: false,
            swim_period: swim::Config::new(node_id, SocketAddr::from(([0, 0, 0, 0], 0)))
                .protocol_period,
            joined: None,
            placement: Some(Planner {
                replicas: placement::REPLICAS_DEFAULT,
                dead_after: placement::DEAD_AFTER_DEFAULT,
            }),
            address_validation: true,
            client_keys: None,
        }
    }

    /// The SWIM member this node runs (`core::swim`): its id and listed address, the
    /// defaults of `swim::Config::new` with every timer scaled to [`Config::swim_period`]
    /// (the probe timeout half of it, a full-state exchange every 30 periods).
    pub fn swim_config(&self) -> Result<swim::Config, String> {
        let addr = self
            .listen()
            .ok_or_else(|| format!("node id {} is not in the peer list", self.node_id))?;
        let defaults = swim::Config::new(self.node_id, addr);
        let scale = |d: Duration| {
            let scaled = u128::from(d.as_micros()) * u128::from(self.swim_period.as_micros())
                / u128::from(defaults.protocol_period.as_micros());
            Duration::from_micros(u64::try_from(scaled).unwrap_or(u64::MAX))
        };
        let config = swim::Config {
            protocol_period: self.swim_period,
            probe_timeout: scale(defaults.probe_timeout),
            push_pull_interval: scale(defaults.push_pull_interval),
            dead_keep: scale(defaults.dead_keep),
            ..defaults
        };
        config.validate().map_err(|e| format!("swim: {e}"))?;
        Ok(config)
    }

    /// The address this node listens on (as the others reach it): its own in the node list,
    /// or in a joined cluster the address it announces.
    pub fn listen(&self) -> Option<SocketAddr> {
        match &self.joined {
            Some(j) => Some(j.addr),
            None => self.address_of(self.node_id),
        }
    }

    /// Whether this node is one of the static voters ([`Config::peers`]) and so starts with
    /// a replica of every shard. A node that joined a cluster starts with those its storage
    /// holds, and gains and loses others as leaders add and remove it (spec §8.1).
    pub fn holds_replicas(&self) -> bool {
        self.address_of(self.node_id).is_some()
    }

    /// The address node `id` listens on, if it is listed.
    pub fn address_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.peers
            .iter()
            .find(|&&(node, _)| node == id)
            .map(|&(_, addr)| addr)
    }

    /// Identifies the cluster in every PEER datagram (spec §8.1), so nodes of two clusters
    /// that share addresses never mix, and nodes whose lock tables would decide differently
    /// never form one: the shard hash of the sorted node list, the shard count and the
    /// lock-table limits every replica must share, written
    /// `1@127.0.0.1:7101,2@127.0.0.1:7102/64/limits` (see [`Config::limits_text`]).
    /// The settings a leader logs (default TTL, retry-after hint, startup grace; spec §8.8)
    /// are not in it: nodes may differ in them.
    ///
    /// A joined cluster's id is the random one drawn when it was bootstrapped (spec §8.1):
    /// its nodes change, so it cannot be derived from them; a joining node compares the
    /// settings that must agree with its seed's before it starts instead.
    pub fn cluster_id(&self) -> u64 {
        if let Some(j) = &self.joined {
            return j.cluster_id;
        }
        let text = format!("{}/{}", self.membership(), self.limits_text());
        udplock_protocol::shard_hash(text.as_bytes()).max(1)
    }

    /// Who is in the cluster (spec §8.1): its nodes sorted by id, `/`, its shard count —
    /// `1@127.0.0.1:7101,2@127.0.0.1:7102/64`. What a data directory records (with the node
    /// id), since a node's Raft state belongs to one node of one membership, whatever the
    /// other settings.
    ///
    /// In a joined cluster (spec §8.1): `joined 0x…(cluster id) voters 1/64`, the voters by
    /// id without their addresses, so that a node may come back at another address.
    pub fn membership(&self) -> String {
        if self.joined.is_some() {
            let mut ids: Vec<String> = self.peers.iter().map(|(id, _)| id.to_string()).collect();
            ids.sort();
            return format!(
                "{} voters {}/{}",
                self.nodes_text(),
                ids.join(","),
                self.shards
            );
        }
        format!("{}/{}", self.nodes_text(), self.shards)
    }

    /// The node list sorted by id, as the spec writes it (§8.1): `1@127.0.0.1:7101,2@…`; in
    /// a joined cluster `joined 0x…` (its cluster id), the same on every node.
    pub fn nodes_text(&self) -> String {
        if let Some(j) = &self.joined {
            return format!("joined {:#018x}", j.cluster_id);
        }
        let mut peers = self.peers.clone();
        peers.sort();
        let nodes: Vec<String> = peers
            .iter()
            .map(|(id, addr)| format!("{id}@{addr}"))
            .collect();
        nodes.join(",")
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

    /// Refuses a configuration a node cannot run with, saying why.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(format!("shards must be 1..={SHARDS_MAX}"));
        }
        self.limits.validate()?;
        if self.client_keys.is_some() && !self.address_validation {
            // Spec §7.2.6, §12: without it, a captured authenticated request replays from
            // any address once its session is forgotten.
            return Err(
                "a client key file requires address validation (drop --address-validation off)"
                    .into(),
            );
        }
        if self.node_id == 0 || self.peers.iter().any(|&(id, _)| id == 0) {
            return Err("node ids must be greater than zero".into());
        }
        if self.listen().is_none() {
            return Err(format!("node id {} is not in the peer list", self.node_id));
        }
        if let Some(j) = &self.joined {
            if j.cluster_id == 0 {
                return Err("a joined cluster's id is non-zero".into());
            }
            // In this step the one node that bootstrapped the cluster holds every shard.
            if self
                .peers
                .iter()
                .any(|&(id, a)| id != self.node_id || a != j.addr)
            {
                return Err("a joined node lists itself alone as a voter, or nobody".into());
            }
            if j.seeds.len() > JOIN_SEEDS_MAX {
                return Err(format!("more than {JOIN_SEEDS_MAX} seeds"));
            }
            if j.seeds.iter().any(|&(id, _)| id == 0 || id == self.node_id) {
                return Err("a seed's id is non-zero and not this node's".into());
            }
        }
        for (i, &(id, addr)) in self.peers.iter().enumerate() {
            if self.peers[..i]
                .iter()
                .any(|&(other, a)| other == id || a == addr)
            {
                return Err(format!("peer {id}@{addr} is listed twice"));
            }
        }
        if self.keeps_lease_horizon
            && (self.peers.len() != 1 || self.stores_state || self.joined.is_some())
        {
            // A replicated or stored node's restart safety is its Raft state (spec §8.5).
            return Err("a lease horizon file is for a one-voter node without a store".into());
        }
        let swim = self.swim_config()?;
        // A static cluster ignores placement (every node holds every shard): its SWIM
        // period may be one no dead-after fits.
        if let Some(planner) = self.placement.as_ref().filter(|_| self.joined.is_some()) {
            placement::validate_replicas(planner.replicas).map_err(|e| e.to_string())?;
            // Shorter than a protocol period, a member would be replaced on the first
            // missed probe's confirmation; longer than `dead_keep`, SWIM would have
            // forgotten the dead member before the planner could replace it
            // (`Planner::is_gone`: a member absent from the table is unknown, not gone).
            if planner.dead_after < swim.protocol_period {
                return Err("dead-after must be at least one SWIM protocol period".into());
            }
            if planner.dead_after > swim.dead_keep {
                return Err(format!(
                    "dead-after ({} ms) must be at most SWIM's dead_keep ({} ms, 900 protocol \
                     periods): the member table must still list a dead member when it is due \
                     to be replaced; shorten the dead-after or lengthen the SWIM period",
                    planner.dead_after.as_millis(),
                    swim.dead_keep.as_millis()
                ));
            }
        }
        if !self.holds_replicas() {
            return Ok(());
        }
        self.shard_config(0).validate().map_err(|e| e.to_string())
    }

    /// The node that should lead `shard` when it is up: the nodes by id, in turn, so
    /// leaders spread evenly (each shard's leader hands over to it, see
    /// [`replica::Replica::set_preferred_leader`]).
    pub fn preferred_leader(&self, shard: u32) -> NodeId {
        let mut ids: Vec<NodeId> = self.peers.iter().map(|&(id, _)| id).collect();
        ids.sort_unstable();
        ids[shard as usize % ids.len()]
    }

    /// The configuration of this node's replica of `shard`.
    pub fn shard_config(&self, shard: u32) -> replica::Config {
        replica::Config {
            shard,
            raft: raft::Config {
                id: self.node_id,
                voters: self.peers.iter().map(|&(id, _)| id).collect(),
                // One Append always fits one PEER datagram, with room for the trailer of
                // an authenticated one (spec §8.11) whether or not this node sends with a
                // key: keys change while it runs.
                // One snapshot chunk fits one PEER datagram too.
                snapshot_chunk_max: SNAPSHOT_CHUNK_MAX,
                append_bytes_max: PEER_DATAGRAM_LEN_MAX
                    - HEADER_LEN
                    - PEER_RECORD_HEADER_LEN
                    - APPEND_FIXED_LEN
                    - AUTH_TRAILER_LEN,
                // Without a store the log is as durable as it gets once appended (memory):
                // there is nothing to report stored.
                appended_is_durable: self.raft.appended_is_durable || !self.stores_state,
                ..self.raft.clone()
            },
            table: self.table.clone(),
        }
    }
}
