//! Requests in flight per source address, counted per shard and per node (spec §9, §9.1).
//!
//! A leader counts each client request it proposes under the request's source IP address
//! (any port) until the request applies or the replica stops leading. A source gets
//! OVERLOADED for its next request when it has [`super::IN_FLIGHT_PER_SOURCE_MAX`] in flight
//! at this shard (so that one host cannot take a shard's whole window of uncommitted
//! proposals), or `in_flight_per_source_max` at the node, over every shard the node leads
//! (one host's share of the node; without it a host could have 64 times as many in flight
//! at a node leading 64 shards).
//!
//! Each replica keeps its own counts ([`SourceCounts`]) and adds them to its node's
//! ([`InFlight`], one per node, shared by every replica as `raft::NodeShared` is): a replica
//! that stops leading, or is dropped, takes its counts out of the node's. Pure: no IO, no
//! clock; deterministic when one thread drives every shard, as a node and the simulator do.
//!
//! A source is hashed once per use ([`SourceCounts::key`]: keyed SipHash-1-3 of its address
//! bytes, `core::keyed_hash`, as sources come from the network), under its node's
//! key, and that hash serves both the replica's map and
//! the node's: a proposal costs one hash to admit and count, and none when it applies (the
//! replica keeps the hashed [`Source`] with the proposal).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::keyed_hash::KeyedHash;

/// A source address with its hash under its node's key ([`SourceCounts::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    ip: IpAddr,
    hash: u64,
}

impl Source {
    /// The address hashed.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Hash for Source {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The keyed hash already spreads it: the maps' hasher passes it through.
        state.write_u64(self.hash);
    }
}

/// The maps' hasher: a [`Source`]'s hash as it is (it is keyed SipHash already).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        // Only `Source` is hashed here, with `write_u64`; anything else is folded in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type SourceMap<V> = HashMap<Source, V, BuildHasherDefault<Prehashed>>;

/// A node's requests in flight per source address, over all its shard leaders; a handle
/// shared by every replica of the node (cheap clones of one state).
#[derive(Clone, Debug)]
pub struct InFlight {
    inner: Arc<Mutex<NodeCounts>>,
    /// The key every replica of the node hashes sources with (drawn once per node).
    key: KeyedHash,
}

#[derive(Debug)]
struct NodeCounts {
    /// A source with this many in flight gets OVERLOADED for its next request.
    per_source_max: u64,
    /// Sources with at least one request in flight (never a zero count).
    counts: SourceMap<u64>,
}

impl InFlight {
    /// A node's counts, refusing a source's request past `per_source_max` in flight.
    pub fn new(per_source_max: u64) -> InFlight {
        assert!(per_source_max > 0, "validated: a node that admits nothing");
        InFlight {
            inner: Arc::new(Mutex::new(NodeCounts {
                per_source_max,
                counts: SourceMap::default(),
            })),
            key: KeyedHash::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NodeCounts> {
        // One thread drives a node's replicas; a panic elsewhere leaves the counts whole.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `source` hashed under this node's key.
    fn key(&self, ip: IpAddr) -> Source {
        Source {
            ip,
            // The address's own bytes (4 or 16): a v4 address and its v6-mapped form may
            // share a hash, and stay apart by `ip` (`Source`'s equality).
            hash: match ip {
                IpAddr::V4(v4) => self.key.of_bytes(&v4.octets()),
                IpAddr::V6(v6) => self.key.of_bytes(&v6.octets()),
            },
        }
    }

    /// Requests of `source` in flight over the node's shard leaders.
    pub fn count(&self, source: IpAddr) -> u64 {
        let source = self.key(source);
        self.lock().counts.get(&source).copied().unwrap_or(0)
    }

    /// Whether `source` has as many in flight as the node allows.
    pub fn full(&self, source: IpAddr) -> bool {
        self.full_keyed(self.key(source))
    }

    fn full_keyed(&self, source: Source) -> bool {
        let counts = self.lock();
        counts.counts.get(&source).copied().unwrap_or(0) >= counts.per_source_max
    }

    /// Sources with a request in flight (tests, invariants).
    pub fn sources(&self) -> usize {
        self.lock().counts.len()
    }

    fn add(&self, source: Source, n: u64) {
        debug_assert_eq!(source, self.key(source.ip), "hashed under this node's key");
        *self.lock().counts.entry(source).or_default() += n;
    }

    fn remove(&self, source: Source, n: u64) {
        debug_assert_eq!(source, self.key(source.ip), "hashed under this node's key");
        match self.lock().counts.entry(source) {
            Entry::Occupied(mut entry) => {
                let count = entry
                    .get()
                    .checked_sub(n)
                    .expect("a replica's count is in its node's");
                if count == 0 {
                    entry.remove();
                } else {
                    *entry.get_mut() = count;
                }
            }
            Entry::Vacant(_) => panic!("a replica's count is in its node's"),
        }
    }
}

/// One replica's requests in flight per source, added to its node's ([`InFlight`]); its
/// sources are hashed under the node's key.
#[derive(Debug)]
pub struct SourceCounts {
    own: SourceMap<u32>,
    node: InFlight,
}

impl SourceCounts {
    /// Counts of a replica alone (its own node handle, as loose as the shard's limit) until
    /// [`SourceCounts::share`] gives it its node's.
    pub fn alone(per_shard_max: u32) -> SourceCounts {
        SourceCounts {
            own: SourceMap::default(),
            node: InFlight::new(u64::from(per_shard_max)),
        }
    }

    /// Counts into `node` from now on, carrying over what is in flight (hashed again under
    /// `node`'s key).
    pub fn share(&mut self, node: InFlight) {
        let own = std::mem::take(&mut self.own);
        for (source, n) in own {
            self.node.remove(source, u64::from(n));
            let source = node.key(source.ip);
            node.add(source, u64::from(n));
            self.own.insert(source, n);
        }
        self.node = node;
    }

    /// `source` hashed for this replica's (and its node's) counts: once per request, for
    /// [`SourceCounts::get`], [`SourceCounts::node_full`], [`SourceCounts::add`] and, when it
    /// applies, [`SourceCounts::remove`]. Valid until the next [`SourceCounts::share`].
    pub fn key(&self, source: IpAddr) -> Source {
        self.node.key(source)
    }

    /// Requests of `source` this replica has in flight.
    pub fn get(&self, source: Source) -> u32 {
        self.own.get(&source).copied().unwrap_or(0)
    }

    /// Whether the node allows `source` no more in flight.
    pub fn node_full(&self, source: Source) -> bool {
        self.node.full_keyed(source)
    }

    /// A request of `source` proposed.
    pub fn add(&mut self, source: Source) {
        *self.own.entry(source).or_default() += 1;
        self.node.add(source, 1);
    }

    /// A request of `source` that this replica counted applied.
    pub fn remove(&mut self, source: Source) {
        let Entry::Occupied(mut entry) = self.own.entry(source) else {
            panic!("counted when proposed");
        };
        *entry.get_mut() -= 1;
        if *entry.get() == 0 {
            entry.remove();
        }
        self.node.remove(source, 1);
    }

    /// Nothing in flight any more (the replica stopped leading).
    pub fn clear(&mut self) {
        for (source, n) in self.own.drain() {
            self.node.remove(source, u64::from(n));
        }
    }

    /// Everything this replica has in flight.
    pub fn total(&self) -> u64 {
        self.own.values().map(|&n| u64::from(n)).sum()
    }
}

impl Drop for SourceCounts {
    fn drop(&mut self) {
        // A dropped replica (removed from its shard) takes its part out of the node's.
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas sharing a node's counts: each adds to the node's, and takes its own part out
    /// when it stops leading or is dropped; the node's limit is over all of them.
    #[test]
    fn replicas_count_into_their_nodes_and_take_their_part_out() {
        let node = InFlight::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut one = SourceCounts::alone(1_024);
        one.add(one.key(a));
        one.share(node.clone());
        let mut two = SourceCounts::alone(1_024);
        two.share(node.clone());
        let (ka, kb) = (two.key(a), two.key(b));
        assert_eq!(one.key(a), ka, "one key per node, carried over by share");
        two.add(ka);
        assert!(!node.full(a));
        two.add(ka);
        assert!(node.full(a) && one.node_full(ka), "3 over two replicas");
        assert!(!node.full(b) && !two.node_full(kb));
        assert_eq!((one.get(ka), two.get(ka), node.count(a)), (1, 2, 3));
        one.remove(ka);
        one.add(ka);
        two.remove(ka);
        assert_eq!(node.count(a), 2);
        two.clear();
        assert_eq!((two.total(), node.count(a)), (0, 1));
        drop(one);
        assert_eq!((node.count(a), node.sources()), (0, 0));
    }
}
