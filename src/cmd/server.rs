//! `udplock server`: one node, serving until killed: a single node (a cluster of one voter
//! and one shard, [`udplock::single`]), with `--peers` one node of a replicated cluster, or
//! with `--bootstrap` / `--join` a node of a joined cluster (spec §8.1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use udplock::cluster::storage::Durability;
use udplock::cluster::{ClusterConfig, ClusterNode};
use udplock::core::lock_table;
use udplock::core::node::limits::NodeLimits;
use udplock::core::placement::{self, Planner};
use udplock::core::time::Duration as CoreDuration;
use udplock::single::{start_single, SingleConfig};
use udplock::LockError;

use rand::RngCore;

use super::args::{host_port, resolve, HostPort};
use super::duration::{self, ms_u32, ms_u64, U32_MS};
use super::out::notice;

/// `n` milliseconds, for a flag's default.
fn ms(n: impl Into<u64>) -> std::time::Duration {
    std::time::Duration::from_millis(n.into())
}

/// `--election-timeout`: the Raft core's default, and the range the option accepts (ms).
/// Below 10 ms a heartbeat every fifth of it would cost a datagram per shard every 2 ms;
/// above a minute a dead leader would leave its shards unavailable for longer than most
/// callers wait for a lock.
const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 150;
const ELECTION_TIMEOUT_MS_MIN: u64 = 10;
const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;

#[cfg(test)]
mod election_timeout_tests {
    /// The option's default is the core's, so a node started without it behaves as before.
    #[test]
    fn the_default_is_the_raft_cores() {
        let core = udplock::core::raft::Config::default();
        let ms = super::ELECTION_TIMEOUT_MS_DEFAULT;
        assert_eq!(core.election_timeout_min.as_micros(), ms * 1_000);
        assert_eq!(core.election_timeout_max.as_micros(), 2 * ms * 1_000);
        assert_eq!(core.heartbeat_interval.as_micros(), ms / 5 * 1_000);
    }
}

#[cfg(test)]
mod address_validation_tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        server: super::ServerArgs,
    }

    /// `--address-validation on|off` takes a value (it once parsed as a flag and refused
    /// `off`); on by default.
    #[test]
    fn the_option_takes_on_or_off_and_is_on_by_default() {
        let parse = |args: &[&str]| {
            Wrap::try_parse_from(std::iter::once("server").chain(args.iter().copied()))
                .map(|w| w.server.address_validation)
        };
        assert!(parse(&[]).unwrap());
        assert!(parse(&["--address-validation", "on"]).unwrap());
        assert!(!parse(&["--address-validation", "off"]).unwrap());
        assert!(parse(&["--address-validation", "maybe"]).is_err());
    }
}

#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on: IP:PORT, [IPv6]:PORT or HOST:PORT (its first address, which
    /// the start-up line names).
    #[arg(long, default_value = "127.0.0.1:7100", value_parser = super::args::host_port_named)]
    listen: HostPort,
    /// Lease length when neither the acquire nor the resource names one: 30s, 2m (a bare
    /// number is ms). Old spelling: --ttl-default-ms.
    #[arg(long, alias = "ttl-default-ms", value_name = "DURATION",
          default_value = duration::format(ms(lock_table::Config::default().ttl_default_ms)),
          value_parser = duration::ms::<1, U32_MS>)]
    default_ttl: Duration,
    /// Longest lease an acquire or renew may ask for. Old spelling: --ttl-ms-max.
    #[arg(long, alias = "ttl-ms-max", value_name = "DURATION",
          default_value = duration::format(ms(lock_table::Config::default().ttl_ms_max)),
          value_parser = duration::ms::<1, U32_MS>)]
    ttl_max: Duration,
    /// Longest time an acquire may wait in the queue. Old spelling: --wait-ms-max.
    #[arg(long, alias = "wait-ms-max", value_name = "DURATION",
          default_value = duration::format(ms(lock_table::Config::default().wait_ms_max)),
          value_parser = duration::ms::<0, U32_MS>)]
    wait_max: Duration,
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
    /// Most resources all the shards this node holds keep together (--resources-max is per
    /// shard). A leader answers OVERLOADED to a request that would create one more.
    #[arg(long, default_value_t = NodeLimits::DEFAULT.resources_max)]
    resources_per_node_max: u64,
    /// Most client sessions all the shards this node holds remember together.
    #[arg(long, default_value_t = NodeLimits::DEFAULT.sessions_max)]
    sessions_per_node_max: u64,
    /// Most final answers all the shards this node holds remember together.
    #[arg(long, default_value_t = NodeLimits::DEFAULT.answers_max)]
    answers_per_node_max: u64,
    /// Most queued acquires over all the shards this node holds.
    #[arg(long, default_value_t = NodeLimits::DEFAULT.waiters_max)]
    waiters_per_node_max: u64,
    /// Most memory the logs of all the shards this node holds take after their snapshots.
    #[arg(long, default_value_t = NodeLimits::DEFAULT.log_bytes_max)]
    log_bytes_per_node_max: u64,
    /// Grant nothing for at least this long after start. The lease horizon file already makes
    /// a restart at the same address wait out its predecessor's leases; set this when that file
    /// is lost or disabled (e.g. after moving a node), to the longest lease clients use.
    /// Old spelling: --startup-grace.
    #[arg(long, alias = "startup-grace-ms", value_name = "DURATION", default_value = "0",
          value_parser = duration::ms::<0, U32_MS>)]
    startup_grace: Duration,
    /// The lease horizon file: the time until which leases this node granted may still be
    /// valid, so that a restarted node at the same address grants nothing before then.
    /// Default: $XDG_STATE_HOME/udplock/ (or ~/.local/state/udplock/) named after --listen.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Keep no lease horizon file (restarts then rely on --startup-grace).
    #[arg(long, conflicts_with = "state_file")]
    no_state_file: bool,
    /// Pin the event-loop thread to this CPU (default: let the OS place it).
    #[arg(long)]
    cpu: Option<usize>,
    /// This node's id in the cluster (with --peers, --bootstrap or --join; alone, it restarts
    /// the node of a joined cluster its --data-dir records).
    #[arg(long)]
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
    /// once, nodes started with it form a new cluster: keep --startup-grace at the longest
    /// lease clients use alongside it (the grace protects leases granted before the loss).
    #[arg(long)]
    new_cluster: bool,
    /// Shards of the cluster (fixed when the cluster is created; same on every node; with
    /// --peers). Default: 64. A single node has one (the option is ignored without --peers).
    #[arg(long)]
    shards: Option<u32>,
    /// Shortest Raft election timeout of every shard (with --peers): how long a
    /// follower waits for a silent leader before it calls an election, and so about how long
    /// a shard is unavailable after its leader dies. Timeouts are drawn from [this, 2 x this);
    /// heartbeats go out every fifth of it. Longer rides out slow networks and long pauses (a
    /// busy machine) without needless elections; shorter fails over sooner. 10ms to 1m.
    /// Nodes may differ. Old spelling: --election-timeout-ms.
    #[arg(long, alias = "election-timeout-ms", value_name = "DURATION",
          default_value = duration::format(ms(ELECTION_TIMEOUT_MS_DEFAULT)),
          value_parser = duration::ms::<ELECTION_TIMEOUT_MS_MIN, ELECTION_TIMEOUT_MS_MAX>)]
    election_timeout: Duration,
    /// SWIM's protocol period among the nodes: each period a node probes one other,
    /// so a crashed node is suspected within about 1 to 2 periods and declared dead after
    /// the suspicion timeout (README, "Membership"). Shorter notices sooner and costs a ping
    /// and an ack per node per period; 10ms to 1m. Nodes may differ. Old spelling:
    /// --swim-period-ms.
    #[arg(long, alias = "swim-period-ms", value_name = "DURATION",
          default_value = duration::format(ms(super::args::SWIM_PERIOD_MS_DEFAULT)),
          value_parser = duration::ms::<{ super::args::SWIM_PERIOD_MS_MIN }, { super::args::SWIM_PERIOD_MS_MAX }>)]
    swim_period: Duration,
    /// The cluster key file (with --peers; make one with `udplock keygen`): every
    /// node-to-node datagram is authenticated with its first key, and the keys (or `none`)
    /// on its lines are accepted; at most 2 lines, so keys rotate without downtime (README,
    /// "Securing a cluster"). Re-read when it changes. Without it, peer traffic is NOT
    /// authenticated: any host that can send the nodes UDP can make two clients hold one
    /// lock.
    #[arg(long, visible_alias = "key-file", env = "UDPLOCK_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
    /// On SIGINT / SIGTERM, announce a leave after handing this node's shards over, so
    /// that the others hold it *left* and a joined cluster moves its replicas to other nodes
    /// at once: for decommissioning a node. Without it a stop hands the shards over and
    /// announces nothing: the others hold the node suspect, then dead, and move its replicas
    /// only after --dead-after, so a restart (an upgrade, a config change) moves nothing.
    /// `udplock remove` retires a stopped node at once either way.
    #[arg(long)]
    leave_on_stop: bool,
    /// Address validation (spec §7.2.5): `on` (default) answers a request that may create
    /// or change state RETRY until its source shows it receives at its address (one round
    /// trip per client session, once), so spoofed sources create no session, waiter or
    /// hold. `off` only where every host that can reach the node is trusted, or while
    /// clients that predate RETRY are still in use.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off,
          action = clap::ArgAction::Set)]
    address_validation: bool,
    /// Client keys (spec §7.2.6; README "Client keys"): lines `<64 hex> <prefix>...` give
    /// each key the client ids it authorizes (`*`: every id), an optional line
    /// `none <prefix>...` what requests without a key may do (`none *`: everything, as
    /// without this file, while clients get their keys). With it, acquire, release, renew,
    /// keepalive and cancel need a key for their client id. Needs address validation on.
    /// Read at start only (restart to change it).
    #[arg(long, value_name = "PATH", env = "UDPLOCK_CLIENT_KEY_FILE")]
    client_key_file: Option<PathBuf>,
    /// Serve Prometheus metrics (GET /metrics, text format 0.0.4) and health checks (GET
    /// /health: 200 while the node's event loop turns; GET /ready: 200 while every shard it
    /// holds knows its leader) over HTTP on this address, IP:PORT (port 0: a free port, named
    /// at start). Off the datagram path (a thread of its own). README, "Metrics and health".
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// The bound `--metrics-listen` socket (bound first, so a taken port refuses the start).
    #[arg(skip)]
    metrics_listener: Option<std::net::TcpListener>,
    #[command(flatten)]
    join: JoinArgs,
}

/// Reads `--client-key-file` (spec §7.2.6): refused with address validation off, since a
/// captured authenticated request could then be replayed from any address once its session
/// is forgotten (spec §12).
fn client_keys(
    a: &ServerArgs,
) -> Result<Option<std::sync::Arc<udplock::client_keys::ClientKeyFile>>, LockError> {
    client_key_file(a.client_key_file.as_deref(), a.address_validation)
}

/// The client key file at `path` for a node with address validation `validating`.
pub fn client_key_file(
    path: Option<&std::path::Path>,
    validating: bool,
) -> Result<Option<std::sync::Arc<udplock::client_keys::ClientKeyFile>>, LockError> {
    let Some(path) = path else {
        return Ok(None);
    };
    if !validating {
        return Err(LockError::InvalidArgument(
            "--client-key-file needs address validation: drop --address-validation off \
             (spec 7.2.6)"
                .into(),
        ));
    }
    let file =
        udplock::client_keys::ClientKeyFile::read(path).map_err(LockError::InvalidArgument)?;
    let ids: Vec<String> = file.key_ids().map(|id| format!("{id:08x}")).collect();
    super::out::notice(&format!(
        "udplock: client keys {} from {}{}\n",
        if ids.is_empty() {
            "(none)".to_string()
        } else {
            ids.join(",")
        },
        path.display(),
        if file.has_none_line() {
            ", and a `none` line"
        } else {
            ""
        }
    ));
    Ok(Some(std::sync::Arc::new(file)))
}

/// Binds `--metrics-listen` (before the node starts, so a taken port refuses the start).
fn bind_metrics(a: &mut ServerArgs) -> Result<(), LockError> {
    if let Some(addr) = a.metrics_listen {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| cannot_start("the metrics endpoint", addr, e))?;
        a.metrics_listener = Some(listener);
    }
    Ok(())
}

/// Starts the metrics endpoint of `node` on the listener `bind_metrics` bound; the line
/// naming its address (stderr) ends in a line feed.
fn start_metrics(
    node: &ClusterNode,
    listener: Option<std::net::TcpListener>,
) -> Result<(Option<udplock::cluster::http::MetricsServer>, String), LockError> {
    let Some(listener) = listener else {
        return Ok((None, String::new()));
    };
    let server = node
        .serve_metrics(listener)
        .map_err(|e| LockError::InternalError(format!("cannot serve metrics: {e}")))?;
    let line = format!(
        "udplock server: metrics on http://{}/metrics (health: /health, /ready)\n",
        server.local_addr()
    );
    Ok((Some(server), line))
}

/// Starting a cluster by joining (spec §8.1; README, "Starting a cluster by joining"): the
/// options of a joined cluster, apart from the static `--peers`.
#[derive(Args)]
struct JoinArgs {
    /// Start a new cluster with this node as its first node: draws a random cluster id,
    /// records it in --data-dir, and holds every shard alone. Once only: later starts of
    /// the same directory need no flag, and a directory that already records a cluster is
    /// refused (so a typo cannot fork a cluster). Needs --node-id and --cluster-key-file.
    #[arg(long, conflicts_with_all = ["peers", "join"])]
    bootstrap: bool,
    /// Join a cluster through any of its nodes: HOST:PORT,... (no peer list). The node learns
    /// the cluster id, the seed's settings (it refuses to start if the settings that must
    /// agree differ) and its members, then joins SWIM with authenticated datagrams. Needs
    /// --node-id and --cluster-key-file: without the key nobody would accept it. A joined
    /// node holds the replicas placement gives it (--replicas, --dead-after).
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "peers",
        value_name = "ADDR,..."
    )]
    join: Option<Vec<String>>,
    /// The address the other nodes use to reach this one (its SWIM update, its entry in
    /// their member tables), default --listen. Required when --listen is 0.0.0.0 or [::]:
    /// an unspecified address cannot be announced. The node's datagrams must come from it
    /// (a node it does not know yet is heard only from the address it announces): on a host
    /// with several addresses, advertise the one its route to the other nodes uses.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Replicas of each shard in a joined cluster (spec §8.13): each shard's replicas are
    /// the N alive members ranked highest by rendezvous hashing, and its leader moves it
    /// there one Raft membership change at a time. 1 to 7; default 3. Ignored with --peers
    /// (a static cluster replicates every shard on every node). Every node should use the
    /// same (each leader applies its own).
    #[arg(long, value_name = "N", value_parser = replicas_arg)]
    replicas: Option<usize>,
    /// How long a member of a joined cluster must have been dead (SWIM) before its replicas
    /// are replaced on other nodes (spec §8.13): a restart or a reboot shorter than
    /// this moves nothing. At least one --swim-period, at most SWIM's dead-member memory
    /// (900 periods); default 1m. Ignored with --peers. Old spelling: --dead-after-ms.
    #[arg(long, alias = "dead-after-ms", value_name = "DURATION",
          value_parser = duration::ms::<0, { u64::MAX }>)]
    dead_after: Option<Duration>,
}

/// `--address-validation`: `on` or `off`.
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

/// `--replicas`: a number in `1..=REPLICAS_MAX` (`placement::validate_replicas`).
fn replicas_arg(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    udplock::core::placement::validate_replicas(n).map_err(|e| e.to_string())?;
    Ok(n)
}

/// The placement of a joined cluster from `--replicas` and `--dead-after` (their
/// defaults where not given).
fn planner(a: &ServerArgs) -> Result<Planner, LockError> {
    Planner::new(
        a.join.replicas.unwrap_or(placement::REPLICAS_DEFAULT),
        a.join
            .dead_after
            .map_or(placement::DEAD_AFTER_DEFAULT, |d| {
                CoreDuration::from_millis(ms_u64(d))
            }),
    )
    .map_err(|e| LockError::InvalidArgument(format!("--replicas: {e}")))
}

/// `udplock server`: a cluster node with `--peers`; of a joined cluster with `--bootstrap`,
/// `--join` or `--node-id` alone; else a single node.
pub fn run(mut a: ServerArgs) -> Result<(), LockError> {
    bind_metrics(&mut a)?;
    if a.peers.is_some() {
        run_cluster(a)
    } else if a.join.bootstrap || a.join.join.is_some() || a.node_id.is_some() {
        run_joined(a)
    } else {
        run_single(a)
    }
}

fn run_single(mut a: ServerArgs) -> Result<(), LockError> {
    let invalid = |e: String| LockError::InvalidArgument(e);
    let durability: Durability = a
        .durability
        .as_deref()
        .unwrap_or("memory")
        .parse()
        .map_err(invalid)?;
    let mut config = SingleConfig::new(a.listen.addr);
    config.cpu = a.cpu;
    config.address_validation = a.address_validation;
    config.client_keys = client_keys(&a)?;
    config.table = table_config(&a);
    config.limits = node_limits(&a);
    config.durability = durability;
    let data_dir_from;
    match durability {
        // No disk: the lease horizon file makes a restart at the same address safe.
        Durability::Memory => {
            data_dir_from = String::new();
            config.state_file = match (a.no_state_file, a.state_file.clone()) {
                (true, _) => None,
                (false, Some(path)) => Some(path),
                (false, None) => default_state_file(a.listen.addr),
            };
        }
        // The Raft log makes restarts safe: no horizon file.
        Durability::Fsync | Durability::Os => {
            let listen = a.listen.addr;
            (config.data_dir, data_dir_from) =
                choose_data_dir(durability, &a, || default_single_data_dir(listen))?;
        }
    }
    let mut cluster = config.cluster_config();
    set_timers(&mut cluster, &a);
    cluster.validate().map_err(invalid)?;
    let state_file = config.state_file.clone();
    let node =
        start_single(cluster.clone()).map_err(|e| cannot_start("the node", a.listen.addr, e))?;
    // A server must keep serving when nobody reads its stderr any more (a closed pipe):
    // these notices are written without eprintln!, which would panic.
    let data = match &cluster.data_dir {
        Some(dir) => format!(", data in {}{data_dir_from}", dir.display()),
        None => String::new(),
    };
    let mut notice_text = format!(
        "udplock server listening on {} ({}a single node, durability {}{data}; Ctrl-C to stop)\n",
        node.local_addr(),
        a.listen.resolved_note(),
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
    let (_metrics, metrics_line) = start_metrics(&node, a.metrics_listener.take())?;
    notice_text.push_str(&metrics_line);
    if durability == Durability::Memory && state_file.is_none() && a.startup_grace.is_zero() {
        notice_text.push_str(
            "udplock server: no lease horizon file; locks are kept in memory, so if \
             this restarts a node at the same address, restart with \
             --startup-grace set to the longest lease its clients use\n",
        );
    }
    notice(&notice_text);
    node.wait()
        .map_err(|e| LockError::InternalError(format!("the node stopped: {e}")))
}

fn run_cluster(mut a: ServerArgs) -> Result<(), LockError> {
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
    if a.listen.addr.ip().is_unspecified() {
        // The list says where the others reach this node; bind every interface on its port.
        let listed = config.listen();
        let advertise = a.join.advertise.as_deref().map(resolve_one).transpose()?;
        if advertise.is_none()
            || advertise != listed
            || listed.map(|l| l.port()) != Some(a.listen.addr.port())
        {
            return Err(invalid(format!(
                "--listen {} is an unspecified address: pass --advertise with this node's \
                 address in --peers (on the same port)",
                a.listen.addr
            )));
        }
        config.bind = Some(a.listen.addr);
    } else if let Some(advertise) = &a.join.advertise {
        if Some(resolve_one(advertise)?) != config.listen() {
            return Err(invalid(format!(
                "--advertise {advertise} differs from this node's address in --peers"
            )));
        }
        // Listed (and reached) at --advertise, bound at --listen: behind a relay or a NAT
        // that forwards the listed address here (`udplock chaos` runs nodes this way).
        if a.listen.addr != default_listen() {
            config.bind = Some(a.listen.addr);
        }
    }
    config.shards = a.shards.unwrap_or(udplock::cluster::SHARDS_DEFAULT);
    config.table = table_config(&a);
    config.limits = node_limits(&a);
    config.durability = durability;
    config.new_cluster = a.new_cluster;
    let (data_dir, data_dir_from) = choose_data_dir(durability, &a, || default_data_dir(node_id))?;
    config.data_dir = data_dir;
    config.cpu = a.cpu;
    config.address_validation = a.address_validation;
    config.client_keys = client_keys(&a)?;
    set_timers(&mut config, &a);
    config.key_file = a.cluster_key_file.clone();
    config.validate().map_err(invalid)?;
    if a.join.replicas.is_some() || a.join.dead_after.is_some() {
        notice(
            "udplock server: --replicas and --dead-after ignored: a static cluster \
             (--peers) holds every shard on every node\n",
        );
    }
    if config.listen() != Some(a.listen.addr)
        && a.listen.addr != default_listen()
        && config.bind.is_none()
    {
        return Err(invalid(format!(
            "--listen {} differs from this node's address in --peers",
            a.listen.addr
        )));
    }
    let shape = format!("node {node_id} of {}", config.peers.len());
    let resolved = a.listen.resolved_note();
    let metrics = a.metrics_listener.take();
    serve(
        config,
        &shape,
        &data_dir_from,
        a.leave_on_stop,
        &resolved,
        metrics,
    )
}

/// Starts the cluster node `config` and serves until a signal (stopping gracefully, and
/// announcing a leave if `leave_on_stop`) or until it stops; `shape` says which node of what
/// it is, `data_dir_from` where the default data directory came from (empty when named).
fn serve(
    config: ClusterConfig,
    shape: &str,
    data_dir_from: &str,
    leave_on_stop: bool,
    resolved: &str,
    metrics: Option<std::net::TcpListener>,
) -> Result<(), LockError> {
    let node_id = config.node_id;
    let durability = config.durability;
    // A refused configuration (a key file, a data directory of another node) is the
    // operator's to fix, not an internal error.
    let bind = config.bind.or(config.listen());
    let node = ClusterNode::start(config.clone()).map_err(|e| match bind {
        Some(addr) => cannot_start(&format!("node {node_id}"), addr, e),
        None => LockError::InternalError(format!("cannot start node {node_id}: {e}")),
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
    let (_metrics, metrics_line) = start_metrics(&node, metrics)?;
    notice(&format!(
        "udplock server: {shape} listening on {} ({resolved}{} shards, durability {}{data}; {authenticated})\n{metrics_line}",
        node.local_addr(),
        config.shards,
        durability.name(),
    ));
    // SIGINT / SIGTERM: stop gracefully, handing every shard this node leads to another
    // node first (leadership transfer), so clients see a redirect, not an election timeout;
    // announce a leave only with --leave-on-stop (a restart should move no replica).
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
            let within = std::time::Duration::from_secs(5);
            let still_led = if leave_on_stop {
                notice(&format!(
                    "udplock server: node {node_id} leaving (--leave-on-stop): handing its \
                     shards over, then announcing its leave (its replicas move to other nodes)\n"
                ));
                node.leave(within)
            } else {
                notice(&format!(
                    "udplock server: node {node_id} stopping: handing its shards over, \
                     announcing no leave (a joined cluster moves its replicas only if it stays \
                     away longer than --dead-after; --leave-on-stop or `udplock remove` \
                     retire a node at once)\n"
                ));
                node.stop(within)
            };
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

/// How long `--join` asks its seeds before it gives up (a node whose data directory makes
/// it the cluster's voter does not wait: it starts, and SWIM finds the others). Long enough
/// for a cluster restarting as a whole to bring its first node up; a service manager
/// restarts a node that gave up.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// A node of a joined cluster (spec §8.1): `--bootstrap` (the first node), `--join` (through
/// seeds), or `--node-id` alone (a restart of the first node, from its data directory).
fn run_joined(mut a: ServerArgs) -> Result<(), LockError> {
    use udplock::cluster::join::{discover, JoinError};
    use udplock::cluster::storage::{read_identity, read_members};
    use udplock::core::node::Joined;
    let invalid = |e: String| LockError::InvalidArgument(e);
    let node_id = a.node_id.ok_or_else(|| {
        invalid(
            "--bootstrap and --join need --node-id (this node's id, unique in the cluster)".into(),
        )
    })?;
    if a.cluster_key_file.is_none() {
        return Err(invalid(
            "a joined cluster needs a cluster key (--cluster-key-file FILE, alias --key-file; \
             make one with `udplock keygen FILE` and give every node the same): nodes accept \
             a node they do not know only from an authenticated datagram, and an \
             unauthenticated join would let any host become a member"
                .into(),
        ));
    }
    if a.new_cluster {
        return Err(invalid(
            "--new-cluster is for the static form (--peers); a joined cluster starts with \
             --bootstrap on its first node"
                .into(),
        ));
    }
    let advertise = match &a.join.advertise {
        Some(addr) => resolve_one(addr)?,
        None => a.listen.addr,
    };
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
        return Err(invalid(format!(
            "--listen {} cannot be announced to the other nodes: pass --advertise HOST:PORT, \
             the address they reach this node at",
            a.listen.addr
        )));
    }
    let durability: Durability = a
        .durability
        .as_deref()
        .unwrap_or("os")
        .parse()
        .map_err(invalid)?;
    let (data_dir, data_dir_from) = choose_data_dir(durability, &a, || default_data_dir(node_id))?;
    let recorded = match &data_dir {
        Some(dir) => read_identity(dir).map_err(|e| invalid(e.to_string()))?,
        None => None,
    };
    let dir_text = data_dir
        .as_ref()
        .map_or_else(String::new, |d| d.display().to_string());
    // The members its last run knew (a hint; none for a new or `memory` node).
    let recorded_members: Vec<(u64, SocketAddr)> = data_dir
        .as_deref()
        .map(read_members)
        .unwrap_or_default()
        .into_iter()
        .filter(|&(id, _)| id != node_id)
        .collect();
    if let Some(r) = &recorded {
        if r.joined.is_none() {
            return Err(invalid(format!(
                "the data directory {dir_text} belongs to node {} of a static cluster \
                 (--peers): start it with --peers, or give this node another --data-dir",
                r.node
            )));
        }
        if r.node != node_id {
            return Err(invalid(format!(
                "the data directory {dir_text} belongs to node {}, not {node_id}: give this \
                 node its own --data-dir",
                r.node
            )));
        }
    }
    let mut config = ClusterConfig::new(node_id, Vec::new());
    config.shards = a.shards.unwrap_or(udplock::cluster::SHARDS_DEFAULT);
    config.table = table_config(&a);
    config.limits = node_limits(&a);
    config.durability = durability;
    config.data_dir = data_dir;
    config.cpu = a.cpu;
    config.address_validation = a.address_validation;
    config.client_keys = client_keys(&a)?;
    set_timers(&mut config, &a);
    config.key_file = a.cluster_key_file.clone();
    config.placement = Some(planner(&a)?);
    if advertise != a.listen.addr {
        config.bind = Some(a.listen.addr);
    }
    // The first node of the cluster holds every shard; its directory says so on restarts.
    let voter = |config: &mut ClusterConfig, cluster_id: u64, seeds| {
        config.peers = vec![(node_id, advertise)];
        config.joined = Some(Joined {
            cluster_id,
            addr: advertise,
            seeds,
        });
        config.identity()
    };
    let recorded_voter = recorded.as_ref().is_some_and(|r| {
        let mut probe = config.clone();
        r.joined
            .is_some_and(|c| voter(&mut probe, c, Vec::new()) == *r)
    });
    let shape;
    if a.join.bootstrap {
        if let Some(r) = &recorded {
            return Err(invalid(format!(
                "--bootstrap: the data directory {dir_text} already records the cluster \
                 {:#018x}; start without --bootstrap to restart this node (a second \
                 bootstrap would make another cluster)",
                r.joined.unwrap_or_default()
            )));
        }
        if durability == Durability::Memory {
            return Err(invalid(
                "--bootstrap needs a data directory (--durability fsync or os): the first \
                 node holds every shard alone, and a restart without its state would forget \
                 the locks clients hold"
                    .into(),
            ));
        }
        // The OS rng, here in the shell: the core draws nothing.
        let cluster_id = loop {
            let id = rand::rngs::OsRng.next_u64();
            if id != 0 {
                break id;
            }
        };
        voter(&mut config, cluster_id, Vec::new());
        config.new_cluster = true;
        shape = format!(
            "node {node_id}, the first of the new cluster {cluster_id:#018x} (holds every shard \
             until others join)"
        );
    } else if a.join.join.is_some()
        || (recorded.is_some() && !recorded_voter && !recorded_members.is_empty())
    {
        // A member restarted without --join asks the members its directory recorded.
        let seeds = match &a.join.join {
            Some(seeds) => resolve(seeds)?,
            None => Vec::new(),
        };
        // What this node would run with, to compare with the seed's settings.
        let mut own = config.clone();
        own.joined = Some(Joined {
            cluster_id: 1,
            addr: advertise,
            seeds: Vec::new(),
        });
        let recorded_id = recorded.as_ref().and_then(|r| r.joined);
        let patience = if recorded_voter {
            std::time::Duration::ZERO
        } else {
            JOIN_PATIENCE
        };
        // The same --join list on every node names this one too: the voter needs nobody.
        let only_me = seeds.iter().all(|&s| s == advertise || s == a.listen.addr);
        // A member also asks the members its directory recorded (its seeds may be gone); the
        // voter, which starts without waiting, takes them as they are if no seed answers.
        let mut asked = seeds.clone();
        if !recorded_voter {
            for &(_, addr) in &recorded_members {
                if !asked.contains(&addr) {
                    asked.push(addr);
                }
            }
        }
        let found = if recorded_voter && only_me {
            None
        } else {
            match discover(&asked, &own.node_config(), recorded_id, patience) {
                Ok(found) => Some(found),
                // The cluster's voter restarts without waiting for the others.
                Err(JoinError::NoAnswer(_)) if recorded_voter => None,
                Err(e) => return Err(invalid(format!("--join: {e}"))),
            }
        };
        let cluster_id = found
            .as_ref()
            .map(|f| f.cluster_id)
            .or(recorded_id)
            .unwrap_or_default();
        let seeds = found.map_or_else(|| recorded_members.clone(), |f| f.seeds);
        if recorded_voter {
            voter(&mut config, cluster_id, seeds);
            // A shard whose first configuration its last run never wrote (marked new, spec
            // §8.1 "The first configuration") starts new again; every other is restored.
            config.new_cluster = true;
            shape = format!(
                "node {node_id} of the cluster {cluster_id:#018x} (the node that bootstrapped it)"
            );
        } else {
            config.joined = Some(Joined {
                cluster_id,
                addr: advertise,
                seeds,
            });
            shape = format!(
                "node {node_id}, joined the cluster {cluster_id:#018x} (a member; placement \
                 gives it replicas)"
            );
        }
    } else {
        match &recorded {
            Some(r) if recorded_voter => {
                let cluster_id = r.joined.unwrap_or_default();
                // The members its last run knew: SWIM joins through them at once (without
                // them it knows nobody until one of them asks it something).
                voter(&mut config, cluster_id, recorded_members.clone());
                // A shard whose first configuration its last run never wrote (marked new, spec
                // §8.1 "The first configuration") starts new again; every other is restored.
                config.new_cluster = true;
                shape =
                    format!("node {node_id} of the cluster {cluster_id:#018x} (the node that bootstrapped it)");
            }
            Some(_) => {
                return Err(invalid(format!(
                    "node {node_id} joined its cluster, and its data directory {dir_text} \
                     records no member to ask: restart it with --join (any member's address) \
                     so that it finds the others"
                )))
            }
            None => {
                return Err(invalid(format!(
                    "--node-id {node_id} alone: pass --peers (a static cluster), --bootstrap \
                     (the first node of a new cluster) or --join ADDR (join one){}",
                    if dir_text.is_empty() {
                        String::new()
                    } else {
                        format!("; the data directory {dir_text} records no cluster")
                    }
                )))
            }
        }
    }
    config.validate().map_err(invalid)?;
    let resolved = a.listen.resolved_note();
    let metrics = a.metrics_listener.take();
    serve(
        config,
        &shape,
        &data_dir_from,
        a.leave_on_stop,
        &resolved,
        metrics,
    )
}

/// Why a node could not start on `addr`, as an operator reads it: a busy port or an address
/// this host does not have named as such (issue 11 item 6: "Address already in use (os error
/// 98)" did not say which address, nor the likely cause); a refused configuration (a key
/// file, a data directory of another node) is the operator's to fix; anything else is an
/// internal error.
fn cannot_start(what: &str, addr: SocketAddr, e: std::io::Error) -> LockError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::AddrInUse => LockError::InvalidArgument(format!(
            "cannot start {what}: address {addr} is already in use (another udplock server?); \
             stop it, or pass another --listen"
        )),
        ErrorKind::AddrNotAvailable => LockError::InvalidArgument(format!(
            "cannot start {what}: address {addr} is not an address of this host; pass one of \
             its addresses (or 0.0.0.0 / [::] with --advertise) as --listen"
        )),
        ErrorKind::InvalidInput => {
            LockError::InvalidArgument(format!("cannot start {what} on {addr}: {e}"))
        }
        _ => LockError::InternalError(format!("cannot start {what} on {addr}: {e}")),
    }
}

/// A node's Raft timers from `--election-timeout` (drawn from [it, 2 x it), heartbeats
/// every fifth of it) and SWIM's period from `--swim-period`: the same for the single
/// node, a static cluster and a joined one.
fn set_timers(config: &mut ClusterConfig, a: &ServerArgs) {
    let election_timeout = ms_u64(a.election_timeout);
    config.raft.election_timeout_min = CoreDuration::from_millis(election_timeout);
    config.raft.election_timeout_max = CoreDuration::from_millis(2 * election_timeout);
    config.raft.heartbeat_interval = CoreDuration::from_millis(election_timeout / 5);
    config.swim_period = CoreDuration::from_millis(ms_u64(a.swim_period));
}

/// The data directory of a node with `durability`: none without a disk, else `--data-dir`,
/// else `default` (under HOME or XDG_STATE_HOME). With it, the words that say where a
/// default came from, for the start-up line (another HOME — a service manager's — is
/// another, empty directory, and the node then starts without its state).
fn choose_data_dir(
    durability: Durability,
    a: &ServerArgs,
    default: impl FnOnce() -> Option<(PathBuf, String)>,
) -> Result<(Option<PathBuf>, String), LockError> {
    match (durability, a.data_dir.clone()) {
        (Durability::Memory, _) => Ok((None, String::new())),
        (_, Some(dir)) => Ok((Some(dir), String::new())),
        (_, None) => {
            let (dir, from) = default().ok_or_else(|| {
                LockError::InvalidArgument("no --data-dir and no home directory".into())
            })?;
            Ok((
                Some(dir),
                format!(" (the default, from {from}; name it with --data-dir)"),
            ))
        }
    }
}

/// One address (`HOST:PORT`), resolved.
fn resolve_one(addr: &str) -> Result<SocketAddr, LockError> {
    Ok(resolve(&[addr.to_string()])?[0])
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

fn node_limits(a: &ServerArgs) -> NodeLimits {
    NodeLimits {
        resources_max: a.resources_per_node_max,
        sessions_max: a.sessions_per_node_max,
        answers_max: a.answers_per_node_max,
        waiters_max: a.waiters_per_node_max,
        log_bytes_max: a.log_bytes_per_node_max,
    }
}

fn table_config(a: &ServerArgs) -> lock_table::Config {
    lock_table::Config {
        ttl_default_ms: ms_u32(a.default_ttl),
        ttl_ms_max: ms_u32(a.ttl_max),
        wait_ms_max: ms_u32(a.wait_max),
        resources_max: a.resources_max,
        waiters_per_resource_max: a.waiters_per_resource_max,
        holds_per_lock_max: a.holds_per_lock_max,
        sessions_max: a.sessions_max,
        startup_grace_ms: ms_u32(a.startup_grace),
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
