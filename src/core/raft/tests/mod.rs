//! Scenario tests of the Raft core, driven by a tiny deterministic in-test network: a `Vec` of
//! nodes on one shared clock, messages delivered by hand in (time, sequence) order, timers
//! fired exactly when `poll_timeout` says. Every input is followed by the checks a simulator
//! would make from outside: at most one leader per term, every node's committed entries agree
//! index by index (a snapshot a node installs must be the one the committed entries give),
//! and at most one node holds a valid lease at any instant.

mod config;
mod election;
mod faults;
mod lease;
mod membership;
mod rejoin;
mod replication;
mod restart;
mod snapshot;
mod transfer;

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
        data: vec![index as u8].into(),
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

/// Chunks small enough that the test snapshots take several.
const CHUNK_TEST: usize = 16;

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

    /// After every input to node `id`: store what it hands out and report it stored
    /// ([`store`]: the node's state is what a crash keeps), drain its outputs and check the
    /// cluster-wide safety properties.
    fn after_input(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.nodes[id as usize - 1].as_mut().expect("node is up");
        store(node);
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
            .map(|entry| entry.data.to_vec())
            .collect()
    }
}

/// What a shell does after every input: takes what to store and, once it is stored (at once
/// here), reports it ([`Raft::persisted`]), which may commit more on a leader.
fn store(node: &mut Raft) {
    while let Some(persist) = node.take_persist() {
        node.persisted(persist.last_index, persist.last_term);
    }
}

fn drain(node: &mut Raft) -> Vec<(NodeId, Message)> {
    let mut out = Vec::new();
    while let Some(message) = node.poll_message() {
        out.push(message);
    }
    out
}
