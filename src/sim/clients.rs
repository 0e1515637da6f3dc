//! Simulated lock clients: each follows the spec's client rules (§7.1) on its own drifting
//! clock, one request outstanding at a time, and records what it saw and *believed* into the
//! [`History`] the checkers read.
//!
//! A client is driven by the simulator like a core: [`Client::wake`] when its timer is due,
//! [`Client::on_reply`] when a datagram reaches it; both push the requests to send into an
//! outbox, and [`Client::next_wake`] says when to wake it next (on its own clock).
//!
//! The rules of spec §7.1 are not written here: each operation is a [`Call`] of the client's
//! call core (`crate::core::call`), the same code the real client (`crate::client`) runs, with
//! its route cache ([`Routes`]: a ring of configured servers in the client's own order,
//! suspect nodes, the leader), its RTT estimator and its doubts ([`Doubts`]). The simulator
//! speaks the wire to it: a copy the core readies is a `udplock_protocol::Request`, encoded
//! into the datagram a real client sends (the history records the lock-table request a node
//! makes of it, `core::node::requests::table_request`); a node's reply reaches it as
//! the datagram the node would send (`core::node::requests::encode_reply`, then the codec), and a
//! NOT_LEADER as the wire reply with the leader's address as its hint. Nodes have the
//! addresses of [`node_addr`], the ones their member tables list.
//!
//! A static run's client is given every node. A joined run's client is given one (as
//! `--servers` with one node of a joined cluster) and runs the real client's discovery
//! ([`Discovery`], spec §7.1.8): MEMBERS requests encoded as the real client encodes them,
//! the node's MEMBERS_REPLY datagram read by the same code, the new ring adopted by the
//! operation under way too ([`Call::rebase`]), and the same triggers for a refresh (at the
//! start of an operation and after a timer turn, as the real client polls it).
//!
//! What is left here is a client's life: one operation at a time; a new session once a
//! RELEASE is left carrying a doubt (the real client's lanes: no other request shares a
//! session that still carries one); before an ACQUIRE, RENEW or RELEASE of a lock with a
//! doubt, the doubt is sent again first, and if no answer settles it within the operation's
//! deadline the operation gives up without being sent (seed 353, and issue 7 items 2 and 7).
//! The hold counts a client believes in are the server's, from the latest reply that reported
//! one, so they never exceed the real count; a doubtful release is assumed to have taken
//! effect. Validity of a hold is `lease_start + lease_ms · (1 − drift_bound)` (§6.4, §7.1.6),
//! the lease counted from the send time of the copy the grant echoes, and a client stops
//! believing it holds a lock the moment it sends the release that takes its hold count to
//! zero.
//!
//! In *random* mode a client loops: acquire (sometimes a try-acquire with wait 0) → hold for
//! a while, sometimes renewing (by RENEW, or by a KEEPALIVE, spec §4.11, that lists its hold's
//! token among tokens of its earlier holds in the same shard, and sometimes comes after the
//! lease: a hold whose bit comes back clear is dropped at once), sometimes re-entering, sometimes letting the lease lapse
//! without a release → release; now and then a STATUS. Now and then it stops waiting for an
//! acquire before its deadline (as a dropped future does): it stops that call and sends a
//! CANCEL_WAIT for it in a session of its own (spec §4.12), and releases the hold the answer
//! names if the grant crossed the cancel; it never believes in that hold. In *scripted* mode (scenarios) it only
//! runs the actions the scenario queues.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use udplock_protocol::{
    shard_of, AddressToken, ClientKey, Hint, MembersReply, Reply as WireReply, RequestBody,
    RequestKind, Status, Tokens, CLIENT_AUTH_TRAILER_LEN, DATAGRAM_LEN_MAX, REPLY_LEN_MIN,
    REQUEST_LEN_MIN, STATUS_REQUEST_LEN,
};

use super::check::History;
use super::wire::{node_addr, node_at};
use super::Clock;
use crate::core::call::{
    lease_validity, lock_of, Call, CallRequest, Discovery, Doubts, Handled, MembersAsk, Outcome,
    PageOutcome, Rejected, Routes, Seal, Settle, LEASE_MS_MAX_DEFAULT,
};
use crate::core::lock_table::{Reply, RequestId};
use crate::core::node::requests::{encode_reply, table_request};
use crate::core::raft::NodeId;
use crate::core::retransmit::{RetransmitConfig, RttEstimator};
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
pub(super) fn status_len(request: u64) -> u16 {
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
        kind: RequestKind,
        hint: Option<NodeId>,
    },
    /// A MEMBERS_REPLY (spec §5.8), the datagram as the node sent it: the client decodes it
    /// itself, as a real client does.
    Members(Arc<[u8]>),
    /// RETRY (spec §7.2.5): the node wants the request again with this address token.
    Retry {
        id: RequestId,
        attempt: u16,
        kind: RequestKind,
        token: AddressToken,
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
    /// Renew the hold on `resource` by a KEEPALIVE (spec §4.11) that also lists tokens of
    /// this client's earlier holds in the same shard (which name no hold any more).
    Keepalive {
        resource: usize,
        ttl_ms: u32,
    },
    /// Stop using the hold without releasing it: its lease lapses at the server.
    Abandon,
    /// Withdraw this client's ACQUIRE (`target_session`, `target_request`) of `resource`
    /// (spec §4.12).
    CancelWait {
        resource: usize,
        target_session: u64,
        target_request: u64,
    },
}

impl Action {
    /// The resource it asks the service about (an index into [`RESOURCES`]).
    pub fn resource(&self) -> Option<usize> {
        match *self {
            Action::Acquire { resource, .. }
            | Action::Release { resource }
            | Action::Renew { resource, .. }
            | Action::Keepalive { resource, .. }
            | Action::Status { resource }
            | Action::CancelWait { resource, .. } => Some(resource),
            Action::Abandon => None,
        }
    }
}

/// Whether a random client withdraws the waiting acquire `request` (one in six), and after
/// how long (within its wait): drawn from its ids, not from the client's random numbers, so
/// that the runs without a cancel stay as they were.
fn cancel_after(request: &WireRequest, wait_ms: u32) -> Option<Duration> {
    let h = (request.session_id ^ request.request_id.rotate_left(32))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h % 6 == 0).then(|| Duration::from_millis((h >> 32) % u64::from(wait_ms)))
}

/// The length of the datagram carrying `request`: what the real client pads it to, but for
/// STATUS the varying lengths of [`STATUS_LENS`].
fn datagram_len(request: &WireRequest) -> usize {
    match request.body {
        RequestBody::Status { .. } => usize::from(status_len(request.request_id)),
        _ => request.padded_len(),
    }
}

/// The length of the datagram carrying `request` sealed with a client key (spec §7.1.10):
/// what the real client pads it to, but for STATUS its length of [`datagram_len`] plus the
/// trailer, so that the node's reply budget (the length less the trailer, spec §2.2 rule 7)
/// is the one the checkers judge its answer by.
fn sealed_datagram_len(request: &WireRequest) -> usize {
    match request.body {
        RequestBody::Status { .. } => {
            datagram_len(request).max(REQUEST_LEN_MIN) + CLIENT_AUTH_TRAILER_LEN
        }
        _ => request.padded_len_auth(),
    }
}

/// The request as it leaves the client, in the form it has on the wire.
type WireRequest = udplock_protocol::Request<'static>;

/// A request datagram a client sends, as it encoded it (the bytes a real client sends).
pub(super) struct Outgoing {
    /// `None`: an address no node has (a member table may list one); the datagram is lost.
    pub to: Option<NodeId>,
    /// Its request id (read from the datagram by the node).
    pub id: RequestId,
    /// A MEMBERS request of discovery (spec §4.9), not a lock request: the history does not
    /// record it.
    pub members: bool,
    pub datagram: Vec<u8>,
}

/// The operation outstanding.
struct Op {
    /// Its record in the history.
    record: usize,
    action: Action,
    /// The action's own request (attempt 0; each copy carries the call's attempt number).
    request: WireRequest,
    /// Give up at this local time.
    deadline: Instant,
    /// The call on its way: a doubt on the same lock first (spec §7.1.5), then the request.
    call: Call,
    /// What `call` sends: the doubt's request while settling, else `request`.
    sending: WireRequest,
    /// `call` sends a doubt again.
    settling: bool,
    /// A waiting ACQUIRE the client stops waiting for at this local time, withdrawing it
    /// with a CANCEL_WAIT (spec §4.12).
    cancel_at: Option<Instant>,
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

/// Tokens of earlier holds a client remembers to list in its KEEPALIVEs.
const TOKENS_REMEMBERED: usize = 6;

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
    rng: ChaCha8Rng,
    rtt: RttEstimator,
    /// The leader cache (per shard) and suspect nodes over the configured servers, in this
    /// client's own order (a rotation of the node ids).
    routes: Routes,
    resources: usize,
    /// The cluster's size (node ids are 1 to it).
    nodes: usize,
    /// The cluster's shard count (a KEEPALIVE names it, spec §4.11).
    shards: u32,
    /// The latest tokens granted to this client, with their resources (KEEPALIVEs list those
    /// of the hold's shard: holds that ended, whose bits must come back clear).
    tokens_granted: VecDeque<(usize, u64)>,
    drift_ppm: u32,
    op: Option<Op>,
    hold: Option<Hold>,
    /// RELEASEs with an unknown outcome.
    doubts: Doubts<WireRequest>,
    /// Actions to start, each not before its local time, in order.
    plan: VecDeque<(Instant, Action)>,
    /// Joined runs: the real client's discovery (spec §7.1.8, `core::call::discovery`),
    /// which makes the members of the table it reads the ring of `routes`. `None` in a
    /// static run, whose clients are given every node.
    discovery: Option<Discovery>,
    /// The nodes this client was given (its configured servers).
    pub given: BTreeSet<NodeId>,
    /// The nodes that answered a lock request of this client (a final answer, WAITING,
    /// OVERLOADED or NOT_LEADER): in a joined run, those beyond `given` it found through
    /// discovery or a leader hint.
    pub answered_by: BTreeSet<NodeId>,
    /// MEMBERS_REPLY pages this client's discovery took (not ignored), and the member
    /// tables that changed its ring.
    pub members_pages: u64,
    pub rings_adopted: u64,
    /// Replies dropped as from no node it knew ([`super::SimReport::replies_from_unknown`]).
    pub replies_from_unknown: u64,
    /// OK KEEPALIVE answers that listed this client's hold: bit set, bit clear.
    pub keepalives_renewed: u64,
    pub keepalives_dropped: u64,
    /// CANCEL_WAITs answered OK: all, those that took the waiter out of the queue, and
    /// those that found the grant had crossed them (the hold then released).
    pub cancels: u64,
    pub cancels_removed: u64,
    pub cancels_crossed: u64,
    /// The client key its requests are sealed with (spec §7.1.10; the seeds of
    /// `SimConfig::sealed_clients`), and whether the nodes' key file lacks it: such a client
    /// must never have any effect, each of its requests answered UNAUTHENTICATED.
    key: Option<ClientKey>,
    pub wrong_key: bool,
    /// Unsealed UNAUTHENTICATED refusals the wrong-key client dropped (spec §7.1.10 rule 2).
    pub unsealed_refusals: u64,
    /// Final answers UNAUTHENTICATED this client took.
    pub unauthenticated: u64,
}

impl Client {
    /// Whether the session new requests go in sends `node` a token (its own, or one
    /// another node gave, which a node with the same cluster key accepts: spec §7.1.9).
    pub(super) fn validated_at(&self, node: SocketAddr) -> bool {
        self.address_token(node, self.session).is_some()
    }

    /// The address token this client's `session` sends `node` (spec §7.1.9), if any.
    pub(super) fn address_token(&self, node: SocketAddr, session: u64) -> Option<AddressToken> {
        let index = self.routes.find(node)?;
        self.routes.token(index, session)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        idx: usize,
        nodes: usize,
        shards: u32,
        resources: usize,
        clock: Clock,
        seed: u64,
        drift_ppm: u32,
        scripted: bool,
        joined: bool,
        now: Instant,
    ) -> Client {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let session = rng.gen_range(1..u64::MAX);
        let first = rng.gen_range(1..=nodes as u64);
        let given: BTreeSet<NodeId> = if joined {
            // As `--servers` with one node of a joined cluster: any node, the bootstrap node
            // or one that joined it (and may hold no replica, or be down); the others are
            // found through its member table.
            BTreeSet::from([first])
        } else {
            (1..=nodes as NodeId).collect()
        };
        // A static run's clients are given every node, each in its own order.
        let servers: Vec<SocketAddr> = (0..nodes as u64)
            .map(|k| (first - 1 + k) % nodes as u64 + 1)
            .filter(|node| given.contains(node))
            .map(node_addr)
            .collect();
        let discovery = joined.then(|| Discovery::new(&servers, false, rng.gen_range(1..u64::MAX)));
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
            routes: Routes::new(&servers, shards, false),
            resources,
            nodes,
            shards,
            tokens_granted: VecDeque::new(),
            drift_ppm,
            op: None,
            hold: None,
            doubts: Doubts::new(),
            plan: VecDeque::new(),
            discovery,
            given,
            answered_by: BTreeSet::new(),
            members_pages: 0,
            replies_from_unknown: 0,
            rings_adopted: 0,
            keepalives_renewed: 0,
            keepalives_dropped: 0,
            cancels: 0,
            cancels_removed: 0,
            cancels_crossed: 0,
            key: None,
            wrong_key: false,
            unsealed_refusals: 0,
            unauthenticated: 0,
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

    /// Seals every request with `key` from now on (spec §7.1.10); `wrong`: a key the nodes'
    /// key file does not list.
    pub fn set_key(&mut self, key: ClientKey, wrong: bool) {
        self.key = Some(key);
        self.wrong_key = wrong;
    }

    /// The key this client seals with, to read a reply's seal by (`core::call::seal_of`).
    pub fn key(&self) -> Option<&ClientKey> {
        self.key.as_ref()
    }

    /// What a final answer must be, given this client's key (spec §7.2.6): a client whose
    /// key the nodes do not know gets UNAUTHENTICATED and nothing else (no effect); one they
    /// know, or one without a key where keys are off or optional, never gets it.
    fn key_violation(&self, reply: &Reply) -> Option<String> {
        let unauthenticated = reply.answer.status == Status::Unauthenticated;
        match (self.wrong_key, unauthenticated) {
            (true, false) => Some(format!(
                "client auth: client {} seals with a key no node lists, yet was answered {:?} \
                 (spec §7.2.6: UNAUTHENTICATED, no effect)",
                self.idx, reply.answer
            )),
            (false, true) => Some(format!(
                "client auth: client {} ({}) was answered UNAUTHENTICATED",
                self.idx,
                if self.key.is_some() {
                    "sealed with a listed key"
                } else {
                    "without a key, which the nodes accept"
                }
            )),
            _ => None,
        }
    }

    /// Queues an action (scenarios): it starts once every earlier one finished and the local
    /// clock reads `at`.
    pub fn push_action(&mut self, at_local: Instant, action: Action) {
        self.plan.push_back((at_local, action));
    }

    /// When to call [`Client::wake`] next, on this client's clock.
    pub fn next_wake(&self) -> Option<Instant> {
        match &self.op {
            // No withdrawal while a doubt is settled first (see `withdraw`).
            Some(op) => match (
                op.call.poll_timeout(),
                op.cancel_at.filter(|_| !op.settling),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            None => self.plan.front().map(|&(at, _)| at),
        }
    }

    /// Timers: retransmit, give up, or start the next planned action.
    pub fn wake(&mut self, now: Instant, hist: &mut History, out: &mut Vec<Outgoing>) {
        let local = self.clock.local(now);
        if self
            .op
            .as_ref()
            .is_some_and(|op| !op.settling && op.cancel_at.is_some_and(|at| at <= local))
        {
            self.withdraw(now, local, hist);
        }
        if let Some(op) = self.op.as_mut() {
            op.call.handle_timeout(local, &self.routes);
            self.after_input(now, None, hist, out);
            // As the real client after a timer turn: every way in silent asks for a refresh,
            // and a refresh that is wanted and due starts (spec §7.1.8 rule 3).
            if let Some(discovery) = self.discovery.as_mut() {
                discovery.check_silence(&self.routes);
            }
            self.poll_discovery(local, out);
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

    /// A datagram for this client. Anything that does not answer the outstanding request is
    /// dropped (spec §7.1.4).
    pub fn on_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: ReplyMsg,
        seal: Seal,
        hist: &mut History,
        out: &mut Vec<Outgoing>,
    ) {
        let local = self.clock.local(now);
        let id = match &msg {
            ReplyMsg::Answer(reply) => reply.id,
            ReplyMsg::NotLeader { id, .. } | ReplyMsg::Retry { id, .. } => *id,
            ReplyMsg::Members(datagram) => {
                self.on_members(from, datagram, out);
                return;
            }
        };
        let sending = self.op.as_ref().map(|op| RequestId {
            session: op.sending.session_id,
            request: op.sending.request_id,
        });
        if sending != Some(id) {
            // Dropped (spec §7.1.4), but the checkers still judge what the server said.
            if let ReplyMsg::Answer(reply) = &msg {
                hist.late(id, now, **reply);
            }
            return;
        }
        // The datagram the node sends, as the client reads it: through the node's own
        // encoding and the codec.
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        let reply = match &msg {
            ReplyMsg::Answer(reply) => {
                let len = encode_reply(reply, &mut buf).expect("a table reply encodes");
                WireReply::decode(&buf[..len]).expect("an encoded reply decodes")
            }
            &ReplyMsg::NotLeader {
                id,
                attempt,
                kind,
                hint,
            } => WireReply {
                hint: hint.map_or(Hint::None, |node| Hint::Leader(node_addr(node))),
                ..WireReply::bare(
                    kind.reply_type(),
                    id.session,
                    id.request,
                    attempt,
                    Status::NotLeader,
                )
            },
            &ReplyMsg::Retry {
                id,
                attempt,
                kind,
                token,
            } => WireReply {
                hint: Hint::AddressToken(token),
                ..WireReply::bare(
                    kind.reply_type(),
                    id.session,
                    id.request,
                    attempt,
                    Status::Retry,
                )
            },
            ReplyMsg::Members(_) => unreachable!("handled above"),
        };
        if let Some(discovery) = self.discovery.as_mut() {
            // Before the call sees it, as the real client: a NOT_LEADER without a hint, or
            // naming a node that is not a candidate, asks for a refresh (spec §7.1.8 rule 3).
            if reply.status == Status::NotLeader {
                let hint = match reply.hint {
                    Hint::Leader(hint) => self.routes.usable_hint(hint),
                    _ => None,
                };
                discovery.check_not_leader(node_addr(from), hint);
                if discovery.hinted() {
                    // As the real client: a refresh asked by a hint starts at once.
                    self.poll_discovery(local, out);
                }
            }
        }
        let op = self.op.as_mut().expect("outstanding");
        // The seal as the simulator read it off the node's datagram with this client's key
        // (`core::call::seal_of`, as the real client's receiving thread does).
        let handled = op.call.handle_reply(
            local,
            node_addr(from),
            &reply,
            seal,
            &self.routes,
            &mut self.rtt,
        );
        match handled {
            // A leader this client does not know yet (it never sent there): as the real
            // client, drop the reply and read the member table again (spec §7.1.8 rule 3).
            Handled::Rejected(Rejected::NotFromANode) => {
                self.replies_from_unknown += 1;
                if let Some(discovery) = self.discovery.as_mut() {
                    discovery.check_source(node_addr(from));
                }
            }
            // The client whose key no node lists is refused unsealed (the nodes do not know
            // its key), and a refusal it cannot trust does not end a RELEASE, RENEW,
            // CANCEL_WAIT or waited ACQUIRE (spec §7.1.10 rule 2): dropping it is the rule
            // working, not a genuine answer refused.
            Handled::Rejected(Rejected::Seal(_))
                if self.wrong_key && reply.status == Status::Unauthenticated =>
            {
                self.unsealed_refusals += 1;
            }
            Handled::Rejected(why) => hist.rejected.push((
                now,
                format!("client {} rejected {reply:?}: {why}", self.idx),
            )),
            _ => {}
        }
        if handled.ignored() {
            return;
        }
        self.answered_by.insert(from);
        let answer = match msg {
            ReplyMsg::Answer(reply) => Some(*reply),
            ReplyMsg::NotLeader { .. } | ReplyMsg::Members(_) | ReplyMsg::Retry { .. } => None,
        };
        self.after_input(now, answer, hist, out);
    }

    /// After an input to the outstanding call: send what it readied, and act on its outcome.
    /// `reply`: the answer the input carried, if any.
    fn after_input(
        &mut self,
        now: Instant,
        reply: Option<Reply>,
        hist: &mut History,
        out: &mut Vec<Outgoing>,
    ) {
        let local = self.clock.local(now);
        self.flush(out);
        let op = self.op.as_mut().expect("outstanding");
        let Some(outcome) = op.call.outcome() else {
            return;
        };
        if op.settling {
            if let Some(reply) = reply {
                // What the server said to the doubt: the checkers judge it like any answer.
                hist.late(reply.id, now, reply);
            }
            let call = op.call.clone();
            if !self.doubts.end_settle(call, |_| {}) {
                // Still unsettled: the action was never sent and changed nothing.
                self.give_up(now, hist);
                return;
            }
            // Settled: no copy of it can take effect any more. The next doubt on the lock, if
            // any, or the action's own request goes.
            let (request, deadline) = (op.request, op.deadline);
            let (call, sending, settling) = self.next_call(local, &request, deadline);
            let op = self.op.as_mut().expect("outstanding");
            (op.call, op.sending, op.settling) = (call, sending, settling);
            return self.after_input(now, None, hist, out);
        }
        if let Some(discovery) = self.discovery.as_mut() {
            // The action's own request ended: without any reply, a refresh is wanted.
            discovery.check_outcome(outcome);
        }
        match outcome {
            Outcome::Answered { lease_start, .. } => {
                let reply = reply.expect("a final answer came with a reply");
                let op = self.op.take().expect("outstanding");
                hist.answered(op.record, now, reply);
                if let Some(why) = self.key_violation(&reply) {
                    hist.rejected.push((now, why));
                }
                self.unauthenticated += u64::from(reply.answer.status == Status::Unauthenticated);
                self.on_final(now, local, &op, &reply, lease_start, hist);
                if self.plan.is_empty() && !self.scripted {
                    self.plan_after(local);
                }
            }
            Outcome::GaveUp { .. } | Outcome::InDoubt(_) => {
                if let Some(reply) = reply {
                    hist.late(reply.id, now, reply);
                }
                self.give_up(now, hist);
            }
        }
    }

    /// Hands the copy the call readied to the network.
    fn flush(&mut self, out: &mut Vec<Outgoing>) {
        let op = self.op.as_mut().expect("outstanding");
        if let Some(copy) = op.call.poll_transmit() {
            let wire = WireRequest {
                attempt: copy.attempt,
                ..op.sending
            };
            let mut datagram = vec![0u8; DATAGRAM_LEN_MAX];
            let token = copy.token.as_ref();
            let len = match self.key.as_ref() {
                Some(key) => {
                    wire.encode_padded_sealed(&mut datagram, sealed_datagram_len(&wire), token, key)
                }
                None => wire.encode_padded_with_token(
                    &mut datagram,
                    datagram_len(&wire).max(REQUEST_LEN_MIN),
                    token,
                ),
            }
            .expect("a simulated request encodes");
            datagram.truncate(len);
            out.push(Outgoing {
                to: node_at(copy.to, self.nodes),
                id: RequestId {
                    session: wire.session_id,
                    request: wire.request_id,
                },
                members: false,
                datagram,
            });
        }
    }

    /// Discovery (joined runs): starts a round of MEMBERS requests if one is wanted and due,
    /// one to every address the client knows, as the real client does at the start of a call
    /// and after a timer turn (spec §7.1.8 rule 1).
    fn poll_discovery(&mut self, local: Instant, out: &mut Vec<Outgoing>) {
        let Some(discovery) = self.discovery.as_mut() else {
            return;
        };
        let known = (0u32..).map_while(|i| self.routes.peer(i));
        for ask in discovery.poll_round(local, known) {
            self.send_members(ask, out);
        }
    }

    /// The MEMBERS request datagram `ask` stands for, as the real client encodes it.
    fn send_members(&mut self, ask: MembersAsk, out: &mut Vec<Outgoing>) {
        let discovery = self.discovery.as_ref().expect("only discovery asks");
        let request = discovery.request(ask);
        let mut datagram = vec![0u8; DATAGRAM_LEN_MAX];
        let len = request
            .encode(&mut datagram)
            .expect("a MEMBERS request encodes");
        datagram.truncate(len);
        out.push(Outgoing {
            to: node_at(ask.to, self.nodes),
            id: RequestId {
                session: request.session_id,
                request: request.request_id,
            },
            members: true,
            datagram,
        });
    }

    /// A MEMBERS_REPLY datagram from node `from`, read as the real client reads one
    /// (`client::routing`, `handle_members_reply`): decoded, handed to discovery, and the
    /// next page asked or the new ring adopted — also by the operation under way
    /// ([`Call::rebase`], spec §7.1.8 rule 2).
    fn on_members(&mut self, from: NodeId, datagram: &[u8], out: &mut Vec<Outgoing>) {
        let Some(discovery) = self.discovery.as_mut() else {
            return; // a static run's clients never ask
        };
        let Ok(reply) = MembersReply::decode(datagram) else {
            return;
        };
        match discovery.handle_reply(node_addr(from), &reply) {
            PageOutcome::Ignored => return,
            PageOutcome::Ask(ask) => self.send_members(ask, out),
            PageOutcome::Done(None) => {}
            PageOutcome::Done(Some(candidates)) => {
                let routes = self.routes.succeeded_by(&candidates);
                if let Some(op) = self.op.as_mut() {
                    op.call.rebase(&self.routes, &routes);
                }
                self.routes = routes;
                self.rings_adopted += 1;
            }
        }
        self.members_pages += 1;
    }

    /// A final answer to the action's own request, its lease counted from `lease_start`.
    fn on_final(
        &mut self,
        now: Instant,
        local: Instant,
        op: &Op,
        reply: &Reply,
        lease_start: Instant,
        hist: &mut History,
    ) {
        let answer = &reply.answer;
        match op.action {
            Action::Acquire {
                resource, ttl_ms, ..
            } if answer.status == Status::Ok => {
                let valid_until = lease_start + lease_validity(answer.lease_ms, self.drift_ppm);
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
                if !self
                    .tokens_granted
                    .contains(&(resource, answer.fencing_token))
                {
                    if self.tokens_granted.len() == TOKENS_REMEMBERED {
                        self.tokens_granted.pop_front();
                    }
                    self.tokens_granted
                        .push_back((resource, answer.fencing_token));
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
                let valid_until = lease_start + lease_validity(answer.lease_ms, self.drift_ppm);
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
            Action::Keepalive { resource, .. } if answer.status == Status::Ok => {
                let RequestBody::Keepalive { tokens, .. } = op.request.body else {
                    unreachable!("a keepalive action sends a KEEPALIVE");
                };
                let Some(h) = self.hold.as_ref().filter(|h| h.resource == resource) else {
                    return;
                };
                let Some(i) = tokens.iter().position(|token| token == h.token) else {
                    return;
                };
                if answer.fencing_token >> i & 1 == 1 {
                    // Renewed: as after a RENEW (spec §4.11, client obligation 2).
                    self.keepalives_renewed += 1;
                    let valid_until = lease_start + lease_validity(answer.lease_ms, self.drift_ppm);
                    let h = self.hold.as_mut().expect("checked above");
                    h.valid_until = h.valid_until.max(valid_until);
                    if local < valid_until {
                        hist.interval(
                            self.idx,
                            resource,
                            now,
                            self.clock.true_time(valid_until),
                            op.record,
                        );
                    }
                } else {
                    // Not renewed: the hold ended at the server; drop it at once (obligation 3).
                    self.keepalives_dropped += 1;
                    hist.cut(self.idx, resource, now);
                    self.hold = None;
                }
            }
            Action::CancelWait { resource, .. } if answer.status == Status::Ok => {
                self.cancels += 1;
                self.cancels_removed += u64::from(answer.waiter_count);
                if answer.hold_count > 0 {
                    // The grant crossed the cancel: release that hold, never believed in
                    // (spec §4.12, client obligations).
                    self.cancels_crossed += 1;
                    self.plan.push_front((local, Action::Release { resource }));
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

    /// Stops waiting for the outstanding ACQUIRE (as a dropped future does) and withdraws it
    /// next with a CANCEL_WAIT (spec §4.12). Not while the call still settles a doubt on the
    /// lock (the doubt's settling would be left open): the caller waits for its own request.
    fn withdraw(&mut self, now: Instant, local: Instant, hist: &mut History) {
        let op = self.op.take().expect("outstanding");
        assert!(!op.settling, "a doubt's settling is never cut short");
        let Action::Acquire { resource, .. } = op.action else {
            unreachable!("only a waiting acquire is withdrawn");
        };
        hist.withdrawn(op.record, now);
        let cancel = Action::CancelWait {
            resource,
            target_session: op.request.session_id,
            target_request: op.request.request_id,
        };
        self.plan.push_front((local, cancel));
    }

    /// The operation ended without a final answer (spec §7.1.5).
    fn give_up(&mut self, now: Instant, hist: &mut History) {
        let op = self.op.take().expect("outstanding");
        hist.gave_up(op.record, now);
        if let (false, Some(Outcome::InDoubt(_)), Action::Release { resource }) =
            (op.settling, op.call.outcome(), op.action)
        {
            // The outcome is unknown: assume it took effect (believing in fewer holds is
            // safe), and keep the release until it is settled, in a session of its own.
            if let Some(h) = self.hold.as_mut().filter(|h| h.resource == resource) {
                h.count = h.count.saturating_sub(1);
                if h.count == 0 {
                    self.hold = None;
                }
            }
            self.doubts
                .keep(RESOURCES[resource], self.id(), op.request, op.call);
            self.session = self.rng.gen_range(1..u64::MAX);
        }
        if self.plan.is_empty() && !self.scripted {
            self.plan_after(self.clock.local(now));
        }
    }

    fn start(&mut self, now: Instant, action: Action, hist: &mut History, out: &mut Vec<Outgoing>) {
        let local = self.clock.local(now);
        if action != Action::Abandon {
            // As the real client at the start of every call (spec §7.1.8 rule 3).
            self.poll_discovery(local, out);
        }
        let (body, timeout) = match action {
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
                RequestBody::Acquire {
                    resource: RESOURCES[resource],
                    client: self.id(),
                    wait_ms,
                    ttl_ms,
                },
                Duration::from_millis(wait_ms.into()) + ACQUIRE_GRACE,
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
                    RequestBody::Release {
                        resource: RESOURCES[resource],
                        client: self.id(),
                    },
                    RELEASE_TIMEOUT,
                )
            }
            Action::Renew { resource, ttl_ms } => (
                RequestBody::Renew {
                    resource: RESOURCES[resource],
                    client: self.id(),
                    ttl_ms,
                },
                OP_TIMEOUT,
            ),
            Action::Keepalive { resource, ttl_ms } => {
                let Some(body) = self.keepalive_body(resource, ttl_ms) else {
                    // No hold and no earlier token in its shard: nothing to list.
                    if self.plan.is_empty() && !self.scripted {
                        self.plan_after(local);
                    }
                    return;
                };
                (body, OP_TIMEOUT)
            }
            Action::Status { resource } => (
                RequestBody::Status {
                    resource: RESOURCES[resource],
                },
                OP_TIMEOUT,
            ),
            Action::CancelWait {
                resource,
                target_session,
                target_request,
            } => (
                RequestBody::CancelWait {
                    resource: RESOURCES[resource],
                    client: self.id(),
                    target_session,
                    target_request,
                },
                OP_TIMEOUT,
            ),
        };
        // A CANCEL_WAIT goes in a session of its own, as the real clients send it on another
        // lane than the acquire's (spec §4.12).
        let session_id = match action {
            Action::CancelWait { .. } => self.rng.gen_range(1..u64::MAX),
            _ => self.session,
        };
        let request = WireRequest {
            session_id,
            request_id: self.request_next,
            attempt: 0,
            body,
        };
        self.request_next += 1;
        let record = hist.begin(
            self.idx,
            table_request(&request, self.addr, datagram_len(&request)),
            action,
            now,
        );
        let deadline = local + timeout;
        let (call, sending, settling) = self.next_call(local, &request, deadline);
        let cancel_at = match action {
            Action::Acquire { wait_ms, .. } if wait_ms > 0 && !self.scripted => {
                cancel_after(&request, wait_ms).map(|after| local + after)
            }
            _ => None,
        };
        self.op = Some(Op {
            record,
            action,
            request,
            deadline,
            call,
            sending,
            settling,
            cancel_at,
        });
        self.after_input(now, None, hist, out);
    }

    /// A KEEPALIVE for the hold on `resource` (spec §4.11): its token, if this client holds
    /// it, among the tokens of its earlier holds in the same shard, in an order drawn from the
    /// client's random numbers. `None` if there is no token to list. The tokens' bytes are
    /// leaked: a simulated request borrows for the whole run (a few bytes per keepalive).
    fn keepalive_body(&mut self, resource: usize, ttl_ms: u32) -> Option<RequestBody<'static>> {
        let shard = shard_of(RESOURCES[resource], self.shards);
        let mut tokens: Vec<u64> = self
            .tokens_granted
            .iter()
            .filter(|&&(r, _)| shard_of(RESOURCES[r], self.shards) == shard)
            .map(|&(_, token)| token)
            .collect();
        if let Some(h) = self.hold.as_ref().filter(|h| h.resource == resource) {
            if !tokens.contains(&h.token) {
                tokens.push(h.token);
            }
        }
        if tokens.is_empty() {
            return None;
        }
        let at = self.rng.gen_range(0..tokens.len());
        tokens.rotate_left(at);
        let mut bytes = vec![0u8; 8 * tokens.len()];
        Tokens::write(&tokens, &mut bytes).expect("room for the tokens");
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        Some(RequestBody::Keepalive {
            shard: shard as u16,
            shards: self.shards as u16,
            ttl_ms,
            tokens: Tokens::from_bytes(bytes).expect("whole tokens"),
        })
    }

    /// The next call of an operation whose own request is `request`: a doubt on the same lock
    /// first, sent again with the next attempt number on a fresh back-off (spec §7.1.5), or
    /// the request itself. Returns the call, what it sends, and whether it is a doubt's.
    fn next_call(
        &mut self,
        local: Instant,
        request: &WireRequest,
        deadline: Instant,
    ) -> (Call, WireRequest, bool) {
        let settle = match lock_of(&request.body) {
            Some((resource, client)) => self.doubts.begin_settle(local, resource, client, |_| {}),
            None => Settle::Clear,
        };
        match settle {
            Settle::Resend(resend) => (
                resend.call(local, deadline, &self.rtt, &self.routes),
                resend.payload,
                true,
            ),
            Settle::Clear => (
                Call::new(
                    local,
                    CallRequest::of(request, &self.routes, LEASE_MS_MAX_DEFAULT)
                        .sealed(self.key.is_some()),
                    self.rtt.timer(),
                    deadline,
                    ACQUIRE_GRACE,
                    &self.routes,
                ),
                *request,
                false,
            ),
            Settle::Busy => unreachable!("one operation at a time"),
        }
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
        let frac = |rng: &mut ChaCha8Rng, lo: u64, hi: u64| {
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
        } else if pattern < 45 {
            // By KEEPALIVE, sometimes after the lease ended (its bit then comes back clear,
            // and the lock may have gone to another client meanwhile).
            let renew_at = local + frac(&mut self.rng, 30, 130);
            let ttl_ms = self.rng.gen_range(150..1_500);
            self.plan
                .push_back((renew_at, Action::Keepalive { resource, ttl_ms }));
            let release_at = renew_at + frac(&mut self.rng, 10, 80);
            self.plan
                .push_back((release_at, Action::Release { resource }));
        } else if pattern < 55 {
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
