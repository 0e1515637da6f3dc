//! The commands of the `udplock` binary, one module each, and what they share: the
//! output that never panics on a closed pipe ([`out`]) and the client commands' options
//! ([`args`]). Each command module holds its options (a clap `Args` struct, whose doc
//! comments are its `--help`) and a function that runs the command and returns its outcome
//! (`run`; [`lock`] has one per command: `acquire`, `release`, `renew`, `configure`);
//! `main.rs` parses the command line and turns that outcome into an exit code.

pub mod args;
pub mod bench;
pub mod dev;
pub mod keygen;
pub mod lock;
pub mod out;
pub mod remove;
pub mod server;
pub mod sim;
pub mod status;
pub mod swim_sim;
