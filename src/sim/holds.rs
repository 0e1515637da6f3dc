//! HOLDS reads (spec §4.13, §5.10) in random runs: now and then the simulator hands a node a
//! HOLDS of one shard (every holder, from the start) straight from [`HOLDS_ADDR`], as an
//! operator's `udplock status --holders` sends it, and judges the page the node answers
//! (`Sim::after_call` hands it here) against what the history knows:
//!
//! - every listed hold is of a resource of the asked shard, held by a simulated client that
//!   sent an ACQUIRE of that resource (no hold appears that nobody asked for);
//! - never by the client whose key no node lists (the sealed-client seeds): it has no effect;
//! - a fencing token a client was granted for that resource (answered at once or late) is
//!   listed only as that client's (a token names one grant, spec §6.2);
//! - the reply is no longer than the request (spec §2.2 rule 5).
//!
//! The read is read-only at the node (no session, nothing logged), so it changes no run's
//! safety or liveness; a page answered other than OK (NOT_LEADER, OVERLOADED without a lease)
//! is only counted.

use std::net::SocketAddr;

use udplock_protocol::{HoldsReply, HoldsRequest, Status, HOLDS_REQUEST_LEN};

use super::check::Outcome;
use super::clients::{Action, CLIENT_IDS, RESOURCES};
use super::{Sim, SimFailure};
use crate::core::raft::NodeId;
use crate::core::time::Duration;

/// The reply address of the simulator's HOLDS reads: no client or node has it.
pub(super) const HOLDS_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 7)),
    9_997,
);

/// How often (true time) a HOLDS read goes to a node: each node and shard in turn.
pub(super) const HOLDS_READ_PERIOD: Duration = Duration::from_millis(250);

/// The session id of the reads (any non-zero value: HOLDS creates no session).
const HOLDS_SESSION: u64 = 0x401D_5000_0000_0001;

impl Sim {
    /// The `n`-th read: a HOLDS of shard `n % shards` to node `n % nodes + 1`, handed straight
    /// to its core if it runs and is not paused (else skipped).
    pub(super) fn read_holds(&mut self, n: u64) -> Result<(), SimFailure> {
        let node = n % self.nodes.len() as u64 + 1;
        let shard = (n / self.nodes.len() as u64) % u64::from(self.config.shards);
        let request = HoldsRequest {
            session_id: HOLDS_SESSION,
            request_id: n + 1,
            attempt: 0,
            shard: shard as u16,
            cursor: 0,
            prefix: b"",
        };
        let mut datagram = vec![0u8; HOLDS_REQUEST_LEN];
        let len = request
            .encode_padded(&mut datagram, HOLDS_REQUEST_LEN)
            .expect("a HOLDS encodes");
        datagram.truncate(len);
        let now = self.now;
        self.trace.bytes(&datagram);
        let n = self.node(node);
        if n.paused_until.is_some() {
            return Ok(());
        }
        let local = n.clock.local(now);
        let Some(core) = n.node.as_mut() else {
            return Ok(());
        };
        core.handle_datagram(local, HOLDS_ADDR, &datagram);
        self.after_call(node)
    }

    /// A node's answer to a HOLDS read (see the module docs).
    pub(super) fn holds_answered(
        &mut self,
        node: NodeId,
        datagram: &[u8],
    ) -> Result<(), SimFailure> {
        if datagram.len() > HOLDS_REQUEST_LEN {
            return Err(self.fail(format!(
                "amplification: node {node} answered a HOLDS of {HOLDS_REQUEST_LEN} bytes with \
                 {} (spec §2.2)",
                datagram.len()
            )));
        }
        let reply = match HoldsReply::decode(datagram) {
            Ok(reply) => reply,
            Err(e) => {
                return Err(self.fail(format!(
                    "node {node} answered a HOLDS with a datagram that does not decode: {e}"
                )));
            }
        };
        if reply.status != Status::Ok {
            return Ok(());
        }
        self.report.holds_pages += 1;
        let shards = self.config.shards;
        let clients = self.clients.len();
        let wrong = self.clients.iter().find(|c| c.wrong_key).map(|c| c.idx);
        for entry in reply.entries.iter() {
            self.report.holds_listed += 1;
            let what = format!(
                "HOLDS of shard {} from node {node} lists {:?} held by {:?} with token {}",
                reply.shard,
                String::from_utf8_lossy(entry.resource),
                String::from_utf8_lossy(entry.client),
                entry.fencing_token
            );
            let Some(resource) = RESOURCES.iter().position(|&r| r == entry.resource) else {
                return Err(self.fail(format!("{what}: no client asks for that resource")));
            };
            if udplock_protocol::shard_of(entry.resource, shards) != u32::from(reply.shard) {
                return Err(self.fail(format!("{what}: a resource of another shard")));
            }
            let Some(client) = CLIENT_IDS[..clients]
                .iter()
                .position(|&c| c == entry.client)
            else {
                return Err(self.fail(format!("{what}: no simulated client has that id")));
            };
            if Some(client) == wrong {
                return Err(self.fail(format!(
                    "{what}: that client's key no node lists (spec §7.2.6: no effect)"
                )));
            }
            let asked = self.hist.ops.iter().any(|op| {
                op.client == client
                    && matches!(op.action, Action::Acquire { resource: r, .. } if r == resource)
            });
            if !asked {
                return Err(self.fail(format!("{what}: that client never asked for it")));
            }
            // A token granted for the resource, at once or late, names its client's hold.
            let answered = self.hist.ops.iter().filter_map(|op| match op.outcome {
                Outcome::Answered { reply, .. } => Some((op, reply)),
                _ => None,
            });
            let late = self
                .hist
                .late
                .iter()
                .map(|&(op, _, reply)| (&self.hist.ops[op], reply));
            let other = answered.chain(late).find(|(op, reply)| {
                reply.answer.status == Status::Ok
                    && reply.answer.fencing_token == entry.fencing_token
                    && matches!(op.action, Action::Acquire { resource: r, .. } if r == resource)
                    && op.client != client
            });
            if let Some((op, _)) = other {
                return Err(self.fail(format!(
                    "{what}: that token was granted to client {}",
                    op.client
                )));
            }
        }
        Ok(())
    }
}
