//! One test per rule of the call core (spec §7.1), each driving a [`Call`] by hand: inputs
//! with explicit instants, outputs read back. No socket, no clock, no thread.

use std::net::{Ipv4Addr, SocketAddr};

use udplock_protocol::{AddressToken, Flags, Hint, MessageType, Reply, Status};

use super::*;
use crate::core::retransmit::{RetransmitConfig, DOUBT_LIFETIME};

const SESSION: u64 = 0x5e55;
const GRACE: Duration = Duration::from_millis(200);

fn node(i: u16) -> SocketAddr {
    (Ipv4Addr::new(10, 0, 1, 1), 7100 + i).into()
}

fn at(us: u64) -> Instant {
    Instant::from_micros(us)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A client of three nodes, one shard: requests go to node 0 first.
struct Harness {
    routes: Routes,
    rtt: RttEstimator,
}

impl Harness {
    fn new(nodes: u16) -> Harness {
        let servers: Vec<SocketAddr> = (0..nodes).map(node).collect();
        Harness {
            routes: Routes::new(&servers, 1, false),
            rtt: RttEstimator::new(RetransmitConfig::default()),
        }
    }

    fn request(&self, msg_type: MessageType, request_id: u64, wait_ms: u32) -> CallRequest {
        CallRequest {
            session_id: SESSION,
            request_id,
            msg_type,
            shard: 0,
            wait_ms,
            ttl_ms: 0,
            tokens: 0,
            lease_ms_max: LEASE_MS_MAX_DEFAULT,
            sealed: false,
        }
    }

    fn call(&self, now: Instant, request: CallRequest, timeout: Duration) -> Call {
        Call::new(
            now,
            request,
            self.rtt.timer(),
            now + timeout,
            GRACE,
            &self.routes,
        )
    }

    fn reply(&mut self, call: &mut Call, now: Instant, from: SocketAddr, reply: Reply) -> Handled {
        self.sealed_reply(call, now, from, reply, Seal::Unsealed)
    }

    /// [`Harness::reply`] with the seal the shell read on it (spec §7.1.10).
    fn sealed_reply(
        &mut self,
        call: &mut Call,
        now: Instant,
        from: SocketAddr,
        reply: Reply,
        seal: Seal,
    ) -> Handled {
        call.handle_reply(now, from, &reply, seal, &self.routes, &mut self.rtt)
    }

    /// Runs the call's timers up to `until`; returns the copies it sent, with their times.
    fn run(&self, call: &mut Call, until: Instant) -> Vec<(Instant, Transmit)> {
        let mut sent = Vec::new();
        if let Some(copy) = call.poll_transmit() {
            let at = call.timer().send_time(copy.attempt).expect("sent");
            sent.push((at, copy));
        }
        while let Some(t) = call.poll_timeout().filter(|&t| t <= until) {
            call.handle_timeout(t, &self.routes);
            if let Some(copy) = call.poll_transmit() {
                sent.push((t, copy));
            }
        }
        sent
    }
}

/// The reply to `call`'s request echoing `attempt`: with status OK, a genuine one (a
/// grant or renewal of one hold under token 7, a release of it, a free lock, a KEEPALIVE
/// that renewed nothing), every other field zero.
fn answer(call: &Call, attempt: u16, status: Status) -> Reply<'static> {
    let request = call.request();
    let bare = Reply::bare(
        request.msg_type.reply_type().unwrap(),
        request.session_id,
        request.request_id,
        attempt,
        status,
    );
    match (status, request.msg_type) {
        (Status::Ok, MessageType::Acquire | MessageType::Renew) => Reply {
            hold_count: 1,
            fencing_token: 7,
            ..bare
        },
        (Status::Ok, MessageType::Release) => Reply {
            fencing_token: 7,
            ..bare
        },
        _ => bare,
    }
}

fn sent(call: &mut Call) -> Transmit {
    call.poll_transmit().expect("a copy is ready")
}

#[test]
fn copies_carry_rising_attempts_to_the_same_node_on_a_doubling_timer() {
    let h = Harness::new(3);
    let mut call = h.call(at(1_000), h.request(MessageType::Renew, 1, 0), ms(100));
    assert_eq!(
        sent(&mut call),
        Transmit {
            to: node(0),
            attempt: 0,
            token: None
        }
    );
    assert_eq!(call.poll_transmit(), None, "one copy per input");
    assert_eq!(
        call.poll_timeout(),
        Some(at(2_000)),
        "the initial RTO, 1 ms"
    );
    call.handle_timeout(at(1_500), &h.routes);
    assert_eq!(call.poll_transmit(), None, "not due yet");
    call.handle_timeout(at(2_000), &h.routes);
    assert_eq!(
        sent(&mut call),
        Transmit {
            to: node(0),
            attempt: 1,
            token: None
        }
    );
    assert_eq!(call.poll_timeout(), Some(at(4_000)), "backed off to 2 ms");
}

#[test]
fn the_deadline_ends_a_call_without_an_answer() {
    let h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(10));
    let copies = h.run(&mut call, at(1_000_000));
    assert!(copies.iter().all(|(t, _)| *t < at(10_000)));
    assert_eq!(call.outcome(), Some(Outcome::GaveUp { overloaded: None }));
    assert_eq!(call.poll_timeout(), None);
    // A call whose deadline has passed ends at once, unsent.
    let mut late = Call::new(
        at(50),
        h.request(MessageType::Status, 2, 0),
        h.rtt.timer(),
        at(50),
        GRACE,
        &h.routes,
    );
    assert_eq!(late.poll_transmit(), None);
    assert_eq!(late.outcome(), Some(Outcome::GaveUp { overloaded: None }));
}

#[test]
fn only_answers_to_copies_sent_are_accepted() {
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 7, 0), ms(100));
    sent(&mut call);
    let good = answer(&call, 0, Status::Ok);
    let forged = [
        Reply {
            session_id: SESSION + 1,
            ..good
        },
        Reply {
            request_id: 8,
            ..good
        },
        Reply {
            msg_type: MessageType::ReleaseReply,
            ..good
        },
        Reply { attempt: 1, ..good },
    ];
    for reply in forged {
        assert_eq!(h.reply(&mut call, at(10), node(0), reply), Handled::Dropped);
        assert_eq!(call.outcome(), None, "{reply:?}");
    }
    assert_eq!(h.reply(&mut call, at(20), node(0), good), Handled::Accepted);
    assert!(matches!(call.outcome(), Some(Outcome::Answered { .. })));
    assert_eq!(
        h.reply(&mut call, at(30), node(0), good),
        Handled::Dropped,
        "a duplicate after the outcome"
    );
}

#[test]
fn a_reply_to_the_latest_copy_is_an_rtt_sample_a_queued_one_is_not() {
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Renew, 1, 0), ms(100));
    sent(&mut call);
    let queued = Reply {
        flags: Flags::QUEUED,
        ..answer(&call, 0, Status::Waiting)
    };
    h.reply(&mut call, at(70), node(0), queued);
    assert_eq!(h.rtt.samples(), 0);
    {
        let reply = answer(&call, 0, Status::Ok);
        h.reply(&mut call, at(90), node(0), reply)
    };
    assert_eq!(h.rtt.srtt(), Some(Duration::from_micros(90)));
}

#[test]
fn a_grants_lease_counts_from_the_send_time_of_the_echoed_copy() {
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(100));
    let copies = h.run(&mut call, at(2_500));
    assert_eq!(copies.len(), 2, "attempts 0 and 1 (at 0 and 1 ms)");
    {
        let reply = answer(&call, 1, Status::Ok);
        h.reply(&mut call, at(2_600), node(0), reply)
    };
    assert_eq!(
        call.outcome(),
        Some(Outcome::Answered {
            status: Status::Ok,
            attempt: 1,
            lease_start: at(1_000)
        })
    );
}

/// Spec §7.1.7 rule 5.1: the SAME request goes to a hinted leader at once, and the hint is
/// cached for the shard; at most REDIRECTS_FAST_MAX at once between two other replies.
#[test]
fn not_leader_with_a_hint_goes_to_the_leader_at_once_a_few_times() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(100));
    sent(&mut call);
    let mut now = 10;
    for k in 0..REDIRECTS_FAST_MAX {
        let attempt = k as u16;
        let (from, to) = (node(k as u16 % 2), node(1 - k as u16 % 2));
        let reply = Reply {
            hint: Hint::Leader(to),
            ..answer(&call, attempt, Status::NotLeader)
        };
        assert_eq!(
            h.reply(&mut call, at(now), from, reply),
            Handled::Redirected
        );
        assert_eq!(
            sent(&mut call),
            Transmit {
                to,
                attempt: attempt + 1,
                token: None
            }
        );
        assert_eq!(h.routes.first_destination(0).1, to, "cached");
        now += 10;
    }
    // Two nodes naming each other: the next hint waits for the timer.
    let last = REDIRECTS_FAST_MAX as u16;
    let reply = Reply {
        hint: Hint::Leader(node(0)),
        ..answer(&call, last, Status::NotLeader)
    };
    h.reply(&mut call, at(now), node(1), reply);
    assert_eq!(call.poll_transmit(), None, "no longer at once");
    assert_eq!(call.destination(), node(0));
    // A reply of another kind resets the count.
    let waiting = answer(&call, last, Status::Overloaded);
    h.reply(&mut call, at(now + 1), node(1), waiting);
    assert!(call.poll_transmit().is_none());
}

/// Rule 5.3: no hint (an election): along the ring, on the timer; and the cached leader is
/// forgotten. A NOT_LEADER answering a copy sent to an earlier destination is ignored.
#[test]
fn not_leader_without_a_hint_moves_on_along_the_ring_on_the_timer() {
    let mut h = Harness::new(3);
    h.routes.set_leader(0, 0);
    let mut call = h.call(at(0), h.request(MessageType::Release, 1, 0), ms(100));
    assert_eq!(sent(&mut call).to, node(0));
    let reply = answer(&call, 0, Status::NotLeader);
    h.reply(&mut call, at(10), node(0), reply);
    assert_eq!(call.poll_transmit(), None, "on the timer");
    assert_eq!(call.destination(), node(1));
    assert_eq!(
        h.routes.first_destination(0).1,
        node(0),
        "no leader cached: the first server on the ring"
    );
    let copies = h.run(&mut call, at(1_000));
    assert_eq!(
        copies[0].1,
        Transmit {
            to: node(1),
            attempt: 1,
            token: None
        }
    );
    // A late NOT_LEADER for attempt 0 answers a copy sent to node 0: ignored.
    let stale = answer(&call, 0, Status::NotLeader);
    assert_eq!(
        h.reply(&mut call, at(1_100), node(0), stale),
        Handled::Accepted
    );
    assert_eq!(call.destination(), node(1));
}

/// Rule 5.3, found by `udplock sim --seed 117 --nodes 3` (a joined run, clients knowing every
/// node): after a NOT_LEADER without a hint the request goes to the next server on the ring
/// even if it is suspect. Skipping suspects, a client whose copies to the one node holding
/// the shard were lost went round the two that hold no replica of it (each answering at once
/// without a hint) and never tried that node again.
#[test]
fn not_leader_without_a_hint_goes_to_the_next_server_even_a_suspect_one() {
    let mut h = Harness::new(3);
    h.routes.set_suspect(0, true);
    let mut call = h.call(at(0), h.request(MessageType::Release, 1, 0), ms(1_000));
    assert_eq!(sent(&mut call).to, node(1), "the first server not suspect");
    let reply = answer(&call, 0, Status::NotLeader);
    h.reply(&mut call, at(10), node(1), reply);
    assert_eq!(call.destination(), node(2));
    let copies = h.run(&mut call, at(1_000));
    assert_eq!(copies[0].1.to, node(2));
    let reply = answer(&call, copies[0].1.attempt, Status::NotLeader);
    h.reply(&mut call, at(1_100), node(2), reply);
    assert_eq!(
        call.destination(),
        node(0),
        "round the servers that cannot help, never back to the suspect one"
    );
}

/// Spec §7.1.8 rule 2: routes replaced under a call (discovery read a member table while
/// the call was under way) are the call's from then on: a NOT_LEADER without a hint moves
/// it along the NEW ring from where it stood, and its copies keep their attempt numbers,
/// back-off and send times (the lease counts from the echoed copy's).
#[test]
fn a_call_goes_on_by_routes_replaced_under_it() {
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(100));
    assert_eq!(sent(&mut call).to, node(0));
    let members = Routes::new(&[node(1), node(2), node(0)], 1, false);
    let old = std::mem::replace(&mut h.routes, members);
    call.rebase(&old, &h.routes);
    assert_eq!(call.destination(), node(0), "where it stood");
    let reply = answer(&call, 0, Status::NotLeader);
    assert_eq!(
        h.reply(&mut call, at(10), node(0), reply),
        Handled::Redirected
    );
    assert_eq!(call.destination(), node(1), "after node 0 on the new ring");
    let copies = h.run(&mut call, at(1_500));
    assert_eq!(
        copies,
        [(
            at(1_000),
            Transmit {
                to: node(1),
                attempt: 1,
                token: None
            }
        )],
        "on the request's own timer"
    );
    let reply = answer(&call, 1, Status::Ok);
    h.reply(&mut call, at(1_100), node(1), reply);
    assert_eq!(
        call.outcome(),
        Some(Outcome::Answered {
            status: Status::Ok,
            attempt: 1,
            lease_start: at(1_000)
        })
    );
    assert_eq!(
        h.routes.first_destination(0).1,
        node(1),
        "the leader, cached"
    );

    // A destination that stays silent is marked suspect under its index in the new routes
    // (not under the index it had in the old ones, which names another node there).
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 2, 0), ms(100));
    sent(&mut call);
    let old = std::mem::replace(&mut h.routes, Routes::new(&[node(1), node(0)], 1, false));
    call.rebase(&old, &h.routes);
    let copies = h.run(&mut call, at(3_500));
    let to: Vec<SocketAddr> = copies.iter().map(|(_, copy)| copy.to).collect();
    assert_eq!(to, [node(0), node(1)], "attempts 1 and 2");
    assert!(h.routes.is_suspect(h.routes.find(node(0)).unwrap()));
    assert!(!h.routes.is_suspect(h.routes.find(node(1)).unwrap()));
}

/// Rule 5.2: a hint naming a suspect node is followed on the timer only.
#[test]
fn a_hint_naming_a_suspect_node_waits_for_the_timer() {
    let mut h = Harness::new(3);
    h.routes.set_suspect(2, true);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(100));
    sent(&mut call);
    let reply = Reply {
        hint: Hint::Leader(node(2)),
        ..answer(&call, 0, Status::NotLeader)
    };
    h.reply(&mut call, at(10), node(0), reply);
    assert_eq!(call.poll_transmit(), None);
    assert_eq!(call.destination(), node(2));
    let copies = h.run(&mut call, at(1_000));
    assert_eq!(copies[0].1.to, node(2));
}

/// Rule 4: a node that leaves SILENT_SENDS_MAX copies in a row unanswered is marked suspect
/// and left for the next server on the ring; a suspect node is left after one.
#[test]
fn a_silent_node_is_left_and_marked_suspect() {
    let h = Harness::new(3);
    h.routes.set_leader(0, 0);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(1_000));
    let copies = h.run(&mut call, at(20_000));
    let to: Vec<SocketAddr> = copies.iter().map(|(_, c)| c.to).collect();
    assert_eq!(
        to[..5],
        [node(0), node(0), node(1), node(1), node(2)],
        "two copies each"
    );
    assert!(h.routes.is_suspect(0) && h.routes.is_suspect(1));
    assert_eq!(
        h.routes.first_destination(0).1,
        node(2),
        "the suspect leader is forgotten"
    );
    // A later call leaves a suspect node after one unanswered copy.
    h.routes.set_suspect(2, true);
    let mut again = h.call(at(30_000), h.request(MessageType::Acquire, 2, 0), ms(1_000));
    let first = sent(&mut again).to;
    let copies = h.run(&mut again, at(40_000));
    assert_ne!(copies[0].1.to, first, "left after one copy");
}

#[test]
fn any_reply_clears_a_suspicion_and_a_final_answer_names_the_leader() {
    let mut h = Harness::new(3);
    h.routes.set_suspect(1, true);
    let mut call = h.call(at(0), h.request(MessageType::Status, 1, 0), ms(100));
    sent(&mut call);
    // An answer from another node than the one the copy went to (after a failover).
    {
        let reply = answer(&call, 0, Status::Ok);
        h.reply(&mut call, at(10), node(1), reply)
    };
    assert!(!h.routes.is_suspect(1));
    assert_eq!(h.routes.first_destination(0).1, node(1));
    // ERROR_REPLY names nobody: any node may send it.
    let mut other = h.call(at(100), h.request(MessageType::Status, 2, 0), ms(100));
    sent(&mut other);
    let error = Reply {
        msg_type: MessageType::ErrorReply,
        ..answer(&other, 0, Status::InvalidArgument)
    };
    h.reply(&mut other, at(110), node(2), error);
    assert_eq!(h.routes.first_destination(0).1, node(1));
    assert!(matches!(
        other.outcome(),
        Some(Outcome::Answered {
            status: Status::InvalidArgument,
            ..
        })
    ));
}

/// Spec §6.3: WAITING is provisional. Copies become keepalives paced by the lease, and the
/// deadline moves to the server's wait plus the grace, once.
#[test]
fn waiting_turns_copies_into_keepalives_and_moves_the_deadline() {
    let mut h = Harness::new(1);
    let start = at(0);
    let mut call = h.call(start, h.request(MessageType::Acquire, 1, 5_000), ms(300));
    sent(&mut call);
    let waiting = Reply {
        lease_ms: 1_600,
        flags: Flags::QUEUED,
        ..answer(&call, 0, Status::Waiting)
    };
    h.reply(&mut call, at(100), node(0), waiting);
    assert!(call.timer().is_waiting());
    let copies = h.run(&mut call, at(1_000_000));
    let gaps: Vec<u64> = copies
        .windows(2)
        .map(|w| w[1].0.saturating_since(w[0].0).as_micros())
        .collect();
    assert!(
        gaps.iter().all(|&g| g == 100_000),
        "every lease/16: {gaps:?}"
    );
    assert_eq!(
        copies[0].0,
        at(100_000),
        "the first keepalive one interval after the send"
    );
    assert_eq!(
        call.outcome(),
        None,
        "still waiting past the first deadline"
    );
    let grant = answer(&call, 9, Status::Ok);
    h.reply(&mut call, at(1_000_010), node(0), grant);
    assert!(matches!(
        call.outcome(),
        Some(Outcome::Answered {
            lease_start,
            ..
        }) if lease_start == at(900_000)
    ));
    // Without the grant, the call ends at the WAITING's receipt + wait + grace.
    let mut h = Harness::new(1);
    let mut call = h.call(start, h.request(MessageType::Acquire, 2, 5_000), ms(300));
    sent(&mut call);
    let waiting = Reply {
        lease_ms: 1_600,
        ..answer(&call, 0, Status::Waiting)
    };
    h.reply(&mut call, at(100), node(0), waiting);
    h.run(&mut call, at(3_000_000));
    let latest = call.timer().latest_attempt().unwrap();
    let again = Reply {
        attempt: latest,
        ..waiting
    };
    h.reply(&mut call, at(3_000_100), node(0), again);
    h.run(&mut call, at(10_000_000));
    assert_eq!(call.outcome(), Some(Outcome::GaveUp { overloaded: None }));
    assert_eq!(
        call.timer().latest_attempt(),
        Some(52),
        "every 100 ms until 5.2 s + 100 µs: a later WAITING does not move the deadline again"
    );
}

/// Spec §7.1.3: OVERLOADED is not final; the same request goes again to the same node, not
/// before the hint. At the deadline the call reports it.
#[test]
fn overloaded_is_retried_not_before_its_hint() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(100));
    sent(&mut call);
    let overloaded = Reply {
        hint: Hint::RetryAfter { ms: 25 },
        ..answer(&call, 0, Status::Overloaded)
    };
    h.reply(&mut call, at(50), node(0), overloaded);
    assert_eq!(call.poll_timeout(), Some(at(25_050)));
    let copies = h.run(&mut call, at(25_050));
    assert_eq!(
        copies,
        [(
            at(25_050),
            Transmit {
                to: node(0),
                attempt: 1,
                token: None
            }
        )]
    );
    h.run(&mut call, at(1_000_000));
    assert_eq!(
        call.outcome(),
        Some(Outcome::GaveUp {
            overloaded: Some(25)
        })
    );
}

/// Spec §7.1.5: a RELEASE that ends without a settling answer is a doubt, whatever the last
/// reply was: silence, OVERLOADED (issue 7: it was not kept), or INTERNAL_ERROR.
#[test]
fn a_release_without_a_settling_answer_ends_in_doubt() {
    let mut h = Harness::new(1);
    let mut silent = h.call(at(0), h.request(MessageType::Release, 1, 0), ms(10));
    h.run(&mut silent, at(1_000_000));
    assert_eq!(
        silent.outcome(),
        Some(Outcome::InDoubt(DoubtCause::Silence))
    );

    let mut overloaded = h.call(at(0), h.request(MessageType::Release, 2, 0), ms(10));
    sent(&mut overloaded);
    let reply = Reply {
        hint: Hint::RetryAfter { ms: 1 },
        ..answer(&overloaded, 0, Status::Overloaded)
    };
    h.reply(&mut overloaded, at(5), node(0), reply);
    h.run(&mut overloaded, at(1_000_000));
    assert_eq!(
        overloaded.outcome(),
        Some(Outcome::InDoubt(DoubtCause::Overloaded {
            retry_after_ms: 1
        }))
    );

    let mut failed = h.call(at(0), h.request(MessageType::Release, 3, 0), ms(10));
    sent(&mut failed);
    {
        let reply = answer(&failed, 0, Status::InternalError);
        h.reply(&mut failed, at(5), node(0), reply)
    };
    assert_eq!(
        failed.outcome(),
        Some(Outcome::InDoubt(DoubtCause::InternalError))
    );

    // An answer settles it, whatever it says.
    let mut answered = h.call(at(0), h.request(MessageType::Release, 4, 0), ms(10));
    sent(&mut answered);
    {
        let reply = answer(&answered, 0, Status::LockNotHeld);
        h.reply(&mut answered, at(5), node(0), reply)
    };
    assert!(matches!(answered.outcome(), Some(Outcome::Answered { .. })));
}

/// A doubtful RELEASE is sent again with the same ids and the next attempt number (spec
/// §7.1.5 rule 2: issue 7 found it resent from attempt 0), until an answer settles it.
#[test]
fn a_doubt_is_resent_with_the_next_attempt_until_settled() {
    let mut h = Harness::new(1);
    let mut doubts: Doubts<&'static str> = Doubts::new();
    let mut release = h.call(at(0), h.request(MessageType::Release, 5, 0), ms(10));
    h.run(&mut release, at(1_000_000));
    let sends = release.timer().sends();
    assert!(sends >= 3);
    doubts.keep(b"r", b"c", "the datagram", release);
    let mut freed = Vec::new();

    assert!(matches!(
        doubts.begin_settle(at(20_000), b"other", b"c", |s| freed.push(s)),
        Settle::Clear
    ));
    let Settle::Resend(resend) = doubts.begin_settle(at(20_000), b"r", b"c", |s| freed.push(s))
    else {
        panic!("the doubt is sent again")
    };
    assert_eq!(resend.payload, "the datagram");
    assert!(
        matches!(
            doubts.begin_settle(at(20_000), b"r", b"c", |_| {}),
            Settle::Busy
        ),
        "another call on the lock while it is being settled"
    );
    let mut call = resend.call(at(20_000), at(20_005), &h.rtt, &h.routes);
    assert_eq!(call.request().request_id, 5);
    assert_eq!(
        sent(&mut call).attempt,
        sends as u16,
        "the next attempt number"
    );
    h.run(&mut call, at(1_000_000));
    assert!(!doubts.end_settle(call, |s| freed.push(s)), "not settled");

    let Settle::Resend(resend) = doubts.begin_settle(at(30_000), b"r", b"c", |s| freed.push(s))
    else {
        panic!("still a doubt")
    };
    let mut call = resend.call(at(30_000), at(40_000), &h.rtt, &h.routes);
    let copy = sent(&mut call);
    assert!(
        copy.attempt > sends as u16,
        "numbering goes on from the failed settle"
    );
    {
        let reply = answer(&call, copy.attempt, Status::Ok);
        h.reply(&mut call, at(30_100), node(0), reply)
    };
    assert!(doubts.end_settle(call, |s| freed.push(s)));
    assert_eq!(freed, [SESSION], "its session is free again");
    assert!(doubts.is_empty());
}

#[test]
fn doubts_are_forgotten_after_their_lifetime_and_bounded() {
    let h = Harness::new(1);
    let mut doubts: Doubts<()> = Doubts::new();
    for id in 0..DOUBTS_MAX as u64 {
        let mut release = h.call(at(0), h.request(MessageType::Release, id + 1, 0), ms(1));
        h.run(&mut release, at(10_000));
        doubts.keep(b"r", &id.to_be_bytes(), (), release);
    }
    assert!(doubts.is_full());
    let mut freed = 0;
    doubts.expire(at(0) + DOUBT_LIFETIME - Duration::from_micros(1), |_| {
        freed += 1
    });
    assert_eq!(freed, 0);
    let Settle::Resend(_) = doubts.begin_settle(at(1), b"r", &0u64.to_be_bytes(), |_| {}) else {
        panic!("a doubt")
    };
    doubts.expire(at(0) + DOUBT_LIFETIME, |_| freed += 1);
    assert_eq!(freed, DOUBTS_MAX - 1, "all but the one being settled");
    doubts.abandon_settle(1);
    doubts.expire(at(0) + DOUBT_LIFETIME, |_| freed += 1);
    assert!(doubts.is_empty());
}

/// A doubt whose lifetime is over is not sent again: the call ends at once, still in doubt.
#[test]
fn no_copy_of_a_doubt_after_the_request_lifetime() {
    let h = Harness::new(1);
    let mut doubts: Doubts<()> = Doubts::new();
    let mut release = h.call(at(0), h.request(MessageType::Release, 1, 0), ms(1));
    h.run(&mut release, at(10_000));
    doubts.keep(b"r", b"c", (), release);
    let late = at(0) + REQUEST_LIFETIME_MAX;
    let Settle::Resend(resend) = doubts.begin_settle(late, b"r", b"c", |_| {}) else {
        panic!("kept until DOUBT_LIFETIME")
    };
    let mut call = resend.call(late, late + ms(1_000), &h.rtt, &h.routes);
    assert_eq!(call.poll_transmit(), None);
    assert_eq!(call.outcome(), Some(Outcome::InDoubt(DoubtCause::Silence)));
}

/// Spec §6.4: the lease a client relies on is shorter by the drift bound, rounded against
/// the client (the simulator's copy rounded it down: a 1 ms lease at 1 ppm stayed 1000 µs).
#[test]
fn a_lease_is_shortened_by_the_drift_bound_rounded_up() {
    assert_eq!(lease_validity(1_000, 10_000), ms(990));
    assert_eq!(lease_validity(1, 1), Duration::from_micros(999));
    assert_eq!(lease_validity(5_000, 0), ms(5_000));
    assert_eq!(lease_validity(u32::MAX, 999_999).as_micros(), 4_294_967);
}

mod forged_input {
    //! Any sequence of replies (forged, stray, duplicated, out of order, from any address)
    //! and timeouts leaves a call in a state that keeps the rules: no panic, attempt numbers
    //! rise one by one, nothing leaves after the outcome or past the request's lifetime, a
    //! lease never starts after its answer, and only a RELEASE ends in doubt.

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Input {
        Reply {
            after_us: u64,
            from: u16,
            msg_type: usize,
            status: usize,
            /// Echo the call's ids (else a random pair).
            ours: bool,
            attempt: u16,
            queued: bool,
            hint: (u8, u16, u32),
            lease_ms: u32,
        },
        Timeout,
        /// Discovery replaced the client's routes: a ring over these nodes (spec §7.1.8).
        Rebase(Vec<u16>),
    }

    fn status_index(status: Status) -> usize {
        Status::ALL.iter().position(|&s| s == status).unwrap()
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (
                0..5_000u64,
                0..5u16,
                // Mostly the request's reply type (usize::MAX), else any type.
                prop_oneof![3 => Just(usize::MAX), 1 => 0..MessageType::ALL.len()],
                // Mostly the statuses the rules turn on, else any.
                prop_oneof![
                    3 => Just(status_index(Status::NotLeader)),
                    1 => Just(status_index(Status::Waiting)),
                    1 => Just(status_index(Status::Overloaded)),
                    3 => 0..Status::ALL.len(),
                ],
                prop::bool::weighted(0.9),
                prop_oneof![0..4u16, any::<u16>()],
                any::<bool>(),
                (0..4u8, 0..6u16, 0..100u32),
                0..3_000u32,
            )
                .prop_map(
                    |(after_us, from, msg_type, status, ours, attempt, queued, hint, lease_ms)| {
                        Input::Reply {
                            after_us,
                            from,
                            msg_type,
                            status,
                            ours,
                            attempt,
                            queued,
                            hint,
                            lease_ms,
                        }
                    }
                ),
            Just(Input::Timeout),
            prop::collection::vec(0..6u16, 1..5).prop_map(Input::Rebase),
        ]
    }

    proptest! {
        #[test]
        fn a_call_keeps_its_rules_whatever_it_is_sent(
            release in any::<bool>(),
            wait_ms in 0..2_000u32,
            inputs in prop::collection::vec(input(), 1..80),
        ) {
            let mut h = Harness::new(3);
            let msg_type = if release { MessageType::Release } else { MessageType::Acquire };
            let request = h.request(msg_type, 9, if release { 0 } else { wait_ms });
            let start = at(1_000);
            let mut call = h.call(start, request, ms(500));
            let mut now = start;
            let mut latest = sent(&mut call).attempt;
            prop_assert_eq!(latest, 0);
            let mut fast = 0;
            // Copies sent at once for a RETRY or a refused token since the call last moved
            // or sent on its timer (spec §7.1.9 rule 4).
            let mut at_once = 0;
            for input in inputs {
                let mut by_reply = None;
                match input {
                    Input::Timeout => {
                        let Some(due) = call.poll_timeout() else { break };
                        now = now.max(due);
                        call.handle_timeout(now, &h.routes);
                    }
                    Input::Rebase(ring) => {
                        let mut servers: Vec<SocketAddr> = Vec::new();
                        for addr in ring.into_iter().map(node) {
                            if !servers.contains(&addr) {
                                servers.push(addr);
                            }
                        }
                        let new = Routes::new(&servers, 1, false);
                        let old = std::mem::replace(&mut h.routes, new);
                        call.rebase(&old, &h.routes);
                    }
                    Input::Reply { after_us, from, msg_type, status, ours, attempt, queued,
                                   hint: (kind, port, ms), lease_ms } => {
                        now = now + Duration::from_micros(after_us);
                        let (session_id, request_id) =
                            if ours { (SESSION, 9) } else { (SESSION ^ 1, 9 + u64::from(attempt)) };
                        let hint = match kind {
                            0 => Hint::None,
                            1 => Hint::RetryAfter { ms },
                            2 => Hint::Leader(node(port)),
                            _ => Hint::Leader((Ipv4Addr::UNSPECIFIED, port).into()),
                        };
                        let status = Status::ALL[status];
                        let reply = Reply {
                            flags: if queued { Flags::QUEUED } else { Flags::empty() },
                            hint,
                            lease_ms,
                            ..Reply::bare(
                                MessageType::ALL
                                    .get(msg_type)
                                    .copied()
                                    .unwrap_or(request.msg_type.reply_type().unwrap()),
                                session_id,
                                request_id,
                                attempt,
                                status,
                            )
                        };
                        let before = call.outcome();
                        let handled = h.reply(&mut call, now, node(from), reply);
                        if before.is_some() {
                            prop_assert_eq!(handled, Handled::Dropped);
                        }
                        let asks_again = status == Status::Retry || status == Status::Unsupported;
                        if handled == Handled::Accepted && status != Status::NotLeader && !asks_again {
                            fast = 0; // a reply of another kind
                        }
                        by_reply = Some(status);
                    }
                }
                if let Some(copy) = call.poll_transmit() {
                    prop_assert!(call.outcome().is_none(), "a copy after the outcome");
                    prop_assert_eq!(copy.attempt, latest + 1, "attempts rise one by one");
                    latest = copy.attempt;
                    let first = call.timer().first_send().unwrap();
                    prop_assert!(now < first + REQUEST_LIFETIME_MAX);
                    // Rule 5.1: a NOT_LEADER sends a copy at once, a few in a row; so do a
                    // RETRY and an UNSUPPORTED (of a copy with a token), a few per node
                    // (spec §7.1.9 rule 4).
                    match by_reply {
                        Some(Status::Retry | Status::Unsupported) => {
                            at_once += 1;
                            prop_assert!(at_once <= RETRIES_AT_ONCE_MAX);
                        }
                        Some(status) => {
                            prop_assert_eq!(status, Status::NotLeader);
                            fast += 1;
                            at_once = 0;
                            prop_assert!(fast <= REDIRECTS_FAST_MAX);
                        }
                        None => at_once = 0,
                    }
                }
                prop_assert_eq!(call.poll_timeout().is_none(), call.outcome().is_some());
                match call.outcome() {
                    Some(Outcome::Answered { lease_start, status, .. }) => {
                        prop_assert!(lease_start <= now);
                        prop_assert!(lease_start >= start);
                        prop_assert!(!matches!(
                            status,
                            Status::NotLeader | Status::Waiting | Status::Overloaded | Status::Retry
                        ));
                        prop_assert!(!(release && status == Status::InternalError));
                    }
                    Some(Outcome::GaveUp { .. }) => prop_assert!(!release),
                    Some(Outcome::InDoubt(_)) => prop_assert!(release),
                    None => {}
                }
            }
            // The call always ends: at the latest its lifetime after the first copy.
            call.handle_timeout(start + REQUEST_LIFETIME_MAX, &h.routes);
            prop_assert!(call.outcome().is_some());
            prop_assert_eq!(call.poll_transmit(), None);
        }
    }
}

/// A KEEPALIVE names its shard (spec §4.11): its call goes by that shard's route, not by a
/// resource's (it has none); every other request by its resource's shard (spec §8.2).
#[test]
fn a_keepalive_is_routed_by_the_shard_it_names() {
    let servers: Vec<SocketAddr> = (1..=3).map(node).collect();
    let routes = Routes::new(&servers, 8, false);
    let mut token_bytes = [0u8; 8];
    let keepalive = Request {
        session_id: 1,
        request_id: 2,
        attempt: 0,
        body: RequestBody::Keepalive {
            shard: 5,
            shards: 8,
            ttl_ms: 0,
            tokens: udplock_protocol::Tokens::write(&[7], &mut token_bytes).unwrap(),
        },
    };
    let call = CallRequest::of(&keepalive, &routes, 1);
    assert_eq!(
        (call.msg_type, call.shard, call.wait_ms),
        (MessageType::Keepalive, 5, 0)
    );
    let status = Request {
        body: RequestBody::Status { resource: b"r" },
        ..keepalive
    };
    assert_eq!(
        CallRequest::of(&status, &routes, 1).shard,
        udplock_protocol::shard_of(b"r", 8) as usize
    );
}

/// A node of no cluster this client knows.
fn stranger() -> SocketAddr {
    (Ipv4Addr::new(10, 9, 9, 9), 7100).into()
}

/// Spec §7.1.4 rule 6 (issue 12: a grant with token 0, hold count 0 and a lease of 2^32 − 1
/// ms after asking for 10 s was accepted): a grant that contradicts the ACQUIRE is dropped,
/// changes nothing (no outcome, no RTT sample, no leader learned), and the call goes on to
/// accept the genuine grant that follows.
#[test]
fn a_grant_contradicting_the_request_is_dropped_and_the_genuine_one_accepted() {
    let mut h = Harness::new(3);
    let request = CallRequest {
        ttl_ms: 10_000,
        ..h.request(MessageType::Acquire, 1, 0)
    };
    let mut call = h.call(at(0), request, ms(100));
    sent(&mut call);
    let genuine = Reply {
        lease_ms: 10_000,
        ..answer(&call, 0, Status::Ok)
    };
    let forged = [
        Reply {
            fencing_token: 0,
            hold_count: 0,
            lease_ms: u32::MAX,
            ..genuine
        },
        Reply {
            fencing_token: 0,
            ..genuine
        },
        Reply {
            hold_count: 0,
            ..genuine
        },
        // A new hold's lease is its TTL: one above the TTL asked is never genuine.
        Reply {
            lease_ms: 10_001,
            ..genuine
        },
        // A re-entry may carry more than the TTL asked, but not more than lease_ms_max.
        Reply {
            hold_count: 2,
            lease_ms: LEASE_MS_MAX_DEFAULT + 1,
            ..genuine
        },
    ];
    for reply in forged {
        let handled = h.reply(&mut call, at(10), node(1), reply);
        assert!(
            matches!(handled, Handled::Rejected(Rejected::Contradicts(_))),
            "{reply:?}: {handled:?}"
        );
        assert_eq!(call.outcome(), None, "{reply:?}");
    }
    assert_eq!(h.rtt.samples(), 0, "a rejected reply is no RTT sample");
    assert_eq!(
        h.routes.first_destination(0).1,
        node(0),
        "nor names a leader"
    );
    assert_eq!(
        h.reply(&mut call, at(20), node(0), genuine),
        Handled::Accepted
    );
    assert!(matches!(
        call.outcome(),
        Some(Outcome::Answered {
            status: Status::Ok,
            ..
        })
    ));
    // A re-entry whose lease exceeds the TTL asked (an earlier grant promised more, spec
    // §4.2) is genuine.
    let mut again = h.call(at(100), request_id(request, 2), ms(100));
    sent(&mut again);
    let reentry = Reply {
        hold_count: 2,
        lease_ms: 30_000,
        ..answer(&again, 0, Status::Ok)
    };
    assert_eq!(
        h.reply(&mut again, at(110), node(0), reentry),
        Handled::Accepted
    );
}

fn request_id(request: CallRequest, request_id: u64) -> CallRequest {
    CallRequest {
        request_id,
        ..request
    }
}

/// Rule 6 for renewals: a RENEW_REPLY with a lease above what the client can have been
/// promised, or without a hold, is dropped; a KEEPALIVE_REPLY whose bitmap names a token it
/// did not list, or whose count is not its bits, is dropped. The genuine answers end the
/// calls.
#[test]
fn renewals_contradicting_the_request_are_dropped() {
    let mut h = Harness::new(1);
    let renew = CallRequest {
        ttl_ms: 5_000,
        ..h.request(MessageType::Renew, 1, 0)
    };
    let mut call = h.call(at(0), renew, ms(100));
    sent(&mut call);
    let genuine = Reply {
        lease_ms: 5_000,
        ..answer(&call, 0, Status::Ok)
    };
    for forged in [
        Reply {
            lease_ms: LEASE_MS_MAX_DEFAULT + 1,
            ..genuine
        },
        Reply {
            fencing_token: 0,
            ..genuine
        },
        Reply {
            hold_count: 0,
            ..genuine
        },
    ] {
        let handled = h.reply(&mut call, at(10), node(0), forged);
        assert!(matches!(handled, Handled::Rejected(_)), "{forged:?}");
    }
    assert_eq!(call.outcome(), None);
    assert_eq!(
        h.reply(&mut call, at(20), node(0), genuine),
        Handled::Accepted
    );

    let keepalive = CallRequest {
        tokens: 2,
        ..h.request(MessageType::Keepalive, 2, 0)
    };
    let mut call = h.call(at(100), keepalive, ms(100));
    sent(&mut call);
    let ok = answer(&call, 0, Status::Ok);
    let renewed = |bitmap: u64, hold_count: u32, lease_ms: u32| Reply {
        fencing_token: bitmap,
        hold_count,
        lease_ms,
        ..ok
    };
    for forged in [
        renewed(0b100, 1, 1_000),
        renewed(u64::MAX, 64, 1_000),
        renewed(0b11, 1, 1_000),
        renewed(0, 0, 1_000),
        renewed(0b01, 1, LEASE_MS_MAX_DEFAULT + 1),
    ] {
        let handled = h.reply(&mut call, at(110), node(0), forged);
        assert!(matches!(handled, Handled::Rejected(_)), "{forged:?}");
    }
    assert_eq!(call.outcome(), None);
    let genuine = renewed(0b11, 2, 1_000);
    assert_eq!(
        h.reply(&mut call, at(120), node(0), genuine),
        Handled::Accepted
    );
}

/// Rule 6 for the other replies: WAITING only answers an ACQUIRE that may wait, with no
/// hold and no lease above the TTL asked (a forged one would stretch the deadline and turn
/// copies into keepalives); a RELEASE_REPLY names the released hold's token; a free lock in
/// a STATUS_REPLY has nothing else.
#[test]
fn waiting_release_and_status_replies_contradicting_the_request_are_dropped() {
    let mut h = Harness::new(1);
    let rejected = |h: &mut Harness, call: &mut Call, reply: Reply| {
        let handled = h.reply(call, at(10), node(0), reply);
        assert!(matches!(handled, Handled::Rejected(_)), "{reply:?}");
        assert_eq!(call.outcome(), None);
        assert!(!call.timer().is_waiting(), "{reply:?}");
    };
    let acquire = CallRequest {
        ttl_ms: 1_000,
        ..h.request(MessageType::Acquire, 1, 5_000)
    };
    let mut call = h.call(at(0), acquire, ms(100));
    sent(&mut call);
    let waiting = Reply {
        lease_ms: 1_000,
        waiter_count: 1,
        ..answer(&call, 0, Status::Waiting)
    };
    for forged in [
        Reply {
            lease_ms: 1_001,
            ..waiting
        },
        Reply {
            fencing_token: 7,
            ..waiting
        },
    ] {
        rejected(&mut h, &mut call, forged);
    }
    assert_eq!(
        h.reply(&mut call, at(20), node(0), waiting),
        Handled::Accepted
    );
    assert!(call.timer().is_waiting());

    let error_waiting = Reply {
        msg_type: MessageType::ErrorReply,
        ..waiting
    };
    let mut other = h.call(at(0), request_id(acquire, 5), ms(100));
    sent(&mut other);
    rejected(
        &mut h,
        &mut other,
        Reply {
            request_id: 5,
            ..error_waiting
        },
    );

    let mut try_acquire = h.call(at(0), h.request(MessageType::Acquire, 2, 0), ms(100));
    sent(&mut try_acquire);
    let reply = answer(&try_acquire, 0, Status::Waiting);
    rejected(&mut h, &mut try_acquire, reply);

    let mut release = h.call(at(0), h.request(MessageType::Release, 3, 0), ms(100));
    sent(&mut release);
    for forged in [
        answer(&release, 0, Status::Waiting),
        Reply {
            fencing_token: 0,
            ..answer(&release, 0, Status::Ok)
        },
    ] {
        rejected(&mut h, &mut release, forged);
    }
    let reply = answer(&release, 0, Status::Ok);
    assert_eq!(
        h.reply(&mut release, at(20), node(0), reply),
        Handled::Accepted
    );

    let mut status = h.call(at(0), h.request(MessageType::Status, 4, 0), ms(100));
    sent(&mut status);
    let free = answer(&status, 0, Status::Ok);
    for forged in [
        Reply {
            fencing_token: 7,
            ..free
        },
        Reply {
            holder: b"someone",
            ..free
        },
        Reply {
            hold_count: 1,
            ..free
        },
    ] {
        rejected(&mut h, &mut status, forged);
    }
    assert_eq!(
        h.reply(&mut status, at(20), node(0), free),
        Handled::Accepted
    );
}

/// Spec §7.1.4 rule 5: a reply from an address that is no node the client knows is dropped,
/// whatever it says; one from another node of the cluster than the destination (a new
/// leader after a failover) is accepted.
#[test]
fn a_reply_from_an_address_that_is_no_known_node_is_dropped() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(0), h.request(MessageType::Release, 1, 0), ms(100));
    assert_eq!(sent(&mut call).to, node(0));
    let reply = answer(&call, 0, Status::Ok);
    assert_eq!(
        h.reply(&mut call, at(10), stranger(), reply),
        Handled::Rejected(Rejected::NotFromANode)
    );
    let not_leader = Reply {
        hint: Hint::Leader(stranger()),
        ..answer(&call, 0, Status::NotLeader)
    };
    assert_eq!(
        h.reply(&mut call, at(10), stranger(), not_leader),
        Handled::Rejected(Rejected::NotFromANode)
    );
    assert_eq!(call.outcome(), None);
    assert_eq!(call.poll_transmit(), None, "nothing sent because of them");
    assert_eq!(
        h.reply(&mut call, at(20), node(2), reply),
        Handled::Accepted
    );
    assert!(matches!(call.outcome(), Some(Outcome::Answered { .. })));
}

/// Spec §7.1.7 rule 5.4 (issue 12: a NOT_LEADER hint sent 42 datagrams to any address; and
/// ignoring hints to nodes the client has not met yet cost 3 % of answered operations in
/// joined simulator runs): a hint from a known node naming an address the client does not
/// know is followed on the timer only — no copy leaves at once, the route cache neither
/// learns the address nor caches it as the shard's leader — and its answer is accepted.
#[test]
fn a_hint_to_an_unknown_node_is_followed_on_the_timer_and_not_cached() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(200));
    assert_eq!(sent(&mut call).to, node(0));
    let hinted = Reply {
        hint: Hint::Leader(stranger()),
        ..answer(&call, 0, Status::NotLeader)
    };
    assert_eq!(
        h.reply(&mut call, at(10), node(0), hinted),
        Handled::Redirected
    );
    assert_eq!(call.poll_transmit(), None, "no fast redirect");
    assert_eq!(h.routes.find(stranger()), None, "not learned");
    let due = call.poll_timeout().unwrap();
    assert_eq!(
        due,
        call.timer().next_retransmit(),
        "the request's own timer"
    );
    call.handle_timeout(due, &h.routes);
    let copy = sent(&mut call);
    assert_eq!((copy.to, copy.attempt), (stranger(), 1));
    // The node it went to answers: accepted (the address of the copy sent, §7.1.4 rule 5),
    // and still not cached as the shard's leader.
    let grant = answer(&call, 1, Status::Ok);
    assert_eq!(
        h.reply(&mut call, due + ms(1), stranger(), grant),
        Handled::Accepted
    );
    assert!(matches!(
        call.outcome(),
        Some(Outcome::Answered { attempt: 1, .. })
    ));
    assert_eq!(h.routes.find(stranger()), None);
    assert_eq!(h.routes.first_destination(0).1, node(0));
}

/// Rule 5.4's bound: a known node that keeps naming an address nobody answers at costs the
/// request at most SILENT_SENDS_MAX copies there per hint, each on the back-off timer; then
/// the request moves on along the ring (rules 4 and 7), and no copy ever leaves at once.
#[test]
fn a_silent_unknown_hint_costs_timer_copies_only_then_the_ring() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(2_000));
    sent(&mut call);
    let mut copies = Vec::new();
    let mut now = 10;
    for _ in 0..4 {
        let from = call.destination();
        let attempt = call.timer().latest_attempt().unwrap();
        let reply = Reply {
            hint: Hint::Leader(stranger()),
            ..answer(&call, attempt, Status::NotLeader)
        };
        assert_eq!(
            h.reply(&mut call, at(now), from, reply),
            Handled::Redirected
        );
        assert_eq!(call.poll_transmit(), None, "no fast redirect");
        // The stranger stays silent: copies on the timer until it is left.
        loop {
            let next = call.poll_timeout().unwrap();
            call.handle_timeout(next, &h.routes);
            let copy = sent(&mut call);
            copies.push(copy.to);
            now = next.as_micros() + 10;
            if copy.to != stranger() {
                break;
            }
        }
    }
    let to_stranger = copies.iter().filter(|&&a| a == stranger()).count();
    assert_eq!(to_stranger, 4 * SILENT_SENDS_MAX as usize, "{copies:?}");
    assert!(copies
        .iter()
        .all(|&a| a == stranger() || h.routes.find(a).is_some()));
    assert_eq!(h.routes.find(stranger()), None, "never learned");
}

/// Once discovery adopts the hinted node (the member table read from the hinting node lists
/// it, §7.1.8 rule 3), its hint is a known node's: followed at once and cached (rule 5.1).
#[test]
fn a_hint_to_a_node_discovery_adopted_is_followed_at_once() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(200));
    sent(&mut call);
    let hinted = |call: &Call, attempt| Reply {
        hint: Hint::Leader(stranger()),
        ..answer(call, attempt, Status::NotLeader)
    };
    let reply = hinted(&call, 0);
    assert_eq!(
        h.reply(&mut call, at(10), node(0), reply),
        Handled::Redirected
    );
    assert_eq!(call.poll_transmit(), None);
    let adopted = h
        .routes
        .succeeded_by(&[node(0), node(1), node(2), stranger()]);
    call.rebase(&h.routes, &adopted);
    h.routes = adopted;
    let due = call.poll_timeout().unwrap();
    call.handle_timeout(due, &h.routes);
    assert_eq!(sent(&mut call).to, stranger());
    // The stranger is now a member; another request meets a hint to it from node 0.
    let mut other = h.call(due, h.request(MessageType::Acquire, 2, 0), ms(200));
    assert_eq!(sent(&mut other).to, node(0));
    let reply = hinted(&other, 0);
    assert_eq!(
        h.reply(&mut other, due + ms(1), node(0), reply),
        Handled::Redirected
    );
    let copy = sent(&mut other);
    assert_eq!((copy.to, copy.attempt), (stranger(), 1), "a fast redirect");
    assert_eq!(h.routes.first_destination(0).1, stranger(), "cached");
}

/// Spec §7.1.4 rule 5 before §7.1.7: a NOT_LEADER from an address that is no node the
/// client knows is dropped, so a forger cannot steer copies anywhere with a hint.
#[test]
fn a_hint_from_a_stranger_is_not_followed() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(0), h.request(MessageType::Acquire, 1, 0), ms(200));
    sent(&mut call);
    let forged = Reply {
        hint: Hint::Leader((Ipv4Addr::new(10, 9, 9, 8), 53).into()),
        ..answer(&call, 0, Status::NotLeader)
    };
    assert_eq!(
        h.reply(&mut call, at(10), stranger(), forged),
        Handled::Rejected(Rejected::NotFromANode)
    );
    let until = at(200_000);
    let copies = h.run(&mut call, until);
    assert!(
        copies.iter().all(|(_, c)| h.routes.find(c.to).is_some()),
        "{copies:?}"
    );
}

/// A RETRY to `call`'s copy `attempt`, carrying `token` (spec §7.1.9).
fn retry(call: &Call, attempt: u16, token: u8) -> Reply<'static> {
    Reply {
        hint: Hint::AddressToken(AddressToken([token; 16])),
        ..answer(call, attempt, Status::Retry)
    }
}

/// Spec §7.1.9 rules 1 to 3: a RETRY sends the same request again at once with the token,
/// without backing off or taking an RTT sample, and later requests to that node carry it.
#[test]
fn a_retry_resends_at_once_with_its_token_and_later_requests_carry_it() {
    let mut h = Harness::new(3);
    let mut call = h.call(at(1_000), h.request(MessageType::Acquire, 1, 0), ms(100));
    assert_eq!(sent(&mut call).token, None);
    let samples = h.rtt.samples();
    let retry = retry(&call, 0, 0xAB);
    assert_eq!(
        h.reply(&mut call, at(1_100), node(0), retry),
        Handled::Accepted
    );
    let copy = sent(&mut call);
    assert_eq!(
        copy,
        Transmit {
            to: node(0),
            attempt: 1,
            token: Some(AddressToken([0xAB; 16]))
        }
    );
    assert_eq!(h.rtt.samples(), samples, "no RTT sample from a RETRY");
    assert_eq!(
        call.poll_timeout(),
        Some(at(2_100)),
        "the initial RTO again from the resend: no back-off"
    );
    assert_eq!(call.outcome(), None, "RETRY is not an answer");
    // The grant answers the resent copy; its lease counts from that copy.
    let grant = answer(&call, 1, Status::Ok);
    h.reply(&mut call, at(1_200), node(0), grant);
    assert_eq!(
        call.outcome(),
        Some(Outcome::Answered {
            status: Status::Ok,
            attempt: 1,
            lease_start: at(1_100)
        })
    );
    assert_eq!(
        h.rtt.samples(),
        samples + 1,
        "the answer to the resend is a sample"
    );
    // A later request to that node carries the token from its first copy on.
    let mut next = h.call(at(2_000), h.request(MessageType::Release, 2, 0), ms(100));
    assert_eq!(sent(&mut next).token, Some(AddressToken([0xAB; 16])));
    // Another node gave none: it gets the session's latest (rule 3: with a cluster key it
    // accepts it); another session gets none (a token names one session).
    assert_eq!(routes::PeerToken::Unknown, h.routes.peer_token(1, SESSION));
    assert_eq!(h.routes.token(1, SESSION), Some(AddressToken([0xAB; 16])));
    assert_eq!(h.routes.token(0, SESSION + 1), None);
    let other = CallRequest {
        session_id: SESSION + 1,
        ..h.request(MessageType::Release, 3, 0)
    };
    let mut other = h.call(at(3_000), other, ms(100));
    assert_eq!(sent(&mut other).token, None);
}

/// Spec §7.1.9 rule 4: a server that answers RETRY to everything gets at most
/// RETRIES_AT_ONCE_MAX copies at once; then copies leave on the (backed-off) timer.
#[test]
fn retries_at_once_are_bounded() {
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Renew, 1, 0), ms(1_000));
    let mut attempt = sent(&mut call).attempt;
    for i in 0..RETRIES_AT_ONCE_MAX {
        let r = retry(&call, attempt, i as u8 + 1);
        h.reply(&mut call, at(10 * (u64::from(i) + 1)), node(0), r);
        let copy = sent(&mut call);
        assert_eq!(copy.token, Some(AddressToken([i as u8 + 1; 16])));
        attempt = copy.attempt;
    }
    let r = retry(&call, attempt, 9);
    h.reply(&mut call, at(100), node(0), r);
    assert_eq!(
        call.poll_transmit(),
        None,
        "no copy at once beyond the bound"
    );
    // The next copy leaves on the timer, with the newest token.
    let copies = h.run(&mut call, at(100_000));
    assert!(!copies.is_empty());
    assert!(copies
        .iter()
        .all(|(_, c)| c.token == Some(AddressToken([9; 16]))));
    assert!(copies[0].0 >= at(1_000), "on the timer: {copies:?}");
}

/// A RETRY to an older copy (a newer one is in flight) only updates the token.
#[test]
fn a_retry_to_an_older_copy_sends_nothing_at_once() {
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Renew, 1, 0), ms(1_000));
    let _ = sent(&mut call);
    call.handle_timeout(at(1_000), &h.routes);
    assert_eq!(sent(&mut call).attempt, 1);
    let r = retry(&call, 0, 5);
    h.reply(&mut call, at(1_100), node(0), r);
    assert_eq!(call.poll_transmit(), None);
    assert_eq!(h.routes.token(0, SESSION), Some(AddressToken([5; 16])));
}

/// Spec §7.1.9 rule 5: an older server refuses the flag (UNSUPPORTED): the client forgets
/// the token and sends the request again at once without it.
#[test]
fn an_unsupported_token_is_forgotten_and_the_request_resent_without_it() {
    let mut h = Harness::new(1);
    h.routes.set_token(0, SESSION, Some(AddressToken([3; 16])));
    let mut call = h.call(at(0), h.request(MessageType::Release, 1, 0), ms(1_000));
    assert_eq!(sent(&mut call).token, Some(AddressToken([3; 16])));
    let refused = Reply {
        msg_type: MessageType::ErrorReply,
        ..answer(&call, 0, Status::Unsupported)
    };
    h.reply(&mut call, at(100), node(0), refused);
    let copy = sent(&mut call);
    assert_eq!((copy.attempt, copy.token), (1, None));
    assert_eq!(h.routes.token(0, SESSION), None);
    assert_eq!(call.outcome(), None);
    // UNSUPPORTED for a copy without a token is the final answer, as before.
    let refused = Reply {
        msg_type: MessageType::ErrorReply,
        ..answer(&call, 1, Status::Unsupported)
    };
    h.reply(&mut call, at(200), node(0), refused);
    assert!(matches!(
        call.outcome(),
        Some(Outcome::Answered {
            status: Status::Unsupported,
            ..
        })
    ));
}

/// A sealed request's call (spec §7.1.10), its first copy taken.
fn sealed_call(h: &Harness, msg_type: MessageType) -> Call {
    let mut call = h.call(at(0), h.request(msg_type, 1, 0).sealed(true), ms(100));
    sent(&mut call);
    call
}

/// Spec §7.1.10: a call sent with a client key believes only replies that key sealed; an
/// unsealed grant, one sealed with another key or with a bad MAC (the shell reads both as
/// `Unverified`), and an unsealed NOT_LEADER are dropped and counted, the call goes on, and
/// the sealed grant that follows is its answer.
#[test]
fn a_sealed_call_believes_only_its_keys_seal() {
    let mut h = Harness::new(2);
    let mut call = sealed_call(&h, MessageType::Acquire);
    let grant = answer(&call, 0, Status::Ok);
    let redirect = Reply {
        hint: Hint::Leader(node(1)),
        ..answer(&call, 0, Status::NotLeader)
    };
    for (reply, seal) in [
        (grant, Seal::Unsealed),
        (grant, Seal::Unverified),
        (redirect, Seal::Unsealed),
        (answer(&call, 0, Status::LockNotHeld), Seal::Unsealed),
        (answer(&call, 0, Status::Forbidden), Seal::Unsealed),
    ] {
        let handled = h.sealed_reply(&mut call, at(10), node(0), reply, seal);
        assert!(
            matches!(handled, Handled::Rejected(Rejected::Seal(_))),
            "{reply:?} {seal:?}: {handled:?}"
        );
        assert_eq!(call.outcome(), None);
        assert_eq!(call.poll_transmit(), None, "nothing sent for it");
        assert_eq!(call.destination(), node(0), "no redirect");
    }
    let handled = h.sealed_reply(&mut call, at(20), node(0), grant, Seal::Verified);
    assert_eq!(handled, Handled::Accepted);
    assert!(matches!(
        call.outcome(),
        Some(Outcome::Answered {
            status: Status::Ok,
            ..
        })
    ));
}

/// Spec §7.1.10 rules 2 and 3: FORBIDDEN comes sealed and is final for every sealed call;
/// UNAUTHENTICATED comes unsealed (the server has no key to seal with), as does an
/// ERROR_REPLY (an older server's UNSUPPORTED for the AUTH flag), and either ends an
/// ACQUIRE that was not told WAITING (a forged one can leave at most a phantom hold, as a
/// late copy can) and a STATUS (a read). None is retried.
#[test]
fn sealed_forbidden_is_final_and_unsealed_refusals_end_only_a_fresh_acquire() {
    let mut h = Harness::new(1);
    let final_cases = [
        (
            MessageType::Release,
            Status::Forbidden,
            Seal::Verified,
            false,
        ),
        (MessageType::Renew, Status::Forbidden, Seal::Verified, false),
        (
            MessageType::Acquire,
            Status::Forbidden,
            Seal::Verified,
            false,
        ),
        (
            MessageType::Acquire,
            Status::Unauthenticated,
            Seal::Unsealed,
            false,
        ),
        (
            MessageType::Acquire,
            Status::Unsupported,
            Seal::Unsealed,
            true,
        ),
        (
            MessageType::Status,
            Status::Unauthenticated,
            Seal::Unsealed,
            false,
        ),
    ];
    for (msg_type, status, seal, error_reply) in final_cases {
        let mut call = sealed_call(&h, msg_type);
        let mut reply = answer(&call, 0, status);
        if error_reply {
            reply.msg_type = MessageType::ErrorReply;
        }
        let handled = h.sealed_reply(&mut call, at(10), node(0), reply, seal);
        assert_eq!(handled, Handled::Accepted, "{msg_type:?} {status:?}");
        assert_eq!(
            call.outcome(),
            Some(Outcome::Answered {
                status,
                attempt: 0,
                lease_start: at(0)
            }),
            "{msg_type:?} {status:?}: final"
        );
    }
}

/// Spec §7.1.10 rule 2, §12 "Forged refusals": an unsealed refusal may be forged by anyone
/// who read the request's ids off the network, so it never ends a sealed RELEASE (a forged
/// answer would settle nothing the server did, and a late copy of the real RELEASE could
/// then free a hold the client took again), RENEW, KEEPALIVE, CANCEL_WAIT or CONFIGURE, nor
/// an ACQUIRE told WAITING. It is rejected and counted; the call goes on retransmitting to
/// its deadline, where a RELEASE is a doubt as after silence.
#[test]
fn an_unsealed_refusal_ends_no_sealed_release_renew_or_waited_acquire() {
    let mut h = Harness::new(1);
    let refusals = [
        (Status::Unauthenticated, false),
        (Status::Unsupported, true),
        (Status::Malformed, true),
        (Status::Unauthenticated, true),
    ];
    for msg_type in [
        MessageType::Release,
        MessageType::Renew,
        MessageType::Keepalive,
        MessageType::CancelWait,
        MessageType::Configure,
    ] {
        let mut call = sealed_call(&h, msg_type);
        for (status, error_reply) in refusals {
            let mut reply = answer(&call, 0, status);
            if error_reply {
                reply.msg_type = MessageType::ErrorReply;
            }
            let handled = h.sealed_reply(&mut call, at(10), node(0), reply, Seal::Unsealed);
            assert!(
                matches!(handled, Handled::Rejected(Rejected::Seal(_))),
                "{msg_type:?} {status:?}: {handled:?}"
            );
            assert_eq!(call.outcome(), None, "{msg_type:?} {status:?}");
        }
        let copies = h.run(&mut call, at(1_000_000));
        assert!(!copies.is_empty(), "{msg_type:?}: retransmitted");
        let expected = if msg_type == MessageType::Release {
            Outcome::InDoubt(DoubtCause::Unsealed)
        } else {
            Outcome::GaveUp { overloaded: None }
        };
        assert_eq!(call.outcome(), Some(expected), "{msg_type:?}");
    }
    // An ACQUIRE told WAITING (sealed) is queued at a server that knows the key.
    let mut call = h.call(
        at(0),
        h.request(MessageType::Acquire, 1, 5_000).sealed(true),
        ms(100),
    );
    sent(&mut call);
    let waiting = answer(&call, 0, Status::Waiting);
    h.sealed_reply(&mut call, at(10), node(0), waiting, Seal::Verified);
    let refusal = answer(&call, 0, Status::Unauthenticated);
    assert!(matches!(
        h.sealed_reply(&mut call, at(20), node(0), refusal, Seal::Unsealed),
        Handled::Rejected(Rejected::Seal(_))
    ));
    assert_eq!(call.outcome(), None);
    // Not final statuses in an unsealed ERROR_REPLY move nothing: no redirect, no pause.
    let mut call = sealed_call(&h, MessageType::Acquire);
    for status in [Status::NotLeader, Status::Overloaded, Status::Retry] {
        let reply = Reply {
            msg_type: MessageType::ErrorReply,
            hint: Hint::Leader(node(1)),
            ..answer(&call, 0, status)
        };
        let handled = h.sealed_reply(&mut call, at(10), node(0), reply, Seal::Unsealed);
        assert!(
            matches!(handled, Handled::Rejected(Rejected::Seal(_))),
            "{status:?}"
        );
        assert_eq!(call.outcome(), None);
        assert_eq!(call.poll_transmit(), None);
        assert_eq!(call.destination(), node(0));
    }
}

/// The attack of the brief (spec §12, "Forged refusals"): a sealed RELEASE left in doubt is
/// sent again before the next ACQUIRE; a forged unsealed UNAUTHENTICATED (or ERROR_REPLY)
/// to that copy must not settle it, or the ACQUIRE would leave and a late copy of the
/// RELEASE free the new hold. Only the key's sealed answer settles it.
#[test]
fn an_unsealed_refusal_settles_no_doubt() {
    let mut h = Harness::new(1);
    let mut doubts: Doubts<()> = Doubts::new();
    let mut release = h.call(
        at(0),
        h.request(MessageType::Release, 5, 0).sealed(true),
        ms(10),
    );
    h.run(&mut release, at(1_000_000));
    doubts.keep(b"r", b"c", (), release);
    let Settle::Resend(resend) = doubts.begin_settle(at(20_000), b"r", b"c", |_| {}) else {
        panic!("the doubt is sent again")
    };
    let mut call = resend.call(at(20_000), at(30_000), &h.rtt, &h.routes);
    let copy = sent(&mut call);
    for error_reply in [false, true] {
        let mut forged = answer(&call, copy.attempt, Status::Unauthenticated);
        if error_reply {
            forged.msg_type = MessageType::ErrorReply;
        }
        h.sealed_reply(&mut call, at(20_010), node(0), forged, Seal::Unsealed);
    }
    h.run(&mut call, at(1_000_000));
    assert_eq!(call.outcome(), Some(Outcome::InDoubt(DoubtCause::Unsealed)));
    assert!(!doubts.end_settle(call, |_| {}), "not settled");
    assert_eq!(doubts.len(), 1);

    let Settle::Resend(resend) = doubts.begin_settle(at(40_000), b"r", b"c", |_| {}) else {
        panic!("still a doubt")
    };
    let mut call = resend.call(at(40_000), at(50_000), &h.rtt, &h.routes);
    let copy = sent(&mut call);
    let genuine = answer(&call, copy.attempt, Status::Ok);
    h.sealed_reply(&mut call, at(40_010), node(0), genuine, Seal::Verified);
    assert!(
        doubts.end_settle(call, |_| {}),
        "the key's answer settles it"
    );
    assert!(doubts.is_empty());
}

/// A call without a key takes unsealed replies as before, and drops a sealed one: a seal
/// on the answer to a request that carried none is a contradiction (spec §7.1.10).
#[test]
fn a_call_without_a_key_drops_sealed_replies() {
    let mut h = Harness::new(1);
    let mut call = h.call(at(0), h.request(MessageType::Renew, 1, 0), ms(100));
    sent(&mut call);
    let renewal = answer(&call, 0, Status::Ok);
    for seal in [Seal::Verified, Seal::Unverified] {
        let handled = h.sealed_reply(&mut call, at(10), node(0), renewal, seal);
        assert!(matches!(handled, Handled::Rejected(Rejected::Seal(_))));
        assert_eq!(call.outcome(), None);
    }
    assert_eq!(
        h.reply(&mut call, at(20), node(0), renewal),
        Handled::Accepted
    );
    assert!(call.outcome().is_some());
}

/// The shell's reading of a reply's trailer ([`seal_of`]): the key's own seal verifies;
/// another key's, a changed byte, a cut datagram, or a seal read by a client without a key
/// do not; an unsealed reply is unsealed.
#[test]
fn seal_of_verifies_the_reply_mac_of_the_clients_key() {
    use udplock_protocol::{ClientKey, DATAGRAM_LEN_MAX};
    let key = ClientKey::new([7; 32]);
    let other = ClientKey::new([8; 32]);
    let reply = Reply {
        hold_count: 1,
        fencing_token: 42,
        lease_ms: 10_000,
        ..Reply::bare(MessageType::AcquireReply, SESSION, 1, 0, Status::Ok)
    };
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = reply.encode_sealed(&mut out, Some(&key)).unwrap();
    let sealed = &out[..n];
    assert_eq!(seal_of(Some(&key), sealed), Seal::Verified);
    assert_eq!(seal_of(Some(&other), sealed), Seal::Unverified);
    assert_eq!(seal_of(None, sealed), Seal::Unverified);
    for i in [0, 2, 12, 40, n - 20, n - 1] {
        let mut changed = out;
        changed[i] ^= 0x10;
        assert_ne!(
            seal_of(Some(&key), &changed[..n]),
            Seal::Verified,
            "byte {i}"
        );
    }
    assert_ne!(seal_of(Some(&key), &sealed[..n - 1]), Seal::Verified);
    let mut plain = [0u8; DATAGRAM_LEN_MAX];
    let m = reply.encode(&mut plain).unwrap();
    assert_eq!(seal_of(Some(&key), &plain[..m]), Seal::Unsealed);
    assert_eq!(seal_of(None, &plain[..m]), Seal::Unsealed);
}
