//! Each rule of the SWIM core, on hand-driven members (SWIM 2002 §3–§4, Lifeguard 2017 §IV).

use std::net::SocketAddr;

use super::*;

fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 7000))
}

fn id_of(a: SocketAddr) -> NodeId {
    match a.ip() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            ((o[2] as u64) << 8) | o[3] as u64
        }
        _ => unreachable!(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n: u64) -> Instant {
    Instant::from_micros(n * 1_000)
}

fn member(id: NodeId, lifeguard: bool) -> Swim {
    let mut c = Config::new(id, addr(id));
    c.lifeguard = lifeguard;
    Swim::new(c, id, Instant::ZERO).unwrap()
}

fn update(id: NodeId, incarnation: u64, state: State, from: NodeId) -> Update {
    Update {
        id,
        addr: addr(id),
        incarnation,
        state,
        from,
    }
}

fn drain(s: &mut Swim) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events(s: &mut Swim) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Members 1..=n that all know each other (the news of each one's arrival is gossip that
/// the tests below would otherwise see first).
fn group(n: u64, lifeguard: bool) -> Vec<Swim> {
    let mut all: Vec<Swim> = (1..=n).map(|id| member(id, lifeguard)).collect();
    for s in all.iter_mut() {
        for other in 1..=n {
            if other != s.id() {
                s.apply(Instant::ZERO, update(other, 0, State::Alive, 0));
            }
        }
        s.broadcasts.clear();
        drain(s);
        events(s);
    }
    all
}

/// Delivers every queued message (zero delay) until the group is quiet, except those `drop`
/// refuses; returns what was delivered as (from, to, message).
fn settle(
    all: &mut [Swim],
    now: Instant,
    drop: &dyn Fn(NodeId, NodeId, &Message) -> bool,
) -> Vec<(NodeId, NodeId, Message)> {
    let mut log = Vec::new();
    loop {
        let mut moved = false;
        for i in 0..all.len() {
            let from = all[i].id();
            for t in drain(&mut all[i]) {
                moved = true;
                let to = id_of(t.to);
                if drop(from, to, &t.msg) {
                    continue;
                }
                log.push((from, to, t.msg.clone()));
                if let Some(dst) = all.iter_mut().find(|s| s.id() == to) {
                    dst.handle_message(now, from, addr(from), t.msg);
                }
            }
        }
        if !moved {
            return log;
        }
    }
}

fn keep_all(_: NodeId, _: NodeId, _: &Message) -> bool {
    false
}

#[test]
fn precedence_follows_swim_section_4_2() {
    use State::*;
    // {Alive, i} overrides {Suspect, j} and {Alive, j} only if i > j.
    assert!(overrides((Alive, 2), (Suspect, 1)));
    assert!(!overrides((Alive, 1), (Suspect, 1)));
    assert!(overrides((Alive, 2), (Alive, 1)));
    assert!(!overrides((Alive, 1), (Alive, 1)));
    // {Suspect, i} overrides {Suspect, j} if i > j, {Alive, j} if i >= j.
    assert!(overrides((Suspect, 2), (Suspect, 1)));
    assert!(!overrides((Suspect, 1), (Suspect, 1)));
    assert!(overrides((Suspect, 1), (Alive, 1)));
    assert!(!overrides((Suspect, 0), (Alive, 1)));
    // {Confirm, i} overrides {Alive, j} and {Suspect, j}: the paper says for any j, this core
    // for j <= i (see `overrides` and the test of the late confirmation below).
    assert!(overrides((Dead, 5), (Alive, 5)));
    assert!(overrides((Dead, 5), (Suspect, 2)));
    assert!(!overrides((Dead, 0), (Alive, 5)));
    assert!(!overrides((Dead, 0), (Suspect, 5)));
    assert!(overrides((Left, 5), (Alive, 5)));
    assert!(!overrides((Left, 4), (Alive, 5)));
    // The dead come back only with a higher incarnation; suspicion never revives them.
    assert!(!overrides((Suspect, 9), (Dead, 1)));
    assert!(!overrides((Alive, 1), (Dead, 1)));
    assert!(overrides((Alive, 2), (Dead, 1)));
    assert!(!overrides((Dead, 3), (Left, 1)));
    assert!(overrides((Left, 1), (Dead, 1)));
}

#[test]
fn a_suspected_member_refutes_with_a_higher_incarnation() {
    let mut a = member(1, true);
    a.apply(Instant::ZERO, update(2, 0, State::Alive, 0));
    events(&mut a);
    // Someone suspects member 1 at its incarnation 0: it refutes with 1.
    a.handle_message(
        at(1),
        2,
        addr(2),
        Message::Ack {
            seq: 99,
            target: 2,
            updates: vec![update(1, 0, State::Suspect, 2)],
        },
    );
    assert_eq!(a.incarnation(), 1);
    assert_eq!(events(&mut a), vec![Event::Refuted { incarnation: 1 }]);
    // Lifeguard §IV.A: having to refute is a sign of this member's own trouble.
    assert_eq!(a.health(), 1);
    // The refutation is the first news it gossips.
    let g = a.gossip(PING_FIXED_LEN, None);
    assert!(g.contains(&update(1, 1, State::Alive, 0)), "{g:?}");
    // A suspicion of an older incarnation is stale: nothing happens.
    a.apply(at(2), update(1, 0, State::Suspect, 2));
    assert_eq!(a.incarnation(), 1);
    // A death notice is refuted too.
    a.apply(at(3), update(1, 1, State::Dead, 0));
    assert_eq!(a.incarnation(), 2);
}

#[test]
fn a_suspicion_becomes_death_after_its_timeout_unless_refuted() {
    for lifeguard in [false, true] {
        let mut a = member(1, lifeguard);
        a.apply(Instant::ZERO, update(2, 0, State::Alive, 0));
        a.apply(Instant::ZERO, update(3, 0, State::Alive, 0));
        events(&mut a);
        a.apply(at(10), update(2, 0, State::Suspect, 3));
        a.apply(at(10), update(3, 0, State::Suspect, 2));
        assert_eq!(
            events(&mut a),
            vec![
                Event::Suspect {
                    id: 2,
                    incarnation: 0
                },
                Event::Suspect {
                    id: 3,
                    incarnation: 0
                }
            ]
        );
        let timeout = a.suspicion_timeout(2).unwrap();
        // Member 3 refutes; member 2 does not.
        a.apply(at(20), update(3, 1, State::Alive, 0));
        assert_eq!(
            events(&mut a),
            vec![Event::Alive {
                id: 3,
                incarnation: 1
            }]
        );
        let deadline = at(10) + timeout;
        assert_eq!(a.poll_timeout().min(deadline), a.poll_timeout());
        a.handle_timeout(deadline - Duration::from_micros(1));
        assert_eq!(a.member(2), Some((State::Suspect, 0)));
        a.handle_timeout(deadline);
        assert_eq!(a.member(2), Some((State::Dead, 0)));
        assert_eq!(a.member(3), Some((State::Alive, 1)));
        let ev = events(&mut a);
        assert!(ev.contains(&Event::Dead { id: 2 }), "{ev:?}");
        assert!(!ev.contains(&Event::Dead { id: 3 }), "{ev:?}");
    }
}

/// Runs the group until member 1 has probed `target` and its period ended; returns the log.
fn probe_round(
    all: &mut [Swim],
    target: NodeId,
    drop: &dyn Fn(NodeId, NodeId, &Message) -> bool,
) -> Vec<(NodeId, NodeId, Message)> {
    all[0].probe_order = vec![target];
    all[0].probe_next = 0;
    let mut log = Vec::new();
    let mut now = Instant::ZERO;
    let mut started = false;
    for _ in 0..100 {
        now = all.iter().map(|s| s.poll_timeout()).min().unwrap();
        let before = all[0].periods();
        for s in all.iter_mut() {
            if s.poll_timeout() <= now {
                s.handle_timeout(now);
            }
        }
        // Only member 1 probes in these tests: the others' probes are forgotten.
        for s in all[1..].iter_mut() {
            s.probe = None;
            s.transmits
                .retain(|t| !matches!(t.msg, Message::Ping { .. }));
        }
        if all[0].periods() > before {
            if started {
                // The next period's probe is not part of this round.
                all[0].probe = None;
                drain(&mut all[0]);
                return log;
            }
            started = true;
        }
        log.extend(settle(all, now, drop));
    }
    panic!("no second period by {now:?}");
}

#[test]
fn a_silent_target_is_probed_through_k_others_and_their_ack_counts() {
    let mut all = group(5, true);
    // Member 1's direct ping to 2 and 2's direct ack to 1 are lost; the paths through the
    // helpers work.
    let drop = |from: NodeId, to: NodeId, _: &Message| (from, to) == (1, 2) || (from, to) == (2, 1);
    let log = probe_round(&mut all, 2, &drop);
    let reqs: Vec<_> = log
        .iter()
        .filter(|(f, _, m)| *f == 1 && matches!(m, Message::PingReq { target: 2, .. }))
        .collect();
    assert_eq!(reqs.len(), 3, "k = 3 ping-reqs: {log:?}");
    let relayed = log
        .iter()
        .filter(|(f, t, m)| *f != 2 && *t == 1 && matches!(m, Message::Ack { .. }))
        .count();
    assert!(relayed >= 1, "{log:?}");
    assert_eq!(all[0].member(2), Some((State::Alive, 0)));
    assert_eq!(all[0].stats().probes_failed, 0);
}

#[test]
fn nacks_tell_the_prober_that_the_target_is_the_trouble() {
    // Target 2 is unreachable from everyone: the helpers answer NACK, so member 1's health
    // rises by one (the failed probe) and not by the nacks it got.
    let mut all = group(5, true);
    let drop = |_: NodeId, to: NodeId, _: &Message| to == 2;
    let log = probe_round(&mut all, 2, &drop);
    let nacks = log
        .iter()
        .filter(|(_, t, m)| *t == 1 && matches!(m, Message::Nack { .. }))
        .count();
    assert_eq!(nacks, 3, "{log:?}");
    assert_eq!(all[0].member(2), Some((State::Suspect, 0)));
    assert_eq!(all[0].health(), 1);

    // Member 1 itself is cut off from the helpers' answers: no nack arrives, so the trouble
    // is more likely its own: health rises by 1 + 3 missed nacks.
    let mut all = group(5, true);
    let drop = |from: NodeId, to: NodeId, _: &Message| to == 2 || (to == 1 && from != 2);
    probe_round(&mut all, 2, &drop);
    assert_eq!(all[0].health(), 4);

    // Without Lifeguard there are no nacks and no health.
    let mut all = group(5, false);
    let drop = |_: NodeId, to: NodeId, _: &Message| to == 2;
    let log = probe_round(&mut all, 2, &drop);
    assert!(!log
        .iter()
        .any(|(_, _, m)| matches!(m, Message::Nack { .. })));
    assert_eq!(all[0].health(), 0);
    assert_eq!(all[0].member(2), Some((State::Suspect, 0)));
}

#[test]
fn local_health_stretches_the_period_and_recovers_with_acks() {
    let mut all = group(4, true);
    // Member 1 hears nothing at all: each failed probe raises its health by 1 + 3 missed
    // nacks, up to health_max.
    let deaf = |_: NodeId, to: NodeId, _: &Message| to == 1;
    for _ in 0..3 {
        probe_round(&mut all, 2, &deaf);
    }
    assert_eq!(all[0].health(), 8);
    // Its own period is stretched by (1 + health).
    let now = all[0].period_end;
    all[0].handle_timeout(now);
    let period = all[0].period_end.saturating_since(now);
    assert!(
        period.as_micros() >= 9 * ms(1_000).as_micros(),
        "{period:?}"
    );
    // Each probe that works brings it down by one.
    all[0].probe = None;
    let before = all[0].health();
    probe_round(&mut all, 3, &keep_all);
    probe_round(&mut all, 4, &keep_all);
    assert_eq!(all[0].health(), before - 2);
}

#[test]
fn the_suspicion_timeout_shrinks_with_independent_confirmations() {
    let mut a = member(1, true);
    for id in 2..=8 {
        a.apply(Instant::ZERO, update(id, 0, State::Alive, 0));
    }
    // n = 8 → min = 4 periods (log10 8 < 1), max = 6 × min = 24 periods.
    a.apply(at(0), update(2, 0, State::Suspect, 3));
    assert_eq!(a.suspicion_timeout(2), Some(ms(24_000)));
    let mut last = ms(24_000);
    for (c, from) in [4, 5, 6].into_iter().enumerate() {
        a.apply(at(1), update(2, 0, State::Suspect, from));
        let t = a.suspicion_timeout(2).unwrap();
        assert!(t < last, "confirmation {c}: {t:?} after {last:?}");
        last = t;
    }
    // K = 3 confirmations reach the minimum; the same suspecter twice is no confirmation.
    assert_eq!(last, ms(4_000));
    a.apply(at(1), update(2, 0, State::Suspect, 7));
    assert_eq!(a.suspicion_timeout(2), Some(ms(4_000)));

    // Without Lifeguard the timeout is fixed at the minimum.
    let mut b = member(1, false);
    for id in 2..=8 {
        b.apply(Instant::ZERO, update(id, 0, State::Alive, 0));
    }
    b.apply(at(0), update(2, 0, State::Suspect, 3));
    b.apply(at(0), update(2, 0, State::Suspect, 4));
    assert_eq!(b.suspicion_timeout(2), Some(ms(4_000)));
}

#[test]
fn each_update_is_gossiped_lambda_log_n_times_least_sent_first() {
    let mut a = member(1, true);
    for id in 2..=20 {
        a.apply(Instant::ZERO, update(id, 0, State::Alive, 0));
    }
    // n = 20: λ·⌈log10 21⌉ = 4 × 2 = 8.
    assert_eq!(a.retransmit_limit(), 8);
    a.broadcasts.clear();
    a.apply(at(1), update(5, 0, State::Suspect, 9));
    let mut sent = 0;
    for _ in 0..20 {
        if a.gossip(PING_FIXED_LEN, None)
            .contains(&update(5, 0, State::Suspect, 9))
        {
            sent += 1;
        }
    }
    assert_eq!(sent, 8);
    // Fresh news goes before news already sent, whatever the room.
    a.apply(at(2), update(6, 0, State::Suspect, 9));
    a.gossip(PING_FIXED_LEN, None);
    a.apply(at(3), update(7, 0, State::Suspect, 9));
    let g = a.gossip(PING_FIXED_LEN, None);
    assert_eq!(g[0].id, 7, "{g:?}");
    // A message never exceeds its byte budget, however much news waits.
    for id in 100..200 {
        a.apply(at(4), update(id, 0, State::Alive, 0));
    }
    let g = a.gossip(PING_REQ_FIXED_LEN, None);
    assert_eq!(g.len(), UPDATES_PER_MESSAGE_MAX);
    let msg = Message::PingReq {
        seq: 1,
        target: 2,
        target_addr: addr(2),
        updates: g,
    };
    assert!(msg.body_len() <= MESSAGE_LEN_MAX);
}

#[test]
fn the_buddy_system_tells_a_suspect_in_the_ping_itself() {
    let mut a = member(1, true);
    a.apply(Instant::ZERO, update(2, 0, State::Alive, 0));
    a.apply(at(1), update(2, 0, State::Suspect, 3));
    // Spend the suspicion's gossip so only the buddy rule can carry it.
    for _ in 0..20 {
        a.gossip(PING_FIXED_LEN, None);
    }
    a.probe_order = vec![2];
    a.probe_next = 0;
    drain(&mut a);
    a.handle_timeout(a.period_end);
    let t = drain(&mut a);
    match &t[..] {
        [Transmit {
            msg: Message::Ping {
                updates, target: 2, ..
            },
            ..
        }] => assert_eq!(updates[0], update(2, 0, State::Suspect, 3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_leaving_member_tells_the_group_and_never_suspects() {
    let mut all = group(4, true);
    all[0].leave(at(1));
    assert!(!all[0].left_announced());
    let log = settle(&mut all, at(1), &keep_all);
    assert_eq!(
        log.iter()
            .filter(|(f, _, m)| *f == 1 && matches!(m, Message::Ping { .. }))
            .count(),
        3
    );
    for s in all[1..].iter_mut() {
        assert_eq!(s.member(1), Some((State::Left, 0)), "member {}", s.id());
        assert!(events(s).contains(&Event::Left { id: 1 }));
    }
    // It answers pings and keeps pinging, which carries the news until it runs out after the
    // retransmit limit; a probe nobody answers makes it suspect no one (it is going).
    for _ in 0..10 {
        let t = all[0].period_end;
        all[0].handle_timeout(t);
        let pings = drain(&mut all[0]);
        assert!(
            matches!(
                &pings[..],
                [Transmit {
                    msg: Message::Ping { .. },
                    ..
                }]
            ),
            "{pings:?}"
        );
        all[0].handle_message(
            t,
            2,
            addr(2),
            Message::Ping {
                seq: 5,
                target: 1,
                updates: vec![],
            },
        );
        assert!(matches!(
            &drain(&mut all[0])[..],
            [Transmit {
                msg: Message::Ack { seq: 5, .. },
                ..
            }]
        ));
    }
    assert!(all[0].left_announced());
    assert_eq!(all[0].stats().probes_failed, 0);
    assert!(all[0].members().iter().all(|m| m.state != State::Suspect));
    assert_eq!(all[0].health(), 0);
}

#[test]
fn a_member_joins_through_one_seed_and_learns_everyone() {
    let mut all = group(3, true);
    let mut joiner = member(9, true);
    joiner.join(Instant::ZERO, &[addr(1)]);
    all.push(joiner);
    settle(&mut all, at(1), &keep_all);
    // The seed and the joiner exchanged full state.
    assert_eq!(all[0].member(9), Some((State::Alive, 0)));
    let known: Vec<NodeId> = all[3].members().iter().map(|m| m.id).collect();
    assert_eq!(known, vec![9, 1, 2, 3]);
    assert!(events(&mut all[3]).contains(&Event::Joined {
        id: 2,
        addr: addr(2)
    }));
    // The others hear of the joiner by gossip within a few periods.
    let mut now = at(1);
    for _ in 0..200 {
        now = all.iter().map(|s| s.poll_timeout()).min().unwrap();
        for s in all.iter_mut() {
            if s.poll_timeout() <= now {
                s.handle_timeout(now);
            }
        }
        settle(&mut all, now, &keep_all);
        if all.iter().all(|s| s.group_size() == 4) {
            break;
        }
    }
    assert!(all.iter().all(|s| s.group_size() == 4), "by {now:?}");
    assert!(now < at(10_000), "{now:?}");
}

#[test]
fn messages_from_itself_or_too_long_are_dropped() {
    let mut a = member(1, true);
    a.handle_message(
        at(1),
        1,
        addr(1),
        Message::Ack {
            seq: 1,
            target: 1,
            updates: vec![update(1, 0, State::Suspect, 2)],
        },
    );
    assert_eq!(a.incarnation(), 0);
    let long = Message::Ack {
        seq: 1,
        target: 3,
        updates: vec![
            update(2, 0, State::Alive, 0);
            MESSAGE_LEN_MAX / udplock_protocol::SWIM_UPDATE_LEN + 1
        ],
    };
    assert!(long.body_len() > MESSAGE_LEN_MAX);
    a.handle_message(at(1), 3, addr(3), long);
    assert_eq!(a.member(2), None);
    assert!(a.poll_transmit().is_none());
}

/// Found by the scale simulation (pauses, 64 members): a member that refuted its suspicion
/// (incarnation 1) was killed for good by a late confirmation of incarnation 0 from a member
/// whose suspicion timed out before the refutation reached it. SWIM §4.2 lets {Confirm, i}
/// override any {Alive, j}; and the member, already at 1, never refutes a death at 0.
#[test]
fn a_late_confirmation_of_an_older_incarnation_does_not_kill_a_refuted_member() {
    let mut a = member(1, true);
    a.apply(Instant::ZERO, update(2, 0, State::Alive, 0));
    a.apply(at(1), update(2, 0, State::Suspect, 3));
    a.apply(at(2), update(2, 1, State::Alive, 0));
    events(&mut a);
    a.apply(at(3), update(2, 0, State::Dead, 0));
    assert_eq!(a.member(2), Some((State::Alive, 1)));
    assert_eq!(events(&mut a), vec![]);
    // A member that never heard the refutation takes the confirmation, and the refutation
    // then brings the member back.
    let mut b = member(4, true);
    b.apply(Instant::ZERO, update(2, 0, State::Alive, 0));
    b.apply(at(3), update(2, 0, State::Dead, 0));
    b.apply(at(4), update(2, 1, State::Alive, 0));
    assert_eq!(b.member(2), Some((State::Alive, 1)));
}

/// Found by the scale simulation (pauses, 64 members): a member that missed a refutation
/// (gossip reaches each member with high probability, not surely) kept suspecting the refuted
/// member and declared it dead when its timeout ran out. A member that hears stale news
/// (an older incarnation than it holds alive) gossips its newer news again, so the one that
/// sent the stale news gets the refutation in the very answer.
#[test]
fn stale_news_is_answered_with_the_newer_incarnation() {
    let mut a = member(1, true);
    a.apply(Instant::ZERO, update(2, 0, State::Alive, 0));
    a.apply(Instant::ZERO, update(3, 0, State::Alive, 0));
    a.apply(at(1), update(2, 1, State::Alive, 0));
    // The refutation's gossip runs out.
    for _ in 0..20 {
        a.gossip(PING_FIXED_LEN, None);
    }
    drain(&mut a);
    // Member 3 still suspects incarnation 0 and says so in a ping.
    a.handle_message(
        at(2),
        3,
        addr(3),
        Message::Ping {
            seq: 4,
            target: 1,
            updates: vec![update(2, 0, State::Suspect, 3)],
        },
    );
    match &drain(&mut a)[..] {
        [Transmit {
            msg: Message::Ack { updates, .. },
            ..
        }] => assert!(
            updates.contains(&update(2, 1, State::Alive, 0)),
            "{updates:?}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Spec §8.3 rule 5 (SWIM messages will travel as PEER records): an answer is never longer
/// than what it answers, so a forged source address gains nothing in bytes. An ACK carries at
/// most as much gossip as the PING it answers; a full-state answer goes to the address the
/// table holds for its sender, never to a datagram's source.
#[test]
fn an_answer_is_never_longer_than_its_question() {
    let mut a = member(1, true);
    for id in 2..=40 {
        a.apply(Instant::ZERO, update(id, 0, State::Alive, 0));
    }
    drain(&mut a);
    // Forty joins wait to be gossiped; an empty PING gets an ACK as short as itself.
    let ping = Message::Ping {
        seq: 1,
        target: 1,
        updates: vec![],
    };
    let ping_len = ping.body_len();
    a.handle_message(at(1), 2, addr(2), ping);
    let t = drain(&mut a);
    assert_eq!(t.len(), 1);
    assert!(t[0].msg.body_len() <= ping_len, "{t:?}");
    // A PING with two updates gets at most two back.
    let ping = Message::Ping {
        seq: 2,
        target: 1,
        updates: vec![update(2, 0, State::Alive, 0), update(3, 0, State::Alive, 0)],
    };
    let ping_len = ping.body_len();
    a.handle_message(at(1), 2, addr(2), ping);
    let t = drain(&mut a);
    assert!(t[0].msg.body_len() <= ping_len, "{t:?}");
    // A PING_REQ naming this member as the target is answered at most as long as itself.
    let req = Message::PingReq {
        seq: 3,
        target: 1,
        target_addr: addr(1),
        updates: vec![],
    };
    let req_len = req.body_len();
    a.handle_message(at(1), 2, addr(2), req);
    let t = drain(&mut a);
    assert!(t[0].msg.body_len() <= req_len, "{t:?}");
    // A full-state request from a known member is answered at its address in the table, not
    // at the source the datagram claims.
    let spoofed: SocketAddr = "192.0.2.1:9".parse().unwrap();
    a.handle_message(
        at(1),
        3,
        spoofed,
        Message::PushPull {
            reply: true,
            members: vec![],
        },
    );
    let t = drain(&mut a);
    assert!(!t.is_empty() && t.iter().all(|t| t.to == addr(3)), "{t:?}");
}

/// Found by the scale simulation (5% loss, 64 members, Lifeguard, 10,000 periods: 3 live
/// members declared dead): 62 of 63 members heard a refutation; the one that missed it held
/// its suspicion for the whole 43-period timeout and declared the member dead. A member
/// still suspecting halfway through the shortest timeout asks the suspect itself: a ping
/// carrying the suspicion, which the suspect answers with its newer incarnation.
#[test]
fn a_member_that_missed_the_refutation_asks_the_suspect_before_its_timeout() {
    let mut all = group(2, true);
    // Member 2 was suspected at incarnation 0 and refuted; its refutation's gossip ran out
    // before member 1 heard it.
    all[1].apply(at(1), update(2, 0, State::Suspect, 3));
    assert_eq!(all[1].incarnation(), 1);
    for _ in 0..20 {
        all[1].gossip(PING_FIXED_LEN, None);
    }
    drain(&mut all[1]);
    all[0].apply(at(1), update(2, 0, State::Suspect, 3));
    let deadline = at(1) + all[0].suspicion_timeout(2).unwrap();
    let mut now = at(1);
    while now < deadline {
        now = all.iter().map(|s| s.poll_timeout()).min().unwrap();
        for s in all.iter_mut() {
            if s.poll_timeout() <= now {
                s.handle_timeout(now);
            }
        }
        // Neither member's own round-robin probes run (they would carry the news anyway).
        for s in all.iter_mut() {
            if let Some(p) = s.probe.take() {
                s.transmits
                    .retain(|t| !matches!(t.msg, Message::Ping { seq, .. } if seq == p.seq));
            }
        }
        settle(&mut all, now, &keep_all);
        if all[0].member(2) != Some((State::Suspect, 0)) {
            break;
        }
    }
    assert_eq!(all[0].member(2), Some((State::Alive, 1)), "at {now:?}");
    assert!(now < deadline);
}

/// The wire and the core keep one size (spec §8.12): every message a group of members sends
/// over a few hundred periods — gossip at full load, probes through others under loss, a
/// crash, a join with a full-state exchange, a leave — is written as the only record of an
/// authenticated PEER datagram, its record body is exactly `body_len()` bytes, and it decodes
/// back to itself; the receiver gets the decoded copy, so the run goes through the bytes.
#[test]
fn every_message_the_core_sends_fits_the_wire_and_decodes_to_itself() {
    use udplock_protocol::{
        PeerDatagram, PeerHeader, PeerWriter, AUTH_TRAILER_LEN, PEER_DATAGRAM_LEN_MAX,
        PEER_RECORD_HEADER_LEN,
    };
    let mut all = group(40, true);
    let (mut sent, mut kinds, mut longest, mut most_updates) = (0u64, [0u64; 5], 0, 0);
    let mut through_wire = |from: NodeId, msg: &Message| -> Message {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let header = PeerHeader {
            cluster_id: 1,
            from,
        };
        let mut w = PeerWriter::with_trailer_room(&mut buf, header, AUTH_TRAILER_LEN);
        w.push_swim(msg)
            .unwrap_or_else(|e| panic!("{e}: {msg:?} does not go out alone"));
        let n = w.finish();
        assert_eq!(
            n,
            udplock_protocol::HEADER_LEN + PEER_RECORD_HEADER_LEN + msg.body_len()
        );
        assert!(n + AUTH_TRAILER_LEN <= PEER_DATAGRAM_LEN_MAX);
        let d = PeerDatagram::decode(&buf[..n]).expect("what the writer wrote decodes");
        let back: Vec<Message> = d.swim_records().map(|m| m.into_owned()).collect();
        assert_eq!(back, vec![msg.clone()]);
        sent += 1;
        kinds[msg.kind().to_wire() as usize - 14] += 1;
        longest = longest.max(msg.body_len());
        let carried = match msg {
            Message::PushPull { members, .. } => members.len(),
            _ => msg.gossip().map_or(0, Vec::len),
        };
        most_updates = most_updates.max(carried);
        back.into_iter().next().unwrap()
    };
    let (mut now, mut delivered) = (at(1), 0u64);
    for period in 0..300u64 {
        match period {
            // News for everyone at once: gossip fills whole messages.
            10 => {
                for s in all.iter_mut().take(30) {
                    s.leave(now);
                }
            }
            // A crash: member 40 stops answering (it is removed below, before delivery).
            50 => {
                all.pop();
            }
            // A join through one seed: a full-state exchange in several chunks.
            80 => {
                let mut joiner = member(99, true);
                joiner.join(now, &[addr(31)]);
                all.push(joiner);
            }
            _ => {}
        }
        let until = now + ms(1_000);
        while now < until {
            now = all.iter().map(|s| s.poll_timeout()).min().unwrap().max(now);
            if now >= until {
                now = until;
                break;
            }
            for s in all.iter_mut() {
                if s.poll_timeout() <= now {
                    s.handle_timeout(now);
                }
            }
            // Deliver through the codec, losing one message in 11 (deterministically).
            loop {
                let mut moved = false;
                for i in 0..all.len() {
                    let from = all[i].id();
                    for t in drain(&mut all[i]) {
                        moved = true;
                        let msg = through_wire(from, &t.msg);
                        delivered += 1;
                        if delivered % 11 == 0 {
                            continue;
                        }
                        let to = id_of(t.to);
                        if let Some(dst) = all.iter_mut().find(|s| s.id() == to) {
                            dst.handle_message(now, from, addr(from), msg);
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
    }
    // The run reached what the test is about: every kind, a full-state exchange in chunks,
    // and messages at the size limits.
    assert!(kinds.iter().all(|&k| k > 0), "kinds sent: {kinds:?}");
    assert!(sent > 10_000, "{sent} messages");
    assert_eq!(most_updates, udplock_protocol::PUSH_PULL_MEMBERS_MAX);
    assert!(
        longest > MESSAGE_LEN_MAX - UPDATE_LEN,
        "longest body {longest}"
    );
}

/// Drives `s` alone through its timers until `end`, dropping what it sends.
fn run_alone(s: &mut Swim, end: Instant) {
    loop {
        let t = s.poll_timeout();
        if t > end {
            return;
        }
        s.handle_timeout(t);
        drain(s);
    }
}

/// Churn must not fill the table for ever: a member dead or left for longer than the keep
/// time is forgotten (the news of its death has long reached everyone by then), which makes
/// room for new members; it may come back by joining.
#[test]
fn dead_and_left_members_are_forgotten_after_the_keep_time_and_may_join_again() {
    let mut c = Config::new(1, addr(1));
    c.members_max = 4;
    let mut s = Swim::new(c, 1, Instant::ZERO).unwrap();
    for id in 2..=5 {
        s.apply(Instant::ZERO, update(id, 0, State::Alive, 0));
    }
    s.apply(Instant::ZERO, update(2, 0, State::Dead, 0));
    s.apply(Instant::ZERO, update(3, 0, State::Dead, 0));
    s.apply(Instant::ZERO, update(4, 0, State::Left, 0));
    // Full: a newcomer is not taken.
    s.apply(Instant::ZERO, update(6, 0, State::Alive, 0));
    assert_eq!(s.member(6), None);
    // Kept until the keep time has passed (the periods run meanwhile)...
    let keep = s.config.dead_keep;
    let period = s.config.protocol_period;
    run_alone(
        &mut s,
        Instant::ZERO + Duration::from_micros(keep.as_micros() - 1),
    );
    assert_eq!(s.member(2), Some((State::Dead, 0)));
    assert_eq!(s.member(4), Some((State::Left, 0)));
    events(&mut s);
    // ... and forgotten within a period after it.
    let end = Instant::ZERO + keep + period + period;
    run_alone(&mut s, end);
    for id in 2..=4 {
        assert_eq!(s.member(id), None, "member {id} is still in the table");
    }
    let forgotten: Vec<Event> = events(&mut s)
        .into_iter()
        .filter(|e| matches!(e, Event::Forgotten { .. }))
        .collect();
    assert_eq!(
        forgotten,
        [2, 3, 4].map(|id| Event::Forgotten { id }),
        "{:?}",
        s.stats()
    );
    assert_eq!(s.stats().forgotten, 3);
    // An hour later member 5 (alone with no answer, it died meanwhile) is gone too.
    run_alone(&mut s, at(3_600_000));
    assert_eq!(s.member(5), None);
    s.apply(at(3_600_000), update(6, 0, State::Alive, 0));
    assert_eq!(s.member(6), Some((State::Alive, 0)));
    // A forgotten member may come back.
    s.apply(at(3_600_000), update(2, 1, State::Alive, 0));
    assert_eq!(s.member(2), Some((State::Alive, 1)));
}

/// Found by the cluster simulator (issue 10, `swim_deaths_healed`): a member cut off by a
/// partition suspects the others; its gossip of the suspicion and its one direct ask
/// (`check_suspects`) are lost in the partition. After the heal, nobody else knows of the
/// suspicion, and the suspecter itself probes slowly (its health multiplier is high after the
/// partition) or not the suspect: the suspicion ran out and a reachable member was declared
/// dead, up to 1.6 s after the heal at 100 ms periods (`udplock sim --seed 160 --nodes 5`).
/// The suspecter now asks the suspect again every half shortest timeout while it suspects.
#[test]
fn a_suspecter_asks_the_suspect_again_when_its_first_ask_was_lost() {
    let mut all = group(3, true);
    let t0 = at(10);
    all[0].apply(t0, update(2, 0, State::Suspect, 1));
    drain(&mut all[0]);
    let deadline = t0 + all[0].suspicion_timeout(2).unwrap();
    // Member 1 alone: its probes and its gossip are lost (the partition, then its slowed
    // periods); only the pings that ask member 2 outside a probe are kept.
    let mut asks = Vec::new();
    loop {
        let t = all[0].poll_timeout();
        if t >= deadline {
            break;
        }
        all[0].handle_timeout(t);
        let probe_seq = all[0].probe.map(|p| p.seq);
        for tr in drain(&mut all[0]) {
            if let Message::Ping { seq, target: 2, .. } = tr.msg {
                if Some(seq) != probe_seq {
                    asks.push((t, tr.msg));
                }
            }
        }
    }
    assert!(
        asks.len() >= 2,
        "member 1 asked the suspect {} time(s) before its deadline",
        asks.len()
    );
    // The first ask was lost; the partition heals and a later one arrives: member 2 refutes,
    // and its answer reaches member 1 before the deadline.
    let (t, ask) = asks.pop().unwrap();
    assert!(t < deadline);
    all[1].handle_message(t, 1, addr(1), ask);
    for tr in drain(&mut all[1]) {
        if id_of(tr.to) == 1 {
            all[0].handle_message(t, 2, addr(2), tr.msg);
        }
    }
    assert_eq!(all[0].member(2), Some((State::Alive, 1)));
    all[0].handle_timeout(deadline);
    assert_eq!(all[0].member(2), Some((State::Alive, 1)));
}

/// A full-state exchange costs the answering member its whole table (⌈n/29⌉ PUSH_PULL
/// chunks), so at a fixed interval its cost per member grows with n: at 1,000 members
/// `udplock swim-sim` measured 1.2 chunks (1.5 KB) per member per period beside 2 probe
/// messages. Like memberlist's push-pull scaling, the interval grows with log2 of the
/// group beyond 32 members, keeping the cost about n / log n.
#[test]
fn the_full_state_interval_grows_with_the_log_of_the_group_beyond_32() {
    let interval = Config::new(1, addr(1)).push_pull_interval;
    for (n, scale) in [
        (1, 1),
        (32, 1),
        (33, 2),
        (64, 2),
        (65, 3),
        (1_000, 6),
        (4_096, 8),
    ] {
        let mut s = member(1, true);
        for id in 2..=n as u64 {
            s.apply(Instant::ZERO, update(id, 0, State::Alive, 0));
        }
        assert_eq!(s.group_size(), n);
        assert_eq!(
            s.push_pull_interval().as_micros(),
            interval.as_micros() * scale,
            "{n} members"
        );
    }
    // And the exchanges of a 40-member group come that far apart.
    let mut s = member(1, true);
    for id in 2..=40 {
        s.apply(Instant::ZERO, update(id, 0, State::Alive, 0));
    }
    let mut exchanges = Vec::new();
    let end = at(10 * interval.as_micros() / 1_000);
    loop {
        let t = s.poll_timeout();
        if t > end {
            break;
        }
        s.handle_timeout(t);
        // Everyone answers every probe: no suspicion shrinks the group.
        for tr in drain(&mut s) {
            match tr.msg {
                Message::PushPull { reply: true, .. } => exchanges.push(t),
                Message::Ping { seq, target, .. } => s.handle_message(
                    t,
                    target,
                    tr.to,
                    Message::Ack {
                        seq,
                        target,
                        updates: Vec::new(),
                    },
                ),
                _ => {}
            }
        }
    }
    assert!(exchanges.len() >= 2, "{exchanges:?}");
    for w in exchanges.windows(2) {
        assert_eq!(
            w[1].saturating_since(w[0]).as_micros(),
            2 * interval.as_micros()
        );
    }
}

/// Every question a member sends — its probe's PING, its PING_REQs, the PING it sends for
/// another's PING_REQ — carries its own alive UPDATE, however much news waits and after its
/// own join news ran out: the receiver may not know it yet (gossip reaches members one after
/// another), and a node drops a datagram of a sender it does not know unless it announces
/// itself (spec §8.3 rule 3, §8.12). Once, even when its own news is also queued (a
/// refutation); never `Alive` while it leaves.
#[test]
fn every_question_introduces_its_sender() {
    let mut all = group(3, true);
    let a = &mut all[0];
    for id in 10..60 {
        a.apply(at(1), update(id, 0, State::Alive, 0));
    }
    let me = update(1, 0, State::Alive, 0);
    let introduces = |updates: &[Update]| updates.iter().filter(|u| **u == me).count() == 1;
    a.probe_order = vec![2];
    a.probe_next = 0;
    let t0 = a.period_end;
    a.handle_timeout(t0);
    let ping = drain(a);
    match &ping[..] {
        [Transmit {
            msg: Message::Ping { updates, .. },
            ..
        }] => {
            assert!(introduces(updates), "{updates:?}");
            assert_eq!(
                updates.len(),
                UPDATES_PER_MESSAGE_MAX,
                "news fills the rest"
            );
        }
        other => panic!("{other:?}"),
    }
    // No ack: the PING_REQs introduce it too.
    let indirect = a.probe.unwrap().indirect_at.unwrap();
    a.handle_timeout(indirect);
    let reqs = drain(a);
    assert!(!reqs.is_empty());
    for t in &reqs {
        match &t.msg {
            Message::PingReq { updates, .. } => assert!(introduces(updates), "{t:?}"),
            other => panic!("{other:?}"),
        }
    }
    // The PING it sends for another member's PING_REQ introduces it to the target.
    a.handle_message(
        indirect,
        2,
        addr(2),
        Message::PingReq {
            seq: 9,
            target: 3,
            target_addr: addr(3),
            updates: vec![],
        },
    );
    match &drain(a)[..] {
        [Transmit {
            msg: Message::Ping { updates, .. },
            ..
        }] => assert!(introduces(updates), "{updates:?}"),
        other => panic!("{other:?}"),
    }
    // Its own news queued (a refutation at incarnation 1): sent once, at the new incarnation.
    a.apply(indirect, update(1, 0, State::Suspect, 2));
    assert_eq!(a.incarnation(), 1);
    let me = update(1, 1, State::Alive, 0);
    let t1 = a.period_end;
    a.handle_timeout(t1);
    for t in drain(a) {
        if let Message::Ping { updates, .. } = &t.msg {
            assert_eq!(updates.iter().filter(|u| u.id == 1).count(), 1, "{t:?}");
            assert!(updates.contains(&me), "{t:?}");
        }
    }
    // Leaving: no question says it is alive.
    a.leave(t1);
    for t in drain(a) {
        let updates = t.msg.gossip().map_or(&[][..], Vec::as_slice);
        assert!(
            updates.iter().all(|u| u.id != 1 || u.state == State::Left),
            "{t:?}"
        );
    }
}

/// `Swim::version` moves with each kind of change of the member table — a member added,
/// suspected, refuted (its incarnation), declared dead, back at a new address, forgotten;
/// this member's own refutation and leave — and not for news that changes nothing, nor for
/// messages, probes and periods that change no member.
#[test]
fn the_table_version_moves_with_each_change_and_only_then() {
    let mut a = member(1, true);
    let mut v = a.version();
    let mut moved = |a: &Swim, what: &str, expect: bool| {
        assert_eq!(
            a.version() != v,
            expect,
            "{what}: {} after {v}",
            a.version()
        );
        v = a.version();
    };
    a.apply(at(1), update(2, 0, State::Alive, 0));
    moved(&a, "added", true);
    a.apply(at(1), update(3, 0, State::Alive, 0));
    moved(&a, "added", true);
    a.apply(at(1), update(2, 0, State::Alive, 0));
    moved(&a, "the same news", false);
    a.apply(at(1), update(2, 0, State::Suspect, 3));
    moved(&a, "suspected", true);
    a.apply(at(1), update(2, 0, State::Suspect, 4));
    moved(&a, "a confirmation", false);
    a.apply(at(1), update(2, 1, State::Alive, 0));
    moved(&a, "refuted (incarnation)", true);
    a.apply(at(1), update(2, 0, State::Dead, 0));
    moved(&a, "stale death", false);
    a.apply(at(1), update(2, 1, State::Dead, 0));
    moved(&a, "dead", true);
    let elsewhere = Update {
        addr: "10.9.9.9:7000".parse().unwrap(),
        ..update(2, 2, State::Alive, 0)
    };
    a.apply(at(1), elsewhere);
    moved(&a, "back at a new address", true);
    assert_eq!(a.members()[1].addr, elsewhere.addr);
    // Messages and periods that change no member.
    drain(&mut a);
    a.handle_message(
        at(2),
        2,
        elsewhere.addr,
        Message::Ping {
            seq: 1,
            target: 1,
            updates: vec![update(3, 0, State::Alive, 0)],
        },
    );
    moved(&a, "a ping with old news", false);
    let t = a.period_end;
    a.handle_timeout(t);
    moved(&a, "a period starts", false);
    // Its own incarnation: a refutation.
    a.apply(at(3), update(1, 0, State::Suspect, 2));
    assert_eq!(a.incarnation(), 1);
    moved(&a, "own refutation", true);
    // Forgotten after dead_keep; on the way (member 2's probes fail: nobody answers), the
    // version moves at exactly the timeouts that change the table.
    a.apply(at(3), update(3, 0, State::Dead, 0));
    moved(&a, "dead", true);
    let keep = a.config.dead_keep;
    while a.members().iter().any(|m| m.id == 3) {
        let before = (a.members(), a.version());
        let t = a.poll_timeout();
        a.handle_timeout(t);
        drain(&mut a);
        assert_eq!(
            before.0 != a.members(),
            before.1 != a.version(),
            "at {t:?}: {:?} -> {:?}",
            before.0,
            a.members()
        );
        assert!(t <= at(3) + keep + ms(60_000), "{t:?}");
    }
    v = a.version();
    a.leave(a.poll_timeout());
    assert!(a.version() != v, "left");
}
