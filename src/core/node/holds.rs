//! HOLDS (spec §4.13, §5.10, §8.9): who holds what in one shard, for operators.
//!
//! A read, answered right after decoding by the shard's leader from its applied table under
//! its lease (`Replica::read_holds`): no address token, no session, nothing logged or
//! remembered. A node that does not lead the shard answers NOT_LEADER with the leader's client
//! address if it knows it (as for a lock request); a leader without a valid lease answers
//! OVERLOADED with a retry-after hint; a shard at or past the node's shard count is
//! INVALID_ARGUMENT. The page is as many holds as fit in a reply no longer than the request
//! (spec §2.2 rule 5), at most `lock_table::HOLDS_EXAMINED_MAX` examined.

use std::net::SocketAddr;

use udplock_protocol::{
    Hint, HoldEntries, HoldsReply, HoldsRequest, Status, DATAGRAM_LEN_MAX, HEADER_LEN,
    HOLDS_REPLY_FIXED_LEN,
};

use super::Node;
use crate::core::replica::HoldsRefusal;
use crate::core::time::Instant;

impl Node {
    /// A HOLDS datagram from `from` (spec §4.13).
    pub(super) fn answer_holds(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        let Some(request) = self.admit(datagram, from, HoldsRequest::decode) else {
            return;
        };
        // admit() dropped requests shorter than REQUEST_LEN_MIN (76), which pay for the
        // reply's 76-byte fixed part (spec §2.2).
        let budget = datagram.len() - HEADER_LEN - HOLDS_REPLY_FIXED_LEN;
        let shard = u32::from(request.shard);
        let refusal = |status, hint| HoldsReply::refusal(&request, status, hint);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let encoded = if shard >= self.config.shards {
            refusal(Status::InvalidArgument, Hint::None).encode(&mut out)
        } else {
            match self.shards[shard as usize].as_ref() {
                // A joined cluster's node without a replica of the shard knows no leader
                // (spec §8.1, §8.9): NOT_LEADER without a hint, like a lock request.
                None => refusal(Status::NotLeader, Hint::None).encode(&mut out),
                Some(replica) => {
                    match replica.read_holds(now, request.cursor, request.prefix, budget) {
                        Ok(page) => HoldsReply {
                            session_id: request.session_id,
                            request_id: request.request_id,
                            attempt: request.attempt,
                            status: Status::Ok,
                            hint: Hint::None,
                            shard: request.shard,
                            // Config::validate keeps shards within SHARDS_MAX (4096).
                            shards: self.config.shards as u16,
                            cursor: request.cursor,
                            next_cursor: page.next_cursor,
                            entries: HoldEntries::from_slice(&page.entries),
                        }
                        .encode(&mut out),
                        Err(HoldsRefusal::NotLeader(not_leader)) => {
                            let hint = not_leader
                                .leader_hint
                                .and_then(|id| self.book.address_of(id))
                                .map_or(Hint::None, Hint::Leader);
                            refusal(Status::NotLeader, hint).encode(&mut out)
                        }
                        Err(HoldsRefusal::NoLease { retry_after_ms: ms }) => {
                            refusal(Status::Overloaded, Hint::RetryAfter { ms }).encode(&mut out)
                        }
                    }
                }
            }
        };
        match encoded {
            Ok(len) => {
                // Spec §2.2 rule 5: never more bytes than the request.
                assert!(len <= datagram.len(), "HOLDS_REPLY larger than its request");
                self.answer(&out[..len], from);
            }
            Err(e) => log::error!("udplock node: holds reply did not encode: {e}"),
        }
    }
}
