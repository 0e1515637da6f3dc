//! The layout before the write-ahead log ([`super::wal`]): three files per shard, each
//! synced on its own. Kept to read a data directory an earlier version wrote, which
//! [`super::wal::Wal::open`] folds into the node's log (migration), and as the reference the
//! `log` decoder checks run against.
//!
//! - `shard-NNNN.state`: the Raft hard state, rewritten in place: version 2 (32 bytes) is
//!   `term u64 | vote u64 | replica u64 | check u32 | version u32 = 2` (`check`: FNV-1a 32
//!   over the first 24 bytes; `replica`: the replica id, spec §8.5 "Replica identities").
//!   Version 1 (24 bytes, `term | vote | check over 16 | 0 u32`) is still read, as a hard
//!   state without a replica id (see `read_state`);
//! - `shard-NNNN.snap`: the latest snapshot, as the write-ahead log keeps it too
//!   (`store::snapshot_bytes`);
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
//! torn by a crash of the machine), and cuts the file there.

use std::io;
use std::path::Path;

use super::{
    check_terms, file_name, fnv32, read_snapshot, record_check, snapshot_bytes, Disk, DiskFile,
    FsDisk, Persisted,
};
use crate::core::raft::{Entry, HardState, Persist, SnapshotMeta};

const RECORD_HEADER_LEN: usize = 16;
/// The hard state file, version 2: term, vote, replica id, check, version.
const STATE_LEN: usize = 32;
/// The hard state file of version 1 (before replica ids): term, vote, check, zero.
const STATE_V1_LEN: usize = 24;
/// The last 4 bytes of a version 2 hard state file.
const STATE_VERSION: u32 = 2;
const LOG_MAGIC: [u8; 8] = *b"ULLOG\0\0\x01";
const LOG_HEADER_LEN: usize = 16;

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
                data: data.into(),
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
        self.replace("snap", &snapshot_bytes(meta, data))?;
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

fn log_header(base: u64) -> [u8; LOG_HEADER_LEN] {
    let mut header = [0u8; LOG_HEADER_LEN];
    header[..8].copy_from_slice(&LOG_MAGIC);
    header[8..].copy_from_slice(&base.to_be_bytes());
    header
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
                data: vec![1, 2, 3].into(),
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
