//! Unit tests of the simulator's own parts: clocks, and that the
//! history checkers fire on histories that break their rule.

use super::check::{self, History};
use super::clients::Action;
use super::*;
use crate::core::lock_table::RequestId;
use crate::core::raft::{Membership, MembershipChange};
use udplock_protocol::{RequestBody, RequestKind, REQUEST_LEN_MIN};

fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}

#[test]
fn clock_conversions_round_trip() {
    for rate_ppm in [-5_000, 0, 5_000] {
        let clock = Clock::new(rate_ppm, 123_456);
        for t in [0, 1, 999_999, 10_000_000_007] {
            let t = Instant::from_micros(t);
            let local = clock.local(t);
            let back = clock.true_time(local);
            assert!(back <= t, "{rate_ppm}: {back:?} > {t:?}");
            assert!(clock.local(back) >= local);
        }
    }
}

#[test]
fn a_clock_steps_its_rate_stalls_and_jumps_without_going_back() {
    let mut clock = Clock::new(-5_000, 1_000);
    let mut last = clock.local(at(0));
    let mut check = |clock: &Clock, ms: u64| {
        let now = clock.local(at(ms));
        assert!(now >= last, "went back at {ms} ms: {now:?} < {last:?}");
        last = now;
        now
    };
    check(&clock, 100);
    // A step of rate keeps the reading continuous, then runs at the new rate.
    let before = clock.local(at(200));
    clock.set_rate(at(200), 5_000);
    assert_eq!(clock.local(at(200)), before);
    assert_eq!(
        clock.local(at(1_200)).saturating_since(before),
        Duration::from_millis(1_005)
    );
    check(&clock, 1_200);
    // A stall: the reading stands from 1.3 s to 1.8 s of true time, then runs on.
    let stalled = clock.local(at(1_300));
    clock.stand_still(at(1_300), at(1_800));
    for ms in [1_300, 1_500, 1_800] {
        assert_eq!(check(&clock, ms), stalled);
    }
    assert!(check(&clock, 1_801) > stalled);
    // Timers set during the stall come due after it.
    assert_eq!(
        clock.true_time(stalled + Duration::from_micros(1)),
        at(1_800) + Duration::from_micros(1)
    );
    // A jump forward.
    let before = clock.local(at(2_000));
    clock.jump(at(2_000), Duration::from_millis(700));
    assert_eq!(check(&clock, 2_000), before + Duration::from_millis(700));
    check(&clock, 2_001);
}

fn history_with_two_holders(second_client: usize) -> History {
    let mut h = History::default();
    for (client, start, end) in [(0, 100, 300), (second_client, 250, 400)] {
        let request = Request {
            id: RequestId {
                session: client as u64 + 1,
                request: 1,
            },
            attempt: 0,
            reply_to: PROBE_ADDR,
            body: RequestBody::Acquire {
                resource: RESOURCES[0],
                client: CLIENT_IDS[client],
                wait_ms: 0,
                ttl_ms: 1_000,
            },
            datagram_len: REQUEST_LEN_MIN as u16,
        };
        let action = Action::Acquire {
            resource: 0,
            wait_ms: 0,
            ttl_ms: 1_000,
        };
        let op = h.begin(client, request, action, at(start - 10));
        h.interval(client, 0, at(start), at(end), op);
        h.grant(client, 0, 10 - client as u64, 1, None, true, at(start), op);
    }
    h
}

#[test]
fn mutual_exclusion_fires_on_overlapping_beliefs() {
    let h = history_with_two_holders(1);
    let (when, what) = check::check_mutual_exclusion(&h).unwrap_err();
    assert_eq!(when, at(250));
    assert!(what.contains("mutual exclusion"), "{what}");
    // One client overlapping itself is a re-entry, not a violation.
    assert!(check::check_mutual_exclusion(&history_with_two_holders(0)).is_ok());
    // A release sent before the other grant ends the first belief in time.
    let mut h = history_with_two_holders(1);
    h.cut(0, 0, at(240));
    assert!(check::check_mutual_exclusion(&h).is_ok());
}

/// Client 0 gives up on a RELEASE of r0 it sent (at 100..300 ms), then sends an ACQUIRE of
/// r0 at 400 ms; `answer_at`: when an answer to the RELEASE reached it, if one did.
fn history_with_a_doubt(answer_at: Option<u64>) -> History {
    let mut h = History::default();
    let request = |request, body| Request {
        id: RequestId {
            session: 1,
            request,
        },
        attempt: 0,
        reply_to: PROBE_ADDR,
        body,
        datagram_len: REQUEST_LEN_MIN as u16,
    };
    let (resource, client) = (RESOURCES[0], CLIENT_IDS[0]);
    let release = request(1, RequestBody::Release { resource, client });
    let op = h.begin(0, release, Action::Release { resource: 0 }, at(100));
    h.copy_sent(release.id, at(100));
    h.gave_up(op, at(300));
    if let Some(ms) = answer_at {
        let reply = lock_table::Reply {
            to: PROBE_ADDR,
            id: release.id,
            attempt: 0,
            kind: RequestKind::Release,
            answer: lock_table::Answer::bare(Status::Ok),
            holder: Default::default(),
            holder_truncated: false,
        };
        h.late(release.id, at(ms), reply);
    }
    let acquire = request(
        2,
        RequestBody::Acquire {
            resource,
            client,
            wait_ms: 0,
            ttl_ms: 1_000,
        },
    );
    let action = Action::Acquire {
        resource: 0,
        wait_ms: 0,
        ttl_ms: 1_000,
    };
    h.begin(0, acquire, action, at(350));
    h.copy_sent(acquire.id, at(400));
    h
}

#[test]
fn the_doubts_check_fires_on_a_lock_touched_before_its_release_was_settled() {
    let (when, what) = check::check_doubts(&history_with_a_doubt(None)).unwrap_err();
    assert_eq!(when, at(400));
    assert!(what.contains("doubts"), "{what}");
    let (_, what) = check::check_doubts(&history_with_a_doubt(Some(450))).unwrap_err();
    assert!(
        what.contains("unsettled"),
        "an answer after the new request: {what}"
    );
    assert!(check::check_doubts(&history_with_a_doubt(Some(380))).is_ok());
}

#[test]
fn fencing_fires_on_a_token_that_goes_back() {
    // Client 0 got token 10, then client 1 token 9.
    let (_, what) = check::check_fencing(&history_with_two_holders(1)).unwrap_err();
    assert!(what.contains("fencing"), "{what}");
}

#[test]
fn a_scenario_that_never_gets_there_fails() {
    // Too short for the script to reach its situation: that is a failure, not a pass.
    let mut config = Scenario::DuplicateAfterFailover.config(0);
    config.safety_phase = Duration::from_millis(300);
    let failure = run(&config).unwrap_err();
    assert!(failure.what.contains("never got past step"), "{failure}");
    assert!(failure
        .to_string()
        .contains("scenario_duplicate_after_failover"));
}

#[test]
fn the_failure_names_the_command_that_reproduces_it() {
    let failure = SimFailure {
        seed: 42,
        nodes: 5,
        shards: shards_of_seed(42),
        seconds: 7,
        scenario: None,
        joined: false,
        at: at(1),
        what: "x".into(),
    };
    assert!(failure
        .to_string()
        .contains("reproduce: udplock sim --seed 42 --nodes 5 --seconds 7"));
    assert!(!failure.to_string().contains("--shards"), "{failure}");
    // A shard count other than the seed's own is part of the command.
    let other = SHARD_COUNTS
        .into_iter()
        .find(|&n| n != shards_of_seed(42))
        .unwrap();
    let failure = SimFailure {
        shards: other,
        ..failure
    };
    assert!(
        failure
            .to_string()
            .ends_with(&format!("--seconds 7 --shards {other}")),
        "{failure}"
    );
    // So is a joined run on a seed the sweep runs static.
    assert!(!joined_seed(42));
    let failure = SimFailure {
        joined: true,
        ..failure
    };
    assert!(failure.to_string().ends_with(" --joined"), "{failure}");
}

/// Issue 9 item 6: a datagram of a correct node that its peer's core drops as undecodable
/// (its `NodeStats::dropped`) is a failure, as the drops for forgery and faults are: every
/// peer here is correct, so the codec misjudged it (or the sender wrote it wrong).
#[test]
fn a_correct_peers_datagram_dropped_as_undecodable_is_a_failure() {
    let mut config = SimConfig::new(1, 3, 1);
    config.faults = false;
    let mut sim = Sim::new(config).expect("starts");
    let heartbeat = Message::Append {
        term: 0,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Default::default(),
        leader_commit: 0,
        round: 1,
        transfer_to: None,
    };
    let mut datagram = wire::peer_datagram(sim.cluster_id, 2, &[(0, heartbeat)]);
    // Whole, it is delivered as any other (an old term's, so ignored).
    let whole = Arc::new(datagram.clone());
    sim.handle(Event::Peer {
        to: 1,
        from: 2,
        datagram: whole,
    })
    .expect("a whole datagram is fine");
    // Cut short by a byte, as a codec that writes a length wrong would send it.
    datagram.pop();
    let failure = sim
        .handle(Event::Peer {
            to: 1,
            from: 2,
            datagram: Arc::new(datagram),
        })
        .expect_err("a correct peer's datagram dropped as undecodable");
    assert!(failure.what.contains("undecodable"), "{failure}");
}

/// Found by `udplock sim --seed 1033 --nodes 5 --joined`: nodes 1 and 4 restart together at
/// the heal; node 4 joins node 1 while node 1 knows nobody yet, and never learns of nodes 2
/// and 5, whose pings it drops as from nodes it does not know (spec §8.3 rule 3): gossip of
/// them had run out, and its own full-state exchange was lost. A node that drops a datagram
/// of a node it has not heard of now asks a member for its whole table at its next
/// reconnect turn. Failed first: "liveness: at the end node 4 holds running node 2 as None".
#[test]
fn a_restarted_joined_node_learns_the_members_it_missed() {
    let mut config = SimConfig::new(1033, 5, 10);
    (config.joined, config.membership_changes) = (true, false);
    // As found: by the random mover (the SWIM bug it guards is independent of placement).
    config.placement_by_driver = false;
    if let Err(f) = run(&config) {
        panic!("{f}");
    }
}

/// Spec §7.1.8 under the simulator: a joined run's clients are each given one node and find
/// the others by the real client's discovery (`core::call::discovery`), through MEMBERS
/// datagrams on the simulated network: the members' tables reach them, change their rings,
/// and every client has lock requests answered by nodes it was never given. A static run's
/// clients are given every node and ask nothing.
#[test]
fn joined_clients_discover_the_nodes_they_were_not_given() {
    let config = SimConfig::new(5, 3, 3);
    assert!(config.joined, "seed 5 is a joined seed");
    let report = run(&config).unwrap_or_else(|f| panic!("{f}"));
    assert!(
        report.members_pages > 0,
        "no MEMBERS_REPLY read: {report:?}"
    );
    assert!(
        report.rings_adopted > 0,
        "no table changed a ring: {report:?}"
    );
    assert_eq!(
        report.clients_beyond_given, config.clients as u64,
        "every client reached a node it was not given: {report:?}"
    );
    let config = SimConfig::new(6, 3, 3);
    assert!(!config.joined);
    let report = run(&config).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(
        (report.members_pages, report.clients_beyond_given),
        (0, 0),
        "a static run's clients know every node: {report:?}"
    );
}

/// Found by `udplock sim --seed 100 --nodes 3 --joined` once the clients discovered the
/// nodes (spec §7.1.8): client 5, given node 2, read node 2's table just before the heal,
/// with node 1 leaving and node 3 suspect; its ring became node 2 alone. After the heal
/// node 2 held no replica of resource 2's shard and answered every copy NOT_LEADER without
/// a hint (spec §7.1.7 rule 5.3), which was no reason to read the table again: the client
/// went round its one-node ring until the deadline. A NOT_LEADER without a hint now asks
/// for a refresh too. Failed first: "liveness: op 182 (client 5, Acquire { resource: 2,
/// .. }) .. had no final answer within 1405000us".
#[test]
fn a_not_leader_without_a_hint_asks_for_the_member_table_again() {
    let mut config = SimConfig::new(100, 3, 10);
    (config.joined, config.membership_changes) = (true, false);
    if let Err(f) = run(&config) {
        panic!("{f}");
    }
}

/// Found by `udplock sim --seed 156 --nodes 5 --joined` once the clients discovered the
/// nodes (also seeds 45, 188 and 253): node 1 began a graceful leave before the heal, and
/// as nothing stops after the heal it stayed up and leaving to the end, still the one
/// replica of shards it could hand to nobody. Its members held it left, so the clients'
/// member tables left it out (spec §7.1.8 rule 2) and no other node could name it: every
/// request on those shards went unanswered. A real node's leave ends when its shell's
/// patience does; a joined run's heal now ends it (the node stops, then restarts with the
/// others). Failed first: "liveness: op 118 (client 2, Status { resource: 1 }, ..) had no
/// final answer within 1000000us".
#[test]
fn a_leave_still_under_way_ends_at_the_heal() {
    let mut config = SimConfig::new(156, 5, 10);
    (config.joined, config.membership_changes) = (true, false);
    if let Err(f) = run(&config) {
        panic!("{f}");
    }
}

/// Spec §4.11 under the simulator: clients renew by KEEPALIVE (their hold's token among
/// tokens of their ended holds), sometimes after the lease ran out. Both outcomes must arise
/// in a few seeds, or the sweep proves nothing about them: holds renewed (bit set: the
/// belief extends), and holds the server no longer has (bit clear: dropped at once). A
/// server that renewed a token it no longer holds, or a client that trusted a clear bit,
/// breaks mutual exclusion in most seeds of the 200-seed sweep.
#[test]
fn keepalives_renew_holds_and_drop_the_ones_the_server_no_longer_has() {
    let (mut renewed, mut dropped) = (0, 0);
    for seed in 0..6 {
        let report = run(&SimConfig::new(seed, 3, 3)).unwrap_or_else(|f| panic!("{f}"));
        renewed += report.keepalives_renewed;
        dropped += report.keepalives_dropped;
    }
    assert!(
        renewed > 0 && dropped > 0,
        "renewed {renewed}, dropped {dropped}"
    );
}

/// Spec §4.12 under the simulator: random clients withdraw waiting acquires with CANCEL_WAIT
/// (as a dropped future does) and every checker still holds. The runs must meet both
/// dangerous cases: a cancel that takes its waiter out of the queue, and one the grant crossed
/// (its hold released by the client, never believed in). A crossed grant is rare (about one
/// run in eight), so the runs go on, seed after seed, until both were met; at most 24.
#[test]
fn random_clients_cancel_waits_and_the_checkers_hold() {
    let (mut removed, mut crossed) = (0, 0);
    for seed in 0..24 {
        let report = run(&SimConfig::new(seed, 3, 15)).unwrap_or_else(|f| panic!("{f}"));
        removed += report.cancels_removed;
        crossed += report.cancels_crossed;
        if removed > 0 && crossed > 0 {
            return;
        }
    }
    panic!("in 24 seeds: {removed} cancels removed a waiter, {crossed} met a crossed grant");
}

/// Spec §7.2.5: the simulated nodes' wall clocks differ by at most ADDRESS_TOKEN_SKEW_S, so
/// every node accepts every other's fresh tokens; and they do differ (a skew of 0 everywhere
/// would test nothing).
#[test]
fn wall_clocks_are_skewed_within_the_address_token_bound() {
    let bound = i64::from(udplock_protocol::ADDRESS_TOKEN_SKEW_S) * 1_000_000;
    let mut widest = 0;
    for seed in 0..2_000 {
        let skews: Vec<i64> = (1..=5).map(|id| wall_clock_skew_us(seed, id)).collect();
        for &s in &skews {
            assert!(s.abs() <= WALL_CLOCK_SKEW_US_MAX, "seed {seed}: {s}");
        }
        let spread = skews.iter().max().unwrap() - skews.iter().min().unwrap();
        assert!(spread <= bound, "seed {seed}: {skews:?}");
        widest = widest.max(spread);
    }
    assert!(
        widest > bound * 9 / 10,
        "the skews never came near the bound: {widest}"
    );
}

/// Found by `udplock sim --seed 798 --nodes 3` (an `os` seed): node 1 stopped at 33 ms, a
/// write failing, while five of its shards were still asking as new (spec §8.5 rule 6), and
/// node 2's too; node 3 had started them fresh. Node 1 came back without `--new-cluster`, so
/// those shards rejoined instead: each waited for two TERM_REPLYs while node 2 waited for
/// node 1 to say "new", and no replica of them ever led (the Raft core's test
/// `a_first_start_cut_short_ends_without_the_flag` has the same deadlock, in small). A shard
/// marked new now starts new again. Failed first: "liveness: no replica of shard 11 held a
/// valid leader lease within 1000000us of healing (first at None)".
#[test]
fn a_first_start_cut_short_ends_without_the_flag() {
    if let Err(f) = run(&SimConfig::new(798, 3, 10)) {
        panic!("{f}");
    }
}

/// The checker of leaders after healing fires: here the heal is undone at once (every
/// node-to-node link stays cut, as if no node ever campaigned successfully), so no shard
/// can elect; the failure says so and says what each replica was doing at the end.
#[test]
fn a_shard_without_a_leader_after_the_heal_is_a_failure() {
    let mut config = SimConfig::new(1, 3, 1);
    (config.faults, config.shards) = (false, 1);
    let mut sim = Sim::new(config).expect("starts");
    let cut_all = |sim: &mut Sim| {
        for a in 1..=3 {
            for b in 1..=3 {
                if a != b {
                    sim.blocked.insert((a, b));
                }
            }
        }
    };
    cut_all(&mut sim);
    // `Sim::run`, with the links cut again after the heal.
    while let Some(((at, _), event)) = sim.events.pop_first() {
        if at > sim.end {
            break;
        }
        sim.now = at;
        let heal = matches!(event, Event::Heal);
        sim.handle(event).expect("no failure before the end");
        if heal {
            cut_all(&mut sim);
        }
        sim.check_leases().expect("no lease, so no lease failure");
    }
    sim.now = sim.end;
    let failure = sim.finish().expect_err("no leader after the heal");
    assert!(
        failure
            .what
            .contains("no replica of shard 0 held a valid leader lease"),
        "{failure}"
    );
    assert!(failure.what.contains("(first at None)"), "{failure}");
    assert!(
        failure.what.contains("node 3 "),
        "each replica described: {failure}"
    );
}

/// Found by `udplock sim --seed 2635 --nodes 3` (a sweep of seeds 2000 to 3999): client 4's
/// ACQUIRE (request 23, sent while no shard had a leader) was overtaken by the CANCEL_WAIT
/// it sent for it at its deadline; the cancel committed first, so the table remembered the
/// acquire as LOCK_ACQUISITION_TIMEOUT (spec §4.12, "never seen"), and a late copy of it got
/// that answer from the session's memory, unlogged, as every duplicate is. The answer is
/// right; the durability checker's replay counted only the answers the table emits, not the
/// one a cancel settles. Failed first: "durability: acknowledged op 92 (client 4, Acquire
/// ..) answered .. LockAcquisitionTimeout .., but the committed log (length 788) never
/// answers it".
#[test]
fn an_acquire_settled_by_its_cancel_before_it_was_seen_is_answered_by_the_cancel() {
    if let Err(f) = run(&SimConfig::new(2635, 3, 10)) {
        panic!("{f}");
    }
}

/// Found by `udplock sim --seed 9059 --nodes 5 --seconds 60 --joined` (the random mover):
/// node 2, a `memory` node leading shard 0 with voters {2, 1, 4}, left gracefully at
/// 53.986 s, handed the shard to node 4 and stopped at 54.016 s, losing its state (the rule
/// held: nodes 1 and 4 kept their replicas, a majority). At 54.068 s the mover asked node 4
/// to remove voter 1; node 4 had heard from node 2 52 ms before, within the election
/// timeout, so Raft's live-majority rule let it (`MembershipError::LiveMajorityLost`), and
/// the shard's voters became {2, 4}, half of them a replica that no longer existed: no
/// majority could ever answer again (no protocol survives the loss of half the voters'
/// state), node 2 was kept down to the heal and came back without it. The faults spared
/// the state of two-voter shards, but only when they took it, not when the mover made one
/// after: the mover now removes a voter only where the remaining voters keep a majority
/// that holds its state (`Sim::removal_keeps_majority`). Failed first: "liveness: no replica
/// of shard 0 held a valid leader lease within 1000000us of healing (first at None); at the
/// end: node 1 PreCandidate of term 18 (.. voters [2:.., 4:..] ..), node 2 no replica, ..".
#[test]
fn a_voter_is_not_removed_while_the_rest_lack_a_majority_with_their_state() {
    let mut config = SimConfig::new(9059, 5, 60);
    (config.joined, config.membership_changes) = (true, false);
    assert!(!config.placement_driver(), "as found: by the random mover");
    if let Err(f) = run(&config) {
        panic!("{f}");
    }
}

/// The rule behind the test above, alone (4 nodes): of voters {1, 2, 3}, once node 2
/// crashed (a crashed replica counts as one without its state), removing node 1 or 3 would
/// leave it half of the voters, so the simulator asks for neither; removing node 2 itself,
/// adding a learner, or any removal while node 2 runs is asked for; of voters {1, 2, 3, 4},
/// removing node 3 leaves two of three holding their state.
#[test]
fn a_removal_must_leave_a_majority_of_voters_holding_their_state() {
    let mut config = SimConfig::new(1, 4, 1);
    (config.faults, config.shards) = (false, 1);
    let mut sim = Sim::new(config).expect("starts");
    // Until every replica has settled (none still asking as new, spec §8.5).
    while let Some(((at, _), event)) = sim.events.pop_first() {
        sim.now = at;
        sim.handle(event).expect("no failure");
        let settled = sim
            .nodes
            .iter()
            .all(|n| n.replica(0).is_some_and(|r| !r.raft().rejoining()));
        if settled {
            break;
        }
    }
    let voters = Membership::of_voters(&[1, 2, 3]);
    let allowed = |sim: &Sim, change| sim.removal_keeps_majority(0, &voters, change);
    for id in 1..=3 {
        assert!(allowed(&sim, MembershipChange::Remove(id)), "node {id}");
    }
    sim.crash(2);
    assert!(!allowed(&sim, MembershipChange::Remove(1)));
    assert!(!allowed(&sim, MembershipChange::Remove(3)));
    assert!(allowed(&sim, MembershipChange::Remove(2)));
    assert!(allowed(&sim, MembershipChange::AddLearner(4)));
    let four = Membership::of_voters(&[1, 2, 3, 4]);
    assert!(sim.removal_keeps_majority(0, &four, MembershipChange::Remove(3)));
}
