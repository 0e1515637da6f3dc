//! The codec's decoders under hostile bytes, shared by the cargo-fuzz targets (`fuzz/`, which
//! includes this file by path) and the bounded mutation pass that `cargo test` runs
//! (`protocol/tests/mutations.rs`, and the udplock crate's `tests/decoders`).
//!
//! One function per decoder family feeds its input to every decoder of the family and checks
//! the contract of protocol/src/lib.rs: no panic, and whatever decodes re-encodes to the same
//! bytes (canonical form). An authenticated node-to-node datagram (spec §8.11) re-encodes to
//! the same bytes up to its MAC, which only a key can remake: its body re-encodes, and its
//! flags and trailer fields compare equal. None of these decoders allocates (the crate has no
//! allocator), so the allocation bound holds by construction.
//!
//! Also here: the seeds (every `hex` of spec/vectors, by family) and [`Mutator`], the
//! deterministic mutation engine of the bounded pass.

// Each includer uses its own part of this file.
#![allow(dead_code)]

use udplock_protocol::header::HeaderIds;
use udplock_protocol::{
    reply_is_sealed, AuthTrailer, ClientKey, ClusterKey, Flags, LogCommand, MembersReply,
    MembersRequest, NodeSettingsReply, NodeSettingsRequest, PeerDatagram, PeerRecord, PeerSettings,
    PeerWriter, RemoveReply, RemoveRequest, Reply, Request, ShardStatusReply, ShardStatusRequest,
    AUTH_MAC_LEN, AUTH_TRAILER_LEN, CLIENT_AUTH_TRAILER_LEN, DATAGRAM_LEN_MAX, LOG_COMMAND_LEN_MAX,
    PEER_DATAGRAM_LEN_MAX,
};

/// The key the checks verify and seal with: any fixed key does (a fuzzer cannot guess a MAC;
/// the checks are that verifying never panics and that a re-sealed REMOVE verifies).
const FUZZ_KEY: [u8; 32] = [7; 32];

/// Client datagrams: requests, replies and the admin requests and replies a client or an
/// operator's tool exchanges with a node (spec §2–§5).
pub fn client(data: &[u8]) {
    let _ = HeaderIds::peek(data);
    if let Ok((req, token)) = Request::decode_with_token(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded_with_token(&mut out, data.len(), token.as_ref())
            .expect("a decoded request encodes");
        assert_eq!(&out[..n], data, "decoded request is not canonical");
    }
    // Client authentication (spec §7.1.10): a sealed request or reply is canonical up to its
    // trailer, which only the sender's key remakes; re-sealed with the fuzzer's key, it
    // verifies with that key.
    let client_key = ClientKey::new(FUZZ_KEY);
    let _ = (
        client_key.verify_request(data),
        client_key.verify_reply(data),
    );
    let _ = reply_is_sealed(data);
    if let Ok((req, token, auth)) = Request::decode_authenticated(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = match auth {
            None => req.encode_padded_with_token(&mut out, data.len(), token.as_ref()),
            Some(_) => req.encode_padded_sealed(&mut out, data.len(), token.as_ref(), &client_key),
        }
        .expect("a decoded request encodes");
        assert_eq!(n, data.len(), "decoded request has another length");
        let trailer = if auth.is_some() {
            assert!(client_key.verify_request(&out[..n]));
            CLIENT_AUTH_TRAILER_LEN
        } else {
            0
        };
        assert_eq!(
            &out[..n - trailer],
            &data[..n - trailer],
            "decoded request is not canonical"
        );
    }
    if let Ok(reply) = Reply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        if reply.flags.contains(Flags::AUTH) {
            let n = reply
                .encode_sealed(&mut out, Some(&client_key))
                .expect("a decoded sealed reply encodes");
            assert!(client_key.verify_reply(&out[..n]));
            let body_end = n - CLIENT_AUTH_TRAILER_LEN;
            let data_end = data.len() - CLIENT_AUTH_TRAILER_LEN;
            assert_padded(&out[..body_end], &data[..data_end], "sealed reply");
        } else {
            let n = reply.encode(&mut out).expect("a decoded reply encodes");
            assert_padded(&out[..n], data, "reply");
            // Sealed in place, it verifies, and is what encode_sealed writes (spec §7.2.6).
            if reply.msg_type != udplock_protocol::MessageType::ErrorReply {
                let sealed = client_key
                    .seal_reply(&mut out, n)
                    .expect("a lock reply seals");
                assert!(client_key.verify_reply(&out[..sealed]));
                let mut again = [0u8; DATAGRAM_LEN_MAX];
                let m = reply.encode_sealed(&mut again, Some(&client_key)).unwrap();
                assert_eq!(&again[..m], &out[..sealed], "sealed two ways");
            }
        }
    }
    if let Ok(req) = ShardStatusRequest::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded(&mut out, data.len())
            .expect("a decoded SHARD_STATUS encodes");
        assert_eq!(&out[..n], data, "decoded SHARD_STATUS is not canonical");
    }
    if let Ok(reply) = ShardStatusReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply
            .encode(&mut out)
            .expect("a decoded SHARD_STATUS_REPLY encodes");
        assert_padded(&out[..n], data, "SHARD_STATUS_REPLY");
    }
    if let Ok(req) = MembersRequest::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded(&mut out, data.len())
            .expect("a decoded MEMBERS encodes");
        assert_eq!(&out[..n], data, "decoded MEMBERS is not canonical");
    }
    if let Ok(reply) = MembersReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply
            .encode(&mut out)
            .expect("a decoded MEMBERS_REPLY encodes");
        assert_padded(&out[..n], data, "MEMBERS_REPLY");
    }
    if let Ok(req) = NodeSettingsRequest::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded(&mut out, data.len())
            .expect("a decoded NODE_SETTINGS encodes");
        assert_eq!(&out[..n], data, "decoded NODE_SETTINGS is not canonical");
    }
    if let Ok(reply) = NodeSettingsReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply
            .encode(&mut out)
            .expect("a decoded NODE_SETTINGS_REPLY encodes");
        assert_padded(&out[..n], data, "NODE_SETTINGS_REPLY");
    }
    // REMOVE (spec §4.10): canonical up to the key id and the MAC, which only the sender's key
    // remakes; re-encoded with the fuzzer's key, it verifies with that key.
    let key = ClusterKey::new(&FUZZ_KEY);
    let _ = key.verify_admin(data);
    if let Ok(req) = RemoveRequest::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode(&mut out, &key)
            .expect("a decoded REMOVE encodes");
        assert_eq!(n, data.len(), "decoded REMOVE has another length");
        assert_eq!(&out[..48], &data[..48], "decoded REMOVE is not canonical");
        assert_eq!(
            &out[52..60],
            &data[52..60],
            "decoded REMOVE is not canonical"
        );
        assert!(key.verify_admin(&out[..n]));
    }
    if let Ok(reply) = RemoveReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply
            .encode(&mut out)
            .expect("a decoded REMOVE_REPLY encodes");
        assert_padded(&out[..n], data, "REMOVE_REPLY");
    }
}

/// Node-to-node datagrams (spec §8): PEER with its Raft and SWIM records, PEER_SETTINGS, and
/// the authentication trailer of both (spec §8.11).
pub fn peer(data: &[u8]) {
    let _ = HeaderIds::peek(data);
    let _ = ClusterKey::new(&FUZZ_KEY).verify(data);
    if let Ok(d) = PeerDatagram::decode(data) {
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
        assert_eq!(w.record_count(), d.record_count());
        let n = w.finish();
        assert_same_node_datagram(&out[..n], d.auth, data, "PEER datagram");
    }
    if let Ok(p) = PeerSettings::decode(data) {
        let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
        let n = p.encode(&mut out).expect("decoded PEER_SETTINGS encodes");
        assert_same_node_datagram(&out[..n], p.auth, data, "PEER_SETTINGS");
    }
}

/// A replicated log command (spec §8.4): what a leader proposes and every replica applies.
pub fn log_command(data: &[u8]) {
    if let Ok(cmd) = LogCommand::decode(data) {
        let mut out = [0u8; LOG_COMMAND_LEN_MAX];
        let n = cmd.encode(&mut out).expect("a decoded log command encodes");
        assert_eq!(&out[..n], data, "decoded log command is not canonical");
    }
}

/// A reply re-encodes to `data` up to its padding, which is zeros.
fn assert_padded(encoded: &[u8], data: &[u8], what: &str) {
    let n = encoded.len();
    assert_eq!(encoded, &data[..n], "decoded {what} is not canonical");
    assert!(
        data[n..].iter().all(|&b| b == 0),
        "{what}: padding not zero"
    );
}

/// `plain` (an unauthenticated re-encoding of `data`'s header and body) and `auth` (the
/// trailer the decoder read from `data`) are `data`, but for the MAC.
fn assert_same_node_datagram(plain: &[u8], auth: Option<AuthTrailer>, data: &[u8], what: &str) {
    let Some(t) = auth else {
        assert_eq!(plain, data, "decoded {what} is not canonical");
        return;
    };
    let n = plain.len();
    assert_eq!(data.len(), n + AUTH_TRAILER_LEN, "{what}: trailer length");
    let flags = u16::from_be_bytes([plain[4], plain[5]]) | Flags::AUTH.bits();
    assert_eq!(&data[4..6], &flags.to_be_bytes(), "{what}: flags");
    assert_eq!(&data[..4], &plain[..4], "{what}: header is not canonical");
    assert_eq!(
        &data[6..n],
        &plain[6..],
        "{what}: header or body is not canonical"
    );
    let mut fields = [0u8; AUTH_TRAILER_LEN - AUTH_MAC_LEN];
    for (i, v) in [t.to, t.incarnation, t.peer_incarnation, t.seq]
        .iter()
        .enumerate()
    {
        fields[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    fields[32..36].copy_from_slice(&t.key_id.to_be_bytes());
    assert_eq!(
        &data[n..n + fields.len()],
        &fields,
        "{what}: trailer is not canonical"
    );
}

// ---------------------------------------------------------------------------------------
// Seeds: the spec's vectors.

/// The vector files, by the family whose decoders they feed. settings.txt holds both
/// NODE_SETTINGS (client) and PEER_SETTINGS (peer) records; each family gets it.
pub const CLIENT_VECTORS: &[&str] = &[
    include_str!("../../../spec/vectors/requests.txt"),
    include_str!("../../../spec/vectors/replies.txt"),
    include_str!("../../../spec/vectors/invalid.txt"),
    include_str!("../../../spec/vectors/members.txt"),
    include_str!("../../../spec/vectors/remove.txt"),
    include_str!("../../../spec/vectors/shard-status.txt"),
    include_str!("../../../spec/vectors/settings.txt"),
];
pub const PEER_VECTORS: &[&str] = &[
    include_str!("../../../spec/vectors/peer.txt"),
    include_str!("../../../spec/vectors/swim.txt"),
    include_str!("../../../spec/vectors/auth.txt"),
    include_str!("../../../spec/vectors/settings.txt"),
];
pub const LOG_VECTORS: &[&str] = &[include_str!("../../../spec/vectors/commands.txt")];

/// Every `hex = ...` value of the vector files `texts` (valid and invalid records alike: an
/// invalid one sits next to the decoder's edge cases), as bytes.
pub fn vector_seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for text in texts {
        let mut hex: Option<String> = None;
        for raw in text.lines() {
            let line = raw.split('#').next().unwrap_or("");
            if let Some(h) = hex.as_mut() {
                if raw.starts_with(char::is_whitespace) && !line.trim().is_empty() {
                    h.push_str(line.trim());
                    continue;
                }
                seeds.push(from_hex(&hex.take().expect("collecting")));
            }
            if let Some(value) = line.trim().strip_prefix("hex =") {
                hex = Some(value.trim().to_string());
            }
        }
        seeds.extend(hex.map(|h| from_hex(&h)));
    }
    assert!(!seeds.is_empty(), "no vector found");
    seeds
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex: {text}");
    digits
        .chunks(2)
        .map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).expect("hex digit"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The mutation engine of the bounded pass.

/// Deterministic mutations of seeds, as a fuzzer's first stage makes them (bit flips, byte
/// and integer overwrites with edge values, truncations, extensions, splices of two seeds,
/// cut or repeated ranges, random bytes): a fixed seed gives the same inputs on every run,
/// so a failure names the input number that reproduces it.
pub struct Mutator {
    state: u64,
}

/// Values an integer field is most often wrong by: zero, one, all ones, the sign bit, and
/// lengths around the datagram limits.
const EDGES: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    1_400,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    u64::MAX / 2,
    u64::MAX - 1,
    u64::MAX,
];

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator { state: seed }
    }

    /// SplitMix64 (Steele, Lea, Flood 2014).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn edge(&mut self) -> u64 {
        if self.below(4) == 0 {
            self.next_u64() >> self.below(64)
        } else {
            EDGES[self.below(EDGES.len())]
        }
    }

    /// One input: a seed with one to four mutations stacked, at most `len_max` bytes.
    pub fn mutate(&mut self, seeds: &[Vec<u8>], len_max: usize) -> Vec<u8> {
        let mut data = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(4) {
            self.mutate_once(seeds, &mut data);
        }
        data.truncate(len_max);
        data
    }

    fn mutate_once(&mut self, seeds: &[Vec<u8>], data: &mut Vec<u8>) {
        let len = data.len();
        match self.below(10) {
            // Flip a bit.
            0 | 1 if len > 0 => {
                let bit = self.below(len * 8);
                data[bit / 8] ^= 1 << (bit % 8);
            }
            // A byte set to an edge value or a random one.
            2 if len > 0 => {
                let at = self.below(len);
                data[at] = self.edge() as u8;
            }
            // An integer field (2, 4 or 8 bytes, big-endian) set to an edge value.
            3 if len > 0 => {
                let width = [2, 4, 8][self.below(3)];
                let at = self.below(len);
                let value = self.edge().to_be_bytes();
                let end = (at + width).min(len);
                data[at..end].copy_from_slice(&value[8 - width..8 - width + end - at]);
            }
            // Truncated.
            4 => data.truncate(self.below(len + 1)),
            // Extended by zeros or random bytes.
            5 => {
                let more = 1 + self.below(64);
                let random = self.below(2) == 0;
                for _ in 0..more {
                    let b = if random { self.next_u64() as u8 } else { 0 };
                    data.push(b);
                }
            }
            // A splice: a prefix of this input, a suffix of another seed.
            6 => {
                let other = &seeds[self.below(seeds.len())];
                let cut = self.below(len + 1);
                let from = self.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // A range cut out.
            7 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below((len - at).min(64));
                data.drain(at..at + n);
            }
            // A range repeated.
            8 if len > 0 => {
                let at = self.below(len);
                let n = 1 + self.below((len - at).min(64));
                let copy = data[at..at + n].to_vec();
                let to = self.below(len + 1);
                data.splice(to..to, copy);
            }
            // Random bytes of a random length.
            _ => {
                let n = self.below(if len > 0 { 2 * len } else { 128 });
                data.clear();
                data.extend((0..n).map(|_| self.next_u64() as u8));
            }
        }
    }
}

/// Runs `check` on `count` mutations of `seeds` (each at most `len_max` bytes) made from
/// `seed`, and on every seed itself first. A panic names the input that caused it.
pub fn mutation_pass(
    name: &str,
    seed: u64,
    seeds: &[Vec<u8>],
    count: usize,
    len_max: usize,
    mut check: impl FnMut(&[u8]),
) {
    for s in seeds {
        check(s);
    }
    let mut m = Mutator::new(seed);
    for i in 0..count {
        let input = m.mutate(seeds, len_max);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(panic) = result {
            panic!(
                "{name}: mutation {i} of seed {seed:#x} panicked on {input:02x?}: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            );
        }
    }
}
