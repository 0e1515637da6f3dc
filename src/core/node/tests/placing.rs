//! The placement driver (`node::placing`, spec §8.13, issue 10 §2) over bytes between joined
//! node cores: shards move onto their targets one single-server change at a time, leaders
//! onto their preferred nodes, a node dead longer than dead-after is replaced, and a node
//! that lost its state gets its shards back as new replicas.

use crate::core::placement::{self, Planner};
use crate::core::replica::SPREAD_AFTER;

use super::*;

/// Shards of these clusters: enough that every node is a target of some and not of others.
const SHARDS: u32 = 8;
const REPLICAS: usize = 3;
/// Short, so a test replaces a dead node within seconds; several SWIM periods (100 ms) past
/// the confirmation of a death.
const DEAD_AFTER: Duration = Duration::from_millis(3_000);

fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([127, 0, 2, id as u8], 7300 + id as u16))
}

/// Node `id` of a joined cluster with the placement driver on: the bootstrap node (node 1,
/// every shard) or a node joining through node 1. `incarnation` must grow across restarts
/// (spec §8.11). State is kept (`stores_state`), so replicas are created and dropped with
/// their files, as in a real cluster.
fn placed_node(id: NodeId, incarnation: u64, now: Instant) -> Node {
    // The bootstrap node holds every shard; any other holds none (it joins, or it lost
    // its state).
    let starts = (0..SHARDS)
        .map(|_| (id == 1).then_some(Start::New))
        .collect();
    placed_node_from(id, incarnation, now, starts)
}

/// [`placed_node`] starting its replicas as `starts` says (a restart from its state).
fn placed_node_from(
    id: NodeId,
    incarnation: u64,
    now: Instant,
    starts: Vec<Option<Start>>,
) -> Node {
    let bootstrap = id == 1;
    let config = Config {
        shards: SHARDS,
        swim_period: Duration::from_millis(100),
        stores_state: true,
        joined: Some(Joined {
            cluster_id: JOINED_CLUSTER_ID,
            addr: addr(id),
            seeds: if bootstrap {
                vec![]
            } else {
                vec![(1, addr(1))]
            },
        }),
        placement: Some(Planner::new(REPLICAS, DEAD_AFTER).unwrap()),
        ..Config::new(
            id,
            if bootstrap {
                vec![(id, addr(id))]
            } else {
                vec![]
            },
        )
    };
    let stats = Arc::new(NodeStats::default());
    let mut node = Node::new(
        config,
        starts,
        test_keys(),
        incarnation,
        id * 31 + incarnation,
        stats,
        now,
    )
    .expect("valid");
    node.set_wall_clock(now, 1_700_000_000_000_000);
    node
}

/// Node cores over a perfect network of bytes (every datagram delivered after [`DELAY`]); a
/// datagram to an address no running node has is lost (a stopped node).
struct Placed {
    nodes: Vec<Node>,
    now: Instant,
    wire: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Events after which some leader's latest configuration no longer named it a voter:
    /// it proposed its own removal rather than hand the shard over first.
    self_removals: u64,
}

impl Placed {
    fn new() -> Placed {
        Placed {
            nodes: vec![placed_node(1, 1, Instant::ZERO)],
            now: Instant::ZERO,
            wire: VecDeque::new(),
            self_removals: 0,
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(Node::node_id).collect()
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.iter().find(|n| n.node_id() == id).unwrap()
    }

    fn start(&mut self, id: NodeId, incarnation: u64) {
        assert!(!self.ids().contains(&id));
        self.nodes.push(placed_node(id, incarnation, self.now));
    }

    fn stop(&mut self, id: NodeId) {
        self.nodes.retain(|n| n.node_id() != id);
    }

    /// Stops node `id` as its process ending would, keeping what it stored: how each of its
    /// replicas restarts (the files of every one it held; its Raft state in memory is what
    /// it stored, as every write was handed out and taken).
    fn stop_keeping_state(&mut self, id: NodeId) -> Vec<Option<Start>> {
        let starts = (0..SHARDS)
            .map(|s| {
                let raft = self.node(id).replica(s)?.raft();
                Some(Start::Restore {
                    hard: raft.hard_state(),
                    snapshot: raft
                        .snapshot_data()
                        .map(|data| (raft.snapshot_meta(), data.clone())),
                    log: raft.log().to_vec(),
                })
            })
            .collect();
        self.stop(id);
        starts
    }

    /// Restarts node `id` from `starts` ([`Placed::stop_keeping_state`]).
    fn restart(&mut self, id: NodeId, incarnation: u64, starts: Vec<Option<Start>>) {
        assert!(!self.ids().contains(&id));
        self.nodes
            .push(placed_node_from(id, incarnation, self.now, starts));
    }

    /// What every node holds node `id` as, but itself.
    fn held_as(&self, id: NodeId) -> Vec<Option<swim::State>> {
        self.nodes
            .iter()
            .filter(|n| n.node_id() != id)
            .map(|n| n.members().iter().find(|m| m.id == id).map(|m| m.state))
            .collect()
    }

    fn run_for(&mut self, millis: u64) {
        let until = self.now + Duration::from_millis(millis);
        let mut buf = vec![0u8; PEER_DATAGRAM_LEN_MAX];
        loop {
            for node in &mut self.nodes {
                store_all(node);
                let from = node.config().listen().unwrap();
                while let Some(t) = node.poll_transmit(&mut buf) {
                    let bytes = buf[..t.len].to_vec();
                    self.wire.push_back((self.now + DELAY, from, t.to, bytes));
                }
            }
            let timer = self.nodes.iter().map(Node::poll_timeout).min().unwrap();
            let datagram = self.wire.front().map(|d| d.0);
            let next = datagram.map_or(timer, |d| d.min(timer));
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            if datagram == Some(next) {
                let (_, from, to, bytes) = self.wire.pop_front().unwrap();
                let now = self.now;
                if let Some(node) = self
                    .nodes
                    .iter_mut()
                    .find(|n| n.config().listen() == Some(to))
                {
                    node.handle_datagram(now, from, &bytes);
                }
            } else {
                for node in &mut self.nodes {
                    if node.poll_timeout() <= self.now {
                        node.handle_timeout(self.now);
                    }
                }
            }
            let leaders_removed = self
                .nodes
                .iter()
                .flat_map(|n| n.replicas().map(move |(_, r)| (n.node_id(), r)))
                .filter(|(id, r)| {
                    r.raft().role() == Role::Leader && !r.raft().membership().is_voter(*id)
                })
                .count();
            self.self_removals += u64::from(leaders_removed > 0);
        }
    }

    /// Runs 100 ms at a time until `done`, for at most `seconds`; whether it got there.
    fn run_until(&mut self, seconds: u64, done: impl Fn(&Placed) -> bool) -> bool {
        for _ in 0..seconds * 10 {
            if done(self) {
                return true;
            }
            self.run_for(100);
        }
        done(self)
    }

    /// Every running node holds every other alive.
    fn all_alive(&self) -> bool {
        let ids = self.ids();
        self.nodes.iter().all(|n| {
            let members = n.members();
            ids.iter().all(|&id| {
                members
                    .iter()
                    .any(|m| m.id == id && m.state == swim::State::Alive)
            })
        })
    }

    /// `shard`'s leader (of the highest term, if a deposed one does not know yet): its
    /// node id and its replica.
    fn leader(&self, shard: u32) -> Option<(NodeId, &Replica)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.node_id(), n.replica(shard)?)))
            .filter(|(_, r)| r.raft().role() == Role::Leader)
            .max_by_key(|(_, r)| r.raft().term())
    }

    /// Each shard's (leader, term, configuration) now.
    fn shard_map(&self) -> Vec<Option<(NodeId, u64, raft::Membership)>> {
        (0..SHARDS)
            .map(|s| {
                let (id, r) = self.leader(s)?;
                Some((id, r.raft().term(), r.raft().membership().clone()))
            })
            .collect()
    }

    /// Why the cluster is not placed as spec §8.13 says for the members `alive`, or `None`
    /// when it is: every shard's voters are its targets (no learner), each named with the
    /// replica its node holds now; its leader is its preferred node (the best-ranked target);
    /// and every running node holds a replica of exactly the shards it is a target of.
    fn misplaced(&self, alive: &[NodeId]) -> Option<String> {
        for s in 0..SHARDS {
            let targets = placement::targets(s, alive.iter().copied(), REPLICAS);
            let Some((leader, replica)) = self.leader(s) else {
                return Some(format!("shard {s}: no leader"));
            };
            let membership = replica.raft().membership();
            let mut voters = membership.voters.clone();
            voters.sort_unstable();
            let mut want = targets.clone();
            want.sort_unstable();
            if voters != want || !membership.learners.is_empty() {
                return Some(format!("shard {s}: {membership}, targets {targets:?}"));
            }
            if leader != targets[0] {
                return Some(format!(
                    "shard {s}: led by {leader}, preferred {}",
                    targets[0]
                ));
            }
            for node in &self.nodes {
                let id = node.node_id();
                let held = node.replica(s);
                if held.is_some() != targets.contains(&id) {
                    return Some(format!("shard {s}: node {id} holds {}", held.is_some()));
                }
                if let Some(r) = held {
                    let named = membership.replica_of(id);
                    if named.is_some() && named != Some(r.hard_state().replica) {
                        return Some(format!(
                            "shard {s}: node {id} named {named:x?}, holds replica {:x}",
                            r.hard_state().replica
                        ));
                    }
                }
            }
        }
        None
    }
}

/// A bootstrap node and nodes joining it one by one, to five nodes in all (spec §8.13):
/// after each join every shard ends on its R targets among the nodes, led by its preferred
/// node, and each node holds the replicas of exactly its shards. Then nothing moves any
/// more: the leaders stay put (no ping-pong of transfers).
#[test]
fn joining_nodes_one_by_one_every_shard_ends_on_its_targets_led_by_its_preferred_node() {
    let mut net = Placed::new();
    assert!(net.run_until(5, |n| n.misplaced(&[1]).is_none()));
    for id in 2..=5 {
        net.start(id, 1);
        assert!(net.run_until(10, Placed::all_alive), "node {id} joins");
        let ids = net.ids();
        let placed = net.run_until(60, |n| n.misplaced(&ids).is_none());
        assert!(placed, "with {ids:?}: {:?}", net.misplaced(&ids));
    }
    // Node 1 (the bootstrap node) is no target of some shards of five nodes: it left them,
    // each time after handing the shard over (no leader removed itself).
    assert!(net.node(1).held() < SHARDS as usize);
    assert_eq!(net.self_removals, 0);
    let before = net.shard_map();
    net.run_for(5_000);
    assert_eq!(net.shard_map(), before, "settled: no change, no transfer");
}

/// Four nodes joining the bootstrap node at once: the bootstrap node leads every shard and
/// is displaced from some while it leads them. It hands each over to a target before its
/// removal (a leader that removed itself would leave the shard without one for an election
/// timeout, thesis §4.2.2), and every shard ends on its targets under its preferred node.
#[test]
fn a_displaced_leader_hands_the_shard_over_before_its_removal() {
    let mut net = Placed::new();
    assert!(net.run_until(5, |n| n.misplaced(&[1]).is_none()));
    for id in 2..=5 {
        net.start(id, 1);
    }
    assert!(net.run_until(10, Placed::all_alive));
    assert_eq!(net.node(1).leading(), SHARDS as usize);
    let ids = net.ids();
    let placed = net.run_until(60, |n| n.misplaced(&ids).is_none());
    assert!(placed, "{:?}", net.misplaced(&ids));
    let left = (0..SHARDS)
        .filter(|&s| !placement::targets(s, 1..=5, REPLICAS).contains(&1))
        .count();
    assert!(left > 0 && net.node(1).held() == SHARDS as usize - left);
    assert_eq!(net.self_removals, 0);
}

/// Five placed nodes.
fn five_placed() -> Placed {
    let mut net = Placed::new();
    for id in 2..=5 {
        net.start(id, 1);
        assert!(net.run_until(10, Placed::all_alive), "node {id} joins");
    }
    let ids = net.ids();
    assert!(net.run_until(90, |n| n.misplaced(&ids).is_none()));
    net
}

/// Every replica's latest configuration, per shard and node (by id), of the replicas it
/// names (a replica removed earlier may linger until it learns so).
fn configs(n: &Placed) -> Vec<Vec<(NodeId, raft::Membership)>> {
    (0..SHARDS)
        .map(|s| {
            let mut held: Vec<(NodeId, raft::Membership)> = n
                .nodes
                .iter()
                .filter_map(|node| {
                    let m = node.replica(s)?.raft().membership();
                    let id = node.node_id();
                    m.contains(id).then(|| (id, m.clone()))
                })
                .collect();
            held.sort_by_key(|(id, _)| *id);
            held
        })
        .collect()
}

/// The node of `net` that leads the most shards (the higher id on a tie).
fn busiest_leader(net: &Placed) -> NodeId {
    net.ids()
        .into_iter()
        .max_by_key(|&id| (net.node(id).leading(), id))
        .unwrap()
}

/// Issue 10, a rolling restart (Consul's `leave_on_terminate = false`): a node stopped
/// gracefully without a leave (SIGTERM) hands over the shards it leads and stops; the
/// others hold it suspect, then dead, never left, and placement waits dead-after (spec
/// §8.13). Restarted from its state within dead-after, it keeps every replica — no change
/// of any shard's configuration is proposed, no Remove and no AddLearner — and leads its
/// preferred shards again. Before, a stop announced a SWIM leave, and every shard it held
/// removed it at once and added it back as a new replica after the restart.
#[test]
fn a_node_stopped_without_leaving_and_restarted_within_dead_after_keeps_its_replicas() {
    let mut net = five_placed();
    let victim = busiest_leader(&net);
    assert!(net.node(victim).leading() > 0);
    let held: Vec<Option<u64>> = (0..SHARDS)
        .map(|s| net.node(victim).replica(s).map(|r| r.hard_state().replica))
        .collect();
    assert!(held.iter().any(Option::is_some));
    let before = configs(&net);
    let stopped_at = net.now;
    let i = net.ids().iter().position(|&id| id == victim).unwrap();
    net.nodes[i].start_stopping(stopped_at);
    let unchanged = |n: &Placed| {
        assert!(
            n.held_as(victim)
                .iter()
                .all(|&s| s != Some(swim::State::Left)),
            "held left: {:?}",
            n.held_as(victim)
        );
        // Those of the running nodes (the victim's own while it runs).
        let ids = n.ids();
        let want: Vec<Vec<(NodeId, raft::Membership)>> = before
            .iter()
            .map(|shard| {
                let running = shard.iter().filter(|(id, _)| ids.contains(id));
                running.cloned().collect()
            })
            .collect();
        assert_eq!(configs(n), want, "a configuration changed");
    };
    for _ in 0..50 {
        if net.node(victim).leading() == 0 {
            break;
        }
        net.run_for(100);
        unchanged(&net);
    }
    assert_eq!(net.node(victim).leading(), 0, "handed every shard over");
    // A shell slow to end the process (it waits up to 5 s for its last hand-over): while it
    // runs, alive to SWIM and caught up, no new leader hands a shard back to it within
    // `SPREAD_AFTER` of its hand-over (it would decline, and the shard would refuse
    // proposals until the transfer is abandoned); by then a real shell has ended it.
    let handed_over_by = net.now;
    while net.now + Duration::from_millis(50) < handed_over_by + SPREAD_AFTER {
        net.run_for(50);
        unchanged(&net);
        let back: Vec<u32> = (0..SHARDS)
            .filter(|&s| {
                net.leader(s)
                    .is_some_and(|(_, r)| r.raft().transferring_to() == Some(victim))
            })
            .collect();
        assert!(
            back.is_empty(),
            "shards {back:?} handed back to the stopping node"
        );
    }
    assert_eq!(net.node(victim).leading(), 0);
    let starts = net.stop_keeping_state(victim);
    // Until the others hold it dead (SWIM confirmed it: the state placement counts
    // dead-after from), then half a second more.
    for _ in 0..100 {
        if net
            .held_as(victim)
            .iter()
            .all(|&s| s == Some(swim::State::Dead))
        {
            break;
        }
        net.run_for(100);
        unchanged(&net);
    }
    assert!(
        net.held_as(victim)
            .iter()
            .all(|&s| s == Some(swim::State::Dead)),
        "{:?}",
        net.held_as(victim)
    );
    net.run_for(500);
    unchanged(&net);
    assert!(
        net.now < stopped_at + DEAD_AFTER,
        "the restart must come within dead-after to test it"
    );
    net.restart(victim, 2, starts);
    let ids = net.ids();
    let placed = net.run_until(30, |n| {
        unchanged(n);
        n.all_alive() && n.misplaced(&ids).is_none()
    });
    assert!(placed, "{:?}", net.misplaced(&ids));
    // Its own replicas, not new ones; and it leads again.
    for (s, old) in held.iter().enumerate() {
        let now = net
            .node(victim)
            .replica(s as u32)
            .map(|r| r.hard_state().replica);
        assert_eq!(now, *old, "shard {s}");
    }
    assert!(net.node(victim).leading() > 0);
    // Well past dead-after from the stop: still nothing moved.
    net.run_for(DEAD_AFTER.as_micros() / 1_000);
    unchanged(&net);
}

/// A node that stops with a leave (`--leave-on-stop`, decommissioning) is held left, and
/// every shard it held replaces it at once: before it could have been held dead for
/// dead-after.
#[test]
fn a_node_that_left_is_replaced_at_once() {
    let mut net = five_placed();
    let victim = busiest_leader(&net);
    let stopped_at = net.now;
    let i = net.ids().iter().position(|&id| id == victim).unwrap();
    net.nodes[i].start_leaving(stopped_at);
    assert!(net.run_until(5, |n| n.node(victim).leading() == 0));
    net.stop(victim);
    let removed = |n: &Placed| {
        configs(n)
            .iter()
            .flatten()
            .all(|(_, m)| !m.contains(victim))
    };
    assert!(net.run_until(30, removed), "{:?}", configs(&net));
    assert!(
        net.now < stopped_at + DEAD_AFTER,
        "removed only at {:?}, stopped at {stopped_at:?}: not at once",
        net.now
    );
    assert!(
        net.held_as(victim)
            .iter()
            .all(|&s| s == Some(swim::State::Left)),
        "{:?}",
        net.held_as(victim)
    );
    let alive = net.ids();
    let placed = net.run_until(30, |n| n.misplaced(&alive).is_none());
    assert!(placed, "{:?}", net.misplaced(&alive));
}

/// A node stopped for less than dead-after moves nothing, though the others hold it dead
/// (a reboot); stopped longer, its replicas are replaced on the other nodes, each shard
/// by the node ranked next (spec §8.13).
#[test]
fn a_node_dead_longer_than_dead_after_is_replaced_and_a_shorter_death_moves_nothing() {
    let mut net = five_placed();
    // A node that is a target of some shards (with 8 shards and 5 nodes, all are).
    let victim = 3;
    let shards_of_victim = net.node(victim).held();
    assert!(shards_of_victim > 0);
    net.stop(victim);
    let dead = |n: &Placed| {
        n.nodes.iter().all(|node| {
            node.members()
                .iter()
                .any(|m| m.id == victim && m.state == swim::State::Dead)
        })
    };
    assert!(net.run_until(10, dead), "the others hold it dead");
    // Since when the first of them does: dead-after counts from there.
    let first_death = net
        .nodes
        .iter()
        .flat_map(|node| node.members())
        .filter(|m| m.id == victim)
        .map(|m| m.since)
        .min()
        .unwrap();
    let short_of = first_death + DEAD_AFTER - Duration::from_millis(200);
    assert!(
        short_of > net.now + Duration::from_millis(1_500),
        "the death spread too slowly to test"
    );
    let before = configs(&net);
    // Short of dead-after: nothing moves, though the shards it led elect other leaders.
    while net.now < short_of {
        net.run_for(50);
        assert_eq!(configs(&net), before, "moved before dead-after");
    }
    assert!(
        net.shard_map().iter().all(Option::is_some),
        "every shard led"
    );
    let alive: Vec<NodeId> = net.ids();
    let placed = net.run_until(60, |n| n.misplaced(&alive).is_none());
    assert!(placed, "{:?}", net.misplaced(&alive));
    for (s, entry) in net.shard_map().iter().enumerate() {
        let (_, _, m) = entry.as_ref().unwrap();
        assert!(!m.contains(victim), "shard {s} still names node {victim}");
    }
}

/// A node that lost its state (restarted empty: its replicas come back with fresh replica
/// ids, spec §8.5 "Replica identities") counts for nothing where it was a voter; each of
/// those shards removes it, adds it back as a new replica (a learner), and promotes it
/// once caught up, so that it holds its shards again, named with its new replicas, and
/// leads those it is preferred for.
#[test]
fn a_node_that_lost_its_state_gets_its_shards_back_as_new_replicas() {
    let mut net = five_placed();
    let victim = 4;
    let held = net.node(victim).held();
    assert!(held > 0);
    let old_replicas: Vec<Option<u64>> = (0..SHARDS)
        .map(|s| net.node(victim).replica(s).map(|r| r.hard_state().replica))
        .collect();
    net.stop(victim);
    net.run_for(50);
    net.start(victim, 2);
    let ids = net.ids();
    let placed = net.run_until(90, |n| n.misplaced(&ids).is_none());
    assert!(placed, "{:?}", net.misplaced(&ids));
    assert_eq!(net.node(victim).held(), held, "its shards back");
    for (s, old) in old_replicas.iter().enumerate() {
        let now = net.node(victim).replica(s as u32);
        assert_eq!(now.is_some(), old.is_some());
        if let (Some(now), Some(old)) = (now, old) {
            assert_ne!(now.hard_state().replica, *old, "shard {s}: a new replica");
        }
    }
}

/// `Config::validate`: dead-after between one SWIM protocol period and SWIM's `dead_keep`
/// (the planner must still find a dead member in the table when it is due, spec §8.13),
/// replicas within `1..=REPLICAS_MAX`; the default passes.
#[test]
fn placement_settings_outside_their_bounds_are_refused() {
    let config = placed_node(1, 1, Instant::ZERO).config().clone();
    let swim = config.swim_config().unwrap();
    let with = |replicas: usize, dead_after: Duration| Config {
        placement: Some(Planner {
            replicas,
            dead_after,
        }),
        ..config.clone()
    };
    assert!(with(REPLICAS, swim.protocol_period).validate().is_ok());
    assert!(with(REPLICAS, swim.dead_keep).validate().is_ok());
    let short = Duration::from_micros(swim.protocol_period.as_micros() - 1);
    assert!(with(REPLICAS, short).validate().is_err());
    let long = Duration::from_micros(swim.dead_keep.as_micros() + 1);
    assert!(with(REPLICAS, long).validate().is_err());
    assert!(with(0, DEAD_AFTER).validate().is_err());
    assert!(with(placement::REPLICAS_MAX + 1, DEAD_AFTER)
        .validate()
        .is_err());
    // A static cluster ignores placement: any SWIM period goes.
    let static_config = Config {
        joined: None,
        peers: vec![(1, addr(1))],
        ..with(0, Duration::from_millis(1))
    };
    assert!(static_config.validate().is_ok());
    let default = Config {
        placement: Config::new(1, vec![]).placement,
        ..config
    };
    assert_eq!(
        default.placement,
        Some(Planner {
            replicas: placement::REPLICAS_DEFAULT,
            dead_after: placement::DEAD_AFTER_DEFAULT
        })
    );
    assert!(default.validate().is_ok());
}
