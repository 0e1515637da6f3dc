//! REMOVE and REMOVE_REPLY (spec §4.10, §5.9): an operator's authenticated request to retire
//! a member that is gone for good, and the node's answer.
//!
//! ```text
//! REMOVE (76)        header (type 0x09, body_len 44) | member_id u64 | incarnation u64
//!                    | key_id u32 | reserved [8] | mac [16]               (no padding)
//! REMOVE_REPLY (64)  header (type 0x89, body_len 32) | status u16 | outcome u8 | state u8
//!                    | reserved u32 | node_id u64 | member_id u64 | incarnation u64
//! ```
//!
//! `mac` is the first 16 bytes of HMAC-SHA256 keyed with the *admin* MAC key, derived from the
//! cluster key with its own label ([`crate::auth::ADMIN_MAC_KEY_LABEL`]), over the 60 bytes
//! before it: the header and every other body field. So a peer MAC never verifies as an admin
//! one and the reverse, and `key_id` names the key as in a peer trailer (spec §8.11.2), so a
//! key rotation works for removals too. Decoding checks the layout only;
//! [`ClusterKey::verify_admin`] checks the MAC.
//!
//! A removal names the member *and the incarnation it applies to*: a node removes the member
//! only while it holds it suspect or dead at exactly that incarnation. A member that came
//! back has a higher one (spec §8.11: a restarted node starts above every incarnation of its
//! earlier lives), so a replayed removal never removes a node that returned (spec §12).

// Without the `crypto` feature, what only REMOVE's encoder uses is left unused.
#![cfg_attr(not(feature = "crypto"), allow(unused_imports, dead_code))]

#[cfg(feature = "crypto")]
use crate::auth::ClusterKey;
use crate::be::{u32_at, u64_at};
use crate::header::{self, Direction, Header, HeaderIds};
use crate::registry::{Flags, MessageType, Status};
use crate::swim::SwimState;
use crate::{all_zero, DecodeError, EncodeError, AUTH_MAC_LEN, HEADER_LEN};

/// Body of a REMOVE: member_id, incarnation, key_id, reserved, mac.
pub const REMOVE_BODY_LEN: usize = 44;
/// A REMOVE datagram's length, exactly: the body fills it, so the MAC is its last 16 bytes and
/// covers every byte before it. It is the shortest request a server answers (76 bytes, spec
/// §2.2), more than the 64-byte reply (no amplification).
pub const REMOVE_REQUEST_LEN: usize = HEADER_LEN + REMOVE_BODY_LEN;
/// Body of a REMOVE_REPLY: status, outcome, state, reserved, node_id, member_id, incarnation.
pub const REMOVE_REPLY_BODY_LEN: usize = 32;
/// A REMOVE_REPLY datagram's length.
pub const REMOVE_REPLY_LEN: usize = HEADER_LEN + REMOVE_REPLY_BODY_LEN;

const _: () = assert!(REMOVE_REQUEST_LEN == crate::REQUEST_LEN_MIN);
const _: () = assert!(REMOVE_REPLY_LEN <= REMOVE_REQUEST_LEN);

/// Byte offsets of the REMOVE and REMOVE_REPLY body fields, from the body's first byte.
pub mod field {
    use core::ops::Range;
    /// Request: `member_id`, u64, the node id of the member to remove; non-zero (spec §4.10).
    pub const MEMBER_ID_REQUEST: Range<usize> = 0..8;
    /// Request: `incarnation`, u64, the member's incarnation the removal applies to, so a
    /// replayed removal never removes a member that came back; non-zero (spec §4.10).
    pub const INCARNATION_REQUEST: Range<usize> = 8..16;
    /// Request: `key_id`, u32, which cluster key made `mac` (spec §4.10, §8.11.3).
    pub const KEY_ID: Range<usize> = 16..20;
    /// Request: reserved, zero (spec §4.10).
    pub const RESERVED_REQUEST: Range<usize> = 20..28;
    /// Request: `mac`, the admin MAC of the 60 bytes before it (spec §4.10).
    pub const MAC: Range<usize> = 28..44;
    /// Reply: `status`, u16; OK, or another status with every field zero (spec §5.9).
    pub const STATUS: Range<usize> = 0..2;
    /// Reply: `outcome`, u8, what the node did ([`RemoveOutcome`], spec §5.9).
    ///
    /// [`RemoveOutcome`]: crate::RemoveOutcome
    pub const OUTCOME: usize = 2;
    /// Reply: `state`, u8, the member's state after the request: 0 alive, 1 suspect, 2 dead,
    /// 3 left (spec §5.9).
    pub const STATE: usize = 3;
    /// Reply: reserved, zero (spec §5.9).
    pub const RESERVED: Range<usize> = 4..8;
    /// Reply: `node_id`, u64, the answering node; non-zero with OK (spec §5.9).
    pub const NODE_ID: Range<usize> = 8..16;
    /// Reply: `member_id`, u64, the request's, copied (spec §5.9).
    pub const MEMBER_ID: Range<usize> = 16..24;
    /// Reply: `incarnation`, u64, the member's incarnation after the request; 0 exactly with
    /// UNKNOWN_MEMBER (spec §5.9).
    pub const INCARNATION: Range<usize> = 24..32;
}

const _: () = assert!(field::MAC.end == REMOVE_BODY_LEN);
const _: () = assert!(field::MAC.end - field::MAC.start == AUTH_MAC_LEN);
const _: () = assert!(field::INCARNATION.end == REMOVE_REPLY_BODY_LEN);

/// What a node did with an authenticated REMOVE (spec §5.9). Values 0 and 6 to 255 are
/// reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RemoveOutcome {
    /// The node held the member suspect or dead at the request's incarnation: it now holds
    /// it left at that incarnation and gossips that.
    Removed = 1,
    /// The node already held the member left: nothing changed (a retransmission of a
    /// removal that took effect gets this).
    AlreadyRemoved = 2,
    /// The node holds the member alive (or it is the answering node itself): refused, nothing
    /// changed. Stop a live node instead (it leaves by itself).
    Alive = 3,
    /// The node holds no member with that id (never heard of, or forgotten): nothing changed.
    UnknownMember = 4,
    /// The node holds the member suspect or dead at another incarnation than the request's
    /// (it came back and failed again, or refuted a suspicion): refused, nothing changed.
    /// The reply carries the incarnation it holds.
    OtherIncarnation = 5,
}

impl RemoveOutcome {
    /// Every outcome, in wire order.
    pub const ALL: [RemoveOutcome; 5] = [
        RemoveOutcome::Removed,
        RemoveOutcome::AlreadyRemoved,
        RemoveOutcome::Alive,
        RemoveOutcome::UnknownMember,
        RemoveOutcome::OtherIncarnation,
    ];

    /// The outcome for `raw`, or `None` if it is reserved.
    pub const fn from_wire(raw: u8) -> Option<RemoveOutcome> {
        match raw {
            1 => Some(RemoveOutcome::Removed),
            2 => Some(RemoveOutcome::AlreadyRemoved),
            3 => Some(RemoveOutcome::Alive),
            4 => Some(RemoveOutcome::UnknownMember),
            5 => Some(RemoveOutcome::OtherIncarnation),
            _ => None,
        }
    }

    /// The value as sent.
    pub const fn to_wire(self) -> u8 {
        self as u8
    }

    /// The name the spec uses.
    pub const fn name(self) -> &'static str {
        match self {
            RemoveOutcome::Removed => "REMOVED",
            RemoveOutcome::AlreadyRemoved => "ALREADY_REMOVED",
            RemoveOutcome::Alive => "ALIVE",
            RemoveOutcome::UnknownMember => "UNKNOWN_MEMBER",
            RemoveOutcome::OtherIncarnation => "OTHER_INCARNATION",
        }
    }

    /// Whether the member is retired at the answering node after the request (the operator's
    /// goal): removed now or before.
    pub const fn is_removed(self) -> bool {
        matches!(self, RemoveOutcome::Removed | RemoveOutcome::AlreadyRemoved)
    }

    /// Whether a reply with this outcome may name the member in `state` (spec §5.9); with
    /// UNKNOWN_MEMBER the state is 0 (alive) and the incarnation 0.
    const fn fits(self, state: SwimState) -> bool {
        match self {
            RemoveOutcome::Removed | RemoveOutcome::AlreadyRemoved => {
                matches!(state, SwimState::Left)
            }
            RemoveOutcome::Alive => matches!(state, SwimState::Alive),
            RemoveOutcome::UnknownMember => matches!(state, SwimState::Alive),
            RemoveOutcome::OtherIncarnation => {
                matches!(state, SwimState::Suspect | SwimState::Dead)
            }
        }
    }
}

/// A decoded REMOVE (its MAC not checked: see [`ClusterKey::verify_admin`]), or one to encode
/// and authenticate with [`RemoveRequest::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveRequest {
    /// Non-zero; any value (the request creates no session).
    pub session_id: u64,
    /// Non-zero.
    pub request_id: u64,
    /// 0 on the first send, +1 per retransmission (each copy has its own MAC).
    pub attempt: u16,
    /// The member to remove; non-zero.
    pub member_id: u64,
    /// The member's incarnation the removal applies to; non-zero (spec §4.10).
    pub incarnation: u64,
    /// Which cluster key made the MAC ([`ClusterKey::id`]); [`RemoveRequest::encode`] writes
    /// its key's id whatever this says.
    pub key_id: u32,
}

impl RemoveRequest {
    /// Decodes a REMOVE datagram (spec §3.2, §4.10): the header, a body of exactly
    /// [`REMOVE_BODY_LEN`] bytes that ends the datagram, non-zero `member_id` and
    /// `incarnation` (`ZeroId`), zero reserved bytes. Does not check the MAC. Never panics;
    /// never allocates.
    pub fn decode(datagram: &[u8]) -> Result<RemoveRequest, DecodeError> {
        let header =
            header::decode_fixed_request(datagram, |t| t == MessageType::Remove, REMOVE_BODY_LEN)?;
        // The MAC is the last 16 bytes of the datagram: nothing may follow the body.
        if datagram.len() != REMOVE_REQUEST_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let body = &datagram[HEADER_LEN..];
        if !all_zero(&body[field::RESERVED_REQUEST]) {
            return Err(DecodeError::ReservedNonZero);
        }
        let member_id = u64_at(body, field::MEMBER_ID_REQUEST.start);
        let incarnation = u64_at(body, field::INCARNATION_REQUEST.start);
        if member_id == 0 || incarnation == 0 {
            return Err(DecodeError::ZeroId);
        }
        Ok(RemoveRequest {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            member_id,
            incarnation,
            key_id: u32_at(body, field::KEY_ID.start),
        })
    }

    /// Encodes the request and authenticates it with `key` (its id in `key_id`, the admin MAC
    /// last). Returns the datagram length, [`REMOVE_REQUEST_LEN`]. A zero `member_id` or
    /// `incarnation` is [`EncodeError::ZeroId`]. (Cargo feature `crypto`.)
    #[cfg(feature = "crypto")]
    pub fn encode(&self, out: &mut [u8], key: &ClusterKey) -> Result<usize, EncodeError> {
        if self.member_id == 0 || self.incarnation == 0 {
            return Err(EncodeError::ZeroId);
        }
        let mut body = [0u8; REMOVE_BODY_LEN];
        body[field::MEMBER_ID_REQUEST].copy_from_slice(&self.member_id.to_be_bytes());
        body[field::INCARNATION_REQUEST].copy_from_slice(&self.incarnation.to_be_bytes());
        body[field::KEY_ID].copy_from_slice(&key.id().to_be_bytes());
        let ids = HeaderIds {
            session_id: self.session_id,
            request_id: self.request_id,
            attempt: self.attempt,
        };
        let len =
            header::encode_fixed_request(out, MessageType::Remove, ids, &body, REMOVE_REQUEST_LEN)?;
        debug_assert_eq!(len, REMOVE_REQUEST_LEN);
        let mac_at = len - AUTH_MAC_LEN;
        let tag = key.admin_tag(&out[..mac_at]);
        out[mac_at..len].copy_from_slice(&tag);
        Ok(len)
    }
}

/// A REMOVE_REPLY (spec §5.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveReply {
    /// Copied from the request.
    pub session_id: u64,
    /// Copied from the request.
    pub request_id: u64,
    /// The attempt of the request copy answered.
    pub attempt: u16,
    /// OK in version 1. Another status carries no data: every field below is zero, and
    /// `outcome` is `None`.
    pub status: Status,
    /// What the node did; `Some` exactly with OK.
    pub outcome: Option<RemoveOutcome>,
    /// The member's state at the answering node after the request (alive with
    /// UNKNOWN_MEMBER, where `incarnation` is 0).
    pub state: SwimState,
    /// The answering node's id (non-zero with OK).
    pub node_id: u64,
    /// The request's member id (non-zero with OK).
    pub member_id: u64,
    /// The member's incarnation at the answering node after the request; 0 with
    /// UNKNOWN_MEMBER.
    pub incarnation: u64,
}

impl RemoveReply {
    /// Whether the fields agree with each other (spec §5.9).
    fn is_consistent(&self) -> bool {
        let Some(outcome) = self.outcome else {
            return self.status != Status::Ok
                && self.state == SwimState::Alive
                && self.node_id == 0
                && self.member_id == 0
                && self.incarnation == 0;
        };
        if self.status != Status::Ok || self.node_id == 0 || self.member_id == 0 {
            return false;
        }
        let unknown = outcome == RemoveOutcome::UnknownMember;
        outcome.fits(self.state) && (self.incarnation == 0) == unknown
    }

    /// Decodes a REMOVE_REPLY (spec §3.2, §5.9). Never panics; never allocates. Any other
    /// reply type fails with [`DecodeError::UnknownType`].
    pub fn decode(datagram: &[u8]) -> Result<RemoveReply, DecodeError> {
        let header = header::decode(datagram, Direction::Reply, |t| {
            t == MessageType::RemoveReply
        })?;
        if usize::from(header.body_len) != REMOVE_REPLY_BODY_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let body = &datagram[HEADER_LEN..HEADER_LEN + REMOVE_REPLY_BODY_LEN];
        let status = Status::from_wire(crate::be::u16_at(body, field::STATUS.start))
            .ok_or(DecodeError::UnknownStatus)?;
        if !all_zero(&body[field::RESERVED]) {
            return Err(DecodeError::ReservedNonZero);
        }
        let raw_outcome = body[field::OUTCOME];
        let outcome = match (status, RemoveOutcome::from_wire(raw_outcome)) {
            (Status::Ok, Some(o)) => Some(o),
            (Status::Ok, None) => return Err(DecodeError::BadRemove),
            (_, _) if raw_outcome == 0 => None,
            (_, _) => return Err(DecodeError::BadRemove),
        };
        let state = SwimState::from_wire(body[field::STATE]).ok_or(DecodeError::BadRemove)?;
        let reply = RemoveReply {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            status,
            outcome,
            state,
            node_id: u64_at(body, field::NODE_ID.start),
            member_id: u64_at(body, field::MEMBER_ID.start),
            incarnation: u64_at(body, field::INCARNATION.start),
        };
        if !reply.is_consistent() {
            return Err(DecodeError::BadRemove);
        }
        header::check_padding(datagram, &header)?;
        Ok(reply)
    }

    /// Encodes the reply ([`REMOVE_REPLY_LEN`] bytes, unpadded). Returns the datagram length.
    /// Refuses ([`EncodeError::BadRemove`]) fields that disagree, as
    /// [`RemoveReply::decode`] would.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if !self.is_consistent() {
            return Err(EncodeError::BadRemove);
        }
        let out = out
            .get_mut(..REMOVE_REPLY_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        header::encode(
            out,
            &Header {
                msg_type: MessageType::RemoveReply,
                flags: Flags::empty(),
                body_len: REMOVE_REPLY_BODY_LEN as u16,
                session_id: self.session_id,
                request_id: self.request_id,
                attempt: self.attempt,
            },
        )?;
        let b = &mut out[HEADER_LEN..];
        b[field::STATUS].copy_from_slice(&self.status.to_wire().to_be_bytes());
        b[field::OUTCOME] = self.outcome.map_or(0, RemoveOutcome::to_wire);
        b[field::STATE] = self.state.to_wire();
        b[field::RESERVED].fill(0);
        b[field::NODE_ID].copy_from_slice(&self.node_id.to_be_bytes());
        b[field::MEMBER_ID].copy_from_slice(&self.member_id.to_be_bytes());
        b[field::INCARNATION].copy_from_slice(&self.incarnation.to_be_bytes());
        Ok(REMOVE_REPLY_LEN)
    }
}

#[cfg(all(test, feature = "crypto"))]
mod tests {
    use super::*;

    const REQUEST: RemoveRequest = RemoveRequest {
        session_id: 3,
        request_id: 4,
        attempt: 1,
        member_id: 9,
        incarnation: 1_780_000_000_000_000,
        key_id: 0,
    };

    #[test]
    fn a_request_round_trips_and_verifies_only_with_its_key_as_an_admin_mac() {
        let key = ClusterKey::new(&[7; 32]);
        let mut out = [0u8; 200];
        let n = REQUEST.encode(&mut out, &key).unwrap();
        assert_eq!(n, REMOVE_REQUEST_LEN);
        let back = RemoveRequest::decode(&out[..n]).unwrap();
        assert_eq!(
            back,
            RemoveRequest {
                key_id: key.id(),
                ..REQUEST
            }
        );
        assert!(key.verify_admin(&out[..n]));
        assert!(!ClusterKey::new(&[8; 32]).verify_admin(&out[..n]));
        // The peer MAC of the same bytes is another: the labels keep the two apart.
        assert!(!key.verify(&out[..n]));
        for bit in 0..n * 8 {
            let mut copy = out;
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.verify_admin(&copy[..n]), "bit {bit} flipped verifies");
        }
    }

    #[test]
    fn a_request_with_a_zero_id_or_trailing_bytes_does_not_decode() {
        let key = ClusterKey::new(&[7; 32]);
        let mut out = [0u8; 200];
        let n = REQUEST.encode(&mut out, &key).unwrap();
        assert_eq!(
            RemoveRequest::decode(&out[..n + 1]),
            Err(DecodeError::BadBodyLength)
        );
        assert_eq!(
            RemoveRequest::decode(&out[..n - 1]),
            Err(DecodeError::BadBodyLength)
        );
        let zero = RemoveRequest {
            incarnation: 0,
            ..REQUEST
        };
        assert_eq!(zero.encode(&mut out, &key), Err(EncodeError::ZeroId));
    }

    #[test]
    fn replies_whose_fields_disagree_do_not_encode() {
        let ok = RemoveReply {
            session_id: 1,
            request_id: 2,
            attempt: 0,
            status: Status::Ok,
            outcome: Some(RemoveOutcome::Removed),
            state: SwimState::Left,
            node_id: 1,
            member_id: 3,
            incarnation: 5,
        };
        let mut out = [0u8; 100];
        let n = ok.encode(&mut out).unwrap();
        assert_eq!(RemoveReply::decode(&out[..n]), Ok(ok));
        for bad in [
            RemoveReply {
                state: SwimState::Dead,
                ..ok
            },
            RemoveReply { node_id: 0, ..ok },
            RemoveReply {
                outcome: Some(RemoveOutcome::UnknownMember),
                ..ok
            },
            RemoveReply {
                outcome: None,
                ..ok
            },
            RemoveReply {
                outcome: Some(RemoveOutcome::Alive),
                ..ok
            },
        ] {
            assert_eq!(bad.encode(&mut out), Err(EncodeError::BadRemove), "{bad:?}");
        }
    }
}
