//! What a node keeps on disk for its shard replicas under each `--durability` mode.
//!
//! One write-ahead log for every shard of the node, in segments, beside each shard's snapshot
//! file, in the format [`crate::store`] writes and reads (the same code the simulator runs
//! over its own disk). The node's shell stores every write its core hands out
//! ([`DataDir::apply`]: marks inline, the Raft deltas buffered), then commits them all at
//! once ([`DataDir::commit`], group commit), before any message or reply of that turn leaves.
//!
//! | mode     | written per turn of the node                                     | survives |
//! |----------|------------------------------------------------------------------|----------|
//! | `fsync`  | one `write` + one `fdatasync` of the log, before any message or reply leaves | any crash, power loss of every node |
//! | `os`     | one `write` of the log (page cache), before any message or reply leaves | any process crash (kill -9) of any number of nodes; the power loss of a minority at a time (its shards rejoin, spec §8.5) |
//! | `memory` | nothing                                                          | the loss of a minority's state (a restarted node rejoins by rule, spec §8.5) |
//!
//! `os` after a power loss is `memory` after a restart: the files may hold anything older
//! than what the node acknowledged (a vote it gave, entries it acknowledged), so trusting
//! them could make it vote or count again. An `os` run therefore records the machine's boot
//! id before it writes (the `boot` file, below), and a start in another boot rejoins every
//! shard instead of reading them ([`crate::core::restart::Boot`]): its log is then not read
//! at all but deleted and begun anew once the shards are marked ([`settle_start`]). Use
//! `fsync` where a majority can lose power at once.
//!
//! The write order (module `store::wal` has the format): a stronger recovery mark first
//! (synced under `fsync`); the Raft deltas of the turn encoded into one buffer (a hard state
//! record before the entries it allows); at the commit, that buffer in one write at the end of
//! the log's current segment, then (under `fsync`) one `fdatasync`. Inline, because they are
//! rare and their order matters: a snapshot first commits what is buffered (the hard state
//! must be on disk before a snapshot of its term replaces the old one), then replaces its
//! file, then buffers its record and the log after it; a mark comes off (or weakens) only
//! after a commit of everything before it; a dropped replica's drop record is committed
//! before its marks go. A commit that fails part-way, or a crash during one, leaves the
//! records before it and a torn tail that opening cuts; the node stops on a failed write
//! (fail-stop), so nothing that depended on it leaves.
//!
//! # The directory: identity, lock and recovery marks
//!
//! Besides the shard files, [`DataDir`] keeps:
//! - `identity`: which node of which cluster the directory belongs to (a format line, the
//!   cluster's membership — its node list and shard count, spec §8.1 — with its id, and the
//!   node id, and for a joined cluster its random cluster id, spec §8.1; format version 3,
//!   the write-ahead log's: a directory of versions 1 and 2, the layout before it, is
//!   rewritten as version 3 when opened, then its files are folded into the log), written
//!   atomically (aside, synced, renamed over, directory synced). A
//!   node configured as another node, or for another cluster, refuses to start on it: Raft
//!   state is only ever valid for the node that wrote it.
//! - `wal-NNNNNNNNNNNNNNNN`, `shard-NNNN.snap`: the write-ahead log and the snapshots
//!   ([`crate::store`]).
//! - `lock`: an empty file the running node holds an exclusive `flock(2)` on, so that two
//!   processes never share a directory (the second one refuses to start).
//! - `shard-NNNN.new` / `shard-NNNN.rejoin`: the mark of a shard that does not hold its state
//!   yet (see [`crate::core::restart`]); set before the state it covers is written, removed
//!   after the recovered state is.
//! - `boot`: the boot record of an `os` run (`udplock boot record 1`, then `os <boot id>`),
//!   written atomically like `identity` once the start's marks are set and before any shard's
//!   files are written. A start whose boot id differs (or is unknown, or the record does not
//!   read as one) rejoins every shard; an `fsync` start in the recorded boot syncs every file
//!   first and removes the record; one after a reboot removes it once its shards are marked
//!   rejoining. No record: the files hold what `fsync` runs synced (or what an `os` run of a
//!   version before the record wrote, which cannot be told apart).
//!
//! - `members`: a joined node's recent view of the other members (`udplock members 1`, then
//!   `node <id> <address>` per member alive or suspect, at most [`JOIN_SEEDS_MAX`]), written
//!   aside and renamed over, unsynced, whenever the node's core hands a new one out
//!   ([`crate::core::node::Node::poll_members_record`]). A hint, as Serf's snapshot is: a
//!   restarted node also asks these members, so that it finds its cluster when its `--join`
//!   seeds are gone (the first node, which has none, finds the others at once). A file
//!   missing or damaged only leaves the node with its `--join` seeds.
//!
//! A directory that holds none of these and no shard file is *new*: a first start, or a lost
//! or mistyped directory, which only `--new-cluster` tells apart (spec §8.5).

use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::core::node::{ShardWrite, JOIN_SEEDS_MAX};
use crate::core::raft::NodeId;
use crate::core::restart::{self, Boot, Found, Mark, Start};
use crate::store::{Disk, DiskFile, FsDisk};
pub use crate::store::{Persisted, ShardFiles, ShardStore, Wal, SEGMENT_BYTES};

/// How a node keeps its Raft state; see the module docs for what each survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Fsync,
    Os,
    Memory,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
            Durability::Memory => "memory",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            "memory" => Ok(Durability::Memory),
            _ => Err(format!("unknown durability {s:?} (fsync, os or memory)")),
        }
    }
}

/// The identity a data directory records: which node of which cluster wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's membership as spec §8.1 writes it: its nodes sorted by id, `/`, its
    /// shard count (`1@127.0.0.1:7101,2@127.0.0.1:7102,3@127.0.0.1:7103/64`).
    pub membership: String,
    /// The membership id: `shard_hash(membership)` (spec §8.1).
    pub membership_id: u64,
    /// This node's id.
    pub node: u64,
    /// A joined cluster's id (spec §8.1: drawn at random by `--bootstrap`); `None` for the
    /// static form (`--peers`), whose id is derived from its node list.
    pub joined: Option<u64>,
}

/// First line of the identity file; the number is the directory format's version. Version
/// 2 adds a line `joined 0x…` (the cluster id) for a node of a joined cluster; version 3
/// (every directory this version writes) is the write-ahead log's layout
/// ([`crate::store::Wal`]), with the `joined` line for a joined cluster's node. Versions 1
/// and 2 are read (a version 1 directory as a static cluster's) and rewritten as version 3
/// when opened, before their files are folded into the log: so a binary of a version before
/// the log, which knows 1 and 2 only, refuses the directory ("of another format") instead of
/// finding no shard files in it.
const IDENTITY_FORMAT: &str = "udplock data directory 1";
const IDENTITY_FORMAT_JOINED: &str = "udplock data directory 2";
const IDENTITY_FORMAT_WAL: &str = "udplock data directory 3";
const IDENTITY_FILE: &str = "identity";
/// See the module docs (`members`).
const MEMBERS_FILE: &str = "members";
/// First line of the members file.
const MEMBERS_FORMAT: &str = "udplock members 1";
const LOCK_FILE: &str = "lock";
/// The boot record an `os` run keeps (see the module docs): [`BOOT_FORMAT`], then
/// `os <boot id>`.
const BOOT_FILE: &str = "boot";
/// First line of the boot record; the number is its format's version.
const BOOT_FORMAT: &str = "udplock boot record 1";
/// Where Linux gives the machine's boot id, new at every boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The machine's current boot id, `None` if it cannot be read (no `/proc`): the shell reads
/// it and hands it to [`DataDir::open`].
pub fn current_boot_id() -> Option<String> {
    let id = std::fs::read_to_string(BOOT_ID_PATH).ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// A node's data directory, locked (`flock`) for as long as this value lives; see the module
/// docs. Over any [`Disk`]: the file system ([`FsDisk`], what a node uses) or the simulator's
/// disk, so that the simulator runs this code.
pub struct DataDir<D: Disk = FsDisk> {
    /// Where it is, for messages.
    path: PathBuf,
    disk: D,
    sync: bool,
    /// Holds the lock: closing the file releases it (`None`: a disk no other process sees).
    _lock: Option<File>,
    /// The directory recorded no identity when opened.
    identity_missing: bool,
    /// The size past which a segment of the write-ahead log is closed ([`SEGMENT_BYTES`];
    /// smaller in the simulator and tests, so that segments roll over and retire).
    segment_bytes: u64,
    /// The directory held nothing of any node when opened.
    new: bool,
    /// This boot's id, as the shell read it (`None`: unknown).
    boot_id: Option<String>,
    /// The boot id the directory's boot record holds (`Some("")`: a record it cannot read);
    /// `None`: no record.
    boot_recorded: Option<String>,
    /// What the record said when the directory was opened.
    boot: Boot,
}

impl DataDir {
    /// Opens (creating) the directory, takes its lock, and checks that it belongs to
    /// `identity`; reads its boot record against `boot_id`, this boot's id
    /// ([`current_boot_id`]; `None`: unknown), and, for an `fsync` node (`sync`) in the boot
    /// an `os` run recorded, syncs every file before it trusts them. Errors: another process
    /// holds it, or it belongs to another node or cluster, or its identity file is damaged or
    /// of another format.
    pub fn open(
        path: &Path,
        identity: &Identity,
        sync: bool,
        boot_id: Option<&str>,
    ) -> io::Result<DataDir> {
        std::fs::create_dir_all(path)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(io::Error::other(format!(
                    "the data directory {} is in use by another process (it holds a lock on \
                     {}): two nodes must never share a directory",
                    path.display(),
                    path.join(LOCK_FILE).display()
                )));
            }
            Err(e) => return Err(e.into()),
        }
        DataDir::open_on(
            FsDisk::new(path)?,
            path,
            Some(lock),
            identity,
            sync,
            boot_id,
        )
    }
}

impl<D: Disk> DataDir<D> {
    /// Opens the directory on `disk` (`path` names it in messages; `lock`, if any, is held
    /// while the value lives) and checks it as [`DataDir::open`] says.
    pub fn open_on(
        disk: D,
        path: &Path,
        lock: Option<File>,
        identity: &Identity,
        sync: bool,
        boot_id: Option<&str>,
    ) -> io::Result<DataDir<D>> {
        let identity_text = disk.read(IDENTITY_FILE)?.map(String::from_utf8);
        let recorded = match identity_text {
            Some(Ok(text)) => Some(parse_identity_versioned(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged or of another format (expected a first line {:?})",
                        path.join(IDENTITY_FILE).display(),
                        IDENTITY_FORMAT_WAL
                    ),
                )
            })?),
            Some(Err(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not UTF-8", path.join(IDENTITY_FILE).display()),
                ));
            }
            None => None,
        };
        let old_format = recorded.as_ref().is_some_and(|(_, version)| *version < 3);
        let recorded = recorded.map(|(identity, _)| identity);
        if let Some(recorded) = &recorded {
            if recorded.node != identity.node
                || recorded.membership != identity.membership
                || recorded.joined != identity.joined
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the data directory {} belongs to node {} of the cluster {} ({:#018x}), \
                         but this node is node {} of {} ({:#018x}). Raft state is only valid \
                         for the node that wrote it: give this node its own --data-dir. (If \
                         this IS node {}'s own directory and only the nodes' addresses changed \
                         on purpose, delete {} and start again: the state is kept.)",
                        path.display(),
                        recorded.node,
                        recorded.membership,
                        recorded.membership_id,
                        identity.node,
                        identity.membership,
                        identity.membership_id,
                        identity.node,
                        path.join(IDENTITY_FILE).display()
                    ),
                ));
            }
        }
        let new = recorded.is_none()
            && !disk
                .list()?
                .iter()
                .any(|n| n.starts_with("shard-") || n.starts_with("wal-"));
        let boot_recorded = read_boot_record(disk.read(BOOT_FILE)?);
        let mut dir = DataDir {
            path: path.to_path_buf(),
            disk,
            sync,
            _lock: lock,
            identity_missing: recorded.is_none() || old_format,
            segment_bytes: SEGMENT_BYTES,
            new,
            boot_id: boot_id.map(str::to_string),
            boot_recorded,
            boot: Boot::Kept,
        };
        dir.boot = restart::boot(dir.boot_recorded.as_deref(), boot_id);
        dir.check_boot()?;
        if old_format {
            // Before anything of the layout is changed: from here on a binary of a version
            // before the log refuses the directory (see `IDENTITY_FORMAT`).
            dir.record_identity(identity)?;
        }
        Ok(dir)
    }

    /// Acts on the boot record found at open (see the module docs).
    fn check_boot(&mut self) -> io::Result<()> {
        let path = self.path.display();
        if self.boot == Boot::Changed {
            log::warn!(
                "the data directory {path} was last written with --durability os in another \
                 boot of this machine (boot id {:?}, now {:?}): a power loss may have dropped \
                 any of those writes, so its files are not trusted and every shard rejoins \
                 (spec §8.5)",
                self.boot_recorded.as_deref().unwrap_or_default(),
                self.boot_id.as_deref().unwrap_or("unknown")
            );
        } else if self.boot_recorded.is_some() && self.sync {
            // An `os` run in this boot left writes the disk may not hold yet: make them as
            // durable as this run's own before anything is built on them.
            for name in self.disk.list()? {
                self.disk.open(&name, false)?.sync()?;
            }
            self.disk.sync_dir()?;
            log::info!(
                "the data directory {path} was last written with --durability os in this boot: \
                 its files are synced, and trusted"
            );
            self.remove_boot_record()?;
        }
        if self.boot_id.is_none() && !self.sync {
            log::warn!(
                "this machine's boot id ({BOOT_ID_PATH}) cannot be read: with --durability os \
                 the node cannot tell a reboot from a process crash, so every restart rejoins \
                 every shard (spec §8.5), as with --durability memory"
            );
        }
        Ok(())
    }

    /// What the boot record said when the directory was opened: whether its files can be
    /// trusted ([`restart::decide`] takes it).
    pub fn boot(&self) -> Boot {
        self.boot
    }

    /// Brings the boot record in line with this run; call it once the marks of the shards
    /// that rejoin are set, before any shard's files are written. An `os` run records this
    /// boot's id (written aside, synced, renamed over, the directory synced; an empty id if
    /// unknown, which no later start trusts); an `fsync` run removes a record.
    pub fn record_boot(&mut self) -> io::Result<()> {
        if self.sync {
            return self.remove_boot_record();
        }
        let id = self.boot_id.clone().unwrap_or_default();
        if self.boot_recorded.as_deref() == Some(id.as_str()) && !id.is_empty() {
            return Ok(());
        }
        let text = format!("{BOOT_FORMAT}\nos {id}\n");
        self.disk.replace(BOOT_FILE, text.as_bytes(), true)?;
        self.boot_recorded = Some(id);
        Ok(())
    }

    fn remove_boot_record(&mut self) -> io::Result<()> {
        if self.boot_recorded.is_none() {
            return Ok(());
        }
        self.disk.remove(BOOT_FILE)?;
        self.disk.sync_dir()?;
        self.boot_recorded = None;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The disk the directory is on (its shard files open on a clone of it).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Whether its writes are synced (durability `fsync`).
    pub fn syncs(&self) -> bool {
        self.sync
    }

    /// The directory held nothing of any node when opened (no identity, no shard file, no
    /// mark): a first start — or a lost, emptied or mistyped directory.
    pub fn is_new(&self) -> bool {
        self.new
    }

    /// The recovery mark the directory holds for `shard`, if any.
    pub fn shard_mark(&self, shard: u32) -> Option<Mark> {
        crate::store::shard_mark(&self.disk, shard)
    }

    /// Sets (`Some`) or removes (`None`) the marks of `shards`, then syncs the directory if
    /// the durability asks for it. Setting `Rejoin` removes `New`.
    pub fn set_marks(&self, shards: &[(u32, Option<Mark>)]) -> io::Result<()> {
        crate::store::set_marks(&self.disk, self.sync, shards)
    }

    /// Segments of the write-ahead log close past `bytes` (default [`SEGMENT_BYTES`]); set
    /// before [`open_shards`] opens the log.
    pub fn set_segment_bytes(&mut self, bytes: u64) {
        assert!(bytes > 0);
        self.segment_bytes = bytes;
    }

    /// Records `identity` if the directory has none yet: written aside, synced, renamed
    /// over, the directory synced (whatever the durability: it is written once).
    pub fn record_identity(&mut self, identity: &Identity) -> io::Result<()> {
        if !self.identity_missing {
            return Ok(());
        }
        let mut text = format!(
            "{}\ncluster {:#018x} {}\nnode {}\n",
            IDENTITY_FORMAT_WAL, identity.membership_id, identity.membership, identity.node
        );
        if let Some(cluster_id) = identity.joined {
            text.push_str(&format!("joined {cluster_id:#018x}\n"));
        }
        self.disk.replace(IDENTITY_FILE, text.as_bytes(), true)?;
        self.identity_missing = false;
        Ok(())
    }
}

impl<D: Disk> DataDir<D> {
    /// Records `members` as the directory's members file (see the module docs): written
    /// aside and renamed over, not synced (a hint; an older or missing one costs nothing).
    pub fn record_members(&self, members: &[(NodeId, SocketAddr)]) -> io::Result<()> {
        let mut text = format!("{MEMBERS_FORMAT}\n");
        for (id, addr) in members.iter().take(JOIN_SEEDS_MAX) {
            text.push_str(&format!("node {id} {addr}\n"));
        }
        self.disk.replace(MEMBERS_FILE, text.as_bytes(), false)?;
        Ok(())
    }

    /// The members the directory's members file records (none if it has none, or one that
    /// does not read as one).
    pub fn recorded_members(&self) -> Vec<(NodeId, SocketAddr)> {
        match self.disk.read(MEMBERS_FILE) {
            Ok(Some(bytes)) => parse_members(&String::from_utf8_lossy(&bytes)),
            _ => Vec::new(),
        }
    }
}

impl<D: Disk> DataDir<D> {
    /// Stores one write of the node's core ([`crate::core::node::Node::poll_persist`]) into
    /// this directory and `wal`, the node's log, in the order [`ShardWrite`] gives: a
    /// stronger recovery mark first (synced under `fsync`), then the Raft delta (buffered:
    /// [`DataDir::commit`] writes it), then the mark it carries after. A replica the write
    /// creates gets its mark, then starts empty in the log ([`ShardWrite::create`]); a
    /// dropped one is marked `Rejoin`, dropped from the log (committed), its snapshot file
    /// deleted, then its marks removed ([`ShardWrite::remove`]): a crash part-way leaves a
    /// mark (the shard is not held again), never part of a state. The node's shell and the
    /// simulator both store through this. An error leaves the files as far as they got: the
    /// caller stops (fail-stop) before anything that depends on the write leaves.
    pub fn apply(&self, wal: &mut Wal<D>, write: &ShardWrite) -> io::Result<()> {
        let shard = write.shard;
        if write.remove {
            self.set_marks(&[(shard, Some(Mark::Rejoin))])?;
            wal.drop_shard(shard)?;
            if self.sync {
                self.disk.sync_dir()?;
            }
            return self.set_marks(&[(shard, None)]);
        }
        if let Some(mark) = write.mark_first {
            self.set_marks(&[(shard, Some(mark))])?;
        }
        if write.create {
            // After the mark: a crash in between leaves the mark alone, and the next start
            // holds nothing of the shard (`restart::decide_joined`).
            wal.open_empty(shard)?;
        }
        if let Some(persist) = &write.raft {
            wal.write(shard, persist)?;
        }
        if let Some(mark) = write.mark_then {
            // A mark comes off (or weakens) only once the state it covered is on disk: this
            // write's and every earlier one (synced under `fsync`), not at the next commit.
            wal.commit()?;
            self.set_marks(&[(shard, mark)])?;
        }
        Ok(())
    }

    /// Group commit: writes what [`DataDir::apply`] buffered since the last commit, in one
    /// write, synced once under `fsync` ([`Wal::commit`]). Call it once after storing every
    /// write a turn of the node handed out, before anything that depends on them is sent.
    pub fn commit(&self, wal: &mut Wal<D>) -> io::Result<()> {
        wal.commit()
    }
}

/// What [`open_shards`] gives: each shard's start (`None`: not held), and the node's log
/// (`None`: a node without a directory).
pub type OpenShards<D> = (Vec<Option<Start>>, Option<Wal<D>>);

/// Spec §8.5 at a start: how each of `shards` replicas starts ([`restart::decide`]), from
/// what `dir` holds for it and what its boot record says (`None`: a node without a
/// directory, durability `memory`); and the node's write-ahead log, opened and read (not
/// read if the boot record says its files are not trusted). Call [`settle_start`] next. The
/// node's start and the simulator's both run this.
///
/// `joined`: the node is of a joined cluster (spec §8.1), whose shards it holds only where
/// its files are its state ([`restart::decide_joined`]; `None`: not held); a static
/// cluster's node holds every shard (`Some` everywhere).
pub fn open_shards<D: Disk + Clone>(
    dir: Option<&DataDir<D>>,
    shards: u32,
    new_cluster: bool,
    joined: bool,
) -> io::Result<OpenShards<D>> {
    let storage_new = dir.is_none_or(DataDir::is_new);
    let boot = dir.map_or(Boot::Kept, DataDir::boot);
    let mut wal = match dir {
        None => None,
        // Not trusted, so not read (`decide` ignores what was found).
        Some(d) if boot == Boot::Changed => {
            Some(Wal::untrusted(d.disk.clone(), d.sync, d.segment_bytes))
        }
        Some(d) => Some(Wal::open(d.disk.clone(), d.sync, d.segment_bytes)?),
    };
    let mut starts = Vec::with_capacity(shards as usize);
    for shard in 0..shards {
        let found = match wal.as_mut() {
            None => Found::Nothing,
            Some(wal) => match wal.shard_files(shard) {
                ShardFiles::Marked(mark) => Found::Marked(mark),
                ShardFiles::Missing => Found::Nothing,
                ShardFiles::Present if boot == Boot::Changed => Found::Nothing,
                ShardFiles::Present => {
                    let p = wal.take(shard)?;
                    Found::Files {
                        hard: p.hard,
                        snapshot: p.snapshot,
                        log: p.log,
                    }
                }
            },
        };
        let held_files = matches!(found, Found::Files { .. });
        let start = if joined {
            restart::decide_joined(found, storage_new, new_cluster, boot)
        } else {
            Some(restart::decide(found, storage_new, new_cluster, boot))
        };
        if let (Some(wal), true, None) = (wal.as_mut(), held_files, &start) {
            wal.release(shard);
        }
        starts.push(start);
    }
    Ok((starts, wal))
}

/// Once the starts are decided ([`open_shards`]): drops the shards not held (a joined
/// node's, `None`) from the log, marks the shards that start without state (first: from here
/// on a crash makes the next start rejoin again), begins a new, empty log if the old one is
/// not trusted (after the marks: every shard held again is marked), records the identity
/// and the boot (after the deletions: files an `os` run's earlier boot left must be gone
/// before this boot is recorded as theirs), and starts the marked shards empty in the log.
pub fn settle_start<D: Disk + Clone>(
    dir: &mut DataDir<D>,
    identity: &Identity,
    starts: &[Option<Start>],
    wal: &mut Wal<D>,
) -> io::Result<()> {
    let trusted = dir.boot != Boot::Changed;
    for shard in 0..starts.len() as u32 {
        let files = wal.shard_files(shard);
        if trusted && starts[shard as usize].is_none() && files != ShardFiles::Missing {
            dir.set_marks(&[(shard, Some(Mark::Rejoin))])?;
            wal.drop_shard(shard)?;
            if dir.sync {
                dir.disk.sync_dir()?;
            }
            dir.set_marks(&[(shard, None)])?;
        }
    }
    let marks: Vec<(u32, Option<Mark>)> = (0..starts.len() as u32)
        .map(|s| (s, starts[s as usize].as_ref().and_then(Start::mark)))
        .filter(|(_, mark)| mark.is_some())
        .collect();
    dir.set_marks(&marks)?;
    if !trusted {
        // Every shard that is held again is marked now; the joined node's others are simply
        // not held, whatever a crash leaves.
        wal.reset()?;
        let unheld: Vec<(u32, Option<Mark>)> = (0..starts.len() as u32)
            .filter(|&s| starts[s as usize].is_none() && dir.shard_mark(s).is_some())
            .map(|s| (s, None))
            .collect();
        dir.set_marks(&unheld)?;
    }
    dir.record_identity(identity)?;
    dir.record_boot()?;
    for &(shard, _) in &marks {
        wal.open_empty(shard)?;
    }
    wal.commit()
}

/// The boot id the boot record holds, from its bytes (`None`: no record; `Some("")`: a
/// record that does not read as one, which no start trusts).
fn read_boot_record(bytes: Option<Vec<u8>>) -> Option<String> {
    let text = String::from_utf8(bytes?).unwrap_or_default();
    let mut lines = text.lines();
    let id = match (
        lines.next(),
        lines.next().and_then(|l| l.strip_prefix("os ")),
    ) {
        (Some(BOOT_FORMAT), Some(id)) => id.trim().to_string(),
        _ => String::new(),
    };
    Some(id)
}

/// The identity file's contents; `None` if they are of no format this version reads.
fn parse_identity(text: &str) -> Option<Identity> {
    parse_identity_versioned(text).map(|(identity, _)| identity)
}

/// The identity file's contents and its format's version.
fn parse_identity_versioned(text: &str) -> Option<(Identity, u32)> {
    let mut lines = text.lines();
    let (version, joined) = match lines.next()? {
        IDENTITY_FORMAT => (1, false),
        IDENTITY_FORMAT_JOINED => (2, true),
        // Version 3 has the `joined` line if and only if the cluster is joined.
        IDENTITY_FORMAT_WAL => (
            3,
            text.lines()
                .nth(3)
                .is_some_and(|l| l.starts_with("joined ")),
        ),
        _ => return None,
    };
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    let (id, membership) = lines.next()?.strip_prefix("cluster ")?.split_once(' ')?;
    let membership_id = hex(id)?;
    let node = lines.next()?.strip_prefix("node ")?.parse().ok()?;
    let joined = match joined {
        true => Some(hex(lines.next()?.strip_prefix("joined ")?).filter(|&c| c != 0)?),
        false => None,
    };
    Some((
        Identity {
            membership: membership.to_string(),
            membership_id,
            node,
            joined,
        },
        version,
    ))
}

/// The identity the data directory at `path` records, read without taking its lock (the
/// shell reads it before it configures the node: a joined node's cluster id comes from
/// it); `None` if it records none (or does not exist).
pub fn read_identity(path: &Path) -> io::Result<Option<Identity>> {
    let file = path.join(IDENTITY_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_identity(&text).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is damaged or of another format (expected a first line \
                 {IDENTITY_FORMAT_WAL:?}, or {IDENTITY_FORMAT:?} or {IDENTITY_FORMAT_JOINED:?} \
                 of a version before the write-ahead log)",
                file.display()
            ),
        )
    })
}

/// The members the data directory at `path` records (see the module docs), read without
/// taking its lock, as [`read_identity`] (the shell asks them before it starts the node);
/// none if there is no such file or it does not read as one (a hint, never an error).
pub fn read_members(path: &Path) -> Vec<(NodeId, SocketAddr)> {
    match std::fs::read_to_string(path.join(MEMBERS_FILE)) {
        Ok(text) => parse_members(&text),
        Err(_) => Vec::new(),
    }
}

/// A members file's members: every line `node <id> <address>` after the format line, with a
/// non-zero id (others skipped), at most [`JOIN_SEEDS_MAX`]; none without the format line.
fn parse_members(text: &str) -> Vec<(NodeId, SocketAddr)> {
    let mut lines = text.lines();
    if lines.next() != Some(MEMBERS_FORMAT) {
        return Vec::new();
    }
    lines
        .filter_map(|line| {
            let mut words = line.strip_prefix("node ")?.split(' ');
            let id: NodeId = words.next()?.parse().ok().filter(|&id| id != 0)?;
            let addr: SocketAddr = words.next()?.parse().ok()?;
            words.next().is_none().then_some((id, addr))
        })
        .take(JOIN_SEEDS_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::raft::{Config, Message, Raft, Role};
    use crate::core::raft::{Entry, HardState};
    use crate::core::time::Instant;

    /// One shard of the node's write-ahead log in a directory, as these tests drive it:
    /// every write committed at once.
    struct Store {
        wal: Wal<FsDisk>,
        shard: u32,
    }

    impl Store {
        /// Opens the log in `dir` and reads `shard` from it.
        fn open(dir: &Path, shard: u32, sync: bool) -> io::Result<(Store, Persisted)> {
            let mut wal = Wal::open(FsDisk::new(dir)?, sync, SEGMENT_BYTES)?;
            let p = wal.take(shard)?;
            wal.commit()?;
            Ok((Store { wal, shard }, p))
        }

        /// Opens the log in `dir` with `shard` started empty.
        fn open_empty(dir: &Path, shard: u32, sync: bool) -> io::Result<Store> {
            let mut wal = Wal::open(FsDisk::new(dir)?, sync, SEGMENT_BYTES)?;
            wal.open_empty(shard)?;
            wal.commit()?;
            Ok(Store { wal, shard })
        }

        fn write(&mut self, p: &crate::core::raft::Persist) -> io::Result<()> {
            self.wal.write(self.shard, p)?;
            self.wal.commit()
        }
    }

    /// The log's first segment in `dir`.
    fn first_segment(dir: &Path) -> PathBuf {
        dir.join("wal-0000000000000001")
    }

    /// What the log in `d` holds of `shard`.
    fn files(d: &DataDir, shard: u32) -> ShardFiles {
        Wal::open(d.disk().clone(), d.syncs(), SEGMENT_BYTES)
            .unwrap()
            .shard_files(shard)
    }

    /// A one-voter Raft of node `id`, started at `now` and past its first timeout (it leads).
    fn lone_leader(id: u64, now: Instant) -> Raft {
        let config = Config {
            id,
            voters: vec![id],
            ..Config::default()
        };
        let mut raft = Raft::new(config, 1, HardState::default(), Vec::new(), now);
        raft.handle_timeout(raft.poll_timeout());
        raft
    }

    /// Stores what `raft` hands out and reports it stored (a single voter commits then).
    fn persist(store: &mut Store, raft: &mut Raft) {
        if let Some(p) = raft.take_persist() {
            store.write(&p).unwrap();
            raft.persisted(p.last_index, p.last_term);
        }
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("udplock-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_log_and_vote_read_back_as_written_and_a_replaced_suffix_is_cut() {
        let dir = dir("roundtrip");
        let (mut store, p) = Store::open(&dir, 3, false).unwrap();
        let (hard, log) = (p.hard, p.log);
        assert_eq!((hard, log.len()), (HardState::default(), 0));
        // A follower of 2 voters receives three entries of term 1.
        let config = Config {
            id: 2,
            voters: vec![1, 2],
            ..Config::default()
        };
        let now = Instant::from_micros(1);
        let mut raft = Raft::new(config.clone(), 1, HardState::default(), Vec::new(), now);
        let entry = |term, index, byte| Entry {
            term,
            index,
            data: vec![byte; 5].into(),
        };
        let append = |term, prev_log_index, prev_log_term, entries| Message::Append {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: 0,
            round: 1,
            transfer_to: None,
        };
        raft.handle_message(
            now,
            1,
            append(
                1,
                0,
                0,
                vec![entry(1, 1, 1), entry(1, 2, 2), entry(1, 3, 3)].into(),
            ),
        );
        persist(&mut store, &mut raft);
        // A leader of term 2 replaces entries 2 and 3.
        raft.handle_message(now, 1, append(2, 1, 1, vec![entry(2, 2, 9)].into()));
        persist(&mut store, &mut raft);
        drop(store);
        let (_, p) = Store::open(&dir, 3, false).unwrap();
        let (hard, log) = (p.hard, p.log);
        assert_eq!(hard, raft.hard_state());
        assert_eq!(hard.term, 2);
        assert_eq!(log, vec![entry(1, 1, 1), entry(2, 2, 9)]);
        // A torn tail is cut, the rest kept: the last record (entry 2 of term 2, replacing
        // entries 2 and 3) is gone, the term 2 it follows is not.
        let path = first_segment(&dir);
        let mut bytes = std::fs::read(&path).unwrap();
        // The records end where the zeros of the space the log reserved begin (the last
        // record ends with entry data, not a zero).
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        bytes.truncate(end - 2);
        std::fs::write(&path, &bytes).unwrap();
        let (_, p) = Store::open(&dir, 3, false).unwrap();
        assert_eq!(p.hard.term, 2);
        assert_eq!(p.log, vec![entry(1, 1, 1), entry(1, 2, 2), entry(1, 3, 3)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_vote_is_refused() {
        let dir = dir("damaged");
        drop(Store::open(&dir, 0, false).unwrap());
        std::fs::write(dir.join("shard-0000.state"), [7u8; 24]).unwrap();
        assert!(Store::open(&dir, 0, false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_compacted_log_reads_back_as_snapshot_plus_suffix() {
        let dir = dir("compacted");
        let (mut store, _) = Store::open(&dir, 1, true).unwrap();
        let config = Config {
            id: 1,
            voters: vec![1],
            ..Config::default()
        };
        let now = Instant::from_micros(1);
        let mut raft = Raft::new(config.clone(), 1, HardState::default(), Vec::new(), now);
        raft.handle_timeout(raft.poll_timeout());
        for byte in 1..=5u8 {
            raft.propose(now, vec![byte]).unwrap();
        }
        persist(&mut store, &mut raft);
        while raft.poll_committed().is_some() {}
        let through = raft.commit_index() - 2;
        raft.compact(through, Arc::new(b"state".to_vec()));
        persist(&mut store, &mut raft);
        raft.propose(now, vec![9]).unwrap();
        persist(&mut store, &mut raft);
        drop(store);
        let (_, p) = Store::open(&dir, 1, true).unwrap();
        let (meta, data) = p.snapshot.expect("a snapshot");
        assert_eq!(meta, raft.snapshot_meta());
        assert_eq!(data.as_slice(), b"state");
        assert_eq!(p.log, raft.log().to_vec());
        assert_eq!(p.log.first().map(|e| e.index), Some(through + 1));
        // A crash between the snapshot file and its record: an old log under a new snapshot.
        let old_log = std::fs::read(first_segment(&dir)).unwrap();
        let mut raft2 = raft;
        while raft2.poll_committed().is_some() {}
        let (mut store, _) = Store::open(&dir, 1, true).unwrap();
        let newer = raft2.commit_index();
        raft2.compact(newer, Arc::new(b"newer".to_vec()));
        persist(&mut store, &mut raft2);
        drop(store);
        std::fs::write(first_segment(&dir), &old_log).unwrap();
        let (_, p) = Store::open(&dir, 1, true).unwrap();
        assert_eq!(p.snapshot.unwrap().0.index, newer);
        assert!(p.log.iter().all(|e| e.index > newer));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One input the property test below feeds replica 2 of {1, 2, 3}.
    #[derive(Clone, Debug)]
    enum Input {
        /// The leader of this node's term + `bump` (a later one if this node campaigned in
        /// its term) replaces the log after a point `at` (a fraction between the commit index
        /// and the last index) with `count` entries of its term, committing them or not.
        Append {
            bump: u64,
            at: u8,
            count: u64,
            commit: bool,
        },
        /// Node 1 or 3 asks for a vote in this node's term + `bump`, with a log like its own.
        Vote { bump: u64, from: u64 },
        /// This node's timer fires: it campaigns, each step answered by node 1; once it leads
        /// it proposes `count` entries (nobody acknowledges them).
        Campaign { count: u64 },
        /// A leader sends a whole snapshot through `ahead` entries past the commit index,
        /// agreeing with this log there (`agree`) or of its own term.
        Snapshot { bump: u64, ahead: u64, agree: bool },
        /// The shell compacts through a point `at` of what it applied.
        Compact { at: u8 },
    }

    fn input() -> impl proptest::strategy::Strategy<Value = Input> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3u64, any::<u8>(), 0..4u64, any::<bool>()).prop_map(
                |(bump, at, count, commit)| Input::Append { bump, at, count, commit }
            ),
            1 => (0..2u64, prop_oneof![Just(1u64), Just(3u64)])
                .prop_map(|(bump, from)| Input::Vote { bump, from }),
            2 => (0..4u64).prop_map(|count| Input::Campaign { count }),
            1 => (0..2u64, 1..4u64, any::<bool>())
                .prop_map(|(bump, ahead, agree)| Input::Snapshot { bump, ahead, agree }),
            1 => any::<u8>().prop_map(|at| Input::Compact { at }),
        ]
    }

    /// Term of `index` in `raft`'s log (its snapshot's at the snapshot's index, 0 at 0).
    fn term_at(raft: &Raft, index: u64) -> u64 {
        let meta = raft.snapshot_meta();
        if index == meta.index {
            meta.term
        } else {
            raft.entry(index).expect("held").term
        }
    }

    /// `from + at/255` of the way to `to`.
    fn between(from: u64, to: u64, at: u8) -> u64 {
        from + (to - from) * u64::from(at) / 255
    }

    /// The term a leader uses for `bump`: never one this node campaigned in.
    fn leader_term(raft: &Raft, bump: u64) -> (u64, u64) {
        let own = raft.hard_state().voted_for == Some(2);
        let term = raft.term() + bump.max(u64::from(own));
        (term, if term % 2 == 0 { 1 } else { 3 })
    }

    fn feed(raft: &mut Raft, now: Instant, round: u64, input: &Input) {
        match *input {
            Input::Append {
                bump,
                at,
                count,
                commit,
            } => {
                let (term, leader) = leader_term(raft, bump);
                let prev = between(raft.commit_index(), raft.last_index(), at);
                let entries: Vec<Entry> = (prev + 1..=prev + count)
                    .map(|index| Entry {
                        term,
                        index,
                        data: vec![index as u8, term as u8].into(),
                    })
                    .collect();
                let msg = Message::Append {
                    term,
                    prev_log_index: prev,
                    prev_log_term: term_at(raft, prev),
                    entries: entries.into(),
                    leader_commit: if commit { prev + count } else { 0 },
                    round,
                    transfer_to: None,
                };
                raft.handle_message(now, leader, msg);
            }
            Input::Vote { bump, from } => {
                let msg = Message::Vote {
                    term: raft.term() + bump,
                    last_log_index: raft.last_index(),
                    last_log_term: term_at(raft, raft.last_index()),
                    transfer: false,
                };
                raft.handle_message(now, from, msg);
            }
            Input::Campaign { count } => {
                raft.handle_timeout(now);
                if raft.role() == Role::PreCandidate {
                    let msg = Message::PreVoteReply {
                        term: raft.term() + 1,
                        granted: true,
                        replica: 1,
                    };
                    raft.handle_message(now, 1, msg);
                }
                if raft.role() == Role::Candidate {
                    let msg = Message::VoteReply {
                        term: raft.term(),
                        granted: true,
                        replica: 1,
                    };
                    raft.handle_message(now, 1, msg);
                }
                if raft.role() == Role::Leader {
                    for byte in 0..count {
                        raft.propose(now, vec![byte as u8 + 1]).expect("leads");
                    }
                }
            }
            Input::Snapshot { bump, ahead, agree } => {
                let (term, leader) = leader_term(raft, bump);
                let last_index = raft.commit_index() + ahead;
                let last_term = if agree && last_index <= raft.last_index() {
                    term_at(raft, last_index)
                } else {
                    term
                };
                let data = vec![last_index as u8; 3];
                let msg = Message::InstallSnapshot {
                    term,
                    last_index,
                    last_term,
                    offset: 0,
                    total_len: data.len() as u64,
                    data,
                    round,
                };
                raft.handle_message(now, leader, msg);
            }
            Input::Compact { at } => {
                while raft.poll_snapshot().is_some() {}
                while raft.poll_committed().is_some() {}
                let from = raft.snapshot_meta().index;
                let through = between(from, raft.commit_index(), at);
                if through > from {
                    raft.compact(through, Arc::new(vec![through as u8]));
                }
            }
        }
        while raft.poll_message().is_some() {}
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Issue 9 item 3: storage writes exactly the deltas Raft hands out. After every
        /// input to a replica, the delta goes to a real write-ahead log, and opening it
        /// again gives exactly the replica's hard state, snapshot and log.
        #[test]
        fn the_files_hold_the_replica_after_every_delta(
            inputs in proptest::collection::vec(input(), 1..40)
        ) {
            use std::sync::atomic::{AtomicU64, Ordering};
            static CASE: AtomicU64 = AtomicU64::new(0);
            let dir = dir(&format!("delta-{}", CASE.fetch_add(1, Ordering::Relaxed)));
            let (mut store, _) = Store::open(&dir, 0, false).unwrap();
            let config = Config { id: 2, voters: vec![1, 2, 3], ..Config::default() };
            let mut now = Instant::from_micros(1);
            let mut raft = Raft::new(config, 5, HardState::default(), Vec::new(), now);
            for (round, input) in inputs.iter().enumerate() {
                // Long enough that no vote is refused for a leader heard recently.
                now = now + crate::core::time::Duration::from_millis(1_000);
                feed(&mut raft, now, round as u64 + 1, input);
                if let Some(p) = raft.take_persist() {
                    store.write(&p).unwrap();
                }
                let (_, p) = Store::open(&dir, 0, false).unwrap();
                let snapshot = p.snapshot.map(|(meta, data)| (meta, data.to_vec()));
                let expected = (raft.snapshot_meta().index > 0).then(|| {
                    (raft.snapshot_meta(), raft.snapshot_data().unwrap().to_vec())
                });
                proptest::prop_assert_eq!(p.hard, raft.hard_state(), "after {:?}", input);
                proptest::prop_assert_eq!(snapshot, expected, "after {:?}", input);
                proptest::prop_assert_eq!(&p.log, &raft.log().to_vec(), "after {:?}", input);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// The boot id the tests run in.
    const BOOT: Option<&str> = Some("0b5e7c1d-this-boot");

    fn identity(node: u64, membership: &str) -> Identity {
        Identity {
            membership: membership.to_string(),
            membership_id: udplock_protocol::shard_hash(membership.as_bytes()),
            node,
            joined: None,
        }
    }

    #[test]
    fn a_directory_in_use_is_refused_to_a_second_opener() {
        let dir = dir("locked");
        let me = identity(1, "1@127.0.0.1:1,2@127.0.0.1:2/4");
        let first = DataDir::open(&dir, &me, false, BOOT).unwrap();
        let second = DataDir::open(&dir, &me, false, BOOT)
            .err()
            .expect("refused");
        assert!(
            second.to_string().contains("in use by another process"),
            "{second}"
        );
        drop(first);
        DataDir::open(&dir, &me, false, BOOT).expect("free again once the first closes");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_records_its_node_and_refuses_another() {
        let dir = dir("identity");
        let me = identity(1, "1@127.0.0.1:1,2@127.0.0.1:2/4");
        let mut d = DataDir::open(&dir, &me, true, BOOT).unwrap();
        assert!(d.is_new());
        assert_eq!(files(&d, 0), ShardFiles::Missing);
        d.record_identity(&me).unwrap();
        drop(d);
        let text = std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap();
        assert!(
            text.starts_with("udplock data directory 3\ncluster 0x"),
            "{text}"
        );
        assert_eq!(parse_identity(&text), Some(me.clone()));
        // Recorded: no longer new, and the same node opens it again.
        assert!(!DataDir::open(&dir, &me, true, BOOT).unwrap().is_new());
        for other in [
            identity(2, "1@127.0.0.1:1,2@127.0.0.1:2/4"),
            identity(1, "1@127.0.0.1:1,2@127.0.0.1:2/8"),
            identity(1, "1@127.0.0.1:9,2@127.0.0.1:2/4"),
        ] {
            let e = DataDir::open(&dir, &other, true, BOOT)
                .err()
                .expect("refused");
            assert!(
                e.to_string().contains("belongs to node 1 of the cluster"),
                "{e}"
            );
        }
        std::fs::write(dir.join(IDENTITY_FILE), "something else\n").unwrap();
        let e = DataDir::open(&dir, &me, true, BOOT).err().expect("refused");
        assert!(
            e.to_string().contains("damaged or of another format"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A joined cluster's directory (spec §8.1) records its random cluster id (a `joined`
    /// line, format version 3 as every directory of the write-ahead log); it is read back
    /// (also without the lock, `read_identity`), and refused to a node of another joined
    /// cluster or of a static one.
    #[test]
    fn a_joined_directory_records_its_cluster_id_in_format_3() {
        let dir = dir("joined-identity");
        assert_eq!(read_identity(&dir).unwrap(), None);
        let me = Identity {
            joined: Some(0x1234_5678_9ABC_DEF0),
            ..identity(2, "joined 0x123456789abcdef0 voters /4")
        };
        let mut d = DataDir::open(&dir, &me, true, BOOT).unwrap();
        d.record_identity(&me).unwrap();
        drop(d);
        let text = std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap();
        assert!(text.starts_with("udplock data directory 3\n"), "{text}");
        assert!(text.ends_with("joined 0x123456789abcdef0\n"), "{text}");
        assert_eq!(read_identity(&dir).unwrap(), Some(me.clone()));
        DataDir::open(&dir, &me, true, BOOT).expect("the same node opens it again");
        for other in [
            Identity {
                joined: Some(0x1234_5678_9ABC_DEF1),
                ..me.clone()
            },
            Identity {
                joined: None,
                ..me.clone()
            },
        ] {
            let e = DataDir::open(&dir, &other, true, BOOT)
                .err()
                .expect("refused");
            assert!(e.to_string().contains("belongs to node 2"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The members file (module docs): what `record_members` wrote reads back, in the
    /// directory and without its lock; a missing, foreign or damaged file reads as no
    /// member (a hint, never an error), bad lines are skipped, and it never makes a
    /// directory that holds nothing else look like a node's.
    #[test]
    fn the_members_file_reads_back_and_a_damaged_one_reads_as_none() {
        let dir = dir("members");
        let me = identity(2, "joined 0x1 voters /4");
        let d = DataDir::open(&dir, &me, true, BOOT).unwrap();
        assert!(d.recorded_members().is_empty());
        assert!(read_members(&dir).is_empty());
        let members: Vec<(NodeId, SocketAddr)> = vec![
            (1, "127.0.0.1:7101".parse().unwrap()),
            (3, "[::1]:7103".parse().unwrap()),
        ];
        d.record_members(&members).unwrap();
        assert_eq!(d.recorded_members(), members);
        drop(d);
        assert_eq!(read_members(&dir), members);
        let file = dir.join(MEMBERS_FILE);
        let damaged = "udplock members 1\nnode 0 127.0.0.1:1\nnode 4 nowhere\nnode 5 \
                       127.0.0.1:5 extra\nnode 6 127.0.0.1:6\ngarbage\n";
        std::fs::write(&file, damaged).unwrap();
        assert_eq!(
            read_members(&dir),
            vec![(6, "127.0.0.1:6".parse().unwrap())]
        );
        std::fs::write(&file, "udplock members 9\nnode 6 127.0.0.1:6\n").unwrap();
        assert!(read_members(&dir).is_empty(), "another format");
        std::fs::write(&file, [0xff, 0xfe, 0x00]).unwrap();
        assert!(read_members(&dir).is_empty(), "not text");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn marks_say_which_shards_recover_and_files_make_a_directory_not_new() {
        let dir = dir("marks");
        let me = identity(3, "3@127.0.0.1:3/2");
        let d = DataDir::open(&dir, &me, true, BOOT).unwrap();
        d.set_marks(&[(0, Some(Mark::New)), (1, Some(Mark::New))])
            .unwrap();
        d.set_marks(&[(1, Some(Mark::Rejoin))]).unwrap();
        assert_eq!(files(&d, 0), ShardFiles::Marked(Mark::New));
        assert_eq!(files(&d, 1), ShardFiles::Marked(Mark::Rejoin));
        assert!(!dir.join("shard-0001.new").exists());
        // A marked shard's files are opened empty, whatever they held.
        let (mut store, _) = Store::open(&dir, 1, true).unwrap();
        let now = Instant::from_micros(1);
        let mut raft = lone_leader(3, now);
        persist(&mut store, &mut raft);
        drop(store);
        assert!(Store::open(&dir, 1, true).unwrap().1.hard.term > 0);
        drop(Store::open_empty(&dir, 1, true).unwrap());
        let (_, p) = Store::open(&dir, 1, true).unwrap();
        assert_eq!((p.hard, p.log.len()), (HardState::default(), 0));
        d.set_marks(&[(0, None), (1, None)]).unwrap();
        assert_eq!(files(&d, 0), ShardFiles::Missing);
        assert_eq!(files(&d, 1), ShardFiles::Present);
        drop(d);
        // Shard files without an identity (a directory of an earlier version): not new.
        assert!(!DataDir::open(&dir, &me, true, BOOT).unwrap().is_new());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// How the shell starts shard `shard` of `d` (`ClusterNode::start_with`): what the
    /// directory holds, decided with its boot record.
    fn start_of(d: &DataDir, shard: u32) -> restart::Start {
        let found = match files(d, shard) {
            ShardFiles::Marked(mark) => restart::Found::Marked(mark),
            ShardFiles::Missing => restart::Found::Nothing,
            ShardFiles::Present if d.boot() == Boot::Changed => restart::Found::Nothing,
            ShardFiles::Present => {
                let p = Store::open(d.path(), shard, d.sync).unwrap().1;
                restart::Found::Files {
                    hard: p.hard,
                    snapshot: p.snapshot,
                    log: p.log,
                }
            }
        };
        restart::decide(found, d.is_new(), false, d.boot())
    }

    /// A node that led term 1 of shard `shard` alone and stored it.
    fn store_a_term(d: &DataDir, shard: u32) {
        let (mut store, _) = Store::open(d.path(), shard, d.sync).unwrap();
        let config = Config {
            id: 1,
            voters: vec![1],
            ..Config::default()
        };
        let mut raft = Raft::new(config, 1, HardState::default(), Vec::new(), Instant::ZERO);
        raft.handle_timeout(raft.poll_timeout());
        assert_eq!(raft.role(), Role::Leader);
        persist(&mut store, &mut raft);
    }

    /// A write of the node core for `shard` (see [`ShardWrite`]).
    fn write(
        shard: u32,
        raft: &mut Raft,
        create: bool,
        marked: Option<Option<Mark>>,
    ) -> ShardWrite {
        ShardWrite {
            seq: 1,
            shard,
            mark_first: create.then_some(Mark::Rejoin),
            raft: raft.take_persist(),
            mark_then: marked,
            lease_horizon_us: None,
            create,
            remove: false,
        }
    }

    /// Spec §8.1 "Replicas on demand", in the shell: a created replica's first write marks
    /// the shard, then creates its files; a drop deletes them all. A joined node's start holds
    /// the shards whose files are unmarked (its state) and no other: a creation cut short
    /// (still marked) is not held and its files are deleted, never rejoined.
    #[test]
    fn a_joined_node_creates_and_deletes_shard_files_and_restarts_with_those_it_holds() {
        let dir = dir("joined");
        let me = Identity {
            joined: Some(7),
            ..identity(2, "joined 0x7 voters /4")
        };
        let mut d = DataDir::open(&dir, &me, true, BOOT).unwrap();
        d.record_identity(&me).unwrap();
        let mut wal = Wal::open(d.disk().clone(), true, SEGMENT_BYTES).unwrap();
        // Each write stored and committed, as a turn of the shell does.
        let apply = |d: &DataDir, wal: &mut Wal<FsDisk>, write: &ShardWrite| {
            d.apply(wal, write).unwrap();
            d.commit(wal).unwrap();
        };
        // A replica that led a term alone: something to store.
        let config = Config {
            id: 2,
            voters: vec![2],
            ..Config::default()
        };
        let raft = |terms: u64| {
            let mut raft = Raft::new(
                config.clone(),
                1,
                HardState::default(),
                Vec::new(),
                Instant::ZERO,
            );
            for _ in 0..terms {
                raft.handle_timeout(raft.poll_timeout());
            }
            raft
        };
        // Shard 1: created, then named by its configuration (the mark comes off).
        let mut one = raft(1);
        apply(&d, &mut wal, &write(1, &mut one, true, None));
        assert_eq!(files(&d, 1), ShardFiles::Marked(Mark::Rejoin));
        apply(&d, &mut wal, &write(1, &mut one, false, Some(None)));
        assert_eq!(files(&d, 1), ShardFiles::Present);
        // Shard 2: created, not named yet when the node stops.
        apply(&d, &mut wal, &write(2, &mut raft(1), true, None));
        // Shard 3: created, then dropped.
        apply(&d, &mut wal, &write(3, &mut raft(1), true, Some(None)));
        assert_eq!(files(&d, 3), ShardFiles::Present);
        let remove = ShardWrite {
            create: false,
            remove: true,
            ..write(3, &mut raft(0), false, None)
        };
        apply(&d, &mut wal, &remove);
        assert_eq!(files(&d, 3), ShardFiles::Missing);
        drop((wal, d));

        let mut d = DataDir::open(&dir, &me, true, BOOT).unwrap();
        let (starts, wal) = open_shards(Some(&d), 4, false, true).unwrap();
        let mut wal = wal.expect("a directory's log");
        match &starts[..] {
            [None, Some(restart::Start::Restore { hard, .. }), None, None] => {
                assert_eq!(hard.term, 1);
            }
            other => panic!("{other:?}"),
        }
        settle_start(&mut d, &me, &starts, &mut wal).unwrap();
        assert_eq!(
            files(&d, 2),
            ShardFiles::Missing,
            "a cut-short creation deleted"
        );
        assert_eq!(files(&d, 1), ShardFiles::Present);
        assert_eq!(wal.shard_files(2), ShardFiles::Missing);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 9 item 3: `os` writes reach the page cache only, so after a power loss (a new
    /// boot id) its files may hold anything older than what the node acknowledged. A start
    /// in another boot than the one the `os` run recorded rejoins every shard (spec §8.5);
    /// one in the same boot (a process crash) trusts the files.
    #[test]
    fn an_os_directory_written_in_another_boot_rejoins_every_shard() {
        let dir = dir("os-reboot");
        let me = identity(1, "1@127.0.0.1:1/2");
        let mut d = DataDir::open(&dir, &me, false, Some("boot-a")).unwrap();
        assert_eq!(d.boot(), Boot::Kept);
        d.record_identity(&me).unwrap();
        d.record_boot().unwrap();
        store_a_term(&d, 0);
        store_a_term(&d, 1);
        drop(d);
        // A process crash: the same boot, the files are the node's state.
        let d = DataDir::open(&dir, &me, false, Some("boot-a")).unwrap();
        assert_eq!(d.boot(), Boot::Kept);
        for shard in 0..2 {
            assert!(matches!(
                start_of(&d, shard),
                restart::Start::Restore { .. }
            ));
        }
        drop(d);
        // A power loss: another boot. Every shard rejoins, and the marks say so from now on.
        let mut d = DataDir::open(&dir, &me, false, Some("boot-b")).unwrap();
        assert_eq!(d.boot(), Boot::Changed);
        for shard in 0..2 {
            let start = start_of(&d, shard);
            assert!(matches!(start, restart::Start::Rejoin), "{start:?}");
        }
        d.set_marks(&[(0, Some(Mark::Rejoin)), (1, Some(Mark::Rejoin))])
            .unwrap();
        d.record_boot().unwrap();
        drop(d);
        // A crash while rejoining, in the new boot: the record now trusts the files, and the
        // marks keep the shards rejoining.
        let d = DataDir::open(&dir, &me, false, Some("boot-b")).unwrap();
        assert_eq!(d.boot(), Boot::Kept);
        assert!(matches!(start_of(&d, 0), restart::Start::Rejoin));
        drop(d);
        // A boot id that cannot be read is taken for another boot.
        let d = DataDir::open(&dir, &me, false, None).unwrap();
        assert_eq!(d.boot(), Boot::Changed);
        drop(d);
        // And so is a record that does not read as one.
        std::fs::write(dir.join(BOOT_FILE), "junk").unwrap();
        let d = DataDir::open(&dir, &me, false, Some("boot-b")).unwrap();
        assert_eq!(d.boot(), Boot::Changed);
        drop(d);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An `fsync` start on files an `os` run wrote: in the same boot it syncs them, removes
    /// the record and trusts them; after a reboot its shards rejoin, and the record goes only
    /// once they are marked.
    #[test]
    fn an_fsync_start_after_an_os_run_syncs_in_the_same_boot_and_rejoins_after_a_reboot() {
        let dir = dir("os-then-fsync");
        let me = identity(1, "1@127.0.0.1:1/1");
        let os_run = |boot: &str| {
            let mut d = DataDir::open(&dir, &me, false, Some(boot)).unwrap();
            d.record_identity(&me).unwrap();
            d.record_boot().unwrap();
            store_a_term(&d, 0);
        };
        os_run("boot-a");
        assert!(dir.join(BOOT_FILE).exists());
        let d = DataDir::open(&dir, &me, true, Some("boot-a")).unwrap();
        assert_eq!(d.boot(), Boot::Kept);
        assert!(!dir.join(BOOT_FILE).exists(), "synced, so no longer needed");
        assert!(matches!(start_of(&d, 0), restart::Start::Restore { .. }));
        drop(d);
        // Without the record, a later start in any boot trusts what fsync made durable.
        let d = DataDir::open(&dir, &me, true, Some("boot-z")).unwrap();
        assert_eq!(d.boot(), Boot::Kept);
        drop(d);
        os_run("boot-a");
        let mut d = DataDir::open(&dir, &me, true, Some("boot-b")).unwrap();
        assert_eq!(d.boot(), Boot::Changed);
        assert!(matches!(start_of(&d, 0), restart::Start::Rejoin));
        assert!(
            dir.join(BOOT_FILE).exists(),
            "kept until the shards are marked"
        );
        d.set_marks(&[(0, Some(Mark::Rejoin))]).unwrap();
        d.record_boot().unwrap();
        assert!(!dir.join(BOOT_FILE).exists());
        drop(d);
        let d = DataDir::open(&dir, &me, true, Some("boot-b")).unwrap();
        assert_eq!(d.boot(), Boot::Kept);
        assert!(matches!(start_of(&d, 0), restart::Start::Rejoin));
        drop(d);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 8 item 4: a follower that received a junk INSTALL_SNAPSHOT (valid framing,
    /// garbage bytes) stored it, and then could not restart ("not a shard snapshot"). A
    /// snapshot is now decoded before it replaces anything, so what reaches the disk is the
    /// replica's own state, which restores.
    #[test]
    fn a_replica_fed_a_junk_snapshot_still_restarts_from_its_files() {
        use crate::core::lock_table;
        use crate::core::replica::{self, Replica};
        let dir = dir("junk-snapshot");
        let (mut store, _) = Store::open(&dir, 2, false).unwrap();
        let config = replica::Config {
            shard: 2,
            raft: Config {
                id: 2,
                voters: vec![1, 2, 3],
                ..Config::default()
            },
            table: lock_table::Config::default(),
        };
        let now = Instant::from_micros(1);
        let mut replica = Replica::new(config.clone(), 1, HardState::default(), Vec::new(), now);
        // Node 1 leads term 1: its no-op, committed.
        let noop = Entry {
            term: 1,
            index: 1,
            data: Vec::new().into(),
        };
        let append = Message::Append {
            term: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![noop].into(),
            leader_commit: 1,
            round: 1,
            transfer_to: None,
        };
        replica.handle_message(now, 1, append);
        store
            .write(&replica.take_persist().expect("a change"))
            .unwrap();
        // A complete snapshot of garbage, in one chunk, "from the leader".
        let junk = vec![0xA5u8; 700];
        let chunk = Message::InstallSnapshot {
            term: 1,
            last_index: 9,
            last_term: 1,
            offset: 0,
            total_len: junk.len() as u64,
            data: junk,
            round: 2,
        };
        replica.handle_message(now, 1, chunk);
        // Dropped before it replaced anything: nothing to store.
        assert_eq!(replica.take_persist(), None);
        drop(store);
        let (_, p) = Store::open(&dir, 2, false).unwrap();
        let restored = Replica::restore(config, 2, p.hard, p.snapshot, p.log, now);
        let _ = std::fs::remove_dir_all(&dir);
        let restored = restored.expect("the replica restores from its files");
        assert_eq!(restored.raft().last_index(), 1);
    }

    /// Review finding: a log rewritten after a snapshot the directory no longer holds used to
    /// open fine and then crash Raft's restore; it is now an error at open.
    #[test]
    fn a_log_that_starts_after_the_snapshot_file_is_an_error() {
        let dir = dir("base-ahead");
        let (mut store, _) = Store::open(&dir, 1, false).unwrap();
        let now = Instant::from_micros(1);
        let mut raft = lone_leader(1, now);
        for byte in 1..=5u8 {
            raft.propose(now, vec![byte]).unwrap();
        }
        persist(&mut store, &mut raft);
        while raft.poll_committed().is_some() {}
        let through = raft.commit_index() - 2;
        raft.compact(through, Arc::new(b"state".to_vec()));
        persist(&mut store, &mut raft);
        drop(store);
        std::fs::remove_file(dir.join("shard-0001.snap")).unwrap();
        let opened = Store::open(&dir, 1, false);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(opened.is_err());
    }

    /// Issue 13 item 4: a directory in the layout before the write-ahead log (identity
    /// format 1, `shard-NNNN.state`/`.log`/`.snap`, written here by that layout's own code)
    /// opens: its identity is rewritten as format 3 first (which a binary of before the log
    /// refuses: it knows formats 1 and 2 only), the shards read back exactly as they were
    /// (a marked one is not migrated and rejoins), the old state and log files are gone, and
    /// the next start reads the same state from the log.
    #[test]
    fn a_directory_of_the_layout_before_the_log_is_folded_into_it() {
        let dir = dir("migrate");
        let me = identity(1, "1@127.0.0.1:1/3");
        std::fs::create_dir_all(&dir).unwrap();
        let old_identity = format!(
            "{IDENTITY_FORMAT}\ncluster {:#018x} {}\nnode 1\n",
            me.membership_id, me.membership
        );
        std::fs::write(dir.join(IDENTITY_FILE), &old_identity).unwrap();
        let disk = FsDisk::new(&dir).unwrap();
        let mut expected = Vec::new();
        for shard in 0..3u32 {
            let (mut store, _) = ShardStore::open_on(disk.clone(), shard, true).unwrap();
            let now = Instant::from_micros(1);
            let mut raft = lone_leader(1, now);
            for byte in 1..=(5 + shard as u8) {
                raft.propose(now, vec![byte; 20]).unwrap();
            }
            // A single voter commits once its write is reported stored.
            let p = raft.take_persist().expect("a vote and entries");
            store.write(&p).unwrap();
            raft.persisted(p.last_index, p.last_term);
            while raft.poll_committed().is_some() {}
            if shard == 1 {
                let through = raft.commit_index() - 2;
                raft.compact(through, Arc::new(b"state".to_vec()));
                store
                    .write(&raft.take_persist().expect("a snapshot"))
                    .unwrap();
            }
            let snapshot = (raft.snapshot_meta().index > 0).then(|| raft.snapshot_meta());
            expected.push((raft.hard_state(), snapshot, raft.log().to_vec()));
        }
        crate::store::set_marks(&disk, true, &[(2, Some(Mark::Rejoin))]).unwrap();
        assert!(dir.join("shard-0000.log").exists() && dir.join("shard-0001.snap").exists());

        for start in 0..2 {
            let mut d = DataDir::open(&dir, &me, true, BOOT).unwrap();
            assert!(!d.is_new());
            let text = std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap();
            assert!(text.starts_with(IDENTITY_FORMAT_WAL), "{text}");
            assert_eq!(
                text.replace(IDENTITY_FORMAT_WAL, IDENTITY_FORMAT),
                old_identity
            );
            let (starts, wal) = open_shards(Some(&d), 3, false, false).unwrap();
            let mut wal = wal.expect("a directory's log");
            for shard in 0..2 {
                match &starts[shard] {
                    Some(restart::Start::Restore {
                        hard,
                        snapshot,
                        log,
                    }) => {
                        let snapshot = snapshot.as_ref().map(|(meta, _)| *meta);
                        assert_eq!(
                            (*hard, snapshot, log.clone()),
                            expected[shard],
                            "start {start}, shard {shard}"
                        );
                    }
                    other => panic!("start {start}, shard {shard}: {other:?}"),
                }
            }
            assert!(matches!(starts[2], Some(restart::Start::Rejoin)));
            settle_start(&mut d, &me, &starts, &mut wal).unwrap();
            let names: Vec<String> = d.disk().list().unwrap();
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".state") || n.ends_with(".log")),
                "{names:?}"
            );
            assert!(
                names.contains(&"wal-0000000000000001".to_string()),
                "{names:?}"
            );
            assert!(names.contains(&"shard-0001.snap".to_string()), "{names:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
