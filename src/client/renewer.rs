//! The guards' renewer: ONE background thread per [`Client`] that has guards, the thin IO
//! shell around the renewal rules ([`crate::core::renewal`]).
//!
//! It sleeps in `recv_timeout` on its inbox until the rules' next timer or a guard coming or
//! going (no polling); then it hands the rules the time, renews the due holds one shard's
//! group at a time through [`renew_group`], gives the rules each outcome, and mirrors their
//! events into the guards' shared state (a new validity, or a loss that wakes the waiters).
//! It holds only a `Weak` of the guards' shared state between rounds, and ends when the last
//! `Arc` (the `Client`'s, or a guard's) is gone: that drops the inbox's sender.
//!
//! Bounded: one entry per live guard here and in the rules; the inbox is unbounded in type
//! but holds at most two commands per guard (its add and its remove).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::time::Duration as StdDuration;

use udplock_protocol::{RequestBody, KEEPALIVE_TOKENS_MAX};

use super::guard::{Guards, HoldState};
use super::keepalive::KeepaliveAnswer;
use super::operation::Answer;
use super::{std_duration, Client};
use crate::clock::BootInstant;
use crate::core::renewal::{self, Event, HoldId, HoldSpec, RenewGroup, RenewOutcome, Renewals};
use crate::core::time::Instant;
use crate::error::LockError;

/// What a guard tells the renewer.
pub(super) enum Command {
    /// A new hold to keep renewed.
    Add {
        id: HoldId,
        spec: HoldSpec,
        tracked: Tracked,
    },
    /// The guard is being released: stop renewing it.
    Remove(HoldId),
}

/// What the renewer knows of a hold beyond the rules: what to send, and whom to tell.
pub(super) struct Tracked {
    /// The grant's fencing token: what a KEEPALIVE names the hold by.
    pub(super) token: u64,
    pub(super) resource: String,
    pub(super) owner: String,
    /// The RENEW's `ttl_ms` (`None`: 0, the hold's current TTL).
    pub(super) ttl_ms: Option<u32>,
    pub(super) state: Arc<HoldState>,
}

/// Starts the thread. Returns its inbox and a `Weak` that dies with it.
pub(super) fn start(
    guards: Weak<Guards>,
    config: renewal::Config,
) -> io::Result<(Sender<Command>, Weak<()>)> {
    let (sender, inbox) = mpsc::channel();
    let alive = Arc::new(());
    let alive_weak = Arc::downgrade(&alive);
    let seed = super::lanes::new_session_id();
    std::thread::Builder::new()
        .name("udplock-renewer".into())
        .spawn(move || {
            let _alive = alive;
            run(&guards, &inbox, Renewals::new(config, seed));
        })?;
    Ok((sender, alive_weak))
}

fn run(guards: &Weak<Guards>, inbox: &Receiver<Command>, rules: Renewals) {
    let mut shell = Shell::new(rules);
    let mut sleep: Option<StdDuration> = None;
    loop {
        let first = match sleep {
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => inbox.recv_timeout(d),
        };
        let first = match first {
            Ok(command) => Some(command),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(guards) = guards.upgrade() else {
            return;
        };
        let client = &guards.client;
        for command in first.into_iter().chain(inbox.try_iter()) {
            shell.command(client.now(), command);
        }
        for group in shell.rules.poll_renewals(client.now()) {
            let holds = shell.holds(&group);
            let outcomes = renew_group(client, &guards.keepalive_usable, &group, &holds);
            shell.outcomes(client.now(), &group, outcomes);
        }
        let next = shell.end_round(client.now(), |t| client.boot_instant(t));
        sleep = next.map(|t| std_duration(t.saturating_since(client.now())));
    }
}

/// The renewer's state between the inbox and the rules, and its steps: the blocking renewer
/// thread and the async renewer task (`async_guard.rs`) are loops around these.
pub(super) struct Shell {
    pub(super) rules: Renewals,
    tracked: HashMap<HoldId, Tracked>,
}

impl Shell {
    pub(super) fn new(rules: Renewals) -> Shell {
        Shell {
            rules,
            tracked: HashMap::new(),
        }
    }

    /// A guard came or went.
    pub(super) fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Add { id, spec, tracked } => {
                self.rules.add(now, id, spec);
                self.tracked.insert(id, tracked);
            }
            Command::Remove(id) => {
                self.rules.remove(id);
                self.tracked.remove(&id);
            }
        }
    }

    /// The holds of a due group, in its order.
    pub(super) fn holds(&self, group: &RenewGroup) -> Vec<&Tracked> {
        group.holds.iter().map(|id| &self.tracked[id]).collect()
    }

    /// The outcomes of a group's renewal, one per hold in order, to the rules.
    pub(super) fn outcomes(
        &mut self,
        now: Instant,
        group: &RenewGroup,
        outcomes: Vec<RenewOutcome>,
    ) {
        assert_eq!(outcomes.len(), group.holds.len(), "one outcome per hold");
        for (&id, outcome) in group.holds.iter().zip(outcomes) {
            self.rules.handle_outcome(now, id, outcome);
        }
    }

    /// After a round: the rules' timers, then their events mirrored into the guards' states
    /// (a new validity, or a loss that wakes the waiters). Returns the rules' next timer.
    pub(super) fn end_round(
        &mut self,
        now: Instant,
        boot_instant: impl Fn(Instant) -> BootInstant,
    ) -> Option<Instant> {
        self.rules.handle_timeout(now);
        while let Some(event) = self.rules.poll_event() {
            match event {
                Event::Renewed {
                    id,
                    valid_until,
                    give_up_at,
                } => {
                    let state = &self.tracked[&id].state;
                    if !state.renewed(boot_instant(valid_until), boot_instant(give_up_at)) {
                        // Released, or seen lost by its own give-up check first: forget it.
                        self.rules.remove(id);
                        self.tracked.remove(&id);
                    }
                }
                Event::Lost { id, reason } => {
                    if let Some(t) = self.tracked.remove(&id) {
                        log::info!("lock {:?} (owner {:?}) lost: {reason}", t.resource, t.owner);
                        t.state.lose(reason);
                    }
                }
            }
        }
        self.rules.poll_timeout()
    }
}

/// Renews the holds of one shard that are due, by the group's deadline, each copy waiting at
/// most the group's `rto_max` for its answer; one outcome per hold, in order. The one place
/// that talks to the service about renewals: one KEEPALIVE per 64 holds of the shard (spec
/// §4.11), each hold named by its token and keeping its own TTL; a hold whose bit comes back
/// clear is refused (the server no longer has it under that token: lost at once). Where
/// KEEPALIVE cannot serve — a node refused it as INVALID_ARGUMENT (this client's `shards` is
/// not the cluster's: set it, and KEEPALIVE works), or answered that it cannot (an older node)
/// — the round goes by RENEW, one per hold ([`renew_one_by_one`]), and after an
/// INVALID_ARGUMENT every later round too.
pub(super) fn renew_group(
    client: &Client,
    keepalive_usable: &AtomicBool,
    group: &RenewGroup,
    holds: &[&Tracked],
) -> Vec<RenewOutcome> {
    if keepalive_usable.load(Ordering::Relaxed) {
        if let Some(outcomes) = renew_by_keepalive(client, keepalive_usable, group, holds) {
            return outcomes;
        }
    }
    renew_one_by_one(client, group, holds)
}

/// KEEPALIVEs for the group, 64 holds each; `None` if KEEPALIVE cannot serve this round
/// (the first one was refused or not understood: nothing was renewed by it).
fn renew_by_keepalive(
    client: &Client,
    keepalive_usable: &AtomicBool,
    group: &RenewGroup,
    holds: &[&Tracked],
) -> Option<Vec<RenewOutcome>> {
    let deadline = group.deadline;
    let mut outcomes = Vec::with_capacity(holds.len());
    let mut silent = false;
    for chunk in holds.chunks(KEEPALIVE_TOKENS_MAX) {
        let now = client.now();
        if silent || now >= deadline {
            outcomes.extend(chunk.iter().map(|_| RenewOutcome::NoAnswer));
            continue;
        }
        let tokens: Vec<u64> = chunk.iter().map(|hold| hold.token).collect();
        let timeout_ms = deadline.saturating_since(now).as_millis().max(1);
        let shard = group.shard as u32;
        let answer = client.keepalive_answer(shard, &tokens, None, timeout_ms, Some(group.rto_max));
        let first = outcomes.is_empty();
        match keepalive_outcomes(
            answer,
            chunk,
            first,
            group.shard,
            keepalive_usable,
            client.config.shards,
        ) {
            KeepaliveRead::Outcomes(read, shard_silent) => {
                outcomes.extend(read);
                silent = shard_silent;
            }
            KeepaliveRead::Fallback => return None,
        }
    }
    Some(outcomes)
}

/// What one KEEPALIVE's answer or error says of the holds it listed ([`keepalive_outcomes`]).
pub(super) enum KeepaliveRead {
    /// One outcome per listed hold, and whether the shard went silent (the round sends it
    /// nothing more).
    Outcomes(Vec<RenewOutcome>, bool),
    /// KEEPALIVE cannot serve this round: it goes by RENEW.
    Fallback,
}

/// The meaning of one KEEPALIVE's answer (bit `i` for the `i`-th hold of `chunk`, spec
/// §4.11) or error, for the blocking renewer and the async one alike. `first`: no KEEPALIVE
/// of the round was answered yet, so an INVALID_ARGUMENT (this client's shard count is not
/// the cluster's: KEEPALIVE is off for good, `keepalive_usable`) or an INTERNAL_ERROR (an
/// older node, or a reply that disagrees with itself) sends the round by RENEW; so does a
/// FORBIDDEN at any point of the round (it does not say which hold the key may not renew).
pub(super) fn keepalive_outcomes(
    answer: Result<KeepaliveAnswer, LockError>,
    chunk: &[&Tracked],
    first: bool,
    shard: usize,
    keepalive_usable: &AtomicBool,
    shards: u32,
) -> KeepaliveRead {
    let none = || chunk.iter().map(|_| RenewOutcome::NoAnswer).collect();
    match answer {
        Ok(answer) => KeepaliveRead::Outcomes(
            chunk
                .iter()
                .enumerate()
                .map(|(i, hold)| {
                    if answer.bitmap >> i & 1 == 1 {
                        RenewOutcome::Renewed {
                            sent_at: answer.lease_start,
                            lease_ms: answer.lease_ms,
                            token: hold.token,
                        }
                    } else {
                        RenewOutcome::Refused
                    }
                })
                .collect(),
            false,
        ),
        Err(LockError::InvalidArgument(why)) if first => {
            keepalive_usable.store(false, Ordering::Relaxed);
            log::warn!(
                "KEEPALIVE refused ({why}): this client's shard count ({shards}) is not the \
                 cluster's; renewing one RENEW per lock from now on (set \
                 ClientConfig::shards to the cluster's count to renew in batches)"
            );
            KeepaliveRead::Fallback
        }
        Err(LockError::InternalError(why)) if first => {
            log::debug!("KEEPALIVE in shard {shard} failed ({why}); this round by RENEW");
            KeepaliveRead::Fallback
        }
        // One listed hold is not the key's to renew any more, and FORBIDDEN renewed none
        // (spec §7.2.6): which one, only a RENEW per hold tells (each FORBIDDEN one is then
        // lost, the others renewed). This round by RENEW, the next by KEEPALIVE again.
        Err(LockError::Forbidden { .. }) => {
            log::debug!("KEEPALIVE in shard {shard} forbidden; this round by RENEW");
            KeepaliveRead::Fallback
        }
        Err(LockError::Unavailable) => KeepaliveRead::Outcomes(none(), true),
        Err(e) => {
            log::debug!("KEEPALIVE in shard {shard}: {e}; retried shortly");
            KeepaliveRead::Outcomes(none(), false)
        }
    }
}

/// One RENEW per hold, in turn (each with the hold's own resource and owner). Once one RENEW
/// of the group goes unanswered the shard is taken as unreachable for this round: the rest
/// are not sent and count as unanswered (the rules retry them shortly).
fn renew_one_by_one(client: &Client, group: &RenewGroup, holds: &[&Tracked]) -> Vec<RenewOutcome> {
    let (shard, deadline) = (group.shard, group.deadline);
    let mut silent = false;
    holds
        .iter()
        .map(|hold| {
            let now = client.now();
            if silent || now >= deadline {
                return RenewOutcome::NoAnswer;
            }
            // At least 1 ms: the call measures whole milliseconds from its own start.
            let timeout_ms = deadline.saturating_since(now).as_millis().max(1);
            let answer = client.call_capped(renew_body(hold), timeout_ms, Some(group.rto_max));
            let (outcome, shard_silent) = renew_outcome(answer, hold, shard);
            silent = shard_silent;
            outcome
        })
        .collect()
}

/// The RENEW of one hold (by its resource and owner, for its own TTL).
pub(super) fn renew_body(hold: &Tracked) -> RequestBody<'_> {
    RequestBody::Renew {
        resource: hold.resource.as_bytes(),
        client: hold.owner.as_bytes(),
        ttl_ms: hold.ttl_ms.unwrap_or(0),
    }
}

/// The meaning of one RENEW's answer or error for its hold, and whether the shard went
/// silent (the round sends it nothing more): for the blocking renewer and the async one.
pub(super) fn renew_outcome(
    answer: Result<Answer, LockError>,
    hold: &Tracked,
    shard: usize,
) -> (RenewOutcome, bool) {
    match answer {
        Ok(answer) => (
            RenewOutcome::Renewed {
                sent_at: answer.lease_start,
                lease_ms: answer.reply.lease_ms,
                token: answer.reply.fencing_token,
            },
            false,
        ),
        Err(
            LockError::LockNotHeld | LockError::ReleaseInDoubt | LockError::ResourceDoesNotExist,
        ) => (RenewOutcome::Refused, false),
        // Sealed and final (spec §7.1.10 rule 3): retrying cannot succeed. (An unsealed
        // UNAUTHENTICATED never ends a RENEW, §7.1.10 rule 2: the call runs to its deadline,
        // Unavailable below, and the hold is given up at its give-up instant.)
        Err(LockError::Forbidden { .. }) => (RenewOutcome::Forbidden, false),
        Err(LockError::Unavailable) => (RenewOutcome::NoAnswer, true),
        Err(e) => {
            log::debug!(
                "renewal of {:?} in shard {shard}: {e}; retried shortly",
                hold.resource
            );
            (RenewOutcome::NoAnswer, false)
        }
    }
}
