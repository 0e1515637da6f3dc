//! Limits per node (spec §9.1, issue 12 item 4): what a node at a limit still admits.

use super::*;
use std::sync::atomic::Ordering;

use udplock_protocol::RequestBody;

use crate::core::node::limits::NodeLimits;

const SESSION: u64 = 0xC11E;

/// A one-voter node of `shards` shards with `limits`, leading every shard, validating no
/// addresses (these tests speak raw requests).
fn limited(shards: u32, limits: NodeLimits) -> Node {
    let config = Config {
        shards,
        limits,
        address_validation: false,
        ..Config::new(1, vec![(1, SOLO)])
    };
    let stats = Arc::new(NodeStats::default());
    let starts = vec![Some(Start::New); shards as usize];
    let mut node = Node::new(
        config,
        starts,
        KeySet::unauthenticated(),
        1,
        5,
        stats,
        Instant::ZERO,
    )
    .expect("valid");
    node.set_wall_clock(Instant::ZERO, WALL_START_US);
    node.handle_timeout(Instant::ZERO);
    let _ = drain_solo(&mut node);
    assert_eq!(node.leading(), shards as usize);
    node
}

fn datagram(session: u64, request_id: u64, attempt: u16, body: RequestBody<'_>) -> Vec<u8> {
    let request = Request {
        session_id: session,
        request_id,
        attempt,
        body,
    };
    let mut out = vec![0u8; DATAGRAM_LEN_MAX];
    let len = request.encode(&mut out).unwrap();
    out.truncate(len);
    out
}

fn acquire_body(resource: &[u8]) -> RequestBody<'_> {
    RequestBody::Acquire {
        resource,
        client: b"client-a",
        wait_ms: 0,
        ttl_ms: 10_000,
    }
}

/// Sends `datagram` at `at_us` and returns the one reply, decoded into owned fields.
fn ask(node: &mut Node, at_us: u64, datagram: &[u8]) -> Reply<'static> {
    node.handle_datagram(Instant::from_micros(at_us), CLIENT, datagram);
    let (_, sent) = drain_solo(node);
    assert_eq!(sent.len(), 1, "one answer: {sent:?}");
    assert!(sent[0].1.len() <= datagram.len(), "no amplification");
    let reply = Reply::decode(&sent[0].1).unwrap();
    Reply {
        hint: Hint::None,
        holder: b"",
        ..reply
    }
}

fn refused(node: &Node) -> u64 {
    node.stats().overloaded_node_limits.load(Ordering::Relaxed)
}

/// Spec §9.1 rule 6: a retransmission of a request that took effect gets its remembered
/// answer at a node limit, not OVERLOADED: a client whose acquire was granted must learn so
/// (else it gives up on a lock it holds, until the lease runs out). Before, the node's
/// limits were checked before the table's session gate, and the copy got OVERLOADED.
#[test]
fn a_retransmission_at_a_node_limit_gets_its_remembered_answer() {
    let mut node = limited(
        1,
        NodeLimits {
            resources_max: 1,
            ..NodeLimits::DEFAULT
        },
    );
    let first = datagram(SESSION, 1, 0, acquire_body(b"printer"));
    let granted = ask(&mut node, 10, &first);
    assert_eq!(granted.status, Status::Ok);
    assert!(granted.fencing_token > 0);
    // The node is full: a new resource is refused...
    let other = ask(
        &mut node,
        20,
        &datagram(SESSION, 2, 0, acquire_body(b"scanner")),
    );
    assert_eq!(other.status, Status::Overloaded);
    assert_eq!(refused(&node), 1);
    // ... but the first acquire's retransmission gets its grant again, token and all.
    let again = ask(
        &mut node,
        30,
        &datagram(SESSION, 1, 1, acquire_body(b"printer")),
    );
    assert_eq!(again, granted, "the remembered answer");
    assert_eq!(refused(&node), 1, "answered, not refused");
    // It took effect once: one hold, one fencing token.
    let table = node.replica(0).unwrap().table().unwrap();
    assert_eq!((table.stats().held, table.stats().resources), (1, 1));
}

fn other_body(resource: &[u8]) -> RequestBody<'_> {
    RequestBody::Acquire {
        resource,
        client: b"client-b",
        wait_ms: 0,
        ttl_ms: 10_000,
    }
}

/// Spec §9.1 rule 7: at the answers limit a holder can still renew and release (the answers
/// reserve), while requests that may add state are refused; past the reserve they are
/// refused too, so the reserve bounds what they add. Before, every logged request was
/// refused at the answers limit: a node full of busy clients' answers could not release.
#[test]
fn at_the_answers_limit_a_holder_can_still_renew_and_release() {
    const HOLDER: u64 = 0xA;
    const BUSY: u64 = 0xB;
    let mut node = limited(
        1,
        NodeLimits {
            answers_max: 4,
            answers_reserve: 2,
            ..NodeLimits::DEFAULT
        },
    );
    let mut at = 10;
    let mut send = |node: &mut Node, session, id, body| {
        at += 10;
        ask(node, at, &datagram(session, id, 0, body)).status
    };
    assert_eq!(
        send(&mut node, HOLDER, 1, acquire_body(b"printer")),
        Status::Ok
    );
    for (id, resource) in [(1, b"r1"), (2, b"r2"), (3, b"r3")] {
        assert_eq!(send(&mut node, BUSY, id, other_body(resource)), Status::Ok);
    }
    let answers = |node: &Node| {
        let table = node.replica(0).unwrap().table().unwrap();
        table.stats().answers_remembered
    };
    assert_eq!(answers(&node), 4, "at the limit");
    // What may add state is refused ...
    assert_eq!(
        send(&mut node, BUSY, 4, other_body(b"r4")),
        Status::Overloaded
    );
    assert_eq!(
        send(&mut node, HOLDER, 2, acquire_body(b"scanner")),
        Status::Overloaded
    );
    // ... the holder renews and releases.
    let renew = RequestBody::Renew {
        resource: b"printer",
        client: b"client-a",
        ttl_ms: 10_000,
    };
    assert_eq!(send(&mut node, HOLDER, 3, renew), Status::Ok);
    let release = RequestBody::Release {
        resource: b"printer",
        client: b"client-a",
    };
    assert_eq!(send(&mut node, HOLDER, 4, release), Status::Ok);
    assert_eq!(answers(&node), 6, "the reserve is used");
    let table = node.replica(0).unwrap().table().unwrap();
    assert_eq!(table.stats().held, 3, "printer is free");
    // The reserve is spent: a release is refused now, and nothing grows.
    let release = RequestBody::Release {
        resource: b"r1",
        client: b"client-b",
    };
    assert_eq!(send(&mut node, BUSY, 5, release), Status::Overloaded);
    assert_eq!(answers(&node), 6);
    assert_eq!(refused(&node), 3);
}

/// Spec §9.1 rule 7: a session whose window of remembered answers is full evicts its oldest
/// for each new one, so it adds nothing and passes the answers limit: busy clients that
/// filled the node keep working; only sessions that would add answers are refused.
#[test]
fn a_session_with_a_full_window_passes_the_answers_limit() {
    const BUSY: u64 = 0xB;
    const NEW: u64 = 0xC;
    let config = Config {
        shards: 1,
        limits: NodeLimits {
            answers_max: 2,
            answers_reserve: 0,
            ..NodeLimits::DEFAULT
        },
        table: lock_table::Config {
            answers_per_session_max: 2,
            ..lock_table::Config::default()
        },
        address_validation: false,
        ..Config::new(1, vec![(1, SOLO)])
    };
    let mut node = solo_with(config, KeySet::unauthenticated());
    node.handle_timeout(Instant::ZERO);
    let _ = drain_solo(&mut node);
    for (at, id, resource) in [(10, 1, b"r1"), (20, 2, b"r2"), (30, 3, b"r3")] {
        let reply = ask(&mut node, at, &datagram(BUSY, id, 0, other_body(resource)));
        assert_eq!(reply.status, Status::Ok, "request {id}");
    }
    let table = node.replica(0).unwrap().table().unwrap();
    assert_eq!(
        (table.stats().answers_remembered, table.stats().held),
        (2, 3)
    );
    let reply = ask(&mut node, 40, &datagram(NEW, 1, 0, acquire_body(b"r4")));
    assert_eq!(reply.status, Status::Overloaded, "a new session adds one");
}

/// Spec §9.1: requests in flight per source are counted per node, over every shard the node
/// leads: a source with `in_flight_per_source_max` proposed and not applied gets OVERLOADED
/// at any of them, another source does not, and once they apply the source is served again.
/// Before, each shard counted on its own (1,024 each: 64 times as many at a node leading 64).
#[test]
fn requests_in_flight_per_source_are_counted_over_the_shards_a_node_leads() {
    const SHARDS: u32 = 4;
    let mut trio = Trio::with(SHARDS, test_keys(), |config| {
        config.limits.in_flight_per_source_max = 3;
    });
    trio.run_for(3_000);
    let leaders: Vec<usize> = (0..SHARDS as usize)
        .map(|s| trio.leader_of(s).expect("a leader"))
        .collect();
    // Four shards on three nodes: some node leads two.
    let node = (0..3)
        .find(|&i| leaders.iter().filter(|&&l| l == i).count() >= 2)
        .expect("a node leading two shards");
    let led: Vec<u32> = (0..SHARDS)
        .filter(|&s| leaders[s as usize] == node)
        .collect();
    let resource_of = |shard: u32, n: usize| {
        (0..)
            .map(|k| format!("lock-{k}"))
            .filter(|r| shard_of(r.as_bytes(), SHARDS) == shard)
            .nth(n)
            .unwrap()
    };
    let other = SocketAddr::from(([127, 0, 0, 10], 9000));
    let mut request_id = 0;
    // Sends an acquire from `from` to the node, without running the network (nothing
    // commits): what the node answered at once.
    let mut send = |trio: &mut Trio, from: SocketAddr, shard: u32, n: usize| {
        request_id += 1;
        let resource = resource_of(shard, n);
        let datagram = acquire(request_id, resource.as_bytes());
        trio.nodes[node].handle_datagram(trio.now, from, &datagram);
        trio.drain();
        let sent = std::mem::take(&mut trio.to_client);
        sent.iter()
            .map(|(_, bytes)| Reply::decode(bytes).unwrap().status)
            .collect::<Vec<_>>()
    };
    assert!(send(&mut trio, CLIENT, led[0], 0).is_empty(), "proposed");
    assert!(send(&mut trio, CLIENT, led[0], 1).is_empty(), "proposed");
    assert!(send(&mut trio, CLIENT, led[1], 0).is_empty(), "proposed");
    // Three in flight over two shards: the next one is refused at either shard.
    assert_eq!(send(&mut trio, CLIENT, led[1], 1), [Status::Overloaded]);
    assert_eq!(send(&mut trio, CLIENT, led[0], 2), [Status::Overloaded]);
    // Another source is still served.
    assert!(send(&mut trio, other, led[1], 2).is_empty(), "proposed");
    // Once they apply, the source is served again.
    trio.run_for(50);
    let granted = std::mem::take(&mut trio.to_client)
        .iter()
        .filter(|(_, bytes)| Reply::decode(bytes).unwrap().status == Status::Ok)
        .count();
    assert_eq!(granted, 4);
    assert!(send(&mut trio, CLIENT, led[1], 3).is_empty(), "proposed");
    trio.run_for(50);
    assert_eq!(std::mem::take(&mut trio.to_client).len(), 1);
    // Full again; a copy of request 1, which took effect, gets its grant (rule 6).
    for n in 4..7 {
        assert!(send(&mut trio, CLIENT, led[1], n).is_empty(), "proposed");
    }
    assert_eq!(send(&mut trio, CLIENT, led[1], 7), [Status::Overloaded]);
    let first = acquire(1, resource_of(led[0], 0).as_bytes());
    trio.nodes[node].handle_datagram(trio.now, CLIENT, &first);
    trio.drain();
    let sent = std::mem::take(&mut trio.to_client);
    assert_eq!(sent.len(), 1);
    let reply = Reply::decode(&sent[0].1).unwrap();
    assert_eq!((reply.request_id, reply.status), (1, Status::Ok));
}

/// Spec §8.14: a node tells the leaders of its shards which of its limits it has reached, and
/// they refuse what would raise that count, though their own nodes have room. Node 3 may
/// keep 2 resources, the others many: the leaders on nodes 1 and 2 grant two, then node 3
/// reports its resources limit reached and they refuse the third (OVERLOADED with the
/// retry-after hint, nothing changes); a release still passes, node 3 reports room again,
/// and the acquire is granted. Before, only a leader's own node's counts were checked: the
/// leaders granted on, and node 3 held as many as they did.
#[test]
fn a_leader_refuses_what_a_follower_reports_it_has_no_room_for() {
    const SHARDS: u32 = 4;
    let mut trio = Trio::with(SHARDS, test_keys(), |config| {
        if config.node_id == 3 {
            config.limits.resources_max = 2;
        }
    });
    trio.run_for(3_000);
    let leaders: Vec<usize> = (0..SHARDS as usize)
        .map(|s| trio.leader_of(s).expect("a leader"))
        .collect();
    // Resources of the shards nodes 1 and 2 lead.
    let resources: Vec<(usize, String)> = (0..)
        .map(|n| format!("lock-{n}"))
        .map(|r| (leaders[shard_of(r.as_bytes(), SHARDS) as usize], r))
        .filter(|&(leader, _)| leader != 2)
        .take(4)
        .collect();
    let mut request_id = 0;
    let mut send = |trio: &mut Trio, i: usize, body: RequestBody<'_>| {
        request_id += 1;
        let replies = trio.ask(i, &encode_request(request_id, body));
        assert_eq!(replies.len(), 1, "{replies:?}");
        let reply = Reply::decode(&replies[0].1).unwrap();
        (reply.status, reply.hint)
    };
    let held = |trio: &Trio, i: usize| -> u64 {
        (0..SHARDS)
            .map(|s| {
                let replica = trio.nodes[i].replica(s).unwrap();
                replica.table().map_or(0, |t| t.stats().resources)
            })
            .sum()
    };
    for (leader, resource) in &resources[..2] {
        let (status, _) = send(&mut trio, *leader, acquire_body(resource.as_bytes()));
        assert_eq!(status, Status::Ok, "{resource}");
    }
    trio.run_for(200);
    assert_eq!(held(&trio, 2), 2, "node 3 is full");
    let (leader, resource) = &resources[2];
    let (status, hint) = send(&mut trio, *leader, acquire_body(resource.as_bytes()));
    assert_eq!(status, Status::Overloaded, "node 3 reported it is full");
    assert!(matches!(hint, Hint::RetryAfter { ms } if ms > 0));
    assert_eq!(refused(&trio.nodes[*leader]), 1);
    // What the metrics show: node 3 reached its resources limit and sent reports, the
    // leader took them and knows node 3's value; nothing dropped.
    let load = |trio: &Trio, i: usize| {
        let s = trio.nodes[i].stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        (
            get(&s.load_sent),
            get(&s.load_received),
            get(&s.load_dropped),
            get(&s.load_reached),
        )
    };
    let (sent, _, dropped, reached) = load(&trio, 2);
    assert!(sent >= 1);
    assert_eq!((dropped, reached), (0, u64::from(reached::RESOURCES)));
    let (_, received, dropped, reached) = load(&trio, *leader);
    assert!(received >= 1);
    assert_eq!((dropped, reached), (0, 0));
    assert_eq!(
        trio.nodes[*leader].peer_loads(trio.now),
        [(3, reached::RESOURCES)]
    );
    trio.run_for(200);
    assert_eq!([held(&trio, 0), held(&trio, 1), held(&trio, 2)], [2, 2, 2]);
    // A release passes, and makes room on node 3: it says so, and the acquire is granted.
    let (first_leader, first) = &resources[0];
    let release = RequestBody::Release {
        resource: first.as_bytes(),
        client: b"client-a",
    };
    assert_eq!(send(&mut trio, *first_leader, release).0, Status::Ok);
    trio.run_for(200);
    assert_eq!(load(&trio, 2).3, 0, "room again");
    assert_eq!(trio.nodes[*leader].peer_loads(trio.now), []);
    let (status, _) = send(&mut trio, *leader, acquire_body(resource.as_bytes()));
    assert_eq!(status, Status::Ok);
}

/// Spec §8.14 rule 6, §8.11: a report a leader cannot trust is dropped and counted
/// (`load_dropped`, and by its reason), and it refuses nothing for it: an unsealed report
/// from a listed node's address (the cluster has a key), one from a node id it does not
/// list, and one that does not decode.
#[test]
fn a_forged_load_report_is_dropped_and_counted() {
    let mut trio = Trio::new(1, test_keys());
    trio.run_for(3_000);
    let leader = trio.leader_of(0).expect("a leader");
    let follower = (leader + 1) % 3;
    let report = |from: u64| {
        let mut out = [0u8; 64];
        let n = PeerLoad {
            header: PeerHeader {
                cluster_id: trio.nodes[leader].cluster_id(),
                from,
            },
            auth: None,
            reached: reached::ALL,
        }
        .encode(&mut out)
        .unwrap();
        out[..n].to_vec()
    };
    let unsealed = report(follower as u64 + 1);
    let stranger = report(9);
    let mut bad = unsealed.clone();
    bad[udplock_protocol::HEADER_LEN + 7] = 1;
    let now = trio.now;
    let from = trio.addrs[follower];
    let node = &mut trio.nodes[leader];
    for datagram in [&unsealed, &stranger, &bad] {
        node.handle_datagram(now, from, datagram);
    }
    let stats = node.stats();
    assert_eq!(stats.load_dropped.load(Ordering::Relaxed), 3);
    assert_eq!(stats.load_received.load(Ordering::Relaxed), 0);
    assert_eq!(stats.auth_dropped(AuthDrop::Unauthenticated), 1);
    assert_eq!(stats.peer_unknown.load(Ordering::Relaxed), 1);
    assert_eq!(node.peer_loads(now), []);
    // The leader admits on: a new resource is granted.
    let replies = trio.ask(leader, &acquire(1, b"after-forgery"));
    assert_eq!(Reply::decode(&replies[0].1).unwrap().status, Status::Ok);
}

/// Issue 12 item 4 in the case it is about: a joined cluster where node 2 leads none of the
/// shards it holds (a learner of shards 0 and 1, led by node 1). Its own node never admits
/// anything, so before load reports nothing bounded it per node. With its resources limit at
/// 1: once node 1 grants one resource of shard 0, node 2 reports its limit reached, and node
/// 1 refuses a new resource of shard 1 (which node 2 holds) while it still grants one of
/// shard 2 (which node 2 does not hold: its report does not concern it).
#[test]
fn a_joined_node_that_leads_none_of_its_shards_is_bounded_per_node() {
    let mut net = joined_trio();
    net.nodes[1].1.config.limits.resources_max = 1;
    change(&mut net, 0, raft::MembershipChange::AddLearner(2));
    change(&mut net, 1, raft::MembershipChange::AddLearner(2));
    assert_eq!(net.nodes[1].1.held(), 2);
    assert_eq!(net.nodes[1].1.leading(), 0, "node 2 leads nothing");
    let resource_of = |shard: u32| {
        (0..)
            .map(|n| format!("lock-{n}"))
            .find(|r| shard_of(r.as_bytes(), 4) == shard)
            .unwrap()
    };
    let ask = |net: &mut Joining, request_id: u64, resource: &str| {
        let datagram = acquire(request_id, resource.as_bytes());
        let now = net.now;
        net.nodes[0].1.handle_datagram(now, CLIENT, &datagram);
        net.run_for(200);
        let replies = std::mem::take(&mut net.to_client);
        assert_eq!(replies.len(), 1, "{replies:?}");
        Reply::decode(&replies[0]).unwrap().status
    };
    assert_eq!(ask(&mut net, 1, &resource_of(0)), Status::Ok);
    assert_eq!(ask(&mut net, 2, &resource_of(1)), Status::Overloaded);
    assert_eq!(ask(&mut net, 3, &resource_of(2)), Status::Ok);
    let resources = |node: &Node| -> u64 {
        node.replicas()
            .map(|(_, r)| r.table().map_or(0, |t| t.stats().resources))
            .sum()
    };
    assert_eq!(
        resources(&net.nodes[1].1),
        1,
        "node 2 at its limit, not past it"
    );
    assert_eq!(resources(&net.nodes[0].1), 2);
}
