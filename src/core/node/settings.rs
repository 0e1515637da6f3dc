//! Settings between nodes (spec §8.10, issue 7 item 10): every node tells every other node
//! its settings (PEER_SETTINGS, never answered) — at its start, to a node new to it or whose
//! settings it hears changed at once, and to the others in turn, a bounded number a period
//! ([`SETTINGS_PEERS_PER_PERIOD_MAX`], [`PeerSettingsLog::due`]) —, compares what it hears with its own, and
//! says — in its log, rate-limited, naming the setting — when a peer's differ; and it tells a
//! client that asks (NODE_SETTINGS), for `udplock status`.
//!
//! Settings that must be equal (in the cluster id, or the cluster's shape) keep two nodes
//! that differ in them from forming one cluster: PEER datagrams with another cluster id are
//! dropped (spec §8.3). This exchange does not change that, and changes no Raft or lock
//! state; it only makes the cut visible. Settings a leader logs (spec §8.8) may differ
//! safely (a rolling change under way); a difference there is still logged at error level,
//! since clients get different defaults depending on which node leads their shard.
//!
//! Only a node of the address book, from its address there, is heard (the same check as
//! PEER, spec §8.3 rule 3, without the stranger rule): any other sender changes nothing, not
//! even what this node reports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use udplock_protocol::{PeerSettings, Setting, SettingValue};

use super::Config;
use crate::core::raft::{NodeId, NodeShared, PeerLogKind};
use crate::core::time::{Duration, Instant};

/// How often a node sends its settings to the nodes that are due ([`PeerSettingsLog::due`]):
/// often enough that a node restarted with another value is named within seconds, seldom
/// enough to cost nothing (one datagram of ~184 bytes per node due, 15 settings).
pub const SETTINGS_PERIOD: Duration = Duration::from_millis(5_000);

/// Most nodes of the address book a node sends its settings to in one [`SETTINGS_PERIOD`]
/// besides the ones it has not told yet (spec §8.10 rule 1): the others in turn, so each
/// hears them every ⌈n / 32⌉ periods. Up to 32 other nodes that is every period, as
/// before; at 1,000 members it keeps a node's settings traffic at 6.4 datagrams a second
/// instead of 200, while a node new to the book, or whose settings changed (a restart with
/// another value, a fix), is told at the next period whatever the group size ([`due`]).
///
/// [`due`]: PeerSettingsLog::due
pub const SETTINGS_PEERS_PER_PERIOD_MAX: usize = 32;

/// How often a node says again that a peer's settings still differ (it says so at once when
/// the set of differing settings changes).
pub const SETTINGS_LOG_PERIOD: Duration = Duration::from_millis(60_000);

/// A setting whose value differs between this node and a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingDifference {
    pub setting: Setting,
    /// This node's value (for `nodes`, the digest).
    pub here: u64,
    /// The peer's.
    pub there: u64,
}

/// What this node last heard of one peer's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSettingsView {
    /// The settings that differ, in registry order.
    pub differences: Vec<SettingDifference>,
    /// The peer's cluster id differs from this node's (so they do not form one cluster).
    pub cluster_id_differs: bool,
}

impl PeerSettingsView {
    /// True if the two nodes cannot form one cluster.
    pub fn cut_off(&self) -> bool {
        self.cluster_id_differs
    }
}

/// This node's settings in the order of the registry (spec §10.7).
pub fn own_settings(config: &Config) -> Vec<SettingValue> {
    let t = &config.table;
    let digest = udplock_protocol::shard_hash(config.nodes_text().as_bytes());
    Setting::ALL
        .iter()
        .map(|&setting| SettingValue {
            setting: setting.to_wire(),
            value: match setting {
                Setting::Nodes => digest,
                Setting::Shards => u64::from(config.shards),
                Setting::ResourcesMax => u64::from(t.resources_max),
                Setting::WaitersPerResourceMax => u64::from(t.waiters_per_resource_max),
                Setting::WaitersMax => u64::from(t.waiters_max),
                Setting::HoldsPerLockMax => u64::from(t.holds_per_lock_max),
                Setting::SessionsMax => u64::from(t.sessions_max),
                Setting::AnswersPerSessionMax => u64::from(t.answers_per_session_max),
                Setting::SessionIdleMs => u64::from(t.session_idle_ms),
                Setting::TtlMsMax => u64::from(t.ttl_ms_max),
                Setting::WaitMsMax => u64::from(t.wait_ms_max),
                Setting::TtlDefaultMs => u64::from(t.ttl_default_ms),
                Setting::RetryAfterMs => u64::from(t.retry_after_ms),
                Setting::StartupGraceMs => u64::from(t.startup_grace_ms),
                Setting::AddressValidation => u64::from(config.address_validation),
            },
        })
        .collect()
}

/// The settings of `theirs` that differ from `ours` (spec §8.10 rule 3): known codes both
/// list, the first entry of a code counting.
pub fn compare(
    ours: &[SettingValue],
    theirs: impl Iterator<Item = SettingValue>,
) -> Vec<SettingDifference> {
    let mut seen = Vec::new();
    let mut differences = Vec::new();
    for v in theirs {
        if seen.contains(&v.setting) {
            continue;
        }
        seen.push(v.setting);
        let Some(setting) = Setting::from_wire(v.setting) else {
            continue;
        };
        if let Some(mine) = ours.iter().find(|m| m.setting == v.setting) {
            if mine.value != v.value {
                differences.push(SettingDifference {
                    setting,
                    here: mine.value,
                    there: v.value,
                });
            }
        }
    }
    differences.sort_by_key(|d| d.setting.to_wire());
    differences
}

/// Per peer: what it last said, and when this node last logged about it.
pub struct PeerSettingsLog {
    node_id: NodeId,
    cluster_id: u64,
    own: Vec<SettingValue>,
    /// What each peer last said, as [`super::Node::peer_settings`] reports it.
    views: BTreeMap<NodeId, PeerSettingsView>,
    logged: BTreeMap<NodeId, (Instant, PeerSettingsView)>,
    /// Nodes of the address book told this node's settings since they entered it and since
    /// their own settings last changed as heard here ([`PeerSettingsLog::due`]).
    told: BTreeSet<NodeId>,
    /// The last node told in turn: the next turn starts after it.
    turn: NodeId,
    /// The node's budget of log lines about peer input: settings that keep changing (a
    /// faulty or forged peer) log at most `PEER_LOG_LINES_MAX` lines per period.
    shared: NodeShared,
}

impl PeerSettingsLog {
    pub fn new(config: &Config, shared: &NodeShared) -> PeerSettingsLog {
        PeerSettingsLog {
            node_id: config.node_id,
            cluster_id: config.cluster_id(),
            own: own_settings(config),
            views: BTreeMap::new(),
            logged: BTreeMap::new(),
            told: BTreeSet::new(),
            turn: 0,
            shared: shared.clone(),
        }
    }

    pub fn own(&self) -> &[SettingValue] {
        &self.own
    }

    /// Per peer heard from: the settings that differ from this node's.
    pub fn views(&self) -> &BTreeMap<NodeId, PeerSettingsView> {
        &self.views
    }

    /// Node `id` left the address book (SWIM forgot it): nothing of it is kept, so the
    /// views stay bounded by the book however many members come and go. If it comes back,
    /// its next PEER_SETTINGS makes a new view, and it is told this node's at once.
    pub fn forget(&mut self, id: NodeId) {
        self.views.remove(&id);
        self.logged.remove(&id);
        self.told.remove(&id);
    }

    /// The nodes of `book` (the address book's nodes, by id) to send this node's settings
    /// to this [`SETTINGS_PERIOD`] (spec §8.10 rule 1): every node not told yet — new to
    /// the book (this node's start: all of them), or whose settings, as heard here, changed
    /// since it was told, so that a node restarted with another value hears back at once
    /// and both say so — and [`SETTINGS_PEERS_PER_PERIOD_MAX`] of the others, in id order
    /// from where the last turn stopped. Marks them told.
    pub fn due(
        &mut self,
        book: impl Iterator<Item = (NodeId, SocketAddr)>,
    ) -> Vec<(NodeId, SocketAddr)> {
        let nodes: Vec<(NodeId, SocketAddr)> = book.collect();
        assert!(
            nodes.windows(2).all(|w| w[0].0 < w[1].0),
            "the book is by id"
        );
        let (new, known): (Vec<_>, Vec<_>) =
            nodes.iter().partition(|(id, _)| !self.told.contains(id));
        let start = known.partition_point(|(id, _)| *id <= self.turn);
        let in_turn: Vec<(NodeId, SocketAddr)> = known[start..]
            .iter()
            .chain(&known[..start])
            .take(SETTINGS_PEERS_PER_PERIOD_MAX)
            .copied()
            .collect();
        if let Some(&(last, _)) = in_turn.last() {
            self.turn = last;
        }
        self.told.extend(new.iter().map(|(id, _)| *id));
        new.into_iter().chain(in_turn).collect()
    }

    /// A PEER_SETTINGS from `from` (already checked to be a listed node at its listed
    /// address `addr`): compare, record, and log when due.
    pub fn heard(&mut self, now: Instant, from: NodeId, addr: SocketAddr, p: &PeerSettings<'_>) {
        let view = PeerSettingsView {
            differences: compare(&self.own, p.values.iter()),
            cluster_id_differs: p.header.cluster_id != self.cluster_id,
        };
        if self.views.insert(from, view.clone()).as_ref() != Some(&view) {
            // Heard for the first time, or changed (a restart with other settings, or with
            // them fixed): tell it this node's at the next period, so it says so too.
            self.told.remove(&from);
        }
        let me = self.node_id;
        let agreeing = view == PeerSettingsView::default();
        let (logged_at, logged_view) = self
            .logged
            .get(&from)
            .cloned()
            .unwrap_or((Instant::ZERO, PeerSettingsView::default()));
        if view == logged_view && (agreeing || now < logged_at + SETTINGS_LOG_PERIOD) {
            return;
        }
        let line = self.shared.peer_log().admit(PeerLogKind::Settings, now);
        if agreeing {
            if let Some(skipped) = line {
                log::info!(
                    "udplock node {me}: node {from} ({addr}) agrees on every setting \
                     again{skipped}"
                );
            }
            self.logged.remove(&from);
            return;
        }
        self.logged.insert(from, (now, view.clone()));
        let Some(skipped) = line else {
            return;
        };
        let named: Vec<String> = view
            .differences
            .iter()
            .map(|d| format!("{} {} here, {} there", d.setting.name(), d.here, d.there))
            .collect();
        let must: Vec<String> = view
            .differences
            .iter()
            .filter(|d| d.setting.must_be_equal())
            .map(|d| d.setting.name().to_string())
            .collect();
        if view.cluster_id_differs {
            let why = if must.is_empty() {
                " for a reason it does not name (another version or implementation?)".to_string()
            } else {
                format!(": {} must be equal on every node", must.join(", "))
            };
            log::error!(
                "udplock node {me}: node {from} ({addr}) is not in this node's cluster: its \
                 cluster id differs{why}. The two drop each other's Raft traffic until it is \
                 fixed (spec §8.10). Settings that differ: {}{skipped}",
                if named.is_empty() {
                    "none listed".to_string()
                } else {
                    named.join("; ")
                }
            );
        } else {
            // Safe (each leader logs the values it applies), but still an error: which
            // default a client gets depends on which node leads its shard until every node
            // agrees (issue 7 item 10 asks for error level for every difference).
            log::error!(
                "udplock node {me}: node {from} ({addr}) has other settings, which may differ \
                 safely (each leader logs the values it applies, spec §8.8; each node \
                 validates addresses or not, §7.2.5), but clients are served differently \
                 depending on which node leads or answers: {}. A rolling change not yet done \
                 everywhere?{skipped}",
                named.join("; ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::raft::shared::log_lines;
    use udplock_protocol::{PeerHeader, SettingValues};

    /// Issue 8 item 4: a node logs at once whenever the settings a peer reports change, so
    /// PEER_SETTINGS datagrams that alternate between two values (forged from a listed
    /// node's address on a cluster without a key, or a faulty peer) made it log one line per
    /// datagram. Such lines are now within the node's budget of lines about peer input.
    #[test]
    fn peer_settings_that_keep_changing_write_a_bounded_number_of_log_lines() {
        let peers = vec![
            (1, "127.0.0.1:7101".parse().unwrap()),
            (2, "127.0.0.1:7102".parse().unwrap()),
        ];
        let config = Config::new(1, peers.clone());
        let mut log = PeerSettingsLog::new(&config, &NodeShared::new());
        let mut theirs = own_settings(&config);
        let position = theirs
            .iter()
            .position(|v| v.setting == Setting::TtlDefaultMs.to_wire())
            .unwrap();
        let before = log_lines::written();
        let now = Instant::from_micros(1_000_000);
        for n in 0..1_000u64 {
            theirs[position].value = 30_000 + n % 3;
            let p = PeerSettings {
                header: PeerHeader {
                    cluster_id: config.cluster_id(),
                    from: 2,
                },
                auth: None,
                values: SettingValues::from_slice(&theirs),
            };
            log.heard(now, 2, peers[1].1, &p);
        }
        let written = log_lines::written() - before;
        assert!(
            written <= u64::from(crate::core::raft::PEER_LOG_LINES_MAX),
            "1,000 PEER_SETTINGS wrote {written} log lines"
        );
    }

    fn book(ids: impl Iterator<Item = NodeId>) -> Vec<(NodeId, SocketAddr)> {
        ids.map(|id| {
            (
                id,
                SocketAddr::from(([10, 0, 0, id as u8], 7000 + id as u16)),
            )
        })
        .collect()
    }

    /// Spec §8.10 rule 1: every node of the book at the first period; then up to
    /// `SETTINGS_PEERS_PER_PERIOD_MAX` a period in turn, so each is told every
    /// ⌈n / max⌉ periods; a node new to the book, and one whose settings changed, at the next
    /// period besides. A book of at most the maximum is told whole every period.
    #[test]
    fn settings_go_to_new_and_changed_nodes_at_once_and_to_the_others_in_turn() {
        let config = Config::new(1, vec![(1, "127.0.0.1:7101".parse().unwrap())]);
        let mut log = PeerSettingsLog::new(&config, &NodeShared::new());
        let max = SETTINGS_PEERS_PER_PERIOD_MAX;
        let small = book(2..2 + max as u64);
        for _ in 0..3 {
            assert_eq!(log.due(small.iter().copied()), small);
        }
        let mut log = PeerSettingsLog::new(&config, &NodeShared::new());
        let n = 100;
        let big = book(2..2 + n);
        assert_eq!(
            log.due(big.iter().copied()).len(),
            n as usize,
            "all at first"
        );
        let periods = (n as usize).div_ceil(max);
        let mut told = BTreeMap::new();
        for _ in 0..periods {
            let due = log.due(big.iter().copied());
            assert_eq!(due.len(), max);
            for (id, _) in due {
                *told.entry(id).or_insert(0) += 1;
            }
        }
        assert_eq!(told.len(), n as usize, "each in {periods} periods");
        assert!(told.values().all(|&c| c <= 2), "{told:?}");
        // A node new to the book, and one whose settings changed: at the next period.
        let mut bigger = big.clone();
        bigger.push((200, "10.0.0.200:7200".parse().unwrap()));
        let changed = big[40];
        let mut theirs = own_settings(&config);
        theirs[1].value += 1;
        let p = PeerSettings {
            header: PeerHeader {
                cluster_id: config.cluster_id(),
                from: changed.0,
            },
            auth: None,
            values: SettingValues::from_slice(&theirs),
        };
        let now = Instant::from_micros(1);
        log.heard(now, changed.0, changed.1, &p);
        let due = log.due(bigger.iter().copied());
        assert_eq!(due.len(), max + 2);
        assert!(due.contains(&changed) && due.contains(&bigger[n as usize]));
        // Heard the same again: nothing extra. Forgotten and back: new again.
        log.heard(now, changed.0, changed.1, &p);
        assert_eq!(log.due(bigger.iter().copied()).len(), max);
        log.forget(200);
        assert!(log
            .due(bigger.iter().copied())
            .contains(&(200, bigger[n as usize].1)));
    }

    /// Spec §10.7: setting 15 says whether the node validates addresses (§7.2.5), and a
    /// difference in it may differ: the two nodes still form one cluster.
    #[test]
    fn a_node_reports_whether_it_validates_addresses() {
        let peers = vec![(1, "127.0.0.1:7101".parse().unwrap())];
        let value = |config: &Config| {
            own_settings(config)
                .iter()
                .find(|v| v.setting == Setting::AddressValidation.to_wire())
                .map(|v| v.value)
        };
        let on = Config::new(1, peers.clone());
        assert!(on.address_validation);
        assert_eq!(value(&on), Some(1));
        let off = Config {
            address_validation: false,
            ..Config::new(1, peers)
        };
        assert_eq!(value(&off), Some(0));
        assert_eq!(on.cluster_id(), off.cluster_id());
        let differences = compare(&own_settings(&on), own_settings(&off).into_iter());
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].setting, Setting::AddressValidation);
        assert!(!differences[0].setting.must_be_equal());
    }

    #[test]
    fn only_known_settings_both_list_are_compared_and_the_first_entry_counts() {
        let ours = [
            SettingValue {
                setting: Setting::Shards.to_wire(),
                value: 64,
            },
            SettingValue {
                setting: Setting::ResourcesMax.to_wire(),
                value: 10,
            },
            SettingValue {
                setting: Setting::TtlDefaultMs.to_wire(),
                value: 30_000,
            },
        ];
        let theirs = [
            SettingValue {
                setting: Setting::TtlDefaultMs.to_wire(),
                value: 45_000,
            },
            SettingValue {
                setting: Setting::TtlDefaultMs.to_wire(),
                value: 30_000,
            },
            SettingValue {
                setting: 999,
                value: 1,
            },
            SettingValue {
                setting: Setting::Shards.to_wire(),
                value: 64,
            },
            SettingValue {
                setting: Setting::WaitMsMax.to_wire(),
                value: 5,
            },
        ];
        assert_eq!(
            compare(&ours, theirs.into_iter()),
            vec![SettingDifference {
                setting: Setting::TtlDefaultMs,
                here: 30_000,
                there: 45_000
            }]
        );
    }
}
