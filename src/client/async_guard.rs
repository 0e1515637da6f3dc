//! Async lock guards (feature `tokio`): [`AsyncClient::lock`] takes a lock and returns an
//! [`AsyncLockGuard`] that keeps it renewed by a task, says at once when it is lost, and
//! releases it when dropped.
//!
//! The rules are the blocking guards' own (`guard.rs`, `renewer.rs`), shared, not copied:
//! the options and their checks ([`LockOptions`]), the owners (a unique owner id per guard
//! by default, named owners counted per client, re-entry only where both guards ask for it:
//! `guard::Owners`), the ACQUIRE a guard sends and the re-entry check of its answer, the
//! hold's state and its give-up check against the clock (`guard::HoldState`), the renewal
//! rules ([`crate::core::renewal::Renewals`]) with the renewer's steps around them
//! (`renewer::Shell`), and the reading of a KEEPALIVE's or a RENEW's answer into renewal
//! outcomes (`renewer::keepalive_outcomes`, `renewer::renew_outcome`). What is here is the
//! tokio shell:
//!
//! - ONE renewer task per [`AsyncClient`] (and its clones), spawned with the first guard. It
//!   sleeps with `tokio::time::sleep_until` until the rules' next timer or a guard coming or
//!   going (a tokio mpsc channel), renews a shard's due holds by KEEPALIVE (spec §4.11; RENEW
//!   per hold where a node refuses KEEPALIVE as INVALID_ARGUMENT), and ends once the client
//!   and all its guards are dropped (it holds only a `Weak` between rounds).
//! - Dropping a guard releases the lock from a task spawned on the current runtime. With no
//!   runtime (the guard is dropped outside one, or while the runtime shuts down) nothing is
//!   sent: the drop is logged, and the lock expires at the server after its TTL.
//! - Dropping a waiting [`AsyncClient::lock`] future withdraws the wait (CANCEL_WAIT, spec
//!   §4.12; the async client's acquire does it). A [`AsyncClient::try_lock`] future dropped
//!   before its answer leaves a grant it may have got to expire with its lease.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration as StdDuration;

use tokio::sync::mpsc;
use udplock_protocol::KEEPALIVE_TOKENS_MAX;

use super::async_client::Inner;
use super::guard::{
    acquire_body, check_reentry, granted, renewal_config, HoldState, LockOptions, LossReason,
    Owner, Owners,
};
use super::keepalive::{check_keepalive, keepalive_body};
use super::renewer::{
    keepalive_outcomes, renew_body, renew_outcome, Command, KeepaliveRead, Shell, Tracked,
};
use super::{boot_instant_of, lock, std_duration, AsyncClient};
use crate::clock::BootInstant;
use crate::core::renewal::{HoldId, HoldSpec, RenewGroup, RenewOutcome, Renewals};
use crate::error::LockError;

impl AsyncClient {
    /// Takes the lock on `resource` and returns a guard that keeps it (see the module docs
    /// of `async_guard`): waits up to [`LockOptions::wait`] in the server's FIFO queue; the
    /// same options and owner rules as [`Client::lock`](super::Client::lock). Dropping the
    /// future while it waits withdraws the wait; cancel it with `tokio::time::timeout`.
    ///
    /// ```no_run
    /// # async fn f(client: udplock::client::AsyncClient) -> Result<(), udplock::LockError> {
    /// use udplock::client::LockOptions;
    /// let guard = client.lock("orders/42", &LockOptions::new()).await?;
    /// // ... fence writes with guard.fencing_token(), while !guard.is_lost() ...
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<AsyncLockGuard, LockError> {
        self.async_guards()
            .lock(resource, options, options.wait)
            .await
    }

    /// [`AsyncClient::lock`] without waiting: [`LockError::LockAcquisitionTimeout`] at once
    /// if another owner holds the lock.
    pub async fn try_lock(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<AsyncLockGuard, LockError> {
        self.async_guards()
            .lock(resource, options, StdDuration::ZERO)
            .await
    }

    fn async_guards(&self) -> &Arc<AsyncGuards> {
        self.guards
            .get_or_init(|| Arc::new(AsyncGuards::new(Arc::clone(&self.inner))))
    }

    /// A `Weak` that lives while this client's guards' renewer task runs (tests).
    #[doc(hidden)]
    pub fn guards_renewer(&self) -> Weak<()> {
        match self.guards.get() {
            Some(guards) => lock(&guards.renewer_alive).clone(),
            None => Weak::new(),
        }
    }
}

/// What all async guards of one [`AsyncClient`] share: the client, the renewer task's inbox,
/// the owners.
pub(crate) struct AsyncGuards {
    inner: Arc<Inner>,
    /// The renewer's inbox, once the task runs. The task holds a `Weak<AsyncGuards>`:
    /// dropping the last `Arc` drops this sender and the task ends.
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    owners: Owners,
    /// The part of generated owner ids after [`ClientConfig::owner_prefix`], in the blocking
    /// client's session id's place (the async client has no session of its own).
    ///
    /// [`ClientConfig::owner_prefix`]: super::ClientConfig::owner_prefix
    session_hex: u64,
    /// Dies with the renewer task.
    renewer_alive: Mutex<Weak<()>>,
    /// As the blocking guards' (`Guards::keepalive_usable`).
    keepalive_usable: AtomicBool,
}

/// Gives a named owner's entry back if the `lock` future ends before its guard exists.
struct OwnerTaken<'a> {
    owners: &'a Owners,
    owner: &'a Owner,
    resource: &'a str,
    armed: bool,
}

impl Drop for OwnerTaken<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.owners.give_back_if_named(self.owner, self.resource);
        }
    }
}

impl AsyncGuards {
    fn new(inner: Arc<Inner>) -> AsyncGuards {
        AsyncGuards {
            inner,
            commands: Mutex::new(None),
            owners: Owners::default(),
            session_hex: super::lanes::new_session_id(),
            renewer_alive: Mutex::new(Weak::new()),
            keepalive_usable: AtomicBool::new(true),
        }
    }

    fn boot_instant(&self, t: crate::core::time::Instant) -> BootInstant {
        boot_instant_of(self.inner.epoch, t)
    }

    async fn lock(
        self: &Arc<Self>,
        resource: &str,
        options: &LockOptions,
        wait: StdDuration,
    ) -> Result<AsyncLockGuard, LockError> {
        let owner = self.owners.take(
            &self.inner.config.owner_prefix,
            self.session_hex,
            resource,
            options,
        )?;
        let mut taken = OwnerTaken {
            owners: &self.owners,
            owner: &owner,
            resource,
            armed: true,
        };
        let (body, wait_ms) = acquire_body(resource, &owner.owner, options, wait);
        let timeout_ms = wait_ms + self.inner.config.grace_ms;
        let answer = self.inner.call_capped(body, timeout_ms, None).await?;
        if let Err(e) = check_reentry(options, resource, &owner.owner, answer.reply.hold_count) {
            let _ = self.inner.release(resource, &owner.owner).await;
            return Err(e);
        }
        // From here on no await: the guard exists before the future can be dropped.
        let (spec, valid_until, give_up_at) =
            granted(&self.inner.config, resource, options, &answer);
        let state = Arc::new(HoldState::new(
            self.boot_instant(valid_until),
            self.boot_instant(give_up_at),
        ));
        let tracked = Tracked {
            token: spec.token,
            resource: resource.to_owned(),
            owner: owner.owner.clone(),
            ttl_ms: options.ttl_ms(),
            state: Arc::clone(&state),
        };
        self.register(owner.id, spec, tracked);
        taken.armed = false;
        log::trace!(
            "async guard {}: {resource:?} held by {:?}, token {}",
            owner.id,
            owner.owner,
            spec.token
        );
        Ok(AsyncLockGuard {
            guards: Arc::clone(self),
            id: owner.id,
            resource: resource.to_owned(),
            owner: owner.owner.clone(),
            token: spec.token,
            state,
            named: owner.named,
            finished: false,
        })
    }

    /// Hands the hold to the renewer task, spawning it with the first guard (or again, if it
    /// died: its guards are then reported lost by their own give-up check).
    fn register(self: &Arc<Self>, id: HoldId, spec: HoldSpec, tracked: Tracked) {
        let command = Command::Add { id, spec, tracked };
        let mut commands = lock(&self.commands);
        let command = match commands.as_ref() {
            None => command,
            Some(sender) => match sender.send(command) {
                Ok(()) => return,
                Err(mpsc::error::SendError(command)) => {
                    log::error!("the async guards' renewer task died; starting a new one");
                    command
                }
            },
        };
        let (sender, inbox) = mpsc::unbounded_channel();
        let alive = Arc::new(());
        *lock(&self.renewer_alive) = Arc::downgrade(&alive);
        let rules = Renewals::new(
            renewal_config(&self.inner.config),
            super::lanes::new_session_id(),
        );
        tokio::spawn(run(Arc::downgrade(self), inbox, rules, alive));
        sender
            .send(command)
            .expect("the renewer runs until its sender is dropped");
        *commands = Some(sender);
    }

    fn unregister(&self, id: HoldId) {
        if let Some(sender) = lock(&self.commands).as_ref() {
            let _ = sender.send(Command::Remove(id));
        }
    }
}

/// The renewer task: the blocking renewer's loop (`renewer::run`) on tokio.
async fn run(
    guards: Weak<AsyncGuards>,
    mut inbox: mpsc::UnboundedReceiver<Command>,
    rules: Renewals,
    _alive: Arc<()>,
) {
    let mut shell = Shell::new(rules);
    let mut wake: Option<tokio::time::Instant> = None;
    loop {
        let first = match wake {
            None => match inbox.recv().await {
                Some(command) => Some(command),
                None => return,
            },
            Some(at) => tokio::select! {
                command = inbox.recv() => match command {
                    Some(command) => Some(command),
                    None => return,
                },
                () = tokio::time::sleep_until(at) => None,
            },
        };
        let Some(guards) = guards.upgrade() else {
            return;
        };
        let inner = &guards.inner;
        if let Some(command) = first {
            shell.command(inner.now(), command);
        }
        while let Ok(command) = inbox.try_recv() {
            shell.command(inner.now(), command);
        }
        for group in shell.rules.poll_renewals(inner.now()) {
            let outcomes = {
                let holds = shell.holds(&group);
                renew_group(&guards, &group, &holds).await
            };
            shell.outcomes(inner.now(), &group, outcomes);
        }
        let next = shell.end_round(inner.now(), |t| guards.boot_instant(t));
        wake = next
            .map(|t| tokio::time::Instant::now() + std_duration(t.saturating_since(inner.now())));
    }
}

/// The blocking `renewer::renew_group` on the async client: one KEEPALIVE per 64 due holds
/// of the shard, RENEW per hold where KEEPALIVE cannot serve; one outcome per hold, in order.
async fn renew_group(
    guards: &AsyncGuards,
    group: &RenewGroup,
    holds: &[&Tracked],
) -> Vec<RenewOutcome> {
    if guards.keepalive_usable.load(Ordering::Relaxed) {
        if let Some(outcomes) = renew_by_keepalive(guards, group, holds).await {
            return outcomes;
        }
    }
    renew_one_by_one(&guards.inner, group, holds).await
}

async fn renew_by_keepalive(
    guards: &AsyncGuards,
    group: &RenewGroup,
    holds: &[&Tracked],
) -> Option<Vec<RenewOutcome>> {
    let inner = &guards.inner;
    let mut outcomes = Vec::with_capacity(holds.len());
    let mut silent = false;
    for chunk in holds.chunks(KEEPALIVE_TOKENS_MAX) {
        let now = inner.now();
        if silent || now >= group.deadline {
            outcomes.extend(chunk.iter().map(|_| RenewOutcome::NoAnswer));
            continue;
        }
        let tokens: Vec<u64> = chunk.iter().map(|hold| hold.token).collect();
        let timeout_ms = group.deadline.saturating_since(now).as_millis().max(1);
        let mut buf = [0u8; 8 * KEEPALIVE_TOKENS_MAX];
        let answer =
            match keepalive_body(&inner.config, group.shard as u32, &tokens, None, &mut buf) {
                Ok(body) => inner
                    .call_capped(body, timeout_ms, Some(group.rto_max))
                    .await
                    .and_then(|answer| check_keepalive(tokens.len(), answer)),
                Err(e) => Err(e),
            };
        let first = outcomes.is_empty();
        let usable = &guards.keepalive_usable;
        match keepalive_outcomes(
            answer,
            chunk,
            first,
            group.shard,
            usable,
            inner.config.shards,
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

async fn renew_one_by_one(
    inner: &Arc<Inner>,
    group: &RenewGroup,
    holds: &[&Tracked],
) -> Vec<RenewOutcome> {
    let mut outcomes = Vec::with_capacity(holds.len());
    let mut silent = false;
    for hold in holds {
        let now = inner.now();
        if silent || now >= group.deadline {
            outcomes.push(RenewOutcome::NoAnswer);
            continue;
        }
        let timeout_ms = group.deadline.saturating_since(now).as_millis().max(1);
        let answer = inner
            .call_capped(renew_body(hold), timeout_ms, Some(group.rto_max))
            .await;
        let (outcome, shard_silent) = renew_outcome(answer, hold, group.shard);
        silent = shard_silent;
        outcomes.push(outcome);
    }
    outcomes
}

/// A held lock, for tokio programs: renewed by the client's renewer task, released when
/// dropped (see the module docs of `async_guard`). `Send + Sync`.
pub struct AsyncLockGuard {
    guards: Arc<AsyncGuards>,
    id: HoldId,
    resource: String,
    owner: String,
    token: u64,
    state: Arc<HoldState>,
    named: bool,
    finished: bool,
}

impl AsyncLockGuard {
    /// The fencing token of the grant (see [`LockGuard::fencing_token`]); it never changes.
    ///
    /// [`LockGuard::fencing_token`]: super::LockGuard::fencing_token
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The owner (client id) the lock is held under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The locked resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Time left of the lease's validity as this client must see it (spec §6.4); zero once
    /// the guard is lost.
    pub fn remaining(&self) -> StdDuration {
        self.state.remaining()
    }

    /// When the lease's validity ends as this client must see it (spec §6.4), as last
    /// renewed.
    pub fn valid_until(&self) -> BootInstant {
        self.state.valid_until()
    }

    /// True once the lock is lost (final). Checked against the clock here, not only by the
    /// renewer task: a late task never makes a guard look held longer than the rule allows.
    pub fn is_lost(&self) -> bool {
        self.state.lost().is_some()
    }

    /// Why the lock was lost, or `None` while it is held (see [`LossReason`]).
    pub fn lost(&self) -> Option<LossReason> {
        self.state.lost()
    }

    /// Waits until the lock is lost; `None` if the guard is released first (which cannot
    /// happen while this borrow lives, so in practice: waits for the loss). Cancel-safe:
    /// `select!` it against the work done under the lock.
    pub async fn lost_wait(&self) -> Option<LossReason> {
        self.state.wait_async().await
    }

    /// A handle that waits for this guard's loss from another task, without borrowing it.
    pub fn lost_signal(&self) -> AsyncLostSignal {
        AsyncLostSignal {
            state: Arc::clone(&self.state),
        }
    }

    /// Releases the lock now, returning the error [`Drop`] would only log (as
    /// [`LockGuard::release`](super::LockGuard::release)).
    pub async fn release(mut self) -> Result<(), LockError> {
        let Some(release) = self.finish() else {
            return Err(LockError::LockNotHeld);
        };
        let result = self
            .guards
            .inner
            .release(&self.resource, &self.owner)
            .await
            .map(|_| ());
        if release.named {
            self.guards.owners.give_back(&self.resource, &self.owner);
        }
        result
    }

    /// Ends the guard: the renewer forgets it, its waiters wake. `None` if the server has
    /// no hold of ours to release (refused, or another token); then the named entry was
    /// given back already. Otherwise the caller sends the RELEASE and gives the named entry
    /// back after it.
    fn finish(&mut self) -> Option<Finish> {
        assert!(!self.finished, "a guard finishes once");
        self.finished = true;
        self.guards.unregister(self.id);
        match self.state.end() {
            Some(LossReason::Refused | LossReason::TokenChanged { .. }) => {
                if self.named {
                    self.guards.owners.give_back(&self.resource, &self.owner);
                }
                None
            }
            _ => Some(Finish { named: self.named }),
        }
    }
}

/// What is left to do after [`AsyncLockGuard::finish`].
struct Finish {
    named: bool,
}

impl Drop for AsyncLockGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(release) = self.finish() else {
            log::debug!("dropped lost lock {:?}: nothing to release", self.resource);
            return;
        };
        let guards = Arc::clone(&self.guards);
        let resource = std::mem::take(&mut self.resource);
        let owner = std::mem::take(&mut self.owner);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            log::warn!(
                "lock {resource:?} dropped outside a tokio runtime: not released, it expires \
                 with its lease"
            );
            if release.named {
                guards.owners.give_back(&resource, &owner);
            }
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = guards.inner.release(&resource, &owner).await {
                log::warn!("release of lock {resource:?} failed: {e}");
            }
            if release.named {
                guards.owners.give_back(&resource, &owner);
            }
        });
    }
}

impl fmt::Debug for AsyncLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLockGuard")
            .field("resource", &self.resource)
            .field("owner", &self.owner)
            .field("fencing_token", &self.token)
            .field("lost", &self.state.lost())
            .finish_non_exhaustive()
    }
}

/// Waits for one async guard's loss, from any task ([`AsyncLockGuard::lost_signal`]).
#[derive(Clone)]
pub struct AsyncLostSignal {
    state: Arc<HoldState>,
}

impl AsyncLostSignal {
    /// Waits until the guard is lost (`Some`) or released (`None`). Cancel-safe.
    pub async fn wait(&self) -> Option<LossReason> {
        self.state.wait_async().await
    }

    /// Why the guard was lost, `None` while it is held or once it was released.
    pub fn lost(&self) -> Option<LossReason> {
        self.state.lost()
    }
}

impl fmt::Debug for AsyncLostSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLostSignal")
            .field("lost", &self.state.lost())
            .finish()
    }
}
