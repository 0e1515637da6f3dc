//! What a replica keeps on disk, per shard, under each `--durability` mode.
//!
//! Two files per shard in the data directory:
//! - `shard-NNNN.state`: the Raft hard state (term, vote), 24 bytes rewritten in place;
//! - `shard-NNNN.log`: the log, one record per entry: `term u64 | len u32 | check u32 | data`
//!   (big-endian; `check` is FNV-1a 32 over term, len and data), appended in index order.
//!   When Raft replaces a suffix (a follower's conflicting entries, Raft §5.3) the file is
//!   cut back to the first replaced entry first.
//!
//! | mode     | written                                                  | survives |
//! |----------|----------------------------------------------------------|----------|
//! | `fsync`  | `write` + `fdatasync` before any message or reply leaves | any crash, power loss of every node |
//! | `os`     | `write` (page cache) before any message or reply leaves  | any process crash (kill -9) of any number of nodes; not a power loss |
//! | `memory` | nothing                                                  | crashes of a minority that do not restart (see the cluster module docs) |
//!
//! `os` after a power loss would be `memory` after a restart: the node could come back
//! without a vote it gave or entries it acknowledged, and vote or count again. Use `fsync`
//! where power can fail.
//!
//! Reading back stops at the first record that is incomplete or fails its check (a write
//! torn by a crash of the machine), and cuts the file there.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::core::raft::{Entry, HardState, Raft};

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

const RECORD_HEADER_LEN: usize = 16;
const STATE_LEN: usize = 24;

/// The files of one shard.
pub struct ShardStore {
    log: File,
    state: File,
    sync: bool,
    /// File offset where entry `i + 1` starts; the file ends at `end`.
    offsets: Vec<u64>,
    /// Term of entry `i + 1` as written.
    terms: Vec<u64>,
    end: u64,
    hard: HardState,
}

impl ShardStore {
    /// Opens (creating) the shard's files and reads back what they hold.
    pub fn open(
        dir: &Path,
        shard: u32,
        sync: bool,
    ) -> io::Result<(ShardStore, HardState, Vec<Entry>)> {
        std::fs::create_dir_all(dir)?;
        let open = |name: String| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
        };
        let mut state = open(format!("shard-{shard:04}.state"))?;
        let mut log = open(format!("shard-{shard:04}.log"))?;
        if sync {
            // The files' names must survive a power loss too.
            File::open(dir)?.sync_all()?;
        }
        let hard = read_state(&mut state)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let mut entries = Vec::new();
        let (mut offsets, mut terms) = (Vec::new(), Vec::new());
        let mut at = 0usize;
        while let Some((term, data)) = read_record(&bytes[at..]) {
            offsets.push(at as u64);
            terms.push(term);
            entries.push(Entry {
                term,
                index: entries.len() as u64 + 1,
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
        let store = ShardStore {
            log,
            state,
            sync,
            offsets,
            terms,
            end: at as u64,
            hard,
        };
        Ok((store, hard, entries))
    }

    /// Makes the files hold `raft`'s hard state and log. Call after every input, before
    /// sending anything that input produced.
    pub fn persist(&mut self, raft: &Raft) -> io::Result<()> {
        let mut wrote = false;
        let hard = raft.hard_state();
        if hard != self.hard {
            let mut buf = [0u8; STATE_LEN];
            buf[0..8].copy_from_slice(&hard.term.to_be_bytes());
            buf[8..16].copy_from_slice(&hard.voted_for.unwrap_or(0).to_be_bytes());
            let check = fnv32(&buf[..16]);
            buf[16..20].copy_from_slice(&check.to_be_bytes());
            self.state.write_all_at(&buf, 0)?;
            if self.sync {
                self.state.sync_data()?;
            }
            self.hard = hard;
        }
        // Where the file and the log part: normally at the file's end. The bookkeeping moves
        // only after the file did, so a failed call leaves it describing the file as it is.
        let last = raft.last_index();
        let mut keep = self.terms.len() as u64;
        while keep > 0
            && (keep > last
                || raft.entry(keep).map(|e| e.term) != Some(self.terms[keep as usize - 1]))
        {
            keep -= 1;
        }
        if keep < self.terms.len() as u64 {
            let end = self.offsets[keep as usize];
            self.log.set_len(end)?;
            self.end = end;
            self.offsets.truncate(keep as usize);
            self.terms.truncate(keep as usize);
            wrote = true;
        }
        if keep < last {
            let mut buf = Vec::new();
            let mut offsets = Vec::new();
            for index in keep + 1..=last {
                let entry = raft.entry(index).expect("index within the log");
                offsets.push((self.end + buf.len() as u64, entry.term));
                write_record(&mut buf, entry);
            }
            if let Err(e) = self.log.write_all_at(&buf, self.end) {
                // Cut whatever part of the write landed, so no stale record follows `end`.
                let _ = self.log.set_len(self.end);
                return Err(e);
            }
            self.end += buf.len() as u64;
            for (offset, term) in offsets {
                self.offsets.push(offset);
                self.terms.push(term);
            }
            wrote = true;
        }
        if wrote && self.sync {
            self.log.sync_data()?;
        }
        Ok(())
    }
}

fn read_state(file: &mut File) -> io::Result<HardState> {
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Ok(HardState::default());
    }
    if buf.len() < STATE_LEN
        || u32::from_be_bytes(buf[16..20].try_into().unwrap()) != fnv32(&buf[..16])
    {
        // A vote that cannot be read back might have been given: refuse to guess.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the Raft state file is damaged; the node cannot know whom it voted for",
        ));
    }
    let term = u64::from_be_bytes(buf[0..8].try_into().unwrap());
    let vote = u64::from_be_bytes(buf[8..16].try_into().unwrap());
    Ok(HardState {
        term,
        voted_for: (vote != 0).then_some(vote),
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
    use crate::core::raft::{Config, Message};
    use crate::core::time::Instant;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("udplock-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_log_and_vote_read_back_as_written_and_a_replaced_suffix_is_cut() {
        let dir = dir("roundtrip");
        let (mut store, hard, log) = ShardStore::open(&dir, 3, false).unwrap();
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
            data: vec![byte; 5],
        };
        let append = |term, prev_log_index, prev_log_term, entries| Message::Append {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: 0,
            round: 1,
        };
        raft.handle_message(
            now,
            1,
            append(
                1,
                0,
                0,
                vec![entry(1, 1, 1), entry(1, 2, 2), entry(1, 3, 3)],
            ),
        );
        store.persist(&raft).unwrap();
        // A leader of term 2 replaces entries 2 and 3.
        raft.handle_message(now, 1, append(2, 1, 1, vec![entry(2, 2, 9)]));
        store.persist(&raft).unwrap();
        drop(store);
        let (_, hard, log) = ShardStore::open(&dir, 3, false).unwrap();
        assert_eq!(hard, raft.hard_state());
        assert_eq!(hard.term, 2);
        assert_eq!(log, vec![entry(1, 1, 1), entry(2, 2, 9)]);
        // A torn tail is cut, the rest kept.
        let path = dir.join("shard-0003.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        bytes.truncate(len - 2);
        std::fs::write(&path, &bytes).unwrap();
        let (_, _, log) = ShardStore::open(&dir, 3, false).unwrap();
        assert_eq!(log, vec![entry(1, 1, 1)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_vote_is_refused() {
        let dir = dir("damaged");
        drop(ShardStore::open(&dir, 0, false).unwrap());
        std::fs::write(dir.join("shard-0000.state"), [7u8; 24]).unwrap();
        assert!(ShardStore::open(&dir, 0, false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
