//! Issue 7 item 10: nodes whose settings differ. Settings that every replica applies the same
//! way because the leader logs them (the default TTL, the OVERLOADED retry hint, the startup
//! grace) may differ between nodes, so an operator can change them with a rolling restart;
//! settings that must be identical (the lock-table limits) keep a node whose value differs
//! out of the cluster, and both sides say so, naming the setting.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use udplock::cluster::{ClusterConfig, ClusterNode};
use udplock::{Client, ClientConfig};
use udplock_protocol::Setting;

const SHARDS: u32 = 4;

/// Three in-process nodes of one new cluster; `tweak` sets node `id`'s settings.
fn nodes(tweak: impl Fn(u64, &mut ClusterConfig)) -> Vec<ClusterNode> {
    let sockets: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    // One cluster key for the three (spec §8.11), as every in-process cluster has.
    let keys = udplock::cluster::keys::random_key_set();
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
            config.keys = Some(keys.clone());
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
    // Every node names the settings that differ, and none is cut off.
    wait_for("nodes to compare settings", || {
        let v1 = nodes[0].peer_settings();
        let v3 = nodes[2].peer_settings();
        v1.get(&3).is_some_and(|v| {
            !v.cut_off()
                && v.differences.iter().map(|d| d.setting).collect::<Vec<_>>()
                    == [
                        Setting::TtlDefaultMs,
                        Setting::RetryAfterMs,
                        Setting::StartupGraceMs,
                    ]
        }) && v3
            .get(&1)
            .is_some_and(|v| !v.cut_off() && v.differences.len() == 3)
            && v1
                .get(&2)
                .is_some_and(|v| v.differences.is_empty() && !v.cut_off())
    });
    // An acquire that names no TTL gets the default of the leader that logged it (which one
    // leads is up to the elections; `core::replica`'s tests check every replica agrees).
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

/// Waits (at most 10 s) until `done`, else fails naming `what`.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A limit every replica reads itself (in the cluster id) must be equal: a node with another
/// value is kept out, and both sides name the setting; `udplock status` shows it too.
#[test]
fn a_node_with_another_limit_is_kept_out_and_both_sides_name_the_setting() {
    let nodes = nodes(|id, c| {
        if id == 3 {
            c.table.resources_max = 1_000;
        }
    });
    wait_for("both sides to name resources_max", || {
        let names = |node: &ClusterNode, peer: u64| {
            node.peer_settings().get(&peer).is_some_and(|v| {
                v.cut_off()
                    && v.differences
                        .iter()
                        .any(|d| d.setting == Setting::ResourcesMax && d.here != d.there)
            })
        };
        names(&nodes[0], 3) && names(&nodes[1], 3) && names(&nodes[2], 1) && names(&nodes[2], 2)
    });
    assert!(nodes[0]
        .peer_settings()
        .get(&2)
        .is_some_and(|v| !v.cut_off()));
    let servers: Vec<String> = nodes.iter().map(|n| n.local_addr().to_string()).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udplock"))
        .args(["status", "--servers", &servers.join(","), "--shards", "4"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "resources_max: node 1 = 262144, node 2 = 262144, node 3 = 1000 (must be equal"
        ),
        "{said}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udplock"))
        .args([
            "status",
            "--json",
            "--servers",
            &servers.join(","),
            "--shards",
            "4",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(r#""settings_differences":[{"setting":"resources_max","must_be_equal":true"#),
        "{said}"
    );
}
