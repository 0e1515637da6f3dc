//! The async client (feature `tokio`): the blocking [`Client`]'s operations as futures, on a
//! tokio `UdpSocket`, with tokio timers.
//!
//! Every decision is the call core's (`crate::core::call`), exactly as in the blocking
//! client: a [`Call`] per request decides where each copy goes, when it is retransmitted or
//! kept alive, which reply it accepts and how it ended; the route cache ([`Routes`]), the RTT
//! estimator, the doubts table ([`Doubts`], spec §7.1.5), the outcome mapping
//! (`operation::ended`), the argument checks, the lease rule and the reply's meaning
//! (`ReplyData`) are the blocking client's own functions. What is here is only the shell:
//!
//! - a call runs in the caller's task: it sends what its `Call` readies, and `select!`s
//!   three things until its outcome: the socket, its own reply channel, and
//!   `tokio::time::sleep` until the call's next timer;
//! - every waiting call reads the one socket (as the blocking client's threads share the
//!   receive duty, `receiving.rs`): a datagram that answers its own request it handles at
//!   once, in its own task (no hop); one that names another pending request (its session,
//!   its request id, its reply type or ERROR_REPLY, spec §7.1.4) it hands to that call over
//!   a small bounded channel (full: the reply counts as lost, the retransmission covers it);
//!   anything else is dropped. With no call waiting nobody reads: stray datagrams wait in
//!   the socket's buffer and are dropped by the next call;
//! - each call takes its own session (a *lane*, as in the blocking client's `lanes.rs`), so
//!   a session never has two requests outstanding.
//!
//! # Dropping a waiting acquire
//!
//! A future of [`AsyncClient::acquire`] dropped while the request may be waiting in a queue
//! (`timeout_ms > 0`, no final answer yet) withdraws it: a spawned task sends CANCEL_WAIT
//! (spec §4.12) on another lane, naming the acquire's session and request ids, and if the
//! answer says the grant crossed the cancel it releases that hold. The acquire's lane goes
//! back to the pool only after the cancel is answered (its late copies must not meet a new
//! request of the same session). Without a runtime to spawn on (the runtime is shutting
//! down), nothing is sent: the server's wait then runs out, and a hold granted meanwhile
//! ends with its lease, as after any unanswered ACQUIRE (spec §7.1.5).
//!
//! # Discovery (spec §7.1.8)
//!
//! One reachable node is enough, as for the blocking client: the async client owns the
//! same `Membership` (`routing.rs`, "Discovery": the routes, their version and the
//! [`Discovery`] core) and calls it at the same points, so every rule is the blocking
//! client's. A call polls it when it starts and after each timeout (MEMBERS requests leave
//! at once, with `try_send_to`: one the socket cannot take is a lost one, and the next
//! trigger asks again); before it handles a reply or a timeout it follows the routes if
//! discovery replaced them (one atomic load, against the routes its lane kept from its last
//! call), and reports a NOT_LEADER, an all-suspect ring and its outcome as refresh triggers.
//! A datagram that is no lock reply is offered to discovery as a MEMBERS_REPLY page
//! (whichever waiting call reads it); the next page's request goes out from there.
//!
//! [`Discovery`]: crate::core::call::Discovery
//! [`Client`]: super::Client
//! [`Routes`]: crate::core::call::Routes

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration as StdDuration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use udplock_protocol::{MessageType, Reply, Request, RequestBody, DATAGRAM_LEN_MAX};

use super::async_guard::AsyncGuards;
use super::lanes::new_session_id;
use super::operation::{
    capped_timer, copy_bytes, doubt_error, encode_request, ended, name_forbidden, Answer, Ended,
};
use super::receiving::ReplyData;
use super::routing::{send_members, CallRoutes, MembersSends, Membership};
use super::{
    acquire_body, check_id, core_now, lease_of, lock, renew_body, status_of, ClientConfig, Lease,
    LockStatus, OUTSTANDING_MAX,
};
use crate::clock::BootInstant;
use crate::core::call::{
    lock_of, seal_mismatch, seal_of, Call, CallRequest, Doubts, Handled, Rejected, Seal, Settle,
};
use crate::core::retransmit::RttEstimator;
use crate::core::time::{Duration, Instant};
use crate::error::LockError;

/// Replies buffered per call before the receive task drops one (as if lost): a call gets at
/// most a WAITING or two and its final answer, so this is never reached but by duplicates.
const REPLIES_QUEUED_MAX: usize = 8;

/// Counters of an [`AsyncClient`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsyncStats {
    /// Copies sent again (retransmissions and keepalives).
    pub retransmits: u64,
    /// Datagrams received that answered no pending request (or found its queue full).
    pub dropped_datagrams: u64,
    /// CANCEL_WAITs sent for dropped acquires (spec §4.12).
    pub cancels: u64,
    /// Of those, the ones answered "removed from the queue".
    pub cancels_removed: u64,
    /// Of those, the ones that found the grant had crossed them (that hold was then
    /// released).
    pub cancels_crossed: u64,
}

/// A request waiting for its reply: the session it went in, its reply type, its channel.
struct Pending {
    session_id: u64,
    reply_type: MessageType,
    tx: mpsc::Sender<ReplyData>,
}

pub(super) struct Inner {
    socket: UdpSocket,
    pub(super) config: ClientConfig,
    /// Its routes and its discovery of the members: the blocking client's own
    /// (`routing.rs`, spec §7.1.8).
    membership: Membership,
    rtt: Mutex<RttEstimator>,
    pub(super) epoch: BootInstant,
    next_request_id: AtomicU64,
    /// Sessions with no request outstanding (see the module docs), each with the routes its
    /// last call used (checked with one atomic load when it is taken again).
    lanes_free: Mutex<Vec<(u64, Option<CallRoutes>)>>,
    /// Request id → the call waiting for it.
    pending: Mutex<HashMap<u64, Pending>>,
    doubts: Mutex<Doubts<Vec<u8>>>,
    retransmits: AtomicU64,
    dropped_datagrams: AtomicU64,
    cancels: AtomicU64,
    cancels_removed: AtomicU64,
    cancels_crossed: AtomicU64,
}

/// A lock client for tokio programs. Cheap to clone (one socket and one receive task for
/// all clones); every method is cancel-safe, and dropping a waiting
/// [`AsyncClient::acquire`] withdraws its place in the queue (see the module docs).
///
/// ```no_run
/// # async fn f(servers: Vec<std::net::SocketAddr>) -> Result<(), udplock::LockError> {
/// let client = udplock::client::AsyncClient::new(udplock::ClientConfig::new(servers)).await?;
/// let lease = client.acquire("orders/42", "worker-7", 1_000, Some(10_000)).await?;
/// // ... fence writes with lease.fencing_token ...
/// client.release("orders/42", "worker-7").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AsyncClient {
    pub(super) inner: Arc<Inner>,
    /// What this client's lock guards share, created at the first guard (`async_guard.rs`);
    /// one for all clones.
    pub(super) guards: Arc<OnceLock<Arc<AsyncGuards>>>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("servers", &self.inner.config.servers)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AsyncClient {
    /// Opens one socket for all of `config.servers` (on the current tokio runtime).
    pub async fn new(config: ClientConfig) -> Result<AsyncClient, LockError> {
        config.validate()?;
        let v6 = config.servers.iter().any(SocketAddr::is_ipv6);
        let local: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(|e| {
            LockError::InternalError(format!("cannot open a UDP socket for the client: {e}"))
        })?;
        let inner = Arc::new(Inner {
            socket,
            membership: Membership::new(&config.servers, config.shards, v6),
            rtt: Mutex::new(RttEstimator::new(config.retransmit)),
            config,
            epoch: BootInstant::now(),
            next_request_id: AtomicU64::new(1),
            lanes_free: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            doubts: Mutex::new(Doubts::new()),
            retransmits: AtomicU64::new(0),
            dropped_datagrams: AtomicU64::new(0),
            cancels: AtomicU64::new(0),
            cancels_removed: AtomicU64::new(0),
            cancels_crossed: AtomicU64::new(0),
        });
        Ok(AsyncClient {
            inner,
            guards: Arc::new(OnceLock::new()),
        })
    }

    /// Counters.
    pub fn stats(&self) -> AsyncStats {
        let i = &self.inner;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        AsyncStats {
            retransmits: load(&i.retransmits),
            dropped_datagrams: load(&i.dropped_datagrams),
            cancels: load(&i.cancels),
            cancels_removed: load(&i.cancels_removed),
            cancels_crossed: load(&i.cancels_crossed),
        }
    }

    /// The addresses this client's requests may go to: after discovery every alive member
    /// of the cluster, then the configured servers (as
    /// [`Client::candidates`](super::Client::candidates)).
    pub fn candidates(&self) -> Vec<SocketAddr> {
        self.inner.membership.candidates()
    }

    /// [`Client::acquire`](super::Client::acquire) as a future: takes the lock for
    /// `client_id`, waiting up to `timeout_ms` in the server's queue. Dropping the future
    /// while it waits withdraws the wait (CANCEL_WAIT, spec §4.12) and releases a grant
    /// that crossed the withdrawal.
    pub async fn acquire(
        &self,
        resource_id: &str,
        client_id: &str,
        timeout_ms: u64,
        ttl_ms: Option<u32>,
    ) -> Result<Lease, LockError> {
        let body = acquire_body(resource_id, client_id, timeout_ms, ttl_ms)?;
        let timeout = timeout_ms + self.inner.config.grace_ms;
        let answer = Inner::call(&self.inner, body, timeout).await?;
        Ok(lease_of(
            resource_id,
            client_id,
            &answer,
            &self.inner.config,
            self.inner.epoch,
        ))
    }

    /// Takes the lock only if it is free (or already ours): never waits in the queue.
    pub async fn try_acquire(
        &self,
        resource_id: &str,
        client_id: &str,
        ttl_ms: Option<u32>,
    ) -> Result<Lease, LockError> {
        self.acquire(resource_id, client_id, 0, ttl_ms).await
    }

    /// Gives back one hold; returns the holds left. See
    /// [`Client::release`](super::Client::release) for a release whose outcome is unknown.
    pub async fn release(&self, resource_id: &str, client_id: &str) -> Result<u32, LockError> {
        self.inner.release(resource_id, client_id).await
    }

    /// Extends the lease of a lock `client_id` holds.
    pub async fn renew(
        &self,
        resource_id: &str,
        client_id: &str,
        ttl_ms: Option<u32>,
    ) -> Result<Lease, LockError> {
        let body = renew_body(resource_id, client_id, ttl_ms)?;
        let timeout = self.inner.config.request_timeout_ms;
        let answer = Inner::call(&self.inner, body, timeout).await?;
        Ok(lease_of(
            resource_id,
            client_id,
            &answer,
            &self.inner.config,
            self.inner.epoch,
        ))
    }

    /// Reads a lock's holder, hold count, token, remaining TTL and waiters.
    pub async fn status(&self, resource_id: &str) -> Result<LockStatus, LockError> {
        check_id("resource_id", resource_id)?;
        let body = RequestBody::Status {
            resource: resource_id.as_bytes(),
        };
        let timeout = self.inner.config.request_timeout_ms;
        let answer = Inner::call(&self.inner, body, timeout).await?;
        Ok(status_of(resource_id, &answer.reply))
    }
}

/// Whether `reply` may answer a request of `session_id` answered by `reply_type` (spec
/// §7.1.4: its session, and its reply type or ERROR_REPLY; the call core checks the attempt
/// and the rest).
fn answers(reply: &Reply<'_>, session_id: u64, reply_type: MessageType) -> bool {
    reply.session_id == session_id
        && (reply.msg_type == reply_type || reply.msg_type == MessageType::ErrorReply)
}

/// Removes a request from the pending map however its call ends.
struct Registration<'a> {
    inner: &'a Inner,
    request_id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.request_id);
    }
}

/// A waiting ACQUIRE that has no final answer yet: dropped armed (its future was dropped),
/// it withdraws the wait with CANCEL_WAIT from a spawned task (see the module docs).
struct WaitGuard {
    inner: Arc<Inner>,
    session_id: u64,
    request_id: u64,
    resource: Vec<u8>,
    client: Vec<u8>,
    armed: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: the wait runs out at the server (module docs). The lane is not
            // given back: its request may still be outstanding.
            return;
        };
        let inner = Arc::clone(&self.inner);
        let (session_id, request_id) = (self.session_id, self.request_id);
        let resource = std::mem::take(&mut self.resource);
        let client = std::mem::take(&mut self.client);
        runtime.spawn(async move {
            inner
                .withdraw(&resource, &client, session_id, request_id)
                .await;
        });
    }
}

impl Inner {
    pub(super) fn now(&self) -> Instant {
        core_now(self.epoch)
    }

    /// A free lane, with the client's current routes: the ones its last call used if they
    /// still are (one atomic load), as the blocking client's `lanes.rs`.
    fn take_lane(&self) -> (u64, CallRoutes) {
        let free = lock(&self.lanes_free).pop();
        let (session_id, routes) = free.unwrap_or_else(|| (new_session_id(), None));
        let routes = match routes {
            Some(mut routes) => {
                self.membership.routes_changed(&mut routes);
                routes
            }
            None => self.membership.routes(),
        };
        (session_id, routes)
    }

    fn give_lane(&self, session_id: u64, routes: Option<CallRoutes>) {
        let mut free = lock(&self.lanes_free);
        if free.len() < OUTSTANDING_MAX {
            free.push((session_id, routes));
        }
    }

    /// The start of a call and every timeout: a member-table refresh, if one is wanted
    /// and due (one relaxed load when none is), sent at once.
    fn poll_discovery(&self, now: Instant) {
        self.send_members(self.membership.poll_discovery(now));
    }

    /// MEMBERS requests, sent without waiting: a datagram the socket cannot take now is a
    /// lost one (the next trigger asks again).
    fn send_members(&self, requests: MembersSends) {
        if !requests.is_empty() {
            send_members(requests, |buf, to| self.socket.try_send_to(buf, to));
        }
    }

    /// One operation, as the blocking client's `Client::call`: settle any doubt on its lock,
    /// take a lane, run the request's call, map its outcome (spec §7.1.5).
    async fn call(
        self: &Arc<Self>,
        body: RequestBody<'_>,
        timeout_ms: u64,
    ) -> Result<Answer, LockError> {
        self.call_capped(body, timeout_ms, None).await
    }

    /// [`Inner::call`] with the retransmission timeout capped at `rto_cap`, as the blocking
    /// client's `Client::call_capped` (the guards' renewals).
    pub(super) async fn call_capped(
        self: &Arc<Self>,
        body: RequestBody<'_>,
        timeout_ms: u64,
        rto_cap: Option<Duration>,
    ) -> Result<Answer, LockError> {
        let start = self.now();
        self.poll_discovery(start);
        let deadline = start + Duration::from_millis(timeout_ms);
        if let Some((resource, client)) = lock_of(&body) {
            self.settle_doubts(resource, client, deadline).await?;
        }
        let release = matches!(body, RequestBody::Release { .. });
        if release && lock(&self.doubts).is_full() {
            return Err(LockError::Overloaded { retry_after_ms: 0 });
        }
        let (session_id, mut routes) = self.take_lane();
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            session_id,
            request_id,
            attempt: 0,
            body,
        };
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        let len = encode_request(&request, self.config.client_key.as_ref(), &mut buf)?;
        let datagram = &mut buf[..len];
        let timer = capped_timer(&lock(&self.rtt), rto_cap);
        let grace = Duration::from_millis(self.config.grace_ms);
        let sealed = self.config.client_key.is_some();
        let mut call = Call::new(
            self.now(),
            CallRequest::of(&request, &routes, self.config.lease_ms_max).sealed(sealed),
            timer,
            deadline,
            grace,
            &routes,
        );
        let mut guard = match body {
            RequestBody::Acquire {
                resource,
                client,
                wait_ms,
                ..
            } if wait_ms > 0 => Some(WaitGuard {
                inner: Arc::clone(self),
                session_id,
                request_id,
                resource: resource.to_vec(),
                client: client.to_vec(),
                armed: true,
            }),
            _ => None,
        };
        let reply = self.exchange(&mut call, &mut routes, datagram).await;
        // Ended: nothing left to withdraw, and the lane is free again (or keeps a doubt).
        if let Some(guard) = guard.as_mut() {
            guard.armed = false;
        }
        let outcome = call
            .outcome()
            .expect("an exchange ends with the call's outcome");
        // No reply at all: the candidates may be stale (routing.rs, "Discovery").
        self.membership.check_outcome(outcome);
        match ended(outcome, reply) {
            Ended::Done(result) => {
                self.give_lane(session_id, Some(routes));
                result.map_err(|e| name_forbidden(e, &body))
            }
            Ended::InDoubt(cause) => {
                let RequestBody::Release { resource, client } = body else {
                    unreachable!("only a RELEASE ends in doubt");
                };
                // Kept with its lane, as in the blocking client (spec §7.1.5).
                lock(&self.doubts).keep(resource, client, datagram.to_vec(), call);
                Err(doubt_error(cause))
            }
        }
    }

    /// Runs `call` (whose request is `datagram`) on `routes` (followed to the client's newer
    /// ones whenever discovery replaces them: spec §7.1.8 rule 2) to its outcome: sends what
    /// it readies, and waits for a reply or its next timer, whichever comes first. Returns
    /// the reply that ended it, if one did.
    async fn exchange(
        &self,
        call: &mut Call,
        routes: &mut CallRoutes,
        datagram: &mut [u8],
    ) -> Option<ReplyData> {
        if call.outcome().is_some() {
            return None; // the deadline had passed before the first copy
        }
        let request = *call.request();
        let (tx, mut rx) = mpsc::channel(REPLIES_QUEUED_MAX);
        let reply_type = request.msg_type.reply_type().expect("a request type");
        lock(&self.pending).insert(
            request.request_id,
            Pending {
                session_id: request.session_id,
                reply_type,
                tx,
            },
        );
        let _registration = Registration {
            inner: self,
            request_id: request.request_id,
        };
        self.flush(call, datagram).await;
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        loop {
            let wake = call.poll_timeout()?;
            let wait = wake.saturating_since(self.now());
            let sleep = tokio::time::sleep(StdDuration::from_micros(wait.as_micros()));
            let reply = tokio::select! {
                biased;
                reply = rx.recv() => reply.expect("the registration holds the sender"),
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((len, from)) = received else {
                        continue; // an ICMP error or a transient failure: a lost datagram
                    };
                    let now = self.now();
                    let datagram = &buf[..len];
                    // The seal's MAC (spec §7.1.10) is checked where the bytes are.
                    let seal = || seal_of(self.config.client_key.as_ref(), datagram);
                    match Reply::decode(datagram) {
                        Ok(reply)
                            if reply.request_id == request.request_id
                                && answers(&reply, request.session_id, reply_type) =>
                        {
                            ReplyData::new(&reply, now, from, seal())
                        }
                        Ok(reply) => {
                            self.dispatch(&reply, now, from, seal);
                            continue;
                        }
                        Err(_) => {
                            // Not a lock reply: a page of the member table, or junk.
                            match self.membership.handle_members_reply(&buf[..len], from) {
                                Some(requests) => self.send_members(requests),
                                None => {
                                    self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            continue;
                        }
                    }
                }
                () = sleep => {
                    let now = self.now();
                    self.membership.follow_routes(call, routes);
                    call.handle_timeout(now, routes);
                    self.flush(call, datagram).await;
                    self.membership.check_silence(routes);
                    self.poll_discovery(now);
                    continue;
                }
            };
            self.membership.follow_routes(call, routes);
            // As the blocking client: not for a reply dropped for its seal (spec §7.1.10).
            if seal_mismatch(call.request(), &reply.wire(), reply.seal).is_none()
                && self.membership.check_not_leader(&reply, routes)
            {
                // A refresh asked by a hint starts at once (spec §7.1.8 rule 3).
                self.poll_discovery(reply.received_at);
            }
            let handled = {
                let mut rtt = lock(&self.rtt);
                let wire = reply.wire();
                let seal = reply.seal;
                call.handle_reply(reply.received_at, reply.from, &wire, seal, routes, &mut rtt)
            };
            if let Handled::Rejected(why) = handled {
                // Forged or broken (spec §7.1.4): the call goes on for the genuine answer.
                log::debug!("reply from {} dropped: {why}", reply.from);
                if why == Rejected::NotFromANode {
                    self.membership.check_source(reply.from);
                }
            }
            if handled.ignored() {
                self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
            }
            self.flush(call, datagram).await;
            if call.outcome().is_some() {
                return Some(reply);
            }
        }
    }

    /// A reply another call waits for: handed to it with its `seal` (read only then), or
    /// dropped (and counted).
    fn dispatch(&self, reply: &Reply<'_>, now: Instant, from: SocketAddr, seal: impl Fn() -> Seal) {
        let delivered = lock(&self.pending).get(&reply.request_id).is_some_and(|p| {
            answers(reply, p.session_id, p.reply_type)
                && p.tx
                    .try_send(ReplyData::new(reply, now, from, seal()))
                    .is_ok()
        });
        if !delivered {
            self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends the copies `call` readied, the attempt patched into the header (the core
    /// recorded the send time already, so the lease never counts from later than the send).
    async fn flush(&self, call: &mut Call, datagram: &mut [u8]) {
        let mut tokened = [0u8; DATAGRAM_LEN_MAX];
        while let Some(copy) = call.poll_transmit() {
            if copy.attempt > 0 {
                self.retransmits.fetch_add(1, Ordering::Relaxed);
            }
            let key = self.config.client_key.as_ref();
            let bytes = copy_bytes(&copy, datagram, &mut tokened, key);
            if let Err(e) = self.socket.send_to(bytes, copy.to).await {
                // A lost datagram: the retransmission timer and the deadline cover it.
                log::debug!("send to {} failed: {e}", copy.to);
            }
        }
    }

    pub(super) async fn release(
        self: &Arc<Self>,
        resource_id: &str,
        client_id: &str,
    ) -> Result<u32, LockError> {
        check_id("resource_id", resource_id)?;
        check_id("client_id", client_id)?;
        let body = RequestBody::Release {
            resource: resource_id.as_bytes(),
            client: client_id.as_bytes(),
        };
        let answer = Inner::call(self, body, self.config.request_timeout_ms).await?;
        Ok(answer.reply.hold_count)
    }

    /// Spec §7.1.5, as the blocking client's `settle_doubts`: before an ACQUIRE, RENEW or
    /// RELEASE of the lock, each RELEASE left in doubt on it is sent again until settled.
    async fn settle_doubts(
        &self,
        resource: &[u8],
        client: &[u8],
        deadline: Instant,
    ) -> Result<(), LockError> {
        let free_lane = |session_id| self.give_lane(session_id, None);
        loop {
            let resend = {
                let mut doubts = lock(&self.doubts);
                if doubts.is_empty() {
                    return Ok(());
                }
                match doubts.begin_settle(self.now(), resource, client, free_lane) {
                    Settle::Clear => return Ok(()),
                    Settle::Busy => return Err(LockError::ReleaseInDoubt),
                    Settle::Resend(resend) => resend,
                }
            };
            let mut routes = self.membership.routes();
            let mut call = {
                let rtt = lock(&self.rtt);
                resend.call(self.now(), deadline, &rtt, &routes)
            };
            let mut datagram = resend.payload;
            // Abandoned if this future is dropped meanwhile: the doubt stays, unsettled.
            let settling = SettleGuard {
                inner: self,
                request_id: call.request().request_id,
                armed: true,
            };
            self.exchange(&mut call, &mut routes, &mut datagram).await;
            std::mem::forget(settling);
            if !lock(&self.doubts).end_settle(call, free_lane) {
                return Err(LockError::ReleaseInDoubt);
            }
        }
    }

    /// A dropped acquire's wait, withdrawn (spec §4.12): CANCEL_WAIT on another lane; a
    /// grant that crossed it is released. The acquire's lane is free again afterwards.
    async fn withdraw(
        self: &Arc<Self>,
        resource: &[u8],
        client: &[u8],
        session_id: u64,
        request_id: u64,
    ) {
        self.cancels.fetch_add(1, Ordering::Relaxed);
        let body = RequestBody::CancelWait {
            resource,
            client,
            target_session: session_id,
            target_request: request_id,
        };
        let answer = Inner::call(self, body, self.config.request_timeout_ms).await;
        match answer {
            Ok(answer) => {
                self.give_lane(session_id, None);
                let reply = &answer.reply;
                self.cancels_removed
                    .fetch_add(u64::from(reply.waiter_count), Ordering::Relaxed);
                if reply.hold_count > 0 {
                    self.cancels_crossed.fetch_add(1, Ordering::Relaxed);
                    let (Ok(resource), Ok(client)) =
                        (std::str::from_utf8(resource), std::str::from_utf8(client))
                    else {
                        return; // ids come from &str arguments
                    };
                    if let Err(e) = self.release(resource, client).await {
                        log::debug!("releasing a grant that crossed a cancel failed: {e}");
                    }
                }
            }
            // The outcome of the acquire is unknown: its lane stays out of the pool, and a
            // hold it may have got ends with its lease (spec §7.1.5).
            Err(e) => log::debug!("CANCEL_WAIT failed: {e}"),
        }
    }
}

/// Gives a doubt being sent again back to the table, unsettled, if the future sending it is
/// dropped (forgotten once the exchange ended).
struct SettleGuard<'a> {
    inner: &'a Inner,
    request_id: u64,
    armed: bool,
}

impl Drop for SettleGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.inner.doubts).abandon_settle(self.request_id);
        }
    }
}
