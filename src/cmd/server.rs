//! `udplock server`: one node, serving until killed: a single node (a cluster of one voter
//! and one shard, [`udplock::single`]), or with `--peers` one node of a replicated cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use udplock::cluster::storage::Durability;
use udplock::cluster::{ClusterConfig, ClusterNode};
use udplock::core::lock_table;
use udplock::core::time::Duration as CoreDuration;
use udplock::single::{start_single, SingleConfig};
use udplock::LockError;

use super::args::host_port;
use super::out::notice;

/// `--election-timeout-ms`: the Raft core's default, and the range the option accepts.
/// Below 10 ms a heartbeat every fifth of it would cost a datagram per shard every 2 ms;
/// above a minute a dead leader would leave its shards unavailable for longer than most
/// callers wait for a lock.
const ELECTION_TIMEOUT_MS_DEFAULT: u32 = 150;
const ELECTION_TIMEOUT_MS_MIN: i64 = 10;
const ELECTION_TIMEOUT_MS_MAX: i64 = 60_000;

#[cfg(test)]
mod election_timeout_tests {
    /// The option's default is the core's, so a node started without it behaves as before.
    #[test]
    fn the_default_is_the_raft_cores() {
        let core = udplock::core::raft::Config::default();
        let ms = u64::from(super::ELECTION_TIMEOUT_MS_DEFAULT);
        assert_eq!(core.election_timeout_min.as_micros(), ms * 1_000);
        assert_eq!(core.election_timeout_max.as_micros(), 2 * ms * 1_000);
        assert_eq!(core.heartbeat_interval.as_micros(), ms / 5 * 1_000);
    }
}

#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on: IP:PORT, [IPv6]:PORT or HOST:PORT (its first address).
    #[arg(long, default_value = "127.0.0.1:7100", value_parser = super::args::host_port)]
    listen: SocketAddr,
    /// Lease length when neither the acquire nor the resource names one.
    #[arg(long, default_value_t = lock_table::Config::default().ttl_default_ms)]
    ttl_default_ms: u32,
    /// Longest lease an acquire or renew may ask for.
    #[arg(long, default_value_t = lock_table::Config::default().ttl_ms_max)]
    ttl_ms_max: u32,
    /// Longest time an acquire may wait in the queue.
    #[arg(long, default_value_t = lock_table::Config::default().wait_ms_max)]
    wait_ms_max: u32,
    /// Most resources the node keeps (held, waited on or configured).
    #[arg(long, default_value_t = lock_table::Config::default().resources_max)]
    resources_max: u32,
    /// Most queued acquires on one resource.
    #[arg(long, default_value_t = lock_table::Config::default().waiters_per_resource_max)]
    waiters_per_resource_max: u32,
    /// Deepest re-entrant hold count.
    #[arg(long, default_value_t = lock_table::Config::default().holds_per_lock_max)]
    holds_per_lock_max: u32,
    /// Most client sessions remembered for duplicate detection.
    #[arg(long, default_value_t = lock_table::Config::default().sessions_max)]
    sessions_max: u32,
    /// Grant nothing for at least this long after start. The lease horizon file already makes
    /// a restart at the same address wait out its predecessor's leases; set this when that file
    /// is lost or disabled (e.g. after moving a node), to the longest lease clients use.
    #[arg(long, default_value_t = 0)]
    startup_grace_ms: u32,
    /// The lease horizon file: the time until which leases this node granted may still be
    /// valid, so that a restarted node at the same address grants nothing before then.
    /// Default: $XDG_STATE_HOME/udplock/ (or ~/.local/state/udplock/) named after --listen.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Keep no lease horizon file (restarts then rely on --startup-grace-ms).
    #[arg(long, conflicts_with = "state_file")]
    no_state_file: bool,
    /// Pin the event-loop thread to this CPU (default: let the OS place it).
    #[arg(long)]
    cpu: Option<usize>,
    /// This node's id in the cluster (with --peers).
    #[arg(long, requires = "peers")]
    node_id: Option<u64>,
    /// Every node of a replicated cluster, this one included: ID@HOST:PORT,... (the same list,
    /// in any order, on every node). Without it the server is a single unreplicated node.
    #[arg(long, value_delimiter = ',', requires = "node_id")]
    peers: Option<Vec<String>>,
    /// Where a node keeps its Raft log and vote (--durability fsync or os). Default:
    /// $XDG_STATE_HOME/udplock/node-ID (or ~/.local/state/udplock/node-ID; a single node:
    /// single-HOST-PORT), so it depends on the environment: under a service manager, name it.
    /// The node locks it, and it records which node of which cluster it belongs to (another
    /// node refuses it).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// What a node's state survives: fsync (power loss of every node), os (any process
    /// crash, not a power loss), memory (no disk: a cluster survives losing a minority of the
    /// nodes' state, a restarted node rejoining by the protocol's rule before it votes; a
    /// single node's restarts are made safe by its lease horizon file). Default: os with
    /// --peers, memory for a single node.
    #[arg(long)]
    durability: Option<String>,
    /// This start may create the cluster. A node whose storage holds nothing (an empty data
    /// directory, or --durability memory) then starts as new: it still asks every other node,
    /// and its shards start only once EVERY other node answers that it is new too; next to a
    /// cluster that holds state it rejoins like any node without state. Safe to leave in a
    /// unit file; a node that holds its state ignores it. Without it, a node whose storage
    /// holds nothing always rejoins (waits for nodes with state), so the nodes of a new
    /// cluster must all be started with it. If every node of a cluster loses its state at
    /// once, nodes started with it form a new cluster: keep --startup-grace-ms at the longest
    /// lease clients use alongside it (the grace protects leases granted before the loss).
    #[arg(long)]
    new_cluster: bool,
    /// Shards of the cluster (fixed when the cluster is created; same on every node; with
    /// --peers). Default: 64. A single node has one (the option is ignored without --peers).
    #[arg(long)]
    shards: Option<u32>,
    /// Shortest Raft election timeout of every shard, in ms (with --peers): how long a
    /// follower waits for a silent leader before it calls an election, and so about how long
    /// a shard is unavailable after its leader dies. Timeouts are drawn from [this, 2 x this);
    /// heartbeats go out every fifth of it. Longer rides out slow networks and long pauses (a
    /// busy machine) without needless elections; shorter fails over sooner. Nodes may differ.
    #[arg(long, default_value_t = ELECTION_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(ELECTION_TIMEOUT_MS_MIN..=ELECTION_TIMEOUT_MS_MAX))]
    election_timeout_ms: u32,
    /// SWIM's protocol period among the nodes, in ms: each period a node probes one other,
    /// so a crashed node is suspected within about 1 to 2 periods and declared dead after
    /// the suspicion timeout (README, "Membership"). Shorter notices sooner and costs a ping
    /// and an ack per node per period; 10 to 60000. Nodes may differ.
    #[arg(long, visible_alias = "swim-period", value_name = "MS",
          default_value_t = super::args::SWIM_PERIOD_MS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(super::args::SWIM_PERIOD_MS_MIN..=super::args::SWIM_PERIOD_MS_MAX))]
    swim_period_ms: u32,
    /// The cluster key file (with --peers; make one with `udplock keygen`): every
    /// node-to-node datagram is authenticated with its first key, and the keys (or `none`)
    /// on its lines are accepted; at most 2 lines, so keys rotate without downtime (README,
    /// "Securing a cluster"). Re-read when it changes. Without it, peer traffic is NOT
    /// authenticated: any host that can send the nodes UDP can make two clients hold one
    /// lock.
    #[arg(long, env = "UDPLOCK_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
}

/// `udplock server`: a cluster node with `--peers`, else a single node.
pub fn run(a: ServerArgs) -> Result<(), LockError> {
    if a.peers.is_some() {
        run_cluster(a)
    } else {
        run_single(a)
    }
}

fn run_single(a: ServerArgs) -> Result<(), LockError> {
    let invalid = |e: String| LockError::InvalidArgument(e);
    let durability: Durability = a
        .durability
        .as_deref()
        .unwrap_or("memory")
        .parse()
        .map_err(invalid)?;
    let mut config = SingleConfig::new(a.listen);
    config.cpu = a.cpu;
    config.table = table_config(&a);
    config.durability = durability;
    let mut data_dir_from = String::new();
    match durability {
        // No disk: the lease horizon file makes a restart at the same address safe.
        Durability::Memory => {
            config.state_file = match (a.no_state_file, a.state_file.clone()) {
                (true, _) => None,
                (false, Some(path)) => Some(path),
                (false, None) => default_state_file(a.listen),
            };
        }
        // The Raft log makes restarts safe: no horizon file.
        Durability::Fsync | Durability::Os => {
            config.data_dir = match a.data_dir.clone() {
                Some(dir) => Some(dir),
                None => {
                    let (dir, from) = default_single_data_dir(a.listen)
                        .ok_or_else(|| invalid("no --data-dir and no home directory".into()))?;
                    data_dir_from = format!(" (the default, from {from}; name it with --data-dir)");
                    Some(dir)
                }
            };
        }
    }
    let election_timeout = u64::from(a.election_timeout_ms);
    let mut cluster = config.cluster_config();
    cluster.raft.election_timeout_min = CoreDuration::from_millis(election_timeout);
    cluster.raft.election_timeout_max = CoreDuration::from_millis(2 * election_timeout);
    cluster.raft.heartbeat_interval = CoreDuration::from_millis(election_timeout / 5);
    cluster.swim_period = CoreDuration::from_millis(u64::from(a.swim_period_ms));
    cluster.validate().map_err(invalid)?;
    let state_file = config.state_file.clone();
    let node = start_single(cluster.clone()).map_err(|e| {
        let why = format!("cannot start the node on {}: {e}", a.listen);
        match e.kind() {
            std::io::ErrorKind::InvalidInput => invalid(why),
            _ => LockError::InternalError(why),
        }
    })?;
    // A server must keep serving when nobody reads its stderr any more (a closed pipe):
    // these notices are written without eprintln!, which would panic.
    let data = match &cluster.data_dir {
        Some(dir) => format!(", data in {}{data_dir_from}", dir.display()),
        None => String::new(),
    };
    let mut notice_text = format!(
        "udplock server listening on {} (a single node, durability {}{data}; Ctrl-C to stop)\n",
        node.local_addr(),
        durability.name()
    );
    if a.cluster_key_file.is_some() {
        notice_text.push_str(
            "udplock server: --cluster-key-file ignored: a single node (no --peers) \
             has no peer traffic\n",
        );
    }
    if a.shards.is_some() {
        notice_text.push_str("udplock server: --shards ignored: a single node has one shard\n");
    }
    if a.new_cluster {
        notice_text.push_str(
            "udplock server: --new-cluster ignored: a single node (no --peers) starts by \
             itself\n",
        );
    }
    if durability == Durability::Memory && state_file.is_none() && a.startup_grace_ms == 0 {
        notice_text.push_str(
            "udplock server: no lease horizon file; locks are kept in memory, so if \
             this restarts a node at the same address, restart with \
             --startup-grace-ms set to the longest lease its clients use\n",
        );
    }
    notice(&notice_text);
    node.wait()
        .map_err(|e| LockError::InternalError(format!("the node stopped: {e}")))
}

fn run_cluster(a: ServerArgs) -> Result<(), LockError> {
    let invalid = |e: String| LockError::InvalidArgument(e);
    let peers = parse_peers(a.peers.as_deref().unwrap_or_default())?;
    let node_id = a
        .node_id
        .ok_or_else(|| invalid("--node-id is required".into()))?;
    let durability: Durability = a
        .durability
        .as_deref()
        .unwrap_or("os")
        .parse()
        .map_err(invalid)?;
    let mut config = ClusterConfig::new(node_id, peers);
    config.shards = a.shards.unwrap_or(udplock::cluster::SHARDS_DEFAULT);
    config.table = table_config(&a);
    config.durability = durability;
    config.new_cluster = a.new_cluster;
    // Where the default comes from, said at start: another HOME or XDG_STATE_HOME (a service
    // manager's) is another, empty directory, and the node then rejoins without its state.
    let mut data_dir_from = String::new();
    config.data_dir = match (durability, a.data_dir.clone()) {
        (Durability::Memory, _) => None,
        (_, Some(dir)) => Some(dir),
        (_, None) => {
            let (dir, from) = default_data_dir(node_id)
                .ok_or_else(|| invalid("no --data-dir and no home directory".into()))?;
            data_dir_from = format!(" (the default, from {from}; name it with --data-dir)");
            Some(dir)
        }
    };
    config.cpu = a.cpu;
    let election_timeout = u64::from(a.election_timeout_ms);
    config.raft.election_timeout_min = CoreDuration::from_millis(election_timeout);
    config.raft.election_timeout_max = CoreDuration::from_millis(2 * election_timeout);
    config.raft.heartbeat_interval = CoreDuration::from_millis(election_timeout / 5);
    config.swim_period = CoreDuration::from_millis(u64::from(a.swim_period_ms));
    config.key_file = a.cluster_key_file.clone();
    config.validate().map_err(invalid)?;
    if config.listen() != Some(a.listen) && a.listen != default_listen() {
        return Err(invalid(format!(
            "--listen {} differs from this node's address in --peers",
            a.listen
        )));
    }
    // A refused configuration (a key file, a data directory of another node) is the
    // operator's to fix, not an internal error.
    let node = ClusterNode::start(config.clone()).map_err(|e| {
        let why = format!("cannot start node {node_id}: {e}");
        match e.kind() {
            std::io::ErrorKind::InvalidInput => invalid(why),
            _ => LockError::InternalError(why),
        }
    })?;
    let keys = node.keys();
    let authenticated = match &config.key_file {
        Some(path) => format!(
            "peer traffic keyed by {}: {}",
            path.display(),
            keys.describe()
        ),
        None => "peer traffic NOT authenticated: no --cluster-key-file".to_string(),
    };
    let data = match &config.data_dir {
        Some(dir) => format!(", data in {}{data_dir_from}", dir.display()),
        None => String::new(),
    };
    notice(&format!(
        "udplock server: node {node_id} of {} listening on {} ({} shards, durability {}{data}; {authenticated})\n",
        config.peers.len(),
        node.local_addr(),
        config.shards,
        durability.name(),
    ));
    // SIGINT / SIGTERM: leave gracefully, handing every shard this node leads to another
    // node first (leadership transfer), so clients see a redirect, not an election timeout.
    let (signal_tx, signal_rx) = std::sync::mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signal_tx.send(());
    }) {
        notice(&format!(
            "udplock server: no graceful stop on signals: {e}\n"
        ));
    }
    loop {
        if signal_rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_ok()
        {
            notice(&format!(
                "udplock server: node {node_id} leaving: handing its shards over\n"
            ));
            let still_led = node.leave(std::time::Duration::from_secs(5));
            notice(&format!(
                "udplock server: node {node_id} stopped ({still_led} shards left without a handover)\n"
            ));
            return Ok(());
        }
        if !node.is_running() {
            return node
                .wait()
                .map_err(|e| LockError::InternalError(format!("node {node_id} stopped: {e}")));
        }
    }
}

/// Where `udplock server --listen ADDR` keeps its lease horizon by default: the user's state
/// directory, one file per address. None for an ephemeral port (no node can have preceded
/// it there) or without a home directory.
fn default_state_file(listen: SocketAddr) -> Option<PathBuf> {
    if listen.port() == 0 {
        return None;
    }
    let (base, _) = state_dir()?;
    let name = format!("node-{}-{}.horizon", listen.ip(), listen.port()).replace(':', "_");
    Some(base.join(name))
}

/// Where a single node with a disk keeps its data by default (in [`state_dir`]), named after
/// its address, and which variable chose it.
fn default_single_data_dir(listen: SocketAddr) -> Option<(PathBuf, String)> {
    let (base, from) = state_dir()?;
    let name = format!("single-{}-{}", listen.ip(), listen.port()).replace(':', "_");
    Some((base.join(name), from))
}

/// Parses `ID@HOST:PORT,...`.
fn parse_peers(peers: &[String]) -> Result<Vec<(u64, SocketAddr)>, LockError> {
    peers
        .iter()
        .map(|p| {
            let bad = |why: String| LockError::InvalidArgument(format!("peer {p:?}: {why}"));
            let (id, addr) = p
                .trim()
                .split_once('@')
                .ok_or_else(|| bad("expected ID@HOST:PORT".into()))?;
            let id = id.parse::<u64>().map_err(|e| bad(e.to_string()))?;
            let addr = host_port(addr).map_err(bad)?;
            Ok((id, addr))
        })
        .collect()
}

fn table_config(a: &ServerArgs) -> lock_table::Config {
    lock_table::Config {
        ttl_default_ms: a.ttl_default_ms,
        ttl_ms_max: a.ttl_ms_max,
        wait_ms_max: a.wait_ms_max,
        resources_max: a.resources_max,
        waiters_per_resource_max: a.waiters_per_resource_max,
        holds_per_lock_max: a.holds_per_lock_max,
        sessions_max: a.sessions_max,
        startup_grace_ms: a.startup_grace_ms,
        ..lock_table::Config::default()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7100))
}

/// Where a cluster node keeps its data by default (in [`state_dir`]), and which variable
/// chose it.
fn default_data_dir(node_id: u64) -> Option<(PathBuf, String)> {
    let (base, from) = state_dir()?;
    Some((base.join(format!("node-{node_id}")), from))
}

/// udplock's directory in the user's state directory (`$XDG_STATE_HOME/udplock`, else
/// `~/.local/state/udplock`), and which variable chose it (`$XDG_STATE_HOME=...` or
/// `$HOME=...`); `None` without either.
fn state_dir() -> Option<(PathBuf, String)> {
    let (base, from) = match std::env::var_os("XDG_STATE_HOME") {
        Some(x) => (
            PathBuf::from(&x),
            format!("$XDG_STATE_HOME={}", x.to_string_lossy()),
        ),
        None => {
            let home = std::env::var_os("HOME")?;
            let from = format!("$HOME={}", home.to_string_lossy());
            (PathBuf::from(home).join(".local/state"), from)
        }
    };
    Some((base.join("udplock"), from))
}
