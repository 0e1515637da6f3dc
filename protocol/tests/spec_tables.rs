//! The spec's registry tables (§10: 10.1 to 10.3 and 10.7 in spec/client-protocol.md, 10.4 and
//! 10.5 in spec/node-protocol.md) must list exactly the registry of
//! `udplock_protocol::registry`: same values, same names, same meanings, same order.

use udplock_protocol::registry::FLAG_TABLE;
use udplock_protocol::{LogCommandKind, MessageType, PeerKind, Setting, Status};

/// The client protocol: the registries a client reads (and the node reads too).
const CLIENT_SPEC: &str = include_str!("../../spec/client-protocol.md");
/// The node-to-node protocol: the registries only nodes read.
const NODE_SPEC: &str = include_str!("../../spec/node-protocol.md");

/// The rows of the first table after the first heading of `spec` that contains `heading`, as
/// cells.
fn table_after(spec: &str, heading: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = spec
        .lines()
        .skip_while(|l| !(l.starts_with('#') && l.contains(heading)));
    assert!(
        lines.next().is_some(),
        "spec has no heading containing {heading:?}"
    );
    let mut lines = lines.skip_while(|l| !l.trim_start().starts_with('|'));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no table after {heading:?}"));
    let norm = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(norm(head), norm(header), "table header after {heading:?}");
    lines
        .skip(1) // the |---| line
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

fn parse(v: &str) -> u64 {
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).expect("hex value"),
        None => v.parse().expect("decimal value"),
    }
}

#[test]
fn message_type_table_matches_registry() {
    let rows = table_after(
        CLIENT_SPEC,
        "Message type registry",
        "| Value | Name | Meaning |",
    );
    let spec: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| (parse(&r[0]), r[1].as_str(), r[2].as_str()))
        .collect();
    let code: Vec<(u64, &str, &str)> = MessageType::ALL
        .iter()
        .map(|t| (t.to_wire() as u64, t.name(), t.meaning()))
        .collect();
    assert_eq!(spec, code);
}

#[test]
fn status_code_table_matches_registry() {
    let rows = table_after(
        CLIENT_SPEC,
        "Status code registry",
        "| Value | Name | Meaning |",
    );
    let spec: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| (parse(&r[0]), r[1].as_str(), r[2].as_str()))
        .collect();
    let code: Vec<(u64, &str, &str)> = Status::ALL
        .iter()
        .map(|s| (s.to_wire() as u64, s.name(), s.meaning()))
        .collect();
    assert_eq!(spec, code);
}

#[test]
fn flag_table_matches_registry() {
    let rows = table_after(CLIENT_SPEC, "Flag registry", "| Bit | Name | Meaning |");
    let spec: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| (parse(&r[0]), r[1].as_str(), r[2].as_str()))
        .collect();
    let code: Vec<(u64, &str, &str)> = FLAG_TABLE
        .iter()
        .map(|&(b, n, m)| (b as u64, n, m))
        .collect();
    assert_eq!(spec, code);
    // FLAG_TABLE itself must match the bitflags type.
    for &(bit, name, _) in FLAG_TABLE {
        let flag = udplock_protocol::Flags::from_name(name).expect("flag name");
        assert_eq!(flag.bits(), bit);
    }
}

#[test]
fn peer_record_kind_table_matches_registry() {
    let rows = table_after(
        NODE_SPEC,
        "PEER record kind registry",
        "| Value | Name | Meaning |",
    );
    let spec: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| (parse(&r[0]), r[1].as_str(), r[2].as_str()))
        .collect();
    let code: Vec<(u64, &str, &str)> = PeerKind::ALL
        .iter()
        .map(|k| (k.to_wire() as u64, k.name(), k.meaning()))
        .collect();
    assert_eq!(spec, code);
}

#[test]
fn log_command_kind_table_matches_registry() {
    let rows = table_after(
        NODE_SPEC,
        "Log command kind registry",
        "| Value | Name | Meaning |",
    );
    let spec: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| (parse(&r[0]), r[1].as_str(), r[2].as_str()))
        .collect();
    let code: Vec<(u64, &str, &str)> = LogCommandKind::ALL
        .iter()
        .map(|k| (k.to_wire() as u64, k.name(), k.meaning()))
        .collect();
    assert_eq!(spec, code);
}

#[test]
fn setting_table_matches_registry() {
    let rows = table_after(
        CLIENT_SPEC,
        "Setting registry",
        "| Value | Name | Meaning |",
    );
    let spec: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| (parse(&r[0]), r[1].as_str(), r[2].as_str()))
        .collect();
    let code: Vec<(u64, &str, &str)> = Setting::ALL
        .iter()
        .map(|k| (k.to_wire() as u64, k.name(), k.meaning()))
        .collect();
    assert_eq!(spec, code);
    // "must be equal" in the meaning is what `must_be_equal` says.
    for k in Setting::ALL {
        assert_eq!(
            k.must_be_equal(),
            k.meaning().ends_with("must be equal."),
            "{k:?}"
        );
    }
}

#[test]
fn message_type_table_lists_peer() {
    let rows = table_after(
        CLIENT_SPEC,
        "Message type registry",
        "| Value | Name | Meaning |",
    );
    assert!(rows.iter().any(|r| r[0] == "0x40" && r[1] == "PEER"));
    assert!(MessageType::Peer.is_node_to_node());
}

/// Spec §5.9 names REMOVE_REPLY's outcomes with their values, in the codec's order, and
/// reserves the rest.
#[test]
fn remove_outcomes_match_the_spec() {
    use udplock_protocol::RemoveOutcome;
    let listed: Vec<String> = RemoveOutcome::ALL
        .iter()
        .map(|o| format!("{} {}", o.to_wire(), o.name()))
        .collect();
    let sentence = format!(
        "With OK: {}. Values 0 and {} to 255 are reserved.",
        listed.join(", "),
        RemoveOutcome::ALL.len() + 1
    );
    assert!(
        CLIENT_SPEC.contains(&sentence),
        "spec §5.9 does not say {sentence:?}"
    );
    for (i, o) in RemoveOutcome::ALL.iter().enumerate() {
        assert_eq!(usize::from(o.to_wire()), i + 1);
        assert_eq!(RemoveOutcome::from_wire(o.to_wire()), Some(*o));
    }
    assert_eq!(RemoveOutcome::from_wire(0), None);
}
