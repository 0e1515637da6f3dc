//! `udplock remove` over real UDP (issue 10 §2, spec §4.10): a 3-node cluster with a key
//! file; node 3 stops (a dead machine); once the others hold it dead, `udplock remove 3`
//! retires it: it prints what happened, the others hold it left (and `udplock status` says
//! so), a second run says it is already removed, a live node or an unknown one is refused
//! (exit code 1, saying it was not removed and why), and
//! a removal made with another key gets no answer (exit code 6). No speed is assumed: each
//! wait polls until a generous deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use udplock::client::MemberState;
use udplock::cluster::{keys, start_local_cluster, ClusterConfig};
use udplock::core::time::Duration as CoreDuration;
use udplock::{Client, ClientConfig};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");
/// Long enough for SWIM to declare a silent node dead many times over on a busy machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// A directory of key files, removed afterwards.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remove(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("remove")
        .args(args)
        .env_remove("UDPLOCK_SERVERS")
        .env_remove("UDPLOCK_CLUSTER_KEY_FILE")
        .output()
        .expect("udplock runs")
}

/// Polls node `addr`'s member table until member `id` is in `state`, or fails at DEADLINE.
fn wait_state(client: &Client, addr: SocketAddr, id: u64, state: MemberState) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let table = client.members(addr).expect("a node answers MEMBERS");
        if let Some(m) = table
            .members
            .iter()
            .find(|m| m.id == id && m.state == state)
        {
            return m.incarnation;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never held node {id} {state:?}: {table:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn remove_retires_a_dead_node_and_refuses_a_live_one() {
    let dir = Dir(std::env::temp_dir().join(format!("udplock-remove-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let key_file = dir.0.join("cluster.keys");
    keys::create(&key_file, &[Some(keys::random_key())]).unwrap();
    let other_key = dir.0.join("other.keys");
    keys::create(&other_key, &[Some(keys::random_key())]).unwrap();

    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = 2;
    template.key_file = Some(key_file.clone());
    // A short period only makes the waits shorter; nothing below depends on it.
    template.swim_period = CoreDuration::from_millis(100);
    let mut nodes = start_local_cluster(3, &template).expect("cluster starts");
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.local_addr()).collect();
    let client = Client::new(ClientConfig::new(addrs.clone())).expect("client");
    for &a in &addrs {
        for id in 1..=3 {
            wait_state(&client, a, id, MemberState::Alive);
        }
    }
    let key = key_file.to_str().unwrap();
    let node1 = addrs[0].to_string();

    // A live member is refused: exit code 1, a sentence that says it was not removed and
    // why (not an "invalid argument": the arguments were fine, the node said no), nothing on
    // stdout; with --json, the refusal on stdout too. It stays alive.
    let o = remove(&["2", "--server", &node1, "--key-file", key]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr.starts_with("udplock: node 2 was not removed: node 1 holds it alive"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stop it first") && stderr.contains("--leave-on-stop"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid argument"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(o.stdout.is_empty(), "{o:?}");
    let o = remove(&["2", "--server", &node1, "--key-file", key, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(
        json.contains("\"removed\":false") && json.contains("\"outcome\":\"ALIVE\""),
        "{json}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("udplock: node 2 was not removed"),
        "{o:?}"
    );
    // A node that knows no such member: refused too.
    let o = remove(&["9", "--server", &node1, "--key-file", key]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .starts_with("udplock: node 9 was not removed: node 1 knows no node 9"),
        "{o:?}"
    );

    // Node 3's machine dies.
    nodes.pop().expect("node 3").shutdown();
    let dead_at = wait_state(&client, addrs[0], 3, MemberState::Dead);
    wait_state(&client, addrs[1], 3, MemberState::Dead);

    // A removal with a key the cluster does not hold is dropped unanswered: exit code 6.
    let o = remove(&[
        "3",
        "--server",
        &node1,
        "--key-file",
        other_key.to_str().unwrap(),
        "--timeout-ms",
        "300",
    ]);
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not accept key"),
        "{o:?}"
    );
    assert_eq!(
        wait_state(&client, addrs[0], 3, MemberState::Dead),
        dead_at,
        "a removal with the wrong key changed something"
    );

    // The operator retires it (the incarnation read from the node), with JSON output.
    let o = remove(&["3", "--server", &node1, "--key-file", key, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let json = String::from_utf8(o.stdout).unwrap();
    assert!(
        json.contains("\"removed\":true") && json.contains("\"outcome\":\"REMOVED\""),
        "{json}"
    );
    assert!(
        json.contains(&format!("\"incarnation\":{dead_at}")),
        "{json}"
    );
    // Both nodes hold it left at that incarnation: node 2 learned it by gossip.
    for &a in &addrs[..2] {
        assert_eq!(wait_state(&client, a, 3, MemberState::Left), dead_at);
    }
    // `udplock status` shows it left.
    let servers = format!("{},{}", addrs[0], addrs[1]);
    let o = Command::new(BIN)
        .args(["status", "--servers", &servers, "--shards", "2", "--json"])
        .output()
        .expect("udplock runs");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let status = String::from_utf8(o.stdout).unwrap();
    assert!(
        status.contains("\"id\":3,\"state\":\"left\""),
        "status does not show node 3 left: {status}"
    );
    // Idempotent: a second run, at the other node, says it is already removed.
    let o = remove(&["3", "--server", &addrs[1].to_string(), "--key-file", key]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("already removed"), "{text}");
}
