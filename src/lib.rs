//! udplock: a distributed lock service for latency-sensitive programs.
//!
//! # Architecture
//! ```text
//!   udplock-protocol (protocol/)   the wire format: typed views over datagrams, no IO
//!          ^
//!   core (src/core/)               pure state machines: the lock table, Raft, a shard's
//!          ^                       replica (Raft + replicated lock table), the node over
//!          |                       bytes, the client's calls; no IO, no clock, no rng
//!   cluster (src/cluster/)         IO shell of a node: one thread, one socket, every
//!          |                       shard's replica, storage per --durability
//!   single (src/single.rs)         the single node: a cluster of one voter and one shard
//!   client (src/client/)           IO shell of the client: blocking, thread-safe, routes to
//!          ^                       each shard's leader
//!   bench, sim, the `udplock` binary
//! ```
//! A request travels: the [`Client`] computes the resource's shard, encodes the request into a
//! stack buffer and sends it to that shard's leader; the leader's event-loop thread decodes it
//! in place and logs it; once a majority stored it, every replica applies it to its lock
//! table and the leader sends the answer from the same thread; the calling thread itself
//! receives the reply whenever it can (see [`client`]), so a call costs no thread hop. The
//! simulator (`sim`) drives the same cores under faults.
//!
//! # Cargo features
//!
//! A program that only takes locks depends on `udplock = { version = "0.1",
//! default-features = false }`: the protocol and the blocking [`Client`], on `socket2`, `log`,
//! `rustix` (the suspend-aware clock, [`BootInstant`]), `getrandom`, and `hmac` and `sha2` for
//! client keys ([`client_keys`], spec §7.1.10) alone. Each feature adds a part:
//!
//! - `admin`: `Client::remove`, which signs with the cluster key (HMAC-SHA-256).
//! - `server`: the lock server as a library, `single::SingleNode` and `cluster::ClusterNode`
//!   (implies `admin`).
//! - `sim`: the deterministic cluster simulator; `bench`: the benchmark runner (both imply
//!   `server`; not an API).
//! - `cli` (the default): the `udplock` command, so that `cargo install udplock` and
//!   `cargo test` give everything.
//!
//! # Example
//! ```
//! use udplock::single::{SingleNode, SingleConfig};
//! use udplock::Client;
//!
//! let node = SingleNode::start(SingleConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
//! let client = Client::connect(&[node.local_addr()]).unwrap();
//!
//! // The mission's API.
//! client.acquire_lock("orders/42", "worker-7", 1_000).unwrap();
//! client.release_lock("orders/42", "worker-7").unwrap();
//!
//! // A lease with its fencing token; re-entrant holds keep the token.
//! let lease = client.acquire("orders/42", "worker-7", 1_000, Some(10_000)).unwrap();
//! let again = client.acquire("orders/42", "worker-7", 1_000, None).unwrap();
//! assert_eq!((again.hold_count, again.fencing_token), (2, lease.fencing_token));
//! assert_eq!(client.release("orders/42", "worker-7").unwrap(), 1);
//! assert_eq!(client.release("orders/42", "worker-7").unwrap(), 0);
//! ```
#![forbid(unsafe_code)]
// Every public item says what it is for (and its units); the internals the binary, the
// benchmark and the tests reach are `#[doc(hidden)]`, which this lint skips.
#![deny(missing_docs)]

// `core`, `sim`, `bench` and `json` are public only so that the `udplock` binary, the
// benchmark, the integration tests and the simulator's tools can reach them; they are not the
// library's API, so their types may change with any release, and they are hidden from the
// documentation. Each part beyond the client is behind the cargo feature of its name (see
// Cargo.toml's `[features]`): without default features only the client and what it needs
// compile.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod chaos;
pub mod client;
pub mod client_keys;
pub mod clock;
#[cfg(feature = "server")]
pub mod cluster;
#[doc(hidden)]
pub mod core;
pub mod error;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod json;
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod sim;
#[cfg(feature = "server")]
pub mod single;
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod store;

pub use client::{Client, ClientConfig, ClientKey, Lease, LockStatus};
pub use client::{LockGuard, LockOptions, LossReason};
pub use clock::BootInstant;
pub use error::LockError;

/// The README's Rust example compiles (it is a doctest through this item).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
