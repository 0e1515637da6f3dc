//! The node's write-ahead log: one log, in segments, for the hard state and the entries of
//! every shard the node holds, with group commit (issue 13 item 1).
//!
//! # Files
//!
//! `wal-NNNNNNNNNNNNNNNN` (the segment number, 16 hex digits, from 1, never reused while the
//! log lives): a 24-byte header, `"ULWAL\0\0\0" | version u32 = 1 | segment u64 | crc u32`
//! (`crc`: CRC32C over the 20 bytes before it), then records. A segment starts with a
//! *checkpoint*: one record per shard the node holds, restating its hard state and its
//! snapshot, so that no older segment is needed for them. Every record is framed
//! `len u32 | crc u32 | kind u8 | shard u32 | payload` (big-endian; `len`: the payload's
//! length; `crc`: CRC32C over len, kind, shard and payload):
//!
//! - kind 1, *checkpoint*: `term u64, vote u64, replica u64, snap index u64, snap term u64`;
//! - kind 2, *hard state*: `term u64, vote u64, replica u64` (vote 0: none);
//! - kind 3, *entries*: `first u64, count u32`, then per entry `term u64, len u32, data`: the
//!   log cut back to `first - 1`, then these;
//! - kind 4, *snapshot*: `index u64, term u64`: the shard's `shard-NNNN.snap` (written aside
//!   and renamed over BEFORE the record) replaces its log through `index`; the log after it
//!   follows as an entries record;
//! - kind 5, *drop*: `held u8`: forget every earlier record of the shard; 1: re-created
//!   empty (held), 0: removed.
//!
//! # Reading
//!
//! Segments in order; a gap in their numbers, a bad header or a bad record in a segment that
//! is not the last (closed: it was synced whole before the next began) is damage: an
//! `InvalidData` error naming the file. The last segment's first record that is incomplete
//! or fails its CRC is a torn tail (a crash during the write): cut there, with a warning.
//! Each shard's records are folded into its state as they come, and checked (the snapshot
//! file against the log, `store::check_terms`) only when the shard is read
//! ([`Wal::take`]): a shard that is marked as recovering is ignored, not validated. The
//! oldest segment may begin with a shard's records whose earlier entries were in a retired
//! segment: that is damage only if no later record makes them dead (a snapshot record, a
//! checkpoint past them, or entries written again from the snapshot on).
//!
//! # Writing: group commit
//!
//! [`Wal::write`] encodes a Raft delta into a buffer; [`Wal::commit`] writes the buffer in
//! ONE `write_at` at the end of the current segment and, under `fsync`, ONE `fdatasync`,
//! whatever the number of shards and writes since the last commit. A failed write cuts the
//! segment back to where it ended and returns the error; the caller stops (fail-stop).
//! Snapshots are rare and sync inline (see [`Wal::write`]).
//!
//! # Segments and retirement
//!
//! A segment past [`SEGMENT_BYTES`] is closed (synced under `fsync`) and the next begins with
//! a checkpoint (synced, and the directory, under `fsync`). The oldest closed segment is
//! deleted once no held shard's live entries (those after its snapshot) are in it; a shard
//! that holds it back when more than [`CLOSED_SEGMENTS_MAX`] are closed is named by
//! [`Wal::holding_back`], and the shell has its replica snapshotted
//! (`Node::compact`): the snapshot's write moves its live entries into the current segment;
//! a replica that cannot compact (nothing applied since its snapshot) has its live entries
//! written again instead ([`Wal::relocate`]).
//!
//! # Migration
//!
//! A directory in the layout before this log (`shard-NNNN.state`, `.log`: [`super::legacy`])
//! is read with that code and folded into a new log when opened: the log written, synced,
//! the directory synced, then the old files deleted. While old files exist they win: a crash
//! part-way redoes it from them. Marked shards are not migrated.

use std::collections::{BTreeMap, VecDeque};
use std::io;

use super::legacy::ShardStore;
use super::{
    check_terms, file_name, read_snapshot, shard_mark, snapshot_bytes, Disk, DiskFile, Persisted,
    ShardFiles,
};
use crate::core::raft::{Entry, HardState, Persist, SnapshotMeta};

/// A segment past this many bytes is closed and the next one begun: big enough that a
/// rollover (a sync of the directory, a checkpoint of every shard) is rare beside the
/// commits, small enough that retiring one frees a useful amount.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The current segment's space is reserved this far ahead of its records (never past the
/// segment's size), a chunk at a time: a commit that writes into reserved space grows
/// neither the file nor its block map, so its `fdatasync` writes little more than the data
/// (on the 2-vCPU VM's ext4, 2026-12-07: an `fdatasync` after a 128-byte or 1,500-byte
/// write p50 ~100–135 µs into `fallocate`d space against ~160–260 µs appending, one writer;
/// ~115–180 against ~200–250 µs with three at once). The log's end is then where the records
/// stop: the zeros after it are reserved space, not a torn write.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// Closed segments kept before the shards that hold the oldest back are snapshotted
/// ([`Wal::holding_back`]): the log stays below about `(CLOSED_SEGMENTS_MAX + 1) *
/// segment_bytes` plus what compaction takes to catch up.
pub const CLOSED_SEGMENTS_MAX: usize = 4;

const SEGMENT_MAGIC: [u8; 8] = *b"ULWAL\0\0\0";
const SEGMENT_VERSION: u32 = 1;
/// `magic | version u32 | segment u64 | crc u32`.
const SEGMENT_HEADER_LEN: usize = 24;
/// `len u32 | crc u32 | kind u8 | shard u32`.
const RECORD_HEADER_LEN: usize = 13;
const _: () = assert!(SEGMENT_HEADER_LEN == 8 + 4 + 8 + 4);
const _: () = assert!(RECORD_HEADER_LEN == 4 + 4 + 1 + 4);

const KIND_CHECKPOINT: u8 = 1;
const KIND_HARD: u8 = 2;
const KIND_ENTRIES: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const KIND_DROP: u8 = 5;

const CHECKPOINT_LEN: usize = 40;
const HARD_LEN: usize = 24;
const SNAPSHOT_LEN: usize = 16;

/// The name of segment `number`.
fn segment_name(number: u64) -> String {
    format!("wal-{number:016x}")
}

/// The segment number a file name gives, if it is a segment's.
fn segment_number(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The shard a file of the layout before the log names (`shard-0007.state`, `.log`).
fn legacy_shard(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("shard-")?;
    let (number, suffix) = rest.split_once('.')?;
    matches!(suffix, "state" | "log")
        .then(|| number.parse().ok())
        .flatten()
}

fn damaged(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// What the log says of one shard, folded record by record while reading.
#[derive(Debug, Default)]
struct Scanned {
    /// Some record of it follows its last drop (or a drop that re-created it).
    present: bool,
    hard: HardState,
    /// The snapshot the records say the log follows.
    base: SnapshotMeta,
    /// Its log after `base`, in index order.
    entries: Vec<Entry>,
    /// See [`Held::runs`].
    runs: Vec<(u64, u64)>,
    /// The entries after `base` through this index are missing (0: none are): the log's
    /// oldest segment may begin with records whose earlier entries were in a retired
    /// segment, because a later record makes them dead (a snapshot, or entries from the
    /// base on written again). Read with entries missing, the shard is damaged.
    missing_through: u64,
    /// A record of entries the snapshot before it covers: reported if the shard is read,
    /// unless a later snapshot or drop record makes it dead.
    broken: Option<String>,
}

impl Scanned {
    /// The index of `entries[0]` (or where it would be).
    fn start(&self) -> u64 {
        self.base.index.max(self.missing_through) + 1
    }
}

/// The bookkeeping of a shard the node holds (read, or created empty).
#[derive(Debug, Default)]
struct Held {
    hard: HardState,
    snapshot: SnapshotMeta,
    /// The index of its last entry (the snapshot's if none follows it).
    last: u64,
    /// Where its live entries are: `(first index, segment)`, in index order, each run
    /// holding the entries from its first index to the next run's (or the last). The first
    /// run's segment is the oldest this shard needs.
    runs: Vec<(u64, u64)>,
}

impl Held {
    /// The log is cut back to `from - 1` and `count` entries follow, in `segment`.
    fn append(&mut self, from: u64, count: usize, segment: u64) {
        push_run(&mut self.runs, from, count, segment);
        self.last = from - 1 + count as u64;
    }
}

/// Keeps `runs` in line with an entries record from `from` with `count` entries.
fn push_run(runs: &mut Vec<(u64, u64)>, from: u64, count: usize, segment: u64) {
    while runs.last().is_some_and(|&(first, _)| first >= from) {
        runs.pop();
    }
    if count > 0 && runs.last().is_none_or(|&(_, s)| s != segment) {
        runs.push((from, segment));
    }
}

/// The segment being written.
struct Segment<F> {
    number: u64,
    file: F,
    /// Where the next record goes (the end of the log in this segment).
    end: u64,
    /// How far space is reserved ahead of the records ([`PREALLOCATE_BYTES`]; it reads as
    /// zeros), or was asked for: a file system that refused is not asked again for this
    /// segment. At least `end`.
    allocated: u64,
}

/// The node's write-ahead log on disk `D`: see the module docs.
pub struct Wal<D: Disk> {
    disk: D,
    sync: bool,
    segment_bytes: u64,
    /// `None` until [`Wal::reset`] for a directory whose files are not trusted.
    current: Option<Segment<D::File>>,
    /// The closed segments still on disk, oldest first.
    closed: VecDeque<u64>,
    /// Encoded records not written yet.
    buf: Vec<u8>,
    /// The shards the node holds.
    held: BTreeMap<u32, Held>,
    /// What the log held when opened, of the shards not read yet.
    scanned: BTreeMap<u32, Scanned>,
}

impl<D: Disk + Clone> Wal<D> {
    /// Opens the log on `disk` and reads what it holds (folding a directory of the layout
    /// before it into it first: see the module docs). `sync`: durability `fsync`.
    pub fn open(disk: D, sync: bool, segment_bytes: u64) -> io::Result<Wal<D>> {
        let mut wal = Wal::unread(disk, sync, segment_bytes);
        let names = wal.disk.list()?;
        let mut numbers: Vec<u64> = names.iter().filter_map(|n| segment_number(n)).collect();
        numbers.sort_unstable();
        let mut legacy: Vec<u32> = names.iter().filter_map(|n| legacy_shard(n)).collect();
        legacy.sort_unstable();
        legacy.dedup();
        if !legacy.is_empty() {
            wal.migrate(&numbers, &legacy)?;
        } else if numbers.is_empty() {
            wal.start_segment(1)?;
        } else {
            wal.read(&numbers)?;
        }
        Ok(wal)
    }

    /// The log of a directory whose files are not trusted (an `os` run's, in another boot):
    /// nothing is read; [`Wal::reset`] must come before any write.
    pub fn untrusted(disk: D, sync: bool, segment_bytes: u64) -> Wal<D> {
        Wal::unread(disk, sync, segment_bytes)
    }

    fn unread(disk: D, sync: bool, segment_bytes: u64) -> Wal<D> {
        assert!(segment_bytes > 0);
        Wal {
            disk,
            sync,
            segment_bytes,
            current: None,
            closed: VecDeque::new(),
            buf: Vec::new(),
            held: BTreeMap::new(),
            scanned: BTreeMap::new(),
        }
    }

    /// Deletes every segment, every snapshot file and every file of the layout before the
    /// log, then begins a new log, empty: for a directory whose files are not trusted, once
    /// every shard that is held again is marked.
    pub fn reset(&mut self) -> io::Result<()> {
        for name in self.disk.list()? {
            let snap = name.starts_with("shard-")
                && (name.ends_with(".snap") || name.ends_with(".snap.tmp"));
            let old = legacy_shard(&name).is_some() || name.ends_with(".log.tmp");
            if segment_number(&name).is_some() || snap || old {
                self.disk.remove(&name)?;
            }
        }
        if self.sync {
            self.disk.sync_dir()?;
        }
        self.current = None;
        self.closed.clear();
        self.buf.clear();
        self.held.clear();
        self.scanned.clear();
        self.start_segment(1)
    }

    /// Reads the segments `numbers` (sorted).
    fn read(&mut self, numbers: &[u64]) -> io::Result<()> {
        for pair in numbers.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(damaged(format!(
                    "the write-ahead log misses segment {} (between {} and {}): it cannot be \
                     read back",
                    segment_name(pair[0] + 1),
                    segment_name(pair[0]),
                    segment_name(pair[1])
                )));
            }
        }
        for (k, &number) in numbers.iter().enumerate() {
            let last = k + 1 == numbers.len();
            let name = segment_name(number);
            let file = self.disk.open(&name, false)?;
            let bytes = file.read_all()?;
            if let Err(why) = check_header(&bytes, number) {
                if !last {
                    return Err(damaged(format!("{name}: {why} (a closed segment)")));
                }
                // The last segment's creation was torn: it holds nothing the ones before do
                // not (its checkpoint restates them), so it goes, and the one before it takes
                // the writes again.
                log::warn!("{name}: {why}; a segment whose creation was cut short: removed");
                drop(file);
                self.disk.remove(&name)?;
                match numbers[..k].last() {
                    Some(&previous) => {
                        let file = self.disk.open(&segment_name(previous), false)?;
                        // Closed when it was full: its records fill the file.
                        let end = file.read_all()?.len() as u64;
                        self.closed.pop_back();
                        self.current = Some(Segment {
                            number: previous,
                            file,
                            end,
                            allocated: end,
                        });
                    }
                    None => self.start_segment(number)?,
                }
                return Ok(());
            }
            let mut at = SEGMENT_HEADER_LEN;
            let mut allocated = bytes.len() as u64;
            while at < bytes.len() {
                match read_frame(&bytes[at..]) {
                    Some((kind, shard, payload)) => {
                        self.scan(number, kind, shard, payload)
                            .map_err(|why| damaged(format!("{name}, byte {at}: {why}")))?;
                        at += RECORD_HEADER_LEN + payload.len();
                    }
                    // Space reserved ahead of the records (`PREALLOCATE_BYTES`): the end.
                    None if last && bytes[at..].iter().all(|&b| b == 0) => break,
                    None if last => {
                        log::warn!(
                            "{name}: {} bytes at the end of the write-ahead log do not form a \
                             record; cut",
                            bytes.len() - at
                        );
                        file.set_len(at as u64)?;
                        allocated = at as u64;
                        break;
                    }
                    None => {
                        return Err(damaged(format!(
                            "{name}: the record at byte {at} is damaged (a closed segment: not \
                             a torn write)"
                        )));
                    }
                }
            }
            if last {
                self.current = Some(Segment {
                    number,
                    file,
                    end: at as u64,
                    allocated,
                });
            } else {
                self.closed.push_back(number);
            }
        }
        Ok(())
    }

    /// Folds one record (read from segment `segment`) into its shard's state; an error: a
    /// record whose checksum holds but whose payload does not read as its kind.
    fn scan(&mut self, segment: u64, kind: u8, shard: u32, payload: &[u8]) -> Result<(), String> {
        let s = self.scanned.entry(shard).or_default();
        let u64_at = |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().expect("8"));
        let hard = || {
            let vote = u64_at(8);
            HardState {
                term: u64_at(0),
                voted_for: (vote != 0).then_some(vote),
                replica: u64_at(16),
            }
        };
        let wrong = |what: &str| Err(format!("a {what} record of {} bytes", payload.len()));
        match kind {
            KIND_CHECKPOINT => {
                if payload.len() != CHECKPOINT_LEN {
                    return wrong("checkpoint");
                }
                s.present = true;
                s.hard = hard();
                let meta = SnapshotMeta {
                    index: u64_at(24),
                    term: u64_at(32),
                };
                if meta.index > s.base.index {
                    s.entries.retain(|e| e.index > meta.index);
                    s.base = meta;
                    if s.entries.is_empty() {
                        s.runs.clear();
                    }
                }
            }
            KIND_HARD => {
                if payload.len() != HARD_LEN {
                    return wrong("hard state");
                }
                s.present = true;
                s.hard = hard();
            }
            KIND_ENTRIES => {
                let Some((first, entries)) = decode_entries(payload) else {
                    return wrong("entries");
                };
                s.present = true;
                if first <= s.base.index {
                    s.broken.get_or_insert(format!(
                        "a record of entries from {first} follows the snapshot of {}",
                        s.base.index
                    ));
                    return Ok(());
                }
                let start = s.start();
                let end = start + s.entries.len() as u64;
                if first < start || first > end {
                    // Before or after the entries known: those between the base and it are
                    // missing (unless a later record makes them dead).
                    s.entries.clear();
                    s.runs.clear();
                    s.missing_through = first - 1;
                } else {
                    s.entries.truncate((first - start) as usize);
                }
                push_run(&mut s.runs, first, entries.len(), segment);
                s.entries.extend(entries);
            }
            KIND_SNAPSHOT => {
                if payload.len() != SNAPSHOT_LEN {
                    return wrong("snapshot");
                }
                s.present = true;
                s.base = SnapshotMeta {
                    index: u64_at(0),
                    term: u64_at(8),
                };
                s.entries.clear();
                s.runs.clear();
                // The log is now the snapshot and the entries record after it: whatever came
                // before is dead.
                s.broken = None;
                s.missing_through = 0;
            }
            KIND_DROP => {
                if payload.len() != 1 {
                    return wrong("drop");
                }
                *s = Scanned {
                    present: payload[0] == 1,
                    ..Scanned::default()
                };
            }
            _ => return Err(format!("a record of unknown kind {kind}")),
        }
        Ok(())
    }

    /// Folds the files of `legacy` (the shards that have some) into a new log, replacing
    /// the segments `numbers` (a migration cut short), then deletes them: see the module docs.
    fn migrate(&mut self, numbers: &[u64], legacy: &[u32]) -> io::Result<()> {
        log::info!(
            "the data directory holds {} shards' files of the layout before the write-ahead \
             log: folding them into it",
            legacy.len()
        );
        for &number in numbers {
            self.disk.remove(&segment_name(number))?;
        }
        self.start_segment(1)?;
        for &shard in legacy {
            if shard_mark(&self.disk, shard).is_some() {
                // Recovering: what its files hold is not its state, and it is opened empty.
                continue;
            }
            let (store, p) = ShardStore::open_on(self.disk.clone(), shard, self.sync)?;
            drop(store);
            let snapshot = p
                .snapshot
                .as_ref()
                .map(|(meta, _)| *meta)
                .unwrap_or_default();
            push_record(&mut self.buf, KIND_DROP, shard, &[1]);
            push_record(&mut self.buf, KIND_HARD, shard, &hard_bytes(&p.hard));
            if snapshot.index > 0 {
                push_record(&mut self.buf, KIND_SNAPSHOT, shard, &meta_bytes(snapshot));
            }
            if let Some(first) = p.log.first() {
                push_entries(&mut self.buf, shard, first.index, &p.log);
            }
            let mut runs = Vec::new();
            push_run(&mut runs, snapshot.index + 1, p.log.len(), 1);
            self.scanned.insert(
                shard,
                Scanned {
                    present: true,
                    hard: p.hard,
                    base: snapshot,
                    entries: p.log,
                    runs,
                    ..Scanned::default()
                },
            );
        }
        self.write_buffer(true)?;
        if self.sync {
            self.disk.sync_dir()?;
        }
        for name in self.disk.list()? {
            if legacy_shard(&name).is_some() || name.ends_with(".log.tmp") {
                self.disk.remove(&name)?;
            }
        }
        if self.sync {
            self.disk.sync_dir()?;
        }
        Ok(())
    }
}

impl<D: Disk> Wal<D> {
    /// What the log (and the directory's marks and snapshot files) holds of `shard`, before
    /// it is read.
    pub fn shard_files(&self, shard: u32) -> ShardFiles {
        if let Some(mark) = shard_mark(&self.disk, shard) {
            return ShardFiles::Marked(mark);
        }
        let present = self.scanned.get(&shard).is_some_and(|s| s.present)
            || self.held.contains_key(&shard)
            || self.disk.exists(&file_name(shard, "snap"));
        match present {
            true => ShardFiles::Present,
            false => ShardFiles::Missing,
        }
    }

    /// Reads `shard`'s state from what the log held when opened and its snapshot file, and
    /// holds it from now on (its records go into every checkpoint). Errors: its records
    /// contradict each other or its snapshot file (see the module docs).
    pub fn take(&mut self, shard: u32) -> io::Result<Persisted> {
        assert!(!self.held.contains_key(&shard), "shard {shard} read twice");
        let s = self.scanned.remove(&shard).unwrap_or_default();
        if let Some(why) = s.broken {
            return Err(damaged(format!("shard {shard}: {why}")));
        }
        if s.missing_through > s.base.index {
            return Err(damaged(format!(
                "shard {shard}: the write-ahead log misses entries {}..={} after its snapshot",
                s.base.index + 1,
                s.missing_through
            )));
        }
        let snapshot = read_snapshot(self.disk.read(&file_name(shard, "snap"))?)
            .map_err(|e| damaged(format!("shard {shard}: {e}")))?;
        let snap = snapshot.as_ref().map(|(meta, _)| *meta).unwrap_or_default();
        if s.base.index > snap.index {
            // The log was written after a snapshot this directory no longer holds (files
            // lost or mixed up): the entries up to `base` are gone.
            return Err(damaged(format!(
                "shard {shard}: the log starts after entry {}, but the snapshot file covers \
                 only {}",
                s.base.index, snap.index
            )));
        }
        let (mut log, mut runs) = (s.entries, s.runs);
        let rebase = snap.index > s.base.index;
        if rebase {
            // A crash between the snapshot file and its record: Raft takes only what follows
            // the snapshot, if the log reaches it.
            let matches = log
                .iter()
                .find(|e| e.index == snap.index)
                .is_some_and(|e| e.term == snap.term);
            if matches {
                log.retain(|e| e.index > snap.index);
            } else {
                log.clear();
            }
        }
        check_terms(shard, &s.hard, snap, &log)?;
        let current = self.current_number();
        if rebase {
            // Bring the log in line with what Raft will hold.
            push_record(&mut self.buf, KIND_SNAPSHOT, shard, &meta_bytes(snap));
            runs.clear();
            if let Some(first) = log.first() {
                push_entries(&mut self.buf, shard, first.index, &log);
                push_run(&mut runs, first.index, log.len(), current);
            }
        }
        self.held.insert(
            shard,
            Held {
                hard: s.hard,
                snapshot: snap,
                last: log.last().map_or(snap.index, |e| e.index),
                runs,
            },
        );
        Ok(Persisted {
            hard: s.hard,
            snapshot,
            log,
        })
    }

    /// Stops holding `shard` (read with [`Wal::take`], then not held after all): its records
    /// are no longer in checkpoints; the caller drops them ([`Wal::drop_shard`]).
    pub fn release(&mut self, shard: u32) {
        self.held.remove(&shard);
    }

    /// `shard` starts EMPTY, whatever the log held of it: for a replica that starts without
    /// state (spec §8.5), under its recovery mark. Its snapshot file is deleted and a drop
    /// record (re-created) is buffered.
    pub fn open_empty(&mut self, shard: u32) -> io::Result<()> {
        self.disk.remove(&file_name(shard, "snap"))?;
        self.disk.remove(&file_name(shard, "snap.tmp"))?;
        self.scanned.remove(&shard);
        push_record(&mut self.buf, KIND_DROP, shard, &[1]);
        self.held.insert(shard, Held::default());
        Ok(())
    }

    /// Forgets `shard` (its replica was dropped, or is not held at a start): a drop record,
    /// committed (durable before the caller removes the shard's mark), then its snapshot
    /// file deleted. Call it under the shard's `Rejoin` mark.
    pub fn drop_shard(&mut self, shard: u32) -> io::Result<()> {
        self.held.remove(&shard);
        self.scanned.remove(&shard);
        push_record(&mut self.buf, KIND_DROP, shard, &[0]);
        self.commit()?;
        self.disk.remove(&file_name(shard, "snap"))?;
        self.disk.remove(&file_name(shard, "snap.tmp"))
    }

    /// Buffers the records of `persist`, a Raft delta of `shard`
    /// ([`crate::core::raft::Raft::take_persist`]); [`Wal::commit`] writes them. A snapshot
    /// syncs inline: first the buffer is committed, so that the hard state it comes with
    /// (whose term its own may reach) and every earlier record are on disk before the new
    /// snapshot file replaces the old one (opening refuses a snapshot of a term after the
    /// stored hard state's); then the file is written aside and renamed over (synced under
    /// `fsync`); then its record and the log after it are buffered.
    pub fn write(&mut self, shard: u32, persist: &Persist) -> io::Result<()> {
        persist.check();
        assert!(
            self.held.contains_key(&shard),
            "shard {shard} written, not held"
        );
        if let Some(hard) = persist.hard {
            assert!(
                hard.replica != 0,
                "storing a hard state without a replica id"
            );
            push_record(&mut self.buf, KIND_HARD, shard, &hard_bytes(&hard));
            self.held.get_mut(&shard).expect("held").hard = hard;
        }
        if let Some((meta, data)) = &persist.snapshot {
            let before = self.held[&shard].snapshot;
            assert!(
                meta.index > before.index,
                "snapshot {meta:?} after {before:?}"
            );
            self.commit()?;
            self.disk.replace(
                &file_name(shard, "snap"),
                &snapshot_bytes(*meta, data),
                self.sync,
            )?;
            push_record(&mut self.buf, KIND_SNAPSHOT, shard, &meta_bytes(*meta));
            if !persist.entries.is_empty() {
                push_entries(&mut self.buf, shard, meta.index + 1, &persist.entries);
            }
            let current = self.current_number();
            let held = self.held.get_mut(&shard).expect("held");
            held.snapshot = *meta;
            held.runs.clear();
            held.last = meta.index;
            held.append(meta.index + 1, persist.entries.len(), current);
            return Ok(());
        }
        let Some(from) = persist.log_from else {
            return Ok(());
        };
        let current = self.current_number();
        let held = self.held.get_mut(&shard).expect("held");
        // The delta starts within the stored log or right after it, never before what it
        // holds (Raft truncates only after its snapshot).
        assert!(
            from > held.snapshot.index && from <= held.last + 1,
            "a log delta from {from}, the log holds {}..={}",
            held.snapshot.index + 1,
            held.last
        );
        held.append(from, persist.entries.len(), current);
        push_entries(&mut self.buf, shard, from, &persist.entries);
        Ok(())
    }

    /// Group commit: writes every record buffered since the last commit in one write at the
    /// end of the current segment and, under `fsync`, syncs it once; then closes the segment
    /// if it is full and begins the next, and deletes the closed segments no shard needs.
    pub fn commit(&mut self) -> io::Result<()> {
        self.write_buffer(self.sync)?;
        let full = self
            .current
            .as_ref()
            .is_some_and(|s| s.end >= self.segment_bytes);
        if full {
            let number = self.current_number();
            // Under `fsync` the commit above synced it: it is closed.
            self.start_segment(number + 1)?;
            self.closed.push_back(number);
        }
        self.retire()
    }

    /// Writes the buffer at the end of the current segment (one write), synced if `sync`.
    fn write_buffer(&mut self, sync: bool) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let segment = self
            .current
            .as_mut()
            .expect("an untrusted log is reset before it is written");
        let want = segment.end + self.buf.len() as u64;
        if want > segment.allocated && segment.allocated < self.segment_bytes {
            // Reserve the next chunk, within the segment; past its size the write grows the
            // file (the segment is then closed: no zeros ever follow a closed one's records).
            let to = (want + PREALLOCATE_BYTES).min(self.segment_bytes);
            if let Err(e) = segment.file.allocate(to) {
                // Only speed is lost: the writes grow the file as they would without.
                log::warn!(
                    "{}: cannot reserve space ahead of the log ({e}); appending",
                    segment_name(segment.number)
                );
            }
            segment.allocated = to;
        }
        if let Err(e) = segment.file.write_at(&self.buf, segment.end) {
            // Cut whatever part of the write landed (and the space reserved after it), so no
            // stale record follows `end`.
            let _ = segment.file.set_len(segment.end);
            segment.allocated = segment.end;
            return Err(e);
        }
        segment.end += self.buf.len() as u64;
        segment.allocated = segment.allocated.max(segment.end);
        self.buf.clear();
        if sync {
            segment.file.sync()?;
        }
        Ok(())
    }

    /// Begins segment `number`, empty but for its header and a checkpoint of every held
    /// shard (synced, and the directory, under `fsync`), and writes to it from now on.
    fn start_segment(&mut self, number: u64) -> io::Result<()> {
        let name = segment_name(number);
        let file = self.disk.open(&name, true)?;
        let mut bytes = segment_header(number).to_vec();
        for (&shard, held) in &self.held {
            let mut payload = [0u8; CHECKPOINT_LEN];
            payload[..HARD_LEN].copy_from_slice(&hard_bytes(&held.hard));
            payload[HARD_LEN..].copy_from_slice(&meta_bytes(held.snapshot));
            push_record(&mut bytes, KIND_CHECKPOINT, shard, &payload);
        }
        if let Err(e) = file.write_at(&bytes, 0) {
            let _ = file.set_len(0);
            return Err(e);
        }
        if self.sync {
            file.sync()?;
            self.disk.sync_dir()?;
        }
        self.current = Some(Segment {
            number,
            file,
            end: bytes.len() as u64,
            allocated: bytes.len() as u64,
        });
        Ok(())
    }

    /// Deletes the oldest closed segments while no held shard's live entries are in them
    /// (their hard states and snapshots are restated by the checkpoints after them).
    fn retire(&mut self) -> io::Result<()> {
        if self.closed.is_empty() {
            return Ok(());
        }
        let needed = self
            .held
            .values()
            .filter_map(|h| h.runs.first().map(|&(_, segment)| segment))
            .min();
        let mut removed = false;
        while let Some(&oldest) = self.closed.front() {
            if needed.is_some_and(|segment| segment <= oldest) {
                break;
            }
            self.disk.remove(&segment_name(oldest))?;
            self.closed.pop_front();
            removed = true;
        }
        if removed && self.sync {
            self.disk.sync_dir()?;
        }
        Ok(())
    }

    /// The held shards whose live entries keep the oldest closed segment, once more than
    /// [`CLOSED_SEGMENTS_MAX`] are closed: the shell has them snapshotted
    /// (`Node::compact`), which moves their live entries into the current segment.
    pub fn holding_back(&self) -> Vec<u32> {
        if self.closed.len() <= CLOSED_SEGMENTS_MAX {
            return Vec::new();
        }
        let oldest = self.closed[0];
        self.held
            .iter()
            .filter(|(_, h)| h.runs.first().is_some_and(|&(_, s)| s <= oldest))
            .map(|(&shard, _)| shard)
            .collect()
    }

    /// Writes `shard`'s live entries again (buffered: the next commit writes them), so that
    /// they no longer hold an old segment: for a shard [`Wal::holding_back`] named whose
    /// replica cannot compact (nothing applied since its snapshot: an uncommitted tail).
    /// `snapshot` and `log` are the replica's, which must be what the log holds: call it
    /// after every write the node handed out is stored.
    pub fn relocate(&mut self, shard: u32, snapshot: SnapshotMeta, log: &[Entry]) {
        let current = self.current_number();
        let Some(held) = self.held.get_mut(&shard) else {
            return;
        };
        let last = log.last().map_or(snapshot.index, |e| e.index);
        let first = log.first().map(|e| e.index);
        if held.snapshot != snapshot || held.last != last || first != Some(snapshot.index + 1) {
            // Not what the log holds (a write not stored yet), or nothing to move.
            return;
        }
        let first = snapshot.index + 1;
        push_entries(&mut self.buf, shard, first, log);
        held.runs.clear();
        held.append(first, log.len(), current);
    }

    /// The segments on disk: `(oldest, current)` numbers.
    pub fn segments(&self) -> (u64, u64) {
        let current = self.current_number();
        (self.closed.front().copied().unwrap_or(current), current)
    }

    /// Bytes encoded and not committed yet.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    fn current_number(&self) -> u64 {
        self.current
            .as_ref()
            .expect("an untrusted log is reset before it is written")
            .number
    }
}

/// A segment's header (see the module docs).
fn segment_header(number: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    header[12..20].copy_from_slice(&number.to_be_bytes());
    let crc = crc32c::crc32c(&header[..20]);
    header[20..].copy_from_slice(&crc.to_be_bytes());
    header
}

/// Whether `bytes` start with segment `number`'s header; why not, if not.
fn check_header(bytes: &[u8], number: u64) -> Result<(), String> {
    let Some(header) = bytes.get(..SEGMENT_HEADER_LEN) else {
        return Err(format!("{} bytes, no whole header", bytes.len()));
    };
    if header[..8] != SEGMENT_MAGIC {
        return Err("not a segment of the write-ahead log".into());
    }
    let crc = u32::from_be_bytes(header[20..24].try_into().expect("4"));
    if crc32c::crc32c(&header[..20]) != crc {
        return Err("the header fails its checksum".into());
    }
    let version = u32::from_be_bytes(header[8..12].try_into().expect("4"));
    if version != SEGMENT_VERSION {
        return Err(format!(
            "a segment of version {version}, unknown to this node"
        ));
    }
    let recorded = u64::from_be_bytes(header[12..20].try_into().expect("8"));
    if recorded != number {
        return Err(format!("the header says segment {recorded}"));
    }
    Ok(())
}

/// Appends a framed record (see the module docs).
fn push_record(buf: &mut Vec<u8>, kind: u8, shard: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a record under 4 GiB");
    let start = buf.len();
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&shard.to_be_bytes());
    buf.extend_from_slice(payload);
    let crc = record_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// The CRC32C of a framed record (its crc field skipped).
fn record_crc(record: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&record[..4]);
    crc32c::crc32c_append(crc, &record[8..])
}

/// The record at the start of `bytes`: `(kind, shard, payload)`; `None` if it is incomplete
/// or fails its checksum.
fn read_frame(bytes: &[u8]) -> Option<(u8, u32, &[u8])> {
    let header = bytes.get(..RECORD_HEADER_LEN)?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4")) as usize;
    let crc = u32::from_be_bytes(header[4..8].try_into().expect("4"));
    let record = bytes.get(..RECORD_HEADER_LEN.checked_add(len)?)?;
    if record_crc(record) != crc {
        return None;
    }
    let shard = u32::from_be_bytes(header[9..13].try_into().expect("4"));
    Some((header[8], shard, &record[RECORD_HEADER_LEN..]))
}

fn hard_bytes(hard: &HardState) -> [u8; HARD_LEN] {
    let mut bytes = [0u8; HARD_LEN];
    bytes[..8].copy_from_slice(&hard.term.to_be_bytes());
    bytes[8..16].copy_from_slice(&hard.voted_for.unwrap_or(0).to_be_bytes());
    bytes[16..].copy_from_slice(&hard.replica.to_be_bytes());
    bytes
}

fn meta_bytes(meta: SnapshotMeta) -> [u8; SNAPSHOT_LEN] {
    let mut bytes = [0u8; SNAPSHOT_LEN];
    bytes[..8].copy_from_slice(&meta.index.to_be_bytes());
    bytes[8..].copy_from_slice(&meta.term.to_be_bytes());
    bytes
}

/// Appends an entries record: the log cut back to `from - 1`, then `entries` (encoded in
/// place, then framed).
fn push_entries(buf: &mut Vec<u8>, shard: u32, from: u64, entries: &[Entry]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(KIND_ENTRIES);
    buf.extend_from_slice(&shard.to_be_bytes());
    buf.extend_from_slice(&from.to_be_bytes());
    buf.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for entry in entries {
        buf.extend_from_slice(&entry.term.to_be_bytes());
        buf.extend_from_slice(&(entry.data.len() as u32).to_be_bytes());
        buf.extend_from_slice(&entry.data);
    }
    let len = buf.len() - start - RECORD_HEADER_LEN;
    let len = u32::try_from(len).expect("a record under 4 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    let crc = record_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// An entries record's first index and entries (none: a cut); `None` if the payload does not
/// read as one.
fn decode_entries(payload: &[u8]) -> Option<(u64, Vec<Entry>)> {
    let from = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let count = u32::from_be_bytes(payload.get(8..12)?.try_into().ok()?) as usize;
    if from == 0 {
        return None;
    }
    // Each entry takes 12 bytes at least: a count past that is not believed.
    let mut entries = Vec::with_capacity(count.min(payload.len() / 12));
    let mut at = 12;
    for i in 0..count {
        let term = u64::from_be_bytes(payload.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_be_bytes(payload.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let data = payload.get(at + 12..(at + 12).checked_add(len)?)?;
        entries.push(Entry {
            term,
            index: from.checked_add(i as u64)?,
            data: data.into(),
        });
        at += 12 + len;
    }
    (at == payload.len()).then_some((from, entries))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::store::FsDisk;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("udplock-wal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn open(dir: &Path, segment_bytes: u64) -> io::Result<Wal<FsDisk>> {
        Wal::open(FsDisk::new(dir).unwrap(), true, segment_bytes)
    }

    fn entry(term: u64, index: u64, len: usize) -> Entry {
        Entry {
            term,
            index,
            data: vec![index as u8; len].into(),
        }
    }

    fn hard(term: u64) -> HardState {
        HardState {
            term,
            voted_for: Some(2),
            replica: 0xfeed,
        }
    }

    fn append(from: u64, entries: Vec<Entry>) -> Persist {
        let (last_index, last_term) = entries.last().map_or((from - 1, 0), |e| (e.index, e.term));
        Persist {
            hard: None,
            snapshot: None,
            log_from: Some(from),
            entries,
            last_index,
            last_term,
        }
    }

    fn vote(term: u64) -> Persist {
        Persist {
            hard: Some(hard(term)),
            snapshot: None,
            log_from: None,
            entries: Vec::new(),
            last_index: 0,
            last_term: 0,
        }
    }

    fn snapshot(index: u64, term: u64, tail: Vec<Entry>) -> Persist {
        let (last_index, last_term) = tail.last().map_or((index, term), |e| (e.index, e.term));
        Persist {
            hard: None,
            snapshot: Some((SnapshotMeta { index, term }, Arc::new(vec![7; 30]))),
            log_from: Some(index + 1),
            entries: tail,
            last_index,
            last_term,
        }
    }

    /// What a shard read back holds: hard state, snapshot meta, log.
    fn state(p: &Persisted) -> (HardState, Option<SnapshotMeta>, Vec<Entry>) {
        (p.hard, p.snapshot.as_ref().map(|(m, _)| *m), p.log.clone())
    }

    /// Every record kind reads back: hard states, entries (appended, and a suffix replaced),
    /// a snapshot with the log after it, a shard re-created empty, a shard dropped, and
    /// the checkpoints of the segments after a rollover.
    #[test]
    fn every_record_kind_reads_back_as_written() {
        for segment_bytes in [SEGMENT_BYTES, 200] {
            let dir = dir(&format!("kinds-{segment_bytes}"));
            let mut wal = open(&dir, segment_bytes).unwrap();
            for shard in 0..3 {
                wal.open_empty(shard).unwrap();
            }
            wal.write(0, &vote(2)).unwrap();
            wal.write(0, &append(1, (1..=4).map(|i| entry(1, i, 20)).collect()))
                .unwrap();
            wal.commit().unwrap();
            // A follower's conflicting suffix replaced (Raft §5.3), then compaction.
            wal.write(0, &append(3, vec![entry(2, 3, 9), entry(2, 4, 9)]))
                .unwrap();
            wal.write(0, &snapshot(3, 2, vec![entry(2, 4, 9)])).unwrap();
            wal.write(0, &append(5, vec![entry(2, 5, 40)])).unwrap();
            wal.write(1, &vote(1)).unwrap();
            wal.write(1, &append(1, vec![entry(1, 1, 5)])).unwrap();
            wal.write(2, &vote(3)).unwrap();
            wal.commit().unwrap();
            wal.drop_shard(2).unwrap();
            // Shard 1 re-created: nothing of before is read back.
            wal.open_empty(1).unwrap();
            wal.write(1, &vote(4)).unwrap();
            wal.commit().unwrap();
            let rolled = wal.segments();
            drop(wal);

            let mut wal = open(&dir, segment_bytes).unwrap();
            assert_eq!(wal.segments(), rolled);
            if segment_bytes < SEGMENT_BYTES {
                assert!(rolled.1 > 1, "rolled over: {rolled:?}");
            }
            assert_eq!(wal.shard_files(2), ShardFiles::Missing);
            assert_eq!(wal.shard_files(1), ShardFiles::Present);
            let zero = wal.take(0).unwrap();
            assert_eq!(
                state(&zero),
                (
                    hard(2),
                    Some(SnapshotMeta { index: 3, term: 2 }),
                    vec![entry(2, 4, 9), entry(2, 5, 40)]
                )
            );
            assert_eq!(zero.snapshot.unwrap().1.as_slice(), &[7; 30]);
            assert_eq!(state(&wal.take(1).unwrap()), (hard(4), None, Vec::new()));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A crash in the middle of the last commit's write, at any byte: the log reads back as
    /// it was before that commit (the torn tail cut, with a warning), and takes writes again.
    #[test]
    fn a_torn_tail_at_every_byte_reads_back_the_records_before_it() {
        let base = dir("torn");
        let mut wal = open(&base, SEGMENT_BYTES).unwrap();
        wal.open_empty(0).unwrap();
        wal.write(0, &vote(1)).unwrap();
        wal.write(0, &append(1, vec![entry(1, 1, 10), entry(1, 2, 10)]))
            .unwrap();
        wal.commit().unwrap();
        let before = std::fs::read(base.join(segment_name(1))).unwrap();
        // The last commit: a new term, and entries of it replacing entry 2.
        wal.write(0, &vote(2)).unwrap();
        wal.write(0, &append(2, vec![entry(2, 2, 10), entry(2, 3, 10)]))
            .unwrap();
        wal.commit().unwrap();
        let after = std::fs::read(base.join(segment_name(1))).unwrap();
        drop(wal);
        let old = (hard(1), None, vec![entry(1, 1, 10), entry(1, 2, 10)]);
        let mid = (hard(2), None, old.2.clone());
        let new = (
            hard(2),
            None,
            vec![entry(1, 1, 10), entry(2, 2, 10), entry(2, 3, 10)],
        );
        let hard_end = before.len() + RECORD_HEADER_LEN + HARD_LEN;
        for cut in before.len()..=after.len() {
            let dir = dir("torn-cut");
            std::fs::write(dir.join(segment_name(1)), &after[..cut]).unwrap();
            let mut wal = open(&dir, SEGMENT_BYTES).unwrap();
            let read = state(&wal.take(0).unwrap());
            let expected = match cut {
                c if c == after.len() => &new,
                c if c >= hard_end => &mid,
                _ => &old,
            };
            assert_eq!(&read, expected, "cut at {cut}");
            // Cut there, and written again after it.
            let next = read.2.len() as u64 + 1;
            wal.write(0, &append(next, vec![entry(read.0.term, next, 1)]))
                .unwrap();
            wal.commit().unwrap();
            drop(wal);
            let mut wal = open(&dir, SEGMENT_BYTES).unwrap();
            let log = wal.take(0).unwrap().log;
            assert_eq!(log.len() as u64, next, "cut at {cut}");
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    /// Tiny segments, written until several are closed: what a closed segment holds is
    /// damage when it does not read (every flipped bit of it tried: an error naming the
    /// file, never a panic), and so is a segment missing between two others.
    #[test]
    fn a_flipped_bit_or_a_missing_segment_in_the_closed_ones_is_an_error_not_a_panic() {
        let base = dir("flip");
        let mut wal = open(&base, 300).unwrap();
        wal.open_empty(0).unwrap();
        wal.write(0, &vote(1)).unwrap();
        for i in 1..=20 {
            // Entries only, no snapshot: every segment stays (shard 0 needs them all).
            wal.write(0, &append(i, vec![entry(1, i, 40)])).unwrap();
            wal.commit().unwrap();
        }
        let (oldest, current) = wal.segments();
        assert_eq!(oldest, 1);
        assert!(current >= 3, "{current}");
        drop(wal);
        let first = std::fs::read(base.join(segment_name(1))).unwrap();
        for bit in 0..first.len() * 8 {
            let dir = dir("flip-one");
            for n in 1..=current {
                std::fs::copy(base.join(segment_name(n)), dir.join(segment_name(n))).unwrap();
            }
            let mut bytes = first.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(dir.join(segment_name(1)), &bytes).unwrap();
            let error = open(&dir, 300)
                .err()
                .unwrap_or_else(|| panic!("bit {bit}: read"));
            assert_eq!(
                error.kind(),
                io::ErrorKind::InvalidData,
                "bit {bit}: {error}"
            );
            assert!(error.to_string().contains(&segment_name(1)), "{error}");
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::remove_file(base.join(segment_name(2))).unwrap();
        let error = open(&base, 300).err().expect("a gap");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("misses segment"), "{error}");
        let _ = std::fs::remove_dir_all(&base);
    }

    /// Rollover and retirement: a busy shard that compacts now and then, beside an idle one
    /// whose single live entry sits in the first segment. Past `CLOSED_SEGMENTS_MAX` closed
    /// segments the idle shard is named as holding the oldest back; once it is snapshotted
    /// (what `Node::compact` makes it do) the log stays bounded however long it runs, and
    /// reads back both shards.
    #[test]
    fn segments_roll_over_and_retire_and_an_idle_shard_is_named_to_compact() {
        let dir = dir("retire");
        let segment_bytes = 1_000;
        let mut wal = open(&dir, segment_bytes).unwrap();
        for shard in 0..3 {
            wal.open_empty(shard).unwrap();
            wal.write(shard, &vote(1)).unwrap();
        }
        wal.write(1, &append(1, vec![entry(1, 1, 10)])).unwrap();
        // Shard 2's entries never commit (a replica cut off): it cannot compact, and has
        // them written again instead (`Wal::relocate`).
        let tail = vec![entry(1, 1, 10), entry(1, 2, 10)];
        wal.write(2, &append(1, tail.clone())).unwrap();
        wal.commit().unwrap();
        let mut named = 0;
        let mut relocated = 0;
        let mut idle_snapshot = 0;
        let mut segments_max = 0;
        for i in 1..=2_000u64 {
            wal.write(0, &append(i, vec![entry(1, i, 50)])).unwrap();
            if i % 20 == 0 {
                // The busy shard compacts on its cadence, keeping a tail of 2.
                let tail = vec![entry(1, i - 1, 50), entry(1, i, 50)];
                wal.write(0, &snapshot(i - 2, 1, tail)).unwrap();
            }
            wal.commit().unwrap();
            for shard in wal.holding_back() {
                assert!(shard > 0, "only the idle shards hold the log back");
                if shard == 2 {
                    relocated += 1;
                    wal.relocate(2, SnapshotMeta::default(), &tail);
                    continue;
                }
                named += 1;
                if idle_snapshot == 0 {
                    idle_snapshot = 1;
                    wal.write(1, &snapshot(1, 1, Vec::new())).unwrap();
                }
            }
            let (oldest, current) = wal.segments();
            segments_max = segments_max.max(current - oldest + 1);
        }
        wal.commit().unwrap();
        let (oldest, current) = wal.segments();
        assert!(named > 0 && relocated > 0, "the idle shards were named");
        assert!(current > 100, "rolled over: {current}");
        assert!(
            segments_max <= CLOSED_SEGMENTS_MAX as u64 + 2,
            "bounded: {segments_max} segments at once"
        );
        let on_disk = std::fs::read_dir(&dir).unwrap().count();
        assert!(on_disk <= CLOSED_SEGMENTS_MAX + 4, "{on_disk} files");
        drop(wal);
        let mut wal = open(&dir, segment_bytes).unwrap();
        assert_eq!(wal.segments(), (oldest, current));
        let busy = wal.take(0).unwrap();
        assert_eq!(busy.log.last().map(|e| e.index), Some(2_000));
        let idle = wal.take(1).unwrap();
        assert_eq!(
            state(&idle),
            (hard(1), Some(SnapshotMeta { index: 1, term: 1 }), vec![])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `udplock sim --seed 5028 --nodes 3 --seconds 60` (60 s runs): a shard's entries from 1
    /// written again (`Wal::relocate`) in a later segment, the segment with its first
    /// entries retired, an older one kept by another shard: the oldest segment read holds a
    /// record of entries from 4 after a checkpoint of the snapshot at 0 (entries 1..=3
    /// missing there), which the later record from 1 makes dead. Reading took the gap for
    /// damage, and the node could not start.
    #[test]
    fn entries_missing_before_a_record_that_writes_the_log_again_are_not_damage() {
        let dir = dir("relocated");
        // Every commit of a filler entry fills a segment.
        let mut wal = open(&dir, 500).unwrap();
        for shard in 0..3 {
            wal.open_empty(shard).unwrap();
            wal.write(shard, &vote(1)).unwrap();
        }
        let tail = vec![
            entry(1, 1, 5),
            entry(1, 2, 5),
            entry(1, 3, 5),
            entry(1, 4, 5),
        ];
        wal.write(1, &append(1, tail[..3].to_vec())).unwrap();
        wal.write(2, &append(1, vec![entry(1, 1, 600)])).unwrap();
        wal.commit().unwrap();
        assert_eq!(wal.segments(), (1, 2));
        // Segment 2: shard 1's entry 4, and shard 0's first entry, which keeps it.
        wal.write(1, &append(4, tail[3..].to_vec())).unwrap();
        wal.write(0, &append(1, vec![entry(1, 1, 5)])).unwrap();
        wal.write(2, &append(2, vec![entry(1, 2, 600)])).unwrap();
        wal.commit().unwrap();
        assert_eq!(wal.segments(), (1, 3));
        // Segment 3: shard 1 written again from 1; shard 2 compacts. Segment 1 goes.
        wal.relocate(1, SnapshotMeta::default(), &tail);
        wal.write(2, &snapshot(2, 1, Vec::new())).unwrap();
        wal.commit().unwrap();
        assert_eq!(wal.segments(), (2, 3));
        drop(wal);
        let mut wal = open(&dir, 500).unwrap();
        assert_eq!(state(&wal.take(1).unwrap()), (hard(1), None, tail));
        assert_eq!(wal.take(0).unwrap().log, vec![entry(1, 1, 5)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A new log in a directory of its own whose shard 0 voted in `term`, committed.
    fn one_vote(name: &str, term: u64) -> (PathBuf, Wal<FsDisk>) {
        let dir = dir(name);
        let mut wal = open(&dir, SEGMENT_BYTES).unwrap();
        wal.open_empty(0).unwrap();
        wal.write(0, &vote(term)).unwrap();
        wal.commit().unwrap();
        (dir, wal)
    }

    /// Space reserved after the log (`PREALLOCATE_BYTES`: zeros) is the log's end, not a
    /// torn write: a start keeps it, and the next commit writes where the records stop.
    #[test]
    fn zeros_reserved_after_the_log_are_its_end_and_are_written_over() {
        let (dir, mut wal) = one_vote("reserved", 1);
        wal.write(0, &append(1, vec![entry(1, 1, 5)])).unwrap();
        wal.commit().unwrap();
        let end = wal.current.as_ref().unwrap().end;
        drop(wal);
        // Reserved space, whether or not this file system reserved some.
        let path = dir.join(segment_name(1));
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let reserved = end + 4096;
        if file.metadata().unwrap().len() < reserved {
            file.set_len(reserved).unwrap();
        }
        let len = file.metadata().unwrap().len();
        drop(file);
        let mut wal = open(&dir, SEGMENT_BYTES).unwrap();
        assert_eq!(wal.current.as_ref().unwrap().end, end);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "kept, not cut"
        );
        assert_eq!(
            state(&wal.take(0).unwrap()),
            (hard(1), None, vec![entry(1, 1, 5)])
        );
        wal.write(0, &append(2, vec![entry(1, 2, 7)])).unwrap();
        wal.commit().unwrap();
        drop(wal);
        let mut wal = open(&dir, SEGMENT_BYTES).unwrap();
        assert_eq!(
            state(&wal.take(0).unwrap()),
            (hard(1), None, vec![entry(1, 1, 5), entry(1, 2, 7)])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write torn inside the reserved space (part of a record, then zeros) is cut like any
    /// torn tail; what was committed before stays.
    #[test]
    fn a_torn_write_into_reserved_space_is_cut() {
        let (dir, wal) = one_vote("torn-reserved", 2);
        let end = wal.current.as_ref().unwrap().end;
        let mut record = Vec::new();
        push_entries(&mut record, 0, 1, &[entry(2, 1, 40)]);
        drop(wal);
        let path = dir.join(segment_name(1));
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(end + 4096).unwrap();
        file.write_all_at(&record[..record.len() / 2], end).unwrap();
        drop(file);
        let mut wal = open(&dir, SEGMENT_BYTES).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            end,
            "cut at the log's end"
        );
        assert_eq!(state(&wal.take(0).unwrap()), (hard(2), None, Vec::new()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A closed segment ends with its last record: reserved space never outlives the
    /// segment's size, so only the current segment may end in zeros (and a closed one that
    /// does is damage, as before).
    #[test]
    fn a_closed_segment_ends_with_its_records() {
        let dir = dir("closed-end");
        let segment_bytes = 300;
        let mut wal = open(&dir, segment_bytes).unwrap();
        wal.open_empty(0).unwrap();
        for index in 1..=20 {
            wal.write(0, &append(index, vec![entry(1, index, 30)]))
                .unwrap();
            wal.commit().unwrap();
        }
        let (oldest, current) = wal.segments();
        assert!(current >= 3, "rolled over");
        for number in oldest..current {
            let bytes = std::fs::read(dir.join(segment_name(number))).unwrap();
            let mut at = SEGMENT_HEADER_LEN;
            while let Some((_, _, payload)) = read_frame(&bytes[at..]) {
                at += RECORD_HEADER_LEN + payload.len();
            }
            assert_eq!(at, bytes.len(), "segment {number}: records, then nothing");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Entries missing after the snapshot that no later record makes dead are damage.
    #[test]
    fn entries_missing_after_the_snapshot_are_an_error() {
        let (dir, wal) = one_vote("missing", 1);
        // A record of entries from 3 with nothing before it: written by hand at the log's
        // end (the space reserved after it goes).
        let mut bytes = Vec::new();
        push_entries(&mut bytes, 0, 3, &[entry(1, 3, 5)]);
        let path = dir.join(segment_name(1));
        let mut segment = std::fs::read(&path).unwrap();
        segment.truncate(wal.current.as_ref().unwrap().end as usize);
        segment.extend_from_slice(&bytes);
        std::fs::write(&path, segment).unwrap();
        drop(wal);
        let mut wal = open(&dir, SEGMENT_BYTES).unwrap();
        let error = wal.take(0).err().expect("damage");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error.to_string().contains("misses entries 1..=2"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
