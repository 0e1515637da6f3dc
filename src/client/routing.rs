//! Where a [`Client`]'s requests go.
//!
//! # Routing: shards and their leaders (spec §7.1.7)
//!
//! The service is a cluster of nodes; its resources are split into [`ClientConfig::shards`]
//! shards by `FNV-1a-64(resource_id) % shards`, and each shard has one leader node, the only
//! one that answers requests about its resources. Every call therefore starts by computing its
//! resource's shard and sending to that shard's leader as this client last knew it: the
//! *route cache* holds one entry per shard, shared by all threads and read without a lock (one
//! atomic load; learning an address the client has never seen takes a small lock). With no
//! entry yet, shard `s` goes to `servers[s % servers.len()]`, which spreads first contacts over
//! the cluster; the configured servers form a ring in their given order.
//!
//! The rules are the spec's, numbered as there (the call core applies them; the route cache
//! is its [`Routes`], shared by all calls of the client):
//!
//! - **One timer per request.** Every copy but a fast redirect leaves when the request's
//!   retransmission timer fires, and the timer doubles with every copy up to its ceiling,
//!   wherever the copies go: a move to another node never restarts the back-off. This is what
//!   bounds the datagrams of a failover (about 10 per request on loopback, where following
//!   every hint at once and restarting the back-off at each move cost 30 or more).
//! - **Silence.** A node that leaves [`SILENT_SENDS_MAX`] copies in a row unanswered is marked
//!   *suspect* (for all calls, until it answers anything) and the next copy goes to the next
//!   server on the ring that is not suspect; a cache entry naming it is cleared.
//! - **NOT_LEADER** is never a final answer; it never reaches the caller, and a request that
//!   only ever met NOT_LEADER ends at its deadline like an unanswered one
//!   ([`LockError::Unavailable`]). With a leader hint naming a node that is not suspect, the
//!   cache entry is set to it and the SAME request (session id, request id, body; attempt + 1)
//!   goes there at once, at most [`REDIRECTS_FAST_MAX`] times between two other replies, then
//!   on the timer. A hint naming a suspect node (the followers of a dead leader go on naming
//!   it until their election timeout) is followed only on the timer, with one copy. Without a
//!   hint (an election), the request moves on along the ring, on the timer. Hinted addresses
//!   outside `servers` are used too (and remembered, up to [`LEARNED_LEADERS_MAX`]).
//! - **OVERLOADED** is not a final answer either: the same request goes to the same node when
//!   the timer fires, but not before the hinted `retry_after_ms`. If the deadline comes first
//!   the call fails with [`LockError::Overloaded`] (a release: [`LockError::ReleaseInDoubt`]).
//!
//! Any reply from a node clears its suspicion; a final answer or a WAITING (not an
//! ERROR_REPLY) records its sender as the shard's leader (when the sender is one of the known
//! addresses; otherwise the node the request was last sent to). The request's WAITING
//! keepalives and deadline run on across moves.
//!
//! Replies are accepted from any source address (the socket is not connected; every copy is
//! one `send_to`, every reply one `recv_from`): after a failover the grant of a queued acquire
//! comes from the new leader, which the request may never have been sent to, and a copy that
//! reaches the new leader is answered with the reply the old one had committed. What makes a
//! reply acceptable is its session id and request id, as `receiving.rs` checks them.
//!
//! A NOT_LEADER that answers a copy sent before the current destination was chosen (its echoed
//! attempt is older) is ignored: the request has already moved on. A [`ClientConfig::shards`]
//! that differs from the cluster's only costs redirects, never correctness: the leader of the
//! resource's real shard is one hint away.
//!
//! [`ClientConfig::shards`]: super::ClientConfig::shards
//! [`Routes`]: crate::core::call::Routes
//! [`SILENT_SENDS_MAX`]: super::SILENT_SENDS_MAX
//! [`REDIRECTS_FAST_MAX`]: super::REDIRECTS_FAST_MAX
//! [`LEARNED_LEADERS_MAX`]: super::LEARNED_LEADERS_MAX
//! [`LockError::Unavailable`]: crate::error::LockError::Unavailable
//! [`LockError::Overloaded`]: crate::error::LockError::Overloaded
//! [`LockError::ReleaseInDoubt`]: crate::error::LockError::ReleaseInDoubt

use std::net::SocketAddr;

use super::Client;

impl Client {
    /// Where the next request about `resource_id` goes: the leader of its shard as this
    /// client last heard of it, or the initial guess (in the socket's address family, so an
    /// IPv4 server may show as IPv4-mapped IPv6 when IPv6 servers are configured too).
    pub fn leader_addr(&self, resource_id: &str) -> SocketAddr {
        let shard = self.routes.shard(resource_id.as_bytes());
        self.routes.first_destination(shard).1
    }
}
