//! What a run reports: one [`PhaseReport`] per phase, made from a histogram of samples, and
//! the whole [`BenchReport`]; as table rows (what `udplock bench` prints as each phase
//! completes) or as one JSON object (`--json`).

use std::time::Duration;

use hdrhistogram::Histogram;

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
    /// Replicated acquire and release: p50 divided by the p50 of the replication
    /// message-pattern floor measured in the same loop (`floors`).
    pub p50_ratio_to_replication_floor: Option<f64>,
    /// The target for this figure, in words, where it has one.
    pub goal: Option<&'static str>,
    /// Node replicas in this process that the node CPU and memory figures cover (0: the
    /// service is elsewhere, no such figures).
    pub replicas: usize,
    /// Contention runs: CPU time of all node threads per grant, when embedded. The
    /// replication floor's row: CPU time of the pattern's threads (leader and followers) per
    /// operation, the CPU floor of one replicated operation.
    pub server_cpu_us_per_grant: Option<f64>,
    /// `server_cpu_us_per_grant` is the replication floor's threads', not the nodes'.
    pub cpu_of_floor: bool,
    /// The uncontended pair's row: `server_cpu_us_per_grant` is the nodes' CPU per replicated
    /// operation (an acquire or a release), and this its ratio to the replication floor's CPU
    /// per operation of the same loop (issue 13's target: ≤ 1.5×).
    pub cpu_ratio_to_floor: Option<f64>,
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

pub(super) fn histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

pub(super) fn summarize(
    name: &str,
    h: &Histogram<u64>,
    elapsed: Duration,
    rtt_p50_us: f64,
) -> PhaseReport {
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
        p50_ratio_to_replication_floor: None,
        goal: None,
        replicas: 0,
        server_cpu_us_per_grant: None,
        cpu_of_floor: false,
        cpu_ratio_to_floor: None,
        grants_min_max: None,
        rss_bytes_per_held_lock: None,
        ops_ratio_to_first: None,
        election_timeout_max_ms: None,
        p50_ratio_to_election_timeout_max: None,
        elections: None,
    }
}

pub(super) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

/// The floor's row: the raw round trip, whose p50 the other rows of its loop are divided by
/// (so its own ratio is 1).
pub(super) fn summarize_floor(name: &str, h: &Histogram<u64>, elapsed: Duration) -> PhaseReport {
    PhaseReport {
        p50_ratio_to_rtt: 1.0,
        ..summarize(name, h, elapsed, 0.0)
    }
}

/// The ops/s of a row measured in a loop that interleaves several (one of each per
/// iteration), whose overall rate says little about any one: what one caller doing only
/// that, back to back, achieves (1 / mean).
pub(super) fn back_to_back_ops_per_sec(h: &Histogram<u64>) -> f64 {
    if h.mean() > 0.0 {
        1e9 / h.mean()
    } else {
        0.0
    }
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
    if let Some(ratio) = p.p50_ratio_to_replication_floor {
        notes.push(format!("{ratio:.2}x the replication floor"));
    }
    match p.server_cpu_us_per_grant {
        Some(cpu) if p.cpu_of_floor => {
            notes.push(format!("cpu {cpu:.2} µs/op (leader + followers)"));
        }
        Some(cpu) if p.cpu_ratio_to_floor.is_some() => notes.push(format!(
            "node cpu {cpu:.2} µs/op{per_replica}, {:.2}x the floor's",
            p.cpu_ratio_to_floor.unwrap_or_default()
        )),
        Some(cpu) => notes.push(format!("node cpu {cpu:.2} µs/grant{per_replica}")),
        None => {}
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

/// The report as one JSON object (the schema: [`crate::json::BenchReport`]). Figures that
/// do not apply to a phase, or are not finite, are `null`.
pub fn to_json(r: &BenchReport) -> String {
    use crate::json::{rounded, BenchPhase};
    let positive = |v: f64| rounded(v).filter(|v| *v > 0.0);
    let phases = r
        .phases
        .iter()
        .map(|p| BenchPhase {
            name: &p.name,
            samples: p.samples,
            p50_us: rounded(p.p50_us),
            p90_us: rounded(p.p90_us),
            p99_us: rounded(p.p99_us),
            p999_us: rounded(p.p999_us),
            max_us: rounded(p.max_us),
            ops_per_sec: positive(p.ops_per_sec),
            p50_ratio_to_rtt: positive(p.p50_ratio_to_rtt),
            p50_ratio_to_replication_floor: p.p50_ratio_to_replication_floor.and_then(rounded),
            goal: p.goal,
            replicas: p.replicas,
            server_cpu_us_per_grant: p.server_cpu_us_per_grant.and_then(rounded),
            server_cpu_ratio_to_floor: p.cpu_ratio_to_floor.and_then(rounded),
            grants_per_client_min: p.grants_min_max.map(|g| g.0),
            grants_per_client_max: p.grants_min_max.map(|g| g.1),
            rss_bytes_per_held_lock: p.rss_bytes_per_held_lock.and_then(rounded),
            ops_ratio_to_first: p.ops_ratio_to_first.and_then(|r| rounded(r.1)),
            first_clients: p.ops_ratio_to_first.map(|r| r.0),
            election_timeout_max_ms: p.election_timeout_max_ms.and_then(rounded),
            p50_ratio_to_election_timeout_max: p
                .p50_ratio_to_election_timeout_max
                .and_then(rounded),
            elections: p.elections,
        })
        .collect();
    crate::json::to_line(&crate::json::BenchReport {
        target: &r.target,
        cpus: r.cpus,
        phases,
        notes: &r.notes,
    })
}

#[cfg(test)]
mod json_tests {
    use super::*;

    /// Issue 11 item 7: a NaN figure (a phase with no samples, a ratio to a zero) printed
    /// `NaN` with `{:.3}`, which no JSON parser reads; now it is `null`, and the field names
    /// are today's.
    #[test]
    fn a_nan_figure_is_null_and_the_output_parses() {
        let mut phase = summarize("acquire", &histogram(), Duration::from_secs(1), 10.0);
        phase.p50_us = f64::NAN;
        phase.server_cpu_us_per_grant = Some(f64::INFINITY);
        phase.grants_min_max = Some((3, 5));
        phase.p50_ratio_to_replication_floor = Some(1.25);
        let report = BenchReport {
            target: "embedded \"x\"".into(),
            cpus: 2,
            phases: vec![phase],
            notes: vec!["a note".into()],
        };
        let line = to_json(&report);
        let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
        let p = &v["phases"][0];
        assert!(p["p50_us"].is_null(), "{line}");
        assert!(p["server_cpu_us_per_grant"].is_null(), "{line}");
        assert_eq!(p["grants_per_client_min"], 3);
        assert_eq!(p["grants_per_client_max"], 5);
        assert_eq!(p["samples"], 0);
        assert_eq!(p["p50_ratio_to_replication_floor"], 1.25);
        assert!(p["first_clients"].is_null());
        assert_eq!(v["target"], "embedded \"x\"");
        assert_eq!(v["notes"][0], "a note");
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for key in [
            "name",
            "samples",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "ops_per_sec",
            "p50_ratio_to_rtt",
            "p50_ratio_to_replication_floor",
            "goal",
            "replicas",
            "server_cpu_us_per_grant",
            "server_cpu_ratio_to_floor",
            "grants_per_client_min",
            "grants_per_client_max",
            "rss_bytes_per_held_lock",
            "ops_ratio_to_first",
            "first_clients",
            "election_timeout_max_ms",
            "p50_ratio_to_election_timeout_max",
            "elections",
        ] {
            assert!(keys.contains(&key), "{key} missing from {line}");
        }
    }
}
