//! The renewal rules of lock guards: which holds are due for a RENEW when, grouped per shard;
//! what each outcome does to a hold's validity; when a hold is lost; and when to wake up.
//!
//! Pure like every core: no IO, no clock, no global randomness. The blocking client's renewer
//! thread (`crate::client`, `renewer.rs`) drives it today, and an async client can drive the
//! same rules from a task:
//!
//! ```text
//!  add(now, id, HoldSpec)            a granted hold (from its ACQUIRE reply) enters
//!  handle_timeout(now)               holds whose give-up instant passed are lost
//!  poll_renewals(now) -> RenewGroup  due holds, one group per shard, with one deadline
//!      ... the shell renews the group (one RENEW per hold today, a batched keepalive later)
//!  handle_outcome(now, id, outcome)  Renewed { sent_at, lease_ms, token } | Refused
//!                                    | Forbidden | NoAnswer
//!  poll_event() -> Event             Renewed { valid_until, give_up_at } | Lost { reason }
//!  poll_timeout()                    the next due renewal or give-up instant
//!  remove(id)                        the guard was released: nothing more about it
//! ```
//!
//! # The rules
//!
//! - **Validity** is the spec's lease rule (§6.4, §7.1.6): an OK reply whose echoed copy was
//!   sent at `sent_at` makes the hold valid until `sent_at + lease_ms × (1 − drift)`, and a
//!   hold's validity is the later of its current one and that (a renewal never shortens the
//!   server's expiry, §6.4), so it never moves back.
//! - **Give-up instant**: a hold is *lost* once `valid_until − loss_margin` passes without a
//!   successful renewal. The margin (a tenth of the validity unless the caller names one, at
//!   most half of it) is the time the holder has to stop its work while the lock is still
//!   held: a guard reports a loss *before* its lease ends, never after.
//! - **Due time**: a hold is renewed a third of its validity after the send time of the copy
//!   that gave it (spec §6.4 suggests "well before the end"; a third leaves two thirds for
//!   retries), made up to a fifth earlier by a seeded jitter so that many holds taken at once
//!   do not renew in lockstep.
//! - **Batches**: when holds of a shard are due, the holds of that shard due within half a
//!   renewal period (a sixth of their validity) go with them, early: the shell renews a
//!   shard's group with one KEEPALIVE per 64 holds (spec §4.11), so a process with thousands
//!   of locks sends a few datagrams per shard and period, not one per lock. Renewed together,
//!   a shard's holds stay together.
//! - **Attempts**: a renewal attempt (one request per hold, its copies re-sent until an
//!   answer) lasts until the earliest give-up instant of its group, so that every answer
//!   that comes in time counts, unless the renewer is needed sooner: when several shards'
//!   groups are due at once, or another hold becomes due, it ends then, though not before a
//!   tenth of the shortest validity of any hold; and never later than `attempt_max`. Within
//!   an attempt a copy waits at most a thirtieth of the validity for its answer before the
//!   next is sent (`RenewGroup::rto_max`), however high load has pushed the RTT estimate: a
//!   300 ms lease gets more than a dozen copies through a lossy network before it is given
//!   up. An attempt cut short unanswered is retried after a short pause (a thirtieth of the
//!   validity too), with a fresh request, while the give-up instant has not passed.
//! - **Loss** is final: a refusal (LOCK_NOT_HELD: the server does not know this hold any
//!   more; FORBIDDEN: the client's key may no longer renew it, spec §7.1.10 rule 3, which
//!   no retry changes), a reply naming another fencing token (the hold the server renewed is not the one
//!   the guard was given: the token must never change under a guard), or the give-up instant.
//!   A late OK reply after any of these does not bring the hold back.
//!
//! Bounded: per hold O(1) state; the due and give-up queues are ordered sets (O(log n)).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;

use super::call::lease_validity;
use super::time::{Duration, Instant};
use super::ConfigError;

/// A hold's identity, chosen by the shell (unique among the holds it added).
pub type HoldId = u64;

/// Shortest attempt: below this a renewal could not even make a few retransmissions on a
/// loaded machine (the retransmission timer starts at hundreds of microseconds).
pub const ATTEMPT_MIN: Duration = Duration::from_millis(2);

/// Shortest pause between an unanswered attempt and the next one: a server that answers at
/// once with an error the shell counts as "no answer" (OVERLOADED) is not asked in a busy loop.
pub const RETRY_PAUSE_MIN: Duration = Duration::from_millis(1);

/// Settings of the renewal rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The clock-drift bound of the lease rule (spec §6.4), parts per million: the client's
    /// `ClientConfig::drift_bound_ppm`.
    pub drift_bound_ppm: u32,
    /// Longest attempt, however long the holds' validity: the client's request timeout.
    pub attempt_max: Duration,
}

impl Config {
    /// Refuses settings the rules cannot work with; says which field and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.drift_bound_ppm >= 1_000_000 {
            return Err(ConfigError {
                field: "drift_bound_ppm",
                rule: "must be below 1000000 (a drift of 100% leaves no validity)",
            });
        }
        if self.attempt_max < ATTEMPT_MIN {
            return Err(ConfigError {
                field: "attempt_max",
                rule: "must be at least ATTEMPT_MIN (2 ms)",
            });
        }
        Ok(())
    }
}

/// A granted hold as it enters the rules: from the OK ACQUIRE reply that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldSpec {
    /// Its resource's shard: renewals are grouped by it.
    pub shard: usize,
    /// The fencing token of the grant; every renewal must name the same one.
    pub token: u64,
    /// The send time of the copy the grant echoed (the lease rule's start).
    pub lease_start: Instant,
    /// The grant's `lease_ms`.
    pub lease_ms: u32,
    /// How long before the validity ends the hold is given up; `None`: a tenth of the
    /// validity. At most half of the validity (larger margins are cut to it).
    pub loss_margin: Option<Duration>,
}

/// What a renewal attempt of one hold came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewOutcome {
    /// An OK reply: the copy it echoed was sent at `sent_at`, and it names `lease_ms` and the
    /// hold's `token`.
    Renewed {
        sent_at: Instant,
        lease_ms: u32,
        token: u64,
    },
    /// The server does not know this hold (LOCK_NOT_HELD), or a release of it may take effect
    /// at any moment (a release in doubt, spec §7.1.5): the hold is lost at once.
    Refused,
    /// The service refused this client's key the renewal (FORBIDDEN, sealed: spec §7.1.10
    /// rule 3): the key no longer authorizes the owner id (its key file changed). Final:
    /// the same renewal cannot succeed, so the hold is lost at once rather than retried to
    /// its give-up instant.
    Forbidden,
    /// No answer that says anything about the hold by the attempt's deadline (silence,
    /// OVERLOADED, an unknown outcome, or the attempt was not sent): retried while there is
    /// time.
    NoAnswer,
}

/// Why a hold was lost.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The service answered that this owner does not hold the lock (LOCK_NOT_HELD): it
    /// expired at the server, or was released behind the guard's back (or a release of it
    /// is in doubt). Someone else may hold it now.
    Refused,
    /// A renewal reply named another fencing token than the guard's: the hold the server
    /// has is not the one the guard was given.
    TokenChanged { expected: u64, got: u64 },
    /// No renewal succeeded before the validity, less the loss margin, ran out (the service
    /// was unreachable or silent): the lock is still held for at most the margin, then it is
    /// not.
    Expired,
    /// The service refused to renew the hold for this client's key (FORBIDDEN, spec §7.1.10
    /// rule 3): the servers' key file no longer lets the key act for the owner id. The
    /// server still has the hold until its lease ends, but no renewal of it can succeed;
    /// like [`LossReason::Expired`], stop relying on the lock now.
    Forbidden,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::Refused => f.write_str(
                "the lock service answered that this owner no longer holds the lock (it \
                 expired or was released); someone else may hold it now",
            ),
            LossReason::TokenChanged { expected, got } => write!(
                f,
                "a renewal named fencing token {got} instead of {expected}: the hold is not \
                 the one this guard was given"
            ),
            LossReason::Expired => f.write_str(
                "no renewal succeeded before the lease's validity (less the loss margin) ran \
                 out: the lock service is unreachable or not answering",
            ),
            LossReason::Forbidden => f.write_str(
                "the lock service refused to renew the lock for this client's key \
                 (FORBIDDEN): the servers' key file no longer authorizes the owner id; the \
                 lock ends at its lease",
            ),
        }
    }
}

/// Holds of one shard due for renewal, all to be answered by `deadline`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewGroup {
    pub shard: usize,
    /// In the order they became due.
    pub holds: Vec<HoldId>,
    /// When the attempt must end, answered or not (see "Attempts" in the module docs).
    pub deadline: Instant,
    /// The longest a copy may wait for its answer before the next one is sent: a thirtieth
    /// of the shortest validity in the group, so that a short lease gets many copies through
    /// a lossy network before it runs out, whatever the RTT estimate says.
    pub rto_max: Duration,
}

/// What the shell must tell the hold's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A renewal succeeded: the hold is now valid until `valid_until`, and is given up at
    /// `give_up_at` unless renewed again.
    Renewed {
        id: HoldId,
        valid_until: Instant,
        give_up_at: Instant,
    },
    /// The hold is lost (final); the rules have forgotten it.
    Lost { id: HoldId, reason: LossReason },
}

/// One hold's state: O(1).
#[derive(Clone, Copy, Debug)]
struct Hold {
    shard: usize,
    token: u64,
    valid_until: Instant,
    margin: Duration,
    /// The validity the grant gave, from its send time: sets the attempt length and the
    /// retry pause.
    period_base: Duration,
    /// `Some(t)`: waiting in the due queue for `t`; `None`: an attempt is under way.
    due: Option<Instant>,
}

impl Hold {
    fn give_up_at(&self) -> Instant {
        self.valid_until - self.margin
    }
}

/// The renewal rules for every hold of one client (see the module docs).
pub struct Renewals {
    config: Config,
    holds: HashMap<HoldId, Hold>,
    /// `(due time, id)` of every hold not in an attempt.
    due: BTreeSet<(Instant, HoldId)>,
    /// The same, by shard: `(shard, due time, id)`, to find the holds of a shard that will
    /// soon be due and renew them with the ones due now (see "Batches" in the module docs).
    due_by_shard: BTreeSet<(usize, Instant, HoldId)>,
    /// `(give-up instant, id)` of every hold.
    give_up: BTreeSet<(Instant, HoldId)>,
    /// Multiset of the holds' attempt lengths: the shortest caps every group's deadline.
    attempts: BTreeMap<Duration, u32>,
    events: VecDeque<Event>,
    rng: Jitter,
}

impl Renewals {
    /// No holds yet. `seed` drives the jitter of the due times.
    ///
    /// # Panics
    /// If `config` does not validate (the shell validates its own settings first).
    pub fn new(config: Config, seed: u64) -> Renewals {
        config.validate().expect("renewal config");
        Renewals {
            config,
            holds: HashMap::new(),
            due: BTreeSet::new(),
            due_by_shard: BTreeSet::new(),
            give_up: BTreeSet::new(),
            attempts: BTreeMap::new(),
            events: VecDeque::new(),
            rng: Jitter(seed),
        }
    }

    /// Holds the rules follow.
    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// Whether `id` is followed (added, and neither removed nor lost).
    pub fn contains(&self, id: HoldId) -> bool {
        self.holds.contains_key(&id)
    }

    /// The hold's validity and give-up instant, while it is followed.
    pub fn validity(&self, id: HoldId) -> Option<(Instant, Instant)> {
        self.holds
            .get(&id)
            .map(|hold| (hold.valid_until, hold.give_up_at()))
    }

    /// A granted hold enters the rules. Returns its `(valid_until, give_up_at)`. If the
    /// give-up instant has already passed (a grant whose reply came very late), the hold is
    /// lost at the next [`Renewals::handle_timeout`].
    ///
    /// # Panics
    /// If `id` is followed already (the shell's ids are unique).
    pub fn add(&mut self, now: Instant, id: HoldId, spec: HoldSpec) -> (Instant, Instant) {
        assert!(!self.holds.contains_key(&id), "hold {id} added twice");
        let validity = lease_validity(spec.lease_ms, self.config.drift_bound_ppm);
        let mut hold = Hold {
            shard: spec.shard,
            token: spec.token,
            valid_until: spec.lease_start + validity,
            margin: loss_margin(validity, spec.loss_margin),
            period_base: validity,
            due: None,
        };
        debug_assert_eq!(
            (hold.valid_until, hold.give_up_at()),
            initial_validity(&self.config, &spec)
        );
        let due = self.next_due(now, spec.lease_start, validity);
        hold.due = Some(due);
        self.due.insert((due, id));
        self.due_by_shard.insert((hold.shard, due, id));
        self.give_up.insert((hold.give_up_at(), id));
        *self
            .attempts
            .entry(attempt_len(validity, &self.config))
            .or_default() += 1;
        self.holds.insert(id, hold);
        self.check(id);
        (hold.valid_until, hold.give_up_at())
    }

    /// The guard was released (or its owner learnt of a loss some other way): forget the
    /// hold; a later outcome for it is ignored. Returns whether it was followed.
    pub fn remove(&mut self, id: HoldId) -> bool {
        let Some(hold) = self.holds.remove(&id) else {
            return false;
        };
        if let Some(due) = hold.due {
            let removed = self.due.remove(&(due, id));
            assert!(removed, "a waiting hold is in the due queue");
            let removed = self.due_by_shard.remove(&(hold.shard, due, id));
            assert!(removed, "a waiting hold is in its shard's due queue");
        }
        let removed = self.give_up.remove(&(hold.give_up_at(), id));
        assert!(removed, "every hold is in the give-up queue");
        let len = attempt_len(hold.period_base, &self.config);
        match self.attempts.get_mut(&len) {
            Some(1) => {
                self.attempts.remove(&len);
            }
            Some(n) => *n -= 1,
            None => unreachable!("every hold's attempt length is counted"),
        }
        true
    }

    /// Gives up every hold whose give-up instant is not after `now` (lease rule: valid only
    /// while `now < valid_until`; here the margin earlier).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.give_up.first() {
            if at > now {
                break;
            }
            self.lose(id, LossReason::Expired);
        }
    }

    /// Moves hold `id`, waiting for `due`, out of the due queues into its shard's group.
    fn take_into(&mut self, groups: &mut BTreeMap<usize, RenewGroup>, due: Instant, id: HoldId) {
        let hold = self.holds.get_mut(&id).expect("a due hold is followed");
        let removed = self.due.remove(&(due, id));
        assert!(removed, "a waiting hold is in the due queue");
        let removed = self.due_by_shard.remove(&(hold.shard, due, id));
        assert!(removed, "a waiting hold is in its shard's due queue");
        hold.due = None;
        let group = groups.entry(hold.shard).or_insert_with(|| RenewGroup {
            shard: hold.shard,
            holds: Vec::new(),
            deadline: Instant::MAX,
            rto_max: Duration::from_micros(u64::MAX),
        });
        group.holds.push(id);
        group.deadline = group.deadline.min(hold.give_up_at());
        group.rto_max = group.rto_max.min(retry_pause(hold.period_base));
    }

    /// The holds due at `now`, one group per shard (in shard order), each marked as under
    /// way until its outcome comes back through [`Renewals::handle_outcome`].
    pub fn poll_renewals(&mut self, now: Instant) -> Vec<RenewGroup> {
        self.handle_timeout(now);
        let mut groups: BTreeMap<usize, RenewGroup> = BTreeMap::new();
        while let Some(&(due, id)) = self.due.first() {
            if due > now {
                break;
            }
            self.take_into(&mut groups, due, id);
        }
        // Batches: with the holds due now go the holds of the same shards that would be due
        // within half a renewal period (a sixth of their validity), so that one datagram
        // renews them all (spec §4.11) instead of one each as their jittered due times come.
        // Renewed together, they stay together: they are due again at about the same time.
        let shards: Vec<usize> = groups.keys().copied().collect();
        for shard in shards {
            let soon: Vec<(Instant, HoldId)> = self
                .due_by_shard
                .range((shard, Instant::from_micros(0), 0)..(shard + 1, Instant::from_micros(0), 0))
                .map(|&(_, due, id)| (due, id))
                .take_while(|&(due, id)| {
                    let hold = &self.holds[&id];
                    due <= now + Duration::from_micros(hold.period_base.as_micros() / 6)
                })
                .collect();
            for (due, id) in soon {
                self.take_into(&mut groups, due, id);
            }
        }
        // "Attempts" in the module docs: until the group's earliest give-up, unless the
        // renewer is needed sooner (another group now, or another hold's due time), but not
        // shorter than a tenth of the shortest validity, and never longer than attempt_max.
        let floor = now + self.attempts.keys().next().copied().unwrap_or(ATTEMPT_MIN);
        let needed = match groups.len() {
            0 | 1 => self.due.first().map_or(Instant::MAX, |&(t, _)| t),
            _ => now,
        };
        let end = needed.max(floor).min(now + self.config.attempt_max);
        let groups: Vec<RenewGroup> = groups
            .into_values()
            .map(|mut group| {
                group.deadline = group.deadline.min(end);
                group
            })
            .collect();
        for group in &groups {
            assert!(!group.holds.is_empty());
            assert!(
                group.deadline > now,
                "a due hold past its give-up was lost first"
            );
        }
        groups
    }

    /// What the attempt to renew `id` came to, learnt at `now`. An outcome for a hold that is
    /// not followed (removed or lost meanwhile) is ignored.
    pub fn handle_outcome(&mut self, now: Instant, id: HoldId, outcome: RenewOutcome) {
        let Some(hold) = self.holds.get(&id).copied() else {
            return;
        };
        if let Some(due) = hold.due {
            // An outcome for a hold that is not under way: a shell bug, but harmless to
            // ignore (the hold keeps its schedule).
            debug_assert!(false, "outcome for hold {id}, which waits for {due:?}");
            return;
        }
        if now >= hold.give_up_at() {
            // Loss is final, even if this very reply would have extended the hold: its owner
            // may already have seen it lost.
            self.lose(id, LossReason::Expired);
            return;
        }
        match outcome {
            RenewOutcome::Refused => self.lose(id, LossReason::Refused),
            RenewOutcome::Forbidden => self.lose(id, LossReason::Forbidden),
            RenewOutcome::Renewed { token, .. } if token != hold.token => self.lose(
                id,
                LossReason::TokenChanged {
                    expected: hold.token,
                    got: token,
                },
            ),
            RenewOutcome::Renewed {
                sent_at, lease_ms, ..
            } => {
                assert!(sent_at <= now, "a reply answers a copy sent before it");
                let validity = lease_validity(lease_ms, self.config.drift_bound_ppm);
                let valid_until = hold.valid_until.max(sent_at + validity);
                self.give_up.remove(&(hold.give_up_at(), id));
                let due = self.next_due(now, sent_at, validity);
                let hold = self.holds.get_mut(&id).expect("followed");
                assert!(valid_until >= hold.valid_until, "validity never moves back");
                hold.valid_until = valid_until;
                hold.due = Some(due);
                // The due time follows this lease; the attempt length and the retry pause
                // stay those of the grant (`period_base`, counted in `attempts`).
                let give_up_at = hold.give_up_at();
                let shard = hold.shard;
                self.give_up.insert((give_up_at, id));
                self.due.insert((due, id));
                self.due_by_shard.insert((shard, due, id));
                self.events.push_back(Event::Renewed {
                    id,
                    valid_until,
                    give_up_at,
                });
            }
            RenewOutcome::NoAnswer => {
                let due = now + retry_pause(hold.period_base);
                self.holds.get_mut(&id).expect("followed").due = Some(due);
                self.due.insert((due, id));
                self.due_by_shard.insert((hold.shard, due, id));
            }
        }
        self.check(id);
    }

    /// The next thing the owners must hear of, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Renewals::poll_renewals`] next: the earliest due renewal or give-up
    /// instant; `None` with no holds (wait for one to be added).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.due.first().map(|&(t, _)| t);
        let give_up = self.give_up.first().map(|&(t, _)| t);
        match (due, give_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A third of `validity` after `start`, up to a fifth of that earlier (jitter), and not
    /// before `now`.
    fn next_due(&mut self, now: Instant, start: Instant, validity: Duration) -> Instant {
        let third = validity.as_micros() / 3;
        let jitter = self.rng.below(third / 5 + 1);
        (start + Duration::from_micros(third - jitter)).max(now)
    }

    fn lose(&mut self, id: HoldId, reason: LossReason) {
        let removed = self.remove(id);
        assert!(removed, "only a followed hold is lost");
        self.events.push_back(Event::Lost { id, reason });
    }

    /// The queues agree with the hold (TigerBeetle-style pairing of the two records).
    fn check(&self, id: HoldId) {
        if let Some(hold) = self.holds.get(&id) {
            assert!(self.give_up.contains(&(hold.give_up_at(), id)));
            if let Some(due) = hold.due {
                assert!(self.due.contains(&(due, id)));
            }
        }
        debug_assert_eq!(self.give_up.len(), self.holds.len());
        debug_assert!(self.due.len() <= self.holds.len());
        debug_assert_eq!(self.due.len(), self.due_by_shard.len());
    }
}

/// The `(valid_until, give_up_at)` a hold gets from its grant: what [`Renewals::add`]
/// returns, for a shell that must know it before the hold reaches the rules.
pub fn initial_validity(config: &Config, spec: &HoldSpec) -> (Instant, Instant) {
    let validity = lease_validity(spec.lease_ms, config.drift_bound_ppm);
    let valid_until = spec.lease_start + validity;
    (
        valid_until,
        valid_until - loss_margin(validity, spec.loss_margin),
    )
}

/// The margin named (or a tenth of the validity), at most half of the validity.
fn loss_margin(validity: Duration, named: Option<Duration>) -> Duration {
    let half = Duration::from_micros(validity.as_micros() / 2);
    named
        .unwrap_or(Duration::from_micros(validity.as_micros() / 10))
        .min(half)
}

/// The pause after an unanswered attempt, and the longest wait between two copies of a
/// renewal: a thirtieth of the validity, at least [`RETRY_PAUSE_MIN`].
fn retry_pause(validity: Duration) -> Duration {
    Duration::from_micros(validity.as_micros() / 30).max(RETRY_PAUSE_MIN)
}

/// How long one attempt for a hold of this validity may take: a tenth of it, within
/// `[ATTEMPT_MIN, attempt_max]`.
fn attempt_len(validity: Duration, config: &Config) -> Duration {
    Duration::from_micros(validity.as_micros() / 10)
        .max(ATTEMPT_MIN)
        .min(config.attempt_max)
}

#[cfg(test)]
mod tests;

/// The jitter's generator: SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
/// number generators", OOPSLA 2014), seeded by the shell. Spreading renewals needs no more than
/// this, and the client-only build then needs no `rand` (issue 11 item 4).
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0); the modulo bias is below 2^-40 for the bounds
    /// used here (a fifth of a third of a lease, in µs).
    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next() % bound
    }
}
