//! Random faults (loss, duplication, delay, partitions, crashes) and faulty peers: safety holds and the cluster recovers.

use super::*;

#[test]
fn random_faults_keep_safety_and_the_cluster_recovers() {
    for seed in 0..12 {
        assert_eq!(
            random_faults_with(seed, false, false),
            0,
            "a snapshot without compaction"
        );
    }
}

/// The same, but half of the restarts lose everything (durability `memory`): the node
/// rejoins through `Raft::rejoin` and safety holds (a minority is down or rejoining at a
/// time).
#[test]
fn random_faults_with_nodes_that_restart_empty_keep_safety() {
    for seed in 0..16 {
        random_faults_with(seed, seed % 2 == 0, true);
    }
}

fn random_faults(seed: u64, compact: bool) -> usize {
    random_faults_with(seed, compact, false)
}

/// The same with every up node compacting every 100 ms (thesis §5: each server snapshots
/// independently), with snapshots a few chunks long: safety holds, and the nodes that fall
/// behind catch up through InstallSnapshot.
#[test]
fn random_faults_with_periodic_compaction_keep_safety_and_the_cluster_recovers() {
    let installs: usize = (0..12).map(|seed| random_faults(seed, true)).sum();
    assert!(installs > 0, "no snapshot was ever sent");
}

/// Loss, duplication, delay, partitions, crashes and restarts, then healing: the checks of
/// `Net::after_input` hold throughout, and every node commits a final proposal. Returns how
/// many InstallSnapshot chunks were sent.
fn random_faults_with(seed: u64, compact: bool, amnesia: bool) -> usize {
    {
        let mut net = if compact {
            Net::with(
                5,
                seed,
                |config| config.snapshot_chunk_max = 256,
                |_| (HardState::default(), Vec::new()),
            )
        } else {
            Net::new(5, seed)
        };
        let mut rng = StdRng::seed_from_u64(seed);
        net.chaos = Some(Chaos {
            rng: StdRng::seed_from_u64(seed ^ 0xc4a05),
            drop_per_mille: 100,
            duplicate_per_mille: 50,
            latency_max: ms(5),
        });
        let mut down: Vec<(NodeId, Persisted)> = Vec::new();
        let mut next_value = 0u32;
        // Safety phase: loss, duplication, delay, partitions, crashes and restarts.
        for _ in 0..30 {
            for _ in 0..20 {
                if let Some(leader) = net.leader() {
                    next_value += 1;
                    net.propose(leader, next_value.to_be_bytes().to_vec());
                }
                net.run_for(ms(10));
            }
            if compact {
                for id in net.ids() {
                    if net.is_up(id) {
                        net.compact(id);
                    }
                }
            }
            net.heal();
            if rng.gen_bool(0.5) {
                let id = rng.gen_range(1..=5);
                net.isolate(id);
            }
            if down.is_empty() && rng.gen_bool(0.3) {
                let id = rng.gen_range(1..=5);
                down.push((id, net.crash(id)));
            } else if let Some((id, persisted)) = down.pop() {
                // A node loses its state only while a majority of the others kept theirs
                // (and has caught up): they can elect a leader that catches it up. With a
                // majority in catch-up at once, no leader could ever be elected again (spec
                // §8.5, rule 6).
                let whole = net
                    .ids()
                    .into_iter()
                    .filter(|&other| {
                        other != id && net.is_up(other) && !net.node(other).rejoining()
                    })
                    .count();
                if amnesia && whole >= net.configs[0].quorum() && rng.gen_bool(0.5) {
                    net.rejoin(id, rng.gen());
                } else {
                    net.restart(id, rng.gen(), persisted);
                }
            }
        }
        // Liveness phase: everything healed and up, no more loss.
        net.heal();
        for (id, persisted) in down.drain(..) {
            net.restart(id, rng.gen(), persisted);
        }
        net.chaos.as_mut().unwrap().drop_per_mille = 0;
        // A leader of the highest term may still be deposed by a term it has not heard of
        // yet (taking its uncommitted proposals with it): let the cluster settle first.
        net.elect(ms(2_000));
        net.run_for(ms(500));
        let leader = net.leader().unwrap();
        let index = net.propose(leader, b"last".to_vec());
        net.run_for(ms(1_000));
        for id in net.ids() {
            let committed = &net.committed[id as usize - 1];
            assert!(
                committed
                    .iter()
                    .any(|entry| entry.index == index && *entry.data == *b"last"),
                "seed {seed}: node {id} did not commit the final proposal"
            );
        }
        assert!(net.chosen.len() > 10, "seed {seed}: little progress");
        if compact {
            assert!(
                net.ids()
                    .iter()
                    .any(|&id| net.node(id).snapshot_meta().index > 0),
                "seed {seed}: nothing compacted"
            );
        }
        net.sent
            .iter()
            .filter(|(_, _, m)| matches!(m, Message::InstallSnapshot { .. }))
            .count()
    }
}

/// Issue 8 item 4: one APPEND_REPLY of term 2^63 - 1 (accepted then: it was not above
/// TERM_MAX) made a leader adopt that term and step down, and its answers carried the term to
/// every node; then no node could campaign (term + 1 is beyond TERM_MAX, which everyone drops)
/// and the shard had no leader for ever, even across restarts (the term is on disk). A term
/// more than TERM_AHEAD_MAX above the receiver's comes from a faulty or forged peer: dropped,
/// counted, and nothing changes.
#[test]
fn a_term_far_above_the_receivers_is_dropped_and_cannot_wedge_the_shard() {
    let mut net = Net::new(3, 31);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let follower = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let answer = |term| Message::AppendReply {
        term,
        success: true,
        match_index: 0,
        round: 0,
        life: 0,
        replica: 0,
    };
    for forged in [u64::MAX / 2, term + TERM_AHEAD_MAX + 1] {
        let now = net.now;
        net.node_mut(leader)
            .handle_message(now, follower, answer(forged));
        net.after_input(leader);
    }
    assert_eq!(
        net.node(leader).role(),
        Role::Leader,
        "the forged term deposed it"
    );
    assert_eq!(net.node(leader).term(), term);
    assert_eq!(net.node(leader).faulty_drops(), 2);
    // Within the bound a later term is a real one: the leader steps down to it, and the
    // shard elects a leader of a later term still.
    let now = net.now;
    net.node_mut(leader)
        .handle_message(now, follower, answer(term + TERM_AHEAD_MAX));
    net.after_input(leader);
    assert_eq!(net.node(leader).term(), term + TERM_AHEAD_MAX);
    assert_eq!(net.node(leader).faulty_drops(), 2);
    net.run_for(ms(3_000));
    let leader = net.leader().expect("a leader after the term jump");
    assert!(net.node(leader).term() > term + TERM_AHEAD_MAX);
    assert!(net.node(leader).lease_valid(net.now));
}

/// Issue 8 item 4: every record dropped as a faulty peer's, every step-down for a later term
/// and every answer from a "new life" wrote a log line: an APPEND_REPLY of term 2^63 - 1 to
/// each leader made every node log about 70 KB/s for ever. Lines about peer input are now
/// bounded per node: `PEER_LOG_LINES_MAX` per kind per `PEER_LOG_PERIOD`, the rest counted.
#[test]
fn a_flood_of_peer_records_writes_a_bounded_number_of_log_lines() {
    let mut net = Net::new(3, 32);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let follower = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let round = net.node(leader).round;
    let before = super::shared::log_lines::written();
    let now = net.now;
    let node = net.node_mut(leader);
    for n in 0..1_000u64 {
        // A term beyond TERM_MAX; a malformed answer (a round the leader never started);
        // answers from ever "newer lives" of the follower.
        let forged = [
            (u64::MAX / 2 + 1, true, round, 0),
            (term, true, round + 1, 0),
            (term, false, round, n + 1),
        ];
        for (term, success, round, life) in forged {
            let match_index = 0;
            node.handle_message(
                now,
                follower,
                Message::AppendReply {
                    term,
                    success,
                    match_index,
                    round,
                    life,
                    replica: 0,
                },
            );
        }
        drain(node);
    }
    let written = super::shared::log_lines::written() - before;
    let kinds = 3;
    assert!(
        written <= kinds * u64::from(PEER_LOG_LINES_MAX),
        "3,000 forged records wrote {written} log lines"
    );
    assert!(net.node(leader).shared().peer_log_skipped() > 0);
}
