//! The commands of the `udplock` binary, one module each, and what they share: the
//! output that never panics on a closed pipe ([`out`]) and the client commands' options
//! ([`args`]). Each command module holds its options (a clap `Args` struct, whose doc
//! comments are its `--help`) and a function that runs the command and returns its outcome
//! (`run`; [`lock`] has one per command: `acquire`, `release`, `renew`, `configure`);
//! `main.rs` parses the command line and turns that outcome into an exit code (a
//! [`LockError`]'s, or a [`Failure`]'s for a command that can be refused).

pub mod args;
pub mod bench;
pub mod chaos;
pub mod dev;
pub mod duration;
pub mod keygen;
pub mod lock;
pub mod out;
pub mod remove;
pub mod run;
pub mod server;
pub mod sim;
pub mod status;
pub mod swim_sim;

use std::fmt;

use udplock::LockError;

/// How a command that did not succeed ended: `main.rs` prints it after `udplock: ` and exits
/// with its [`Failure::exit_code`].
#[derive(Debug)]
pub enum Failure {
    /// An error of the client library, or of the command's arguments: its own text and exit
    /// code ([`LockError::exit_code`]).
    Lock(LockError),
    /// The service answered and refused what was asked, so nothing changed: the text says
    /// what was not done and why, as a sentence of its own (`udplock remove` of a live
    /// member: "node 2 was not removed: node 1 holds it alive ..."). Not an "invalid
    /// argument": the arguments were understood. Exit code 1, as `udplock --help` documents
    /// for a refused removal.
    Refused(String),
    /// The command could not set up what it needs to run (`udplock chaos` without a usable
    /// `iptables`, a node that never became ready): nothing was tested. Exit code 2, apart
    /// from a run's own verdict (1).
    Setup(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Lock(e) => e.exit_code(),
            Failure::Refused(_) => 1,
            Failure::Setup(_) => 2,
        }
    }
}

impl From<LockError> for Failure {
    fn from(e: LockError) -> Failure {
        Failure::Lock(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Lock(e) => {
                e.fmt(f)?;
                match cli_hint(e) {
                    Some(hint) => write!(f, " ({hint})"),
                    None => Ok(()),
                }
            }
            Failure::Refused(why) | Failure::Setup(why) => f.write_str(why),
        }
    }
}

/// What a shell user can do about `e` with this command's own tools: the library's texts say
/// nothing of the command line, so the CLI adds it.
fn cli_hint(e: &LockError) -> Option<&'static str> {
    match e {
        LockError::LockAcquisitionTimeout => Some("`udplock status RESOURCE` shows who holds it"),
        LockError::Unavailable => {
            Some("is `udplock server` running at the --servers / UDPLOCK_SERVERS addresses?")
        }
        LockError::OutcomeUnknown => Some("`udplock status RESOURCE` shows whether it is held"),
        LockError::Unauthenticated => {
            Some("pass --client-key-file PATH or set UDPLOCK_CLIENT_KEY_FILE")
        }
        LockError::InvalidArgument(what) if what.starts_with("no server address") => {
            Some("pass --servers HOST:PORT or set UDPLOCK_SERVERS")
        }
        LockError::InvalidArgument(what) if what.starts_with("no lock server address") => {
            Some("pass at least one in --servers")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI's hint adds what the library's words leave out, never the same advice twice
    /// (the newcomer walk saw "... who holds it (status) (`udplock status RESOURCE` shows who
    /// holds it)").
    #[test]
    fn a_timeout_names_the_status_command_once() {
        let text = Failure::Lock(LockError::LockAcquisitionTimeout).to_string();
        assert_eq!(text.matches("status").count(), 1, "{text}");
        assert!(text.contains("`udplock status RESOURCE`"), "{text}");
    }
}
