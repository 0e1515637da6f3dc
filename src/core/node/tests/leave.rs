//! A joined node's graceful stop and leave (Raft thesis §3.10, issue 10): a stopping leader
//! hands each shard to a caught-up voter of the shard's own configuration, not of the static
//! peer list (a joined node has none); a stop announces no SWIM leave, a leave does.

use super::*;
use udplock_protocol::SwimState;

/// The voters of `shard` as node `i` of `net` holds them.
fn voters(net: &Joining, i: usize, shard: u32) -> Vec<NodeId> {
    net.nodes[i]
        .1
        .replica(shard)
        .map(|r| r.raft().membership().voters.clone())
        .unwrap_or_default()
}

/// The nodes (by index in `net`) that lead `shard`.
fn leaders(net: &Joining, shard: u32) -> Vec<usize> {
    (0..net.nodes.len())
        .filter(|&i| {
            net.nodes[i]
                .1
                .replica(shard)
                .is_some_and(|r| r.raft().role() == Role::Leader)
        })
        .collect()
}

/// Node 1 of a joined trio leads shard 0, whose voters are 1, 2 and 3 (added as learners,
/// promoted), and shards 1 to 3 alone. Leaving, it hands shard 0 to node 2 (the next voter
/// after it by id, caught up) and keeps the others, which have no other voter to take them.
/// It used to pick targets from `config.peers`, which a joined node's configuration leaves
/// empty: it handed over nothing.
#[test]
fn a_leaving_joined_leader_hands_a_shard_to_the_next_voter_of_its_configuration() {
    let mut net = joined_trio();
    assert!(net.nodes[0].1.config().peers.len() <= 1, "no peer list");
    change(&mut net, 0, raft::MembershipChange::AddLearner(2));
    change(&mut net, 0, raft::MembershipChange::AddLearner(3));
    change(&mut net, 0, raft::MembershipChange::Promote(2));
    change(&mut net, 0, raft::MembershipChange::Promote(3));
    assert_eq!(voters(&net, 0, 0), [1, 2, 3]);
    assert_eq!(leaders(&net, 0), [0], "node 1 leads shard 0");
    let now = net.now;
    net.nodes[0].1.start_leaving(now);
    assert!(
        net.run_until(3, |n| leaders(n, 0) == [1]),
        "shard 0 not handed to node 2: leaders {:?}",
        leaders(&net, 0)
    );
    for shard in 1..4 {
        assert_eq!(voters(&net, 0, shard), [1]);
        assert_eq!(
            leaders(&net, shard),
            [0],
            "shard {shard}: no one to hand it to"
        );
    }
    assert_eq!(net.nodes[0].1.leading(), 3);
}

/// Node 1 of a joined trio whose shard 0 has the voters 1, 2 and 3, led by node 1.
fn trio_with_shard_0_on_three_voters() -> Joining {
    let mut net = joined_trio();
    change(&mut net, 0, raft::MembershipChange::AddLearner(2));
    change(&mut net, 0, raft::MembershipChange::AddLearner(3));
    change(&mut net, 0, raft::MembershipChange::Promote(2));
    change(&mut net, 0, raft::MembershipChange::Promote(3));
    assert_eq!(voters(&net, 0, 0), [1, 2, 3]);
    assert_eq!(leaders(&net, 0), [0], "node 1 leads shard 0");
    net
}

/// Node 1 of [`trio_with_shard_0_on_three_voters`] stops gracefully (`announce`: and leaves),
/// hands shard 0 over, and its process ends. Returns every SWIM state nodes 2 and 3 held it
/// in from the stop on, each time (100 ms apart) both held it the same, until both hold it
/// `until` (or 10 s pass).
fn states_of_a_stopped_node(announce: bool, until: SwimState) -> Vec<Vec<Option<SwimState>>> {
    let mut net = trio_with_shard_0_on_three_voters();
    let now = net.now;
    if announce {
        net.nodes[0].1.start_leaving(now);
    } else {
        net.nodes[0].1.start_stopping(now);
    }
    assert!(net.nodes[0].1.is_stopping());
    assert_eq!(net.nodes[0].1.is_leaving(), announce);
    let mut seen = Vec::new();
    let held = |n: &Joining| -> Vec<Option<SwimState>> {
        (0..n.nodes.len())
            .filter(|&i| n.nodes[i].1.node_id() != 1)
            .map(|i| n.holds(i, 1))
            .collect()
    };
    // The hand-over, as the shell waits for it before it ends the process.
    for _ in 0..30 {
        if leaders(&net, 0) == [1] {
            break;
        }
        net.run_for(100);
        seen.push(held(&net));
    }
    assert_eq!(leaders(&net, 0), [1], "shard 0 not handed to node 2");
    // The process ends: node 1 answers nothing any more.
    net.nodes.remove(0);
    for _ in 0..100 {
        seen.push(held(&net));
        if seen.last().unwrap().iter().all(|&s| s == Some(until)) {
            break;
        }
        net.run_for(100);
    }
    seen
}

/// Issue 10, a restart that moves nothing (Consul's `leave_on_terminate = false`): a node
/// that stops without leaving hands over the shard it leads, and the others never hold it
/// left — alive while it hands over, then suspect and dead (SWIM §4), which placement
/// waits dead-after on (spec §8.13) — so a restart within dead-after moves no replica.
#[test]
fn a_node_that_stops_without_leaving_hands_over_and_is_never_held_left() {
    let seen = states_of_a_stopped_node(false, SwimState::Dead);
    assert!(
        seen.iter().flatten().all(|&s| s != Some(SwimState::Left)),
        "held left: {seen:?}"
    );
    assert!(
        seen.last()
            .unwrap()
            .iter()
            .all(|&s| s == Some(SwimState::Dead)),
        "not found dead: {seen:?}"
    );
    assert!(
        seen.iter()
            .flatten()
            .any(|&s| s == Some(SwimState::Suspect)),
        "never suspected first: {seen:?}"
    );
}

/// The same with a leave (`--leave-on-stop`, decommissioning): the others hold it left
/// (SWIM's voluntary leave), never dead, so placement replaces its replicas at once.
#[test]
fn a_node_that_stops_and_leaves_hands_over_and_is_held_left() {
    let seen = states_of_a_stopped_node(true, SwimState::Left);
    assert!(
        seen.last()
            .unwrap()
            .iter()
            .all(|&s| s == Some(SwimState::Left)),
        "not held left: {seen:?}"
    );
    assert!(
        seen.iter().flatten().all(|&s| s != Some(SwimState::Dead)),
        "held dead: {seen:?}"
    );
}
