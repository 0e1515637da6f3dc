//! The golden test vectors of spec/vectors/ (spec Appendix A): every valid datagram decodes to
//! exactly the field values written beside it, and encoding those values gives the same bytes;
//! every invalid one fails with the decode error it names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use udplock_protocol::*;

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

fn check_request(r: &Record) {
    let bytes = r.hex();
    let resource = r.bytes("resource");
    let client = r.opt("client").map(parse_bytes).unwrap_or_default();
    let num32 = |k: &str| r.num(k) as u32;
    let body = match msg_type(r.get("type")) {
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
        other => panic!("[{}] {other:?} is not a request", r.name),
    };
    assert_eq!(
        r.num_or("flags", 0),
        0,
        "[{}] requests carry no flags",
        r.name
    );
    let expected = Request {
        session_id: r.num("session_id"),
        request_id: r.num("request_id"),
        attempt: r.num("attempt") as u16,
        body,
    };
    let decoded =
        Request::decode(&bytes).unwrap_or_else(|e| panic!("[{}] does not decode: {e}", r.name));
    assert_eq!(decoded, expected, "[{}] decoded fields differ", r.name);
    let padding = r.num_or("padding", 0) as usize;
    assert_eq!(
        bytes.len(),
        HEADER_LEN + decoded.body.body_len() + padding,
        "[{}] padding",
        r.name
    );
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    let n = expected.encode_padded(&mut out, bytes.len()).unwrap();
    assert_eq!(&out[..n], &bytes[..], "[{}] re-encoding differs", r.name);
}

fn check_reply(r: &Record) {
    let bytes = r.hex();
    let holder = r.opt("holder").map(parse_bytes).unwrap_or_default();
    let hint_text = r.opt("hint").unwrap_or("none");
    let hint = match hint_text.split_whitespace().collect::<Vec<_>>().as_slice() {
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
        _ => panic!("[{}] bad hint {hint_text:?}", r.name),
    };
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
        "request" => Request::decode(&bytes).err(),
        "reply" => Reply::decode(&bytes).err(),
        other => panic!("[{}] decode_as {other:?}", r.name),
    };
    let got = got.unwrap_or_else(|| panic!("[{}] decoded, but should fail with {want}", r.name));
    assert_eq!(got.name(), want, "[{}] wrong decode error", r.name);
}

/// The vectors printed in the spec's Appendix A.2 are the same bytes as the vector files.
#[test]
fn spec_appendix_shows_the_vector_files_bytes() {
    let spec = include_str!("../../spec/protocol.md");
    let appendix = &spec[spec.find("### A.2").expect("spec has Appendix A.2")..];
    // Only the fenced blocks hold records.
    let blocks: String = appendix
        .split("```")
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .join("\n");
    let blocks: &'static str = Box::leak(blocks.into_boxed_str());
    let shown = parse_records("protocol.md", blocks);
    assert!(
        shown.len() >= 5,
        "Appendix A.2 shows {} vectors",
        shown.len()
    );
    let files = records();
    for r in &shown {
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
        "ReservedNonZero",
        "BadBodyLength",
        "NonZeroPadding",
        "ZeroId",
        "EmptyId",
        "BadHintKind",
        "UnknownStatus",
        "BadHolderLength",
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
    assert!(counts["request"] >= 5 && counts["reply"] >= 6, "{counts:?}");
}
