//! The service a placement measures when this process runs it: a single node or a cluster,
//! and for a cluster, waiting until its leadership has settled and reading its shards' terms
//! and leaders.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cluster::{ClusterConfig, ClusterNode};
use crate::core::raft::{NodeId, Role};
use crate::core::replica::SPREAD_AFTER;
use crate::error::LockError;
use crate::single::SingleNode;

use super::BenchConfig;

/// The service a placement measures, when this process runs it.
pub(super) enum Embedded {
    Single(SingleNode),
    Cluster(Vec<ClusterNode>),
}

impl Embedded {
    pub(super) fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Embedded::Single(n) => vec![n.local_addr()],
            Embedded::Cluster(nodes) => nodes.iter().map(ClusterNode::local_addr).collect(),
        }
    }

    pub(super) fn replicas(&self) -> usize {
        match self {
            Embedded::Single(_) => 1,
            Embedded::Cluster(nodes) => nodes.len(),
        }
    }
}

/// The cluster node settings of every embedded cluster of a placement: its shard count, and
/// every node thread pinned to the placement's server CPU.
pub(super) fn cluster_template(config: &BenchConfig, server_cpu: Option<usize>) -> ClusterConfig {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = config.shards;
    template.cpu = server_cpu;
    template.client_keys = config.client_keys.clone();
    // Every node holds a replica of every shard here, so each counts all the locks of the run
    // against its limit per node: raised to fit `--held` (`BenchConfig::check_held_fits`
    // keeps each shard within its own limit).
    template.limits.resources_max = template
        .limits
        .resources_max
        .max(config.embedded_resources());
    template
}

/// Longest wait for a fresh cluster to settle: elections take a few election timeouts at
/// most (a split vote costs one more), then leaders hand their shards to the preferred nodes
/// after [`SPREAD_AFTER`]; this only ends a broken run.
pub(super) const SETTLE_WAIT_MAX: Duration = Duration::from_secs(10);

/// How the leaders of a fresh cluster stood once it settled.
pub(super) struct Settled {
    pub(super) took: Duration,
    /// Shards each node leads, by position in `nodes`.
    pub(super) led: Vec<usize>,
    /// Shards whose leader is not the node the cluster prefers for it.
    pub(super) off_preferred: usize,
}

/// Waits until the cluster's leadership is settled, so that no measured request meets an
/// election, a hint-less NOT_LEADER or a leadership transfer:
///
/// - every shard has exactly one node in the leader role, and every node names it;
/// - every shard is led by its preferred node ([`ClusterConfig::preferred_leader`]: a leader
///   hands its shard over after leading it for [`SPREAD_AFTER`], and each hand-over is an
///   election of a new term), or, should a hand-over not happen, no term has changed for
///   `SPREAD_AFTER` plus an election timeout.
pub(super) fn wait_for_leaders(
    nodes: &[ClusterNode],
    template: &ClusterConfig,
) -> Result<Settled, LockError> {
    // `start_local_cluster` numbers its nodes 1, 2, ... in the order it returns them.
    let config = ClusterConfig {
        peers: (0..nodes.len())
            .map(|i| (i as NodeId + 1, nodes[i].local_addr()))
            .collect(),
        ..template.clone()
    };
    let quiet_for = std_duration(SPREAD_AFTER) + std_duration(template.raft.election_timeout_max);
    let started = Instant::now();
    let (mut terms, mut terms_since) = (Vec::new(), Instant::now());
    loop {
        let stats: Vec<_> = nodes.iter().map(ClusterNode::shard_stats).collect();
        let mut led = vec![0; nodes.len()];
        let mut off_preferred = 0;
        let agreed = (0..template.shards as usize).all(|s| {
            let leaders: Vec<usize> = (0..nodes.len())
                .filter(|&i| {
                    stats[i]
                        .get(s)
                        .is_some_and(|x| x.role == Some(Role::Leader))
                })
                .collect();
            let [leader] = leaders[..] else {
                return false;
            };
            let id = stats[leader][s].leader;
            led[leader] += 1;
            if id != Some(config.preferred_leader(s as u32)) {
                off_preferred += 1;
            }
            id.is_some()
                && stats
                    .iter()
                    .all(|node| node.get(s).map(|x| x.leader) == Some(id))
        });
        let now_terms = shard_terms(nodes);
        if now_terms != terms {
            (terms, terms_since) = (now_terms, Instant::now());
        }
        if agreed && (off_preferred == 0 || terms_since.elapsed() >= quiet_for) {
            return Ok(Settled {
                took: started.elapsed(),
                led,
                off_preferred,
            });
        }
        if started.elapsed() > SETTLE_WAIT_MAX {
            return Err(LockError::InternalError(format!(
                "the embedded cluster's leadership did not settle within {} s",
                SETTLE_WAIT_MAX.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(super) fn std_duration(d: crate::core::time::Duration) -> Duration {
    Duration::from_micros(d.as_micros())
}

/// Every shard's highest term any node knows.
pub(super) fn shard_terms(nodes: &[ClusterNode]) -> Vec<u64> {
    let mut terms = Vec::new();
    for node in nodes {
        for (shard, stats) in node.shard_stats().iter().enumerate() {
            if terms.len() <= shard {
                terms.resize(shard + 1, 0);
            }
            terms[shard] = terms[shard].max(stats.term);
        }
    }
    terms
}

/// The position in `nodes` of the node that leads `shard`, if exactly one does.
pub(super) fn leader_of(nodes: &[ClusterNode], shard: u32) -> Option<usize> {
    let leaders: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            nodes[i]
                .shard_stats()
                .get(shard as usize)
                .is_some_and(|s| s.role == Some(Role::Leader))
        })
        .collect();
    match leaders[..] {
        [one] => Some(one),
        _ => None,
    }
}
