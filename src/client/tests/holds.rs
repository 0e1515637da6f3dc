//! HOLDS walks (spec §4.13) against scripted nodes: every shard and page put together, hints
//! followed only to known nodes, and pages that break the spec's rules abandoned.

use super::*;
use udplock_protocol::{HoldEntries, HoldEntry, HoldsReply, HoldsRequest};

/// The scripted node's holds: (resource, client id) in token order, tokens 10, 11, ...
const HOLDS: &[(&[u8], &[u8])] = &[
    (b"orders/1", b"team-a/1"),
    (b"orders/2", b"team-b/1"),
    (b"orders/3", b"team-a/2"),
    (b"jobs/1", b"team-a/1"),
    (b"jobs/2", b"team-b/2"),
];
const SHARDS: u16 = 2;

/// What the scripted node does wrong, if anything.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    /// Lists a hold whatever the prefix.
    IgnoresPrefix,
    /// Echoes another cursor.
    WrongCursor,
    /// Lists every hold in every shard.
    WrongShard,
    /// Says 3 shards after its first page.
    ShardCountChanges,
}

/// A page of one hold at a time (so a walk takes many), from the holds of `req.shard` at or
/// after its cursor that match its prefix.
fn holds_page(req: &HoldsRequest<'_>, fault: Fault) -> Vec<u8> {
    let in_shard = |resource: &[u8]| {
        fault == Fault::WrongShard || shard_of(resource, u32::from(SHARDS)) == u32::from(req.shard)
    };
    let listed: Vec<(u64, &[u8], &[u8])> = HOLDS
        .iter()
        .enumerate()
        .map(|(i, &(r, c))| (10 + i as u64, r, c))
        .filter(|&(t, r, c)| {
            t >= req.cursor
                && in_shard(r)
                && (c.starts_with(req.prefix) || fault == Fault::IgnoresPrefix)
        })
        .collect();
    let entries: Vec<HoldEntry<'_>> = listed
        .iter()
        .take(1)
        .map(|&(t, r, c)| HoldEntry {
            fencing_token: t,
            hold_count: 1,
            lease_ms: 5_000,
            waiter_count: 0,
            resource: r,
            client: c,
        })
        .collect();
    let next_cursor = listed.get(1).map_or(0, |&(t, _, _)| t);
    let reply = HoldsReply {
        session_id: req.session_id,
        request_id: req.request_id,
        attempt: req.attempt,
        status: Status::Ok,
        hint: Hint::None,
        shard: req.shard,
        shards: if fault == Fault::ShardCountChanges && req.cursor > 0 {
            3
        } else {
            SHARDS
        },
        cursor: if fault == Fault::WrongCursor && req.cursor > 0 {
            req.cursor - 1
        } else {
            req.cursor
        },
        next_cursor,
        entries: HoldEntries::from_slice(&entries),
    };
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    let n = reply.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn scripted(fault: Fault) -> FakeServer {
    FakeServer::spawn_raw(move |datagram| match datagram.map(HoldsRequest::decode) {
        Some(Ok(req)) => vec![holds_page(&req, fault)],
        _ => Vec::new(),
    })
}

#[test]
fn a_walk_reads_every_shard_and_page_and_filters_by_prefix() {
    let node = scripted(Fault::None);
    let client = client_for(&node, |_| {});
    let all = client.holds(b"").unwrap();
    let mut names: Vec<(&[u8], u64)> = all
        .iter()
        .map(|h| (h.resource.as_slice(), h.fencing_token))
        .collect();
    names.sort_unstable();
    let mut expected: Vec<(&[u8], u64)> = HOLDS
        .iter()
        .enumerate()
        .map(|(i, &(r, _))| (r, 10 + i as u64))
        .collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(all
        .iter()
        .all(|h| u32::from(h.shard) == shard_of(&h.resource, u32::from(SHARDS))));
    let team_a = client.holds(b"team-a/").unwrap();
    assert_eq!(team_a.len(), 3);
    assert!(team_a.iter().all(|h| h.client.starts_with(b"team-a/")));
    // The callback can stop the walk.
    let mut seen = 0;
    client
        .for_each_hold(b"", |_| {
            seen += 1;
            false
        })
        .unwrap();
    assert_eq!(seen, 1);
}

/// Issue 12 item 5's rule for HOLDS (spec §4.13): a page that breaks a rule ends the walk with
/// an error, never a listing that shows it.
#[test]
fn a_page_that_breaks_a_rule_abandons_the_walk() {
    for fault in [
        Fault::IgnoresPrefix,
        Fault::WrongCursor,
        Fault::WrongShard,
        Fault::ShardCountChanges,
    ] {
        let node = scripted(fault);
        let client = client_for(&node, |_| {});
        match client.holds(b"team-a/") {
            Err(LockError::InternalError(why)) => {
                assert!(why.contains("walk is abandoned"), "{fault:?}: {why}")
            }
            other => panic!("{fault:?}: {other:?}"),
        }
    }
}

#[test]
fn a_hint_to_an_unknown_address_is_not_followed() {
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger_addr = stranger.local_addr().unwrap();
    let node = FakeServer::spawn_raw(move |datagram| match datagram.map(HoldsRequest::decode) {
        Some(Ok(req)) => {
            let reply = HoldsReply::refusal(&req, Status::NotLeader, Hint::Leader(stranger_addr));
            let mut buf = [0u8; DATAGRAM_LEN_MAX];
            let n = reply.encode(&mut buf).unwrap();
            vec![buf[..n].to_vec()]
        }
        _ => Vec::new(),
    });
    let client = client_for(&node, |c| c.request_timeout_ms = 100);
    assert_eq!(client.holds(b""), Err(LockError::Unavailable));
    // Nothing went to the hinted address: it is no member of any table the client read.
    stranger.set_nonblocking(true).unwrap();
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "a HOLDS reached the stranger"
    );
}
