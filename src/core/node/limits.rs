//! Limits per node (issue 12 item 4, spec §9 "Limits per node"): what all the shard replicas a
//! node holds may keep together — resources, sessions, remembered answers, waiters and log
//! memory. Each lock table has its own limits too (`lock_table::Config`, per shard: they bound
//! one shard's snapshot), but a node holds up to `shards` replicas, so those alone would let
//! a node keep 64 times as much.
//!
//! # Where they are enforced
//!
//! When a shard's leader admits a client request ([`super::Node`]'s request path), never when
//! a replica applies a command: applying is deterministic from the log on every replica,
//! whatever each node's own counts, so replicas never diverge. A request refused here gets
//! OVERLOADED with the retry-after hint and changes nothing (it is neither proposed nor
//! remembered; a retry may succeed once room is made).
//!
//! # What is counted
//!
//! [`Usage`] of every replica the node holds, leader or follower, summed ([`Usage::of`]):
//! the table's counters, the log's memory after its snapshot, and its entries not applied
//! yet. Each entry not applied yet may add at most one resource, one waiter, two sessions and
//! two answers when it applies (a CANCEL_WAIT creates its target's session and answer beside
//! its own), so a request is admitted only while the counts plus that growth leave room
//! ([`NodeLimits::admits`]): the node's own proposals can never take it past a limit.
//!
//! Remembered answers are counted so that a full node still releases (spec §9.1 rule 7): a
//! session whose window of answers is full adds none (the table evicts its oldest), and a
//! RELEASE, RENEW, KEEPALIVE or CANCEL_WAIT of a known session may use a reserve above the
//! limit. And a request that took effect already gets its remembered answer at any limit
//! (rule 6; [`crate::core::replica::Replica::answer_remembered`]).
//!
//! # The bound, and its slack
//!
//! Entries another node's leader proposed reach this node's replicas unchecked by it. In a
//! static cluster every node holds every shard, so every node counts the same tables (up to
//! entries not applied yet) and each leader's check bounds every node; the slack is what the
//! other leaders have in flight: at most `UNCOMMITTED_MAX` entries per shard led elsewhere.
//! In a joined cluster with more nodes than replicas per shard, nodes hold different
//! subsets, so each node reports the limits it has reached to the leaders of its shards
//! (PEER_LOAD, spec node-protocol §8.14, [`super::load`]), and a leader refuses what would
//! raise a count any other replica's node reports reached: the bound then has the slack of
//! a report's age besides (§8.14 rule 5).

use udplock_protocol::{reached, RequestBody};

use crate::core::lock_table::LockTable;
use crate::core::replica::Replica;

/// A node's limits over all its shard replicas; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    /// Resources known (held, waited on or configured) over all shards.
    pub resources_max: u64,
    /// Client sessions remembered over all shards (a client using several shards has a
    /// session in each).
    pub sessions_max: u64,
    /// Final answers remembered over all sessions of all shards, for requests that may add
    /// state (ACQUIRE, CONFIGURE, and any request of a new session).
    pub answers_max: u64,
    /// Answers above `answers_max` kept for requests that free or keep what a known
    /// session has (RELEASE, RENEW, KEEPALIVE, CANCEL_WAIT): a node full of answers still
    /// lets its clients release and renew (spec §9.1 rule 7). Together with `answers_max`
    /// it bounds the answers a node's leaders add.
    pub answers_reserve: u64,
    /// Acquires waiting in queues over all shards.
    pub waiters_max: u64,
    /// Memory of the logs after their snapshots, over all shards (each entry's command plus
    /// `raft::ENTRY_MEMORY_OVERHEAD`).
    pub log_bytes_max: u64,
    /// Client requests from one source IP address (any port) proposed and not yet applied
    /// over every shard the node leads: one host's share of the node (a flood, or one busy
    /// client machine). Per shard, `replica::IN_FLIGHT_PER_SOURCE_MAX` applies as well.
    pub in_flight_per_source_max: u64,
}

impl NodeLimits {
    /// The defaults; see the README's "Memory per node" for the memory they bound.
    /// Resources as many as one shard may hold (so a single node's one shard meets no new
    /// limit); sessions for 1,024 clients that each use all 64 shards; answers for 128 busy
    /// clients that fill every shard's 256-answer window (256 × 64 each), and an eighth more
    /// for releases and renewals; the log memory of 24 shards at their cadence's full length.
    pub const DEFAULT: NodeLimits = NodeLimits {
        resources_max: 262_144,
        sessions_max: 65_536,
        answers_max: 2_097_152,
        answers_reserve: 262_144,
        waiters_max: 65_536,
        log_bytes_max: 256 * 1024 * 1024,
        in_flight_per_source_max: 1_024,
    };

    /// No limit of zero (a node that could admit nothing); the answers reserve may be zero.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("resources_per_node_max", self.resources_max),
            ("sessions_per_node_max", self.sessions_max),
            ("answers_per_node_max", self.answers_max),
            ("waiters_per_node_max", self.waiters_max),
            ("log_bytes_per_node_max", self.log_bytes_max),
            ("in_flight_per_source_max", self.in_flight_per_source_max),
        ];
        match fields.iter().find(|(_, value)| *value == 0) {
            Some((field, _)) => Err(format!("{field} must be greater than zero")),
            None => Ok(()),
        }
    }

    /// Whether a leader may propose `body` (a logged client request) with the node at
    /// `usage`: every count it may raise, plus what the entries not applied yet may still add,
    /// stays below its limit (spec §9.1 rules 3 and 7). `session` is what the request's shard
    /// knows of its session. Any request makes the log longer; only a request of a session its
    /// shard does not remember creates a session (a CANCEL_WAIT always, for its target's),
    /// only an ACQUIRE or CONFIGURE creates a resource, and only an ACQUIRE that may wait
    /// queues a waiter — so a known client is still served at the session limit, and a
    /// RELEASE at the resource and waiter limits (it makes room). Answers: a session whose
    /// window is full adds none (its oldest is evicted), and a request that frees or keeps
    /// what a known session has (RELEASE, RENEW, KEEPALIVE, CANCEL_WAIT) may use the answers
    /// reserve above `answers_max`. `None`: admitted; else the limit reached.
    pub fn admits(
        &self,
        usage: &Usage,
        body: &RequestBody<'_>,
        session: SessionSeen,
        resource_known: bool,
    ) -> Option<&'static str> {
        limit_name(self.reached(usage) & NodeLimits::raises(body, session, resource_known))
    }

    /// The limits `usage` has reached ([`reached`] bits, as PEER_LOAD carries them, spec
    /// §8.14): those at which a request that may raise the count is refused, counting what
    /// the entries not applied yet may still add (one resource and one waiter each, two
    /// sessions and two answers).
    pub fn reached(&self, usage: &Usage) -> u16 {
        let pending = usage.unapplied;
        let answers = usage.answers + 2 * pending;
        [
            (
                reached::RESOURCES,
                usage.resources + pending,
                self.resources_max,
            ),
            (
                reached::SESSIONS,
                usage.sessions + 2 * pending,
                self.sessions_max,
            ),
            (reached::ANSWERS, answers, self.answers_max),
            (
                reached::ANSWERS_RESERVE,
                answers,
                self.answers_max.saturating_add(self.answers_reserve),
            ),
            (reached::WAITERS, usage.waiters + pending, self.waiters_max),
            (reached::LOG_BYTES, usage.log_bytes, self.log_bytes_max),
        ]
        .into_iter()
        .filter(|&(_, count, max)| count >= max)
        .fold(0, |bits, (bit, ..)| bits | bit)
    }

    /// The counts `body` may raise ([`reached`] bits), `session` being what its shard knows
    /// of its session and `resource_known` whether its shard knows its resource (spec §9.1
    /// rules 3 and 7). Any request makes the log longer.
    pub fn raises(body: &RequestBody<'_>, session: SessionSeen, resource_known: bool) -> u16 {
        let new_session = session == SessionSeen::New;
        let (creates, queues, new_session, keeps) = match *body {
            RequestBody::Acquire { wait_ms, .. } => {
                (!resource_known, wait_ms > 0, new_session, false)
            }
            RequestBody::Configure { default_ttl_ms, .. } => (
                default_ttl_ms > 0 && !resource_known,
                false,
                new_session,
                false,
            ),
            // Creates its target's session and answer (spec §4.12) beside its own.
            RequestBody::CancelWait { .. } => (false, false, true, !new_session),
            RequestBody::Release { .. }
            | RequestBody::Renew { .. }
            | RequestBody::Keepalive { .. } => (false, false, new_session, !new_session),
            RequestBody::Status { .. } => (false, false, false, false),
        };
        // A full window evicts one answer for the one it stores (lock_table's `remember`);
        // a CANCEL_WAIT stores its target's answer too, in another session.
        let adds_answer =
            session != SessionSeen::WindowFull || matches!(body, RequestBody::CancelWait { .. });
        let answers = match (adds_answer, keeps) {
            (false, _) => 0,
            (true, true) => reached::ANSWERS_RESERVE,
            (true, false) => reached::ANSWERS,
        };
        let bit = |on: bool, bit: u16| if on { bit } else { 0 };
        bit(creates, reached::RESOURCES)
            | bit(new_session, reached::SESSIONS)
            | answers
            | bit(queues, reached::WAITERS)
            | reached::LOG_BYTES
    }
}

/// The name of the first limit among `bits` ([`reached`] bits), in the order a refusal names
/// it; `None` for none.
pub fn limit_name(bits: u16) -> Option<&'static str> {
    [
        (reached::SESSIONS, "sessions"),
        (reached::ANSWERS, "answers"),
        (reached::ANSWERS_RESERVE, "answers"),
        (reached::LOG_BYTES, "log bytes"),
        (reached::RESOURCES, "resources"),
        (reached::WAITERS, "waiters"),
    ]
    .into_iter()
    .find(|&(bit, _)| bits & bit != 0)
    .map(|(_, name)| name)
}

/// What a request's shard knows of its session when its leader admits it
/// ([`NodeLimits::admits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionSeen {
    /// Not remembered: the request creates the session.
    New,
    /// Remembered, with fewer answers than `answers_per_session_max`.
    Known,
    /// Remembered with `answers_per_session_max` answers: storing one more evicts the
    /// oldest, so the session's answers do not grow.
    WindowFull,
}

impl SessionSeen {
    /// What `table` (a shard's, `None` before INIT) knows of session `session_id`.
    pub fn of(table: Option<&LockTable>, session_id: u64) -> SessionSeen {
        let Some(table) = table else {
            return SessionSeen::New;
        };
        match table.session_answers(session_id) {
            None => SessionSeen::New,
            Some(n) if n >= table.config().answers_per_session_max => SessionSeen::WindowFull,
            Some(_) => SessionSeen::Known,
        }
    }
}

impl Default for NodeLimits {
    fn default() -> NodeLimits {
        NodeLimits::DEFAULT
    }
}

/// What one replica, or all of a node's, keep: the counts [`NodeLimits`] bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub resources: u64,
    pub sessions: u64,
    pub answers: u64,
    pub waiters: u64,
    pub log_bytes: u64,
    /// Log entries not applied yet (each may still add to the counts).
    pub unapplied: u64,
}

impl Usage {
    /// What `replica` keeps now.
    pub fn of(replica: &Replica) -> Usage {
        let table = replica.table().map(|t| t.stats()).unwrap_or_default();
        let raft = replica.raft();
        Usage {
            resources: table.resources,
            sessions: table.sessions,
            answers: table.answers_remembered,
            waiters: table.waiters,
            log_bytes: raft.log_bytes(),
            unapplied: raft.last_index().saturating_sub(replica.applied_index()),
        }
    }

    /// `self` with `old` taken out and `new` put in (one replica's counts replaced).
    pub fn replace(&mut self, old: &Usage, new: &Usage) {
        let swap = |total: &mut u64, old: u64, new: u64| {
            *total = total
                .checked_sub(old)
                .expect("a replica's counts are in the total")
                + new;
        };
        swap(&mut self.resources, old.resources, new.resources);
        swap(&mut self.sessions, old.sessions, new.sessions);
        swap(&mut self.answers, old.answers, new.answers);
        swap(&mut self.waiters, old.waiters, new.waiters);
        swap(&mut self.log_bytes, old.log_bytes, new.log_bytes);
        swap(&mut self.unapplied, old.unapplied, new.unapplied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(wait_ms: u32) -> RequestBody<'static> {
        RequestBody::Acquire {
            resource: b"r",
            client: b"c",
            wait_ms,
            ttl_ms: 0,
        }
    }

    const RELEASE: RequestBody<'static> = RequestBody::Release {
        resource: b"r",
        client: b"c",
    };

    /// Each limit refuses exactly the requests that can raise its count, counting what the
    /// entries not applied yet may still add (one resource and waiter, two sessions and
    /// answers each).
    #[test]
    fn each_limit_refuses_what_may_raise_it_counting_entries_not_applied() {
        use SessionSeen::{Known, New};
        let limits = NodeLimits {
            resources_max: 10,
            sessions_max: 10,
            answers_max: 100,
            answers_reserve: 10,
            waiters_max: 10,
            log_bytes_max: 1_000,
            in_flight_per_source_max: 10,
        };
        assert_eq!(
            limits.admits(&Usage::default(), &acquire(5), New, false),
            None
        );
        // Resources: 9 known and 1 entry in flight fill 10; a RELEASE still passes.
        let usage = Usage {
            resources: 9,
            unapplied: 1,
            ..Usage::default()
        };
        assert_eq!(
            limits.admits(&usage, &acquire(0), Known, false),
            Some("resources")
        );
        assert_eq!(limits.admits(&usage, &RELEASE, Known, false), None);
        // An acquire of a resource its shard knows creates none.
        assert_eq!(limits.admits(&usage, &acquire(0), Known, true), None);
        // Waiters: only an acquire that may wait.
        let usage = Usage {
            waiters: 10,
            ..Usage::default()
        };
        assert_eq!(
            limits.admits(&usage, &acquire(5), Known, false),
            Some("waiters")
        );
        assert_eq!(limits.admits(&usage, &acquire(0), Known, false), None);
        // Sessions: two per entry in flight; a known session passes.
        let usage = Usage {
            sessions: 8,
            unapplied: 1,
            ..Usage::default()
        };
        assert_eq!(
            limits.admits(&usage, &RELEASE, New, false),
            Some("sessions")
        );
        assert_eq!(limits.admits(&usage, &RELEASE, Known, false), None);
        // Log bytes: any request.
        let usage = Usage {
            log_bytes: 1_000,
            ..Usage::default()
        };
        assert_eq!(
            limits.admits(&usage, &RELEASE, Known, false),
            Some("log bytes")
        );
    }

    /// Spec §9.1 rule 7: at the answers limit a known session may still release and renew
    /// (the reserve), a session whose window is full adds no answer, and everything else is
    /// refused; past the reserve only full windows pass.
    #[test]
    fn at_the_answers_limit_releases_and_renewals_use_the_reserve() {
        use SessionSeen::{Known, New, WindowFull};
        let limits = NodeLimits {
            answers_max: 100,
            answers_reserve: 10,
            ..NodeLimits::DEFAULT
        };
        let renew = RequestBody::Renew {
            resource: b"r",
            client: b"c",
            ttl_ms: 0,
        };
        let keepalive = RequestBody::Keepalive {
            shard: 0,
            shards: 1,
            ttl_ms: 0,
            tokens: udplock_protocol::Tokens::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
        };
        let cancel = RequestBody::CancelWait {
            resource: b"r",
            client: b"c",
            target_session: 1,
            target_request: 1,
        };
        // 98 remembered and one entry in flight (two answers): at the limit.
        let full = Usage {
            answers: 98,
            unapplied: 1,
            ..Usage::default()
        };
        assert_eq!(
            limits.admits(&full, &acquire(0), Known, false),
            Some("answers")
        );
        assert_eq!(limits.admits(&full, &RELEASE, New, false), Some("answers"));
        for keeps in [&RELEASE, &renew, &keepalive, &cancel] {
            assert_eq!(limits.admits(&full, keeps, Known, false), None, "{keeps:?}");
        }
        // A full window evicts as it stores: even an acquire passes.
        assert_eq!(limits.admits(&full, &acquire(0), WindowFull, false), None);
        // Past the reserve too, except a CANCEL_WAIT (its target's answer is elsewhere).
        let past = Usage {
            answers: 110,
            ..Usage::default()
        };
        assert_eq!(
            limits.admits(&past, &RELEASE, Known, false),
            Some("answers")
        );
        assert_eq!(limits.admits(&past, &RELEASE, WindowFull, false), None);
        assert_eq!(
            limits.admits(&past, &cancel, WindowFull, false),
            Some("answers")
        );
    }

    #[test]
    fn a_limit_of_zero_is_refused() {
        assert_eq!(NodeLimits::DEFAULT.validate(), Ok(()));
        let zero = NodeLimits {
            waiters_max: 0,
            ..NodeLimits::DEFAULT
        };
        assert_eq!(
            zero.validate(),
            Err("waiters_per_node_max must be greater than zero".into())
        );
    }
}
