//! Which shard a resource belongs to (spec §8.2).
//!
//! A cluster splits its resources into a fixed number of shards, each one Raft group. Clients
//! and nodes must agree on the mapping without talking to each other, so it is a pure function
//! of the resource id's bytes and the shard count: FNV-1a 64 [FNV], reduced modulo the count.
//! FNV-1a is tiny, has no key or seed to configure, and spreads short, similar ids (`orders/41`,
//! `orders/42`) well enough for load balancing; nothing here needs resistance to chosen ids,
//! because a client that crowds one shard only slows its own locks.
//!
//! [FNV]: the Fowler/Noll/Vo hash, as in the IETF draft "The FNV Non-Cryptographic Hash
//! Algorithm" (draft-eastlake-fnv).

/// Most shards a cluster may have. A shard index travels in a `u16` in PEER records; 4096
/// keeps per-shard state (one Raft group per shard on every node) bounded.
pub const SHARDS_MAX: u32 = 4096;
/// The shard count a cluster gets when its creator does not choose one.
pub const SHARDS_DEFAULT: u32 = 64;
/// FNV-1a 64 offset basis: the hash of the empty id.
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const _: () = assert!(SHARDS_MAX <= u16::MAX as u32 + 1);
const _: () = assert!(SHARDS_DEFAULT >= 1 && SHARDS_DEFAULT <= SHARDS_MAX);

/// FNV-1a 64 of the resource id's bytes: for each byte, XOR it into the low byte of the hash,
/// then multiply by [`FNV_PRIME`] modulo 2^64; start from [`FNV_OFFSET_BASIS`].
///
/// ```
/// assert_eq!(udplock_protocol::shard_hash(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(udplock_protocol::shard_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub const fn shard_hash(resource: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    let mut i = 0;
    while i < resource.len() {
        hash ^= resource[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// The shard of `resource` in a cluster of `shards` shards: `shard_hash(resource) % shards`.
///
/// `shards` must be in `1..=SHARDS_MAX`; to stay panic-free, 0 is treated as 1 and larger
/// values as [`SHARDS_MAX`], so the result is always a valid shard index (below
/// [`SHARDS_MAX`] and below `shards` when `shards` is valid).
pub const fn shard_of(resource: &[u8], shards: u32) -> u32 {
    let shards = if shards == 0 {
        1
    } else if shards > SHARDS_MAX {
        SHARDS_MAX
    } else {
        shards
    };
    (shard_hash(resource) % shards as u64) as u32
}
