//! Address validation (spec §7.2.5, after QUIC's Retry, RFC 9000 §8.1): a lock request that
//! can create or change state, without the token of its source and session, is answered
//! RETRY and creates no session, no waiter and no hold.

use super::*;
use std::sync::atomic::Ordering;

use udplock_protocol::{
    AddressToken, AddressTokenKey, ClusterKey, RequestBody, ADDRESS_TOKEN_LIFETIME_S,
    ADDRESS_TOKEN_SKEW_S,
};

use crate::core::lock_table;

const SESSION: u64 = 0xC11E;
const GHOST: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9)),
    4444,
);

/// A one-voter node that validates addresses, with `keys`, leading its shard.
fn validating(keys: KeySet) -> Node {
    let config = Config {
        shards: 1,
        ..Config::new(1, vec![(1, SOLO)])
    };
    assert!(config.address_validation, "on by default");
    let mut node = solo_with(config, keys);
    node.handle_timeout(Instant::ZERO);
    let _ = drain_solo(&mut node);
    assert_eq!(node.leading(), 1);
    node
}

fn encode(
    request_id: u64,
    session: u64,
    body: RequestBody<'_>,
    token: Option<&AddressToken>,
) -> Vec<u8> {
    let request = Request {
        session_id: session,
        request_id,
        attempt: 0,
        body,
    };
    let mut out = vec![0u8; DATAGRAM_LEN_MAX];
    let len = request.encode_with_token(&mut out, token).unwrap();
    out.truncate(len);
    out
}

fn acquire(request_id: u64, session: u64, token: Option<&AddressToken>) -> Vec<u8> {
    let body = RequestBody::Acquire {
        resource: b"printer",
        client: b"client-a",
        wait_ms: 0,
        ttl_ms: 10_000,
    };
    encode(request_id, session, body, token)
}

/// Sends `datagram` from `from` and returns the one reply (decoded status, hint) and its
/// length.
fn ask(node: &mut Node, at_us: u64, from: SocketAddr, datagram: &[u8]) -> (Status, Hint, usize) {
    node.handle_datagram(Instant::from_micros(at_us), from, datagram);
    let (_, sent) = drain_solo(node);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0.to, from);
    let reply = Reply::decode(&sent[0].1).unwrap();
    (reply.status, reply.hint, sent[0].1.len())
}

/// The node's wall clock at core time `at_us`, in seconds (a token's `issued`, spec §7.2.5).
fn wall_s(at_us: u64) -> u32 {
    u32::try_from((WALL_START_US + at_us) / 1_000_000).unwrap()
}

fn table_stats(node: &Node) -> lock_table::Stats {
    node.replica(0).unwrap().table().expect("a table").stats()
}

fn token_of(hint: Hint) -> AddressToken {
    match hint {
        Hint::AddressToken(token) => token,
        other => panic!("a RETRY without a token: {other:?}"),
    }
}

#[test]
fn an_acquire_without_a_token_gets_retry_and_creates_nothing() {
    let mut node = validating(KeySet::unauthenticated());
    let request = acquire(1, SESSION, None);
    let (status, hint, len) = ask(&mut node, 10, GHOST, &request);
    assert_eq!(status, Status::Retry);
    let _ = token_of(hint);
    assert!(
        len <= request.len(),
        "RETRY larger than its request (spec §2.2)"
    );
    assert_eq!(len, REPLY_LEN_MIN);
    // Spec §7.2.1 step 2a: no session, no hold, nothing remembered, nothing logged.
    let stats = table_stats(&node);
    assert_eq!((stats.sessions, stats.held, stats.waiters), (0, 0, 0));
    assert_eq!(stats.answers_remembered, 0);
    assert_eq!(node.stats().address_retries.load(Ordering::Relaxed), 1);
    // The same copy again: RETRY again, still nothing (RETRY is never remembered).
    assert_eq!(ask(&mut node, 20, GHOST, &request).0, Status::Retry);
    assert_eq!(table_stats(&node).sessions, 0);
}

#[test]
fn only_the_token_of_this_address_and_session_is_accepted() {
    let mut node = validating(KeySet::unauthenticated());
    let (_, hint, _) = ask(&mut node, 10, CLIENT, &acquire(1, SESSION, None));
    let token = token_of(hint);
    // Another address (the port differs), another session: RETRY, nothing created.
    let other_port = SocketAddr::new(CLIENT.ip(), CLIENT.port() + 1);
    assert_eq!(
        ask(
            &mut node,
            20,
            other_port,
            &acquire(1, SESSION, Some(&token))
        )
        .0,
        Status::Retry
    );
    assert_eq!(
        ask(&mut node, 30, GHOST, &acquire(1, SESSION, Some(&token))).0,
        Status::Retry
    );
    assert_eq!(
        ask(
            &mut node,
            40,
            CLIENT,
            &acquire(1, SESSION + 1, Some(&token))
        )
        .0,
        Status::Retry
    );
    let mut forged = token;
    forged.0[0] ^= 0x80;
    assert_eq!(
        ask(&mut node, 50, CLIENT, &acquire(1, SESSION, Some(&forged))).0,
        Status::Retry
    );
    assert_eq!(table_stats(&node).sessions, 0);
    // The right one: granted, same request id (nothing was remembered for it).
    let (status, _, _) = ask(&mut node, 60, CLIENT, &acquire(1, SESSION, Some(&token)));
    assert_eq!(status, Status::Ok);
    let stats = table_stats(&node);
    assert_eq!((stats.sessions, stats.held), (1, 1));
    // Later requests of the session carry it and are served at once.
    let release = encode(
        2,
        SESSION,
        RequestBody::Release {
            resource: b"printer",
            client: b"client-a",
        },
        Some(&token),
    );
    assert_eq!(ask(&mut node, 70, CLIENT, &release).0, Status::Ok);
    assert_eq!(node.stats().address_retries.load(Ordering::Relaxed), 5);
}

#[test]
fn a_ghost_acquire_is_never_granted_and_a_real_client_gets_the_lock() {
    let mut node = validating(KeySet::unauthenticated());
    // Spoofed from an address nobody listens on: the RETRY goes there, unread.
    assert_eq!(
        ask(&mut node, 10, GHOST, &acquire(1, 0x6057, None)).0,
        Status::Retry
    );
    let (_, hint, _) = ask(&mut node, 20, CLIENT, &acquire(1, SESSION, None));
    let token = token_of(hint);
    let (status, _, _) = ask(&mut node, 30, CLIENT, &acquire(1, SESSION, Some(&token)));
    assert_eq!(
        status,
        Status::Ok,
        "the lock was free: the ghost holds nothing"
    );
}

#[test]
fn status_needs_no_token_and_a_token_on_it_is_ignored() {
    let mut node = validating(KeySet::unauthenticated());
    let status = |token| {
        encode(
            1,
            SESSION,
            RequestBody::Status {
                resource: b"printer",
            },
            token,
        )
    };
    let bogus = AddressToken([9; 16]);
    for token in [None, Some(&bogus)] {
        let (status, _, _) = ask(&mut node, 10, GHOST, &status(token));
        assert_eq!(status, Status::Ok, "the lock is free");
    }
    assert_eq!(node.stats().address_retries.load(Ordering::Relaxed), 0);
}

#[test]
fn every_mutating_request_needs_a_token() {
    let mut node = validating(KeySet::unauthenticated());
    let mut token_bytes = [0u8; 8];
    let bodies = [
        RequestBody::Release {
            resource: b"r",
            client: b"c",
        },
        RequestBody::Renew {
            resource: b"r",
            client: b"c",
            ttl_ms: 0,
        },
        RequestBody::Configure {
            resource: b"r",
            default_ttl_ms: 1_000,
        },
        RequestBody::Keepalive {
            shard: 0,
            shards: 1,
            ttl_ms: 0,
            tokens: udplock_protocol::Tokens::write(&[1], &mut token_bytes).unwrap(),
        },
        RequestBody::CancelWait {
            resource: b"r",
            client: b"c",
            target_session: 1,
            target_request: 1,
        },
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let (status, _, _) = ask(
            &mut node,
            10 + i as u64,
            GHOST,
            &encode(1, SESSION, body, None),
        );
        assert_eq!(status, Status::Retry, "{:?}", body.kind());
    }
    let stats = table_stats(&node);
    assert_eq!((stats.sessions, stats.resources), (0, 0));
}

/// With a cluster key every node accepts every node's tokens: the key derived from it.
#[test]
fn with_a_cluster_key_the_clusters_token_is_accepted() {
    let secret = [7u8; 32];
    let mut node = validating(KeySet::single(ClusterKey::new(&secret)));
    let token = AddressTokenKey::derive(&secret).token(CLIENT, SESSION, wall_s(0));
    assert_eq!(
        ask(&mut node, 10, CLIENT, &acquire(1, SESSION, Some(&token))).0,
        Status::Ok
    );
    // And the RETRY it sends carries exactly that token.
    let (status, hint, _) = ask(&mut node, 20, GHOST, &acquire(1, 77, None));
    assert_eq!(status, Status::Retry);
    assert_eq!(
        token_of(hint),
        AddressTokenKey::derive(&secret).token(GHOST, 77, wall_s(20))
    );
    // A node's own key (drawn from its seed) is not the cluster's.
    let own = validating(KeySet::unauthenticated());
    let mut own = own;
    let (_, hint, _) = ask(&mut own, 10, CLIENT, &acquire(1, SESSION, None));
    assert_ne!(token_of(hint), token);
}

/// Spec §7.2.5: a node without a cluster key draws its secret at start: a restarted node
/// (another seed, as the shell draws one) refuses its earlier life's tokens.
#[test]
fn a_node_secret_set_by_the_shell_replaces_the_seeded_one() {
    let mut node = validating(KeySet::unauthenticated());
    let (_, hint, _) = ask(&mut node, 10, CLIENT, &acquire(1, SESSION, None));
    let before = token_of(hint);
    node.set_address_secret(&[42; 32]);
    assert_eq!(
        ask(&mut node, 20, CLIENT, &acquire(1, SESSION, Some(&before))).0,
        Status::Retry
    );
    let after = AddressTokenKey::derive(&[42; 32]).token(CLIENT, SESSION, wall_s(30));
    assert_eq!(
        ask(&mut node, 30, CLIENT, &acquire(1, SESSION, Some(&after))).0,
        Status::Ok
    );
}

#[test]
fn validation_off_serves_requests_without_tokens() {
    let config = Config {
        shards: 1,
        address_validation: false,
        ..Config::new(1, vec![(1, SOLO)])
    };
    let mut node = solo_with(config, KeySet::unauthenticated());
    node.handle_timeout(Instant::ZERO);
    let _ = drain_solo(&mut node);
    assert_eq!(
        ask(&mut node, 10, GHOST, &acquire(1, SESSION, None)).0,
        Status::Ok
    );
}

/// Seconds, in the µs of core time.
const S: u64 = 1_000_000;

fn expired(node: &Node) -> u64 {
    node.stats().address_tokens_expired.load(Ordering::Relaxed)
}

/// Spec §7.2.5, "Expiry": a genuine token older than ADDRESS_TOKEN_LIFETIME_S gets RETRY with
/// a fresh token (made now), and changes nothing; the fresh one is served.
#[test]
fn an_expired_token_gets_retry_with_a_fresh_one() {
    let mut node = validating(KeySet::unauthenticated());
    let (_, hint, _) = ask(&mut node, 10, CLIENT, &acquire(1, SESSION, None));
    let token = token_of(hint);
    assert_eq!(token.issued_s(), wall_s(10));
    let life = u64::from(ADDRESS_TOKEN_LIFETIME_S);
    // The last second of its life (its age in whole seconds is the lifetime): served.
    let last = (u64::from(wall_s(10)) + life + 1) * S - WALL_START_US - 1;
    assert_eq!(wall_s(last) - token.issued_s(), ADDRESS_TOKEN_LIFETIME_S);
    let (status, _, _) = ask(&mut node, last, CLIENT, &acquire(1, SESSION, Some(&token)));
    assert_eq!(status, Status::Ok);
    assert_eq!(expired(&node), 0);
    // A microsecond later its age is lifetime + 1: RETRY, a fresh token, nothing changed.
    let before = table_stats(&node);
    let release = |token| {
        encode(
            2,
            SESSION,
            RequestBody::Release {
                resource: b"printer",
                client: b"client-a",
            },
            Some(token),
        )
    };
    let (status, hint, _) = ask(&mut node, last + 1, CLIENT, &release(&token));
    assert_eq!(status, Status::Retry);
    let fresh = token_of(hint);
    assert_eq!(fresh.issued_s(), wall_s(last + 1));
    assert_eq!(expired(&node), 1);
    let after = table_stats(&node);
    assert_eq!(
        (after.held, after.answers_remembered),
        (before.held, before.answers_remembered)
    );
    // The client resends at once with the fresh token (spec §7.1.9 rule 4): served.
    let (status, _, _) = ask(&mut node, last + 2, CLIENT, &release(&fresh));
    assert_eq!(status, Status::Ok);
    assert_eq!(table_stats(&node).held, 0);
}

/// Spec §7.2.5, "Expiry": a token is accepted up to ADDRESS_TOKEN_SKEW_S ahead of the node's
/// wall clock (another node, whose clock is ahead, made it), not further.
#[test]
fn a_token_from_a_clock_beyond_the_skew_ahead_is_not_yet_valid() {
    let secret = [7u8; 32];
    let mut node = validating(KeySet::single(ClusterKey::new(&secret)));
    let key = AddressTokenKey::derive(&secret);
    let now = wall_s(10);
    let ahead = key.token(CLIENT, SESSION, now + ADDRESS_TOKEN_SKEW_S + 1);
    let (status, hint, _) = ask(&mut node, 10, CLIENT, &acquire(1, SESSION, Some(&ahead)));
    assert_eq!(status, Status::Retry);
    assert_eq!(
        token_of(hint).issued_s(),
        now,
        "the RETRY's token is made by this clock"
    );
    assert_eq!(expired(&node), 1);
    assert_eq!(table_stats(&node).sessions, 0);
    let within = key.token(CLIENT, SESSION, now + ADDRESS_TOKEN_SKEW_S);
    let (status, _, _) = ask(&mut node, 20, CLIENT, &acquire(1, SESSION, Some(&within)));
    assert_eq!(status, Status::Ok);
    // A genuine but badly made token is counted apart from forged ones.
    assert_eq!(node.stats().address_retries.load(Ordering::Relaxed), 1);
}

/// The attack tokens that expire close (spec §7.2.5, "Expiry"; §12): a genuine ACQUIRE,
/// captured on the wire with its address token, replayed from the victim's (spoofed) address
/// once the session has been forgotten. While the session is remembered the replay gets the
/// remembered answer (no effect, spec §6.6); after it was forgotten, the capture is older
/// than a token lives, so it gets RETRY — sent to the victim, who ignores it — and creates
/// no session and no hold. Without expiry the replay would be executed as new: a ghost hold.
#[test]
fn a_replay_captured_before_its_session_was_forgotten_gets_retry_and_creates_nothing() {
    let mut node = validating(KeySet::unauthenticated());
    let (_, hint, _) = ask(&mut node, 10, CLIENT, &acquire(1, SESSION, None));
    let captured = acquire(1, SESSION, Some(&token_of(hint)));
    assert_eq!(ask(&mut node, 20, CLIENT, &captured).0, Status::Ok);
    // The victim releases and goes quiet.
    let (_, hint, _) = ask(&mut node, 30, CLIENT, &acquire(2, SESSION, None));
    let release = encode(
        3,
        SESSION,
        RequestBody::Release {
            resource: b"printer",
            client: b"client-a",
        },
        Some(&token_of(hint)),
    );
    assert_eq!(ask(&mut node, 40, CLIENT, &release).0, Status::Ok);
    // A replay while the session is remembered: its remembered answer, nothing held.
    assert_eq!(ask(&mut node, 50, CLIENT, &captured).0, Status::Ok);
    assert_eq!(table_stats(&node).held, 0);
    // The session is forgotten `session_idle_ms` after its last request.
    let idle_us = 1_000 * u64::from(lock_table::Config::default().session_idle_ms);
    let later = 50 + idle_us + S;
    node.handle_timeout(Instant::from_micros(later));
    let _ = drain_solo(&mut node);
    let stats = table_stats(&node);
    assert_eq!(
        (stats.sessions, stats.held, stats.answers_remembered),
        (0, 0, 0),
        "the session was forgotten: the replay would now be new"
    );
    let (status, _, _) = ask(&mut node, later + 10, CLIENT, &captured);
    assert_eq!(status, Status::Retry);
    assert_eq!(expired(&node), 1);
    let stats = table_stats(&node);
    assert_eq!((stats.sessions, stats.held, stats.waiters), (0, 0, 0));
}

/// Spec §7.2.5, "Cost": a long-lived session pays one RETRY per token lifetime, on its first
/// mutating request after its token expired, and nothing else: a client (as §7.1.9 says)
/// sending one request every 10 s for 1,000 s meets 4 RETRYs — its first request, then every
/// 250 s (the first request past 240 s of age).
#[test]
fn a_long_session_pays_one_retry_per_token_lifetime() {
    let mut node = validating(KeySet::unauthenticated());
    let mut token = None;
    let (mut retries, mut served) = (0, 0);
    for i in 0..100u64 {
        let at = 10 + i * 10 * S;
        let request_id = i + 1;
        let request = |token: Option<&AddressToken>| {
            let body = if i % 2 == 0 {
                RequestBody::Acquire {
                    resource: b"printer",
                    client: b"client-a",
                    wait_ms: 0,
                    ttl_ms: 60_000,
                }
            } else {
                RequestBody::Release {
                    resource: b"printer",
                    client: b"client-a",
                }
            };
            encode(request_id, SESSION, body, token)
        };
        let (mut status, hint, _) = ask(&mut node, at, CLIENT, &request(token.as_ref()));
        if status == Status::Retry {
            retries += 1;
            token = Some(token_of(hint));
            status = ask(&mut node, at + 1, CLIENT, &request(token.as_ref())).0;
        }
        assert_eq!(status, Status::Ok, "request {request_id}");
        served += 1;
    }
    assert_eq!((served, retries), (100, 4));
    assert_eq!(
        expired(&node),
        3,
        "every RETRY but the first was for an expired token"
    );
}

/// Spec §8.11.7: once the node's keys change, a token of a key it no longer accepts gets
/// RETRY, also one it had verified (and remembered, `address::VerifiedTokens`) before.
#[test]
fn a_token_verified_before_a_key_change_is_refused_after_it() {
    let mut node = validating(KeySet::single(ClusterKey::new(&[7; 32])));
    let old = AddressTokenKey::derive(&[7; 32]).token(CLIENT, SESSION, wall_s(10));
    assert_eq!(
        ask(&mut node, 10, CLIENT, &acquire(1, SESSION, Some(&old))).0,
        Status::Ok
    );
    node.set_keys(KeySet::single(ClusterKey::new(&[8; 32])));
    let (status, hint, _) = ask(&mut node, 20, CLIENT, &acquire(2, SESSION, Some(&old)));
    assert_eq!(status, Status::Retry);
    assert_eq!(
        token_of(hint),
        AddressTokenKey::derive(&[8; 32]).token(CLIENT, SESSION, wall_s(20))
    );
}
