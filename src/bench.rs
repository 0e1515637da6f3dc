//! The benchmark runner behind `udplock bench` and `cargo bench`.
//!
//! Every figure is put beside the floor measured in the same run: the raw UDP round trip
//! between the same kinds of threads (a blocking echo thread that owns its socket, like a
//! node's event loop, and the calling thread blocking in `recv`, like the client). Latencies
//! go into hdrhistograms (microsecond resolution is too coarse here, so they record
//! nanoseconds) and are printed as p50/p90/p99/p99.9/max in µs, with ops/s and each p50 as a
//! ratio to the raw round trip's p50.
//!
//! # What is measured
//!
//! - By default, an **embedded replicated cluster**: [`BenchConfig::nodes`] (3) cluster nodes
//!   started in this process by [`start_local_cluster`], in memory mode, with
//!   [`BenchConfig::shards`] shards; each node is its own event-loop thread
//!   (`udplock-node-{id}`) with its own loopback socket, as `udplock dev` runs them. The
//!   clients know every node and the cluster's shard count, so each call goes straight to its
//!   shard's leader once the client has learnt it. Before any phase the runner waits until
//!   the leadership has settled: every shard has exactly one leader, every node names it, and
//!   it is the shard's preferred node (a fresh cluster's leaders hand their shards to the
//!   preferred nodes after `SPREAD_AFTER`, 1 s, and each hand-over is an election). So no
//!   figure includes an election; each phase still counts the shards whose term changed while
//!   it ran (`ELECTIONS` in the notes, `elections` in JSON), and the report notes how the
//!   leaders spread over the nodes.
//! - `nodes = 1`: the unreplicated single [`Node`], measured exactly as before the cluster.
//! - [`BenchConfig::servers`]: a running service; every address goes to the client.
//!
//! # Placements, and what they mean for a replicated request's floor
//!
//! The phases run once per [`Placement`]: the client threads on one CPU, and the echo and
//! every node thread on the "server CPU" of the placement, so each figure is divided by the
//! floor of its own placement (like with like). On a 2-vCPU VM a round trip costs ~11 µs
//! when both ends share a vCPU and ~55 µs across vCPUs (mostly waking an idle vCPU), and a
//! replicated acquire is four one-way hops (client→leader, leader→follower, follower→leader,
//! leader→client), so the placement decides what the floor of that acquire is:
//!
//! - `one cpu`: the client, the echo and all the nodes share vCPU 0. Every hop is a same-CPU
//!   hop, like the raw round trip: the floor is ≈ 2× the raw RTT, the model of the design
//!   brief. The leader also sends its append to the second follower and handles its ack,
//!   which on a shared CPU competes with the critical path.
//! - `two cpus`: the client on vCPU 0, the echo and *all* the nodes on vCPU 1. The
//!   client↔leader round trip crosses CPUs, like this placement's raw RTT, but the
//!   leader↔follower round trip does not (the nodes share vCPU 1): the floor is about one
//!   cross-CPU plus one same-CPU round trip, ≈ 1.2× this placement's raw RTT, not 2×. A ratio
//!   measured here flatters replication compared with nodes on separate machines; the
//!   `one cpu` ratio is the one to hold against the 2× model.
//!
//! # Phases
//!
//! 1. `raw udp rtt` — echo of a 76-byte datagram (the size of an acquire and its reply),
//!    interleaved with phase 2 (one echo, one acquire, one release per iteration) so that the
//!    floor and the figures divided by it are measured under the same conditions.
//! 2. `acquire`, `release`, `acquire+release` — one client, uncontended, on distinct
//!    resources (spread over every shard), at the held-lock scale asked for (`--held`,
//!    default 1,000 other locks held). Issue 3's target for a replicated cluster: acquire p50
//!    ≤ 2.5× the raw RTT p50 (floor ≈ 2×, see above).
//! 3. `throughput (N clients)` — N client threads, each with its own [`Client`] (its own
//!    socket and session, like N independent programs: a shared `Client` would add its
//!    receive hand-over between threads to what is measured), loop acquire+release on
//!    resources no other client uses (16 each, so the load spreads over shards and leaders)
//!    for `--throughput-ms`. One op is one acquire+release pair; ops/s counts pairs of all
//!    clients, p50/p99 are per pair. Each run after the first prints its ops/s as a multiple
//!    of the first run's (default 1 client); target for 64 clients: ≥ 4× through batching
//!    (one Append carries many clients' commands).
//! 4. `handoff (N clients)` — N clients, each its own `Client` and thread, loop
//!    acquire/release on one resource: the latency from a holder's release call to the next
//!    holder's grant, grants/s, FIFO order (each client's grants are counted; FIFO hand-off
//!    gives every client the same share), and, embedded, the node CPU time per grant: the
//!    *sum over every node thread* of this process (`udplock-node*`), so with a cluster it is
//!    the leader's work plus the followers', i.e. the cluster's CPU per grant.
//! 5. `failover` — embedded clusters of 3 nodes or more only. Each sample starts a *fresh*
//!    cluster (a memory-mode node must not restart, so a killed node cannot rejoin; a new
//!    cluster per sample also starts every sample from the same state), waits for its
//!    leaders, acquires and releases one resource (so the client knows the shard's leader),
//!    kills that shard's leader (`ClusterNode::shutdown`: its thread and socket are gone), and
//!    loops acquires on the resource. A sample is the time from the kill to the first
//!    successful acquire: the client noticing the dead leader (unanswered copies), the
//!    followers' election timeout, a pre-vote and a vote round, the new leader's first
//!    commit, and the client finding it. Reported in µs (the table's unit) with p50 and max in
//!    ms beside Raft's `election_timeout_max`; target: p50 ≤ 2× it.
//!
//! 6. `peer keys` — embedded clusters of 2 nodes or more: what authenticating node-to-node
//!    datagrams costs (spec §8.11, issue 8's targets). Two fresh clusters side by side on the
//!    server CPU, one with a generated cluster key and one without; each iteration one raw
//!    round trip and one acquire+release on each cluster, in alternating order, so both are
//!    measured under the same conditions against the same floor. Rows: the floor, `acquire,
//!    peer keys` and `acquire, no keys` (target: the keyed p50 within 5 % of the other), each
//!    with its cluster's node CPU per grant (every node's threads, per acquire+release, less
//!    the cluster's idle work for as long, measured before). Then
//!    forged datagrams sent from a clone of node 1's own socket (so they come from a listed
//!    node's address and reach the MAC check) to node 2, a small one and a full one, each
//!    sealed with the right key id and a flipped MAC bit: node 2's CPU per dropped forgery,
//!    net of its idle work, in the notes beside the legitimate request's.
//!
//! Resident memory per held lock (`--held` ≥ 100,000, embedded only) is the process's growth
//! divided by the number of replicas in the process: with a cluster every node holds its own
//! copy of every table, so the figure is labelled "per replica".

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{Client, ClientConfig};
use crate::cluster::keys::KeySet;
use crate::cluster::{start_local_cluster, ClusterConfig, ClusterNode};
use crate::core::peer_auth::AuthDrop;
use crate::core::raft::{NodeId, Role};
use crate::core::shard::SPREAD_AFTER;
use crate::error::LockError;
use crate::node::{Node, NodeConfig};
use udplock_protocol::ClusterKey;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// A running service to measure (every node's address); empty starts an embedded one on
    /// loopback.
    pub servers: Vec<SocketAddr>,
    /// Embedded: nodes of the replicated cluster; 1 runs the unreplicated single node instead.
    pub nodes: usize,
    /// Shards of the embedded cluster, and the shard count the clients assume (for
    /// `servers`, it must match the service's to avoid redirects).
    pub shards: u32,
    /// Samples per latency phase.
    pub iterations: u64,
    /// Numbers of locks held by other clients while the uncontended phase runs (each value
    /// is a separate run, e.g. `[1_000, 1_000_000]`).
    pub held: Vec<u64>,
    /// Numbers of client threads of the throughput phase, one run each; later runs are
    /// compared with the first.
    pub throughput_clients: Vec<usize>,
    /// How long each throughput run lasts.
    pub throughput_ms: u64,
    /// Numbers of contending clients, one contention run each.
    pub contenders: Vec<usize>,
    /// How long each contention run lasts.
    pub contention_ms: u64,
    /// Failover samples (each a fresh embedded cluster); 0 skips the phase.
    pub failovers: u32,
    /// Print progress lines on stderr.
    pub progress: bool,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            servers: Vec::new(),
            nodes: 3,
            shards: crate::cluster::SHARDS_DEFAULT,
            iterations: 20_000,
            held: vec![1_000],
            throughput_clients: vec![1, 64],
            throughput_ms: 2_000,
            contenders: vec![4, 64],
            contention_ms: 2_000,
            failovers: 5,
            progress: true,
        }
    }
}

impl BenchConfig {
    /// What the run measures, in words (the table's title).
    pub fn target_label(&self) -> String {
        match (self.servers.as_slice(), self.nodes) {
            ([], 1) => "embedded single node (unreplicated)".to_string(),
            ([], n) => format!(
                "embedded {n}-node replicated cluster, {} shards, memory mode",
                self.shards
            ),
            ([one], _) => format!("service at {one}"),
            (all, _) => format!(
                "service at {} ({} shards assumed)",
                join_addrs(all),
                self.shards
            ),
        }
    }

    /// Refuses settings the runner cannot use.
    pub fn validate(&self) -> Result<(), LockError> {
        let invalid = |what: &str| Err(LockError::InvalidArgument(what.to_string()));
        if self.servers.is_empty() && self.nodes == 0 {
            return invalid("--nodes must be at least 1");
        }
        if self.shards == 0 || self.shards > udplock_protocol::SHARDS_MAX {
            return invalid("--shards is out of range (1 to 4096)");
        }
        if self.throughput_clients.contains(&0) || self.contenders.contains(&0) {
            return invalid("client counts must be at least 1");
        }
        Ok(())
    }

    fn embedded_cluster(&self) -> bool {
        self.servers.is_empty() && self.nodes >= 2
    }
}

fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One phase's summary, in microseconds.
#[derive(Clone, Debug)]
pub struct PhaseReport {
    pub name: String,
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// 0 where a rate means nothing (failover).
    pub ops_per_sec: f64,
    /// p50 divided by the raw round trip's p50 of the same run; 0 where it means nothing.
    pub p50_ratio_to_rtt: f64,
    /// The target for this figure, in words, where it has one.
    pub goal: Option<&'static str>,
    /// Node replicas in this process that the node CPU and memory figures cover (0: the
    /// service is elsewhere, no such figures).
    pub replicas: usize,
    /// Contention runs: CPU time of all node threads per grant, when embedded.
    pub server_cpu_us_per_grant: Option<f64>,
    /// Contention runs: fewest and most grants any one client got (equal shares = FIFO).
    pub grants_min_max: Option<(u64, u64)>,
    /// Held-scale runs: resident memory per held lock and per replica, when embedded.
    pub rss_bytes_per_held_lock: Option<f64>,
    /// Throughput runs after the first: (the first run's clients, this run's ops/s ÷ its).
    pub ops_ratio_to_first: Option<(usize, f64)>,
    /// Failover: Raft's maximum election timeout, and the p50 divided by it.
    pub election_timeout_max_ms: Option<f64>,
    pub p50_ratio_to_election_timeout_max: Option<f64>,
    /// Embedded cluster: shards whose term changed while the phase ran (an election, whose
    /// pause is then in the figures).
    pub elections: Option<usize>,
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub target: String,
    pub cpus: usize,
    pub phases: Vec<PhaseReport>,
    /// Facts that explain the figures: leader spread, election time, client retransmits.
    pub notes: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn summarize(name: &str, h: &Histogram<u64>, elapsed: Duration, rtt_p50_us: f64) -> PhaseReport {
    let us = |v: u64| v as f64 / 1_000.0;
    let p50 = us(h.value_at_quantile(0.5));
    PhaseReport {
        name: name.to_string(),
        samples: h.len(),
        p50_us: p50,
        p90_us: us(h.value_at_quantile(0.9)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        ops_per_sec: h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ratio_to_rtt: if rtt_p50_us > 0.0 {
            p50 / rtt_p50_us
        } else {
            0.0
        },
        goal: None,
        replicas: 0,
        server_cpu_us_per_grant: None,
        grants_min_max: None,
        rss_bytes_per_held_lock: None,
        ops_ratio_to_first: None,
        election_timeout_max_ms: None,
        p50_ratio_to_election_timeout_max: None,
        elections: None,
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// Where the threads run. On a small VM the placement decides the floor (a round trip costs
/// ~11 µs when both ends share a vCPU and ~55 µs across vCPUs, mostly the cost of waking an
/// idle vCPU), so the runner pins the threads and compares each figure with the floor of the
/// same placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No pinning (a service in other processes: its placement is not ours to choose).
    Unpinned,
    /// Client, echo and node threads all on the first allowed CPU.
    OneCpu,
    /// Client threads on the first allowed CPU, the echo and every node thread on the second.
    TwoCpus,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::OneCpu => "one cpu",
            Placement::TwoCpus => "two cpus",
        }
    }

    /// (client CPU, server-side CPU) among the CPUs this process may use, `None` = unpinned.
    fn cpus(self, allowed: &[usize]) -> Option<(usize, usize)> {
        match (self, allowed) {
            (Placement::Unpinned, _) | (_, []) => None,
            (Placement::OneCpu, [first, ..]) => Some((*first, *first)),
            (Placement::TwoCpus, [first, second, ..]) => Some((*first, *second)),
            (Placement::TwoCpus, [_]) => None,
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// The placements a run measures by default: both on a machine with two CPUs or more, one
/// CPU otherwise; unpinned for a service outside this process.
pub fn default_placements(config: &BenchConfig) -> Vec<Placement> {
    match (config.servers.is_empty(), allowed_cpus().len()) {
        (false, _) => vec![Placement::Unpinned],
        (true, 0 | 1) => vec![Placement::OneCpu],
        (true, _) => vec![Placement::OneCpu, Placement::TwoCpus],
    }
}

fn pin_current(cpu: Option<usize>) {
    if let Some(id) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            log::warn!("bench: could not pin a thread to CPU {id}; figures are unpinned");
        }
    }
}

/// Runs every phase, once per placement of `placements`, and returns the figures. `print`
/// receives each phase as it completes.
///
/// Each placement runs on a driver thread of its own, which pins itself (and so every client
/// thread it spawns) to the placement's client CPU: the caller's thread keeps its CPU mask,
/// so a second run in the same process still sees every CPU.
pub fn run(
    config: &BenchConfig,
    placements: &[Placement],
    mut print: impl FnMut(&PhaseReport) + Send,
) -> Result<BenchReport, LockError> {
    config.validate()?;
    let mut phases = Vec::new();
    let mut notes = Vec::new();
    let mut addrs = Vec::new();
    let allowed = allowed_cpus();
    for &placement in placements {
        let used = std::thread::scope(|s| {
            let driver = std::thread::Builder::new()
                .name("udplock-bench".into())
                .spawn_scoped(s, || {
                    run_placement(config, placement, &allowed, &mut notes, &mut |p| {
                        print(p);
                        phases.push(p.clone());
                    })
                })
                .map_err(|e| LockError::InternalError(format!("bench thread: {e}")))?;
            driver.join().expect("bench driver thread")
        })?;
        if !used.is_empty() {
            addrs = used;
        }
    }
    let target = if config.servers.is_empty() {
        format!("{} on {}", config.target_label(), join_addrs(&addrs))
    } else {
        // The floor is measured between two threads of this process; a service elsewhere is
        // not like for like: compare with care.
        format!("{} (raw RTT measured in-process)", config.target_label())
    };
    Ok(BenchReport {
        target,
        cpus: allowed.len(),
        phases,
        notes,
    })
}

/// The service a placement measures, when this process runs it.
enum Embedded {
    Node(Node),
    Cluster(Vec<ClusterNode>),
}

impl Embedded {
    fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Embedded::Node(n) => vec![n.local_addr()],
            Embedded::Cluster(nodes) => nodes.iter().map(ClusterNode::local_addr).collect(),
        }
    }

    fn replicas(&self) -> usize {
        match self {
            Embedded::Node(_) => 1,
            Embedded::Cluster(nodes) => nodes.len(),
        }
    }
}

/// The cluster node settings of every embedded cluster of a placement: its shard count, and
/// every node thread pinned to the placement's server CPU.
fn cluster_template(config: &BenchConfig, server_cpu: Option<usize>) -> ClusterConfig {
    let mut template = ClusterConfig::new(1, Vec::new());
    template.shards = config.shards;
    template.cpu = server_cpu;
    template
}

/// Longest wait for a fresh cluster to settle: elections take a few election timeouts at
/// most (a split vote costs one more), then leaders hand their shards to the preferred nodes
/// after [`SPREAD_AFTER`]; this only ends a broken run.
const SETTLE_WAIT_MAX: Duration = Duration::from_secs(10);

/// How the leaders of a fresh cluster stood once it settled.
struct Settled {
    took: Duration,
    /// Shards each node leads, by position in `nodes`.
    led: Vec<usize>,
    /// Shards whose leader is not the node the cluster prefers for it.
    off_preferred: usize,
}

/// Waits until the cluster's leadership is settled, so that no measured request meets an
/// election, a hint-less NOT_LEADER or a leadership transfer:
///
/// - every shard has exactly one node in the leader role, and every node names it;
/// - every shard is led by its preferred node ([`ClusterConfig::preferred_leader`]: a leader
///   hands its shard over after leading it for [`SPREAD_AFTER`], and each hand-over is an
///   election of a new term), or, should a hand-over not happen, no term has changed for
///   `SPREAD_AFTER` plus an election timeout.
fn wait_for_leaders(nodes: &[ClusterNode], template: &ClusterConfig) -> Result<Settled, LockError> {
    // `start_local_cluster` numbers its nodes 1, 2, ... in the order it returns them.
    let config = ClusterConfig {
        peers: (0..nodes.len())
            .map(|i| (i as NodeId + 1, nodes[i].local_addr()))
            .collect(),
        ..template.clone()
    };
    let quiet_for = std_duration(SPREAD_AFTER) + std_duration(template.raft.election_timeout_max);
    let started = Instant::now();
    let (mut terms, mut terms_since) = (Vec::new(), Instant::now());
    loop {
        let stats: Vec<_> = nodes.iter().map(ClusterNode::shard_stats).collect();
        let mut led = vec![0; nodes.len()];
        let mut off_preferred = 0;
        let agreed = (0..template.shards as usize).all(|s| {
            let leaders: Vec<usize> = (0..nodes.len())
                .filter(|&i| {
                    stats[i]
                        .get(s)
                        .is_some_and(|x| x.role == Some(Role::Leader))
                })
                .collect();
            let [leader] = leaders[..] else {
                return false;
            };
            let id = stats[leader][s].leader;
            led[leader] += 1;
            if id != Some(config.preferred_leader(s as u32)) {
                off_preferred += 1;
            }
            id.is_some()
                && stats
                    .iter()
                    .all(|node| node.get(s).map(|x| x.leader) == Some(id))
        });
        let now_terms = shard_terms(nodes);
        if now_terms != terms {
            (terms, terms_since) = (now_terms, Instant::now());
        }
        if agreed && (off_preferred == 0 || terms_since.elapsed() >= quiet_for) {
            return Ok(Settled {
                took: started.elapsed(),
                led,
                off_preferred,
            });
        }
        if started.elapsed() > SETTLE_WAIT_MAX {
            return Err(LockError::InternalError(format!(
                "the embedded cluster's leadership did not settle within {} s",
                SETTLE_WAIT_MAX.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn std_duration(d: crate::core::time::Duration) -> Duration {
    Duration::from_micros(d.as_micros())
}

/// Every shard's highest term any node knows.
fn shard_terms(nodes: &[ClusterNode]) -> Vec<u64> {
    let mut terms = Vec::new();
    for node in nodes {
        for (shard, stats) in node.shard_stats().iter().enumerate() {
            if terms.len() <= shard {
                terms.resize(shard + 1, 0);
            }
            terms[shard] = terms[shard].max(stats.term);
        }
    }
    terms
}

/// The position in `nodes` of the node that leads `shard`, if exactly one does.
fn leader_of(nodes: &[ClusterNode], shard: u32) -> Option<usize> {
    let leaders: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            nodes[i]
                .shard_stats()
                .get(shard as usize)
                .is_some_and(|s| s.role == Some(Role::Leader))
        })
        .collect();
    match leaders[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// Makes the clients of a run: every address, and the shard count.
#[derive(Clone)]
struct Servers {
    addrs: Vec<SocketAddr>,
    shards: u32,
}

impl Servers {
    fn client(&self) -> Result<Client, LockError> {
        let mut config = ClientConfig::new(self.addrs.clone());
        config.shards = self.shards;
        Client::new(config)
    }
}

/// One placement: the floor interleaved with uncontended acquire/release at each held-lock
/// scale, then throughput, contention and failover. Returns the addresses measured (empty:
/// the placement was skipped).
fn run_placement(
    config: &BenchConfig,
    placement: Placement,
    allowed: &[usize],
    notes: &mut Vec<String>,
    print: &mut dyn FnMut(&PhaseReport),
) -> Result<Vec<SocketAddr>, LockError> {
    let progress = |msg: &str| {
        if config.progress {
            eprintln!("bench [{}]: {msg}", placement.name());
        }
    };
    let cpus = placement.cpus(allowed);
    if placement != Placement::Unpinned && cpus.is_none() {
        progress("not enough CPUs for this placement; skipped");
        return Ok(Vec::new());
    }
    let (client_cpu, server_cpu) = (cpus.map(|c| c.0), cpus.map(|c| c.1));
    // Threads inherit the mask: clients spawned from this driver thread run on the client CPU
    // too.
    pin_current(client_cpu);
    let template = cluster_template(config, server_cpu);
    let embedded = match (config.servers.is_empty(), config.nodes) {
        (false, _) => None,
        (true, 1) => {
            let mut node_config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
            node_config.cpu = server_cpu;
            Some(Embedded::Node(Node::start(node_config).map_err(|e| {
                LockError::InternalError(format!("embedded node did not start: {e}"))
            })?))
        }
        (true, n) => {
            progress(&format!("starting a {n}-node cluster, waiting for leaders"));
            let nodes = start_local_cluster(n, &template).map_err(|e| {
                LockError::InternalError(format!("embedded cluster did not start: {e}"))
            })?;
            let settled = wait_for_leaders(&nodes, &template)?;
            notes.push(format!(
                "[{}] leadership settled {} ms after start ({} shard(s) not on their preferred \
                 node); shards led per node: {}",
                placement.name(),
                settled.took.as_millis(),
                settled.off_preferred,
                settled
                    .led
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("node {} {n}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Some(Embedded::Cluster(nodes))
        }
    };
    let servers = Servers {
        addrs: match &embedded {
            Some(e) => e.addrs(),
            None => config.servers.clone(),
        },
        shards: config.shards,
    };
    let replicas = embedded.as_ref().map_or(0, Embedded::replicas);
    // An election during a phase puts its pause into that phase's figures: each phase of an
    // embedded cluster counts the shards whose term changed while it ran.
    let cluster_nodes = match &embedded {
        Some(Embedded::Cluster(nodes)) => Some(&nodes[..]),
        _ => None,
    };
    let terms = || cluster_nodes.map(shard_terms);
    let elections = |before: &Option<Vec<u64>>| -> Option<usize> {
        let (before, now) = (before.as_ref()?, terms()?);
        Some(now.iter().zip(before).filter(|(a, b)| a != b).count())
    };
    let tag = |name: &str| format!("[{}] {name}", placement.name());
    let mut emit = |mut p: PhaseReport| {
        p.name = tag(&p.name);
        p.replicas = replicas;
        print(&p);
    };

    let echo = Echo::start(server_cpu)?;
    // The floor of the later runs: the raw round trip of the last uncontended run.
    let mut rtt_p50 = 0.0;
    let client = servers.client()?;
    let holder = servers.client()?;
    let mut held_now = 0;
    let held_runs = if config.held.is_empty() {
        &[0][..]
    } else {
        &config.held[..]
    };
    let rss_empty = embedded.as_ref().and_then(|_| rss_bytes());
    for &held in held_runs {
        progress(&format!("holding {held} locks for the uncontended phase"));
        hold_locks(
            &holder,
            held_now..held.max(held_now),
            Hold::Acquire,
            config.progress,
        )?;
        held_now = held_now.max(held);
        // Below this many locks the figure would mostly measure thread stacks and allocator
        // pages, not the table.
        const RSS_HELD_MIN: u64 = 100_000;
        let rss_per_lock = match (rss_empty, embedded.as_ref().and_then(|_| rss_bytes())) {
            (Some(a), Some(b)) if held >= RSS_HELD_MIN => {
                Some(b.saturating_sub(a) as f64 / held as f64 / replicas.max(1) as f64)
            }
            _ => None,
        };
        progress(&format!(
            "uncontended acquire/release, {} iterations",
            config.iterations
        ));
        let before = terms();
        let mut reports = uncontended(&client, &echo, config.iterations, held)?;
        let changed = elections(&before);
        for r in &mut reports {
            r.elections = changed;
        }
        rtt_p50 = reports[0].p50_us;
        reports[1].rss_bytes_per_held_lock = rss_per_lock;
        if config.embedded_cluster() {
            reports[1].goal = Some("replicated: p50 <= 2.5x rtt (floor ~2x)");
        }
        for r in reports {
            emit(r);
        }
    }
    let stats = client.stats();
    notes.push(format!(
        "[{}] uncontended client: {} retransmits, {} redirects, {} stray datagrams",
        placement.name(),
        stats.retransmits,
        stats.redirects,
        stats.dropped_datagrams
    ));

    // A service outside this process keeps serving after the run: give its locks back.
    progress(&format!("releasing the {held_now} held locks"));
    hold_locks(&holder, 0..held_now, Hold::Release, config.progress)?;

    let mut first: Option<(usize, f64)> = None;
    for &n in &config.throughput_clients {
        progress(&format!(
            "throughput: {n} clients, acquire+release on their own resources for {} ms",
            config.throughput_ms
        ));
        let before = terms();
        let mut r = throughput(
            &servers,
            n,
            Duration::from_millis(config.throughput_ms),
            rtt_p50,
        )?;
        r.elections = elections(&before);
        match first {
            None => first = Some((n, r.ops_per_sec)),
            Some((clients, ops)) => {
                r.ops_ratio_to_first = Some((clients, r.ops_per_sec / ops.max(1e-9)));
                // Issue 3's target is for the replicated service (one Append carrying many
                // clients' commands); the single node has no such batching to measure.
                let replicated = config.embedded_cluster() || config.servers.len() > 1;
                if replicated && clients == 1 && n >= 64 {
                    r.goal = Some(">= 4x the 1-client ops/s (batching)");
                }
            }
        }
        emit(r);
    }

    let node_threads = embedded.as_ref().map(|_| NodeCpu::find());
    for &n in &config.contenders {
        progress(&format!(
            "contention: {n} clients on one resource for {} ms",
            config.contention_ms
        ));
        let before = terms();
        let mut r = contention(
            &servers,
            n,
            Duration::from_millis(config.contention_ms),
            rtt_p50,
            node_threads.as_ref(),
        )?;
        r.elections = elections(&before);
        emit(r);
    }
    drop(echo);
    // The measured cluster stops before the failover clusters start: their threads would
    // otherwise compete with it for the same CPU.
    drop(embedded);

    if config.embedded_cluster() {
        progress("peer keys: acquire with and without a cluster key; forged datagrams");
        let before = notes.len();
        for r in peer_keys(config, &template, server_cpu, notes)? {
            emit(r);
        }
        for note in &mut notes[before..] {
            *note = format!("[{}] {note}", placement.name());
        }
    }

    if config.embedded_cluster() && config.nodes >= 3 && config.failovers > 0 {
        progress(&format!(
            "failover: {} fresh {}-node clusters, killing a shard's leader in each",
            config.failovers, config.nodes
        ));
        let (report, note) = failover(config, &template)?;
        emit(report);
        notes.push(format!("[{}] {note}", placement.name()));
    }
    Ok(servers.addrs)
}

/// The floor: a blocking echo thread that owns its socket (like the node's event loop) and a
/// socket of the calling thread's (like the client's), exchanging 76-byte datagrams (the size
/// of an acquire and of its reply).
struct Echo {
    sock: UdpSocket,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    /// Starts the echo thread, pinned to `cpu` if given (where the node runs).
    fn start(cpu: Option<usize>) -> Result<Echo, LockError> {
        let io = |e: std::io::Error| LockError::InternalError(format!("raw RTT socket: {e}"));
        let echo = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
        let to = echo.local_addr().map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("udplock-echo".into())
                .spawn(move || {
                    pin_current(cpu);
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Acquire) {
                        if let Ok((n, from)) = echo.recv_from(&mut buf) {
                            let _ = echo.send_to(&buf[..n], from);
                        }
                    }
                })
                .map_err(io)?
        };
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(io)?;
        Ok(Echo {
            sock,
            to,
            stop,
            thread: Some(thread),
        })
    }

    /// One round trip; `None` if the echo was lost (loopback does not lose, but never hang).
    fn round_trip(&self) -> Option<Duration> {
        let msg = [0x5Au8; udplock_protocol::REPLY_LEN_MIN];
        let mut buf = [0u8; 2048];
        let t0 = Instant::now();
        self.sock.send_to(&msg, self.to).ok()?;
        self.sock.recv_from(&mut buf).ok()?;
        Some(t0.elapsed())
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.sock.send_to(&[0], self.to);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    Acquire,
    Release,
}

/// Acquires (or releases) the locks `held/{i}` for `i` in `range` under a client id of its
/// own, so the table holds that many while the uncontended phase runs; four threads keep
/// several requests in flight.
fn hold_locks(
    client: &Client,
    range: std::ops::Range<u64>,
    what: Hold,
    progress: bool,
) -> Result<(), LockError> {
    const THREADS: u64 = 4;
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (range, done) = (range.clone(), &done);
                s.spawn(move || -> Result<(), LockError> {
                    for i in (range.start + t..range.end).step_by(THREADS as usize) {
                        let name = format!("held/{i}");
                        match what {
                            // Long TTL: the locks must outlive the whole run.
                            Hold::Acquire => client
                                .acquire(&name, "bench-holder", 1_000, Some(3_600_000))
                                .map(drop)?,
                            Hold::Release => client.release(&name, "bench-holder").map(drop)?,
                        }
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if progress && d % 100_000 == 0 {
                            eprintln!("bench:   {d} / {}", range.end - range.start);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("holder thread"))
    })
}

/// Phases 1 and 2: the raw round trip, acquire and release on distinct resources, one client
/// on the calling thread. The three are interleaved, one of each per iteration, so the floor
/// and the figures compared with it see the same scheduling and load: on a 2-vCPU machine a
/// round trip costs ~11 µs when both threads share a vCPU and ~55 µs across vCPUs, and
/// measuring them in separate phases could compare one case with the other.
fn uncontended(
    client: &Client,
    echo: &Echo,
    iterations: u64,
    held: u64,
) -> Result<Vec<PhaseReport>, LockError> {
    // Names made up front: formatting in the loop would be measured too.
    let names: Vec<String> = (0..1_024)
        .map(|i| format!("bench/uncontended/{i}"))
        .collect();
    let (mut rtt, mut acq, mut rel, mut pair) =
        (histogram(), histogram(), histogram(), histogram());
    let warmup = (iterations / 10).max(100);
    let mut lost = 0;
    let mut started = Instant::now();
    for i in 0..iterations + warmup {
        if i == warmup {
            started = Instant::now();
        }
        let round_trip = echo.round_trip();
        let name = &names[i as usize % names.len()];
        let t0 = Instant::now();
        client.acquire(name, "bench-client", 1_000, Some(10_000))?;
        let t1 = Instant::now();
        client.release(name, "bench-client")?;
        let t2 = Instant::now();
        if i >= warmup {
            match round_trip {
                Some(d) => record(&mut rtt, d),
                None => lost += 1,
            }
            record(&mut acq, t1 - t0);
            record(&mut rel, t2 - t1);
            record(&mut pair, t2 - t0);
        }
    }
    let elapsed = started.elapsed();
    if lost > 0 {
        log::warn!("raw RTT: {lost} echoes lost on loopback");
    }
    let label = |what: &str| format!("{what} ({held} held)");
    let floor = summarize("raw udp rtt", &rtt, elapsed, 0.0);
    let floor_p50 = floor.p50_us;
    let floor = PhaseReport {
        p50_ratio_to_rtt: 1.0,
        ..floor
    };
    let mut rows = vec![
        floor,
        summarize(&label("acquire"), &acq, elapsed, floor_p50),
        summarize(&label("release"), &rel, elapsed, floor_p50),
        summarize(&label("acquire+release"), &pair, elapsed, floor_p50),
    ];
    // The loop interleaves all four, so its overall rate says little about any one: each
    // row's ops/s is what one caller doing only that, back to back, achieves (1 / mean).
    for (row, h) in rows.iter_mut().zip([&rtt, &acq, &rel, &pair]) {
        row.ops_per_sec = if h.mean() > 0.0 { 1e9 / h.mean() } else { 0.0 };
    }
    Ok(rows)
}

/// Resources each throughput client cycles through: enough that 64 clients' resources fall
/// on most shards (and so on every node's leaders), each used by one client only.
const THROUGHPUT_RESOURCES_PER_CLIENT: usize = 16;

/// Phase 3: `n` clients, each its own `Client` and thread, loop acquire+release on resources
/// no other client uses; one op is one pair.
fn throughput(
    servers: &Servers,
    n: usize,
    run_for: Duration,
    rtt_p50: f64,
) -> Result<PhaseReport, LockError> {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(n + 1);
    let clients: Vec<Client> = (0..n).map(|_| servers.client()).collect::<Result<_, _>>()?;
    let (results, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || -> Result<(Histogram<u64>, u64), LockError> {
                    let id = format!("throughput-{i}");
                    let names: Vec<String> = (0..THROUGHPUT_RESOURCES_PER_CLIENT)
                        .map(|k| format!("bench/throughput/{n}/{i}/{k}"))
                        .collect();
                    let pair = |name: &str| -> Result<(), LockError> {
                        client.acquire(name, &id, 1_000, Some(10_000))?;
                        client.release(name, &id).map(drop)
                    };
                    // Warm-up, before the clock starts: learn every resource's leader.
                    let warmup = names.iter().try_for_each(|name| pair(name));
                    barrier.wait();
                    warmup?;
                    let mut h = histogram();
                    let mut ops = 0;
                    for name in names.iter().cycle() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let t0 = Instant::now();
                        pair(name)?;
                        record(&mut h, t0.elapsed());
                        ops += 1;
                    }
                    Ok((h, ops))
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        std::thread::sleep(run_for);
        stop.store(true, Ordering::Release);
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("throughput thread"))
            .collect();
        (results, started.elapsed())
    });
    let mut total = histogram();
    let mut ops = 0;
    for r in results {
        let (h, n) = r?;
        total.add(&h).expect("same histogram bounds");
        ops += n;
    }
    let mut report = summarize(
        &format!("throughput ({n} clients)"),
        &total,
        elapsed,
        rtt_p50,
    );
    report.ops_per_sec = ops as f64 / elapsed.as_secs_f64();
    Ok(report)
}

/// Phase 4: `n` clients loop acquire/release on one resource.
fn contention(
    servers: &Servers,
    n: usize,
    run_for: Duration,
    rtt_p50: f64,
    node: Option<&NodeCpu>,
) -> Result<PhaseReport, LockError> {
    let resource = format!("bench/contended/{n}");
    let epoch = Instant::now();
    // Nanoseconds since `epoch` at which the last holder started its release (0: none yet).
    let released_at = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(n + 1));
    let clients: Vec<Client> = (0..n).map(|_| servers.client()).collect::<Result<_, _>>()?;
    let (histograms, cpu_used, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let (resource, released_at, stop, barrier) =
                    (&resource, &released_at, &stop, &barrier);
                s.spawn(move || -> Result<(Histogram<u64>, u64), LockError> {
                    let id = format!("contender-{i}");
                    let mut h = histogram();
                    let mut grants = 0;
                    barrier.wait();
                    while !stop.load(Ordering::Acquire) {
                        match client.acquire(resource, &id, 5_000, Some(5_000)) {
                            Ok(_) => {}
                            Err(LockError::LockAcquisitionTimeout) => continue,
                            Err(e) => return Err(e),
                        }
                        let now = epoch.elapsed().as_nanos() as u64;
                        let released = released_at.load(Ordering::Acquire);
                        if released != 0 {
                            h.saturating_record(now.saturating_sub(released).max(1));
                        }
                        grants += 1;
                        released_at.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                        client.release(resource, &id)?;
                    }
                    Ok((h, grants))
                })
            })
            .collect();
        let cpu_before = node.map(NodeCpu::read);
        barrier.wait();
        let started = Instant::now();
        std::thread::sleep(run_for);
        stop.store(true, Ordering::Release);
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("contender thread"))
            .collect();
        let elapsed = started.elapsed();
        let cpu_used = match (cpu_before, node.map(NodeCpu::read)) {
            (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(a)),
            _ => None,
        };
        (results, cpu_used, elapsed)
    });
    let mut total = histogram();
    let mut shares = Vec::new();
    for r in histograms {
        let (h, grants) = r?;
        total.add(&h).expect("same histogram bounds");
        shares.push(grants);
    }
    let grants: u64 = shares.iter().sum();
    let mut report = summarize(&format!("handoff ({n} clients)"), &total, elapsed, rtt_p50);
    report.ops_per_sec = grants as f64 / elapsed.as_secs_f64();
    report.grants_min_max = Some((
        shares.iter().copied().min().unwrap_or(0),
        shares.iter().copied().max().unwrap_or(0),
    ));
    report.server_cpu_us_per_grant = cpu_used
        .filter(|_| grants > 0)
        .map(|ns| ns as f64 / 1_000.0 / grants as f64);
    Ok(report)
}

/// Longest a failover sample may take before the run gives up: far beyond any election
/// (a few election timeouts), so only a cluster that never recovers ends the run.
const FAILOVER_WAIT_MAX: Duration = Duration::from_secs(30);

/// Phase 5: `config.failovers` fresh clusters, each losing the leader of one resource's
/// shard; a sample is the time from the kill to the first successful acquire. Also returns a
/// note that splits it: when a surviving node first showed itself as the shard's leader in
/// its published stats (polled every millisecond; a node publishes at most every 5 ms, so
/// this is late by up to a few ms), and what the client did meanwhile.
fn failover(
    config: &BenchConfig,
    template: &ClusterConfig,
) -> Result<(PhaseReport, String), LockError> {
    let (mut h, mut elected) = (histogram(), histogram());
    let (mut redirects, mut retransmits) = (0, 0);
    let started = Instant::now();
    for k in 0..config.failovers {
        let mut nodes = start_local_cluster(config.nodes, template).map_err(|e| {
            LockError::InternalError(format!("failover cluster did not start: {e}"))
        })?;
        wait_for_leaders(&nodes, template)?;
        let servers = Servers {
            addrs: nodes.iter().map(ClusterNode::local_addr).collect(),
            shards: config.shards,
        };
        let client = servers.client()?;
        let resource = format!("bench/failover/{k}");
        let id = "bench-failover";
        // Warm-up: the client learns the shard's leader, so the kill hits the node it sends to.
        client.acquire(&resource, id, 2_000, Some(10_000))?;
        client.release(&resource, id)?;
        let shard = udplock_protocol::shard_of(resource.as_bytes(), config.shards);
        let leader = leader_of(&nodes, shard).ok_or_else(|| {
            LockError::InternalError(format!("shard {shard} has no single leader"))
        })?;
        let before = client.stats();
        let killed_at = Instant::now();
        nodes.remove(leader).shutdown();
        let (acquired, new_leader) = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                while killed_at.elapsed() < FAILOVER_WAIT_MAX {
                    if leader_of(&nodes, shard).is_some() {
                        return Some(killed_at.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                None
            });
            let acquired = loop {
                match client.acquire(&resource, id, 1_000, Some(10_000)) {
                    Ok(_) => break Ok(killed_at.elapsed()),
                    // No answer yet (election, dead leader) or a leader still waiting out its
                    // predecessor's leases: keep trying, as a program would.
                    Err(LockError::Unavailable | LockError::Overloaded { .. })
                        if killed_at.elapsed() < FAILOVER_WAIT_MAX => {}
                    Err(e) => break Err(e),
                }
            };
            (acquired, watcher.join().expect("leader watcher"))
        });
        record(&mut h, acquired?);
        if let Some(d) = new_leader {
            record(&mut elected, d);
        }
        let after = client.stats();
        redirects += after.redirects - before.redirects;
        retransmits += after.retransmits - before.retransmits;
        client.release(&resource, id)?;
    }
    let max_election = template.raft.election_timeout_max.as_millis() as f64;
    let mut report = summarize(
        &format!("failover ({} nodes, kill→acquire)", config.nodes),
        &h,
        started.elapsed(),
        0.0,
    );
    report.ops_per_sec = 0.0;
    report.election_timeout_max_ms = Some(max_election);
    report.p50_ratio_to_election_timeout_max = Some(report.p50_us / 1_000.0 / max_election);
    report.goal = Some("p50 <= 2x election_timeout_max");
    let ms = |v: u64| v as f64 / 1e6;
    let note = format!(
        "failover: a new leader showed in the survivors' stats {:.0} ms (p50; min {:.0}, max \
         {:.0}) after the kill, the first acquire succeeded {:.0} ms (p50) after it; the client \
         made {redirects} redirects and {retransmits} retransmits over {} kills",
        ms(elected.value_at_quantile(0.5)),
        ms(elected.min()),
        ms(elected.max()),
        report.p50_us / 1_000.0,
        config.failovers
    );
    Ok((report, note))
}

/// Datagrams the keys phase sends to a node before it waits for the node to catch up: far
/// below what its socket buffer holds, so none is lost before the node handles it.
const FORGED_WINDOW: u64 = 256;

/// The two clusters the keys phase compares: one whose nodes authenticate their datagrams
/// with a generated cluster key (spec §8.11), one without a key; and the key.
fn keyed_and_plain(template: &ClusterConfig) -> (ClusterConfig, ClusterConfig, ClusterKey) {
    let key = ClusterKey::new(&crate::cluster::keys::random_key());
    let keyed = ClusterConfig {
        keys: Some(KeySet::single(key.clone())),
        key_file: None,
        ..template.clone()
    };
    let plain = ClusterConfig {
        keys: Some(KeySet::unauthenticated()),
        key_file: None,
        ..template.clone()
    };
    (keyed, plain, key)
}

/// An embedded cluster as [`start_local_cluster`] starts one, and a clone of each node's
/// socket: what the bench sends from a clone comes from that listed node's own address and
/// port, which is how it makes forged node-to-node datagrams reach the authentication
/// checks without raw sockets.
fn start_cluster_with_clones(
    n: usize,
    template: &ClusterConfig,
) -> std::io::Result<(Vec<ClusterNode>, Vec<UdpSocket>, ClusterConfig)> {
    let sockets = (0..n)
        .map(|_| crate::node::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<std::io::Result<Vec<_>>>()?;
    let peers = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| Ok((i as NodeId + 1, s.local_addr()?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let clones = sockets
        .iter()
        .map(UdpSocket::try_clone)
        .collect::<std::io::Result<Vec<_>>>()?;
    let config = ClusterConfig {
        peers,
        new_cluster: true,
        ..template.clone()
    };
    let nodes = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let node_config = ClusterConfig {
                node_id: i as NodeId + 1,
                ..config.clone()
            };
            ClusterNode::start_on(socket, node_config)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((nodes, clones, config))
}

/// A forged PEER datagram from node 1 to node 2 of the cluster `config`, `len_target` bytes
/// long or a little less (heartbeat APPEND records of successive shards; at least one), sealed with `key`
/// and then one MAC bit flipped: everything a receiver checks before the MAC passes, and
/// the MAC, computed over the whole datagram, fails (BadMac) — the most a forgery can cost.
fn forged_datagram(config: &ClusterConfig, key: &ClusterKey, len_target: usize) -> Vec<u8> {
    use udplock_protocol::{AuthTrailer, PeerEntries, PeerHeader, PeerMessage, PeerWriter};
    let mut buf = vec![0u8; udplock_protocol::PEER_DATAGRAM_LEN_MAX];
    let header = PeerHeader {
        cluster_id: config.cluster_id(),
        from: 1,
    };
    let room = udplock_protocol::AUTH_TRAILER_LEN;
    let mut writer = PeerWriter::with_trailer_room(&mut buf, header, room);
    let heartbeat = PeerMessage::Append {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        leader_commit: 0,
        round: 1,
        transfer_to: 0,
        entries: PeerEntries::empty(),
    };
    let mut shard = 0;
    while writer.is_empty() || writer.len() + heartbeat.record_len() + room <= len_target {
        if writer
            .push(shard % config.shards as u16, &heartbeat)
            .is_err()
        {
            break;
        }
        shard += 1;
    }
    let len = writer.finish();
    let trailer = AuthTrailer {
        to: 2,
        incarnation: 1,
        peer_incarnation: 0,
        seq: 1,
        key_id: 0,
    };
    let sealed = key
        .seal(&mut buf, len, &trailer)
        .expect("a forged datagram fits");
    buf.truncate(sealed);
    buf[sealed - 1] ^= 1;
    buf
}

/// Sends `count` copies of `datagram` to node `to` from `from` (a clone of a listed node's
/// socket), never more than [`FORGED_WINDOW`] ahead of what the node has dropped for a bad
/// MAC; returns the node CPU time they cost, net of what the node spends idle for as long.
/// `None` if the node did not drop every one for its MAC.
fn forged_flood(
    from: &UdpSocket,
    to: &ClusterNode,
    datagram: &[u8],
    count: u64,
    cpu: &NodeCpu,
) -> Option<Duration> {
    let dropped = || to.stats().auth_dropped(AuthDrop::BadMac);
    // The node's own work meanwhile (heartbeats): measured idle, for the same time.
    let idle_for = Duration::from_millis(200);
    let idle_before = cpu.read()?;
    std::thread::sleep(idle_for);
    let idle_ns = cpu.read()?.saturating_sub(idle_before);
    let (first, cpu_before, started) = (dropped(), cpu.read()?, Instant::now());
    // A datagram the kernel lost (a full receive buffer) is never counted: the flood waits
    // for the counter only while it moves, and divides by what the node counted.
    let stall_max = Duration::from_millis(500);
    let mut progress = (0, Instant::now());
    let mut caught_up = |ahead_max: u64, sent: u64| -> Option<()> {
        loop {
            let counted = dropped().saturating_sub(first);
            if counted + ahead_max >= sent {
                return Some(());
            }
            if counted != progress.0 {
                progress = (counted, Instant::now());
            } else if progress.1.elapsed() > stall_max {
                return None;
            }
            std::thread::yield_now();
        }
    };
    for sent in 1..=count {
        let _ = from.send_to(datagram, to.local_addr());
        if caught_up(FORGED_WINDOW, sent).is_none() {
            break;
        }
    }
    let _ = caught_up(0, count);
    let counted = dropped().saturating_sub(first);
    let took = started.elapsed();
    let spent = cpu.read()?.saturating_sub(cpu_before);
    let idle = (idle_ns as f64 * took.as_secs_f64() / idle_for.as_secs_f64()) as u64;
    if counted < count / 2 {
        return None;
    }
    Some(Duration::from_nanos(
        spent.saturating_sub(idle) * count / counted,
    ))
}

/// Phase 6 — `peer keys` (embedded clusters of 2 nodes or more): what authenticating the
/// node-to-node traffic costs (issue 8's targets). Two fresh clusters run side by side on the
/// placement's server CPU, one with a generated cluster key and one without; per iteration
/// one raw round trip and one acquire+release on each (in alternating order), so both see
/// the same conditions and the same floor. Reports each acquire's latency, and the node CPU
/// per grant (all nodes' threads) of each cluster alone under 4-client hand-offs. Then forged
/// datagrams from a listed node's own address, each dropped for its MAC, the smallest and
/// the longest: the receiving node's CPU per forged datagram, beside the legitimate request's.
fn peer_keys(
    config: &BenchConfig,
    template: &ClusterConfig,
    server_cpu: Option<usize>,
    notes: &mut Vec<String>,
) -> Result<Vec<PhaseReport>, LockError> {
    let failed = |e: std::io::Error| LockError::InternalError(format!("keys phase: {e}"));
    let (keyed_template, plain_template, key) = keyed_and_plain(template);
    // Each cluster's node threads are found once it has leaders: a thread names itself when
    // it starts, so one looked for right after the spawn may not carry its name yet.
    let before = NodeCpu::find();
    let (plain, _, _) = start_cluster_with_clones(config.nodes, &plain_template).map_err(failed)?;
    wait_for_leaders(&plain, &plain_template)?;
    let plain_cpu = NodeCpu::find().without(&before);
    let (keyed, keyed_sockets, keyed_config) =
        start_cluster_with_clones(config.nodes, &keyed_template).map_err(failed)?;
    wait_for_leaders(&keyed, &keyed_template)?;
    let keyed_cpu = NodeCpu::find().without(&before).without(&plain_cpu);
    if plain_cpu.paths.len() != config.nodes || keyed_cpu.paths.len() != config.nodes {
        return Err(LockError::InternalError(
            "keys phase: did not find one thread per node".into(),
        ));
    }
    let servers_of = |nodes: &[ClusterNode]| Servers {
        addrs: nodes.iter().map(ClusterNode::local_addr).collect(),
        shards: config.shards,
    };
    let (keyed_servers, plain_servers) = (servers_of(&keyed), servers_of(&plain));
    let (keyed_client, plain_client) = (keyed_servers.client()?, plain_servers.client()?);
    let echo = Echo::start(server_cpu)?;
    let names: Vec<String> = (0..1_024).map(|i| format!("bench/keys/{i}")).collect();
    let (mut rtt, mut with, mut without) = (histogram(), histogram(), histogram());
    let warmup = (config.iterations / 10).max(100);
    let mut started = Instant::now();
    let pair = |client: &Client, name: &str| -> Result<Duration, LockError> {
        let t0 = Instant::now();
        client.acquire(name, "bench-client", 1_000, Some(10_000))?;
        let acquired = t0.elapsed();
        client.release(name, "bench-client")?;
        Ok(acquired)
    };
    for i in 0..config.iterations + warmup {
        if i == warmup {
            started = Instant::now();
        }
        let round_trip = echo.round_trip();
        let name = &names[i as usize % names.len()];
        let (k, p) = if i % 2 == 0 {
            let k = pair(&keyed_client, name)?;
            (k, pair(&plain_client, name)?)
        } else {
            let p = pair(&plain_client, name)?;
            (pair(&keyed_client, name)?, p)
        };
        if i >= warmup {
            if let Some(d) = round_trip {
                record(&mut rtt, d);
            }
            record(&mut with, k);
            record(&mut without, p);
        }
    }
    let elapsed = started.elapsed();
    let floor = summarize("raw udp rtt (keys phase)", &rtt, elapsed, 0.0);
    let floor_p50 = floor.p50_us;
    // Node CPU per grant, each cluster alone, under back-to-back hand-offs of one lock among
    // 4 clients (as the handoff rows): the nodes' idle work (heartbeats of every shard) is
    // then a small share of what they spend, and the two figures compare like with like.
    let cpu_run = Duration::from_millis(config.contention_ms.clamp(200, 1_000));
    let keyed_handoff = contention(&keyed_servers, 4, cpu_run, floor_p50, Some(&keyed_cpu))?;
    let plain_handoff = contention(&plain_servers, 4, cpu_run, floor_p50, Some(&plain_cpu))?;
    let mut with_keys = summarize("acquire, peer keys", &with, elapsed, floor_p50);
    with_keys.server_cpu_us_per_grant = keyed_handoff.server_cpu_us_per_grant;
    with_keys.goal = Some("p50 within 5% of no keys");
    let mut no_keys = summarize("acquire, no keys", &without, elapsed, floor_p50);
    no_keys.server_cpu_us_per_grant = plain_handoff.server_cpu_us_per_grant;
    let mut floor = PhaseReport {
        p50_ratio_to_rtt: 1.0,
        ..floor
    };
    // As in the uncontended phase: what one caller doing only that achieves (1 / mean).
    for (row, h) in [&mut floor, &mut with_keys, &mut no_keys]
        .into_iter()
        .zip([&rtt, &with, &without])
    {
        row.ops_per_sec = if h.mean() > 0.0 { 1e9 / h.mean() } else { 0.0 };
    }

    // Forged datagrams, from node 1's address to node 2.
    let victim_cpu = NodeCpu::find_named(|comm| comm == "udplock-node-2").within(&keyed_cpu);
    let count = config.iterations;
    let mut forged = Vec::new();
    // One heartbeat record (the smallest), and as many as fit (the most MAC work).
    for len in [0, udplock_protocol::PEER_DATAGRAM_LEN_MAX] {
        let datagram = forged_datagram(&keyed_config, &key, len);
        let spent = forged_flood(&keyed_sockets[0], &keyed[1], &datagram, count, &victim_cpu);
        forged.push((datagram.len(), spent));
    }
    let us = |d: Option<Duration>| {
        d.map_or("?".to_string(), |d| {
            format!("{:.2}", d.as_secs_f64() * 1e6 / count as f64)
        })
    };
    notes.push(format!(
        "peer keys: acquire p50 {:.1} µs with keys, {:.1} µs without ({:+.1}%); node CPU per \
         grant (4-client hand-offs, all {} nodes) {} µs with keys, {} µs without; a forged peer \
         datagram dropped for its MAC costs the receiving node {} µs ({} B) and {} µs ({} B) \
         of CPU ({count} each)",
        with_keys.p50_us,
        no_keys.p50_us,
        (with_keys.p50_us / no_keys.p50_us.max(1e-9) - 1.0) * 100.0,
        config.nodes,
        with_keys
            .server_cpu_us_per_grant
            .map_or("?".into(), |v| format!("{v:.2}")),
        no_keys
            .server_cpu_us_per_grant
            .map_or("?".into(), |v| format!("{v:.2}")),
        us(forged[0].1),
        forged[0].0,
        us(forged[1].1),
        forged[1].0,
    ));
    Ok(vec![floor, with_keys, no_keys])
}

/// CPU time of every node thread of this process (`udplock-node` for the single node,
/// `udplock-node-{id}` for cluster nodes), summed, from Linux's per-thread schedstat
/// (nanoseconds on CPU; finer than the clock ticks in `stat`).
struct NodeCpu {
    paths: Vec<std::path::PathBuf>,
}

impl NodeCpu {
    fn find() -> NodeCpu {
        NodeCpu::find_named(|comm| comm.starts_with("udplock-node"))
    }

    /// The node threads whose name `keep` accepts.
    fn find_named(keep: impl Fn(&str) -> bool) -> NodeCpu {
        let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
        let paths = tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim().starts_with("udplock-node") && keep(comm.trim()))
            })
            .map(|task| task.path().join("schedstat"))
            .collect();
        NodeCpu { paths }
    }

    /// The threads of this set that `other` does not have (a cluster started after `other`
    /// was found).
    fn without(&self, other: &NodeCpu) -> NodeCpu {
        NodeCpu {
            paths: self
                .paths
                .iter()
                .filter(|p| !other.paths.contains(p))
                .cloned()
                .collect(),
        }
    }

    /// The threads of this set that are also in `other`.
    fn within(&self, other: &NodeCpu) -> NodeCpu {
        NodeCpu {
            paths: self
                .paths
                .iter()
                .filter(|p| other.paths.contains(p))
                .cloned()
                .collect(),
        }
    }

    fn read(&self) -> Option<u64> {
        if self.paths.is_empty() {
            return None;
        }
        self.paths.iter().try_fold(0u64, |sum, path| {
            let ns: u64 = std::fs::read_to_string(path)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(sum + ns)
        })
    }
}

/// This process's resident set size in bytes (Linux), for the per-held-lock memory figure.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1_024)
}

/// The human-readable table header matching [`format_phase`].
pub fn table_header() -> String {
    format!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>8}  notes",
        "phase (µs)", "p50", "p90", "p99", "p99.9", "max", "ops/s", "p50/rtt"
    )
}

/// One phase as a table row.
pub fn format_phase(p: &PhaseReport) -> String {
    let mut notes = Vec::new();
    let per_replica = if p.replicas > 1 {
        format!(" (all {} nodes' threads)", p.replicas)
    } else {
        String::new()
    };
    if let Some(cpu) = p.server_cpu_us_per_grant {
        notes.push(format!("node cpu {cpu:.2} µs/grant{per_replica}"));
    }
    if let Some((lo, hi)) = p.grants_min_max {
        notes.push(format!("grants/client {lo}..{hi}"));
    }
    if let Some(b) = p.rss_bytes_per_held_lock {
        let of = if p.replicas > 1 {
            format!(" per replica (process growth / {})", p.replicas)
        } else {
            String::new()
        };
        notes.push(format!("rss {b:.0} B/held lock{of}"));
    }
    if let Some((clients, ratio)) = p.ops_ratio_to_first {
        notes.push(format!("{ratio:.2}x the ops/s of {clients} client(s)"));
    }
    if let (Some(max), Some(ratio)) = (
        p.election_timeout_max_ms,
        p.p50_ratio_to_election_timeout_max,
    ) {
        notes.push(format!(
            "p50 {:.0} ms, max {:.0} ms; election_timeout_max {max:.0} ms; p50 = {ratio:.2}x it",
            p.p50_us / 1_000.0,
            p.max_us / 1_000.0
        ));
    }
    if let Some(n) = p.elections.filter(|&n| n > 0) {
        notes.push(format!("ELECTIONS during the phase in {n} shard(s)"));
    }
    if let Some(goal) = p.goal {
        notes.push(format!("target: {goal}"));
    }
    let ops = if p.ops_per_sec > 0.0 {
        format!("{:.0}", p.ops_per_sec)
    } else {
        "-".to_string()
    };
    let ratio = if p.p50_ratio_to_rtt > 0.0 {
        format!("{:.2}x", p.p50_ratio_to_rtt)
    } else {
        "-".to_string()
    };
    format!(
        "{:<44} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11} {:>8}  {}",
        p.name,
        p.p50_us,
        p.p90_us,
        p.p99_us,
        p.p999_us,
        p.max_us,
        ops,
        ratio,
        notes.join(", ")
    )
}

/// The report as one JSON object. Figures that do not apply to a phase are `null`.
pub fn to_json(r: &BenchReport) -> String {
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
    let positive = |v: f64| opt(Some(v).filter(|v| *v > 0.0));
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| {
            format!(
                "{{\"name\":{},\"samples\":{},\"p50_us\":{:.3},\"p90_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3},\"max_us\":{:.3},\"ops_per_sec\":{},\"p50_ratio_to_rtt\":{},\"goal\":{},\"replicas\":{},\"server_cpu_us_per_grant\":{},\"grants_per_client_min\":{},\"grants_per_client_max\":{},\"rss_bytes_per_held_lock\":{},\"ops_ratio_to_first\":{},\"first_clients\":{},\"election_timeout_max_ms\":{},\"p50_ratio_to_election_timeout_max\":{},\"elections\":{}}}",
                crate::json::string(&p.name),
                p.samples,
                p.p50_us,
                p.p90_us,
                p.p99_us,
                p.p999_us,
                p.max_us,
                positive(p.ops_per_sec),
                positive(p.p50_ratio_to_rtt),
                p.goal.map_or("null".into(), crate::json::string),
                p.replicas,
                opt(p.server_cpu_us_per_grant),
                p.grants_min_max.map_or("null".into(), |g| g.0.to_string()),
                p.grants_min_max.map_or("null".into(), |g| g.1.to_string()),
                opt(p.rss_bytes_per_held_lock),
                opt(p.ops_ratio_to_first.map(|r| r.1)),
                p.ops_ratio_to_first.map_or("null".into(), |r| r.0.to_string()),
                opt(p.election_timeout_max_ms),
                opt(p.p50_ratio_to_election_timeout_max),
                p.elections.map_or("null".into(), |n| n.to_string()),
            )
        })
        .collect();
    let notes: Vec<String> = r.notes.iter().map(|n| crate::json::string(n)).collect();
    format!(
        "{{\"target\":{},\"cpus\":{},\"phases\":[{}],\"notes\":[{}]}}",
        crate::json::string(&r.target),
        r.cpus,
        phases.join(","),
        notes.join(",")
    )
}
