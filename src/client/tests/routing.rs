//! Routing: redirects, hints, silent nodes, replies from other addresses, one leader per
//! shard.

use super::*;

#[test]
fn not_leader_with_a_hint_sends_the_same_request_to_the_leader_and_caches_it() {
    let (follower_log, leader_log) = (Seen::default(), Seen::default());
    let leader = node(&leader_log, |req| vec![grant(req)]);
    let leader_addr = leader.addr;
    let follower = node(&follower_log, move |req| {
        vec![not_leader(req, Some(leader_addr))]
    });
    let client = client_of(&[&follower, &leader], |_| {});
    assert_eq!(
        client.leader_addr("r"),
        follower.addr,
        "servers[0 % 2] first"
    );

    assert_eq!(client.acquire("r", "c", 0, None).unwrap().fencing_token, 5);
    let (f, l) = (seen(&follower_log), seen(&leader_log));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(
        (l[0].0, l[0].1),
        (f[0].0, f[0].1),
        "the same session and request id"
    );
    assert_eq!((f[0].2, l[0].2), (0, 1), "the redirect is the next attempt");
    assert_eq!(client.stats().redirects, 1);
    assert_eq!(client.stats().retransmits, 1);

    // The next call about the resource goes straight to the leader.
    assert_eq!(client.leader_addr("r"), leader.addr);
    assert_eq!(client.release("r", "c"), Ok(1));
    assert_eq!(seen(&follower_log).len(), 1);
    let l = seen(&leader_log);
    assert_eq!(l.len(), 2);
    assert_eq!(l[1].2, 0, "a new request, sent once");
    assert_eq!(client.stats().redirects, 1);
}

/// Spec §7.1.7 rule 5.4 (issue 12: a NOT_LEADER hint made a client send 42 datagrams to any
/// address; ignoring hints to nodes not met yet cost answered operations): a hint naming an
/// address that is no node the client knows is followed by the copy the timer sends, whose
/// answer counts, and is not cached as the shard's leader.
#[test]
fn a_hint_to_a_node_the_client_does_not_know_is_followed_on_the_timer_not_cached() {
    let (follower_log, leader_log) = (Seen::default(), Seen::default());
    let leader = node(&leader_log, |req| vec![grant(req)]);
    let leader_addr = leader.addr;
    let follower = node(&follower_log, move |req| {
        vec![not_leader(req, Some(leader_addr))]
    });
    let client = client_of(&[&follower], |c| c.request_timeout_ms = 2_000);
    assert_eq!(client.release("r", "c"), Ok(1), "the hinted node's answer");
    let (f, l) = (seen(&follower_log), seen(&leader_log));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!((l[0].0, l[0].1), (f[0].0, f[0].1), "the same request");
    assert_eq!(client.leader_addr("r"), follower.addr, "not cached");
    assert_eq!(client.servers(), &[follower.addr]);
}

#[test]
fn not_leader_without_a_hint_moves_on_to_the_next_server() {
    let (electing_log, leader_log) = (Seen::default(), Seen::default());
    let electing = node(&electing_log, |req| vec![not_leader(req, None)]);
    let leader = node(&leader_log, |req| vec![grant(req)]);
    let client = client_of(&[&electing, &leader], |_| {});
    assert_eq!(client.release("r", "c"), Ok(1));
    let (e, l) = (seen(&electing_log), seen(&leader_log));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!((l[0].0, l[0].1, l[0].2), (e[0].0, e[0].1, 1));
    assert_eq!(client.stats().redirects, 1);
    assert_eq!(client.leader_addr("r"), leader.addr);
}

#[test]
fn a_silent_server_is_left_after_two_copies() {
    let (silent_log, leader_log) = (Seen::default(), Seen::default());
    let silent = node(&silent_log, |_| Vec::new()); // dead, as far as anyone can tell
    let leader = node(&leader_log, |req| vec![grant(req)]);
    let rto = Duration::from_millis(20);
    let client = client_of(&[&silent, &leader], |c| {
        c.retransmit = RetransmitConfig {
            rto_initial: rto,
            rto_min: rto,
            rto_max: Duration::from_millis(100),
        };
    });
    assert_eq!(client.release("r", "c"), Ok(1));
    let (s, l) = (seen(&silent_log), seen(&leader_log));
    let attempts =
        |log: &[(u64, u64, u16, Vec<u8>)]| -> Vec<u16> { log.iter().map(|e| e.2).collect() };
    assert_eq!(attempts(&s), [0, 1], "{s:?}");
    assert_eq!(attempts(&l), [2], "{l:?}");
    assert_eq!((l[0].0, l[0].1), (s[0].0, s[0].1));
    assert_eq!(client.stats().redirects, 0, "moving on is not a redirect");

    assert_eq!(client.leader_addr("r"), leader.addr);
    assert_eq!(client.release("r", "c"), Ok(1));
    assert_eq!(
        seen(&silent_log).len(),
        2,
        "the next call skips the silent node"
    );
}

/// Spec §7.1.4 rule 5: a reply from another node of the cluster is accepted (after a
/// failover the new leader answers requests that were sent to the old one), and names
/// that node the leader; a reply from an address that is no node the client knows is
/// dropped and counted, however well it names the request.
#[test]
fn a_reply_from_another_node_is_accepted_from_an_unknown_address_dropped() {
    let target_log = Seen::default();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    let (client_addr, late_client_addr) = late_addr();
    let from_stranger = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&from_stranger);
    let target = node(&target_log, move |req| {
        // Answered by a different socket, on this node's behalf.
        if let Some(&to) = late_client_addr.get() {
            let socket = if flag.load(Ordering::Relaxed) {
                &stranger
            } else {
                &other
            };
            socket.send_to(&grant(req), to).unwrap();
        }
        Vec::new()
    });
    let mut config = ClientConfig::new(vec![target.addr, other_addr]);
    config.shards = 1;
    config.retransmit = fixed_rto(Duration::from_millis(100));
    config.grace_ms = 300;
    let client = Client::new(config).unwrap();
    let port = client.socket.local_addr().unwrap().port();
    client_addr.set((Ipv4Addr::LOCALHOST, port).into()).unwrap();

    assert_eq!(
        client.acquire("r", "c", 0, None),
        Err(LockError::Unavailable)
    );
    assert!(client.stats().dropped_datagrams >= 1);
    from_stranger.store(false, Ordering::Relaxed);
    let dropped = client.stats().dropped_datagrams;
    assert_eq!(client.acquire("r", "c", 0, None).unwrap().fencing_token, 5);
    assert_eq!(client.stats().dropped_datagrams, dropped);
    assert_eq!(
        client.leader_addr("r"),
        other_addr,
        "the node that answered"
    );
}

/// Two nodes that name each other as the leader cost a bounded number of datagrams and
/// end in the call's own timeout, not in a hot loop, a hang or a NOT_LEADER error.
#[test]
fn a_redirect_loop_ends_at_the_deadline() {
    let (a_log, b_log) = (Seen::default(), Seen::default());
    let (b_addr, late_b_addr) = late_addr();
    let a = node(&a_log, move |req| {
        vec![not_leader(req, late_b_addr.get().copied())]
    });
    let a_addr = a.addr;
    let b = node(&b_log, move |req| vec![not_leader(req, Some(a_addr))]);
    b_addr.set(b.addr).unwrap();
    let client = client_of(&[&a, &b], |c| {
        c.retransmit = RetransmitConfig::default();
        c.request_timeout_ms = 200;
    });
    let start = BootInstant::now();
    assert_eq!(client.status("r"), Err(LockError::Unavailable));
    let took = start.elapsed();
    assert!(took >= StdDuration::from_millis(200), "{took:?}");
    // Ends at its deadline, not in a hang (a bound load cannot reach).
    assert!(took < StdDuration::from_millis(10_000), "{took:?}");
    thread::sleep(StdDuration::from_millis(20)); // let the fakes log the last copies
    let datagrams = seen(&a_log).len() + seen(&b_log).len();
    assert!(
        datagrams > REDIRECTS_FAST_MAX as usize,
        "{datagrams} datagrams"
    );
    assert!(datagrams < 100, "{datagrams} datagrams in 200 ms");
    let ids: std::collections::HashSet<_> = seen(&a_log)
        .into_iter()
        .chain(seen(&b_log))
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(ids.len(), 1, "one request throughout");
}

/// Every shard has its own cache entry: two resources in different shards, each led by
/// the node the initial guess does not pick, are redirected once each and then go
/// straight to their own leaders.
#[test]
fn each_shard_has_its_own_leader() {
    let shard = |r: &str| shard_of(r.as_bytes(), 2);
    let name = |s: u32| {
        (0..)
            .map(|i| format!("res-{i}"))
            .find(|r| shard(r) == s)
            .unwrap()
    };
    let (r0, r1) = (name(0), name(1));
    let (a_log, b_log) = (Seen::default(), Seen::default());
    let (b_addr, late_b_addr) = late_addr();
    // a leads shard 1, b shard 0: the opposite of the initial guess `servers[s % 2]`.
    let a = node(&a_log, move |req| {
        if shard_of(req.body.resource(), 2) == 1 {
            vec![grant(req)]
        } else {
            vec![not_leader(req, late_b_addr.get().copied())]
        }
    });
    let a_addr = a.addr;
    let b = node(&b_log, move |req| {
        if shard_of(req.body.resource(), 2) == 0 {
            vec![grant(req)]
        } else {
            vec![not_leader(req, Some(a_addr))]
        }
    });
    b_addr.set(b.addr).unwrap();
    let client = client_of(&[&a, &b], |c| c.shards = 2);
    assert_eq!(client.leader_addr(&r0), a.addr);
    assert_eq!(client.leader_addr(&r1), b.addr);

    for _ in 0..3 {
        assert_eq!(client.release(&r0, "c"), Ok(1));
        assert_eq!(client.release(&r1, "c"), Ok(1));
    }
    assert_eq!(client.stats().redirects, 2, "one per shard");
    assert_eq!(client.leader_addr(&r0), b.addr);
    assert_eq!(client.leader_addr(&r1), a.addr);
    let granted = |log: &Seen, s: u32| seen(log).iter().filter(|e| shard_of(&e.3, 2) == s).count();
    assert_eq!((granted(&b_log, 0), granted(&a_log, 0)), (3, 1));
    assert_eq!((granted(&a_log, 1), granted(&b_log, 1)), (3, 1));
}

/// Discovery in the shell (spec §7.1.8): the first call asks the configured server for the
/// member table; a NOT_LEADER naming a node that is not a candidate reads the hinting
/// member's table again at once — no sooner than HINTED_REFRESH_INTERVAL_MIN after the last
/// round, long before REFRESH_INTERVAL_MIN (the limits themselves are
/// `core::call::discovery::tests`') — and the hinted leader, once listed, is redirected to.
#[test]
fn a_not_leader_naming_an_unknown_node_reads_the_hinting_members_table_at_once() {
    use udplock_protocol::{MemberEntries, MemberEntry, MembersReply, MembersRequest, SwimState};
    let leader_log = Seen::default();
    let leader = node(&leader_log, |req| vec![grant(req)]);
    let leader_addr = leader.addr;
    let members_asked = Arc::new(AtomicU64::new(0));
    let asked = Arc::clone(&members_asked);
    let self_addr: Arc<OnceLock<SocketAddr>> = Arc::default();
    let own = Arc::clone(&self_addr);
    // A node whose table lists only itself at first, and that sends every lock request on
    // to the leader, which it does not list (its table is stale); its second table lists
    // the leader too.
    let follower = FakeServer::spawn_raw(move |datagram| {
        let Some(bytes) = datagram else {
            return Vec::new();
        };
        if let Ok(req) = MembersRequest::decode(bytes) {
            let second = asked.fetch_add(1, Ordering::Relaxed) > 0;
            let entries = [
                MemberEntry {
                    id: 1,
                    incarnation: 0,
                    state: SwimState::Alive,
                    addr: *own.get().expect("set before the client starts"),
                },
                MemberEntry {
                    id: 2,
                    incarnation: 0,
                    state: SwimState::Alive,
                    addr: leader_addr,
                },
            ];
            let entries = if second { &entries[..] } else { &entries[..1] };
            let reply = MembersReply {
                session_id: req.session_id,
                request_id: req.request_id,
                attempt: req.attempt,
                status: Status::Ok,
                node_id: 1,
                members_total: entries.len() as u32,
                first_id: req.first_id,
                next_id: 0,
                entries: MemberEntries::from_slice(entries),
            };
            let mut buf = [0u8; DATAGRAM_LEN_MAX];
            let len = reply.encode(&mut buf).unwrap();
            return vec![buf[..len].to_vec()];
        }
        match Request::decode(bytes) {
            Ok(req) => vec![not_leader(&req, Some(leader_addr))],
            Err(_) => Vec::new(),
        }
    });
    self_addr.set(follower.addr).unwrap();
    let client = client_of(&[&follower], |c| c.request_timeout_ms = 300);
    let wait_for_asks = |n: u64| {
        let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
        while members_asked.load(Ordering::Relaxed) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "MEMBERS #{n} never came"
            );
            thread::sleep(StdDuration::from_millis(1));
        }
    };
    let started = std::time::Instant::now();
    // A hint to a node the client does not know is followed on the timer (spec §7.1.7 rule
    // 5.4): the leader's answer ends the call.
    assert_eq!(client.release("r", "c"), Ok(1));
    wait_for_asks(1);
    assert_eq!(seen(&leader_log).len(), 1);
    // Past the hinted interval (a lower bound, whatever the machine's speed) the next call
    // reads the hinting member's table, which lists the leader; the NOT_LEADER to that call
    // (the leader was not cached) is then followed at once, and the leader cached.
    let interval = std_duration(HINTED_REFRESH_INTERVAL_MIN);
    thread::sleep(interval.saturating_sub(started.elapsed()) + StdDuration::from_millis(10));
    assert_eq!(client.release("r", "c"), Ok(1));
    wait_for_asks(2);
    assert!(client.candidates().contains(&leader_addr));
    assert_eq!(client.release("r", "c"), Ok(1), "the leader's answer");
    assert_eq!(client.leader_addr("r"), leader_addr, "cached once known");
}

/// A MEMBERS_REPLY of node `node_id` to `request` (one page): `members` as (id, address),
/// every one alive.
fn members_reply(
    request: &udplock_protocol::MembersRequest,
    node_id: u64,
    members: &[(u64, SocketAddr)],
) -> Vec<u8> {
    use udplock_protocol::{MemberEntries, MemberEntry, MembersReply, SwimState};
    let entries: Vec<MemberEntry> = members
        .iter()
        .map(|&(id, addr)| MemberEntry {
            id,
            incarnation: 0,
            state: SwimState::Alive,
            addr,
        })
        .collect();
    let reply = MembersReply {
        session_id: request.session_id,
        request_id: request.request_id,
        attempt: request.attempt,
        status: Status::Ok,
        node_id,
        members_total: entries.len() as u32,
        first_id: request.first_id,
        next_id: 0,
        entries: MemberEntries::from_slice(&entries),
    };
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    let len = reply.encode(&mut buf).unwrap();
    buf[..len].to_vec()
}

/// Spec §7.1.8 rule 2 with §7.1.7 rule 5.3: a client given only a node that holds no
/// replica (a joined node: NOT_LEADER without a hint, for every shard) reaches the leader
/// within its FIRST call. The member table the call's discovery asked for lands while the
/// call is under way; the call's ring then holds the members, and the request (the same
/// session, request id and body) moves on along it to the leader.
#[test]
fn the_first_call_of_a_client_given_only_a_node_without_replicas_reaches_the_leader() {
    use udplock_protocol::MembersRequest;
    let (joined_log, leader_log) = (Seen::default(), Seen::default());
    let leader = node(&leader_log, |req| vec![grant(req)]);
    let leader_addr = leader.addr;
    let own: Arc<OnceLock<SocketAddr>> = Arc::default();
    let own_addr = Arc::clone(&own);
    let log = Arc::clone(&joined_log);
    // Node 2 joined node 1's cluster: it lists both, leads nothing, knows no leader.
    let joined = FakeServer::spawn_raw(move |datagram| {
        let Some(bytes) = datagram else {
            return Vec::new();
        };
        if let Ok(ask) = MembersRequest::decode(bytes) {
            let me = *own_addr.get().expect("set before the client starts");
            return vec![members_reply(&ask, 2, &[(1, leader_addr), (2, me)])];
        }
        match Request::decode(bytes) {
            Ok(req) => {
                let resource = req.body.resource().to_vec();
                log.lock()
                    .unwrap()
                    .push((req.session_id, req.request_id, req.attempt, resource));
                vec![not_leader(&req, None)]
            }
            Err(_) => Vec::new(),
        }
    });
    own.set(joined.addr).unwrap();
    let client = client_of(&[&joined], |_| {});
    let lease = client
        .acquire("r", "c", 2_000, None)
        .expect("the first call is granted by the leader");
    assert_eq!(lease.fencing_token, 5);
    let (j, l) = (seen(&joined_log), seen(&leader_log));
    assert!(!j.is_empty(), "the call started at the configured node");
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!((l[0].0, l[0].1), (j[0].0, j[0].1), "the same request");
    assert!(
        l[0].2 as usize >= j.len(),
        "later attempts of the one request"
    );
    assert_eq!(client.candidates(), vec![leader.addr, joined.addr]);
    assert_eq!(client.leader_addr("r"), leader.addr);
}
