//! The placement weight of a node for a shard (spec §8.13): every node, and any other
//! implementation, must rank a shard's candidate replicas the same way, so the weight is a
//! fixed function of the node id and the shard index alone.
//!
//! Rendezvous ("highest random weight") hashing (Thaler & Ravishankar, "Using Name-Based
//! Mappings to Increase Hit Rates", IEEE/ACM ToN 1998): a shard's replicas are the nodes of
//! highest weight for it. The weight must behave like a random number per (node, shard) pair:
//! FNV-1a (spec §8.2), which the shard map uses, does not — it mixes the last bytes of its
//! input into the high bits of the result hardly at all, and measured over 4096 shards it put
//! every shard's replicas on the same few nodes. SHA-256 (already required by spec §8.11.3)
//! spreads them to within a few percent of even; a weight costs one SHA-256 block.

use sha2::{Digest, Sha256};

/// The label hashed before the node id and the shard index: ASCII, no length prefix, no
/// terminator (the style of spec §8.11.3's labels), naming the protocol version so a later
/// placement function gets its own label.
pub const PLACEMENT_LABEL: &[u8] = b"udplock v1 placement";

/// The weight of `node` for `shard`: the first 8 bytes, read as a big-endian `u64`, of
/// SHA-256(`PLACEMENT_LABEL` ‖ node as a big-endian u64 ‖ shard as a big-endian u32), a
/// 32-byte message. Higher weights rank first; equal weights rank the lower node id first.
///
/// ```
/// assert_eq!(udplock_protocol::placement_weight(1, 0), 0x072d_2b82_cf9e_5cfb);
/// ```
pub fn placement_weight(node: u64, shard: u32) -> u64 {
    let mut hash = Sha256::new();
    hash.update(PLACEMENT_LABEL);
    hash.update(node.to_be_bytes());
    hash.update(shard.to_be_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}
