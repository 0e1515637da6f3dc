//! Replication and the commit rule (Raft §5.3, §5.4.2, Figure 8).

use super::*;

#[test]
fn proposal_commits_on_a_majority_and_every_node_returns_it_in_order() {
    let mut net = Net::new(3, 3);
    let leader = net.elect(ms(1_000));
    let others: Vec<NodeId> = net.ids().into_iter().filter(|&id| id != leader).collect();
    let (near, far) = (others[0], others[1]);

    net.isolate(far);
    for k in 1..=5u8 {
        net.propose(leader, vec![k]);
    }
    net.run_for(ms(1));
    let last = net.node(leader).log().len() as u64;
    assert_eq!(
        net.node(leader).commit_index(),
        last,
        "leader + one follower is a majority"
    );
    assert_eq!(net.node(far).commit_index(), 0);

    // Without a majority nothing commits.
    net.isolate(near);
    net.isolate(leader);
    let index = net.propose(leader, vec![6]);
    net.run_for(ms(50));
    assert_eq!(net.node(leader).role(), Role::Leader);
    assert_eq!(net.node(leader).commit_index(), index - 1);

    net.heal();
    net.run_for(ms(500));
    let expected: Vec<Vec<u8>> = (1..=6u8).map(|k| vec![k]).collect();
    for id in net.ids() {
        assert_eq!(net.committed_data(id), expected, "node {id}");
        assert_eq!(
            net.committed[id as usize - 1],
            net.chosen[..net.committed[id as usize - 1].len()]
        );
    }
}

#[test]
fn follower_with_a_conflicting_suffix_is_truncated_and_repaired() {
    // Raft §5.3: node 3 holds three entries of term 2 that never committed; nodes 1 and 2
    // hold an entry of term 3 at index 2.
    let mut net = Net::with(
        3,
        21,
        |_| {},
        |id| match id {
            3 => (
                HardState {
                    term: 2,
                    voted_for: None,
                    replica: 0x5eed,
                },
                vec![entry(1, 1), entry(2, 2), entry(2, 3), entry(2, 4)],
            ),
            _ => (
                HardState {
                    term: 3,
                    voted_for: None,
                    replica: 0x5eed,
                },
                vec![entry(1, 1), entry(3, 2)],
            ),
        },
    );
    let leader = net.elect(ms(2_000));
    assert_ne!(leader, 3, "node 3's log is not up to date (§5.4.1)");
    net.run_for(ms(200));
    let leader_log = net.node(leader).log().to_vec();
    assert_eq!(leader_log.len(), 3, "two entries and the no-op");
    assert_eq!(net.node(3).log(), &leader_log[..]);
    assert!(net.node(3).log().iter().all(|entry| entry.term != 2));
    assert_eq!(net.node(3).commit_index(), 3);
    assert_eq!(net.committed[2], leader_log);
}

/// Raft Figure 8, (a)–(c): S1 leads term 4 and has index 2 (term 2) stored on a majority
/// (S1, S2, S3, S4), but its own term-4 entry (the no-op at index 3) reaches nobody.
fn figure_8() -> Net {
    let mut net = Net::with(
        5,
        8,
        |config| config.entries_per_append_max = 1,
        |id| {
            let log = match id {
                1 | 2 => vec![entry(1, 1), entry(2, 2)],
                3 | 4 => vec![entry(1, 1)],
                _ => vec![entry(1, 1), entry(3, 2)],
            };
            let hard = HardState {
                term: 3,
                voted_for: None,
                replica: 0x5eed,
            };
            (hard, log)
        },
    );
    net.isolate(5);
    // Entries of term 4 are stripped from every Append, so they reach nobody.
    net.filter = Some(Box::new(|_, _, message| match message {
        Message::Append {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            round,
            transfer_to,
        } => Some(Message::Append {
            term,
            prev_log_index,
            prev_log_term,
            entries: entries
                .into_iter()
                .filter(|entry| entry.term != 4)
                .collect(),
            leader_commit,
            round,
            transfer_to,
        }),
        other => Some(other),
    }));
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).term(), 4);
    net.run_for(ms(100));
    assert_eq!(net.node(1).role(), Role::Leader);
    for id in 1..=4 {
        assert_eq!(
            net.node(id).log()[1],
            entry(2, 2),
            "node {id} stores index 2"
        );
    }
    net
}

#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed() {
    let mut net = figure_8();
    // Index 2 is on 4 of 5 nodes, but it is of term 2: counting replicas does not commit it.
    for id in 1..=4 {
        assert_eq!(net.node(id).commit_index(), 0, "node {id}");
    }
    assert!(net.chosen.is_empty());

    // Figure 8 (d): why. S1 crashes; S5 (last log term 3) is elected and overwrites index 2.
    net.crash(1);
    net.filter = None;
    net.heal();
    net.now = net.now + ms(300);
    // Its first real election is in term 4, where everyone already voted for S1, so it
    // loses; the next one, in term 5, it wins with the votes of S2, S3 and S4 (§5.4.1: its
    // last log term, 3, beats their 2).
    net.campaign(5);
    if net.node(5).role() != Role::Leader {
        net.campaign(5);
    }
    assert_eq!(net.node(5).role(), Role::Leader);
    assert_eq!(net.node(5).term(), 5);
    net.run_for(ms(100));
    for id in 2..=5 {
        assert_eq!(
            net.node(id).log()[1].term,
            3,
            "node {id} index 2 overwritten"
        );
    }
    assert_eq!(
        net.chosen[1].term, 3,
        "index 2 committed with term 3: it never was term 2's"
    );
}

#[test]
fn figure_8_an_old_term_entry_commits_with_one_of_the_current_term() {
    let mut net = figure_8();
    assert_eq!(net.node(1).commit_index(), 0);
    // Figure 8 (e): S1's term-4 entry reaches a majority; indexes 2 and 3 commit together.
    net.filter = None;
    net.run_for(ms(100));
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).commit_index(), 3);
    assert_eq!(net.chosen[1], entry(2, 2));
    assert_eq!(net.chosen[2].term, 4);
}

#[test]
fn appends_carry_at_most_entries_per_append_max() {
    let mut net = Net::with(
        3,
        9,
        |config| config.entries_per_append_max = 4,
        |_| (HardState::default(), Vec::new()),
    );
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let others: Vec<NodeId> = net.ids().into_iter().filter(|&id| id != leader).collect();

    // Ten proposals between two drains travel in three Appends per follower: 4 + 4 + 2.
    net.sent.clear();
    let now = net.now;
    for k in 0..10u8 {
        net.node_mut(leader).propose(now, vec![k + 1]).unwrap();
    }
    net.after_input(leader);
    for &follower in &others {
        let sizes: Vec<usize> = net
            .sent
            .iter()
            .filter_map(|(from, to, message)| match message {
                Message::Append { entries, .. } if *from == leader && *to == follower => {
                    Some(entries.len())
                }
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![4, 4, 2], "to node {follower}");
    }
    net.run_for(ms(10));
    assert_eq!(
        net.node(leader).commit_index(),
        net.node(leader).log().len() as u64
    );

    // A follower that missed many entries catches up in batches too, and the leader never
    // has more than APPENDS_IN_FLIGHT_MAX Appends in flight to it.
    let far = others[1];
    net.isolate(far);
    for k in 0..40u8 {
        net.propose(leader, vec![k + 100]);
    }
    net.run_for(ms(100));
    net.heal();
    net.run_for(ms(500));
    assert_eq!(net.node(far).log(), net.node(leader).log());
    for (from, _, message) in &net.sent {
        if let Message::Append { entries, .. } = message {
            assert!(
                entries.len() <= 4,
                "an Append from {from} carries {}",
                entries.len()
            );
        }
    }
    // Isolated, a follower in the pipelining state gets a bounded window and then waits.
    net.isolate(far);
    net.sent.clear();
    let now = net.now;
    for k in 0..40u8 {
        net.node_mut(leader).propose(now, vec![k + 1]).unwrap();
    }
    net.after_input(leader);
    let to_far = net
        .sent
        .iter()
        .filter(|(_, to, message)| {
            *to == far && matches!(message, Message::Append { entries, .. } if !entries.is_empty())
        })
        .count() as u64;
    assert_eq!(to_far, APPENDS_IN_FLIGHT_MAX);
}

/// Issue 8 item 4 (no amplification): a leader answered one AppendReply with up to
/// APPENDS_IN_FLIGHT_MAX Appends, and one answer below its snapshot, or one
/// InstallSnapshotReply, with up to SNAPSHOT_CHUNKS_IN_FLIGHT_MAX chunks: a forged answer made
/// it send its sender eight messages (about 200 times the bytes). It now sends at most one
/// back per answer; the rest of a window follows the follower's own answers (one each) or the
/// next heartbeat round. (`Net::deliver` checks the same on every message of every test.)
#[test]
fn a_leader_sends_at_most_one_message_back_per_answer() {
    let mut net = Net::with(
        3,
        9,
        |config| {
            config.entries_per_append_max = 4;
            config.snapshot_chunk_max = CHUNK_TEST;
        },
        |_| (HardState::default(), Vec::new()),
    );
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let far = net.ids().into_iter().find(|&id| id != leader).unwrap();
    net.isolate(far);
    for k in 0..40u8 {
        net.propose(leader, vec![k + 1]);
    }
    net.run_for(ms(100));
    let held = net.node(far).last_index();
    let (term, life) = (net.node(leader).term(), net.node(far).life());
    let replica = net.node(far).replica();
    let round = net.node(leader).round;
    let now = net.now;
    let mut back = |message: Message| {
        let node = net.node_mut(leader);
        node.handle_message(now, far, message);
        drain(node).into_iter().filter(|(to, _)| *to == far).count()
    };
    let append_reply = |success, match_index| Message::AppendReply {
        term,
        success,
        match_index,
        round,
        life,
        replica,
    };
    // A refusal rewinds the leader to one probe; the probe's answer opens the whole window.
    assert_eq!(back(append_reply(false, held)), 1);
    assert_eq!(
        back(append_reply(true, held)),
        1,
        "Appends for one AppendReply"
    );
    // Below the snapshot: a refusal starts a transfer, and an answer that acknowledges
    // every chunk in flight moves the window on.
    net.compact(leader);
    let snapshot = net.node(leader).snapshot_meta();
    assert!(snapshot.index > held);
    let mut back = |message: Message| {
        let node = net.node_mut(leader);
        node.handle_message(now, far, message);
        drain(node).into_iter().filter(|(to, _)| *to == far).count()
    };
    assert_eq!(
        back(append_reply(false, held)),
        1,
        "chunks for one AppendReply"
    );
    let received = (CHUNK_TEST as u64) * SNAPSHOT_CHUNKS_IN_FLIGHT_MAX;
    let snapshot_reply = Message::InstallSnapshotReply {
        term,
        last_index: snapshot.index,
        received,
        round,
        life,
        replica,
    };
    assert_eq!(
        back(snapshot_reply),
        1,
        "chunks for one InstallSnapshotReply"
    );
}

#[test]
fn entries_hold_one_inline_and_keep_log_order_in_every_form() {
    let none: Entries = Vec::new().into_iter().collect();
    assert_eq!(none, Entries::Empty);
    assert!(none.is_empty());
    assert_eq!(none.into_iter().count(), 0);

    let one: Entries = [entry(1, 1)].into_iter().collect();
    assert!(matches!(&one, Entries::One(e) if *e == entry(1, 1)));
    assert_eq!(one, Entries::from(vec![entry(1, 1)]));
    assert_eq!(one.into_iter().collect::<Vec<_>>(), vec![entry(1, 1)]);

    let three = vec![entry(1, 1), entry(1, 2), entry(2, 3)];
    let many: Entries = three.clone().into_iter().collect();
    assert!(matches!(&many, Entries::Many(v) if *v == three));
    assert_eq!(&many[..], &three[..], "reads as the slice, in log order");
    assert_eq!(many, Entries::from(three.clone()));
    assert_eq!(many.into_iter().collect::<Vec<_>>(), three);
}

#[test]
fn an_append_shares_its_entry_data_with_the_log_and_needs_no_vector_for_one() {
    let mut net = Net::new(3, 3);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(10));
    let now = net.now;
    let raft = net.node_mut(leader);
    while raft.poll_message().is_some() {}
    let index = raft.propose(now, vec![42]).expect("leads");
    let logged = Arc::clone(&raft.entry(index).expect("in the log").data);
    let mut appends = 0;
    while let Some((_, message)) = raft.poll_message() {
        if let Message::Append { entries, .. } = message {
            let Entries::One(sent) = entries else {
                panic!("one proposal, one entry inline: {entries:?}");
            };
            assert_eq!(sent.index, index);
            assert!(Arc::ptr_eq(&sent.data, &logged), "shared, not copied");
            appends += 1;
        }
    }
    assert_eq!(appends, 2, "one Append per follower");
}
