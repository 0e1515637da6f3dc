//! The recorded workload: client threads, each with its own blocking [`Client`] (its own
//! sessions) and client id, acquiring a few hot resources with short TTLs, sometimes
//! re-entering and renewing, then releasing. Every operation goes into the shared
//! [`History`] with its invoke and complete times on one monotonic clock ([`BootInstant`],
//! the clock the client counts leases on), its grant's token and lease, and what the client
//! believes after it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::history::{History, Op, OpKind, OpResult};
use crate::{BootInstant, Client, ClientConfig, Lease, LockError};

/// The lease every acquire and renew asks for, in ms: short, so that holds expire during
/// faults and the next holder's grant tests the lease rule.
pub const TTL_MS: u32 = 1_000;
/// How long an acquire waits in the queue, in ms.
pub const WAIT_MS: u64 = 800;
/// How long a holder works between its steps, at most, in ms (at most two steps outlast
/// a lease, so some holds expire before their renewal).
pub const WORK_MS_MAX: u64 = 600;
/// Renewals per hold, at most.
pub const RENEWALS_MAX: u32 = 2;
/// Deadline of a release or renew, in ms (the client's `request_timeout_ms`).
pub const REQUEST_TIMEOUT_MS: u64 = 1_000;

/// What the workload shares with its threads.
pub struct Workload {
    pub servers: Vec<SocketAddr>,
    pub shards: u32,
    pub resources: Vec<String>,
    pub history: Arc<Mutex<History>>,
    /// Errors by kind, for the summary.
    pub errors: Arc<Mutex<BTreeMap<String, u64>>>,
    pub start: BootInstant,
    pub stop: Arc<AtomicBool>,
    /// Added to every lease's end as the clients believe it: 0, except to check the
    /// checkers (`Config::unsafe_believe_extra_ms`).
    pub believe_extra_us: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A short name for an error kind (the summary's key).
fn error_kind(e: &LockError) -> String {
    let text = format!("{e:?}");
    text.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

/// What one thread believes it holds.
struct Hold {
    resource: usize,
    token: u64,
    count: u32,
    valid_until_us: u64,
}

pub struct Worker {
    idx: usize,
    client: Client,
    id: String,
    rng: ChaCha8Rng,
    hold: Option<Hold>,
}

impl Workload {
    pub fn us(&self, t: BootInstant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }

    fn now_us(&self) -> u64 {
        self.us(BootInstant::now())
    }

    pub fn client(&self) -> Result<Client, LockError> {
        let mut config = ClientConfig::new(self.servers.clone());
        config.shards = self.shards;
        config.request_timeout_ms = REQUEST_TIMEOUT_MS;
        Client::new(config)
    }

    pub fn worker(&self, idx: usize, seed: u64) -> Result<Worker, LockError> {
        Ok(Worker {
            idx,
            client: self.client()?,
            id: format!("chaos-worker-{idx}"),
            rng: ChaCha8Rng::seed_from_u64(seed ^ (idx as u64).wrapping_mul(0x9E37_79B9)),
            hold: None,
        })
    }

    /// Records `op`'s result, updating what `w` believes.
    fn record(
        &self,
        w: &mut Worker,
        kind: OpKind,
        resource: usize,
        invoke_us: u64,
        result: &Result<Lease, LockError>,
    ) {
        let complete_us = self.now_us();
        let held_token = w
            .hold
            .as_ref()
            .filter(|h| h.resource == resource && complete_us < h.valid_until_us)
            .map(|h| h.token);
        let op_result = match result {
            Ok(lease) => OpResult::Granted {
                token: lease.fencing_token,
                hold_count: lease.hold_count,
                lease_ms: lease.ttl_ms,
                valid_until_us: self.us(lease.valid_until) + self.believe_extra_us,
            },
            Err(e) => {
                *lock(&self.errors)
                    .entry(format!("{kind:?} {}", error_kind(e)))
                    .or_default() += 1;
                OpResult::Failed(e.to_string())
            }
        };
        let op = Op {
            client: w.idx,
            resource,
            kind,
            invoke_us,
            complete_us,
            result: op_result,
        };
        lock(&self.history).record(op, held_token);
        match result {
            Ok(lease) => {
                let valid_until_us = self.us(lease.valid_until) + self.believe_extra_us;
                match &mut w.hold {
                    Some(h) if h.resource == resource => {
                        h.token = lease.fencing_token;
                        h.count = lease.hold_count;
                        h.valid_until_us = h.valid_until_us.max(valid_until_us);
                    }
                    _ => {
                        w.hold = Some(Hold {
                            resource,
                            token: lease.fencing_token,
                            count: lease.hold_count,
                            valid_until_us,
                        })
                    }
                }
            }
            // The service says the hold is gone: stop believing at once (spec §7.1.6).
            Err(LockError::LockNotHeld) if kind == OpKind::Renew => {
                lock(&self.history).cut(w.idx, resource, complete_us);
                w.hold = None;
            }
            Err(_) => {}
        }
    }

    /// Gives back every hold `w` has, stopping belief when the release that ends the hold
    /// is sent, or any release whose outcome is not known (spec §7.1.5).
    fn release_all(&self, w: &mut Worker) {
        while let Some(hold) = w.hold.as_ref() {
            let resource = hold.resource;
            let invoke_us = self.now_us();
            let ends = hold.count <= 1;
            if ends {
                lock(&self.history).cut(w.idx, resource, invoke_us);
            }
            let result = w.client.release(&self.resources[resource], &w.id);
            let complete_us = self.now_us();
            let op_result = match &result {
                Ok(left) => OpResult::Released { holds_left: *left },
                Err(e) => {
                    *lock(&self.errors)
                        .entry(format!("Release {}", error_kind(e)))
                        .or_default() += 1;
                    OpResult::Failed(e.to_string())
                }
            };
            let op = Op {
                client: w.idx,
                resource,
                kind: OpKind::Release,
                invoke_us,
                complete_us,
                result: op_result,
            };
            lock(&self.history).record(op, None);
            match result {
                Ok(left) if left > 0 => w.hold.as_mut().expect("held").count = left,
                Ok(_) => w.hold = None,
                Err(_) => {
                    if !ends {
                        lock(&self.history).cut(w.idx, resource, invoke_us);
                    }
                    // The hold, if any is left, expires at the server after its TTL.
                    w.hold = None;
                }
            }
        }
    }

    /// One thread's loop until `stop`: acquire, work, maybe re-enter and renew, release.
    pub fn run(&self, mut w: Worker) {
        while !self.stop.load(Ordering::Relaxed) {
            let resource = w.rng.gen_range(0..self.resources.len());
            let name = &self.resources[resource];
            let invoke_us = self.now_us();
            let result = w.client.acquire(name, &w.id, WAIT_MS, Some(TTL_MS));
            self.record(&mut w, OpKind::Acquire, resource, invoke_us, &result);
            if result.is_err() {
                // Errors that come at once (a doubt not yet settled) must not spin.
                std::thread::sleep(Duration::from_millis(w.rng.gen_range(5..50)));
                if w.hold.is_some() {
                    self.release_all(&mut w);
                }
                continue;
            }
            if w.rng.gen_bool(0.2) {
                let invoke_us = self.now_us();
                let again = w.client.acquire(name, &w.id, WAIT_MS, Some(TTL_MS));
                self.record(&mut w, OpKind::Acquire, resource, invoke_us, &again);
            }
            for _ in 0..w.rng.gen_range(0..=RENEWALS_MAX) {
                std::thread::sleep(Duration::from_millis(w.rng.gen_range(0..WORK_MS_MAX)));
                if w.hold.is_none() {
                    break;
                }
                let invoke_us = self.now_us();
                let renewed = w.client.renew(name, &w.id, Some(TTL_MS));
                self.record(&mut w, OpKind::Renew, resource, invoke_us, &renewed);
            }
            std::thread::sleep(Duration::from_millis(w.rng.gen_range(0..WORK_MS_MAX / 2)));
            self.release_all(&mut w);
        }
    }
}
