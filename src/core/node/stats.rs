//! Counters of what a node did, bumped by its core and its shell, readable from any thread
//! while it runs (atomics: no lock on the datagram path).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::peer_auth::AuthDrop;
use crate::core::swim::{MemberInfo, State};

/// Counters of what the node did, readable from any thread while it runs.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Datagrams read from the socket.
    pub datagrams: AtomicU64,
    /// Requests that decoded and went to the lock table.
    pub requests: AtomicU64,
    /// Replies sent (including error replies).
    pub replies: AtomicU64,
    /// Requests answered with an ERROR_REPLY because they did not decode.
    pub error_replies: AtomicU64,
    /// Datagrams dropped without an answer (not ours, oversized, too short to answer).
    pub dropped: AtomicU64,
    /// Cluster nodes: node-to-node datagrams (PEER, PEER_SETTINGS) from a node id the
    /// address book does not know (spec §8.3 rule 3) that were not its own join: dropped, not
    /// counted in `dropped` (a known id from another address is). A joined cluster's members
    /// learn of each other by gossip, one after the other, and a restarted node knows nobody
    /// but its seeds, so a correct node's settings or SWIM message may reach one that has not
    /// heard of it yet; a steady stream is a stranger's.
    pub peer_unknown: AtomicU64,
    /// Replies the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Cluster nodes: PEER datagrams sent and accepted (records of many shards share one).
    pub peer_sent: AtomicU64,
    pub peer_received: AtomicU64,
    /// Cluster nodes: node-to-node datagrams (PEER, PEER_SETTINGS) from a listed node at its
    /// listed address that failed the authentication checks (spec §8.11) and were dropped
    /// before any state saw them, per reason (index [`AuthDrop::index`]; read with
    /// [`NodeStats::auth_dropped`]). Not counted in `dropped`.
    pub auth_dropped: [AtomicU64; AuthDrop::ALL.len()],
    /// Cluster nodes: REMOVE requests (spec §4.10) dropped without an answer: malformed, made
    /// with a key this node does not accept, or whose admin MAC does not verify. Not counted
    /// in `dropped`: a steady stream is someone trying to evict nodes without the key.
    pub remove_dropped: AtomicU64,
    /// Cluster nodes: changed key files applied since start.
    pub key_reloads: AtomicU64,
    /// Cluster nodes: changed key files refused (the keys in force stayed).
    pub key_file_errors: AtomicU64,
    /// Cluster nodes: SWIM messages (records, spec §8.12) sent and received from listed,
    /// authenticated nodes; and messages SWIM addressed to no listed node, dropped.
    pub swim_sent: AtomicU64,
    pub swim_received: AtomicU64,
    pub swim_unroutable: AtomicU64,
    /// Cluster nodes: the members SWIM holds in each state, this node included (as alive,
    /// or left once it leaves), as of its latest membership event.
    pub members_alive: AtomicU64,
    pub members_suspect: AtomicU64,
    pub members_dead: AtomicU64,
    pub members_left: AtomicU64,
    /// Client requests a leader answered OVERLOADED because the node's replicas together
    /// reached one of its limits per node (`super::limits`).
    pub overloaded_node_limits: AtomicU64,
}

impl NodeStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the member gauges from SWIM's table.
    pub fn set_members(&self, members: &[MemberInfo]) {
        let count = |state| members.iter().filter(|m| m.state == state).count() as u64;
        self.members_alive
            .store(count(State::Alive), Ordering::Relaxed);
        self.members_suspect
            .store(count(State::Suspect), Ordering::Relaxed);
        self.members_dead
            .store(count(State::Dead), Ordering::Relaxed);
        self.members_left
            .store(count(State::Left), Ordering::Relaxed);
    }

    /// Node-to-node datagrams dropped by the authentication checks for `reason`.
    pub fn auth_dropped(&self, reason: AuthDrop) -> u64 {
        self.auth_dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Node-to-node datagrams dropped by the authentication checks, for any reason.
    pub fn auth_dropped_total(&self) -> u64 {
        AuthDrop::ALL.iter().map(|&r| self.auth_dropped(r)).sum()
    }
}
