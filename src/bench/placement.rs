//! Where the benchmark's threads run: the placements, the CPUs this process may use, and
//! pinning a thread to one.

use super::BenchConfig;

/// Where the threads run. On a small VM the placement decides the floor (a round trip costs
/// ~11 µs when both ends share a vCPU and ~55 µs across vCPUs, mostly the cost of waking an
/// idle vCPU), so the runner pins the threads and compares each figure with the floor of the
/// same placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No pinning (a service in other processes: its placement is not ours to choose).
    Unpinned,
    /// Client, echo and node threads all on the first allowed CPU.
    OneCpu,
    /// Client threads on the first allowed CPU, the echo and every node thread on the second.
    TwoCpus,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::OneCpu => "one cpu",
            Placement::TwoCpus => "two cpus",
        }
    }

    /// (client CPU, server-side CPU) among the CPUs this process may use, `None` = unpinned.
    pub(super) fn cpus(self, allowed: &[usize]) -> Option<(usize, usize)> {
        match (self, allowed) {
            (Placement::Unpinned, _) | (_, []) => None,
            (Placement::OneCpu, [first, ..]) => Some((*first, *first)),
            (Placement::TwoCpus, [first, second, ..]) => Some((*first, *second)),
            (Placement::TwoCpus, [_]) => None,
        }
    }
}

/// The CPUs this process may run on.
pub(super) fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// The placements a run measures by default: both on a machine with two CPUs or more, one
/// CPU otherwise; unpinned for a service outside this process.
pub fn default_placements(config: &BenchConfig) -> Vec<Placement> {
    match (config.servers.is_empty(), allowed_cpus().len()) {
        (false, _) => vec![Placement::Unpinned],
        (true, 0 | 1) => vec![Placement::OneCpu],
        (true, _) => vec![Placement::OneCpu, Placement::TwoCpus],
    }
}

pub(super) fn pin_current(cpu: Option<usize>) {
    if let Some(id) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            log::warn!("bench: could not pin a thread to CPU {id}; figures are unpinned");
        }
    }
}
