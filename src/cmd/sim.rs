//! `udplock sim`: the deterministic cluster simulator over a range of seeds.

use clap::Args;
use udplock::LockError;

#[derive(Args)]
pub struct SimArgs {
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many seeds, from --seed on (a soak: e.g. --seeds 10000).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards of every run (default: drawn from each seed, as the CI sweep does).
    #[arg(long)]
    shards: Option<u32>,
    /// Simulated seconds of faults per seed (a healed liveness phase of 5 s follows).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Every seed runs a joined cluster (spec §8.1): node 1 bootstraps it and holds every
    /// shard, the others join through it without replicas (the sweep runs one seed in 7 so).
    #[arg(long)]
    joined: bool,
    /// Follow one shard on stderr: every change of each node's replica of it (role, term,
    /// vote, leader, commit, lease, recovery), how each start decided it, and the faults,
    /// restarts and heal between (to read what a failing seed's shard went through).
    #[arg(long, value_name = "SHARD")]
    watch: Option<u32>,
    /// A mutation experiment the checkers must catch (to find seeds that show it):
    /// `leader-counts-unstored` (a leader counts its own log before it is stored) or
    /// `sends-before-stored` (datagrams leave before the writes they wait for).
    #[arg(long, hide = true)]
    mutation: Option<String>,
}

/// Runs every seed of the range; fails if any seed failed (each failure is printed).
pub fn run(a: SimArgs) -> Result<(), LockError> {
    let started = std::time::Instant::now();
    let (mut simulated_us, mut failed, mut address_retries) = (0u64, 0u64, 0u64);
    let mut tokens_expired = 0u64;
    // Client operations over the seeds that passed, and how many got an answer: what a
    // change of the client's rules costs or gains under the same faults.
    let (mut ops, mut ops_answered) = (0u64, 0u64);
    for seed in a.seed..a.seed.saturating_add(a.seeds) {
        let mut config = udplock::sim::SimConfig::new(seed, a.nodes, a.seconds);
        if let Some(shards) = a.shards {
            config.shards = shards;
        }
        config.watch = a.watch;
        match a.mutation.as_deref() {
            None => {}
            Some("leader-counts-unstored") => config.leader_counts_unstored_appends = true,
            Some("sends-before-stored") => config.sends_before_stored = true,
            Some(other) => {
                return Err(LockError::InvalidArgument(format!(
                    "unknown mutation {other}"
                )));
            }
        }
        if a.joined {
            config.joined = true;
            config.membership_changes = false;
        }
        match udplock::sim::run(&config) {
            Ok(r) => {
                simulated_us += r.simulated.as_micros();
                address_retries += r.address_retries;
                tokens_expired += r.address_tokens_expired;
                ops += r.ops;
                ops_answered += r.ops_answered;
                if a.seeds == 1 {
                    println!("seed {seed}: ok, {r:?}");
                }
            }
            Err(f) => {
                failed += 1;
                println!("{f}");
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{} seed(s), {failed} failed; {:.0} simulated s in {wall:.1} wall s ({:.0}x); \
         {address_retries} RETRY (address validation; {tokens_expired} for expired tokens); \
         {ops_answered} of {ops} client operations answered",
        a.seeds,
        simulated_us as f64 / 1e6,
        simulated_us as f64 / 1e6 / wall.max(1e-9)
    );
    if failed > 0 {
        return Err(LockError::InternalError(format!(
            "{failed} simulation seed(s) failed"
        )));
    }
    Ok(())
}
