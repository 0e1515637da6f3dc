//! One operation's copies and timers: retransmission, WAITING keepalives and deadlines,
//! OVERLOADED pauses, the deadline, and when a lease starts.

use super::*;

/// A queued acquire (WAITING) is kept alive at the paced interval, not retransmitted at
/// loss-recovery pace, and the final grant ends the wait; its lease counts from the latest
/// keepalive the server had seen when it granted. The fake server counts copies, not time,
/// so a slow machine only makes the wait longer: every bound below is a lower bound on
/// elapsed time, which load cannot break.
#[test]
fn waiting_switches_to_keepalives_until_the_grant() {
    /// Copies answered WAITING before the one that is granted.
    const WAITING_COPIES: usize = 5;
    let copies = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&copies);
    let server = FakeServer::spawn(move |event| match event {
        Event::Request(req, _) => {
            let mut log = log.lock().unwrap();
            log.push(req.attempt);
            if log.len() <= WAITING_COPIES {
                // 160 ms lease: keepalives every 10 ms.
                vec![reply_to(&req, Status::Waiting, |r| {
                    r.lease_ms = 160;
                    r.waiter_count = 3;
                })]
            } else {
                vec![reply_to(&req, Status::Ok, |r| {
                    r.flags = Flags::QUEUED;
                    r.fencing_token = 4;
                    r.hold_count = 1;
                    r.lease_ms = 160;
                })]
            }
        }
        Event::Idle => Vec::new(),
    });
    let client = client_for(&server, |_| {});
    let started = BootInstant::now();
    let lease = client.acquire("r", "c", 5_000, Some(160)).unwrap();
    let waited = started.elapsed();
    assert_eq!(lease.fencing_token, 4);
    // The granted copy is the sixth or later: five keepalive gaps of 10 ms (less 1 ms of
    // timer rounding each) at least. Loss-recovery pace (a 1 ms RTO, doubling) would have
    // sent six copies within 1 + 2 + 4 + 8 + 16 = 31 ms.
    assert!(waited >= StdDuration::from_millis(45), "{waited:?}");
    let copies = copies.lock().unwrap();
    assert!(copies.len() > WAITING_COPIES, "{copies:?}");
    assert!(copies.windows(2).all(|w| w[1] == w[0] + 1), "{copies:?}");
    // The lease is counted from the keepalive the grant answered (sent at least 45 ms
    // after the first copy), not from the first send: 45 + 160 * 0.99 > 200 ms.
    assert!(lease.valid_until > started + StdDuration::from_millis(200));
}

/// OVERLOADED with a retry-after hint is retried as the SAME request (same id, next
/// attempt), so a copy of it still in flight can never take effect beside a second one.
#[test]
fn overloaded_is_retried_as_the_same_request() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let server = FakeServer::spawn(move |event| {
        let Event::Request(req, _) = event else {
            return Vec::new();
        };
        let mut log = log.lock().unwrap();
        log.push((req.session_id, req.request_id, req.attempt));
        if log.len() <= 2 {
            return vec![reply_to(&req, Status::Overloaded, |r| {
                r.hint = Hint::RetryAfter { ms: 5 };
            })];
        }
        vec![reply_to(&req, Status::Ok, |r| r.hold_count = 1)]
    });
    let client = client_for(&server, |_| {});
    assert_eq!(client.release("r", "c"), Ok(1));
    let seen = seen.lock().unwrap();
    // At least the two refused copies and the granted one; more when the machine is so busy
    // that the retransmission timer fires before an answer comes back (each copy is the
    // same request all the same, which is the point).
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen
        .iter()
        .all(|&(s, r, _)| (s, r) == (seen[0].0, seen[0].1)));
    assert!(seen.windows(2).all(|w| w[1].2 > w[0].2), "{seen:?}");
}

/// A WAITING reply moves the deadline to its receipt + wait_ms + grace: the server's wait
/// started no later than that, so its final answer is still awaited (never a grant the
/// client gave up on before the server's own deadline).
#[test]
fn waiting_extends_the_deadline_to_the_servers_wait() {
    let mut first: Option<BootInstant> = None;
    let server = FakeServer::spawn(move |event| match event {
        Event::Request(req, at) => {
            let first = *first.get_or_insert(at);
            // The first copies are "lost" for 150 ms, as if the network dropped them.
            if at.duration_since(first) < StdDuration::from_millis(150) {
                return Vec::new();
            }
            if at.duration_since(first) < StdDuration::from_millis(300) {
                return vec![reply_to(&req, Status::Waiting, |r| {
                    r.lease_ms = 1_600;
                    r.waiter_count = 1;
                })];
            }
            vec![reply_to(&req, Status::Ok, |r| {
                r.flags = Flags::QUEUED;
                r.hold_count = 1;
                r.fencing_token = 3;
                r.lease_ms = 1_600;
            })]
        }
        Event::Idle => Vec::new(),
    });
    let client = client_for(&server, |c| c.grace_ms = 50);
    // Without the extension the client would give up at 200 + 50 ms.
    let lease = client.acquire("r", "c", 200, None).unwrap();
    assert_eq!(lease.fencing_token, 3);
}

#[test]
fn retransmits_with_same_request_id_and_next_attempt() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let server = FakeServer::spawn(move |event| {
        let Event::Request(req, _) = event else {
            return Vec::new();
        };
        let mut log = log.lock().unwrap();
        log.push((req.request_id, req.attempt));
        if log.len() <= 2 {
            return Vec::new(); // the first two copies are "lost"
        }
        vec![reply_to(&req, Status::Ok, |r| {
            r.fencing_token = 9;
            r.lease_ms = 1_000;
            r.hold_count = 1;
        })]
    });
    let client = client_for(&server, |_| {});
    let lease = client.acquire("r", "c", 0, None).unwrap();
    assert_eq!(lease.fencing_token, 9);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let id = seen[0].0;
    assert_eq!(seen, vec![(id, 0), (id, 1), (id, 2)]);
    assert_eq!(client.stats().retransmits, 2);
    // The next operation takes a fresh id.
    client.release("r", "c").unwrap();
}

#[test]
fn unavailable_at_the_deadline() {
    let server = FakeServer::spawn(|_| Vec::new()); // hears everything, answers nothing
    let client = client_for(&server, |c| {
        c.request_timeout_ms = 60;
        c.grace_ms = 40;
    });
    let start = BootInstant::now();
    assert_eq!(client.status("r"), Err(LockError::Unavailable));
    let took = start.elapsed();
    assert!(took >= StdDuration::from_millis(60), "{took:?}");
    // Ends at its deadline, not in a hang (a bound load cannot reach).
    assert!(took < StdDuration::from_millis(10_000), "{took:?}");
    assert!(client.stats().retransmits >= 3);

    let start = BootInstant::now();
    assert_eq!(
        client.acquire("r", "c", 20, None),
        Err(LockError::Unavailable)
    );
    let took = start.elapsed();
    assert!(took >= StdDuration::from_millis(60), "{took:?}");
    // Ends at its deadline, not in a hang (a bound load cannot reach).
    assert!(took < StdDuration::from_millis(10_000), "{took:?}");
}

#[test]
fn lease_counts_from_the_echoed_attempts_send_time() {
    let rto = Duration::from_millis(20);
    let received: Arc<Mutex<Vec<(u16, BootInstant)>>> = Arc::default();
    let log = Arc::clone(&received);
    let mut late_reply = None;
    let server = FakeServer::spawn(move |event| {
        let Event::Request(req, at) = event else {
            return Vec::new();
        };
        log.lock().unwrap().push((req.attempt, at));
        let grant = |r: &mut Reply<'_>| {
            r.lease_ms = 1_000;
            r.fencing_token = 1;
        };
        match (req.body.resource(), req.attempt) {
            // Attempt 0 is lost; attempt 1 is granted and answered.
            (b"lost-first", 0) => Vec::new(),
            (b"lost-first", _) => vec![reply_to(&req, Status::Ok, grant)],
            // Attempt 0 is granted but its answer is slow: it arrives after attempt 1 and
            // still echoes 0.
            (b"slow-answer", 0) => {
                late_reply = Some(reply_to(&req, Status::Ok, grant));
                Vec::new()
            }
            (b"slow-answer", _) => late_reply.take().into_iter().collect(),
            _ => Vec::new(),
        }
    });
    let client = client_for(&server, |c| {
        // The floor keeps every RTO at 20 ms or more, also after RTT samples, so the
        // send times of two copies are far apart.
        c.retransmit = RetransmitConfig {
            rto_initial: rto,
            rto_min: rto,
            rto_max: Duration::from_millis(100),
        };
    });
    let valid_ms = StdDuration::from_millis(990); // 1000 ms minus the 1% drift bound
    let tick = StdDuration::from_millis(1);

    let before = BootInstant::now();
    let lease = client.acquire("lost-first", "c", 0, None).unwrap();
    let start = lease.valid_until - valid_ms;
    let at1 = received.lock().unwrap()[1];
    assert_eq!(at1.0, 1);
    // Counted from the second copy: sent at least one RTO after the first, and before the
    // server received it.
    assert!(
        start + tick >= before + std_duration(rto),
        "{:?}",
        start - before
    );
    assert!(start <= at1.1);

    received.lock().unwrap().clear();
    let before = BootInstant::now();
    let lease = client.acquire("slow-answer", "c", 0, None).unwrap();
    let start = lease.valid_until - valid_ms;
    let at0 = received.lock().unwrap()[0];
    assert_eq!(at0.0, 0);
    // Counted from the first copy, not the second (sent 20 ms or more later).
    assert!(start + tick >= before);
    assert!(start <= at0.1);
    assert!(
        received.lock().unwrap().len() >= 2,
        "the reply came after attempt 1"
    );
}
