//! `udplock dev`: a local replicated cluster in this process, until Ctrl-C; `--nodes 1`: the
//! single node `udplock server` runs without `--peers` (one voter, one shard).

use clap::Args;
use udplock::cluster::{start_local_cluster, ClusterConfig};
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
}

pub fn run(a: DevArgs) -> Result<(), LockError> {
    if a.nodes == 0 {
        return Err(LockError::InvalidArgument(
            "--nodes must be at least 1".into(),
        ));
    }
    let nodes = if a.nodes == 1 {
        if a.shards.is_some() {
            notice("udplock dev: --shards ignored: a single node has one shard\n");
        }
        let config = SingleConfig::new("127.0.0.1:0".parse().expect("an address"));
        vec![start_single(config.cluster_config()).map_err(cannot_start)?]
    } else {
        let mut template = ClusterConfig::new(1, Vec::new());
        template.shards = a.shards.unwrap_or(udplock::cluster::SHARDS_DEFAULT);
        // start_local_cluster gives the nodes a new random key (template.keys is None).
        start_local_cluster(a.nodes, &template).map_err(cannot_start)?
    };
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
