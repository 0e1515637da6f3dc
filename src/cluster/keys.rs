//! The cluster key file (`--cluster-key-file`, spec §8.11): what a node authenticates its
//! node-to-node datagrams with, and what it accepts.
//!
//! ```text
//! # udplock cluster key 1a2b3c4d
//! 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! ```
//!
//! One entry per line, at most [`CLUSTER_KEYS_MAX`]: a key (64 hex digits, 32 bytes) or the
//! word `none` (unauthenticated). The first entry is what the node sends with; every entry is
//! accepted. `#` starts a comment; blank lines are ignored. So a rotation is three edits of
//! every node's file, each done on every node before the next: add the new key as the second
//! line; swap the two lines; remove the old line (README, "Securing a cluster"). With `none`
//! in place of the old key it turns keys on in a running cluster; in place of the new one, off.
//!
//! A node reads its file at start (a bad one stops the start), then checks it about every
//! [`KEY_FILE_CHECK_MS`] and applies a changed one without a restart ([`KeyFileWatch`]). A
//! changed file that is bad keeps the keys in force and logs an error naming the line; a good
//! one logs the key ids it now sends with and accepts (never key bytes).
//!
//! A key file that other users may read or write is refused (any local user could forge peer
//! datagrams, or swap the key); one the file's group may read is accepted with a warning (a
//! group of operators may be intended). `udplock keygen` writes mode 0600.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use udplock_protocol::{ClusterKey, CLUSTER_KEY_LEN};

pub use crate::core::peer_auth::{KeySet, KeySetError, CLUSTER_KEYS_MAX};
use crate::core::time::{Duration, Instant};

/// How often a node checks its key file for a change: a rotation step reaches every node
/// within about a second of the edit, for one small read a second.
pub const KEY_FILE_CHECK_MS: u64 = 1_000;

/// Largest key file read: two keys and generous comments fit many times over; a path that
/// names something else (a log, a device) is refused instead of read whole.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// The log target of the lines that say which keys a node uses (at start and after each
/// reload): `udplock` shows them at info level by default, since an operator rotating keys
/// waits for them on every node.
pub const LOG_TARGET: &str = "udplock::keys";

/// Hex digits of one key.
const KEY_HEX_DIGITS: usize = 2 * CLUSTER_KEY_LEN;

/// Why a key file was not used. Every variant about the content names the line (from 1).
#[derive(Debug)]
pub enum KeyFileError {
    /// The file could not be read.
    Read { path: PathBuf, error: io::Error },
    /// Longer than [`KEY_FILE_BYTES_MAX`].
    TooLarge { path: PathBuf },
    /// Others (not the owner, not the group) may read or write it: `mode` is its mode.
    Permissions { path: PathBuf, mode: u32 },
    /// Not valid UTF-8 text.
    NotText,
    /// An entry that is neither `none` nor hex digits only.
    BadHex { line: usize },
    /// Hex digits, but not 64 of them.
    WrongLength { line: usize, digits: usize },
    /// A third entry.
    TooMany { line: usize },
    /// No entry at all.
    NoEntry,
    /// An entry already given on an earlier line (or a key with the key id of an earlier one).
    Duplicate { line: usize, first: usize },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Read { path, error } => {
                write!(f, "cannot read the key file {}: {error}", path.display())
            }
            KeyFileError::TooLarge { path } => write!(
                f,
                "{} is larger than {KEY_FILE_BYTES_MAX} bytes: not a key file",
                path.display()
            ),
            KeyFileError::Permissions { path, mode } => write!(
                f,
                "the key file {} may be read or written by other users (mode {:04o}): anyone \
                 on this host could forge peer datagrams; chmod 600 it",
                path.display(),
                mode & 0o7777
            ),
            KeyFileError::NotText => write!(f, "the key file is not UTF-8 text"),
            KeyFileError::BadHex { line } => write!(
                f,
                "line {line}: not a key: expected 64 hex digits or `none`"
            ),
            KeyFileError::WrongLength { line, digits } => write!(
                f,
                "line {line}: a key has 64 hex digits (32 bytes), this one {digits}"
            ),
            KeyFileError::TooMany { line } => write!(
                f,
                "line {line}: more than {CLUSTER_KEYS_MAX} entries (the key to send with, and \
                 one more during a rotation)"
            ),
            KeyFileError::NoEntry => write!(
                f,
                "no entry: expected a key (64 hex digits, e.g. from `udplock keygen`) or `none`"
            ),
            KeyFileError::Duplicate { line, first } => {
                write!(f, "line {line}: the same entry as line {first}")
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

/// The entries of a key file's text, in order: `Some(key)` or `None` for `none`.
pub fn parse_entries(text: &str) -> Result<Vec<Option<[u8; CLUSTER_KEY_LEN]>>, KeyFileError> {
    let mut entries: Vec<(usize, Option<[u8; CLUSTER_KEY_LEN]>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let value = if entry == "none" {
            None
        } else {
            Some(parse_key(entry, line)?)
        };
        if entries.len() == CLUSTER_KEYS_MAX {
            return Err(KeyFileError::TooMany { line });
        }
        let id = |e: &Option<[u8; CLUSTER_KEY_LEN]>| e.map(|k| ClusterKey::new(&k).id());
        if let Some(&(first, _)) = entries
            .iter()
            .find(|(_, other)| *other == value || id(other) == id(&value))
        {
            return Err(KeyFileError::Duplicate { line, first });
        }
        entries.push((line, value));
    }
    if entries.is_empty() {
        return Err(KeyFileError::NoEntry);
    }
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

fn parse_key(entry: &str, line: usize) -> Result<[u8; CLUSTER_KEY_LEN], KeyFileError> {
    if !entry.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyFileError::BadHex { line });
    }
    if entry.len() != KEY_HEX_DIGITS {
        return Err(KeyFileError::WrongLength {
            line,
            digits: entry.len(),
        });
    }
    let mut key = [0u8; CLUSTER_KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        let digits = &entry[2 * i..2 * i + 2];
        *byte = u8::from_str_radix(digits, 16).map_err(|_| KeyFileError::BadHex { line })?;
    }
    Ok(key)
}

/// The key set a key file's text says.
pub fn parse(text: &str) -> Result<KeySet, KeyFileError> {
    let entries = parse_entries(text)?;
    let keys = entries
        .into_iter()
        .map(|e| e.map(|k| ClusterKey::new(&k)))
        .collect();
    // parse_entries already refused what KeySet refuses, naming the line.
    Ok(KeySet::new(keys).expect("a parsed key file is a key set"))
}

/// The text of a key file with `entries` (`None`: `none`), the first sent with, and a
/// comment naming each key's id.
pub fn text(entries: &[Option<[u8; CLUSTER_KEY_LEN]>]) -> String {
    let mut out = String::from(
        "# udplock cluster keys (spec §8.11): the first entry is sent with, every entry is\n\
         # accepted. Keep this file secret (mode 0600), the same on every node.\n",
    );
    for entry in entries {
        match entry {
            Some(k) => {
                out.push_str(&format!(
                    "# key id {:08x}\n{}\n",
                    ClusterKey::new(k).id(),
                    hex(k)
                ));
            }
            None => out.push_str("none\n"),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from the operating system's random source: a new cluster key.
pub fn random_key() -> [u8; CLUSTER_KEY_LEN] {
    let mut key = [0u8; CLUSTER_KEY_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// A key set of one new random key: what `udplock dev`, a local cluster and tests use.
pub fn random_key_set() -> KeySet {
    KeySet::single(ClusterKey::new(&random_key()))
}

/// Writes a new key file at `path` holding `entries` (see [`text`]), mode 0600; refuses to
/// replace an existing file (a key in use would be lost).
pub fn create(path: &Path, entries: &[Option<[u8; CLUSTER_KEY_LEN]>]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text(entries).as_bytes())?;
    file.sync_all()
}

/// The bytes of the key file at `path`, after checking who else may read it: others may
/// not (an error), the group may (a warning, logged).
fn read_bytes(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let read = |error| KeyFileError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(read)?;
    let mode = file.metadata().map_err(read)?.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if mode & 0o070 != 0 {
        log::warn!(
            "cluster keys: the key file {} may be read by its group (mode {:04o}); every \
             member can forge peer datagrams (chmod 600 unless that is intended)",
            path.display(),
            mode & 0o7777
        );
    }
    let mut bytes = Vec::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn parse_bytes(bytes: &[u8]) -> Result<KeySet, KeyFileError> {
    parse(std::str::from_utf8(bytes).map_err(|_| KeyFileError::NotText)?)
}

/// Reads and parses the key file at `path`.
pub fn read(path: &Path) -> Result<KeySet, KeyFileError> {
    parse_bytes(&read_bytes(path)?)
}

/// A node's key file, checked for changes from its event loop.
#[derive(Debug)]
pub struct KeyFileWatch {
    path: PathBuf,
    /// The content last read (applied, or refused and logged): a change is a different
    /// content, so an edit is seen whatever the file times say, and a bad file is reported
    /// once, not every check.
    content: Vec<u8>,
    next_check: Instant,
}

/// What a check of the key file found.
#[derive(Debug)]
pub enum KeyFileCheck {
    /// Not due, or the same content as last time.
    Unchanged,
    /// A new, valid key set: apply it.
    Changed(KeySet),
    /// A changed file that is not valid (or could not be read): keep the keys in force.
    Refused(KeyFileError),
}

impl KeyFileWatch {
    /// Reads the key file at start: its keys, and the watch that sees later changes.
    pub fn open(path: &Path) -> Result<(KeyFileWatch, KeySet), KeyFileError> {
        let content = read_bytes(path)?;
        let keys = parse_bytes(&content)?;
        let watch = KeyFileWatch {
            path: path.to_path_buf(),
            content,
            next_check: Instant::ZERO,
        };
        Ok((watch, keys))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the next check is due.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Reads the file if a check is due (every [`KEY_FILE_CHECK_MS`] from `now`), and says
    /// whether it changed, to what, or why it is refused.
    pub fn check(&mut self, now: Instant) -> KeyFileCheck {
        if now < self.next_check {
            return KeyFileCheck::Unchanged;
        }
        self.next_check = now + Duration::from_millis(KEY_FILE_CHECK_MS);
        let content = match read_bytes(&self.path) {
            Ok(c) => c,
            // Unreadable (moved away mid-edit, or permissions): reported once per cause.
            Err(e) => {
                let marker = format!("\u{0}unreadable: {e}").into_bytes();
                if marker == self.content {
                    return KeyFileCheck::Unchanged;
                }
                self.content = marker;
                return KeyFileCheck::Refused(e);
            }
        };
        if content == self.content {
            return KeyFileCheck::Unchanged;
        }
        let parsed = parse_bytes(&content);
        self.content = content;
        match parsed {
            Ok(keys) => KeyFileCheck::Changed(keys),
            Err(e) => KeyFileCheck::Refused(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const B: &str = "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752";

    fn ids(keys: &KeySet) -> Vec<Option<u32>> {
        keys.entries()
            .iter()
            .map(|e| e.as_ref().map(ClusterKey::id))
            .collect()
    }

    fn key(hex_digits: &str) -> Option<u32> {
        Some(ClusterKey::new(&parse_key(hex_digits, 1).unwrap()).id())
    }

    #[test]
    fn a_key_file_is_up_to_two_entries_with_comments_and_blank_lines() {
        let keys = parse(&format!(
            "# rotation in progress\n\n  {A}  # the old key, sent with\n{B}\n"
        ))
        .unwrap();
        assert_eq!(ids(&keys), [key(A), key(B)]);
        assert_eq!(ids(&parse("none\n").unwrap()), [None]);
        assert_eq!(ids(&parse(&format!("none\n{A}")).unwrap()), [None, key(A)]);
        // Upper- and lower-case hex name the same key.
        assert_eq!(key(B), key(&B.to_lowercase()));
    }

    #[test]
    fn a_bad_key_file_names_its_line() {
        let said = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            said(&format!("# c\n{}\n", &A[..63])),
            "line 2: a key has 64 hex digits (32 bytes), this one 63"
        );
        assert!(said(&format!("{}zz\n", &A[..62])).starts_with("line 1: not a key"));
        assert!(said("key = 1234\n").starts_with("line 1: not a key"));
        assert!(said(&format!("{A}\n{B}\n\nnone\n")).starts_with("line 4: more than 2 entries"));
        assert!(said("# nothing\n\n").starts_with("no entry"));
        assert_eq!(said(""), said("   \n# \n"));
        assert_eq!(
            said(&format!("{A}\n# again\n{}\n", A.to_uppercase())),
            "line 3: the same entry as line 1"
        );
        assert_eq!(said("none\nnone\n"), "line 2: the same entry as line 1");
    }

    #[test]
    fn written_text_reads_back() {
        let (a, b) = (random_key(), random_key());
        assert_ne!(a, b);
        for entries in [vec![Some(a)], vec![Some(a), Some(b)], vec![None, Some(b)]] {
            let keys = parse(&text(&entries)).unwrap();
            let want: Vec<Option<u32>> = entries
                .iter()
                .map(|e| e.map(|k| ClusterKey::new(&k).id()))
                .collect();
            assert_eq!(ids(&keys), want);
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("udplock-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn create_writes_0600_and_refuses_to_overwrite() {
        let path = temp("create");
        create(&path, &[Some(random_key())]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::read(&path).unwrap();
        let again = create(&path, &[Some(random_key())]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(read(&path).is_ok());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let path = temp("open");
        create(&path, &[Some(random_key())]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&path).unwrap_err();
        assert!(matches!(e, KeyFileError::Permissions { .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // The group alone: accepted (with a warning in the log).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read(&path).is_ok());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_watch_sees_changed_content_once_and_keeps_going_after_a_bad_file() {
        let path = temp("watch");
        create(&path, &[Some(random_key())]).unwrap();
        let (mut watch, keys) = KeyFileWatch::open(&path).unwrap();
        assert_eq!(keys.entries().len(), 1);
        let t = |ms: u64| Instant::ZERO + Duration::from_millis(ms);
        assert!(matches!(watch.check(t(0)), KeyFileCheck::Unchanged));
        let second = random_key();
        std::fs::write(&path, format!("{A}\n{}\n", hex(&second))).unwrap();
        // Not due yet: the last check was at 0.
        assert!(matches!(watch.check(t(999)), KeyFileCheck::Unchanged));
        match watch.check(t(1_000)) {
            KeyFileCheck::Changed(k) => assert_eq!(k.entries().len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(watch.check(t(2_000)), KeyFileCheck::Unchanged));
        std::fs::write(&path, "garbage\n").unwrap();
        match watch.check(t(3_000)) {
            KeyFileCheck::Refused(e) => assert_eq!(e.to_string().get(..7), Some("line 1:")),
            other => panic!("{other:?}"),
        }
        // Reported once, not at every check.
        assert!(matches!(watch.check(t(4_000)), KeyFileCheck::Unchanged));
        std::fs::write(&path, format!("{B}\n")).unwrap();
        match watch.check(t(5_000)) {
            KeyFileCheck::Changed(k) => assert_eq!(ids(&k), [key(B)]),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_file(&path);
    }
}
