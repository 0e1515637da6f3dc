//! Phase 4, `handoff (N clients)`: N clients loop acquire/release on one resource; the
//! latency from a release to the next grant, FIFO shares, and the node CPU per grant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::LockError;

use super::report::{histogram, summarize};
use super::usage::NodeCpu;
use super::{PhaseReport, Servers};

/// Phase 4: `n` clients loop acquire/release on one resource.
pub(super) fn contention(
    servers: &Servers,
    n: usize,
    run_for: Duration,
    rtt_p50: f64,
    node: Option<&NodeCpu>,
) -> Result<PhaseReport, LockError> {
    let resource = format!("bench/contended/{n}");
    let epoch = Instant::now();
    // Nanoseconds since `epoch` at which the last holder started its release (0: none yet).
    let released_at = AtomicU64::new(0);
    let mut cpu_before = None;
    let (histograms, elapsed) = servers.run_together(
        n,
        run_for,
        || cpu_before = node.map(NodeCpu::read),
        |i, client, ready, stop| -> Result<(Histogram<u64>, u64), LockError> {
            let id = format!("contender-{i}");
            let mut h = histogram();
            let mut grants = 0;
            ready();
            while !stop.load(Ordering::Acquire) {
                match client.acquire(&resource, &id, 5_000, Some(5_000)) {
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
                client.release(&resource, &id)?;
            }
            Ok((h, grants))
        },
    )?;
    let cpu_used = match (cpu_before, node.map(NodeCpu::read)) {
        (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(a)),
        _ => None,
    };
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
