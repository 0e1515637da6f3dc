//! REMOVE (spec §4.10, §5.9; issue 10 §2): an operator retires a member that is gone for good.
//!
//! The one client request that changes membership, so the one that is authenticated: with
//! the admin MAC of a cluster key this node accepts (`ClusterKey::verify_admin`, its own
//! derivation label, so no peer MAC is ever an admin MAC). A REMOVE that does not decode, names
//! a key this node does not hold, or whose MAC does not verify is dropped without a word and
//! counted ([`NodeStats::remove_dropped`]): an unauthenticated sender learns nothing.
//!
//! An authenticated one goes to the SWIM member (`Swim::remove`), which holds the member left
//! at the named incarnation if it holds it suspect or dead there, and gossips it as a leave;
//! placement treats a left member as gone at once (spec §8.13). The reply (64 bytes, for a
//! 76-byte request: no amplification) says what happened. Tying the removal to the member's
//! incarnation is the replay defence (spec §12): a node that came back has a higher one.

use std::net::SocketAddr;

use udplock_protocol::{RemoveOutcome, RemoveReply, RemoveRequest, Status, REMOVE_REPLY_LEN};

use super::{Node, NodeStats};
use crate::core::time::Instant;

impl Node {
    /// A REMOVE datagram from `from` (spec §4.10): authenticated, it is applied to the SWIM
    /// table and answered; otherwise dropped and counted.
    pub(super) fn answer_remove(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        let Some(request) = self.authenticate_remove(datagram) else {
            NodeStats::bump(&self.stats.remove_dropped);
            return;
        };
        NodeStats::bump(&self.stats.requests);
        let (outcome, state, incarnation) =
            self.swim
                .remove(now, request.member_id, request.incarnation);
        if outcome == RemoveOutcome::Removed {
            log::warn!(
                "udplock node {}: member {} removed by an operator at incarnation {} (spec §4.10)",
                self.config.node_id,
                request.member_id,
                request.incarnation
            );
            self.refresh_book();
            self.drain_swim();
        }
        let reply = RemoveReply {
            session_id: request.session_id,
            request_id: request.request_id,
            attempt: request.attempt,
            status: Status::Ok,
            outcome: Some(outcome),
            state,
            node_id: self.config.node_id,
            member_id: request.member_id,
            incarnation,
        };
        let mut out = [0u8; REMOVE_REPLY_LEN];
        // Swim::remove answers only the combinations the reply's rules allow (spec §5.9).
        let len = reply.encode(&mut out).expect("a removal's reply encodes");
        assert!(len <= datagram.len(), "remove reply larger than request");
        self.answer(&out[..len], from);
    }

    /// The decoded REMOVE if it is well formed and its admin MAC verifies with the key its
    /// `key_id` names among those this node accepts (spec §4.10 step 1); `None` otherwise. A
    /// node whose key set holds no key accepts no removal.
    fn authenticate_remove(&self, datagram: &[u8]) -> Option<RemoveRequest> {
        let request = RemoveRequest::decode(datagram).ok()?;
        let key = self.auth.keys().accepted(request.key_id)?;
        key.verify_admin(datagram).then_some(request)
    }
}
