//! The client's settings ([`ClientConfig`]), their validation, and the limits a caller can
//! run into.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use udplock_protocol::{ClientKey, SHARDS_DEFAULT, SHARDS_MAX};

use crate::client_keys::ClientKeyFile;

use crate::core::call::LEASE_MS_MAX_DEFAULT;
use crate::core::retransmit::{RetransmitConfig, REQUEST_LIFETIME_MAX};
use crate::error::LockError;

#[cfg(doc)]
use super::Client;

/// Longest wait an acquire may ask for: the spec's default `wait_ms_max` (5 minutes). Longer
/// waits belong in a loop in the caller, which can also re-check whether it still wants the
/// lock.
pub const WAIT_MS_MAX: u64 = 300_000;

/// Requests one `Client` may have in flight at once. Beyond it an operation fails at once
/// with [`LockError::Overloaded`] rather than queueing: 4096 threads blocked on one client
/// means the program is already in trouble, and the bound keeps the pending map and the
/// number of sessions (one lane per call in flight) this client uses at the server bounded.
pub const OUTSTANDING_MAX: usize = 4096;

/// Longest [`ClientConfig::owner_prefix`]: a generated owner id adds 16 hex digits of the
/// session, a `-` and a guard number of up to 20 digits (a `u64`), 37 bytes, and must stay
/// within an id's 255 bytes (spec §4.1).
pub const OWNER_PREFIX_LEN_MAX: usize = udplock_protocol::ID_LEN_MAX - OWNER_SUFFIX_LEN_MAX;

/// The longest part of a generated owner id after its prefix: `{session:016x}-{n}`.
const OWNER_SUFFIX_LEN_MAX: usize = 16 + 1 + 20;

/// Longest grace a [`ClientConfig`] accepts, so that `WAIT_MS_MAX + grace_ms` stays within
/// the spec's `request_lifetime_ms_max` (360 000 ms) after which a client MUST NOT
/// retransmit.
pub const GRACE_MS_MAX: u64 = 60_000;

/// Settings of a [`Client`]. `ClientConfig::new(servers)` gives the defaults; change fields
/// by assignment.
///
/// `#[non_exhaustive]`: later versions may add settings (with defaults), so it is built with
/// [`ClientConfig::new`] or [`ClientConfig::resolve`], never with a struct literal.
///
/// ```
/// let mut config = udplock::ClientConfig::new(vec!["127.0.0.1:7100".parse().unwrap()]);
/// config.request_timeout_ms = 500;
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The cluster's node addresses (the UDP address clients send to; from host names with
    /// [`ClientConfig::resolve`]). Requests go to the leader of their resource's shard, found
    /// through these (see "Routing" in the module docs). One reachable address is enough: the
    /// client reads the cluster's member table from it and then uses every alive member too
    /// ("Discovery" in `routing.rs`, spec §7.1.8); more let it start when a node is down.
    /// IPv4 and IPv6 addresses may be mixed.
    pub servers: Vec<SocketAddr>,
    /// How many shards the cluster splits resources into: a resource's shard is
    /// `FNV-1a-64(resource_id) % shards`. Must match the cluster's shard count for the best
    /// latency (every call then goes straight to its leader); a mismatch only costs redirects
    /// (NOT_LEADER hints), never correctness. Default [`SHARDS_DEFAULT`]; 1 to
    /// [`SHARDS_MAX`].
    pub shards: u32,
    /// Retransmission timer settings (RTO initial value, floor and ceiling).
    pub retransmit: RetransmitConfig,
    /// Extra wait after an acquire's own `timeout_ms` for the server's final answer: the
    /// server answers LOCK_ACQUISITION_TIMEOUT at its deadline, and this lets that reply
    /// arrive; it is also all a try-acquire (wait 0) waits for its answer. Default 200 ms;
    /// 1 to [`GRACE_MS_MAX`].
    pub grace_ms: u64,
    /// Deadline of release, renew, status and configure. Default 2000 ms; at most 360 000.
    pub request_timeout_ms: u64,
    /// Clock-drift bound in parts per million: a lease is shortened by this fraction, since
    /// the client's and the server's clocks may run at different rates. Default 10 000 (1%).
    pub drift_bound_ppm: u32,
    /// The longest lease the client believes a server may give without being asked for it
    /// (an acquire with the resource's default TTL, a re-entry, a renewal): the servers'
    /// `ttl_ms_max`, which the client does not ask for before each call. A reply carrying a
    /// longer lease is taken for forged or broken and dropped (spec §7.1.4), so a client of
    /// servers started with a longer `--ttl-max` must raise this to theirs. Default
    /// [`LEASE_MS_MAX_DEFAULT`] (1 hour, the servers' default); at least 1.
    pub lease_ms_max: u32,
    /// The client key every lock request is sealed with (spec §7.1.10): ACQUIRE, RELEASE,
    /// RENEW, STATUS, CONFIGURE, KEEPALIVE and CANCEL_WAIT carry its id and a MAC, and only
    /// replies sealed with it are believed (an unsealed UNAUTHENTICATED only by an ACQUIRE
    /// or a STATUS, spec §7.1.10 rule 2). Servers with a
    /// client key file then let this client act only for the client ids the key's prefixes
    /// cover. `None` (the default): unsealed requests, as to servers without keys. The
    /// operators' reads (shard status, node settings, the member table) are never sealed.
    /// Set it with [`ClientConfig::with_client_key`] or
    /// [`ClientConfig::with_client_key_file`].
    pub client_key: Option<ClientKey>,
    /// Put before every guard's generated owner id (`<prefix><session hex>-<n>`), so that a
    /// guard without a named owner ([`LockOptions::owner`]) acts for an id the client's key
    /// authorizes: servers with a key file refuse ids outside the key's prefixes (FORBIDDEN).
    /// Default empty; [`ClientConfig::with_client_key_file`] sets it, if still empty, to the
    /// first prefix on the file's first key line. At most [`OWNER_PREFIX_LEN_MAX`] bytes, so
    /// that every generated owner fits in an id (255 bytes). Set it with
    /// [`ClientConfig::with_owner_prefix`].
    ///
    /// [`LockOptions::owner`]: super::LockOptions::owner
    pub owner_prefix: String,
}

/// Two configurations are equal when every setting is, a client key by its key id (the
/// key's secret is not kept where it could be compared).
impl PartialEq for ClientConfig {
    fn eq(&self, other: &ClientConfig) -> bool {
        let key_id = |c: &ClientConfig| c.client_key.as_ref().map(ClientKey::key_id);
        self.servers == other.servers
            && self.shards == other.shards
            && self.retransmit == other.retransmit
            && self.grace_ms == other.grace_ms
            && self.request_timeout_ms == other.request_timeout_ms
            && self.drift_bound_ppm == other.drift_bound_ppm
            && self.lease_ms_max == other.lease_ms_max
            && key_id(self) == key_id(other)
            && self.owner_prefix == other.owner_prefix
    }
}

impl Eq for ClientConfig {}

/// Resolves `HOST:PORT`s (or `IP:PORT`, `[IPv6]:PORT`) into the addresses of
/// [`ClientConfig::servers`], now, with the system's resolver: EVERY address of each name, in
/// the resolver's order, duplicates dropped. A name with several addresses (a DNS name for
/// the whole cluster, or `localhost` with IPv4 and IPv6) is several ways in, and any one
/// that answers is enough ([`Client`] asks them all for the member table at once, and marks
/// the silent ones suspect). Blank entries are skipped; an error names the host that does
/// not resolve, or says that no address was given.
pub fn resolve_servers<S: AsRef<str>>(hosts: &[S]) -> Result<Vec<SocketAddr>, LockError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for host in hosts
        .iter()
        .map(|h| h.as_ref().trim())
        .filter(|h| !h.is_empty())
    {
        let addrs = host.to_socket_addrs().map_err(|e| {
            LockError::InvalidArgument(format!(
                "server address {host:?} (HOST:PORT, IP:PORT or [IPv6]:PORT): {e}"
            ))
        })?;
        let addrs: Vec<SocketAddr> = addrs.collect();
        if addrs.is_empty() {
            return Err(LockError::InvalidArgument(format!(
                "server address {host:?}: the host has no address"
            )));
        }
        for addr in addrs {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    if out.is_empty() {
        return Err(LockError::InvalidArgument(
            "no server address given: name at least one (HOST:PORT)".into(),
        ));
    }
    Ok(out)
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            servers: Vec::new(),
            shards: SHARDS_DEFAULT,
            retransmit: RetransmitConfig::default(),
            grace_ms: 200,
            request_timeout_ms: 2_000,
            drift_bound_ppm: 10_000,
            lease_ms_max: LEASE_MS_MAX_DEFAULT,
            client_key: None,
            owner_prefix: String::new(),
        }
    }
}

impl ClientConfig {
    /// The defaults, with these servers.
    pub fn new(servers: Vec<SocketAddr>) -> ClientConfig {
        ClientConfig {
            servers,
            ..ClientConfig::default()
        }
    }

    /// The defaults, with the servers `hosts` name, resolved now ([`resolve_servers`]).
    pub fn resolve(hosts: &[impl AsRef<str>]) -> Result<ClientConfig, LockError> {
        Ok(ClientConfig::new(resolve_servers(hosts)?))
    }

    /// These settings, every lock request sealed with `key` ([`ClientConfig::client_key`]).
    ///
    /// ```
    /// use udplock::{ClientConfig, ClientKey};
    /// let key = ClientKey::from_hex(&"ab".repeat(32)).unwrap();
    /// let config = ClientConfig::new(vec!["127.0.0.1:7100".parse().unwrap()]).with_client_key(key);
    /// assert!(config.client_key.is_some());
    /// ```
    pub fn with_client_key(self, key: ClientKey) -> ClientConfig {
        ClientConfig {
            client_key: Some(key),
            ..self
        }
    }

    /// These settings, sealed with the first key of the client key file at `path` (the
    /// servers' format, README "Client keys": `<64 hex digits> <prefix> ...` lines; a client
    /// uses the first key line). If [`ClientConfig::owner_prefix`] is still empty it becomes
    /// that line's first prefix (other than `*`), so that guards without a named owner act
    /// for ids the key authorizes; a prefix that is not UTF-8 or is longer than
    /// [`OWNER_PREFIX_LEN_MAX`] is not taken (set one with
    /// [`ClientConfig::with_owner_prefix`]). An error names the file and says what is
    /// wrong: it cannot be read (the error's kind is the system's), others may read it, it
    /// does not parse, or it lists no key ([`io::ErrorKind::InvalidData`]).
    pub fn with_client_key_file(self, path: impl AsRef<Path>) -> io::Result<ClientConfig> {
        let path = path.as_ref();
        if let Err(e) = std::fs::metadata(path) {
            return Err(io::Error::new(
                e.kind(),
                format!("client key file {}: {e}", path.display()),
            ));
        }
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let file = ClientKeyFile::read(path).map_err(invalid)?;
        let key = file.first_key().cloned().ok_or_else(|| {
            invalid(format!(
                "client key file {}: no key in it (only a `none` line, comments or blank \
                 lines)",
                path.display()
            ))
        })?;
        let mut config = self.with_client_key(key);
        if config.owner_prefix.is_empty() {
            let prefix = file
                .first_prefix()
                .and_then(|p| std::str::from_utf8(p).ok());
            if let Some(prefix) = prefix.filter(|p| p.len() <= OWNER_PREFIX_LEN_MAX) {
                config.owner_prefix = prefix.to_owned();
            }
        }
        Ok(config)
    }

    /// These settings, with guards' generated owner ids under `prefix`
    /// ([`ClientConfig::owner_prefix`]): `<prefix><session hex>-<n>`.
    ///
    /// ```
    /// let config = udplock::ClientConfig::new(vec!["127.0.0.1:7100".parse().unwrap()])
    ///     .with_owner_prefix("team-a/");
    /// assert_eq!(config.owner_prefix, "team-a/");
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn with_owner_prefix(self, prefix: impl Into<String>) -> ClientConfig {
        ClientConfig {
            owner_prefix: prefix.into(),
            ..self
        }
    }

    /// Refuses settings that cannot work; the error says which and why.
    pub fn validate(&self) -> Result<(), LockError> {
        let invalid = |what: String| Err(LockError::InvalidArgument(what));
        if self.servers.is_empty() {
            return invalid("no lock server address given: name at least one".into());
        }
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return invalid(format!(
                "shards must be 1 to {SHARDS_MAX} (the cluster's shard count), got {}",
                self.shards
            ));
        }
        if let Err(e) = self.retransmit.validate() {
            return invalid(format!("retransmit config: {e}"));
        }
        let lifetime_ms = REQUEST_LIFETIME_MAX.as_millis();
        if self.request_timeout_ms == 0 || self.request_timeout_ms > lifetime_ms {
            return invalid(format!(
                "request_timeout_ms must be 1 to {lifetime_ms}, got {}",
                self.request_timeout_ms
            ));
        }
        if self.grace_ms == 0 || self.grace_ms > GRACE_MS_MAX {
            return invalid(format!(
                "grace_ms must be 1 to {GRACE_MS_MAX}, got {}",
                self.grace_ms
            ));
        }
        if self.drift_bound_ppm >= 1_000_000 {
            return invalid(format!(
                "drift_bound_ppm must be below 1000000 (100%), got {}",
                self.drift_bound_ppm
            ));
        }
        if self.lease_ms_max == 0 {
            return invalid("lease_ms_max must be at least 1 ms (the servers' ttl_ms_max)".into());
        }
        if self.owner_prefix.len() > OWNER_PREFIX_LEN_MAX {
            return invalid(format!(
                "owner_prefix must be at most {OWNER_PREFIX_LEN_MAX} bytes (a generated owner \
                 id adds up to {OWNER_SUFFIX_LEN_MAX} to it, and an id is at most 255), got {}",
                self.owner_prefix.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every address of every name, once each; IPv6 literals in brackets; a name that does
    /// not resolve is named in the error.
    #[test]
    fn servers_are_resolved_with_every_address() {
        let addrs = resolve_servers(&[
            "localhost:7100",
            " 127.0.0.1:7100 ",
            "",
            "[::1]:7101",
            "10.0.0.1:7102",
        ])
        .unwrap();
        assert!(
            addrs.contains(&"127.0.0.1:7100".parse().unwrap()),
            "{addrs:?}"
        );
        assert!(addrs.contains(&"[::1]:7101".parse().unwrap()), "{addrs:?}");
        assert_eq!(addrs.last(), Some(&"10.0.0.1:7102".parse().unwrap()));
        let v4 = addrs.iter().filter(|a| a.port() == 7100 && a.is_ipv4());
        assert_eq!(v4.count(), 1, "duplicates dropped: {addrs:?}");
        let err = resolve_servers(&["127.0.0.1:1", "no-such-host.invalid:7100"]).unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
        let err = resolve_servers(&["localhost"]).unwrap_err();
        assert!(err.to_string().contains("\"localhost\""), "{err}");
        assert!(resolve_servers::<&str>(&[]).is_err());
        let config = ClientConfig::resolve(&["localhost:7100"]).unwrap();
        assert!(config.validate().is_ok());
    }

    /// A client takes the first key line of a key file (prefixes and `none` lines are the
    /// servers'); an error names the file: missing (its own kind), readable by others, or
    /// without a key.
    /// A generated owner is the prefix plus up to 37 bytes: a longer prefix than
    /// [`OWNER_PREFIX_LEN_MAX`] could make an id the servers refuse (over 255 bytes).
    #[test]
    fn the_owner_prefix_leaves_room_for_the_generated_part() {
        let config = ClientConfig::new(vec!["127.0.0.1:7100".parse().unwrap()]);
        let longest = format!(
            "{}{:016x}-{}",
            "p".repeat(OWNER_PREFIX_LEN_MAX),
            u64::MAX,
            u64::MAX
        );
        assert_eq!(longest.len(), udplock_protocol::ID_LEN_MAX);
        let fits = config
            .clone()
            .with_owner_prefix("p".repeat(OWNER_PREFIX_LEN_MAX));
        assert!(fits.validate().is_ok());
        let over = config.with_owner_prefix("p".repeat(OWNER_PREFIX_LEN_MAX + 1));
        let e = over.validate().unwrap_err();
        assert!(e.to_string().contains("owner_prefix"), "{e}");
    }

    #[test]
    fn a_client_key_file_gives_its_first_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("udplock-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let (first, second) = ("ab".repeat(32), "cd".repeat(32));
        let text = format!("# team a\nnone public/\n{first} a/ b/\n{second} *\n");
        let config = ClientConfig::new(vec!["127.0.0.1:7100".parse().unwrap()]);
        let keyed = (config.clone())
            .with_client_key_file(write("team.key", &text, 0o600))
            .unwrap();
        let want = ClientKey::from_hex(&first).unwrap().key_id();
        assert_eq!(keyed.client_key.as_ref().map(ClientKey::key_id), Some(want));
        assert_eq!(
            keyed.owner_prefix, "a/",
            "the first key line's first prefix"
        );
        let named = (config.clone().with_owner_prefix("b/jobs/"))
            .with_client_key_file(write("named.key", &text, 0o600))
            .unwrap();
        assert_eq!(named.owner_prefix, "b/jobs/", "one set before is kept");
        let star = format!("{second} *\n");
        let everyone = (config.clone())
            .with_client_key_file(write("star.key", &star, 0o600))
            .unwrap();
        assert_eq!(everyone.owner_prefix, "", "`*` needs no prefix");
        let long = format!("{first} {}\n", "x".repeat(OWNER_PREFIX_LEN_MAX + 1));
        let long = (config.clone())
            .with_client_key_file(write("long.key", &long, 0o600))
            .unwrap();
        assert_eq!(long.owner_prefix, "", "too long for an owner: not taken");
        assert!(long.validate().is_ok());
        assert_ne!(keyed, config, "the key is part of the settings");
        assert!(
            !format!("{keyed:?}").contains(&first[..16]),
            "no secret in Debug"
        );
        let missing = config.clone().with_client_key_file(dir.join("missing"));
        let e = missing.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("missing"), "{e}");
        let open = write("open.key", &text, 0o644);
        let e = config.clone().with_client_key_file(&open).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let keyless = write("none.key", "none *\n", 0o600);
        let e = config.with_client_key_file(&keyless).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("no key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
