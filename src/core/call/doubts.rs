//! RELEASEs whose outcome is unknown (spec §7.1.5, "Doubts").
//!
//! A RELEASE that reached its deadline unanswered, or answered only OVERLOADED (which no
//! server remembers) or INTERNAL_ERROR, may still be applied later: a copy in flight, one in
//! a node's log, a new leader. Applied after this client's next ACQUIRE of the same lock it
//! would free the new hold behind the client's back. So the client keeps it ([`Doubts::keep`])
//! and, before its next ACQUIRE, RENEW or RELEASE of the same resource and client id, sends it
//! again ([`Doubts::begin_settle`], [`Resend::call`]): the same session and request ids, the
//! next attempt number after its earlier copies (rule 2), until an answer settles it (any
//! final answer but INTERNAL_ERROR; for a sealed RELEASE, only one its key sealed: the call
//! never ends on an unsealed refusal, which a forger on the path could send, spec §7.1.10
//! rule 2). A doubt is forgotten [`DOUBT_LIFETIME`] after its first
//! copy: by then no copy of it can take effect.
//!
//! The table is generic over what the shell resends (`P`: the datagram's bytes for the real
//! client, a typed request for the simulator); the rules only need its ids and timer.

use udplock_protocol::RequestBody;

use super::{Call, CallRequest, Outcome, Routes};
use crate::core::retransmit::{RequestTimer, RttEstimator, DOUBT_LIFETIME};
use crate::core::time::{Duration, Instant};

/// RELEASEs with an unknown outcome kept at once (spec §7.1.5, "Doubts"). Each is one datagram
/// and a timer (about 1.4 KB at most); a client that cannot reach the service and keeps
/// releasing would otherwise grow them without bound. While the table is full a RELEASE is
/// refused before anything is sent ([`Doubts::is_full`]).
pub const DOUBTS_MAX: usize = 1_024;

/// The lock an operation touches, as `(resource, client id)`, if a doubt on it must be
/// settled before the operation's request leaves (spec §7.1.5): ACQUIRE, RENEW and RELEASE.
/// STATUS and CONFIGURE change no hold, so a late RELEASE cannot turn their answers wrong;
/// nor does CANCEL_WAIT, which only withdraws a waiter (a hold it reports was granted to
/// the ACQUIRE it names, before any later RELEASE).
pub fn lock_of<'a>(body: &RequestBody<'a>) -> Option<(&'a [u8], &'a [u8])> {
    match *body {
        RequestBody::Acquire {
            resource, client, ..
        }
        | RequestBody::Release { resource, client }
        | RequestBody::Renew {
            resource, client, ..
        } => Some((resource, client)),
        // A KEEPALIVE names holds by token: a late RELEASE of one of them leaves its bit
        // clear, and the client drops that hold (spec §4.11).
        RequestBody::Status { .. }
        | RequestBody::Configure { .. }
        | RequestBody::Keepalive { .. }
        | RequestBody::CancelWait { .. } => None,
    }
}

/// One RELEASE whose outcome is unknown.
#[derive(Clone, Debug)]
struct Doubt<P> {
    resource: Vec<u8>,
    client: Vec<u8>,
    request: CallRequest,
    /// What the shell sends again.
    payload: P,
    /// Its copies so far: the next one goes on from their attempt numbers.
    timer: RequestTimer,
    first_sent: Instant,
    /// A call is sending it again right now; other calls on the same lock do not wait for it.
    settling: bool,
}

/// The doubts of one client (see the module docs).
#[derive(Clone, Debug)]
pub struct Doubts<P> {
    entries: Vec<Doubt<P>>,
}

impl<P> Default for Doubts<P> {
    fn default() -> Self {
        Doubts {
            entries: Vec::new(),
        }
    }
}

/// What an operation on a lock must do about the doubts on it, before its own request.
#[derive(Debug)]
pub enum Settle<P> {
    /// No doubt on this lock: the operation's request may go.
    Clear,
    /// Another call is sending this lock's doubt again right now: the operation's outcome
    /// would be as unknown as that release's, so it fails without being sent.
    Busy,
    /// Send this doubt again first ([`Resend::call`]) and report how it ended
    /// ([`Doubts::end_settle`]).
    Resend(Resend<P>),
}

/// A doubt on its way to be sent again.
#[derive(Debug)]
pub struct Resend<P> {
    /// What the shell sends (its session and request ids are the doubt's).
    pub payload: P,
    request: CallRequest,
    timer: RequestTimer,
}

impl<P> Resend<P> {
    /// The doubt's ids (the shell registers the reply it waits for under them).
    pub fn request(&self) -> &CallRequest {
        &self.request
    }

    /// The call that sends the doubt again: same ids, attempt numbers going on from its
    /// earlier copies (spec §7.1.5 rule 2) on a back-off restarted from the estimator's RTO,
    /// until `deadline` (the operation's) or the request's lifetime, whichever is first.
    pub fn call(
        &self,
        now: Instant,
        deadline: Instant,
        rtt: &RttEstimator,
        routes: &Routes,
    ) -> Call {
        let mut timer = self.timer.clone();
        timer.resume(rtt.rto());
        Call::new(now, self.request, timer, deadline, Duration::ZERO, routes)
    }
}

impl<P: Clone> Doubts<P> {
    pub fn new() -> Doubts<P> {
        Doubts::default()
    }

    /// Doubts kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when no further doubt fits: a RELEASE must then not be sent at all, since it
    /// could not be remembered if it went unanswered.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= DOUBTS_MAX
    }

    /// Keeps a RELEASE that ended [`Outcome::InDoubt`]: `payload` is what the shell sends
    /// again. The session it was sent in must stay out of use until the doubt is settled or
    /// forgotten ([`Doubts::end_settle`], [`Doubts::expire`] hand it back).
    pub fn keep(&mut self, resource: &[u8], client: &[u8], payload: P, call: Call) {
        assert!(
            matches!(call.outcome(), Some(Outcome::InDoubt(_))),
            "only a RELEASE that ended in doubt is kept: {:?}",
            call.outcome()
        );
        let first_sent = call.timer().first_send().expect("a doubt was sent");
        self.entries.push(Doubt {
            resource: resource.to_vec(),
            client: client.to_vec(),
            request: *call.request(),
            payload,
            timer: call.into_timer(),
            first_sent,
            settling: false,
        });
    }

    /// Forgets the doubts no copy of which can take effect any more ([`DOUBT_LIFETIME`] after
    /// their first copy), except one being sent again; `freed` gets each one's session id.
    pub fn expire(&mut self, now: Instant, mut freed: impl FnMut(u64)) {
        let mut i = 0;
        while i < self.entries.len() {
            let doubt = &self.entries[i];
            if now >= doubt.first_sent + DOUBT_LIFETIME && !doubt.settling {
                freed(self.entries.swap_remove(i).request.session_id);
            } else {
                i += 1;
            }
        }
    }

    /// Before an ACQUIRE, RENEW or RELEASE of `(resource, client)`: whether a doubt on that
    /// lock must be sent again first (spec §7.1.5). Forgets expired doubts first (`freed`
    /// gets their sessions). A doubt handed out is marked as being settled until
    /// [`Doubts::end_settle`].
    pub fn begin_settle(
        &mut self,
        now: Instant,
        resource: &[u8],
        client: &[u8],
        freed: impl FnMut(u64),
    ) -> Settle<P> {
        self.expire(now, freed);
        let Some(doubt) = self
            .entries
            .iter_mut()
            .find(|d| d.resource == resource && d.client == client)
        else {
            return Settle::Clear;
        };
        if doubt.settling {
            return Settle::Busy;
        }
        doubt.settling = true;
        Settle::Resend(Resend {
            payload: doubt.payload.clone(),
            request: doubt.request,
            timer: doubt.timer.clone(),
        })
    }

    /// How the call of a [`Resend`] ended: any final answer settles the doubt (it is
    /// forgotten, and its session id returned to be used again); otherwise it stays, with
    /// its copies so far, for the next operation on the lock. Returns true if settled.
    pub fn end_settle(&mut self, call: Call, freed: impl FnOnce(u64)) -> bool {
        let request_id = call.request().request_id;
        let position = self
            .entries
            .iter()
            .position(|d| d.request.request_id == request_id)
            .expect("a doubt being settled stays in the table");
        assert!(self.entries[position].settling);
        if let Some(Outcome::Answered { .. }) = call.outcome() {
            let doubt = self.entries.swap_remove(position);
            freed(doubt.request.session_id);
            return true;
        }
        let doubt = &mut self.entries[position];
        doubt.timer = call.into_timer();
        doubt.settling = false;
        false
    }

    /// Gives a doubt handed out by [`Doubts::begin_settle`] back unsent (the operation ended
    /// before its call could start).
    pub fn abandon_settle(&mut self, request_id: u64) {
        if let Some(doubt) = self
            .entries
            .iter_mut()
            .find(|d| d.request.request_id == request_id)
        {
            doubt.settling = false;
        }
    }
}
