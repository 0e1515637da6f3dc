//! Finding a joined cluster (`udplock server --join`, spec §8.1): before its node starts, a
//! joining node asks its seeds, over the client protocol, for what its core must start
//! knowing — the cluster id and the seed's settings (NODE_SETTINGS, spec §4.8), and the
//! member table (MEMBERS, spec §4.9). Then the core joins SWIM with authenticated PUSH_PULLs
//! to the members learned (`Swim::join`, spec §8.12).
//!
//! This is IO with retries and a deadline, so it lives in the shell, not in the core: the
//! core starts from its result ([`crate::core::node::Joined`]), so the simulator and the
//! tests start a joined node without any network. It decides nothing about locks: a seed
//! that lies about its members only makes the node send authenticated datagrams to the
//! wrong addresses, which nobody without the key accepts.

use std::net::SocketAddr;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use udplock_protocol::Setting;

use crate::client::MemberState;
use crate::core::node::config::JOIN_SEEDS_MAX;
use crate::core::node::{self, settings::own_settings};
use crate::core::raft::NodeId;
use crate::{Client, ClientConfig, LockError};

/// How long one question to a seed waits for its answer (retransmitted on the client's RTO
/// meanwhile): a seed on a LAN answers within milliseconds; one that does not answer in a
/// second is down or unreachable, and the next seed is asked.
pub const JOIN_ASK_TIMEOUT_MS: u64 = 1_000;

/// The pause between two rounds over every seed when none answered: a restarting cluster's
/// seeds come up within seconds; a datagram per seed per second costs nothing.
pub const JOIN_RETRY_INTERVAL: StdDuration = StdDuration::from_secs(1);

/// What a joining node learned from a seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub cluster_id: u64,
    /// The seed that answered and the members it listed (alive or suspect), with their ids,
    /// this node excluded; at most [`JOIN_SEEDS_MAX`].
    pub seeds: Vec<(NodeId, SocketAddr)>,
}

/// Why a join did not find its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinError {
    /// A seed answered, and what it said refuses the join (another cluster, settings that
    /// must agree and differ, this node's id taken): the message names what.
    Refused(String),
    /// No seed answered within the patience; the last failure.
    NoAnswer(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Refused(why) => f.write_str(why),
            JoinError::NoAnswer(why) => write!(f, "no seed answered: {why}"),
        }
    }
}

/// Asks `seeds` in turn, round after round, until one answers or `patience` passes. `own`
/// is the configuration this node would start with (its id, the address it announces and
/// its settings, compared with the seed's); `recorded`, the cluster id its data directory
/// records (a restart: a seed of another cluster is refused).
pub fn discover(
    seeds: &[SocketAddr],
    own: &node::Config,
    recorded: Option<u64>,
    patience: StdDuration,
) -> Result<Discovered, JoinError> {
    let me = own.listen();
    let seeds: Vec<SocketAddr> = seeds.iter().copied().filter(|&s| Some(s) != me).collect();
    if seeds.is_empty() {
        return Err(JoinError::Refused(
            "--join names no node but this one: start the first node with --bootstrap".into(),
        ));
    }
    let mut config = ClientConfig::new(seeds.clone());
    config.request_timeout_ms = JOIN_ASK_TIMEOUT_MS;
    let client = Client::new(config).map_err(|e| JoinError::NoAnswer(e.to_string()))?;
    let deadline = StdInstant::now() + patience;
    let mut last = String::from("not asked");
    loop {
        for &seed in &seeds {
            match ask(&client, seed, own, recorded) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(Asked::Refused(why)) => return Err(JoinError::Refused(why)),
                Err(Asked::Failed(why)) => last = format!("{seed}: {why}"),
            }
        }
        if StdInstant::now() >= deadline {
            return Err(JoinError::NoAnswer(last));
        }
        log::warn!(
            "udplock node {}: joining: {last}; asking again",
            own.node_id
        );
        std::thread::sleep(JOIN_RETRY_INTERVAL);
    }
}

enum Asked {
    Refused(String),
    Failed(String),
}

/// One seed: `Ok(None)` if it is this node itself (the same `--join` list on every node).
fn ask(
    client: &Client,
    seed: SocketAddr,
    own: &node::Config,
    recorded: Option<u64>,
) -> Result<Option<Discovered>, Asked> {
    let failed = |e: LockError| Asked::Failed(e.to_string());
    let settings = client.node_settings(seed).map_err(failed)?;
    if settings.node_id == own.node_id {
        return Ok(None);
    }
    if let Some(recorded) = recorded {
        if settings.cluster_id != recorded {
            return Err(Asked::Refused(format!(
                "the seed {seed} is node {} of the cluster {:#018x}, but this node's data \
                 directory records the cluster {recorded:#018x}: a node joins the cluster it \
                 belongs to only (give it another --data-dir to join another cluster)",
                settings.node_id, settings.cluster_id
            )));
        }
    }
    // The settings every node must share (spec §8.1, §8.10); the node list's digest is the
    // cluster id's business, compared above.
    let ours = own_settings(own);
    let differ: Vec<String> = settings
        .settings
        .iter()
        .filter(|(s, _)| s.must_be_equal() && *s != Setting::Nodes)
        .filter_map(|&(s, theirs)| {
            let mine = ours.iter().find(|v| v.setting == s.to_wire())?.value;
            (mine != theirs).then(|| format!("{} {mine} here, {theirs} at the seed", s.name()))
        })
        .collect();
    if !differ.is_empty() {
        return Err(Asked::Refused(format!(
            "the seed {seed} (node {}) runs with other settings that every node must share: \
             {}. Start this node with the cluster's values",
            settings.node_id,
            differ.join(", ")
        )));
    }
    let members = client.members(seed).map_err(failed)?;
    if recorded.is_none() {
        let taken = members.members.iter().find(|m| {
            m.id == own.node_id
                && matches!(m.state, MemberState::Alive | MemberState::Suspect)
                && Some(m.addr) != own.listen()
        });
        if let Some(m) = taken {
            return Err(Asked::Refused(format!(
                "node id {} is already a member of the cluster, at {} ({:?}): give this \
                 node an id of its own",
                m.id, m.addr, m.state
            )));
        }
    }
    let mut found = vec![(settings.node_id, seed)];
    for m in &members.members {
        let usable = matches!(m.state, MemberState::Alive | MemberState::Suspect);
        if usable && m.id != own.node_id && found.iter().all(|&(id, _)| id != m.id) {
            found.push((m.id, m.addr));
        }
    }
    found.truncate(JOIN_SEEDS_MAX);
    Ok(Some(Discovered {
        cluster_id: settings.cluster_id,
        seeds: found,
    }))
}
