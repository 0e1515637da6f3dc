//! Phases 1 and 2: one client, uncontended, acquire and release on distinct resources,
//! interleaved with the raw round trip (and, for a replicated service, the replication
//! message-pattern floor), at the scale of locks held asked for (`--held`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::client::Client;
use crate::error::LockError;

use super::floors::ReplicationFloor;
use super::report::{back_to_back_ops_per_sec, histogram, record, summarize, summarize_floor};
use super::rtt::Echo;
use super::usage::NodeCpu;
use super::PhaseReport;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    Acquire,
    Release,
}

/// Resources the uncontended loop cycles through (one acquire and release each in turn).
pub(super) const UNCONTENDED_RESOURCES: usize = 1_024;

/// Acquires (or releases) the locks `held/{i}` for `i` in `range` under a client id of its
/// own, so the table holds that many while the uncontended phase runs; four threads keep
/// several requests in flight.
pub(super) fn hold_locks(
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
/// measuring them in separate phases could compare one case with the other. With a
/// `replication` floor, one round of its message pattern joins each iteration, its row follows
/// the raw round trip's, and the acquire and release are also divided by it.
///
/// With the nodes in this process (`nodes`), the pair's row gives their CPU per replicated
/// operation over the loop (every acquire and every release is one; the timers' background
/// work while the loop measures its floors is included, so the figure can only be too high),
/// beside the floor's CPU per operation: issue 13's target is ≤ 1.5× it.
pub(super) fn uncontended(
    client: &Client,
    echo: &Echo,
    replication: Option<&ReplicationFloor>,
    nodes: Option<&NodeCpu>,
    iterations: u64,
    held: u64,
) -> Result<Vec<PhaseReport>, LockError> {
    // Names made up front: formatting in the loop would be measured too.
    let names: Vec<String> = (0..UNCONTENDED_RESOURCES)
        .map(|i| format!("bench/uncontended/{i}"))
        .collect();
    let (mut rtt, mut acq, mut rel, mut pair) =
        (histogram(), histogram(), histogram(), histogram());
    let mut replicated = histogram();
    let warmup = (iterations / 10).max(100);
    let mut lost = 0;
    let mut started = Instant::now();
    let floor_threads = replication.map(ReplicationFloor::threads_cpu);
    let (mut floor_cpu_before, mut node_cpu_before) = (None, None);
    for i in 0..iterations + warmup {
        if i == warmup {
            started = Instant::now();
            floor_cpu_before = floor_threads.as_ref().and_then(|t| t.read());
            node_cpu_before = nodes.and_then(NodeCpu::read);
        }
        let round_trip = echo.round_trip();
        let pattern = replication.map(ReplicationFloor::round_trip);
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
            match pattern {
                Some(Some(d)) => record(&mut replicated, d),
                Some(None) => lost += 1,
                None => {}
            }
            record(&mut acq, t1 - t0);
            record(&mut rel, t2 - t1);
            record(&mut pair, t2 - t0);
        }
    }
    let elapsed = started.elapsed();
    let used = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let floor_cpu = used(
        floor_cpu_before,
        floor_threads.as_ref().and_then(|t| t.read()),
    );
    let node_cpu = used(node_cpu_before, nodes.and_then(NodeCpu::read));
    if lost > 0 {
        log::warn!("raw RTT and replication floor: {lost} round trips lost on loopback");
    }
    let label = |what: &str| format!("{what} ({held} held)");
    let floor = summarize_floor("raw udp rtt", &rtt, elapsed);
    let floor_p50 = floor.p50_us;
    let mut rows = vec![
        floor,
        summarize(&label("acquire"), &acq, elapsed, floor_p50),
        summarize(&label("release"), &rel, elapsed, floor_p50),
        summarize(&label("acquire+release"), &pair, elapsed, floor_p50),
    ];
    // The loop interleaves all four.
    for (row, h) in rows.iter_mut().zip([&rtt, &acq, &rel, &pair]) {
        row.ops_per_sec = back_to_back_ops_per_sec(h);
    }
    if let Some(floor) = replication {
        let mut row = summarize(&floor.label(), &replicated, elapsed, floor_p50);
        row.ops_per_sec = back_to_back_ops_per_sec(&replicated);
        // The pattern's threads do nothing else: their CPU per operation is its CPU floor.
        row.server_cpu_us_per_grant =
            floor_cpu.map(|ns| ns as f64 / 1_000.0 / replicated.len().max(1) as f64);
        row.cpu_of_floor = true;
        // One acquire or one release is one replicated operation; the pair is two.
        for single in &mut rows[1..3] {
            single.p50_ratio_to_replication_floor = ratio(single.p50_us, row.p50_us);
        }
        if let Some(ns) = node_cpu {
            let per_op = ns as f64 / 1_000.0 / (2 * pair.len()).max(1) as f64;
            let pair_row = &mut rows[3];
            pair_row.server_cpu_us_per_grant = Some(per_op);
            pair_row.cpu_ratio_to_floor =
                row.server_cpu_us_per_grant.and_then(|f| ratio(per_op, f));
        }
        rows.insert(1, row);
    }
    Ok(rows)
}

/// `a / b`, when `b` is a measured figure.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}
