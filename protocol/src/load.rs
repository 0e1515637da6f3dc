//! PEER_LOAD (spec/node-protocol.md §8.14): which of a node's limits per node (spec
//! client-protocol §9.1) it has reached, told to the leaders of the shards it holds, so that
//! they stop admitting what would add to them. A leader checks only its own node's counts;
//! without this, a node that follows every shard it holds was bound only per shard.
//!
//! ```text
//! PEER_LOAD   header (type 0x42, session_id = cluster id, request_id = from)
//!             | reached u16 | reserved [6]                   (no padding; AUTH trailer after)
//! ```
//!
//! Never answered; an older node drops it (a node-to-node type it does not know, spec §3.2).

use crate::auth::AuthTrailer;
use crate::be::u16_at;
use crate::header::field as hfield;
use crate::peer::{decode_node_datagram, NodeDatagram, PeerHeader};
use crate::registry::MessageType;
use crate::{all_zero, DecodeError, EncodeError, HEADER_LEN, MAGIC, VERSION};

/// Length of a PEER_LOAD body: `reached` and six reserved bytes.
pub const PEER_LOAD_BODY_LEN: usize = 8;
/// Length of an unauthenticated PEER_LOAD datagram.
pub const PEER_LOAD_LEN: usize = HEADER_LEN + PEER_LOAD_BODY_LEN;

const _: () = assert!(PEER_LOAD_LEN == 40);

/// The bits of `reached` (spec §8.14): one per limit per node. Bits not listed here are zero
/// when sent and ignored when received (a later revision may add limits).
pub mod reached {
    /// `resources_per_node_max`.
    pub const RESOURCES: u16 = 0x0001;
    /// `sessions_per_node_max`.
    pub const SESSIONS: u16 = 0x0002;
    /// `answers_per_node_max` (requests that may add answers).
    pub const ANSWERS: u16 = 0x0004;
    /// `answers_per_node_max + answers_reserve_per_node` (releases and renewals too).
    pub const ANSWERS_RESERVE: u16 = 0x0008;
    /// `waiters_per_node_max`.
    pub const WAITERS: u16 = 0x0010;
    /// `log_bytes_per_node_max`.
    pub const LOG_BYTES: u16 = 0x0020;
    /// Every bit this revision defines.
    pub const ALL: u16 = RESOURCES | SESSIONS | ANSWERS | ANSWERS_RESERVE | WAITERS | LOG_BYTES;
}

/// A PEER_LOAD datagram (spec §8.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLoad {
    /// The sender's cluster id and node id, as in PEER (spec §8.3).
    pub header: PeerHeader,
    /// Set by [`PeerLoad::decode`] when the AUTH flag is (spec §8.11): the trailer, its layout
    /// checked, its MAC not. [`PeerLoad::encode`] ignores it and writes an unauthenticated
    /// datagram, which [`crate::ClusterKey::seal`] then authenticates.
    pub auth: Option<AuthTrailer>,
    /// The limits per node the sender has reached ([`reached`]), as sent: bits this revision
    /// does not define are kept (a receiver ignores them).
    pub reached: u16,
}

impl PeerLoad {
    /// Decodes a PEER_LOAD datagram (spec §8.14: the checks every node-to-node datagram
    /// shares, then `body_len` 8 and the reserved bytes zero). Never panics; never allocates.
    pub fn decode(datagram: &[u8]) -> Result<PeerLoad, DecodeError> {
        let NodeDatagram { header, auth, body } =
            decode_node_datagram(datagram, MessageType::PeerLoad)?;
        if body.len() != PEER_LOAD_BODY_LEN {
            return Err(DecodeError::BadBodyLength);
        }
        if !all_zero(&body[2..]) {
            return Err(DecodeError::ReservedNonZero);
        }
        Ok(PeerLoad {
            header,
            auth,
            reached: u16_at(body, 0),
        })
    }

    /// Encodes the datagram (unauthenticated, unpadded); returns its length,
    /// [`PEER_LOAD_LEN`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if self.header.cluster_id == 0 || self.header.from == 0 {
            return Err(EncodeError::ZeroId);
        }
        let out = out
            .get_mut(..PEER_LOAD_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        out[hfield::MAGIC].copy_from_slice(&MAGIC);
        out[hfield::VERSION] = VERSION;
        out[hfield::MSG_TYPE] = MessageType::PeerLoad.to_wire();
        out[hfield::FLAGS].fill(0);
        out[hfield::BODY_LEN].copy_from_slice(&(PEER_LOAD_BODY_LEN as u16).to_be_bytes());
        out[hfield::SESSION_ID].copy_from_slice(&self.header.cluster_id.to_be_bytes());
        out[hfield::REQUEST_ID].copy_from_slice(&self.header.from.to_be_bytes());
        out[hfield::ATTEMPT.start..hfield::RESERVED.end].fill(0);
        out[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&self.reached.to_be_bytes());
        out[HEADER_LEN + 2..].fill(0);
        Ok(PEER_LOAD_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_load_round_trips_and_refuses_reserved_bytes() {
        let load = PeerLoad {
            header: PeerHeader {
                cluster_id: 7,
                from: 3,
            },
            auth: None,
            reached: reached::ANSWERS | reached::WAITERS,
        };
        let mut out = [0u8; 64];
        let n = load.encode(&mut out).unwrap();
        assert_eq!(n, PEER_LOAD_LEN);
        assert_eq!(PeerLoad::decode(&out[..n]), Ok(load));
        out[HEADER_LEN + 7] = 1;
        assert_eq!(
            PeerLoad::decode(&out[..n]),
            Err(DecodeError::ReservedNonZero)
        );
        assert_eq!(
            PeerLoad::decode(&out[..n - 1]),
            Err(DecodeError::BadBodyLength)
        );
    }
}
