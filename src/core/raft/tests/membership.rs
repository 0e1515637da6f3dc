//! Single-server membership changes with learners (thesis §4; `membership.rs`).

use super::*;

/// Nodes 1..=`nodes`, of which 1..=`voters` are the static voters; the others start outside
/// the configuration (they join as learners).
fn members_net(nodes: u64, voters: u64, seed: u64) -> Net {
    let mut net = Net::new(nodes, seed);
    for id in 1..=nodes {
        let config = config(id, voters);
        net.nodes[id as usize - 1] = Some(Raft::new(
            config.clone(),
            seed.wrapping_mul(1_000).wrapping_add(id),
            HardState::default(),
            Vec::new(),
            Instant::ZERO,
        ));
        net.configs[id as usize - 1] = config;
    }
    net
}

/// Static voters 1..=`nodes`, led by node 1, which has removed node `outside` (so that it can
/// come back as a learner).
fn net_without(nodes: u64, outside: NodeId, seed: u64) -> Net {
    let mut net = Net::new(nodes, seed);
    lead(&mut net, 1);
    let index = change(&mut net, 1, MembershipChange::Remove(outside)).expect("removed");
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    assert!(!net.node(1).membership().contains(outside));
    net
}

/// Proposes `change` on `leader` and delivers what follows at once.
fn change(net: &mut Net, leader: NodeId, change: MembershipChange) -> Result<u64, MembershipError> {
    let now = net.now;
    let result = net.node_mut(leader).propose_membership(now, change);
    net.after_input(leader);
    result
}

/// Campaigns `id` and runs until it leads and has committed its no-op.
fn lead(net: &mut Net, id: NodeId) {
    net.campaign(id);
    net.run_for(ms(20));
    assert_eq!(net.node(id).role(), Role::Leader, "node {id} leads");
    assert_eq!(net.node(id).commit_index(), net.node(id).last_index());
}

fn voters(net: &Net, id: NodeId) -> Vec<NodeId> {
    net.node(id).membership().voters.clone()
}

fn learners(net: &Net, id: NodeId) -> Vec<NodeId> {
    net.node(id).membership().learners.clone()
}

#[test]
fn a_node_outside_the_static_voters_starts_and_never_campaigns() {
    let mut net = members_net(4, 3, 1);
    net.isolate(4);
    net.run_for(ms(3_000));
    assert_eq!(net.node(4).role(), Role::Follower);
    assert_eq!(
        net.node(4).term(),
        0,
        "a non-voter never starts an election"
    );
    assert!(
        !net.sent.iter().any(|(from, _, _)| *from == 4),
        "it sends nothing of its own"
    );
}

#[test]
fn a_learner_catches_up_is_promoted_and_a_voter_is_removed() {
    let mut net = net_without(4, 4, 2);
    for k in 1..=5u8 {
        net.propose(1, vec![k]);
    }
    net.run_for(ms(50));
    // Node 4 hears from nobody until it is a learner again.
    assert!(net.node(4).last_index() < net.node(1).last_index());

    let index = change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    assert_eq!(learners(&net, 1), [4], "in force on the leader at once");
    assert_eq!(
        change(&mut net, 1, MembershipChange::Promote(4)),
        Err(MembershipError::ChangePending { index }),
        "one change at a time"
    );
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    for id in net.ids() {
        assert_eq!(voters(&net, id), [1, 2, 3], "node {id}");
        assert_eq!(learners(&net, id), [4], "node {id}");
    }
    assert_eq!(
        net.node(4).commit_index(),
        net.node(1).commit_index(),
        "the learner holds the log"
    );
    assert_eq!(net.committed_data(4), net.committed_data(1));

    let index = change(&mut net, 1, MembershipChange::Promote(4)).expect("caught up");
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    for id in net.ids() {
        assert_eq!(voters(&net, id), [1, 2, 3, 4], "node {id}");
    }

    let index = change(&mut net, 1, MembershipChange::Remove(2)).expect("removed");
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    assert_eq!(voters(&net, 1), [1, 3, 4]);
    // Voters 3 and 4 now make the majority with the leader: node 2 is not needed.
    net.isolate(2);
    let index = net.propose(1, vec![9]);
    net.run_for(ms(50));
    assert!(net.node(1).commit_index() >= index);
    // The removed node never disrupts: whatever it does, the leader keeps its term.
    net.heal();
    let term = net.node(1).term();
    net.run_for(ms(3_000));
    assert_eq!(net.leader(), Some(1));
    assert_eq!(net.node(1).term(), term);
}

#[test]
fn learners_count_towards_no_majority() {
    let mut net = net_without(4, 4, 3);
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    net.run_for(ms(100));
    // The leader with its learner is no majority of voters 1, 2, 3.
    for id in [2, 3] {
        net.isolate(id);
    }
    let cut_at = net.now;
    let committed = net.node(1).commit_index();
    let index = net.propose(1, vec![7]);
    net.run_for(ms(20));
    assert_eq!(net.node(4).last_index(), index, "the learner holds it");
    assert_eq!(
        net.node(1).commit_index(),
        committed,
        "the learner's copy commits nothing"
    );
    // Every round a voter acknowledged started before the cut: the lease ends a lease
    // duration after it, whatever the learner acknowledges (and CheckQuorum follows).
    let lease = net.configs[0].lease_duration();
    net.run_until(cut_at + lease);
    assert!(!net.node(1).lease_valid(net.now));
    net.run_for(ms(500));
    assert_ne!(
        net.node(1).role(),
        Role::Leader,
        "CheckQuorum counts no learner"
    );
}

#[test]
fn a_leader_refuses_changes_it_cannot_make_safely() {
    let mut net = members_net(5, 4, 4);
    assert!(matches!(
        change(&mut net, 1, MembershipChange::AddLearner(4)),
        Err(MembershipError::NotLeader(_))
    ));
    // A leader whose no-op has not committed (Ongaro, raft-dev 2015): its Appends are lost.
    net.filter = Some(Box::new(|from, _, message| {
        (from != 1 || !matches!(message, Message::Append { .. })).then_some(message)
    }));
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert!(net.node(1).commit_index() < net.node(1).last_index());
    assert_eq!(
        change(&mut net, 1, MembershipChange::AddLearner(4)),
        Err(MembershipError::NoCommitInTerm)
    );
    net.filter = None;
    net.run_for(ms(100));
    assert_eq!(net.node(1).commit_index(), net.node(1).last_index());
    change(&mut net, 1, MembershipChange::Remove(4)).expect("removed");
    net.run_for(ms(100));
    assert_eq!(
        change(&mut net, 1, MembershipChange::AddLearner(2)),
        Err(MembershipError::AlreadyMember(2))
    );
    assert_eq!(
        change(&mut net, 1, MembershipChange::AddLearner(0)),
        Err(MembershipError::NodeIdZero)
    );
    assert_eq!(
        change(&mut net, 1, MembershipChange::Promote(2)),
        Err(MembershipError::NotALearner(2))
    );
    assert_eq!(
        change(&mut net, 1, MembershipChange::Remove(5)),
        Err(MembershipError::NotAMember(5))
    );
    // A learner that has not caught up is not promoted.
    net.isolate(4);
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    net.run_for(ms(100));
    let last = net.node(1).last_index();
    assert_eq!(
        change(&mut net, 1, MembershipChange::Promote(4)),
        Err(MembershipError::NotCaughtUp {
            id: 4,
            matched: 0,
            last
        })
    );
    net.heal();
    net.run_for(ms(100));
    change(&mut net, 1, MembershipChange::Promote(4)).expect("caught up now");
    net.run_for(ms(100));
    // Spec §8.5, "Replica identities": with replica ids in every configuration, a voter may
    // be any node, and a shard may live on fewer nodes than the static voters (3 of 5).
    change(&mut net, 1, MembershipChange::AddLearner(5)).expect("a learner may be anyone");
    net.run_for(ms(100));
    change(&mut net, 1, MembershipChange::Promote(5)).expect("a voter may be anyone");
    let mut five = Net::new(5, 12);
    lead(&mut five, 1);
    change(&mut five, 1, MembershipChange::Remove(5)).expect("4 of 5 static voters");
    five.run_for(ms(100));
    change(&mut five, 1, MembershipChange::Remove(4)).expect("3 of 5");
    // The last voter is never removed.
    let mut alone = members_net(2, 1, 6);
    alone.run_for(ms(10));
    assert_eq!(alone.node(1).role(), Role::Leader);
    assert_eq!(
        change(&mut alone, 1, MembershipChange::Remove(1)),
        Err(MembershipError::LastVoter(1))
    );
    // A single voter commits its change at once.
    let index = change(&mut alone, 1, MembershipChange::AddLearner(2)).expect("added");
    assert_eq!(alone.node(1).commit_index(), index);
}

#[test]
fn a_removed_leader_leads_until_the_change_commits_then_steps_down() {
    let mut net = members_net(3, 3, 7);
    lead(&mut net, 1);
    let index = change(&mut net, 1, MembershipChange::Remove(1)).expect("removed");
    assert_eq!(voters(&net, 1), [2, 3]);
    assert_eq!(net.node(1).role(), Role::Leader, "until the change commits");
    net.run_for(ms(10));
    assert!(net.node(2).commit_index() >= index || net.node(1).role() != Role::Leader);
    assert_ne!(
        net.node(1).role(),
        Role::Leader,
        "steps down once committed"
    );
    let leader = net.elect(ms(2_000));
    assert!(leader == 2 || leader == 3);
    let term = net.node(leader).term();
    let index = net.propose(leader, vec![3]);
    net.run_for(ms(3_000));
    assert!(net.node(leader).commit_index() >= index);
    assert_eq!(
        net.node(leader).term(),
        term,
        "the removed node disrupts nobody"
    );
    assert_eq!(net.node(1).role(), Role::Follower);
}

#[test]
fn a_truncated_configuration_gives_way_to_the_previous_one() {
    // Node 2 of static voters 1, 2, 3 receives a change from leader 1 of term 1, then the
    // entries of leader 3 of term 2 that replace it (Raft §5.3).
    let mut node = Raft::new(
        config(2, 3),
        1,
        HardState::default(),
        Vec::new(),
        Instant::ZERO,
    );
    let added = Membership {
        voters: vec![1, 2, 3],
        learners: vec![4],
        replicas: Some(vec![(1, 0x11), (2, node.replica()), (3, 0x33), (4, 0)]),
    };
    let append = |term, prev_log_index, prev_log_term, entries: Vec<Entry>| Message::Append {
        term,
        prev_log_index,
        prev_log_term,
        entries: entries.into(),
        leader_commit: 1,
        round: 1,
        transfer_to: None,
    };
    let noop = Entry {
        term: 1,
        index: 1,
        data: Vec::new().into(),
    };
    let config_entry = Entry {
        term: 1,
        index: 2,
        data: added.to_entry().into(),
    };
    let now = Instant::ZERO + ms(1);
    node.handle_message(now, 1, append(1, 0, 0, vec![noop, config_entry]));
    assert_eq!(
        node.membership(),
        &added,
        "in force once in the log, uncommitted"
    );
    assert_eq!(node.commit_index(), 1);
    let later = now + ms(1_000);
    node.handle_message(later, 3, append(2, 1, 1, vec![entry(2, 2)]));
    assert_eq!(node.last_index(), 2);
    assert_eq!(
        node.membership(),
        &Membership::of_voters(&[1, 2, 3]),
        "the previous configuration holds again"
    );
}

/// Ongaro's single-server change bug (raft-dev, 2015), which the rule "a leader proposes a
/// change only after committing an entry of its own term" prevents. Static voters 1..=4.
/// Leader 1 (term 1) removes 4, which only it hears of: C1 = voters 1, 2, 3. Node 3 is elected
/// in term 2 by 2, 3 and 4 (C0 = 1..=4), and its Appends reach 4 only. Were it to remove node
/// 1 at once (C2 = voters 2, 3, 4), C2 would commit on 3 and 4, a majority of C2; node 1 would
/// then be elected in term 3 by 1 and 2, a majority of C1, and commit C1 at the index where 3
/// and 4 committed C2's no-op: two committed entries at one index. C1 and C2 differ by two
/// servers, so their majorities need not overlap. With the rule node 3 cannot propose C2
/// before its no-op commits, which needs node 1 or node 2.
#[test]
fn a_change_waits_for_an_entry_of_the_leaders_term_so_two_configurations_never_split() {
    let mut net = Net::new(4, 9);
    lead(&mut net, 1);
    for id in [2, 3, 4] {
        net.isolate(id);
    }
    change(&mut net, 1, MembershipChange::Remove(4)).expect("proposed");
    net.run_for(ms(10));
    assert_eq!(voters(&net, 1), [1, 2, 3]);
    assert_eq!(voters(&net, 2), [1, 2, 3, 4]);

    // Node 3 is elected by 2, 3 and 4 (C0); its Appends never reach node 2.
    net.heal();
    net.isolate(1);
    net.filter = Some(Box::new(|from, to, message| {
        (from != 3 || to != 2 || !matches!(message, Message::Append { .. })).then_some(message)
    }));
    net.campaign(3);
    assert_eq!(net.node(3).role(), Role::Leader);
    assert!(net.node(3).commit_index() < net.node(3).last_index());
    let refused = change(&mut net, 3, MembershipChange::Remove(1));
    net.run_for(ms(20));

    // Node 1 campaigns with node 2 only.
    net.heal();
    for (a, b) in [(1, 3), (1, 4), (2, 3), (2, 4)] {
        net.blocked.insert((a, b));
        net.blocked.insert((b, a));
    }
    net.run_for(ms(2_000));
    net.heal();
    net.filter = None;
    net.run_for(ms(2_000));
    let leader = net.leader().expect("a leader after healing");
    let index = net.propose(leader, vec![42]);
    net.run_for(ms(500));
    let members: Vec<NodeId> = net.node(leader).membership().members().collect();
    for id in members {
        assert!(net.node(id).commit_index() >= index, "node {id}");
    }
    assert_eq!(refused, Err(MembershipError::NoCommitInTerm));
}

#[test]
fn the_configuration_survives_a_restart_and_compaction() {
    let mut net = net_without(4, 4, 10);
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    net.run_for(ms(100));
    change(&mut net, 1, MembershipChange::Promote(4)).expect("promoted");
    net.run_for(ms(100));
    // Compaction past the CONFIG entries: the snapshot's configuration holds.
    let commit = net.node(1).commit_index();
    let data = Arc::new(snapshot_bytes(&net.chosen[..commit as usize]));
    net.node_mut(1).compact(commit, Arc::clone(&data));
    assert_eq!(voters(&net, 1), [1, 2, 3, 4]);
    assert_eq!(net.node(1).membership_at(commit).voters, [1, 2, 3, 4]);
    // A restart reads the configuration back from the log.
    let persisted = net.crash(2);
    let restored = Raft::restore(
        net.configs[1].clone(),
        99,
        persisted.hard,
        persisted.snapshot,
        persisted.log,
        net.now,
    );
    assert_eq!(restored.membership().voters, [1, 2, 3, 4]);
}

/// One change at a time (thesis §4.1). Voters 1, 2, 3 and learner 4 (C0). Leader 1, cut off
/// from 2 and 3 but not from 4, promotes 4 (C1 = 1, 2, 3, 4) and, were it allowed to stack a
/// second change before the first commits, removes 2 (C2 = 1, 3, 4): C2's majority {1, 4}
/// commits both and whatever follows, while 2 and 3, a majority of C0 that never saw either
/// change, elect a leader and commit at the same index. C0 and C2 differ by two servers.
#[test]
fn a_cut_off_leader_cannot_stack_changes_into_a_majority_of_its_own() {
    let mut net = net_without(4, 4, 11);
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    net.run_for(ms(100));
    assert_eq!(learners(&net, 2), [4]);
    for (a, b) in [(1, 2), (1, 3), (4, 2), (4, 3)] {
        net.blocked.insert((a, b));
        net.blocked.insert((b, a));
    }
    let first = change(&mut net, 1, MembershipChange::Promote(4)).expect("caught up");
    let second = change(&mut net, 1, MembershipChange::Remove(2));
    if net.node(1).role() == Role::Leader {
        net.propose(1, vec![1]);
    }
    // Nodes 2 and 3 elect a leader of their own and commit.
    net.run_for(ms(1_000));
    let other = net
        .leader()
        .filter(|&l| l == 2 || l == 3)
        .expect("2 or 3 leads");
    let index = net.propose(other, vec![2]);
    net.run_for(ms(100));
    assert!(net.node(other).commit_index() >= index);
    net.heal();
    net.run_for(ms(1_000));
    assert_eq!(second, Err(MembershipError::ChangePending { index: first }));
}

/// A leader that proposed its own removal and lost its leadership before the removal
/// committed may hold the only up-to-date log: it must still be able to campaign (counting
/// the voters of its latest configuration, not itself), or the shard can stay without a
/// leader (found by the simulator: seed 266 on 4 nodes). Static voters 1..=4; node 4 is down.
#[test]
fn a_leader_whose_removal_did_not_commit_can_still_be_elected() {
    let mut net = Net::new(4, 13);
    lead(&mut net, 1);
    // Node 1's Appends stop reaching anyone: its removal stays in its own log only.
    net.filter = Some(Box::new(|from, _, message| {
        (from != 1 || !matches!(message, Message::Append { .. })).then_some(message)
    }));
    change(&mut net, 1, MembershipChange::Remove(1)).expect("proposed");
    net.crash(4);
    // Node 1 steps down (CheckQuorum); 2 and 3 cannot be elected without it.
    net.run_for(ms(400));
    net.filter = None;
    // Nodes 2 and 3 alone are no majority of 1..=4, and node 1's log is ahead of theirs.
    net.run_for(ms(3_000));
    let leader = net.leader().expect("a leader");
    assert!(
        leader == 2 || leader == 3,
        "node 1 stepped down once removed"
    );
    let index = net.propose(leader, vec![5]);
    net.run_for(ms(200));
    assert!(net.node(leader).commit_index() >= index);
    assert_eq!(voters(&net, leader), [2, 3, 4]);
}

/// A leader that adopts a new configuration holds no lease until a majority of the new
/// voters acknowledged a round started after the change (`lease.rs`).
#[test]
fn a_configuration_change_restarts_the_lease_from_the_new_voters() {
    let mut net = net_without(4, 4, 14);
    net.run_for(ms(100));
    assert!(net.node(1).lease_valid(net.now));
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    assert!(!net.node(1).lease_valid(net.now), "dropped at the change");
    net.run_for(ms(100));
    assert!(
        net.node(1).lease_valid(net.now),
        "back after a round of the new voters"
    );
}

/// Spec §8.5, "Replica identities": a candidate whose configuration names node 2 with replica
/// `r2` counts no grant node 2 sends with another replica id (a replica that replaced the
/// named one after losing its state): neither a pre-vote nor a vote. Before replica ids, any
/// grant of node 2 counted.
#[test]
fn a_grant_from_a_replaced_replica_does_not_count() {
    let mut node = Raft::new(
        config(1, 3),
        1,
        HardState::default(),
        Vec::new(),
        Instant::ZERO,
    );
    let named = Membership {
        voters: vec![1, 2, 3],
        learners: vec![],
        replicas: Some(vec![(1, node.replica()), (2, 0x22), (3, 0x33)]),
    };
    // Leader 2 of term 1 replicates its no-op and the configuration, both committed.
    let noop = Entry {
        term: 1,
        index: 1,
        data: Vec::new().into(),
    };
    let config_entry = Entry {
        term: 1,
        index: 2,
        data: named.to_entry().into(),
    };
    let append = Message::Append {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![noop, config_entry].into(),
        leader_commit: 2,
        round: 1,
        transfer_to: None,
    };
    node.handle_message(Instant::ZERO + ms(1), 2, append);
    assert_eq!(node.membership(), &named);
    drain(&mut node);
    // The leader falls silent: node 1 pre-campaigns for term 2.
    let later = Instant::ZERO + ms(1_000);
    node.handle_timeout(later);
    assert_eq!(node.role(), Role::PreCandidate);
    let pre_grant = |replica| Message::PreVoteReply {
        term: 2,
        granted: true,
        replica,
    };
    node.handle_message(later, 2, pre_grant(0x2222));
    assert_eq!(
        node.role(),
        Role::PreCandidate,
        "a pre-vote of a replaced replica counted"
    );
    node.handle_message(later, 2, pre_grant(0x22));
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.term(), 2);
    let grant = |replica| Message::VoteReply {
        term: 2,
        granted: true,
        replica,
    };
    node.handle_message(later, 3, grant(0x3333));
    node.handle_message(later, 2, grant(0x2222));
    assert_eq!(
        node.role(),
        Role::Candidate,
        "a vote of a replaced replica counted"
    );
    node.handle_message(later, 3, grant(0x33));
    assert_eq!(node.role(), Role::Leader, "the named replica's vote counts");
}

/// Spec §8.5, "Replica identities": a leader whose configuration names (2, r2) does not count
/// the acknowledgements of node 2's new replica after node 2 lost its state and rejoined:
/// with node 3 down, an entry proposed then does not commit, and CheckQuorum does not rest
/// on the new replica either. `member_replicas` shows the replaced voter; removing
/// it, adding node 2 back as a learner and promoting it (its new replica id named) makes the
/// shard commit again with 1 and 2.
#[test]
fn a_leader_counts_no_acknowledgement_of_a_replaced_replica() {
    let mut net = members_net(4, 3, 41);
    lead(&mut net, 1);
    // The first CONFIG names every voter with the replica id the leader heard from it.
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    net.run_for(ms(100));
    let old = net.node(2).replica();
    assert_eq!(net.node(1).membership().replica_of(2), Some(old));
    // Node 2 loses its state and rejoins (static peers: spec §8.5 rules 1-7).
    net.crash(2);
    net.rejoin(2, 4242);
    net.run_for(ms(1_000));
    let new = net.node(2).replica();
    assert_ne!(new, old, "a replica without state draws a new id");
    assert!(!net.node(2).rejoining(), "node 2 rejoined");
    assert_eq!(net.node(1).role(), Role::Leader);
    let replaced: Vec<NodeId> = net
        .node(1)
        .member_replicas()
        .into_iter()
        .filter(|m| m.replaced())
        .map(|m| m.id)
        .collect();
    assert_eq!(replaced, [2]);
    // Node 2's new replica may not campaign, so no transfer goes to it (it would never end,
    // and the leader holds no lease while one runs).
    let now = net.now;
    assert!(!net.node(1).follower_caught_up(2, now));
    net.node_mut(1).transfer_leadership(now, 2).expect("leads");
    assert_eq!(
        net.node(1).transferring_to(),
        None,
        "a transfer to a replaced voter"
    );
    // With node 3 down, 1 and the new replica of 2 are no majority of 1, (2, old), 3.
    let three = net.crash(3);
    let index = net.propose(1, vec![9]);
    net.run_for(ms(20));
    assert!(
        net.node(2).last_index() >= index,
        "the new replica holds the entry"
    );
    assert!(
        net.node(1).commit_index() < index,
        "committed with an acknowledgement of a replaced replica"
    );
    net.run_for(ms(300));
    assert_ne!(
        net.node(1).role(),
        Role::Leader,
        "CheckQuorum counted a replaced replica"
    );
    // Node 3 back: the shard replaces the voter (remove, add as a learner, promote).
    net.restart(3, 77, three);
    let step = |net: &mut Net, change_to: MembershipChange| loop {
        let leader = net.elect(ms(2_000));
        match change(net, leader, change_to) {
            Ok(_) => {
                net.run_for(ms(100));
                return;
            }
            Err(MembershipError::ChangePending { .. } | MembershipError::NoCommitInTerm) => {
                net.run_for(ms(50))
            }
            Err(error) => panic!("{change_to:?}: {error}"),
        }
    };
    step(&mut net, MembershipChange::Remove(2));
    step(&mut net, MembershipChange::AddLearner(2));
    step(&mut net, MembershipChange::Promote(2));
    let leader = net.elect(ms(2_000));
    assert_eq!(net.node(leader).membership().replica_of(2), Some(new));
    assert!(net
        .node(leader)
        .member_replicas()
        .iter()
        .all(|m| !m.replaced()));
}

/// Spec §8.5, "Replica identities": the first CONFIG of a shard names every voter it keeps
/// with a replica id, which the leader knows only once it has heard from that node; until
/// then the change is refused, changing nothing.
#[test]
fn the_first_configuration_waits_for_every_voters_replica_id() {
    let mut net = members_net(4, 3, 43);
    net.isolate(3);
    net.campaign(1);
    net.run_for(ms(20));
    assert_eq!(net.node(1).role(), Role::Leader);
    let last = net.node(1).last_index();
    assert_eq!(
        change(&mut net, 1, MembershipChange::AddLearner(4)),
        Err(MembershipError::ReplicaUnknown(3))
    );
    assert_eq!(net.node(1).last_index(), last, "nothing changed");
    assert_eq!(net.node(1).membership(), &Membership::of_voters(&[1, 2, 3]));
    net.heal();
    net.run_for(ms(100));
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("heard from 3 now");
    let membership = net.node(1).membership().clone();
    for id in [1, 2, 3] {
        assert_eq!(membership.replica_of(id), Some(net.node(id).replica()));
    }
    // A learner the leader has not heard from yet is named with replica 0 ("not known").
    assert_eq!(membership.replica_of(4), Some(0));
}

/// Found by `udplock sim --seed 180 --nodes 3` (a joined run): a learner removed while cut
/// off stays *departing* on the leader (`Progress::departing`), and its node, which dropped
/// that replica, later creates a new one. Added back, the node must be a new server (spec
/// §8.5, "Replica identities"): named without the old replica's id, and promoted only once
/// the new replica has caught up. Kept, the old progress named the dropped replica and let
/// it be promoted at once, on the old replica's match index: a voter that no longer exists,
/// and a shard of two voters that could never commit again.
#[test]
fn a_node_added_back_while_its_removed_replica_departs_is_a_new_server() {
    let mut net = members_net(4, 3, 43);
    lead(&mut net, 1);
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    net.run_for(ms(100));
    let old = net.node(4).replica();
    // Removed while cut off: it never learns it, so it stays departing on the leader.
    net.isolate(4);
    change(&mut net, 1, MembershipChange::Remove(4)).expect("removed");
    net.run_for(ms(100));
    // Its node dropped the replica; a new one starts with no state and a new id.
    net.crash(4);
    let config = net.configs[3].clone();
    net.nodes[3] = Some(Raft::new(
        config,
        4_343,
        HardState::default(),
        Vec::new(),
        net.now,
    ));
    net.committed[3] = Vec::new();
    let new = net.node(4).replica();
    assert_ne!(new, old);
    change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added back");
    assert_eq!(
        net.node(1).membership().replica_of(4),
        Some(0),
        "named with the id of the replica that was removed"
    );
    net.run_for(ms(100));
    assert!(
        matches!(
            change(&mut net, 1, MembershipChange::Promote(4)),
            Err(MembershipError::NotCaughtUp { .. })
        ),
        "promoted on the match index of the replica that was removed"
    );
    net.heal();
    net.run_for(ms(200));
    change(&mut net, 1, MembershipChange::Promote(4)).expect("caught up");
    assert_eq!(net.node(1).membership().replica_of(4), Some(new));
}

/// Found by the simulator (`udplock sim --seed 25 --nodes 5 --joined`, once operator
/// removals ran): a learner removed and added again before its leader forgot it (its
/// progress `departing`, kept until it acknowledges its removal) kept the progress of the
/// replica it had before — what it matched and its replica id. But a joined node drops its
/// replica once it applies its removal (spec §8.1), so the leader promoted, as caught up,
/// a replica that no longer existed, naming its old id: the new configuration of two voters
/// could never commit (the node's new replica does not count, spec §8.5 "Replica
/// identities"), and the shard stayed without a leader. A member added again now starts
/// over: promoted only once its present replica caught up.
#[test]
fn a_learner_removed_and_added_again_starts_over() {
    let mut net = members_net(4, 3, 11);
    lead(&mut net, 1);
    let index = change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added");
    net.run_for(ms(100));
    assert!(net.node(4).commit_index() >= index, "the learner caught up");
    // Node 4 never hears of its removal: the leader keeps it as departing.
    net.isolate(4);
    let index = change(&mut net, 1, MembershipChange::Remove(4)).expect("removed");
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    let index = change(&mut net, 1, MembershipChange::AddLearner(4)).expect("added again");
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    assert_eq!(learners(&net, 1), [4]);
    // Nothing heard from node 4 since it was added again: not caught up.
    assert!(
        matches!(
            change(&mut net, 1, MembershipChange::Promote(4)),
            Err(MembershipError::NotCaughtUp {
                id: 4,
                matched: 0,
                ..
            })
        ),
        "promoted on what its earlier replica matched: {}",
        net.node(1).membership()
    );
    // Heard again, it catches up and is promoted under the replica id it answers with.
    net.heal();
    net.run_for(ms(200));
    let index = change(&mut net, 1, MembershipChange::Promote(4)).expect("caught up");
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    assert_eq!(voters(&net, 1), [1, 2, 3, 4]);
    assert_eq!(
        net.node(1).membership().replica_of(4),
        Some(net.node(4).replica())
    );
}

/// Found by `udplock sim --seed 50 --nodes 5 --joined` (the placement driver): a leader
/// removed a voter dead for longer than dead-after from {4, 2, 3} while node 2 held no
/// replica any more, leaving {2, 3} with one live voter: no entry could commit again. A
/// removal that leaves fewer than a majority of voters the leader heard from lately is
/// refused, changing nothing (etcd refuses such a removal too).
#[test]
fn a_removal_that_leaves_no_live_majority_is_refused() {
    let mut net = members_net(3, 3, 47);
    lead(&mut net, 1);
    // The first CONFIG names every voter's replica (heard from all three).
    change(&mut net, 1, MembershipChange::Remove(2)).expect("all three answer");
    net.run_for(ms(100));
    change(&mut net, 1, MembershipChange::AddLearner(2)).expect("added back");
    net.run_for(ms(100));
    change(&mut net, 1, MembershipChange::Promote(2)).expect("caught up");
    net.run_for(ms(100));
    assert_eq!(voters(&net, 1).len(), 3);
    // Node 3 goes silent for longer than an election timeout; node 2 still answers.
    net.isolate(3);
    net.run_for(ms(400));
    assert_eq!(net.node(1).role(), Role::Leader);
    let before = voters(&net, 1);
    assert_eq!(
        change(&mut net, 1, MembershipChange::Remove(2)),
        Err(MembershipError::LiveMajorityLost {
            id: 2,
            live: 1,
            voters: 2
        }),
        "removing the one other live voter"
    );
    assert_eq!(voters(&net, 1), before, "nothing changed");
    // Removing the silent one keeps a live majority of the rest.
    change(&mut net, 1, MembershipChange::Remove(3)).expect("1 and 2 both answer");
}

/// Found by `udplock sim --seed 438 --nodes 5 --joined`: a learner caught up, then its node
/// crashed and came back without its state (a `memory` node); 800 ms later its leader
/// promoted it on what the lost replica had matched, naming that replica — a configuration
/// of two voters, one of which no longer existed: nothing could commit and nobody could be
/// elected again. A leader promotes only a learner that answered within two heartbeat
/// intervals (`NotHeardLately`, nothing changed), and does once it answers again.
#[test]
fn a_learner_not_heard_from_lately_is_not_promoted() {
    let mut net = members_net(2, 1, 5);
    lead(&mut net, 1);
    let index = change(&mut net, 1, MembershipChange::AddLearner(2)).expect("added");
    net.run_for(ms(100));
    assert!(net.node(2).commit_index() >= index, "the learner caught up");
    let now = net.now;
    assert!(net.node(1).learner_caught_up(2, now));
    net.isolate(2);
    net.run_for(ms(200));
    let before = net.node(1).membership().clone();
    assert_eq!(
        change(&mut net, 1, MembershipChange::Promote(2)),
        Err(MembershipError::NotHeardLately(2)),
        "promoted a learner silent for 200 ms"
    );
    assert_eq!(net.node(1).membership(), &before, "nothing changed");
    net.heal();
    net.run_for(ms(100));
    let index = change(&mut net, 1, MembershipChange::Promote(2)).expect("answers again");
    net.run_for(ms(100));
    assert!(net.node(1).commit_index() >= index);
    assert_eq!(voters(&net, 1), [1, 2]);
}
