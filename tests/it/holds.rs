//! HOLDS over real UDP (spec §4.13, §5.10): who holds what in a 3-node cluster, walked shard
//! by shard through each shard's leader by a client that was given one node's address, with
//! and without a client-id prefix; then `udplock status --holders` against `udplock dev`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use udplock::{Client, ClientConfig};
use udplock_protocol::shard_of;

use super::shard_status::{wait_for_leaders, Dev};

const SHARDS: u32 = 8;

/// (resource, client id) → (fencing token, hold count, shard), as a walk listed them.
type Listed = BTreeMap<(Vec<u8>, Vec<u8>), (u64, u32, u16)>;
const BIN: &str = env!("CARGO_BIN_EXE_udplock");

/// Locks of two teams: (resource, client id, fencing token), granted by `c`.
fn take_locks(c: &Client) -> Vec<(String, String, u64)> {
    let mut taken = Vec::new();
    for i in 0..12 {
        let (resource, owner) = if i % 3 == 0 {
            (format!("orders/{i}"), format!("team-b/{i}"))
        } else {
            (format!("jobs/{i}"), format!("team-a/{}", i % 2))
        };
        let lease = c.acquire(&resource, &owner, 2_000, Some(60_000)).unwrap();
        taken.push((resource, owner, lease.fencing_token));
    }
    // A re-entry: still one hold, of count 2.
    c.acquire("jobs/1", "team-a/1", 2_000, Some(60_000))
        .unwrap();
    taken
}

#[test]
fn a_client_given_one_node_lists_every_hold_and_filters_by_prefix() {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = SHARDS;
    let nodes: Vec<ClusterNode> = start_local_cluster(3, &template).expect("cluster starts");
    wait_for_leaders(&nodes);
    let servers: Vec<SocketAddr> = nodes.iter().map(ClusterNode::local_addr).collect();
    let mut config = ClientConfig::new(servers.clone());
    config.shards = SHARDS;
    let locker = Client::new(config).unwrap();
    let taken = take_locks(&locker);
    // The operator's client knows one node only: the other leaders come from hints and the
    // member table (spec §7.1.7, §7.1.8), and the shard count from shard 0's reply.
    let operator = Client::new(ClientConfig::new(vec![servers[2]])).unwrap();

    // Leaders may move to their preferred nodes meanwhile: the walk follows the hints.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        match operator.holds(b"") {
            Ok(all) => break all,
            Err(e) if Instant::now() < deadline => eprintln!("walk failed, again: {e:?}"),
            Err(e) => panic!("no walk succeeded: {e:?}"),
        }
    };
    let listed: Listed = all
        .iter()
        .map(|h| {
            assert!(h.lease_ms > 50_000 && h.lease_ms <= 60_000, "{h:?}");
            assert_eq!(h.waiters, 0);
            (
                (h.resource.clone(), h.client.clone()),
                (h.fencing_token, h.hold_count, h.shard),
            )
        })
        .collect();
    assert_eq!(all.len(), taken.len(), "each hold once: {all:#?}");
    for (resource, owner, token) in &taken {
        let shard = shard_of(resource.as_bytes(), SHARDS) as u16;
        let count = if resource == "jobs/1" { 2 } else { 1 };
        assert_eq!(
            listed.get(&(resource.clone().into_bytes(), owner.clone().into_bytes())),
            Some(&(*token, count, shard)),
            "{resource}"
        );
    }
    // Shard by shard, in token order within a shard.
    let order: Vec<(u16, u64)> = all.iter().map(|h| (h.shard, h.fencing_token)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");

    let team_a = operator.holds(b"team-a/").unwrap();
    assert_eq!(team_a.len(), 8);
    assert!(team_a.iter().all(|h| h.client.starts_with(b"team-a/")));
    let one = operator.holds(b"team-b/3").unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].resource, b"orders/3");
    assert!(operator.holds(b"team-c").unwrap().is_empty());

    // A release is gone from the next walk.
    locker.release("orders/3", "team-b/3").unwrap();
    assert!(operator.holds(b"team-b/3").unwrap().is_empty());
}

#[test]
fn status_holders_prints_each_hold_escaped_and_filters() {
    let dev = Dev::start(3, SHARDS);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--servers", &dev.servers, "--shards", "8"])
            .output()
            .expect("udplock runs")
    };
    for (resource, client) in [("a/1", "w-1"), ("a/2", "w-1"), ("b/1", "x-\x1b[31m")] {
        let o = run(&["acquire", resource, "--client", client, "--ttl-ms", "60000"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
    }
    // Leaders may still move at first: retry a failed walk for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listing = |args: &[&str]| loop {
        let o = run(args);
        if o.status.code() == Some(0) || Instant::now() > deadline {
            assert_eq!(o.status.code(), Some(0), "{o:?}");
            break String::from_utf8(o.stdout).unwrap();
        }
    };
    let all = listing(&["status", "--holders"]);
    assert_eq!(all.lines().count(), 4, "three holds and a count: {all}");
    assert!(
        all.contains("a/1: held by w-1 (hold count 1, fencing token "),
        "{all}"
    );
    assert!(all.contains("b/1: held by x-\\x1b[31m "), "escaped: {all}");
    assert!(!all.contains('\x1b'), "no raw escape reaches the terminal");
    assert!(all.ends_with("3 holds\n"), "{all}");

    let w = listing(&["status", "--holders", "w-"]);
    assert_eq!(w.lines().count(), 3, "{w}");
    assert!(
        w.ends_with("2 holds of client ids starting with w-\n"),
        "{w}"
    );

    let json = listing(&["status", "--holders", "x-", "--json"]);
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(json.contains("\"resource\":\"b/1\""), "{json}");
    assert!(json.contains("\"holder\":\"x-\\u001b[31m\""), "{json}");
    assert!(json.contains("\"hold_count\":1"), "{json}");
}
