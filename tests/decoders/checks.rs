//! The udplock crate's decoders of persisted and replicated state under hostile bytes, shared
//! by the cargo-fuzz targets `log` and `snapshot` (`fuzz/`, which includes this file by path)
//! and the bounded mutation pass of `cargo test` (`tests/decoders/main.rs`). Each reaches
//! its decoders through the crate's own entry points, over an in-memory [`Disk`], as a node
//! reads its data directory at start-up or a follower checks a leader's snapshot:
//!
//! - **log**: a replicated log command (spec §8.4, the codec's decoder: `crate::decoders`);
//!   a segment of the node's write-ahead log as `Wal::open` and `Wal::take` read it, alone
//!   (the last segment: a torn tail is cut) and before another (a closed one: damage is an
//!   error); a shard's log file and snapshot file of the layout before it, as
//!   `ShardStore::open_on` reads them to migrate them (src/store).
//! - **snapshot**: the lock table snapshot (`LockTable::restore`); the shard snapshot a
//!   replica restores or a follower receives (`Replica::restore`, which decodes it as
//!   `snapshot_check` does); the vote file (`shard-NNNN.state`); the data directory's
//!   identity, boot record and members files (`DataDir::open_on`,
//!   `DataDir::recorded_members`); a key file (`cluster::keys::parse`).
//!
//! The contract checked: no panic (a damaged file is an error or is cut, never a crash); what
//! reads back reads back the same a second time (reading cuts a torn log to its records, and
//! a second read cuts nothing); a log file read from the start re-encodes to the bytes kept;
//! a lock table snapshot that restores snapshots to the same bytes (its module docs promise
//! canonical bytes). The lease horizon file is one decimal number read by `str::parse`, and
//! has nothing of the crate's own to fuzz.
//!
//! Includers declare `mod decoders` (protocol/tests/decoders/mod.rs) beside this module.

// Each includer uses its own part of this file.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use udplock::cluster::keys;
use udplock::cluster::storage::{DataDir, Identity};
use udplock::core::lock_table::{self, LockTable, RequestId};
use udplock::core::raft::{self, Entry, HardState, Persist, SnapshotMeta};
use udplock::core::replica::{self, Replica, SHARD_SNAPSHOT_MAGIC};
use udplock::core::time::Instant;
use udplock::store::{Disk, DiskFile, ShardFiles, ShardStore, Wal, SEGMENT_BYTES};
use udplock_protocol::RequestBody;

use crate::decoders;

/// A directory in memory: what `ShardStore` and `DataDir` read, without a file system (the
/// fuzzer runs the checks millions of times).
#[derive(Clone, Default)]
pub struct MemDisk(Rc<RefCell<BTreeMap<String, Vec<u8>>>>);

/// An open file of a [`MemDisk`], by name.
pub struct MemFile {
    disk: MemDisk,
    name: String,
}

impl MemDisk {
    pub fn with(files: &[(&str, &[u8])]) -> MemDisk {
        let disk = MemDisk::default();
        for (name, bytes) in files {
            disk.0.borrow_mut().insert(name.to_string(), bytes.to_vec());
        }
        disk
    }

    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.0.borrow().get(name).cloned()
    }
}

impl Disk for MemDisk {
    type File = MemFile;
    fn open(&self, name: &str, truncate: bool) -> io::Result<MemFile> {
        let mut files = self.0.borrow_mut();
        let file = files.entry(name.to_string()).or_default();
        if truncate {
            file.clear();
        }
        Ok(MemFile {
            disk: self.clone(),
            name: name.to_string(),
        })
    }
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.file(name))
    }
    fn replace(&self, name: &str, bytes: &[u8], _sync: bool) -> io::Result<MemFile> {
        self.0.borrow_mut().insert(name.to_string(), bytes.to_vec());
        self.open(name, false)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.0.borrow_mut().remove(name);
        Ok(())
    }
    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
    fn exists(&self, name: &str) -> bool {
        self.0.borrow().contains_key(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.0.borrow().keys().cloned().collect())
    }
}

impl DiskFile for MemFile {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        Ok(self.disk.file(&self.name).unwrap_or_default())
    }
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut files = self.disk.0.borrow_mut();
        let file = files.entry(self.name.clone()).or_default();
        let end = offset as usize + bytes.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset as usize..end].copy_from_slice(bytes);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut files = self.disk.0.borrow_mut();
        files
            .entry(self.name.clone())
            .or_default()
            .resize(len as usize, 0);
        Ok(())
    }
    /// Reserves nothing (the trait allows it): the files stay exactly their records.
    fn allocate(&self, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

const LOG_FILE: &str = "shard-0000.log";
const SNAP_FILE: &str = "shard-0000.snap";
const STATE_FILE: &str = "shard-0000.state";
const WAL_FILE: &str = "wal-0000000000000001";
const WAL_NEXT_FILE: &str = "wal-0000000000000002";

// ---------------------------------------------------------------------------------------
// The families.

/// The log family: `data` as a log command, as a shard's log file, as its snapshot file.
pub fn log(data: &[u8]) {
    decoders::log_command(data);
    // Beside a vote of a late term, as a replica's files hold one: entries up to it read.
    let vote = late_vote_file();
    store_reads(&MemDisk::with(&[(LOG_FILE, data), (STATE_FILE, vote)]));
    store_reads(&MemDisk::with(&[(SNAP_FILE, data), (STATE_FILE, vote)]));
    wal_reads(&MemDisk::with(&[(WAL_FILE, data)]));
    wal_reads(&MemDisk::with(&[
        (WAL_FILE, data),
        (WAL_NEXT_FILE, wal_next_segment()),
    ]));
}

/// An empty segment 2 of the write-ahead log (a header, no checkpoint), to make a fuzzed
/// segment 1 a closed one.
fn wal_next_segment() -> &'static [u8] {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let disk = MemDisk::default();
        drop(Wal::open(disk.clone(), false, SEGMENT_BYTES).expect("a new log"));
        let mut header = disk.file(WAL_FILE).expect("a segment");
        header[12..20].copy_from_slice(&2u64.to_be_bytes());
        let crc = crc32c(&header[..20]);
        header[20..24].copy_from_slice(&crc.to_be_bytes());
        header
    })
}

/// CRC32C (Castagnoli), bit by bit: the write-ahead log's checksum, computed here without
/// the crate's dependency.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// What a shard reads back from a write-ahead log: its state, or the kind of error.
type WalShard = (
    u32,
    Result<(HardState, Option<SnapshotMeta>, Vec<Entry>), io::ErrorKind>,
);

/// Opens the write-ahead log on `disk` and reads its shards 0..4, then again: no panic
/// whatever the bytes; what the first open kept (a torn tail cut), the second reads the
/// same, cutting nothing.
fn wal_reads(disk: &MemDisk) {
    let read = |disk: &MemDisk| -> Option<Vec<WalShard>> {
        let mut wal = Wal::open(disk.clone(), false, SEGMENT_BYTES).ok()?;
        let shards = (0..4u32).filter(|&s| wal.shard_files(s) == ShardFiles::Present);
        let shards: Vec<u32> = shards.collect();
        let read = shards.into_iter().map(|shard| {
            let p = wal.take(shard).map_err(|e| e.kind());
            (
                shard,
                p.map(|p| (p.hard, p.snapshot.map(|(meta, _)| meta), p.log)),
            )
        });
        Some(read.collect())
    };
    let Some(first) = read(disk) else {
        return;
    };
    let kept = disk.file(WAL_FILE);
    let second = read(disk).expect("a log opens again");
    assert_eq!(disk.file(WAL_FILE), kept, "read twice, cut twice");
    assert_eq!(first, second, "the log reads back otherwise");
    for (_, shard) in &first {
        let Ok((_, snapshot, log)) = shard else {
            continue;
        };
        let after = snapshot.map_or(0, |meta| meta.index);
        for (i, entry) in log.iter().enumerate() {
            assert_eq!(entry.index, after + i as u64 + 1, "log indexes have a gap");
        }
    }
}

/// A vote file of term 2^40, written once by the store.
pub fn late_vote_file() -> &'static [u8] {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let disk = MemDisk::default();
        let (mut store, _) = ShardStore::open_on(disk.clone(), 0, false).expect("an empty store");
        let hard = HardState {
            term: 1 << 40,
            ..vote()
        };
        store
            .write(&Persist {
                hard: Some(hard),
                snapshot: None,
                log_from: None,
                last_index: 0,
                last_term: 0,
                entries: Vec::new(),
            })
            .expect("written");
        disk.file(STATE_FILE).expect("a vote file")
    })
}

/// The snapshot family: `data` as a lock table snapshot, a shard snapshot, a vote file, an
/// identity, boot record or members file, and a key file.
pub fn snapshot(data: &[u8]) {
    let _ = restore_replica(data);
    if let Ok(table) = LockTable::restore(table_config(), data) {
        let mut again = Vec::new();
        table.snapshot(&mut again);
        assert_eq!(again, data, "a restored table snapshots to other bytes");
    }
    store_reads(&MemDisk::with(&[(STATE_FILE, data)]));
    for file in ["identity", "boot", "members"] {
        let disk = MemDisk::with(&[(file, data)]);
        let opened = DataDir::open_on(disk, Path::new("/fuzz"), None, &identity(), false, None);
        if let Ok(dir) = opened {
            let _ = dir.recorded_members();
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keys::parse(text);
    }
}

/// A replica of shard 0 restored from the shard snapshot `data`, with a vote of the
/// snapshot's term, as a replica's files would hold it.
pub fn restore_replica(data: &[u8]) -> Result<Replica, String> {
    let meta = SnapshotMeta { index: 1, term: 1 };
    let vote = HardState {
        term: 1,
        voted_for: None,
        replica: REPLICA_ID,
    };
    let snapshot = Some((meta, Arc::new(data.to_vec())));
    Replica::restore(
        replica_config(),
        1,
        vote,
        snapshot,
        Vec::new(),
        Instant::ZERO,
    )
}

/// Opens shard 0's files on `disk`, then again: what the first read kept (a torn tail cut),
/// the second reads the same, cutting nothing. A log read from index 0 on re-encodes to the
/// bytes it kept.
fn store_reads(disk: &MemDisk) {
    let Ok((_, first)) = ShardStore::open_on(disk.clone(), 0, false) else {
        return;
    };
    let kept = disk.file(LOG_FILE).expect("opening makes a log file");
    let (_, second) = ShardStore::open_on(disk.clone(), 0, false).expect("a store opens again");
    assert_eq!(
        disk.file(LOG_FILE).as_deref(),
        Some(&kept[..]),
        "read twice, cut twice"
    );
    assert_eq!(first.hard, second.hard, "the vote reads back otherwise");
    assert_eq!(first.log, second.log, "the log reads back otherwise");
    assert_eq!(
        first.snapshot, second.snapshot,
        "the snapshot reads back otherwise"
    );
    let after = first.snapshot.as_ref().map_or(0, |(meta, _)| meta.index);
    for (i, entry) in first.log.iter().enumerate() {
        assert_eq!(entry.index, after + i as u64 + 1, "log indexes have a gap");
    }
    if first.snapshot.is_none() && !first.log.is_empty() {
        // Written afresh, the same entries make the same file.
        let fresh = MemDisk::default();
        let (mut store, _) = ShardStore::open_on(fresh.clone(), 0, false).expect("an empty store");
        store
            .write(&Persist {
                hard: None,
                snapshot: None,
                log_from: Some(1),
                last_index: first.log.last().map_or(0, |e| e.index),
                last_term: first.log.last().map_or(0, |e| e.term),
                entries: first.log.clone(),
            })
            .expect("a memory disk does not fail");
        assert_eq!(
            fresh.file(LOG_FILE),
            Some(kept),
            "the log re-encodes to other bytes"
        );
    }
}

/// The replica id of the vote the checks restore a replica with, and of the voter their
/// shard snapshot seed names.
const REPLICA_ID: u64 = 0x1000_0000_0000_0001;

/// The lock table's limits as a node runs with them by default.
fn table_config() -> lock_table::Config {
    lock_table::Config::default()
}

/// A single-voter replica of shard 0 with the default settings.
fn replica_config() -> replica::Config {
    replica::Config {
        shard: 0,
        raft: raft::Config::default(),
        table: table_config(),
    }
}

fn identity() -> Identity {
    Identity {
        membership: "1@127.0.0.1:7101,2@127.0.0.1:7102,3@127.0.0.1:7103/64".into(),
        membership_id: 0x1234_5678_9abc_def0,
        node: 2,
        joined: None,
    }
}

// ---------------------------------------------------------------------------------------
// Seeds: real encoded samples, made by the code that writes them.

/// The commands of spec/vectors/commands.txt, a log file holding them as entries with a
/// vote, and a snapshot file holding a shard snapshot.
pub fn log_seeds() -> Vec<Vec<u8>> {
    let commands = decoders::vector_seeds(decoders::LOG_VECTORS);
    let mut seeds = commands.clone();
    let entries: Vec<Entry> = commands
        .iter()
        .take(12)
        .enumerate()
        .map(|(i, data)| Entry {
            term: 1 + i as u64 / 4,
            index: i as u64 + 1,
            data: data.as_slice().into(),
        })
        .collect();
    let disk = MemDisk::default();
    let (mut store, _) = ShardStore::open_on(disk.clone(), 0, false).expect("an empty store");
    store.write(&vote_and_log(&entries)).expect("written");
    seeds.push(disk.file(LOG_FILE).expect("a log file"));
    seeds.push(disk.file(STATE_FILE).expect("a vote file"));
    let meta = SnapshotMeta { index: 9, term: 3 };
    let tail: Vec<Entry> = entries[..3]
        .iter()
        .enumerate()
        .map(|(i, e)| Entry {
            index: 10 + i as u64,
            term: 3,
            data: e.data.clone(),
        })
        .collect();
    store
        .write(&Persist {
            hard: None,
            snapshot: Some((meta, Arc::new(shard_snapshot()))),
            log_from: Some(10),
            last_index: tail.last().map_or(0, |e| e.index),
            last_term: tail.last().map_or(0, |e| e.term),
            entries: tail,
        })
        .expect("written");
    seeds.push(disk.file(SNAP_FILE).expect("a snapshot file"));
    seeds.push(disk.file(LOG_FILE).expect("a log file after the snapshot"));
    // The same entries as the write-ahead log holds them: two shards, each re-created
    // empty, then a vote and the entries.
    let disk = MemDisk::default();
    let mut wal = Wal::open(disk.clone(), false, SEGMENT_BYTES).expect("a new log");
    for shard in 0..2 {
        wal.open_empty(shard).expect("a memory disk does not fail");
        let delta = vote_and_log(&entries);
        wal.write(shard, &delta).expect("buffered");
    }
    wal.commit().expect("written");
    seeds.push(disk.file(WAL_FILE).expect("a segment"));
    seeds
}

/// A lock table snapshot with held locks, a waiter and remembered answers; the shard
/// snapshot holding it; a vote file; an identity, boot record and members file; a key file.
pub fn snapshot_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![table_snapshot(), shard_snapshot()];
    let disk = MemDisk::default();
    let (mut store, _) = ShardStore::open_on(disk.clone(), 0, false).expect("an empty store");
    store
        .write(&Persist {
            hard: Some(vote()),
            snapshot: None,
            log_from: None,
            last_index: 0,
            last_term: 0,
            entries: Vec::new(),
        })
        .expect("written");
    seeds.push(disk.file(STATE_FILE).expect("a vote file"));
    let disk = MemDisk::default();
    let me = identity();
    let mut dir = DataDir::open_on(disk.clone(), Path::new("/seed"), None, &me, false, None)
        .expect("a new directory");
    dir.record_identity(&me).expect("written");
    let members: Vec<(u64, SocketAddr)> = vec![
        (1, "127.0.0.1:7101".parse().unwrap()),
        (3, "[::1]:7103".parse().unwrap()),
    ];
    dir.record_members(&members).expect("written");
    seeds.push(disk.file("identity").expect("an identity file"));
    seeds.push(disk.file("members").expect("a members file"));
    let joined = Identity {
        joined: Some(0xfeed),
        ..identity()
    };
    let disk = MemDisk::default();
    let mut dir = DataDir::open_on(disk.clone(), Path::new("/seed"), None, &joined, false, None)
        .expect("a new directory");
    dir.record_identity(&joined).expect("written");
    seeds.push(disk.file("identity").expect("a joined identity file"));
    seeds.push(b"udplock boot record 1\nos 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n".to_vec());
    seeds.push(format!("{}\nnone\n", "ab".repeat(32)).into_bytes());
    seeds
}

/// A write of [`vote`] and `entries` as the whole log.
fn vote_and_log(entries: &[Entry]) -> Persist {
    Persist {
        hard: Some(vote()),
        snapshot: None,
        log_from: Some(1),
        last_index: entries.last().map_or(0, |e| e.index),
        last_term: entries.last().map_or(0, |e| e.term),
        entries: entries.to_vec(),
    }
}

fn vote() -> HardState {
    HardState {
        term: 3,
        voted_for: Some(2),
        replica: 0x2000_0000_0000_0002,
    }
}

/// A table with two held locks (one re-entrant), a waiter and a configured resource.
pub fn table_snapshot() -> Vec<u8> {
    let mut table = LockTable::new(table_config());
    let ms = |ms: u64| Instant::from_micros(ms * 1_000);
    let to: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let requests: [(u64, u64, RequestBody<'static>); 5] = [
        (
            1,
            1,
            RequestBody::Acquire {
                resource: b"orders/42",
                client: b"worker-7",
                wait_ms: 0,
                ttl_ms: 10_000,
            },
        ),
        (
            1,
            2,
            RequestBody::Acquire {
                resource: b"orders/42",
                client: b"worker-7",
                wait_ms: 0,
                ttl_ms: 0,
            },
        ),
        (
            2,
            1,
            RequestBody::Acquire {
                resource: b"orders/42",
                client: b"worker-8",
                wait_ms: 5_000,
                ttl_ms: 0,
            },
        ),
        (
            2,
            2,
            RequestBody::Configure {
                resource: b"config",
                default_ttl_ms: 700,
            },
        ),
        (
            3,
            1,
            RequestBody::Acquire {
                resource: b"b",
                client: b"c",
                wait_ms: 0,
                ttl_ms: 100,
            },
        ),
    ];
    for (i, (session, request, body)) in requests.into_iter().enumerate() {
        table.handle_request(
            ms(1 + i as u64),
            lock_table::Request {
                id: RequestId { session, request },
                attempt: 0,
                reply_to: to,
                body,
                datagram_len: udplock_protocol::ACQUIRE_WAIT_REQUEST_LEN as u16,
            },
        );
        while table.poll_reply().is_some() {}
    }
    let mut bytes = Vec::new();
    table.snapshot(&mut bytes);
    bytes
}

/// A shard snapshot (src/core/replica's node-internal format, version 4): magic, version,
/// stamp, logged settings, a configuration (spec §8.7's CONFIG command from the vectors) and
/// the table.
pub fn shard_snapshot() -> Vec<u8> {
    // CONFIG (spec §8.7): one voter, no learner; node 1 with the replica id the checks'
    // vote file names.
    let mut config = vec![5, 1, 0];
    config.extend_from_slice(&1u64.to_be_bytes());
    config.extend_from_slice(&REPLICA_ID.to_be_bytes());
    let mut data = SHARD_SNAPSHOT_MAGIC.to_vec();
    data.push(4);
    data.extend_from_slice(&10_000u64.to_be_bytes());
    data.push(1);
    for value in [10_000u32, 100, 0] {
        data.extend_from_slice(&value.to_be_bytes());
    }
    data.push(1);
    data.extend_from_slice(&config);
    data.push(1);
    data.extend_from_slice(&table_snapshot());
    data
}
