//! The simulator's disk: a [`Disk`] in memory that keeps, for every file and for the
//! directory, what a write or rename made visible and what a sync made durable, so that the
//! real storage code ([`crate::store::Wal`], and the layout before it) runs over it and
//! meets what a real disk does to it:
//!
//! - a **process crash** keeps everything written (the page cache survives the process);
//! - a **power loss** ([`SimDisk::lose_power`]) keeps only what was synced: each file's
//!   content as of its last `sync`, and the directory's entries (files created, renamed,
//!   removed) as of its last `sync_dir`;
//! - the kernel's **writeback** ([`SimDisk::writeback`]): every file's content and the
//!   directory become durable, as if each had been synced (what an `os` node's data reaches
//!   at random moments);
//! - a **failed or torn write** ([`SimDisk::fail_write`]): one of the next writes (`write_at`,
//!   or the content of a `replace`) writes only some of its bytes, in whole sectors (a disk
//!   writes a sector all or nothing: [`SECTOR_LEN`]), then fails; and, if the process died
//!   in the middle of it, every later change fails too until the node restarts
//!   ([`SimDisk::restart`]), so that nothing cleans up after the torn write;
//! - a **lost directory** ([`SimDisk::wipe`]): nothing is left.
//!
//! Files are inodes, as on a real file system: a name points to one, `replace` points the
//! name at a new one, and a handle keeps writing to the inode it opened.
//!
//! Below the disk, the simulator's use of it: storing a node's writes through
//! `DataDir::apply` and one `DataDir::commit` per store (group commit), the torn writes it
//! arms, the kernel's writeback of `os` nodes, and the chances of each.
//!
//! A disk node (`fsync` or `os`) stores its writes in the background, as a shell with a
//! writer thread does: what its core hands out waits in its `unstored` until an
//! `Event::Store` a random [`STORE_DELAY_US`] later applies it all through the real storage
//! code and reports it ([`crate::core::node::Node::stored`]); a datagram leaves only once
//! the writes it waits for are stored (`Transmit::after`), so a leader's Appends leave while
//! it writes them (Raft thesis §10.2.1) and a follower's acknowledgement only after.
//! A crash or power loss before the event loses those writes whole, even under `os`, whose
//! page cache a real kill -9 keeps: harsher than a real crash, and within what `fsync`
//! claims to survive (nothing it has not reported stored). A `memory` node stores nothing
//! and reports each write stored as it is handed out.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use rand::Rng;

use super::{Event, Sim, SimConfig, SimFailure};
use crate::core::node::ShardWrite;
use crate::core::raft::NodeId;
use crate::core::time::Duration;
use crate::store::{Disk, DiskFile};

/// One file's bytes: as written (what a process reads) and as synced (what survives a
/// power loss).
#[derive(Clone, Debug, Default)]
struct Inode {
    written: Vec<u8>,
    synced: Vec<u8>,
    /// `written` and `synced` agree before this offset, so a sync copies only what follows
    /// (a log grows by appends: a sync costs the bytes appended, not the file).
    dirty_from: usize,
    /// Open handles ([`SimFile`]): an inode no name points to goes once none is left.
    handles: usize,
}

impl Inode {
    fn write_at(&mut self, bytes: &[u8], offset: usize) {
        self.dirty_from = self.dirty_from.min(offset);
        if self.written.len() < offset + bytes.len() {
            self.written.resize(offset + bytes.len(), 0);
        }
        self.written[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn set_len(&mut self, len: usize) {
        self.dirty_from = self.dirty_from.min(len);
        self.written.resize(len, 0);
    }

    fn sync(&mut self) {
        self.synced.truncate(self.dirty_from);
        self.synced
            .extend_from_slice(&self.written[self.dirty_from..]);
        self.dirty_from = self.written.len();
    }

    /// A power loss: back to what was synced.
    fn revert(&mut self) {
        self.written.clone_from(&self.synced);
        self.dirty_from = self.written.len();
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The directory as processes see it, and as it survives a power loss.
    names: BTreeMap<String, u64>,
    names_synced: BTreeMap<String, u64>,
    /// A write to fail (see `fail_write`).
    fail: Option<Fail>,
    /// The process died in the middle of a write: every change fails until `restart`.
    dead: bool,
    /// Writes that failed so far.
    failed_writes: u64,
    /// Writes (`write_at`, a `replace`'s content) and file syncs so far: what group commit
    /// saves.
    writes: u64,
    syncs: u64,
}

/// The write [`SimDisk::fail_write`] armed.
#[derive(Clone, Copy, Debug)]
struct Fail {
    /// Writes that still succeed before the one that fails.
    skip: usize,
    /// Picks how many of its bytes land: `pick % (len + 1)`, rounded down to a sector.
    pick: u64,
    /// The process dies with it (see `dead`).
    dies: bool,
}

/// What a disk writes all or nothing: a write torn part-way keeps only whole sectors of it.
/// (So the 24-byte Raft state, rewritten in place at offset 0, is never half old, half new:
/// the assumption every storage engine makes for a small write within a sector.)
pub(crate) const SECTOR_LEN: u64 = 512;

impl State {
    fn create(&mut self) -> u64 {
        self.next_inode += 1;
        self.inodes.insert(self.next_inode, Inode::default());
        self.next_inode
    }

    /// Fails if the process died in the middle of a write (see `dead`).
    fn alive(&self) -> io::Result<()> {
        if self.dead {
            return Err(io::Error::other(
                "simulated: the process died during a write",
            ));
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` of `inode`, or only whole sectors of a prefix and fails, if
    /// armed to.
    /// Drops `inode` if no name (seen or synced) points to it and no handle is open.
    fn forget_if_unused(&mut self, inode: u64) {
        let used = self.inodes.get(&inode).is_none_or(|i| i.handles > 0)
            || self.names.values().any(|&i| i == inode)
            || self.names_synced.values().any(|&i| i == inode);
        if !used {
            self.inodes.remove(&inode);
        }
    }

    /// Makes the directory's entries durable; forgets the inodes only the old ones named.
    fn sync_names(&mut self) {
        let old = std::mem::replace(&mut self.names_synced, self.names.clone());
        for inode in old.into_values() {
            self.forget_if_unused(inode);
        }
    }

    fn write(&mut self, inode: u64, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.alive()?;
        self.writes += 1;
        let fail = match self.fail.as_mut() {
            Some(fail) if fail.skip > 0 => {
                fail.skip -= 1;
                None
            }
            Some(_) => self.fail.take(),
            None => None,
        };
        let len = match fail {
            Some(fail) => {
                let keep = fail.pick % (bytes.len() as u64 + 1);
                let end = (offset + keep) / SECTOR_LEN * SECTOR_LEN;
                end.saturating_sub(offset) as usize
            }
            None => bytes.len(),
        };
        let file = self.inodes.get_mut(&inode).expect("an open file's inode");
        let offset = usize::try_from(offset).expect("simulated files are small");
        if len > 0 {
            file.write_at(&bytes[..len], offset);
        }
        if let Some(fail) = fail {
            self.failed_writes += 1;
            self.dead = fail.dies;
            return Err(io::Error::other("simulated write failure"));
        }
        Ok(())
    }
}

/// A simulated directory; clones share it (each node's storage holds one).
#[derive(Clone, Debug, Default)]
pub(crate) struct SimDisk {
    state: Rc<RefCell<State>>,
}

/// An open file of a [`SimDisk`].
#[derive(Debug)]
pub(crate) struct SimFile {
    state: Rc<RefCell<State>>,
    inode: u64,
}

impl SimDisk {
    pub(crate) fn new() -> SimDisk {
        SimDisk::default()
    }

    /// The machine loses power: every file holds what it last synced, and the directory the
    /// entries it last synced; everything else is gone.
    pub(crate) fn lose_power(&self) {
        let mut state = self.state.borrow_mut();
        state.names = state.names_synced.clone();
        for inode in state.inodes.values_mut() {
            inode.revert();
        }
        let inodes: Vec<u64> = state.inodes.keys().copied().collect();
        for inode in inodes {
            state.forget_if_unused(inode);
        }
        state.fail = None;
    }

    /// The kernel writes its page cache back: every file's content and the directory's
    /// entries become durable.
    pub(crate) fn writeback(&self) {
        let mut state = self.state.borrow_mut();
        state.sync_names();
        for inode in state.inodes.values_mut() {
            inode.sync();
        }
    }

    /// After `skip` more writes succeed, the next one (`write_at`, or the content of a
    /// `replace`) stores only part of its bytes (`pick % (len + 1)`, cut to whole sectors:
    /// [`SECTOR_LEN`]) and fails; if `dies`, every later change fails too until
    /// [`SimDisk::restart`] (the process died in the middle of the write).
    pub(crate) fn fail_write(&self, skip: usize, pick: u64, dies: bool) {
        self.state.borrow_mut().fail = Some(Fail { skip, pick, dies });
    }

    /// Disarms a [`SimDisk::fail_write`]; true if it was still armed (had not fired).
    pub(crate) fn disarm(&self) -> bool {
        self.state.borrow_mut().fail.take().is_some()
    }

    /// The node starts again on this disk: a write that failed no longer stops changes.
    pub(crate) fn restart(&self) {
        let mut state = self.state.borrow_mut();
        state.dead = false;
        state.fail = None;
    }

    /// Writes that failed so far.
    #[cfg(test)]
    pub(crate) fn failed_writes(&self) -> u64 {
        self.state.borrow().failed_writes
    }

    /// Writes and file syncs so far (see `State::writes`).
    #[cfg(test)]
    pub(crate) fn writes_and_syncs(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.writes, state.syncs)
    }

    /// The directory is lost (a replaced disk, an emptied or mistyped `--data-dir`).
    pub(crate) fn wipe(&self) {
        let mut state = self.state.borrow_mut();
        // Inode numbers are never reused: handles of the lost files may still be open.
        *state = State {
            failed_writes: state.failed_writes,
            writes: state.writes,
            syncs: state.syncs,
            next_inode: state.next_inode,
            ..State::default()
        };
    }

    fn file(&self, inode: u64) -> SimFile {
        if let Some(file) = self.state.borrow_mut().inodes.get_mut(&inode) {
            file.handles += 1;
        }
        SimFile {
            state: self.state.clone(),
            inode,
        }
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn open(&self, name: &str, truncate: bool) -> io::Result<SimFile> {
        let mut state = self.state.borrow_mut();
        state.alive()?;
        let inode = match state.names.get(name) {
            Some(&inode) => inode,
            None => {
                let inode = state.create();
                state.names.insert(name.to_string(), inode);
                inode
            }
        };
        if truncate {
            state.inodes.get_mut(&inode).expect("named").set_len(0);
        }
        drop(state);
        Ok(self.file(inode))
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let state = self.state.borrow();
        Ok(state
            .names
            .get(name)
            .map(|inode| state.inodes[inode].written.clone()))
    }

    fn replace(&self, name: &str, bytes: &[u8], sync: bool) -> io::Result<SimFile> {
        let tmp = format!("{name}.tmp");
        let mut state = self.state.borrow_mut();
        state.alive()?;
        let inode = state.create();
        if let Some(old) = state.names.insert(tmp.clone(), inode) {
            // What an earlier, failed replace left.
            state.forget_if_unused(old);
        }
        state.write(inode, bytes, 0)?;
        if sync {
            state.inodes.get_mut(&inode).expect("created").sync();
        }
        state.names.remove(&tmp);
        if let Some(old) = state.names.insert(name.to_string(), inode) {
            state.forget_if_unused(old);
        }
        if sync {
            state.sync_names();
        }
        drop(state);
        Ok(self.file(inode))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.alive()?;
        if let Some(old) = state.names.remove(name) {
            state.forget_if_unused(old);
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.alive()?;
        state.sync_names();
        Ok(())
    }

    fn exists(&self, name: &str) -> bool {
        self.state.borrow().names.contains_key(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.borrow().names.keys().cloned().collect())
    }
}

impl DiskFile for SimFile {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        Ok(self.state.borrow().inodes[&self.inode].written.clone())
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.state.borrow_mut().write(self.inode, bytes, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.alive()?;
        let file = state.inodes.get_mut(&self.inode).expect("open");
        file.set_len(usize::try_from(len).expect("small"));
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // Zeros up to `len`, like a real file's unwritten extents (durable at the next sync).
        let mut state = self.state.borrow_mut();
        state.alive()?;
        let file = state.inodes.get_mut(&self.inode).expect("open");
        let len = usize::try_from(len).expect("small");
        if file.written.len() < len {
            file.set_len(len);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.alive()?;
        state.syncs += 1;
        state.inodes.get_mut(&self.inode).expect("open").sync();
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = self.state.borrow_mut();
        if let Some(file) = state.inodes.get_mut(&self.inode) {
            file.handles -= 1;
        }
        state.forget_if_unused(self.inode);
    }
}

/// Chance that persisting what one input changed fails part-way or is torn (see the module
/// docs): a few times per run, on top of the crash faults.
pub(super) const TORN_WRITE_PROBABILITY: f64 = 0.0005;

/// One random seed in this many (those with `seed % OS_SEEDS_EVERY == 2`) runs its nodes
/// with `--durability os` (see the module docs).
pub(super) const OS_SEEDS_EVERY: u64 = 4;

pub(super) fn os_seed(config: &SimConfig) -> bool {
    config.scenario.is_none() && config.seed % OS_SEEDS_EVERY == 2
}

/// How often (ms) an `os` node's kernel writes its page cache back: Linux wakes its flusher
/// every 5 s and writes what has been dirty for 30 s; shorter here, so that a power loss may
/// find the disk a little or a lot behind.
pub(super) const WRITEBACK_INTERVAL_MS: std::ops::Range<u64> = 200..6_000;

/// Chance that a restart of an `os` node follows a power loss (when a minority can lose its
/// state; see the module docs).
pub(super) const POWER_LOSS_PROBABILITY: f64 = 0.5;

/// Chance that a restart of an `fsync` node follows a power loss (any number at once: their
/// files hold everything they acknowledged).
pub(super) const FSYNC_POWER_LOSS_PROBABILITY: f64 = 0.3;

/// How long (µs) a disk node takes to store what its core handed out and report it: about a
/// disk sync, so that a leader's own write and its followers' overlap in every order.
pub(super) const STORE_DELAY_US: std::ops::Range<u64> = 20..2_000;

impl Sim {
    /// Takes every write node `id`'s core hands out, in order: a `memory` node drops each
    /// and reports it stored at once; a disk node keeps them for its next [`Event::Store`]
    /// (scheduled if none is), or in a scenario stores and reports them at once (scenarios
    /// script the order of messages, as they did when every shell stored before it sent).
    /// True if the node stopped (a torn write).
    pub(super) fn hand_out_writes(&mut self, id: NodeId) -> Result<bool, SimFailure> {
        let i = (id - 1) as usize;
        let at_once = self.config.scenario.is_some();
        loop {
            let now = self.now;
            let n = &mut self.nodes[i];
            let Some(core) = n.node.as_mut() else {
                return Ok(true);
            };
            while let Some(write) = core.poll_persist() {
                n.handed_seq = write.seq;
                if write.raft.as_ref().is_some_and(|p| p.snapshot.is_some()) {
                    self.report.snapshots += 1;
                }
                if !n.memory {
                    n.unstored.push(write);
                }
            }
            // A frozen process stores nothing and hears of nothing until it resumes.
            let paused = n.paused_until.is_some();
            if n.memory {
                // A `memory` node writes nothing: its shell drops the writes, stored at once.
                n.stored_seq = n.handed_seq;
            } else if at_once && !paused && !n.unstored.is_empty() && self.store_writes(id)? {
                return Ok(true);
            }
            let n = &mut self.nodes[i];
            if paused || n.stored_seq == n.reported_seq {
                break;
            }
            // Reported, as the shell reports what it stored: the core may commit and answer,
            // and hand out more.
            n.reported_seq = n.stored_seq;
            let local = n.clock.local(now);
            let seq = n.stored_seq;
            n.node.as_mut().expect("running").stored(local, seq);
        }
        let n = &mut self.nodes[i];
        if !n.unstored.is_empty() && !n.store_scheduled {
            n.store_scheduled = true;
            let generation = n.store_generation;
            let after = Duration::from_micros(self.store_rng.gen_range(STORE_DELAY_US));
            self.schedule(
                after,
                Event::Store {
                    node: id,
                    generation,
                },
            );
        }
        Ok(false)
    }

    /// [`Event::Store`]: node `id` stores what it handed out since the last one (unless it
    /// crashed since, or the event is stale), and carries on as after any call into it: it
    /// reports them stored, and its datagrams that waited for them leave. A paused node does
    /// it when it resumes.
    pub(super) fn store_event(&mut self, id: NodeId, generation: u64) -> Result<(), SimFailure> {
        let n = self.node(id);
        if n.store_generation != generation || n.node.is_none() || !n.store_scheduled {
            return Ok(());
        }
        if let Some(until) = n.paused_until {
            self.schedule_at(
                until,
                Event::Store {
                    node: id,
                    generation,
                },
            );
            return Ok(());
        }
        n.store_scheduled = false;
        if self.store_writes(id)? {
            return Ok(());
        }
        self.after_call(id)
    }

    /// Stores every write node `id` handed out and has not stored, in order, through the real
    /// storage code, then commits them in one write (group commit), as the real shell's
    /// writer does; a torn or failed write stops the node (fail-stop). True if it stopped.
    pub(super) fn store_writes(&mut self, id: NodeId) -> Result<bool, SimFailure> {
        let i = (id - 1) as usize;
        let writes = std::mem::take(&mut self.nodes[i].unstored);
        let mut armed = false;
        let mut stored = Ok(());
        let mut shard = None;
        for write in &writes {
            assert!(!self.nodes[i].memory, "a memory node stores nothing");
            if !armed {
                armed = self.arm_torn_write(id, write);
            }
            let n = &mut self.nodes[i];
            let dir = n.dir.as_ref().expect("a disk node runs on its directory");
            let wal = n.wal.as_mut().expect("a disk node runs on its log");
            stored = dir.apply(wal, write);
            if stored.is_err() {
                shard = Some(write.shard);
                break;
            }
        }
        let n = &mut self.nodes[i];
        if let (Ok(()), Some(dir), Some(wal)) = (&stored, n.dir.as_ref(), n.wal.as_mut()) {
            stored = dir.commit(wal);
        }
        let torn = armed && !n.disk.disarm();
        match stored {
            Ok(()) if !torn => {}
            Ok(()) => {
                return Err(self.fail(format!(
                    "node {id}: a write the disk failed was stored without an error"
                )));
            }
            Err(_) if torn => {
                // Fail-stop, as the real shell does: nothing that depends on these writes
                // leaves, and the node restarts from what its files hold.
                self.report.torn_writes += 1;
                self.crash(id);
                let down = Duration::from_millis(self.rng.gen_range(50..1_000));
                self.schedule(down, Event::Restart { node: id });
                return Ok(true);
            }
            Err(e) => {
                return Err(self.fail(format!(
                    "node {id} failed to store a write (of shard {shard:?}, or the commit): {e}"
                )));
            }
        }
        let n = &mut self.nodes[i];
        if let Some(last) = writes.last() {
            n.stored_seq = last.seq;
        }
        if let Some(wal) = n.wal.as_ref() {
            let (oldest, current) = wal.segments();
            self.report.wal_segments_max = self.report.wal_segments_max.max(current - oldest + 1);
            self.report.wal_segments_retired = self.report.wal_segments_retired.max(oldest - 1);
        }
        Ok(false)
    }

    /// Asks node `id` to compact the shards whose live entries hold its write-ahead log's
    /// oldest segment back (`Wal::holding_back`), as the real shell does after its commit;
    /// here once what the node applied is observed (a compaction drops applied entries from
    /// its log, which the checkers read). Their writes are stored after the next call.
    pub(super) fn compact_held_back(&mut self, id: NodeId) {
        let n = &mut self.nodes[(id - 1) as usize];
        if let (Some(wal), Some(node)) = (n.wal.as_mut(), n.node.as_mut()) {
            for shard in wal.holding_back() {
                if node.compact(shard) {
                    self.report.wal_compactions += 1;
                } else if let Some(raft) = node.replica(shard).map(|r| r.raft()) {
                    // Nothing applied since its snapshot: its live entries written again.
                    wal.relocate(shard, raft.snapshot_meta(), raft.log());
                    self.report.wal_relocations += 1;
                }
            }
        }
    }

    /// The kernel of `os` node `node` writes its page cache back, while it runs; and again
    /// later.
    pub(super) fn writeback(&mut self, node: NodeId) {
        let n = self.node(node);
        assert!(n.os, "only os nodes write back");
        if n.node.is_some() {
            n.disk.writeback();
        }
        let after = self.rng.gen_range(WRITEBACK_INTERVAL_MS);
        self.schedule(Duration::from_millis(after), Event::Writeback { node });
    }

    /// Sometimes (random runs, before healing) the writes of what the last input produced
    /// fail part-way or are torn by a crash: arms the node's disk to fail one of the disk
    /// writes storing `write` and committing the turn makes, at a random byte
    /// ([`SimDisk::fail_write`]). True if it did. The count: a snapshot's inline commit and
    /// file, then the turn's commit (one write, two if the segment rolls over); a skip past
    /// the writes made leaves it unfired, and the caller disarms it.
    pub(super) fn arm_torn_write(&mut self, id: NodeId, write: &ShardWrite) -> bool {
        let Some(persist) = &write.raft else {
            return false;
        };
        if !self.config.faults || self.config.scenario.is_some() || self.healed {
            return false;
        }
        if !self.rng.gen_bool(TORN_WRITE_PROBABILITY) {
            return false;
        }
        let writes = match &persist.snapshot {
            Some(_) => 4,
            None => 2,
        };
        let skip = self.rng.gen_range(0..writes);
        let (pick, dies) = (self.rng.gen(), self.rng.gen_bool(0.5));
        self.node(id).disk.fail_write(skip, pick, dies);
        true
    }
}

/// The simulator's segment size of the write-ahead log ([`crate::store::SEGMENT_BYTES`] in
/// production): small, so that every run rolls segments over and retires them, and idle
/// shards get compacted through `Node::compact`.
pub(super) const SIM_SEGMENT_BYTES: u64 = 16 << 10;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::raft::{Entry, HardState, Persist};
    use crate::store::{ShardStore, Wal, SEGMENT_BYTES};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            data: vec![index as u8; 5].into(),
        }
    }

    /// A vote, then two entries, then one more: three deltas.
    fn deltas() -> Vec<Persist> {
        vec![
            Persist {
                hard: Some(HardState {
                    term: 2,
                    voted_for: Some(1),
                    replica: 1,
                }),
                snapshot: None,
                log_from: None,
                entries: Vec::new(),
                last_index: 0,
                last_term: 0,
            },
            Persist {
                hard: None,
                snapshot: None,
                log_from: Some(1),
                entries: vec![entry(2, 1), entry(2, 2)],
                last_index: 2,
                last_term: 2,
            },
            Persist {
                hard: None,
                snapshot: None,
                log_from: Some(3),
                entries: vec![entry(2, 3)],
                last_index: 3,
                last_term: 2,
            },
        ]
    }

    fn written(sync: bool) -> SimDisk {
        let disk = SimDisk::new();
        let (mut store, _) = ShardStore::open_on(disk.clone(), 0, sync).unwrap();
        for delta in deltas() {
            store.write(&delta).unwrap();
        }
        disk
    }

    #[test]
    fn fsync_keeps_every_write_across_a_power_loss() {
        let disk = written(true);
        disk.lose_power();
        let (_, p) = ShardStore::open_on(disk, 0, true).unwrap();
        assert_eq!(p.hard.term, 2);
        assert_eq!(p.hard.voted_for, Some(1));
        assert_eq!(p.log, vec![entry(2, 1), entry(2, 2), entry(2, 3)]);
    }

    #[test]
    fn os_keeps_every_write_across_a_crash_and_loses_them_to_a_power_loss() {
        let disk = written(false);
        let (_, p) = ShardStore::open_on(disk.clone(), 0, false).unwrap();
        assert_eq!(p.log.len(), 3, "a process crash keeps the page cache");
        disk.lose_power();
        let (_, p) = ShardStore::open_on(disk, 0, false).unwrap();
        assert_eq!(p.hard, HardState::default(), "the vote was never synced");
        assert!(p.log.is_empty());
    }

    #[test]
    fn a_torn_append_reads_back_as_the_records_before_it() {
        let big = |index: u64| Entry {
            term: 2,
            index,
            data: vec![index as u8; 200].into(),
        };
        let append = |index: u64| Persist {
            hard: None,
            snapshot: None,
            log_from: Some(index),
            entries: vec![big(index)],
            last_index: index,
            last_term: 2,
        };
        let disk = SimDisk::new();
        let (mut store, _) = ShardStore::open_on(disk.clone(), 0, true).unwrap();
        // The vote of the entries' term first, as Raft writes it (the store refuses a log
        // whose terms pass the vote's).
        store
            .write(&Persist {
                hard: Some(HardState {
                    term: 2,
                    voted_for: None,
                    replica: 1,
                }),
                ..append(1)
            })
            .unwrap();
        store.write(&append(2)).unwrap();
        // Records of 216 bytes after the 16-byte header: the third spans 448..664, so a write
        // torn 100 bytes in keeps its first sector's part (448..512), and the process dies
        // before it can cut it.
        disk.fail_write(0, 100, true);
        assert!(store.write(&append(3)).is_err());
        assert_eq!(disk.failed_writes(), 1);
        assert_eq!(disk.read("shard-0000.log").unwrap().unwrap().len(), 512);
        disk.restart();
        let (_, p) = ShardStore::open_on(disk.clone(), 0, true).unwrap();
        assert_eq!(p.log, vec![big(1), big(2)]);
        assert_eq!(
            disk.read("shard-0000.log").unwrap().unwrap().len(),
            448,
            "cut"
        );
    }

    #[test]
    fn a_failed_write_keeps_whole_sectors_only_and_fires_after_the_writes_it_skips() {
        let disk = SimDisk::new();
        let file = disk.open("f", false).unwrap();
        file.write_at(&[1; 100], 0).unwrap();
        // The state file's case: a small write within one sector lands whole or not at all.
        disk.fail_write(1, 23, false);
        file.write_at(&[2; 24], 0).unwrap();
        assert!(file.write_at(&[3; 24], 0).is_err());
        assert_eq!(file.read_all().unwrap()[..24], [2; 24]);
        // Not dead: the next change works, and a write that crosses a sector boundary keeps
        // the sectors before it.
        disk.fail_write(0, 600, false);
        assert!(file.write_at(&[4; 1_000], 100).is_err());
        assert_eq!(file.read_all().unwrap().len(), 512);
        assert!(!disk.disarm(), "it fired");
        disk.fail_write(5, 0, true);
        assert!(disk.disarm(), "it did not fire");
        file.write_at(&[5; 1], 0).unwrap();
    }

    #[test]
    fn writeback_makes_every_file_and_the_directory_durable() {
        let disk = written(false);
        disk.writeback();
        disk.replace("late", b"x", false).unwrap();
        disk.lose_power();
        let (_, p) = ShardStore::open_on(disk.clone(), 0, false).unwrap();
        assert_eq!(p.hard.term, 2);
        assert_eq!(p.log.len(), 3);
        assert!(!disk.exists("late"), "renamed after the writeback");
    }

    /// Whatever write of a delta fails, at whatever byte, and whether the process dies with
    /// it, the files read back as a state Raft can restore from: no entry of a term after the
    /// stored current term (the hard state goes down before the log), and a log that is a
    /// prefix of the old one plus the new one.
    #[test]
    fn a_torn_delta_never_leaves_entries_of_a_term_after_the_stored_one() {
        let old = vec![entry(1, 1), entry(1, 2), entry(1, 3)];
        // A follower's first Append of term 3: the new term, and entries of it replacing
        // entry 3 (one delta).
        let delta = Persist {
            hard: Some(HardState {
                term: 3,
                voted_for: None,
                replica: 1,
            }),
            snapshot: None,
            log_from: Some(3),
            entries: vec![entry(3, 3), entry(3, 4)],
            last_index: 4,
            last_term: 3,
        };
        for skip in 0..2 {
            for pick in [0, 1, 17, 40, 600, u64::MAX] {
                for dies in [false, true] {
                    let disk = SimDisk::new();
                    let (mut store, _) = ShardStore::open_on(disk.clone(), 0, true).unwrap();
                    store
                        .write(&Persist {
                            hard: Some(HardState {
                                term: 1,
                                voted_for: Some(1),
                                replica: 1,
                            }),
                            snapshot: None,
                            log_from: Some(1),
                            entries: old.clone(),
                            last_index: old.len() as u64,
                            last_term: old.last().map_or(0, |e| e.term),
                        })
                        .unwrap();
                    disk.fail_write(skip, pick, dies);
                    let _ = store.write(&delta);
                    disk.restart();
                    let (_, p) = ShardStore::open_on(disk, 0, true).unwrap();
                    let case = format!("skip {skip}, pick {pick}, dies {dies}: {p:?}", p = p.log);
                    for e in &p.log {
                        assert!(e.term <= p.hard.term, "term {}; {case}", p.hard.term);
                    }
                    let new: Vec<Entry> = old[..2].iter().chain(&delta.entries).cloned().collect();
                    assert!(old.starts_with(&p.log) || new.starts_with(&p.log), "{case}");
                }
            }
        }
    }

    /// The hard state file (`store`): version 2 keeps the replica id; a version 1 file
    /// (before replica ids, 24 bytes) still reads, as a hard state without a replica id, and
    /// the next write turns it into version 2; a damaged one is refused.
    #[test]
    fn the_hard_state_file_keeps_the_replica_id_and_reads_the_version_before_it() {
        fn fnv1a(bytes: &[u8]) -> u32 {
            bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            })
        }
        let disk = SimDisk::new();
        let mut v1 = Vec::new();
        v1.extend_from_slice(&5u64.to_be_bytes());
        v1.extend_from_slice(&2u64.to_be_bytes());
        v1.extend_from_slice(&fnv1a(&v1).to_be_bytes());
        v1.extend_from_slice(&[0; 4]);
        let file = disk.open("shard-0000.state", true).unwrap();
        file.write_at(&v1, 0).unwrap();
        let (mut store, persisted) = ShardStore::open_on(disk.clone(), 0, true).unwrap();
        let old = HardState {
            term: 5,
            voted_for: Some(2),
            replica: 0,
        };
        assert_eq!(persisted.hard, old);
        let now = HardState {
            replica: 0xfeed_f00d,
            ..old
        };
        store
            .write(&Persist {
                hard: Some(now),
                snapshot: None,
                log_from: None,
                entries: Vec::new(),
                last_index: 0,
                last_term: 0,
            })
            .unwrap();
        let (_, persisted) = ShardStore::open_on(disk.clone(), 0, true).unwrap();
        assert_eq!(persisted.hard, now);
        let mut bytes = disk.read("shard-0000.state").unwrap().unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(bytes[16..24], 0xfeed_f00du64.to_be_bytes());
        assert_eq!(bytes[28..32], 2u32.to_be_bytes());
        bytes[20] ^= 1;
        disk.open("shard-0000.state", true)
            .unwrap()
            .write_at(&bytes, 0)
            .unwrap();
        assert!(
            ShardStore::open_on(disk, 0, true).is_err(),
            "a damaged state"
        );
    }

    #[test]
    fn replaced_files_are_forgotten_once_nothing_points_to_them() {
        let disk = SimDisk::new();
        let first = disk.replace("a", b"one", true).unwrap();
        for _ in 0..10 {
            drop(disk.replace("a", b"two", true).unwrap());
        }
        assert_eq!(
            disk.state.borrow().inodes.len(),
            2,
            "the open first, and the last"
        );
        drop(first);
        assert_eq!(disk.state.borrow().inodes.len(), 1);
        // Unsynced: the synced name still holds the old inode until a power loss.
        disk.replace("a", b"three", false).unwrap();
        assert_eq!(disk.state.borrow().inodes.len(), 2);
        disk.lose_power();
        assert_eq!(disk.read("a").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(disk.state.borrow().inodes.len(), 1);
    }

    #[test]
    fn an_unsynced_rename_is_lost_to_a_power_loss() {
        let disk = SimDisk::new();
        disk.replace("a", b"one", true).unwrap();
        disk.replace("a", b"two", false).unwrap();
        assert_eq!(disk.read("a").unwrap().as_deref(), Some(&b"two"[..]));
        disk.lose_power();
        assert_eq!(disk.read("a").unwrap().as_deref(), Some(&b"one"[..]));
        disk.wipe();
        assert!(!disk.exists("a"));
    }

    /// The node's log on `disk` with shard 0 held: read back if it holds it, else started
    /// empty (committed).
    fn wal(disk: &SimDisk, sync: bool) -> (Wal<SimDisk>, crate::store::Persisted) {
        let mut wal = Wal::open(disk.clone(), sync, SEGMENT_BYTES).unwrap();
        let p = wal.take(0).unwrap();
        wal.commit().unwrap();
        (wal, p)
    }

    /// [`deltas`] written to the log of a new disk, each committed.
    fn wal_written(sync: bool) -> SimDisk {
        let disk = SimDisk::new();
        let (mut wal, _) = wal(&disk, sync);
        for delta in deltas() {
            wal.write(0, &delta).unwrap();
            wal.commit().unwrap();
        }
        disk
    }

    #[test]
    fn fsync_keeps_every_commit_of_the_log_across_a_power_loss() {
        let disk = wal_written(true);
        disk.lose_power();
        let (_, p) = wal(&disk, true);
        assert_eq!(p.hard.term, 2);
        assert_eq!(p.hard.voted_for, Some(1));
        assert_eq!(p.log, vec![entry(2, 1), entry(2, 2), entry(2, 3)]);
    }

    #[test]
    fn os_keeps_every_commit_of_the_log_across_a_crash_and_loses_them_to_a_power_loss() {
        let disk = wal_written(false);
        let (_, p) = wal(&disk, false);
        assert_eq!(p.log.len(), 3, "a process crash keeps the page cache");
        // The kernel wrote some of it back: what it had written survives.
        let disk = SimDisk::new();
        let (mut log, _) = wal(&disk, false);
        let [vote, two, three] = <[Persist; 3]>::try_from(deltas()).unwrap();
        for delta in [vote, two] {
            log.write(0, &delta).unwrap();
            log.commit().unwrap();
        }
        disk.writeback();
        log.write(0, &three).unwrap();
        log.commit().unwrap();
        drop(log);
        disk.lose_power();
        let (_, p) = wal(&disk, false);
        assert_eq!(p.hard.term, 2, "written back");
        assert_eq!(
            p.log,
            vec![entry(2, 1), entry(2, 2)],
            "the page cache's last write lost"
        );
    }

    /// Group commit: whatever the number of shards a turn wrote, its commit is one write
    /// and, under `fsync`, one sync; under `os`, none.
    #[test]
    fn a_commit_of_many_shards_is_one_write_and_one_sync() {
        for sync in [true, false] {
            let disk = SimDisk::new();
            let mut wal = Wal::open(disk.clone(), sync, SEGMENT_BYTES).unwrap();
            for shard in 0..64 {
                wal.open_empty(shard).unwrap();
            }
            wal.commit().unwrap();
            let before = disk.writes_and_syncs();
            for shard in 0..64 {
                for delta in deltas() {
                    wal.write(shard, &delta).unwrap();
                }
            }
            wal.commit().unwrap();
            let (writes, syncs) = disk.writes_and_syncs();
            assert_eq!(writes - before.0, 1, "sync {sync}");
            assert_eq!(syncs - before.1, u64::from(sync), "sync {sync}");
        }
    }

    /// Whatever disk write of a commit fails, at whatever byte, and whether the process
    /// dies with it, the log reads back as a state Raft can restore from: no entry of a
    /// term after the stored current term (the hard state's record precedes the entries'),
    /// and a log that is a prefix of the old one plus the new one.
    #[test]
    fn a_torn_commit_never_leaves_entries_of_a_term_after_the_stored_one() {
        // Entries of 300 bytes: the commit's write crosses sector boundaries.
        let entry = |term, index| Entry {
            term,
            index,
            data: vec![index as u8; 300].into(),
        };
        let old = vec![entry(1, 1), entry(1, 2), entry(1, 3)];
        let delta = Persist {
            hard: Some(HardState {
                term: 3,
                voted_for: None,
                replica: 1,
            }),
            snapshot: None,
            log_from: Some(3),
            entries: vec![entry(3, 3), entry(3, 4)],
            last_index: 4,
            last_term: 3,
        };
        for pick in [0, 1, 17, 40, 100, 300, 600, 700, u64::MAX] {
            for dies in [false, true] {
                let disk = SimDisk::new();
                let (mut log, _) = wal(&disk, true);
                log.write(
                    0,
                    &Persist {
                        hard: Some(HardState {
                            term: 1,
                            voted_for: Some(1),
                            replica: 1,
                        }),
                        snapshot: None,
                        log_from: Some(1),
                        entries: old.clone(),
                        last_index: 3,
                        last_term: 1,
                    },
                )
                .unwrap();
                log.commit().unwrap();
                disk.fail_write(0, pick, dies);
                log.write(0, &delta).unwrap();
                assert!(log.commit().is_err());
                assert_eq!(disk.failed_writes(), 1);
                drop(log);
                disk.restart();
                let (_, p) = wal(&disk, true);
                let case = format!("pick {pick}, dies {dies}: {p:?}", p = p.log);
                for e in &p.log {
                    assert!(e.term <= p.hard.term, "term {}; {case}", p.hard.term);
                }
                let new: Vec<Entry> = old[..2].iter().chain(&delta.entries).cloned().collect();
                assert!(old.starts_with(&p.log) || new.starts_with(&p.log), "{case}");
            }
        }
    }
}
