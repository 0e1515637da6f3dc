//! The client's call core: the life of one client operation, from its first copy to its
//! outcome, by the rules of spec §7.1 (sans-IO, in the shape of quinn-proto's `Connection`).
//!
//! One [`Call`] is one request (one session id and request id) on its way: where its copies
//! go (spec §7.1.7: the shard's leader as last known, NOT_LEADER hints, silent nodes and the
//! ring of configured servers), when they go (RFC 6298 through [`crate::core::retransmit`],
//! WAITING keepalives, OVERLOADED's retry-after, spec §7.1.3), which replies it accepts
//! (§7.1.4), when it gives up, and how it ended (§7.1.5). What one client's calls share lives
//! beside it: the route cache ([`Routes`]), the RTT estimator
//! ([`crate::core::retransmit::RttEstimator`]), the RELEASEs whose outcome is unknown
//! ([`Doubts`]) and the discovery of the cluster's nodes from member tables ([`Discovery`],
//! spec §7.1.8), which replaces the route cache's ring.
//!
//! Pure like every core: no IO, no clock, no randomness, no threads. The shell passes `now`
//! in, and after every input drains the outputs:
//!
//! ```text
//!  Call::new(now, request, timer, deadline) ──> poll_transmit() ─> (node, attempt) ─> socket
//!  handle_reply(now, from, &Reply)  ─┐          poll_timeout()  ─> when to call handle_timeout
//!  handle_timeout(now)              ─┴────────> outcome()       ─> Answered / GaveUp / InDoubt
//! ```
//!
//! A copy is only a destination and an attempt number ([`Transmit`]): the shell keeps the
//! request's bytes (or typed value) and patches the attempt into it, so nothing is copied or
//! allocated per request. `crate::client` drives one `Call` per calling thread, all of them
//! sharing one [`Routes`] (replaced when discovery changes the ring, spec §7.1.8: a call under
//! way goes on by the new one, [`Call::rebase`]); the simulator (`crate::sim`) drives the same `Call` for each of its
//! clients, so the rules it checks are the rules the real client follows.
//!
//! # The rules, in the order a reply meets them
//!
//! 1. A reply is accepted only if it names this call's session and request ids, has the
//!    request's reply type or ERROR_REPLY, and echoes an attempt that was sent (§7.1.4).
//!    Anything else is dropped ([`Handled::Dropped`]). Nor is one not sealed as the request
//!    requires (§7.1.10: a request sealed with a client key believes only that key's seal;
//!    one without a key only unsealed replies), one from an address that is no node the
//!    client knows, or one whose fields contradict the request (§7.1.4 rules 5 and 6,
//!    [`checks`]): [`Handled::Rejected`], and the call goes on for the genuine one. An
//!    unsealed final refusal of a sealed request (UNAUTHENTICATED, an ERROR_REPLY), which
//!    anyone who read the request's ids could forge, ends only an ACQUIRE not told WAITING
//!    or a STATUS; any other call rejects it and goes on, and a RELEASE still unanswered at
//!    its deadline is a doubt ([`DoubtCause::Unsealed`]): a forged refusal settles nothing.
//! 2. It yields an RTT sample if it answers the latest copy and did not wait in a queue.
//! 3. Its sender is alive: no longer suspect; the copies it answers were not lost (§7.1.7
//!    rule 4). A RETRY (§7.1.9), or an older server's UNSUPPORTED for a copy that carried an
//!    address token, is no answer: the token is kept (or forgotten) for the session and the
//!    node, and the same request goes again at once, at most [`RETRIES_AT_ONCE_MAX`] times
//!    per destination, with no back-off and no RTT sample. Every copy carries the token the
//!    session holds for its destination ([`Transmit::token`]).
//! 4. NOT_LEADER is never final (§7.1.7 rule 5): the same request goes on, to a hinted leader
//!    the client knows at once (at most [`REDIRECTS_FAST_MAX`] times between two other
//!    replies), to a suspect one or one it does not know on the timer (the latter not cached
//!    as the leader), without a hint to the next server on the ring (suspect or not) on the
//!    timer.
//! 5. Any other reply but ERROR_REPLY and OVERLOADED names the shard's leader (rule 6).
//! 6. WAITING is provisional (§6.3): keepalives instead of retransmissions, and the deadline
//!    moves to the server's wait plus the grace. OVERLOADED is not final either (§7.1.3): the
//!    same request again when the timer fires, not before the hinted delay.
//! 7. Anything else is the final answer; for a RELEASE, INTERNAL_ERROR settles nothing and
//!    leaves a doubt (§7.1.5).
//!
//! And the timer: at the deadline the call ends without an answer, and a RELEASE that ends
//! so is a doubt (§7.1.5) whatever the last reply was; otherwise, when the next copy is due it
//! leaves, first moving away from a node that left [`SILENT_SENDS_MAX`] copies in a row
//! unanswered (one, if already suspect). One back-off per request, wherever its copies go.

pub mod checks;
pub mod discovery;
pub mod doubts;
pub mod routes;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use udplock_protocol::{
    AddressToken, Flags, Hint, MessageType, Reply, Request, RequestBody, Status,
};

pub use self::checks::{
    contradiction, seal_mismatch, seal_of, Rejected, Seal, LEASE_MS_MAX_DEFAULT,
};
pub use self::discovery::{
    Discovery, MembersAsk, PageOutcome, CANDIDATES_MAX, FIRST_ROUNDS_MAX,
    HINTED_REFRESH_INTERVAL_MIN, REFRESH_INTERVAL_MIN,
};
pub use self::doubts::{lock_of, Doubts, Resend, Settle, DOUBTS_MAX};
pub use self::routes::{socket_addr_for, Routes, LEARNED_LEADERS_MAX};
use super::retransmit::{
    RequestTimer, RttEstimator, REDIRECTS_FAST_MAX, REQUEST_LIFETIME_MAX, SILENT_SENDS_MAX,
};
use super::time::{Duration, Instant};

/// How long after its start a client may rely on a lease of `lease_ms` (spec §6.4, "Lease
/// rule"): shortened by the clock-drift bound, since the client's and the server's clocks may
/// run at different rates, with the allowance rounded up so the client never believes longer
/// than allowed.
pub fn lease_validity(lease_ms: u32, drift_bound_ppm: u32) -> Duration {
    let lease_us = u64::from(lease_ms) * 1_000;
    let drift_us = (u128::from(lease_us) * u128::from(drift_bound_ppm)).div_ceil(1_000_000);
    let valid = Duration::from_micros(lease_us.saturating_sub(drift_us as u64));
    debug_assert!(drift_bound_ppm == 0 || lease_ms == 0 || valid.as_micros() < lease_us);
    valid
}

/// What the rules need to know of a request: its identity, its type, its resource's shard
/// and (for an ACQUIRE) how long the server may queue it. The request's bytes stay with the
/// shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallRequest {
    pub session_id: u64,
    pub request_id: u64,
    /// ACQUIRE, RELEASE, RENEW, STATUS, CONFIGURE or KEEPALIVE.
    pub msg_type: MessageType,
    /// The shard of its resource (a KEEPALIVE's: the one it names), an index into the route
    /// cache ([`Routes::shard`]).
    pub shard: usize,
    /// ACQUIRE: the longest the server may queue it (`wait_ms`); 0 for every other request.
    pub wait_ms: u32,
    /// ACQUIRE, RENEW, KEEPALIVE: the TTL asked (`ttl_ms`; 0: a default); 0 for the others.
    pub ttl_ms: u32,
    /// KEEPALIVE: how many tokens it lists; 0 for every other request.
    pub tokens: u16,
    /// The longest lease a reply may carry when the request asked for none, or for a
    /// re-entry or renewal (the server's `ttl_ms_max`, which the client does not ask for:
    /// its own setting stands for it). A reply above it is forged or broken ([`checks`]).
    pub lease_ms_max: u32,
    /// Its copies carry the client key's seal (flag AUTH, spec §7.1.10): only replies that
    /// key sealed answer it (an unsealed refusal only where a forged one cannot hurt),
    /// [`checks::seal_mismatch`].
    pub sealed: bool,
}

impl CallRequest {
    /// The call of `request`, routed by `routes`, believing no lease above `lease_ms_max`
    /// that the request did not ask for ([`CallRequest::lease_ms_max`]).
    pub fn of(request: &Request<'_>, routes: &Routes, lease_ms_max: u32) -> CallRequest {
        CallRequest {
            session_id: request.session_id,
            request_id: request.request_id,
            msg_type: request.body.msg_type(),
            // A KEEPALIVE names its shard (spec §4.11); the client checked it is in range.
            shard: match request.body.shard_named() {
                Some(shard) => shard as usize,
                None => routes.shard(request.body.resource()),
            },
            wait_ms: match request.body {
                RequestBody::Acquire { wait_ms, .. } => wait_ms,
                _ => 0,
            },
            ttl_ms: match request.body {
                RequestBody::Acquire { ttl_ms, .. }
                | RequestBody::Renew { ttl_ms, .. }
                | RequestBody::Keepalive { ttl_ms, .. } => ttl_ms,
                _ => 0,
            },
            tokens: match request.body {
                RequestBody::Keepalive { tokens, .. } => tokens.len() as u16,
                _ => 0,
            },
            lease_ms_max,
            sealed: false,
        }
    }

    /// The same request, its copies sealed with a client key if `sealed` (spec §7.1.10).
    pub fn sealed(self, sealed: bool) -> CallRequest {
        CallRequest { sealed, ..self }
    }

    fn is_release(&self) -> bool {
        self.msg_type == MessageType::Release
    }
}

/// One copy to send: the request with this attempt number, to this node, with this address
/// token after its body if there is one (flag ADDRESS_TOKEN, spec §3.1, §7.1.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub attempt: u16,
    pub token: Option<AddressToken>,
}

/// Most copies of one request a call sends at once, to one destination, because a RETRY
/// asked for them (spec §7.1.9 rule 4) or an older server refused the token (rule 5): one is
/// enough for a fresh token, two cover a node that restarted with a new key between the
/// RETRY and the copy. After that a copy leaves on the retransmission timer, so a server
/// that answers RETRY to everything cannot make a client spin.
pub const RETRIES_AT_ONCE_MAX: u32 = 2;

/// How a call ended (spec §7.1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A final answer with this status (never NOT_LEADER, WAITING or OVERLOADED; for a
    /// RELEASE never INTERNAL_ERROR). A grant's or renewal's lease counts from `lease_start`,
    /// the send time of the copy the reply echoes (spec "Lease rule").
    Answered {
        status: Status,
        attempt: u16,
        lease_start: Instant,
    },
    /// The deadline passed without a final answer. `overloaded`: the latest reply other than
    /// NOT_LEADER was OVERLOADED, with this retry-after hint; `None` when only silence or
    /// NOT_LEADER came (or a WAITING since the last OVERLOADED). A late copy may still take
    /// effect; for an ACQUIRE or RENEW that can only give this client a hold that ends at its
    /// lease.
    GaveUp { overloaded: Option<u32> },
    /// A RELEASE ended without an answer that settles it: it may still take effect, so it
    /// must be kept as a doubt ([`Doubts::keep`]) and sent again before the client touches
    /// the same lock (spec §7.1.5).
    InDoubt(DoubtCause),
}

/// Why a RELEASE's outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoubtCause {
    /// No reply but NOT_LEADER came before the deadline.
    Silence,
    /// The latest reply other than NOT_LEADER was OVERLOADED (which no server remembers).
    Overloaded { retry_after_ms: u32 },
    /// The answer was INTERNAL_ERROR (which settles nothing).
    InternalError,
    /// The only answers were unsealed refusals to the sealed request (UNAUTHENTICATED, an
    /// ERROR_REPLY), which anyone who saw its ids could have forged: they settle nothing
    /// (spec §7.1.10 rule 2).
    Unsealed,
}

/// What [`Call::handle_reply`] made of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Not an answer to this call (another request's, a forged or stray one, one echoing a
    /// copy never sent, one after the outcome): ignored.
    Dropped,
    /// A NOT_LEADER that sent the request on to another node.
    Redirected,
    /// Any other reply of this call.
    Accepted,
    /// A reply naming this call's ids that is still not believed (spec §7.1.4 rules 5 and
    /// 6): from an address that is no known node, or contradicting the request. Ignored
    /// like [`Handled::Dropped`]; the shell counts it and logs why.
    Rejected(Rejected),
}

impl Handled {
    /// The reply was ignored: [`Handled::Dropped`] or [`Handled::Rejected`].
    pub fn ignored(self) -> bool {
        matches!(self, Handled::Dropped | Handled::Rejected(_))
    }
}

/// One request on its way (see the module docs).
#[derive(Clone, Debug)]
pub struct Call {
    request: CallRequest,
    /// The reply type that answers the request (ERROR_REPLY is accepted too).
    reply_type: MessageType,
    timer: RequestTimer,
    /// When the call was created: a lease falls back to it if no copy is remembered.
    started: Instant,
    /// Added to the server's wait when a WAITING moves the deadline.
    grace: Duration,
    /// No copy at or after this instant; the call then ends without an answer.
    deadline: Instant,
    /// The latest instant an input carried. A reply read by another thread may carry an
    /// earlier receive time than a copy this thread sent since; send times never go back.
    now_max: Instant,
    /// `D`: where the next copy goes.
    dest: SocketAddr,
    /// `dest`'s index in the route cache; `None` for a hinted leader it had no room for.
    dest_peer: Option<u32>,
    /// `p`: the ring position "moving on" counts from (an index of the configured servers).
    ring: usize,
    /// Attempt number of the first copy sent to `dest`; `None` until one is sent. A reply
    /// echoing an older attempt answers a copy sent elsewhere.
    dest_first_attempt: Option<u16>,
    /// Copies sent to `dest` in a row that no reply has answered yet (rule 4).
    unanswered: u32,
    /// Attempt number of the first of those copies.
    unanswered_from: u16,
    /// NOT_LEADER hints followed at once since the last reply of another kind (rule 5.1).
    fast_redirects: u32,
    /// No copy before this instant: an OVERLOADED asked for the pause (spec §7.1.3).
    not_before: Instant,
    /// The latest reply other than NOT_LEADER was OVERLOADED, with this retry-after hint.
    overloaded: Option<u32>,
    /// The copy to send, until the shell takes it.
    transmit: Option<Transmit>,
    outcome: Option<Outcome>,
    /// The latest address token a RETRY gave this call (`None`: an UNSUPPORTED refused the
    /// flag), with the address it came from: used for copies to that address even when the
    /// route cache has no slot for it (a hinted leader it had no room for). The route cache
    /// keeps tokens for later requests.
    token: Option<(SocketAddr, Option<AddressToken>)>,
    /// Copies sent at once to `dest` for a RETRY or a refused token ([`RETRIES_AT_ONCE_MAX`]).
    retries_at_once: u32,
    /// The latest copy carried an address token.
    latest_tokened: bool,
    /// An unsealed refusal of this sealed request was rejected (spec §7.1.10 rule 2): at
    /// the deadline a RELEASE is in doubt for it ([`DoubtCause::Unsealed`]).
    unsealed_refused: bool,
}

impl Call {
    /// A call of `request`, its first copy ready in [`Call::poll_transmit`]: to the shard's
    /// leader as `routes` last knew it (spec §7.1.7 rule 2). `timer` is the request's
    /// retransmission timer: a fresh one from the estimator for a new request, or the copies
    /// so far of a request sent again ([`Resend::call`]). No copy leaves at or after
    /// `deadline`, nor more than [`REQUEST_LIFETIME_MAX`] after the request's first copy; a
    /// call whose deadline has already passed ends at once, unsent. `grace`: how long after
    /// the server's wait (a WAITING's) the call still waits for the final answer.
    pub fn new(
        now: Instant,
        request: CallRequest,
        timer: RequestTimer,
        deadline: Instant,
        grace: Duration,
        routes: &Routes,
    ) -> Call {
        let reply_type = request
            .msg_type
            .reply_type()
            .expect("a call carries a request type, which has a reply type");
        let (peer, dest, ring) = routes.first_destination(request.shard);
        let first_send = timer.first_send().unwrap_or(now);
        let mut call = Call {
            request,
            reply_type,
            timer,
            started: now,
            grace,
            deadline: deadline.min(first_send + REQUEST_LIFETIME_MAX),
            now_max: now,
            dest,
            dest_peer: Some(peer),
            ring,
            dest_first_attempt: None,
            unanswered: 0,
            unanswered_from: 0,
            fast_redirects: 0,
            not_before: Instant::ZERO,
            overloaded: None,
            transmit: None,
            outcome: None,
            token: None,
            retries_at_once: 0,
            latest_tokened: false,
            unsealed_refused: false,
        };
        if now >= call.deadline {
            call.outcome = Some(call.unanswered_outcome());
        } else {
            call.send(now, routes);
        }
        call.check();
        call
    }

    /// The request this call sends.
    pub fn request(&self) -> &CallRequest {
        &self.request
    }

    /// The request's retransmission timer (its copies' attempt numbers and send times).
    pub fn timer(&self) -> &RequestTimer {
        &self.timer
    }

    /// How the call ended; `None` while it goes on.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Where the next copy goes.
    pub fn destination(&self) -> SocketAddr {
        self.dest
    }

    /// The copy to send now, if any. Call after every input: at most one copy is ready at a
    /// time.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.take()
    }

    /// When to call [`Call::handle_timeout`]: the next copy (the retransmission timer, not
    /// before an OVERLOADED's hint) or the deadline, whichever is first. `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        Some(self.next_send().min(self.deadline))
    }

    /// Timers: ends the call at its deadline, or readies the next copy when it is due.
    pub fn handle_timeout(&mut self, now: Instant, routes: &Routes) {
        if self.outcome.is_some() {
            return;
        }
        let now = self.advance(now);
        if now >= self.deadline {
            self.transmit = None;
            self.outcome = Some(self.unanswered_outcome());
        } else if now >= self.next_send() {
            self.send(now, routes);
        }
        debug_assert!(self.outcome.is_some() || self.poll_timeout() > Some(now));
        self.check();
    }

    /// A reply received at `now` from `from` (its source address, in the form `routes`
    /// keeps), whose client-auth trailer the shell read as `seal` ([`seal_of`]). The RTT
    /// sample it yields goes into `rtt`.
    pub fn handle_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        reply: &Reply<'_>,
        seal: Seal,
        routes: &Routes,
        rtt: &mut RttEstimator,
    ) -> Handled {
        // Spec §7.1.4: only an answer to this request, to a copy that was sent.
        let fits = reply.msg_type == self.reply_type || reply.msg_type == MessageType::ErrorReply;
        let ids = (reply.session_id, reply.request_id);
        let sent = self
            .timer
            .latest_attempt()
            .is_some_and(|latest| reply.attempt <= latest);
        if self.outcome.is_some()
            || !fits
            || ids != (self.request.session_id, self.request.request_id)
            || !sent
        {
            return Handled::Dropped;
        }
        // Spec §7.1.10: a sealed request believes only its key's seal (an unsealed
        // UNAUTHENTICATED aside); one without a key, only unsealed replies. First, so that a
        // forged reply from an unknown address does not send discovery looking (rule 5).
        if let Some(what) = seal_mismatch(&self.request, reply, seal) {
            return Handled::Rejected(Rejected::Seal(what));
        }
        // Spec §7.1.4 rule 5: only a node of the cluster answers. Every address the client
        // knows as one is in `routes` (configured, adopted from a member table, or hinted by
        // a member); `dest` may have left them when discovery replaced the routes.
        if from != self.dest && routes.find(from).is_none() {
            return Handled::Rejected(Rejected::NotFromANode);
        }
        // Rule 6: a reply contradicting the request is forged or broken, not an answer.
        if let Some(what) = contradiction(&self.request, reply) {
            return Handled::Rejected(Rejected::Contradicts(what));
        }
        // Spec §7.1.10 rule 2: an unsealed refusal of a sealed request (UNAUTHENTICATED, an
        // ERROR_REPLY; `seal_mismatch` let only final statuses through) may be forged by
        // anyone who read the request's ids. It ends only a call whose early end cannot
        // hurt; any other goes on to the key's answer or its deadline (§12, "Forged
        // refusals").
        if self.request.sealed && seal == Seal::Unsealed {
            if !self.ends_on_unsealed() {
                self.unsealed_refused = true;
                return Handled::Rejected(Rejected::Seal(
                    "an unsealed refusal, which may be forged, of a request it cannot end",
                ));
            }
            let outcome = self.answered(now, reply);
            self.end(outcome);
            self.check();
            return Handled::Accepted;
        }
        // Spec §7.1.9: a RETRY, or an older server's UNSUPPORTED for the token the latest
        // copy carried, asks for the same request again at once; no RTT sample (rule 2).
        let token_refused = reply.msg_type == MessageType::ErrorReply
            && reply.status == Status::Unsupported
            && self.latest_tokened
            && self.timer.latest_attempt() == Some(reply.attempt);
        let queued = reply.flags.contains(Flags::QUEUED);
        if reply.status != Status::Retry && !token_refused {
            if let Some(sample) = self.timer.rtt_sample(reply.attempt, queued, now) {
                rtt.on_sample(sample);
            }
        }
        let now = self.advance(now);
        // Whoever answered is alive (rule 4), and the copies it answers were not lost.
        if let Some(index) = routes.find(from) {
            routes.set_suspect(index, false);
        }
        if self.unanswered > 0 && reply.attempt >= self.unanswered_from {
            self.unanswered = 0;
        }
        if reply.status == Status::Retry || token_refused {
            self.on_retry(now, from, reply, routes);
            self.check();
            return Handled::Accepted;
        }
        if reply.status == Status::NotLeader {
            let handled = self.on_not_leader(now, from, reply, routes);
            self.check();
            return handled;
        }
        self.fast_redirects = 0;
        // Only the shard's leader gives an answer other than NOT_LEADER (ERROR_REPLY aside,
        // which any node may send, and OVERLOADED, which a node may send while it starts up):
        // remember who it was (rule 6).
        if reply.msg_type != MessageType::ErrorReply && reply.status != Status::Overloaded {
            if let Some(index) = self.answered_by(from, reply.attempt, routes) {
                routes.set_leader(self.request.shard, index);
            }
        }
        match reply.status {
            // WAITING (spec §6.3): the acquire is queued. The server's wait started when it
            // queued it, no later than this reply: wait for its final answer until then +
            // wait_ms + grace (within the request lifetime), with keepalives.
            Status::Waiting => {
                if !self.timer.is_waiting() {
                    let waits_until =
                        now + Duration::from_millis(self.request.wait_ms.into()) + self.grace;
                    let first = self.timer.first_send().expect("a copy was answered");
                    self.deadline = self
                        .deadline
                        .max(waits_until)
                        .min(first + REQUEST_LIFETIME_MAX);
                }
                self.timer.on_waiting(reply.lease_ms);
                self.overloaded = None;
            }
            // OVERLOADED answers one copy and is not remembered (spec §7.1.3, §7.1.5): the
            // SAME request goes again, to the same node, when the timer fires but not before
            // the hinted delay, so no copy still in flight can take effect beside a new
            // request.
            Status::Overloaded => {
                let retry_after_ms = match reply.hint {
                    Hint::RetryAfter { ms } => ms,
                    _ => 0,
                };
                let pause = Duration::from_millis(retry_after_ms.into());
                self.not_before = self.not_before.max(now + pause);
                self.overloaded = Some(retry_after_ms);
            }
            // INTERNAL_ERROR settles no RELEASE (spec §7.1.5).
            Status::InternalError if self.request.is_release() => {
                self.end(Outcome::InDoubt(DoubtCause::InternalError));
            }
            _ => {
                let outcome = self.answered(now, reply);
                self.end(outcome);
            }
        }
        self.check();
        Handled::Accepted
    }

    /// The outcome a final `reply` gives: its status, and the lease counted from the send
    /// of the copy it echoes (spec §6.4).
    fn answered(&self, now: Instant, reply: &Reply<'_>) -> Outcome {
        let lease_start = self
            .timer
            .lease_start(reply.attempt)
            .unwrap_or(self.started);
        debug_assert!(
            lease_start <= now,
            "a lease starts at a send, before its reply"
        );
        Outcome::Answered {
            status: reply.status,
            attempt: reply.attempt,
            lease_start,
        }
    }

    /// Whether an unsealed refusal may end this sealed call (spec §7.1.10 rule 2). Only
    /// where a forged one cannot hurt: an ACQUIRE not told WAITING (a genuine
    /// UNAUTHENTICATED comes before any WAITING, and a copy the forger hid the answer to can
    /// at most leave a phantom hold ending at its lease, as any unanswered ACQUIRE's,
    /// §7.1.5), and a STATUS (a read). Never a RELEASE (it would settle nothing the server
    /// did: a late copy could free a hold taken again, §7.1.5 "Doubts"), a RENEW or
    /// KEEPALIVE (the hold's fate stays unknown), a CANCEL_WAIT or a CONFIGURE.
    fn ends_on_unsealed(&self) -> bool {
        match self.request.msg_type {
            MessageType::Acquire => !self.timer.is_waiting(),
            MessageType::Status => true,
            _ => false,
        }
    }

    /// The client's routes were replaced under the call, `old` by `new` (discovery read a
    /// member table, spec §7.1.8): the following copies go by `new`. Only where the call
    /// stands is translated, by address: its destination (the copies sent there keep
    /// counting towards rule 4) and its ring position (the same server, or the shard's first
    /// on the new ring if it is no longer on it). The request, its copies and their send
    /// times (the lease counts from them), the back-off, the deadline and any OVERLOADED
    /// pause are the call's own and stay as they are.
    pub fn rebase(&mut self, old: &Routes, new: &Routes) {
        self.dest_peer = new.find(self.dest);
        let (_, at) = old.server(self.ring);
        self.ring = new
            .ring_position(at)
            .unwrap_or_else(|| new.ring_from(self.request.shard));
        self.check();
    }

    /// The call's invariants, checked after every input (debug builds: this is the hot
    /// path of every lock call, and none of them guards mutual exclusion on its own).
    fn check(&self) {
        let latest = self.timer.latest_attempt();
        debug_assert!(
            latest.is_some() || self.outcome.is_some(),
            "a live call has sent"
        );
        if let Some(copy) = self.transmit {
            debug_assert_eq!(Some(copy.attempt), latest, "the ready copy is the latest");
            debug_assert!(self.outcome.is_none(), "nothing is sent after the outcome");
        }
        debug_assert!(self
            .dest_first_attempt
            .is_none_or(|first| Some(first) <= latest));
        debug_assert!(self.unanswered == 0 || Some(self.unanswered_from) <= latest);
        debug_assert!(self.fast_redirects <= REDIRECTS_FAST_MAX);
        debug_assert!(
            self.deadline <= self.timer.first_send().unwrap_or(self.started) + REQUEST_LIFETIME_MAX
        );
    }

    /// The call's timer, to keep with a doubt ([`Doubts::keep`]) or give back to one.
    pub(crate) fn into_timer(self) -> RequestTimer {
        self.timer
    }

    fn end(&mut self, outcome: Outcome) {
        debug_assert!(self.outcome.is_none());
        self.transmit = None;
        self.outcome = Some(outcome);
    }

    /// `now`, never earlier than an earlier input's.
    fn advance(&mut self, now: Instant) -> Instant {
        self.now_max = self.now_max.max(now);
        self.now_max
    }

    /// The outcome of a call that reached its deadline (spec §7.1.5): a RELEASE is a doubt
    /// whatever came before, since a copy may still be applied later.
    fn unanswered_outcome(&self) -> Outcome {
        if self.request.is_release() {
            Outcome::InDoubt(match self.overloaded {
                Some(retry_after_ms) => DoubtCause::Overloaded { retry_after_ms },
                None if self.unsealed_refused => DoubtCause::Unsealed,
                None => DoubtCause::Silence,
            })
        } else {
            Outcome::GaveUp {
                overloaded: self.overloaded,
            }
        }
    }

    /// When the next copy is due: when the timer fires, but not before an OVERLOADED's
    /// retry-after (spec §7.1.3).
    fn next_send(&self) -> Instant {
        self.timer.next_retransmit().max(self.not_before)
    }

    /// Readies the next copy: first leaves a node that stayed silent (spec §7.1.7 rule 4:
    /// marked suspect, no longer the shard's cached leader), then records the copy's send
    /// time (the lease counts from it, so the shell must send after this, never before).
    fn send(&mut self, now: Instant, routes: &Routes) {
        if self.dest_is_silent(routes) {
            if let Some(peer) = self.dest_peer {
                routes.set_suspect(peer, true);
                routes.forget_leader(self.request.shard, peer);
            }
            self.move_on(routes);
        }
        debug_assert!(self.transmit.is_none(), "the shell polls after every input");
        let attempt = self.timer.on_send(now);
        self.ready(attempt, routes);
    }

    /// Readies the copy numbered `attempt` (its send time recorded) for `dest`, with the
    /// address token the call or the route cache holds for it.
    fn ready(&mut self, attempt: u16, routes: &Routes) {
        let token = match (self.token, self.dest_peer) {
            (Some((addr, token)), _) if addr == self.dest => token,
            (_, Some(index)) => routes.token(index, self.request.session_id),
            // A hinted leader without a slot: the latest token of the session (rule 3).
            (_, None) => routes.latest_token(self.request.session_id),
        };
        self.latest_tokened = token.is_some();
        self.dest_first_attempt.get_or_insert(attempt);
        if self.unanswered == 0 {
            self.unanswered_from = attempt;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        self.transmit = Some(Transmit {
            to: self.dest,
            attempt,
            token,
        });
    }

    /// Spec §7.1.9: a RETRY from `from` (keep its token, for this call and the client's
    /// later requests), or an UNSUPPORTED from an older server for the token the latest copy
    /// carried (forget it). If it answers the latest copy sent to `dest`, the same request
    /// goes again at once, at most [`RETRIES_AT_ONCE_MAX`] times per destination: neither
    /// was a loss, so no back-off. A RETRY names no leader (any node sends it) and does not
    /// count as a reply between fast redirects (so the two bounds multiply, never reset each
    /// other).
    fn on_retry(&mut self, now: Instant, from: SocketAddr, reply: &Reply<'_>, routes: &Routes) {
        let token = match reply.hint {
            Hint::AddressToken(token) => Some(token),
            // UNSUPPORTED for the token: forget it (the decoder gives RETRY no other hint).
            _ => None,
        };
        if let Some(index) = routes.find(from) {
            routes.set_token(index, self.request.session_id, token);
        }
        self.token = Some((from, token));
        let answers_latest = from == self.dest
            && !self.is_stale(reply.attempt)
            && self.timer.latest_attempt() == Some(reply.attempt);
        if answers_latest && self.retries_at_once < RETRIES_AT_ONCE_MAX {
            self.retries_at_once += 1;
            debug_assert!(self.transmit.is_none(), "the shell polls after every input");
            let attempt = self.timer.on_send_at_once(now);
            // The copy that drew the RETRY was answered: it does not count as unanswered.
            self.ready(attempt, routes);
        }
    }

    /// The following copies go to `dest` (`peer`: its index in the route cache, if it has
    /// one). The back-off goes on (spec §7.1.3): a new node does not make the request's
    /// copies any faster.
    fn redirect(&mut self, dest: SocketAddr, peer: Option<u32>) {
        self.dest = dest;
        self.dest_peer = peer;
        self.dest_first_attempt = None;
        self.unanswered = 0;
        self.retries_at_once = 0;
    }

    /// Spec §7.1.7 rule 7: the following copies go to the next configured server on the ring
    /// that is not suspect.
    fn move_on(&mut self, routes: &Routes) {
        self.ring = routes.next_position(self.ring);
        let (index, addr) = routes.server(self.ring);
        self.redirect(addr, Some(index));
    }

    /// True if a reply echoing `attempt` answers a copy sent before `dest` was chosen.
    fn is_stale(&self, attempt: u16) -> bool {
        self.dest_first_attempt.is_none_or(|first| attempt < first)
    }

    /// Rule 4: `dest` stayed silent for the copies sent to it since the last reply.
    fn dest_is_silent(&self, routes: &Routes) -> bool {
        let suspect = self.dest_peer.is_some_and(|index| routes.is_suspect(index));
        let limit = if suspect { 1 } else { SILENT_SENDS_MAX };
        self.unanswered >= limit
    }

    /// The node that most likely sent a reply echoing `attempt` from `from`, as an index in
    /// the route cache: its source address when that is a known node (after a failover the
    /// new leader may answer a request it was never sent), otherwise the current destination
    /// if the reply answers a copy sent there.
    fn answered_by(&self, from: SocketAddr, attempt: u16, routes: &Routes) -> Option<u32> {
        if from == self.dest {
            return self.dest_peer;
        }
        routes.find(from).or_else(|| {
            if self.is_stale(attempt) {
                None
            } else {
                self.dest_peer
            }
        })
    }

    /// NOT_LEADER (spec §7.1.7 rule 5): the node did not execute the request and does not
    /// remember it, so the SAME request goes on: to a hinted leader that is not suspect at
    /// once (a few times), to a suspect or unknown one on the timer, or without a usable
    /// hint to the next server on the ring, suspect or not, on the timer.
    fn on_not_leader(
        &mut self,
        now: Instant,
        from: SocketAddr,
        reply: &Reply<'_>,
        routes: &Routes,
    ) -> Handled {
        if self.is_stale(reply.attempt) {
            // It answers a copy sent to an earlier destination: the request has moved on.
            return Handled::Accepted;
        }
        let shard = self.request.shard;
        let hint = match reply.hint {
            Hint::Leader(addr) => routes.usable_hint(addr),
            _ => None,
        }
        .filter(|&hint| hint != from);
        match hint.map(|leader| (leader, routes.find(leader))) {
            // Rule 5.2: a leader named by a node that has not noticed it is gone.
            Some((leader, Some(index))) if routes.is_suspect(index) => {
                self.redirect(leader, Some(index));
            }
            // Rule 5.1.
            Some((leader, Some(_))) => {
                let peer = routes.learn_leader(shard, leader);
                self.redirect(leader, peer);
                if self.fast_redirects < REDIRECTS_FAST_MAX {
                    self.fast_redirects += 1;
                    self.send(now, routes);
                }
            }
            // Rule 5.4: a leader the client does not know (a node that joined after the
            // member table it read; issue 12: a hint followed at once to any address made a
            // client send up to 42 copies there). Followed on the timer only, and not
            // cached: the next copy goes there when the timer fires, as one copy of the
            // request's back-off, and it is not remembered as the shard's leader. The shell
            // reads the member table from the hinting node at once (§7.1.8 rule 3); once
            // that lists the node, its hints are followed as any member's.
            Some((leader, None)) => {
                for index in [self.dest_peer, routes.find(from)].into_iter().flatten() {
                    routes.forget_leader(shard, index);
                }
                self.redirect(leader, None);
            }
            // Rule 5.3: no leader known (an election): neither this node nor the one the
            // copies went to is it.
            None => {
                for index in [self.dest_peer, routes.find(from)].into_iter().flatten() {
                    routes.forget_leader(shard, index);
                }
                // To the next server, suspect or not: this one is alive and knows no leader,
                // and in a joined cluster it may hold no replica of the shard at all (spec
                // §8.1), so skipping suspects could leave the client going round the nodes
                // that cannot help, never trying again the one that can.
                self.ring = routes.next_in_ring(self.ring);
                let (index, addr) = routes.server(self.ring);
                self.redirect(addr, Some(index));
            }
        }
        Handled::Redirected
    }
}
