//! SWIM membership records (spec §8.12): the messages of the membership protocol (Das, Gupta,
//! Motivala 2002, with Lifeguard's NACK), carried as records of the authenticated PEER
//! datagram, so the cluster MAC, incarnations and replay window of spec §8.11 cover them.
//!
//! ```text
//! UPDATE     = id u64 | incarnation u64 | state u8 | addr (19) | from u64        (44 bytes)
//! addr       = family u8 (4 | 6) | address (16: IPv4 in the first 4, then zeros) | port u16
//! PING, ACK  = seq u32 | target u64 | count u8 | UPDATE × count
//! PING_REQ   = seq u32 | target u64 | target addr (19) | count u8 | UPDATE × count
//! NACK       = seq u32
//! PUSH_PULL  = flags u8 (bit 0: answer wanted) | count u16 | UPDATE × count
//! ```
//!
//! One type, [`SwimMessage<U>`], generic over how the update list is held, as
//! [`crate::RaftMessage`] is over its entries: decoding gives a [`SwimView`] whose
//! [`SwimUpdates`] iterates the updates from the datagram's bytes without allocation; the
//! membership core holds a `Vec<SwimUpdate>`. [`crate::PeerWriter::push_swim`] writes either
//! form; [`SwimView::into_owned`] is the one conversion.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::auth::AUTH_TRAILER_LEN;
use crate::be::{u16_at, u32_at, u64_at};
use crate::peer::{PEER_DATAGRAM_LEN_MAX, PEER_RECORD_HEADER_LEN};
use crate::registry::PeerKind;
use crate::{DecodeError, EncodeError, HEADER_LEN};

/// Longest SWIM record body, in bytes: what is left of a PEER datagram
/// ([`PEER_DATAGRAM_LEN_MAX`], 1,400 bytes, never fragmented) after its header, one record
/// header and the authentication trailer = 1400 − 32 − 6 − 56 = 1306. A SWIM message that is
/// the only record of an authenticated PEER datagram therefore never exceeds 1,400 bytes
/// (spec §8.12).
pub const SWIM_MESSAGE_LEN_MAX: usize =
    PEER_DATAGRAM_LEN_MAX - HEADER_LEN - PEER_RECORD_HEADER_LEN - AUTH_TRAILER_LEN;
/// Encoded size of an address: family u8, 16 address bytes (IPv4 in the first 4), port u16.
pub const SWIM_ADDR_LEN: usize = 19;
/// Encoded size of one [`SwimUpdate`]: member id u64, incarnation u64, state u8, address, and
/// the suspecting member's id u64 (zero unless the state is suspect).
pub const SWIM_UPDATE_LEN: usize = 8 + 8 + 1 + SWIM_ADDR_LEN + 8;
/// Body of a PING or ACK before its updates: seq u32, target id u64, update count u8.
pub const SWIM_PING_FIXED_LEN: usize = 4 + 8 + 1;
/// Body of a PING_REQ before its updates: seq u32, target id u64, target address, count u8.
pub const SWIM_PING_REQ_FIXED_LEN: usize = 4 + 8 + SWIM_ADDR_LEN + 1;
/// Body of a NACK: seq u32.
pub const SWIM_NACK_LEN: usize = 4;
/// Body of a PUSH_PULL before its member records: flags u8, count u16.
pub const SWIM_PUSH_PULL_FIXED_LEN: usize = 1 + 2;
/// Most updates a PING, ACK or PING_REQ carries: as many as fit in [`SWIM_MESSAGE_LEN_MAX`]
/// after the largest fixed part (the PING_REQ's), so every piggybacking kind has the same
/// bound; 28. More is refused by the writer and rejected by a receiver (`TooManyUpdates`).
pub const UPDATES_PER_MESSAGE_MAX: usize =
    (SWIM_MESSAGE_LEN_MAX - SWIM_PING_REQ_FIXED_LEN) / SWIM_UPDATE_LEN;
/// Most member records in one PUSH_PULL (one chunk of a full-state exchange): as many as fit
/// in [`SWIM_MESSAGE_LEN_MAX`]; 29. More is refused and rejected (`TooManyUpdates`).
pub const PUSH_PULL_MEMBERS_MAX: usize =
    (SWIM_MESSAGE_LEN_MAX - SWIM_PUSH_PULL_FIXED_LEN) / SWIM_UPDATE_LEN;
/// PUSH_PULL flag bit 0: the receiver answers with its own state. The other bits are zero.
pub const SWIM_PUSH_PULL_REPLY: u8 = 0x01;

const _: () = assert!(SWIM_MESSAGE_LEN_MAX == 1306);
const _: () = assert!(SWIM_UPDATE_LEN == 44);
const _: () = assert!(UPDATES_PER_MESSAGE_MAX == 28);
const _: () = assert!(PUSH_PULL_MEMBERS_MAX == 29);
const _: () = assert!(
    SWIM_PING_REQ_FIXED_LEN + UPDATES_PER_MESSAGE_MAX * SWIM_UPDATE_LEN <= SWIM_MESSAGE_LEN_MAX
);
const _: () = assert!(
    SWIM_PUSH_PULL_FIXED_LEN + PUSH_PULL_MEMBERS_MAX * SWIM_UPDATE_LEN <= SWIM_MESSAGE_LEN_MAX
);
// An ACK's fixed part is no longer than a PING's or a PING_REQ's, so an ACK with no more
// updates than the question it answers is no longer than it (spec §8.3 rule 5).
const _: () = assert!(SWIM_PING_FIXED_LEN <= SWIM_PING_REQ_FIXED_LEN);

/// Byte offsets inside the SWIM record bodies and inside one UPDATE.
pub mod field {
    use core::ops::Range;
    /// PING, ACK, PING_REQ and NACK: `seq`, u32, ties an ACK or NACK to its probe (spec
    /// §8.12).
    pub const SEQ: Range<usize> = 0..4;
    /// PING, ACK and PING_REQ: `target`, u64, the member probed (spec §8.12).
    pub const TARGET: Range<usize> = 4..12;
    /// PING and ACK: `count`, u8, updates that follow (spec §8.12).
    pub const PING_COUNT: usize = 12;
    /// PING_REQ: the target's address, laid out as an UPDATE's (spec §8.12).
    pub const PING_REQ_TARGET_ADDR: Range<usize> = 12..31;
    /// PING_REQ: `count`, u8, updates that follow (spec §8.12).
    pub const PING_REQ_COUNT: usize = 31;
    /// PUSH_PULL: `flags`, u8; bit 0 [`SWIM_PUSH_PULL_REPLY`] asks for the receiver's state
    /// (spec §8.12).
    ///
    /// [`SWIM_PUSH_PULL_REPLY`]: super::SWIM_PUSH_PULL_REPLY
    pub const PUSH_PULL_FLAGS: usize = 0;
    /// PUSH_PULL: `count`, u16, member records that follow (spec §8.12).
    pub const PUSH_PULL_COUNT: Range<usize> = 1..3;
    /// UPDATE, relative to the update's first byte: `id`, u64, the member; non-zero.
    pub const UPDATE_ID: Range<usize> = 0..8;
    /// UPDATE: `incarnation`, u64, the member's incarnation the news is about (spec §8.12).
    pub const UPDATE_INCARNATION: Range<usize> = 8..16;
    /// UPDATE: `state`, u8: 0 alive, 1 suspect, 2 dead, 3 left (spec §8.12).
    pub const UPDATE_STATE: usize = 16;
    /// UPDATE: the member's address (spec §8.12).
    pub const UPDATE_ADDR: Range<usize> = 17..36;
    /// UPDATE: `from`, u64, the suspecting member; non-zero exactly for suspect (spec §8.12).
    pub const UPDATE_FROM: Range<usize> = 36..44;
    /// Address, relative to the address's first byte: `family`, u8, 4 or 6.
    pub const ADDR_FAMILY: usize = 0;
    /// Address: 16 address bytes; an IPv4 address in the first 4, the other 12 zero.
    pub const ADDR_IP: Range<usize> = 1..17;
    /// Address: `port`, u16, non-zero.
    pub const ADDR_PORT: Range<usize> = 17..19;
}

const _: () = assert!(field::PING_COUNT + 1 == SWIM_PING_FIXED_LEN);
const _: () = assert!(field::PING_REQ_COUNT + 1 == SWIM_PING_REQ_FIXED_LEN);
const _: () = assert!(field::PUSH_PULL_COUNT.end == SWIM_PUSH_PULL_FIXED_LEN);
const _: () = assert!(field::UPDATE_FROM.end == SWIM_UPDATE_LEN);
const _: () = assert!(field::ADDR_PORT.end == SWIM_ADDR_LEN);

/// What a member is, as far as the group knows (SWIM §4.2; `Left` is a graceful leave). On the
/// wire: 0 alive, 1 suspect, 2 dead, 3 left; other values are rejected (`BadUpdate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SwimState {
    /// Answering probes, as far as the group knows (wire 0).
    Alive,
    /// A probe failed; declared dead unless it refutes the suspicion with a higher
    /// incarnation before the suspicion timeout (SWIM §4.2; wire 1).
    Suspect,
    /// Confirmed failed (the paper's "Confirm" message).
    Dead,
    /// Left on purpose; never suspected again in this incarnation.
    Left,
}

impl SwimState {
    /// The state's byte on the wire.
    pub const fn to_wire(self) -> u8 {
        match self {
            SwimState::Alive => 0,
            SwimState::Suspect => 1,
            SwimState::Dead => 2,
            SwimState::Left => 3,
        }
    }

    /// The state for a wire byte, or `None` if it names none.
    pub const fn from_wire(raw: u8) -> Option<SwimState> {
        match raw {
            0 => Some(SwimState::Alive),
            1 => Some(SwimState::Suspect),
            2 => Some(SwimState::Dead),
            3 => Some(SwimState::Left),
            _ => None,
        }
    }
}

/// One piece of membership news: the gossip that piggybacks on pings and acks (SWIM §4.1), and
/// one record of a full-state exchange.
///
/// On the wire (spec §8.12): `id` is non-zero (node ids never are, spec §8.1); `from` is
/// non-zero exactly when `state` is suspect; `addr` has a non-zero port, and an IPv6 address
/// has no flow label and no scope id (the wire has no room for them). The writer refuses and
/// a receiver rejects anything else (`BadUpdate`, `BadAddress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwimUpdate {
    /// The member the news is about; non-zero.
    pub id: u64,
    /// The member's address, where it receives PEER datagrams.
    pub addr: SocketAddr,
    /// The member's incarnation the news is about: news of a higher incarnation overrides
    /// news of a lower one (SWIM §4.2).
    pub incarnation: u64,
    /// What the member is at that incarnation.
    pub state: SwimState,
    /// Who suspects `id` (a suspicion's independent confirmations count distinct senders,
    /// Lifeguard §IV.B); zero for other states.
    pub from: u64,
}

/// A SWIM message, generic over how its update list is held: [`SwimUpdates`] when decoded
/// ([`SwimView`]), a `Vec<SwimUpdate>` (or any slice-like list) in the membership core. `seq`
/// ties an ACK or NACK to the probe it answers. On the wire each variant is one PEER record
/// kind (spec §8.12, §10.4) whose `shard` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwimMessage<U> {
    /// "Are you alive?" (SWIM §3.1). `target` names who should answer, so a message that
    /// reaches a different member at a reused address is not taken for an answer.
    Ping {
        /// The prober's probe number; the ACK or NACK that answers carries it back.
        seq: u32,
        /// The member that should answer.
        target: u64,
        /// Membership news piggybacked on the message (SWIM §4.1), at most
        /// [`UPDATES_PER_MESSAGE_MAX`].
        updates: U,
    },
    /// The answer to a PING (or to a PING_REQ naming its receiver), sent by its target; for an
    /// indirect probe, relayed by the intermediary to the original prober under the prober's
    /// `seq`. `target` is the member that was probed.
    Ack {
        /// The `seq` of the PING (or PING_REQ) answered.
        seq: u32,
        /// The member that was probed.
        target: u64,
        /// Membership news piggybacked on the message (SWIM §4.1), at most
        /// [`UPDATES_PER_MESSAGE_MAX`].
        updates: U,
    },
    /// "Probe `target` for me" (SWIM §3.1): the receiver pings `target` at `target_addr` and
    /// relays the ack, or answers NACK once it gave up.
    PingReq {
        /// The prober's probe number; the ACK or NACK that answers carries it back.
        seq: u32,
        /// The member to probe.
        target: u64,
        /// Where to probe it: the prober's view of its address (spec §8.12).
        target_addr: SocketAddr,
        /// Membership news piggybacked on the message (SWIM §4.1), at most
        /// [`UPDATES_PER_MESSAGE_MAX`].
        updates: U,
    },
    /// "I asked and got nothing" (Lifeguard §IV.A): a prober that hears nacks knows the network
    /// to its helpers works, so a failed probe is the target's trouble, not its own.
    Nack {
        /// The `seq` of the PING_REQ whose probe got no answer.
        seq: u32,
    },
    /// One chunk of a full-state exchange (at join and periodically, to heal partitions the
    /// gossip missed). `reply` asks the receiver to answer with its own state.
    PushPull {
        /// The receiver answers with its own state ([`SWIM_PUSH_PULL_REPLY`]).
        reply: bool,
        /// Member records, one per member, at most [`PUSH_PULL_MEMBERS_MAX`].
        members: U,
    },
}

/// A SWIM message as decoded from a PEER record: a view into the datagram, no copy.
pub type SwimView<'a> = SwimMessage<SwimUpdates<'a>>;

/// The updates of a decoded SWIM record: `count` checked UPDATEs back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SwimUpdates<'a> {
    bytes: &'a [u8],
}

impl<'a> SwimUpdates<'a> {
    /// Number of updates.
    pub const fn len(&self) -> usize {
        self.bytes.len() / SWIM_UPDATE_LEN
    }

    /// True if there is none.
    pub const fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The updates in record order.
    pub fn iter(&self) -> SwimUpdateIter<'a> {
        SwimUpdateIter { rest: self.bytes }
    }
}

/// Iterator over [`SwimUpdates`].
#[derive(Clone, Debug)]
pub struct SwimUpdateIter<'a> {
    rest: &'a [u8],
}

impl Iterator for SwimUpdateIter<'_> {
    type Item = SwimUpdate;

    fn next(&mut self) -> Option<SwimUpdate> {
        let (one, rest) = self.rest.split_at_checked(SWIM_UPDATE_LEN)?;
        self.rest = rest;
        // Decoding checked every update; a failure here would only end the iteration.
        read_update(one).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / SWIM_UPDATE_LEN;
        (n, Some(n))
    }
}

/// An update list however a message holds it, as the writer reads it.
/// [`SwimUpdates`] (decoded) and any slice-like list of [`SwimUpdate`] (e.g. a `Vec`) are
/// update lists.
pub trait UpdateList {
    /// The updates in order.
    type Iter<'s>: Iterator<Item = SwimUpdate>
    where
        Self: 's;

    /// The updates in order.
    fn swim_updates(&self) -> Self::Iter<'_>;

    /// Number of updates.
    fn count(&self) -> usize;
}

impl UpdateList for SwimUpdates<'_> {
    type Iter<'s>
        = SwimUpdateIter<'s>
    where
        Self: 's;

    fn swim_updates(&self) -> SwimUpdateIter<'_> {
        SwimUpdateIter { rest: self.bytes }
    }

    fn count(&self) -> usize {
        self.len()
    }
}

impl<C> UpdateList for C
where
    C: core::ops::Deref<Target = [SwimUpdate]>,
{
    type Iter<'s>
        = core::iter::Copied<core::slice::Iter<'s, SwimUpdate>>
    where
        Self: 's;

    fn swim_updates(&self) -> Self::Iter<'_> {
        self.iter().copied()
    }

    fn count(&self) -> usize {
        self.len()
    }
}

impl<U> SwimMessage<U> {
    /// The record kind that carries this message.
    pub const fn kind(&self) -> PeerKind {
        match self {
            SwimMessage::Ping { .. } => PeerKind::SwimPing,
            SwimMessage::Ack { .. } => PeerKind::SwimAck,
            SwimMessage::PingReq { .. } => PeerKind::SwimPingReq,
            SwimMessage::Nack { .. } => PeerKind::SwimNack,
            SwimMessage::PushPull { .. } => PeerKind::SwimPushPull,
        }
    }

    /// The piggybacked gossip of a PING, ACK or PING_REQ; `None` for a NACK and for a
    /// PUSH_PULL (whose member records are a full state, merged apart).
    pub const fn gossip(&self) -> Option<&U> {
        match self {
            SwimMessage::Ping { updates, .. }
            | SwimMessage::Ack { updates, .. }
            | SwimMessage::PingReq { updates, .. } => Some(updates),
            SwimMessage::Nack { .. } | SwimMessage::PushPull { .. } => None,
        }
    }

    /// The same message with its update list (if it has one) replaced by `f` of it.
    pub fn map_updates<V>(self, f: impl FnOnce(U) -> V) -> SwimMessage<V> {
        match self {
            SwimMessage::Ping {
                seq,
                target,
                updates,
            } => SwimMessage::Ping {
                seq,
                target,
                updates: f(updates),
            },
            SwimMessage::Ack {
                seq,
                target,
                updates,
            } => SwimMessage::Ack {
                seq,
                target,
                updates: f(updates),
            },
            SwimMessage::PingReq {
                seq,
                target,
                target_addr,
                updates,
            } => SwimMessage::PingReq {
                seq,
                target,
                target_addr,
                updates: f(updates),
            },
            SwimMessage::Nack { seq } => SwimMessage::Nack { seq },
            SwimMessage::PushPull { reply, members } => SwimMessage::PushPull {
                reply,
                members: f(members),
            },
        }
    }
}

impl<U: UpdateList> SwimMessage<U> {
    /// Size of the record body (the record's `len` field). Saturates instead of overflowing.
    pub fn body_len(&self) -> usize {
        let updates =
            |fixed: usize, u: &U| fixed.saturating_add(u.count().saturating_mul(SWIM_UPDATE_LEN));
        match self {
            SwimMessage::Ping { updates: u, .. } | SwimMessage::Ack { updates: u, .. } => {
                updates(SWIM_PING_FIXED_LEN, u)
            }
            SwimMessage::PingReq { updates: u, .. } => updates(SWIM_PING_REQ_FIXED_LEN, u),
            SwimMessage::Nack { .. } => SWIM_NACK_LEN,
            SwimMessage::PushPull { members, .. } => updates(SWIM_PUSH_PULL_FIXED_LEN, members),
        }
    }

    /// Size of the whole record, its 6-byte header included.
    pub fn record_len(&self) -> usize {
        PEER_RECORD_HEADER_LEN.saturating_add(self.body_len())
    }

    /// The most updates this kind carries: [`PUSH_PULL_MEMBERS_MAX`] for a PUSH_PULL,
    /// [`UPDATES_PER_MESSAGE_MAX`] for the others.
    pub const fn updates_max(&self) -> usize {
        match self {
            SwimMessage::PushPull { .. } => PUSH_PULL_MEMBERS_MAX,
            _ => UPDATES_PER_MESSAGE_MAX,
        }
    }
}

impl<'a> SwimView<'a> {
    /// A copy of this decoded message that owns its updates, collected into `C` (a
    /// `Vec<SwimUpdate>` in the membership core). Every other field is the same. The only
    /// conversion between the two forms; the writer needs none
    /// ([`crate::PeerWriter::push_swim`]).
    pub fn into_owned<C: FromIterator<SwimUpdate>>(self) -> SwimMessage<C> {
        self.map_updates(|u| u.iter().collect())
    }
}

/// Reads an address (spec §8.12): family 4 or 6, an IPv4 address's 12 unused bytes zero, a
/// non-zero port; otherwise `BadAddress`.
pub(crate) fn read_addr(b: &[u8]) -> Result<SocketAddr, DecodeError> {
    let b = b.get(..SWIM_ADDR_LEN).ok_or(DecodeError::BadRecordLength)?;
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[field::ADDR_IP]);
    let port = u16_at(b, field::ADDR_PORT.start);
    if port == 0 {
        return Err(DecodeError::BadAddress);
    }
    let ip = match b[field::ADDR_FAMILY] {
        4 if crate::all_zero(&ip[4..]) => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        6 => IpAddr::V6(Ipv6Addr::from(ip)),
        _ => return Err(DecodeError::BadAddress),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Writes an address, or refuses one the wire cannot carry exactly (port 0; an IPv6 flow
/// label or scope id).
pub(crate) fn write_addr(out: &mut [u8], addr: SocketAddr) -> Result<(), EncodeError> {
    if addr.port() == 0 {
        return Err(EncodeError::BadAddress);
    }
    out[..SWIM_ADDR_LEN].fill(0);
    match addr {
        SocketAddr::V4(a) => {
            out[field::ADDR_FAMILY] = 4;
            out[field::ADDR_IP.start..field::ADDR_IP.start + 4].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            if a.flowinfo() != 0 || a.scope_id() != 0 {
                return Err(EncodeError::BadAddress);
            }
            out[field::ADDR_FAMILY] = 6;
            out[field::ADDR_IP].copy_from_slice(&a.ip().octets());
        }
    }
    out[field::ADDR_PORT].copy_from_slice(&addr.port().to_be_bytes());
    Ok(())
}

/// The UPDATE rules both sides enforce (spec §8.12): a non-zero id, and `from` non-zero
/// exactly for a suspicion.
fn update_ok(u: &SwimUpdate) -> bool {
    u.id != 0 && ((u.state == SwimState::Suspect) == (u.from != 0))
}

/// Reads one UPDATE of exactly [`SWIM_UPDATE_LEN`] bytes.
fn read_update(b: &[u8]) -> Result<SwimUpdate, DecodeError> {
    if b.len() != SWIM_UPDATE_LEN {
        return Err(DecodeError::BadRecordLength);
    }
    let state = SwimState::from_wire(b[field::UPDATE_STATE]).ok_or(DecodeError::BadUpdate)?;
    let u = SwimUpdate {
        id: u64_at(b, field::UPDATE_ID.start),
        incarnation: u64_at(b, field::UPDATE_INCARNATION.start),
        state,
        addr: read_addr(&b[field::UPDATE_ADDR])?,
        from: u64_at(b, field::UPDATE_FROM.start),
    };
    if !update_ok(&u) {
        return Err(DecodeError::BadUpdate);
    }
    Ok(u)
}

/// Reads and checks the body of a SWIM record of `kind` (spec §8.12, in its order); `None` if
/// `kind` is not a SWIM kind.
pub(crate) fn read_swim_body(
    kind: PeerKind,
    body: &[u8],
) -> Option<Result<SwimView<'_>, DecodeError>> {
    let fixed = match kind {
        PeerKind::SwimPing | PeerKind::SwimAck => SWIM_PING_FIXED_LEN,
        PeerKind::SwimPingReq => SWIM_PING_REQ_FIXED_LEN,
        PeerKind::SwimNack => SWIM_NACK_LEN,
        PeerKind::SwimPushPull => SWIM_PUSH_PULL_FIXED_LEN,
        _ => return None,
    };
    Some(read_swim(kind, fixed, body))
}

fn read_swim(kind: PeerKind, fixed: usize, body: &[u8]) -> Result<SwimView<'_>, DecodeError> {
    // Check a: the fixed part.
    let (head, rest) = body
        .split_at_checked(fixed)
        .ok_or(DecodeError::BadRecordLength)?;
    let (count, max) = match kind {
        PeerKind::SwimNack => (0, 0),
        PeerKind::SwimPushPull => (
            u16_at(head, field::PUSH_PULL_COUNT.start) as usize,
            PUSH_PULL_MEMBERS_MAX,
        ),
        PeerKind::SwimPingReq => (
            head[field::PING_REQ_COUNT] as usize,
            UPDATES_PER_MESSAGE_MAX,
        ),
        _ => (head[field::PING_COUNT] as usize, UPDATES_PER_MESSAGE_MAX),
    };
    // Check b: the count within its limit.
    if count > max {
        return Err(DecodeError::TooManyUpdates);
    }
    // Check c: exactly `count` updates after the fixed part.
    if rest.len() != count.saturating_mul(SWIM_UPDATE_LEN) {
        return Err(DecodeError::BadRecordLength);
    }
    // Check d: the fixed part's fields.
    let seq = u32_at(head, field::SEQ.start);
    let target = u64_at(head, field::TARGET.start);
    let msg_without_updates = match kind {
        PeerKind::SwimNack => return Ok(SwimMessage::Nack { seq }),
        PeerKind::SwimPushPull => {
            let flags = head[field::PUSH_PULL_FLAGS];
            if flags & !SWIM_PUSH_PULL_REPLY != 0 {
                return Err(DecodeError::ReservedNonZero);
            }
            SwimMessage::PushPull {
                reply: flags & SWIM_PUSH_PULL_REPLY != 0,
                members: (),
            }
        }
        _ if target == 0 => return Err(DecodeError::ZeroId),
        PeerKind::SwimPingReq => SwimMessage::PingReq {
            seq,
            target,
            target_addr: read_addr(&head[field::PING_REQ_TARGET_ADDR])?,
            updates: (),
        },
        PeerKind::SwimPing => SwimMessage::Ping {
            seq,
            target,
            updates: (),
        },
        _ => SwimMessage::Ack {
            seq,
            target,
            updates: (),
        },
    };
    // Check e: every update.
    for one in rest.chunks_exact(SWIM_UPDATE_LEN) {
        read_update(one)?;
    }
    Ok(msg_without_updates.map_updates(|()| SwimUpdates { bytes: rest }))
}

/// Writes the body of `msg` into `out`, which is exactly `msg.body_len()` bytes long; checks
/// every rule the decoder checks, so what it refuses a receiver would reject. On `Err`, `out`
/// holds garbage the caller does not commit.
pub(crate) fn write_swim_body<U: UpdateList>(
    out: &mut [u8],
    msg: &SwimMessage<U>,
) -> Result<(), EncodeError> {
    let (head, rest) = out.split_at_mut(match msg {
        SwimMessage::Ping { .. } | SwimMessage::Ack { .. } => SWIM_PING_FIXED_LEN,
        SwimMessage::PingReq { .. } => SWIM_PING_REQ_FIXED_LEN,
        SwimMessage::Nack { .. } => SWIM_NACK_LEN,
        SwimMessage::PushPull { .. } => SWIM_PUSH_PULL_FIXED_LEN,
    });
    let updates = match *msg {
        SwimMessage::Nack { seq } => {
            head[field::SEQ].copy_from_slice(&seq.to_be_bytes());
            return Ok(());
        }
        SwimMessage::PushPull { reply, ref members } => {
            head[field::PUSH_PULL_FLAGS] = if reply { SWIM_PUSH_PULL_REPLY } else { 0 };
            // `push_swim` checked the count against PUSH_PULL_MEMBERS_MAX.
            head[field::PUSH_PULL_COUNT].copy_from_slice(&(members.count() as u16).to_be_bytes());
            members
        }
        SwimMessage::Ping {
            seq,
            target,
            ref updates,
        }
        | SwimMessage::Ack {
            seq,
            target,
            ref updates,
        } => {
            if target == 0 {
                return Err(EncodeError::ZeroId);
            }
            head[field::SEQ].copy_from_slice(&seq.to_be_bytes());
            head[field::TARGET].copy_from_slice(&target.to_be_bytes());
            head[field::PING_COUNT] = updates.count() as u8;
            updates
        }
        SwimMessage::PingReq {
            seq,
            target,
            target_addr,
            ref updates,
        } => {
            if target == 0 {
                return Err(EncodeError::ZeroId);
            }
            head[field::SEQ].copy_from_slice(&seq.to_be_bytes());
            head[field::TARGET].copy_from_slice(&target.to_be_bytes());
            write_addr(&mut head[field::PING_REQ_TARGET_ADDR], target_addr)?;
            head[field::PING_REQ_COUNT] = updates.count() as u8;
            updates
        }
    };
    let mut slots = rest.chunks_exact_mut(SWIM_UPDATE_LEN);
    for u in updates.swim_updates() {
        // More updates than `count()` said: the list is inconsistent.
        let slot = slots.next().ok_or(EncodeError::BadUpdate)?;
        // The decoder's order (spec §8.12 check e): the address, then id and `from`.
        write_addr(&mut slot[field::UPDATE_ADDR], u.addr)?;
        if !update_ok(&u) {
            return Err(EncodeError::BadUpdate);
        }
        slot[field::UPDATE_ID].copy_from_slice(&u.id.to_be_bytes());
        slot[field::UPDATE_INCARNATION].copy_from_slice(&u.incarnation.to_be_bytes());
        slot[field::UPDATE_STATE] = u.state.to_wire();
        slot[field::UPDATE_FROM].copy_from_slice(&u.from.to_be_bytes());
    }
    if slots.next().is_some() {
        // Fewer updates than `count()` said.
        return Err(EncodeError::BadUpdate);
    }
    Ok(())
}
