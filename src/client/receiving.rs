//! The receive side of a [`Client`]: the pending map, the receiver role and its hand-off
//! between the calling threads, and the checks a reply must pass before it reaches a call.
//!
//! # The reply read by the thread that waits for it: the receive hand-off
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
//! guess), and has that request's reply type or ERROR_REPLY (spec §7.1.4). The receiver then
//! reads its client-auth trailer with the client's key (`seal_of`, one HMAC for a sealed
//! reply), and its call checks the rest (`crate::core::call::checks`): that it is sealed as
//! its request requires (spec §7.1.10), that it comes from a node the client knows
//! (after a failover another node than the one a copy went to may answer, see `routing.rs`),
//! and that its fields do not contradict the request.
//!
//! An ACQUIRE that has to wait is answered WAITING at once (spec §6.3): not a final answer,
//! so the caller keeps waiting, but it switches the request from loss-recovery retransmits
//! (RTO, doubling) to keepalives paced by the lease (at most every 100 ms), which refresh the
//! reply address and the send time the lease is counted from. A final answer that arrives
//! while a WAITING is still stored replaces it.
//!
//! Timer precision: a parked caller wakes precisely (`park_timeout`), but the receiver's wait
//! is the socket's receive timeout (`SO_RCVTIMEO`), which the kernel rounds up to its tick
//! (1–4 ms on Linux). A retransmission made by the receiving thread can therefore be up to a
//! tick late. That only matters after a loss; the reply path itself is never delayed.
//!
//! [`Lease`]: super::Lease
//! [`LockStatus`]: super::LockStatus

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::TryLockError;
use std::thread::{self, Thread};
use std::time::Duration as StdDuration;

use udplock_protocol::{Flags, Hint, MessageType, Reply, Status, DATAGRAM_LEN_MAX, ID_LEN_MAX};

use super::routing::CallRoutes;
use super::{lock, std_duration, Client, OUTSTANDING_MAX};
use crate::core::call::{seal_of, Call, Seal};
use crate::core::time::{Duration, Instant};
use crate::error::LockError;

/// Pending-map entries allocated up front, so the first requests do not allocate.
pub(super) const PENDING_CAPACITY_INITIAL: usize = 64;

/// How long a receiver pauses after an unexpected socket error before trying again, so a
/// broken socket cannot make it spin. Bounded by the caller's deadline in every case.
const RECV_ERROR_PAUSE: StdDuration = StdDuration::from_millis(1);

/// Request id → waiting request.
pub(super) type PendingMap = HashMap<u64, Pending, BuildHasherDefault<RequestIdHasher>>;

/// A request waiting for its reply.
pub(super) struct Pending {
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
pub(super) struct ReceiverState {
    /// The socket's current receive timeout, so it is set only when it changes.
    pub(super) read_timeout: StdDuration,
}

/// An owned copy of a reply's fields, so it can cross from the receiver to another thread.
#[derive(Clone, Copy)]
pub(super) struct ReplyData {
    msg_type: MessageType,
    session_id: u64,
    request_id: u64,
    pub(super) flags: Flags,
    attempt: u16,
    status: Status,
    pub(super) hold_count: u32,
    pub(super) fencing_token: u64,
    pub(super) lease_ms: u32,
    pub(super) waiter_count: u32,
    retry_after_ms: u32,
    /// The reply's hint, as sent (a leader address is not yet checked for use).
    hint: Hint,
    holder_len: u8,
    holder: [u8; ID_LEN_MAX],
    /// When the receiver read the datagram (for the RTT sample; a thread hop adds nothing).
    pub(super) received_at: Instant,
    /// The datagram's source address: a node the client knows, or the call drops the reply
    /// (spec §7.1.4 rule 5); which node answered (see `routing.rs`).
    pub(super) from: SocketAddr,
    /// Its client-auth trailer as the client's key reads it (spec §7.1.10), for the call.
    pub(super) seal: Seal,
}

impl ReplyData {
    pub(super) fn new(
        reply: &Reply<'_>,
        received_at: Instant,
        from: SocketAddr,
        seal: Seal,
    ) -> ReplyData {
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
            seal,
        }
    }

    pub(super) fn holder(&self) -> &[u8] {
        &self.holder[..usize::from(self.holder_len)]
    }

    /// The reply as it was decoded, for the call core.
    pub(super) fn wire(&self) -> Reply<'_> {
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
    pub(super) fn error(&self) -> Option<LockError> {
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

/// Hashes request ids with one multiplication (Fibonacci hashing). Ids are sequential and
/// chosen by this client, so there is nothing to defend against, and SipHash would cost more
/// than the rest of the map operation.
#[derive(Default)]
pub(super) struct RequestIdHasher(u64);

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
pub(super) struct PendingGuard<'a> {
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

impl Client {
    /// Enters a request in the pending map (step 1).
    pub(super) fn register(
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

    /// Waits for this request's reply: as the receiver if the receive lock is free
    /// (step 2), parked otherwise (step 3). `None` when the call ended at a timeout.
    pub(super) fn await_reply(
        &self,
        request_id: u64,
        datagram: &mut [u8],
        call: &mut Call,
        routes: &mut CallRoutes,
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
                return self.receive(&mut state, request_id, datagram, call, routes);
            }
            let now = self.now();
            let wake_at = self.tick(call, routes, datagram, now)?;
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
        routes: &mut CallRoutes,
    ) -> Option<ReplyData> {
        // One byte more than the longest valid datagram, so an oversized one is seen as such.
        let mut buf = [0u8; DATAGRAM_LEN_MAX + 1];
        let mut error_logged = false;
        loop {
            let now = self.now();
            let wake_at = self.tick(call, routes, datagram, now)?;
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
    /// recorded for the call to check (see the module docs).
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
            // Not a lock reply: a page of the member table this client asked for, or junk.
            if self.handle_members_reply(datagram, from) {
                return None;
            }
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
        // The MAC is checked here, where the bytes are, once the reply is known to answer a
        // pending request (junk costs no HMAC); the call judges the verdict.
        let seal = seal_of(self.config.client_key.as_ref(), datagram);
        let data = ReplyData::new(&reply, received_at, from, seal);
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
