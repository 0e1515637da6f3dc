//! udplock-protocol: the udplock wire format (spec/client-protocol.md, and for the node-to-node
//! datagrams spec/node-protocol.md).
//!
//! Every udplock message is one UDP datagram: a 32-byte [header] at fixed offsets, then
//! a fixed-layout body, then zero padding. This crate turns bytes into typed views and typed
//! values into bytes:
//!
//! - [`Request::decode`] / [`Reply::decode`] borrow ids straight from the datagram: no
//!   allocation, no copy.
//! - [`Request::encode`] / [`Reply::encode`] write into the caller's buffer and return the
//!   length written.
//!
//! Nodes of a cluster also talk to each other (spec §8, "Node-to-node protocol"):
//!
//! - [`RaftMessage`] is the one Raft message type, generic over how it holds an APPEND's
//!   entries and a snapshot chunk's bytes. [`PeerDatagram::decode`] checks a whole PEER
//!   datagram (Raft messages of many shards, coalesced) and then hands out its records as
//!   [`PeerMessage`] views (no copy); [`PeerWriter`] packs records, views or a Raft core's own
//!   owned messages alike, into one datagram in the caller's buffer until it is full. Snapshots
//!   travel in chunks of at most [`SNAPSHOT_CHUNK_MAX`] bytes
//!   ([`RaftMessage::InstallSnapshot`]).
//! - [`LogCommand`] is the data of one replicated log entry: what every replica applies to its
//!   lock table, in log order.
//! - [`shard_of`] maps a resource id to its shard (FNV-1a 64), the same on every node and
//!   client.
//! - [`PeerSettings`] (spec §8.10) and [`NodeSettingsRequest`] / [`NodeSettingsReply`] (spec
//!   §4.8, §5.7) carry a node's settings, to its peers and to a client, so that nodes whose
//!   settings differ can say which.
//! - [`PeerLoad`] (spec §8.14) tells the leaders of a node's shards which of its limits per
//!   node it has reached.
//! - [`ClusterKey`] authenticates node-to-node datagrams (spec §8.11): [`ClusterKey::seal`]
//!   appends the AUTH trailer ([`AuthTrailer`] and a MAC) to a PEER or PEER_SETTINGS datagram,
//!   [`ClusterKey::verify`] checks the MAC of one whose trailer the decoder has read. What a
//!   receiver does with the trailer's fields (replay windows, incarnations) is the node's.
//! - [`ShardStatusRequest`] / [`ShardStatusReply`] (spec §4.7, §5.6) ask one cluster node for
//!   its own view of its shards (role, leader, term, commit index, locks held), a page of
//!   shards per datagram; they have their own decoders, so [`Request::decode`] and
//!   [`Reply::decode`] keep to the lock requests and their replies.
//! - [`MembersRequest`] / [`MembersReply`] (spec §4.9, §5.8) ask one cluster node for its
//!   member table as its SWIM member holds it (id, state, incarnation, address), a page of
//!   members per datagram, paged by member id.
//! - [`HoldsRequest`] / [`HoldsReply`] (spec §4.13, §5.10) ask a shard's leader who holds
//!   what: a page of the shard's holds in fencing-token order from a cursor, optionally only
//!   those of client ids with a given prefix.
//! - [`RemoveRequest`] / [`RemoveReply`] (spec §4.10, §5.9): an operator retires a member
//!   that is gone for good, authenticated with the cluster key's admin MAC
//!   ([`ClusterKey::verify_admin`]).
//!
//! # The no-panic contract
//! Decoding any byte sequence of any length returns a value or a [`DecodeError`]; it never
//! panics, never reads out of bounds and never allocates (the crate is `no_std` without
//! `alloc`). Encoding never panics either: a buffer too small or a value out of range is an
//! [`EncodeError`]. The property tests, the bounded mutation pass (`tests/mutations.rs`) and
//! the cargo-fuzz targets `client` and `peer` (the repository's `fuzz/`) check this.
//!
//! # Example: an ACQUIRE and its reply
//!
//! A client encodes an ACQUIRE into its own buffer; the node decodes it, takes the lock and
//! encodes an ACQUIRE_REPLY; the client decodes the reply, matches it to its request by the
//! ids, and reads the fencing token and the lease (spec §4.2, §5.1, §7.1.4).
//!
//! ```
//! use udplock_protocol::{
//!     MessageType, Reply, Request, RequestBody, Status, ACQUIRE_WAIT_REQUEST_LEN,
//!     DATAGRAM_LEN_MAX,
//! };
//!
//! // Client: ask for orders/42, waiting up to 5 s in the queue, with a 10 s lease.
//! let acquire = Request {
//!     session_id: 7,
//!     request_id: 1,
//!     attempt: 0,
//!     body: RequestBody::Acquire {
//!         resource: b"orders/42",
//!         client: b"worker-7",
//!         wait_ms: 5_000,
//!         ttl_ms: 10_000,
//!     },
//! };
//! let mut request_buf = [0u8; DATAGRAM_LEN_MAX];
//! let request_len = acquire.encode(&mut request_buf).unwrap();
//! // An ACQUIRE that may wait is padded so that the node may answer it twice (spec §2.2).
//! assert_eq!(request_len, ACQUIRE_WAIT_REQUEST_LEN);
//!
//! // Node: the datagram decodes to the same request, ids borrowed from the buffer.
//! let received = Request::decode(&request_buf[..request_len]).unwrap();
//! assert_eq!(received, acquire);
//! let mut granted = Reply::bare(
//!     received.body.kind().reply_type(),
//!     received.session_id,
//!     received.request_id,
//!     received.attempt,
//!     Status::Ok,
//! );
//! granted.hold_count = 1;
//! granted.fencing_token = 42;
//! granted.lease_ms = 10_000;
//! let mut reply_buf = [0u8; DATAGRAM_LEN_MAX];
//! let reply_len = granted.encode(&mut reply_buf).unwrap();
//! // No amplification: a reply is never longer than the request it answers.
//! assert!(reply_len <= request_len);
//!
//! // Client: a reply counts only if it answers this request (spec §7.1.4).
//! let reply = Reply::decode(&reply_buf[..reply_len]).unwrap();
//! assert_eq!(reply.msg_type, MessageType::AcquireReply);
//! assert_eq!((reply.session_id, reply.request_id), (7, 1));
//! assert_eq!(reply.status, Status::Ok);
//! // The fencing token goes with every write to storage; the client counts the lease from
//! // when it *sent* attempt `reply.attempt`, so it gives up before the node does (spec §6.4).
//! assert_eq!((reply.fencing_token, reply.lease_ms), (42, 10_000));
//!
//! // Any other bytes are an error, never a panic.
//! assert!(Reply::decode(&reply_buf[..reply_len - 1]).is_err());
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
pub mod auth;
pub mod client_auth;
mod command;
mod entries;
pub mod header;
mod holds;
mod load;
mod members;
mod peer;
#[cfg(feature = "crypto")]
mod placement;
pub mod registry;
mod remove;
mod reply;
mod request;
mod settings;
mod shard;
mod shard_status;
mod swim;

#[cfg(feature = "crypto")]
pub use address::AddressTokenKey;
pub use address::{
    address_token_age, address_token_input, AddressToken, AddressTokenCheck,
    ADDRESS_TOKEN_KEY_LABEL, ADDRESS_TOKEN_LEN, ADDRESS_TOKEN_LIFETIME_S, ADDRESS_TOKEN_SKEW_S,
    ADDRESS_TOKEN_VALID_S_MAX,
};
#[cfg(feature = "crypto")]
pub use auth::ClusterKey;
pub use auth::{AuthTrailer, AUTH_MAC_LEN, AUTH_TRAILER_LEN, CLUSTER_KEY_LEN};
#[cfg(feature = "crypto")]
pub use client_auth::ClientKey;
pub use client_auth::{
    reply_is_sealed, ClientAuth, AUTH_ACQUIRE_WAIT_REQUEST_LEN, AUTH_REQUEST_LEN_MIN,
    AUTH_STATUS_REQUEST_LEN, CLIENT_AUTH_MAC_LEN, CLIENT_AUTH_TRAILER_LEN, CLIENT_KEY_LEN,
};
pub use command::{
    LogCommand, ReplicaRef, Replicas, CONFIG_MEMBERS_MAX, CONFIG_MEMBER_LEN, LOG_COMMAND_LEN_MAX,
    LOG_KEEPALIVE_FIXED_LEN, LOG_REQUEST_FIXED_LEN, LOG_REQUEST_TARGET_LEN,
};
pub use entries::{Entries, EntryIter, WireEntry};
pub use header::Header;
pub use holds::{
    field as holds_field, HoldEntries, HoldEntry, HoldEntryIter, HoldsReply, HoldsRequest,
    HOLDS_ENTRIES_MAX, HOLDS_FIXED_LEN, HOLDS_PREFIX_LEN_MAX, HOLDS_REPLY_FIXED_LEN,
    HOLDS_REQUEST_LEN, HOLD_ENTRY_FIXED_LEN, HOLD_ENTRY_LEN_MAX,
};
pub use load::{reached, PeerLoad, PEER_LOAD_BODY_LEN, PEER_LOAD_LEN};
pub use members::{
    field as members_field, MemberEntries, MemberEntry, MemberEntryIter, MembersReply,
    MembersRequest, MEMBERS_BODY_LEN, MEMBERS_ENTRIES_MAX, MEMBERS_ENTRY_LEN,
    MEMBERS_REPLY_FIXED_LEN, MEMBERS_REQUEST_LEN,
};
pub use peer::{
    append_record_len, AllRecords, AppendEntries, LogEntry, PeerDatagram, PeerEntries, PeerEntry,
    PeerEntryIter, PeerHeader, PeerMessage, PeerRecord, PeerRecords, PeerWriter, RaftMessage,
    SwimRecords, APPEND_FIXED_LEN, ENTRY_FIXED_LEN, INSTALL_SNAPSHOT_FIXED_LEN,
    PEER_DATAGRAM_LEN_MAX, PEER_RECORD_HEADER_LEN, SNAPSHOT_CHUNK_MAX, SNAPSHOT_LEN_MAX,
};
#[cfg(feature = "crypto")]
pub use placement::{placement_weight, PLACEMENT_LABEL};
pub use registry::{Flags, LogCommandKind, MessageType, PeerKind, Setting, Status};
pub use remove::{
    field as remove_field, RemoveOutcome, RemoveReply, RemoveRequest, REMOVE_BODY_LEN,
    REMOVE_REPLY_BODY_LEN, REMOVE_REPLY_LEN, REMOVE_REQUEST_LEN,
};
pub use reply::{Hint, Reply};
pub use request::{
    with_address_token, Request, RequestBody, RequestKind, Tokens, KEEPALIVE_FIXED_LEN,
    KEEPALIVE_TOKENS_MAX,
};
pub use settings::{
    NodeSettingsReply, NodeSettingsRequest, PeerSettings, SettingValue, SettingValues,
    NODE_SETTINGS_REPLY_FIXED_LEN, NODE_SETTINGS_REQUEST_LEN, SETTINGS_ENTRIES_MAX,
    SETTING_ENTRY_LEN,
};
pub use shard::{shard_hash, shard_of, FNV_OFFSET_BASIS, FNV_PRIME, SHARDS_DEFAULT, SHARDS_MAX};
pub use shard_status::{
    ShardRole, ShardStatusEntries, ShardStatusEntry, ShardStatusEntryIter, ShardStatusReply,
    ShardStatusRequest, SHARD_STATUS_BODY_LEN, SHARD_STATUS_ENTRIES_MAX, SHARD_STATUS_ENTRY_LEN,
    SHARD_STATUS_REPLY_FIXED_LEN, SHARD_STATUS_REQUEST_LEN,
};
pub use swim::{
    field as swim_field, SwimMessage, SwimState, SwimUpdate, SwimUpdateIter, SwimUpdates, SwimView,
    UpdateList, PUSH_PULL_MEMBERS_MAX, SWIM_ADDR_LEN, SWIM_MESSAGE_LEN_MAX, SWIM_NACK_LEN,
    SWIM_PING_FIXED_LEN, SWIM_PING_REQ_FIXED_LEN, SWIM_PUSH_PULL_FIXED_LEN, SWIM_PUSH_PULL_REPLY,
    SWIM_UPDATE_LEN, UPDATES_PER_MESSAGE_MAX,
};

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
    /// A message type that is not registered, or reserved for future client messages; or a
    /// registered type of the expected direction that this decoder does not read
    /// (SHARD_STATUS given to [`Request::decode`], a lock request given to
    /// [`ShardStatusRequest::decode`], and likewise for the replies).
    UnknownType,
    /// A registered type in the wrong direction (a reply sent to a server, a request to a
    /// client), or a node-to-node type (0x40..=0x7F) that version 1 does not use.
    UnexpectedType,
    /// A reserved flag bit is set.
    UnknownFlags,
    /// The AUTH flag is set where it is not defined: in a type that carries no client-auth
    /// trailer (SHARD_STATUS, NODE_SETTINGS, MEMBERS, REMOVE, their replies, ERROR_REPLY), or
    /// given to a decoder that does not read the trailer ([`Request::decode`],
    /// [`Request::decode_with_token`]; [`Request::decode_authenticated`] reads it, spec §3.2
    /// step 6).
    AuthUnsupported,
    /// A request with the AUTH flag is shorter than [`AUTH_REQUEST_LEN_MIN`] (100) bytes, so
    /// it could not pay for its sealed reply (spec §2.2, §3.2 step 9a).
    ShortAuthenticated,
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
    /// PEER: the body holds no record.
    NoRecords,
    /// PEER: a record's shard is not below [`SHARDS_MAX`], or a SWIM record's shard is not 0
    /// (spec §8.12).
    BadShard,
    /// PEER: a record kind that is not registered ([`PeerKind`]).
    UnknownRecordKind,
    /// PEER: a record runs past the body, or its `len` is not the size its kind (and, for
    /// APPEND, its entries; for INSTALL_SNAPSHOT, its `data_len`) requires.
    BadRecordLength,
    /// PEER: a boolean byte (`granted`, `success`) that is neither 0 nor 1.
    BadBool,
    /// PEER APPEND: entry terms decrease or exceed the APPEND's term, or the entries' indexes
    /// would pass `u64::MAX`.
    BadEntries,
    /// PEER INSTALL_SNAPSHOT: `last_index` is 0, `last_term` is 0 or above `term`,
    /// `total_len` is above [`SNAPSHOT_LEN_MAX`], or the chunk ends past `total_len`
    /// (`offset + data_len`, overflow included).
    BadSnapshotChunk,
    /// Log command: a command kind that is not registered ([`LogCommandKind`]).
    UnknownCommand,
    /// Log command: `op` is not ACQUIRE, RELEASE, RENEW or CONFIGURE.
    BadOp,
    /// Log command: a field the op requires to be zero or empty is not (`wait_ms` unless
    /// ACQUIRE, `ttl_ms` of RELEASE, the client id of CONFIGURE).
    NonZeroField,
    /// SHARD_STATUS_REPLY: the page is inconsistent (spec §5.6): with OK, a zero node id, a
    /// `shards_total` of 0 or above [`SHARDS_MAX`], or entries past `shards_total`; with another
    /// status, any non-zero field; or an entry whose shard is not `first_shard` plus its
    /// position, whose role is not 0 to 5, or whose role is 4 (no replica) with any
    /// non-zero field.
    BadShardStatus,
    /// NODE_SETTINGS_REPLY: with OK, a zero node id or cluster id; with another status, any
    /// non-zero field or entry.
    BadSettings,
    /// A list of members that breaks its rules. MEMBERS_REPLY (spec §5.8): with OK, a zero
    /// node id, more entries than `members_total`, an entry id of 0, below `first_id` or not
    /// above the one before, a `next_id` not above the last entry's id, or a state that is
    /// not 0 to 3; with another status, any non-zero field. Log command CONFIG (spec §8.7):
    /// no voter, more than [`CONFIG_MEMBERS_MAX`] members, a node id 0, or a node named twice.
    BadMembers,
    /// SWIM record or MEMBERS_REPLY entry (spec §8.12, §5.8): an address whose family is not 4 or 6, an IPv4 address with
    /// a non-zero byte among its 12 unused ones, or port 0.
    BadAddress,
    /// SWIM record: an UPDATE whose state is not 0 to 3, whose id is 0, or whose `from` is 0
    /// for a suspicion or non-zero for another state.
    BadUpdate,
    /// SWIM record: more updates than [`UPDATES_PER_MESSAGE_MAX`] (PING, ACK, PING_REQ) or
    /// [`PUSH_PULL_MEMBERS_MAX`] (PUSH_PULL).
    TooManyUpdates,
    /// REMOVE_REPLY (spec §5.9): an outcome that is not registered, a state that is not 0 to
    /// 3, or fields that disagree with the outcome (with OK: a zero node or member id, a
    /// state the outcome does not allow, an incarnation that is 0 exactly when the member is
    /// not unknown; with another status: any non-zero field).
    BadRemove,
    /// HOLDS_REPLY (spec §5.10): with OK, a hint, a shard count of 0 or above [`SHARDS_MAX`],
    /// a shard not below it, an entry with a zero hold count, an empty id, a token below the
    /// cursor or not above the one before, or a `next_cursor` that is not 0 and not past the
    /// cursor and every listed token; with another status, any non-zero field or an entry.
    BadHolds,
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
            | DecodeError::ShortAuthenticated
            | DecodeError::BadBodyLength
            | DecodeError::NonZeroPadding
            | DecodeError::BadHintKind
            | DecodeError::UnknownStatus
            | DecodeError::BadHolderLength => Some(Status::Malformed),
            // Only PEER datagrams and log commands fail this way, and neither is ever
            // answered: a node drops a bad PEER datagram silently (spec §8.3), and a log
            // command comes from the replicated log, not from a client.
            DecodeError::NoRecords
            | DecodeError::BadShard
            | DecodeError::UnknownRecordKind
            | DecodeError::BadRecordLength
            | DecodeError::BadBool
            | DecodeError::BadEntries
            | DecodeError::BadSnapshotChunk
            | DecodeError::UnknownCommand
            | DecodeError::BadOp
            | DecodeError::NonZeroField
            | DecodeError::BadAddress
            | DecodeError::BadUpdate
            | DecodeError::TooManyUpdates => None,
            // Only a reply fails this way, and a client never answers.
            DecodeError::BadShardStatus
            | DecodeError::BadSettings
            | DecodeError::BadMembers
            | DecodeError::BadRemove
            | DecodeError::BadHolds => None,
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
            DecodeError::ShortAuthenticated => "ShortAuthenticated",
            DecodeError::ReservedNonZero => "ReservedNonZero",
            DecodeError::ZeroId => "ZeroId",
            DecodeError::BadBodyLength => "BadBodyLength",
            DecodeError::NonZeroPadding => "NonZeroPadding",
            DecodeError::EmptyId => "EmptyId",
            DecodeError::BadHintKind => "BadHintKind",
            DecodeError::UnknownStatus => "UnknownStatus",
            DecodeError::BadHolderLength => "BadHolderLength",
            DecodeError::NoRecords => "NoRecords",
            DecodeError::BadShard => "BadShard",
            DecodeError::UnknownRecordKind => "UnknownRecordKind",
            DecodeError::BadRecordLength => "BadRecordLength",
            DecodeError::BadBool => "BadBool",
            DecodeError::BadEntries => "BadEntries",
            DecodeError::BadSnapshotChunk => "BadSnapshotChunk",
            DecodeError::UnknownCommand => "UnknownCommand",
            DecodeError::BadOp => "BadOp",
            DecodeError::NonZeroField => "NonZeroField",
            DecodeError::BadShardStatus => "BadShardStatus",
            DecodeError::BadSettings => "BadSettings",
            DecodeError::BadMembers => "BadMembers",
            DecodeError::BadAddress => "BadAddress",
            DecodeError::BadUpdate => "BadUpdate",
            DecodeError::TooManyUpdates => "TooManyUpdates",
            DecodeError::BadRemove => "BadRemove",
            DecodeError::BadHolds => "BadHolds",
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
    /// The session id or request id is zero; or a PEER datagram's cluster id or sender, or an
    /// APPEND's `transfer_to`, is node 0 (node ids are never 0, spec §8.1; a `transfer_to`
    /// of 0 on the wire means nobody, so `Some(0)` has no wire form).
    ZeroId,
    /// A reply type was given where a request type is needed, or the reverse; or a log
    /// command was to carry a STATUS, which is never logged (spec §8.7).
    WrongType,
    /// The datagram would exceed its maximum length: [`DATAGRAM_LEN_MAX`] for client
    /// messages, [`PEER_DATAGRAM_LEN_MAX`] for PEER datagrams.
    TooLong,
    /// A PEER record's shard is not below [`SHARDS_MAX`].
    BadShard,
    /// APPEND entries out of term order, above the APPEND's term, more than 65535 of them, an
    /// entry longer than 65535 bytes, or entries that differ between two passes of the
    /// caller's iterator.
    BadEntries,
    /// An INSTALL_SNAPSHOT that breaks a chunk rule (see [`DecodeError::BadSnapshotChunk`]).
    BadSnapshotChunk,
    /// A SHARD_STATUS_REPLY whose fields disagree (see [`DecodeError::BadShardStatus`]).
    BadShardStatus,
    /// A NODE_SETTINGS_REPLY whose fields disagree (see [`DecodeError::BadSettings`]).
    BadSettings,
    /// A MEMBERS_REPLY whose fields disagree, or a CONFIG whose members break a rule (see
    /// [`DecodeError::BadMembers`]).
    BadMembers,
    /// A SWIM or MEMBERS_REPLY address the wire cannot carry exactly: port 0, or an IPv6 address with a flow
    /// label or scope id (see [`DecodeError::BadAddress`]).
    BadAddress,
    /// A SWIM update that breaks a rule of [`DecodeError::BadUpdate`], or an update list that
    /// yields another number of updates than it counts.
    BadUpdate,
    /// A SWIM message with more updates than its kind carries (see
    /// [`DecodeError::TooManyUpdates`]).
    TooManyUpdates,
    /// A REMOVE_REPLY whose fields disagree (see [`DecodeError::BadRemove`]).
    BadRemove,
    /// A KEEPALIVE lists no token, or more than [`KEEPALIVE_TOKENS_MAX`] (spec §4.11).
    BadTokenCount,
    /// A HOLDS_REPLY whose fields disagree (see [`DecodeError::BadHolds`]).
    BadHolds,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self {
            EncodeError::BufferTooSmall => "output buffer too small",
            EncodeError::BadIdLength => "id must be 1 to 255 bytes",
            EncodeError::ZeroId => "ids must be non-zero",
            EncodeError::WrongType => "message type does not fit this message",
            EncodeError::TooLong => "datagram would exceed its maximum length",
            EncodeError::BadShard => "shard must be below SHARDS_MAX",
            EncodeError::BadEntries => "append entries out of order or out of range",
            EncodeError::BadSnapshotChunk => "snapshot chunk fields out of range",
            EncodeError::BadShardStatus => "shard status page fields disagree",
            EncodeError::BadSettings => "node settings reply fields disagree",
            EncodeError::BadMembers => {
                "members page fields disagree, or config members break a rule of spec 8.7"
            }
            EncodeError::BadAddress => "swim address not representable on the wire",
            EncodeError::BadUpdate => "swim update breaks a rule of spec 8.12",
            EncodeError::TooManyUpdates => "swim message carries too many updates",
            EncodeError::BadRemove => "remove reply fields disagree",
            EncodeError::BadTokenCount => "a keepalive lists 1 to 64 tokens",
            EncodeError::BadHolds => "holds reply fields disagree",
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
