//! Tests of lock table snapshots: a restored table behaves exactly like the original (a
//! property test over random command sequences), snapshots are canonical, the bytes follow
//! the documented layout, every malformed input is refused without a panic, and the size and
//! speed for 100,000 held locks (printed, not asserted).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use proptest::prelude::*;
use proptest::sample::Index;

use super::super::{Reply, Request, Stats};
use super::*;
use udplock_protocol::RequestBody;

fn ms(ms: u64) -> Instant {
    Instant::from_micros(ms * 1_000)
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// An IPv6 address with flowinfo and scope id, which a snapshot must keep too: `Reply::to`
/// compares them.
fn v6(port: u16) -> SocketAddr {
    let ip = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x1d);
    SocketAddrV6::new(ip, port, 0x000a_bcde, 3).into()
}

fn snapshot_of(table: &LockTable) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.snapshot(&mut bytes);
    bytes
}

fn drain(table: &mut LockTable) -> Vec<Reply> {
    let replies = std::iter::from_fn(|| table.poll_reply()).collect();
    table.check_all();
    replies
}

/// One input to a table, as a shard applies it from the log.
#[derive(Clone, Copy, Debug)]
enum Input {
    Timeout(Instant),
    Request(Instant, Request<'static>),
}

fn apply(table: &mut LockTable, input: Input) -> Vec<Reply> {
    match input {
        Input::Timeout(now) => table.handle_timeout(now),
        Input::Request(now, request) => table.handle_request(now, request),
    }
    drain(table)
}

fn request(
    now_ms: u64,
    session: u64,
    request: u64,
    attempt: u16,
    reply_to: SocketAddr,
    command: RequestBody<'static>,
) -> Input {
    Input::Request(
        ms(now_ms),
        Request {
            id: RequestId { session, request },
            attempt,
            reply_to,
            body: command,
            datagram_len: datagram_len(&command, true),
        },
    )
}

/// The length of the datagram carrying `body`: a STATUS padded as the spec asks (§2.2 rule
/// 4), any other request padded for a WAITING and a final answer (`room_for_waiting`) or not.
fn datagram_len(body: &RequestBody<'_>, room_for_waiting: bool) -> u16 {
    let len = match body {
        RequestBody::Status { .. } => udplock_protocol::STATUS_REQUEST_LEN,
        _ if room_for_waiting => udplock_protocol::ACQUIRE_WAIT_REQUEST_LEN,
        _ => udplock_protocol::REQUEST_LEN_MIN,
    };
    len as u16
}

fn acquire(
    resource: &'static str,
    client: &'static str,
    wait_ms: u32,
    ttl_ms: u32,
) -> RequestBody<'static> {
    RequestBody::Acquire {
        resource: resource.as_bytes(),
        client: client.as_bytes(),
        wait_ms,
        ttl_ms,
    }
}

/// A table with a bit of everything: a re-entrant hold with a queue (IPv4 and IPv6 waiters,
/// a keepalive that moved one, a tombstone), a free configured resource with an old token, a
/// second held lock, sessions with evicted answers and late-answered requests.
fn rich_config() -> Config {
    Config {
        answers_per_session_max: 3,
        fencing_token_first: 500,
        ..Config::default()
    }
}

fn rich_inputs() -> Vec<Input> {
    const A: u64 = 0xa;
    const B: u64 = 0xb;
    const C: u64 = 0xc;
    let configure = RequestBody::Configure {
        resource: b"cfg",
        default_ttl_ms: 700,
    };
    let renew = RequestBody::Renew {
        resource: b"alpha",
        client: b"a",
        ttl_ms: 0,
    };
    vec![
        request(1, A, 1, 0, v4(1), acquire("alpha", "a", 0, 5_000)),
        request(2, A, 2, 0, v4(1), acquire("alpha", "a", 0, 0)),
        request(3, B, 1, 0, v6(2), acquire("alpha", "b", 10_000, 0)),
        request(4, C, 1, 0, v4(3), acquire("alpha", "c", 2_000, 77)),
        request(5, B, 2, 0, v4(2), acquire("alpha", "d", 100, 0)),
        request(6, B, 3, 0, v4(2), acquire("alpha", "e", 9_000, 0)),
        // A keepalive of B's first acquire from a new address, with a higher attempt.
        request(7, B, 1, 3, v6(9), acquire("alpha", "b", 10_000, 0)),
        request(8, A, 3, 0, v4(1), configure),
        request(9, A, 4, 0, v4(1), acquire("cfg", "a", 0, 0)),
        request(
            10,
            A,
            5,
            0,
            v4(1),
            RequestBody::Release {
                resource: b"cfg",
                client: b"a",
            },
        ),
        // More answers than A remembers: the oldest are evicted (expired_through > 0).
        request(11, A, 6, 0, v4(1), renew),
        request(12, A, 7, 0, v4(1), renew),
        request(13, C, 2, 0, v6(4), acquire("beta", "c", 0, 100)),
        // B's "d" times out from the middle of the queue: a tombstone.
        Input::Timeout(ms(105)),
    ]
}

fn rich_table() -> LockTable {
    let mut table = LockTable::new(rich_config());
    for input in rich_inputs() {
        apply(&mut table, input);
    }
    let stats = table.stats();
    assert_eq!((stats.resources, stats.held, stats.waiters), (3, 2, 3));
    assert!(table.sessions[&table.session_key(0xa)].expired_through > 0);
    table
}

#[test]
fn a_restored_table_snapshots_to_the_same_bytes() {
    let table = rich_table();
    let bytes = snapshot_of(&table);
    let restored = LockTable::restore(rich_config(), &bytes).expect("a valid snapshot");
    restored.check_all();
    assert_eq!(snapshot_of(&restored), bytes);
    assert_eq!(restored.stats(), table.stats());
    assert_eq!(restored.poll_timeout(), table.poll_timeout());
    assert_eq!(restored.lease_horizon(), table.lease_horizon());
    // Appends to what `out` holds already.
    let mut out = b"prefix".to_vec();
    restored.snapshot(&mut out);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], &bytes[..]);
}

#[test]
fn fencing_token_first_is_ignored_and_limits_apply() {
    let bytes = snapshot_of(&rich_table());
    let config = Config {
        fencing_token_first: 0,
        ..rich_config()
    };
    let restored = LockTable::restore(config, &bytes).expect("fencing_token_first is ignored");
    assert_eq!(
        restored.stats().fencing_token_last,
        rich_table().stats().fencing_token_last
    );
    let tight = Config {
        resources_max: 2,
        ..rich_config()
    };
    assert_eq!(
        LockTable::restore(tight, &bytes).err().map(|e| e.what),
        Some("resources above resources_max")
    );
}

#[test]
#[should_panic(expected = "undrained")]
fn snapshot_with_undrained_replies_panics() {
    let mut table = LockTable::new(Config::default());
    let (now, request) = match request(1, 1, 1, 0, v4(1), acquire("r", "a", 0, 0)) {
        Input::Request(now, request) => (now, request),
        Input::Timeout(_) => unreachable!(),
    };
    table.handle_request(now, request);
    snapshot_of(&table);
}

/// Writers for hand-built snapshots, field by field as the module docs' tables list them.
struct Bytes(Vec<u8>);

impl Bytes {
    fn u8(mut self, value: u8) -> Bytes {
        self.0.push(value);
        self
    }
    fn u16(mut self, value: u16) -> Bytes {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn u32(mut self, value: u32) -> Bytes {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn u64(mut self, value: u64) -> Bytes {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn id(mut self, id: &[u8]) -> Bytes {
        self.0.push(id.len() as u8);
        self.0.extend_from_slice(id);
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Bytes {
        self.0.extend_from_slice(bytes);
        self
    }
}

/// The fields of [`small_snapshot`] that the refusal tests vary.
#[derive(Clone, Copy)]
struct Small {
    version: u8,
    token_next: u64,
    session_id: u64,
    answer_status: u16,
    answer_flags: u8,
    token: u64,
    hold_count: u32,
    expiry_us: u64,
    waiter_seq: u64,
    waiter_session: u64,
    waiter_request: u64,
    deadline_us: u64,
    family: u8,
    /// Added to every time.
    base_us: u64,
    /// How long before now_last session 0x52 (the waiter's) was last active.
    active_back_us: u64,
}

const SMALL: Small = Small {
    version: 1,
    token_next: 8,
    session_id: 0x51,
    answer_status: 0,
    answer_flags: 0,
    token: 7,
    hold_count: 1,
    expiry_us: 1_050_000,
    waiter_seq: 1,
    waiter_session: 0x52,
    waiter_request: 1,
    deadline_us: 1_500_000,
    family: 4,
    base_us: 0,
    active_back_us: 0,
};

/// Hand-built from the layout tables: at 1 s, session 0x51 acquired "r" for "a" with a TTL of
/// 50 ms (token 7, fencing_token_first 7), then session 0x52 from 127.0.0.1:9 queued an
/// acquire for "b" with a wait of 500 ms.
fn small_snapshot(f: Small) -> Vec<u8> {
    let header = Bytes(Vec::new())
        .raw(b"ULTS")
        .u8(f.version)
        .u64(f.base_us + 1_000_000) // now_last_us
        .u64(f.base_us + 1_050_000) // lease_horizon_us
        .u64(f.token_next)
        .u64(2); // wait_seq_next
    let sessions = header
        .u32(2)
        .u64(f.session_id)
        .u64(f.base_us + 1_000_000) // active_last_us
        .u64(0) // expired_through
        .u32(1)
        .u64(1) // request_id
        .u8(0x01) // ACQUIRE
        .u16(0) // attempt
        .u16(f.answer_status)
        .u8(f.answer_flags)
        .u64(7) // fencing_token
        .u32(1) // hold_count
        .u32(50) // lease_ms
        .u32(0) // waiter_count
        .u64(0x52)
        .u64(f.base_us + 1_000_000 - f.active_back_us)
        .u64(0)
        .u32(0);
    let resource = sessions
        .u32(1)
        .id(b"r")
        .u32(0) // default_ttl_ms
        .u64(f.token)
        .u32(f.hold_count)
        .id(b"a")
        .u32(50) // hold_ttl_ms
        .u64(f.base_us + f.expiry_us)
        .u32(1);
    let waiter = resource
        .u64(f.waiter_seq)
        .u64(f.waiter_session)
        .u64(f.waiter_request)
        .u16(0) // attempt
        .u8(f.family)
        .raw(&[127, 0, 0, 1])
        .u16(9)
        .id(b"b")
        .u64(f.base_us + f.deadline_us)
        .u32(0); // ttl_ms
    waiter.0
}

#[test]
fn the_bytes_follow_the_documented_layout() {
    let config = Config {
        fencing_token_first: 7,
        ..Config::default()
    };
    let mut table = LockTable::new(config.clone());
    let replies = apply(
        &mut table,
        request(1_000, 0x51, 1, 0, v4(8), acquire("r", "a", 0, 50)),
    );
    assert_eq!(replies[0].answer.fencing_token, 7);
    apply(
        &mut table,
        request(1_000, 0x52, 1, 0, v4(9), acquire("r", "b", 500, 0)),
    );
    let bytes = snapshot_of(&table);
    assert_eq!(bytes, small_snapshot(SMALL));
    let restored = LockTable::restore(config, &bytes).expect("valid");
    assert_eq!(snapshot_of(&restored), bytes);
}

#[test]
fn each_broken_rule_is_refused_by_name() {
    let cases: [(Small, &str); 14] = [
        (
            Small {
                version: 2,
                ..SMALL
            },
            "unsupported version",
        ),
        (
            Small {
                token_next: 0,
                ..SMALL
            },
            "token_next out of range",
        ),
        (
            Small {
                token_next: 7,
                ..SMALL
            },
            "token not below token_next",
        ),
        (
            Small {
                session_id: 0,
                ..SMALL
            },
            "session ids not increasing (or zero)",
        ),
        (
            Small {
                session_id: 0x53,
                ..SMALL
            },
            "session ids not increasing (or zero)",
        ),
        // OVERLOADED is never remembered: its answer would need a retry_after_ms.
        (
            Small {
                answer_status: 5,
                ..SMALL
            },
            "answer status",
        ),
        (
            Small {
                answer_flags: 2,
                ..SMALL
            },
            "reserved answer flags set",
        ),
        (Small { token: 0, ..SMALL }, "held lock without a token"),
        // A free resource without a default TTL is not known; its holder bytes then trail.
        (
            Small {
                hold_count: 0,
                ..SMALL
            },
            "free resource without a default TTL",
        ),
        // An expiry beyond ttl_ms_max would overflow STATUS's lease_ms.
        (
            Small {
                expiry_us: 1_000_000 + 3_600_000_001,
                ..SMALL
            },
            "expiry out of range",
        ),
        (
            Small {
                waiter_seq: 2,
                ..SMALL
            },
            "waiter seq out of order or range",
        ),
        (
            Small {
                waiter_session: 0x54,
                ..SMALL
            },
            "waiter of an unknown session",
        ),
        (
            Small {
                waiter_request: 0,
                ..SMALL
            },
            "zero request id",
        ),
        (Small { family: 5, ..SMALL }, "address family"),
    ];
    let config = Config::default();
    LockTable::restore(config.clone(), &small_snapshot(SMALL)).expect("the unbroken one is valid");
    for (fields, what) in cases {
        let error = LockTable::restore(config.clone(), &small_snapshot(fields)).err();
        assert_eq!(error.map(|e| e.what), Some(what));
    }
    // The queued request is also the one session 0x51 has an answer for: answered twice.
    let answered = Small {
        waiter_session: 0x51,
        ..SMALL
    };
    let error = LockTable::restore(config.clone(), &small_snapshot(answered)).err();
    assert_eq!(
        error.map(|e| e.what),
        Some("queued request already answered")
    );
    let late = Small {
        deadline_us: 1_000_000 + 300_000_001,
        ..SMALL
    };
    let error = LockTable::restore(config.clone(), &small_snapshot(late)).err();
    assert_eq!(error.map(|e| e.what), Some("wait deadline out of range"));
    // The waiter's session goes idle (at 100 + 1 - 70 + 360.001 s) before its wait ends (at
    // 100 + 295 s): it would be forgotten with a request still queued.
    let outlived = Small {
        base_us: 100_000_000,
        active_back_us: 70_000_000,
        deadline_us: 295_000_000,
        ..SMALL
    };
    let short_idle = Config {
        session_idle_ms: 360_001,
        ..config.clone()
    };
    let error = LockTable::restore(short_idle, &small_snapshot(outlived)).err();
    assert_eq!(
        error.map(|e| e.what),
        Some("wait deadline after its session's idle time")
    );
    LockTable::restore(config.clone(), &small_snapshot(outlived)).expect("idle 600 s: valid");
    let mut trailing = small_snapshot(SMALL);
    trailing.push(0);
    let error = LockTable::restore(config, &trailing).err();
    assert_eq!(error.map(|e| e.what), Some("trailing bytes"));
}

/// Two held locks "p" and "q", each with one waiter of session 0x52: tokens and seqs as given.
fn two_locks(tokens: [u64; 2], seqs: [u64; 2]) -> Vec<u8> {
    let mut bytes = Bytes(Vec::new())
        .raw(b"ULTS")
        .u8(1)
        .u64(0) // now_last_us
        .u64(1_000) // lease_horizon_us
        .u64(3) // token_next
        .u64(3) // wait_seq_next
        .u32(1)
        .u64(0x52)
        .u64(0)
        .u64(0)
        .u32(0)
        .u32(2);
    for (n, resource) in [b"p", b"q"].into_iter().enumerate() {
        bytes = bytes
            .id(resource)
            .u32(0)
            .u64(tokens[n])
            .u32(1)
            .id(b"a")
            .u32(1)
            .u64(1_000)
            .u32(1)
            .u64(seqs[n])
            .u64(0x52)
            .u64(n as u64 + 1)
            .u16(0)
            .u8(4)
            .raw(&[10, 0, 0, 1])
            .u16(1)
            .id(b"b")
            .u64(1_000)
            .u32(0);
    }
    bytes.0
}

/// Timers due at once are ordered by (due, kind, seq) and only then by slot number, which a
/// restored table assigns differently: a repeated token or seq would let slot numbers decide.
#[test]
fn repeated_tokens_and_seqs_are_refused() {
    let config = Config::default();
    let valid = LockTable::restore(config.clone(), &two_locks([1, 2], [1, 2])).expect("valid");
    valid.check_all();
    let error = LockTable::restore(config.clone(), &two_locks([2, 2], [1, 2])).err();
    assert_eq!(error.map(|e| e.what), Some("fencing token repeated"));
    let error = LockTable::restore(config, &two_locks([1, 2], [2, 2])).err();
    assert_eq!(error.map(|e| e.what), Some("waiter seq repeated"));
}

#[test]
fn every_truncation_is_refused() {
    let bytes = snapshot_of(&rich_table());
    for len in 0..bytes.len() {
        let result = LockTable::restore(rich_config(), &bytes[..len]);
        assert!(
            result.is_err(),
            "a snapshot cut to {len} bytes was accepted"
        );
    }
}

/// A config whose limits refuse nothing, so only the input's length bounds a count.
fn unlimited() -> Config {
    Config {
        resources_max: u32::MAX,
        waiters_per_resource_max: u32::MAX,
        waiters_max: u32::MAX,
        holds_per_lock_max: u32::MAX,
        sessions_max: u32::MAX,
        answers_per_session_max: u32::MAX,
        ..Config::default()
    }
}

#[test]
fn a_huge_count_is_refused_before_anything_is_reserved() {
    let header = || {
        Bytes(Vec::new())
            .raw(b"ULTS")
            .u8(1)
            .u64(0)
            .u64(0)
            .u64(1)
            .u64(1)
    };
    let huge_sessions = header().u32(u32::MAX).0;
    let huge_resources = header().u32(0).u32(u32::MAX).0;
    let huge_answers = header().u32(1).u64(1).u64(0).u64(0).u32(u32::MAX).0;
    for (bytes, what_limited) in [
        (huge_sessions, "sessions above sessions_max"),
        (huge_resources, "resources above resources_max"),
        (huge_answers, "answers above answers_per_session_max"),
    ] {
        let limited = LockTable::restore(Config::default(), &bytes).err();
        assert_eq!(limited.map(|e| e.what), Some(what_limited));
        // Reserving 2^32 slots or sessions would abort the test: the length bound stops it.
        let unbounded = LockTable::restore(unlimited(), &bytes).err();
        assert_eq!(unbounded.map(|e| e.what), Some("truncated"));
    }
    // The same for a queue: a held lock claiming 2^32 - 1 waiters.
    let mut small = small_snapshot(SMALL);
    let waiters_at = small.len() - WAITER_LEN_MIN - 4;
    small.truncate(waiters_at);
    small.extend_from_slice(&u32::MAX.to_be_bytes());
    let unbounded = LockTable::restore(unlimited(), &small).err();
    assert_eq!(unbounded.map(|e| e.what), Some("truncated"));
    let limited = LockTable::restore(Config::default(), &small).err();
    assert_eq!(
        limited.map(|e| e.what),
        Some("waiters above waiters_per_resource_max")
    );
}

/// Runs a table that restored without error through every kind of input until all its timers
/// ran out: none may panic (the table checks its invariants after each), and it must end
/// empty and snapshot canonically.
fn exercise(mut table: LockTable, config: &Config) {
    table.check_all();
    let bytes = snapshot_of(&table);
    let again = LockTable::restore(config.clone(), &bytes).expect("a snapshot of a table");
    assert_eq!(snapshot_of(&again), bytes);
    let now = table.now_last;
    let resources: Vec<Vec<u8>> = table
        .slots
        .iter()
        .filter(|s| s.resource_len > 0)
        .map(|s| s.resource().to_vec())
        .collect();
    let mut holders: Vec<Vec<u8>> = table
        .slots
        .iter()
        .filter_map(|s| s.holder().map(<[u8]>::to_vec))
        .collect();
    holders.push(b"x".to_vec());
    // The token index is rebuilt from the snapshot: a KEEPALIVE finds every held lock by
    // its token, and nothing under a token no lock holds (spec §4.11).
    let mut listed: Vec<u64> = table
        .slots
        .iter()
        // A lease ending right now expires before the keepalive applies.
        .filter(|s| s.hold_count > 0 && s.expiry > now)
        .map(|s| s.token)
        .take(udplock_protocol::KEEPALIVE_TOKENS_MAX - 1)
        .collect();
    let held = listed.len();
    listed.push(table.token_next);
    let mut token_bytes = [0u8; 8 * udplock_protocol::KEEPALIVE_TOKENS_MAX];
    let keepalive = RequestBody::Keepalive {
        shard: 0,
        shards: 1,
        ttl_ms: 0,
        tokens: udplock_protocol::Tokens::write(&listed, &mut token_bytes).expect("room"),
    };
    table.handle_request(
        now,
        Request {
            id: RequestId {
                session: 78,
                request: 1,
            },
            attempt: 0,
            reply_to: v4(5),
            body: keepalive,
            datagram_len: 76,
        },
    );
    let answers = drain(&mut table);
    assert_eq!(answers.len(), 1);
    if answers[0].answer.status == Status::Ok {
        assert_eq!(answers[0].answer.fencing_token, (1u64 << held) - 1);
    }
    let sessions: Vec<u64> = table
        .sessions
        .keys()
        .map(|key| key.id)
        .chain([77])
        .collect();
    for (n, resource) in resources.iter().enumerate() {
        for (m, client) in holders.iter().enumerate() {
            let session = sessions[(n + m) % sessions.len()];
            let commands = [
                RequestBody::Status { resource },
                RequestBody::Renew {
                    resource,
                    client,
                    ttl_ms: 0,
                },
                RequestBody::Acquire {
                    resource,
                    client,
                    wait_ms: 10,
                    ttl_ms: 0,
                },
                RequestBody::Release { resource, client },
                RequestBody::Configure {
                    resource,
                    default_ttl_ms: 0,
                },
            ];
            for (k, command) in commands.into_iter().enumerate() {
                // Request ids 1..=3 may be remembered or queued: duplicates, keepalives.
                let request = Request {
                    id: RequestId {
                        session,
                        request: (n * 31 + m * 7 + k) as u64 % 6 + 1,
                    },
                    attempt: 1,
                    reply_to: v4(5),
                    body: command,
                    datagram_len: datagram_len(&command, k % 2 == 0),
                };
                table.handle_request(now, request);
                drain(&mut table);
            }
            let _ = table.read_status(now, resource);
        }
    }
    while let Some(due) = table.poll_timeout() {
        table.handle_timeout(due);
        drain(&mut table);
    }
    let stats = table.stats();
    assert_eq!(
        (stats.held, stats.waiters, stats.sessions, stats.timers),
        (0, 0, 0, 0)
    );
}

#[test]
fn every_single_byte_change_is_refused_or_restores_a_sound_table() {
    let bytes = snapshot_of(&rich_table());
    let config = rich_config();
    let mut restored = 0;
    for at in 0..bytes.len() {
        for value in [
            0x00,
            0x01,
            0x7f,
            0x80,
            0xff,
            bytes[at] ^ 0x01,
            bytes[at].wrapping_add(1),
        ] {
            let mut changed = bytes.clone();
            changed[at] = value;
            if let Ok(table) = LockTable::restore(config.clone(), &changed) {
                exercise(table, &config);
                restored += 1;
            }
        }
    }
    // Times, tokens and answer fields may change freely: many changes are valid states.
    assert!(restored > bytes.len(), "only {restored} changes restored");
}

/// The generator's limits: small enough to be hit (OVERLOADED, evictions, expired requests).
fn prop_config() -> Config {
    Config {
        resources_max: 4,
        waiters_per_resource_max: 3,
        waiters_max: 5,
        holds_per_lock_max: 3,
        sessions_max: 4,
        answers_per_session_max: 3,
        session_idle_ms: udplock_protocol::REQUEST_LIFETIME_MS_MAX + 1,
        ttl_default_ms: 20,
        ttl_ms_max: 100,
        wait_ms_max: 50,
        retry_after_ms: 7,
        fencing_token_first: 1_000,
        startup_grace_ms: 0,
    }
}

const RESOURCES: &[&[u8]] = &[b"r0", b"r1", b"resource-2", b"r", b"r00"];
const CLIENTS: &[&[u8]] = &[b"c0", b"c1", b"client-2"];
const ADDRESSES: usize = 4;

fn address(n: usize) -> SocketAddr {
    match n % ADDRESSES {
        0 => v4(1),
        1 => v4(2),
        2 => v6(1),
        _ => SocketAddrV6::new(Ipv6Addr::LOCALHOST, 3, 0, 0).into(),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Send {
        session: u8,
        command: RequestBody<'static>,
        address: usize,
        room_for_waiting: bool,
    },
    /// An earlier request again, with its next attempt number.
    Retransmit { pick: Index, address: usize },
    /// Moves the clock (microseconds) and fires timers.
    Advance { us: u64 },
}

fn command() -> impl Strategy<Value = RequestBody<'static>> {
    let resource = prop::sample::select(RESOURCES);
    let client = prop::sample::select(CLIENTS);
    let wait_ms = prop_oneof![Just(0u32), 1..=50u32];
    let ttl_ms = prop_oneof![Just(0u32), 1..=100u32];
    prop_oneof![
        5 => (resource.clone(), client.clone(), wait_ms, ttl_ms.clone()).prop_map(
            |(resource, client, wait_ms, ttl_ms)| RequestBody::Acquire { resource, client, wait_ms, ttl_ms }
        ),
        3 => (resource.clone(), client.clone())
            .prop_map(|(resource, client)| RequestBody::Release { resource, client }),
        1 => (resource.clone(), client, ttl_ms.clone())
            .prop_map(|(resource, client, ttl_ms)| RequestBody::Renew { resource, client, ttl_ms }),
        1 => resource.clone().prop_map(|resource| RequestBody::Status { resource }),
        1 => (resource, ttl_ms)
            .prop_map(|(resource, default_ttl_ms)| RequestBody::Configure { resource, default_ttl_ms }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let idle_us = 1_000 * u64::from(prop_config().session_idle_ms);
    prop_oneof![
        12 => (0..5u8, command(), 0..ADDRESSES, prop::bool::weighted(0.8)).prop_map(
            |(session, command, address, room_for_waiting)| Op::Send { session, command, address, room_for_waiting }
        ),
        3 => (any::<Index>(), 0..ADDRESSES).prop_map(|(pick, address)| Op::Retransmit { pick, address }),
        4 => prop_oneof![0..2_000u64, 0..60_000u64].prop_map(|us| Op::Advance { us }),
        1 => prop_oneof![Just(idle_us), Just(idle_us - 1_000)].prop_map(|us| Op::Advance { us }),
    ]
}

/// Turns ops into table inputs: ids, attempts and the clock.
#[derive(Default)]
struct Inputs {
    now: Instant,
    request_last: [u64; 5],
    sent: Vec<(RequestId, u16, RequestBody<'static>, bool)>,
}

impl Inputs {
    fn next(&mut self, op: &Op) -> Option<Input> {
        let request = |id, attempt, address, command, room_for_waiting| Request {
            id,
            attempt,
            reply_to: self::address(address),
            body: command,
            datagram_len: datagram_len(&command, room_for_waiting),
        };
        match *op {
            Op::Send {
                session,
                command,
                address,
                room_for_waiting,
            } => {
                let index = usize::from(session);
                self.request_last[index] += 1;
                let id = RequestId {
                    session: 0x100 + u64::from(session),
                    request: self.request_last[index],
                };
                self.sent.push((id, 0, command, room_for_waiting));
                let request = request(id, 0, address, command, room_for_waiting);
                Some(Input::Request(self.now, request))
            }
            Op::Retransmit { pick, address } => {
                if self.sent.is_empty() {
                    return None;
                }
                let index = pick.index(self.sent.len());
                let entry = &mut self.sent[index];
                entry.1 = entry.1.saturating_add(1);
                let (id, attempt, command, room_for_waiting) = *entry;
                let request = request(id, attempt, address, command, room_for_waiting);
                Some(Input::Request(self.now, request))
            }
            Op::Advance { us } => {
                self.now = self.now + Duration::from_micros(us);
                Some(Input::Timeout(self.now))
            }
        }
    }
}

/// Everything a table shows from outside after an input.
fn observe(table: &LockTable, replies: Vec<Reply>, now: Instant) -> Observed {
    let statuses = RESOURCES
        .iter()
        .map(|resource| table.read_status(now, resource))
        .map(|(answer, holder)| (answer, holder.as_slice().to_vec()))
        .collect();
    Observed {
        replies,
        timeout: table.poll_timeout(),
        stats: table.stats(),
        lease_horizon: table.lease_horizon(),
        statuses,
        snapshot: snapshot_of(table),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Observed {
    replies: Vec<Reply>,
    timeout: Option<Instant>,
    stats: Stats,
    lease_horizon: Instant,
    statuses: Vec<(Answer, Vec<u8>)>,
    snapshot: Vec<u8>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Table A runs every input; at a random point B is restored from A's snapshot, and from
    /// then on both get the same inputs: every reply, timeout, counter, STATUS read and
    /// snapshot must be the same, as for two replicas of a shard, one of which caught up by
    /// InstallSnapshot.
    #[test]
    fn a_restored_table_behaves_like_the_original(
        ops in prop::collection::vec(op(), 1..250),
        split in any::<Index>(),
    ) {
        let split = split.index(ops.len() + 1);
        let mut inputs = Inputs::default();
        let mut a = LockTable::new(prop_config());
        for op in &ops[..split] {
            if let Some(input) = inputs.next(op) {
                apply(&mut a, input);
            }
        }
        let bytes = snapshot_of(&a);
        // A different first token, to show the counter comes from the snapshot.
        let config = Config { fencing_token_first: 3, ..prop_config() };
        let mut b = LockTable::restore(config, &bytes).expect("a snapshot of a table");
        b.check_all();
        prop_assert_eq!(snapshot_of(&b), bytes);
        for op in &ops[split..] {
            let Some(input) = inputs.next(op) else { continue };
            let replies_a = apply(&mut a, input);
            let replies_b = apply(&mut b, input);
            let now = inputs.now;
            prop_assert_eq!(observe(&a, replies_a, now), observe(&b, replies_b, now));
        }
        // Let everything run out, both alike.
        let end = inputs.now + Duration::from_millis(u64::from(prop_config().session_idle_ms) + 1_000);
        let replies_a = apply(&mut a, Input::Timeout(end));
        let replies_b = apply(&mut b, Input::Timeout(end));
        prop_assert_eq!(observe(&a, replies_a, end), observe(&b, replies_b, end));
        prop_assert_eq!(a.stats().timers, 0);
    }

    /// Arbitrary bytes, and arbitrary bytes behind a valid header: refused, or a sound table.
    #[test]
    fn random_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..600),
        with_header in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        if with_header {
            bytes.extend_from_slice(b"ULTS\x01");
        }
        bytes.extend_from_slice(&body);
        if let Ok(table) = LockTable::restore(prop_config(), &bytes) {
            exercise(table, &prop_config());
        }
    }

    /// A real snapshot with a few bytes overwritten: refused, or a sound table.
    #[test]
    fn changed_snapshots_never_panic(
        ops in prop::collection::vec(op(), 1..120),
        changes in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut inputs = Inputs::default();
        let mut table = LockTable::new(prop_config());
        for op in &ops {
            if let Some(input) = inputs.next(op) {
                apply(&mut table, input);
            }
        }
        let mut bytes = snapshot_of(&table);
        for (at, value) in changes {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(table) = LockTable::restore(prop_config(), &bytes) {
            exercise(table, &prop_config());
        }
    }
}

/// Size and speed for 100,000 held locks (16-byte ids), 10,000 waiters on 1,000 of them and
/// 2,000 sessions remembering 55 answers each. Prints; asserts only correctness. Run with
/// `cargo test --release --lib snapshot_size -- --nocapture` (debug builds use a tenth).
#[test]
#[allow(clippy::disallowed_methods)] // measures wall time; the table never sees it
fn snapshot_size_and_speed_for_100k_held_locks() {
    let locks: u64 = if cfg!(debug_assertions) {
        10_000
    } else {
        100_000
    };
    let config = Config {
        sessions_max: 16_384,
        answers_per_session_max: 256,
        ..Config::default()
    };
    let sessions = locks / 50;
    let mut table = LockTable::new(config.clone());
    let now = ms(1);
    let mut request_last = vec![0u64; sessions as usize];
    let mut send = |table: &mut LockTable, n: u64, resource: &[u8], client: &[u8], wait_ms| {
        let session = n % sessions;
        request_last[session as usize] += 1;
        table.handle_request(
            now,
            Request {
                id: RequestId {
                    session: 0x1_0000 + session,
                    request: request_last[session as usize],
                },
                attempt: 0,
                reply_to: v4(40_000 + (n % 1_000) as u16),
                body: RequestBody::Acquire {
                    resource,
                    client,
                    wait_ms,
                    ttl_ms: 60_000,
                },
                datagram_len: udplock_protocol::ACQUIRE_WAIT_REQUEST_LEN as u16,
            },
        );
        while table.poll_reply().is_some() {}
    };
    for n in 0..locks {
        let resource = format!("resource-{n:07}");
        let client = format!("client---{:07}", n % 5_000);
        send(&mut table, n, resource.as_bytes(), client.as_bytes(), 0);
    }
    let waiters = locks / 10;
    for n in 0..waiters {
        let resource = format!("resource-{:07}", n % (locks / 100));
        let client = format!("waiter---{n:07}");
        send(
            &mut table,
            n,
            resource.as_bytes(),
            client.as_bytes(),
            200_000,
        );
    }
    let stats = table.stats();
    assert_eq!((stats.held, stats.waiters), (locks, waiters));

    let started = std::time::Instant::now();
    let mut bytes = Vec::new();
    table.snapshot(&mut bytes);
    let snapshot_time = started.elapsed();
    let started = std::time::Instant::now();
    let restored = LockTable::restore(config, &bytes).expect("valid");
    let restore_time = started.elapsed();
    assert_eq!(restored.stats(), stats);
    assert_eq!(snapshot_of(&restored), bytes);

    // Each part's own bytes, from the layout: 16-byte ids.
    let lock_bytes = 1 + 16 + 4 + 8 + 4 + 1 + 16 + 4 + 8 + 4;
    let waiter_bytes = 8 + 8 + 8 + 2 + 7 + 1 + 16 + 8 + 4;
    let session_bytes = 8 + 8 + 8 + 4;
    let expected = 5
        + 32
        + 8
        + locks * lock_bytes
        + waiters * waiter_bytes
        + sessions * session_bytes
        + stats.answers_remembered * ANSWER_LEN as u64;
    assert_eq!(bytes.len() as u64, expected);
    println!(
        "snapshot of {locks} held locks, {waiters} waiters, {sessions} sessions with {} \
         answers: {} bytes ({:.1} per held lock all included; a held lock alone {lock_bytes} B, \
         a waiter {waiter_bytes} B, an answer {ANSWER_LEN} B); snapshot {:.1} ms, restore {:.1} ms",
        stats.answers_remembered,
        bytes.len(),
        bytes.len() as f64 / locks as f64,
        snapshot_time.as_secs_f64() * 1e3,
        restore_time.as_secs_f64() * 1e3,
    );
}

/// Issue 12 item 4: `Config::snapshot_len_max` is the longest snapshot the limits allow —
/// reached exactly by a table with every limit full of the longest records (255-byte ids,
/// IPv6 waiters), so the bound a shard's configuration is checked against is neither short
/// (a snapshot could pass SNAPSHOT_LEN_MAX) nor loose.
#[test]
fn a_table_full_of_the_longest_records_snapshots_to_snapshot_len_max() {
    let config = Config {
        resources_max: 3,
        waiters_per_resource_max: 1,
        waiters_max: 2,
        sessions_max: 2,
        answers_per_session_max: 2,
        ..Config::default()
    };
    let mut table = LockTable::new(config.clone());
    let id = |byte: u8| -> &'static [u8] { Box::leak(vec![byte; ID_LEN_MAX].into_boxed_slice()) };
    let (r1, r2, r3, client_a, client_b) = (id(b'1'), id(b'2'), id(b'3'), id(b'a'), id(b'b'));
    let acquire = |resource, client, wait_ms| RequestBody::Acquire {
        resource,
        client,
        wait_ms,
        ttl_ms: 60_000,
    };
    let inputs = [
        // Session 1: two grants remembered.
        request(1, 1, 1, 0, v6(1), acquire(r1, client_a, 0)),
        request(1, 1, 2, 0, v6(1), acquire(r2, client_a, 0)),
        // Session 2: a grant and a refusal remembered, then two acquires queued.
        request(1, 2, 1, 0, v6(2), acquire(r3, client_b, 0)),
        request(
            1,
            2,
            2,
            0,
            v6(2),
            RequestBody::Release {
                resource: r1,
                client: client_b,
            },
        ),
        request(1, 2, 3, 0, v6(2), acquire(r1, client_b, 10_000)),
        request(1, 2, 4, 0, v6(2), acquire(r2, client_b, 10_000)),
    ];
    for input in inputs {
        apply(&mut table, input);
    }
    let stats = table.stats();
    assert_eq!((stats.resources, stats.held, stats.waiters), (3, 3, 2));
    assert_eq!((stats.sessions, stats.answers_remembered), (2, 4));
    assert_eq!(snapshot_of(&table).len() as u64, config.snapshot_len_max());
}
