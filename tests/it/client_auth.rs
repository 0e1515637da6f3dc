//! Client keys (issue 12 item 2, spec §7.1.10, §7.2.6) against a real node on loopback with
//! raw UDP sockets: with a key file, team A's key acts on none of team B's ids, and nothing
//! without B's key does (no key, an unknown key, a made-up MAC, A's key on B's ids or B's
//! tokens, future tokens, B's own datagrams replayed from A's address or, spoofed, from B's).
//! Of more than 100,000 such datagrams none takes effect: B's lock stays B's, under the same
//! token, its lease never extended, and the node's lock counters do not move; the node counts
//! every refusal by reason. Waits end on the node's counters, never on a sleep.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use udplock::client_keys::ClientKeyFile;
use udplock::core::node::client_auth::ClientAuthDrop;
use udplock::core::node::NodeStats;
use udplock::single::{SingleConfig, SingleNode};
use udplock_protocol::{
    reply_is_sealed, AddressToken, ClientKey, Hint, Reply, Request, RequestBody, Status, Tokens,
    DATAGRAM_LEN_MAX,
};

use super::raw::{v4, Spoofer};

const KEY_A: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
const KEY_B: &str = "5be1d2c3a4f506172839aa4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";
/// A key the node does not list.
const KEY_X: &str = "0000000000000000000000000000000000000000000000000000000000000001";

/// Longest wait for a reply or for the node to count what it was sent; only ends a broken run.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// A raw client resends its datagram (the same request id: the node answers a copy from what
/// it remembers, spec §7.1) when no answer came within this, as a real client retransmits:
/// under a flood a reply may be dropped (a full socket buffer), and waiting for it would
/// make the test depend on the machine's speed.
const RESEND_AFTER: Duration = Duration::from_millis(500);

/// Forged and replayed datagrams sent in all: more than the 100,000.
const ATTACK_DATAGRAMS: u64 = 120_000;

/// Datagrams sent before waiting for the node to have read them, so that no socket buffer
/// overflows (every datagram sent must be counted).
const BATCH: u64 = 200;

fn key(hex: &str) -> ClientKey {
    ClientKey::from_hex(hex).unwrap()
}

fn node(keys: &str) -> SingleNode {
    let mut config = SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.client_keys = Some(Arc::new(ClientKeyFile::parse(keys).unwrap()));
    assert!(config.address_validation, "on by default; keys need it");
    SingleNode::start(config).expect("node starts")
}

/// A client speaking raw datagrams: its socket, session, address token and key.
struct Raw {
    sock: UdpSocket,
    to: SocketAddr,
    session: u64,
    next_request: u64,
    token: Option<AddressToken>,
    key: Option<ClientKey>,
}

/// What a reply said (owned).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: Status,
    fencing_token: u64,
    lease_ms: u32,
    holder: Vec<u8>,
    sealed: Option<u32>,
}

impl Raw {
    fn new(to: SocketAddr, session: u64, key: Option<&str>) -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(RESEND_AFTER)).unwrap();
        Raw {
            sock,
            to,
            session,
            next_request: 1,
            token: None,
            key: key.map(self::key),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// The datagram of request `id` (attempt `attempt`), with this client's token and key.
    fn encode(&self, id: u64, attempt: u16, body: RequestBody<'_>) -> Vec<u8> {
        let request = Request {
            session_id: self.session,
            request_id: id,
            attempt,
            body,
        };
        let mut out = vec![0u8; DATAGRAM_LEN_MAX];
        let len = request
            .encode_sealed(&mut out, self.token.as_ref(), self.key.as_ref())
            .unwrap();
        out.truncate(len);
        out
    }

    /// Sends `body` as a new request and returns its final answer, following RETRY (spec
    /// §7.1.9). Every reply to a keyed request must be sealed with the key, but
    /// UNAUTHENTICATED.
    fn call(&mut self, body: RequestBody<'_>) -> Answer {
        let id = self.next_request;
        self.next_request += 1;
        for attempt in 0..3 {
            let datagram = self.encode(id, attempt, body);
            let deadline = Instant::now() + WAIT_MAX;
            let answer = loop {
                self.sock.send_to(&datagram, self.to).unwrap();
                if let Some(answer) = self.answer_to(id) {
                    break answer;
                }
                assert!(
                    Instant::now() < deadline,
                    "no reply to request {id} in {WAIT_MAX:?}"
                );
            };
            if answer.status != Status::Retry {
                return answer;
            }
        }
        panic!("RETRY three times");
    }

    /// Reads replies until the one to request `id` (skipping replies to older requests);
    /// `None` if none came within [`RESEND_AFTER`].
    fn answer_to(&mut self, id: u64) -> Option<Answer> {
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        loop {
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("recv: {e}"),
            };
            let reply = Reply::decode(&buf[..n]).expect("a reply decodes");
            if (reply.session_id, reply.request_id) != (self.session, id) {
                continue;
            }
            let sealed = reply_is_sealed(&buf[..n]);
            match (&self.key, sealed) {
                (Some(key), Some(kid)) => {
                    assert_eq!(kid, key.key_id());
                    assert!(key.verify_reply(&buf[..n]), "a sealed reply verifies");
                }
                (Some(_), None) => assert_eq!(reply.status, Status::Unauthenticated),
                (None, s) => assert_eq!(s, None, "sealed for a request without a key"),
            }
            if let Hint::AddressToken(t) = reply.hint {
                self.token = Some(t);
            }
            assert!(n <= DATAGRAM_LEN_MAX);
            return Some(Answer {
                status: reply.status,
                fencing_token: reply.fencing_token,
                lease_ms: reply.lease_ms,
                holder: reply.holder.to_vec(),
                sealed,
            });
        }
    }

    /// Gets this client its address token (an ACQUIRE answered RETRY is not executed).
    fn validate(&mut self) {
        let plain = self.key.take();
        let answer = self.call(acquire(b"nothing", b"nobody"));
        self.key = plain;
        assert!(self.token.is_some(), "{answer:?}");
    }
}

fn acquire<'a>(resource: &'a [u8], client: &'a [u8]) -> RequestBody<'a> {
    RequestBody::Acquire {
        resource,
        client,
        wait_ms: 0,
        ttl_ms: 3_600_000,
    }
}

fn refused(stats: &NodeStats) -> [u64; 4] {
    ClientAuthDrop::ALL.map(|why| stats.client_auth[why.index()].load(Ordering::Relaxed))
}

fn lock_counts(stats: &NodeStats) -> [u64; 7] {
    let l = &stats.locks;
    [
        &l.grants,
        &l.handoffs,
        &l.releases,
        &l.expirations,
        &l.acquisition_timeouts,
        &l.queued,
        &l.renewals,
    ]
    .map(|c| c.load(Ordering::Relaxed))
}

/// Waits until the node has read at least `count` datagrams in all.
fn wait_read(stats: &NodeStats, count: u64) {
    let started = Instant::now();
    while stats.datagrams.load(Ordering::Relaxed) < count {
        assert!(
            started.elapsed() < WAIT_MAX,
            "the node read {} of {count} datagrams",
            stats.datagrams.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn no_forged_or_replayed_datagram_acts_on_another_teams_lock() {
    let node = node(&format!("{KEY_A} team-a/\n{KEY_B} team-b/\n"));
    let stats = node.stats();
    let to = node.local_addr();
    // Bob (team B) takes the lock and renews it once; both datagrams are captured (we keep
    // their bytes) for replay.
    let mut bob = Raw::new(to, 0xB0B, Some(KEY_B));
    bob.validate();
    let granted = bob.call(acquire(b"printer", b"team-b/bob"));
    assert_eq!(
        (granted.status, granted.sealed),
        (Status::Ok, Some(key(KEY_B).key_id()))
    );
    let bobs_token = granted.fencing_token;
    let renew_bob = RequestBody::Renew {
        resource: b"printer",
        client: b"team-b/bob",
        ttl_ms: 3_600_000,
    };
    assert_eq!(bob.call(renew_bob).status, Status::Ok);
    let captured = [
        bob.encode(2, 0, acquire(b"printer", b"team-b/bob")),
        bob.encode(3, 0, renew_bob),
    ];
    // Alice (team A) has her own key, a token for her address, and a lock of her own.
    let mut alice = Raw::new(to, 0xA11CE, Some(KEY_A));
    alice.validate();
    assert_eq!(
        alice.call(acquire(b"scanner", b"team-a/alice")).status,
        Status::Ok
    );
    let mut anonymous = Raw::new(to, 0xA11CF, None);
    anonymous.validate();
    let mut stranger = Raw::new(to, 0xA11D0, Some(KEY_X));
    stranger.token = alice.token;
    let status_of_printer = |who: &mut Raw| {
        let a = who.call(RequestBody::Status {
            resource: b"printer",
        });
        assert_eq!(a.status, Status::Ok);
        a
    };
    let before = status_of_printer(&mut anonymous);
    assert_eq!(
        (before.holder.as_slice(), before.fencing_token),
        (&b"team-b/bob"[..], bobs_token)
    );
    let (refused_before, locks_before) = (refused(stats), lock_counts(stats));
    let retries_before = stats.address_retries.load(Ordering::Relaxed);
    let requests_before = stats.requests.load(Ordering::Relaxed);

    // The attack. Each kind is a datagram; `expect` says which counter it must move.
    let printer = &b"printer"[..];
    let bobs = &b"team-b/bob"[..];
    let forged: [RequestBody<'_>; 4] = [
        acquire(printer, bobs),
        RequestBody::Release {
            resource: printer,
            client: bobs,
        },
        renew_bob,
        RequestBody::CancelWait {
            resource: printer,
            client: bobs,
            target_session: 0xB0B,
            target_request: 2,
        },
    ];
    let mut spoofer = Spoofer::new();
    let mut token_buf = [0u8; 8 * 64];
    let mut expected = [0u64; 4];
    let mut retries_expected = 0;
    let mut replays_from_bob = 0;
    const KINDS: u64 = 12;
    let start_read = stats.datagrams.load(Ordering::Relaxed);
    for n in 0..ATTACK_DATAGRAMS {
        let id = 1_000 + n;
        let body = forged[(n / KINDS % 4) as usize];
        // Which socket sends it: Alice's, the anonymous client's (each with the address
        // token of its own address), or the spoofer with Bob's address.
        let (from, datagram) = match n % KINDS {
            // No key.
            0 | 1 => {
                expected[ClientAuthDrop::Unauthenticated.index()] += 1;
                (Some(&anonymous.sock), anonymous.encode(id, 0, body))
            }
            // A key the node does not know.
            2 => {
                expected[ClientAuthDrop::UnknownKey.index()] += 1;
                (Some(&alice.sock), stranger.encode(id, 0, body))
            }
            // Bob's key id with a MAC Alice made up (one bit of the real one flipped).
            3 => {
                expected[ClientAuthDrop::BadMac.index()] += 1;
                let mut d = bob.encode(id, 0, body);
                let at = d.len() - 1 - (n / KINDS % 16) as usize;
                d[at] ^= 1 << (n % 8);
                (Some(&alice.sock), d)
            }
            // Alice's valid key on Bob's id.
            4..=7 => {
                expected[ClientAuthDrop::Forbidden.index()] += 1;
                (Some(&alice.sock), alice.encode(id, 0, body))
            }
            // Alice's KEEPALIVE naming Bob's token, or a token not issued yet.
            8 | 9 => {
                expected[ClientAuthDrop::Forbidden.index()] += 1;
                let token = if n % KINDS == 8 {
                    bobs_token
                } else {
                    bobs_token + 2 + n
                };
                let body = RequestBody::Keepalive {
                    shard: 0,
                    shards: 1,
                    ttl_ms: 3_600_000,
                    tokens: Tokens::write(&[token], &mut token_buf).unwrap(),
                };
                (Some(&alice.sock), alice.encode(id, 0, body))
            }
            // Bob's captured datagrams from Alice's address: its token is Bob's address's,
            // so RETRY (sealed with Bob's key, which Alice cannot use).
            10 => {
                retries_expected += 1;
                (
                    Some(&alice.sock),
                    captured[(n / KINDS % 2) as usize].clone(),
                )
            }
            // ... and spoofed from Bob's own address: the remembered answers, nothing new.
            _ => {
                replays_from_bob += 1;
                (None, captured[(n / KINDS % 2) as usize].clone())
            }
        };
        match from {
            Some(sock) => {
                sock.send_to(&datagram, to).unwrap();
            }
            None => spoofer.send(v4(bob.addr()), v4(to), &datagram),
        }
        if (n + 1) % BATCH == 0 {
            wait_read(stats, start_read + n + 1);
        }
    }
    wait_read(stats, start_read + ATTACK_DATAGRAMS);
    assert!(replays_from_bob > 0 && retries_expected > 0);

    // Every refusal counted by its reason, every replay answered RETRY or as a duplicate.
    let refused_after = refused(stats);
    for why in ClientAuthDrop::ALL {
        let i = why.index();
        assert_eq!(
            refused_after[i] - refused_before[i],
            expected[i],
            "refusals: {}",
            why.name()
        );
    }
    assert_eq!(
        stats.address_retries.load(Ordering::Relaxed) - retries_before,
        retries_expected
    );
    assert_eq!(
        stats.requests.load(Ordering::Relaxed) - requests_before,
        ATTACK_DATAGRAMS,
        "every datagram decoded"
    );
    // None took effect: no grant, release, renewal, hand-off or queueing; Bob's lock is
    // his, under the same token, its lease not extended.
    assert_eq!(lock_counts(stats), locks_before, "a lock changed");
    let after = status_of_printer(&mut anonymous);
    assert_eq!(
        (after.holder.as_slice(), after.fencing_token),
        (&b"team-b/bob"[..], bobs_token)
    );
    assert!(
        after.lease_ms <= before.lease_ms,
        "lease extended: {} ms after, {} ms before",
        after.lease_ms,
        before.lease_ms
    );
    // Bob himself still renews and releases it; then Alice may take it for her team.
    bob.sock
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut drain = [0u8; DATAGRAM_LEN_MAX];
    while bob.sock.recv(&mut drain).is_ok() {}
    bob.sock.set_read_timeout(Some(RESEND_AFTER)).unwrap();
    assert_eq!(bob.call(renew_bob).status, Status::Ok);
    assert_eq!(
        bob.call(RequestBody::Release {
            resource: b"printer",
            client: b"team-b/bob",
        })
        .status,
        Status::Ok
    );
    let mine = alice.call(acquire(b"printer", b"team-a/alice"));
    assert_eq!(mine.status, Status::Ok);
    assert!(mine.fencing_token > bobs_token);
}

/// The control: the same kind of forged RELEASE works on a node without a key file (the
/// attack is real; this test would show nothing if it did not), and an authenticated request
/// there is answered UNAUTHENTICATED, unsealed.
#[test]
fn without_keys_anyone_releases_and_a_keyed_request_is_unauthenticated() {
    let node = SingleNode::start(SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))
        .expect("node starts");
    let to = node.local_addr();
    let mut bob = Raw::new(to, 0xB0B, None);
    bob.validate();
    assert_eq!(
        bob.call(acquire(b"printer", b"team-b/bob")).status,
        Status::Ok
    );
    let mut mallory = Raw::new(to, 0x3A11, None);
    mallory.validate();
    let release = RequestBody::Release {
        resource: b"printer",
        client: b"team-b/bob",
    };
    assert_eq!(
        mallory.call(release).status,
        Status::Ok,
        "released Bob's lock"
    );
    let mut keyed = Raw::new(to, 0x3A12, Some(KEY_B));
    let answer = keyed.call(acquire(b"printer", b"team-b/bob"));
    assert_eq!(
        (answer.status, answer.sealed),
        (Status::Unauthenticated, None)
    );
}

/// `udplock server --client-key-file`: refused with address validation off and for a key
/// file other users may read, each with a clear error; a good one serves sealed requests.
#[test]
fn the_server_takes_a_client_key_file_and_refuses_unsafe_ones() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_udplock");
    let dir = std::env::temp_dir().join(format!("udplock-it-client-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("client-keys");
    std::fs::write(&path, format!("# teams\n{KEY_B} team-b/\n")).unwrap();
    let path_s = path.to_str().unwrap();
    let refused = |args: &[&str]| {
        let o = Command::new(BIN)
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--no-state-file"])
            .args(args)
            .output()
            .expect("udplock runs");
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(&["--client-key-file", path_s]);
    assert!(err.contains("other users may access it"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = refused(&["--client-key-file", path_s, "--address-validation", "off"]);
    assert!(err.contains("needs address validation"), "{err}");
    // A good file: the server names the key ids, then serves Bob's sealed requests.
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--no-state-file"])
        .args(["--client-key-file", path_s])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("udplock server starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no start: {seen}");
        seen.push_str(&line);
        if let Some(addr) = line.split_whitespace().skip_while(|w| *w != "on").nth(1) {
            break addr.parse().expect("an address");
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let id = format!("{:08x}", key(KEY_B).key_id());
    assert!(seen.contains(&id), "the key id is named: {seen}");
    let mut bob = Raw::new(addr, 0xB0B, Some(KEY_B));
    bob.validate();
    let answer = bob.call(acquire(b"printer", b"team-b/bob"));
    assert_eq!(
        (answer.status, answer.sealed),
        (Status::Ok, Some(key(KEY_B).key_id()))
    );
    let mut alice = Raw::new(addr, 0xA11CE, Some(KEY_A));
    assert_eq!(
        alice.call(acquire(b"printer", b"team-a/alice")).status,
        Status::Unauthenticated,
        "a key the file does not list"
    );
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The client key file is re-read while the node runs (like the cluster key file): a key
/// added to it is accepted without a restart, a bad edit keeps the keys in force.
#[test]
fn a_changed_client_key_file_applies_without_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("udplock-it-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("client-keys");
    let write = |text: &str| {
        // Written aside and renamed in, as an editor or a deployment tool does.
        let tmp = dir.join("client-keys.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write(&format!("{KEY_A} team-a/\n"));
    let mut config = SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.client_key_file = Some(path.clone());
    let node = SingleNode::start(config).expect("node starts");
    let stats = node.stats();
    let wait_for = |counter: &std::sync::atomic::AtomicU64, at_least: u64| {
        let started = Instant::now();
        while counter.load(Ordering::Relaxed) < at_least {
            assert!(started.elapsed() < WAIT_MAX, "no reload seen");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut bob = Raw::new(node.local_addr(), 0xB0B, Some(KEY_B));
    assert_eq!(
        bob.call(acquire(b"printer", b"team-b/bob")).status,
        Status::Unauthenticated
    );
    // A bad edit: refused, the keys in force stay (Bob's key is still unknown).
    write(&format!("{KEY_A} team-a/\n{KEY_B} team-b/\\q\n"));
    wait_for(&stats.key_file_errors, 1);
    assert_eq!(
        bob.call(acquire(b"printer", b"team-b/bob")).status,
        Status::Unauthenticated
    );
    // Bob's key added: accepted from then on.
    write(&format!("{KEY_A} team-a/\n{KEY_B} team-b/\n"));
    wait_for(&stats.key_reloads, 1);
    bob.validate();
    let answer = bob.call(acquire(b"printer", b"team-b/bob"));
    assert_eq!(
        (answer.status, answer.sealed),
        (Status::Ok, Some(key(KEY_B).key_id()))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
