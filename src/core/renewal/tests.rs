//! The renewal rules without sockets or clocks: time is whatever the test says.

use super::*;

const MS: u64 = 1_000;

fn at(ms: u64) -> Instant {
    Instant::from_micros(ms * MS)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// No drift, so that the numbers below are the TTLs themselves; attempts up to 2 s.
fn rules(seed: u64) -> Renewals {
    Renewals::new(
        Config {
            drift_bound_ppm: 0,
            attempt_max: ms(2_000),
        },
        seed,
    )
}

fn spec(shard: usize, lease_ms: u32, start: Instant) -> HoldSpec {
    HoldSpec {
        shard,
        token: 7,
        lease_start: start,
        lease_ms,
        loss_margin: None,
    }
}

fn events(r: &mut Renewals) -> Vec<Event> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

fn renewed(sent_at: Instant, lease_ms: u32) -> RenewOutcome {
    RenewOutcome::Renewed {
        sent_at,
        lease_ms,
        token: 7,
    }
}

/// A hold is renewed between 4/15 and 1/3 of its validity after its lease started, and
/// given up a tenth of the validity before it ends.
#[test]
fn first_renewal_at_a_third_with_jitter() {
    let mut seen = BTreeSet::new();
    for seed in 0..50 {
        let mut r = rules(seed);
        let (valid_until, give_up_at) = r.add(at(5), 1, spec(0, 3_000, at(0)));
        assert_eq!((valid_until, give_up_at), (at(3_000), at(2_700)));
        let due = r.poll_timeout().unwrap();
        assert!(due >= at(800) && due <= at(1_000), "seed {seed}: {due:?}");
        assert!(r.poll_renewals(due - Duration::from_micros(1)).is_empty());
        let groups = r.poll_renewals(due);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].holds, vec![1]);
        seen.insert(due);
    }
    assert!(seen.len() > 10, "the jitter varies the due time: {seen:?}");
}

/// The same seed gives the same schedule (the simulator and tests rely on it).
#[test]
fn deterministic_from_the_seed() {
    let schedule = |seed| {
        let mut r = rules(seed);
        (0..20)
            .map(|id| {
                r.add(at(0), id, spec(0, 1_000, at(0)));
                r.poll_timeout().unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(schedule(3), schedule(3));
    assert_ne!(schedule(3), schedule(4));
}

/// Due holds come out grouped by shard, in shard order; holds not yet due stay.
#[test]
fn due_holds_are_grouped_per_shard() {
    let mut r = rules(1);
    r.add(at(0), 10, spec(2, 300, at(0)));
    r.add(at(0), 11, spec(0, 300, at(0)));
    r.add(at(0), 12, spec(2, 300, at(0)));
    r.add(at(0), 13, spec(1, 30_000, at(0)));
    let groups = r.poll_renewals(at(100));
    let shape: Vec<(usize, Vec<HoldId>)> =
        groups.iter().map(|g| (g.shard, g.holds.clone())).collect();
    assert_eq!(shape.len(), 2, "{shape:?}");
    assert_eq!(shape[0], (0, vec![11]));
    assert_eq!(shape[1].0, 2);
    let mut two = shape[1].1.clone();
    two.sort();
    assert_eq!(two, vec![10, 12]);
    // The deadline: a tenth of the shortest validity (30 ms), before every give-up instant.
    // Copies at least every 10 ms (a thirtieth of the validity).
    for g in &groups {
        assert_eq!(g.deadline, at(130));
        assert_eq!(g.rto_max, ms(10));
    }
    // Under way: not due again until an outcome comes back.
    assert!(r.poll_renewals(at(200)).is_empty());
    assert_eq!(r.poll_timeout(), Some(at(270)), "the earliest give-up");
}

/// A long hold's attempt is cut to a tenth of the shortest hold's validity, so that a silent
/// shard never delays a short hold's renewal for long.
#[test]
fn a_short_hold_caps_every_attempt() {
    let mut alone = rules(1);
    alone.add(at(0), 1, spec(0, 60_000, at(0)));
    let groups = alone.poll_renewals(at(20_000));
    assert_eq!(groups[0].deadline, at(22_000), "attempt_max");
    assert_eq!(groups[0].rto_max, ms(2_000));
    let mut r = rules(1);
    r.add(at(0), 1, spec(0, 60_000, at(0)));
    r.add(at(19_990), 2, spec(1, 300, at(19_990)));
    let groups = r.poll_renewals(at(20_000));
    assert_eq!(groups.len(), 1, "{groups:?}");
    // Until the short hold is due, but at least 30 ms.
    let short_due = r.poll_timeout().unwrap();
    assert!(
        short_due > at(20_000) && short_due <= at(20_090),
        "{short_due:?}"
    );
    assert_eq!(groups[0].shard, 0);
    assert_eq!(groups[0].deadline, short_due.max(at(20_030)));
}

/// A lone group's attempt runs to its give-up instant: every answer in time counts.
#[test]
fn a_lone_attempt_runs_to_the_give_up_instant() {
    let mut r = rules(1);
    r.add(at(0), 1, spec(0, 300, at(0)));
    let groups = r.poll_renewals(at(100));
    assert_eq!(groups[0].deadline, at(270));
    assert_eq!(groups[0].rto_max, ms(10));
}

/// An OK renewal extends the validity from its send time, never shortens it, and schedules
/// the next renewal a third of the new validity after that send time.
#[test]
fn renewal_extends_from_its_send_time() {
    let mut r = rules(9);
    r.add(at(0), 1, spec(0, 3_000, at(0)));
    let due = r.poll_timeout().unwrap();
    r.poll_renewals(due);
    r.handle_outcome(due + ms(2), 1, renewed(due, 3_000));
    let valid = due + ms(3_000);
    assert_eq!(
        events(&mut r),
        vec![Event::Renewed {
            id: 1,
            valid_until: valid,
            give_up_at: valid - ms(300),
        }]
    );
    let next = r.poll_timeout().unwrap();
    assert!(next >= due + ms(800) && next <= due + ms(1_000), "{next:?}");
    // A shorter lease (sent earlier) does not move the validity back.
    r.poll_renewals(next);
    r.handle_outcome(next + ms(1), 1, renewed(next, 500));
    assert_eq!(r.validity(1), Some((valid, valid - ms(300))));
}

/// Refusal and a changed token lose the hold at once, for good; a late OK changes nothing.
#[test]
fn refusal_and_token_change_are_losses() {
    let mut r = rules(2);
    r.add(at(0), 1, spec(0, 3_000, at(0)));
    r.add(at(0), 2, spec(0, 3_000, at(0)));
    r.poll_renewals(at(1_000));
    r.handle_outcome(at(1_001), 1, RenewOutcome::Refused);
    r.handle_outcome(
        at(1_001),
        2,
        RenewOutcome::Renewed {
            sent_at: at(1_000),
            lease_ms: 3_000,
            token: 8,
        },
    );
    assert_eq!(
        events(&mut r),
        vec![
            Event::Lost {
                id: 1,
                reason: LossReason::Refused
            },
            Event::Lost {
                id: 2,
                reason: LossReason::TokenChanged {
                    expected: 7,
                    got: 8
                }
            },
        ]
    );
    assert!(r.is_empty());
    assert_eq!(r.poll_timeout(), None);
    r.handle_outcome(at(1_002), 1, renewed(at(1_000), 3_000));
    assert!(events(&mut r).is_empty());
}

/// FORBIDDEN (spec §7.1.10 rule 3: the key may no longer renew this owner's hold) loses the
/// hold at once, long before its give-up instant, and for good: no retry is scheduled, and
/// a late OK changes nothing. The other hold of the group is not touched.
#[test]
fn a_forbidden_renewal_is_a_loss_not_retried() {
    let mut r = rules(3);
    r.add(at(0), 1, spec(0, 3_000, at(0)));
    r.add(at(0), 2, spec(0, 3_000, at(0)));
    let groups = r.poll_renewals(at(1_000));
    assert_eq!(groups.len(), 1);
    r.handle_outcome(at(1_001), 1, RenewOutcome::Forbidden);
    r.handle_outcome(at(1_001), 2, renewed(at(1_000), 3_000));
    let seen = events(&mut r);
    assert_eq!(
        seen[0],
        Event::Lost {
            id: 1,
            reason: LossReason::Forbidden
        }
    );
    assert!(matches!(seen[1], Event::Renewed { id: 2, .. }));
    assert_eq!(r.len(), 1, "only the forbidden hold is forgotten");
    assert_eq!(r.validity(1), None);
    r.handle_outcome(at(1_002), 1, renewed(at(1_000), 3_000));
    assert!(events(&mut r).is_empty());
    // Its renewals are over: the next groups name hold 2 only.
    let next = r.poll_timeout().unwrap();
    for group in r.poll_renewals(next) {
        assert_eq!(group.holds, [2]);
    }
}

/// Unanswered attempts (cut short by another shard's group due at once) are retried after a
/// short pause until the give-up instant, which loses the holds: before the validity ends, by
/// the margin.
#[test]
fn silence_is_retried_then_given_up_before_the_validity_ends() {
    let mut r = rules(4);
    r.add(at(0), 1, spec(0, 300, at(0)));
    r.add(at(0), 2, spec(1, 300, at(0)));
    let mut now = at(100);
    let mut attempts = 0;
    while !r.is_empty() {
        let groups = r.poll_renewals(now);
        if let Some(g) = groups.iter().map(|g| g.deadline).max() {
            attempts += 1;
            assert!(g <= at(270), "{groups:?}");
            now = g;
            for g in &groups {
                for &id in &g.holds {
                    r.handle_outcome(now, id, RenewOutcome::NoAnswer);
                }
            }
        }
        if let Some(next) = r.poll_timeout() {
            now = next.max(now);
        }
        assert!(now <= at(270), "{now:?}");
    }
    let lost: Vec<Event> = events(&mut r);
    assert_eq!(lost.len(), 2);
    for event in lost {
        assert!(matches!(
            event,
            Event::Lost {
                reason: LossReason::Expired,
                ..
            }
        ));
    }
    assert!(attempts >= 4, "retried: {attempts}");
}

/// An OK reply that arrives after the give-up instant does not bring the hold back.
#[test]
fn a_reply_after_the_give_up_instant_is_a_loss() {
    let mut r = rules(5);
    r.add(at(0), 1, spec(0, 1_000, at(0)));
    r.poll_renewals(at(333));
    r.handle_outcome(at(950), 1, renewed(at(333), 1_000));
    assert_eq!(
        events(&mut r),
        vec![Event::Lost {
            id: 1,
            reason: LossReason::Expired
        }]
    );
}

/// A named margin is kept (within half the validity); a removed hold's outcome is ignored.
#[test]
fn margins_and_removal() {
    let mut r = rules(6);
    let mut s = spec(0, 10_000, at(0));
    s.loss_margin = Some(ms(2_000));
    assert_eq!(r.add(at(0), 1, s).1, at(8_000));
    s.loss_margin = Some(ms(9_000));
    assert_eq!(r.add(at(0), 2, s).1, at(5_000), "cut to half");
    r.poll_renewals(at(4_000));
    assert!(r.remove(1));
    assert!(!r.remove(1));
    r.handle_outcome(at(4_001), 1, RenewOutcome::Refused);
    assert!(events(&mut r).is_empty());
    assert_eq!(r.len(), 1);
    r.handle_timeout(at(5_000));
    assert_eq!(
        events(&mut r),
        vec![Event::Lost {
            id: 2,
            reason: LossReason::Expired
        }]
    );
}

/// A grant whose reply came after its give-up instant is lost at once.
#[test]
fn a_late_grant_is_lost_at_once() {
    let mut r = rules(7);
    r.add(at(500), 1, spec(0, 300, at(0)));
    assert_eq!(r.poll_timeout(), Some(at(270)));
    assert!(r.poll_renewals(at(500)).is_empty());
    assert_eq!(
        events(&mut r),
        vec![Event::Lost {
            id: 1,
            reason: LossReason::Expired
        }]
    );
}

/// Many holds: the queues stay consistent through adds, renewals, losses and removals.
#[test]
fn many_holds_stay_consistent() {
    let mut r = rules(8);
    for id in 0..1_000u64 {
        r.add(
            at(id),
            id,
            spec((id % 7) as usize, 1_000 + id as u32, at(id)),
        );
    }
    let mut now = at(0);
    for _ in 0..200 {
        now = r.poll_timeout().unwrap().max(now);
        for g in r.poll_renewals(now) {
            for (i, id) in g.holds.into_iter().enumerate() {
                let outcome = match (id + i as u64) % 5 {
                    0 => RenewOutcome::NoAnswer,
                    _ => renewed(now, 1_000 + id as u32),
                };
                r.handle_outcome(now + Duration::from_micros(50), id, outcome);
            }
        }
        events(&mut r);
        if now.as_micros() % 3 == 0 {
            let first = r.due.first().map(|&(_, id)| id);
            if let Some(id) = first {
                r.remove(id);
            }
        }
    }
    assert_eq!(r.give_up.len(), r.holds.len());
    assert!(r.len() > 800, "renewed holds stay: {}", r.len());
    let counted: u32 = r.attempts.values().sum();
    assert_eq!(counted as usize, r.len());
}

#[test]
fn config_is_validated() {
    let bad = Config {
        drift_bound_ppm: 1_000_000,
        attempt_max: ms(2_000),
    };
    assert_eq!(bad.validate().unwrap_err().field, "drift_bound_ppm");
    let bad = Config {
        drift_bound_ppm: 0,
        attempt_max: ms(1),
    };
    assert_eq!(bad.validate().unwrap_err().field, "attempt_max");
}

/// Batches (spec §4.11): 1,000 holds of two shards taken at once have jittered due times
/// spread over a sixth of their validity; the first poll at which any is due takes every
/// hold of that shard due within half a period, and after one renewal round per shard the
/// holds of each shard are due together again: a handful of groups per round, not one per
/// hold. (Without the batching, each poll took only the holds due at that instant.)
#[test]
fn a_shards_holds_are_renewed_together() {
    let mut r = rules(3);
    for id in 0..1_000 {
        r.add(at(0), id, spec((id % 2) as usize, 3_000, at(0)));
    }
    let mut rounds = Vec::new();
    let mut now = at(0);
    while rounds.len() < 6 {
        now = r.poll_timeout().expect("holds are followed");
        let groups = r.poll_renewals(now);
        let sizes: Vec<usize> = groups.iter().map(|g| g.holds.len()).collect();
        for group in groups {
            for id in group.holds {
                r.handle_outcome(now, id, renewed(now, 3_000));
            }
        }
        events(&mut r);
        if !sizes.is_empty() {
            rounds.push(sizes);
        }
    }
    // Every round renews whole shards: 500 holds per group.
    for sizes in &rounds {
        assert!(sizes.iter().all(|&n| n == 500), "{rounds:?}");
    }
    assert!(now < at(6_000), "six rounds within two validities: {now:?}");
}
