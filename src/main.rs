//! The `udplock` command: run a node, take and release locks from the shell, benchmark.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use udplock::bench::{self, BenchConfig, Placement};
use udplock::cluster::storage::Durability;
use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use udplock::core::lock_table;
use udplock::core::time::Duration as CoreDuration;
use udplock::node::{Node, NodeConfig};
use udplock::{json, Client, ClientConfig, Lease, LockError};

/// Prints a line on stdout without ever panicking (see [`out`]). Shadows std's `println!` in
/// this file, so every command's output goes through it.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// Prints a line on stderr, ignoring a closed stderr (std's `eprintln!` would panic).
macro_rules! eprintln {
    ($($arg:tt)*) => {
        $crate::out::error_line(format_args!($($arg)*))
    };
}

/// The command's output. std's `println!` panics when stdout cannot be written, which it
/// cannot once the reader of a pipe has gone: `udplock status | head -1` used to die with
/// "failed printing to stdout: Broken pipe" (exit 101). Decision: a closed stdout (EPIPE) is
/// the reader's choice, not an error: what is left to print is dropped quietly, and the
/// command still finishes and exits with the code of its outcome (an acquire that succeeded
/// is held, exit 0). Any other write error (a full disk) is reported once on stderr and
/// turns a success into exit code 1, since the caller did not get the output it asked for.
mod out {
    use std::fmt;
    use std::io::{self, Write};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Stdout's reader has gone: nothing more is written.
    static CLOSED: AtomicBool = AtomicBool::new(false);
    /// A write to stdout failed otherwise.
    static FAILED: AtomicBool = AtomicBool::new(false);

    pub fn line(args: fmt::Arguments<'_>) {
        if CLOSED.load(Ordering::Relaxed) || FAILED.load(Ordering::Relaxed) {
            return;
        }
        let mut stdout = io::stdout().lock();
        let written = stdout
            .write_fmt(args)
            .and_then(|()| stdout.write_all(b"\n"));
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                CLOSED.store(true, Ordering::Relaxed)
            }
            Err(e) => {
                FAILED.store(true, Ordering::Relaxed);
                error_line(format_args!("udplock: cannot write the output: {e}"));
            }
        }
    }

    pub fn error_line(args: fmt::Arguments<'_>) {
        let mut stderr = io::stderr().lock();
        let _ = stderr
            .write_fmt(args)
            .and_then(|()| stderr.write_all(b"\n"));
    }

    /// True if the output could not be written for a reason other than a closed pipe.
    pub fn failed() -> bool {
        FAILED.load(Ordering::Relaxed)
    }
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success (status of a lock nobody holds too: it says \"free\")
  3  lock acquisition timed out (held by another client for the whole --timeout-ms)
  4  lock not held by this --client (release, renew): another client holds it, or nobody
     does (never acquired, already released, or its lease ran out)
  5  no such resource: configure --default-ttl-ms 0 of a resource the server does not know
  6  unavailable: no answer from the server before the deadline
  1  anything else (bad arguments, overloaded, internal error)";

#[derive(Parser)]
#[command(name = "udplock", version, about = "A distributed lock service over compact UDP datagrams.", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a lock server node (blocks until killed): a single node, or with --peers one node
    /// of a replicated cluster.
    Server(ServerArgs),
    /// Run a local replicated cluster in this process (each node its own thread and socket)
    /// and print the --servers list to use; runs until Ctrl-C.
    Dev(DevArgs),
    /// Take a lock, waiting up to --timeout-ms for it.
    #[command(after_help = EXIT_CODES)]
    Acquire(LockArgs),
    /// Give back one hold of a lock (re-entrant locks need as many releases as acquires).
    #[command(after_help = EXIT_CODES)]
    Release(LockArgs),
    /// Extend the lease of a held lock.
    #[command(after_help = EXIT_CODES)]
    Renew(LockArgs),
    /// Show a lock's holder, hold count, fencing token, remaining TTL and waiters; without a
    /// resource, every shard's leader, term, commit index and locks, as the nodes see them.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Set (or with 0, clear) a resource's default TTL.
    #[command(after_help = EXIT_CODES)]
    Configure(ConfigureArgs),
    /// Measure latency, throughput and failover against the raw UDP round trip (an embedded
    /// 3-node cluster unless --servers; --nodes 1 for a single unreplicated node).
    Bench(BenchArgs),
    /// Run the deterministic cluster simulator (the lock service: shard replicas and clients
    /// under faults, with safety and liveness checkers) for a range of seeds.
    Sim(SimArgs),
    /// Write a new random cluster key to a new file (mode 0600), for --cluster-key-file: copy
    /// it to every node of the cluster. Never replaces an existing file.
    Keygen(KeygenArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// The key file to create (it must not exist).
    path: PathBuf,
}

#[derive(Args)]
struct SimArgs {
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many seeds, from --seed on (a soak: e.g. --seeds 10000).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Simulated seconds of faults per seed (a healed liveness phase of 5 s follows).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

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
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7100")]
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
    /// Where a cluster node keeps its Raft log and vote (with --peers). Default:
    /// $XDG_STATE_HOME/udplock/node-ID (or ~/.local/state/udplock/node-ID), so it depends on
    /// the environment: under a service manager, name it. The node locks it, and it records
    /// which node of which cluster it belongs to (another node refuses it).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// What a cluster node's state survives: fsync (power loss of every node), os (any
    /// process crash, not a power loss), memory (no disk: survives losing a minority of the
    /// nodes' state; a restarted node rejoins by the protocol's rule before it votes).
    #[arg(long, default_value = "os")]
    durability: String,
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
    /// Shards of the cluster (fixed when the cluster is created; same on every node).
    #[arg(long, default_value_t = udplock::cluster::SHARDS_DEFAULT)]
    shards: u32,
    /// Shortest Raft election timeout of every shard, in ms (with --peers): how long a
    /// follower waits for a silent leader before it calls an election, and so about how long
    /// a shard is unavailable after its leader dies. Timeouts are drawn from [this, 2 x this);
    /// heartbeats go out every fifth of it. Longer rides out slow networks and long pauses (a
    /// busy machine) without needless elections; shorter fails over sooner. Nodes may differ.
    #[arg(long, default_value_t = ELECTION_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(ELECTION_TIMEOUT_MS_MIN..=ELECTION_TIMEOUT_MS_MAX))]
    election_timeout_ms: u32,
    /// The cluster key file (with --peers; make one with `udplock keygen`): every
    /// node-to-node datagram is authenticated with its first key, and the keys (or `none`)
    /// on its lines are accepted; at most 2 lines, so keys rotate without downtime (README,
    /// "Securing a cluster"). Re-read when it changes. Without it, peer traffic is NOT
    /// authenticated: any host that can send the nodes UDP can make two clients hold one
    /// lock.
    #[arg(long, env = "UDPLOCK_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
}

#[derive(Args)]
struct DevArgs {
    /// Nodes of the local cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards of the local cluster.
    #[arg(long, default_value_t = udplock::cluster::SHARDS_DEFAULT)]
    shards: u32,
}

#[derive(Args)]
struct ClientArgs {
    /// Server address(es), comma-separated: every node of a cluster (any one is enough to
    /// find the leaders; all of them survive a node's failure).
    #[arg(
        long,
        env = "UDPLOCK_SERVERS",
        default_value = "127.0.0.1:7100",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// Shards of the cluster (routes each request straight to its shard's leader; a
    /// mismatch only costs a redirect).
    #[arg(long, env = "UDPLOCK_SHARDS", default_value_t = udplock::cluster::SHARDS_DEFAULT)]
    shards: u32,
    /// Print one JSON object on stdout instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LockArgs {
    /// The resource to lock (1 to 255 bytes).
    resource: String,
    /// Who holds the lock (1 to 255 bytes). The same --client can release it from another
    /// process.
    #[arg(long)]
    client: String,
    /// How long to wait for the lock (acquire) or for an answer (others), in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Lease length in milliseconds (acquire, renew); omitted or 0: the resource's default
    /// TTL (acquire) or the hold's current TTL (renew).
    #[arg(long)]
    ttl_ms: Option<u32>,
    #[command(flatten)]
    conn: ClientArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// The resource to inspect. Omitted: ask every node of --servers for its view of the
    /// shards (spec §4.7) and print one row per shard (its leader, term, commit index, held
    /// locks and waiters, as the node that leads it says) and one line per node.
    resource: Option<String>,
    #[command(flatten)]
    conn: ClientArgs,
}

impl StatusArgs {
    /// `udplock status` without a resource: the cluster's shards. Every node is asked at once
    /// (an unreachable one costs its timeout, once); for each shard the view of the node that
    /// says it leads, in the highest term, is shown (else the view with the highest term).
    /// Fails only if no node answers.
    fn print_shards(&self, client: &Client) -> Result<(), LockError> {
        use udplock::client::{NodeSettingsReport, ShardInfo, ShardRole, ShardStatusReport};
        let servers = client.servers().to_vec();
        type Asked = (
            Result<ShardStatusReport, LockError>,
            Option<NodeSettingsReport>,
        );
        let asked: Vec<(SocketAddr, Asked)> = std::thread::scope(|scope| {
            let asks: Vec<_> = servers
                .iter()
                .map(|&addr| {
                    let ask = scope.spawn(move || {
                        let shards = client.shard_status(addr);
                        // Only a node that answered is asked for its settings too.
                        let settings = shards
                            .as_ref()
                            .ok()
                            .and_then(|_| client.node_settings(addr).ok());
                        (shards, settings)
                    });
                    (addr, ask)
                })
                .collect();
            asks.into_iter()
                .map(|(addr, ask)| {
                    let result = ask.join().unwrap_or_else(|_| {
                        (
                            Err(LockError::InternalError(
                                "shard status thread panicked".into(),
                            )),
                            None,
                        )
                    });
                    (addr, result)
                })
                .collect()
        });
        let settings: Vec<NodeSettingsReport> =
            asked.iter().filter_map(|(_, (_, s))| s.clone()).collect();
        let views: Vec<(SocketAddr, Result<ShardStatusReport, LockError>)> =
            asked.into_iter().map(|(addr, (r, _))| (addr, r)).collect();
        let answered: Vec<(SocketAddr, &ShardStatusReport)> = views
            .iter()
            .filter_map(|(addr, r)| r.as_ref().ok().map(|r| (*addr, r)))
            .collect();
        if answered.is_empty() {
            // Every node failed: report the first failure (its exit code says which kind).
            let (addr, error) = views
                .into_iter()
                .find_map(|(addr, r)| r.err().map(|e| (addr, e)))
                .ok_or_else(|| LockError::InvalidArgument("no server given".into()))?;
            return Err(match error {
                LockError::Unavailable => LockError::Unavailable,
                e => LockError::InternalError(format!("{addr}: {e}")),
            });
        }
        let address_of = |node: u64| {
            answered
                .iter()
                .find(|(_, r)| r.node_id == node)
                .map(|(addr, _)| *addr)
        };
        let shards_total = answered
            .iter()
            .map(|(_, r)| r.shards.len())
            .max()
            .unwrap_or(0);
        // Per shard: (node that answered, its view); leaders first, then the highest term.
        let best: Vec<Option<(u64, ShardInfo)>> = (0..shards_total)
            .map(|shard| {
                answered
                    .iter()
                    .filter_map(|(_, r)| r.shards.get(shard).map(|info| (r.node_id, *info)))
                    .max_by_key(|(_, info)| (info.role == ShardRole::Leader, info.term))
            })
            .collect();
        let led_by = |node: u64| {
            best.iter()
                .flatten()
                .filter(|(from, info)| *from == node && info.role == ShardRole::Leader)
                .count()
        };
        let json = self.conn.json;
        let mut shard_rows = Vec::new();
        for (shard, view) in best.iter().enumerate() {
            let Some((from, info)) = view else {
                shard_rows.push(if json {
                    format!("{{\"shard\":{shard},\"leader_id\":null}}")
                } else {
                    format!("{shard:>5}  (no node reported this shard)")
                });
                continue;
            };
            // Without a reachable leader, a follower may still name the leader it follows.
            let leader = info.leader_id;
            let leader_addr = leader.and_then(address_of);
            shard_rows.push(if json {
                format!(
                    "{{\"shard\":{shard},\"leader_id\":{},\"leader_address\":{},\"term\":{},\"commit_index\":{},\"applied_index\":{},\"held\":{},\"waiters\":{},\"reported_by\":{from}}}",
                    leader.map_or("null".into(), |id| id.to_string()),
                    leader_addr.map_or("null".into(), |a| json::string(&a.to_string())),
                    info.term,
                    info.commit_index,
                    info.applied_index,
                    info.held,
                    info.waiters,
                )
            } else {
                let leader = match (leader, leader_addr) {
                    (Some(id), Some(addr)) => format!("{id} ({addr})"),
                    (Some(id), None) => id.to_string(),
                    (None, _) => "none".into(),
                };
                format!(
                    "{shard:>5}  {leader:<24}  {:>6}  {:>12}  {:>8}  {:>7}",
                    info.term, info.commit_index, info.held, info.waiters
                )
            });
        }
        // An unanswered read changed nothing: say so more plainly than LockError does.
        let why = |e: &LockError| match e {
            LockError::Unavailable => "no answer before the deadline".to_string(),
            e => e.to_string(),
        };
        let node_rows: Vec<String> = views
            .iter()
            .map(|(addr, r)| match (r, json) {
                (Ok(r), true) => format!(
                    "{{\"address\":{},\"reachable\":true,\"node_id\":{},\"shards\":{},\"leads\":{}}}",
                    json::string(&addr.to_string()),
                    r.node_id,
                    r.shards.len(),
                    led_by(r.node_id)
                ),
                (Err(e), true) => format!(
                    "{{\"address\":{},\"reachable\":false,\"error\":{}}}",
                    json::string(&addr.to_string()),
                    json::string(&why(e))
                ),
                (Ok(r), false) => format!(
                    "node {} at {addr}: reachable, leads {} of {} shards",
                    r.node_id,
                    led_by(r.node_id),
                    r.shards.len()
                ),
                (Err(e), false) => format!("{addr}: unreachable: {}", why(e)),
            })
            .collect();
        let differences = settings_differences(&settings);
        if json {
            let rows: Vec<String> = differences
                .iter()
                .map(|(setting, values)| {
                    let values: Vec<String> = values
                        .iter()
                        .map(|(node, v)| format!("{{\"node_id\":{node},\"value\":{v}}}"))
                        .collect();
                    format!(
                        "{{\"setting\":{},\"must_be_equal\":{},\"values\":[{}]}}",
                        json::string(setting.map_or("cluster_id", |s| s.name())),
                        setting.is_none_or(|s| s.must_be_equal()),
                        values.join(",")
                    )
                })
                .collect();
            println!(
                "{{\"shards_total\":{shards_total},\"shards\":[{}],\"nodes\":[{}],\"settings_differences\":[{}]}}",
                shard_rows.join(","),
                node_rows.join(","),
                rows.join(",")
            );
        } else {
            println!(
                "{:>5}  {:<24}  {:>6}  {:>12}  {:>8}  {:>7}",
                "shard", "leader", "term", "commit index", "held", "waiters"
            );
            for row in shard_rows.iter().chain(&node_rows) {
                println!("{row}");
            }
            if !differences.is_empty() {
                println!("settings differ between nodes (spec §8.10):");
            }
            for (setting, values) in &differences {
                let shown: Vec<String> = values
                    .iter()
                    .map(|(node, v)| match setting {
                        Some(udplock_protocol::Setting::Nodes) | None => {
                            format!("node {node} = {v:#018x}")
                        }
                        Some(_) => format!("node {node} = {v}"),
                    })
                    .collect();
                let why = match setting {
                    Some(s) if !s.must_be_equal() => {
                        "may differ (each leader applies its own): a rolling change not done \
                         everywhere?"
                    }
                    Some(_) => "must be equal: nodes with another value are cut off from the rest",
                    None => {
                        "the cluster ids differ for a reason no setting names (another version?)"
                    }
                };
                println!(
                    "  {}: {} ({why})",
                    setting.map_or("cluster_id", |s| s.name()),
                    shown.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// The settings whose values differ between the nodes that answered (spec §8.10), in
/// registry order, each with every node's value; `None` stands for the cluster id when the
/// ids differ though no setting does. Empty when they all agree.
#[allow(clippy::type_complexity)]
fn settings_differences(
    nodes: &[udplock::client::NodeSettingsReport],
) -> Vec<(Option<udplock_protocol::Setting>, Vec<(u64, u64)>)> {
    let mut out = Vec::new();
    for &setting in udplock_protocol::Setting::ALL {
        let values: Vec<(u64, u64)> = nodes
            .iter()
            .filter_map(|n| {
                n.settings
                    .iter()
                    .find(|(s, _)| *s == setting)
                    .map(|&(_, v)| (n.node_id, v))
            })
            .collect();
        if values.windows(2).any(|w| w[0].1 != w[1].1) {
            out.push((Some(setting), values));
        }
    }
    let ids: Vec<(u64, u64)> = nodes.iter().map(|n| (n.node_id, n.cluster_id)).collect();
    let must_differ = out
        .iter()
        .any(|(s, _)| s.is_some_and(|s| s.must_be_equal()));
    if ids.windows(2).any(|w| w[0].1 != w[1].1) && !must_differ {
        out.push((None, ids));
    }
    out
}

#[derive(Args)]
struct ConfigureArgs {
    /// The resource to configure.
    resource: String,
    /// Default lease for acquires that name no TTL; 0 clears it (server default applies).
    #[arg(long)]
    default_ttl_ms: u32,
    #[command(flatten)]
    conn: ClientArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// Measure a running service instead of an embedded one: every node's address (all go to
    /// the client, which finds each shard's leader).
    #[arg(long, env = "UDPLOCK_SERVERS", value_delimiter = ',')]
    servers: Option<Vec<String>>,
    /// Nodes of the embedded replicated cluster; 1 runs a single unreplicated node instead.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards of the embedded cluster (and the shard count the clients assume with --servers).
    #[arg(long, default_value_t = udplock::cluster::SHARDS_DEFAULT)]
    shards: u32,
    /// Samples per latency phase.
    #[arg(long, default_value_t = 20_000)]
    iterations: u64,
    /// Locks held by another client during the uncontended phase; several values make several
    /// runs (e.g. 1000,1000000 for the scale check).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    held: Vec<u64>,
    /// Numbers of clients contending for one lock, one run each.
    #[arg(long, value_delimiter = ',', default_value = "4,64")]
    contenders: Vec<usize>,
    /// Length of each contention run in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    contention_ms: u64,
    /// Numbers of client threads looping acquire+release on their own resources, one
    /// throughput run each (later runs are compared with the first).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    throughput_clients: Vec<usize>,
    /// Length of each throughput run in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    throughput_ms: u64,
    /// Failover samples (embedded cluster of 3 nodes or more): each starts a fresh cluster and
    /// kills a shard's leader; 0 skips the phase.
    #[arg(long, default_value_t = 5)]
    failovers: u32,
    /// Thread placements to measure, comma-separated: one-cpu (client, echo and nodes pinned
    /// to one CPU), two-cpus (client on one CPU, echo and every node on another). Default:
    /// both when embedded on a machine with two CPUs or more; unpinned with --servers.
    #[arg(long, value_delimiter = ',')]
    placement: Option<Vec<String>>,
    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Warnings and errors; and the key reloads, which an operator rotating keys waits for
    // on every node (README, "Securing a cluster").
    env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or(format!("warn,{}=info", udplock::cluster::keys::LOG_TARGET)),
    )
    .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; every usage error is exit code 1.
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli.command) {
        Ok(()) if out::failed() => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udplock: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The answer to `acquire` and `renew`: one JSON object (resource, client, token,
/// hold_count, ttl_ms) or a sentence. The lease shown is the one the hold has from the reply
/// on (spec §6.4), which after a renewal may be longer than the --ttl-ms asked for.
fn print_lease(verb: &str, a: &LockArgs, lease: &Lease) {
    if a.conn.json {
        println!(
            "{{\"resource\":{},\"client\":{},\"token\":{},\"hold_count\":{},\"ttl_ms\":{}}}",
            json::string(&a.resource),
            json::string(&a.client),
            lease.fencing_token,
            lease.hold_count,
            lease.ttl_ms
        );
    } else {
        println!(
            "{verb} {} for {}: fencing token {}, hold count {}, lease {} ms",
            a.resource, a.client, lease.fencing_token, lease.hold_count, lease.ttl_ms
        );
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

/// The wire's "0 = default" spelled as the client API's `None`.
fn nonzero(ttl_ms: Option<u32>) -> Option<u32> {
    ttl_ms.filter(|&t| t != 0)
}

fn resolve(servers: &[String]) -> Result<Vec<SocketAddr>, LockError> {
    let mut out = Vec::new();
    for s in servers.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let addrs = s
            .to_socket_addrs()
            .map_err(|e| LockError::InvalidArgument(format!("server address {s:?}: {e}")))?;
        out.extend(addrs.take(1));
    }
    if out.is_empty() {
        return Err(LockError::InvalidArgument(
            "no server address: pass --servers HOST:PORT or set UDPLOCK_SERVERS".into(),
        ));
    }
    Ok(out)
}

/// A client for the command's servers; `timeout_ms` bounds the wait for an answer to
/// release, renew, status and configure (an acquire's wait is its own `--timeout-ms`).
fn connect(conn: &ClientArgs, timeout_ms: Option<u64>) -> Result<Client, LockError> {
    let mut config = ClientConfig::new(resolve(&conn.servers)?);
    config.shards = conn.shards;
    if let Some(t) = timeout_ms {
        config.request_timeout_ms = t;
    }
    Client::new(config)
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
            let addr = resolve(&[addr.to_string()]).map_err(|e| bad(e.to_string()))?[0];
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

/// Writes a notice to stderr without panicking when nobody reads it any more.
fn notice(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}

fn run_cluster_server(a: ServerArgs) -> Result<(), LockError> {
    let invalid = |e: String| LockError::InvalidArgument(e);
    let peers = parse_peers(a.peers.as_deref().unwrap_or_default())?;
    let node_id = a
        .node_id
        .ok_or_else(|| invalid("--node-id is required".into()))?;
    let durability: Durability = a.durability.parse().map_err(invalid)?;
    let mut config = ClusterConfig::new(node_id, peers);
    config.shards = a.shards;
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

fn run_dev(a: DevArgs) -> Result<(), LockError> {
    if a.nodes == 0 {
        return Err(LockError::InvalidArgument(
            "--nodes must be at least 1".into(),
        ));
    }
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = a.shards;
    // start_local_cluster gives the nodes a new random key (template.keys is None).
    let nodes = start_local_cluster(a.nodes, &template)
        .map_err(|e| LockError::InternalError(format!("cannot start the cluster: {e}")))?;
    let servers: Vec<String> = nodes.iter().map(|n| n.local_addr().to_string()).collect();
    println!("UDPLOCK_SERVERS={}", servers.join(","));
    notice(&format!(
        "udplock dev: {} nodes, {} shards, in memory, peer traffic authenticated with a \
         random key (Ctrl-C to stop). Try:\n  \
         udplock acquire --servers {} orders/42 --client me\n",
        a.nodes,
        a.shards,
        servers.join(",")
    ));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    for node in nodes {
        node.wait().map_err(LockError::InternalError)?;
    }
    Ok(())
}

/// `udplock keygen PATH`: a new random key in a new file, mode 0600.
fn run_keygen(a: KeygenArgs) -> Result<(), LockError> {
    use udplock::cluster::keys;
    let key = keys::random_key();
    keys::create(&a.path, &[Some(key)]).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => LockError::InvalidArgument(format!(
            "{} exists: not replaced (a key in use would be lost); remove it first or name \
             another file",
            a.path.display()
        )),
        _ => LockError::InternalError(format!("cannot write {}: {e}", a.path.display())),
    })?;
    let id = udplock_protocol::ClusterKey::new(&key).id();
    println!(
        "wrote a new cluster key (key id {id:08x}) to {} (mode 0600). Copy it to every node, \
         keeping it secret, and start each with --cluster-key-file {}",
        a.path.display(),
        a.path.display()
    );
    Ok(())
}

fn run(command: Command) -> Result<(), LockError> {
    match command {
        Command::Server(a) if a.peers.is_some() => run_cluster_server(a),
        Command::Dev(a) => run_dev(a),
        Command::Keygen(a) => run_keygen(a),
        Command::Server(a) => {
            let mut config = NodeConfig::new(a.listen);
            config.cpu = a.cpu;
            config.state_file = match (a.no_state_file, a.state_file.clone()) {
                (true, _) => None,
                (false, Some(path)) => Some(path),
                (false, None) => default_state_file(a.listen),
            };
            config.table = lock_table::Config {
                fencing_token_first: config.table.fencing_token_first,
                ..table_config(&a)
            };
            config
                .table
                .validate()
                .map_err(|e| LockError::InvalidArgument(e.to_string()))?;
            let state_file = config.state_file.clone();
            let node = Node::start(config).map_err(|e| {
                LockError::InternalError(format!("cannot listen on {}: {e}", a.listen))
            })?;
            // A server must keep serving when nobody reads its stderr any more (a closed pipe):
            // these notices are written without eprintln!, which would panic.
            let mut notice = format!(
                "udplock server listening on {} (Ctrl-C to stop)\n",
                node.local_addr()
            );
            if a.cluster_key_file.is_some() {
                notice.push_str(
                    "udplock server: --cluster-key-file ignored: a single node (no --peers) \
                     has no peer traffic\n",
                );
            }
            if state_file.is_none() && a.startup_grace_ms == 0 {
                notice.push_str(
                    "udplock server: no lease horizon file; locks are kept in memory, so if \
                     this restarts a node at the same address, restart with \
                     --startup-grace-ms set to the longest lease its clients use\n",
                );
            }
            let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
            node.wait();
            Ok(())
        }
        Command::Acquire(a) => {
            let client = connect(&a.conn, None)?;
            let lease = client.acquire(&a.resource, &a.client, a.timeout_ms, nonzero(a.ttl_ms))?;
            print_lease("acquired", &a, &lease);
            Ok(())
        }
        Command::Release(a) => {
            let client = connect(&a.conn, Some(a.timeout_ms))?;
            let left = client.release(&a.resource, &a.client)?;
            if a.conn.json {
                println!(
                    "{{\"resource\":{},\"client\":{},\"hold_count\":{}}}",
                    json::string(&a.resource),
                    json::string(&a.client),
                    left
                );
            } else if left == 0 {
                println!("released {} (now free of {})", a.resource, a.client);
            } else {
                println!(
                    "released one hold of {}; {} still holds it {left} time(s)",
                    a.resource, a.client
                );
            }
            Ok(())
        }
        Command::Renew(a) => {
            let client = connect(&a.conn, Some(a.timeout_ms))?;
            let lease = client.renew(&a.resource, &a.client, nonzero(a.ttl_ms))?;
            print_lease("renewed", &a, &lease);
            Ok(())
        }
        Command::Status(a) => {
            let client = connect(&a.conn, None)?;
            let Some(resource) = a.resource.as_deref() else {
                return a.print_shards(&client);
            };
            let s = client.status(resource)?;
            if a.conn.json {
                // `held` says free or held even when the holder's id did not fit (spec §5.3:
                // a lock is free exactly when its hold count is 0).
                println!(
                    "{{\"resource\":{},\"held\":{},\"holder\":{},\"holder_truncated\":{},\"hold_count\":{},\"token\":{},\"remaining_ttl_ms\":{},\"waiters\":{}}}",
                    json::string(resource),
                    s.hold_count > 0,
                    s.holder.as_deref().map_or("null".to_string(), json::string),
                    s.holder_truncated,
                    s.hold_count,
                    s.fencing_token,
                    s.remaining_ttl_ms,
                    s.waiter_count
                );
            } else {
                let holder = match (&s.holder, s.holder_truncated) {
                    (Some(h), _) => h.as_str(),
                    (None, true) => "a client whose id did not fit in the reply",
                    (None, false) => "",
                };
                if s.hold_count == 0 {
                    println!("{resource}: free, {} waiting", s.waiter_count);
                } else {
                    println!(
                        "{resource}: held by {holder} (hold count {}, fencing token {}, {} ms left), {} waiting",
                        s.hold_count,
                        s.fencing_token,
                        s.remaining_ttl_ms,
                        s.waiter_count
                    );
                }
            }
            Ok(())
        }
        Command::Configure(a) => {
            let client = connect(&a.conn, None)?;
            let ttl = (a.default_ttl_ms != 0).then_some(a.default_ttl_ms);
            client.configure(&a.resource, ttl)?;
            if a.conn.json {
                println!(
                    "{{\"resource\":{},\"default_ttl_ms\":{}}}",
                    json::string(&a.resource),
                    a.default_ttl_ms
                );
            } else if a.default_ttl_ms == 0 {
                println!(
                    "{}: default TTL cleared (server default applies)",
                    a.resource
                );
            } else {
                println!("{}: default TTL {} ms", a.resource, a.default_ttl_ms);
            }
            Ok(())
        }
        Command::Sim(a) => {
            let started = std::time::Instant::now();
            let (mut simulated_us, mut failed) = (0u64, 0u64);
            for seed in a.seed..a.seed.saturating_add(a.seeds) {
                match udplock::sim::run(&udplock::sim::SimConfig::new(seed, a.nodes, a.seconds)) {
                    Ok(r) => {
                        simulated_us += r.simulated.as_micros();
                        if a.seeds == 1 {
                            println!("seed {seed}: ok, {r:?}");
                        }
                    }
                    Err(f) => {
                        failed += 1;
                        println!("{f}");
                    }
                }
            }
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{} seed(s), {failed} failed; {:.0} simulated s in {wall:.1} wall s ({:.0}x)",
                a.seeds,
                simulated_us as f64 / 1e6,
                simulated_us as f64 / 1e6 / wall.max(1e-9)
            );
            if failed > 0 {
                return Err(LockError::InternalError(format!(
                    "{failed} simulation seed(s) failed"
                )));
            }
            Ok(())
        }
        Command::Bench(a) => {
            let servers = match &a.servers {
                Some(s) => resolve(s)?,
                None => Vec::new(),
            };
            let config = BenchConfig {
                servers,
                nodes: a.nodes,
                shards: a.shards,
                iterations: a.iterations.max(1),
                held: a.held,
                throughput_clients: a.throughput_clients,
                throughput_ms: a.throughput_ms,
                contenders: a.contenders,
                contention_ms: a.contention_ms,
                failovers: a.failovers,
                progress: !a.json,
            };
            config.validate()?;
            let placements = match &a.placement {
                None => bench::default_placements(&config),
                Some(names) => names
                    .iter()
                    .map(|n| match n.trim() {
                        "one-cpu" => Ok(Placement::OneCpu),
                        "two-cpus" => Ok(Placement::TwoCpus),
                        "unpinned" => Ok(Placement::Unpinned),
                        other => Err(LockError::InvalidArgument(format!(
                            "--placement {other:?}: expected one-cpu, two-cpus or unpinned"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if !a.json {
                println!("target: {}", config.target_label());
                println!("{}", bench::table_header());
            }
            let report = bench::run(&config, &placements, |p| {
                if !a.json {
                    println!("{}", bench::format_phase(p));
                }
            })?;
            if a.json {
                println!("{}", bench::to_json(&report));
            } else {
                println!(
                    "target: {}; {} CPUs; ratios are p50 / the raw UDP round-trip p50 of the same \
                     placement in this run",
                    report.target, report.cpus
                );
                for note in &report.notes {
                    println!("note: {note}");
                }
            }
            Ok(())
        }
    }
}
