//! The benchmark runner behind `udplock bench` and `cargo bench`.
//!
//! Every figure is put beside the floor measured in the same run: the raw UDP round trip
//! between the same kinds of threads (a blocking echo thread that owns its socket, like the
//! node's event loop, and the calling thread blocking in `recv`, like the client). Latencies
//! go into hdrhistograms (microsecond resolution is too coarse here, so they record
//! nanoseconds) and are printed as p50/p90/p99/p99.9/max in µs, with ops/s and each p50 as a
//! ratio to the raw round trip's p50.
//!
//! Phases:
//! 1. `raw udp rtt` — echo of a 76-byte datagram (the size of an acquire and its reply).
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

/// Runs every phase and returns the figures. `print` receives each phase as it completes.
pub fn run(
    config: &BenchConfig,
    mut print: impl FnMut(&PhaseReport),
) -> Result<BenchReport, LockError> {
    let progress = |msg: &str| {
        if config.progress {
            eprintln!("bench: {msg}");
        }
    };
    let embedded = match config.server {
        Some(_) => None,
        None => Some(
            Node::start(NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))).map_err(|e| {
                LockError::InternalError(format!("embedded node did not start: {e}"))
            })?,
        ),
    };
    let server = config.server.unwrap_or_else(|| {
        embedded
            .as_ref()
            .map(Node::local_addr)
            .expect("embedded node")
    });
    let target = match &embedded {
        Some(_) => format!("embedded node on {server}"),
        None => format!("node at {server}"),
    };
    let mut phases = Vec::new();

    progress("raw UDP round trip (the floor)");
    let rtt = raw_rtt(config.iterations)?;
    let rtt_p50 = rtt.p50_us;
    let rtt = PhaseReport {
        p50_ratio_to_rtt: 1.0,
        ..rtt
    };
    print(&rtt);
    phases.push(rtt);

    let client = Client::connect(&[server])?;
    let holder = Client::connect(&[server])?;
    let mut held_now = 0;
    let rss_empty = embedded.as_ref().and_then(|_| rss_bytes());
    for &held in &config.held {
        progress(&format!("holding {held} locks for the uncontended phase"));
        hold_locks(
            &holder,
            held_now..held.max(held_now),
            Hold::Acquire,
            config.progress,
        )?;
        held_now = held_now.max(held);
        let rss_per_lock = match (rss_empty, embedded.as_ref().and_then(|_| rss_bytes())) {
            (Some(a), Some(b)) if held > 0 => Some(b.saturating_sub(a) as f64 / held as f64),
            _ => None,
        };
        progress(&format!(
            "uncontended acquire/release, {} iterations",
            config.iterations
        ));
        let mut reports = uncontended(&client, config.iterations, held, rtt_p50)?;
        reports[0].rss_bytes_per_held_lock = rss_per_lock;
        for r in reports {
            print(&r);
            phases.push(r);
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
        print(&r);
        phases.push(r);
    }
    drop(embedded);
    Ok(BenchReport {
        target,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        phases,
    })
}

/// Phase 1: a blocking echo thread and the calling thread, 76-byte datagrams.
fn raw_rtt(iterations: u64) -> Result<PhaseReport, LockError> {
    let io = |e: std::io::Error| LockError::InternalError(format!("raw RTT socket: {e}"));
    let echo = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    let echo_addr = echo.local_addr().map_err(io)?;
    let stop = Arc::new(AtomicBool::new(false));
    let echo_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Acquire) {
                if let Ok((n, from)) = echo.recv_from(&mut buf) {
                    let _ = echo.send_to(&buf[..n], from);
                }
            }
        })
    };
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(io)?;
    let msg = [0x5Au8; udplock_protocol::REPLY_LEN_MIN];
    let mut buf = [0u8; 2048];
    let mut h = histogram();
    let warmup = (iterations / 10).max(100);
    let mut lost = 0;
    let mut started = Instant::now();
    for i in 0..iterations + warmup {
        if i == warmup {
            started = Instant::now();
        }
        let t0 = Instant::now();
        sock.send_to(&msg, echo_addr).map_err(io)?;
        match sock.recv_from(&mut buf) {
            Ok(_) if i >= warmup => record(&mut h, t0.elapsed()),
            Ok(_) => {}
            Err(_) => lost += 1,
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    let _ = sock.send_to(&msg, echo_addr);
    let _ = echo_thread.join();
    if lost > 0 {
        log::warn!("raw RTT: {lost} echoes lost on loopback");
    }
    Ok(summarize("raw udp rtt", &h, elapsed, 0.0))
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

/// Phase 2: acquire and release on distinct resources, one client on the calling thread.
fn uncontended(
    client: &Client,
    iterations: u64,
    held: u64,
    rtt_p50: f64,
) -> Result<Vec<PhaseReport>, LockError> {
    // Names made up front: formatting in the loop would be measured too.
    let names: Vec<String> = (0..1_024)
        .map(|i| format!("bench/uncontended/{i}"))
        .collect();
    let (mut acq, mut rel, mut pair) = (histogram(), histogram(), histogram());
    let warmup = (iterations / 10).max(100);
    let mut started = Instant::now();
    for i in 0..iterations + warmup {
        if i == warmup {
            started = Instant::now();
        }
        let name = &names[i as usize % names.len()];
        let t0 = Instant::now();
        client.acquire(name, "bench-client", 1_000, Some(10_000))?;
        let t1 = Instant::now();
        client.release(name, "bench-client")?;
        let t2 = Instant::now();
        if i >= warmup {
            record(&mut acq, t1 - t0);
            record(&mut rel, t2 - t1);
            record(&mut pair, t2 - t0);
        }
    }
    let elapsed = started.elapsed();
    let label = |what: &str| format!("{what} ({held} held)");
    let mut a = summarize(&label("acquire"), &acq, elapsed, rtt_p50);
    let mut r = summarize(&label("release"), &rel, elapsed, rtt_p50);
    // Each loop did one of each: ops/s is per operation kind over the loop's time.
    a.ops_per_sec = acq.len() as f64 / elapsed.as_secs_f64();
    r.ops_per_sec = rel.len() as f64 / elapsed.as_secs_f64();
    let p = summarize(&label("acquire+release"), &pair, elapsed, rtt_p50);
    Ok(vec![a, r, p])
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
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>8}  notes",
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
        "{:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.0} {:>7.2}x  {}",
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
