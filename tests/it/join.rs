//! Starting a cluster by joining, with real processes (issue 10, spec §8.1): the `udplock`
//! binary on loopback (127.0.0.x), temp data directories, a key from `udplock keygen`.
//! `--bootstrap` one node, `--join` two more; `udplock status` comes to show three members
//! alive, and locks work through the first node (shards move as the others join). And what
//! a join refuses: no key, an unspecified address without `--advertise`, a second bootstrap of a
//! directory, a seed of another cluster, settings that must agree and differ. No speed is
//! assumed: every wait polls until a generous deadline.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use udplock::{Client, ClientConfig};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");
pub(super) const DEADLINE: Duration = Duration::from_secs(120);
const SHARDS: &str = "4";

/// A temp directory with a key file, and the server processes started in it (with their
/// node ids). Also used by `it::replace`.
pub(super) struct Joined {
    pub(super) dir: PathBuf,
    children: Vec<(u64, Child)>,
}

impl Joined {
    pub(super) fn new(name: &str) -> Joined {
        let dir = std::env::temp_dir().join(format!("udplock-join-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let made = Command::new(BIN)
            .arg("keygen")
            .arg(dir.join("cluster.key"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        Joined {
            dir,
            children: Vec::new(),
        }
    }

    /// `udplock server` for node `id` at `addr`, its data directory `node-ID`, with `more`.
    fn command(&self, id: u64, addr: SocketAddr, more: &[&str]) -> Command {
        self.command_with_shards(id, addr, SHARDS, more)
    }

    pub(super) fn command_with_shards(
        &self,
        id: u64,
        addr: SocketAddr,
        shards: &str,
        more: &[&str],
    ) -> Command {
        let mut command = Command::new(BIN);
        command
            .env_remove("RUST_LOG")
            .args(["server", "--node-id", &id.to_string()])
            .args(["--listen", &addr.to_string()])
            .args(["--shards", shards, "--swim-period-ms", "100"])
            .arg("--key-file")
            .arg(self.dir.join("cluster.key"))
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .args(more);
        command
    }

    fn spawn(&mut self, id: u64, addr: SocketAddr, more: &[&str]) {
        self.spawn_with_shards(id, addr, SHARDS, more);
    }

    pub(super) fn spawn_with_shards(
        &mut self,
        id: u64,
        addr: SocketAddr,
        shards: &str,
        more: &[&str],
    ) {
        let child = self
            .command_with_shards(id, addr, shards, more)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(format!("node-{id}.stderr"))).unwrap())
            .spawn()
            .expect("udplock server starts");
        self.children.push((id, child));
    }

    /// SIGKILL to node `id`'s process (no leave, no hand-over), and waits for it to be gone.
    pub(super) fn kill(&mut self, id: u64) {
        let at = self
            .children
            .iter()
            .position(|(i, _)| *i == id)
            .unwrap_or_else(|| panic!("node {id} was not started"));
        let (_, mut child) = self.children.remove(at);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// SIGTERM to node `id`'s process (a graceful stop), and waits for it to exit (by
    /// [`DEADLINE`]); its exit status.
    pub(super) fn terminate(&mut self, id: u64) -> std::process::ExitStatus {
        let at = self
            .children
            .iter()
            .position(|(i, _)| *i == id)
            .unwrap_or_else(|| panic!("node {id} was not started"));
        let (_, mut child) = self.children.remove(at);
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {id} did not stop within {DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What node `id`'s process (the latest started) wrote on stderr so far.
    pub(super) fn stderr(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{id}.stderr"))).unwrap_or_default()
    }

    /// Runs a server that must refuse to start; what it said.
    fn refused(&self, id: u64, addr: SocketAddr, more: &[&str]) -> String {
        let what = format!("node {id} with {more:?}");
        refused_by(self.command(id, addr, more), &what)
    }
}

/// Runs `command`, a server that must refuse to start (`what` it is, for the failure); what
/// it said on stderr.
fn refused_by(mut command: Command, what: &str) -> String {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "{what}: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl Drop for Joined {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // Every node started here (also those killed or stopped by the test).
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
                .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
                .unwrap_or_default();
            paths.retain(|p| p.extension().is_some_and(|e| e == "stderr"));
            paths.sort();
            for path in paths {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
                    eprintln!(
                        "--- {}, last {} lines:\n{}",
                        path.display(),
                        tail.len(),
                        tail.join("\n")
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines of each node's stderr a failing test prints.
const STDERR_TAIL_LINES: usize = 80;

/// A free port on loopback address 127.0.0.`host`.
pub(super) fn free(host: u8) -> SocketAddr {
    let s = UdpSocket::bind(SocketAddr::from(([127, 0, 0, host], 0))).unwrap();
    s.local_addr().unwrap()
}

fn status_json(server: SocketAddr) -> Output {
    Command::new(BIN)
        .args(["status", "--json", "--shards", SHARDS, "--servers"])
        .arg(server.to_string())
        .output()
        .unwrap()
}

/// Whether a `udplock status --json` line lists exactly `ids`, each alive.
fn members_alive(json: &str, ids: &[u64]) -> bool {
    let Some(start) = json.find("\"members\":[") else {
        return false;
    };
    let Some(end) = json.find("],\"settings_differences\"") else {
        return false;
    };
    let members = &json[start..end];
    let alive = members.matches("\"state\":\"alive\"").count();
    alive == ids.len()
        && members.matches("\"id\":").count() == ids.len()
        && ids
            .iter()
            .all(|id| members.contains(&format!("\"id\":{id},")))
}

#[test]
fn a_bootstrapped_node_and_two_joined_show_three_members_alive_and_grant() {
    let mut c = Joined::new("three");
    // Held together, so that the two on 127.0.0.1 differ.
    let held: Vec<UdpSocket> = [1, 2, 1]
        .map(|h| UdpSocket::bind(SocketAddr::from(([127, 0, 0, h], 0))).unwrap())
        .into();
    let [a1, a2, a3] = [0, 1, 2].map(|i| held[i].local_addr().unwrap());
    drop(held);
    c.spawn(1, a1, &["--bootstrap"]);
    c.spawn(2, a2, &["--join", &a1.to_string()]);
    // Node 3 listens on every interface and announces its loopback address; it joins
    // through node 2 (and node 1 as a second seed).
    let any = SocketAddr::from(([0, 0, 0, 0], a3.port()));
    c.spawn(
        3,
        any,
        &[
            "--advertise",
            &a3.to_string(),
            "--join",
            &format!("{a2},{a1}"),
        ],
    );
    let deadline = Instant::now() + DEADLINE;
    let json = loop {
        let o = status_json(a1);
        let json = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && members_alive(&json, &[1, 2, 3]) {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "never three members alive: {o:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for addr in [a1, a2, a3] {
        assert!(json.contains(&addr.to_string()), "{addr} in {json}");
    }
    // Every member's table holds all three too (each node answers MEMBERS).
    let client = Client::new(ClientConfig::new(vec![a1])).unwrap();
    for addr in [a2, a3] {
        wait_alive_at(&client, addr, &[1, 2, 3]);
        let table = client.members(addr).expect("it answered just now");
        assert_eq!(table.members.len(), 3, "{addr}: {table:?}");
    }
    // A joined node answers status too (no replica: no leader known), and the members.
    let o = status_json(a2);
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && json.contains("\"members\":["),
        "{o:?}"
    );
    // Locks work through the first node: it holds every shard.
    let mut config = ClientConfig::new(vec![a1]);
    config.shards = 4;
    let client = Client::new(config).unwrap();
    let lease = client
        .acquire("join-printer", "holder", 10_000, Some(10_000))
        .expect("granted by the first node");
    assert!(lease.fencing_token > 0);
    client.release("join-printer", "holder").expect("released");
    // The operator's line: the first node's default log (no RUST_LOG) names each member that
    // joined, at its address (a SWIM Joined event; the log line comes right after the event
    // that put the member in the table status read, so poll for it).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = std::fs::read_to_string(c.dir.join("node-1.stderr")).unwrap();
        let named = [(2, a2), (3, a3)]
            .iter()
            .all(|(id, addr)| log.contains(&format!("node 1: node {id} at {addr} is alive")));
        if named {
            break;
        }
        assert!(Instant::now() < deadline, "node 1's log: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Placement (spec §8.13): with three members and three replicas wanted, every shard
    // goes onto all three, so node 1 (leading them all at first) adds the others, and says
    // so in its default log.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = std::fs::read_to_string(c.dir.join("node-1.stderr")).unwrap();
        if log.contains("proposing AddLearner(2)") && log.contains("proposing AddLearner(3)") {
            break;
        }
        assert!(Instant::now() < deadline, "node 1's log: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn what_a_joined_cluster_refuses() {
    let mut c = Joined::new("refusals");
    let a1 = free(1);
    let out = {
        let mut command = Command::new(BIN);
        command.args(["server", "--node-id", "2", "--listen", &free(2).to_string()]);
        command.args(["--join", &a1.to_string(), "--durability", "memory"]);
        command.output().unwrap()
    };
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("needs a cluster key"),
        "{said}"
    );
    let said = c.refused(
        2,
        "0.0.0.0:0".parse().unwrap(),
        &["--join", &a1.to_string()],
    );
    assert!(said.contains("pass --advertise"), "{said}");
    // The static form too: the list names this node's address, --advertise must say it.
    let any = format!("0.0.0.0:{}", a1.port());
    let o = Command::new(BIN)
        .args([
            "server",
            "--node-id",
            "1",
            "--listen",
            &any,
            "--durability",
            "memory",
        ])
        .args(["--peers", &format!("1@{a1},2@{}", free(2))])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && said.contains("pass --advertise"),
        "{said}"
    );

    c.spawn(1, a1, &["--bootstrap"]);
    let deadline = Instant::now() + DEADLINE;
    while !status_json(a1).status.success() {
        assert!(Instant::now() < deadline, "the first node never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Settings that must agree (the shard count here) refuse the join, naming them.
    let a2 = free(2);
    let o = c
        .command_with_shards(2, a2, "8", &["--join", &a1.to_string()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && said.contains("shards 8 here, 4 at the seed"),
        "{said}"
    );

    // A second bootstrap of a directory that records a cluster is refused. Node 9 makes
    // another cluster; node 2 joins the first one, then is refused by a seed of the other.
    let a9 = free(9);
    c.spawn(9, a9, &["--bootstrap"]);
    c.spawn(2, a2, &["--join", &a1.to_string()]);
    let identity = c.dir.join("node-2").join("identity");
    let deadline = Instant::now() + DEADLINE;
    while !std::fs::read_to_string(&identity).is_ok_and(|t| t.contains("joined 0x")) {
        assert!(
            Instant::now() < deadline,
            "node 2 never recorded its cluster"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.kill(2);
    let said = c.refused(2, a2, &["--join", &a9.to_string()]);
    assert!(said.contains("records the cluster"), "{said}");
    let said = c.refused(2, a2, &["--bootstrap"]);
    assert!(said.contains("already records the cluster"), "{said}");
    // A joined node whose directory records no member (killed before it wrote its members
    // file, removed here so that the test does not race it) needs --join to find its
    // cluster again; with it, it rejoins.
    let _ = std::fs::remove_file(c.dir.join("node-2").join("members"));
    let said = c.refused(2, a2, &[]);
    assert!(said.contains("restart it with --join"), "{said}");
    c.spawn(2, a2, &["--join", &a1.to_string()]);
    // The first node restarts from its directory alone, without --bootstrap, holding every
    // shard again: the two members come to hold each other alive, and it grants.
    c.kill(1);
    c.spawn(1, a1, &[]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let o = status_json(a1);
        let json = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && members_alive(&json, &[1, 2]) {
            break;
        }
        assert!(Instant::now() < deadline, "never both alive again: {o:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut config = ClientConfig::new(vec![a1]);
    config.shards = 4;
    let client = Client::new(config).unwrap();
    client
        .acquire("join-restart", "holder", 10_000, Some(10_000))
        .expect("granted by the restarted first node");
}

/// A client given only a joined node's address (a member that holds no replica: it answers
/// every lock request NOT_LEADER without a hint) is granted on its FIRST call: the member
/// table its discovery asks for lands while the call is under way, and the request moves
/// on along the members to the first node's leader (spec §7.1.8, §7.1.7 rule 5.3).
#[test]
fn a_client_given_only_a_joined_node_is_granted_on_its_first_call() {
    let mut c = Joined::new("first-call");
    let held: Vec<UdpSocket> = [1, 2]
        .map(|h| UdpSocket::bind(SocketAddr::from(([127, 0, 0, h], 0))).unwrap())
        .into();
    let [a1, a2] = [0, 1].map(|i| held[i].local_addr().unwrap());
    drop(held);
    c.spawn(1, a1, &["--bootstrap"]);
    c.spawn(2, a2, &["--join", &a1.to_string()]);
    // The joined node's table lists both alive (what the lock client will read).
    let admin = Client::new(ClientConfig::new(vec![a1])).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let table = admin.members(a2);
        let both = table.as_ref().is_ok_and(|t| {
            t.members.len() == 2
                && t.members
                    .iter()
                    .all(|m| m.state == udplock::client::MemberState::Alive)
        });
        if both {
            break;
        }
        assert!(Instant::now() < deadline, "{a2}: {table:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the first node grants (its shards have leaders).
    let mut config = ClientConfig::new(vec![a1]);
    config.shards = 4;
    let direct = Client::new(config.clone()).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = direct.acquire("first-call-ready", "probe", 1_000, Some(1_000)) {
        assert!(
            Instant::now() < deadline,
            "the first node never granted: {e}"
        );
    }

    config.servers = vec![a2];
    let client = Client::new(config).unwrap();
    let lease = client
        .acquire("first-call", "holder", 10_000, Some(10_000))
        .expect("the first call, through the joined node, is granted");
    assert!(lease.fencing_token > 0);
    // The first node led every shard at first; placement (spec §8.13) moves each shard's
    // leadership to its preferred node once that one holds a caught-up replica, which for
    // this shard is node 2 (and may or may not have happened by now).
    let leader = client.leader_addr("first-call");
    assert!(leader == a1 || leader == a2, "led by {leader}");
    assert_eq!(client.release("first-call", "holder"), Ok(0));
    // The one-shot command too: its only call is its first.
    let o = Command::new(BIN)
        .args(["acquire", "first-call-cli", "--client", "cli"])
        .args(["--shards", SHARDS, "--servers", &a2.to_string()])
        .args(["--timeout-ms", "10000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

/// `--replicas` and `--dead-after-ms` (spec §8.13): bounded, from the environment too, and
/// a dead-after outside [one SWIM period, SWIM's dead-member memory] is refused with why.
#[test]
fn replicas_and_dead_after_are_bounded_options_of_a_joined_server() {
    let c = Joined::new("placement-options");
    for (args, env, said) in [
        (&["--replicas", "0"][..], None, "REPLICAS_MAX"),
        (&["--replicas", "8"][..], None, "REPLICAS_MAX"),
        (&[][..], Some(("UDPLOCK_REPLICAS", "9")), "REPLICAS_MAX"),
        (
            &["--dead-after-ms", "50"][..],
            None,
            "at least one SWIM protocol period",
        ),
        (
            &["--dead-after", "90001"][..],
            None,
            "at most SWIM's dead_keep (90000 ms",
        ),
        (
            &[][..],
            Some(("UDPLOCK_DEAD_AFTER_MS", "99")),
            "at least one SWIM",
        ),
    ] {
        let mut command = c.command(1, free(1), &["--bootstrap"]);
        command.args(args);
        if let Some((var, value)) = env {
            command.env(var, value);
        }
        let stderr = refused_by(command, &format!("{args:?} {env:?}"));
        assert!(stderr.contains(said), "{args:?} {env:?}: {stderr}");
    }
    let o = Command::new(BIN)
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for option in [
        "--replicas <N>",
        "--dead-after <DURATION>",
        "Old spelling: --dead-after-ms",
        "Ignored with --peers",
    ] {
        assert!(help.contains(option), "{option}: {help}");
    }
}

/// Polls `client.members(addr)` until node `addr`'s table holds each of `ids` alive.
fn wait_alive_at(client: &Client, addr: SocketAddr, ids: &[u64]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let table = client.members(addr);
        let alive = table.as_ref().is_ok_and(|t| {
            ids.iter().all(|&id| {
                t.members
                    .iter()
                    .any(|m| m.id == id && m.state == udplock::client::MemberState::Alive)
            })
        });
        if alive {
            return;
        }
        assert!(Instant::now() < deadline, "{addr}: {table:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A member restarted when every seed of its `--join` list is gone finds its cluster through
/// the members its data directory recorded (the `members` file, as Serf's snapshot): node 2
/// joined through node 1 alone; node 1 dies for good, node 2 restarts with the same
/// `--join` and finds node 3. Before, it asked its dead seed for two minutes and gave up;
/// likewise the first node, restarted with no seeds at all, knew nobody until someone
/// asked it something.
#[test]
fn a_member_whose_seeds_are_gone_restarts_through_the_members_it_recorded() {
    let mut c = Joined::new("recorded");
    let (a1, a2, a3) = (free(1), free(2), free(3));
    c.spawn(1, a1, &["--bootstrap"]);
    let seed = a1.to_string();
    c.spawn(2, a2, &["--join", &seed]);
    c.spawn(3, a3, &["--join", &seed]);
    let client = Client::new(ClientConfig::new(vec![a1])).unwrap();
    wait_alive_at(&client, a2, &[1, 3]);
    // Node 2's directory records node 3 (within a second of hearing of it).
    let file = c.dir.join("node-2").join("members");
    let deadline = Instant::now() + DEADLINE;
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains(&format!("node 3 {a3}\n"))) {
        assert!(
            Instant::now() < deadline,
            "{}: never names node 3",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.kill(1);
    c.kill(2);
    c.spawn(2, a2, &["--join", &seed]);
    // It runs, and its own table holds node 3 alive: it joined through node 3.
    wait_alive_at(&client, a2, &[3]);
    wait_alive_at(&client, a3, &[2]);
}
