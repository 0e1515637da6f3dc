//! The golden test vectors of spec/vectors/ (spec Appendix A and B): every valid datagram decodes to
//! exactly the field values written beside it, and encoding those values gives the same bytes;
//! every invalid one fails with the decode error it names. The same holds for PEER datagrams
//! and replicated log commands; the shard-hash vectors give FNV-1a 64 values computed outside
//! the crate. SHARD_STATUS and its reply (shard-status.txt) likewise. Authenticated datagrams
//! (auth.txt, spec §8.11) also verify, or not, with the key they name, their MAC is the one
//! the spec's formula gives, and sealing their fields with that key gives the same bytes.

#[cfg(feature = "crypto")]
use hmac::{Hmac, Mac};
#[cfg(feature = "crypto")]
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use udplock_protocol::*;

mod common;
use common::{numbered, Msg};

const VECTORS: &[(&str, &str)] = &[
    (
        "requests.txt",
        include_str!("../../spec/vectors/requests.txt"),
    ),
    (
        "replies.txt",
        include_str!("../../spec/vectors/replies.txt"),
    ),
    (
        "invalid.txt",
        include_str!("../../spec/vectors/invalid.txt"),
    ),
    ("peer.txt", include_str!("../../spec/vectors/peer.txt")),
    ("swim.txt", include_str!("../../spec/vectors/swim.txt")),
    (
        "commands.txt",
        include_str!("../../spec/vectors/commands.txt"),
    ),
    (
        "shard-status.txt",
        include_str!("../../spec/vectors/shard-status.txt"),
    ),
    (
        "settings.txt",
        include_str!("../../spec/vectors/settings.txt"),
    ),
    ("auth.txt", include_str!("../../spec/vectors/auth.txt")),
    (
        "members.txt",
        include_str!("../../spec/vectors/members.txt"),
    ),
    ("remove.txt", include_str!("../../spec/vectors/remove.txt")),
    ("holds.txt", include_str!("../../spec/vectors/holds.txt")),
    (
        "client-auth.txt",
        include_str!("../../spec/vectors/client-auth.txt"),
    ),
    ("load.txt", include_str!("../../spec/vectors/load.txt")),
];

/// One `[name]` record: its keys and values, in file order.
struct Record {
    file: &'static str,
    name: String,
    fields: BTreeMap<String, String>,
}

impl Record {
    fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("{}: [{}] has no `{key}`", self.file, self.name))
    }
    fn opt(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
    fn num(&self, key: &str) -> u64 {
        parse_num(self.get(key)).unwrap_or_else(|| panic!("[{}] {key}: not a number", self.name))
    }
    fn num_or(&self, key: &str, default: u64) -> u64 {
        self.opt(key).map_or(default, |_| self.num(key))
    }
    fn bytes(&self, key: &str) -> Vec<u8> {
        parse_bytes(self.get(key))
    }
    fn hex(&self) -> Vec<u8> {
        let hex: String = self
            .get("hex")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        assert!(
            hex.len() % 2 == 0,
            "[{}] odd number of hex digits",
            self.name
        );
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
            .collect()
    }
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_bytes(s: &str) -> Vec<u8> {
    if let Some(h) = s.strip_prefix("hex:") {
        let h: String = h.chars().filter(|c| !c.is_whitespace()).collect();
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex id"))
            .collect()
    } else {
        s.trim_matches('"').as_bytes().to_vec()
    }
}

fn strip_comment(line: &str) -> &str {
    // A `#` starts a comment unless it is inside a quoted value.
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn records() -> Vec<Record> {
    VECTORS
        .iter()
        .flat_map(|&(file, text)| parse_records(file, text))
        .collect()
}

fn parse_records(file: &'static str, text: &'static str) -> Vec<Record> {
    let mut out = Vec::new();
    {
        let mut current: Option<Record> = None;
        let mut last_key = String::new();
        for raw in text.lines() {
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(name) = line
                .trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
            {
                out.extend(current.take());
                current = Some(Record {
                    file,
                    name: name.to_string(),
                    fields: BTreeMap::new(),
                });
                continue;
            }
            let rec = current
                .as_mut()
                .unwrap_or_else(|| panic!("{file}: field before any [record]"));
            if raw.starts_with(char::is_whitespace) && last_key == "hex" {
                rec.fields.get_mut("hex").unwrap().push_str(line.trim());
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{file}: [{}] bad line {raw:?}", rec.name));
            last_key = k.trim().to_string();
            rec.fields.insert(last_key.clone(), v.trim().to_string());
        }
        out.extend(current);
    }
    out
}

fn msg_type(name: &str) -> MessageType {
    *MessageType::ALL
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

/// A vector's `tokens` (a KEEPALIVE's, spec §4.11): comma-separated numbers, in order.
fn parse_tokens(r: &Record) -> Vec<u64> {
    r.get("tokens")
        .split(',')
        .map(|token| parse_num(token.trim()).expect("a token"))
        .collect()
}

fn check_request(r: &Record) {
    let bytes = r.hex();
    let msg = msg_type(r.get("type"));
    let resource = if msg == MessageType::Keepalive {
        Vec::new()
    } else {
        r.bytes("resource")
    };
    let client = r.opt("client").map(parse_bytes).unwrap_or_default();
    let num32 = |k: &str| r.num(k) as u32;
    let mut token_bytes = [0u8; 8 * KEEPALIVE_TOKENS_MAX];
    let body = match msg {
        MessageType::Keepalive => RequestBody::Keepalive {
            shard: r.num("shard") as u16,
            shards: r.num("shards") as u16,
            ttl_ms: num32("ttl_ms"),
            tokens: Tokens::write(&parse_tokens(r), &mut token_bytes).expect("at most 64"),
        },
        MessageType::Acquire => RequestBody::Acquire {
            resource: &resource,
            client: &client,
            wait_ms: num32("wait_ms"),
            ttl_ms: num32("ttl_ms"),
        },
        MessageType::Release => RequestBody::Release {
            resource: &resource,
            client: &client,
        },
        MessageType::Renew => RequestBody::Renew {
            resource: &resource,
            client: &client,
            ttl_ms: num32("ttl_ms"),
        },
        MessageType::Status => RequestBody::Status {
            resource: &resource,
        },
        MessageType::Configure => RequestBody::Configure {
            resource: &resource,
            default_ttl_ms: num32("default_ttl_ms"),
        },
        MessageType::CancelWait => RequestBody::CancelWait {
            resource: &resource,
            client: &client,
            target_session: r.num("target_session"),
            target_request: r.num("target_request"),
        },
        other => panic!("[{}] {other:?} is not a request", r.name),
    };
    // The one request flag is ADDRESS_TOKEN (spec §3.1), with the token it announces.
    let token = r.opt("address_token").map(|t| {
        AddressToken(
            parse_bytes(t)
                .try_into()
                .unwrap_or_else(|_| panic!("[{}] a token is 16 bytes", r.name)),
        )
    });
    // ... and AUTH with a client key (spec §7.1.10).
    let sealed = ClientSealed::of(r);
    let mut flags = if token.is_some() {
        Flags::ADDRESS_TOKEN.bits()
    } else {
        0
    };
    if sealed.is_some() {
        flags |= Flags::AUTH.bits();
    }
    assert_eq!(
        r.num_or("flags", 0),
        u64::from(flags),
        "[{}] requests carry ADDRESS_TOKEN with a token, AUTH with a key, no other flag",
        r.name
    );
    let expected = Request {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        body,
    };
    let (decoded, decoded_token, auth) = Request::decode_authenticated(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    assert_eq!(decoded_token, token, "[{}] address token", r.name);
    let padding = r.num_or("padding", 0) as usize;
    let token_len = token.map_or(0, |_| ADDRESS_TOKEN_LEN);
    let trailer_len = sealed.as_ref().map_or(0, |_| CLIENT_AUTH_TRAILER_LEN);
    assert_eq!(
        bytes.len(),
        HEADER_LEN + decoded.body.body_len() + token_len + padding + trailer_len,
        "[{}] padding",
        r.name
    );
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let Some(sealed) = sealed else {
        assert_eq!(auth, None, "[{}] no trailer", r.name);
        let n = expected
            .encode_padded_with_token(&mut out, bytes.len(), token.as_ref())
            .unwrap();
        assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
        // The plain decoder reads it too.
        assert_eq!(
            Request::decode_with_token(&bytes).unwrap(),
            (expected, token)
        );
        return;
    };
    assert_eq!(
        auth,
        Some(ClientAuth {
            key_id: sealed.key_id
        }),
        "[{}] key id",
        r.name
    );
    // A decoder that does not read the trailer refuses it (spec §3.2 step 6).
    assert_eq!(
        Request::decode_with_token(&bytes).unwrap_err(),
        DecodeError::AuthUnsupported
    );
    // The MAC and the codec's sealing need the `crypto` feature.
    #[cfg(feature = "crypto")]
    {
        let key = sealed.key();
        let n = expected
            .encode_padded_sealed(&mut out, bytes.len(), token.as_ref(), &key)
            .unwrap();
        sealed.check(r, &bytes, &out[..n], SPEC_CLIENT_REQUEST_MAC_LABEL);
        assert_eq!(key.verify_request(&bytes), sealed.verifies);
        assert!(!key.verify_reply(&bytes), "[{}] as a reply", r.name);
    }
}

/// The labels of spec §7.1.10, as the spec spells them.
#[cfg(feature = "crypto")]
const SPEC_CLIENT_KEY_ID_LABEL: &[u8] = b"udplock v1 client key id";
#[cfg(feature = "crypto")]
const SPEC_CLIENT_REQUEST_MAC_LABEL: &[u8] = b"udplock v1 client request mac";
#[cfg(feature = "crypto")]
const SPEC_CLIENT_REPLY_MAC_LABEL: &[u8] = b"udplock v1 client reply mac";

/// What a sealed client request or reply vector states beyond its fields (spec §7.1.10,
/// Appendix A.1): the key it was sealed with, its key id, its MAC and whether that verifies.
#[cfg_attr(not(feature = "crypto"), allow(dead_code))]
struct ClientSealed {
    secret: [u8; CLIENT_KEY_LEN],
    key_id: u32,
    verifies: bool,
}

impl ClientSealed {
    fn of(r: &Record) -> Option<ClientSealed> {
        let secret: [u8; CLIENT_KEY_LEN] = r
            .opt("client_key")
            .map(parse_bytes)?
            .try_into()
            .unwrap_or_else(|_| panic!("[{}] a client key is 32 bytes", r.name));
        Some(ClientSealed {
            secret,
            key_id: r.num("key_id") as u32,
            verifies: r.num("verifies") == 1,
        })
    }

    /// The key it was sealed with.
    #[cfg(feature = "crypto")]
    fn key(&self) -> ClientKey {
        ClientKey::new(self.secret)
    }

    /// `bytes` ends with the trailer the spec's formula gives (or, if it does not verify,
    /// with another MAC), and `encoded` (the codec's sealing of the record's fields) is
    /// `bytes`, or all of it but the MAC.
    #[cfg(feature = "crypto")]
    fn check(&self, r: &Record, bytes: &[u8], encoded: &[u8], label: &[u8]) {
        let len = bytes.len();
        let trailer = &bytes[len - CLIENT_AUTH_TRAILER_LEN..];
        assert_eq!(
            u32::from_be_bytes(trailer[..4].try_into().unwrap()),
            self.key_id,
            "[{}] trailer key_id",
            r.name
        );
        assert_eq!(&trailer[4..8], &[0; 4], "[{}] reserved", r.name);
        assert_eq!(&trailer[8..], &r.bytes("mac")[..], "[{}] mac", r.name);
        let mac_key = hmac_sha256(&self.secret, label);
        let want = &hmac_sha256(&mac_key, &bytes[..len - CLIENT_AUTH_MAC_LEN])[..16];
        assert_eq!(
            want == &trailer[8..],
            self.verifies,
            "[{}] verifies",
            r.name
        );
        assert_eq!(encoded.len(), len, "[{}] sealed length", r.name);
        let upto = if self.verifies { len } else { len - 16 };
        assert_eq!(
            &encoded[..upto],
            &bytes[..upto],
            "[{}] re-sealing differs",
            r.name
        );
    }
}

/// A `client-key` record (spec §7.1.10): the key id and both MAC keys the spec derives from
/// the key, and the key id the codec derives.
#[cfg(feature = "crypto")]
fn check_client_key(r: &Record) {
    assert_eq!(
        (
            client_auth::CLIENT_KEY_ID_LABEL,
            client_auth::CLIENT_REQUEST_MAC_LABEL,
            client_auth::CLIENT_REPLY_MAC_LABEL
        ),
        (
            SPEC_CLIENT_KEY_ID_LABEL,
            SPEC_CLIENT_REQUEST_MAC_LABEL,
            SPEC_CLIENT_REPLY_MAC_LABEL
        ),
        "the codec's labels are the spec's"
    );
    let secret: [u8; CLIENT_KEY_LEN] = r.bytes("client_key").try_into().expect("32 bytes");
    let id = hmac_sha256(&secret, SPEC_CLIENT_KEY_ID_LABEL);
    let key_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    assert_eq!(u64::from(key_id), r.num("key_id"), "[{}] key_id", r.name);
    for (field, label) in [
        ("request_mac_key", SPEC_CLIENT_REQUEST_MAC_LABEL),
        ("reply_mac_key", SPEC_CLIENT_REPLY_MAC_LABEL),
    ] {
        assert_eq!(
            &hmac_sha256(&secret, label)[..],
            &r.bytes(field)[..],
            "[{}] {field}",
            r.name
        );
    }
    assert_eq!(
        ClientKey::new(secret).key_id(),
        key_id,
        "[{}] codec",
        r.name
    );
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(ClientKey::from_hex(&hex).unwrap().key_id(), key_id);
}

/// A reply vector's `hint` (Section 5.2): `none` when absent.
fn parse_hint(r: &Record) -> Hint {
    let hint_text = r.opt("hint").unwrap_or("none");
    match hint_text.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["none"] => Hint::None,
        ["retry-after", ms] => Hint::RetryAfter {
            ms: parse_num(ms).unwrap() as u32,
        },
        ["leader", addr] => {
            // The wire carries IPv4 as IPv4-mapped IPv6; the codec gives it back as IPv4.
            let addr = addr.parse::<SocketAddr>().expect("leader address");
            let ip = match addr.ip() {
                std::net::IpAddr::V6(v6) => {
                    v6.to_ipv4_mapped().map_or(addr.ip(), std::net::IpAddr::V4)
                }
                v4 => v4,
            };
            Hint::Leader(SocketAddr::new(ip, addr.port()))
        }
        ["address-token", token] => Hint::AddressToken(AddressToken(
            parse_bytes(&format!("hex:{token}"))
                .try_into()
                .expect("a 16-byte token"),
        )),
        _ => panic!("[{}] bad hint {hint_text:?}", r.name),
    }
}

fn check_reply(r: &Record) {
    let bytes = r.hex();
    let holder = r.opt("holder").map(parse_bytes).unwrap_or_default();
    let hint = parse_hint(r);
    let status_name = r.get("status");
    let expected = Reply {
        msg_type: msg_type(r.get("type")),
        flags: Flags::from_bits(r.num_or("flags", 0) as u16).expect("registered flags"),
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        status: *Status::ALL
            .iter()
            .find(|s| s.name() == status_name)
            .expect("status name"),
        hold_count: r.num_or("hold_count", 0) as u32,
        fencing_token: r.num_or("fencing_token", 0),
        lease_ms: r.num_or("lease_ms", 0) as u32,
        waiter_count: r.num_or("waiter_count", 0) as u32,
        hint,
        holder: &holder,
    };
    let decoded =
        Reply::decode(&bytes).unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let sealed = ClientSealed::of(r);
    assert_eq!(
        expected.flags.contains(Flags::AUTH),
        sealed.is_some(),
        "[{}] AUTH with a client key",
        r.name
    );
    assert_eq!(
        reply_is_sealed(&bytes),
        sealed.as_ref().map(|s| s.key_id),
        "[{}] reply_is_sealed",
        r.name
    );
    if let Some(sealed) = sealed {
        // The MAC and the codec's sealing need the `crypto` feature.
        #[cfg(feature = "crypto")]
        {
            let key = sealed.key();
            let n = expected.encode_sealed(&mut out, Some(&key)).unwrap();
            sealed.check(r, &bytes, &out[..n], SPEC_CLIENT_REPLY_MAC_LABEL);
            assert_eq!(key.verify_reply(&bytes), sealed.verifies);
            assert!(!key.verify_request(&bytes), "[{}] as a request", r.name);
        }
        let _ = sealed;
        return;
    }
    let n = expected.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..n], "[{}] re-encoding differs", r.name);
    assert!(
        bytes[n..].iter().all(|&b| b == 0),
        "[{}] trailing bytes",
        r.name
    );
}

fn check_invalid(r: &Record) {
    let bytes = r.hex();
    let want = r.get("error");
    let got = match r.get("decode_as") {
        // The lock-request decoder of spec §3.2, which reads the client-auth trailer.
        "request" => Request::decode_authenticated(&bytes).err(),
        "reply" => Reply::decode(&bytes).err(),
        "peer" => PeerDatagram::decode(&bytes).err(),
        "command" => LogCommand::decode(&bytes).err(),
        "shard-status-request" => ShardStatusRequest::decode(&bytes).err(),
        "shard-status-reply" => ShardStatusReply::decode(&bytes).err(),
        "peer-settings" => PeerSettings::decode(&bytes).err(),
        "peer-load" => PeerLoad::decode(&bytes).err(),
        "node-settings-request" => NodeSettingsRequest::decode(&bytes).err(),
        "node-settings-reply" => NodeSettingsReply::decode(&bytes).err(),
        "members-request" => MembersRequest::decode(&bytes).err(),
        "members-reply" => MembersReply::decode(&bytes).err(),
        "remove-request" => RemoveRequest::decode(&bytes).err(),
        "remove-reply" => RemoveReply::decode(&bytes).err(),
        "holds-request" => HoldsRequest::decode(&bytes).err(),
        "holds-reply" => HoldsReply::decode(&bytes).err(),
        other => panic!("[{}] decode_as {other:?}", r.name),
    };
    let got = got.unwrap_or_else(|| panic!("[{}] decoded, but should fail with {want}", r.name));
    assert_eq!(got.name(), want, "[{}] wrong decode error", r.name);
}

fn check_shard_status_request(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "SHARD_STATUS", "[{}]", r.name);
    // The one request flag is ADDRESS_TOKEN (spec §3.1), with the token it announces.
    let token = r.opt("address_token").map(|t| {
        AddressToken(
            parse_bytes(t)
                .try_into()
                .unwrap_or_else(|_| panic!("[{}] a token is 16 bytes", r.name)),
        )
    });
    // ... and AUTH with a client key (spec §7.1.10).
    let sealed = ClientSealed::of(r);
    let mut flags = if token.is_some() {
        Flags::ADDRESS_TOKEN.bits()
    } else {
        0
    };
    if sealed.is_some() {
        flags |= Flags::AUTH.bits();
    }
    assert_eq!(
        r.num_or("flags", 0),
        u64::from(flags),
        "[{}] requests carry ADDRESS_TOKEN with a token, AUTH with a key, no other flag",
        r.name
    );
    let expected = ShardStatusRequest {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        first_shard: r.num("first_shard") as u16,
    };
    let decoded = ShardStatusRequest::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    assert_eq!(
        bytes.len(),
        HEADER_LEN + SHARD_STATUS_BODY_LEN + r.num("padding") as usize,
        "[{}] padding",
        r.name
    );
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode_padded(&mut out, bytes.len()).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    // A single node's decoder does not read it: the node answers UNSUPPORTED (spec §4.7).
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnknownType));
}

fn check_shard_status_reply(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "SHARD_STATUS_REPLY", "[{}]", r.name);
    let status_name = r.get("status");
    let entries: Vec<ShardStatusEntry> = (1..=r.num("entries"))
        .map(|i| {
            let w = words(r, &format!("entry.{i}"));
            let n = |k: &str| word_num(r, &w, k);
            let role_name = w.get("role").map(String::as_str);
            ShardStatusEntry {
                shard: n("shard") as u16,
                role: *ShardRole::ALL
                    .iter()
                    .find(|role| Some(role.name()) == role_name)
                    .unwrap_or_else(|| panic!("[{}] entry {i}: unknown role", r.name)),
                leader_id: n("leader_id"),
                term: n("term"),
                commit_index: n("commit_index"),
                applied_index: n("applied_index"),
                held: n("held") as u32,
                waiters: n("waiters") as u32,
            }
        })
        .collect();
    let expected = ShardStatusReply {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        status: *Status::ALL
            .iter()
            .find(|s| s.name() == status_name)
            .expect("status name"),
        node_id: r.num("node_id"),
        shards_total: r.num("shards_total") as u16,
        first_shard: r.num("first_shard") as u16,
        entries: ShardStatusEntries::from_slice(&entries),
    };
    assert_eq!(
        r.num_or("flags", 0),
        0,
        "[{}] this reply has no flag",
        r.name
    );
    let decoded = ShardStatusReply::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    assert_eq!(r.num("padding"), 0, "[{}] replies are not padded", r.name);
}

fn check_members_request(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "MEMBERS", "[{}]", r.name);
    // The one request flag is ADDRESS_TOKEN (spec §3.1), with the token it announces.
    let token = r.opt("address_token").map(|t| {
        AddressToken(
            parse_bytes(t)
                .try_into()
                .unwrap_or_else(|_| panic!("[{}] a token is 16 bytes", r.name)),
        )
    });
    // ... and AUTH with a client key (spec §7.1.10).
    let sealed = ClientSealed::of(r);
    let mut flags = if token.is_some() {
        Flags::ADDRESS_TOKEN.bits()
    } else {
        0
    };
    if sealed.is_some() {
        flags |= Flags::AUTH.bits();
    }
    assert_eq!(
        r.num_or("flags", 0),
        u64::from(flags),
        "[{}] requests carry ADDRESS_TOKEN with a token, AUTH with a key, no other flag",
        r.name
    );
    let expected = MembersRequest {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        first_id: r.num("first_id"),
    };
    let decoded = MembersRequest::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    assert_eq!(
        bytes.len(),
        HEADER_LEN + MEMBERS_BODY_LEN + r.num("padding") as usize,
        "[{}] padding",
        r.name
    );
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode_padded(&mut out, bytes.len()).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    // A server without it answers UNSUPPORTED (spec §4.9).
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnknownType));
}

/// A SWIM state by the name the spec uses for it (Sections 5.8, 8.12).
fn swim_state_named(r: &Record, name: Option<&str>) -> SwimState {
    match name {
        Some("alive") => SwimState::Alive,
        Some("suspect") => SwimState::Suspect,
        Some("dead") => SwimState::Dead,
        Some("left") => SwimState::Left,
        other => panic!("[{}] state {other:?}", r.name),
    }
}

fn check_members_reply(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "MEMBERS_REPLY", "[{}]", r.name);
    assert_eq!(
        r.num_or("flags", 0),
        0,
        "[{}] this reply has no flag",
        r.name
    );
    let entries: Vec<MemberEntry> = (1..=r.num("entries"))
        .map(|i| {
            let w = words(r, &format!("entry.{i}"));
            MemberEntry {
                id: word_num(r, &w, "id"),
                incarnation: word_num(r, &w, "incarnation"),
                state: swim_state_named(r, w.get("state").map(String::as_str)),
                addr: w["addr"].parse().expect("socket address"),
            }
        })
        .collect();
    let status_name = r.get("status");
    let expected = MembersReply {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        status: *Status::ALL
            .iter()
            .find(|s| s.name() == status_name)
            .expect("status name"),
        node_id: r.num("node_id"),
        members_total: r.num("members_total") as u32,
        first_id: r.num("first_id"),
        next_id: r.num("next_id"),
        entries: MemberEntries::from_slice(&entries),
    };
    let decoded = MembersReply::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    assert_eq!(r.num("padding"), 0, "[{}] replies are not padded", r.name);
}

/// The `setting.N` lines of a settings vector.
fn setting_values(r: &Record) -> Vec<SettingValue> {
    (1..)
        .map_while(|i| r.opt(&format!("setting.{i}")).map(|_| i))
        .map(|i| {
            let w = words(r, &format!("setting.{i}"));
            let name = w.get("setting").expect("setting=");
            let code = Setting::ALL
                .iter()
                .find(|s| s.name() == name)
                .map(|s| s.to_wire())
                .or_else(|| name.parse().ok())
                .unwrap_or_else(|| panic!("[{}] setting {name:?}", r.name));
            SettingValue {
                setting: code,
                value: word_num(r, &w, "value"),
            }
        })
        .collect()
}

fn check_peer_settings(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "PEER_SETTINGS", "[{}]", r.name);
    let values = setting_values(r);
    let sealed = Sealed::of(r);
    let expected = PeerSettings {
        header: PeerHeader {
            cluster_id: r.num("cluster_id"),
            from: r.num("from"),
        },
        auth: sealed.as_ref().map(|s| s.trailer),
        values: SettingValues::from_slice(&values),
    };
    let decoded = PeerSettings::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    match &sealed {
        Some(s) => s.check(r, &bytes, &mut out, n),
        None => assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name),
    }
    // Neither a PEER datagram nor a request: a single node drops it (spec §3.2 step 5a).
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnexpectedType));
    assert_eq!(
        PeerDatagram::decode(&bytes),
        Err(DecodeError::UnexpectedType)
    );
}

fn check_peer_load(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "PEER_LOAD", "[{}]", r.name);
    let sealed = Sealed::of(r);
    let expected = PeerLoad {
        header: PeerHeader {
            cluster_id: r.num("cluster_id"),
            from: r.num("from"),
        },
        auth: sealed.as_ref().map(|s| s.trailer),
        reached: u16::try_from(r.num("reached")).expect("a u16"),
    };
    let decoded =
        PeerLoad::decode(&bytes).unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    // Spec §8.11: the MAC's checks need the `crypto` feature (`Sealed::check`).
    match &sealed {
        Some(s) => s.check(r, &bytes, &mut out, n),
        None => assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name),
    }
    // Neither a PEER datagram nor a request: a node that predates it drops it (spec §3.2).
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnexpectedType));
    assert_eq!(
        PeerDatagram::decode(&bytes),
        Err(DecodeError::UnexpectedType)
    );
}

fn check_node_settings_request(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "NODE_SETTINGS", "[{}]", r.name);
    let expected = NodeSettingsRequest {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
    };
    let decoded = NodeSettingsRequest::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    assert_eq!(bytes.len(), HEADER_LEN + r.num("padding") as usize);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode_padded(&mut out, bytes.len()).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    // A single node's decoder does not read it: the node answers UNSUPPORTED (spec §4.8).
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnknownType));
}

fn check_node_settings_reply(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "NODE_SETTINGS_REPLY", "[{}]", r.name);
    let values = setting_values(r);
    let status_name = r.get("status");
    let expected = NodeSettingsReply {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        status: *Status::ALL
            .iter()
            .find(|s| s.name() == status_name)
            .expect("status name"),
        node_id: r.num("node_id"),
        cluster_id: r.num("cluster_id"),
        values: SettingValues::from_slice(&values),
    };
    let decoded = NodeSettingsReply::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
}

/// `key=value` words of one `record.N` or `record.N.entry.M` line.
fn words(r: &Record, key: &str) -> BTreeMap<String, String> {
    r.get(key)
        .split_whitespace()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("[{}] {key}: bad word {w:?}", r.name));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn word_num(r: &Record, w: &BTreeMap<String, String>, k: &str) -> u64 {
    let v = w
        .get(k)
        .unwrap_or_else(|| panic!("[{}] a record has no `{k}`", r.name));
    parse_num(v).unwrap_or_else(|| panic!("[{}] {k}: not a number", r.name))
}

fn word_bool(r: &Record, w: &BTreeMap<String, String>, k: &str) -> bool {
    match word_num(r, w, k) {
        0 => false,
        1 => true,
        _ => panic!("[{}] {k} must be 0 or 1", r.name),
    }
}

/// One record of a PEER vector, as the file states it.
#[derive(Debug, PartialEq)]
enum Rec {
    Raft(u16, Msg),
    Swim(SwimMessage<Vec<SwimUpdate>>),
}

/// The updates of SWIM record `key` (`updates` of them, as `key.update.M`).
fn swim_updates(r: &Record, key: &str, count: u64) -> Vec<SwimUpdate> {
    (1..=count)
        .map(|m| {
            let u = words(r, &format!("{key}.update.{m}"));
            let state = match u.get("state").map(String::as_str) {
                Some("alive") => SwimState::Alive,
                Some("suspect") => SwimState::Suspect,
                Some("dead") => SwimState::Dead,
                Some("left") => SwimState::Left,
                other => panic!("[{}] update {m}: state {other:?}", r.name),
            };
            SwimUpdate {
                id: word_num(r, &u, "id"),
                incarnation: word_num(r, &u, "incarnation"),
                state,
                addr: u["addr"].parse().expect("socket address"),
                from: word_num(r, &u, "from"),
            }
        })
        .collect()
}

/// A SWIM record of a vector, from its words; `None` for a Raft kind.
fn swim_record(r: &Record, key: &str, kind: PeerKind) -> Option<SwimMessage<Vec<SwimUpdate>>> {
    let w = words(r, key);
    let n = |k: &str| word_num(r, &w, k);
    let updates = || swim_updates(r, key, n("updates"));
    Some(match kind {
        PeerKind::SwimPing => SwimMessage::Ping {
            seq: n("seq") as u32,
            target: n("target"),
            updates: updates(),
        },
        PeerKind::SwimAck => SwimMessage::Ack {
            seq: n("seq") as u32,
            target: n("target"),
            updates: updates(),
        },
        PeerKind::SwimPingReq => SwimMessage::PingReq {
            seq: n("seq") as u32,
            target: n("target"),
            target_addr: w["target_addr"].parse().expect("socket address"),
            updates: updates(),
        },
        PeerKind::SwimNack => SwimMessage::Nack {
            seq: n("seq") as u32,
        },
        PeerKind::SwimPushPull => SwimMessage::PushPull {
            reply: word_bool(r, &w, "reply"),
            members: updates(),
        },
        _ => return None,
    })
}

fn check_peer(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "PEER", "[{}]", r.name);
    let header = PeerHeader {
        cluster_id: r.num("cluster_id"),
        from: r.num("from"),
    };
    let mut expected = Vec::new();
    for i in 1.. {
        let key = format!("record.{i}");
        if r.opt(&key).is_none() {
            break;
        }
        let w = words(r, &key);
        let n = |k: &str| word_num(r, &w, k);
        let kind = *PeerKind::ALL
            .iter()
            .find(|k| Some(k.name()) == w.get("type").map(String::as_str))
            .unwrap_or_else(|| panic!("[{}] {key}: unknown type", r.name));
        if let Some(swim) = swim_record(r, &key, kind) {
            assert_eq!(
                n("shard"),
                0,
                "[{}] {key}: a SWIM record's shard is 0",
                r.name
            );
            expected.push(Rec::Swim(swim));
            continue;
        }
        // The record as the file states it, built field by field (not from the decoded view):
        // a message that owns its payloads, of the type the decoder returns a view of.
        let rec = match kind {
            PeerKind::PreVote => Msg::PreVote {
                term: n("term"),
                last_log_index: n("last_log_index"),
                last_log_term: n("last_log_term"),
            },
            PeerKind::Vote | PeerKind::TransferVote => Msg::Vote {
                term: n("term"),
                last_log_index: n("last_log_index"),
                last_log_term: n("last_log_term"),
                transfer: kind == PeerKind::TransferVote,
            },
            PeerKind::PreVoteReply => Msg::PreVoteReply {
                term: n("term"),
                granted: word_bool(r, &w, "granted"),
                replica: n("replica"),
            },
            PeerKind::VoteReply => Msg::VoteReply {
                term: n("term"),
                granted: word_bool(r, &w, "granted"),
                replica: n("replica"),
            },
            PeerKind::Append => {
                let count = n("entries");
                let entries = (1..=count)
                    .map(|m| {
                        let e = words(r, &format!("{key}.entry.{m}"));
                        let data = match e.get("data").map(String::as_str) {
                            Some("-") => Vec::new(),
                            Some(d) => parse_bytes(d),
                            None => panic!("[{}] entry {m} has no data", r.name),
                        };
                        (word_num(r, &e, "term"), data)
                    })
                    .collect();
                Msg::Append {
                    term: n("term"),
                    prev_log_index: n("prev_log_index"),
                    prev_log_term: n("prev_log_term"),
                    entries: numbered(n("prev_log_index"), entries),
                    leader_commit: n("leader_commit"),
                    round: n("round"),
                    // Spec §8.5: 0 names nobody (node ids are never 0).
                    transfer_to: Some(n("transfer_to")).filter(|&to| to != 0),
                }
            }
            PeerKind::AppendReply => Msg::AppendReply {
                term: n("term"),
                success: word_bool(r, &w, "success"),
                match_index: n("match_index"),
                round: n("round"),
                life: n("life"),
                replica: n("replica"),
            },
            PeerKind::TimeoutNow => Msg::TimeoutNow { term: n("term") },
            PeerKind::InstallSnapshot => Msg::InstallSnapshot {
                term: n("term"),
                last_index: n("last_index"),
                last_term: n("last_term"),
                offset: n("offset"),
                total_len: n("total_len"),
                data: match w.get("data").map(String::as_str) {
                    Some("-") => Vec::new(),
                    Some(d) => parse_bytes(d),
                    None => panic!("[{}] {key} has no data", r.name),
                },
                round: n("round"),
            },
            PeerKind::InstallSnapshotReply => Msg::InstallSnapshotReply {
                term: n("term"),
                last_index: n("last_index"),
                received: n("received"),
                round: n("round"),
                life: n("life"),
                replica: n("replica"),
            },
            PeerKind::TermQuery => Msg::TermQuery {
                term: n("term"),
                nonce: n("nonce"),
            },
            PeerKind::TermReply => Msg::TermReply {
                term: n("term"),
                last_index: n("last_index"),
                nonce: n("nonce"),
            },
            PeerKind::NoStateReply => Msg::NoStateReply {
                term: n("term"),
                nonce: n("nonce"),
                new: word_bool(r, &w, "new"),
            },
            PeerKind::SwimPing
            | PeerKind::SwimAck
            | PeerKind::SwimPingReq
            | PeerKind::SwimNack
            | PeerKind::SwimPushPull => unreachable!("swim_record took it"),
        };
        expected.push(Rec::Raft(n("shard") as u16, rec));
    }
    let sealed = Sealed::of(r);
    let d = PeerDatagram::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(d.header, header, "[{}] header", r.name);
    assert_eq!(
        d.auth,
        sealed.as_ref().map(|s| s.trailer),
        "[{}] trailer",
        r.name
    );
    let got: Vec<Rec> = d
        .all_records()
        .map(|rec| match rec {
            PeerRecord::Raft { shard, msg } => Rec::Raft(shard, msg.into_owned()),
            PeerRecord::Swim(msg) => Rec::Swim(msg.into_owned()),
        })
        .collect();
    assert_eq!(got, expected, "[{}] decoded records differ", r.name);
    assert_eq!(d.record_count(), expected.len());
    assert_eq!(
        d.records().count() + d.swim_records().count(),
        expected.len(),
        "[{}] records and swim_records split the datagram",
        r.name
    );

    // Encode from the file's fields (not from the decoded view) and compare the bytes; an
    // authenticated datagram keeps room for its trailer, then is sealed.
    let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
    let room = if sealed.is_some() {
        AUTH_TRAILER_LEN
    } else {
        0
    };
    let mut w = PeerWriter::with_trailer_room(&mut out, header, room);
    for rec in &expected {
        let res = match rec {
            Rec::Raft(shard, msg) => w.push(*shard, msg),
            Rec::Swim(msg) => w.push_swim(msg),
        };
        res.unwrap_or_else(|e| panic!("[{}] push: {e}", r.name));
    }
    let n = w.finish();
    match &sealed {
        Some(s) => s.check(r, &bytes, &mut out, n),
        None => assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name),
    }
}

/// HMAC-SHA256 (RFC 2104), written out here from spec §8.11.3 rather than taken from the
/// codec, so the vectors check the spec's formula and not just the codec against itself.
/// (The MACs of the vectors are checked with the `crypto` feature only; without it, the
/// fields and bytes around them.)
#[cfg(feature = "crypto")]
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The labels of spec §8.11.3 and §4.10, as the spec spells them.
#[cfg(feature = "crypto")]
const SPEC_MAC_KEY_LABEL: &[u8] = b"udplock v1 peer mac";
#[cfg(feature = "crypto")]
const SPEC_ADMIN_MAC_KEY_LABEL: &[u8] = b"udplock v1 admin mac";
#[cfg(feature = "crypto")]
const SPEC_KEY_ID_LABEL: &[u8] = b"udplock v1 key id";

/// The cluster key of a record (`cluster_key = hex:` and 64 hex digits).
fn cluster_key(r: &Record) -> [u8; CLUSTER_KEY_LEN] {
    r.bytes("cluster_key")
        .try_into()
        .unwrap_or_else(|_| panic!("[{}] a cluster key is 32 bytes", r.name))
}

/// A `cluster-key` record: the MAC key and the key id the spec derives from the key, and the
/// key id the codec derives.
#[cfg(feature = "crypto")]
fn check_cluster_key(r: &Record) {
    let secret = cluster_key(r);
    assert_eq!(
        (SPEC_MAC_KEY_LABEL, SPEC_KEY_ID_LABEL),
        (auth::MAC_KEY_LABEL, auth::KEY_ID_LABEL),
        "the codec's labels are the spec's"
    );
    let mac_key = hmac_sha256(&secret, SPEC_MAC_KEY_LABEL);
    assert_eq!(
        &mac_key[..],
        &r.bytes("mac_key")[..],
        "[{}] mac_key",
        r.name
    );
    let id = hmac_sha256(&secret, SPEC_KEY_ID_LABEL);
    let key_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    assert_eq!(u64::from(key_id), r.num("key_id"), "[{}] key_id", r.name);
    assert_eq!(ClusterKey::new(&secret).id(), key_id, "[{}] codec", r.name);
}

/// An `address-token` record (spec §7.2.5): the token names the time it was made, and a node
/// accepts it in the window of wall-clock seconds the record states; with the `crypto`
/// feature also the token key and the MAC the spec's formula gives, written out here, and the
/// token the codec makes and accepts.
fn check_address_token(r: &Record) {
    // The spec's numbers (§7.2.5), which the record's window is computed with.
    assert_eq!((ADDRESS_TOKEN_LIFETIME_S, ADDRESS_TOKEN_SKEW_S), (240, 60));
    let token = AddressToken(
        r.bytes("token")
            .try_into()
            .unwrap_or_else(|_| panic!("[{}] a token is 16 bytes", r.name)),
    );
    let issued = u32::try_from(r.num("issued")).expect("issued is a u32");
    assert_eq!(token.issued_s(), issued, "[{}] issued", r.name);
    let from = u32::try_from(r.num("valid_from")).expect("a u32");
    let until = u32::try_from(r.num("valid_until")).expect("a u32");
    for (now, want) in [
        (from - 1, AddressTokenCheck::NotYetValid),
        (from, AddressTokenCheck::Valid),
        (issued, AddressTokenCheck::Valid),
        (until, AddressTokenCheck::Valid),
        (until + 1, AddressTokenCheck::Expired),
    ] {
        assert_eq!(
            address_token_age(issued, now),
            want,
            "[{}] at {now}",
            r.name
        );
    }
    #[cfg(feature = "crypto")]
    check_address_token_mac(r, &token, from, until);
}

#[cfg(feature = "crypto")]
fn check_address_token_mac(r: &Record, token: &AddressToken, from: u32, until: u32) {
    assert_eq!(ADDRESS_TOKEN_KEY_LABEL, b"udplock v1 address token");
    let secret = cluster_key(r);
    let token_key = hmac_sha256(&secret, b"udplock v1 address token");
    assert_eq!(
        &token_key[..],
        &r.bytes("token_key")[..],
        "[{}] token_key",
        r.name
    );
    let source: SocketAddr = r.get("source").parse().expect("a source address");
    let session_id = r.num("session_id");
    let issued = token.issued_s();
    let mut input = Vec::new();
    let ip = match source.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    input.extend_from_slice(&ip.octets());
    input.extend_from_slice(&source.port().to_be_bytes());
    input.extend_from_slice(&session_id.to_be_bytes());
    input.extend_from_slice(&issued.to_be_bytes());
    let mut want = issued.to_be_bytes().to_vec();
    want.extend_from_slice(&hmac_sha256(&token_key, &input)[..12]);
    assert_eq!(&want[..], &token.0[..], "[{}] token", r.name);
    let key = ClusterKey::new(&secret);
    let tokens = key.address_token_key();
    let made = tokens.token(source, session_id, issued);
    assert_eq!(&made, token, "[{}] codec", r.name);
    let check = |session, now| tokens.check(source, session, &made, now);
    assert_eq!(check(session_id, from), AddressTokenCheck::Valid);
    assert_eq!(check(session_id, until), AddressTokenCheck::Valid);
    assert_eq!(
        check(session_id, until + 1),
        AddressTokenCheck::Expired,
        "[{}] expired",
        r.name
    );
    assert_eq!(
        check(session_id + 1, issued),
        AddressTokenCheck::Forged,
        "[{}] another session",
        r.name
    );
}

/// What an authenticated PEER or PEER_SETTINGS vector states beyond its fields (spec
/// Appendix A.1): its trailer, the key it was sealed with, its MAC, and whether that verifies.
struct Sealed {
    trailer: AuthTrailer,
    secret: [u8; CLUSTER_KEY_LEN],
    mac: Vec<u8>,
    verifies: bool,
}

impl Sealed {
    /// `None` for a record without AUTH (which then names no trailer).
    fn of(r: &Record) -> Option<Sealed> {
        let flags = r.num_or("flags", 0);
        if flags == 0 {
            assert!(
                r.opt("trailer").is_none(),
                "[{}] trailer without AUTH",
                r.name
            );
            return None;
        }
        assert_eq!(flags, u64::from(Flags::AUTH.bits()), "[{}] flags", r.name);
        let w = words(r, "trailer");
        let n = |k: &str| word_num(r, &w, k);
        Some(Sealed {
            trailer: AuthTrailer {
                to: n("to"),
                incarnation: n("incarnation"),
                peer_incarnation: n("peer_incarnation"),
                seq: n("seq"),
                key_id: n("key_id") as u32,
            },
            secret: cluster_key(r),
            mac: r.bytes("mac"),
            verifies: match r.num("verifies") {
                0 => false,
                1 => true,
                _ => panic!("[{}] verifies must be 0 or 1", r.name),
            },
        })
    }

    /// `bytes` is the vector's datagram; `out[..n]` the same datagram re-encoded from the
    /// file's fields, unauthenticated. Checks the length and the MAC's place; with the
    /// `crypto` feature also the MAC both ways, and seals `out`.
    fn check(&self, r: &Record, bytes: &[u8], out: &mut [u8], n: usize) {
        assert_eq!(bytes.len(), n + AUTH_TRAILER_LEN, "[{}] length", r.name);
        let mac_at = bytes.len() - AUTH_MAC_LEN;
        assert_eq!(&bytes[mac_at..], &self.mac[..], "[{}] mac", r.name);
        #[cfg(feature = "crypto")]
        self.check_mac(r, bytes, out, n);
        #[cfg(not(feature = "crypto"))]
        let _ = (out, self.secret, self.verifies, self.trailer);
    }

    #[cfg(feature = "crypto")]
    fn check_mac(&self, r: &Record, bytes: &[u8], out: &mut [u8], n: usize) {
        let key = ClusterKey::new(&self.secret);
        assert_eq!(key.id(), self.trailer.key_id, "[{}] key_id", r.name);
        let mac_at = bytes.len() - AUTH_MAC_LEN;
        // The spec's formula: the first 16 bytes of HMAC-SHA256(mac_key, all but the MAC).
        let mac_key = hmac_sha256(&self.secret, SPEC_MAC_KEY_LABEL);
        let tag = hmac_sha256(&mac_key, &bytes[..mac_at]);
        assert_eq!(
            tag[..AUTH_MAC_LEN] == bytes[mac_at..],
            self.verifies,
            "[{}] the spec's MAC",
            r.name
        );
        assert_eq!(key.verify(bytes), self.verifies, "[{}] verify", r.name);
        // Sealing the file's fields gives the vector's bytes (all but a wrong MAC).
        let sealed = key
            .seal(out, n, &self.trailer)
            .unwrap_or_else(|e| panic!("[{}] seal: {e}", r.name));
        assert_eq!(sealed, bytes.len(), "[{}] sealed length", r.name);
        assert_eq!(&out[..mac_at], &bytes[..mac_at], "[{}] re-sealing", r.name);
        assert_eq!(
            out[mac_at..sealed] == bytes[mac_at..],
            self.verifies,
            "[{}] re-sealed MAC",
            r.name
        );
    }
}

/// A REMOVE (spec §4.10): its fields decode, its MAC is the one the spec's formula gives with
/// its key (or not, as `verifies` says), and encoding its fields with that key gives its
/// bytes (all but a wrong MAC).
fn check_remove_request(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "REMOVE", "[{}]", r.name);
    let expected = RemoveRequest {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        member_id: r.num("member_id"),
        incarnation: r.num("incarnation"),
        key_id: r.num("key_id") as u32,
    };
    let decoded = RemoveRequest::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mac_at = bytes.len() - AUTH_MAC_LEN;
    assert_eq!(&bytes[mac_at..], &r.bytes("mac")[..], "[{}] mac", r.name);
    // A server without it answers UNSUPPORTED (spec §4.10).
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnknownType));
    #[cfg(feature = "crypto")]
    check_remove_mac(r, &bytes, &expected);
}

/// A REMOVE's MAC and key id (the `crypto` feature).
#[cfg(feature = "crypto")]
fn check_remove_mac(r: &Record, bytes: &[u8], expected: &RemoveRequest) {
    assert_eq!(auth::ADMIN_MAC_KEY_LABEL, SPEC_ADMIN_MAC_KEY_LABEL);
    let secret = cluster_key(r);
    let key = ClusterKey::new(&secret);
    assert_eq!(expected.key_id, key.id(), "[{}] key_id", r.name);
    let verifies = r.num("verifies") == 1;
    let mac_at = bytes.len() - AUTH_MAC_LEN;
    // The spec's formula: the first 16 bytes of HMAC-SHA256(admin_mac_key, all but the MAC).
    let admin_key = hmac_sha256(&secret, SPEC_ADMIN_MAC_KEY_LABEL);
    let tag = hmac_sha256(&admin_key, &bytes[..mac_at]);
    assert_eq!(
        tag[..AUTH_MAC_LEN] == bytes[mac_at..],
        verifies,
        "[{}] the spec's MAC",
        r.name
    );
    assert_eq!(
        key.verify_admin(bytes),
        verifies,
        "[{}] verify_admin",
        r.name
    );
    // An admin MAC is never a peer MAC.
    assert!(!key.verify(bytes), "[{}] verifies as a peer MAC", r.name);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out, &key).unwrap();
    assert_eq!(n, bytes.len(), "[{}] length", r.name);
    assert_eq!(&out[..mac_at], &bytes[..mac_at], "[{}] re-encoding", r.name);
    assert_eq!(
        out[mac_at..n] == bytes[mac_at..],
        verifies,
        "[{}] re-encoded MAC",
        r.name
    );
}

fn check_remove_reply(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "REMOVE_REPLY", "[{}]", r.name);
    let status = Status::ALL
        .iter()
        .copied()
        .find(|s| s.name() == r.get("status"))
        .unwrap_or_else(|| panic!("[{}] status", r.name));
    let outcome = RemoveOutcome::ALL
        .iter()
        .copied()
        .find(|o| o.name() == r.get("outcome"));
    let expected = RemoveReply {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        status,
        outcome,
        state: swim_state_named(r, r.opt("state")),
        node_id: r.num("node_id"),
        member_id: r.num("member_id"),
        incarnation: r.num("incarnation"),
    };
    let decoded =
        RemoveReply::decode(&bytes).unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    assert_eq!(bytes.len(), REMOVE_REPLY_LEN + r.num("padding") as usize);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    assert_eq!(Reply::decode(&bytes), Err(DecodeError::UnknownType));
}

fn parse_addr(s: &str) -> SocketAddr {
    let addr = s.parse::<SocketAddr>().expect("socket address");
    match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), addr.port()),
            None => addr,
        },
        _ => addr,
    }
}

/// The operation of a REQUEST command vector, from its fields as the spec names them (§8.7:
/// `wait_ms` only for ACQUIRE; `ttl_ms` is CONFIGURE's `default_ttl_ms`; no TTL for RELEASE).
/// A field the op has no room for must be 0 in the vector.
fn logged_body<'a>(
    r: &Record,
    kind: RequestKind,
    resource: &'a [u8],
    client: &'a [u8],
    token_bytes: &'a mut [u8],
) -> RequestBody<'a> {
    if kind == RequestKind::Keepalive {
        // Spec §8.7: the shard and the shard count travel in the place of wait_ms; no ids.
        assert!(resource.is_empty() && client.is_empty(), "[{}] ids", r.name);
        return RequestBody::Keepalive {
            shard: r.num("shard") as u16,
            shards: r.num("shards") as u16,
            ttl_ms: r.num("ttl_ms") as u32,
            tokens: Tokens::write(&parse_tokens(r), token_bytes).expect("at most 64"),
        };
    }
    let (wait_ms, ttl_ms) = (r.num("wait_ms") as u32, r.num("ttl_ms") as u32);
    let body = match kind {
        RequestKind::Acquire => RequestBody::Acquire {
            resource,
            client,
            wait_ms,
            ttl_ms,
        },
        RequestKind::Release => RequestBody::Release { resource, client },
        RequestKind::Renew => RequestBody::Renew {
            resource,
            client,
            ttl_ms,
        },
        RequestKind::Configure => RequestBody::Configure {
            resource,
            default_ttl_ms: ttl_ms,
        },
        RequestKind::CancelWait => RequestBody::CancelWait {
            resource,
            client,
            target_session: r.num("target_session"),
            target_request: r.num("target_request"),
        },
        RequestKind::Status => panic!("[{}] STATUS is never logged", r.name),
        RequestKind::Keepalive => unreachable!("returned above"),
    };
    let unused_zero = match kind {
        RequestKind::Acquire => true,
        RequestKind::Release | RequestKind::CancelWait => wait_ms == 0 && ttl_ms == 0,
        _ => wait_ms == 0,
    };
    assert!(unused_zero, "[{}] a field of another op is set", r.name);
    let names_client = !matches!(kind, RequestKind::Configure);
    assert_eq!(!client.is_empty(), names_client, "[{}] client id", r.name);
    body
}

fn check_command(r: &Record) {
    let bytes = r.hex();
    let resource = r.opt("resource").map(parse_bytes).unwrap_or_default();
    let client = r.opt("client").map(parse_bytes).unwrap_or_default();
    let mut config_ids = [0u8; CONFIG_MEMBER_LEN * CONFIG_MEMBERS_MAX];
    let mut token_bytes = [0u8; 8 * KEEPALIVE_TOKENS_MAX];
    let expected = match r.get("command") {
        "INIT" => LogCommand::Init {
            token_first: r.num("token_first"),
        },
        "TICK" => LogCommand::Tick {
            stamp: r.num("stamp"),
        },
        "SETTINGS" => LogCommand::Settings {
            ttl_default_ms: r.num("ttl_default_ms") as u32,
            retry_after_ms: r.num("retry_after_ms") as u32,
            startup_grace_ms: r.num("startup_grace_ms") as u32,
        },
        "CONFIG" => {
            // Each member is `node:replica` (spec §8.7).
            let members = |key: &str| -> Vec<ReplicaRef> {
                let list = r.get(key);
                list.split(',')
                    .map(str::trim)
                    .filter(|member| !member.is_empty())
                    .map(|member| {
                        let (node, replica) = member.split_once(':').expect("node:replica");
                        ReplicaRef {
                            node: node.parse().expect("a node id"),
                            replica: parse_num(replica).expect("a replica id"),
                        }
                    })
                    .collect()
            };
            let (voters, learners) = (members("voters"), members("learners"));
            let voters_len = CONFIG_MEMBER_LEN * voters.len();
            config_ids[..voters_len + CONFIG_MEMBER_LEN * learners.len()].fill(0);
            let (v, l) = config_ids.split_at_mut(voters_len);
            LogCommand::Config {
                voters: Replicas::write(&voters, v).expect("room"),
                learners: Replicas::write(&learners, l).expect("room"),
            }
        }
        "REQUEST" => LogCommand::Request {
            stamp: r.num("stamp"),
            session_id: r.num("session_id"),
            request_id: r.num("request_id"),
            attempt: r.num("attempt") as u16,
            room_for_waiting: match r.num("room_for_waiting") {
                0 => false,
                1 => true,
                _ => panic!("[{}] room_for_waiting must be 0 or 1", r.name),
            },
            reply_to: parse_addr(r.get("reply_to")),
            body: logged_body(
                r,
                RequestKind::of_request_type(msg_type(r.get("op"))).expect("a logged op"),
                &resource,
                &client,
                &mut token_bytes,
            ),
        },
        other => panic!("[{}] command {other:?}", r.name),
    };
    let kind = LogCommandKind::ALL
        .iter()
        .find(|k| k.name() == r.get("command"))
        .expect("command kind name");
    assert_eq!(
        bytes.first(),
        Some(&kind.to_wire()),
        "[{}] kind byte",
        r.name
    );
    let decoded =
        LogCommand::decode(&bytes).unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    assert_eq!(expected.encoded_len(), bytes.len(), "[{}] length", r.name);
    let mut out = [0u8; LOG_COMMAND_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
}

fn check_shard(r: &Record) {
    let resource = r.bytes("resource");
    assert_eq!(shard_hash(&resource), r.num("fnv1a64"), "[{}] hash", r.name);
    assert_eq!(
        shard_of(&resource, r.num("shards") as u32) as u64,
        r.num("shard"),
        "[{}] shard",
        r.name
    );
}

/// The records in the fenced blocks of `spec` from its heading `heading` on.
fn shown_in(file: &'static str, spec: &'static str, heading: &str) -> Vec<Record> {
    let from = spec
        .find(heading)
        .unwrap_or_else(|| panic!("{file} has {heading:?}"));
    // Only the fenced blocks hold records.
    let blocks: String = spec[from..]
        .split("```")
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .join("\n");
    parse_records(file, Box::leak(blocks.into_boxed_str()))
}

/// The vectors printed in the spec (Appendix A.2 of the client protocol, Appendix B of the
/// node-to-node protocol) are the same bytes as the vector files.
#[test]
fn spec_appendix_shows_the_vector_files_bytes() {
    let client = shown_in(
        "client-protocol.md",
        include_str!("../../spec/client-protocol.md"),
        "### A.2",
    );
    let node = shown_in(
        "node-protocol.md",
        include_str!("../../spec/node-protocol.md"),
        "## Appendix B",
    );
    assert!(
        client.len() >= 5,
        "Appendix A.2 shows {} vectors",
        client.len()
    );
    assert!(node.len() >= 2, "Appendix B shows {} vectors", node.len());
    let files = records();
    for r in client.iter().chain(&node) {
        let f = files
            .iter()
            .find(|f| f.name == r.name)
            .unwrap_or_else(|| panic!("[{}] is in the spec but in no vector file", r.name));
        assert_eq!(
            r.hex(),
            f.hex(),
            "[{}] differs between spec and file",
            r.name
        );
    }
}

#[test]
fn spec_vectors_decode_and_reencode_byte_for_byte() {
    let records = records();
    let mut counts = BTreeMap::new();
    for r in &records {
        let kind = r.get("kind").to_string();
        match kind.as_str() {
            "request" => check_request(r),
            "reply" => check_reply(r),
            "invalid" => check_invalid(r),
            "peer" => check_peer(r),
            "command" => check_command(r),
            "shard" => check_shard(r),
            "shard-status-request" => check_shard_status_request(r),
            "shard-status-reply" => check_shard_status_reply(r),
            "peer-settings" => check_peer_settings(r),
            "peer-load" => check_peer_load(r),
            "node-settings-request" => check_node_settings_request(r),
            "node-settings-reply" => check_node_settings_reply(r),
            "members-request" => check_members_request(r),
            "members-reply" => check_members_reply(r),
            "remove-request" => check_remove_request(r),
            "remove-reply" => check_remove_reply(r),
            "holds-request" => check_holds_request(r),
            "holds-reply" => check_holds_reply(r),
            #[cfg(feature = "crypto")]
            "cluster-key" => check_cluster_key(r),
            // Its derivations are all cryptography: nothing to check without it.
            #[cfg(not(feature = "crypto"))]
            "cluster-key" => {}
            "address-token" => check_address_token(r),
            #[cfg(feature = "crypto")]
            "client-key" => check_client_key(r),
            // Its derivations are all cryptography: nothing to check without it.
            #[cfg(not(feature = "crypto"))]
            "client-key" => {}
            other => panic!("[{}] kind {other:?}", r.name),
        }
        *counts.entry(kind).or_insert(0) += 1;
    }
    // The vectors must cover every message type and every decode error the spec names.
    for t in MessageType::ALL {
        assert!(
            records.iter().any(|r| r.opt("type") == Some(t.name())),
            "no vector of type {}",
            t.name()
        );
    }
    for e in [
        "TooShort",
        "TooLong",
        "BadMagic",
        "UnsupportedVersion",
        "UnknownType",
        "UnexpectedType",
        "UnknownFlags",
        "AuthUnsupported",
        "ShortAuthenticated",
        "ReservedNonZero",
        "BadBodyLength",
        "NonZeroPadding",
        "ZeroId",
        "EmptyId",
        "BadHintKind",
        "UnknownStatus",
        "BadHolderLength",
        "NoRecords",
        "BadShard",
        "UnknownRecordKind",
        "BadRecordLength",
        "BadBool",
        "BadEntries",
        "BadSnapshotChunk",
        "UnknownCommand",
        "BadOp",
        "NonZeroField",
        "BadShardStatus",
        "BadSettings",
        "BadMembers",
        "BadAddress",
        "BadUpdate",
        "TooManyUpdates",
        "BadRemove",
        "BadHolds",
    ] {
        assert!(
            records.iter().any(|r| r.opt("error") == Some(e)),
            "no invalid vector for {e}"
        );
    }
    // ... and every status code a reply can carry.
    for st in Status::ALL {
        assert!(
            records.iter().any(|r| r.opt("status") == Some(st.name())),
            "no reply vector with status {}",
            st.name()
        );
    }
    // ... every PEER record kind, every log command kind and every logged op.
    for k in PeerKind::ALL {
        let word = format!("type={}", k.name());
        assert!(
            records.iter().any(|r| r
                .fields
                .values()
                .any(|v| v.split_whitespace().any(|w| w == word))),
            "no PEER vector with a {} record",
            k.name()
        );
    }
    for k in LogCommandKind::ALL {
        assert!(
            records.iter().any(|r| r.opt("command") == Some(k.name())),
            "no log command vector of kind {}",
            k.name()
        );
    }
    for op in RequestKind::ALL.into_iter().filter(|k| k.is_logged()) {
        assert!(
            records
                .iter()
                .any(|r| r.opt("op") == Some(op.request_type().name())),
            "no REQUEST command vector with op {op:?}"
        );
    }
    // ... and every role a SHARD_STATUS_REPLY entry can name.
    for role in ShardRole::ALL {
        let word = format!("role={}", role.name());
        assert!(
            records.iter().any(|r| r
                .fields
                .values()
                .any(|v| v.split_whitespace().any(|w| w == word))),
            "no SHARD_STATUS_REPLY vector with a {} entry",
            role.name()
        );
    }
    // ... and every state a MEMBERS_REPLY entry can name.
    for state in ["alive", "suspect", "dead", "left"] {
        let word = format!("state={state}");
        assert!(
            records.iter().any(|r| r.get("kind") == "members-reply"
                && r.fields
                    .values()
                    .any(|v| v.split_whitespace().any(|w| w == word))),
            "no MEMBERS_REPLY vector with a {state} entry"
        );
    }
    assert!(counts["request"] >= 5 && counts["reply"] >= 6, "{counts:?}");
    assert!(
        counts["members-request"] >= 2 && counts["members-reply"] >= 3,
        "{counts:?}"
    );
    // ... every outcome of a REMOVE_REPLY, and a REMOVE whose MAC does not verify.
    for o in RemoveOutcome::ALL {
        assert!(
            records.iter().any(|r| r.opt("outcome") == Some(o.name())),
            "no REMOVE_REPLY vector with outcome {}",
            o.name()
        );
    }
    assert!(
        records
            .iter()
            .any(|r| r.get("kind") == "remove-request" && r.opt("verifies") == Some("0")),
        "no REMOVE vector whose MAC does not verify"
    );
    assert!(
        counts["shard-status-request"] >= 2 && counts["shard-status-reply"] >= 3,
        "{counts:?}"
    );
    assert!(
        counts["peer"] >= 7 && counts["command"] >= 6 && counts["shard"] >= 4,
        "{counts:?}"
    );
    // ... and authenticated datagrams of both node-to-node types, one whose MAC does not
    // verify, made with at least two keys (spec §8.11).
    assert!(counts["cluster-key"] >= 2, "{counts:?}");
    // ... and client authentication (spec §7.1.10): two client keys, sealed requests and
    // replies, one reply whose MAC does not verify, and a sealed request with a token.
    assert!(counts["client-key"] >= 2, "{counts:?}");
    for (kind, verifies) in [("request", "1"), ("reply", "1"), ("reply", "0")] {
        assert!(
            records.iter().any(|r| r.get("kind") == kind
                && r.opt("client_key").is_some()
                && r.opt("verifies") == Some(verifies)),
            "no sealed {kind} vector with verifies = {verifies}"
        );
    }
    assert!(records
        .iter()
        .any(|r| r.opt("client_key").is_some() && r.opt("address_token").is_some()));
    for (kind, verifies) in [("peer", "1"), ("peer", "0"), ("peer-settings", "1")] {
        assert!(
            records
                .iter()
                .any(|r| r.get("kind") == kind && r.opt("verifies") == Some(verifies)),
            "no authenticated {kind} vector with verifies = {verifies}"
        );
    }
}

fn check_holds_request(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "HOLDS", "[{}]", r.name);
    assert_eq!(r.num_or("flags", 0), 0, "[{}] HOLDS has no flag", r.name);
    let prefix = r.bytes("prefix");
    let expected = HoldsRequest {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        shard: r.num("shard") as u16,
        cursor: r.num("cursor"),
        prefix: &prefix,
    };
    let decoded = HoldsRequest::decode(&bytes)
        .unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    assert_eq!(
        bytes.len(),
        HEADER_LEN + HOLDS_FIXED_LEN + prefix.len() + r.num("padding") as usize,
        "[{}] padding",
        r.name
    );
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode_padded(&mut out, bytes.len()).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    // A server without it answers UNSUPPORTED (spec §4.13, §11).
    assert_eq!(Request::decode(&bytes), Err(DecodeError::UnknownType));
}

fn check_holds_reply(r: &Record) {
    let bytes = r.hex();
    assert_eq!(r.get("type"), "HOLDS_REPLY", "[{}]", r.name);
    assert_eq!(
        r.num_or("flags", 0),
        0,
        "[{}] this reply has no flag",
        r.name
    );
    let ids: Vec<(Vec<u8>, Vec<u8>)> = (1..=r.num("entries"))
        .map(|i| {
            let w = words(r, &format!("entry.{i}"));
            (parse_bytes(&w["resource"]), parse_bytes(&w["client"]))
        })
        .collect();
    let entries: Vec<HoldEntry> = (1..=r.num("entries"))
        .zip(&ids)
        .map(|(i, (resource, client))| {
            let w = words(r, &format!("entry.{i}"));
            HoldEntry {
                fencing_token: word_num(r, &w, "token"),
                hold_count: word_num(r, &w, "holds") as u32,
                lease_ms: word_num(r, &w, "lease_ms") as u32,
                waiter_count: word_num(r, &w, "waiters") as u32,
                resource,
                client,
            }
        })
        .collect();
    let status_name = r.get("status");
    let expected = HoldsReply {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        status: *Status::ALL
            .iter()
            .find(|s| s.name() == status_name)
            .expect("status name"),
        hint: parse_hint(r),
        shard: r.num("shard") as u16,
        shards: r.num("shards") as u16,
        cursor: r.num("cursor"),
        next_cursor: r.num("next_cursor"),
        entries: HoldEntries::from_slice(&entries),
    };
    let decoded =
        HoldsReply::decode(&bytes).unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode(&mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
    assert_eq!(n, expected.encoded_len(), "[{}]", r.name);
    assert_eq!(r.num("padding"), 0, "[{}] replies are not padded", r.name);
}
