//! Bad input: random, truncated, wrong-version, oversized, reserved-bit and reply-type
//! datagrams get an error reply no larger than themselves or nothing, and the node keeps
//! serving.

use std::net::UdpSocket;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use udplock::Client;
use udplock_protocol::{MessageType, Reply, Request, RequestBody, Status, DATAGRAM_LEN_MAX};

use super::start_node;

/// Sends `datagram` and returns the first datagram that comes back within `wait`.
fn exchange(
    sock: &UdpSocket,
    to: std::net::SocketAddr,
    datagram: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(datagram, to).unwrap();
    let mut buf = [0u8; 65_536];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// A reply is expected: wait generously (CI machines stall), and check it answers `datagram`.
fn expect_reply(sock: &UdpSocket, to: std::net::SocketAddr, datagram: &[u8]) -> Reply<'static> {
    let bytes = exchange(sock, to, datagram, Duration::from_secs(5)).expect("an error reply");
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let reply = Reply::decode(bytes).expect("the reply decodes");
    assert_eq!(
        &bytes[8..24],
        &datagram[8..24],
        "the reply answers another datagram"
    );
    assert!(bytes.len() <= datagram.len());
    reply
}

/// Silence is expected. A reply slower than the short wait would still be caught: by the
/// request-id check of the next `expect_reply`, or by the final drain.
fn expect_silence(sock: &UdpSocket, to: std::net::SocketAddr, datagram: &[u8]) {
    if let Some(r) = exchange(sock, to, datagram, Duration::from_millis(20)) {
        panic!(
            "a {}-byte datagram got a {}-byte reply",
            datagram.len(),
            r.len()
        );
    }
}

fn acquire_bytes() -> Vec<u8> {
    let req = Request {
        session_id: 77,
        request_id: 1,
        attempt: 0,
        body: RequestBody::Acquire {
            resource: b"g",
            client: b"c",
            wait_ms: 0,
            ttl_ms: 0,
        },
    };
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = req.encode(&mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn garbage_gets_small_errors_or_nothing_and_the_node_keeps_serving() {
    let node = start_node();
    let to = node.local_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();

    // Wrong version, full size: a 76-byte UNSUPPORTED_VERSION error reply.
    let mut bytes = acquire_bytes();
    bytes[2] = 9;
    let r = expect_reply(&sock, to, &bytes);
    assert_eq!(
        (r.msg_type, r.status),
        (MessageType::ErrorReply, Status::UnsupportedVersion)
    );
    assert_eq!((r.session_id, r.request_id), (77, 1));

    // A reserved byte set: MALFORMED.
    let mut bytes = acquire_bytes();
    bytes[30] = 1;
    assert_eq!(expect_reply(&sock, to, &bytes).status, Status::Malformed);

    // An unknown message type: UNSUPPORTED.
    let mut bytes = acquire_bytes();
    bytes[3] = 0x3F;
    assert_eq!(expect_reply(&sock, to, &bytes).status, Status::Unsupported);

    // Every truncation of a valid request: nothing below 76 bytes (no room for a reply).
    let bytes = acquire_bytes();
    for cut in 0..bytes.len() {
        expect_silence(&sock, to, &bytes[..cut]);
    }

    // Oversized, a reply type, the wrong magic: silence.
    let mut big = acquire_bytes();
    big.resize(DATAGRAM_LEN_MAX + 1, 0);
    expect_silence(&sock, to, &big);
    expect_silence(&sock, to, &vec![0u8; 60_000]);
    let mut reply_type = acquire_bytes();
    reply_type[3] = 0x81;
    expect_silence(&sock, to, &reply_type);
    let mut magic = acquire_bytes();
    magic[0] = 0;
    expect_silence(&sock, to, &magic);
    // A reply or node-to-node type is never answered, whatever its version (no loops).
    for (version, ty) in [(2, 0x81), (2, 0x41), (1, 0x60)] {
        let mut d = acquire_bytes();
        d[2] = version;
        d[3] = ty;
        expect_silence(&sock, to, &d);
    }

    // Then a valid request from the same socket is answered, and answered first: nothing
    // above was answered late.
    let mut valid = acquire_bytes();
    valid[23] = 2; // request id 2
    let r = expect_reply(&sock, to, &valid);
    // Address validation (spec §7.2.5): the first mutating request of the session draws a
    // RETRY; the same request with its token is served.
    assert_eq!(
        (r.msg_type, r.status),
        (MessageType::AcquireReply, Status::Retry)
    );
    let udplock_protocol::Hint::AddressToken(token) = r.hint else {
        panic!("a RETRY without a token: {r:?}");
    };
    let mut tokened = [0u8; DATAGRAM_LEN_MAX];
    let len = udplock_protocol::with_address_token(&valid, &token, &mut tokened).unwrap();
    let r = expect_reply(&sock, to, &tokened[..len]);
    assert_eq!(
        (r.msg_type, r.status),
        (MessageType::AcquireReply, Status::Ok)
    );

    // Random datagrams, half with a valid-looking start. Any answer must be a decodable error
    // reply no larger than the datagram that caused it, found by the ids it echoes.
    let mut rng = StdRng::seed_from_u64(7);
    let mut sent = std::collections::HashMap::new();
    for i in 0..2_000 {
        let len = rng.gen_range(0..1_400);
        let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if i % 2 == 0 && len >= 4 {
            d[..3].copy_from_slice(&[0x55, 0x4C, 1]);
            d[3] = rng.gen_range(0..8);
        }
        if d.len() >= 24 {
            sent.insert(d[8..24].to_vec(), d.len());
        }
        sock.send_to(&d, to).unwrap();
        if i % 64 == 0 {
            // Pace the burst so the kernel's buffers never overflow.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // The stream of answers ends when none comes for a second.
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 65_536];
    let mut answered = 0;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let r = Reply::decode(&buf[..n]).expect("replies decode");
        assert_eq!(r.msg_type, MessageType::ErrorReply);
        let caused_by = sent[&buf[8..24]];
        assert!(
            n <= caused_by,
            "{n}-byte reply to a {caused_by}-byte datagram"
        );
        answered += 1;
    }
    assert!(
        answered > 0,
        "no random datagram was answered: the test tests nothing"
    );
    assert!(
        node.stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // Still serving.
    let c = Client::connect(&[to]).unwrap();
    c.acquire_lock("after-garbage", "me", 0).unwrap();
    c.release_lock("after-garbage", "me").unwrap();
}

/// A cluster takes the same abuse, plus forged PEER datagrams: random bodies, and well-formed
/// Raft records that contradict Raft (a second leader, a term of u64::MAX, an Append
/// rewriting committed entries, bogus snapshot chunks, term queries).
/// - Sent from an address that is not a listed node's (the usual forgery), they are all
///   dropped: the hold and the service are untouched.
/// - Sent from node 3's own address (the test holds node 3's socket: a faulty or hostile
///   member, which version 1's unauthenticated peer traffic cannot tell apart, spec §12),
///   they may disturb the shard, but never crash a node.
///
/// The nodes run without a cluster key on purpose (`keys: None`): with one, the forgeries
/// would be dropped by the authentication checks (spec §8.11, `it::peer_auth`) before Raft
/// sees them, and this test is of the defences that hold without keys.
///
/// No reply is ever larger than what caused it.
#[test]
fn a_cluster_survives_garbage_and_forged_peer_datagrams() {
    use udplock::cluster::{ClusterConfig, ClusterNode};
    use udplock_protocol::{PeerEntry, PeerHeader, PeerMessage, PeerWriter, PEER_DATAGRAM_LEN_MAX};

    let sockets: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers: Vec<(u64, std::net::SocketAddr)> = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, s.local_addr().unwrap()))
        .collect();
    let mut sockets = sockets.into_iter();
    let nodes: Vec<ClusterNode> = (1..=2)
        .map(|id| {
            let mut config = ClusterConfig::new(id, peers.clone());
            config.shards = 1;
            config.new_cluster = true;
            ClusterNode::start_on(sockets.next().unwrap(), config).unwrap()
        })
        .collect();
    let forger = sockets.next().unwrap();
    let cluster_id = ClusterConfig {
        shards: 1,
        ..ClusterConfig::new(3, peers.clone())
    }
    .cluster_id();
    let servers: Vec<std::net::SocketAddr> = peers.iter().map(|&(_, a)| a).collect();
    let mut config = udplock::ClientConfig::new(servers.clone());
    config.shards = 1;
    let client = Client::new(config).unwrap();
    // A new cluster starts once every node says it is new (spec §8.5): node 3, whose address
    // the forger has, says so until the two real nodes have formed the cluster.
    let answering = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let socket = forger.try_clone().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
            let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
            while answering.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(d) = udplock_protocol::PeerDatagram::decode(&buf[..n]) else {
                    continue;
                };
                for (shard, record) in d.records() {
                    if let PeerMessage::TermQuery { nonce, .. } = record {
                        let header = PeerHeader {
                            cluster_id,
                            from: 3,
                        };
                        let mut w = PeerWriter::new(&mut out, header);
                        let new = PeerMessage::NoStateReply {
                            term: 0,
                            nonce,
                            new: true,
                        };
                        w.push(shard, &new).unwrap();
                        let len = w.finish();
                        socket.send_to(&out[..len], from).unwrap();
                    }
                }
            }
        });
        let acquired = client.acquire("held", "me", 10_000, Some(60_000));
        answering.store(false, std::sync::atomic::Ordering::Relaxed);
        acquired.unwrap();
    });

    let peer = |records: &[(u16, PeerMessage<'_>)]| {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(
            &mut buf,
            PeerHeader {
                cluster_id,
                from: 3,
            },
        );
        for (shard, m) in records {
            w.push(*shard, m).unwrap();
        }
        let n = w.finish();
        buf[..n].to_vec()
    };
    let mut rng = StdRng::seed_from_u64(11);
    let outsider = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (phase, sender) in [&outsider, &forger].into_iter().enumerate() {
        for round in 0..50u64 {
            for &to in &servers[..2] {
                let hostile: Vec<Vec<u8>> = vec![
                    // A second leader of every plausible term, and one of the largest term.
                    peer(&[(
                        0,
                        PeerMessage::Append {
                            term: round % 4,
                            prev_log_index: 0,
                            prev_log_term: 0,
                            leader_commit: 1_000,
                            round: 1,
                            transfer_to: Some(3),
                            entries: Default::default(),
                        },
                    )]),
                    peer(&[(0, PeerMessage::TimeoutNow { term: u64::MAX })]),
                    peer(&[(
                        0,
                        PeerMessage::Vote {
                            term: u64::MAX,
                            last_log_index: u64::MAX,
                            last_log_term: u64::MAX,
                            transfer: false,
                        },
                    )]),
                    peer(&[(
                        0,
                        PeerMessage::AppendReply {
                            term: 1,
                            success: true,
                            match_index: u64::MAX / 4,
                            round: u64::MAX / 4,
                            life: round,
                            replica: round,
                        },
                    )]),
                    peer(&[(
                        0,
                        PeerMessage::InstallSnapshot {
                            term: 1 + round % 3,
                            last_index: 1 + round,
                            last_term: 1,
                            offset: 0,
                            total_len: 4,
                            round: 1,
                            data: b"junk",
                        },
                    )]),
                    peer(&[(
                        0,
                        PeerMessage::InstallSnapshotReply {
                            term: 1,
                            last_index: u64::MAX,
                            received: u64::MAX,
                            round: 9,
                            life: round,
                            replica: round,
                        },
                    )]),
                    peer(&[
                        (
                            0,
                            PeerMessage::TermQuery {
                                term: 0,
                                nonce: round,
                            },
                        ),
                        (
                            0,
                            PeerMessage::TermReply {
                                term: u64::MAX / 2,
                                last_index: u64::MAX,
                                nonce: round,
                            },
                        ),
                    ]),
                ];
                for d in hostile {
                    sender.send_to(&d, to).unwrap();
                }
                // An Append whose entries rewrite what is committed, for some term.
                let data = [1u8, 2, 3];
                let entries = [PeerEntry {
                    term: 1,
                    data: &data,
                }];
                let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
                let mut w = PeerWriter::new(
                    &mut buf,
                    PeerHeader {
                        cluster_id,
                        from: 3,
                    },
                );
                w.push_append(0, 1 + round % 3, 0, 0, 5, (1, 0), entries.iter().copied())
                    .unwrap();
                let n = w.finish();
                sender.send_to(&buf[..n], to).unwrap();
                // Random PEER-typed and random bytes.
                let len = rng.gen_range(0..1_400);
                let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if len >= 4 {
                    d[..4].copy_from_slice(&[0x55, 0x4C, 1, 0x40]);
                }
                sender.send_to(&d, to).unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let faulty =
            |node: &ClusterNode| -> u64 { node.shard_stats().iter().map(|s| s.faulty_drops).sum() };
        if phase == 0 {
            // From an unlisted address: all dropped, nothing changed; Raft never saw them.
            let status = client.status("held").unwrap();
            assert_eq!(status.holder.as_deref(), Some("me"));
            client.acquire("after", "me", 5_000, Some(1_000)).unwrap();
            for node in &nodes {
                assert!(
                    node.stats()
                        .dropped
                        .load(std::sync::atomic::Ordering::Relaxed)
                        >= 400
                );
                assert_eq!(faulty(node), 0);
            }
        } else {
            // From node 3's address, Raft saw the forgeries and counted what it dropped as
            // faulty (the published stats may lag: wait for them, with no speed assumed).
            for node in &nodes {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while faulty(node) == 0 && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(faulty(node) > 0, "no forgery was counted as faulty");
            }
        }
    }
    // Client-side garbage at both nodes: answers small and decodable, or none.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = std::collections::HashMap::new();
    for i in 0..1_000 {
        let len = rng.gen_range(0..1_400);
        let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if i % 2 == 0 && len >= 4 {
            d[..3].copy_from_slice(&[0x55, 0x4C, 1]);
            d[3] = rng.gen_range(0..8);
        }
        if d.len() >= 24 {
            sent.insert(d[8..24].to_vec(), d.len());
        }
        sock.send_to(&d, servers[i % 2]).unwrap();
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 65_536];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let caused_by = sent[&buf[8..24]];
        assert!(
            n <= caused_by,
            "{n}-byte reply to a {caused_by}-byte datagram"
        );
    }
    // Both nodes still run (what a hostile member did to the shard is its business).
    for node in &nodes {
        assert!(node.is_running(), "a node stopped");
    }
    drop(forger);
}
