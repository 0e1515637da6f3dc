//! MEMBERS and MEMBERS_REPLY (spec §4.9, §5.8): one cluster node's member table as its SWIM
//! member holds it (spec §8.12), for operators (`udplock status` without a resource).
//!
//! ```text
//! MEMBERS        header (type 0x08) | first_id u64 | zero padding
//! MEMBERS_REPLY  header (type 0x88) | status u16 | node_id u64 | members_total u32
//!                | first_id u64 | next_id u64 | entry_count u16 | entry × entry_count  (no padding)
//! entry (36)     id u64 | incarnation u64 | state u8 | addr (19, as SWIM's UPDATE)
//! addr           family u8 (4 | 6) | address (16: IPv4 in the first 4, then zeros) | port u16
//! ```
//!
//! Any node answers from its own table at that instant: nothing is logged, remembered or
//! changed. A page lists the members whose id is at least `first_id`, in increasing id order,
//! as many as fit in a datagram no longer than the request (no amplification, spec §2.2), and
//! names in `next_id` the id to ask from for the rest (0: the page ends the table). Paging by
//! id rather than by position keeps a page from skipping or repeating a member when the table
//! changes between two pages. A client pads the request to [`MEMBERS_REQUEST_LEN`] (1200
//! bytes, room for [`MEMBERS_ENTRIES_MAX`] = 31 entries).
//!
//! Decoding checks the layout *and* the page's consistency (ids non-zero, increasing, none
//! below `first_id`, `next_id` past the last one; no more entries than `members_total`; a
//! known state; a well-formed address), so what decodes is canonical: re-encoding it gives
//! the same bytes.

use core::net::SocketAddr;

use crate::be::{u16_at, u32_at, u64_at};
use crate::entries::{Entries, EntryIter, WireEntry};
use crate::header::{self, Direction, Header, HeaderIds};
use crate::registry::{Flags, MessageType, Status};
use crate::swim::{read_addr, write_addr, SwimState, SWIM_ADDR_LEN};
use crate::{DecodeError, EncodeError, DATAGRAM_LEN_MAX, HEADER_LEN};

/// Body of a MEMBERS request: `first_id` (u64).
pub const MEMBERS_BODY_LEN: usize = 8;
/// Length a client pads MEMBERS to: the longest datagram, so that the reply can carry the
/// most entries (spec §2.2 rule 4).
pub const MEMBERS_REQUEST_LEN: usize = DATAGRAM_LEN_MAX;
/// Fixed part of a MEMBERS_REPLY body: status, node_id, members_total, first_id, next_id,
/// entry_count.
pub const MEMBERS_REPLY_FIXED_LEN: usize = 32;
/// One entry of a MEMBERS_REPLY: id, incarnation, state, address.
pub const MEMBERS_ENTRY_LEN: usize = 8 + 8 + 1 + SWIM_ADDR_LEN;
/// Most entries one MEMBERS_REPLY carries: those that fit in [`DATAGRAM_LEN_MAX`].
pub const MEMBERS_ENTRIES_MAX: usize =
    (DATAGRAM_LEN_MAX - HEADER_LEN - MEMBERS_REPLY_FIXED_LEN) / MEMBERS_ENTRY_LEN;

const _: () = assert!(MEMBERS_REPLY_FIXED_LEN == 2 + 8 + 4 + 8 + 8 + 2);
const _: () = assert!(MEMBERS_ENTRY_LEN == 36);
const _: () = assert!(MEMBERS_ENTRIES_MAX == 31);
const _: () = assert!(MEMBERS_REQUEST_LEN <= DATAGRAM_LEN_MAX);
// The reply to a full-length request, with the most entries, fits in that request.
const _: () = assert!(
    HEADER_LEN + MEMBERS_REPLY_FIXED_LEN + MEMBERS_ENTRIES_MAX * MEMBERS_ENTRY_LEN
        <= MEMBERS_REQUEST_LEN
);
// Even the shortest request a server answers pays for a reply without entries.
const _: () = assert!(HEADER_LEN + MEMBERS_REPLY_FIXED_LEN <= crate::REQUEST_LEN_MIN);

/// Byte offsets of the MEMBERS and MEMBERS_REPLY fields: the fixed parts relative to the
/// body's first byte, the entry fields relative to the entry's first byte.
pub mod field {
    use core::ops::Range;
    /// Request body: `first_id`, u64, the lowest member id the page lists (spec §4.9).
    pub const FIRST_ID_REQUEST: Range<usize> = 0..8;
    /// Reply body: `status`, u16; OK, or another status with every field zero (spec §5.8).
    pub const STATUS: Range<usize> = 0..2;
    /// Reply body: `node_id`, u64, the answering node (spec §5.8, §8.1).
    pub const NODE_ID: Range<usize> = 2..10;
    /// Reply body: `members_total`, u32, members of the whole table, saturating (spec §5.8).
    pub const MEMBERS_TOTAL: Range<usize> = 10..14;
    /// Reply body: `first_id`, u64, the request's, copied (spec §5.8).
    pub const FIRST_ID: Range<usize> = 14..22;
    /// Reply body: `next_id`, u64, the `first_id` to ask with for the rest of the table; 0
    /// when the page ends it (spec §5.8).
    pub const NEXT_ID: Range<usize> = 22..30;
    /// Reply body: `entry_count`, u16, entries that follow the fixed part (spec §5.8).
    pub const ENTRY_COUNT: Range<usize> = 30..32;
    /// Entry: `id`, u64, the member's node id, non-zero (spec §5.8).
    pub const ID: Range<usize> = 0..8;
    /// Entry: `incarnation`, u64, the highest the answering node knows (spec §5.8, §8.12).
    pub const INCARNATION: Range<usize> = 8..16;
    /// Entry: `state`, u8: 0 alive, 1 suspect, 2 dead, 3 left (spec §5.8, §8.12).
    pub const STATE: usize = 16;
    /// Entry: the member's address, family, 16 address bytes and port, laid out as in
    /// SWIM's UPDATE (spec §5.8, §8.12).
    pub const ADDR: Range<usize> = 17..36;
}

const _: () = assert!(field::FIRST_ID_REQUEST.end == MEMBERS_BODY_LEN);
const _: () = assert!(field::ENTRY_COUNT.end == MEMBERS_REPLY_FIXED_LEN);
const _: () = assert!(field::ADDR.end == MEMBERS_ENTRY_LEN);
const _: () = assert!(field::ADDR.end - field::ADDR.start == SWIM_ADDR_LEN);

/// One member as the answering node's SWIM table holds it (spec §8.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberEntry {
    /// The member's node id (non-zero).
    pub id: u64,
    /// The highest incarnation the answering node knows for it.
    pub incarnation: u64,
    /// Alive, suspect, dead or left, as the answering node believes.
    pub state: SwimState,
    /// The address the member is reached at (port non-zero; IPv6 without flow label or
    /// scope id, as SWIM's UPDATE carries it).
    pub addr: SocketAddr,
}

/// A decoded MEMBERS request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembersRequest {
    /// Non-zero; any value (the request is read-only and creates no session).
    pub session_id: u64,
    /// Non-zero; a client takes a new one per page.
    pub request_id: u64,
    /// 0 on the first send, +1 per retransmission.
    pub attempt: u16,
    /// The page starts at the first member whose id is at least this (0 or 1: from the
    /// start).
    pub first_id: u64,
}

impl MembersRequest {
    /// Decodes a MEMBERS datagram (spec §3.2, §4.9). Never panics; never allocates. Any other
    /// request type fails with [`DecodeError::UnknownType`].
    pub fn decode(datagram: &[u8]) -> Result<MembersRequest, DecodeError> {
        let header = header::decode_fixed_request(
            datagram,
            |t| t == MessageType::Members,
            MEMBERS_BODY_LEN,
        )?;
        Ok(MembersRequest {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            first_id: u64_at(datagram, HEADER_LEN + field::FIRST_ID_REQUEST.start),
        })
    }

    /// Encodes the request padded to [`MEMBERS_REQUEST_LEN`], as a client sends it. Returns
    /// the datagram length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.encode_padded(out, MEMBERS_REQUEST_LEN)
    }

    /// Encodes the request, then zero padding up to `len` bytes (at least the body's end).
    /// For tests and tools; clients use [`MembersRequest::encode`].
    pub fn encode_padded(&self, out: &mut [u8], len: usize) -> Result<usize, EncodeError> {
        let ids = HeaderIds {
            session_id: self.session_id,
            request_id: self.request_id,
            attempt: self.attempt,
        };
        header::encode_fixed_request(
            out,
            MessageType::Members,
            ids,
            &self.first_id.to_be_bytes(),
            len,
        )
    }
}

/// A MEMBERS_REPLY: a decoded view whose entries borrow from the datagram, or a value to
/// encode whose entries borrow from the caller's slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembersReply<'a> {
    /// Copied from the request.
    pub session_id: u64,
    /// Copied from the request.
    pub request_id: u64,
    /// The attempt of the request copy answered.
    pub attempt: u16,
    /// OK in version 1. Another status carries no data: every field below is zero.
    pub status: Status,
    /// The answering node's id (non-zero with OK).
    pub node_id: u64,
    /// How many members the answering node's whole table holds, itself included (saturating
    /// at `u32::MAX`).
    pub members_total: u32,
    /// The request's `first_id`, echoed.
    pub first_id: u64,
    /// The id to ask from for the rest of the table: the id of the first member at or past
    /// `first_id` that this page leaves out, or 0 when it leaves none out.
    pub next_id: u64,
    /// Members with ids at least `first_id`, in increasing id order.
    pub entries: MemberEntries<'a>,
}

/// Whether a page's fields agree with each other (spec §5.8); `ids` are the entries' ids in
/// page order.
fn page_is_consistent(
    r: (Status, u64, u32, u64, u64),
    ids: impl Iterator<Item = u64>,
    entry_count: usize,
) -> bool {
    let (status, node_id, members_total, first_id, next_id) = r;
    if status != Status::Ok {
        return node_id == 0
            && members_total == 0
            && first_id == 0
            && next_id == 0
            && entry_count == 0;
    }
    if node_id == 0 || entry_count as u64 > u64::from(members_total) {
        return false;
    }
    // Each id non-zero, at least first_id and above the one before; next_id above them all.
    // `None`: an entry was u64::MAX, the last possible id, so nothing may follow it.
    let mut floor = Some(first_id.max(1));
    for id in ids {
        match floor {
            Some(f) if id >= f => floor = id.checked_add(1),
            _ => return false,
        }
    }
    match floor {
        Some(f) => next_id == 0 || next_id >= f,
        None => next_id == 0,
    }
}

impl<'a> MembersReply<'a> {
    /// Entries a reply to a MEMBERS datagram of `request_len` bytes may carry, so that the
    /// reply is no longer than the request (spec §2.2): 31 for a request padded to
    /// [`MEMBERS_REQUEST_LEN`], 0 for one of `REQUEST_LEN_MIN` (76) bytes.
    pub const fn entries_that_fit(request_len: usize) -> usize {
        let room =
            request_len.saturating_sub(HEADER_LEN + MEMBERS_REPLY_FIXED_LEN) / MEMBERS_ENTRY_LEN;
        if room < MEMBERS_ENTRIES_MAX {
            room
        } else {
            MEMBERS_ENTRIES_MAX
        }
    }

    /// The datagram length [`MembersReply::encode`] writes: `64 + 36 × entries`.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + MEMBERS_REPLY_FIXED_LEN + self.entries.len().saturating_mul(MEMBERS_ENTRY_LEN)
    }

    /// Decodes a MEMBERS_REPLY (spec §3.2, §5.8). Never panics; never allocates. Any other
    /// reply type fails with [`DecodeError::UnknownType`].
    pub fn decode(datagram: &'a [u8]) -> Result<MembersReply<'a>, DecodeError> {
        // Refuses flags too: HOLDER_TRUNCATED and QUEUED belong to the lock replies.
        let header = header::decode(datagram, Direction::Reply, |t| {
            t == MessageType::MembersReply
        })?;
        let body = &datagram[HEADER_LEN..HEADER_LEN + usize::from(header.body_len)];
        if body.len() < MEMBERS_REPLY_FIXED_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let count = u16_at(body, field::ENTRY_COUNT.start);
        let entries_len = usize::from(count) * MEMBERS_ENTRY_LEN;
        if MEMBERS_REPLY_FIXED_LEN + entries_len != body.len() {
            return Err(DecodeError::BadBodyLength);
        }
        let status = Status::from_wire(u16_at(body, field::STATUS.start))
            .ok_or(DecodeError::UnknownStatus)?;
        let fixed = (
            status,
            u64_at(body, field::NODE_ID.start),
            u32_at(body, field::MEMBERS_TOTAL.start),
            u64_at(body, field::FIRST_ID.start),
            u64_at(body, field::NEXT_ID.start),
        );
        let bytes = &body[MEMBERS_REPLY_FIXED_LEN..];
        let raw = bytes.chunks_exact(MEMBERS_ENTRY_LEN);
        if !page_is_consistent(fixed, raw.clone().map(|e| u64_at(e, 0)), usize::from(count)) {
            return Err(DecodeError::BadMembers);
        }
        for e in raw {
            if SwimState::from_wire(e[field::STATE]).is_none() {
                return Err(DecodeError::BadMembers);
            }
            read_addr(&e[field::ADDR])?;
        }
        header::check_padding(datagram, &header)?;
        let (status, node_id, members_total, first_id, next_id) = fixed;
        Ok(MembersReply {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            status,
            node_id,
            members_total,
            first_id,
            next_id,
            entries: MemberEntries::from_wire(bytes, count),
        })
    }

    /// Encodes the reply (unpadded). Returns the datagram length. Refuses
    /// ([`EncodeError::BadMembers`]) a page whose fields disagree, as [`MembersReply::decode`]
    /// would, and ([`EncodeError::BadAddress`]) an address the wire cannot carry; more than
    /// [`MEMBERS_ENTRIES_MAX`] entries are [`EncodeError::TooLong`]. The caller keeps the
    /// reply within the request's length with [`MembersReply::entries_that_fit`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let count = self.entries.len();
        if count > MEMBERS_ENTRIES_MAX {
            return Err(EncodeError::TooLong);
        }
        let fixed = (
            self.status,
            self.node_id,
            self.members_total,
            self.first_id,
            self.next_id,
        );
        if !page_is_consistent(fixed, self.entries.iter().map(|e| e.id), count) {
            return Err(EncodeError::BadMembers);
        }
        let len = self.encoded_len();
        debug_assert!(len <= DATAGRAM_LEN_MAX);
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        header::encode(
            out,
            &Header {
                msg_type: MessageType::MembersReply,
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
        b[field::MEMBERS_TOTAL].copy_from_slice(&self.members_total.to_be_bytes());
        b[field::FIRST_ID].copy_from_slice(&self.first_id.to_be_bytes());
        b[field::NEXT_ID].copy_from_slice(&self.next_id.to_be_bytes());
        b[field::ENTRY_COUNT].copy_from_slice(&(count as u16).to_be_bytes());
        let slots = b[MEMBERS_REPLY_FIXED_LEN..].chunks_exact_mut(MEMBERS_ENTRY_LEN);
        for (e, w) in self.entries.iter().zip(slots) {
            w[field::ID].copy_from_slice(&e.id.to_be_bytes());
            w[field::INCARNATION].copy_from_slice(&e.incarnation.to_be_bytes());
            w[field::STATE] = e.state.to_wire();
            write_addr(&mut w[field::ADDR], e.addr)?;
        }
        Ok(len)
    }
}

/// The entries of a reply in this module: see [`Entries`](crate::Entries).
pub type MemberEntries<'a> = Entries<'a, MemberEntry>;

/// Iterator over [`MemberEntries`].
pub type MemberEntryIter<'a> = EntryIter<'a, MemberEntry>;

impl WireEntry for MemberEntry {
    const LEN: usize = MEMBERS_ENTRY_LEN;

    fn read(raw: &[u8]) -> Option<MemberEntry> {
        // Decode checked every state and address; a bad one cannot reach here.
        Some(MemberEntry {
            id: u64_at(raw, field::ID.start),
            incarnation: u64_at(raw, field::INCARNATION.start),
            state: SwimState::from_wire(raw[field::STATE])?,
            addr: read_addr(&raw[field::ADDR]).ok()?,
        })
    }
}
