//! Replacing a dead machine with real processes (issue 10 §4; README "Replacing a node",
//! "Placement"; spec §8.13): five `udplock server`s started with `--bootstrap` / `--join`
//! only (no peer lists), clients acquiring and releasing throughout, one node killed with
//! SIGKILL, its replicas re-made on the others once it has been dead longer than
//! `--dead-after-ms`, then a fresh node 6 joining that takes over replicas and leadership.
//!
//! The expected placement is computed, not guessed: a shard's replicas are its targets, the
//! `--replicas` (3) alive members ranked highest by rendezvous hashing
//! (`udplock::core::placement::targets`, spec §8.13), and a shard on its targets is led by its
//! best-ranked one. Each wait polls every live node's own view of the shards (SHARD_STATUS,
//! spec §4.7, the data `udplock status --json` merges) until it matches, with a generous
//! deadline, and fails saying what it last saw. "On its targets" means as voters: a replica
//! that SHARD_STATUS reports as a learner (spec §5.6, role 5) is still being placed, so a
//! shard with one is not settled, whatever its holders. A second poll in a row confirms the
//! state (placement's fixed point: no change left to propose).
//!
//! The clients' history is checked as `it::processes` does (mutual exclusion by the client's
//! lease rule, the lease counted from the send time; fencing tokens increasing in grant order),
//! per resource, and every resource must be granted again after the last change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udplock::client::ShardRole;
use udplock::core::placement::targets;
use udplock::{BootInstant, Client, ClientConfig};

use super::join::{Joined, DEADLINE};
use super::processes::{check_history, Held};

/// Enough shards that every one of five nodes is a target of some (the test checks this
/// of the hash before it starts), and that node 6 is the best-ranked target of some.
pub(super) const SHARDS: u32 = 16;
const REPLICAS: usize = 3;
/// How long a dead node keeps its replicas before they are re-made elsewhere.
const DEAD_AFTER_MS: &str = "2000";
/// Polls in a row (at least `POLL` apart) that must see the expected placement.
const STABLE_POLLS: usize = 2;
const POLL: Duration = Duration::from_millis(250);
const CLIENTS: usize = 3;

/// One shard as the live nodes report it: who holds a replica (learners included), which of
/// them are learners, who says it leads (with the term), and whom the others name as leader.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) holders: BTreeSet<u64>,
    pub(super) learners: BTreeSet<u64>,
    pub(super) leaders: Vec<(u64, u64)>,
    named: BTreeSet<Option<u64>>,
}

/// Every live node's view, merged per shard; `Err` names the nodes that did not answer.
pub(super) fn observe(
    admin: &Client,
    nodes: &BTreeMap<u64, SocketAddr>,
) -> Result<Vec<Seen>, String> {
    let mut seen: Vec<Seen> = (0..SHARDS)
        .map(|_| Seen {
            holders: BTreeSet::new(),
            learners: BTreeSet::new(),
            leaders: Vec::new(),
            named: BTreeSet::new(),
        })
        .collect();
    for (&id, &addr) in nodes {
        let report = admin
            .shard_status(addr)
            .map_err(|e| format!("node {id} at {addr}: {e}"))?;
        assert_eq!(report.node_id, id, "{addr} answers as another node");
        assert_eq!(
            report.shards.len(),
            SHARDS as usize,
            "node {id}'s shard count"
        );
        for (shard, info) in report.shards.iter().enumerate() {
            if info.role == ShardRole::NoReplica {
                continue;
            }
            let s = &mut seen[shard];
            s.holders.insert(id);
            if info.role == ShardRole::Learner {
                s.learners.insert(id);
            }
            s.named.insert(info.leader_id);
            if info.role == ShardRole::Leader {
                s.leaders.push((id, info.term));
            }
        }
    }
    Ok(seen)
}

/// Whether `seen` is the placement `alive` should settle on: every shard's replicas on its
/// targets among `alive`, every one a voter (no learner left), led by the best-ranked one,
/// which every replica names.
fn settled(seen: &[Seen], alive: &[u64]) -> Result<(), String> {
    for (shard, s) in seen.iter().enumerate() {
        let want = targets(shard as u32, alive.iter().copied(), REPLICAS);
        let holders: BTreeSet<u64> = want.iter().copied().collect();
        let led = s.leaders.len() == 1 && s.leaders[0].0 == want[0];
        let named = s.named.len() == 1 && s.named.contains(&Some(want[0]));
        if s.holders != holders || !s.learners.is_empty() || !led || !named {
            return Err(format!(
                "shard {shard}: want replicas {want:?} led by {}, seen {s:?}",
                want[0]
            ));
        }
    }
    Ok(())
}

/// Polls until `settled` holds for `STABLE_POLLS` polls in a row; panics at the deadline
/// with what it saw last.
pub(super) fn wait_settled(
    admin: &Client,
    nodes: &BTreeMap<u64, SocketAddr>,
    what: &str,
) -> Instant {
    let alive: Vec<u64> = nodes.keys().copied().collect();
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let mut in_a_row = 0;
    loop {
        let last = observe(admin, nodes).and_then(|seen| settled(&seen, &alive));
        match &last {
            Ok(()) => in_a_row += 1,
            Err(_) => in_a_row = 0,
        }
        if in_a_row >= STABLE_POLLS {
            eprintln!("{what}: settled after {:?}", start.elapsed());
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not settled on nodes {alive:?} within {DEADLINE:?}; last seen: {last:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// The first name `replace-N` whose shard satisfies `pick`.
fn resource_where(pick: impl Fn(u32) -> bool) -> String {
    (0..100_000)
        .map(|i| format!("replace-{i}"))
        .find(|r| pick(udplock_protocol::shard_of(r.as_bytes(), SHARDS)))
        .expect("some resource name lands on such a shard")
}

#[test]
fn five_joined_nodes_one_killed_and_replaced_while_clients_run() {
    // What placement will do, from the hash alone.
    let five: Vec<u64> = (1..=5).collect();
    let preferred = |shard: u32, nodes: &[u64]| targets(shard, nodes.iter().copied(), REPLICAS)[0];
    // The victim: the node that leads the most shards (ties: the higher id, so not node 1,
    // the bootstrap node, when it can be avoided), so its death costs clients leaders.
    let victim = (1..=5u64)
        .max_by_key(|&n| (0..SHARDS).filter(|&s| preferred(s, &five) == n).count())
        .unwrap();
    let four: Vec<u64> = five.iter().copied().filter(|&n| n != victim).collect();
    let six: Vec<u64> = four.iter().copied().chain([6]).collect();
    for n in &five {
        assert!(
            (0..SHARDS).any(|s| targets(s, five.clone(), REPLICAS).contains(n)),
            "test setup: node {n} is a target of no shard of {SHARDS}"
        );
    }
    assert!(
        (0..SHARDS).any(|s| preferred(s, &six) == 6),
        "test setup: node 6 would lead no shard of {SHARDS}"
    );
    // Resources: one on a shard the victim leads, one the victim holds without leading,
    // one node 6 will lead, one elsewhere.
    let resources = [
        resource_where(|s| preferred(s, &five) == victim),
        resource_where(|s| {
            preferred(s, &five) != victim && targets(s, five.clone(), REPLICAS).contains(&victim)
        }),
        resource_where(|s| preferred(s, &six) == 6),
        resource_where(|s| !targets(s, five.clone(), REPLICAS).contains(&victim)),
    ];
    eprintln!("killing node {victim}; resources {resources:?}");

    // 1. Node 1 bootstraps, nodes 2–5 join it, each on its own loopback address.
    let mut c = Joined::new("replace");
    let held: Vec<UdpSocket> = (1..=6u8)
        .map(|h| UdpSocket::bind(SocketAddr::from(([127, 0, 0, h], 0))).unwrap())
        .collect();
    let addr: BTreeMap<u64, SocketAddr> = (1..=6u64)
        .map(|id| (id, held[id as usize - 1].local_addr().unwrap()))
        .collect();
    drop(held);
    let shards = SHARDS.to_string();
    // (The harness gives `--swim-period-ms 100`: a killed node is held dead after about
    // ten periods, README "Membership".)
    let common = ["--dead-after-ms", DEAD_AFTER_MS, "--replicas", "3"];
    let with = |more: &[&str]| -> Vec<String> {
        common
            .iter()
            .chain(more)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let args = with(&["--bootstrap"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.spawn_with_shards(1, addr[&1], &shards, &args);
    for id in 2..=5 {
        let seed = addr[&1].to_string();
        let args = with(&["--join", &seed]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.spawn_with_shards(id, addr[&id], &shards, &args);
    }
    let mut admin_config = ClientConfig::new(vec![addr[&1]]);
    admin_config.shards = SHARDS;
    admin_config.request_timeout_ms = 2_000;
    let admin = Client::new(admin_config).unwrap();

    // 2. Every shard on its three targets of five, led by its preferred node.
    let mut live: BTreeMap<u64, SocketAddr> = five.iter().map(|&id| (id, addr[&id])).collect();
    wait_settled(&admin, &live, "five nodes joined");

    // 3. Clients, given the five addresses, on the four resources.
    let histories: Arc<Mutex<BTreeMap<String, Vec<Held>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut config = ClientConfig::new(live.values().copied().collect());
    config.shards = SHARDS;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (histories, stop, config) = (histories.clone(), stop.clone(), config.clone());
            let resources = resources.clone();
            std::thread::spawn(move || {
                let client = Client::new(config).unwrap();
                let name = format!("client-{id}");
                let mut errors = 0u64;
                for turn in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Every client on the same resource for a few turns, so that they
                    // contend (the FIFO queue hands the lock from one to the next).
                    let resource = &resources[(turn / 3) % resources.len()];
                    let sent = BootInstant::now();
                    let lease = match client.acquire(resource, &name, 1_000, Some(2_000)) {
                        Ok(lease) => lease,
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    };
                    let from = BootInstant::now();
                    // The client's rule: the lease counts from a send time, not later than
                    // the reply plus the TTL.
                    assert!(lease.valid_until <= from + Duration::from_millis(2_000));
                    assert!(lease.valid_until > sent, "{lease:?} sent at {sent:?}");
                    std::thread::sleep(Duration::from_millis(2));
                    let release_sent = BootInstant::now();
                    let _ = client.release(resource, &name);
                    histories
                        .lock()
                        .unwrap()
                        .entry(resource.clone())
                        .or_default()
                        .push(Held {
                            client: id,
                            token: lease.fencing_token,
                            from,
                            until: release_sent.min(lease.valid_until),
                        });
                }
                (client, errors)
            })
        })
        .collect();
    let granted_since = |since: BootInstant| -> BTreeMap<String, usize> {
        let h = histories.lock().unwrap();
        resources
            .iter()
            .map(|r| {
                let n = h
                    .get(r)
                    .map_or(0, |v| v.iter().filter(|g| g.from > since).count());
                (r.clone(), n)
            })
            .collect()
    };
    let wait_granted = |since: BootInstant, what: &str| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let granted = granted_since(since);
            if granted.values().all(|&n| n > 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not every resource granted within {DEADLINE:?}: {granted:?}"
            );
            std::thread::sleep(POLL);
        }
    };
    wait_granted(BootInstant::now(), "before the kill");

    // 4. SIGKILL the victim; its shards go back onto three live targets each, none led by
    // it (after SWIM holds it dead and dead-after has passed).
    let killed_at = BootInstant::now();
    c.kill(victim);
    live.remove(&victim);
    wait_settled(&admin, &live, &format!("node {victim} killed"));
    wait_granted(killed_at, "after the kill");

    // 5. Node 6 joins (through the live nodes): it takes its targets' replicas and leads the
    // shards it ranks first for.
    let seeds: Vec<String> = live.values().map(|a| a.to_string()).collect();
    let seeds = seeds.join(",");
    let args = with(&["--join", &seeds]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.spawn_with_shards(6, addr[&6], &shards, &args);
    live.insert(6, addr[&6]);
    wait_settled(&admin, &live, "node 6 joined");
    let joined_at = BootInstant::now();
    wait_granted(joined_at, "after node 6 joined");

    // 6. Stop the clients; check every resource's history.
    stop.store(true, Ordering::Relaxed);
    let mut leader_of_sixth = None;
    for handle in clients {
        let (client, errors) = handle.join().expect("a client thread panicked");
        eprintln!("a client saw {errors} failed acquires");
        leader_of_sixth.get_or_insert(client.leader_addr(&resources[2]));
    }
    let histories = histories.lock().unwrap();
    for (resource, history) in histories.iter() {
        check_history(history);
        // Grants that went from one client to another: what mutual exclusion is about.
        let mut by_time = history.clone();
        by_time.sort_by_key(|h| h.from);
        let handed = by_time
            .windows(2)
            .filter(|w| w[0].client != w[1].client)
            .count();
        // The longest wait between grants shows the failover the kill caused.
        let gap = by_time
            .windows(2)
            .map(|w| w[1].from.saturating_duration_since(w[0].from))
            .max()
            .unwrap_or_default();
        eprintln!(
            "{resource}: {} grants, {handed} from one client to another, longest gap {gap:?}, \
             all consistent",
            history.len()
        );
        assert!(handed > 0, "{resource}: the clients never contended");
    }
    // The clients, given nodes 1–5 only, found node 6 leading its shard (discovery).
    assert_eq!(
        leader_of_sixth,
        Some(addr[&6]),
        "the clients' leader for {}",
        resources[2]
    );
}
