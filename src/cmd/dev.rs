//! `udplock dev`: a local replicated cluster in this process, until Ctrl-C.

use clap::Args;
use udplock::cluster::{start_local_cluster, ClusterConfig};
use udplock::LockError;

use super::out::notice;

#[derive(Args)]
pub struct DevArgs {
    /// Nodes of the local cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards of the local cluster.
    #[arg(long, default_value_t = udplock::cluster::SHARDS_DEFAULT)]
    shards: u32,
}

pub fn run(a: DevArgs) -> Result<(), LockError> {
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
