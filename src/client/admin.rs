//! The operators' read-only queries of one node: SHARD_STATUS (spec §4.7), NODE_SETTINGS
//! (spec §4.8) and MEMBERS (spec §4.9). Off the lock path on purpose: each uses a socket and a session of its own,
//! requests are retransmitted on the RTO, and nothing here touches the lanes, the pending map
//! or the route cache (only the RTT estimate and the counters are shared).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

#[cfg(feature = "admin")]
use udplock_protocol::{ClusterKey, RemoveReply, RemoveRequest};
use udplock_protocol::{
    MessageType, RemoveOutcome, Reply, ShardStatusReply, ShardStatusRequest, Status, SwimState,
    DATAGRAM_LEN_MAX,
};

use super::lanes::new_session_id;
use super::{
    lock, open_socket, std_duration, Client, MemberInfo, MembersReport, NodeSettingsReport,
    ShardInfo, ShardStatusReport,
};
use crate::core::time::Duration;
use crate::error::LockError;

/// Most members [`Client::members`] reads from one node before it gives up: the largest
/// table a node's SWIM member may hold (`core::swim::MEMBERS_MAX_LIMIT`, asserted equal at
/// compile time there: written out here so the client builds without the server). A node
/// that keeps paging past it is faulty; the limit keeps its answer from growing the report
/// for ever.
pub const MEMBERS_REPORT_MAX: usize = 16_384;

/// What one node did with an operator's REMOVE (`Client::remove`, cargo feature `admin`;
/// spec §5.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveReport {
    /// The node that answered.
    pub node_id: u64,
    /// What it did.
    pub outcome: RemoveOutcome,
    /// The member's state at that node afterwards (alive for an unknown member).
    pub state: SwimState,
    /// The member's incarnation at that node afterwards; 0 for an unknown member.
    pub incarnation: u64,
}

/// One decoded MEMBERS_REPLY page.
struct MembersPage {
    node_id: u64,
    /// The `first_id` the reply says it answers: the one asked for, or the page is refused.
    first_id: u64,
    next_id: u64,
    members: Vec<MemberInfo>,
}

/// One decoded SHARD_STATUS_REPLY page.
struct ShardStatusPage {
    node_id: u64,
    shards_total: u16,
    /// The `first_shard` the reply says it starts at: the one asked for, or the page is
    /// refused.
    first_shard: u16,
    shards: Vec<ShardInfo>,
}

impl Client {
    /// Asks the node at `server` for its own view of every shard (spec §4.7): role, leader,
    /// term, commit and applied index, locks held and waiting. Read-only, answered by any
    /// node of a cluster, leader or not (udplock's single node is a cluster of one node and
    /// one shard); a server that is not a node of a cluster (an older single node) answers
    /// UNSUPPORTED, reported as [`LockError::InternalError`].
    ///
    /// Off the lock path on purpose: it uses a socket and a session of its own, one request
    /// per page of up to 26 shards (the request padded to 1200 bytes so the reply can be that
    /// large, spec §2.2), each retransmitted on the usual RTO and given `request_timeout_ms`
    /// ([`LockError::Unavailable`] after that). Pages are read one after the other, so the
    /// report is not a snapshot of one instant.
    pub fn shard_status(&self, server: SocketAddr) -> Result<ShardStatusReport, LockError> {
        let socket = admin_socket(server, "shard status")?;
        let session_id = new_session_id();
        let mut node_id = None;
        let mut shards_total = None;
        let mut shards: Vec<ShardInfo> = Vec::new();
        // Request ids of this private session: new per page, strictly increasing.
        for request_id in 1u64.. {
            let first_shard = u16::try_from(shards.len()).unwrap_or(u16::MAX);
            let page =
                self.shard_status_page(&socket, server, session_id, request_id, first_shard)?;
            let total = *shards_total.get_or_insert(page.shards_total);
            let node = *node_id.get_or_insert(page.node_id);
            if total != page.shards_total || node != page.node_id {
                return Err(LockError::InternalError(format!(
                    "{server} changed its answer between pages (node {node} with {total} \
                     shards, then node {} with {}): was the node restarted? Try again",
                    page.node_id, page.shards_total
                )));
            }
            if shards.len() >= usize::from(total) {
                break;
            }
            // A page must start where it was asked to (issue 12: a page with the wrong first
            // shard was accepted, and the report listed 4,108 of 4,096 shards). The decoder
            // checked the rest: its entries are shards first_shard, first_shard + 1, ...,
            // all below shards_total (spec §5.6).
            let fits = usize::from(page.first_shard) + page.shards.len() <= usize::from(total);
            if page.first_shard != first_shard || !fits {
                return Err(LockError::InternalError(format!(
                    "{server} answered SHARD_STATUS from shard {first_shard} with a page of \
                     {} shards from shard {} of {total}: a node bug or a forged reply; the \
                     read is abandoned",
                    page.shards.len(),
                    page.first_shard
                )));
            }
            debug_assert!(page
                .shards
                .iter()
                .zip(first_shard..)
                .all(|(entry, shard)| entry.shard == shard));
            if page.shards.is_empty() {
                return Err(LockError::InternalError(format!(
                    "{server} sent no shard from shard {first_shard} on, of {total}: a node bug"
                )));
            }
            shards.extend(page.shards);
            if shards.len() >= usize::from(total) {
                break;
            }
        }
        Ok(ShardStatusReport {
            node_id: node_id.unwrap_or(0),
            shards,
        })
    }

    /// One SHARD_STATUS page from `server`: sent, retransmitted on the RTO, until its reply
    /// or `request_timeout_ms`.
    fn shard_status_page(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        session_id: u64,
        request_id: u64,
        first_shard: u16,
    ) -> Result<ShardStatusPage, LockError> {
        self.admin_exchange(
            socket,
            server,
            "SHARD_STATUS",
            (session_id, request_id),
            |attempt, out| {
                ShardStatusRequest {
                    session_id,
                    request_id,
                    attempt,
                    first_shard,
                }
                .encode(out)
            },
            |datagram| {
                let reply = ShardStatusReply::decode(datagram).ok()?;
                let page = ShardStatusPage {
                    node_id: reply.node_id,
                    shards_total: reply.shards_total,
                    first_shard: reply.first_shard,
                    shards: reply
                        .entries
                        .iter()
                        .map(|e| ShardInfo {
                            shard: e.shard,
                            role: e.role,
                            leader_id: (e.leader_id != 0).then_some(e.leader_id),
                            term: e.term,
                            commit_index: e.commit_index,
                            applied_index: e.applied_index,
                            held: e.held,
                            waiters: e.waiters,
                        })
                        .collect(),
                };
                Some(((reply.session_id, reply.request_id), reply.status, page))
            },
        )
    }

    /// Asks the node at `server` for its member table (spec §4.9): every node its SWIM member
    /// knows of, itself included, with the state it believes (alive, suspect, dead, left),
    /// the incarnation and the address. Read-only, answered by any node of a cluster
    /// (udplock's single node answers itself, alive); a server that does not implement it
    /// answers UNSUPPORTED ([`LockError::InternalError`]).
    ///
    /// Like [`Client::shard_status`]: its own socket and session, one request per page of up
    /// to 31 members (padded to 1200 bytes), paged by member id until the node says the
    /// table ends, each page retransmitted on the RTO until `request_timeout_ms`
    /// ([`LockError::Unavailable`]). At most [`MEMBERS_REPORT_MAX`] members are read.
    pub fn members(&self, server: SocketAddr) -> Result<MembersReport, LockError> {
        let socket = admin_socket(server, "members")?;
        let session_id = new_session_id();
        let mut node_id = None;
        let mut members: Vec<MemberInfo> = Vec::new();
        let mut first_id = 0;
        for request_id in 1u64.. {
            let page = self.members_page(&socket, server, session_id, request_id, first_id)?;
            let node = *node_id.get_or_insert(page.node_id);
            if node != page.node_id {
                return Err(LockError::InternalError(format!(
                    "{server} changed its answer between pages (node {node}, then node {}): \
                     was the node restarted? Try again",
                    page.node_id
                )));
            }
            // A page must start where it was asked to; the decoder checked that its ids
            // rise from there (spec §5.8), so pages never overlap.
            if page.first_id != first_id {
                return Err(LockError::InternalError(format!(
                    "{server} answered MEMBERS from member {first_id} with a page from member \
                     {}: a node bug or a forged reply; the read is abandoned",
                    page.first_id
                )));
            }
            let progress = !page.members.is_empty();
            members.extend(page.members);
            if page.next_id == 0 {
                break;
            }
            // The decoder checked that next_id is past every id of the page, so each page
            // with an entry moves on; one without cannot (spec §4.9).
            if !progress || members.len() >= MEMBERS_REPORT_MAX {
                return Err(LockError::InternalError(format!(
                    "{server} keeps paging its member table (at member {}, after {} members): \
                     a node bug",
                    page.next_id,
                    members.len()
                )));
            }
            first_id = page.next_id;
        }
        Ok(MembersReport {
            node_id: node_id.unwrap_or(0),
            members,
        })
    }

    /// One MEMBERS page from `server`: sent, retransmitted on the RTO, until its reply or
    /// `request_timeout_ms`.
    fn members_page(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        session_id: u64,
        request_id: u64,
        first_id: u64,
    ) -> Result<MembersPage, LockError> {
        use udplock_protocol::{MembersReply, MembersRequest};
        self.admin_exchange(
            socket,
            server,
            "MEMBERS",
            (session_id, request_id),
            |attempt, out| {
                MembersRequest {
                    session_id,
                    request_id,
                    attempt,
                    first_id,
                }
                .encode(out)
            },
            |datagram| {
                let reply = MembersReply::decode(datagram).ok()?;
                let page = MembersPage {
                    node_id: reply.node_id,
                    first_id: reply.first_id,
                    next_id: reply.next_id,
                    members: reply
                        .entries
                        .iter()
                        .map(|e| MemberInfo {
                            id: e.id,
                            state: e.state,
                            incarnation: e.incarnation,
                            addr: e.addr,
                        })
                        .collect(),
                };
                Some(((reply.session_id, reply.request_id), reply.status, page))
            },
        )
    }

    /// Asks the node at `server` for its cluster id and settings (spec §4.8): what `udplock
    /// status` compares between nodes, to name the settings that keep one out of the
    /// cluster. Read-only; a server that is not a node of a cluster (an older single node)
    /// answers UNSUPPORTED ([`LockError::InternalError`]).
    /// Like [`Client::shard_status`]: its own socket and session, the request padded to 1200
    /// bytes, retransmitted on the RTO until `request_timeout_ms`
    /// ([`LockError::Unavailable`]).
    pub fn node_settings(&self, server: SocketAddr) -> Result<NodeSettingsReport, LockError> {
        use udplock_protocol::{NodeSettingsReply, NodeSettingsRequest, Setting};
        let socket = admin_socket(server, "node settings")?;
        let (session_id, request_id) = (new_session_id(), 1);
        self.admin_exchange(
            &socket,
            server,
            "NODE_SETTINGS",
            (session_id, request_id),
            |attempt, out| {
                NodeSettingsRequest {
                    session_id,
                    request_id,
                    attempt,
                }
                .encode(out)
            },
            |datagram| {
                let reply = NodeSettingsReply::decode(datagram).ok()?;
                let report = NodeSettingsReport {
                    node_id: reply.node_id,
                    cluster_id: reply.cluster_id,
                    settings: reply
                        .values
                        .iter()
                        .filter_map(|v| Some((Setting::from_wire(v.setting)?, v.value)))
                        .collect(),
                };
                Some(((reply.session_id, reply.request_id), reply.status, report))
            },
        )
    }

    /// Asks the node at `server` to remove member `member_id` at `incarnation` (spec §4.10):
    /// a REMOVE authenticated with `key`'s admin MAC, each copy with its own, retransmitted on
    /// the RTO until its REMOVE_REPLY or `request_timeout_ms` ([`LockError::Unavailable`]: the
    /// node is unreachable, or dropped the request because it does not accept `key`; it never
    /// says which, spec §4.10). Idempotent: a retransmission after the removal took effect
    /// is answered ALREADY_REMOVED. The report says what the node did; a refusal is not an
    /// error here. (Cargo feature `admin`: the admin MAC needs HMAC-SHA-256.)
    #[cfg(feature = "admin")]
    pub fn remove(
        &self,
        server: SocketAddr,
        key: &ClusterKey,
        member_id: u64,
        incarnation: u64,
    ) -> Result<RemoveReport, LockError> {
        let socket = admin_socket(server, "remove")?;
        let (session_id, request_id) = (new_session_id(), 1);
        self.admin_exchange(
            &socket,
            server,
            "REMOVE",
            (session_id, request_id),
            |attempt, out| {
                RemoveRequest {
                    session_id,
                    request_id,
                    attempt,
                    member_id,
                    incarnation,
                    key_id: key.id(),
                }
                .encode(out, key)
            },
            |datagram| {
                let reply = RemoveReply::decode(datagram).ok()?;
                // A reply about another member is not an answer to this request.
                if reply.outcome.is_some() && reply.member_id != member_id {
                    return None;
                }
                let report = RemoveReport {
                    node_id: reply.node_id,
                    outcome: reply.outcome?,
                    state: reply.state,
                    incarnation: reply.incarnation,
                };
                Some(((reply.session_id, reply.request_id), reply.status, report))
            },
        )
    }

    /// One request of an operator's read-only query (`what`: SHARD_STATUS, NODE_SETTINGS,
    /// MEMBERS) on
    /// its own `socket`: `encode` builds the copy with a given attempt number, sent and
    /// retransmitted on the RTO until its reply arrives, an ERROR_REPLY to `ids` arrives, or
    /// `request_timeout_ms` passes ([`LockError::Unavailable`]). `decode` reads a reply of the
    /// query's type: the ids it answers, its status, and what it reports; only a reply to
    /// `ids` counts, and then its status's error, if any, is the result.
    pub(super) fn admin_exchange<T>(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        what: &str,
        ids: (u64, u64),
        encode: impl Fn(u16, &mut [u8]) -> Result<usize, udplock_protocol::EncodeError>,
        decode: impl Fn(&[u8]) -> Option<((u64, u64), Status, T)>,
    ) -> Result<T, LockError> {
        let mut timer = lock(&self.rtt).timer();
        let deadline = self.now() + Duration::from_millis(self.config.request_timeout_ms);
        let mut datagram = [0u8; DATAGRAM_LEN_MAX];
        let mut buf = [0u8; DATAGRAM_LEN_MAX + 1];
        loop {
            let now = self.now();
            if now >= deadline {
                return Err(LockError::Unavailable);
            }
            if timer.next_retransmit() <= now {
                let attempt = timer.on_send(now);
                let len = encode(attempt, &mut datagram).map_err(|e| {
                    LockError::InternalError(format!("{what} request did not encode: {e}"))
                })?;
                if attempt > 0 {
                    self.retransmits.fetch_add(1, Ordering::Relaxed);
                }
                // A failed send is a lost copy: the timer sends another.
                let _ = socket.send_to(&datagram[..len], server);
            }
            let wake = timer.next_retransmit().min(deadline);
            let wait =
                std_duration(wake.saturating_since(self.now())).max(StdDuration::from_micros(1));
            if socket.set_read_timeout(Some(wait)).is_err() {
                return Err(LockError::InternalError(format!(
                    "cannot set the {what} socket's receive timeout"
                )));
            }
            let len = match socket.recv_from(&mut buf) {
                // Only the node asked answers (spec §7.1.4 rule 5); the socket is of the
                // server address's family, so the two compare as they are.
                Ok((len, from)) if from == server => len,
                Ok(_) => {
                    self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Timeouts, and an ICMP error for an earlier copy (a node that is down).
                Err(_) => continue,
            };
            let datagram_in = &buf[..len];
            if let Some((reply_ids, status, value)) = decode(datagram_in) {
                if reply_ids == ids {
                    return match LockError::from_status(status) {
                        Some(error) => Err(error),
                        None => Ok(value),
                    };
                }
            }
            match Reply::decode(datagram_in) {
                Ok(reply)
                    if reply.msg_type == MessageType::ErrorReply
                        && (reply.session_id, reply.request_id) == ids =>
                {
                    return Err(match reply.status {
                        Status::Unsupported => LockError::InternalError(format!(
                            "{server} does not answer {what} (UNSUPPORTED): it is not a node \
                             of a cluster (an older single node), or older than this client"
                        )),
                        status => LockError::from_status(status).unwrap_or_else(|| {
                            LockError::InternalError(
                                "the server sent ERROR_REPLY with status OK: a server bug".into(),
                            )
                        }),
                    });
                }
                // Another request's reply, a late copy's, or garbage.
                _ => {
                    self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The socket of one operator's query (`what`: "shard status", "node settings", "members")
/// to `server`.
pub(super) fn admin_socket(server: SocketAddr, what: &str) -> Result<UdpSocket, LockError> {
    open_socket(server.is_ipv6())
        .map_err(|e| LockError::InternalError(format!("cannot open a UDP socket for {what}: {e}")))
}
