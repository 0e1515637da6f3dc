//! Phase 7, `client keys` (`--client-keys both`): what sealing every lock request and its
//! reply with a client key costs (spec §7.1.10, §7.2.6; issue 12's target: at most 5 % of the
//! uncontended acquire p50). Two services of the measured shape (the single node, or a
//! cluster of `--nodes`) run side by side on the placement's server CPU, one with a client
//! key file and one without; each iteration one raw round trip and one acquire+release on
//! each, in alternating order, so both are measured under the same conditions against the
//! same floor.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::client::{Client, ClientConfig};
use crate::client_keys::ClientKeyFile;
use crate::cluster::{start_local_cluster, ClusterConfig};
use crate::error::LockError;
use crate::single::{SingleConfig, SingleNode};

use super::alternate::{alternate, Alternated};
use super::embedded::{wait_for_leaders, Embedded};
use super::report::{back_to_back_ops_per_sec, summarize, summarize_floor};
use super::rtt::Echo;
use super::{BenchConfig, PhaseReport};

/// One service of the phase, the single node or a cluster as `config` asks, its nodes on
/// `server_cpu`, with `keys` as its client key file (`None`: none).
fn start(
    config: &BenchConfig,
    template: &ClusterConfig,
    server_cpu: Option<usize>,
    keys: Option<&Arc<ClientKeyFile>>,
) -> Result<Embedded, LockError> {
    let failed = |e: std::io::Error| {
        LockError::InternalError(format!("client keys phase: a service did not start: {e}"))
    };
    if config.nodes == 1 {
        let mut node = SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        node.cpu = server_cpu;
        node.client_keys = keys.cloned();
        return Ok(Embedded::Single(SingleNode::start(node).map_err(failed)?));
    }
    let template = ClusterConfig {
        client_keys: keys.cloned(),
        ..template.clone()
    };
    let nodes = start_local_cluster(config.nodes, &template).map_err(failed)?;
    wait_for_leaders(&nodes, &template)?;
    Ok(Embedded::Cluster(nodes))
}

/// A client of `service` with the run's shard count, sealing with the first key of `keys`.
fn client(
    config: &BenchConfig,
    service: &Embedded,
    keys: Option<&Arc<ClientKeyFile>>,
) -> Result<Client, LockError> {
    let mut client_config = ClientConfig::new(service.addrs());
    client_config.shards = match service {
        Embedded::Single(_) => 1,
        Embedded::Cluster(_) => config.shards,
    };
    client_config.client_key = keys.and_then(|k| k.first_key()).cloned();
    Client::new(client_config)
}

/// Phase 7 (see the module docs): rows for the floor, the acquire with a client key and the
/// acquire without, and a note with the difference.
pub(super) fn client_keys(
    config: &BenchConfig,
    keys: &Arc<ClientKeyFile>,
    template: &ClusterConfig,
    server_cpu: Option<usize>,
    notes: &mut Vec<String>,
) -> Result<Vec<PhaseReport>, LockError> {
    let plain = start(config, template, server_cpu, None)?;
    let keyed = start(config, template, server_cpu, Some(keys))?;
    let plain_client = client(config, &plain, None)?;
    let keyed_client = client(config, &keyed, Some(keys))?;
    let echo = Echo::start(server_cpu)?;
    let Alternated {
        rtt,
        first: with,
        second: without,
        elapsed,
    } = alternate(config, &keyed_client, &plain_client, &echo, "bench-client")?;
    let mut floor = summarize_floor("raw udp rtt (client keys phase)", &rtt, elapsed);
    let floor_p50 = floor.p50_us;
    let mut with_key = summarize("acquire, client key", &with, elapsed, floor_p50);
    with_key.goal = Some("p50 within 5% of no client key");
    let mut without_key = summarize("acquire, no client key", &without, elapsed, floor_p50);
    for (row, h) in [&mut floor, &mut with_key, &mut without_key]
        .into_iter()
        .zip([&rtt, &with, &without])
    {
        row.ops_per_sec = back_to_back_ops_per_sec(h);
    }
    notes.push(format!(
        "client keys: acquire p50 {:.1} µs with a client key, {:.1} µs without ({:+.1}%), raw \
         RTT p50 {:.1} µs, same run, alternating ({} retransmits with the key, {} without)",
        with_key.p50_us,
        without_key.p50_us,
        (with_key.p50_us / without_key.p50_us.max(1e-9) - 1.0) * 100.0,
        floor_p50,
        keyed_client.stats().retransmits,
        plain_client.stats().retransmits,
    ));
    Ok(vec![floor, with_key, without_key])
}
