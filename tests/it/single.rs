//! The single node (`udplock server` without `--peers`: a cluster of one voter and one
//! shard) as a user runs it, killed with SIGKILL and restarted at its address: in memory, its
//! lease horizon file keeps the restarted node from granting a lock a client may still hold
//! (spec §7.2.4); with `--durability fsync`, its Raft log restores the locks themselves; and
//! a node whose files cannot be trusted refuses to start rather than forget them.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use udplock::{Client, ClientConfig, LockError};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");

/// A `udplock server` process at a fixed address, with the arguments `args`, killed (SIGKILL)
/// on drop.
struct Single {
    child: Child,
}

impl Single {
    fn start(addr: SocketAddr, args: &[&str], stderr: &Path) -> Single {
        let child = Command::new(BIN)
            .args(["server", "--listen", &addr.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .expect("udplock server starts");
        Single { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address (bound, read, released: the server binds it a moment later).
fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("udplock-single-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A client that waits for a server to come up (its first requests may find nobody).
fn client(addr: SocketAddr) -> Client {
    let mut config = ClientConfig::new(vec![addr]);
    config.request_timeout_ms = 5_000;
    // Also how long a request that does not wait is retransmitted without an answer.
    config.grace_ms = 5_000;
    Client::new(config).unwrap()
}

/// Spec §7.2.4 with a real kill: the node's reply granting the lease left only after its
/// horizon file covered it, so the node restarted at the same address with the same file
/// refuses every grant (OVERLOADED, with the time left) until the old lease has run out,
/// and its tokens stay above the old ones.
#[test]
fn a_killed_single_node_restarted_at_its_address_grants_nothing_a_client_may_still_hold() {
    let dir = scratch("horizon");
    let addr = free_addr();
    let state = dir.join("node.horizon");
    let args = ["--state-file", state.to_str().unwrap()];
    let first = Single::start(addr, &args, &dir.join("first.stderr"));
    let old = client(addr);
    let before_grant = Instant::now();
    let lease = old
        .acquire("printer", "old-holder", 0, Some(4_000))
        .unwrap();
    first.kill();

    let second = Single::start(addr, &args, &dir.join("second.stderr"));
    let new = client(addr);
    // The node may take a moment to come up: a read (which grants nothing) waits for it.
    // The restarted node remembers nothing of the old lock.
    assert_eq!(new.status("printer").unwrap().holder, None);
    // A client that does not wait out OVERLOADED (its deadline is short) is refused.
    let mut config = ClientConfig::new(vec![addr]);
    config.grace_ms = 100;
    match Client::new(config)
        .unwrap()
        .try_acquire("printer", "new-holder", None)
    {
        Err(LockError::Overloaded { retry_after_ms }) => {
            assert!(retry_after_ms <= 4_000 + 1_000, "{retry_after_ms}")
        }
        other => panic!("granted while the old lease may run: {other:?}"),
    }
    let granted = new.acquire("printer", "new-holder", 10_000, None).unwrap();
    assert!(
        before_grant.elapsed() >= Duration::from_millis(4_000),
        "granted before the old lease ran out"
    );
    assert!(granted.fencing_token > lease.fencing_token);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `--durability fsync` a single node keeps its one shard's Raft log: killed and
/// restarted, it still holds the lock for its holder (same token, renewable), refuses it to
/// anyone else, and needs no horizon file.
#[test]
fn a_single_node_with_fsync_keeps_its_locks_across_a_kill() {
    let dir = scratch("fsync");
    let addr = free_addr();
    let data = dir.join("data");
    let args = [
        "--durability",
        "fsync",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let first = Single::start(addr, &args, &dir.join("first.stderr"));
    let holder = client(addr);
    let lease = holder
        .acquire("ledger", "holder", 0, Some(600_000))
        .unwrap();
    first.kill();

    let second = Single::start(addr, &args, &dir.join("second.stderr"));
    let other = client(addr);
    let status = other.status("ledger").unwrap();
    assert_eq!(status.holder.as_deref(), Some("holder"), "{status:?}");
    assert_eq!(status.fencing_token, lease.fencing_token);
    assert!(matches!(
        other.try_acquire("ledger", "other", None),
        Err(LockError::LockAcquisitionTimeout)
    ));
    let renewed = holder.renew("ledger", "holder", Some(600_000)).unwrap();
    assert_eq!(renewed.fencing_token, lease.fencing_token);
    assert!(!dir.join("data").join("node.horizon").exists());
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A lone voter cannot rejoin (spec §8.5: nobody can vouch for its state): a single node
/// whose shard files are gone from a directory that held them refuses to start, and says
/// why, rather than start empty and forget the locks clients hold.
#[test]
fn a_single_node_whose_files_are_gone_refuses_to_start() {
    let dir = scratch("lost");
    let addr = free_addr();
    let data = dir.join("data");
    let args = [
        "--durability",
        "fsync",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let first = Single::start(addr, &args, &dir.join("first.stderr"));
    client(addr)
        .acquire("ledger", "holder", 0, Some(600_000))
        .unwrap();
    first.kill();
    // Its state: the write-ahead log and the shards' files.
    for entry in std::fs::read_dir(&data).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("shard-") || name.starts_with("wal-") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let mut second = Single::start(addr, &args, &dir.join("second.stderr"));
    let status = second.child.wait().unwrap();
    assert!(!status.success(), "started without its state");
    let stderr = std::fs::read_to_string(dir.join("second.stderr")).unwrap();
    assert!(stderr.contains("cannot be trusted"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
