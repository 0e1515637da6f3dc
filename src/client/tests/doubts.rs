//! Releases in doubt (spec §7.1.5): settled before the lock is touched again, replayed
//! with the next attempt number, bounded.

use super::*;

/// Seed 353 of the lock-service simulator: a RELEASE the client gave up on, applied after
/// the same client's next ACQUIRE of the lock, freed the new hold behind its back. Now the
/// doubtful release is sent again (same ids) and answered before the next request on
/// that lock leaves; other locks are not held up.
#[test]
fn an_unanswered_release_is_settled_before_the_lock_is_touched_again() {
    let log = Seen::default();
    let silent = Arc::new(AtomicBool::new(true));
    let silent_flag = Arc::clone(&silent);
    let server = node(&log, move |req| {
        if silent_flag.load(Ordering::Relaxed) && matches!(req.body, RequestBody::Release { .. }) {
            Vec::new()
        } else {
            vec![grant(req)]
        }
    });
    let client = client_of(&[&server], |c| {
        c.request_timeout_ms = 250;
        c.retransmit = fixed_rto(Duration::from_millis(20));
    });
    client.acquire("r", "c", 0, None).unwrap();
    assert_eq!(client.release("r", "c"), Err(LockError::Unavailable));
    let release_id = seen(&log).last().unwrap().1;
    // Another lock is not held up by the doubt.
    client.acquire("other", "c", 0, None).unwrap();
    // The doubtful release cannot be settled while the server stays silent: the next
    // acquire of the same lock is not sent at all, and says why.
    let before = seen(&log).len();
    assert_eq!(
        client.acquire("r", "c", 0, None),
        Err(LockError::ReleaseInDoubt)
    );
    let tried: Vec<_> = seen(&log)[before..].iter().map(|s| s.1).collect();
    assert!(
        !tried.is_empty() && tried.iter().all(|&id| id == release_id),
        "{tried:?}"
    );
    // Once the release is answered, the acquire goes out, after it.
    silent.store(false, Ordering::Relaxed);
    client.acquire("r", "c", 0, None).unwrap();
    let order: Vec<u64> = seen(&log).iter().map(|s| s.1).collect();
    let settled = order.iter().rposition(|&id| id == release_id).unwrap();
    assert!(order[settled + 1..].iter().all(|&id| id > release_id));
    assert!(
        !order[settled + 1..].is_empty(),
        "the acquire was never sent"
    );
}

/// Issue 7 item 7: a doubtful RELEASE sent again continues its attempt numbers (spec
/// §7.1.5, "next attempt"). The server executed the copy numbered k (its answer was lost)
/// and answers every later copy with that remembered answer, which echoes k: a replay
/// restarting at attempt 0 would drop it as answering a copy never sent (§7.1.4 rule 4),
/// and the lock would stay blocked although the server answers at once.
#[test]
fn a_doubtful_release_is_replayed_with_the_next_attempt_number() {
    let log = Seen::default();
    let executed_at: Arc<Mutex<Option<u16>>> = Arc::default();
    let answering = Arc::new(AtomicBool::new(false));
    let (executed, answer) = (Arc::clone(&executed_at), Arc::clone(&answering));
    let server = node(&log, move |req| match req.body {
        RequestBody::Release { .. } => {
            let mut executed = executed.lock().unwrap();
            if !answer.load(Ordering::Relaxed) {
                // Every copy is "executed" by the first to arrive in the lost-answer
                // world; record the highest, as if earlier ones were lost on the way.
                *executed = Some(req.attempt);
                return Vec::new();
            }
            let echo = executed.expect("a copy arrived before");
            vec![reply_to(req, Status::Ok, |r| r.attempt = echo)]
        }
        _ => vec![grant(req)],
    });
    let client = client_of(&[&server], |c| {
        c.request_timeout_ms = 250;
        c.retransmit = fixed_rto(Duration::from_millis(20));
    });
    client.acquire("r", "c", 0, None).unwrap();
    assert_eq!(client.release("r", "c"), Err(LockError::Unavailable));
    let release_id = seen(&log).last().unwrap().1;
    let k = executed_at.lock().unwrap().unwrap();
    assert!(k >= 3, "too few copies to show anything: {k}");
    answering.store(true, Ordering::Relaxed);
    client.acquire("r", "c", 0, None).unwrap();
    // Every copy of the release, the replay's included, in the order sent (loopback keeps
    // it): one sequence of attempt numbers, never starting again.
    let attempts: Vec<u16> = seen(&log)
        .iter()
        .filter(|s| s.1 == release_id)
        .map(|s| s.2)
        .collect();
    let expected: Vec<u16> = (0..attempts.len() as u16).collect();
    assert_eq!(attempts, expected, "the release's attempt numbers");
    assert!(
        attempts.len() > usize::from(k) + 1,
        "no replay: {attempts:?}"
    );
}

/// Issue 7 item 2: OVERLOADED is not remembered by the server, so a RELEASE answered only
/// OVERLOADED until its deadline may still take effect (a copy in flight). The caller is
/// not told "nothing changed", and the release is settled before the lock is touched again.
#[test]
fn a_release_answered_only_overloaded_is_a_doubt() {
    let log = Seen::default();
    let overloaded = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&overloaded);
    let server = node(&log, move |req| match req.body {
        RequestBody::Release { .. } if flag.load(Ordering::Relaxed) => {
            vec![reply_to(req, Status::Overloaded, |r| {
                r.hint = Hint::RetryAfter { ms: 1_000 }
            })]
        }
        _ => vec![grant(req)],
    });
    let client = client_of(&[&server], |c| c.request_timeout_ms = 150);
    client.acquire("r", "c", 0, None).unwrap();
    let error = client.release("r", "c").unwrap_err();
    assert!(!error.outcome_known(), "{error:?}");
    let release_id = seen(&log).last().unwrap().1;
    overloaded.store(false, Ordering::Relaxed);
    let before = seen(&log).len();
    client.acquire("r", "c", 0, None).unwrap();
    let ids: Vec<u64> = seen(&log)[before..].iter().map(|s| s.1).collect();
    assert_eq!(ids.first(), Some(&release_id), "settled first: {ids:?}");
    assert!(ids.last().is_some_and(|&id| id > release_id), "{ids:?}");
}

/// The table of doubts is bounded: once it holds [`DOUBTS_MAX`], a further RELEASE is
/// refused before anything is sent (it could not be remembered if it went unanswered).
#[test]
fn doubts_are_bounded() {
    let log = Seen::default();
    let server = node(&log, |_| Vec::new()); // hears everything, answers nothing
    let client = client_of(&[&server], |c| c.request_timeout_ms = 50);
    assert_eq!(client.release("r0", "c"), Err(LockError::Unavailable));
    {
        // Fill the table with doubts of other locks, as unanswered releases leave them.
        let mut doubts = lock(&client.doubts);
        let now = client.now();
        for i in 1..DOUBTS_MAX {
            let request = CallRequest {
                session_id: client.session_id,
                request_id: 1_000 + i as u64,
                msg_type: MessageType::Release,
                shard: 0,
                wait_ms: 0,
                ttl_ms: 0,
                tokens: 0,
                lease_ms_max: 1,
                sealed: false,
            };
            let timer = lock(&client.rtt).timer();
            let end = now + Duration::from_micros(1);
            let mut call = Call::new(now, request, timer, end, Duration::ZERO, &client.routes());
            call.handle_timeout(end, &client.routes());
            doubts.keep(format!("r{i}").as_bytes(), b"c", Vec::new(), call);
        }
        assert!(doubts.is_full());
    }
    assert_eq!(
        client.release("one-more", "c"),
        Err(LockError::Overloaded { retry_after_ms: 0 })
    );
    // (The copy would have left before the call returned; give the fake time to log it.)
    thread::sleep(StdDuration::from_millis(20));
    let sent = seen(&log).iter().filter(|e| e.3 == b"one-more").count();
    assert_eq!(sent, 0, "nothing was sent");
}
