//! udplock-protocol: the udplock wire format (spec/protocol.md).
//!
//! Every udplock message is one UDP datagram: a 32-byte [header](header) at fixed offsets, then
//! a fixed-layout body, then zero padding. This crate turns bytes into typed views and typed
//! values into bytes:
//!
//! - [`Request::decode`] / [`Reply::decode`] borrow ids straight from the datagram: no
//!   allocation, no copy.
//! - [`Request::encode`] / [`Reply::encode`] write into the caller's buffer and return the
//!   length written.
//!
//! # The no-panic contract
//! Decoding any byte sequence of any length returns a value or a [`DecodeError`]; it never
//! panics, never reads out of bounds and never allocates (the crate is `no_std` without
//! `alloc`). Encoding never panics either: a buffer too small or a value out of range is an
//! [`EncodeError`]. The property tests and the fuzz target in `protocol/fuzz/` check this.
//!
//! ```
//! use udplock_protocol::{Request, RequestBody, REQUEST_LEN_MIN};
//! let req = Request {
//!     session_id: 7,
//!     request_id: 1,
//!     attempt: 0,
//!     body: RequestBody::Acquire { resource: b"orders/42", client: b"worker-7", wait_ms: 5_000, ttl_ms: 0 },
//! };
//! let mut buf = [0u8; 1200];
//! let len = req.encode(&mut buf).unwrap();
//! assert!(len >= REQUEST_LEN_MIN);
//! assert_eq!(Request::decode(&buf[..len]).unwrap(), req);
//! ```
#![no_std]
#![forbid(unsafe_code)]

pub mod header;
pub mod registry;
mod reply;
mod request;

pub use header::Header;
pub use registry::{Flags, MessageType, Status};
pub use reply::{Hint, Reply};
pub use request::{Request, RequestBody};

/// The two bytes every udplock datagram starts with ("UL").
pub const MAGIC: [u8; 2] = [0x55, 0x4C];
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the common header.
pub const HEADER_LEN: usize = 32;
/// Size of the fixed part of every reply body.
pub const REPLY_BODY_FIXED_LEN: usize = 44;
/// Size of a reply that carries no holder id: every reply but a STATUS_REPLY naming a holder.
pub const REPLY_LEN_MIN: usize = HEADER_LEN + REPLY_BODY_FIXED_LEN;
/// Longest resource or client id, in bytes (the length travels in one byte).
pub const ID_LEN_MAX: usize = 255;
/// Longest datagram a node accepts; longer ones are dropped. 1200 bytes fits every IPv4 and
/// IPv6 path MTU in practice (the same choice as QUIC's minimum), so no datagram is fragmented.
pub const DATAGRAM_LEN_MAX: usize = 1200;
/// Shortest request a server answers. Requests are padded to this length so that every fixed
/// size reply fits in a datagram no larger than the request (no amplification).
pub const REQUEST_LEN_MIN: usize = REPLY_LEN_MIN;
/// Length a STATUS request is padded to, so the reply can name a holder of the longest id.
pub const STATUS_REQUEST_LEN: usize = REPLY_LEN_MIN + ID_LEN_MAX;
/// Length an ACQUIRE that may wait (wait_ms > 0) is padded to: it may cause two replies, a
/// provisional WAITING at once and the final answer later, and the bytes a server sends in
/// answer to one datagram never exceed that datagram (spec §2.2).
pub const ACQUIRE_WAIT_REQUEST_LEN: usize = 2 * REPLY_LEN_MIN;
/// A client never sends a copy of a request later than this after its first transmission; a
/// server remembers sessions longer than this, so no late copy can run twice (spec §6.6).
pub const REQUEST_LIFETIME_MS_MAX: u32 = 360_000;

const _: () = assert!(HEADER_LEN == 32);
const _: () = assert!(REPLY_LEN_MIN == 76);
const _: () = assert!(STATUS_REQUEST_LEN == 331);
const _: () = assert!(STATUS_REQUEST_LEN <= DATAGRAM_LEN_MAX);
const _: () = assert!(ACQUIRE_WAIT_REQUEST_LEN <= DATAGRAM_LEN_MAX);
// The longest request (an ACQUIRE with two 255-byte ids) must fit in a datagram.
const _: () = assert!(HEADER_LEN + 10 + 2 * ID_LEN_MAX <= DATAGRAM_LEN_MAX);

/// Why a datagram did not decode. Tiny and `Copy` so the hot path can match on it cheaply.
///
/// [`DecodeError::reply_status`] says what a server answers (or that it drops the datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    TooShort,
    /// More than [`DATAGRAM_LEN_MAX`] bytes.
    TooLong,
    /// Not a udplock datagram.
    BadMagic,
    /// A version this crate does not speak.
    UnsupportedVersion,
    /// A message type that is not registered, or reserved for future client messages.
    UnknownType,
    /// A registered type in the wrong direction (a reply sent to a server, a request to a
    /// client), or a node-to-node type (0x40..=0x7F) that version 1 does not use.
    UnexpectedType,
    /// A reserved flag bit is set.
    UnknownFlags,
    /// The AUTH flag is set; version 1 has no authentication trailer.
    AuthUnsupported,
    /// A reserved header byte is not zero.
    ReservedNonZero,
    /// The session id or request id is zero.
    ZeroId,
    /// body_len does not fit the datagram or does not match the body's own lengths.
    BadBodyLength,
    /// A padding byte after the body is not zero.
    NonZeroPadding,
    /// A resource or client id of length zero.
    EmptyId,
    /// Reply: an unknown hint kind, or non-zero bytes where the hint layout wants zeros.
    BadHintKind,
    /// Reply: a status code that is not registered.
    UnknownStatus,
    /// Reply: a holder id in a reply other than STATUS_REPLY.
    BadHolderLength,
}

impl DecodeError {
    /// What a server answers to a request that failed this way, in an ERROR_REPLY, or `None`
    /// when it must drop the datagram silently (spec §7: not ours, or nothing safe to answer).
    pub const fn reply_status(self) -> Option<Status> {
        match self {
            // A zero id could not be echoed in a way any client matches (spec §3.2 row 9).
            DecodeError::TooShort
            | DecodeError::TooLong
            | DecodeError::BadMagic
            | DecodeError::UnexpectedType
            | DecodeError::ZeroId => None,
            DecodeError::UnsupportedVersion => Some(Status::UnsupportedVersion),
            DecodeError::UnknownType | DecodeError::UnknownFlags | DecodeError::AuthUnsupported => {
                Some(Status::Unsupported)
            }
            DecodeError::EmptyId => Some(Status::InvalidArgument),
            DecodeError::ReservedNonZero
            | DecodeError::BadBodyLength
            | DecodeError::NonZeroPadding
            | DecodeError::BadHintKind
            | DecodeError::UnknownStatus
            | DecodeError::BadHolderLength => Some(Status::Malformed),
        }
    }

    /// The name the spec and the test vectors use.
    pub const fn name(self) -> &'static str {
        match self {
            DecodeError::TooShort => "TooShort",
            DecodeError::TooLong => "TooLong",
            DecodeError::BadMagic => "BadMagic",
            DecodeError::UnsupportedVersion => "UnsupportedVersion",
            DecodeError::UnknownType => "UnknownType",
            DecodeError::UnexpectedType => "UnexpectedType",
            DecodeError::UnknownFlags => "UnknownFlags",
            DecodeError::AuthUnsupported => "AuthUnsupported",
            DecodeError::ReservedNonZero => "ReservedNonZero",
            DecodeError::ZeroId => "ZeroId",
            DecodeError::BadBodyLength => "BadBodyLength",
            DecodeError::NonZeroPadding => "NonZeroPadding",
            DecodeError::EmptyId => "EmptyId",
            DecodeError::BadHintKind => "BadHintKind",
            DecodeError::UnknownStatus => "UnknownStatus",
            DecodeError::BadHolderLength => "BadHolderLength",
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a value could not be encoded. Nothing was written that the caller should send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output buffer is shorter than the datagram.
    BufferTooSmall,
    /// An id is empty or longer than [`ID_LEN_MAX`].
    BadIdLength,
    /// The session id or request id is zero.
    ZeroId,
    /// A reply type was given where a request type is needed, or the reverse.
    WrongType,
    /// The padded length asked for exceeds [`DATAGRAM_LEN_MAX`].
    TooLong,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self {
            EncodeError::BufferTooSmall => "output buffer too small",
            EncodeError::BadIdLength => "id must be 1 to 255 bytes",
            EncodeError::ZeroId => "session id and request id must be non-zero",
            EncodeError::WrongType => "message type does not fit this message",
            EncodeError::TooLong => "datagram would exceed DATAGRAM_LEN_MAX",
        };
        f.write_str(what)
    }
}

/// Big-endian field readers over a slice whose length the caller has already checked.
/// `get` keeps them panic-free even if a check is ever wrong: a short slice reads as zeros
/// and the length checks upstream turn that into an error.
pub(crate) mod be {
    pub fn u16_at(b: &[u8], at: usize) -> u16 {
        match b.get(at..at + 2) {
            Some(s) => u16::from_be_bytes([s[0], s[1]]),
            None => 0,
        }
    }
    pub fn u32_at(b: &[u8], at: usize) -> u32 {
        match b.get(at..at + 4) {
            Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
            None => 0,
        }
    }
    pub fn u64_at(b: &[u8], at: usize) -> u64 {
        match b.get(at..at + 8) {
            Some(s) => u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
            None => 0,
        }
    }
}

/// True if every byte is zero.
pub(crate) fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}
