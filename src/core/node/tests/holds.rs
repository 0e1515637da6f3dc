//! HOLDS (spec §4.13, §5.10, §8.9): the shard's leader lists who holds what, a page at a time;
//! other nodes redirect; over bytes between three node cores, and on a single node.

use udplock_protocol::{HoldsReply, HoldsRequest, HOLDS_REQUEST_LEN, REQUEST_LEN_MIN};

use super::*;

/// A HOLDS of `shard` from `cursor` with `prefix`, padded to `len` bytes.
fn holds(request_id: u64, shard: u16, cursor: u64, prefix: &[u8], len: usize) -> Vec<u8> {
    let request = HoldsRequest {
        session_id: 0x401D,
        request_id,
        attempt: 0,
        shard,
        cursor,
        prefix,
    };
    let mut out = vec![0u8; DATAGRAM_LEN_MAX];
    let n = request.encode_padded(&mut out, len).unwrap();
    out.truncate(n);
    out
}

/// The one answer node `i` sends to `request`, checked no longer than it and decoded.
fn ask_holds(trio: &mut Trio, i: usize, request: &[u8]) -> (Vec<u8>, SocketAddr) {
    let replies = trio.ask(i, request);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let (from, bytes) = replies.into_iter().next().unwrap();
    assert!(bytes.len() <= request.len(), "no amplification");
    HoldsReply::decode(&bytes).unwrap_or_else(|e| panic!("not a HOLDS_REPLY ({e})"));
    (bytes, from)
}

fn acquire_as(request_id: u64, resource: &[u8], client: &[u8]) -> Vec<u8> {
    encode_request(
        request_id,
        udplock_protocol::RequestBody::Acquire {
            resource,
            client,
            wait_ms: 0,
            ttl_ms: 10_000,
        },
    )
}

#[test]
fn the_shards_leader_lists_its_holds_and_the_others_redirect() {
    let mut trio = Trio::new(2, test_keys());
    trio.run_for(3_000);
    // Locks of two clients in shard 0 of 2, a third in shard 1.
    let mut in_zero = Vec::new();
    let mut request_id = 0;
    for i in 0..40u32 {
        let resource = format!("res-{i}").into_bytes();
        if shard_of(&resource, 2) != 0 || in_zero.len() == 6 {
            continue;
        }
        let client: &[u8] = if in_zero.len() % 2 == 0 {
            b"team-a/1"
        } else {
            b"team-b/1"
        };
        let leader = trio.leader_of(0).unwrap();
        request_id += 1;
        let grant = trio.ask(leader, &acquire_as(request_id, &resource, client));
        assert_eq!(Reply::decode(&grant[0].1).unwrap().status, Status::Ok);
        in_zero.push((resource, client.to_vec()));
    }
    assert_eq!(in_zero.len(), 6);
    let leader = trio.leader_of(0).unwrap();
    let follower = (leader + 1) % 3;

    // A follower answers NOT_LEADER with the leader's client address.
    let request = holds(1, 0, 0, b"", HOLDS_REQUEST_LEN);
    let (bytes, _) = ask_holds(&mut trio, follower, &request);
    let reply = HoldsReply::decode(&bytes).unwrap();
    assert_eq!(reply.status, Status::NotLeader);
    assert_eq!(reply.hint, Hint::Leader(trio.addrs[leader]));

    // The leader lists all six, in token order, and says the shard count.
    let (bytes, from) = ask_holds(&mut trio, leader, &request);
    assert_eq!(from, trio.addrs[leader]);
    let reply = HoldsReply::decode(&bytes).unwrap();
    assert_eq!(
        (reply.status, reply.shard, reply.shards),
        (Status::Ok, 0, 2)
    );
    assert_eq!(reply.next_cursor, 0);
    let listed: Vec<(Vec<u8>, Vec<u8>)> = reply
        .entries
        .iter()
        .map(|e| (e.resource.to_vec(), e.client.to_vec()))
        .collect();
    assert_eq!(listed, in_zero, "grant order is token order");

    // With a prefix, only team-a's three.
    let (bytes, _) = ask_holds(
        &mut trio,
        leader,
        &holds(2, 0, 0, b"team-a", HOLDS_REQUEST_LEN),
    );
    let reply = HoldsReply::decode(&bytes).unwrap();
    assert_eq!(reply.entries.len(), 3);
    assert!(reply.entries.iter().all(|e| e.client == b"team-a/1"));

    // A 76-byte request pays for no entry: an empty page that stays at its cursor.
    let (bytes, _) = ask_holds(&mut trio, leader, &holds(3, 0, 0, b"", REQUEST_LEN_MIN));
    let reply = HoldsReply::decode(&bytes).unwrap();
    assert!(reply.entries.is_empty());
    assert_ne!(reply.next_cursor, 0);
    assert_eq!(bytes.len(), REQUEST_LEN_MIN);

    // A shard the cluster does not have is INVALID_ARGUMENT, at any node.
    let (bytes, _) = ask_holds(&mut trio, follower, &holds(4, 2, 0, b"", HOLDS_REQUEST_LEN));
    assert_eq!(
        HoldsReply::decode(&bytes).unwrap().status,
        Status::InvalidArgument
    );

    // Nothing was logged for the reads.
    let commit = trio.nodes[leader].replica(0).unwrap().raft().commit_index();
    trio.ask(leader, &request);
    trio.run_for(100);
    assert_eq!(
        trio.nodes[leader].replica(0).unwrap().raft().commit_index(),
        commit
    );
}

#[test]
fn a_single_node_answers_holds_and_older_decoders_would_say_unsupported() {
    let mut node = solo(false);
    let now = Instant::ZERO + Duration::from_millis(10);
    let mut buf = vec![0u8; PEER_DATAGRAM_LEN_MAX];
    let mut answers = |node: &mut Node, now: Instant, datagram: &[u8]| {
        node.handle_datagram(now, CLIENT, datagram);
        let mut out = Vec::new();
        store_all(node);
        while let Some(t) = node.poll_transmit(&mut buf) {
            if t.to == CLIENT {
                out.push(buf[..t.len].to_vec());
            }
        }
        out
    };
    node.handle_timeout(Instant::ZERO);
    assert!(answers(&mut node, Instant::ZERO, &[]).is_empty());
    let granted = answers(&mut node, now, &acquire_as(1, b"orders/42", b"w-1"));
    assert_eq!(Reply::decode(&granted[0]).unwrap().status, Status::Ok);
    let request = holds(1, 0, 0, b"w-", HOLDS_REQUEST_LEN);
    let got = answers(&mut node, now, &request);
    assert_eq!(got.len(), 1);
    let reply = HoldsReply::decode(&got[0]).unwrap();
    assert_eq!(
        (reply.status, reply.shards, reply.entries.len()),
        (Status::Ok, 1, 1)
    );
    let e = reply.entries.iter().next().unwrap();
    assert_eq!(
        (e.resource, e.client, e.hold_count),
        (&b"orders/42"[..], &b"w-1"[..], 1)
    );
    assert_eq!(
        e.fencing_token,
        Reply::decode(&granted[0]).unwrap().fencing_token
    );
    // The lock decoder does not read HOLDS: a server older than it answers UNSUPPORTED.
    assert_eq!(
        Request::decode(&request),
        Err(udplock_protocol::DecodeError::UnknownType)
    );
}

/// Spec §4.13: tokens are replicated state, so a walk begun at one leader goes on at the next
/// from the cursor it was given, and lists every hold exactly once.
#[test]
fn a_walk_goes_on_at_the_next_leader_from_its_cursor() {
    let mut trio = Trio::new(1, test_keys());
    trio.run_for(3_000);
    let leader = trio.leader_of(0).unwrap();
    for i in 0..30u64 {
        let resource = format!("walk/{i:02}").into_bytes();
        let grant = trio.ask(leader, &acquire_as(i + 1, &resource, b"w-1"));
        assert_eq!(Reply::decode(&grant[0].1).unwrap().status, Status::Ok);
    }
    trio.run_for(200);
    // Pages of 200 bytes: (200 - 76) / (22 + 7 + 3) = 3 holds each.
    let page = |trio: &mut Trio, node: usize, id: u64, cursor: u64| {
        let (bytes, _) = ask_holds(trio, node, &holds(id, 0, cursor, b"", 200));
        let reply = HoldsReply::decode(&bytes).unwrap();
        assert_eq!(reply.status, Status::Ok, "{reply:?}");
        let listed: Vec<Vec<u8>> = reply.entries.iter().map(|e| e.resource.to_vec()).collect();
        (listed, reply.next_cursor)
    };
    let mut seen = Vec::new();
    let mut cursor = 0;
    for id in 1..=4 {
        let (listed, next) = page(&mut trio, leader, id, cursor);
        assert_eq!(listed.len(), 3);
        seen.extend(listed);
        cursor = next;
    }
    // The leader is cut off; another is elected, with the same holds and tokens.
    trio.cut = Some(leader);
    trio.run_for(3_000);
    let next_leader = (0..3)
        .filter(|&i| i != leader)
        .find(|&i| trio.nodes[i].replica(0).unwrap().raft().role() == Role::Leader)
        .expect("a new leader");
    for id in 5.. {
        let (listed, next) = page(&mut trio, next_leader, id, cursor);
        seen.extend(listed);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let expected: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("walk/{i:02}").into_bytes())
        .collect();
    assert_eq!(seen, expected, "every hold once, in grant (token) order");
}
