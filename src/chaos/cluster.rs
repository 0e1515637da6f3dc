//! The `udplock server` processes of a chaos run: listed at the relay's addresses
//! (`--advertise`, and static `--peers` or a joined cluster: node 1 `--bootstrap`, every node
//! `--join` with the whole list), bound at their private ones (`--listen`), one cluster key,
//! each with its own data directory; killed (SIGKILL), restarted, paused (SIGSTOP) and
//! resumed (SIGCONT).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::process::{kill_process, Pid, Signal};

/// The pids of every node of this process's clusters, from its start until it is reaped,
/// for [`kill_all`] (a signal handler cannot reach the [`Cluster`]s). Held across every
/// reaping, so a pid here is never a stranger's that reused it.
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn running() -> MutexGuard<'static, BTreeSet<i32>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SIGKILL to every node this process started and has not reaped: for a SIGINT/SIGTERM
/// handler that exits without dropping the [`Cluster`]s.
pub fn kill_all() {
    for &pid in running().iter() {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

/// The nodes of one run.
pub struct Cluster {
    bin: PathBuf,
    pub dir: PathBuf,
    durability: String,
    shards: u32,
    election_timeout: String,
    joined: bool,
    dead_after: Option<String>,
    peers: String,
    /// The listed addresses, comma-separated (a joined node's `--join`).
    seeds: String,
    private: Vec<SocketAddr>,
    listed: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    /// Starts of each node (the first included), for the stderr file names.
    starts: Vec<u32>,
}

/// How the nodes are started.
pub struct NodeSettings {
    /// The `udplock` binary.
    pub bin: PathBuf,
    /// Where data directories, the key and the nodes' stderr go.
    pub dir: PathBuf,
    /// `fsync`, `os` or `memory`.
    pub durability: String,
    pub shards: u32,
    /// `--election-timeout` of every node (e.g. `150ms`).
    pub election_timeout: String,
    /// A joined cluster (spec §8.1) instead of static `--peers`.
    pub joined: bool,
    /// `--dead-after` of a joined cluster's nodes (None: the default).
    pub dead_after: Option<String>,
}

impl Cluster {
    /// Writes a fresh cluster key and starts every node with `--new-cluster`.
    pub fn start(
        settings: NodeSettings,
        listed: &[SocketAddr],
        private: &[SocketAddr],
    ) -> Result<Cluster, String> {
        std::fs::create_dir_all(&settings.dir)
            .map_err(|e| format!("cannot create {}: {e}", settings.dir.display()))?;
        let key = crate::cluster::keys::random_key();
        crate::cluster::keys::create(&settings.dir.join("cluster.key"), &[Some(key)])
            .map_err(|e| format!("cannot write the cluster key: {e}"))?;
        let peers = listed
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let n = listed.len();
        let mut cluster = Cluster {
            bin: settings.bin,
            dir: settings.dir,
            durability: settings.durability,
            shards: settings.shards,
            election_timeout: settings.election_timeout,
            joined: settings.joined,
            dead_after: settings.dead_after,
            seeds: listed
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            peers,
            private: private.to_vec(),
            listed: listed.to_vec(),
            children: (0..n).map(|_| None).collect(),
            paused: vec![false; n],
            starts: vec![0; n],
        };
        for i in 0..n {
            cluster.spawn(i, true)?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{}", i + 1))
    }

    /// Where node `i`'s stderr of its `start`-th start goes.
    pub fn stderr_path(&self, i: usize, start: u32) -> PathBuf {
        self.dir.join(format!("node-{}.{start}.stderr", i + 1))
    }

    /// Starts node `i` (which must be down). `new_cluster` only for the first start: a
    /// restarted node without state then rejoins by the protocol's rule.
    pub fn spawn(&mut self, i: usize, new_cluster: bool) -> Result<(), String> {
        assert!(self.children[i].is_none(), "node {} is running", i + 1);
        self.starts[i] += 1;
        let stderr = std::fs::File::create(self.stderr_path(i, self.starts[i]))
            .map_err(|e| format!("cannot create a stderr file: {e}"))?;
        let mut command = Command::new(&self.bin);
        command
            .args(["server", "--node-id", &(i + 1).to_string()])
            .args(["--listen", &self.private[i].to_string()])
            .args(["--advertise", &self.listed[i].to_string()])
            .args(["--shards", &self.shards.to_string()])
            .args(["--election-timeout", &self.election_timeout])
            .arg("--cluster-key-file")
            .arg(self.dir.join("cluster.key"))
            .args(["--durability", &self.durability]);
        if self.durability != "memory" {
            command.arg("--data-dir").arg(self.data_dir(i));
        }
        if !self.joined {
            command.args(["--peers", &self.peers]);
            if new_cluster {
                command.arg("--new-cluster");
            }
        } else if new_cluster && i == 0 {
            command.arg("--bootstrap");
        } else {
            // The same list on every node, itself included (a restarted voter needs nobody).
            command.args(["--join", &self.seeds]);
        }
        if let Some(dead_after) = self.dead_after.as_ref().filter(|_| self.joined) {
            command.args(["--dead-after", dead_after]);
        }
        let child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        running().insert(Pid::from_child(&child).as_raw_nonzero().get());
        self.children[i] = Some(child);
        self.paused[i] = false;
        Ok(())
    }

    /// SIGKILL (of a paused node too) and reaping; nothing if it is down.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let mut running = running();
            let _ = child.kill();
            let _ = child.wait();
            running.remove(&Pid::from_child(&child).as_raw_nonzero().get());
        }
        self.paused[i] = false;
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    fn signal(&self, i: usize, signal: Signal) {
        if let Some(child) = &self.children[i] {
            // The child is ours and not yet reaped, so its pid is not reused.
            let _ = kill_process(Pid::from_child(child), signal);
        }
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, Signal::STOP);
        self.paused[i] = self.is_up(i);
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, Signal::CONT);
        self.paused[i] = false;
    }

    /// Nodes that exited on their own (a crash: the harness only ever kills them), with
    /// their exit status.
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(c) = child {
                let mut running = running();
                if let Ok(Some(status)) = c.try_wait() {
                    running.remove(&Pid::from_child(c).as_raw_nonzero().get());
                    out.push((i, status.to_string()));
                    *child = None;
                }
            }
        }
        out
    }

    /// Lines of every node's stderr (every start) that report a panic.
    pub fn panics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.len() {
            for start in 1..=self.starts[i] {
                let path = self.stderr_path(i, start);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for line in text.lines().filter(|l| l.contains("panicked")) {
                    out.push(format!(
                        "node {} panicked ({}): {line}",
                        i + 1,
                        path.display()
                    ));
                }
            }
        }
        out
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join("cluster.key")
    }

    /// The run directory (kept after a failed run, for its stderr files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}
