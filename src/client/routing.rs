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
//!   hint (an election), the request moves on along the ring, on the timer. Hinted addresses
//!   outside `servers` are used too (and remembered, up to [`LEARNED_LEADERS_MAX`]).
//! - **OVERLOADED** is not a final answer either: the same request goes to the same node when
//!   the timer fires, but not before the hinted `retry_after_ms`. If the deadline comes first
//!   the call fails with [`LockError::Overloaded`] (a release: [`LockError::ReleaseInDoubt`]).
//!
//! Any reply from a node clears its suspicion; a final answer or a WAITING (not an
//! ERROR_REPLY) records its sender as the shard's leader (when the sender is one of the known
//! addresses; otherwise the node the request was last sent to). The request's WAITING
//! keepalives and deadline run on across moves.
//!
//! Replies are accepted from any source address (the socket is not connected; every copy is
//! one `send_to`, every reply one `recv_from`): after a failover the grant of a queued acquire
//! comes from the new leader, which the request may never have been sent to, and a copy that
//! reaches the new leader is answered with the reply the old one had committed. What makes a
//! reply acceptable is its session id and request id, as `receiving.rs` checks them.
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
//! a node that is not a candidate. Never more than once per [`REFRESH_INTERVAL_MIN`], so a
//! storm of NOT_LEADERs or timeouts cannot make it query in a loop; the first discovery is
//! tried [`FIRST_ROUNDS_MAX`] times (rate-limited the same way) before it waits for a trigger.
//! The decisions are [`Discovery`]'s, a sans-IO state machine; the client only sends what it
//! readies and hands it the pages.
//!
//! The shard map (SHARD_STATUS, spec §4.7) is not read to route first requests: the first
//! request of a shard costs at most one NOT_LEADER redirect, whose hint is then cached for
//! every later call, while reading the map costs one request per 26 shards up front, from one
//! node whose view of the leaders may be stale by the time it is used.
//!
//! [`ClientConfig::shards`]: super::ClientConfig::shards
//! [`Routes`]: crate::core::call::Routes
//! [`Call::rebase`]: crate::core::call::Call::rebase
//! [`SILENT_SENDS_MAX`]: super::SILENT_SENDS_MAX
//! [`REDIRECTS_FAST_MAX`]: super::REDIRECTS_FAST_MAX
//! [`LEARNED_LEADERS_MAX`]: super::LEARNED_LEADERS_MAX
//! [`LockError::Unavailable`]: crate::error::LockError::Unavailable
//! [`LockError::Overloaded`]: crate::error::LockError::Overloaded
//! [`LockError::ReleaseInDoubt`]: crate::error::LockError::ReleaseInDoubt

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use udplock_protocol::{Hint, MembersRequest, Status, SwimState, DATAGRAM_LEN_MAX};

use super::receiving::ReplyData;
use super::{lock, Client};
use crate::core::call::{socket_addr_for, Call, Routes};
use crate::core::time::{Duration, Instant};

/// Most addresses a client's ring holds after discovery (configured servers included, all of
/// which are always kept): the members beyond it are not used. 64 reaches every node of any
/// cluster udplock's replication is built for (every node a voter of every shard), keeps the
/// MEMBERS burst of a refresh (one 1200-byte request per known address) small, and keeps a
/// forged or faulty member table from growing the client's memory.
pub const CANDIDATES_MAX: usize = 64;

/// Shortest time between the starts of two member-table refreshes: a storm of NOT_LEADERs
/// or timeouts asks at most once per second. A member table changes at SWIM's pace (a
/// protocol period of about a second; a dead node is declared dead after several), so asking
/// sooner would rarely learn anything.
pub const REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(1_000);

/// Rounds the first discovery is tried (each a MEMBERS request to every known address, at
/// least [`REFRESH_INTERVAL_MIN`] apart) before the client waits for a trigger to ask
/// again: a lost request or reply does not leave a client that was given one address with
/// that one address for ever, and a server that never answers (one older than MEMBERS) costs
/// three datagrams.
pub const FIRST_ROUNDS_MAX: u32 = 3;

/// Pages of one member table read (31 members per page, spec §5.8): enough for
/// [`CANDIDATES_MAX`] alive members among as many others; a node that pages on past it is
/// not followed further.
const PAGES_MAX: usize = 8;

/// One MEMBERS request the client is to send (first page or a later one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MembersAsk {
    pub(crate) to: SocketAddr,
    pub(crate) request_id: u64,
    pub(crate) first_id: u64,
}

/// What a MEMBERS_REPLY page led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PageOutcome {
    /// Not an answer to the round in progress (late, another round's, or forged): dropped.
    Ignored,
    /// Ask the same node for the next page.
    Ask(MembersAsk),
    /// The table is read; the candidates changed to these (`None`: unchanged).
    Done(Option<Vec<SocketAddr>>),
}

/// One refresh in progress.
#[derive(Debug)]
struct Round {
    /// Request ids of the first-page requests of this round (one per address asked).
    first_ids: std::ops::Range<u64>,
    /// Once a first page answered: the node being read and the request id of the page asked.
    reading: Option<(SocketAddr, u64)>,
    /// Alive members' addresses read so far, usable from the client's socket.
    alive: Vec<SocketAddr>,
    /// Whether the answering node's own entry was read with the address the client reached
    /// it at (see [`Discovery::handle_page`]).
    confirmed: bool,
    pages: usize,
}

/// The client's discovery decisions (see the module docs), without IO: when to ask for the
/// member table, which answers count, and what the candidates become. Time is passed in.
#[derive(Debug)]
pub(crate) struct Discovery {
    v6_socket: bool,
    /// The configured servers, in the socket's family.
    configured: Vec<SocketAddr>,
    /// The current ring: what the client's [`Routes`] were built from.
    candidates: Vec<SocketAddr>,
    /// A refresh was asked for and not yet started.
    wanted: bool,
    last_start: Option<Instant>,
    rounds_started: u32,
    /// Member tables read to their end.
    tables_read: u64,
    round: Option<Round>,
    /// The session of every MEMBERS request of this client (never used for a lock request).
    session_id: u64,
    next_request_id: u64,
}

impl Discovery {
    /// Discovery for a client configured with `configured` (non-empty, in the socket's
    /// family), whose first discovery is wanted at once.
    pub(crate) fn new(configured: &[SocketAddr], v6_socket: bool, session_id: u64) -> Discovery {
        Discovery {
            v6_socket,
            configured: configured.to_vec(),
            candidates: configured.to_vec(),
            wanted: true,
            last_start: None,
            rounds_started: 0,
            tables_read: 0,
            round: None,
            session_id,
            next_request_id: 1,
        }
    }

    pub(crate) fn session_id(&self) -> u64 {
        self.session_id
    }

    pub(crate) fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// Whether a refresh is wanted (it may still have to wait for [`REFRESH_INTERVAL_MIN`]).
    pub(crate) fn wanted(&self) -> bool {
        self.wanted
    }

    /// Member tables read to their end so far.
    #[cfg(test)]
    pub(crate) fn tables_read(&self) -> u64 {
        self.tables_read
    }

    /// Asks for a refresh (a trigger of the module docs).
    pub(crate) fn want(&mut self) {
        self.wanted = true;
    }

    /// Whether `addr` (in the socket's family) is a candidate.
    pub(crate) fn knows(&self, addr: SocketAddr) -> bool {
        self.candidates.contains(&addr)
    }

    /// Starts a round if one is wanted and the last started at least
    /// [`REFRESH_INTERVAL_MIN`] ago: the first-page requests to send, one to each of
    /// `targets` (every address the client knows; at most [`CANDIDATES_MAX`]). A round
    /// still in progress is abandoned (its answers are then ignored).
    pub(crate) fn poll_round(
        &mut self,
        now: Instant,
        targets: impl IntoIterator<Item = SocketAddr>,
    ) -> Vec<MembersAsk> {
        if !self.wanted {
            return Vec::new();
        }
        if self
            .last_start
            .is_some_and(|last| now < last + REFRESH_INTERVAL_MIN)
        {
            return Vec::new();
        }
        let mut to: Vec<SocketAddr> = Vec::new();
        for addr in targets {
            if to.len() < CANDIDATES_MAX && !to.contains(&addr) {
                to.push(addr);
            }
        }
        self.last_start = Some(now);
        self.rounds_started += 1;
        // The first discovery asks again by itself until a table is read; refreshes wait
        // for their next trigger.
        self.wanted = self.tables_read == 0 && self.rounds_started < FIRST_ROUNDS_MAX;
        let first = self.next_request_id;
        self.next_request_id += to.len() as u64;
        self.round = Some(Round {
            first_ids: first..self.next_request_id,
            reading: None,
            alive: Vec::new(),
            confirmed: false,
            pages: 0,
        });
        to.into_iter()
            .zip(first..)
            .map(|(to, request_id)| MembersAsk {
                to,
                request_id,
                first_id: 0,
            })
            .collect()
    }

    /// A MEMBERS_REPLY page with status OK from `from` (node `node_id`), answering
    /// `request_id` of this client's discovery session: its members (id, state, address)
    /// and its `next_id`. The first node to answer a first page is the one read to the end;
    /// answers of the others are ignored.
    ///
    /// The table's addresses are used only if it lists the answering node itself at the
    /// address the client reached it at: otherwise they belong to another network than the
    /// client's (the client reaches the cluster through a relay, a NAT or a container's
    /// published port), and the client keeps to its configured servers, which are the ways in
    /// it was given.
    pub(crate) fn handle_page(
        &mut self,
        from: SocketAddr,
        node_id: u64,
        request_id: u64,
        next_id: u64,
        members: impl IntoIterator<Item = (u64, SwimState, SocketAddr)>,
    ) -> PageOutcome {
        let Some(round) = self.round.as_mut() else {
            return PageOutcome::Ignored;
        };
        let from = socket_addr_for(from, self.v6_socket).unwrap_or(from);
        let expected = match round.reading {
            None => round.first_ids.contains(&request_id),
            Some((node, id)) => node == from && id == request_id,
        };
        if !expected {
            return PageOutcome::Ignored;
        }
        round.pages += 1;
        for (id, state, addr) in members {
            let usable = usable(addr, self.v6_socket);
            if id == node_id && usable == Some(from) {
                round.confirmed = true;
            }
            if let (SwimState::Alive, Some(addr)) = (state, usable) {
                if !round.alive.contains(&addr) && round.alive.len() < CANDIDATES_MAX {
                    round.alive.push(addr);
                }
            }
        }
        if next_id != 0 && round.pages < PAGES_MAX {
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            round.reading = Some((from, request_id));
            return PageOutcome::Ask(MembersAsk {
                to: from,
                request_id,
                first_id: next_id,
            });
        }
        let round = self.round.take().expect("a round is in progress");
        self.tables_read += 1;
        self.wanted = false;
        if !round.confirmed {
            return PageOutcome::Done(None);
        }
        let alive = round.alive;
        // The members first, then the configured servers (which are always kept: they may be
        // the only addresses that reach the cluster from here, behind NAT or in containers).
        let room = CANDIDATES_MAX.saturating_sub(self.configured.len());
        let mut candidates: Vec<SocketAddr> = Vec::new();
        for addr in alive {
            if candidates.len() < room && !self.configured.contains(&addr) {
                candidates.push(addr);
            }
        }
        candidates.extend(self.configured.iter().copied());
        if candidates == self.candidates {
            return PageOutcome::Done(None);
        }
        self.candidates.clone_from(&candidates);
        PageOutcome::Done(Some(candidates))
    }
}

/// `addr` as a candidate: a real unicast address with a port, in the socket's family.
fn usable(addr: SocketAddr, v6_socket: bool) -> Option<SocketAddr> {
    let ip = addr.ip();
    if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    socket_addr_for(addr, v6_socket)
}

/// One version of a client's routes, as a call (or a lane, between calls) holds it: the
/// routes themselves and which of the client's successive routes they are, so that checking
/// them against the client's current ones is one atomic load ([`Client::routes_changed`]).
#[derive(Clone)]
pub(super) struct CallRoutes {
    /// 0 for the routes over the configured servers, then one more per [`Client::adopt`].
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
        lock(&self.discovery).candidates().to_vec()
    }

    /// The client's current routes (a read lock and a reference count: off the common
    /// path, which keeps a [`CallRoutes`] in each lane and checks it with
    /// [`Client::routes_changed`]).
    pub(super) fn routes(&self) -> CallRoutes {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Brings `routes` up to date with the client's: one atomic load when they are. Returns
    /// the routes they were if discovery has replaced them since.
    pub(super) fn routes_changed(&self, routes: &mut CallRoutes) -> Option<Arc<Routes>> {
        if self.routes_version.load(Ordering::Acquire) == routes.version {
            return None;
        }
        Some(std::mem::replace(routes, self.routes()).routes)
    }

    /// Before `call` uses `routes` again: if discovery replaced the client's routes, the
    /// call goes on by the new ones ([`Call::rebase`]).
    pub(super) fn follow_routes(&self, call: &mut Call, routes: &mut CallRoutes) {
        if let Some(old) = self.routes_changed(routes) {
            call.rebase(&old, routes);
        }
    }

    /// Asks for a member-table refresh (a trigger of the module docs); it starts with the
    /// next call, no sooner than [`REFRESH_INTERVAL_MIN`] after the last.
    pub(super) fn want_refresh(&self) {
        lock(&self.discovery).want();
        self.refresh_wanted.store(true, Ordering::Relaxed);
    }

    /// At the start of a call: starts a refresh if one is wanted and due, sending its
    /// requests. One relaxed load when none is wanted.
    pub(super) fn poll_discovery(&self, now: Instant) {
        if !self.refresh_wanted.load(Ordering::Relaxed) {
            return;
        }
        let routes = self.routes();
        let (asks, session_id) = {
            let mut discovery = lock(&self.discovery);
            // Every address the client knows: the ring and the learned leaders.
            let known = (0u32..).map_while(|i| routes.peer(i));
            let asks = discovery.poll_round(now, known);
            self.refresh_wanted
                .store(discovery.wanted(), Ordering::Relaxed);
            (asks, discovery.session_id())
        };
        for ask in asks {
            self.send_members_ask(session_id, ask);
        }
    }

    /// Before a reply reaches its call: a NOT_LEADER that names a leader which is not a
    /// candidate means the member table this client knows is stale; ask for a refresh. The
    /// hint itself is followed by the call as always (spec §7.1.7).
    pub(super) fn check_hint(&self, reply: &ReplyData, routes: &Routes) {
        let wire = reply.wire();
        if wire.status != Status::NotLeader {
            return;
        }
        let Hint::Leader(hint) = wire.hint else {
            return;
        };
        let Some(addr) = routes.usable_hint(hint) else {
            return;
        };
        let unknown = !lock(&self.discovery).knows(addr);
        if unknown {
            self.want_refresh();
        }
    }

    /// After a retransmission: if every candidate of `routes` is suspect, the client's ways
    /// in may all be gone; ask for a refresh.
    pub(super) fn check_silence(&self, routes: &Routes) {
        let all_silent = {
            let discovery = lock(&self.discovery);
            discovery
                .candidates()
                .iter()
                .all(|&addr| routes.find(addr).is_some_and(|i| routes.is_suspect(i)))
        };
        if all_silent {
            self.want_refresh();
        }
    }

    fn send_members_ask(&self, session_id: u64, ask: MembersAsk) {
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        let request = MembersRequest {
            session_id,
            request_id: ask.request_id,
            attempt: 0,
            first_id: ask.first_id,
        };
        match request.encode(&mut buf) {
            Ok(len) => {
                // A lost request is a round without an answer: the next trigger asks again.
                if let Err(e) = self.socket.send_to(&buf[..len], ask.to) {
                    log::debug!("members request to {} failed: {e}", ask.to);
                }
            }
            Err(e) => log::warn!("a MEMBERS request did not encode: {e}"),
        }
    }

    /// A datagram that is not a lock reply, read by the receiving thread: if it is a
    /// MEMBERS_REPLY (status OK) to this client's discovery session, hands it to discovery
    /// (asking for the next page, or adopting new candidates) and returns true.
    pub(super) fn handle_members_reply(&self, datagram: &[u8], from: SocketAddr) -> bool {
        let Ok(reply) = udplock_protocol::MembersReply::decode(datagram) else {
            return false;
        };
        let (outcome, session_id) = {
            let mut discovery = lock(&self.discovery);
            if reply.session_id != discovery.session_id()
                || reply.status != udplock_protocol::Status::Ok
            {
                return false;
            }
            let members = reply.entries.iter().map(|e| (e.id, e.state, e.addr));
            let outcome = discovery.handle_page(
                from,
                reply.node_id,
                reply.request_id,
                reply.next_id,
                members,
            );
            (outcome, discovery.session_id())
        };
        match outcome {
            PageOutcome::Ignored => return false,
            PageOutcome::Ask(ask) => self.send_members_ask(session_id, ask),
            PageOutcome::Done(None) => {}
            PageOutcome::Done(Some(candidates)) => self.adopt(&candidates),
        }
        true
    }

    /// New routes over `candidates` for the calls that start from now on, keeping what the
    /// old routes learned: the leaders their ring would not have guessed, and the suspect
    /// marks.
    fn adopt(&self, candidates: &[SocketAddr]) {
        let old = self.routes();
        let new = Routes::new(candidates, self.config.shards, self.v6_socket);
        for shard in 0..self.config.shards as usize {
            let (index, addr, _) = old.first_destination(shard);
            let guess = old.server(old.ring_from(shard)).0;
            if index != guess {
                new.learn_leader(shard, addr);
            }
        }
        for addr in (0u32..).map_while(|i| old.peer(i)) {
            if let (Some(was), Some(now)) = (old.find(addr), new.find(addr)) {
                new.set_suspect(now, old.is_suspect(was));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// Alive members whose node id is their port.
    fn alive(ports: &[u16]) -> Vec<(u64, SwimState, SocketAddr)> {
        ports
            .iter()
            .map(|&p| (u64::from(p), SwimState::Alive, addr(p)))
            .collect()
    }

    /// The first discovery asks every known address at once, takes the first table, and
    /// makes its alive members the candidates ahead of the configured server; dead members,
    /// unusable addresses and late answers of the others count for nothing.
    #[test]
    fn the_first_table_makes_the_alive_members_candidates() {
        let mut d = Discovery::new(&[addr(7101)], false, 9);
        assert!(d.wanted(), "the first discovery is wanted at once");
        let asks = d.poll_round(at(0), [addr(7101), addr(7102), addr(7101)]);
        assert_eq!(asks.len(), 2, "each known address once: {asks:?}");
        assert!(asks.iter().all(|a| a.first_id == 0));
        let mut members = alive(&[7101, 7102, 7103]);
        members.push((7104, SwimState::Dead, addr(7104)));
        members.push((7105, SwimState::Suspect, addr(7105)));
        members.push((7106, SwimState::Alive, "0.0.0.0:7106".parse().unwrap()));
        let v6 = "[2001:db8::1]:7107".parse().unwrap();
        members.push((7107, SwimState::Alive, v6));
        let outcome = d.handle_page(addr(7102), 7102, asks[1].request_id, 0, members);
        let expected = vec![addr(7102), addr(7103), addr(7101)];
        assert_eq!(outcome, PageOutcome::Done(Some(expected.clone())));
        assert_eq!(d.candidates(), expected);
        assert!(d.knows(addr(7103)) && !d.knows(addr(7104)));
        assert!(!d.wanted(), "a table was read: no refresh until a trigger");
        let late = d.handle_page(addr(7101), 7101, asks[0].request_id, 0, alive(&[7101]));
        assert_eq!(late, PageOutcome::Ignored, "the round is over");
        assert_eq!(d.tables_read(), 1);
    }

    /// A storm of triggers asks at most once per REFRESH_INTERVAL_MIN; an unanswered first
    /// discovery asks again by itself only FIRST_ROUNDS_MAX times.
    #[test]
    fn refreshes_are_rate_limited() {
        let interval = REFRESH_INTERVAL_MIN.as_micros() / 1_000;
        let mut d = Discovery::new(&[addr(7101)], false, 9);
        let mut rounds = Vec::new();
        // Nobody answers; the client keeps calling every 10 ms for 10 intervals.
        for ms in (0..10 * interval).step_by(10) {
            if !d.poll_round(at(ms), [addr(7101)]).is_empty() {
                rounds.push(ms);
            }
        }
        let expected: Vec<u64> = (0..u64::from(FIRST_ROUNDS_MAX))
            .map(|k| k * interval)
            .collect();
        assert_eq!(rounds, expected, "the first discovery's rounds");
        assert!(!d.wanted());
        // Then a storm of NOT_LEADERs naming unknown nodes, one every millisecond.
        let start = 10 * interval;
        let mut rounds = 0;
        for ms in start..start + 3 * interval {
            d.want();
            if !d.poll_round(at(ms), [addr(7101)]).is_empty() {
                rounds += 1;
            }
        }
        assert_eq!(rounds, 3, "one round per interval, however many triggers");
        // A table read ends the first discovery's own retries.
        let mut d = Discovery::new(&[addr(7101)], false, 9);
        let asks = d.poll_round(at(0), [addr(7101)]);
        let done = d.handle_page(addr(7101), 7101, asks[0].request_id, 0, alive(&[7101]));
        assert_eq!(
            done,
            PageOutcome::Done(None),
            "a single node: itself, unchanged"
        );
        assert!(d.poll_round(at(5 * interval), [addr(7101)]).is_empty());
    }

    /// Candidates are bounded by CANDIDATES_MAX (the configured servers always kept); later
    /// pages are asked of the node that answered first, and only its answers count.
    #[test]
    fn candidates_are_bounded_and_pages_follow_one_node() {
        let configured = [addr(1), addr(2)];
        let mut d = Discovery::new(&configured, false, 9);
        let asks = d.poll_round(at(0), configured);
        let page1: Vec<u16> = (100..130).collect();
        let mut page1 = alive(&page1);
        page1.insert(0, (2, SwimState::Alive, addr(2)));
        let next = d.handle_page(addr(2), 2, asks[1].request_id, 131, page1);
        let PageOutcome::Ask(ask) = next else {
            panic!("the next page is asked: {next:?}");
        };
        assert_eq!((ask.to, ask.first_id), (addr(2), 131));
        assert_ne!(ask.request_id, asks[1].request_id);
        let forged = d.handle_page(addr(1), 1, ask.request_id, 0, alive(&[666]));
        assert_eq!(forged, PageOutcome::Ignored, "another node's answer");
        let page2: Vec<u16> = (131..200).collect();
        let PageOutcome::Done(Some(candidates)) =
            d.handle_page(addr(2), 2, ask.request_id, 0, alive(&page2))
        else {
            panic!("the table is read");
        };
        assert_eq!(candidates.len(), CANDIDATES_MAX);
        assert_eq!(&candidates[CANDIDATES_MAX - 2..], &configured);
        assert_eq!(candidates[0], addr(100));
    }

    /// A table that does not list the answering node at the address the client reached it
    /// at (a relay, a NAT) belongs to another network: its addresses are not used.
    #[test]
    fn a_table_from_another_network_is_not_used() {
        let relay = addr(9000);
        let mut d = Discovery::new(&[relay], false, 9);
        let asks = d.poll_round(at(0), [relay]);
        // Node 1 is at 7101 on its own network; the client reaches it at the relay.
        let outcome = d.handle_page(relay, 7101, asks[0].request_id, 0, alive(&[7101, 7102]));
        assert_eq!(outcome, PageOutcome::Done(None));
        assert_eq!(d.candidates(), [relay]);
        assert!(!d.wanted(), "the table was read; nothing to ask again");
    }
}
