//! A deterministic whole-cluster simulator for the Raft core (issue 3: "the main test").
//!
//! One `u64` seed drives everything: the network (latency, loss, duplication, reordering,
//! delay spikes), every node's clock rate and rng, the proposals and the faults (partitions of
//! every shape, an isolated leader, crashes and restarts, pauses). The same [`Raft`] cores the
//! nodes will run are driven here with simulated time; nothing reads a real clock, so a failing
//! seed fails the same way every time.
//!
//! A run has two phases (TigerBeetle's VOPR, issue 3 §5): a *safety phase* with faults, then a
//! *liveness phase* with the network healed, every node running. Checkers outside the nodes
//! watch every event:
//!
//! - **election safety** (Raft §5.2): at most one leader per term;
//! - **state machine safety** (Raft §5.4.3): every node applies the same entry at each index,
//!   in index order, and nothing applied is ever contradicted;
//! - **leader completeness** (Raft §5.4): a new leader's log holds every entry applied so far;
//! - **lease safety** (issue 3 §1): at no instant of true time do two nodes both hold a valid
//!   leader lease, each judged by its own drifting clock;
//! - **liveness**: after healing, an entry proposed a bound after the heal is applied by every
//!   node before the run ends.
//!
//! A failure names the seed and the command that reproduces it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::raft::{Config, Entry, HardState, Message, NodeId, Raft, Role};
use crate::core::time::{Duration, Instant};

/// What one simulation run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Cluster size (3 or 5 make sense).
    pub nodes: usize,
    /// Simulated time with faults.
    pub safety_phase: Duration,
    /// Simulated time after healing everything.
    pub liveness_phase: Duration,
    /// Whether the safety phase injects partitions, crashes and pauses (loss, duplication and
    /// reordering are always on).
    pub faults: bool,
}

impl SimConfig {
    /// A run of `seconds` of faults then 5 s of healed network.
    pub fn new(seed: u64, nodes: usize, seconds: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            safety_phase: Duration::from_millis(seconds * 1_000),
            liveness_phase: Duration::from_millis(5_000),
            faults: true,
        }
    }
}

/// What a successful run saw.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub simulated: Duration,
    pub events: u64,
    pub messages_delivered: u64,
    pub entries_applied: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub pauses: u64,
}

/// A checker fired (or the run could not make progress): the seed reproduces it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub nodes: usize,
    pub at: Instant,
    pub what: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({} nodes) failed at {:?}: {}\n  reproduce: cargo run --release -- sim --seed {} --nodes {}",
            self.seed, self.nodes, self.at, self.what, self.seed, self.nodes
        )
    }
}

impl std::error::Error for SimFailure {}

/// Network model: per-message latency, loss, duplication, rare spikes.
const LATENCY_MIN: Duration = Duration::from_micros(50);
const LATENCY_MAX: Duration = Duration::from_micros(2_000);
const SPIKE_PROBABILITY: f64 = 0.01;
const SPIKE_MAX: Duration = Duration::from_micros(80_000);
const LOSS: f64 = 0.02;
const DUPLICATION: f64 = 0.02;
/// Proposals arrive at the leader every 0..2·this on average.
const PROPOSAL_INTERVAL: Duration = Duration::from_micros(5_000);
/// Liveness bound: after healing, an entry proposed this long after the heal must be applied by
/// every node by the end of the run (two election timeouts plus replication, with slack).
const LIVENESS_SETTLE: Duration = Duration::from_millis(1_500);

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        to: NodeId,
        from: NodeId,
        msg: Message,
    },
    Timer {
        node: NodeId,
        generation: u64,
    },
    Propose,
    Fault,
    Heal,
    Restart {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
}

struct SimNode {
    id: NodeId,
    raft: Option<Raft>,
    /// What survives a crash ("fsync before send": saved after every call, before any of the
    /// call's messages is delivered).
    persisted: (HardState, Vec<Entry>),
    /// Clock rate offset in ppm, within ± half the drift bound (so any two nodes differ by at
    /// most the bound).
    rate_ppm: i64,
    /// The node's clock reads `offset + true time × (1 + rate)`.
    offset_us: u64,
    paused_until: Option<Instant>,
    timer_generation: u64,
    /// Entries applied by the current incarnation, index order.
    applied: u64,
    was_leader_in: Option<u64>,
}

impl SimNode {
    fn local(&self, t: Instant) -> Instant {
        let scaled = (t.as_micros() as i128 * (1_000_000 + self.rate_ppm as i128)) / 1_000_000;
        Instant::from_micros(self.offset_us + scaled as u64)
    }

    /// The first true time at which the local clock reads at least `local`.
    fn true_time(&self, local: Instant) -> Instant {
        let l = local.as_micros().saturating_sub(self.offset_us) as i128;
        let rate = 1_000_000 + self.rate_ppm as i128;
        Instant::from_micros(((l * 1_000_000 + rate - 1) / rate) as u64)
    }
}

struct Sim {
    config: SimConfig,
    raft_config: Config,
    rng: StdRng,
    now: Instant,
    seq: u64,
    events: BTreeMap<(Instant, u64), Event>,
    nodes: Vec<SimNode>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    healed: bool,
    /// index → (term, data) of every applied entry, from whichever node applied it first.
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    /// term → the node that led it.
    leaders: BTreeMap<u64, NodeId>,
    proposals: u64,
    /// Liveness: the index of the first entry accepted after the settle time.
    liveness_index: Option<u64>,
    report: SimReport,
}

/// Runs one simulation.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    assert!(config.nodes >= 1);
    let mut sim = Sim::new(config.clone());
    sim.run()?;
    Ok(sim.report)
}

impl Sim {
    fn new(config: SimConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let voters: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let raft_config = Config {
            id: 1,
            voters: voters.clone(),
            ..Config::default()
        };
        let half_drift = i64::from(raft_config.drift_bound_ppm / 2);
        let nodes = voters
            .iter()
            .map(|&id| SimNode {
                id,
                raft: None,
                persisted: (HardState::default(), Vec::new()),
                rate_ppm: rng.gen_range(-half_drift..=half_drift),
                offset_us: rng.gen_range(0..1_000_000_000),
                paused_until: None,
                timer_generation: 0,
                applied: 0,
                was_leader_in: None,
            })
            .collect();
        let mut sim = Sim {
            config,
            raft_config,
            rng,
            now: Instant::ZERO,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            blocked: BTreeSet::new(),
            healed: false,
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            proposals: 0,
            liveness_index: None,
            report: SimReport::default(),
        };
        for id in voters {
            sim.start_node(id);
        }
        sim.schedule(Duration::from_millis(1), Event::Propose);
        if sim.config.faults {
            let first = Duration::from_millis(sim.rng.gen_range(200..1_500));
            sim.schedule(first, Event::Fault);
        }
        sim
    }

    fn fail(&self, what: String) -> SimFailure {
        SimFailure {
            seed: self.config.seed,
            nodes: self.config.nodes,
            at: self.now,
            what,
        }
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        self.events.insert((self.now + after, self.seq), event);
    }

    fn schedule_at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at.max(self.now), self.seq), event);
    }

    fn node(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn start_node(&mut self, id: NodeId) {
        let seed = self.rng.gen();
        let config = Config {
            id,
            ..self.raft_config.clone()
        };
        let now = self.now;
        let n = self.node(id);
        let (state, log) = n.persisted.clone();
        let local = n.local(now);
        n.raft = Some(Raft::new(config, seed, state, log, local));
        n.applied = 0;
        n.was_leader_in = None;
        self.after_call(id);
    }

    fn run(&mut self) -> Result<(), SimFailure> {
        let heal_at = Instant::ZERO + self.config.safety_phase;
        let end = heal_at + self.config.liveness_phase;
        self.schedule_at(heal_at, Event::Heal);
        while let Some(((at, _), event)) = self.events.pop_first() {
            if at > end {
                break;
            }
            self.now = at;
            self.report.events += 1;
            self.handle(event)?;
            self.check_leases()?;
        }
        self.now = end;
        self.report.simulated = end.saturating_since(Instant::ZERO);
        self.check_liveness()
    }

    fn handle(&mut self, event: Event) -> Result<(), SimFailure> {
        match event {
            Event::Deliver { to, from, msg } => {
                let now = self.now;
                let n = self.node(to);
                if let Some(until) = n.paused_until {
                    // A frozen process: the datagram waits in its socket buffer.
                    self.schedule_at(until, Event::Deliver { to, from, msg });
                    return Ok(());
                }
                let local = n.local(now);
                let Some(raft) = n.raft.as_mut() else {
                    return Ok(()); // crashed: lost
                };
                raft.handle_message(local, from, msg);
                self.report.messages_delivered += 1;
                self.after_call(to);
            }
            Event::Timer { node, generation } => {
                let now = self.now;
                let n = self.node(node);
                if n.timer_generation != generation || n.raft.is_none() {
                    return Ok(());
                }
                if let Some(until) = n.paused_until {
                    self.schedule_at(until, Event::Timer { node, generation });
                    return Ok(());
                }
                let local = n.local(now);
                let raft = n.raft.as_mut().expect("running");
                if raft.poll_timeout() <= local {
                    raft.handle_timeout(local);
                }
                self.after_call(node);
            }
            Event::Propose => {
                self.propose();
                let next =
                    Duration::from_micros(self.rng.gen_range(0..2 * PROPOSAL_INTERVAL.as_micros()));
                self.schedule(next, Event::Propose);
            }
            Event::Fault => {
                if !self.healed {
                    self.inject_fault();
                    let next = Duration::from_millis(self.rng.gen_range(100..1_500));
                    self.schedule(next, Event::Fault);
                }
            }
            Event::Heal => self.heal(),
            Event::Restart { node } => {
                if self.node(node).raft.is_none() {
                    self.start_node(node);
                }
            }
            Event::Resume { node } => {
                let now = self.now;
                let n = self.node(node);
                if n.paused_until.is_some_and(|until| until <= now) {
                    n.paused_until = None;
                    self.after_call(node);
                }
            }
        }
        self.check_leaders()?;
        self.check_applied()
    }

    /// After any call into a node's core: persist, send its messages, re-arm its timer.
    fn after_call(&mut self, id: NodeId) {
        let now = self.now;
        let mut outbox = Vec::new();
        let timer_local;
        {
            let n = self.node(id);
            let Some(raft) = n.raft.as_mut() else { return };
            n.persisted = (raft.hard_state(), raft.log().to_vec());
            while let Some(m) = raft.poll_message() {
                outbox.push(m);
            }
            timer_local = raft.poll_timeout();
            n.timer_generation += 1;
        }
        for (to, msg) in outbox {
            self.send(id, to, msg);
        }
        let n = self.node(id);
        let at = n.true_time(timer_local).max(now);
        let generation = n.timer_generation;
        self.schedule_at(
            at,
            Event::Timer {
                node: id,
                generation,
            },
        );
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Message) {
        if from == to || self.blocked.contains(&(from, to)) {
            return;
        }
        if self.rng.gen_bool(LOSS) {
            return;
        }
        let copies = if self.rng.gen_bool(DUPLICATION) { 2 } else { 1 };
        for _ in 0..copies {
            let mut latency = self
                .rng
                .gen_range(LATENCY_MIN.as_micros()..=LATENCY_MAX.as_micros());
            if self.rng.gen_bool(SPIKE_PROBABILITY) {
                latency += self.rng.gen_range(0..=SPIKE_MAX.as_micros());
            }
            let msg = msg.clone();
            self.schedule(
                Duration::from_micros(latency),
                Event::Deliver { to, from, msg },
            );
        }
    }

    fn propose(&mut self) {
        let now = self.now;
        let settle = Instant::ZERO + self.config.safety_phase + LIVENESS_SETTLE;
        // Whichever running node believes it leads (a paused one cannot take requests).
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.paused_until.is_none())
            .filter(|n| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .map(|n| n.id)
            .collect();
        for id in leaders {
            self.proposals += 1;
            let data = self.proposals.to_be_bytes().to_vec();
            let n = self.node(id);
            let local = n.local(now);
            let raft = n.raft.as_mut().expect("running");
            if let Ok(index) = raft.propose(local, data) {
                if now >= settle && self.liveness_index.is_none() {
                    self.liveness_index = Some(index);
                }
            }
            self.after_call(id);
        }
    }

    fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.raft.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn inject_fault(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        match self.rng.gen_range(0..7) {
            // Symmetric partition into two groups.
            0 => {
                self.blocked.clear();
                let split: Vec<bool> = ids.iter().map(|_| self.rng.gen_bool(0.5)).collect();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if split[i] != split[j] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
                self.report.partitions += 1;
            }
            // Asymmetric: one node can send but not receive, or the reverse.
            1 => {
                let victim = ids[self.rng.gen_range(0..ids.len())];
                let inbound = self.rng.gen_bool(0.5);
                for &other in &ids {
                    if other != victim {
                        let pair = if inbound {
                            (other, victim)
                        } else {
                            (victim, other)
                        };
                        self.blocked.insert(pair);
                    }
                }
                self.report.partitions += 1;
            }
            // Partial: two nodes cannot talk to each other, both talk to the rest.
            2 => {
                let a = ids[self.rng.gen_range(0..ids.len())];
                let b = ids[self.rng.gen_range(0..ids.len())];
                if a != b {
                    self.blocked.insert((a, b));
                    self.blocked.insert((b, a));
                }
                self.report.partitions += 1;
            }
            // Isolate whoever leads.
            3 => {
                let leaders: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|n| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
                    .map(|n| n.id)
                    .collect();
                for l in leaders {
                    for &other in &ids {
                        if other != l {
                            self.blocked.insert((l, other));
                            self.blocked.insert((other, l));
                        }
                    }
                }
                self.report.partitions += 1;
            }
            // Crash a node (keeping a majority up most of the time), restart it later.
            4 => {
                let running = self.running();
                if running.len() * 2 > ids.len() + 1 || self.rng.gen_bool(0.2) {
                    let victim = running[self.rng.gen_range(0..running.len())];
                    self.node(victim).raft = None;
                    self.report.crashes += 1;
                    let down = Duration::from_millis(self.rng.gen_range(50..2_000));
                    self.schedule(down, Event::Restart { node: victim });
                }
            }
            // Pause a node (a GC pause, a stopped VM): it wakes believing what it believed.
            5 => {
                let victim = ids[self.rng.gen_range(0..ids.len())];
                let until = self.now + Duration::from_millis(self.rng.gen_range(50..1_500));
                let n = self.node(victim);
                if n.paused_until.is_none() {
                    n.paused_until = Some(until);
                    self.report.pauses += 1;
                    self.schedule_at(until, Event::Resume { node: victim });
                }
            }
            // Heal the network for a while.
            _ => self.blocked.clear(),
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.blocked.clear();
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            if self.node(id).raft.is_none() {
                self.start_node(id);
            }
            if self.node(id).paused_until.is_some() {
                self.node(id).paused_until = None;
                self.after_call(id);
            }
        }
    }

    /// Election safety, and leader completeness at the moment a node becomes leader.
    fn check_leaders(&mut self) -> Result<(), SimFailure> {
        for i in 0..self.nodes.len() {
            let (id, term, newly) = {
                let n = &self.nodes[i];
                let Some(raft) = n.raft.as_ref() else {
                    continue;
                };
                if raft.role() != Role::Leader {
                    continue;
                }
                (n.id, raft.term(), n.was_leader_in != Some(raft.term()))
            };
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    return Err(self.fail(format!(
                        "election safety: nodes {other} and {id} both lead term {term}"
                    )));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    self.report.leaders_elected += 1;
                }
            }
            if newly {
                self.nodes[i].was_leader_in = Some(term);
                let log = self.nodes[i].raft.as_ref().expect("running").log();
                for (&index, (t, data)) in &self.applied {
                    let held = log.get(index as usize - 1);
                    if held.is_none_or(|e| e.term != *t || &e.data != data) {
                        return Err(self.fail(format!(
                            "leader completeness: node {id}, leader of term {term}, lacks \
                             applied entry {index} (term {t})"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// State machine safety: every node applies the same entries, in order.
    fn check_applied(&mut self) -> Result<(), SimFailure> {
        for i in 0..self.nodes.len() {
            loop {
                let id = self.nodes[i].id;
                let Some(raft) = self.nodes[i].raft.as_mut() else {
                    break;
                };
                let Some(entry) = raft.poll_committed() else {
                    break;
                };
                let expected = self.nodes[i].applied + 1;
                if entry.index != expected {
                    return Err(self.fail(format!(
                        "node {id} applied index {} after {}",
                        entry.index,
                        expected - 1
                    )));
                }
                self.nodes[i].applied = entry.index;
                match self.applied.get(&entry.index) {
                    Some((t, d)) if (*t, d) != (entry.term, &entry.data) => {
                        return Err(self.fail(format!(
                            "state machine safety: node {id} applied (term {}) at index {} where \
                             another applied (term {t})",
                            entry.term, entry.index
                        )));
                    }
                    Some(_) => {}
                    None => {
                        self.applied
                            .insert(entry.index, (entry.term, entry.data.clone()));
                        self.report.entries_applied += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Lease safety: two nodes never both hold a valid lease at one instant of true time.
    fn check_leases(&self) -> Result<(), SimFailure> {
        let holders: Vec<(NodeId, u64)> = self
            .nodes
            .iter()
            .filter_map(|n| {
                let raft = n.raft.as_ref()?;
                raft.lease_valid(n.local(self.now))
                    .then(|| (n.id, raft.term()))
            })
            .collect();
        if holders.len() > 1 {
            return Err(self.fail(format!(
                "lease safety: nodes {holders:?} (id, term) all hold a valid leader lease"
            )));
        }
        Ok(())
    }

    fn check_liveness(&self) -> Result<(), SimFailure> {
        let Some(index) = self.liveness_index else {
            return Err(self.fail(format!(
                "liveness: no entry was accepted by a leader within {:?} after healing",
                LIVENESS_SETTLE
            )));
        };
        for n in &self.nodes {
            if n.applied < index {
                return Err(self.fail(format!(
                    "liveness: node {} applied only up to {} of entry {index}, proposed {:?} \
                     after healing",
                    n.id, n.applied, LIVENESS_SETTLE
                )));
            }
        }
        Ok(())
    }
}
