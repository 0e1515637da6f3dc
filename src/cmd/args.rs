//! What the client commands share: the servers to talk to (`--servers`, `--shards`,
//! `--json`), resolving addresses, and connecting a client.

use std::net::{SocketAddr, ToSocketAddrs};

use clap::Args;
use udplock::{Client, ClientConfig, LockError};

#[derive(Args)]
pub struct ClientArgs {
    /// Server address(es), comma-separated: every node of a cluster (any one is enough to
    /// find the leaders; all of them survive a node's failure).
    #[arg(
        long,
        env = "UDPLOCK_SERVERS",
        default_value = "127.0.0.1:7100",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,
    /// Shards of the cluster (routes each request straight to its shard's leader; a
    /// mismatch only costs a redirect).
    #[arg(long, env = "UDPLOCK_SHARDS", default_value_t = udplock::cluster::SHARDS_DEFAULT)]
    pub shards: u32,
    /// Print one JSON object on stdout instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// `--swim-period-ms` of `udplock server` and `udplock dev`: SWIM's protocol period among the
/// nodes (spec §8.12, `cluster::ClusterConfig::swim_period`), its default, and the range the
/// option accepts. Each period a node probes one other node, so a crashed one is suspected
/// within about 1 to 2 periods and declared dead after the suspicion timeout (a few tens of
/// periods at most; README, "Membership"). Below 10 ms the probe timeout (half a period)
/// would be shorter than a round trip on a busy machine, and healthy nodes would be
/// suspected; above a minute a dead node would go unnoticed for half an hour. Nodes may
/// differ: a node's period only paces its own probes and timers (SWIM answers every probe at
/// once), and SWIM never decides who holds a lock.
pub const SWIM_PERIOD_MS_DEFAULT: u32 = 1_000;
pub const SWIM_PERIOD_MS_MIN: i64 = 10;
pub const SWIM_PERIOD_MS_MAX: i64 = 60_000;

pub fn resolve(servers: &[String]) -> Result<Vec<SocketAddr>, LockError> {
    let mut out = Vec::new();
    for s in servers.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let addrs = s
            .to_socket_addrs()
            .map_err(|e| LockError::InvalidArgument(format!("server address {s:?}: {e}")))?;
        out.extend(addrs.take(1));
    }
    if out.is_empty() {
        return Err(LockError::InvalidArgument(
            "no server address: pass --servers HOST:PORT or set UDPLOCK_SERVERS".into(),
        ));
    }
    Ok(out)
}

/// A client for the command's servers; `timeout_ms` bounds the wait for an answer to
/// release, renew, status and configure (an acquire's wait is its own `--timeout-ms`).
pub fn connect(conn: &ClientArgs, timeout_ms: Option<u64>) -> Result<Client, LockError> {
    let mut config = ClientConfig::new(resolve(&conn.servers)?);
    config.shards = conn.shards;
    if let Some(t) = timeout_ms {
        config.request_timeout_ms = t;
    }
    Client::new(config)
}

#[cfg(test)]
mod swim_period_tests {
    /// The option's default is the node core's, so a node started without it behaves as
    /// before.
    #[test]
    fn the_default_is_the_node_cores() {
        let core = udplock::core::node::Config::new(1, Vec::new()).swim_period;
        assert_eq!(
            core.as_micros(),
            u64::from(super::SWIM_PERIOD_MS_DEFAULT) * 1_000
        );
    }
}
