//! Property test: the lock table against a reference model.
//!
//! The model states the rules of the spec's lock semantics (§6) the plainest way: locks in a
//! `BTreeMap` by name, queues as `Vec`s, timers found by scanning every lock. None of the
//! table's machinery (slots, the hashed index, tombstones, the timer set, the idle index) is in
//! it, so a bug in that machinery shows up as a difference in replies or counters. Random
//! command sequences over 4 resources, 3 clients and 4 sessions, with limits small enough to be
//! hit, retransmits of earlier requests from new addresses, and time jumps past leases, waits
//! and session idleness. Besides equality with the model, the driver checks the safety rules
//! directly on the replies: a remembered answer never changes, fencing tokens increase per
//! resource, a queued acquire is answered exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

struct ModelHold {
    client: Vec<u8>,
    count: u32,
    token: u64,
    expiry: Instant,
    ttl_ms: u32,
}

struct ModelWaiter {
    seq: u64,
    id: RequestId,
    reply_to: SocketAddr,
    client: Vec<u8>,
    deadline: Instant,
    ttl_ms: u32,
    attempt: u16,
}

#[derive(Default)]
struct ModelLock {
    hold: Option<ModelHold>,
    default_ttl_ms: u32,
    waiters: Vec<ModelWaiter>,
}

struct ModelSession {
    active_last: Instant,
    expired_through: u64,
    answers: BTreeMap<u64, (RequestKind, Answer, u16)>,
    pending: BTreeSet<u64>,
}

struct Model {
    config: Config,
    token_next: u64,
    seq_next: u64,
    locks: BTreeMap<Vec<u8>, ModelLock>,
    sessions: BTreeMap<u64, ModelSession>,
    replies: Vec<Reply>,
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(ms.into())
}

fn with_status(status: Status) -> Answer {
    Answer::bare(status)
}

impl Model {
    fn new(config: Config) -> Model {
        let token_first = config.fencing_token_first;
        Model {
            config,
            token_next: token_first,
            seq_next: 1,
            locks: BTreeMap::new(),
            sessions: BTreeMap::new(),
            replies: Vec::new(),
        }
    }

    fn overloaded(&self) -> Answer {
        Answer {
            retry_after_ms: self.config.retry_after_ms,
            ..with_status(Status::Overloaded)
        }
    }

    /// The earliest lock event by (due, kind, seq): hold expiries are kind 0, waits kind 1.
    fn next_event(&self) -> Option<(Instant, u8, u64, Vec<u8>)> {
        let mut events = Vec::new();
        for (name, lock) in &self.locks {
            if let Some(hold) = &lock.hold {
                events.push((hold.expiry, 0, hold.token, name.clone()));
            }
            for waiter in &lock.waiters {
                events.push((waiter.deadline, 1, waiter.seq, name.clone()));
            }
        }
        events.into_iter().min()
    }

    fn next_timeout(&self) -> Option<Instant> {
        let idle = millis(self.config.session_idle_ms);
        let sessions = self.sessions.values().map(|s| s.active_last + idle);
        self.next_event()
            .map(|event| event.0)
            .into_iter()
            .chain(sessions)
            .min()
    }

    fn advance(&mut self, now: Instant) {
        while let Some((due, kind, seq, name)) = self.next_event().filter(|event| event.0 <= now) {
            let lock = self.locks.get_mut(&name).unwrap();
            if kind == 0 {
                lock.hold = None;
                self.hand_off(&name, due);
            } else {
                let index = lock.waiters.iter().position(|w| w.seq == seq).unwrap();
                let waiter = lock.waiters.remove(index);
                self.answer_waiter(
                    waiter,
                    Answer {
                        queued: true,
                        ..with_status(Status::LockAcquisitionTimeout)
                    },
                );
            }
            self.maybe_forget(&name);
        }
        let idle = millis(self.config.session_idle_ms);
        self.sessions.retain(|_, s| {
            let keep = s.active_last + idle > now;
            assert!(keep || s.pending.is_empty());
            keep
        });
    }

    fn maybe_forget(&mut self, name: &[u8]) {
        let lock = &self.locks[name];
        if lock.hold.is_none() && lock.waiters.is_empty() && lock.default_ttl_ms == 0 {
            self.locks.remove(name);
        }
    }

    /// The provisional answer to a queued acquire.
    fn waiting(&self, name: &[u8], ttl_ms: u32) -> Answer {
        Answer {
            lease_ms: self.ttl(name, ttl_ms),
            waiter_count: self.locks[name].waiters.len() as u32,
            ..with_status(Status::Waiting)
        }
    }

    fn ttl(&self, name: &[u8], ttl_ms: u32) -> u32 {
        let default = self.locks[name].default_ttl_ms;
        if ttl_ms != 0 {
            ttl_ms
        } else if default != 0 {
            default
        } else {
            self.config.ttl_default_ms
        }
    }

    fn grant(
        &mut self,
        name: &[u8],
        client: &[u8],
        ttl_ms: u32,
        at: Instant,
        queued: bool,
    ) -> Answer {
        let ttl_ms = self.ttl(name, ttl_ms);
        let token = self.token_next;
        self.token_next += 1;
        self.locks.get_mut(name).unwrap().hold = Some(ModelHold {
            client: client.to_vec(),
            count: 1,
            token,
            expiry: at + millis(ttl_ms),
            ttl_ms,
        });
        Answer {
            fencing_token: token,
            hold_count: 1,
            lease_ms: ttl_ms,
            queued,
            ..with_status(Status::Ok)
        }
    }

    fn grant_again(&mut self, name: &[u8], ttl_ms: u32, at: Instant, queued: bool) -> Answer {
        let ttl_ms = self.ttl(name, ttl_ms);
        let holds_max = self.config.holds_per_lock_max;
        let hold = self.locks.get_mut(name).unwrap().hold.as_mut().unwrap();
        if hold.count == holds_max {
            return Answer {
                queued,
                ..with_status(Status::HoldLimitExceeded)
            };
        }
        hold.count += 1;
        hold.expiry = hold.expiry.max(at + millis(ttl_ms));
        hold.ttl_ms = ttl_ms;
        Answer {
            fencing_token: hold.token,
            hold_count: hold.count,
            // The hold's whole lease from now (never shortened), in whole ms rounded down.
            lease_ms: ((hold.expiry.as_micros() - at.as_micros()) / 1_000) as u32,
            queued,
            ..with_status(Status::Ok)
        }
    }

    fn hand_off(&mut self, name: &[u8], at: Instant) {
        loop {
            let lock = &self.locks[name];
            let Some(head) = lock.waiters.first() else {
                break;
            };
            let same_client = lock.hold.as_ref().map(|hold| hold.client == head.client);
            if head.deadline > at && same_client == Some(false) {
                break;
            }
            let waiter = self.locks.get_mut(name).unwrap().waiters.remove(0);
            let answer = if waiter.deadline <= at {
                Answer {
                    queued: true,
                    ..with_status(Status::LockAcquisitionTimeout)
                }
            } else if same_client.is_none() {
                self.grant(name, &waiter.client, waiter.ttl_ms, at, true)
            } else {
                self.grant_again(name, waiter.ttl_ms, at, true)
            };
            self.answer_waiter(waiter, answer);
        }
    }

    fn answer_waiter(&mut self, waiter: ModelWaiter, answer: Answer) {
        let session = self.sessions.get_mut(&waiter.id.session).unwrap();
        assert!(session.pending.remove(&waiter.id.request));
        self.remember(waiter.id, RequestKind::Acquire, answer, waiter.attempt);
        self.replies.push(Reply {
            to: waiter.reply_to,
            id: waiter.id,
            attempt: waiter.attempt,
            kind: RequestKind::Acquire,
            answer,
            holder: IdBuf::EMPTY,
            holder_truncated: false,
        });
    }

    fn remember(&mut self, id: RequestId, kind: RequestKind, answer: Answer, attempt: u16) {
        let session = self.sessions.get_mut(&id.session).unwrap();
        session.answers.insert(id.request, (kind, answer, attempt));
        if session.answers.len() > self.config.answers_per_session_max as usize {
            let evicted = *session
                .answers
                .keys()
                .find(|&&request| request != id.request)
                .unwrap();
            session.answers.remove(&evicted);
            session.expired_through = session.expired_through.max(evicted);
        }
    }

    fn reply(&mut self, request: &Request<'_>, attempt: u16, answer: Answer, holder: IdBuf) {
        // Spec §2.2 rule 5: a STATUS_REPLY (76 bytes + the holder id) is no longer than the
        // datagram that asked; the holder id is left out, and said to be, when it does not fit.
        let (holder, holder_truncated) = match request.body {
            RequestBody::Status { .. } if 76 + holder.len() > usize::from(request.datagram_len) => {
                (IdBuf::EMPTY, !holder.is_empty())
            }
            _ => (holder, false),
        };
        self.replies.push(Reply {
            to: request.reply_to,
            id: request.id,
            attempt,
            kind: request.body.kind(),
            answer,
            holder,
            holder_truncated,
        });
    }

    fn valid(&self, request: &Request<'_>) -> bool {
        let id = |id: &[u8]| !id.is_empty() && id.len() <= ID_LEN_MAX;
        let c = &self.config;
        request.id.session != 0
            && request.id.request != 0
            && match request.body {
                RequestBody::Acquire {
                    resource,
                    client,
                    wait_ms,
                    ttl_ms,
                } => {
                    id(resource) && id(client) && wait_ms <= c.wait_ms_max && ttl_ms <= c.ttl_ms_max
                }
                RequestBody::Release { resource, client } => id(resource) && id(client),
                RequestBody::Renew {
                    resource,
                    client,
                    ttl_ms,
                } => id(resource) && id(client) && ttl_ms <= c.ttl_ms_max,
                RequestBody::Status { resource } => id(resource),
                RequestBody::Configure {
                    resource,
                    default_ttl_ms,
                } => id(resource) && default_ttl_ms <= c.ttl_ms_max,
                RequestBody::Keepalive { ttl_ms, tokens, .. } => {
                    ttl_ms <= c.ttl_ms_max && (1..=64).contains(&tokens.len())
                }
                RequestBody::CancelWait {
                    resource,
                    client,
                    target_session,
                    target_request,
                } => {
                    id(resource)
                        && id(client)
                        && target_session != 0
                        && target_request != 0
                        && (target_session, target_request)
                            != (request.id.session, request.id.request)
                }
            }
    }

    fn handle_request(&mut self, now: Instant, request: Request<'_>) {
        self.advance(now);
        if !self.valid(&request) {
            self.reply(
                &request,
                request.attempt,
                with_status(Status::InvalidArgument),
                IdBuf::EMPTY,
            );
            return;
        }
        if let RequestBody::Status { resource } = request.body {
            let (answer, holder) = match self.locks.get(resource) {
                // Free, known or not: every field zero.
                None => (with_status(Status::Ok), IdBuf::EMPTY),
                Some(lock) => {
                    let waiter_count = lock.waiters.len() as u32;
                    match &lock.hold {
                        None => (
                            Answer {
                                waiter_count,
                                ..with_status(Status::Ok)
                            },
                            IdBuf::EMPTY,
                        ),
                        Some(hold) => (
                            Answer {
                                fencing_token: hold.token,
                                hold_count: hold.count,
                                lease_ms: ((hold.expiry.as_micros() - now.as_micros()) / 1_000)
                                    as u32,
                                waiter_count,
                                ..with_status(Status::Ok)
                            },
                            IdBuf::new(&hold.client),
                        ),
                    }
                }
            };
            self.reply(&request, request.attempt, answer, holder);
            return;
        }
        let RequestId {
            session: sid,
            request: rid,
        } = request.id;
        let kind = request.body.kind();
        if !self.sessions.contains_key(&sid)
            && self.sessions.len() == self.config.sessions_max as usize
        {
            let answer = self.overloaded();
            self.reply(&request, request.attempt, answer, IdBuf::EMPTY);
            return;
        }
        let session = self.sessions.entry(sid).or_insert(ModelSession {
            active_last: now,
            expired_through: 0,
            answers: BTreeMap::new(),
            pending: BTreeSet::new(),
        });
        session.active_last = now;
        if let Some(&(remembered_kind, answer, attempt)) = session.answers.get(&rid) {
            let (answer, attempt) = if remembered_kind == kind {
                (answer, attempt)
            } else {
                (with_status(Status::InvalidArgument), request.attempt)
            };
            self.reply(&request, attempt, answer, IdBuf::EMPTY);
            return;
        }
        if session.pending.contains(&rid) {
            if kind != RequestKind::Acquire {
                self.reply(
                    &request,
                    request.attempt,
                    with_status(Status::InvalidArgument),
                    IdBuf::EMPTY,
                );
                return;
            }
            let (name, waiter) = self
                .locks
                .iter_mut()
                .flat_map(|(name, lock)| lock.waiters.iter_mut().map(move |w| (name, w)))
                .find(|(_, w)| w.id == request.id)
                .unwrap();
            waiter.reply_to = request.reply_to;
            waiter.attempt = waiter.attempt.max(request.attempt);
            let (name, ttl_ms, attempt) = (name.clone(), waiter.ttl_ms, waiter.attempt);
            let answer = self.waiting(&name, ttl_ms);
            self.reply(&request, attempt, answer, IdBuf::EMPTY);
            return;
        }
        if rid <= session.expired_through {
            self.reply(
                &request,
                request.attempt,
                with_status(Status::RequestExpired),
                IdBuf::EMPTY,
            );
            return;
        }
        if session.pending.len() == self.config.answers_per_session_max as usize {
            let answer = self.overloaded();
            self.reply(&request, request.attempt, answer, IdBuf::EMPTY);
            return;
        }
        let answer = match request.body {
            RequestBody::Acquire {
                resource,
                client,
                wait_ms,
                ttl_ms,
            } => self.acquire(now, &request, resource, client, wait_ms, ttl_ms),
            RequestBody::Release { resource, client } => Some(self.release(now, resource, client)),
            RequestBody::Renew {
                resource,
                client,
                ttl_ms,
            } => Some(self.renew(now, resource, client, ttl_ms)),
            RequestBody::Configure {
                resource,
                default_ttl_ms,
            } => Some(self.configure(resource, default_ttl_ms)),
            RequestBody::Keepalive { ttl_ms, tokens, .. } => {
                Some(self.keepalive(now, tokens, ttl_ms))
            }
            RequestBody::CancelWait {
                resource,
                client,
                target_session,
                target_request,
            } => Some(self.cancel_wait(
                now,
                resource,
                client,
                RequestId {
                    session: target_session,
                    request: target_request,
                },
            )),
            RequestBody::Status { .. } => unreachable!(),
        };
        if let Some(answer) = answer {
            if !matches!(
                answer.status,
                Status::Overloaded | Status::InvalidArgument | Status::RequestExpired
            ) {
                self.remember(request.id, kind, answer, request.attempt);
            }
            self.reply(&request, request.attempt, answer, IdBuf::EMPTY);
        } else if let RequestBody::Acquire {
            resource, ttl_ms, ..
        } = request.body
        {
            let answer = self.waiting(resource, ttl_ms);
            self.reply(&request, request.attempt, answer, IdBuf::EMPTY);
        }
    }

    /// Spec §4.12, the plainest way: find the waiter by scanning every queue.
    fn cancel_wait(
        &mut self,
        now: Instant,
        resource: &[u8],
        client: &[u8],
        target: RequestId,
    ) -> Answer {
        let found = self.locks.iter().find_map(|(name, lock)| {
            let index = lock.waiters.iter().position(|w| w.id == target)?;
            Some((name.clone(), index))
        });
        if let Some((name, index)) = found {
            let waiter = &self.locks[&name].waiters[index];
            if name != resource || waiter.client != client {
                return with_status(Status::InvalidArgument);
            }
            let waiter = self.locks.get_mut(&name).unwrap().waiters.remove(index);
            let withdrawn = Answer {
                queued: true,
                ..with_status(Status::LockAcquisitionTimeout)
            };
            self.answer_waiter(waiter, withdrawn);
            return Answer {
                waiter_count: 1,
                ..with_status(Status::Ok)
            };
        }
        if let Some(session) = self.sessions.get(&target.session) {
            if let Some(&(kind, answer, _)) = session.answers.get(&target.request) {
                if kind != RequestKind::Acquire {
                    return with_status(Status::InvalidArgument);
                }
                if answer.status != Status::Ok {
                    return with_status(Status::Ok);
                }
                return Answer {
                    hold_count: answer.hold_count,
                    fencing_token: answer.fencing_token,
                    lease_ms: answer.lease_ms,
                    ..with_status(Status::Ok)
                };
            }
            if target.request <= session.expired_through {
                return with_status(Status::RequestExpired);
            }
        } else {
            if self.sessions.len() == self.config.sessions_max as usize {
                return self.overloaded();
            }
            self.sessions.insert(
                target.session,
                ModelSession {
                    active_last: now,
                    expired_through: 0,
                    answers: BTreeMap::new(),
                    pending: BTreeSet::new(),
                },
            );
        }
        self.remember(
            target,
            RequestKind::Acquire,
            with_status(Status::LockAcquisitionTimeout),
            0,
        );
        with_status(Status::Ok)
    }

    fn acquire(
        &mut self,
        now: Instant,
        request: &Request<'_>,
        resource: &[u8],
        client: &[u8],
        wait_ms: u32,
        ttl_ms: u32,
    ) -> Option<Answer> {
        if !self.locks.contains_key(resource) {
            if self.locks.len() == self.config.resources_max as usize {
                return Some(self.overloaded());
            }
            self.locks.insert(resource.to_vec(), ModelLock::default());
        }
        let waiters_total: usize = self.locks.values().map(|l| l.waiters.len()).sum();
        let lock = &self.locks[resource];
        let answer = match &lock.hold {
            None => self.grant(resource, client, ttl_ms, now, false),
            Some(hold) if hold.client == client => self.grant_again(resource, ttl_ms, now, false),
            Some(_) if wait_ms == 0 => with_status(Status::LockAcquisitionTimeout),
            Some(_) => {
                if lock.waiters.len() == self.config.waiters_per_resource_max as usize
                    || waiters_total == self.config.waiters_max as usize
                {
                    return Some(self.overloaded());
                }
                let seq = self.seq_next;
                self.seq_next += 1;
                self.locks
                    .get_mut(resource)
                    .unwrap()
                    .waiters
                    .push(ModelWaiter {
                        seq,
                        id: request.id,
                        reply_to: request.reply_to,
                        client: client.to_vec(),
                        deadline: now + millis(wait_ms),
                        ttl_ms,
                        attempt: request.attempt,
                    });
                self.sessions
                    .get_mut(&request.id.session)
                    .unwrap()
                    .pending
                    .insert(request.id.request);
                return None;
            }
        };
        Some(answer)
    }

    fn release(&mut self, now: Instant, resource: &[u8], client: &[u8]) -> Answer {
        let Some(hold) = self
            .locks
            .get_mut(resource)
            .and_then(|lock| lock.hold.as_mut())
            .filter(|hold| hold.client == client)
        else {
            return with_status(Status::LockNotHeld);
        };
        hold.count -= 1;
        let answer = Answer {
            fencing_token: hold.token,
            hold_count: hold.count,
            ..with_status(Status::Ok)
        };
        if hold.count == 0 {
            self.locks.get_mut(resource).unwrap().hold = None;
            self.hand_off(resource, now);
            self.maybe_forget(resource);
        }
        answer
    }

    fn renew(&mut self, now: Instant, resource: &[u8], client: &[u8], ttl_ms: u32) -> Answer {
        let Some(hold) = self
            .locks
            .get_mut(resource)
            .and_then(|lock| lock.hold.as_mut())
            .filter(|hold| hold.client == client)
        else {
            return with_status(Status::LockNotHeld);
        };
        if ttl_ms != 0 {
            hold.ttl_ms = ttl_ms;
        }
        hold.expiry = hold.expiry.max(now + millis(hold.ttl_ms));
        Answer {
            fencing_token: hold.token,
            hold_count: hold.count,
            lease_ms: ((hold.expiry.as_micros() - now.as_micros()) / 1_000) as u32,
            ..with_status(Status::Ok)
        }
    }

    /// Spec §4.11, the plainest way: each token looked for among every lock's hold, each
    /// found renewed as RENEW renews.
    fn keepalive(&mut self, now: Instant, tokens: Tokens<'_>, ttl_ms: u32) -> Answer {
        let mut renewed = 0u64;
        let mut lease_min: Option<u32> = None;
        for (i, token) in tokens.iter().enumerate() {
            let Some(hold) = self
                .locks
                .values_mut()
                .filter_map(|lock| lock.hold.as_mut())
                .find(|hold| hold.token == token)
            else {
                continue;
            };
            if ttl_ms != 0 {
                hold.ttl_ms = ttl_ms;
            }
            hold.expiry = hold.expiry.max(now + millis(hold.ttl_ms));
            let lease = ((hold.expiry.as_micros() - now.as_micros()) / 1_000) as u32;
            renewed |= 1 << i;
            lease_min = Some(lease_min.map_or(lease, |min| min.min(lease)));
        }
        Answer {
            fencing_token: renewed,
            hold_count: renewed.count_ones(),
            lease_ms: lease_min.unwrap_or(0),
            ..with_status(Status::Ok)
        }
    }

    fn configure(&mut self, resource: &[u8], default_ttl_ms: u32) -> Answer {
        if !self.locks.contains_key(resource) {
            if default_ttl_ms == 0 {
                return with_status(Status::ResourceDoesNotExist);
            }
            if self.locks.len() == self.config.resources_max as usize {
                return self.overloaded();
            }
            self.locks.insert(resource.to_vec(), ModelLock::default());
        }
        self.locks.get_mut(resource).unwrap().default_ttl_ms = default_ttl_ms;
        self.maybe_forget(resource);
        Answer {
            lease_ms: default_ttl_ms,
            ..with_status(Status::Ok)
        }
    }

    fn stats(&self) -> (u64, u64, u64, u64, u64) {
        let held = self.locks.values().filter(|l| l.hold.is_some()).count();
        let waiters: usize = self.locks.values().map(|l| l.waiters.len()).sum();
        let answers: usize = self.sessions.values().map(|s| s.answers.len()).sum();
        (
            self.locks.len() as u64,
            held as u64,
            waiters as u64,
            self.sessions.len() as u64,
            answers as u64,
        )
    }
}

/// (weight, value) choices: few resources and clients, so locks are contended and re-entered.
const RESOURCES: &[(u32, &[u8])] = &[(4, b"r0"), (2, b"r1"), (1, b"r2"), (1, b"r3")];
const CLIENTS: &[(u32, &[u8])] = &[(3, b"c0"), (3, b"c1"), (1, b"c2")];
/// wait_ms: 0 (never queue), short, up to the maximum, and rarely one over it.
const WAITS_MS: &[(u32, u32)] = &[(2, 0), (2, 1), (4, 7), (4, 20), (4, 50), (1, 51)];
/// ttl_ms: 0 (the default), short, up to the maximum, and rarely one over it.
const TTLS_MS: &[(u32, u32)] = &[(6, 0), (2, 3), (4, 10), (4, 30), (2, 100), (1, 101)];
/// STATUS datagram lengths: the shortest request (no 2-byte holder id fits), one byte short,
/// exactly enough, the length the spec asks for.
const STATUS_LENS: &[(u32, u16)] = &[(1, 76), (1, 77), (1, 78), (2, 331)];
/// Session 3 is the one over sessions_max while the other three are remembered.
const SESSIONS: &[(u32, u8)] = &[(4, 0), (4, 1), (2, 2), (1, 3)];

/// One of `choices`, with probability proportional to its weight.
fn pick<T: Copy + fmt::Debug>(choices: &'static [(u32, T)]) -> impl Strategy<Value = T> + Clone {
    let total: u32 = choices.iter().map(|&(weight, _)| weight).sum();
    (0..total).prop_map(move |mut x| {
        for &(weight, value) in choices {
            if x < weight {
                return value;
            }
            x -= weight;
        }
        unreachable!("x < total")
    })
}

fn model_config() -> Config {
    Config {
        resources_max: 3,
        waiters_per_resource_max: 3,
        waiters_max: 4,
        holds_per_lock_max: 3,
        sessions_max: 3,
        answers_per_session_max: 4,
        session_idle_ms: udplock_protocol::REQUEST_LIFETIME_MS_MAX + 1,
        ttl_default_ms: 20,
        ttl_ms_max: 100,
        wait_ms_max: 50,
        retry_after_ms: 7,
        // Not 1, so the model checks that the table starts its counter where it is told.
        fencing_token_first: 1_000,
        startup_grace_ms: 0,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Send {
        session: u8,
        body: RequestBody<'static>,
        datagram_len: u16,
    },
    /// Sends an earlier request again, with the next attempt number, from `port`.
    Retransmit { pick: Index, port: u16 },
    /// Moves the clock (microseconds) and fires timers.
    Advance { us: u64 },
    /// A CANCEL_WAIT (spec §4.12) from `session`: of an earlier request (`ahead` false), with
    /// its resource and client unless `wrong`, or of the next request `target` will send
    /// (`ahead`: the cancel overtakes its target).
    Cancel {
        session: u8,
        pick: Index,
        target: u8,
        ahead: bool,
        wrong: bool,
    },
}

/// The length of every request but a STATUS: room for a WAITING and a final answer.
const ROOM_FOR_WAITING_LEN: u16 = 2 * REPLY_LEN_MIN as u16;

/// Tokens a KEEPALIVE of the model test may list: the first 16 the table issues (from
/// `fencing_token_first`, 1000), as the wire carries them. A run of them names holds, former
/// holds and tokens never issued alike.
static KEEPALIVE_TOKEN_BYTES: [u8; 8 * 16] = {
    let mut out = [0u8; 8 * 16];
    let mut i = 0;
    while i < 16 {
        let token = (1_000 + i as u64).to_be_bytes();
        let mut j = 0;
        while j < 8 {
            out[8 * i + j] = token[j];
            j += 1;
        }
        i += 1;
    }
    out
};

/// A KEEPALIVE of 1 to 4 consecutive tokens of [`KEEPALIVE_TOKEN_BYTES`].
fn keepalive_tokens() -> impl Strategy<Value = Tokens<'static>> + Clone {
    (0..16usize, 1..=4usize).prop_map(|(first, len)| {
        let end = (first + len).min(16);
        Tokens::from_bytes(&KEEPALIVE_TOKEN_BYTES[8 * first..8 * end]).expect("whole tokens")
    })
}

/// An operation and the length of the datagram that carries it.
fn command() -> impl Strategy<Value = (RequestBody<'static>, u16)> {
    let (resource, client) = (pick(RESOURCES), pick(CLIENTS));
    let (wait, ttl) = (pick(WAITS_MS), pick(TTLS_MS));
    let room = |body| (body, ROOM_FOR_WAITING_LEN);
    prop_oneof![
        5 => (resource.clone(), client.clone(), wait, ttl.clone()).prop_map(
            move |(resource, client, wait_ms, ttl_ms)| room(RequestBody::Acquire { resource, client, wait_ms, ttl_ms })
        ),
        3 => (resource.clone(), client.clone())
            .prop_map(move |(resource, client)| room(RequestBody::Release { resource, client })),
        1 => (resource.clone(), client, ttl.clone())
            .prop_map(move |(resource, client, ttl_ms)| room(RequestBody::Renew { resource, client, ttl_ms })),
        1 => (resource.clone(), pick(STATUS_LENS))
            .prop_map(|(resource, datagram_len)| (RequestBody::Status { resource }, datagram_len)),
        1 => (resource, ttl.clone())
            .prop_map(move |(resource, default_ttl_ms)| room(RequestBody::Configure { resource, default_ttl_ms })),
        2 => (keepalive_tokens(), ttl)
            .prop_map(move |(tokens, ttl_ms)| room(RequestBody::Keepalive { shard: 0, shards: 1, ttl_ms, tokens })),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (pick(SESSIONS), command())
            .prop_map(|(session, (body, datagram_len))| Op::Send { session, body, datagram_len }),
        3 => (any::<Index>(), 1..4u16).prop_map(|(pick, port)| Op::Retransmit { pick, port }),
        4 => (0..20_000u64).prop_map(|us| Op::Advance { us }),
        3 => (pick(SESSIONS), any::<Index>(), pick(SESSIONS), pick(&[(4, false), (1, true)]), pick(&[(6, false), (1, true)]))
            .prop_map(|(session, pick, target, ahead, wrong)| Op::Cancel { session, pick, target, ahead, wrong }),
        1 => Just(Op::Advance { us: 1_000 * u64::from(model_config().session_idle_ms) }),
    ]
}

/// Drives the table and the model with the same inputs and checks the safety rules.
struct Driver {
    table: LockTable,
    model: Model,
    now: Instant,
    request_last: [u64; 4],
    /// Every request sent so far (for retransmits), with its latest attempt.
    sent: Vec<(RequestId, u16, RequestBody<'static>, u16)>,
    /// The first remembered answer per request: it must never change.
    first_answer: HashMap<RequestId, Answer>,
    /// Acquires queued and not answered yet.
    pending: HashSet<RequestId>,
    /// The last fencing token granted per resource.
    token_last: HashMap<&'static [u8], u64>,
    resource_of: HashMap<RequestId, &'static [u8]>,
}

impl Driver {
    fn new() -> Driver {
        Driver {
            table: LockTable::new(model_config()),
            model: Model::new(model_config()),
            now: Instant::ZERO,
            request_last: [0; 4],
            sent: Vec::new(),
            first_answer: HashMap::new(),
            pending: HashSet::new(),
            token_last: HashMap::new(),
            resource_of: HashMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Send {
                session,
                body,
                datagram_len,
            } => {
                let index = usize::from(session);
                self.request_last[index] += 1;
                let id = RequestId {
                    session: 100 + u64::from(session),
                    request: self.request_last[index],
                };
                self.sent.push((id, 0, body, datagram_len));
                self.send(id, 0, addr(1), body, datagram_len)
            }
            Op::Retransmit { pick, port } => {
                if self.sent.is_empty() {
                    return Ok(());
                }
                let index = pick.index(self.sent.len());
                let entry = &mut self.sent[index];
                entry.1 = entry.1.saturating_add(1);
                let (id, attempt, body, datagram_len) = *entry;
                self.send(id, attempt, addr(port), body, datagram_len)
            }
            Op::Cancel {
                session,
                pick,
                target,
                ahead,
                wrong,
            } => {
                let (target, resource, client) = if ahead || self.sent.is_empty() {
                    let next = self.request_last[usize::from(target)] + 1;
                    let id = RequestId {
                        session: 100 + u64::from(target),
                        request: next,
                    };
                    (id, &b"r0"[..], &b"c0"[..])
                } else {
                    let (id, _, body, _) = self.sent[pick.index(self.sent.len())];
                    let client = body.client().unwrap_or(b"c0");
                    (id, body.resource(), client)
                };
                let client = if wrong { &b"c2"[..] } else { client };
                let index = usize::from(session);
                self.request_last[index] += 1;
                let id = RequestId {
                    session: 100 + u64::from(session),
                    request: self.request_last[index],
                };
                let body = RequestBody::CancelWait {
                    resource,
                    client,
                    target_session: target.session,
                    target_request: target.request,
                };
                self.sent.push((id, 0, body, REPLY_LEN_MIN as u16));
                self.send(id, 0, addr(1), body, REPLY_LEN_MIN as u16)
            }
            Op::Advance { us } => {
                self.now = self.now + Duration::from_micros(us);
                self.table.handle_timeout(self.now);
                self.model.advance(self.now);
                let replies = self.drain();
                self.compare(&replies)?;
                self.check_async(&replies)
            }
        }
    }

    fn send(
        &mut self,
        id: RequestId,
        attempt: u16,
        reply_to: SocketAddr,
        body: RequestBody<'static>,
        datagram_len: u16,
    ) -> Result<(), TestCaseError> {
        // Fire due timers first, so every reply of handle_request with another id is a side
        // effect (a hand-off), and the one with this id is the answer to this request.
        self.table.handle_timeout(self.now);
        self.model.advance(self.now);
        let replies = self.drain();
        self.compare(&replies)?;
        self.check_async(&replies)?;

        if let RequestBody::Acquire { resource, .. } = body {
            self.resource_of.insert(id, resource);
        }
        let request = Request {
            id,
            attempt,
            reply_to,
            body,
            datagram_len,
        };
        self.table.handle_request(self.now, request);
        self.model.handle_request(self.now, request);
        let replies = self.drain();
        self.compare(&replies)?;
        let (own, others): (Vec<Reply>, Vec<Reply>) = replies.into_iter().partition(|r| r.id == id);
        self.check_async(&others)?;
        prop_assert!(own.len() <= 1);
        match own.first() {
            // Every request is answered at once: a queued acquire (or its keepalive) WAITING.
            None => prop_assert!(false, "{id:?} got no answer"),
            Some(reply) if reply.answer.status == Status::Waiting => {
                prop_assert_eq!(body.kind(), RequestKind::Acquire);
                prop_assert!(!self.first_answer.contains_key(&id));
                self.pending.insert(id);
            }
            Some(reply) => {
                prop_assert!(
                    !self.pending.contains(&id),
                    "a queued acquire is answered only when granted or timed out"
                );
                self.check_answer(reply)?;
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> Vec<Reply> {
        let replies: Vec<Reply> = std::iter::from_fn(|| self.table.poll_reply()).collect();
        self.table.check_all();
        replies
    }

    fn compare(&mut self, replies: &[Reply]) -> Result<(), TestCaseError> {
        let expected: Vec<Reply> = self.model.replies.drain(..).collect();
        prop_assert_eq!(replies, &expected[..]);
        let s = self.table.stats();
        prop_assert_eq!(
            (
                s.resources,
                s.held,
                s.waiters,
                s.sessions,
                s.answers_remembered
            ),
            self.model.stats()
        );
        prop_assert_eq!(self.table.poll_timeout(), self.model.next_timeout());
        // A forgotten session's answers are gone: a retransmit after that is run as new (the
        // client broke its retransmit lifetime; that is what session_idle_ms bounds).
        let sessions = &self.model.sessions;
        self.first_answer
            .retain(|id, _| sessions.contains_key(&id.session));
        Ok(())
    }

    /// Replies that do not answer the request at hand: answers to queued acquires, once each.
    fn check_async(&mut self, replies: &[Reply]) -> Result<(), TestCaseError> {
        for reply in replies {
            prop_assert!(reply.answer.queued);
            prop_assert!(
                self.pending.remove(&reply.id),
                "{:?} was not queued, or answered twice",
                reply.id
            );
            self.check_answer(reply)?;
        }
        Ok(())
    }

    fn check_answer(&mut self, reply: &Reply) -> Result<(), TestCaseError> {
        let answer = reply.answer;
        if reply.kind == RequestKind::Status && answer.status == Status::Ok {
            prop_assert_eq!(
                reply.holder.is_empty() && !reply.holder_truncated,
                answer.hold_count == 0
            );
            prop_assert!(
                !reply.holder_truncated || reply.holder.is_empty(),
                "a truncated holder is left out"
            );
            prop_assert_eq!(answer.fencing_token == 0, answer.hold_count == 0);
            prop_assert!(
                answer.waiter_count == 0 || answer.hold_count > 0,
                "waiters only wait for a held lock"
            );
            return Ok(());
        }
        if matches!(
            answer.status,
            Status::Overloaded | Status::InvalidArgument | Status::RequestExpired
        ) {
            return Ok(());
        }
        match self.first_answer.get(&reply.id) {
            Some(first) => prop_assert_eq!(*first, answer, "a remembered answer never changes"),
            None => {
                self.first_answer.insert(reply.id, answer);
                if reply.kind == RequestKind::Acquire && answer.status == Status::Ok {
                    let resource = self.resource_of[&reply.id];
                    let last = self.token_last.entry(resource).or_insert(0);
                    if answer.hold_count == 1 {
                        prop_assert!(
                            answer.fencing_token > *last,
                            "a new hold gets a larger token"
                        );
                    } else {
                        prop_assert_eq!(answer.fencing_token, *last, "re-entry keeps the token");
                    }
                    *last = answer.fencing_token;
                }
            }
        }
        Ok(())
    }

    /// Lets every lease, wait and session run out: nothing may stay queued or unanswered.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        let config = model_config();
        let end_ms = config.ttl_ms_max + config.wait_ms_max + config.session_idle_ms + 1;
        self.apply(&Op::Advance {
            us: 1_000 * u64::from(end_ms),
        })?;
        prop_assert!(self.pending.is_empty(), "unanswered: {:?}", self.pending);
        let s = self.table.stats();
        prop_assert_eq!(
            (
                s.held,
                s.waiters,
                s.sessions,
                s.answers_remembered,
                s.timers
            ),
            (0, 0, 0, 0, 0)
        );
        prop_assert_eq!(self.table.poll_timeout(), None);
        Ok(())
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lock_table_matches_the_reference_model(ops in prop::collection::vec(op(), 1..200)) {
        let mut driver = Driver::new();
        for op in &ops {
            driver.apply(op)?;
        }
        driver.finish()?;
    }
}
