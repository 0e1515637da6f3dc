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

use super::routing::CallRoutes;
use super::{lock, Client};

/// A free lane: its session id and the routes its last call used (none yet for a new lane
/// or one back from a doubt).
pub(super) struct Lane {
    session_id: u64,
    routes: Option<CallRoutes>,
}

impl Lane {
    pub(super) fn new(session_id: u64) -> Lane {
        Lane {
            session_id,
            routes: None,
        }
    }
}

impl Client {
    /// Takes a free lane (a session with no request outstanding), or opens a new one, with
    /// the client's current routes: the ones its last call used if they still are (one
    /// atomic load; no lock, no reference count on the common path).
    pub(super) fn take_lane(&self) -> LaneGuard<'_> {
        let free = lock(&self.lanes_free).pop();
        let Lane { session_id, routes } = free.unwrap_or_else(|| Lane::new(new_session_id()));
        let routes = match routes {
            Some(mut routes) => {
                self.routes_changed(&mut routes);
                routes
            }
            None => self.routes(),
        };
        LaneGuard {
            client: self,
            session_id,
            routes: Some(routes),
            retired: false,
        }
    }
}

/// Gives a lane back to the pool when its call ends, however it ends, unless the call
/// left a doubt in it ([`LaneGuard::retire`]).
pub(super) struct LaneGuard<'a> {
    client: &'a Client,
    pub(super) session_id: u64,
    /// The routes the lane's call goes by (always `Some` until the lane is dropped).
    routes: Option<CallRoutes>,
    retired: bool,
}

impl LaneGuard<'_> {
    /// The routes the lane's call goes by; kept up to date with
    /// [`Client::follow_routes`].
    pub(super) fn routes(&mut self) -> &mut CallRoutes {
        self.routes.as_mut().expect("a lane in use has routes")
    }

    /// The lane carries a doubt (spec §7.1.5): it stays out of the pool until the doubt is
    /// settled or forgotten, so that no other request shares its session meanwhile.
    pub(super) fn retire(&mut self) {
        self.retired = true;
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if !self.retired {
            let lane = Lane {
                session_id: self.session_id,
                routes: self.routes.take(),
            };
            lock(&self.client.lanes_free).push(lane);
        }
    }
}

/// A random non-zero session id: 64 bits an off-path forger would have to guess, from the
/// operating system's random source (one getrandom(2) call per new lane, which are pooled).
pub(super) fn new_session_id() -> u64 {
    loop {
        let mut bytes = [0u8; 8];
        // As `rand::random` does, a random source that fails is a broken system, not an
        // error a caller could handle.
        getrandom::getrandom(&mut bytes).expect("the operating system's random source failed");
        let id = u64::from_ne_bytes(bytes);
        if id != 0 {
            return id;
        }
    }
}
