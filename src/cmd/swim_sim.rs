//! `udplock swim-sim`: the SWIM-only scale simulation (issue 10 §3), printed as a table.

use clap::Args;
use udplock::core::placement;
use udplock::sim::swim::{self as swimsim, mean, SwimReport, SwimSimConfig};
use udplock::LockError;

#[derive(Args)]
pub struct SwimSimArgs {
    /// First seed (each group size and each false-positive run uses seeds from it on).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Group sizes of the detection and message table, comma-separated (8 to 4096).
    #[arg(long, value_delimiter = ',', default_value = "8,16,64,256,1000")]
    members: Vec<usize>,
    /// Crashes measured per group size (at most a quarter of the group per seed; more seeds
    /// run until this many are measured).
    #[arg(long, default_value_t = 40)]
    crashes: usize,
    /// Steady periods before the crashes (messages per member per period are measured here).
    #[arg(long, default_value_t = 30)]
    periods: u64,
    /// Message loss of the detection table (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Group size of the false-positive runs.
    #[arg(long, default_value_t = 64)]
    fp_members: usize,
    /// Periods of each false-positive run (0 skips them).
    #[arg(long, default_value_t = 10_000)]
    fp_periods: u64,
    /// Message loss of the false-positive runs.
    #[arg(long, default_value_t = 0.05)]
    fp_loss: f64,
    /// Without the Lifeguard mechanisms in the detection table (the false-positive table
    /// always shows both).
    #[arg(long)]
    no_lifeguard: bool,
    /// Print only the placement table instead (spec §8.13): one node joining N = 3 to 64
    /// nodes, 64 and 4096 shards, R replicas each.
    #[arg(long)]
    placement: bool,
    /// Replicas per shard of the placement table.
    #[arg(long, default_value_t = placement::REPLICAS_DEFAULT)]
    replicas: usize,
}

pub fn run(a: SwimSimArgs) -> Result<(), LockError> {
    if a.placement {
        return placement_table(a.replicas);
    }
    if !(0.0..=1.0).contains(&a.loss) || !(0.0..=1.0).contains(&a.fp_loss) {
        return Err(LockError::InvalidArgument("loss must be 0 to 1".into()));
    }
    if let Some(bad) = a
        .members
        .iter()
        .chain([&a.fp_members])
        .find(|n| **n < 8 || **n > swimsim::MEMBERS_MAX)
    {
        return Err(LockError::InvalidArgument(format!(
            "group size {bad}: must be 8 to {}",
            swimsim::MEMBERS_MAX
        )));
    }
    let started = std::time::Instant::now();
    println!(
        "SWIM detection and messages (lifeguard {}, loss {:.1}%, protocol period 1 s; first detection expected e/(e-1) = {:.2} periods)",
        if a.no_lifeguard { "off" } else { "on" },
        a.loss * 100.0,
        std::f64::consts::E / (std::f64::consts::E - 1.0)
    );
    println!(
        "{:>7} {:>6} {:>9} {:>10} {:>10} {:>9} {:>9} {:>8} {:>10} {:>9} {:>8} {:>6}",
        "members",
        "crashes",
        "first(p)",
        "first(t)",
        "all-susp",
        "all-dead",
        "msgs/m/p",
        "B/m/p",
        "pp/m/p",
        "join-pp/m",
        "fp-susp",
        "fp-dead"
    );
    for &n in &a.members {
        let per_seed = (n / 4).clamp(1, a.crashes.max(1));
        let mut reports: Vec<SwimReport> = Vec::new();
        let mut seed = a.seed;
        while reports.iter().map(|r| r.detections.len()).sum::<usize>() < a.crashes
            || reports.is_empty()
        {
            let mut c = SwimSimConfig::new(seed, n);
            c.lifeguard = !a.no_lifeguard;
            c.loss = a.loss;
            c.periods = a.periods;
            c.crashes = per_seed.min(a.crashes);
            let r = swimsim::run(&c);
            let stuck = r.detections.is_empty() && c.crashes > 0;
            reports.push(r);
            seed += 1;
            if stuck || a.crashes == 0 {
                break;
            }
        }
        let ds: Vec<_> = reports.iter().flat_map(|r| r.detections.clone()).collect();
        let avg = |f: &dyn Fn(&SwimReport) -> f64| {
            reports.iter().map(f).sum::<f64>() / reports.len() as f64
        };
        println!(
            "{:>7} {:>6} {:>9.2} {:>10.2} {:>10.2} {:>9.2} {:>9.3} {:>8.0} {:>10.4} {:>9.1} {:>8} {:>6}",
            n,
            format!(
                "{}{}",
                ds.len(),
                match reports.iter().map(|r| r.undetected).sum::<usize>() {
                    0 => String::new(),
                    u => format!("+{u}!"),
                }
            ),
            mean(&ds, |d| d.first_periods),
            mean(&ds, |d| d.first_time_periods),
            mean(&ds, |d| d.all_suspect_periods),
            mean(&ds, |d| d.all_dead_periods),
            avg(&|r| r.messages_per_member_period),
            avg(&|r| r.probe_bytes_per_member_period),
            avg(&|r| r.push_pulls_per_member_period),
            avg(&|r| r.join_push_pulls_per_member),
            reports.iter().map(|r| r.suspicions_of_live).sum::<u64>(),
            reports.iter().map(|r| r.live_declared_dead).sum::<u64>(),
        );
    }
    println!("  first(p): periods of the first detector's own until its probe failed (the paper's measure); first(t): simulated time / period;");
    println!("  all-susp / all-dead: time until every live member suspects it / holds it dead; msgs/m/p: ping+ack+ping-req+nack per member per period;");
    println!(
        "  B/m/p: bytes of those messages (SWIM record bodies, spec §8.12) per member per period;"
    );
    println!("  pp/m/p: periodic PUSH_PULL chunks per member per period; join-pp/m: PUSH_PULL chunks per member while the group formed.");

    if a.fp_periods > 0 {
        println!("");
        println!(
            "False positives: {} members, {} periods each, protocol period 1 s",
            a.fp_members, a.fp_periods
        );
        println!(
            "{:<34} {:>9} {:>11} {:>9} {:>7} {:>9}",
            "run", "lifeguard", "suspicions", "dead", "pauses", "max LHM"
        );
        let runs: [(&str, f64, u64); 3] = [
            ("loss", a.fp_loss, 0),
            ("pauses (3 periods, 1 per 10)", 0.0, 10),
            ("loss + pauses", a.fp_loss, 10),
        ];
        for (name, loss, pause_every) in runs {
            for lifeguard in [false, true] {
                let mut c = SwimSimConfig::new(a.seed, a.fp_members);
                c.lifeguard = lifeguard;
                c.loss = loss;
                c.periods = a.fp_periods;
                c.pause_every = pause_every;
                let r = swimsim::run(&c);
                let label = if loss > 0.0 {
                    format!("{name} {:.0}%", loss * 100.0)
                } else {
                    name.to_string()
                };
                println!(
                    "{:<34} {:>9} {:>11} {:>9} {:>7} {:>9}",
                    label,
                    if lifeguard { "on" } else { "off" },
                    r.suspicions_of_live,
                    r.live_declared_dead,
                    r.pauses,
                    r.health_max_seen
                );
            }
        }
        println!("  suspicions: distinct (member, incarnation) suspected while alive; dead: the same, declared dead (a paused member is alive).");
    }
    println!("({:.1} wall s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Issue 10's placement target: "a joining node takes about R/N of all replicas (within 10
/// percentage points); no other replica moves", with the spread of replicas over the nodes.
fn placement_table(replicas: usize) -> Result<(), LockError> {
    placement::validate_replicas(replicas)
        .map_err(|e| LockError::InvalidArgument(e.to_string()))?;
    let started = std::time::Instant::now();
    println!(
        "Placement (rendezvous hashing, spec §8.13): node N+1 joins nodes 1..=N, R = {replicas}"
    );
    println!(
        "{:>4} {:>6} {:>7} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8} {:>8}",
        "N", "shards", "taken", "share", "R/(N+1)", "diff", "moved", "max/node", "min/node", "mean"
    );
    let mut worst = Vec::new();
    for shards in [64u32, 4096] {
        let mut most: f64 = 0.0;
        for n in 3u64..=64 {
            let r = placement::join_report(n, shards, replicas);
            let want = (replicas as f64 / (n + 1) as f64).min(1.0);
            let diff = r.share() - want;
            most = most.max(diff.abs());
            println!(
                "{:>4} {:>6} {:>7} {:>8.3} {:>8.3} {:>+7.3} {:>6} {:>8} {:>8} {:>8.1}",
                n,
                shards,
                r.taken,
                r.share(),
                want,
                diff,
                r.moved_elsewhere,
                r.per_node_max,
                r.per_node_min,
                f64::from(shards) * replicas as f64 / (n + 1) as f64
            );
        }
        worst.push(format!("{most:.3} at {shards} shards"));
    }
    println!("  taken: shards the joiner becomes a replica of; share = taken / shards, expected R/(N+1) (N+1 counting it);");
    println!("  moved: replicas that changed other than to the joiner (0 by rendezvous hashing); max/min/mean: replicas per node after the join.");
    println!(
        "  largest |share - R/(N+1)|: {} (a binomial count: at 64 shards one standard deviation is up to 6 points)",
        worst.join(", ")
    );
    println!("({:.1} wall s)", started.elapsed().as_secs_f64());
    Ok(())
}
