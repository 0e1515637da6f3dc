//! Members over real UDP (issue 10, spec §4.9): every node of a 3-node cluster reports the
//! whole member table alive, through the library (`Client::members`) and through
//! `udplock status` (text and `--json`); then one node is shut down, and status comes to
//! show it suspect or dead. No speed is assumed: each wait polls until a generous deadline.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use udplock::client::MemberState;
use udplock::cluster::{start_local_cluster, ClusterConfig};
use udplock::core::time::Duration as CoreDuration;
use udplock::{Client, ClientConfig};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");
/// Long enough for SWIM to suspect and then declare a silent node dead many times over, on a
/// machine whose CPUs are busy with other tests.
const DEADLINE: Duration = Duration::from_secs(120);

/// The member objects of a `udplock status --json` line: (id, state, incarnation, address),
/// read from its `"members":[...]` array.
fn json_members(json: &str) -> Vec<(u64, String, u64, String)> {
    let start = json.find("\"members\":[").expect("a members array") + "\"members\":[".len();
    let end = start
        + json[start..]
            .find("],\"settings_differences\"")
            .expect("its end");
    let field = |object: &str, key: &str| -> String {
        let pattern = format!("\"{key}\":");
        let at = object
            .find(&pattern)
            .unwrap_or_else(|| panic!("{key} in {object}"))
            + pattern.len();
        let rest = &object[at..];
        rest[..rest.find([',', '}']).unwrap_or(rest.len())]
            .trim_matches('"')
            .to_string()
    };
    json[start..end]
        .split("},{")
        .filter(|o| !o.is_empty())
        .map(|o| {
            (
                field(o, "id").parse().unwrap(),
                field(o, "state"),
                field(o, "incarnation").parse().unwrap(),
                field(o, "address"),
            )
        })
        .collect()
}

fn status(servers: &str, json: bool) -> String {
    let mut args = vec!["status", "--servers", servers, "--shards", "2"];
    if json {
        args.push("--json");
    }
    let o = Command::new(BIN)
        .args(&args)
        .output()
        .expect("udplock runs");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// Polls `udplock status --json` until `done` holds for its members, or fails at DEADLINE.
fn status_until(
    servers: &str,
    what: &str,
    done: impl Fn(&[(u64, String, u64, String)]) -> bool,
) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let json = status(servers, true);
        if done(&json_members(&json)) {
            return json;
        }
        assert!(Instant::now() < deadline, "never {what}: {json}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_shows_every_member_alive_then_a_stopped_one_suspect_or_dead() {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = 2;
    // A short period only makes the waits shorter; nothing below depends on it.
    template.swim_period = CoreDuration::from_millis(100);
    let mut nodes = start_local_cluster(3, &template).expect("cluster starts");
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.local_addr()).collect();
    let servers = addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");

    // Every node's own table (the library call behind status) comes to hold all three alive:
    // the nodes learn each other by SWIM's join exchange, not from the list.
    let client = Client::new(ClientConfig::new(addrs.clone())).expect("client");
    let deadline = Instant::now() + DEADLINE;
    let tables = loop {
        let tables: Vec<_> = addrs
            .iter()
            .map(|&a| client.members(a).expect("a node answers MEMBERS"))
            .collect();
        let full = tables.iter().all(|t| {
            t.members.len() == 3 && t.members.iter().all(|m| m.state == MemberState::Alive)
        });
        if full {
            break tables;
        }
        assert!(
            Instant::now() < deadline,
            "never every member alive everywhere: {tables:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for (i, t) in tables.iter().enumerate() {
        assert_eq!(t.node_id, i as u64 + 1);
        let table: Vec<(u64, String)> = t
            .members
            .iter()
            .map(|m| (m.id, m.addr.to_string()))
            .collect();
        let expected: Vec<(u64, String)> = addrs
            .iter()
            .enumerate()
            .map(|(j, a)| (j as u64 + 1, a.to_string()))
            .collect();
        assert_eq!(table, expected, "node {}", i + 1);
    }
    let json = status(&servers, true);
    assert_eq!(json.lines().count(), 1, "one JSON object: {json}");
    let members = json_members(&json);
    assert_eq!(
        members
            .iter()
            .map(|m| (m.0, m.1.as_str()))
            .collect::<Vec<_>>(),
        [(1, "alive"), (2, "alive"), (3, "alive")],
        "{json}"
    );
    for (id, _, incarnation, addr) in &members {
        assert_eq!(addr, &addrs[*id as usize - 1].to_string(), "{json}");
        let own = tables[1].members.iter().find(|m| m.id == *id).unwrap();
        assert!(*incarnation >= own.incarnation, "{json}");
    }
    // The settings that must agree: each member answered, and they agree.
    assert_eq!(json.matches("\"settings_differ\":[]").count(), 3, "{json}");
    // Each says it validates addresses (setting 15, spec §7.2.5, §10.7: on by default).
    assert_eq!(
        json.matches("\"address_validation\":true").count(),
        3,
        "{json}"
    );
    // The text form lists them too.
    let text = status(&servers, false);
    assert!(text.contains("members (SWIM's view"), "{text}");
    assert_eq!(text.matches("  alive  ").count(), 3, "{text}");
    assert_eq!(
        text.matches("agree; validates addresses").count(),
        3,
        "{text}"
    );

    // Node 3 stops: the others come to hold it suspect, then dead.
    nodes.pop().expect("node 3").shutdown();
    let json = status_until(&servers, "node 3 suspect or dead", |m| {
        m.iter()
            .any(|(id, state, _, _)| *id == 3 && (state == "suspect" || state == "dead"))
    });
    let members = json_members(&json);
    assert_eq!(members.len(), 3, "{json}");
    assert!(
        members
            .iter()
            .filter(|m| m.0 != 3)
            .all(|(_, state, _, _)| state == "alive"),
        "{json}"
    );
    // The stopped node is reported unreachable, and status still succeeds.
    assert!(json.contains("\"reachable\":false"), "{json}");
}

/// `--swim-period` (old spelling `--swim-period-ms`) on `udplock server` and `udplock dev`: a
/// value outside its named range is refused with the limit, and `--help` documents it; a local
/// cluster started with it runs SWIM (every node comes to hold the others alive).
#[test]
fn swim_period_is_a_bounded_option_of_server_and_dev() {
    for (args, limit) in [
        (
            &["server", "--swim-period-ms", "5"][..],
            "below the minimum of 10ms",
        ),
        (
            &["server", "--swim-period", "60001"][..],
            "above the maximum of 1m (60000 ms)",
        ),
        (
            &["dev", "--swim-period", "2m"][..],
            "above the maximum of 1m",
        ),
        (
            &["dev", "--swim-period-ms", "0"][..],
            "below the minimum of 10ms",
        ),
    ] {
        let o = Command::new(BIN).args(args).output().expect("udplock runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {o:?}");
        assert!(stderr.contains(limit), "{args:?}: {stderr}");
    }
    for sub in ["server", "dev"] {
        let o = Command::new(BIN)
            .args([sub, "--help"])
            .output()
            .expect("udplock runs");
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("--swim-period <DURATION>"), "{sub}: {help}");
        assert!(
            help.contains("Old spelling: --swim-period-ms"),
            "{sub}: {help}"
        );
    }
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--nodes",
            "3",
            "--shards",
            "2",
            "--swim-period-ms",
            "50",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("udplock dev starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let servers: Vec<SocketAddr> = line
        .trim()
        .strip_prefix("UDPLOCK_SERVERS=")
        .unwrap_or_else(|| panic!("no server list in {line:?}"))
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let client = Client::new(ClientConfig::new(servers.clone())).expect("client");
    let deadline = Instant::now() + DEADLINE;
    let all_alive = loop {
        let full = servers.iter().all(|&a| {
            client.members(a).is_ok_and(|t| {
                t.members.len() == 3 && t.members.iter().all(|m| m.state == MemberState::Alive)
            })
        });
        if full || Instant::now() > deadline {
            break full;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(all_alive, "the nodes never held each other alive");
}

/// The single node answers MEMBERS with itself, alive, at its address (spec §4.9); mutated
/// and truncated MEMBERS datagrams get a MEMBERS_REPLY or an ERROR_REPLY no longer than
/// themselves, or nothing, and the node keeps serving.
#[test]
fn a_single_node_answers_itself_and_mutated_members_requests_stay_small() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use udplock_protocol::{MembersReply, MembersRequest, MessageType, Reply, DATAGRAM_LEN_MAX};

    let node = super::start_node();
    let to = node.local_addr();
    let client = Client::connect(&[to]).expect("client");
    let table = client.members(to).expect("the single node answers MEMBERS");
    assert_eq!(table.node_id, 1);
    assert_eq!(table.members.len(), 1, "{table:?}");
    assert_eq!(
        (
            table.members[0].id,
            table.members[0].state,
            table.members[0].addr
        ),
        (1, MemberState::Alive, to)
    );

    let mut valid = [0u8; DATAGRAM_LEN_MAX];
    let n = MembersRequest {
        session_id: 9,
        request_id: 1,
        attempt: 0,
        first_id: 0,
    }
    .encode(&mut valid)
    .unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = StdRng::seed_from_u64(10);
    let mut sent = std::collections::HashMap::new();
    for i in 0..1_000u64 {
        let mut d = valid[..n].to_vec();
        // A new request id per datagram, so each answer names what caused it.
        d[16..24].copy_from_slice(&(i + 2).to_be_bytes());
        match i % 3 {
            0 => d.truncate(rng.gen_range(0..n)),
            1 => {
                let at = rng.gen_range(0..n);
                d[at] = rng.gen();
            }
            _ => {
                let at = rng.gen_range(32..48);
                d[at] = rng.gen();
            }
        }
        if d.len() >= 24 {
            sent.insert(d[8..24].to_vec(), d.len());
        }
        sock.send_to(&d, to).unwrap();
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 65_536];
    let (mut members, mut errors) = (0, 0);
    while let Ok((len, _)) = sock.recv_from(&mut buf) {
        let caused_by = sent[&buf[8..24]];
        assert!(
            len <= caused_by,
            "{len}-byte reply to a {caused_by}-byte datagram"
        );
        if MembersReply::decode(&buf[..len]).is_ok() {
            members += 1;
        } else {
            let r = Reply::decode(&buf[..len]).expect("a MEMBERS_REPLY or an ERROR_REPLY");
            assert_eq!(r.msg_type, MessageType::ErrorReply);
            errors += 1;
        }
    }
    assert!(
        members > 0 && errors > 0,
        "{members} members replies, {errors} errors"
    );
    // Still serving.
    client.acquire_lock("after-mutations", "me", 0).unwrap();
    client.release_lock("after-mutations", "me").unwrap();
}
