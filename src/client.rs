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
//! (a fresh request id, then the same id with `attempt + 1` on each retransmission) and one
//! reply. On this kind of machine waking another thread costs about 20 µs — as much as the
//! whole round trip — so the design goal is that the thread that called `acquire` is the
//! thread that reads its reply from the socket. There is no background receive thread.
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
//! guess), and has
//! that request's reply type or ERROR_REPLY. The source address is not checked: a server on
//! a multi-homed host may answer from another of its addresses.
//!
//! An ACQUIRE that has to wait is answered WAITING at once (spec §6.3): not a final answer,
//! so the caller keeps waiting, but it switches the request from loss-recovery retransmits
//! (RTO, doubling) to keepalives paced by the lease (at most every 100 ms), which refresh the
//! reply address and the send time the lease is counted from. A final answer that arrives
//! while a WAITING is still stored replaces it.
//!
//! The retransmission decisions (RTO, backoff, keepalives, which replies give RTT samples,
//! when a lease starts) live in the pure core [`crate::core::retransmit`]; this module is the
//! IO shell.
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
//! # One server, for now
//!
//! [`ClientConfig::servers`] is a list for the replicated cluster that comes next. In this
//! version every request goes to the FIRST address: two standalone nodes have two separate
//! lock tables, so spreading requests over them would break mutual exclusion. A warning is
//! logged when more than one address is given.
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
use std::time::{Duration as StdDuration, Instant as StdInstant};

use socket2::{Domain, Protocol, Socket, Type};
use udplock_protocol::header::field as header_field;
use udplock_protocol::{
    Flags, Hint, MessageType, Reply, Request, RequestBody, Status, DATAGRAM_LEN_MAX, ID_LEN_MAX,
};

use crate::core::retransmit::{RequestTimer, RetransmitConfig, RttEstimator, REQUEST_LIFETIME_MAX};
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

/// Settings of a [`Client`]. `ClientConfig::new(servers)` gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Lock server addresses. This version talks to the first one only (see the module docs).
    pub servers: Vec<SocketAddr>,
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
    /// The TTL the server granted (or renewed), in milliseconds.
    pub ttl_ms: u32,
    /// When this client must consider the lock lost: the send time of the answered request
    /// copy plus the TTL, minus the clock-drift bound. The server's expiry is later.
    pub valid_until: StdInstant,
}

impl Lease {
    /// True while the lease may still be relied on.
    pub fn is_valid(&self) -> bool {
        StdInstant::now() < self.valid_until
    }

    /// Time left before [`Lease::valid_until`] (zero once passed).
    pub fn remaining(&self) -> StdDuration {
        self.valid_until
            .saturating_duration_since(StdInstant::now())
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

/// Counters of a [`Client`], for monitoring and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientStats {
    /// Copies sent beyond the first of each request.
    pub retransmits: u64,
    /// Received datagrams dropped: undecodable, another session's, an unknown or finished
    /// request id, the wrong reply type, or a duplicate reply.
    pub dropped_datagrams: u64,
    /// Smoothed round-trip time, once measured.
    pub srtt: Option<StdDuration>,
    /// Retransmission timeout a new request starts with.
    pub rto: StdDuration,
}

/// A blocking, thread-safe lock client: share one per process (it is `Send + Sync`).
pub struct Client {
    socket: UdpSocket,
    /// Where every request goes: the first configured server.
    server: SocketAddr,
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
    epoch: StdInstant,
    rtt: Mutex<RttEstimator>,
    pending: Mutex<PendingMap>,
    /// Held by the one thread currently receiving from the socket.
    receiver: Mutex<ReceiverState>,
    retransmits: AtomicU64,
    dropped_datagrams: AtomicU64,
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
    flags: Flags,
    attempt: u16,
    status: Status,
    hold_count: u32,
    fencing_token: u64,
    lease_ms: u32,
    waiter_count: u32,
    retry_after_ms: u32,
    holder_len: u8,
    holder: [u8; ID_LEN_MAX],
    /// When the receiver read the datagram (for the RTT sample; a thread hop adds nothing).
    received_at: Instant,
}

impl ReplyData {
    fn new(reply: &Reply<'_>, received_at: Instant) -> ReplyData {
        let mut holder = [0u8; ID_LEN_MAX];
        // Reply::decode guarantees holder.len() <= 255 (it travels in one byte).
        let holder_len = reply.holder.len().min(ID_LEN_MAX);
        holder[..holder_len].copy_from_slice(&reply.holder[..holder_len]);
        ReplyData {
            msg_type: reply.msg_type,
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
            holder_len: holder_len as u8,
            holder,
            received_at,
        }
    }

    fn holder(&self) -> &[u8] {
        &self.holder[..usize::from(self.holder_len)]
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
    /// Opens a socket for the first server in `config.servers` and starts a new session.
    pub fn new(config: ClientConfig) -> Result<Client, LockError> {
        config.validate()?;
        let server = config.servers[0];
        if config.servers.len() > 1 {
            log::warn!(
                "{} lock servers given; this version talks to the first only ({server}): \
                 separate nodes keep separate lock tables",
                config.servers.len()
            );
        }
        let socket = open_socket(server).map_err(|e| {
            LockError::InternalError(format!(
                "cannot open a UDP socket for {server}: {e}; check the address family and \
                 the process's socket limits"
            ))
        })?;
        let read_timeout = StdDuration::from_millis(1);
        socket.set_read_timeout(Some(read_timeout)).map_err(|e| {
            LockError::InternalError(format!("cannot set the socket's receive timeout: {e}"))
        })?;
        let session_id = new_session_id();
        Ok(Client {
            socket,
            server,
            session_id,
            lanes_free: Mutex::new(vec![session_id]),
            next_request_id: AtomicU64::new(1),
            rtt: Mutex::new(RttEstimator::new(config.retransmit)),
            config,
            epoch: StdInstant::now(),
            pending: Mutex::new(HashMap::with_capacity_and_hasher(
                PENDING_CAPACITY_INITIAL,
                BuildHasherDefault::default(),
            )),
            receiver: Mutex::new(ReceiverState { read_timeout }),
            retransmits: AtomicU64::new(0),
            dropped_datagrams: AtomicU64::new(0),
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
        }
    }

    /// The server every request goes to.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
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
    /// An OVERLOADED answer with a retry-after hint (a full wait queue, a server in its startup
    /// grace) is retried, as the same request, after the hinted delay while `timeout_ms` allows
    /// (the wait then counts from when the server accepts it). Fails with
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

    /// The client's view of a granted hold (spec "Lease rule").
    fn lease(&self, resource_id: &str, client_id: &str, answer: &Answer) -> Lease {
        let reply = &answer.reply;
        let lease_us = u64::from(reply.lease_ms) * 1_000;
        // Round the drift allowance up: the client must never believe longer than allowed.
        let drift_us = (u128::from(lease_us) * u128::from(self.config.drift_bound_ppm))
            .div_ceil(1_000_000) as u64;
        let valid = Duration::from_micros(lease_us.saturating_sub(drift_us));
        Lease {
            resource_id: resource_id.to_owned(),
            client_id: client_id.to_owned(),
            fencing_token: reply.fencing_token,
            hold_count: reply.hold_count,
            ttl_ms: reply.lease_ms,
            valid_until: self.std_instant(answer.lease_start + valid),
        }
    }

    /// Core time: microseconds since `epoch`, rounded down (so a recorded send time is never
    /// later than the real one).
    fn now(&self) -> Instant {
        let since = StdInstant::now().saturating_duration_since(self.epoch);
        Instant::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    fn std_instant(&self, t: Instant) -> StdInstant {
        self.epoch + StdDuration::from_micros(t.as_micros())
    }

    /// One operation: send, retransmit until a reply or the deadline, map the status.
    fn call(&self, body: RequestBody<'_>, timeout_ms: u64) -> Result<Answer, LockError> {
        let Some(reply_type) = body.msg_type().reply_type() else {
            return Err(LockError::InternalError(
                "a request type without a reply type: a client bug".into(),
            ));
        };
        let wait_ms = match body {
            RequestBody::Acquire { wait_ms, .. } => wait_ms,
            _ => 0,
        };
        let lane = self.take_lane();
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

        let pending = self.register(lane.session_id, request_id, reply_type)?;
        let mut timer = lock(&self.rtt).timer();
        let start = self.now();
        let deadline = start + Duration::from_millis(timeout_ms);
        self.transmit(datagram, &mut timer);
        let mut deadline = deadline;
        let reply = loop {
            let reply = match self.await_reply(request_id, datagram, &mut timer, deadline) {
                Ok(reply) => reply,
                Err(e) => break Err(e),
            };
            // Spec §7.1.4: a reply echoing a copy we never sent is forged or broken.
            if timer
                .latest_attempt()
                .is_none_or(|latest| reply.attempt > latest)
            {
                self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let queued = reply.flags.contains(Flags::QUEUED);
            if let Some(sample) = timer.rtt_sample(reply.attempt, queued, reply.received_at) {
                lock(&self.rtt).on_sample(sample);
            }
            match reply.status {
                // WAITING is provisional (spec §6.3): the acquire is queued, so keep waiting
                // and send keepalives instead of loss-recovery retransmits. The server's wait
                // started when it queued the request, no later than this reply: wait for its
                // final answer until then + wait_ms + grace (within the request lifetime).
                Status::Waiting => {
                    if !timer.is_waiting() {
                        let waits_until = reply.received_at
                            + Duration::from_millis(wait_ms.into())
                            + Duration::from_millis(self.config.grace_ms);
                        deadline = deadline.max(waits_until).min(start + REQUEST_LIFETIME_MAX);
                    }
                    timer.on_waiting(reply.lease_ms);
                    continue;
                }
                // OVERLOADED took no effect: send the SAME request again after the hinted
                // delay, so no copy of it still in flight can take effect beside a new one.
                Status::Overloaded
                    if reply.retry_after_ms > 0
                        && self.now() + Duration::from_millis(reply.retry_after_ms.into())
                            < deadline =>
                {
                    thread::sleep(StdDuration::from_millis(reply.retry_after_ms.into()));
                    self.transmit(datagram, &mut timer);
                    continue;
                }
                _ => break Ok(reply),
            }
        };
        // Leave the pending map (and hand the receiver role on) before anything else.
        drop(pending);
        let reply = reply?;

        if let Some(error) = reply.error() {
            return Err(error);
        }
        Ok(Answer {
            lease_start: timer.lease_start(reply.attempt).unwrap_or(start),
            reply,
        })
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

    /// Sends the next copy: records its send time first (the lease counts from it), then
    /// patches the attempt number into the header.
    fn transmit(&self, datagram: &mut [u8], timer: &mut RequestTimer) {
        let attempt = timer.on_send(self.now());
        datagram[header_field::ATTEMPT].copy_from_slice(&attempt.to_be_bytes());
        if attempt > 0 {
            self.retransmits.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = self.socket.send_to(datagram, self.server) {
            // A failed send is a lost datagram: the retransmission timer covers it, and the
            // deadline turns a persistent failure into Unavailable.
            log::debug!("send to {} failed: {e}", self.server);
        }
    }

    /// Waits for this request's reply: as the receiver if the receive lock is free
    /// (step 2), parked otherwise (step 3).
    fn await_reply(
        &self,
        request_id: u64,
        datagram: &mut [u8],
        timer: &mut RequestTimer,
        deadline: Instant,
    ) -> Result<ReplyData, LockError> {
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
                return Ok(reply);
            }
            if let Some(mut state) = receiver {
                return self.receive(&mut state, request_id, datagram, timer, deadline);
            }
            let now = self.now();
            if now >= deadline {
                return Err(LockError::Unavailable);
            }
            if now >= timer.next_retransmit() {
                self.transmit(datagram, timer);
            }
            let wake_at = timer.next_retransmit().min(deadline);
            thread::park_timeout(std_duration(wake_at.saturating_since(now)));
        }
    }

    /// The receiver role: read the socket until this request's reply or its deadline,
    /// handing other requests' replies to their threads.
    fn receive(
        &self,
        state: &mut ReceiverState,
        request_id: u64,
        datagram: &mut [u8],
        timer: &mut RequestTimer,
        deadline: Instant,
    ) -> Result<ReplyData, LockError> {
        // One byte more than the longest valid datagram, so an oversized one is seen as such.
        let mut buf = [0u8; DATAGRAM_LEN_MAX + 1];
        let mut error_logged = false;
        loop {
            let now = self.now();
            if now >= deadline {
                return Err(LockError::Unavailable);
            }
            if now >= timer.next_retransmit() {
                self.transmit(datagram, timer);
            }
            let wait = timer.next_retransmit().min(deadline).saturating_since(now);
            self.set_read_timeout(state, wait);
            match self.socket.recv_from(&mut buf) {
                Ok((len, _from)) => {
                    let received_at = self.now();
                    if let Some(reply) = self.dispatch(&buf[..len], request_id, received_at) {
                        return Ok(reply);
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
                        let pause = std_duration(deadline.saturating_since(self.now()));
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
    /// drops it otherwise. Never panics, whatever the bytes.
    fn dispatch(&self, datagram: &[u8], own_id: u64, received_at: Instant) -> Option<ReplyData> {
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
        let data = ReplyData::new(&reply, received_at);
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

/// Gives a lane back to the pool when its call ends, however it ends.
struct LaneGuard<'a> {
    client: &'a Client,
    session_id: u64,
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        lock(&self.client.lanes_free).push(self.session_id);
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

fn open_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER_BYTES) {
        log::debug!("cannot enlarge the receive buffer: {e}");
    }
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    socket.bind(&local.into())?;
    Ok(socket.into())
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
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
    use std::thread::JoinHandle;

    /// What a fake server's handler sees: a request (with its receipt time), or an idle tick.
    enum Event<'a> {
        Request(Request<'a>, StdInstant),
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
                                Ok(req) => handler(Event::Request(req, StdInstant::now())),
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
        let before = StdInstant::now();
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
        assert!(lease.valid_until <= StdInstant::now() + StdDuration::from_millis(4_950));
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
        assert_eq!(stats.dropped_datagrams, 0);
        assert!(stats.srtt.is_some());
    }

    /// A queued acquire (WAITING) is kept alive at the paced interval, not retransmitted at
    /// loss-recovery pace, and the final grant ends the wait; its lease counts from the latest
    /// keepalive the server had seen when it granted.
    #[test]
    fn waiting_switches_to_keepalives_until_the_grant() {
        let copies = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&copies);
        let mut first_seen: Option<StdInstant> = None;
        let server = FakeServer::spawn(move |event| match event {
            Event::Request(req, at) => {
                let first = *first_seen.get_or_insert(at);
                log.lock().unwrap().push(req.attempt);
                if at.duration_since(first) < StdDuration::from_millis(60) {
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
        let started = StdInstant::now();
        let lease = client.acquire("r", "c", 5_000, Some(160)).unwrap();
        let waited = started.elapsed();
        assert_eq!(lease.fencing_token, 4);
        assert!(waited >= StdDuration::from_millis(60), "{waited:?}");
        let copies = copies.lock().unwrap();
        // About 60 ms / 10 ms keepalives; loss-recovery pace (a 1 ms RTO doubling) would have
        // been similar only by luck, an un-paced 200 µs floor far more.
        assert!(copies.len() >= 3, "keepalives were sent: {copies:?}");
        assert!(copies.len() <= 12, "keepalives too frequent: {copies:?}");
        assert!(copies.windows(2).all(|w| w[1] == w[0] + 1));
        // The lease is counted from the keepalive the grant answered, not the first send.
        assert!(lease.valid_until > started + StdDuration::from_millis(60 + 100));
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
        let mut first: Option<StdInstant> = None;
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
        let start = StdInstant::now();
        assert_eq!(client.status("r"), Err(LockError::Unavailable));
        let took = start.elapsed();
        assert!(took >= StdDuration::from_millis(60), "{took:?}");
        assert!(took < StdDuration::from_millis(1_000), "{took:?}");
        assert!(client.stats().retransmits >= 3);

        let start = StdInstant::now();
        assert_eq!(
            client.acquire("r", "c", 20, None),
            Err(LockError::Unavailable)
        );
        let took = start.elapsed();
        assert!(took >= StdDuration::from_millis(60), "{took:?}");
        assert!(took < StdDuration::from_millis(1_000), "{took:?}");
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
        let received: Arc<Mutex<Vec<(u16, StdInstant)>>> = Arc::default();
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

        let before = StdInstant::now();
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
        let before = StdInstant::now();
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
}
