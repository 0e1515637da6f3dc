//! The pure cores: deterministic state machines with no IO, no clock and no global
//! randomness. Each takes `(now, input)` and returns what to send, what to reply and when to
//! wake up. The IO shells (`crate::cluster`, `crate::client`) and tests drive the same code.

// Clocks, global randomness, sleeps, threads and sockets are refused here (clippy.toml).
#![deny(clippy::disallowed_methods)]

// The client needs `call`, `retransmit` and `time`; the rest is the server's (cargo
// feature `server`).
pub mod call;
#[cfg(feature = "server")]
pub(crate) mod keyed_hash;
#[cfg(feature = "server")]
pub mod lock_table;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod peer_auth;
#[cfg(feature = "server")]
pub mod placement;
#[cfg(feature = "server")]
pub mod raft;
// The lock guards' renewal rules: the client's.
pub mod renewal;
#[cfg(feature = "server")]
pub mod replica;
#[cfg(feature = "server")]
pub mod restart;
pub mod retransmit;
#[cfg(feature = "server")]
pub mod swim;
pub mod time;

/// A field of a core's `Config` that breaks one of its rules (each core's `validate` names
/// which, so a bad setting is refused at start-up with the reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's name in the `Config`.
    pub field: &'static str,
    /// What the field must satisfy.
    pub rule: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config: {} {}", self.field, self.rule)
    }
}

impl std::error::Error for ConfigError {}
