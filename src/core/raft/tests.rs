//! Scenario tests of the Raft core, driven by a tiny deterministic in-test network: a `Vec` of
//! nodes on one shared clock, messages delivered by hand in (time, sequence) order, timers
//! fired exactly when `poll_timeout` says. Every input is followed by the checks a simulator
//! would make from outside: at most one leader per term, every node's committed entries agree
//! index by index (a snapshot a node installs must be the one the committed entries give),
//! and at most one node holds a valid lease at any instant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn us(us: u64) -> Duration {
    Duration::from_micros(us)
}

fn config(id: NodeId, voters: u64) -> Config {
    Config {
        id,
        voters: (1..=voters).collect(),
        ..Config::default()
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        data: vec![index as u8],
    }
}

/// The test state machine's snapshot of `entries` (index 1 first): every entry's term, index
/// and data, so an installed snapshot can be checked against the committed entries, and
/// several chunks long with a small `snapshot_chunk_max`.
fn snapshot_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, position as u64 + 1);
        bytes.extend_from_slice(&entry.term.to_le_bytes());
        bytes.extend_from_slice(&entry.index.to_le_bytes());
        bytes.push(entry.data.len() as u8);
        bytes.extend_from_slice(&entry.data);
    }
    bytes
}

/// What a node persisted: what a crash keeps and `restore` takes.
struct Persisted {
    hard: HardState,
    snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    log: Vec<Entry>,
}

/// Rewrites (Some) or drops (None) a message at send time.
type Filter = Box<dyn FnMut(NodeId, NodeId, Message) -> Option<Message>>;

/// Random loss, duplication and delay of every message.
struct Chaos {
    rng: StdRng,
    drop_per_mille: u32,
    duplicate_per_mille: u32,
    latency_max: Duration,
}

struct Net {
    configs: Vec<Config>,
    /// Node `id` at position `id - 1`; `None` while crashed.
    nodes: Vec<Option<Raft>>,
    now: Instant,
    queue: BTreeMap<(Instant, u64), (NodeId, NodeId, Message)>,
    sequence: u64,
    /// Directed links that drop everything.
    blocked: BTreeSet<(NodeId, NodeId)>,
    filter: Option<Filter>,
    chaos: Option<Chaos>,
    /// Every message a node emitted, delivered or not.
    sent: Vec<(NodeId, NodeId, Message)>,
    /// What `poll_committed` returned, per node, for its current instance.
    committed: Vec<Vec<Entry>>,
    /// The committed entry at each index, as first returned by any node.
    chosen: Vec<Entry>,
    /// The leader of each term, as first seen.
    leaders: BTreeMap<u64, NodeId>,
}

impl Net {
    fn new(voters: u64, seed: u64) -> Net {
        Net::with(voters, seed, |_| {}, |_| (HardState::default(), Vec::new()))
    }

    fn with(
        voters: u64,
        seed: u64,
        tweak: impl Fn(&mut Config),
        state: impl Fn(NodeId) -> (HardState, Vec<Entry>),
    ) -> Net {
        let mut configs = Vec::new();
        let mut nodes = Vec::new();
        for id in 1..=voters {
            let mut config = config(id, voters);
            tweak(&mut config);
            let (hard, log) = state(id);
            nodes.push(Some(Raft::new(
                config.clone(),
                seed.wrapping_mul(1_000).wrapping_add(id),
                hard,
                log,
                Instant::ZERO,
            )));
            configs.push(config);
        }
        Net {
            configs,
            nodes,
            now: Instant::ZERO,
            queue: BTreeMap::new(),
            sequence: 0,
            blocked: BTreeSet::new(),
            filter: None,
            chaos: None,
            sent: Vec::new(),
            committed: vec![Vec::new(); voters as usize],
            chosen: Vec::new(),
            leaders: BTreeMap::new(),
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        (1..=self.nodes.len() as u64).collect()
    }

    fn node(&self, id: NodeId) -> &Raft {
        self.nodes[id as usize - 1].as_ref().expect("node is up")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes[id as usize - 1].as_mut().expect("node is up")
    }

    fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id as usize - 1].is_some()
    }

    /// The up node that leads the highest term, if any.
    fn leader(&self) -> Option<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&id| self.is_up(id) && self.node(id).role() == Role::Leader)
            .max_by_key(|&id| self.node(id).term())
    }

    fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.blocked.clear();
    }

    /// After every input to node `id`: drain its outputs ("persisting" is implicit: the
    /// node's state is what a crash keeps) and check the cluster-wide safety properties.
    fn after_input(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.nodes[id as usize - 1].as_mut().expect("node is up");
        let mut out = Vec::new();
        while let Some(message) = node.poll_message() {
            out.push(message);
        }
        // The shell takes an installed snapshot before any later committed entry.
        let installed = node.poll_snapshot();
        let mut committed = Vec::new();
        while let Some(entry) = node.poll_committed() {
            committed.push(entry);
        }
        assert!(
            node.poll_snapshot().is_none(),
            "node {id}: a second snapshot at once"
        );
        let role = node.role();
        let term = node.term();

        // Election Safety (Raft §5.2): one leader per term.
        if role == Role::Leader {
            let first = *self.leaders.entry(term).or_insert(id);
            assert_eq!(first, id, "two leaders in term {term}");
        }
        // State Machine Safety (Raft §5.4.3): every node commits the same entry at an index;
        // a snapshot stands for the entries it covers.
        if let Some((meta, data)) = installed {
            self.check_snapshot(id, meta, &data);
            assert!(
                meta.index > self.committed[id as usize - 1].len() as u64,
                "node {id}: installed a snapshot it had already applied"
            );
            self.committed[id as usize - 1] = self.chosen[..meta.index as usize].to_vec();
        }
        for entry in committed {
            let mine = &mut self.committed[id as usize - 1];
            assert_eq!(
                entry.index,
                mine.len() as u64 + 1,
                "node {id} skipped an index"
            );
            mine.push(entry.clone());
            match self.chosen.get(entry.index as usize - 1) {
                Some(chosen) => assert_eq!(chosen, &entry, "node {id} disagrees at an index"),
                None => {
                    assert_eq!(entry.index, self.chosen.len() as u64 + 1);
                    self.chosen.push(entry);
                }
            }
        }
        // All clocks here run at one rate, so two valid leases at once is a bug outright.
        let holders: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&other| self.is_up(other) && self.node(other).lease_valid(now))
            .collect();
        assert!(holders.len() <= 1, "leases held at once by {holders:?}");

        for (to, message) in out {
            self.send(id, to, message);
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        self.sent.push((from, to, message.clone()));
        if self.blocked.contains(&(from, to)) {
            return;
        }
        let message = match self.filter.as_mut() {
            Some(filter) => match filter(from, to, message) {
                Some(message) => message,
                None => return,
            },
            None => message,
        };
        let mut copies = 1;
        let mut latencies = [Duration::ZERO; 2];
        if let Some(chaos) = self.chaos.as_mut() {
            if chaos.rng.gen_range(0..1_000) < chaos.drop_per_mille {
                return;
            }
            if chaos.rng.gen_range(0..1_000) < chaos.duplicate_per_mille {
                copies = 2;
            }
            for latency in &mut latencies {
                *latency = us(chaos.rng.gen_range(0..=chaos.latency_max.as_micros()));
            }
        }
        for latency in latencies.iter().take(copies) {
            self.sequence += 1;
            self.queue.insert(
                (self.now + *latency, self.sequence),
                (from, to, message.clone()),
            );
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, message: Message) {
        if !self.is_up(to) || self.blocked.contains(&(from, to)) {
            return;
        }
        let now = self.now;
        let kind = format!("{message:?}");
        let node = self.node_mut(to);
        node.handle_message(now, from, message);
        // No amplification (issue 8 item 4): one message in, at most one back to its sender
        // (what a leader then sends a follower beyond that waits for a timer or a proposal).
        let back = node.outbox.iter().filter(|(to, _)| *to == from).count();
        assert!(
            back <= 1 && !node.flush_pending,
            "node {to} answered {kind:.60} from {from} with {back} messages"
        );
        self.after_input(to);
    }

    /// Processes every message and timer due up to `until`, in time order, then sets the
    /// clock to `until`.
    fn run_until(&mut self, until: Instant) {
        assert!(until >= self.now);
        for _step in 0..10_000_000 {
            let message_at = self.queue.keys().next().map(|&(at, _)| at);
            let timer_at = self
                .ids()
                .into_iter()
                .filter(|&id| self.is_up(id))
                .map(|id| self.node(id).poll_timeout())
                .min();
            let next = match (message_at, timer_at) {
                (Some(m), Some(t)) => m.min(t),
                (m, t) => m.or(t).unwrap_or(Instant::MAX),
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            if message_at == Some(next) {
                let (_, (from, to, message)) = self.queue.pop_first().expect("a message");
                self.deliver(from, to, message);
            } else {
                for id in self.ids() {
                    if self.is_up(id) && self.node(id).poll_timeout() <= self.now {
                        let now = self.now;
                        self.node_mut(id).handle_timeout(now);
                        // Else the shell would spin.
                        assert!(
                            self.node(id).poll_timeout() > now,
                            "node {id}: timer in the past"
                        );
                        self.after_input(id);
                    }
                }
            }
        }
        panic!("the network never went quiet");
    }

    fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    /// Delivers only the messages already due, firing no timer: what happens "at once".
    fn deliver_due(&mut self) {
        while let Some((&(at, _), _)) = self.queue.first_key_value() {
            if at > self.now {
                break;
            }
            let (_, (from, to, message)) = self.queue.pop_first().expect("a message");
            self.deliver(from, to, message);
        }
    }

    /// Fires node `id`'s election timer (moving the clock to it if later) while everyone
    /// else's timers wait, then delivers what follows at once.
    fn campaign(&mut self, id: NodeId) {
        self.now = self.now.max(self.node(id).poll_timeout());
        let now = self.now;
        self.node_mut(id).handle_timeout(now);
        assert!(self.node(id).poll_timeout() > now);
        self.after_input(id);
        self.deliver_due();
    }

    fn propose(&mut self, id: NodeId, data: Vec<u8>) -> u64 {
        let now = self.now;
        let index = self.node_mut(id).propose(now, data).expect("leader");
        self.after_input(id);
        index
    }

    /// Runs until some node leads, within `limit`.
    fn elect(&mut self, limit: Duration) -> NodeId {
        let deadline = self.now + limit;
        while self.now < deadline {
            self.run_for(ms(1));
            if let Some(leader) = self.leader() {
                return leader;
            }
        }
        panic!("no leader within {limit:?}");
    }

    /// A crash: the node loses everything but what it persisted, which is its hard state,
    /// snapshot and log (the shell persists them after every input, before sending).
    fn crash(&mut self, id: NodeId) -> Persisted {
        let node = self.nodes[id as usize - 1].take().expect("node is up");
        let meta = node.snapshot_meta();
        Persisted {
            hard: node.hard_state(),
            snapshot: node.snapshot_data().map(|data| (meta, Arc::clone(data))),
            log: node.log().to_vec(),
        }
    }

    /// A restart that lost everything (durability `memory`): the node rejoins.
    fn rejoin(&mut self, id: NodeId, seed: u64) {
        assert!(!self.is_up(id));
        let config = self.configs[id as usize - 1].clone();
        self.nodes[id as usize - 1] = Some(Raft::rejoin(config, seed, self.now));
        self.committed[id as usize - 1] = Vec::new();
        self.after_input(id);
    }

    /// A start without state as a *new* node (`--new-cluster`, spec §8.5 rule 6).
    fn start_new(&mut self, id: NodeId, seed: u64) {
        assert!(!self.is_up(id));
        let config = self.configs[id as usize - 1].clone();
        self.nodes[id as usize - 1] = Some(Raft::start_new(config, seed, self.now));
        self.committed[id as usize - 1] = Vec::new();
        self.after_input(id);
    }

    fn restart(&mut self, id: NodeId, seed: u64, persisted: Persisted) {
        assert!(!self.is_up(id));
        let config = self.configs[id as usize - 1].clone();
        let Persisted {
            hard,
            snapshot,
            log,
        } = persisted;
        // The restarted state machine is the snapshot's, if any.
        let applied = match &snapshot {
            Some((meta, data)) => {
                self.check_snapshot(id, *meta, data);
                self.chosen[..meta.index as usize].to_vec()
            }
            None => Vec::new(),
        };
        self.nodes[id as usize - 1] =
            Some(Raft::restore(config, seed, hard, snapshot, log, self.now));
        self.committed[id as usize - 1] = applied;
    }

    /// A snapshot must be the state machine after exactly the chosen entries through its
    /// index, and its meta must name the chosen entry there.
    fn check_snapshot(&self, id: NodeId, meta: SnapshotMeta, data: &[u8]) {
        assert!(meta.index > 0, "node {id}: empty snapshot meta");
        let chosen = self
            .chosen
            .get(meta.index as usize - 1)
            .unwrap_or_else(|| panic!("node {id}: snapshot through {} not chosen", meta.index));
        assert_eq!(chosen.term, meta.term, "node {id}: snapshot meta disagrees");
        assert!(
            data == snapshot_bytes(&self.chosen[..meta.index as usize]),
            "node {id}: snapshot data disagrees with the chosen entries"
        );
    }

    /// The shell of node `id` snapshots its state machine (all it applied) and compacts.
    fn compact(&mut self, id: NodeId) {
        let applied = &self.committed[id as usize - 1];
        let index = applied.len() as u64;
        let data = Arc::new(snapshot_bytes(applied));
        self.node_mut(id).compact(index, data);
        if index > 0 {
            assert!(self.node(id).snapshot_meta().index >= index);
        }
    }

    /// The data of the non-no-op entries node `id` returned as committed.
    fn committed_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.committed[id as usize - 1]
            .iter()
            .filter(|entry| !entry.data.is_empty())
            .map(|entry| entry.data.clone())
            .collect()
    }
}

fn drain(node: &mut Raft) -> Vec<(NodeId, Message)> {
    let mut out = Vec::new();
    while let Some(message) = node.poll_message() {
        out.push(message);
    }
    out
}

// ---- Elections ----

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
        Vec::<u8>::new(),
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
                granted: false
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
                granted: true
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
            vec![(3, Message::VoteReply { term: 3, granted })],
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
                granted: false
            }
        )],
        "a lower term is answered with ours"
    );
}

// ---- Replication ----

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
                },
                vec![entry(1, 1), entry(2, 2), entry(2, 3), entry(2, 4)],
            ),
            _ => (
                HardState {
                    term: 3,
                    voted_for: None,
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
    };
    assert_eq!(
        back(snapshot_reply),
        1,
        "chunks for one InstallSnapshotReply"
    );
}

// ---- CheckQuorum and the lease ----

#[test]
fn check_quorum_isolated_leader_steps_down_within_an_election_timeout() {
    // Thesis §6.2.
    let mut net = Net::new(3, 13);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let term = net.node(leader).term();
    let min = net.configs[0].election_timeout_min;
    let cut_at = net.now;
    net.isolate(leader);

    net.run_until(cut_at + ms(100));
    assert_eq!(
        net.node(leader).role(),
        Role::Leader,
        "not before it has to"
    );
    net.run_until(cut_at + min);
    assert_eq!(net.node(leader).role(), Role::Follower);
    assert!(!net.node(leader).lease_valid(net.now));
    assert_eq!(
        net.node_mut(leader).propose(cut_at + min, b"x".to_vec()),
        Err(NotLeader { leader_hint: None })
    );

    // The majority side elects a new leader of a later term.
    net.run_for(ms(1_000));
    let new_leader = net.leader().unwrap();
    assert_ne!(new_leader, leader);
    assert!(net.node(new_leader).term() > term);
}

#[test]
fn lease_needs_a_majority_acknowledged_round() {
    let mut net = Net::new(3, 17);
    // Every AppendReply is lost: leaders are elected but no round is ever acknowledged.
    net.filter = Some(Box::new(|_, _, message| match message {
        Message::AppendReply { .. } => None,
        other => Some(other),
    }));
    let leader = net.elect(ms(1_000));
    for _ in 0..100 {
        assert!(!net.node(leader).lease_valid(net.now));
        net.run_for(ms(1));
    }
    assert_eq!(net.node(leader).role(), Role::Leader);
    net.filter = None;
    // The next heartbeat round is acknowledged (replies are instant here).
    net.run_for(net.configs[0].heartbeat_interval);
    assert_eq!(net.node(leader).role(), Role::Leader);
    assert!(net.node(leader).lease_valid(net.now));
}

#[test]
fn lease_ends_by_round_start_plus_min_election_timeout_over_drift() {
    let mut net = Net::new(3, 19);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(100));
    let lease = net.configs[0].lease_duration();
    assert_eq!(lease, us(148_514), "150 ms / 1.01");

    // The next heartbeat starts a round at `start`; it is acknowledged at once. Then the
    // leader is cut off, so no later round is.
    let start = net.node(leader).poll_timeout();
    net.run_until(start);
    assert!(net.node(leader).lease_valid(start));
    net.isolate(leader);
    net.run_until(start + lease - us(1));
    assert_eq!(net.node(leader).role(), Role::Leader);
    assert!(net.node(leader).lease_valid(net.now));
    net.run_until(start + lease);
    assert_eq!(
        net.node(leader).role(),
        Role::Leader,
        "CheckQuorum has not fired yet: the lease is what ends"
    );
    assert!(!net.node(leader).lease_valid(net.now));
}

/// Issue 7 A3 (seen in simulator seed 504654): round numbers start again at 1 when a node
/// restarts, and a follower of a later term answered a delayed Append of the leader's
/// previous life with that Append's round. The restarted node, leading the later term, took
/// it for an acknowledgement of its own round of that number: a lease and a ReadIndex
/// confirmation no follower gave. No answer to an Append of an earlier term may count.
#[test]
fn a_restarted_leader_never_counts_answers_to_its_previous_lifes_rounds() {
    let mut net = Net::new(3, 41);
    let a = net.elect(ms(1_000));
    net.run_for(ms(200));
    let (b, c) = {
        let others: Vec<NodeId> = net.ids().into_iter().filter(|&id| id != a).collect();
        (others[0], others[1])
    };
    // A copy of the old life's latest Append to b, delayed in the network.
    let stale = net
        .sent
        .iter()
        .rev()
        .find(|(from, to, m)| *from == a && *to == b && matches!(m, Message::Append { .. }))
        .map(|(_, _, m)| m.clone())
        .expect("an Append to b");
    let Message::Append {
        term: old_term,
        round: old_round,
        ..
    } = stale
    else {
        unreachable!()
    };
    assert!(old_round > 2);
    let persisted = net.crash(a);
    net.restart(a, 99, persisted);
    net.campaign(a);
    assert_eq!(net.node(a).role(), Role::Leader);
    assert!(net.node(a).term() > old_term);
    // The new life's rounds catch up with the old number, each acknowledged...
    while net.node_mut(a).confirmed_round() < old_round - 1 {
        let now = net.now;
        net.node_mut(a).confirm_leadership(now).expect("leads");
        net.after_input(a);
        net.deliver_due();
    }
    assert_eq!(net.node_mut(a).confirmed_round(), old_round - 1);
    // ...then it is cut off, and later a read starts round `old_round`, which nobody hears.
    net.isolate(a);
    let t1 = net.now + ms(100);
    assert_eq!(net.node_mut(a).confirm_leadership(t1), Some(old_round));
    drain(net.node_mut(a));
    // The delayed Append reaches b (now in the later term), and b's answer reaches a.
    net.node_mut(b).handle_message(t1, a, stale);
    for (to, reply) in drain(net.node_mut(b)) {
        assert_eq!(to, a);
        net.node_mut(a).handle_message(t1, b, reply);
    }
    assert!(
        net.node_mut(a).confirmed_round() < old_round,
        "a read confirmed by an answer to the previous life's round"
    );
    // The lease of the round acknowledged before the cut ends 48.5 ms after t1; a lease
    // from round `old_round` would run on.
    assert!(
        !net.node(a).lease_valid(t1 + ms(60)),
        "a lease from an answer to the previous life's round"
    );
    assert_eq!(net.node(a).faulty_drops(), 0);
    let _ = c;
}

#[test]
fn lease_duration_shrinks_with_the_drift_bound() {
    let with_drift = |drift_bound_ppm| Config {
        drift_bound_ppm,
        ..Config::default()
    };
    assert_eq!(with_drift(0).lease_duration(), ms(150));
    assert_eq!(with_drift(10_000).lease_duration(), us(148_514));
    assert_eq!(with_drift(500_000).lease_duration(), ms(100));
    assert_eq!(with_drift(999_999).lease_duration(), us(75_000));
}

// ---- Restarts ----

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
                granted: true
            }
        )]
    );
    let persisted = node.hard_state();
    assert_eq!(
        persisted,
        HardState {
            term: 5,
            voted_for: Some(1)
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
                granted: false
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
                granted: true
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

// ---- Configuration ----

#[test]
fn config_validation() {
    assert_eq!(Config::default().validate(), Ok(()));
    assert_eq!(config(3, 5).validate(), Ok(()));
    let field = |tweak: &dyn Fn(&mut Config)| {
        let mut config = config(1, 3);
        tweak(&mut config);
        config.validate().map_err(|error| error.field)
    };
    assert_eq!(field(&|c| c.voters.clear()), Err("voters"));
    assert_eq!(field(&|c| c.voters = vec![1, 2, 2]), Err("voters"));
    assert_eq!(field(&|c| c.id = 4), Err("id"));
    assert_eq!(
        field(&|c| c.election_timeout_min = c.election_timeout_max),
        Err("election_timeout_min")
    );
    assert_eq!(
        field(&|c| c.election_timeout_min = ms(400)),
        Err("election_timeout_min")
    );
    assert_eq!(
        field(&|c| c.heartbeat_interval = ms(76)),
        Err("heartbeat_interval")
    );
    assert_eq!(field(&|c| c.heartbeat_interval = ms(75)), Ok(()));
    assert_eq!(
        field(&|c| c.heartbeat_interval = Duration::ZERO),
        Err("heartbeat_interval")
    );
    assert_eq!(
        field(&|c| c.drift_bound_ppm = 1_000_000),
        Err("drift_bound_ppm")
    );
    assert_eq!(field(&|c| c.drift_bound_ppm = 999_999), Ok(()));
    assert_eq!(
        field(&|c| c.entries_per_append_max = 0),
        Err("entries_per_append_max")
    );
    let error = config(4, 3).validate().unwrap_err();
    assert_eq!(error.to_string(), "config: id must be one of voters");
}

#[test]
#[should_panic(expected = "config: id must be one of voters")]
fn new_refuses_an_invalid_config() {
    let _ = Raft::new(
        config(4, 3),
        1,
        HardState::default(),
        Vec::new(),
        Instant::ZERO,
    );
}

#[test]
fn propose_on_a_follower_names_the_leader() {
    let mut net = Net::new(3, 31);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(50));
    let follower = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let now = net.now;
    assert_eq!(
        net.node_mut(follower).propose(now, b"x".to_vec()),
        Err(NotLeader {
            leader_hint: Some(leader)
        })
    );
}

// ---- Faults ----

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
                    .any(|entry| entry.index == index && entry.data == b"last"),
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

// ---- Leadership transfer (thesis §3.10) ----

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
        entries: Vec::new(),
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

// ---- Log compaction and InstallSnapshot (Raft §7, thesis §5) ----

/// Chunks small enough that the test snapshots take several.
const CHUNK_TEST: usize = 16;

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
            vec![(2, Message::VoteReply { term: 4, granted })],
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
