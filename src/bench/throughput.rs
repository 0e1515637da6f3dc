//! Phase 3, `throughput (N clients)`: N client threads, each with its own `Client`, loop
//! acquire+release on resources no other client uses.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::LockError;

use super::report::{histogram, record, summarize};
use super::{PhaseReport, Servers};

/// Resources each throughput client cycles through: enough that 64 clients' resources fall
/// on most shards (and so on every node's leaders), each used by one client only.
pub(super) const THROUGHPUT_RESOURCES_PER_CLIENT: usize = 16;

/// What the clients of one throughput run did besides their pairs, summed over them: a
/// retransmission means a datagram lost (a full socket buffer) or an answer later than the
/// client's RTO, either of which the pairs' latency includes.
#[derive(Default)]
pub(super) struct ClientsDid {
    pub retransmits: u64,
    pub redirects: u64,
}

/// Phase 3: `n` clients, each its own `Client` and thread, loop acquire+release on resources
/// no other client uses; one op is one pair.
pub(super) fn throughput(
    servers: &Servers,
    n: usize,
    run_for: Duration,
    rtt_p50: f64,
) -> Result<(PhaseReport, ClientsDid), LockError> {
    let (results, elapsed) = servers.run_together(
        n,
        run_for,
        || {},
        |i, client, ready, stop| -> Result<(Histogram<u64>, u64, ClientsDid), LockError> {
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
            ready();
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
            let stats = client.stats();
            let did = ClientsDid {
                retransmits: stats.retransmits,
                redirects: stats.redirects,
            };
            Ok((h, ops, did))
        },
    )?;
    let mut total = histogram();
    let mut ops = 0;
    let mut did = ClientsDid::default();
    for r in results {
        let (h, n, client_did) = r?;
        total.add(&h).expect("same histogram bounds");
        ops += n;
        did.retransmits += client_did.retransmits;
        did.redirects += client_did.redirects;
    }
    let mut report = summarize(
        &format!("throughput ({n} clients)"),
        &total,
        elapsed,
        rtt_p50,
    );
    report.ops_per_sec = ops as f64 / elapsed.as_secs_f64();
    Ok((report, did))
}
