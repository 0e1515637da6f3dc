//! The chaos suite (`udplock chaos`): a Jepsen-style run of real `udplock server` processes
//! on loopback, a recorded client workload, faults on a seeded schedule, and the simulator's
//! checkers over the history.
//!
//! How data moves:
//! - [`schedule`] (pure) turns a seed into episodes of faults: SIGKILL and restart from the
//!   data directory (in `memory` durability a restart without state), SIGSTOP/SIGCONT,
//!   partitions between node pairs (one-way too), a node isolated, loss/duplication/delay
//!   (delay reorders), total restarts.
//! - [`relay`] (one thread) stands between every pair of nodes and between clients and nodes:
//!   nodes bind 127.0.1.x and are listed at 127.0.0.x, where the relay listens, so it can drop,
//!   delay and duplicate datagrams without `sch_netem` or `iptables`.
//! - With `--partitions iptables` ([`Partitions::Iptables`]), [`iptables`] makes the
//!   partitions instead: the nodes are listed at the addresses they bind and talk to each
//!   other directly, and `DROP` rules in the kernel cut node pairs; the relay then carries
//!   the clients' traffic only (and degrades that alone). Its module docs say why.
//! - [`cluster`] starts, kills, pauses and resumes the processes.
//! - [`workload`] runs client threads (the crate's blocking [`crate::Client`]) and records
//!   every operation in a [`history::History`] (pure), whose check runs the simulator's mutual
//!   exclusion and fencing-order checkers (`crate::sim::check`).
//! - After the last episode everything is healed and every resource must be acquirable
//!   within [`LIVENESS_BOUND_MS`] (liveness).
//!
//! The seed fixes the schedule and the relay's and clients' draws; the processes' timing
//! cannot be replayed, so a failing seed reproduces the same faults, not the same
//! interleaving. The run directory (nodes' stderr) is kept after a failure.

pub mod cluster;
pub mod history;
pub mod iptables;
pub mod relay;
pub mod schedule;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::cluster::{Cluster, NodeSettings};
use self::history::{History, Op, OpKind, OpResult};
use self::iptables::Firewall;
use self::relay::Relay;
use self::schedule::{Episode, Fault};
use self::workload::{Workload, TTL_MS};
use crate::BootInstant;

/// After healing, every resource must be acquirable within this (ms): elections (pre-vote
/// and all), a restarted node catching up, the holds of the workload expiring (TTL), and
/// generous slack for a loaded machine.
pub const LIVENESS_BOUND_MS: u64 = 30_000;
/// Before the faults start, the new cluster must grant every resource within this (ms).
pub const READY_BOUND_MS: u64 = 60_000;

/// What makes a run's partitions (and isolations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Partitions {
    /// The relay drops the datagrams of a blocked node pair; nothing outside the process
    /// changes, so it runs anywhere.
    #[default]
    Relay,
    /// `DROP` rules in the kernel ([`iptables`]), the nodes talking directly; needs the
    /// `iptables` program and root (or CAP_NET_ADMIN).
    Iptables,
}

impl Partitions {
    pub fn name(self) -> &'static str {
        match self {
            Partitions::Relay => "relay",
            Partitions::Iptables => "iptables",
        }
    }
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// 3 to 5.
    pub nodes: usize,
    pub duration: Duration,
    /// `fsync`, `os` or `memory`.
    pub durability: String,
    /// Client threads.
    pub clients: usize,
    /// Hot resources the clients contend for.
    pub resources: usize,
    pub shards: u32,
    pub election_timeout: String,
    /// A joined cluster (node 1 bootstraps, the others join) instead of static `--peers`.
    pub joined: bool,
    /// `--dead-after` of a joined cluster's nodes (None: the default).
    pub dead_after: Option<String>,
    /// What cuts node pairs apart.
    pub partitions: Partitions,
    /// The `udplock` binary the nodes run.
    pub bin: PathBuf,
    /// Node `i` is listed at 127.0.0.`(first_host + i)` (the relay) and binds
    /// 127.0.1.`(first_host + i)`; with [`Partitions::Iptables`] it is listed there too.
    pub first_host: u8,
    /// Keep the run directory after a run without violations too.
    pub keep: bool,
    /// For checking the checkers only: the clients believe this much (ms) past the end of
    /// every lease, breaking the client rule of spec §6.4, so a run with holds that expire
    /// unreleased must report mutual exclusion violations. 0 in every real run.
    pub unsafe_believe_extra_ms: u64,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub nodes: usize,
    pub joined: bool,
    /// `--dead-after` as given (the schedule's reproduction needs it).
    pub dead_after: Option<String>,
    pub durability: String,
    pub partitions: Partitions,
    pub elapsed: Duration,
    /// The configured duration of faults (the schedule depends on it).
    pub duration: Duration,
    pub ops: usize,
    pub ops_by_kind: BTreeMap<String, u64>,
    pub grants_valid: usize,
    /// Valid grants whose previous holder's lease ran out unreleased (the lease rule tested).
    pub expiry_handovers: usize,
    pub errors: BTreeMap<String, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub relay: BTreeMap<&'static str, u64>,
    /// What the iptables rules did (empty with [`Partitions::Relay`]).
    pub iptables: BTreeMap<&'static str, u64>,
    /// How long after healing every resource was acquired again (None: not within the bound).
    pub recovered_in: Option<Duration>,
    pub violations: Vec<String>,
    pub dir: PathBuf,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos: seed {}, {} nodes ({}), durability {}, partitions by {}, {:.1} s",
            self.seed,
            self.nodes,
            if self.joined {
                "joined"
            } else {
                "static --peers"
            },
            self.durability,
            self.partitions.name(),
            self.elapsed.as_secs_f64()
        )?;
        let kinds: Vec<String> = self
            .ops_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "ops: {} ({})", self.ops, kinds.join(", "))?;
        writeln!(
            f,
            "grants (valid on receipt): {}, {} of them after the previous holder's lease ran \
             out unreleased",
            self.grants_valid, self.expiry_handovers
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "faults: {} ({})",
            self.faults.values().sum::<u64>(),
            faults.join(", ")
        )?;
        let relay: Vec<String> = self.relay.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(f, "relay: {}", relay.join(", "))?;
        if !self.iptables.is_empty() {
            let rules: Vec<String> = self
                .iptables
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "iptables: {}", rules.join(", "))?;
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "client errors: {}", errors.join(", "))?;
        match self.recovered_in {
            Some(d) => writeln!(
                f,
                "liveness: every resource acquired {:.1} s after healing",
                d.as_secs_f64()
            )?,
            None => writeln!(f, "liveness: NOT every resource acquired after healing")?,
        }
        writeln!(f, "violations: {}", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        if !self.violations.is_empty() {
            writeln!(
                f,
                "reproduce the schedule: udplock chaos --seed {} --nodes {}{}{} --durability {} \
                 --partitions {} --duration {}ms (node logs in {})",
                self.seed,
                self.nodes,
                if self.joined { " --joined" } else { "" },
                self.dead_after
                    .as_ref()
                    .map_or(String::new(), |d| format!(" --dead-after {d}")),
                self.durability,
                self.partitions.name(),
                self.duration.as_millis(),
                self.dir.display()
            )?;
        }
        Ok(())
    }
}

/// Sleeps until `at` (at once if it passed).
fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

struct Run {
    cluster: Cluster,
    relay: Relay,
    /// With [`Partitions::Iptables`]: the rules that cut node pairs (else the relay does).
    firewall: Option<Firewall>,
    memory: bool,
    faults: BTreeMap<&'static str, u64>,
    violations: Vec<String>,
}

impl Run {
    fn inject(&mut self, fault: Fault) {
        *self.faults.entry(fault.kind(self.memory)).or_default() += 1;
        match fault {
            Fault::Kill { node } => self.cluster.kill(node),
            Fault::Pause { node } => self.cluster.pause(node),
            Fault::Partition { from, to, one_way } => {
                self.block(from, to);
                if !one_way {
                    self.block(to, from);
                }
            }
            Fault::Isolate { node } => {
                for other in (0..self.cluster.len()).filter(|&o| o != node) {
                    self.block(node, other);
                    self.block(other, node);
                }
            }
            Fault::Network(degrade) => self.relay.set_degrade(degrade),
            Fault::TotalRestart => {
                for node in 0..self.cluster.len() {
                    self.cluster.kill(node);
                }
            }
        }
    }

    /// From now on no datagram from node `from` reaches node `to`. A rule the kernel
    /// refused is a broken run, reported as a violation so that it cannot pass unseen.
    fn block(&mut self, from: usize, to: usize) {
        match self.firewall.as_mut() {
            None => self.relay.block(from, to),
            Some(firewall) => {
                let (a, b) = (ipv4(self.relay.private[from]), ipv4(self.relay.private[to]));
                if let Err(e) = firewall.block(a, b) {
                    self.violations.push(format!("harness: {e}"));
                }
            }
        }
    }

    /// Lifts every fault: the network whole, every node resumed and running.
    fn heal(&mut self) {
        self.relay.heal();
        if let Some(firewall) = self.firewall.as_mut() {
            if let Err(e) = firewall.heal() {
                self.violations.push(format!("harness: {e}"));
            }
        }
        for node in 0..self.cluster.len() {
            self.cluster.resume(node);
        }
        self.crashed();
        for node in 0..self.cluster.len() {
            if !self.cluster.is_up(node) {
                if let Err(e) = self.cluster.spawn(node, false) {
                    self.violations
                        .push(format!("node {} not restarted: {e}", node + 1));
                }
            }
        }
    }

    /// A node that exited although nobody killed it crashed: a violation.
    fn crashed(&mut self) {
        for (node, status) in self.cluster.exited() {
            self.violations.push(format!(
                "node {} exited on its own ({status}); see its stderr in {}",
                node + 1,
                self.cluster.dir().display()
            ));
        }
    }
}

/// The IPv4 address of a node's socket (the relay only makes IPv4 ones).
fn ipv4(addr: SocketAddr) -> Ipv4Addr {
    match addr.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => unreachable!("the relay binds 127.0.x.y, not {ip}"),
    }
}

/// Acquires and releases every resource with a fresh client, recording the grants as client
/// `client` in `history`; Ok(time taken) once all were granted, Err after `bound`.
fn probe(workload: &Workload, client: usize, bound: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let c = workload.client().map_err(|e| e.to_string())?;
    let id = format!("chaos-probe-{client}");
    for (resource, name) in workload.resources.iter().enumerate() {
        loop {
            if started.elapsed() > bound {
                return Err(format!(
                    "liveness: {name} not acquired within {} ms after healing",
                    bound.as_millis()
                ));
            }
            let invoke_us = workload.us(BootInstant::now());
            // Wait out the workload's holds (a TTL) and then some.
            let result = c.acquire(name, &id, u64::from(TTL_MS) * 3, Some(TTL_MS));
            let complete_us = workload.us(BootInstant::now());
            let op_result = match &result {
                Ok(lease) => OpResult::Granted {
                    token: lease.fencing_token,
                    hold_count: lease.hold_count,
                    lease_ms: lease.ttl_ms,
                    valid_until_us: workload.us(lease.valid_until),
                },
                Err(e) => OpResult::Failed(e.to_string()),
            };
            let op = Op {
                client,
                resource,
                kind: OpKind::Acquire,
                invoke_us,
                complete_us,
                result: op_result,
            };
            workload.history.lock().expect("history").record(op, None);
            if result.is_ok() {
                let at = workload.us(BootInstant::now());
                workload
                    .history
                    .lock()
                    .expect("history")
                    .cut(client, resource, at);
                // Whatever its outcome: the hold expires after its TTL anyway.
                let _ = c.release(name, &id);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(started.elapsed())
}

/// Runs started by this process so far: the last part of a run directory's name.
static RUNS_STARTED: AtomicU32 = AtomicU32::new(0);

/// The directory of a new run with `seed` (data, key, the nodes' stderr): its own even when
/// the process runs several at once with one seed.
fn run_dir(seed: u64) -> PathBuf {
    let k = RUNS_STARTED.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("udplock-chaos-{}-{seed}-{k}", std::process::id()))
}

/// Runs the whole suite as `config` says.
pub fn run(config: &Config) -> Result<Summary, String> {
    if !(3..=5).contains(&config.nodes) {
        return Err(format!("--nodes must be 3 to 5, got {}", config.nodes));
    }
    let memory = config.durability == "memory";
    if memory && config.joined {
        return Err(
            "a joined cluster's first node needs a data directory: --joined needs \
                    --durability fsync or os"
                .into(),
        );
    }
    let dir = run_dir(config.seed);
    let _ = std::fs::remove_dir_all(&dir);
    // First, so that a machine without iptables fails before anything started.
    let firewall = match config.partitions {
        Partitions::Relay => None,
        Partitions::Iptables => Some(Firewall::start(iptables::IPTABLES, config.seed)?),
    };
    let relay = Relay::start(config.nodes, config.first_host, config.seed)
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    // With iptables the nodes are listed where they bind and talk directly (iptables's
    // module docs); the clients go through the relay either way.
    let node_listed = match config.partitions {
        Partitions::Relay => &relay.listed,
        Partitions::Iptables => &relay.private,
    };
    let cluster = Cluster::start(
        NodeSettings {
            bin: config.bin.clone(),
            dir: dir.clone(),
            durability: config.durability.clone(),
            shards: config.shards,
            election_timeout: config.election_timeout.clone(),
            joined: config.joined,
            dead_after: config.dead_after.clone(),
        },
        node_listed,
        &relay.private,
    )?;
    let resources: Vec<String> = (0..config.resources)
        .map(|i| format!("chaos/hot-{i}"))
        .collect();
    let workload = Arc::new(Workload {
        servers: relay.listed.clone(),
        shards: config.shards,
        resources: resources.clone(),
        history: Arc::new(Mutex::new(History::new(resources))),
        errors: Arc::new(Mutex::new(BTreeMap::new())),
        start: BootInstant::now(),
        stop: Arc::new(AtomicBool::new(false)),
        believe_extra_us: config.unsafe_believe_extra_ms * 1_000,
    });
    let mut run = Run {
        cluster,
        relay,
        firewall,
        memory,
        faults: BTreeMap::new(),
        violations: Vec::new(),
    };
    let probe_client = config.clients;
    probe(
        &workload,
        probe_client,
        Duration::from_millis(READY_BOUND_MS),
    )
    .map_err(|e| {
        format!(
            "the new cluster never became ready: {e} (logs in {})",
            dir.display()
        )
    })?;
    let started = Instant::now();
    let mut threads = Vec::new();
    for idx in 0..config.clients {
        let worker = workload
            .worker(idx, config.seed)
            .map_err(|e| format!("cannot make a client: {e}"))?;
        let w = workload.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("chaos-client-{idx}"))
                .spawn(move || w.run(worker))
                .map_err(|e| format!("cannot start a client thread: {e}"))?,
        );
    }
    let episodes: Vec<Episode> = schedule::generate(
        config.seed,
        config.nodes,
        memory,
        config.duration.as_millis() as u64,
    );
    for episode in &episodes {
        sleep_until(started + Duration::from_millis(episode.start_ms));
        run.crashed();
        for &fault in &episode.faults {
            run.inject(fault);
        }
        sleep_until(started + Duration::from_millis(episode.start_ms + episode.hold_ms));
        run.heal();
    }
    sleep_until(started + config.duration);
    run.heal();
    workload.stop.store(true, Ordering::Relaxed);
    for t in threads {
        if t.join().is_err() {
            run.violations.push("a client thread panicked".into());
        }
    }
    let recovered_in = match probe(
        &workload,
        probe_client,
        Duration::from_millis(LIVENESS_BOUND_MS),
    ) {
        Ok(d) => Some(d),
        Err(e) => {
            run.violations.push(e);
            None
        }
    };
    run.crashed();
    run.violations.extend(run.cluster.panics());
    let history = workload.history.lock().expect("history");
    run.violations.extend(history.check());
    let mut ops_by_kind = BTreeMap::new();
    for op in &history.ops {
        let ok = !matches!(op.result, OpResult::Failed(_));
        let key = format!("{:?} {}", op.kind, if ok { "ok" } else { "failed" });
        *ops_by_kind.entry(key).or_default() += 1;
    }
    let s = &run.relay.stats;
    let relay_counts = BTreeMap::from([
        ("forwarded", s.forwarded.load(Ordering::Relaxed)),
        (
            "dropped by partition",
            s.dropped_partition.load(Ordering::Relaxed),
        ),
        ("dropped by loss", s.dropped_loss.load(Ordering::Relaxed)),
        ("duplicated", s.duplicated.load(Ordering::Relaxed)),
        ("delayed", s.delayed.load(Ordering::Relaxed)),
        ("client mappings", s.nat_made.load(Ordering::Relaxed)),
        (
            "client mappings reused",
            s.nat_reused.load(Ordering::Relaxed),
        ),
    ]);
    let iptables_counts = match &run.firewall {
        None => BTreeMap::new(),
        Some(firewall) => BTreeMap::from([
            ("rules at INPUT", firewall.rules_input),
            ("rules at OUTPUT", firewall.rules_output),
            ("datagrams dropped", firewall.dropped),
        ]),
    };
    let summary = Summary {
        seed: config.seed,
        nodes: config.nodes,
        joined: config.joined,
        dead_after: config.dead_after.clone(),
        durability: config.durability.clone(),
        partitions: config.partitions,
        elapsed: started.elapsed(),
        duration: config.duration,
        ops: history.ops.len(),
        ops_by_kind,
        grants_valid: history.grants_valid(),
        expiry_handovers: history.expiry_handovers(),
        errors: workload.errors.lock().expect("errors").clone(),
        faults: run.faults.clone(),
        relay: relay_counts,
        iptables: iptables_counts,
        recovered_in,
        violations: run.violations.clone(),
        dir: dir.clone(),
    };
    drop(history);
    drop(run);
    if summary.violations.is_empty() && !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs of one process with one seed (the integration tests run several at once)
    /// must not share a directory: one's end deleted the other's, whose restarts then
    /// failed ("cannot create a stderr file").
    #[test]
    fn runs_of_one_process_get_their_own_directories() {
        assert_ne!(run_dir(5), run_dir(5));
    }
}
