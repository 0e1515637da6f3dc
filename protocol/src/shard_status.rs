//! SHARD_STATUS and SHARD_STATUS_REPLY (spec §4.7, §5.6): one cluster node's own view of its
//! shards, for operators (`udplock status` without a resource).
//!
//! ```text
//! SHARD_STATUS        header (type 0x06) | first_shard u16 | zero padding
//! SHARD_STATUS_REPLY  header (type 0x86) | status u16 | node_id u64 | shards_total u16
//!                     | first_shard u16 | entry_count u16 | entry × entry_count   (no padding)
//! entry (44 bytes)    shard u16 | role u8 | reserved u8 | leader_id u64 | term u64
//!                     | commit_index u64 | applied_index u64 | held u32 | waiters u32
//! ```
//!
//! Any node answers, leader or not, from its own state at that instant: nothing is logged,
//! remembered or changed. The reply carries shards `first_shard..` in order, as many as fit in
//! a datagram no longer than the request (no amplification, spec §2.2), so a client pads the
//! request to [`SHARD_STATUS_REQUEST_LEN`] (1200 bytes, room for
//! [`SHARD_STATUS_ENTRIES_MAX`] = 26 entries) and asks again from the next shard until it has
//! `shards_total` of them.
//!
//! Decoding checks the layout *and* the page's consistency (entries numbered `first_shard`,
//! `first_shard + 1`, ...; no entry past `shards_total`; a known role; zero reserved bytes),
//! so what decodes is canonical: re-encoding it gives the same bytes.

use crate::be::{u16_at, u32_at, u64_at};
use crate::entries::{Entries, EntryIter, WireEntry};
use crate::header::{self, Direction, Header, HeaderIds};
use crate::registry::{Flags, MessageType, Status};
use crate::{DecodeError, EncodeError, DATAGRAM_LEN_MAX, HEADER_LEN, SHARDS_MAX};

/// Body of a SHARD_STATUS request: `first_shard` (u16).
pub const SHARD_STATUS_BODY_LEN: usize = 2;
/// Length a client pads SHARD_STATUS to: the longest datagram, so that the reply can carry the
/// most entries (spec §2.2 rule 4).
pub const SHARD_STATUS_REQUEST_LEN: usize = DATAGRAM_LEN_MAX;
/// Fixed part of a SHARD_STATUS_REPLY body: status, node_id, shards_total, first_shard,
/// entry_count.
pub const SHARD_STATUS_REPLY_FIXED_LEN: usize = 16;
/// One entry of a SHARD_STATUS_REPLY.
pub const SHARD_STATUS_ENTRY_LEN: usize = 44;
/// Most entries one SHARD_STATUS_REPLY carries: those that fit in [`DATAGRAM_LEN_MAX`].
pub const SHARD_STATUS_ENTRIES_MAX: usize =
    (DATAGRAM_LEN_MAX - HEADER_LEN - SHARD_STATUS_REPLY_FIXED_LEN) / SHARD_STATUS_ENTRY_LEN;

const _: () = assert!(SHARD_STATUS_REPLY_FIXED_LEN == 2 + 8 + 2 + 2 + 2);
const _: () = assert!(SHARD_STATUS_ENTRY_LEN == 2 + 1 + 1 + 4 * 8 + 4 + 4);
const _: () = assert!(SHARD_STATUS_ENTRIES_MAX == 26);
const _: () = assert!(SHARD_STATUS_REQUEST_LEN <= DATAGRAM_LEN_MAX);
// The reply to a full-length request, with the most entries, fits in that request.
const _: () = assert!(
    HEADER_LEN + SHARD_STATUS_REPLY_FIXED_LEN + SHARD_STATUS_ENTRIES_MAX * SHARD_STATUS_ENTRY_LEN
        <= SHARD_STATUS_REQUEST_LEN
);
// Even the shortest request a server answers pays for a reply without entries.
const _: () = assert!(HEADER_LEN + SHARD_STATUS_REPLY_FIXED_LEN <= crate::REQUEST_LEN_MIN);

/// Byte offsets of the SHARD_STATUS_REPLY fields: the fixed part relative to the body's first
/// byte, the entry fields relative to the entry's first byte.
pub mod field {
    use core::ops::Range;
    /// Request body: `first_shard`, u16, where the page starts (spec §4.7).
    pub const FIRST_SHARD_REQUEST: Range<usize> = 0..2;
    /// Reply body: `status`, u16; OK, or another status with every field zero (spec §5.6).
    pub const STATUS: Range<usize> = 0..2;
    /// Reply body: `node_id`, u64, the answering node (spec §5.6).
    pub const NODE_ID: Range<usize> = 2..10;
    /// Reply body: `shards_total`, u16, the cluster's shard count (spec §5.6).
    pub const SHARDS_TOTAL: Range<usize> = 10..12;
    /// Reply body: `first_shard`, u16, the request's, copied (spec §5.6).
    pub const FIRST_SHARD: Range<usize> = 12..14;
    /// Reply body: `entry_count`, u16, entries that follow (spec §5.6).
    pub const ENTRY_COUNT: Range<usize> = 14..16;
    /// Entry: `shard`, u16, `first_shard` plus the entry's position (spec §5.6).
    pub const SHARD: Range<usize> = 0..2;
    /// Entry: `role`, u8, the answering node's role in the shard, 0 to 5 (spec §5.6).
    pub const ROLE: usize = 2;
    /// Entry: reserved, zero (spec §5.6).
    pub const RESERVED: usize = 3;
    /// Entry: `leader_id`, u64, the leader the node believes in; 0 for none (spec §5.6).
    pub const LEADER_ID: Range<usize> = 4..12;
    /// Entry: `term`, u64, the node's current term for the shard (spec §5.6).
    pub const TERM: Range<usize> = 12..20;
    /// Entry: `commit_index`, u64, the highest index it knows committed (spec §5.6).
    pub const COMMIT_INDEX: Range<usize> = 20..28;
    /// Entry: `applied_index`, u64, the highest index applied to its lock table (spec §5.6).
    pub const APPLIED_INDEX: Range<usize> = 28..36;
    /// Entry: `held`, u32, locks with a holder at `applied_index`, saturating (spec §5.6).
    pub const HELD: Range<usize> = 36..40;
    /// Entry: `waiters`, u32, ACQUIREs queued at `applied_index`, saturating (spec §5.6).
    pub const WAITERS: Range<usize> = 40..44;
}

const _: () = assert!(field::FIRST_SHARD_REQUEST.end == SHARD_STATUS_BODY_LEN);
const _: () = assert!(field::ENTRY_COUNT.end == SHARD_STATUS_REPLY_FIXED_LEN);
const _: () = assert!(field::WAITERS.end == SHARD_STATUS_ENTRY_LEN);

/// The role a node has in one shard's Raft group, as SHARD_STATUS_REPLY reports it (spec
/// §5.6), or that it holds no replica of the shard. Values 6 to 255 are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ShardRole {
    /// Follows a leader, or waits for one.
    Follower = 0,
    /// Asking whether it could win an election, before starting one (Raft thesis §9.6).
    PreCandidate = 1,
    /// Running an election (Raft §5.2).
    Candidate = 2,
    /// Leads the shard: the node that executes its requests.
    Leader = 3,
    /// Holds no replica of the shard (a node of a joined cluster, spec §8.1): it is in no
    /// role and knows nothing of the shard; every other field of its entry is zero.
    NoReplica = 4,
    /// Holds a replica that its latest configuration names a learner (a node of a joined
    /// cluster, spec §8.5): it receives the shard's log and follows its leader, but votes in
    /// no election and counts in no majority (Raft thesis §4.2.1) — a replica still catching
    /// up, or placed and not yet promoted. Its other fields mean what a follower's mean.
    Learner = 5,
}

impl ShardRole {
    /// Every role, in wire order.
    pub const ALL: &'static [ShardRole] = &[
        ShardRole::Follower,
        ShardRole::PreCandidate,
        ShardRole::Candidate,
        ShardRole::Leader,
        ShardRole::NoReplica,
        ShardRole::Learner,
    ];

    /// The role for `raw`, or `None` for a reserved value.
    pub const fn from_wire(raw: u8) -> Option<ShardRole> {
        match raw {
            0 => Some(ShardRole::Follower),
            1 => Some(ShardRole::PreCandidate),
            2 => Some(ShardRole::Candidate),
            3 => Some(ShardRole::Leader),
            4 => Some(ShardRole::NoReplica),
            5 => Some(ShardRole::Learner),
            _ => None,
        }
    }

    /// The value as sent on the wire.
    pub const fn to_wire(self) -> u8 {
        self as u8
    }

    /// The name the spec and the test vectors use.
    pub const fn name(self) -> &'static str {
        match self {
            ShardRole::Follower => "follower",
            ShardRole::PreCandidate => "pre-candidate",
            ShardRole::Candidate => "candidate",
            ShardRole::Leader => "leader",
            ShardRole::NoReplica => "no-replica",
            ShardRole::Learner => "learner",
        }
    }
}

/// One shard as the answering node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardStatusEntry {
    /// The shard: the page's `first_shard` plus the entry's position (spec §5.6).
    pub shard: u16,
    /// The answering node's role in this shard.
    pub role: ShardRole,
    /// The node the answering node believes leads the shard in its current term (itself when
    /// it leads); 0 when it knows none.
    pub leader_id: u64,
    /// The answering node's current Raft term for the shard.
    pub term: u64,
    /// Highest log index the answering node knows to be committed.
    pub commit_index: u64,
    /// Highest log index applied to its copy of the lock table.
    pub applied_index: u64,
    /// Locks held in its copy of the lock table (saturating at `u32::MAX`).
    pub held: u32,
    /// ACQUIREs waiting in its copy's queues (saturating at `u32::MAX`).
    pub waiters: u32,
}

/// A decoded SHARD_STATUS request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardStatusRequest {
    /// Non-zero; any value (the request is read-only and creates no session).
    pub session_id: u64,
    /// Non-zero; a client takes a new one per page.
    pub request_id: u64,
    /// 0 on the first send, +1 per retransmission.
    pub attempt: u16,
    /// The first shard the reply should describe (the page start).
    pub first_shard: u16,
}

fn reads_shard_status(t: MessageType) -> bool {
    t == MessageType::ShardStatus
}

fn reads_shard_status_reply(t: MessageType) -> bool {
    t == MessageType::ShardStatusReply
}

impl ShardStatusRequest {
    /// Decodes a SHARD_STATUS datagram (spec §3.2, §4.7). Never panics; never allocates. Any
    /// other request type fails with [`DecodeError::UnknownType`].
    pub fn decode(datagram: &[u8]) -> Result<ShardStatusRequest, DecodeError> {
        let header =
            header::decode_fixed_request(datagram, reads_shard_status, SHARD_STATUS_BODY_LEN)?;
        Ok(ShardStatusRequest {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            first_shard: u16_at(datagram, HEADER_LEN + field::FIRST_SHARD_REQUEST.start),
        })
    }

    /// Encodes the request padded to [`SHARD_STATUS_REQUEST_LEN`], as a client sends it.
    /// Returns the datagram length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.encode_padded(out, SHARD_STATUS_REQUEST_LEN)
    }

    /// Encodes the request, then zero padding up to `len` bytes (at least the body's end).
    /// For tests and tools; clients use [`ShardStatusRequest::encode`].
    pub fn encode_padded(&self, out: &mut [u8], len: usize) -> Result<usize, EncodeError> {
        let ids = HeaderIds {
            session_id: self.session_id,
            request_id: self.request_id,
            attempt: self.attempt,
        };
        header::encode_fixed_request(
            out,
            MessageType::ShardStatus,
            ids,
            &self.first_shard.to_be_bytes(),
            len,
        )
    }
}

/// A SHARD_STATUS_REPLY: a decoded view whose entries borrow from the datagram, or a value to
/// encode whose entries borrow from the caller's slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardStatusReply<'a> {
    /// Copied from the request.
    pub session_id: u64,
    /// Copied from the request.
    pub request_id: u64,
    /// The attempt of the request copy answered.
    pub attempt: u16,
    /// OK in version 1. Another status carries no data: node_id, shards_total, first_shard
    /// and entry_count are all zero.
    pub status: Status,
    /// The answering node's id (non-zero with OK).
    pub node_id: u64,
    /// The cluster's shard count `S` (1 to [`SHARDS_MAX`] with OK).
    pub shards_total: u16,
    /// The request's `first_shard`, echoed; the first entry (if any) is this shard.
    pub first_shard: u16,
    /// Shards `first_shard`, `first_shard + 1`, ... in order; none when `first_shard` is at
    /// or past `shards_total`.
    pub entries: ShardStatusEntries<'a>,
}

/// Whether a page's fixed fields agree with each other (spec §5.6): with OK, a non-zero
/// node id, `1 <= shards_total <= SHARDS_MAX` and no entry past `shards_total`; with any
/// other status, nothing at all.
fn page_is_consistent(
    status: Status,
    node_id: u64,
    shards_total: u16,
    first_shard: u16,
    entry_count: usize,
) -> bool {
    if status != Status::Ok {
        return node_id == 0 && shards_total == 0 && first_shard == 0 && entry_count == 0;
    }
    let end = usize::from(first_shard) + entry_count;
    node_id != 0
        && shards_total != 0
        && u32::from(shards_total) <= SHARDS_MAX
        && (entry_count == 0 || end <= usize::from(shards_total))
}

impl<'a> ShardStatusReply<'a> {
    /// Entries a reply to a SHARD_STATUS datagram of `request_len` bytes may carry, so that
    /// the reply is no longer than the request (spec §2.2): 26 for a request padded to
    /// [`SHARD_STATUS_REQUEST_LEN`], 0 for one of `REQUEST_LEN_MIN` (76) bytes.
    pub const fn entries_that_fit(request_len: usize) -> usize {
        let room = request_len.saturating_sub(HEADER_LEN + SHARD_STATUS_REPLY_FIXED_LEN)
            / SHARD_STATUS_ENTRY_LEN;
        if room < SHARD_STATUS_ENTRIES_MAX {
            room
        } else {
            SHARD_STATUS_ENTRIES_MAX
        }
    }

    /// The datagram length [`ShardStatusReply::encode`] writes: `48 + 44 × entries`.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + SHARD_STATUS_REPLY_FIXED_LEN
            + self.entries.len().saturating_mul(SHARD_STATUS_ENTRY_LEN)
    }

    /// Decodes a SHARD_STATUS_REPLY (spec §3.2, §5.6). Never panics; never allocates. Any
    /// other reply type fails with [`DecodeError::UnknownType`].
    pub fn decode(datagram: &'a [u8]) -> Result<ShardStatusReply<'a>, DecodeError> {
        // Refuses flags too: HOLDER_TRUNCATED and QUEUED belong to the lock replies.
        let header = header::decode(datagram, Direction::Reply, reads_shard_status_reply)?;
        debug_assert!(header.flags.is_empty());
        let body = &datagram[HEADER_LEN..HEADER_LEN + usize::from(header.body_len)];
        if body.len() < SHARD_STATUS_REPLY_FIXED_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let count = u16_at(body, field::ENTRY_COUNT.start);
        let entries_len = usize::from(count) * SHARD_STATUS_ENTRY_LEN;
        if SHARD_STATUS_REPLY_FIXED_LEN + entries_len != body.len() {
            return Err(DecodeError::BadBodyLength);
        }
        let status = Status::from_wire(u16_at(body, field::STATUS.start))
            .ok_or(DecodeError::UnknownStatus)?;
        let node_id = u64_at(body, field::NODE_ID.start);
        let shards_total = u16_at(body, field::SHARDS_TOTAL.start);
        let first_shard = u16_at(body, field::FIRST_SHARD.start);
        if !page_is_consistent(
            status,
            node_id,
            shards_total,
            first_shard,
            usize::from(count),
        ) {
            return Err(DecodeError::BadShardStatus);
        }
        let bytes = &body[SHARD_STATUS_REPLY_FIXED_LEN..];
        for (i, raw) in bytes.chunks_exact(SHARD_STATUS_ENTRY_LEN).enumerate() {
            if raw[field::RESERVED] != 0 {
                return Err(DecodeError::ReservedNonZero);
            }
            // `page_is_consistent` bounded first_shard + count by shards_total <= 4096.
            let expected_shard = usize::from(first_shard) + i;
            let role = ShardRole::from_wire(raw[field::ROLE]);
            if role.is_none()
                || usize::from(u16_at(raw, field::SHARD.start)) != expected_shard
                || (role == Some(ShardRole::NoReplica) && !no_replica_is_blank(raw))
            {
                return Err(DecodeError::BadShardStatus);
            }
        }
        header::check_padding(datagram, &header)?;
        Ok(ShardStatusReply {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            status,
            node_id,
            shards_total,
            first_shard,
            entries: ShardStatusEntries::from_wire(bytes, count),
        })
    }

    /// Encodes the reply (unpadded). Returns the datagram length. Refuses
    /// ([`EncodeError::BadShardStatus`]) a page whose fields disagree, as
    /// [`ShardStatusReply::decode`] would; more than [`SHARD_STATUS_ENTRIES_MAX`] entries are
    /// [`EncodeError::TooLong`]. The caller keeps the reply within the request's length with
    /// [`ShardStatusReply::entries_that_fit`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let count = self.entries.len();
        if count > SHARD_STATUS_ENTRIES_MAX {
            return Err(EncodeError::TooLong);
        }
        if !page_is_consistent(
            self.status,
            self.node_id,
            self.shards_total,
            self.first_shard,
            count,
        ) {
            return Err(EncodeError::BadShardStatus);
        }
        let len = self.encoded_len();
        debug_assert!(len <= DATAGRAM_LEN_MAX);
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        header::encode(
            out,
            &Header {
                msg_type: MessageType::ShardStatusReply,
                flags: Flags::empty(),
                body_len: (len - HEADER_LEN) as u16,
                session_id: self.session_id,
                request_id: self.request_id,
                attempt: self.attempt,
            },
        )?;
        let b = &mut out[HEADER_LEN..];
        b[field::STATUS].copy_from_slice(&self.status.to_wire().to_be_bytes());
        b[field::NODE_ID].copy_from_slice(&self.node_id.to_be_bytes());
        b[field::SHARDS_TOTAL].copy_from_slice(&self.shards_total.to_be_bytes());
        b[field::FIRST_SHARD].copy_from_slice(&self.first_shard.to_be_bytes());
        b[field::ENTRY_COUNT].copy_from_slice(&(count as u16).to_be_bytes());
        let slots = b[SHARD_STATUS_REPLY_FIXED_LEN..].chunks_exact_mut(SHARD_STATUS_ENTRY_LEN);
        let mut written = 0;
        for (i, (e, w)) in self.entries.iter().zip(slots).enumerate() {
            if usize::from(e.shard) != usize::from(self.first_shard) + i
                || (e.role == ShardRole::NoReplica && !e.is_blank())
            {
                return Err(EncodeError::BadShardStatus);
            }
            w[field::SHARD].copy_from_slice(&e.shard.to_be_bytes());
            w[field::ROLE] = e.role.to_wire();
            w[field::RESERVED] = 0;
            w[field::LEADER_ID].copy_from_slice(&e.leader_id.to_be_bytes());
            w[field::TERM].copy_from_slice(&e.term.to_be_bytes());
            w[field::COMMIT_INDEX].copy_from_slice(&e.commit_index.to_be_bytes());
            w[field::APPLIED_INDEX].copy_from_slice(&e.applied_index.to_be_bytes());
            w[field::HELD].copy_from_slice(&e.held.to_be_bytes());
            w[field::WAITERS].copy_from_slice(&e.waiters.to_be_bytes());
            written += 1;
        }
        debug_assert_eq!(written, count);
        Ok(len)
    }
}

/// Spec §5.6: a NO_REPLICA entry says nothing but the shard and that role; its fields after
/// the reserved byte (`leader_id` to `waiters`) are zero.
fn no_replica_is_blank(raw: &[u8]) -> bool {
    raw[field::LEADER_ID.start..field::WAITERS.end]
        .iter()
        .all(|&b| b == 0)
}

impl ShardStatusEntry {
    /// Every field but the shard and the role zero, as a NO_REPLICA entry must be (spec §5.6).
    pub fn is_blank(&self) -> bool {
        (
            self.leader_id,
            self.term,
            self.commit_index,
            self.applied_index,
        ) == (0, 0, 0, 0)
            && (self.held, self.waiters) == (0, 0)
    }
}

/// The entries of a reply in this module: see [`Entries`](crate::Entries).
pub type ShardStatusEntries<'a> = Entries<'a, ShardStatusEntry>;

/// Iterator over [`ShardStatusEntries`].
pub type ShardStatusEntryIter<'a> = EntryIter<'a, ShardStatusEntry>;

impl WireEntry for ShardStatusEntry {
    const LEN: usize = SHARD_STATUS_ENTRY_LEN;

    fn read(raw: &[u8]) -> Option<ShardStatusEntry> {
        // Decode checked every role; a reserved value cannot reach here.
        let role = ShardRole::from_wire(raw[field::ROLE])?;
        Some(ShardStatusEntry {
            shard: u16_at(raw, field::SHARD.start),
            role,
            leader_id: u64_at(raw, field::LEADER_ID.start),
            term: u64_at(raw, field::TERM.start),
            commit_index: u64_at(raw, field::COMMIT_INDEX.start),
            applied_index: u64_at(raw, field::APPLIED_INDEX.start),
            held: u32_at(raw, field::HELD.start),
            waiters: u32_at(raw, field::WAITERS.start),
        })
    }
}
