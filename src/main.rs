//! The `udplock` command: run a node, take and release locks from the shell, benchmark.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use udplock::bench::{self, BenchConfig, Placement};
use udplock::core::lock_table;
use udplock::node::{Node, NodeConfig};
use udplock::{json, Client, ClientConfig, Lease, LockError};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  3  lock acquisition timed out (held by another client for the whole --timeout-ms)
  4  lock not held by this --client (release, renew)
  5  no such resource (the server does not know it)
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
    /// Run a lock server node (blocks until killed).
    Server(ServerArgs),
    /// Take a lock, waiting up to --timeout-ms for it.
    #[command(after_help = EXIT_CODES)]
    Acquire(LockArgs),
    /// Give back one hold of a lock (re-entrant locks need as many releases as acquires).
    #[command(after_help = EXIT_CODES)]
    Release(LockArgs),
    /// Extend the lease of a held lock.
    #[command(after_help = EXIT_CODES)]
    Renew(LockArgs),
    /// Show a lock's holder, hold count, fencing token, remaining TTL and waiters.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Set (or with 0, clear) a resource's default TTL.
    #[command(after_help = EXIT_CODES)]
    Configure(ConfigureArgs),
    /// Measure latency against the raw UDP round trip (embedded node unless --servers).
    Bench(BenchArgs),
    /// Run the deterministic cluster simulator (Raft under faults) for a range of seeds.
    Sim(SimArgs),
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
}

#[derive(Args)]
struct ClientArgs {
    /// Server address(es), comma-separated. This version uses the first (the others are for
    /// the replicated cluster to come).
    #[arg(
        long,
        env = "UDPLOCK_SERVERS",
        default_value = "127.0.0.1:7100",
        value_delimiter = ','
    )]
    servers: Vec<String>,
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
    /// The resource to inspect.
    resource: String,
    #[command(flatten)]
    conn: ClientArgs,
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
    /// Measure a running node instead of an embedded one.
    #[arg(long, env = "UDPLOCK_SERVERS", value_delimiter = ',')]
    servers: Option<Vec<String>>,
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
    /// Thread placements to measure, comma-separated: one-cpu (client, echo and node pinned
    /// to one CPU), two-cpus (client on one CPU, echo and node on another). Default: both with
    /// an embedded node on a machine with two CPUs or more; unpinned with --servers.
    #[arg(long, value_delimiter = ',')]
    placement: Option<Vec<String>>,
    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udplock: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The answer to `acquire` and `renew`: one JSON object (resource, client, token,
/// hold_count, ttl_ms) or a sentence.
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
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let name = format!("node-{}-{}.horizon", listen.ip(), listen.port()).replace(':', "_");
    Some(base.join("udplock").join(name))
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
    if let Some(t) = timeout_ms {
        config.request_timeout_ms = t;
    }
    Client::new(config)
}

fn run(command: Command) -> Result<(), LockError> {
    match command {
        Command::Server(a) => {
            let mut config = NodeConfig::new(a.listen);
            config.cpu = a.cpu;
            config.state_file = match (a.no_state_file, a.state_file.clone()) {
                (true, _) => None,
                (false, Some(path)) => Some(path),
                (false, None) => default_state_file(a.listen),
            };
            config.table = lock_table::Config {
                ttl_default_ms: a.ttl_default_ms,
                ttl_ms_max: a.ttl_ms_max,
                wait_ms_max: a.wait_ms_max,
                resources_max: a.resources_max,
                waiters_per_resource_max: a.waiters_per_resource_max,
                holds_per_lock_max: a.holds_per_lock_max,
                sessions_max: a.sessions_max,
                startup_grace_ms: a.startup_grace_ms,
                ..config.table
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
            let s = client.status(&a.resource)?;
            if a.conn.json {
                println!(
                    "{{\"resource\":{},\"holder\":{},\"holder_truncated\":{},\"hold_count\":{},\"token\":{},\"remaining_ttl_ms\":{},\"waiters\":{}}}",
                    json::string(&a.resource),
                    s.holder.as_deref().map_or("null".to_string(), json::string),
                    s.holder_truncated,
                    s.hold_count,
                    s.fencing_token,
                    s.remaining_ttl_ms,
                    s.waiter_count
                );
            } else {
                match &s.holder {
                    Some(h) => println!(
                        "{}: held by {h} (hold count {}, fencing token {}, {} ms left), {} waiting",
                        a.resource,
                        s.hold_count,
                        s.fencing_token,
                        s.remaining_ttl_ms,
                        s.waiter_count
                    ),
                    None => println!("{}: free, {} waiting", a.resource, s.waiter_count),
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
            let server = match &a.servers {
                Some(s) => Some(resolve(s)?[0]),
                None => None,
            };
            let config = BenchConfig {
                server,
                iterations: a.iterations.max(1),
                held: a.held,
                contenders: a.contenders,
                contention_ms: a.contention_ms,
                progress: !a.json,
            };
            let placements = match &a.placement {
                None => bench::default_placements(server),
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
            }
            Ok(())
        }
    }
}
