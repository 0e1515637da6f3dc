//! Replies (spec §5): one 44-byte body shared by every reply type, plus the holder's id in a
//! STATUS_REPLY.

use core::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::be::{u16_at, u32_at, u64_at};
use crate::header::{self, Direction, Header};
use crate::registry::{Flags, MessageType, Status};
use crate::{
    all_zero, AddressToken, DecodeError, EncodeError, ADDRESS_TOKEN_LEN, DATAGRAM_LEN_MAX,
    HEADER_LEN, ID_LEN_MAX, REPLY_BODY_FIXED_LEN,
};

/// Byte ranges of the reply body fields, relative to the start of the body.
pub mod field {
    use core::ops::Range;
    /// `status`, u16: the outcome, a status code (spec §5.1, §10.2).
    pub const STATUS: Range<usize> = 0..2;
    /// `hint_kind`, u8: what `hint` carries, 0 nothing, 1 retry-after, 2 leader, 3 address
    /// token (spec §5.2).
    pub const HINT_KIND: usize = 2;
    /// `holder_len`, u8: length of `holder`; 0 but in a STATUS_REPLY (spec §5.1).
    pub const HOLDER_LEN: usize = 3;
    /// `hold_count`, u32: the re-entrant hold count after the operation (spec §5.1, §5.3).
    pub const HOLD_COUNT: Range<usize> = 4..8;
    /// `fencing_token`, u64: the token of the hold concerned, 0 for none (spec §5.1, §6.2).
    pub const FENCING_TOKEN: Range<usize> = 8..16;
    /// `lease_ms`, u32: the hold's lease in milliseconds, from the grant or renewal (spec
    /// §5.1, §6.4).
    pub const LEASE_MS: Range<usize> = 16..20;
    /// `waiter_count`, u32: ACQUIREs queued on the resource (spec §5.1, §5.3).
    pub const WAITER_COUNT: Range<usize> = 20..24;
    /// `hint`, 20 bytes laid out by `hint_kind` (spec §5.2).
    pub const HINT: Range<usize> = 24..44;
    /// Within HINT, kind 1: the retry-after delay.
    pub const HINT_RETRY_AFTER_MS: Range<usize> = 24..28;
    /// Within HINT, kind 2: the leader's address (IPv4 as IPv4-mapped IPv6) and port.
    pub const HINT_ADDR: Range<usize> = 24..40;
    /// Within HINT, kind 2: the leader's UDP port, u16 (spec §5.2).
    pub const HINT_PORT: Range<usize> = 40..42;
    /// Within HINT, kind 3 (RETRY only): the address token to resend the request with
    /// (spec §5.2, §7.1.9).
    pub const HINT_ADDRESS_TOKEN: Range<usize> = 24..40;
    /// `holder`: the holder's client id, STATUS_REPLY only (spec §5.1).
    pub const HOLDER: usize = 44;
}

const _: () = assert!(field::HINT.end == REPLY_BODY_FIXED_LEN);
const _: () = assert!(field::HOLDER == REPLY_BODY_FIXED_LEN);

const HINT_NONE: u8 = 0;
const HINT_RETRY_AFTER: u8 = 1;
const HINT_LEADER: u8 = 2;
const HINT_ADDRESS_TOKEN: u8 = 3;

const _: () =
    assert!(field::HINT_ADDRESS_TOKEN.end - field::HINT_ADDRESS_TOKEN.start == ADDRESS_TOKEN_LEN);

/// Where to go next, carried by a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// No hint (kind 0): every hint byte zero (spec §5.2).
    None,
    /// Try again after this many milliseconds (with OVERLOADED).
    RetryAfter {
        /// The delay in milliseconds after which the client may retry (spec §5.2, §9).
        ms: u32,
    },
    /// The node that leads the resource's shard (with NOT_LEADER, from a node of a cluster).
    Leader(SocketAddr),
    /// The address token to send the request again with (kind 3): with RETRY, and only
    /// with it (spec §5.2, §7.1.9).
    AddressToken(AddressToken),
}

/// A decoded reply. The holder id borrows from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    /// ERROR_REPLY or the answer to a lock request (0x80..=0x85, 0x8A, 0x8B).
    pub msg_type: MessageType,
    /// Reply flags: HOLDER_TRUNCATED, QUEUED.
    pub flags: Flags,
    /// The request's session id, copied (spec §3.1); how a client matches the reply.
    pub session_id: u64,
    /// The request's request id, copied (spec §3.1); how a client matches the reply.
    pub request_id: u64,
    /// The highest attempt of the request the server had received when it answered.
    pub attempt: u16,
    /// The outcome (spec §10.2). Unless OK or WAITING, every counter below is zero and a
    /// client ignores them (spec §5.1).
    pub status: Status,
    /// The re-entrant hold count of the request's client id after the operation; STATUS: the
    /// holder's count, 0 when the lock is free (spec §5.1, §5.3). KEEPALIVE_REPLY: how many
    /// listed holds were renewed (spec §4.11).
    pub hold_count: u32,
    /// The token of the hold concerned, 0 when there is none (spec §5.1, §6.2).
    /// KEEPALIVE_REPLY: the renewed bitmap, bit i (value `1 << i`) for the i-th listed token.
    pub fencing_token: u64,
    /// The hold's lease in whole milliseconds from the grant or renewal, which a client counts
    /// from its own send time of the echoed attempt (spec §5.1, §6.4); STATUS_REPLY: the
    /// remaining lease; CONFIGURE_REPLY: the default TTL now in force; WAITING: the TTL a
    /// grant would get now; KEEPALIVE_REPLY: the smallest lease among the renewed holds.
    pub lease_ms: u32,
    /// STATUS_REPLY and WAITING: ACQUIREs queued on the resource (for WAITING, the one
    /// answered included); CANCEL_WAIT_REPLY: 1 if this request took its target out of the
    /// queue (spec §4.12); otherwise 0 (spec §5.1).
    pub waiter_count: u32,
    /// Where or when to try again (spec §5.2).
    pub hint: Hint,
    /// The holder's client id (STATUS_REPLY only; empty otherwise).
    pub holder: &'a [u8],
}

impl Reply<'static> {
    /// A reply carrying only a status: every counter zero, no hint, no holder, no flag (what
    /// a non-OK status requires, spec §5.1). Set the other fields on the value as needed.
    pub const fn bare(
        msg_type: MessageType,
        session_id: u64,
        request_id: u64,
        attempt: u16,
        status: Status,
    ) -> Reply<'static> {
        Reply {
            msg_type,
            flags: Flags::empty(),
            session_id,
            request_id,
            attempt,
            status,
            hold_count: 0,
            fencing_token: 0,
            lease_ms: 0,
            waiter_count: 0,
            hint: Hint::None,
            holder: &[],
        }
    }
}

/// The reply types [`Reply::decode`] reads and [`Reply::encode`] writes: ERROR_REPLY and the
/// answers to the lock requests, all with the body of spec §5.1. SHARD_STATUS_REPLY and
/// NODE_SETTINGS_REPLY have their own layouts and codecs ([`crate::ShardStatusReply`],
/// [`crate::NodeSettingsReply`]).
fn is_lock_reply(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::ErrorReply
            | MessageType::AcquireReply
            | MessageType::ReleaseReply
            | MessageType::RenewReply
            | MessageType::StatusReply
            | MessageType::ConfigureReply
            | MessageType::KeepaliveReply
            | MessageType::CancelWaitReply
    )
}

impl<'a> Reply<'a> {
    /// Decodes a reply datagram. Never panics; never allocates. A SHARD_STATUS_REPLY fails
    /// with [`DecodeError::UnknownType`]: it is read by [`crate::ShardStatusReply::decode`].
    pub fn decode(datagram: &'a [u8]) -> Result<Reply<'a>, DecodeError> {
        // A sealed reply (AUTH, spec §7.1.10) decodes as its body says; the trailer is the
        // caller's to check (crate::ClientKey::verify_reply).
        let header = header::decode_with_auth(datagram, Direction::Reply, is_lock_reply, true)?;
        let body = &datagram[HEADER_LEN..HEADER_LEN + header.body_len as usize];
        if body.len() < REPLY_BODY_FIXED_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        let holder_len = body[field::HOLDER_LEN] as usize;
        if REPLY_BODY_FIXED_LEN + holder_len != body.len() {
            return Err(DecodeError::BadBodyLength);
        }
        if holder_len != 0 && header.msg_type != MessageType::StatusReply {
            return Err(DecodeError::BadHolderLength);
        }
        let status = Status::from_wire(u16_at(body, field::STATUS.start))
            .ok_or(DecodeError::UnknownStatus)?;
        let hint = decode_hint(body)?;
        // A RETRY carries a token, and only a RETRY does (spec §5.2).
        if (status == Status::Retry) != matches!(hint, Hint::AddressToken(_)) {
            return Err(DecodeError::BadHintKind);
        }
        header::check_padding(datagram, &header)?;
        Ok(Reply {
            msg_type: header.msg_type,
            flags: header.flags,
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            status,
            hold_count: u32_at(body, field::HOLD_COUNT.start),
            fencing_token: u64_at(body, field::FENCING_TOKEN.start),
            lease_ms: u32_at(body, field::LEASE_MS.start),
            waiter_count: u32_at(body, field::WAITER_COUNT.start),
            hint,
            holder: &body[field::HOLDER..],
        })
    }

    /// The datagram length [`Reply::encode`] writes: 76 bytes plus the holder id.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + REPLY_BODY_FIXED_LEN + self.holder.len()
    }

    /// Encodes the reply and, with a `key`, seals it (spec §7.1.10): the AUTH flag set and
    /// the client-auth trailer after the body, with the key's id and the reply MAC of every
    /// byte before it; [`Reply::encoded_len`] plus [`crate::CLIENT_AUTH_TRAILER_LEN`] bytes. An
    /// ERROR_REPLY is never sealed ([`EncodeError::WrongType`] with a key). Without a key,
    /// the same bytes as [`Reply::encode`]. The AUTH bit of `self.flags` is ignored: the key
    /// decides.
    #[cfg(feature = "crypto")]
    pub fn encode_sealed(
        &self,
        out: &mut [u8],
        key: Option<&crate::ClientKey>,
    ) -> Result<usize, EncodeError> {
        let Some(key) = key else {
            return self.encode(out);
        };
        if !crate::client_auth::carries_client_auth(self.msg_type) {
            return Err(EncodeError::WrongType);
        }
        let len = self.encoded_len() + crate::CLIENT_AUTH_TRAILER_LEN;
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        let n = self.encode(out)?;
        debug_assert_eq!(n + crate::CLIENT_AUTH_TRAILER_LEN, len);
        let flags = (self.flags | Flags::AUTH).bits();
        out[header::field::FLAGS].copy_from_slice(&flags.to_be_bytes());
        key.seal(crate::client_auth::SealDirection::Reply, out);
        Ok(len)
    }

    /// Encodes the reply (unpadded, unsealed: the AUTH bit of `self.flags` is not written).
    /// Returns the datagram length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if !is_lock_reply(self.msg_type) {
            return Err(EncodeError::WrongType);
        }
        if (self.status == Status::Retry) != matches!(self.hint, Hint::AddressToken(_)) {
            // The decoder refuses either half alone (spec §5.2).
            return Err(EncodeError::WrongType);
        }
        if self.holder.len() > ID_LEN_MAX
            || (!self.holder.is_empty() && self.msg_type != MessageType::StatusReply)
        {
            return Err(EncodeError::BadIdLength);
        }
        let len = self.encoded_len();
        debug_assert!(len <= DATAGRAM_LEN_MAX);
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        header::encode(
            out,
            &Header {
                msg_type: self.msg_type,
                flags: self.flags - Flags::AUTH,
                body_len: (len - HEADER_LEN) as u16,
                session_id: self.session_id,
                request_id: self.request_id,
                attempt: self.attempt,
            },
        )?;
        let b = &mut out[HEADER_LEN..];
        b[field::STATUS].copy_from_slice(&self.status.to_wire().to_be_bytes());
        b[field::HOLDER_LEN] = self.holder.len() as u8;
        b[field::HOLD_COUNT].copy_from_slice(&self.hold_count.to_be_bytes());
        b[field::FENCING_TOKEN].copy_from_slice(&self.fencing_token.to_be_bytes());
        b[field::LEASE_MS].copy_from_slice(&self.lease_ms.to_be_bytes());
        b[field::WAITER_COUNT].copy_from_slice(&self.waiter_count.to_be_bytes());
        encode_hint(b, self.hint);
        b[field::HOLDER..].copy_from_slice(self.holder);
        Ok(len)
    }
}

/// Writes `hint_kind` and the 20 hint bytes (spec §5.2) into a reply body laid out as §5.1's
/// at those offsets (HOLDS_REPLY's is too, spec §5.10). `b` is at least 44 bytes.
pub(crate) fn encode_hint(b: &mut [u8], hint: Hint) {
    b[field::HINT].fill(0);
    b[field::HINT_KIND] = match hint {
        Hint::None => HINT_NONE,
        Hint::RetryAfter { ms } => {
            b[field::HINT_RETRY_AFTER_MS].copy_from_slice(&ms.to_be_bytes());
            HINT_RETRY_AFTER
        }
        Hint::Leader(addr) => {
            let ip = match addr.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            b[field::HINT_ADDR].copy_from_slice(&ip.octets());
            b[field::HINT_PORT].copy_from_slice(&addr.port().to_be_bytes());
            HINT_LEADER
        }
        Hint::AddressToken(token) => {
            b[field::HINT_ADDRESS_TOKEN].copy_from_slice(&token.0);
            HINT_ADDRESS_TOKEN
        }
    };
}

/// Reads `hint_kind` and the hint of a reply body laid out as §5.1's at those offsets (spec
/// §5.2); `body` is at least 44 bytes.
pub(crate) fn decode_hint(body: &[u8]) -> Result<Hint, DecodeError> {
    let hint = &body[field::HINT];
    // Offsets inside `hint` are the field offsets minus the hint's start.
    let rel = |r: core::ops::Range<usize>| r.start - field::HINT.start..r.end - field::HINT.start;
    match body[field::HINT_KIND] {
        HINT_NONE if all_zero(hint) => Ok(Hint::None),
        HINT_RETRY_AFTER if all_zero(&hint[rel(field::HINT_RETRY_AFTER_MS).end..]) => {
            Ok(Hint::RetryAfter {
                ms: u32_at(body, field::HINT_RETRY_AFTER_MS.start),
            })
        }
        HINT_LEADER if all_zero(&hint[rel(field::HINT_PORT).end..]) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[field::HINT_ADDR]);
            let v6 = Ipv6Addr::from(octets);
            let ip = match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            };
            Ok(Hint::Leader(SocketAddr::new(
                ip,
                u16_at(body, field::HINT_PORT.start),
            )))
        }
        HINT_ADDRESS_TOKEN if all_zero(&hint[rel(field::HINT_ADDRESS_TOKEN).end..]) => {
            let mut token = [0u8; ADDRESS_TOKEN_LEN];
            token.copy_from_slice(&body[field::HINT_ADDRESS_TOKEN]);
            Ok(Hint::AddressToken(AddressToken(token)))
        }
        _ => Err(DecodeError::BadHintKind),
    }
}
