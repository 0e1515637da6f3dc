//! The sessions a [`Client`] sends in.
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
//! [`OUTSTANDING_MAX`]: super::OUTSTANDING_MAX

use super::{lock, Client};

impl Client {
    /// Takes a free lane (a session with no request outstanding), or opens a new one.
    pub(super) fn take_lane(&self) -> LaneGuard<'_> {
        let session_id = lock(&self.lanes_free).pop().unwrap_or_else(new_session_id);
        LaneGuard {
            client: self,
            session_id,
            retired: false,
        }
    }
}

/// Gives a lane back to the pool when its call ends, however it ends, unless the call
/// left a doubt in it ([`LaneGuard::retire`]).
pub(super) struct LaneGuard<'a> {
    client: &'a Client,
    pub(super) session_id: u64,
    retired: bool,
}

impl LaneGuard<'_> {
    /// The lane carries a doubt (spec §7.1.5): it stays out of the pool until the doubt is
    /// settled or forgotten, so that no other request shares its session meanwhile.
    pub(super) fn retire(&mut self) {
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
pub(super) fn new_session_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}
