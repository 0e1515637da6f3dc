//! The udplock client: a blocking, thread-safe [`Client`] that many threads share.
//!
//! ```no_run
//! use udplock::client::Client;
//! let client = Client::connect(&["127.0.0.1:7100".parse().unwrap()])?;
//! let lease = client.acquire("orders/42", "worker-7", 5_000, None)?;
//! // ... work while lease.is_valid(), fencing every write with lease.fencing_token ...
//! client.release("orders/42", "worker-7")?;
//! # Ok::<(), udplock::error::LockError>(())
//! ```
//!
//! # One socket, and the reply read by the thread that waits for it
//!
//! A `Client` owns one UDP socket and one session id; every operation is one request datagram
//! (a fresh request id, then the same id with `attempt + 1` on each retransmission or
//! redirect) and one reply. On this kind of machine waking another thread costs about 20 µs
//! — as much as the whole round trip — so the design goal is that the thread that called
//! `acquire` is the thread that reads its reply from the socket. There is no background
//! receive thread.
//!
//! The calling threads share the receive duty with a *leader/follower* scheme:
//!
//! 1. The caller registers its request id in the *pending map* (request id → the waiting
//!    thread's handle and an empty reply slot), encodes into a stack buffer and sends.
//! 2. It then tries to become *the receiver* (`try_lock` on the receive lock). The receiver
//!    blocks in `recv_from` with a socket timeout equal to its own next retransmission or
//!    deadline, whichever comes first. A reply to its own request ends its wait; a reply to
//!    another pending request is stored in that request's slot and its thread is `unpark`ed;
//!    anything else is dropped (and counted). At a timeout it retransmits or gives up.
//! 3. A caller that is not the receiver `park_timeout`s until its own next retransmission or
//!    deadline, then re-checks its slot. Unpark tokens are sticky, so a reply stored between
//!    the check and the park is not missed; spurious wake-ups only cost a re-check.
//! 4. Whoever finishes — with a reply, at the deadline, or with an error — leaves the receiver
//!    role first, removes its pending entry, and, if nobody holds the receive lock while other
//!    requests are pending, unparks one of them so that somebody keeps receiving. Only the
//!    receiver fills slots, so a thread that becomes receiver re-checks its own slot under
//!    the lock and cannot miss a reply that a previous receiver stored.
//!
//! With one calling thread the path is: send, `recv_from` on the same thread, decode — no
//! thread hop, no allocation (buffers on the stack; the pending map keeps its capacity;
//! strings are built only for the returned [`Lease`] / [`LockStatus`]). Under concurrency, a
//! reply that arrives while another thread is receiving costs one wake-up.
//!
//! A reply is accepted only if it decodes, names a pending request id, carries the session
//! id that request was sent in (64 random bits, which an off-path forger would have to
//! guess), and has that request's reply type or ERROR_REPLY (spec §7.1.4). The source
//! address is not checked: a server on a multi-homed host may answer from another of its
//! addresses, and after a failover another node may answer (see "Routing" below).
//!
//! An ACQUIRE that has to wait is answered WAITING at once (spec §6.3): not a final answer,
//! so the caller keeps waiting, but it switches the request from loss-recovery retransmits
//! (RTO, doubling) to keepalives paced by the lease (at most every 100 ms), which refresh the
//! reply address and the send time the lease is counted from. A final answer that arrives
//! while a WAITING is still stored replaces it.
//!
//! Every decision about a request lives in the pure call core [`crate::core::call`] (one
//! [`Call`] per operation, owned by the calling thread): where each copy goes and when, which
//! replies it accepts, RTT samples, WAITING keepalives, OVERLOADED pauses, when it gives up,
//! when a lease starts, which releases are kept as doubts. The simulator runs the same core
//! for its clients. This module is the IO shell: the socket, the lanes, the pending map and
//! the receive hand-off between threads described here, and the mapping of a call's outcome
//! to [`LockError`].
//!
//! Timer precision: a parked caller wakes precisely (`park_timeout`), but the receiver's wait
//! is the socket's receive timeout (`SO_RCVTIMEO`), which the kernel rounds up to its tick
//! (1–4 ms on Linux). A retransmission made by the receiving thread can therefore be up to a
//! tick late. That only matters after a loss; the reply path itself is never delayed.
//!
//! # Lanes: one session per call in flight
//!
//! The server remembers a bounded number of answers per session and forgets the oldest
//! first (spec §6.6); a request whose answer was forgotten while its copies were still
//! travelling would get REQUEST_EXPIRED (outcome unknown). With many threads sharing one
//! session, a slow request (its reply lost a few times) could see hundreds of newer requests
//! of the same session complete meanwhile. So each call in flight takes its own session, a
//! *lane*, from a pool and gives it back when done: a session never has more than one request
//! outstanding, its newest answer is the one it may still ask for, and REQUEST_EXPIRED can
//! only reach a request the client has abandoned. Lanes are created on demand (one per
//! concurrent caller, at most [`OUTSTANDING_MAX`]) and reused; each is a session at the server.
//!
//! # Routing: shards and their leaders (spec §7.1.7)
//!
//! The service is a cluster of nodes; its resources are split into [`ClientConfig::shards`]
//! shards by `FNV-1a-64(resource_id) % shards`, and each shard has one leader node, the only
//! one that answers requests about its resources. Every call therefore starts by computing its
//! resource's shard and sending to that shard's leader as this client last knew it: the
//! *route cache* holds one entry per shard, shared by all threads and read without a lock (one
//! atomic load; learning an address the client has never seen takes a small lock). With no
//! entry yet, shard `s` goes to `servers[s % servers.len()]`, which spreads first contacts over
//! the cluster; the configured servers form a ring in their given order.
//!
//! The rules are the spec's, numbered as there (the call core applies them; the route cache
//! is its [`Routes`], shared by all calls of the client):
//!
//! - **One timer per request.** Every copy but a fast redirect leaves when the request's
//!   retransmission timer fires, and the timer doubles with every copy up to its ceiling,
//!   wherever the copies go: a move to another node never restarts the back-off. This is what
//!   bounds the datagrams of a failover (about 10 per request on loopback, where following
//!   every hint at once and restarting the back-off at each move cost 30 or more).
//! - **Silence.** A node that leaves [`SILENT_SENDS_MAX`] copies in a row unanswered is marked
//!   *suspect* (for all calls, until it answers anything) and the next copy goes to the next
//!   server on the ring that is not suspect; a cache entry naming it is cleared.
//! - **NOT_LEADER** is never a final answer; it never reaches the caller, and a request that
//!   only ever met NOT_LEADER ends at its deadline like an unanswered one
//!   ([`LockError::Unavailable`]). With a leader hint naming a node that is not suspect, the
//!   cache entry is set to it and the SAME request (session id, request id, body; attempt + 1)
//!   goes there at once, at most [`REDIRECTS_FAST_MAX`] times between two other replies, then
//!   on the timer. A hint naming a suspect node (the followers of a dead leader go on naming
//!   it until their election timeout) is followed only on the timer, with one copy. Without a
//!   hint (an election), the request moves on along the ring, on the timer. Hinted addresses
//!   outside `servers` are used too (and remembered, up to [`LEARNED_LEADERS_MAX`]).
//! - **OVERLOADED** is not a final answer either: the same request goes to the same node when
//!   the timer fires, but not before the hinted `retry_after_ms`. If the deadline comes first
//!   the call fails with [`LockError::Overloaded`] (a release: [`LockError::ReleaseInDoubt`]).
//!
//! Any reply from a node clears its suspicion; a final answer or a WAITING (not an
//! ERROR_REPLY) records its sender as the shard's leader (when the sender is one of the known
//! addresses; otherwise the node the request was last sent to). The request's WAITING
//! keepalives and deadline run on across moves.
//!
//! # A release without a settling answer (spec §7.1.5)
//!
//! A RELEASE that reached its deadline unanswered, or answered only OVERLOADED (which no
//! server remembers) or INTERNAL_ERROR, may still be applied later (a copy in flight, one in a
//! node's log, a new leader). Applied after this client's next ACQUIRE of the same lock it
//! would free the new hold, so the caller is told the outcome is unknown
//! ([`LockError::Unavailable`] or [`LockError::ReleaseInDoubt`]: stop relying on the lock),
//! and the client keeps the release as a *doubt*: before its next ACQUIRE, RENEW or RELEASE of
//! the same resource and client id it sends it again, same ids and the next attempt number,
//! until an answer settles it; if the call's deadline comes first, the call is not sent and
//! fails with [`LockError::ReleaseInDoubt`]. A doubt is forgotten [`DOUBT_LIFETIME`](crate::core::retransmit::DOUBT_LIFETIME) after its
//! first copy (420 s: no copy can arrive later), and its lane (session) stays out of use until
//! then. An ACQUIRE or RENEW without an answer needs none of this: a late copy can only give
//! this client id a hold it does not believe in, which ends at its lease. Found by the
//! lock-service simulator (seed 353 of an early sweep) and by the outside review (issue 7).
//!
//! Replies are accepted from any source address (the socket is not connected; every copy is
//! one `send_to`, every reply one `recv_from`): after a failover the grant of a queued acquire
//! comes from the new leader, which the request may never have been sent to, and a copy that
//! reaches the new leader is answered with the reply the old one had committed. What makes a
//! reply acceptable is its session id and request id, as below.
//!
//! A NOT_LEADER that answers a copy sent before the current destination was chosen (its echoed
//! attempt is older) is ignored: the request has already moved on. A [`ClientConfig::shards`]
//! that differs from the cluster's only costs redirects, never correctness: the leader of the
//! resource's real shard is one hint away.
//!
//! # Leases
//!
//! A granted [`Lease`] is valid until `send_time(echoed attempt) + lease_ms × (1 − drift)`:
//! counted from the instant this client sent the copy the server answered (the server counts
//! from its grant, which came later), minus the clock-drift bound (spec "Lease rule").

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::{self, Thread};
use std::time::Duration as StdDuration;

use crate::clock::BootInstant;

use socket2::{Domain, Protocol, Socket, Type};
use udplock_protocol::header::field as header_field;
use udplock_protocol::{
    Flags, Hint, MessageType, Reply, Request, RequestBody, ShardStatusReply, ShardStatusRequest,
    Status, DATAGRAM_LEN_MAX, ID_LEN_MAX, SHARDS_DEFAULT, SHARDS_MAX,
};

/// A node's role in one shard's Raft group, as [`Client::shard_status`] reports it.
pub use udplock_protocol::ShardRole;

use crate::core::call::{
    lease_validity, lock_of, socket_addr_for, Call, CallRequest, DoubtCause, Doubts, Handled,
    Outcome, Routes, Settle,
};
use crate::core::retransmit::{RetransmitConfig, RttEstimator, REQUEST_LIFETIME_MAX};
pub use crate::core::retransmit::{REDIRECTS_FAST_MAX, SILENT_SENDS_MAX};
use crate::core::time::{Duration, Instant};
use crate::error::LockError;

/// Longest wait an acquire may ask for: the spec's default `wait_ms_max` (5 minutes). Longer
/// waits belong in a loop in the caller, which can also re-check whether it still wants the
/// lock.
pub const WAIT_MS_MAX: u64 = 300_000;

/// Requests one `Client` may have in flight at once. Beyond it an operation fails at once
/// with [`LockError::Overloaded`] rather than queueing: 4096 threads blocked on one client
/// means the program is already in trouble, and the bound keeps the pending map and the
/// number of sessions (one lane per call in flight) this client uses at the server bounded.
pub const OUTSTANDING_MAX: usize = 4096;

/// Longest grace a [`ClientConfig`] accepts, so that `WAIT_MS_MAX + grace_ms` stays within
/// the spec's `request_lifetime_ms_max` (360 000 ms) after which a client MUST NOT
/// retransmit.
pub const GRACE_MS_MAX: u64 = 60_000;

/// Receive buffer the socket asks for: room for a burst of replies to many threads' requests
/// while the receiver is busy (the kernel may grant less; that only means more
/// retransmissions).
const RECV_BUFFER_BYTES: usize = 1 << 20;

/// Pending-map entries allocated up front, so the first requests do not allocate.
const PENDING_CAPACITY_INITIAL: usize = 64;

/// How long a receiver pauses after an unexpected socket error before trying again, so a
/// broken socket cannot make it spin. Bounded by the caller's deadline in every case.
const RECV_ERROR_PAUSE: StdDuration = StdDuration::from_millis(1);

pub use crate::core::call::{DOUBTS_MAX, LEARNED_LEADERS_MAX};

/// Settings of a [`Client`]. `ClientConfig::new(servers)` gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The cluster's node addresses (the UDP address clients send to). Requests go to the
    /// leader of their resource's shard, found through these (see "Routing" in the module
    /// docs); one address is enough to find the others' leadership through hints, more let
    /// the client get past a dead node. IPv4 and IPv6 addresses may be mixed.
    pub servers: Vec<SocketAddr>,
    /// How many shards the cluster splits resources into: a resource's shard is
    /// `FNV-1a-64(resource_id) % shards`. Must match the cluster's shard count for the best
    /// latency (every call then goes straight to its leader); a mismatch only costs redirects
    /// (NOT_LEADER hints), never correctness. Default [`SHARDS_DEFAULT`]; 1 to
    /// [`SHARDS_MAX`].
    pub shards: u32,
    /// Retransmission timer settings (RTO initial value, floor and ceiling).
    pub retransmit: RetransmitConfig,
    /// Extra wait after an acquire's own `timeout_ms` for the server's final answer: the
    /// server answers LOCK_ACQUISITION_TIMEOUT at its deadline, and this lets that reply
    /// arrive; it is also all a try-acquire (wait 0) waits for its answer. Default 200 ms;
    /// 1 to [`GRACE_MS_MAX`].
    pub grace_ms: u64,
    /// Deadline of release, renew, status and configure. Default 2000 ms; at most 360 000.
    pub request_timeout_ms: u64,
    /// Clock-drift bound in parts per million: a lease is shortened by this fraction, since
    /// the client's and the server's clocks may run at different rates. Default 10 000 (1%).
    pub drift_bound_ppm: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            servers: Vec::new(),
            shards: SHARDS_DEFAULT,
            retransmit: RetransmitConfig::default(),
            grace_ms: 200,
            request_timeout_ms: 2_000,
            drift_bound_ppm: 10_000,
        }
    }
}

impl ClientConfig {
    /// The defaults, with these servers.
    pub fn new(servers: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            servers,
            ..ClientConfig::default()
        }
    }

    /// Refuses settings that cannot work; the error says which and why.
    pub fn validate(&self) -> Result<(), LockError> {
        let invalid = |what: String| Err(LockError::InvalidArgument(what));
        if self.servers.is_empty() {
            return invalid("no lock server address given: pass at least one in --servers".into());
        }
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return invalid(format!(
                "shards must be 1 to {SHARDS_MAX} (the cluster's shard count), got {}",
                self.shards
            ));
        }
        if let Err(e) = self.retransmit.validate() {
            return invalid(format!("retransmit config: {e}"));
        }
        let lifetime_ms = REQUEST_LIFETIME_MAX.as_millis();
        if self.request_timeout_ms == 0 || self.request_timeout_ms > lifetime_ms {
            return invalid(format!(
                "request_timeout_ms must be 1 to {lifetime_ms}, got {}",
                self.request_timeout_ms
            ));
        }
        if self.grace_ms == 0 || self.grace_ms > GRACE_MS_MAX {
            return invalid(format!(
                "grace_ms must be 1 to {GRACE_MS_MAX}, got {}",
                self.grace_ms
            ));
        }
        if self.drift_bound_ppm >= 1_000_000 {
            return invalid(format!(
                "drift_bound_ppm must be below 1000000 (100%), got {}",
                self.drift_bound_ppm
            ));
        }
        Ok(())
    }
}

/// A granted hold of a lock, as this client must see it.
///
/// Each `Lease` describes the one reply it came from. The server never shortens a hold's
/// lease (re-entry and renewal only extend it, spec §6.4), so every `Lease` of a hold stays
/// safe on its own until the client releases the lock to hold count zero; after that none of
/// them means anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub resource_id: String,
    pub client_id: String,
    /// Strictly increasing per resource across holders: pass it to the storage you protect,
    /// so that it can refuse writes from an older holder.
    pub fencing_token: u64,
    /// Re-entrant holds this client has on the lock after the operation.
    pub hold_count: u32,
    /// The lease the hold has as of the grant or renewal, in milliseconds (the reply's
    /// `lease_ms`, spec §6.4): the TTL of a new hold; after a re-entry or renewal the hold's
    /// whole remaining lease, which may be longer than the TTL asked for.
    pub ttl_ms: u32,
    /// When this client must consider the lock lost: the send time of the answered request
    /// copy plus the TTL, minus the clock-drift bound. The server's expiry is later.
    /// On the suspend-aware clock ([`BootInstant`]): a lease counted on a clock that stopped
    /// while the machine slept would outlive the server's.
    pub valid_until: BootInstant,
}

impl Lease {
    /// True while the lease may still be relied on.
    pub fn is_valid(&self) -> bool {
        BootInstant::now() < self.valid_until
    }

    /// Time left before [`Lease::valid_until`] (zero once passed).
    pub fn remaining(&self) -> StdDuration {
        self.valid_until
            .saturating_duration_since(BootInstant::now())
    }
}

/// A lock's state as the server saw it when it answered a status request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockStatus {
    pub resource_id: String,
    /// The holder's client id (lossy UTF-8), `None` when free or when it did not fit.
    pub holder: Option<String>,
    /// The lock is held but the holder's id did not fit in the reply (never for this client,
    /// which pads status requests so that it always fits).
    pub holder_truncated: bool,
    pub hold_count: u32,
    /// Token of the current hold (0: none).
    pub fencing_token: u64,
    /// Lease time left at the server, in milliseconds.
    pub remaining_ttl_ms: u32,
    /// Clients queued waiting for the lock.
    pub waiter_count: u32,
}

/// One cluster node's own view of its shards, from [`Client::shard_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatusReport {
    /// The node that answered (its id in the cluster).
    pub node_id: u64,
    /// Every shard of the cluster, in shard order (`shards.len()` is the shard count).
    pub shards: Vec<ShardInfo>,
}

/// One cluster node's cluster id and settings, from [`Client::node_settings`] (spec §5.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettingsReport {
    pub node_id: u64,
    /// Nodes whose cluster ids differ do not form one cluster (spec §8.1).
    pub cluster_id: u64,
    /// `(setting, value)` as the node lists them, in registry order; codes this client does
    /// not know are left out.
    pub settings: Vec<(udplock_protocol::Setting, u64)>,
}

/// One shard as one node sees it (spec §5.6). Nodes may disagree: a follower's counts lag
/// its leader's, and a node cut off from the others may still name an old leader; believe
/// the node that says it leads, with the highest term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard: u16,
    /// The answering node's role in this shard.
    pub role: ShardRole,
    /// The node it believes leads the shard in its current term (itself if it leads);
    /// `None` when it knows none, e.g. during an election.
    pub leader_id: Option<u64>,
    /// Its current Raft term for the shard.
    pub term: u64,
    /// Highest log index it knows to be committed.
    pub commit_index: u64,
    /// Highest log index applied to its copy of the shard's lock table.
    pub applied_index: u64,
    /// Locks held in its copy of the lock table.
    pub held: u32,
    /// Acquires queued in its copy of the lock table.
    pub waiters: u32,
}

/// Counters of a [`Client`], for monitoring and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientStats {
    /// Copies sent beyond the first of each request.
    pub retransmits: u64,
    /// Received datagrams dropped: undecodable, another session's, an unknown or finished
    /// request id, the wrong reply type, or a duplicate reply.
    pub dropped_datagrams: u64,
    /// NOT_LEADER answers that sent a request on to another node (with or without a hint).
    /// Steadily growing means [`ClientConfig::shards`] or the server list is off, or the
    /// cluster keeps changing leaders.
    pub redirects: u64,
    /// Smoothed round-trip time, once measured.
    pub srtt: Option<StdDuration>,
    /// Retransmission timeout a new request starts with.
    pub rto: StdDuration,
}

/// A blocking, thread-safe lock client: share one per process (it is `Send + Sync`).
pub struct Client {
    /// Unconnected: copies go wherever their shard's leader is, replies come from anywhere.
    socket: UdpSocket,
    /// Where each shard's requests go (see "Routing" in the module docs).
    routes: Routes,
    /// The first lane's session id (what [`Client::session_id`] reports).
    session_id: u64,
    /// Session ids not in use by a call right now (see "Lanes" in the module docs). A call
    /// takes one and gives it back, so each session has at most one request outstanding.
    lanes_free: Mutex<Vec<u64>>,
    /// Request ids come from one counter for all lanes: unique within the client (the pending
    /// map's key) and strictly increasing within every session, as the spec requires.
    next_request_id: AtomicU64,
    config: ClientConfig,
    /// The zero of this client's core [`Instant`]s (microseconds since `epoch`).
    epoch: BootInstant,
    rtt: Mutex<RttEstimator>,
    pending: Mutex<PendingMap>,
    /// Held by the one thread currently receiving from the socket.
    receiver: Mutex<ReceiverState>,
    retransmits: AtomicU64,
    dropped_datagrams: AtomicU64,
    redirects: AtomicU64,
    /// RELEASEs whose outcome is unknown and which may still take effect (spec §7.1.5; see
    /// `settle_doubts`). At most [`DOUBTS_MAX`] (plus the releases in flight).
    doubts: Mutex<Doubts<Vec<u8>>>,
}

/// Request id → waiting request.
type PendingMap = HashMap<u64, Pending, BuildHasherDefault<RequestIdHasher>>;

/// A request waiting for its reply.
struct Pending {
    /// The lane (session) the request was sent in; its reply must carry it.
    session_id: u64,
    /// The thread to unpark when the reply is stored.
    thread: Thread,
    /// The reply type that answers this request (ERROR_REPLY is accepted too).
    reply_type: MessageType,
    /// Filled by the receiver, taken by the waiting thread.
    reply: Option<ReplyData>,
}

/// What the receiving thread owns besides the socket.
struct ReceiverState {
    /// The socket's current receive timeout, so it is set only when it changes.
    read_timeout: StdDuration,
}

/// An owned copy of a reply's fields, so it can cross from the receiver to another thread.
#[derive(Clone, Copy)]
struct ReplyData {
    msg_type: MessageType,
    session_id: u64,
    request_id: u64,
    flags: Flags,
    attempt: u16,
    status: Status,
    hold_count: u32,
    fencing_token: u64,
    lease_ms: u32,
    waiter_count: u32,
    retry_after_ms: u32,
    /// The reply's hint, as sent (a leader address is not yet checked for use).
    hint: Hint,
    holder_len: u8,
    holder: [u8; ID_LEN_MAX],
    /// When the receiver read the datagram (for the RTT sample; a thread hop adds nothing).
    received_at: Instant,
    /// The datagram's source address: only a hint of which node answered (see "Routing").
    from: SocketAddr,
}

impl ReplyData {
    fn new(reply: &Reply<'_>, received_at: Instant, from: SocketAddr) -> ReplyData {
        let mut holder = [0u8; ID_LEN_MAX];
        // Reply::decode guarantees holder.len() <= 255 (it travels in one byte).
        let holder_len = reply.holder.len().min(ID_LEN_MAX);
        holder[..holder_len].copy_from_slice(&reply.holder[..holder_len]);
        ReplyData {
            msg_type: reply.msg_type,
            session_id: reply.session_id,
            request_id: reply.request_id,
            flags: reply.flags,
            attempt: reply.attempt,
            status: reply.status,
            hold_count: reply.hold_count,
            fencing_token: reply.fencing_token,
            lease_ms: reply.lease_ms,
            waiter_count: reply.waiter_count,
            retry_after_ms: match reply.hint {
                Hint::RetryAfter { ms } => ms,
                _ => 0,
            },
            hint: reply.hint,
            holder_len: holder_len as u8,
            holder,
            received_at,
            from,
        }
    }

    fn holder(&self) -> &[u8] {
        &self.holder[..usize::from(self.holder_len)]
    }

    /// The reply as it was decoded, for the call core.
    fn wire(&self) -> Reply<'_> {
        Reply {
            msg_type: self.msg_type,
            flags: self.flags,
            session_id: self.session_id,
            request_id: self.request_id,
            attempt: self.attempt,
            status: self.status,
            hold_count: self.hold_count,
            fencing_token: self.fencing_token,
            lease_ms: self.lease_ms,
            waiter_count: self.waiter_count,
            hint: self.hint,
            holder: self.holder(),
        }
    }

    /// The error this reply stands for, if it is not a success.
    fn error(&self) -> Option<LockError> {
        match LockError::from_status(self.status) {
            Some(LockError::Overloaded { .. }) => Some(LockError::Overloaded {
                retry_after_ms: self.retry_after_ms,
            }),
            Some(error) => Some(error),
            None if self.msg_type == MessageType::ErrorReply => Some(LockError::InternalError(
                "the server sent ERROR_REPLY with status OK: a server bug; nothing changed".into(),
            )),
            None => None,
        }
    }
}

/// One decoded SHARD_STATUS_REPLY page.
struct ShardStatusPage {
    node_id: u64,
    shards_total: u16,
    shards: Vec<ShardInfo>,
}

/// A successful reply and the instant its lease (if any) starts.
struct Answer {
    reply: ReplyData,
    lease_start: Instant,
}

/// Hashes request ids with one multiplication (Fibonacci hashing). Ids are sequential and
/// chosen by this client, so there is nothing to defend against, and SipHash would cost more
/// than the rest of the map operation.
#[derive(Default)]
struct RequestIdHasher(u64);

impl Hasher for RequestIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Removes a request from the pending map when its operation ends, on every path, and keeps
/// somebody receiving (step 4 of the module docs).
struct PendingGuard<'a> {
    client: &'a Client,
    request_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let next = {
            let mut pending = lock(&self.client.pending);
            pending.remove(&self.request_id);
            pending.values().next().map(|p| p.thread.clone())
        };
        if let Some(thread) = next {
            // Our own receiver guard is already dropped. If the lock is free, nobody is
            // receiving for the requests still pending: wake one to take over. If somebody
            // holds it, that thread will do the same when it leaves.
            let free = !matches!(
                self.client.receiver.try_lock(),
                Err(TryLockError::WouldBlock)
            );
            if free {
                thread.unpark();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps inconsistent in a way that matters here.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn std_duration(d: Duration) -> StdDuration {
    StdDuration::from_micros(d.as_micros())
}

fn check_id(name: &str, id: &str) -> Result<(), LockError> {
    let len = id.len();
    if len == 0 || len > ID_LEN_MAX {
        return Err(LockError::InvalidArgument(format!(
            "{name} must be 1 to {ID_LEN_MAX} bytes long, got {len}"
        )));
    }
    Ok(())
}

/// The wire's ttl field: 0 asks for the default, so an explicit 0 is refused.
fn ttl_wire(name: &str, ttl_ms: Option<u32>) -> Result<u32, LockError> {
    match ttl_ms {
        None => Ok(0),
        Some(0) => Err(LockError::InvalidArgument(format!(
            "{name} must be at least 1 ms; pass None for the default"
        ))),
        Some(ms) => Ok(ms),
    }
}

impl Client {
    /// Opens one socket for all of `config.servers` and starts a new session.
    pub fn new(config: ClientConfig) -> Result<Client, LockError> {
        config.validate()?;
        // One socket reaches every server: IPv6 (dual-stack) as soon as one server needs it.
        let v6_socket = config
            .servers
            .iter()
            .any(|addr| socket_addr_for(*addr, false).is_none());
        let socket = open_socket(v6_socket).map_err(|e| {
            let family = if v6_socket { "IPv6" } else { "IPv4" };
            LockError::InternalError(format!(
                "cannot open a UDP {family} socket: {e}; check the address family and the \
                 process's socket limits"
            ))
        })?;
        let read_timeout = StdDuration::from_millis(1);
        socket.set_read_timeout(Some(read_timeout)).map_err(|e| {
            LockError::InternalError(format!("cannot set the socket's receive timeout: {e}"))
        })?;
        let session_id = new_session_id();
        Ok(Client {
            socket,
            routes: Routes::new(&config.servers, config.shards, v6_socket),
            session_id,
            lanes_free: Mutex::new(vec![session_id]),
            next_request_id: AtomicU64::new(1),
            rtt: Mutex::new(RttEstimator::new(config.retransmit)),
            config,
            epoch: BootInstant::now(),
            pending: Mutex::new(HashMap::with_capacity_and_hasher(
                PENDING_CAPACITY_INITIAL,
                BuildHasherDefault::default(),
            )),
            receiver: Mutex::new(ReceiverState { read_timeout }),
            retransmits: AtomicU64::new(0),
            dropped_datagrams: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            doubts: Mutex::new(Doubts::new()),
        })
    }

    /// A client with the default settings.
    pub fn connect(servers: &[SocketAddr]) -> Result<Client, LockError> {
        Client::new(ClientConfig::new(servers.to_vec()))
    }

    /// This client's first session id (random, non-zero). Concurrent calls use further
    /// session ids, one per call in flight (see "Lanes" in the module docs).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Takes a free lane (a session with no request outstanding), or opens a new one.
    fn take_lane(&self) -> LaneGuard<'_> {
        let session_id = lock(&self.lanes_free).pop().unwrap_or_else(new_session_id);
        LaneGuard {
            client: self,
            session_id,
            retired: false,
        }
    }

    /// The first configured server (requests go to their shard's leader, see
    /// [`Client::leader_addr`]).
    pub fn server_addr(&self) -> SocketAddr {
        self.config.servers[0]
    }

    /// The configured servers, as given.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.config.servers
    }

    /// Where the next request about `resource_id` goes: the leader of its shard as this
    /// client last heard of it, or the initial guess (in the socket's address family, so an
    /// IPv4 server may show as IPv4-mapped IPv6 when IPv6 servers are configured too).
    pub fn leader_addr(&self, resource_id: &str) -> SocketAddr {
        let shard = self.routes.shard(resource_id.as_bytes());
        self.routes.first_destination(shard).1
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Counters and the current RTT estimate.
    pub fn stats(&self) -> ClientStats {
        let rtt = lock(&self.rtt);
        ClientStats {
            retransmits: self.retransmits.load(Ordering::Relaxed),
            dropped_datagrams: self.dropped_datagrams.load(Ordering::Relaxed),
            redirects: self.redirects.load(Ordering::Relaxed),
            srtt: rtt.srtt().map(std_duration),
            rto: std_duration(rtt.rto()),
        }
    }

    /// Takes the lock, waiting up to `timeout_ms` behind other holders, with the resource's
    /// default TTL. See [`Client::acquire`].
    pub fn acquire_lock(
        &self,
        resource_id: &str,
        client_id: &str,
        timeout_ms: u64,
    ) -> Result<(), LockError> {
        self.acquire(resource_id, client_id, timeout_ms, None)
            .map(|_| ())
    }

    /// Gives back one hold of the lock. See [`Client::release`].
    pub fn release_lock(&self, resource_id: &str, client_id: &str) -> Result<(), LockError> {
        self.release(resource_id, client_id).map(|_| ())
    }

    /// Takes the lock for `client_id`, waiting up to `timeout_ms` (at most [`WAIT_MS_MAX`])
    /// in the server's FIFO queue; re-entrant for the current holder. `ttl_ms`: the lease
    /// length, `None` for the resource's default.
    ///
    /// An OVERLOADED answer (a full wait queue, a server in its startup grace) is retried, as
    /// the same request, no sooner than its hinted delay, while `timeout_ms` allows (the wait
    /// then counts from when the server accepts it); [`LockError::Overloaded`] if the deadline
    /// comes first. Then, as after [`LockError::Unavailable`], a copy still in flight may yet be
    /// granted: such a hold is this client's, nobody else's, and ends after its TTL. Fails with
    /// [`LockError::LockAcquisitionTimeout`] when the server's wait ends, or
    /// [`LockError::Unavailable`] when no answer came within `timeout_ms + grace_ms`. In the
    /// second case the server may still have granted the lock and only the reply was lost;
    /// that hold expires after its TTL (or release it).
    pub fn acquire(
        &self,
        resource_id: &str,
        client_id: &str,
        timeout_ms: u64,
        ttl_ms: Option<u32>,
    ) -> Result<Lease, LockError> {
        check_id("resource_id", resource_id)?;
        check_id("client_id", client_id)?;
        if timeout_ms > WAIT_MS_MAX {
            return Err(LockError::InvalidArgument(format!(
                "timeout_ms must be at most {WAIT_MS_MAX} (5 minutes), got {timeout_ms}; wait \
                 longer in a loop"
            )));
        }
        let body = RequestBody::Acquire {
            resource: resource_id.as_bytes(),
            client: client_id.as_bytes(),
            wait_ms: timeout_ms as u32,
            ttl_ms: ttl_wire("ttl_ms", ttl_ms)?,
        };
        let answer = self.call(body, timeout_ms + self.config.grace_ms)?;
        Ok(self.lease(resource_id, client_id, &answer))
    }

    /// Takes the lock only if it is free (or already ours): never waits in the server's queue.
    /// Gives up with [`LockError::Unavailable`] after `grace_ms` without an answer.
    pub fn try_acquire(
        &self,
        resource_id: &str,
        client_id: &str,
        ttl_ms: Option<u32>,
    ) -> Result<Lease, LockError> {
        self.acquire(resource_id, client_id, 0, ttl_ms)
    }

    /// Extends the lease of a lock `client_id` holds: it now ends no earlier than `ttl_ms`
    /// (or, with `None`, the hold's current TTL) after the server receives this request, and
    /// never earlier than before (a renewal does not shorten a lease).
    pub fn renew(
        &self,
        resource_id: &str,
        client_id: &str,
        ttl_ms: Option<u32>,
    ) -> Result<Lease, LockError> {
        check_id("resource_id", resource_id)?;
        check_id("client_id", client_id)?;
        let body = RequestBody::Renew {
            resource: resource_id.as_bytes(),
            client: client_id.as_bytes(),
            ttl_ms: ttl_wire("ttl_ms", ttl_ms)?,
        };
        let answer = self.call(body, self.config.request_timeout_ms)?;
        Ok(self.lease(resource_id, client_id, &answer))
    }

    /// Gives back one hold; returns the holds left (0: the lock is free).
    ///
    /// Without an answer that settles it before `request_timeout_ms` (no answer:
    /// [`LockError::Unavailable`]; only OVERLOADED or INTERNAL_ERROR:
    /// [`LockError::ReleaseInDoubt`]) the release may still take effect later, so stop relying
    /// on the lock. The client keeps it and sends it again before its next call on the same
    /// lock and client id, which fails with [`LockError::ReleaseInDoubt`] (and is not sent)
    /// until the release is answered (spec §7.1.5). A call retried after such an error may
    /// then find the lock already released ([`LockError::LockNotHeld`]).
    pub fn release(&self, resource_id: &str, client_id: &str) -> Result<u32, LockError> {
        check_id("resource_id", resource_id)?;
        check_id("client_id", client_id)?;
        let body = RequestBody::Release {
            resource: resource_id.as_bytes(),
            client: client_id.as_bytes(),
        };
        let answer = self.call(body, self.config.request_timeout_ms)?;
        Ok(answer.reply.hold_count)
    }

    /// Reads a lock's holder, hold count, token, remaining TTL and waiters.
    pub fn status(&self, resource_id: &str) -> Result<LockStatus, LockError> {
        check_id("resource_id", resource_id)?;
        let body = RequestBody::Status {
            resource: resource_id.as_bytes(),
        };
        let reply = self.call(body, self.config.request_timeout_ms)?.reply;
        let holder = reply.holder();
        Ok(LockStatus {
            resource_id: resource_id.to_owned(),
            holder: (!holder.is_empty()).then(|| String::from_utf8_lossy(holder).into_owned()),
            holder_truncated: reply.flags.contains(Flags::HOLDER_TRUNCATED),
            hold_count: reply.hold_count,
            fencing_token: reply.fencing_token,
            remaining_ttl_ms: reply.lease_ms,
            waiter_count: reply.waiter_count,
        })
    }

    /// Sets the resource's default TTL, or clears it (`None`: back to the server's default).
    pub fn configure(
        &self,
        resource_id: &str,
        default_ttl_ms: Option<u32>,
    ) -> Result<(), LockError> {
        check_id("resource_id", resource_id)?;
        let body = RequestBody::Configure {
            resource: resource_id.as_bytes(),
            default_ttl_ms: ttl_wire("default_ttl_ms", default_ttl_ms)?,
        };
        self.call(body, self.config.request_timeout_ms).map(|_| ())
    }

    /// Asks the node at `server` for its own view of every shard (spec §4.7): role, leader,
    /// term, commit and applied index, locks held and waiting. Read-only, answered by any
    /// node of a cluster, leader or not (udplock's single node is a cluster of one node and
    /// one shard); a server that is not a node of a cluster (an older single node) answers
    /// UNSUPPORTED, reported as [`LockError::InternalError`].
    ///
    /// Off the lock path on purpose: it uses a socket and a session of its own, one request
    /// per page of up to 26 shards (the request padded to 1200 bytes so the reply can be that
    /// large, spec §2.2), each retransmitted on the usual RTO and given `request_timeout_ms`
    /// ([`LockError::Unavailable`] after that). Pages are read one after the other, so the
    /// report is not a snapshot of one instant.
    pub fn shard_status(&self, server: SocketAddr) -> Result<ShardStatusReport, LockError> {
        let socket = open_socket(server.is_ipv6()).map_err(|e| {
            LockError::InternalError(format!("cannot open a UDP socket for shard status: {e}"))
        })?;
        let session_id = new_session_id();
        let mut node_id = None;
        let mut shards_total = None;
        let mut shards: Vec<ShardInfo> = Vec::new();
        // Request ids of this private session: new per page, strictly increasing.
        for request_id in 1u64.. {
            let first_shard = u16::try_from(shards.len()).unwrap_or(u16::MAX);
            let page =
                self.shard_status_page(&socket, server, session_id, request_id, first_shard)?;
            let total = *shards_total.get_or_insert(page.shards_total);
            let node = *node_id.get_or_insert(page.node_id);
            if total != page.shards_total || node != page.node_id {
                return Err(LockError::InternalError(format!(
                    "{server} changed its answer between pages (node {node} with {total} \
                     shards, then node {} with {}): was the node restarted? Try again",
                    page.node_id, page.shards_total
                )));
            }
            if shards.len() >= usize::from(total) {
                break;
            }
            if page.shards.is_empty() {
                return Err(LockError::InternalError(format!(
                    "{server} sent no shard from shard {first_shard} on, of {total}: a node bug"
                )));
            }
            shards.extend(page.shards);
            if shards.len() >= usize::from(total) {
                break;
            }
        }
        Ok(ShardStatusReport {
            node_id: node_id.unwrap_or(0),
            shards,
        })
    }

    /// One SHARD_STATUS page from `server`: sent, retransmitted on the RTO, until its reply
    /// or `request_timeout_ms`.
    fn shard_status_page(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        session_id: u64,
        request_id: u64,
        first_shard: u16,
    ) -> Result<ShardStatusPage, LockError> {
        self.admin_exchange(
            socket,
            server,
            "SHARD_STATUS",
            (session_id, request_id),
            |attempt, out| {
                ShardStatusRequest {
                    session_id,
                    request_id,
                    attempt,
                    first_shard,
                }
                .encode(out)
            },
            |datagram| {
                let reply = ShardStatusReply::decode(datagram).ok()?;
                if (reply.session_id, reply.request_id) != (session_id, request_id) {
                    return None;
                }
                if let Some(error) = LockError::from_status(reply.status) {
                    return Some(Err(error));
                }
                Some(Ok(ShardStatusPage {
                    node_id: reply.node_id,
                    shards_total: reply.shards_total,
                    shards: reply
                        .entries
                        .iter()
                        .map(|e| ShardInfo {
                            shard: e.shard,
                            role: e.role,
                            leader_id: (e.leader_id != 0).then_some(e.leader_id),
                            term: e.term,
                            commit_index: e.commit_index,
                            applied_index: e.applied_index,
                            held: e.held,
                            waiters: e.waiters,
                        })
                        .collect(),
                }))
            },
        )
    }

    /// Asks the node at `server` for its cluster id and settings (spec §4.8): what `udplock
    /// status` compares between nodes, to name the settings that keep one out of the
    /// cluster. Read-only; a server that is not a node of a cluster (an older single node)
    /// answers UNSUPPORTED ([`LockError::InternalError`]).
    /// Like [`Client::shard_status`]: its own socket and session, the request padded to 1200
    /// bytes, retransmitted on the RTO until `request_timeout_ms`
    /// ([`LockError::Unavailable`]).
    pub fn node_settings(&self, server: SocketAddr) -> Result<NodeSettingsReport, LockError> {
        use udplock_protocol::{NodeSettingsReply, NodeSettingsRequest, Setting};
        let socket = open_socket(server.is_ipv6()).map_err(|e| {
            LockError::InternalError(format!("cannot open a UDP socket for node settings: {e}"))
        })?;
        let (session_id, request_id) = (new_session_id(), 1);
        self.admin_exchange(
            &socket,
            server,
            "NODE_SETTINGS",
            (session_id, request_id),
            |attempt, out| {
                NodeSettingsRequest {
                    session_id,
                    request_id,
                    attempt,
                }
                .encode(out)
            },
            |datagram| {
                let reply = NodeSettingsReply::decode(datagram).ok()?;
                if (reply.session_id, reply.request_id) != (session_id, request_id) {
                    return None;
                }
                if let Some(error) = LockError::from_status(reply.status) {
                    return Some(Err(error));
                }
                Some(Ok(NodeSettingsReport {
                    node_id: reply.node_id,
                    cluster_id: reply.cluster_id,
                    settings: reply
                        .values
                        .iter()
                        .filter_map(|v| Some((Setting::from_wire(v.setting)?, v.value)))
                        .collect(),
                }))
            },
        )
    }

    /// One request of an operator's read-only query (`what`: SHARD_STATUS, NODE_SETTINGS) on
    /// its own `socket`: `encode` builds the copy with a given attempt number, sent and
    /// retransmitted on the RTO until `decode` recognises its reply (`Some`), an ERROR_REPLY
    /// to `ids` arrives, or `request_timeout_ms` passes ([`LockError::Unavailable`]).
    fn admin_exchange<T>(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        what: &str,
        ids: (u64, u64),
        encode: impl Fn(u16, &mut [u8]) -> Result<usize, udplock_protocol::EncodeError>,
        decode: impl Fn(&[u8]) -> Option<Result<T, LockError>>,
    ) -> Result<T, LockError> {
        let mut timer = lock(&self.rtt).timer();
        let deadline = self.now() + Duration::from_millis(self.config.request_timeout_ms);
        let mut datagram = [0u8; DATAGRAM_LEN_MAX];
        let mut buf = [0u8; DATAGRAM_LEN_MAX + 1];
        loop {
            let now = self.now();
            if now >= deadline {
                return Err(LockError::Unavailable);
            }
            if timer.next_retransmit() <= now {
                let attempt = timer.on_send(now);
                let len = encode(attempt, &mut datagram).map_err(|e| {
                    LockError::InternalError(format!("{what} request did not encode: {e}"))
                })?;
                if attempt > 0 {
                    self.retransmits.fetch_add(1, Ordering::Relaxed);
                }
                // A failed send is a lost copy: the timer sends another.
                let _ = socket.send_to(&datagram[..len], server);
            }
            let wake = timer.next_retransmit().min(deadline);
            let wait =
                std_duration(wake.saturating_since(self.now())).max(StdDuration::from_micros(1));
            if socket.set_read_timeout(Some(wait)).is_err() {
                return Err(LockError::InternalError(format!(
                    "cannot set the {what} socket's receive timeout"
                )));
            }
            let len = match socket.recv_from(&mut buf) {
                Ok((len, _from)) => len,
                // Timeouts, and an ICMP error for an earlier copy (a node that is down).
                Err(_) => continue,
            };
            let datagram_in = &buf[..len];
            if let Some(result) = decode(datagram_in) {
                return result;
            }
            match Reply::decode(datagram_in) {
                Ok(reply)
                    if reply.msg_type == MessageType::ErrorReply
                        && (reply.session_id, reply.request_id) == ids =>
                {
                    return Err(match reply.status {
                        Status::Unsupported => LockError::InternalError(format!(
                            "{server} does not answer {what} (UNSUPPORTED): it is not a node \
                             of a cluster (an older single node), or older than this client"
                        )),
                        status => LockError::from_status(status).unwrap_or_else(|| {
                            LockError::InternalError(
                                "the server sent ERROR_REPLY with status OK: a server bug".into(),
                            )
                        }),
                    });
                }
                // Another request's reply, a late copy's, or garbage.
                _ => {
                    self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The client's view of a granted hold (spec "Lease rule").
    fn lease(&self, resource_id: &str, client_id: &str, answer: &Answer) -> Lease {
        let reply = &answer.reply;
        let valid = lease_validity(reply.lease_ms, self.config.drift_bound_ppm);
        Lease {
            resource_id: resource_id.to_owned(),
            client_id: client_id.to_owned(),
            fencing_token: reply.fencing_token,
            hold_count: reply.hold_count,
            ttl_ms: reply.lease_ms,
            valid_until: self.boot_instant(answer.lease_start + valid),
        }
    }

    /// Core time: microseconds since `epoch`, rounded down (so a recorded send time is never
    /// later than the real one).
    fn now(&self) -> Instant {
        let since = BootInstant::now().saturating_duration_since(self.epoch);
        Instant::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    fn boot_instant(&self, t: Instant) -> BootInstant {
        self.epoch + StdDuration::from_micros(t.as_micros())
    }

    /// One operation: settle any doubt on its lock, then run the request's call (the rules
    /// are the call core's, `crate::core::call`) and map its outcome (spec §7.1.5).
    fn call(&self, body: RequestBody<'_>, timeout_ms: u64) -> Result<Answer, LockError> {
        let reply_type = body.kind().reply_type();
        let start = self.now();
        let deadline = start + Duration::from_millis(timeout_ms);
        if let Some((resource, client)) = lock_of(&body) {
            self.settle_doubts(resource, client, deadline)?;
        }
        let release = matches!(body, RequestBody::Release { .. });
        if release && lock(&self.doubts).is_full() {
            // Nothing is sent: a release that could not be remembered if it went unanswered
            // must not leave at all.
            return Err(LockError::Overloaded { retry_after_ms: 0 });
        }
        let mut lane = self.take_lane();
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            session_id: lane.session_id,
            request_id,
            attempt: 0,
            body,
        };
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        let len = request
            .encode(&mut buf)
            .map_err(|e| LockError::InvalidArgument(format!("cannot encode the request: {e}")))?;
        let datagram = &mut buf[..len];
        let timer = lock(&self.rtt).timer();
        let mut call = Call::new(
            self.now(),
            CallRequest::of(&request, &self.routes),
            timer,
            deadline,
            Duration::from_millis(self.config.grace_ms),
            &self.routes,
        );
        let reply = self.exchange(&mut call, reply_type, datagram)?;
        match call
            .outcome()
            .expect("an exchange ends with the call's outcome")
        {
            Outcome::Answered { lease_start, .. } => {
                let reply = reply.expect("a final answer came in a reply");
                match reply.error() {
                    Some(error) => Err(error),
                    None => Ok(Answer { reply, lease_start }),
                }
            }
            Outcome::GaveUp { overloaded } => Err(match overloaded {
                Some(retry_after_ms) => LockError::Overloaded { retry_after_ms },
                None => LockError::Unavailable,
            }),
            Outcome::InDoubt(cause) => {
                let RequestBody::Release { resource, client } = body else {
                    unreachable!("only a RELEASE ends in doubt");
                };
                // The release may still take effect, through a copy in flight or one in a
                // node's log: keep it, with its lane (no other request uses that session until
                // the doubt is settled or forgotten), and settle it before this client touches
                // the lock again (spec §7.1.5).
                lane.retire();
                lock(&self.doubts).keep(resource, client, datagram.to_vec(), call);
                Err(match cause {
                    DoubtCause::Silence => LockError::Unavailable,
                    DoubtCause::Overloaded { .. } | DoubtCause::InternalError => {
                        LockError::ReleaseInDoubt
                    }
                })
            }
        }
    }

    /// Spec §7.1.5: a RELEASE whose outcome is unknown may still take effect. Applied after
    /// this client's next ACQUIRE of the same lock, it would free the new hold behind the
    /// client's back. So before any ACQUIRE, RENEW or RELEASE of `(resource, client)`, each such
    /// release is sent again (the call core's [`Doubts`]: same ids, the next attempt number)
    /// until an answer settles it, or until it is forgotten (no copy can take effect any
    /// more). [`LockError::ReleaseInDoubt`] if `deadline` comes first, or if another call is
    /// settling it right now: the new request is then not sent.
    fn settle_doubts(
        &self,
        resource: &[u8],
        client: &[u8],
        deadline: Instant,
    ) -> Result<(), LockError> {
        let free_lane = |session_id| lock(&self.lanes_free).push(session_id);
        loop {
            let resend = {
                let mut doubts = lock(&self.doubts);
                if doubts.is_empty() {
                    // The common case, on every lock call: no clock read, no scan.
                    return Ok(());
                }
                match doubts.begin_settle(self.now(), resource, client, free_lane) {
                    Settle::Clear => return Ok(()),
                    Settle::Busy => return Err(LockError::ReleaseInDoubt),
                    Settle::Resend(resend) => resend,
                }
            };
            let mut call = {
                let rtt = lock(&self.rtt);
                resend.call(self.now(), deadline, &rtt, &self.routes)
            };
            let mut datagram = resend.payload;
            if let Err(e) = self.exchange(&mut call, MessageType::ReleaseReply, &mut datagram) {
                lock(&self.doubts).abandon_settle(call.request().request_id);
                return Err(e);
            }
            if !lock(&self.doubts).end_settle(call, free_lane) {
                return Err(LockError::ReleaseInDoubt);
            }
        }
    }

    /// Runs `call` (whose request is `datagram`, answered by `reply_type`) to its outcome:
    /// sends what it readies, hands it the replies and the timeouts. Returns the reply that
    /// ended it, if one did. `Err` only for this client's own limit on requests in flight
    /// (nothing sent).
    fn exchange(
        &self,
        call: &mut Call,
        reply_type: MessageType,
        datagram: &mut [u8],
    ) -> Result<Option<ReplyData>, LockError> {
        if call.outcome().is_some() {
            // Its deadline had passed before the first copy: nothing to send.
            return Ok(None);
        }
        let request = *call.request();
        let pending = self.register(request.session_id, request.request_id, reply_type)?;
        self.flush(call, datagram);
        let mut last = None;
        while let Some(reply) = self.await_reply(request.request_id, datagram, call) {
            let handled = {
                let mut rtt = lock(&self.rtt);
                call.handle_reply(
                    reply.received_at,
                    reply.from,
                    &reply.wire(),
                    &self.routes,
                    &mut rtt,
                )
            };
            match handled {
                Handled::Dropped => {
                    self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                }
                Handled::Redirected => {
                    self.redirects.fetch_add(1, Ordering::Relaxed);
                }
                Handled::Accepted => {}
            }
            self.flush(call, datagram);
            if call.outcome().is_some() {
                last = Some(reply);
                break;
            }
        }
        // Leave the pending map (and hand the receiver role on) before anything else.
        drop(pending);
        Ok(last)
    }

    /// Enters a request in the pending map (step 1).
    fn register(
        &self,
        session_id: u64,
        request_id: u64,
        reply_type: MessageType,
    ) -> Result<PendingGuard<'_>, LockError> {
        let mut pending = lock(&self.pending);
        if pending.len() >= OUTSTANDING_MAX {
            return Err(LockError::Overloaded { retry_after_ms: 1 });
        }
        let previous = pending.insert(
            request_id,
            Pending {
                session_id,
                thread: thread::current(),
                reply_type,
                reply: None,
            },
        );
        assert!(previous.is_none(), "request ids are never reused");
        Ok(PendingGuard {
            client: self,
            request_id,
        })
    }

    /// Takes this request's reply if the receiver stored one.
    fn take_reply(&self, request_id: u64) -> Option<ReplyData> {
        lock(&self.pending)
            .get_mut(&request_id)
            .and_then(|p| p.reply.take())
    }

    /// Sends the copy `call` readied, if any, with its attempt number patched into the
    /// header. The core recorded its send time already (the lease counts from it, so it is
    /// never later than the real send).
    fn flush(&self, call: &mut Call, datagram: &mut [u8]) {
        while let Some(copy) = call.poll_transmit() {
            datagram[header_field::ATTEMPT].copy_from_slice(&copy.attempt.to_be_bytes());
            if copy.attempt > 0 {
                self.retransmits.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = self.socket.send_to(datagram, copy.to) {
                // A failed send is a lost datagram: the retransmission timer covers it, and
                // the deadline turns a persistent failure into Unavailable.
                log::debug!("send to {} failed: {e}", copy.to);
            }
        }
    }

    /// Gives `call` the time if one of its timers is due, and sends what it readies. Returns
    /// when to come back, `None` once the call has ended.
    fn tick(&self, call: &mut Call, datagram: &mut [u8], now: Instant) -> Option<Instant> {
        if call.poll_timeout()? <= now {
            call.handle_timeout(now, &self.routes);
            self.flush(call, datagram);
        }
        call.poll_timeout()
    }

    /// Waits for this request's reply: as the receiver if the receive lock is free
    /// (step 2), parked otherwise (step 3). `None` when the call ended at a timeout.
    fn await_reply(
        &self,
        request_id: u64,
        datagram: &mut [u8],
        call: &mut Call,
    ) -> Option<ReplyData> {
        loop {
            let receiver = match self.receiver.try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            // Checked after the try_lock: only the receiver fills slots, so with the lock held
            // no reply can be stored after this check; without it, a reply stored after the
            // check comes with an unpark that makes the park below return at once.
            if let Some(reply) = self.take_reply(request_id) {
                return Some(reply);
            }
            if let Some(mut state) = receiver {
                return self.receive(&mut state, request_id, datagram, call);
            }
            let now = self.now();
            let wake_at = self.tick(call, datagram, now)?;
            thread::park_timeout(std_duration(wake_at.saturating_since(now)));
        }
    }

    /// The receiver role: read the socket until this request's reply or the end of its call,
    /// handing other requests' replies to their threads.
    fn receive(
        &self,
        state: &mut ReceiverState,
        request_id: u64,
        datagram: &mut [u8],
        call: &mut Call,
    ) -> Option<ReplyData> {
        // One byte more than the longest valid datagram, so an oversized one is seen as such.
        let mut buf = [0u8; DATAGRAM_LEN_MAX + 1];
        let mut error_logged = false;
        loop {
            let now = self.now();
            let wake_at = self.tick(call, datagram, now)?;
            self.set_read_timeout(state, wake_at.saturating_since(now));
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    let received_at = self.now();
                    if let Some(reply) = self.dispatch(&buf[..len], request_id, received_at, from) {
                        return Some(reply);
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted
                    // ICMP errors reported on unconnected sockets by some systems.
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionRefused => {}
                    _ => {
                        if !error_logged {
                            log::warn!("receiving from the lock server's socket failed: {e}");
                            error_logged = true;
                        }
                        let pause = std_duration(wake_at.saturating_since(self.now()));
                        thread::sleep(pause.min(RECV_ERROR_PAUSE));
                    }
                },
            }
        }
    }

    /// Sets the socket's receive timeout to `wait`, rounded up to whole milliseconds (the
    /// kernel's tick is no finer), only when that differs from the current one.
    fn set_read_timeout(&self, state: &mut ReceiverState, wait: Duration) {
        let ms = wait.as_micros().div_ceil(1_000).max(1);
        let timeout = StdDuration::from_millis(ms);
        if state.read_timeout == timeout {
            return;
        }
        match self.socket.set_read_timeout(Some(timeout)) {
            Ok(()) => state.read_timeout = timeout,
            // The previous (finite) timeout stays: we only wake up early or late.
            Err(e) => log::debug!("setting the receive timeout failed: {e}"),
        }
    }

    /// Validates a received datagram and delivers it: returns it when it answers `own_id`,
    /// stores it in its pending slot and wakes its thread when it answers another request,
    /// drops it otherwise. Never panics, whatever the bytes. The source address `from` is
    /// not checked (see the module docs), only recorded.
    fn dispatch(
        &self,
        datagram: &[u8],
        own_id: u64,
        received_at: Instant,
        from: SocketAddr,
    ) -> Option<ReplyData> {
        let drop_it = || {
            self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
            None
        };
        let Ok(reply) = Reply::decode(datagram) else {
            return drop_it();
        };
        let fits = |expected: MessageType| {
            reply.msg_type == expected || reply.msg_type == MessageType::ErrorReply
        };
        let mut pending = lock(&self.pending);
        let Some(entry) = pending.get_mut(&reply.request_id) else {
            return drop_it();
        };
        if reply.session_id != entry.session_id {
            return drop_it();
        }
        // A stored WAITING is provisional: a later reply (the final answer) replaces it.
        let occupied = entry
            .reply
            .as_ref()
            .is_some_and(|stored| stored.status != Status::Waiting);
        if !fits(entry.reply_type) || occupied {
            return drop_it();
        }
        let data = ReplyData::new(&reply, received_at, from);
        if reply.request_id == own_id {
            return Some(data);
        }
        entry.reply = Some(data);
        let thread = entry.thread.clone();
        drop(pending);
        thread.unpark();
        None
    }
}

/// Gives a lane back to the pool when its call ends, however it ends, unless the call
/// left a doubt in it ([`LaneGuard::retire`]).
struct LaneGuard<'a> {
    client: &'a Client,
    session_id: u64,
    retired: bool,
}

impl LaneGuard<'_> {
    /// The lane carries a doubt (spec §7.1.5): it stays out of the pool until the doubt is
    /// settled or forgotten, so that no other request shares its session meanwhile.
    fn retire(&mut self) {
        self.retired = true;
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if !self.retired {
            lock(&self.client.lanes_free).push(self.session_id);
        }
    }
}

/// A random non-zero session id: 64 bits an off-path forger would have to guess.
fn new_session_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// An unconnected UDP socket bound to an ephemeral port: IPv6 and dual-stack (reaching IPv4
/// nodes through IPv4-mapped addresses) if `v6`, IPv4 otherwise.
fn open_socket(v6: bool) -> io::Result<UdpSocket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER_BYTES) {
        log::debug!("cannot enlarge the receive buffer: {e}");
    }
    if v6 {
        if let Err(e) = socket.set_only_v6(false) {
            // Only IPv4 nodes become unreachable; their copies count as lost.
            log::warn!(
                "cannot make the IPv6 socket dual-stack, IPv4 servers are out of reach: {e}"
            );
        }
    }
    let local: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&local.into())?;
    Ok(socket.into())
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.config.servers)
            .field("session_id", &format_args!("{:#018x}", self.session_id))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::sync::OnceLock;
    use std::thread::JoinHandle;
    use udplock_protocol::shard_of;

    /// What a fake server's handler sees: a request (with its receipt time), or an idle tick.
    enum Event<'a> {
        Request(Request<'a>, BootInstant),
        Idle,
    }

    /// A scripted stand-in for `udplock server`: decodes requests with the codec and sends
    /// whatever datagrams the handler returns to the last client address.
    struct FakeServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl FakeServer {
        fn spawn<F>(mut handler: F) -> FakeServer
        where
            F: FnMut(Event<'_>) -> Vec<Vec<u8>> + Send + 'static,
        {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(StdDuration::from_millis(1)))
                .unwrap();
            let addr = socket.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let stop_flag = Arc::clone(&stop);
            let thread = thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut peer = None;
                while !stop_flag.load(Ordering::Relaxed) {
                    let out = match socket.recv_from(&mut buf) {
                        Ok((len, from)) => {
                            peer = Some(from);
                            match Request::decode(&buf[..len]) {
                                Ok(req) => handler(Event::Request(req, BootInstant::now())),
                                Err(_) => Vec::new(),
                            }
                        }
                        Err(_) => handler(Event::Idle),
                    };
                    if let Some(peer) = peer {
                        for d in out {
                            socket.send_to(&d, peer).unwrap();
                        }
                    }
                }
            });
            FakeServer {
                addr,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for FakeServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// The reply a server would send to `req`, adjusted by `edit`.
    fn reply_to(req: &Request<'_>, status: Status, edit: impl FnOnce(&mut Reply<'_>)) -> Vec<u8> {
        reply_with_holder(req, status, b"", edit)
    }

    fn reply_with_holder(
        req: &Request<'_>,
        status: Status,
        holder: &[u8],
        edit: impl FnOnce(&mut Reply<'_>),
    ) -> Vec<u8> {
        let mut reply = Reply {
            holder,
            ..Reply::bare(
                req.body.msg_type().reply_type().unwrap(),
                req.session_id,
                req.request_id,
                req.attempt,
                status,
            )
        };
        edit(&mut reply);
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        let len = reply.encode(&mut buf).unwrap();
        buf[..len].to_vec()
    }

    fn fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    fn client_for(server: &FakeServer, edit: impl FnOnce(&mut ClientConfig)) -> Client {
        let mut config = ClientConfig::new(vec![server.addr]);
        edit(&mut config);
        Client::new(config).unwrap()
    }

    #[test]
    fn client_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Client>();
    }

    #[test]
    fn round_trip_maps_replies() {
        let server = FakeServer::spawn(|event| {
            let Event::Request(req, _) = event else {
                return Vec::new();
            };
            let reply = match req.body {
                RequestBody::Acquire { resource, .. } => match resource {
                    b"busy" => reply_to(&req, Status::LockAcquisitionTimeout, |_| {}),
                    b"full" => reply_to(&req, Status::Overloaded, |r| {
                        r.hint = Hint::RetryAfter { ms: 25 }
                    }),
                    b"odd" => reply_to(&req, Status::Unsupported, |r| {
                        r.msg_type = MessageType::ErrorReply
                    }),
                    _ => reply_to(&req, Status::Ok, |r| {
                        r.hold_count = 1;
                        r.fencing_token = 42;
                        r.lease_ms = 5_000;
                    }),
                },
                RequestBody::Release { .. } => reply_to(&req, Status::Ok, |_| {}),
                RequestBody::Renew { .. } => reply_to(&req, Status::LockNotHeld, |_| {}),
                RequestBody::Status {
                    resource: b"missing",
                } => reply_to(&req, Status::ResourceDoesNotExist, |_| {}),
                RequestBody::Status { .. } => {
                    reply_with_holder(&req, Status::Ok, b"worker-\xff", |r| {
                        r.hold_count = 2;
                        r.fencing_token = 42;
                        r.lease_ms = 1_234;
                        r.waiter_count = 3;
                    })
                }
                RequestBody::Configure { .. } => reply_to(&req, Status::RequestExpired, |_| {}),
            };
            vec![reply]
        });
        let client = client_for(&server, |_| {});
        let before = BootInstant::now();
        let lease = client
            .acquire("orders/42", "worker-1", 1_000, Some(5_000))
            .unwrap();
        assert_eq!(lease.resource_id, "orders/42");
        assert_eq!(lease.client_id, "worker-1");
        assert_eq!(lease.fencing_token, 42);
        assert_eq!(lease.hold_count, 1);
        assert_eq!(lease.ttl_ms, 5_000);
        assert!(lease.is_valid());
        // (core time is whole microseconds, rounded down)
        assert!(lease.valid_until >= before + StdDuration::from_micros(4_949_999));
        assert!(lease.valid_until <= BootInstant::now() + StdDuration::from_millis(4_950));
        assert_eq!(client.acquire_lock("orders/42", "worker-1", 0), Ok(()));
        assert_eq!(client.release("orders/42", "worker-1"), Ok(0));
        assert_eq!(client.release_lock("orders/42", "worker-1"), Ok(()));
        assert_eq!(
            client.status("orders/42").unwrap(),
            LockStatus {
                resource_id: "orders/42".into(),
                holder: Some("worker-\u{fffd}".into()),
                holder_truncated: false,
                hold_count: 2,
                fencing_token: 42,
                remaining_ttl_ms: 1_234,
                waiter_count: 3,
            }
        );
        assert_eq!(
            client.status("missing"),
            Err(LockError::ResourceDoesNotExist)
        );
        assert_eq!(
            client.acquire("busy", "w", 0, None),
            Err(LockError::LockAcquisitionTimeout)
        );
        assert_eq!(
            client.try_acquire("full", "w", None),
            Err(LockError::Overloaded { retry_after_ms: 25 })
        );
        assert!(matches!(
            client.acquire("odd", "w", 0, None),
            Err(LockError::InternalError(_))
        ));
        assert_eq!(
            client.renew("orders/42", "w", None),
            Err(LockError::LockNotHeld)
        );
        assert_eq!(
            client.configure("orders/42", Some(10)),
            Err(LockError::OutcomeUnknown)
        );
        let stats = client.stats();
        // Only a retransmission can draw a second answer, which the client then drops as
        // stray; a busy machine may make the client retransmit before the fake server answers.
        assert!(
            stats.dropped_datagrams <= stats.retransmits,
            "{} datagrams dropped with {} retransmits",
            stats.dropped_datagrams,
            stats.retransmits
        );
        assert!(stats.srtt.is_some());
    }

    /// A queued acquire (WAITING) is kept alive at the paced interval, not retransmitted at
    /// loss-recovery pace, and the final grant ends the wait; its lease counts from the latest
    /// keepalive the server had seen when it granted. The fake server counts copies, not time,
    /// so a slow machine only makes the wait longer: every bound below is a lower bound on
    /// elapsed time, which load cannot break.
    #[test]
    fn waiting_switches_to_keepalives_until_the_grant() {
        /// Copies answered WAITING before the one that is granted.
        const WAITING_COPIES: usize = 5;
        let copies = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&copies);
        let server = FakeServer::spawn(move |event| match event {
            Event::Request(req, _) => {
                let mut log = log.lock().unwrap();
                log.push(req.attempt);
                if log.len() <= WAITING_COPIES {
                    // 160 ms lease: keepalives every 10 ms.
                    vec![reply_to(&req, Status::Waiting, |r| {
                        r.lease_ms = 160;
                        r.waiter_count = 3;
                    })]
                } else {
                    vec![reply_to(&req, Status::Ok, |r| {
                        r.flags = Flags::QUEUED;
                        r.fencing_token = 4;
                        r.hold_count = 1;
                        r.lease_ms = 160;
                    })]
                }
            }
            Event::Idle => Vec::new(),
        });
        let client = client_for(&server, |_| {});
        let started = BootInstant::now();
        let lease = client.acquire("r", "c", 5_000, Some(160)).unwrap();
        let waited = started.elapsed();
        assert_eq!(lease.fencing_token, 4);
        // The granted copy is the sixth or later: five keepalive gaps of 10 ms (less 1 ms of
        // timer rounding each) at least. Loss-recovery pace (a 1 ms RTO, doubling) would have
        // sent six copies within 1 + 2 + 4 + 8 + 16 = 31 ms.
        assert!(waited >= StdDuration::from_millis(45), "{waited:?}");
        let copies = copies.lock().unwrap();
        assert!(copies.len() > WAITING_COPIES, "{copies:?}");
        assert!(copies.windows(2).all(|w| w[1] == w[0] + 1), "{copies:?}");
        // The lease is counted from the keepalive the grant answered (sent at least 45 ms
        // after the first copy), not from the first send: 45 + 160 * 0.99 > 200 ms.
        assert!(lease.valid_until > started + StdDuration::from_millis(200));
    }

    /// OVERLOADED with a retry-after hint is retried as the SAME request (same id, next
    /// attempt), so a copy of it still in flight can never take effect beside a second one.
    #[test]
    fn overloaded_is_retried_as_the_same_request() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let server = FakeServer::spawn(move |event| {
            let Event::Request(req, _) = event else {
                return Vec::new();
            };
            let mut log = log.lock().unwrap();
            log.push((req.session_id, req.request_id, req.attempt));
            if log.len() <= 2 {
                return vec![reply_to(&req, Status::Overloaded, |r| {
                    r.hint = Hint::RetryAfter { ms: 5 };
                })];
            }
            vec![reply_to(&req, Status::Ok, |r| r.hold_count = 1)]
        });
        let client = client_for(&server, |_| {});
        assert_eq!(client.release("r", "c"), Ok(1));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen
            .iter()
            .all(|&(s, r, _)| (s, r) == (seen[0].0, seen[0].1)));
        assert!(seen.windows(2).all(|w| w[1].2 > w[0].2), "{seen:?}");
    }

    /// A WAITING reply moves the deadline to its receipt + wait_ms + grace: the server's wait
    /// started no later than that, so its final answer is still awaited (never a grant the
    /// client gave up on before the server's own deadline).
    #[test]
    fn waiting_extends_the_deadline_to_the_servers_wait() {
        let mut first: Option<BootInstant> = None;
        let server = FakeServer::spawn(move |event| match event {
            Event::Request(req, at) => {
                let first = *first.get_or_insert(at);
                // The first copies are "lost" for 150 ms, as if the network dropped them.
                if at.duration_since(first) < StdDuration::from_millis(150) {
                    return Vec::new();
                }
                if at.duration_since(first) < StdDuration::from_millis(300) {
                    return vec![reply_to(&req, Status::Waiting, |r| {
                        r.lease_ms = 1_600;
                        r.waiter_count = 1;
                    })];
                }
                vec![reply_to(&req, Status::Ok, |r| {
                    r.flags = Flags::QUEUED;
                    r.hold_count = 1;
                    r.fencing_token = 3;
                    r.lease_ms = 1_600;
                })]
            }
            Event::Idle => Vec::new(),
        });
        let client = client_for(&server, |c| c.grace_ms = 50);
        // Without the extension the client would give up at 200 + 50 ms.
        let lease = client.acquire("r", "c", 200, None).unwrap();
        assert_eq!(lease.fencing_token, 3);
    }

    #[test]
    fn retransmits_with_same_request_id_and_next_attempt() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let server = FakeServer::spawn(move |event| {
            let Event::Request(req, _) = event else {
                return Vec::new();
            };
            let mut log = log.lock().unwrap();
            log.push((req.request_id, req.attempt));
            if log.len() <= 2 {
                return Vec::new(); // the first two copies are "lost"
            }
            vec![reply_to(&req, Status::Ok, |r| {
                r.fencing_token = 9;
                r.lease_ms = 1_000;
                r.hold_count = 1;
            })]
        });
        let client = client_for(&server, |_| {});
        let lease = client.acquire("r", "c", 0, None).unwrap();
        assert_eq!(lease.fencing_token, 9);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        let id = seen[0].0;
        assert_eq!(seen, vec![(id, 0), (id, 1), (id, 2)]);
        assert_eq!(client.stats().retransmits, 2);
        // The next operation takes a fresh id.
        client.release("r", "c").unwrap();
    }

    #[test]
    fn ignores_forged_and_stray_replies() {
        let server = FakeServer::spawn(|event| {
            let Event::Request(req, _) = event else {
                return Vec::new();
            };
            let good = reply_to(&req, Status::Ok, |r| {
                r.fencing_token = 7;
                r.lease_ms = 1_000;
            });
            let mut truncated = good.clone();
            truncated.truncate(40);
            let mut oversized = good.clone();
            oversized.resize(DATAGRAM_LEN_MAX + 1, 0);
            vec![
                reply_to(&req, Status::Ok, |r| {
                    r.session_id ^= 1;
                    r.fencing_token = 666;
                }),
                reply_to(&req, Status::Ok, |r| {
                    r.request_id += 1_000;
                    r.fencing_token = 667;
                }),
                reply_to(&req, Status::Ok, |r| {
                    r.msg_type = MessageType::ReleaseReply;
                    r.fencing_token = 668;
                }),
                b"garbage".to_vec(),
                truncated,
                oversized,
                good.clone(),
                good, // a duplicate of the good reply, after the operation ended
            ]
        });
        let client = client_for(&server, |_| {});
        let lease = client.acquire("r", "c", 0, None).unwrap();
        assert_eq!(lease.fencing_token, 7);
        assert_eq!(client.stats().dropped_datagrams, 6);
        // The late duplicate is dropped by the next operation's receiver.
        assert_eq!(client.acquire("r", "c", 0, None).unwrap().fencing_token, 7);
        assert!(client.stats().dropped_datagrams >= 7);
    }

    #[test]
    fn unavailable_at_the_deadline() {
        let server = FakeServer::spawn(|_| Vec::new()); // hears everything, answers nothing
        let client = client_for(&server, |c| {
            c.request_timeout_ms = 60;
            c.grace_ms = 40;
        });
        let start = BootInstant::now();
        assert_eq!(client.status("r"), Err(LockError::Unavailable));
        let took = start.elapsed();
        assert!(took >= StdDuration::from_millis(60), "{took:?}");
        // Ends at its deadline, not in a hang (a bound load cannot reach).
        assert!(took < StdDuration::from_millis(10_000), "{took:?}");
        assert!(client.stats().retransmits >= 3);

        let start = BootInstant::now();
        assert_eq!(
            client.acquire("r", "c", 20, None),
            Err(LockError::Unavailable)
        );
        let took = start.elapsed();
        assert!(took >= StdDuration::from_millis(60), "{took:?}");
        // Ends at its deadline, not in a hang (a bound load cannot reach).
        assert!(took < StdDuration::from_millis(10_000), "{took:?}");
    }

    /// Many threads on one client; the fake answers in batches, in reverse order.
    fn many_threads(edit: impl FnOnce(&mut ClientConfig)) {
        const THREADS: usize = 8;
        const OPS: usize = 200;
        let mut held: Vec<Vec<u8>> = Vec::new();
        // Lanes: a session never has two different requests outstanding at once. (A late
        // copy of a request already answered is not outstanding: it is a stale retransmit.)
        let mut outstanding: HashMap<u64, u64> = HashMap::new();
        let mut answered: std::collections::HashSet<(u64, u64)> = Default::default();
        let lanes_seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let lanes_log = Arc::clone(&lanes_seen);
        let server = FakeServer::spawn(move |event| {
            match event {
                Event::Request(req, _) => {
                    if !answered.contains(&(req.session_id, req.request_id)) {
                        if let Some(&other) = outstanding.get(&req.session_id) {
                            assert_eq!(
                                other, req.request_id,
                                "two requests outstanding in one session"
                            );
                        }
                        outstanding.insert(req.session_id, req.request_id);
                    }
                    lanes_log.lock().unwrap().insert(req.session_id);
                    let resource = req.body.resource();
                    held.push(reply_to(&req, Status::Ok, |r| {
                        r.fencing_token = fnv(resource);
                        r.hold_count = resource.len() as u32;
                        r.lease_ms = 10_000;
                    }));
                    if held.len() < 4 {
                        return Vec::new();
                    }
                }
                Event::Idle => {}
            }
            let mut out = std::mem::take(&mut held);
            out.reverse();
            // Answered: those sessions have nothing outstanding any more.
            for d in &out {
                let r = Reply::decode(d).unwrap();
                answered.insert((r.session_id, r.request_id));
                if outstanding.get(&r.session_id) == Some(&r.request_id) {
                    outstanding.remove(&r.session_id);
                }
            }
            out
        });
        let client = client_for(&server, |c| {
            c.grace_ms = 5_000;
            edit(c);
        });
        thread::scope(|s| {
            for t in 0..THREADS {
                let client = &client;
                s.spawn(move || {
                    for i in 0..OPS {
                        let resource = format!("thread-{t}/op-{i}");
                        let lease = client.try_acquire(&resource, "me", None).unwrap();
                        assert_eq!(lease.resource_id, resource);
                        assert_eq!(lease.fencing_token, fnv(resource.as_bytes()));
                        assert_eq!(lease.hold_count as usize, resource.len());
                    }
                });
            }
        });
        assert!(lock(&client.pending).is_empty());
        let lanes = lanes_seen.lock().unwrap().len();
        assert!(
            (2..=THREADS).contains(&lanes),
            "{lanes} lanes for {THREADS} threads"
        );
    }

    #[test]
    fn threads_sharing_one_client_get_their_own_replies() {
        many_threads(|_| {});
    }

    /// The same without retransmissions (every RTO is 5 s, longer than the test), so a lost
    /// hand-off of the receiver role would show as a stuck thread, not be hidden by a resend.
    #[test]
    fn receiver_hand_off_needs_no_retransmission() {
        let five_s = Duration::from_millis(5_000);
        many_threads(|c| {
            c.retransmit = RetransmitConfig {
                rto_initial: five_s,
                rto_min: five_s,
                rto_max: five_s,
            };
            c.grace_ms = 4_000;
        });
    }

    #[test]
    fn lease_counts_from_the_echoed_attempts_send_time() {
        let rto = Duration::from_millis(20);
        let received: Arc<Mutex<Vec<(u16, BootInstant)>>> = Arc::default();
        let log = Arc::clone(&received);
        let mut late_reply = None;
        let server = FakeServer::spawn(move |event| {
            let Event::Request(req, at) = event else {
                return Vec::new();
            };
            log.lock().unwrap().push((req.attempt, at));
            let grant = |r: &mut Reply<'_>| {
                r.lease_ms = 1_000;
                r.fencing_token = 1;
            };
            match (req.body.resource(), req.attempt) {
                // Attempt 0 is lost; attempt 1 is granted and answered.
                (b"lost-first", 0) => Vec::new(),
                (b"lost-first", _) => vec![reply_to(&req, Status::Ok, grant)],
                // Attempt 0 is granted but its answer is slow: it arrives after attempt 1 and
                // still echoes 0.
                (b"slow-answer", 0) => {
                    late_reply = Some(reply_to(&req, Status::Ok, grant));
                    Vec::new()
                }
                (b"slow-answer", _) => late_reply.take().into_iter().collect(),
                _ => Vec::new(),
            }
        });
        let client = client_for(&server, |c| {
            // The floor keeps every RTO at 20 ms or more, also after RTT samples, so the
            // send times of two copies are far apart.
            c.retransmit = RetransmitConfig {
                rto_initial: rto,
                rto_min: rto,
                rto_max: Duration::from_millis(100),
            };
        });
        let valid_ms = StdDuration::from_millis(990); // 1000 ms minus the 1% drift bound
        let tick = StdDuration::from_millis(1);

        let before = BootInstant::now();
        let lease = client.acquire("lost-first", "c", 0, None).unwrap();
        let start = lease.valid_until - valid_ms;
        let at1 = received.lock().unwrap()[1];
        assert_eq!(at1.0, 1);
        // Counted from the second copy: sent at least one RTO after the first, and before the
        // server received it.
        assert!(
            start + tick >= before + std_duration(rto),
            "{:?}",
            start - before
        );
        assert!(start <= at1.1);

        received.lock().unwrap().clear();
        let before = BootInstant::now();
        let lease = client.acquire("slow-answer", "c", 0, None).unwrap();
        let start = lease.valid_until - valid_ms;
        let at0 = received.lock().unwrap()[0];
        assert_eq!(at0.0, 0);
        // Counted from the first copy, not the second (sent 20 ms or more later).
        assert!(start + tick >= before);
        assert!(start <= at0.1);
        assert!(
            received.lock().unwrap().len() >= 2,
            "the reply came after attempt 1"
        );
    }

    #[test]
    fn invalid_arguments_are_refused_before_sending() {
        let requests = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&requests);
        let server = FakeServer::spawn(move |event| {
            if let Event::Request(..) = event {
                count.fetch_add(1, Ordering::Relaxed);
            }
            Vec::new()
        });
        let client = client_for(&server, |_| {});
        let long = "x".repeat(256);
        let invalid = |r: Result<Lease, LockError>| matches!(r, Err(LockError::InvalidArgument(_)));
        assert!(invalid(client.acquire("", "c", 0, None)));
        assert!(invalid(client.acquire("r", "", 0, None)));
        assert!(invalid(client.acquire(&long, "c", 0, None)));
        assert!(invalid(client.acquire("r", &long, 0, None)));
        assert!(invalid(client.acquire("r", "c", WAIT_MS_MAX + 1, None)));
        assert!(invalid(client.acquire("r", "c", 0, Some(0))));
        assert!(invalid(client.renew("r", "", None)));
        assert!(matches!(
            client.release(&long, "c"),
            Err(LockError::InvalidArgument(_))
        ));
        assert!(matches!(
            client.status(""),
            Err(LockError::InvalidArgument(_))
        ));
        assert!(matches!(
            client.configure("r", Some(0)),
            Err(LockError::InvalidArgument(_))
        ));
        thread::sleep(StdDuration::from_millis(20));
        assert_eq!(requests.load(Ordering::Relaxed), 0);

        // A 255-byte id is fine (it is sent).
        let max = "y".repeat(255);
        // (the fake never answers)
        assert_eq!(
            client.try_acquire(&max, &max, None),
            Err(LockError::Unavailable)
        );
        assert!(requests.load(Ordering::Relaxed) > 0);

        assert!(matches!(
            Client::connect(&[]),
            Err(LockError::InvalidArgument(_))
        ));
        let mut config = ClientConfig::new(vec![server.addr]);
        config.drift_bound_ppm = 1_000_000;
        assert!(matches!(
            Client::new(config),
            Err(LockError::InvalidArgument(_))
        ));
    }

    #[test]
    fn session_ids_are_random_and_non_zero() {
        let server = FakeServer::spawn(|_| Vec::new());
        let a = client_for(&server, |_| {});
        let b = client_for(&server, |_| {});
        assert_ne!(a.session_id(), 0);
        assert_ne!(a.session_id(), b.session_id());
    }

    /// What one fake node saw: (session id, request id, attempt, resource) per request.
    type Seen = Arc<Mutex<Vec<(u64, u64, u16, Vec<u8>)>>>;

    /// A fake cluster node that logs every request in `seen` and answers with `answer`.
    fn node<F>(seen: &Seen, mut answer: F) -> FakeServer
    where
        F: FnMut(&Request<'_>) -> Vec<Vec<u8>> + Send + 'static,
    {
        let log = Arc::clone(seen);
        FakeServer::spawn(move |event| {
            let Event::Request(req, _) = event else {
                return Vec::new();
            };
            log.lock().unwrap().push((
                req.session_id,
                req.request_id,
                req.attempt,
                req.body.resource().to_vec(),
            ));
            answer(&req)
        })
    }

    fn seen(log: &Seen) -> Vec<(u64, u64, u16, Vec<u8>)> {
        log.lock().unwrap().clone()
    }

    /// The answer of the shard's leader: OK, one hold, token 5.
    fn grant(req: &Request<'_>) -> Vec<u8> {
        reply_to(req, Status::Ok, |r| {
            r.hold_count = 1;
            r.fencing_token = 5;
            r.lease_ms = 1_000;
        })
    }

    fn not_leader(req: &Request<'_>, leader: Option<SocketAddr>) -> Vec<u8> {
        reply_to(req, Status::NotLeader, |r| {
            if let Some(addr) = leader {
                r.hint = Hint::Leader(addr);
            }
        })
    }

    /// A client of these nodes with one shard (every resource starts at `servers[0]`) and a
    /// fixed 100 ms RTO, so that a slow test machine causes no retransmission the test does
    /// not expect.
    fn client_of(servers: &[&FakeServer], edit: impl FnOnce(&mut ClientConfig)) -> Client {
        let mut config = ClientConfig::new(servers.iter().map(|s| s.addr).collect());
        config.shards = 1;
        let rto = Duration::from_millis(100);
        config.retransmit = RetransmitConfig {
            rto_initial: rto,
            rto_min: rto,
            rto_max: rto,
        };
        edit(&mut config);
        Client::new(config).unwrap()
    }

    /// A node that shares a late-bound address (a peer's, or the client's) with a handler.
    fn late_addr() -> (Arc<OnceLock<SocketAddr>>, Arc<OnceLock<SocketAddr>>) {
        let addr = Arc::new(OnceLock::new());
        (Arc::clone(&addr), addr)
    }

    #[test]
    fn not_leader_with_a_hint_sends_the_same_request_to_the_leader_and_caches_it() {
        let (follower_log, leader_log) = (Seen::default(), Seen::default());
        let leader = node(&leader_log, |req| vec![grant(req)]);
        let leader_addr = leader.addr;
        let follower = node(&follower_log, move |req| {
            vec![not_leader(req, Some(leader_addr))]
        });
        let client = client_of(&[&follower, &leader], |_| {});
        assert_eq!(
            client.leader_addr("r"),
            follower.addr,
            "servers[0 % 2] first"
        );

        assert_eq!(client.acquire("r", "c", 0, None).unwrap().fencing_token, 5);
        let (f, l) = (seen(&follower_log), seen(&leader_log));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(
            (l[0].0, l[0].1),
            (f[0].0, f[0].1),
            "the same session and request id"
        );
        assert_eq!((f[0].2, l[0].2), (0, 1), "the redirect is the next attempt");
        assert_eq!(client.stats().redirects, 1);
        assert_eq!(client.stats().retransmits, 1);

        // The next call about the resource goes straight to the leader.
        assert_eq!(client.leader_addr("r"), leader.addr);
        assert_eq!(client.release("r", "c"), Ok(1));
        assert_eq!(seen(&follower_log).len(), 1);
        let l = seen(&leader_log);
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].2, 0, "a new request, sent once");
        assert_eq!(client.stats().redirects, 1);
    }

    #[test]
    fn a_hinted_leader_outside_the_server_list_is_used_and_cached() {
        let (follower_log, leader_log) = (Seen::default(), Seen::default());
        let leader = node(&leader_log, |req| vec![grant(req)]);
        let leader_addr = leader.addr;
        let follower = node(&follower_log, move |req| {
            vec![not_leader(req, Some(leader_addr))]
        });
        let client = client_of(&[&follower], |_| {});
        assert_eq!(client.release("r", "c"), Ok(1));
        assert_eq!(client.leader_addr("r"), leader.addr);
        assert_eq!(client.release("r", "c"), Ok(1));
        assert_eq!(seen(&follower_log).len(), 1);
        assert_eq!(seen(&leader_log).len(), 2);
        assert_eq!(client.servers(), &[follower.addr]);
        assert_eq!(client.server_addr(), follower.addr);
    }

    #[test]
    fn not_leader_without_a_hint_moves_on_to_the_next_server() {
        let (electing_log, leader_log) = (Seen::default(), Seen::default());
        let electing = node(&electing_log, |req| vec![not_leader(req, None)]);
        let leader = node(&leader_log, |req| vec![grant(req)]);
        let client = client_of(&[&electing, &leader], |_| {});
        assert_eq!(client.release("r", "c"), Ok(1));
        let (e, l) = (seen(&electing_log), seen(&leader_log));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!((l[0].0, l[0].1, l[0].2), (e[0].0, e[0].1, 1));
        assert_eq!(client.stats().redirects, 1);
        assert_eq!(client.leader_addr("r"), leader.addr);
    }

    #[test]
    fn a_silent_server_is_left_after_two_copies() {
        let (silent_log, leader_log) = (Seen::default(), Seen::default());
        let silent = node(&silent_log, |_| Vec::new()); // dead, as far as anyone can tell
        let leader = node(&leader_log, |req| vec![grant(req)]);
        let rto = Duration::from_millis(20);
        let client = client_of(&[&silent, &leader], |c| {
            c.retransmit = RetransmitConfig {
                rto_initial: rto,
                rto_min: rto,
                rto_max: Duration::from_millis(100),
            };
        });
        assert_eq!(client.release("r", "c"), Ok(1));
        let (s, l) = (seen(&silent_log), seen(&leader_log));
        let attempts =
            |log: &[(u64, u64, u16, Vec<u8>)]| -> Vec<u16> { log.iter().map(|e| e.2).collect() };
        assert_eq!(attempts(&s), [0, 1], "{s:?}");
        assert_eq!(attempts(&l), [2], "{l:?}");
        assert_eq!((l[0].0, l[0].1), (s[0].0, s[0].1));
        assert_eq!(client.stats().redirects, 0, "moving on is not a redirect");

        assert_eq!(client.leader_addr("r"), leader.addr);
        assert_eq!(client.release("r", "c"), Ok(1));
        assert_eq!(
            seen(&silent_log).len(),
            2,
            "the next call skips the silent node"
        );
    }

    /// Replies are matched on session and request id, not on where they come from: after a
    /// failover the new leader answers requests that were sent to the old one.
    #[test]
    fn a_reply_from_another_address_is_accepted() {
        let (target_log, other_log) = (Seen::default(), Seen::default());
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (client_addr, late_client_addr) = late_addr();
        let target = node(&target_log, move |req| {
            // Answered by a different socket, on this node's behalf.
            if let Some(&to) = late_client_addr.get() {
                other.send_to(&grant(req), to).unwrap();
            }
            Vec::new()
        });
        let never = node(&other_log, |_| Vec::new());
        let client = client_of(&[&target, &never], |_| {});
        let port = client.socket.local_addr().unwrap().port();
        client_addr.set((Ipv4Addr::LOCALHOST, port).into()).unwrap();

        assert_eq!(client.acquire("r", "c", 0, None).unwrap().fencing_token, 5);
        assert_eq!(client.stats().dropped_datagrams, 0);
        assert_eq!(seen(&target_log).len(), 1);
        assert!(seen(&other_log).is_empty());
        // The answer came from an unknown address: the node it was sent to stays the leader.
        assert_eq!(client.leader_addr("r"), target.addr);
    }

    /// Seed 353 of the lock-service simulator: a RELEASE the client gave up on, applied after
    /// the same client's next ACQUIRE of the lock, freed the new hold behind its back. Now the
    /// doubtful release is sent again (same ids) and answered before the next request on
    /// that lock leaves; other locks are not held up.
    #[test]
    fn an_unanswered_release_is_settled_before_the_lock_is_touched_again() {
        let log = Seen::default();
        let silent = Arc::new(AtomicBool::new(true));
        let silent_flag = Arc::clone(&silent);
        let server = node(&log, move |req| {
            if silent_flag.load(Ordering::Relaxed)
                && matches!(req.body, RequestBody::Release { .. })
            {
                Vec::new()
            } else {
                vec![grant(req)]
            }
        });
        let client = client_of(&[&server], |c| {
            c.request_timeout_ms = 250;
            c.retransmit = RetransmitConfig {
                rto_initial: Duration::from_millis(20),
                rto_min: Duration::from_millis(20),
                rto_max: Duration::from_millis(20),
            };
        });
        client.acquire("r", "c", 0, None).unwrap();
        assert_eq!(client.release("r", "c"), Err(LockError::Unavailable));
        let release_id = seen(&log).last().unwrap().1;
        // Another lock is not held up by the doubt.
        client.acquire("other", "c", 0, None).unwrap();
        // The doubtful release cannot be settled while the server stays silent: the next
        // acquire of the same lock is not sent at all, and says why.
        let before = seen(&log).len();
        assert_eq!(
            client.acquire("r", "c", 0, None),
            Err(LockError::ReleaseInDoubt)
        );
        let tried: Vec<_> = seen(&log)[before..].iter().map(|s| s.1).collect();
        assert!(
            !tried.is_empty() && tried.iter().all(|&id| id == release_id),
            "{tried:?}"
        );
        // Once the release is answered, the acquire goes out, after it.
        silent.store(false, Ordering::Relaxed);
        client.acquire("r", "c", 0, None).unwrap();
        let order: Vec<u64> = seen(&log).iter().map(|s| s.1).collect();
        let settled = order.iter().rposition(|&id| id == release_id).unwrap();
        assert!(order[settled + 1..].iter().all(|&id| id > release_id));
        assert!(
            !order[settled + 1..].is_empty(),
            "the acquire was never sent"
        );
    }

    /// Issue 7 item 7: a doubtful RELEASE sent again continues its attempt numbers (spec
    /// §7.1.5, "next attempt"). The server executed the copy numbered k (its answer was lost)
    /// and answers every later copy with that remembered answer, which echoes k: a replay
    /// restarting at attempt 0 would drop it as answering a copy never sent (§7.1.4 rule 4),
    /// and the lock would stay blocked although the server answers at once.
    #[test]
    fn a_doubtful_release_is_replayed_with_the_next_attempt_number() {
        let log = Seen::default();
        let executed_at: Arc<Mutex<Option<u16>>> = Arc::default();
        let answering = Arc::new(AtomicBool::new(false));
        let (executed, answer) = (Arc::clone(&executed_at), Arc::clone(&answering));
        let server = node(&log, move |req| match req.body {
            RequestBody::Release { .. } => {
                let mut executed = executed.lock().unwrap();
                if !answer.load(Ordering::Relaxed) {
                    // Every copy is "executed" by the first to arrive in the lost-answer
                    // world; record the highest, as if earlier ones were lost on the way.
                    *executed = Some(req.attempt);
                    return Vec::new();
                }
                let echo = executed.expect("a copy arrived before");
                vec![reply_to(req, Status::Ok, |r| r.attempt = echo)]
            }
            _ => vec![grant(req)],
        });
        let client = client_of(&[&server], |c| {
            c.request_timeout_ms = 250;
            c.retransmit = RetransmitConfig {
                rto_initial: Duration::from_millis(20),
                rto_min: Duration::from_millis(20),
                rto_max: Duration::from_millis(20),
            };
        });
        client.acquire("r", "c", 0, None).unwrap();
        assert_eq!(client.release("r", "c"), Err(LockError::Unavailable));
        let release_id = seen(&log).last().unwrap().1;
        let k = executed_at.lock().unwrap().unwrap();
        assert!(k >= 3, "too few copies to show anything: {k}");
        answering.store(true, Ordering::Relaxed);
        client.acquire("r", "c", 0, None).unwrap();
        // Every copy of the release, the replay's included, in the order sent (loopback keeps
        // it): one sequence of attempt numbers, never starting again.
        let attempts: Vec<u16> = seen(&log)
            .iter()
            .filter(|s| s.1 == release_id)
            .map(|s| s.2)
            .collect();
        let expected: Vec<u16> = (0..attempts.len() as u16).collect();
        assert_eq!(attempts, expected, "the release's attempt numbers");
        assert!(
            attempts.len() > usize::from(k) + 1,
            "no replay: {attempts:?}"
        );
    }

    /// Issue 7 item 2: OVERLOADED is not remembered by the server, so a RELEASE answered only
    /// OVERLOADED until its deadline may still take effect (a copy in flight). The caller is
    /// not told "nothing changed", and the release is settled before the lock is touched again.
    #[test]
    fn a_release_answered_only_overloaded_is_a_doubt() {
        let log = Seen::default();
        let overloaded = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&overloaded);
        let server = node(&log, move |req| match req.body {
            RequestBody::Release { .. } if flag.load(Ordering::Relaxed) => {
                vec![reply_to(req, Status::Overloaded, |r| {
                    r.hint = Hint::RetryAfter { ms: 1_000 }
                })]
            }
            _ => vec![grant(req)],
        });
        let client = client_of(&[&server], |c| c.request_timeout_ms = 150);
        client.acquire("r", "c", 0, None).unwrap();
        let error = client.release("r", "c").unwrap_err();
        assert!(!error.outcome_known(), "{error:?}");
        let release_id = seen(&log).last().unwrap().1;
        overloaded.store(false, Ordering::Relaxed);
        let before = seen(&log).len();
        client.acquire("r", "c", 0, None).unwrap();
        let ids: Vec<u64> = seen(&log)[before..].iter().map(|s| s.1).collect();
        assert_eq!(ids.first(), Some(&release_id), "settled first: {ids:?}");
        assert!(ids.last().is_some_and(|&id| id > release_id), "{ids:?}");
    }

    /// The table of doubts is bounded: once it holds [`DOUBTS_MAX`], a further RELEASE is
    /// refused before anything is sent (it could not be remembered if it went unanswered).
    #[test]
    fn doubts_are_bounded() {
        let log = Seen::default();
        let server = node(&log, |_| Vec::new()); // hears everything, answers nothing
        let client = client_of(&[&server], |c| c.request_timeout_ms = 50);
        assert_eq!(client.release("r0", "c"), Err(LockError::Unavailable));
        {
            // Fill the table with doubts of other locks, as unanswered releases leave them.
            let mut doubts = lock(&client.doubts);
            let now = client.now();
            for i in 1..DOUBTS_MAX {
                let request = CallRequest {
                    session_id: client.session_id,
                    request_id: 1_000 + i as u64,
                    msg_type: MessageType::Release,
                    shard: 0,
                    wait_ms: 0,
                };
                let timer = lock(&client.rtt).timer();
                let end = now + Duration::from_micros(1);
                let mut call = Call::new(now, request, timer, end, Duration::ZERO, &client.routes);
                call.handle_timeout(end, &client.routes);
                doubts.keep(format!("r{i}").as_bytes(), b"c", Vec::new(), call);
            }
            assert!(doubts.is_full());
        }
        assert_eq!(
            client.release("one-more", "c"),
            Err(LockError::Overloaded { retry_after_ms: 0 })
        );
        // (The copy would have left before the call returned; give the fake time to log it.)
        thread::sleep(StdDuration::from_millis(20));
        let sent = seen(&log).iter().filter(|e| e.3 == b"one-more").count();
        assert_eq!(sent, 0, "nothing was sent");
    }

    /// Two nodes that name each other as the leader cost a bounded number of datagrams and
    /// end in the call's own timeout, not in a hot loop, a hang or a NOT_LEADER error.
    #[test]
    fn a_redirect_loop_ends_at_the_deadline() {
        let (a_log, b_log) = (Seen::default(), Seen::default());
        let (b_addr, late_b_addr) = late_addr();
        let a = node(&a_log, move |req| {
            vec![not_leader(req, late_b_addr.get().copied())]
        });
        let a_addr = a.addr;
        let b = node(&b_log, move |req| vec![not_leader(req, Some(a_addr))]);
        b_addr.set(b.addr).unwrap();
        let client = client_of(&[&a, &b], |c| {
            c.retransmit = RetransmitConfig::default();
            c.request_timeout_ms = 200;
        });
        let start = BootInstant::now();
        assert_eq!(client.status("r"), Err(LockError::Unavailable));
        let took = start.elapsed();
        assert!(took >= StdDuration::from_millis(200), "{took:?}");
        // Ends at its deadline, not in a hang (a bound load cannot reach).
        assert!(took < StdDuration::from_millis(10_000), "{took:?}");
        thread::sleep(StdDuration::from_millis(20)); // let the fakes log the last copies
        let datagrams = seen(&a_log).len() + seen(&b_log).len();
        assert!(
            datagrams > REDIRECTS_FAST_MAX as usize,
            "{datagrams} datagrams"
        );
        assert!(datagrams < 100, "{datagrams} datagrams in 200 ms");
        let ids: std::collections::HashSet<_> = seen(&a_log)
            .into_iter()
            .chain(seen(&b_log))
            .map(|e| (e.0, e.1))
            .collect();
        assert_eq!(ids.len(), 1, "one request throughout");
    }

    /// Every shard has its own cache entry: two resources in different shards, each led by
    /// the node the initial guess does not pick, are redirected once each and then go
    /// straight to their own leaders.
    #[test]
    fn each_shard_has_its_own_leader() {
        let shard = |r: &str| shard_of(r.as_bytes(), 2);
        let name = |s: u32| {
            (0..)
                .map(|i| format!("res-{i}"))
                .find(|r| shard(r) == s)
                .unwrap()
        };
        let (r0, r1) = (name(0), name(1));
        let (a_log, b_log) = (Seen::default(), Seen::default());
        let (b_addr, late_b_addr) = late_addr();
        // a leads shard 1, b shard 0: the opposite of the initial guess `servers[s % 2]`.
        let a = node(&a_log, move |req| {
            if shard_of(req.body.resource(), 2) == 1 {
                vec![grant(req)]
            } else {
                vec![not_leader(req, late_b_addr.get().copied())]
            }
        });
        let a_addr = a.addr;
        let b = node(&b_log, move |req| {
            if shard_of(req.body.resource(), 2) == 0 {
                vec![grant(req)]
            } else {
                vec![not_leader(req, Some(a_addr))]
            }
        });
        b_addr.set(b.addr).unwrap();
        let client = client_of(&[&a, &b], |c| c.shards = 2);
        assert_eq!(client.leader_addr(&r0), a.addr);
        assert_eq!(client.leader_addr(&r1), b.addr);

        for _ in 0..3 {
            assert_eq!(client.release(&r0, "c"), Ok(1));
            assert_eq!(client.release(&r1, "c"), Ok(1));
        }
        assert_eq!(client.stats().redirects, 2, "one per shard");
        assert_eq!(client.leader_addr(&r0), b.addr);
        assert_eq!(client.leader_addr(&r1), a.addr);
        let granted =
            |log: &Seen, s: u32| seen(log).iter().filter(|e| shard_of(&e.3, 2) == s).count();
        assert_eq!((granted(&b_log, 0), granted(&a_log, 0)), (3, 1));
        assert_eq!((granted(&a_log, 1), granted(&b_log, 1)), (3, 1));
    }

    #[test]
    fn shards_are_validated() {
        let server: SocketAddr = (Ipv4Addr::LOCALHOST, 7100).into();
        for shards in [0, SHARDS_MAX + 1] {
            let mut config = ClientConfig::new(vec![server]);
            config.shards = shards;
            assert!(matches!(
                config.validate(),
                Err(LockError::InvalidArgument(_))
            ));
        }
        let mut config = ClientConfig::new(vec![server]);
        assert_eq!(config.shards, SHARDS_DEFAULT);
        config.shards = SHARDS_MAX;
        assert_eq!(config.validate(), Ok(()));
    }
}
