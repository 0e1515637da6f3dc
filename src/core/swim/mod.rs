//! SWIM membership and failure detection as one pure state machine (Das, Gupta, Motivala,
//! "SWIM: Scalable Weakly-consistent Infection-style Process Group Membership Protocol", 2002),
//! with the Lifeguard refinements (Dadgar, Phillips, Currey, "Lifeguard: Local Health
//! Awareness for More Accurate Failure Detection", 2017).
//!
//! No socket, no clock, no thread, no global randomness: `now` and a seed come in, messages and
//! the next deadline go out, like the Raft core and `core::node`:
//!
//! ```text
//!   handle_message(now, from, addr, msg) ─┐              ┌─> poll_transmit() -> Transmit (send it)
//!   handle_timeout(now)                  ─┼─> Swim ──────┼─> poll_event()    -> Event    (tell the node)
//!   join(now, seeds), leave(now)         ─┘              └─> poll_timeout()  -> Instant  (sleep until)
//! ```
//!
//! What it does, by the paper's sections:
//! - **Failure detection** (SWIM §3.1): once per protocol period a member pings one other
//!   member; without an ack within the probe timeout it asks `indirect_probes` (k) others to
//!   ping the target for it (PING_REQ); a target that answered no one by the end of the period
//!   is suspected. Targets come in a randomized round-robin order (§4.3): a shuffled list walked
//!   to its end, then reshuffled; a new member goes in at a random position. That bounds the
//!   time until a member is probed by everyone, and keeps the expected time to a first
//!   detection e/(e−1) periods.
//! - **Suspicion** (§4.2): a suspected member is not dead yet; it refutes by gossiping a higher
//!   incarnation; otherwise the suspicion timeout confirms it dead. Which news overrides which
//!   follows §4.2 exactly ([`overrides`]).
//! - **Dissemination** (§4.1): membership news piggybacks on pings, acks and ping-reqs, each
//!   update sent `retransmit_mult`·⌈log10(n+1)⌉ times (λ·log n), least-sent and freshest first,
//!   within [`MESSAGE_LEN_MAX`]. Every question (PING, PING_REQ) also carries the sender's
//!   own alive update, so a member that has not heard of it yet learns it from the question
//!   itself and answers it (spec §8.3 rule 3, §8.12; `Swim::question`). A full-state exchange (PUSH_PULL) runs at join and then every
//!   `push_pull_interval` (longer beyond 32 members, [`Swim::push_pull_interval`]) with one
//!   random member, to heal what the gossip missed.
//! - **Lifeguard** (all three mechanisms switch with `Config::lifeguard`, so the simulator can
//!   compare): the local health multiplier (§IV.A, "LHM") counts this member's own signs of
//!   trouble — failed probes, missed NACKs, having to refute a suspicion — and stretches its
//!   own probe timeout and protocol period by (1 + LHM), so a slow member stops accusing
//!   healthy ones; a suspicion timeout that starts at `suspicion_max_mult` times the minimum and
//!   shrinks, log-scaled, as independent members confirm the suspicion (§IV.B); and the buddy
//!   system (§IV.C): a ping to a member this one suspects carries the suspicion first, so the
//!   suspect hears it at once and can refute.
//! - **Leave**: a member that leaves gossips `Left` at its incarnation and keeps answering
//!   and pinging (without ever suspecting anyone) until the news has been sent out
//!   ([`Swim::left_announced`]).
//! - **Answers no longer than questions** (spec §8.3 rule 5, for when these messages travel
//!   as PEER records): an ACK carries at most as many updates as the PING or PING_REQ it
//!   answers; a full-state answer goes to the address the table holds for its sender.
//!
//! Membership here only informs: SWIM never decides who holds a lock (issue 10 §2).
//! Authentication is the carrier's: SWIM messages travel as records of the authenticated PEER
//! datagram (spec §8.11), so a forged message never reaches this core; a malformed or
//! oversized one is dropped here all the same, never asserted on.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::core::raft::NodeId;
use crate::core::time::{Duration, Instant};
use crate::core::ConfigError;
use udplock_protocol::{
    RemoveOutcome, SwimMessage, PUSH_PULL_MEMBERS_MAX, SWIM_PING_FIXED_LEN as PING_FIXED_LEN,
    SWIM_PING_REQ_FIXED_LEN as PING_REQ_FIXED_LEN, SWIM_UPDATE_LEN as UPDATE_LEN,
};
pub use udplock_protocol::{
    SwimState as State, SwimUpdate as Update, SWIM_MESSAGE_LEN_MAX as MESSAGE_LEN_MAX,
    UPDATES_PER_MESSAGE_MAX,
};

/// A SWIM message as this core holds it: the wire's one type (spec §8.12,
/// `udplock_protocol::SwimMessage`) with its updates in a `Vec`. A decoded record becomes one
/// with `SwimView::into_owned`; `PeerWriter::push_swim` writes it; its `body_len` is the
/// length of its record body, which this core keeps within [`MESSAGE_LEN_MAX`].
pub type Message = SwimMessage<Vec<Update>>;

/// Ping-reqs this member runs for others at once; more are dropped (the prober then hears
/// neither ack nor nack from this helper, which is what a lossy helper looks like anyway). A
/// member is asked by k others per period on average; 64 leaves room for bursts.
pub const RELAYS_MAX: usize = 64;
/// Messages waiting for `poll_transmit`; more are dropped and counted. The shell drains after
/// every input; one input makes at most a full-state reply (`members_max` / 29 chunks) plus k.
pub const TRANSMITS_MAX: usize = 4096;
/// Events waiting for `poll_event`; the oldest is dropped (and counted) beyond it.
pub const EVENTS_MAX: usize = 4096;
/// Most members the table holds (dead and left ones included, so old news cannot resurrect
/// them); news of more is ignored. Bounds memory and a full-state exchange (1,000-member
/// clusters are the design point of issue 10).
pub const MEMBERS_MAX_LIMIT: usize = 16_384;
// The client reads at most this many members from a node (its own copy of the limit).
const _: () = assert!(MEMBERS_MAX_LIMIT == crate::client::MEMBERS_REPORT_MAX);

/// Group size up to which the periodic full-state exchange runs every `push_pull_interval`;
/// beyond it the interval grows with log2 of the group ([`Swim::push_pull_interval`]). 32 is
/// memberlist's threshold: below it a whole table is one or two chunks.
pub const PUSH_PULL_SCALE_MEMBERS: usize = 32;
const _: () = assert!(1 << 5 == PUSH_PULL_SCALE_MEMBERS);

/// The rules and timers of one member. [`Config::new`] gives the defaults (memberlist's LAN
/// profile, which the Lifeguard paper measured).
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's id (the cluster's node id) and the address others reach it at.
    pub id: NodeId,
    pub addr: SocketAddr,
    /// One probe per period (SWIM §3.1's T'). Default 1 s.
    pub protocol_period: Duration,
    /// How long a direct ping waits for its ack before the ping-reqs go out; must leave the
    /// indirect probe the rest of the period. Default 500 ms.
    pub probe_timeout: Duration,
    /// k: members asked to probe a silent target (SWIM §3.1). Default 3.
    pub indirect_probes: usize,
    /// λ: each update is sent λ·⌈log10(n+1)⌉ times (SWIM §4.1). Default 4.
    pub retransmit_mult: u32,
    /// The shortest suspicion timeout is this × max(1, log10 n) protocol periods: long enough
    /// for the suspect to hear of it by gossip and refute (SWIM §4.2). Default 4.
    pub suspicion_mult: u32,
    /// Lifeguard: a new suspicion waits this × the shortest timeout, shrinking towards the
    /// shortest as confirmations arrive (Lifeguard §IV.B, α = 6 by default).
    pub suspicion_max_mult: u32,
    /// Lifeguard: independent confirmations that bring the timeout down to the shortest
    /// (Lifeguard §IV.B's K). Default 3 (= k: each helper of a failed probe may confirm).
    pub suspicion_confirmations: u32,
    /// Lifeguard: the local health multiplier's ceiling (Lifeguard §IV.A's S). Timeouts grow
    /// up to (1 + health_max)×. Default 8.
    pub health_max: u32,
    /// A full-state exchange with one random member this often (heals partitions gossip
    /// missed), in groups of up to [`PUSH_PULL_SCALE_MEMBERS`]; longer in larger ones
    /// ([`Swim::push_pull_interval`]). Default 30 s.
    pub push_pull_interval: Duration,
    /// Most members in the table (≤ [`MEMBERS_MAX_LIMIT`]). Default 4,096.
    pub members_max: usize,
    /// How long a dead or left member stays in the table before it is forgotten, so that
    /// churn does not fill the table for ever (a full table takes no newcomer). While it stays,
    /// news of its old incarnation cannot bring it back, and full-state exchanges carry its
    /// death. Default 900 s: the death has reached every member many times over by then
    /// (gossip lasts λ·log n periods, about 12 at 1,000 members, and a full-state exchange
    /// runs every 30 s), so no old `Alive` is left to resurrect it; and it is long enough
    /// for placement's dead-after time (`core::placement`), which needs to know since when a
    /// member is dead. memberlist keeps the dead 30 s; ours serves placement too. At least
    /// two full-state intervals.
    pub dead_keep: Duration,
    /// The Lifeguard mechanisms (LHM, dynamic suspicion, buddy system, nacks). Default on; off
    /// is plain SWIM with suspicion, for comparison.
    pub lifeguard: bool,
    /// The incarnation this member starts at. It must exceed every incarnation an earlier
    /// life of the same member had, or the others' news of that life's death or suspicion
    /// (at its incarnation) overrides the new life's `Alive` until it hears the news and
    /// refutes it (SWIM §4.2), a period or more later. The node passes its spec §8.11
    /// incarnation, its start time in microseconds, which grows from life to life and is far
    /// above what refutations reach (one per suspicion). Default 0 (a member with one life).
    pub start_incarnation: u64,
}

impl Config {
    pub fn new(id: NodeId, addr: SocketAddr) -> Config {
        Config {
            id,
            addr,
            protocol_period: Duration::from_millis(1_000),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            suspicion_confirmations: 3,
            health_max: 8,
            push_pull_interval: Duration::from_millis(30_000),
            members_max: 4_096,
            dead_keep: Duration::from_millis(900_000),
            lifeguard: true,
            start_incarnation: 0,
        }
    }

    /// Refuses settings under which the protocol cannot work as the papers describe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, rule| Err(ConfigError { field, rule });
        if self.probe_timeout.as_micros() == 0
            || self.probe_timeout.as_micros() * 2 > self.protocol_period.as_micros()
        {
            // The indirect probe needs at least as long as the direct one (two round trips
            // instead of one).
            return bad(
                "probe_timeout",
                "must be positive and at most half the protocol_period",
            );
        }
        if self.indirect_probes == 0 || self.indirect_probes > 16 {
            return bad("indirect_probes", "must be 1 to 16");
        }
        if self.retransmit_mult == 0 || self.suspicion_mult == 0 {
            return bad("retransmit_mult", "and suspicion_mult must be positive");
        }
        if self.suspicion_max_mult == 0 || self.suspicion_confirmations == 0 {
            return bad(
                "suspicion_max_mult",
                "and suspicion_confirmations must be positive",
            );
        }
        if self.health_max > 64 {
            return bad("health_max", "must be at most 64");
        }
        if self.push_pull_interval < self.protocol_period {
            return bad("push_pull_interval", "must be at least one protocol_period");
        }
        if self.dead_keep.as_micros() < self.push_pull_interval.as_micros().saturating_mul(2) {
            // A member that missed the death (partitioned, paused) hears of it in a full-state
            // exchange; forgotten before that, its stale `Alive` would bring the dead back.
            return bad("dead_keep", "must be at least twice the push_pull_interval");
        }
        if self.members_max < 2 || self.members_max > MEMBERS_MAX_LIMIT {
            return bad("members_max", "must be 2 to MEMBERS_MAX_LIMIT");
        }
        Ok(())
    }
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub msg: Message,
}

/// Membership news for the node and its operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member this one did not know (or knew dead or gone) is alive.
    Joined { id: NodeId, addr: SocketAddr },
    /// A member is suspected (this member's own probe failed, or the news came by gossip).
    Suspect { id: NodeId, incarnation: u64 },
    /// A suspected member refuted the suspicion.
    Alive { id: NodeId, incarnation: u64 },
    /// A member is confirmed failed.
    Dead { id: NodeId },
    /// A member left on purpose.
    Left { id: NodeId },
    /// A member dead or left for `Config::dead_keep` was removed from the table; it may come
    /// back by joining.
    Forgotten { id: NodeId },
    /// This member was suspected (or declared dead) and refuted it with a higher incarnation.
    Refuted { incarnation: u64 },
}

/// One member as this one sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub incarnation: u64,
    pub state: State,
    /// When this member learned of `state` (for itself: when it started). Placement's
    /// dead-after rule reads it.
    pub since: Instant,
}

/// Counters of what this member sent and decided (for the simulator and `udplock status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub pings_sent: u64,
    pub acks_sent: u64,
    pub ping_reqs_sent: u64,
    pub nacks_sent: u64,
    /// PUSH_PULL chunks (full-state exchanges are counted apart from the probe traffic).
    pub push_pulls_sent: u64,
    /// Probes that ended without an ack (each made this member suspect its target).
    pub probes_failed: u64,
    pub refutations: u64,
    pub transmits_dropped: u64,
    pub events_dropped: u64,
    /// Dead or left members removed from the table after `Config::dead_keep`.
    pub forgotten: u64,
}

impl Stats {
    /// Probe traffic: everything but full-state exchanges.
    pub fn probe_messages(&self) -> u64 {
        self.pings_sent + self.acks_sent + self.ping_reqs_sent + self.nacks_sent
    }
}

#[derive(Clone, Copy, Debug)]
struct Member {
    addr: SocketAddr,
    incarnation: u64,
    state: State,
    /// When it entered `state` (a dead member is forgotten `dead_keep` after its death).
    since: Instant,
}

/// This period's probe.
#[derive(Clone, Copy, Debug)]
struct Probe {
    target: NodeId,
    seq: u32,
    acked: bool,
    /// When the direct ping gives up and the ping-reqs go out; `None` once they did.
    indirect_at: Option<Instant>,
    nacks_expected: u32,
    nacks: u32,
}

/// A ping this member sends for another's PING_REQ.
#[derive(Clone, Copy, Debug)]
struct Relay {
    origin: SocketAddr,
    origin_seq: u32,
    /// The member probed for the origin: the relayed ACK names it.
    target: NodeId,
    seq: u32,
    /// Updates the PING_REQ carried: the relayed ACK carries no more (spec §8.3 rule 5).
    asked: usize,
    deadline: Instant,
}

/// A running suspicion (Lifeguard §IV.B).
#[derive(Clone, Debug)]
struct Suspicion {
    incarnation: u64,
    start: Instant,
    /// Distinct suspecters, the first included (bounded by `suspicion_confirmations` + 1).
    from: Vec<NodeId>,
    min: Duration,
    max: Duration,
    deadline: Instant,
    /// When to ask the suspect directly if still suspecting ([`Swim::check_suspects`]).
    check_at: Option<Instant>,
}

/// An update waiting to be gossiped.
#[derive(Clone, Copy, Debug)]
struct Broadcast {
    update: Update,
    transmits: u32,
    /// Freshness: later news first among the equally sent.
    order: u64,
}

/// One SWIM member. See the module doc.
pub struct Swim {
    config: Config,
    rng: ChaCha8Rng,
    incarnation: u64,
    /// When this member started (its own `MemberInfo::since`).
    started: Instant,
    leaving: bool,
    seeds: Vec<SocketAddr>,
    members: BTreeMap<NodeId, Member>,
    probe_order: Vec<NodeId>,
    probe_next: usize,
    probe: Option<Probe>,
    period_end: Instant,
    periods: u64,
    seq: u32,
    health: u32,
    /// Members alive or suspect, this one included (n of the log n formulas), kept as the
    /// table changes so gossip does not count the table on every message.
    group: usize,
    relays: Vec<Relay>,
    suspicions: BTreeMap<NodeId, Suspicion>,
    broadcasts: Vec<Broadcast>,
    broadcast_order: u64,
    push_pull_at: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// [`Swim::version`]: moves with every change of what [`Swim::members`] lists.
    version: u64,
    /// Debug builds: the version and a digest of the table when the invariants were last
    /// checked, so that a change of the table that forgot to move the version is caught.
    checked: Option<(u64, u64)>,
}

/// Whether news `new` about a member overrides what this member holds, `old` (SWIM §4.2):
/// - {Alive, i} overrides {Suspect, j} and {Alive, j} when i > j;
/// - {Suspect, i} overrides {Suspect, j} when i > j, and {Alive, j} when i ≥ j;
/// - {Confirm, i} (dead) overrides {Alive, j} and {Suspect, j} — the paper says for any j;
///   here only for j ≤ i. A confirmation of an older incarnation is late news: the member
///   refuted the suspicion it confirms, so it was alive after it. With "any j", a member whose
///   suspicion timed out just before the refutation reached it killed the refuted member
///   everywhere, for good (it never refutes a death older than its incarnation); the scale
///   simulation found it under pauses
///   (`a_late_confirmation_of_an_older_incarnation_does_not_kill_a_refuted_member`).
///   memberlist makes the same choice.
///
/// Beyond the paper: a dead or left member comes back only with a higher incarnation (a
/// restarted member refutes its own death, so it does); `Left` is a confirmation the member
/// gave itself, so it overrides what a confirmation does, and a `Dead` of at most its
/// incarnation; nothing but a higher `Alive` overrides `Left`.
pub fn overrides(new: (State, u64), old: (State, u64)) -> bool {
    use State::*;
    let ((ns, ni), (os, oi)) = (new, old);
    match (ns, os) {
        (Alive, _) => ni > oi,
        (Suspect, Suspect) => ni > oi,
        (Suspect, Alive) => ni >= oi,
        (Suspect, Dead | Left) => false,
        (Dead, Alive | Suspect) => ni >= oi,
        (Dead, Dead | Left) => false,
        (Left, Alive | Suspect) => ni >= oi,
        (Left, Dead) => ni >= oi,
        (Left, Left) => false,
    }
}

/// Whether a member in `state` counts in the group's size n.
fn in_group(state: State) -> bool {
    matches!(state, State::Alive | State::Suspect)
}

impl Swim {
    /// A member alone in its group; [`Swim::join`] finds the others. `rng_seed` drives every
    /// random choice (probe order, helpers, jitter).
    pub fn new(config: Config, rng_seed: u64, now: Instant) -> Result<Swim, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        // Members start their periods at random phases, so probes spread over the period.
        let phase = Duration::from_micros(rng.gen_range(0..config.protocol_period.as_micros()));
        let pp_phase =
            Duration::from_micros(rng.gen_range(0..config.push_pull_interval.as_micros()));
        let incarnation = config.start_incarnation;
        let mut swim = Swim {
            period_end: now + phase,
            push_pull_at: now + config.push_pull_interval + pp_phase,
            config,
            rng,
            incarnation,
            started: now,
            leaving: false,
            seeds: Vec::new(),
            members: BTreeMap::new(),
            probe_order: Vec::new(),
            probe_next: 0,
            probe: None,
            periods: 0,
            seq: 0,
            health: 0,
            group: 1,
            relays: Vec::new(),
            suspicions: BTreeMap::new(),
            broadcasts: Vec::new(),
            broadcast_order: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            version: 0,
            checked: None,
        };
        swim.broadcast(swim.own_update(State::Alive));
        swim.check_invariants();
        Ok(swim)
    }

    /// Joins the group through any of `seeds` (addresses of members): a full-state exchange
    /// with each, repeated every protocol period until some member is known.
    pub fn join(&mut self, now: Instant, seeds: &[SocketAddr]) {
        self.seeds = seeds
            .iter()
            .copied()
            .filter(|a| *a != self.config.addr)
            .take(16)
            .collect();
        self.send_join(now);
        self.check_invariants();
    }

    /// Leaves the group: gossips `Left`, straight to up to k members as well, and keeps
    /// answering and pinging (the pings carry the news; a failed one accuses no one). Stop the
    /// member once [`Swim::left_announced`].
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.version += 1;
        self.probe = None;
        let left = self.own_update(State::Left);
        self.broadcast(left);
        let mut alive = self.alive_members(&[]);
        alive.shuffle(&mut self.rng);
        for id in alive.into_iter().take(self.config.indirect_probes) {
            let addr = self.members[&id].addr;
            let seq = self.next_seq();
            let updates = self.question(PING_FIXED_LEN, None);
            self.send(
                addr,
                Message::Ping {
                    seq,
                    target: id,
                    updates,
                },
            );
        }
        let _ = now;
        self.check_invariants();
    }

    /// Whether the `Left` news has been sent as often as any update is (the member may stop).
    pub fn left_announced(&self) -> bool {
        self.leaving
            && !self
                .broadcasts
                .iter()
                .any(|b| b.update.id == self.config.id)
    }

    /// One message from member `from`, which arrived from `addr` (replies go there).
    pub fn handle_message(&mut self, now: Instant, from: NodeId, addr: SocketAddr, msg: Message) {
        if from == self.config.id || msg.body_len() > MESSAGE_LEN_MAX {
            // Our own message looped back, or one no decoder would have accepted.
            return;
        }
        let gossip = msg.gossip().map_or(&[][..], Vec::as_slice);
        for u in gossip {
            self.apply(now, *u);
        }
        // Answers go to the source address, no longer than the question (spec §8.3 rule 5).
        let asked = gossip.len();
        match msg {
            Message::Ping { seq, target, .. } => {
                if target == self.config.id {
                    let updates = self.gossip_at_most(PING_FIXED_LEN, &[], asked);
                    self.send(
                        addr,
                        Message::Ack {
                            seq,
                            target,
                            updates,
                        },
                    );
                }
            }
            Message::Ack { seq, .. } => self.on_ack(seq),
            Message::PingReq {
                seq,
                target,
                target_addr,
                ..
            } => self.on_ping_req(now, addr, seq, target, target_addr, asked),
            Message::Nack { seq } => {
                if let Some(p) = &mut self.probe {
                    if p.seq == seq && p.nacks < p.nacks_expected {
                        p.nacks += 1;
                    }
                }
            }
            Message::PushPull { reply, members } => {
                for u in members.iter().take(PUSH_PULL_MEMBERS_MAX) {
                    self.apply(now, *u);
                }
                // Not an answer of its size: it goes to the address the table holds for the
                // sender (its own record, just merged), never to the datagram's source.
                if let (true, Some(m)) = (reply, self.members.get(&from)) {
                    self.send_state(m.addr, false);
                }
            }
        }
        self.check_invariants();
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.period_end {
            self.end_period(now);
            self.start_period(now);
        }
        if let Some(p) = self.probe {
            if let Some(at) = p.indirect_at {
                if now >= at && !p.acked {
                    self.send_ping_reqs(p);
                }
            }
        }
        let mut i = 0;
        while i < self.relays.len() {
            if now >= self.relays[i].deadline {
                let r = self.relays.swap_remove(i);
                if self.config.lifeguard {
                    self.send(r.origin, Message::Nack { seq: r.origin_seq });
                }
            } else {
                i += 1;
            }
        }
        self.check_suspects(now);
        let due: Vec<NodeId> = self
            .suspicions
            .iter()
            .filter(|(_, s)| now >= s.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let s = &self.suspicions[&id];
            let m = self.members[&id];
            self.apply(
                now,
                Update {
                    id,
                    addr: m.addr,
                    incarnation: s.incarnation,
                    state: State::Dead,
                    from: 0,
                },
            );
        }
        if now >= self.push_pull_at {
            self.push_pull_at = now + self.push_pull_interval();
            let alive = self.alive_members(&[]);
            if let Some(id) = alive.choose(&mut self.rng) {
                let addr = self.members[id].addr;
                self.send_state(addr, true);
            }
        }
        self.check_invariants();
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next time [`Swim::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.period_end.min(self.push_pull_at);
        if let Some(Probe {
            indirect_at: Some(at),
            acked: false,
            ..
        }) = self.probe
        {
            t = t.min(at);
        }
        for r in &self.relays {
            t = t.min(r.deadline);
        }
        for s in self.suspicions.values() {
            t = t.min(s.deadline).min(s.check_at.unwrap_or(Instant::MAX));
        }
        t
    }

    /// Every member this one knows, itself first (dead and left ones included).
    pub fn members(&self) -> Vec<MemberInfo> {
        let me = MemberInfo {
            id: self.config.id,
            addr: self.config.addr,
            incarnation: self.incarnation,
            state: if self.leaving {
                State::Left
            } else {
                State::Alive
            },
            since: self.started,
        };
        let others = self.members.iter().map(|(id, m)| MemberInfo {
            id: *id,
            addr: m.addr,
            incarnation: m.incarnation,
            state: m.state,
            since: m.since,
        });
        std::iter::once(me).chain(others).collect()
    }

    /// The member table's version: a counter that moves whenever what [`Swim::members`]
    /// lists changes — a member added or forgotten, a member's state, incarnation or
    /// address, this member's own incarnation or its leave — and never otherwise, so a
    /// reader may keep what it derived from the table (the node's address book, a sorted
    /// view for MEMBERS) until it moves. (`since` changes only with a state.)
    pub fn version(&self) -> u64 {
        self.version
    }

    /// What this member holds about `id` (not itself).
    pub fn member(&self, id: NodeId) -> Option<(State, u64)> {
        self.members.get(&id).map(|m| (m.state, m.incarnation))
    }

    /// An operator's removal of member `id` (spec §4.10, §8.12): if this member holds it
    /// suspect or dead at exactly `incarnation`, it holds it left there from now on and gossips
    /// that as any leave (so every member that holds it at that incarnation comes to hold it
    /// left; a member that is in fact alive refutes it with a higher incarnation, SWIM §4.2).
    /// Otherwise nothing changes: itself or a member held alive is refused, one held left is
    /// already removed, one held at another incarnation (it came back, or refuted) is refused.
    /// Returns what it did and what it holds afterwards: the state and the incarnation (0 for
    /// an unknown member).
    pub fn remove(
        &mut self,
        now: Instant,
        id: NodeId,
        incarnation: u64,
    ) -> (RemoveOutcome, State, u64) {
        if id == self.config.id {
            return (RemoveOutcome::Alive, State::Alive, self.incarnation);
        }
        let Some(m) = self.members.get(&id).copied() else {
            return (RemoveOutcome::UnknownMember, State::Alive, 0);
        };
        let held = (m.state, m.incarnation);
        let answer = match m.state {
            State::Alive => (RemoveOutcome::Alive, held.0, held.1),
            State::Left => (RemoveOutcome::AlreadyRemoved, held.0, held.1),
            State::Suspect | State::Dead if m.incarnation != incarnation => {
                (RemoveOutcome::OtherIncarnation, held.0, held.1)
            }
            State::Suspect | State::Dead => {
                let left = Update {
                    id,
                    addr: m.addr,
                    incarnation,
                    state: State::Left,
                    from: 0,
                };
                // Left overrides suspect and dead at the same incarnation (`overrides`).
                let applied = self.apply(now, left);
                assert!(applied, "a left did not override {held:?}");
                (RemoveOutcome::Removed, State::Left, incarnation)
            }
        };
        self.check_invariants();
        answer
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The local health multiplier (Lifeguard §IV.A): 0 healthy, up to `health_max`.
    pub fn health(&self) -> u32 {
        self.health
    }

    /// Protocol periods started so far.
    pub fn periods(&self) -> u64 {
        self.periods
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Members counted as the group's size n: alive or suspect, this one included.
    pub fn group_size(&self) -> usize {
        self.group
    }

    /// How long from one periodic full-state exchange to the next: `push_pull_interval`,
    /// times ⌈log2 n⌉ − 4 beyond [`PUSH_PULL_SCALE_MEMBERS`] (n the group size: 2× at 33 to 64
    /// members, 6× at 1,000), as memberlist scales it. The answer to an exchange is the whole
    /// table, ⌈n/29⌉ chunks, so at a fixed interval each member's share of the traffic grew
    /// with n: at 1,000 members 1.2 chunks (1.5 KB) per member per period beside 2 probe
    /// messages. Scaled, it grows as n / log n; gossip, not this exchange, spreads news.
    pub fn push_pull_interval(&self) -> Duration {
        let n = self.group_size() as u64;
        let scale = if n <= PUSH_PULL_SCALE_MEMBERS as u64 {
            1
        } else {
            let log2_ceil = u64::from(u64::BITS - (n - 1).leading_zeros());
            log2_ceil - 4
        };
        Duration::from_micros(
            self.config
                .push_pull_interval
                .as_micros()
                .saturating_mul(scale),
        )
    }

    /// The current suspicion timeout of `id`, if suspected (for tests and operators).
    pub fn suspicion_timeout(&self, id: NodeId) -> Option<Duration> {
        self.suspicions
            .get(&id)
            .map(|s| s.deadline.saturating_since(s.start))
    }

    // ---- the protocol period (SWIM §3.1, §4.3) ----

    /// A period ends: a probe that got no ack, directly or through a helper, makes its target
    /// suspect (§4.2), and tells this member something about its own health (Lifeguard §IV.A).
    fn end_period(&mut self, now: Instant) {
        let Some(p) = self.probe.take() else { return };
        // A leaving member's pings only spread its leave: it accuses no one.
        if p.acked || self.leaving {
            return;
        }
        self.stats.probes_failed += 1;
        // A failed probe is a sign of this member's own trouble; so is every nack that did not
        // come (the helpers' answers did not reach it either).
        self.health_add(1 + p.nacks_expected.saturating_sub(p.nacks));
        if let Some(m) = self.members.get(&p.target).copied() {
            if m.state == State::Alive || m.state == State::Suspect {
                self.apply(
                    now,
                    Update {
                        id: p.target,
                        addr: m.addr,
                        incarnation: m.incarnation,
                        state: State::Suspect,
                        from: self.config.id,
                    },
                );
            }
        }
    }

    fn start_period(&mut self, now: Instant) {
        self.periods += 1;
        self.forget_the_long_dead(now);
        self.period_end = now + self.scaled(self.config.protocol_period);
        if self.members.is_empty() && !self.seeds.is_empty() {
            self.send_join(now);
        }
        let Some(target) = self.next_target() else {
            return;
        };
        let m = self.members[&target];
        let seq = self.next_seq();
        // Buddy system (Lifeguard §IV.C): a suspect hears of its suspicion in the ping itself.
        let buddy = if self.config.lifeguard && m.state == State::Suspect {
            Some(Update {
                id: target,
                addr: m.addr,
                incarnation: m.incarnation,
                state: State::Suspect,
                from: self.suspicions[&target].from[0],
            })
        } else {
            None
        };
        let updates = self.question(PING_FIXED_LEN, buddy);
        self.send(
            m.addr,
            Message::Ping {
                seq,
                target,
                updates,
            },
        );
        self.probe = Some(Probe {
            target,
            seq,
            acked: false,
            indirect_at: Some(now + self.scaled(self.config.probe_timeout)),
            nacks_expected: 0,
            nacks: 0,
        });
    }

    /// Removes members dead or left for `dead_keep` (once a period: O(members), like a pass of
    /// the probe order). The probe order skips members no longer in the table; a pending
    /// broadcast of the death runs out as any does.
    fn forget_the_long_dead(&mut self, now: Instant) {
        let keep = self.config.dead_keep;
        let gone: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| !in_group(m.state) && now.saturating_since(m.since) >= keep)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.members.remove(&id);
            self.version += 1;
            self.stats.forgotten += 1;
            self.event(Event::Forgotten { id });
        }
    }

    /// The next member of the randomized round-robin order (SWIM §4.3), skipping members that
    /// died or left since the list was made; reshuffles at the end of a pass.
    fn next_target(&mut self) -> Option<NodeId> {
        for _ in 0..2 {
            while self.probe_next < self.probe_order.len() {
                let id = self.probe_order[self.probe_next];
                self.probe_next += 1;
                if self
                    .members
                    .get(&id)
                    .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
                {
                    return Some(id);
                }
            }
            let mut order: Vec<NodeId> = self
                .members
                .iter()
                .filter(|(_, m)| matches!(m.state, State::Alive | State::Suspect))
                .map(|(id, _)| *id)
                .collect();
            order.shuffle(&mut self.rng);
            self.probe_order = order;
            self.probe_next = 0;
        }
        None
    }

    fn send_ping_reqs(&mut self, p: Probe) {
        let target_addr = self.members.get(&p.target).map(|m| m.addr);
        let helpers = self.alive_members(&[p.target]);
        let chosen: Vec<NodeId> = helpers
            .choose_multiple(&mut self.rng, self.config.indirect_probes)
            .copied()
            .collect();
        let mut sent = 0;
        if let Some(target_addr) = target_addr {
            for h in chosen {
                let addr = self.members[&h].addr;
                let updates = self.question(PING_REQ_FIXED_LEN, None);
                self.send(
                    addr,
                    Message::PingReq {
                        seq: p.seq,
                        target: p.target,
                        target_addr,
                        updates,
                    },
                );
                sent += 1;
            }
        }
        self.probe = Some(Probe {
            indirect_at: None,
            nacks_expected: if self.config.lifeguard { sent } else { 0 },
            ..p
        });
    }

    fn on_ack(&mut self, seq: u32) {
        if let Some(p) = &mut self.probe {
            if p.seq == seq && !p.acked {
                p.acked = true;
                // A probe that worked is a sign of health (Lifeguard §IV.A).
                self.health = self.health.saturating_sub(1);
                return;
            }
        }
        if let Some(i) = self.relays.iter().position(|r| r.seq == seq) {
            let r = self.relays.swap_remove(i);
            let updates = self.gossip_at_most(PING_FIXED_LEN, &[], r.asked);
            self.send(
                r.origin,
                Message::Ack {
                    seq: r.origin_seq,
                    target: r.target,
                    updates,
                },
            );
        }
    }

    fn on_ping_req(
        &mut self,
        now: Instant,
        origin: SocketAddr,
        origin_seq: u32,
        target: NodeId,
        target_addr: SocketAddr,
        asked: usize,
    ) {
        if target == self.config.id {
            let updates = self.gossip_at_most(PING_FIXED_LEN, &[], asked);
            self.send(
                origin,
                Message::Ack {
                    seq: origin_seq,
                    target,
                    updates,
                },
            );
            return;
        }
        if self.relays.len() >= RELAYS_MAX {
            return;
        }
        let seq = self.next_seq();
        // The nack must reach the prober before its period ends: the prober waits the period
        // less the probe timeout, at least one probe timeout (Config::validate); give up at
        // 80% of it (memberlist's choice).
        let wait = Duration::from_micros(self.config.probe_timeout.as_micros() * 4 / 5);
        self.relays.push(Relay {
            origin,
            origin_seq,
            target,
            seq,
            asked,
            deadline: now + wait,
        });
        // The ping goes where the table says the target is (spec §8.3 rule 5: what a node
        // sends because of what it received goes to known addresses); to the address the
        // request names only for a member this one does not know yet.
        let to = self.members.get(&target).map_or(target_addr, |m| m.addr);
        let updates = self.question(PING_FIXED_LEN, None);
        self.send(
            to,
            Message::Ping {
                seq,
                target,
                updates,
            },
        );
    }

    // ---- membership news (SWIM §4.2) ----

    /// Applies one piece of news; returns whether it changed anything.
    fn apply(&mut self, now: Instant, u: Update) -> bool {
        if u.id == self.config.id {
            return self.about_me(u);
        }
        let Some(old) = self.members.get(&u.id).copied() else {
            if self.members.len() >= self.config.members_max {
                return false;
            }
            self.members.insert(
                u.id,
                Member {
                    addr: u.addr,
                    incarnation: u.incarnation,
                    state: u.state,
                    since: now,
                },
            );
            self.version += 1;
            self.group += usize::from(in_group(u.state));
            match u.state {
                State::Alive | State::Suspect => {
                    self.event(Event::Joined {
                        id: u.id,
                        addr: u.addr,
                    });
                    // SWIM §4.3: a new member goes in at a random position of the order.
                    let at = self.rng.gen_range(self.probe_next..=self.probe_order.len());
                    self.probe_order.insert(at, u.id);
                    if u.state == State::Suspect {
                        self.start_suspicion(now, u);
                    }
                }
                State::Dead | State::Left => {}
            }
            self.broadcast(u);
            return true;
        };
        if !overrides((u.state, u.incarnation), (old.state, old.incarnation)) {
            if old.state == State::Alive && u.incarnation < old.incarnation {
                // Stale news: its sender missed the refutation (dissemination reaches each
                // member with high probability only, SWIM §4.1). Gossip the newer news again:
                // it goes first into this member's next message, the answer to a ping from
                // that sender included, before the sender's suspicion times out. Bounded: only
                // stale news triggers it, and stale news stops once the refutation is known.
                self.broadcast(Update {
                    id: u.id,
                    addr: old.addr,
                    incarnation: old.incarnation,
                    state: State::Alive,
                    from: 0,
                });
                return false;
            }
            if u.state == State::Suspect
                && old.state == State::Suspect
                && u.incarnation == old.incarnation
            {
                self.confirm_suspicion(now, u);
            }
            return false;
        }
        self.members.insert(
            u.id,
            Member {
                addr: u.addr,
                incarnation: u.incarnation,
                state: u.state,
                since: if u.state == old.state { old.since } else { now },
            },
        );
        // News that overrides changes the incarnation or the state ([`overrides`]).
        self.version += 1;
        self.group = self.group + usize::from(in_group(u.state)) - usize::from(in_group(old.state));
        if old.state == State::Suspect {
            self.suspicions.remove(&u.id);
        }
        match u.state {
            State::Alive => {
                if old.state == State::Suspect {
                    self.event(Event::Alive {
                        id: u.id,
                        incarnation: u.incarnation,
                    });
                } else if matches!(old.state, State::Dead | State::Left) {
                    self.event(Event::Joined {
                        id: u.id,
                        addr: u.addr,
                    });
                    let at = self.rng.gen_range(self.probe_next..=self.probe_order.len());
                    self.probe_order.insert(at, u.id);
                }
            }
            State::Suspect => {
                self.start_suspicion(now, u);
                self.event(Event::Suspect {
                    id: u.id,
                    incarnation: u.incarnation,
                });
            }
            State::Dead => self.event(Event::Dead { id: u.id }),
            State::Left => self.event(Event::Left { id: u.id }),
        }
        self.broadcast(u);
        true
    }

    /// News about this member: suspicion or death at its current incarnation (or later) is
    /// refuted by a higher incarnation (SWIM §4.2); so is an `Alive` of a later incarnation,
    /// which only a previous life of this member can have sent.
    fn about_me(&mut self, u: Update) -> bool {
        if self.leaving {
            return false;
        }
        let refute = match u.state {
            State::Alive => u.incarnation > self.incarnation,
            State::Suspect | State::Dead | State::Left => u.incarnation >= self.incarnation,
        };
        if !refute {
            if u.state != State::Alive && u.incarnation < self.incarnation {
                // Stale suspicion of this member: its sender missed the refutation. Gossip it
                // again: it goes first into the answer to that sender (see `apply`).
                self.broadcast(self.own_update(State::Alive));
            }
            return false;
        }
        self.incarnation = u.incarnation.saturating_add(1);
        self.version += 1;
        self.stats.refutations += 1;
        if u.state == State::Suspect {
            // Lifeguard §IV.A: being suspected means others do not hear this member in time.
            self.health_add(1);
        }
        self.event(Event::Refuted {
            incarnation: self.incarnation,
        });
        self.broadcast(self.own_update(State::Alive));
        true
    }

    fn start_suspicion(&mut self, now: Instant, u: Update) {
        // SWIM §4.2's timeout, scaled with log n like the retransmissions; Lifeguard starts at
        // suspicion_max_mult times it.
        let n = self.group_size() as f64;
        let min_us = self.config.suspicion_mult as f64
            * n.log10().max(1.0)
            * self.config.protocol_period.as_micros() as f64;
        let min = Duration::from_micros(min_us as u64);
        let max = if self.config.lifeguard {
            Duration::from_micros(min.as_micros() * self.config.suspicion_max_mult as u64)
        } else {
            min
        };
        self.suspicions.insert(
            u.id,
            Suspicion {
                incarnation: u.incarnation,
                start: now,
                from: vec![u.from],
                min,
                max,
                deadline: now + max,
                check_at: self
                    .config
                    .lifeguard
                    .then(|| now + Duration::from_micros(min.as_micros() / 2)),
            },
        );
        self.recompute_deadline(u.id);
    }

    /// Halfway through the shortest suspicion timeout, and again every half shortest timeout
    /// while it lasts, a member that still suspects asks the suspect itself: a ping carrying
    /// the suspicion first (as the buddy system's does), not a probe (no ping-req, no verdict,
    /// no health change). Gossip reaches every member with high probability only (SWIM §4.1);
    /// a member that missed the refutation would otherwise declare a live member dead when its
    /// timeout runs out, and the suspect answers stale suspicion with its newer incarnation
    /// (`about_me`). Asked again because an ask can be lost with the rest: a member cut off
    /// by a partition suspects everyone, its gossip and its first asks die in the partition,
    /// and after the heal nobody else knows of the suspicion, so without a later ask it runs
    /// out against a reachable member (the cluster simulator's `swim_deaths_healed`,
    /// `a_suspecter_asks_the_suspect_again_when_its_first_ask_was_lost`). Costs, per member
    /// holding the suspicion, one ping per half shortest timeout: for a member that refuted,
    /// the few that missed it, until they hear the answer; for a crashed one, every member up
    /// to 2·`suspicion_max_mult` times (fewer as confirmations shorten the timeout). Lifeguard
    /// only (an extension of its buddy system, §IV.C).
    fn check_suspects(&mut self, now: Instant) {
        let due: Vec<NodeId> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.check_at.is_some_and(|t| now >= t))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let s = self.suspicions.get_mut(&id).expect("due suspicion");
            // Again every half shortest timeout while it runs: an ask lost (in the partition
            // that raised the suspicion) must not leave the suspect unaware until the end.
            let next = now + Duration::from_micros(s.min.as_micros() / 2);
            s.check_at = (next < s.deadline).then_some(next);
            let (incarnation, from) = (s.incarnation, s.from[0]);
            let addr = self.members[&id].addr;
            let suspicion = Update {
                id,
                addr,
                incarnation,
                state: State::Suspect,
                from,
            };
            let seq = self.next_seq();
            let updates = self.question(PING_FIXED_LEN, Some(suspicion));
            self.send(
                addr,
                Message::Ping {
                    seq,
                    target: id,
                    updates,
                },
            );
        }
    }

    /// Another member suspects the same incarnation: with Lifeguard, an independent
    /// confirmation shortens the timeout (§IV.B); it is gossiped on, so others count it too.
    fn confirm_suspicion(&mut self, _now: Instant, u: Update) {
        let k = self.config.suspicion_confirmations as usize;
        let Some(s) = self.suspicions.get_mut(&u.id) else {
            return;
        };
        if s.from.contains(&u.from) || s.from.len() > k {
            return;
        }
        s.from.push(u.from);
        self.recompute_deadline(u.id);
        self.broadcast(u);
    }

    /// Lifeguard §IV.B: timeout = max(min, max − (max − min)·log(C + 1)/log(K + 1)), C the
    /// independent confirmations after the first suspicion.
    fn recompute_deadline(&mut self, id: NodeId) {
        let k = self.config.suspicion_confirmations as f64;
        let s = self.suspicions.get_mut(&id).expect("suspicion exists");
        let c = (s.from.len() - 1) as f64;
        let (min, max) = (s.min.as_micros() as f64, s.max.as_micros() as f64);
        let t = (max - (max - min) * (c + 1.0).ln() / (k + 1.0).ln()).max(min);
        s.deadline = s.start + Duration::from_micros(t as u64);
    }

    // ---- dissemination (SWIM §4.1) ----

    /// Queues news for gossip, replacing older news about the same member.
    fn broadcast(&mut self, update: Update) {
        self.broadcast_order += 1;
        let b = Broadcast {
            update,
            transmits: 0,
            order: self.broadcast_order,
        };
        if let Some(old) = self
            .broadcasts
            .iter_mut()
            .find(|b| b.update.id == update.id)
        {
            *old = b;
        } else {
            self.broadcasts.push(b);
        }
    }

    /// How often each update is sent: λ·⌈log10(n + 1)⌉ (SWIM §4.1).
    pub fn retransmit_limit(&self) -> u32 {
        let n = self.group_size() as f64;
        self.config.retransmit_mult * ((n + 1.0).log10().ceil() as u32).max(1)
    }

    /// The updates to piggyback on a message whose fixed part takes `fixed` bytes: `first` if
    /// any (the buddy system's suspicion), then the least-sent, freshest news that fits.
    /// Questions use [`Swim::question`], answers [`Swim::gossip_at_most`]; the tests read the
    /// gossip alone here.
    #[cfg(test)]
    fn gossip(&mut self, fixed: usize, first: Option<Update>) -> Vec<Update> {
        let first: Vec<Update> = first.into_iter().collect();
        self.gossip_at_most(fixed, &first, UPDATES_PER_MESSAGE_MAX)
    }

    /// The updates of a question (PING or PING_REQ) whose fixed part takes `fixed` bytes:
    /// `buddy` if any (the buddy system's suspicion), then this member's own alive UPDATE,
    /// then gossip as [`Swim::gossip`]. The receiver may not know this member yet — gossip
    /// of its join reaches the others one after another, and a joiner starts probing the
    /// members it learned at once —, and a node acts on a datagram from a sender it does not
    /// know only if the sender announces itself in it (spec §8.3 rule 3, §8.12): so the
    /// question that reaches a member first also introduces its sender, and is answered,
    /// instead of being dropped and making its sender suspect a live member. It also tells
    /// a receiver that holds this member at an older incarnation (dead, or suspected) the
    /// current one. 44 bytes per question; an ACK may then carry one update more (as many
    /// as its question). Not while leaving: the member's news is then its `Left`.
    fn question(&mut self, fixed: usize, buddy: Option<Update>) -> Vec<Update> {
        let mut first: Vec<Update> = buddy.into_iter().collect();
        if !self.leaving {
            first.push(self.own_update(State::Alive));
        }
        self.gossip_at_most(fixed, &first, UPDATES_PER_MESSAGE_MAX)
    }

    /// [`Swim::gossip`] for an answer: at most `most` updates, as many as the message it
    /// answers carried, so the answer is no longer than the question (spec §8.3 rule 5; an
    /// ACK's fixed part is no longer than a PING's or a PING_REQ's).
    /// `first` goes first (as much of it as fits); news about a member `first` names is not
    /// repeated, and counts as sent if `first` holds this member's own news itself.
    fn gossip_at_most(&mut self, fixed: usize, first: &[Update], most: usize) -> Vec<Update> {
        let room = ((MESSAGE_LEN_MAX - fixed) / UPDATE_LEN)
            .min(UPDATES_PER_MESSAGE_MAX)
            .min(most);
        if room == 0 {
            return Vec::new();
        }
        let mut out: Vec<Update> = first.iter().take(room).copied().collect();
        self.broadcasts
            .sort_by(|a, b| a.transmits.cmp(&b.transmits).then(b.order.cmp(&a.order)));
        let limit = self.retransmit_limit();
        let me = self.config.id;
        for b in self.broadcasts.iter_mut() {
            if let Some(f) = out.iter().find(|f| f.id == b.update.id) {
                if f.id == me && *f == b.update {
                    b.transmits += 1;
                }
                continue;
            }
            if out.len() >= room {
                break;
            }
            out.push(b.update);
            b.transmits += 1;
        }
        self.broadcasts.retain(|b| b.transmits < limit);
        out
    }

    fn own_update(&self, state: State) -> Update {
        Update {
            id: self.config.id,
            addr: self.config.addr,
            incarnation: self.incarnation,
            state,
            from: 0,
        }
    }

    /// This member's whole table, itself included, as PUSH_PULL chunks to `to`.
    fn send_state(&mut self, to: SocketAddr, reply: bool) {
        let mut all = vec![self.own_update(if self.leaving {
            State::Left
        } else {
            State::Alive
        })];
        for (id, m) in &self.members {
            let from = self
                .suspicions
                .get(id)
                .map(|s| s.from[0])
                .unwrap_or_default();
            all.push(Update {
                id: *id,
                addr: m.addr,
                incarnation: m.incarnation,
                state: m.state,
                from,
            });
        }
        for chunk in all.chunks(PUSH_PULL_MEMBERS_MAX) {
            self.send(
                to,
                Message::PushPull {
                    reply,
                    members: chunk.to_vec(),
                },
            );
            // Only the first chunk asks for an answer: one reply per exchange.
            if reply {
                break;
            }
        }
    }

    fn send_join(&mut self, _now: Instant) {
        for seed in self.seeds.clone() {
            self.send_state(seed, true);
        }
    }

    // ---- helpers ----

    fn send(&mut self, to: SocketAddr, msg: Message) {
        // Sending side of the size rule; the receiving side drops anything longer.
        assert!(msg.body_len() <= MESSAGE_LEN_MAX, "{msg:?}");
        if self.transmits.len() >= TRANSMITS_MAX {
            self.stats.transmits_dropped += 1;
            return;
        }
        match &msg {
            Message::Ping { .. } => self.stats.pings_sent += 1,
            Message::Ack { .. } => self.stats.acks_sent += 1,
            Message::PingReq { .. } => self.stats.ping_reqs_sent += 1,
            Message::Nack { .. } => self.stats.nacks_sent += 1,
            Message::PushPull { .. } => self.stats.push_pulls_sent += 1,
        }
        self.transmits.push_back(Transmit { to, msg });
    }

    fn event(&mut self, e: Event) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn health_add(&mut self, n: u32) {
        if self.config.lifeguard {
            self.health = self.health.saturating_add(n).min(self.config.health_max);
        }
    }

    /// `d` stretched by the local health multiplier (Lifeguard §IV.A).
    fn scaled(&self, d: Duration) -> Duration {
        Duration::from_micros(d.as_micros().saturating_mul(1 + self.health as u64))
    }

    /// Alive members other than `except`.
    fn alive_members(&self, except: &[NodeId]) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(id, m)| m.state == State::Alive && !except.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// What holds after every input. The O(members) checks run in debug builds only (the
    /// simulator's 1,000-member runs would spend their time here).
    fn check_invariants(&mut self) {
        assert!(!self.members.contains_key(&self.config.id));
        assert!(self.health <= self.config.health_max);
        assert!(self.config.lifeguard || self.health == 0);
        assert!(self.relays.len() <= RELAYS_MAX);
        assert!(self.transmits.len() <= TRANSMITS_MAX && self.events.len() <= EVENTS_MAX);
        assert!(self.members.len() <= self.config.members_max);
        assert!(self.suspicions.len() <= self.members.len());
        if let Some(p) = &self.probe {
            assert!(p.target != self.config.id);
            assert!(p.nacks <= p.nacks_expected);
        }
        if cfg!(debug_assertions) {
            // A suspicion runs exactly for each suspect, at the incarnation it was raised at,
            // and ends no later than its longest timeout.
            for (id, m) in &self.members {
                let s = self.suspicions.get(id);
                assert_eq!(m.state == State::Suspect, s.is_some(), "member {id}");
                if let Some(s) = s {
                    assert_eq!(s.incarnation, m.incarnation);
                    assert!(s.min <= s.max && s.deadline <= s.start + s.max);
                    assert!(s.deadline >= s.start + s.min);
                }
            }
            // One pending update per member.
            for (i, b) in self.broadcasts.iter().enumerate() {
                assert!(self.broadcasts[i + 1..]
                    .iter()
                    .all(|o| o.update.id != b.update.id));
            }
            assert!(self.probe_order.iter().all(|id| *id != self.config.id));
            let group = 1 + self.members.values().filter(|m| in_group(m.state)).count();
            assert_eq!(self.group, group);
            // The version moved if the table changed.
            let digest = self.table_digest();
            if let Some((version, was)) = self.checked {
                if version == self.version {
                    assert_eq!(was, digest, "the table changed at version {version}");
                }
            }
            self.checked = Some((self.version, digest));
        }
    }

    /// A hash of everything [`Swim::members`] lists (for [`Swim::check_invariants`]).
    fn table_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for m in self.members() {
            (m.id, m.addr, m.incarnation, m.state, m.since.as_micros()).hash(&mut h);
        }
        h.finish()
    }
}
