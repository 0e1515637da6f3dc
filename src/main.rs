//! The `udplock` command: run a node, take and release locks from the shell, benchmark.
//!
//! This file parses the command line and turns a command's outcome into its exit code; each
//! command is a module of `cmd` (its options, whose doc comments are its `--help`, and its
//! `run`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use cmd::Failure;

/// Prints a line on stdout without ever panicking (see `cmd::out`). Shadows std's `println!` in
/// this file and in every command module (declared below it), so every command's output goes
/// through it.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::cmd::out::line(format_args!($($arg)*))
    };
}

/// Prints a line on stderr, ignoring a closed stderr (std's `eprintln!` would panic).
macro_rules! eprintln {
    ($($arg:tt)*) => {
        $crate::cmd::out::error_line(format_args!($($arg)*))
    };
}

mod cmd;

use cmd::bench::BenchArgs;
use cmd::chaos::ChaosArgs;
use cmd::dev::DevArgs;
use cmd::keygen::KeygenArgs;
use cmd::lock::{ConfigureArgs, LockArgs};
use cmd::remove::RemoveArgs;
use cmd::run::RunArgs;
use cmd::server::ServerArgs;
use cmd::sim::SimArgs;
use cmd::status::StatusArgs;
use cmd::swim_sim::SwimSimArgs;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (status of a lock nobody holds too: it says \"free\")
  3  lock acquisition timed out (held by another client for the whole --timeout)
  4  lock not held by this --client (release, renew): another client holds it, or nobody
     does (never acquired, already released, or its lease ran out)
  5  no such resource: configure --default-ttl 0 of a resource the server does not know
  6  unavailable: no answer from the server before the deadline
  7  unauthenticated: the servers require a client key (--client-key-file), or do not
     know this one
  8  forbidden: the client key does not authorize this --client (its prefixes in the
     servers' client key file do not cover it)
  1  anything else (bad arguments, overloaded, internal error)";

#[derive(Parser)]
#[command(name = "udplock", version, about = "A distributed lock service over compact UDP datagrams.", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and moved into its command: the size of the server's options is no cost.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a lock server node (blocks until killed): a single node, or with --peers one node
    /// of a replicated cluster.
    Server(ServerArgs),
    /// Run a local replicated cluster in this process (each node its own thread and socket)
    /// and print the --servers list to use; runs until Ctrl-C.
    Dev(DevArgs),
    /// Take a lock, waiting up to --timeout for it.
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
    /// 3-node cluster unless --servers; --nodes 1 for a single node, one voter and one shard).
    Bench(BenchArgs),
    /// Run the deterministic cluster simulator (the lock service: shard replicas and clients
    /// under faults, with safety and liveness checkers) for a range of seeds.
    Sim(SimArgs),
    /// Run the SWIM-only scale simulation (membership and failure detection, 8 to 1,000
    /// simulated members) and print its table: time to detect a crash, messages per member per
    /// protocol period, false positives under loss and pauses with and without Lifeguard.
    SwimSim(SwimSimArgs),
    /// Retire a cluster member that is gone for good (a dead machine, replaced by a new node
    /// at a new address): an authenticated REMOVE (--cluster-key-file) to one node, which
    /// holds it left and gossips it. Refused (exit code 1) for a member held alive or at
    /// another incarnation; exit code 6 if no node answers.
    Remove(RemoveArgs),
    /// Write a new random cluster key to a new file (mode 0600), for --cluster-key-file: copy
    /// it to every node of the cluster; with --client --prefix P, a new client key line (to a
    /// new file, or stdout) for the servers' and a team's --client-key-file. Never replaces
    /// an existing file.
    Keygen(KeygenArgs),
    /// Run a command while holding a lock: take it (waiting up to --wait), run CMD with
    /// UDPLOCK_FENCING_TOKEN and UDPLOCK_RESOURCE in its environment, renew the lock while
    /// it runs, release it when it exits, and exit with its exit code. Stops the command if
    /// the lock is being lost.
    #[command(after_help = cmd::run::EXIT_CODES)]
    Lock(RunArgs),
    /// Run the chaos suite: 3 to 5 `udplock server` processes on loopback behind a relay
    /// that partitions, drops, delays and duplicates, a recorded client workload, kills,
    /// pauses and restarts on a seeded schedule, then the simulator's checkers (mutual
    /// exclusion, fencing order) and a liveness check. Exit code 1 on a violation.
    Chaos(ChaosArgs),
}

fn main() -> ExitCode {
    // Options also from UDPLOCK_* environment variables (see `cmd::args::with_environment`).
    let cli = cmd::args::with_environment(Cli::command())
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    // Warnings and errors; the key reloads, which an operator rotating keys waits for on
    // every node (README, "Securing a cluster"); membership news (README, "Membership"); and
    // the shards placement moves (README, "Placement"). The simulator's nodes meet faults on
    // purpose and would say so on every seed: only its own report, unless RUST_LOG asks.
    let default = match &cli {
        Ok(Cli {
            command: Command::Sim(_),
        }) => "off".to_string(),
        _ => format!(
            "warn,{}=info,{}=info,{}=info",
            udplock::cluster::keys::LOG_TARGET,
            udplock::cluster::MEMBERS_LOG_TARGET,
            udplock::core::node::placing::PLACEMENT_LOG_TARGET
        ),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    let cli = match cli {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; every usage error is exit code 1, except
            // for `lock`, whose codes below 123 are its command's (see `cmd::run`).
            let lock = std::env::args_os().nth(1).is_some_and(|a| a == "lock");
            return if !e.use_stderr() {
                ExitCode::SUCCESS
            } else if lock {
                ExitCode::from(cmd::run::EXIT_FAILED)
            } else {
                ExitCode::from(1)
            };
        }
    };
    if let Command::Lock(a) = cli.command {
        return ExitCode::from(cmd::run::run(a));
    }
    match run(cli.command) {
        Ok(()) if cmd::out::failed() => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udplock: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    let outcome = match command {
        Command::Server(a) => cmd::server::run(a),
        Command::Dev(a) => cmd::dev::run(a),
        Command::Acquire(a) => cmd::lock::acquire(a),
        Command::Release(a) => cmd::lock::release(a),
        Command::Renew(a) => cmd::lock::renew(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Configure(a) => cmd::lock::configure(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Sim(a) => cmd::sim::run(a),
        Command::SwimSim(a) => cmd::swim_sim::run(a),
        // The one command the service can refuse (spec §4.10).
        Command::Remove(a) => return cmd::remove::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Chaos(a) => return cmd::chaos::run(a),
        Command::Lock(_) => unreachable!("`lock` exits with its command's code (main)"),
    };
    Ok(outcome?)
}
