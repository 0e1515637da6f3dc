//! Raft consensus for one shard, as a pure deterministic state machine: leader election with
//! PreVote, log replication, the commit rule, CheckQuorum and a leader lease. No IO, no clock,
//! no global randomness: the caller passes `now` and a seed in, and drains what to send. The
//! contract shared with the simulator is `design/RAFT.md`; citations are to the Raft paper
//! ("Raft §5.x", Ongaro & Ousterhout 2014) and Ongaro's thesis ("thesis §x", *Consensus:
//! Bridging Theory and Practice*, 2014).
//!
//! # Data flow
//!
//! ```text
//!   datagram ──> handle_message(now, from, msg) ─┐
//!   timer    ──> handle_timeout(now)            ├─> state ──> take_persist(): store it
//!   client   ──> propose(now, data)             ─┘                  │ (fsync before send)
//!                                                                   v
//!                            poll_message() ──> (to, Message) datagrams, in order
//!                            poll_snapshot() ──> a snapshot installed from the leader (first)
//!                            poll_committed() ──> committed entries, index order, once each
//!                            poll_timeout() ──> when to call handle_timeout next
//!                            lease_valid(now) ──> may the leader answer from its own state?
//! ```
//!
//! One owner thread per node takes one input, stores what [`Raft::take_persist`] hands it
//! (the delta since the last call: see `persist.rs`), then drains the outputs. Messages are
//! only ever sent after the state that caused them is durable, so a vote or an acknowledged
//! entry survives a crash (Raft §5, Figure 2, "persistent state"). The same goes for acting
//! on `poll_committed`: a single voter commits an entry inside `propose` itself. A leader's `propose` only
//! appends to the log; the Appends that carry new entries are built when the shell drains
//! `poll_message`, so proposals made between two drains travel together (batching, up to
//! `entries_per_append_max` entries per Append).
//!
//! # Roles
//!
//! - **Follower**: answers the leader's Appends (consistency check and conflict truncation,
//!   Raft §5.3) and votes. Its election timer, drawn afresh from
//!   `[election_timeout_min, election_timeout_max)` with the seeded rng each time it is
//!   reset (Raft §5.2), restarts on every Append of the current leader and on every vote it
//!   grants.
//! - **PreCandidate** (thesis §9.6): the timer fired. It asks every voter "would you vote for
//!   me in term + 1?" without changing its own term, so a node cut off from the cluster
//!   cannot inflate terms and, on rejoining, depose a healthy leader. Only a majority of
//!   grants starts a real election.
//! - **Candidate**: term + 1, votes for itself, asks for votes (Raft §5.2).
//! - **Leader**: appends a no-op of its term (so it can commit, Raft §5.4.2, and learn the
//!   commit index, thesis §6.4), sends an Append to every follower each
//!   `heartbeat_interval`, replicates proposals, and commits an index once a majority stores
//!   it *and* it is of the current term (Raft §5.4.2, Figure 8). Older entries commit with it.
//!
//! Votes (real and pre-) are granted only to a log at least as up to date as the voter's
//! (Raft §5.4.1) and only by a node that has not heard from a live leader within
//! `election_timeout_min` (leader stickiness, thesis §4.2.3 and §9.6). Such a node ignores a
//! Vote of a higher term entirely: it neither grants it nor adopts the term; the one exception
//! is a transfer vote for the node its leader's latest round names ("Lease", below).
//!
//! # Lease (thesis §6.4.1) and why it is safe
//!
//! Each heartbeat starts a *round*: the leader numbers it, remembers its start time `s` on its
//! own clock, and every Append it builds from then until the next round carries that number.
//! A follower echoes the number of the Append it answers. When a majority (the leader
//! included) has answered round `r` or later, the leader holds a lease until
//! `s_r + election_timeout_min / (1 + drift_bound)`, on its own clock.
//!
//! Why no other leader can exist before then: every follower in that majority received an
//! Append of the leader's term built at or after `s_r`, and from that moment on it neither
//! grants a vote (pre- or real) nor starts an election for `election_timeout_min` on its own
//! clock (stickiness above; its election timer is never shorter than that). Clocks may run
//! apart by at most `drift_bound`, so `election_timeout_min` on a follower's clock is at least
//! `election_timeout_min / (1 + drift_bound)` on the leader's. A new leader needs votes from a
//! majority, and every majority contains a member of the acknowledging one, so no leader of a
//! later term can be elected while the lease runs. The leader itself never votes while it
//! leads (but for its own transfer's target, while it holds no lease: below), and after
//! stepping down it refuses votes for `election_timeout_min` more, which outlasts its own
//! lease. A node that restarts has forgotten when it last heard a leader, so
//! it assumes it heard one at start-up and refuses votes for `election_timeout_min` too.
//! Only answers to this leader's own rounds count. A follower answers an Append (or a
//! snapshot chunk) of its own term with that request's round, and one of an earlier term with
//! its later term and round 0, which deposes a leader of an earlier term and counts for
//! nothing else. Round numbers start at 1 again whenever a node restarts, but a node leads a
//! term at most once, in one life (it campaigns only in a term later than any it voted in,
//! and a node that lost its state rejoins having voted in the latest term a quorum knows), so
//! an answer of the leader's term with a round other than 0 answers one of this life's rounds:
//! no answer sent to an earlier life of the leader ever counts (see `answering_follower`).
//!
//! `lease_valid` further requires that the leader has committed an entry of its own term (its
//! no-op): before that it may not know every committed entry (thesis §6.4), so answering from
//! its own state could miss a committed command.
//!
//! Leadership transfer (thesis §3.10) is the one exception to stickiness, and it is kept
//! narrow so that the argument above still holds. A transfer vote overrides stickiness only
//! for the node that the voter's *latest word* names: the `transfer_to` of the highest round
//! it received from the leader of its term (`TransferSeen`; a snapshot chunk names nobody).
//! A leader names a target only in the rounds of a transfer in progress (it starts a round
//! when it starts or abandons one, so every round says one thing) and holds no lease while
//! one runs. When it abandons a transfer it starts a round naming nobody, and takes a lease
//! only from that round or a later one (`lease_from_round`). Every member of a majority that
//! acknowledged such a round received an Append of that round or a later one, naming nobody;
//! its latest word stays so (an older round naming the target that arrives later changes
//! nothing) until the leader starts another transfer, which ends the lease at once. So while
//! the lease runs such a member refuses a transfer vote as it refuses any vote, and a
//! TimeoutNow delivered arbitrarily late elects nobody (its receiver obeys it only if its own
//! latest word names it, and its voters would not follow). A leader whose transfer does not
//! complete therefore holds a lease again one round trip to a majority after it abandons the
//! transfer, at most `election_timeout_min` after it started it.
//!
//! # CheckQuorum (thesis §6.2)
//!
//! A leader that has not heard from a majority (itself included) within
//! `election_timeout_min` steps down, so a leader cut off from the cluster stops serving
//! clients on its own instead of waiting for a message of a later term that may never reach
//! it. `poll_timeout` includes that deadline, so the step-down happens on time.
//!
//! # Answers of an earlier life (spec §8.5)
//!
//! A follower that restarts without its state (`rejoin`) no longer holds what it acknowledged
//! before. Each instance draws a random life id and sends it in every answer; a leader counts
//! a follower's acknowledgements only from the life it knows, and on hearing from a later life
//! (an answer to a round after the previous sign of life, or a TermQuery) forgets what the
//! follower held and starts replicating to it from scratch. A late acknowledgement of an
//! earlier life answers a round the leader started before it heard from the later one, so it
//! never counts again (`current_life`). Without this a late copy of an old acknowledgement
//! made the leader believe the follower held entries it had lost, and never send them.
//!
//! # Log compaction and InstallSnapshot (Raft §7, thesis §5)
//!
//! Compaction is opt-in: a node whose shell never calls [`Raft::compact`] behaves exactly as
//! without it. Once the shell has applied the committed entries through some index and taken
//! a snapshot of its state machine there, it calls `compact(index, data)`: Raft drops those
//! entries, remembers the snapshot's last index and term (for the consistency check of the
//! next Append and for the election restriction) and keeps `data` to send.
//!
//! A leader that no longer holds the entries a follower needs (`next <= snapshot index`)
//! sends its snapshot instead, in InstallSnapshot chunks of at most `snapshot_chunk_max`
//! bytes, at most `SNAPSHOT_CHUNKS_IN_FLIGHT_MAX` unacknowledged at a time. The follower keeps
//! one partial transfer in memory, appends a chunk only at the offset where its buffer ends,
//! and answers with how many contiguous bytes it holds; the leader resumes from there on each
//! answer, or from the latest answer on a heartbeat round that brought no progress. Chunks
//! carry the heartbeat round and their answers count for the lease and CheckQuorum exactly
//! like AppendReplies (the follower treats a chunk as leader contact, like an Append). When
//! the whole snapshot has arrived the follower runs the state machine's check on it
//! ([`Raft::set_snapshot_check`]: the shard decodes it as it would restore it), and drops one
//! that fails, changing nothing else (spec §8.5); otherwise it installs it: it keeps the
//! entries after the snapshot if its log holds the snapshot's last entry with the same term,
//! else discards its log (Raft §7); its commit index moves to the snapshot's last index, and
//! the shell gets the snapshot from `poll_snapshot` — before any later committed entry, which
//! `poll_committed` holds back until then. The leader then continues with Appends after the snapshot. A
//! follower that has already committed through the snapshot's last index (a leader that
//! compacted less recently than the follower sends an older snapshot than the follower's
//! own) never installs it: it answers at once that it holds all of it, which counts as
//! contact like any chunk, and the leader goes on with Appends. If the
//! leader compacts again meanwhile, it starts over with the new snapshot (the follower drops
//! a partial transfer of another snapshot).
//!
//! Persistence: the shell persists the snapshot (meta and data), the hard state and the log
//! after the snapshot before it sends what an input produced, as for the log; a restarted
//! node is built with [`Raft::restore`] from them, and its commit index starts at the
//! snapshot's last index (the shell loads its state machine from the snapshot itself).
//!
//! # Rejoining without state (spec §8.5)
//!
//! A node that lost its persisted state (durability `memory`, a replaced disk, an emptied or
//! mistyped data directory, a rejoin cut short) is built with [`Raft::rejoin`], or with
//! [`Raft::start_new`] when its operator says this start may create the cluster. Either way
//! it first asks every other voter (TermQuery) and acts on nothing else; nodes that hold
//! state answer TermReply (term, last index), nodes that hold none NoStateReply (new or not).
//!
//! - *Rejoin* (rules 3 and 4): once `q` of the OTHERS answered TermReply, every quorum the
//!   node took part in before (a vote, an acknowledgement, in some term `T`) had `q - 1`
//!   members besides it, and `(q - 1) + q > n - 1`, so some replier took part in it too and
//!   its term is at least `T`. The node takes the largest term as its own, with a vote in it,
//!   so it never votes twice in a term nor acknowledges an older leader; and it votes only once
//!   its commit index holds an entry of the current leader's term (and, under the leader of
//!   the very term it rejoined at, reaches the largest last index the repliers reported: every
//!   committed entry it acknowledged is held by a replier, so lies at or below it). If all
//!   `q` said term 0, it never took part in anything: it starts fresh.
//! - *New* (rule 6): only when EVERY other voter answered, after this node lost its state,
//!   that it holds nothing beyond term 0. A node that took part in anything has a term of at
//!   least 1 from then on while it keeps its state, so each of them had lost its state when it
//!   answered: nothing any quorum decided survives anywhere (a new cluster, or a total loss),
//!   so this node's fresh start contradicts nothing. With only `q` such answers, a node that
//!   keeps an acknowledged entry but is down could be outvoted by nodes that lost theirs (the
//!   test `a_new_node_waits_while_any_other_node_may_hold_state` shows two leaders of one term
//!   then); so a node that may hold state, even an unreachable one, keeps a new node asking.
//!
//! # Bounds
//!
//! The log holds what has not been compacted: bounded once the shell compacts. Per follower,
//! at most `APPENDS_IN_FLIGHT_MAX` Appends' worth of unacknowledged entries, or
//! `SNAPSHOT_CHUNKS_IN_FLIGHT_MAX` snapshot chunks, are in flight; a follower buffers at most
//! one partial snapshot of at most `SNAPSHOT_LEN_MAX` bytes, and the Raft groups of one node
//! at most [`SNAPSHOT_RECEIVE_BYTES_MAX`] together ([`NodeShared`]: a transfer reserves its
//! length when it starts, is refused if it does not fit, and is dropped once it stops
//! growing); log lines about peer input are bounded per node and kind
//! ([`PEER_LOG_LINES_MAX`]); the leader remembers the start
//! time of at most `ROUNDS_TRACKED_MAX` rounds; the outbox holds what one input produced (a
//! few messages per voter, or a window of chunks). A message from a voter makes this node
//! send that voter at most one message (spec §8.5, "One record back per record"): a leader
//! fills a follower's window only on its heartbeat rounds and proposals, and each answer
//! brings one more message, so a forged or repeated answer amplifies nothing.

/// Writes a log line about peer input if this node's budget for its kind allows it
/// ([`PEER_LOG_LINES_MAX`] per [`PEER_LOG_PERIOD`]), telling how many were skipped before it.
macro_rules! peer_log {
    ($raft:expr, $now:expr, $kind:ident, $level:ident, $($arg:tt)+) => {
        if let Some(skipped) = $raft.shared.peer_log.admit(PeerLogKind::$kind, $now) {
            log::$level!("{}{skipped}", format_args!($($arg)+));
        }
    };
}

mod entries;
mod persist;
pub(crate) mod shared;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::entries::RaftLog;
pub use self::persist::Persist;
use self::shared::Reservation;
pub(crate) use self::shared::Skipped;
pub use self::shared::{
    NodeShared, PeerLogKind, PEER_LOG_LINES_MAX, PEER_LOG_PERIOD, SNAPSHOT_RECEIVE_BYTES_MAX,
    SNAPSHOT_RECEIVE_STALL_TIMEOUTS,
};
use crate::core::time::{Duration, Instant};

/// A voter's identity, unique within a shard.
pub type NodeId = u64;

/// Unacknowledged Appends (each up to `entries_per_append_max` entries) the leader pipelines to
/// one follower before it waits for an answer. Bounds the memory a slow follower costs in
/// messages and the entries resent after a loss, while keeping a follower that acknowledges
/// promptly from ever waiting on the window.
pub const APPENDS_IN_FLIGHT_MAX: u64 = 4;

/// Unacknowledged snapshot chunks the leader sends one follower before it waits for an
/// answer: about 10 KB with the default chunk size, so a transfer costs a few round trips per
/// window while a lossy path wastes at most a window of resends.
pub const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: u64 = 8;

/// The largest snapshot (bytes) a follower accepts: it buffers a transfer in memory until it
/// is complete, so this bounds what a forged or faulty InstallSnapshot can make it allocate.
/// A shard's state machine is a lock table (a few hundred bytes per held lock), far below
/// this; a leader whose snapshot is larger cannot bring a follower up to date (it logs why).
pub const SNAPSHOT_LEN_MAX: u64 = 256 * 1024 * 1024;

/// Heartbeat rounds whose start time the leader remembers while waiting for a majority to
/// acknowledge them. A round older than `election_timeout_min` can no longer give a lease,
/// so with the default timers (150 ms, a round every 30 ms) about six ever matter.
/// Forgetting the oldest only means the lease is not extended by it, which is safe.
pub const ROUNDS_TRACKED_MAX: usize = 64;

/// The next heartbeat after `now`: the next multiple of `interval` on this node's clock, so
/// the heartbeats of every shard a node leads fall on the same instants and travel together
/// (one datagram per peer per interval, however many shards). At most `interval` away.
fn next_heartbeat(now: Instant, interval: Duration) -> Instant {
    let step = interval.as_micros().max(1);
    Instant::from_micros(
        (now.as_micros() / step)
            .saturating_add(1)
            .saturating_mul(step),
    )
}

/// The largest term a node accepts in a message. Terms grow by one per election, so a real
/// cluster never comes near it; a message beyond it comes from a faulty or forged peer, and
/// adopting it would leave no room for `term + 1`.
pub const TERM_MAX: u64 = u64::MAX / 2;

/// How far above its own term the term of a message may be: a message beyond it comes from
/// a faulty or forged peer and is dropped (spec §8.5, "Terms far ahead"). Without it one
/// message of term `TERM_MAX` (a bit flip, a bug, a forgery on a cluster without a key) made
/// its receiver adopt a term with no room for an election, which then spread to every node
/// and left the shard without a leader for ever (issue 8). Correct nodes never come near it:
/// terms grow by one per election, elections need an election timeout each (at least
/// 150 ms by default, PreVote keeps a cut-off node from counting up), so a node this far
/// behind would have missed 2^32 elections, years of nothing but elections. Dropping a
/// message is always safe in Raft (it is a loss); a faulty peer now needs 2^31 messages, each
/// adopted in turn, to bring a shard to `TERM_MAX`.
pub const TERM_AHEAD_MAX: u64 = 1 << 32;

/// Whether a complete snapshot received from a leader may replace this replica's state: the
/// state machine's own decoder, run on the whole snapshot before Raft installs it (so before
/// the shell persists it or replaces its state). `Err` says why not (spec §8.5, "Receiving a
/// snapshot"). Raft alone treats snapshot bytes as opaque and accepts any.
pub type SnapshotCheck = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// A [`SnapshotCheck`] in a `Raft` (which is `Debug`).
#[derive(Clone)]
struct Check(SnapshotCheck);

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotCheck")
    }
}

/// Mixed into the rng seed to draw the life id (`Raft::life`) from a stream of its own.
const LIFE_SEED_SALT: u64 = 0x6c69_6665_2069_6473;

/// Parts per million in one: the unit of `drift_bound_ppm`.
const PPM: u64 = 1_000_000;

/// Static configuration of one voter of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every voter including `id` (static membership in this step). 1, 3 or 5 typical: a
    /// majority must stay up for the shard to make progress.
    pub voters: Vec<NodeId>,
    /// Shortest election timeout, and how long a node that heard from a leader refuses to
    /// vote (stickiness). Bounds the lease, so it sets how long a shard is unavailable after
    /// its leader dies. Default 150 ms.
    pub election_timeout_min: Duration,
    /// Election timeouts are drawn from `[min, max)`: the spread makes split votes rare
    /// (Raft §5.2). Default 300 ms.
    pub election_timeout_max: Duration,
    /// Time between heartbeat rounds. At most half of `election_timeout_min`, so a follower
    /// hears at least two before it may suspect the leader. Default 30 ms.
    pub heartbeat_interval: Duration,
    /// Clock rate difference allowed between any two nodes, parts per million (default
    /// 10_000 = 1 %). The lease is shortened by it.
    pub drift_bound_ppm: u32,
    /// Batching: most entries in one Append (default 256).
    pub entries_per_append_max: usize,
    /// Most bytes of entries in one Append, each entry counted as its data plus
    /// [`ENTRY_OVERHEAD`] (default `usize::MAX`). The node sets it so one Append fits one
    /// datagram; an entry larger than this still travels, alone.
    pub append_bytes_max: usize,
    /// Most snapshot bytes in one InstallSnapshot chunk (default 1_300): with the chunk's
    /// fixed fields and the datagram header, one chunk fits one 1400-byte datagram, so a
    /// chunk is never fragmented and a loss costs one chunk.
    pub snapshot_chunk_max: usize,
}

/// What one entry costs in an Append beyond its data, for `append_bytes_max`: its term (8
/// bytes) and data length (2) on the wire (spec: APPEND record).
pub const ENTRY_OVERHEAD: usize = 10;

impl Default for Config {
    fn default() -> Config {
        Config {
            id: 1,
            voters: vec![1],
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(30),
            drift_bound_ppm: 10_000,
            entries_per_append_max: 256,
            append_bytes_max: usize::MAX,
            snapshot_chunk_max: 1_300,
        }
    }
}

impl Config {
    /// Refuses memberships and timer combinations that would break safety or liveness.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.voters.is_empty() {
            return Err(ConfigError {
                field: "voters",
                rule: "must not be empty",
            });
        }
        for (position, voter) in self.voters.iter().enumerate() {
            if self.voters[..position].contains(voter) {
                return Err(ConfigError {
                    field: "voters",
                    rule: "must not name a voter twice (a majority would be miscounted)",
                });
            }
        }
        if !self.voters.contains(&self.id) {
            return Err(ConfigError {
                field: "id",
                rule: "must be one of voters",
            });
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError {
                field: "election_timeout_min",
                rule: "must be less than election_timeout_max (randomised timeouts avoid \
                       split votes)",
            });
        }
        if self.heartbeat_interval == Duration::ZERO {
            return Err(ConfigError {
                field: "heartbeat_interval",
                rule: "must be greater than zero (a leader would send heartbeats without end)",
            });
        }
        if self.heartbeat_interval.as_micros().saturating_mul(2)
            > self.election_timeout_min.as_micros()
        {
            return Err(ConfigError {
                field: "heartbeat_interval",
                rule: "must be at most half of election_timeout_min, so a follower hears two \
                       heartbeats before it may start an election",
            });
        }
        if u64::from(self.drift_bound_ppm) >= PPM {
            return Err(ConfigError {
                field: "drift_bound_ppm",
                rule: "must be less than 1000000 (100 %)",
            });
        }
        if self.entries_per_append_max == 0 {
            return Err(ConfigError {
                field: "entries_per_append_max",
                rule: "must be greater than zero (no entry could ever be replicated)",
            });
        }
        if self.snapshot_chunk_max == 0 {
            return Err(ConfigError {
                field: "snapshot_chunk_max",
                rule: "must be greater than zero (no snapshot could ever be sent)",
            });
        }
        Ok(())
    }

    /// How long a lease lasts on the leader's clock after the start of a round a majority
    /// acknowledged: `election_timeout_min / (1 + drift_bound)`, rounded down (see the module
    /// docs for why).
    pub fn lease_duration(&self) -> Duration {
        let min_us = u128::from(self.election_timeout_min.as_micros());
        let lease_us = min_us * u128::from(PPM) / u128::from(PPM + u64::from(self.drift_bound_ppm));
        Duration::from_micros(u64::try_from(lease_us).expect("at most election_timeout_min"))
    }

    /// Votes (or acknowledgements, or matching logs) that make a majority.
    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

pub use crate::core::ConfigError;

/// What a node must persist before it sends anything (Raft Figure 2, "persistent state").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term this node has seen; never decreases.
    pub term: u64,
    /// Whom this node voted for in `term`, if anyone: at most one vote per term.
    pub voted_for: Option<NodeId>,
}

/// One log entry. Empty `data` is a leader's no-op (clients never propose empty data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: u64,
    /// Its position in the log, 1 first.
    pub index: u64,
    /// The command, opaque to Raft.
    pub data: Vec<u8>,
}

/// What a snapshot covers: the state machine after applying the entries through `index`,
/// the last of which has term `term`. Index 0 (and term 0) means no snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
}

/// What voters send each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Would you vote for me? `term` is the term the sender would use (its own + 1); sending
    /// it changes no one's term (thesis §9.6).
    PreVote {
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
    },
    /// `term` echoes the asked term when granted, else the replier's own term.
    PreVoteReply {
        term: u64,
        granted: bool,
    },
    /// RequestVote (Raft §5.2). `transfer`: sent after a TimeoutNow from the leader of the
    /// previous term, so voters grant it despite leader stickiness (thesis §3.10).
    Vote {
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
        transfer: bool,
    },
    VoteReply {
        term: u64,
        granted: bool,
    },
    /// AppendEntries (Raft §5.3), also the heartbeat. `round` numbers the leader's heartbeat
    /// round it was built in, for the lease. `transfer_to`: the node the leader is handing
    /// leadership to in that round, if any (see `TransferSeen`).
    Append {
        term: u64,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
        round: u64,
        transfer_to: Option<NodeId>,
    },
    /// On success `match_index` is the last index the Append covered; on failure, the index
    /// the leader should retry after (a hint, Raft §5.3). `round` echoes the Append's (0 when
    /// `term` is later than the Append's). `life`: the replier's life id (see `Raft::life`).
    AppendReply {
        term: u64,
        success: bool,
        match_index: u64,
        round: u64,
        life: u64,
    },
    /// Leadership transfer (thesis §3.10): the leader of `term` tells a caught-up follower
    /// to start an election at once.
    TimeoutNow {
        term: u64,
    },
    /// A node that restarted without its state asks for the receiver's current term
    /// (`term`: the sender's, 0 when it lost everything). See `Raft::rejoin`.
    TermQuery {
        term: u64,
        nonce: u64,
    },
    /// Answer to TermQuery: the replier's current term and the last index its log holds.
    /// Changes no state at the replier.
    TermReply {
        term: u64,
        last_index: u64,
        nonce: u64,
    },
    /// Answer to TermQuery from a node that holds no state itself (it is still asking too):
    /// `term` is its current term (0); `new` says it never held state for the shard and may
    /// help create the cluster (see `Raft::start_new`). Changes no state at the replier.
    NoStateReply {
        term: u64,
        nonce: u64,
        new: bool,
    },
    /// One chunk of the leader's snapshot (Raft §7), for a follower that needs entries the
    /// leader compacted away. `last_index`/`last_term`: what the snapshot covers (its meta);
    /// `offset`: where `data` (at most `snapshot_chunk_max` bytes) starts in the snapshot;
    /// `total_len`: the snapshot's whole length in bytes; `round`: the heartbeat round the
    /// chunk was sent in, as in Append.
    InstallSnapshot {
        term: u64,
        last_index: u64,
        last_term: u64,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
        round: u64,
    },
    /// `last_index` echoes the chunk's (which snapshot); `received`: how many bytes of it,
    /// from the start, the follower holds (`total_len` once it has it all, or if it already
    /// holds everything the snapshot covers); `round` echoes the chunk's; `life` as in
    /// AppendReply. On a chunk of an older term, `term` is the follower's, `round` is 0 and
    /// nothing else counts.
    InstallSnapshotReply {
        term: u64,
        last_index: u64,
        received: u64,
        round: u64,
        life: u64,
    },
}

impl Message {
    /// The term every message carries.
    pub fn term(&self) -> u64 {
        match *self {
            Message::PreVote { term, .. }
            | Message::PreVoteReply { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteReply { term, .. }
            | Message::Append { term, .. }
            | Message::AppendReply { term, .. }
            | Message::TimeoutNow { term }
            | Message::TermQuery { term, .. }
            | Message::TermReply { term, .. }
            | Message::NoStateReply { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotReply { term, .. } => term,
        }
    }
}

/// The rejoin rule's progress (spec §8.5, "Rejoining without state").
#[derive(Clone, Debug, PartialEq, Eq)]
enum Recovery {
    /// A node with its state, or one that finished rejoining.
    None,
    /// Asking the others for their terms: the latest answer of each other voter so far.
    Querying {
        replies: Vec<(NodeId, TermAnswer)>,
        next_query: Instant,
        /// Random per rejoin: only answers echoing it count (not those to a query of an
        /// earlier life of this node, delivered late).
        nonce: u64,
        /// This node is *new* (spec §8.5 rule 6, see `Raft::start_new`): it never held
        /// state for the shard and may help create the cluster.
        new: bool,
    },
    /// Knows a safe term (`term`); acknowledges entries, but neither votes nor campaigns
    /// until caught up: its commit index at an entry of the current leader's own term, and,
    /// while that leader is of `term` itself, at least `target`, the largest last index the
    /// repliers reported. (Every committed entry it acknowledged before it lost its state is
    /// held by some replier: the repliers meet every quorum it was part of.)
    CatchingUp { term: u64, target: u64 },
}

/// What another voter answered a TermQuery (spec §8.5, rules 2, 3 and 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TermAnswer {
    /// It holds state for the shard (TermReply): its current term and last index.
    State { term: u64, last_index: u64 },
    /// It holds none (NoStateReply); `new`: it never did, and may help create the cluster.
    NoState { new: bool },
}

/// A leadership transfer in progress (thesis §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Transfer {
    to: NodeId,
    /// Abandoned if the leader still leads then.
    deadline: Instant,
    /// The round in which TimeoutNow was last sent (0: not yet; it is sent once `to` matched
    /// the whole log, and again in each later round, in case it was lost or overtook the
    /// Append that names `to`).
    timeout_now_round: u64,
}

/// What the highest round a follower received from the leader of `term` said about a
/// leadership transfer: `to`, the node that leader is handing over to in that round, if any.
/// Each round says one thing (a leader starts a new round when it starts or abandons a
/// transfer), and rounds grow within a term, so the highest round is the leader's latest
/// word, however the network reordered its Appends. A voter lets a transfer vote override
/// stickiness only for the node it names; the target obeys TimeoutNow only if it names it
/// (spec §8.5, "Leadership transfer").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TransferSeen {
    term: u64,
    round: u64,
    to: Option<NodeId>,
}

/// A node's role in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// `propose` on a node that does not lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// Who this node believes leads its current term, if it knows.
    pub leader_hint: Option<NodeId>,
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.leader_hint {
            Some(leader) => write!(f, "not the leader (node {leader} leads)"),
            None => write!(f, "not the leader (leader unknown)"),
        }
    }
}

impl std::error::Error for NotLeader {}

/// What a leader knows about one follower (Raft Figure 2, "volatile state on leaders").
#[derive(Clone, Debug)]
struct Progress {
    id: NodeId,
    /// Next index to send.
    next: u64,
    /// Highest index known to be stored on the follower and to match the leader's log.
    matched: u64,
    /// Not yet known where the logs agree: send one Append at a time (`probe_sent`) until an
    /// answer says; otherwise pipeline up to `APPENDS_IN_FLIGHT_MAX` Appends.
    probing: bool,
    probe_sent: bool,
    /// Latest round the follower acknowledged (lease).
    acked_round: u64,
    /// The follower's life whose answers count for `matched` and `next`, once known (see
    /// `Raft::current_life`).
    life: Option<u64>,
    /// This leader's round when it last learnt that the follower had started afresh: every
    /// answer of an earlier life answers a round at or below it.
    life_floor: u64,
    /// When the leader last heard from it in this term (CheckQuorum).
    heard_at: Instant,
    /// A snapshot transfer, while `next <= ` the leader's snapshot index.
    snapshot: SnapshotSend,
}

impl Progress {
    /// Forgets what the follower was known to hold (it may have lost it): probes again from
    /// after the leader's last entry, `last`, and rewinds from the follower's answers.
    fn start_over(&mut self, last: u64) {
        self.matched = 0;
        self.next = last + 1;
        self.probing = true;
        self.probe_sent = false;
        self.snapshot = SnapshotSend::default();
    }
}

/// The leader's side of one snapshot transfer to one follower. Offsets are bytes.
#[derive(Clone, Copy, Debug, Default)]
struct SnapshotSend {
    /// The snapshot these offsets refer to (0: none yet); another one restarts the transfer.
    index: u64,
    /// Most bytes the follower has said it holds.
    acked: u64,
    /// What its latest answer said (lower than `acked` after it restarted and lost its
    /// partial transfer, or for a reordered answer).
    reported: u64,
    /// `acked` at the previous heartbeat round: no progress since then resumes the transfer
    /// from `reported`.
    acked_at_round: u64,
    /// Offset of the next chunk to send.
    sent: u64,
    /// `acked` when the transfer last went back to it: an answer without progress while
    /// later chunks are in flight means the follower dropped one out of order (a chunk was
    /// lost or overtaken), so the leader resends from there, once per position.
    resent_from: Option<u64>,
}

/// Why a leader sends a follower what it needs, which bounds how much it sends at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    /// A heartbeat round: at least one message (an empty Append if nothing else), and as
    /// much as the flow-control window allows.
    Round,
    /// Proposals were appended: entries as the window allows, nothing if it has none to send.
    Proposals,
    /// The follower answered: at most one message back to it, so that no message, forged or
    /// not, makes the leader send its sender more than one (issue 8: no amplification). Each
    /// answer brings one more, so a window the round filled stays full; what is left waits for
    /// the next answer or round.
    Answer,
}

/// A follower's partial snapshot transfer.
#[derive(Debug)]
struct SnapshotReceive {
    meta: SnapshotMeta,
    total_len: u64,
    /// The first `buffer.len()` bytes of the snapshot; its capacity never exceeds
    /// `total_len`, which `reservation` holds of the node's budget.
    buffer: Vec<u8>,
    /// When the buffer last grew (or the transfer started): see `Raft::snapshot_stall`.
    progress_at: Instant,
    reservation: Reservation,
}

/// One voter's Raft state machine. See the module docs.
#[derive(Debug)]
pub struct Raft {
    config: Config,
    rng: ChaCha8Rng,
    /// `config.lease_duration()`, computed once.
    lease_duration: Duration,
    /// `config.quorum()`, computed once.
    quorum: usize,

    /// Changed only through `set_hard`.
    hard: HardState,
    /// `hard` changed since the last `take_persist`.
    hard_changed: bool,
    log: RaftLog,
    /// Highest index known committed. Not persisted: a restarted node learns it again.
    commit_index: u64,
    /// Highest index `poll_committed` has returned (or a snapshot covered).
    returned_index: u64,
    /// The data of the snapshot the log was compacted into (`log.snapshot()`), to send.
    snapshot_data: Option<Arc<Vec<u8>>>,
    /// A snapshot installed from the leader that `poll_snapshot` has not returned yet.
    snapshot_installed: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// Follower: the snapshot transfer in progress, if any.
    snapshot_receive: Option<SnapshotReceive>,
    /// Decides whether a complete snapshot may be installed (see [`Raft::set_snapshot_check`]).
    snapshot_check: Option<Check>,
    /// The budgets this node's Raft groups share (snapshot transfers, log lines).
    shared: NodeShared,

    role: Role,
    /// Who leads `hard.term`, if known.
    leader: Option<NodeId>,
    /// When this node last heard from a live leader (itself while leading counts; see
    /// `leader_contact_recent`). Start-up counts as contact: see the module docs, "Lease".
    leader_contact: Instant,
    /// When a follower or (pre-)candidate starts a new (pre-)election.
    election_deadline: Instant,
    /// Voters that granted this (pre-)candidacy, self included.
    grants: Vec<NodeId>,

    // Leader only (reset on becoming leader).
    /// One per other voter, in `config.voters` order.
    progress: Vec<Progress>,
    /// The current heartbeat round; increases over the node's lifetime.
    round: u64,
    /// Start times of rounds not yet acknowledged by a majority, oldest first.
    round_starts: VecDeque<(u64, Instant)>,
    /// Start of the latest round a majority acknowledged in this term.
    lease_start: Option<Instant>,
    heartbeat_deadline: Instant,
    /// CheckQuorum: when the leader steps down unless it hears from a majority first.
    quorum_deadline: Instant,
    /// Index of this term's no-op: once committed, the leader knows the commit index.
    noop_index: u64,
    /// Proposals were appended since the last drain: build their Appends in `poll_message`.
    flush_pending: bool,
    /// A leadership transfer in progress: to whom, until when, and whether TimeoutNow left.
    transfer: Option<Transfer>,
    /// Rounds before this one give no lease: `u64::MAX` while a transfer runs (the voters
    /// that heard its rounds would elect its target despite stickiness), the first round
    /// started after it was abandoned once it was (see the module docs, "Lease").
    lease_from_round: u64,
    /// Set by `decline_transfers`.
    declines_transfers: bool,
    /// Follower: what the latest round it received from the leader of its term said about a
    /// leadership transfer (see `TransferSeen`).
    transfer_seen: TransferSeen,
    /// Rejoining without state (see `rejoin`); `None` for a node with its state.
    recovery: Recovery,
    /// This instance's life id: drawn at random when it starts and sent in every answer to
    /// a leader, so that the leader can tell this life's answers from those of an earlier
    /// life of the node, which may have lost its state since (see `current_life`).
    life: u64,

    outbox: VecDeque<(NodeId, Message)>,
    /// Reused for majority computations, so they do not allocate.
    scratch: Vec<u64>,
    /// Messages dropped because only a faulty or forged peer sends them (see
    /// [`Raft::faulty_drops`]).
    faulty_drops: u64,
}

impl Raft {
    /// `state` and `log` are what the node persisted (empty for a fresh node). Log indexes
    /// start at 1. Panics on an invalid `config` (validate it at start-up) or a persisted
    /// pair that could not have been written by this code. The same as [`Raft::restore`]
    /// without a snapshot.
    pub fn new(
        config: Config,
        rng_seed: u64,
        state: HardState,
        log: Vec<Entry>,
        now: Instant,
    ) -> Raft {
        Raft::restore(config, rng_seed, state, None, log, now)
    }

    /// A node restarting from what it persisted: its hard state, its latest snapshot (meta
    /// and data, kept to send to followers) if it has one, and the log entries after the
    /// snapshot (indexes `meta.index + 1 ..`). The commit index starts at the snapshot's last
    /// index and `poll_committed` continues after it (the shell loads its state machine from
    /// the snapshot itself; `poll_snapshot` does not return it). Panics like [`Raft::new`].
    pub fn restore(
        config: Config,
        rng_seed: u64,
        state: HardState,
        snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
        log: Vec<Entry>,
        now: Instant,
    ) -> Raft {
        let (snapshot_meta, snapshot_data) = match snapshot {
            Some((meta, data)) if meta.index > 0 => (meta, Some(data)),
            Some((meta, _)) => {
                assert!(meta.term == 0, "snapshot of index 0 has term {}", meta.term);
                (SnapshotMeta::default(), None)
            }
            None => (SnapshotMeta::default(), None),
        };
        if let Err(error) = config.validate() {
            panic!("{error}");
        }
        if let Some(voted_for) = state.voted_for {
            assert!(
                config.voters.contains(&voted_for),
                "persisted vote for {voted_for}, not a voter"
            );
        }
        let log = RaftLog::from_persisted(snapshot_meta, log, state.term);
        let lease_duration = config.lease_duration();
        let quorum = config.quorum();
        // The life id comes from a stream of its own, so drawing it changes no timer.
        let life = ChaCha8Rng::seed_from_u64(rng_seed ^ LIFE_SEED_SALT).gen::<u64>();
        let mut raft = Raft {
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            lease_duration,
            quorum,
            hard: state,
            hard_changed: false,
            log,
            commit_index: snapshot_meta.index,
            returned_index: snapshot_meta.index,
            snapshot_data,
            snapshot_installed: None,
            snapshot_receive: None,
            snapshot_check: None,
            shared: NodeShared::new(),
            role: Role::Follower,
            leader: None,
            leader_contact: now,
            election_deadline: now,
            grants: Vec::with_capacity(config.voters.len()),
            progress: Vec::with_capacity(config.voters.len()),
            round: 0,
            round_starts: VecDeque::with_capacity(ROUNDS_TRACKED_MAX),
            lease_start: None,
            heartbeat_deadline: Instant::MAX,
            quorum_deadline: Instant::MAX,
            noop_index: 0,
            flush_pending: false,
            transfer: None,
            lease_from_round: 0,
            declines_transfers: false,
            transfer_seen: TransferSeen::default(),
            recovery: Recovery::None,
            life,
            outbox: VecDeque::new(),
            scratch: Vec::with_capacity(config.voters.len()),
            faulty_drops: 0,
            config,
        };
        raft.reset_election_timer(now);
        raft
    }

    /// Takes one message from voter `from`. Messages from unknown nodes or from itself are
    /// dropped.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        if from == self.config.id || !self.config.voters.contains(&from) {
            log::debug!(
                "raft {}: dropping a message from non-voter {from}",
                self.config.id
            );
            return;
        }
        self.drop_stalled_snapshot(now);
        if msg.term() > TERM_MAX || msg.term() > self.hard.term.saturating_add(TERM_AHEAD_MAX) {
            peer_log!(
                self,
                now,
                Term,
                error,
                "raft {}: dropping a message of term {} from {from}, beyond TERM_MAX or more \
                 than TERM_AHEAD_MAX above this node's term {} (faulty peer?)",
                self.config.id,
                msg.term(),
                self.hard.term
            );
            self.faulty_drops += 1;
            return;
        }
        if matches!(self.recovery, Recovery::Querying { .. })
            && !matches!(
                msg,
                Message::TermQuery { .. }
                    | Message::TermReply { .. }
                    | Message::NoStateReply { .. }
            )
        {
            // Rejoining without state: nothing is acted on until the terms of a quorum of
            // the others are known (see `rejoin`).
            return;
        }
        match msg {
            Message::PreVote {
                term,
                last_log_index,
                last_log_term,
            } => self.handle_pre_vote(now, from, term, last_log_index, last_log_term),
            Message::PreVoteReply { term, granted } => {
                self.handle_pre_vote_reply(now, from, term, granted)
            }
            Message::Vote {
                term,
                last_log_index,
                last_log_term,
                transfer,
            } => self.handle_vote(now, from, term, last_log_index, last_log_term, transfer),
            Message::VoteReply { term, granted } => {
                self.handle_vote_reply(now, from, term, granted)
            }
            Message::Append {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
                transfer_to,
            } => self.handle_append(
                now,
                from,
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                (round, transfer_to),
            ),
            Message::AppendReply {
                term,
                success,
                match_index,
                round,
                life,
            } => self.handle_append_reply(now, from, term, success, match_index, round, life),
            Message::TimeoutNow { term } => self.handle_timeout_now(now, from, term),
            Message::TermQuery { nonce, .. } => {
                // Spec §8.5, rule 2. A node still asking has no term worth telling, so it says
                // only that it holds no state, and whether it is new (rule 6); a node that
                // holds state tells its term and last index.
                let answer = match self.recovery {
                    Recovery::Querying { new, .. } => Message::NoStateReply {
                        term: self.hard.term,
                        nonce,
                        new,
                    },
                    _ => Message::TermReply {
                        term: self.hard.term,
                        last_index: self.log.last_index(),
                        nonce,
                    },
                };
                self.send(from, answer);
                // Only a node that lost its state asks: whatever it acknowledged is gone, so
                // the leader starts over with it (a late copy of the question only makes it
                // resend what the node already has), and no answer of its earlier life,
                // which answers a round up to this one, counts any more (see
                // `current_life`; issue 7 B5).
                if self.role == Role::Leader {
                    let (last, round) = (self.log.last_index(), self.round);
                    if let Some(p) = self.progress.iter_mut().find(|p| p.id == from) {
                        p.start_over(last);
                        p.life = None;
                        p.life_floor = round;
                    }
                }
            }
            Message::TermReply {
                term,
                last_index,
                nonce,
            } => self.handle_term_answer(now, from, nonce, TermAnswer::State { term, last_index }),
            Message::NoStateReply { term, nonce, new } => {
                // A node without state is at term 0; another term is a faulty peer's.
                if term == 0 {
                    self.handle_term_answer(now, from, nonce, TermAnswer::NoState { new });
                }
            }
            Message::InstallSnapshot {
                term,
                last_index,
                last_term,
                offset,
                total_len,
                data,
                round,
            } => self.handle_install_snapshot(
                now,
                from,
                term,
                SnapshotMeta {
                    index: last_index,
                    term: last_term,
                },
                offset,
                total_len,
                data,
                round,
            ),
            Message::InstallSnapshotReply {
                term,
                last_index,
                received,
                round,
                life,
            } => self
                .handle_install_snapshot_reply(now, from, term, last_index, received, round, life),
        }
        self.check_caught_up();
        self.check_invariants();
    }

    /// Fires whatever timer is due: a leader's CheckQuorum or heartbeat, anyone else's
    /// election timer. Call when `now >= poll_timeout()`; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drop_stalled_snapshot(now);
        if self.role == Role::Leader {
            self.refresh_quorum_deadline(now);
            if now >= self.quorum_deadline {
                // CheckQuorum (thesis §6.2): no majority heard within election_timeout_min.
                log::info!(
                    "raft {}: stepping down in term {}: no majority heard from",
                    self.config.id,
                    self.hard.term
                );
                self.become_follower(now, self.hard.term, None);
                self.check_invariants();
                return;
            }
            if self.transfer.is_some_and(|t| now >= t.deadline) {
                // Thesis §3.10: the target did not take over within an election timeout;
                // lead on. A round of its own names nobody; once a majority acknowledged it
                // (or a later one), no transfer election can win while the lease it gives
                // runs (module docs, "Lease").
                log::info!(
                    "raft {}: leadership transfer abandoned in term {}",
                    self.config.id,
                    self.hard.term
                );
                self.transfer = None;
                self.lease_from_round = self.round + 1;
                self.start_round(now);
            }
            if now >= self.heartbeat_deadline {
                self.start_round(now);
            }
        } else if let Recovery::Querying {
            next_query, nonce, ..
        } = self.recovery
        {
            if now >= next_query {
                if let Recovery::Querying { next_query, .. } = &mut self.recovery {
                    *next_query = now + self.config.heartbeat_interval;
                }
                self.broadcast(Message::TermQuery { term: 0, nonce });
            }
        } else if now >= self.election_deadline {
            if matches!(self.recovery, Recovery::CatchingUp { .. }) {
                // No campaign before catching up: wait for the leader.
                self.reset_election_timer(now);
            } else {
                self.start_pre_vote(now);
            }
        }
        self.check_invariants();
    }

    /// Leader only: appends `data` (non-empty) to the log; returns its index. The entry is
    /// sent with the next drain of `poll_message`, together with every other entry proposed
    /// since the last one.
    pub fn propose(&mut self, now: Instant, data: Vec<u8>) -> Result<u64, NotLeader> {
        assert!(
            !data.is_empty(),
            "empty data is reserved for the leader's no-op"
        );
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(transfer) = self.transfer {
            // Thesis §3.10: no new entries while handing over; the target leads next.
            return Err(NotLeader {
                leader_hint: Some(transfer.to),
            });
        }
        let index = self.append_own(data);
        self.flush_pending = true;
        // A leader alone is its own majority.
        self.advance_commit();
        assert!(self.log.last_index() == index);
        // `now` is not needed yet: a proposal starts no timer of its own.
        let _ = now;
        self.check_invariants();
        Ok(index)
    }

    /// The next message to send, with its destination. Drain after every `handle_*` and
    /// `propose`, after storing what `take_persist` returned.
    pub fn poll_message(&mut self) -> Option<(NodeId, Message)> {
        if self.flush_pending {
            self.flush_pending = false;
            if self.role == Role::Leader {
                for position in 0..self.progress.len() {
                    self.send_append(position, Sending::Proposals);
                }
            }
        }
        self.outbox.pop_front()
    }

    /// Committed entries not yet returned, in index order, each exactly once per instance (a
    /// restarted instance returns them again as they become known committed, from index 1,
    /// or from after the snapshot it was restored from). Never an entry a snapshot covers;
    /// returns nothing while `poll_snapshot` holds a snapshot the shell has not taken.
    pub fn poll_committed(&mut self) -> Option<Entry> {
        assert!(self.returned_index <= self.commit_index);
        if self.returned_index == self.commit_index || self.snapshot_installed.is_some() {
            return None;
        }
        assert!(self.returned_index >= self.log.snapshot().index);
        self.returned_index += 1;
        let entry = self.log.entry(self.returned_index).clone();
        assert!(entry.index == self.returned_index);
        Some(entry)
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Instant {
        match self.role {
            Role::Leader => {
                let transfer = self.transfer.map_or(Instant::MAX, |t| t.deadline);
                self.heartbeat_deadline
                    .min(self.quorum_deadline)
                    .min(transfer)
            }
            _ => {
                let timer = match self.recovery {
                    Recovery::Querying { next_query, .. } => next_query,
                    _ => self.election_deadline,
                };
                let stall = self.snapshot_stall();
                self.snapshot_receive
                    .as_ref()
                    .map_or(timer, |r| timer.min(r.progress_at + stall))
            }
        }
    }

    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// The entries the log still holds, `first_index()` first: index 1 until the shell
    /// compacts (or a snapshot is installed), after that the entries after the snapshot.
    pub fn log(&self) -> &[Entry] {
        self.log.entries()
    }

    /// First index still in the log (snapshot index + 1; 1 without a snapshot).
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    /// What the latest snapshot covers (index 0: none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.log.snapshot()
    }

    /// The latest snapshot's data, if there is a snapshot.
    pub fn snapshot_data(&self) -> Option<&Arc<Vec<u8>>> {
        self.snapshot_data.as_ref()
    }

    /// The shell has a snapshot of its state machine through `index` (which it has applied:
    /// `poll_committed` returned it, so `index <= commit_index`). Raft drops the entries
    /// through `index` and keeps `data` to send to followers that need entries it no longer
    /// has (Raft §7). A no-op if `index` is not after the current snapshot. Panics if `index`
    /// is beyond what `poll_committed` returned (in particular beyond `commit_index`). The
    /// shell persists the snapshot before sending anything else, as for the log.
    pub fn compact(&mut self, index: u64, data: Arc<Vec<u8>>) {
        assert!(
            index <= self.commit_index && index <= self.returned_index,
            "compacting through {index}, beyond commit {} or applied {}",
            self.commit_index,
            self.returned_index
        );
        if index <= self.log.snapshot().index {
            return;
        }
        self.log.compact(index);
        self.snapshot_data = Some(data);
        assert!(self.log.snapshot().index == index);
        self.check_invariants();
    }

    /// A follower finished receiving a snapshot from its leader: the shell must replace its
    /// state machine with the data (the state after the entries through `meta.index`) before
    /// acting on any later `poll_committed` entry (which returns none until this is taken),
    /// and persist snapshot and log before sending, as for the log. Each installed snapshot
    /// is returned once; one installed before the previous was taken replaces it (it covers
    /// more).
    pub fn poll_snapshot(&mut self) -> Option<(SnapshotMeta, Arc<Vec<u8>>)> {
        self.snapshot_installed.take()
    }

    /// The state machine's check of a complete snapshot from a leader, run before it is
    /// installed: one it refuses is dropped (counted in [`Raft::faulty_drops`]) and changes
    /// nothing, so a faulty or forged snapshot never replaces the replica's state nor reaches
    /// its disk (spec §8.5, "Receiving a snapshot"). Without one, any snapshot is installed.
    pub fn set_snapshot_check(&mut self, check: SnapshotCheck) {
        self.snapshot_check = Some(Check(check));
    }

    /// Makes this Raft group share `shared` with the node's other groups (see [`NodeShared`]):
    /// the budget of incoming snapshot transfers and of log lines about peer input. A partial
    /// transfer in progress is dropped (it held the previous budget).
    pub fn share(&mut self, shared: NodeShared) {
        self.snapshot_receive = None;
        self.shared = shared;
    }

    /// The budgets this group shares with the node's others.
    pub fn shared(&self) -> &NodeShared {
        &self.shared
    }

    /// Bytes the partial snapshot transfer in progress holds in memory (0 without one).
    pub fn snapshot_receive_bytes(&self) -> u64 {
        self.snapshot_receive
            .as_ref()
            .map_or(0, |r| r.buffer.capacity() as u64)
    }

    /// How long a partial snapshot transfer may go without growing before it is dropped
    /// ([`SNAPSHOT_RECEIVE_STALL_TIMEOUTS`] longest election timeouts).
    fn snapshot_stall(&self) -> Duration {
        Duration::from_micros(
            self.config
                .election_timeout_max
                .as_micros()
                .saturating_mul(SNAPSHOT_RECEIVE_STALL_TIMEOUTS),
        )
    }

    /// Drops a partial snapshot transfer that has not grown for `snapshot_stall`, giving its
    /// bytes back to the node's budget (spec §8.5, "Receiving a snapshot").
    fn drop_stalled_snapshot(&mut self, now: Instant) {
        let stall = self.snapshot_stall();
        if self
            .snapshot_receive
            .as_ref()
            .is_some_and(|r| now >= r.progress_at + stall)
        {
            let receive = self.snapshot_receive.take().expect("checked");
            peer_log!(
                self,
                now,
                SnapshotStalled,
                info,
                "raft {}: dropping a snapshot transfer through {} that has not grown for \
                 {stall:?} ({} of {} bytes)",
                self.config.id,
                receive.meta.index,
                receive.buffer.len(),
                receive.total_len
            );
        }
    }

    /// Index of the last entry in the log (0 if empty).
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The entry at `index`, if the log holds it (`None` for a compacted one).
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.log.first_index() || index > self.log.last_index() {
            return None;
        }
        Some(self.log.entry(index))
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> u64 {
        self.hard.term
    }

    /// Who this node believes leads the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }

    /// This instance's life id, sent in its answers (see `Raft::current_life`).
    pub fn life(&self) -> u64 {
        self.life
    }

    /// Messages this instance dropped because only a faulty or forged peer sends them:
    /// malformed ones, a term beyond [`TERM_MAX`] or more than [`TERM_AHEAD_MAX`] above this
    /// node's, a second leader of a term, an Append or a snapshot that contradicts a committed
    /// entry or this node's snapshot, a snapshot larger than [`SNAPSHOT_LEN_MAX`], a complete
    /// snapshot the state machine's check refuses ([`Raft::set_snapshot_check`]). Among
    /// correct nodes it stays 0 whatever the network does (loss, duplication, reordering,
    /// delay, restarts): the simulator fails a run in which it does not, so a correct message
    /// mistaken for a forgery is found.
    pub fn faulty_drops(&self) -> u64 {
        self.faulty_drops
    }

    /// Leader lease (thesis §6.4.1): true only if this node leads, has committed an entry of
    /// its term, and `now` (its own clock) is before the start of the latest heartbeat round
    /// a majority acknowledged plus `election_timeout_min / (1 + drift_bound)`. While true,
    /// no other node can have been elected leader (module docs, "Lease").
    pub fn lease_valid(&self, now: Instant) -> bool {
        if self.role != Role::Leader || self.commit_index < self.noop_index {
            return false;
        }
        match self.lease_start {
            Some(start) => now < start + self.lease_duration,
            None => false,
        }
    }

    /// Leader only: hands leadership to voter `to` (thesis §3.10), for a graceful shutdown or
    /// to spread leaders. The leader stops taking proposals (they get `NotLeader` naming
    /// `to`), starts a heartbeat round whose Appends name `to`, brings `to` up to date, then
    /// sends it TimeoutNow (again each round until the transfer ends); `to` starts an
    /// election at once, which voters whose latest round names it grant despite stickiness.
    /// The leader gives up its lease at once, because those voters no longer keep the promise
    /// the lease rests on. If `to` has not taken over within `election_timeout_min`, the
    /// leader abandons the transfer: it starts a round that names nobody, and regains its
    /// lease once a majority acknowledges that round or a later one (module docs, "Lease").
    /// Ignored if `to` is this node or not a voter, or a transfer is already running.
    pub fn transfer_leadership(&mut self, now: Instant, to: NodeId) -> Result<(), NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.config.id || !self.config.voters.contains(&to) || self.transfer.is_some() {
            return Ok(());
        }
        log::info!(
            "raft {}: transferring leadership of term {} to {to}",
            self.config.id,
            self.hard.term
        );
        self.transfer = Some(Transfer {
            to,
            deadline: now + self.config.election_timeout_min,
            timeout_now_round: 0,
        });
        self.lease_from_round = u64::MAX;
        self.lease_start = None;
        // A round of its own, so that every round says one thing about the transfer. It also
        // sends TimeoutNow if `to` is caught up already.
        self.start_round(now);
        assert!(!self.lease_valid(now));
        self.check_invariants();
        Ok(())
    }

    /// ReadIndex (thesis §6.4), for reads when the lease cannot be used: leader only, once
    /// its no-op committed (so its commit index covers everything committed before). Starts
    /// a heartbeat round now and returns its number. Once [`Raft::confirmed_round`] reaches
    /// it, a majority acknowledged this node as leader after the call, so no other leader had
    /// committed anything newer: the applied state answers any read that arrived before it.
    pub fn confirm_leadership(&mut self, now: Instant) -> Option<u64> {
        if self.role != Role::Leader || self.commit_index < self.noop_index {
            return None;
        }
        self.start_round(now);
        self.check_invariants();
        Some(self.round)
    }

    /// Leader: the latest heartbeat round a majority (itself included) acknowledged in this
    /// term; 0 otherwise.
    pub fn confirmed_round(&mut self) -> u64 {
        if self.role != Role::Leader {
            return 0;
        }
        self.quorum_value(self.round, |p| p.acked_round)
    }

    /// Leader: whether voter `id` stores the whole log and answered within two heartbeat
    /// intervals (a transfer to it would complete at once).
    pub fn follower_caught_up(&self, id: NodeId, now: Instant) -> bool {
        let recent = self.config.heartbeat_interval.as_micros().saturating_mul(2);
        self.role == Role::Leader
            && self.progress.iter().any(|p| {
                p.id == id
                    && p.matched == self.log.last_index()
                    && now.saturating_since(p.heard_at).as_micros() < recent
            })
    }

    /// Leader: whether some follower is receiving the current snapshot. The shell holds off
    /// the next compaction meanwhile: a new snapshot would restart that transfer from its
    /// first byte, and under steady load a slow follower would then never catch up.
    pub fn sending_snapshot(&self) -> bool {
        let snapshot = self.log.snapshot().index;
        self.role == Role::Leader
            && snapshot > 0
            && self.progress.iter().any(|p| p.next <= snapshot)
    }

    /// The node a transfer in progress hands leadership to.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    /// Sends TimeoutNow to the transfer's target once it matches the whole log, at most once
    /// per round (each round resends it, in case it was lost or overtook the round's Append
    /// naming the target, which the target needs to obey it). Returns the target if it sent.
    fn send_timeout_now_if_caught_up(&mut self) -> Option<NodeId> {
        let round = self.round;
        let transfer = self.transfer.filter(|t| t.timeout_now_round != round)?;
        let last = self.log.last_index();
        let caught_up = self
            .progress
            .iter()
            .any(|p| p.id == transfer.to && p.matched == last);
        if caught_up {
            self.transfer = Some(Transfer {
                timeout_now_round: round,
                ..transfer
            });
            let term = self.hard.term;
            self.send(transfer.to, Message::TimeoutNow { term });
            return Some(transfer.to);
        }
        None
    }

    /// A node that restarts WITHOUT its state (durability `memory`, lost or emptied files,
    /// a rejoin cut short). It must not act as the node it was: it could vote a second time
    /// in a term it voted in, acknowledge a stale leader, or help elect a leader lacking an
    /// entry it acknowledged and then forgot. So (spec §8.5, "Rejoining without state"):
    /// 1. it asks every other voter for its term (TermQuery) and acts on nothing else until
    ///    a quorum-sized set of the OTHERS that hold state answered (TermReply): any quorum
    ///    it took part in before, in some term T, shares a member with that set
    ///    (quorum - 1 + quorum > n - 1), whose term is at least T;
    /// 2. it takes the largest term reported and counts itself as having voted in it, so it
    ///    never votes twice in a term and refuses leaders of older terms;
    /// 3. it acknowledges entries but neither votes nor campaigns until its commit index
    ///    reaches an entry of the current leader's own term (its log then holds everything
    ///    committed before that term) and, in the term it rejoined at, the largest last
    ///    index the repliers reported;
    /// 4. if every one of those replies says term 0, it never took part in a quorum: it
    ///    starts fresh.
    ///
    /// Nodes that hold no state answer too (NoStateReply) but do not count: they cannot
    /// vouch for a term. So a cluster whose nodes ALL start without state waits, whatever its
    /// size (a single voter too: nobody else can vouch for anything): that is a new cluster,
    /// whose nodes start with [`Raft::start_new`], or a total loss, which needs an operator.
    pub fn rejoin(config: Config, rng_seed: u64, now: Instant) -> Raft {
        Raft::recovering(config, rng_seed, now, false)
    }

    /// A node WITHOUT state that is *new* (spec §8.5 rule 6): it never held state for this
    /// shard, and its operator lets it help create the cluster (`--new-cluster`). It asks
    /// like [`Raft::rejoin`] and answers others' queries that it is new. It starts fresh only
    /// when EVERY other voter answered, after this node lost whatever state it had, that it
    /// holds no state beyond term 0 (a TermReply of term 0, or a NoStateReply saying new):
    /// then no node held anything a quorum ever decided, so there is nothing this node could
    /// contradict — a new cluster, or a total loss, which nothing can undo. If instead a
    /// quorum of the others answer with their state, it rejoins by the rule as any node
    /// without state does: next to a running cluster, a node started as new simply rejoins.
    pub fn start_new(config: Config, rng_seed: u64, now: Instant) -> Raft {
        Raft::recovering(config, rng_seed, now, true)
    }

    fn recovering(config: Config, rng_seed: u64, now: Instant, new: bool) -> Raft {
        let mut raft = Raft::new(config, rng_seed, HardState::default(), Vec::new(), now);
        let nonce = raft.rng.gen::<u64>();
        raft.recovery = Recovery::Querying {
            replies: Vec::new(),
            next_query: now + raft.config.heartbeat_interval,
            nonce,
            new,
        };
        raft.broadcast(Message::TermQuery { term: 0, nonce });
        // A single new voter has nobody to wait for (rule 6 holds at once).
        raft.decide_rejoin(now);
        raft
    }

    /// Whether the node is still rejoining (see `rejoin`): asking, or catching up.
    pub fn rejoining(&self) -> bool {
        self.recovery != Recovery::None
    }

    /// Whether the node is still asking the others for their terms (see `rejoin`): it then
    /// acts on nothing else.
    pub fn asking(&self) -> bool {
        matches!(self.recovery, Recovery::Querying { .. })
    }

    /// Whether the node is still asking as a *new* node (see `start_new`). It stops being
    /// new once it starts fresh or rejoins by the rule.
    pub fn asking_as_new(&self) -> bool {
        matches!(self.recovery, Recovery::Querying { new: true, .. })
    }

    /// While the node is still asking (see `rejoin`): what each other voter answered so far,
    /// for the shell's logs: `(voter, Some(term))` for a node that holds state,
    /// `(voter, None)` for one that holds none (new or not). Voters that never answered are
    /// missing. Empty once the node no longer asks.
    pub fn rejoin_answers(&self) -> Vec<(NodeId, Option<u64>, bool)> {
        match &self.recovery {
            Recovery::Querying { replies, .. } => replies
                .iter()
                .map(|&(id, answer)| match answer {
                    TermAnswer::State { term, .. } => (id, Some(term), false),
                    TermAnswer::NoState { new } => (id, None, new),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A TermReply or NoStateReply: kept (the latest per voter) if it echoes this life's
    /// nonce, then the rules of spec §8.5 decide whether the node can stop asking.
    fn handle_term_answer(&mut self, now: Instant, from: NodeId, nonce: u64, answer: TermAnswer) {
        let Recovery::Querying {
            replies,
            nonce: asked,
            ..
        } = &mut self.recovery
        else {
            // Not asking (any more): late or duplicated answers change nothing.
            return;
        };
        if nonce != *asked {
            return;
        }
        match replies.iter_mut().find(|(id, _)| *id == from) {
            Some((_, kept)) => *kept = answer,
            None => replies.push((from, answer)),
        }
        self.decide_rejoin(now);
    }

    /// Spec §8.5 rules 3, 5 and 6, on the answers held so far.
    fn decide_rejoin(&mut self, now: Instant) {
        let Recovery::Querying { replies, new, .. } = &self.recovery else {
            return;
        };
        // Rules 3 and 5: a quorum of the others that hold state.
        let states: Vec<(u64, u64)> = replies
            .iter()
            .filter_map(|&(_, a)| match a {
                TermAnswer::State { term, last_index } => Some((term, last_index)),
                TermAnswer::NoState { .. } => None,
            })
            .collect();
        // Rule 6: a new node, and every other voter holds nothing beyond term 0.
        let others = self.config.voters.len() - 1;
        let all_new = *new
            && replies.len() == others
            && replies.iter().all(|&(_, a)| {
                matches!(
                    a,
                    TermAnswer::State {
                        term: 0,
                        last_index: 0
                    } | TermAnswer::NoState { new: true }
                )
            });
        if states.len() >= self.quorum {
            let max = states.iter().map(|&(t, _)| t).max().unwrap_or(0);
            let target = states.iter().map(|&(_, i)| i).max().unwrap_or(0);
            if max == 0 {
                log::info!(
                    "raft {}: rejoining: no quorum ever formed with this node; starting fresh",
                    self.config.id
                );
                self.recovery = Recovery::None;
            } else {
                log::info!(
                    "raft {}: rejoining at term {max}; no vote until caught up",
                    self.config.id
                );
                self.set_hard(HardState {
                    term: max,
                    voted_for: Some(self.config.id),
                });
                self.recovery = Recovery::CatchingUp { term: max, target };
            }
        } else if all_new {
            log::info!(
                "raft {}: every other node is new too: starting a new cluster",
                self.config.id
            );
            self.recovery = Recovery::None;
        } else {
            return;
        }
        self.reset_election_timer(now);
    }

    /// Rejoin step 3 (see `Recovery::CatchingUp`).
    fn check_caught_up(&mut self) {
        let Recovery::CatchingUp { term, target } = self.recovery else {
            return;
        };
        let at_leaders_term = self.leader.is_some()
            && self.commit_index > 0
            && self.log.term_at(self.commit_index) == Some(self.hard.term);
        let caught_up = at_leaders_term && (self.hard.term > term || self.commit_index >= target);
        if caught_up {
            log::info!(
                "raft {}: rejoined: caught up in term {}",
                self.config.id,
                self.hard.term
            );
            self.recovery = Recovery::None;
        }
    }

    /// A node about to leave declines to take over shards (a TimeoutNow is ignored), so
    /// leaders are not handed to it while it hands its own away.
    pub fn decline_transfers(&mut self) {
        self.declines_transfers = true;
    }

    /// A follower that heard a round of the current leader records what it said about a
    /// transfer, if it is the highest round it heard in this term (see `TransferSeen`).
    fn note_round(&mut self, round: u64, transfer_to: Option<NodeId>) {
        assert!(self.role == Role::Follower);
        let seen = self.transfer_seen;
        if seen.term != self.hard.term || round >= seen.round {
            self.transfer_seen = TransferSeen {
                term: self.hard.term,
                round,
                // Only a voter can be a target (another id comes from a faulty peer).
                to: transfer_to.filter(|to| self.config.voters.contains(to)),
            };
        }
    }

    /// Whether the latest word of the leader of this node's current term hands leadership to
    /// `candidate`: the highest round it received names it, or, on the leader itself, its
    /// transfer in progress does.
    fn transfer_names(&self, candidate: NodeId) -> bool {
        match self.role {
            Role::Leader => self.transfer.is_some_and(|t| t.to == candidate),
            _ => {
                self.transfer_seen.term == self.hard.term
                    && self.transfer_seen.to == Some(candidate)
            }
        }
    }

    fn handle_timeout_now(&mut self, now: Instant, from: NodeId, term: u64) {
        // Only the leader of this node's current term may ask it to take over, and only while
        // its latest round names this node: a TimeoutNow that arrives after the transfer was
        // abandoned is stale (module docs, "Lease").
        if term != self.hard.term
            || self.role != Role::Follower
            || self.leader != Some(from)
            || !self.transfer_names(self.config.id)
            || self.declines_transfers
            || self.recovery != Recovery::None
        {
            return;
        }
        log::info!(
            "raft {}: taking over from {from} after term {term}",
            self.config.id
        );
        self.role = Role::PreCandidate;
        self.grants.clear();
        self.grants.push(self.config.id);
        self.start_election_as(now, true);
    }

    // ---- Elections (Raft §5.2, §5.4.1; thesis §9.6, §4.2.3) ----

    /// Whether this node heard from a live leader within `election_timeout_min`, and so
    /// refuses to vote or to adopt the term of a Vote (stickiness, thesis §4.2.3). A leader
    /// counts as hearing from itself.
    fn leader_contact_recent(&self, now: Instant) -> bool {
        self.role == Role::Leader
            || now.saturating_since(self.leader_contact) < self.config.election_timeout_min
    }

    fn reset_election_timer(&mut self, now: Instant) {
        let min_us = self.config.election_timeout_min.as_micros();
        let max_us = self.config.election_timeout_max.as_micros();
        assert!(min_us < max_us);
        let timeout = Duration::from_micros(self.rng.gen_range(min_us..max_us));
        self.election_deadline = now + timeout;
        assert!(self.election_deadline >= now + self.config.election_timeout_min);
    }

    fn start_pre_vote(&mut self, now: Instant) {
        assert!(self.role != Role::Leader);
        if self.hard.term >= TERM_MAX {
            // No term is left to campaign in (every node would drop it); only a faulty peer
            // brings a node here (`TERM_AHEAD_MAX`). Nothing this node could send would help.
            peer_log!(
                self,
                now,
                Term,
                error,
                "raft {}: term {} leaves no room for an election (faulty peer?)",
                self.config.id,
                self.hard.term
            );
            self.reset_election_timer(now);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.grants.clear();
        self.grants.push(self.config.id);
        self.reset_election_timer(now);
        if self.grants.len() >= self.quorum {
            self.start_election(now);
            return;
        }
        let msg = Message::PreVote {
            term: self.hard.term + 1,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        self.broadcast(msg);
    }

    fn start_election(&mut self, now: Instant) {
        self.start_election_as(now, false);
    }

    /// A real election; `transfer`: started by TimeoutNow, so voters ignore stickiness.
    fn start_election_as(&mut self, now: Instant, transfer: bool) {
        assert!(self.role == Role::PreCandidate && (transfer || self.grants.len() >= self.quorum));
        self.set_hard(HardState {
            term: self.hard.term + 1,
            voted_for: Some(self.config.id),
        });
        self.role = Role::Candidate;
        self.leader = None;
        self.grants.clear();
        self.grants.push(self.config.id);
        self.reset_election_timer(now);
        log::debug!(
            "raft {}: campaigning in term {}",
            self.config.id,
            self.hard.term
        );
        if self.grants.len() >= self.quorum {
            self.become_leader(now);
            return;
        }
        let msg = Message::Vote {
            term: self.hard.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        self.broadcast(msg);
    }

    fn handle_pre_vote(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
    ) {
        // Never changes this node's term (thesis §9.6). The asked term is not compared with
        // ours: a candidate whose term is behind learns ours from the VoteReply of the real
        // election this grant lets it start (one lost election, no disruption: a Vote of a
        // lower term changes nobody's term). Refusing it instead could leave a cluster
        // without a leader when the only up-to-date log sits on a node with a lagging term.
        let granted = self.recovery == Recovery::None
            && !self.leader_contact_recent(now)
            && self.log.is_up_to_date(last_log_index, last_log_term);
        let reply_term = if granted { term } else { self.hard.term };
        self.send(
            from,
            Message::PreVoteReply {
                term: reply_term,
                granted,
            },
        );
    }

    fn handle_pre_vote_reply(&mut self, now: Instant, from: NodeId, term: u64, granted: bool) {
        // Replies to an older pre-vote, or refusals, change nothing (and never the term).
        if self.role != Role::PreCandidate || !granted || term != self.hard.term + 1 {
            return;
        }
        if !self.grants.contains(&from) {
            self.grants.push(from);
        }
        if self.grants.len() >= self.quorum {
            self.start_election(now);
        }
    }

    fn handle_vote(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
        transfer: bool,
    ) {
        // A transfer vote overrides stickiness only for the node the leader of this term
        // chose in its latest round (or, on the leader, its transfer in progress), for the
        // next term: the leader gave up its lease when it started that transfer, and regains
        // one only from a round that names nobody (thesis §3.10; module docs, "Lease"). A
        // vote already granted to this candidate in this term may be granted again (a
        // resend changes nothing).
        let chosen = transfer
            && ((term == self.hard.term + 1 && self.transfer_names(from))
                || (term == self.hard.term && self.hard.voted_for == Some(from)));
        let sticky = !chosen && self.leader_contact_recent(now);
        if term > self.hard.term {
            if sticky {
                // Thesis §4.2.3: within election_timeout_min of hearing from a leader, neither
                // adopt the term nor vote. This is what the lease relies on.
                return;
            }
            self.become_follower(now, term, None);
        }
        if term < self.hard.term {
            let reply = Message::VoteReply {
                term: self.hard.term,
                granted: false,
            };
            self.send(from, reply);
            return;
        }
        // One vote per term (Raft §5.2); voting again for the same candidate answers a resend.
        let granted = self.hard.voted_for.is_none_or(|voted| voted == from)
            && self.recovery == Recovery::None
            && !sticky
            && self.role != Role::Leader
            && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted {
            // A candidate or leader has voted for itself, so only a follower or a
            // pre-candidate (which gives up its pre-election) gets here.
            assert!(matches!(self.role, Role::Follower | Role::PreCandidate));
            if self.role == Role::PreCandidate {
                self.become_follower(now, self.hard.term, None);
            }
            self.set_hard(HardState {
                term: self.hard.term,
                voted_for: Some(from),
            });
            log::debug!(
                "raft {}: votes for {from} in term {} (log {}/{}, theirs {last_log_index}/{last_log_term})",
                self.config.id,
                self.hard.term,
                self.log.last_index(),
                self.log.last_term()
            );
            self.reset_election_timer(now);
        }
        let reply = Message::VoteReply {
            term: self.hard.term,
            granted,
        };
        self.send(from, reply);
    }

    fn handle_vote_reply(&mut self, now: Instant, from: NodeId, term: u64, granted: bool) {
        if term > self.hard.term {
            self.become_follower(now, term, None);
            return;
        }
        if self.role != Role::Candidate || term != self.hard.term || !granted {
            return;
        }
        if !self.grants.contains(&from) {
            self.grants.push(from);
        }
        if self.grants.len() >= self.quorum {
            self.become_leader(now);
        }
    }

    /// Moves to follower of `term` (a later term clears the vote). Leaving leadership counts
    /// as leader contact, so the former leader refuses votes until its own lease has run out.
    fn become_follower(&mut self, now: Instant, term: u64, leader: Option<NodeId>) {
        assert!(term >= self.hard.term, "term {term} < {}", self.hard.term);
        if term > self.hard.term {
            self.set_hard(HardState {
                term,
                voted_for: None,
            });
        }
        if self.role == Role::Leader {
            self.leader_contact = now;
            self.progress.clear();
            self.round_starts.clear();
            self.lease_start = None;
            self.heartbeat_deadline = Instant::MAX;
            self.quorum_deadline = Instant::MAX;
            self.flush_pending = false;
            self.transfer = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.grants.clear();
        self.reset_election_timer(now);
        assert!(!self.lease_valid(now));
    }

    fn become_leader(&mut self, now: Instant) {
        assert!(self.role == Role::Candidate && self.grants.len() >= self.quorum);
        assert!(self.hard.voted_for == Some(self.config.id));
        log::info!("raft {}: leader of term {}", self.config.id, self.hard.term);
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.grants.clear();
        // A leader receives no snapshot: its budget goes back to the node.
        self.snapshot_receive = None;
        self.transfer = None;
        self.lease_from_round = 0;
        let next = self.log.last_index() + 1;
        self.progress.clear();
        for &id in &self.config.voters {
            if id != self.config.id {
                self.progress.push(Progress {
                    id,
                    next,
                    matched: 0,
                    probing: true,
                    probe_sent: false,
                    acked_round: 0,
                    life: None,
                    life_floor: 0,
                    heard_at: now,
                    snapshot: SnapshotSend::default(),
                });
            }
        }
        self.round_starts.clear();
        self.lease_start = None;
        self.flush_pending = false;
        // Raft §5.4.2 / thesis §6.4: an entry of the new term, so that entries of earlier
        // terms can commit with it and the leader learns the commit index.
        self.noop_index = self.append_own(Vec::new());
        self.quorum_deadline = now + self.config.election_timeout_min;
        self.start_round(now);
        self.advance_commit();
    }

    // ---- Replication (Raft §5.3, §5.4.2) ----

    /// Appends an entry of the leader's term to its own log.
    fn append_own(&mut self, data: Vec<u8>) -> u64 {
        assert!(self.role == Role::Leader);
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.hard.term,
            index,
            data,
        });
        index
    }

    /// Starts a heartbeat round: numbers it, remembers its start for the lease, and sends
    /// every follower an Append (with whatever entries it still needs).
    fn start_round(&mut self, now: Instant) {
        assert!(self.role == Role::Leader);
        self.round += 1;
        if self.round_starts.len() == ROUNDS_TRACKED_MAX {
            self.round_starts.pop_front();
        }
        self.round_starts.push_back((self.round, now));
        self.heartbeat_deadline = next_heartbeat(now, self.config.heartbeat_interval);
        for position in 0..self.progress.len() {
            self.send_append(position, Sending::Round);
        }
        self.send_timeout_now_if_caught_up();
        self.refresh_quorum_deadline(now);
        self.refresh_lease();
        assert!(self.heartbeat_deadline > now);
    }

    /// Sends follower `position` what it needs. A heartbeat always sends at least one Append
    /// (possibly empty); otherwise only entries are sent, within the flow-control window, and
    /// at most one Append in answer to the follower (see `Sending`).
    fn send_append(&mut self, position: usize, why: Sending) {
        assert!(self.role == Role::Leader);
        if self.progress[position].next <= self.log.snapshot().index {
            self.send_snapshot(position, why);
            return;
        }
        let heartbeat = why == Sending::Round;
        let batch_max = self.config.entries_per_append_max;
        let window = (batch_max as u64).saturating_mul(APPENDS_IN_FLIGHT_MAX);
        let last = self.log.last_index();
        let mut must_send = heartbeat;
        loop {
            let progress = &self.progress[position];
            assert!(progress.matched < progress.next && progress.next <= last + 1);
            let has_entries = progress.next <= last;
            let window_open = if progress.probing {
                // Until an answer says where the logs agree, one Append at a time (a
                // heartbeat resends it, in case it was lost).
                !progress.probe_sent || must_send
            } else {
                progress.next - 1 - progress.matched < window
            };
            let with_entries = has_entries && window_open;
            if !with_entries && !must_send {
                return;
            }
            let first = progress.next;
            let id = progress.id;
            let msg = self.append_message(first, if with_entries { batch_max } else { 0 });
            let sent = match &msg {
                Message::Append { entries, .. } => entries.len() as u64,
                _ => unreachable!(),
            };
            self.send(id, msg);
            must_send = false;
            let progress = &mut self.progress[position];
            if progress.probing {
                progress.probe_sent = true;
                return;
            }
            // Pipelining: assume it arrives; a failure answer rewinds `next`.
            progress.next += sent;
            if sent == 0 || why == Sending::Answer {
                return;
            }
        }
    }

    /// An Append of up to `count_max` entries starting at `first`.
    fn append_message(&self, first: u64, count_max: usize) -> Message {
        let prev_log_index = first - 1;
        let entries = self
            .log
            .slice(first, count_max, self.config.append_bytes_max)
            .to_vec();
        assert!(entries.len() <= self.config.entries_per_append_max);
        Message::Append {
            term: self.hard.term,
            prev_log_index,
            prev_log_term: self
                .log
                .term_at(prev_log_index)
                .expect("prev is in the log"),
            entries,
            leader_commit: self.commit_index,
            round: self.round,
            transfer_to: self.transfer.map(|t| t.to),
        }
    }

    /// Sends follower `position`, which needs entries compacted away, chunks of the current
    /// snapshot within the window (`SNAPSHOT_CHUNKS_IN_FLIGHT_MAX`), one chunk at most in
    /// answer to the follower (see `Sending`). A heartbeat always sends at least one chunk, and
    /// resumes from the follower's latest answer if the previous round brought no progress
    /// (lost chunks, or a follower that restarted and lost its partial transfer).
    fn send_snapshot(&mut self, position: usize, why: Sending) {
        let heartbeat = why == Sending::Round;
        assert!(self.role == Role::Leader);
        let meta = self.log.snapshot();
        assert!(meta.index > 0 && self.progress[position].next <= meta.index);
        let data = Arc::clone(self.snapshot_data.as_ref().expect("a snapshot has data"));
        let total_len = data.len() as u64;
        let chunk_max = self.config.snapshot_chunk_max as u64;
        let window = chunk_max.saturating_mul(SNAPSHOT_CHUNKS_IN_FLIGHT_MAX);
        let progress = &mut self.progress[position];
        if progress.snapshot.index != meta.index {
            // A new transfer, or the leader compacted again since the last one started.
            progress.snapshot = SnapshotSend {
                index: meta.index,
                ..SnapshotSend::default()
            };
        }
        let transfer = &mut progress.snapshot;
        if heartbeat {
            if transfer.acked == transfer.acked_at_round {
                transfer.acked = transfer.reported;
                transfer.sent = transfer.reported;
                transfer.resent_from = Some(transfer.acked);
            }
            transfer.acked_at_round = transfer.acked;
        }
        let id = progress.id;
        let mut must_send = heartbeat;
        loop {
            let transfer = &mut self.progress[position].snapshot;
            assert!(transfer.acked <= transfer.sent && transfer.sent <= total_len);
            let window_open = transfer.sent < total_len && transfer.sent - transfer.acked < window;
            if !window_open && !must_send {
                return;
            }
            // Without room in the window, a heartbeat resends the first unacknowledged chunk.
            let offset = if window_open {
                transfer.sent
            } else {
                transfer.acked
            };
            let end = total_len.min(offset + chunk_max);
            if window_open {
                transfer.sent = end;
            }
            must_send = false;
            let msg = Message::InstallSnapshot {
                term: self.hard.term,
                last_index: meta.index,
                last_term: meta.term,
                offset,
                total_len,
                data: data[offset as usize..end as usize].to_vec(),
                round: self.round,
            };
            self.send(id, msg);
            if why == Sending::Answer {
                return;
            }
        }
    }

    /// A chunk of the leader's snapshot (Raft §7): the same term rules and leader contact as
    /// an Append; one partial transfer is kept; the complete snapshot is installed.
    #[allow(clippy::too_many_arguments)]
    fn handle_install_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
        round: u64,
    ) {
        if term < self.hard.term {
            // A deposed leader: tell it the newer term so it steps down. Round 0: this
            // answers no round of a leader of `self.hard.term` (see `answering_follower`).
            let reply = Message::InstallSnapshotReply {
                term: self.hard.term,
                last_index: meta.index,
                received: 0,
                round: 0,
                life: self.life,
            };
            self.send(from, reply);
            return;
        }
        let well_formed = meta.index > 0
            && meta.term > 0
            && meta.term <= term
            && offset
                .checked_add(data.len() as u64)
                .is_some_and(|end| end <= total_len);
        if !well_formed {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed InstallSnapshot from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        if total_len > SNAPSHOT_LEN_MAX {
            peer_log!(
                self,
                now,
                SnapshotRefused,
                error,
                "raft {}: refusing a snapshot of {total_len} bytes from {from} (more than \
                 SNAPSHOT_LEN_MAX)",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        // As for an Append: a second leader of this term comes from a faulty or forged peer.
        let second_leader = term == self.hard.term
            && (self.role == Role::Leader || self.leader.is_some_and(|leader| leader != from));
        // A snapshot that disagrees with this node's own snapshot or with a committed entry
        // contradicts Raft's log matching: also faulty or forged. Terms never decrease along
        // a log, so an older snapshot (a leader that compacted less recently) has a term at
        // most this node's snapshot term, and a newer one at least (spec §8.5, "Receiving a
        // snapshot").
        let own = self.log.snapshot();
        let contradicts_own = match meta.index.cmp(&own.index) {
            std::cmp::Ordering::Equal => meta.term != own.term,
            std::cmp::Ordering::Less => meta.term > own.term,
            std::cmp::Ordering::Greater => meta.term < own.term,
        };
        let contradicts = contradicts_own
            || (meta.index <= self.commit_index
                && self.log.term_at(meta.index).is_some_and(|t| t != meta.term));
        if second_leader || contradicts {
            peer_log!(
                self,
                now,
                Contradicts,
                error,
                "raft {}: dropping an InstallSnapshot of term {term} from {from} that \
                 contradicts {} (faulty peer?)",
                self.config.id,
                if second_leader {
                    "the leader of this term"
                } else {
                    "this node's log"
                }
            );
            self.faulty_drops += 1;
            return;
        }
        if term > self.hard.term || self.role != Role::Follower {
            self.become_follower(now, term, Some(from));
        }
        self.leader = Some(from);
        self.leader_contact = now;
        self.reset_election_timer(now);
        // A chunk names no transfer target: a follower still receiving a snapshot is no
        // target, and for its vote, naming nobody is the safe reading.
        self.note_round(round, None);

        let mut reply = Message::InstallSnapshotReply {
            term: self.hard.term,
            last_index: meta.index,
            received: total_len,
            round,
            life: self.life,
        };
        if meta.index <= self.commit_index {
            // Already committed here (and so stored or snapshotted): nothing to install, and
            // the leader may count these entries as matched.
            self.snapshot_receive = None;
            self.send(from, reply);
            return;
        }
        let same_transfer = self
            .snapshot_receive
            .as_ref()
            .is_some_and(|r| r.meta == meta && r.total_len == total_len);
        if !same_transfer {
            // The transfer it replaces gives its bytes back first.
            self.snapshot_receive = None;
            let Some(reservation) = self.shared.snapshots.reserve(total_len) else {
                // Spec §8.5: the node's transfers already hold its budget. Refused: the
                // leader tries again from the start at its next round, by when another
                // transfer may have ended (or stalled and been dropped).
                peer_log!(
                    self,
                    now,
                    SnapshotNoRoom,
                    warn,
                    "raft {}: no room for a snapshot of {total_len} bytes from {from}: the \
                     node's transfers hold {} of SNAPSHOT_RECEIVE_BYTES_MAX {}; it waits",
                    self.config.id,
                    self.shared.snapshots.reserved(),
                    self.shared.snapshots.bytes_max()
                );
                if let Message::InstallSnapshotReply { received, .. } = &mut reply {
                    *received = 0;
                }
                self.send(from, reply);
                return;
            };
            assert!(reservation.bytes() == total_len);
            self.snapshot_receive = Some(SnapshotReceive {
                meta,
                total_len,
                buffer: Vec::new(),
                progress_at: now,
                reservation,
            });
        }
        let receive = self.snapshot_receive.as_mut().expect("set above");
        if offset == receive.buffer.len() as u64 && !data.is_empty() {
            // Grow by doubling, but never beyond `total_len`: what the reservation covers.
            let needed = receive.buffer.len() + data.len();
            if needed > receive.buffer.capacity() {
                let target = needed
                    .max(receive.buffer.capacity().saturating_mul(2))
                    .min(total_len as usize);
                receive.buffer.reserve_exact(target - receive.buffer.len());
            }
            receive.buffer.extend_from_slice(&data);
            receive.progress_at = now;
        }
        assert!(receive.buffer.len() as u64 <= receive.reservation.bytes());
        let mut received = receive.buffer.len() as u64;
        assert!(received <= total_len);
        if received == total_len {
            let receive = self.snapshot_receive.take().expect("set above");
            let refused = match &self.snapshot_check {
                Some(Check(check)) => check(&receive.buffer).err(),
                None => None,
            };
            match refused {
                None => self.install_snapshot(receive.meta, Arc::new(receive.buffer)),
                Some(error) => {
                    // Spec §8.5: checked before it replaces anything. The follower keeps its
                    // state and holds none of this snapshot now; a leader that sent it starts
                    // over at its next round (and a faulty one is refused again).
                    peer_log!(
                        self,
                        now,
                        SnapshotRefused,
                        error,
                        "raft {}: dropping a snapshot through {} from {from} that does not \
                         decode ({error}; faulty peer?)",
                        self.config.id,
                        meta.index
                    );
                    self.faulty_drops += 1;
                    received = 0;
                }
            }
        }
        if let Message::InstallSnapshotReply { received: r, .. } = &mut reply {
            *r = received;
        }
        self.send(from, reply);
    }

    /// Installs a complete snapshot from the leader, which covers more than this node has
    /// committed.
    fn install_snapshot(&mut self, meta: SnapshotMeta, data: Arc<Vec<u8>>) {
        assert!(self.role == Role::Follower);
        assert!(meta.index > self.commit_index && meta.term <= self.hard.term);
        let kept = self.log.install(meta);
        log::info!(
            "raft {}: installed a snapshot through {} of term {} ({} bytes, log suffix {})",
            self.config.id,
            meta.index,
            meta.term,
            data.len(),
            if kept { "kept" } else { "discarded" }
        );
        self.commit_index = meta.index;
        self.returned_index = meta.index;
        self.snapshot_data = Some(Arc::clone(&data));
        self.snapshot_installed = Some((meta, data));
        assert!(self.log.last_index() >= self.commit_index);
    }

    /// The common start of a leader's handling of a follower's answer: a later term deposes
    /// it; an earlier term, or an answer reaching a node that no longer leads, is stale.
    /// `Some(position)` of the follower's progress when the answer is to be acted on.
    ///
    /// Round 0 marks the answer of a follower whose term was already later than the request's
    /// (`handle_append`, `handle_install_snapshot`): it answers a request of an EARLIER term,
    /// perhaps one this node sent in a previous life, whose round numbers started at 1 as
    /// this life's do. Only its term counts. Every other answer carries the term of the
    /// request it answers, so one of this leader's term answers a request of this term, which
    /// only this node, in this life, sent: a node leads a term at most once (it must campaign
    /// in a later term than any it voted in, a restart included; a node that lost its state
    /// rejoins having voted in the latest term a quorum knows, spec §8.5). So its round is one
    /// of this life's, and its acknowledgement is real (issue 7 A3).
    fn answering_follower(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        round: u64,
    ) -> Option<usize> {
        if term > self.hard.term {
            peer_log!(
                self,
                now,
                SteppingDown,
                info,
                "raft {}: stepping down: node {from} is in term {term}",
                self.config.id
            );
            self.become_follower(now, term, None);
            return None;
        }
        if term < self.hard.term || self.role != Role::Leader || round == 0 {
            return None;
        }
        self.progress.iter().position(|p| p.id == from)
    }

    /// Whether an answer of `life` to round `round` comes from the follower's current life,
    /// the only one whose acknowledgements may count (issue 7 B5): a node that lost its state
    /// (durability `memory`) no longer holds what an earlier life acknowledged, and a leader
    /// that counted a late copy of such an acknowledgement would never send that node what it
    /// lacks. Every answer of an earlier life answers an Append (or chunk) that the leader
    /// sent before that life ended, so before it processed the first message of any later
    /// life: its round is at most the leader's round then, `life_floor`. So:
    /// - the life already known: counts;
    /// - another life answering a round above `life_floor`: a life newer than every one seen
    ///   before. The leader forgets what the follower held (it may have lost it), notes the
    ///   new life and its own current round as the new floor, and counts the answer;
    /// - another life answering a round up to `life_floor`: an earlier life, or the new one
    ///   answering an old round; ignored either way (the next round brings a fresh answer).
    ///
    /// A TermQuery (only a node that lost its state sends one) sets `life_floor` likewise and
    /// forgets the known life. Life ids are random 64-bit numbers, so two lives of one node
    /// share one with probability 2^-64; and an answer from a node that restarted WITH its
    /// state merely makes the leader resend what that node already holds.
    fn current_life(&mut self, now: Instant, position: usize, life: u64, round: u64) -> bool {
        let last = self.log.last_index();
        let leader_round = self.round;
        let progress = &mut self.progress[position];
        if progress.life == Some(life) {
            return true;
        }
        if round <= progress.life_floor {
            return false;
        }
        if progress.life.is_some() {
            peer_log!(
                self,
                now,
                NewLife,
                info,
                "raft {}: node {} restarted; replicating to it from scratch",
                self.config.id,
                progress.id
            );
            progress.start_over(last);
        }
        progress.life = Some(life);
        progress.life_floor = leader_round;
        true
    }

    /// The follower's answer to a chunk: counts for the lease and CheckQuorum like an
    /// AppendReply of the same round; moves the transfer on, and to Appends once complete.
    #[allow(clippy::too_many_arguments)]
    fn handle_install_snapshot_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        last_index: u64,
        received: u64,
        round: u64,
        life: u64,
    ) {
        let Some(position) = self.answering_follower(now, from, term, round) else {
            return;
        };
        let meta = self.log.snapshot();
        let total_len = self
            .snapshot_data
            .as_ref()
            .map_or(0, |data| data.len() as u64);
        if round > self.round || last_index > self.log.last_index() {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed InstallSnapshotReply from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        if !self.current_life(now, position, life, round) {
            return;
        }
        let progress = &mut self.progress[position];
        progress.heard_at = progress.heard_at.max(now);
        progress.acked_round = progress.acked_round.max(round);
        let mut matched_more = false;
        let current = last_index == meta.index
            && progress.snapshot.index == meta.index
            && progress.next <= meta.index
            && received <= total_len;
        if current {
            let transfer = &mut progress.snapshot;
            transfer.reported = received;
            if received <= transfer.acked
                && transfer.sent > transfer.acked
                && transfer.resent_from != Some(transfer.acked)
            {
                // Go back to the first byte the follower lacks (see `resent_from`).
                transfer.sent = transfer.acked;
                transfer.resent_from = Some(transfer.acked);
            }
            transfer.acked = transfer.acked.max(received);
            transfer.sent = transfer.sent.max(transfer.acked);
            if received == total_len {
                // The follower holds (or had already committed) everything the snapshot
                // covers, and those entries match the leader's: continue after it.
                progress.snapshot = SnapshotSend::default();
                if meta.index > progress.matched {
                    progress.matched = meta.index;
                    matched_more = true;
                }
                progress.next = progress.next.max(meta.index + 1);
                progress.probing = false;
                progress.probe_sent = false;
            }
        }
        let last = self.log.last_index();
        let progress = &self.progress[position];
        assert!(progress.matched < progress.next && progress.next <= last + 1);
        self.refresh_quorum_deadline(now);
        self.refresh_lease();
        let mut timeout_now_to = None;
        if matched_more {
            self.advance_commit();
            timeout_now_to = self.send_timeout_now_if_caught_up();
        }
        // At most one message back to the follower (see `Sending`).
        if timeout_now_to != Some(from) {
            self.send_append(position, Sending::Answer);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_append(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
        (round, transfer_to): (u64, Option<NodeId>),
    ) {
        if term < self.hard.term {
            // A deposed leader: tell it the newer term so it steps down. Round 0: this
            // answers no round of a leader of `self.hard.term` (see `answering_follower`).
            let reply = Message::AppendReply {
                term: self.hard.term,
                success: false,
                match_index: 0,
                round: 0,
                life: self.life,
            };
            self.send(from, reply);
            return;
        }
        let well_formed = entries.iter().enumerate().all(|(offset, entry)| {
            entry.index == prev_log_index + 1 + offset as u64
                && entry.term <= term
                && entry.term > 0
        }) && entries.windows(2).all(|pair| pair[0].term <= pair[1].term)
            && entries
                .first()
                .is_none_or(|entry| entry.term >= prev_log_term)
            && prev_log_term <= term;
        if !well_formed {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed Append from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        // Election Safety (Raft §5.2) makes the rest impossible among correct nodes: a second
        // leader of this term, or a leader that disagrees with a committed entry. Such an
        // Append comes from a faulty or forged peer; it is dropped, never acted on.
        let second_leader = term == self.hard.term
            && (self.role == Role::Leader || self.leader.is_some_and(|leader| leader != from));
        let rewrites_committed = self
            .log
            .term_at(prev_log_index)
            .is_some_and(|t| t != prev_log_term && prev_log_index <= self.commit_index)
            || entries.iter().any(|entry| {
                entry.index <= self.commit_index
                    && self
                        .log
                        .term_at(entry.index)
                        .is_some_and(|t| t != entry.term)
            });
        if second_leader || rewrites_committed {
            peer_log!(
                self,
                now,
                Contradicts,
                error,
                "raft {}: dropping an Append of term {term} from {from} that contradicts \
                 {} (faulty peer?)",
                self.config.id,
                if second_leader {
                    "the leader of this term"
                } else {
                    "a committed entry"
                }
            );
            self.faulty_drops += 1;
            return;
        }
        if term > self.hard.term || self.role != Role::Follower {
            self.become_follower(now, term, Some(from));
        }
        assert!(self.leader.is_none_or(|leader| leader == from));
        self.leader = Some(from);
        self.leader_contact = now;
        self.reset_election_timer(now);
        self.note_round(round, transfer_to);

        let mut prev_log_index = prev_log_index;
        let mut prev_log_term = prev_log_term;
        let mut entries = entries;
        let snapshot = self.log.snapshot();
        if prev_log_index < snapshot.index {
            // The entries through the snapshot are committed here, so they match the leader's
            // (Leader Completeness, Raft §5.4): skip them and check at the snapshot instead.
            let covered = snapshot.index - prev_log_index;
            if (entries.len() as u64) < covered {
                let reply = Message::AppendReply {
                    term: self.hard.term,
                    success: true,
                    match_index: prev_log_index + entries.len() as u64,
                    round,
                    life: self.life,
                };
                self.send(from, reply);
                return;
            }
            let rest = entries.split_off(covered as usize);
            let term_at_snapshot = entries.last().map_or(prev_log_term, |entry| entry.term);
            if term_at_snapshot != snapshot.term {
                peer_log!(
                    self,
                    now,
                    Contradicts,
                    error,
                    "raft {}: dropping an Append of term {term} from {from} that contradicts \
                     the snapshot (faulty peer?)",
                    self.config.id
                );
                self.faulty_drops += 1;
                return;
            }
            prev_log_term = term_at_snapshot;
            prev_log_index = snapshot.index;
            entries = rest;
        }

        // Consistency check (Raft §5.3).
        let reply = match self.log.term_at(prev_log_index) {
            Some(prev_term) if prev_term == prev_log_term => {
                let last_new = prev_log_index + entries.len() as u64;
                self.accept_entries(entries);
                assert!(self.log.last_index() >= last_new);
                let commit = leader_commit.min(last_new);
                if commit > self.commit_index {
                    self.set_commit(commit);
                }
                Message::AppendReply {
                    term: self.hard.term,
                    success: true,
                    match_index: last_new,
                    round,
                    life: self.life,
                }
            }
            Some(_) => {
                // Committed entries match the leader's (Leader Completeness, Raft §5.4).
                assert!(
                    prev_log_index > self.commit_index,
                    "leader {from} disagrees at committed index {prev_log_index}"
                );
                let hint = (self.log.run_start(prev_log_index) - 1).max(self.commit_index);
                Message::AppendReply {
                    term: self.hard.term,
                    success: false,
                    match_index: hint,
                    round,
                    life: self.life,
                }
            }
            None => Message::AppendReply {
                term: self.hard.term,
                success: false,
                match_index: self.log.last_index(),
                round,
                life: self.life,
            },
        };
        self.send(from, reply);
    }

    /// Stores entries that passed the consistency check. An entry already present with the same term is kept (an old or duplicated Append must
    /// not cut a longer log short); one that conflicts is removed with all that follow it
    /// (Raft §5.3).
    fn accept_entries(&mut self, entries: Vec<Entry>) {
        assert!(
            self.role == Role::Follower,
            "a leader never overwrites its log"
        );
        for entry in entries {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => {}
                Some(_) => {
                    assert!(
                        entry.index > self.commit_index,
                        "truncating committed entry {} (commit {})",
                        entry.index,
                        self.commit_index
                    );
                    self.log.truncate_from(entry.index);
                    self.log.push(entry);
                }
                None => self.log.push(entry),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_append_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        success: bool,
        match_index: u64,
        round: u64,
        life: u64,
    ) {
        let Some(position) = self.answering_follower(now, from, term, round) else {
            return;
        };
        let last = self.log.last_index();
        if round > self.round || match_index > last {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed AppendReply from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        if !self.current_life(now, position, life, round) {
            return;
        }
        let progress = &mut self.progress[position];
        progress.heard_at = progress.heard_at.max(now);
        progress.acked_round = progress.acked_round.max(round);
        progress.probe_sent = false;
        let mut matched_more = false;
        if success {
            if match_index > progress.matched {
                progress.matched = match_index;
                matched_more = true;
            }
            progress.next = progress.next.max(match_index + 1);
            progress.probing = false;
        } else if progress.probing && match_index + 1 >= progress.next {
            // Answers an older probe: nothing new.
        } else {
            // Rewind to the follower's hint, never below what it is known to hold.
            progress.next = (match_index + 1)
                .min(progress.next)
                .max(progress.matched + 1);
            progress.probing = true;
        }
        assert!(progress.matched < progress.next && progress.next <= last + 1);
        self.refresh_quorum_deadline(now);
        self.refresh_lease();
        let mut timeout_now_to = None;
        if matched_more {
            self.advance_commit();
            timeout_now_to = self.send_timeout_now_if_caught_up();
        }
        // At most one message back to the follower (see `Sending`).
        if timeout_now_to != Some(from) {
            self.send_append(position, Sending::Answer);
        }
    }

    /// Raft §5.4.2: commit the highest index a majority stores, if it is of the current term.
    fn advance_commit(&mut self) {
        assert!(self.role == Role::Leader);
        let own = self.log.last_index();
        let majority_index = self.quorum_value(own, |p| p.matched);
        if majority_index > self.commit_index
            && self.log.term_at(majority_index) == Some(self.hard.term)
        {
            self.set_commit(majority_index);
        }
    }

    fn set_commit(&mut self, index: u64) {
        assert!(index > self.commit_index, "commit index never decreases");
        assert!(index <= self.log.last_index());
        self.commit_index = index;
    }

    // ---- Lease and CheckQuorum (thesis §6.4.1, §6.2) ----

    /// Moves the lease to the start of the latest round a majority acknowledged (the leader
    /// acknowledges its own current round).
    fn refresh_lease(&mut self) {
        assert!(self.role == Role::Leader);
        let round = self.quorum_value(self.round, |p| p.acked_round);
        if round < self.lease_from_round {
            return;
        }
        while let Some(&(oldest, start)) = self.round_starts.front() {
            if oldest > round {
                break;
            }
            if oldest == round {
                assert!(self.lease_start.is_none_or(|lease| lease <= start));
                self.lease_start = Some(start);
                break;
            }
            self.round_starts.pop_front();
        }
    }

    /// CheckQuorum: the leader must hear from a majority (itself, now, included) within
    /// election_timeout_min of the latest time it did.
    fn refresh_quorum_deadline(&mut self, now: Instant) {
        assert!(self.role == Role::Leader);
        let heard = self.quorum_value(now.as_micros(), |p| p.heard_at.as_micros());
        self.quorum_deadline = Instant::from_micros(heard) + self.config.election_timeout_min;
    }

    /// The largest value that a majority of voters has reached: the leader's `own` and one
    /// per follower.
    fn quorum_value(&mut self, own: u64, per_follower: impl Fn(&Progress) -> u64) -> u64 {
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        values.push(own);
        values.extend(self.progress.iter().map(per_follower));
        assert!(values.len() == self.config.voters.len());
        values.sort_unstable_by(|a, b| b.cmp(a));
        let value = values[self.quorum - 1];
        self.scratch = values;
        value
    }

    // ---- Output ----

    fn send(&mut self, to: NodeId, msg: Message) {
        assert!(to != self.config.id);
        self.outbox.push_back((to, msg));
    }

    fn broadcast(&mut self, msg: Message) {
        for position in 0..self.config.voters.len() {
            let to = self.config.voters[position];
            if to != self.config.id {
                self.outbox.push_back((to, msg.clone()));
            }
        }
    }

    /// Cheap invariants checked after every input, in release builds too.
    fn check_invariants(&self) {
        assert!(self.log.snapshot().index <= self.returned_index);
        assert!(self.returned_index <= self.commit_index);
        assert!(self.snapshot_data.is_some() == (self.log.snapshot().index > 0));
        assert!(self.commit_index <= self.log.last_index());
        assert!(self.log.last_term() <= self.hard.term);
        match self.role {
            Role::Leader => {
                assert!(self.hard.voted_for == Some(self.config.id));
                assert!(self.leader == Some(self.config.id));
                assert!(self.progress.len() + 1 == self.config.voters.len());
            }
            Role::Candidate => assert!(self.hard.voted_for == Some(self.config.id)),
            Role::Follower | Role::PreCandidate => assert!(self.progress.is_empty()),
        }
    }
}
