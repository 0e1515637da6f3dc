//! `udplock chaos`: the chaos suite (README, "Chaos testing"): real `udplock server`
//! processes on loopback behind a fault-injecting relay, a recorded client workload, and the
//! simulator's checkers over its history. The work is in `udplock::chaos`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::duration::parse_duration;
use super::Failure;
use udplock::chaos::Partitions;
use udplock::LockError;

#[derive(Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule (and of the relay's and clients' draws): the same seed
    /// gives the same faults (the processes' timing differs from run to run). Default: from
    /// the clock, printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size, 3 to 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long faults are injected: 60s, 10m (a bare number is ms). Healing and the
    /// liveness check follow.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The nodes' --durability: fsync, os or memory (memory: a killed node restarts with no
    /// state; no total restarts).
    #[arg(long, default_value = "os")]
    durability: String,
    /// Client threads, each its own client and client id.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Hot resources they contend for.
    #[arg(long, default_value_t = 3)]
    resources: usize,
    /// The nodes' --shards.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// The nodes' --election-timeout.
    #[arg(long, default_value = "150ms")]
    election_timeout: String,
    /// A joined cluster (node 1 --bootstrap, every node --join with the whole list) instead
    /// of static --peers; needs --durability fsync or os.
    #[arg(long)]
    joined: bool,
    /// The --dead-after of a joined cluster's nodes (short: replicas move while faults run).
    #[arg(long)]
    dead_after: Option<String>,
    /// What cuts node pairs apart: `relay` (the relay drops their datagrams; runs anywhere)
    /// or `iptables` (DROP rules in the kernel between the nodes' own addresses, the nodes
    /// talking directly, so loss, duplication and delay reach the clients' traffic only;
    /// needs the iptables program and root).
    #[arg(long, default_value = "relay", value_parser = ["relay", "iptables"])]
    partitions: String,
    /// The `udplock` binary the nodes run (default: this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Node i is listed (where the relay listens) at 127.0.0.(FIRST_HOST + i) and bound at
    /// 127.0.1.(FIRST_HOST + i) (with --partitions iptables, listed there too).
    #[arg(long, default_value_t = 11)]
    first_host: u8,
    /// Keep the run directory (data, the nodes' stderr) after a run without violations too.
    #[arg(long)]
    keep: bool,
    /// To check the checkers only: the clients believe in every lease this much longer than
    /// the spec allows (e.g. 2s), so the run must report violations (exit code 1).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    unsafe_believe_extra: Duration,
}

pub fn run(a: ChaosArgs) -> Result<(), Failure> {
    let invalid = |e: String| Failure::Lock(LockError::InvalidArgument(e));
    if !["fsync", "os", "memory"].contains(&a.durability.as_str()) {
        return Err(invalid(format!(
            "--durability must be fsync, os or memory, got {}",
            a.durability
        )));
    }
    if a.clients == 0 || a.resources == 0 {
        return Err(invalid(
            "--clients and --resources must be at least 1".into(),
        ));
    }
    if usize::from(a.first_host) + a.nodes > 255 || a.first_host == 0 {
        return Err(invalid(
            "--first-host must leave room for every node below 255".into(),
        ));
    }
    let bin = match a.bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .map_err(|e| invalid(format!("cannot find this binary (pass --bin): {e}")))?,
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    let partitions = match a.partitions.as_str() {
        "iptables" => Partitions::Iptables,
        _ => Partitions::Relay,
    };
    // The Cluster and the Firewall are dropped on return and on a panic, not when a signal
    // ends the process: kill the nodes and delete this process's iptables chains then. (A
    // run killed otherwise leaves its chains to the next iptables run, which deletes those
    // of dead processes.)
    let pid = std::process::id();
    ctrlc::set_handler(move || {
        udplock::chaos::cluster::kill_all();
        eprintln!("chaos: interrupted; the nodes killed");
        if partitions == Partitions::Iptables {
            udplock::chaos::iptables::remove_chains_of(pid);
            eprintln!("chaos: this run's iptables chains deleted");
        }
        std::process::exit(130);
    })
    .map_err(|e| invalid(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    let config = udplock::chaos::Config {
        seed,
        nodes: a.nodes,
        duration: a.duration,
        durability: a.durability,
        clients: a.clients,
        resources: a.resources,
        shards: a.shards,
        election_timeout: a.election_timeout,
        joined: a.joined,
        dead_after: a.dead_after,
        partitions,
        bin,
        first_host: a.first_host,
        keep: a.keep,
        unsafe_believe_extra_ms: a.unsafe_believe_extra.as_millis() as u64,
    };
    println!(
        "chaos: seed {seed}, {} nodes, {} of faults, partitions by {}",
        config.nodes,
        super::duration::format(config.duration),
        partitions.name()
    );
    // A run that could not start or finish its set-up tested nothing: exit code 2, not the
    // violation's 1.
    let summary = udplock::chaos::run(&config).map_err(Failure::Setup)?;
    print!("{summary}");
    if summary.violations.is_empty() {
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "{} violation(s) with seed {seed}",
            summary.violations.len()
        )))
    }
}
