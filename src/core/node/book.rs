//! The address book (spec §8.3 rule 3): which nodes this node sends to and accepts
//! node-to-node datagrams from, and at which address. A node knows
//!
//! - the static peer list ([`Config::peers`]: the voters, `--peers` or the node that
//!   bootstrapped a joined cluster);
//! - the seeds of a joined node ([`Joined::seeds`], with the ids its discovery learned);
//! - every SWIM member (alive, suspect, dead or left, until SWIM forgets it), at the address
//!   SWIM holds for it;
//! - and over all of these, the address a member *proved* last: the source of an
//!   authenticated datagram of its own that carries its own SWIM update naming that source.
//!   A member that comes back at a new address (a restart with another `--advertise`) is
//!   reached there at once, even before SWIM's table says so (SWIM takes a new address only
//!   with a higher incarnation). A proof stands until SWIM's address for the member changes.
//!
//! A datagram from a node the book does not know, or from a known node at another address,
//! is accepted only by [`stranger_announces_itself`] and the stateless checks of spec §8.11
//! (`PeerAuth::check_stranger`); the state kept for such senders before they become members
//! is bounded by [`JOINERS_MAX`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use udplock_protocol::{PeerDatagram, PeerRecord, SwimState};

use super::config::{Config, Joined};
use crate::core::raft::NodeId;
use crate::core::swim::MemberInfo;

/// Senders this node keeps authentication state for (an incarnation and a replay window,
/// spec §8.11) although they are not in its address book: nodes that passed the stateless
/// checks with their own join and have not become members yet. Beyond it the oldest is
/// forgotten (it passes again with its next join). A join needs one exchange to learn the
/// receiver's incarnation and one more to be accepted, so a few dozen nodes joining within
/// one protocol period fit; the memory is 150 bytes each.
pub const JOINERS_MAX: usize = 64;

/// See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressBook {
    /// Where each known node is reached.
    to: BTreeMap<NodeId, SocketAddr>,
    /// Which node an address names (SWIM names its receivers by address): SWIM's address of
    /// each member, alive ones over dead ones, and the proven and static ones.
    by_addr: BTreeMap<SocketAddr, NodeId>,
    /// Addresses members proved: (the address, SWIM's address for the member then).
    proven: BTreeMap<NodeId, (SocketAddr, Option<SocketAddr>)>,
    /// Senders admitted by their own join that are not in the book yet, oldest first.
    joiners: VecDeque<NodeId>,
    /// The version of SWIM's table (`Swim::version`) the book was last built from; `None`
    /// before the first build and after a proof changed it ([`AddressBook::refresh`]).
    built: Option<u64>,
}

impl AddressBook {
    /// The address node `id` is reached at, if it is known.
    pub fn address_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.to.get(&id).copied()
    }

    /// The node an address of SWIM's names.
    pub fn node_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.by_addr.get(&addr).copied()
    }

    /// Whether `id` is known and `source` is its address.
    pub fn knows(&self, id: NodeId, source: SocketAddr) -> bool {
        self.to.get(&id) == Some(&source)
    }

    /// Every known node and its address, by id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.to.iter().map(|(&id, &a)| (id, a))
    }

    /// [`AddressBook::rebuild`] from SWIM's table at `version` (`Swim::version`), only if the
    /// table moved since the last build or a proof changed the book since; `members` is
    /// called only then. `None`: the book is already what a rebuild would give (the static
    /// list and the seeds never change), and nothing was done. The node calls it after every
    /// input that reaches SWIM: a rebuild lists and sorts the whole table, O(n log n) at
    /// every PEER datagram of a 1,000-member cluster, while the table changes seldom.
    pub fn refresh(
        &mut self,
        config: &Config,
        version: u64,
        members: impl FnOnce() -> Vec<MemberInfo>,
    ) -> Option<Vec<NodeId>> {
        if self.built == Some(version) {
            return None;
        }
        let gone = self.rebuild(config, &members());
        self.built = Some(version);
        Some(gone)
    }

    /// Builds the book from the static list, the seeds and SWIM's `members` (this node's
    /// id excluded throughout); returns the nodes that left it (to forget their
    /// authentication state).
    pub fn rebuild(&mut self, config: &Config, members: &[MemberInfo]) -> Vec<NodeId> {
        let me = config.node_id;
        let old = std::mem::take(&mut self.to);
        self.by_addr.clear();
        for &(id, addr) in &config.peers {
            if id != me {
                self.to.insert(id, addr);
                self.by_addr.insert(addr, id);
            }
        }
        let seeds = config
            .joined
            .as_ref()
            .map_or(&[][..], |j: &Joined| &j.seeds);
        for &(id, addr) in seeds {
            self.to.entry(id).or_insert(addr);
            self.by_addr.entry(addr).or_insert(id);
        }
        // Dead and left ones first, so that an alive member at a reused address wins it.
        let mut members: Vec<&MemberInfo> = members.iter().filter(|m| m.id != me).collect();
        members.sort_by_key(|m| matches!(m.state, SwimState::Alive | SwimState::Suspect));
        let mut swim_addr = BTreeMap::new();
        for m in members {
            self.to.insert(m.id, m.addr);
            self.by_addr.insert(m.addr, m.id);
            swim_addr.insert(m.id, m.addr);
        }
        // A proof stands while SWIM's address for the member is the one it had then.
        self.proven
            .retain(|id, (_, then)| self.to.contains_key(id) && swim_addr.get(id) == then.as_ref());
        for (&id, &(addr, _)) in &self.proven {
            self.to.insert(id, addr);
            self.by_addr.insert(addr, id);
        }
        self.joiners.retain(|id| !self.to.contains_key(id));
        old.into_keys()
            .filter(|id| !self.to.contains_key(id) && !self.joiners.contains(id))
            .collect()
    }

    /// Member `id` proved it is at `addr` (see the module docs); SWIM holds `swim_addr`
    /// for it. True if that changed where it is reached.
    pub fn prove(&mut self, id: NodeId, addr: SocketAddr, swim_addr: Option<SocketAddr>) -> bool {
        if self.to.get(&id) == Some(&addr) {
            return false;
        }
        self.proven.insert(id, (addr, swim_addr));
        // In the book now: no longer a joiner (whose state could be forgotten to make room).
        self.joiners.retain(|&j| j != id);
        self.to.insert(id, addr);
        self.by_addr.insert(addr, id);
        // The next refresh rebuilds, as every input that reached SWIM did before versions:
        // a proof of a node SWIM does not hold stands only until then.
        self.built = None;
        true
    }

    /// A sender not in the book passed the checks with its own join: remember it as a
    /// joiner. Returns the joiner forgotten to make room ([`JOINERS_MAX`]), if any.
    pub fn admit_joiner(&mut self, id: NodeId) -> Option<NodeId> {
        if self.to.contains_key(&id) || self.joiners.contains(&id) {
            return None;
        }
        let evicted = if self.joiners.len() >= JOINERS_MAX {
            self.joiners.pop_front()
        } else {
            None
        };
        self.joiners.push_back(id);
        assert!(self.joiners.len() <= JOINERS_MAX);
        evicted
    }

    /// Joiners waiting (for tests and stats).
    pub fn joiners(&self) -> usize {
        self.joiners.len()
    }
}

/// Spec §8.3 rule 3: whether a PEER datagram of node `from`, which the address book does not
/// know at `source`, may be acted on at all: it carries only SWIM records, and one of them
/// holds `from`'s own update, alive, at `source` — a node announcing itself where it is. The
/// caller checks the authentication (`PeerAuth::check_stranger`, then `PeerAuth::check`).
pub fn stranger_announces_itself(
    peer: &PeerDatagram<'_>,
    from: NodeId,
    source: SocketAddr,
) -> bool {
    let mut announced = false;
    for record in peer.all_records() {
        let PeerRecord::Swim(msg) = record else {
            return false;
        };
        let updates = match msg {
            udplock_protocol::SwimMessage::PushPull { members, .. } => Some(members),
            other => other.gossip().copied(),
        };
        announced |= updates.is_some_and(|u| {
            u.iter()
                .any(|u| u.id == from && u.addr == source && u.state == SwimState::Alive)
        });
    }
    announced
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::time::Instant;

    fn member(id: NodeId, state: SwimState) -> MemberInfo {
        MemberInfo {
            id,
            addr: SocketAddr::from(([10, 0, 0, id as u8], 7000)),
            incarnation: 1,
            state,
            since: Instant::ZERO,
        }
    }

    /// `refresh` reads SWIM's table and rebuilds only when its version moved or a proof
    /// changed the book; the book it leaves is the one a full rebuild gives.
    #[test]
    fn the_book_is_rebuilt_only_when_the_table_moved() {
        let config = Config::new(1, vec![(1, "10.0.0.1:7000".parse().unwrap())]);
        let mut table = vec![member(2, SwimState::Alive), member(3, SwimState::Alive)];
        let mut book = AddressBook::default();
        let mut reads = 0;
        let mut read = |t: &Vec<MemberInfo>| {
            reads += 1;
            t.clone()
        };
        assert_eq!(book.refresh(&config, 0, || read(&table)), Some(vec![]));
        assert_eq!(book.refresh(&config, 0, || read(&table)), None);
        assert_eq!(book.address_of(3), Some(table[1].addr));
        // The table moves: member 3 is forgotten, member 4 comes.
        table = vec![member(2, SwimState::Alive), member(4, SwimState::Dead)];
        assert_eq!(book.refresh(&config, 1, || read(&table)), Some(vec![3]));
        let mut fresh = AddressBook::default();
        fresh.rebuild(&config, &table);
        fresh.built = Some(1);
        assert_eq!(book, fresh);
        // A proof changes the book: the next refresh rebuilds at the same version; a proof
        // that changes nothing does not.
        let moved: SocketAddr = "10.0.9.2:7000".parse().unwrap();
        assert!(book.prove(2, moved, Some(table[0].addr)));
        assert_eq!(book.refresh(&config, 1, || read(&table)), Some(vec![]));
        assert_eq!(book.address_of(2), Some(moved));
        assert!(!book.prove(2, moved, Some(table[0].addr)));
        assert_eq!(book.refresh(&config, 1, || read(&table)), None);
        assert_eq!(reads, 3);
    }
}
