//! The chaos suite's short CI run (README, "Chaos testing"): three `udplock server`
//! processes behind the fault-injecting relay, 40 s of kills, pauses, partitions and network
//! degradation on a fixed seed, then the simulator's mutual exclusion and fencing checkers
//! over the recorded history and the liveness check. No timing assertions beyond the
//! harness's generous liveness bound: it must pass with both CPUs busy.

use std::time::Duration;

use udplock::chaos::schedule::{self, Fault};
use udplock::chaos::{run, Config};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");
const SEED: u64 = 5;
const DURATION: Duration = Duration::from_secs(40);

/// The seed's schedule holds each kind of process and network fault at least once, so the
/// run below tests what it claims to (a changed generator would need another seed).
#[test]
fn the_ci_seed_injects_every_kind_of_fault() {
    let episodes = schedule::generate(SEED, 3, false, DURATION.as_millis() as u64);
    let has = |pred: &dyn Fn(&Fault) -> bool| episodes.iter().flat_map(|e| &e.faults).any(pred);
    assert!(has(&|f| matches!(
        f,
        Fault::Kill { .. } | Fault::TotalRestart
    )));
    assert!(has(&|f| matches!(f, Fault::Pause { .. })));
    assert!(has(&|f| matches!(
        f,
        Fault::Partition { .. } | Fault::Isolate { .. }
    )));
    assert!(has(&|f| matches!(f, Fault::Network(_))));
}

#[test]
fn forty_seconds_of_faults_on_three_nodes() {
    let config = Config {
        seed: SEED,
        nodes: 3,
        duration: DURATION,
        durability: "os".into(),
        clients: 4,
        resources: 3,
        shards: 4,
        // Twice the default: the test binary's nodes are debug builds on a busy machine.
        election_timeout: "300ms".into(),
        joined: false,
        dead_after: None,
        bin: BIN.into(),
        first_host: 41,
        keep: false,
        unsafe_believe_extra_ms: 0,
    };
    let summary = run(&config).expect("the run starts");
    println!("{summary}");
    assert!(summary.violations.is_empty(), "{summary}");
    assert!(summary.recovered_in.is_some(), "{summary}");
    // The run did something to judge: grants, faults, datagrams the relay dropped.
    assert!(summary.grants_valid >= 20, "{summary}");
    assert!(summary.faults.values().sum::<u64>() >= 5, "{summary}");
    assert!(summary.relay["dropped by partition"] > 0, "{summary}");
    assert!(summary.relay["forwarded"] > 1_000, "{summary}");
}
