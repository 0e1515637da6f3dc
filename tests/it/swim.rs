//! The SWIM-only scale simulation (issue 10 §3) on small groups: crashed members are found and
//! known dead by everyone, live ones are not, and a seed replays the same run. The measured
//! table at scale is `udplock swim-sim` (release); these check properties, not speeds.

use udplock::sim::swim::{self as swimsim, SwimSimConfig};

fn config(seed: u64, members: usize) -> SwimSimConfig {
    let mut c = SwimSimConfig::new(seed, members);
    c.crashes = 4;
    c.periods = 20;
    c
}

#[test]
fn every_crash_is_known_dead_by_all_and_no_live_member_is_suspected_without_loss() {
    for seed in 0..3 {
        let r = swimsim::run(&config(seed, 16));
        assert_eq!(r.undetected, 0, "seed {seed}: {r:?}");
        assert_eq!(r.detections.len(), 4, "seed {seed}: {r:?}");
        for d in &r.detections {
            // SWIM §3.1: some member probes the dead one within a few of its periods; the
            // suspicion timeout then declares it dead everywhere.
            assert!(d.first_periods >= 1.0 && d.first_periods <= 15.0, "{d:?}");
            assert!(d.all_suspect_periods <= d.all_dead_periods, "{d:?}");
        }
        assert_eq!(r.suspicions_of_live, 0, "seed {seed}: {r:?}");
        assert_eq!(r.live_declared_dead, 0, "seed {seed}: {r:?}");
        // One ping and one ack per member per period when nothing is lost.
        assert!(
            (1.9..=2.1).contains(&r.messages_per_member_period),
            "seed {seed}: {r:?}"
        );
    }
}

#[test]
fn under_loss_and_pauses_crashes_are_still_found_and_no_live_member_dies() {
    let mut c = config(7, 24);
    c.loss = 0.05;
    c.pause_every = 5;
    c.periods = 60;
    let r = swimsim::run(&c);
    assert_eq!(r.undetected, 0, "{r:?}");
    assert_eq!(r.detections.len(), 4, "{r:?}");
    assert!(r.pauses > 0, "the run never paused anyone: {r:?}");
    assert_eq!(r.live_declared_dead, 0, "{r:?}");
}

#[test]
fn a_seed_replays_the_same_run() {
    let mut c = config(11, 12);
    c.loss = 0.05;
    let a = swimsim::run(&c);
    let b = swimsim::run(&c);
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.detections, b.detections);
    assert_eq!(a.messages_delivered, b.messages_delivered);
    c.seed = 12;
    let other = swimsim::run(&c);
    assert_ne!(a.digest, other.digest);
}
