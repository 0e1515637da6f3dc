//! Scenario tests of the lock table, one rule of the spec's lock semantics (spec/client-protocol.md §6) each.

use std::net::{Ipv4Addr, SocketAddr};

use super::*;

const S1: u64 = 0x5e55_0001;
const S2: u64 = 0x5e55_0002;
const S3: u64 = 0x5e55_0003;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn ms(ms: u64) -> Instant {
    Instant::from_micros(ms * 1_000)
}

fn acquire<'a>(resource: &'a str, client: &'a str, wait_ms: u32, ttl_ms: u32) -> RequestBody<'a> {
    RequestBody::Acquire {
        resource: resource.as_bytes(),
        client: client.as_bytes(),
        wait_ms,
        ttl_ms,
    }
}

fn release<'a>(resource: &'a str, client: &'a str) -> RequestBody<'a> {
    RequestBody::Release {
        resource: resource.as_bytes(),
        client: client.as_bytes(),
    }
}

fn renew<'a>(resource: &'a str, client: &'a str, ttl_ms: u32) -> RequestBody<'a> {
    RequestBody::Renew {
        resource: resource.as_bytes(),
        client: client.as_bytes(),
        ttl_ms,
    }
}

fn status(resource: &str) -> RequestBody<'_> {
    RequestBody::Status {
        resource: resource.as_bytes(),
    }
}

fn configure(resource: &str, default_ttl_ms: u32) -> RequestBody<'_> {
    RequestBody::Configure {
        resource: resource.as_bytes(),
        default_ttl_ms,
    }
}

/// A table, a clock in milliseconds, and a request id counter per test.
struct Harness {
    /// The length of every datagram sent (spec §2.2): unless a test changes it, that of a
    /// STATUS padded as the spec asks (§2.2 rule 4), which pays for any holder's id and for
    /// a WAITING and a final answer.
    datagram_len: u16,
    table: LockTable,
    now: Instant,
    request_last: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Config::default())
    }

    fn with(config: Config) -> Harness {
        Harness {
            datagram_len: udplock_protocol::STATUS_REQUEST_LEN as u16,
            table: LockTable::new(config),
            now: Instant::ZERO,
            request_last: 0,
        }
    }

    fn drain(&mut self) -> Vec<Reply> {
        let replies = std::iter::from_fn(|| self.table.poll_reply()).collect();
        self.table.check_all();
        replies
    }

    /// Moves the clock to `at_ms` and fires due timers.
    fn at(&mut self, at_ms: u64) -> Vec<Reply> {
        self.now = ms(at_ms);
        self.table.handle_timeout(self.now);
        self.drain()
    }

    /// Sends one copy of request (session, request) from `port`; returns every reply produced.
    fn send(
        &mut self,
        session: u64,
        request: u64,
        attempt: u16,
        port: u16,
        command: RequestBody<'_>,
    ) -> Vec<Reply> {
        let request = Request {
            id: RequestId { session, request },
            attempt,
            reply_to: addr(port),
            body: command,
            datagram_len: self.datagram_len,
        };
        self.table.handle_request(self.now, request);
        self.drain()
    }

    /// Sends a new request; returns its id and every reply produced.
    fn new_request(&mut self, session: u64, command: RequestBody<'_>) -> (RequestId, Vec<Reply>) {
        self.request_last += 1;
        let request = self.request_last;
        let replies = self.send(session, request, 0, 1000, command);
        (RequestId { session, request }, replies)
    }

    /// Sends a new request that must be answered at once, alone; returns the answer.
    fn call(&mut self, session: u64, command: RequestBody<'_>) -> Answer {
        let (id, replies) = self.new_request(session, command);
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0].id, id);
        assert_eq!(replies[0].kind, command.kind());
        replies[0].answer
    }

    /// Sends a new request answered at once; returns its answer and the replies to queued
    /// acquires it caused (a release hands the lock on), in order.
    fn call_with_grants(&mut self, session: u64, command: RequestBody<'_>) -> (Answer, Vec<Reply>) {
        let (id, replies) = self.new_request(session, command);
        let (own, grants): (Vec<Reply>, Vec<Reply>) = replies.into_iter().partition(|r| r.id == id);
        assert_eq!(own.len(), 1, "{own:?}");
        (own[0].answer, grants)
    }

    /// Sends an acquire that must be queued (answered WAITING alone); returns its id.
    fn queue(&mut self, session: u64, command: RequestBody<'_>) -> RequestId {
        let (id, replies) = self.new_request(session, command);
        let waiting = waiting(&replies);
        assert_eq!(waiting.id, id);
        id
    }
}

/// The one reply in `replies`, which must be a WAITING (queued, not a final answer).
fn waiting(replies: &[Reply]) -> Reply {
    assert_eq!(replies.len(), 1, "expected one WAITING, got {replies:?}");
    let r = replies[0];
    assert_eq!(r.answer.status, Status::Waiting, "{r:?}");
    assert_eq!(r.kind, RequestKind::Acquire);
    assert!(!r.answer.queued && r.answer.fencing_token == 0 && r.answer.hold_count == 0);
    assert!(r.answer.lease_ms > 0 && r.answer.waiter_count > 0, "{r:?}");
    r
}

fn ok(answer: Answer) -> Answer {
    assert_eq!(answer.status, Status::Ok, "{answer:?}");
    answer
}

#[test]
fn reentrant_acquire_three_times_frees_after_the_third_release() {
    let mut h = Harness::new();
    let first = ok(h.call(S1, acquire("r", "a", 0, 0)));
    assert_eq!(
        (first.hold_count, first.lease_ms, first.queued),
        (1, 30_000, false)
    );
    for count in 2..=3 {
        let again = ok(h.call(S1, acquire("r", "a", 0, 0)));
        assert_eq!(again.hold_count, count);
        assert_eq!(
            again.fencing_token, first.fencing_token,
            "re-entry keeps the token"
        );
    }
    for remaining in [2, 1] {
        let released = ok(h.call(S1, release("r", "a")));
        assert_eq!(released.hold_count, remaining);
        assert_eq!(released.fencing_token, first.fencing_token);
        assert_eq!(
            h.call(S2, acquire("r", "b", 0, 0)).status,
            Status::LockAcquisitionTimeout
        );
    }
    assert_eq!(ok(h.call(S1, release("r", "a"))).hold_count, 0);
    assert_eq!(
        h.table.stats().resources,
        0,
        "a free, unconfigured resource is forgotten"
    );
    let b = ok(h.call(S2, acquire("r", "b", 0, 0)));
    assert!(b.fencing_token > first.fencing_token);
}

#[test]
fn waiters_are_granted_in_fifo_order() {
    let mut h = Harness::new();
    let holder = ok(h.call(S1, acquire("r", "a", 0, 0)));
    let waiting: Vec<(RequestId, &str)> = ["b", "c", "d"]
        .into_iter()
        .map(|client| (h.queue(S2, acquire("r", client, 10_000, 0)), client))
        .collect();
    assert_eq!(h.table.stats().waiters, 3);
    let mut token_last = holder.fencing_token;
    let mut holder_client = "a";
    for (id, client) in waiting {
        let (released, grants) = h.call_with_grants(S1, release("r", holder_client));
        ok(released);
        assert_eq!(grants.len(), 1, "{grants:?}");
        let grant = grants[0];
        assert_eq!(grant.id, id, "granted in arrival order");
        assert!(grant.answer.queued);
        assert!(grant.answer.fencing_token > token_last);
        token_last = grant.answer.fencing_token;
        holder_client = client;
    }
    assert_eq!(h.table.stats().waiters, 0);
}

#[test]
fn expiry_frees_and_grants_the_next_waiter_with_a_fresh_token() {
    let mut h = Harness::new();
    let first = ok(h.call(S1, acquire("r", "a", 0, 100)));
    let id = h.queue(S2, acquire("r", "b", 1_000, 50));
    assert!(h.at(99).is_empty(), "the lease lasts 100 ms");
    let replies = h.at(100);
    assert_eq!(replies.len(), 1);
    let grant = replies[0];
    assert_eq!(
        (grant.id, grant.to, grant.kind),
        (id, addr(1000), RequestKind::Acquire)
    );
    let answer = ok(grant.answer);
    assert!(answer.queued);
    assert!(answer.fencing_token > first.fencing_token);
    assert_eq!((answer.hold_count, answer.lease_ms), (1, 50));
    // The old holder lost it entirely.
    assert_eq!(h.call(S1, release("r", "a")).status, Status::LockNotHeld);
    // The new lease is counted from the grant: it ends at 150 ms.
    assert_eq!(h.table.poll_timeout(), Some(ms(150)));
}

/// Spec §2.2 rule 5: a STATUS_REPLY (76 bytes + the holder id) is never longer than the STATUS
/// datagram; the holder id is left out, with HOLDER_TRUNCATED, when it does not fit.
/// A resource created in the ids buffer of one forgotten just before (`ids_spare`) holds its
/// own ids, and a holder handed the lock in place (`set_holder`) is named, not the previous.
#[test]
fn reused_id_buffers_hold_the_new_ids() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r1", "worker-1", 0, 0)));
    ok(h.call(S1, release("r1", "worker-1")));
    assert!(!h.table.knows(b"r1"));
    ok(h.call(S2, acquire("r2", "worker-2", 0, 0)));
    assert!(h.table.knows(b"r2") && !h.table.knows(b"r1"));
    let (_, replies) = h.new_request(S1, status("r2"));
    assert_eq!(replies[0].holder.as_slice(), b"worker-2");
    // A waiter with an id of the holder's length takes over the holder's bytes.
    h.queue(S1, acquire("r2", "worker-3", 1_000, 0));
    let (_, grants) = h.call_with_grants(S2, release("r2", "worker-2"));
    assert_eq!(ok(grants[0].answer).hold_count, 1);
    let (_, replies) = h.new_request(S1, status("r2"));
    assert_eq!(replies[0].holder.as_slice(), b"worker-3");
    assert_eq!(
        h.table.holder_of_token(replies[0].answer.fencing_token),
        Some(&b"worker-3"[..])
    );
}

#[test]
fn status_names_the_holder_only_within_its_request() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "worker-7", 0, 0)));
    for (len, named) in [(331, true), (84, true), (83, false), (76, false)] {
        h.datagram_len = len;
        let (_, replies) = h.new_request(S2, status("r"));
        let reply = replies[0];
        assert_eq!(ok(reply.answer).hold_count, 1);
        let holder: &[u8] = if named { b"worker-7" } else { b"" };
        assert_eq!(
            (reply.holder.as_slice(), reply.holder_truncated),
            (holder, !named),
            "{len} bytes"
        );
    }
    // A free lock has no holder to leave out: never HOLDER_TRUNCATED.
    h.datagram_len = 76;
    let (_, replies) = h.new_request(S2, status("free"));
    assert!(!replies[0].holder_truncated);
}

#[test]
fn a_late_timeout_call_hands_the_lock_over_at_the_expiry_time() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 100)));
    h.queue(S2, acquire("r", "b", 1_000, 50));
    // Called 30 ms late: b was granted at 100 ms, so 20 ms of its 50 ms lease are left.
    let replies = h.at(130);
    assert_eq!(replies.len(), 1);
    let state = ok(h.call(S3, status("r")));
    assert_eq!(state.lease_ms, 20);
    // Called so late that b's lease also ended: the lock is free and forgotten.
    h.at(500);
    assert_free(ok(h.call(S3, status("r"))));
}

#[test]
fn waiter_deadline_answers_lock_acquisition_timeout() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    let long = h.queue(S2, acquire("r", "b", 500, 0));
    let short = h.queue(S2, acquire("r", "c", 200, 0));
    assert!(h.at(199).is_empty());
    // The short waiter, behind the long one, leaves from the middle of the queue.
    let replies = h.at(200);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].id, short);
    assert_eq!(replies[0].answer.status, Status::LockAcquisitionTimeout);
    assert!(replies[0].answer.queued);
    assert_eq!(ok(h.call(S3, status("r"))).waiter_count, 1);
    let replies = h.at(500);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].id, long);
    assert_eq!(replies[0].answer.status, Status::LockAcquisitionTimeout);
    assert_eq!(h.table.stats().waiters, 0);
    // wait_ms = 0 never queues.
    assert_eq!(
        h.call(S2, acquire("r", "d", 0, 0)).status,
        Status::LockAcquisitionTimeout
    );
}

#[test]
fn a_deadline_at_the_expiry_instant_times_out_rather_than_being_granted() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 100)));
    let waiter = h.queue(S2, acquire("r", "b", 100, 0));
    let replies = h.at(100);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].id, waiter);
    assert_eq!(replies[0].answer.status, Status::LockAcquisitionTimeout);
    assert_eq!(h.table.stats().resources, 0);
}

#[test]
fn fencing_tokens_increase_across_forget_and_recreate() {
    let mut h = Harness::new();
    let mut token_last = 0;
    for round in 0..5 {
        let grant = ok(h.call(S1, acquire("r", "a", 0, 0)));
        assert!(grant.fencing_token > token_last, "round {round}");
        token_last = grant.fencing_token;
        // Another resource in between takes tokens from the same counter.
        let other = ok(h.call(S1, acquire("other", "a", 0, 0)));
        assert!(other.fencing_token > token_last);
        ok(h.call(S1, release("r", "a")));
        ok(h.call(S1, release("other", "a")));
        assert_eq!(h.table.stats().resources, 0, "both forgotten");
    }
    assert_eq!(token_last, 9, "one counter: starts at 1, +1 per new hold");
    assert_eq!(h.table.stats().fencing_token_last, 10);
}

#[test]
fn duplicate_acquire_returns_the_first_answer_without_a_second_effect() {
    let mut h = Harness::new();
    let first = h.send(S1, 7, 0, 1000, acquire("r", "a", 0, 0));
    h.at(5);
    let again = h.send(S1, 7, 3, 2000, acquire("r", "a", 0, 0));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].answer, first[0].answer);
    assert_eq!(
        again[0].attempt, 0,
        "the attempt the answer was produced for"
    );
    assert_eq!(again[0].to, addr(2000), "to the latest address");
    assert_eq!(
        ok(h.call(S2, status("r"))).hold_count,
        1,
        "not re-entered twice"
    );
}

#[test]
fn duplicate_release_and_renew_return_the_first_answer() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 1_000)));
    ok(h.call(S1, acquire("r", "a", 0, 1_000)));
    let released = h.send(S1, 50, 0, 1000, release("r", "a"));
    assert_eq!(released[0].answer.hold_count, 1);
    let again = h.send(S1, 50, 1, 1000, release("r", "a"));
    assert_eq!(again[0].answer, released[0].answer);
    assert_eq!(ok(h.call(S2, status("r"))).hold_count, 1, "released once");

    h.at(400);
    let renewed = h.send(S1, 60, 0, 1000, renew("r", "a", 2_000));
    assert_eq!(renewed[0].answer.lease_ms, 2_000);
    h.at(900);
    let again = h.send(S1, 60, 1, 1000, renew("r", "a", 2_000));
    assert_eq!(again[0].answer, renewed[0].answer);
    assert_eq!(
        ok(h.call(S2, status("r"))).lease_ms,
        1_500,
        "not renewed again at 900 ms"
    );
}

#[test]
fn duplicate_of_a_timed_out_acquire_never_requeues() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    waiting(&h.send(S2, 9, 0, 1000, acquire("r", "b", 100, 0)));
    let timed_out = h.at(100);
    assert_eq!(timed_out[0].answer.status, Status::LockAcquisitionTimeout);
    let again = h.send(S2, 9, 4, 1000, acquire("r", "b", 100, 0));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].answer, timed_out[0].answer);
    assert!(again[0].answer.queued);
    assert_eq!(h.table.stats().waiters, 0);
    // Even once the lock is free, the old request id is not executed.
    ok(h.call(S1, release("r", "a")));
    let again = h.send(S2, 9, 5, 1000, acquire("r", "b", 100, 0));
    assert_eq!(again[0].answer.status, Status::LockAcquisitionTimeout);
    assert_eq!(h.table.stats().held, 0);
}

#[test]
fn duplicate_of_a_queued_acquire_updates_address_and_attempt_and_is_granted_once() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    let first = waiting(&h.send(S2, 3, 0, 1000, acquire("r", "b", 5_000, 0)));
    assert_eq!(
        (first.to, first.attempt, first.answer.lease_ms),
        (addr(1000), 0, 30_000)
    );
    // A keepalive is told WAITING again, at its own address, echoing its attempt.
    let keepalive = waiting(&h.send(S2, 3, 2, 2000, acquire("r", "b", 5_000, 0)));
    assert_eq!((keepalive.to, keepalive.attempt), (addr(2000), 2));
    // An older copy arriving late moves the address but not the attempt back.
    let late = waiting(&h.send(S2, 3, 1, 3000, acquire("r", "b", 5_000, 0)));
    assert_eq!((late.to, late.attempt), (addr(3000), 2));
    assert_eq!(h.table.stats().waiters, 1);
    let (released, grants) = h.call_with_grants(S1, release("r", "a"));
    ok(released);
    assert_eq!(grants.len(), 1);
    let grant = grants[0];
    assert_eq!(
        grant.id,
        RequestId {
            session: S2,
            request: 3
        }
    );
    assert_eq!((grant.to, grant.attempt), (addr(3000), 2));
    assert_eq!(ok(h.call(S3, status("r"))).hold_count, 1);
    let again = h.send(S2, 3, 3, 4000, acquire("r", "b", 5_000, 0));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].answer, grant.answer);
    assert_eq!((again[0].to, again[0].attempt), (addr(4000), 2));
    assert_eq!(ok(h.call(S3, status("r"))).hold_count, 1, "granted once");
}

#[test]
fn a_request_id_reused_for_another_operation_is_refused() {
    let mut h = Harness::new();
    ok(h.send(S1, 1, 0, 1000, acquire("r", "a", 0, 0))[0].answer);
    let reused = h.send(S1, 1, 0, 1000, release("r", "a"));
    assert_eq!(reused[0].answer.status, Status::InvalidArgument);
    assert_eq!(ok(h.call(S2, status("r"))).hold_count, 1);
}

#[test]
fn request_below_the_window_gets_request_expired() {
    let config = Config {
        answers_per_session_max: 3,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    for request in 1..=4 {
        ok(h.send(S1, request, 0, 1000, configure("r", 1_000 + request as u32))[0].answer);
    }
    assert_eq!(h.table.stats().answers_remembered, 3);
    // Request 1 was evicted: its outcome is unknown and it is not run again.
    let expired = h.send(S1, 1, 1, 1000, configure("r", 1_001));
    assert_eq!(expired[0].answer.status, Status::RequestExpired);
    assert_eq!(ok(h.call(S2, configure("r", 0))).lease_ms, 0);
    // Ids 2..=4 are still remembered.
    assert_eq!(
        h.send(S1, 2, 1, 1000, configure("r", 1))[0].answer.lease_ms,
        1_002
    );
    // Another session's window is its own.
    ok(h.send(S3, 1, 0, 1000, configure("q", 5))[0].answer);
}

#[test]
fn resources_max_gives_overloaded_with_a_retry_hint() {
    let config = Config {
        resources_max: 2,
        retry_after_ms: 25,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    ok(h.call(S1, acquire("r1", "a", 0, 0)));
    ok(h.call(S1, configure("r2", 100)));
    let refused = h.call(S1, acquire("r3", "a", 0, 0));
    assert_eq!(
        (refused.status, refused.retry_after_ms),
        (Status::Overloaded, 25)
    );
    assert_eq!(h.call(S1, configure("r3", 100)).status, Status::Overloaded);
    // Known resources still work, and freeing one makes room.
    ok(h.call(S1, acquire("r2", "a", 0, 0)));
    ok(h.call(S1, configure("r2", 0)));
    ok(h.call(S1, release("r2", "a")));
    ok(h.call(S1, acquire("r3", "a", 0, 0)));
}

#[test]
fn an_overloaded_request_is_not_remembered_and_may_be_retried() {
    let config = Config {
        resources_max: 1,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    ok(h.call(S1, acquire("r1", "a", 0, 0)));
    let refused = h.send(S2, 1, 0, 1000, acquire("r2", "b", 0, 0));
    assert_eq!(refused[0].answer.status, Status::Overloaded);
    ok(h.call(S1, release("r1", "a")));
    let retried = h.send(S2, 1, 1, 1000, acquire("r2", "b", 0, 0));
    assert_eq!(ok(retried[0].answer).hold_count, 1);
}

#[test]
fn waiters_per_resource_max_and_waiters_max_give_overloaded() {
    let config = Config {
        waiters_per_resource_max: 2,
        waiters_max: 3,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    ok(h.call(S1, acquire("q", "a", 0, 0)));
    h.queue(S2, acquire("r", "b", 1_000, 0));
    h.queue(S2, acquire("r", "c", 1_000, 0));
    assert_eq!(
        h.call(S2, acquire("r", "d", 1_000, 0)).status,
        Status::Overloaded
    );
    h.queue(S2, acquire("q", "b", 1_000, 0));
    assert_eq!(
        h.call(S2, acquire("q", "c", 1_000, 0)).status,
        Status::Overloaded
    );
    assert_eq!(h.table.stats().waiters, 3);
    // The holder's own re-entry is not a waiter.
    ok(h.call(S1, acquire("r", "a", 1_000, 0)));
}

#[test]
fn holds_per_lock_max_gives_hold_limit_exceeded() {
    let config = Config {
        holds_per_lock_max: 2,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    assert_eq!(
        h.call(S1, acquire("r", "a", 0, 0)).status,
        Status::HoldLimitExceeded
    );
    assert_eq!(ok(h.call(S2, status("r"))).hold_count, 2);
}

#[test]
fn sessions_max_gives_overloaded_to_a_new_session_only() {
    let config = Config {
        sessions_max: 2,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    ok(h.call(S2, acquire("q", "b", 0, 0)));
    assert_eq!(
        h.call(S3, acquire("x", "c", 0, 0)).status,
        Status::Overloaded
    );
    assert_eq!(h.table.stats().sessions, 2);
    // STATUS keeps no session state, so it is served anyway.
    ok(h.call(S3, status("r")));
    ok(h.call(S1, release("r", "a")));
}

#[test]
fn answers_per_session_max_also_bounds_queued_requests() {
    let config = Config {
        answers_per_session_max: 2,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    h.queue(S2, acquire("r", "b", 1_000, 0));
    h.queue(S2, acquire("r", "c", 1_000, 0));
    assert_eq!(
        h.call(S2, acquire("r", "d", 1_000, 0)).status,
        Status::Overloaded
    );
    assert_eq!(h.call(S2, status("r")).waiter_count, 2);
}

#[test]
fn arguments_out_of_range_give_invalid_argument() {
    let config = Config::default();
    let mut h = Harness::with(config.clone());
    let long = "x".repeat(ID_LEN_MAX + 1);
    let longest = "x".repeat(ID_LEN_MAX);
    let invalid = [
        acquire("", "a", 0, 0),
        acquire("r", "", 0, 0),
        acquire(&long, "a", 0, 0),
        acquire("r", &long, 0, 0),
        acquire("r", "a", config.wait_ms_max + 1, 0),
        acquire("r", "a", 0, config.ttl_ms_max + 1),
        renew("r", "a", config.ttl_ms_max + 1),
        release("r", ""),
        status(""),
        configure("r", config.ttl_ms_max + 1),
    ];
    for command in invalid {
        assert_eq!(
            h.call(S1, command).status,
            Status::InvalidArgument,
            "{command:?}"
        );
    }
    assert_eq!(
        h.send(0, 1, 0, 1000, status("r"))[0].answer.status,
        Status::InvalidArgument
    );
    assert_eq!(
        h.send(S1, 0, 0, 1000, status("r"))[0].answer.status,
        Status::InvalidArgument
    );
    assert_eq!(
        h.table.stats(),
        Stats::default(),
        "nothing changed, not even a session"
    );
    let grant = ok(h.call(
        S1,
        acquire(&longest, &longest, config.wait_ms_max, config.ttl_ms_max),
    ));
    assert_eq!(grant.lease_ms, config.ttl_ms_max);
    let state = ok(h.call(S1, status(&longest)));
    assert_eq!(state.lease_ms, config.ttl_ms_max);
    let holder = h.send(S1, 999, 0, 1000, status(&longest))[0].holder;
    assert_eq!(holder.as_slice(), longest.as_bytes());
}

#[test]
fn an_idle_session_is_forgotten() {
    let config = Config::default();
    let idle_ms = u64::from(config.session_idle_ms);
    let mut h = Harness::with(config);
    h.send(S1, 1, 0, 1000, acquire("r", "a", 0, 0));
    h.at(1_000);
    h.send(S1, 2, 0, 1000, release("r", "a"));
    assert_eq!(h.table.poll_timeout(), Some(ms(1_000 + idle_ms)));
    h.at(idle_ms + 999);
    assert_eq!(h.table.stats().sessions, 1, "activity at 1 s counts");
    h.at(idle_ms + 1_000);
    assert_eq!(h.table.stats().sessions, 0);
    assert_eq!(h.table.stats().answers_remembered, 0);
    assert_eq!(h.table.poll_timeout(), None);
    // Forgotten: request 1 now runs as new.
    ok(h.send(S1, 1, 0, 1000, acquire("r", "a", 0, 0))[0].answer);
    assert_eq!(ok(h.call(S2, status("r"))).hold_count, 1);
}

/// Spec §6.1: whoever does not hold a lock gets LOCK_NOT_HELD from RELEASE and RENEW, whether
/// another client holds it, it is free, or the server has forgotten it; STATUS of a lock
/// nobody holds is an ordinary answer saying "free". Only clearing the configuration of a
/// resource the server does not know is RESOURCE_DOES_NOT_EXIST.
#[test]
fn without_the_lock_release_and_renew_are_not_held_and_status_says_free() {
    let mut h = Harness::new();
    // Never known.
    assert_eq!(h.call(S1, release("r", "a")).status, Status::LockNotHeld);
    assert_eq!(h.call(S1, renew("r", "a", 0)).status, Status::LockNotHeld);
    assert_free(ok(h.call(S1, status("r"))));
    assert_eq!(h.table.stats().resources, 0, "asking creates nothing");
    // Held by another client.
    ok(h.call(S1, acquire("r", "a", 0, 100)));
    assert_eq!(h.call(S2, release("r", "b")).status, Status::LockNotHeld);
    assert_eq!(h.call(S2, renew("r", "b", 0)).status, Status::LockNotHeld);
    // Released twice: the second finds it free (and forgotten).
    ok(h.call(S1, release("r", "a")));
    assert_eq!(h.table.stats().resources, 0);
    assert_eq!(h.call(S1, release("r", "a")).status, Status::LockNotHeld);
    assert_free(ok(h.call(S1, status("r"))));
    // Expired: the holder's release and renew are refused the same way.
    ok(h.call(S1, acquire("r", "a", 0, 100)));
    h.at(100);
    assert_eq!(h.call(S1, renew("r", "a", 0)).status, Status::LockNotHeld);
    assert_eq!(h.call(S1, release("r", "a")).status, Status::LockNotHeld);
    assert_free(ok(h.call(S1, status("r"))));
    // A known but free resource (kept by its configuration).
    ok(h.call(S1, configure("r", 500)));
    assert_eq!(h.call(S1, release("r", "a")).status, Status::LockNotHeld);
    assert_eq!(h.call(S1, renew("r", "a", 0)).status, Status::LockNotHeld);
    assert_free(ok(h.call(S1, status("r"))));
    assert_eq!(h.table.stats().resources, 1);
    // Clearing the default of a resource the server does not know: there is nothing to clear.
    assert_eq!(
        h.call(S1, configure("unknown", 0)).status,
        Status::ResourceDoesNotExist
    );
    assert_eq!(h.table.stats().resources, 1, "and nothing is created");
}

/// The STATUS answer for a lock nobody holds (spec §5.3): no holder, hold count 0, token 0,
/// no lease, no waiters (a lock with waiters is always held).
fn assert_free(answer: Answer) {
    assert_eq!(
        answer,
        Answer::bare(Status::Ok),
        "a free lock: every field zero"
    );
}

#[test]
fn configured_default_ttl_is_used_by_acquire_and_can_be_cleared() {
    let mut h = Harness::new();
    assert_eq!(ok(h.call(S1, configure("r", 5_000))).lease_ms, 5_000);
    assert_eq!(
        h.table.stats().resources,
        1,
        "configuring makes a resource known"
    );
    assert_eq!(ok(h.call(S1, acquire("r", "a", 0, 0))).lease_ms, 5_000);
    ok(h.call(S1, release("r", "a")));
    assert_eq!(
        ok(h.call(S1, acquire("r", "a", 0, 700))).lease_ms,
        700,
        "the acquire's own wins"
    );
    ok(h.call(S1, release("r", "a")));
    assert_eq!(h.table.stats().resources, 1, "still configured");
    assert_eq!(ok(h.call(S1, configure("r", 0))).lease_ms, 0);
    assert_eq!(
        h.table.stats().resources,
        0,
        "free, unwaited and unconfigured: forgotten"
    );
    assert_eq!(
        ok(h.call(S1, acquire("r", "a", 0, 0))).lease_ms,
        30_000,
        "the server default"
    );
    // Clearing an unknown resource's default creates nothing (and says there was none).
    assert_eq!(
        h.call(S1, configure("unknown", 0)).status,
        Status::ResourceDoesNotExist
    );
    assert_eq!(h.table.stats().resources, 1);
}

#[test]
fn renew_extends_the_expiry() {
    let mut h = Harness::new();
    let grant = ok(h.call(S1, acquire("r", "a", 0, 100)));
    h.at(80);
    let renewed = ok(h.call(S1, renew("r", "a", 0)));
    assert_eq!(
        (renewed.lease_ms, renewed.fencing_token, renewed.hold_count),
        (100, grant.fencing_token, 1)
    );
    h.at(179);
    assert_eq!(ok(h.call(S2, status("r"))).lease_ms, 1);
    let renewed = ok(h.call(S1, renew("r", "a", 1_000)));
    assert_eq!(renewed.lease_ms, 1_000);
    h.at(1_178);
    assert_eq!(ok(h.call(S2, status("r"))).hold_count, 1);
    // A renew with 0 reuses the hold's current TTL, now 1000 ms.
    assert_eq!(ok(h.call(S1, renew("r", "a", 0))).lease_ms, 1_000);
    assert!(h.at(2_177).is_empty());
    h.at(2_178);
    assert_free(ok(h.call(S2, status("r"))));
}

#[test]
fn reentrant_acquire_extends_to_the_later_expiry() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 1_000)));
    ok(h.call(S1, acquire("r", "a", 0, 100)));
    assert_eq!(
        ok(h.call(S2, status("r"))).lease_ms,
        1_000,
        "never shortened"
    );
    h.at(500);
    ok(h.call(S1, acquire("r", "a", 0, 800)));
    assert_eq!(ok(h.call(S2, status("r"))).lease_ms, 800);
}

/// Issue 7 item 15: `renew --ttl-ms 5000` reported a 5 s lease while the hold had 29.99 s
/// left. A renewal or re-entry never shortens the lease (spec §6.4), so its answer reports
/// the lease the hold has from that instant: at least the TTL asked for, more if an earlier
/// grant promised more.
#[test]
fn renew_and_reentry_report_the_lease_the_hold_has() {
    let mut h = Harness::new();
    assert_eq!(
        ok(h.call(S1, acquire("r", "a", 0, 30_000))).lease_ms,
        30_000
    );
    h.at(8);
    let renewed = ok(h.call(S1, renew("r", "a", 5_000)));
    assert_eq!(
        renewed.lease_ms, 29_992,
        "the hold's lease, not the 5 s asked for"
    );
    assert_eq!(ok(h.call(S2, status("r"))).lease_ms, 29_992);
    let again = ok(h.call(S1, acquire("r", "a", 0, 100)));
    assert_eq!((again.hold_count, again.lease_ms), (2, 29_992));
    // Asking for more than is left extends it, and the answer is what was asked.
    h.at(20_000);
    assert_eq!(ok(h.call(S1, renew("r", "a", 15_000))).lease_ms, 15_000);
    assert_eq!(
        ok(h.call(S1, acquire("r", "a", 0, 16_000))).lease_ms,
        16_000
    );
    // The remembered answer keeps the lease of its own instant (the client counts it from
    // the send time of the copy it echoes).
    h.at(21_000);
    let again = h.send(S1, h.request_last, 1, 1000, acquire("r", "a", 0, 16_000));
    assert_eq!(again[0].answer.lease_ms, 16_000);
}

#[test]
fn status_reports_holder_count_token_lease_and_waiters() {
    let mut h = Harness::new();
    let grant = ok(h.call(S1, acquire("r", "alice", 0, 2_000)));
    ok(h.call(S1, acquire("r", "alice", 0, 0)));
    h.queue(S2, acquire("r", "bob", 1_000, 0));
    h.queue(S2, acquire("r", "carol", 500, 0));
    h.at(1);
    let (_, replies) = h.new_request(S3, status("r"));
    let reply = replies[0];
    assert_eq!(reply.kind, RequestKind::Status);
    assert_eq!(reply.holder.as_slice(), b"alice");
    let state = ok(reply.answer);
    assert_eq!(state.hold_count, 2);
    assert_eq!(state.fencing_token, grant.fencing_token);
    assert_eq!(state.lease_ms, 29_999, "remaining, rounded down");
    assert_eq!(state.waiter_count, 2);
    assert!(!state.queued);
    // Status is not remembered: a repeat sees the current state.
    h.at(500);
    let again = h.send(S3, replies[0].id.request, 1, 1000, status("r"));
    assert_eq!(again[0].answer.waiter_count, 1);
    // Remembered: the two acquires of S1 and the time-out of carol; no status.
    assert_eq!(h.table.stats().answers_remembered, 3);
    // A free, configured resource.
    ok(h.call(S1, configure("free", 10)));
    let (_, replies) = h.new_request(S3, status("free"));
    assert!(replies[0].holder.is_empty());
    assert_eq!(replies[0].answer, Answer::bare(Status::Ok));
}

#[test]
fn poll_timeout_is_the_earliest_due_timer() {
    let mut h = Harness::new();
    let idle_ms = u64::from(h.table.config().session_idle_ms);
    assert_eq!(h.table.poll_timeout(), None);
    ok(h.call(S1, acquire("r", "a", 0, 5_000)));
    assert_eq!(h.table.poll_timeout(), Some(ms(5_000)));
    h.queue(S2, acquire("r", "b", 2_000, 0));
    assert_eq!(h.table.poll_timeout(), Some(ms(2_000)));
    ok(h.call(S1, acquire("q", "a", 0, 1_000)));
    assert_eq!(h.table.poll_timeout(), Some(ms(1_000)));
    ok(h.call(S1, release("q", "a")));
    assert_eq!(
        h.table.poll_timeout(),
        Some(ms(2_000)),
        "a released hold's timer is gone"
    );
    h.at(2_000);
    assert_eq!(h.table.poll_timeout(), Some(ms(5_000)));
    ok(h.call(S1, release("r", "a")));
    // Only sessions are left: S2's last request was at 0.
    assert_eq!(h.table.poll_timeout(), Some(ms(idle_ms)));
}

#[test]
fn hand_off_grants_the_new_holders_queued_acquires_too() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    let b1 = h.queue(S2, acquire("r", "b", 1_000, 0));
    let b2 = h.queue(S2, acquire("r", "b", 1_000, 400));
    let c = h.queue(S3, acquire("r", "c", 1_000, 0));
    let b3 = h.queue(S2, acquire("r", "b", 1_000, 0));
    let (released, grants) = h.call_with_grants(S1, release("r", "a"));
    assert_eq!(ok(released).hold_count, 0);
    let granted: Vec<(RequestId, u32)> =
        grants.iter().map(|r| (r.id, r.answer.hold_count)).collect();
    assert_eq!(
        granted,
        [(b1, 1), (b2, 2)],
        "c is not b: b3 waits behind it"
    );
    assert_eq!(
        grants[0].answer.fencing_token,
        grants[1].answer.fencing_token
    );
    // The re-entry asked for 400 ms, but the hold has b's 30 s from the same instant: the
    // answer reports the lease the hold has (spec §6.4).
    assert_eq!(grants[1].answer.lease_ms, 30_000);
    let state = ok(h.call(S3, status("r")));
    assert_eq!((state.hold_count, state.waiter_count), (2, 2));
    ok(h.call(S2, release("r", "b")));
    let (_, grants) = h.call_with_grants(S2, release("r", "b"));
    assert_eq!(grants[0].id, c);
    let (_, grants) = h.call_with_grants(S3, release("r", "c"));
    assert_eq!(grants[0].id, b3);
}

#[test]
fn a_client_can_hold_through_two_sessions_and_release_through_either() {
    // The lock belongs to the client id, not the session (a restarted client keeps its lock).
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    assert_eq!(ok(h.call(S2, acquire("r", "a", 0, 0))).hold_count, 2);
    assert_eq!(ok(h.call(S2, release("r", "a"))).hold_count, 1);
}

#[test]
fn config_validate_names_the_broken_rule() {
    assert_eq!(Config::default().validate(), Ok(()));
    let cases = [
        (
            Config {
                resources_max: 0,
                ..Config::default()
            },
            "resources_max",
        ),
        (
            Config {
                waiters_max: 0,
                ..Config::default()
            },
            "waiters_max",
        ),
        (
            Config {
                retry_after_ms: 0,
                ..Config::default()
            },
            "retry_after_ms",
        ),
        (
            Config {
                ttl_default_ms: 3_600_001,
                ..Config::default()
            },
            "ttl_default_ms",
        ),
        (
            Config {
                session_idle_ms: 359_999,
                ..Config::default()
            },
            "session_idle_ms",
        ),
        (
            Config {
                wait_ms_max: 300_001,
                session_idle_ms: 900_000,
                ..Config::default()
            },
            "wait_ms_max",
        ),
    ];
    for (config, field) in cases.into_iter().chain([
        (
            Config {
                fencing_token_first: 0,
                ..Config::default()
            },
            "fencing_token_first",
        ),
        (
            Config {
                fencing_token_first: u64::MAX / 2 + 1,
                ..Config::default()
            },
            "fencing_token_first",
        ),
    ]) {
        let error = config.validate().expect_err(field);
        assert_eq!(error.field, field);
        assert!(error.to_string().contains(field));
    }
    let boundary = Config {
        session_idle_ms: 360_001,
        wait_ms_max: 300_000,
        ..Config::default()
    };
    assert_eq!(boundary.validate(), Ok(()));
    let too_short = Config {
        session_idle_ms: 360_000,
        wait_ms_max: 0,
        ..Config::default()
    };
    assert_eq!(too_short.validate().unwrap_err().field, "session_idle_ms");
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_never_goes_backwards() {
    let mut h = Harness::new();
    h.at(10);
    h.table.handle_timeout(ms(9));
}

#[test]
fn many_locks_come_and_go_without_leaking_slots() {
    let mut h = Harness::new();
    let names: Vec<String> = (0..1_000).map(|i| format!("lock-{i}")).collect();
    for name in &names {
        ok(h.call(S1, acquire(name, "a", 0, 0)));
    }
    assert_eq!(h.table.stats().held, 1_000);
    for name in names.iter().step_by(2) {
        ok(h.call(S1, release(name, "a")));
    }
    for name in &names {
        ok(h.call(S2, acquire(name, "a", 0, 0)));
    }
    assert_eq!(h.table.slots.len(), 1_000, "freed slots are reused");
    let stats = h.table.stats();
    assert_eq!(
        (stats.resources, stats.held, stats.timers),
        (1_000, 1_000, 1_000)
    );
    h.at(30_000);
    assert_eq!(h.table.stats().resources, 0);
}

/// Spec §7.2.4: a table standing in for one that lost its state grants nothing during its
/// startup grace (OVERLOADED, retry after the time left), then issues tokens from the first
/// token it was given.
#[test]
fn startup_grace_refuses_grants_then_tokens_start_where_told() {
    let mut h = Harness::with(Config {
        startup_grace_ms: 2_000,
        fencing_token_first: 1_000_000,
        ..Config::default()
    });
    h.at(500);
    let refused = h.call(S1, acquire("r", "a", 5_000, 0));
    assert_eq!(refused.status, Status::Overloaded);
    assert_eq!(refused.retry_after_ms, 1_500);
    assert_eq!(
        h.table.stats().resources,
        0,
        "nothing is created during the grace"
    );
    assert_free(ok(h.call(S1, status("r"))));
    h.at(1_999);
    assert_eq!(
        h.call(S1, acquire("r", "a", 0, 0)).status,
        Status::Overloaded
    );
    h.at(2_000);
    let granted = ok(h.call(S1, acquire("r", "a", 0, 0)));
    assert_eq!(granted.fencing_token, 1_000_000);
    ok(h.call(S1, release("r", "a")));
    assert_eq!(
        ok(h.call(S2, acquire("r", "b", 0, 0))).fencing_token,
        1_000_001
    );
}

/// Spec §2.2: a first copy too short to pay for two replies is not told WAITING (its final
/// answer is its one reply); its keepalives are, one reply each.
#[test]
fn a_short_first_copy_gets_no_waiting_but_its_keepalives_do() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 0)));
    h.datagram_len = udplock_protocol::REQUEST_LEN_MIN as u16;
    assert!(h
        .send(S2, 7, 0, 1000, acquire("r", "b", 5_000, 0))
        .is_empty());
    assert_eq!(h.table.stats().waiters, 1);
    let keepalive = waiting(&h.send(S2, 7, 1, 1000, acquire("r", "b", 5_000, 0)));
    assert_eq!(keepalive.attempt, 1);
    let (_, grants) = h.call_with_grants(S1, release("r", "a"));
    assert_eq!((grants.len(), grants[0].answer.status), (1, Status::Ok));
}

/// A renewal never shortens a lease (spec §6.4): a re-entrant acquire promised its client 60 s,
/// and a later renew asking for 1 s must not take that back.
#[test]
fn renew_never_shortens_what_an_earlier_reply_promised() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    h.at(1_000);
    let reentrant = ok(h.call(S1, acquire("r", "a", 0, 60_000)));
    assert_eq!(reentrant.lease_ms, 60_000);
    h.at(1_100);
    let renewed = ok(h.call(S1, renew("r", "a", 1_000)));
    assert_eq!(
        renewed.lease_ms, 59_900,
        "the 60 s promise still runs, and is reported"
    );
    h.at(59_000);
    let s = ok(h.call(S2, status("r")));
    assert_eq!(s.hold_count, 2, "still held where the 60 s promise runs");
    assert_eq!(s.lease_ms, 2_000);
    assert_eq!(
        h.call(S2, acquire("r", "b", 0, 0)).status,
        Status::LockAcquisitionTimeout
    );
}

/// A queued acquire answered late may carry the session's smallest id; storing its answer
/// must not evict that very answer, or its client's keepalive would get REQUEST_EXPIRED while
/// it holds the lock.
#[test]
fn a_late_answer_is_never_evicted_by_its_own_arrival() {
    let mut h = Harness::with(Config {
        answers_per_session_max: 2,
        ..Config::default()
    });
    ok(h.call(S2, acquire("r", "b", 0, 0)));
    let queued = h.queue(S1, acquire("r", "a", 5_000, 0));
    for i in 0..3 {
        let other = format!("other-{i}");
        ok(h.call(S1, acquire(&other, "a", 0, 0)));
    }
    let (_, grants) = h.call_with_grants(S2, release("r", "b"));
    assert_eq!(grants[0].id, queued);
    assert_eq!(grants[0].answer.status, Status::Ok);
    // The grant's reply was lost: the keepalive gets the grant again, not REQUEST_EXPIRED.
    let again = h.send(S1, queued.request, 3, 1000, acquire("r", "a", 5_000, 0));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].answer, grants[0].answer);
}

/// A KEEPALIVE body listing `tokens` (spec §4.11); `buf` holds their wire bytes.
fn keepalive<'a>(tokens: &[u64], ttl_ms: u32, buf: &'a mut [u8]) -> RequestBody<'a> {
    RequestBody::Keepalive {
        shard: 0,
        shards: 1,
        ttl_ms,
        tokens: Tokens::write(tokens, buf).expect("room for the tokens"),
    }
}

#[test]
fn keepalive_renews_the_listed_holds_and_names_them_in_its_bitmap() {
    let mut h = Harness::new();
    let t1 = ok(h.call(S1, acquire("r1", "a", 0, 100))).fencing_token;
    let t2 = ok(h.call(S1, acquire("r2", "a", 0, 100))).fencing_token;
    let t3 = ok(h.call(S2, acquire("r3", "b", 0, 200))).fencing_token;
    ok(h.call(S1, release("r2", "a")));
    h.at(80);
    let mut buf = [0u8; 8 * 64];
    // r2 was released: its token names no hold. 7 was never issued.
    let answer = ok(h.call(S1, keepalive(&[t1, t2, t3, 7], 0, &mut buf)));
    assert_eq!(
        (answer.fencing_token, answer.hold_count, answer.lease_ms),
        (0b101, 2, 100),
        "bits 0 and 2; the smallest lease: r1's TTL of 100 ms (r3 keeps 200)"
    );
    assert_eq!((answer.waiter_count, answer.retry_after_ms), (0, 0));
    // Each hold now ends one TTL after the keepalive (r1 at 180, r3 at 280), not before.
    h.at(179);
    assert_eq!(ok(h.call(S2, status("r1"))).lease_ms, 1);
    assert_eq!(ok(h.call(S2, status("r3"))).lease_ms, 101);
    h.at(180);
    assert_free(ok(h.call(S2, status("r1"))));
    assert_free(ok(h.call(S2, status("r2"))));
}

#[test]
fn keepalive_does_not_renew_a_token_whose_lock_was_granted_again() {
    let mut h = Harness::new();
    let old = ok(h.call(S1, acquire("r", "a", 0, 100))).fencing_token;
    h.at(100); // a's hold expires
    let new = ok(h.call(S2, acquire("r", "b", 0, 100))).fencing_token;
    assert!(new > old);
    h.at(150);
    let mut buf = [0u8; 8 * 64];
    let answer = ok(h.call(S1, keepalive(&[old], 1_000, &mut buf)));
    assert_eq!(
        (answer.fencing_token, answer.hold_count, answer.lease_ms),
        (0, 0, 0)
    );
    // b's hold keeps its own lease: nothing of it moved.
    assert_eq!(ok(h.call(S2, status("r"))).lease_ms, 50);
    h.at(200);
    assert_free(ok(h.call(S2, status("r"))));
}

#[test]
fn keepalive_never_shortens_and_its_ttl_becomes_the_holds_ttl() {
    let mut h = Harness::new();
    let long = ok(h.call(S1, acquire("long", "a", 0, 1_000))).fencing_token;
    let short = ok(h.call(S1, acquire("short", "a", 0, 100))).fencing_token;
    h.at(10);
    let mut buf = [0u8; 8 * 64];
    // TTL 50: "long" keeps its later expiry (990 ms left), "short" keeps 90 ms: the lease is
    // the smaller.
    let answer = ok(h.call(S1, keepalive(&[long, short], 50, &mut buf)));
    assert_eq!((answer.fencing_token, answer.lease_ms), (0b11, 90));
    h.at(99);
    // The hold TTL is now 50 ms: a keepalive with ttl_ms 0 (or a RENEW) reuses it.
    let answer = ok(h.call(S1, keepalive(&[short], 0, &mut buf)));
    assert_eq!((answer.fencing_token, answer.lease_ms), (1, 50));
    assert_eq!(ok(h.call(S1, renew("short", "a", 0))).lease_ms, 50);
}

#[test]
fn a_retransmitted_keepalive_gets_its_first_answer_and_renews_nothing_again() {
    let mut h = Harness::new();
    let token = ok(h.call(S1, acquire("r", "a", 0, 100))).fencing_token;
    h.at(50);
    let mut buf = [0u8; 8 * 64];
    let body = keepalive(&[token], 0, &mut buf);
    let (id, replies) = h.new_request(S1, body);
    let first = ok(replies[0].answer);
    assert_eq!((first.fencing_token, first.lease_ms), (1, 100));
    h.at(120);
    let again = h.send(id.session, id.request, 1, 2000, body);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].answer, first, "the remembered answer");
    assert_eq!(again[0].to, addr(2000));
    // The hold still ends at 150, one TTL after the first copy, not after the second.
    assert_eq!(ok(h.call(S2, status("r"))).lease_ms, 30);
}

#[test]
fn keepalive_takes_up_to_64_tokens_one_bit_each_and_checks_its_ttl() {
    let mut h = Harness::new();
    let tokens: Vec<u64> = (0..64)
        .map(|i| ok(h.call(S1, acquire(&format!("r{i}"), "a", 0, 100))).fencing_token)
        .collect();
    ok(h.call(S1, release("r0", "a")));
    let mut buf = [0u8; 8 * 64];
    let answer = ok(h.call(S1, keepalive(&tokens, 0, &mut buf)));
    assert_eq!(
        answer.fencing_token, !1u64,
        "every bit but the released r0's"
    );
    assert_eq!(answer.hold_count, 63);
    let ttl_ms_max = Config::default().ttl_ms_max;
    assert_eq!(
        h.call(S1, keepalive(&tokens, ttl_ms_max + 1, &mut buf))
            .status,
        Status::InvalidArgument
    );
}

fn cancel_wait<'a>(resource: &'a str, client: &'a str, target: RequestId) -> RequestBody<'a> {
    RequestBody::CancelWait {
        resource: resource.as_bytes(),
        client: client.as_bytes(),
        target_session: target.session,
        target_request: target.request,
    }
}

/// Spec §4.12 case 1: a queued waiter leaves the queue from the middle, its ACQUIRE is
/// answered LOCK_ACQUISITION_TIMEOUT (QUEUED), the cancel says it removed it, and the waiters
/// around it keep their FIFO order.
#[test]
fn cancel_wait_withdraws_a_queued_waiter_and_keeps_fifo_order() {
    let mut h = Harness::new();
    let held = ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    let b = h.queue(S2, acquire("r", "b", 5_000, 0));
    let c = h.queue(S3, acquire("r", "c", 5_000, 0));
    assert_eq!(h.table.stats().waiters, 2);
    let cancel_session = 0x5e55_00cb;
    let (cancel_id, replies) = h.new_request(cancel_session, cancel_wait("r", "b", b));
    assert_eq!(replies.len(), 2, "{replies:?}");
    let withdrawn = replies.iter().find(|r| r.id == b).expect("b answered");
    assert_eq!(withdrawn.kind, RequestKind::Acquire);
    assert_eq!(withdrawn.answer.status, Status::LockAcquisitionTimeout);
    assert!(withdrawn.answer.queued);
    let own = replies
        .iter()
        .find(|r| r.id == cancel_id)
        .expect("answered");
    assert_eq!(own.kind, RequestKind::CancelWait);
    assert_eq!(
        own.answer,
        Answer {
            waiter_count: 1,
            ..Answer::bare(Status::Ok)
        }
    );
    assert_eq!(h.table.stats().waiters, 1);
    // A retransmit of the cancel gets the remembered answer; one of the ACQUIRE gets its
    // final answer, and neither queues anything again.
    let again = h.send(
        cancel_session,
        cancel_id.request,
        1,
        1000,
        cancel_wait("r", "b", b),
    );
    assert_eq!((again.len(), again[0].answer.waiter_count), (1, 1));
    let late = h.send(b.session, b.request, 3, 1000, acquire("r", "b", 5_000, 0));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].answer.status, Status::LockAcquisitionTimeout);
    assert_eq!(h.table.stats().waiters, 1);
    // The release hands the lock to c, the waiter behind the one withdrawn, at once.
    let (released, grants) = h.call_with_grants(S1, release("r", "a"));
    assert_eq!(released.hold_count, 0);
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].id, c);
    assert!(ok(grants[0].answer).fencing_token > held.fencing_token);
}

/// Withdrawing the head waiter: the lock stays with its holder and the next waiter becomes
/// the head; withdrawing the last waiter drops the queue.
#[test]
fn cancel_wait_of_the_head_and_of_the_last_waiter() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    let b = h.queue(S2, acquire("r", "b", 5_000, 0));
    let c = h.queue(S3, acquire("r", "c", 5_000, 0));
    assert_eq!(
        ok(h.call_with_grants(S1, cancel_wait("r", "b", b)).0).waiter_count,
        1
    );
    let status = ok(h.call(S1, status("r")));
    assert_eq!((status.hold_count, status.waiter_count), (1, 1));
    assert_eq!(
        ok(h.call_with_grants(S1, cancel_wait("r", "c", c)).0).waiter_count,
        1
    );
    assert_eq!(h.table.stats().waiters, 0);
    assert_eq!(h.table.stats().timers, 1, "only the hold's expiry is left");
    // The withdrawn waiters' deadlines never fire.
    assert!(h.at(6_000).is_empty());
}

/// Spec §4.12 case 2: the grant crossed the cancel. The cancel names the hold (count,
/// token, lease) so that the client releases it.
#[test]
fn cancel_wait_after_the_grant_names_the_hold_to_release() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    let b = h.queue(S2, acquire("r", "b", 5_000, 7_000));
    let (_, grants) = h.call_with_grants(S1, release("r", "a"));
    let grant = ok(grants[0].answer);
    let answer = ok(h.call(S3, cancel_wait("r", "b", b)));
    assert_eq!(
        (
            answer.hold_count,
            answer.fencing_token,
            answer.lease_ms,
            answer.waiter_count
        ),
        (1, grant.fencing_token, 7_000, 0)
    );
    // Still held by b: the cancel changed nothing; b releases it as the client must.
    assert_eq!(ok(h.call(S3, status("r"))).hold_count, 1);
    assert_eq!(ok(h.call(S3, release("r", "b"))).hold_count, 0);
}

/// A target whose wait already ended without the lock: OK, nothing removed, nothing held.
#[test]
fn cancel_wait_after_a_timeout_removes_nothing() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    let b = h.queue(S2, acquire("r", "b", 1_000, 0));
    assert_eq!(h.at(1_000).len(), 1);
    assert_eq!(
        ok(h.call(S3, cancel_wait("r", "b", b))),
        Answer::bare(Status::Ok)
    );
}

/// Spec §4.12 case 4: the cancel overtook its target. The target's answer is settled now,
/// so its late copy is never queued nor granted.
#[test]
fn cancel_wait_before_its_target_arrives_settles_it() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    let target = RequestId {
        session: S2,
        request: 77,
    };
    assert_eq!(
        ok(h.call(S3, cancel_wait("r", "b", target))),
        Answer::bare(Status::Ok)
    );
    let late = h.send(S2, 77, 0, 1000, acquire("r", "b", 5_000, 0));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].answer.status, Status::LockAcquisitionTimeout);
    assert_eq!(h.table.stats().waiters, 0);
    // On a free lock too: the late copy takes nothing.
    ok(h.call(S1, release("r", "a")));
    let late = h.send(S2, 77, 1, 1000, acquire("r", "b", 5_000, 0));
    assert_eq!(late[0].answer.status, Status::LockAcquisitionTimeout);
    assert_eq!(h.table.stats().held, 0);
}

/// The wrong lock, the wrong client, a target that was no ACQUIRE, or the cancel itself:
/// INVALID_ARGUMENT, nothing changes and nothing is remembered.
#[test]
fn cancel_wait_refuses_what_is_not_its_clients_wait() {
    let mut h = Harness::new();
    ok(h.call(S1, acquire("r", "a", 0, 10_000)));
    let b = h.queue(S2, acquire("r", "b", 5_000, 0));
    let invalid = |h: &mut Harness, body| h.call(S3, body).status;
    assert_eq!(
        invalid(&mut h, cancel_wait("other", "b", b)),
        Status::InvalidArgument
    );
    assert_eq!(
        invalid(&mut h, cancel_wait("r", "c", b)),
        Status::InvalidArgument
    );
    let zero = RequestId {
        session: 0,
        request: 1,
    };
    assert_eq!(
        invalid(&mut h, cancel_wait("r", "b", zero)),
        Status::InvalidArgument
    );
    let (renew_id, _) = h.new_request(S1, renew("r", "a", 0));
    assert_eq!(
        invalid(&mut h, cancel_wait("r", "a", renew_id)),
        Status::InvalidArgument
    );
    let own = RequestId {
        session: S3,
        request: h.request_last + 1,
    };
    assert_eq!(
        invalid(&mut h, cancel_wait("r", "b", own)),
        Status::InvalidArgument
    );
    assert_eq!(h.table.stats().waiters, 1);
    let _ = b;
}

/// The monitoring counts (`Counts`, exported by the node as `udplock_lock_*_total`) move by
/// exactly one per state change, whichever path made it: a grant at once, a re-entry, a
/// queue, a hand-off on release and on expiry, a wait that ends, a renewal by RENEW and by
/// KEEPALIVE, a release.
#[test]
fn every_lock_state_change_is_counted_once() {
    let mut h = Harness::new();
    let counts = |h: &Harness| h.table.counts();
    assert_eq!(counts(&h), Counts::default());
    let first = ok(h.call(S1, acquire("r", "a", 0, 100)));
    ok(h.call(S1, acquire("r", "a", 0, 100)));
    assert_eq!((counts(&h).grants, counts(&h).handoffs), (2, 0));
    // Held, no wait: an acquisition timeout at once.
    assert_eq!(
        h.call(S2, acquire("r", "b", 0, 100)).status,
        Status::LockAcquisitionTimeout
    );
    assert_eq!(counts(&h).acquisition_timeouts, 1);
    h.queue(S2, acquire("r", "b", 1_000, 50));
    h.queue(S3, acquire("r", "c", 60, 50));
    assert_eq!(counts(&h).queued, 2);
    ok(h.call(S1, renew("r", "a", 200)));
    let mut buf = [0u8; 8];
    let keepalive = RequestBody::Keepalive {
        shard: 0,
        shards: 1,
        ttl_ms: 200,
        tokens: Tokens::write(&[first.fencing_token], &mut buf).unwrap(),
    };
    ok(h.call(S1, keepalive));
    assert_eq!(counts(&h).renewals, 2);
    // c's wait ends in the queue.
    assert_eq!(h.at(60).len(), 1);
    assert_eq!(counts(&h).acquisition_timeouts, 2);
    // Two releases: the second frees the lock and hands it to b.
    ok(h.call(S1, release("r", "a")));
    let (answer, grants) = h.call_with_grants(S1, release("r", "a"));
    ok(answer);
    assert_eq!(grants.len(), 1);
    // b's hold expires unrenewed.
    assert!(h.at(60 + 50).len() <= 1);
    let c = counts(&h);
    assert_eq!(
        c,
        Counts {
            grants: 3,
            handoffs: 1,
            releases: 2,
            expirations: 1,
            acquisition_timeouts: 2,
            queued: 2,
            renewals: 2,
        }
    );
    // STATUS, a duplicate and a refused request change nothing.
    h.call(S2, status("r"));
    h.send(S1, 1, 1, 1000, acquire("r", "a", 0, 100));
    h.call(S1, release("r", "nobody"));
    assert_eq!(counts(&h), c);
}

/// A table that builds no replies (a follower's replica, `set_replying(false)`) changes state
/// exactly as one that does: the same snapshot, and once it replies again (it became leader)
/// the same remembered answers to retries, grants handed off and timed-out waits included.
#[test]
fn a_table_that_does_not_reply_remembers_the_same_answers() {
    let mut tables = [Harness::new(), Harness::new()];
    tables[1].table.set_replying(false);
    let mut sent = Vec::new();
    let script: [(u64, RequestBody<'static>); 7] = [
        (S1, acquire("a", "c1", 0, 5_000)),
        (S2, acquire("a", "c2", 2_000, 5_000)),
        (S3, acquire("a", "c3", 500, 5_000)),
        (S1, release("a", "c1")),
        (S2, renew("a", "c2", 5_000)),
        (S1, status("a")),
        (S2, release("a", "c2")),
    ];
    for (at, (session, body)) in script.into_iter().enumerate() {
        let [on, off] = &mut tables;
        let at_ms = 400 * at as u64;
        let (id, on_replies) = {
            on.at(at_ms);
            on.new_request(session, body)
        };
        off.at(at_ms);
        let (_, off_replies) = off.new_request(session, body);
        assert!(!on_replies.is_empty());
        assert!(off_replies.is_empty(), "{off_replies:?}");
        sent.push((id, body));
    }
    let snapshots = tables.each_ref().map(|h| {
        let mut data = Vec::new();
        h.table.snapshot(&mut data);
        data
    });
    assert_eq!(snapshots[0], snapshots[1]);
    tables[1].table.set_replying(true);
    for (id, body) in sent {
        let [on, off] = &mut tables;
        let replies = on.send(id.session, id.request, 1, 1000, body);
        assert_eq!(replies, off.send(id.session, id.request, 1, 1000, body));
    }
}

/// Moving the replies out gives them in order, behind what `out` held, whether `out` was
/// empty (the buffers trade places) or not (they are appended); the table keeps none.
#[test]
fn replies_move_out_in_order_into_an_empty_or_a_filled_queue() {
    let mut h = Harness::new();
    let mut expected = Vec::new();
    let mut out = VecDeque::new();
    for (round, filled) in [(0u64, false), (1, true), (2, false)] {
        if !filled {
            out.clear();
            expected.clear();
        }
        for n in 0..3 {
            let resource = format!("r{round}-{n}");
            h.request_last += 1;
            let request = Request {
                id: RequestId {
                    session: S1,
                    request: h.request_last,
                },
                attempt: 0,
                reply_to: addr(1000),
                body: acquire(&resource, "c", 0, 1_000),
                datagram_len: h.datagram_len,
            };
            h.table.handle_request(h.now, request);
            expected.push(h.request_last);
        }
        h.table.move_replies_into(&mut out);
        assert!(h.table.poll_reply().is_none());
        let ids: Vec<u64> = out.iter().map(|reply| reply.id.request).collect();
        assert_eq!(ids, expected, "round {round}");
    }
}
