//! Three `udplock server --peers` processes on loopback, clients contending for one lock, the
//! leader of its shard killed with SIGKILL (and restarted from its data directory), then the
//! new leader frozen with SIGSTOP and thawed with SIGCONT. The recorded history must show no
//! two clients believing they hold the lock at once, fencing tokens increasing in grant order,
//! and the service going on after the faults.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udplock::{BootInstant, Client, ClientConfig};
use udplock_protocol::{Reply, Request, RequestBody, Status, STATUS_REQUEST_LEN};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");
pub(super) const SHARDS: u32 = 4;
pub(super) const RESOURCE: &str = "jobs/nightly";

/// One grant as its client saw it: believed held from `from` (the reply arrived) until
/// `until` (the client sent its release, or its lease's validity ended, whichever first).
#[derive(Clone, Debug)]
pub struct Held {
    pub client: usize,
    pub token: u64,
    pub from: BootInstant,
    pub until: BootInstant,
}

/// Mutual exclusion and fencing order over one resource's history.
pub fn check_history(history: &[Held]) {
    let mut history = history.to_vec();
    history.sort_by_key(|h| h.from);
    for pair in history.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.client == b.client || a.until <= b.from,
            "clients {} and {} both held the lock: {a:?} / {b:?}",
            a.client,
            b.client
        );
        assert!(b.token > a.token, "token order broken: {a:?} then {b:?}");
    }
}

pub(super) struct Servers {
    /// `--durability` of every node.
    durability: &'static str,
    /// `RUST_LOG` of every node (`None`: the test's own environment, usually unset, so the
    /// binary's default: warnings and errors).
    rust_log: Option<&'static str>,
    /// Arguments every node is started with, beyond those the harness always gives.
    more: &'static [&'static str],
    pub(super) peers: String,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) dir: std::path::PathBuf,
    pub(super) children: Vec<Option<Child>>,
}

impl Servers {
    pub(super) fn start(n: usize) -> Servers {
        Servers::start_with(n, "os")
    }

    pub(super) fn start_with(n: usize, durability: &'static str) -> Servers {
        let key = udplock::cluster::keys::random_key();
        Servers::start_with_keys(n, durability, &[Some(key)])
    }

    /// As `start_with`, every node's key file holding `keys` (`None`: the line `none`; a
    /// cluster without a key is `&[None]`).
    pub(super) fn start_with_keys(
        n: usize,
        durability: &'static str,
        keys: &[Option<[u8; udplock_protocol::CLUSTER_KEY_LEN]>],
    ) -> Servers {
        Servers::start_logging(n, durability, keys, None)
    }

    /// As `start_with_keys`, every node (also when restarted) logging what the `RUST_LOG`
    /// filter `rust_log` lets through.
    pub(super) fn start_logging(
        n: usize,
        durability: &'static str,
        keys: &[Option<[u8; udplock_protocol::CLUSTER_KEY_LEN]>],
        rust_log: Option<&'static str>,
    ) -> Servers {
        Servers::start_full(n, durability, keys, rust_log, &[])
    }

    /// As `start_logging`, every node (also when restarted) started with the arguments
    /// `more` too.
    pub(super) fn start_full(
        n: usize,
        durability: &'static str,
        keys: &[Option<[u8; udplock_protocol::CLUSTER_KEY_LEN]>],
        rust_log: Option<&'static str>,
        more: &'static [&'static str],
    ) -> Servers {
        let mut servers = Servers::unstarted(n, durability, keys, rust_log, more);
        for i in 0..n {
            servers.spawn_as(i, true);
        }
        servers
    }

    /// As `start_full`, no node started yet: the test starts each (`spawn_with`, with
    /// `new_cluster` for a cluster's first start), with arguments of its own.
    pub(super) fn unstarted(
        n: usize,
        durability: &'static str,
        keys: &[Option<[u8; udplock_protocol::CLUSTER_KEY_LEN]>],
        rust_log: Option<&'static str>,
        more: &'static [&'static str],
    ) -> Servers {
        // Free ports: bind all, read, release (the servers bind them a moment later). All
        // are held until all are read, so that no two nodes get the same one.
        let held: Vec<UdpSocket> = (0..n)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = held.iter().map(|s| s.local_addr().unwrap()).collect();
        drop(held);
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "udplock-processes-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // One cluster key for every node, as a real cluster has (spec §8.11).
        std::fs::create_dir_all(&dir).unwrap();
        udplock::cluster::keys::create(&dir.join("cluster.key"), keys).unwrap();
        Servers {
            durability,
            rust_log,
            more,
            peers,
            addrs,
            dir,
            children: (0..n).map(|_| None).collect(),
        }
    }

    pub(super) fn spawn(&mut self, i: usize) {
        self.spawn_as(i, false);
    }

    /// `new_cluster`: with `--new-cluster`, as a cluster's first start must be (and as a
    /// unit file may keep it for every later start).
    pub(super) fn spawn_as(&mut self, i: usize, new_cluster: bool) {
        self.spawn_with(i, new_cluster, &[]);
    }

    /// As `spawn_as`, with more arguments.
    pub(super) fn spawn_with(&mut self, i: usize, new_cluster: bool, more: &[&str]) {
        let mut command = Command::new(BIN);
        command.args(["server", "--node-id", &(i + 1).to_string()]);
        command.args(self.more);
        command.args(more);
        if new_cluster {
            command.arg("--new-cluster");
        }
        if let Some(filter) = self.rust_log {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .args(["--listen", &self.addrs[i].to_string()])
            .args(["--peers", &self.peers])
            .args(["--shards", &SHARDS.to_string()])
            .arg("--cluster-key-file")
            .arg(self.key_file())
            .args(["--durability", self.durability, "--data-dir"])
            .arg(self.dir.join(format!("node-{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.stderr_path(i)).unwrap())
            .spawn()
            .expect("udplock server starts");
        self.children[i] = Some(child);
    }

    /// The cluster's key file, which every node is started with.
    pub(super) fn key_file(&self) -> std::path::PathBuf {
        self.dir.join("cluster.key")
    }

    pub(super) fn stderr_path(&self, i: usize) -> std::path::PathBuf {
        std::fs::create_dir_all(&self.dir).unwrap();
        self.dir.join(format!("node-{}.stderr", i + 1))
    }

    pub(super) fn signal(&self, i: usize, signal: &str) {
        let pid = self.children[i].as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    pub(super) fn kill(&mut self, i: usize) {
        self.signal(i, "-KILL");
        let _ = self.children[i].take().unwrap().wait();
    }

    /// Which node answers a STATUS of `RESOURCE` as its leader (the others say NOT_LEADER).
    pub(super) fn leader(&self, within: Duration) -> usize {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let deadline = Instant::now() + within;
        let mut request_id = 1;
        loop {
            for (i, addr) in self.addrs.iter().enumerate() {
                request_id += 1;
                let request = Request {
                    session_id: 99,
                    request_id,
                    attempt: 0,
                    body: RequestBody::Status {
                        resource: RESOURCE.as_bytes(),
                    },
                };
                let mut buf = [0u8; STATUS_REQUEST_LEN];
                let len = request.encode(&mut buf).unwrap();
                socket.send_to(&buf[..len], addr).unwrap();
                let mut reply = [0u8; 1500];
                while let Ok(n) = socket.recv(&mut reply) {
                    let Ok(r) = Reply::decode(&reply[..n]) else {
                        continue;
                    };
                    if r.request_id == request_id {
                        if r.status != Status::NotLeader {
                            return i;
                        }
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader for {RESOURCE}");
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            if let Some(mut child) = self.children[i].take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // A failing test shows what its nodes said: the files go with the directory.
        if std::thread::panicking() {
            for i in 0..self.children.len() {
                let text = std::fs::read_to_string(self.stderr_path(i)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
                eprintln!(
                    "--- node {} ({}) stderr, last {} lines:\n{}",
                    i + 1,
                    self.addrs[i],
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines of each node's stderr a failing test prints.
const STDERR_TAIL_LINES: usize = 30;

#[test]
fn kill_and_pause_leaders_of_real_processes_without_a_double_grant() {
    let mut servers = Servers::start(3);
    servers.leader(Duration::from_secs(10));
    let history = Arc::new(Mutex::new(Vec::<Held>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (history, stop) = (history.clone(), stop.clone());
            let mut config = ClientConfig::new(servers.addrs.clone());
            config.shards = SHARDS;
            std::thread::spawn(move || {
                let client = Client::new(config).unwrap();
                let name = format!("client-{id}");
                while !stop.load(Ordering::Relaxed) {
                    let Ok(lease) = client.acquire(RESOURCE, &name, 3_000, Some(1_000)) else {
                        continue;
                    };
                    let from = BootInstant::now();
                    std::thread::sleep(Duration::from_millis(2));
                    let release_sent = BootInstant::now();
                    let _ = client.release(RESOURCE, &name);
                    history.lock().unwrap().push(Held {
                        client: id,
                        token: lease.fencing_token,
                        from,
                        until: release_sent.min(lease.valid_until),
                    });
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(700));
    let killed = servers.leader(Duration::from_secs(5));
    servers.kill(killed);
    std::thread::sleep(Duration::from_millis(1_000));
    servers.spawn(killed);
    let paused = servers.leader(Duration::from_secs(10));
    servers.signal(paused, "-STOP");
    std::thread::sleep(Duration::from_millis(800));
    servers.signal(paused, "-CONT");
    let healed = BootInstant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let history = history.lock().unwrap();
    check_history(&history);
    let after = history.iter().filter(|h| h.from > healed).count();
    eprintln!(
        "{} grants in {:?}, {after} after the last fault (killed node {}, paused node {})",
        history.len(),
        start.elapsed(),
        killed + 1,
        paused + 1
    );
    assert!(after > 0, "the service did not resume after the faults");
}

#[test]
fn a_terminated_server_hands_its_shards_over_before_it_exits() {
    let mut servers = Servers::start(3);
    let mut config = ClientConfig::new(servers.addrs.clone());
    config.shards = SHARDS;
    let client = Client::new(config).unwrap();
    // Leaders settle on their preferred nodes about a second after start.
    std::thread::sleep(Duration::from_millis(1_500));
    let lease = client
        .acquire(RESOURCE, "holder", 3_000, Some(30_000))
        .unwrap();
    let leader = servers.leader(Duration::from_secs(5));
    servers.signal(leader, "-TERM");
    let mut child = servers.children[leader].take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop the server");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    let said = std::fs::read_to_string(servers.stderr_path(leader)).unwrap();
    assert!(
        said.contains("(0 shards left without a handover)"),
        "{said}"
    );
    // The hold moved with the shard: its holder renews it with the same token.
    let renewed = client.renew(RESOURCE, "holder", Some(30_000)).unwrap();
    assert_eq!(renewed.fencing_token, lease.fencing_token);
}

#[test]
#[should_panic(expected = "both held the lock")]
fn the_history_check_catches_an_overlap() {
    let t = BootInstant::now();
    let ms = |n| t + Duration::from_millis(n);
    check_history(&[
        Held {
            client: 0,
            token: 1,
            from: ms(0),
            until: ms(10),
        },
        Held {
            client: 1,
            token: 2,
            from: ms(5),
            until: ms(20),
        },
    ]);
}

#[test]
#[should_panic(expected = "token order broken")]
fn the_history_check_catches_tokens_out_of_order() {
    let t = BootInstant::now();
    let ms = |n| t + Duration::from_millis(n);
    check_history(&[
        Held {
            client: 0,
            token: 5,
            from: ms(0),
            until: ms(10),
        },
        Held {
            client: 1,
            token: 4,
            from: ms(10),
            until: ms(20),
        },
    ]);
}

#[test]
fn a_memory_node_killed_and_restarted_rejoins_and_the_hold_survives_its_leader() {
    let mut servers = Servers::start_with(3, "memory");
    let mut config = ClientConfig::new(servers.addrs.clone());
    config.shards = SHARDS;
    let client = Client::new(config).unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let lease = client
        .acquire(RESOURCE, "holder", 3_000, Some(60_000))
        .unwrap();
    // A follower loses everything (kill -9, no disk) and restarts: it must rejoin.
    let leader = servers.leader(Duration::from_secs(5));
    let lost = (leader + 1) % 3;
    servers.kill(lost);
    for i in 0..20 {
        let r = format!("other/{i}");
        client.acquire(&r, "w", 3_000, Some(60_000)).unwrap();
    }
    servers.spawn(lost);
    std::thread::sleep(Duration::from_millis(1_000));
    // Now the leader dies: the rejoined node and the third must carry the hold.
    servers.kill(leader);
    let renewed = client.renew(RESOURCE, "holder", Some(60_000)).unwrap();
    assert_eq!(renewed.fencing_token, lease.fencing_token);
    assert_eq!(
        client.status("other/7").unwrap().holder.as_deref(),
        Some("w")
    );
}

/// Issue 7 item 1: a node whose data directory comes back empty (a replaced disk, a mistyped
/// `--data-dir`, another `HOME` under a service manager) must rejoin by the rule of spec §8.5,
/// not start as a brand-new member. Node B misses a grant that the other two commit (it is
/// killed: a stopped B would still find the entries queued in its socket); then those two
/// die, A comes back with an empty directory, and B with its own. A fresh A would vote for B,
/// whose log lacks the grant, and B would give the lock to someone else. Instead nobody may
/// have it until the third node returns, and then its holder still has it.
fn an_emptied_node_rejoins_and_the_grant_survives(restart_with_new_cluster: bool) {
    let mut servers = Servers::start(3);
    let (a, b, c) = (0, 1, 2);
    let addrs = servers.addrs.clone();
    let client = |timeout_ms| {
        let mut config = ClientConfig::new(addrs.clone());
        config.shards = SHARDS;
        config.request_timeout_ms = timeout_ms;
        Client::new(config).unwrap()
    };
    servers.leader(Duration::from_secs(10));
    servers.kill(b);
    // Committed on A and C, the only nodes up: B lacks it.
    let lease = client(10_000)
        .acquire(RESOURCE, "holder", 10_000, Some(600_000))
        .unwrap();
    servers.kill(a);
    servers.kill(c);
    let dir_a = servers.dir.join("node-1");
    std::fs::remove_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_a).unwrap();
    servers.spawn_as(a, restart_with_new_cluster);
    servers.spawn_as(b, restart_with_new_cluster);
    let intruder = client(3_000).acquire(RESOURCE, "intruder", 3_000, Some(1_000));
    assert!(
        intruder.is_err(),
        "the lock was granted to another client while its holder's lease runs: {intruder:?}"
    );
    let said = std::fs::read_to_string(servers.stderr_path(a)).unwrap();
    let expected = if restart_with_new_cluster {
        "start new"
    } else {
        "rejoining"
    };
    assert!(
        said.contains(expected),
        "node A did not say {expected:?}: {said}"
    );
    // The third node returns: A rejoins from B and C, and the hold is still its holder's.
    servers.spawn(c);
    let renewed = client(20_000)
        .renew(RESOURCE, "holder", Some(600_000))
        .unwrap();
    assert_eq!(renewed.fencing_token, lease.fencing_token);
    assert_eq!(
        client(20_000).status(RESOURCE).unwrap().holder.as_deref(),
        Some("holder")
    );
}

#[test]
fn a_node_back_with_an_empty_data_directory_rejoins_and_the_grant_survives() {
    an_emptied_node_rejoins_and_the_grant_survives(false);
}

/// The same with `--new-cluster` left in the nodes' command lines (a unit file): a node that
/// is new next to a node that holds state still rejoins.
#[test]
fn with_new_cluster_left_on_an_emptied_node_still_rejoins() {
    an_emptied_node_rejoins_and_the_grant_survives(true);
}

/// A data directory is locked by the server using it, and records which node of which
/// cluster it belongs to: a second server on it, or another node's server, refuses to start
/// with a clear error instead of sharing or reinitialising it.
#[test]
fn a_data_directory_in_use_or_of_another_node_is_refused() {
    let servers = Servers::start(3);
    servers.leader(Duration::from_secs(10));
    let run = |node: usize, dir: usize| {
        Command::new(BIN)
            .args(["server", "--node-id", &node.to_string()])
            .args(["--listen", &servers.addrs[node - 1].to_string()])
            .args(["--peers", &servers.peers])
            .args(["--shards", &SHARDS.to_string()])
            .arg("--cluster-key-file")
            .arg(servers.key_file())
            .args(["--durability", "os", "--data-dir"])
            .arg(servers.dir.join(format!("node-{dir}")))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let second = run(1, 1);
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{said}");
    assert!(said.contains("in use by another process"), "{said}");
    // Node 3's directory, copied while node 3 runs, offered to node 1.
    let copy = servers.dir.join("node-9");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(servers.dir.join("node-3/identity"), copy.join("identity")).unwrap();
    let other = run(1, 9);
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "{said}");
    assert!(said.contains("belongs to node 3"), "{said}");
}

/// Issue 7 item 10: a node restarted with another value of a setting every node must share
/// is kept out of the cluster, and no longer in silence: both it and the others log, at error
/// level, which setting differs (spec §8.10).
#[test]
fn a_node_restarted_with_another_limit_is_named_by_both_sides() {
    let mut servers = Servers::start(3);
    servers.leader(Duration::from_secs(10));
    servers.kill(2);
    servers.spawn_with(2, false, &["--resources-max", "1000"]);
    let said = |i: usize| std::fs::read_to_string(servers.stderr_path(i)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (one, three) = (said(0), said(2));
        let named = |log: &str, peer: &str| {
            log.lines().any(|l| {
                l.contains("ERROR") && l.contains(peer) && l.contains("resources_max 262144")
                    || l.contains("ERROR") && l.contains(peer) && l.contains("resources_max 1000")
            })
        };
        if named(&one, "node 3") && named(&three, "node 1") && named(&three, "node 2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the difference was not named on both sides:\nnode 1: {one}\nnode 3: {three}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 8 item 2: `udplock keygen` writes a new key file (mode 0600) and never replaces one;
/// a node started with it says which key ids it sends with and accepts (never the key); a
/// node started without one says loudly that peer traffic is not authenticated, naming the
/// flag.
#[test]
fn keygen_and_what_a_server_says_about_its_keys() {
    use std::os::unix::fs::PermissionsExt;
    let servers = Servers::start(3);
    let path = servers.dir.join("new.key");
    let made = Command::new(BIN).arg("keygen").arg(&path).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let written = std::fs::read(&path).unwrap();
    let again = Command::new(BIN).arg("keygen").arg(&path).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not replaced"));
    assert_eq!(std::fs::read(&path).unwrap(), written);

    // The cluster's nodes name their key by id.
    let keys = udplock::cluster::keys::read(&servers.key_file()).unwrap();
    let id = format!("{:08x}", keys.send().unwrap().id());
    let said = |i: usize| std::fs::read_to_string(servers.stderr_path(i)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !said(0).contains(&format!("sending with {id}; accepting {id}")) {
        assert!(Instant::now() < deadline, "node 1 said: {}", said(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let key_text = String::from_utf8_lossy(&std::fs::read(servers.key_file()).unwrap())
        .lines()
        .find(|l| l.len() == 64)
        .unwrap()
        .to_string();
    assert!(!said(0).contains(&key_text), "the key itself is in the log");

    // A node without a key file says so, loudly.
    let addr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stderr = servers.dir.join("keyless.stderr");
    let mut keyless = Command::new(BIN)
        .args(["server", "--node-id", "1", "--listen", &addr.to_string()])
        .args(["--peers", &format!("1@{addr}"), "--durability", "memory"])
        .env_remove("UDPLOCK_CLUSTER_KEY_FILE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let warned = loop {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        if text.contains("WARN") && text.contains("NOT authenticated") {
            break text;
        }
        assert!(Instant::now() < deadline, "the keyless node said: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = keyless.kill();
    let _ = keyless.wait();
    assert!(warned.contains("--cluster-key-file"), "{warned}");
    assert!(warned.contains("two clients hold one lock"), "{warned}");
}
