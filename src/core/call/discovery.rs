//! The client's discovery core (spec §7.1.8): when a client asks for the member table
//! (MEMBERS, spec §4.9), which answers count, and what its ring of candidates becomes —
//! sans-IO, like the rest of the call core. Time is passed in; what to send comes out as
//! [`MembersAsk`]s (encoded by [`Discovery::request`]), answers go in as decoded
//! MEMBERS_REPLY pages ([`Discovery::handle_reply`]), and a new ring comes out as the
//! addresses [`Routes::succeeded_by`] builds the next routes over.
//!
//! The real client (`crate::client`, "Discovery" in `routing.rs`) keeps this behind a lock
//! and sends from its socket; the simulator's clients (`crate::sim`, joined runs) drive the
//! same state machine through the simulated network, so discovery runs under the faults the
//! simulator injects.
//!
//! ```text
//!  poll_round(now, known addresses) ─> MembersAsk ─> request(ask) ─> MEMBERS datagram
//!  handle_reply(from, &MembersReply) ─> Ask (next page) | Done(new candidates) | Ignored
//!  triggers: check_outcome(outcome), check_not_leader(from, hint), check_silence(&routes)
//!            ─> wanted(), then the next poll_round
//! ```
//!
//! [`Routes::succeeded_by`]: super::Routes::succeeded_by

use std::net::SocketAddr;

use udplock_protocol::{MembersReply, MembersRequest, Status, SwimState};

use super::{socket_addr_for, DoubtCause, Outcome, Routes};
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

/// Shortest time between the starts of two refreshes asked by hints (spec §7.1.8 rule 3): a
/// NOT_LEADER from a member naming a node the client does not know reads the table of that
/// member at once rather than after [`REFRESH_INTERVAL_MIN`] (the hint is followed only on
/// the retransmission timer until the table lists the node, §7.1.7 rule 5.4). A member that
/// names ever new addresses makes the client ask it at most ten times a second, one MEMBERS
/// request each, to that member only.
pub const HINTED_REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(100);

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
pub struct MembersAsk {
    pub to: SocketAddr,
    pub request_id: u64,
    pub first_id: u64,
}

/// What a MEMBERS_REPLY page led to.
#[derive(Debug, PartialEq, Eq)]
pub enum PageOutcome {
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
    /// The address each first-page request went to, in `first_ids`' order: only that
    /// address may answer it (spec §7.1.4 rule 5).
    asked: Vec<SocketAddr>,
    /// The `first_id` of the page asked for last (0 for the first pages): a page that says it
    /// starts elsewhere is no answer (spec §4.9).
    first_id_asked: u64,
    /// Once a first page answered: the node being read and the request id of the page asked.
    reading: Option<(SocketAddr, u64)>,
    /// Alive members' addresses read so far, usable from the client's socket.
    alive: Vec<SocketAddr>,
    /// Every address the table lists, whatever the member's state.
    listed: Vec<SocketAddr>,
    /// Whether the answering node's own entry was read with the address the client reached
    /// it at (see [`Discovery::handle_page`]).
    confirmed: bool,
    pages: usize,
}

/// The client's discovery decisions (see the module docs), without IO: when to ask for the
/// member table, which answers count, and what the candidates become. Time is passed in.
#[derive(Debug)]
pub struct Discovery {
    v6_socket: bool,
    /// The configured servers, in the socket's family.
    configured: Vec<SocketAddr>,
    /// The current ring: what the client's [`Routes`] were built from.
    candidates: Vec<SocketAddr>,
    /// Candidates the last table read did not list at all, kept for one more table (see
    /// [`Discovery::handle_page`]).
    unlisted: Vec<SocketAddr>,
    /// A refresh was asked for and not yet started.
    wanted: bool,
    /// The member whose NOT_LEADER named a node that is not a candidate: the next round asks
    /// it alone, without waiting for [`REFRESH_INTERVAL_MIN`].
    hinted_by: Option<SocketAddr>,
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
    pub fn new(configured: &[SocketAddr], v6_socket: bool, session_id: u64) -> Discovery {
        Discovery {
            v6_socket,
            configured: configured.to_vec(),
            candidates: configured.to_vec(),
            unlisted: Vec::new(),
            wanted: true,
            hinted_by: None,
            last_start: None,
            rounds_started: 0,
            tables_read: 0,
            round: None,
            session_id,
            next_request_id: 1,
        }
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// Whether a refresh is wanted (it may still have to wait for [`REFRESH_INTERVAL_MIN`]).
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// Member tables read to their end so far.
    pub fn tables_read(&self) -> u64 {
        self.tables_read
    }

    /// Asks for a refresh (a trigger of the module docs).
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// Whether `addr` (in the socket's family) is a candidate.
    pub fn knows(&self, addr: SocketAddr) -> bool {
        self.candidates.contains(&addr)
    }

    /// Trigger (spec §7.1.8 rule 3): a lock request of this client ended with `outcome`. One
    /// that ended with no reply at all (given up in silence or after NOT_LEADERs only, a
    /// RELEASE left in doubt by silence) may have had no way in left: a refresh is wanted.
    /// Returns whether one now is.
    pub fn check_outcome(&mut self, outcome: Outcome) -> bool {
        if let Outcome::GaveUp { overloaded: None } | Outcome::InDoubt(DoubtCause::Silence) =
            outcome
        {
            self.want();
        }
        self.wanted
    }

    /// Trigger (spec §7.1.8 rule 3): a NOT_LEADER came from `from` (in the socket's family),
    /// naming `hint` as the leader (usable, in the socket's family: [`Routes::usable_hint`];
    /// `None` without a usable hint). A refresh is wanted if the hint names a node that is
    /// not a candidate (the member table this client read is stale: if `from` is a
    /// candidate, the refresh asks it alone, at once — [`HINTED_REFRESH_INTERVAL_MIN`] —
    /// since its table is the one that knows the new leader), or if there is no hint: the
    /// node that answered holds no replica of the shard or knows no leader, and the ring may
    /// lack every node that does (a table read while they were down, suspect or leaving
    /// leaves them out, and nothing else would bring them back while the ring's nodes
    /// answer). Returns whether one now is. (The call follows the hint, or moves on, as
    /// always: spec §7.1.7.)
    pub fn check_not_leader(&mut self, from: SocketAddr, hint: Option<SocketAddr>) -> bool {
        match hint {
            Some(addr) if !self.knows(addr) => {
                if self.knows(from) && addr != from {
                    self.hinted_by = Some(from);
                }
                self.want();
            }
            None => self.want(),
            Some(_) => {}
        }
        self.wanted
    }

    /// Whether a refresh asked by a hint waits ([`Discovery::check_not_leader`]): the shell
    /// polls a round at once rather than at its next call or timer.
    pub fn hinted(&self) -> bool {
        self.hinted_by.is_some()
    }

    /// Trigger (spec §7.1.8 rule 3): a reply to a call came from `from`, an address that is
    /// no node the client knows, and was dropped (spec §7.1.4 rule 5). A new leader the
    /// client's table lacks answers so (it applies a request its predecessor logged), so a
    /// refresh is wanted; a forger's datagrams cost at most one round per
    /// [`REFRESH_INTERVAL_MIN`]. Returns whether one now is.
    pub fn check_source(&mut self, from: SocketAddr) -> bool {
        if !self.knows(from) {
            self.want();
        }
        self.wanted
    }

    /// Trigger (spec §7.1.8 rule 3), after a retransmission: if every candidate is suspect
    /// in `routes` (the client's current routes, built over the candidates), the client's
    /// ways in may all be gone: a refresh is wanted. Returns whether one now is.
    pub fn check_silence(&mut self, routes: &Routes) -> bool {
        let all_silent = self
            .candidates
            .iter()
            .all(|&addr| routes.find(addr).is_some_and(|i| routes.is_suspect(i)));
        if all_silent {
            self.want();
        }
        self.wanted
    }

    /// The MEMBERS request `ask` stands for, in this client's discovery session (its encoder
    /// pads it to `MEMBERS_REQUEST_LEN`, spec §4.9, so the reply may carry 31 entries).
    pub fn request(&self, ask: MembersAsk) -> MembersRequest {
        debug_assert!(ask.request_id > 0 && ask.request_id < self.next_request_id);
        MembersRequest {
            session_id: self.session_id,
            request_id: ask.request_id,
            attempt: 0,
            first_id: ask.first_id,
        }
    }

    /// A decoded MEMBERS_REPLY from `from` (its source address): a page for this client's
    /// discovery if it is in its session with status OK (spec §7.1.8 rule 1; an ERROR_REPLY
    /// or another status carries no table), handed to [`Discovery::handle_page`]. Anything
    /// else is [`PageOutcome::Ignored`].
    pub fn handle_reply(&mut self, from: SocketAddr, reply: &MembersReply<'_>) -> PageOutcome {
        if reply.session_id != self.session_id || reply.status != Status::Ok {
            return PageOutcome::Ignored;
        }
        if self
            .round
            .as_ref()
            .is_some_and(|round| round.first_id_asked != reply.first_id)
        {
            return PageOutcome::Ignored;
        }
        let members = reply.entries.iter().map(|e| (e.id, e.state, e.addr));
        self.handle_page(
            from,
            reply.node_id,
            reply.request_id,
            reply.next_id,
            members,
        )
    }

    /// Starts a round if one is wanted and the last started at least
    /// [`REFRESH_INTERVAL_MIN`] ago: the first-page requests to send, one to each of
    /// `targets` (every address the client knows; at most [`CANDIDATES_MAX`]). A round
    /// still in progress is abandoned (its answers are then ignored).
    pub fn poll_round(
        &mut self,
        now: Instant,
        targets: impl IntoIterator<Item = SocketAddr>,
    ) -> Vec<MembersAsk> {
        if !self.wanted {
            return Vec::new();
        }
        let since = |interval| self.last_start.is_none_or(|last| now >= last + interval);
        let hinted = self
            .hinted_by
            .filter(|_| since(HINTED_REFRESH_INTERVAL_MIN));
        if hinted.is_none() && !since(REFRESH_INTERVAL_MIN) {
            return Vec::new();
        }
        self.hinted_by = None;
        let mut to: Vec<SocketAddr> = Vec::new();
        match hinted {
            // Spec §7.1.8 rule 3: the member that named the new leader, alone.
            Some(member) => to.push(member),
            None => {
                for addr in targets {
                    if to.len() < CANDIDATES_MAX && !to.contains(&addr) {
                        to.push(addr);
                    }
                }
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
            asked: to.clone(),
            first_id_asked: 0,
            reading: None,
            alive: Vec::new(),
            listed: Vec::new(),
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
    pub fn handle_page(
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
        // Each page from the address it was asked of (spec §7.1.4 rule 5): a table
        // answered from anywhere else could make any host's list of addresses the ring.
        let expected = match round.reading {
            None => request_id
                .checked_sub(round.first_ids.start)
                .and_then(|i| round.asked.get(usize::try_from(i).ok()?))
                .is_some_and(|&asked| asked == from),
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
            if let Some(addr) = usable {
                if !round.listed.contains(&addr) && round.listed.len() < CANDIDATES_MAX * 2 {
                    round.listed.push(addr);
                }
            }
        }
        if next_id != 0 && round.pages < PAGES_MAX {
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            round.reading = Some((from, request_id));
            round.first_id_asked = next_id;
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
        // A candidate the table does not list at all is not news of its death: the node
        // that answered may have just restarted and know nobody yet (its SWIM table fills
        // within a protocol period or two). Taken at its word, its table would shrink the
        // ring to itself, and a client of a shard it holds no replica of would go round that
        // one node, NOT_LEADER after NOT_LEADER, until its next refresh (found by `udplock
        // sim --seed 868 --nodes 3 --joined`: both nodes a client asked had restarted and
        // each listed itself alone). Such a candidate stays for one more table; one listed
        // dead, left or suspect goes at once, and one no table lists twice running goes too.
        let unlisted: Vec<SocketAddr> = self
            .candidates
            .iter()
            .copied()
            .filter(|a| !round.listed.contains(a) && !self.configured.contains(a))
            .collect();
        let kept = unlisted.iter().filter(|a| !self.unlisted.contains(a));
        let alive: Vec<SocketAddr> = round.alive.iter().chain(kept).copied().collect();
        self.unlisted = unlisted;
        // The members first, then the configured servers (which are always kept: they may be
        // the only addresses that reach the cluster from here, behind NAT or in containers).
        let room = CANDIDATES_MAX.saturating_sub(self.configured.len());
        let mut candidates: Vec<SocketAddr> = Vec::new();
        for addr in alive {
            if candidates.len() < room
                && !self.configured.contains(&addr)
                && !candidates.contains(&addr)
            {
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

    /// A table that does not list a candidate at all (its node restarted and knows nobody
    /// yet) keeps it for one more table; a second such table drops it, and one that lists it
    /// dead drops it at once (simulator seed 868, 3 nodes, joined: a client's ring shrank to
    /// the one node that answered, which held no replica of the shard it asked for).
    #[test]
    fn a_candidate_a_table_does_not_list_stays_for_one_more_table() {
        let interval = REFRESH_INTERVAL_MIN.as_micros() / 1_000;
        let mut d = Discovery::new(&[addr(7101)], false, 9);
        let read = |d: &mut Discovery, round: u64, from: u16, members| {
            d.want();
            let asks = d.poll_round(at(round * interval), [addr(from)]);
            let done = d.handle_page(addr(from), u64::from(from), asks[0].request_id, 0, members);
            let PageOutcome::Done(_) = done else {
                panic!("{done:?}")
            };
            let mut ring = d.candidates().to_vec();
            ring.sort();
            ring
        };
        let all = vec![addr(7101), addr(7102), addr(7103)];
        assert_eq!(read(&mut d, 0, 7101, alive(&[7101, 7102, 7103])), all);
        // Node 7102 restarted: its table lists itself alone.
        assert_eq!(read(&mut d, 1, 7102, alive(&[7102])), all, "7103 kept once");
        assert_eq!(
            read(&mut d, 2, 7102, alive(&[7102])),
            vec![addr(7101), addr(7102)],
            "unlisted twice: gone (7101 is configured, always kept)"
        );
        // Listed again, it is back; listed dead, it goes at once.
        assert_eq!(read(&mut d, 3, 7101, alive(&[7101, 7102, 7103])), all);
        let mut members = alive(&[7101, 7102]);
        members.push((7103, SwimState::Dead, addr(7103)));
        assert_eq!(read(&mut d, 4, 7101, members), vec![addr(7101), addr(7102)]);
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

    /// Spec §7.1.8 rule 3, the triggers: a NOT_LEADER without a hint or naming a node that
    /// is not a candidate, a request that ended with no reply at all, every candidate
    /// suspect; not a NOT_LEADER naming a candidate, an answer, or an OVERLOADED.
    #[test]
    fn the_triggers_ask_for_a_refresh() {
        let fresh = || {
            let mut d = Discovery::new(&[addr(7101), addr(7102)], false, 9);
            let asks = d.poll_round(at(0), [addr(7101), addr(7102)]);
            let members = alive(&[7101, 7102]);
            let done = d.handle_page(addr(7101), 7101, asks[0].request_id, 0, members);
            assert_eq!(done, PageOutcome::Done(None));
            assert!(!d.wanted());
            d
        };
        let mut d = fresh();
        assert!(
            !d.check_not_leader(addr(7101), Some(addr(7102))),
            "a candidate"
        );
        assert!(
            d.check_not_leader(addr(7101), Some(addr(7103))),
            "not a candidate"
        );
        assert!(
            fresh().check_not_leader(addr(7101), None),
            "no hint: the ring may lack the holders"
        );
        let answered = Outcome::Answered {
            status: Status::Ok,
            attempt: 0,
            lease_start: at(0),
        };
        assert!(!fresh().check_outcome(answered));
        assert!(!fresh().check_outcome(Outcome::GaveUp {
            overloaded: Some(5)
        }));
        assert!(fresh().check_outcome(Outcome::GaveUp { overloaded: None }));
        assert!(fresh().check_outcome(Outcome::InDoubt(DoubtCause::Silence)));
        let routes = Routes::new(&[addr(7101), addr(7102)], 1, false);
        let mut d = fresh();
        routes.set_suspect(0, true);
        assert!(!d.check_silence(&routes), "one candidate still answers");
        routes.set_suspect(1, true);
        assert!(d.check_silence(&routes), "every candidate suspect");
        // Wanted, a round starts no sooner than the interval after the last.
        assert!(d.poll_round(at(10), [addr(7101)]).is_empty());
        let interval = REFRESH_INTERVAL_MIN.as_micros() / 1_000;
        assert_eq!(d.poll_round(at(interval), [addr(7101)]).len(), 1);
    }

    /// Spec §7.1.8 rule 3 (issue 12 item 5's cost): a NOT_LEADER from a member naming a node
    /// that is not a candidate reads that member's table at once — within
    /// HINTED_REFRESH_INTERVAL_MIN, not REFRESH_INTERVAL_MIN — asking that member alone;
    /// hinted rounds are that far apart however many hints come; a hint in a reply from an
    /// address that is not a candidate only wants an ordinary refresh.
    #[test]
    fn a_hint_to_an_unknown_node_reads_the_hinting_members_table_at_once() {
        let known = [addr(7101), addr(7102)];
        let mut d = Discovery::new(&known, false, 9);
        let asks = d.poll_round(at(0), known);
        let done = d.handle_page(
            addr(7101),
            7101,
            asks[0].request_id,
            0,
            alive(&[7101, 7102]),
        );
        assert_eq!(done, PageOutcome::Done(None));
        let hinted_ms = HINTED_REFRESH_INTERVAL_MIN.as_micros() / 1_000;
        assert!(hinted_ms < REFRESH_INTERVAL_MIN.as_micros() / 1_000);

        assert!(d.check_not_leader(addr(7102), Some(addr(7103))));
        assert!(d.hinted());
        assert!(d.poll_round(at(hinted_ms - 1), known).is_empty());
        let asks = d.poll_round(at(hinted_ms), known);
        assert_eq!(asks.len(), 1);
        assert_eq!(asks[0].to, addr(7102), "the member that hinted, alone");
        assert!(!d.hinted());
        let done = d.handle_page(
            addr(7102),
            7102,
            asks[0].request_id,
            0,
            alive(&[7101, 7102, 7103]),
        );
        assert_eq!(
            done,
            PageOutcome::Done(Some(vec![addr(7103), addr(7101), addr(7102)]))
        );
        assert!(d.knows(addr(7103)));
        assert!(
            !d.check_not_leader(addr(7101), Some(addr(7103))),
            "now a candidate"
        );

        // Hints keep coming: one hinted round per interval.
        assert!(d.check_not_leader(addr(7101), Some(addr(7104))));
        assert!(d.poll_round(at(2 * hinted_ms - 1), known).is_empty());
        assert_eq!(d.poll_round(at(2 * hinted_ms), known).len(), 1);

        // From an address that is no candidate: an ordinary refresh, on its interval.
        assert!(d.check_not_leader(addr(9999), Some(addr(7105))));
        assert!(!d.hinted());
        assert!(d.poll_round(at(3 * hinted_ms), known).is_empty());
        let interval = REFRESH_INTERVAL_MIN.as_micros() / 1_000;
        assert_eq!(d.poll_round(at(2 * hinted_ms + interval), known).len(), 2);
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

    /// Spec §7.1.4 rule 5: a first page is taken only from the address its request went
    /// to. A table sent from elsewhere, even one that lists its sender, is ignored, and the
    /// genuine answer is still read.
    #[test]
    fn a_first_page_from_another_address_is_ignored() {
        let mut d = Discovery::new(&[addr(7101)], false, 9);
        let asks = d.poll_round(at(0), [addr(7101)]);
        let forged = d.handle_page(addr(666), 666, asks[0].request_id, 0, alive(&[666, 667]));
        assert_eq!(forged, PageOutcome::Ignored);
        assert_eq!(d.candidates(), [addr(7101)]);
        let done = d.handle_page(
            addr(7101),
            7101,
            asks[0].request_id,
            0,
            alive(&[7101, 7102]),
        );
        assert_eq!(done, PageOutcome::Done(Some(vec![addr(7102), addr(7101)])));
    }

    /// A page must start at the member id asked for (spec §4.9): a first page that says it
    /// starts elsewhere is no answer; the genuine one is still read.
    #[test]
    fn a_page_that_starts_elsewhere_is_ignored() {
        use udplock_protocol::{MemberEntries, MemberEntry};
        let mut d = Discovery::new(&[addr(7101)], false, 9);
        let asks = d.poll_round(at(0), [addr(7101)]);
        let entries = [7101u16, 7102].map(|port| MemberEntry {
            id: u64::from(port),
            incarnation: 0,
            state: SwimState::Alive,
            addr: addr(port),
        });
        let page = |first_id| MembersReply {
            session_id: 9,
            request_id: asks[0].request_id,
            attempt: 0,
            status: Status::Ok,
            node_id: 7101,
            members_total: 2,
            first_id,
            next_id: 0,
            entries: MemberEntries::from_slice(&entries),
        };
        assert_eq!(d.handle_reply(addr(7101), &page(5)), PageOutcome::Ignored);
        assert_eq!(
            d.handle_reply(addr(7101), &page(0)),
            PageOutcome::Done(Some(vec![addr(7102), addr(7101)]))
        );
    }
}
