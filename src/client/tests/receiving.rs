//! Receiving: forged and stray replies dropped, and many threads sharing one client (the
//! receiver hand-off, lanes).

use super::*;

#[test]
fn ignores_forged_and_stray_replies() {
    let server = FakeServer::spawn(|event| {
        let Event::Request(req, _) = event else {
            return Vec::new();
        };
        let good = reply_to(&req, Status::Ok, |r| {
            r.fencing_token = 7;
            r.lease_ms = 1_000;
        });
        let mut truncated = good.clone();
        truncated.truncate(40);
        let mut oversized = good.clone();
        oversized.resize(DATAGRAM_LEN_MAX + 1, 0);
        vec![
            reply_to(&req, Status::Ok, |r| {
                r.session_id ^= 1;
                r.fencing_token = 666;
            }),
            reply_to(&req, Status::Ok, |r| {
                r.request_id += 1_000;
                r.fencing_token = 667;
            }),
            reply_to(&req, Status::Ok, |r| {
                r.msg_type = MessageType::ReleaseReply;
                r.fencing_token = 668;
            }),
            b"garbage".to_vec(),
            truncated,
            oversized,
            good.clone(),
            good, // a duplicate of the good reply, after the operation ended
        ]
    });
    let client = client_for(&server, |_| {});
    let lease = client.acquire("r", "c", 0, None).unwrap();
    assert_eq!(lease.fencing_token, 7);
    assert_eq!(client.stats().dropped_datagrams, 6);
    // The late duplicate is dropped by the next operation's receiver.
    assert_eq!(client.acquire("r", "c", 0, None).unwrap().fencing_token, 7);
    assert!(client.stats().dropped_datagrams >= 7);
}

/// Many threads on one client; the fake answers in batches, in reverse order.
fn many_threads(edit: impl FnOnce(&mut ClientConfig)) {
    const THREADS: usize = 8;
    const OPS: usize = 200;
    let mut held: Vec<Vec<u8>> = Vec::new();
    // Lanes: a session never has two different requests outstanding at once. (A late
    // copy of a request already answered is not outstanding: it is a stale retransmit.)
    let mut outstanding: HashMap<u64, u64> = HashMap::new();
    let mut answered: std::collections::HashSet<(u64, u64)> = Default::default();
    let lanes_seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let lanes_log = Arc::clone(&lanes_seen);
    let server = FakeServer::spawn(move |event| {
        match event {
            Event::Request(req, _) => {
                if !answered.contains(&(req.session_id, req.request_id)) {
                    if let Some(&other) = outstanding.get(&req.session_id) {
                        assert_eq!(
                            other, req.request_id,
                            "two requests outstanding in one session"
                        );
                    }
                    outstanding.insert(req.session_id, req.request_id);
                }
                lanes_log.lock().unwrap().insert(req.session_id);
                let resource = req.body.resource();
                held.push(reply_to(&req, Status::Ok, |r| {
                    r.fencing_token = fnv(resource);
                    r.hold_count = resource.len() as u32;
                    r.lease_ms = 10_000;
                }));
                if held.len() < 4 {
                    return Vec::new();
                }
            }
            Event::Idle => {}
        }
        let mut out = std::mem::take(&mut held);
        out.reverse();
        // Answered: those sessions have nothing outstanding any more.
        for d in &out {
            let r = Reply::decode(d).unwrap();
            answered.insert((r.session_id, r.request_id));
            if outstanding.get(&r.session_id) == Some(&r.request_id) {
                outstanding.remove(&r.session_id);
            }
        }
        out
    });
    let client = client_for(&server, |c| {
        c.grace_ms = 5_000;
        edit(c);
    });
    thread::scope(|s| {
        for t in 0..THREADS {
            let client = &client;
            s.spawn(move || {
                for i in 0..OPS {
                    let resource = format!("thread-{t}/op-{i}");
                    let lease = client.try_acquire(&resource, "me", None).unwrap();
                    assert_eq!(lease.resource_id, resource);
                    assert_eq!(lease.fencing_token, fnv(resource.as_bytes()));
                    assert_eq!(lease.hold_count as usize, resource.len());
                }
            });
        }
    });
    assert!(lock(&client.pending).is_empty());
    let lanes = lanes_seen.lock().unwrap().len();
    assert!(
        (2..=THREADS).contains(&lanes),
        "{lanes} lanes for {THREADS} threads"
    );
}

#[test]
fn threads_sharing_one_client_get_their_own_replies() {
    many_threads(|_| {});
}

/// The same without retransmissions (every RTO is 5 s, longer than the test), so a lost
/// hand-off of the receiver role would show as a stuck thread, not be hidden by a resend.
#[test]
fn receiver_hand_off_needs_no_retransmission() {
    let five_s = Duration::from_millis(5_000);
    many_threads(|c| {
        c.retransmit = fixed_rto(five_s);
        c.grace_ms = 4_000;
    });
}
