//! Snapshots of the lock table: its whole state as bytes, and a table rebuilt from them.
//!
//! A Raft shard compacts its log by replacing an applied prefix with a snapshot of its state
//! machine, and sends that snapshot to a follower too far behind to be sent the log (Raft
//! §7, InstallSnapshot). A replica restored from a snapshot and then fed the rest of the log
//! must behave exactly like one that applied the whole log: the same replies, timers and
//! counters, and the same snapshot bytes later. So a snapshot holds every value that can
//! influence a future output, and nothing else:
//!
//! - **Stored:** the table's clock (`now_last`) and lease horizon, the fencing counter, the
//!   waiter sequence counter; every session (id, last activity, expired window, remembered
//!   answers); every known resource (id, default TTL, fencing token, and while held: holder,
//!   hold count, TTL, expiry and the live waiters in queue order, each with everything its
//!   answer will need).
//! - **Rebuilt:** the resource index, the timer set, the idle-session index, the counters,
//!   and each session's queued requests (every waiter names its session and request id).
//! - **Not state:** replies not yet polled ([`LockTable::snapshot`] asserts there are none:
//!   they are outputs of commands already applied), queue tombstones, allocation sizes, the
//!   stale lease fields of a free resource (nothing reads them before the next grant sets
//!   them), the hash keys of the index, and the slot numbers with their free list.
//!
//! # Why slot numbers need not be kept
//!
//! A table that applied the log numbers its slots in creation order and reuses freed ones
//! last in, first out; a restored table numbers them in resource id order. A slot number
//! reaches no output: replies carry ids, tokens and counts, never a slot; resources are found
//! through the index by id; `resources_max` counts resources, not slots. The one place a slot
//! number could decide something is the timer order (due, kind, seq, slot), where it is the
//! last tie-break; but two timers never get that far, because `seq` is unique per kind: a
//! hold's timer carries its fencing token (one per grant) and a wait's carries the waiter's
//! `seq` (one per enqueue). [`LockTable::restore`] refuses a snapshot in which either repeats,
//! so that stays true for a restored table too.
//!
//! # Canonical bytes
//!
//! The same state always gives the same bytes, whatever its memory layout: sessions go in
//! increasing id order (never hash map order), answers in increasing request id order,
//! resources in increasing byte order of their ids, waiters in queue order. Restore checks
//! every one of these orders (which also rules out duplicates), so a snapshot of a restored
//! table equals the snapshot it was restored from.
//!
//! # Layout (format version 1)
//!
//! Integers are unsigned and big-endian; `u8[n]` is n raw bytes; times are microseconds on the
//! table's clock (`Instant`); a record list is its count followed by that many records, with
//! nothing between them. The snapshot is, in order:
//!
//! | Field              | Type        | Meaning                                                   |
//! |--------------------|-------------|-----------------------------------------------------------|
//! | magic              | `u8[4]`     | `55 4C 54 53` ("ULTS": udplock table snapshot)            |
//! | version            | `u8`        | 1; any other value is refused                             |
//! | now_last_us        | `u64`       | the latest `now` the table was given                      |
//! | lease_horizon_us   | `u64`       | the latest expiry any hold has ever had                   |
//! | token_next         | `u64`       | the next fencing token, 1 ..= 0xBFFF_FFFF_FFFF_FFFF        |
//! | wait_seq_next      | `u64`       | the next waiter seq, 1 ..= 2^63 - 1                       |
//! | session_count      | `u32`       | at most `sessions_max`                                    |
//! | sessions           | Session\*   | ids strictly increasing                                   |
//! | resource_count     | `u32`       | at most `resources_max`                                   |
//! | resources          | Resource\*  | ids strictly increasing (bytewise, shorter prefix first)  |
//!
//! and the input ends there: trailing bytes are refused.
//!
//! **Session**
//!
//! | Field              | Type        | Meaning                                                   |
//! |--------------------|-------------|-----------------------------------------------------------|
//! | session_id         | `u64`       | non-zero                                                  |
//! | active_last_us     | `u64`       | receive time of its latest request: at most now_last_us, and at least now_last_us - `session_idle_ms` (else it was forgotten) |
//! | expired_through    | `u64`       | request ids up to this were evicted: REQUEST_EXPIRED       |
//! | answer_count       | `u32`       | at most `answers_per_session_max`                         |
//! | answers            | Answer\*    | request ids strictly increasing                           |
//!
//! **Answer** (34 bytes): a remembered final answer.
//!
//! | Field              | Type        | Meaning                                                   |
//! |--------------------|-------------|-----------------------------------------------------------|
//! | request_id         | `u64`       | non-zero                                                  |
//! | kind               | `u8`        | the request's message type (spec §10.1): 0x01 ACQUIRE, 0x02 RELEASE, 0x03 RENEW or 0x05 CONFIGURE |
//! | attempt            | `u16`       | the attempt the answer was produced for                   |
//! | status             | `u16`       | status code (spec §10.2): OK, LOCK_ACQUISITION_TIMEOUT, LOCK_NOT_HELD, RESOURCE_DOES_NOT_EXIST or HOLD_LIMIT_EXCEEDED (no other is ever remembered) |
//! | flags              | `u8`        | bit 0: queued (answered after waiting); bits 1-7 zero      |
//! | fencing_token      | `u64`       |                                                           |
//! | hold_count         | `u32`       |                                                           |
//! | lease_ms           | `u32`       |                                                           |
//! | waiter_count       | `u32`       |                                                           |
//!
//! The answer's retry_after_ms is not stored: it is non-zero only with OVERLOADED, which is
//! never remembered, so it is 0.
//!
//! **Resource**
//!
//! | Field              | Type        | Meaning                                                   |
//! |--------------------|-------------|-----------------------------------------------------------|
//! | resource_len       | `u8`        | 1 ..= 255                                                 |
//! | resource           | `u8[resource_len]` | the resource id                                    |
//! | default_ttl_ms     | `u32`       | configured default TTL, 0 = none; at most `ttl_ms_max`     |
//! | token              | `u64`       | held: the hold's fencing token (non-zero); free: the last hold's since the resource became known (0 = none); below token_next |
//! | hold_count         | `u32`       | 0 = free, else 1 ..= `holds_per_lock_max`                 |
//!
//! A free resource (hold_count 0) ends there, and must have a default TTL (a free resource
//! without one is forgotten, so it is no state). A held one goes on:
//!
//! | Field              | Type        | Meaning                                                   |
//! |--------------------|-------------|-----------------------------------------------------------|
//! | holder_len         | `u8`        | 1 ..= 255                                                 |
//! | holder             | `u8[holder_len]` | the holder's client id                               |
//! | hold_ttl_ms        | `u32`       | TTL of the latest grant or renewal, 1 ..= `ttl_ms_max`     |
//! | expiry_us          | `u64`       | now_last_us ..= now_last_us + `ttl_ms_max`, and at most lease_horizon_us |
//! | waiter_count       | `u32`       | at most `waiters_per_resource_max` (all resources together: `waiters_max`) |
//! | waiters            | Waiter\*    | the queue, head first; seq strictly increasing            |
//!
//! **Waiter**: a queued acquire.
//!
//! | Field              | Type        | Meaning                                                   |
//! |--------------------|-------------|-----------------------------------------------------------|
//! | seq                | `u64`       | 1 ..= wait_seq_next - 1, unique in the snapshot           |
//! | session_id         | `u64`       | a session of this snapshot                                |
//! | request_id         | `u64`       | non-zero; neither answered in its session nor queued twice |
//! | attempt            | `u16`       | highest attempt received                                  |
//! | reply_to           | Address     | where the latest copy came from                           |
//! | client_len         | `u8`        | 1 ..= 255                                                 |
//! | client             | `u8[client_len]` | the client that will hold the lock                   |
//! | deadline_us        | `u64`       | now_last_us ..= now_last_us + `wait_ms_max`, and at most the session's active_last_us + `session_idle_ms` |
//! | ttl_ms             | `u32`       | the acquire's ttl_ms (0 = default), at most `ttl_ms_max`   |
//!
//! **Address**: 7 bytes for IPv4, 27 for IPv6.
//!
//! | Field              | Type        | Meaning                                                   |
//! |--------------------|-------------|-----------------------------------------------------------|
//! | family             | `u8`        | 4 or 6                                                    |
//! | ip                 | `u8[4]` or `u8[16]` | the address                                       |
//! | port               | `u16`       |                                                           |
//! | flowinfo           | `u32`       | IPv6 only                                                 |
//! | scope_id           | `u32`       | IPv6 only                                                 |
//!
//! Besides these per-field rules, non-zero tokens are unique over all resources (one per
//! grant), and a session's queued requests number at most `answers_per_session_max`.
//!
//! # Untrusted input
//!
//! A snapshot may come over the network from a faulty peer. [`LockTable::restore`] never
//! panics on its bytes, and refuses (with [`SnapshotError`]) every snapshot that breaks a rule
//! above. Those rules are the table's own invariants, so a restored table can never trip one
//! of its assertions later. Every count is checked against its configured limit and against
//! the bytes left (each record has a minimum length) before anything is reserved for it, so
//! memory stays bounded by the input's length and the limits.
//!
//! The limits are the restoring table's: a snapshot of a table with larger limits may be
//! refused. Every replica of a shard has the same limits.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use udplock_protocol::{MessageType, RequestKind, Status};

use super::answers::Answers;
use super::index::ResourceIndex;
use super::queue::{WaitQueue, Waiter};
use super::{
    Answer, Config, LockTable, Pending, Remembered, RequestId, Session, SessionMap, Slot, Timer,
    ID_LEN_MAX,
};
use crate::core::keyed_hash::KeyedHash;
use crate::core::time::{Duration, Instant};

/// First bytes of every snapshot: "ULTS", udplock table snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"ULTS";

/// The format written by [`LockTable::snapshot`], and the only one restored.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Largest `token_next` restored: `Config::validate` allows a first token up to 2^63 - 1 and
/// promises 2^62 grants after it, so no table reaches this, and a restored table has at least
/// 2^62 grants left before its counter runs out.
const TOKEN_NEXT_MAX: u64 = u64::MAX / 2 + (1 << 62);

/// Largest `wait_seq_next` restored: one seq per enqueue from 1, so never reached, and far
/// enough from `u64::MAX` that the counter cannot overflow after a restore.
const WAIT_SEQ_NEXT_MAX: u64 = u64::MAX / 2;

/// Shortest encodings, to bound a count by the bytes left before reserving memory for it.
const SESSION_LEN_MIN: usize = 8 + 8 + 8 + 4;
const ANSWER_LEN: usize = 8 + 1 + 2 + 2 + 1 + 8 + 4 + 4 + 4;
const RESOURCE_LEN_MIN: usize = 1 + 1 + 4 + 8 + 4;
const WAITER_LEN_MIN: usize = 8 + 8 + 8 + 2 + ADDRESS_V4_LEN + 1 + 1 + 8 + 4;
const ADDRESS_V4_LEN: usize = 1 + 4 + 2;

const _: () = assert!(ANSWER_LEN == 34);
const _: () = assert!(WAITER_LEN_MIN == 47);

/// Longest encodings, to bound a whole snapshot by the limits ([`Config::snapshot_len_max`]).
/// The header: magic, version, four `u64`s and the two counts.
const HEADER_LEN: u64 = 4 + 1 + 4 * 8 + 4 + 4;
/// A session without its answers.
const SESSION_LEN_FIXED: u64 = SESSION_LEN_MIN as u64;
/// A held resource with a 255-byte id and a 255-byte holder, without its waiters.
const RESOURCE_LEN_MAX: u64 = (1 + ID_LEN_MAX + 4 + 8 + 4 + 1 + ID_LEN_MAX + 4 + 8 + 4) as u64;
/// A waiter with an IPv6 address and a 255-byte client id.
const WAITER_LEN_MAX: u64 = (8 + 8 + 8 + 2 + ADDRESS_V6_LEN + 1 + ID_LEN_MAX + 8 + 4) as u64;
const ADDRESS_V6_LEN: usize = 1 + 16 + 2 + 4 + 4;

const _: () = assert!(RESOURCE_LEN_MAX == 544);
const _: () = assert!(WAITER_LEN_MAX == 321);

impl Config {
    /// The longest snapshot ([`LockTable::snapshot`]) a table with these limits can take, in
    /// bytes: every limit reached at once with the longest record of its kind — `sessions_max`
    /// sessions of `answers_per_session_max` answers, `resources_max` held resources with
    /// 255-byte ids and holders, `waiters_max` waiters with IPv6 addresses and 255-byte client
    /// ids. A Raft shard must be able to send its snapshot (at most `SNAPSHOT_LEN_MAX`), so
    /// the replica's configuration check compares this with it (`replica::Config::validate`).
    pub const fn snapshot_len_max(&self) -> u64 {
        let answers = self.answers_per_session_max as u64 * ANSWER_LEN as u64;
        HEADER_LEN
            + self.sessions_max as u64 * (SESSION_LEN_FIXED + answers)
            + self.resources_max as u64 * RESOURCE_LEN_MAX
            + self.waiters_max as u64 * WAITER_LEN_MAX
    }
}

/// Answer flags: bit 0, the request waited in a queue before this answer.
const FLAG_QUEUED: u8 = 0x01;

/// Why bytes are not a snapshot this table can restore. Nothing was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError {
    /// The rule the input broke, e.g. "truncated" or "resource ids not increasing".
    pub what: &'static str,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid lock table snapshot: {}", self.what)
    }
}

impl std::error::Error for SnapshotError {}

fn fail<T>(what: &'static str) -> Result<T, SnapshotError> {
    Err(SnapshotError { what })
}

/// `Ok` if `rule` holds, else the error `what`.
fn check(rule: bool, what: &'static str) -> Result<(), SnapshotError> {
    if rule {
        Ok(())
    } else {
        fail(what)
    }
}

impl LockTable {
    /// Appends the table's complete state to `out`, in the format of the module docs.
    /// Deterministic: the same state gives the same bytes, however it was reached.
    ///
    /// Call it between `handle_*` calls, with every reply drained: replies are outputs of
    /// commands already applied, not state, so a snapshot cannot carry them (panics if any is
    /// left). Costs O(n log n) in the number of resources and sessions (both are sorted).
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        assert!(
            self.replies.is_empty(),
            "snapshot with {} undrained replies",
            self.replies.len()
        );
        let start = out.len();
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        put_u64(out, self.now_last.as_micros());
        put_u64(out, self.lease_horizon.as_micros());
        put_u64(out, self.token_next);
        put_u64(out, self.wait_seq_next);

        let mut session_ids: Vec<u64> = self.sessions.keys().map(|key| key.id).collect();
        session_ids.sort_unstable();
        put_u32(out, count_u32(session_ids.len()));
        for id in session_ids {
            let session = &self.sessions[&self.session_key(id)];
            put_u64(out, id);
            put_u64(out, session.active_last.as_micros());
            put_u64(out, session.expired_through);
            put_u32(out, count_u32(session.answers.len()));
            for (request, remembered) in session.answers.iter() {
                put_answer(out, request, remembered);
            }
        }

        let mut slots: Vec<&Slot> = self.slots.iter().filter(|s| s.resource_len > 0).collect();
        slots.sort_unstable_by(|a, b| a.resource().cmp(b.resource()));
        assert_eq!(slots.len(), self.resources as usize);
        put_u32(out, self.resources);
        let mut waiters = 0;
        for s in slots {
            put_id(out, s.resource());
            put_u32(out, s.default_ttl_ms);
            put_u64(out, s.token);
            put_u32(out, s.hold_count);
            let Some(holder) = s.holder() else {
                assert!(s.queue.is_none(), "a free lock has no waiters");
                continue;
            };
            put_id(out, holder);
            put_u32(out, s.hold_ttl_ms);
            put_u64(out, s.expiry.as_micros());
            put_u32(out, s.live_waiters());
            for waiter in s.queue.as_deref().into_iter().flat_map(WaitQueue::iter) {
                put_waiter(out, waiter);
                waiters += 1;
            }
        }
        assert_eq!(waiters, self.waiters);
        assert!(out.len() - start >= SNAPSHOT_MAGIC.len() + 1 + 4 * 8 + 2 * 4);
    }

    /// Rebuilds a table from [`LockTable::snapshot`] bytes, with `config`'s limits (its
    /// `fencing_token_first` is ignored: the counter comes from the snapshot). The index, the
    /// timers, the counters and the idle-session order are rebuilt; the result behaves exactly
    /// like the table the snapshot was taken of.
    ///
    /// `Err` for any input that is not such a snapshot, or that breaks `config`'s limits; see
    /// the module docs for every rule. Never panics on the bytes, and allocates no more than
    /// the input's length and the limits allow. Panics if `config` does not validate (a bug of
    /// the caller, as in [`LockTable::new`]).
    pub fn restore(config: Config, snapshot: &[u8]) -> Result<LockTable, SnapshotError> {
        let token_first_ignored = Config {
            fencing_token_first: 1,
            ..config.clone()
        };
        if let Err(error) = token_first_ignored.validate() {
            panic!("{error}");
        }
        let mut input = Reader { bytes: snapshot };
        check(
            input.take(SNAPSHOT_MAGIC.len())? == SNAPSHOT_MAGIC,
            "not a lock table snapshot (magic)",
        )?;
        check(input.u8()? == SNAPSHOT_VERSION, "unsupported version")?;
        let now_last = input.instant()?;
        let lease_horizon = input.instant()?;
        let token_next = input.u64()?;
        check(
            (1..=TOKEN_NEXT_MAX).contains(&token_next),
            "token_next out of range",
        )?;
        let wait_seq_next = input.u64()?;
        check(
            (1..=WAIT_SEQ_NEXT_MAX).contains(&wait_seq_next),
            "wait_seq_next out of range",
        )?;

        let mut table = LockTable {
            config,
            now_last,
            slots: Vec::new(),
            slots_free: Vec::new(),
            index: ResourceIndex::new(),
            timers: BTreeSet::new(),
            holds: BTreeMap::new(),
            token_next,
            wait_seq_next,
            sessions: SessionMap::default(),
            session_hash: KeyedHash::new(),
            sessions_idle: BTreeSet::new(),
            replies: VecDeque::new(),
            replying: true,
            queue_spare: None,
            ids_spare: None,
            resources: 0,
            held: 0,
            waiters: 0,
            answers_remembered: 0,
            lease_horizon,
            // Monitoring only, not in the snapshot: counted from here on.
            counts: super::Counts::default(),
            log_shard: None,
        };
        table.restore_sessions(&mut input)?;
        let mut tokens = Vec::new();
        let mut seqs = Vec::new();
        table.restore_resources(&mut input, &mut tokens, &mut seqs)?;
        check(input.bytes.is_empty(), "trailing bytes")?;
        // Unique tokens and seqs keep the timer order free of slot numbers (module docs).
        check(strictly_increasing(&mut tokens), "fencing token repeated")?;
        check(strictly_increasing(&mut seqs), "waiter seq repeated")?;

        assert_eq!(table.sessions.len(), table.sessions_idle.len());
        assert_eq!(
            table.timers.len(),
            table.held as usize + table.waiters as usize
        );
        Ok(table)
    }

    fn restore_sessions(&mut self, input: &mut Reader<'_>) -> Result<(), SnapshotError> {
        let count = input.count(
            self.config.sessions_max,
            SESSION_LEN_MIN,
            "sessions above sessions_max",
        )?;
        self.sessions.reserve(count);
        let idle = self.idle();
        let mut id_last = 0;
        for _ in 0..count {
            let id = input.u64()?;
            check(id > id_last, "session ids not increasing (or zero)")?;
            id_last = id;
            let active_last = input.instant()?;
            check(
                active_last <= self.now_last,
                "session active after now_last",
            )?;
            check(active_last + idle >= self.now_last, "session overdue")?;
            let expired_through = input.u64()?;
            let answers_max = self.config.answers_per_session_max;
            let answer_count = input.count(
                answers_max,
                ANSWER_LEN,
                "answers above answers_per_session_max",
            )?;
            let mut answers = Answers::default();
            let mut request_last = 0;
            for _ in 0..answer_count {
                let (request, remembered) = input.answer()?;
                check(
                    request > request_last,
                    "answer request ids not increasing (or zero)",
                )?;
                request_last = request;
                answers.insert(request, remembered);
            }
            self.answers_remembered += answers.len() as u64;
            let session = Session {
                active_last,
                expired_through,
                answers,
                pending: BTreeMap::new(),
            };
            assert!(self
                .sessions
                .insert(self.session_key(id), session)
                .is_none());
            assert!(self.sessions_idle.insert((active_last, id)));
        }
        Ok(())
    }

    /// Reads the resources, collecting every non-zero token and every waiter seq.
    fn restore_resources(
        &mut self,
        input: &mut Reader<'_>,
        tokens: &mut Vec<u64>,
        seqs: &mut Vec<u64>,
    ) -> Result<(), SnapshotError> {
        let count = input.count(
            self.config.resources_max,
            RESOURCE_LEN_MIN,
            "resources above resources_max",
        )?;
        self.slots.reserve_exact(count);
        tokens.reserve(count);
        let ttl_ms_max = self.config.ttl_ms_max;
        let mut resource_last: &[u8] = &[];
        for _ in 0..count {
            let resource = input.id()?;
            // The empty id sorts first, so the first resource passes too.
            check(resource > resource_last, "resource ids not increasing")?;
            resource_last = resource;
            let default_ttl_ms = input.u32()?;
            check(default_ttl_ms <= ttl_ms_max, "default TTL above ttl_ms_max")?;
            let token = input.u64()?;
            check(token < self.token_next, "token not below token_next")?;
            let hold_count = input.u32()?;
            check(
                hold_count <= self.config.holds_per_lock_max,
                "hold count above holds_per_lock_max",
            )?;
            let number = u32::try_from(self.slots.len()).expect("below resources_max");
            let mut slot = Slot::vacant();
            slot.occupy(resource, &[], &mut None);
            slot.default_ttl_ms = default_ttl_ms;
            slot.token = token;
            if token != 0 {
                tokens.push(token);
            }
            if hold_count == 0 {
                check(default_ttl_ms != 0, "free resource without a default TTL")?;
            } else {
                check(token != 0, "held lock without a token")?;
                let holder = input.id()?;
                let hold_ttl_ms = input.u32()?;
                check(
                    (1..=ttl_ms_max).contains(&hold_ttl_ms),
                    "hold TTL out of range",
                )?;
                let expiry = input.instant()?;
                let lease_max = Duration::from_millis(ttl_ms_max.into());
                check(
                    self.now_last <= expiry && expiry <= self.now_last + lease_max,
                    "expiry out of range",
                )?;
                check(expiry <= self.lease_horizon, "expiry past lease_horizon")?;
                slot.set_holder(holder);
                slot.hold_count = hold_count;
                slot.hold_ttl_ms = hold_ttl_ms;
                slot.expiry = expiry;
                assert!(self.timers.insert(Timer::hold(&slot, number)));
                // A token held twice fails the check after the last resource.
                self.holds.insert(slot.token, number);
                self.held += 1;
                slot.queue = self.restore_queue(input, number, seqs)?;
            }
            slot.check();
            self.index.insert(self.index.hash(resource), number);
            self.slots.push(slot);
            self.resources += 1;
        }
        Ok(())
    }

    /// Reads the queue of the held lock in slot `number` (`None` if nobody waits).
    fn restore_queue(
        &mut self,
        input: &mut Reader<'_>,
        number: u32,
        seqs: &mut Vec<u64>,
    ) -> Result<Option<Box<WaitQueue>>, SnapshotError> {
        let per_resource_max = self.config.waiters_per_resource_max;
        let count = input.count(
            per_resource_max,
            WAITER_LEN_MIN,
            "waiters above waiters_per_resource_max",
        )?;
        if count == 0 {
            return Ok(None);
        }
        check(
            self.waiters as usize + count <= self.config.waiters_max as usize,
            "waiters above waiters_max",
        )?;
        let wait_max = Duration::from_millis(self.config.wait_ms_max.into());
        let idle = self.idle();
        let mut queue = Box::new(WaitQueue::new());
        let mut seq_last = 0;
        for _ in 0..count {
            let waiter = input.waiter()?;
            check(
                waiter.seq > seq_last && waiter.seq < self.wait_seq_next,
                "waiter seq out of order or range",
            )?;
            seq_last = waiter.seq;
            check(
                waiter.ttl_ms <= self.config.ttl_ms_max,
                "waiter TTL above ttl_ms_max",
            )?;
            check(
                self.now_last <= waiter.deadline && waiter.deadline <= self.now_last + wait_max,
                "wait deadline out of range",
            )?;
            let RequestId { session, request } = waiter.id;
            let key = self.session_key(session);
            let Some(session) = self.sessions.get_mut(&key) else {
                return fail("waiter of an unknown session");
            };
            // The session must outlive the wait, or it would be forgotten with a request
            // still queued (see `forget_session`).
            check(
                waiter.deadline <= session.active_last + idle,
                "wait deadline after its session's idle time",
            )?;
            check(
                !session.answers.contains(request),
                "queued request already answered",
            )?;
            check(
                session.pending.len() < self.config.answers_per_session_max as usize,
                "queued requests above answers_per_session_max",
            )?;
            let pending = Pending {
                slot: number,
                seq: waiter.seq,
            };
            check(
                session.pending.insert(request, pending).is_none(),
                "request queued twice",
            )?;
            assert!(self.timers.insert(Timer::wait(&waiter, number)));
            seqs.push(waiter.seq);
            queue.push(waiter);
            self.waiters += 1;
        }
        assert_eq!(queue.live() as usize, count);
        Ok(Some(queue))
    }
}

fn count_u32(count: usize) -> u32 {
    u32::try_from(count).expect("counts are bounded by u32 limits")
}

/// Sorts `values`; true if none repeats.
fn strictly_increasing(values: &mut [u64]) -> bool {
    values.sort_unstable();
    values.windows(2).all(|pair| pair[0] < pair[1])
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_id(out: &mut Vec<u8>, id: &[u8]) {
    assert!(
        (1..=ID_LEN_MAX).contains(&id.len()),
        "id of {} bytes",
        id.len()
    );
    out.push(id.len() as u8);
    out.extend_from_slice(id);
}

/// A remembered answer's operation as its request type's byte.
fn kind_code(kind: RequestKind) -> u8 {
    assert!(kind != RequestKind::Status, "STATUS is never remembered");
    kind.request_type().to_wire()
}

fn kind_from_code(code: u8) -> Option<RequestKind> {
    MessageType::from_wire(code)
        .and_then(RequestKind::of_request_type)
        .filter(|&kind| kind != RequestKind::Status)
}

/// The final answers a session can remember (`LockTable::remember` refuses the others).
fn rememberable(status: Status) -> bool {
    matches!(
        status,
        Status::Ok
            | Status::LockAcquisitionTimeout
            | Status::LockNotHeld
            | Status::ResourceDoesNotExist
            | Status::HoldLimitExceeded
    )
}

fn put_answer(out: &mut Vec<u8>, request: u64, remembered: &Remembered) {
    let Remembered {
        kind,
        answer,
        attempt,
    } = *remembered;
    assert!(rememberable(answer.status) && answer.retry_after_ms == 0);
    let start = out.len();
    put_u64(out, request);
    out.push(kind_code(kind));
    put_u16(out, attempt);
    put_u16(out, answer.status.to_wire());
    out.push(if answer.queued { FLAG_QUEUED } else { 0 });
    put_u64(out, answer.fencing_token);
    put_u32(out, answer.hold_count);
    put_u32(out, answer.lease_ms);
    put_u32(out, answer.waiter_count);
    assert_eq!(out.len() - start, ANSWER_LEN);
}

fn put_address(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.ip().octets());
            put_u16(out, v4.port());
        }
        SocketAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.ip().octets());
            put_u16(out, v6.port());
            put_u32(out, v6.flowinfo());
            put_u32(out, v6.scope_id());
        }
    }
}

fn put_waiter(out: &mut Vec<u8>, waiter: &Waiter) {
    assert!(waiter.live, "tombstones are not state");
    put_u64(out, waiter.seq);
    put_u64(out, waiter.id.session);
    put_u64(out, waiter.id.request);
    put_u16(out, waiter.attempt);
    put_address(out, waiter.reply_to);
    put_id(out, &waiter.client);
    put_u64(out, waiter.deadline.as_micros());
    put_u32(out, waiter.ttl_ms);
}

/// The unread rest of a snapshot. Every read checks the length first: no read can panic.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], SnapshotError> {
        if len > self.bytes.len() {
            return fail("truncated");
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn instant(&mut self) -> Result<Instant, SnapshotError> {
        Ok(Instant::from_micros(self.u64()?))
    }

    /// A record count: at most `max`, and no more records than the bytes left could hold
    /// at `len_min` bytes each, so a forged count is refused before anything is reserved.
    fn count(
        &mut self,
        max: u32,
        len_min: usize,
        over_max: &'static str,
    ) -> Result<usize, SnapshotError> {
        let count = self.u32()?;
        check(count <= max, over_max)?;
        let count = count as usize;
        check(count <= self.bytes.len() / len_min, "truncated")?;
        Ok(count)
    }

    /// An id: a length byte of 1 ..= 255 and that many bytes.
    fn id(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = self.u8()?;
        check(len > 0, "empty id")?;
        self.take(len.into())
    }

    fn answer(&mut self) -> Result<(u64, Remembered), SnapshotError> {
        let request = self.u64()?;
        let Some(kind) = kind_from_code(self.u8()?) else {
            return fail("answer kind");
        };
        let attempt = self.u16()?;
        let status = match Status::from_wire(self.u16()?) {
            Some(status) if rememberable(status) => status,
            _ => return fail("answer status"),
        };
        let flags = self.u8()?;
        check(flags & !FLAG_QUEUED == 0, "reserved answer flags set")?;
        let answer = Answer {
            status,
            fencing_token: self.u64()?,
            hold_count: self.u32()?,
            lease_ms: self.u32()?,
            waiter_count: self.u32()?,
            retry_after_ms: 0,
            queued: flags & FLAG_QUEUED != 0,
        };
        let remembered = Remembered {
            kind,
            answer,
            attempt,
        };
        Ok((request, remembered))
    }

    fn address(&mut self) -> Result<SocketAddr, SnapshotError> {
        match self.u8()? {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>()?);
                Ok(SocketAddrV4::new(ip, self.u16()?).into())
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let port = self.u16()?;
                let flowinfo = self.u32()?;
                let scope_id = self.u32()?;
                Ok(SocketAddrV6::new(ip, port, flowinfo, scope_id).into())
            }
            _ => fail("address family"),
        }
    }

    fn waiter(&mut self) -> Result<Waiter, SnapshotError> {
        let seq = self.u64()?;
        let session = self.u64()?;
        let request = self.u64()?;
        check(request != 0, "zero request id")?;
        let attempt = self.u16()?;
        let reply_to = self.address()?;
        let client = self.id()?;
        let deadline = self.instant()?;
        let ttl_ms = self.u32()?;
        Ok(Waiter {
            seq,
            id: RequestId { session, request },
            reply_to,
            client: client.into(),
            deadline,
            ttl_ms,
            attempt,
            live: true,
        })
    }
}
