//! Property tests of HOLDS and HOLDS_REPLY (spec §4.13, §5.10): every valid request and page
//! round-trips byte for byte, what decodes is canonical (re-encoding gives the same bytes),
//! no byte sequence panics a decoder, and a page the encoder accepts keeps the decoder's
//! consistency rules. Needs no crypto feature.

use proptest::prelude::*;
use udplock_protocol::*;

fn id() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..=ID_LEN_MAX)
}

/// A consistent OK page: (shards, shard, cursor, next_cursor, entries as (token, holds,
/// lease, waiters, resource, client)).
type Page = (
    u16,
    u16,
    u64,
    u64,
    Vec<(u64, u32, u32, u32, Vec<u8>, Vec<u8>)>,
);

fn page() -> impl Strategy<Value = Page> {
    (1..=SHARDS_MAX as u16, any::<u64>(), 0..4usize)
        .prop_flat_map(|(shards, cursor_seed, n)| {
            let cursor = cursor_seed >> 2; // room above it for tokens
            (
                Just(shards),
                0..shards,
                Just(cursor),
                prop::collection::btree_set(cursor.max(1)..cursor.max(1) + 1_000_000, n),
                prop::collection::vec((1..=u32::MAX, any::<u32>(), any::<u32>(), id(), id()), n),
                prop::option::of(1..1_000u64),
            )
        })
        .prop_map(|(shards, shard, cursor, tokens, fields, next_gap)| {
            let last = tokens.iter().next_back().copied().unwrap_or(cursor);
            let next = next_gap.map_or(0, |gap| last.max(cursor) + gap);
            let entries = tokens
                .into_iter()
                .zip(fields)
                .map(|(t, (h, l, w, r, c))| (t, h, l, w, r, c))
                .collect();
            (shards, shard, cursor, next, entries)
        })
}

fn entries_of(p: &Page) -> Vec<HoldEntry<'_>> {
    p.4.iter()
        .map(|(t, h, l, w, r, c)| HoldEntry {
            fencing_token: *t,
            hold_count: *h,
            lease_ms: *l,
            waiter_count: *w,
            resource: r,
            client: c,
        })
        .collect()
}

fn reply<'a>(p: &Page, entries: &'a [HoldEntry<'a>]) -> HoldsReply<'a> {
    HoldsReply {
        session_id: 7,
        request_id: 9,
        attempt: 2,
        status: Status::Ok,
        hint: Hint::None,
        shard: p.1,
        shards: p.0,
        cursor: p.2,
        next_cursor: p.3,
        entries: HoldEntries::from_slice(entries),
    }
}

/// Whatever decodes re-encodes to the same bytes.
fn assert_canonical(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(req) = HoldsRequest::decode(bytes) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode_padded(&mut out, bytes.len()).unwrap();
        prop_assert_eq!(&out[..n], bytes);
    }
    if let Ok(reply) = HoldsReply::decode(bytes) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).unwrap();
        prop_assert_eq!(n, reply.encoded_len());
        prop_assert_eq!(&out[..n], bytes);
        prop_assert_eq!(reply.entries.iter().count(), reply.entries.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn requests_round_trip(
        shard in any::<u16>(),
        cursor in any::<u64>(),
        prefix in prop::collection::vec(any::<u8>(), 0..=HOLDS_PREFIX_LEN_MAX),
        extra in 0..1_200usize,
        attempt in any::<u16>(),
    ) {
        let req = HoldsRequest { session_id: 1, request_id: 2, attempt, shard, cursor, prefix: &prefix };
        let min = HEADER_LEN + HOLDS_FIXED_LEN + prefix.len();
        let len = (min + extra).min(DATAGRAM_LEN_MAX);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode_padded(&mut out, len).unwrap();
        prop_assert_eq!(n, len);
        prop_assert_eq!(HoldsRequest::decode(&out[..n]), Ok(req));
        // The lock-request decoder does not read it: an older server answers UNSUPPORTED.
        prop_assert_eq!(Request::decode(&out[..n]), Err(DecodeError::UnknownType));
        // The client's form is padded to HOLDS_REQUEST_LEN.
        prop_assert_eq!(req.encode(&mut out).unwrap(), HOLDS_REQUEST_LEN);
    }

    #[test]
    fn pages_round_trip(p in page()) {
        let entries = entries_of(&p);
        let r = reply(&p, &entries);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        match r.encode(&mut out) {
            Ok(n) => {
                prop_assert_eq!(n, r.encoded_len());
                let decoded = HoldsReply::decode(&out[..n]).unwrap();
                prop_assert_eq!(decoded, r);
                assert_canonical(&out[..n])?;
            }
            // Only a page too long for one datagram is refused.
            Err(e) => {
                prop_assert_eq!(e, EncodeError::TooLong);
                prop_assert!(r.encoded_len() > DATAGRAM_LEN_MAX);
            }
        }
    }

    #[test]
    fn mutated_pages_never_panic_and_stay_canonical(
        p in page(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let entries = entries_of(&p);
        let r = reply(&p, &entries);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let Ok(n) = r.encode(&mut out) else { return Ok(()) };
        let mut bytes = out[..n].to_vec();
        let i = at.index(n);
        bytes[i] = byte;
        assert_canonical(&bytes)?;
        bytes.truncate(cut.index(n + 1));
        assert_canonical(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        flags in 0u16..16,
        body_len in 0u16..1_300,
        rest in prop::collection::vec(any::<u8>(), 0..1_200),
        reply_type in any::<bool>(),
    ) {
        let mut bytes = vec![0x55, 0x4c, 1, if reply_type { 0x8c } else { 0x0c }];
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&body_len.to_be_bytes());
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend_from_slice(&9u64.to_be_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&rest);
        bytes.truncate(DATAGRAM_LEN_MAX + 1);
        assert_canonical(&bytes)?;
    }
}

#[test]
fn encode_refuses_pages_the_decoder_would_reject() {
    let e = |t, h, r: &'static [u8], c: &'static [u8]| HoldEntry {
        fencing_token: t,
        hold_count: h,
        lease_ms: 1,
        waiter_count: 0,
        resource: r,
        client: c,
    };
    let ok = HoldsReply {
        session_id: 1,
        request_id: 1,
        attempt: 0,
        status: Status::Ok,
        hint: Hint::None,
        shard: 0,
        shards: 1,
        cursor: 5,
        next_cursor: 0,
        entries: HoldEntries::empty(),
    };
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    assert_eq!(ok.encode(&mut out), Ok(76));
    let bad = |r: HoldsReply<'_>| r.encode(&mut [0u8; DATAGRAM_LEN_MAX]);
    let below = [e(4, 1, b"r", b"c")];
    let unordered = [e(9, 1, b"r", b"c"), e(8, 1, b"r", b"c")];
    let zero_holds = [e(6, 0, b"r", b"c")];
    let empty_id = [e(6, 1, b"", b"c")];
    for entries in [&below[..], &unordered, &zero_holds, &empty_id] {
        let r = HoldsReply {
            entries: HoldEntries::from_slice(entries),
            ..ok
        };
        assert_eq!(bad(r), Err(EncodeError::BadHolds), "{entries:?}");
    }
    let listed = [e(6, 1, b"r", b"c")];
    let stuck = HoldsReply {
        entries: HoldEntries::from_slice(&listed),
        next_cursor: 6,
        ..ok
    };
    assert_eq!(bad(stuck), Err(EncodeError::BadHolds));
    assert_eq!(
        bad(HoldsReply { shard: 1, ..ok }),
        Err(EncodeError::BadHolds)
    );
    assert_eq!(
        bad(HoldsReply { shards: 0, ..ok }),
        Err(EncodeError::BadHolds)
    );
    assert_eq!(
        bad(HoldsReply {
            hint: Hint::RetryAfter { ms: 1 },
            ..ok
        }),
        Err(EncodeError::BadHolds)
    );
    assert_eq!(
        bad(HoldsReply {
            status: Status::NotLeader,
            ..ok
        }),
        Err(EncodeError::BadHolds),
        "a refusal echoing shard and cursor"
    );
    let long = vec![b'x'; 255];
    let long: &'static [u8] = Box::leak(long.into_boxed_slice());
    let three = [
        e(6, 1, long, long),
        e(7, 1, long, long),
        e(8, 1, long, long),
    ];
    assert_eq!(
        bad(HoldsReply {
            entries: HoldEntries::from_slice(&three),
            ..ok
        }),
        Err(EncodeError::TooLong)
    );
    let prefix = [b'p'; 256];
    let req = HoldsRequest {
        session_id: 1,
        request_id: 1,
        attempt: 0,
        shard: 0,
        cursor: 0,
        prefix: &prefix,
    };
    assert_eq!(req.encode(&mut out), Err(EncodeError::BadIdLength));
}
