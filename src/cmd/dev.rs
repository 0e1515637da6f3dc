//! `udplock dev`: a local replicated cluster in this process, until Ctrl-C; `--nodes 1`: the
//! single node `udplock server` runs without `--peers` (one voter, one shard).

use clap::Args;
use udplock::cluster::{start_local_cluster, ClusterConfig};
use udplock::core::time::Duration as CoreDuration;
use udplock::single::{start_single, SingleConfig};
use udplock::LockError;

use super::out::notice;

#[derive(Args)]
pub struct DevArgs {
    /// Nodes of the local cluster (1: a single node).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards of the local cluster (default 64; a single node has one).
    #[arg(long)]
    shards: Option<u32>,
    /// SWIM's protocol period among the nodes: each period a node probes one other,
    /// so a crashed node is suspected within about 1 to 2 periods and declared dead after
    /// the suspicion timeout (README, "Membership"). Shorter notices sooner and costs a ping
    /// and an ack per node per period; 10ms to 1m. Old spelling: --swim-period-ms.
    #[arg(long, alias = "swim-period-ms", value_name = "DURATION",
          default_value = super::duration::format(std::time::Duration::from_millis(super::args::SWIM_PERIOD_MS_DEFAULT)),
          value_parser = super::duration::ms::<{ super::args::SWIM_PERIOD_MS_MIN }, { super::args::SWIM_PERIOD_MS_MAX }>)]
    swim_period: std::time::Duration,
    /// Serve every node's Prometheus metrics and health checks over HTTP (README, "Metrics
    /// and health"): node N on this address's port + N - 1 (port 0: a free port each); the
    /// addresses are printed at start.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Client keys for every node (spec §7.2.6; see `udplock server --client-key-file`).
    #[arg(long, value_name = "PATH", env = "UDPLOCK_CLIENT_KEY_FILE")]
    client_key_file: Option<std::path::PathBuf>,
}

pub fn run(a: DevArgs) -> Result<(), LockError> {
    if a.nodes == 0 {
        return Err(LockError::InvalidArgument(
            "--nodes must be at least 1".into(),
        ));
    }
    let swim_period = CoreDuration::from_millis(super::duration::ms_u64(a.swim_period));
    let client_keys = super::server::client_key_file(a.client_key_file.as_deref(), true)?;
    let nodes = if a.nodes == 1 {
        if a.shards.is_some() {
            notice("udplock dev: --shards ignored: a single node has one shard\n");
        }
        let config = SingleConfig::new("127.0.0.1:0".parse().expect("an address"));
        let mut cluster = config.cluster_config();
        cluster.swim_period = swim_period;
        cluster.client_keys = client_keys;
        vec![start_single(cluster).map_err(cannot_start)?]
    } else {
        let mut template = ClusterConfig::new(1, Vec::new());
        template.shards = a.shards.unwrap_or(udplock::cluster::SHARDS_DEFAULT);
        template.swim_period = swim_period;
        template.client_keys = client_keys;
        // start_local_cluster gives the nodes a new random key (template.keys is None).
        start_local_cluster(a.nodes, &template).map_err(cannot_start)?
    };
    // One metrics port per node: they run in one process, but each has its own counters.
    let mut metrics = Vec::new();
    if let Some(base) = a.metrics_listen {
        for (i, node) in nodes.iter().enumerate() {
            let mut addr = base;
            if base.port() != 0 {
                let port = usize::from(base.port()) + i;
                addr.set_port(u16::try_from(port).map_err(|_| {
                    LockError::InvalidArgument(format!(
                        "--metrics-listen {base}: no port {port} for node {}",
                        i + 1
                    ))
                })?);
            }
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                LockError::InternalError(format!("cannot serve metrics on {addr}: {e}"))
            })?;
            let server = node.serve_metrics(listener).map_err(cannot_start)?;
            notice(&format!(
                "udplock dev: node {} metrics on http://{}/metrics (health: /health, /ready)\n",
                i + 1,
                server.local_addr()
            ));
            metrics.push(server);
        }
    }
    let servers: Vec<String> = nodes.iter().map(|n| n.local_addr().to_string()).collect();
    println!("UDPLOCK_SERVERS={}", servers.join(","));
    let what = if a.nodes == 1 {
        "a single node (one voter, one shard), in memory".to_string()
    } else {
        format!(
            "{} nodes, {} shards, in memory, peer traffic authenticated with a random key",
            a.nodes,
            a.shards.unwrap_or(udplock::cluster::SHARDS_DEFAULT)
        )
    };
    notice(&format!(
        "udplock dev: {what} (Ctrl-C to stop). Try:\n  \
         udplock acquire --servers {} orders/42 --client me\n",
        servers.join(",")
    ));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    for node in nodes {
        node.wait().map_err(LockError::InternalError)?;
    }
    Ok(())
}

fn cannot_start(e: std::io::Error) -> LockError {
    LockError::InternalError(format!("cannot start the cluster: {e}"))
}
