mod address;
#[cfg(feature = "tokio")]
mod async_client;
mod attacks;
mod chaos;
mod cli;
mod client_auth;
mod client_doubts;
mod client_failover;
mod client_keys;
mod cluster;
mod discovery;
mod environment;
mod garbage;
mod guard;
mod holds;
mod join;
mod keepalive;
mod load;
mod lock_cmd;
mod lossy;
mod members;
mod metrics;
mod peer_auth;
mod processes;
mod raw;
mod remove;
mod replace;
mod service;
mod settings;
mod shard_status;
mod sim;
mod single;
mod stop;
mod swim;

use std::net::SocketAddr;
use udplock::single::{SingleConfig, SingleNode};

/// A node on a free loopback port with the default limits.
pub fn start_node() -> SingleNode {
    SingleNode::start(SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))
        .expect("node starts")
}
