//! Property tests of the codec: any byte sequence decodes to a value or an error (never a
//! panic), every valid message round-trips byte for byte, and every accepted datagram is in
//! canonical form (re-encoding it gives the same bytes).

use proptest::prelude::*;
use std::net::SocketAddr;
use udplock_protocol::header::HeaderIds;
use udplock_protocol::*;

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
            .filter(|t| !t.is_request())
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
        if let Ok(req) = Request::decode(&bytes) {
            // Whatever decodes is canonical: re-encoding at the same length gives the same bytes.
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            let n = req.encode_padded(&mut out, bytes.len()).unwrap();
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
