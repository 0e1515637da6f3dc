//! One operation of a [`Client`], from its request to its outcome: any doubt on its lock
//! settled first, a lane taken, the request encoded once into a stack buffer, its [`Call`]
//! (the rules, in the pure call core) run against the socket — the copies it readies sent,
//! the replies and the timeouts handed to it — and its outcome mapped to [`LockError`].

use std::sync::atomic::Ordering;

use udplock_protocol::header::field as header_field;
use udplock_protocol::{
    with_address_token, ClientKey, MessageType, Request, RequestBody, CLIENT_AUTH_TRAILER_LEN,
    DATAGRAM_LEN_MAX,
};

use super::receiving::ReplyData;
use super::routing::CallRoutes;
use super::{lock, Client};
use crate::core::call::{
    lock_of, seal_mismatch, Call, CallRequest, DoubtCause, Handled, Outcome, Rejected, Transmit,
};
use crate::core::retransmit::{RequestTimer, RttEstimator};
use crate::core::time::{Duration, Instant};
use crate::error::LockError;

/// A successful reply and the instant its lease (if any) starts.
pub(super) struct Answer {
    pub(super) reply: ReplyData,
    pub(super) lease_start: Instant,
}

/// How a call's outcome reads for the caller (spec §7.1.5): the blocking and the async
/// client map it with this one function.
// Returned once per call and matched at once, like the `Result` it wraps: boxing the answer
// would cost an allocation per call on the hot path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Ended {
    /// The answer, or the error it stands for.
    Done(Result<Answer, LockError>),
    /// A RELEASE whose outcome is unknown: the caller keeps it as a doubt, then reports
    /// [`doubt_error`].
    InDoubt(DoubtCause),
}

/// The outcome of a call that ended, with the reply that ended it if one did.
pub(super) fn ended(outcome: Outcome, reply: Option<ReplyData>) -> Ended {
    match outcome {
        Outcome::Answered { lease_start, .. } => {
            let reply = reply.expect("a final answer came in a reply");
            Ended::Done(match reply.error() {
                Some(error) => Err(error),
                None => Ok(Answer { reply, lease_start }),
            })
        }
        Outcome::GaveUp { overloaded } => Ended::Done(Err(match overloaded {
            Some(retry_after_ms) => LockError::Overloaded { retry_after_ms },
            None => LockError::Unavailable,
        })),
        Outcome::InDoubt(cause) => Ended::InDoubt(cause),
    }
}

/// `error` with the client id of the request `body` named, if the servers refused it as
/// FORBIDDEN (the reply names no id; the caller wants to know which one the key does not
/// cover). Both clients.
pub(super) fn name_forbidden(error: LockError, body: &RequestBody<'_>) -> LockError {
    match error {
        LockError::Forbidden { client_id: None } => LockError::Forbidden {
            client_id: body
                .client()
                .map(|id| String::from_utf8_lossy(id).into_owned()),
        },
        error => error,
    }
}

/// What a caller is told of a RELEASE left in doubt (spec §7.1.5).
pub(super) fn doubt_error(cause: DoubtCause) -> LockError {
    match cause {
        DoubtCause::Silence => LockError::Unavailable,
        DoubtCause::Overloaded { .. } | DoubtCause::InternalError | DoubtCause::Unsealed => {
            LockError::ReleaseInDoubt
        }
    }
}

/// A request's retransmission timer from the RTT estimate, its timeout capped at `rto_cap`
/// (both clients; see [`Client::call_capped`]).
pub(super) fn capped_timer(rtt: &RttEstimator, rto_cap: Option<Duration>) -> RequestTimer {
    match rto_cap {
        None => rtt.timer(),
        Some(cap) => RequestTimer::new(rtt.rto().min(cap), rtt.config().rto_max.min(cap)),
    }
}

impl Client {
    /// One operation: settle any doubt on its lock, then run the request's call (the rules
    /// are the call core's, `crate::core::call`) and map its outcome (spec §7.1.5).
    pub(super) fn call(&self, body: RequestBody<'_>, timeout_ms: u64) -> Result<Answer, LockError> {
        self.call_capped(body, timeout_ms, None)
    }

    /// [`Client::call`] with the retransmission timeout capped at `rto_cap`: a guard's
    /// renewal of a short lease must get several copies through a lossy network before the
    /// lease's validity runs out, even when load has pushed the RTT estimate up (the renewal
    /// rules choose the cap, `crate::core::renewal`).
    pub(super) fn call_capped(
        &self,
        body: RequestBody<'_>,
        timeout_ms: u64,
        rto_cap: Option<Duration>,
    ) -> Result<Answer, LockError> {
        let reply_type = body.kind().reply_type();
        let start = self.now();
        self.poll_discovery(start);
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
        let len = encode_request(&request, self.config.client_key.as_ref(), &mut buf)?;
        let datagram = &mut buf[..len];
        let timer = capped_timer(&lock(&self.rtt), rto_cap);
        let routes = lane.routes();
        let sealed = self.config.client_key.is_some();
        let mut call = Call::new(
            self.now(),
            CallRequest::of(&request, routes, self.config.lease_ms_max).sealed(sealed),
            timer,
            deadline,
            Duration::from_millis(self.config.grace_ms),
            routes,
        );
        let reply = self.exchange(&mut call, routes, reply_type, datagram)?;
        let outcome = call
            .outcome()
            .expect("an exchange ends with the call's outcome");
        // No reply at all: the candidates may be stale (routing.rs, "Discovery").
        self.check_outcome(outcome);
        match ended(outcome, reply) {
            Ended::Done(result) => result.map_err(|e| name_forbidden(e, &body)),
            Ended::InDoubt(cause) => {
                let RequestBody::Release { resource, client } = body else {
                    unreachable!("only a RELEASE ends in doubt");
                };
                // The release may still take effect, through a copy in flight or one in a
                // node's log: keep it, with its lane (no other request uses that session until
                // the doubt is settled or forgotten), and settle it before this client touches
                // the lock again (spec §7.1.5).
                lane.retire();
                lock(&self.doubts).keep(resource, client, datagram.to_vec(), call);
                Err(doubt_error(cause))
            }
        }
    }

    /// Runs `call` (whose request is `datagram`, answered by `reply_type`) on `routes` (those
    /// it was created with, followed to the client's newer ones whenever discovery replaces
    /// them: spec §7.1.8 rule 2) to its outcome: sends what it readies, hands it the replies
    /// and the timeouts. Returns the reply that ended it, if one did. `Err` only for this
    /// client's own limit on requests in flight (nothing sent).
    pub(super) fn exchange(
        &self,
        call: &mut Call,
        routes: &mut CallRoutes,
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
        while let Some(reply) = self.await_reply(request.request_id, datagram, call, routes) {
            self.follow_routes(call, routes);
            // Not for a NOT_LEADER the call will drop for its seal (spec §7.1.10): a forger
            // without the key makes discovery read nothing.
            if seal_mismatch(call.request(), &reply.wire(), reply.seal).is_none() {
                self.check_not_leader(&reply, routes);
            }
            let handled = {
                let mut rtt = lock(&self.rtt);
                call.handle_reply(
                    reply.received_at,
                    reply.from,
                    &reply.wire(),
                    reply.seal,
                    routes,
                    &mut rtt,
                )
            };
            match handled {
                Handled::Dropped => {
                    self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                }
                Handled::Rejected(why) => {
                    // Forged or broken (spec §7.1.4): the call goes on for the genuine answer.
                    log::debug!("reply from {} dropped: {why}", reply.from);
                    self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                    if why == Rejected::NotFromANode {
                        self.check_source(reply.from);
                    }
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

    /// Sends the copy `call` readied, if any, with its attempt number patched into the
    /// header. The core recorded its send time already (the lease counts from it, so it is
    /// never later than the real send).
    fn flush(&self, call: &mut Call, datagram: &mut [u8]) {
        let mut tokened = [0u8; DATAGRAM_LEN_MAX];
        while let Some(copy) = call.poll_transmit() {
            if copy.attempt > 0 {
                self.retransmits.fetch_add(1, Ordering::Relaxed);
            }
            let key = self.config.client_key.as_ref();
            let bytes = copy_bytes(&copy, datagram, &mut tokened, key);
            if let Err(e) = self.socket.send_to(bytes, copy.to) {
                // A failed send is a lost datagram: the retransmission timer covers it, and
                // the deadline turns a persistent failure into Unavailable.
                log::debug!("send to {} failed: {e}", copy.to);
            }
        }
    }

    /// Gives `call` the time if one of its timers is due, and sends what it readies. Returns
    /// when to come back, `None` once the call has ended.
    pub(super) fn tick(
        &self,
        call: &mut Call,
        routes: &mut CallRoutes,
        datagram: &mut [u8],
        now: Instant,
    ) -> Option<Instant> {
        if call.poll_timeout()? <= now {
            self.follow_routes(call, routes);
            call.handle_timeout(now, routes);
            self.flush(call, datagram);
            self.check_silence(routes);
            self.poll_discovery(now);
        }
        call.poll_timeout()
    }
}

/// The bytes of `copy` (spec §7.1.3, §7.1.9, §7.1.10): the request in `datagram` with the
/// copy's attempt number patched into its header and, for a node that gave this session an
/// address token, the token after the body (written into `tokened`; the request's own bytes
/// stay as they are for other nodes). A token that does not fit leaves the copy without it:
/// the node answers RETRY, and the call's bound on those ends the loop.
///
/// With a client `key`, every copy is sealed anew into `tokened` (the MAC covers the attempt
/// number and the token) from `datagram`, the request as [`encode_request`] wrote it,
/// unsealed: one copy of its bytes and one HMAC per copy sent, nothing decoded or encoded
/// again ([`ClientKey::seal_request`]; the longest, a KEEPALIVE of 64 tokens with a token
/// and the trailer, is 596 bytes, within `DATAGRAM_LEN_MAX`). Shared by the blocking and
/// the async client.
pub(super) fn copy_bytes<'a>(
    copy: &Transmit,
    datagram: &'a mut [u8],
    tokened: &'a mut [u8; DATAGRAM_LEN_MAX],
    key: Option<&ClientKey>,
) -> &'a [u8] {
    datagram[header_field::ATTEMPT].copy_from_slice(&copy.attempt.to_be_bytes());
    let with_token = copy
        .token
        .and_then(|token| with_address_token(datagram, &token, tokened).ok());
    let Some(key) = key else {
        return match with_token {
            Some(len) => &tokened[..len],
            None => datagram,
        };
    };
    let len = with_token.unwrap_or_else(|| {
        tokened[..datagram.len()].copy_from_slice(datagram);
        datagram.len()
    });
    // This client encoded the request (a lock request, unsealed), and sealed it fits.
    let len = (key.seal_request(&mut tokened[..], len))
        .expect("the client's own request seals within DATAGRAM_LEN_MAX");
    &tokened[..len]
}

/// The request, into `buf`, unsealed and without a token, as [`copy_bytes`] expects it:
/// each copy gets its attempt, token and (with a client key) seal there. With a `key`, it is
/// padded 24 bytes short of its sealed length ([`Request::padded_len_auth`], spec §2.2,
/// §7.1.10), which must fit in a datagram: checked here, so that every copy of it can be
/// sealed. Both clients.
pub(super) fn encode_request(
    request: &Request<'_>,
    key: Option<&ClientKey>,
    buf: &mut [u8; DATAGRAM_LEN_MAX],
) -> Result<usize, LockError> {
    debug_assert_eq!(request.attempt, 0, "a request's first copy");
    let failed = |e| LockError::InvalidArgument(format!("cannot encode the request: {e}"));
    match key {
        None => request.encode(buf).map_err(failed),
        Some(_) => {
            // Padded so that sealed it is `padded_len_auth` long (spec §2.2 rule 7).
            let sealed = request.padded_len_auth();
            if sealed > DATAGRAM_LEN_MAX {
                return Err(failed(udplock_protocol::EncodeError::TooLong));
            }
            (request.encode_padded(buf, sealed - CLIENT_AUTH_TRAILER_LEN)).map_err(failed)
        }
    }
}
