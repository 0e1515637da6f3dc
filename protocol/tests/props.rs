//! Property tests of the codec: any byte sequence decodes to a value or an error (never a
//! panic), every valid message round-trips byte for byte, and every accepted datagram is in
//! canonical form (re-encoding it gives the same bytes).

use proptest::prelude::*;
use std::net::SocketAddr;
use udplock_protocol::header::HeaderIds;
use udplock_protocol::*;

mod common;
use common::{numbered, Msg};

fn id() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..=ID_LEN_MAX)
}

fn nonzero() -> impl Strategy<Value = u64> {
    1..=u64::MAX
}

#[derive(Debug, Clone)]
enum Body {
    Acquire(Vec<u8>, Vec<u8>, u32, u32),
    Release(Vec<u8>, Vec<u8>),
    Renew(Vec<u8>, Vec<u8>, u32),
    Status(Vec<u8>),
    Configure(Vec<u8>, u32),
    /// Shard, shard count, ttl_ms, and the tokens' wire bytes (1 to 64 tokens, spec §4.11).
    Keepalive(u16, u16, u32, Vec<u8>),
    CancelWait(Vec<u8>, Vec<u8>, u64, u64),
}

impl Body {
    fn view(&self) -> RequestBody<'_> {
        match self {
            Body::Acquire(r, c, w, t) => RequestBody::Acquire {
                resource: r,
                client: c,
                wait_ms: *w,
                ttl_ms: *t,
            },
            Body::Release(r, c) => RequestBody::Release {
                resource: r,
                client: c,
            },
            Body::Renew(r, c, t) => RequestBody::Renew {
                resource: r,
                client: c,
                ttl_ms: *t,
            },
            Body::Status(r) => RequestBody::Status { resource: r },
            Body::Configure(r, t) => RequestBody::Configure {
                resource: r,
                default_ttl_ms: *t,
            },
            Body::Keepalive(shard, shards, t, tokens) => RequestBody::Keepalive {
                shard: *shard,
                shards: *shards,
                ttl_ms: *t,
                tokens: Tokens::from_bytes(tokens).expect("whole tokens"),
            },
            Body::CancelWait(r, c, s, q) => RequestBody::CancelWait {
                resource: r,
                client: c,
                target_session: *s,
                target_request: *q,
            },
        }
    }
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (id(), id(), any::<u32>(), any::<u32>()).prop_map(|(r, c, w, t)| Body::Acquire(r, c, w, t)),
        (id(), id()).prop_map(|(r, c)| Body::Release(r, c)),
        (id(), id(), any::<u32>()).prop_map(|(r, c, t)| Body::Renew(r, c, t)),
        id().prop_map(Body::Status),
        (id(), any::<u32>()).prop_map(|(r, t)| Body::Configure(r, t)),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            prop::collection::vec(any::<u64>(), 1..=KEEPALIVE_TOKENS_MAX)
        )
            .prop_map(|(shard, shards, t, tokens)| {
                let bytes = tokens
                    .iter()
                    .flat_map(|token| token.to_be_bytes())
                    .collect();
                Body::Keepalive(shard, shards, t, bytes)
            }),
        (id(), id(), any::<u64>(), any::<u64>())
            .prop_map(|(r, c, s, q)| Body::CancelWait(r, c, s, q)),
    ]
}

fn hint() -> impl Strategy<Value = Hint> {
    prop_oneof![
        Just(Hint::None),
        any::<u32>().prop_map(|ms| Hint::RetryAfter { ms }),
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| Hint::Leader(SocketAddr::from((ip, port)))),
        // A genuine IPv6 address (not IPv4-mapped, which decodes as IPv4).
        (any::<[u16; 7]>(), any::<u16>()).prop_map(|(seg, port)| {
            let ip = std::net::Ipv6Addr::new(
                0x2001, seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6],
            );
            Hint::Leader(SocketAddr::from((ip, port)))
        }),
    ]
}

fn reply_type() -> impl Strategy<Value = MessageType> {
    prop::sample::select(
        MessageType::ALL
            .iter()
            .copied()
            // SHARD_STATUS_REPLY, NODE_SETTINGS_REPLY, MEMBERS_REPLY and REMOVE_REPLY have
            // their own layouts and codecs.
            .filter(|t| {
                t.is_reply()
                    && *t != MessageType::ShardStatusReply
                    && *t != MessageType::NodeSettingsReply
                    && *t != MessageType::MembersReply
                    && *t != MessageType::RemoveReply
                    && *t != MessageType::HoldsReply
            })
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1_400)) {
        let _ = Request::decode(&bytes);
        let _ = Reply::decode(&bytes);
        let _ = HeaderIds::peek(&bytes);
    }

    /// Bytes that get past the magic and version, so the deeper checks are exercised too.
    #[test]
    fn framed_bytes_never_panic(ty in any::<u8>(), rest in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = vec![0x55, 0x4C, 1, ty];
        bytes.extend_from_slice(&rest);
        if let Ok((req, token)) = Request::decode_with_token(&bytes) {
            // Whatever decodes is canonical: re-encoding at the same length gives the same bytes.
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = req.encode_padded_with_token(&mut out, bytes.len(), token.as_ref()).unwrap();
            prop_assert_eq!(&out[..n], &bytes[..]);
        }
        let _ = Reply::decode(&bytes);
    }

    #[test]
    fn requests_round_trip(b in body(), session in nonzero(), request in nonzero(), attempt in any::<u16>()) {
        let req = Request { session_id: session, request_id: request, attempt, body: b.view() };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode(&mut out).unwrap();
        prop_assert_eq!(n, req.padded_len());
        prop_assert!(n >= REQUEST_LEN_MIN);
        let back = Request::decode(&out[..n]).unwrap();
        prop_assert_eq!(back, req);
        let mut again = [0u8; DATAGRAM_LEN_MAX];
        let m = back.encode(&mut again).unwrap();
        prop_assert_eq!(&out[..n], &again[..m]);
    }

    /// A request with an address token (spec §3.1, §7.1.9) decodes to the same request and
    /// token; it is never shorter than without, and longer only by what the token did not
    /// find room for in the padding. A RETRY (76 bytes) fits in any of them.
    #[test]
    fn requests_with_tokens_round_trip(b in body(), session in nonzero(), request in nonzero(), attempt in any::<u16>(), token in any::<[u8; 16]>()) {
        let req = Request { session_id: session, request_id: request, attempt, body: b.view() };
        let token = AddressToken(token);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode_with_token(&mut out, Some(&token)).unwrap();
        prop_assert_eq!(n, req.padded_len().max(32 + req.body.body_len() + ADDRESS_TOKEN_LEN));
        prop_assert!(n >= REPLY_LEN_MIN);
        let (back, back_token) = Request::decode_with_token(&out[..n]).unwrap();
        prop_assert_eq!(back, req);
        prop_assert_eq!(back_token, Some(token));
        prop_assert_eq!(Request::decode(&out[..n]).unwrap(), req);
        // Without the token: the plain encoding, no flag.
        let m = req.encode_with_token(&mut out, None).unwrap();
        prop_assert_eq!(Request::decode_with_token(&out[..m]).unwrap(), (req, None));
    }

    /// No amplification (spec §2.2): the replies a request can cause fit in the request, a
    /// STATUS naming the longest holder and a waiting ACQUIRE's WAITING plus final answer
    /// included.
    #[test]
    fn replies_never_exceed_requests(b in body(), holder in id()) {
        let req = Request { session_id: 1, request_id: 1, attempt: 0, body: b.view() };
        let reply_bytes = match req.body {
            RequestBody::Status { .. } => REPLY_LEN_MIN + holder.len(),
            RequestBody::Acquire { wait_ms, .. } if wait_ms > 0 => 2 * REPLY_LEN_MIN,
            _ => REPLY_LEN_MIN,
        };
        prop_assert!(reply_bytes <= req.padded_len());
    }

    #[test]
    fn mutated_requests_never_panic(b in body(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let req = Request { session_id: 9, request_id: 9, attempt: 0, body: b.view() };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode(&mut out).unwrap();
        let mut bytes = out[..n].to_vec();
        let i = at.index(n);
        bytes[i] = byte;
        let _ = Request::decode(&bytes);
        let cut = cut.index(n);
        let truncated = Request::decode(&bytes[..cut]);
        // A request truncated before its body ends can never decode.
        if cut < 32 + req.body.body_len() {
            prop_assert!(truncated.is_err());
        }
    }

    #[test]
    fn replies_round_trip(
        msg_type in reply_type(), session in nonzero(), request in nonzero(), attempt in any::<u16>(),
        status in prop::sample::select(Status::ALL.to_vec()), hold_count in any::<u32>(),
        token in any::<u64>(), lease in any::<u32>(), waiters in any::<u32>(), hint in hint(),
        holder in prop::collection::vec(any::<u8>(), 0..=ID_LEN_MAX), flags in 0u16..8,
    ) {
        let holder: &[u8] = if msg_type == MessageType::StatusReply { &holder } else { &[] };
        let flags = Flags::from_bits(flags & !Flags::AUTH.bits()).unwrap();
        // A RETRY carries an address token, and only a RETRY does (spec §5.2).
        let hint = if status == Status::Retry {
            Hint::AddressToken(AddressToken(token.to_be_bytes().repeat(2).try_into().unwrap()))
        } else {
            hint
        };
        let reply = Reply {
            msg_type, flags, session_id: session, request_id: request, attempt, status,
            hold_count, fencing_token: token, lease_ms: lease, waiter_count: waiters, hint, holder,
        };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert_eq!(n, REPLY_LEN_MIN + holder.len());
        prop_assert_eq!(Reply::decode(&out[..n]).unwrap(), reply);
    }
}

#[test]
fn encode_rejects_bad_values_without_panicking() {
    let long = [b'x'; 256];
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let mk = |resource: &'static [u8], session_id| Request {
        session_id,
        request_id: 1,
        attempt: 0,
        body: RequestBody::Status { resource },
    };
    assert_eq!(mk(b"", 1).encode(&mut out), Err(EncodeError::BadIdLength));
    assert_eq!(mk(b"r", 0).encode(&mut out), Err(EncodeError::ZeroId));
    assert_eq!(
        mk(b"r", 1).encode(&mut [0u8; 40]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        mk(b"r", 1).encode_padded(&mut out, DATAGRAM_LEN_MAX + 1),
        Err(EncodeError::TooLong)
    );
    let req = Request {
        session_id: 1,
        request_id: 1,
        attempt: 0,
        body: RequestBody::Release {
            resource: &long,
            client: b"c",
        },
    };
    assert_eq!(req.encode(&mut out), Err(EncodeError::BadIdLength));
}

#[test]
fn every_decode_error_has_a_drop_or_reply_rule() {
    // Datagrams a server must never answer (spec §7): not ours, or no room for a reply.
    assert_eq!(DecodeError::BadMagic.reply_status(), None);
    assert_eq!(DecodeError::TooShort.reply_status(), None);
    assert_eq!(DecodeError::TooLong.reply_status(), None);
    assert_eq!(DecodeError::UnexpectedType.reply_status(), None);
    assert_eq!(DecodeError::ZeroId.reply_status(), None);
    assert_eq!(
        DecodeError::EmptyId.reply_status(),
        Some(Status::InvalidArgument)
    );
    assert_eq!(
        DecodeError::UnsupportedVersion.reply_status(),
        Some(Status::UnsupportedVersion)
    );
}

// ---------------------------------------------------------------------------------------------
// PEER datagrams and log commands (spec §8).

/// The record's length as spec §8.5 gives each kind's layout, computed apart from the codec.
fn expected_record_len(m: &Msg) -> usize {
    match m {
        Msg::PreVote { .. } | Msg::Vote { .. } => 6 + 24,
        Msg::PreVoteReply { .. } | Msg::VoteReply { .. } => 6 + 17,
        Msg::Append { entries, .. } => {
            append_record_len(entries.iter().map(|e| e.data.len()).sum(), entries.len())
        }
        Msg::AppendReply { .. } => 6 + 41,
        Msg::TimeoutNow { .. } => 6 + 8,
        Msg::InstallSnapshot { data, .. } => 6 + INSTALL_SNAPSHOT_FIXED_LEN + data.len(),
        Msg::InstallSnapshotReply { .. } => 6 + 48,
        Msg::TermQuery { .. } => 6 + 24,
        Msg::TermReply { .. } => 6 + 24,
        Msg::NoStateReply { .. } => 6 + 17,
    }
}

/// An APPEND's entries, of every shape a datagram can hold: a few small ones; many empty
/// ones (up to as many as fit an authenticated datagram alone:
/// `(1400 - 32 - 56 - 56) / 10` = 125); one as long as the longest log command.
fn entry_data() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    prop_oneof![
        4 => prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..80)), 0..8),
        1 => prop::collection::vec((any::<u64>(), Just(Vec::new())), 100..=125),
        1 => (any::<u64>(), prop::collection::vec(any::<u8>(), LOG_COMMAND_LEN_MAX))
            .prop_map(|e| vec![e]),
    ]
}

fn append_msg() -> impl Strategy<Value = Msg> {
    (
        1..=u64::MAX,
        prop_oneof![any::<u64>(), Just(u64::MAX)],
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        // transfer_to: usually nobody.
        prop_oneof![Just(None), nonzero().prop_map(Some)],
        entry_data(),
    )
        .prop_map(|(term, prev, prev_term, commit, round, transfer_to, raw)| {
            // Entry terms: non-decreasing and at most the APPEND's term.
            let mut terms: Vec<u64> = raw.iter().map(|(t, _)| t % term + 1).collect();
            terms.sort_unstable();
            let raw = terms
                .into_iter()
                .zip(raw.into_iter().map(|(_, d)| d))
                .collect::<Vec<_>>();
            // The last index must fit in a u64.
            let prev = prev.min(u64::MAX - raw.len() as u64);
            Msg::Append {
                term,
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: numbered(prev, raw),
                leader_commit: commit,
                round,
                transfer_to,
            }
        })
}

/// A valid INSTALL_SNAPSHOT: `1 <= last_term <= term`, `last_index >= 1`,
/// `total_len <= SNAPSHOT_LEN_MAX`, `offset + data.len() <= total_len`. Edge values often.
fn install_snapshot_msg() -> impl Strategy<Value = Msg> {
    (
        1..=u64::MAX,
        any::<u64>(),
        1..=u64::MAX,
        any::<u64>(),
        prop_oneof![
            Just(SNAPSHOT_LEN_MAX),
            Just(0u64),
            0..=SNAPSHOT_LEN_MAX,
            0u64..4_000
        ],
        any::<u64>(),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(any::<u8>(), SNAPSHOT_CHUNK_MAX - 8..=SNAPSHOT_CHUNK_MAX),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(term, last_term, last_index, offset, total_len, round, data, at_end)| {
                let last_term = last_term % term + 1;
                // The chunk must lie inside the snapshot.
                let data_len = (data.len() as u64).min(total_len) as usize;
                let data = data[..data_len].to_vec();
                let room = total_len - data_len as u64;
                let offset = if at_end { room } else { offset % (room + 1) };
                Msg::InstallSnapshot {
                    term,
                    last_index,
                    last_term,
                    offset,
                    total_len,
                    data,
                    round,
                }
            },
        )
}

/// Any message a correct node may send: every kind, every field over its valid range.
fn peer_msg() -> impl Strategy<Value = Msg> {
    let u = any::<u64>;
    prop_oneof![
        (u(), u(), u()).prop_map(|(term, last_log_index, last_log_term)| Msg::PreVote {
            term,
            last_log_index,
            last_log_term
        }),
        (u(), any::<bool>(), u()).prop_map(|(term, granted, replica)| Msg::PreVoteReply {
            term,
            granted,
            replica
        }),
        (u(), u(), u(), any::<bool>()).prop_map(
            |(term, last_log_index, last_log_term, transfer)| Msg::Vote {
                term,
                last_log_index,
                last_log_term,
                transfer
            }
        ),
        (u(), any::<bool>(), u()).prop_map(|(term, granted, replica)| Msg::VoteReply {
            term,
            granted,
            replica
        }),
        append_msg(),
        (u(), any::<bool>(), u(), u(), u(), u()).prop_map(
            |(term, success, match_index, round, life, replica)| Msg::AppendReply {
                term,
                success,
                match_index,
                round,
                life,
                replica
            }
        ),
        u().prop_map(|term| Msg::TimeoutNow { term }),
        install_snapshot_msg(),
        (u(), u(), u(), u(), u(), u()).prop_map(
            |(term, last_index, received, round, life, replica)| Msg::InstallSnapshotReply {
                term,
                last_index,
                received,
                round,
                life,
                replica,
            }
        ),
        // TERM_QUERY's term is 0 for a node that lost its state: generate it often.
        (prop_oneof![Just(0u64), u()], u())
            .prop_map(|(term, nonce)| Msg::TermQuery { term, nonce }),
        (u(), u(), u()).prop_map(|(term, last_index, nonce)| Msg::TermReply {
            term,
            last_index,
            nonce
        }),
        (u(), u(), any::<bool>()).prop_map(|(term, nonce, new)| Msg::NoStateReply {
            term,
            nonce,
            new
        }),
    ]
}

fn shard() -> impl Strategy<Value = u16> {
    0..SHARDS_MAX as u16
}

fn peer_header() -> impl Strategy<Value = PeerHeader> {
    (nonzero(), nonzero()).prop_map(|(cluster_id, from)| PeerHeader { cluster_id, from })
}

/// Re-encodes a datagram decoded from `bytes` record by record: what a canonical datagram
/// must equal (see [`with_trailer`] for an authenticated one).
fn reencode(d: &PeerDatagram<'_>, bytes: &[u8]) -> Vec<u8> {
    let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
    let room = if d.auth.is_some() {
        AUTH_TRAILER_LEN
    } else {
        0
    };
    let mut w = PeerWriter::with_trailer_room(&mut out, d.header, room);
    for record in d.all_records() {
        let pushed = match record {
            PeerRecord::Raft { shard, msg } => w.push(shard, &msg),
            PeerRecord::Swim(msg) => w.push_swim(&msg),
        };
        pushed.expect("a decoded record re-encodes");
    }
    let n = w.finish();
    with_trailer(out[..n].to_vec(), d.auth, bytes)
}

/// The trailer's fields as a sender writes them (spec §8.11.2): everything but the MAC.
fn trailer_fields(t: &AuthTrailer) -> Vec<u8> {
    let mut b = Vec::with_capacity(AUTH_TRAILER_LEN - AUTH_MAC_LEN);
    for v in [t.to, t.incarnation, t.peer_incarnation, t.seq] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&t.key_id.to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    b
}

/// What a canonical node-to-node datagram decoded from `bytes` must equal, given its
/// unauthenticated re-encoding `plain` and the trailer the decoder read: `plain` itself if
/// none; else `plain` with AUTH set, the trailer's fields, and the MAC of `bytes`, which a
/// decoder treats as opaque (only a key can remake it).
fn with_trailer(mut plain: Vec<u8>, auth: Option<AuthTrailer>, bytes: &[u8]) -> Vec<u8> {
    if let Some(t) = auth {
        let flags = u16::from_be_bytes([plain[4], plain[5]]) | Flags::AUTH.bits();
        plain[4..6].copy_from_slice(&flags.to_be_bytes());
        plain.extend(trailer_fields(&t));
        plain.extend_from_slice(&bytes[bytes.len().saturating_sub(AUTH_MAC_LEN)..]);
    }
    plain
}

#[derive(Debug, Clone)]
struct Cmd {
    kind: u8,
    value: u64,
    session: u64,
    request: u64,
    attempt: u16,
    room: bool,
    addr: SocketAddr,
    /// A REQUEST's operation (never a STATUS).
    body: Body,
    /// SETTINGS: its first two values.
    settings: (u32, u32),
}

impl Cmd {
    fn view(&self) -> LogCommand<'_> {
        match self.kind {
            1 => LogCommand::Init {
                token_first: self.value,
            },
            2 => LogCommand::Tick { stamp: self.value },
            4 => LogCommand::Settings {
                ttl_default_ms: self.settings.0,
                retry_after_ms: self.settings.1,
                startup_grace_ms: self.value as u32,
            },
            _ => LogCommand::Request {
                stamp: self.value,
                session_id: self.session,
                request_id: self.request,
                attempt: self.attempt,
                room_for_waiting: self.room,
                reply_to: self.addr,
                body: self.body.view(),
            },
        }
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u16; 7]>(), any::<u16>()).prop_map(|(seg, port)| {
            let ip = std::net::Ipv6Addr::new(
                0xfd00, seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6],
            );
            SocketAddr::from((ip, port))
        }),
    ]
}

/// The operations a REQUEST command carries: every one but STATUS.
fn logged_body() -> impl Strategy<Value = Body> {
    body().prop_filter("STATUS is never logged", |b| !matches!(b, Body::Status(_)))
}

fn command() -> impl Strategy<Value = Cmd> {
    (
        1u8..=4,
        any::<u64>(),
        (nonzero(), nonzero(), any::<u16>(), any::<bool>()),
        socket_addr(),
        logged_body(),
        (any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(kind, value, (session, request, attempt, room), addr, body, settings)| Cmd {
                kind,
                value,
                session,
                request,
                attempt,
                room,
                addr,
                body,
                settings,
            },
        )
}

/// An APPEND or INSTALL_SNAPSHOT whose fields may break the rules both ends enforce (spec
/// §8.4, §8.5): entries out of term order or newer than the APPEND, a last index past
/// `u64::MAX`, a `transfer_to` naming node 0; a snapshot of `last_index` or `last_term` 0, a
/// `last_term` above the term, a `total_len` above [`SNAPSHOT_LEN_MAX`], a chunk outside its
/// snapshot (overflowing or not). Small values, so that the edges are hit often.
fn loose_msg() -> impl Strategy<Value = Msg> {
    let small = || prop_oneof![0u64..4, Just(u64::MAX)];
    let appends = (
        small(),
        prop_oneof![0u64..4, u64::MAX - 4..=u64::MAX],
        prop::collection::vec((0u64..5, prop::collection::vec(any::<u8>(), 0..4)), 0..5),
        prop_oneof![Just(None), Just(Some(0)), (1u64..4).prop_map(Some)],
    )
        .prop_map(|(term, prev, raw, transfer_to)| Msg::Append {
            term,
            prev_log_index: prev,
            prev_log_term: 1,
            entries: numbered(prev, raw),
            leader_commit: 2,
            round: 3,
            transfer_to,
        });
    let chunks = (
        small(),
        small(),
        small(),
        prop_oneof![0u64..10, Just(u64::MAX - 2)],
        prop_oneof![
            0u64..10,
            Just(SNAPSHOT_LEN_MAX),
            Just(SNAPSHOT_LEN_MAX + 1),
            Just(u64::MAX)
        ],
        prop::collection::vec(any::<u8>(), 0..6),
    )
        .prop_map(|(term, last_index, last_term, offset, total_len, data)| {
            Msg::InstallSnapshot {
                term,
                last_index,
                last_term,
                offset,
                total_len,
                data,
                round: 4,
            }
        });
    prop_oneof![appends, chunks]
}

/// The PEER datagram of cluster 7 from node 3 that carries `m` as its one record, laid out
/// as spec §8.5 draws it, with none of the writer's checks: what a faulty sender would send.
fn loose_datagram(shard: u16, m: &Msg) -> Vec<u8> {
    let mut body = Vec::new();
    let kind = match m {
        Msg::Append {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            round,
            transfer_to,
        } => {
            let to = transfer_to.unwrap_or(0);
            for v in [
                *term,
                *prev_log_index,
                *prev_log_term,
                *leader_commit,
                *round,
                to,
            ] {
                body.extend_from_slice(&v.to_be_bytes());
            }
            body.extend_from_slice(&(entries.len() as u16).to_be_bytes());
            for e in entries {
                body.extend_from_slice(&e.term.to_be_bytes());
                body.extend_from_slice(&(e.data.len() as u16).to_be_bytes());
                body.extend_from_slice(&e.data);
            }
            PeerKind::Append
        }
        Msg::InstallSnapshot {
            term,
            last_index,
            last_term,
            offset,
            total_len,
            data,
            round,
        } => {
            for v in [*term, *last_index, *last_term, *offset, *total_len, *round] {
                body.extend_from_slice(&v.to_be_bytes());
            }
            body.extend_from_slice(&(data.len() as u16).to_be_bytes());
            body.extend_from_slice(data);
            PeerKind::InstallSnapshot
        }
        _ => unreachable!("loose_msg makes APPENDs and INSTALL_SNAPSHOTs only"),
    };
    let mut bytes = vec![0x55, 0x4C, 1, 0x40, 0, 0, 0, 0];
    bytes.extend_from_slice(&7u64.to_be_bytes());
    bytes.extend_from_slice(&3u64.to_be_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&shard.to_be_bytes());
    bytes.extend_from_slice(&[kind.to_wire(), 0]);
    bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&body);
    let body_len = (bytes.len() - 32) as u16;
    bytes[6..8].copy_from_slice(&body_len.to_be_bytes());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic_in_peer_and_command_decoders(
        bytes in prop::collection::vec(any::<u8>(), 0..1_500),
    ) {
        if let Ok(d) = PeerDatagram::decode(&bytes) {
            prop_assert_eq!(reencode(&d, &bytes), bytes.clone());
        }
        if let Ok(c) = LogCommand::decode(&bytes) {
            let mut out = [0u8; LOG_COMMAND_LEN_MAX];
            let n = c.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..n], &bytes[..]);
        }
    }

    /// Bytes with a valid PEER header and a body of random records, so the record checks
    /// are reached: whatever decodes is canonical.
    #[test]
    fn framed_peer_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..400),
        kinds in prop::collection::vec((0u16..20, 0u8..20, 0usize..80), 0..6),
    ) {
        let mut bytes = vec![0x55, 0x4C, 1, 0x40, 0, 0, 0, 0];
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(&[0; 8]);
        // Plausible record headers with random bodies, so most datagrams get past framing.
        let mut rest = &body[..];
        for (shard, kind, len) in kinds {
            let len = len.min(rest.len());
            bytes.extend_from_slice(&shard.to_be_bytes());
            bytes.extend_from_slice(&[kind, 0]);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
            bytes.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        }
        let body_len = (bytes.len() - 32) as u16;
        bytes[6..8].copy_from_slice(&body_len.to_be_bytes());
        // One pass (`decode_visiting`) decides as `decode` does and, when it accepts, has
        // seen the records `all_records` reads again, in order.
        let mut visited = Vec::new();
        let once = PeerDatagram::decode_visiting(&bytes, |r| visited.push(r));
        prop_assert_eq!(once, PeerDatagram::decode(&bytes));
        if let Ok(d) = once {
            prop_assert_eq!(&visited, &d.all_records().collect::<Vec<_>>());
            prop_assert_eq!(reencode(&d, &bytes), bytes.clone());
        }
        let _ = Request::decode(&bytes);
        let _ = Reply::decode(&bytes);
    }

    /// The writer and the decoder keep one set of rules (spec §8.4, §8.5): a message the
    /// writer takes decodes from the same bytes to the same message, and a message it
    /// refuses, sent anyway by a faulty node, is rejected by the decoder with the matching
    /// error. The one refusal without a wire form to reject is a `transfer_to` of node 0,
    /// which the wire would read back as nobody.
    #[test]
    fn decoding_rejects_what_encoding_refuses(
        shard in prop_oneof![8 => 0..SHARDS_MAX as u16, 1 => SHARDS_MAX as u16..=u16::MAX],
        m in loose_msg(),
    ) {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut buf, PeerHeader { cluster_id: 7, from: 3 });
        let pushed = w.push(shard, &m);
        let n = w.finish();
        let loose = loose_datagram(shard, &m);
        let decoded = PeerDatagram::decode(&loose)
            .map(|d| d.records().map(|(s, r)| (s, r.into_owned())).collect::<Vec<(u16, Msg)>>());
        match pushed {
            Ok(()) => {
                prop_assert_eq!(&buf[..n], &loose[..]);
                prop_assert_eq!(decoded, Ok(vec![(shard, m)]));
            }
            Err(EncodeError::ZeroId) => {
                let zero_target = matches!(m, Msg::Append { transfer_to: Some(0), .. });
                prop_assert!(zero_target, "{:?} refused with ZeroId", m);
                prop_assert!(decoded != Ok(vec![(shard, m)]));
            }
            Err(e) => {
                let expected = if shard as u32 >= SHARDS_MAX {
                    // The decoder checks the shard before the body, the writer after.
                    DecodeError::BadShard
                } else {
                    match e {
                        EncodeError::BadEntries => DecodeError::BadEntries,
                        EncodeError::BadSnapshotChunk => DecodeError::BadSnapshotChunk,
                        other => panic!("{m:?} refused with {other:?}"),
                    }
                };
                prop_assert_eq!(decoded, Err(expected));
            }
        }
    }

    #[test]
    fn peer_datagrams_round_trip(header in peer_header(), msgs in prop::collection::vec((shard(), peer_msg()), 1..30)) {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut buf, header);
        let mut pushed = Vec::new();
        for (shard, m) in &msgs {
            match w.push(*shard, m) {
                Ok(()) => pushed.push((*shard, m.clone())),
                Err(EncodeError::TooLong) | Err(EncodeError::BufferTooSmall) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let n = w.finish();
        let d = PeerDatagram::decode(&buf[..n]).unwrap();
        prop_assert_eq!(d.header, header);
        let back: Vec<_> = d.records().map(|(s, m)| (s, m.into_owned())).collect();
        prop_assert_eq!(&back, &pushed);
        prop_assert_eq!(d.record_count(), pushed.len());
        prop_assert_eq!(n, 32 + pushed.iter().map(|(_, m)| expected_record_len(m)).sum::<usize>());
        // The codec's own sizes, for a message that owns its entries, agree with the spec's.
        for (_, m) in &pushed {
            prop_assert_eq!(m.record_len(), expected_record_len(m));
        }
        prop_assert_eq!(reencode(&d, &buf[..n]), buf[..n].to_vec());
    }

    /// The writer never writes past its buffer, never makes a datagram above
    /// PEER_DATAGRAM_LEN_MAX, and a refused record changes nothing.
    #[test]
    fn peer_writer_stays_in_its_buffer(
        header in peer_header(),
        cap in 0usize..1_600,
        msgs in prop::collection::vec((shard(), peer_msg()), 1..60),
    ) {
        let mut backing = vec![0xA5u8; cap + 64];
        let (buf, guard) = backing.split_at_mut(cap);
        let mut w = PeerWriter::new(buf, header);
        let mut accepted = 0;
        for (shard, m) in &msgs {
            let (len, count) = (w.len(), w.record_count());
            match w.push(*shard, m) {
                Ok(()) => {
                    accepted += 1;
                    prop_assert_eq!(w.len(), len + expected_record_len(m));
                    prop_assert!(w.len() <= cap.min(PEER_DATAGRAM_LEN_MAX));
                }
                Err(e) => {
                    prop_assert!(matches!(e, EncodeError::TooLong | EncodeError::BufferTooSmall), "{e}");
                    prop_assert!(len + expected_record_len(m) > cap.min(PEER_DATAGRAM_LEN_MAX));
                    prop_assert_eq!((w.len(), w.record_count()), (len, count));
                }
            }
        }
        prop_assert_eq!(w.record_count(), accepted);
        let n = w.finish();
        prop_assert!(guard.iter().all(|&b| b == 0xA5));
        prop_assert!(n <= cap && n <= PEER_DATAGRAM_LEN_MAX);
        if accepted == 0 {
            prop_assert_eq!(n, 0);
        } else {
            prop_assert_eq!(PeerDatagram::decode(&backing[..n]).unwrap().record_count(), accepted);
        }
    }

    #[test]
    fn mutated_peer_datagrams_never_panic(
        header in peer_header(),
        msgs in prop::collection::vec((shard(), peer_msg()), 1..6),
        at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut buf, header);
        for (shard, m) in &msgs {
            let _ = w.push(*shard, m);
        }
        let n = w.finish();
        prop_assume!(n > 0);
        let mut bytes = buf[..n].to_vec();
        bytes[at.index(n)] = byte;
        if let Ok(d) = PeerDatagram::decode(&bytes) {
            prop_assert_eq!(reencode(&d, &bytes), bytes.clone());
        }
        // A cut datagram never decodes: body_len no longer matches.
        let cut = cut.index(n);
        prop_assert!(PeerDatagram::decode(&buf[..cut]).is_err());
    }

    #[test]
    fn log_commands_round_trip(c in command()) {
        let cmd = c.view();
        let mut out = [0u8; LOG_COMMAND_LEN_MAX];
        let n = cmd.encode(&mut out).unwrap();
        prop_assert_eq!(n, cmd.encoded_len());
        prop_assert!(n <= LOG_COMMAND_LEN_MAX);
        prop_assert_eq!(LogCommand::decode(&out[..n]).unwrap(), cmd);
        // A command always fits in an APPEND of one entry.
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut buf, PeerHeader { cluster_id: 1, from: 1 });
        let entry = PeerEntry { term: 1, data: &out[..n] };
        w.push_append(0, 1, 0, 0, 0, (0, 0), std::iter::once(entry)).unwrap();
        let m = w.finish();
        let d = PeerDatagram::decode(&buf[..m]).unwrap();
        let (_, msg) = d.records().next().unwrap();
        let PeerMessage::Append { entries, .. } = msg else { panic!("not an append") };
        prop_assert_eq!(LogCommand::decode(entries.iter().next().unwrap().data).unwrap(), cmd);
    }

    /// The one operation type crosses the wire and the log unchanged: a request decoded from
    /// its datagram, logged as a REQUEST command and decoded from the log entry, is the
    /// operation the client sent; a STATUS is never logged.
    #[test]
    fn a_request_body_survives_the_wire_and_the_log(b in body(), session in nonzero(), request in nonzero(), attempt in any::<u16>(), room in any::<bool>(), addr in socket_addr(), stamp in any::<u64>()) {
        let sent = Request { session_id: session, request_id: request, attempt, body: b.view() };
        let mut datagram = [0u8; DATAGRAM_LEN_MAX];
        let len = sent.encode(&mut datagram).unwrap();
        let received = Request::decode(&datagram[..len]).unwrap();
        prop_assert_eq!(received.body.kind(), sent.body.kind());
        prop_assert_eq!(RequestKind::of_request_type(sent.body.msg_type()), Some(sent.body.kind()));
        let logged = LogCommand::Request {
            stamp,
            session_id: received.session_id,
            request_id: received.request_id,
            attempt: received.attempt,
            room_for_waiting: room,
            reply_to: addr,
            body: received.body,
        };
        let mut entry = [0u8; LOG_COMMAND_LEN_MAX];
        match logged.encode(&mut entry) {
            Ok(n) => {
                prop_assert!(sent.body.kind().is_logged());
                let LogCommand::Request { body, session_id, request_id, .. } =
                    LogCommand::decode(&entry[..n]).unwrap() else {
                    panic!("a REQUEST command decodes as another kind");
                };
                prop_assert_eq!(body, sent.body);
                prop_assert_eq!((session_id, request_id), (session, request));
            }
            Err(e) => {
                prop_assert_eq!(e, EncodeError::WrongType);
                prop_assert_eq!(sent.body.kind(), RequestKind::Status);
            }
        }
    }

    #[test]
    fn mutated_log_commands_never_panic(c in command(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut out = [0u8; LOG_COMMAND_LEN_MAX];
        let n = c.view().encode(&mut out).unwrap();
        let mut bytes = out[..n].to_vec();
        bytes[at.index(n)] = byte;
        if let Ok(cmd) = LogCommand::decode(&bytes) {
            let mut again = [0u8; LOG_COMMAND_LEN_MAX];
            let m = cmd.encode(&mut again).unwrap();
            prop_assert_eq!(&again[..m], &bytes[..]);
        }
        // A KEEPALIVE's token count is its entry's length (spec §8.7): cut after a whole
        // token, it is the same KEEPALIVE listing fewer tokens. Any other cut fails.
        let cut = cut.index(n);
        let keepalive_cut = c.kind == LogCommandKind::Request.to_wire()
            && matches!(c.body, Body::Keepalive(..))
            && cut > LOG_KEEPALIVE_FIXED_LEN
            && (cut - LOG_KEEPALIVE_FIXED_LEN) % 8 == 0;
        match LogCommand::decode(&out[..cut]) {
            Ok(LogCommand::Request { body: RequestBody::Keepalive { tokens, .. }, .. }) if keepalive_cut => {
                prop_assert_eq!(tokens.len(), (cut - LOG_KEEPALIVE_FIXED_LEN) / 8);
            }
            decoded => prop_assert!(decoded.is_err(), "cut at {} decodes: {:?}", cut, decoded),
        }
    }

    #[test]
    fn shard_of_is_in_range(resource in prop::collection::vec(any::<u8>(), 0..300), shards in any::<u32>()) {
        let s = shard_of(&resource, shards);
        prop_assert!(s < SHARDS_MAX);
        if (1..=SHARDS_MAX).contains(&shards) {
            prop_assert!(s < shards);
            prop_assert_eq!(s as u64, shard_hash(&resource) % shards as u64);
        }
    }
}

#[test]
fn peer_limits() {
    // Longer than PEER_DATAGRAM_LEN_MAX: dropped before anything else is looked at.
    let mut long = vec![0u8; PEER_DATAGRAM_LEN_MAX + 1];
    long[..4].copy_from_slice(&[0x55, 0x4C, 1, 0x40]);
    assert_eq!(PeerDatagram::decode(&long), Err(DecodeError::TooLong));
    // A datagram of exactly PEER_DATAGRAM_LEN_MAX bytes is fine: one APPEND filling it.
    let mut buf = [0u8; 2_000];
    let mut w = PeerWriter::new(
        &mut buf,
        PeerHeader {
            cluster_id: 9,
            from: 4,
        },
    );
    let data = vec![7u8; PEER_DATAGRAM_LEN_MAX - 32 - append_record_len(0, 1)];
    let entry = PeerEntry {
        term: 2,
        data: &data,
    };
    w.push_append(3, 2, 10, 2, 10, (1, 0), std::iter::once(entry))
        .unwrap();
    assert_eq!(w.remaining(), 0);
    let n = w.finish();
    assert_eq!(n, PEER_DATAGRAM_LEN_MAX);
    assert!(PeerDatagram::decode(&buf[..n]).is_ok());
    // One byte more does not fit, whatever the buffer.
    let data = vec![7u8; data.len() + 1];
    let mut w = PeerWriter::new(
        &mut buf,
        PeerHeader {
            cluster_id: 9,
            from: 4,
        },
    );
    let entry = PeerEntry {
        term: 2,
        data: &data,
    };
    assert_eq!(
        w.push_append(3, 2, 10, 2, 10, (1, 0), std::iter::once(entry)),
        Err(EncodeError::TooLong)
    );
    assert_eq!(w.finish(), 0);
}

#[test]
fn peer_writer_refuses_what_a_receiver_would_reject() {
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let tn = PeerMessage::TimeoutNow { term: 1 };
    let mut w = PeerWriter::new(
        &mut buf,
        PeerHeader {
            cluster_id: 0,
            from: 1,
        },
    );
    assert_eq!(w.push(0, &tn), Err(EncodeError::ZeroId));
    let mut w = PeerWriter::new(
        &mut buf,
        PeerHeader {
            cluster_id: 1,
            from: 1,
        },
    );
    assert_eq!(w.push(SHARDS_MAX as u16, &tn), Err(EncodeError::BadShard));
    let e = |term| PeerEntry { term, data: b"" };
    // Terms decrease; above the APPEND's term; index overflow.
    assert_eq!(
        w.push_append(0, 5, 0, 0, 0, (0, 0), [e(3), e(2)].into_iter()),
        Err(EncodeError::BadEntries)
    );
    assert_eq!(
        w.push_append(0, 5, 0, 0, 0, (0, 0), [e(6)].into_iter()),
        Err(EncodeError::BadEntries)
    );
    assert_eq!(
        w.push_append(0, 5, u64::MAX, 0, 0, (0, 0), [e(5)].into_iter()),
        Err(EncodeError::BadEntries)
    );
    assert_eq!(w.record_count(), 0);
    // A heartbeat through `push` with the empty entries.
    let hb = PeerMessage::Append {
        term: 5,
        prev_log_index: 3,
        prev_log_term: 4,
        leader_commit: 3,
        round: 8,
        transfer_to: None,
        entries: PeerEntries::empty(),
    };
    w.push(17, &hb).unwrap();
    let n = w.finish();
    let d = PeerDatagram::decode(&buf[..n]).unwrap();
    assert_eq!(d.records().collect::<Vec<_>>(), vec![(17, hb)]);
}

#[test]
fn snapshot_chunk_limits() {
    let header = PeerHeader {
        cluster_id: 9,
        from: 4,
    };
    let data = vec![0x5Au8; SNAPSHOT_CHUNK_MAX + 1];
    fn chunk(data: &[u8]) -> PeerMessage<'_> {
        PeerMessage::InstallSnapshot {
            term: 3,
            last_index: 100,
            last_term: 2,
            offset: 0,
            total_len: 5_000,
            round: 7,
            data,
        }
    }
    // A chunk of SNAPSHOT_CHUNK_MAX bytes fills an authenticated datagram exactly, trailer
    // included; one byte more never fits.
    let mut buf = [0u8; 2_000];
    let mut w = PeerWriter::with_trailer_room(&mut buf, header, AUTH_TRAILER_LEN);
    let full = chunk(&data[..SNAPSHOT_CHUNK_MAX]);
    assert_eq!(
        full.record_len(),
        PEER_DATAGRAM_LEN_MAX - HEADER_LEN - AUTH_TRAILER_LEN
    );
    w.push(4, &full).unwrap();
    assert_eq!(w.remaining(), 0);
    let n = w.finish();
    assert_eq!(n, PEER_DATAGRAM_LEN_MAX - AUTH_TRAILER_LEN);
    // Sealed (the `crypto` feature), it is the longest datagram and decodes back.
    #[cfg(feature = "crypto")]
    {
        let trailer = AuthTrailer {
            to: 5,
            incarnation: 1,
            peer_incarnation: 0,
            seq: 1,
            key_id: 0,
        };
        let key = ClusterKey::new(&[3; 32]);
        let n = key.seal(&mut buf, n, &trailer).unwrap();
        assert_eq!(n, PEER_DATAGRAM_LEN_MAX);
        let d = PeerDatagram::decode(&buf[..n]).unwrap();
        assert_eq!(d.records().collect::<Vec<_>>(), vec![(4, full)]);
        assert_eq!(
            d.auth,
            Some(AuthTrailer {
                key_id: key.id(),
                ..trailer
            })
        );
        assert!(key.verify(&buf[..n]));
    }
    let mut w = PeerWriter::with_trailer_room(&mut buf, header, AUTH_TRAILER_LEN);
    assert_eq!(w.push(4, &chunk(&data)), Err(EncodeError::TooLong));
    assert_eq!((w.len(), w.record_count()), (HEADER_LEN, 0));

    // Every chunk rule is refused by the writer, with nothing written.
    let ok = PeerMessage::InstallSnapshot {
        term: 3,
        last_index: 1,
        last_term: 3,
        offset: SNAPSHOT_LEN_MAX - 4,
        total_len: SNAPSHOT_LEN_MAX,
        round: 0,
        data: b"abcd",
    };
    let with = |f: &dyn Fn(&mut PeerMessage<'static>)| {
        let mut m = ok;
        f(&mut m);
        m
    };
    let bad = [
        with(&|m| {
            if let PeerMessage::InstallSnapshot { last_index, .. } = m {
                *last_index = 0;
            }
        }),
        with(&|m| {
            if let PeerMessage::InstallSnapshot { last_term, .. } = m {
                *last_term = 0;
            }
        }),
        with(&|m| {
            if let PeerMessage::InstallSnapshot { last_term, .. } = m {
                *last_term = 4;
            }
        }),
        with(&|m| {
            if let PeerMessage::InstallSnapshot { total_len, .. } = m {
                *total_len = SNAPSHOT_LEN_MAX + 1;
            }
        }),
        with(&|m| {
            if let PeerMessage::InstallSnapshot { offset, .. } = m {
                *offset = SNAPSHOT_LEN_MAX - 3;
            }
        }),
        with(&|m| {
            if let PeerMessage::InstallSnapshot { offset, .. } = m {
                *offset = u64::MAX - 1;
            }
        }),
    ];
    let mut w = PeerWriter::new(&mut buf, header);
    for m in &bad {
        assert_eq!(w.push(0, m), Err(EncodeError::BadSnapshotChunk), "{m:?}");
    }
    assert_eq!((w.len(), w.record_count()), (HEADER_LEN, 0));
    // The same values pass, and an empty snapshot (total_len 0) is a valid chunk too.
    w.push(0, &ok).unwrap();
    let empty = PeerMessage::InstallSnapshot {
        term: 1,
        last_index: 1,
        last_term: 1,
        offset: 0,
        total_len: 0,
        round: 0,
        data: b"",
    };
    w.push(1, &empty).unwrap();
    let reply = PeerMessage::InstallSnapshotReply {
        term: u64::MAX,
        last_index: 0,
        received: u64::MAX,
        round: 1,
        life: u64::MAX,
        replica: u64::MAX,
    };
    w.push(2, &reply).unwrap();
    let n = w.finish();
    let d = PeerDatagram::decode(&buf[..n]).unwrap();
    assert_eq!(
        d.records().collect::<Vec<_>>(),
        vec![(0, ok), (1, empty), (2, reply)]
    );
    assert_eq!(
        (
            ok.kind(),
            ok.term(),
            ok.body_len(),
            reply.kind(),
            reply.body_len()
        ),
        (
            PeerKind::InstallSnapshot,
            3,
            INSTALL_SNAPSHOT_FIXED_LEN + 4,
            PeerKind::InstallSnapshotReply,
            48
        )
    );
    assert_eq!(DecodeError::BadSnapshotChunk.reply_status(), None);
}

/// An iterator that yields different entries on each pass must not produce a bad datagram.
#[test]
fn push_append_survives_an_inconsistent_iterator() {
    #[derive(Clone)]
    struct Flaky<'a>(&'a std::cell::Cell<u32>, u32);
    impl<'a> Iterator for Flaky<'a> {
        type Item = PeerEntry<'static>;
        fn next(&mut self) -> Option<PeerEntry<'static>> {
            if self.1 == 0 {
                self.0.set(self.0.get() + 1);
            }
            self.1 += 1;
            // The second pass yields one entry more.
            (self.1 <= self.0.get()).then_some(PeerEntry {
                term: 1,
                data: b"xy",
            })
        }
    }
    let passes = std::cell::Cell::new(0);
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut w = PeerWriter::new(
        &mut buf,
        PeerHeader {
            cluster_id: 1,
            from: 2,
        },
    );
    assert_eq!(
        w.push_append(0, 1, 0, 0, 0, (0, 0), Flaky(&passes, 0)),
        Err(EncodeError::BadEntries)
    );
    assert_eq!((w.len(), w.record_count()), (32, 0));
}

#[test]
fn peer_datagrams_are_never_requests_or_replies() {
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut w = PeerWriter::new(
        &mut buf,
        PeerHeader {
            cluster_id: 1,
            from: 2,
        },
    );
    w.push(0, &PeerMessage::TimeoutNow { term: 1 }).unwrap();
    // Pad it so that the request decoder's minimum length is no excuse.
    let n = w.finish();
    let mut bytes = buf[..n].to_vec();
    bytes.resize(200, 0);
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnexpectedType));
    assert_eq!(Reply::decode(&bytes), Err(DecodeError::UnexpectedType));
    assert_eq!(DecodeError::UnexpectedType.reply_status(), None);
    let reply = Reply::bare(MessageType::Peer, 1, 1, 0, Status::Ok);
    assert_eq!(reply.encode(&mut buf), Err(EncodeError::WrongType));
}

#[test]
fn log_command_encode_refuses_what_decode_rejects() {
    let mut out = [0u8; LOG_COMMAND_LEN_MAX];
    let release = |resource: &'static [u8], client: &'static [u8]| LogCommand::Request {
        stamp: 1,
        session_id: 1,
        request_id: 1,
        attempt: 0,
        room_for_waiting: false,
        reply_to: SocketAddr::from(([127, 0, 0, 1], 9)),
        body: RequestBody::Release { resource, client },
    };
    let base = release(b"r", b"c");
    assert!(base.encode(&mut out).is_ok());
    let with = |f: &dyn Fn(&mut LogCommand<'static>)| {
        let mut c = base;
        f(&mut c);
        c.encode(&mut out.clone())
    };
    use LogCommand::Request as R;
    assert_eq!(
        with(&|c| if let R { session_id, .. } = c {
            *session_id = 0
        }),
        Err(EncodeError::ZeroId)
    );
    let mut buf = [0u8; LOG_COMMAND_LEN_MAX];
    assert_eq!(
        release(b"", b"c").encode(&mut buf),
        Err(EncodeError::BadIdLength)
    );
    assert_eq!(
        release(b"r", b"").encode(&mut buf),
        Err(EncodeError::BadIdLength)
    );
    // STATUS is a read, never logged (spec §8.7).
    assert_eq!(
        with(&|c| if let R { body, .. } = c {
            *body = RequestBody::Status { resource: b"r" }
        }),
        Err(EncodeError::WrongType)
    );
    assert_eq!(
        base.encode(&mut [0u8; 10]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(LogCommand::decode(&[]), Err(DecodeError::TooShort));
    // What the operation type cannot express (a RELEASE with a TTL or a wait, a CONFIGURE
    // naming a client, a logged STATUS) the decoder refuses in bytes. Offsets: spec §8.7.
    let n = base.encode(&mut buf).unwrap();
    let (op_at, wait_at, ttl_at) = (46, 47, 51);
    let refused = |at: usize, byte: u8| {
        let mut bytes = buf[..n].to_vec();
        bytes[at] = byte;
        LogCommand::decode(&bytes).map(|_| ())
    };
    assert_eq!(refused(ttl_at + 3, 5), Err(DecodeError::NonZeroField));
    assert_eq!(refused(wait_at + 3, 5), Err(DecodeError::NonZeroField));
    let configure = MessageType::Configure.to_wire();
    assert_eq!(refused(op_at, configure), Err(DecodeError::NonZeroField));
    let status = MessageType::Status.to_wire();
    assert_eq!(refused(op_at, status), Err(DecodeError::BadOp));
    // A RELEASE turned into a CANCEL_WAIT lacks the 16-byte target (spec §8.7).
    let cancel_wait = MessageType::CancelWait.to_wire();
    assert_eq!(refused(op_at, cancel_wait), Err(DecodeError::BadBodyLength));
    assert_eq!(
        LOG_COMMAND_LEN_MAX,
        LOG_REQUEST_FIXED_LEN + 2 * ID_LEN_MAX + LOG_REQUEST_TARGET_LEN
    );
}

/// CONFIG (spec §8.7): what decodes re-encodes byte for byte, and the encoder refuses the
/// members the decoder refuses (no voter, node id 0, a voter with replica id 0, a node
/// twice, more than the limit). A learner may name replica 0 ("not known yet").
#[test]
fn config_commands_encode_only_what_decodes() {
    // Node `n` with replica `n << 32 | n`, or the replica given.
    let member = |n: u64| ReplicaRef {
        node: n,
        replica: n << 32 | n,
    };
    let members = |ids: &[u64]| ids.iter().map(|&n| member(n)).collect::<Vec<_>>();
    let config = |voters: &[ReplicaRef], learners: &[ReplicaRef]| {
        let mut ids = [0u8; CONFIG_MEMBER_LEN * (CONFIG_MEMBERS_MAX + 1)];
        let (v, l) = ids.split_at_mut(CONFIG_MEMBER_LEN * voters.len());
        let command = LogCommand::Config {
            voters: Replicas::write(voters, v).unwrap(),
            learners: Replicas::write(learners, l).unwrap(),
        };
        let mut out = [0u8; LOG_COMMAND_LEN_MAX];
        let n = command.encode(&mut out)?;
        let decoded = LogCommand::decode(&out[..n]).expect("decodes");
        let LogCommand::Config {
            voters: dv,
            learners: dl,
        } = decoded
        else {
            panic!("not a CONFIG: {decoded:?}");
        };
        assert_eq!(dv.iter().collect::<Vec<_>>(), voters);
        assert_eq!(dl.iter().collect::<Vec<_>>(), learners);
        Ok::<usize, EncodeError>(n)
    };
    let unknown = |n: u64| ReplicaRef {
        node: n,
        replica: 0,
    };
    assert_eq!(config(&members(&[1, 2, 3]), &members(&[4])), Ok(67));
    assert_eq!(config(&members(&[1, 2, 3]), &[unknown(4)]), Ok(67));
    assert_eq!(config(&members(&[9]), &[]), Ok(19));
    assert_eq!(config(&[], &members(&[4])), Err(EncodeError::BadMembers));
    assert_eq!(config(&members(&[1, 0]), &[]), Err(EncodeError::BadMembers));
    assert_eq!(
        config(&[member(1), unknown(2)], &[]),
        Err(EncodeError::BadMembers)
    );
    assert_eq!(
        config(&members(&[1, 2]), &members(&[2])),
        Err(EncodeError::BadMembers)
    );
    assert_eq!(
        config(&members(&[1, 2]), &[unknown(2)]),
        Err(EncodeError::BadMembers)
    );
    let other_replica = ReplicaRef {
        node: 1,
        replica: 77,
    };
    assert_eq!(
        config(&[member(1), other_replica], &[]),
        Err(EncodeError::BadMembers)
    );
    assert_eq!(
        config(&members(&[1, 2, 1]), &[]),
        Err(EncodeError::BadMembers)
    );
    let max = members(&(1..=CONFIG_MEMBERS_MAX as u64).collect::<Vec<_>>());
    assert_eq!(
        config(&max, &[]),
        Ok(3 + CONFIG_MEMBER_LEN * CONFIG_MEMBERS_MAX)
    );
    let over = members(&(1..=CONFIG_MEMBERS_MAX as u64 + 1).collect::<Vec<_>>());
    assert_eq!(config(&over[..1], &over[1..]), Err(EncodeError::BadMembers));
}

// ---------------------------------------------------------------------------------------------
// SHARD_STATUS and SHARD_STATUS_REPLY (spec §4.7, §5.6).

fn role() -> impl Strategy<Value = ShardRole> {
    prop::sample::select(ShardRole::ALL.to_vec())
}

/// A consistent OK page: `shards_total`, `first_shard` and up to 26 entries numbered from it.
fn shard_page() -> impl Strategy<Value = (u64, u16, u16, Vec<ShardStatusEntry>)> {
    (1u16..=SHARDS_MAX as u16)
        .prop_flat_map(|total| (Just(total), 0..=total + 2))
        .prop_flat_map(|(total, first)| {
            let room = usize::from(total.saturating_sub(first)).min(SHARD_STATUS_ENTRIES_MAX);
            let entry = (
                role(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
            );
            (
                nonzero(),
                Just(total),
                Just(first),
                prop::collection::vec(entry, 0..=room),
            )
        })
        .prop_map(|(node_id, total, first, raw)| {
            let entries = raw
                .into_iter()
                .enumerate()
                .map(
                    |(i, (role, leader_id, term, commit_index, applied_index, held, waiters))| {
                        let entry = ShardStatusEntry {
                            shard: first + i as u16,
                            role,
                            leader_id,
                            term,
                            commit_index,
                            applied_index,
                            held,
                            waiters,
                        };
                        // A node that holds no replica says nothing else (spec §5.6).
                        if role == ShardRole::NoReplica {
                            ShardStatusEntry {
                                leader_id: 0,
                                term: 0,
                                commit_index: 0,
                                applied_index: 0,
                                held: 0,
                                waiters: 0,
                                ..entry
                            }
                        } else {
                            entry
                        }
                    },
                )
                .collect();
            (node_id, total, first, entries)
        })
}

fn page_reply(
    (node_id, total, first, entries): &(u64, u16, u16, Vec<ShardStatusEntry>),
) -> ShardStatusReply<'_> {
    ShardStatusReply {
        session_id: 3,
        request_id: 4,
        attempt: 1,
        status: Status::Ok,
        node_id: *node_id,
        shards_total: *total,
        first_shard: *first,
        entries: ShardStatusEntries::from_slice(entries),
    }
}

/// Whatever a shard-status decoder accepts re-encodes to the same bytes (replies: the same
/// bytes followed by zero padding).
fn assert_shard_status_canonical(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(req) = ShardStatusRequest::decode(bytes) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode_padded(&mut out, bytes.len()).unwrap();
        prop_assert_eq!(&out[..n], bytes);
    }
    if let Ok(reply) = ShardStatusReply::decode(bytes) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert_eq!(n, reply.encoded_len());
        prop_assert_eq!(&out[..n], &bytes[..n]);
        prop_assert!(bytes[n..].iter().all(|&b| b == 0));
        prop_assert_eq!(reply.entries.iter().count(), reply.entries.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn shard_status_requests_round_trip(
        session in nonzero(), request in nonzero(), attempt in any::<u16>(), first in any::<u16>(),
        len in (HEADER_LEN + SHARD_STATUS_BODY_LEN)..=DATAGRAM_LEN_MAX,
    ) {
        let req = ShardStatusRequest { session_id: session, request_id: request, attempt, first_shard: first };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        // As a client sends it: padded to the longest datagram.
        let n = req.encode(&mut out).unwrap();
        prop_assert_eq!(n, SHARD_STATUS_REQUEST_LEN);
        prop_assert_eq!(ShardStatusRequest::decode(&out[..n]).unwrap(), req);
        // Any padding a server may receive.
        let n = req.encode_padded(&mut out, len).unwrap();
        prop_assert_eq!(n, len);
        let back = ShardStatusRequest::decode(&out[..n]).unwrap();
        prop_assert_eq!(back, req);
        let mut again = [0u8; DATAGRAM_LEN_MAX];
        let m = back.encode_padded(&mut again, n).unwrap();
        prop_assert_eq!(&out[..n], &again[..m]);
        // The lock decoder does not read it: a single node answers UNSUPPORTED.
        let e = Request::decode(&out[..n]).unwrap_err();
        prop_assert_eq!(e, DecodeError::UnknownType);
        prop_assert_eq!(e.reply_status(), Some(Status::Unsupported));
    }

    #[test]
    fn shard_status_replies_round_trip(page in shard_page()) {
        let reply = page_reply(&page);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert_eq!(n, HEADER_LEN + SHARD_STATUS_REPLY_FIXED_LEN + SHARD_STATUS_ENTRY_LEN * page.3.len());
        let back = ShardStatusReply::decode(&out[..n]).unwrap();
        prop_assert_eq!(back, reply);
        prop_assert_eq!(back.entries.iter().collect::<Vec<_>>(), page.3.clone());
        let mut again = [0u8; DATAGRAM_LEN_MAX];
        let m = back.encode(&mut again).unwrap();
        prop_assert_eq!(&out[..n], &again[..m]);
        // The lock-reply decoder does not read it.
        prop_assert_eq!(Reply::decode(&out[..n]), Err(DecodeError::UnknownType));
    }

    /// No amplification (spec §2.2): a node fills a page with `entries_that_fit(request_len)`
    /// entries, and that reply is never longer than the request, whatever its length.
    #[test]
    fn shard_status_replies_never_exceed_requests(
        page in shard_page(), request_len in REQUEST_LEN_MIN..=DATAGRAM_LEN_MAX,
    ) {
        let fit = ShardStatusReply::entries_that_fit(request_len);
        let entries = &page.3[..page.3.len().min(fit)];
        let reply = ShardStatusReply { entries: ShardStatusEntries::from_slice(entries), ..page_reply(&page) };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert!(n <= request_len, "{} > {}", n, request_len);
        prop_assert!(fit <= SHARD_STATUS_ENTRIES_MAX);
    }

    #[test]
    fn shard_status_decoders_take_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1_400)) {
        assert_shard_status_canonical(&bytes)?;
    }

    /// Framed as SHARD_STATUS or its reply, so the body checks are reached.
    #[test]
    fn framed_shard_status_bytes_never_panic(
        reply in any::<bool>(), flags in prop::sample::select(vec![0u16, 2, 4, 8]),
        body_len in 0u16..1_200, rest in prop::collection::vec(any::<u8>(), 0..1_200),
    ) {
        let ty = if reply { 0x86 } else { 0x06 };
        let mut bytes = vec![0x55, 0x4C, 1, ty];
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&body_len.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&rest);
        assert_shard_status_canonical(&bytes)?;
    }

    /// One byte of a valid reply changed, or the reply cut short: an error or a canonical
    /// value, never a panic.
    #[test]
    fn mutated_shard_status_replies_never_panic(
        page in shard_page(), at in any::<prop::sample::Index>(), byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let reply = page_reply(&page);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        let mut bytes = out[..n].to_vec();
        bytes[at.index(n)] = byte;
        assert_shard_status_canonical(&bytes)?;
        let cut = cut.index(n);
        prop_assert!(ShardStatusReply::decode(&out[..cut]).is_err());
    }
}

#[test]
fn shard_status_decoders_keep_to_their_own_types() {
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let status = Request {
        session_id: 1,
        request_id: 2,
        attempt: 0,
        body: RequestBody::Status { resource: b"r" },
    };
    let n = status.encode(&mut out).unwrap();
    assert_eq!(
        ShardStatusRequest::decode(&out[..n]),
        Err(DecodeError::UnknownType)
    );
    let error = Reply::bare(MessageType::ErrorReply, 1, 2, 0, Status::Unsupported);
    let n = error.encode(&mut out).unwrap();
    assert_eq!(
        ShardStatusReply::decode(&out[..n]),
        Err(DecodeError::UnknownType)
    );
    // The lock-reply encoder refuses the type whose layout it does not write.
    let wrong = Reply::bare(MessageType::ShardStatusReply, 1, 2, 0, Status::Ok);
    assert_eq!(wrong.encode(&mut out), Err(EncodeError::WrongType));
    // Directions still hold: a SHARD_STATUS_REPLY is never a request, nor the reverse.
    let page = (5, 8, 0, Vec::new());
    let n = page_reply(&page).encode(&mut out).unwrap();
    assert_eq!(
        ShardStatusRequest::decode(&out[..n]),
        Err(DecodeError::UnexpectedType)
    );
    assert_eq!(Request::decode(&out[..n]), Err(DecodeError::UnexpectedType));
    assert_eq!(
        MessageType::ShardStatus.reply_type(),
        Some(MessageType::ShardStatusReply)
    );
}

#[test]
fn shard_status_encoder_refuses_inconsistent_pages() {
    let entry = |shard| ShardStatusEntry {
        shard,
        role: ShardRole::Leader,
        leader_id: 1,
        term: 1,
        commit_index: 1,
        applied_index: 1,
        held: 0,
        waiters: 0,
    };
    let entries = [entry(6), entry(7)];
    let base = ShardStatusReply {
        session_id: 1,
        request_id: 2,
        attempt: 0,
        status: Status::Ok,
        node_id: 1,
        shards_total: 8,
        first_shard: 6,
        entries: ShardStatusEntries::from_slice(&entries),
    };
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    assert_eq!(base.encode(&mut out), Ok(48 + 2 * 44));
    let bad = |r: ShardStatusReply<'_>| r.encode(&mut [0u8; DATAGRAM_LEN_MAX]);
    // Past the last shard, a zero or oversized total, a zero node id.
    for r in [
        ShardStatusReply {
            shards_total: 7,
            ..base
        },
        ShardStatusReply {
            shards_total: 0,
            first_shard: 0,
            entries: ShardStatusEntries::empty(),
            ..base
        },
        ShardStatusReply {
            shards_total: SHARDS_MAX as u16 + 1,
            ..base
        },
        ShardStatusReply { node_id: 0, ..base },
        // Entries not numbered from first_shard.
        ShardStatusReply {
            first_shard: 5,
            ..base
        },
        // A refusal carrying data.
        ShardStatusReply {
            status: Status::Overloaded,
            ..base
        },
    ] {
        assert_eq!(bad(r), Err(EncodeError::BadShardStatus), "{r:?}");
    }
    // A page past the end is empty and fine; so is a refusal with nothing in it.
    let empty = ShardStatusReply {
        first_shard: 100,
        entries: ShardStatusEntries::empty(),
        ..base
    };
    assert_eq!(bad(empty), Ok(48));
    let refusal = ShardStatusReply {
        status: Status::Overloaded,
        node_id: 0,
        shards_total: 0,
        first_shard: 0,
        entries: ShardStatusEntries::empty(),
        ..base
    };
    assert_eq!(bad(refusal), Ok(48));
    let many = [entry(0); SHARD_STATUS_ENTRIES_MAX + 1];
    let too_many = ShardStatusReply {
        shards_total: 100,
        first_shard: 0,
        entries: ShardStatusEntries::from_slice(&many),
        ..base
    };
    assert_eq!(bad(too_many), Err(EncodeError::TooLong));
    assert_eq!(
        base.encode(&mut [0u8; 100]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        ShardStatusReply::entries_that_fit(SHARD_STATUS_REQUEST_LEN),
        26
    );
    assert_eq!(ShardStatusReply::entries_that_fit(REQUEST_LEN_MIN), 0);
    assert_eq!(ShardStatusReply::entries_that_fit(48 + 44), 1);
    assert_eq!(ShardStatusReply::entries_that_fit(0), 0);
}

// ---------------------------------------------------------------------------------------------
// MEMBERS and MEMBERS_REPLY (spec §4.9, §5.8).

/// A consistent OK page: `first_id`, up to 31 members with increasing ids from it, `next_id`
/// past them (or 0), and a `members_total` at least their number.
fn members_page() -> impl Strategy<Value = (u64, u32, u64, u64, Vec<MemberEntry>)> {
    let entry = (1u64..1_000, any::<u64>(), swim_state(), swim_addr());
    (
        nonzero(),
        any::<u32>(),
        prop_oneof![Just(0u64), 1u64..1_000_000, Just(u64::MAX - 40_000)],
        prop::collection::vec(entry, 0..=MEMBERS_ENTRIES_MAX),
        prop_oneof![Just(0u64), 1u64..1_000],
    )
        .prop_map(|(node_id, extra, first_id, raw, gap)| {
            let mut id = first_id.max(1) - 1;
            let entries: Vec<MemberEntry> = raw
                .into_iter()
                .map(|(step, incarnation, state, addr)| {
                    id += step;
                    MemberEntry {
                        id,
                        incarnation,
                        state,
                        addr,
                    }
                })
                .collect();
            let next_id = if gap == 0 { 0 } else { id.max(first_id) + gap };
            let total = (entries.len() as u32).saturating_add(extra % 100);
            (node_id, total, first_id, next_id, entries)
        })
}

fn members_reply(
    (node_id, total, first_id, next_id, entries): &(u64, u32, u64, u64, Vec<MemberEntry>),
) -> MembersReply<'_> {
    MembersReply {
        session_id: 3,
        request_id: 4,
        attempt: 1,
        status: Status::Ok,
        node_id: *node_id,
        members_total: *total,
        first_id: *first_id,
        next_id: *next_id,
        entries: MemberEntries::from_slice(entries),
    }
}

/// Whatever a members decoder accepts re-encodes to the same bytes (replies: the same bytes
/// followed by zero padding).
fn assert_members_canonical(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(req) = MembersRequest::decode(bytes) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode_padded(&mut out, bytes.len()).unwrap();
        prop_assert_eq!(&out[..n], bytes);
    }
    if let Ok(reply) = MembersReply::decode(bytes) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert_eq!(n, reply.encoded_len());
        prop_assert_eq!(&out[..n], &bytes[..n]);
        prop_assert!(bytes[n..].iter().all(|&b| b == 0));
        prop_assert_eq!(reply.entries.iter().count(), reply.entries.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn members_requests_round_trip(
        session in nonzero(), request in nonzero(), attempt in any::<u16>(), first_id in any::<u64>(),
        len in (HEADER_LEN + MEMBERS_BODY_LEN)..=DATAGRAM_LEN_MAX,
    ) {
        let req = MembersRequest { session_id: session, request_id: request, attempt, first_id };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode(&mut out).unwrap();
        prop_assert_eq!(n, MEMBERS_REQUEST_LEN);
        prop_assert_eq!(MembersRequest::decode(&out[..n]).unwrap(), req);
        let n = req.encode_padded(&mut out, len).unwrap();
        prop_assert_eq!(n, len);
        prop_assert_eq!(MembersRequest::decode(&out[..n]).unwrap(), req);
        // Neither the lock decoder nor the other operators' decoders read it.
        prop_assert_eq!(Request::decode(&out[..n]), Err(DecodeError::UnknownType));
        prop_assert_eq!(ShardStatusRequest::decode(&out[..n]), Err(DecodeError::UnknownType));
    }

    #[test]
    fn members_replies_round_trip(page in members_page()) {
        let reply = members_reply(&page);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert_eq!(n, HEADER_LEN + MEMBERS_REPLY_FIXED_LEN + MEMBERS_ENTRY_LEN * page.4.len());
        let back = MembersReply::decode(&out[..n]).unwrap();
        prop_assert_eq!(back, reply);
        prop_assert_eq!(back.entries.iter().collect::<Vec<_>>(), page.4.clone());
        prop_assert_eq!(Reply::decode(&out[..n]), Err(DecodeError::UnknownType));
        prop_assert_eq!(ShardStatusReply::decode(&out[..n]), Err(DecodeError::UnknownType));
    }

    /// No amplification (spec §2.2): a page of `entries_that_fit(request_len)` entries is
    /// never longer than the request, whatever its length.
    #[test]
    fn members_replies_never_exceed_requests(
        page in members_page(), request_len in REQUEST_LEN_MIN..=DATAGRAM_LEN_MAX,
    ) {
        let fit = MembersReply::entries_that_fit(request_len);
        let entries = &page.4[..page.4.len().min(fit)];
        let reply = MembersReply { entries: MemberEntries::from_slice(entries), next_id: 0, ..members_reply(&page) };
        let n = reply.encode(&mut [0u8; DATAGRAM_LEN_MAX]).unwrap();
        prop_assert!(n <= request_len, "{} > {}", n, request_len);
    }

    #[test]
    fn members_decoders_take_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1_400)) {
        assert_members_canonical(&bytes)?;
    }

    /// Framed as MEMBERS or its reply, so the body checks are reached.
    #[test]
    fn framed_members_bytes_never_panic(
        reply in any::<bool>(), flags in prop::sample::select(vec![0u16, 2, 4, 8]),
        body_len in 0u16..1_200, rest in prop::collection::vec(any::<u8>(), 0..1_200),
    ) {
        let ty = if reply { 0x88 } else { 0x08 };
        let mut bytes = vec![0x55, 0x4C, 1, ty];
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&body_len.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&rest);
        assert_members_canonical(&bytes)?;
    }

    /// One byte of a valid reply changed, or the reply cut short: an error or a canonical
    /// value, never a panic.
    #[test]
    fn mutated_members_replies_never_panic(
        page in members_page(), at in any::<prop::sample::Index>(), byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let reply = members_reply(&page);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        let mut bytes = out[..n].to_vec();
        bytes[at.index(n)] = byte;
        assert_members_canonical(&bytes)?;
        prop_assert!(MembersReply::decode(&out[..cut.index(n)]).is_err());
    }
}

#[test]
fn members_encoder_refuses_inconsistent_pages() {
    let addr: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let entry = |id| MemberEntry {
        id,
        incarnation: 1,
        state: SwimState::Alive,
        addr,
    };
    let entries = [entry(5), entry(9)];
    let base = MembersReply {
        session_id: 1,
        request_id: 2,
        attempt: 0,
        status: Status::Ok,
        node_id: 5,
        members_total: 3,
        first_id: 4,
        next_id: 12,
        entries: MemberEntries::from_slice(&entries),
    };
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    assert_eq!(base.encode(&mut out), Ok(64 + 2 * 36));
    let bad = |r: MembersReply<'_>| r.encode(&mut [0u8; DATAGRAM_LEN_MAX]);
    let unordered = [entry(9), entry(5)];
    let repeated = [entry(5), entry(5)];
    let zero = [entry(0)];
    let max_then = [entry(u64::MAX)];
    for r in [
        MembersReply { node_id: 0, ..base },
        MembersReply {
            members_total: 1,
            ..base
        },
        MembersReply {
            first_id: 6,
            ..base
        },
        MembersReply { next_id: 9, ..base },
        MembersReply {
            entries: MemberEntries::from_slice(&unordered),
            ..base
        },
        MembersReply {
            entries: MemberEntries::from_slice(&repeated),
            ..base
        },
        MembersReply {
            first_id: 0,
            entries: MemberEntries::from_slice(&zero),
            next_id: 0,
            ..base
        },
        MembersReply {
            entries: MemberEntries::from_slice(&max_then),
            next_id: 1,
            ..base
        },
        MembersReply {
            status: Status::Overloaded,
            ..base
        },
    ] {
        assert_eq!(bad(r), Err(EncodeError::BadMembers), "{r:?}");
    }
    // The last possible id ends the table; an empty page may still point further on.
    let last = MembersReply {
        entries: MemberEntries::from_slice(&max_then),
        next_id: 0,
        ..base
    };
    assert_eq!(bad(last), Ok(64 + 36));
    let pointer = MembersReply {
        entries: MemberEntries::empty(),
        next_id: 4,
        ..base
    };
    assert_eq!(bad(pointer), Ok(64));
    let refusal = MembersReply {
        status: Status::Overloaded,
        node_id: 0,
        members_total: 0,
        first_id: 0,
        next_id: 0,
        entries: MemberEntries::empty(),
        ..base
    };
    assert_eq!(bad(refusal), Ok(64));
    let port0 = [MemberEntry {
        addr: "10.0.0.1:0".parse().unwrap(),
        ..entry(5)
    }];
    assert_eq!(
        bad(MembersReply {
            entries: MemberEntries::from_slice(&port0),
            ..base
        }),
        Err(EncodeError::BadAddress)
    );
    let many: Vec<MemberEntry> = (1..=MEMBERS_ENTRIES_MAX as u64 + 1).map(entry).collect();
    let too_many = MembersReply {
        members_total: 100,
        first_id: 0,
        next_id: 0,
        entries: MemberEntries::from_slice(&many),
        ..base
    };
    assert_eq!(bad(too_many), Err(EncodeError::TooLong));
    assert_eq!(
        base.encode(&mut [0u8; 100]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(MembersReply::entries_that_fit(MEMBERS_REQUEST_LEN), 31);
    assert_eq!(MembersReply::entries_that_fit(REQUEST_LEN_MIN), 0);
    assert_eq!(MembersReply::entries_that_fit(64 + 36), 1);
    assert_eq!(MembersReply::entries_that_fit(0), 0);
}

/// TERM_QUERY, TERM_REPLY and NO_STATE_REPLY (spec §8.5, rejoining without state): exact
/// bodies of 24 (8 of them reserved), 24 and 17 bytes, round trip through the writer and the
/// decoder.
#[test]
fn term_query_and_reply() {
    let q = PeerMessage::TermQuery { term: 0, nonce: 5 };
    let r = PeerMessage::TermReply {
        term: u64::MAX,
        last_index: 7,
        nonce: 5,
    };
    assert_eq!(
        (q.kind(), q.term(), q.body_len(), q.record_len()),
        (PeerKind::TermQuery, 0, 24, 30)
    );
    assert_eq!(
        (r.kind(), r.term(), r.body_len(), r.record_len()),
        (PeerKind::TermReply, u64::MAX, 24, 30)
    );
    assert_eq!(PeerKind::from_wire(11), Some(PeerKind::TermQuery));
    assert_eq!(PeerKind::from_wire(12), Some(PeerKind::TermReply));
    let e = PeerMessage::NoStateReply {
        term: 0,
        nonce: 5,
        new: true,
    };
    assert_eq!(
        (e.kind(), e.term(), e.body_len(), e.record_len()),
        (PeerKind::NoStateReply, 0, 17, 23)
    );
    assert_eq!(PeerKind::from_wire(13), Some(PeerKind::NoStateReply));
    // Kinds 14 to 18 are the SWIM records (spec §8.12); 19 is the first unassigned.
    assert_eq!(PeerKind::from_wire(14), Some(PeerKind::SwimPing));
    assert_eq!(PeerKind::from_wire(19), None);
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut w = PeerWriter::new(
        &mut buf,
        PeerHeader {
            cluster_id: 9,
            from: 4,
        },
    );
    w.push(0, &q).unwrap();
    w.push(SHARDS_MAX as u16 - 1, &r).unwrap();
    w.push(1, &e).unwrap();
    let n = w.finish();
    assert_eq!(n, 32 + 30 + 30 + 23);
    let d = PeerDatagram::decode(&buf[..n]).unwrap();
    assert_eq!(
        d.records().collect::<Vec<_>>(),
        vec![(0, q), (SHARDS_MAX as u16 - 1, r), (1, e)]
    );
}

/// The shortest record of each kind: every field zero, no entries, no snapshot data.
fn shortest(kind: PeerKind) -> PeerMessage<'static> {
    match kind {
        PeerKind::PreVote => PeerMessage::PreVote {
            term: 0,
            last_log_index: 0,
            last_log_term: 0,
        },
        PeerKind::PreVoteReply => PeerMessage::PreVoteReply {
            term: 0,
            granted: false,
            replica: 0,
        },
        PeerKind::Vote | PeerKind::TransferVote => PeerMessage::Vote {
            term: 0,
            last_log_index: 0,
            last_log_term: 0,
            transfer: kind == PeerKind::TransferVote,
        },
        PeerKind::VoteReply => PeerMessage::VoteReply {
            term: 0,
            granted: false,
            replica: 0,
        },
        PeerKind::Append => PeerMessage::Append {
            term: 0,
            prev_log_index: 0,
            prev_log_term: 0,
            leader_commit: 0,
            round: 0,
            transfer_to: None,
            entries: PeerEntries::empty(),
        },
        PeerKind::AppendReply => PeerMessage::AppendReply {
            term: 0,
            success: false,
            match_index: 0,
            round: 0,
            life: 0,
            replica: 0,
        },
        PeerKind::TimeoutNow => PeerMessage::TimeoutNow { term: 0 },
        PeerKind::InstallSnapshot => PeerMessage::InstallSnapshot {
            term: 1,
            last_index: 1,
            last_term: 1,
            offset: 0,
            total_len: 0,
            round: 0,
            data: &[],
        },
        PeerKind::InstallSnapshotReply => PeerMessage::InstallSnapshotReply {
            term: 0,
            last_index: 0,
            received: 0,
            round: 0,
            life: 0,
            replica: 0,
        },
        PeerKind::TermQuery => PeerMessage::TermQuery { term: 0, nonce: 0 },
        PeerKind::TermReply => PeerMessage::TermReply {
            term: 0,
            last_index: 0,
            nonce: 0,
        },
        PeerKind::NoStateReply => PeerMessage::NoStateReply {
            term: 0,
            nonce: 0,
            new: false,
        },
        PeerKind::SwimPing
        | PeerKind::SwimAck
        | PeerKind::SwimPingReq
        | PeerKind::SwimNack
        | PeerKind::SwimPushPull => unreachable!("not a Raft kind: shortest_swim"),
    }
}

/// The SWIM record of `kind` with no updates: an answer carries at most as many updates as
/// its question (spec §8.12), so comparing these compares every answer with its question.
fn shortest_swim(kind: PeerKind) -> SwimMessage<Vec<SwimUpdate>> {
    let addr: SocketAddr = "10.0.0.1:1".parse().unwrap();
    match kind {
        PeerKind::SwimPing => SwimMessage::Ping {
            seq: 0,
            target: 1,
            updates: vec![],
        },
        PeerKind::SwimAck => SwimMessage::Ack {
            seq: 0,
            target: 1,
            updates: vec![],
        },
        PeerKind::SwimPingReq => SwimMessage::PingReq {
            seq: 0,
            target: 1,
            target_addr: addr,
            updates: vec![],
        },
        PeerKind::SwimNack => SwimMessage::Nack { seq: 0 },
        PeerKind::SwimPushPull => SwimMessage::PushPull {
            reply: false,
            members: vec![],
        },
        _ => unreachable!("not a SWIM kind: shortest"),
    }
}

/// The shortest record of any kind, header included.
fn shortest_record_len(kind: PeerKind) -> usize {
    if kind.is_swim() {
        let m = shortest_swim(kind);
        assert_eq!(m.kind(), kind);
        m.record_len()
    } else {
        let m = shortest(kind);
        assert_eq!(m.kind(), kind);
        m.record_len()
    }
}

/// No peer answer is larger than its question (spec §8.3 rule 5): every record kind that is
/// answered is, at its shortest, at least as long as every kind that answers it, so a forged
/// datagram (where nothing authenticates peers) makes a node send no more bytes than it took.
/// Every kind is classified, so a new one cannot slip past.
#[test]
fn no_peer_answer_is_longer_than_its_question() {
    use PeerKind::*;
    let answered: &[(PeerKind, &[PeerKind])] = &[
        (PreVote, &[PreVoteReply]),
        (Vote, &[VoteReply]),
        (TransferVote, &[VoteReply]),
        (Append, &[AppendReply]),
        (InstallSnapshot, &[InstallSnapshotReply]),
        (TermQuery, &[TermReply, NoStateReply]),
        // Spec §8.12: an ACK carries no more updates than the PING or PING_REQ it answers.
        (SwimPing, &[SwimAck]),
        (SwimPingReq, &[SwimAck, SwimNack]),
    ];
    // Sent without being asked for (leadership transfer), and answering nothing; a
    // PUSH_PULL's answer goes to the member table's address, never to a source address
    // (spec §8.12).
    let unanswered = [TimeoutNow, SwimPushPull];
    for &kind in PeerKind::ALL {
        let is_question = answered.iter().any(|(q, _)| *q == kind);
        let is_answer = answered.iter().any(|(_, a)| a.contains(&kind));
        assert!(
            is_question || is_answer || unanswered.contains(&kind),
            "{kind:?} is neither a question, an answer nor listed as unanswered"
        );
    }
    for (question, answers) in answered {
        for answer in *answers {
            assert!(
                shortest_record_len(*question) >= shortest_record_len(*answer),
                "{} ({} bytes) is answered by {} ({} bytes)",
                question.name(),
                shortest_record_len(*question),
                answer.name(),
                shortest_record_len(*answer)
            );
        }
    }
}

proptest! {
    /// PEER_SETTINGS and NODE_SETTINGS(_REPLY) (spec §8.10, §4.8, §5.7): whatever decodes
    /// re-encodes to the same bytes, and arbitrary bytes never panic.
    #[test]
    fn settings_datagrams_are_canonical(bytes in prop::collection::vec(any::<u8>(), 0..1_400)) {
        if let Ok(p) = PeerSettings::decode(&bytes) {
            prop_assert_eq!(settings_reencode(&p, &bytes), bytes.clone());
        }
        if let Ok(r) = NodeSettingsReply::decode(&bytes) {
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = r.encode(&mut out).unwrap();
            prop_assert_eq!(&out[..n], &bytes[..n]);
        }
        let _ = NodeSettingsRequest::decode(&bytes);
    }

    #[test]
    fn settings_round_trip(
        cluster_id in nonzero(), from in nonzero(),
        values in prop::collection::vec((any::<u16>(), any::<u64>()), 0..=SETTINGS_ENTRIES_MAX),
    ) {
        let values: Vec<SettingValue> = values
            .into_iter()
            .map(|(setting, value)| SettingValue { setting, value })
            .collect();
        let p = PeerSettings {
            header: PeerHeader { cluster_id, from },
            auth: None,
            values: SettingValues::from_slice(&values),
        };
        let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
        let n = p.encode(&mut out).unwrap();
        prop_assert_eq!(n, 32 + 2 + 10 * values.len());
        prop_assert_eq!(PeerSettings::decode(&out[..n]).unwrap(), p);
        // A reply to a request of any length is never longer than the request (spec §2.2).
        let request_len = 76 + n % (DATAGRAM_LEN_MAX - 75);
        let fit = NodeSettingsReply::entries_that_fit(request_len).min(values.len());
        let reply = NodeSettingsReply {
            session_id: 1, request_id: 2, attempt: 3, status: Status::Ok,
            node_id: from, cluster_id,
            values: SettingValues::from_slice(&values[..fit]),
        };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let m = reply.encode(&mut out).unwrap();
        prop_assert!(m <= request_len);
        prop_assert_eq!(NodeSettingsReply::decode(&out[..m]).unwrap(), reply);
    }
}

// ---------------------------------------------------------------------------------------------
// Authenticated node-to-node datagrams (spec §8.11): sealing and verifying need the `crypto`
// feature.

#[cfg(feature = "crypto")]
fn trailer() -> impl Strategy<Value = AuthTrailer> {
    (nonzero(), nonzero(), any::<u64>(), nonzero(), any::<u32>()).prop_map(
        |(to, incarnation, peer_incarnation, seq, key_id)| AuthTrailer {
            to,
            incarnation,
            peer_incarnation,
            seq,
            key_id,
        },
    )
}

#[cfg(feature = "crypto")]
fn secret() -> impl Strategy<Value = [u8; CLUSTER_KEY_LEN]> {
    any::<[u8; CLUSTER_KEY_LEN]>()
}

/// A PEER datagram of the records that fit, built as a node with a key builds it (room kept
/// for the trailer), then sealed: (bytes, the records, the trailer as sealed).
#[cfg(feature = "crypto")]
fn sealed_peer(
    key: &ClusterKey,
    header: PeerHeader,
    msgs: &[(u16, Msg)],
    trailer: &AuthTrailer,
) -> (Vec<u8>, Vec<(u16, Msg)>) {
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut w = PeerWriter::with_trailer_room(&mut buf, header, AUTH_TRAILER_LEN);
    let mut pushed = Vec::new();
    for (shard, m) in msgs {
        match w.push(*shard, m) {
            Ok(()) => pushed.push((*shard, m.clone())),
            Err(EncodeError::TooLong) | Err(EncodeError::BufferTooSmall) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let n = w.finish();
    assert!(n > 0 && n + AUTH_TRAILER_LEN <= PEER_DATAGRAM_LEN_MAX);
    let sealed = key
        .seal(&mut buf, n, trailer)
        .expect("a finished datagram seals");
    (buf[..sealed].to_vec(), pushed)
}

#[cfg(feature = "crypto")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Seal, then decode: the records and the trailer come back (with the key's id), the MAC
    /// verifies with the key and with no other, and the datagram is canonical.
    #[test]
    fn sealed_peer_datagrams_decode_and_verify(
        s in secret(), header in peer_header(), t in trailer(),
        msgs in prop::collection::vec((shard(), peer_msg()), 1..30),
    ) {
        let key = ClusterKey::new(&s);
        let (bytes, pushed) = sealed_peer(&key, header, &msgs, &t);
        let d = PeerDatagram::decode(&bytes).unwrap();
        prop_assert_eq!(d.header, header);
        prop_assert_eq!(d.auth, Some(AuthTrailer { key_id: key.id(), ..t }));
        let back: Vec<_> = d.records().map(|(s, m)| (s, m.into_owned())).collect();
        prop_assert_eq!(&back, &pushed);
        prop_assert!(key.verify(&bytes));
        let mut other = s;
        other[0] ^= 1;
        prop_assert!(!ClusterKey::new(&other).verify(&bytes));
        prop_assert_eq!(reencode(&d, &bytes), bytes);
    }

    /// The same for PEER_SETTINGS, up to the most entries its encoder takes.
    #[test]
    fn sealed_peer_settings_decode_and_verify(
        s in secret(), header in peer_header(), t in trailer(),
        values in prop::collection::vec((any::<u16>(), any::<u64>()), 0..=SETTINGS_ENTRIES_MAX),
    ) {
        let key = ClusterKey::new(&s);
        let values: Vec<SettingValue> = values
            .into_iter()
            .map(|(setting, value)| SettingValue { setting, value })
            .collect();
        let p = PeerSettings { header, auth: None, values: SettingValues::from_slice(&values) };
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let n = p.encode(&mut buf).unwrap();
        let sealed = key.seal(&mut buf, n, &t).unwrap();
        let d = PeerSettings::decode(&buf[..sealed]).unwrap();
        prop_assert_eq!(d, PeerSettings { auth: Some(AuthTrailer { key_id: key.id(), ..t }), ..p });
        prop_assert!(key.verify(&buf[..sealed]));
        prop_assert_eq!(settings_reencode(&d, &buf[..sealed]), buf[..sealed].to_vec());
    }

    /// Any single changed byte of a sealed datagram (header, body, trailer or MAC) fails
    /// verify, and so does any shorter or longer datagram.
    #[test]
    fn any_changed_byte_of_a_sealed_datagram_fails_verify(
        s in secret(), header in peer_header(), t in trailer(),
        msgs in prop::collection::vec((shard(), peer_msg()), 1..8),
        at in any::<prop::sample::Index>(), xor in 1u8..=255,
        cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let key = ClusterKey::new(&s);
        let (bytes, _) = sealed_peer(&key, header, &msgs, &t);
        let mut changed = bytes.clone();
        changed[at.index(bytes.len())] ^= xor;
        prop_assert!(!key.verify(&changed));
        prop_assert!(!key.verify(&bytes[..cut.index(bytes.len())]));
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(!key.verify(&longer));
    }

    /// Decoding never panics on AUTH datagrams of any length: sealed ones whole, cut short or
    /// extended, with `body_len` left alone or set to what the length implies, and any bytes
    /// in a datagram with a PEER or PEER_SETTINGS header and AUTH set. Whatever decodes is
    /// canonical.
    #[test]
    fn auth_datagrams_of_any_length_never_panic(
        s in secret(), header in peer_header(), t in trailer(),
        msgs in prop::collection::vec((shard(), peer_msg()), 1..4),
        len in 0usize..1_500, whole in any::<bool>(), fill in prop::collection::vec(any::<u8>(), 1_500),
        fix_body_len in any::<bool>(), settings in any::<bool>(),
    ) {
        let key = ClusterKey::new(&s);
        let (sealed, _) = sealed_peer(&key, header, &msgs, &t);
        let len = if whole { sealed.len() } else { len };
        let mut framed = vec![0x55, 0x4C, 1, if settings { 0x41 } else { 0x40 }, 0, 1, 0, 0];
        framed.extend_from_slice(&header.cluster_id.to_be_bytes());
        framed.extend_from_slice(&header.from.to_be_bytes());
        framed.extend_from_slice(&[0; 8]);
        for start in [sealed, framed] {
            // Cut to `len`, or extend to it with random bytes.
            let mut bytes = start;
            let keep = bytes.len().min(len);
            bytes.truncate(keep);
            bytes.extend_from_slice(&fill[keep..len]);
            if fix_body_len && bytes.len() >= 32 + AUTH_TRAILER_LEN {
                let body_len = (bytes.len() - 32 - AUTH_TRAILER_LEN) as u16;
                bytes[6..8].copy_from_slice(&body_len.to_be_bytes());
            }
            if let Ok(d) = PeerDatagram::decode(&bytes) {
                prop_assert_eq!(reencode(&d, &bytes), bytes.clone());
            }
            if let Ok(p) = PeerSettings::decode(&bytes) {
                prop_assert_eq!(settings_reencode(&p, &bytes), bytes.clone());
            }
            let _ = key.verify(&bytes);
            let _ = Request::decode(&bytes);
            let _ = Reply::decode(&bytes);
        }
    }
}

/// Re-encodes a PEER_SETTINGS decoded from `bytes`: what a canonical datagram must equal.
fn settings_reencode(p: &PeerSettings<'_>, bytes: &[u8]) -> Vec<u8> {
    let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
    let n = p.encode(&mut out).expect("a decoded PEER_SETTINGS encodes");
    with_trailer(out[..n].to_vec(), p.auth, bytes)
}

// ---- SWIM membership records (spec §8.12) ----

type Swim = SwimMessage<Vec<SwimUpdate>>;

/// Addresses the wire carries exactly: IPv4, or IPv6 without flow label and scope id; any
/// port but 0.
fn swim_addr() -> impl Strategy<Value = SocketAddr> {
    (socket_addr(), 1u16..).prop_map(|(a, port)| SocketAddr::new(a.ip(), port))
}

fn swim_state() -> impl Strategy<Value = SwimState> {
    prop_oneof![
        Just(SwimState::Alive),
        Just(SwimState::Suspect),
        Just(SwimState::Dead),
        Just(SwimState::Left)
    ]
}

/// A valid update: non-zero id, `from` non-zero exactly for a suspicion.
fn swim_update() -> impl Strategy<Value = SwimUpdate> {
    (
        nonzero(),
        swim_addr(),
        any::<u64>(),
        swim_state(),
        nonzero(),
    )
        .prop_map(|(id, addr, incarnation, state, from)| SwimUpdate {
            id,
            addr,
            incarnation,
            state,
            from: if state == SwimState::Suspect { from } else { 0 },
        })
}

fn swim_msg_from(
    update: BoxedStrategy<SwimUpdate>,
    target: BoxedStrategy<u64>,
    addr: BoxedStrategy<SocketAddr>,
    gossip_max: usize,
    members_max: usize,
) -> impl Strategy<Value = Swim> {
    let gossip = prop::collection::vec(update.clone(), 0..=gossip_max);
    prop_oneof![
        (any::<u32>(), target.clone(), gossip.clone()).prop_map(|(seq, target, updates)| {
            Swim::Ping {
                seq,
                target,
                updates,
            }
        }),
        (any::<u32>(), target.clone(), gossip.clone()).prop_map(|(seq, target, updates)| {
            Swim::Ack {
                seq,
                target,
                updates,
            }
        }),
        (any::<u32>(), target, addr, gossip).prop_map(|(seq, target, target_addr, updates)| {
            Swim::PingReq {
                seq,
                target,
                target_addr,
                updates,
            }
        }),
        any::<u32>().prop_map(|seq| Swim::Nack { seq }),
        (
            any::<bool>(),
            prop::collection::vec(update, 0..=members_max)
        )
            .prop_map(|(reply, members)| Swim::PushPull { reply, members }),
    ]
}

/// A message every receiver accepts.
fn swim_msg() -> impl Strategy<Value = Swim> {
    swim_msg_from(
        swim_update().boxed(),
        nonzero().boxed(),
        swim_addr().boxed(),
        UPDATES_PER_MESSAGE_MAX,
        PUSH_PULL_MEMBERS_MAX,
    )
}

/// A message a faulty node might send: zero ids and targets, port 0, `from` on the wrong
/// states, a few updates too many.
fn loose_swim_msg() -> impl Strategy<Value = Swim> {
    let addr = || {
        (socket_addr(), prop_oneof![4 => 1u16.., 1 => Just(0u16)])
            .prop_map(|(a, port)| SocketAddr::new(a.ip(), port))
    };
    let update = (
        prop_oneof![4 => nonzero(), 1 => Just(0u64)],
        addr(),
        any::<u64>(),
        swim_state(),
        prop_oneof![Just(0u64), nonzero()],
    )
        .prop_map(|(id, addr, incarnation, state, from)| SwimUpdate {
            id,
            addr,
            incarnation,
            state,
            from,
        });
    swim_msg_from(
        update.boxed(),
        prop_oneof![4 => nonzero(), 1 => Just(0u64)].boxed(),
        addr().boxed(),
        UPDATES_PER_MESSAGE_MAX + 2,
        PUSH_PULL_MEMBERS_MAX + 2,
    )
}

/// The body of `m` as spec §8.12 draws it, written here without any of the codec's checks.
fn loose_swim_body(m: &Swim) -> (PeerKind, Vec<u8>) {
    fn addr(b: &mut Vec<u8>, a: &SocketAddr) {
        match a.ip() {
            std::net::IpAddr::V4(v4) => {
                b.push(4);
                b.extend_from_slice(&v4.octets());
                b.extend_from_slice(&[0; 12]);
            }
            std::net::IpAddr::V6(v6) => {
                b.push(6);
                b.extend_from_slice(&v6.octets());
            }
        }
        b.extend_from_slice(&a.port().to_be_bytes());
    }
    fn updates(b: &mut Vec<u8>, us: &[SwimUpdate]) {
        for u in us {
            b.extend_from_slice(&u.id.to_be_bytes());
            b.extend_from_slice(&u.incarnation.to_be_bytes());
            b.push(u.state as u8);
            addr(b, &u.addr);
            b.extend_from_slice(&u.from.to_be_bytes());
        }
    }
    let mut b = Vec::new();
    let kind = match m {
        Swim::Ping {
            seq,
            target,
            updates: us,
        }
        | Swim::Ack {
            seq,
            target,
            updates: us,
        } => {
            b.extend_from_slice(&seq.to_be_bytes());
            b.extend_from_slice(&target.to_be_bytes());
            b.push(us.len() as u8);
            updates(&mut b, us);
            if matches!(m, Swim::Ping { .. }) {
                PeerKind::SwimPing
            } else {
                PeerKind::SwimAck
            }
        }
        Swim::PingReq {
            seq,
            target,
            target_addr,
            updates: us,
        } => {
            b.extend_from_slice(&seq.to_be_bytes());
            b.extend_from_slice(&target.to_be_bytes());
            addr(&mut b, target_addr);
            b.push(us.len() as u8);
            updates(&mut b, us);
            PeerKind::SwimPingReq
        }
        Swim::Nack { seq } => {
            b.extend_from_slice(&seq.to_be_bytes());
            PeerKind::SwimNack
        }
        Swim::PushPull { reply, members } => {
            b.push(*reply as u8);
            b.extend_from_slice(&(members.len() as u16).to_be_bytes());
            updates(&mut b, members);
            PeerKind::SwimPushPull
        }
    };
    (kind, b)
}

/// The PEER datagram of cluster 7 from node 3 carrying `m` alone in record shard `shard`.
fn loose_swim_datagram(shard: u16, m: &Swim) -> Vec<u8> {
    let (kind, body) = loose_swim_body(m);
    let mut bytes = vec![0x55, 0x4C, 1, 0x40, 0, 0, 0, 0];
    bytes.extend_from_slice(&7u64.to_be_bytes());
    bytes.extend_from_slice(&3u64.to_be_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&shard.to_be_bytes());
    bytes.extend_from_slice(&[kind.to_wire(), 0]);
    bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&body);
    let body_len = (bytes.len() - 32) as u16;
    bytes[6..8].copy_from_slice(&body_len.to_be_bytes());
    bytes
}

/// One record of a mixed datagram.
#[derive(Clone, Debug, PartialEq)]
enum AnyRecord {
    Raft(u16, Msg),
    Swim(Swim),
}

fn any_record() -> impl Strategy<Value = AnyRecord> {
    prop_oneof![
        (shard(), peer_msg()).prop_map(|(s, m)| AnyRecord::Raft(s, m)),
        swim_msg().prop_map(AnyRecord::Swim),
    ]
}

fn swim_decoded(bytes: &[u8]) -> Result<Vec<Swim>, DecodeError> {
    PeerDatagram::decode(bytes).map(|d| d.swim_records().map(|m| m.into_owned()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Any message encodes, then decodes to itself, beside Raft records in any order; its
    /// record is as long as spec §8.12 says, and the datagram is canonical.
    #[test]
    fn swim_records_round_trip(header in peer_header(), records in prop::collection::vec(any_record(), 1..8)) {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut buf, header);
        let mut pushed = Vec::new();
        for r in &records {
            let len = w.len();
            let res = match r {
                AnyRecord::Raft(s, m) => w.push(*s, m),
                AnyRecord::Swim(m) => w.push_swim(m),
            };
            match res {
                Ok(()) => {
                    if let AnyRecord::Swim(m) = r {
                        let updates = match m {
                            Swim::PushPull { members, .. } => members.len(),
                            _ => m.gossip().map_or(0, Vec::len),
                        };
                        let fixed = match m {
                            Swim::Ping { .. } | Swim::Ack { .. } => 13,
                            Swim::PingReq { .. } => 32,
                            Swim::Nack { .. } => 4,
                            Swim::PushPull { .. } => 3,
                        };
                        prop_assert_eq!(w.len() - len, 6 + fixed + 44 * updates);
                        prop_assert_eq!(m.record_len(), 6 + fixed + 44 * updates);
                    }
                    pushed.push(r.clone());
                }
                Err(EncodeError::TooLong) => {}
                Err(e) => panic!("{e}: {r:?}"),
            }
        }
        let n = w.finish();
        prop_assume!(n > 0);
        let d = PeerDatagram::decode(&buf[..n]).unwrap();
        let back: Vec<AnyRecord> = d
            .all_records()
            .map(|r| match r {
                PeerRecord::Raft { shard, msg } => AnyRecord::Raft(shard, msg.into_owned()),
                PeerRecord::Swim(m) => AnyRecord::Swim(m.into_owned()),
            })
            .collect();
        prop_assert_eq!(&back, &pushed);
        prop_assert_eq!(d.record_count(), pushed.len());
        let swim = pushed.iter().filter(|r| matches!(r, AnyRecord::Swim(_))).count();
        prop_assert_eq!(d.swim_records().count(), swim);
        prop_assert_eq!(d.records().count(), pushed.len() - swim);
        prop_assert_eq!(reencode(&d, &buf[..n]), buf[..n].to_vec());
    }

    /// The writer and the decoder keep one set of rules (spec §8.12): what the writer takes
    /// is the bytes the spec draws; what it refuses, sent anyway by a faulty node, the decoder
    /// rejects with the matching error; and a SWIM record outside shard 0 is rejected.
    #[test]
    fn decoding_rejects_what_swim_encoding_refuses(
        m in loose_swim_msg(),
        shard in prop_oneof![8 => Just(0u16), 1 => 1u16..],
    ) {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut buf, PeerHeader { cluster_id: 7, from: 3 });
        let pushed = w.push_swim(&m);
        let n = w.finish();
        let loose = loose_swim_datagram(shard, &m);
        let decoded = swim_decoded(&loose);
        if loose.len() > PEER_DATAGRAM_LEN_MAX {
            // More updates than a datagram holds: the decoder stops at its length.
            prop_assert_eq!(decoded, Err(DecodeError::TooLong));
            prop_assert_eq!(pushed, Err(EncodeError::TooManyUpdates));
            return Ok(());
        }
        if shard != 0 {
            prop_assert_eq!(decoded, Err(DecodeError::BadShard));
            return Ok(());
        }
        match pushed {
            Ok(()) => {
                prop_assert_eq!(&buf[..n], &loose[..]);
                prop_assert_eq!(decoded, Ok(vec![m]));
            }
            Err(e) => {
                let expected = match e {
                    EncodeError::TooManyUpdates => DecodeError::TooManyUpdates,
                    EncodeError::ZeroId => DecodeError::ZeroId,
                    EncodeError::BadAddress => DecodeError::BadAddress,
                    EncodeError::BadUpdate => DecodeError::BadUpdate,
                    other => panic!("{m:?} refused with {other:?}"),
                };
                prop_assert_eq!(decoded, Err(expected));
            }
        }
    }

    /// A SWIM datagram with one byte changed and any cut never panics the decoder; what
    /// still decodes is canonical.
    #[test]
    fn mutated_swim_datagrams_never_panic(
        header in peer_header(),
        records in prop::collection::vec(any_record(), 1..5),
        at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut buf, header);
        for r in &records {
            let _ = match r {
                AnyRecord::Raft(s, m) => w.push(*s, m),
                AnyRecord::Swim(m) => w.push_swim(m),
            };
        }
        let n = w.finish();
        prop_assume!(n > 0);
        let mut bytes = buf[..n].to_vec();
        bytes[at.index(n)] = byte;
        if let Ok(d) = PeerDatagram::decode(&bytes) {
            prop_assert_eq!(reencode(&d, &bytes), bytes.clone());
        }
        let cut = cut.index(n);
        prop_assert!(PeerDatagram::decode(&buf[..cut]).is_err());
    }
}

/// The limits of spec §8.12 and §9: the fullest message of each kind fits an authenticated
/// datagram alone; one update more is refused and rejected; an address the wire cannot carry
/// exactly is refused.
#[test]
fn swim_limits() {
    let u = SwimUpdate {
        id: 5,
        addr: "10.0.0.5:7005".parse().unwrap(),
        incarnation: 1,
        state: SwimState::Alive,
        from: 0,
    };
    let header = PeerHeader {
        cluster_id: 1,
        from: 2,
    };
    let full = [
        Swim::PingReq {
            seq: 1,
            target: 9,
            target_addr: u.addr,
            updates: vec![u; UPDATES_PER_MESSAGE_MAX],
        },
        Swim::PushPull {
            reply: true,
            members: vec![u; PUSH_PULL_MEMBERS_MAX],
        },
    ];
    for m in &full {
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::with_trailer_room(&mut buf, header, AUTH_TRAILER_LEN);
        w.push_swim(m).unwrap();
        assert!(m.body_len() <= SWIM_MESSAGE_LEN_MAX);
        assert!(w.finish() + AUTH_TRAILER_LEN <= PEER_DATAGRAM_LEN_MAX);
        // One more: refused by the writer; the decoder rejects the same bytes.
        let more = m.clone().map_updates(|mut v| {
            v.push(u);
            v
        });
        let mut w = PeerWriter::new(&mut buf, header);
        assert_eq!(w.push_swim(&more), Err(EncodeError::TooManyUpdates));
        assert_eq!(w.record_count(), 0);
        assert_eq!(
            swim_decoded(&loose_swim_datagram(0, &more)),
            Err(DecodeError::TooManyUpdates)
        );
    }
    // An IPv6 flow label or scope id has no place on the wire: refused, not dropped.
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut w = PeerWriter::new(&mut buf, header);
    for v6 in [
        std::net::SocketAddrV6::new("fd00::1".parse().unwrap(), 7000, 1, 0),
        std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 7000, 0, 3),
    ] {
        let ping_req = Swim::PingReq {
            seq: 1,
            target: 9,
            target_addr: v6.into(),
            updates: vec![],
        };
        assert_eq!(w.push_swim(&ping_req), Err(EncodeError::BadAddress));
        let ping = Swim::Ping {
            seq: 1,
            target: 9,
            updates: vec![SwimUpdate {
                addr: v6.into(),
                ..u
            }],
        };
        assert_eq!(w.push_swim(&ping), Err(EncodeError::BadAddress));
    }
    assert_eq!(w.finish(), 0);
    // A list that yields another number of updates than it counts is refused, and nothing
    // is written (a `Vec` or a decoded view never does this).
    struct Miscounted(Vec<SwimUpdate>, usize);
    impl UpdateList for Miscounted {
        type Iter<'s> = std::iter::Copied<std::slice::Iter<'s, SwimUpdate>>;
        fn swim_updates(&self) -> Self::Iter<'_> {
            self.0.iter().copied()
        }
        fn count(&self) -> usize {
            self.1
        }
    }
    let mut w = PeerWriter::new(&mut buf, header);
    for (have, say) in [(1, 2), (2, 1)] {
        let ping = SwimMessage::Ping {
            seq: 1,
            target: 9,
            updates: Miscounted(vec![u; have], say),
        };
        assert_eq!(w.push_swim(&ping), Err(EncodeError::BadUpdate));
    }
    assert_eq!(w.record_count(), 0);
    assert_eq!(w.finish(), 0);
}

// ---------------------------------------------------------------------------------------------
// REMOVE and REMOVE_REPLY (spec §4.10, §5.9).

/// A consistent REMOVE_REPLY: an outcome with a state it allows, an incarnation that is 0
/// exactly when the member is unknown.
fn remove_reply() -> impl Strategy<Value = RemoveReply> {
    (
        nonzero(),
        nonzero(),
        any::<u16>(),
        prop::sample::select(RemoveOutcome::ALL.to_vec()),
        any::<bool>(),
        nonzero(),
        nonzero(),
        nonzero(),
    )
        .prop_map(
            |(session, request, attempt, outcome, dead, node_id, member_id, incarnation)| {
                let state = match outcome {
                    RemoveOutcome::Removed | RemoveOutcome::AlreadyRemoved => SwimState::Left,
                    RemoveOutcome::Alive | RemoveOutcome::UnknownMember => SwimState::Alive,
                    RemoveOutcome::OtherIncarnation if dead => SwimState::Dead,
                    RemoveOutcome::OtherIncarnation => SwimState::Suspect,
                };
                let unknown = outcome == RemoveOutcome::UnknownMember;
                RemoveReply {
                    session_id: session,
                    request_id: request,
                    attempt,
                    status: Status::Ok,
                    outcome: Some(outcome),
                    state,
                    node_id,
                    member_id,
                    incarnation: if unknown { 0 } else { incarnation },
                }
            },
        )
}

/// Whatever a REMOVE decoder accepts re-encodes to the same bytes: a request with the key its
/// MAC verifies with (up to the MAC otherwise), a reply followed by zero padding.
#[cfg(feature = "crypto")]
fn assert_remove_canonical(bytes: &[u8], key: &ClusterKey) -> Result<(), TestCaseError> {
    if let Ok(req) = RemoveRequest::decode(bytes) {
        prop_assert_eq!(bytes.len(), REMOVE_REQUEST_LEN);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode(&mut out, key).unwrap();
        prop_assert_eq!(n, bytes.len());
        let mac_at = n - AUTH_MAC_LEN;
        let key_id = remove_field::KEY_ID.start + HEADER_LEN;
        // All but the key id and the MAC, which only the sender's key remakes.
        prop_assert_eq!(&out[..key_id], &bytes[..key_id]);
        prop_assert_eq!(&out[key_id + 4..mac_at], &bytes[key_id + 4..mac_at]);
        if req.key_id == key.id() {
            prop_assert_eq!(key.verify_admin(bytes), out[..n] == bytes[..]);
        }
    }
    if let Ok(reply) = RemoveReply::decode(bytes) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert_eq!(n, REMOVE_REPLY_LEN);
        prop_assert_eq!(&out[..n], &bytes[..n]);
        prop_assert!(bytes[n..].iter().all(|&b| b == 0));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[cfg(feature = "crypto")]
    #[test]
    fn remove_requests_round_trip_and_verify(
        session in nonzero(), request in nonzero(), attempt in any::<u16>(),
        member_id in nonzero(), incarnation in nonzero(), secret in any::<[u8; 32]>(),
    ) {
        let key = ClusterKey::new(&secret);
        let req = RemoveRequest { session_id: session, request_id: request, attempt, member_id, incarnation, key_id: key.id() };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode(&mut out, &key).unwrap();
        prop_assert_eq!(n, REMOVE_REQUEST_LEN);
        prop_assert_eq!(RemoveRequest::decode(&out[..n]).unwrap(), req);
        prop_assert!(key.verify_admin(&out[..n]));
        // Not a peer MAC (spec §8.11.3's labels differ), and no other decoder reads it.
        prop_assert!(!key.verify(&out[..n]));
        prop_assert_eq!(Request::decode(&out[..n]), Err(DecodeError::UnknownType));
        prop_assert_eq!(MembersRequest::decode(&out[..n]), Err(DecodeError::UnknownType));
    }

    /// No amplification (spec §2.2): every reply is shorter than every request.
    #[test]
    fn remove_replies_round_trip_within_the_request(reply in remove_reply()) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert!(n <= REMOVE_REQUEST_LEN);
        prop_assert_eq!(RemoveReply::decode(&out[..n]).unwrap(), reply);
        prop_assert_eq!(Reply::decode(&out[..n]), Err(DecodeError::UnknownType));
        prop_assert_eq!(MembersReply::decode(&out[..n]), Err(DecodeError::UnknownType));
    }

    #[cfg(feature = "crypto")]
    #[test]
    fn remove_decoders_take_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1_400)) {
        assert_remove_canonical(&bytes, &ClusterKey::new(&[7; 32]))?;
    }

    /// Framed as REMOVE or its reply, so the body checks are reached.
    #[cfg(feature = "crypto")]
    #[test]
    fn framed_remove_bytes_never_panic(
        reply in any::<bool>(), flags in prop::sample::select(vec![0u16, 2, 4, 8]),
        body_len in prop_oneof![Just(32u16), Just(44), 0u16..100],
        rest in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let ty = if reply { 0x89 } else { 0x09 };
        let mut bytes = vec![0x55, 0x4C, 1, ty];
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&body_len.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&rest);
        assert_remove_canonical(&bytes, &ClusterKey::new(&[7; 32]))?;
    }

    /// One byte of a valid request or reply changed, or it cut short: an error or a
    /// canonical value, never a panic; a changed request never verifies.
    #[cfg(feature = "crypto")]
    #[test]
    fn mutated_removes_never_panic_or_verify(
        reply in remove_reply(), at in any::<prop::sample::Index>(), byte in any::<u8>(),
        cut in any::<prop::sample::Index>(), member_id in nonzero(), incarnation in nonzero(),
    ) {
        let key = ClusterKey::new(&[7; 32]);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        let mut bytes = out[..n].to_vec();
        bytes[at.index(n)] = byte;
        assert_remove_canonical(&bytes, &key)?;
        prop_assert!(RemoveReply::decode(&out[..cut.index(n)]).is_err());
        let req = RemoveRequest { session_id: 1, request_id: 2, attempt: 0, member_id, incarnation, key_id: 0 };
        let n = req.encode(&mut out, &key).unwrap();
        let mut bytes = out[..n].to_vec();
        let i = at.index(n);
        let changed = bytes[i] != byte;
        bytes[i] = byte;
        assert_remove_canonical(&bytes, &key)?;
        prop_assert_eq!(key.verify_admin(&bytes), !changed);
        prop_assert!(RemoveRequest::decode(&out[..cut.index(n)]).is_err());
    }
}
