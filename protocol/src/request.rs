//! Client lock requests (spec §4): ACQUIRE, RELEASE, RENEW, STATUS, CONFIGURE, KEEPALIVE
//! (§4.11), CANCEL_WAIT (§4.12). (SHARD_STATUS, §4.7, has its own codec:
//! [`crate::ShardStatusRequest`].)
//!
//! Each body is a few fixed fields followed by one or two length-prefixed ids; the lengths
//! sit before the ids so that a body is read front to back with no search. KEEPALIVE (§4.11)
//! names no resource: a shard, a TTL and a counted list of fencing tokens.
//!
//! [`RequestBody`] is the one operation type of the whole service: the client builds it, the
//! node decodes it, the Raft log carries it inside [`crate::LogCommand::Request`] (spec §8.7)
//! and the lock table executes it. [`RequestKind`] names an operation without its arguments
//! (what a reply answers, what a session remembers); its message types are listed once, in
//! [`RequestKind::request_type`]. A new operation is a variant of each of the two enums and
//! its handlers.

use crate::be::{u16_at, u32_at, u64_at};
use crate::client_auth::{self, ClientAuth};
use crate::header::{self, Direction, Header};
use crate::registry::{Flags, MessageType};
use crate::{
    AddressToken, DecodeError, EncodeError, ACQUIRE_WAIT_REQUEST_LEN, ADDRESS_TOKEN_LEN,
    AUTH_ACQUIRE_WAIT_REQUEST_LEN, AUTH_REQUEST_LEN_MIN, AUTH_STATUS_REQUEST_LEN,
    CLIENT_AUTH_TRAILER_LEN, DATAGRAM_LEN_MAX, HEADER_LEN, ID_LEN_MAX, REQUEST_LEN_MIN,
    STATUS_REQUEST_LEN,
};

/// Most fencing tokens one KEEPALIVE lists (spec §4.11). Two bounds meet here: the reply's
/// 64-bit token field carries one bit per listed token, and the log command that carries a
/// KEEPALIVE through a shard's log (spec §8.7) holds 64 tokens in exactly
/// [`crate::LOG_COMMAND_LEN_MAX`] bytes.
pub const KEEPALIVE_TOKENS_MAX: usize = 64;

/// The fixed part of a KEEPALIVE body: shard u16, shards u16, ttl_ms u32, count u16,
/// reserved u16; the tokens follow (at byte 44 of the datagram).
pub const KEEPALIVE_FIXED_LEN: usize = 12;

/// Byte offsets inside a KEEPALIVE body (spec §4.11).
mod keepalive_field {
    use core::ops::Range;
    /// `shard`, u16, the shard whose holds are listed.
    pub const SHARD: Range<usize> = 0..2;
    /// `shards`, u16, the shard count the client computed `shard` with.
    pub const SHARDS: Range<usize> = 2..4;
    /// `ttl_ms`, u32, the new lease of each renewed hold; 0 keeps each one's TTL.
    pub const TTL_MS: Range<usize> = 4..8;
    /// `count`, u16, tokens that follow, 1 to 64.
    pub const COUNT: Range<usize> = 8..10;
    /// Reserved, zero.
    pub const RESERVED: Range<usize> = 10..12;
    /// `token` × `count`, u64 each, the fencing tokens of the holds to renew.
    pub const TOKENS: usize = 12;
}

const _: () = assert!(keepalive_field::TOKENS == KEEPALIVE_FIXED_LEN);
const _: () =
    assert!(HEADER_LEN + KEEPALIVE_FIXED_LEN + 8 * KEEPALIVE_TOKENS_MAX <= DATAGRAM_LEN_MAX);

/// Fencing tokens as a KEEPALIVE lists them: big-endian u64s, borrowed from the datagram, the
/// log entry or a caller's buffer ([`Tokens::write`]). Compared by their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tokens<'a>(&'a [u8]);

impl<'a> Tokens<'a> {
    /// Writes `tokens` into `buf` as a KEEPALIVE carries them; `None` if `buf` is too small.
    pub fn write(tokens: &[u64], buf: &'a mut [u8]) -> Option<Tokens<'a>> {
        let out = buf.get_mut(..tokens.len().checked_mul(8)?)?;
        for (chunk, token) in out.chunks_exact_mut(8).zip(tokens) {
            chunk.copy_from_slice(&token.to_be_bytes());
        }
        Some(Tokens(out))
    }

    /// The tokens whose big-endian bytes are `bytes`; `None` unless a multiple of 8 bytes.
    pub fn from_bytes(bytes: &'a [u8]) -> Option<Tokens<'a>> {
        (bytes.len() % 8 == 0).then_some(Tokens(bytes))
    }

    /// The tokens' wire bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.0.len() / 8
    }

    /// True if no token is listed (a KEEPALIVE lists at least one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `i`-th token.
    pub fn get(&self, i: usize) -> Option<u64> {
        (i < self.len()).then(|| u64_at(self.0, 8 * i))
    }

    /// The tokens in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + 'a {
        self.0.chunks_exact(8).map(|c| u64_at(c, 0))
    }
}

/// A decoded request. Ids borrow from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Random non-zero id the client picked at start-up.
    pub session_id: u64,
    /// Non-zero, strictly increasing per session for each new operation; the same on every
    /// retransmission (the idempotency key is (session_id, request_id)).
    pub request_id: u64,
    /// 0 on the first send, +1 per retransmission.
    pub attempt: u16,
    /// The operation and its arguments.
    pub body: RequestBody<'a>,
}

/// Which lock operation a request asks for, without its arguments (spec §4.2 to §4.6,
/// §4.11, §4.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// ACQUIRE (0x01, spec §4.2): take the lock, or a further re-entrant hold.
    Acquire,
    /// RELEASE (0x02, spec §4.3): give back one hold.
    Release,
    /// RENEW (0x03, spec §4.4): extend one hold's lease.
    Renew,
    /// STATUS (0x04, spec §4.5): read the lock's state; never logged.
    Status,
    /// CONFIGURE (0x05, spec §4.6): set a resource's default TTL.
    Configure,
    /// KEEPALIVE (0x0A, spec §4.11): renew up to [`KEEPALIVE_TOKENS_MAX`] holds of one shard.
    Keepalive,
    /// CANCEL_WAIT (0x0B, spec §4.12): withdraw a queued ACQUIRE.
    CancelWait,
}

impl RequestKind {
    /// Every operation, in registry order.
    pub const ALL: [RequestKind; 7] = [
        RequestKind::Acquire,
        RequestKind::Release,
        RequestKind::Renew,
        RequestKind::Status,
        RequestKind::Configure,
        RequestKind::Keepalive,
        RequestKind::CancelWait,
    ];

    /// The request message type that asks for it: the one table from operations to types
    /// (every other mapping below is derived from it).
    pub const fn request_type(self) -> MessageType {
        match self {
            RequestKind::Acquire => MessageType::Acquire,
            RequestKind::Release => MessageType::Release,
            RequestKind::Renew => MessageType::Renew,
            RequestKind::Status => MessageType::Status,
            RequestKind::Configure => MessageType::Configure,
            RequestKind::Keepalive => MessageType::Keepalive,
            RequestKind::CancelWait => MessageType::CancelWait,
        }
    }

    /// The reply message type that answers it.
    pub const fn reply_type(self) -> MessageType {
        match self.request_type().reply_type() {
            Some(t) => t,
            None => panic!("every request type has a reply type"),
        }
    }

    /// The operation a request type asks for; `None` for every other type (SHARD_STATUS and
    /// NODE_SETTINGS included: they are no lock operations).
    pub fn of_request_type(t: MessageType) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|k| k.request_type() == t)
    }

    /// The operation a reply type answers; `None` for every other type.
    pub fn of_reply_type(t: MessageType) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|k| k.reply_type() == t)
    }

    /// Whether the operation goes through a shard's log (spec §8.7): all but STATUS, a read
    /// the leader answers from its applied state (spec §8.9).
    pub const fn is_logged(self) -> bool {
        !matches!(self, RequestKind::Status)
    }
}

/// The message-specific part of a request: the operation and its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestBody<'a> {
    /// Take the lock; the server may queue the request for up to `wait_ms` (0: never queue).
    /// `ttl_ms` 0 asks for the resource's default lease.
    Acquire {
        /// The lock: the resource id, 1 to 255 bytes (spec §4.1, §6.1).
        resource: &'a [u8],
        /// The would-be owner: the client id, 1 to 255 bytes (spec §4.1, §6.2).
        client: &'a [u8],
        /// How long in milliseconds the server may keep the request queued, counted from its
        /// receipt of the first copy; 0: grant or refuse at once. At most `wait_ms_max`
        /// (spec §4.2, §9).
        wait_ms: u32,
        /// The lease to grant in milliseconds; 0: the resource's default TTL. At most
        /// `ttl_ms_max` (spec §4.2, §6.4).
        ttl_ms: u32,
    },
    /// Give back one re-entrant hold.
    Release {
        /// The lock: the resource id, 1 to 255 bytes (spec §4.1, §6.1).
        resource: &'a [u8],
        /// The owner giving back one hold (spec §4.3).
        client: &'a [u8],
    },
    /// Extend the lease; `ttl_ms` 0 keeps the hold's current TTL.
    Renew {
        /// The lock: the resource id, 1 to 255 bytes (spec §4.1, §6.1).
        resource: &'a [u8],
        /// The holder (spec §4.4).
        client: &'a [u8],
        /// The new lease in milliseconds, counted from the renewal; 0: the hold's current TTL.
        /// At most `ttl_ms_max` (spec §4.4, §6.4).
        ttl_ms: u32,
    },
    /// Read the lock's state.
    Status {
        /// The lock: the resource id, 1 to 255 bytes (spec §4.1, §6.1).
        resource: &'a [u8],
    },
    /// Set the resource's default TTL (0 clears it).
    Configure {
        /// The resource to configure (spec §4.6).
        resource: &'a [u8],
        /// The resource's new default TTL in milliseconds; 0 removes it, so the server's
        /// `ttl_default_ms` applies again. At most `ttl_ms_max` (spec §4.6).
        default_ttl_ms: u32,
    },
    /// Renew every listed hold of `shard` still held under its token (spec §4.11); `ttl_ms` 0
    /// keeps each hold's current TTL. Names no resource: the client names the shard, and the
    /// shard count `shards` it computed it with (a token names a hold only within one
    /// shard's table, so a node whose shard count differs refuses it).
    Keepalive {
        /// The shard whose holds are listed: the shard of their resources (spec §4.11, §8.2;
        /// 0 on a single node).
        shard: u16,
        /// The shard count the client computed `shard` with (spec §4.11).
        shards: u16,
        /// The new lease in milliseconds of each renewed hold, counted from the renewal; 0:
        /// each hold's current TTL (spec §4.11, §6.4).
        ttl_ms: u32,
        /// The fencing tokens of the holds to renew, 1 to [`KEEPALIVE_TOKENS_MAX`], in any
        /// order; the reply's bitmap follows this order (spec §4.11).
        tokens: Tokens<'a>,
    },
    /// Withdraw `client`'s ACQUIRE of `resource` that was sent as request `target_request`
    /// of session `target_session` (spec §4.12), if it still waits in the queue.
    CancelWait {
        /// The lock the target waits for: the target's resource id (spec §4.12).
        resource: &'a [u8],
        /// The target's client id: only the would-be owner withdraws its wait (spec §4.12).
        client: &'a [u8],
        /// The session id the target ACQUIRE was sent with; non-zero (spec §4.12).
        target_session: u64,
        /// The request id the target ACQUIRE was sent with; non-zero (spec §4.12).
        target_request: u64,
    },
}

impl<'a> RequestBody<'a> {
    /// Which operation this is.
    pub const fn kind(&self) -> RequestKind {
        match self {
            RequestBody::Acquire { .. } => RequestKind::Acquire,
            RequestBody::Release { .. } => RequestKind::Release,
            RequestBody::Renew { .. } => RequestKind::Renew,
            RequestBody::Status { .. } => RequestKind::Status,
            RequestBody::Configure { .. } => RequestKind::Configure,
            RequestBody::Keepalive { .. } => RequestKind::Keepalive,
            RequestBody::CancelWait { .. } => RequestKind::CancelWait,
        }
    }

    /// The message type that carries this body.
    pub const fn msg_type(&self) -> MessageType {
        self.kind().request_type()
    }

    /// The resource the request is about; empty for KEEPALIVE, which names a shard instead
    /// ([`RequestBody::shard_named`]).
    pub const fn resource(&self) -> &'a [u8] {
        match *self {
            RequestBody::Acquire { resource, .. }
            | RequestBody::Release { resource, .. }
            | RequestBody::Renew { resource, .. }
            | RequestBody::Status { resource }
            | RequestBody::Configure { resource, .. }
            | RequestBody::CancelWait { resource, .. } => resource,
            RequestBody::Keepalive { .. } => &[],
        }
    }

    /// The shard a KEEPALIVE names (spec §4.11); `None` for the requests that name a
    /// resource, whose shard is the resource's (spec §8.2).
    pub const fn shard_named(&self) -> Option<u32> {
        match *self {
            RequestBody::Keepalive { shard, .. } => Some(shard as u32),
            _ => None,
        }
    }

    /// The fixed fields before the ids, and whether a client id follows the resource id.
    const fn layout(kind: RequestKind) -> (usize, bool) {
        match kind {
            RequestKind::Acquire => (8, true),
            RequestKind::Release => (0, true),
            RequestKind::Renew => (4, true),
            RequestKind::Status => (0, false),
            RequestKind::Configure => (4, false),
            // Not read through the layout: KEEPALIVE has a codec of its own.
            RequestKind::Keepalive => (KEEPALIVE_FIXED_LEN, false),
            RequestKind::CancelWait => (16, true),
        }
    }

    /// Length of the body: fixed fields, the length bytes, the ids.
    pub fn body_len(&self) -> usize {
        if let RequestBody::Keepalive { tokens, .. } = self {
            return KEEPALIVE_FIXED_LEN + tokens.as_bytes().len();
        }
        let (fixed, two_ids) = Self::layout(self.kind());
        let (r, c) = self.ids();
        fixed
            + if two_ids {
                2 + r.len() + c.len()
            } else {
                1 + r.len()
            }
    }

    /// The client the request acts for; `None` for STATUS and CONFIGURE, which name none.
    pub const fn client(&self) -> Option<&'a [u8]> {
        match *self {
            RequestBody::Acquire { client, .. }
            | RequestBody::Release { client, .. }
            | RequestBody::Renew { client, .. }
            | RequestBody::CancelWait { client, .. } => Some(client),
            RequestBody::Status { .. }
            | RequestBody::Configure { .. }
            | RequestBody::Keepalive { .. } => None,
        }
    }

    /// The resource id and the client id (empty if the operation names no client).
    pub(crate) fn ids(&self) -> (&'a [u8], &'a [u8]) {
        (self.resource(), self.client().unwrap_or_default())
    }

    /// The operation's numbers as (`wait_ms`, `ttl_ms`), 0 where it has none: only ACQUIRE
    /// waits; `ttl_ms` is ACQUIRE's and RENEW's `ttl_ms` and CONFIGURE's `default_ttl_ms`. A
    /// log command carries them in two fields of these names (spec §8.7). KEEPALIVE: its
    /// shard and shard count (two u16) in the place of `wait_ms`, and its `ttl_ms`.
    pub(crate) const fn numbers(&self) -> (u32, u32) {
        match *self {
            RequestBody::Acquire {
                wait_ms, ttl_ms, ..
            } => (wait_ms, ttl_ms),
            RequestBody::Keepalive {
                shard,
                shards,
                ttl_ms,
                ..
            } => ((shard as u32) << 16 | shards as u32, ttl_ms),
            RequestBody::Renew { ttl_ms, .. } => (0, ttl_ms),
            RequestBody::Configure { default_ttl_ms, .. } => (0, default_ttl_ms),
            RequestBody::Release { .. }
            | RequestBody::Status { .. }
            | RequestBody::CancelWait { .. } => (0, 0),
        }
    }

    /// CANCEL_WAIT's target as (`target_session`, `target_request`); (0, 0) for every other
    /// operation. A log command carries it after the client id (spec §8.7).
    pub const fn target(&self) -> (u64, u64) {
        match *self {
            RequestBody::CancelWait {
                target_session,
                target_request,
                ..
            } => (target_session, target_request),
            _ => (0, 0),
        }
    }

    /// The operation of `kind` with these ids, numbers and target (as [`RequestBody::numbers`]
    /// and [`RequestBody::target`] give them): the one constructor of both decoders, the
    /// datagram's and the log's. What `kind` has no field for is dropped (a client id for
    /// STATUS and CONFIGURE, a number, a target): a decoder that must refuse it compares `ids`,
    /// `numbers` and `target` of the result with what it read.
    /// Not for KEEPALIVE (its decoders build it themselves).
    pub(crate) fn from_parts(
        kind: RequestKind,
        resource: &'a [u8],
        client: &'a [u8],
        (wait_ms, ttl_ms): (u32, u32),
        (target_session, target_request): (u64, u64),
    ) -> RequestBody<'a> {
        match kind {
            RequestKind::Acquire => RequestBody::Acquire {
                resource,
                client,
                wait_ms,
                ttl_ms,
            },
            RequestKind::Release => RequestBody::Release { resource, client },
            RequestKind::Renew => RequestBody::Renew {
                resource,
                client,
                ttl_ms,
            },
            RequestKind::Status => RequestBody::Status { resource },
            RequestKind::Configure => RequestBody::Configure {
                resource,
                default_ttl_ms: ttl_ms,
            },
            RequestKind::Keepalive => unreachable!("KEEPALIVE has decoders of its own"),
            RequestKind::CancelWait => RequestBody::CancelWait {
                resource,
                client,
                target_session,
                target_request,
            },
        }
    }

    /// The u32 fields at the start of the body, in wire order (unused ones are 0): ACQUIRE's
    /// `wait_ms` then `ttl_ms`, RENEW's `ttl_ms`, CONFIGURE's `default_ttl_ms` (spec §4).
    fn fixed_u32s(&self) -> [u32; 2] {
        let (wait_ms, ttl_ms) = self.numbers();
        match self.kind() {
            RequestKind::Acquire => [wait_ms, ttl_ms],
            _ => [ttl_ms, 0],
        }
    }
}

/// The request types [`Request::decode`] reads: the seven lock requests (spec §4.2 to §4.6,
/// §4.11 and §4.12).
/// SHARD_STATUS, which only a node of a cluster answers, has its own decoder
/// ([`crate::ShardStatusRequest`]); given to this one it is `UnknownType` (UNSUPPORTED).
fn is_lock_request(t: MessageType) -> bool {
    RequestKind::of_request_type(t).is_some()
}

impl<'a> Request<'a> {
    /// Decodes a request datagram (spec §3.2 and §4). Never panics; never allocates.
    ///
    /// Only the lock requests decode here; SHARD_STATUS fails with
    /// [`DecodeError::UnknownType`], which a single node answers UNSUPPORTED (spec §4.7). A
    /// cluster node looks at the type byte first and hands SHARD_STATUS to
    /// [`crate::ShardStatusRequest::decode`].
    pub fn decode(datagram: &'a [u8]) -> Result<Request<'a>, DecodeError> {
        Request::decode_with_token(datagram).map(|(request, _)| request)
    }

    /// Decodes a request datagram as [`Request::decode`] does, and returns the address
    /// token that follows its body when the ADDRESS_TOKEN flag is set (spec §3.1, §7.1.9).
    pub fn decode_with_token(
        datagram: &'a [u8],
    ) -> Result<(Request<'a>, Option<AddressToken>), DecodeError> {
        let header = header::decode(datagram, Direction::Request, is_lock_request)?;
        let request = Request::decode_body(datagram, &header)?;
        Ok((request, Request::token_of(datagram, &header)))
    }

    /// Decodes a request that may be authenticated (spec §3.1, §7.1.10): as
    /// [`Request::decode_with_token`], but the AUTH flag is defined, and with it the datagram
    /// ends with the client-auth trailer, whose key id is returned as [`ClientAuth`]. Nothing
    /// is verified: the server looks the key id up and checks the MAC
    /// ([`crate::ClientKey::verify_request`], spec §7.2.6). An AUTH request shorter than
    /// [`AUTH_REQUEST_LEN_MIN`] fails with [`DecodeError::ShortAuthenticated`].
    pub fn decode_authenticated(
        datagram: &'a [u8],
    ) -> Result<(Request<'a>, Option<AddressToken>, Option<ClientAuth>), DecodeError> {
        let header = header::decode_with_auth(datagram, Direction::Request, is_lock_request, true)?;
        let request = Request::decode_body(datagram, &header)?;
        let token = Request::token_of(datagram, &header);
        let auth = header.flags.contains(Flags::AUTH).then(|| ClientAuth {
            // header::decode_with_auth checked the trailer fits.
            key_id: client_auth::trailer_key_id(datagram),
        });
        Ok((request, token, auth))
    }

    fn token_of(datagram: &[u8], header: &Header) -> Option<AddressToken> {
        if header.flags.contains(Flags::ADDRESS_TOKEN) {
            // header::decode checked the token fits before the datagram's end.
            let at = HEADER_LEN + usize::from(header.body_len);
            let mut token = [0u8; ADDRESS_TOKEN_LEN];
            token.copy_from_slice(&datagram[at..at + ADDRESS_TOKEN_LEN]);
            Some(AddressToken(token))
        } else {
            None
        }
    }

    fn decode_body(datagram: &'a [u8], header: &Header) -> Result<Request<'a>, DecodeError> {
        let header = *header;
        let body = &datagram[HEADER_LEN..HEADER_LEN + header.body_len as usize];
        // header::decode only lets the lock request types through.
        let kind =
            RequestKind::of_request_type(header.msg_type).ok_or(DecodeError::UnexpectedType)?;
        if kind == RequestKind::Keepalive {
            let body = decode_keepalive(body)?;
            header::check_padding(datagram, &header)?;
            return Ok(Request {
                session_id: header.session_id,
                request_id: header.request_id,
                attempt: header.attempt,
                body,
            });
        }
        let (fixed, two_ids) = RequestBody::layout(kind);
        let ids_at = fixed + if two_ids { 2 } else { 1 };
        if body.len() < ids_at {
            return Err(DecodeError::BadBodyLength);
        }
        let rlen = body[fixed] as usize;
        let clen = if two_ids { body[fixed + 1] as usize } else { 0 };
        if rlen == 0 || (two_ids && clen == 0) {
            return Err(DecodeError::EmptyId);
        }
        if ids_at + rlen + clen != body.len() {
            return Err(DecodeError::BadBodyLength);
        }
        let resource = &body[ids_at..ids_at + rlen];
        let client = &body[ids_at + rlen..];
        // The inverse of `fixed_u32s`.
        let numbers = match kind {
            RequestKind::Acquire => (u32_at(body, 0), u32_at(body, 4)),
            RequestKind::CancelWait => (0, 0),
            _ if fixed >= 4 => (0, u32_at(body, 0)),
            _ => (0, 0),
        };
        let target = match kind {
            RequestKind::CancelWait => (u64_at(body, 0), u64_at(body, 8)),
            _ => (0, 0),
        };
        let body = RequestBody::from_parts(kind, resource, client, numbers, target);
        header::check_padding(datagram, &header)?;
        Ok(Request {
            session_id: header.session_id,
            request_id: header.request_id,
            attempt: header.attempt,
            body,
        })
    }

    /// The datagram length a client sends: the body, padded to [`REQUEST_LEN_MIN`]; to
    /// [`STATUS_REQUEST_LEN`] for STATUS, so the reply can name the holder; to
    /// [`ACQUIRE_WAIT_REQUEST_LEN`] for an ACQUIRE that may wait, so it can be answered
    /// WAITING at once and finally later (spec §2.2).
    pub fn padded_len(&self) -> usize {
        let unpadded = HEADER_LEN + self.body.body_len();
        let floor = match self.body {
            RequestBody::Status { .. } => STATUS_REQUEST_LEN,
            RequestBody::Acquire { wait_ms, .. } if wait_ms > 0 => ACQUIRE_WAIT_REQUEST_LEN,
            _ => REQUEST_LEN_MIN,
        };
        unpadded.max(floor)
    }

    /// The datagram length a client sends with a client key (spec §2.2, §7.1.10): the body
    /// and the 24-byte trailer, padded to [`AUTH_REQUEST_LEN_MIN`]; to
    /// [`AUTH_STATUS_REQUEST_LEN`] for STATUS; to [`AUTH_ACQUIRE_WAIT_REQUEST_LEN`] for an
    /// ACQUIRE that may wait. Each is the plain length plus what the sealed replies add.
    pub fn padded_len_auth(&self) -> usize {
        let unpadded = HEADER_LEN + self.body.body_len() + CLIENT_AUTH_TRAILER_LEN;
        let floor = match self.body {
            RequestBody::Status { .. } => AUTH_STATUS_REQUEST_LEN,
            RequestBody::Acquire { wait_ms, .. } if wait_ms > 0 => AUTH_ACQUIRE_WAIT_REQUEST_LEN,
            _ => AUTH_REQUEST_LEN_MIN,
        };
        unpadded.max(floor)
    }

    /// Encodes the request padded to [`Request::padded_len`]. Returns the datagram length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.encode_padded(out, self.padded_len())
    }

    /// Encodes the request with `token` after its body (flag ADDRESS_TOKEN, spec §3.1,
    /// §7.1.9), padded to [`Request::padded_len`] (longer only if the token does not fit in
    /// the padding). Without a token, the same bytes as [`Request::encode`].
    pub fn encode_with_token(
        &self,
        out: &mut [u8],
        token: Option<&AddressToken>,
    ) -> Result<usize, EncodeError> {
        self.encode_padded_with_token(out, self.padded_len(), token)
    }

    /// Encodes the request with `token` after its body (as [`Request::encode_with_token`])
    /// and, with a `key`, sealed (spec §3.1, §7.1.10): the AUTH flag set, padded to
    /// [`Request::padded_len_auth`] (longer only if the token does not fit), and ended by the
    /// client-auth trailer with the key's id and the request MAC of every byte before it.
    /// Without a key, the same bytes as [`Request::encode_with_token`].
    #[cfg(feature = "crypto")]
    pub fn encode_sealed(
        &self,
        out: &mut [u8],
        token: Option<&AddressToken>,
        key: Option<&crate::ClientKey>,
    ) -> Result<usize, EncodeError> {
        match key {
            None => self.encode_with_token(out, token),
            Some(key) => self.encode_padded_sealed(out, self.padded_len_auth(), token, key),
        }
    }

    /// [`Request::encode_sealed`] with a key and another length: `len` bytes in all (at
    /// least the body's end, the token and the trailer). For tests and tools; clients use
    /// [`Request::encode_sealed`].
    #[cfg(feature = "crypto")]
    pub fn encode_padded_sealed(
        &self,
        out: &mut [u8],
        len: usize,
        token: Option<&AddressToken>,
        key: &crate::ClientKey,
    ) -> Result<usize, EncodeError> {
        let token_len = token.map_or(0, |_| ADDRESS_TOKEN_LEN);
        let len = len.max(HEADER_LEN + self.body.body_len() + token_len + CLIENT_AUTH_TRAILER_LEN);
        if len > DATAGRAM_LEN_MAX {
            return Err(EncodeError::TooLong);
        }
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        let unsealed = len - CLIENT_AUTH_TRAILER_LEN;
        let n = self.encode_padded_with_token(out, unsealed, token)?;
        debug_assert_eq!(n, unsealed);
        let flags = u16_at(out, header::field::FLAGS.start) | Flags::AUTH.bits();
        out[header::field::FLAGS].copy_from_slice(&flags.to_be_bytes());
        key.seal(client_auth::SealDirection::Request, out);
        Ok(len)
    }

    /// Encodes the request, then zero padding up to `len` bytes (at least the body's end).
    /// For tests and tools that need other paddings; clients use [`Request::encode`].
    pub fn encode_padded(&self, out: &mut [u8], len: usize) -> Result<usize, EncodeError> {
        self.encode_padded_with_token(out, len, None)
    }

    /// [`Request::encode_padded`] with an address token after the body (spec §3.1): the
    /// datagram is then at least the body's end plus [`ADDRESS_TOKEN_LEN`] bytes.
    pub fn encode_padded_with_token(
        &self,
        out: &mut [u8],
        len: usize,
        token: Option<&AddressToken>,
    ) -> Result<usize, EncodeError> {
        let len = self.encode_padded_untokened(out, len, token.is_some())?;
        if let Some(token) = token {
            let at = HEADER_LEN + self.body.body_len();
            out[at..at + ADDRESS_TOKEN_LEN].copy_from_slice(&token.0);
            let flags = Flags::ADDRESS_TOKEN.bits().to_be_bytes();
            out[header::field::FLAGS].copy_from_slice(&flags);
        }
        Ok(len)
    }

    /// Encodes header, body and zero padding, leaving room for a token if `token_room`.
    fn encode_padded_untokened(
        &self,
        out: &mut [u8],
        len: usize,
        token_room: bool,
    ) -> Result<usize, EncodeError> {
        let (resource, client) = self.body.ids();
        let (fixed, two_ids) = RequestBody::layout(self.body.kind());
        let keepalive = self.body.kind() == RequestKind::Keepalive;
        let bad_len = |id: &[u8]| id.is_empty() || id.len() > ID_LEN_MAX;
        if let RequestBody::Keepalive { tokens, .. } = self.body {
            if !(1..=KEEPALIVE_TOKENS_MAX).contains(&tokens.len()) {
                return Err(EncodeError::BadTokenCount);
            }
        } else if bad_len(resource) || (two_ids && bad_len(client)) {
            return Err(EncodeError::BadIdLength);
        }
        let body_len = self.body.body_len();
        let token_len = if token_room { ADDRESS_TOKEN_LEN } else { 0 };
        let len = len.max(HEADER_LEN + body_len + token_len);
        if len > DATAGRAM_LEN_MAX {
            return Err(EncodeError::TooLong);
        }
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
        header::encode(
            out,
            &Header {
                msg_type: self.body.msg_type(),
                flags: Flags::empty(),
                body_len: body_len as u16,
                session_id: self.session_id,
                request_id: self.request_id,
                attempt: self.attempt,
            },
        )?;
        let b = &mut out[HEADER_LEN..];
        if keepalive {
            encode_keepalive(&self.body, b);
            return Ok(len);
        }
        if let RequestBody::CancelWait {
            target_session,
            target_request,
            ..
        } = self.body
        {
            b[0..8].copy_from_slice(&target_session.to_be_bytes());
            b[8..16].copy_from_slice(&target_request.to_be_bytes());
        } else {
            let [first, second] = self.body.fixed_u32s();
            if fixed >= 4 {
                b[0..4].copy_from_slice(&first.to_be_bytes());
            }
            if fixed >= 8 {
                b[4..8].copy_from_slice(&second.to_be_bytes());
            }
        }
        let mut at = fixed;
        b[at] = resource.len() as u8;
        at += 1;
        if two_ids {
            b[at] = client.len() as u8;
            at += 1;
        }
        b[at..at + resource.len()].copy_from_slice(resource);
        at += resource.len();
        b[at..at + client.len()].copy_from_slice(client);
        at += client.len();
        debug_assert_eq!(at, body_len);
        b[at..].fill(0);
        Ok(len)
    }
}

/// Copies the request datagram `request` (as [`Request::encode`] wrote it: no flag) into
/// `out` with `token` after its body and the ADDRESS_TOKEN flag set (spec §3.1, §7.1.9), for a
/// client that keeps a request's bytes and sends some copies with a token. The result is as
/// long as `request`, or the body's end plus the token if that is longer; its padding is zero.
/// Returns its length.
///
/// Errors, with `out` unspecified: `request` is not a lock request without flags whose
/// `body_len` fits ([`EncodeError::WrongType`]); `out` is too short
/// ([`EncodeError::BufferTooSmall`]); the result would exceed [`DATAGRAM_LEN_MAX`]
/// ([`EncodeError::TooLong`]).
pub fn with_address_token(
    request: &[u8],
    token: &AddressToken,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let hf = header::field::FLAGS;
    let lock_request = request.len() >= HEADER_LEN
        && MessageType::from_wire(request[header::field::MSG_TYPE])
            .is_some_and(header::carries_address_token);
    if !lock_request || u16_at(request, hf.start) != 0 {
        return Err(EncodeError::WrongType);
    }
    let body_end = HEADER_LEN + usize::from(u16_at(request, header::field::BODY_LEN.start));
    if body_end > request.len() {
        return Err(EncodeError::WrongType);
    }
    let token_end = body_end + ADDRESS_TOKEN_LEN;
    let len = request.len().max(token_end);
    if len > DATAGRAM_LEN_MAX {
        return Err(EncodeError::TooLong);
    }
    let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall)?;
    out[..body_end].copy_from_slice(&request[..body_end]);
    out[hf].copy_from_slice(&Flags::ADDRESS_TOKEN.bits().to_be_bytes());
    out[body_end..token_end].copy_from_slice(&token.0);
    out[token_end..].fill(0);
    Ok(len)
}

/// Body checks of a KEEPALIVE (spec §3.2 step 11, §4.11), in the spec's order: the fixed
/// fields are there, the count is not 0 (`EmptyId`: INVALID_ARGUMENT, like an empty id), the
/// count is at most [`KEEPALIVE_TOKENS_MAX`] and the length is exactly the count's
/// (`BadBodyLength`), the reserved bytes are zero.
fn decode_keepalive(body: &[u8]) -> Result<RequestBody<'_>, DecodeError> {
    use keepalive_field as f;
    if body.len() < KEEPALIVE_FIXED_LEN {
        return Err(DecodeError::BadBodyLength);
    }
    let count = usize::from(u16_at(body, f::COUNT.start));
    if count == 0 {
        return Err(DecodeError::EmptyId);
    }
    if count > KEEPALIVE_TOKENS_MAX || body.len() != KEEPALIVE_FIXED_LEN + 8 * count {
        return Err(DecodeError::BadBodyLength);
    }
    if body[f::RESERVED] != [0, 0] {
        return Err(DecodeError::ReservedNonZero);
    }
    Ok(RequestBody::Keepalive {
        shard: u16_at(body, f::SHARD.start),
        shards: u16_at(body, f::SHARDS.start),
        ttl_ms: u32_at(body, f::TTL_MS.start),
        tokens: Tokens(&body[f::TOKENS..]),
    })
}

/// Writes a KEEPALIVE body (checked by the caller) and zeroes the padding after it.
fn encode_keepalive(body: &RequestBody<'_>, b: &mut [u8]) {
    use keepalive_field as f;
    let RequestBody::Keepalive {
        shard,
        shards,
        ttl_ms,
        tokens,
    } = *body
    else {
        unreachable!("called for a KEEPALIVE");
    };
    b[f::SHARD].copy_from_slice(&shard.to_be_bytes());
    b[f::SHARDS].copy_from_slice(&shards.to_be_bytes());
    b[f::TTL_MS].copy_from_slice(&ttl_ms.to_be_bytes());
    b[f::COUNT].copy_from_slice(&(tokens.len() as u16).to_be_bytes());
    b[f::RESERVED].fill(0);
    let end = f::TOKENS + tokens.as_bytes().len();
    b[f::TOKENS..end].copy_from_slice(tokens.as_bytes());
    b[end..].fill(0);
}
