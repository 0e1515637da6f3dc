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
const SHARDS: u32 = 4;
const RESOURCE: &str = "jobs/nightly";

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

struct Servers {
    /// `--durability` of every node.
    durability: &'static str,
    peers: String,
    addrs: Vec<SocketAddr>,
    dir: std::path::PathBuf,
    children: Vec<Option<Child>>,
}

impl Servers {
    fn start(n: usize) -> Servers {
        Servers::start_with(n, "os")
    }

    fn start_with(n: usize, durability: &'static str) -> Servers {
        // Free ports: bind, read, release (the servers bind them a moment later).
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| {
                UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
            })
            .collect();
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
        let mut servers = Servers {
            durability,
            peers,
            addrs,
            dir,
            children: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            servers.spawn_as(i, true);
        }
        servers
    }

    fn spawn(&mut self, i: usize) {
        self.spawn_as(i, false);
    }

    /// `first`: the cluster's first start (a memory node is then told it is new).
    fn spawn_as(&mut self, i: usize, first: bool) {
        let mut command = Command::new(BIN);
        command.args(["server", "--node-id", &(i + 1).to_string()]);
        if self.durability == "memory" && first {
            command.arg("--new-cluster");
        }
        let child = command
            .args(["--listen", &self.addrs[i].to_string()])
            .args(["--peers", &self.peers])
            .args(["--shards", &SHARDS.to_string()])
            .args(["--durability", self.durability, "--data-dir"])
            .arg(self.dir.join(format!("node-{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.stderr_path(i)).unwrap())
            .spawn()
            .expect("udplock server starts");
        self.children[i] = Some(child);
    }

    fn stderr_path(&self, i: usize) -> std::path::PathBuf {
        std::fs::create_dir_all(&self.dir).unwrap();
        self.dir.join(format!("node-{}.stderr", i + 1))
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.children[i].as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    fn kill(&mut self, i: usize) {
        self.signal(i, "-KILL");
        let _ = self.children[i].take().unwrap().wait();
    }

    /// Which node answers a STATUS of `RESOURCE` as its leader (the others say NOT_LEADER).
    fn leader(&self, within: Duration) -> usize {
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
