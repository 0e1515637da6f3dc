//! Load reports between real `udplock server` processes (spec node-protocol §8.14, client
//! protocol §9.1): in a 3-node cluster, node 3 runs with a tiny `--resources-per-node-max`
//! and the others with the default. Once node 3's replicas hold that many resources, it
//! tells the leaders of its shards (PEER_LOAD), and a leader on ANOTHER node answers
//! OVERLOADED to an acquire of a new resource, which its own counts would have admitted,
//! while a RELEASE still goes through. Nothing diverges: node 3 goes on applying every
//! committed command (the limit is checked when a leader admits, never when a replica
//! applies), so every replica of every shard ends at the same index with the same table.
//! Each node's `/metrics` shows the reports: sent, received, none dropped, and the limit
//! reached, by node 3 and as its leaders know it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use udplock::cluster::metrics::{check_exposition, sample_value};
use udplock_protocol::{AddressToken, Hint, Reply, Request, RequestBody, Status};

use super::processes::{Servers, SHARDS};

/// Long enough for anything on a loaded machine; the test only waits this long if it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Node 3's `--resources-per-node-max`.
const FULL_NODE_RESOURCES_MAX: u64 = 4;

/// The index of the node with the tiny limit (node 3).
const FULL: usize = 2;

const SESSION: u64 = 0x10AD_5E55;

/// A free TCP port on loopback (for `--metrics-listen`).
fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The metrics text of the endpoint at `addr`, checked against the exposition format;
/// `None` while it does not accept yet (the node is starting).
fn scrape(addr: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    check_exposition(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    Some(body.to_string())
}

fn value(text: &str, series: &str) -> u64 {
    sample_value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}")) as u64
}

/// Scrapes `addr` until `ok` holds for its text (within [`PATIENCE`]); the last text.
fn scrape_until(addr: SocketAddr, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(text) = scrape(addr) {
            if ok(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what}; last scrape:\n{text}");
        }
        assert!(Instant::now() < deadline, "{what}: no scrape");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client speaking raw datagrams to the nodes: one session, a request id per request,
/// and each node's address token (spec §7.2.5) once it handed one.
struct Raw {
    socket: UdpSocket,
    request_id: u64,
    tokens: BTreeMap<SocketAddr, AddressToken>,
}

impl Raw {
    fn new() -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        Raw {
            socket,
            request_id: 0,
            tokens: BTreeMap::new(),
        }
    }

    /// `body` as a new request to `to`: its final answer there (after a RETRY, or no answer
    /// within the read timeout, the same request again, so it takes effect at most once),
    /// or `None` if none came after a few copies.
    fn ask(&mut self, to: SocketAddr, body: RequestBody<'_>) -> Option<Status> {
        self.request_id += 1;
        for attempt in 0..8 {
            let request = Request {
                session_id: SESSION,
                request_id: self.request_id,
                attempt,
                body,
            };
            let mut out = vec![0u8; 1_200];
            let len = request
                .encode_with_token(&mut out, self.tokens.get(&to))
                .unwrap();
            self.socket.send_to(&out[..len], to).unwrap();
            let mut buf = [0u8; 1_500];
            let reply = loop {
                let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                    break None;
                };
                match Reply::decode(&buf[..n]) {
                    Ok(r) if from == to && r.request_id == self.request_id => break Some(r),
                    _ => continue,
                }
            };
            let Some(reply) = reply else {
                continue;
            };
            match (reply.status, reply.hint) {
                (Status::Retry, Hint::AddressToken(token)) => {
                    self.tokens.insert(to, token);
                }
                (Status::Waiting, _) => unreachable!("no acquire here waits"),
                (status, _) => return Some(status),
            }
        }
        None
    }

    /// `body` to each node in turn until one answers as the leader of its shard (anything
    /// but NOT_LEADER): that node's index and its answer's status.
    fn ask_leader(&mut self, addrs: &[SocketAddr], body: RequestBody<'_>) -> (usize, Status) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for (i, &addr) in addrs.iter().enumerate() {
                if let Some(status) = self.ask(addr, body) {
                    if status != Status::NotLeader {
                        return (i, status);
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader answers {body:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn acquire(resource: &[u8]) -> RequestBody<'_> {
    RequestBody::Acquire {
        resource,
        client: b"loader",
        wait_ms: 0,
        ttl_ms: 3_600_000,
    }
}

#[test]
fn a_full_node_makes_the_other_leaders_refuse_new_resources_and_no_replica_diverges() {
    let key = udplock::cluster::keys::random_key();
    let mut servers = Servers::unstarted(3, "memory", &[Some(key)], None, &[]);
    let metrics: Vec<SocketAddr> = (0..3).map(|_| free_tcp()).collect();
    let limit = FULL_NODE_RESOURCES_MAX.to_string();
    for (i, m) in metrics.iter().enumerate() {
        let m = m.to_string();
        let mut more = vec!["--metrics-listen", &m];
        if i == FULL {
            more.extend(["--resources-per-node-max", &limit]);
        }
        servers.spawn_with(i, true, &more);
    }
    let addrs = servers.addrs.clone();
    let mut raw = Raw::new();

    // New resources, one after the other, until a leader on another node than node 3
    // refuses one for node 3's report. Each answer comes from the resource's leader.
    let mut granted: Vec<(String, usize)> = Vec::new();
    // OVERLOADED answers one copy and is not remembered (spec §7.1.3): an earlier copy of the
    // same request may still be in flight and take effect.
    let mut overloaded = 0;
    let deadline = Instant::now() + PATIENCE;
    let (refuser, refused) = 'fill: {
        for i in 0u64.. {
            assert!(
                Instant::now() < deadline,
                "no leader other than node 3 refused a new resource; {} granted",
                granted.len()
            );
            let resource = format!("load/{i}");
            let (leader, status) = raw.ask_leader(&addrs, acquire(resource.as_bytes()));
            overloaded += usize::from(status == Status::Overloaded);
            match status {
                Status::Ok => granted.push((resource, leader)),
                // Node 3's own check, or a leader still starting or with its queue of
                // proposals full: only a refusal for node 3's limit counts.
                Status::Overloaded if leader != FULL => {
                    let text = scrape(metrics[leader]).unwrap_or_default();
                    if sample_value(&text, "udplock_overloaded_node_limits_total")
                        .is_some_and(|n| n >= 1.0)
                    {
                        break 'fill (leader, resource);
                    }
                }
                Status::Overloaded => {}
                status => panic!("{resource}: {status:?} from node {}", leader + 1),
            }
        }
        unreachable!("the resources never run out")
    };
    assert!(
        granted.len() as u64 >= FULL_NODE_RESOURCES_MAX,
        "refused before node 3 could be full: granted {granted:?}, then {refused} refused by \
         node {}",
        refuser + 1
    );

    // The refusing leader knows node 3's report (it is repeated every 500 ms while the limit
    // is reached), and node 3 says it reached it; reports went out and came in, none dropped.
    let peer = "udplock_peer_load_reached{peer=\"3\",limit=\"resources\"}";
    let text = scrape_until(metrics[refuser], "node 3's report known", |t| {
        sample_value(t, peer) == Some(1.0)
    });
    assert!(value(&text, "udplock_load_reports_received_total") >= 1);
    assert_eq!(
        sample_value(
            &text,
            "udplock_peer_load_reached{peer=\"3\",limit=\"sessions\"}"
        ),
        None,
        "only the limit reached"
    );
    let text = scrape(metrics[FULL]).expect("node 3 scraped");
    assert_eq!(value(&text, "udplock_load_reached{limit=\"resources\"}"), 1);
    assert_eq!(value(&text, "udplock_load_reached{limit=\"sessions\"}"), 0);
    assert!(value(&text, "udplock_load_reports_sent_total") >= 1);

    // A RELEASE makes room: still served by a leader on another node (spec §9.1 rule 7).
    let (resource, _) = granted
        .iter()
        .find(|(_, leader)| *leader != FULL)
        .expect("a grant by another node's leader: it refused one of its shards' resources")
        .clone();
    let (_, status) = raw.ask_leader(
        &addrs,
        RequestBody::Release {
            resource: resource.as_bytes(),
            client: b"loader",
        },
    );
    assert_eq!(status, Status::Ok, "release of {resource}");

    // Nothing diverges: every replica of every shard ends at its leader's commit index with
    // the same table, node 3's too (it applies beyond its limit what other leaders commit).
    let shards = |text: &str, name: &str| -> Vec<u64> {
        (0..SHARDS)
            .map(|s| value(text, &format!("udplock_{name}{{shard=\"{s}\"}}")))
            .collect()
    };
    let deadline = Instant::now() + PATIENCE;
    let last = loop {
        let texts: Vec<String> = metrics.iter().filter_map(|&m| scrape(m)).collect();
        let views: Vec<[Vec<u64>; 3]> = texts
            .iter()
            .map(|t| {
                [
                    shards(t, "shard_commit_index"),
                    shards(t, "shard_applied_index"),
                    shards(t, "shard_resources"),
                ]
            })
            .collect();
        let settled = views.len() == 3
            && views.iter().all(|[commit, applied, _]| commit == applied)
            && views.windows(2).all(|w| w[0] == w[1]);
        if settled {
            break views;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not converge: [commit, applied, resources] per node {views:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let resources = last[FULL][2].iter().sum::<u64>() as usize;
    assert!(
        (granted.len() - 1..=granted.len() - 1 + overloaded).contains(&resources),
        "every granted resource but the released one, on every node (and any whose earlier \
         copy took effect beside an OVERLOADED answer): {resources} of {} granted, {overloaded} \
         OVERLOADED",
        granted.len()
    );
    assert!(
        resources as u64 + 1 >= FULL_NODE_RESOURCES_MAX,
        "node 3 applied what was granted"
    );
    for (i, &m) in metrics.iter().enumerate() {
        let text = scrape(m).expect("scraped");
        assert_eq!(
            value(&text, "udplock_load_reports_dropped_total"),
            0,
            "node {}",
            i + 1
        );
    }
}
