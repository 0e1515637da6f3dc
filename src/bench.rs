//! The benchmark runner behind `udplock bench` and `cargo bench`.
//!
//! Every figure is put beside the floor measured in the same run: the raw UDP round trip
//! between the same kinds of threads (a blocking echo thread that owns its socket, like the
//! node's event loop, and the calling thread blocking in `recv`, like the client). Latencies
//! go into hdrhistograms (microsecond resolution is too coarse here, so they record
//! nanoseconds) and are printed as p50/p90/p99/p99.9/max in µs, with ops/s and each p50 as a
//! ratio to the raw round trip's p50.
//!
//! The phases run once per [`Placement`]: with an embedded node, once with the client, the
//! echo and the node threads pinned to one CPU, and once with the client on one CPU and the
//! echo and node threads on another, so each figure is divided by the floor of its own
//! placement (like with like).
//!
//! Phases:
//! 1. `raw udp rtt` — echo of a 76-byte datagram (the size of an acquire and its reply),
//!    interleaved with phase 2 (one echo, one acquire, one release per iteration) so that the
//!    floor and the figures divided by it are measured under the same conditions.
//! 2. `acquire`, `release`, `acquire+release` — one client, uncontended, on distinct
//!    resources, at the held-lock scale asked for (`--held`, default 1,000 other locks held).
//! 3. `handoff (N clients)` — N clients, each its own `Client` and thread, loop acquire/release
//!    on one resource: the latency from a holder's release call to the next holder's grant,
//!    grants/s, FIFO order (each client's grants are counted; FIFO hand-off gives every
//!    client the same share), and, with an embedded node, the node thread's CPU time per grant.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Client;
use crate::error::LockError;
use crate::node::{Node, NodeConfig};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// A running node to measure; `None` starts an embedded node on loopback.
    pub server: Option<SocketAddr>,
    /// Samples per latency phase.
    pub iterations: u64,
    /// Numbers of locks held by other clients while the uncontended phase runs (each value
    /// is a separate run, e.g. `[1_000, 1_000_000]`).
    pub held: Vec<u64>,
    /// Numbers of contending clients, one contention run each.
    pub contenders: Vec<usize>,
    /// How long each contention run lasts.
    pub contention_ms: u64,
    /// Print progress lines on stderr.
    pub progress: bool,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            server: None,
            iterations: 20_000,
            held: vec![1_000],
            contenders: vec![4, 64],
            contention_ms: 2_000,
            progress: true,
        }
    }
}

/// One latency phase's summary, in microseconds.
#[derive(Clone, Debug)]
pub struct PhaseReport {
    pub name: String,
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub ops_per_sec: f64,
    /// p50 divided by the raw round trip's p50 of the same run.
    pub p50_ratio_to_rtt: f64,
    /// Contention runs: node thread CPU time per grant, when the node is embedded.
    pub server_cpu_us_per_grant: Option<f64>,
    /// Contention runs: fewest and most grants any one client got (equal shares = FIFO).
    pub grants_min_max: Option<(u64, u64)>,
    /// Held-scale runs: the node's resident memory per held lock, when the node is embedded.
    pub rss_bytes_per_held_lock: Option<f64>,
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub target: String,
    pub cpus: usize,
    pub phases: Vec<PhaseReport>,
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
        server_cpu_us_per_grant: None,
        grants_min_max: None,
        rss_bytes_per_held_lock: None,
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
    /// No pinning (a node in another process: its placement is not ours to choose).
    Unpinned,
    /// Client, echo and node threads all on the first allowed CPU.
    OneCpu,
    /// Client threads on the first allowed CPU, the echo and node threads on the second.
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
/// CPU otherwise; unpinned for a node outside this process.
pub fn default_placements(server: Option<SocketAddr>) -> Vec<Placement> {
    match (server, allowed_cpus().len()) {
        (Some(_), _) => vec![Placement::Unpinned],
        (None, 0 | 1) => vec![Placement::OneCpu],
        (None, _) => vec![Placement::OneCpu, Placement::TwoCpus],
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
pub fn run(
    config: &BenchConfig,
    placements: &[Placement],
    mut print: impl FnMut(&PhaseReport),
) -> Result<BenchReport, LockError> {
    let mut phases = Vec::new();
    let mut target = String::new();
    let allowed = allowed_cpus();
    for &placement in placements {
        let (cpus, node_addr) = run_placement(config, placement, &allowed, &mut |p| {
            print(p);
            phases.push(p.clone());
        })?;
        target = match (config.server, cpus) {
            // The floor is measured between two threads of this process; a node elsewhere is
            // not like for like: compare with care.
            (Some(s), _) => format!("node at {s} (raw RTT measured in-process)"),
            (None, _) => format!("embedded node on {node_addr}"),
        };
    }
    Ok(BenchReport {
        target,
        cpus: allowed.len(),
        phases,
    })
}

/// One placement: the floor interleaved with uncontended acquire/release at each held-lock
/// scale, then contention. Returns the CPUs used and the node's address.
fn run_placement(
    config: &BenchConfig,
    placement: Placement,
    allowed: &[usize],
    print: &mut dyn FnMut(&PhaseReport),
) -> Result<(Option<(usize, usize)>, SocketAddr), LockError> {
    let progress = |msg: &str| {
        if config.progress {
            eprintln!("bench [{}]: {msg}", placement.name());
        }
    };
    let cpus = placement.cpus(allowed);
    if placement != Placement::Unpinned && cpus.is_none() {
        progress("not enough CPUs for this placement; skipped");
        return Ok((None, SocketAddr::from(([127, 0, 0, 1], 0))));
    }
    let (client_cpu, server_cpu) = (cpus.map(|c| c.0), cpus.map(|c| c.1));
    // Threads inherit the mask: clients spawned from here run on the client CPU too.
    pin_current(client_cpu);
    let embedded = match config.server {
        Some(_) => None,
        None => {
            let mut node_config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
            node_config.cpu = server_cpu;
            Some(Node::start(node_config).map_err(|e| {
                LockError::InternalError(format!("embedded node did not start: {e}"))
            })?)
        }
    };
    let server = config.server.unwrap_or_else(|| {
        embedded
            .as_ref()
            .map(Node::local_addr)
            .expect("embedded node")
    });
    let tag = |name: &str| format!("[{}] {name}", placement.name());
    let mut emit = |mut p: PhaseReport| {
        p.name = tag(&p.name);
        print(&p);
    };

    let echo = Echo::start(server_cpu)?;
    // The floor of the contention runs: the raw round trip of the last uncontended run.
    let mut rtt_p50 = 0.0;
    let client = Client::connect(&[server])?;
    let holder = Client::connect(&[server])?;
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
                Some(b.saturating_sub(a) as f64 / held as f64)
            }
            _ => None,
        };
        progress(&format!(
            "uncontended acquire/release, {} iterations",
            config.iterations
        ));
        let mut reports = uncontended(&client, &echo, config.iterations, held)?;
        rtt_p50 = reports[0].p50_us;
        reports[1].rss_bytes_per_held_lock = rss_per_lock;
        for r in reports {
            emit(r);
        }
    }

    // A server outside this process keeps serving after the run: give its locks back.
    progress(&format!("releasing the {held_now} held locks"));
    hold_locks(&holder, 0..held_now, Hold::Release, config.progress)?;

    let node_thread = embedded.as_ref().and_then(|_| NodeCpu::find());
    for &n in &config.contenders {
        progress(&format!(
            "contention: {n} clients on one resource for {} ms",
            config.contention_ms
        ));
        let r = contention(
            server,
            n,
            Duration::from_millis(config.contention_ms),
            rtt_p50,
            node_thread.as_ref(),
        )?;
        emit(r);
    }
    drop(echo);
    drop(embedded);
    Ok((cpus, server))
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

/// Phase 3: `n` clients loop acquire/release on one resource.
fn contention(
    server: SocketAddr,
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
    let clients: Vec<Client> = (0..n)
        .map(|_| Client::connect(&[server]))
        .collect::<Result<_, _>>()?;
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

/// The embedded node thread's CPU time, from Linux's per-thread schedstat (nanoseconds on
/// CPU; finer than the clock ticks in `stat`).
struct NodeCpu {
    path: std::path::PathBuf,
}

impl NodeCpu {
    fn find() -> Option<NodeCpu> {
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "udplock-node" {
                return Some(NodeCpu {
                    path: task.path().join("schedstat"),
                });
            }
        }
        None
    }

    fn read(&self) -> Option<u64> {
        std::fs::read_to_string(&self.path)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
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
    if let Some(cpu) = p.server_cpu_us_per_grant {
        notes.push(format!("node cpu {cpu:.2} µs/grant"));
    }
    if let Some((lo, hi)) = p.grants_min_max {
        notes.push(format!("grants/client {lo}..{hi}"));
    }
    if let Some(b) = p.rss_bytes_per_held_lock {
        notes.push(format!("rss {b:.0} B/held lock"));
    }
    format!(
        "{:<44} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.0} {:>7.2}x  {}",
        p.name,
        p.p50_us,
        p.p90_us,
        p.p99_us,
        p.p999_us,
        p.max_us,
        p.ops_per_sec,
        p.p50_ratio_to_rtt,
        notes.join(", ")
    )
}

/// The report as one JSON object.
pub fn to_json(r: &BenchReport) -> String {
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| {
            format!(
                "{{\"name\":{},\"samples\":{},\"p50_us\":{:.3},\"p90_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3},\"max_us\":{:.3},\"ops_per_sec\":{:.1},\"p50_ratio_to_rtt\":{:.3},\"server_cpu_us_per_grant\":{},\"grants_per_client_min\":{},\"grants_per_client_max\":{},\"rss_bytes_per_held_lock\":{}}}",
                crate::json::string(&p.name),
                p.samples,
                p.p50_us,
                p.p90_us,
                p.p99_us,
                p.p999_us,
                p.max_us,
                p.ops_per_sec,
                p.p50_ratio_to_rtt,
                opt(p.server_cpu_us_per_grant),
                p.grants_min_max.map_or("null".into(), |g| g.0.to_string()),
                p.grants_min_max.map_or("null".into(), |g| g.1.to_string()),
                opt(p.rss_bytes_per_held_lock),
            )
        })
        .collect();
    format!(
        "{{\"target\":{},\"cpus\":{},\"phases\":[{}]}}",
        crate::json::string(&r.target),
        r.cpus,
        phases.join(",")
    )
}
