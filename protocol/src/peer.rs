//! PEER datagrams (spec §8.3–§8.6): the node-to-node traffic of a cluster.
//!
//! One PEER datagram carries Raft messages ("records") of any number of shards from one node
//! to another, so that a node with many shards sends few datagrams: it packs every record
//! bound for the same peer into as few datagrams as fit.
//!
//! ```text
//! datagram = header (32 bytes, msg_type 0x40) | record | record | ...   (no padding)
//! record   = shard u16 | kind u8 | reserved u8 | len u16 | body (len bytes)
//! ```
//!
//! Receiving: [`PeerDatagram::decode`] checks the header and every record before it returns,
//! so [`PeerDatagram::records`] can hand them out without a `Result`. A datagram with one bad
//! record is dropped whole: records of a datagram come from one sender at one instant, and
//! half-trusting a datagram whose sender is broken helps nobody.
//!
//! Sending: [`PeerWriter`] appends records to one datagram in the caller's buffer and says,
//! without changing anything, when the next record does not fit; the caller then sends what it
//! has ([`PeerWriter::finish`]) and starts the next datagram.
//!
//! Snapshots (spec §8.5, INSTALL_SNAPSHOT): a leader sends a follower that needs entries it
//! compacted away its snapshot in chunks of at most [`SNAPSHOT_CHUNK_MAX`] bytes, one record
//! each, so that a chunk never spans two datagrams; a snapshot is at most [`SNAPSHOT_LEN_MAX`]
//! bytes long. The chunk's bytes are opaque to this crate.
//!
//! Membership (spec §8.12): SWIM messages travel as records of their own kinds (14 to 18,
//! shard 0) in the same datagrams ([`crate::SwimMessage`], [`PeerWriter::push_swim`],
//! [`PeerDatagram::swim_records`]); [`PeerDatagram::records`] yields the Raft records only.
//!
//! Rejoining without state (spec §8.5): a node that restarted without its Raft state sends
//! TERM_QUERY and waits for TERM_REPLY from a majority-sized set of the other nodes before it
//! votes or acknowledges anything; both records carry one term. A node that holds no state
//! for the shard itself answers NO_STATE_REPLY instead, saying whether it is *new* (it never
//! held state there), which is how a new cluster learns that every node is new.

use crate::auth::{AuthTrailer, AUTH_TRAILER_LEN};
use crate::be::{u16_at, u64_at};
use crate::header::{self, field as hfield, Header};
use crate::registry::{Flags, MessageType, PeerKind};
use crate::swim::{read_swim_body, write_swim_body, SwimMessage, SwimView, UpdateList};
use crate::{all_zero, DecodeError, EncodeError, HEADER_LEN, MAGIC, SHARDS_MAX, VERSION};

/// Longest PEER datagram a node sends or accepts. 1400 bytes of UDP payload plus the IPv6 (40)
/// and UDP (8) headers fit a 1500-byte Ethernet MTU, so peer datagrams are never fragmented;
/// peers share a data-centre network, unlike clients, which may sit behind smaller MTUs
/// ([`crate::DATAGRAM_LEN_MAX`]).
pub const PEER_DATAGRAM_LEN_MAX: usize = 1400;
/// Size of the header in front of every record: shard u16, kind u8, reserved u8, len u16.
pub const PEER_RECORD_HEADER_LEN: usize = 6;
/// Size of an APPEND body before its entries: term, prev_log_index, prev_log_term,
/// leader_commit, round, transfer_to (u64 each) and entry_count (u16).
pub const APPEND_FIXED_LEN: usize = 50;
/// Size of an entry before its data: term u64, data_len u16.
pub const ENTRY_FIXED_LEN: usize = 10;
/// Size of an INSTALL_SNAPSHOT body before its data: term, last_index, last_term, offset,
/// total_len, round (u64 each) and data_len (u16).
pub const INSTALL_SNAPSHOT_FIXED_LEN: usize = 50;
/// Most snapshot bytes in one INSTALL_SNAPSHOT that is the only record of an authenticated
/// PEER datagram: `PEER_DATAGRAM_LEN_MAX - HEADER_LEN - PEER_RECORD_HEADER_LEN -
/// INSTALL_SNAPSHOT_FIXED_LEN - AUTH_TRAILER_LEN` = 1400 - 32 - 6 - 50 - 56 = 1256. A node
/// sets its Raft chunk size to this, so each chunk travels in a datagram of its own, with or
/// without the authentication trailer, and is never fragmented; a smaller chunk leaves room
/// to coalesce other records with it.
pub const SNAPSHOT_CHUNK_MAX: usize = PEER_DATAGRAM_LEN_MAX
    - HEADER_LEN
    - PEER_RECORD_HEADER_LEN
    - INSTALL_SNAPSHOT_FIXED_LEN
    - AUTH_TRAILER_LEN;
/// The largest snapshot (`total_len`, in bytes) an INSTALL_SNAPSHOT may announce: 256 MiB. A
/// follower buffers a transfer until it is complete, so this bounds what one can make it
/// allocate; a receiver rejects a larger `total_len` (spec §8.4, §9). The same value as the
/// Raft core's.
pub const SNAPSHOT_LEN_MAX: u64 = 256 * 1024 * 1024;

/// Body sizes of the fixed-size record kinds.
const VOTE_LEN: usize = 24;
const VOTE_REPLY_LEN: usize = 17;
const APPEND_REPLY_LEN: usize = 41;
const TIMEOUT_NOW_LEN: usize = 8;
/// term, nonce, and 8 reserved zero bytes: as long as TERM_REPLY, the longest answer, so that
/// no answer is longer than its question (spec §8.3 rule 5).
const TERM_QUERY_LEN: usize = 24;
const TERM_REPLY_LEN: usize = 24;
const NO_STATE_REPLY_LEN: usize = 17;
const INSTALL_SNAPSHOT_REPLY_LEN: usize = 48;
/// The largest fixed-size body, for the stack buffer [`PeerWriter::push`] builds it in.
const FIXED_BODY_LEN_MAX: usize = INSTALL_SNAPSHOT_REPLY_LEN;

const _: () = assert!(PEER_DATAGRAM_LEN_MAX + 48 <= 1500);
const _: () = assert!(PEER_DATAGRAM_LEN_MAX - HEADER_LEN <= u16::MAX as usize);
const _: () = assert!(APPEND_FIXED_LEN == 6 * 8 + 2);
const _: () = assert!(
    FIXED_BODY_LEN_MAX >= VOTE_LEN
        && FIXED_BODY_LEN_MAX >= VOTE_REPLY_LEN
        && FIXED_BODY_LEN_MAX >= APPEND_REPLY_LEN
        && FIXED_BODY_LEN_MAX >= TIMEOUT_NOW_LEN
        && FIXED_BODY_LEN_MAX >= TERM_QUERY_LEN
        && FIXED_BODY_LEN_MAX >= TERM_REPLY_LEN
        && FIXED_BODY_LEN_MAX >= NO_STATE_REPLY_LEN
);
const _: () = assert!(INSTALL_SNAPSHOT_FIXED_LEN == 6 * 8 + 2);
const _: () = assert!(INSTALL_SNAPSHOT_REPLY_LEN == 6 * 8);
const _: () = assert!(APPEND_REPLY_LEN == 5 * 8 + 1);
const _: () = assert!(VOTE_REPLY_LEN == 2 * 8 + 1);
// Spec §8.3 rule 5: no answer is longer than what it answers. VOTE_REPLY answers PRE_VOTE,
// VOTE and TRANSFER_VOTE (24 bytes each); APPEND_REPLY an APPEND and INSTALL_SNAPSHOT_REPLY
// an INSTALL_SNAPSHOT, each at least 50 bytes.
const _: () = assert!(VOTE_REPLY_LEN <= VOTE_LEN);
const _: () = assert!(APPEND_REPLY_LEN <= APPEND_FIXED_LEN);
const _: () = assert!(INSTALL_SNAPSHOT_REPLY_LEN <= INSTALL_SNAPSHOT_FIXED_LEN);
// No answer is longer than its question (spec §8.3 rule 5); protocol/tests/props.rs checks
// every kind, this the one that needed padding.
const _: () = assert!(TERM_QUERY_LEN >= TERM_REPLY_LEN && TERM_QUERY_LEN >= NO_STATE_REPLY_LEN);
const _: () = assert!(field::TERM_QUERY_RESERVED.end == TERM_QUERY_LEN);
const _: () = assert!(SNAPSHOT_CHUNK_MAX == 1256);
// A whole snapshot chunk fits one authenticated datagram; its data_len fits in a u16.
const _: () = assert!(
    HEADER_LEN
        + PEER_RECORD_HEADER_LEN
        + INSTALL_SNAPSHOT_FIXED_LEN
        + SNAPSHOT_CHUNK_MAX
        + AUTH_TRAILER_LEN
        == PEER_DATAGRAM_LEN_MAX
);
const _: () = assert!(SNAPSHOT_LEN_MAX == 268_435_456);
// The longest log command fits in one APPEND of one entry.
const _: () = assert!(
    HEADER_LEN + append_record_len(crate::LOG_COMMAND_LEN_MAX, 1) + AUTH_TRAILER_LEN
        <= PEER_DATAGRAM_LEN_MAX
);

/// Byte offsets inside a record, relative to the record's first byte (header) or to the
/// record body's first byte (the others).
pub mod field {
    use core::ops::Range;
    /// Record header: `shard`, u16, the Raft group; 0 for SWIM (spec §8.4).
    pub const SHARD: Range<usize> = 0..2;
    /// Record header: `kind`, u8, the record kind ([`crate::PeerKind`], spec §8.4, §10.4).
    pub const KIND: usize = 2;
    /// Record header: reserved, zero (spec §8.4).
    pub const RESERVED: usize = 3;
    /// Record header: `len`, u16, bytes of record body after the header (spec §8.4).
    pub const LEN: Range<usize> = 4..6;
    /// APPEND body: `term`, u64, the leader's term (spec §8.5).
    pub const APPEND_TERM: Range<usize> = 0..8;
    /// APPEND: `prev_log_index`, u64 (spec §8.5, Raft §5.3).
    pub const APPEND_PREV_LOG_INDEX: Range<usize> = 8..16;
    /// APPEND: `prev_log_term`, u64 (spec §8.5, Raft §5.3).
    pub const APPEND_PREV_LOG_TERM: Range<usize> = 16..24;
    /// APPEND: `leader_commit`, u64, the leader's commit index (spec §8.5).
    pub const APPEND_LEADER_COMMIT: Range<usize> = 24..32;
    /// APPEND: `round`, u64, the heartbeat round, echoed for the leader's lease (spec §8.5).
    pub const APPEND_ROUND: Range<usize> = 32..40;
    /// APPEND: `transfer_to`, u64, the node the shard is handed to; 0 for none (spec §8.5).
    pub const APPEND_TRANSFER_TO: Range<usize> = 40..48;
    /// APPEND: `entry_count`, u16, entries that follow (spec §8.5).
    pub const APPEND_ENTRY_COUNT: Range<usize> = 48..50;
    /// Entry, relative to the entry's first byte: `term`, u64 (spec §8.5).
    pub const ENTRY_TERM: Range<usize> = 0..8;
    /// Entry: `data_len`, u16, bytes of log command that follow; 0 for a no-op (spec §8.5).
    pub const ENTRY_DATA_LEN: Range<usize> = 8..10;
    /// INSTALL_SNAPSHOT body: `term`, u64, the leader's term (spec §8.5).
    pub const INSTALL_SNAPSHOT_TERM: Range<usize> = 0..8;
    /// INSTALL_SNAPSHOT: `last_index`, u64, the last index the snapshot covers (spec §8.5).
    pub const INSTALL_SNAPSHOT_LAST_INDEX: Range<usize> = 8..16;
    /// INSTALL_SNAPSHOT: `last_term`, u64, the term of that entry (spec §8.5).
    pub const INSTALL_SNAPSHOT_LAST_TERM: Range<usize> = 16..24;
    /// INSTALL_SNAPSHOT: `offset`, u64, where the chunk starts in the snapshot (spec §8.5).
    pub const INSTALL_SNAPSHOT_OFFSET: Range<usize> = 24..32;
    /// INSTALL_SNAPSHOT: `total_len`, u64, the snapshot's length in bytes (spec §8.5).
    pub const INSTALL_SNAPSHOT_TOTAL_LEN: Range<usize> = 32..40;
    /// INSTALL_SNAPSHOT: `round`, u64, the heartbeat round, as in APPEND (spec §8.5).
    pub const INSTALL_SNAPSHOT_ROUND: Range<usize> = 40..48;
    /// INSTALL_SNAPSHOT: `data_len`, u16, bytes of chunk that follow (spec §8.5).
    pub const INSTALL_SNAPSHOT_DATA_LEN: Range<usize> = 48..50;
    /// INSTALL_SNAPSHOT_REPLY body: `term`, u64, the follower's term (spec §8.5).
    pub const INSTALL_SNAPSHOT_REPLY_TERM: Range<usize> = 0..8;
    /// INSTALL_SNAPSHOT_REPLY: `last_index`, u64, the chunk's, echoed (spec §8.5).
    pub const INSTALL_SNAPSHOT_REPLY_LAST_INDEX: Range<usize> = 8..16;
    /// INSTALL_SNAPSHOT_REPLY: `received`, u64, snapshot bytes held from the start (spec §8.5).
    pub const INSTALL_SNAPSHOT_REPLY_RECEIVED: Range<usize> = 16..24;
    /// INSTALL_SNAPSHOT_REPLY: `round`, u64, the chunk's, echoed (spec §8.5).
    pub const INSTALL_SNAPSHOT_REPLY_ROUND: Range<usize> = 24..32;
    /// INSTALL_SNAPSHOT_REPLY: `life`, u64, the follower's life id (spec §8.5).
    pub const INSTALL_SNAPSHOT_REPLY_LIFE: Range<usize> = 32..40;
    /// INSTALL_SNAPSHOT_REPLY: `replica`, u64, the follower's replica id (spec §8.5).
    pub const INSTALL_SNAPSHOT_REPLY_REPLICA: Range<usize> = 40..48;
    /// PRE_VOTE_REPLY and VOTE_REPLY body: `replica`, u64, after `term` and `granted`
    /// (spec §8.5).
    pub const VOTE_REPLY_REPLICA: Range<usize> = 9..17;
    /// APPEND_REPLY body: `life`, u64, after `term`, `success`, `match_index` and `round`
    /// (spec §8.5).
    pub const APPEND_REPLY_LIFE: Range<usize> = 25..33;
    /// APPEND_REPLY: `replica`, u64, the follower's replica id (spec §8.5).
    pub const APPEND_REPLY_REPLICA: Range<usize> = 33..41;
    /// TERM_QUERY body: `term`, u64, the asker's term (spec §8.5).
    pub const TERM_QUERY_TERM: Range<usize> = 0..8;
    /// TERM_QUERY: `nonce`, u64, echoed by the answer (spec §8.5).
    pub const TERM_QUERY_NONCE: Range<usize> = 8..16;
    /// TERM_QUERY: reserved zeros, so no answer is longer than the query (spec §8.3).
    pub const TERM_QUERY_RESERVED: Range<usize> = 16..24;
}

const _: () = assert!(field::LEN.end == PEER_RECORD_HEADER_LEN);
const _: () = assert!(field::APPEND_ENTRY_COUNT.end == APPEND_FIXED_LEN);
const _: () = assert!(field::ENTRY_DATA_LEN.end == ENTRY_FIXED_LEN);
const _: () = assert!(field::INSTALL_SNAPSHOT_DATA_LEN.end == INSTALL_SNAPSHOT_FIXED_LEN);
const _: () = assert!(field::INSTALL_SNAPSHOT_REPLY_REPLICA.end == INSTALL_SNAPSHOT_REPLY_LEN);
const _: () = assert!(field::VOTE_REPLY_REPLICA.end == VOTE_REPLY_LEN);
const _: () = assert!(field::APPEND_REPLY_REPLICA.end == APPEND_REPLY_LEN);

/// Encoded size of one APPEND record (its 6-byte record header included) whose entries carry
/// `entries_total_data` bytes of data in `entry_count` entries:
/// `6 + 50 + Σ(10 + data_len)`. A sender caps a batch with it. Saturates instead of
/// overflowing.
pub const fn append_record_len(entries_total_data: usize, entry_count: usize) -> usize {
    (PEER_RECORD_HEADER_LEN + APPEND_FIXED_LEN)
        .saturating_add(entry_count.saturating_mul(ENTRY_FIXED_LEN))
        .saturating_add(entries_total_data)
}

/// The sender of a PEER datagram, carried in the common header's id fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerHeader {
    /// The cluster the sender belongs to (header `session_id` field); non-zero. A node drops
    /// datagrams of other clusters, so two clusters sharing a network never mix.
    pub cluster_id: u64,
    /// The sender's node id (header `request_id` field); non-zero.
    pub from: u64,
}

/// One log entry inside an APPEND. Its index is implicit: entry `i` of an APPEND has index
/// `prev_log_index + 1 + i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerEntry<'a> {
    /// The term in which a leader created the entry.
    pub term: u64,
    /// The entry's data: empty for a leader's no-op, else a [`crate::LogCommand`].
    pub data: &'a [u8],
}

/// The entries of a decoded APPEND, still in wire form (no copy). Only [`PeerDatagram::decode`]
/// makes non-empty ones, so they are always well formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerEntries<'a> {
    /// Exactly `count` entries, each `term u64 | data_len u16 | data`.
    bytes: &'a [u8],
    count: u16,
}

impl<'a> PeerEntries<'a> {
    /// No entries: what a heartbeat APPEND carries.
    pub const fn empty() -> PeerEntries<'static> {
        PeerEntries {
            bytes: &[],
            count: 0,
        }
    }

    /// Number of entries.
    pub const fn len(&self) -> usize {
        self.count as usize
    }

    /// True for a heartbeat.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the entries take on the wire: `Σ(10 + data_len)`.
    pub const fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The entries in log order.
    pub fn iter(&self) -> PeerEntryIter<'a> {
        PeerEntryIter {
            rest: self.bytes,
            left: self.count,
        }
    }
}

impl<'a> IntoIterator for PeerEntries<'a> {
    type Item = PeerEntry<'a>;
    type IntoIter = PeerEntryIter<'a>;
    fn into_iter(self) -> PeerEntryIter<'a> {
        self.iter()
    }
}

/// Iterator over [`PeerEntries`].
#[derive(Clone, Debug)]
pub struct PeerEntryIter<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for PeerEntryIter<'a> {
    type Item = PeerEntry<'a>;

    fn next(&mut self) -> Option<PeerEntry<'a>> {
        if self.left == 0 {
            return None;
        }
        let (entry, used) = read_entry(self.rest)?;
        self.rest = self.rest.get(used..)?;
        self.left -= 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for PeerEntryIter<'_> {}

/// Reads one entry at the start of `b`: the entry and the bytes it takes, or `None` if `b` is
/// too short.
fn read_entry(b: &[u8]) -> Option<(PeerEntry<'_>, usize)> {
    if b.len() < ENTRY_FIXED_LEN {
        return None;
    }
    let data_len = u16_at(b, field::ENTRY_DATA_LEN.start) as usize;
    let data = b.get(ENTRY_FIXED_LEN..ENTRY_FIXED_LEN + data_len)?;
    let term = u64_at(b, field::ENTRY_TERM.start);
    Some((PeerEntry { term, data }, ENTRY_FIXED_LEN + data_len))
}

/// One Raft message of one shard (spec §8.5): the one definition of what voters send each
/// other, used by the Raft core and by this codec alike. Field names follow the Raft paper.
///
/// The message is generic over how it holds its two payloads, so that one type serves both
/// ends without a copy where none is needed:
///
/// - `E`, the entries of an APPEND: [`PeerEntries`] when decoded (a view into the datagram),
///   or a list of the sender's own log entries ([`LogEntry`]) when built by a Raft core;
/// - `D`, the bytes of an INSTALL_SNAPSHOT chunk: `&[u8]` when decoded, owned bytes when
///   built.
///
/// [`PeerMessage`] is the decoded form. [`PeerWriter::push`] writes any form whose entries are
/// [`AppendEntries`] and whose chunk is `AsRef<[u8]>`; [`RaftMessage::into_owned`] copies a
/// decoded message into an owned one, the only conversion there is.
///
/// Two things are represented once here and mapped by the codec alone: a VOTE and a
/// TRANSFER_VOTE are one variant told apart by `transfer`, and an APPEND's `transfer_to` of 0
/// on the wire is `None` (node ids are never 0, spec §8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaftMessage<E, D> {
    /// Would the receiver vote for the sender at `term` (the sender's current term + 1)?
    /// Changes no state at either end (Raft thesis §9.6): a node cut off from the cluster
    /// cannot inflate terms and, on rejoining, depose a healthy leader.
    PreVote {
        /// The term the sender would stand in: its current term + 1.
        term: u64,
        /// Index of the sender's last log entry; a voter grants only to a log at least as
        /// up to date as its own (Raft §5.4.1).
        last_log_index: u64,
        /// Term of the sender's last log entry (Raft §5.4.1).
        last_log_term: u64,
    },
    /// Answer to PRE_VOTE: `term` echoes the asked term when granted, else it is the
    /// replier's own term. `replica` is the replier's replica id: a grant counts only where
    /// the counter's configuration names the replier with it (spec §8.5, "Replica
    /// identities").
    PreVoteReply {
        /// The asked term when granted, else the replier's own term.
        term: u64,
        /// Whether the replier would vote for the sender.
        granted: bool,
        /// The replier's replica id, which its grant or acknowledgement counts under (spec
        /// §8.5, "Replica identities").
        replica: u64,
    },
    /// RequestVote (Raft §5.2, §5.4.1). `transfer`: sent after a TIMEOUT_NOW from the leader
    /// of the previous term, so voters grant it even within an election timeout of hearing
    /// from that leader, despite leader stickiness (thesis §3.10). On the wire, VOTE (kind 3)
    /// when false and TRANSFER_VOTE (kind 8) when true.
    Vote {
        /// The candidate's term (Raft §5.2).
        term: u64,
        /// Index of the candidate's last log entry (Raft §5.4.1).
        last_log_index: u64,
        /// Term of the candidate's last log entry (Raft §5.4.1).
        last_log_term: u64,
        /// A TRANSFER_VOTE: the election follows a TIMEOUT_NOW, so voters ignore leader
        /// stickiness (thesis §3.10).
        transfer: bool,
    },
    /// Answer to VOTE and TRANSFER_VOTE; `replica` as in PRE_VOTE_REPLY.
    VoteReply {
        /// The replier's current term, for the candidate to update itself (Raft §5.1).
        term: u64,
        /// Whether the replier voted for the candidate in `term`.
        granted: bool,
        /// The replier's replica id, which its grant or acknowledgement counts under (spec
        /// §8.5, "Replica identities").
        replica: u64,
    },
    /// AppendEntries (Raft §5.3); no entries is a heartbeat. Entry `i` has index
    /// `prev_log_index + 1 + i` (the wire leaves indexes implicit). `round` numbers the
    /// leader's heartbeat round it was built in; a follower echoes it so the leader can time
    /// its lease (thesis §6.4.1). `transfer_to`: the node the leader is handing the shard to
    /// in this round, if any (leadership transfer, thesis §3.10, spec §8.5); 0 on the wire
    /// for `None`, and the writer refuses `Some(0)`.
    Append {
        /// The leader's term (Raft §5.3).
        term: u64,
        /// Index of the entry just before `entries` (Raft §5.3).
        prev_log_index: u64,
        /// Term of that entry, which the follower's log must match (Raft §5.3).
        prev_log_term: u64,
        /// The entries from `prev_log_index + 1` on; none for a heartbeat.
        entries: E,
        /// The leader's commit index (Raft §5.3).
        leader_commit: u64,
        /// The leader's heartbeat round the message was built in; echoed, for the leader's
        /// lease (thesis §6.4.1).
        round: u64,
        /// The node the leader is handing the shard to, if any (thesis §3.10, spec §8.5).
        transfer_to: Option<u64>,
    },
    /// Answer to APPEND: `match_index` is the last index the APPEND covered when `success`,
    /// else a hint where to back up to (Raft §5.3); `round` is the APPEND's round (0 when
    /// `term`, the follower's, is later than the APPEND's); `life` is the follower's life id,
    /// drawn at random each time it starts, so that a leader never counts an answer of an
    /// earlier life of a node that has lost its state since (spec §8.5); `replica` is the
    /// follower's replica id, which an acknowledgement counts under (spec §8.5, "Replica
    /// identities").
    AppendReply {
        /// The follower's current term (Raft §5.1).
        term: u64,
        /// Whether the follower's log matched at `prev_log_index` and took the entries.
        success: bool,
        /// With `success`, the last index the APPEND covered; else where to back up to.
        match_index: u64,
        /// The APPEND's round, echoed; 0 when `term` is later than the APPEND's.
        round: u64,
        /// The follower's life id, drawn at random each time it starts, so a leader never
        /// counts an answer of an earlier life that has lost its state since (spec §8.5).
        life: u64,
        /// The replier's replica id, which its grant or acknowledgement counts under (spec
        /// §8.5, "Replica identities").
        replica: u64,
    },
    /// Leadership transfer: the leader of `term` tells a caught-up follower to start an
    /// election now, without waiting for a timeout (thesis §3.10).
    TimeoutNow {
        /// The leader's term.
        term: u64,
    },
    /// A node that restarted without its Raft state asks for the receiver's current term
    /// before it takes part again (spec §8.5, rejoining without state). `term` is the
    /// sender's current term: 0 for a node that lost its state. On the wire 8 reserved zero
    /// bytes follow, so that no answer is longer than the query (spec §8.3 rule 5).
    TermQuery {
        /// The sender's current term: 0 for a node that lost its state.
        term: u64,
        /// A number the answer echoes, so an answer to an earlier life's query is not
        /// taken for a fresh one.
        nonce: u64,
    },
    /// Answer to TERM_QUERY: `term` is the replier's current term and `last_index` the last
    /// index its log holds; `nonce` echoes the query's, so an answer to a query of an earlier
    /// life of the asker is not mistaken for a fresh one. Sending it changes no state at the
    /// replier.
    TermReply {
        /// The replier's current term.
        term: u64,
        /// The last index the replier's log holds.
        last_index: u64,
        /// The query's nonce, echoed.
        nonce: u64,
    },
    /// Answer to TERM_QUERY from a node that holds no state for the shard itself (it is
    /// recovering too, spec §8.5): `term` is its current term (0), `nonce` echoes the query's,
    /// and `new` says that it never held state for the shard and may take part in creating
    /// the cluster. Sending it changes no state at the replier.
    NoStateReply {
        /// The replier's current term (0).
        term: u64,
        /// The query's nonce, echoed.
        nonce: u64,
        /// The replier never held state for the shard, so it may take part in creating
        /// the cluster.
        new: bool,
    },
    /// One chunk of the leader's snapshot, for a follower that needs entries the leader
    /// compacted away (Raft §7, thesis §5). The snapshot covers the log through `last_index`,
    /// whose entry has term `last_term`; it is `total_len` bytes long and `data` (at most
    /// [`SNAPSHOT_CHUNK_MAX`] bytes) is its bytes from `offset` on. `round` is the leader's
    /// heartbeat round the chunk was sent in, as in APPEND.
    ///
    /// Decoding and [`PeerWriter::push`] enforce `1 <= last_term <= term`,
    /// `last_index >= 1`, `total_len <= SNAPSHOT_LEN_MAX` and
    /// `offset + data.len() <= total_len`.
    InstallSnapshot {
        /// The leader's term.
        term: u64,
        /// The last log index the snapshot covers; at least 1.
        last_index: u64,
        /// The term of the entry at `last_index`; 1 to `term`.
        last_term: u64,
        /// Where in the snapshot `data` starts, in bytes.
        offset: u64,
        /// The whole snapshot's length in bytes; at most [`SNAPSHOT_LEN_MAX`].
        total_len: u64,
        /// The chunk: at most [`SNAPSHOT_CHUNK_MAX`] bytes, ending at most at `total_len`.
        data: D,
        /// The leader's heartbeat round the chunk was sent in, as in APPEND.
        round: u64,
    },
    /// Answer to INSTALL_SNAPSHOT: `last_index` echoes the chunk's (which snapshot),
    /// `received` counts the snapshot's bytes, from the start, that the follower holds
    /// (`total_len` once it has them all, or if it already holds everything the snapshot
    /// covers), `round` echoes the chunk's, `life` and `replica` are the follower's life id
    /// and replica id as in APPEND_REPLY. On a chunk of an older term, `term` is the
    /// follower's, `round` is 0 and nothing else counts.
    InstallSnapshotReply {
        /// The follower's current term.
        term: u64,
        /// The chunk's `last_index`, echoed: which snapshot.
        last_index: u64,
        /// Bytes of the snapshot, from its start, that the follower holds.
        received: u64,
        /// The chunk's round, echoed; 0 on a chunk of an older term.
        round: u64,
        /// The follower's life id, drawn at random each time it starts, so a leader never
        /// counts an answer of an earlier life that has lost its state since (spec §8.5).
        life: u64,
        /// The replier's replica id, which its grant or acknowledgement counts under (spec
        /// §8.5, "Replica identities").
        replica: u64,
    },
}

/// A Raft message as decoded from a PEER record: a view into the datagram, no copy.
pub type PeerMessage<'a> = RaftMessage<PeerEntries<'a>, &'a [u8]>;

/// The entries of an APPEND, however a message holds them, as the writer reads them: in log
/// order, each as a [`PeerEntry`]. [`PeerEntries`] (decoded) and any slice-like list of
/// [`LogEntry`] values (a Raft core's own, e.g. a `Vec`) are entries.
pub trait AppendEntries {
    /// The entries in log order; walked twice by the writer (to size, then to write).
    type Iter<'s>: Iterator<Item = PeerEntry<'s>> + Clone
    where
        Self: 's;

    /// The entries in log order.
    fn peer_entries(&self) -> Self::Iter<'_>;

    /// Bytes the entries take on the wire: `Σ(10 + data_len)`.
    fn encoded_len(&self) -> usize {
        self.peer_entries()
            .map(|e| ENTRY_FIXED_LEN.saturating_add(e.data.len()))
            .fold(0, usize::saturating_add)
    }
}

/// A log entry of a Raft core's own that an APPEND carries: its term and data go on the
/// wire, its index is implicit (`prev_log_index + 1 + i`, spec §8.5).
pub trait LogEntry {
    /// The entry as the wire carries it.
    fn peer_entry(&self) -> PeerEntry<'_>;
    /// The entry at `index` that the wire carried as `entry`: a copy of its data.
    fn from_peer_entry(index: u64, entry: PeerEntry<'_>) -> Self;
}

impl<'a> AppendEntries for PeerEntries<'a> {
    type Iter<'s>
        = PeerEntryIter<'s>
    where
        Self: 's;

    fn peer_entries(&self) -> PeerEntryIter<'_> {
        self.iter()
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
}

impl<C, T> AppendEntries for C
where
    C: core::ops::Deref<Target = [T]>,
    // `Self: 's` does not give `T: 's` to the iterator type below, so entries are `'static`:
    // a Raft core's own entries own their data anyway.
    T: LogEntry + 'static,
{
    type Iter<'s>
        = core::iter::Map<core::slice::Iter<'s, T>, fn(&'s T) -> PeerEntry<'s>>
    where
        Self: 's;

    fn peer_entries(&self) -> Self::Iter<'_> {
        self.iter().map(T::peer_entry)
    }
}

impl<E, D> RaftMessage<E, D> {
    /// The record kind that carries this message.
    pub const fn kind(&self) -> PeerKind {
        match self {
            RaftMessage::PreVote { .. } => PeerKind::PreVote,
            RaftMessage::PreVoteReply { .. } => PeerKind::PreVoteReply,
            RaftMessage::Vote {
                transfer: false, ..
            } => PeerKind::Vote,
            RaftMessage::Vote { transfer: true, .. } => PeerKind::TransferVote,
            RaftMessage::VoteReply { .. } => PeerKind::VoteReply,
            RaftMessage::Append { .. } => PeerKind::Append,
            RaftMessage::AppendReply { .. } => PeerKind::AppendReply,
            RaftMessage::TimeoutNow { .. } => PeerKind::TimeoutNow,
            RaftMessage::InstallSnapshot { .. } => PeerKind::InstallSnapshot,
            RaftMessage::InstallSnapshotReply { .. } => PeerKind::InstallSnapshotReply,
            RaftMessage::TermQuery { .. } => PeerKind::TermQuery,
            RaftMessage::TermReply { .. } => PeerKind::TermReply,
            RaftMessage::NoStateReply { .. } => PeerKind::NoStateReply,
        }
    }

    /// The term the message carries (every kind has one).
    pub const fn term(&self) -> u64 {
        match self {
            RaftMessage::PreVote { term, .. }
            | RaftMessage::PreVoteReply { term, .. }
            | RaftMessage::Vote { term, .. }
            | RaftMessage::VoteReply { term, .. }
            | RaftMessage::Append { term, .. }
            | RaftMessage::AppendReply { term, .. }
            | RaftMessage::TimeoutNow { term }
            | RaftMessage::InstallSnapshot { term, .. }
            | RaftMessage::InstallSnapshotReply { term, .. }
            | RaftMessage::TermQuery { term, .. }
            | RaftMessage::TermReply { term, .. }
            | RaftMessage::NoStateReply { term, .. } => *term,
        }
    }
}

impl<E: AppendEntries, D: AsRef<[u8]>> RaftMessage<E, D> {
    /// Size of the record body (the record's `len` field).
    pub fn body_len(&self) -> usize {
        match self {
            RaftMessage::PreVote { .. } | RaftMessage::Vote { .. } => VOTE_LEN,
            RaftMessage::PreVoteReply { .. } | RaftMessage::VoteReply { .. } => VOTE_REPLY_LEN,
            RaftMessage::Append { entries, .. } => {
                APPEND_FIXED_LEN.saturating_add(entries.encoded_len())
            }
            RaftMessage::AppendReply { .. } => APPEND_REPLY_LEN,
            RaftMessage::TimeoutNow { .. } => TIMEOUT_NOW_LEN,
            RaftMessage::InstallSnapshot { data, .. } => {
                INSTALL_SNAPSHOT_FIXED_LEN.saturating_add(data.as_ref().len())
            }
            RaftMessage::InstallSnapshotReply { .. } => INSTALL_SNAPSHOT_REPLY_LEN,
            RaftMessage::TermQuery { .. } => TERM_QUERY_LEN,
            RaftMessage::TermReply { .. } => TERM_REPLY_LEN,
            RaftMessage::NoStateReply { .. } => NO_STATE_REPLY_LEN,
        }
    }

    /// Size of the whole record, its 6-byte header included.
    pub fn record_len(&self) -> usize {
        PEER_RECORD_HEADER_LEN.saturating_add(self.body_len())
    }
}

impl<'a> PeerMessage<'a> {
    /// A copy of this decoded message that owns its payloads: each entry of an APPEND made
    /// by [`LogEntry::from_peer_entry`] with its index (`prev_log_index + 1 + i`), collected
    /// into `C`; a snapshot chunk's bytes into `D`. Every other field is the same. The only
    /// conversion between the two forms; the writer needs none ([`PeerWriter::push`]).
    pub fn into_owned<C, T, D>(self) -> RaftMessage<C, D>
    where
        C: FromIterator<T>,
        T: LogEntry,
        D: From<&'a [u8]>,
    {
        match self {
            RaftMessage::Append {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
                transfer_to,
            } => RaftMessage::Append {
                term,
                prev_log_index,
                prev_log_term,
                // Decoding checked that the last index fits in a u64 (spec §8.4), so the
                // index never saturates; it does not count with a range, which would
                // overflow one step past an entry at index u64::MAX.
                entries: (1u64..)
                    .zip(entries.iter())
                    .map(|(i, entry)| T::from_peer_entry(prev_log_index.saturating_add(i), entry))
                    .collect(),
                leader_commit,
                round,
                transfer_to,
            },
            RaftMessage::InstallSnapshot {
                term,
                last_index,
                last_term,
                offset,
                total_len,
                data,
                round,
            } => RaftMessage::InstallSnapshot {
                term,
                last_index,
                last_term,
                offset,
                total_len,
                data: D::from(data),
                round,
            },
            RaftMessage::PreVote {
                term,
                last_log_index,
                last_log_term,
            } => RaftMessage::PreVote {
                term,
                last_log_index,
                last_log_term,
            },
            RaftMessage::PreVoteReply {
                term,
                granted,
                replica,
            } => RaftMessage::PreVoteReply {
                term,
                granted,
                replica,
            },
            RaftMessage::Vote {
                term,
                last_log_index,
                last_log_term,
                transfer,
            } => RaftMessage::Vote {
                term,
                last_log_index,
                last_log_term,
                transfer,
            },
            RaftMessage::VoteReply {
                term,
                granted,
                replica,
            } => RaftMessage::VoteReply {
                term,
                granted,
                replica,
            },
            RaftMessage::AppendReply {
                term,
                success,
                match_index,
                round,
                life,
                replica,
            } => RaftMessage::AppendReply {
                term,
                success,
                match_index,
                round,
                life,
                replica,
            },
            RaftMessage::TimeoutNow { term } => RaftMessage::TimeoutNow { term },
            RaftMessage::TermQuery { term, nonce } => RaftMessage::TermQuery { term, nonce },
            RaftMessage::TermReply {
                term,
                last_index,
                nonce,
            } => RaftMessage::TermReply {
                term,
                last_index,
                nonce,
            },
            RaftMessage::NoStateReply { term, nonce, new } => {
                RaftMessage::NoStateReply { term, nonce, new }
            }
            RaftMessage::InstallSnapshotReply {
                term,
                last_index,
                received,
                round,
                life,
                replica,
            } => RaftMessage::InstallSnapshotReply {
                term,
                last_index,
                received,
                round,
                life,
                replica,
            },
        }
    }
}

/// A PEER datagram whose header and records all passed the checks of spec §8.3–§8.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerDatagram<'a> {
    /// The sender's cluster id and node id, from the header (spec §8.3).
    pub header: PeerHeader,
    /// The authentication trailer (spec §8.11) if the AUTH flag is set: its layout is
    /// checked, its MAC is not (that needs the key: [`crate::ClusterKey::verify`]).
    pub auth: Option<AuthTrailer>,
    /// The records, back to back, all valid.
    body: &'a [u8],
    record_count: usize,
}

/// What the checks every node-to-node datagram shares found: the sender, the trailer if
/// authenticated, and the body between them.
pub(crate) struct NodeDatagram<'a> {
    pub header: PeerHeader,
    pub auth: Option<AuthTrailer>,
    pub body: &'a [u8],
}

/// The checks every node-to-node datagram shares (spec §8.4, checks 1–11): length, magic,
/// version, `msg_type`, no flag but AUTH, `attempt` and the reserved bytes zero (node-to-node
/// datagrams have no use for `attempt`), non-zero cluster and node ids, `body_len` (no
/// padding: a node-to-node datagram never pays for an answer), and the authentication
/// trailer's layout when AUTH is set (spec §8.11). Never panics.
pub(crate) fn decode_node_datagram(
    datagram: &[u8],
    msg_type: MessageType,
) -> Result<NodeDatagram<'_>, DecodeError> {
    if datagram.len() < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    if datagram.len() > PEER_DATAGRAM_LEN_MAX {
        return Err(DecodeError::TooLong);
    }
    if datagram[hfield::MAGIC] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if datagram[hfield::VERSION] != VERSION {
        return Err(DecodeError::UnsupportedVersion);
    }
    if datagram[hfield::MSG_TYPE] != msg_type.to_wire() {
        return Err(DecodeError::UnexpectedType);
    }
    let flags = u16_at(datagram, hfield::FLAGS.start);
    if flags & !Flags::AUTH.bits() != 0 {
        return Err(DecodeError::UnknownFlags);
    }
    if !all_zero(&datagram[hfield::ATTEMPT.start..hfield::RESERVED.end]) {
        return Err(DecodeError::ReservedNonZero);
    }
    let header = PeerHeader {
        cluster_id: u64_at(datagram, hfield::SESSION_ID.start),
        from: u64_at(datagram, hfield::REQUEST_ID.start),
    };
    if header.cluster_id == 0 || header.from == 0 {
        return Err(DecodeError::ZeroId);
    }
    let trailer_len = if flags & Flags::AUTH.bits() != 0 {
        AUTH_TRAILER_LEN
    } else {
        0
    };
    let body_len = u16_at(datagram, hfield::BODY_LEN.start) as usize;
    if HEADER_LEN + body_len + trailer_len != datagram.len() {
        return Err(DecodeError::BadBodyLength);
    }
    let body_end = HEADER_LEN + body_len;
    let auth = if trailer_len == 0 {
        None
    } else {
        Some(AuthTrailer::decode(&datagram[body_end..])?)
    };
    Ok(NodeDatagram {
        header,
        auth,
        body: &datagram[HEADER_LEN..body_end],
    })
}

impl<'a> PeerDatagram<'a> {
    /// Decodes a PEER datagram, checking the header and then every record in order (spec
    /// §8.3, §8.4) before it returns. Never panics; never allocates.
    pub fn decode(datagram: &'a [u8]) -> Result<PeerDatagram<'a>, DecodeError> {
        Self::decode_visiting(datagram, |_| {})
    }

    /// [`PeerDatagram::decode`], handing each record to `visit` once it passed its checks,
    /// in datagram order: a receiver that acts on every record reads each once instead of
    /// twice (decode, then [`PeerDatagram::all_records`]). On `Err`, `visit` may have seen
    /// the records before the bad one; the caller drops them with the datagram (a datagram
    /// with one bad record is dropped whole, module docs). Never panics; never allocates.
    pub fn decode_visiting(
        datagram: &'a [u8],
        mut visit: impl FnMut(PeerRecord<'a>),
    ) -> Result<PeerDatagram<'a>, DecodeError> {
        let NodeDatagram { header, auth, body } =
            decode_node_datagram(datagram, MessageType::Peer)?;
        if body.is_empty() {
            return Err(DecodeError::NoRecords);
        }
        let mut rest = body;
        let mut record_count = 0;
        while !rest.is_empty() {
            let (record, used) = read_record(rest)?;
            rest = rest.get(used..).ok_or(DecodeError::BadRecordLength)?;
            record_count += 1;
            visit(record);
        }
        Ok(PeerDatagram {
            header,
            auth,
            body,
            record_count,
        })
    }

    /// Number of records (at least 1).
    pub const fn record_count(&self) -> usize {
        self.record_count
    }

    /// The Raft records in datagram order, as (shard, message); SWIM records are skipped.
    pub fn records(&self) -> PeerRecords<'a> {
        PeerRecords {
            all: self.all_records(),
        }
    }

    /// The SWIM records in datagram order (spec §8.12); Raft records are skipped.
    pub fn swim_records(&self) -> SwimRecords<'a> {
        SwimRecords {
            all: self.all_records(),
        }
    }

    /// Every record in datagram order.
    pub fn all_records(&self) -> AllRecords<'a> {
        AllRecords { rest: self.body }
    }
}

/// One record of a PEER datagram: a Raft message of a shard, or a SWIM membership message
/// (spec §8.12; its record header's shard is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRecord<'a> {
    /// A Raft message of one shard (spec §8.5).
    Raft {
        /// The shard the message is about; below [`SHARDS_MAX`].
        shard: u16,
        /// The Raft message (spec §8.5).
        msg: PeerMessage<'a>,
    },
    /// A SWIM membership message (spec §8.12).
    Swim(SwimView<'a>),
}

/// Iterator over the Raft records of a decoded [`PeerDatagram`]: `(shard, message)`. SWIM
/// records are skipped ([`PeerDatagram::swim_records`]).
#[derive(Clone, Debug)]
pub struct PeerRecords<'a> {
    all: AllRecords<'a>,
}

impl<'a> Iterator for PeerRecords<'a> {
    type Item = (u16, PeerMessage<'a>);

    fn next(&mut self) -> Option<(u16, PeerMessage<'a>)> {
        self.all.find_map(|r| match r {
            PeerRecord::Raft { shard, msg } => Some((shard, msg)),
            PeerRecord::Swim(_) => None,
        })
    }
}

/// Iterator over the SWIM records of a decoded [`PeerDatagram`].
#[derive(Clone, Debug)]
pub struct SwimRecords<'a> {
    all: AllRecords<'a>,
}

impl<'a> Iterator for SwimRecords<'a> {
    type Item = SwimView<'a>;

    fn next(&mut self) -> Option<SwimView<'a>> {
        self.all.find_map(|r| match r {
            PeerRecord::Swim(msg) => Some(msg),
            PeerRecord::Raft { .. } => None,
        })
    }
}

/// Iterator over every record of a decoded [`PeerDatagram`], in datagram order.
#[derive(Clone, Debug)]
pub struct AllRecords<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for AllRecords<'a> {
    type Item = PeerRecord<'a>;

    fn next(&mut self) -> Option<PeerRecord<'a>> {
        // Decode checked every record, so this fails only at the end.
        let (record, used) = read_record(self.rest).ok()?;
        self.rest = self.rest.get(used..)?;
        Some(record)
    }
}

/// Reads and checks the record at the start of `rest` (spec §8.4, in the spec's order; a SWIM
/// record's body as spec §8.12 says): the record and the bytes it takes.
fn read_record(rest: &[u8]) -> Result<(PeerRecord<'_>, usize), DecodeError> {
    if rest.len() < PEER_RECORD_HEADER_LEN {
        return Err(DecodeError::BadRecordLength);
    }
    let shard = u16_at(rest, field::SHARD.start);
    if shard as u32 >= SHARDS_MAX {
        return Err(DecodeError::BadShard);
    }
    let kind = PeerKind::from_wire(rest[field::KIND]).ok_or(DecodeError::UnknownRecordKind)?;
    if kind.is_swim() && shard != 0 {
        // Membership belongs to no shard (spec §8.4 record check 3a).
        return Err(DecodeError::BadShard);
    }
    if rest[field::RESERVED] != 0 {
        return Err(DecodeError::ReservedNonZero);
    }
    let len = u16_at(rest, field::LEN.start) as usize;
    let body = rest
        .get(PEER_RECORD_HEADER_LEN..PEER_RECORD_HEADER_LEN + len)
        .ok_or(DecodeError::BadRecordLength)?;
    let record = match read_swim_body(kind, body) {
        Some(swim) => PeerRecord::Swim(swim?),
        None => PeerRecord::Raft {
            shard,
            msg: read_body(kind, body)?,
        },
    };
    Ok((record, PEER_RECORD_HEADER_LEN + len))
}

fn exact(body: &[u8], len: usize) -> Result<(), DecodeError> {
    if body.len() == len {
        Ok(())
    } else {
        Err(DecodeError::BadRecordLength)
    }
}

fn bool_at(body: &[u8], at: usize) -> Result<bool, DecodeError> {
    match body.get(at) {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(DecodeError::BadBool),
    }
}

fn read_body(kind: PeerKind, body: &[u8]) -> Result<PeerMessage<'_>, DecodeError> {
    let u64_ = |at: usize| u64_at(body, at);
    Ok(match kind {
        PeerKind::PreVote | PeerKind::Vote | PeerKind::TransferVote => {
            exact(body, VOTE_LEN)?;
            let (term, last_log_index, last_log_term) = (u64_(0), u64_(8), u64_(16));
            if kind == PeerKind::PreVote {
                PeerMessage::PreVote {
                    term,
                    last_log_index,
                    last_log_term,
                }
            } else {
                PeerMessage::Vote {
                    term,
                    last_log_index,
                    last_log_term,
                    transfer: kind == PeerKind::TransferVote,
                }
            }
        }
        PeerKind::PreVoteReply | PeerKind::VoteReply => {
            exact(body, VOTE_REPLY_LEN)?;
            let (term, granted) = (u64_(0), bool_at(body, 8)?);
            let replica = u64_(field::VOTE_REPLY_REPLICA.start);
            if kind == PeerKind::PreVoteReply {
                PeerMessage::PreVoteReply {
                    term,
                    granted,
                    replica,
                }
            } else {
                PeerMessage::VoteReply {
                    term,
                    granted,
                    replica,
                }
            }
        }
        PeerKind::Append => read_append(body)?,
        PeerKind::AppendReply => {
            exact(body, APPEND_REPLY_LEN)?;
            PeerMessage::AppendReply {
                term: u64_(0),
                success: bool_at(body, 8)?,
                match_index: u64_(9),
                round: u64_(17),
                life: u64_(field::APPEND_REPLY_LIFE.start),
                replica: u64_(field::APPEND_REPLY_REPLICA.start),
            }
        }
        PeerKind::TimeoutNow => {
            exact(body, TIMEOUT_NOW_LEN)?;
            PeerMessage::TimeoutNow { term: u64_(0) }
        }
        PeerKind::TermQuery => {
            exact(body, TERM_QUERY_LEN)?;
            // Spec §8.4 record check 10.
            if !all_zero(&body[field::TERM_QUERY_RESERVED]) {
                return Err(DecodeError::ReservedNonZero);
            }
            PeerMessage::TermQuery {
                term: u64_(field::TERM_QUERY_TERM.start),
                nonce: u64_(field::TERM_QUERY_NONCE.start),
            }
        }
        PeerKind::TermReply => {
            exact(body, TERM_REPLY_LEN)?;
            PeerMessage::TermReply {
                term: u64_(0),
                last_index: u64_(8),
                nonce: u64_(16),
            }
        }
        PeerKind::NoStateReply => {
            exact(body, NO_STATE_REPLY_LEN)?;
            PeerMessage::NoStateReply {
                term: u64_(0),
                nonce: u64_(8),
                new: bool_at(body, 16)?,
            }
        }
        PeerKind::InstallSnapshot => read_install_snapshot(body)?,
        PeerKind::InstallSnapshotReply => {
            exact(body, INSTALL_SNAPSHOT_REPLY_LEN)?;
            PeerMessage::InstallSnapshotReply {
                term: u64_(field::INSTALL_SNAPSHOT_REPLY_TERM.start),
                last_index: u64_(field::INSTALL_SNAPSHOT_REPLY_LAST_INDEX.start),
                received: u64_(field::INSTALL_SNAPSHOT_REPLY_RECEIVED.start),
                round: u64_(field::INSTALL_SNAPSHOT_REPLY_ROUND.start),
                life: u64_(field::INSTALL_SNAPSHOT_REPLY_LIFE.start),
                replica: u64_(field::INSTALL_SNAPSHOT_REPLY_REPLICA.start),
            }
        }
        // `read_record` hands these to `read_swim_body`.
        PeerKind::SwimPing
        | PeerKind::SwimAck
        | PeerKind::SwimPingReq
        | PeerKind::SwimNack
        | PeerKind::SwimPushPull => return Err(DecodeError::UnknownRecordKind),
    })
}

/// An INSTALL_SNAPSHOT body: first the length (`BadRecordLength`), then the fields
/// (`BadSnapshotChunk`).
fn read_install_snapshot(body: &[u8]) -> Result<PeerMessage<'_>, DecodeError> {
    if body.len() < INSTALL_SNAPSHOT_FIXED_LEN {
        return Err(DecodeError::BadRecordLength);
    }
    let data_len = u16_at(body, field::INSTALL_SNAPSHOT_DATA_LEN.start) as usize;
    let data = &body[INSTALL_SNAPSHOT_FIXED_LEN..];
    if data.len() != data_len {
        return Err(DecodeError::BadRecordLength);
    }
    let msg = PeerMessage::InstallSnapshot {
        term: u64_at(body, field::INSTALL_SNAPSHOT_TERM.start),
        last_index: u64_at(body, field::INSTALL_SNAPSHOT_LAST_INDEX.start),
        last_term: u64_at(body, field::INSTALL_SNAPSHOT_LAST_TERM.start),
        offset: u64_at(body, field::INSTALL_SNAPSHOT_OFFSET.start),
        total_len: u64_at(body, field::INSTALL_SNAPSHOT_TOTAL_LEN.start),
        round: u64_at(body, field::INSTALL_SNAPSHOT_ROUND.start),
        data,
    };
    check_snapshot_chunk(&msg).map_err(|()| DecodeError::BadSnapshotChunk)?;
    Ok(msg)
}

/// The chunk rules both sides enforce (spec §8.4 check 9): the snapshot covers at least
/// entry 1 (`last_index >= 1`), whose term is at least 1 and at most the leader's
/// (`1 <= last_term <= term`); it is at most [`SNAPSHOT_LEN_MAX`] bytes long; and the chunk
/// lies inside it (`offset + data_len <= total_len`, without overflow). Anything else is Ok.
fn check_snapshot_chunk<E, D: AsRef<[u8]>>(msg: &RaftMessage<E, D>) -> Result<(), ()> {
    if let RaftMessage::InstallSnapshot {
        term,
        last_index,
        last_term,
        offset,
        total_len,
        ref data,
        ..
    } = *msg
    {
        let inside = offset
            .checked_add(data.as_ref().len() as u64)
            .is_some_and(|end| end <= total_len);
        if last_index == 0
            || last_term == 0
            || last_term > term
            || total_len > SNAPSHOT_LEN_MAX
            || !inside
        {
            return Err(());
        }
    }
    Ok(())
}

/// An APPEND body: first the lengths (`BadRecordLength`), then the terms and indexes
/// (`BadEntries`).
fn read_append(body: &[u8]) -> Result<PeerMessage<'_>, DecodeError> {
    if body.len() < APPEND_FIXED_LEN {
        return Err(DecodeError::BadRecordLength);
    }
    let count = u16_at(body, field::APPEND_ENTRY_COUNT.start);
    let bytes = &body[APPEND_FIXED_LEN..];
    let mut rest = bytes;
    for _ in 0..count {
        let (_, used) = read_entry(rest).ok_or(DecodeError::BadRecordLength)?;
        rest = rest.get(used..).ok_or(DecodeError::BadRecordLength)?;
    }
    if !rest.is_empty() {
        return Err(DecodeError::BadRecordLength);
    }
    let term = u64_at(body, field::APPEND_TERM.start);
    let prev_log_index = u64_at(body, field::APPEND_PREV_LOG_INDEX.start);
    let entries = PeerEntries { bytes, count };
    check_entries(term, prev_log_index, entries.iter()).map_err(|()| DecodeError::BadEntries)?;
    Ok(PeerMessage::Append {
        term,
        prev_log_index,
        prev_log_term: u64_at(body, field::APPEND_PREV_LOG_TERM.start),
        leader_commit: u64_at(body, field::APPEND_LEADER_COMMIT.start),
        round: u64_at(body, field::APPEND_ROUND.start),
        // Node ids are never 0 (spec §8.1): 0 names nobody.
        transfer_to: Some(u64_at(body, field::APPEND_TRANSFER_TO.start)).filter(|&to| to != 0),
        entries,
    })
}

/// The entry rules both sides enforce (spec §8.5): terms never decrease along the log and no
/// entry is newer than the leader's term; at most 65535 entries of at most 65535 bytes each;
/// the last index fits in a u64. Returns (entry count, total data bytes).
fn check_entries<'e>(
    term: u64,
    prev_log_index: u64,
    entries: impl Iterator<Item = PeerEntry<'e>>,
) -> Result<(usize, usize), ()> {
    let (mut count, mut data_total, mut last_term) = (0usize, 0usize, 0u64);
    for e in entries {
        if e.term < last_term || e.term > term || e.data.len() > u16::MAX as usize {
            return Err(());
        }
        last_term = e.term;
        count += 1;
        if count > u16::MAX as usize {
            return Err(());
        }
        data_total = data_total.saturating_add(e.data.len());
    }
    prev_log_index.checked_add(count as u64).ok_or(())?;
    Ok((count, data_total))
}

/// Builds one PEER datagram in the caller's buffer, record by record.
///
/// The writer never writes beyond `buf.len()` nor makes a datagram longer than
/// [`PEER_DATAGRAM_LEN_MAX`]. A record that does not fit is refused with no change to the
/// datagram; the caller then [finishes](PeerWriter::finish) this datagram and starts another.
/// Every datagram it finishes decodes with [`PeerDatagram::decode`].
#[derive(Debug)]
pub struct PeerWriter<'b> {
    buf: &'b mut [u8],
    header: PeerHeader,
    /// Bytes of the datagram so far, header included.
    len: usize,
    records: usize,
    /// Longest datagram this writer makes: [`PEER_DATAGRAM_LEN_MAX`] less the room kept for
    /// an authentication trailer.
    len_max: usize,
}

impl<'b> PeerWriter<'b> {
    /// Starts a datagram; the 32-byte header is reserved and written by
    /// [`PeerWriter::finish`]. A buffer shorter than the header takes no record.
    pub fn new(buf: &'b mut [u8], header: PeerHeader) -> PeerWriter<'b> {
        PeerWriter::with_trailer_room(buf, header, 0)
    }

    /// Like [`PeerWriter::new`], but keeps `trailer_len` bytes free at the end of the longest
    /// datagram, for the authentication trailer that [`crate::ClusterKey::seal`] appends
    /// ([`AUTH_TRAILER_LEN`]; 0 for an unauthenticated datagram).
    pub fn with_trailer_room(
        buf: &'b mut [u8],
        header: PeerHeader,
        trailer_len: usize,
    ) -> PeerWriter<'b> {
        PeerWriter {
            buf,
            header,
            len: HEADER_LEN,
            records: 0,
            len_max: PEER_DATAGRAM_LEN_MAX.saturating_sub(trailer_len),
        }
    }

    /// Number of records pushed so far.
    pub const fn record_count(&self) -> usize {
        self.records
    }

    /// Bytes of the datagram so far, the header included.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True while no record has been pushed (`finish` would return 0).
    pub const fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes left for records (record headers included): the next record fits if its
    /// [`RaftMessage::record_len`] is at most this.
    pub fn remaining(&self) -> usize {
        self.buf.len().min(self.len_max).saturating_sub(self.len)
    }

    /// Checks that a record of `record_len` bytes (header included) for `shard` may be
    /// appended; returns where it ends.
    fn room(&self, shard: u16, record_len: usize) -> Result<usize, EncodeError> {
        if self.header.cluster_id == 0 || self.header.from == 0 {
            return Err(EncodeError::ZeroId);
        }
        if shard as u32 >= SHARDS_MAX {
            return Err(EncodeError::BadShard);
        }
        let end = self.len.saturating_add(record_len);
        if end > self.len_max {
            return Err(EncodeError::TooLong);
        }
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        Ok(end)
    }

    /// Appends one record. On `Err` nothing changed: [`EncodeError::TooLong`] or
    /// [`EncodeError::BufferTooSmall`] mean the record does not fit in this datagram (finish
    /// it and push the record into the next one; an INSTALL_SNAPSHOT whose data is longer
    /// than [`SNAPSHOT_CHUNK_MAX`] never fits); [`EncodeError::BadShard`],
    /// [`EncodeError::ZeroId`] (a zero id in the header), [`EncodeError::BadEntries`] and
    /// [`EncodeError::BadSnapshotChunk`] mean it can never be sent.
    ///
    /// Any form of the message is written the same way (a decoded view, or a Raft core's own
    /// entries and chunk), without copying its payloads anywhere but into the datagram. An
    /// APPEND's `transfer_to` of `Some(0)` has no wire form (0 means nobody) and is refused
    /// with [`EncodeError::ZeroId`].
    pub fn push<E, D>(&mut self, shard: u16, msg: &RaftMessage<E, D>) -> Result<(), EncodeError>
    where
        E: AppendEntries,
        D: AsRef<[u8]>,
    {
        let mut body = [0u8; FIXED_BODY_LEN_MAX];
        let put = |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
        let len = match *msg {
            RaftMessage::InstallSnapshot { .. } => return self.push_install_snapshot(shard, msg),
            RaftMessage::Append {
                term,
                prev_log_index,
                prev_log_term,
                leader_commit,
                round,
                transfer_to,
                ref entries,
            } => {
                let transfer_to = match transfer_to {
                    None => 0,
                    Some(0) => return Err(EncodeError::ZeroId),
                    Some(to) => to,
                };
                return self.push_append(
                    shard,
                    term,
                    prev_log_index,
                    prev_log_term,
                    leader_commit,
                    (round, transfer_to),
                    entries.peer_entries(),
                );
            }
            RaftMessage::PreVote {
                term,
                last_log_index,
                last_log_term,
            }
            | RaftMessage::Vote {
                term,
                last_log_index,
                last_log_term,
                ..
            } => {
                put(&mut body, 0, term);
                put(&mut body, 8, last_log_index);
                put(&mut body, 16, last_log_term);
                VOTE_LEN
            }
            RaftMessage::PreVoteReply {
                term,
                granted,
                replica,
            }
            | RaftMessage::VoteReply {
                term,
                granted,
                replica,
            } => {
                put(&mut body, 0, term);
                body[8] = granted as u8;
                put(&mut body, field::VOTE_REPLY_REPLICA.start, replica);
                VOTE_REPLY_LEN
            }
            RaftMessage::AppendReply {
                term,
                success,
                match_index,
                round,
                life,
                replica,
            } => {
                put(&mut body, 0, term);
                body[8] = success as u8;
                put(&mut body, 9, match_index);
                put(&mut body, 17, round);
                put(&mut body, field::APPEND_REPLY_LIFE.start, life);
                put(&mut body, field::APPEND_REPLY_REPLICA.start, replica);
                APPEND_REPLY_LEN
            }
            RaftMessage::TimeoutNow { term } => {
                put(&mut body, 0, term);
                TIMEOUT_NOW_LEN
            }
            RaftMessage::TermQuery { term, nonce } => {
                // The reserved bytes stay zero, as `body` starts.
                put(&mut body, field::TERM_QUERY_TERM.start, term);
                put(&mut body, field::TERM_QUERY_NONCE.start, nonce);
                TERM_QUERY_LEN
            }
            RaftMessage::TermReply {
                term,
                last_index,
                nonce,
            } => {
                put(&mut body, 0, term);
                put(&mut body, 8, last_index);
                put(&mut body, 16, nonce);
                TERM_REPLY_LEN
            }
            RaftMessage::NoStateReply { term, nonce, new } => {
                put(&mut body, 0, term);
                put(&mut body, 8, nonce);
                body[16] = new as u8;
                NO_STATE_REPLY_LEN
            }
            RaftMessage::InstallSnapshotReply {
                term,
                last_index,
                received,
                round,
                life,
                replica,
            } => {
                put(&mut body, field::INSTALL_SNAPSHOT_REPLY_TERM.start, term);
                put(
                    &mut body,
                    field::INSTALL_SNAPSHOT_REPLY_LAST_INDEX.start,
                    last_index,
                );
                put(
                    &mut body,
                    field::INSTALL_SNAPSHOT_REPLY_RECEIVED.start,
                    received,
                );
                put(&mut body, field::INSTALL_SNAPSHOT_REPLY_ROUND.start, round);
                put(&mut body, field::INSTALL_SNAPSHOT_REPLY_LIFE.start, life);
                put(
                    &mut body,
                    field::INSTALL_SNAPSHOT_REPLY_REPLICA.start,
                    replica,
                );
                INSTALL_SNAPSHOT_REPLY_LEN
            }
        };
        debug_assert_eq!(len, msg.body_len());
        let end = self.room(shard, PEER_RECORD_HEADER_LEN + len)?;
        let at = self.len;
        let out = &mut self.buf[at..end];
        write_record_header(out, shard, msg.kind(), len);
        out[PEER_RECORD_HEADER_LEN..].copy_from_slice(&body[..len]);
        self.commit(end);
        Ok(())
    }

    /// Appends an APPEND record from its fields as the wire holds them, the entries from any
    /// iterator (what [`PeerWriter::push`] does with a [`RaftMessage::Append`]'s, and what a
    /// test uses to send what no message would hold); `(round, transfer_to)` are the APPEND's
    /// fields of those names, `transfer_to` 0 for nobody. The iterator is walked twice (once to size and check, once to write), so it
    /// must yield the same entries both times; if it does not, the push fails with
    /// [`EncodeError::BadEntries`] and nothing changed. Errors as in [`PeerWriter::push`].
    #[allow(clippy::too_many_arguments)]
    pub fn push_append<'e, I>(
        &mut self,
        shard: u16,
        term: u64,
        prev_log_index: u64,
        prev_log_term: u64,
        leader_commit: u64,
        (round, transfer_to): (u64, u64),
        entries: I,
    ) -> Result<(), EncodeError>
    where
        I: Iterator<Item = PeerEntry<'e>> + Clone,
    {
        let (count, data_total) = check_entries(term, prev_log_index, entries.clone())
            .map_err(|()| EncodeError::BadEntries)?;
        let record_len = append_record_len(data_total, count);
        let end = self.room(shard, record_len)?;
        let at = self.len;
        let out = &mut self.buf[at..end];
        let body_len = record_len - PEER_RECORD_HEADER_LEN;
        write_record_header(out, shard, PeerKind::Append, body_len);
        let body = &mut out[PEER_RECORD_HEADER_LEN..];
        body[field::APPEND_TERM].copy_from_slice(&term.to_be_bytes());
        body[field::APPEND_PREV_LOG_INDEX].copy_from_slice(&prev_log_index.to_be_bytes());
        body[field::APPEND_PREV_LOG_TERM].copy_from_slice(&prev_log_term.to_be_bytes());
        body[field::APPEND_LEADER_COMMIT].copy_from_slice(&leader_commit.to_be_bytes());
        body[field::APPEND_ROUND].copy_from_slice(&round.to_be_bytes());
        body[field::APPEND_TRANSFER_TO].copy_from_slice(&transfer_to.to_be_bytes());
        body[field::APPEND_ENTRY_COUNT].copy_from_slice(&(count as u16).to_be_bytes());
        // Second pass: write, re-checking the order so a changing iterator cannot produce a
        // datagram that its receiver would reject.
        let mut w = APPEND_FIXED_LEN;
        let (mut written, mut last_term) = (0usize, 0u64);
        for e in entries {
            let next = w + ENTRY_FIXED_LEN + e.data.len();
            if next > body.len() || e.term < last_term || e.term > term {
                return Err(EncodeError::BadEntries);
            }
            body[w..w + 8].copy_from_slice(&e.term.to_be_bytes());
            body[w + 8..w + 10].copy_from_slice(&(e.data.len() as u16).to_be_bytes());
            body[w + ENTRY_FIXED_LEN..next].copy_from_slice(e.data);
            (w, written, last_term) = (next, written + 1, e.term);
        }
        if w != body.len() || written != count {
            return Err(EncodeError::BadEntries);
        }
        self.commit(end);
        Ok(())
    }

    /// Appends an INSTALL_SNAPSHOT record: checks the chunk rules first, then the room.
    fn push_install_snapshot<E: AppendEntries, D: AsRef<[u8]>>(
        &mut self,
        shard: u16,
        msg: &RaftMessage<E, D>,
    ) -> Result<(), EncodeError> {
        let RaftMessage::InstallSnapshot {
            term,
            last_index,
            last_term,
            offset,
            total_len,
            round,
            ref data,
        } = *msg
        else {
            // `push` calls this for INSTALL_SNAPSHOT only.
            return Err(EncodeError::WrongType);
        };
        check_snapshot_chunk(msg).map_err(|()| EncodeError::BadSnapshotChunk)?;
        // A chunk longer than a datagram's room (and so any whose data_len would not fit in
        // a u16) is refused here with TooLong.
        let end = self.room(shard, msg.record_len())?;
        let at = self.len;
        let out = &mut self.buf[at..end];
        write_record_header(out, shard, PeerKind::InstallSnapshot, msg.body_len());
        let body = &mut out[PEER_RECORD_HEADER_LEN..];
        body[field::INSTALL_SNAPSHOT_TERM].copy_from_slice(&term.to_be_bytes());
        body[field::INSTALL_SNAPSHOT_LAST_INDEX].copy_from_slice(&last_index.to_be_bytes());
        body[field::INSTALL_SNAPSHOT_LAST_TERM].copy_from_slice(&last_term.to_be_bytes());
        body[field::INSTALL_SNAPSHOT_OFFSET].copy_from_slice(&offset.to_be_bytes());
        body[field::INSTALL_SNAPSHOT_TOTAL_LEN].copy_from_slice(&total_len.to_be_bytes());
        body[field::INSTALL_SNAPSHOT_ROUND].copy_from_slice(&round.to_be_bytes());
        let data = data.as_ref();
        body[field::INSTALL_SNAPSHOT_DATA_LEN].copy_from_slice(&(data.len() as u16).to_be_bytes());
        body[INSTALL_SNAPSHOT_FIXED_LEN..].copy_from_slice(data);
        self.commit(end);
        Ok(())
    }

    /// Appends one SWIM record (spec §8.12; its shard is 0), from any form of the message (a
    /// decoded view, or the membership core's own `Vec`). On `Err` nothing changed:
    /// [`EncodeError::TooLong`] or [`EncodeError::BufferTooSmall`] mean it does not fit in
    /// this datagram; [`EncodeError::TooManyUpdates`], [`EncodeError::BadUpdate`],
    /// [`EncodeError::BadAddress`] and [`EncodeError::ZeroId`] (a zero target or header id)
    /// mean it can never be sent: a receiver would reject it.
    pub fn push_swim<U: UpdateList>(&mut self, msg: &SwimMessage<U>) -> Result<(), EncodeError> {
        let updates = match msg {
            SwimMessage::PushPull { members, .. } => members.count(),
            _ => msg.gossip().map_or(0, U::count),
        };
        if updates > msg.updates_max() {
            return Err(EncodeError::TooManyUpdates);
        }
        let end = self.room(0, msg.record_len())?;
        let at = self.len;
        let out = &mut self.buf[at..end];
        write_record_header(out, 0, msg.kind(), msg.body_len());
        // Bytes past `self.len` are not the datagram's until `commit`: a refusal leaves
        // nothing behind.
        write_swim_body(&mut out[PEER_RECORD_HEADER_LEN..], msg)?;
        self.commit(end);
        Ok(())
    }

    fn commit(&mut self, end: usize) {
        debug_assert!(end > self.len && end <= self.buf.len().min(self.len_max));
        self.len = end;
        self.records += 1;
    }

    /// Writes the header and returns the datagram's length, `buf[..length]`; 0 if no record
    /// was pushed (there is nothing to send).
    pub fn finish(self) -> usize {
        if self.records == 0 {
            return 0;
        }
        let header = Header {
            msg_type: MessageType::Peer,
            flags: Flags::empty(),
            body_len: (self.len - HEADER_LEN) as u16,
            session_id: self.header.cluster_id,
            request_id: self.header.from,
            attempt: 0,
        };
        // A record was pushed, so the ids are non-zero and the buffer holds the header.
        match header::encode(self.buf, &header) {
            Ok(()) => self.len,
            Err(_) => 0,
        }
    }
}

fn write_record_header(out: &mut [u8], shard: u16, kind: PeerKind, body_len: usize) {
    out[field::SHARD].copy_from_slice(&shard.to_be_bytes());
    out[field::KIND] = kind.to_wire();
    out[field::RESERVED] = 0;
    out[field::LEN].copy_from_slice(&(body_len as u16).to_be_bytes());
}
