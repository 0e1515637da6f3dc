//! Restarts with the persisted state (Raft §5, Figure 2, "persistent state").

use super::*;

#[test]
fn restart_keeps_the_vote_and_votes_once_per_term() {
    let config = config(2, 3);
    let t0 = Instant::ZERO;
    let vote = |term| Message::Vote {
        term,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    let mut node = Raft::new(config.clone(), 1, HardState::default(), Vec::new(), t0);
    let t1 = t0 + ms(150);
    node.handle_message(t1, 1, vote(5));
    assert_eq!(
        drain(&mut node),
        vec![(
            1,
            Message::VoteReply {
                term: 5,
                granted: true,
                replica: node.replica(),
            }
        )]
    );
    let persisted = node.hard_state();
    assert_eq!(
        persisted,
        HardState {
            term: 5,
            voted_for: Some(1),
            replica: persisted.replica,
        }
    );

    let t2 = t1 + ms(10);
    let mut node = Raft::new(config, 2, persisted, node.log().to_vec(), t2);
    // A restarted node counts start-up as leader contact (the lease of a leader it may
    // have acknowledged just before crashing): a later-term vote is ignored for now.
    node.handle_message(t2, 3, vote(6));
    assert!(drain(&mut node).is_empty());
    assert_eq!(node.term(), 5);

    let t3 = t2 + ms(150);
    node.handle_message(t3, 3, vote(5));
    assert_eq!(
        drain(&mut node),
        vec![(
            3,
            Message::VoteReply {
                term: 5,
                granted: false,
                replica: node.replica(),
            }
        )],
        "already voted for 1 in term 5"
    );
    node.handle_message(t3, 1, vote(5));
    assert_eq!(
        drain(&mut node),
        vec![(
            1,
            Message::VoteReply {
                term: 5,
                granted: true,
                replica: node.replica(),
            }
        )],
        "a resent request of the same candidate"
    );
    assert_eq!(node.hard_state().voted_for, Some(1));
}

#[test]
fn restart_rederives_the_commit_index_and_replays_committed_entries() {
    let mut net = Net::new(3, 23);
    let leader = net.elect(ms(1_000));
    for k in 1..=3u8 {
        net.propose(leader, vec![k]);
    }
    net.run_for(ms(200));
    let before = net.committed[0].clone();
    assert_eq!(before.len(), 4, "no-op and three entries");
    for id in net.ids() {
        assert_eq!(net.committed[id as usize - 1], before);
    }

    for id in net.ids() {
        let persisted = net.crash(id);
        net.restart(id, 100 + id, persisted);
        assert_eq!(net.node(id).commit_index(), 0, "commit is not persisted");
        assert_eq!(net.node_mut(id).poll_committed(), None);
    }
    net.run_for(ms(1_000));
    let leader = net.leader().unwrap();
    for id in net.ids() {
        let again = &net.committed[id as usize - 1];
        assert!(
            again.len() > before.len(),
            "node {id} committed the new no-op too"
        );
        assert_eq!(&again[..before.len()], &before[..], "node {id}");
        assert_eq!(net.node(id).commit_index(), net.node(leader).commit_index());
    }
}

#[test]
fn single_node_restart_recommits_its_log() {
    let mut net = Net::new(1, 29);
    net.run_for(ms(300));
    net.propose(1, b"kept".to_vec());
    let persisted = net.crash(1);
    net.restart(1, 30, persisted);
    net.run_for(ms(300));
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).term(), 2);
    assert_eq!(net.committed_data(1), vec![b"kept".to_vec()]);
}
