//! Who holds what (HOLDS, spec §4.13, §5.10): every shard of the cluster walked page by page
//! through its leader, for operators (`udplock status --holders [PREFIX]`).
//!
//! Off the lock path like the other operators' queries (`admin.rs`): a socket and a session
//! of its own, one request per page (padded to 1200 bytes), each retransmitted on the RTO
//! until `request_timeout_ms`. The walk asks shard 0 first, whose reply names the cluster's
//! shard count `S`, then shards 1 to `S - 1`; each shard from cursor 0 until its leader says
//! the shard has no hold left. A NOT_LEADER is followed to its hint when the hint names a node
//! this client knows (a configured server, or an alive member of a table it read: the first
//! unknown hint makes it read the hinting node's member table once), otherwise the page moves
//! on along the known nodes; an OVERLOADED waits its retry-after hint (at most a second).
//!
//! Every page is checked as the spec asks (§4.13): it answers the shard and the cursor asked,
//! the shard count does not change, every client id starts with the prefix and every
//! resource belongs to the shard; otherwise the walk stops with an error, since a page that
//! broke one rule may have broken others unseen.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration as StdDuration;

use udplock_protocol::{
    shard_of, Hint, HoldsReply, HoldsRequest, Status, HOLDS_PREFIX_LEN_MAX, SHARDS_MAX,
};

use super::admin::admin_socket;
use super::lanes::new_session_id;
use super::Client;
use crate::core::call::socket_addr_for;
use crate::error::LockError;

/// Most holds [`Client::holds`] collects before it gives up (use a prefix, or
/// [`Client::for_each_hold`], which keeps none): 1,048,576 holds of 100 bytes or so are
/// about 100 MiB.
pub const HOLDS_REPORT_MAX: usize = 1 << 20;

/// Where a page may be sent before the walk gives up on it: NOT_LEADER without a usable hint,
/// silence and OVERLOADED each move or delay the page; past this many the cluster is in an
/// election or unreachable ([`LockError::Unavailable`]).
const PAGE_TRIES_MAX: usize = 16;

/// Pages in a row without an entry a shard's walk accepts: each such page still moves the
/// cursor past up to 1,024 holds the prefix filtered out (spec §4.13), so a shard of the
/// largest table (`resources_max`, 262,144 by default) needs at most 256 of them. A node that
/// keeps sending empty pages past this is faulty.
const EMPTY_PAGES_MAX: usize = 4_096;

/// Longest an OVERLOADED page waits before it is sent again, whatever its hint says.
const OVERLOADED_WAIT_MAX: StdDuration = StdDuration::from_secs(1);

/// One hold, as its shard's leader listed it (spec §5.10). Ids are raw bytes: print them
/// escaped (any client chooses its id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldInfo {
    /// The shard of the resource.
    pub shard: u16,
    /// The lock.
    pub resource: Vec<u8>,
    /// The holder's client id.
    pub client: Vec<u8>,
    /// Re-entrant holds.
    pub hold_count: u32,
    /// The hold's fencing token.
    pub fencing_token: u64,
    /// The lease left at the leader when it answered, in milliseconds.
    pub lease_ms: u32,
    /// ACQUIREs waiting for the lock.
    pub waiters: u32,
}

/// One HOLDS_REPLY as the walk reads it.
struct Page {
    status: Status,
    hint: Hint,
    shard: u16,
    shards: u16,
    cursor: u64,
    next_cursor: u64,
    holds: Vec<HoldInfo>,
}

/// The nodes a walk may send to: the client's candidates, and the alive members of tables it
/// read; normalised to the socket's address family.
struct Known {
    nodes: Vec<SocketAddr>,
    v6: bool,
    /// Whether a member table was read already (once per walk).
    members_read: bool,
}

impl Known {
    fn find(&self, addr: SocketAddr) -> Option<usize> {
        let addr = socket_addr_for(addr, self.v6)?;
        self.nodes.iter().position(|&n| n == addr)
    }
}

impl Client {
    /// Every hold of the cluster whose holder's client id starts with `prefix` (every hold
    /// when it is empty), walked shard by shard through each shard's leader (HOLDS, spec
    /// §4.13). See [`Client::for_each_hold`]; this one collects them, at most
    /// [`HOLDS_REPORT_MAX`] ([`LockError::InternalError`] past it: narrow the prefix).
    pub fn holds(&self, prefix: &[u8]) -> Result<Vec<HoldInfo>, LockError> {
        let mut all = Vec::new();
        let mut too_many = false;
        self.for_each_hold(prefix, |hold| {
            if all.len() == HOLDS_REPORT_MAX {
                too_many = true;
                return false;
            }
            all.push(hold);
            true
        })?;
        if too_many {
            return Err(LockError::InternalError(format!(
                "more than {HOLDS_REPORT_MAX} holds: narrow the prefix"
            )));
        }
        Ok(all)
    }

    /// Calls `each` with every hold of the cluster whose holder's client id starts with
    /// `prefix`, shard by shard, in fencing-token order within a shard, until `each` returns
    /// false or the walk ends. Read-only; pages are read one after the other, so the walk is
    /// not a snapshot: a hold that lasts the whole walk is listed exactly once, one granted or
    /// released during it may or may not be (spec §4.13).
    ///
    /// Errors: [`LockError::InvalidArgument`] for a prefix longer than 255 bytes;
    /// [`LockError::Unavailable`] when a shard's leader could not be reached within
    /// `request_timeout_ms` per page and the known nodes; [`LockError::InternalError`] when a
    /// server does not implement HOLDS (UNSUPPORTED) or sent a page that breaks the spec's
    /// rules (the walk stops there).
    pub fn for_each_hold(
        &self,
        prefix: &[u8],
        mut each: impl FnMut(HoldInfo) -> bool,
    ) -> Result<(), LockError> {
        if prefix.len() > HOLDS_PREFIX_LEN_MAX {
            return Err(LockError::InvalidArgument(format!(
                "a holders prefix is at most {HOLDS_PREFIX_LEN_MAX} bytes, got {}",
                prefix.len()
            )));
        }
        let candidates = self.candidates();
        let socket = admin_socket(candidates[0], "holds")?;
        let v6 = candidates[0].is_ipv6();
        let mut known = Known {
            nodes: candidates
                .iter()
                .filter_map(|&a| socket_addr_for(a, v6))
                .collect(),
            v6,
            members_read: false,
        };
        if known.nodes.is_empty() {
            return Err(LockError::InvalidArgument(
                "no server of the socket's address family to ask".into(),
            ));
        }
        let session_id = new_session_id();
        let mut request_id = 0u64;
        let mut shards_total: Option<u16> = None;
        let mut shard: u16 = 0;
        // Where the last page was answered: the next shard starts there (often one leader).
        let mut at = 0usize;
        loop {
            let mut cursor = 0u64;
            let mut empty_pages = 0;
            loop {
                let page = self.holds_page(
                    &socket,
                    &mut known,
                    &mut at,
                    (session_id, &mut request_id),
                    (shard, cursor, prefix),
                )?;
                let total = *shards_total.get_or_insert(page.shards);
                let server = known.nodes[at];
                if page.shards != total || page.shard != shard || page.cursor != cursor {
                    return Err(LockError::InternalError(format!(
                        "{server} answered HOLDS of shard {shard} of {total} from {cursor} with \
                         a page of shard {} of {} from {}: a node bug or a forged reply; the \
                         walk is abandoned",
                        page.shard, page.shards, page.cursor
                    )));
                }
                for hold in &page.holds {
                    let resource_shard = shard_of(&hold.resource, u32::from(total));
                    if !hold.client.starts_with(prefix) || resource_shard != u32::from(shard) {
                        return Err(LockError::InternalError(format!(
                            "{server} listed {} held by {} in shard {shard}, which the prefix \
                             {} or the shard (it is {resource_shard}) excludes: a node bug or \
                             a forged reply; the walk is abandoned",
                            hold.resource.escape_ascii(),
                            hold.client.escape_ascii(),
                            prefix.escape_ascii(),
                        )));
                    }
                }
                if page.holds.is_empty() {
                    empty_pages += 1;
                    // The decoder let through a page without entries at its own cursor only:
                    // its request was too short for the next hold (spec §4.13).
                    if (page.next_cursor != 0 && page.next_cursor == cursor)
                        || empty_pages > EMPTY_PAGES_MAX
                    {
                        return Err(LockError::InternalError(format!(
                            "{server} keeps answering HOLDS of shard {shard} without a hold \
                             (at cursor {cursor}): a node bug"
                        )));
                    }
                } else {
                    empty_pages = 0;
                }
                for hold in page.holds {
                    if !each(hold) {
                        return Ok(());
                    }
                }
                if page.next_cursor == 0 {
                    break;
                }
                cursor = page.next_cursor;
            }
            shard += 1;
            if shard >= shards_total.unwrap_or(1) {
                return Ok(());
            }
        }
    }

    /// One page of `shard` from `cursor`: sent to `known.nodes[*at]` and on to the leader it
    /// names (or along the known nodes), until an OK page; `*at` is left at the node that
    /// answered it.
    fn holds_page(
        &self,
        socket: &UdpSocket,
        known: &mut Known,
        at: &mut usize,
        (session_id, request_id): (u64, &mut u64),
        (shard, cursor, prefix): (u16, u64, &[u8]),
    ) -> Result<Page, LockError> {
        let mut last_error = LockError::Unavailable;
        for _ in 0..PAGE_TRIES_MAX {
            *request_id += 1;
            let server = known.nodes[*at];
            let page = match self.holds_exchange(
                socket,
                server,
                session_id,
                *request_id,
                (shard, cursor, prefix),
            ) {
                Ok(page) => page,
                Err(LockError::Unavailable) => {
                    // Silence: the next known node.
                    *at = (*at + 1) % known.nodes.len();
                    continue;
                }
                Err(e) => return Err(e),
            };
            match page.status {
                Status::Ok => return Ok(page),
                Status::NotLeader => {
                    let hinted = match page.hint {
                        Hint::Leader(addr) => {
                            if known.find(addr).is_none() && !known.members_read {
                                // The first hint to an address the client does not know: the
                                // hinting node's member table may name it (spec §7.1.7 rule 5).
                                known.members_read = true;
                                if let Ok(report) = self.members(server) {
                                    for m in report.members {
                                        let usable = m.state == super::MemberState::Alive;
                                        match socket_addr_for(m.addr, known.v6) {
                                            Some(a) if usable && !known.nodes.contains(&a) => {
                                                known.nodes.push(a)
                                            }
                                            _ => {}
                                        }
                                    }
                                }
                            }
                            known.find(addr)
                        }
                        _ => None,
                    };
                    // A hint only to a node the client knows (spec §7.1.7 rule 5); without
                    // one, the next known node.
                    *at = hinted.unwrap_or((*at + 1) % known.nodes.len());
                    last_error = LockError::Unavailable;
                }
                Status::Overloaded => {
                    let wait = match page.hint {
                        Hint::RetryAfter { ms } => StdDuration::from_millis(u64::from(ms)),
                        _ => StdDuration::from_millis(10),
                    };
                    std::thread::sleep(wait.min(OVERLOADED_WAIT_MAX));
                    last_error = LockError::Overloaded {
                        retry_after_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
                    };
                }
                Status::InvalidArgument => {
                    return Err(LockError::InternalError(format!(
                        "{server} refused HOLDS of shard {shard} (INVALID_ARGUMENT): its shard \
                         count is not the one its peers reported"
                    )))
                }
                status => {
                    return Err(LockError::from_status(status).unwrap_or_else(|| {
                        LockError::InternalError(format!("{server} answered HOLDS {status:?}"))
                    }))
                }
            }
        }
        Err(last_error)
    }

    /// One HOLDS request to `server`, retransmitted on the RTO until its reply or
    /// `request_timeout_ms`; the reply's status is the page's, whatever it is.
    fn holds_exchange(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        session_id: u64,
        request_id: u64,
        (shard, cursor, prefix): (u16, u64, &[u8]),
    ) -> Result<Page, LockError> {
        self.admin_exchange(
            socket,
            server,
            "HOLDS",
            (session_id, request_id),
            |attempt, out| {
                HoldsRequest {
                    session_id,
                    request_id,
                    attempt,
                    shard,
                    cursor,
                    prefix,
                }
                .encode(out)
            },
            |datagram| {
                let reply = HoldsReply::decode(datagram).ok()?;
                // The decoder checked the page's own rules (spec §5.10): shards in range, tokens
                // rising from the cursor, next_cursor past them.
                debug_assert!(reply.status != Status::Ok || u32::from(reply.shards) <= SHARDS_MAX);
                let page = Page {
                    status: reply.status,
                    hint: reply.hint,
                    shard: reply.shard,
                    shards: reply.shards,
                    cursor: reply.cursor,
                    next_cursor: reply.next_cursor,
                    holds: reply
                        .entries
                        .iter()
                        .map(|e| HoldInfo {
                            shard: reply.shard,
                            resource: e.resource.to_vec(),
                            client: e.client.to_vec(),
                            hold_count: e.hold_count,
                            fencing_token: e.fencing_token,
                            lease_ms: e.lease_ms,
                            waiters: e.waiter_count,
                        })
                        .collect(),
                };
                // Every status is the page's to read (NOT_LEADER's hint, OVERLOADED's delay).
                Some(((reply.session_id, reply.request_id), Status::Ok, page))
            },
        )
    }
}
