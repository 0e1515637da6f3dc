//! HOLDS and HOLDS_REPLY (spec §4.13, §5.10): who holds what, one shard at a time, for
//! operators (`udplock status --holders`).
//!
//! ```text
//! HOLDS        header (type 0x0C) | shard u16 | prefix_len u8 | reserved u8 | cursor u64
//!              | prefix (prefix_len) | zero padding
//! HOLDS_REPLY  header (type 0x8C) | status u16 | hint_kind u8 | entry_count u8 | shard u16
//!              | shards u16 | cursor u64 | next_cursor u64 | hint (20, as spec §5.2)
//!              | entry × entry_count  (no padding)
//! entry (22+)  fencing_token u64 | hold_count u32 | lease_ms u32 | waiter_count u32
//!              | rlen u8 | clen u8 | resource_id (rlen) | client_id (clen)
//! ```
//!
//! The shard's leader answers from its applied lock table: the holds whose fencing token is
//! at least `cursor`, in increasing token order, whose holder's client id starts with
//! `prefix` (every hold when it is empty), as many as fit in a datagram no longer than the
//! request (no amplification, spec §2.2), and in `next_cursor` the cursor to ask with for the
//! rest (0: the shard has no hold left past this page). Paging by fencing token keeps a page
//! from skipping or repeating a hold that lasts the whole walk: a hold keeps its token while it
//! lasts (re-entry and renewal do not change it), and a new one gets a larger token than every
//! earlier one of its shard (spec §6.2), so it can only appear ahead of the cursor. A client
//! pads HOLDS to [`HOLDS_REQUEST_LEN`] (1200 bytes).
//!
//! The reply's fixed part is laid out as every lock reply's at the bytes they share (status at
//! 0, hint_kind at 2, the hint at 24..44, spec §5.1, §5.2), and is 44 bytes like theirs, so
//! a reply without entries is 76 bytes: every request a server answers pays for it.
//!
//! Decoding checks the layout *and* the page's consistency (tokens non-zero, increasing, none
//! below the cursor; `next_cursor` 0, or at least the cursor and past every listed token; ids and hold
//! counts non-zero; the shard below the shard count; with another status than OK every field
//! zero; never an address token), so what decodes is canonical: re-encoding it gives the
//! same bytes. Whether each entry's client id starts with the prefix and its resource belongs
//! to the shard the client checks: the decoder does not know the request.

use core::fmt;

use crate::be::{u16_at, u32_at, u64_at};
use crate::header::{self, Direction, Header, HeaderIds};
use crate::registry::{Flags, MessageType, Status};
use crate::reply::{decode_hint, encode_hint, Hint};
use crate::{
    DecodeError, EncodeError, DATAGRAM_LEN_MAX, HEADER_LEN, ID_LEN_MAX, REPLY_BODY_FIXED_LEN,
    REQUEST_LEN_MIN, SHARDS_MAX,
};

/// Fixed part of a HOLDS body: shard, prefix_len, reserved, cursor.
pub const HOLDS_FIXED_LEN: usize = 12;
/// Longest client-id prefix a HOLDS carries: as long as a client id.
pub const HOLDS_PREFIX_LEN_MAX: usize = ID_LEN_MAX;
/// Length a client pads HOLDS to: the longest datagram, so that the reply can carry the most
/// holds (spec §2.2 rule 4).
pub const HOLDS_REQUEST_LEN: usize = DATAGRAM_LEN_MAX;
/// Fixed part of a HOLDS_REPLY body, 44 bytes like every lock reply's (spec §5.10).
pub const HOLDS_REPLY_FIXED_LEN: usize = REPLY_BODY_FIXED_LEN;
/// Fixed part of one HOLDS_REPLY entry, before its two ids.
pub const HOLD_ENTRY_FIXED_LEN: usize = 22;
/// Longest HOLDS_REPLY entry: two ids of 255 bytes.
pub const HOLD_ENTRY_LEN_MAX: usize = HOLD_ENTRY_FIXED_LEN + 2 * ID_LEN_MAX;
/// Most entries one HOLDS_REPLY carries: those of the shortest length (two 1-byte ids) that fit
/// in [`DATAGRAM_LEN_MAX`]. `entry_count` is one byte.
pub const HOLDS_ENTRIES_MAX: usize =
    (DATAGRAM_LEN_MAX - HEADER_LEN - HOLDS_REPLY_FIXED_LEN) / (HOLD_ENTRY_FIXED_LEN + 2);

const _: () = assert!(HOLDS_FIXED_LEN == 2 + 1 + 1 + 8);
const _: () = assert!(HOLD_ENTRY_FIXED_LEN == 8 + 4 + 4 + 4 + 1 + 1);
const _: () = assert!(HOLDS_ENTRIES_MAX == 46);
const _: () = assert!(HOLDS_ENTRIES_MAX <= u8::MAX as usize);
// The longest HOLDS (a 255-byte prefix) fits in a datagram.
const _: () = assert!(HEADER_LEN + HOLDS_FIXED_LEN + HOLDS_PREFIX_LEN_MAX <= DATAGRAM_LEN_MAX);
// A reply without entries fits in every request a server answers (spec §2.2 rule 3).
const _: () = assert!(HEADER_LEN + HOLDS_REPLY_FIXED_LEN <= REQUEST_LEN_MIN);
// A full-length request pays for at least one entry of the longest kind.
const _: () = assert!(HEADER_LEN + HOLDS_REPLY_FIXED_LEN + HOLD_ENTRY_LEN_MAX <= HOLDS_REQUEST_LEN);

/// Byte offsets of the HOLDS and HOLDS_REPLY fields: the request's and the reply's fixed parts
/// relative to the body's first byte, the entry fields relative to the entry's first byte.
pub mod field {
    use core::ops::Range;
    /// Request body: `shard`, u16, the shard whose holds are listed (spec §4.13).
    pub const SHARD_REQUEST: Range<usize> = 0..2;
    /// Request body: `prefix_len`, u8, length of `prefix`, 0 for every hold (spec §4.13).
    pub const PREFIX_LEN: usize = 2;
    /// Request body: reserved, zero (`ReservedNonZero`).
    pub const RESERVED_REQUEST: usize = 3;
    /// Request body: `cursor`, u64, the smallest fencing token the page may list (spec §4.13).
    pub const CURSOR_REQUEST: Range<usize> = 4..12;
    /// Request body: `prefix`, the client-id prefix (spec §4.13).
    pub const PREFIX: usize = 12;
    /// Reply body: `status`, u16, as in every reply (spec §5.1, §5.10).
    pub const STATUS: Range<usize> = 0..2;
    /// Reply body: `hint_kind`, u8, as in every reply (spec §5.2).
    pub const HINT_KIND: usize = 2;
    /// Reply body: `entry_count`, u8, entries after the fixed part (spec §5.10).
    pub const ENTRY_COUNT: usize = 3;
    /// Reply body: `shard`, u16, the request's, copied; 0 unless OK (spec §5.10).
    pub const SHARD: Range<usize> = 4..6;
    /// Reply body: `shards`, u16, the answering node's shard count; 0 unless OK (spec §5.10).
    pub const SHARDS: Range<usize> = 6..8;
    /// Reply body: `cursor`, u64, the request's, copied; 0 unless OK (spec §5.10).
    pub const CURSOR: Range<usize> = 8..16;
    /// Reply body: `next_cursor`, u64, the cursor to ask with for the rest; 0 when the page
    /// ends the shard's holds (spec §5.10).
    pub const NEXT_CURSOR: Range<usize> = 16..24;
    /// Reply body: `hint`, 20 bytes laid out by `hint_kind` (spec §5.2).
    pub const HINT: Range<usize> = 24..44;
    /// Entry: `fencing_token`, u64, the hold's token (spec §6.2).
    pub const TOKEN: Range<usize> = 0..8;
    /// Entry: `hold_count`, u32, re-entrant holds, at least 1.
    pub const HOLD_COUNT: Range<usize> = 8..12;
    /// Entry: `lease_ms`, u32, the hold's remaining lease at the leader (as STATUS's).
    pub const LEASE_MS: Range<usize> = 12..16;
    /// Entry: `waiter_count`, u32, ACQUIREs queued on the resource.
    pub const WAITER_COUNT: Range<usize> = 16..20;
    /// Entry: `rlen`, u8, length of the resource id, 1 to 255.
    pub const RLEN: usize = 20;
    /// Entry: `clen`, u8, length of the holder's client id, 1 to 255.
    pub const CLEN: usize = 21;
    /// Entry: the resource id, then the client id.
    pub const IDS: usize = 22;
}

const _: () = assert!(field::PREFIX == HOLDS_FIXED_LEN);
const _: () = assert!(field::HINT.end == HOLDS_REPLY_FIXED_LEN);
const _: () = assert!(field::HINT_KIND == crate::reply::field::HINT_KIND);
const _: () = assert!(field::HINT.start == crate::reply::field::HINT.start);
const _: () = assert!(field::IDS == HOLD_ENTRY_FIXED_LEN);

/// A decoded HOLDS request; the prefix borrows from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldsRequest<'a> {
    /// Non-zero; any value (the request is read-only and creates no session).
    pub session_id: u64,
    /// Non-zero; a client takes a new one per page.
    pub request_id: u64,
    /// 0 on the first send, +1 per retransmission.
    pub attempt: u16,
    /// The shard whose holds are listed (below the node's shard count, else
    /// INVALID_ARGUMENT).
    pub shard: u16,
    /// The page lists holds whose fencing token is at least this (0: from the start).
    pub cursor: u64,
    /// Only holds whose holder's client id starts with these bytes; empty: every hold.
    pub prefix: &'a [u8],
}

impl<'a> HoldsRequest<'a> {
    /// Decodes a HOLDS datagram (spec §3.2, §4.13). Never panics; never allocates. Any other
    /// request type fails with [`DecodeError::UnknownType`].
    pub fn decode(datagram: &'a [u8]) -> Result<HoldsRequest<'a>, DecodeError> {
        let header = header::decode(datagram, Direction::Request, |t| t == MessageType::Holds)?;
        let body = &datagram[HEADER_LEN..HEADER_LEN + usize::from(header.body_len)];
        if body.len() < HOLDS_FIXED_LEN
            || body.len() != HOLDS_FIXED_LEN + usize::from(body[field::PREFIX_LEN])
        {
            return Err(DecodeError::BadBodyLength);
        }
        if body[field::RESERVED_REQUEST] != 0 {
            return Err(DecodeError::ReservedNonZero);
        }
        header::check_padding(datagram, &header)?;
        Ok(HoldsRequest {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            shard: u16_at(body, field::SHARD_REQUEST.start),
            cursor: u64_at(body, field::CURSOR_REQUEST.start),
            prefix: &body[field::PREFIX..],
        })
    }

    /// Encodes the request padded to [`HOLDS_REQUEST_LEN`], as a client sends it. Returns the
    /// datagram length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.encode_padded(out, HOLDS_REQUEST_LEN)
    }

    /// Encodes the request, then zero padding up to `len` bytes (at least the body's end).
    /// For tests and tools; clients use [`HoldsRequest::encode`]. A prefix longer than
    /// [`HOLDS_PREFIX_LEN_MAX`] is [`EncodeError::BadIdLength`].
    pub fn encode_padded(&self, out: &mut [u8], len: usize) -> Result<usize, EncodeError> {
        if self.prefix.len() > HOLDS_PREFIX_LEN_MAX {
            return Err(EncodeError::BadIdLength);
        }
        let mut body = [0u8; HOLDS_FIXED_LEN + HOLDS_PREFIX_LEN_MAX];
        body[field::SHARD_REQUEST].copy_from_slice(&self.shard.to_be_bytes());
        body[field::PREFIX_LEN] = self.prefix.len() as u8;
        body[field::CURSOR_REQUEST].copy_from_slice(&self.cursor.to_be_bytes());
        let body_len = HOLDS_FIXED_LEN + self.prefix.len();
        body[field::PREFIX..body_len].copy_from_slice(self.prefix);
        let ids = HeaderIds {
            session_id: self.session_id,
            request_id: self.request_id,
            attempt: self.attempt,
        };
        header::encode_fixed_request(out, MessageType::Holds, ids, &body[..body_len], len)
    }
}

/// One hold as the shard's leader's applied table holds it (spec §5.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldEntry<'a> {
    /// The hold's fencing token (non-zero): what the page is ordered by.
    pub fencing_token: u64,
    /// Re-entrant holds (at least 1).
    pub hold_count: u32,
    /// The hold's remaining lease at the leader, in whole milliseconds rounded down.
    pub lease_ms: u32,
    /// ACQUIREs queued on the resource.
    pub waiter_count: u32,
    /// The resource id (1 to 255 bytes, raw: print it escaped).
    pub resource: &'a [u8],
    /// The holder's client id (1 to 255 bytes, raw: print it escaped).
    pub client: &'a [u8],
}

impl HoldEntry<'_> {
    /// Bytes of this entry on the wire: 22 plus the two ids.
    pub const fn encoded_len(&self) -> usize {
        HOLD_ENTRY_FIXED_LEN + self.resource.len() + self.client.len()
    }
}

/// The entries of a HOLDS_REPLY: the checked bytes of a decoded datagram, or the caller's
/// slice of values to encode. Two lists are equal when they hold the same entries in order.
#[derive(Clone, Copy)]
pub struct HoldEntries<'a> {
    repr: EntriesRepr<'a>,
}

#[derive(Clone, Copy)]
enum EntriesRepr<'a> {
    /// `count` entries, back to back, each checked by [`HoldsReply::decode`].
    Wire {
        bytes: &'a [u8],
        count: u8,
    },
    Values(&'a [HoldEntry<'a>]),
}

impl<'a> HoldEntries<'a> {
    /// No entries.
    pub const fn empty() -> HoldEntries<'a> {
        HoldEntries {
            repr: EntriesRepr::Values(&[]),
        }
    }

    /// Entries to encode.
    pub const fn from_slice(entries: &'a [HoldEntry<'a>]) -> HoldEntries<'a> {
        HoldEntries {
            repr: EntriesRepr::Values(entries),
        }
    }

    /// Number of entries.
    pub const fn len(&self) -> usize {
        match self.repr {
            EntriesRepr::Wire { count, .. } => count as usize,
            EntriesRepr::Values(v) => v.len(),
        }
    }

    /// True if there is no entry.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in order.
    pub fn iter(&self) -> HoldEntryIter<'a> {
        HoldEntryIter { repr: self.repr }
    }
}

impl PartialEq for HoldEntries<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for HoldEntries<'_> {}

impl fmt::Debug for HoldEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for HoldEntries<'a> {
    type Item = HoldEntry<'a>;
    type IntoIter = HoldEntryIter<'a>;
    fn into_iter(self) -> HoldEntryIter<'a> {
        self.iter()
    }
}

/// Iterator over [`HoldEntries`].
#[derive(Clone)]
pub struct HoldEntryIter<'a> {
    /// What is left to yield.
    repr: EntriesRepr<'a>,
}

impl<'a> Iterator for HoldEntryIter<'a> {
    type Item = HoldEntry<'a>;

    fn next(&mut self) -> Option<HoldEntry<'a>> {
        match &mut self.repr {
            EntriesRepr::Values(v) => {
                let (first, rest) = v.split_first()?;
                *v = rest;
                Some(*first)
            }
            EntriesRepr::Wire { bytes, count } => {
                if *count == 0 {
                    return None;
                }
                let (entry, len) = read_entry(bytes)?;
                *bytes = bytes.get(len..)?;
                *count -= 1;
                Some(entry)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = match self.repr {
            EntriesRepr::Wire { count, .. } => usize::from(count),
            EntriesRepr::Values(v) => v.len(),
        };
        (left, Some(left))
    }
}

impl ExactSizeIterator for HoldEntryIter<'_> {}

/// The entry at the start of `bytes` and its length; `None` if it runs past the end.
fn read_entry(bytes: &[u8]) -> Option<(HoldEntry<'_>, usize)> {
    let fixed = bytes.get(..HOLD_ENTRY_FIXED_LEN)?;
    let rlen = usize::from(fixed[field::RLEN]);
    let clen = usize::from(fixed[field::CLEN]);
    let len = HOLD_ENTRY_FIXED_LEN + rlen + clen;
    let ids = bytes.get(field::IDS..len)?;
    let entry = HoldEntry {
        fencing_token: u64_at(fixed, field::TOKEN.start),
        hold_count: u32_at(fixed, field::HOLD_COUNT.start),
        lease_ms: u32_at(fixed, field::LEASE_MS.start),
        waiter_count: u32_at(fixed, field::WAITER_COUNT.start),
        resource: &ids[..rlen],
        client: &ids[rlen..],
    };
    Some((entry, len))
}

/// A HOLDS_REPLY: a decoded view whose entries borrow from the datagram, or a value to encode
/// whose entries borrow from the caller's slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldsReply<'a> {
    /// Copied from the request.
    pub session_id: u64,
    /// Copied from the request.
    pub request_id: u64,
    /// The attempt of the request copy answered.
    pub attempt: u16,
    /// OK, or why not (NOT_LEADER, OVERLOADED, INVALID_ARGUMENT, ...): then every field below
    /// but `hint` is zero and there is no entry.
    pub status: Status,
    /// Where or when to try again (spec §5.2): a leader with NOT_LEADER, a delay with
    /// OVERLOADED. Never an address token; none with OK.
    pub hint: Hint,
    /// The request's shard, echoed.
    pub shard: u16,
    /// The answering node's shard count (1 to [`SHARDS_MAX`], above `shard`).
    pub shards: u16,
    /// The request's cursor, echoed.
    pub cursor: u64,
    /// The cursor to ask with for the rest of the shard's holds (at least `cursor` and above
    /// every listed token), or 0 when there is no hold past this page.
    pub next_cursor: u64,
    /// Holds with tokens at least `cursor`, in increasing token order.
    pub entries: HoldEntries<'a>,
}

/// Whether a page's fields agree with each other (spec §5.10).
fn page_is_consistent<'e>(
    r: &HoldsReply<'_>,
    entries: impl Iterator<Item = HoldEntry<'e>>,
) -> bool {
    if r.status != Status::Ok {
        return r.shard == 0
            && r.shards == 0
            && r.cursor == 0
            && r.next_cursor == 0
            && r.entries.is_empty()
            && !matches!(r.hint, Hint::AddressToken(_));
    }
    if r.hint != Hint::None
        || r.shards == 0
        || u32::from(r.shards) > SHARDS_MAX
        || r.shard >= r.shards
    {
        return false;
    }
    // Tokens non-zero, at least the cursor and above the one before; next_cursor above them
    // all and above the cursor. `floor` is the smallest token the next entry may have.
    let mut floor = r.cursor.max(1);
    for e in entries {
        let ids_ok = (1..=ID_LEN_MAX).contains(&e.resource.len())
            && (1..=ID_LEN_MAX).contains(&e.client.len());
        if e.fencing_token < floor || e.hold_count == 0 || !ids_ok {
            return false;
        }
        match e.fencing_token.checked_add(1) {
            Some(next) => floor = next,
            // u64::MAX, the last possible token: nothing may follow it.
            None => return r.next_cursor == 0,
        }
    }
    // A page without entries may stay at its cursor: its request was too short for the first
    // hold (a client sees no progress and stops, spec §4.13).
    r.next_cursor == 0 || r.next_cursor >= floor
}

impl<'a> HoldsReply<'a> {
    /// A reply carrying only `status` (and `hint`): every other field zero, no entry (what a
    /// status other than OK requires, spec §5.10).
    pub const fn refusal(
        request: &HoldsRequest<'_>,
        status: Status,
        hint: Hint,
    ) -> HoldsReply<'static> {
        HoldsReply {
            session_id: request.session_id,
            request_id: request.request_id,
            attempt: request.attempt,
            status,
            hint,
            shard: 0,
            shards: 0,
            cursor: 0,
            next_cursor: 0,
            entries: HoldEntries::empty(),
        }
    }

    /// The datagram length [`HoldsReply::encode`] writes: 76 plus each entry's length.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + HOLDS_REPLY_FIXED_LEN
            + self.entries.iter().map(|e| e.encoded_len()).sum::<usize>()
    }

    /// Decodes a HOLDS_REPLY (spec §3.2, §5.10). Never panics; never allocates. Any other
    /// reply type fails with [`DecodeError::UnknownType`].
    pub fn decode(datagram: &'a [u8]) -> Result<HoldsReply<'a>, DecodeError> {
        // Refuses flags too: HOLDER_TRUNCATED and QUEUED belong to the lock replies.
        let header = header::decode(datagram, Direction::Reply, |t| t == MessageType::HoldsReply)?;
        let body = &datagram[HEADER_LEN..HEADER_LEN + usize::from(header.body_len)];
        if body.len() < HOLDS_REPLY_FIXED_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let count = body[field::ENTRY_COUNT];
        let bytes = &body[HOLDS_REPLY_FIXED_LEN..];
        // The entries must fill the rest of the body exactly.
        let mut rest = bytes;
        for _ in 0..count {
            let (_, len) = read_entry(rest).ok_or(DecodeError::BadBodyLength)?;
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            return Err(DecodeError::BadBodyLength);
        }
        let status = Status::from_wire(u16_at(body, field::STATUS.start))
            .ok_or(DecodeError::UnknownStatus)?;
        let hint = decode_hint(body)?;
        let reply = HoldsReply {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            status,
            hint,
            shard: u16_at(body, field::SHARD.start),
            shards: u16_at(body, field::SHARDS.start),
            cursor: u64_at(body, field::CURSOR.start),
            next_cursor: u64_at(body, field::NEXT_CURSOR.start),
            entries: HoldEntries {
                repr: EntriesRepr::Wire { bytes, count },
            },
        };
        if matches!(hint, Hint::AddressToken(_)) {
            // No HOLDS carries an address token, so no RETRY answers one (spec §5.2).
            return Err(DecodeError::BadHintKind);
        }
        if !page_is_consistent(&reply, reply.entries.iter()) {
            return Err(DecodeError::BadHolds);
        }
        header::check_padding(datagram, &header)?;
        Ok(reply)
    }

    /// Encodes the reply (unpadded). Returns the datagram length. Refuses
    /// ([`EncodeError::BadHolds`]) a page whose fields disagree, as [`HoldsReply::decode`]
    /// would; more than [`HOLDS_ENTRIES_MAX`] entries, or more bytes than
    /// [`DATAGRAM_LEN_MAX`], are [`EncodeError::TooLong`]. The caller keeps the reply within the
    /// request's length (spec §2.2), adding entries while [`HoldsReply::encoded_len`] allows.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let count = self.entries.len();
        if count > HOLDS_ENTRIES_MAX {
            return Err(EncodeError::TooLong);
        }
        if !page_is_consistent(self, self.entries.iter()) {
            return Err(EncodeError::BadHolds);
        }
        let len = self.encoded_len();
        if len > DATAGRAM_LEN_MAX {
            return Err(EncodeError::TooLong);
        }
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        header::encode(
            out,
            &Header {
                msg_type: MessageType::HoldsReply,
                flags: Flags::empty(),
                body_len: (len - HEADER_LEN) as u16,
                session_id: self.session_id,
                request_id: self.request_id,
                attempt: self.attempt,
            },
        )?;
        let b = &mut out[HEADER_LEN..];
        b[field::STATUS].copy_from_slice(&self.status.to_wire().to_be_bytes());
        b[field::ENTRY_COUNT] = count as u8;
        b[field::SHARD].copy_from_slice(&self.shard.to_be_bytes());
        b[field::SHARDS].copy_from_slice(&self.shards.to_be_bytes());
        b[field::CURSOR].copy_from_slice(&self.cursor.to_be_bytes());
        b[field::NEXT_CURSOR].copy_from_slice(&self.next_cursor.to_be_bytes());
        encode_hint(b, self.hint);
        let mut at = HOLDS_REPLY_FIXED_LEN;
        for e in self.entries.iter() {
            let w = &mut b[at..at + e.encoded_len()];
            w[field::TOKEN].copy_from_slice(&e.fencing_token.to_be_bytes());
            w[field::HOLD_COUNT].copy_from_slice(&e.hold_count.to_be_bytes());
            w[field::LEASE_MS].copy_from_slice(&e.lease_ms.to_be_bytes());
            w[field::WAITER_COUNT].copy_from_slice(&e.waiter_count.to_be_bytes());
            w[field::RLEN] = e.resource.len() as u8;
            w[field::CLEN] = e.client.len() as u8;
            let (resource, client) = w[field::IDS..].split_at_mut(e.resource.len());
            resource.copy_from_slice(e.resource);
            client.copy_from_slice(e.client);
            at += e.encoded_len();
        }
        debug_assert_eq!(at + HEADER_LEN, len);
        Ok(len)
    }
}
