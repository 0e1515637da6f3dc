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
//! - `nodes = 1`: the single [`SingleNode`] as `udplock server` runs it without `--peers`: a
//!   cluster of one voter and one shard, in memory mode, without a lease horizon file (its
//!   port is ephemeral); the clients assume its one shard.
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
//! 0. `[disk] fdatasync 128 B (1 writer)` and `(N writers at once)` — `--disk-floor [DIR]`
//!    only, once per run before the placements: the disk floor of a node that syncs, one
//!    writer alone and one per node at once (module `floors`). The embedded cluster runs in
//!    memory mode, so it is for a `--durability fsync` service measured with `--servers`.
//! 1. `raw udp rtt` — echo of a 76-byte datagram (the size of an acquire and its reply),
//!    interleaved with phase 2 (one echo, one acquire, one release per iteration) so that the
//!    floor and the figures divided by it are measured under the same conditions. A
//!    replicated service (an embedded cluster, or several `--servers`) has a second floor in
//!    the same loop: `replication floor (1 of 2 acks)`, the message pattern of one replicated
//!    operation (client → leader → both followers → leader on the first ack → client) through
//!    threads that do nothing else, with the datagram sizes of a real acquire, pinned like
//!    the nodes (module `floors`, which says why the first ack is the floor). Its row follows
//!    the raw round trip's, with the CPU its threads spent per operation (the CPU floor of
//!    one replicated operation, `server_cpu_us_per_grant` in JSON); the acquire's and the
//!    release's notes give their p50 as a multiple of it (`p50_ratio_to_replication_floor` in
//!    JSON; issue 13's target: ≤ 1.15×).
//! 2. `acquire`, `release`, `acquire+release` — one client, uncontended, on distinct
//!    resources (spread over every shard), at the held-lock scale asked for (`--held`,
//!    default 1,000 other locks held). Issue 3's target for a replicated cluster: acquire p50
//!    ≤ 2.5× the raw RTT p50 (floor ≈ 2×, see above). With an embedded cluster the pair's row
//!    also gives the nodes' CPU per replicated operation over the loop and its ratio to the
//!    floor's CPU per operation (`server_cpu_ratio_to_floor`; issue 13's target: ≤ 1.5×).
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
//! 7. `client keys` — `--client-keys both` only: what sealing lock requests and replies with
//!    a client key costs (spec §7.1.10, issue 12's target: within 5 % of the acquire p50).
//!    Two fresh services of the measured shape side by side on the server CPU, one with a
//!    client key file and one without, alternating per iteration like `peer keys`; rows:
//!    the floor, `acquire, client key` and `acquire, no client key`. The key is the first of
//!    `--client-key-file`, or a fresh one authorizing every id.
//!
//! With `--client-key-file` the whole run seals: every client uses the file's first key, and
//! the embedded nodes load the file (a service given by `--servers` must have its own); its
//! first key must authorize the bench's client ids ([`BENCH_CLIENT_IDS`]).
//!
//! Resident memory per held lock (`--held` ≥ 100,000, embedded only) is the process's growth
//! divided by the number of replicas in the process: with a cluster every node holds its own
//! copy of every table, so the figure is labelled "per replica".
//!
//! # Layout
//!
//! This module holds the options ([`BenchConfig`]) and the runner ([`run`]: one driver
//! thread per placement, the phases in order); the report and its table and JSON forms are
//! in `report`; every phase has a module of its own: `rtt` (the raw round trip, the floor),
//! `floors` (the replication message-pattern floor and the disk floor),
//! `uncontended` (phases 1 and 2), `throughput` (3), `contention` (4, the hand-offs),
//! `failover` (5), `peer_keys` (6) and `client_keys` (7). `placement` pins the threads, `embedded` starts and
//! watches the measured service, and `usage` reads node CPU time and resident memory.

mod alternate;
mod client_keys;
mod contention;
mod embedded;
mod failover;
mod floors;
mod peer_keys;
mod placement;
mod report;
mod rtt;
mod throughput;
mod uncontended;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientConfig, ClientKey};
use crate::client_keys::{Authorization, ClientKeyFile};
use crate::cluster::start_local_cluster;
use crate::error::LockError;
use crate::single::{SingleConfig, SingleNode};

use client_keys::client_keys;
use contention::contention;
use embedded::{cluster_template, shard_terms, wait_for_leaders, Embedded};
use failover::failover;
use floors::{acks_needed, disk_floor, ReplicationFloor};
use peer_keys::peer_keys;
use placement::{allowed_cpus, pin_current};
use rtt::Echo;
use throughput::throughput;
use uncontended::{hold_locks, uncontended, Hold, UNCONTENDED_RESOURCES};
use usage::{rss_bytes, NodeCpu};

pub use placement::{default_placements, Placement};
pub use report::{format_phase, table_header, to_json, BenchReport, PhaseReport};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// A running service to measure (every node's address); empty starts an embedded one on
    /// loopback.
    pub servers: Vec<SocketAddr>,
    /// Embedded: nodes of the replicated cluster; 1 runs the single node (one voter, one
    /// shard) instead.
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
    /// The client key file of the whole run (`--client-key-file`): every client seals with
    /// its first key, and the embedded nodes load it. `None`: no keys.
    pub client_keys: Option<Arc<ClientKeyFile>>,
    /// Run phase 7, `client keys` (`--client-keys both`): the acquire with and without a
    /// client key, side by side.
    pub client_keys_both: bool,
    /// Measure the disk floor (`--disk-floor [DIR]`): `fdatasync` of 128-byte appends to
    /// files in this directory, one writer alone and one per node at once (`floors`).
    /// `None`: not measured (the embedded cluster runs in memory mode and never syncs).
    pub disk_floor: Option<PathBuf>,
}

/// The client ids the benchmark acts as: the first key of a `--client-key-file` must
/// authorize each (`*`, or the prefixes `bench-`, `throughput-` and `contender-`).
pub const BENCH_CLIENT_IDS: [&str; 5] = [
    "bench-client",
    "bench-holder",
    "bench-failover",
    "throughput-0",
    "contender-0",
];

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
            client_keys: None,
            client_keys_both: false,
            disk_floor: None,
        }
    }
}

impl BenchConfig {
    /// What the run measures, in words (the table's title).
    pub fn target_label(&self) -> String {
        match (self.servers.as_slice(), self.nodes) {
            ([], 1) => "embedded single node (one voter, one shard, memory mode)".to_string(),
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
        if self.servers.is_empty() {
            self.check_held_fits()?;
        }
        if let Some(dir) = &self.disk_floor {
            if !dir.is_dir() {
                return invalid(&format!(
                    "--disk-floor {}: not a directory (name one on the file system of the \
                     nodes' data directories)",
                    dir.display()
                ));
            }
        }
        if let Some(keys) = &self.client_keys {
            let Some(key) = keys.first_key() else {
                return invalid("--client-key-file lists no key (only a `none` line)");
            };
            let refused = BENCH_CLIENT_IDS.iter().find(|id| {
                keys.authorizes(Some(key.key_id()), id.as_bytes()) != Authorization::Allowed
            });
            if let Some(id) = refused {
                return invalid(&format!(
                    "the first key of --client-key-file does not authorize the client id \
                     {id:?}: the benchmark acts as bench-*, throughput-* and contender-*; give \
                     its key the prefix * (or those three)"
                ));
            }
        }
        Ok(())
    }

    /// Resources the benchmark's own phases may keep at once besides the `--held` locks: the
    /// uncontended loop's names, one per throughput client and per contender, and as many
    /// again for the entries a leader counts before they apply (spec §9.1 rule 3).
    fn own_resources(&self) -> u64 {
        let most = |counts: &[usize]| counts.iter().copied().max().unwrap_or(0) as u64;
        2 * (UNCONTENDED_RESOURCES as u64 + most(&self.throughput_clients) + most(&self.contenders))
    }

    /// Resources an embedded node must be able to hold: the most `--held` and the
    /// benchmark's own ([`BenchConfig::own_resources`]).
    pub(super) fn embedded_resources(&self) -> u64 {
        self.held.iter().copied().max().unwrap_or(0) + self.own_resources()
    }

    /// `--held` within what the embedded service can hold. A shard holds at most its table's
    /// `resources_max` (which bounds its snapshot, spec §9.1, so it is not raised here): the
    /// single node's one shard is its whole capacity; a cluster spreads the locks over its
    /// shards by hash, so half their total leaves room for an uneven spread, and its nodes'
    /// limit per node is raised to fit (`embedded::cluster_template`).
    fn check_held_fits(&self) -> Result<(), LockError> {
        let per_shard = u64::from(crate::core::lock_table::Config::DEFAULT.resources_max);
        let needed = self.embedded_resources();
        let own = self.own_resources();
        let (capacity, what) = match self.nodes {
            1 => (
                per_shard.min(crate::core::node::limits::NodeLimits::DEFAULT.resources_max),
                "an embedded single node holds at most",
            ),
            _ => (
                per_shard * u64::from(self.shards) / 2,
                "the embedded cluster's shards hold, spread by hash, at most about",
            ),
        };
        if needed <= capacity {
            return Ok(());
        }
        Err(LockError::InvalidArgument(format!(
            "--held {}: {what} {capacity} resources ({per_shard} per shard: a shard's \
             --resources-max, which bounds its snapshot, spec §9.1), and this run's own phases \
             use up to {own}: hold at most {} locks, or use more shards (the embedded cluster: \
             --nodes 3 --shards 64 holds 1,000,000)",
            self.held.iter().copied().max().unwrap_or(0),
            capacity.saturating_sub(own),
        )))
    }

    /// The key the run's clients seal with: the first of `--client-key-file`.
    fn client_key(&self) -> Option<ClientKey> {
        (self.client_keys.as_ref())
            .and_then(|keys| keys.first_key())
            .cloned()
    }

    fn embedded_cluster(&self) -> bool {
        self.servers.is_empty() && self.nodes >= 2
    }

    /// Voters of the measured service when it replicates (an embedded cluster, or several
    /// `--servers`, taken as one shard's voters): the shape of its replication floor.
    fn replicated_nodes(&self) -> Option<usize> {
        match (self.servers.len(), self.nodes) {
            (0, n) if n >= 2 => Some(n),
            (n, _) if n >= 2 => Some(n),
            _ => None,
        }
    }

    /// Writers of the disk floor's "at once" run: one per node of the measured service.
    fn disk_writers(&self) -> usize {
        match self.servers.len() {
            0 => self.nodes,
            n => n,
        }
        .max(1)
    }
}

fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
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
    if let Some(dir) = &config.disk_floor {
        let writers = config.disk_writers();
        if config.progress {
            eprintln!(
                "bench: disk floor: fdatasync in {}, 1 writer, then {writers} at once",
                dir.display()
            );
        }
        // The disk is not a placement's: measured once, on unpinned threads.
        let (rows, note) = disk_floor(dir, writers, config.iterations.clamp(100, 2_000))?;
        for mut row in rows {
            row.name = format!("[disk] {}", row.name);
            print(&row);
            phases.push(row);
        }
        notes.push(format!("[disk] {note}"));
    }
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

/// Makes the clients of a run: every address, the shard count, and the client key.
#[derive(Clone)]
struct Servers {
    addrs: Vec<SocketAddr>,
    shards: u32,
    key: Option<ClientKey>,
}

impl Servers {
    fn client(&self) -> Result<Client, LockError> {
        let mut config = ClientConfig::new(self.addrs.clone());
        config.shards = self.shards;
        config.client_key = self.key.clone();
        Client::new(config)
    }

    /// `n` clients, each its own `Client` (its own socket and session) on a thread of its own,
    /// running `client_loop` together for `run_for`: the clock starts once every loop has
    /// called its `ready` (after any warm-up; a loop MUST call it, also when its warm-up
    /// failed, or the run never starts), and `stop` is set when `run_for` has passed.
    /// `at_start` runs on this thread just before the clock starts. Returns each loop's
    /// result, in client order, and how long the run lasted (from the start until every loop
    /// returned).
    fn run_together<T: Send>(
        &self,
        n: usize,
        run_for: Duration,
        at_start: impl FnOnce(),
        client_loop: impl Fn(usize, &Client, &dyn Fn(), &AtomicBool) -> Result<T, LockError> + Sync,
    ) -> Result<(Vec<Result<T, LockError>>, Duration), LockError> {
        let clients: Vec<Client> = (0..n).map(|_| self.client()).collect::<Result<_, _>>()?;
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(n + 1);
        Ok(std::thread::scope(|s| {
            let handles: Vec<_> = clients
                .iter()
                .enumerate()
                .map(|(i, client)| {
                    let (stop, barrier, client_loop) = (&stop, &barrier, &client_loop);
                    s.spawn(move || {
                        let ready = || {
                            barrier.wait();
                        };
                        client_loop(i, client, &ready, stop)
                    })
                })
                .collect();
            at_start();
            barrier.wait();
            let started = Instant::now();
            std::thread::sleep(run_for);
            stop.store(true, Ordering::Release);
            let results: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().expect("bench client thread"))
                .collect();
            (results, started.elapsed())
        }))
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
            let mut node_config = SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
            node_config.cpu = server_cpu;
            node_config.client_keys = config.client_keys.clone();
            Some(Embedded::Single(SingleNode::start(node_config).map_err(
                |e| LockError::InternalError(format!("embedded node did not start: {e}")),
            )?))
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
        // The single node has one shard, whatever the clients would assume of a cluster.
        shards: match &embedded {
            Some(Embedded::Single(_)) => 1,
            _ => config.shards,
        },
        key: config.client_key(),
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
    let replication = match config.replicated_nodes() {
        Some(nodes) => Some(ReplicationFloor::start(
            nodes - 1,
            acks_needed(nodes),
            server_cpu,
        )?),
        None => None,
    };
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
        )
        .map_err(|e| match e {
            // A running service's limits (`--servers`): say which argument met them.
            LockError::Overloaded { .. } => LockError::InvalidArgument(format!(
                "--held {held}: the service refused to hold that many locks ({e}); its \
                 resource limits (--resources-max per shard, --resources-per-node-max) are \
                 below it"
            )),
            e => e,
        })?;
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
        let node_threads = embedded.as_ref().map(|_| NodeCpu::find());
        let mut reports = uncontended(
            &client,
            &echo,
            replication.as_ref(),
            node_threads.as_ref(),
            config.iterations,
            held,
        )?;
        let changed = elections(&before);
        for r in &mut reports {
            r.elections = changed;
        }
        rtt_p50 = reports[0].p50_us;
        // The acquire's row follows the floors' rows.
        let acquire = usize::from(replication.is_some()) + 1;
        reports[acquire].rss_bytes_per_held_lock = rss_per_lock;
        if config.embedded_cluster() {
            reports[acquire].goal =
                Some("replicated: p50 <= 2.5x rtt (floor ~2x), <= 1.15x the replication floor");
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
        let (mut r, did) = throughput(
            &servers,
            n,
            Duration::from_millis(config.throughput_ms),
            rtt_p50,
        )?;
        r.elections = elections(&before);
        notes.push(format!(
            "[{}] throughput ({n} clients): {} retransmits, {} redirects (warm-up included)",
            placement.name(),
            did.retransmits,
            did.redirects
        ));
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
    drop(replication);
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

    if config.client_keys_both && config.servers.is_empty() {
        progress("client keys: acquire with and without a client key, side by side");
        let generated;
        let keys = match &config.client_keys {
            Some(keys) => keys,
            None => {
                generated = random_client_keys();
                &generated
            }
        };
        let before = notes.len();
        for r in client_keys(config, keys, &template, server_cpu, notes)? {
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

/// A client key file of one fresh random key authorizing every client id: the `client
/// keys` phase's when the run has no `--client-key-file`.
fn random_client_keys() -> Arc<ClientKeyFile> {
    let hex: String = (crate::cluster::keys::random_key().iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    Arc::new(
        ClientKeyFile::parse(&format!("{hex} *\n")).expect("one key authorizing every id parses"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(nodes: usize, shards: u32, held: &[u64]) -> BenchConfig {
        BenchConfig {
            nodes,
            shards,
            held: held.to_vec(),
            ..BenchConfig::default()
        }
    }

    /// The README's scale check: `--held 1000,1000000` runs on the embedded cluster, whose
    /// nodes' limit per node is raised to hold it (it was the default 262,144, so holding
    /// failed a quarter of the way with OVERLOADED).
    #[test]
    fn the_embedded_cluster_holds_a_million_locks() {
        let config = held(3, 64, &[1_000, 1_000_000]);
        config.validate().expect("fits 64 shards");
        let template = cluster_template(&config, None);
        assert!(template.limits.resources_max >= 1_000_000 + config.own_resources());
        // Below the default, the default stays.
        let small = cluster_template(&held(3, 64, &[1_000]), None);
        assert_eq!(
            small.limits.resources_max,
            crate::core::node::limits::NodeLimits::DEFAULT.resources_max
        );
    }

    /// A single node has one shard, whose limit bounds its snapshot: more is refused up
    /// front, naming `--held` and what fits, not after minutes of holding.
    #[test]
    fn held_past_a_single_nodes_shard_is_refused_up_front() {
        let err = held(1, 64, &[1_000, 1_000_000]).validate().unwrap_err();
        let LockError::InvalidArgument(message) = err else {
            panic!("{err:?}");
        };
        assert!(message.starts_with("--held 1000000: "), "{message}");
        let fits = held(1, 64, &[1_000]).own_resources();
        assert!(message.contains(&format!("hold at most {} locks", 262_144 - fits)));
        held(1, 64, &[262_144 - fits]).validate().expect("fits");
        assert!(held(1, 64, &[262_144 - fits + 1]).validate().is_err());
        // A cluster of one shard is as small; `--servers` are not checked (their limits are
        // theirs: the hold's OVERLOADED says so then).
        assert!(held(3, 1, &[1_000_000]).validate().is_err());
        let servers = BenchConfig {
            servers: vec![SocketAddr::from(([127, 0, 0, 1], 1))],
            ..held(1, 1, &[10_000_000])
        };
        servers.validate().expect("not checked");
    }
}
