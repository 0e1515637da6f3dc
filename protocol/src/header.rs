//! The 32-byte common header (spec §3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------------------------------+---------------+---------------+
//! |          magic "UL"           |    version    |   msg_type    |
//! +-------------------------------+---------------+---------------+
//! |             flags             |            body_len           |
//! +-------------------------------+-------------------------------+
//! |                          session_id (64)                      |
//! +                                                               +
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                          request_id (64)                      |
//! +                                                               +
//! |                                                               |
//! +-------------------------------+-------------------------------+
//! |            attempt            |          reserved (48)        |
//! +-------------------------------+                               +
//! |                                                               |
//! +---------------------------------------------------------------+
//! ```

use crate::be::{u16_at, u64_at};
use crate::client_auth::{carries_client_auth, trailer_len};
use crate::registry::{Flags, MessageType};
use crate::{
    all_zero, DecodeError, EncodeError, AUTH_REQUEST_LEN_MIN, DATAGRAM_LEN_MAX, HEADER_LEN, MAGIC,
    VERSION,
};

/// Byte ranges of the header fields.
pub mod field {
    use core::ops::Range;
    /// `magic`: the bytes "UL" ([`crate::MAGIC`]) that mark a udplock datagram (spec §3.1).
    pub const MAGIC: Range<usize> = 0..2;
    /// `version`, u8: the protocol version, 1 ([`crate::VERSION`], spec §3.1, §11).
    pub const VERSION: usize = 2;
    /// `msg_type`, u8: the message type ([`MessageType`], spec §10.1).
    ///
    /// [`MessageType`]: crate::MessageType
    pub const MSG_TYPE: usize = 3;
    /// `flags`, u16: bit flags, per direction ([`Flags`], spec §3.1, §10.3).
    ///
    /// [`Flags`]: crate::Flags
    pub const FLAGS: Range<usize> = 4..6;
    /// `body_len`, u16: bytes of body after the header, padding excluded (spec §3.1).
    pub const BODY_LEN: Range<usize> = 6..8;
    /// `session_id`, u64: the sender's session, non-zero in a request, echoed in the reply
    /// (spec §3.1, §6.6).
    pub const SESSION_ID: Range<usize> = 8..16;
    /// `request_id`, u64: one operation within the session, the same in every
    /// retransmission, echoed in the reply (spec §3.1, §6.6).
    pub const REQUEST_ID: Range<usize> = 16..24;
    /// `attempt`, u16: the transmission number of a request; in a reply, the highest
    /// attempt the server had received, for round-trip estimation (spec §3.1, §7.1.3).
    pub const ATTEMPT: Range<usize> = 24..26;
    /// Reserved: zero when sent, checked when received (`ReservedNonZero`, spec §3.1).
    pub const RESERVED: Range<usize> = 26..32;
}

const _: () = assert!(field::RESERVED.end == HEADER_LEN);

/// The decoded header of a datagram whose framing checks passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The message type (spec §10.1), registered and of the expected direction.
    pub msg_type: MessageType,
    /// The flags (spec §10.3); only bits defined for the direction are set.
    pub flags: Flags,
    /// Length of the body; the body is `datagram[32..32 + body_len]`.
    pub body_len: u16,
    /// The session id; non-zero (spec §3.1, §6.6).
    pub session_id: u64,
    /// The request id; non-zero (spec §3.1, §6.6).
    pub request_id: u64,
    /// The attempt: a request's transmission number, or in a reply the highest attempt the
    /// server had received (spec §3.1, §7.1.3).
    pub attempt: u16,
}

/// The ids of a datagram that failed to decode, when its header was readable enough to answer
/// with an ERROR_REPLY (at least 32 bytes and the right magic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderIds {
    /// The session id, as read (possibly 0: not checked).
    pub session_id: u64,
    /// The request id, as read (possibly 0: not checked).
    pub request_id: u64,
    /// The attempt, which the ERROR_REPLY echoes (spec §3.1).
    pub attempt: u16,
}

impl HeaderIds {
    /// Reads the ids of any datagram that starts with a full header and the magic.
    pub fn peek(datagram: &[u8]) -> Option<HeaderIds> {
        if datagram.len() < HEADER_LEN || datagram[field::MAGIC] != MAGIC {
            return None;
        }
        Some(HeaderIds {
            session_id: u64_at(datagram, field::SESSION_ID.start),
            request_id: u64_at(datagram, field::REQUEST_ID.start),
            attempt: u16_at(datagram, field::ATTEMPT.start),
        })
    }
}

/// Which direction the caller expects, so a datagram of the other direction is rejected.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Reply,
}

/// Checks the framing rules shared by every message (spec §3.2, in the spec's order) and
/// returns the header. The body is `datagram[HEADER_LEN..HEADER_LEN + body_len]`; the caller
/// checks the body and then the padding with [`check_padding`].
///
/// `reads` says which registered types of `direction` the calling decoder reads: the lock
/// requests and their replies have one decoder, SHARD_STATUS and its reply another (spec
/// §4.7). A registered type of the right direction that the decoder does not read fails as
/// `UnknownType`, at step 5b like an unregistered one, so a server that does not implement a
/// request type answers it UNSUPPORTED (spec §11).
pub(crate) fn decode(
    datagram: &[u8],
    direction: Direction,
    reads: fn(MessageType) -> bool,
) -> Result<Header, DecodeError> {
    decode_with_auth(datagram, direction, reads, false)
}

/// [`decode`], and if `client_auth`, the AUTH flag is defined for the lock requests and their
/// replies but ERROR_REPLY (spec §3.1, §7.1.10): such a datagram ends with the
/// [`crate::CLIENT_AUTH_TRAILER_LEN`]-byte client-auth trailer, which `body_len` and the
/// padding exclude, and an authenticated request is at least [`crate::AUTH_REQUEST_LEN_MIN`]
/// bytes (`ShortAuthenticated`). A decoder that does not read the trailer passes `false`, so
/// AUTH stays `AuthUnsupported` for it.
pub(crate) fn decode_with_auth(
    datagram: &[u8],
    direction: Direction,
    reads: fn(MessageType) -> bool,
    client_auth: bool,
) -> Result<Header, DecodeError> {
    if datagram.len() < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    if datagram.len() > DATAGRAM_LEN_MAX {
        return Err(DecodeError::TooLong);
    }
    if datagram[field::MAGIC] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if datagram[field::VERSION] != VERSION {
        return Err(DecodeError::UnsupportedVersion);
    }
    let raw_type = datagram[field::MSG_TYPE];
    let expected = |t: MessageType| match direction {
        Direction::Request => t.is_request(),
        Direction::Reply => t.is_reply(),
    };
    let msg_type = match (MessageType::from_wire(raw_type), direction) {
        (Some(t), _) if expected(t) && reads(t) => t,
        (Some(t), _) if expected(t) => return Err(DecodeError::UnknownType),
        // The other direction, or PEER (0x40): a node-to-node datagram is never a request or a
        // reply, whichever side looks at it (spec §3.2 step 5a).
        (Some(_), _) => return Err(DecodeError::UnexpectedType),
        // At a server: the node-to-node range (0x40..=0x7F; SWIM travels inside PEER) and the
        // reply range are dropped, never answered (answering replies could loop forever).
        (None, Direction::Request) if (0x40..0xC0).contains(&raw_type) => {
            return Err(DecodeError::UnexpectedType)
        }
        (None, _) => return Err(DecodeError::UnknownType),
    };
    let raw_flags = u16_at(datagram, field::FLAGS.start);
    let auth_defined = client_auth && carries_client_auth(msg_type);
    if raw_flags & Flags::AUTH.bits() != 0 && !auth_defined {
        return Err(DecodeError::AuthUnsupported);
    }
    let flags = Flags::from_bits(raw_flags).ok_or(DecodeError::UnknownFlags)?;
    // Reply-only flags in a request are as unknown as reserved bits, and so are they in a
    // SHARD_STATUS_REPLY, NODE_SETTINGS_REPLY, MEMBERS_REPLY, REMOVE_REPLY or HOLDS_REPLY,
    // which define none (spec §3.2 step 7, §5.6 to §5.10).
    // ADDRESS_TOKEN is the one request flag, defined for the lock requests only (spec §3.1,
    // §7.1.9); in a reply it is reserved.
    let defined = match direction {
        Direction::Reply
            if !matches!(
                msg_type,
                MessageType::ShardStatusReply
                    | MessageType::NodeSettingsReply
                    | MessageType::MembersReply
                    | MessageType::RemoveReply
                    | MessageType::HoldsReply
            ) =>
        {
            Flags::HOLDER_TRUNCATED | Flags::QUEUED
        }
        Direction::Request if carries_address_token(msg_type) => Flags::ADDRESS_TOKEN,
        _ => Flags::empty(),
    };
    // AUTH passed step 6 only where it is defined.
    let defined = if auth_defined {
        defined | Flags::AUTH
    } else {
        defined
    };
    if !defined.contains(flags) {
        return Err(DecodeError::UnknownFlags);
    }
    if !all_zero(&datagram[field::RESERVED]) {
        return Err(DecodeError::ReservedNonZero);
    }
    let session_id = u64_at(datagram, field::SESSION_ID.start);
    let request_id = u64_at(datagram, field::REQUEST_ID.start);
    if session_id == 0 || request_id == 0 {
        return Err(DecodeError::ZeroId);
    }
    // An authenticated request pays for its sealed reply (spec §2.2, §3.2 step 9a).
    if flags.contains(Flags::AUTH)
        && direction == Direction::Request
        && datagram.len() < AUTH_REQUEST_LEN_MIN
    {
        return Err(DecodeError::ShortAuthenticated);
    }
    let body_len = u16_at(datagram, field::BODY_LEN.start);
    if HEADER_LEN + body_len as usize + token_len(flags) + trailer_len(flags) > datagram.len() {
        return Err(DecodeError::BadBodyLength);
    }
    Ok(Header {
        msg_type,
        flags,
        body_len,
        session_id,
        request_id,
        attempt: u16_at(datagram, field::ATTEMPT.start),
    })
}

/// Decodes a fixed-length request (SHARD_STATUS, NODE_SETTINGS, MEMBERS, REMOVE: spec §4.7 to
/// §4.10):
/// its header, of a type `reads` accepts, a body of exactly `body_len` bytes
/// (`BadBodyLength` otherwise), and zero padding after it.
pub(crate) fn decode_fixed_request(
    datagram: &[u8],
    reads: fn(MessageType) -> bool,
    body_len: usize,
) -> Result<Header, DecodeError> {
    let header = decode(datagram, Direction::Request, reads)?;
    if usize::from(header.body_len) != body_len {
        return Err(DecodeError::BadBodyLength);
    }
    check_padding(datagram, &header)?;
    Ok(header)
}

/// Encodes a fixed-length request (spec §4.7 to §4.9): the header (`msg_type`, no flags, the
/// ids), `body`, then zero padding up to `len` bytes (at least the body's end, at most
/// `DATAGRAM_LEN_MAX`). Returns the datagram length.
pub(crate) fn encode_fixed_request(
    out: &mut [u8],
    msg_type: MessageType,
    ids: HeaderIds,
    body: &[u8],
    len: usize,
) -> Result<usize, EncodeError> {
    let len = len.max(HEADER_LEN + body.len());
    if len > DATAGRAM_LEN_MAX {
        return Err(EncodeError::TooLong);
    }
    let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
    encode(
        out,
        &Header {
            msg_type,
            flags: Flags::empty(),
            body_len: body.len() as u16,
            session_id: ids.session_id,
            request_id: ids.request_id,
            attempt: ids.attempt,
        },
    )?;
    let (body_out, padding) = out[HEADER_LEN..].split_at_mut(body.len());
    body_out.copy_from_slice(body);
    padding.fill(0);
    Ok(len)
}

/// The request types that may carry an address token (spec §7.1.9): the lock requests.
/// SHARD_STATUS, NODE_SETTINGS, MEMBERS and REMOVE read or are authenticated otherwise.
pub(crate) const fn carries_address_token(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::Acquire
            | MessageType::Release
            | MessageType::Renew
            | MessageType::Status
            | MessageType::Configure
            | MessageType::Keepalive
            | MessageType::CancelWait
    )
}

/// Bytes between the body and the padding: the address token if the flag says one is there
/// (spec §3.1).
pub(crate) const fn token_len(flags: Flags) -> usize {
    if flags.contains(Flags::ADDRESS_TOKEN) {
        crate::ADDRESS_TOKEN_LEN
    } else {
        0
    }
}

/// Padding after the body (and the address token, if any) must be zero (spec §2.2); with AUTH
/// the padding ends where the client-auth trailer starts.
pub(crate) fn check_padding(datagram: &[u8], header: &Header) -> Result<(), DecodeError> {
    let body_end = HEADER_LEN + header.body_len as usize + token_len(header.flags);
    let padding_end = datagram.len().saturating_sub(trailer_len(header.flags));
    match datagram.get(body_end..padding_end) {
        Some(padding) if all_zero(padding) => Ok(()),
        _ => Err(DecodeError::NonZeroPadding),
    }
}

/// Writes a header into `out[..HEADER_LEN]`. The caller has checked `out.len() >= HEADER_LEN`.
pub(crate) fn encode(out: &mut [u8], header: &Header) -> Result<(), EncodeError> {
    if header.session_id == 0 || header.request_id == 0 {
        return Err(EncodeError::ZeroId);
    }
    let h = out
        .get_mut(..HEADER_LEN)
        .ok_or(EncodeError::BufferTooSmall)?;
    h[field::MAGIC].copy_from_slice(&MAGIC);
    h[field::VERSION] = VERSION;
    h[field::MSG_TYPE] = header.msg_type.to_wire();
    h[field::FLAGS].copy_from_slice(&header.flags.bits().to_be_bytes());
    h[field::BODY_LEN].copy_from_slice(&header.body_len.to_be_bytes());
    h[field::SESSION_ID].copy_from_slice(&header.session_id.to_be_bytes());
    h[field::REQUEST_ID].copy_from_slice(&header.request_id.to_be_bytes());
    h[field::ATTEMPT].copy_from_slice(&header.attempt.to_be_bytes());
    h[field::RESERVED].fill(0);
    Ok(())
}
