//! The pure cores: deterministic state machines with no IO, no clock and no global
//! randomness. Each takes `(now, input)` and returns what to send, what to reply and when to
//! wake up. The IO shell (`crate::node`, `crate::client`) and tests drive the same code.

// Clocks, global randomness, sleeps, threads and sockets are refused here (clippy.toml).
#![deny(clippy::disallowed_methods)]

pub mod lock_table;
pub mod retransmit;
pub mod time;
