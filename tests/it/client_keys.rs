//! Client keys from the client's side (issue 12 item 2, spec §7.1.10), against real nodes
//! on loopback: a team's key acts only for its client-id prefix, a client without a key is
//! refused, `none *` lets it in, and the CLI's `--client-key-file` (and
//! `UDPLOCK_CLIENT_KEY_FILE`) seals the command's requests. (The forged and replayed
//! datagrams are `client_auth.rs`'s.)

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use udplock::client_keys::ClientKeyFile;
use udplock::single::{SingleConfig, SingleNode};
use udplock::{Client, ClientConfig, ClientKey, LockError};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");

/// Team A's key (prefix `a/`) and team B's (prefix `b/`), as 64 hex digits.
const KEY_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const KEY_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

/// The servers' key file: team A for `a/`, team B for `b/`, and the `extra` lines.
fn servers_file(extra: &str) -> String {
    format!("# teams\n{KEY_A} a/\n{KEY_B} b/\n{extra}")
}

fn node(key_file: &str) -> SingleNode {
    let mut config = SingleConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let keys = ClientKeyFile::parse(key_file).expect("the key file parses");
    config.client_keys = Some(std::sync::Arc::new(keys));
    SingleNode::start(config).expect("node starts")
}

fn client(node: &SingleNode, key: Option<&str>) -> Client {
    let mut config = ClientConfig::new(vec![node.local_addr()]);
    config.shards = 1;
    if let Some(hex) = key {
        config = config.with_client_key(ClientKey::from_hex(hex).unwrap());
    }
    Client::new(config).expect("client")
}

/// Team A locks `a/1`; team B's key cannot release it (FORBIDDEN, naming the id) nor take
/// it as A's id, a client without a key cannot release it (UNAUTHENTICATED), nor one with a
/// key the servers do not know take it (UNAUTHENTICATED, unsealed: it ends only an ACQUIRE,
/// spec §7.1.10 rule 2); every refusal changed nothing: A still holds it with its
/// token, renews it, and releases it. Reads need no key.
#[test]
fn a_team_key_acts_only_for_its_prefix() {
    let node = node(&servers_file(""));
    let (a, b, none) = (
        client(&node, Some(KEY_A)),
        client(&node, Some(KEY_B)),
        client(&node, None),
    );
    let stranger = client(&node, Some(&"c3".repeat(32)));
    let lease = a.acquire("a/1", "a/worker", 0, Some(60_000)).unwrap();
    let forbidden = |id: &str| LockError::Forbidden {
        client_id: Some(id.into()),
    };
    assert_eq!(b.release("a/1", "a/worker"), Err(forbidden("a/worker")));
    assert_eq!(
        b.renew("a/1", "a/worker", Some(3_600_000)).map(drop),
        Err(forbidden("a/worker"))
    );
    assert_eq!(
        b.acquire("a/1", "a/worker", 0, None).map(drop),
        Err(forbidden("a/worker")),
        "B cannot re-enter A's hold"
    );
    assert_eq!(
        b.acquire("a/1", "b/worker", 0, None).map(drop),
        Err(LockError::LockAcquisitionTimeout),
        "B's key is valid for its own ids: the lock is simply held"
    );
    assert_eq!(
        none.release("a/1", "a/worker"),
        Err(LockError::Unauthenticated)
    );
    assert_eq!(
        stranger.acquire("a/1", "a/worker", 0, None).map(drop),
        Err(LockError::Unauthenticated)
    );
    for reader in [&a, &b, &none] {
        let status = reader.status("a/1").unwrap();
        assert_eq!(status.holder.as_deref(), Some("a/worker"));
        assert_eq!(status.fencing_token, lease.fencing_token);
        assert_eq!(status.hold_count, 1);
    }
    let renewed = a.renew("a/1", "a/worker", Some(60_000)).unwrap();
    assert_eq!(renewed.fencing_token, lease.fencing_token);
    assert_eq!(a.release("a/1", "a/worker"), Ok(0));
}

/// A guard of a keyed client keeps its lock by sealed renewals (KEEPALIVE batches) and
/// releases it on drop; its owner must be one of the key's ids. Waits for a renewal to show
/// (the remaining lease goes up), not for a fixed time.
#[test]
fn a_keyed_guard_renews_and_releases() {
    let node = node(&servers_file(""));
    let a = client(&node, Some(KEY_A));
    let options = udplock::LockOptions::new()
        .owner("a/guard")
        .ttl(std::time::Duration::from_secs(3));
    let guard = a.lock("a/guarded", &options).unwrap();
    let started = std::time::Instant::now();
    let mut lowest = u32::MAX;
    loop {
        let status = a.status("a/guarded").unwrap();
        assert_eq!(status.holder.as_deref(), Some("a/guard"));
        if status.remaining_ttl_ms > lowest {
            break; // renewed
        }
        lowest = lowest.min(status.remaining_ttl_ms);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "never renewed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(guard.lost(), None);
    guard.release().unwrap();
    assert_eq!(a.status("a/guarded").unwrap().hold_count, 0);
}

/// A guard without a named owner, of a client whose key comes from its key file, works
/// against servers that authorize only the key's prefix: its generated owner is
/// `<prefix><session hex>-<n>` with the file's first prefix (`ClientConfig::owner_prefix`),
/// not refused as FORBIDDEN. Without the prefix (none in the file) the same guard is refused.
#[test]
fn a_default_guard_owner_is_under_the_keys_prefix() {
    let node = node(&servers_file(""));
    let file = key_file("guard-team-a.key", &format!("{KEY_A} a/\n"));
    let config = ClientConfig::new(vec![node.local_addr()])
        .with_client_key_file(&file)
        .unwrap();
    assert_eq!(config.owner_prefix, "a/");
    let mut config = config;
    config.shards = 1;
    let a = Client::new(config).unwrap();
    let options = udplock::LockOptions::new().ttl(std::time::Duration::from_secs(30));
    let guard = a.lock("a/defaulted", &options).unwrap();
    assert!(guard.owner().starts_with("a/"), "{}", guard.owner());
    let status = a.status("a/defaulted").unwrap();
    assert_eq!(status.holder.as_deref(), Some(guard.owner()));
    assert_eq!(guard.lost(), None);
    guard.release().unwrap();
    assert_eq!(a.status("a/defaulted").unwrap().hold_count, 0);

    let bare = key_file("guard-bare.key", &format!("{KEY_A}\n"));
    let mut config = ClientConfig::new(vec![node.local_addr()])
        .with_client_key_file(&bare)
        .unwrap();
    config.shards = 1;
    assert_eq!(config.owner_prefix, "");
    let refused = Client::new(config).unwrap().lock("a/defaulted", &options);
    assert!(
        matches!(refused, Err(LockError::Forbidden { .. })),
        "{refused:?}"
    );
}

/// The turning-on step: with `none *` a client without a key does everything as before,
/// while keyed clients are held to their prefixes; a key the servers do not know is
/// still refused.
#[test]
fn none_star_lets_clients_without_a_key_in() {
    let node = node(&servers_file("none *\n"));
    let (b, none) = (client(&node, Some(KEY_B)), client(&node, None));
    let lease = none.acquire("a/2", "anyone", 0, None).unwrap();
    assert_eq!(
        none.renew("a/2", "anyone", None).unwrap().fencing_token,
        lease.fencing_token
    );
    assert_eq!(
        b.release("a/2", "anyone"),
        Err(LockError::Forbidden {
            client_id: Some("anyone".into())
        }),
        "a keyed request is held to its key's prefixes, not to none's"
    );
    assert_eq!(none.release("a/2", "anyone"), Ok(0));
}

/// A key file in a fresh temporary directory, mode 0600.
fn key_file(name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir =
        std::env::temp_dir().join(format!("udplock-client-keys-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A `udplock server` process with `--client-key-file`, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(key_file: &std::path::Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--client-key-file"])
            .arg(key_file)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("udplock server starts");
        // It names its keys' ids, then its address: "... listening on ADDR ...".
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("the server did not start: {said}");
            }
            said.push_str(&line);
            if let Some(addr) = line.split_whitespace().skip_while(|w| *w != "on").nth(1) {
                break addr.to_string();
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(server: &Server, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--servers", &server.addr, "--shards", "1"])
        .env_remove("UDPLOCK_CLIENT_KEY_FILE")
        .envs(vars.iter().copied())
        .output()
        .expect("udplock runs")
}

/// A guard whose owner the servers' key file stops covering (the operator narrowed the key's
/// prefixes; the server re-reads the file) is lost with `LossReason::Forbidden` once a
/// renewal is answered FORBIDDEN (spec §7.1.10 rule 3), not renewed in vain until its lease
/// runs out. Waits for the loss (the reload and the next renewal), not for a fixed time.
#[test]
fn a_guard_whose_owner_the_key_no_longer_covers_is_lost_as_forbidden() {
    let servers = key_file("narrowed.keys", &servers_file(""));
    let server = Server::start(&servers);
    let mut config = ClientConfig::resolve(&[server.addr.as_str()])
        .unwrap()
        .with_client_key(ClientKey::from_hex(KEY_A).unwrap());
    config.shards = 1;
    let a = Client::new(config).unwrap();
    let options = udplock::LockOptions::new()
        .owner("a/narrowed")
        .ttl(std::time::Duration::from_secs(2));
    let guard = a.lock("a/narrowed", &options).unwrap();
    std::fs::write(&servers, format!("{KEY_A} c/\n{KEY_B} b/\n")).unwrap();
    assert_eq!(
        guard.wait_lost(std::time::Duration::from_secs(60)),
        Some(udplock::LossReason::Forbidden)
    );
}

/// The CLI: `keygen --client` writes a key line a server and a client both read; a
/// server with `--client-key-file` refuses a client without one (exit code 7) and one
/// acting outside its prefix (8); `--client-key-file` and `UDPLOCK_CLIENT_KEY_FILE` seal.
#[test]
fn the_cli_seals_with_client_key_file() {
    let dir = key_file("placeholder", "");
    let team = dir.with_file_name("team-a.key");
    let o = Command::new(BIN)
        .args(["keygen", "--client", "--prefix", "a/"])
        .arg(&team)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = std::fs::read_to_string(&team).unwrap();
    let servers = key_file("servers.keys", &format!("{text}{KEY_B} b/\n"));
    let server = Server::start(&servers);
    let team = team.to_str().unwrap();
    let o = run(
        &server,
        &["acquire", "a/1", "--client", "a/w", "--ttl", "60s"],
        &[],
    );
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--client-key-file"),
        "{o:?}"
    );
    let keyed = ["--client-key-file", team];
    let o = run(
        &server,
        &[&["acquire", "a/1", "--client", "a/w"][..], &keyed].concat(),
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = run(
        &server,
        &[&["release", "a/1", "--client", "b/w"][..], &keyed].concat(),
        &[],
    );
    assert_eq!(o.status.code(), Some(8), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\"b/w\""),
        "{o:?}"
    );
    // `udplock lock`'s default owner is under the key file's first prefix (`a/`): it works.
    // With a key line that names no prefix it is under none: refused, with a hint; --owner
    // works.
    let key_hex = text
        .lines()
        .find(|line| !line.starts_with('#'))
        .and_then(|line| line.split_whitespace().next())
        .expect("keygen wrote a key line");
    let bare = key_file("team-a-bare.key", &format!("{key_hex}\n"));
    let lock = |file: &std::path::Path, owner: &[&str]| {
        Command::new(BIN)
            .args(["lock", "a/3", "--servers", &server.addr, "--shards", "1"])
            .arg("--client-key-file")
            .arg(file)
            .args(owner)
            .args(["--", "true"])
            .env_remove("UDPLOCK_CLIENT_KEY_FILE")
            .output()
            .expect("udplock runs")
    };
    let team_path = std::path::Path::new(team);
    let o = lock(team_path, &[]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = lock(&bare, &[]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--owner"),
        "{o:?}"
    );
    let o = lock(&bare, &["--owner", "a/job"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = run(&server, &["status", "a/1", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "reads need no key: {o:?}");
    let o = run(
        &server,
        &["release", "a/1", "--client", "a/w"],
        &[("UDPLOCK_CLIENT_KEY_FILE", team)],
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = run(
        &server,
        &[
            "acquire",
            "a/1",
            "--client",
            "a/w",
            "--client-key-file",
            "/nonexistent/k",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("--client-key-file") && said.contains("/nonexistent/k"),
        "{o:?}"
    );
}
