//! Simulated lock clients: each follows the spec's client rules (§7.1) on its own drifting
//! clock, one request outstanding at a time, and records what it saw and *believed* into the
//! [`History`] the checkers read.
//!
//! A client is driven by the simulator like a core: [`Client::wake`] when its timer is due,
//! [`Client::on_reply`] when a datagram reaches it; both push the requests to send into an
//! outbox, and [`Client::next_wake`] says when to wake it next (on its own clock).
//!
//! Rules followed (spec §7.1), as the reference client (`crate::client`) follows them: a new
//! request id per operation, the same id with attempt + 1 on every copy; RFC 6298
//! retransmission through [`RequestTimer`], one back-off per request whatever node its copies
//! go to; keepalives once WAITING, with the deadline moved to `WAITING receipt + wait_ms +
//! grace`; OVERLOADED is not final: the same request again when the timer fires but not before
//! its hint; the routing rules of §7.1.7 (a ring of configured servers in the client's own
//! order, suspect nodes, hints followed at once only to nodes that are not suspect and at most
//! [`REDIRECTS_FAST_MAX`] times, silence after [`SILENT_SENDS_MAX`] copies); every request
//! gives up at its deadline. A RELEASE that ends without a settling answer (silence, or only
//! OVERLOADED) is a *doubt* (§7.1.5): the client keeps it, moves to a new session (the real
//! client's lanes: no other request shares a session that still carries a doubt), and before
//! its next ACQUIRE, RENEW or RELEASE of the same lock sends it again, same ids and the next
//! attempt number, until an answer settles it; if that does not happen within the new
//! operation's deadline, the operation gives up without being sent. (A late copy of an
//! abandoned RELEASE committed after the client's next ACQUIRE of the same lock would release
//! that new hold while the client believes in it: seed 353 showed it, and issue 7 item 2 the
//! OVERLOADED path to it.) The hold counts a client believes in are the server's, from the
//! latest reply that reported one, so they never exceed the real count. Validity of a hold is
//! `send_time(echoed attempt) + lease_ms · (1 − drift_bound)` (§6.4, §7.1.6), and a client
//! stops believing it holds a lock the moment it sends the release that takes its hold count
//! to zero.
//!
//! In *random* mode a client loops: acquire (sometimes a try-acquire with wait 0) → hold for
//! a while, sometimes renewing, sometimes re-entering, sometimes letting the lease lapse
//! without a release → release; now and then a STATUS. In *scripted* mode (scenarios) it only
//! runs the actions the scenario queues.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use udplock_protocol::{Status, REPLY_LEN_MIN, STATUS_REQUEST_LEN};

use super::check::History;
use super::Clock;
use crate::core::lock_table::{Command, Reply, Request, RequestId};
use crate::core::raft::NodeId;
use crate::core::retransmit::{
    RequestTimer, RetransmitConfig, RttEstimator, REDIRECTS_FAST_MAX, SILENT_SENDS_MAX,
};
use crate::core::time::{Duration, Instant};

/// The resources clients contend for (the first `SimConfig::resources` of them).
pub(super) const RESOURCES: [&[u8]; 4] = [b"r0", b"r1", b"r2", b"r3"];
/// Client ids, one per simulated client (the lock holder's name).
pub(super) const CLIENT_IDS: [&[u8]; 8] = [b"c0", b"c1", b"c2", b"c3", b"c4", b"c5", b"c6", b"c7"];

/// The lengths a client's STATUS datagrams take, in turn: the shortest request (no holder id
/// fits), one byte short of a 2-byte holder id, exactly enough, and the length the spec asks
/// for (§2.2 rule 4). A STATUS that waits at a leader (ReadIndex) must be answered within its
/// own length and must name the holder when it fits (`check::check_log`).
pub(super) const STATUS_LENS: [u16; 4] = [
    REPLY_LEN_MIN as u16,
    REPLY_LEN_MIN as u16 + 1,
    REPLY_LEN_MIN as u16 + 2,
    STATUS_REQUEST_LEN as u16,
];

/// The length of the STATUS with request id `request`: it varies from one STATUS to the next
/// without drawing from the client's random numbers (which would change every other seed).
fn status_len(request: u64) -> u16 {
    STATUS_LENS[(request % STATUS_LENS.len() as u64) as usize]
}

/// How long after its wait an acquire keeps retransmitting for the final answer
/// (`acquire_grace_ms`, spec §7.1.3; kept short so the liveness bound stays tight).
pub(super) const ACQUIRE_GRACE: Duration = Duration::from_millis(1_000);
/// Deadline of a RENEW or STATUS after it starts (`request_timeout_ms`, spec §7.1.3).
pub(super) const OP_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Deadline of a RELEASE: the reference client's default `request_timeout_ms` (2 s), longer
/// than a try-acquire's grace, as there: a doubt replayed before a try-acquire has less time
/// than the RELEASE had (issue 7 item 7 lived in that gap).
pub(super) const RELEASE_TIMEOUT: Duration = Duration::from_millis(2_000);

/// What a node sends a client.
#[derive(Clone, Debug)]
pub(super) enum ReplyMsg {
    Answer(Box<Reply>),
    /// The node cannot serve the request (the shell's NOT_LEADER reply, spec §7.1.5).
    NotLeader {
        id: RequestId,
        attempt: u16,
        hint: Option<NodeId>,
    },
}

/// One operation a client performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Acquire {
        resource: usize,
        wait_ms: u32,
        ttl_ms: u32,
    },
    Release {
        resource: usize,
    },
    Renew {
        resource: usize,
        ttl_ms: u32,
    },
    Status {
        resource: usize,
    },
    /// Stop using the hold without releasing it: its lease lapses at the server.
    Abandon,
}

/// Where one request's copies go (spec §7.1.7): its destination `D`, its ring position `p`
/// and what rules 4 and 5 need to know.
struct Route {
    dest: NodeId,
    /// Index into the client's configured servers.
    ring: usize,
    dest_first_attempt: Option<u16>,
    /// Copies sent to `dest` in a row that no reply answered yet, and the first one's attempt.
    unanswered: u32,
    unanswered_from: u16,
    fast_redirects: u32,
}

/// A RELEASE whose outcome is unknown (spec §7.1.5).
struct Doubt {
    resource: usize,
    /// The request as sent (its session is the one it was sent in).
    request: Request<'static>,
    /// Its copies so far: a replay goes on with the next attempt number.
    timer: RequestTimer,
}

/// The request outstanding.
struct Op {
    /// Its record in the history.
    record: usize,
    action: Action,
    /// The action's own request.
    request: Request<'static>,
    /// A doubt on the same lock, sent again before the action's request leaves (§7.1.5).
    settling: Option<Doubt>,
    /// The timer of what is being sent: the doubt's while settling, else the request's.
    timer: RequestTimer,
    /// Give up at this local time.
    deadline: Instant,
    /// No copy before this local time (OVERLOADED's retry-after).
    not_before: Instant,
    route: Route,
    /// The latest reply other than NOT_LEADER was OVERLOADED.
    overloaded: bool,
}

impl Op {
    /// The request the next copy carries.
    fn current(&self) -> &Request<'static> {
        self.settling.as_ref().map_or(&self.request, |d| &d.request)
    }
}

/// The hold this client believes in.
struct Hold {
    resource: usize,
    /// Re-entrant holds as the server last reported them.
    count: u32,
    token: u64,
    /// Valid while the local clock is before this (spec §7.1.6).
    valid_until: Instant,
}

pub(super) struct Client {
    pub idx: usize,
    pub addr: SocketAddr,
    pub clock: Clock,
    /// Bumped whenever the wake-up is re-armed: older wake events are stale.
    pub generation: u64,
    scripted: bool,
    /// The session new requests go in; replaced when one is left carrying a doubt.
    session: u64,
    request_next: u64,
    rng: StdRng,
    rtt: RttEstimator,
    /// The configured servers, in this client's own order (a rotation of the node ids).
    servers: Vec<NodeId>,
    /// The leader cache (one shard): the leader as last learned.
    leader: Option<NodeId>,
    /// Nodes that left copies unanswered and have not answered since (§7.1.7).
    suspect: Vec<bool>,
    resources: usize,
    drift_ppm: u32,
    op: Option<Op>,
    hold: Option<Hold>,
    /// RELEASEs with an unknown outcome, at most one per resource.
    doubts: Vec<Doubt>,
    /// Actions to start, each not before its local time, in order.
    plan: VecDeque<(Instant, Action)>,
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        idx: usize,
        nodes: usize,
        resources: usize,
        clock: Clock,
        seed: u64,
        drift_ppm: u32,
        scripted: bool,
        now: Instant,
    ) -> Client {
        let mut rng = StdRng::seed_from_u64(seed);
        let session = rng.gen_range(1..u64::MAX);
        let first = rng.gen_range(1..=nodes as u64);
        let servers = (0..nodes as u64)
            .map(|k| (first - 1 + k) % nodes as u64 + 1)
            .collect();
        let mut client = Client {
            idx,
            addr: SocketAddr::from(([10, 0, 0, idx as u8 + 1], 20_000 + idx as u16)),
            clock,
            generation: 0,
            scripted,
            session,
            request_next: 1,
            rng,
            rtt: RttEstimator::new(RetransmitConfig::default()),
            servers,
            leader: None,
            suspect: vec![false; nodes],
            resources,
            drift_ppm,
            op: None,
            hold: None,
            doubts: Vec::new(),
            plan: VecDeque::new(),
        };
        if !scripted {
            let start = clock.local(now) + Duration::from_millis(client.rng.gen_range(0..300));
            client.plan_acquire_or_status(start);
        }
        client
    }

    pub fn id(&self) -> &'static [u8] {
        CLIENT_IDS[self.idx]
    }

    /// Queues an action (scenarios): it starts once every earlier one finished and the local
    /// clock reads `at`.
    pub fn push_action(&mut self, at_local: Instant, action: Action) {
        self.plan.push_back((at_local, action));
    }

    /// When to call [`Client::wake`] next, on this client's clock.
    pub fn next_wake(&self) -> Option<Instant> {
        match &self.op {
            Some(op) => Some(
                op.timer
                    .next_retransmit()
                    .max(op.not_before)
                    .min(op.deadline),
            ),
            None => self.plan.front().map(|&(at, _)| at),
        }
    }

    /// Timers: retransmit, give up, or start the next planned action.
    pub fn wake(
        &mut self,
        now: Instant,
        hist: &mut History,
        out: &mut Vec<(NodeId, Request<'static>)>,
    ) {
        let local = self.clock.local(now);
        if let Some(op) = self.op.as_ref() {
            if local >= op.deadline {
                self.give_up(now, hist);
            } else if op.timer.next_retransmit() <= local && op.not_before <= local {
                self.send(local, out);
            }
        }
        while self.op.is_none() {
            let Some(&(at, action)) = self.plan.front() else {
                break;
            };
            if at > local {
                break;
            }
            self.plan.pop_front();
            self.start(now, action, hist, out);
        }
    }

    fn is_suspect(&self, node: NodeId) -> bool {
        self.suspect[(node - 1) as usize]
    }

    /// Rule 2: the first destination of a new request, and its ring position.
    fn first_route(&self) -> Route {
        let (dest, ring) = match self.leader.filter(|&l| !self.is_suspect(l)) {
            Some(leader) => {
                let ring = self.servers.iter().position(|&n| n == leader).unwrap_or(0);
                (leader, ring)
            }
            None => {
                let ring = self.ring_from(0);
                (self.servers[ring], ring)
            }
        };
        Route {
            dest,
            ring,
            dest_first_attempt: None,
            unanswered: 0,
            unanswered_from: 0,
            fast_redirects: 0,
        }
    }

    /// The first ring position at or after `position` whose server is not suspect.
    fn ring_from(&self, position: usize) -> usize {
        let n = self.servers.len();
        (0..n)
            .map(|k| (position + k) % n)
            .find(|&i| !self.is_suspect(self.servers[i]))
            .unwrap_or(position % n)
    }

    /// Rule 7: the request's copies move on along the ring.
    fn move_on(&mut self) {
        let op = self.op.as_mut().expect("outstanding");
        let ring = {
            let n = self.servers.len();
            let from = op.route.ring + 1;
            (0..n)
                .map(|k| (from + k) % n)
                .find(|&i| !self.suspect[(self.servers[i] - 1) as usize])
                .unwrap_or(from % n)
        };
        let op = self.op.as_mut().expect("outstanding");
        op.route.ring = ring;
        Self::redirect(&mut op.route, self.servers[ring]);
    }

    fn redirect(route: &mut Route, dest: NodeId) {
        route.dest = dest;
        route.dest_first_attempt = None;
        route.unanswered = 0;
    }

    /// A datagram for this client. Anything that does not answer the outstanding request is
    /// dropped (spec §7.1.4).
    pub fn on_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: ReplyMsg,
        hist: &mut History,
        out: &mut Vec<(NodeId, Request<'static>)>,
    ) {
        let local = self.clock.local(now);
        let (id, attempt) = match &msg {
            ReplyMsg::Answer(reply) => (reply.id, reply.attempt),
            ReplyMsg::NotLeader { id, attempt, .. } => (*id, *attempt),
        };
        let current = self
            .op
            .as_ref()
            .map(|op| (op.current().id, op.current().command.kind()));
        if current.is_none_or(|(c, _)| c != id) {
            // Dropped (spec §7.1.4), but the checkers still judge what the server said.
            if let ReplyMsg::Answer(reply) = &msg {
                hist.late(id, now, **reply);
            }
            return;
        }
        let op = self.op.as_mut().expect("outstanding");
        let latest = op
            .timer
            .latest_attempt()
            .expect("an outstanding request was sent");
        if attempt > latest {
            return;
        }
        // Whoever answered is alive; the copies it answers were not lost (rules 4, 6).
        self.suspect[(from - 1) as usize] = false;
        if op.route.unanswered > 0 && attempt >= op.route.unanswered_from {
            op.route.unanswered = 0;
        }
        let reply = match msg {
            ReplyMsg::NotLeader { hint, .. } => {
                self.on_not_leader(local, from, attempt, hint, out);
                return;
            }
            ReplyMsg::Answer(reply) => *reply,
        };
        if reply.kind != current.expect("outstanding").1 {
            return;
        }
        op.route.fast_redirects = 0;
        if let Some(rtt) = op
            .timer
            .rtt_sample(reply.attempt, reply.answer.queued, local)
        {
            self.rtt.on_sample(rtt);
        }
        match reply.answer.status {
            Status::Waiting => {
                self.leader = Some(from);
                op.overloaded = false;
                op.timer.on_waiting(reply.answer.lease_ms);
                if let (Action::Acquire { wait_ms, .. }, None) = (op.action, &op.settling) {
                    let until = local + Duration::from_millis(wait_ms.into()) + ACQUIRE_GRACE;
                    op.deadline = op.deadline.max(until);
                }
                return;
            }
            Status::Overloaded => {
                let pause = Duration::from_millis(reply.answer.retry_after_ms.into());
                op.not_before = op.not_before.max(local + pause);
                op.overloaded = true;
                return;
            }
            _ => {}
        }
        self.leader = Some(from);
        if op.settling.is_some() {
            // Any final answer but INTERNAL_ERROR settles the doubt (spec §7.1.5): no copy of
            // it can take effect any more. The action's own request goes now.
            hist.late(id, now, reply);
            if reply.answer.status == Status::InternalError {
                return;
            }
            op.settling = None;
            op.timer = self.rtt.timer();
            op.not_before = Instant::ZERO;
            op.overloaded = false;
            let route = self.first_route();
            self.op.as_mut().expect("outstanding").route = route;
            self.send(local, out);
            return;
        }
        let op = self.op.take().expect("outstanding");
        hist.answered(op.record, now, reply);
        self.on_final(now, local, &op, &reply, hist);
        if self.plan.is_empty() && !self.scripted {
            self.plan_after(local);
        }
    }

    /// Rule 5: NOT_LEADER never ends a request.
    fn on_not_leader(
        &mut self,
        local: Instant,
        from: NodeId,
        attempt: u16,
        hint: Option<NodeId>,
        out: &mut Vec<(NodeId, Request<'static>)>,
    ) {
        let op = self.op.as_mut().expect("outstanding");
        if op
            .route
            .dest_first_attempt
            .is_none_or(|first| attempt < first)
        {
            return; // answers a copy sent to an earlier destination
        }
        match hint.filter(|&h| h != from) {
            // 5.2: a leader named by a node that has not noticed it is gone: on the timer.
            Some(leader) if self.suspect[(leader - 1) as usize] => {
                Self::redirect(&mut op.route, leader);
            }
            // 5.1: at once, a few times.
            Some(leader) => {
                self.leader = Some(leader);
                Self::redirect(&mut op.route, leader);
                if op.route.fast_redirects < REDIRECTS_FAST_MAX {
                    op.route.fast_redirects += 1;
                    self.send(local, out);
                }
            }
            // 5.3: no leader known: move on, on the timer.
            None => {
                let dest = op.route.dest;
                if self.leader.is_some_and(|l| l == dest || l == from) {
                    self.leader = None;
                }
                self.move_on();
            }
        }
    }

    fn on_final(
        &mut self,
        now: Instant,
        local: Instant,
        op: &Op,
        reply: &Reply,
        hist: &mut History,
    ) {
        let answer = &reply.answer;
        match op.action {
            Action::Acquire {
                resource, ttl_ms, ..
            } if answer.status == Status::Ok => {
                let start = op
                    .timer
                    .lease_start(reply.attempt)
                    .expect("the request was sent");
                let valid_until = start + self.validity(answer.lease_ms);
                let held = self
                    .hold
                    .as_ref()
                    .filter(|h| h.resource == resource && local < h.valid_until);
                let held_token = held.map(|h| h.token);
                let new_hold = self.hold.as_ref().is_none_or(|h| h.resource != resource);
                hist.grant(
                    self.idx,
                    resource,
                    answer.fencing_token,
                    answer.hold_count,
                    held_token,
                    local < valid_until,
                    now,
                    op.record,
                );
                if local < valid_until {
                    hist.interval(
                        self.idx,
                        resource,
                        now,
                        self.clock.true_time(valid_until),
                        op.record,
                    );
                }
                match self.hold.as_mut().filter(|h| h.resource == resource) {
                    Some(h) => {
                        h.count = answer.hold_count;
                        h.token = answer.fencing_token;
                        h.valid_until = h.valid_until.max(valid_until);
                    }
                    None => {
                        self.hold = Some(Hold {
                            resource,
                            count: answer.hold_count,
                            token: answer.fencing_token,
                            valid_until,
                        })
                    }
                }
                if new_hold && !self.scripted {
                    self.plan_hold(local, resource, answer.lease_ms.max(ttl_ms));
                }
            }
            Action::Renew { resource, .. } if answer.status == Status::Ok => {
                let start = op.timer.lease_start(reply.attempt).expect("sent");
                let valid_until = start + self.validity(answer.lease_ms);
                if let Some(h) = self.hold.as_mut().filter(|h| h.resource == resource) {
                    h.count = answer.hold_count;
                    h.valid_until = h.valid_until.max(valid_until);
                }
                if local < valid_until {
                    hist.interval(
                        self.idx,
                        resource,
                        now,
                        self.clock.true_time(valid_until),
                        op.record,
                    );
                }
            }
            Action::Release { resource } => {
                let count = if answer.status == Status::Ok {
                    answer.hold_count
                } else {
                    0
                };
                if let Some(h) = self.hold.as_mut().filter(|h| h.resource == resource) {
                    h.count = count;
                    if count == 0 {
                        self.hold = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// `lease_ms · (1 − drift_bound)` (spec §6.4).
    fn validity(&self, lease_ms: u32) -> Duration {
        let us = Duration::from_millis(lease_ms.into()).as_micros();
        Duration::from_micros(us - us * u64::from(self.drift_ppm) / 1_000_000)
    }

    /// The deadline passed without a final answer (spec §7.1.5).
    fn give_up(&mut self, now: Instant, hist: &mut History) {
        let op = self.op.take().expect("outstanding");
        hist.gave_up(op.record, now);
        if let Some(doubt) = op.settling {
            // The doubt is still unsettled: the action was never sent and changed nothing.
            self.doubts.push(Doubt {
                timer: op.timer,
                ..doubt
            });
        } else if let Action::Release { resource } = op.action {
            // The outcome is unknown: assume it took effect (believing in fewer holds is
            // safe), and keep the release until it is settled, in a session of its own.
            if let Some(h) = self.hold.as_mut().filter(|h| h.resource == resource) {
                h.count = h.count.saturating_sub(1);
                if h.count == 0 {
                    self.hold = None;
                }
            }
            self.doubts.push(Doubt {
                resource,
                request: op.request,
                timer: op.timer,
            });
            self.session = self.rng.gen_range(1..u64::MAX);
        }
        if self.plan.is_empty() && !self.scripted {
            self.plan_after(self.clock.local(now));
        }
    }

    fn start(
        &mut self,
        now: Instant,
        action: Action,
        hist: &mut History,
        out: &mut Vec<(NodeId, Request<'static>)>,
    ) {
        let local = self.clock.local(now);
        let (command, room_for_waiting, timeout, resource) = match action {
            Action::Abandon => {
                self.hold = None;
                if self.plan.is_empty() && !self.scripted {
                    self.plan_after(local);
                }
                return;
            }
            Action::Acquire {
                resource,
                wait_ms,
                ttl_ms,
            } => (
                Command::Acquire {
                    resource: RESOURCES[resource],
                    client: self.id(),
                    wait_ms,
                    ttl_ms,
                },
                wait_ms > 0,
                Duration::from_millis(wait_ms.into()) + ACQUIRE_GRACE,
                Some(resource),
            ),
            Action::Release { resource } => {
                if self
                    .hold
                    .as_ref()
                    .is_some_and(|h| h.resource == resource && h.count <= 1)
                {
                    // This release ends the hold: stop believing now (spec §7.1.6).
                    hist.cut(self.idx, resource, now);
                }
                (
                    Command::Release {
                        resource: RESOURCES[resource],
                        client: self.id(),
                    },
                    false,
                    RELEASE_TIMEOUT,
                    Some(resource),
                )
            }
            Action::Renew { resource, ttl_ms } => (
                Command::Renew {
                    resource: RESOURCES[resource],
                    client: self.id(),
                    ttl_ms,
                },
                false,
                OP_TIMEOUT,
                Some(resource),
            ),
            Action::Status { resource } => (
                Command::Status {
                    resource: RESOURCES[resource],
                    reply_len_max: status_len(self.request_next),
                },
                true,
                OP_TIMEOUT,
                None,
            ),
        };
        let id = RequestId {
            session: self.session,
            request: self.request_next,
        };
        self.request_next += 1;
        let request = Request {
            id,
            attempt: 0,
            reply_to: self.addr,
            command,
            room_for_waiting,
        };
        let record = hist.begin(self.idx, request, action, now);
        // A doubt on this lock is settled first (spec §7.1.5): sent again with the next
        // attempt number, on a fresh timer.
        let settling = resource
            .and_then(|r| self.doubts.iter().position(|d| d.resource == r))
            .map(|i| self.doubts.swap_remove(i));
        let timer = match &settling {
            Some(doubt) => {
                let mut timer = doubt.timer.clone();
                timer.resume(self.rtt.rto());
                timer
            }
            None => self.rtt.timer(),
        };
        self.op = Some(Op {
            record,
            action,
            request,
            settling,
            timer,
            deadline: local + timeout,
            not_before: Instant::ZERO,
            route: self.first_route(),
            overloaded: false,
        });
        self.send(local, out);
    }

    /// Sends the next copy of the current request, first leaving a silent node (rule 4).
    fn send(&mut self, local: Instant, out: &mut Vec<(NodeId, Request<'static>)>) {
        let op = self.op.as_ref().expect("outstanding");
        let dest = op.route.dest;
        let limit = if self.is_suspect(dest) {
            1
        } else {
            SILENT_SENDS_MAX
        };
        if op.route.unanswered >= limit {
            self.suspect[(dest - 1) as usize] = true;
            if self.leader == Some(dest) {
                self.leader = None;
            }
            self.move_on();
        }
        let op = self.op.as_mut().expect("outstanding");
        let attempt = op.timer.on_send(local);
        op.route.dest_first_attempt.get_or_insert(attempt);
        if op.route.unanswered == 0 {
            op.route.unanswered_from = attempt;
        }
        op.route.unanswered += 1;
        let mut request = *op.current();
        request.attempt = attempt;
        out.push((op.route.dest, request));
    }

    /// Random mode: what to do after an operation, when nothing is planned.
    fn plan_after(&mut self, local: Instant) {
        match self.hold.as_ref() {
            // A hold whose planned release failed or was never planned: release it.
            Some(h) => {
                let resource = h.resource;
                let at = local + Duration::from_millis(self.rng.gen_range(0..20));
                self.plan.push_back((at, Action::Release { resource }));
            }
            None => {
                let at = local + Duration::from_millis(self.rng.gen_range(0..60));
                self.plan_acquire_or_status(at);
            }
        }
    }

    fn plan_acquire_or_status(&mut self, at: Instant) {
        let resource = self.rng.gen_range(0..self.resources);
        let action = if self.rng.gen_bool(0.2) {
            Action::Status { resource }
        } else {
            let wait_ms = if self.rng.gen_bool(0.25) {
                0
            } else {
                self.rng.gen_range(50..1_500)
            };
            Action::Acquire {
                resource,
                wait_ms,
                ttl_ms: self.rng.gen_range(150..1_500),
            }
        };
        self.plan.push_back((at, action));
    }

    /// Random mode: what to do with a new hold.
    fn plan_hold(&mut self, local: Instant, resource: usize, lease_ms: u32) {
        let lease = Duration::from_millis(lease_ms.into());
        let frac = |rng: &mut StdRng, lo: u64, hi: u64| {
            Duration::from_micros(lease.as_micros() * rng.gen_range(lo..hi) / 100)
        };
        let pattern = self.rng.gen_range(0..100);
        if pattern < 15 {
            // Let the lease lapse without a release.
            let at = local + frac(&mut self.rng, 50, 150);
            self.plan.push_back((at, Action::Abandon));
        } else if pattern < 35 {
            let renew_at = local + frac(&mut self.rng, 30, 60);
            let ttl_ms = self.rng.gen_range(150..1_500);
            self.plan
                .push_back((renew_at, Action::Renew { resource, ttl_ms }));
            let release_at = renew_at + frac(&mut self.rng, 10, 80);
            self.plan
                .push_back((release_at, Action::Release { resource }));
        } else if pattern < 50 {
            let again_at = local + frac(&mut self.rng, 5, 40);
            let ttl_ms = self.rng.gen_range(150..1_500);
            self.plan.push_back((
                again_at,
                Action::Acquire {
                    resource,
                    wait_ms: 0,
                    ttl_ms,
                },
            ));
            let release_at = again_at + frac(&mut self.rng, 5, 40);
            self.plan
                .push_back((release_at, Action::Release { resource }));
            self.plan
                .push_back((release_at, Action::Release { resource }));
        } else {
            // Mostly well within the lease; sometimes past it (the release then finds the
            // lock gone, or handed on).
            let at = local + frac(&mut self.rng, 5, 110);
            self.plan.push_back((at, Action::Release { resource }));
        }
    }
}
