//! Issue 8: authenticated node-to-node traffic (spec §8.11), over real UDP with in-process
//! nodes.
//!
//! - Datagrams forged without the cluster key — unauthenticated, sealed with another key, or
//!   naming the cluster's key id with a MAC made without it — sent from a listed node's own
//!   address (node 3 of the list is down and the test holds its address), change nothing:
//!   not the holder or token of a lock, not a term or a leader, not a peer's reported
//!   settings; Raft never sees them, and each is counted by reason.
//! - A key rotation (and turning keys on in a keyless cluster), done step by step by
//!   rewriting the nodes' key files, never stops the cluster serving and loses no datagram to
//!   the keys; a node whose file shares no key with the others is cut off, and counted, until
//!   its file is fixed.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use udplock::cluster::keys::{self, KeySet};
use udplock::cluster::{ClusterConfig, ClusterNode};
use udplock::core::peer_auth::AuthDrop;
use udplock::{Client, ClientConfig};
use udplock_protocol::{
    AuthTrailer, ClusterKey, LogCommand, PeerDatagram, PeerEntry, PeerHeader, PeerMessage,
    PeerSettings, PeerWriter, RequestBody, Setting, SettingValue, SettingValues, AUTH_TRAILER_LEN,
    CLUSTER_KEY_LEN, PEER_DATAGRAM_LEN_MAX,
};

const SHARDS: u32 = 2;
/// Long enough for any wait here on a machine whose CPUs are busy; no speed is assumed
/// below it.
const PATIENCE: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Three nodes' addresses, bound now so they stay free for the nodes.
fn sockets() -> (Vec<UdpSocket>, Vec<(u64, SocketAddr)>) {
    let sockets: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, s.local_addr().unwrap()))
        .collect();
    (sockets, peers)
}

fn config(id: u64, peers: &[(u64, SocketAddr)]) -> ClusterConfig {
    let mut c = ClusterConfig::new(id, peers.to_vec());
    c.shards = SHARDS;
    c.new_cluster = true;
    c
}

fn client(peers: &[(u64, SocketAddr)]) -> Client {
    let mut config = ClientConfig::new(peers.iter().map(|&(_, a)| a).collect());
    config.shards = SHARDS;
    Client::new(config).unwrap()
}

/// Every shard's (term, leader) as `node` sees it.
fn views(node: &ClusterNode) -> Vec<(u64, Option<u64>)> {
    node.shard_stats()
        .iter()
        .map(|s| (s.term, s.leader))
        .collect()
}

fn faulty_drops(node: &ClusterNode) -> u64 {
    node.shard_stats().iter().map(|s| s.faulty_drops).sum()
}

/// How a forger without the cluster key dresses a datagram.
#[derive(Clone, Copy, Debug)]
enum Forgery {
    /// AUTH clear.
    Unauthenticated,
    /// Sealed with a key of its own.
    OwnKey,
    /// Sealed with a key of its own, then given the cluster key's id.
    ClusterKeyId,
}

impl Forgery {
    const ALL: [Forgery; 3] = [
        Forgery::Unauthenticated,
        Forgery::OwnKey,
        Forgery::ClusterKeyId,
    ];

    /// The reason the node must drop it for.
    fn reason(self) -> AuthDrop {
        match self {
            Forgery::Unauthenticated => AuthDrop::Unauthenticated,
            Forgery::OwnKey => AuthDrop::UnknownKey,
            Forgery::ClusterKeyId => AuthDrop::BadMac,
        }
    }
}

/// The forger: node 3's address, what it learned of the nodes' lives from the sealed
/// datagrams they send to node 3, and a key that is not the cluster's.
struct Forger {
    socket: UdpSocket,
    cluster_id: u64,
    cluster_key_id: u32,
    own_key: ClusterKey,
    /// Each node's incarnation, as read from its datagrams' trailers.
    lives: [u64; 3],
    seq: u64,
}

impl Forger {
    /// Reads whatever the nodes sent to node 3's address, learning their incarnations.
    fn listen(&mut self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX + 1];
        while let Ok(n) = self.socket.recv(&mut buf) {
            if let Ok(d) = PeerDatagram::decode(&buf[..n]) {
                if let Some(t) = d.auth {
                    self.lives[d.header.from as usize - 1] = t.incarnation;
                }
            }
        }
        self.socket.set_nonblocking(false).unwrap();
    }

    fn dress(&mut self, mut datagram: Vec<u8>, to: u64, how: Forgery) -> Vec<u8> {
        if let Forgery::Unauthenticated = how {
            return datagram;
        }
        self.seq += 1;
        let len = datagram.len();
        datagram.resize(len + AUTH_TRAILER_LEN, 0);
        let trailer = AuthTrailer {
            to,
            incarnation: 1 << 62,
            peer_incarnation: self.lives[to as usize - 1],
            seq: self.seq,
            key_id: 0,
        };
        let sealed = self.own_key.seal(&mut datagram, len, &trailer).unwrap();
        if let Forgery::ClusterKeyId = how {
            let at = len + udplock_protocol::auth::field::KEY_ID.start;
            datagram[at..at + 4].copy_from_slice(&self.cluster_key_id.to_be_bytes());
        }
        assert_eq!(sealed, datagram.len());
        datagram
    }

    fn peer(&self, records: &[(u16, PeerMessage<'_>)]) -> Vec<u8> {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let header = PeerHeader {
            cluster_id: self.cluster_id,
            from: 3,
        };
        let mut w = PeerWriter::with_trailer_room(&mut buf, header, AUTH_TRAILER_LEN);
        for (shard, m) in records {
            w.push(*shard, m).unwrap();
        }
        let n = w.finish();
        buf[..n].to_vec()
    }

    /// The attacks, for a shard whose followers are in `term` with `commit`
    /// entries: a leader of a later term whose Append releases `resource`, a TimeoutNow, a
    /// vote and an answer of huge terms, a junk snapshot, and other settings.
    fn hostile(&self, shard: u16, term: u64, commit: u64, resource: &str) -> Vec<Vec<u8>> {
        let mut release = [0u8; 600];
        let release_len = LogCommand::Request {
            stamp: 1,
            session_id: 7,
            request_id: 7,
            attempt: 0,
            room_for_waiting: false,
            reply_to: self.socket.local_addr().unwrap(),
            body: RequestBody::Release {
                resource: resource.as_bytes(),
                client: b"me",
            },
        }
        .encode(&mut release)
        .unwrap();
        let mut append = [0u8; PEER_DATAGRAM_LEN_MAX];
        let header = PeerHeader {
            cluster_id: self.cluster_id,
            from: 3,
        };
        let mut w = PeerWriter::with_trailer_room(&mut append, header, AUTH_TRAILER_LEN);
        let entries = [PeerEntry {
            term: term + 100,
            data: &release[..release_len],
        }];
        w.push_append(
            shard,
            term + 100,
            commit,
            term,
            commit + 1,
            (1, 0),
            entries.iter().copied(),
        )
        .unwrap();
        let n = w.finish();
        let settings = [SettingValue {
            setting: Setting::TtlDefaultMs.to_wire(),
            value: 1,
        }];
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let settings_len = PeerSettings {
            header,
            auth: None,
            values: SettingValues::from_slice(&settings),
        }
        .encode(&mut buf[..PEER_DATAGRAM_LEN_MAX - AUTH_TRAILER_LEN])
        .unwrap();
        vec![
            append[..n].to_vec(),
            self.peer(&[(shard, PeerMessage::TimeoutNow { term })]),
            self.peer(&[(
                shard,
                PeerMessage::Vote {
                    term: u64::MAX,
                    last_log_index: u64::MAX,
                    last_log_term: u64::MAX,
                    transfer: false,
                },
            )]),
            self.peer(&[(
                shard,
                PeerMessage::AppendReply {
                    term: u64::MAX / 2,
                    success: true,
                    match_index: u64::MAX / 4,
                    round: 1,
                    life: 1,
                    replica: 1,
                },
            )]),
            self.peer(&[(
                shard,
                PeerMessage::InstallSnapshot {
                    term: term + 200,
                    last_index: commit + 1_000,
                    last_term: term + 200,
                    offset: 0,
                    total_len: 4,
                    round: 1,
                    data: b"junk",
                },
            )]),
            buf[..settings_len].to_vec(),
        ]
    }
}

/// Issue 8 items 1 and 3: with node 3 down and its address held by a forger, nothing the
/// forger sends without the cluster key changes anything at nodes 1 and 2, and each datagram
/// is counted by why it was dropped.
#[test]
fn datagrams_forged_without_the_key_from_a_listed_address_change_nothing_and_are_counted() {
    let (sockets, peers) = sockets();
    let key = keys::random_key_set();
    let mut nodes: Vec<ClusterNode> = sockets
        .into_iter()
        .zip(1..)
        .map(|(socket, id)| {
            let mut c = config(id, &peers);
            c.keys = Some(key.clone());
            ClusterNode::start_on(socket, c).unwrap()
        })
        .collect();
    let client = client(&peers);
    let lease = client.acquire("held", "me", 10_000, Some(600_000)).unwrap();
    // Node 1 has heard node 3's settings (they agree).
    wait_for("node 3's settings", || {
        nodes[0].peer_settings().contains_key(&3)
    });
    nodes.pop().unwrap().shutdown();
    let socket = UdpSocket::bind(peers[2].1).expect("node 3's address is free again");
    let mut forger = Forger {
        socket,
        cluster_id: config(3, &peers).cluster_id(),
        cluster_key_id: key.send().unwrap().id(),
        own_key: ClusterKey::new(&keys::random_key()),
        lives: [0; 3],
        seq: 0,
    };
    // Nodes 1 and 2 lead every shard between them, and have told node 3 their lives.
    wait_for("nodes 1 and 2 to lead every shard", || {
        nodes.iter().all(|n| {
            views(n)
                .iter()
                .all(|&(_, leader)| leader == Some(1) || leader == Some(2))
        })
    });
    wait_for("nodes 1 and 2 to send to node 3", || {
        forger.listen();
        forger.lives[..2].iter().all(|&l| l != 0)
    });
    let before: Vec<Vec<(u64, Option<u64>)>> = nodes.iter().map(views).collect();
    let settings_before: Vec<_> = nodes.iter().map(|n| n.peer_settings()).collect();
    let term_max = before.iter().flatten().map(|v| v.0).max().unwrap();
    let stats: Vec<_> = nodes.iter().map(|n| n.shard_stats()).collect();

    // Sent a shard's worth at a time, each batch only once the node has counted the last:
    // a burst larger than the node's receive buffer would be cut short by the kernel when
    // the machine is busy, and a datagram the node never read proves nothing.
    let counted = |i: usize, sent: &[[u64; 3]; 2]| {
        Forgery::ALL
            .iter()
            .enumerate()
            .all(|(f, how)| nodes[i].stats().auth_dropped(how.reason()) >= sent[i][f])
    };
    let rounds = 5;
    let mut sent = [[0u64; 3]; 2];
    for _ in 0..rounds {
        forger.listen();
        for (i, &(to, addr)) in peers[..2].iter().enumerate() {
            for shard in 0..SHARDS as u16 {
                let s = &stats[i][shard as usize];
                for d in forger.hostile(shard, s.term, s.commit_index, "held") {
                    for (f, how) in Forgery::ALL.into_iter().enumerate() {
                        let d = forger.dress(d.clone(), to, how);
                        forger.socket.send_to(&d, addr).unwrap();
                        sent[i][f] += 1;
                    }
                }
                let deadline = Instant::now() + PATIENCE;
                while !counted(i, &sent) {
                    assert!(
                        Instant::now() < deadline,
                        "waited {PATIENCE:?} for node {} to count what was sent",
                        i + 1
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    // Nothing changed: the hold, its token, the nodes' terms and leaders (a natural election
    // could move a term by one or two, never to the forged ones), what they report of node
    // 3's settings; and Raft never saw a forged record.
    for (i, node) in nodes.iter().enumerate() {
        let after = views(node);
        for (shard, &(term, leader)) in after.iter().enumerate() {
            assert!(
                term < term_max + 100 && leader != Some(3),
                "node {}: shard {shard} went from {:?} to {:?}",
                i + 1,
                before[i][shard],
                (term, leader)
            );
        }
        assert_eq!(node.peer_settings(), settings_before[i], "node {}", i + 1);
        assert_eq!(faulty_drops(node), 0, "node {}: Raft saw forgeries", i + 1);
        for (f, how) in Forgery::ALL.into_iter().enumerate() {
            assert_eq!(
                node.stats().auth_dropped(how.reason()),
                sent[i][f],
                "node {}: {how:?} datagrams counted as {}",
                i + 1,
                how.reason()
            );
        }
    }
    let status = client.status("held");
    assert!(
        status.as_ref().is_ok_and(
            |s| s.holder.as_deref() == Some("me") && s.fencing_token == lease.fencing_token
        ),
        "the hold changed: {status:?}"
    );
    client.release("held", "me").unwrap();
    client.acquire("after", "me", 10_000, Some(1_000)).unwrap();
}

/// A key file per node, rewritten in place as an operator would.
struct KeyFiles {
    dir: PathBuf,
}

impl KeyFiles {
    fn new(name: &str) -> KeyFiles {
        let dir = std::env::temp_dir().join(format!("udplock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        KeyFiles { dir }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.keys"))
    }

    fn write(&self, id: u64, entries: &[Option<[u8; CLUSTER_KEY_LEN]>]) {
        let path = self.path(id);
        if path.exists() {
            // In place, keeping the file's mode (0600).
            std::fs::write(&path, keys::text(entries)).unwrap();
        } else {
            keys::create(&path, entries).unwrap();
        }
    }
}

impl Drop for KeyFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Rewrites every node's key file to `entries`, one node after the other, and waits until
/// each node has applied it.
fn step(nodes: &[ClusterNode], files: &KeyFiles, entries: &[Option<[u8; CLUSTER_KEY_LEN]>]) {
    let want: Vec<Option<u32>> = entries
        .iter()
        .map(|e| e.map(|k| ClusterKey::new(&k).id()))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        files.write(i as u64 + 1, entries);
        wait_for(&format!("node {} to reload its keys", i + 1), || {
            key_ids(&node.keys()) == want
        });
    }
}

fn key_ids(keys: &KeySet) -> Vec<Option<u32>> {
    keys.entries()
        .iter()
        .map(|e| e.as_ref().map(ClusterKey::id))
        .collect()
}

fn serves(client: &Client, step: &str) {
    let lease = client.acquire(step, "me", 10_000, Some(5_000));
    assert!(lease.is_ok(), "{step}: acquire failed: {lease:?}");
    let released = client.release(step, "me");
    assert!(released.is_ok(), "{step}: release failed: {released:?}");
}

/// The drops the keys caused anywhere: every reason but StaleReceiver, which is the first
/// datagram of two nodes that have not heard each other's life yet (one exchange).
fn key_drops(nodes: &[ClusterNode]) -> u64 {
    nodes
        .iter()
        .flat_map(|n| {
            AuthDrop::ALL
                .into_iter()
                .filter(|&r| r != AuthDrop::StaleReceiver)
                .map(|r| n.stats().auth_dropped(r))
        })
        .sum()
}

/// Issue 8 item 2: the README's steps, on a running 3-node cluster, from `old` to `new`
/// (`None`: no key), with an acquire and a release after each step.
fn rotate(name: &str, old: Option<[u8; CLUSTER_KEY_LEN]>, new: Option<[u8; CLUSTER_KEY_LEN]>) {
    let files = KeyFiles::new(name);
    let (sockets, peers) = sockets();
    for id in 1..=3 {
        files.write(id, &[old]);
    }
    let nodes: Vec<ClusterNode> = sockets
        .into_iter()
        .zip(1..)
        .map(|(socket, id)| {
            let mut c = config(id, &peers);
            c.key_file = Some(files.path(id));
            ClusterNode::start_on(socket, c).unwrap()
        })
        .collect();
    let client = client(&peers);
    serves(&client, "started");
    step(&nodes, &files, &[old, new]);
    serves(&client, "added");
    step(&nodes, &files, &[new, old]);
    serves(&client, "swapped");
    step(&nodes, &files, &[new]);
    serves(&client, "removed");
    // Not one datagram was lost to the keys on the way.
    assert_eq!(key_drops(&nodes), 0, "{:?}", drops(&nodes));
    for node in &nodes {
        assert_eq!(node.stats().key_reloads.load(Ordering::Relaxed), 3);
    }

    // A bad file on node 1 keeps its keys; the cluster goes on.
    std::fs::write(files.path(1), "not a key\n").unwrap();
    wait_for("node 1 to refuse its file", || {
        nodes[0].stats().key_file_errors.load(Ordering::Relaxed) == 1
    });
    assert_eq!(key_ids(&nodes[0].keys()), key_ids(&nodes[1].keys()));
    serves(&client, "bad file");
    files.write(1, &[new]);

    // Node 3 with a key nobody else has: cut off both ways, and counted, until fixed.
    let stranger = keys::random_key();
    files.write(3, &[Some(stranger)]);
    wait_for("node 3 and the others to drop each other", || {
        nodes
            .iter()
            .all(|n| n.stats().auth_dropped(AuthDrop::UnknownKey) > 0)
    });
    serves(&client, "node 3 cut off");
    files.write(3, &[new]);
    // Back: node 3 follows the leaders the others follow, in their terms.
    wait_for("node 3 to take part again", || {
        let (one, three) = (views(&nodes[0]), views(&nodes[2]));
        one == three && three.iter().all(|&(_, l)| l.is_some())
    });
    serves(&client, "node 3 back");
}

fn drops(nodes: &[ClusterNode]) -> Vec<Vec<(AuthDrop, u64)>> {
    nodes
        .iter()
        .map(|n| {
            AuthDrop::ALL
                .into_iter()
                .map(|r| (r, n.stats().auth_dropped(r)))
                .filter(|&(_, c)| c > 0)
                .collect()
        })
        .collect()
}

#[test]
fn a_key_rotation_step_by_step_never_stops_the_cluster_and_a_node_without_the_key_is_cut_off() {
    rotate(
        "rotation",
        Some(keys::random_key()),
        Some(keys::random_key()),
    );
}

#[test]
fn keys_turned_on_in_a_running_keyless_cluster_step_by_step_never_stop_it() {
    rotate("enabling", None, Some(keys::random_key()));
}
