//! Leadership transfer (thesis §3.10) and what it leaves of the lease.

use super::*;

#[test]
fn transfer_hands_leadership_to_the_target_within_a_round_trip() {
    let mut net = Net::new(3, 21);
    let old = net.elect(ms(1_000));
    net.propose(old, vec![1]);
    net.run_for(ms(100));
    let term = net.node(old).term();
    assert!(net.node(old).lease_valid(net.now));
    let target = net.ids().into_iter().find(|&id| id != old).unwrap();
    let now = net.now;
    net.node_mut(old).transfer_leadership(now, target).unwrap();
    // The lease is given up at once, and proposals are refused with the target as hint.
    assert!(!net.node(old).lease_valid(now));
    let refused = net.node_mut(old).propose(now, vec![2]).unwrap_err();
    assert_eq!(refused.leader_hint, Some(target));
    net.after_input(old);
    // Far less than an election timeout (150 ms): the target needs no timer.
    net.run_for(ms(5));
    assert_eq!(net.leader(), Some(target));
    assert_eq!(net.node(target).term(), term + 1);
    assert!(net.sent.iter().any(|(from, to, m)| *from == old
        && *to == target
        && matches!(m, Message::TimeoutNow { .. })));
    // The new leader commits, and the old entry survived.
    net.propose(target, vec![3]);
    net.run_for(ms(100));
    assert_eq!(net.committed_data(old), vec![vec![1], vec![3]]);
}

#[test]
fn transfer_waits_until_the_target_has_the_whole_log() {
    let mut net = Net::new(3, 22);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let target = net.ids().into_iter().find(|&id| id != leader).unwrap();
    // The target misses some entries.
    net.blocked.insert((leader, target));
    net.propose(leader, vec![1]);
    net.propose(leader, vec![2]);
    net.run_for(ms(10));
    let now = net.now;
    net.node_mut(leader)
        .transfer_leadership(now, target)
        .unwrap();
    net.after_input(leader);
    net.run_for(ms(5));
    assert!(
        !net.sent
            .iter()
            .any(|(_, _, m)| matches!(m, Message::TimeoutNow { .. })),
        "TimeoutNow sent to a target that lacks entries"
    );
    net.heal();
    net.run_for(ms(60));
    assert_eq!(net.leader(), Some(target));
    assert_eq!(net.node(target).log().len(), net.node(leader).log().len());
}

#[test]
fn an_unreachable_target_makes_the_leader_lead_on() {
    let mut net = Net::new(3, 23);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let target = net.ids().into_iter().find(|&id| id != leader).unwrap();
    net.isolate(target);
    let now = net.now;
    net.node_mut(leader)
        .transfer_leadership(now, target)
        .unwrap();
    net.after_input(leader);
    net.run_for(ms(200));
    // Abandoned after election_timeout_min: proposals are taken again in the same term...
    assert_eq!(net.leader(), Some(leader));
    assert_eq!(net.node(leader).term(), term);
    assert_eq!(net.node(leader).transferring_to(), None);
    net.propose(leader, vec![7]);
    net.run_for(ms(50));
    assert_eq!(net.committed_data(leader), vec![vec![7]]);
    // ...and the lease is back (issue 7 B8; it used to stay given up until a new term).
    assert!(net.node(leader).lease_valid(net.now));
}

/// Issue 7 B8: a leader that abandoned a transfer (its target unreachable) stayed without a
/// lease for the rest of its term. It must regain it once a majority acknowledges a round
/// started at the abandon: here at once (the network answers within the instant).
#[test]
fn a_leader_regains_its_lease_at_once_after_abandoning_a_transfer() {
    let mut net = Net::new(3, 23);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let target = net.ids().into_iter().find(|&id| id != leader).unwrap();
    net.isolate(target);
    let start = net.now;
    net.node_mut(leader)
        .transfer_leadership(start, target)
        .unwrap();
    net.after_input(leader);
    let abandon = start + net.configs[0].election_timeout_min;
    net.run_until(abandon - us(1));
    assert_eq!(net.node(leader).transferring_to(), Some(target));
    assert!(
        !net.node(leader).lease_valid(net.now),
        "a lease during a transfer"
    );
    net.run_until(abandon);
    assert_eq!(net.node(leader).transferring_to(), None);
    assert!(
        net.node(leader).lease_valid(net.now),
        "no lease once a majority acknowledged a round after the abandon"
    );
    assert_eq!(net.node(leader).role(), Role::Leader);
}

/// Issue 7 B8: the same when every TimeoutNow is lost (the target is reachable).
#[test]
fn a_leader_whose_timeout_now_is_lost_regains_its_lease() {
    let mut net = Net::new(3, 26);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let target = net.ids().into_iter().find(|&id| id != leader).unwrap();
    net.filter = Some(Box::new(|_, _, message| match message {
        Message::TimeoutNow { .. } => None,
        other => Some(other),
    }));
    let start = net.now;
    net.node_mut(leader)
        .transfer_leadership(start, target)
        .unwrap();
    net.after_input(leader);
    net.run_until(start + net.configs[0].election_timeout_min + ms(1));
    assert_eq!(net.leader(), Some(leader));
    assert_eq!(net.node(leader).transferring_to(), None);
    assert!(net.node(leader).lease_valid(net.now));
    assert!(net
        .sent
        .iter()
        .any(|(from, to, m)| (*from, *to) == (leader, target)
            && matches!(m, Message::TimeoutNow { .. })));
}

/// Issue 7 B8, the danger in giving the lease back: a TimeoutNow delayed past the abandon
/// reaches the target, which campaigns with a transfer vote, which voters used to grant
/// whatever their leader's heartbeats said. Here the target heard the transfer's rounds but
/// not the abandon; the third node acknowledged the round started at the abandon, so the
/// leader holds a lease again. The late TimeoutNow must elect nobody while it runs.
#[test]
fn a_late_timeout_now_after_an_abandoned_transfer_elects_nobody_during_the_lease() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut net = Net::new(3, 27);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let others: Vec<NodeId> = net.ids().into_iter().filter(|&id| id != leader).collect();
    let (target, third) = (others[0], others[1]);
    let held: Rc<RefCell<Vec<(NodeId, NodeId, Message)>>> = Rc::default();
    let hold = Rc::clone(&held);
    net.filter = Some(Box::new(move |from, to, message| match message {
        Message::TimeoutNow { .. } => {
            hold.borrow_mut().push((from, to, message));
            None
        }
        other => Some(other),
    }));
    let start = net.now;
    net.node_mut(leader)
        .transfer_leadership(start, target)
        .unwrap();
    net.after_input(leader);
    net.deliver_due();
    assert!(!held.borrow().is_empty(), "no TimeoutNow was sent");
    // The target hears nothing more from the leader: not the abandon.
    net.blocked.insert((leader, target));
    let abandon = start + net.configs[0].election_timeout_min;
    net.run_until(abandon + ms(1));
    assert_eq!(net.node(leader).transferring_to(), None);
    assert!(
        net.node(leader).lease_valid(net.now),
        "no lease after the abandon"
    );
    assert_eq!(
        net.node(target).role(),
        Role::Follower,
        "the target's own timer fired first: pick another seed"
    );
    // The first TimeoutNow arrives now.
    let term = net.node(leader).term();
    let (from, to, message) = held.borrow_mut().remove(0);
    assert_eq!((from, to), (leader, target));
    net.filter = None;
    let now = net.now;
    net.node_mut(target).handle_message(now, leader, message);
    net.after_input(target);
    net.deliver_due();
    assert_eq!(
        net.node(leader).role(),
        Role::Leader,
        "the late transfer deposed the leader during its lease"
    );
    assert!(
        !net.leaders.contains_key(&(term + 1)),
        "the target won term {} while the old leader's lease ran",
        term + 1
    );
    assert!(net.node(leader).lease_valid(net.now));
    assert_eq!(
        net.node(third).term(),
        term,
        "the third node followed the late transfer"
    );
    // The lease runs on; the target eventually rejoins the leader's term or a later one
    // through an ordinary election, never by the stale transfer.
    net.heal();
    net.run_for(ms(500));
    assert!(net.leader().is_some());
}

/// Only a transfer vote overrides stickiness, only for the target that the latest round of
/// the leader names (whatever order its Appends arrive in), and only the leader can make a
/// node campaign at once, naming it.
#[test]
fn a_transfer_vote_overrides_stickiness_only_for_the_target_the_latest_round_names() {
    let mut net = Net::new(3, 24);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let others: Vec<NodeId> = net.ids().into_iter().filter(|&id| id != leader).collect();
    let (follower, other) = (others[0], others[1]);
    let round = net
        .sent
        .iter()
        .filter_map(|(from, to, m)| match m {
            Message::Append { round, .. } if (*from, *to) == (leader, follower) => Some(*round),
            _ => None,
        })
        .max()
        .unwrap();
    let now = net.now;
    let node = net.node_mut(follower);
    let (last, commit) = (node.last_index(), node.commit_index());
    let heartbeat = |round, transfer_to| Message::Append {
        term,
        prev_log_index: last,
        prev_log_term: term,
        entries: Entries::Empty,
        leader_commit: commit,
        round,
        transfer_to,
    };
    let vote = |transfer| Message::Vote {
        term: term + 1,
        last_log_index: last,
        last_log_term: term,
        transfer,
    };
    let granted = |out: Vec<(NodeId, Message)>| {
        out.iter()
            .any(|(_, m)| matches!(m, Message::VoteReply { granted: true, .. }))
    };
    // A TimeoutNow from a node that does not lead is ignored; so is one from the leader
    // while its latest round names nobody.
    node.handle_message(now, other, Message::TimeoutNow { term });
    node.handle_message(now, leader, Message::TimeoutNow { term });
    assert_eq!(node.role(), Role::Follower);
    assert!(drain(node).is_empty());
    // A sticky follower ignores a plain vote, and a transfer vote nobody named.
    node.handle_message(now, other, vote(false));
    node.handle_message(now, other, vote(true));
    assert!(!granted(drain(node)), "a vote granted while sticky");
    assert_eq!(node.term(), term);
    // The leader's later round names `other`; an older round naming nobody arrives after it
    // and changes nothing.
    node.handle_message(now, leader, heartbeat(round + 2, Some(other)));
    node.handle_message(now, leader, heartbeat(round + 1, None));
    drain(node);
    // Still no plain vote; a transfer vote by `other` only, once (and again, for a resend).
    node.handle_message(now, other, vote(false));
    assert!(!granted(drain(node)));
    node.handle_message(now, other, vote(true));
    assert!(
        granted(drain(node)),
        "the named target's transfer vote was refused"
    );
    node.handle_message(now, other, vote(true));
    assert!(granted(drain(node)), "a resent transfer vote was refused");
    assert_eq!(node.term(), term + 1);

    // Reordered the other way: the round naming nobody is the latest word.
    let mut net = Net::new(3, 24);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let now = net.now;
    let node = net.node_mut(follower);
    node.handle_message(now, leader, heartbeat(round + 2, None));
    node.handle_message(now, leader, heartbeat(round + 1, Some(other)));
    drain(node);
    node.handle_message(now, other, vote(true));
    assert!(
        !granted(drain(node)),
        "a transfer vote granted on an older round's word"
    );
    // Nor does the named node obey a TimeoutNow on the older word.
    let node = net.node_mut(other);
    node.handle_message(now, leader, heartbeat(round + 2, None));
    node.handle_message(now, leader, heartbeat(round + 1, Some(other)));
    node.handle_message(now, leader, Message::TimeoutNow { term });
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.term(), term);
}

/// Issue 8 item 4: 72 forged TIMEOUT_NOW datagrams caused 1,470 leader changes in 6 s. A
/// TIMEOUT_NOW is obeyed only if it comes from the leader this node follows, of its current
/// term, whose latest round names this node; a TRANSFER_VOTE overrides stickiness only for
/// the candidate the voter's leader of its current term named (spec §8.5, "Leadership
/// transfer"). Forged ones of every other kind start no election and win no vote; a genuine
/// transfer still works, before and after them.
#[test]
fn forged_timeout_now_and_transfer_votes_start_no_election_and_win_no_vote() {
    let mut net = Net::new(3, 34);
    let first = net.elect(ms(1_000));
    net.run_for(ms(100));
    // A genuine transfer: `leader` leads the next term, `first` led the one before.
    let leader = net.ids().into_iter().find(|&id| id != first).unwrap();
    let now = net.now;
    net.node_mut(first)
        .transfer_leadership(now, leader)
        .unwrap();
    net.after_input(first);
    net.run_for(ms(100));
    assert_eq!(net.leader(), Some(leader), "a genuine transfer failed");
    let term = net.node(leader).term();
    assert!(term >= 2);
    let third = net
        .ids()
        .into_iter()
        .find(|&id| id != first && id != leader)
        .unwrap();
    let last = net.node(leader).last_index();
    let deliver = |net: &mut Net, from: NodeId, to: NodeId, message: Message| {
        let now = net.now;
        net.node_mut(to).handle_message(now, from, message);
        let out = net
            .node(to)
            .outbox
            .iter()
            .map(|(_, m)| m.clone())
            .collect::<Vec<_>>();
        net.after_input(to);
        out
    };
    for (target, other) in [(first, third), (third, first)] {
        // (sender, term): the leader with a later term, a follower of the current term, the
        // leader of the previous term with its term, the leader with no transfer announced.
        let forged = [
            (leader, term + 1),
            (other, term),
            (first, term - 1),
            (leader, term),
        ];
        for (from, forged_term) in forged {
            if from == target {
                continue;
            }
            let out = deliver(
                &mut net,
                from,
                target,
                Message::TimeoutNow { term: forged_term },
            );
            assert!(
                out.is_empty(),
                "{target} answered a forged TimeoutNow: {out:?}"
            );
            assert_eq!(net.node(target).role(), Role::Follower);
            assert_eq!(net.node(target).term(), term);
        }
        // A transfer vote nobody announced, to a follower and to the leader.
        for voter in [other, leader] {
            let vote = Message::Vote {
                term: term + 1,
                last_log_index: last + 10,
                last_log_term: term,
                transfer: true,
            };
            let out = deliver(&mut net, target, voter, vote);
            assert!(
                !out.iter()
                    .any(|m| matches!(m, Message::VoteReply { granted: true, .. })),
                "{voter} granted {target} a transfer vote nobody announced"
            );
            assert_eq!(net.node(voter).term(), term);
        }
    }
    net.deliver_due();
    net.run_for(ms(500));
    assert_eq!(net.leader(), Some(leader));
    assert_eq!(
        net.node(leader).term(),
        term,
        "a forged message changed the term"
    );
    assert!(!net.leaders.contains_key(&(term + 1)));
    // And a genuine transfer still works afterwards.
    let now = net.now;
    net.node_mut(leader)
        .transfer_leadership(now, third)
        .unwrap();
    net.after_input(leader);
    net.run_for(ms(100));
    assert_eq!(net.leader(), Some(third));
    assert_eq!(net.node(third).term(), term + 1);
}
