//! The simulator's disk: a [`Disk`] in memory that keeps, for every file and for the
//! directory, what a write or rename made visible and what a sync made durable, so that the
//! real storage code ([`crate::store::ShardStore`]) runs over it and meets what a real disk
//! does to it:
//!
//! - a **process crash** keeps everything written (the page cache survives the process);
//! - a **power loss** ([`SimDisk::lose_power`]) keeps only what was synced: each file's
//!   content as of its last `sync`, and the directory's entries (files created, renamed,
//!   removed) as of its last `sync_dir`;
//! - a **failed or torn write** ([`SimDisk::fail_write`]): the next `write_at` or `replace`
//!   writes only the first bytes asked for, then fails;
//! - a **lost directory** ([`SimDisk::wipe`]): nothing is left.
//!
//! Files are inodes, as on a real file system: a name points to one, `replace` points the
//! name at a new one, and a handle keeps writing to the inode it opened.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use crate::store::{Disk, DiskFile};

/// One file's bytes: as written (what a process reads) and as synced (what survives a
/// power loss).
#[derive(Clone, Debug, Default)]
struct Inode {
    written: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The directory as processes see it, and as it survives a power loss.
    names: BTreeMap<String, u64>,
    names_synced: BTreeMap<String, u64>,
    /// The next write fails after writing this many of its bytes (see `fail_write`).
    fail_next_write: Option<usize>,
    /// Writes that failed so far.
    failed_writes: u64,
}

impl State {
    fn create(&mut self) -> u64 {
        self.next_inode += 1;
        self.inodes.insert(self.next_inode, Inode::default());
        self.next_inode
    }

    /// Writes `bytes` at `offset` of `inode`, or only a prefix and fails, if armed to.
    fn write(&mut self, inode: u64, bytes: &[u8], offset: u64) -> io::Result<()> {
        let (len, fail) = match self.fail_next_write.take() {
            Some(keep) => (keep.min(bytes.len()), true),
            None => (bytes.len(), false),
        };
        let file = &mut self
            .inodes
            .get_mut(&inode)
            .expect("an open file's inode")
            .written;
        let offset = usize::try_from(offset).expect("simulated files are small");
        if file.len() < offset + len {
            file.resize(offset + len, 0);
        }
        file[offset..offset + len].copy_from_slice(&bytes[..len]);
        if fail {
            self.failed_writes += 1;
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
            inode.written = inode.synced.clone();
        }
        state.fail_next_write = None;
    }

    /// The next write (`write_at`, or the content of a `replace`) stores only its first
    /// `keep` bytes, then fails.
    pub(crate) fn fail_write(&self, keep: usize) {
        self.state.borrow_mut().fail_next_write = Some(keep);
    }

    /// Writes that failed so far.
    pub(crate) fn failed_writes(&self) -> u64 {
        self.state.borrow().failed_writes
    }

    /// The directory is lost (a replaced disk, an emptied or mistyped `--data-dir`).
    pub(crate) fn wipe(&self) {
        *self.state.borrow_mut() = State::default();
    }

    /// Whether `name` exists (as a process sees the directory).
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.state.borrow().names.contains_key(name)
    }

    fn file(&self, inode: u64) -> SimFile {
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
        let inode = match state.names.get(name) {
            Some(&inode) => inode,
            None => {
                let inode = state.create();
                state.names.insert(name.to_string(), inode);
                inode
            }
        };
        if truncate {
            state.inodes.get_mut(&inode).expect("named").written.clear();
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
        let inode = state.create();
        state.names.insert(tmp.clone(), inode);
        state.write(inode, bytes, 0)?;
        if sync {
            let file = state.inodes.get_mut(&inode).expect("created");
            file.synced = file.written.clone();
        }
        state.names.remove(&tmp);
        state.names.insert(name.to_string(), inode);
        if sync {
            state.names_synced = state.names.clone();
        }
        drop(state);
        Ok(self.file(inode))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.state.borrow_mut().names.remove(name);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.names_synced = state.names.clone();
        Ok(())
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
        let file = &mut state.inodes.get_mut(&self.inode).expect("open").written;
        file.resize(usize::try_from(len).expect("small"), 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let file = state.inodes.get_mut(&self.inode).expect("open");
        file.synced = file.written.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::raft::{Entry, HardState, Persist};
    use crate::store::ShardStore;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            data: vec![index as u8; 5],
        }
    }

    /// A vote, then two entries, then one more: three deltas.
    fn deltas() -> Vec<Persist> {
        vec![
            Persist {
                hard: Some(HardState {
                    term: 2,
                    voted_for: Some(1),
                }),
                snapshot: None,
                log_from: None,
                entries: Vec::new(),
            },
            Persist {
                hard: None,
                snapshot: None,
                log_from: Some(1),
                entries: vec![entry(2, 1), entry(2, 2)],
            },
            Persist {
                hard: None,
                snapshot: None,
                log_from: Some(3),
                entries: vec![entry(2, 3)],
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
        let disk = SimDisk::new();
        let (mut store, _) = ShardStore::open_on(disk.clone(), 0, true).unwrap();
        let deltas = deltas();
        store.write(&deltas[0]).unwrap();
        store.write(&deltas[1]).unwrap();
        // The third record's header only, then the write fails; then the machine dies.
        disk.fail_write(10);
        assert!(store.write(&deltas[2]).is_err());
        assert_eq!(disk.failed_writes(), 1);
        disk.lose_power();
        let (_, p) = ShardStore::open_on(disk, 0, true).unwrap();
        assert_eq!(p.log, vec![entry(2, 1), entry(2, 2)]);
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
}
