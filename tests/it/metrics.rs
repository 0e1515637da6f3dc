//! The metrics and health endpoints (`--metrics-listen`, README "Metrics and health"): a
//! `udplock server` process scraped over HTTP — the text is valid exposition format, the lock
//! counters and latency histograms move by exactly what a client did, garbage and half-open
//! connections get an error or time out while the node goes on serving — and, in process,
//! `/ready` refusing while a shard has no leader and `/health` failing once the event loop
//! stops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use udplock::cluster::metrics::{check_exposition, sample_value};
use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode, KeySet};
use udplock::single::{start_single, SingleConfig};
use udplock::Client;

const BIN: &str = env!("CARGO_BIN_EXE_udplock");

/// Long enough for anything on a loaded machine; a test only waits this long if it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// One HTTP exchange: `request` as raw bytes, the status code and body of the answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("the metrics endpoint accepts");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).expect("UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|l| l.parse().ok())
        .expect("a Content-Length");
    // A HEAD's head names the length of the body a GET would get.
    if !request.starts_with(b"HEAD ") {
        assert_eq!(length, body.len(), "{head}");
    }
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// The metrics text, checked against the exposition format.
fn scrape(addr: SocketAddr) -> String {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    text
}

fn value(text: &str, series: &str) -> u64 {
    sample_value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}")) as u64
}

/// Polls `path` until it answers `status` (within [`PATIENCE`]).
fn wait_for(addr: SocketAddr, path: &str, status: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (got, body) = get(addr, path);
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {got} {body}, not {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `udplock server` process with `--metrics-listen 127.0.0.1:0`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--no-state-file"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("udplock server starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (mut addr, mut metrics) = (None, None);
        let mut line = String::new();
        while addr.is_none() || metrics.is_none() {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "server ended");
            let word_after = |w: &str| {
                line.split_whitespace()
                    .skip_while(|x| *x != w)
                    .nth(1)
                    .map(str::to_string)
            };
            if let Some(a) = word_after("on").filter(|_| line.contains("listening on")) {
                addr = a.parse().ok();
            }
            if let Some(url) = word_after("on").filter(|_| line.contains("metrics on")) {
                let host = url
                    .strip_prefix("http://")
                    .and_then(|u| u.strip_suffix("/metrics"))
                    .expect("a /metrics URL");
                metrics = host.parse().ok();
            }
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Server {
            child,
            addr: addr.unwrap(),
            metrics: metrics.unwrap(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_scrape_counts_exactly_one_acquire_and_one_release() {
    let server = Server::start();
    assert_eq!(get(server.metrics, "/health").0, 200);
    wait_for(server.metrics, "/ready", 200);
    let client = Client::connect(&[server.addr]).unwrap();
    // The client's first call may ask the node more than a lock request (its settings): one
    // lock call before the baseline, so the two scrapes see only what the test does.
    client.status("warm/up").unwrap();
    let before = scrape(server.metrics);
    let lease = client
        .acquire("orders/42", "worker-7", 1_000, Some(10_000))
        .unwrap();
    assert_eq!(lease.hold_count, 1);
    let held = scrape(server.metrics);
    assert_eq!(client.release("orders/42", "worker-7").unwrap(), 0);
    let after = scrape(server.metrics);

    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved("udplock_lock_grants_total"), 1);
    assert_eq!(moved("udplock_lock_releases_total"), 1);
    for unmoved in [
        "udplock_lock_handoffs_total",
        "udplock_lock_expirations_total",
        "udplock_lock_acquisition_timeouts_total",
        "udplock_lock_queued_total",
        "udplock_lock_renewals_total",
        "udplock_error_replies_total",
        "udplock_datagrams_dropped_total{reason=\"invalid\"}",
    ] {
        assert_eq!(moved(unmoved), 0, "{unmoved}");
    }
    // The grant was counted before its reply left: the scrape between saw it.
    assert_eq!(
        value(&held, "udplock_lock_grants_total") - value(&before, "udplock_lock_grants_total"),
        1
    );
    assert_eq!(
        value(&held, "udplock_lock_releases_total"),
        value(&before, "udplock_lock_releases_total")
    );
    // One latency sample per request type, none elsewhere.
    let count = |text: &str, ty: &str| {
        value(
            text,
            &format!("udplock_request_duration_seconds_count{{type=\"{ty}\"}}"),
        )
    };
    for (ty, n) in [
        ("acquire", 1),
        ("release", 1),
        ("renew", 0),
        ("acquire_waited", 0),
    ] {
        assert_eq!(
            count(&after, ty) - count(&before, ty),
            n,
            "{ty}\n{before}\n{after}"
        );
    }
    let inf = "udplock_request_duration_seconds_bucket{type=\"acquire\",le=\"+Inf\"}";
    assert_eq!(moved(inf), 1);
    // The gauges from the shard views follow within a few milliseconds.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(server.metrics);
        if value(&text, "udplock_shard_locks_held{shard=\"0\"}") == 0
            && value(&text, "udplock_shard_role{shard=\"0\",role=\"leader\"}") == 1
        {
            assert_eq!(value(&text, "udplock_locks_held"), 0);
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn garbage_and_half_open_connections_get_errors_and_the_node_serves_on() {
    let server = Server::start();
    wait_for(server.metrics, "/ready", 200);
    // A half-open connection that never sends: the responder serves one connection at a
    // time, so the next request waits for its timeout (2 s) and is then answered.
    let idle = TcpStream::connect(server.metrics).unwrap();
    assert_eq!(get(server.metrics, "/nope").0, 404);
    drop(idle);
    assert_eq!(exchange(server.metrics, b"garbage\r\n\r\n").0, 400);
    assert_eq!(exchange(server.metrics, b"\xff\xfe\x00\x01\n\n").0, 400);
    assert_eq!(
        exchange(server.metrics, b"POST /metrics HTTP/1.1\r\n\r\n").0,
        405
    );
    assert_eq!(
        exchange(server.metrics, b"GET /metrics HTTP/9\r\n\r\n").0,
        400
    );
    // A head that never ends: refused past its bound, not read for ever.
    let endless = vec![b'a'; 64 * 1024];
    let mut stream = TcpStream::connect(server.metrics).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = stream.write_all(&endless);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // A HEAD has the GET's head and no body.
    let (status, body) = exchange(server.metrics, b"HEAD /health HTTP/1.0\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(get(server.metrics, "/health"), (200, "ok\n".to_string()));
    // The node serves on, and so does the endpoint.
    let client = Client::connect(&[server.addr]).unwrap();
    client.acquire("after/garbage", "me", 1_000, None).unwrap();
    assert_eq!(get(server.metrics, "/health").0, 200);
    let text = scrape(server.metrics);
    assert!(value(&text, "udplock_lock_grants_total") >= 1);
}

fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn metrics_of(node: &ClusterNode) -> udplock::cluster::http::MetricsServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    node.serve_metrics(listener).unwrap()
}

#[test]
fn ready_waits_for_every_shards_leader() {
    // Node 1 of a new 3-node cluster, alone: its shards start only once every node says it
    // is new too (spec §8.5 rule 6), so none has a leader, for as long as the others are
    // away. Its loop turns: healthy, not ready.
    let peers: Vec<_> = (1..=3).map(|id| (id, free_addr())).collect();
    let template = |id| ClusterConfig {
        shards: 4,
        new_cluster: true,
        keys: Some(KeySet::unauthenticated()),
        ..ClusterConfig::new(id, peers.clone())
    };
    let first = ClusterNode::start(template(1)).unwrap();
    let endpoint = metrics_of(&first);
    let m = endpoint.local_addr();
    assert_eq!(get(m, "/health").0, 200);
    for _ in 0..5 {
        let (status, body) = get(m, "/ready");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no known leader"), "{body}");
    }
    let text = scrape(m);
    assert_eq!(value(&text, "udplock_ready"), 0);
    assert_eq!(value(&text, "udplock_healthy"), 1);
    assert_eq!(value(&text, "udplock_shards_held"), 4);
    // The others come: every shard elects a leader, and the node is ready.
    let others: Vec<_> = [2, 3]
        .into_iter()
        .map(|id| ClusterNode::start(template(id)).unwrap())
        .collect();
    wait_for(m, "/ready", 200);
    let text = scrape(m);
    assert_eq!(value(&text, "udplock_ready"), 1);
    for shard in 0..4 {
        assert!(value(&text, &format!("udplock_shard_leader{{shard=\"{shard}\"}}")) >= 1);
        assert!(value(&text, &format!("udplock_shard_term{{shard=\"{shard}\"}}")) >= 1);
    }
    assert_eq!(value(&text, "udplock_members{state=\"alive\"}"), 3);
    drop(others);
}

#[test]
fn health_fails_once_the_event_loop_stops() {
    let node =
        start_single(SingleConfig::new("127.0.0.1:0".parse().unwrap()).cluster_config()).unwrap();
    let endpoint = metrics_of(&node);
    let m = endpoint.local_addr();
    wait_for(m, "/ready", 200);
    assert_eq!(get(m, "/health").0, 200);
    // The endpoint outlives the loop: its counter stops, and within the stall time (3 s) both
    // answers turn to 503.
    node.shutdown();
    wait_for(m, "/health", 503);
    assert_eq!(get(m, "/ready").0, 503);
    let text = scrape(m);
    assert_eq!(value(&text, "udplock_healthy"), 0);
    assert_eq!(value(&text, "udplock_ready"), 0);
}

#[test]
fn a_local_cluster_counts_a_grant_once_on_its_leader() {
    let nodes = start_local_cluster(3, &ClusterConfig::new(1, Vec::new())).unwrap();
    let endpoints: Vec<_> = nodes.iter().map(metrics_of).collect();
    for e in &endpoints {
        wait_for(e.local_addr(), "/ready", 200);
    }
    let total = |series: &str| -> u64 {
        endpoints
            .iter()
            .map(|e| value(&scrape(e.local_addr()), series))
            .sum()
    };
    let addrs: Vec<_> = nodes.iter().map(ClusterNode::local_addr).collect();
    let client = Client::connect(&addrs).unwrap();
    client.status("warm/up").unwrap();
    let (grants, releases) = (
        total("udplock_lock_grants_total"),
        total("udplock_lock_releases_total"),
    );
    for i in 0..5 {
        client
            .acquire(&format!("r/{i}"), "me", 1_000, None)
            .unwrap();
        client.release(&format!("r/{i}"), "me").unwrap();
    }
    // Every replica applied them; only the leaders counted them, once each.
    assert_eq!(total("udplock_lock_grants_total") - grants, 5);
    assert_eq!(total("udplock_lock_releases_total") - releases, 5);
    assert_eq!(
        total("udplock_request_duration_seconds_count{type=\"acquire\"}"),
        5
    );
}
