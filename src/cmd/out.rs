//! The command's output. std's `println!` panics when stdout cannot be written, which it
//! cannot once the reader of a pipe has gone: `udplock status | head -1` used to die with
//! "failed printing to stdout: Broken pipe" (exit 101). Decision: a closed stdout (EPIPE) is
//! the reader's choice, not an error: what is left to print is dropped quietly, and the
//! command still finishes and exits with the code of its outcome (an acquire that succeeded
//! is held, exit 0). Any other write error (a full disk) is reported once on stderr and
//! turns a success into exit code 1, since the caller did not get the output it asked for.
//!
//! `println!` and `eprintln!` are shadowed in `main.rs` by macros that call [`line`] and
//! [`error_line`], so every command's output goes through this module.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Stdout's reader has gone: nothing more is written.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// A write to stdout failed otherwise.
static FAILED: AtomicBool = AtomicBool::new(false);

pub fn line(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) || FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => CLOSED.store(true, Ordering::Relaxed),
        Err(e) => {
            FAILED.store(true, Ordering::Relaxed);
            error_line(format_args!("udplock: cannot write the output: {e}"));
        }
    }
}

pub fn error_line(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr
        .write_fmt(args)
        .and_then(|()| stderr.write_all(b"\n"));
}

/// True if the output could not be written for a reason other than a closed pipe.
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

/// Writes a notice to stderr without panicking when nobody reads it any more.
pub fn notice(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}
