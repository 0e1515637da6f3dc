//! What the clients saw, and the checkers that judge it after a run.
//!
//! The simulator records every client operation (first send, final answer or giving up, all
//! in true simulated time), every hold a client believed in (an interval of true time), and
//! every grant it received. After the run the checkers below compare that history with the
//! committed log, replayed through a fresh [`LockTable`] (the sequential model: the same
//! deterministic table every replica applies, fed the log's `(stamp, command)` sequence).
//!
//! - **Mutual exclusion** ([`check_mutual_exclusion`]): per resource, the intervals in which
//!   two different clients believed they held the lock never overlap. A client believes from
//!   the *receipt* of an OK (acquire or renew) to `send_time(echoed attempt) + lease_ms · (1 −
//!   drift_bound)` on its own clock, converted to true time, cut short when it sends the
//!   release that ends its hold. (Starting at receipt, not at the send time: a waiter's echoed
//!   keepalive may have been sent before the previous holder released, and the waiter did not
//!   believe anything then.)
//! - **Fencing** ([`check_fencing`]): per resource, in the true-time order in which clients
//!   received grants that were still valid on receipt, tokens never decrease, and two grants
//!   with one token belong to one client (a re-entry); a re-entrant grant (hold count > 1) to
//!   a client that still held a valid grant carries that grant's token.
//! - **Durability** ([`check_log`]): every final answer a client received to a logged request
//!   (acquire, release, renew, configure) is the answer the replay of the final leader's
//!   committed log gives that request id (status, token, hold count, lease): nothing
//!   acknowledged was lost or changed, across every crash and leader change.
//! - **Linearizability** ([`check_log`]): the committed log order is a linearization. Each
//!   entry takes effect at the first true time any replica applied it (monotone in the index,
//!   since each replica applies in index order). Every answered logged request's answer came
//!   from an entry (the request's own, or for a queued acquire the release or TICK that handed
//!   it the lock) that took effect within the request's real-time interval [first send,
//!   receipt]; unanswered requests may or may not be in the log, as linearizability allows.
//!   Every STATUS answer equals (status, holder, token, hold count, waiter count) the model's
//!   state after some prefix `k` whose lifetime [effect of k, effect of k + 1) meets the
//!   STATUS's interval: no stale read, no read of the future.
//!
//!   Both checks also cover *late* replies, which reached a client after it had finished with
//!   the request (it drops them): each is judged with the request's interval running from its
//!   first send to that late receipt.
//! - **Doubts** ([`check_doubts`], spec §7.1.5): a client that gave up on a RELEASE it had
//!   sent sends no ACQUIRE, RENEW or RELEASE of the same lock until an answer to that RELEASE
//!   has reached it (a copy still in the network could otherwise free the hold the new request
//!   takes). Seen on the network, outside the client: the first copy of each request is
//!   recorded as it leaves.
//! - **Liveness** ([`check_liveness`]): every operation a client starts once the network has
//!   been healed for [`LIVENESS_SETTLE`] gets a final answer within its bound (its wait plus
//!   [`LIVENESS_OP_SLACK`]; otherwise the slack alone), unless the run ends first.

use std::collections::HashMap;

use udplock_protocol::{LogCommand, RequestBody, Status, REPLY_LEN_MIN};

use super::clients::{Action, RESOURCES};
use crate::core::lock_table::{self, Answer, IdBuf, LockTable, Reply, Request, RequestId};
use crate::core::raft::Entry;
use crate::core::replica::logged_request;
use crate::core::retransmit::DOUBT_LIFETIME;
use crate::core::time::{Duration, Instant};

/// After healing, the cluster has this long to elect a leader and settle before operations
/// are held to their bounds (two election timeouts, a pre-vote round, and slack).
pub(super) const LIVENESS_SETTLE: Duration = Duration::from_millis(1_000);
/// Beyond its own wait, what an operation may take once the cluster settled: retransmissions
/// at the RTO ceiling (100 ms), delay spikes, a commit round, and slack.
pub(super) const LIVENESS_OP_SLACK: Duration = Duration::from_millis(1_000);

/// The client index of scenario probes (STATUS sent straight to a node by the simulator).
pub(super) const PROBE: usize = usize::MAX;

// Most operations end answered, so boxing the reply would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub(super) enum Outcome {
    Pending,
    Answered { at: Instant, reply: Reply },
    GaveUp { at: Instant },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct OpRecord {
    pub client: usize,
    pub request: Request<'static>,
    pub action: Action,
    /// True time of the first copy.
    pub sent: Instant,
    pub outcome: Outcome,
}

/// A stretch of true time in which `client` believed it held `resource`. Shared with the
/// chaos harness (`crate::chaos`), whose histories of real processes the same checkers judge.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Belief {
    pub client: usize,
    pub resource: usize,
    pub start: Instant,
    pub end: Instant,
    pub op: usize,
}

/// One grant as its client received it (shared with `crate::chaos`, as [`Belief`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grant {
    pub client: usize,
    pub resource: usize,
    pub token: u64,
    pub hold_count: u32,
    /// The token of the hold the client believed in when this reply came, if any.
    pub held_token: Option<u64>,
    /// Still valid when received.
    pub valid: bool,
    pub at: Instant,
    pub op: usize,
}

#[derive(Default)]
pub(super) struct History {
    pub ops: Vec<OpRecord>,
    pub beliefs: Vec<Belief>,
    pub grants: Vec<Grant>,
    /// Replies that reached a client after it had finished with (or given up on) the request:
    /// (op, receipt, reply). No client acts on them, but the server still had to be right.
    pub late: Vec<(usize, Instant, Reply)>,
    /// When the first copy of each request left its client (true time).
    pub first_copy: HashMap<RequestId, Instant>,
    /// Acquires their client stopped waiting for and withdrew (spec §4.12): given up by
    /// choice, so the liveness checker does not hold them to their bound.
    pub withdrawn: std::collections::HashSet<usize>,
    /// Clients whose key no node lists (spec §7.2.6): nothing they send can take effect, and
    /// the unsealed refusals they get end only a fresh ACQUIRE or a read (spec §7.1.10 rule
    /// 2), so the liveness checker does not hold their other operations to a bound.
    pub keyless_to_the_nodes: std::collections::HashSet<usize>,
    /// Replies a client's call rejected as contradicting the request (spec §7.1.4 rule 6):
    /// (receipt, what). Every reply in the simulator comes from a node, so any is a bug of
    /// the client's checks or of the node's reply.
    pub rejected: Vec<(Instant, String)>,
    by_id: HashMap<RequestId, usize>,
}

impl History {
    pub fn begin(
        &mut self,
        client: usize,
        request: Request<'static>,
        action: Action,
        now: Instant,
    ) -> usize {
        self.by_id.insert(request.id, self.ops.len());
        self.ops.push(OpRecord {
            client,
            request,
            action,
            sent: now,
            outcome: Outcome::Pending,
        });
        self.ops.len() - 1
    }

    pub fn answered(&mut self, op: usize, at: Instant, reply: Reply) {
        self.ops[op].outcome = Outcome::Answered { at, reply };
    }

    pub fn late(&mut self, id: RequestId, at: Instant, reply: Reply) {
        if let Some(&op) = self.by_id.get(&id) {
            self.late.push((op, at, reply));
        }
    }

    /// A copy of request `id` left its client at `at`.
    pub fn copy_sent(&mut self, id: RequestId, at: Instant) {
        self.first_copy.entry(id).or_insert(at);
    }

    pub fn gave_up(&mut self, op: usize, at: Instant) {
        self.ops[op].outcome = Outcome::GaveUp { at };
    }

    /// The client stopped waiting for acquire `op` at `at` and withdraws it (spec §4.12).
    pub fn withdrawn(&mut self, op: usize, at: Instant) {
        self.gave_up(op, at);
        self.withdrawn.insert(op);
    }

    pub fn interval(
        &mut self,
        client: usize,
        resource: usize,
        start: Instant,
        end: Instant,
        op: usize,
    ) {
        if start < end {
            self.beliefs.push(Belief {
                client,
                resource,
                start,
                end,
                op,
            });
        }
    }

    /// `client` stops believing it holds `resource` at `at` (it sent the final release).
    pub fn cut(&mut self, client: usize, resource: usize, at: Instant) {
        for b in self.beliefs.iter_mut() {
            if b.client == client && b.resource == resource && b.end > at {
                b.end = at.max(b.start);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn grant(
        &mut self,
        client: usize,
        resource: usize,
        token: u64,
        hold_count: u32,
        held_token: Option<u64>,
        valid: bool,
        at: Instant,
        op: usize,
    ) {
        self.grants.push(Grant {
            client,
            resource,
            token,
            hold_count,
            held_token,
            valid,
            at,
            op,
        });
    }
}

/// Spec §7.1.5: after giving up on a RELEASE it sent, a client sends no ACQUIRE, RENEW or
/// RELEASE of the same lock before an answer to that RELEASE reached it (or
/// `DOUBT_LIFETIME` passed since its first copy). A late answer the client dropped counts as
/// reaching it, which makes the check lenient, never wrong.
pub(super) fn check_doubts(h: &History) -> Result<(), (Instant, String)> {
    for (i, release) in h.ops.iter().enumerate() {
        let (Action::Release { resource }, Outcome::GaveUp { at: gave_up }) =
            (release.action, release.outcome)
        else {
            continue;
        };
        // A release that never left (its operation gave up settling an older doubt) is none.
        let Some(&first) = h.first_copy.get(&release.request.id) else {
            continue;
        };
        let settled = h
            .late
            .iter()
            .filter(|&&(op, _, reply)| {
                op == i && !matches!(reply.answer.status, Status::Waiting | Status::Overloaded)
            })
            .map(|&(_, at, _)| at)
            .min()
            .unwrap_or(Instant::MAX);
        let touches = |action: Action| match action {
            Action::Acquire { resource: r, .. }
            | Action::Release { resource: r }
            | Action::Renew { resource: r, .. } => r == resource,
            // Not held back by a doubt (spec §4.11): it names holds by token, and a hold a
            // late RELEASE ended comes back with its bit clear. A CANCEL_WAIT changes no hold
            // (spec §7.1.5: no doubt is settled before it).
            Action::Keepalive { .. }
            | Action::Status { .. }
            | Action::Abandon
            | Action::CancelWait { .. } => false,
        };
        let later = h.ops[i + 1..]
            .iter()
            .filter(|o| o.client == release.client && touches(o.action));
        for op in later {
            let Some(&sent) = h.first_copy.get(&op.request.id) else {
                continue;
            };
            if sent >= gave_up && sent < settled && sent < first + DOUBT_LIFETIME {
                return Err((
                    sent,
                    format!(
                        "doubts: client {} sent {:?} (request {}) while its RELEASE of {} \
                         (request {}, given up at {gave_up:?}) was unsettled",
                        release.client,
                        op.action,
                        op.request.id.request,
                        String::from_utf8_lossy(RESOURCES[resource]),
                        release.request.id.request
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// (a) No two clients believe they hold one lock at one instant of true time.
pub(super) fn check_mutual_exclusion(h: &History) -> Result<(), (Instant, String)> {
    mutual_exclusion(&h.beliefs, &RESOURCES, &|op| describe(h, op))
}

/// [`check_mutual_exclusion`] over any history's beliefs: `resources[b.resource]` names a
/// resource, `describe(b.op)` the operation a belief came from.
pub(crate) fn mutual_exclusion(
    all: &[Belief],
    resources: &[&[u8]],
    describe: &dyn Fn(usize) -> String,
) -> Result<(), (Instant, String)> {
    for (resource, name) in resources.iter().enumerate() {
        let mut beliefs: Vec<&Belief> = all
            .iter()
            .filter(|b| b.resource == resource && b.start < b.end)
            .collect();
        beliefs.sort_by_key(|b| (b.start, b.end));
        let mut active: Vec<&Belief> = Vec::new();
        for b in beliefs {
            active.retain(|a| a.end > b.start);
            if let Some(a) = active.iter().find(|a| a.client != b.client) {
                return Err((
                    b.start,
                    format!(
                        "mutual exclusion: client {} believed it held {} during {:?}..{:?} \
                         (op {}), client {} during {:?}..{:?} (op {})",
                        a.client,
                        name.escape_ascii(),
                        a.start,
                        a.end,
                        describe(a.op),
                        b.client,
                        b.start,
                        b.end,
                        describe(b.op)
                    ),
                ));
            }
            active.push(b);
        }
    }
    Ok(())
}

/// (b) Fencing tokens increase per resource in the order valid grants were received.
pub(super) fn check_fencing(h: &History) -> Result<(), (Instant, String)> {
    fencing(&h.grants, &RESOURCES, &|op| describe(h, op))
}

/// [`check_fencing`] over any history's grants, in the order they were received:
/// `resources[g.resource]` names a resource, `describe(g.op)` the operation of a grant.
pub(crate) fn fencing(
    grants: &[Grant],
    resources: &[&[u8]],
    describe: &dyn Fn(usize) -> String,
) -> Result<(), (Instant, String)> {
    let mut last: Vec<Option<&Grant>> = vec![None; resources.len()];
    for g in grants.iter() {
        if g.hold_count > 1 {
            if let Some(token) = g.held_token.filter(|&t| t != g.token) {
                return Err((
                    g.at,
                    format!(
                        "fencing: re-entrant grant (hold count {}) to client {} carries token {} \
                         but its valid hold has token {token} ({})",
                        g.hold_count,
                        g.client,
                        g.token,
                        describe(g.op)
                    ),
                ));
            }
        }
        if !g.valid {
            continue;
        }
        if let Some(prev) = last[g.resource] {
            let regress = g.token < prev.token;
            let shared = g.token == prev.token && g.client != prev.client;
            if regress || shared {
                return Err((
                    g.at,
                    format!(
                        "fencing: on {} client {} received token {} after client {} received \
                         token {} ({} after {})",
                        resources[g.resource].escape_ascii(),
                        g.client,
                        g.token,
                        prev.client,
                        prev.token,
                        describe(g.op),
                        describe(prev.op)
                    ),
                ));
            }
        }
        last[g.resource] = Some(g);
    }
    Ok(())
}

/// The state STATUS shows of one resource: status, holder, holder truncated, token, hold
/// count, waiters.
type LockView = (Status, IdBuf, bool, u64, u32, u32);

fn view(answer: &Answer, holder: &IdBuf, holder_truncated: bool) -> LockView {
    (
        answer.status,
        *holder,
        holder_truncated,
        answer.fencing_token,
        answer.hold_count,
        answer.waiter_count,
    )
}

/// What a STATUS answer of `reply_len_max` bytes at most shows of `full` (a view with the
/// whole holder id): spec §2.2 rule 5 and §5.3, written again here from the spec. The holder
/// id only if `76 + its length` fits, else none and HOLDER_TRUNCATED if there was one.
fn within(full: LockView, reply_len_max: u16) -> LockView {
    let (status, holder, _, token, count, waiters) = full;
    if REPLY_LEN_MIN + holder.len() <= usize::from(reply_len_max) {
        full
    } else {
        (
            status,
            IdBuf::EMPTY,
            !holder.is_empty(),
            token,
            count,
            waiters,
        )
    }
}

/// The committed log replayed through a fresh table.
struct Replay {
    /// Each request id's first final answer, and the index of the entry that produced it.
    answers: HashMap<RequestId, (Answer, u64)>,
    /// Per resource, (first prefix length at which it holds, view), in index order.
    views: Vec<Vec<(u64, LockView)>>,
}

/// Applies `log` exactly as every replica must (the shard's apply rule, written again here
/// from the spec so that the check does not trust the code it checks).
fn replay(log: &[Entry], table: &lock_table::Config) -> Replay {
    let mut answers = HashMap::new();
    let mut views: Vec<Vec<(u64, LockView)>> = RESOURCES
        .iter()
        .map(|_| {
            let none = Answer::bare(Status::Ok);
            vec![(0, view(&none, &IdBuf::EMPTY, false))]
        })
        .collect();
    let mut model: Option<LockTable> = None;
    let mut stamp_last = Instant::ZERO;
    // Spec §8.8: the values of the last SETTINGS apply, whatever a replica's own.
    let mut table = table.clone();
    for entry in log {
        // The (id, target) of a CANCEL_WAIT this entry holds.
        let mut cancel = None;
        match LogCommand::decode(&entry.data) {
            // CONFIG changes who replicates the log, not the table.
            Err(_) | Ok(LogCommand::Config { .. }) => {}
            Ok(LogCommand::Init { token_first }) => {
                if model.is_none() {
                    model = Some(LockTable::new(lock_table::Config {
                        fencing_token_first: token_first,
                        ..table.clone()
                    }));
                }
            }
            Ok(LogCommand::Settings {
                ttl_default_ms,
                retry_after_ms,
                startup_grace_ms,
            }) => {
                let logged = lock_table::Config {
                    ttl_default_ms,
                    retry_after_ms,
                    startup_grace_ms,
                    ..table.clone()
                };
                if logged.validate().is_ok() {
                    table = logged;
                    if let Some(m) = model.as_mut() {
                        m.set_logged_settings(ttl_default_ms, retry_after_ms, startup_grace_ms)
                            .expect("validated");
                    }
                }
            }
            Ok(LogCommand::Tick { stamp }) => {
                stamp_last = stamp_last.max(Instant::from_micros(stamp));
                if let Some(m) = model.as_mut() {
                    m.handle_timeout(stamp_last);
                }
            }
            Ok(command @ LogCommand::Request { .. }) => {
                let (stamp, request) = logged_request(&command).expect("a REQUEST command");
                stamp_last = stamp_last.max(Instant::from_micros(stamp));
                if let RequestBody::CancelWait {
                    target_session,
                    target_request,
                    ..
                } = request.body
                {
                    let target = RequestId {
                        session: target_session,
                        request: target_request,
                    };
                    cancel = Some((request.id, target));
                }
                if let Some(m) = model.as_mut() {
                    m.handle_request(stamp_last, request);
                }
            }
        }
        let Some(m) = model.as_mut() else { continue };
        let mut cancel_answer = None;
        while let Some(reply) = m.poll_reply() {
            if cancel.is_some_and(|(id, _)| id == reply.id) {
                cancel_answer = Some(reply.answer);
            }
            if !matches!(reply.answer.status, Status::Waiting | Status::Overloaded) {
                answers
                    .entry(reply.id)
                    .or_insert((reply.answer, entry.index));
            }
        }
        // Spec §4.12 case 4: a CANCEL_WAIT whose target the table never saw (or answered
        // OVERLOADED only) answers OK with every counter 0 and settles the target as
        // LOCK_ACQUISITION_TIMEOUT, the answer every later copy of it gets from the
        // session's memory, unlogged. This entry is then the one that answers the target.
        if let (Some((_, target)), Some(a)) = (cancel, cancel_answer) {
            let settled = (a.status, a.hold_count, a.waiter_count) == (Status::Ok, 0, 0);
            if settled {
                answers
                    .entry(target)
                    .or_insert((Answer::bare(Status::LockAcquisitionTimeout), entry.index));
            }
        }
        for (r, views) in views.iter_mut().enumerate() {
            let (answer, holder) = m.read_status(stamp_last, RESOURCES[r]);
            let v = view(&answer, &holder, false);
            if views.last().is_none_or(|&(_, last)| last != v) {
                views.push((entry.index, v));
            }
        }
    }
    Replay { answers, views }
}

/// (c) durability and (d) linearizability, against the final committed log of one shard.
/// `effect[i - 1]` is the first true time any replica applied entry `i`; only operations on
/// the resources `on_shard` says the shard holds are judged.
pub(super) fn check_log(
    h: &History,
    log: &[Entry],
    effect: &[Instant],
    table: &lock_table::Config,
    on_shard: impl Fn(usize) -> bool,
) -> Result<(), (Instant, String)> {
    assert!(effect.len() >= log.len());
    let replay = replay(log, table);
    let answered = h
        .ops
        .iter()
        .enumerate()
        .filter_map(|(n, op)| match op.outcome {
            Outcome::Answered { at, reply } => Some((n, at, reply)),
            _ => None,
        });
    for (n, at, reply) in answered.chain(h.late.iter().copied()) {
        let op = &h.ops[n];
        if op.action.resource().is_some_and(|r| !on_shard(r)) {
            continue;
        }
        if matches!(
            reply.answer.status,
            Status::Waiting | Status::Overloaded | Status::RequestExpired | Status::Unauthenticated
        ) {
            // No answer: nothing was read or done by this copy. REQUEST_EXPIRED says the
            // session's memory of the request is gone (spec §6.6): whatever its first copy did
            // is unknown to the client, and a late copy (still in the network after the
            // session moved on) gets it although the log answered an earlier copy otherwise.
            // UNAUTHENTICATED: refused before any shard saw it (spec §7.2.6; who may get it
            // is `clients::Client::key_violation`'s check).
            continue;
        }
        if let RequestBody::Status { resource } = op.request.body {
            let reply_len_max = op.request.datagram_len;
            let r = RESOURCES
                .iter()
                .position(|&x| x == resource)
                .expect("a known resource");
            // No amplification (spec §2.2 rule 5), whatever path the answer took (a lease read
            // or ReadIndex, alone or beside other STATUS requests of other lengths).
            let reply_len = REPLY_LEN_MIN + reply.holder.len();
            if reply_len > usize::from(reply_len_max) {
                return Err((
                    at,
                    format!(
                        "amplification: STATUS {} of {reply_len_max} bytes answered with \
                         {reply_len} bytes",
                        describe(h, n)
                    ),
                ));
            }
            // Prefixes k in [lo, hi] existed during [sent, at]: lo entries took effect
            // before it was sent, hi by the time it was answered.
            let lo = effect[..log.len()].partition_point(|&t| t < op.sent) as u64;
            let hi = effect[..log.len()].partition_point(|&t| t <= at) as u64;
            let got = view(&reply.answer, &reply.holder, reply.holder_truncated);
            let views = &replay.views[r];
            let first = views.partition_point(|&(k, _)| k <= lo).saturating_sub(1);
            // The holder id must be there whenever it fits the request: a truncated holder
            // where it fitted does not match any state.
            let ok = views[first..]
                .iter()
                .take_while(|&&(k, _)| k <= hi)
                .any(|&(_, v)| within(v, reply_len_max) == got);
            if !ok {
                let expected: Vec<_> = views[first..]
                    .iter()
                    .take_while(|&&(k, _)| k <= hi)
                    .map(|&(k, v)| (k, within(v, reply_len_max)))
                    .collect();
                return Err((
                    at,
                    format!(
                        "linearizability: STATUS {} of {reply_len_max} bytes answered {got:?}, \
                         but between its send and its answer (log prefixes {lo}..={hi}) the \
                         lock was only {expected:?}",
                        describe(h, n)
                    ),
                ));
            }
            continue;
        }
        let Some(&(answer, index)) = replay.answers.get(&op.request.id) else {
            return Err((
                at,
                format!(
                    "durability: acknowledged {} answered {:?}, but the committed log (length \
                     {}) never answers it",
                    describe(h, n),
                    reply.answer,
                    log.len()
                ),
            ));
        };
        let a = &reply.answer;
        let same = (a.status, a.fencing_token, a.hold_count, a.lease_ms)
            == (
                answer.status,
                answer.fencing_token,
                answer.hold_count,
                answer.lease_ms,
            );
        if !same {
            return Err((
                at,
                format!(
                    "durability: {} was answered {a:?}, the committed log answers it {answer:?} \
                     (entry {index})",
                    describe(h, n)
                ),
            ));
        }
        let took_effect = effect[index as usize - 1];
        if took_effect < op.sent || took_effect > at {
            return Err((
                at,
                format!(
                    "linearizability: {} sent {:?}, answered {at:?}, but its answer comes from \
                     entry {index}, which took effect at {took_effect:?}",
                    describe(h, n),
                    op.sent
                ),
            ));
        }
    }
    Ok(())
}

/// (e) Operations started after the settle time finish within their bound.
pub(super) fn check_liveness(
    h: &History,
    healed: Instant,
    end: Instant,
) -> Result<(), (Instant, String)> {
    let from = healed + LIVENESS_SETTLE;
    for (n, op) in h.ops.iter().enumerate() {
        if op.sent < from
            || op.client == PROBE
            || h.withdrawn.contains(&n)
            || h.keyless_to_the_nodes.contains(&op.client)
        {
            continue;
        }
        let wait = match op.action {
            Action::Acquire { wait_ms, .. } => Duration::from_millis(wait_ms.into()),
            _ => Duration::ZERO,
        };
        let bound = op.sent + wait + LIVENESS_OP_SLACK;
        let (finished, gave_up) = match op.outcome {
            Outcome::Answered { at, .. } => (Some(at), None),
            Outcome::GaveUp { at } => (None, Some(at)),
            Outcome::Pending => (None, None),
        };
        match finished {
            Some(at) if at <= bound => {}
            _ if bound > end => {}
            _ => {
                return Err((
                    bound,
                    format!(
                        "liveness: {} sent {:?}, {:?} after healing, had no final answer \
                         within {:?} (answered at {finished:?}, gave up at {gave_up:?})",
                        describe(h, n),
                        op.sent,
                        op.sent.saturating_since(healed),
                        bound.saturating_since(op.sent)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// "op N (client C, ACQUIRE r0 #id)" for failure messages.
pub(super) fn describe(h: &History, op: usize) -> String {
    let o = &h.ops[op];
    format!(
        "op {op} (client {}, {:?} session {:x} request {})",
        if o.client == PROBE {
            "probe".to_string()
        } else {
            o.client.to_string()
        },
        o.action,
        o.request.id.session,
        o.request.id.request
    )
}
