//! What the codec's test binaries share: a Raft message that owns its payloads, as a Raft
//! core holds one, so that a test can build any message and compare a decoded one with it.

use udplock_protocol::{LogEntry, PeerEntry, RaftMessage};

/// A log entry of the tests' own, with its index, which the wire leaves implicit: a round
/// trip also checks the indexes [`udplock_protocol::PeerMessage::into_owned`] gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestEntry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

impl LogEntry for TestEntry {
    fn peer_entry(&self) -> PeerEntry<'_> {
        PeerEntry {
            term: self.term,
            data: &self.data,
        }
    }

    fn from_peer_entry(index: u64, entry: PeerEntry<'_>) -> TestEntry {
        TestEntry {
            index,
            term: entry.term,
            data: entry.data.to_vec(),
        }
    }
}

/// A Raft message that owns its payloads: the type the decoder returns a view of, so a round
/// trip compares like with like.
pub type Msg = RaftMessage<Vec<TestEntry>, Vec<u8>>;

/// Entries numbered from `prev_log_index + 1`, as an APPEND carries them, from (term, data).
pub fn numbered(prev_log_index: u64, raw: Vec<(u64, Vec<u8>)>) -> Vec<TestEntry> {
    (1u64..)
        .zip(raw)
        .map(|(i, (term, data))| TestEntry {
            index: prev_log_index.wrapping_add(i),
            term,
            data,
        })
        .collect()
}
