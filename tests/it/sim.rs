//! The deterministic cluster simulator (issue 3 §5): a fixed sweep of seeds in CI, each a
//! safety phase with faults and a liveness phase after healing; checkers in `udplock::sim`.
//! A failure prints the seed and the command that reproduces it; `udplock sim --seeds N` soaks.

use udplock::sim::{self, SimConfig};

fn sweep(nodes: usize, seeds: std::ops::Range<u64>, seconds: u64) {
    let mut failures = Vec::new();
    for seed in seeds {
        if let Err(f) = sim::run(&SimConfig::new(seed, nodes, seconds)) {
            failures.push(f.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn three_node_clusters_survive_faults() {
    sweep(3, 0..40, 10);
}

#[test]
fn five_node_clusters_survive_faults() {
    sweep(5, 1_000..1_020, 10);
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let a = sim::run(&SimConfig::new(7, 3, 3)).unwrap();
    let b = sim::run(&SimConfig::new(7, 3, 3)).unwrap();
    assert_eq!(
        (
            a.events,
            a.messages_delivered,
            a.entries_applied,
            a.leaders_elected
        ),
        (
            b.events,
            b.messages_delivered,
            b.entries_applied,
            b.leaders_elected
        )
    );
    assert!(a.entries_applied > 100, "{a:?}");
}
