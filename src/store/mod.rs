//! What a node keeps on disk for its shard replicas, and how it is written: exactly the
//! deltas the Raft cores hand out ([`crate::core::raft::Persist`]), in a format that a crash
//! or a power loss at any moment leaves readable. The format and the write order live here
//! once, over any [`Disk`]: the real file system ([`FsDisk`], what a node uses) or the
//! simulator's disk, which can tear or fail a write and lose what was not synced, so that
//! the simulator runs this very code.
//!
//! The files of a data directory:
//! - `wal-NNNNNNNNNNNNNNNN`: the node's write-ahead log ([`Wal`], module `wal`), in
//!   segments, shared by every shard: hard states, entries, snapshot and drop records, each
//!   tagged by shard and checked by CRC32C; written by group commit (one write and, under
//!   `fsync`, one `fdatasync` per turn of the node);
//! - `shard-NNNN.snap`: a shard's latest snapshot (thesis §5): `"ULSN" | index u64 | term u64
//!   | len u64 | check u32 | data` (`check`: FNV-1a 32 over index, term, len and data),
//!   replaced whole (written aside, then renamed over) before the log's record of it;
//! - `shard-NNNN.new`, `shard-NNNN.rejoin`: recovery marks ([`set_marks`],
//!   [`crate::core::restart`]);
//! - `shard-NNNN.state`, `shard-NNNN.log`: the layout before the log ([`legacy`]), read only
//!   to fold a directory an earlier version wrote into the log (migration).
//!
//! What each durability mode survives, and the data directory around these files (identity,
//! lock, boot record), is `cluster::storage`'s.

mod fs;
pub mod legacy;
pub mod wal;

use std::io;
use std::sync::Arc;

pub use self::fs::FsDisk;
pub use self::legacy::ShardStore;
pub use self::wal::{Wal, CLOSED_SEGMENTS_MAX, SEGMENT_BYTES};
use crate::core::raft::{Entry, HardState, SnapshotMeta};
use crate::core::restart::Mark;

/// Where a shard's files live: a flat directory of named files.
pub trait Disk {
    type File: DiskFile;
    /// Opens the file `name`, creating it if missing; emptied first if `truncate`.
    fn open(&self, name: &str, truncate: bool) -> io::Result<Self::File>;
    /// The whole content of `name`; `None` if there is no such file.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Makes `name` hold `bytes`, all or nothing across a crash: written to `name.tmp`
    /// (synced if `sync`), renamed over `name`, and the directory synced if `sync`. Returns
    /// the new file, open.
    fn replace(&self, name: &str, bytes: &[u8], sync: bool) -> io::Result<Self::File>;
    /// Removes `name`; no error if it is missing.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries (created, renamed, removed files) durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Whether `name` exists.
    fn exists(&self, name: &str) -> bool;
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
}

/// An open file of a [`Disk`].
pub trait DiskFile {
    fn read_all(&self) -> io::Result<Vec<u8>>;
    /// Writes all of `bytes` at `offset`, growing the file if needed.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves the file's space up to `len` bytes (`fallocate(2)`, mode 0: a shorter file
    /// grows to `len`, reading zeros past what was written), so that later writes within it
    /// neither grow the file nor, mostly, change its block map: their `sync` then writes
    /// little more than the data. Where the file system cannot, nothing happens (`Ok`).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Makes the file's content durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
}

/// What a directory holds for one shard, before it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardFiles {
    /// Marked as recovering.
    Marked(Mark),
    /// Records of it (in the node's log, or files of the layout before it), not marked.
    Present,
    /// Nothing of the shard.
    Missing,
}

/// The recovery mark `disk` holds for `shard`, if any.
pub fn shard_mark<D: Disk>(disk: &D, shard: u32) -> Option<Mark> {
    if disk.exists(&file_name(shard, "rejoin")) {
        Some(Mark::Rejoin)
    } else if disk.exists(&file_name(shard, "new")) {
        Some(Mark::New)
    } else {
        None
    }
}

/// Sets (`Some`) or removes (`None`) the recovery marks of `shards` (`shard-NNNN.new`,
/// `shard-NNNN.rejoin`: see [`crate::core::restart`]), then syncs the directory if `sync`.
/// Setting `Rejoin` removes `New`.
pub fn set_marks<D: Disk>(disk: &D, sync: bool, shards: &[(u32, Option<Mark>)]) -> io::Result<()> {
    for &(shard, mark) in shards {
        let (keep, drop) = match mark {
            Some(Mark::Rejoin) => (Some("rejoin"), Some("new")),
            Some(Mark::New) => (Some("new"), Some("rejoin")),
            None => (None, None),
        };
        if let Some(keep) = keep {
            let file = disk.open(&file_name(shard, keep), true)?;
            if sync {
                file.sync()?;
            }
        }
        match drop {
            Some(suffix) => disk.remove(&file_name(shard, suffix))?,
            None => {
                disk.remove(&file_name(shard, "rejoin"))?;
                disk.remove(&file_name(shard, "new"))?;
            }
        }
    }
    if sync {
        disk.sync_dir()?;
    }
    Ok(())
}

pub(crate) const SNAP_MAGIC: [u8; 4] = *b"ULSN";
const SNAP_HEADER_LEN: usize = 4 + 8 + 8 + 8 + 4;

/// What a shard's files held when opened.
pub struct Persisted {
    pub hard: HardState,
    pub snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// The entries after the snapshot, in index order.
    pub log: Vec<Entry>,
}

/// Raft's order of what it persisted (Raft Figure 2; `RaftLog::from_persisted` asserts it):
/// terms are never 0, never go back from the snapshot's on, and never pass the vote's term,
/// which is written before the entries. Records that pass their checks but break it were not
/// written by this shard's replica as they stand (files of another shard or node, or edited):
/// an error, as a damaged snapshot is, rather than Raft's assertion at start.
pub(crate) fn check_terms(
    shard: u32,
    hard: &HardState,
    snap: SnapshotMeta,
    log: &[Entry],
) -> io::Result<()> {
    let mixed = |what: String| {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("shard {shard}: {what}: the files are damaged or not this shard's"),
        ))
    };
    if snap.term > hard.term {
        return mixed(format!(
            "the snapshot is of term {}, after the Raft state's term {}",
            snap.term, hard.term
        ));
    }
    let mut previous = snap.term;
    for entry in log {
        if entry.term == 0 || entry.term < previous || entry.term > hard.term {
            return mixed(format!(
                "log entry {} has term {} after term {previous} (the Raft state's term is {})",
                entry.index, entry.term, hard.term
            ));
        }
        previous = entry.term;
    }
    Ok(())
}

/// The name of `shard`'s file `suffix` (`shard-0007.log`).
pub(crate) fn file_name(shard: u32, suffix: &str) -> String {
    format!("shard-{shard:04}.{suffix}")
}

/// The snapshot file's meta and data, from its bytes (`None`: no file). A damaged one is an
/// error: the log it replaced is gone.
pub(crate) fn read_snapshot(
    bytes: Option<Vec<u8>>,
) -> io::Result<Option<(SnapshotMeta, Arc<Vec<u8>>)>> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let damaged = || io::Error::new(io::ErrorKind::InvalidData, "the snapshot file is damaged");
    if bytes.len() < SNAP_HEADER_LEN || bytes[..4] != SNAP_MAGIC {
        return Err(damaged());
    }
    let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (index, term, len) = (u64_at(4), u64_at(12), u64_at(20));
    let check = u32::from_be_bytes(bytes[28..32].try_into().expect("4 bytes"));
    let data = &bytes[SNAP_HEADER_LEN..];
    if data.len() as u64 != len || record_check(&bytes[4..28], data) != check || index == 0 {
        return Err(damaged());
    }
    Ok(Some((
        SnapshotMeta { index, term },
        Arc::new(data.to_vec()),
    )))
}

pub(crate) fn record_check(head: &[u8], data: &[u8]) -> u32 {
    let mut hash = FNV32_BASIS;
    for &b in head.iter().chain(data) {
        hash = (hash ^ u32::from(b)).wrapping_mul(FNV32_PRIME);
    }
    hash
}

const FNV32_BASIS: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

pub(crate) fn fnv32(bytes: &[u8]) -> u32 {
    record_check(bytes, &[])
}

/// The snapshot file's bytes (see the module docs): `"ULSN" | index u64 | term u64 | len u64 |
/// check u32 | data`, `check` FNV-1a 32 over index, term and len, then the data.
pub(crate) fn snapshot_bytes(meta: SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SNAP_HEADER_LEN + data.len());
    bytes.extend_from_slice(&SNAP_MAGIC);
    bytes.extend_from_slice(&meta.index.to_be_bytes());
    bytes.extend_from_slice(&meta.term.to_be_bytes());
    bytes.extend_from_slice(&(data.len() as u64).to_be_bytes());
    let check = record_check(&bytes[4..28], data);
    bytes.extend_from_slice(&check.to_be_bytes());
    bytes.extend_from_slice(data);
    bytes
}
