//! The client's routing rules (spec §7.1.7) during a leader failover, over real UDP: a real
//! 3-node cluster in this process, the leader of one shard killed, and a client that keeps
//! working on that shard. What is counted is datagrams, not time: every operation that spans
//! the failover sends at most [`DATAGRAMS_PER_OPERATION_MAX`] request datagrams (issue 7 item
//! 11: a client following the old text literally sent 97–457 for one STATUS).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use udplock::core::raft::Role;
use udplock::{Client, ClientConfig, LockError};
use udplock_protocol::shard_of;

const SHARDS: u32 = 8;

/// The bound of issue 7 item 11.
const DATAGRAMS_PER_OPERATION_MAX: u64 = 20;

/// Operations after the kill that must succeed in a row before the test stops counting.
const SUCCESSES_IN_A_ROW: usize = 6;

/// The position in `nodes` of the leader of `shard`, once exactly one node leads it.
fn leader_of(nodes: &[ClusterNode], shard: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaders: Vec<usize> = (0..nodes.len())
            .filter(|&i| {
                nodes[i]
                    .shard_stats()
                    .get(shard as usize)
                    .is_some_and(|s| s.role == Some(Role::Leader))
            })
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single leader of shard {shard}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Two resources of one shard.
fn same_shard_pair() -> (String, String, u32) {
    let first = "failover/0".to_string();
    let shard = shard_of(first.as_bytes(), SHARDS);
    let second = (1..)
        .map(|i| format!("failover/{i}"))
        .find(|r| shard_of(r.as_bytes(), SHARDS) == shard)
        .unwrap();
    (first, second, shard)
}

/// One operation: its name, what it returned, and how many request datagrams it sent.
struct Counted {
    what: &'static str,
    ok: bool,
    error: Option<LockError>,
    sent: u64,
}

fn counted<T>(
    client: &Client,
    what: &'static str,
    op: impl FnOnce() -> Result<T, LockError>,
) -> Counted {
    // Every copy after a request's first is a retransmission (a redirect included), so the
    // datagrams of one operation are its first copy plus the growth of `retransmits`.
    let before = client.stats().retransmits;
    let result = op();
    let sent = 1 + client.stats().retransmits - before;
    Counted {
        what,
        ok: result.is_ok(),
        error: result.err(),
        sent,
    }
}

/// Runs `op` (cycling through its steps) until `SUCCESSES_IN_A_ROW` operations succeed in a
/// row after `killed` is set, and returns every operation run after the kill.
fn keep_working(
    killed: &std::sync::atomic::AtomicBool,
    mut op: impl FnMut(usize) -> Counted,
) -> Vec<Counted> {
    let mut ops: Vec<Counted> = Vec::new();
    let mut in_a_row = 0;
    let mut step = 0;
    while in_a_row < SUCCESSES_IN_A_ROW {
        assert!(ops.len() < 400, "the shard never served again");
        let before_kill = !killed.load(std::sync::atomic::Ordering::Acquire);
        let done = op(step);
        step += 1;
        if before_kill && !killed.load(std::sync::atomic::Ordering::Acquire) {
            continue; // entirely before the kill
        }
        in_a_row = if done.ok { in_a_row + 1 } else { 0 };
        ops.push(done);
    }
    ops
}

fn summary(ops: &[Counted]) -> Vec<String> {
    ops.iter()
        .map(|o| match &o.error {
            None => format!("{} {}", o.what, o.sent),
            Some(e) => format!("{} {} ({e:?})", o.what, o.sent),
        })
        .collect()
}

#[test]
fn a_leader_failover_costs_at_most_20_datagrams_per_operation() {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = SHARDS;
    let mut nodes = start_local_cluster(3, &template).expect("cluster starts");
    let servers: Vec<SocketAddr> = nodes.iter().map(ClusterNode::local_addr).collect();
    let client = || {
        let mut config = ClientConfig::new(servers.clone());
        config.shards = SHARDS;
        Client::new(config).expect("client")
    };
    let (reader, locker) = (client(), client());

    let (read, locked, shard) = same_shard_pair();
    leader_of(&nodes, shard);
    // Held throughout, so that STATUS has a holder to report.
    reader
        .acquire(&read, "holder", 2_000, Some(600_000))
        .unwrap();
    // Warm up: both clients know the shard's leader and have RTT samples.
    for _ in 0..20 {
        reader.status(&read).unwrap();
        locker.acquire(&locked, "me", 2_000, Some(10_000)).unwrap();
        locker.release(&locked, "me").unwrap();
    }

    let killed = std::sync::atomic::AtomicBool::new(false);
    let (reads, locks) = std::thread::scope(|s| {
        // The locker is busy when the leader dies: its operation in flight spans the kill.
        let locks = s.spawn(|| {
            keep_working(&killed, |step| match step % 3 {
                0 => counted(&locker, "acquire", || {
                    locker.acquire(&locked, "me", 1_000, Some(10_000))
                }),
                1 => counted(&locker, "renew", || locker.renew(&locked, "me", None)),
                _ => counted(&locker, "release", || locker.release(&locked, "me")),
            })
        });
        let dead = leader_of(&nodes, shard);
        nodes.remove(dead).shutdown();
        killed.store(true, std::sync::atomic::Ordering::Release);
        let reads = keep_working(&killed, |_| {
            counted(&reader, "status", || reader.status(&read))
        });
        (reads, locks.join().unwrap())
    });
    let (reads_seen, locks_seen) = (summary(&reads), summary(&locks));
    eprintln!("datagrams per operation during the failover: {reads_seen:?} {locks_seen:?}");
    // The failover was seen: the first read found the leader gone, and so did some lock
    // operation.
    assert!(reads[0].sent > 1, "{reads_seen:?}");
    assert!(locks.iter().any(|o| o.sent > 1), "{locks_seen:?}");
    let worst = reads.iter().chain(&locks).map(|o| o.sent).max().unwrap();
    assert!(
        worst <= DATAGRAMS_PER_OPERATION_MAX,
        "an operation sent {worst} datagrams during the failover: {reads_seen:?} \
         {locks_seen:?}"
    );
}
