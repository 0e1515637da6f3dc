//! Address validation (issue 12 item 3, spec §7.2.5, after QUIC's Retry, RFC 9000 §8.1),
//! against a real node on loopback: datagrams spoofed with a raw socket (`raw::Spoofer`,
//! root) from addresses nobody listens on create no hold and no session, and a real client
//! pays one extra round trip per session for it.
//!
//! Each attack runs twice: against a node with validation off, where it must work (the
//! failing-first evidence, kept as a control so the test can fail), and with it on (the
//! default), where it must change nothing. Waits end on the node's own counters, never on a
//! sleep.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use udplock::single::{SingleConfig, SingleNode};
use udplock::{Client, ClientConfig, LockError};
use udplock_protocol::{Request, RequestBody};

use super::raw::{v4, Spoofer};

/// Longest wait for the node to count what it was sent; only ends a broken run.
const HANDLED_WAIT_MAX: Duration = Duration::from_secs(20);

/// The default session limit of a shard (a single node has one shard).
const DEFAULT_SESSIONS_MAX: u32 = udplock::core::lock_table::Config::DEFAULT.sessions_max;

fn node(validation: bool, sessions_max: u32) -> SingleNode {
    let mut config = SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.address_validation = validation;
    config.table.sessions_max = sessions_max;
    SingleNode::start(config).expect("node starts")
}

fn client(node: &SingleNode) -> Client {
    let mut config = ClientConfig::new(vec![node.local_addr()]);
    config.shards = 1;
    Client::new(config).expect("client")
}

/// An ACQUIRE of `resource` for an hour, as datagram bytes.
fn acquire(session_id: u64, resource: &[u8], client: &[u8]) -> Vec<u8> {
    let request = Request {
        session_id,
        request_id: 1,
        attempt: 0,
        body: RequestBody::Acquire {
            resource,
            client,
            wait_ms: 0,
            ttl_ms: 3_600_000,
        },
    };
    let mut out = vec![0u8; 1_200];
    let len = request.encode(&mut out).unwrap();
    out.truncate(len);
    out
}

/// Waits until the node has read at least `count` datagrams in all.
fn wait_handled(node: &SingleNode, count: u64) {
    let started = Instant::now();
    while node.stats().datagrams.load(Ordering::Relaxed) < count {
        assert!(
            started.elapsed() < HANDLED_WAIT_MAX,
            "the node read {} of {count} datagrams",
            node.stats().datagrams.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A source nobody listens on: loopback addresses other than 127.0.0.1, high ports.
fn ghost(i: u32) -> SocketAddrV4 {
    let [_, b, c, _] = (i + 2).to_be_bytes();
    SocketAddrV4::new(
        std::net::Ipv4Addr::new(127, 77, b, c.max(2)),
        40_000 + (i % 20_000) as u16,
    )
}

/// One spoofed "ghost" ACQUIRE for an hour, then a real client that waits 1 s for the lock.
fn ghost_then_real_client(validation: bool) -> Result<(), LockError> {
    let node = node(validation, DEFAULT_SESSIONS_MAX);
    let mut spoofer = Spoofer::new();
    let before = node.stats().datagrams.load(Ordering::Relaxed);
    spoofer.send(
        ghost(0),
        v4(node.local_addr()),
        &acquire(0x6057, b"printer", b"ghost"),
    );
    wait_handled(&node, before + 1);
    client(&node)
        .acquire("printer", "real", 1_000, None)
        .map(|_| ())
}

#[test]
fn a_ghost_acquire_holds_the_lock_without_validation() {
    assert!(
        matches!(
            ghost_then_real_client(false),
            Err(LockError::LockAcquisitionTimeout)
        ),
        "the attack did not work without validation: this test shows nothing"
    );
}

#[test]
fn a_ghost_acquire_is_not_granted_and_a_real_client_gets_the_lock() {
    ghost_then_real_client(true).expect("granted: the ghost holds nothing");
}

/// `sessions_max` + 64 spoofed one-datagram sessions, then a fresh client.
fn session_flood_then_fresh_client(validation: bool) -> (SingleNode, Result<(), LockError>) {
    const SESSIONS_MAX: u32 = 256;
    let node = node(validation, SESSIONS_MAX);
    let mut spoofer = Spoofer::new();
    let to = v4(node.local_addr());
    let before = node.stats().datagrams.load(Ordering::Relaxed);
    let flood = SESSIONS_MAX + 64;
    for i in 0..flood {
        let resource = format!("r{i}");
        let datagram = acquire(0x5E55_0000 + u64::from(i), resource.as_bytes(), b"ghost");
        spoofer.send(ghost(i), to, &datagram);
        if i % 64 == 63 {
            // Paced so the node's socket buffer never overflows: every datagram counts.
            wait_handled(&node, before + u64::from(i) + 1);
        }
    }
    wait_handled(&node, before + u64::from(flood));
    let fresh = client(&node).try_acquire("fresh", "real", None).map(|_| ());
    (node, fresh)
}

#[test]
fn a_spoofed_session_flood_locks_new_clients_out_without_validation() {
    let (_node, fresh) = session_flood_then_fresh_client(false);
    assert!(
        matches!(fresh, Err(LockError::Overloaded { .. })),
        "the flood did not fill the session table: this test shows nothing ({fresh:?})"
    );
}

#[test]
fn a_spoofed_session_flood_leaves_room_for_a_fresh_client() {
    let (node, fresh) = session_flood_then_fresh_client(true);
    fresh.expect("a fresh client acquires");
    let retries = node.stats().address_retries.load(Ordering::Relaxed);
    assert!(
        retries >= 256 + 64,
        "every spoofed ACQUIRE got a RETRY: {retries}"
    );
}

/// Spec §7.1.9: the blocking client pays one RETRY on its session's first mutating request
/// to a node, and none afterwards (the token rides along).
#[test]
fn the_client_pays_one_round_trip_once_per_session() {
    let node = node(true, DEFAULT_SESSIONS_MAX);
    let client = client(&node);
    let retries = || node.stats().address_retries.load(Ordering::Relaxed);
    assert_eq!(retries(), 0);
    client.status("printer").expect("a read needs no token");
    assert_eq!(retries(), 0, "STATUS needs no token");
    client
        .acquire("printer", "a", 0, Some(10_000))
        .expect("granted");
    let first = retries();
    // One, or more if a copy without the token was retransmitted before the RETRY came
    // back (a busy machine): every one of those is answered RETRY too.
    assert!(first >= 1, "the first mutating request drew no RETRY");
    for _ in 0..10 {
        client.renew("printer", "a", Some(10_000)).expect("renewed");
        client.release("printer", "a").expect("released");
        client
            .acquire("printer", "a", 0, Some(10_000))
            .expect("granted");
    }
    client.release("printer", "a").expect("released");
    assert_eq!(retries(), first, "later requests carry the token");
}

/// Spec §7.2.5, "Expiry", end to end: the server's shell gives the node core the real wall
/// clock. With the cluster key the test makes genuine tokens for its own socket at chosen
/// times: one made 5 minutes ago (older than the 240 s lifetime) and one made 2 minutes ahead
/// (beyond the 60 s skew) get RETRY, whose fresh token names the wall clock now, and create
/// nothing; one made 10 s ago is served.
#[test]
fn a_real_node_refuses_tokens_outside_their_time_window() {
    use udplock_protocol::{AddressToken, Hint, Reply, Status};
    let secret = [0x5A; 32];
    let key = udplock_protocol::ClusterKey::new(&secret);
    let mut config =
        udplock::single::SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))).cluster_config();
    config.keys = Some(udplock::core::peer_auth::KeySet::single(key.clone()));
    let node = udplock::single::start_single(config).expect("node starts");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Only ends a broken run: loopback delivers at once.
    socket.set_read_timeout(Some(HANDLED_WAIT_MAX)).unwrap();
    let me = socket.local_addr().unwrap();
    let wall_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32
    };
    let session: u64 = 0x70C3_E5E5;
    let ask = |request_id: u64, token: &AddressToken| {
        let request = Request {
            session_id: session,
            request_id,
            attempt: 0,
            body: RequestBody::Acquire {
                resource: b"tokens/expiry",
                client: b"worker",
                wait_ms: 0,
                ttl_ms: 60_000,
            },
        };
        let mut out = vec![0u8; 1_200];
        let len = request.encode_with_token(&mut out, Some(token)).unwrap();
        socket.send_to(&out[..len], node.local_addr()).unwrap();
        let mut buf = [0u8; 1_500];
        let (n, _) = socket.recv_from(&mut buf).expect("an answer");
        let reply = Reply::decode(&buf[..n]).expect("a reply");
        assert_eq!(reply.request_id, request_id);
        let fresh = match reply.hint {
            Hint::AddressToken(t) => Some(t),
            _ => None,
        };
        (reply.status, fresh)
    };
    let tokens = key.address_token_key();
    for (request_id, age_s) in [(1, 300i64), (2, -120)] {
        let issued = (i64::from(wall_s()) - age_s) as u32;
        let before = wall_s();
        let (status, fresh) = ask(request_id, &tokens.token(me, session, issued));
        let after = wall_s();
        assert_eq!(status, Status::Retry, "a token made {age_s} s ago");
        let fresh = fresh.expect("a RETRY carries a token").issued_s();
        assert!(
            (before.saturating_sub(2)..=after + 2).contains(&fresh),
            "the node's wall clock read {fresh}, this machine's {before}..={after}"
        );
    }
    assert_eq!(
        node.stats().address_tokens_expired.load(Ordering::Relaxed),
        2
    );
    let issued = wall_s() - 10;
    let token = tokens.token(me, session, issued);
    // A node that has not yet started its shard answers OVERLOADED (nothing remembered):
    // the same request again until it is served.
    let started = Instant::now();
    let status = loop {
        match ask(3, &token) {
            (Status::Overloaded, _) if started.elapsed() < HANDLED_WAIT_MAX => {
                std::thread::sleep(Duration::from_millis(10))
            }
            (status, _) => break status,
        }
    };
    assert_eq!(status, Status::Ok, "a token made 10 s ago is served");
}
