//! Client key files (`--client-key-file`, spec §7.1.10, §7.2.6): which keys a server accepts
//! and which client ids each one authorizes; for a client, the key it seals its requests with.
//!
//! ```text
//! # team A: every id that starts with "team-a/"
//! 1f0e...64 hex digits...a9 team-a/
//! # team B: two prefixes, one with an arbitrary byte
//! 77c1...64 hex digits...02 team-b/ batch\x00
//! # what a request without a key may do (optional, at most one line)
//! none legacy/
//! ```
//!
//! One entry per line: a key (64 hex digits, 32 bytes) followed by the prefixes of the client
//! ids it authorizes, or the word `none` followed by the prefixes an unauthenticated request
//! may act for. A prefix is the id's first bytes written as text with no spaces, `\xNN` for
//! any byte and `\\` for a backslash; `*` alone means every id. An id matches a prefix if it
//! starts with it. A word starting with `#` starts a comment to the end of the line; blank lines
//! are ignored. `none *` accepts everything as a server without keys does: the first step of
//! turning keys on in a running deployment, while clients get their keys. A key line without
//! prefixes authorizes no client id (a client's own key file needs none: it uses the first
//! key, [`ClientKeyFile::first_key`]).
//!
//! Refused (with the line number): a malformed key, a bad escape, an empty or too long
//! prefix, two keys with the same key id (the second could never be told from the first), a
//! second `none` line, more than [`CLIENT_KEYS_MAX`] keys or [`PREFIXES_PER_KEY_MAX`] prefixes
//! on a line.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use udplock_protocol::{ClientKey, ID_LEN_MAX};

/// Most keys one file lists: a key per team, with room to spare; bounds the file's memory and
/// the start-up cost.
pub const CLIENT_KEYS_MAX: usize = 4_096;

/// Most prefixes on one line: authorizing a request compares its client id with each prefix
/// of its key, so this bounds the work per request.
pub const PREFIXES_PER_KEY_MAX: usize = 256;

/// Largest client key file read: [`CLIENT_KEYS_MAX`] keys with a few prefixes each fit; a
/// path that names something else (a log, a device) is refused instead of read whole.
pub const CLIENT_KEY_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// What a key file says of one request (spec §7.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// The request may act for the client id.
    Allowed,
    /// The request needs a key (it carries none and `none` does not cover it), or its key id
    /// is not in the file: answered UNAUTHENTICATED, unsealed.
    Unauthenticated,
    /// The key is in the file but does not authorize the client id: answered FORBIDDEN, sealed.
    Forbidden,
}

/// Which client ids an entry authorizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Prefixes {
    /// `*`: every id.
    all: bool,
    /// Byte prefixes; an id matches if it starts with one.
    prefixes: Vec<Vec<u8>>,
}

impl Prefixes {
    fn matches(&self, client_id: &[u8]) -> bool {
        self.all || self.prefixes.iter().any(|p| client_id.starts_with(p))
    }
}

/// One key of the file and what it authorizes.
#[derive(Clone, Debug)]
struct Entry {
    key: ClientKey,
    prefixes: Prefixes,
}

/// A parsed client key file: keys in file order, looked up by key id.
#[derive(Clone, Debug, Default)]
pub struct ClientKeyFile {
    /// In file order (the first is what a client seals with).
    entries: Vec<Entry>,
    /// (key id, index into `entries`), sorted by key id: one binary search per request.
    by_id: Vec<(u32, usize)>,
    /// What a request without a key may do: the `none` line, or `None` (nothing).
    unauthenticated: Option<Prefixes>,
}

impl ClientKeyFile {
    /// Parses a key file's text. The error names the line (from 1) and what is wrong with it,
    /// never key bytes.
    pub fn parse(text: &str) -> Result<ClientKeyFile, String> {
        let mut file = ClientKeyFile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let mut words = raw
                .split_ascii_whitespace()
                .take_while(|w| !w.starts_with('#'));
            let Some(first) = words.next() else {
                continue;
            };
            let prefixes = parse_prefixes(words).map_err(|e| format!("line {line}: {e}"))?;
            if first == "none" {
                if file.unauthenticated.is_some() {
                    return Err(format!("line {line}: a second `none` line"));
                }
                file.unauthenticated = Some(prefixes);
                continue;
            }
            let key = ClientKey::from_hex(first).ok_or_else(|| {
                format!("line {line}: not a key (64 hex digits) nor the word `none`")
            })?;
            if file.entries.len() == CLIENT_KEYS_MAX {
                return Err(format!(
                    "line {line}: more than {CLIENT_KEYS_MAX} keys (CLIENT_KEYS_MAX)"
                ));
            }
            let id = key.key_id();
            if file.entries.iter().any(|e| e.key.key_id() == id) {
                return Err(format!(
                    "line {line}: key id {id:08x} is already used by an earlier key \
                     (the same key twice, or two keys with one id: draw a new key)"
                ));
            }
            file.by_id.push((id, file.entries.len()));
            file.entries.push(Entry { key, prefixes });
        }
        file.by_id.sort_unstable();
        Ok(file)
    }

    /// Reads and parses the key file at `path`. Refused: a file larger than
    /// [`CLIENT_KEY_FILE_BYTES_MAX`], or one that users other than its owner and group may
    /// read or write (anyone could then use or change the keys).
    pub fn read(path: &Path) -> Result<ClientKeyFile, String> {
        ClientKeyFile::read_with_text(path).map(|(file, _)| file)
    }

    /// [`ClientKeyFile::read`], and the file's text (a node that watches the file for
    /// changes compares it with the next read).
    pub fn read_with_text(path: &Path) -> Result<(ClientKeyFile, String), String> {
        let shown = path.display();
        let file = File::open(path).map_err(|e| format!("client key file {shown}: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("client key file {shown}: {e}"))?;
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            return Err(format!(
                "client key file {shown}: other users may access it (mode {:o}); chmod 600 it",
                mode & 0o777
            ));
        }
        if meta.len() > CLIENT_KEY_FILE_BYTES_MAX {
            return Err(format!(
                "client key file {shown}: larger than {CLIENT_KEY_FILE_BYTES_MAX} bytes"
            ));
        }
        let mut text = String::new();
        file.take(CLIENT_KEY_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("client key file {shown}: {e}"))?;
        let file =
            ClientKeyFile::parse(&text).map_err(|e| format!("client key file {shown}: {e}"))?;
        Ok((file, text))
    }

    /// The first key of the file: what a client seals its requests with (spec §7.1.10).
    pub fn first_key(&self) -> Option<&ClientKey> {
        self.entries.first().map(|e| &e.key)
    }

    /// The first prefix (other than `*`) on the first key line, if it has one: what a client
    /// holding that key puts before its guards' generated owner ids, so that they fall under
    /// the key's prefixes (`ClientConfig::owner_prefix`).
    pub fn first_prefix(&self) -> Option<&[u8]> {
        let entry = self.entries.first()?;
        entry.prefixes.prefixes.first().map(Vec::as_slice)
    }

    /// The key whose id is `key_id`, if the file lists it.
    pub fn key(&self, key_id: u32) -> Option<&ClientKey> {
        let at = self
            .by_id
            .binary_search_by_key(&key_id, |&(id, _)| id)
            .ok()?;
        Some(&self.entries[self.by_id[at].1].key)
    }

    /// How many keys the file lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the file lists no key (it may still have a `none` line).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the file has a `none` line (some requests without a key are allowed).
    pub fn has_none_line(&self) -> bool {
        self.unauthenticated.is_some()
    }

    /// The key ids, in file order (for logs: never key bytes).
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|e| e.key.key_id())
    }

    /// Whether a request sealed with `key_id` (`None`: no key) may act for `client_id`
    /// (spec §7.2.6): a known key authorizes the ids its prefixes cover and no other (the
    /// `none` line does not widen it); no key, the ids the `none` line covers; an unknown key
    /// id, none. The caller has verified the MAC of `key_id`.
    pub fn authorizes(&self, key_id: Option<u32>, client_id: &[u8]) -> Authorization {
        match key_id {
            Some(id) => match self.entry(id) {
                None => Authorization::Unauthenticated,
                Some(e) if e.prefixes.matches(client_id) => Authorization::Allowed,
                Some(_) => Authorization::Forbidden,
            },
            None => match &self.unauthenticated {
                Some(p) if p.matches(client_id) => Authorization::Allowed,
                _ => Authorization::Unauthenticated,
            },
        }
    }

    /// Whether a request that names no client id (CONFIGURE, spec §7.2.6) may run: any key of
    /// the file; without a key, only if the `none` line is `*` (every id).
    pub fn authenticates(&self, key_id: Option<u32>) -> Authorization {
        match key_id {
            Some(id) if self.entry(id).is_some() => Authorization::Allowed,
            Some(_) => Authorization::Unauthenticated,
            None => match &self.unauthenticated {
                Some(p) if p.all => Authorization::Allowed,
                _ => Authorization::Unauthenticated,
            },
        }
    }

    fn entry(&self, key_id: u32) -> Option<&Entry> {
        let at = self
            .by_id
            .binary_search_by_key(&key_id, |&(id, _)| id)
            .ok()?;
        Some(&self.entries[self.by_id[at].1])
    }
}

/// The prefixes of one line (the words after the key or `none`).
fn parse_prefixes<'a>(words: impl Iterator<Item = &'a str>) -> Result<Prefixes, String> {
    let mut out = Prefixes::default();
    for (n, word) in words.enumerate() {
        if n == PREFIXES_PER_KEY_MAX {
            return Err(format!(
                "more than {PREFIXES_PER_KEY_MAX} prefixes (PREFIXES_PER_KEY_MAX)"
            ));
        }
        if word == "*" {
            out.all = true;
            continue;
        }
        let prefix = unescape(word)?;
        if prefix.len() > ID_LEN_MAX {
            return Err(format!(
                "prefix {word:?} is longer than an id may be ({ID_LEN_MAX} bytes)"
            ));
        }
        out.prefixes.push(prefix);
    }
    Ok(out)
}

/// A prefix's bytes: the word's text, `\xNN` (two hex digits) for any byte, `\\` for a
/// backslash.
fn unescape(word: &str) -> Result<Vec<u8>, String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = word
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("prefix {word:?}: `\\x` needs two hex digits"))?;
                out.push(hex);
                i += 4;
            }
            _ => {
                return Err(format!(
                    "prefix {word:?}: unknown escape (only `\\xNN` and `\\\\`)"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
    const KEY_B: &str = "5be1d2c3a4f506172839aa4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f";

    fn id(hex: &str) -> u32 {
        ClientKey::from_hex(hex).unwrap().key_id()
    }

    #[test]
    fn keys_authorize_their_prefixes_only() {
        let file = ClientKeyFile::parse(&format!(
            "# teams\n{KEY_A} team-a/  # A\n\n{KEY_B} team-b/ batch\\x00\\\\\n"
        ))
        .unwrap();
        assert_eq!(file.len(), 2);
        assert_eq!(file.first_key().unwrap().key_id(), id(KEY_A));
        assert_eq!(file.first_prefix(), Some(&b"team-a/"[..]));
        let star = ClientKeyFile::parse(&format!("{KEY_A} *\n{KEY_B} b/\n")).unwrap();
        assert_eq!(
            star.first_prefix(),
            None,
            "`*` needs no prefix; later lines are not read"
        );
        assert_eq!(file.key(id(KEY_B)).unwrap().key_id(), id(KEY_B));
        assert!(file.key(id(KEY_A) ^ 1).is_none());
        let (a, b) = (Some(id(KEY_A)), Some(id(KEY_B)));
        use Authorization::*;
        assert_eq!(file.authorizes(a, b"team-a/worker-7"), Allowed);
        assert_eq!(file.authorizes(a, b"team-a/"), Allowed);
        assert_eq!(file.authorizes(a, b"team-a"), Forbidden);
        assert_eq!(file.authorizes(a, b"team-b/worker-1"), Forbidden);
        assert_eq!(file.authorizes(b, b"team-b/worker-1"), Allowed);
        assert_eq!(file.authorizes(b, b"batch\x00\\x"), Allowed);
        assert_eq!(file.authorizes(b, b"batch\x00x"), Forbidden);
        assert_eq!(file.authorizes(b, b"team-a/worker-7"), Forbidden);
        // No `none` line: nothing without a key; an unknown key is unauthenticated.
        assert_eq!(file.authorizes(None, b"team-a/worker-7"), Unauthenticated);
        assert_eq!(
            file.authorizes(Some(id(KEY_A) ^ 1), b"team-a/x"),
            Unauthenticated
        );
        assert_eq!(file.authenticates(a), Allowed);
        assert_eq!(file.authenticates(None), Unauthenticated);
        assert_eq!(file.authenticates(Some(7)), Unauthenticated);
    }

    #[test]
    fn the_none_line_says_what_requests_without_a_key_may_do() {
        use Authorization::*;
        let file = ClientKeyFile::parse(&format!("{KEY_A} team-a/\nnone legacy/\n")).unwrap();
        assert_eq!(file.authorizes(None, b"legacy/1"), Allowed);
        assert_eq!(file.authorizes(None, b"team-a/1"), Unauthenticated);
        // A key is held to its own prefixes, even where `none` would allow the id.
        assert_eq!(file.authorizes(Some(id(KEY_A)), b"legacy/1"), Forbidden);
        assert_eq!(file.authenticates(None), Unauthenticated);
        let open = ClientKeyFile::parse("none *").unwrap();
        assert!(open.is_empty() && open.first_key().is_none());
        assert_eq!(open.authorizes(None, b"anyone"), Allowed);
        assert_eq!(open.authenticates(None), Allowed);
        assert_eq!(open.authorizes(Some(1), b"anyone"), Unauthenticated);
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let cases = [
            (format!("{KEY_A} a/\n{KEY_A} b/"), "line 2: key id"),
            (format!("{} a/", &KEY_A[1..]), "line 1: not a key"),
            ("none a/\nnone b/".to_string(), "line 2: a second `none`"),
            (format!("\n{KEY_A} a\\q"), "line 2: prefix"),
            (format!("{KEY_A} a\\x4"), "line 1: prefix"),
            (format!("{KEY_A} {}", "x".repeat(256)), "line 1: prefix"),
            (
                format!("{KEY_A} {}", "p ".repeat(PREFIXES_PER_KEY_MAX + 1)),
                "line 1: more than 256 prefixes",
            ),
            ("nonsense".to_string(), "line 1: not a key"),
        ];
        for (text, want) in cases {
            let err = ClientKeyFile::parse(&text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
            assert!(
                !err.contains(&KEY_A[..16]),
                "an error shows key bytes: {err}"
            );
        }
        // Exactly the limit is fine; a key line without prefixes authorizes no id.
        let file = ClientKeyFile::parse(&format!("{KEY_A} {}", "p ".repeat(PREFIXES_PER_KEY_MAX)))
            .unwrap();
        assert_eq!(file.len(), 1);
        let bare = ClientKeyFile::parse(KEY_B).unwrap();
        assert_eq!(
            bare.authorizes(Some(id(KEY_B)), b"x"),
            Authorization::Forbidden
        );
        assert!(ClientKeyFile::parse("").unwrap().is_empty());
    }

    #[test]
    fn read_refuses_files_others_may_access() {
        let dir = std::env::temp_dir().join(format!("udplock-client-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, format!("{KEY_A} team-a/\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClientKeyFile::read(&path).unwrap_err();
        assert!(err.contains("other users"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = ClientKeyFile::read(&path).unwrap();
        assert_eq!(file.first_key().unwrap().key_id(), id(KEY_A));
        assert!(ClientKeyFile::read(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
