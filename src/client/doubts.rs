//! Releases whose outcome is unknown, kept by a [`Client`] until they are settled.
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
//! fails with [`LockError::ReleaseInDoubt`]. A doubt is forgotten [`DOUBT_LIFETIME`] after
//! its first copy (420 s: no copy can arrive later), and its lane (session) stays out of use
//! until then. An ACQUIRE or RENEW without an answer needs none of this: a late copy can
//! only give this client id a hold it does not believe in, which ends at its lease. Found by
//! the lock-service simulator (seed 353 of an early sweep) and by the outside review (issue 7).
//!
//! [`LockError::Unavailable`]: crate::error::LockError::Unavailable
//! [`LockError::ReleaseInDoubt`]: crate::error::LockError::ReleaseInDoubt
//! [`DOUBT_LIFETIME`]: crate::core::retransmit::DOUBT_LIFETIME

use udplock_protocol::MessageType;

use super::lanes::Lane;
use super::{lock, Client};
use crate::core::call::Settle;
use crate::core::time::Instant;
use crate::error::LockError;

#[cfg(doc)]
use crate::core::call::Doubts;

impl Client {
    /// Spec §7.1.5: a RELEASE whose outcome is unknown may still take effect. Applied after
    /// this client's next ACQUIRE of the same lock, it would free the new hold behind the
    /// client's back. So before any ACQUIRE, RENEW or RELEASE of `(resource, client)`, each such
    /// release is sent again (the call core's [`Doubts`]: same ids, the next attempt number)
    /// until an answer settles it, or until it is forgotten (no copy can take effect any
    /// more). [`LockError::ReleaseInDoubt`] if `deadline` comes first, or if another call is
    /// settling it right now: the new request is then not sent.
    pub(super) fn settle_doubts(
        &self,
        resource: &[u8],
        client: &[u8],
        deadline: Instant,
    ) -> Result<(), LockError> {
        let free_lane = |session_id| lock(&self.lanes_free).push(Lane::new(session_id));
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
            let mut routes = self.routes();
            let mut call = {
                let rtt = lock(&self.rtt);
                resend.call(self.now(), deadline, &rtt, &routes)
            };
            let mut datagram = resend.payload;
            let reply_type = MessageType::ReleaseReply;
            if let Err(e) = self.exchange(&mut call, &mut routes, reply_type, &mut datagram) {
                lock(&self.doubts).abandon_settle(call.request().request_id);
                return Err(e);
            }
            if !lock(&self.doubts).end_settle(call, free_lane) {
                return Err(LockError::ReleaseInDoubt);
            }
        }
    }
}
