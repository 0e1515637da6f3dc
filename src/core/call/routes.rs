//! Where a client's requests go (spec §7.1.7): the shard → leader cache and the suspect
//! marks that every call of one client shares, and the ring of configured servers a request
//! moves along when it knows no leader.
//!
//! Shared by the calls in flight of one client (many threads in `crate::client`, one in the
//! simulator) and read without a lock: one atomic load per entry. Entries are indexes into an
//! append-only address table, so a writer never invalidates what a reader holds; only
//! appending an address never seen before takes a (short, uncontended) lock. Pure like every
//! core: addresses in, addresses out, no IO.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use udplock_protocol::{shard_of, AddressToken};

/// Most (address, session) pairs whose address token a client keeps (spec §7.1.9): a client
/// has at most `OUTSTANDING_MAX` sessions (lanes) in use, and a handful of nodes. When the
/// book is full it starts afresh: forgetting tokens only costs RETRYs.
pub const ADDRESS_TOKENS_MAX: usize = 16_384;

/// Leader addresses learned from hints that are not among the configured servers, kept for
/// the client's lifetime. Bounded, so a node that hints ever new addresses cannot grow the
/// client's memory; a hint that no longer fits is still followed, only not remembered.
pub const LEARNED_LEADERS_MAX: usize = 64;

/// `addr` as the client's socket can send to it: on an IPv6 socket an IPv4 address becomes
/// IPv4-mapped; on an IPv4 socket an IPv4-mapped address becomes plain IPv4 (spec §5.2) and
/// other IPv6 addresses cannot be reached (`None`). Normalising every address this way makes
/// a reply's source address comparable with the addresses requests were sent to.
pub fn socket_addr_for(addr: SocketAddr, v6_socket: bool) -> Option<SocketAddr> {
    match (addr, v6_socket) {
        (SocketAddr::V4(_), false) => Some(addr),
        (SocketAddr::V4(v4), true) => Some(SocketAddr::V6(SocketAddrV6::new(
            v4.ip().to_ipv6_mapped(),
            v4.port(),
            0,
            0,
        ))),
        (SocketAddr::V6(_), true) => Some(addr),
        (SocketAddr::V6(v6), false) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), v6.port())),
    }
}

/// The shard → leader cache that all calls of one client share (spec §7.1.7).
///
/// Lock-free for readers: a call reads its shard's entry (one atomic load) and the address it
/// names (one more, in a `OnceLock`). Entries are indexes into an append-only address table,
/// so a writer never invalidates what a reader holds; only appending an address never seen
/// before takes a lock.
pub struct Routes {
    /// Every address a request may go to, in the socket's address family: the configured
    /// servers first, in their order, then leaders learned from hints that are not among
    /// them (at most [`LEARNED_LEADERS_MAX`]). A slot, once set, never changes.
    peers: Box<[OnceLock<SocketAddr>]>,
    /// How many configured servers head `peers` (at least one).
    servers_len: usize,
    /// Serialises appends to `peers`; readers never take it.
    append: Mutex<()>,
    /// One entry per shard: 0 while no leader is known, otherwise its index in `peers` + 1.
    leaders: Box<[AtomicU32]>,
    /// One flag per slot of `peers`: the address left copies unanswered and has not answered
    /// since (spec §7.1.7, "suspect").
    suspect: Box<[AtomicBool]>,
    /// The socket is IPv6 (IPv4 peers are then reached through IPv4-mapped addresses).
    v6_socket: bool,
    /// What the client knows of each address's tokens for each of its sessions (a token
    /// names one source and one session, spec §7.1.9), and for each session the latest
    /// token any node gave it (sent to a node the session holds none for, rule 3, so that
    /// with a shared cluster key a session pays the RETRY once per cluster). Read on every
    /// send; a lock held only for one hash lookup.
    tokens: Mutex<TokenBook>,
}

/// Address tokens by (peer index, session id), and the latest per session.
#[derive(Default)]
struct TokenBook {
    peers: HashMap<(u32, u64), PeerToken>,
    latest: HashMap<u64, AddressToken>,
}

/// What a client knows of one address's address tokens (spec §7.1.9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerToken {
    /// Nothing yet: send the latest token of any node, if there is one.
    #[default]
    Unknown,
    /// The token its RETRY gave this session.
    Token(AddressToken),
    /// It refused the flag (UNSUPPORTED, an older server): send it no token.
    Refused,
}

impl Routes {
    /// Routes over `servers` (non-empty) for `shards` shards (1 or more), none known yet.
    pub fn new(servers: &[SocketAddr], shards: u32, v6_socket: bool) -> Routes {
        assert!(
            !servers.is_empty() && shards > 0,
            "validated by ClientConfig"
        );
        let peers: Box<[OnceLock<SocketAddr>]> = (0..servers.len() + LEARNED_LEADERS_MAX)
            .map(|_| OnceLock::new())
            .collect();
        for (slot, &server) in peers.iter().zip(servers) {
            let addr = socket_addr_for(server, v6_socket)
                .expect("the socket's family was chosen so that every server is reachable");
            slot.set(addr).expect("a fresh slot");
        }
        let suspect = (0..peers.len()).map(|_| AtomicBool::new(false)).collect();
        Routes {
            tokens: Mutex::new(TokenBook::default()),
            peers,
            suspect,
            servers_len: servers.len(),
            append: Mutex::new(()),
            leaders: (0..shards).map(|_| AtomicU32::new(0)).collect(),
            v6_socket,
        }
    }

    /// The routes that follow these when discovery makes `servers` (non-empty, in the
    /// socket's family) the ring (spec §7.1.8 rule 2): the same shards, and what these
    /// learned carried over — the leader of every shard whose requests would not have gone
    /// to its ring guess anyway, and the suspect marks of every address both know.
    pub fn succeeded_by(&self, servers: &[SocketAddr]) -> Routes {
        let new = Routes::new(servers, self.leaders.len() as u32, self.v6_socket);
        for shard in 0..self.leaders.len() {
            let (index, addr, _) = self.first_destination(shard);
            let guess = self.server(self.ring_from(shard)).0;
            if index != guess {
                new.learn_leader(shard, addr);
            }
        }
        for addr in (0u32..).map_while(|i| self.peer(i)) {
            if let (Some(was), Some(now)) = (self.find(addr), new.find(addr)) {
                new.set_suspect(now, self.is_suspect(was));
            }
        }
        {
            let old = self.book();
            let mut book = new.book();
            for (&(index, session), &token) in &old.peers {
                if let Some(now) = self.peer(index).and_then(|addr| new.find(addr)) {
                    book.peers.insert((now, session), token);
                }
            }
            book.latest = old.latest.clone();
        }
        debug_assert_eq!(new.servers_len, servers.len());
        new
    }

    /// The shard of `resource`, an index into `leaders`.
    pub fn shard(&self, resource: &[u8]) -> usize {
        let shard = shard_of(resource, self.leaders.len() as u32) as usize;
        debug_assert!(shard < self.leaders.len());
        shard
    }

    pub fn peer(&self, index: u32) -> Option<SocketAddr> {
        self.peers.get(index as usize)?.get().copied()
    }

    /// The configured server at `position` (modulo their number), with its peer index.
    pub fn server(&self, position: usize) -> (u32, SocketAddr) {
        let index = position % self.servers_len;
        let addr = self
            .peer(index as u32)
            .expect("servers are set at creation");
        (index as u32, addr)
    }

    /// Where a new request for `shard` goes first (spec §7.1.7 rule 2): its cached leader if
    /// that is not suspect, otherwise the first configured server that is not suspect from
    /// `servers[shard % n]` on. Returns the peer index, the address and the request's ring
    /// position.
    pub fn first_destination(&self, shard: usize) -> (u32, SocketAddr, usize) {
        let home = shard % self.servers_len;
        let entry = self.leaders[shard].load(Ordering::Acquire);
        if let Some(index) = entry.checked_sub(1).filter(|&i| !self.is_suspect(i)) {
            if let Some(addr) = self.peer(index) {
                let configured = (index as usize) < self.servers_len;
                return (index, addr, if configured { index as usize } else { home });
            }
        }
        let position = self.ring_from(home);
        let (index, addr) = self.server(position);
        (index, addr, position)
    }

    /// The first ring position at or after `position` (modulo the number of configured
    /// servers) whose server is not suspect; `position` itself if every one is.
    pub fn ring_from(&self, position: usize) -> usize {
        let n = self.servers_len;
        (0..n)
            .map(|k| (position + k) % n)
            .find(|&i| !self.is_suspect(i as u32))
            .unwrap_or(position % n)
    }

    /// Spec §7.1.7 rule 7: the ring position a request moves on to from `position`: the
    /// first other server after it that is not suspect, else the next one. Never `position`
    /// itself (unless it is the only one): a server that answered NOT_LEADER without a hint,
    /// or stayed silent, is left even when every other is suspect, or a client could stay
    /// for ever with a node that holds no replica of the shard (spec §8.1) and never try
    /// again the ones that do.
    pub fn next_position(&self, position: usize) -> usize {
        let n = self.servers_len;
        (1..n)
            .map(|k| (position + k) % n)
            .find(|&i| !self.is_suspect(i as u32))
            .unwrap_or((position + 1) % n)
    }

    /// Spec §7.1.7 rule 5.3: the ring position after a NOT_LEADER without a hint from the
    /// server at `position`: the next one, suspect or not.
    pub fn next_in_ring(&self, position: usize) -> usize {
        (position + 1) % self.servers_len
    }

    /// The ring position of `addr` (already in the socket's family), if it is on the ring.
    pub fn ring_position(&self, addr: SocketAddr) -> Option<usize> {
        self.find(addr)
            .map(|index| index as usize)
            .filter(|&index| index < self.servers_len)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, TokenBook> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `session` knows of the tokens of the peer at `index` (spec §7.1.9).
    pub fn peer_token(&self, index: u32, session: u64) -> PeerToken {
        self.book()
            .peers
            .get(&(index, session))
            .copied()
            .unwrap_or_default()
    }

    /// The token `session` sends the peer at `index` (spec §7.1.9 rule 3): its own, or the
    /// latest any node gave the session while it gave none (every node of a cluster with a
    /// shared key accepts it; another answers RETRY as if there were none), or none if it
    /// refuses the flag.
    pub fn token(&self, index: u32, session: u64) -> Option<AddressToken> {
        let book = self.book();
        match book.peers.get(&(index, session)) {
            Some(PeerToken::Token(token)) => Some(*token),
            Some(PeerToken::Refused) => None,
            Some(PeerToken::Unknown) | None => book.latest.get(&session).copied(),
        }
    }

    /// The latest token any node gave `session`.
    pub fn latest_token(&self, session: u64) -> Option<AddressToken> {
        self.book().latest.get(&session).copied()
    }

    /// Keeps the token the peer at `index` gave `session` in a RETRY (rule 1), or with
    /// `None` notes that it refuses tokens (rule 5). At most [`ADDRESS_TOKENS_MAX`] kept.
    pub fn set_token(&self, index: u32, session: u64, token: Option<AddressToken>) {
        let mut book = self.book();
        if book.peers.len() >= ADDRESS_TOKENS_MAX || book.latest.len() >= ADDRESS_TOKENS_MAX {
            *book = TokenBook::default();
        }
        let entry = token.map_or(PeerToken::Refused, PeerToken::Token);
        book.peers.insert((index, session), entry);
        if let Some(token) = token {
            book.latest.insert(session, token);
        }
        debug_assert!(book.peers.len() <= ADDRESS_TOKENS_MAX);
    }

    pub fn is_suspect(&self, index: u32) -> bool {
        self.suspect
            .get(index as usize)
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Marks the peer suspect (it left copies unanswered) or trusted again (it answered).
    /// Writes only on a change, so the steady state touches no shared cache line.
    pub fn set_suspect(&self, index: u32, suspect: bool) {
        if let Some(flag) = self.suspect.get(index as usize) {
            if flag.load(Ordering::Relaxed) != suspect {
                flag.store(suspect, Ordering::Relaxed);
            }
        }
    }

    /// The peer index of `addr` (already in the socket's family), if it is known.
    pub fn find(&self, addr: SocketAddr) -> Option<u32> {
        self.peers
            .iter()
            .map_while(OnceLock::get)
            .position(|&peer| peer == addr)
            .map(|index| index as u32)
    }

    /// Records `index` as the leader of `shard`. Writes only when that changes, so calls that
    /// keep finding the same leader do not bounce the entry's cache line between CPUs.
    pub fn set_leader(&self, shard: usize, index: u32) {
        debug_assert!(self.peer(index).is_some());
        let entry = &self.leaders[shard];
        if entry.load(Ordering::Relaxed) != index + 1 {
            entry.store(index + 1, Ordering::Release);
        }
    }

    /// Records a hinted leader for `shard`, adding its address to the table if it is new and
    /// there is room. Returns its peer index; `None` when the table is full (the hint is then
    /// followed by the one call but not remembered).
    pub fn learn_leader(&self, shard: usize, addr: SocketAddr) -> Option<u32> {
        let index = match self.find(addr) {
            Some(index) => index,
            None => {
                let _append = self.append.lock().unwrap_or_else(PoisonError::into_inner);
                // Another thread may have added it meanwhile; appends are serialised here.
                match self.find(addr) {
                    Some(index) => index,
                    None => {
                        let index = self.peers.iter().position(|slot| slot.get().is_none())?;
                        self.peers[index].set(addr).expect("appends hold the lock");
                        index as u32
                    }
                }
            }
        };
        self.set_leader(shard, index);
        Some(index)
    }

    /// Forgets the leader of `shard` if it still is `index` (a node that stopped answering).
    pub fn forget_leader(&self, shard: usize, index: u32) {
        // Failing means another call already recorded something newer: keep that.
        let _ =
            self.leaders[shard].compare_exchange(index + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// A hinted leader address as this client can use it: reachable from the socket's
    /// address family, with a real IP address and port. `None` for anything else, which is
    /// then treated as no hint.
    pub fn usable_hint(&self, hint: SocketAddr) -> Option<SocketAddr> {
        if hint.port() == 0 || hint.ip().is_unspecified() || hint.ip().is_multicast() {
            return None;
        }
        socket_addr_for(hint, self.v6_socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Where a new request goes, as (peer index, address).
    fn leader(routes: &Routes, shard: usize) -> (u32, SocketAddr) {
        let (index, addr, _) = routes.first_destination(shard);
        (index, addr)
    }

    /// Spec §7.1.7 rules 2 and 7: the ring of configured servers, in their order, skipping
    /// suspects unless all are; a cached leader that became suspect is not used; a learned
    /// leader leaves the ring position at `shard mod n`.
    #[test]
    fn the_ring_skips_suspects() {
        let servers: Vec<SocketAddr> = (0..3)
            .map(|i| (Ipv4Addr::LOCALHOST, 7100 + i).into())
            .collect();
        let routes = Routes::new(&servers, 8, false);
        assert_eq!(
            routes.first_destination(4),
            (1, servers[1], 1),
            "shard 4 mod 3"
        );
        routes.set_suspect(1, true);
        assert_eq!(routes.first_destination(4), (2, servers[2], 2));
        assert_eq!(routes.next_position(2), 0);
        assert_eq!(routes.next_position(0), 2, "1 is suspect");
        routes.set_leader(4, 1);
        assert_eq!(
            routes.first_destination(4).0,
            2,
            "a suspect cached leader is not used"
        );
        let learned: SocketAddr = (Ipv4Addr::LOCALHOST, 9000).into();
        let index = routes.learn_leader(4, learned).unwrap();
        assert_eq!(routes.first_destination(4), (index, learned, 1));
        for i in 0..3 {
            routes.set_suspect(i, true);
        }
        assert_eq!(routes.next_position(0), 1, "all suspect: the next one");
        routes.set_suspect(1, false);
        assert_eq!(
            routes.next_position(1),
            2,
            "moving on moves, to a suspect one if no other is left"
        );
        assert_eq!(routes.next_position(0), 1, "the one not suspect");
    }

    /// The table of learned leaders is bounded; a hint beyond it is followed but not kept.
    #[test]
    fn learned_leaders_are_bounded() {
        let server: SocketAddr = (Ipv4Addr::LOCALHOST, 7100).into();
        let routes = Routes::new(&[server], 4, false);
        assert_eq!(leader(&routes, 3), (0, server));
        for port in 0..LEARNED_LEADERS_MAX as u16 {
            let addr = (Ipv4Addr::LOCALHOST, 8000 + port).into();
            assert_eq!(routes.learn_leader(3, addr), Some(u32::from(port) + 1));
            assert_eq!(leader(&routes, 3).1, addr);
        }
        // Known addresses are found again, not added twice.
        assert_eq!(routes.learn_leader(2, server), Some(0));
        let full = routes.learn_leader(1, (Ipv4Addr::LOCALHOST, 9999).into());
        assert_eq!(full, None);
        assert_eq!(leader(&routes, 1), (0, server), "still the initial guess");
        routes.forget_leader(3, 0); // not the current entry: no effect
        assert_eq!(leader(&routes, 3).1, (Ipv4Addr::LOCALHOST, 8063).into());
        routes.forget_leader(3, LEARNED_LEADERS_MAX as u32);
        assert_eq!(leader(&routes, 3), (0, server));
    }

    #[test]
    fn addresses_are_normalised_to_the_sockets_family() {
        let v4: SocketAddr = "10.0.0.1:7100".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:7100".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:7100".parse().unwrap();
        assert_eq!(socket_addr_for(v4, false), Some(v4));
        assert_eq!(socket_addr_for(mapped, false), Some(v4));
        assert_eq!(socket_addr_for(v6, false), None);
        assert_eq!(socket_addr_for(v4, true), Some(mapped));
        assert_eq!(socket_addr_for(v6, true), Some(v6));
        let routes = Routes::new(&[v4], 1, false);
        assert_eq!(routes.usable_hint(mapped), Some(v4));
        assert_eq!(routes.usable_hint("0.0.0.0:7100".parse().unwrap()), None);
        assert_eq!(routes.usable_hint("10.0.0.2:0".parse().unwrap()), None);
        assert_eq!(routes.usable_hint(v6), None);
    }
}
