//! `udplock lock NAME [--ttl 10s] [--wait 5s] [--owner X] [--kill-after D] -- CMD ARGS...`:
//! runs a command while holding a lock, as `etcdctl lock` and `consul lock` do.
//!
//! The lock is a [`LockGuard`]: renewed in the background while the command runs, released
//! when it exits. The command gets `UDPLOCK_FENCING_TOKEN` and `UDPLOCK_RESOURCE` in its
//! environment. Its exit code is udplock's; udplock's own outcomes use codes 123 to 127,
//! as `timeout(1)` does (see [`EXIT_CODES`]).
//!
//! # Never without the lock
//!
//! If the renewals fail, the guard is lost `2 × GRACE` before its lease's validity ends
//! (its loss margin, GRACE being `--kill-after`): the command then gets SIGTERM, and SIGKILL
//! GRACE later if it is still running, which leaves GRACE for the kill to take effect before
//! the validity ends. A renewal refused outright (the service no longer knows the hold: it
//! was released behind udplock's back, or the service lost it) stops the command at once.
//! SIGINT, SIGTERM or SIGHUP sent to udplock are passed to the command as SIGTERM, and the
//! lock is released once it has exited. A SIGKILL of udplock itself cannot be passed on: the
//! command then runs on without renewals, so do not kill udplock with SIGKILL.
//!
//! Three threads wait, each on one thing, and tell the main thread over one channel: the
//! command's exit (`waitid(WNOWAIT)`, which leaves the child unreaped, so that a signal sent
//! after it can never reach a recycled pid), the guard's loss ([`LostSignal::wait`]), and
//! udplock's own termination signals (`ctrlc`).

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use clap::Args;
use rustix::process::{kill_process, waitid, Pid, Signal, WaitId, WaitIdOptions};
use udplock::client::{LockOptions, LossReason};
use udplock::LockError;

use super::args::{connect, ClientArgs};
use super::duration::parse_duration;

/// The lock was lost while the command ran, and udplock stopped the command.
pub const EXIT_LOST: u8 = 123;
/// The lock was not acquired: another owner held it for the whole --wait.
pub const EXIT_NOT_ACQUIRED: u8 = 124;
/// udplock itself failed before running the command: bad arguments, no answer from the
/// service, a limit reached.
pub const EXIT_FAILED: u8 = 125;
/// The command was found but could not be run.
pub const EXIT_CANNOT_RUN: u8 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;

pub const EXIT_CODES: &str = "\
Exit codes:
  the command's own exit code, or 128+N if it was killed by signal N (as a shell reports it)
  123  the lock was lost while the command ran: udplock stopped it (SIGTERM, then SIGKILL)
  124  the lock was not acquired: another owner held it for the whole --wait
  125  udplock failed before running the command (bad arguments, no answer from the service,
       a client key the service refused)
  126  the command could not be run
  127  the command was not found
A command that can itself exit with 123 to 127 should be wrapped if the caller must tell
these apart (udplock also says on stderr what happened).

If renewing the lock fails, the command gets SIGTERM 2 x GRACE before the lease's validity
ends and SIGKILL GRACE later (GRACE: --kill-after), so it never runs without the lock. A
renewal refused outright (the hold is gone) stops it at once. SIGINT, SIGTERM and SIGHUP sent
to udplock are passed on to the command as SIGTERM.";

#[derive(Args)]
pub struct RunArgs {
    /// The resource to lock (1 to 255 bytes).
    resource: String,
    /// Lease of the lock (10s, 500ms, 1m; a bare number is milliseconds). udplock renews it
    /// about every third of it while the command runs.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long to wait for the lock in the service's queue (0: only if free now).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    wait: Duration,
    /// The owner (client id) to hold the lock under; default a new one for this run. Another
    /// process can release it with `udplock release --client OWNER`.
    #[arg(long)]
    owner: Option<String>,
    /// GRACE: time between SIGTERM and SIGKILL when the lock is being lost (see below);
    /// default a tenth of --ttl, at most a quarter of it.
    #[arg(long, value_parser = parse_duration)]
    kill_after: Option<Duration>,
    /// Server address(es), comma-separated: every node of a cluster (any one is enough to
    /// find the leaders; all of them survive a node's failure).
    #[arg(
        long,
        env = "UDPLOCK_SERVERS",
        default_value = "127.0.0.1:7100",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// Shards of the cluster (routes each request straight to its shard's leader; a
    /// mismatch only costs a redirect).
    #[arg(long, env = "UDPLOCK_SHARDS", default_value_t = udplock::cluster::SHARDS_DEFAULT)]
    shards: u32,
    /// Seal every lock request with the first key of this client key file (README "Client
    /// keys"), for servers started with --client-key-file.
    #[arg(long, env = "UDPLOCK_CLIENT_KEY_FILE", value_name = "PATH")]
    client_key_file: Option<std::path::PathBuf>,
    /// The command to run under the lock, and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD", value_parser = clap::value_parser!(OsString))]
    command: Vec<OsString>,
}

/// What the main thread hears.
enum Event {
    /// The command exited (not yet reaped).
    Exited,
    /// The guard was lost.
    Lost(LossReason),
    /// udplock got SIGINT, SIGTERM or SIGHUP.
    Interrupted,
}

/// `udplock lock`: the process's exit code (see [`EXIT_CODES`]).
pub fn run(a: RunArgs) -> u8 {
    match run_command(a) {
        Ok(code) => code,
        Err((code, why)) => {
            eprintln!("udplock: {why}");
            code
        }
    }
}

fn run_command(a: RunArgs) -> Result<u8, (u8, String)> {
    let failed = |e: LockError| (EXIT_FAILED, e.to_string());
    let grace = a.kill_after.unwrap_or(a.ttl / 10);
    if grace > a.ttl / 4 {
        return Err((
            EXIT_FAILED,
            format!(
                "--kill-after must be at most a quarter of --ttl ({:?}), got {grace:?}: the \
                 command is stopped 2 x --kill-after before the lease ends",
                a.ttl / 4
            ),
        ));
    }
    let mut options = LockOptions::new()
        .ttl(a.ttl)
        .wait(a.wait)
        .loss_margin(2 * grace);
    if let Some(owner) = &a.owner {
        options = options.owner(owner.clone());
    }
    options.validate().map_err(failed)?;
    // The client commands' options, without --json: stdout is the command's.
    let conn = ClientArgs {
        servers: a.servers.clone(),
        shards: a.shards,
        json: false,
        client_key_file: a.client_key_file.clone(),
    };
    let client = connect(&conn, None).map_err(failed)?;
    let guard = client.lock(&a.resource, &options).map_err(|e| match e {
        LockError::LockAcquisitionTimeout => (
            EXIT_NOT_ACQUIRED,
            format!(
                "{} was not acquired: another owner held it for the whole --wait ({:?})",
                a.resource, a.wait
            ),
        ),
        // The default owner is `<prefix><session hex>-<n>`, the prefix the first on the key
        // file's key line: a key line without one (or a server authorizing another prefix)
        // leaves it under no prefix the key covers.
        e @ LockError::Forbidden { .. } if a.owner.is_none() => (
            EXIT_FAILED,
            format!(
                "{e} (the default owner takes the first prefix on your key line; add it there, \
                 or pass --owner with a client id under your key's prefix)"
            ),
        ),
        e => failed(e),
    })?;
    if let Some(reason) = guard.lost() {
        return Err((
            EXIT_LOST,
            format!("the lock was lost before the command started: {reason}"),
        ));
    }
    let (tell, events) = mpsc::channel();
    on_termination(tell.clone());
    let mut child = Command::new(&a.command[0])
        .args(&a.command[1..])
        .env("UDPLOCK_FENCING_TOKEN", guard.fencing_token().to_string())
        .env("UDPLOCK_RESOURCE", &a.resource)
        .spawn()
        .map_err(|e| {
            let code = match e.kind() {
                io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_CANNOT_RUN,
            };
            (code, format!("cannot run {:?}: {e}", a.command[0]))
        })?;
    watch(&child, guard.lost_signal(), tell);
    let lost = supervise(&child, &events, grace);
    let status = child.wait();
    if let Some(reason) = lost {
        // Said as soon as the command is gone, before the release (which may wait for an
        // unreachable service).
        eprintln!(
            "udplock: the lock on {} was lost while the command ran, so it was stopped: \
             {reason}",
            a.resource
        );
        let _ = guard.release();
        return Ok(EXIT_LOST);
    }
    if let Err(e) = guard.release() {
        // The command ran under the lock; only the release is in question (the lock expires
        // after its TTL in any case).
        eprintln!("udplock: warning: releasing {}: {e}", a.resource);
    }
    match status {
        Ok(status) => Ok(match (status.code(), status.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
            (None, None) => EXIT_CANNOT_RUN,
        }),
        Err(e) => Err((EXIT_FAILED, format!("cannot wait for the command: {e}"))),
    }
}

/// Passes udplock's own SIGINT, SIGTERM and SIGHUP to `tell`: installed before the command
/// starts, so that a signal that comes as soon as it runs is not udplock's death.
fn on_termination(tell: Sender<Event>) {
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tell.send(Event::Interrupted);
    }) {
        log::warn!("cannot pass termination signals on to the command: {e}");
    }
}

/// Starts the threads that wait for the command's exit and for the guard's loss (see the
/// module docs).
fn watch(child: &Child, lost: udplock::client::LostSignal, tell: Sender<Event>) {
    let pid = Pid::from_child(child);
    let exited = tell.clone();
    std::thread::spawn(move || {
        // Until the command exits (or cannot be waited for): EINTR only means a signal came.
        while let Err(rustix::io::Errno::INTR) = waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {}
        let _ = exited.send(Event::Exited);
    });
    std::thread::spawn(move || {
        if let Some(reason) = lost.wait() {
            let _ = tell.send(Event::Lost(reason));
        }
    });
}

/// Waits for the command to exit, stopping it if the lock is lost (SIGTERM, then SIGKILL
/// after `grace`) and passing udplock's own termination on as SIGTERM. Returns the loss, if
/// there was one. The child is still unreaped when this returns.
fn supervise(child: &Child, events: &Receiver<Event>, grace: Duration) -> Option<LossReason> {
    let pid = Pid::from_child(child);
    let mut lost = None;
    loop {
        match events.recv() {
            Ok(Event::Exited) | Err(_) => return lost,
            Ok(Event::Interrupted) => {
                let _ = kill_process(pid, Signal::TERM);
            }
            Ok(Event::Lost(reason)) => {
                lost = Some(reason);
                let _ = kill_process(pid, Signal::TERM);
                // Until the command exits, or GRACE passes.
                let deadline = std::time::Instant::now() + grace;
                loop {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match events.recv_timeout(left) {
                        Ok(Event::Exited) | Err(RecvTimeoutError::Disconnected) => return lost,
                        Ok(_) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                }
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
}
