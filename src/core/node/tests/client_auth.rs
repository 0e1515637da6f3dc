//! Client authentication and authorization (spec §7.2.6): with a key file, a request acts
//! only for the client ids its key (or the `none` line) authorizes, a KEEPALIVE names only
//! such holds, and every reply to an authenticated request is sealed with its key.

use super::*;
use std::sync::atomic::Ordering;

use udplock_protocol::{AddressToken, ClientKey, RequestBody, Tokens};

use crate::client_keys::ClientKeyFile;
use crate::core::lock_table;
use crate::core::node::client_auth::ClientAuthDrop;

const KEY_A: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
const KEY_B: &str = "5be1d2c3a4f506172839aa4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";
/// A key no file lists.
const KEY_X: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const ALICE: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    4001,
);
const BOB: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    4002,
);

fn key(hex: &str) -> ClientKey {
    ClientKey::from_hex(hex).unwrap()
}

/// A one-voter node with this key file (address validation on, as keys require), leading.
fn keyed(file: &str) -> Node {
    let config = Config {
        shards: 1,
        client_keys: Some(Arc::new(ClientKeyFile::parse(file).unwrap())),
        ..Config::new(1, vec![(1, SOLO)])
    };
    let mut node = solo_with(config, KeySet::unauthenticated());
    node.handle_timeout(Instant::ZERO);
    let _ = drain_solo(&mut node);
    assert_eq!(node.leading(), 1);
    node
}

fn teams() -> Node {
    keyed(&format!("{KEY_A} team-a/\n{KEY_B} team-b/\n"))
}

/// A client: its address, session, token and key.
struct Who {
    from: SocketAddr,
    session: u64,
    token: Option<AddressToken>,
    key: Option<ClientKey>,
}

impl Who {
    fn new(from: SocketAddr, session: u64, key: Option<&str>) -> Who {
        Who {
            from,
            session,
            token: None,
            key: key.map(self::key),
        }
    }

    fn encode(&self, request_id: u64, attempt: u16, body: RequestBody<'_>) -> Vec<u8> {
        let request = Request {
            session_id: self.session,
            request_id,
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
}

/// Sends `datagram` from `from`; every datagram the node sent back.
fn send(node: &mut Node, at_us: u64, from: SocketAddr, datagram: &[u8]) -> Vec<Vec<u8>> {
    let at = Instant::from_micros(at_us).max(node.now);
    node.handle_datagram(at, from, datagram);
    let (_, sent) = drain_solo(node);
    for (t, bytes) in &sent {
        assert_eq!(t.to, from);
        assert!(bytes.len() <= datagram.len(), "amplification");
    }
    sent.into_iter().map(|(_, b)| b).collect()
}

/// The one reply to `datagram`, decoded (status, sealed with which key id).
fn ask(node: &mut Node, at_us: u64, who: &Who, datagram: &[u8]) -> (Status, Option<u32>) {
    let replies = send(node, at_us, who.from, datagram);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let reply = Reply::decode(&replies[0]).unwrap();
    let sealed = udplock_protocol::reply_is_sealed(&replies[0]);
    if let Some(id) = sealed {
        let key = who.key.as_ref().expect("sealed only for a keyed request");
        assert_eq!(id, key.key_id());
        assert!(key.verify_reply(&replies[0]), "a sealed reply verifies");
    }
    (reply.status, sealed)
}

/// Gets `who` its address token (a RETRY to an unauthenticated ACQUIRE).
fn validate(node: &mut Node, who: &mut Who) {
    let plain = Who {
        key: None,
        token: None,
        ..Who::new(who.from, who.session, None)
    };
    let d = plain.encode(u64::MAX, 0, acquire_body(b"x", b"x"));
    let replies = send(node, 1, who.from, &d);
    let reply = Reply::decode(&replies[0]).unwrap();
    match reply.hint {
        Hint::AddressToken(t) => who.token = Some(t),
        other => panic!("no RETRY: {other:?}"),
    }
}

fn acquire_body<'a>(resource: &'a [u8], client: &'a [u8]) -> RequestBody<'a> {
    RequestBody::Acquire {
        resource,
        client,
        wait_ms: 0,
        ttl_ms: 10_000,
    }
}

fn table(node: &Node) -> &lock_table::LockTable {
    node.replica(0).unwrap().table().expect("a table")
}

fn refused(node: &Node, why: ClientAuthDrop) -> u64 {
    node.stats().client_auth[why.index()].load(Ordering::Relaxed)
}

/// Bob (team B) holds `printer`; (its token, its lease as STATUS reads it).
fn bob_holds(node: &mut Node, bob: &Who) -> u64 {
    let d = bob.encode(1, 0, acquire_body(b"printer", b"team-b/bob"));
    assert_eq!(ask(node, 100, bob, &d).0, Status::Ok);
    let token = table(node).token_last();
    assert_eq!(table(node).holder_of_token(token), Some(&b"team-b/bob"[..]));
    token
}

/// Issue 12 item 2: a valid key of team A acts on none of team B's ids; no key, an unknown
/// key or a bad MAC act on nothing. Each refusal changes nothing and is counted by reason.
#[test]
fn no_key_but_the_ids_own_acts_on_an_id() {
    let mut node = teams();
    let mut bob = Who::new(BOB, 0xB0B, Some(KEY_B));
    validate(&mut node, &mut bob);
    let token = bob_holds(&mut node, &bob);
    let before = (table(&node).stats(), table(&node).token_last());
    // Alice's key is valid (team A) but names Bob's id: FORBIDDEN, sealed with her key.
    let mut alice = Who::new(ALICE, 0xA11CE, Some(KEY_A));
    validate(&mut node, &mut alice);
    let printer = &b"printer"[..];
    let bobs = &b"team-b/bob"[..];
    let forged = [
        acquire_body(printer, bobs),
        RequestBody::Release {
            resource: printer,
            client: bobs,
        },
        RequestBody::Renew {
            resource: printer,
            client: bobs,
            ttl_ms: 3_600_000,
        },
        RequestBody::CancelWait {
            resource: printer,
            client: bobs,
            target_session: 0xB0B,
            target_request: 1,
        },
    ];
    for (i, body) in forged.iter().enumerate() {
        let d = alice.encode(10 + i as u64, 0, *body);
        assert_eq!(
            ask(&mut node, 200, &alice, &d),
            (Status::Forbidden, Some(key(KEY_A).key_id())),
            "{body:?}"
        );
    }
    assert_eq!(refused(&node, ClientAuthDrop::Forbidden), 4);
    // No key: UNAUTHENTICATED, unsealed.
    let mut plain = Who::new(ALICE, 0xA11CF, None);
    validate(&mut node, &mut plain);
    for (i, body) in forged.iter().enumerate() {
        let d = plain.encode(10 + i as u64, 0, *body);
        assert_eq!(
            ask(&mut node, 300, &plain, &d),
            (Status::Unauthenticated, None)
        );
    }
    assert_eq!(refused(&node, ClientAuthDrop::Unauthenticated), 4);
    // A key the file does not list: UNAUTHENTICATED, unsealed (the node cannot seal), even
    // before address validation (no token here).
    let stranger = Who::new(ALICE, 0x5757, Some(KEY_X));
    let d = stranger.encode(1, 0, forged[1]);
    let replies = send(&mut node, 400, ALICE, &d);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (
            Reply::decode(&replies[0]).unwrap().status,
            udplock_protocol::reply_is_sealed(&replies[0])
        ),
        (Status::Unauthenticated, None)
    );
    assert_eq!(refused(&node, ClientAuthDrop::UnknownKey), 1);
    // Bob's own key id with a MAC Alice made up: dropped, unanswered.
    let mut d = bob.encode(7, 0, forged[1]);
    let n = d.len();
    d[n - 1] ^= 1;
    assert!(send(&mut node, 500, BOB, &d).is_empty());
    // A non-zero reserved field fails the MAC check the same way.
    let mut d = bob.encode(7, 0, forged[1]);
    d[n - 20] = 1;
    assert!(send(&mut node, 510, BOB, &d).is_empty());
    assert_eq!(refused(&node, ClientAuthDrop::BadMac), 2);
    // Nothing changed: Bob holds the lock under the same token, the same lease, no new
    // session, nothing remembered.
    let after = (table(&node).stats(), table(&node).token_last());
    assert_eq!(after, before);
    assert_eq!(
        table(&node).holder_of_token(token),
        Some(&b"team-b/bob"[..])
    );
    // And Bob still acts on his own lock, sealed with his key.
    let d = bob.encode(20, 0, forged[1]);
    assert_eq!(
        ask(&mut node, 600, &bob, &d),
        (Status::Ok, Some(key(KEY_B).key_id()))
    );
}

/// Spec §7.2.6: a KEEPALIVE names only holds of ids its key authorizes, and no token the
/// shard has not issued yet (so no future hold of another team can be named in advance).
#[test]
fn a_keepalive_names_only_its_own_teams_holds_and_no_future_token() {
    let mut node = teams();
    let mut bob = Who::new(BOB, 0xB0B, Some(KEY_B));
    validate(&mut node, &mut bob);
    let bobs_token = bob_holds(&mut node, &bob);
    let mut alice = Who::new(ALICE, 0xA11CE, Some(KEY_A));
    validate(&mut node, &mut alice);
    let d = alice.encode(1, 0, acquire_body(b"scanner", b"team-a/alice"));
    assert_eq!(ask(&mut node, 100, &alice, &d).0, Status::Ok);
    let alices_token = table(&node).token_last();
    let keepalive = |who: &Who, id: u64, tokens: &[u64]| {
        let mut buf = [0u8; 8 * 64];
        let body = RequestBody::Keepalive {
            shard: 0,
            shards: 1,
            ttl_ms: 3_600_000,
            tokens: Tokens::write(tokens, &mut buf).unwrap(),
        };
        who.encode(id, 0, body)
    };
    let before = table(&node).stats();
    let a = Some(key(KEY_A).key_id());
    for (id, tokens) in [
        (2, vec![bobs_token]),
        (3, vec![alices_token, bobs_token]),
        (4, vec![alices_token + 1]),
        (5, vec![alices_token, u64::MAX]),
    ] {
        let d = keepalive(&alice, id, &tokens);
        assert_eq!(
            ask(&mut node, 200, &alice, &d),
            (Status::Forbidden, a),
            "{tokens:?}"
        );
    }
    assert_eq!(table(&node).stats(), before, "nothing renewed");
    // Her own hold, and a token that names no live hold any more: renewed, sealed.
    let d = keepalive(&alice, 6, &[alices_token]);
    assert_eq!(ask(&mut node, 300, &alice, &d), (Status::Ok, a));
    // Without a key (no `none` line): UNAUTHENTICATED.
    let mut plain = Who::new(BOB, 0xB0C, None);
    validate(&mut node, &mut plain);
    let d = keepalive(&plain, 1, &[bobs_token]);
    assert_eq!(
        ask(&mut node, 400, &plain, &d),
        (Status::Unauthenticated, None)
    );
    assert_eq!(refused(&node, ClientAuthDrop::Forbidden), 4);
}

/// Spec §7.2.6: every reply to an authenticated request is sealed with its key, a
/// remembered answer resent to a retransmission included, and a queued ACQUIRE's final
/// answer with the key of its latest copy. STATUS needs no key; sent with one, its answer
/// is sealed; a sealed STATUS_REPLY names the holder only if it fits with the trailer.
#[test]
fn replies_are_sealed_with_the_key_of_the_copy() {
    let mut node = teams();
    let mut bob = Who::new(BOB, 0xB0B, Some(KEY_B));
    validate(&mut node, &mut bob);
    let b = Some(key(KEY_B).key_id());
    let d = bob.encode(1, 0, acquire_body(b"printer", b"team-b/bob"));
    assert_eq!(ask(&mut node, 100, &bob, &d), (Status::Ok, b));
    // A retransmission: the remembered answer, sealed again.
    let d = bob.encode(1, 1, acquire_body(b"printer", b"team-b/bob"));
    assert_eq!(ask(&mut node, 110, &bob, &d), (Status::Ok, b));
    // STATUS without a key: answered, unsealed, holder named.
    let status = RequestBody::Status {
        resource: b"printer",
    };
    let anyone = Who::new(ALICE, 0x5, None);
    let replies = send(&mut node, 120, ALICE, &anyone.encode(1, 0, status));
    let reply = Reply::decode(&replies[0]).unwrap();
    assert_eq!(
        (reply.status, reply.holder),
        (Status::Ok, &b"team-b/bob"[..])
    );
    assert_eq!(udplock_protocol::reply_is_sealed(&replies[0]), None);
    // With a key: sealed, the holder named (355 bytes pay for it).
    let alice = Who::new(ALICE, 0x6, Some(KEY_A));
    let d = alice.encode(1, 0, status);
    assert_eq!(d.len(), udplock_protocol::AUTH_STATUS_REQUEST_LEN);
    let replies = send(&mut node, 130, ALICE, &d);
    let reply = Reply::decode(&replies[0]).unwrap();
    assert_eq!(reply.holder, &b"team-b/bob"[..]);
    assert!(key(KEY_A).verify_reply(&replies[0]));
    // A 109-byte sealed STATUS: 100 + 10 bytes of holder would pass it: truncated (110
    // bytes would pay for it).
    let request = Request {
        session_id: 0x6,
        request_id: 2,
        attempt: 0,
        body: status,
    };
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = request
        .encode_padded_sealed(&mut out, 109, None, &key(KEY_A))
        .unwrap();
    let replies = send(&mut node, 140, ALICE, &out[..n]);
    let reply = Reply::decode(&replies[0]).unwrap();
    assert!(reply
        .flags
        .contains(udplock_protocol::Flags::HOLDER_TRUNCATED));
    assert!(replies[0].len() <= 109);
    // A queued ACQUIRE of team B's second client: WAITING at once (200 bytes pay for two
    // sealed replies), then the final answer when Bob releases, sealed with its key.
    let mut carol = Who::new(ALICE, 0xCA, Some(KEY_B));
    validate(&mut node, &mut carol);
    let wait = RequestBody::Acquire {
        resource: b"printer",
        client: b"team-b/carol",
        wait_ms: 5_000,
        ttl_ms: 10_000,
    };
    let d = carol.encode(1, 0, wait);
    assert_eq!(d.len(), udplock_protocol::AUTH_ACQUIRE_WAIT_REQUEST_LEN);
    assert_eq!(ask(&mut node, 200, &carol, &d), (Status::Waiting, b));
    let release = RequestBody::Release {
        resource: b"printer",
        client: b"team-b/bob",
    };
    let d = bob.encode(2, 0, release);
    let at = Instant::from_micros(300).max(node.now);
    node.handle_datagram(at, BOB, &d);
    let (_, sent) = drain_solo(&mut node);
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (t, bytes) in &sent {
        let reply = Reply::decode(bytes).unwrap();
        assert_eq!(reply.status, Status::Ok);
        assert!(key(KEY_B).verify_reply(bytes), "to {}", t.to);
    }
    assert_eq!(
        node.client_auth.pending(),
        0,
        "final answers forget their key"
    );
}

/// Without a key file, authenticated requests are answered UNAUTHENTICATED (no key is
/// known) and change nothing; everything else is served as without client keys.
#[test]
fn without_a_key_file_an_authenticated_request_is_unauthenticated() {
    let config = Config {
        shards: 1,
        ..Config::new(1, vec![(1, SOLO)])
    };
    let mut node = solo_with(config, KeySet::unauthenticated());
    node.handle_timeout(Instant::ZERO);
    let _ = drain_solo(&mut node);
    let mut bob = Who::new(BOB, 0xB0B, Some(KEY_B));
    let d = bob.encode(1, 0, acquire_body(b"printer", b"team-b/bob"));
    assert_eq!(
        ask(&mut node, 100, &bob, &d),
        (Status::Unauthenticated, None)
    );
    assert_eq!(refused(&node, ClientAuthDrop::UnknownKey), 1);
    assert_eq!(table(&node).stats().sessions, 0);
    bob.key = None;
    validate(&mut node, &mut bob);
    let d = bob.encode(1, 0, acquire_body(b"printer", b"team-b/bob"));
    assert_eq!(ask(&mut node, 200, &bob, &d), (Status::Ok, None));
}

/// The `none` line: what requests without a key may do, no more; `none *` accepts all as
/// without keys, the turning-on step.
#[test]
fn the_none_line_lets_unauthenticated_requests_act_for_its_prefixes() {
    let mut node = keyed(&format!("{KEY_A} team-a/\nnone legacy/\n"));
    let mut old = Who::new(BOB, 0x01D, None);
    validate(&mut node, &mut old);
    let d = old.encode(1, 0, acquire_body(b"printer", b"legacy/old"));
    assert_eq!(ask(&mut node, 100, &old, &d), (Status::Ok, None));
    let d = old.encode(2, 0, acquire_body(b"scanner", b"team-a/x"));
    assert_eq!(
        ask(&mut node, 110, &old, &d),
        (Status::Unauthenticated, None)
    );
    // CONFIGURE without a key needs `none *`.
    let configure = RequestBody::Configure {
        resource: b"printer",
        default_ttl_ms: 1_000,
    };
    let d = old.encode(3, 0, configure);
    assert_eq!(ask(&mut node, 120, &old, &d).0, Status::Unauthenticated);
    let mut open = keyed(&format!("{KEY_A} team-a/\nnone *\n"));
    validate(&mut open, &mut old);
    let d = old.encode(3, 0, configure);
    assert_eq!(ask(&mut open, 130, &old, &d), (Status::Ok, None));
    let d = old.encode(4, 0, acquire_body(b"printer", b"team-a/x"));
    assert_eq!(ask(&mut open, 140, &old, &d), (Status::Ok, None));
}

/// Spec §7.2.6: a key file requires address validation; the node refuses to start without.
#[test]
fn keys_without_address_validation_are_refused() {
    let config = Config {
        shards: 1,
        address_validation: false,
        client_keys: Some(Arc::new(ClientKeyFile::parse(KEY_A).unwrap())),
        ..Config::new(1, vec![(1, SOLO)])
    };
    let err = config.validate().unwrap_err();
    assert!(err.contains("address validation"), "{err}");
}

/// Spec §7.2.6: an answer a shard produces later is sealed with the key of the latest copy
/// this node received; a new leader that received no copy (the request reached the old one)
/// does not send it, and the client's next copy gets the remembered answer, sealed.
#[test]
fn a_new_leader_sends_no_answer_it_cannot_seal_and_the_next_copy_gets_it_sealed() {
    let file = Arc::new(ClientKeyFile::parse(&format!("{KEY_B} team-b/")).unwrap());
    let mut trio = Trio::with(1, test_keys(), |config| {
        config.address_validation = true;
        config.client_keys = Some(file.clone());
    });
    trio.run_for(3_000);
    let old = trio.leader_of(0).expect("a leader after 3 s");
    // The cluster key's tokens are good at every node: one RETRY per session.
    let token = |trio: &mut Trio, session: u64| {
        let plain = Who::new(CLIENT, session, None);
        let replies = trio.ask(old, &plain.encode(u64::MAX, 0, acquire_body(b"x", b"x")));
        match Reply::decode(&replies[0].1).unwrap().hint {
            Hint::AddressToken(t) => Some(t),
            other => panic!("no RETRY: {other:?}"),
        }
    };
    let mut bob = Who::new(CLIENT, 0xB0B, Some(KEY_B));
    bob.token = token(&mut trio, 0xB0B);
    let mut carol = Who::new(CLIENT, 0xCA, Some(KEY_B));
    carol.token = token(&mut trio, 0xCA);
    let statuses = |replies: &[(SocketAddr, Vec<u8>)]| -> Vec<(u64, Status)> {
        replies
            .iter()
            .map(|(_, bytes)| {
                assert!(key(KEY_B).verify_reply(bytes), "sealed with the key");
                let r = Reply::decode(bytes).unwrap();
                (r.session_id, r.status)
            })
            .collect()
    };
    let d = bob.encode(1, 0, acquire_body(b"printer", b"team-b/bob"));
    assert_eq!(statuses(&trio.ask(old, &d)), [(0xB0B, Status::Ok)]);
    let wait = RequestBody::Acquire {
        resource: b"printer",
        client: b"team-b/carol",
        wait_ms: 60_000,
        ttl_ms: 10_000,
    };
    let d = carol.encode(1, 0, wait);
    assert_eq!(statuses(&trio.ask(old, &d)), [(0xCA, Status::Waiting)]);
    // The old leader is cut off; another takes over the shard, Carol still queued.
    trio.cut = Some(old);
    trio.run_for(3_000);
    let new = trio
        .leader_of(0)
        .filter(|&l| l != old)
        .expect("a new leader");
    // Bob releases at the new leader: Carol's ACQUIRE is granted there, but no copy of it
    // reached this node, so only Bob's answer leaves.
    let release = RequestBody::Release {
        resource: b"printer",
        client: b"team-b/bob",
    };
    let d = bob.encode(2, 0, release);
    assert_eq!(statuses(&trio.ask(new, &d)), [(0xB0B, Status::Ok)]);
    let table = trio.nodes[new].replica(0).unwrap().table().unwrap();
    let carols = table.token_last();
    assert_eq!(table.holder_of_token(carols), Some(&b"team-b/carol"[..]));
    // Carol's next copy gets the remembered grant, sealed with her key.
    let d = carol.encode(1, 1, wait);
    assert_eq!(statuses(&trio.ask(new, &d)), [(0xCA, Status::Ok)]);
}

/// Spec §7.2.6: while a request waits for its answer here, a copy of it sealed with another
/// key (someone else's, using its ids) is refused: it would move the final answer to its own
/// address and have it sealed with its own key.
#[test]
fn a_copy_with_another_key_cannot_take_a_queued_requests_answer() {
    let mut node = keyed(&format!("{KEY_A} team-a/\n{KEY_B} team-b/\nnone legacy/\n"));
    let mut bob = Who::new(BOB, 0xB0B, Some(KEY_B));
    validate(&mut node, &mut bob);
    let d = bob.encode(1, 0, acquire_body(b"printer", b"team-b/bob"));
    assert_eq!(ask(&mut node, 100, &bob, &d).0, Status::Ok);
    let mut carol = Who::new(BOB, 0xCA, Some(KEY_B));
    validate(&mut node, &mut carol);
    let wait = |client: &'static [u8]| RequestBody::Acquire {
        resource: b"printer",
        client,
        wait_ms: 60_000,
        ttl_ms: 10_000,
    };
    let d = carol.encode(1, 0, wait(b"team-b/carol"));
    assert_eq!(ask(&mut node, 200, &carol, &d).0, Status::Waiting);
    // Alice uses Carol's session and request ids, her own key and her own id, from her own
    // address (with a token for it): refused, sealed with her key.
    let mut alice = Who::new(ALICE, 0xCA, Some(KEY_A));
    validate(&mut node, &mut alice);
    let d = alice.encode(1, 1, wait(b"team-a/alice"));
    let a = Some(key(KEY_A).key_id());
    assert_eq!(ask(&mut node, 300, &alice, &d), (Status::Forbidden, a));
    // Without a key, for an id the `none` line allows: refused too.
    let mut old = Who::new(ALICE, 0xCA, None);
    old.token = alice.token;
    let d = old.encode(1, 2, wait(b"legacy/old"));
    assert_eq!(
        ask(&mut node, 310, &old, &d),
        (Status::Unauthenticated, None)
    );
    // Bob releases: Carol's grant goes to Carol, sealed with her key.
    let release = RequestBody::Release {
        resource: b"printer",
        client: b"team-b/bob",
    };
    let d = bob.encode(2, 0, release);
    let at = Instant::from_micros(400).max(node.now);
    node.handle_datagram(at, BOB, &d);
    let (_, sent) = drain_solo(&mut node);
    let to_carol: Vec<_> = sent
        .iter()
        .filter(|(_, b)| Reply::decode(b).unwrap().session_id == 0xCA)
        .collect();
    assert_eq!(to_carol.len(), 1);
    assert_eq!(to_carol[0].0.to, BOB, "Carol's address, not Alice's");
    assert!(key(KEY_B).verify_reply(&to_carol[0].1));
}
