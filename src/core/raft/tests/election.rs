//! Elections (Raft §5.2, §5.4.1; thesis §9.6, §4.2.3): who becomes leader, who votes.

use super::*;

#[test]
fn single_node_elects_itself_and_commits() {
    let mut net = Net::new(1, 7);
    assert_eq!(net.node(1).role(), Role::Follower);
    net.run_for(ms(300));
    let node = net.node(1);
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.term(), 1);
    assert_eq!(node.leader(), Some(1));
    assert_eq!(node.commit_index(), 1, "the no-op commits at once");

    let index = net.propose(1, b"a".to_vec());
    assert_eq!(index, 2);
    assert_eq!(net.node(1).commit_index(), 2);
    assert_eq!(net.committed_data(1), vec![b"a".to_vec()]);
    assert_eq!(
        net.committed[0][0].data,
        Arc::<[u8]>::default(),
        "index 1 is the no-op"
    );
    assert!(net.node(1).lease_valid(net.now));
    assert!(net.sent.is_empty(), "nobody to send to");
}

#[test]
fn three_nodes_elect_exactly_one_leader() {
    for seed in 0..20 {
        let mut net = Net::new(3, seed);
        net.run_for(ms(1_000));
        let leaders: Vec<NodeId> = net
            .ids()
            .into_iter()
            .filter(|&id| net.node(id).role() == Role::Leader)
            .collect();
        assert_eq!(leaders.len(), 1, "seed {seed}: leaders {leaders:?}");
        let leader = leaders[0];
        let term = net.node(leader).term();
        for id in net.ids() {
            assert_eq!(net.node(id).term(), term, "seed {seed}");
            assert_eq!(net.node(id).leader(), Some(leader), "seed {seed}");
        }
    }
}

#[test]
fn prevote_keeps_a_rejoining_node_from_disrupting_the_leader() {
    // Thesis §9.6.
    let mut net = Net::new(3, 11);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let cut = net.ids().into_iter().find(|&id| id != leader).unwrap();

    net.isolate(cut);
    net.run_for(ms(2_000));
    // Its pre-elections failed, so its term did not grow while it was away.
    assert_eq!(net.node(cut).term(), term);
    assert_ne!(net.node(cut).role(), Role::Candidate);
    assert_ne!(net.node(cut).role(), Role::Leader);
    assert_eq!(net.leader(), Some(leader));

    // It rejoins just as its timer fires, so its PreVote reaches nodes that hear the leader.
    let fires_at = net.node(cut).poll_timeout();
    net.run_until(fires_at - us(1));
    net.sent.clear();
    net.heal();
    net.run_until(fires_at);
    assert!(net
        .sent
        .iter()
        .any(|(from, _, message)| *from == cut && matches!(message, Message::PreVote { .. })));
    net.run_for(ms(1_000));
    assert_eq!(net.leader(), Some(leader));
    for id in net.ids() {
        assert_eq!(net.node(id).term(), term, "node {id}");
        assert_eq!(net.node(id).leader(), Some(leader), "node {id}");
    }
}

#[test]
fn follower_that_heard_from_a_live_leader_rejects_votes() {
    // Thesis §4.2.3: within election_timeout_min of a leader's Append, a Vote of a later term
    // is ignored (no term change, no grant) and a PreVote refused.
    let mut net = Net::new(3, 5);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let others: Vec<NodeId> = net.ids().into_iter().filter(|&id| id != leader).collect();
    let (follower, candidate) = (others[0], others[1]);
    let now = net.now;
    let vote = Message::Vote {
        term: term + 1,
        last_log_index: 100,
        last_log_term: term + 1,
        transfer: false,
    };
    let pre_vote = Message::PreVote {
        term: term + 1,
        last_log_index: 100,
        last_log_term: term + 1,
    };

    let node = net.node_mut(follower);
    let hard_before = node.hard_state();
    node.handle_message(now, candidate, vote.clone());
    assert_eq!(node.hard_state(), hard_before, "no new term, no vote");
    assert!(drain(node).is_empty(), "a sticky follower ignores the vote");
    node.handle_message(now, candidate, pre_vote);
    assert_eq!(
        drain(node),
        vec![(
            candidate,
            Message::PreVoteReply {
                term,
                granted: false,
                replica: node.replica(),
            }
        )]
    );
    assert_eq!(node.term(), term);

    // Control: once election_timeout_min has passed without the leader, the same vote wins.
    let later = now + node.config.election_timeout_min;
    node.handle_message(later, candidate, vote);
    assert_eq!(node.term(), term + 1);
    assert_eq!(node.hard_state().voted_for, Some(candidate));
    assert_eq!(
        drain(node),
        vec![(
            candidate,
            Message::VoteReply {
                term: term + 1,
                granted: true,
                replica: node.replica(),
            }
        )]
    );
}

#[test]
fn vote_needs_an_up_to_date_log() {
    // Raft §5.4.1.
    let log = vec![entry(1, 1), entry(2, 2)];
    let hard = HardState {
        term: 2,
        voted_for: None,
        replica: 0x5eed,
    };
    let mut node = Raft::new(config(2, 3), 1, hard, log, Instant::ZERO);
    let t = Instant::ZERO + ms(200);
    for (last_log_index, last_log_term, granted) in [(5, 1, false), (1, 2, false), (2, 2, true)] {
        let mut node_copy = Raft::new(
            config(2, 3),
            1,
            node.hard_state(),
            node.log().to_vec(),
            Instant::ZERO,
        );
        node_copy.handle_message(
            t,
            3,
            Message::Vote {
                term: 3,
                last_log_index,
                last_log_term,
                transfer: false,
            },
        );
        assert_eq!(
            drain(&mut node_copy),
            vec![(
                3,
                Message::VoteReply {
                    term: 3,
                    granted,
                    replica: node_copy.replica(),
                }
            )],
            "log ({last_log_index}, {last_log_term})"
        );
    }
    node.handle_message(
        t,
        3,
        Message::Vote {
            term: 1,
            last_log_index: 9,
            last_log_term: 9,
            transfer: false,
        },
    );
    assert_eq!(
        drain(&mut node),
        vec![(
            3,
            Message::VoteReply {
                term: 2,
                granted: false,
                replica: node.replica(),
            }
        )],
        "a lower term is answered with ours"
    );
}
