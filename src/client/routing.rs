//! Where a [`Client`]'s requests go.
//!
//! # Routing: shards and their leaders (spec §7.1.7)
//!
//! The service is a cluster of nodes; its resources are split into [`ClientConfig::shards`]
//! shards by `FNV-1a-64(resource_id) % shards`, and each shard has one leader node, the only
//! one that answers requests about its resources. Every call therefore starts by computing its
//! resource's shard and sending to that shard's leader as this client last knew it: the
//! *route cache* holds one entry per shard, shared by all threads and read without a lock (one
//! atomic load; learning an address the client has never seen takes a small lock). With no
//! entry yet, shard `s` goes to `servers[s % servers.len()]`, which spreads first contacts over
//! the cluster; the configured servers form a ring in their given order.
//!
//! The rules are the spec's, numbered as there (the call core applies them; the route cache
//! is its [`Routes`], shared by all calls of the client):
//!
//! - **One timer per request.** Every copy but a fast redirect leaves when the request's
//!   retransmission timer fires, and the timer doubles with every copy up to its ceiling,
//!   wherever the copies go: a move to another node never restarts the back-off. This is what
//!   bounds the datagrams of a failover (about 10 per request on loopback, where following
//!   every hint at once and restarting the back-off at each move cost 30 or more).
//! - **Silence.** A node that leaves [`SILENT_SENDS_MAX`] copies in a row unanswered is marked
//!   *suspect* (for all calls, until it answers anything) and the next copy goes to the next
//!   server on the ring that is not suspect; a cache entry naming it is cleared.
//! - **NOT_LEADER** is never a final answer; it never reaches the caller, and a request that
//!   only ever met NOT_LEADER ends at its deadline like an unanswered one
//!   ([`LockError::Unavailable`]). With a leader hint naming a node that is not suspect, the
//!   cache entry is set to it and the SAME request (session id, request id, body; attempt + 1)
//!   goes there at once, at most [`REDIRECTS_FAST_MAX`] times between two other replies, then
//!   on the timer. A hint naming a suspect node (the followers of a dead leader go on naming
//!   it until their election timeout) is followed only on the timer, with one copy. Without a
//!   hint (an election), the request moves on along the ring, on the timer. A hint is
//!   followed at once and cached only to a node the client knows (a configured server or a
//!   member discovery adopted); one naming any other address is followed by the copies the
//!   timer sends anyway (at most two before the ring), never cached, and reads the hinting
//!   member's table at once (spec §7.1.7 rule 5.4, §7.1.8 rule 3). Leaders carried over
//!   from an earlier ring are remembered beside it, up to [`LEARNED_LEADERS_MAX`].
//! - **OVERLOADED** is not a final answer either: the same request goes to the same node when
//!   the timer fires, but not before the hinted `retry_after_ms`. If the deadline comes first
//!   the call fails with [`LockError::Overloaded`] (a release: [`LockError::ReleaseInDoubt`]).
//!
//! Any reply from a node clears its suspicion; a final answer or a WAITING (not an
//! ERROR_REPLY) records its sender as the shard's leader (when the sender is one of the known
//! addresses; otherwise the node the request was last sent to). The request's WAITING
//! keepalives and deadline run on across moves.
//!
//! Replies are accepted from any node the client knows, not only the one a copy went to (the
//! socket is not connected; every copy is one `send_to`, every reply one `recv_from`): after
//! a failover the grant of a queued acquire comes from the new leader, which the request may
//! never have been sent to, and a copy that reaches the new leader is answered with the reply
//! the old one had committed. A reply from any other address is dropped (spec §7.1.4 rule 5:
//! anyone can send a datagram) and asks discovery for a refresh, in case it was a node the
//! member table lacked. Beyond that, what makes a reply acceptable is its session id and
//! request id, as `receiving.rs` checks them, and fields that do not contradict the request
//! (`crate::core::call::checks`).
//!
//! A NOT_LEADER that answers a copy sent before the current destination was chosen (its echoed
//! attempt is older) is ignored: the request has already moved on. A [`ClientConfig::shards`]
//! that differs from the cluster's only costs redirects, never correctness: the leader of the
//! resource's real shard is one hint away.
//!
//!
//! # Discovery: one reachable address is enough (spec §7.1.8)
//!
//! The configured servers need not name every node. The client asks for the member table
//! (MEMBERS, spec §4.9) and makes every *alive* member's address a candidate: the ring above
//! becomes the members that are not configured servers (in node id order) followed by the
//! configured servers, at most [`CANDIDATES_MAX`] addresses. Only if the table lists the node
//! that answered at the address the client reached it at: otherwise the addresses belong to
//! another network (a relay, a NAT, a container's published port) and the client keeps to its
//! configured servers. The table is only ever a list of addresses to try: who
//! leads a shard, and who holds a lock, is only what a leader answers (a member table never
//! decides either).
//!
//! It asks without waiting for the answer: the first call sends one MEMBERS request to every
//! address it knows (the configured servers and the leaders learned from hints) from the
//! client's own socket, then goes on with its own request; whichever thread is receiving
//! reads the first MEMBERS_REPLY that comes back (later pages are asked of the same node), and
//! the new candidates are every call's from then on, the calls in flight included. Leaders
//! the old routes had learned, and the suspect marks, carry over.
//!
//! Calls in flight take the new routes too, because the first call is the one that needs
//! them: a client given only a node that holds no replica (a node that joined a cluster,
//! which answers NOT_LEADER without a hint for every shard) has nowhere else to send its
//! first request, and would end it `Unavailable` if it kept the routes it started with.
//! A call checks, before it handles a reply or a timeout, whether the client's routes
//! changed (one atomic load: the version kept with them) and if so goes on by the new ones
//! ([`Call::rebase`]): its destination and ring position are translated by address, and
//! the request stays the same one (ids, body, attempts, back-off, deadline, lease start). The
//! alternative, holding the first call back until the member table comes (at most one
//! retransmission timeout), would cost every first call of every client a round trip even
//! where its configured servers answer at once; this way such a call is not delayed at all,
//! and the one through a node without replicas costs one retransmission timeout (the
//! NOT_LEADER without a hint moves the request on the timer, spec §7.1.7 rule 5.3).
//!
//! Calls do not read the client's routes under a lock: each lane keeps the routes its last
//! call used with their version, and takes the client's (a read lock and a reference count)
//! only when discovery has replaced them. A node that does not answer MEMBERS (a
//! server older than it, or one that lost the request) leaves the client as it was: the
//! configured servers and the hints of NOT_LEADER.
//!
//! It asks again (a *refresh*) when its candidates may be stale: a call ended without any
//! answer ([`LockError::Unavailable`]), or every candidate is suspect, or a NOT_LEADER named
//! a node that is not a candidate, or named none (the node holds no replica of the shard or
//! knows no leader, and a table read while the nodes that do were down or suspect left them
//! out of the ring: nothing else would bring them back while the ring's nodes answer). Never more than once per [`REFRESH_INTERVAL_MIN`], so a
//! storm of NOT_LEADERs or timeouts cannot make it query in a loop; the first discovery is
//! tried [`FIRST_ROUNDS_MAX`] times (rate-limited the same way) before it waits for a trigger.
//! One refresh is sooner: a member's NOT_LEADER naming a node the client does not know (a
//! leader that joined after the table was read; the call follows that hint only on its
//! timer, spec §7.1.7 rule 5.4) reads that member's table at once, from the reply's own
//! thread, at most once per [`HINTED_REFRESH_INTERVAL_MIN`].
//! The decisions are [`Discovery`]'s, a sans-IO state machine of the call core
//! (`core::call::discovery`, which the simulator's clients run too); the client only sends
//! what it readies, hands it the pages and the triggers, and swaps in the routes it makes.
//! That shell is [`Membership`], which the blocking [`Client`] and the async client
//! (`async_client.rs`) both own and call at the same points; each only sends its requests
//! from its own socket.
//!
//! The shard map (SHARD_STATUS, spec §4.7) is not read to route first requests: the first
//! request of a shard costs at most one NOT_LEADER redirect, whose hint is then cached for
//! every later call, while reading the map costs one request per 26 shards up front, from one
//! node whose view of the leaders may be stale by the time it is used.
//!
//! [`ClientConfig::shards`]: super::ClientConfig::shards
//! [`Routes`]: crate::core::call::Routes
//! [`Call::rebase`]: crate::core::call::Call::rebase
//! [`Discovery`]: crate::core::call::Discovery
//! [`CANDIDATES_MAX`]: crate::core::call::CANDIDATES_MAX
//! [`REFRESH_INTERVAL_MIN`]: crate::core::call::REFRESH_INTERVAL_MIN
//! [`HINTED_REFRESH_INTERVAL_MIN`]: crate::core::call::HINTED_REFRESH_INTERVAL_MIN
//! [`FIRST_ROUNDS_MAX`]: crate::core::call::FIRST_ROUNDS_MAX
//! [`SILENT_SENDS_MAX`]: super::SILENT_SENDS_MAX
//! [`REDIRECTS_FAST_MAX`]: super::REDIRECTS_FAST_MAX
//! [`LEARNED_LEADERS_MAX`]: super::LEARNED_LEADERS_MAX
//! [`LockError::Unavailable`]: crate::error::LockError::Unavailable
//! [`LockError::Overloaded`]: crate::error::LockError::Overloaded
//! [`LockError::ReleaseInDoubt`]: crate::error::LockError::ReleaseInDoubt

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use udplock_protocol::{Hint, MembersReply, MembersRequest, Status, DATAGRAM_LEN_MAX};

use super::lanes::new_session_id;
use super::receiving::ReplyData;
use super::{lock, Client};
use crate::core::call::{Call, Discovery, Outcome, PageOutcome, Routes};
use crate::core::time::Instant;

/// One version of a client's routes, as a call (or a lane, between calls) holds it: the
/// routes themselves and which of the client's successive routes they are, so that checking
/// them against the client's current ones is one atomic load ([`Membership::routes_changed`]).
#[derive(Clone)]
pub(super) struct CallRoutes {
    /// 0 for the routes over the configured servers, then one more per [`Membership::adopt`].
    version: u64,
    routes: Arc<Routes>,
}

impl CallRoutes {
    /// The routes over the configured servers, the client's first.
    pub(super) fn first(routes: Routes) -> CallRoutes {
        CallRoutes {
            version: 0,
            routes: Arc::new(routes),
        }
    }
}

impl std::ops::Deref for CallRoutes {
    type Target = Routes;

    fn deref(&self) -> &Routes {
        &self.routes
    }
}

/// MEMBERS requests a client is to send from its socket: (destination, request).
pub(super) type MembersSends = Vec<(SocketAddr, MembersRequest)>;

/// A client's routes and its discovery of the members (see "Discovery" in the module
/// docs): the one shell around [`Discovery`] that the blocking [`Client`] and the
/// `AsyncClient` both own. It decides nothing ([`Discovery`] does) and sends nothing: what
/// to send comes back as [`MembersSends`], which each client sends from its own socket
/// ([`send_members`]).
pub(super) struct Membership {
    /// Where each shard's requests go: replaced when discovery changes the candidates.
    /// Calls do not read it: each lane keeps the routes its last call used, and a call
    /// checks them against `routes_version` (one atomic load), taking the new ones, and
    /// going on by them, only when discovery has replaced them.
    routes: RwLock<CallRoutes>,
    /// The version of `routes`, written under its write lock.
    routes_version: AtomicU64,
    /// Member-table discovery and refreshes.
    discovery: Mutex<Discovery>,
    /// Whether `discovery` wants a refresh: what every call checks, one relaxed load.
    refresh_wanted: AtomicBool,
}

impl Membership {
    /// Routes over `servers` (non-empty), and a first discovery wanted at once.
    pub(super) fn new(servers: &[SocketAddr], shards: u32, v6_socket: bool) -> Membership {
        let routes = Routes::new(servers, shards, v6_socket);
        let configured: Vec<SocketAddr> = (0u32..servers.len() as u32)
            .filter_map(|i| routes.peer(i))
            .collect();
        Membership {
            routes: RwLock::new(CallRoutes::first(routes)),
            routes_version: AtomicU64::new(0),
            discovery: Mutex::new(Discovery::new(&configured, v6_socket, new_session_id())),
            refresh_wanted: AtomicBool::new(true),
        }
    }

    /// The addresses requests may go to: after discovery every alive member of the
    /// cluster, then the configured servers.
    pub(super) fn candidates(&self) -> Vec<SocketAddr> {
        lock(&self.discovery).candidates().to_vec()
    }

    /// The current routes (a read lock and a reference count: off the common path, which
    /// keeps a [`CallRoutes`] in each lane and checks it with [`Membership::routes_changed`]).
    pub(super) fn routes(&self) -> CallRoutes {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Brings `routes` up to date: one atomic load when they are. Returns the routes they
    /// were if discovery has replaced them since.
    pub(super) fn routes_changed(&self, routes: &mut CallRoutes) -> Option<Arc<Routes>> {
        if self.routes_version.load(Ordering::Acquire) == routes.version {
            return None;
        }
        Some(std::mem::replace(routes, self.routes()).routes)
    }

    /// Before `call` uses `routes` again: if discovery replaced the routes, the call goes
    /// on by the new ones ([`Call::rebase`]).
    pub(super) fn follow_routes(&self, call: &mut Call, routes: &mut CallRoutes) {
        if let Some(old) = self.routes_changed(routes) {
            call.rebase(&old, routes);
        }
    }

    /// A call ended with `outcome`: one without any reply asks for a member-table refresh
    /// (a trigger of the module docs, decided by [`Discovery`]); it starts with the next
    /// call, no sooner than [`REFRESH_INTERVAL_MIN`] after the last.
    ///
    /// [`REFRESH_INTERVAL_MIN`]: crate::core::call::REFRESH_INTERVAL_MIN
    pub(super) fn check_outcome(&self, outcome: Outcome) {
        if lock(&self.discovery).check_outcome(outcome) {
            self.refresh_wanted.store(true, Ordering::Relaxed);
        }
    }

    /// At the start of a call and after a timeout: the MEMBERS requests of a refresh, if
    /// one is wanted and due. One relaxed load when none is wanted.
    #[must_use]
    pub(super) fn poll_discovery(&self, now: Instant) -> MembersSends {
        if !self.refresh_wanted.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let routes = self.routes();
        let mut discovery = lock(&self.discovery);
        // Every address the client knows: the ring and the learned leaders.
        let known = (0u32..).map_while(|i| routes.peer(i));
        let asks = discovery.poll_round(now, known);
        self.refresh_wanted
            .store(discovery.wanted(), Ordering::Relaxed);
        asks.into_iter()
            .map(|ask| (ask.to, discovery.request(ask)))
            .collect()
    }

    /// Before a reply reaches its call: a NOT_LEADER without a hint, or naming a leader
    /// that is not a candidate, means the ring may lack the nodes the request needs; ask for
    /// a refresh. The hint itself is followed by the call as always (spec §7.1.7). Returns
    /// true if the refresh is one to start at once, from the hinting member (spec §7.1.8
    /// rule 3): the caller then polls discovery without waiting for its next call or timer.
    pub(super) fn check_not_leader(&self, reply: &ReplyData, routes: &Routes) -> bool {
        let wire = reply.wire();
        if wire.status != Status::NotLeader {
            return false;
        }
        let hint = match wire.hint {
            Hint::Leader(hint) => routes.usable_hint(hint),
            _ => None,
        };
        let mut discovery = lock(&self.discovery);
        if discovery.check_not_leader(reply.from, hint) {
            self.refresh_wanted.store(true, Ordering::Relaxed);
        }
        discovery.hinted()
    }

    /// After a reply was dropped for coming from no node the client knows (spec §7.1.4):
    /// it may be a leader the member table this client read lacks; ask for a refresh.
    pub(super) fn check_source(&self, from: SocketAddr) {
        if lock(&self.discovery).check_source(from) {
            self.refresh_wanted.store(true, Ordering::Relaxed);
        }
    }

    /// After a retransmission: if every candidate of `routes` is suspect, the client's ways
    /// in may all be gone; ask for a refresh.
    pub(super) fn check_silence(&self, routes: &Routes) {
        if lock(&self.discovery).check_silence(routes) {
            self.refresh_wanted.store(true, Ordering::Relaxed);
        }
    }

    /// A datagram that is not a lock reply: if it is a MEMBERS_REPLY (status OK) to this
    /// client's discovery session, hands it to discovery (asking for the next page, or
    /// adopting new candidates) and returns what to send (the next page's request, if
    /// any). `None`: not ours, to be dropped.
    pub(super) fn handle_members_reply(
        &self,
        datagram: &[u8],
        from: SocketAddr,
    ) -> Option<MembersSends> {
        let reply = MembersReply::decode(datagram).ok()?;
        let (outcome, next) = {
            let mut discovery = lock(&self.discovery);
            let outcome = discovery.handle_reply(from, &reply);
            let next = match outcome {
                PageOutcome::Ask(ask) => vec![(ask.to, discovery.request(ask))],
                _ => Vec::new(),
            };
            (outcome, next)
        };
        match outcome {
            PageOutcome::Ignored => return None,
            PageOutcome::Ask(_) | PageOutcome::Done(None) => {}
            PageOutcome::Done(Some(candidates)) => self.adopt(&candidates),
        }
        Some(next)
    }

    /// New routes over `candidates` for the calls that start from now on, keeping what the
    /// old routes learned: the leaders their ring would not have guessed, and the suspect
    /// marks.
    fn adopt(&self, candidates: &[SocketAddr]) {
        let new = self.routes().succeeded_by(candidates);
        log::debug!("discovered members: requests now go to {candidates:?}");
        let mut current = self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let version = current.version + 1;
        *current = CallRoutes {
            version,
            routes: Arc::new(new),
        };
        // Under the lock, so a reader that sees the new version reads the new routes.
        self.routes_version.store(version, Ordering::Release);
    }
}

/// Sends `requests` with `send_to` (a client's socket). A lost request is a round without
/// an answer: the next trigger asks again.
pub(super) fn send_members(
    requests: MembersSends,
    mut send_to: impl FnMut(&[u8], SocketAddr) -> std::io::Result<usize>,
) {
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    for (to, request) in requests {
        match request.encode(&mut buf) {
            Ok(len) => {
                if let Err(e) = send_to(&buf[..len], to) {
                    log::debug!("members request to {to} failed: {e}");
                }
            }
            Err(e) => log::warn!("a MEMBERS request did not encode: {e}"),
        }
    }
}

impl Client {
    /// Where the next request about `resource_id` goes: the leader of its shard as this
    /// client last heard of it, or the initial guess (in the socket's address family, so an
    /// IPv4 server may show as IPv4-mapped IPv6 when IPv6 servers are configured too).
    pub fn leader_addr(&self, resource_id: &str) -> SocketAddr {
        let routes = self.routes();
        let shard = routes.shard(resource_id.as_bytes());
        routes.first_destination(shard).1
    }

    /// The addresses this client's requests may go to: after discovery every alive member
    /// of the cluster, then the configured servers (see "Discovery" in the module docs).
    pub fn candidates(&self) -> Vec<SocketAddr> {
        self.membership.candidates()
    }

    /// The client's current routes ([`Membership::routes`]).
    pub(super) fn routes(&self) -> CallRoutes {
        self.membership.routes()
    }

    /// [`Membership::routes_changed`].
    pub(super) fn routes_changed(&self, routes: &mut CallRoutes) -> Option<Arc<Routes>> {
        self.membership.routes_changed(routes)
    }

    /// [`Membership::follow_routes`].
    pub(super) fn follow_routes(&self, call: &mut Call, routes: &mut CallRoutes) {
        self.membership.follow_routes(call, routes);
    }

    /// [`Membership::check_outcome`].
    pub(super) fn check_outcome(&self, outcome: Outcome) {
        self.membership.check_outcome(outcome);
    }

    /// At the start of a call: starts a refresh if one is wanted and due, sending its
    /// requests ([`Membership::poll_discovery`]).
    pub(super) fn poll_discovery(&self, now: Instant) {
        let requests = self.membership.poll_discovery(now);
        if !requests.is_empty() {
            send_members(requests, |buf, to| self.socket.send_to(buf, to));
        }
    }

    /// [`Membership::check_not_leader`]; a refresh asked by a hint starts at once.
    pub(super) fn check_not_leader(&self, reply: &ReplyData, routes: &Routes) {
        if self.membership.check_not_leader(reply, routes) {
            self.poll_discovery(reply.received_at);
        }
    }

    /// [`Membership::check_silence`].
    pub(super) fn check_silence(&self, routes: &Routes) {
        self.membership.check_silence(routes);
    }

    /// [`Membership::check_source`].
    pub(super) fn check_source(&self, from: SocketAddr) {
        self.membership.check_source(from);
    }

    /// A datagram that is not a lock reply, read by the receiving thread: if it is a
    /// MEMBERS_REPLY to this client's discovery session, hands it on
    /// ([`Membership::handle_members_reply`]), sends the next page's request, and returns
    /// true.
    pub(super) fn handle_members_reply(&self, datagram: &[u8], from: SocketAddr) -> bool {
        let Some(requests) = self.membership.handle_members_reply(datagram, from) else {
            return false;
        };
        send_members(requests, |buf, to| self.socket.send_to(buf, to));
        true
    }
}
