//! The one registry of message types, status codes, flags, PEER record kinds and log command
//! kinds (spec §10: spec/client-protocol.md, and §10.4 and §10.5 in spec/node-protocol.md).
//!
//! ONLY APPEND TO THESE TABLES. A value, once given a meaning, keeps it forever: third-party
//! implementations are written against the spec, and `tests/spec_tables.rs` checks that the
//! spec's registry tables list exactly the rows below.

use bitflags::bitflags;

/// Declares a `#[repr]` enum together with its wire value, its spec name and its meaning, so
/// the three can never drift apart.
macro_rules! registry {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty {
            $( $variant:ident = $value:literal, $wire_name:literal, $meaning:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $( #[doc = $meaning] $variant = $value, )*
        }

        impl $name {
            /// Every registered value, in registry order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value for `raw`, or `None` if it is not registered.
            pub const fn from_wire(raw: $repr) -> Option<$name> {
                match raw {
                    $( $value => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// The value as sent on the wire.
            pub const fn to_wire(self) -> $repr {
                self as $repr
            }

            /// The name the spec uses.
            pub const fn name(self) -> &'static str {
                match self { $( $name::$variant => $wire_name, )* }
            }

            /// One line saying what the value means.
            pub const fn meaning(self) -> &'static str {
                match self { $( $name::$variant => $meaning, )* }
            }
        }
    };
}

registry! {
    /// Message types (spec §10.1). Client requests live in 0x01..=0x3F, their replies at the
    /// request's value with bit 7 set; node-to-node traffic lives in 0x40..=0x7F: PEER (0x40)
    /// carries Raft and SWIM membership records (spec §8.12), the rest of 0x40..=0x7F stays
    /// reserved for further node-to-node messages.
    pub enum MessageType: u8 {
        Acquire = 0x01, "ACQUIRE", "Take a lock, waiting up to wait_ms in the server's FIFO queue.";
        Release = 0x02, "RELEASE", "Give back one re-entrant hold of a lock.";
        Renew = 0x03, "RENEW", "Extend the lease of a held lock.";
        Status = 0x04, "STATUS", "Read a lock's holder, hold count, token, remaining lease and waiters.";
        Configure = 0x05, "CONFIGURE", "Set or clear a resource's default TTL.";
        ErrorReply = 0x80, "ERROR_REPLY", "Answer to a request whose type is unknown or that could not be decoded.";
        AcquireReply = 0x81, "ACQUIRE_REPLY", "Answer to ACQUIRE.";
        ReleaseReply = 0x82, "RELEASE_REPLY", "Answer to RELEASE.";
        RenewReply = 0x83, "RENEW_REPLY", "Answer to RENEW.";
        StatusReply = 0x84, "STATUS_REPLY", "Answer to STATUS; carries the holder's client id.";
        ConfigureReply = 0x85, "CONFIGURE_REPLY", "Answer to CONFIGURE.";
        Peer = 0x40, "PEER", "Node-to-node datagram: Raft messages of one or more shards (Section 8.3).";
        ShardStatus = 0x06, "SHARD_STATUS", "Read a cluster node's own view of its shards: role, leader, term, commit index, locks held (Section 4.7).";
        ShardStatusReply = 0x86, "SHARD_STATUS_REPLY", "Answer to SHARD_STATUS: one entry per shard, as many as fit in the request.";
        NodeSettings = 0x07, "NODE_SETTINGS", "Read a cluster node's settings, to compare them with its peers' (Section 4.8).";
        NodeSettingsReply = 0x87, "NODE_SETTINGS_REPLY", "Answer to NODE_SETTINGS: the node's cluster id and settings, as many as fit in the request.";
        PeerSettings = 0x41, "PEER_SETTINGS", "Node-to-node datagram: the sender's settings, so that nodes whose settings differ say which (Section 8.10).";
        Members = 0x08, "MEMBERS", "Read a cluster node's member table as its SWIM member holds it: id, state, incarnation, address (Section 4.9).";
        MembersReply = 0x88, "MEMBERS_REPLY", "Answer to MEMBERS: the members from a given id on, as many as fit in the request.";
        Remove = 0x09, "REMOVE", "An operator retires a member that is gone for good; authenticated with the cluster key (Section 4.10).";
        RemoveReply = 0x89, "REMOVE_REPLY", "Answer to an authenticated REMOVE: removed, already removed, or why not.";
        Keepalive = 0x0A, "KEEPALIVE", "Renew up to 64 holds of one shard, named by their fencing tokens, in one datagram (Section 4.11).";
        KeepaliveReply = 0x8A, "KEEPALIVE_REPLY", "Answer to KEEPALIVE: a bitmap of the listed holds it renewed, and the smallest lease granted.";
        CancelWait = 0x0B, "CANCEL_WAIT", "Withdraw a queued ACQUIRE of the same client, named by its session and request ids (Section 4.12).";
        CancelWaitReply = 0x8B, "CANCEL_WAIT_REPLY", "Answer to CANCEL_WAIT: whether the waiter was removed, or the hold its ACQUIRE was granted.";
        Holds = 0x0C, "HOLDS", "Read a page of one shard's holds from a cursor, optionally only those of client ids with a given prefix (Section 4.13).";
        HoldsReply = 0x8C, "HOLDS_REPLY", "Answer to HOLDS: holds in fencing-token order, as many as fit in the request, and the cursor to go on from (Section 5.10).";
        PeerLoad = 0x42, "PEER_LOAD", "Node-to-node datagram: which of the sender's limits per node it has reached, for the leaders of its shards (Section 8.14).";
    }
}

registry! {
    /// Status codes carried by every reply (spec §10.2).
    pub enum Status: u16 {
        Ok = 0, "OK", "The operation took effect.";
        LockAcquisitionTimeout = 1, "LOCK_ACQUISITION_TIMEOUT", "The lock stayed held by another client for the whole wait.";
        LockNotHeld = 2, "LOCK_NOT_HELD", "Release or renew by a client that does not hold the lock.";
        ResourceDoesNotExist = 3, "RESOURCE_DOES_NOT_EXIST", "The server does not know the resource (never acquired or configured, or forgotten once free).";
        InvalidArgument = 4, "INVALID_ARGUMENT", "A field is out of range: an empty id, a wait or TTL above the server's maximum.";
        Overloaded = 5, "OVERLOADED", "A server-wide or per-resource limit is reached; retry after the hinted delay.";
        HoldLimitExceeded = 6, "HOLD_LIMIT_EXCEEDED", "A re-entrant acquire would exceed the per-lock hold count limit.";
        RequestExpired = 7, "REQUEST_EXPIRED", "The request id is older than the session's remembered window; its outcome is unknown.";
        Malformed = 8, "MALFORMED", "The datagram could not be decoded.";
        UnsupportedVersion = 9, "UNSUPPORTED_VERSION", "The protocol version is not supported by this server.";
        Unsupported = 10, "UNSUPPORTED", "The message type or a flag is not supported by this server.";
        NotLeader = 11, "NOT_LEADER", "This node does not lead the resource's shard: resend to the hinted leader, or to another node if there is no hint.";
        InternalError = 12, "INTERNAL_ERROR", "An unexpected server condition; the outcome is unknown.";
        Waiting = 13, "WAITING", "Not a final answer: the acquire is queued; keep waiting and retransmit only as a keepalive.";
        Retry = 14, "RETRY", "The server has not seen this source receive at its address: resend the request with the address token this reply carries.";
        Unauthenticated = 15, "UNAUTHENTICATED", "The server requires a client key for this request and it carries none, or a key id the server does not know. Never sealed.";
        Forbidden = 16, "FORBIDDEN", "The client key is valid but does not authorize this request's client id or fencing tokens.";
    }
}

registry! {
    /// Kinds of the records a PEER datagram carries (spec §8.4, §10.4): one Raft message each
    /// (1 to 13), or one SWIM membership message (14 to 18, spec §8.12).
    pub enum PeerKind: u8 {
        PreVote = 1, "PRE_VOTE", "Would you vote for me in the next term? Changes no state (Raft thesis 9.6).";
        PreVoteReply = 2, "PRE_VOTE_REPLY", "Answer to PRE_VOTE.";
        Vote = 3, "VOTE", "Vote for me in this term (RequestVote, Raft 5.2).";
        VoteReply = 4, "VOTE_REPLY", "Answer to VOTE.";
        Append = 5, "APPEND", "Log entries to append, or none as a heartbeat (AppendEntries, Raft 5.3).";
        AppendReply = 6, "APPEND_REPLY", "Answer to APPEND: success and the follower's match index.";
        TimeoutNow = 7, "TIMEOUT_NOW", "Start an election now: leadership transfer (Raft thesis 3.10).";
        TransferVote = 8, "TRANSFER_VOTE", "VOTE sent after TIMEOUT_NOW: granted despite leader stickiness (Raft thesis 3.10).";
        InstallSnapshot = 9, "INSTALL_SNAPSHOT", "A chunk of the leader's snapshot for a follower that needs entries the leader compacted away (Raft 7, thesis 5).";
        InstallSnapshotReply = 10, "INSTALL_SNAPSHOT_REPLY", "Answer to INSTALL_SNAPSHOT: contiguous bytes received.";
        TermQuery = 11, "TERM_QUERY", "A node that restarted without its state asks for the receiver's current term.";
        TermReply = 12, "TERM_REPLY", "Answer to TERM_QUERY: the replier's current term.";
        NoStateReply = 13, "NO_STATE_REPLY", "Answer to TERM_QUERY from a node that holds no state for the shard: whether it is new.";
        SwimPing = 14, "SWIM_PING", "Membership: are you alive? Carries gossip (SWIM 3.1, 4.1).";
        SwimAck = 15, "SWIM_ACK", "Membership: answer to SWIM_PING, or relayed for a SWIM_PING_REQ.";
        SwimPingReq = 16, "SWIM_PING_REQ", "Membership: probe this member for me (SWIM 3.1).";
        SwimNack = 17, "SWIM_NACK", "Membership: the member asked for by SWIM_PING_REQ did not answer (Lifeguard IV.A).";
        SwimPushPull = 18, "SWIM_PUSH_PULL", "Membership: one chunk of a full-state exchange.";
    }
}

impl PeerKind {
    /// True for the SWIM membership kinds (spec §8.12), whose records belong to no shard.
    pub const fn is_swim(self) -> bool {
        matches!(
            self,
            PeerKind::SwimPing
                | PeerKind::SwimAck
                | PeerKind::SwimPingReq
                | PeerKind::SwimNack
                | PeerKind::SwimPushPull
        )
    }
}

registry! {
    /// Kinds of replicated log command (spec §8.7, §10.5): the first byte of a log entry's data.
    pub enum LogCommandKind: u8 {
        Init = 1, "INIT", "First command of a shard's log: fixes the first fencing token.";
        Tick = 2, "TICK", "Advance log time: fire every timer due at or before the stamp.";
        Request = 3, "REQUEST", "Apply a client request (ACQUIRE, RELEASE, RENEW, CONFIGURE, KEEPALIVE) as of the stamp.";
        Settings = 4, "SETTINGS", "The leader's default TTL, retry-after hint and startup grace: what later commands apply with.";
        Config = 5, "CONFIG", "The shard's Raft configuration from this entry on: its voters and its learners, each named by node id and replica id.";
    }
}

registry! {
    /// Settings a cluster node states in PEER_SETTINGS and NODE_SETTINGS_REPLY (spec §8.10,
    /// §10.7). The first eleven must be equal on every node (they are in the cluster id, or
    /// are the cluster's shape); the next three may differ (a leader logs them, spec §8.8),
    /// and so may `address_validation` (each node's own, spec §7.2.5).
    pub enum Setting: u16 {
        Nodes = 1, "nodes", "FNV-1a 64 of the node list as the cluster id writes it (ids and addresses sorted by id); must be equal.";
        Shards = 2, "shards", "The shard count S; must be equal.";
        ResourcesMax = 3, "resources_max", "Section 9; must be equal.";
        WaitersPerResourceMax = 4, "waiters_per_resource_max", "Section 9; must be equal.";
        WaitersMax = 5, "waiters_max", "Section 9; must be equal.";
        HoldsPerLockMax = 6, "holds_per_lock_max", "Section 9; must be equal.";
        SessionsMax = 7, "sessions_max", "Section 9; must be equal.";
        AnswersPerSessionMax = 8, "answers_per_session_max", "Section 9; must be equal.";
        SessionIdleMs = 9, "session_idle_ms", "Section 9; must be equal.";
        TtlMsMax = 10, "ttl_ms_max", "Section 9; must be equal.";
        WaitMsMax = 11, "wait_ms_max", "Section 9; must be equal.";
        TtlDefaultMs = 12, "ttl_default_ms", "Section 9; may differ (the leader logs it, Section 8.8).";
        RetryAfterMs = 13, "retry_after_ms", "Section 9; may differ (the leader logs it, Section 8.8).";
        StartupGraceMs = 14, "startup_grace_ms", "Section 9; may differ (the leader logs it, Section 8.8).";
        AddressValidation = 15, "address_validation", "1 if the node validates addresses (Section 7.2.5), 0 if not; may differ (each node applies its own to the requests it receives).";
    }
}

impl Setting {
    /// Whether every node of a cluster must have the same value: nodes that differ in one of
    /// these do not form one cluster (spec §8.1). The others a leader logs (spec §8.8).
    pub const fn must_be_equal(self) -> bool {
        !matches!(
            self,
            Setting::TtlDefaultMs
                | Setting::RetryAfterMs
                | Setting::StartupGraceMs
                | Setting::AddressValidation
        )
    }
}

impl MessageType {
    /// True for the client request types (0x01..=0x3F).
    pub const fn is_request(self) -> bool {
        (self as u8) < 0x40
    }

    /// True for the reply types (0x80..=0xBF).
    pub const fn is_reply(self) -> bool {
        (self as u8) >= 0x80
    }

    /// True for the node-to-node types (0x40..=0x7F), which are never requests or replies.
    pub const fn is_node_to_node(self) -> bool {
        !self.is_request() && !self.is_reply()
    }

    /// The reply type that answers this request type (`None` for reply types).
    pub const fn reply_type(self) -> Option<MessageType> {
        if self.is_request() {
            MessageType::from_wire(self as u8 | 0x80)
        } else {
            None
        }
    }
}

bitflags! {
    /// Header flags (spec §10.3). Unknown bits are reserved: zero when sent, rejected when received.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Flags: u16 {
        /// An authentication trailer ends the datagram. Node-to-node datagrams (PEER,
        /// PEER_SETTINGS): the 56-byte trailer of spec §8.11 after the body. The lock
        /// requests and their replies but ERROR_REPLY: the 24-byte client-auth trailer of
        /// spec §7.1.10 (key id and MAC), after any padding. Reserved in the other client
        /// types: a server answers a request that sets it UNSUPPORTED (spec §3.1).
        const AUTH = 0x0001;
        /// Reply only: a STATUS_REPLY could not carry the holder's id because the request was
        /// shorter than the reply would have been.
        const HOLDER_TRUNCATED = 0x0002;
        /// Reply only: the request waited in the server's queue, so the reply's timing says
        /// nothing about the round trip (no RTT sample).
        const QUEUED = 0x0004;
        /// Request only (the lock requests of spec §4.2 to §4.6, §4.11, §4.12): the 16-byte
        /// address token of a RETRY follows the body, before any padding; `body_len`
        /// excludes it (spec §3.1, §7.1.9). Reserved in replies.
        const ADDRESS_TOKEN = 0x0008;
    }
}

/// The flag registry as (bit, spec name, meaning) rows, for the spec-table check.
pub const FLAG_TABLE: &[(u16, &str, &str)] = &[
    (
        0x0001,
        "AUTH",
        "An authentication trailer ends the datagram: node-to-node (Section 8.11), and the lock requests and their replies but ERROR_REPLY (client key, Section 7.1.10); reserved in the other client types.",
    ),
    (
        0x0002,
        "HOLDER_TRUNCATED",
        "Reply only: the holder id did not fit in a reply no larger than the request.",
    ),
    (
        0x0004,
        "QUEUED",
        "Reply only: the request waited in the server's queue; take no RTT sample.",
    ),
    (
        0x0008,
        "ADDRESS_TOKEN",
        "Request only: a 16-byte address token follows the body (Section 7.1.9); reserved in replies.",
    ),
];
