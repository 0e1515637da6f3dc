//! The placement vectors of spec/vectors/placement.txt (spec §8.13): every weight is the one
//! `placement_weight` computes, and ranking the nodes by the spec's rule (highest weight first,
//! the lower id on a tie) gives the ranking written beside them. The vectors were computed from
//! the spec with Python's hashlib, so this checks the code against the text. (The core's
//! `placement::rank` is checked against the same file in its own tests.) A file of its own:
//! the vectors are not datagrams, and `vectors.rs` parses datagram records.

use udplock_protocol::placement_weight;

const PLACEMENT: &str = include_str!("../../spec/vectors/placement.txt");

fn ids(words: &str) -> Vec<u64> {
    words
        .split_whitespace()
        .map(|w| w.parse().expect("decimal node id"))
        .collect()
}

#[test]
fn placement_vectors_match_the_spec() {
    let mut records = 0;
    for block in PLACEMENT.split("\n[").skip(1) {
        let name = block.split(']').next().unwrap();
        let field = |key: &str| -> &str {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("[{name}] has no `{key}`"))
        };
        let shard: u32 = field("shard").parse().unwrap();
        let nodes = ids(field("nodes"));
        for &node in &nodes {
            let hex = field(&format!("weight.{node}"));
            let want = u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap();
            assert_eq!(
                placement_weight(node, shard),
                want,
                "[{name}] weight of node {node}"
            );
        }
        let mut ranked = nodes.clone();
        ranked.sort_by_key(|&n| (std::cmp::Reverse(placement_weight(n, shard)), n));
        assert_eq!(ranked, ids(field("ranking")), "[{name}] ranking");
        records += 1;
    }
    assert!(records >= 4, "the file holds {records} records");
}
