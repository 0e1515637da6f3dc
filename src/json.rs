//! The `--json` outputs of the CLI and the benchmark: one `#[derive(Serialize)]` struct per
//! schema, printed by serde_json as one object on one line. The README's "JSON output"
//! section lists every schema's fields, their types and meaning; scripts rely on the field
//! names, so a field is only ever added, never renamed or removed.
//!
//! Decisions: a string is escaped by serde_json (RFC 8259 §7), so ids with quotes or control
//! bytes stay valid JSON; a figure that does not apply is `null`, and so is a float that is
//! not finite (NaN or infinite: serde_json would print `null` too, but the structs say it with
//! `Option` so the schema shows it); the benchmark's floats are rounded to 3 decimals (a
//! nanosecond, in its microsecond figures), as the hand-kept JSON printed them.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// `value` as one line of JSON. The output structs hold only strings, numbers, booleans,
/// options and sequences of them, which serde_json always serializes.
pub fn to_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("the output structs always serialize")
}

/// `s` as a JSON string literal, quotes included.
pub fn string(s: &str) -> String {
    to_line(&s)
}

/// `v` if it is a finite number (JSON has no NaN or infinity): else `None`, printed `null`.
pub fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `v` rounded to 3 decimals, `None` if not finite (see the module docs).
pub fn rounded(v: f64) -> Option<f64> {
    finite(v).map(|v| (v * 1_000.0).round() / 1_000.0)
}

/// `udplock acquire --json` and `udplock renew --json`: the hold after the reply.
#[derive(Serialize)]
pub struct Lease<'a> {
    pub resource: &'a str,
    pub client: &'a str,
    /// The fencing token of the hold (spec §5.3).
    pub token: u64,
    pub hold_count: u32,
    /// The lease the hold has from the reply on, in ms.
    pub ttl_ms: u32,
}

/// `udplock release --json`.
#[derive(Serialize)]
pub struct Released<'a> {
    pub resource: &'a str,
    pub client: &'a str,
    /// Holds left (0: the lock is free of this client).
    pub hold_count: u32,
}

/// `udplock configure --json`.
#[derive(Serialize)]
pub struct Configured<'a> {
    pub resource: &'a str,
    /// The default lease set, in ms; 0: cleared (the server's default applies).
    pub default_ttl_ms: u32,
}

/// `udplock status RESOURCE --json`.
#[derive(Serialize)]
pub struct LockStatus<'a> {
    pub resource: &'a str,
    /// Whether the lock is held (spec §5.3: free exactly when the hold count is 0), also when
    /// the holder's id did not fit in the reply.
    pub held: bool,
    /// `null` when free, or when the id did not fit (`holder_truncated`).
    pub holder: Option<&'a str>,
    pub holder_truncated: bool,
    pub hold_count: u32,
    pub token: u64,
    pub remaining_ttl_ms: u32,
    pub waiters: u32,
}

/// `udplock status --json` (no resource): the cluster as its nodes see it.
#[derive(Serialize)]
pub struct ClusterStatus {
    pub shards_total: usize,
    pub shards: Vec<ShardRow>,
    pub nodes: Vec<NodeRow>,
    pub members: Vec<MemberRow>,
    pub settings_differences: Vec<SettingDifference>,
}

/// One shard of [`ClusterStatus`]: three shapes, told apart by their fields.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ShardRow {
    /// No node that answered described the shard: `leader_id` is `null`.
    Unreported {
        shard: usize,
        leader_id: Option<u64>,
    },
    /// Every node that described it holds no replica (spec §5.6): `no_replica` is `true`.
    NoReplica {
        shard: usize,
        leader_id: Option<u64>,
        no_replica: bool,
    },
    /// The view of the node that leads it (else the highest term's).
    Held(HeldShard),
}

/// A shard some node holds a replica of.
#[derive(Serialize)]
pub struct HeldShard {
    pub shard: usize,
    pub leader_id: Option<u64>,
    /// The leader's address, if it answered.
    pub leader_address: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub held: u64,
    pub waiters: u64,
    /// The node whose view this is.
    pub reported_by: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// One node asked by `udplock status`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum NodeRow {
    Reachable {
        address: String,
        /// Always `true` in this shape.
        reachable: bool,
        node_id: u64,
        shards: usize,
        holds: usize,
        learner_in: usize,
        leads: usize,
    },
    Unreachable {
        address: String,
        /// Always `false` in this shape.
        reachable: bool,
        error: String,
    },
}

/// One member of the cluster, as SWIM's rule merges the nodes' tables (spec §4.9).
#[derive(Serialize)]
pub struct MemberRow {
    pub id: u64,
    pub state: &'static str,
    pub incarnation: u64,
    pub address: String,
    pub reported_by: u64,
    /// From the member's own NODE_SETTINGS answer; `null` if it was not asked or did not answer.
    pub cluster_id: Option<u64>,
    /// Its settings that must agree (spec §8.10), by name, in registry order; `null` as above.
    pub settings: Option<OrderedMap>,
    /// The must-agree settings on which it differs from most nodes; `null` as above.
    pub settings_differ: Option<Vec<&'static str>>,
    /// Whether it validates addresses (setting `address_validation`, spec §7.2.5, §10.7);
    /// `null` as above, or if it does not report the setting (an older node).
    pub address_validation: Option<bool>,
}

/// A JSON object whose keys keep the order given (serde_json's own map sorts them).
pub struct OrderedMap(pub Vec<(&'static str, u64)>);

impl Serialize for OrderedMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A setting whose value differs between the nodes that answered (spec §8.10).
#[derive(Serialize)]
pub struct SettingDifference {
    /// The setting's name in the registry, or `cluster_id`.
    pub setting: &'static str,
    pub must_be_equal: bool,
    pub values: Vec<NodeValue>,
}

#[derive(Serialize)]
pub struct NodeValue {
    pub node_id: u64,
    pub value: u64,
}

/// `udplock remove --json`.
#[derive(Serialize)]
pub struct Removed {
    pub node_id: u64,
    pub removed: bool,
    /// The outcome's name (spec §4.10).
    pub outcome: &'static str,
    /// The state the answering node holds the member in.
    pub state: &'static str,
    pub incarnation: u64,
    /// The node that answered.
    pub answered_by: u64,
    /// The address it was asked at.
    pub server: String,
}

/// `udplock bench --json`.
#[derive(Serialize)]
pub struct BenchReport<'a> {
    pub target: &'a str,
    pub cpus: usize,
    pub phases: Vec<BenchPhase<'a>>,
    pub notes: &'a [String],
}

/// One phase of [`BenchReport`]; figures in µs, rounded to 3 decimals; `null` where a figure
/// does not apply to the phase (or is not finite).
#[derive(Serialize)]
pub struct BenchPhase<'a> {
    pub name: &'a str,
    pub samples: u64,
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub ops_per_sec: Option<f64>,
    pub p50_ratio_to_rtt: Option<f64>,
    pub p50_ratio_to_replication_floor: Option<f64>,
    pub goal: Option<&'a str>,
    pub replicas: usize,
    pub server_cpu_us_per_grant: Option<f64>,
    pub server_cpu_ratio_to_floor: Option<f64>,
    pub grants_per_client_min: Option<u64>,
    pub grants_per_client_max: Option<u64>,
    pub rss_bytes_per_held_lock: Option<f64>,
    pub ops_ratio_to_first: Option<f64>,
    pub first_clients: Option<usize>,
    pub election_timeout_max_ms: Option<f64>,
    pub p50_ratio_to_election_timeout_max: Option<f64>,
    pub elections: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(string("orders/42"), "\"orders/42\"");
    }

    /// Issue 11 item 7: a NaN or an infinity printed as `{v:.3}` made invalid JSON.
    #[test]
    fn a_float_that_is_not_finite_is_null() {
        assert_eq!(rounded(f64::NAN), None);
        assert_eq!(rounded(f64::INFINITY), None);
        assert_eq!(rounded(f64::NEG_INFINITY), None);
        assert_eq!(rounded(12.3456), Some(12.346));
        #[derive(Serialize)]
        struct Figures {
            a: Option<f64>,
            b: Option<f64>,
        }
        let line = to_line(&Figures {
            a: rounded(f64::NAN),
            b: rounded(0.5),
        });
        assert_eq!(line, "{\"a\":null,\"b\":0.5}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(parsed["a"].is_null());
    }

    /// The field names and their order are the schema scripts read (README, "JSON output").
    #[test]
    fn the_lock_schemas_keep_their_fields() {
        let status = LockStatus {
            resource: "job/3",
            held: false,
            holder: None,
            holder_truncated: false,
            hold_count: 0,
            token: 0,
            remaining_ttl_ms: 0,
            waiters: 0,
        };
        assert_eq!(
            to_line(&status),
            "{\"resource\":\"job/3\",\"held\":false,\"holder\":null,\"holder_truncated\":false,\
             \"hold_count\":0,\"token\":0,\"remaining_ttl_ms\":0,\"waiters\":0}"
        );
        let rows = vec![
            ShardRow::Unreported {
                shard: 0,
                leader_id: None,
            },
            ShardRow::NoReplica {
                shard: 1,
                leader_id: None,
                no_replica: true,
            },
        ];
        assert_eq!(
            to_line(&rows),
            "[{\"shard\":0,\"leader_id\":null},{\"shard\":1,\"leader_id\":null,\"no_replica\":true}]"
        );
        let settings = OrderedMap(vec![("shards", 64), ("nodes", 3)]);
        assert_eq!(to_line(&settings), "{\"shards\":64,\"nodes\":3}");
    }
}

/// One line of `udplock status --holders [PREFIX] --json`: one hold (spec §5.10). Ids that
/// are not UTF-8 are shown with U+FFFD in place of each invalid sequence; JSON escapes every
/// control character, so no id reaches a terminal raw.
#[derive(Serialize)]
pub struct Hold<'a> {
    pub shard: u16,
    pub resource: &'a str,
    pub holder: &'a str,
    pub hold_count: u32,
    pub token: u64,
    pub remaining_ttl_ms: u32,
    pub waiters: u32,
}
