//! The fault schedule: a pure function of a seed. No clock, no IO: the same seed, node count,
//! durability and duration give the same list of faults, so a failing run names the seed that
//! reproduces its schedule (the timing of the processes around it cannot be replayed; see the
//! module docs of [`crate::chaos`]).
//!
//! A schedule is a sequence of *episodes*: a quiet gap, then one fault held for a while, then
//! healed. One fault at a time keeps a majority able to make progress most of the time, so
//! the workload keeps producing grants for the checkers to judge; the network faults are
//! sometimes combined with a process fault in the same episode.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The quiet time between two episodes, at least and at most, in ms: long enough for a
/// shard to elect a leader and grant a few locks (election timeouts are 150–300 ms).
pub const QUIET_MS_MIN: u64 = 500;
/// See [`QUIET_MS_MIN`].
pub const QUIET_MS_MAX: u64 = 2_500;
/// How long one fault is held, at least and at most, in ms. The upper end outlasts every
/// lease the workload asks for ([`super::workload::TTL_MS`]), so holds expire during faults.
pub const FAULT_MS_MIN: u64 = 100;
/// See [`FAULT_MS_MIN`].
pub const FAULT_MS_MAX: u64 = 5_000;

/// How a datagram fares in the relay while a [`Fault::Network`] holds (percentages and a
/// delay bound; a random delay in `0..=delay_ms_max` reorders datagrams too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Degrade {
    /// Datagrams dropped, in percent.
    pub loss_pct: u8,
    /// Datagrams delivered twice (the copy with its own delay), in percent.
    pub dup_pct: u8,
    /// Each delivery is delayed by a uniform draw in `0..=delay_ms_max` ms.
    pub delay_ms_max: u32,
}

/// One fault, as the harness injects it. Nodes are indices `0..nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then restart from the data directory after the episode (in `memory`
    /// durability: a restart with no state, which rejoins by the protocol's rule).
    Kill { node: usize },
    /// SIGSTOP, SIGCONT after the episode (often longer than an election timeout).
    Pause { node: usize },
    /// No datagram from `from` reaches `to`; both ways unless `one_way`.
    Partition {
        from: usize,
        to: usize,
        one_way: bool,
    },
    /// `node` cut off from every other node, both ways (clients still reach it).
    Isolate { node: usize },
    /// Every datagram through the relay (peers and clients) lost, duplicated, delayed.
    Network(Degrade),
    /// Every node SIGKILLed at once, all restarted after the episode (disk durability only:
    /// in `memory` no state would survive it).
    TotalRestart,
}

impl Fault {
    /// The name the summary counts this kind under.
    pub fn kind(&self, memory: bool) -> &'static str {
        match self {
            Fault::Kill { .. } if memory => "memory-restart",
            Fault::Kill { .. } => "kill-restart",
            Fault::Pause { .. } => "pause",
            Fault::Partition { one_way: true, .. } => "partition-one-way",
            Fault::Partition { .. } => "partition",
            Fault::Isolate { .. } => "isolate",
            Fault::Network(_) => "loss-dup-delay",
            Fault::TotalRestart => "total-restart",
        }
    }
}

/// One episode: from `start_ms` (since the run began) the `faults` hold for `hold_ms`, then
/// all are healed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    pub start_ms: u64,
    pub hold_ms: u64,
    pub faults: Vec<Fault>,
}

/// The episodes of a run of `duration_ms` over `nodes` nodes, from `seed`. `memory`: the
/// nodes keep no state on disk (no total restarts then). Every episode ends by
/// `duration_ms`.
pub fn generate(seed: u64, nodes: usize, memory: bool, duration_ms: u64) -> Vec<Episode> {
    assert!(nodes >= 2, "faults between nodes need two of them");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut episodes = Vec::new();
    let mut at = 0;
    loop {
        at += rng.gen_range(QUIET_MS_MIN..=QUIET_MS_MAX);
        // Pauses are short or long: below an election timeout (a hiccup the leader
        // survives) or well above it (a leader that wakes up deposed, with stale leases).
        let hold_ms = if rng.gen_bool(0.3) {
            rng.gen_range(FAULT_MS_MIN..300)
        } else {
            rng.gen_range(300..=FAULT_MS_MAX)
        };
        if at + hold_ms > duration_ms {
            break;
        }
        let mut faults = vec![one_fault(&mut rng, nodes, memory)];
        if !matches!(faults[0], Fault::Network(_)) && rng.gen_bool(0.25) {
            faults.push(Fault::Network(degrade(&mut rng)));
        }
        episodes.push(Episode {
            start_ms: at,
            hold_ms,
            faults,
        });
        at += hold_ms;
    }
    episodes
}

fn degrade(rng: &mut ChaCha8Rng) -> Degrade {
    Degrade {
        loss_pct: rng.gen_range(0..=30),
        dup_pct: rng.gen_range(0..=20),
        delay_ms_max: rng.gen_range(0..=50),
    }
}

fn one_fault(rng: &mut ChaCha8Rng, nodes: usize, memory: bool) -> Fault {
    let node = rng.gen_range(0..nodes);
    let other = (node + rng.gen_range(1..nodes)) % nodes;
    match rng.gen_range(0..100) {
        0..=21 => Fault::Kill { node },
        22..=41 => Fault::Pause { node },
        42..=56 => Fault::Partition {
            from: node,
            to: other,
            one_way: false,
        },
        57..=71 => Fault::Partition {
            from: node,
            to: other,
            one_way: true,
        },
        72..=81 => Fault::Isolate { node },
        82..=93 => Fault::Network(degrade(rng)),
        _ if memory => Fault::Kill { node },
        _ => Fault::TotalRestart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_another_seed_another() {
        let a = generate(7, 3, false, 600_000);
        assert_eq!(a, generate(7, 3, false, 600_000));
        assert_ne!(a, generate(8, 3, false, 600_000));
    }

    #[test]
    fn episodes_follow_each_other_within_the_run() {
        for seed in 0..50 {
            let episodes = generate(seed, 5, seed % 2 == 0, 60_000);
            assert!(!episodes.is_empty());
            let mut end = 0;
            for e in &episodes {
                assert!(e.start_ms >= end + QUIET_MS_MIN, "{e:?}");
                end = e.start_ms + e.hold_ms;
                assert!(end <= 60_000);
                for f in &e.faults {
                    match *f {
                        Fault::Kill { node } | Fault::Pause { node } | Fault::Isolate { node } => {
                            assert!(node < 5)
                        }
                        Fault::Partition { from, to, .. } => {
                            assert!(from < 5 && to < 5 && from != to)
                        }
                        Fault::Network(_) => {}
                        Fault::TotalRestart => assert!(seed % 2 == 1, "no total restart in memory"),
                    }
                }
            }
        }
    }

    /// Ten minutes of faults inject every kind (the summary's counts would show a kind
    /// that never comes up).
    #[test]
    fn ten_minutes_inject_every_kind() {
        let mut kinds = std::collections::BTreeSet::new();
        for e in generate(1, 3, false, 600_000) {
            for f in e.faults {
                kinds.insert(f.kind(false));
            }
        }
        assert_eq!(kinds.len(), 7, "{kinds:?}");
    }
}
