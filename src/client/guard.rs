//! Lock guards: [`Client::lock`] takes a lock and returns a [`LockGuard`] that keeps it
//! renewed in the background, says at once when it is lost, and releases it when dropped.
//!
//! ```
//! use std::time::Duration;
//! use udplock::client::{Client, LockOptions};
//! # let node = udplock::single::SingleNode::start(
//! #     udplock::single::SingleConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
//! # let servers = [node.local_addr()];
//! let client = Client::connect(&servers)?;
//! let options = LockOptions::new().ttl(Duration::from_secs(10)).wait(Duration::from_secs(5));
//! let guard = client.lock("orders/42", &options)?;
//! // ... write to storage, passing guard.fencing_token(), while !guard.is_lost() ...
//! assert!(!guard.is_lost());
//! drop(guard); // releases the lock
//! # Ok::<(), udplock::LockError>(())
//! ```
//!
//! # How it works
//!
//! Guards use a client of their own (created from the same [`ClientConfig`] at the first
//! guard, with its own socket and session), so that a guard owns what it needs and is
//! `'static`: it can move into another thread, and may outlive the [`Client`] that made it.
//! That client takes the lock, releases it, and renews it from ONE background thread
//! (`renewer.rs`), started with the first guard, which sleeps until the next renewal is due or
//! a guard comes or goes, and ends once the `Client` and all its guards are dropped. When to
//! renew and when a hold is lost are the pure rules of [`crate::core::renewal`]: a renewal a
//! third of the way through the lease (with jitter), quick retries while it fails, and a loss
//! on a refusal (LOCK_NOT_HELD), on a renewal that names another fencing token, or when the
//! lease's validity (spec §6.4, counted from the send time) comes within the *loss margin*
//! of its end without a successful renewal.
//!
//! The loss is seen without the renewer's help too: [`LockGuard::is_lost`] and the waits
//! compare the clock with the give-up instant themselves, so a late renewer thread can never
//! make a guard look held for longer than the rule allows.
//!
//! # Owners
//!
//! By default every guard has an owner id of its own (`<prefix><session hex>-<n>`, the prefix
//! being [`ClientConfig::owner_prefix`]: by default the first prefix of the client key file's
//! key, so that servers with key files let the guard act for it), so two threads of one
//! process never both hold a lock, whatever they do. A named owner
//! ([`LockOptions::owner`]) is for holding a lock across processes (release it with
//! `udplock release --client NAME`); a second guard for a lock that a guard of this client
//! already holds with that owner is refused, unless both ask for [`LockOptions::reentrant`],
//! in which case the server's re-entrant holds apply (the lock is free after both guards are
//! dropped).
//!
//! [`ClientConfig`]: super::ClientConfig

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SendError, Sender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration as StdDuration;

use udplock_protocol::{shard_of, RequestBody, ID_LEN_MAX};

use super::operation::Answer;
use super::renewer::{self, Command, Tracked};
use super::{check_id, lock, Client, ClientConfig, WAIT_MS_MAX};
use crate::clock::BootInstant;
use crate::core::renewal::{self, HoldId, HoldSpec};
use crate::core::time::{Duration, Instant};
use crate::error::LockError;

pub use crate::core::renewal::LossReason;

/// How a [`LockGuard`] takes its lock: [`LockOptions::new`], then the builder methods.
///
/// ```
/// use std::time::Duration;
/// use udplock::client::LockOptions;
/// let options = LockOptions::new()
///     .wait(Duration::from_secs(2))
///     .ttl(Duration::from_millis(500))
///     .owner("billing-7")
///     .reentrant(true);
/// assert!(options.validate().is_ok());
/// assert!(LockOptions::new().ttl(Duration::ZERO).validate().is_err());
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOptions {
    pub(super) wait: StdDuration,
    ttl: Option<StdDuration>,
    owner: Option<String>,
    reentrant: bool,
    loss_margin: Option<StdDuration>,
}

/// The default wait of [`Client::lock`]: 5 s, as `udplock lock --wait`.
pub const LOCK_WAIT_DEFAULT: StdDuration = StdDuration::from_secs(5);

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: LOCK_WAIT_DEFAULT,
            ttl: None,
            owner: None,
            reentrant: false,
            loss_margin: None,
        }
    }
}

impl LockOptions {
    /// The defaults: wait [`LOCK_WAIT_DEFAULT`], the resource's default TTL, an owner id of
    /// the guard's own, not re-entrant, a loss margin of a tenth of the lease.
    pub fn new() -> LockOptions {
        LockOptions::default()
    }

    /// How long [`Client::lock`] waits in the server's queue for the lock (whole
    /// milliseconds, at most 5 minutes). [`Client::try_lock`] ignores it.
    pub fn wait(mut self, wait: StdDuration) -> LockOptions {
        self.wait = wait;
        self
    }

    /// The lease of each grant and renewal (whole milliseconds, at least 1 ms; the server
    /// refuses more than its `ttl_ms_max`). Without it, the resource's default TTL.
    pub fn ttl(mut self, ttl: StdDuration) -> LockOptions {
        self.ttl = Some(ttl);
        self
    }

    /// The owner (client id) the lock is held under, 1 to 255 bytes: for a lock that another
    /// process may release or check. Without it every guard has an id of its own.
    pub fn owner(mut self, owner: impl Into<String>) -> LockOptions {
        self.owner = Some(owner.into());
        self
    }

    /// With a named owner: whether a second guard of this client for the same lock and owner
    /// takes a re-entrant hold (true) or is refused (false, the default).
    pub fn reentrant(mut self, reentrant: bool) -> LockOptions {
        self.reentrant = reentrant;
        self
    }

    /// How long before its lease's validity ends a guard whose renewals go unanswered reports
    /// itself lost: the time its holder has to stop working while the lock is still held.
    /// Default a tenth of the lease; at most half of the TTL.
    pub fn loss_margin(mut self, margin: StdDuration) -> LockOptions {
        self.loss_margin = Some(margin);
        self
    }

    /// Refuses options that cannot work; the error names the field.
    pub fn validate(&self) -> Result<(), LockError> {
        let invalid = |what: String| Err(LockError::InvalidArgument(what));
        if self.wait > StdDuration::from_millis(WAIT_MS_MAX) {
            return invalid(format!(
                "wait must be at most 5 minutes, got {:?}; wait longer in a loop",
                self.wait
            ));
        }
        if let Some(ttl) = self.ttl {
            if ttl < StdDuration::from_millis(1) {
                return invalid(format!(
                    "ttl must be at least 1 ms, got {ttl:?}; leave it out for the resource's \
                     default"
                ));
            }
            if ttl.as_millis() > u128::from(u32::MAX) {
                return invalid(format!("ttl must be at most {} ms, got {ttl:?}", u32::MAX));
            }
            if let Some(margin) = self.loss_margin {
                if margin > ttl / 2 {
                    return invalid(format!(
                        "loss_margin must be at most half the ttl ({:?}), got {margin:?}",
                        ttl / 2
                    ));
                }
            }
        }
        match &self.owner {
            Some(owner) if owner.is_empty() || owner.len() > ID_LEN_MAX => {
                return invalid(format!(
                    "owner must be 1 to {ID_LEN_MAX} bytes long, got {}",
                    owner.len()
                ))
            }
            None if self.reentrant => {
                return invalid(
                    "reentrant(true) needs a named owner: without one every guard has an owner \
                     id of its own, and nothing can re-enter"
                        .into(),
                )
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn ttl_ms(&self) -> Option<u32> {
        self.ttl.map(|ttl| ttl.as_millis() as u32)
    }
}

/// A held lock: renewed in the background, released when dropped (see the module docs).
///
/// `Send + Sync`: move it to the thread that works under the lock, or share it. Dropping it
/// sends a RELEASE and waits for the answer, up to the client's `request_timeout_ms` when
/// the service does not answer (the lock then expires after its TTL).
pub struct LockGuard {
    guards: Arc<Guards>,
    id: HoldId,
    resource: String,
    owner: String,
    token: u64,
    state: Arc<HoldState>,
    /// Whether the named owner's (resource, owner) entry is this guard's to give back.
    named: bool,
    finished: bool,
}

impl LockGuard {
    /// The fencing token of the grant: pass it to the storage the lock protects, so that it
    /// can refuse writes from an older holder. It never changes under a guard (a renewal
    /// naming another token is a loss).
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
    /// the guard is lost. Renewals keep moving it forward.
    pub fn remaining(&self) -> StdDuration {
        self.state.remaining()
    }

    /// When the lease's validity ends as this client must see it (spec §6.4), as last
    /// renewed; it stays where it was when the guard is lost. A guard whose renewals go
    /// unanswered is lost the loss margin before this instant.
    pub fn valid_until(&self) -> BootInstant {
        self.state.valid_until()
    }

    /// True once the lock is lost (final): see [`LockGuard::lost`].
    pub fn is_lost(&self) -> bool {
        self.state.lost().is_some()
    }

    /// Why the lock was lost, or `None` while it is held. Once lost, stop using what the lock
    /// protects: the lease's validity ends within the loss margin (or has ended already, for
    /// [`LossReason::Refused`] and [`LossReason::TokenChanged`]).
    pub fn lost(&self) -> Option<LossReason> {
        self.state.lost()
    }

    /// Blocks until the lock is lost (`Some`) or `timeout` passes (`None`).
    pub fn wait_lost(&self, timeout: StdDuration) -> Option<LossReason> {
        self.state.wait(BootInstant::now().checked_add(timeout))
    }

    /// A handle that waits for this guard's loss from another thread (for example one that
    /// stops the work), without borrowing the guard.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            state: Arc::clone(&self.state),
        }
    }

    /// Releases the lock now, returning the error [`Drop`] would only log: for example
    /// [`LockError::LockNotHeld`] after a [`LossReason::Refused`], or
    /// [`LockError::Unavailable`] (the release may still take effect; the lock expires after
    /// its TTL in any case).
    pub fn release(mut self) -> Result<(), LockError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), LockError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.guards.unregister(self.id);
        let lost = self.state.end();
        let result = match lost {
            // The server has no hold of ours to release (or the hold under this owner is
            // another one).
            Some(LossReason::Refused | LossReason::TokenChanged { .. }) => {
                Err(LockError::LockNotHeld)
            }
            // Held, or given up for silence: the server may still hold it.
            _ => self
                .guards
                .client
                .release(&self.resource, &self.owner)
                .map(|_| ()),
        };
        if self.named {
            self.guards.owners.give_back(&self.resource, &self.owner);
        }
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let lost = self.state.lost().is_some();
        if let Err(e) = self.finish() {
            if lost {
                log::debug!("release of lost lock {:?}: {e}", self.resource);
            } else {
                log::warn!("release of lock {:?} failed: {e}", self.resource);
            }
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("resource", &self.resource)
            .field("owner", &self.owner)
            .field("fencing_token", &self.token)
            .field("lost", &self.state.lost())
            .finish_non_exhaustive()
    }
}

/// Waits for one guard's loss, from any thread ([`LockGuard::lost_signal`]).
#[derive(Clone)]
pub struct LostSignal {
    state: Arc<HoldState>,
}

impl LostSignal {
    /// Blocks until the guard is lost (`Some`) or released (`None`).
    pub fn wait(&self) -> Option<LossReason> {
        self.state.wait(None)
    }

    /// Blocks until the guard is lost (`Some`), released, or `timeout` passes (`None`).
    pub fn wait_timeout(&self, timeout: StdDuration) -> Option<LossReason> {
        self.state.wait(BootInstant::now().checked_add(timeout))
    }

    /// Why the guard was lost, `None` while it is held or once it was released.
    pub fn lost(&self) -> Option<LossReason> {
        self.state.lost()
    }
}

impl fmt::Debug for LostSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LostSignal")
            .field("lost", &self.state.lost())
            .finish()
    }
}

/// How a guard ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Lost(LossReason),
    Released,
}

struct Validity {
    /// The lease's validity (spec §6.4).
    valid_until: BootInstant,
    /// The rules' give-up instant: `valid_until` less the loss margin.
    give_up_at: BootInstant,
    ending: Option<Ending>,
}

/// One guard's validity and fate, shared by the guard, its [`LostSignal`]s and the renewer.
/// Every change happens under the mutex, so a loss seen by one is seen by all, and is final.
pub(super) struct HoldState {
    validity: Mutex<Validity>,
    changed: Condvar,
    /// The async guards' waiters (`AsyncLockGuard::lost_wait`), woken with the condvar's.
    #[cfg(feature = "tokio")]
    changed_async: tokio::sync::Notify,
}

impl HoldState {
    pub(super) fn new(valid_until: BootInstant, give_up_at: BootInstant) -> HoldState {
        HoldState {
            validity: Mutex::new(Validity {
                valid_until,
                give_up_at,
                ending: None,
            }),
            changed: Condvar::new(),
            #[cfg(feature = "tokio")]
            changed_async: tokio::sync::Notify::new(),
        }
    }

    /// Wakes every waiter, blocking and async (under the mutex).
    fn wake(&self) {
        self.changed.notify_all();
        #[cfg(feature = "tokio")]
        self.changed_async.notify_waiters();
    }

    /// The lease's validity as last renewed.
    pub(super) fn valid_until(&self) -> BootInstant {
        lock(&self.validity).valid_until
    }

    /// [`HoldState::wait`] without a deadline, for a task: until lost (`Some`) or released
    /// (`None`). The same give-up rule, with a tokio timer at the give-up instant.
    #[cfg(feature = "tokio")]
    pub(super) async fn wait_async(&self) -> Option<LossReason> {
        loop {
            let changed = self.changed_async.notified();
            tokio::pin!(changed);
            // Registered before the state is read: a change after the read wakes it.
            changed.as_mut().enable();
            let give_up_at = {
                let mut v = lock(&self.validity);
                self.settle(&mut v, BootInstant::now());
                match v.ending {
                    Some(Ending::Lost(reason)) => return Some(reason),
                    Some(Ending::Released) => return None,
                    None => v.give_up_at,
                }
            };
            // Read against our clock on every wake, as the blocking wait does.
            let wait = give_up_at.saturating_duration_since(BootInstant::now());
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The give-up rule applied here too (a hold is lost once `now >= give_up_at`, as in
    /// `Renewals::handle_timeout`), so that a late renewer never shows a lost hold as held.
    fn settle(&self, v: &mut Validity, now: BootInstant) {
        if v.ending.is_none() && now >= v.give_up_at {
            v.ending = Some(Ending::Lost(LossReason::Expired));
            self.wake();
        }
    }

    pub(super) fn lost(&self) -> Option<LossReason> {
        let mut v = lock(&self.validity);
        self.settle(&mut v, BootInstant::now());
        match v.ending {
            Some(Ending::Lost(reason)) => Some(reason),
            _ => None,
        }
    }

    pub(super) fn remaining(&self) -> StdDuration {
        let mut v = lock(&self.validity);
        let now = BootInstant::now();
        self.settle(&mut v, now);
        match v.ending {
            None => v.valid_until.saturating_duration_since(now),
            Some(_) => StdDuration::ZERO,
        }
    }

    /// Until lost (`Some`), released, or `deadline` (`None`).
    fn wait(&self, deadline: Option<BootInstant>) -> Option<LossReason> {
        let mut v = lock(&self.validity);
        loop {
            let now = BootInstant::now();
            self.settle(&mut v, now);
            match v.ending {
                Some(Ending::Lost(reason)) => return Some(reason),
                Some(Ending::Released) => return None,
                None => {}
            }
            let wake = match deadline {
                Some(d) if d <= now => return None,
                Some(d) => d.min(v.give_up_at),
                None => v.give_up_at,
            };
            // The condvar's own clock may stop while the machine sleeps: the loop reads ours.
            let (next, _) = self
                .changed
                .wait_timeout(v, wake.saturating_duration_since(now))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            v = next;
        }
    }

    /// A renewal succeeded. `false` if the guard has ended meanwhile (released, or seen lost
    /// by the give-up rule before the renewal was mirrored here): the renewer then forgets
    /// the hold.
    pub(super) fn renewed(&self, valid_until: BootInstant, give_up_at: BootInstant) -> bool {
        let mut v = lock(&self.validity);
        if v.ending.is_some() {
            return false;
        }
        assert!(valid_until >= v.valid_until, "validity never moves back");
        v.valid_until = valid_until;
        v.give_up_at = give_up_at;
        true
    }

    /// The rules lost the hold.
    pub(super) fn lose(&self, reason: LossReason) {
        let mut v = lock(&self.validity);
        if v.ending.is_none() {
            v.ending = Some(Ending::Lost(reason));
            self.wake();
        }
    }

    /// The guard is released: wakes the waiters (`None`). Returns the loss, if it was lost.
    pub(super) fn end(&self) -> Option<LossReason> {
        let mut v = lock(&self.validity);
        self.settle(&mut v, BootInstant::now());
        match v.ending {
            Some(Ending::Lost(reason)) => Some(reason),
            Some(Ending::Released) => None,
            None => {
                v.ending = Some(Ending::Released);
                self.wake();
                None
            }
        }
    }
}

/// Guards of one named owner on one resource, held by this client.
#[derive(Clone, Copy, Debug, Default)]
struct Named {
    guards: u32,
    /// One of them refused re-entry.
    exclusive: bool,
}

/// What all guards of one [`Client`] share: their client, the renewer thread's inbox, and the
/// named owners' holds.
pub(super) struct Guards {
    pub(super) client: Client,
    /// The renewer's inbox, once the thread runs (see `renewer.rs`). The thread holds a
    /// `Weak<Guards>`; dropping the last `Arc` drops this sender and the thread ends.
    commands: Mutex<Option<Sender<Command>>>,
    owners: Owners,
    /// Dies with the renewer thread (tests watch it).
    renewer_alive: Mutex<Weak<()>>,
    /// Whether renewals go by KEEPALIVE (spec §4.11): until a node refuses one as
    /// INVALID_ARGUMENT, which means this client's `shards` is not the cluster's; RENEW per
    /// hold from then on (see `renewer::renew_group`).
    pub(super) keepalive_usable: AtomicBool,
}

impl Guards {
    fn new(client: Client) -> Guards {
        Guards {
            client,
            commands: Mutex::new(None),
            owners: Owners::default(),
            renewer_alive: Mutex::new(Weak::new()),
            keepalive_usable: AtomicBool::new(true),
        }
    }

    fn renewal_config(&self) -> renewal::Config {
        renewal_config(&self.client.config)
    }

    /// Takes the lock with `wait` (see [`Client::lock`]).
    fn lock(
        self: &Arc<Self>,
        resource: &str,
        options: &LockOptions,
        wait: StdDuration,
    ) -> Result<LockGuard, LockError> {
        let owner = self.owners.take(
            &self.client.config.owner_prefix,
            self.client.session_id,
            resource,
            options,
        )?;
        let taken = self.acquire(&owner, resource, options, wait);
        let (spec, state) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                self.owners.give_back_if_named(&owner, resource);
                return Err(e);
            }
        };
        if let Err(e) = self.register(owner.id, spec, resource, &owner.owner, options, &state) {
            let _ = self.client.release(resource, &owner.owner);
            self.owners.give_back_if_named(&owner, resource);
            return Err(e);
        }
        Ok(LockGuard {
            guards: Arc::clone(self),
            id: owner.id,
            resource: resource.to_owned(),
            owner: owner.owner,
            token: spec.token,
            state,
            named: owner.named,
            finished: false,
        })
    }

    /// The ACQUIRE, and the hold it gives.
    fn acquire(
        &self,
        owner: &Owner,
        resource: &str,
        options: &LockOptions,
        wait: StdDuration,
    ) -> Result<(HoldSpec, Arc<HoldState>), LockError> {
        let (body, wait_ms) = acquire_body(resource, &owner.owner, options, wait);
        let answer = self
            .client
            .call(body, wait_ms + self.client.config.grace_ms)?;
        if let Err(e) = check_reentry(options, resource, &owner.owner, answer.reply.hold_count) {
            // Give back the hold just added.
            let _ = self.client.release(resource, &owner.owner);
            return Err(e);
        }
        let config = &self.client.config;
        let (spec, valid_until, give_up_at) = granted(config, resource, options, &answer);
        log::trace!(
            "guard {}: {resource:?} held by {:?}, token {}",
            owner.id,
            owner.owner,
            spec.token
        );
        let state = HoldState::new(
            self.client.boot_instant(valid_until),
            self.client.boot_instant(give_up_at),
        );
        Ok((spec, Arc::new(state)))
    }

    /// Hands the hold to the renewer, starting it if this is the first guard.
    fn register(
        self: &Arc<Self>,
        id: HoldId,
        spec: HoldSpec,
        resource: &str,
        owner: &str,
        options: &LockOptions,
        state: &Arc<HoldState>,
    ) -> Result<(), LockError> {
        let command = Command::Add {
            id,
            spec,
            tracked: Tracked {
                token: spec.token,
                resource: resource.to_owned(),
                owner: owner.to_owned(),
                ttl_ms: options.ttl_ms(),
                state: Arc::clone(state),
            },
        };
        let mut commands = lock(&self.commands);
        let command = match commands.as_ref() {
            None => command,
            Some(sender) => match sender.send(command) {
                Ok(()) => return Ok(()),
                Err(SendError(command)) => {
                    // The thread ends only once every sender is gone, or by a panic (a bug): its
                    // guards are reported lost by their own give-up check; start another.
                    log::error!("the guards' renewer thread died; starting a new one");
                    command
                }
            },
        };
        let (sender, alive) =
            renewer::start(Arc::downgrade(self), self.renewal_config()).map_err(|e| {
                LockError::InternalError(format!(
                    "cannot start the guards' renewer thread: {e}; the lock was released"
                ))
            })?;
        *lock(&self.renewer_alive) = alive;
        sender
            .send(command)
            .expect("the renewer runs until its sender is dropped");
        *commands = Some(sender);
        Ok(())
    }

    fn unregister(&self, id: HoldId) {
        if let Some(sender) = lock(&self.commands).as_ref() {
            let _ = sender.send(Command::Remove(id));
        }
    }
}

// What the blocking and the async guards share (`async_guard.rs` uses the same functions):
// the owner rules, the ACQUIRE a guard sends, the re-entry check of its answer, and the hold
// the rules start from.

/// The renewal rules' settings for a client with `config` (both guards' renewers).
pub(super) fn renewal_config(config: &ClientConfig) -> renewal::Config {
    renewal::Config {
        drift_bound_ppm: config.drift_bound_ppm,
        attempt_max: Duration::from_millis(config.request_timeout_ms),
    }
}

/// The owner a new guard takes its lock under (see "Owners" in the module docs).
pub(super) struct Owner {
    /// The guard's id, unique among this client's guards (the renewer's `HoldId`).
    pub(super) id: HoldId,
    pub(super) owner: String,
    /// Named by the caller: its (resource, owner) entry in [`Owners`] is the guard's to give
    /// back.
    pub(super) named: bool,
}

/// The guards' ids and the named owners' holds of one client (both guards).
#[derive(Default)]
pub(super) struct Owners {
    next_id: AtomicU64,
    named: Mutex<HashMap<(String, String), Named>>,
}

impl Owners {
    /// Checks the options and the resource, and picks the owner of a new guard: the named
    /// one (counted, or refused without re-entry), or `<prefix><session hex>-<n>`, unique per
    /// guard (`prefix`: [`ClientConfig::owner_prefix`], which validation keeps short enough
    /// for the whole to fit in an id).
    ///
    /// [`ClientConfig::owner_prefix`]: super::ClientConfig::owner_prefix
    pub(super) fn take(
        &self,
        prefix: &str,
        session_id: u64,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Owner, LockError> {
        options.validate()?;
        check_id("resource", resource)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let owner = match &options.owner {
            Some(owner) => {
                self.take_named(resource, owner, options.reentrant)?;
                owner.clone()
            }
            None => {
                let owner = format!("{prefix}{session_id:016x}-{id}");
                assert!(
                    owner.len() <= ID_LEN_MAX,
                    "ClientConfig::validate bounds the prefix"
                );
                owner
            }
        };
        Ok(Owner {
            id,
            owner,
            named: options.owner.is_some(),
        })
    }

    /// Counts a guard of a named owner, or refuses it (see "Owners" in the module docs).
    fn take_named(&self, resource: &str, owner: &str, reentrant: bool) -> Result<(), LockError> {
        let mut named = lock(&self.named);
        let entry = named
            .entry((resource.to_owned(), owner.to_owned()))
            .or_default();
        if entry.guards > 0 && (entry.exclusive || !reentrant) {
            return Err(LockError::InvalidArgument(format!(
                "owner {owner:?} already holds {resource:?} through another guard of this \
                 client; use a guard without a named owner, or reentrant(true) on both"
            )));
        }
        entry.guards += 1;
        entry.exclusive |= !reentrant;
        Ok(())
    }

    /// A guard of `owner` ended (or was never made): its named entry is given back.
    pub(super) fn give_back_if_named(&self, owner: &Owner, resource: &str) {
        if owner.named {
            self.give_back(resource, &owner.owner);
        }
    }

    /// A guard of the named `owner` on `resource` ended.
    pub(super) fn give_back(&self, resource: &str, owner: &str) {
        let mut named = lock(&self.named);
        let key = (resource.to_owned(), owner.to_owned());
        let entry = named.get_mut(&key).expect("a named guard was counted");
        assert!(entry.guards > 0);
        entry.guards -= 1;
        if entry.guards == 0 {
            named.remove(&key);
        }
    }
}

/// A guard's ACQUIRE (its options validated), and its wait in whole milliseconds.
pub(super) fn acquire_body<'a>(
    resource: &'a str,
    owner: &'a str,
    options: &LockOptions,
    wait: StdDuration,
) -> (RequestBody<'a>, u64) {
    let wait_ms = wait.as_millis() as u64;
    let body = RequestBody::Acquire {
        resource: resource.as_bytes(),
        client: owner.as_bytes(),
        wait_ms: wait_ms as u32,
        ttl_ms: options.ttl_ms().unwrap_or(0),
    };
    (body, wait_ms)
}

/// Refuses a grant that is a second hold of the owner without [`LockOptions::reentrant`]:
/// the owner held the lock already, outside this client's guards (another process, or the
/// plain API). The caller then gives back the hold just added.
pub(super) fn check_reentry(
    options: &LockOptions,
    resource: &str,
    owner: &str,
    hold_count: u32,
) -> Result<(), LockError> {
    if options.reentrant || hold_count == 1 {
        return Ok(());
    }
    Err(LockError::InvalidArgument(format!(
        "owner {owner:?} already holds {resource:?} ({hold_count} holds with this one): it is \
         in use elsewhere; pick another owner, or ask for reentrant(true)"
    )))
}

/// The hold a grant gives, for the rules, and its validity and give-up instant (core time).
pub(super) fn granted(
    config: &ClientConfig,
    resource: &str,
    options: &LockOptions,
    answer: &Answer,
) -> (HoldSpec, Instant, Instant) {
    let spec = HoldSpec {
        shard: shard_of(resource.as_bytes(), config.shards) as usize,
        token: answer.reply.fencing_token,
        lease_start: answer.lease_start,
        lease_ms: answer.reply.lease_ms,
        loss_margin: options
            .loss_margin
            .map(|m| Duration::from_micros(m.as_micros() as u64)),
    };
    let (valid_until, give_up_at) = renewal::initial_validity(&renewal_config(config), &spec);
    (spec, valid_until, give_up_at)
}

impl Client {
    /// Takes the lock on `resource` and returns a guard that keeps it (see the module docs of
    /// `guard`): waits up to [`LockOptions::wait`] in the server's FIFO queue.
    ///
    /// Errors as [`Client::acquire`]'s, and [`LockError::InvalidArgument`] for options that
    /// do not validate (naming the field) or a named owner that already holds the lock
    /// without [`LockOptions::reentrant`].
    ///
    /// ```
    /// # let node = udplock::single::SingleNode::start(
    /// #     udplock::single::SingleConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    /// use udplock::client::{Client, LockOptions};
    /// let client = Client::connect(&[node.local_addr()])?;
    /// let guard = client.lock("reports/daily", &LockOptions::new())?;
    /// let other = client.try_lock("reports/daily", &LockOptions::new());
    /// assert_eq!(other.unwrap_err(), udplock::LockError::LockAcquisitionTimeout);
    /// guard.release()?;
    /// # Ok::<(), udplock::LockError>(())
    /// ```
    pub fn lock(&self, resource: &str, options: &LockOptions) -> Result<LockGuard, LockError> {
        self.guards()?.lock(resource, options, options.wait)
    }

    /// [`Client::lock`] without waiting: [`LockError::LockAcquisitionTimeout`] at once if
    /// another owner holds the lock.
    pub fn try_lock(&self, resource: &str, options: &LockOptions) -> Result<LockGuard, LockError> {
        self.guards()?.lock(resource, options, StdDuration::ZERO)
    }

    /// The guards' shared state, created at the first guard.
    fn guards(&self) -> Result<&Arc<Guards>, LockError> {
        if let Some(guards) = self.guards.get() {
            return Ok(guards);
        }
        let client = Client::new(self.config.clone())?;
        // Two threads may race here: the loser's client is dropped unused.
        let _ = self.guards.set(Arc::new(Guards::new(client)));
        Ok(self.guards.get().expect("set above"))
    }

    /// Whether this client's renewer thread is running (tests).
    #[cfg(test)]
    pub(super) fn renewer_alive(&self) -> Weak<()> {
        match self.guards.get() {
            Some(guards) => lock(&guards.renewer_alive).clone(),
            None => Weak::new(),
        }
    }
}
