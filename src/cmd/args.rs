//! What the client commands share: the servers to talk to (`--servers`, `--shards`,
//! `--json`), resolving addresses, and connecting a client.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

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
    /// Seal every lock request with the first key of this client key file (the servers'
    /// format: `<64 hex digits> <prefix>...` lines; README "Client keys"), for servers
    /// started with --client-key-file. Reads of shard status stay unsealed.
    #[arg(long, env = "UDPLOCK_CLIENT_KEY_FILE", value_name = "PATH")]
    pub client_key_file: Option<PathBuf>,
}

/// `--swim-period` of `udplock server` and `udplock dev`: SWIM's protocol period among the
/// nodes (spec §8.12, `cluster::ClusterConfig::swim_period`), its default, and the range the
/// option accepts, in ms. Each period a node probes one other node, so a crashed one is suspected
/// within about 1 to 2 periods and declared dead after the suspicion timeout (a few tens of
/// periods at most; README, "Membership"). Below 10 ms the probe timeout (half a period)
/// would be shorter than a round trip on a busy machine, and healthy nodes would be
/// suspected; above a minute a dead node would go unnoticed for half an hour. Nodes may
/// differ: a node's period only paces its own probes and timers (SWIM answers every probe at
/// once), and SWIM never decides who holds a lock.
pub const SWIM_PERIOD_MS_DEFAULT: u64 = 1_000;
pub const SWIM_PERIOD_MS_MIN: u64 = 10;
pub const SWIM_PERIOD_MS_MAX: u64 = 60_000;

/// The commands whose options can also be set by `UDPLOCK_*` environment variables: the
/// server (and `dev`), so that it runs under a service manager or in a container from its
/// environment alone, and the client commands, so that a shell or a job names its cluster
/// and its client id once. Not the simulators, the benchmark or keygen: their options are a
/// run's parameters, which an exported variable left over from a service should not change
/// (the benchmark reads `UDPLOCK_SERVERS` only, declared on its option).
const ENV_COMMANDS: [&str; 8] = [
    "server",
    "dev",
    "acquire",
    "release",
    "renew",
    "status",
    "configure",
    "remove",
];

/// Gives every option of the [`ENV_COMMANDS`] the environment variable `UDPLOCK_` + its long
/// name in upper case with `_` for `-` (`--node-id`: `UDPLOCK_NODE_ID`), unless it declares
/// one itself. An option given on the command line wins over its variable (clap's rule);
/// `--help` shows each variable. A switch (`--no-state-file`) is on when its variable is set
/// to anything but `0`, `false`, `no`, `off`, `n`, `f` or the empty string. Done on the built
/// command rather than on each option so that an option added later gets its variable too.
///
/// An option renamed keeps its old spelling as a clap alias (`--timeout-ms` of `--timeout`),
/// and its old variable too: clap reads one variable per option, so when the new one
/// (`UDPLOCK_TIMEOUT`) is not set and an old one (`UDPLOCK_TIMEOUT_MS`) is, the option reads
/// the old one (and `--help` names it).
pub fn with_environment(command: clap::Command) -> clap::Command {
    command.mut_subcommands(|sub| {
        if !ENV_COMMANDS.contains(&sub.get_name()) {
            return sub;
        }
        sub.mut_args(|arg| {
            let Some(long) = arg.get_long() else {
                return arg;
            };
            if arg.get_env().is_some() || matches!(long, "help" | "version") {
                return arg;
            }
            let name = |long: &str| format!("UDPLOCK_{}", long.to_uppercase().replace('-', "_"));
            let var = name(long);
            let old = (arg.get_all_aliases().unwrap_or_default().into_iter())
                .map(name)
                .find(|old| std::env::var_os(old).is_some());
            let arg = match old {
                Some(old) if std::env::var_os(&var).is_none() => arg.env(old),
                _ => arg.env(var),
            };
            if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                arg.value_parser(clap::builder::FalseyValueParser::new())
            } else {
                arg
            }
        })
    })
}

/// `--servers` (and `UDPLOCK_SERVERS`): every address of every `HOST:PORT`, resolved now
/// (see [`udplock::client::resolve_servers`]).
pub fn resolve(servers: &[String]) -> Result<Vec<SocketAddr>, LockError> {
    udplock::client::resolve_servers(servers)
}

/// One `HOST:PORT` (or `IP:PORT`, `[IPv6]:PORT`) that names this node's own address
/// (`--listen`, and each node of `--peers`): resolved now, its first address. A node binds
/// one socket, and its peers know it by one address (the source of its datagrams), so a name
/// with several addresses stands for the first, the one the resolver prefers (RFC 6724
/// order); name the address itself where that is not the one meant.
pub fn host_port(s: &str) -> Result<SocketAddr, String> {
    host_port_named(s).map(|h| h.addr)
}

/// `--listen`: [`host_port`]'s address, and how a host name was resolved, for the server's
/// start-up line.
#[derive(Clone, Debug)]
pub struct HostPort {
    pub addr: SocketAddr,
    /// The name as given and how many addresses it had; `None` for an IP address.
    pub name: Option<(String, usize)>,
}

impl HostPort {
    /// `localhost:7100 resolved to 127.0.0.1:7100, the first of its 2 addresses; ` (or
    /// nothing for an IP address): what the start-up line says before the node's shape.
    pub fn resolved_note(&self) -> String {
        match &self.name {
            None => String::new(),
            Some((name, 1)) => format!("{name} resolved to {}; ", self.addr),
            Some((name, n)) => format!(
                "{name} resolved to {}, the first of its {n} addresses (name the address to \
                 listen on another); ",
                self.addr
            ),
        }
    }
}

/// The clap parser of `--listen`: [`host_port`], remembering a host name and how many
/// addresses it had (resolved once).
pub fn host_port_named(s: &str) -> Result<HostPort, String> {
    let s = s.trim();
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?} is not an address (HOST:PORT, IP:PORT or [IPv6]:PORT): {e}"))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| format!("host {s:?} has no address"))?;
    let name = match s.parse::<SocketAddr>() {
        Ok(_) => None,
        Err(_) => Some((s.to_string(), addrs.len())),
    };
    Ok(HostPort { addr, name })
}

/// A client for the command's servers; `timeout_ms` bounds the wait for an answer to
/// release, renew, status and configure (an acquire's wait is its own `--timeout`).
pub fn connect(conn: &ClientArgs, timeout_ms: Option<u64>) -> Result<Client, LockError> {
    let mut config = ClientConfig::new(resolve(&conn.servers)?);
    config.shards = conn.shards;
    if let Some(t) = timeout_ms {
        config.request_timeout_ms = t;
    }
    if let Some(path) = &conn.client_key_file {
        config = with_client_key_file(config, path)?;
    }
    Client::new(config)
}

/// `config` sealed with the first key of `--client-key-file PATH`; an error names the
/// option and the file.
pub fn with_client_key_file(
    config: ClientConfig,
    path: &std::path::Path,
) -> Result<ClientConfig, LockError> {
    (config.with_client_key_file(path))
        .map_err(|e| LockError::InvalidArgument(format!("--client-key-file: {e}")))
}

#[cfg(test)]
mod swim_period_tests {
    /// The option's default is the node core's, so a node started without it behaves as
    /// before.
    #[test]
    fn the_default_is_the_node_cores() {
        let core = udplock::core::node::Config::new(1, Vec::new()).swim_period;
        assert_eq!(core.as_micros(), super::SWIM_PERIOD_MS_DEFAULT * 1_000);
    }
}

#[cfg(test)]
mod host_port_tests {
    use super::*;

    /// Issue 11 item 6: the start-up line says what a `--listen` name resolved to, and that
    /// the first of several addresses was taken; an IP address needs no note.
    #[test]
    fn a_names_resolution_is_noted() {
        let ip = host_port_named("127.0.0.1:7100").unwrap();
        assert_eq!(ip.addr, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(ip.resolved_note(), "");
        let two = HostPort {
            addr: "10.0.0.1:7100".parse().unwrap(),
            name: Some(("locks.internal:7100".into(), 2)),
        };
        assert_eq!(
            two.resolved_note(),
            "locks.internal:7100 resolved to 10.0.0.1:7100, the first of its 2 addresses \
             (name the address to listen on another); "
        );
        assert!(host_port_named("nonsense")
            .unwrap_err()
            .contains("is not an address"));
    }
}
