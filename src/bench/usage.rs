//! What the node threads of this process spend: CPU time per thread (Linux schedstat) and
//! the process's resident memory, for the node CPU per grant and memory per held lock.

/// CPU time of every node thread of this process (`udplock-node-{id}`; the single node is
/// node 1 of its one-voter cluster), summed, from Linux's per-thread schedstat
/// (nanoseconds on CPU; finer than the clock ticks in `stat`).
pub(super) struct NodeCpu {
    pub(super) paths: Vec<std::path::PathBuf>,
}

impl NodeCpu {
    pub(super) fn find() -> NodeCpu {
        NodeCpu::find_named(|comm| comm.starts_with("udplock-node"))
    }

    /// The node threads whose name `keep` accepts.
    pub(super) fn find_named(keep: impl Fn(&str) -> bool) -> NodeCpu {
        NodeCpu::threads(|comm| comm.starts_with("udplock-node") && keep(comm))
    }

    /// Every thread of this process whose name `keep` accepts (node threads or not, e.g. the
    /// replication floor's).
    pub(super) fn threads(keep: impl Fn(&str) -> bool) -> NodeCpu {
        let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
        let paths = tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| keep(comm.trim()))
            })
            .map(|task| task.path().join("schedstat"))
            .collect();
        NodeCpu { paths }
    }

    /// The threads of this set that `other` does not have (a cluster started after `other`
    /// was found).
    pub(super) fn without(&self, other: &NodeCpu) -> NodeCpu {
        NodeCpu {
            paths: self
                .paths
                .iter()
                .filter(|p| !other.paths.contains(p))
                .cloned()
                .collect(),
        }
    }

    /// The threads of this set that are also in `other`.
    pub(super) fn within(&self, other: &NodeCpu) -> NodeCpu {
        NodeCpu {
            paths: self
                .paths
                .iter()
                .filter(|p| other.paths.contains(p))
                .cloned()
                .collect(),
        }
    }

    pub(super) fn read(&self) -> Option<u64> {
        if self.paths.is_empty() {
            return None;
        }
        self.paths.iter().try_fold(0u64, |sum, path| {
            let ns: u64 = std::fs::read_to_string(path)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(sum + ns)
        })
    }
}

/// This process's resident set size in bytes (Linux), for the per-held-lock memory figure.
pub(super) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1_024)
}
