//! A joined node's graceful leave (Raft thesis §3.10, issue 10): a leaving leader hands each
//! shard to a caught-up voter of the shard's own configuration, not of the static peer list
//! (a joined node has none).

use super::*;

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
