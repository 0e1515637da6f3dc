//! Client discovery over real UDP: a client given one node's address learns the others from
//! its member table (MEMBERS, spec §4.9) and keeps locking when that node is gone.

use std::time::{Duration, Instant};

use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use udplock::core::raft::Role;
use udplock::{Client, ClientConfig};
use udplock_protocol::shard_of;

const SHARDS: u32 = 8;

/// Resources that cover every shard.
fn resources() -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    (0..1_000)
        .map(|i| format!("jobs/{i}"))
        .filter(|r| seen.insert(shard_of(r.as_bytes(), SHARDS)))
        .collect()
}

#[test]
fn a_client_given_one_node_keeps_locking_after_that_node_is_gone() {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = SHARDS;
    let mut nodes: Vec<ClusterNode> = start_local_cluster(3, &template).expect("cluster starts");
    let only = nodes[0].local_addr();
    let mut config = ClientConfig::new(vec![only]);
    config.shards = SHARDS;
    let client = Client::new(config).expect("client");
    let resources = resources();
    assert_eq!(resources.len(), SHARDS as usize);

    // Lock on every shard until the member table has come back (it is read by whichever
    // call is receiving when it arrives) and every node is a candidate.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for r in &resources {
            client
                .acquire(r, "w", 5_000, Some(10_000))
                .expect("acquire");
            assert_eq!(client.release(r, "w"), Ok(0));
        }
        let mut candidates = client.candidates();
        candidates.sort();
        let mut all: Vec<_> = nodes.iter().map(ClusterNode::local_addr).collect();
        all.sort();
        if candidates == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never learned every node: {candidates:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The node the client was given leads a shard (leaders are spread), so that shard's
    // requests have nowhere to go but to the nodes the client discovered.
    let led_by_first = (0..SHARDS as usize).any(|s| {
        nodes[0]
            .shard_stats()
            .get(s)
            .is_some_and(|st| st.role == Some(Role::Leader))
    });
    if !led_by_first {
        eprintln!("node 1 leads no shard right now; the test still checks every shard");
    }

    nodes.remove(0).shutdown();
    for r in &resources {
        let lease = client
            .acquire(r, "w", 10_000, Some(10_000))
            .unwrap_or_else(|e| panic!("{r} (shard {}): {e}", shard_of(r.as_bytes(), SHARDS)));
        assert_eq!(lease.hold_count, 1);
        assert_eq!(client.release(r, "w"), Ok(0));
    }
}

/// A single node's member table is itself: the client goes on as before.
#[test]
fn a_single_node_is_its_own_member_table() {
    let node = super::start_node();
    let client = Client::connect(&[node.local_addr()]).unwrap();
    for i in 0..5 {
        let r = format!("single/{i}");
        client.acquire(&r, "w", 1_000, None).unwrap();
        assert_eq!(client.release(&r, "w"), Ok(0));
    }
    assert_eq!(client.candidates(), vec![node.local_addr()]);
}

/// `udplock status` given one node asks the members that node lists too: every node's view.
#[test]
fn status_given_one_node_shows_every_node() {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = SHARDS;
    let nodes: Vec<ClusterNode> = start_local_cluster(3, &template).expect("cluster starts");
    let one = nodes[0].local_addr().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_udplock"))
            .args(["status", "--servers", &one, "--shards", "8", "--json"])
            .output()
            .expect("udplock runs");
        let json = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let reachable = nodes
            .iter()
            .filter(|n| {
                let row = format!("{{\"address\":\"{}\",\"reachable\":true", n.local_addr());
                json.contains(&row)
            })
            .count();
        if reachable == nodes.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed every node: {json}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
