//! `udplock bench`: the benchmark runner ([`udplock::bench`]) with the command's options,
//! printing a table as each phase completes, or one JSON object.

use std::time::Duration;

use clap::Args;
use udplock::bench::{self, BenchConfig, Placement};
use udplock::LockError;

use super::args::resolve;
use super::duration::ms_u64;

#[derive(Args)]
pub struct BenchArgs {
    /// Measure a running service instead of an embedded one: every node's address (all go to
    /// the client, which finds each shard's leader).
    #[arg(long, env = "UDPLOCK_SERVERS", value_delimiter = ',')]
    servers: Option<Vec<String>>,
    /// Nodes of the embedded replicated cluster; 1 runs a single node (one voter, one shard)
    /// instead.
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
    /// Length of each contention run: 2s, 500ms (a bare number is ms). Old spelling:
    /// --contention-ms.
    #[arg(long, alias = "contention-ms", value_name = "DURATION", default_value = "2s",
          value_parser = super::duration::ms::<1, { u64::MAX }>)]
    contention_time: Duration,
    /// Numbers of client threads looping acquire+release on their own resources, one
    /// throughput run each (later runs are compared with the first).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    throughput_clients: Vec<usize>,
    /// Length of each throughput run: 2s, 500ms (a bare number is ms). Old spelling:
    /// --throughput-ms.
    #[arg(long, alias = "throughput-ms", value_name = "DURATION", default_value = "2s",
          value_parser = super::duration::ms::<1, { u64::MAX }>)]
    throughput_time: Duration,
    /// Failover samples (embedded cluster of 3 nodes or more): each starts a fresh cluster and
    /// kills a shard's leader; 0 skips the phase.
    #[arg(long, default_value_t = 5)]
    failovers: u32,
    /// Thread placements to measure, comma-separated: one-cpu (client, echo and nodes pinned
    /// to one CPU), two-cpus (client on one CPU, echo and every node on another). Default:
    /// both when embedded on a machine with two CPUs or more; unpinned with --servers.
    #[arg(long, value_delimiter = ',')]
    placement: Option<Vec<String>>,
    /// A client key file (README "Client keys"): every client seals with its first key, and
    /// the embedded nodes load the file (a service given by --servers needs its own). The
    /// key must authorize the bench's client ids: bench-*, throughput-* and contender-*.
    #[arg(long, value_name = "PATH")]
    client_key_file: Option<std::path::PathBuf>,
    /// `both`: also measure the acquire with and without a client key side by side (two
    /// embedded services, alternating; the key of --client-key-file, or a fresh one).
    /// `as-given` (the default): only the run --client-key-file asks for.
    #[arg(long, value_name = "MODE", default_value = "as-given",
          value_parser = ["as-given", "both"])]
    client_keys: String,
    /// Also measure the disk floor: fdatasync of 128-byte appends to files in DIR (default:
    /// the current directory), one writer alone and one per node at once. Name a directory
    /// on the file system of the nodes' data directories; the embedded cluster runs in memory
    /// mode, so this is the floor of a `--durability fsync` service measured with --servers.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    disk_floor: Option<std::path::PathBuf>,
    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs every phase of every placement asked for and prints the figures.
pub fn run(a: BenchArgs) -> Result<(), LockError> {
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
        throughput_ms: ms_u64(a.throughput_time),
        contenders: a.contenders,
        contention_ms: ms_u64(a.contention_time),
        failovers: a.failovers,
        progress: !a.json,
        client_keys: match &a.client_key_file {
            Some(path) => Some(std::sync::Arc::new(
                udplock::client_keys::ClientKeyFile::read(path)
                    .map_err(|e| LockError::InvalidArgument(format!("--client-key-file: {e}")))?,
            )),
            None => None,
        },
        client_keys_both: a.client_keys == "both",
        disk_floor: a.disk_floor,
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
