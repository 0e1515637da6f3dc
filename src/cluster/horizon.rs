//! The lease horizon file (spec §7.2.4) of a one-voter node without a disk (durability
//! `memory`): one line holding a wall-clock time, in microseconds since the Unix epoch, after
//! which no lease the node granted can still be valid.
//!
//! Such a node keeps its locks in memory. If it is killed and restarted at the same address,
//! its successor must not grant a lock some client still believes it holds. So before any
//! answer that grants or extends a lease past what the file covers leaves the node, the file
//! is made to cover that lease, and a node starting with the file grants nothing until the
//! time it names (its startup grace is raised to it).
//!
//! The split: the node core knows its leases, so it decides when the file must move and to
//! what (`core::node::ShardWrite::lease_horizon_us`, written
//! [`core::node::LEASE_HORIZON_AHEAD`](crate::core::node::LEASE_HORIZON_AHEAD) beyond the
//! latest lease, so a steady stream of grants rewrites it about once a second), and every
//! answer it collects after that depends on the write; the shell writes the number here, in
//! the order the core hands writes out, before sending anything that depends on it, and stops
//! if it cannot (as it does when any write fails).
//!
//! The write is a plain `pwrite` of a fixed-width line, not fsynced: it survives a crash or
//! kill of the process, not the loss of the machine's memory (power loss). A one-voter node
//! with `fsync` or `os` keeps its Raft log instead, and needs no horizon file; a replicated
//! node rejoins by the rule of spec §8.5.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::socket::wall_clock_micros;

/// The open lease horizon file.
pub struct HorizonFile {
    file: File,
}

impl HorizonFile {
    /// Opens (or creates) the file and returns it with the grace, in ms, the node must keep
    /// before granting: the time left until the horizon a previous node wrote. A file that
    /// cannot be read as a horizon means the worst: `ttl_ms_max`.
    pub fn open(path: &Path, ttl_ms_max: u32) -> io::Result<(HorizonFile, u32)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let previous = std::fs::read_to_string(path).ok();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let grace_ms = match previous.as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(line) => match line.parse::<u64>() {
                Ok(horizon_us) => {
                    let left_us = horizon_us.saturating_sub(wall_clock_micros());
                    u32::try_from(left_us.div_ceil(1_000)).unwrap_or(u32::MAX)
                }
                Err(_) => {
                    log::warn!(
                        "udplock node: {} is not a lease horizon; assuming the longest lease",
                        path.display()
                    );
                    ttl_ms_max
                }
            },
        };
        Ok((HorizonFile { file }, grace_ms))
    }

    /// Makes the file name `wall_us` (µs since the Unix epoch).
    pub fn write(&mut self, wall_us: u64) -> io::Result<()> {
        // Fixed width: the write never changes the file's length, so it replaces the line in
        // one system call.
        self.file
            .write_all_at(format!("{wall_us:020}\n").as_bytes(), 0)
    }
}
