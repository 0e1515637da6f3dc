//! The deterministic whole-service simulator (issue 3 §5): a fixed sweep of seeds in CI, each
//! a safety phase with faults and a liveness phase after healing, with lock clients and the
//! checkers of `udplock::sim`; and the named scenarios, one test each. A failure prints the
//! seed and the command that reproduces it; `udplock sim --seeds N` soaks.

use udplock::sim::{self, Scenario, SimConfig};

/// Seconds of faults per seed in the sweep (then 5 s healed), as `udplock sim --seconds`.
const SWEEP_SECONDS: u64 = 10;

/// Seconds of faults of the production-compaction runs: long enough to apply the 16,384
/// entries a replica snapshots after (`replica::COMPACT_EVERY_DEFAULT`) and more.
const PRODUCTION_COMPACTION_SECONDS: u64 = 300;
/// The seed of that run (one of the production-compaction class).
const PRODUCTION_COMPACTION_SEED: u64 = 3;

fn sweep(nodes: usize, seeds: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    let mut grants = 0;
    let mut lost_state = 0;
    let mut torn_writes = 0;
    let mut power_losses = 0;
    let mut fsync_power_losses = 0;
    let mut sent_before_own_write = 0;
    let mut junk_snapshots = 0;
    let mut membership_changes = 0;
    let mut joined_crashes = 0;
    let mut forged_joins = 0;
    let (mut stops, mut leaves) = (0, 0);
    let (mut replicas_created, mut replicas_dropped) = (0, 0);
    let (mut members_pages, mut clients_beyond_given) = (0, 0);
    let (mut address_retries, mut tokens_expired) = (0, 0);
    let (mut wal_retired, mut wal_compactions) = (0, 0);
    for seed in seeds {
        let config = SimConfig::new(seed, nodes, SWEEP_SECONDS);
        match sim::run(&config) {
            Ok(report) => {
                grants += report.grants;
                lost_state += report.disk_losses + report.amnesia_restarts;
                torn_writes += report.torn_writes;
                power_losses += report.power_losses;
                fsync_power_losses += report.fsync_power_losses;
                sent_before_own_write += report.sent_before_own_write;
                junk_snapshots += report.junk_snapshots;
                // Joined runs move replicas by changes of their own (`placement.rs`).
                if !config.joined {
                    membership_changes += report.membership_changes;
                }
                replicas_created += report.replicas_created;
                replicas_dropped += report.replicas_dropped;
                joined_crashes += report.joined_crashes;
                forged_joins += report.forged_joins;
                members_pages += report.members_pages;
                clients_beyond_given += report.clients_beyond_given;
                stops += report.stops;
                leaves += report.leaves;
                address_retries += report.address_retries;
                tokens_expired += report.address_tokens_expired;
                wal_retired += report.wal_segments_retired;
                wal_compactions += report.wal_compactions;
            }
            Err(f) => failures.push(f.to_string()),
        }
    }
    // Failed seeds first: when a change breaks most seeds early, the coverage below is
    // missing too, and the failures say why.
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Restarts without state (issue 7 item 1) must have happened for the sweep to say
    // anything about them.
    assert!(lost_state > 0, "no node ever restarted without its state");
    assert!(torn_writes > 0, "no write ever failed part-way");
    // The write-ahead log's tiny simulated segments rolled over and retired, and shards that
    // held the oldest back were compacted for it (issue 13 item 1).
    assert!(
        wal_retired > 0 && wal_compactions > 0,
        "segments retired {wal_retired}, compactions for the log {wal_compactions}"
    );
    assert!(power_losses > 0, "no `os` node ever lost power");
    assert!(fsync_power_losses > 0, "no `fsync` node ever lost power");
    // Issue 13: leaders sent Appends while they wrote their entries.
    assert!(
        sent_before_own_write > 0,
        "no node ever sent before its own write was stored"
    );
    assert!(
        junk_snapshots > 0,
        "no follower was ever sent a junk snapshot"
    );
    assert!(grants > 0, "the clients never got a lock");
    // Address validation (spec §7.2.5) was on and the clients went through it.
    assert!(address_retries > 0, "no client was ever answered RETRY");
    // Runs shorter than a token's lifetime, on wall clocks skewed within the bound (spec
    // §7.2.5): no genuine token was ever refused for its time, by the node that made it or
    // by another.
    assert_eq!(tokens_expired, 0, "tokens refused for their time");
    // Graceful stops of both kinds (SIGTERM; and with --leave-on-stop, a SWIM leave).
    assert!(
        stops > 0 && leaves > 0,
        "graceful stops without a leave {stops}, with one {leaves}"
    );
    // Joined clusters (issue 10), one seed in seven: a member without replicas crashed and
    // came back, a forger without the key asked to join, and every member held every other
    // alive at the end.
    assert!(joined_crashes > 0, "no joined node ever crashed");
    // Joined runs' clients, each given one node, found the others by discovery (spec §7.1.8).
    assert!(
        members_pages > 0 && clients_beyond_given > 0,
        "MEMBERS pages read {members_pages}, clients beyond their node {clients_beyond_given}"
    );
    assert!(forged_joins > 0, "no forger ever asked to join");
    // And joined nodes got replicas when leaders added them, and dropped them when removed
    // (spec §8.1, "Replicas on demand").
    assert!(
        replicas_created > 0 && replicas_dropped > 0,
        "replicas created {replicas_created}, dropped {replicas_dropped}"
    );
    // Single-server membership changes (issue 10) on 4 nodes or more, one seed in four.
    assert_eq!(
        membership_changes > 0,
        nodes >= 4,
        "membership changes committed: {membership_changes}"
    );
}

#[test]
fn three_node_clusters_survive_faults() {
    sweep(3, 0..400);
}

#[test]
fn five_node_clusters_survive_faults() {
    sweep(5, 1_000..1_150);
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let a = sim::run(&SimConfig::new(7, 3, 3)).unwrap();
    let b = sim::run(&SimConfig::new(7, 3, 3)).unwrap();
    let key = |r: &sim::SimReport| {
        (
            r.events,
            r.messages_delivered,
            r.entries_applied,
            r.leaders_elected,
            r.ops,
            r.grants,
        )
    };
    assert_eq!(key(&a), key(&b));
    assert!(a.entries_applied > 100, "{a:?}");
    assert!(a.grants > 10, "{a:?}");
}

/// Determinism (issue 9 item 6): two runs of one seed deliver the same events, in the same
/// order, at the same times, with the same bytes — the digest of the whole trace, not only
/// the report — for one shard and for many, and for a joined run; and the digest tells two
/// seeds apart.
#[test]
fn a_seed_gives_the_same_event_trace_twice() {
    let mut digests = Vec::new();
    // Seed 5 is a joined run: its clients discover the nodes through MEMBERS (spec §7.1.8).
    for (seed, shards) in [(7, 1), (8, 16), (5, 4)] {
        let mut config = SimConfig::new(seed, 3, 3);
        config.shards = shards;
        let a = sim::run(&config).unwrap_or_else(|f| panic!("{f}"));
        let b = sim::run(&config).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(a.trace, b.trace, "seed {seed}: {a:?}\n{b:?}");
        assert!(a.events > 1_000, "{a:?}");
        digests.push(a.trace);
    }
    assert_ne!(digests[0], digests[1], "two seeds, one trace digest");
}

/// Snapshots at the production cadence (issue 9 item 6): with the shard's defaults a replica
/// snapshots every 16,384 applied entries, which the sweep's short runs never reach (their
/// seeds of that class, `PRODUCTION_COMPACTION_SEEDS_EVERY`, run whole logs). A seed of the
/// class runs here for five minutes of simulated time (about 22,000 entries), with every
/// client the simulator has on one shard, under the usual faults: it must pass, and its
/// replicas must have persisted a snapshot. (One seed: each costs seconds; `udplock sim
/// --seed 3 --seconds 300 --shards 1` and its neighbours soak more.)
#[test]
fn production_compaction_intervals_under_faults() {
    let seed = PRODUCTION_COMPACTION_SEED;
    let mut config = SimConfig::new(seed, 3, PRODUCTION_COMPACTION_SECONDS);
    assert!(
        config.production_compaction,
        "seed {seed} is of another class"
    );
    (config.shards, config.clients, config.resources) = (1, 8, 4);
    let report = sim::run(&config).unwrap_or_else(|f| panic!("{f}"));
    assert!(
        report.snapshots > 0,
        "no replica took a snapshot at the production cadence: {report:?}"
    );
}

fn scenario(scenario: Scenario) {
    for seed in 0..8 {
        if let Err(f) = sim::run_scenario(scenario, seed) {
            panic!("{f}");
        }
    }
}

#[test]
fn scenario_stale_leader_read() {
    scenario(Scenario::StaleLeaderRead);
}

#[test]
fn scenario_figure_8() {
    scenario(Scenario::Figure8);
}

#[test]
fn scenario_partial_partition() {
    scenario(Scenario::PartialPartition);
}

#[test]
fn scenario_late_hand_off() {
    scenario(Scenario::LateHandOff);
}

#[test]
fn scenario_new_leader_unapplied() {
    scenario(Scenario::NewLeaderUnapplied);
}

#[test]
fn scenario_duplicate_after_failover() {
    scenario(Scenario::DuplicateAfterFailover);
}

#[test]
fn scenario_restarted_leader_late_answers() {
    scenario(Scenario::RestartedLeaderLateAnswers);
}

#[test]
fn scenario_late_ack_after_state_loss() {
    scenario(Scenario::LateAckAfterStateLoss);
}

#[test]
fn scenario_replaced_voter() {
    scenario(Scenario::ReplacedVoter);
}

#[test]
fn scenario_older_snapshot() {
    scenario(Scenario::OlderSnapshot);
}

#[test]
fn scenario_late_timeout_now() {
    scenario(Scenario::LateTimeoutNow);
}

#[test]
fn scenario_overloaded_release() {
    scenario(Scenario::OverloadedRelease);
}

#[test]
fn scenario_release_replay() {
    scenario(Scenario::ReleaseReplay);
}

/// Issue 7 item 4: a leader lease is only as good as the clock it is counted on. With a clock
/// that stands still while its node is paused (what `CLOCK_MONOTONIC` does while a Linux
/// machine is suspended), a paused leader wakes inside a lease its followers stopped
/// honouring long ago, and the lease-safety checker fires; with the simulator's normal
/// pause (a clock that kept counting, as `CLOCK_BOOTTIME` does, which the shells read) the
/// same seeds pass. The seeds are the sweep's first ones, whose faults include pauses of the
/// leader.
#[test]
fn a_clock_that_stops_during_a_pause_breaks_the_lease_and_the_real_clock_does_not() {
    let (paused, fired) = clock_experiment(
        40,
        |config| config.clock_stops_during_pauses = true,
        |report| report.pauses > 0,
        &["lease safety"],
    );
    // Pauses are one fault of a dozen: about half the seeds have one. The floor is a
    // coverage check (the experiment must have paused leaders to say anything), set well
    // below what the runs draw: the faults come from the same rng as everything else, so a
    // legitimate change in the nodes' behaviour moves which seeds get one.
    assert!(paused >= 10, "pauses happened in only {paused} of 40 seeds");
    assert!(fired > 0, "a stopped clock never broke a lease in 40 seeds");
}

/// Runs the sweep's first `seeds` seeds as they are, each of which must pass, then again with
/// `beyond` applied, where the only checkers allowed to fire are `may_fire`. Returns how many
/// seeds had the fault (`had`, judged on the normal run) and how many broke a lease.
fn clock_experiment(
    seeds: u64,
    beyond: impl Fn(&mut SimConfig),
    had: impl Fn(&sim::SimReport) -> bool,
    may_fire: &[&str],
) -> (u64, u64) {
    let (mut with_fault, mut fired) = (0, 0);
    for seed in 0..seeds {
        let mut config = SimConfig::new(seed, 3, SWEEP_SECONDS);
        let report = sim::run(&config).unwrap_or_else(|f| panic!("{f}"));
        with_fault += u64::from(had(&report));
        beyond(&mut config);
        if let Err(failure) = sim::run(&config) {
            assert!(
                may_fire.iter().any(|c| failure.what.contains(c)),
                "seed {seed}: {}",
                failure.what
            );
            fired += 1;
        }
    }
    (with_fault, fired)
}

/// Issue 9 item 6: clocks that step within the drift bound break nothing, clocks that stall
/// or jump beyond it break leases — as the spec says (client protocol §6.4, "The clock": the
/// bound on rates is its one assumption about clocks). Every random run steps clock rates
/// within the bound, adversarially too (a shard's leader at the slowest rate, the others at
/// the fastest); the experiment turns the same faults into stalls of a running leader's
/// clock and forward jumps of a node's clock, and the lease-safety checker fires.
#[test]
fn clocks_within_the_drift_bound_break_nothing_and_beyond_it_break_leases() {
    // A node's clock that jumps forward also ends the locks its shards lead early (a lock's
    // TTL runs on the leader's clock, spec §8.8): a client still holds one when the next is
    // granted, with no two leader leases at once, and the mutual-exclusion checker fires
    // instead (seed 12 once SWIM pings grew: leader 1 jumps 979 ms at t+4.624 s; client 5's
    // lock of 704 ms, granted at t+4.571 s, ends at once; client 4 gets it at t+4.625 s).
    let (stepped, fired) = clock_experiment(
        30,
        |config| config.clock_faults_beyond_bound = true,
        |report| report.clock_faults > 0,
        &["lease safety", "mutual exclusion"],
    );
    // A clock fault is one fault of thirteen: most seeds have one (24 of 30 on this code;
    // 19 with a change elsewhere that moved the draws). A coverage floor, as above.
    assert!(
        stepped >= 10,
        "clocks stepped in only {stepped} of 30 seeds"
    );
    assert!(
        fired > 0,
        "clocks beyond the bound never broke a lease in 30 seeds"
    );
}

/// Address tokens that expire (spec §7.2.5, "Expiry"): sessions that live longer than a token
/// (`ADDRESS_TOKEN_LIFETIME_S`, 240 s) meet RETRYs for expired tokens — from nodes whose wall
/// clocks are skewed from each other within `ADDRESS_TOKEN_SKEW_S` — and still get every
/// answer: the client resends at once with the fresh token (spec §7.1.9 rule 4), so the
/// RETRYs converge. Five minutes without crashes, partitions or pauses (loss, duplication
/// and reordering stay on), so that sessions last; the run fails if no token ever expired.
#[test]
fn sessions_outliving_their_address_tokens_get_every_answer() {
    let mut config = SimConfig::new(TOKEN_EXPIRY_SEED, 3, TOKEN_EXPIRY_SECONDS);
    config.faults = false;
    let report = sim::run(&config).unwrap_or_else(|f| panic!("{f}"));
    assert!(
        report.address_tokens_expired > 0,
        "no token ever expired: {report:?}"
    );
    assert!(report.ops_answered > 1_000, "{report:?}");
    assert_eq!(report.ops_gave_up, 0, "{report:?}");
}

/// The seed of that run, and its seconds: more than one token lifetime (240 s).
const TOKEN_EXPIRY_SEED: u64 = 11;
const TOKEN_EXPIRY_SECONDS: u64 = 300;

/// Issue 13 item 2 (Raft thesis §10.2.1): a leader sends its entries while it writes them,
/// and counts itself toward a majority only once its own write is reported stored. Here its
/// leaders count their log as soon as they append (`leader_counts_unstored_appends`) while
/// the simulator still stores each disk node's writes a moment later: a leader answers an
/// entry only it and one follower hold, crashes before its write, and the entry is lost;
/// the safety checkers fire. The same seeds pass as they are. Seeds found with
/// `udplock sim --seed 0 --seeds 600 --mutation leader-counts-unstored` (6 of 600 fired);
/// a legitimate change of the nodes' behaviour moves them: search again so.
#[test]
fn a_leader_counting_its_unstored_log_is_caught_and_the_real_order_is_not() {
    let fired = mutation_experiment(&[47, 285, 341], |config| {
        config.leader_counts_unstored_appends = true;
    });
    assert!(
        fired > 0,
        "a leader counting its unstored log was never caught"
    );
}

/// The reverse (Raft §5, Figure 2): datagrams that leave before the writes they wait for
/// (`Transmit::after` ignored, `sends_before_stored`): a follower acknowledges entries it
/// then loses in a crash, and the safety checkers fire. Found with
/// `udplock sim --seed 0 --seeds 600 --mutation sends-before-stored` (2 of 600 fired, one on election safety).
#[test]
fn an_acknowledgement_before_its_write_is_caught() {
    let fired = mutation_experiment(&[126], |config| config.sends_before_stored = true);
    assert!(
        fired > 0,
        "an acknowledgement before its write was never caught"
    );
}

/// Runs each seed as it is (it must pass), then with `mutate` applied, where only the
/// checkers of what a majority stored may fire. Returns how many seeds they fired on.
fn mutation_experiment(seeds: &[u64], mutate: impl Fn(&mut SimConfig)) -> u64 {
    let mut fired = 0;
    for &seed in seeds {
        let mut config = SimConfig::new(seed, 3, SWEEP_SECONDS);
        sim::run(&config).unwrap_or_else(|f| panic!("{f}"));
        mutate(&mut config);
        if let Err(failure) = sim::run(&config) {
            let durability = ["state machine safety", "leader completeness", "lost"];
            assert!(
                durability.iter().any(|c| failure.what.contains(c)),
                "seed {seed}: {}",
                failure.what
            );
            fired += 1;
        }
    }
    fired
}
