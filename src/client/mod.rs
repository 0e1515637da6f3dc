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
//! receive thread: the calling threads share the receive duty, and whichever of them is
//! receiving hands the others their replies (see `receiving.rs`).
//!
//! # Lanes
//!
//! Each call in flight uses a session of its own, a *lane*, taken from a pool and given back
//! when the call ends: a session never has more than one request outstanding, so a slow
//! request's answer is never forgotten by the server for newer ones of the same session
//! (spec §6.6). At most [`OUTSTANDING_MAX`] lanes; see `lanes.rs`.
//!
//! # Routing
//!
//! Resources are split into [`ClientConfig::shards`] shards, and every call goes to its
//! shard's leader as this client last knew it. NOT_LEADER and OVERLOADED are never final
//! answers: the same request follows a leader hint, moves on to the next server, or waits
//! out the hinted delay, and a call that only ever met them (or silence) ends at its deadline
//! ([`LockError::Unavailable`], or [`LockError::Overloaded`]). A reply is accepted only from
//! a node of the cluster, and only if its fields do not contradict the request (a grant
//! with token 0, or a lease above the one asked, is dropped as forged or broken). The rules are the spec's (§7.1.7); see `routing.rs`. One reachable server
//! is enough: the client reads the member table from the servers it was given and sends to
//! every alive member too (spec §7.1.8, "Discovery" in `routing.rs`).
//!
//! # Client keys
//!
//! With [`ClientConfig::client_key`] every lock request (ACQUIRE, RELEASE, RENEW, STATUS,
//! CONFIGURE, KEEPALIVE, CANCEL_WAIT: the guards' renewals and the doubts resent included) is
//! sealed with the key: each copy carries the key's id and a MAC of the whole datagram, its
//! attempt and address token included, and is padded so that its sealed reply fits (spec
//! §7.1.10). A reply counts only if that key sealed it; any other is dropped like a forged
//! one. An unsealed UNAUTHENTICATED or ERROR_REPLY (the server has no key to seal with)
//! ends an ACQUIRE not yet queued, and a STATUS; it could be forged by anyone who saw the
//! request, so it ends no RELEASE, RENEW or KEEPALIVE, which go on to their deadline (a
//! release then stays in doubt, [`LockError::ReleaseInDoubt`]). Servers with a client key file then let the client act only for the
//! ids its key authorizes ([`LockError::Forbidden`]), and refuse a key they do not know
//! ([`LockError::Unauthenticated`]). The operators' reads are never sealed. Guards without
//! a named owner take `<prefix><session hex>-<n>` with [`ClientConfig::owner_prefix`], by
//! default the key file's first prefix, so that they act for ids the key authorizes; a
//! renewal answered FORBIDDEN loses the guard at once ([`LossReason::Forbidden`]).
//!
//! # A release without a settling answer
//!
//! A RELEASE that ended without an answer that settles it may still take effect later, so the
//! caller is told the outcome is unknown ([`LockError::Unavailable`] or
//! [`LockError::ReleaseInDoubt`]: stop relying on the lock). The client keeps it and sends it
//! again before its next ACQUIRE, RENEW or RELEASE of the same resource and client id; until
//! an answer settles it, those calls fail with [`LockError::ReleaseInDoubt`] and are not sent
//! (spec §7.1.5; see `doubts.rs`).
//!
//! # Leases
//!
//! A granted [`Lease`] is valid until `send_time(echoed attempt) + lease_ms × (1 − drift)`:
//! counted from the instant this client sent the copy the server answered (the server counts
//! from its grant, which came later), minus the clock-drift bound (spec "Lease rule").
//!
//! # Where each concern lives
//!
//! Every decision about a request lives in the pure call core [`crate::core::call`] (one
//! [`Call`] per operation, owned by the calling thread): where each copy goes and when, which
//! replies it accepts, RTT samples, WAITING keepalives, OVERLOADED pauses, when it gives up,
//! when a lease starts, which releases are kept as doubts. The simulator runs the same core
//! for its clients. This module is the IO shell around it, one concern per file:
//!
//! - `mod.rs` (here): [`Client`], its public operations, the socket, the client's clock.
//! - `config.rs`: [`ClientConfig`], its validation, and the public limits.
//! - `reports.rs`: what the operations return: [`Lease`], [`LockStatus`], [`ClientStats`],
//!   [`ShardStatusReport`], [`NodeSettingsReport`].
//! - `operation.rs`: one operation from its request to its outcome: the [`Call`] run
//!   against the socket, and the outcome mapped to [`LockError`].
//! - `receiving.rs`: the pending map, and the receive hand-off between the calling threads.
//! - `routing.rs`: where a request goes: shards and their leaders, and the nodes discovered
//!   from the member table.
//! - `lanes.rs`: one session per call in flight.
//! - `doubts.rs`: releases whose outcome is unknown, settled before the lock is touched again.
//! - `guard.rs`: [`LockGuard`]s ([`Client::lock`]): a lock renewed in the background,
//!   released on drop, with a loss signal; `renewer.rs`: the one thread per client that
//!   renews them, a shell around the renewal rules of [`crate::core::renewal`].
//! - `admin.rs`: the operators' read-only queries (SHARD_STATUS, NODE_SETTINGS), off the lock
//!   path.
//! - `limits.rs`: an INVALID_ARGUMENT refusal made to name the field and the server's limit.
//! - `tests/`: unit tests against a scripted fake server on loopback, by concern.
//!
//! [`Call`]: crate::core::call::Call

mod admin;
#[cfg(feature = "tokio")]
mod async_client;
#[cfg(feature = "tokio")]
mod async_guard;
mod config;
mod doubts;
mod guard;
mod holds;
mod keepalive;
mod lanes;
mod limits;
mod operation;
mod receiving;
mod renewer;
mod reports;
mod routing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration as StdDuration;

use socket2::{Domain, Protocol, Socket, Type};
use udplock_protocol::{Flags, RequestBody, ID_LEN_MAX};

use crate::clock::BootInstant;
use crate::core::call::{lease_validity, socket_addr_for, Doubts};
use crate::core::retransmit::RttEstimator;
use crate::core::time::{Duration, Instant};
use crate::error::LockError;

pub use self::admin::{RemoveReport, MEMBERS_REPORT_MAX};
#[cfg(feature = "tokio")]
pub use self::async_client::{AsyncClient, AsyncStats};
#[cfg(feature = "tokio")]
pub use self::async_guard::{AsyncLockGuard, AsyncLostSignal};
pub use self::config::{
    resolve_servers, ClientConfig, GRACE_MS_MAX, OUTSTANDING_MAX, OWNER_PREFIX_LEN_MAX, WAIT_MS_MAX,
};
pub use self::holds::{HoldInfo, HOLDS_REPORT_MAX};
pub use self::reports::KeepaliveReport;
pub use self::reports::{
    ClientStats, Lease, LockStatus, MemberInfo, MemberState, MembersReport, NodeSettingsReport,
    ShardInfo, ShardRole, ShardStatusReport,
};
pub use crate::core::call::DOUBTS_MAX;
/// The type of [`ClientConfig::retransmit`].
pub use crate::core::retransmit::RetransmitConfig;
/// The type of [`ClientConfig::client_key`] (spec §7.1.10).
pub use udplock_protocol::ClientKey;
// The call core's internal bounds: public for the `udplock` binary and the tests, not a
// promise to library users.
#[doc(hidden)]
pub use crate::core::call::LEARNED_LEADERS_MAX;
#[doc(hidden)]
pub use crate::core::retransmit::{REDIRECTS_FAST_MAX, SILENT_SENDS_MAX};

pub use self::guard::{LockGuard, LockOptions, LossReason, LostSignal, LOCK_WAIT_DEFAULT};
use self::lanes::{new_session_id, Lane};
use self::operation::Answer;
use self::receiving::{PendingMap, ReceiverState, PENDING_CAPACITY_INITIAL};
use self::routing::Membership;
#[doc(hidden)]
pub use crate::core::call::{
    CANDIDATES_MAX, FIRST_ROUNDS_MAX, HINTED_REFRESH_INTERVAL_MIN, REFRESH_INTERVAL_MIN,
};

/// Receive buffer the socket asks for: room for a burst of replies to many threads' requests
/// while the receiver is busy (the kernel may grant less; that only means more
/// retransmissions).
const RECV_BUFFER_BYTES: usize = 1 << 20;

/// A blocking, thread-safe lock client: share one per process (it is `Send + Sync`).
pub struct Client {
    /// Unconnected: copies go wherever their shard's leader is, replies come from anywhere.
    socket: UdpSocket,
    /// Its routes and its discovery of the members (see `routing.rs`).
    membership: Membership,
    /// The first lane's session id (what [`Client::session_id`] reports).
    session_id: u64,
    /// Lanes not in use by a call right now (see `lanes.rs`): a session id, and the routes
    /// its last call used. A call takes one and gives it back, so each session has at most
    /// one request outstanding.
    lanes_free: Mutex<Vec<Lane>>,
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
    /// What this client's lock guards share, created at the first guard (see `guard.rs`).
    guards: OnceLock<Arc<guard::Guards>>,
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
    /// Opens one socket for all of `config.servers` and starts a new session. Nothing is
    /// sent yet: the first call finds each shard's leader (and reads the member table).
    /// Fails only on settings [`ClientConfig::validate`] refuses or a socket that cannot be
    /// opened.
    ///
    /// # Example
    /// ```
    /// # let node = udplock::single::SingleNode::start(
    /// #     udplock::single::SingleConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    /// # let server = node.local_addr();
    /// use udplock::{Client, ClientConfig};
    ///
    /// let mut config = ClientConfig::new(vec![server]);
    /// config.request_timeout_ms = 1_000; // release, renew, status: give up after 1 s
    /// let client = Client::new(config)?;
    /// assert_eq!(client.servers(), &[server]);
    /// # Ok::<(), udplock::LockError>(())
    /// ```
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
            membership: Membership::new(&config.servers, config.shards, v6_socket),
            session_id,
            lanes_free: Mutex::new(vec![Lane::new(session_id)]),
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
            guards: OnceLock::new(),
        })
    }

    /// A client with the default settings ([`ClientConfig::new`]) for these servers: one
    /// reachable address of the cluster is enough.
    ///
    /// # Example
    /// ```
    /// # let node = udplock::single::SingleNode::start(
    /// #     udplock::single::SingleConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    /// # let server = node.local_addr();
    /// let client = udplock::Client::connect(&[server])?;
    /// client.acquire_lock("orders/42", "worker-7", 1_000)?;
    /// client.release_lock("orders/42", "worker-7")?;
    /// # Ok::<(), udplock::LockError>(())
    /// ```
    pub fn connect(servers: &[SocketAddr]) -> Result<Client, LockError> {
        Client::new(ClientConfig::new(servers.to_vec()))
    }

    /// This client's first session id (random, non-zero). Concurrent calls use further
    /// session ids, one per call in flight (see "Lanes" in the module docs).
    pub fn session_id(&self) -> u64 {
        self.session_id
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

    /// The settings this client was built with (validated).
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
    ///
    /// # Example
    /// ```
    /// # let node = udplock::single::SingleNode::start(
    /// #     udplock::single::SingleConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    /// # let server = node.local_addr();
    /// let client = udplock::Client::connect(&[server])?;
    /// // Wait up to 1 s for the lock; hold it for at most 10 s unless renewed.
    /// let lease = client.acquire("orders/42", "worker-7", 1_000, Some(10_000))?;
    /// assert!(lease.is_valid());
    /// // Every write to the protected storage carries lease.fencing_token, so the storage can
    /// // refuse a writer whose lease ran out and whose lock was granted to someone else.
    /// let token = lease.fencing_token;
    /// # let _ = token;
    /// assert_eq!(client.release("orders/42", "worker-7")?, 0);
    /// # Ok::<(), udplock::LockError>(())
    /// ```
    pub fn acquire(
        &self,
        resource_id: &str,
        client_id: &str,
        timeout_ms: u64,
        ttl_ms: Option<u32>,
    ) -> Result<Lease, LockError> {
        let body = acquire_body(resource_id, client_id, timeout_ms, ttl_ms)?;
        let asked = limits::Asked {
            wait_ms: Some(timeout_ms),
            ttl_ms,
            ..Default::default()
        };
        let answer = (self.call(body, timeout_ms + self.config.grace_ms))
            .map_err(|e| self.name_refused_field(e, asked))?;
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
        let body = renew_body(resource_id, client_id, ttl_ms)?;
        let asked = limits::Asked {
            ttl_ms,
            ..Default::default()
        };
        let answer = (self.call(body, self.config.request_timeout_ms))
            .map_err(|e| self.name_refused_field(e, asked))?;
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
    ///
    /// # Example
    /// ```
    /// # let node = udplock::single::SingleNode::start(
    /// #     udplock::single::SingleConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    /// # let server = node.local_addr();
    /// use udplock::LockError;
    ///
    /// let client = udplock::Client::connect(&[server])?;
    /// client.acquire("orders/42", "worker-7", 1_000, None)?;
    /// client.acquire("orders/42", "worker-7", 1_000, None)?; // re-entrant: 2 holds
    /// assert_eq!(client.release("orders/42", "worker-7")?, 1);
    /// assert_eq!(client.release("orders/42", "worker-7")?, 0); // free
    /// assert_eq!(client.release("orders/42", "worker-7"), Err(LockError::LockNotHeld));
    /// # Ok::<(), udplock::LockError>(())
    /// ```
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
        Ok(status_of(resource_id, &reply))
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
        let asked = limits::Asked {
            default_ttl_ms,
            ..Default::default()
        };
        (self.call(body, self.config.request_timeout_ms))
            .map(|_| ())
            .map_err(|e| self.name_refused_field(e, asked))
    }

    /// The client's view of a granted hold (spec "Lease rule").
    fn lease(&self, resource_id: &str, client_id: &str, answer: &Answer) -> Lease {
        lease_of(resource_id, client_id, answer, &self.config, self.epoch)
    }

    /// Core time: microseconds since `epoch`, rounded down (so a recorded send time is never
    /// later than the real one).
    fn now(&self) -> Instant {
        core_now(self.epoch)
    }

    /// The clock instant of core time `t`.
    fn boot_instant(&self, t: Instant) -> BootInstant {
        boot_instant_of(self.epoch, t)
    }
}

/// The clock instant of core time `t` of a client whose zero is `epoch` (both clients).
fn boot_instant_of(epoch: BootInstant, t: Instant) -> BootInstant {
    epoch + StdDuration::from_micros(t.as_micros())
}

/// The RENEW of `client_id`'s hold of `resource_id`, its arguments checked (both clients).
fn renew_body<'a>(
    resource_id: &'a str,
    client_id: &'a str,
    ttl_ms: Option<u32>,
) -> Result<RequestBody<'a>, LockError> {
    check_id("resource_id", resource_id)?;
    check_id("client_id", client_id)?;
    Ok(RequestBody::Renew {
        resource: resource_id.as_bytes(),
        client: client_id.as_bytes(),
        ttl_ms: ttl_wire("ttl_ms", ttl_ms)?,
    })
}

/// The ACQUIRE of `client_id` on `resource_id`, its arguments checked (both clients).
fn acquire_body<'a>(
    resource_id: &'a str,
    client_id: &'a str,
    timeout_ms: u64,
    ttl_ms: Option<u32>,
) -> Result<RequestBody<'a>, LockError> {
    check_id("resource_id", resource_id)?;
    check_id("client_id", client_id)?;
    if timeout_ms > WAIT_MS_MAX {
        return Err(LockError::InvalidArgument(format!(
            "timeout_ms must be at most {WAIT_MS_MAX} (5 minutes), got {timeout_ms}; wait \
             longer in a loop"
        )));
    }
    Ok(RequestBody::Acquire {
        resource: resource_id.as_bytes(),
        client: client_id.as_bytes(),
        wait_ms: timeout_ms as u32,
        ttl_ms: ttl_wire("ttl_ms", ttl_ms)?,
    })
}

/// A STATUS_REPLY as the caller sees it (both clients).
fn status_of(resource_id: &str, reply: &receiving::ReplyData) -> LockStatus {
    let holder = reply.holder();
    LockStatus {
        resource_id: resource_id.to_owned(),
        holder: (!holder.is_empty()).then(|| String::from_utf8_lossy(holder).into_owned()),
        holder_truncated: reply.flags.contains(Flags::HOLDER_TRUNCATED),
        hold_count: reply.hold_count,
        fencing_token: reply.fencing_token,
        remaining_ttl_ms: reply.lease_ms,
        waiter_count: reply.waiter_count,
    }
}

/// The client's view of a granted hold (spec "Lease rule"): valid until the send time of the
/// copy the grant echoed plus the lease less the drift bound. Both clients build it here.
fn lease_of(
    resource_id: &str,
    client_id: &str,
    answer: &Answer,
    config: &ClientConfig,
    epoch: BootInstant,
) -> Lease {
    let reply = &answer.reply;
    let valid = lease_validity(reply.lease_ms, config.drift_bound_ppm);
    Lease {
        resource_id: resource_id.to_owned(),
        client_id: client_id.to_owned(),
        fencing_token: reply.fencing_token,
        hold_count: reply.hold_count,
        ttl_ms: reply.lease_ms,
        valid_until: boot_instant_of(epoch, answer.lease_start + valid),
    }
}

/// Core time of a client whose zero is `epoch`: microseconds since it, rounded down (so a
/// recorded send time is never later than the real one).
fn core_now(epoch: BootInstant) -> Instant {
    let since = BootInstant::now().saturating_duration_since(epoch);
    Instant::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
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
