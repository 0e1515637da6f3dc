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
use super::{std_duration, Client};
use crate::core::renewal::{self, Event, HoldId, HoldSpec, RenewGroup, RenewOutcome, Renewals};
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

fn run(guards: &Weak<Guards>, inbox: &Receiver<Command>, mut rules: Renewals) {
    let mut tracked: HashMap<HoldId, Tracked> = HashMap::new();
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
            match command {
                Command::Add {
                    id,
                    spec,
                    tracked: t,
                } => {
                    rules.add(client.now(), id, spec);
                    tracked.insert(id, t);
                }
                Command::Remove(id) => {
                    rules.remove(id);
                    tracked.remove(&id);
                }
            }
        }
        for group in rules.poll_renewals(client.now()) {
            let holds: Vec<&Tracked> = group.holds.iter().map(|id| &tracked[id]).collect();
            let outcomes = renew_group(client, &guards.keepalive_usable, &group, &holds);
            assert_eq!(outcomes.len(), group.holds.len(), "one outcome per hold");
            let now = client.now();
            for (&id, outcome) in group.holds.iter().zip(outcomes) {
                rules.handle_outcome(now, id, outcome);
            }
        }
        rules.handle_timeout(client.now());
        while let Some(event) = rules.poll_event() {
            match event {
                Event::Renewed {
                    id,
                    valid_until,
                    give_up_at,
                } => {
                    let state = &tracked[&id].state;
                    let mirrored = state.renewed(
                        client.boot_instant(valid_until),
                        client.boot_instant(give_up_at),
                    );
                    if !mirrored {
                        // Released, or seen lost by its own give-up check first: forget it.
                        rules.remove(id);
                        tracked.remove(&id);
                    }
                }
                Event::Lost { id, reason } => {
                    if let Some(t) = tracked.remove(&id) {
                        log::info!("lock {:?} (owner {:?}) lost: {reason}", t.resource, t.owner);
                        t.state.lose(reason);
                    }
                }
            }
        }
        sleep = rules
            .poll_timeout()
            .map(|t| std_duration(t.saturating_since(client.now())));
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
        match client.keepalive_answer(shard, &tokens, None, timeout_ms, Some(group.rto_max)) {
            Ok(answer) => outcomes.extend(chunk.iter().enumerate().map(|(i, hold)| {
                if answer.bitmap >> i & 1 == 1 {
                    RenewOutcome::Renewed {
                        sent_at: answer.lease_start,
                        lease_ms: answer.lease_ms,
                        token: hold.token,
                    }
                } else {
                    RenewOutcome::Refused
                }
            })),
            Err(LockError::InvalidArgument(why)) if outcomes.is_empty() => {
                keepalive_usable.store(false, Ordering::Relaxed);
                log::warn!(
                    "KEEPALIVE refused ({why}): this client's shard count ({}) is not the \
                     cluster's; renewing one RENEW per lock from now on (set \
                     ClientConfig::shards to the cluster's count to renew in batches)",
                    client.config.shards
                );
                return None;
            }
            Err(LockError::InternalError(why)) if outcomes.is_empty() => {
                log::debug!("KEEPALIVE in shard {shard} failed ({why}); this round by RENEW");
                return None;
            }
            Err(LockError::Unavailable) => {
                silent = true;
                outcomes.extend(chunk.iter().map(|_| RenewOutcome::NoAnswer));
            }
            Err(e) => {
                log::debug!("KEEPALIVE in shard {shard}: {e}; retried shortly");
                outcomes.extend(chunk.iter().map(|_| RenewOutcome::NoAnswer));
            }
        }
    }
    Some(outcomes)
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
            let body = RequestBody::Renew {
                resource: hold.resource.as_bytes(),
                client: hold.owner.as_bytes(),
                ttl_ms: hold.ttl_ms.unwrap_or(0),
            };
            // At least 1 ms: the call measures whole milliseconds from its own start.
            let timeout_ms = deadline.saturating_since(now).as_millis().max(1);
            match client.call_capped(body, timeout_ms, Some(group.rto_max)) {
                Ok(answer) => RenewOutcome::Renewed {
                    sent_at: answer.lease_start,
                    lease_ms: answer.reply.lease_ms,
                    token: answer.reply.fencing_token,
                },
                Err(
                    LockError::LockNotHeld
                    | LockError::ReleaseInDoubt
                    | LockError::ResourceDoesNotExist,
                ) => RenewOutcome::Refused,
                Err(LockError::Unavailable) => {
                    silent = true;
                    RenewOutcome::NoAnswer
                }
                Err(e) => {
                    log::debug!(
                        "renewal of {:?} in shard {shard}: {e}; retried shortly",
                        hold.resource
                    );
                    RenewOutcome::NoAnswer
                }
            }
        })
        .collect()
}
