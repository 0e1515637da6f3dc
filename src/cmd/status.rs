//! `udplock status`: one lock's state, or without a resource every shard of the cluster
//! as its nodes see them (spec §4.7), the members their SWIM tables hold (spec §4.9) and the
//! settings on which they differ (spec §8.10).

use std::net::SocketAddr;

use clap::Args;
use udplock::{json, Client, LockError};

use super::args::{connect, ClientArgs};
use super::out::escaped;

#[derive(Args)]
pub struct StatusArgs {
    /// The resource to inspect. Omitted: ask every node of --servers, and the alive members
    /// they list, for its view of the shards (spec §4.7) and print one row per shard (its leader, term, commit index, held
    /// locks and waiters, as the node that leads it says), one line per node, and one row
    /// per member of the cluster (state, incarnation, address, and whether its settings that
    /// must agree do), as SWIM's rule merges the nodes' member tables (spec §4.9).
    resource: Option<String>,
    /// Who holds what: one line per hold of the whole cluster (resource, holder, hold count,
    /// fencing token, lease left, waiters), each shard walked through its leader (HOLDS,
    /// spec §4.13); with PREFIX, only holders whose client id starts with it. Ids are printed
    /// escaped.
    #[arg(
        long,
        value_name = "PREFIX",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with = "resource"
    )]
    holders: Option<String>,
    #[command(flatten)]
    conn: ClientArgs,
}

/// `udplock status [RESOURCE]`.
pub fn run(a: StatusArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, None)?;
    if let Some(prefix) = a.holders.as_deref() {
        return a.print_holders(&client, prefix);
    }
    let Some(resource) = a.resource.as_deref() else {
        return a.print_shards(&client);
    };
    let s = client.status(resource)?;
    if a.conn.json {
        // `held` says free or held even when the holder's id did not fit (spec §5.3:
        // a lock is free exactly when its hold count is 0).
        println!(
            "{}",
            json::to_line(&json::LockStatus {
                resource,
                held: s.hold_count > 0,
                holder: s.holder.as_deref(),
                holder_truncated: s.holder_truncated,
                hold_count: s.hold_count,
                token: s.fencing_token,
                remaining_ttl_ms: s.remaining_ttl_ms,
                waiters: s.waiter_count,
            })
        );
    } else {
        // Ids printed for a person are escaped: a holder's id is whatever some client sent
        // (issue 12 item 5), and the resource may hold anything its caller typed.
        let resource = escaped(resource);
        let holder = match (&s.holder, s.holder_truncated) {
            (Some(h), _) => escaped(h),
            (None, true) => "a client whose id did not fit in the reply".into(),
            (None, false) => "".into(),
        };
        if s.hold_count == 0 {
            println!("{resource}: free, {} waiting", s.waiter_count);
        } else {
            println!(
                "{resource}: held by {holder} (hold count {}, fencing token {}, {} ms left), {} waiting",
                s.hold_count,
                s.fencing_token,
                s.remaining_ttl_ms,
                s.waiter_count
            );
        }
    }
    Ok(())
}

impl StatusArgs {
    /// `udplock status --holders [PREFIX]`: one line per hold, as the walk finds them (shard
    /// by shard, in token order within a shard), then a count. A line is printed as soon as
    /// its page arrives, so a large cluster's listing streams.
    fn print_holders(&self, client: &Client, prefix: &str) -> Result<(), LockError> {
        let mut count = 0u64;
        client.for_each_hold(prefix.as_bytes(), |h| {
            count += 1;
            if self.conn.json {
                println!(
                    "{}",
                    json::to_line(&json::Hold {
                        shard: h.shard,
                        resource: &String::from_utf8_lossy(&h.resource),
                        holder: &String::from_utf8_lossy(&h.client),
                        hold_count: h.hold_count,
                        token: h.fencing_token,
                        remaining_ttl_ms: h.lease_ms,
                        waiters: h.waiters,
                    })
                );
            } else {
                // Any client chooses its id: escaped, so none can write to the terminal
                // (issue 12 item 5).
                println!(
                    "{}: held by {} (hold count {}, fencing token {}, {} ms left), {} waiting",
                    escaped_bytes(&h.resource),
                    escaped_bytes(&h.client),
                    h.hold_count,
                    h.fencing_token,
                    h.lease_ms,
                    h.waiters
                );
            }
            true
        })?;
        if !self.conn.json {
            let whose = if prefix.is_empty() {
                String::new()
            } else {
                format!(" of client ids starting with {}", escaped(prefix))
            };
            println!("{count} holds{whose}");
        }
        Ok(())
    }

    /// `udplock status` without a resource: the cluster's shards. Every node is asked at once
    /// (an unreachable one costs its timeout, once); for each shard the view of the node that
    /// says it leads, in the highest term, is shown (else the view with the highest term).
    /// Fails only if no node answers.
    fn print_shards(&self, client: &Client) -> Result<(), LockError> {
        use udplock::client::{MembersReport, NodeSettingsReport, ShardRole, ShardStatusReport};
        let servers = client.servers().to_vec();
        type Asked = (
            Result<ShardStatusReport, LockError>,
            Option<NodeSettingsReport>,
            Option<MembersReport>,
        );
        let ask = |servers: &[SocketAddr]| -> Vec<(SocketAddr, Asked)> {
            std::thread::scope(|scope| {
                let asks: Vec<_> = servers
                    .iter()
                    .map(|&addr| {
                        let ask = scope.spawn(move || {
                            let shards = client.shard_status(addr);
                            // Only a node that answered is asked for its settings too.
                            let settings = shards
                                .as_ref()
                                .ok()
                                .and_then(|_| client.node_settings(addr).ok());
                            let members =
                                shards.as_ref().ok().and_then(|_| client.members(addr).ok());
                            (shards, settings, members)
                        });
                        (addr, ask)
                    })
                    .collect();
                asks.into_iter()
                    .map(|(addr, ask)| {
                        let result = ask.join().unwrap_or_else(|_| {
                            (
                                Err(LockError::InternalError(
                                    "shard status thread panicked".into(),
                                )),
                                None,
                                None,
                            )
                        });
                        (addr, result)
                    })
                    .collect()
            })
        };
        let mut asked = ask(&servers);
        // One reachable node is enough: the alive members the answering nodes list and
        // --servers does not name are asked too (spec §7.1.8).
        let tables = asked
            .iter()
            .filter_map(|(addr, (_, _, table))| Some((*addr, table.as_ref()?)));
        let more = members_not_asked(tables, &servers);
        if !more.is_empty() {
            asked.extend(ask(&more));
        }
        let settings: Vec<NodeSettingsReport> = asked
            .iter()
            .filter_map(|(_, (_, s, _))| s.clone())
            .collect();
        let tables: Vec<MembersReport> = asked
            .iter()
            .filter_map(|(_, (_, _, m))| m.clone())
            .collect();
        let views: Vec<(SocketAddr, Result<ShardStatusReport, LockError>)> = asked
            .into_iter()
            .map(|(addr, (r, _, _))| (addr, r))
            .collect();
        let answered: Vec<(SocketAddr, &ShardStatusReport)> = views
            .iter()
            .filter_map(|(addr, r)| r.as_ref().ok().map(|r| (*addr, r)))
            .collect();
        if answered.is_empty() {
            // Every node failed: report the first failure (its exit code says which kind).
            let (addr, error) = views
                .into_iter()
                .find_map(|(addr, r)| r.err().map(|e| (addr, e)))
                .ok_or_else(|| LockError::InvalidArgument("no server given".into()))?;
            return Err(match error {
                LockError::Unavailable => LockError::Unavailable,
                e => LockError::InternalError(format!("{addr}: {e}")),
            });
        }
        let address_of = |node: u64| {
            answered
                .iter()
                .find(|(_, r)| r.node_id == node)
                .map(|(addr, _)| *addr)
        };
        let shards_total = answered
            .iter()
            .map(|(_, r)| r.shards.len())
            .max()
            .unwrap_or(0);
        let reports: Vec<&ShardStatusReport> = answered.iter().map(|(_, r)| *r).collect();
        let best = shard_views(&reports, shards_total);
        let led_by = |node: u64| {
            best.iter()
                .filter(|v| matches!(v, ShardView::Held(from, info) if *from == node && info.role == ShardRole::Leader))
                .count()
        };
        // The shards a node holds a replica of (all, except on a joined cluster's node), and
        // those of them where it is a learner (spec §5.6).
        let holds = |r: &ShardStatusReport| {
            r.shards
                .iter()
                .filter(|info| info.role != ShardRole::NoReplica)
                .count()
        };
        let learns = |r: &ShardStatusReport| {
            r.shards
                .iter()
                .filter(|info| info.role == ShardRole::Learner)
                .count()
        };
        let as_json = self.conn.json;
        let mut shard_rows = Vec::new();
        let mut shard_json = Vec::new();
        for (shard, view) in best.iter().enumerate() {
            let (from, info) = match view {
                ShardView::Unreported => {
                    shard_json.push(json::ShardRow::Unreported {
                        shard,
                        leader_id: None,
                    });
                    shard_rows.push(format!("{shard:>5}  (no node reported this shard)"));
                    continue;
                }
                ShardView::NoReplica => {
                    // Spec §5.6: every node that answered said it holds no replica.
                    shard_json.push(json::ShardRow::NoReplica {
                        shard,
                        leader_id: None,
                        no_replica: true,
                    });
                    shard_rows.push(format!(
                        "{shard:>5}  (no node that answered holds a replica)"
                    ));
                    continue;
                }
                ShardView::Held(from, info) => (from, info),
            };
            let replicas = replicas_of(&reports, shard);
            // Without a reachable leader, a follower may still name the leader it follows.
            let leader = info.leader_id;
            let leader_addr = leader.and_then(address_of);
            shard_json.push(json::ShardRow::Held(json::HeldShard {
                shard,
                leader_id: leader,
                leader_address: leader_addr.map(|a| a.to_string()),
                term: info.term,
                commit_index: info.commit_index,
                applied_index: info.applied_index,
                held: info.held.into(),
                waiters: info.waiters.into(),
                reported_by: *from,
                voters: replicas.voters.clone(),
                learners: replicas.learners.clone(),
            }));
            shard_rows.push({
                let leader = match (leader, leader_addr) {
                    (Some(id), Some(addr)) => format!("{id} ({addr})"),
                    (Some(id), None) => id.to_string(),
                    (None, _) => "none".into(),
                };
                format!(
                    "{shard:>5}  {leader:<24}  {:>6}  {:>12}  {:>8}  {:>7}  {replicas}",
                    info.term, info.commit_index, info.held, info.waiters
                )
            });
        }
        // An unanswered read changed nothing: say so more plainly than LockError does.
        let why = |e: &LockError| match e {
            LockError::Unavailable => "no answer before the deadline".to_string(),
            e => e.to_string(),
        };
        let node_json: Vec<json::NodeRow> = views
            .iter()
            .map(|(addr, r)| match r {
                Ok(r) => json::NodeRow::Reachable {
                    address: addr.to_string(),
                    reachable: true,
                    node_id: r.node_id,
                    shards: r.shards.len(),
                    holds: holds(r),
                    learner_in: learns(r),
                    leads: led_by(r.node_id),
                },
                Err(e) => json::NodeRow::Unreachable {
                    address: addr.to_string(),
                    reachable: false,
                    error: why(e),
                },
            })
            .collect();
        let node_rows: Vec<String> = views
            .iter()
            .map(|(addr, r)| match r {
                Ok(r) if holds(r) < r.shards.len() || learns(r) > 0 => format!(
                    "node {} at {addr}: reachable, leads {} of {} shards, holds a replica of {}{}",
                    r.node_id,
                    led_by(r.node_id),
                    r.shards.len(),
                    holds(r),
                    match learns(r) {
                        0 => String::new(),
                        n => format!(" (a learner in {n}, still catching up or not yet promoted)"),
                    }
                ),
                Ok(r) => format!(
                    "node {} at {addr}: reachable, leads {} of {} shards",
                    r.node_id,
                    led_by(r.node_id),
                    r.shards.len()
                ),
                Err(e) => format!("{addr}: unreachable: {}", why(e)),
            })
            .collect();
        let differences = settings_differences(&settings);
        let members = merge_members(&tables);
        let member_rows = member_rows(&members, &settings, &differences);
        if as_json {
            let settings_differences = differences
                .iter()
                .map(|(setting, values)| json::SettingDifference {
                    setting: setting.map_or("cluster_id", |s| s.name()),
                    must_be_equal: setting.is_none_or(|s| s.must_be_equal()),
                    values: values
                        .iter()
                        .map(|&(node_id, value)| json::NodeValue { node_id, value })
                        .collect(),
                })
                .collect();
            println!(
                "{}",
                json::to_line(&json::ClusterStatus {
                    shards_total,
                    shards: shard_json,
                    nodes: node_json,
                    members: member_rows.into_iter().map(|(row, _)| row).collect(),
                    settings_differences,
                })
            );
        } else {
            println!(
                "{:>5}  {:<24}  {:>6}  {:>12}  {:>8}  {:>7}  replicas",
                "shard", "leader", "term", "commit index", "held", "waiters"
            );
            for row in shard_rows.iter().chain(&node_rows) {
                println!("{row}");
            }
            if tables.is_empty() {
                println!("members: no node answered MEMBERS (older nodes?)");
            } else {
                let from: Vec<String> = tables.iter().map(|t| t.node_id.to_string()).collect();
                println!(
                    "members (SWIM's view, merged from nodes {}; it informs, it never decides a lock):",
                    from.join(", ")
                );
                println!(
                    "{:>8}  {:<8}  {:>16}  {:<40}  settings",
                    "id", "state", "incarnation", "address"
                );
                for (_, row) in &member_rows {
                    println!("{row}");
                }
            }
            if !differences.is_empty() {
                println!("settings differ between nodes (spec §8.10):");
            }
            for (setting, values) in &differences {
                let shown: Vec<String> = values
                    .iter()
                    .map(|(node, v)| match setting {
                        Some(udplock_protocol::Setting::Nodes) | None => {
                            format!("node {node} = {v:#018x}")
                        }
                        Some(_) => format!("node {node} = {v}"),
                    })
                    .collect();
                let why = match setting {
                    Some(udplock_protocol::Setting::AddressValidation) => {
                        "may differ (each node validates its own clients' addresses, or not): \
                         a rolling change not done everywhere?"
                    }
                    Some(s) if !s.must_be_equal() => {
                        "may differ (each leader applies its own): a rolling change not done \
                         everywhere?"
                    }
                    Some(_) => "must be equal: nodes with another value are cut off from the rest",
                    None => {
                        "the cluster ids differ for a reason no setting names (another version?)"
                    }
                };
                println!(
                    "  {}: {} ({why})",
                    setting.map_or("cluster_id", |s| s.name()),
                    shown.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// What `udplock status` shows for one shard.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ShardView {
    /// No node that answered described it (a page that did not arrive).
    Unreported,
    /// Every node that described it holds no replica of it (spec §5.6, role "no replica"):
    /// none of them knows its leader or term.
    NoReplica,
    /// The view to believe, and the node whose it is.
    Held(u64, udplock::client::ShardInfo),
}

/// Per shard, the view to believe among `reports`: the node that says it leads, in the
/// highest term, else the highest term; a node holding no replica is no witness (spec §5.6:
/// it knows nothing of the shard).
fn shard_views(
    reports: &[&udplock::client::ShardStatusReport],
    shards_total: usize,
) -> Vec<ShardView> {
    use udplock::client::ShardRole;
    (0..shards_total)
        .map(|shard| {
            let infos = || {
                reports
                    .iter()
                    .filter_map(move |r| r.shards.get(shard).map(|info| (r.node_id, *info)))
            };
            let best = infos()
                .filter(|(_, info)| info.role != ShardRole::NoReplica)
                .max_by_key(|(_, info)| (info.role == ShardRole::Leader, info.term));
            match best {
                Some((from, info)) => ShardView::Held(from, info),
                None if infos().next().is_some() => ShardView::NoReplica,
                None => ShardView::Unreported,
            }
        })
        .collect()
}

/// The nodes that answered holding a replica of one shard, by the role they report (spec
/// §5.6): voters (their Raft role, follower to leader) and learners apart, so that a shard
/// still catching up (a learner) shows apart from one fully placed. Only the nodes that
/// answered are counted; a follower counts as a voter (so does, briefly, a replica removed
/// that has not yet dropped itself: spec §5.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Replicas {
    voters: Vec<u64>,
    learners: Vec<u64>,
}

impl std::fmt::Display for Replicas {
    /// `1,2,3`, then ` + learner 4` (or ` + learners 4,6`) if any.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&ids(&self.voters))?;
        match self.learners.len() {
            0 => Ok(()),
            1 => write!(f, " + learner {}", ids(&self.learners)),
            _ => write!(f, " + learners {}", ids(&self.learners)),
        }
    }
}

/// `ids` comma-separated (a JSON array's inside, too).
fn ids(ids: &[u64]) -> String {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    ids.join(",")
}

/// Who, among `reports`, holds a replica of `shard`, each node once, in id order.
fn replicas_of(reports: &[&udplock::client::ShardStatusReport], shard: usize) -> Replicas {
    use udplock::client::ShardRole;
    let mut voters = std::collections::BTreeSet::new();
    let mut learners = std::collections::BTreeSet::new();
    for r in reports {
        match r.shards.get(shard).map(|info| info.role) {
            None | Some(ShardRole::NoReplica) => {}
            Some(ShardRole::Learner) => {
                learners.insert(r.node_id);
            }
            Some(ShardRole::Follower)
            | Some(ShardRole::PreCandidate)
            | Some(ShardRole::Candidate)
            | Some(ShardRole::Leader) => {
                voters.insert(r.node_id);
            }
        }
    }
    Replicas {
        voters: voters.into_iter().collect(),
        learners: learners.into_iter().collect(),
    }
}

/// The alive members of `tables` (each with the address its node was asked at) that are not
/// among `servers`, from the tables that list their own node at the address it was asked at (else its addresses are another
/// network's, as for a client's discovery, spec §7.1.8); at most `CANDIDATES_MAX`.
fn members_not_asked<'a>(
    tables: impl Iterator<Item = (SocketAddr, &'a udplock::client::MembersReport)>,
    servers: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut more: Vec<SocketAddr> = Vec::new();
    for (addr, table) in tables {
        let own = |m: &udplock::client::MemberInfo| m.id == table.node_id && m.addr == addr;
        if !table.members.iter().any(own) {
            continue;
        }
        for m in &table.members {
            let alive = m.state == udplock::client::MemberState::Alive;
            if alive
                && !servers.contains(&m.addr)
                && !more.contains(&m.addr)
                && more.len() < udplock::client::CANDIDATES_MAX
            {
                more.push(m.addr);
            }
        }
    }
    more
}

/// The name spec §5.8 gives a member state.
fn state_name(state: udplock::client::MemberState) -> &'static str {
    use udplock::client::MemberState;
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

/// One row per member of the nodes' tables merged as SWIM merges news (spec §4.9): for each
/// member, the view that SWIM's own rule lets win (`core::swim::overrides`: the higher
/// incarnation; at equal ones left or dead over suspect over alive), with the node that
/// reported it. In id order.
fn merge_members(
    tables: &[udplock::client::MembersReport],
) -> Vec<(udplock::client::MemberInfo, u64)> {
    let mut merged: std::collections::BTreeMap<u64, (udplock::client::MemberInfo, u64)> =
        std::collections::BTreeMap::new();
    for table in tables {
        for m in &table.members {
            let wins = merged.get(&m.id).is_none_or(|(best, _)| {
                udplock::core::swim::overrides(
                    (m.state, m.incarnation),
                    (best.state, best.incarnation),
                )
            });
            if wins {
                merged.insert(m.id, (*m, table.node_id));
            }
        }
    }
    merged.into_values().collect()
}

/// The member rows of `udplock status`, as JSON and as text. Each member's settings that must
/// agree (spec §8.10) come from its own NODE_SETTINGS answer, when it was asked (listed in
/// --servers) and answered: "agree", or the ones on which it differs from most nodes.
#[allow(clippy::type_complexity)]
fn member_rows(
    members: &[(udplock::client::MemberInfo, u64)],
    settings: &[udplock::client::NodeSettingsReport],
    differences: &[(Option<udplock_protocol::Setting>, Vec<(u64, u64)>)],
) -> Vec<(json::MemberRow, String)> {
    members
        .iter()
        .map(|(m, reported_by)| {
            let own = settings.iter().find(|s| s.node_id == m.id);
            // Spec §7.2.5, §10.7: whether the member validates addresses, if it says.
            let validates = own.and_then(|s| {
                s.settings
                    .iter()
                    .find(|(setting, _)| *setting == udplock_protocol::Setting::AddressValidation)
                    .map(|&(_, v)| v != 0)
            });
            // The must-agree settings on which this member differs from most nodes.
            let differs: Vec<&str> = differences
                .iter()
                .filter_map(|(setting, values)| {
                    let setting = (*setting)?;
                    if !setting.must_be_equal() {
                        return None;
                    }
                    let mine = values.iter().find(|(node, _)| *node == m.id)?.1;
                    let agreeing = values.iter().filter(|(_, v)| *v == mine).count();
                    (2 * agreeing <= values.len()).then_some(setting.name())
                })
                .collect();
            let row = json::MemberRow {
                id: m.id,
                state: state_name(m.state),
                incarnation: m.incarnation,
                address: m.addr.to_string(),
                reported_by: *reported_by,
                cluster_id: own.map(|s| s.cluster_id),
                settings: own.map(|s| {
                    json::OrderedMap(
                        s.settings
                            .iter()
                            .filter(|(setting, _)| setting.must_be_equal())
                            .map(|&(setting, v)| (setting.name(), v))
                            .collect(),
                    )
                }),
                settings_differ: own.map(|_| differs.clone()),
                address_validation: validates,
            };
            let text = {
                let mut verdict = match (own, differs.is_empty()) {
                    (None, _) => "unknown (not asked, or no answer)".to_string(),
                    (Some(_), true) => "agree".to_string(),
                    (Some(_), false) => format!("differ: {}", differs.join(", ")),
                };
                match validates {
                    Some(true) => verdict.push_str("; validates addresses"),
                    Some(false) => verdict.push_str("; address validation OFF"),
                    None => {}
                }
                format!(
                    "{:>8}  {:<8}  {:>16}  {:<40}  {verdict}",
                    m.id,
                    state_name(m.state),
                    m.incarnation,
                    m.addr.to_string()
                )
            };
            (row, text)
        })
        .collect()
}

/// The settings whose values differ between the nodes that answered (spec §8.10), in
/// registry order, each with every node's value; `None` stands for the cluster id when the
/// ids differ though no setting does. Empty when they all agree.
#[allow(clippy::type_complexity)]
fn settings_differences(
    nodes: &[udplock::client::NodeSettingsReport],
) -> Vec<(Option<udplock_protocol::Setting>, Vec<(u64, u64)>)> {
    let mut out = Vec::new();
    for &setting in udplock_protocol::Setting::ALL {
        let values: Vec<(u64, u64)> = nodes
            .iter()
            .filter_map(|n| {
                n.settings
                    .iter()
                    .find(|(s, _)| *s == setting)
                    .map(|&(_, v)| (n.node_id, v))
            })
            .collect();
        if values.windows(2).any(|w| w[0].1 != w[1].1) {
            out.push((Some(setting), values));
        }
    }
    let ids: Vec<(u64, u64)> = nodes.iter().map(|n| (n.node_id, n.cluster_id)).collect();
    let must_differ = out
        .iter()
        .any(|(s, _)| s.is_some_and(|s| s.must_be_equal()));
    if ids.windows(2).any(|w| w[0].1 != w[1].1) && !must_differ {
        out.push((None, ids));
    }
    out
}

/// Raw id bytes from the network as [`escaped`] shows them: invalid UTF-8 as U+FFFD (as the
/// library hands out ids elsewhere), every character that could steer a terminal escaped.
fn escaped_bytes(id: &[u8]) -> String {
    escaped(&String::from_utf8_lossy(id)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use udplock::client::{ShardInfo, ShardRole, ShardStatusReport};

    fn info(shard: u16, role: ShardRole, leader: Option<u64>, term: u64) -> ShardInfo {
        ShardInfo {
            shard,
            role,
            leader_id: leader,
            term,
            commit_index: term * 10,
            applied_index: term * 10,
            held: 0,
            waiters: 0,
        }
    }

    fn blank(shard: u16) -> ShardInfo {
        info(shard, ShardRole::NoReplica, None, 0)
    }

    /// Spec §5.6: a joined cluster's node that holds no replica of a shard says so, and is no
    /// witness of it. Node 2 holds shard 0 only (following node 1); node 1 leads shards 0 and
    /// 1; shard 2 is held by neither. `status` believes node 1's view of shards 0 and 1 and
    /// says no answering node holds shard 2, where it used to show node 2's view, "follower
    /// in term 0", as if the shard had a replica that knew no leader.
    #[test]
    fn a_shard_no_answering_node_holds_is_shown_as_held_by_none() {
        let node1 = ShardStatusReport {
            node_id: 1,
            shards: vec![
                info(0, ShardRole::Leader, Some(1), 3),
                info(1, ShardRole::Leader, Some(1), 2),
                blank(2),
            ],
        };
        let node2 = ShardStatusReport {
            node_id: 2,
            shards: vec![info(0, ShardRole::Follower, Some(1), 3), blank(1), blank(2)],
        };
        let views = shard_views(&[&node2, &node1], 3);
        assert_eq!(views[0], ShardView::Held(1, node1.shards[0]));
        assert_eq!(views[1], ShardView::Held(1, node1.shards[1]));
        assert_eq!(views[2], ShardView::NoReplica);
        // Node 2 alone: its own replica, and nothing it could tell of the others.
        let views = shard_views(&[&node2], 4);
        assert_eq!(
            views,
            [
                ShardView::Held(2, node2.shards[0]),
                ShardView::NoReplica,
                ShardView::NoReplica,
                ShardView::Unreported,
            ]
        );
    }

    /// Spec §5.6, role 5: `status` lists a shard's replicas with its learners apart, so a
    /// shard still catching up shows as such; a node holding no replica is not listed.
    #[test]
    fn a_shards_learners_are_listed_apart_from_its_voters() {
        let report = |node_id: u64, shards: Vec<ShardInfo>| ShardStatusReport { node_id, shards };
        let node1 = report(
            1,
            vec![
                info(0, ShardRole::Leader, Some(1), 3),
                info(1, ShardRole::Follower, Some(2), 2),
            ],
        );
        let node2 = report(
            2,
            vec![
                info(0, ShardRole::Follower, Some(1), 3),
                info(1, ShardRole::Leader, Some(2), 2),
            ],
        );
        let node4 = report(4, vec![info(0, ShardRole::Learner, Some(1), 3), blank(1)]);
        let node6 = report(6, vec![info(0, ShardRole::Learner, Some(1), 3), blank(1)]);
        let reports = [&node4, &node2, &node1];
        let shard0 = replicas_of(&reports, 0);
        assert_eq!(
            (shard0.voters.as_slice(), shard0.learners.as_slice()),
            (&[1, 2][..], &[4][..])
        );
        assert_eq!(shard0.to_string(), "1,2 + learner 4");
        let shard1 = replicas_of(&reports, 1);
        assert_eq!(shard1.to_string(), "1,2");
        assert!(shard1.learners.is_empty());
        assert_eq!(
            replicas_of(&[&node6, &node4, &node1], 0).to_string(),
            "1 + learners 4,6"
        );
        // A learner is a witness of the shard when no voter answered (it knows the leader).
        assert_eq!(
            shard_views(&[&node4], 2),
            [ShardView::Held(4, node4.shards[0]), ShardView::NoReplica]
        );
        // A shard nobody answered for lists nobody.
        assert_eq!(replicas_of(&reports, 2), Replicas::default());
    }
}
