//! A rolling restart of a joined node with real processes (issue 10; README "Placement",
//! "Stopping and restarting a node"; spec §8.13): four `udplock server`s started with
//! `--bootstrap` / `--join` and the default `--dead-after-ms` (60 s), one of them stopped
//! with SIGTERM and restarted from its data directory. The stop hands its shards over and
//! announces no leave: the others hold it suspect, then dead, never left, and no node
//! proposes a placement change for it; restarted, it holds the replicas of the same shards
//! and leads its preferred ones again. Before, SIGTERM announced a leave, and every shard it
//! held removed it at once and copied it back after the restart. Then, restarted with
//! `--leave-on-stop` (decommissioning), its SIGTERM announces the leave: the others hold it
//! left and re-make its replicas at once.
//!
//! No speed is assumed: every wait polls each live node's own view (SHARD_STATUS, MEMBERS)
//! until it matches, with a generous deadline (`it::join::DEADLINE`); the only bound is the
//! default dead-after itself, which the restart must come within (it takes seconds).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use udplock::client::MemberState;
use udplock::client::ShardRole;
use udplock::core::placement::targets;
use udplock::{Client, ClientConfig};

use super::join::{Joined, DEADLINE};
use super::replace::{observe, wait_settled, SHARDS};

const REPLICAS: usize = 3;

/// The shards whose replica node `id` holds, as it reports them itself.
fn held_by(admin: &Client, id: u64, addr: SocketAddr) -> BTreeSet<u32> {
    let report = admin.shard_status(addr).expect("SHARD_STATUS");
    assert_eq!(report.node_id, id);
    (0..SHARDS)
        .filter(|&s| report.shards[s as usize].role != ShardRole::NoReplica)
        .collect()
}

/// What each of `nodes` holds node `id` as (`None`: not known, or no answer).
fn held_as(admin: &Client, nodes: &BTreeMap<u64, SocketAddr>, id: u64) -> Vec<Option<MemberState>> {
    nodes
        .values()
        .map(|&addr| {
            let report = admin.members(addr).ok()?;
            report.members.iter().find(|m| m.id == id).map(|m| m.state)
        })
        .collect()
}

/// The placement changes a node's stderr logged for `id` (log target `udplock::placement`:
/// "proposing AddLearner(ID)", "Promote(ID)", "Remove(ID)").
fn changes_for(stderr: &str, id: u64) -> Vec<&str> {
    let named = [
        format!("AddLearner({id})"),
        format!("Promote({id})"),
        format!("Remove({id})"),
    ];
    stderr
        .lines()
        .filter(|l| l.contains("proposing") && named.iter().any(|n| l.contains(n.as_str())))
        .collect()
}

#[test]
fn a_joined_node_restarted_after_sigterm_keeps_its_replicas_and_one_leaving_on_stop_is_replaced() {
    let four: Vec<u64> = (1..=4).collect();
    let preferred = |shard: u32| targets(shard, four.iter().copied(), REPLICAS)[0];
    // The victim: a joined node (not the bootstrap one) that leads shards, so that its stop
    // hands some over; the one preferred by the most.
    let victim = (2..=4u64)
        .max_by_key(|&n| (0..SHARDS).filter(|&s| preferred(s) == n).count())
        .unwrap();
    let victims_shards: BTreeSet<u32> = (0..SHARDS)
        .filter(|&s| targets(s, four.iter().copied(), REPLICAS).contains(&victim))
        .collect();
    assert!(
        (0..SHARDS).any(|s| preferred(s) == victim),
        "test setup: node {victim} is preferred for no shard"
    );
    assert!(
        victims_shards.len() < SHARDS as usize,
        "test setup: it holds every shard"
    );

    let mut c = Joined::new("stop");
    let held: Vec<UdpSocket> = (1..=4u8)
        .map(|h| UdpSocket::bind(SocketAddr::from(([127, 0, 0, h], 0))).unwrap())
        .collect();
    let addr: BTreeMap<u64, SocketAddr> = (1..=4u64)
        .map(|id| (id, held[id as usize - 1].local_addr().unwrap()))
        .collect();
    drop(held);
    let shards = SHARDS.to_string();
    let seed = addr[&1].to_string();
    // Default --dead-after-ms (60 s) and --replicas (3).
    c.spawn_with_shards(1, addr[&1], &shards, &["--bootstrap"]);
    let join = ["--join", seed.as_str()];
    for id in 2..=4 {
        c.spawn_with_shards(id, addr[&id], &shards, &join);
    }
    let mut admin_config = ClientConfig::new(vec![addr[&1]]);
    admin_config.shards = SHARDS;
    admin_config.request_timeout_ms = 2_000;
    let admin = Client::new(admin_config).unwrap();
    wait_settled(&admin, &addr, "four nodes joined");
    assert_eq!(held_by(&admin, victim, addr[&victim]), victims_shards);
    let led = observe(&admin, &addr)
        .unwrap()
        .iter()
        .filter(|s| s.leaders.iter().any(|&(id, _)| id == victim))
        .count();
    assert!(led > 0, "node {victim} leads no shard");
    let others: BTreeMap<u64, SocketAddr> = addr
        .iter()
        .filter(|(&id, _)| id != victim)
        .map(|(&id, &a)| (id, a))
        .collect();
    let logged_before: BTreeMap<u64, usize> =
        others.keys().map(|&id| (id, c.stderr(id).len())).collect();

    // SIGTERM: it hands every shard it leads over, announces no leave, and exits.
    let status = c.terminate(victim);
    let stopped_at = Instant::now();
    assert!(status.success(), "{status:?}");
    let said = c.stderr(victim);
    assert!(said.contains("announcing no leave"), "{said}");
    assert!(
        said.contains("(0 shards left without a handover)"),
        "{said}"
    );

    // The others find it dead (SWIM) and never hold it left.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let states = held_as(&admin, &others, victim);
        assert!(
            !states.contains(&Some(MemberState::Left)),
            "a node holds node {victim} left after a plain SIGTERM: {states:?}"
        );
        if states.iter().all(|&s| s == Some(MemberState::Dead)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} not held dead by all within {DEADLINE:?}: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "node {victim} held dead by all after {:?}",
        stopped_at.elapsed()
    );

    // Restarted from its data directory (with --leave-on-stop, which changes only its next
    // stop): the placement it had.
    let logged_at_restart: BTreeMap<u64, usize> =
        others.keys().map(|&id| (id, c.stderr(id).len())).collect();
    let join_leaving = ["--join", seed.as_str(), "--leave-on-stop"];
    c.spawn_with_shards(victim, addr[&victim], &shards, &join_leaving);
    wait_settled(&admin, &addr, &format!("node {victim} restarted"));
    assert_eq!(held_by(&admin, victim, addr[&victim]), victims_shards);
    let away = stopped_at.elapsed();
    // Within the default dead-after, or the check below says nothing about it.
    assert!(
        away < Duration::from_secs(50),
        "the restart took {away:?}: too close to the default dead-after (60 s) to test it"
    );
    // No node proposed a placement change for it since the stop.
    for (&id, &from) in &logged_before {
        let text = c.stderr(id);
        let since = &text[from.min(text.len())..];
        let handed_back = format!("handing leadership to node {victim}");
        let down = &text[from.min(text.len())..logged_at_restart[&id].min(text.len())];
        eprintln!(
            "node {id}: {} hand-overs to node {victim} while it stopped or was down, {} since",
            down.matches(handed_back.as_str()).count(),
            since.matches(handed_back.as_str()).count()
        );
        let changes = changes_for(since, victim);
        assert!(
            changes.is_empty(),
            "node {id} changed node {victim}'s placement: {changes:?}"
        );
    }

    // Decommissioning: with --leave-on-stop, SIGTERM announces a leave; the others hold it
    // left, and its shards are re-made on the three others at once (long before the
    // default dead-after), each change logged.
    let logged_before: BTreeMap<u64, usize> =
        others.keys().map(|&id| (id, c.stderr(id).len())).collect();
    let status = c.terminate(victim);
    let left_at = Instant::now();
    assert!(status.success(), "{status:?}");
    let said = c.stderr(victim);
    assert!(said.contains("leaving (--leave-on-stop)"), "{said}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let states = held_as(&admin, &others, victim);
        if states.iter().all(|&s| s == Some(MemberState::Left)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} not held left by all within {DEADLINE:?}: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_settled(&admin, &others, &format!("node {victim} left"));
    let replaced_after = left_at.elapsed();
    assert!(
        replaced_after < Duration::from_secs(50),
        "replaced after {replaced_after:?}: not before the default dead-after (60 s)"
    );
    let removals: usize = logged_before
        .iter()
        .map(|(&id, &from)| {
            let text = c.stderr(id);
            let since = &text[from.min(text.len())..];
            changes_for(since, victim)
                .iter()
                .filter(|l| l.contains(&format!("Remove({victim})")))
                .count()
        })
        .sum();
    assert!(
        removals >= victims_shards.len(),
        "{removals} removals of node {victim} logged for its {} shards",
        victims_shards.len()
    );
}
