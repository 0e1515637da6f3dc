//! Log compaction and InstallSnapshot (Raft §7, thesis §5; spec §8.5, "Receiving a snapshot").

use super::*;

/// A 3-node cluster with small snapshot chunks and an elected leader.
fn compacting_net(seed: u64) -> (Net, NodeId) {
    let mut net = Net::with(
        3,
        seed,
        |config| config.snapshot_chunk_max = CHUNK_TEST,
        |_| (HardState::default(), Vec::new()),
    );
    let leader = net.elect(ms(2_000));
    net.run_for(ms(100));
    (net, leader)
}

fn install_chunks_to(net: &Net, to: NodeId) -> Vec<(u64, u64)> {
    net.sent
        .iter()
        .filter_map(|(_, dest, m)| match m {
            Message::InstallSnapshot {
                offset, last_index, ..
            } if *dest == to => Some((*last_index, *offset)),
            _ => None,
        })
        .collect()
}

/// Compaction on the leader; a follower that was down catches up through a multi-chunk
/// InstallSnapshot, then through ordinary Appends, and commits new entries.
fn follower_catches_up_through_a_snapshot(seed: u64, chaos: bool) {
    let (mut net, leader) = compacting_net(seed);
    let lagging = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let persisted = net.crash(lagging);
    for value in 0..20u8 {
        net.propose(leader, vec![value + 1]);
        net.run_for(ms(5));
    }
    net.run_for(ms(100));
    let commit = net.node(leader).commit_index();
    assert!(commit >= 21);
    for id in net.ids() {
        if net.is_up(id) {
            net.compact(id);
        }
    }
    let snapshot = net.node(leader).snapshot_meta();
    assert_eq!(snapshot.index, commit);
    assert_eq!(net.node(leader).first_index(), commit + 1);
    assert!(net.node(leader).log().is_empty());
    assert!(net.node(leader).entry(commit).is_none());
    let total_len = net.node(leader).snapshot_data().unwrap().len();
    assert!(total_len > 4 * CHUNK_TEST, "a multi-chunk snapshot");

    if chaos {
        net.chaos = Some(Chaos {
            rng: StdRng::seed_from_u64(seed ^ 0x5a5a),
            drop_per_mille: 200,
            duplicate_per_mille: 200,
            latency_max: ms(3),
        });
    }
    net.restart(lagging, 77, persisted);
    net.run_for(ms(2_000));
    let node = net.node(lagging);
    assert_eq!(node.snapshot_meta(), snapshot, "seed {seed}: installed");
    assert!(node.commit_index() >= commit);
    // The harness checked the data against the chosen entries when it was installed.
    assert_eq!(
        net.committed[lagging as usize - 1].len() as u64,
        net.node(lagging).commit_index()
    );
    let chunks = install_chunks_to(&net, lagging);
    let offsets: BTreeSet<u64> = chunks.iter().map(|&(_, offset)| offset).collect();
    assert!(
        offsets.len() >= total_len / CHUNK_TEST,
        "every chunk offset was sent"
    );
    assert!(chunks.iter().all(|&(index, _)| index == snapshot.index));

    // Ordinary appends continue after the snapshot.
    net.chaos = None;
    let leader = net.leader().unwrap();
    let index = net.propose(leader, b"after".to_vec());
    net.run_for(ms(200));
    assert!(net.node(lagging).commit_index() >= index);
    assert_eq!(
        net.committed_data(lagging).last().unwrap(),
        b"after",
        "the follower applies entries after the snapshot"
    );
    let sent_before = install_chunks_to(&net, lagging).len();
    net.run_for(ms(300));
    assert_eq!(
        install_chunks_to(&net, lagging).len(),
        sent_before,
        "no more snapshot once caught up"
    );
}

#[test]
fn compaction_a_restarted_follower_catches_up_through_a_multi_chunk_snapshot() {
    for seed in 0..4 {
        follower_catches_up_through_a_snapshot(seed, false);
    }
}

#[test]
fn compaction_snapshot_transfer_survives_chunk_loss_and_duplication() {
    for seed in 0..8 {
        follower_catches_up_through_a_snapshot(seed, true);
    }
}

/// Issue 8 item 4: a node kept every shard's partial snapshot transfer 1:1, up to 256 MiB
/// each (16 GiB over 64 shards), for whoever sent chunks. Its shards now share one budget:
/// a transfer reserves its announced length when it starts, and one that does not fit is
/// refused (answered `received` 0) until another ends.
#[test]
fn partial_snapshot_transfers_share_one_budget_per_node() {
    const SHARDS: usize = 64;
    const BUDGET: u64 = 1 << 20;
    let shared = NodeShared::with_snapshot_bytes_max(BUDGET);
    let total_len = 256 * 1024;
    let chunk = vec![0x5Au8; 1_256];
    let now = Instant::from_micros(1_000);
    let mut held_total = 0;
    let mut refused = 0;
    let mut shards = Vec::new();
    for _shard in 0..SHARDS {
        let mut raft = follower_with(Vec::new(), 1);
        raft.share(shared.clone());
        let mut answers = Vec::new();
        for n in 0..40u64 {
            raft.handle_message(
                now,
                2,
                Message::InstallSnapshot {
                    term: 1,
                    last_index: 1_000,
                    last_term: 1,
                    offset: n * chunk.len() as u64,
                    total_len,
                    data: chunk.clone(),
                    round: 1,
                },
            );
            answers.extend(drain(&mut raft));
        }
        held_total += raft.snapshot_receive_bytes();
        if raft.snapshot_receive_bytes() == 0 {
            refused += 1;
            assert!(answers
                .iter()
                .all(|(_, m)| matches!(m, Message::InstallSnapshotReply { received: 0, .. })));
        }
        // Each replica lives on, holding its partial transfer, as a node's shards do.
        shards.push(raft);
    }
    assert!(
        held_total <= BUDGET,
        "{SHARDS} partial transfers hold {held_total} bytes, over the node's {BUDGET}"
    );
    assert!(shared.snapshot_bytes_reserved() <= BUDGET);
    assert_eq!(refused, SHARDS - (BUDGET / total_len) as usize);
}

/// A follower behind a compaction receives its leader's snapshot while another shard of its
/// node holds a stale partial transfer (one forged chunk announcing a large snapshot, then
/// nothing): at once if both fit in the node's budget; once the stale one has stalled for
/// `SNAPSHOT_RECEIVE_STALL_TIMEOUTS` election timeouts and is dropped if they do not.
#[test]
fn a_lagging_follower_catches_up_beside_another_shards_stale_partial_transfer() {
    for room in [true, false] {
        let (mut net, leader) = compacting_net(5);
        let lagging = net.ids().into_iter().find(|&id| id != leader).unwrap();
        let persisted = net.crash(lagging);
        for value in 0..20u8 {
            net.propose(leader, vec![value + 1]);
            net.run_for(ms(5));
        }
        net.run_for(ms(100));
        for id in net.ids() {
            if net.is_up(id) {
                net.compact(id);
            }
        }
        let snapshot = net.node(leader).snapshot_meta();
        let snapshot_len = net.node(leader).snapshot_data().unwrap().len() as u64;
        let stale_len = 100_000;
        let budget = stale_len + snapshot_len - u64::from(!room);
        let shared = NodeShared::with_snapshot_bytes_max(budget);
        // Another shard of the lagging node, with its stale partial transfer.
        let mut other = follower_with(Vec::new(), 1);
        other.share(shared.clone());
        other.handle_message(
            net.now,
            2,
            Message::InstallSnapshot {
                term: 1,
                last_index: 50,
                last_term: 1,
                offset: 0,
                total_len: stale_len,
                data: vec![1; 16],
                round: 1,
            },
        );
        drain(&mut other);
        assert!(other.snapshot_receive_bytes() > 0);
        let stall_ends = net.now + other.snapshot_stall();
        net.restart(lagging, 77, persisted);
        net.node_mut(lagging).share(shared.clone());
        // The node's loop: every shard's timers fire, `other`'s too.
        let installed = |net: &Net| net.node(lagging).snapshot_meta() == snapshot;
        let mut installed_at = None;
        while net.now < stall_ends + ms(2_000) && installed_at.is_none() {
            net.run_for(ms(10));
            if other.poll_timeout() <= net.now {
                other.handle_timeout(net.now);
                drain(&mut other);
            }
            if installed(&net) {
                installed_at = Some(net.now);
            }
        }
        let installed_at = installed_at.expect("the lagging follower never caught up");
        if room {
            assert!(installed_at < stall_ends);
            assert!(
                other.snapshot_receive_bytes() > 0,
                "the stale transfer sits there"
            );
        } else {
            assert!(
                installed_at >= stall_ends,
                "it fit in the budget: the test shows nothing"
            );
            assert_eq!(
                other.snapshot_receive_bytes(),
                0,
                "the stale one was dropped"
            );
        }
        assert!(shared.snapshot_bytes_reserved() <= budget);
        // And it goes on with Appends.
        let index = net.propose(leader, b"after".to_vec());
        net.run_for(ms(200));
        assert!(net.node(lagging).commit_index() >= index);
    }
}

/// A follower of leader 2 in term `term` with `log`.
fn follower_with(log: Vec<Entry>, term: u64) -> Raft {
    Raft::new(
        config(1, 3),
        1,
        HardState {
            term,
            voted_for: None,
            replica: 0x5eed,
        },
        log,
        Instant::ZERO,
    )
}

fn chunks(meta: SnapshotMeta, term: u64, data: &[u8], round: u64) -> Vec<Message> {
    data.chunks(CHUNK_TEST)
        .enumerate()
        .map(|(n, chunk)| Message::InstallSnapshot {
            term,
            last_index: meta.index,
            last_term: meta.term,
            offset: (n * CHUNK_TEST) as u64,
            total_len: data.len() as u64,
            data: chunk.to_vec(),
            round,
        })
        .collect()
}

#[test]
fn install_keeps_a_matching_suffix_and_discards_a_conflicting_log() {
    let data: Vec<u8> = (0..40).collect();
    let now = Instant::from_micros(1_000);
    // Raft §7: the log holds the snapshot's last entry with its term: keep what follows.
    let mut node = follower_with((1..=5).map(|i| entry(1, i)).collect(), 1);
    let meta = SnapshotMeta { index: 3, term: 1 };
    let all = chunks(meta, 1, &data, 9);
    assert_eq!(all.len(), 3);
    for (n, msg) in all.into_iter().enumerate() {
        assert!(
            node.poll_snapshot().is_none(),
            "installed only when complete"
        );
        node.handle_message(now, 2, msg);
        let out = drain(&mut node);
        let received = ((n + 1) * CHUNK_TEST).min(data.len()) as u64;
        assert_eq!(
            out,
            vec![(
                2,
                Message::InstallSnapshotReply {
                    term: 1,
                    last_index: 3,
                    received,
                    round: 9,
                    life: node.life(),
                    replica: node.replica(),
                }
            )]
        );
    }
    assert_eq!(node.snapshot_meta(), meta);
    assert_eq!(node.poll_snapshot(), Some((meta, Arc::new(data.clone()))));
    assert_eq!(node.poll_snapshot(), None, "returned once");
    assert_eq!(node.first_index(), 4);
    assert_eq!(node.last_index(), 5, "suffix kept");
    assert_eq!(node.log(), &[entry(1, 4), entry(1, 5)]);
    assert_eq!(node.commit_index(), 3);
    assert_eq!(node.poll_committed(), None, "the snapshot covers 1..=3");
    assert_eq!(node.leader(), Some(2));

    // A conflicting term at the snapshot's last index: the whole log goes.
    let mut node = follower_with((1..=5).map(|i| entry(1, i)).collect(), 2);
    let meta = SnapshotMeta { index: 3, term: 2 };
    for msg in chunks(meta, 2, &data, 1) {
        node.handle_message(now, 2, msg);
    }
    assert_eq!(node.snapshot_meta(), meta);
    assert!(node.log().is_empty(), "conflicting log discarded");
    assert_eq!(node.last_index(), 3);
    assert_eq!(node.commit_index(), 3);
    assert!(node.poll_snapshot().is_some());

    // A chunk out of order is not stored; the reply says where to resume.
    let mut node = follower_with(Vec::new(), 1);
    let meta = SnapshotMeta { index: 3, term: 1 };
    let all = chunks(meta, 1, &data, 1);
    node.handle_message(now, 2, all[1].clone());
    assert!(matches!(
        drain(&mut node)[..],
        [(2, Message::InstallSnapshotReply { received: 0, .. })]
    ));
    // A snapshot no newer than what is committed is acknowledged, not installed.
    for msg in all {
        node.handle_message(now, 2, msg);
    }
    drain(&mut node);
    assert!(node.poll_snapshot().is_some());
    let old = chunks(SnapshotMeta { index: 2, term: 1 }, 1, &data[..20], 1);
    node.handle_message(now, 2, old[0].clone());
    assert_eq!(
        drain(&mut node),
        vec![(
            2,
            Message::InstallSnapshotReply {
                term: 1,
                last_index: 2,
                received: 20,
                round: 1,
                life: node.life(),
                replica: node.replica(),
            }
        )]
    );
    assert!(node.poll_snapshot().is_none());
    assert_eq!(node.snapshot_meta(), meta);
}

#[test]
fn install_snapshot_of_a_stale_term_is_refused_with_the_newer_term() {
    let mut node = follower_with(Vec::new(), 5);
    let data = vec![7u8; 10];
    let meta = SnapshotMeta { index: 4, term: 3 };
    node.handle_message(
        Instant::from_micros(1),
        2,
        chunks(meta, 3, &data, 4)[0].clone(),
    );
    assert_eq!(
        drain(&mut node),
        vec![(
            2,
            Message::InstallSnapshotReply {
                term: 5,
                last_index: 4,
                received: 0,
                // It answers no round of a leader of term 5 (issue 7 A3).
                round: 0,
                life: node.life(),
                replica: node.replica(),
            }
        )]
    );
    assert_eq!(node.snapshot_meta(), SnapshotMeta::default());
    assert!(node.poll_snapshot().is_none());
    assert_eq!(node.commit_index(), 0);
    assert_eq!(node.term(), 5);
    assert_eq!(node.leader(), None, "a stale leader is not followed");

    // And the stale leader steps down on the reply.
    let (mut net, leader) = compacting_net(3);
    let term = net.node(leader).term();
    let now = net.now;
    let other = net.ids().into_iter().find(|&id| id != leader).unwrap();
    net.node_mut(leader).handle_message(
        now,
        other,
        Message::InstallSnapshotReply {
            term: term + 1,
            last_index: 0,
            received: 0,
            round: 0,
            life: 0,
            replica: 0,
        },
    );
    assert_eq!(net.node(leader).role(), Role::Follower);
    assert_eq!(net.node(leader).term(), term + 1);
}

/// Every node restarts from `restore` with a snapshot and the log after it: they elect a
/// leader, recommit the suffix, and commit new entries; the single-node case too.
#[test]
fn restart_from_a_snapshot_and_suffix_recommits_and_leads() {
    let (mut net, leader) = compacting_net(5);
    for value in 1..=10u8 {
        net.propose(leader, vec![value]);
    }
    net.run_for(ms(100));
    for id in net.ids() {
        net.compact(id);
    }
    let snapshot = net.node(leader).snapshot_meta();
    for value in 11..=15u8 {
        net.propose(leader, vec![value]);
    }
    net.run_for(ms(100));
    let commit = net.node(leader).commit_index();
    assert!(commit > snapshot.index);
    let mut persisted = Vec::new();
    for id in net.ids() {
        assert!(net.node(id).snapshot_meta().index >= snapshot.index);
        persisted.push((id, net.crash(id)));
    }
    for (id, state) in persisted {
        assert!(!state.log.is_empty(), "a suffix after the snapshot");
        net.restart(id, 40 + id, state);
        assert!(net.node(id).commit_index() >= snapshot.index);
    }
    let leader = net.elect(ms(2_000));
    net.run_for(ms(200));
    for id in net.ids() {
        assert!(
            net.node(id).commit_index() >= commit,
            "node {id} recommitted"
        );
        // The harness checked that the record (snapshot prefix + recommitted entries) is
        // the chosen one.
        assert!(net.committed[id as usize - 1].len() as u64 >= commit);
    }
    let index = net.propose(leader, b"new".to_vec());
    net.run_for(ms(200));
    for id in net.ids() {
        assert!(net.node(id).commit_index() >= index);
        assert_eq!(net.committed_data(id).last().unwrap(), b"new");
    }

    // A single node restored from a snapshot with an empty log leads and commits.
    let mut net = Net::new(1, 9);
    net.run_for(ms(400));
    net.propose(1, b"a".to_vec());
    net.compact(1);
    let persisted = net.crash(1);
    assert!(persisted.log.is_empty());
    net.restart(1, 3, persisted);
    net.run_for(ms(400));
    assert_eq!(net.node(1).role(), Role::Leader);
    let index = net.propose(1, b"b".to_vec());
    assert_eq!(index, 4, "after the snapshot (2) and the new no-op (3)");
    assert_eq!(net.node(1).commit_index(), 4);
    assert_eq!(net.committed_data(1), vec![b"a".to_vec(), b"b".to_vec()]);
}

/// Raft §5.4.1 after compaction: a node with an empty log compares up-to-dateness by its
/// snapshot's last term and index; and Appends after the snapshot carry its term as
/// prev_log_term and respect `entries_per_append_max`.
#[test]
fn votes_and_appends_after_compaction_use_the_snapshot() {
    let meta = SnapshotMeta { index: 10, term: 3 };
    let data = Arc::new(vec![1u8; 5]);
    let start = Instant::ZERO;
    let late = Instant::from_micros(1_000_000); // past stickiness
    let voter = |log: Vec<Entry>| {
        Raft::restore(
            config(1, 3),
            1,
            HardState {
                term: 3,
                voted_for: None,
                replica: 0x5eed,
            },
            Some((meta, Arc::clone(&data))),
            log,
            start,
        )
    };
    let mut node = voter(Vec::new());
    assert_eq!(node.last_index(), 10);
    assert_eq!(node.first_index(), 11);
    assert_eq!(node.commit_index(), 10);
    assert_eq!(node.poll_committed(), None);
    for (last_log_index, last_log_term, granted) in
        [(9, 3, false), (10, 2, false), (10, 3, true), (5, 4, true)]
    {
        let mut node = voter(Vec::new());
        node.handle_message(
            late,
            2,
            Message::Vote {
                term: 4,
                last_log_index,
                last_log_term,
                transfer: false,
            },
        );
        assert_eq!(
            drain(&mut node),
            vec![(
                2,
                Message::VoteReply {
                    term: 4,
                    granted,
                    replica: node.replica(),
                }
            )],
            "candidate log ({last_log_index}, {last_log_term})"
        );
    }
    // Its own campaign advertises the snapshot.
    node.handle_timeout(node.poll_timeout());
    assert!(drain(&mut node).contains(&(
        2,
        Message::PreVote {
            term: 4,
            last_log_index: 10,
            last_log_term: 3
        }
    )));

    // A leader whose log starts after its snapshot sends Appends from it.
    let mut net = Net::with(
        3,
        2,
        |config| config.entries_per_append_max = 2,
        |_| (HardState::default(), Vec::new()),
    );
    let leader = net.elect(ms(2_000));
    net.run_for(ms(100));
    let follower = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let persisted = net.crash(follower);
    for value in 1..=6u8 {
        net.propose(leader, vec![value]);
    }
    net.run_for(ms(200));
    for id in net.ids() {
        if net.is_up(id) {
            net.compact(id);
        }
    }
    let snapshot = net.node(leader).snapshot_meta();
    for value in 7..=12u8 {
        net.propose(leader, vec![value]);
    }
    net.sent.clear();
    net.restart(follower, 5, persisted);
    net.run_for(ms(300));
    assert_eq!(net.node(follower).snapshot_meta(), snapshot);
    assert_eq!(
        net.node(follower).commit_index(),
        net.node(leader).commit_index()
    );
    let appends: Vec<&Message> = net
        .sent
        .iter()
        .filter(|(from, to, _)| *from == leader && *to == follower)
        .map(|(_, _, m)| m)
        .filter(|m| matches!(m, Message::Append { .. }))
        .collect();
    assert!(appends.iter().all(|m| match m {
        Message::Append { entries, .. } => entries.len() <= 2,
        _ => unreachable!(),
    }));
    assert!(
        appends.iter().any(|m| matches!(m,
            Message::Append { prev_log_index, prev_log_term, entries, .. }
                if *prev_log_index == snapshot.index && *prev_log_term == snapshot.term
                    && !entries.is_empty())),
        "the first Append after the snapshot checks the snapshot's term"
    );
}

/// Review finding: a complete InstallSnapshot older in term than the follower's own snapshot
/// (from a faulty or forged peer) reached an assert; it is now dropped.
#[test]
fn a_snapshot_that_contradicts_the_followers_own_is_dropped() {
    let data: Vec<u8> = (0..40).collect();
    let now = Instant::from_micros(1_000);
    let mut node = follower_with((1..=5).map(|i| entry(1, i)).collect(), 2);
    let meta = SnapshotMeta { index: 3, term: 2 };
    for msg in chunks(meta, 2, &data, 1) {
        node.handle_message(now, 2, msg);
    }
    assert_eq!(node.snapshot_meta(), meta);
    drain(&mut node);
    let forged = SnapshotMeta { index: 10, term: 1 };
    for msg in chunks(forged, 3, &data, 1) {
        node.handle_message(now, 3, msg);
    }
    drain(&mut node);
    assert_eq!(
        node.snapshot_meta(),
        meta,
        "the forged snapshot was installed"
    );
    assert!(node.faulty_drops() > 0);
}

/// Issue 7 B6 (simulator seed 402413, 3 nodes, 30 s): a follower whose own snapshot is
/// newer than the leader's was sent the leader's older one, took its older term for a
/// forgery, dropped it without counting the leader's contact, and was cut off until the
/// leader compacted again. It must answer that it holds everything the snapshot covers, so
/// the leader goes on with Appends.
#[test]
fn an_older_snapshot_from_the_leader_is_answered_and_counts_as_contact() {
    let now = Instant::from_micros(1_000);
    let own = SnapshotMeta { index: 10, term: 3 };
    let mut node = Raft::restore(
        config(1, 3),
        1,
        HardState {
            term: 4,
            voted_for: None,
            replica: 0x5eed,
        },
        Some((own, Arc::new(vec![7; 40]))),
        vec![entry(4, 11)],
        now,
    );
    let data: Vec<u8> = (0..40).collect();
    let older = SnapshotMeta { index: 6, term: 2 };
    node.handle_message(now, 2, chunks(older, 4, &data, 5)[0].clone());
    assert_eq!(
        node.faulty_drops(),
        0,
        "a correct leader's snapshot was dropped"
    );
    assert_eq!(
        node.leader(),
        Some(2),
        "the leader's contact was not counted"
    );
    assert_eq!(
        drain(&mut node),
        vec![(
            2,
            Message::InstallSnapshotReply {
                term: 4,
                last_index: 6,
                received: 40,
                round: 5,
                life: node.life(),
                replica: node.replica(),
            }
        )]
    );
    assert_eq!(
        node.snapshot_meta(),
        own,
        "never installs an older snapshot"
    );
    assert!(node.poll_snapshot().is_none());
    assert_eq!(node.last_index(), 11);
}

/// What no correct leader sends is still dropped (spec §8.5, "Receiving a snapshot"): a
/// snapshot through this node's own snapshot index with another term, one below it with a
/// later term, one above it with an earlier term.
#[test]
fn a_snapshot_that_contradicts_the_followers_own_snapshot_is_dropped() {
    let now = Instant::from_micros(1_000);
    let own = SnapshotMeta { index: 10, term: 3 };
    let data: Vec<u8> = (0..40).collect();
    for forged in [
        SnapshotMeta { index: 10, term: 2 },
        SnapshotMeta { index: 10, term: 4 },
        SnapshotMeta { index: 6, term: 4 },
        SnapshotMeta { index: 12, term: 2 },
    ] {
        let mut node = Raft::restore(
            config(1, 3),
            1,
            HardState {
                term: 4,
                voted_for: None,
                replica: 0x5eed,
            },
            Some((own, Arc::new(vec![7; 40]))),
            Vec::new(),
            now,
        );
        for msg in chunks(forged, 4, &data, 5) {
            node.handle_message(now, 2, msg);
        }
        assert!(
            node.faulty_drops() > 0,
            "{forged:?} was not taken as forged"
        );
        assert!(drain(&mut node).is_empty(), "{forged:?} was answered");
        assert_eq!(node.snapshot_meta(), own);
        assert_eq!(node.leader(), None);
    }
}
