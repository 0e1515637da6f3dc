//! SHARD_STATUS over real UDP (spec §4.7): every node of a 3-node cluster reports every shard,
//! they agree on one leader per shard, and the leaders' lock counts match the locks taken;
//! then `udplock status --json` without a resource against a `udplock dev` process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use udplock::client::{ShardRole, ShardStatusReport};
use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use udplock::core::raft::Role;
use udplock::{Client, ClientConfig, LockError};
use udplock_protocol::shard_of;

const SHARDS: u32 = 8;
const BIN: &str = env!("CARGO_BIN_EXE_udplock");

fn cluster() -> Vec<ClusterNode> {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = SHARDS;
    start_local_cluster(3, &template).expect("cluster starts")
}

fn client(servers: Vec<SocketAddr>) -> Client {
    let mut config = ClientConfig::new(servers);
    config.shards = SHARDS;
    Client::new(config).expect("client")
}

/// Waits until every shard has exactly one node that calls itself leader.
pub(super) fn wait_for_leaders(nodes: &[ClusterNode]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let led = (0..SHARDS as usize).all(|shard| {
            nodes
                .iter()
                .filter(|n| {
                    n.shard_stats()
                        .get(shard)
                        .is_some_and(|s| s.role == Some(Role::Leader))
                })
                .count()
                == 1
        });
        if led {
            return;
        }
        assert!(Instant::now() < deadline, "not every shard has a leader");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every node's report, once all of them name the same leader for every shard and the
/// leaders' held counts are `held` (followers learn commits a heartbeat later, and a lock
/// taken just now may not be counted yet where the report was read).
fn agreed_reports(
    c: &Client,
    servers: &[SocketAddr],
    held: &BTreeMap<u16, u32>,
) -> Vec<ShardStatusReport> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reports: Vec<ShardStatusReport> = servers
            .iter()
            .map(|&s| c.shard_status(s).expect("every node answers"))
            .collect();
        let agreed = (0..SHARDS as usize).all(|shard| {
            let leaders: Vec<_> = reports.iter().map(|r| r.shards[shard].leader_id).collect();
            let leading: Vec<_> = reports
                .iter()
                .filter(|r| r.shards[shard].role == ShardRole::Leader)
                .collect();
            leading.len() == 1
                && leaders.iter().all(|&l| l == Some(leading[0].node_id))
                && leading[0].shards[shard].held == held.get(&(shard as u16)).copied().unwrap_or(0)
        });
        if agreed {
            return reports;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed: {reports:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_node_reports_every_shard_with_one_agreed_leader_and_its_locks() {
    let nodes = cluster();
    wait_for_leaders(&nodes);
    let servers: Vec<SocketAddr> = nodes.iter().map(ClusterNode::local_addr).collect();
    let c = client(servers.clone());

    // A few locks, some on the same shard, one re-entered (still one held lock).
    let mut held: BTreeMap<u16, u32> = BTreeMap::new();
    for i in 0..6 {
        let resource = format!("status/{i}");
        c.acquire(&resource, "w", 2_000, Some(60_000)).unwrap();
        *held
            .entry(shard_of(resource.as_bytes(), SHARDS) as u16)
            .or_default() += 1;
    }
    c.acquire("status/0", "w", 2_000, None).unwrap();

    let reports = agreed_reports(&c, &servers, &held);
    let mut ids: Vec<u64> = reports.iter().map(|r| r.node_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "each node names itself");
    for r in &reports {
        assert_eq!(r.shards.len(), SHARDS as usize, "node {}", r.node_id);
        for (i, info) in r.shards.iter().enumerate() {
            assert_eq!(usize::from(info.shard), i);
            assert!(info.term >= 1, "node {} shard {i}: {info:?}", r.node_id);
            assert!(info.applied_index <= info.commit_index, "{info:?}");
            if info.role == ShardRole::Leader {
                assert_eq!(info.leader_id, Some(r.node_id), "a leader names itself");
            }
        }
    }
    let total: u32 = (0..SHARDS as usize)
        .map(|s| {
            let leader = reports
                .iter()
                .find(|r| r.shards[s].role == ShardRole::Leader)
                .unwrap();
            assert_eq!(leader.shards[s].waiters, 0);
            leader.shards[s].held
        })
        .sum();
    assert_eq!(total, 6);
    // Read-only: asking changed nothing, and the locks are still there. (Terms are not
    // compared: leaders may move to their preferred nodes meanwhile.)
    agreed_reports(&c, &servers, &held);
    assert_eq!(c.status("status/0").unwrap().hold_count, 2);
}

#[test]
fn a_cluster_larger_than_one_page_is_read_page_by_page() {
    // 64 shards: three pages of at most 26 entries.
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = 64;
    let nodes = start_local_cluster(3, &template).expect("cluster starts");
    let c = client(vec![nodes[0].local_addr()]);
    let report = c.shard_status(nodes[1].local_addr()).unwrap();
    assert_eq!(report.node_id, 2);
    let shards: Vec<u16> = report.shards.iter().map(|s| s.shard).collect();
    assert_eq!(shards, (0..64).collect::<Vec<u16>>());
}

/// Issue 9 item 5: the single node is a cluster of one voter and one shard, and answers
/// SHARD_STATUS like any node: its one shard, which it leads, with the locks it holds.
#[test]
fn a_single_node_reports_its_one_shard_and_a_silent_one_is_unavailable() {
    let node = super::start_node();
    let mut config = ClientConfig::new(vec![node.local_addr()]);
    config.request_timeout_ms = 300;
    let c = Client::new(config).unwrap();
    c.acquire("one", "holder", 0, Some(60_000)).unwrap();
    c.acquire("two", "holder", 0, Some(60_000)).unwrap();
    let report = c
        .shard_status(node.local_addr())
        .unwrap_or_else(|e| panic!("a single node answered {e:?}"));
    assert_eq!(report.node_id, 1);
    assert_eq!(report.shards.len(), 1, "one shard");
    let shard = &report.shards[0];
    assert_eq!(
        (shard.shard, shard.role, shard.leader_id),
        (0, ShardRole::Leader, Some(1))
    );
    assert_eq!(shard.held, 2);
    assert!(shard.commit_index >= 2 && shard.applied_index == shard.commit_index);
    // A port nobody answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    assert_eq!(
        c.shard_status(silent.local_addr().unwrap()),
        Err(LockError::Unavailable)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A `udplock dev` process, killed on drop (also `it::holds`'s).
pub(super) struct Dev {
    child: Child,
    pub(super) servers: String,
}

impl Dev {
    pub(super) fn start(nodes: usize, shards: u32) -> Dev {
        Dev::start_with(&[
            "dev",
            "--nodes",
            &nodes.to_string(),
            "--shards",
            &shards.to_string(),
        ])
    }

    fn start_with(args: &[&str]) -> Dev {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("udplock dev starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let servers = line
            .trim()
            .strip_prefix("UDPLOCK_SERVERS=")
            .unwrap_or_else(|| panic!("no server list in {line:?}"))
            .to_string();
        Dev { child, servers }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `"key":` in a one-line JSON object, up to the next `,` or `}`.
fn json_values<'a>(json: &'a str, key: &str) -> Vec<&'a str> {
    let pattern = format!("\"{key}\":");
    json.match_indices(&pattern)
        .map(|(i, _)| {
            let rest = &json[i + pattern.len()..];
            &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
        })
        .collect()
}

#[test]
fn status_without_a_resource_prints_every_shards_leader_as_json() {
    let dev = Dev::start(3, 8);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--servers", &dev.servers, "--shards", "8"])
            .output()
            .expect("udplock runs")
    };
    // Hold a lock, so one shard's count is 1 (the cluster may still be electing at first).
    let o = run(&["acquire", "cli/1", "--client", "me", "--ttl-ms", "60000"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    // Leaders may still be elected or moved to their preferred nodes: wait until every shard
    // is reported by the node that leads it.
    let leads = |json: &str| -> u32 {
        json_values(json, "leads")
            .iter()
            .map(|n| n.parse::<u32>().unwrap())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let json = loop {
        let o = run(&["status", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let json = String::from_utf8(o.stdout).unwrap();
        let settled = !json.contains("\"leader_id\":null")
            && json_values(&json, "held").contains(&"1")
            && leads(&json) == 8;
        if settled || Instant::now() > deadline {
            break json;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(json.lines().count(), 1, "one JSON object: {json}");
    assert!(json.starts_with("{\"shards_total\":8,"), "{json}");
    assert_eq!(json_values(&json, "shard").len(), 8, "{json}");
    assert_eq!(json_values(&json, "reachable"), ["true"; 3], "{json}");
    let leaders = json_values(&json, "leader_id");
    assert!(
        leaders.iter().all(|l| ["1", "2", "3"].contains(l)),
        "{json}"
    );
    // Each leader's address is one of the servers.
    for addr in json_values(&json, "leader_address") {
        let addr = addr.trim_matches('"');
        assert!(
            dev.servers.split(',').any(|s| s == addr),
            "{addr} in {json}"
        );
    }
    let held: Vec<&str> = json_values(&json, "held");
    assert_eq!(held.iter().filter(|&&h| h == "1").count(), 1, "{json}");
    assert!(
        json_values(&json, "term").iter().all(|t| *t != "0"),
        "{json}"
    );
    // The shards the nodes lead add up to the shard count.
    assert_eq!(leads(&json), 8, "{json}");

    // The table form, and a resource still gives the lock's status as before.
    let o = run(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.starts_with("shard"), "{table}");
    assert_eq!(table.matches("reachable, leads").count(), 3, "{table}");
    let o = run(&["status", "cli/1", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"holder\":\"me\""),
        "{o:?}"
    );
}

/// Issue 9 item 5: `udplock dev --nodes 1` runs the single node (one voter, one shard), and
/// `udplock status` without a resource shows its one shard, led by it, with the lock held.
#[test]
fn status_without_a_resource_shows_the_single_nodes_one_shard() {
    let dev = Dev::start_with(&["dev", "--nodes", "1"]);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--servers", &dev.servers])
            .output()
            .expect("udplock runs")
    };
    let o = run(&["acquire", "cli/1", "--client", "me", "--ttl-ms", "60000"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // The node is its own majority: the grant is applied before it is answered, so the
    // report that follows counts it.
    let o = run(&["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let json = String::from_utf8(o.stdout).unwrap();
    assert!(json.starts_with("{\"shards_total\":1,"), "{json}");
    assert_eq!(json_values(&json, "shard"), ["0"], "{json}");
    assert_eq!(json_values(&json, "reachable"), ["true"], "{json}");
    assert_eq!(json_values(&json, "leader_id"), ["1"], "{json}");
    assert_eq!(json_values(&json, "held"), ["1"], "{json}");
    assert_eq!(json_values(&json, "leads"), ["1"], "{json}");
}
