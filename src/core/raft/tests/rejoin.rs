//! Rejoining without state and new clusters (spec §8.5, rules 2 to 6).

use super::*;

#[test]
fn a_node_that_lost_its_state_learns_the_term_and_votes_only_once_caught_up() {
    let mut net = Net::new(3, 31);
    let leader = net.elect(ms(1_000));
    for n in 0..5u8 {
        net.propose(leader, vec![n]);
    }
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let lost = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let _ = net.crash(lost);
    net.rejoin(lost, 7);
    assert!(net.node(lost).rejoining());
    // It asked the others for their terms, and acts on nothing else meanwhile.
    assert!(net
        .sent
        .iter()
        .any(|(from, _, m)| *from == lost && matches!(m, Message::TermQuery { .. })));
    net.run_for(ms(1));
    // A quorum of the others answered: it knows the term and has "voted" in it.
    assert_eq!(net.node(lost).term(), term);
    assert_eq!(net.node(lost).hard_state().voted_for, Some(lost));
    // Caught up by the leader's next Appends: a normal follower again, with the log.
    net.run_for(ms(100));
    eprintln!(
        "lost: term {} commit {} log {} leader {:?} role {:?}; leader log {}",
        net.node(lost).term(),
        net.node(lost).commit_index(),
        net.node(lost).log().len(),
        net.node(lost).leader(),
        net.node(lost).role(),
        net.node(leader).log().len()
    );
    assert!(!net.node(lost).rejoining());
    assert_eq!(net.node(lost).log().len(), net.node(leader).log().len());
    assert_eq!(net.leader(), Some(leader), "the rejoin disturbed nobody");
}

/// Issue 7 B5: the leader forgot what a node that lost its state had acknowledged when that
/// node asked for its term; a copy of the node's last acknowledgement from before, delivered
/// late, then counted again: the leader believed it held entry k, never sent anything below
/// k + 1, and the node stayed in catch-up for the rest of the term, unable to vote. No
/// acknowledgement of an earlier life may count once the leader heard of the later one.
#[test]
fn a_late_acknowledgement_from_before_a_state_loss_does_not_strand_the_node() {
    let mut net = Net::new(3, 35);
    let leader = net.elect(ms(1_000));
    for n in 0..5u8 {
        net.propose(leader, vec![n]);
    }
    net.run_for(ms(100));
    let lost = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let last_ack = net
        .sent
        .iter()
        .rev()
        .find(|(from, to, m)| {
            *from == lost
                && *to == leader
                && matches!(m, Message::AppendReply { success: true, .. })
        })
        .map(|(_, _, m)| m.clone())
        .expect("an acknowledgement");
    assert!(matches!(last_ack, Message::AppendReply { match_index, .. } if match_index >= 6));
    let _ = net.crash(lost);
    net.rejoin(lost, 8);
    // The leader hears the question (and forgets what `lost` held)...
    net.deliver_due();
    assert!(net.node(lost).rejoining());
    // ...then the copy of the old acknowledgement arrives.
    let now = net.now;
    net.node_mut(leader).handle_message(now, lost, last_ack);
    net.after_input(leader);
    net.run_for(ms(500));
    assert_caught_up(&net, lost, leader);
}

/// `lost`, which rejoined without its state, has caught up with `leader`'s whole log and
/// takes part again, and `leader` still leads.
fn assert_caught_up(net: &Net, lost: NodeId, leader: NodeId) {
    assert!(
        !net.node(lost).rejoining(),
        "stranded in catch-up: log {} of the leader's {}",
        net.node(lost).last_index(),
        net.node(leader).last_index()
    );
    assert_eq!(net.node(lost).last_index(), net.node(leader).last_index());
    assert_eq!(net.leader(), Some(leader));
}

/// The same without the question reaching the leader (5 nodes: three others are enough to
/// rejoin): the node's first answers from its new life must make the leader start over with
/// it, instead of probing forever above what the node lost.
#[test]
fn a_node_that_lost_its_state_unseen_by_the_leader_still_catches_up() {
    let mut net = Net::new(5, 36);
    let leader = net.elect(ms(1_000));
    for n in 0..5u8 {
        net.propose(leader, vec![n]);
    }
    net.run_for(ms(100));
    let lost = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let _ = net.crash(lost);
    net.blocked.insert((lost, leader));
    let before = net.sent.len();
    net.rejoin(lost, 9);
    net.run_for(ms(5));
    assert!(
        net.node(lost).rejoining(),
        "the leader must not have caught it up yet"
    );
    // Its question to the leader was lost; it did ask the others (and rejoined).
    assert!(net.sent[before..].iter().any(|(from, to, m)| *from == lost
        && *to != leader
        && matches!(m, Message::TermQuery { .. })));
    assert!(net.node(lost).term() > 0);
    net.heal();
    net.run_for(ms(500));
    assert_caught_up(&net, lost, leader);
}

#[test]
fn a_rejoining_node_refuses_votes_until_caught_up() {
    let mut net = Net::new(3, 32);
    let leader = net.elect(ms(1_000));
    net.propose(leader, vec![1]);
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let lost = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let other = net
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != lost)
        .unwrap();
    let _ = net.crash(lost);
    // Cut off from the leader, it can learn the term but never catch up.
    net.blocked.insert((leader, lost));
    net.blocked.insert((lost, leader));
    net.rejoin(lost, 7);
    net.run_for(ms(400));
    assert!(net.node(lost).rejoining());
    // A candidate with an up-to-date log in a later term: refused, and no campaign either.
    let now = net.now;
    let node = net.node_mut(lost);
    node.handle_message(
        now + ms(1_000),
        other,
        Message::Vote {
            term: term + 5,
            last_log_index: 100,
            last_log_term: term,
            transfer: false,
        },
    );
    let out = drain(node);
    assert!(out
        .iter()
        .all(|(_, m)| !matches!(m, Message::VoteReply { granted: true, .. })));
    assert!(net.sent.iter().all(|(from, _, m)| *from != lost
        || !matches!(m, Message::PreVote { .. } | Message::Vote { .. })));
}

#[test]
fn a_cluster_whose_nodes_all_rejoin_waits_for_an_operator() {
    // Nobody kept a state, so nobody can vouch for a term: no election (a new cluster starts
    // its nodes fresh instead; a total loss needs a decision).
    let mut net = Net::new(3, 33);
    for id in 1..=3 {
        let _ = net.crash(id);
    }
    for id in 1..=3 {
        net.rejoin(id, id);
    }
    net.run_for(ms(2_000));
    assert_eq!(net.leader(), None);
    assert!(net.ids().iter().all(|&id| net.node(id).rejoining()));
}

#[test]
fn a_new_node_among_fresh_peers_starts_fresh_when_they_answer_term_zero() {
    let mut net = Net::new(3, 34);
    let _ = net.crash(3);
    net.rejoin(3, 3);
    // Nodes 1 and 2 kept their (empty) state: they answer term 0.
    net.run_for(ms(5));
    assert!(!net.node(3).rejoining());
    let leader = net.elect(ms(2_000));
    net.propose(leader, vec![9]);
    net.run_for(ms(100));
    for id in 1..=3 {
        assert_eq!(net.committed_data(id), vec![vec![9]]);
    }
}

// ---- New clusters (spec §8.5 rule 6) ----

#[test]
fn a_new_cluster_starts_once_every_node_answered_that_it_is_new() {
    let mut net = Net::new(3, 40);
    for id in 1..=3 {
        let _ = net.crash(id);
    }
    for id in 1..=3 {
        net.start_new(id, id);
        assert!(net.node(id).asking_as_new());
    }
    // Each asked the others; the answers say "no state, new".
    assert!(net
        .sent
        .iter()
        .any(|(from, _, m)| *from == 1 && matches!(m, Message::TermQuery { term: 0, .. })));
    let leader = net.elect(ms(2_000));
    assert!(net.sent.iter().any(|(_, _, m)| matches!(
        m,
        Message::NoStateReply {
            term: 0,
            new: true,
            ..
        }
    )));
    assert!(net.ids().iter().all(|&id| !net.node(id).rejoining()));
    net.propose(leader, vec![1]);
    net.run_for(ms(100));
    for id in 1..=3 {
        assert_eq!(net.committed_data(id), vec![vec![1]]);
    }
}

#[test]
fn a_single_new_voter_starts_at_once_and_a_single_rejoining_one_never_does() {
    let new = Raft::start_new(config(1, 1), 1, Instant::ZERO);
    assert!(!new.rejoining());
    let lost = Raft::rejoin(config(1, 1), 1, Instant::ZERO);
    assert!(lost.rejoining(), "nobody can vouch for a lone voter's term");
}

/// `--new-cluster` left in a unit file: a node that lost its state restarts as new next to
/// a running cluster, and must rejoin by the rule instead of starting fresh.
#[test]
fn a_new_node_next_to_a_cluster_with_state_rejoins_by_the_rule() {
    let mut net = Net::new(3, 41);
    let leader = net.elect(ms(1_000));
    for n in 0..5u8 {
        net.propose(leader, vec![n]);
    }
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let lost = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let _ = net.crash(lost);
    net.start_new(lost, 7);
    net.run_for(ms(1));
    // It learned the term from nodes with state and "voted" in it: not a fresh start.
    assert_eq!(net.node(lost).term(), term);
    assert_eq!(net.node(lost).hard_state().voted_for, Some(lost));
    assert!(!net.node(lost).asking_as_new());
    net.run_for(ms(100));
    assert!(!net.node(lost).rejoining());
    assert_eq!(net.node(lost).log().len(), net.node(leader).log().len());
    assert_eq!(net.leader(), Some(leader));
}

/// Rule 6 needs EVERY other node: one that holds state, even unreachable, keeps a new node
/// asking. With only a quorum of "new" answers, the lost-state nodes below would start fresh
/// and elect a leader without the entry node 1 holds (two lost states of five would lose an
/// acknowledged entry).
#[test]
fn a_new_node_waits_while_any_other_node_may_hold_state() {
    let mut net = Net::new(5, 42);
    // Nodes 4 and 5 never take part: cut off from the start.
    for cut in [4, 5] {
        for other in 1..=5 {
            net.blocked.insert((cut, other));
            net.blocked.insert((other, cut));
        }
    }
    let leader = net.elect(ms(2_000));
    net.propose(leader, vec![1]);
    net.run_for(ms(100));
    assert_eq!(net.node(4).term(), 0, "node 4 never left term 0");
    // Two of the three that hold the entry lose it and restart as new; the third goes down.
    let keeper = leader;
    let lost: Vec<NodeId> = (1..=3).filter(|&id| id != keeper).collect();
    for &id in &lost {
        let _ = net.crash(id);
    }
    let kept = net.crash(keeper);
    net.blocked.clear();
    for &id in &lost {
        net.start_new(id, id + 10);
    }
    // Nodes 4 and 5 answer term 0 and the lost nodes answer new: a quorum of "new", but node
    // `keeper` is silent.
    net.run_for(ms(3_000));
    for &id in &lost {
        assert!(net.node(id).rejoining(), "node {id} started fresh");
    }
    assert_eq!(net.leader(), None);
    // The keeper returns: the lost nodes rejoin from it, and its entry survives.
    net.restart(keeper, 99, kept);
    let leader = net.elect(ms(3_000));
    net.propose(leader, vec![2]);
    net.run_for(ms(300));
    assert_eq!(net.committed_data(leader), vec![vec![1], vec![2]]);
    for &id in &lost {
        assert!(!net.node(id).rejoining(), "node {id} never caught up");
    }
}

/// Found by `udplock sim --seed 798 --nodes 3 --seconds 10` (five of its 16 shards never had a
/// leader): a new cluster's first start cut short (spec §8.5 rule 6). All three nodes start
/// new; node 3 holds both others' "new" and starts fresh, while node 1's answers never reach
/// node 2 and node 1 itself is still asking when it stops. Its storage then marks the shard
/// new ([`restart::mark`]), and it starts again without `--new-cluster` (an operator removes
/// the flag after the first start). Were it to rejoin, as a replica that may have lost state,
/// it would wait for two TERM_REPLYs, of which node 2 (asking) never sends one, while node
/// 2 waits for node 1 to say "new": no leader, ever. Its own storage says it never held
/// state and that its operator let that start create the cluster; it is still new.
#[test]
fn a_first_start_cut_short_ends_without_the_flag() {
    use crate::core::restart::{self, Boot, Found, Start};
    let mut net = Net::new(3, 43);
    for id in net.ids() {
        let _ = net.crash(id);
    }
    // Node 1 gets no answer, and node 2 none from node 1; node 3 gets both.
    net.filter = Some(Box::new(|from, to, message| match message {
        Message::TermReply { .. } | Message::NoStateReply { .. } if to == 1 => None,
        _ if (from, to) == (1, 2) => None,
        message => Some(message),
    }));
    for id in net.ids() {
        net.start_new(id, id + 20);
    }
    net.run_for(ms(50));
    assert!(
        !net.node(3).rejoining(),
        "node 3 held two answers of new nodes"
    );
    assert!(net.node(1).asking_as_new() && net.node(2).asking_as_new());
    let mark = restart::mark(net.node(1)).expect("asking");
    let _ = net.crash(1);
    net.filter = None;
    // It starts as a node's start decides (`cluster::storage::open_shards`).
    match restart::decide(Found::Marked(mark), false, false, Boot::Kept) {
        Start::New => net.start_new(1, 99),
        Start::Rejoin => net.rejoin(1, 99),
        other => panic!("{other:?}"),
    }
    let leader = net.elect(ms(3_000));
    net.propose(leader, vec![1]);
    net.run_for(ms(300));
    for id in net.ids() {
        assert!(!net.node(id).rejoining(), "node {id} still recovering");
        assert_eq!(net.committed_data(id), vec![vec![1]], "node {id}");
    }
}
