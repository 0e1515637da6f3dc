//! What a shard replica keeps on disk, and how it is written: exactly the delta the Raft core
//! hands out ([`Persist`]), in a format that a crash or a power loss at any moment leaves
//! readable. The format and the write order live here once, over any [`Disk`]: the real file
//! system ([`FsDisk`], what a node uses) or the simulator's disk, which can tear or fail a
//! write and lose what was not synced, so that the simulator runs this very code.
//!
//! Three files per shard:
//! - `shard-NNNN.state`: the Raft hard state, rewritten in place: version 2 (32 bytes) is
//!   `term u64 | vote u64 | replica u64 | check u32 | version u32 = 2` (`check`: FNV-1a 32
//!   over the first 24 bytes; `replica`: the replica id, spec §8.5 "Replica identities").
//!   Version 1 (24 bytes, `term | vote | check over 16 | 0 u32`) is still read, as a hard
//!   state without a replica id (see `read_state`);
//! - `shard-NNNN.snap`: the latest snapshot (thesis §5): `"ULSN" | index u64 | term u64 |
//!   len u64 | check u32 | data`, replaced whole (written aside, then renamed over);
//! - `shard-NNNN.log`: a 16-byte header (`"ULLOG\0\0\1" | base u64`: the index before the
//!   first record), then one record per entry: `term u64 | len u32 | check u32 | data`
//!   (big-endian; `check` is FNV-1a 32 over term, len and data), appended in index order.
//!   When Raft replaces a suffix (a follower's conflicting entries, Raft §5.3) the file is
//!   cut back to the first replaced entry first. When Raft compacts, the snapshot is written
//!   first and the log is then rewritten from the snapshot on (aside, then renamed over), so
//!   a crash between the two leaves a log whose prefix the snapshot covers, which opening
//!   drops.
//!
//! Reading back stops at the first record that is incomplete or fails its check (a write
//! torn by a crash of the machine), and cuts the file there. What each durability mode
//! survives, and the data directory around these files, is `cluster::storage`'s.

mod fs;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use self::fs::FsDisk;
use crate::core::node::ShardWrite;
use crate::core::raft::{Entry, HardState, Persist, SnapshotMeta};
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
    /// Makes the file's content durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
}

/// What a directory holds for one shard, before its files are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardFiles {
    /// Marked as recovering.
    Marked(Mark),
    /// Its state and log files, not marked.
    Present,
    /// No file of the shard.
    Missing,
}

/// What `disk` holds for `shard` (call before opening the shard's files).
pub fn shard_files<D: Disk>(disk: &D, shard: u32) -> ShardFiles {
    let exists = |suffix: &str| disk.exists(&file_name(shard, suffix));
    if exists("rejoin") {
        ShardFiles::Marked(Mark::Rejoin)
    } else if exists("new") {
        ShardFiles::Marked(Mark::New)
    } else if exists("state") || exists("log") || exists("snap") {
        ShardFiles::Present
    } else {
        ShardFiles::Missing
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

/// Deletes every file of `shard` (a replica its node dropped, or one a joined node's start
/// does not hold, `core::restart::decide_joined`): marked `rejoin` first, so that a crash
/// part-way leaves a mark (the shard is not held again), never part of a state; then its
/// state, log and snapshot files; then the marks.
pub fn remove_shard<D: Disk>(disk: &D, shard: u32, sync: bool) -> io::Result<()> {
    set_marks(disk, sync, &[(shard, Some(Mark::Rejoin))])?;
    for suffix in ["state", "log", "snap", "log.tmp", "snap.tmp"] {
        disk.remove(&file_name(shard, suffix))?;
    }
    if sync {
        disk.sync_dir()?;
    }
    set_marks(disk, sync, &[(shard, None)])
}

/// Stores one write the node core handed out ([`crate::core::node::Node::poll_persist`]),
/// in the order [`ShardWrite`] gives: a stronger recovery mark first, then the Raft delta
/// (into `store`, the shard's files; `None` for a node that keeps none), then the mark it
/// carries after. The node's shell and the simulator both store through this. An error
/// leaves the files as far as they got: the caller stops (fail-stop) before anything that
/// depends on the write leaves.
pub fn store_write<D: Disk>(
    disk: &D,
    sync: bool,
    store: Option<&mut ShardStore<D>>,
    write: &ShardWrite,
) -> io::Result<()> {
    if let Some(mark) = write.mark_first {
        set_marks(disk, sync, &[(write.shard, Some(mark))])?;
    }
    if let (Some(persist), Some(store)) = (&write.raft, store) {
        store.write(persist)?;
    }
    if let Some(mark) = write.mark_then {
        set_marks(disk, sync, &[(write.shard, mark)])?;
    }
    Ok(())
}

const RECORD_HEADER_LEN: usize = 16;
/// The hard state file, version 2: term, vote, replica id, check, version.
const STATE_LEN: usize = 32;
/// The hard state file of version 1 (before replica ids): term, vote, check, zero.
const STATE_V1_LEN: usize = 24;
/// The last 4 bytes of a version 2 hard state file.
const STATE_VERSION: u32 = 2;
const LOG_MAGIC: [u8; 8] = *b"ULLOG\0\0\x01";
const LOG_HEADER_LEN: usize = 16;
const SNAP_MAGIC: [u8; 4] = *b"ULSN";
const SNAP_HEADER_LEN: usize = 4 + 8 + 8 + 8 + 4;

/// The files of one shard, on disk `D`.
pub struct ShardStore<D: Disk = FsDisk> {
    disk: D,
    shard: u32,
    log: D::File,
    state: D::File,
    sync: bool,
    /// The index before the log file's first record (the snapshot's, when it was written).
    base: u64,
    /// File offset where entry `base + i + 1` starts; the file ends at `end`.
    offsets: Vec<u64>,
    end: u64,
    /// The snapshot the files hold.
    snapshot: SnapshotMeta,
}

/// What a shard's files held when opened.
pub struct Persisted {
    pub hard: HardState,
    pub snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// The entries after the snapshot, in index order.
    pub log: Vec<Entry>,
}

impl ShardStore<FsDisk> {
    /// Opens (creating) the shard's files in the directory `dir` and reads back what they
    /// hold.
    pub fn open(dir: &Path, shard: u32, sync: bool) -> io::Result<(ShardStore, Persisted)> {
        ShardStore::open_on(FsDisk::new(dir)?, shard, sync)
    }

    /// Opens the shard's files in `dir` EMPTY: see [`ShardStore::open_empty_on`].
    pub fn open_empty(dir: &Path, shard: u32, sync: bool) -> io::Result<ShardStore> {
        ShardStore::open_empty_on(FsDisk::new(dir)?, shard, sync)
    }
}

impl<D: Disk> ShardStore<D> {
    /// Opens (creating) the shard's files on `disk` and reads back what they hold.
    pub fn open_on(disk: D, shard: u32, sync: bool) -> io::Result<(ShardStore<D>, Persisted)> {
        let state = disk.open(&file_name(shard, "state"), false)?;
        let log = disk.open(&file_name(shard, "log"), false)?;
        if sync {
            // The files' names must survive a power loss too.
            disk.sync_dir()?;
        }
        let hard = read_state(&state)?;
        let snapshot = read_snapshot(disk.read(&file_name(shard, "snap"))?)?;
        let snap_meta = snapshot.as_ref().map(|(meta, _)| *meta).unwrap_or_default();
        let mut bytes = log.read_all()?;
        let base = if bytes.is_empty() {
            log.write_at(&log_header(snap_meta.index), 0)?;
            bytes.extend_from_slice(&log_header(snap_meta.index));
            snap_meta.index
        } else if bytes.len() >= LOG_HEADER_LEN && bytes[..8] == LOG_MAGIC {
            u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"))
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shard {shard}: the log file is not in a format this node knows"),
            ));
        };
        if base > snap_meta.index {
            // The log was rewritten after a snapshot this directory no longer holds (files
            // lost or mixed up): the entries up to `base` are gone.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "shard {shard}: the log starts after entry {base}, but the snapshot file \
                     covers only {}",
                    snap_meta.index
                ),
            ));
        }
        let mut entries = Vec::new();
        let mut offsets = Vec::new();
        let mut at = LOG_HEADER_LEN;
        while let Some((term, data)) = read_record(&bytes[at..]) {
            offsets.push(at as u64);
            entries.push(Entry {
                term,
                index: base + entries.len() as u64 + 1,
                data: data.to_vec(),
            });
            at += RECORD_HEADER_LEN + data.len();
        }
        if at < bytes.len() {
            log::warn!(
                "shard {shard}: {} bytes at the end of the log do not form a record; cut",
                bytes.len() - at
            );
            log.set_len(at as u64)?;
        }
        // A crash between writing a snapshot and rewriting the log leaves entries the
        // snapshot covers: Raft takes only what follows it.
        let log_after: Vec<Entry> = if snap_meta.index > base {
            let matches = entries
                .iter()
                .find(|e| e.index == snap_meta.index)
                .is_some_and(|e| e.term == snap_meta.term);
            if matches {
                entries
                    .into_iter()
                    .filter(|e| e.index > snap_meta.index)
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            entries
        };
        check_terms(shard, &hard, snap_meta, &log_after)?;
        let mut store = ShardStore {
            disk,
            shard,
            log,
            state,
            sync,
            base,
            offsets,
            end: at as u64,
            snapshot: SnapshotMeta::default(),
        };
        if snap_meta.index > base {
            // Bring the file in line with what Raft will hold.
            store.rewrite_log(snap_meta.index, &log_after)?;
        }
        store.snapshot = snap_meta;
        Ok((
            store,
            Persisted {
                hard,
                snapshot,
                log: log_after,
            },
        ))
    }

    /// Opens the shard's files EMPTY, whatever they held: for a replica that starts without
    /// state (spec §8.5), whose old files, if any, are not to be trusted (a rejoin cut short).
    pub fn open_empty_on(disk: D, shard: u32, sync: bool) -> io::Result<ShardStore<D>> {
        disk.remove(&file_name(shard, "snap"))?;
        for suffix in ["state", "log"] {
            let file = disk.open(&file_name(shard, suffix), true)?;
            if sync {
                file.sync()?;
            }
        }
        let (store, persisted) = ShardStore::open_on(disk, shard, sync)?;
        assert!(persisted.hard == HardState::default() && persisted.log.is_empty());
        assert!(persisted.snapshot.is_none());
        Ok(store)
    }

    /// Makes the files hold what `persist` says changed ([`crate::core::raft::Raft::take_persist`]): the hard
    /// state, then a new snapshot and the log rewritten after it, or the log cut back to
    /// `log_from - 1` and the new entries appended. Call it with every delta, before sending
    /// anything the inputs it covers produced. The bookkeeping moves only after the file
    /// did, so a failed call leaves it describing the file as it is; the caller then stops
    /// (the delta is not handed out again).
    pub fn write(&mut self, persist: &Persist) -> io::Result<()> {
        persist.check();
        if let Some(hard) = persist.hard {
            assert!(
                hard.replica != 0,
                "storing a hard state without a replica id"
            );
            let mut buf = [0u8; STATE_LEN];
            buf[0..8].copy_from_slice(&hard.term.to_be_bytes());
            buf[8..16].copy_from_slice(&hard.voted_for.unwrap_or(0).to_be_bytes());
            buf[16..24].copy_from_slice(&hard.replica.to_be_bytes());
            let check = fnv32(&buf[..24]);
            buf[24..28].copy_from_slice(&check.to_be_bytes());
            buf[28..32].copy_from_slice(&STATE_VERSION.to_be_bytes());
            self.state.write_at(&buf, 0)?;
            if self.sync {
                self.state.sync()?;
            }
        }
        if let Some((meta, data)) = &persist.snapshot {
            // Compaction or an installed snapshot: the snapshot first, then the log from it.
            assert!(
                meta.index > self.snapshot.index,
                "snapshot {meta:?} after {:?}",
                self.snapshot
            );
            self.write_snapshot(*meta, data)?;
            self.rewrite_log(meta.index, &persist.entries)?;
            self.snapshot = *meta;
            return Ok(());
        }
        let Some(from) = persist.log_from else {
            return Ok(());
        };
        // The stored log ends at `base + offsets.len()`; the delta starts within it or right
        // after it, never before what the file holds (Raft truncates only after its snapshot).
        let held = self.offsets.len() as u64;
        assert!(
            from > self.base && from <= self.base + held + 1,
            "a log delta from {from}, the file holds {}..={}",
            self.base + 1,
            self.base + held
        );
        let keep = (from - self.base - 1) as usize;
        if keep < self.offsets.len() {
            let end = self.offsets[keep];
            self.log.set_len(end)?;
            self.end = end;
            self.offsets.truncate(keep);
        }
        if !persist.entries.is_empty() {
            let mut buf = Vec::new();
            let mut offsets = Vec::with_capacity(persist.entries.len());
            for entry in &persist.entries {
                offsets.push(self.end + buf.len() as u64);
                write_record(&mut buf, entry);
            }
            if let Err(e) = self.log.write_at(&buf, self.end) {
                // Cut whatever part of the write landed, so no stale record follows `end`.
                let _ = self.log.set_len(self.end);
                return Err(e);
            }
            self.end += buf.len() as u64;
            self.offsets.extend(offsets);
        }
        if self.sync {
            self.log.sync()?;
        }
        Ok(())
    }

    /// The disk the files are on.
    pub fn disk(&self) -> &D {
        &self.disk
    }
}

impl<D: Disk> ShardStore<D> {
    /// Replaces the shard's file `suffix` by `bytes` whole (see [`Disk::replace`]).
    fn replace(&self, suffix: &str, bytes: &[u8]) -> io::Result<D::File> {
        self.disk
            .replace(&file_name(self.shard, suffix), bytes, self.sync)
    }

    fn write_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(SNAP_HEADER_LEN + data.len());
        bytes.extend_from_slice(&SNAP_MAGIC);
        bytes.extend_from_slice(&meta.index.to_be_bytes());
        bytes.extend_from_slice(&meta.term.to_be_bytes());
        bytes.extend_from_slice(&(data.len() as u64).to_be_bytes());
        let check = record_check(&bytes[4..28], data);
        bytes.extend_from_slice(&check.to_be_bytes());
        bytes.extend_from_slice(data);
        self.replace("snap", &bytes)?;
        Ok(())
    }

    /// Replaces the log file with `entries`, which follow index `base`.
    fn rewrite_log(&mut self, base: u64, entries: &[Entry]) -> io::Result<()> {
        let mut bytes = log_header(base).to_vec();
        let mut offsets = Vec::new();
        for entry in entries {
            offsets.push(bytes.len() as u64);
            write_record(&mut bytes, entry);
        }
        let file = self.replace("log", &bytes)?;
        self.log = file;
        self.base = base;
        self.offsets = offsets;
        self.end = bytes.len() as u64;
        Ok(())
    }
}

/// Raft's order of what it persisted (Raft Figure 2; `RaftLog::from_persisted` asserts it):
/// terms are never 0, never go back from the snapshot's on, and never pass the vote's term,
/// which is written before the entries. Records that pass their checks but break it were not
/// written by this shard's replica as they stand (files of another shard or node, or edited):
/// an error, as a damaged snapshot is, rather than Raft's assertion at start.
fn check_terms(shard: u32, hard: &HardState, snap: SnapshotMeta, log: &[Entry]) -> io::Result<()> {
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

fn log_header(base: u64) -> [u8; LOG_HEADER_LEN] {
    let mut header = [0u8; LOG_HEADER_LEN];
    header[..8].copy_from_slice(&LOG_MAGIC);
    header[8..].copy_from_slice(&base.to_be_bytes());
    header
}

/// The name of `shard`'s file `suffix` (`shard-0007.log`).
fn file_name(shard: u32, suffix: &str) -> String {
    format!("shard-{shard:04}.{suffix}")
}

/// The snapshot file's meta and data, from its bytes (`None`: no file). A damaged one is an
/// error: the log it replaced is gone.
fn read_snapshot(bytes: Option<Vec<u8>>) -> io::Result<Option<(SnapshotMeta, Arc<Vec<u8>>)>> {
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

/// Reads the hard state file: version 2, or version 1 (written before replica ids), which
/// gives replica id 0, so that the replica draws a fresh one (`Raft::restore`) and stores it
/// at once. Why that is safe: a version 1 node wrote CONFIG entries in the layout without
/// replica ids (8 bytes per member), which this version does not decode, so the only shards
/// it can restore are those whose configuration is the static one, where every static voter
/// counts whatever replica id it answers with (spec §8.5, "Replica identities"); the first
/// CONFIG written later names the id it answers with from then on. Its term, vote and log are
/// its own, so it is restored, not rejoined.
fn read_state(file: &impl DiskFile) -> io::Result<HardState> {
    let buf = file.read_all()?;
    if buf.is_empty() {
        return Ok(HardState::default());
    }
    let u32_at = |at: usize| u32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_be_bytes(buf[at..at + 8].try_into().unwrap());
    let v2 = buf.len() >= STATE_LEN
        && u32_at(28) == STATE_VERSION
        && u32_at(24) == fnv32(&buf[..24])
        && u64_at(16) != 0;
    let v1 = !v2 && buf.len() >= STATE_V1_LEN && u32_at(16) == fnv32(&buf[..16]);
    if !v1 && !v2 {
        // A vote that cannot be read back might have been given: refuse to guess.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the Raft state file is damaged; the node cannot know whom it voted for",
        ));
    }
    let vote = u64_at(8);
    Ok(HardState {
        term: u64_at(0),
        voted_for: (vote != 0).then_some(vote),
        replica: if v2 { u64_at(16) } else { 0 },
    })
}

fn write_record(buf: &mut Vec<u8>, entry: &Entry) {
    let start = buf.len();
    buf.extend_from_slice(&entry.term.to_be_bytes());
    buf.extend_from_slice(&(entry.data.len() as u32).to_be_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&entry.data);
    let check = record_check(&buf[start..start + 12], &entry.data);
    buf[start + 12..start + 16].copy_from_slice(&check.to_be_bytes());
}

fn read_record(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let header = bytes.get(..RECORD_HEADER_LEN)?;
    let term = u64::from_be_bytes(header[0..8].try_into().unwrap());
    let len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
    let check = u32::from_be_bytes(header[12..16].try_into().unwrap());
    let data = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN.checked_add(len)?)?;
    (record_check(&header[..12], data) == check).then_some((term, data))
}

fn record_check(head: &[u8], data: &[u8]) -> u32 {
    let mut hash = FNV32_BASIS;
    for &b in head.iter().chain(data) {
        hash = (hash ^ u32::from(b)).wrapping_mul(FNV32_PRIME);
    }
    hash
}

const FNV32_BASIS: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

fn fnv32(bytes: &[u8]) -> u32 {
    record_check(bytes, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("udplock-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Shard 0's files in `dir`: a vote of `term`, and a log of records of `terms` (each
    /// passing its check: what a mixed-up or tampered directory holds, not a torn write).
    fn files(dir: &Path, term: u64, terms: &[u64]) {
        let disk = FsDisk::new(dir).unwrap();
        let (mut store, _) = ShardStore::open_on(disk, 0, false).unwrap();
        store
            .write(&Persist {
                hard: Some(HardState {
                    term,
                    voted_for: None,
                    replica: 7,
                }),
                snapshot: None,
                log_from: None,
                entries: Vec::new(),
                last_index: 0,
                last_term: 0,
            })
            .unwrap();
        let mut log = log_header(0).to_vec();
        for (i, &term) in terms.iter().enumerate() {
            let entry = Entry {
                term,
                index: i as u64 + 1,
                data: vec![1, 2, 3],
            };
            write_record(&mut log, &entry);
        }
        std::fs::write(dir.join(file_name(0, "log")), log).unwrap();
    }

    /// Found by the `log` fuzz target: a log whose records all pass their checks but whose
    /// terms go back, or pass the vote's term, or are 0, was handed to Raft, whose restore
    /// asserts on it: the node panicked at start instead of saying its files are damaged.
    #[test]
    fn a_log_whose_terms_break_raft_order_is_an_error_not_a_panic() {
        for (name, vote, terms) in [
            ("back", 3, &[3, 1][..]),
            ("past-vote", 2, &[1, 3][..]),
            ("zero", 3, &[0][..]),
        ] {
            let dir = dir(name);
            files(&dir, vote, terms);
            let opened = ShardStore::open(&dir, 0, false);
            let error = opened.err().unwrap_or_else(|| panic!("{name}: opened"));
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{name}: {error}");
            let _ = std::fs::remove_dir_all(&dir);
        }
        // In order, within the vote's term: read back.
        let dir = dir("ordered");
        files(&dir, 3, &[1, 1, 3]);
        let (_, read) = ShardStore::open(&dir, 0, false).expect("a good log opens");
        assert_eq!(read.log.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
