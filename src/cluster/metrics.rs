//! What a node tells Prometheus and load balancers (`udplock server --metrics-listen ADDR`,
//! README "Metrics and health"): the node's counters in the Prometheus text exposition format
//! 0.0.4 (`/metrics`), whether its event loop turns (`/health`), and whether it serves
//! (`/ready`). Served by a tiny HTTP/1.1 responder ([`super::http`]) on its own thread, off
//! the datagram path: it reads what the event loop publishes — the atomics of [`NodeStats`]
//! (bumped by the core and the loop as they go) and the shard and member views the loop
//! copies out every few milliseconds — and never takes a lock the loop waits on for longer
//! than a copy.
//!
//! [`render`] is pure (a [`View`] in, text out) and tested here; [`check_exposition`] is the
//! format's checker the tests use on its output.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::core::node::latency::{LatencyOp, LATENCY_BUCKETS_US};
use crate::core::node::NodeStats;
use crate::core::peer_auth::AuthDrop;
use crate::core::raft::{NodeId, Role};
use crate::core::replica::ShardStats;
use crate::core::swim::{MemberInfo, State};

/// The event loop wakes at least this often, even with no datagram and no timer due, so that
/// its turn counter (`NodeStats::loop_turns`) advances while it is alive.
pub const LOOP_TURN_INTERVAL_MAX_MS: u64 = 1_000;

/// `/health` answers 503 once the loop's turn counter has not moved for this long: three
/// of its longest sleeps ([`LOOP_TURN_INTERVAL_MAX_MS`]), so a busy machine that delays one
/// wake-up is not reported dead, and a loop stuck on a disk or a bug is within seconds.
pub const LOOP_STALL_MS: u64 = 3_000;

/// Members listed one by one (`udplock_member_state`) at most: beyond it only the count per
/// state, so that a large cluster's scrape stays small.
pub const MEMBERS_LISTED_MAX: usize = 32;

/// The `limit` label of each bit of PEER_LOAD's `reached` (spec §8.14), named as the
/// server's options name the limits (`--resources-per-node-max` ...).
const LOAD_LIMITS: [(u16, &str); 6] = [
    (udplock_protocol::reached::RESOURCES, "resources"),
    (udplock_protocol::reached::SESSIONS, "sessions"),
    (udplock_protocol::reached::ANSWERS, "answers"),
    (
        udplock_protocol::reached::ANSWERS_RESERVE,
        "answers_reserve",
    ),
    (udplock_protocol::reached::WAITERS, "waiters"),
    (udplock_protocol::reached::LOG_BYTES, "log_bytes"),
];
const _: () = {
    let mut all = 0;
    let mut i = 0;
    while i < LOAD_LIMITS.len() {
        all |= LOAD_LIMITS[i].0;
        i += 1;
    }
    assert!(all == udplock_protocol::reached::ALL, "every bit named");
};

/// The content type of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a node publishes for its metrics thread: shared with its event loop.
#[derive(Clone)]
pub struct Source {
    pub node_id: NodeId,
    pub stats: Arc<NodeStats>,
    pub shard_stats: Arc<Mutex<Vec<ShardStats>>>,
    pub members: Arc<Mutex<Vec<MemberInfo>>>,
    /// The limits each other node reports reached (spec §8.14), as the loop last published
    /// them ([`crate::core::node::Node::peer_loads`]).
    pub peer_loads: Arc<Mutex<Vec<(NodeId, u16)>>>,
}

/// Whether the loop still turns, judged from its counter as seen at successive checks.
#[derive(Debug)]
pub struct LoopWatch {
    turns: u64,
    /// When `turns` was last seen to change (or the watch began).
    changed_at: std::time::Instant,
}

impl LoopWatch {
    pub fn new(turns: u64, now: std::time::Instant) -> LoopWatch {
        LoopWatch {
            turns,
            changed_at: now,
        }
    }

    /// Whether the loop is alive at `now`, having turned `turns` times: it moved since the
    /// last check, or within [`LOOP_STALL_MS`].
    pub fn alive(&mut self, turns: u64, now: std::time::Instant) -> bool {
        if turns != self.turns {
            self.turns = turns;
            self.changed_at = now;
        }
        now.saturating_duration_since(self.changed_at)
            < std::time::Duration::from_millis(LOOP_STALL_MS)
    }
}

/// Whether a node with these shards serves (`/ready`): every shard it holds a replica of
/// knows its leader (a replica still rejoining, or electing, does not). A joined node that
/// holds no replica yet serves too: it answers NOT_LEADER and clients move on.
pub fn shards_ready(shards: &[ShardStats]) -> bool {
    shards
        .iter()
        .filter(|s| s.role.is_some())
        .all(|s| s.leader.is_some())
}

/// Everything one scrape shows, read once.
pub struct View<'a> {
    pub node_id: NodeId,
    pub stats: &'a NodeStats,
    /// Per shard (index = shard); `role: None` where the node holds no replica.
    pub shards: &'a [ShardStats],
    pub members: &'a [MemberInfo],
    /// Per other node, the limits its live load report says reached (spec §8.14).
    pub peer_loads: &'a [(NodeId, u16)],
    /// `/health` and `/ready` as they would answer now.
    pub healthy: bool,
    pub ready: bool,
}

impl Source {
    /// The view now (`healthy` as the caller's watch judged it).
    pub fn render(&self, healthy: bool) -> (String, bool) {
        let shards = self
            .shard_stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let members = self.members.lock().map(|m| m.clone()).unwrap_or_default();
        let peer_loads = self
            .peer_loads
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        let ready = healthy && shards_ready(&shards);
        let view = View {
            node_id: self.node_id,
            stats: &self.stats,
            shards: &shards,
            members: &members,
            peer_loads: &peer_loads,
            healthy,
            ready,
        };
        (render(&view), ready)
    }

    /// Whether every shard it holds knows its leader (see [`shards_ready`]).
    pub fn shards_ready(&self) -> bool {
        self.shard_stats
            .lock()
            .map(|s| shards_ready(&s))
            .unwrap_or(false)
    }
}

/// The exposition text: `# HELP` and `# TYPE` once per family, then its samples.
struct Out {
    text: String,
    families: BTreeSet<&'static str>,
}

impl Out {
    fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        assert!(self.families.insert(name), "{name} twice");
        assert!(!help.contains('\n') && !help.contains('\\'));
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &dyn fmt::Display)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(&v.to_string()));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family of one unlabelled sample.
    fn one(&mut self, name: &'static str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the format wants it: `\`, `"` and line feeds escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn role_name(s: &ShardStats) -> &'static str {
    match s.role {
        Some(Role::Leader) => "leader",
        Some(Role::Candidate) => "candidate",
        Some(Role::PreCandidate) => "precandidate",
        Some(Role::Follower) if s.learner => "learner",
        Some(Role::Follower) => "follower",
        None => "none",
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Dead => "dead",
        State::Left => "left",
    }
}

/// µs as seconds, exactly (no float rounding in the text).
struct Seconds(u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = self.0 % 1_000_000;
        if frac == 0 {
            write!(f, "{}", self.0 / 1_000_000)
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{}.{}", self.0 / 1_000_000, digits.trim_end_matches('0'))
        }
    }
}

/// The Prometheus text of `view`. Every family is named `udplock_*`, units last; counters end
/// in `_total`. README "Metrics and health" lists them.
pub fn render(view: &View<'_>) -> String {
    let s = view.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = Out {
        text: String::with_capacity(16 * 1024),
        families: BTreeSet::new(),
    };
    out.one(
        "udplock_node_id",
        "gauge",
        "This node's id in its cluster (1 for a single node).",
        view.node_id,
    );
    out.one(
        "udplock_healthy",
        "gauge",
        "1 while the node's event loop turns (what /health answers 200 for), else 0.",
        u64::from(view.healthy),
    );
    out.one(
        "udplock_ready",
        "gauge",
        "1 while the node serves: its loop turns and every shard it holds knows its leader (/ready).",
        u64::from(view.ready),
    );
    out.one(
        "udplock_event_loop_turns_total",
        "counter",
        "Turns of the node's event loop (at least one a second while it is alive).",
        get(&s.loop_turns),
    );
    // Datagrams.
    out.one(
        "udplock_datagrams_received_total",
        "counter",
        "Datagrams read from the node's socket (clients and nodes).",
        get(&s.datagrams),
    );
    out.one(
        "udplock_requests_total",
        "counter",
        "Client requests that decoded and were served (lock requests and read-only queries).",
        get(&s.requests),
    );
    out.one(
        "udplock_replies_sent_total",
        "counter",
        "Replies sent to clients, error replies included.",
        get(&s.replies),
    );
    out.one(
        "udplock_error_replies_total",
        "counter",
        "Client requests answered ERROR_REPLY because they did not decode (spec 3.2).",
        get(&s.error_replies),
    );
    out.one(
        "udplock_address_retries_total",
        "counter",
        "Lock requests answered RETRY: no valid address token for their source and session (spec 7.2.5).",
        get(&s.address_retries),
    );
    out.one(
        "udplock_address_tokens_expired_total",
        "counter",
        "Of the RETRYs, those to a genuine address token outside its time window: expired, or from a clock too far ahead (spec 7.2.5).",
        get(&s.address_tokens_expired),
    );
    out.one(
        "udplock_overloaded_node_limits_total",
        "counter",
        "Client requests a leader answered OVERLOADED because this node's replicas together reached a limit per node (spec 9.1).",
        get(&s.overloaded_node_limits),
    );
    // Load reports (spec 8.14).
    for (name, help, counter) in [
        ("udplock_load_reports_sent_total", "PEER_LOAD datagrams sent to the leaders of this node's shards (spec 8.14).", &s.load_sent),
        ("udplock_load_reports_received_total", "PEER_LOAD datagrams accepted from other nodes.", &s.load_received),
        ("udplock_load_reports_dropped_total", "PEER_LOAD datagrams dropped (malformed, another cluster's, an unlisted node's, failing the MAC checks; each also counted by its reason).", &s.load_dropped),
    ] {
        out.one(name, "counter", help, get(counter));
    }
    let own = get(&s.load_reached);
    out.family(
        "udplock_load_reached",
        "gauge",
        "1 for each limit per node (spec 9.1) this node's replicas have reached as applied, as it reports them to its leaders (spec 8.14).",
    );
    for (bit, limit) in LOAD_LIMITS {
        out.sample(
            "udplock_load_reached",
            &[("limit", &limit)],
            u64::from(own & u64::from(bit) != 0),
        );
    }
    out.family(
        "udplock_peer_load_reached",
        "gauge",
        "1 for each limit per node another node reports reached in a live load report (spec 8.14): its leaders here refuse what would raise it.",
    );
    for &(peer, reached) in view.peer_loads {
        for (bit, limit) in LOAD_LIMITS {
            if reached & bit != 0 {
                out.sample(
                    "udplock_peer_load_reached",
                    &[("peer", &peer), ("limit", &limit)],
                    1,
                );
            }
        }
    }
    out.one(
        "udplock_send_errors_total",
        "counter",
        "Datagrams the kernel refused to send.",
        get(&s.send_errors),
    );
    out.family(
        "udplock_datagrams_dropped_total",
        "counter",
        "Datagrams dropped without an answer, by reason (MAC failures: udplock_peer_auth_failures_total).",
    );
    for (reason, counter) in [
        ("invalid", &s.dropped),
        ("peer_unknown", &s.peer_unknown),
        ("remove_refused", &s.remove_dropped),
    ] {
        out.sample(
            "udplock_datagrams_dropped_total",
            &[("reason", &reason)],
            get(counter),
        );
    }
    out.family(
        "udplock_peer_auth_failures_total",
        "counter",
        "Node-to-node datagrams that failed the authentication checks (spec 8.11) and were dropped, by reason.",
    );
    for reason in AuthDrop::ALL {
        out.sample(
            "udplock_peer_auth_failures_total",
            &[("reason", &reason.name())],
            s.auth_dropped(reason),
        );
    }
    out.family(
        "udplock_client_auth_refusals_total",
        "counter",
        "Lock requests refused by client authentication (spec 7.2.6): answered UNAUTHENTICATED (no key where one is required, an unknown key) or FORBIDDEN, or dropped (a MAC that does not verify), by reason.",
    );
    for reason in crate::core::node::client_auth::ClientAuthDrop::ALL {
        out.sample(
            "udplock_client_auth_refusals_total",
            &[("reason", &reason.name())],
            get(&s.client_auth[reason.index()]),
        );
    }
    out.one(
        "udplock_peer_datagrams_sent_total",
        "counter",
        "PEER datagrams sent to other nodes.",
        get(&s.peer_sent),
    );
    out.one(
        "udplock_peer_datagrams_received_total",
        "counter",
        "PEER datagrams accepted from other nodes.",
        get(&s.peer_received),
    );
    out.one(
        "udplock_swim_messages_sent_total",
        "counter",
        "SWIM messages sent (spec 8.12).",
        get(&s.swim_sent),
    );
    out.one(
        "udplock_swim_messages_received_total",
        "counter",
        "SWIM messages received from authenticated members.",
        get(&s.swim_received),
    );
    out.one(
        "udplock_key_reloads_total",
        "counter",
        "Changed key files applied (the cluster key file, the client key file).",
        get(&s.key_reloads),
    );
    out.one(
        "udplock_key_file_errors_total",
        "counter",
        "Changed key files refused, cluster or client (the keys in force stayed).",
        get(&s.key_file_errors),
    );
    // Locks, counted by the leader that applies each change.
    let locks = s.locks.read();
    for (name, help, value) in [
        ("udplock_lock_grants_total", "Holds granted (new and re-entrant, at once or after a wait) by shards this node led.", locks.grants),
        ("udplock_lock_handoffs_total", "Grants to an acquire that waited in the lock's queue (a subset of the grants).", locks.handoffs),
        ("udplock_lock_releases_total", "Holds given back by RELEASE in shards this node led.", locks.releases),
        ("udplock_lock_expirations_total", "Holds whose lease ran out unrenewed in shards this node led.", locks.expirations),
        ("udplock_lock_acquisition_timeouts_total", "Acquires answered LOCK_ACQUISITION_TIMEOUT (held and no wait asked, or the wait ended in the queue).", locks.acquisition_timeouts),
        ("udplock_lock_queued_total", "Acquires that went into a lock's queue.", locks.queued),
        ("udplock_lock_renewals_total", "Holds renewed by RENEW or by a KEEPALIVE token.", locks.renewals),
    ] {
        out.one(name, "counter", help, value);
    }
    let led = view
        .shards
        .iter()
        .filter(|sh| sh.role == Some(Role::Leader));
    let (held, waiters) = led.fold((0, 0), |(h, w), sh| {
        (h + sh.table.held, w + sh.table.waiters)
    });
    out.one(
        "udplock_locks_held",
        "gauge",
        "Locks held in the shards this node leads.",
        held,
    );
    out.one(
        "udplock_waiters",
        "gauge",
        "Acquires waiting in the queues of the shards this node leads.",
        waiters,
    );
    // Latency.
    let name = "udplock_request_duration_seconds";
    out.family(
        name,
        "histogram",
        "Requests from the first copy's datagram in to the final reply out, as this node saw them, by type (acquire_waited: answered after waiting in the queue).",
    );
    for op in LatencyOp::ALL {
        let h = s.latency[op.index()].snapshot();
        let ty = op.name();
        for (bound, count) in h.cumulative() {
            let le = match bound {
                Some(us) => Seconds(us).to_string(),
                None => "+Inf".to_string(),
            };
            out.sample(
                "udplock_request_duration_seconds_bucket",
                &[("type", &ty), ("le", &le)],
                count,
            );
        }
        // The sum in seconds with µs precision: printed by hand (no float).
        let _ = writeln!(
            out.text,
            "udplock_request_duration_seconds_sum{{type=\"{ty}\"}} {}",
            Seconds(h.sum_us)
        );
        out.sample(
            "udplock_request_duration_seconds_count",
            &[("type", &ty)],
            h.count(),
        );
    }
    debug_assert_eq!(
        LATENCY_BUCKETS_US.len() + 1,
        s.latency[0].snapshot().counts.len()
    );
    out.one(
        "udplock_requests_untimed_total",
        "counter",
        "Requests not timed because too many were waiting for their reply (LATENCY_PENDING_MAX).",
        get(&s.latency_untracked),
    );
    // Shards this node holds a replica of.
    let held_shards: Vec<(usize, &ShardStats)> = view
        .shards
        .iter()
        .enumerate()
        .filter(|(_, sh)| sh.role.is_some())
        .collect();
    out.one(
        "udplock_shards_held",
        "gauge",
        "Shards this node holds a replica of.",
        held_shards.len() as u64,
    );
    out.family(
        "udplock_shard_role",
        "gauge",
        "1 for this node's role in each shard it holds (leader, follower, learner, candidate, precandidate).",
    );
    for (shard, sh) in &held_shards {
        out.sample(
            "udplock_shard_role",
            &[("shard", shard), ("role", &role_name(sh))],
            1,
        );
    }
    type Field = fn(&ShardStats) -> u64;
    let per_shard: [(&'static str, &str, &str, Field); 10] = [
        (
            "udplock_shard_leader",
            "gauge",
            "The node this replica believes leads the shard (0: none known).",
            |sh| sh.leader.unwrap_or(0),
        ),
        (
            "udplock_shard_term",
            "gauge",
            "The shard's Raft term as this replica knows it.",
            |sh| sh.term,
        ),
        (
            "udplock_shard_commit_index",
            "gauge",
            "The shard's Raft commit index at this replica.",
            |sh| sh.commit_index,
        ),
        (
            "udplock_shard_applied_index",
            "gauge",
            "The last log index this replica applied to its lock table.",
            |sh| sh.applied_index,
        ),
        (
            "udplock_shard_log_last_index",
            "gauge",
            "The last index in this replica's Raft log.",
            |sh| sh.log_len,
        ),
        (
            "udplock_shard_snapshot_bytes",
            "gauge",
            "Bytes of the shard's latest snapshot at this replica (0: none yet).",
            |sh| sh.snapshot_bytes,
        ),
        (
            "udplock_shard_locks_held",
            "gauge",
            "Locks held in the shard's lock table (as applied here).",
            |sh| sh.table.held,
        ),
        (
            "udplock_shard_waiters",
            "gauge",
            "Acquires waiting in the shard's queues (as applied here).",
            |sh| sh.table.waiters,
        ),
        (
            "udplock_shard_resources",
            "gauge",
            "Resources the shard's lock table knows (held, waited on, or configured).",
            |sh| sh.table.resources,
        ),
        (
            "udplock_shard_sessions",
            "gauge",
            "Client sessions the shard's lock table remembers.",
            |sh| sh.table.sessions,
        ),
    ];
    for (name, kind, help, field) in per_shard {
        out.family(name, kind, help);
        for (shard, sh) in &held_shards {
            out.sample(name, &[("shard", shard)], field(sh));
        }
    }
    // Members (SWIM, spec 8.12).
    out.family(
        "udplock_members",
        "gauge",
        "Members this node's SWIM table holds in each state, itself included.",
    );
    for state in [State::Alive, State::Suspect, State::Dead, State::Left] {
        let n = view.members.iter().filter(|m| m.state == state).count();
        out.sample(
            "udplock_members",
            &[("state", &state_name(state))],
            n as u64,
        );
    }
    out.family(
        "udplock_member_state",
        "gauge",
        "1 for each member's state as this node holds it (listed while the cluster has at most 32 members).",
    );
    if view.members.len() <= MEMBERS_LISTED_MAX {
        for m in view.members {
            out.sample(
                "udplock_member_state",
                &[("member", &m.id), ("state", &state_name(m.state))],
                1,
            );
        }
    }
    out.text
}

/// Checks `text` against the text exposition format 0.0.4 as far as udplock uses it: every
/// line a `# HELP`, a `# TYPE` or a sample `name{label="value",...} value`; names and labels
/// of the allowed characters; HELP and TYPE at most once per family and before its samples;
/// every sample of a family that has a TYPE (histogram samples: `_bucket`, `_sum`, `_count`,
/// with `+Inf` equal to `_count`); no sample twice. `Err` names the first fault.
pub fn check_exposition(text: &str) -> Result<(), String> {
    use std::collections::{BTreeMap, HashSet};
    let name_ok = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut sampled: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut inf: BTreeMap<String, f64> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the text does not end with a line feed".into());
    }
    for (i, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !name_ok(name) || !helps.insert(name.to_string()) {
                return Err(at("a bad or repeated HELP"));
            }
            if sampled.contains(name) {
                return Err(at("HELP after the family's samples"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, kind) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !name_ok(name) || !kinds.contains(&kind) || words.next().is_some() {
                return Err(at("a bad TYPE"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(at("a repeated TYPE"));
            }
            if sampled.contains(name) {
                return Err(at("TYPE after the family's samples"));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(at("neither HELP, TYPE nor a sample"));
        }
        // A sample: name, optional labels, one space, a value.
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at("a value that is not a number"))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.strip_suffix('}')
                    .ok_or_else(|| at("labels without a closing brace"))?,
            ),
            None => (series, ""),
        };
        if !name_ok(name) {
            return Err(at("a bad metric name"));
        }
        let mut le = None;
        let mut other_labels = String::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (label, after) = rest
                .split_once("=\"")
                .ok_or_else(|| at("a label without =\""))?;
            if !name_ok(label) || label.starts_with("__") {
                return Err(at("a bad label name"));
            }
            // The value runs to the first quote not escaped.
            let mut end = None;
            let mut escaped = false;
            for (j, c) in after.char_indices() {
                match (escaped, c) {
                    (true, '\\' | '"' | 'n') => escaped = false,
                    (true, _) => return Err(at("a bad escape in a label value")),
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(j);
                        break;
                    }
                    (false, _) => {}
                }
            }
            let end = end.ok_or_else(|| at("an unterminated label value"))?;
            if label == "le" {
                le = Some(after[..end].to_string());
            } else {
                let _ = write!(other_labels, "{label}={},", &after[..end]);
            }
            rest = &after[end + 1..];
            rest = match rest.strip_prefix(',') {
                Some(r) => r,
                None if rest.is_empty() => rest,
                None => return Err(at("labels not separated by commas")),
            };
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        let Some(kind) = types.get(family) else {
            return Err(at("a sample of a family with no TYPE before it"));
        };
        if kind == "counter" && !name.ends_with("_total") {
            return Err(at("a counter not named _total"));
        }
        if kind == "histogram" {
            if name == family {
                return Err(at("a histogram sample without _bucket, _sum or _count"));
            }
            let key = format!("{family}{{{other_labels}}}");
            if name.ends_with("_bucket") {
                match le.as_deref() {
                    None => return Err(at("a bucket without le")),
                    Some("+Inf") => {
                        inf.insert(key, value);
                    }
                    Some(_) => {}
                }
            } else if name.ends_with("_count") {
                counts.insert(key, value);
            }
        }
        sampled.insert(family.to_string());
        if !seen.insert(format!("{name}{{{other_labels}le={le:?}}}")) {
            return Err(at("a sample repeated"));
        }
    }
    if inf != counts {
        return Err("a histogram whose +Inf bucket is not its _count".into());
    }
    Ok(())
}

/// Reads the value of the sample `series` (its name and labels exactly as rendered, e.g.
/// `udplock_lock_grants_total` or `udplock_shard_role{shard="0",role="leader"}`) from an
/// exposition text; `None` if absent.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lock_table;
    use crate::core::time::{Duration, Instant};
    use std::net::SocketAddr;

    fn shard(role: Option<Role>, leader: Option<NodeId>) -> ShardStats {
        ShardStats {
            role,
            leader,
            term: 3,
            commit_index: 10,
            applied_index: 10,
            log_len: 11,
            snapshot_bytes: 4_096,
            table: lock_table::Stats {
                held: 2,
                waiters: 1,
                resources: 5,
                sessions: 4,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn member(id: NodeId, state: State) -> MemberInfo {
        MemberInfo {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 7100 + id as u16)),
            incarnation: 1,
            state,
            since: Instant::ZERO,
        }
    }

    fn rendered(stats: &NodeStats, shards: &[ShardStats], members: &[MemberInfo]) -> String {
        render(&View {
            node_id: 2,
            stats,
            shards,
            members,
            peer_loads: &[(3, udplock_protocol::reached::RESOURCES | 0x8000)],
            healthy: true,
            ready: shards_ready(shards),
        })
    }

    #[test]
    fn the_text_is_valid_exposition_format_with_every_family_once() {
        let stats = NodeStats::default();
        stats.latency[LatencyOp::Acquire.index()].record(Duration::from_micros(15));
        stats.latency[LatencyOp::Release.index()].record(Duration::from_micros(2_500_001));
        NodeStats::bump(&stats.auth_dropped[AuthDrop::BadMac.index()]);
        let shards = [
            shard(Some(Role::Leader), Some(2)),
            shard(None, None),
            shard(Some(Role::Follower), Some(1)),
        ];
        let members = [member(2, State::Alive), member(1, State::Suspect)];
        let text = rendered(&stats, &shards, &members);
        check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        // The histogram: cumulative, in seconds, the sum exact.
        let v = |s: &str| sample_value(&text, s);
        let acquire = "udplock_request_duration_seconds";
        assert_eq!(
            v(&format!(
                "{acquire}_bucket{{type=\"acquire\",le=\"0.00001\"}}"
            )),
            Some(0.0)
        );
        assert_eq!(
            v(&format!(
                "{acquire}_bucket{{type=\"acquire\",le=\"0.00002\"}}"
            )),
            Some(1.0)
        );
        assert_eq!(
            v(&format!("{acquire}_bucket{{type=\"acquire\",le=\"+Inf\"}}")),
            Some(1.0)
        );
        assert!(text.contains("udplock_request_duration_seconds_sum{type=\"acquire\"} 0.000015\n"));
        assert!(text.contains("udplock_request_duration_seconds_sum{type=\"release\"} 2.500001\n"));
        assert_eq!(
            v(&format!("{acquire}_bucket{{type=\"release\",le=\"2\"}}")),
            Some(0.0)
        );
        assert_eq!(
            v(&format!("{acquire}_bucket{{type=\"release\",le=\"5\"}}")),
            Some(1.0)
        );
        assert_eq!(
            v(&format!("{acquire}_count{{type=\"release\"}}")),
            Some(1.0)
        );
        // Per shard: only the shards held; the role as a label.
        assert_eq!(
            v("udplock_shard_role{shard=\"0\",role=\"leader\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("udplock_shard_role{shard=\"2\",role=\"follower\"}"),
            Some(1.0)
        );
        assert!(!text.contains("shard=\"1\""));
        assert_eq!(
            v("udplock_shard_snapshot_bytes{shard=\"0\"}"),
            Some(4_096.0)
        );
        assert_eq!(v("udplock_shard_leader{shard=\"2\"}"), Some(1.0));
        // Node gauges: the shards it leads only.
        assert_eq!(v("udplock_locks_held"), Some(2.0));
        assert_eq!(v("udplock_waiters"), Some(1.0));
        assert_eq!(v("udplock_shards_held"), Some(2.0));
        assert_eq!(
            v("udplock_peer_auth_failures_total{reason=\"BadMac\"}"),
            Some(1.0)
        );
        assert_eq!(v("udplock_members{state=\"suspect\"}"), Some(1.0));
        assert_eq!(
            v("udplock_member_state{member=\"1\",state=\"suspect\"}"),
            Some(1.0)
        );
        assert_eq!(v("udplock_ready"), Some(1.0));
        assert_eq!(v("udplock_node_id"), Some(2.0));
        // Load reports: this node's limits, each 0 or 1; a peer's reached limits only (a bit
        // this revision does not define is not shown).
        assert_eq!(v("udplock_load_reached{limit=\"waiters\"}"), Some(0.0));
        assert_eq!(
            v("udplock_peer_load_reached{peer=\"3\",limit=\"resources\"}"),
            Some(1.0)
        );
        assert_eq!(text.matches("udplock_peer_load_reached{").count(), 1);
        assert_eq!(v("udplock_load_reports_sent_total"), Some(0.0));
    }

    #[test]
    fn a_shard_without_a_leader_is_not_ready_and_many_members_are_only_counted() {
        let stats = NodeStats::default();
        let shards = [
            shard(Some(Role::Leader), Some(2)),
            shard(Some(Role::Candidate), None),
        ];
        assert!(!shards_ready(&shards));
        assert!(shards_ready(&shards[..1]));
        // A node holding no replica serves (redirects).
        assert!(shards_ready(&[shard(None, None)]));
        let members: Vec<_> = (1..=MEMBERS_LISTED_MAX as u64 + 1)
            .map(|id| member(id, State::Alive))
            .collect();
        let text = rendered(&stats, &shards, &members);
        check_exposition(&text).unwrap();
        assert_eq!(sample_value(&text, "udplock_ready"), Some(0.0));
        assert_eq!(
            sample_value(&text, "udplock_members{state=\"alive\"}"),
            Some(members.len() as f64)
        );
        assert!(!text.contains("udplock_member_state{"));
    }

    #[test]
    fn the_checker_finds_what_breaks_the_format() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n";
        assert_eq!(check_exposition(good), Ok(()));
        for bad in [
            "# TYPE a_total counter\na_total 1", // no final line feed
            "# TYPE a_total counter\n# TYPE a_total counter\na_total 1\n", // TYPE twice
            "# HELP a A.\n# HELP a A.\n# TYPE a gauge\na 1\n", // HELP twice
            "a 1\n",                             // no TYPE
            "# TYPE a counter\na 1\n",           // counter without _total
            "# TYPE a gauge\na{x=\"1} 1\n",      // unterminated value
            "# TYPE a gauge\na{x=\"\\q\"} 1\n",  // bad escape
            "# TYPE a gauge\na one\n",           // not a number
            "# TYPE a gauge\na 1\na 2\n",        // repeated sample
            "# TYPE a gauge\na 1\n# HELP a A.\n", // HELP after samples
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 0\n", // +Inf != count
            "# TYPE 1a gauge\n1a 1\n",           // bad name
            "# TYPE a gauge\n\n",                // empty line
        ] {
            assert!(check_exposition(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn label_values_and_seconds_are_written_exactly() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(Seconds(0).to_string(), "0");
        assert_eq!(Seconds(10).to_string(), "0.00001");
        assert_eq!(Seconds(1_500_000).to_string(), "1.5");
        assert_eq!(Seconds(300_000_000).to_string(), "300");
    }

    #[test]
    fn a_loop_that_stops_turning_is_reported_after_the_stall_time() {
        let t0 = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut watch = LoopWatch::new(5, t0);
        assert!(watch.alive(5, t0 + ms(LOOP_STALL_MS - 1)));
        assert!(!watch.alive(5, t0 + ms(LOOP_STALL_MS)));
        // It turned: alive again, for another stall time.
        assert!(watch.alive(6, t0 + ms(LOOP_STALL_MS + 10)));
        assert!(watch.alive(6, t0 + ms(2 * LOOP_STALL_MS)));
        assert!(!watch.alive(6, t0 + ms(2 * LOOP_STALL_MS + 10)));
    }
}
