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

/// `text` as it may be shown on an operator's terminal: an id the network supplied (a
/// holder's client id from STATUS) or a caller typed, with every character that could steer
/// the terminal written as an escape instead (issue 12 item 5: any client could put
/// `ESC [ 2 J` or an OSC sequence in its client id and have `udplock status` print it raw).
/// Escaped: the C0 and C1 control characters and DEL (`\x1b`, `\n`, `\u{9b}`, ...), the
/// Unicode format characters that reorder or hide text (bidi overrides and isolates,
/// zero-width characters: `\u{202e}`), and the backslash itself (`\\`), so that an escape
/// in the output always means one was made. Invalid UTF-8 never gets this far: the library
/// hands ids out as `String`s with U+FFFD in its place. Every other character is kept, so
/// ordinary ids print as they are and without copying. JSON output needs none of this:
/// serde escapes control characters itself.
pub fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    fn steers(c: char) -> bool {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    }
    if !text.chars().any(steers) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x80 && steers(c) => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if steers(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escaped;

    /// Nothing that steers a terminal survives: controls, DEL, C1 controls, bidi and
    /// zero-width format characters; a backslash is doubled so escapes are unambiguous.
    /// Ordinary ids, including non-ASCII letters, are kept as they are, without a copy.
    #[test]
    fn ids_are_escaped_for_the_terminal() {
        assert!(matches!(
            escaped("worker-7/ordres/é"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(escaped("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escaped("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escaped("line\nnext\r\t"), "line\\nnext\\r\\t");
        assert_eq!(escaped("del\x7f c1\u{9b}31m"), "del\\x7f c1\\u{9b}31m");
        assert_eq!(escaped("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(
            escaped("zero\u{200b}width\u{feff}"),
            "zero\\u{200b}width\\u{feff}"
        );
        assert_eq!(escaped("back\\x1b"), "back\\\\x1b");
        assert_eq!(escaped("bad \u{fffd} utf-8"), "bad \u{fffd} utf-8");
        for text in ["\x00", "\x1b", "\u{85}", "\u{2066}"] {
            assert!(
                !escaped(text).chars().any(|c| c.is_control() || c > '~'),
                "{text:?}"
            );
        }
    }
}
