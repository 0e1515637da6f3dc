//! The lock table: every lock, wait queue and client session of one server (later: of one
//! Raft-replicated shard), as a pure deterministic state machine. Its rules are the spec's
//! lock semantics (spec/client-protocol.md §6); this module is their one implementation.
//!
//! # Data flow
//!
//! The shell decodes a datagram into a [`Request`] and calls [`LockTable::handle_request`] with
//! the current time. The table first fires every timer due by then, exactly as
//! [`LockTable::handle_timeout`] would, and then takes the request through three gates:
//!
//! 1. **Arguments.** Ids of 1..=255 bytes, wait and TTL within the configured maxima, non-zero
//!    session and request ids; else INVALID_ARGUMENT. This reads no state and keeps none, so
//!    a retransmit gets the same answer again.
//! 2. **Session** (all but STATUS, which is read-only and never remembered): a request already
//!    answered gets its remembered answer again; a request still queued (a keepalive) updates
//!    its reply address and attempt and is told WAITING again; a request older than the session's remembered window gets
//!    REQUEST_EXPIRED. Only a request never seen before goes on.
//! 3. **Execution** against the lock. The final answer is remembered in the session (except
//!    OVERLOADED, which left no trace, so a retry of the same request id may still succeed) and
//!    queued as a [`Reply`]. An acquire that has to wait is answered WAITING now (a provisional
//!    answer, never remembered, so the client stops retransmitting at loss-recovery pace); its
//!    final answer comes later, when a release or expiry hands the lock to it or its wait
//!    deadline passes.
//!
//! The shell then drains [`LockTable::poll_reply`] and sleeps until [`LockTable::poll_timeout`].
//! A release that hands the lock on queues the new holder's grant before its own answer, so
//! the lock changes hands as early as possible.
//!
//! A session's activity is the arrival of one of its requests (STATUS aside). It is forgotten
//! `session_idle_ms` after the last one; a queued acquire always ends before that, because its
//! wait is shorter than the idle time (`Config::validate`).
//!
//! # Determinism
//!
//! The outputs depend only on the sequence of `(now, input)` calls: no clock, no randomness, no
//! IO, and no decision ever depends on a hash map's iteration order (none is iterated). Timers
//! fire in the order (due time, kind, sequence number), and each acts at its due time, as if
//! `handle_timeout` had been called exactly then: a lock whose lease ended at `t` is handed to
//! its next waiter at `t`, with a lease counted from `t`, however late the shell calls in. So
//! replicas that apply the same commands reach the same state.
//!
//! # Data structures
//!
//! - `slots: Vec<Slot>`: one slot per known resource, reused through a free list. A slot holds
//!   the resource id and the holder's client id in ONE allocation, the hold (count, token,
//!   expiry, TTL), the configured default TTL, and its wait queue boxed (`None`, no allocation,
//!   while nobody waits). 56 bytes on 64-bit targets. The ids buffer of the resource forgotten
//!   last is kept for the next one created with ids of its length (`ids_spare`).
//! - `index`: resource id → slot through a keyed hash of the id (see `index.rs`), so the id
//!   is stored once, in the slot.
//! - Wait queues (`queue.rs`): FIFO `VecDeque`s; a waiter that times out from the middle
//!   becomes a tombstone, compacted away in O(1) amortized, and is found by binary search.
//!   One emptied small queue is kept for the next lock that gets a waiter (`queue_spare`).
//! - `holds: BTreeMap<u64, u32>`: fencing token → slot for every held lock, so a KEEPALIVE
//!   (spec §4.11) finds the hold a token names in O(log n), and HOLDS (spec §4.13) walks the
//!   holds in token order from a cursor, a page at a time. A token names one hold within the
//!   table (one counter per table), so the map needs no resource id.
//! - `timers: BTreeSet<Timer>`: every hold expiry and wait deadline, 24 bytes each, removed
//!   exactly when it stops applying (release, renew, grant), so the first entry is the next
//!   wake-up and firing never meets a stale timer.
//! - `sessions: HashMap<SessionKey, Session>` with `sessions_idle: BTreeSet<(last activity,
//!   id)>`, so the next idle session is found without a scan. A `SessionKey` is the id with
//!   its keyed SipHash, computed once per request for every access the request makes (as a
//!   request hashes its resource id once for the index: `ResourceIndex::hash`). A session keeps its final answers in a
//!   `VecDeque` sorted by request id (`answers.rs`: clients number requests upwards, so a new
//!   answer goes at the back and the smallest is evicted from the front) and its queued
//!   requests in a `BTreeMap`.
//! - `replies: VecDeque<Reply>`: reused, so a reply costs no allocation.
//!
//! Held lock, 64-bit, 16-byte ids: slot 56 B + ids 48 B (allocator chunk) + index ≈ 36 B +
//! expiry timer ≈ 45 B (B-tree nodes about 60 % full) + token entry ≈ 26 B ≈ 211 B, under
//! the 256 B budget. Measured (resident memory, 1,000,000 held locks): 199 B before the token
//! index; as a `HashMap` the index added 36 B there (1,000,000 entries sit just past a growth,
//! the worst case), so about 235 B. As the ordered `BTreeMap` HOLDS walks (spec §4.13) it
//! allocates 26.3 B per entry at 262,144 and at 1,000,000 entries inserted in token order, and
//! after FIFO churn, 24.5 B after scattered releases, against 34.0 and 35.7 B for the
//! `HashMap` (bytes allocated, counted by a global allocator; `rustc -O`, 2-vCPU VM), so
//! about 226 B per held lock. A/B of the whole table, resident memory, release build, the
//! same VM: 1,000,000 acquires of 16-byte ids from sessions of 256 requests (each answer
//! remembered too) take 317.9 B per held lock with the `BTreeMap`, 324.5 B with the `HashMap`
//! (262,144: 316.2 and 321.2 B).
//!
//! Every operation costs O(log n) in the number of locks, waiters and sessions; a release may
//! in addition answer many waiters at once (the timed-out ones at the head, and the new
//! holder's own queued re-entrant acquires), each in O(log n).

mod answers;
mod holds;
mod index;
mod queue;
mod snapshot;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::collections::hash_map;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::SocketAddr;

use udplock_protocol::{
    RequestBody, RequestKind, Status, Tokens, KEEPALIVE_TOKENS_MAX, REPLY_LEN_MIN,
    REQUEST_LIFETIME_MS_MAX,
};

use self::answers::Answers;
pub use self::holds::{HoldsPage, HOLDS_EXAMINED_MAX};
use self::index::{HashIsKey, ResourceHash, ResourceIndex};
use crate::core::keyed_hash::KeyedHash;

/// Spec §7.2.5, "Expiry": an address token lives less than the shortest idle time after which
/// a table forgets a session (`Config::validate` keeps `session_idle_ms` above
/// REQUEST_LIFETIME_MS_MAX), so a captured request replayed after its session was forgotten
/// carries an expired token and gets RETRY before it reaches a table.
const _: () = assert!(
    (udplock_protocol::ADDRESS_TOKEN_VALID_S_MAX as u64) * 1_000 < REQUEST_LIFETIME_MS_MAX as u64
);
use self::queue::{WaitQueue, Waiter};
pub use self::snapshot::{SnapshotError, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use crate::core::time::{Duration, Instant};

/// Longest resource or client id, in bytes: the wire carries its length in one byte.
pub const ID_LEN_MAX: usize = 255;

/// Due timers [`LockTable::timers_due`] looks through for one lock. Due but unfired timers
/// are normally few (a leader proposes the TICK that fires them as soon as they fall due), so
/// this bounds a STATUS's work when many leases end at once; past it the STATUS just waits for
/// the TICK.
pub const STATUS_DUE_SCAN_MAX: usize = 64;

/// How long after an acquire's wait deadline its client may still retransmit it (spec §7.1.3,
/// client obligations: give up at wait_ms + a grace for the final answer). A session must stay
/// remembered that long, or a late retransmit would run a second time.
pub const RETRANSMIT_AFTER_WAIT_MS_MAX: u32 = 60_000;

/// Largest buffer (in waiters) of the emptied wait queue a table keeps for reuse
/// (`LockTable::queue_spare`): what one or two waiters need (VecDeque allocates 4 at first);
/// a queue grown longer gives its memory back when it empties.
const QUEUE_SPARE_CAPACITY_MAX: usize = 8;

/// Longest ids buffer (resource id and holder id together, bytes) a table keeps for reuse
/// (`LockTable::ids_spare`): typical ids; a longer one is freed.
const IDS_SPARE_LEN_MAX: usize = 128;

// Memory budget: a held lock is a slot plus one timer (see the module docs).
const _: () = assert!(std::mem::size_of::<Slot>() <= 56);
const _: () = assert!(std::mem::size_of::<Timer>() <= 24);

/// Limits and defaults of one lock table. Every limit bounds memory or work; a request that
/// would cross one gets OVERLOADED (or HOLD_LIMIT_EXCEEDED) and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Known resources (held, waited on, or with a configured default) at once. Each costs a
    /// slot, an index entry and its ids, so this bounds the table's memory; creating one more
    /// gets OVERLOADED.
    pub resources_max: u32,
    /// Waiting acquires on one resource. Bounds one queue's memory and the work one release
    /// can cause (it may answer a run of waiters at the head).
    pub waiters_per_resource_max: u32,
    /// Waiting acquires over all resources: bounds the memory of all queues together.
    pub waiters_max: u32,
    /// Re-entrant holds of one lock. A client that acquires again and again without releasing
    /// has a bug; this gives it a clear error instead of a hold count that only grows.
    pub holds_per_lock_max: u32,
    /// Client sessions remembered at once. Each keeps up to `answers_per_session_max` answers,
    /// so the two together bound the memory spent on idempotency.
    pub sessions_max: u32,
    /// Final answers remembered per session, and queued requests allowed per session. A client
    /// with more requests in flight than this may see REQUEST_EXPIRED for its oldest.
    pub answers_per_session_max: u32,
    /// A session with no request for this long is forgotten, answers and all. Must outlast
    /// every retransmission of its requests (`validate` asks for more than
    /// `request_lifetime_ms_max`, 360 s), else a late retransmit would take effect twice.
    pub session_idle_ms: u32,
    /// Lease of an acquire with ttl_ms = 0 on a resource without a configured default: long
    /// enough for a typical critical section, short enough that a crashed client's lock frees
    /// itself soon.
    pub ttl_default_ms: u32,
    /// Longest lease one acquire or renew may ask for: how long a crashed client can keep a
    /// lock from everyone else.
    pub ttl_ms_max: u32,
    /// Longest an acquire may wait in a queue: bounds how long a waiter pins memory, and so
    /// how long a session must be remembered. 0 turns queueing off.
    pub wait_ms_max: u32,
    /// Back-off hint sent with OVERLOADED: long enough for a limit to free up, short enough to
    /// add little latency to a client that retries.
    pub retry_after_ms: u32,
    /// The first fencing token this table issues. A table that starts empty after a restart
    /// must issue tokens above every token issued before (spec §7.2.4); the shell passes a
    /// value that guarantees it (the node: the wall clock in microseconds).
    pub fencing_token_first: u64,
    /// For this long after the table's epoch (`Instant::ZERO`), no new hold is granted: an
    /// acquire gets OVERLOADED with the remaining time as its retry-after hint. A node that
    /// restarts without its table at the address of its predecessor sets it to at least the
    /// longest lease that predecessor granted (spec §7.2.4), so no client still counting an old
    /// lease meets a second holder.
    pub startup_grace_ms: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config::DEFAULT
    }
}

impl Config {
    /// The defaults, as a constant (compile-time checks read it).
    pub const DEFAULT: Config = Config {
        // These three fix the longest snapshot (`Config::snapshot_len_max`): 142.6 MB of
        // resources, 42.1 MB of waiters and 71.5 MB of sessions, 256.2 MB together, under
        // a shard's SNAPSHOT_LEN_MAX (268.4 MB, asserted in `core::replica`). A node's
        // total over all its shards is bounded by its own limits (`core::node::limits`).
        resources_max: 262_144,
        waiters_per_resource_max: 4_096,
        waiters_max: 131_072,
        holds_per_lock_max: 1_024,
        sessions_max: 8_192,
        answers_per_session_max: 256,
        session_idle_ms: 600_000,
        ttl_default_ms: 30_000,
        ttl_ms_max: 3_600_000,
        wait_ms_max: 300_000,
        retry_after_ms: 10,
        fencing_token_first: 1,
        startup_grace_ms: 0,
    };
}

impl Config {
    /// Refuses limits of zero and timer combinations that would break a guarantee.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("resources_max", self.resources_max),
            ("waiters_per_resource_max", self.waiters_per_resource_max),
            ("waiters_max", self.waiters_max),
            ("holds_per_lock_max", self.holds_per_lock_max),
            ("sessions_max", self.sessions_max),
            ("answers_per_session_max", self.answers_per_session_max),
            ("session_idle_ms", self.session_idle_ms),
            ("ttl_default_ms", self.ttl_default_ms),
            ("ttl_ms_max", self.ttl_ms_max),
            ("retry_after_ms", self.retry_after_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError {
                    field,
                    rule: "must be greater than zero",
                });
            }
        }
        // Room for 2^62 grants after the first token, so the counter never wraps.
        if self.fencing_token_first == 0 || self.fencing_token_first > u64::MAX / 2 {
            return Err(ConfigError {
                field: "fencing_token_first",
                rule: "must be between 1 and 2^63 - 1",
            });
        }
        if self.ttl_default_ms > self.ttl_ms_max {
            return Err(ConfigError {
                field: "ttl_default_ms",
                rule: "must not exceed ttl_ms_max",
            });
        }
        // Spec §6.6: clients send no copy later than REQUEST_LIFETIME_MS_MAX after the first,
        // and give up on an acquire at most RETRANSMIT_AFTER_WAIT_MS_MAX after its wait, so a
        // wait must end that much before the lifetime does...
        let wait_ms_limit = REQUEST_LIFETIME_MS_MAX - RETRANSMIT_AFTER_WAIT_MS_MAX;
        if self.wait_ms_max > wait_ms_limit {
            return Err(ConfigError {
                field: "wait_ms_max",
                rule: "must be at most 300000 (request_lifetime_ms_max 360000 minus the 60000 \
                       a client may keep retransmitting after a wait), or a grant could come \
                       after its client stopped listening",
            });
        }
        // ...and a session must outlive every copy of its requests, or a late copy would run
        // a second time. (Address tokens rely on it too: a token lives at most
        // ADDRESS_TOKEN_VALID_S_MAX, asserted below REQUEST_LIFETIME_MS_MAX at compile time,
        // so a replay that finds its session forgotten has an expired token, spec §7.2.5:
        // the compile-time assert after the imports above.)
        if self.session_idle_ms <= REQUEST_LIFETIME_MS_MAX {
            return Err(ConfigError {
                field: "session_idle_ms",
                rule: "must be greater than request_lifetime_ms_max (360000), so a session \
                       outlives every retransmission of its requests",
            });
        }
        Ok(())
    }
}

pub use crate::core::ConfigError;

/// The idempotency key of a request: a retransmit carries the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    /// Random, non-zero, chosen by the client at start-up.
    pub session: u64,
    /// Non-zero, increasing per session for each new operation.
    pub request: u64,
}

/// One received copy of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub id: RequestId,
    /// Transmission number of this copy (0 first, +1 per retransmit).
    pub attempt: u16,
    /// Where this copy came from; the answer goes to the latest copy's address.
    pub reply_to: SocketAddr,
    /// The operation, as the client sent it (borrowing its ids from the datagram or the log
    /// entry).
    pub body: RequestBody<'a>,
    /// The length of the datagram that carried this copy: the byte budget of everything sent
    /// in answer to it (spec §2.2 rule 5: the bytes sent in answer to a datagram never exceed
    /// it). It decides two things. A STATUS answer names the holder only if the reply still
    /// fits in it ([`fit_holder`]); the budget travels with the STATUS wherever it waits (a
    /// cluster leader's ReadIndex). An acquire that must wait is told WAITING at once and
    /// answered finally later only if the copy pays for two replies
    /// ([`Request::room_for_waiting`]); a shorter first copy gets no WAITING, its
    /// retransmissions (keepalives) each get one, and the final answer is the first copy's.
    /// At least `REPLY_LEN_MIN`: shells drop shorter requests unanswered.
    pub datagram_len: u16,
}

impl Request<'_> {
    /// The copy pays for two replies: a WAITING now and the final answer later (spec §2.2).
    pub fn room_for_waiting(&self) -> bool {
        usize::from(self.datagram_len) >= 2 * REPLY_LEN_MIN
    }
}

/// The outcome of a request, as carried by the reply body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: Status,
    /// Token of the hold (0 = none).
    pub fencing_token: u64,
    /// Re-entrant hold count after the operation (status: current).
    pub hold_count: u32,
    /// Acquire/renew: the hold's lease from this grant or renewal to its expiry (the TTL for
    /// a new hold; at least the TTL for a re-entry or renewal, which never shorten it). Status:
    /// remaining lease at the server, rounded down (0 if free). Configure: the new default
    /// (0 if cleared). Otherwise 0.
    pub lease_ms: u32,
    /// Status: live waiters; otherwise 0.
    pub waiter_count: u32,
    /// Non-zero only with OVERLOADED: when to retry.
    pub retry_after_ms: u32,
    /// The request waited in the queue before this answer (no RTT sample from it).
    pub queued: bool,
}

impl Answer {
    /// An answer carrying only `status`.
    pub const fn bare(status: Status) -> Answer {
        Answer {
            status,
            fencing_token: 0,
            hold_count: 0,
            lease_ms: 0,
            waiter_count: 0,
            retry_after_ms: 0,
            queued: false,
        }
    }
}

/// An inline copy of an id (at most [`ID_LEN_MAX`] bytes), so a reply needs no allocation.
#[derive(Clone, Copy)]
pub struct IdBuf {
    len: u8,
    bytes: [u8; ID_LEN_MAX],
}

impl IdBuf {
    /// The empty id (no holder).
    pub const EMPTY: IdBuf = IdBuf {
        len: 0,
        bytes: [0; ID_LEN_MAX],
    };

    /// Copies `id`, which must be at most [`ID_LEN_MAX`] bytes.
    pub fn new(id: &[u8]) -> IdBuf {
        assert!(id.len() <= ID_LEN_MAX, "id of {} bytes", id.len());
        let mut buf = IdBuf::EMPTY;
        buf.bytes[..id.len()].copy_from_slice(id);
        buf.len = id.len() as u8;
        buf
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for IdBuf {
    fn default() -> IdBuf {
        IdBuf::EMPTY
    }
}

impl PartialEq for IdBuf {
    fn eq(&self, other: &IdBuf) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for IdBuf {}

impl fmt::Debug for IdBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.as_slice().escape_ascii())
    }
}

/// An answer addressed to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The latest address the request came from.
    pub to: SocketAddr,
    pub id: RequestId,
    /// The highest attempt number received for this request when the answer was produced.
    pub attempt: u16,
    /// The operation answered (the reply's message type).
    pub kind: RequestKind,
    pub answer: Answer,
    /// STATUS only: the holder's client id, if it fits in the reply's byte budget (see
    /// [`fit_holder`]); empty otherwise.
    pub holder: IdBuf,
    /// STATUS only: the lock is held but its holder's id did not fit (the reply carries
    /// HOLDER_TRUNCATED, spec §5.3).
    pub holder_truncated: bool,
}

/// The lease a grant or renewal at `at` reports (spec §6.4): the time from `at` to the hold's
/// expiry in whole milliseconds, rounded down so the client's count never outlasts the
/// server's. For a new hold that is its TTL; for a re-entry or renewal at least the TTL asked
/// for, and more when an earlier grant promised more (the expiry never moves earlier).
fn lease_left_ms(expiry: Instant, at: Instant) -> u32 {
    let ms = expiry.saturating_since(at).as_millis();
    u32::try_from(ms).expect("a lease is at most ttl_ms_max past its grant")
}

/// The holder id a STATUS_REPLY carries within `reply_len_max` bytes (spec §2.2 rule 5: a
/// reply is never larger than its request): all of it if `REPLY_LEN_MIN + its length` fits,
/// else none, and then `true` (HOLDER_TRUNCATED) if there was a holder to leave out.
pub fn fit_holder(holder: IdBuf, reply_len_max: u16) -> (IdBuf, bool) {
    if REPLY_LEN_MIN + holder.len() <= usize::from(reply_len_max) {
        (holder, false)
    } else {
        (IdBuf::EMPTY, !holder.is_empty())
    }
}

/// Counters for monitoring and tests; each is O(1) to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Known resources (held, waited on, or configured).
    pub resources: u64,
    /// Held locks.
    pub held: u64,
    /// Acquires waiting in queues.
    pub waiters: u64,
    /// Remembered sessions.
    pub sessions: u64,
    /// Final answers remembered over all sessions.
    pub answers_remembered: u64,
    /// Pending timers (hold expiries and wait deadlines).
    pub timers: u64,
    /// The last fencing token issued (0 before the first grant).
    pub fencing_token_last: u64,
}

/// Changes of lock state since the table was created, for monitoring (the node exports the
/// leader's, `core::node::stats::LockCounters`). Not part of a snapshot: a table restored from
/// one starts them at zero. Each is O(1) to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Holds granted: new ones and re-entries, at once or to a waiter.
    pub grants: u64,
    /// Grants to an acquire that waited in the lock's queue (hand-offs; a subset of `grants`).
    pub handoffs: u64,
    /// Holds given back by RELEASE.
    pub releases: u64,
    /// Holds whose lease ran out unrenewed (every re-entrant hold at once: one expiry).
    pub expirations: u64,
    /// Acquires answered LOCK_ACQUISITION_TIMEOUT: the lock held and no wait asked, or the
    /// wait's deadline passed in the queue.
    pub acquisition_timeouts: u64,
    /// Acquires that went into a lock's queue.
    pub queued: u64,
    /// Holds renewed, by RENEW or by one token of a KEEPALIVE.
    pub renewals: u64,
}

impl Counts {
    /// What happened between `before` and `self` (both of one table, `before` earlier).
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            grants: self.grants - before.grants,
            handoffs: self.handoffs - before.handoffs,
            releases: self.releases - before.releases,
            expirations: self.expirations - before.expirations,
            acquisition_timeouts: self.acquisition_timeouts - before.acquisition_timeouts,
            queued: self.queued - before.queued,
            renewals: self.renewals - before.renewals,
        }
    }

    /// Adds `more`.
    pub fn add(&mut self, more: &Counts) {
        self.grants += more.grants;
        self.handoffs += more.handoffs;
        self.releases += more.releases;
        self.expirations += more.expirations;
        self.acquisition_timeouts += more.acquisition_timeouts;
        self.queued += more.queued;
        self.renewals += more.renewals;
    }
}

/// The log target of the lock state changes the table writes at `debug` level (granted,
/// released, expired, queued, handed off, renewed, timed out, withdrawn; README "Metrics and
/// health"): `RUST_LOG=udplock::locks=debug` shows them alone.
pub const LOCK_LOG_TARGET: &str = "udplock::locks";

/// One known resource (or, while on the free list, none).
struct Slot {
    /// The resource id, followed by the holder's client id while the lock is held: one
    /// allocation for both. Between a release and the next grant the holder part may be
    /// stale; [`LockTable::settle`] trims it before the operation ends.
    ids: Box<[u8]>,
    /// Length of the resource id at the start of `ids` (0 on the free list).
    resource_len: u8,
    /// Re-entrant holds; 0 = free.
    hold_count: u32,
    /// TTL of the latest grant or renewal of this hold (what a renew with ttl_ms = 0 reuses).
    hold_ttl_ms: u32,
    /// Configured default TTL (0 = none, use the server's).
    default_ttl_ms: u32,
    /// Token of the current hold; while free, of this resource's last hold, so a new grant can
    /// assert that tokens increase.
    token: u64,
    /// When the hold ends unless renewed.
    expiry: Instant,
    /// Waiting acquires; `None` (no allocation) while nobody waits.
    queue: Option<Box<WaitQueue>>,
}

impl Slot {
    fn vacant() -> Slot {
        Slot {
            ids: Box::default(),
            resource_len: 0,
            hold_count: 0,
            hold_ttl_ms: 0,
            default_ttl_ms: 0,
            token: 0,
            expiry: Instant::ZERO,
            queue: None,
        }
    }

    /// Makes this vacant slot `resource`'s. `holder_hint` is stored as a stale holder, so a
    /// grant to that client right after needs no second allocation. `spare`: a buffer of a
    /// forgotten resource's ids, used (taken) if it has the length needed.
    fn occupy(&mut self, resource: &[u8], holder_hint: &[u8], spare: &mut Option<Box<[u8]>>) {
        assert!(self.resource_len == 0, "occupying a slot in use");
        assert!((1..=ID_LEN_MAX).contains(&resource.len()));
        let len = resource.len() + holder_hint.len();
        self.ids = match spare.take_if(|ids| ids.len() == len) {
            Some(mut ids) => {
                ids[..resource.len()].copy_from_slice(resource);
                ids[resource.len()..].copy_from_slice(holder_hint);
                ids
            }
            None => [resource, holder_hint].concat().into_boxed_slice(),
        };
        self.resource_len = resource.len() as u8;
        self.token = 0;
    }

    /// Returns the slot to the free list's state, and the buffer of its ids.
    fn vacate(&mut self) -> Box<[u8]> {
        assert!(self.hold_count == 0 && self.queue.is_none());
        std::mem::replace(self, Slot::vacant()).ids
    }

    fn resource(&self) -> &[u8] {
        &self.ids[..usize::from(self.resource_len)]
    }

    fn holder(&self) -> Option<&[u8]> {
        (self.hold_count > 0).then(|| &self.ids[usize::from(self.resource_len)..])
    }

    /// Makes `client` the holder. A client id as long as the previous (or stale) holder's
    /// overwrites it in place: a lock handed back and forth between clients whose ids have
    /// one length (the usual case) costs no allocation.
    fn set_holder(&mut self, client: &[u8]) {
        let holder = &mut self.ids[usize::from(self.resource_len)..];
        if holder.len() == client.len() {
            holder.copy_from_slice(client);
        } else {
            self.ids = [self.resource(), client].concat().into_boxed_slice();
        }
    }

    fn live_waiters(&self) -> u32 {
        self.queue.as_deref().map_or(0, WaitQueue::live)
    }

    /// The slot's invariants at the end of an operation.
    fn check(&self) {
        assert!(self.resource_len > 0, "a known resource has an id");
        if self.hold_count > 0 {
            assert!(
                self.ids.len() > usize::from(self.resource_len),
                "a held lock has a holder"
            );
            assert!(self.token > 0, "a held lock has a fencing token");
        } else {
            assert!(
                self.ids.len() == usize::from(self.resource_len),
                "a free lock has no holder"
            );
            assert!(self.queue.is_none(), "a free lock has no waiters");
        }
        assert!(
            self.queue.as_deref().is_none_or(|q| q.live() > 0),
            "empty queues are dropped"
        );
    }
}

/// Something that happens at a time: a hold's expiry or a waiter's deadline.
///
/// Ordered by `due`, then `kind`, then `seq`: a total order that depends only on the commands
/// applied, so timers due at the same instant fire in the same order on every replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    due: Instant,
    kind: TimerKind,
    /// Hold: its fencing token (unique per hold). Wait: the waiter's `seq`.
    seq: u64,
    slot: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    HoldExpiry,
    WaitDeadline,
}

impl Timer {
    fn hold(slot: &Slot, number: u32) -> Timer {
        Timer {
            due: slot.expiry,
            kind: TimerKind::HoldExpiry,
            seq: slot.token,
            slot: number,
        }
    }

    fn wait(waiter: &Waiter, slot: u32) -> Timer {
        Timer {
            due: waiter.deadline,
            kind: TimerKind::WaitDeadline,
            seq: waiter.seq,
            slot,
        }
    }
}

/// Checks an answer about to be sent (or that would be, [`LockTable::set_replying`]): a
/// retry-after hint comes with OVERLOADED, and only with it.
fn check_answer(answer: &Answer) {
    assert!((answer.retry_after_ms != 0) == (answer.status == Status::Overloaded));
}

/// What the table remembers of one client session (Raft dissertation §6.3).
struct Session {
    /// Receive time of its latest request; it is forgotten `session_idle_ms` later.
    active_last: Instant,
    /// Every request id at or below this was evicted from `answers`: its answer is unknown.
    expired_through: u64,
    /// Final answers by request id.
    answers: Answers,
    /// Queued acquires by request id (they have no final answer yet).
    pending: BTreeMap<u64, Pending>,
}

/// A session id with its keyed hash ([`LockTable::session_key`]), computed once per request
/// and reused for every access to the session that request makes (the gate, the queue, the
/// answer), rather than hashing the id again for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SessionKey {
    id: u64,
    hash: u64,
}

impl Hash for SessionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Keyed SipHash already (session ids come from the network): the map's hasher passes
        // it through.
        state.write_u64(self.hash);
    }
}

/// Sessions by id, their hashes computed once per request ([`SessionKey`]).
type SessionMap = HashMap<SessionKey, Session, BuildHasherDefault<HashIsKey>>;

#[derive(Clone, Copy)]
struct Remembered {
    kind: RequestKind,
    answer: Answer,
    /// The attempt the answer was produced for, echoed again with every duplicate.
    attempt: u16,
}

/// Where a queued acquire waits.
#[derive(Clone, Copy)]
struct Pending {
    slot: u32,
    seq: u64,
}

/// Records activity of the known `session` (`session_id`) at `now` in `sessions_idle`.
fn touch(
    sessions_idle: &mut BTreeSet<(Instant, u64)>,
    session_id: u64,
    session: &mut Session,
    now: Instant,
) {
    if session.active_last != now {
        assert!(sessions_idle.remove(&(session.active_last, session_id)));
        session.active_last = now;
        assert!(sessions_idle.insert((now, session_id)));
    }
}

/// Remembers the final answer to `id` in its `session`, evicting the session's smallest
/// request id when it holds more than `answers_max` (which makes every id up to it expired).
/// Returns how many answers it evicted.
fn remember_in(
    session: &mut Session,
    id: RequestId,
    remembered: Remembered,
    answers_max: u32,
) -> u64 {
    assert!(!matches!(
        remembered.answer.status,
        Status::Overloaded | Status::InvalidArgument | Status::RequestExpired
    ));
    assert!(
        !session.answers.contains(id.request),
        "request {id:?} answered twice"
    );
    // Evict the oldest answers first, but never the one about to be stored: a queued acquire
    // answered late may have the smallest id, and its client has not seen that answer yet.
    // (With the session full, the oldest other than the new one is the current oldest.)
    // `answers_max` is at least 1 (`Config::validate`).
    let mut evictions = 0;
    while session.answers.len() >= answers_max as usize {
        let evicted = session.answers.pop_oldest().expect("non-empty");
        session.expired_through = session.expired_through.max(evicted);
        evictions += 1;
    }
    session.answers.insert(id.request, remembered);
    evictions
}

/// The outcome of the session gate.
enum Admission {
    /// Answer now with this, from `attempt`, and change nothing else.
    Answer { answer: Answer, attempt: u16 },
    /// A retransmit (keepalive) of a queued acquire: its address and attempt are updated and
    /// it is told again that it waits.
    StillQueued {
        slot: u32,
        ttl_ms: u32,
        attempt: u16,
    },
    /// A request never seen: execute it.
    New,
}

/// The outcome of executing a request never seen before.
enum Executed {
    /// Its final answer.
    Final(Answer),
    /// An acquire queued on the lock in `slot`: its final answer comes later.
    Queued { slot: u32 },
}

/// Locks, queues and sessions; see the module docs.
pub struct LockTable {
    config: Config,
    /// The latest `now` passed in: time never goes backwards.
    now_last: Instant,
    slots: Vec<Slot>,
    /// Vacant slots, reused last-in first-out (deterministic).
    slots_free: Vec<u32>,
    index: ResourceIndex,
    timers: BTreeSet<Timer>,
    /// The slot of every held lock by its current hold's token: KEEPALIVE finds a hold by
    /// its token (spec §4.11), and HOLDS walks them in token order from a cursor (spec §4.13,
    /// `holds.rs`). Ordered, so that walk is O(page); every replica holds the same tokens,
    /// so the order is the same on each.
    holds: BTreeMap<u64, u32>,
    /// The next fencing token: one counter for the whole table, so tokens increase per
    /// resource even across forgetting and re-creating it.
    token_next: u64,
    /// The next waiter `seq`.
    wait_seq_next: u64,
    sessions: SessionMap,
    /// Keys the hash of session ids in `sessions`; random per table against hash flooding.
    /// Only where a session sits in memory depends on it, never an output.
    session_hash: KeyedHash,
    /// Every session by (last activity, id): the first is the next to go idle.
    sessions_idle: BTreeSet<(Instant, u64)>,
    replies: VecDeque<Reply>,
    /// Whether answers are queued as replies at all ([`LockTable::set_replying`]): a
    /// follower's replica answers no client, so it builds no reply (its remembered answers,
    /// which a new leader answers retries from, are kept all the same).
    replying: bool,
    /// One emptied wait queue kept for the next lock that gets a waiter, so a lock whose
    /// queue empties and fills again (a hand-off, then a new waiter) allocates no queue each
    /// time. At most one per table, holding at most [`QUEUE_SPARE_CAPACITY_MAX`] entries.
    queue_spare: Option<Box<WaitQueue>>,
    /// The ids buffer of the resource forgotten last, kept for the next resource created with
    /// ids of the same length (a lock taken and released again and again, as most are, is
    /// created and forgotten each time). At most one per table, of at most
    /// [`IDS_SPARE_LEN_MAX`] bytes.
    ids_spare: Option<Box<[u8]>>,
    /// Known resources (occupied slots).
    resources: u32,
    /// Held locks.
    held: u32,
    /// Live waiters in all queues.
    waiters: u32,
    answers_remembered: u64,
    /// The latest expiry any hold has ever had: no client can believe it holds a lock of
    /// this table past it (the shell persists it to make restarts safe, spec §7.2.4).
    lease_horizon: Instant,
    /// Changes of lock state so far (monitoring only: nothing reads them to decide).
    counts: Counts,
    /// The shard its state changes are logged under ([`LOCK_LOG_TARGET`]), `None`: not
    /// logged (a follower's replica: the leader logs each change once).
    log_shard: Option<u32>,
}

impl LockTable {
    /// A table with no locks and no sessions. Panics if `config` does not validate.
    pub fn new(config: Config) -> LockTable {
        if let Err(error) = config.validate() {
            panic!("{error}");
        }
        let token_first = config.fencing_token_first;
        LockTable {
            config,
            now_last: Instant::ZERO,
            slots: Vec::new(),
            slots_free: Vec::new(),
            index: ResourceIndex::new(),
            timers: BTreeSet::new(),
            holds: BTreeMap::new(),
            token_next: token_first,
            wait_seq_next: 1,
            sessions: SessionMap::default(),
            session_hash: KeyedHash::new(),
            sessions_idle: BTreeSet::new(),
            replies: VecDeque::new(),
            replying: true,
            queue_spare: None,
            ids_spare: None,
            resources: 0,
            held: 0,
            waiters: 0,
            answers_remembered: 0,
            lease_horizon: Instant::ZERO,
            counts: Counts::default(),
            log_shard: None,
        }
    }

    /// Changes of lock state since the table was created (or restored).
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Logs the table's lock state changes at `debug` under shard `shard` from now on
    /// (`None`: stops).
    pub fn set_log_shard(&mut self, shard: Option<u32>) {
        self.log_shard = shard;
    }

    /// Queues replies from now on, or (`false`) queues none: answers are still remembered
    /// exactly as before, only the replies nobody would send are not built (a follower's
    /// replica: the leader answers). On at creation.
    pub fn set_replying(&mut self, replying: bool) {
        self.replying = replying;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the settings a cluster's leader logs for every replica to apply with (spec
    /// §8.8: the default TTL, the OVERLOADED retry hint, the startup grace). Leases already
    /// granted keep their length; later requests use the new values. `Err` (nothing
    /// changed) if they break `Config::validate`.
    pub fn set_logged_settings(
        &mut self,
        ttl_default_ms: u32,
        retry_after_ms: u32,
        startup_grace_ms: u32,
    ) -> Result<(), ConfigError> {
        let config = Config {
            ttl_default_ms,
            retry_after_ms,
            startup_grace_ms,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Fires every timer due at `now` (as [`LockTable::handle_timeout`]), then handles one
    /// received copy of a request. Answers go to [`LockTable::poll_reply`].
    pub fn handle_request(&mut self, now: Instant, request: Request<'_>) {
        self.advance(now);
        if !self.arguments_valid(&request) {
            self.reply(
                &request,
                request.attempt,
                Answer::bare(Status::InvalidArgument),
            );
            return;
        }
        assert!(
            usize::from(request.datagram_len) >= REPLY_LEN_MIN,
            "shells drop short requests"
        );
        if let RequestBody::Status { resource } = request.body {
            let (answer, holder) = self.status(now, resource);
            let (holder, holder_truncated) = fit_holder(holder, request.datagram_len);
            if !self.replying {
                check_answer(&answer);
                return;
            }
            self.replies.push_back(Reply {
                holder,
                holder_truncated,
                ..self.reply_to(&request, request.attempt, answer)
            });
            return;
        }
        // Hashed once for every access to the session below.
        let session = self.session_key(request.id.session);
        match self.admit(now, &request, session) {
            Admission::Answer { answer, attempt } => self.reply(&request, attempt, answer),
            Admission::StillQueued {
                slot,
                ttl_ms,
                attempt,
            } => {
                let waiting = self.waiting_answer(slot, ttl_ms);
                self.reply(&request, attempt, waiting);
            }
            Admission::New => {
                let answer = match self.execute(now, &request, session) {
                    Executed::Final(answer) => answer,
                    Executed::Queued { slot } => {
                        // Queued: WAITING now if the copy paid for it (spec §2.2, §6.3), the
                        // final answer when granted or timed out. WAITING is not remembered:
                        // it is no answer, and changes nothing.
                        let RequestBody::Acquire { ttl_ms, .. } = request.body else {
                            unreachable!("only an acquire is queued");
                        };
                        if request.room_for_waiting() {
                            let waiting = self.waiting_answer(slot, ttl_ms);
                            self.reply(&request, request.attempt, waiting);
                        }
                        return;
                    }
                };
                assert!(!answer.queued);
                // Only a CANCEL_WAIT finds its arguments invalid or its target expired once
                // admitted (spec §4.12): like the gate's own answers, those are not remembered.
                assert!(
                    request.body.kind() == RequestKind::CancelWait
                        || !matches!(
                            answer.status,
                            Status::InvalidArgument | Status::RequestExpired
                        )
                );
                if !matches!(
                    answer.status,
                    Status::Overloaded | Status::InvalidArgument | Status::RequestExpired
                ) {
                    let kind = request.body.kind();
                    self.remember(session, request.id.request, kind, answer, request.attempt);
                }
                self.reply(&request, request.attempt, answer);
            }
        }
    }

    /// Fires every timer due at `now`: expires holds (handing each lock to its next waiter),
    /// times out waiters, and forgets idle sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next answer to send, oldest first. Drain after every `handle_*` call.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }

    /// Moves every answer queued to the back of `out`, oldest first: what draining
    /// [`LockTable::poll_reply`] into `out` does, in one move.
    pub fn move_replies_into(&mut self, out: &mut VecDeque<Reply>) {
        if out.is_empty() {
            // The usual case (the shell drains `out` after every input): the two buffers
            // trade places, and no reply (~350 bytes) is copied.
            std::mem::swap(out, &mut self.replies);
        } else {
            out.append(&mut self.replies);
        }
        assert!(self.replies.is_empty());
    }

    /// When the earliest timer is due (call [`LockTable::handle_timeout`] then), or `None`
    /// if nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lock = self.timers.first().map(|timer| timer.due);
        let session = self
            .sessions_idle
            .first()
            .map(|&(active_last, _)| active_last + self.idle());
        match (lock, session) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The latest `now` the table was given (its clock never goes back before it).
    pub fn clock(&self) -> Instant {
        self.now_last
    }

    /// The latest expiry any hold of this table has ever had (never decreases). A successor
    /// that starts without this table must grant nothing before it (spec §7.2.4).
    pub fn lease_horizon(&self) -> Instant {
        self.lease_horizon
    }

    pub fn stats(&self) -> Stats {
        Stats {
            resources: self.resources.into(),
            held: self.held.into(),
            waiters: self.waiters.into(),
            sessions: self.sessions.len() as u64,
            answers_remembered: self.answers_remembered,
            timers: self.timers.len() as u64,
            fencing_token_last: self.token_next - 1,
        }
    }

    /// The fencing token this table issued last (below its first token: none yet).
    /// Client authorization (`core::node::client_auth`): a KEEPALIVE may not name a later one.
    pub fn token_last(&self) -> u64 {
        self.token_next - 1
    }

    /// The client id holding the lock whose current token is `token`, if a hold has it (a
    /// token names one hold, of one holder, forever: spec §6.2).
    pub fn holder_of_token(&self, token: u64) -> Option<&[u8]> {
        let &slot = self.holds.get(&token)?;
        self.slots[slot as usize].holder()
    }

    /// Whether the table remembers session `session_id` (a request of it creates none).
    pub fn has_session(&self, session_id: u64) -> bool {
        self.sessions.contains_key(&self.session_key(session_id))
    }

    /// Whether `resource` is known (held, waited on or configured): an ACQUIRE or CONFIGURE
    /// of it creates no resource.
    pub fn knows(&self, resource: &[u8]) -> bool {
        self.lookup(resource).is_some()
    }

    /// How many final answers session `session_id` has remembered (`None`: no such session).
    /// At `answers_per_session_max`, the session's next answer evicts its oldest, so the
    /// table's total does not grow.
    pub fn session_answers(&self, session_id: u64) -> Option<u32> {
        let session = self.sessions.get(&self.session_key(session_id))?;
        // At most answers_per_session_max (a u32): `remember` evicts past it.
        Some(session.answers.len() as u32)
    }

    /// The reply a copy of `request` would get from the session gate because its final
    /// answer is remembered (the same bytes as [`LockTable::handle_request`] would queue),
    /// or `None` if the table remembers no answer of this kind for it. Reads nothing else,
    /// changes nothing (not even the session's activity): a shell that cannot hand the copy
    /// to the table (a node at a limit, spec §9.1) still owes the client the answer it
    /// already has, since the request took effect.
    pub fn remembered_reply(&self, request: &Request<'_>) -> Option<Reply> {
        let kind = request.body.kind();
        if kind == RequestKind::Status {
            return None; // never remembered
        }
        let remembered = self
            .sessions
            .get(&self.session_key(request.id.session))?
            .answers
            .get(request.id.request)
            .filter(|remembered| remembered.kind == kind)?;
        Some(self.reply_to(request, remembered.attempt, remembered.answer))
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.config.session_idle_ms.into())
    }

    /// Fires, in (due, kind, seq) order, every timer due at `now`; sessions going idle at the
    /// same instant as a lock timer go after it.
    fn advance(&mut self, now: Instant) {
        assert!(
            now >= self.now_last,
            "time went backwards: {now:?} < {:?}",
            self.now_last
        );
        self.now_last = now;
        let idle = self.idle();
        loop {
            let lock = self
                .timers
                .first()
                .map(|timer| timer.due)
                .filter(|&due| due <= now);
            let session = self
                .sessions_idle
                .first()
                .map(|&(active_last, _)| active_last + idle)
                .filter(|&due| due <= now);
            let lock_first = match (lock, session) {
                (Some(lock), Some(session)) => lock <= session,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if lock_first {
                let timer = self.timers.pop_first().expect("a timer is due");
                match timer.kind {
                    TimerKind::HoldExpiry => self.expire(timer),
                    TimerKind::WaitDeadline => self.time_out(timer),
                }
            } else {
                let (_, session) = self.sessions_idle.pop_first().expect("a session is idle");
                self.forget_session(session);
            }
        }
        assert!(self.poll_timeout().is_none_or(|due| due > now));
    }

    fn arguments_valid(&self, request: &Request<'_>) -> bool {
        let id = |id: &[u8]| (1..=ID_LEN_MAX).contains(&id.len());
        let ttl = |ttl_ms: u32| ttl_ms <= self.config.ttl_ms_max;
        // The codec refuses zero ids as MALFORMED; the core does not rely on it.
        if request.id.session == 0 || request.id.request == 0 {
            return false;
        }
        if let RequestBody::Keepalive { ttl_ms, tokens, .. } = request.body {
            // The codec refuses other counts; the core does not rely on it.
            return ttl(ttl_ms) && (1..=KEEPALIVE_TOKENS_MAX).contains(&tokens.len());
        }
        let ids = id(request.body.resource()) && request.body.client().is_none_or(id);
        ids && match request.body {
            RequestBody::Acquire {
                wait_ms, ttl_ms, ..
            } => wait_ms <= self.config.wait_ms_max && ttl(ttl_ms),
            RequestBody::Renew { ttl_ms, .. } => ttl(ttl_ms),
            RequestBody::Configure { default_ttl_ms, .. } => ttl(default_ttl_ms),
            RequestBody::Release { .. } | RequestBody::Status { .. } => true,
            RequestBody::Keepalive { .. } => unreachable!("checked above"),
            // Spec §4.12: a target is a request id, never zero, and never the cancel itself.
            RequestBody::CancelWait {
                target_session,
                target_request,
                ..
            } => {
                target_session != 0
                    && target_request != 0
                    && (target_session, target_request) != (request.id.session, request.id.request)
            }
        }
    }

    /// The session gate: duplicates, queued retransmits, expired and refused requests stop
    /// here; only a request never seen before is let through.
    fn admit(&mut self, now: Instant, request: &Request<'_>, key: SessionKey) -> Admission {
        let RequestId {
            session: session_id,
            request: request_id,
        } = request.id;
        let kind = request.body.kind();
        let refuse = |status| Admission::Answer {
            answer: Answer::bare(status),
            attempt: request.attempt,
        };
        // The session id's one hash (keyed SipHash: ids come from the network) serves the
        // lookup, the activity and, for a new session, the insertion.
        assert_eq!(key.id, session_id);
        let sessions_full = self.sessions.len() >= self.config.sessions_max as usize;
        let overloaded = self.overloaded(request.attempt);
        let session = match self.sessions.entry(key) {
            hash_map::Entry::Occupied(entry) => {
                let session = entry.into_mut();
                touch(&mut self.sessions_idle, session_id, session, now);
                &*session
            }
            hash_map::Entry::Vacant(_) if sessions_full => return overloaded,
            hash_map::Entry::Vacant(entry) => {
                assert!(self.sessions_idle.insert((now, session_id)));
                &*entry.insert(Session {
                    active_last: now,
                    expired_through: 0,
                    answers: Answers::default(),
                    pending: BTreeMap::new(),
                })
            }
        };
        // Clients number their requests upwards: a new request's id is above every answer
        // remembered, which `Answers::get` sees from the newest alone.
        if let Some(remembered) = session.answers.get(request_id) {
            // A request id reused for another operation is the client's bug: say so, and
            // leave the remembered answer alone.
            if remembered.kind != kind {
                return refuse(Status::InvalidArgument);
            }
            return Admission::Answer {
                answer: remembered.answer,
                attempt: remembered.attempt,
            };
        }
        if let Some(&Pending { slot, seq }) = session.pending.get(&request_id) {
            if kind != RequestKind::Acquire {
                return refuse(Status::InvalidArgument);
            }
            let waiter = self.slots[slot as usize]
                .queue
                .as_deref_mut()
                .and_then(|queue| queue.find_mut(seq))
                .expect("a pending request is queued");
            assert!(waiter.id == request.id);
            waiter.reply_to = request.reply_to;
            waiter.attempt = waiter.attempt.max(request.attempt);
            return Admission::StillQueued {
                slot,
                ttl_ms: waiter.ttl_ms,
                attempt: waiter.attempt,
            };
        }
        if request_id <= session.expired_through {
            return refuse(Status::RequestExpired);
        }
        if session.pending.len() >= self.config.answers_per_session_max as usize {
            return overloaded;
        }
        Admission::New
    }

    /// The provisional answer to a queued acquire: the TTL its grant would get if granted now
    /// (the client paces its keepalives by it) and how many wait on the resource.
    fn waiting_answer(&self, slot: u32, ttl_ms: u32) -> Answer {
        Answer {
            lease_ms: self.ttl_ms(slot, ttl_ms),
            waiter_count: self.slots[slot as usize].live_waiters(),
            ..Answer::bare(Status::Waiting)
        }
    }

    fn overloaded(&self, attempt: u16) -> Admission {
        Admission::Answer {
            answer: self.overloaded_answer(),
            attempt,
        }
    }

    fn overloaded_answer(&self) -> Answer {
        Answer {
            retry_after_ms: self.config.retry_after_ms,
            ..Answer::bare(Status::Overloaded)
        }
    }

    /// Runs a request never seen before.
    /// `session`: the request's session.
    fn execute(&mut self, now: Instant, request: &Request<'_>, session: SessionKey) -> Executed {
        let answer = match request.body {
            RequestBody::Acquire {
                resource,
                client,
                wait_ms,
                ttl_ms,
            } => return self.acquire(now, request, session, resource, client, wait_ms, ttl_ms),
            RequestBody::Release { resource, client } => self.release(now, resource, client),
            RequestBody::Renew {
                resource,
                client,
                ttl_ms,
            } => self.renew(now, resource, client, ttl_ms),
            RequestBody::Configure {
                resource,
                default_ttl_ms,
            } => self.configure(resource, default_ttl_ms),
            RequestBody::Keepalive { ttl_ms, tokens, .. } => self.renew_tokens(now, tokens, ttl_ms),
            RequestBody::CancelWait {
                resource,
                client,
                target_session,
                target_request,
            } => {
                let target = RequestId {
                    session: target_session,
                    request: target_request,
                };
                self.cancel_wait(now, resource, client, target)
            }
            RequestBody::Status { .. } => unreachable!("STATUS is answered before admission"),
        };
        Executed::Final(answer)
    }

    /// CANCEL_WAIT (spec §4.12): settles the ACQUIRE `target` so that it never takes effect
    /// beyond what the answer says. Queued: it leaves the queue (answered
    /// LOCK_ACQUISITION_TIMEOUT) and the answer says `waiter_count` 1. Answered: an OK grant is
    /// reported (hold count, token, lease) for the client to release. Never seen: its answer
    /// is remembered now as LOCK_ACQUISITION_TIMEOUT, so a late copy is never queued or
    /// granted. Finding the target costs O(log n): the session's pending map gives its queue
    /// and `seq`, and the queue finds `seq` by binary search (no scan of a long queue).
    fn cancel_wait(
        &mut self,
        now: Instant,
        resource: &[u8],
        client: &[u8],
        target: RequestId,
    ) -> Answer {
        let invalid = Answer::bare(Status::InvalidArgument);
        let target_session = self.session_key(target.session);
        if let Some(session) = self.sessions.get(&target_session) {
            if let Some(&Pending { slot, seq }) = session.pending.get(&target.request) {
                let s = &mut self.slots[slot as usize];
                if s.resource() != resource {
                    return invalid;
                }
                let queue = s.queue.as_deref_mut().expect("a pending request is queued");
                let waiter = queue.find_mut(seq).expect("a pending request is queued");
                assert!(waiter.id == target);
                if *waiter.client != *client {
                    return invalid;
                }
                let waiter = queue.remove(seq);
                self.waiters -= 1;
                assert!(self.timers.remove(&Timer::wait(&waiter, slot)));
                if let Some(shard) = self.log_shard {
                    log::debug!(target: LOCK_LOG_TARGET,
                        "shard {shard}: {} no longer waited for by {}: withdrawn (CANCEL_WAIT)",
                        resource.escape_ascii(), client.escape_ascii());
                }
                let withdrawn = Answer {
                    queued: true,
                    ..Answer::bare(Status::LockAcquisitionTimeout)
                };
                self.answer_waiter(&waiter, withdrawn);
                self.settle(slot, None);
                let s = &self.slots[slot as usize];
                assert!(
                    s.hold_count > 0,
                    "withdrawing a waiter leaves the lock held"
                );
                return Answer {
                    waiter_count: 1,
                    ..Answer::bare(Status::Ok)
                };
            }
            if let Some(remembered) = session.answers.get(target.request) {
                if remembered.kind != RequestKind::Acquire {
                    return invalid;
                }
                let grant = remembered.answer;
                if grant.status != Status::Ok {
                    return Answer::bare(Status::Ok);
                }
                assert!(grant.hold_count > 0 && grant.fencing_token > 0);
                // The grant crossed the cancel: name the hold, for the client to release.
                return Answer {
                    hold_count: grant.hold_count,
                    fencing_token: grant.fencing_token,
                    lease_ms: grant.lease_ms,
                    ..Answer::bare(Status::Ok)
                };
            }
            if target.request <= session.expired_through {
                return Answer::bare(Status::RequestExpired);
            }
        } else {
            if self.sessions.len() >= self.config.sessions_max as usize {
                return self.overloaded_answer();
            }
            let session = Session {
                active_last: now,
                expired_through: 0,
                answers: Answers::default(),
                pending: BTreeMap::new(),
            };
            self.sessions.insert(target_session, session);
            assert!(self.sessions_idle.insert((now, target.session)));
        }
        // Never seen: the cancel overtook every copy of its target. Its answer now is the
        // wait ended without the lock, so no later copy is queued or granted.
        self.remember(
            target_session,
            target.request,
            RequestKind::Acquire,
            Answer::bare(Status::LockAcquisitionTimeout),
            0,
        );
        Answer::bare(Status::Ok)
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &mut self,
        now: Instant,
        request: &Request<'_>,
        session: SessionKey,
        resource: &[u8],
        client: &[u8],
        wait_ms: u32,
        ttl_ms: u32,
    ) -> Executed {
        // Startup grace (spec §7.2.4): every lock may still be held by a client of the table's
        // predecessor, so nothing is granted yet and nothing is created.
        let grants_from =
            Instant::ZERO + Duration::from_millis(self.config.startup_grace_ms.into());
        if now < grants_from {
            let remaining_ms = grants_from
                .saturating_since(now)
                .as_micros()
                .div_ceil(1_000);
            return Executed::Final(Answer {
                retry_after_ms: u32::try_from(remaining_ms).unwrap_or(u32::MAX),
                ..Answer::bare(Status::Overloaded)
            });
        }
        // One hash of the id for the lookup, the creation and the settling.
        let hash = self.index.hash(resource);
        let slot = match self.find(hash, resource) {
            Some(slot) => slot,
            None => match self.create(resource, hash, client) {
                Some(slot) => slot,
                None => return Executed::Final(self.overloaded_answer()),
            },
        };
        let s = &self.slots[slot as usize];
        let answer = match s.holder() {
            None => self.grant(slot, client, ttl_ms, now, false),
            Some(holder) if holder == client => self.grant_again(slot, ttl_ms, now, false),
            Some(_) if wait_ms == 0 => {
                self.counts.acquisition_timeouts += 1;
                if let Some(shard) = self.log_shard {
                    log::debug!(target: LOCK_LOG_TARGET,
                        "shard {shard}: {} not granted to {} (held, no wait)",
                        resource.escape_ascii(), client.escape_ascii());
                }
                Answer::bare(Status::LockAcquisitionTimeout)
            }
            Some(_) => {
                if s.live_waiters() >= self.config.waiters_per_resource_max
                    || self.waiters >= self.config.waiters_max
                {
                    return Executed::Final(self.overloaded_answer());
                }
                self.enqueue(now, request, session, slot, client, wait_ms, ttl_ms);
                return Executed::Queued { slot };
            }
        };
        self.settle(slot, Some(hash));
        Executed::Final(answer)
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        now: Instant,
        request: &Request<'_>,
        session: SessionKey,
        slot: u32,
        client: &[u8],
        wait_ms: u32,
        ttl_ms: u32,
    ) {
        assert!(wait_ms > 0);
        let seq = self.wait_seq_next;
        self.wait_seq_next += 1;
        let waiter = Waiter {
            seq,
            id: request.id,
            reply_to: request.reply_to,
            client: client.into(),
            deadline: now + Duration::from_millis(wait_ms.into()),
            ttl_ms,
            attempt: request.attempt,
            live: true,
        };
        assert!(self.timers.insert(Timer::wait(&waiter, slot)));
        let s = &mut self.slots[slot as usize];
        assert!(s.hold_count > 0, "only a held lock is waited for");
        let spare = &mut self.queue_spare;
        s.queue
            .get_or_insert_with(|| spare.take().unwrap_or_else(|| Box::new(WaitQueue::new())))
            .push(waiter);
        self.waiters += 1;
        self.counts.queued += 1;
        if let Some(shard) = self.log_shard {
            log::debug!(target: LOCK_LOG_TARGET,
                "shard {shard}: {} queued for {} (waits up to {wait_ms} ms, {} waiting)",
                s.resource().escape_ascii(), client.escape_ascii(), s.live_waiters());
        }
        assert_eq!(session.id, request.id.session);
        let session = self.sessions.get_mut(&session).expect("admitted");
        let previous = session
            .pending
            .insert(request.id.request, Pending { slot, seq });
        assert!(previous.is_none());
        s.check();
    }

    fn release(&mut self, now: Instant, resource: &[u8], client: &[u8]) -> Answer {
        // Spec §6.1: a client that does not hold the lock is told so, whether the lock is
        // held by another, free, or forgotten (released before, or its lease ran out).
        let hash = self.index.hash(resource);
        let Some(slot) = self.find(hash, resource) else {
            return Answer::bare(Status::LockNotHeld);
        };
        let s = &mut self.slots[slot as usize];
        if s.holder() != Some(client) {
            return Answer::bare(Status::LockNotHeld);
        }
        s.hold_count -= 1;
        let answer = Answer {
            fencing_token: s.token,
            hold_count: s.hold_count,
            ..Answer::bare(Status::Ok)
        };
        self.counts.releases += 1;
        if let Some(shard) = self.log_shard {
            log::debug!(target: LOCK_LOG_TARGET,
                "shard {shard}: {} released by {} (token {}, {} holds left)",
                resource.escape_ascii(), client.escape_ascii(), s.token, s.hold_count);
        }
        if s.hold_count == 0 {
            assert!(self.timers.remove(&Timer::hold(s, slot)));
            assert_eq!(self.holds.remove(&s.token), Some(slot));
            self.held -= 1;
            self.hand_off(slot, now);
        }
        self.settle(slot, Some(hash));
        answer
    }

    fn renew(&mut self, now: Instant, resource: &[u8], client: &[u8], ttl_ms: u32) -> Answer {
        // As for release (spec §6.1): not holding it is LOCK_NOT_HELD, known resource or not.
        let Some(slot) = self.lookup(resource) else {
            return Answer::bare(Status::LockNotHeld);
        };
        if self.slots[slot as usize].holder() != Some(client) {
            return Answer::bare(Status::LockNotHeld);
        }
        let lease_ms = self.extend(slot, now, ttl_ms);
        let s = &self.slots[slot as usize];
        self.counts.renewals += 1;
        if let Some(shard) = self.log_shard {
            log::debug!(target: LOCK_LOG_TARGET,
                "shard {shard}: {} renewed by {} (token {}, lease {lease_ms} ms)",
                resource.escape_ascii(), client.escape_ascii(), s.token);
        }
        Answer {
            fencing_token: s.token,
            hold_count: s.hold_count,
            lease_ms,
            ..Answer::bare(Status::Ok)
        }
    }

    /// KEEPALIVE (spec §4.11): renews, as [`LockTable::renew`] does, every hold whose current
    /// token is listed, and answers which: bit `i` of the bitmap (carried in the reply's token
    /// field) for the `i`-th token, how many (hold count), and the smallest lease granted. A
    /// token that names no hold (released, expired, re-granted under a newer token, never
    /// issued) is left alone. O(1) per token: the `holds` index.
    fn renew_tokens(&mut self, now: Instant, tokens: Tokens<'_>, ttl_ms: u32) -> Answer {
        assert!((1..=KEEPALIVE_TOKENS_MAX).contains(&tokens.len()));
        let mut renewed = 0u64;
        let mut lease_ms_min = None;
        for (i, token) in tokens.iter().enumerate() {
            let Some(&slot) = self.holds.get(&token) else {
                continue;
            };
            assert!(
                self.slots[slot as usize].token == token,
                "token index out of date"
            );
            let lease_ms = self.extend(slot, now, ttl_ms);
            self.counts.renewals += 1;
            if let Some(shard) = self.log_shard {
                let s = &self.slots[slot as usize];
                log::debug!(target: LOCK_LOG_TARGET,
                    "shard {shard}: {} renewed by keepalive (token {token}, lease {lease_ms} ms)",
                    s.resource().escape_ascii());
            }
            renewed |= 1 << i;
            lease_ms_min = Some(lease_ms_min.map_or(lease_ms, |min: u32| min.min(lease_ms)));
        }
        // Never a bit past the list, and a lease exactly when something was renewed.
        assert!(tokens.len() == 64 || renewed >> tokens.len() == 0);
        assert_eq!(renewed == 0, lease_ms_min.is_none());
        Answer {
            fencing_token: renewed,
            hold_count: renewed.count_ones(),
            lease_ms: lease_ms_min.unwrap_or(0),
            ..Answer::bare(Status::Ok)
        }
    }

    /// Renews the hold in `slot` at `now` for `ttl_ms` (0: its current TTL), which becomes
    /// its TTL; returns its lease from `now` (spec §6.4). Never shortens the lease: the
    /// holder may have other replies in hand (a re-entrant acquire, an earlier renewal) that
    /// promised it longer, and each one's validity must stay true at the server.
    fn extend(&mut self, slot: u32, now: Instant, ttl_ms: u32) -> u32 {
        let s = &self.slots[slot as usize];
        assert!(s.hold_count > 0, "renewing a free lock");
        let ttl_ms = if ttl_ms == 0 { s.hold_ttl_ms } else { ttl_ms };
        let expiry = s.expiry.max(now + Duration::from_millis(ttl_ms.into()));
        self.set_expiry(slot, expiry);
        let s = &mut self.slots[slot as usize];
        s.hold_ttl_ms = ttl_ms;
        s.check();
        let lease_ms = lease_left_ms(expiry, now);
        assert!(lease_ms >= ttl_ms, "a renewal never shortens a lease");
        lease_ms
    }

    fn configure(&mut self, resource: &[u8], default_ttl_ms: u32) -> Answer {
        let hash = self.index.hash(resource);
        let slot = match self.find(hash, resource) {
            Some(slot) => slot,
            // Clearing the default of a resource the server does not know: there is nothing to
            // clear (a mistyped id, most likely), and nothing is created (spec §4.6).
            None if default_ttl_ms == 0 => return Answer::bare(Status::ResourceDoesNotExist),
            None => match self.create(resource, hash, &[]) {
                Some(slot) => slot,
                None => return self.overloaded_answer(),
            },
        };
        self.slots[slot as usize].default_ttl_ms = default_ttl_ms;
        self.settle(slot, Some(hash));
        Answer {
            lease_ms: default_ttl_ms,
            ..Answer::bare(Status::Ok)
        }
    }

    /// STATUS of `resource` as of `now`, without firing timers or changing anything: what a
    /// Raft leader answers from its applied state under its lease. Exact only if
    /// [`LockTable::timers_due`] is false for it at `now`: otherwise a lease that ended at or
    /// before `now` but whose expiry is not applied yet shows as held with 0 ms left.
    pub fn read_status(&self, now: Instant, resource: &[u8]) -> (Answer, IdBuf) {
        self.status(now, resource)
    }

    /// Whether a timer of `resource`'s lock (its hold's expiry, a waiter's deadline) is due at
    /// or before `now` and not fired yet: then [`LockTable::read_status`] at `now` would show
    /// a state the lock no longer has (spec §7.2.1 fires them before answering), and a Raft
    /// leader must wait for the TICK that fires them. Looks at most at
    /// [`STATUS_DUE_SCAN_MAX`] due timers, and says "due" beyond (waiting is always safe).
    pub fn timers_due(&self, now: Instant, resource: &[u8]) -> bool {
        let Some(slot) = self.lookup(resource) else {
            return false; // an unknown lock has no timer
        };
        let mut due = self.timers.iter().take_while(|timer| timer.due <= now);
        for _ in 0..STATUS_DUE_SCAN_MAX {
            match due.next() {
                None => return false,
                Some(timer) if timer.slot == slot => return true,
                Some(_) => {}
            }
        }
        due.next().is_some()
    }

    fn status(&self, now: Instant, resource: &[u8]) -> (Answer, IdBuf) {
        // A lock the server does not know is free: the same answer as a known free lock, every
        // field zero (spec §5.3), so that asking about a lock never looks like an error.
        let Some(slot) = self.lookup(resource) else {
            return (Answer::bare(Status::Ok), IdBuf::EMPTY);
        };
        let s = &self.slots[slot as usize];
        let waiter_count = s.live_waiters();
        let Some(holder) = s.holder() else {
            return (
                Answer {
                    waiter_count,
                    ..Answer::bare(Status::Ok)
                },
                IdBuf::EMPTY,
            );
        };
        // In `handle_request` due timers fired first, so a held lock expires after `now`;
        // `read_status` fires none, so there the remaining lease may be 0.
        let remaining_ms = s.expiry.saturating_since(now).as_millis();
        let answer = Answer {
            fencing_token: s.token,
            hold_count: s.hold_count,
            lease_ms: u32::try_from(remaining_ms).expect("a lease is at most ttl_ms_max"),
            waiter_count,
            ..Answer::bare(Status::Ok)
        };
        (answer, IdBuf::new(holder))
    }

    /// A new hold for `client` on the free lock in `slot`, granted at `at`.
    fn grant(
        &mut self,
        slot: u32,
        client: &[u8],
        ttl_ms: u32,
        at: Instant,
        queued: bool,
    ) -> Answer {
        let ttl_ms = self.ttl_ms(slot, ttl_ms);
        let token = self.token_next;
        self.token_next = token.checked_add(1).expect("fencing tokens exhausted");
        let s = &mut self.slots[slot as usize];
        assert!(s.hold_count == 0, "granting a held lock");
        // Fencing (spec §6.2): tokens strictly increase per resource.
        assert!(token > s.token, "fencing token {token} after {}", s.token);
        s.set_holder(client);
        s.hold_count = 1;
        s.token = token;
        s.hold_ttl_ms = ttl_ms;
        s.expiry = at + Duration::from_millis(ttl_ms.into());
        assert!(self.timers.insert(Timer::hold(s, slot)));
        assert!(
            self.holds.insert(token, slot).is_none(),
            "token {token} issued twice"
        );
        self.lease_horizon = self.lease_horizon.max(s.expiry);
        self.held += 1;
        self.counts.grants += 1;
        self.counts.handoffs += u64::from(queued);
        if let Some(shard) = self.log_shard {
            let how = if queued { "handed off" } else { "granted" };
            log::debug!(target: LOCK_LOG_TARGET,
                "shard {shard}: {} {how} to {} (token {token}, ttl {ttl_ms} ms)",
                s.resource().escape_ascii(), client.escape_ascii());
        }
        Answer {
            fencing_token: token,
            hold_count: 1,
            lease_ms: ttl_ms,
            queued,
            ..Answer::bare(Status::Ok)
        }
    }

    /// One more re-entrant hold for the lock's holder, granted at `at`.
    fn grant_again(&mut self, slot: u32, ttl_ms: u32, at: Instant, queued: bool) -> Answer {
        let ttl_ms = self.ttl_ms(slot, ttl_ms);
        let s = &self.slots[slot as usize];
        assert!(s.hold_count > 0, "re-entering a free lock");
        if s.hold_count >= self.config.holds_per_lock_max {
            return Answer {
                queued,
                ..Answer::bare(Status::HoldLimitExceeded)
            };
        }
        let expiry = s.expiry.max(at + Duration::from_millis(ttl_ms.into()));
        self.set_expiry(slot, expiry);
        let s = &mut self.slots[slot as usize];
        s.hold_count += 1;
        s.hold_ttl_ms = ttl_ms;
        self.counts.grants += 1;
        self.counts.handoffs += u64::from(queued);
        if let Some(shard) = self.log_shard {
            let how = if queued {
                "handed off again"
            } else {
                "granted again"
            };
            log::debug!(target: LOCK_LOG_TARGET,
                "shard {shard}: {} {how} to its holder {} (token {}, {} holds)",
                s.resource().escape_ascii(), s.holder().unwrap_or_default().escape_ascii(),
                s.token, s.hold_count);
        }
        Answer {
            fencing_token: s.token,
            hold_count: s.hold_count,
            lease_ms: lease_left_ms(expiry, at),
            queued,
            ..Answer::bare(Status::Ok)
        }
    }

    /// The TTL for an acquire asking `ttl_ms`: its own, else the resource's, else the server's.
    fn ttl_ms(&self, slot: u32, ttl_ms: u32) -> u32 {
        let default_ttl_ms = self.slots[slot as usize].default_ttl_ms;
        [ttl_ms, default_ttl_ms, self.config.ttl_default_ms]
            .into_iter()
            .find(|&ttl_ms| ttl_ms != 0)
            .expect("ttl_default_ms is validated non-zero")
    }

    /// Moves the held lock's expiry timer to `expiry`.
    fn set_expiry(&mut self, slot: u32, expiry: Instant) {
        let s = &mut self.slots[slot as usize];
        assert!(s.hold_count > 0);
        assert!(self.timers.remove(&Timer::hold(s, slot)));
        s.expiry = expiry;
        assert!(self.timers.insert(Timer::hold(s, slot)));
        self.lease_horizon = self.lease_horizon.max(expiry);
    }

    /// The lock in `slot` has just become free at `at`: grants it to the head waiter, then to
    /// the new holder's own acquires queued right behind it (spec §6.3).
    fn hand_off(&mut self, slot: u32, at: Instant) {
        enum Step {
            TimeOut,
            Grant,
            GrantAgain,
        }
        assert!(self.slots[slot as usize].hold_count == 0);
        loop {
            let s = &self.slots[slot as usize];
            let Some(head) = s.queue.as_deref().and_then(WaitQueue::front) else {
                break;
            };
            // A deadline at `at` fires at `at` too (a timer ordered after this one).
            let step = if head.deadline <= at {
                Step::TimeOut
            } else {
                match s.holder() {
                    None => Step::Grant,
                    Some(holder) if *holder == *head.client => Step::GrantAgain,
                    Some(_) => break,
                }
            };
            let queue = self.slots[slot as usize]
                .queue
                .as_deref_mut()
                .expect("non-empty");
            let waiter = queue.pop_front();
            self.waiters -= 1;
            assert!(self.timers.remove(&Timer::wait(&waiter, slot)));
            let answer = match step {
                Step::TimeOut => {
                    self.counts.acquisition_timeouts += 1;
                    self.log_timed_out(slot, &waiter);
                    Answer {
                        queued: true,
                        ..Answer::bare(Status::LockAcquisitionTimeout)
                    }
                }
                Step::Grant => self.grant(slot, &waiter.client, waiter.ttl_ms, at, true),
                Step::GrantAgain => self.grant_again(slot, waiter.ttl_ms, at, true),
            };
            self.answer_waiter(&waiter, answer);
        }
    }

    /// A hold's lease ended without renewal: free it entirely and hand the lock on.
    fn expire(&mut self, timer: Timer) {
        let s = &mut self.slots[timer.slot as usize];
        assert!(s.hold_count > 0 && s.token == timer.seq && s.expiry == timer.due);
        if let Some(shard) = self.log_shard {
            log::debug!(target: LOCK_LOG_TARGET,
                "shard {shard}: {} expired: {} did not renew (token {})",
                s.resource().escape_ascii(), s.holder().unwrap_or_default().escape_ascii(),
                s.token);
        }
        s.hold_count = 0;
        assert_eq!(self.holds.remove(&s.token), Some(timer.slot));
        self.held -= 1;
        self.counts.expirations += 1;
        self.hand_off(timer.slot, timer.due);
        self.settle(timer.slot, None);
    }

    /// A waiter's deadline passed: LOCK_ACQUISITION_TIMEOUT.
    fn time_out(&mut self, timer: Timer) {
        let queue = self.slots[timer.slot as usize]
            .queue
            .as_deref_mut()
            .expect("a wait timer points at a queue");
        let waiter = queue.remove(timer.seq);
        assert!(waiter.deadline == timer.due);
        self.waiters -= 1;
        self.counts.acquisition_timeouts += 1;
        self.log_timed_out(timer.slot, &waiter);
        let answer = Answer {
            queued: true,
            ..Answer::bare(Status::LockAcquisitionTimeout)
        };
        self.answer_waiter(&waiter, answer);
        self.settle(timer.slot, None);
    }

    /// Logs that `waiter`, queued on `slot`, reached its deadline.
    fn log_timed_out(&self, slot: u32, waiter: &Waiter) {
        if let Some(shard) = self.log_shard {
            log::debug!(target: LOCK_LOG_TARGET,
                "shard {shard}: {} not granted to {}: its wait ended in the queue",
                self.slots[slot as usize].resource().escape_ascii(),
                waiter.client.escape_ascii());
        }
    }

    /// The final answer to a queued acquire: remembered, and sent to its latest address.
    fn answer_waiter(&mut self, waiter: &Waiter, answer: Answer) {
        assert!(answer.queued);
        let key = self.session_key(waiter.id.session);
        let session = self
            .sessions
            .get_mut(&key)
            .expect("a session with a queued request is never forgotten");
        let pending = session.pending.remove(&waiter.id.request);
        assert!(pending.is_some_and(|pending| pending.seq == waiter.seq));
        let remembered = Remembered {
            kind: RequestKind::Acquire,
            answer,
            attempt: waiter.attempt,
        };
        let answers_max = self.config.answers_per_session_max;
        let evicted = remember_in(session, waiter.id, remembered, answers_max);
        self.answers_remembered = self.answers_remembered + 1 - evicted;
        check_answer(&answer);
        if !self.replying {
            return;
        }
        self.replies.push_back(Reply {
            to: waiter.reply_to,
            id: waiter.id,
            attempt: waiter.attempt,
            kind: RequestKind::Acquire,
            answer,
            holder: IdBuf::EMPTY,
            holder_truncated: false,
        });
    }

    /// Remembers the final answer to `request` of `session`, evicting the session's smallest
    /// request id when full (which makes every id up to it expired).
    fn remember(
        &mut self,
        session: SessionKey,
        request: u64,
        kind: RequestKind,
        answer: Answer,
        attempt: u16,
    ) {
        let answers_max = self.config.answers_per_session_max;
        let id = RequestId {
            session: session.id,
            request,
        };
        let session = self.sessions.get_mut(&session).expect("admitted");
        let remembered = Remembered {
            kind,
            answer,
            attempt,
        };
        let evicted = remember_in(session, id, remembered, answers_max);
        self.answers_remembered = self.answers_remembered + 1 - evicted;
    }

    fn forget_session(&mut self, session_id: u64) {
        let key = self.session_key(session_id);
        let session = self.sessions.remove(&key).expect("known session");
        // A waiter's deadline (at most wait_ms_max after the session's last request) comes
        // before the session's idle time (validate: session_idle_ms > wait_ms_max), and fires
        // first: so no queued request is ever left without its session.
        assert!(
            session.pending.is_empty(),
            "idle session {session_id} has queued requests"
        );
        self.answers_remembered -= session.answers.len() as u64;
    }

    /// `session_id` with its hash, for `sessions`.
    fn session_key(&self, session_id: u64) -> SessionKey {
        SessionKey {
            id: session_id,
            hash: self.session_hash.of_u64(session_id),
        }
    }

    fn lookup(&self, resource: &[u8]) -> Option<u32> {
        self.find(self.index.hash(resource), resource)
    }

    /// The slot of `resource`, whose hash is `hash` ([`ResourceIndex::hash`]).
    fn find(&self, hash: ResourceHash, resource: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, resource, |slot| slots[slot as usize].resource())
    }

    /// A slot for the unknown `resource` (whose hash is `hash`), or `None` at
    /// `resources_max`. The caller makes it known (grants or configures) and calls
    /// [`LockTable::settle`].
    fn create(&mut self, resource: &[u8], hash: ResourceHash, holder_hint: &[u8]) -> Option<u32> {
        if self.resources >= self.config.resources_max {
            return None;
        }
        let slot = match self.slots_free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).expect("slots below resources_max");
                self.slots.push(Slot::vacant());
                slot
            }
        };
        self.slots[slot as usize].occupy(resource, holder_hint, &mut self.ids_spare);
        self.index.insert(hash, slot);
        self.resources += 1;
        Some(slot)
    }

    /// Ends an operation on `slot`: drops what a lock no longer needs, and forgets a resource
    /// that is free, unwaited and unconfigured (spec §6.1: a known resource is held, waited on,
    /// or configured), so memory follows the locks in use. `hash`: the resource's hash if the
    /// caller has it (else it is computed, only if the resource is forgotten).
    fn settle(&mut self, slot: u32, hash: Option<ResourceHash>) {
        let s = &mut self.slots[slot as usize];
        if s.queue.as_deref().is_some_and(|queue| queue.live() == 0) {
            let queue = s.queue.take().expect("checked");
            if self.queue_spare.is_none() && queue.capacity() <= QUEUE_SPARE_CAPACITY_MAX {
                assert!(queue.is_empty());
                self.queue_spare = Some(queue);
            }
        }
        if s.hold_count == 0 {
            assert!(
                s.queue.is_none(),
                "a freed lock was handed to every live waiter"
            );
            if s.default_ttl_ms == 0 {
                let hash = hash.unwrap_or_else(|| self.index.hash(s.resource()));
                self.index.remove(hash, slot);
                let ids = s.vacate();
                if ids.len() <= IDS_SPARE_LEN_MAX {
                    self.ids_spare = Some(ids);
                }
                self.slots_free.push(slot);
                self.resources -= 1;
                return;
            }
            if s.ids.len() > usize::from(s.resource_len) {
                s.ids = s.resource().into();
            }
        }
        s.check();
    }

    /// Queues the answer to the request being handled.
    fn reply(&mut self, request: &Request<'_>, attempt: u16, answer: Answer) {
        if !self.replying {
            check_answer(&answer);
            return;
        }
        let reply = self.reply_to(request, attempt, answer);
        self.replies.push_back(reply);
    }

    /// The reply carrying `answer` to `request`, without a holder.
    fn reply_to(&self, request: &Request<'_>, attempt: u16, answer: Answer) -> Reply {
        check_answer(&answer);
        Reply {
            to: request.reply_to,
            id: request.id,
            attempt,
            kind: request.body.kind(),
            answer,
            holder: IdBuf::EMPTY,
            holder_truncated: false,
        }
    }

    /// Checks every invariant of the whole table. O(n): tests only.
    #[cfg(test)]
    fn check_all(&self) {
        let mut resources = 0;
        let mut held = 0;
        let mut waiters = 0;
        for (number, s) in self.slots.iter().enumerate() {
            if s.resource_len == 0 {
                assert!(self.slots_free.contains(&(number as u32)));
                continue;
            }
            s.check();
            resources += 1;
            assert_eq!(self.lookup(s.resource()), Some(number as u32));
            if s.hold_count > 0 {
                held += 1;
                assert!(self.timers.contains(&Timer::hold(s, number as u32)));
                assert_eq!(self.holds.get(&s.token), Some(&(number as u32)));
                assert!(s.token < self.token_next);
            }
            waiters += s.live_waiters();
        }
        assert_eq!(resources, self.resources);
        assert_eq!(held, self.held);
        assert_eq!(self.holds.len(), held as usize);
        assert_eq!(waiters, self.waiters);
        assert_eq!(self.timers.len(), (held + waiters) as usize);
        assert_eq!(self.sessions.len(), self.sessions_idle.len());
        let answers: usize = self.sessions.values().map(|s| s.answers.len()).sum();
        assert_eq!(answers as u64, self.answers_remembered);
        let pending: usize = self.sessions.values().map(|s| s.pending.len()).sum();
        assert_eq!(pending, waiters as usize);
    }
}
