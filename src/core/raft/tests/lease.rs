//! CheckQuorum (thesis §6.2) and the leader lease (thesis §6.4.1).

use super::*;

#[test]
fn check_quorum_isolated_leader_steps_down_within_an_election_timeout() {
    // Thesis §6.2.
    let mut net = Net::new(3, 13);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let min = net.configs[0].election_timeout_min;
    let cut_at = net.now;
    net.isolate(leader);

    net.run_until(cut_at + ms(100));
    assert_eq!(
        net.node(leader).role(),
        Role::Leader,
        "not before it has to"
    );
    net.run_until(cut_at + min);
    assert_eq!(net.node(leader).role(), Role::Follower);
    assert!(!net.node(leader).lease_valid(net.now));
    assert_eq!(
        net.node_mut(leader).propose(cut_at + min, b"x".to_vec()),
        Err(NotLeader { leader_hint: None })
    );

    // The majority side elects a new leader of a later term.
    net.run_for(ms(1_000));
    let new_leader = net.leader().unwrap();
    assert_ne!(new_leader, leader);
    assert!(net.node(new_leader).term() > term);
}

#[test]
fn lease_needs_a_majority_acknowledged_round() {
    let mut net = Net::new(3, 17);
    // Every AppendReply is lost: leaders are elected but no round is ever acknowledged.
    net.filter = Some(Box::new(|_, _, message| match message {
        Message::AppendReply { .. } => None,
        other => Some(other),
    }));
    let leader = net.elect(ms(1_000));
    for _ in 0..100 {
        assert!(!net.node(leader).lease_valid(net.now));
        net.run_for(ms(1));
    }
    assert_eq!(net.node(leader).role(), Role::Leader);
    net.filter = None;
    // The next heartbeat round is acknowledged (replies are instant here).
    net.run_for(net.configs[0].heartbeat_interval);
    assert_eq!(net.node(leader).role(), Role::Leader);
    assert!(net.node(leader).lease_valid(net.now));
}

#[test]
fn lease_ends_by_round_start_plus_min_election_timeout_over_drift() {
    let mut net = Net::new(3, 19);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let lease = net.configs[0].lease_duration();
    assert_eq!(lease, us(148_514), "150 ms / 1.01");

    // The next heartbeat starts a round at `start`; it is acknowledged at once. Then the
    // leader is cut off, so no later round is.
    let start = net.node(leader).poll_timeout();
    net.run_until(start);
    assert!(net.node(leader).lease_valid(start));
    net.isolate(leader);
    net.run_until(start + lease - us(1));
    assert_eq!(net.node(leader).role(), Role::Leader);
    assert!(net.node(leader).lease_valid(net.now));
    net.run_until(start + lease);
    assert_eq!(
        net.node(leader).role(),
        Role::Leader,
        "CheckQuorum has not fired yet: the lease is what ends"
    );
    assert!(!net.node(leader).lease_valid(net.now));
}

/// Issue 7 A3 (seen in simulator seed 504654): round numbers start again at 1 when a node
/// restarts, and a follower of a later term answered a delayed Append of the leader's
/// previous life with that Append's round. The restarted node, leading the later term, took
/// it for an acknowledgement of its own round of that number: a lease and a ReadIndex
/// confirmation no follower gave. No answer to an Append of an earlier term may count.
#[test]
fn a_restarted_leader_never_counts_answers_to_its_previous_lifes_rounds() {
    let mut net = Net::new(3, 41);
    let a = net.elect(ms(1_000));
    net.run_for(ms(200));
    let (b, c) = {
        let others: Vec<NodeId> = net.ids().into_iter().filter(|&id| id != a).collect();
        (others[0], others[1])
    };
    // A copy of the old life's latest Append to b, delayed in the network.
    let stale = net
        .sent
        .iter()
        .rev()
        .find(|(from, to, m)| *from == a && *to == b && matches!(m, Message::Append { .. }))
        .map(|(_, _, m)| m.clone())
        .expect("an Append to b");
    let Message::Append {
        term: old_term,
        round: old_round,
        ..
    } = stale
    else {
        unreachable!()
    };
    assert!(old_round > 2);
    let persisted = net.crash(a);
    net.restart(a, 99, persisted);
    net.campaign(a);
    assert_eq!(net.node(a).role(), Role::Leader);
    assert!(net.node(a).term() > old_term);
    // The new life's rounds catch up with the old number, each acknowledged...
    while net.node_mut(a).confirmed_round() < old_round - 1 {
        let now = net.now;
        net.node_mut(a).confirm_leadership(now).expect("leads");
        net.after_input(a);
        net.deliver_due();
    }
    assert_eq!(net.node_mut(a).confirmed_round(), old_round - 1);
    // ...then it is cut off, and later a read starts round `old_round`, which nobody hears.
    net.isolate(a);
    let t1 = net.now + ms(100);
    assert_eq!(net.node_mut(a).confirm_leadership(t1), Some(old_round));
    drain(net.node_mut(a));
    // The delayed Append reaches b (now in the later term), and b's answer reaches a.
    net.node_mut(b).handle_message(t1, a, stale);
    for (to, reply) in drain(net.node_mut(b)) {
        assert_eq!(to, a);
        net.node_mut(a).handle_message(t1, b, reply);
    }
    assert!(
        net.node_mut(a).confirmed_round() < old_round,
        "a read confirmed by an answer to the previous life's round"
    );
    // The lease of the round acknowledged before the cut ends 48.5 ms after t1; a lease
    // from round `old_round` would run on.
    assert!(
        !net.node(a).lease_valid(t1 + ms(60)),
        "a lease from an answer to the previous life's round"
    );
    assert_eq!(net.node(a).faulty_drops(), 0);
    let _ = c;
}

#[test]
fn lease_duration_shrinks_with_the_drift_bound() {
    let with_drift = |drift_bound_ppm| Config {
        drift_bound_ppm,
        ..Config::default()
    };
    assert_eq!(with_drift(0).lease_duration(), ms(150));
    assert_eq!(with_drift(10_000).lease_duration(), us(148_514));
    assert_eq!(with_drift(500_000).lease_duration(), ms(100));
    assert_eq!(with_drift(999_999).lease_duration(), us(75_000));
}
