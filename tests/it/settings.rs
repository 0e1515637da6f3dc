//! Issue 7 item 10: nodes whose settings differ. Settings that every replica applies the same
//! way because the leader logs them (the default TTL, the OVERLOADED retry hint, the startup
//! grace) may differ between nodes, so an operator can change them with a rolling restart;
//! settings that must be identical (the lock-table limits) keep a node whose value differs
//! out of the cluster, and both sides say so, naming the setting.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use udplock::cluster::{ClusterConfig, ClusterNode};
use udplock::{Client, ClientConfig};

const SHARDS: u32 = 4;

/// Three in-process nodes of one new cluster; `tweak` sets node `id`'s settings.
fn nodes(tweak: impl Fn(u64, &mut ClusterConfig)) -> Vec<ClusterNode> {
    let sockets: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<(u64, SocketAddr)> = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, s.local_addr().unwrap()))
        .collect();
    sockets
        .into_iter()
        .zip(1..)
        .map(|(socket, id)| {
            let mut config = ClusterConfig::new(id, peers.clone());
            config.shards = SHARDS;
            config.new_cluster = true;
            tweak(id, &mut config);
            ClusterNode::start_on(socket, config).unwrap()
        })
        .collect()
}

fn client(nodes: &[ClusterNode]) -> Client {
    let servers: Vec<SocketAddr> = nodes.iter().map(ClusterNode::local_addr).collect();
    let mut config = ClientConfig::new(servers);
    config.shards = SHARDS;
    Client::new(config).unwrap()
}

/// Whether node `i` follows or leads a known leader in every shard.
fn takes_part(node: &ClusterNode) -> bool {
    let stats = node.shard_stats();
    stats.len() == SHARDS as usize && stats.iter().all(|s| s.leader.is_some())
}

#[test]
fn a_node_with_another_default_ttl_or_grace_takes_part_and_the_leaders_value_applies() {
    let nodes = nodes(|id, c| {
        if id == 3 {
            c.table.ttl_default_ms = 45_000;
            c.table.retry_after_ms = 20;
            c.table.startup_grace_ms = 1;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.iter().all(takes_part) {
        assert!(
            Instant::now() < deadline,
            "a node is cut off: {:?}",
            nodes.iter().map(takes_part).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // An acquire that names no TTL gets the default of the leader that logged it (which one
    // leads is up to the elections; `core::shard`'s tests check every replica agrees).
    let c = client(&nodes);
    for i in 0..8 {
        let resource = format!("r/{i}");
        let lease = c.acquire(&resource, "me", 5_000, None).unwrap();
        assert!(
            [30_000, 45_000].contains(&lease.ttl_ms),
            "{resource}: lease {} ms",
            lease.ttl_ms
        );
    }
}
