//! Phase 5, `failover`: fresh embedded clusters, each losing the leader of one resource's
//! shard; a sample is the time from the kill to the first successful acquire.

use std::time::{Duration, Instant};

use crate::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use crate::error::LockError;

use super::embedded::{leader_of, wait_for_leaders};
use super::report::{histogram, record, summarize};
use super::{BenchConfig, PhaseReport, Servers};

/// Longest a failover sample may take before the run gives up: far beyond any election
/// (a few election timeouts), so only a cluster that never recovers ends the run.
pub(super) const FAILOVER_WAIT_MAX: Duration = Duration::from_secs(30);

/// Phase 5: `config.failovers` fresh clusters, each losing the leader of one resource's
/// shard; a sample is the time from the kill to the first successful acquire. Also returns a
/// note that splits it: when a surviving node first showed itself as the shard's leader in
/// its published stats (polled every millisecond; a node publishes at most every 5 ms, so
/// this is late by up to a few ms), and what the client did meanwhile.
pub(super) fn failover(
    config: &BenchConfig,
    template: &ClusterConfig,
) -> Result<(PhaseReport, String), LockError> {
    let (mut h, mut elected) = (histogram(), histogram());
    let (mut redirects, mut retransmits) = (0, 0);
    let started = Instant::now();
    for k in 0..config.failovers {
        let mut nodes = start_local_cluster(config.nodes, template).map_err(|e| {
            LockError::InternalError(format!("failover cluster did not start: {e}"))
        })?;
        wait_for_leaders(&nodes, template)?;
        let servers = Servers {
            addrs: nodes.iter().map(ClusterNode::local_addr).collect(),
            shards: config.shards,
            key: config.client_key(),
        };
        let client = servers.client()?;
        let resource = format!("bench/failover/{k}");
        let id = "bench-failover";
        // Warm-up: the client learns the shard's leader, so the kill hits the node it sends to.
        client.acquire(&resource, id, 2_000, Some(10_000))?;
        client.release(&resource, id)?;
        let shard = udplock_protocol::shard_of(resource.as_bytes(), config.shards);
        let leader = leader_of(&nodes, shard).ok_or_else(|| {
            LockError::InternalError(format!("shard {shard} has no single leader"))
        })?;
        let before = client.stats();
        let killed_at = Instant::now();
        nodes.remove(leader).shutdown();
        let (acquired, new_leader) = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                while killed_at.elapsed() < FAILOVER_WAIT_MAX {
                    if leader_of(&nodes, shard).is_some() {
                        return Some(killed_at.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                None
            });
            let acquired = loop {
                match client.acquire(&resource, id, 1_000, Some(10_000)) {
                    Ok(_) => break Ok(killed_at.elapsed()),
                    // No answer yet (election, dead leader) or a leader still waiting out its
                    // predecessor's leases: keep trying, as a program would.
                    Err(LockError::Unavailable | LockError::Overloaded { .. })
                        if killed_at.elapsed() < FAILOVER_WAIT_MAX => {}
                    Err(e) => break Err(e),
                }
            };
            (acquired, watcher.join().expect("leader watcher"))
        });
        record(&mut h, acquired?);
        if let Some(d) = new_leader {
            record(&mut elected, d);
        }
        let after = client.stats();
        redirects += after.redirects - before.redirects;
        retransmits += after.retransmits - before.retransmits;
        client.release(&resource, id)?;
    }
    let max_election = template.raft.election_timeout_max.as_millis() as f64;
    let mut report = summarize(
        &format!("failover ({} nodes, kill→acquire)", config.nodes),
        &h,
        started.elapsed(),
        0.0,
    );
    report.ops_per_sec = 0.0;
    report.election_timeout_max_ms = Some(max_election);
    report.p50_ratio_to_election_timeout_max = Some(report.p50_us / 1_000.0 / max_election);
    report.goal = Some("p50 <= 2x election_timeout_max");
    let ms = |v: u64| v as f64 / 1e6;
    let note = format!(
        "failover: a new leader showed in the survivors' stats {:.0} ms (p50; min {:.0}, max \
         {:.0}) after the kill, the first acquire succeeded {:.0} ms (p50) after it; the client \
         made {redirects} redirects and {retransmits} retransmits over {} kills",
        ms(elected.value_at_quantile(0.5)),
        ms(elected.min()),
        ms(elected.max()),
        report.p50_us / 1_000.0,
        config.failovers
    );
    Ok((report, note))
}
