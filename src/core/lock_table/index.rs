//! The resource index: resource id → slot number, without a second copy of the id.
//!
//! A `HashMap<Box<[u8]>, u32>` would hold every resource id twice (once as its key, once in the
//! slot, which needs it to leave the map when a timer frees the resource), or share it through an
//! `Arc` with a 16-byte header. Instead the map is keyed by a 64-bit hash of the id and points
//! at the first slot of a chain; slots whose ids share a hash are linked through `next`, one
//! `u32` per slot. The id itself lives only in the slot, and every lookup compares it. With
//! keyed SipHash, two ids sharing 64 hash bits is rare (about 4e-7 for 4 million ids) and cannot
//! be forced by a client who does not know the keys, so chains almost always have one link.
//!
//! The hash keys only decide where an entry sits in memory, never an output: nothing here is
//! iterated, so the table stays deterministic whatever keys are drawn.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::core::keyed_hash::KeyedHash;

/// How an index hashes an id: the table's keyed SipHash ([`KeyedHash`]), or a test's.
pub(super) trait IdHash {
    fn hash_id(&self, id: &[u8]) -> u64;
}

impl IdHash for KeyedHash {
    fn hash_id(&self, id: &[u8]) -> u64 {
        self.of_bytes(id)
    }
}

/// A resource id's keyed hash ([`ResourceIndex::hash`]): valid only for the index that
/// made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ResourceHash(u64);

/// End of a chain. Slot numbers stay below `resources_max`, a `u32`, so never reach it.
pub(super) const NONE: u32 = u32::MAX;

/// Resource id → slot, with the ids themselves kept by the caller's slots.
pub(super) struct ResourceIndex<S = KeyedHash> {
    /// Keys the 64-bit hash of an id; random per table against hash flooding.
    hash_state: S,
    /// Hash of an id → the first slot of the chain of slots whose ids have that hash.
    heads: HashMap<u64, u32, BuildHasherDefault<HashIsKey>>,
    /// `next[slot]`: the next slot in `slot`'s chain, or [`NONE`].
    next: Vec<u32>,
}

impl ResourceIndex<KeyedHash> {
    pub(super) fn new() -> Self {
        Self::with_hasher(KeyedHash::new())
    }
}

impl<S: IdHash> ResourceIndex<S> {
    pub(super) fn with_hasher(hash_state: S) -> Self {
        ResourceIndex {
            hash_state,
            heads: HashMap::default(),
            next: Vec::new(),
        }
    }

    /// `key`'s hash under this index's key: computed once per request and passed to
    /// [`ResourceIndex::find`], [`ResourceIndex::insert`] and [`ResourceIndex::remove`], so a
    /// request that looks a resource up, creates or forgets it hashes its id once.
    pub(super) fn hash(&self, key: &[u8]) -> ResourceHash {
        ResourceHash(self.hash_state.hash_id(key))
    }

    /// The slot holding `key`, whose hash is `hash`; `resource_of(slot)` must return the id
    /// stored in `slot`.
    pub(super) fn find<'s>(
        &self,
        hash: ResourceHash,
        key: &[u8],
        resource_of: impl Fn(u32) -> &'s [u8],
    ) -> Option<u32> {
        debug_assert_eq!(hash, self.hash(key), "hashed under this index's key");
        let mut slot = *self.heads.get(&hash.0)?;
        loop {
            if resource_of(slot) == key {
                return Some(slot);
            }
            slot = self.next[slot as usize];
            if slot == NONE {
                return None;
            }
        }
    }

    /// Adds `slot`, which holds the id whose hash is `hash`. The caller ensures that id is
    /// not indexed yet.
    pub(super) fn insert(&mut self, hash: ResourceHash, slot: u32) {
        assert!(slot != NONE, "slot number {slot} is the chain terminator");
        let index = slot as usize;
        if self.next.len() <= index {
            self.next.resize(index + 1, NONE);
        }
        match self.heads.entry(hash.0) {
            Entry::Vacant(entry) => {
                entry.insert(slot);
                self.next[index] = NONE;
            }
            Entry::Occupied(mut entry) => {
                assert!(*entry.get() != slot, "slot {slot} indexed twice");
                self.next[index] = *entry.get();
                *entry.get_mut() = slot;
            }
        }
    }

    /// Removes `slot`, which holds the id whose hash is `hash` and must be indexed.
    pub(super) fn remove(&mut self, hash: ResourceHash, slot: u32) {
        let index = slot as usize;
        let Entry::Occupied(mut head) = self.heads.entry(hash.0) else {
            panic!("slot {slot} is not in the resource index");
        };
        if *head.get() == slot {
            match self.next[index] {
                NONE => {
                    head.remove();
                }
                next => *head.get_mut() = next,
            }
        } else {
            let mut previous = *head.get();
            loop {
                let next = self.next[previous as usize];
                assert!(next != NONE, "slot {slot} is not in its hash chain");
                if next == slot {
                    self.next[previous as usize] = self.next[index];
                    break;
                }
                previous = next;
            }
        }
        self.next[index] = NONE;
    }

    /// Number of chains (equals the number of ids unless two ids share a hash).
    #[cfg(test)]
    pub(super) fn chains(&self) -> usize {
        self.heads.len()
    }
}

/// For maps whose keys are already keyed SipHash outputs (this index's, the table's session
/// map): hashing them again would only cost time.
#[derive(Default)]
pub(super) struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; fold anything else in rather than panic.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every id hashes to 0, so every id lands in one chain.
    struct Collide;
    impl IdHash for Collide {
        fn hash_id(&self, _: &[u8]) -> u64 {
            0
        }
    }

    #[test]
    fn colliding_ids_are_chained_found_and_removed_in_any_order() {
        let ids: Vec<Vec<u8>> = (0..6u8).map(|i| vec![b'r', i]).collect();
        let mut index = ResourceIndex::with_hasher(Collide);
        for (slot, id) in ids.iter().enumerate() {
            index.insert(index.hash(id), slot as u32);
        }
        assert_eq!(index.chains(), 1);
        let resource_of = |slot: u32| ids[slot as usize].as_slice();
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(
                index.find(index.hash(id), id, resource_of),
                Some(slot as u32)
            );
        }
        assert_eq!(
            index.find(index.hash(b"absent"), b"absent", resource_of),
            None
        );
        // Middle, head, tail, then the rest.
        for slot in [2u32, 5, 0, 1, 4, 3] {
            let id = &ids[slot as usize];
            index.remove(index.hash(id), slot);
            assert_eq!(index.find(index.hash(id), id, resource_of), None);
        }
        assert_eq!(index.chains(), 0);
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(
                index.find(index.hash(id), id, resource_of),
                None,
                "slot {slot}"
            );
        }
    }

    #[test]
    fn distinct_ids_get_their_own_chain() {
        let ids: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i, i]).collect();
        let mut index = ResourceIndex::new();
        for (slot, id) in ids.iter().enumerate() {
            index.insert(index.hash(id), slot as u32);
        }
        assert_eq!(index.chains(), 100);
        let resource_of = |slot: u32| ids[slot as usize].as_slice();
        let (a, b) = (&ids[42], &ids[43]);
        assert_eq!(index.find(index.hash(a), a, resource_of), Some(42));
        index.remove(index.hash(a), 42);
        assert_eq!(index.find(index.hash(a), a, resource_of), None);
        assert_eq!(index.find(index.hash(b), b, resource_of), Some(43));
    }
}
