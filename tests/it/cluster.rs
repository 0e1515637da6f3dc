//! A replicated cluster over real UDP: three nodes in this process (`start_local_cluster`, as
//! `udplock dev` runs them), clients that know every node, and a leader that dies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use udplock::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use udplock::core::raft::Role;
use udplock::{Client, ClientConfig, LockError};
use udplock_protocol::shard_of;

const SHARDS: u32 = 8;

fn cluster(nodes: usize) -> Vec<ClusterNode> {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = SHARDS;
    start_local_cluster(nodes, &template).expect("cluster starts")
}

fn client(nodes: &[ClusterNode]) -> Client {
    let servers: Vec<SocketAddr> = nodes.iter().map(ClusterNode::local_addr).collect();
    let mut config = ClientConfig::new(servers);
    config.shards = SHARDS;
    Client::new(config).expect("client")
}

/// The position in `nodes` of the leader of `shard`, once exactly one node leads it.
fn leader_of(nodes: &[ClusterNode], shard: u32, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let leaders: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.shard_stats()
                    .get(shard as usize)
                    .is_some_and(|s| s.role == Some(Role::Leader))
            })
            .map(|(i, _)| i)
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

#[test]
fn locks_on_every_shard_work_through_any_node() {
    let nodes = cluster(3);
    let c = client(&nodes);
    let mut shards_seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let resource = format!("orders/{i}");
        shards_seen.insert(shard_of(resource.as_bytes(), SHARDS));
        let lease = c.acquire(&resource, "w", 2_000, Some(10_000)).unwrap();
        assert_eq!(lease.hold_count, 1);
        let again = c.acquire(&resource, "w", 2_000, None).unwrap();
        assert_eq!(
            (again.hold_count, again.fencing_token),
            (2, lease.fencing_token)
        );
        let status = c.status(&resource).unwrap();
        assert_eq!(status.holder.as_deref(), Some("w"));
        assert_eq!(c.release(&resource, "w").unwrap(), 1);
        assert_eq!(c.release(&resource, "w").unwrap(), 0);
        assert_eq!(c.release(&resource, "w"), Err(LockError::LockNotHeld));
    }
    assert_eq!(shards_seen.len(), SHARDS as usize, "40 ids cover 8 shards");
}

#[test]
fn a_held_lock_survives_its_leader_and_the_service_goes_on() {
    let mut nodes = cluster(3);
    let holder = client(&nodes);
    let other = client(&nodes);
    let resource = "inventory/7";
    let shard = shard_of(resource.as_bytes(), SHARDS);
    leader_of(&nodes, shard, Duration::from_secs(5));
    let lease = holder
        .acquire(resource, "holder", 2_000, Some(30_000))
        .unwrap();

    // The leader of the lock's shard dies (its thread and socket are gone).
    let dead = leader_of(&nodes, shard, Duration::from_secs(1));
    let killed_at = Instant::now();
    nodes.remove(dead).shutdown();

    // The lock is still held: another client cannot take it (its wait usually outlasts the
    // election, so the answer comes from the new leader; on a loaded machine the election
    // may outlast it, and UNAVAILABLE, no leader yet, is asked again: what must never come
    // is a grant)...
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match other.acquire(resource, "other", 1_000, Some(1_000)) {
            Err(LockError::LockAcquisitionTimeout) => break,
            Err(LockError::Unavailable) if Instant::now() < deadline => {}
            result => panic!("the hold was lost with its leader: {result:?}"),
        }
    }
    // ...its holder can renew it under the new leader, with the same token...
    let renewed = holder.renew(resource, "holder", Some(30_000)).unwrap();
    assert_eq!(renewed.fencing_token, lease.fencing_token);
    let recovered = killed_at.elapsed();
    // ...and once released, the other client gets it with a larger token.
    assert_eq!(holder.release(resource, "holder").unwrap(), 0);
    let next = other
        .acquire(resource, "other", 2_000, Some(1_000))
        .unwrap();
    assert!(next.fencing_token > lease.fencing_token);
    // Every other shard serves again too.
    for i in 0..16 {
        let r = format!("after/{i}");
        holder.acquire(&r, "holder", 2_000, Some(1_000)).unwrap();
        holder.release(&r, "holder").unwrap();
    }
    // Informative only (timing is not asserted): how long the shard was unavailable.
    eprintln!("first successful renew {recovered:?} after the leader died");
}

#[test]
fn a_waiter_queued_before_a_failover_is_granted_after_it() {
    let mut nodes = cluster(3);
    let holder = client(&nodes);
    let waiter = client(&nodes);
    let resource = "queue/1";
    let shard = shard_of(resource.as_bytes(), SHARDS);
    leader_of(&nodes, shard, Duration::from_secs(5));
    let lease = holder
        .acquire(resource, "holder", 2_000, Some(60_000))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let result = waiter.acquire(resource, "waiter", 10_000, Some(5_000));
        tx.send(()).unwrap();
        result
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "granted while held");
    let dead = leader_of(&nodes, shard, Duration::from_secs(1));
    nodes.remove(dead).shutdown();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(holder.release(resource, "holder").unwrap(), 0);
    let granted = waiting.join().unwrap().expect("the waiter gets the lock");
    assert!(granted.fencing_token > lease.fencing_token);
}

#[test]
fn idle_shards_share_their_heartbeat_datagrams() {
    // 64 shards, 3 nodes: sent one datagram per shard, the heartbeats alone would be
    // 64 Appends + 64 answers per 30 ms interval. Coalesced and aligned, they are a few
    // datagrams per node pair per interval.
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = 64;
    let nodes = start_local_cluster(3, &template).expect("cluster starts");
    for shard in 0..64 {
        leader_of(&nodes, shard, Duration::from_secs(10));
    }
    let sent = |nodes: &[ClusterNode]| -> u64 {
        nodes
            .iter()
            .map(|n| {
                n.stats()
                    .peer_sent
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    };
    let before = sent(&nodes);
    let window = Duration::from_millis(600);
    std::thread::sleep(window);
    let datagrams = sent(&nodes) - before;
    let intervals = window.as_millis() as u64 / 30;
    let per_interval = datagrams as f64 / intervals as f64;
    eprintln!("{datagrams} peer datagrams in {window:?}: {per_interval:.1} per heartbeat interval");
    // 3 nodes x 2 peers, Appends and answers: 12 per interval when perfectly aligned; allow
    // 3x for stragglers, still far below the 256 of uncoalesced heartbeats.
    assert!(
        per_interval < 36.0,
        "{per_interval:.1} datagrams per interval"
    );
}

#[test]
fn leaders_spread_to_their_preferred_nodes() {
    let nodes = cluster(3);
    let preferred = {
        let template = ClusterConfig::new(
            1,
            (1..=3)
                .map(|id| (id, nodes[id as usize - 1].local_addr()))
                .collect(),
        );
        (0..SHARDS)
            .map(|s| template.preferred_leader(s))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaders: Vec<Option<u64>> = (0..SHARDS)
            .map(|s| {
                nodes
                    .iter()
                    .position(|n| {
                        n.shard_stats()
                            .get(s as usize)
                            .is_some_and(|st| st.role == Some(Role::Leader))
                    })
                    .map(|i| i as u64 + 1)
            })
            .collect();
        if leaders.iter().zip(&preferred).all(|(l, p)| *l == Some(*p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders {leaders:?} never matched the preferred {preferred:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each of the 3 nodes leads 2 or 3 of the 8 shards, and the service works.
    let c = client(&nodes);
    c.acquire("spread", "me", 2_000, Some(1_000)).unwrap();
}

#[test]
fn a_node_that_leaves_hands_its_shards_over_and_locks_stay_held() {
    let mut nodes = cluster(3);
    let c = client(&nodes);
    let resource = "handover/1";
    let shard = shard_of(resource.as_bytes(), SHARDS);
    let leader = leader_of(&nodes, shard, Duration::from_secs(5));
    let lease = c.acquire(resource, "holder", 2_000, Some(30_000)).unwrap();
    let still_led = nodes.remove(leader).leave(Duration::from_secs(5));
    assert_eq!(still_led, 0, "shards left without a handover");
    // The new leader has the hold; the holder renews it with the same token.
    let renewed = c.renew(resource, "holder", Some(30_000)).unwrap();
    assert_eq!(renewed.fencing_token, lease.fencing_token);
    assert_eq!(
        c.status(resource).unwrap().holder.as_deref(),
        Some("holder")
    );
}

/// Three nodes with their own data directories (`os` durability unless said) and frequent
/// snapshots.
struct DiskCluster {
    configs: Vec<ClusterConfig>,
    nodes: Vec<Option<ClusterNode>>,
    dir: std::path::PathBuf,
}

impl DiskCluster {
    fn start(name: &str) -> DiskCluster {
        DiskCluster::start_with(name, udplock::cluster::storage::Durability::Os)
    }

    fn start_with(name: &str, durability: udplock::cluster::storage::Durability) -> DiskCluster {
        let dir = std::env::temp_dir().join(format!("udplock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sockets: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let peers: Vec<(u64, SocketAddr)> = sockets
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, s.local_addr().unwrap()))
            .collect();
        drop(sockets);
        // One cluster key for the three (spec §8.11), as every in-process cluster has.
        let keys = udplock::cluster::keys::random_key_set();
        let configs: Vec<ClusterConfig> = (1..=3)
            .map(|id| {
                let mut c = ClusterConfig::new(id, peers.clone());
                c.shards = 1;
                c.durability = durability;
                c.data_dir = Some(dir.join(format!("node-{id}")));
                c.compact_every = 16;
                c.compact_keep = 4;
                // Every start, as a unit file would: the first creates the cluster.
                c.new_cluster = true;
                c.keys = Some(keys.clone());
                c
            })
            .collect();
        let mut cluster = DiskCluster {
            configs,
            nodes: Vec::new(),
            dir,
        };
        for i in 0..3 {
            cluster.nodes.push(None);
            cluster.start_node(i);
        }
        cluster
    }

    fn start_node(&mut self, i: usize) {
        self.nodes[i] = Some(ClusterNode::start(self.configs[i].clone()).expect("node starts"));
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].take().unwrap().shutdown();
    }

    fn client(&self) -> Client {
        let servers = self.configs[0].peers.iter().map(|&(_, a)| a).collect();
        let mut config = ClientConfig::new(servers);
        config.shards = 1;
        Client::new(config).unwrap()
    }

    fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(n) = n {
                    if n.shard_stats()
                        .first()
                        .is_some_and(|s| s.role == Some(Role::Leader))
                    {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for DiskCluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().filter_map(Option::take) {
            n.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_node_that_missed_compacted_entries_catches_up_from_a_snapshot_and_state_survives_restarts() {
    missed_compacted_entries(DiskCluster::start("snapshots"));
}

/// The same under `fsync`, where each node's writer thread stores and syncs off its event
/// loop and sends what waited for the sync (`cluster::writer`).
#[test]
fn under_fsync_a_node_that_missed_compacted_entries_catches_up_and_state_survives_restarts() {
    use udplock::cluster::storage::Durability;
    missed_compacted_entries(DiskCluster::start_with(
        "snapshots-fsync",
        Durability::Fsync,
    ));
}

fn missed_compacted_entries(mut cluster: DiskCluster) {
    let client = cluster.client();
    let held = client
        .acquire("kept", "holder", 5_000, Some(600_000))
        .unwrap();
    // A follower goes down; the others compact well past what it has.
    let leader = cluster.leader();
    let down = (leader + 1) % 3;
    cluster.kill(down);
    for i in 0..120 {
        let r = format!("churn/{}", i % 7);
        client.acquire(&r, "w", 5_000, Some(60_000)).unwrap();
        client.release(&r, "w").unwrap();
    }
    // It comes back from its disk and can only catch up through InstallSnapshot.
    cluster.start_node(down);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let commits: Vec<u64> = cluster
            .nodes
            .iter()
            .flatten()
            .map(|n| n.shard_stats().first().map_or(0, |s| s.applied_index))
            .collect();
        if commits.len() == 3 && commits.iter().all(|&c| c == commits[0] && c > 100) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no catch-up: applied {commits:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The restarted node had no snapshot of its own (it went down after a handful of
    // entries): the one it holds now came from the leader.
    let snap = cluster
        .dir
        .join(format!("node-{}/shard-0000.snap", down + 1));
    assert!(
        snap.exists(),
        "no snapshot installed on the node that was down"
    );
    // Now the old leader dies: the restarted node's state must carry the hold.
    let leader = cluster.leader();
    cluster.kill(leader);
    let renewed = client.renew("kept", "holder", Some(600_000)).unwrap();
    assert_eq!(renewed.fencing_token, held.fencing_token);
    // Every node restarts from its snapshot and log: holds and token order survive.
    for i in 0..3 {
        if cluster.nodes[i].is_some() {
            cluster.kill(i);
        }
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    let status = client.status("kept").unwrap();
    assert_eq!(status.holder.as_deref(), Some("holder"));
    assert_eq!(status.fencing_token, held.fencing_token);
    let next = client
        .acquire("churn/0", "other", 5_000, Some(1_000))
        .unwrap();
    assert!(next.fencing_token > held.fencing_token);
}

/// Issue 7 item 1 over real files: a node whose data directory comes back empty (here with
/// `--new-cluster` left on, as a unit file would keep it) does not start afresh: it marks its
/// shard as recovering and waits while only one node that holds state answers; killed then,
/// it starts over from the mark instead of trusting the empty files it wrote; once a second
/// node with state returns, it rejoins, its mark goes, and the hold survives the loss of the
/// node that was up all along.
#[test]
fn an_emptied_directory_rejoins_and_a_rejoin_cut_short_starts_over() {
    let mut cluster = DiskCluster::start("emptied");
    let client = cluster.client();
    let held = client
        .acquire("kept", "holder", 5_000, Some(600_000))
        .unwrap();
    let leader = cluster.leader();
    let (lost, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let dir = cluster.dir.join(format!("node-{}", lost + 1));
    let marked = || dir.join("shard-0000.new").exists() || dir.join("shard-0000.rejoin").exists();
    cluster.kill(lost);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    cluster.kill(leader);
    cluster.start_node(lost);
    assert!(marked(), "no recovery mark on the emptied node");
    cluster.kill(lost);
    cluster.start_node(lost);
    assert!(marked(), "a rejoin cut short trusted its files");
    cluster.start_node(leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    while marked() {
        assert!(Instant::now() < deadline, "the emptied node never rejoined");
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.kill(other);
    let renewed = client.renew("kept", "holder", Some(600_000)).unwrap();
    assert_eq!(renewed.fencing_token, held.fencing_token);
}

/// Issue 10, spec §8.12: the nodes run SWIM among themselves. Every node comes to hold the
/// others alive; once one stops (shut down: it answers nothing, as after `kill -9`), both
/// others report it dead through `ClusterNode::members`, and their counters say so. SWIM's
/// period is shortened to 100 ms so that the test is short; the deadline is generous (the
/// bound is about 30 periods, 3 s).
#[test]
fn the_nodes_run_swim_and_report_a_stopped_node_dead() {
    use udplock::core::swim::State;
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = 1;
    template.swim_period = udplock::core::time::Duration::from_millis(100);
    let mut nodes = start_local_cluster(3, &template).expect("cluster starts");
    let ids: Vec<u64> = (1..=3).collect();
    let state =
        |node: &ClusterNode, id: u64| node.members().iter().find(|m| m.id == id).map(|m| m.state);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().enumerate().all(|(i, n)| {
        ids.iter()
            .filter(|&&id| id != ids[i])
            .all(|&id| state(n, id) == Some(State::Alive))
    }) {
        assert!(
            Instant::now() < deadline,
            "not every node holds the others alive: {:?}",
            nodes.iter().map(ClusterNode::members).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nodes.remove(2).shutdown();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nodes.iter().all(|n| state(n, 3) == Some(State::Dead)) {
        assert!(
            Instant::now() < deadline,
            "the stopped node is not dead everywhere: {:?}",
            nodes.iter().map(ClusterNode::members).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in &nodes {
        let stats = n.stats();
        assert_eq!(
            stats
                .members_dead
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(stats.swim_sent.load(std::sync::atomic::Ordering::Relaxed) > 0);
        assert!(
            stats
                .swim_received
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
    }
}
