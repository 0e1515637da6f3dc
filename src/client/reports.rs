//! What the client's operations return: a granted [`Lease`], a lock's [`LockStatus`], the
//! client's own [`ClientStats`], and the operators' reports of one node
//! ([`ShardStatusReport`], [`NodeSettingsReport`], [`MembersReport`]).

use std::time::Duration as StdDuration;

use crate::clock::BootInstant;

#[cfg(doc)]
use super::{Client, ClientConfig};

/// A node's role in one shard's Raft group, as [`Client::shard_status`] reports it.
pub use udplock_protocol::ShardRole;

/// A granted hold of a lock, as this client must see it.
///
/// Each `Lease` describes the one reply it came from. The server never shortens a hold's
/// lease (re-entry and renewal only extend it, spec §6.4), so every `Lease` of a hold stays
/// safe on its own until the client releases the lock to hold count zero; after that none of
/// them means anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lock's resource id, as the call named it.
    pub resource_id: String,
    /// The holder's client id, as the call named it.
    pub client_id: String,
    /// Strictly increasing per resource across holders: pass it to the storage you protect,
    /// so that it can refuse writes from an older holder.
    pub fencing_token: u64,
    /// Re-entrant holds this client has on the lock after the operation.
    pub hold_count: u32,
    /// The lease the hold has as of the grant or renewal, in milliseconds (the reply's
    /// `lease_ms`, spec §6.4): the TTL of a new hold; after a re-entry or renewal the hold's
    /// whole remaining lease, which may be longer than the TTL asked for.
    pub ttl_ms: u32,
    /// When this client must consider the lock lost: the send time of the answered request
    /// copy plus the TTL, minus the clock-drift bound. The server's expiry is later.
    /// On the suspend-aware clock ([`BootInstant`]): a lease counted on a clock that stopped
    /// while the machine slept would outlive the server's.
    pub valid_until: BootInstant,
}

impl Lease {
    /// True while the lease may still be relied on.
    pub fn is_valid(&self) -> bool {
        BootInstant::now() < self.valid_until
    }

    /// Time left before [`Lease::valid_until`] (zero once passed).
    pub fn remaining(&self) -> StdDuration {
        self.valid_until
            .saturating_duration_since(BootInstant::now())
    }
}

/// A lock's state as the server saw it when it answered a status request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockStatus {
    /// The resource id asked about.
    pub resource_id: String,
    /// The holder's client id (lossy UTF-8), `None` when free or when it did not fit.
    pub holder: Option<String>,
    /// The lock is held but the holder's id did not fit in the reply (never for this client,
    /// which pads status requests so that it always fits).
    pub holder_truncated: bool,
    /// Re-entrant holds of the current holder (0: free).
    pub hold_count: u32,
    /// Token of the current hold (0: none).
    pub fencing_token: u64,
    /// Lease time left at the server, in milliseconds.
    pub remaining_ttl_ms: u32,
    /// Clients queued waiting for the lock.
    pub waiter_count: u32,
}

/// One cluster node's own view of its shards, from [`Client::shard_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatusReport {
    /// The node that answered (its id in the cluster).
    pub node_id: u64,
    /// Every shard of the cluster, in shard order (`shards.len()` is the shard count).
    pub shards: Vec<ShardInfo>,
}

/// One cluster node's cluster id and settings, from [`Client::node_settings`] (spec §5.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettingsReport {
    /// The node that answered (its id in the cluster).
    pub node_id: u64,
    /// Nodes whose cluster ids differ do not form one cluster (spec §8.1).
    pub cluster_id: u64,
    /// `(setting, value)` as the node lists them, in registry order; codes this client does
    /// not know are left out.
    pub settings: Vec<(udplock_protocol::Setting, u64)>,
}

/// What a member is, as the answering node believes (spec §5.8): alive, suspect, dead or
/// left, SWIM's states (spec §8.12).
pub use udplock_protocol::SwimState as MemberState;

/// One cluster node's member table as its SWIM member holds it, from [`Client::members`]
/// (spec §4.9). Informs operators only: SWIM never decides who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersReport {
    /// The node that answered.
    pub node_id: u64,
    /// Every member it knows of, itself included, in id order.
    pub members: Vec<MemberInfo>,
}

/// One member as one node sees it (spec §5.8). Nodes may disagree for a while (gossip takes
/// a few protocol periods to spread); SWIM's own rule says whose word wins: the higher
/// incarnation, and at equal incarnations left or dead over suspect over alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's node id.
    pub id: u64,
    /// Alive, suspect, dead or left, as the answering node believes.
    pub state: MemberState,
    /// The highest incarnation the answering node knows for this member.
    pub incarnation: u64,
    /// The address the member announced (clients and nodes send to it).
    pub addr: std::net::SocketAddr,
}

/// One shard as one node sees it (spec §5.6). Nodes may disagree: a follower's counts lag
/// its leader's, and a node cut off from the others may still name an old leader; believe
/// the node that says it leads, with the highest term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard's index, 0 to the shard count − 1.
    pub shard: u16,
    /// The answering node's role in this shard; [`ShardRole::NoReplica`] if it holds no
    /// replica of it (a joined cluster's node, spec §5.6), every other field then empty;
    /// [`ShardRole::Learner`] if its replica is a learner (a follower that votes in no
    /// election and counts in no majority: still catching up, or not yet promoted).
    pub role: ShardRole,
    /// The node it believes leads the shard in its current term (itself if it leads);
    /// `None` when it knows none, e.g. during an election.
    pub leader_id: Option<u64>,
    /// Its current Raft term for the shard.
    pub term: u64,
    /// Highest log index it knows to be committed.
    pub commit_index: u64,
    /// Highest log index applied to its copy of the shard's lock table.
    pub applied_index: u64,
    /// Locks held in its copy of the lock table.
    pub held: u32,
    /// Acquires queued in its copy of the lock table.
    pub waiters: u32,
}

/// Counters of a [`Client`], for monitoring and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientStats {
    /// Copies sent beyond the first of each request.
    pub retransmits: u64,
    /// Received datagrams dropped: undecodable, another session's, an unknown or finished
    /// request id, the wrong reply type, or a duplicate reply.
    pub dropped_datagrams: u64,
    /// NOT_LEADER answers that sent a request on to another node (with or without a hint).
    /// Steadily growing means [`ClientConfig::shards`] or the server list is off, or the
    /// cluster keeps changing leaders.
    pub redirects: u64,
    /// Smoothed round-trip time, once measured.
    pub srtt: Option<StdDuration>,
    /// Retransmission timeout a new request starts with.
    pub rto: StdDuration,
}

/// What one KEEPALIVE renewed ([`Client::keepalive`], spec §4.11): which of the listed holds,
/// and until when this client may rely on each of them.
///
/// A hold whose bit is clear is no longer the server's under that token (released, expired,
/// or granted again): drop it at once, whatever its earlier validity said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepaliveReport {
    /// The tokens as listed, in order.
    pub tokens: Vec<u64>,
    /// Bit `i` set iff `tokens[i]` named a hold this keepalive renewed.
    pub renewed_bitmap: u64,
    /// The smallest lease granted among the renewed holds, in milliseconds (0 if none).
    pub lease_ms: u32,
    /// Until when every renewed hold may be relied on: the send time of the answered copy
    /// plus `lease_ms`, minus the clock-drift bound (the lease rule, spec §6.4). When nothing
    /// was renewed, the instant the keepalive started (already past).
    pub valid_until: BootInstant,
}

impl KeepaliveReport {
    /// Whether `tokens[i]` was renewed.
    pub fn renewed(&self, i: usize) -> bool {
        i < self.tokens.len() && self.renewed_bitmap >> i & 1 == 1
    }

    /// The tokens renewed, in listed order.
    pub fn renewed_tokens(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.tokens.len())
            .filter(|&i| self.renewed(i))
            .map(|i| self.tokens[i])
    }

    /// The tokens not renewed: holds to drop at once (spec §4.11, client obligation 3).
    pub fn lost_tokens(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.tokens.len())
            .filter(|&i| !self.renewed(i))
            .map(|i| self.tokens[i])
    }
}
