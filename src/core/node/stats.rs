//! Counters of what a node did, bumped by its core and its shell, readable from any thread
//! while it runs (atomics: no lock on the datagram path).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::lock_table::Counts;
use crate::core::peer_auth::AuthDrop;
use crate::core::swim::{MemberInfo, State};

use super::client_auth::ClientAuthDrop;
use super::latency::{Histogram, LatencyOp};

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
    /// Changed key files applied since start: the cluster key file (cluster nodes) and the
    /// client key file (spec §7.2.6).
    pub key_reloads: AtomicU64,
    /// Changed key files refused (the keys in force stayed), of either kind.
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
    /// Cluster nodes: PEER_LOAD datagrams (spec §8.14) sent to the leaders of this node's
    /// shards, and accepted from other nodes.
    pub load_sent: AtomicU64,
    pub load_received: AtomicU64,
    /// Cluster nodes: PEER_LOAD datagrams not taken, for any reason (malformed, of another
    /// cluster, from an unlisted node, failing the MAC checks); each also counted by its
    /// reason (`dropped`, `peer_unknown`, `auth_dropped`).
    pub load_dropped: AtomicU64,
    /// The limits per node this node's replicas have reached as applied ([`reached`] bits of
    /// spec §8.14), as it last reported them.
    ///
    /// [`reached`]: udplock_protocol::reached
    pub load_reached: AtomicU64,
    /// Lock requests answered RETRY (spec §7.2.5): no valid address token for their source
    /// and session. Also counted in `requests` (they decoded); nothing else saw them.
    pub address_retries: AtomicU64,
    /// Of those, the ones whose token was genuine but outside its time window (spec §7.2.5,
    /// "Expiry"): expired, or made by a clock more than the skew ahead of this node's.
    pub address_tokens_expired: AtomicU64,

    /// Lock requests refused or dropped by client authentication (spec §7.2.6), per reason
    /// (index [`ClientAuthDrop::index`]): answered UNAUTHENTICATED (no key where one is
    /// required; an unknown key id) or FORBIDDEN, or dropped (a MAC that does not verify).
    /// Also counted in `requests` (they decoded); no state saw them.
    pub client_auth: [AtomicU64; ClientAuthDrop::ALL.len()],
    /// Latency of each request type as this node saw it: from the datagram of a request's
    /// first copy to its final reply (WAITING is not one), recorded by the core with the
    /// `now` it is given (index [`LatencyOp::index`]). Only requests a shard replica takes
    /// (not NOT_LEADER, not refused before a shard saw them).
    pub latency: [Histogram; LatencyOp::ALL.len()],
    /// Requests not timed because the table of requests waiting for a reply was full
    /// ([`super::latency::LATENCY_PENDING_MAX`]).
    pub latency_untracked: AtomicU64,
    /// Changes of lock state applied by the shards while this node led them (each change
    /// counted once in the cluster, by its leader; a replica restoring its log on restart
    /// is a follower and counts nothing): see [`LockCounters`].
    pub locks: LockCounters,
    /// Turns of the event loop: it wakes at least once per
    /// `cluster::metrics::LOOP_TURN_INTERVAL_MAX_MS`, so a counter that stops is a loop that
    /// hangs (the health endpoint's test).
    pub loop_turns: AtomicU64,
}

/// Lock state changes, counted by the leader that applies them ([`Counts`] as atomics).
#[derive(Debug, Default)]
pub struct LockCounters {
    pub grants: AtomicU64,
    pub handoffs: AtomicU64,
    pub releases: AtomicU64,
    pub expirations: AtomicU64,
    pub acquisition_timeouts: AtomicU64,
    pub queued: AtomicU64,
    pub renewals: AtomicU64,
}

impl LockCounters {
    /// Adds `counts`.
    pub fn add(&self, counts: &Counts) {
        let add = |c: &AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.grants, counts.grants);
        add(&self.handoffs, counts.handoffs);
        add(&self.releases, counts.releases);
        add(&self.expirations, counts.expirations);
        add(&self.acquisition_timeouts, counts.acquisition_timeouts);
        add(&self.queued, counts.queued);
        add(&self.renewals, counts.renewals);
    }

    /// The counts as of now.
    pub fn read(&self) -> Counts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            grants: r(&self.grants),
            handoffs: r(&self.handoffs),
            releases: r(&self.releases),
            expirations: r(&self.expirations),
            acquisition_timeouts: r(&self.acquisition_timeouts),
            queued: r(&self.queued),
            renewals: r(&self.renewals),
        }
    }
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
