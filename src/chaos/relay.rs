//! The UDP relay that stands between the nodes (and between the clients and the nodes), so
//! that partitions, loss, duplication, delay and reordering need no `sch_netem` and no
//! `iptables`: one thread, one `poll(2)` over its sockets.
//!
//! Node `i` binds a private address `P_i` (127.0.1.x) and is *listed* (`--peers`,
//! `--advertise`) at `L_i` (127.0.0.x, same port), where the relay listens. Every datagram a
//! node sends to `L_j` reaches the relay's `L_j` socket from `P_i`; the relay forwards it to
//! `P_j` *from its `L_i` socket*, so node `j` sees it come from `i`'s listed address, as spec
//! §8.3 requires of a peer. A datagram from any other source is a client's: the relay
//! forwards it from a socket of that client's own (a NAT mapping, 127.0.2.1), and a node's
//! reply to that socket goes back to the client from `L_j`, the address it asked.
//!
//! The rules (blocked node pairs, a [`Degrade`]) are set by the harness at any time; the
//! relay's random draws come from its own seeded generator.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::schedule::Degrade;

/// The largest datagram the relay carries (above any udplock datagram: clients' are at most
/// 1,200 bytes, peers' a few KiB for a Raft batch or snapshot chunk).
const DATAGRAM_LEN_MAX: usize = 65_535;
/// Datagrams the relay holds back for delay at most: beyond it a datagram is dropped (a
/// bounded queue, like a real router's).
const DELAYED_MAX: usize = 100_000;
/// Client addresses the relay maps at once at most (a socket each). The workload uses a few,
/// but every admin call (a joining node's NODE_SETTINGS) comes from a fresh socket: past
/// this, the mapping used least recently is reused.
const CLIENTS_MAX: usize = 256;
/// Ports tried per node for one free on both its listed and its private address.
const PORT_ATTEMPTS_MAX: u32 = 100;
/// How often the thread looks at its stop flag when nothing arrives.
const IDLE_MS: u64 = 20;

/// What the harness sets and the relay obeys.
#[derive(Default)]
struct Rules {
    /// (from, to): no datagram from node `from` reaches node `to`.
    blocked: HashSet<(usize, usize)>,
    degrade: Degrade,
}

/// Counts of what the relay did, for the summary.
#[derive(Default)]
pub struct RelayStats {
    pub forwarded: AtomicU64,
    pub dropped_partition: AtomicU64,
    pub dropped_loss: AtomicU64,
    pub duplicated: AtomicU64,
    pub delayed: AtomicU64,
    /// Client mappings made, and how many of them reused the slot of an idle one.
    pub nat_made: AtomicU64,
    pub nat_reused: AtomicU64,
}

/// The relay thread and its controls.
pub struct Relay {
    rules: Arc<Mutex<Rules>>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<RelayStats>,
    thread: Option<JoinHandle<()>>,
    /// `L_i`: where node `i` is listed.
    pub listed: Vec<SocketAddr>,
    /// `P_i`: where node `i` binds.
    pub private: Vec<SocketAddr>,
}

/// Which relay socket a datagram leaves from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Listed(usize),
    Nat(usize),
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delayed {
    at: std::cmp::Reverse<(Instant, u64)>,
    via: Via,
    to: SocketAddr,
    bytes: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Relay {
    /// Binds `L_i` for `nodes` nodes at 127.0.0.`(first_host + i)` on free ports, picks
    /// `P_i` at 127.0.1.`(first_host + i)` on the same ports, and starts the thread.
    pub fn start(nodes: usize, first_host: u8, seed: u64) -> io::Result<Relay> {
        let mut sockets = Vec::new();
        let mut listed = Vec::new();
        let mut private = Vec::new();
        for i in 0..nodes {
            let host = first_host + u8::try_from(i).expect("at most 255 nodes");
            // A port free on both addresses: the node binds the private one later.
            let mut attempts = 0;
            let (socket, port) = loop {
                let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, host), 0))?;
                let port = socket.local_addr()?.port();
                // An error here (not "in use") says 127.0.1.x is no local address at all
                // (Linux routes all of 127/8 to loopback; other systems may not).
                match UdpSocket::bind((Ipv4Addr::new(127, 0, 1, host), port)) {
                    Ok(_) => break (socket, port),
                    Err(e) if attempts == PORT_ATTEMPTS_MAX => return Err(e),
                    Err(_) => attempts += 1,
                }
            };
            socket.set_nonblocking(true)?;
            listed.push(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), port)));
            private.push(SocketAddr::from((Ipv4Addr::new(127, 0, 1, host), port)));
            sockets.push(socket);
        }
        let rules = Arc::new(Mutex::new(Rules::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let mut state = State {
            listed: sockets,
            private: private.clone(),
            nats: Vec::new(),
            nat_used: Vec::new(),
            nat_of: HashMap::new(),
            delayed: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            rules: rules.clone(),
            stats: stats.clone(),
        };
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chaos-relay".into())
            .spawn(move || state.run(&stop_flag))?;
        Ok(Relay {
            rules,
            stop,
            stats,
            thread: Some(thread),
            listed,
            private,
        })
    }

    /// From now on no datagram from node `from` reaches node `to`.
    pub fn block(&self, from: usize, to: usize) {
        lock(&self.rules).blocked.insert((from, to));
    }

    pub fn set_degrade(&self, degrade: Degrade) {
        lock(&self.rules).degrade = degrade;
    }

    /// Every partition and degradation lifted.
    pub fn heal(&self) {
        let mut rules = lock(&self.rules);
        rules.blocked.clear();
        rules.degrade = Degrade::default();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    listed: Vec<UdpSocket>,
    private: Vec<SocketAddr>,
    /// One socket per client address, the client it stands for, and when it last carried
    /// a datagram.
    nats: Vec<(UdpSocket, SocketAddr)>,
    nat_used: Vec<Instant>,
    nat_of: HashMap<SocketAddr, usize>,
    delayed: BinaryHeap<Delayed>,
    seq: u64,
    rng: ChaCha8Rng,
    rules: Arc<Mutex<Rules>>,
    stats: Arc<RelayStats>,
}

impl State {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; DATAGRAM_LEN_MAX];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = self
                .delayed
                .peek()
                .map(|d| d.at.0 .0.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(IDLE_MS))
                .min(Duration::from_millis(IDLE_MS));
            let ready: Vec<bool> = {
                let mut fds: Vec<PollFd<'_>> = self
                    .listed
                    .iter()
                    .chain(self.nats.iter().map(|(s, _)| s))
                    .map(|s| PollFd::new(s, PollFlags::IN))
                    .collect();
                let timeout = Timespec {
                    tv_sec: 0,
                    tv_nsec: i64::from(wait.subsec_nanos()),
                };
                match poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => panic!("chaos relay: poll failed: {e}"),
                }
                fds.iter().map(|f| !f.revents().is_empty()).collect()
            };
            for (k, ready) in ready.into_iter().enumerate() {
                if !ready {
                    continue;
                }
                let via = if k < self.listed.len() {
                    Via::Listed(k)
                } else {
                    Via::Nat(k - self.listed.len())
                };
                self.drain(via, &mut buf);
            }
            let now = Instant::now();
            while self.delayed.peek().is_some_and(|d| d.at.0 .0 <= now) {
                let d = self.delayed.pop().expect("peeked");
                self.send(d.via, d.to, &d.bytes);
            }
        }
    }

    fn socket(&self, via: Via) -> &UdpSocket {
        match via {
            Via::Listed(i) => &self.listed[i],
            Via::Nat(k) => &self.nats[k].0,
        }
    }

    /// Reads every datagram waiting on `via`'s socket and routes each.
    fn drain(&mut self, via: Via, buf: &mut [u8]) {
        loop {
            let (len, from) = match self.socket(via).recv_from(buf) {
                Ok(x) => x,
                // WouldBlock: drained. Anything else (an ICMP error from a dead node's port
                // reported on this socket): that datagram is gone, go on with the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let sender = self.private.iter().position(|&p| p == from);
            let route = match (via, sender) {
                // Node to node: from the sender's listed socket to the receiver's private.
                (Via::Listed(to), Some(from_node)) => {
                    if lock(&self.rules).blocked.contains(&(from_node, to)) {
                        self.stats.dropped_partition.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some((Via::Listed(from_node), self.private[to]))
                }
                // Client to node: from the client's own NAT socket.
                (Via::Listed(to), None) => self.nat(from).map(|k| (Via::Nat(k), self.private[to])),
                // Node to client: from the node's listed socket.
                (Via::Nat(k), Some(from_node)) => Some((Via::Listed(from_node), self.nats[k].1)),
                (Via::Nat(_), None) => None,
            };
            let Some((out, to)) = route else { continue };
            self.deliver(out, to, &buf[..len]);
        }
    }

    /// The NAT socket of client `addr` (made on first use; past [`CLIENTS_MAX`], the slot
    /// used least recently gets a new socket for it), `None` if no socket can be opened.
    fn nat(&mut self, addr: SocketAddr) -> Option<usize> {
        if let Some(&k) = self.nat_of.get(&addr) {
            self.nat_used[k] = Instant::now();
            return Some(k);
        }
        let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 2, 1), 0)).ok()?;
        socket.set_nonblocking(true).ok()?;
        let k = if self.nats.len() < CLIENTS_MAX {
            self.nats.push((socket, addr));
            self.nat_used.push(Instant::now());
            self.nats.len() - 1
        } else {
            let k = (0..self.nats.len())
                .min_by_key(|&k| self.nat_used[k])
                .expect("full, so not empty");
            self.nat_of.remove(&self.nats[k].1);
            self.nats[k] = (socket, addr);
            self.nat_used[k] = Instant::now();
            self.stats.nat_reused.fetch_add(1, Ordering::Relaxed);
            k
        };
        self.nat_of.insert(addr, k);
        self.stats.nat_made.fetch_add(1, Ordering::Relaxed);
        Some(k)
    }

    /// Sends now, or later, or twice, or never, as the rules' [`Degrade`] draws.
    fn deliver(&mut self, via: Via, to: SocketAddr, bytes: &[u8]) {
        let degrade = lock(&self.rules).degrade;
        if degrade == Degrade::default() {
            self.send(via, to, bytes);
            return;
        }
        if self.rng.gen_range(0..100) < degrade.loss_pct {
            self.stats.dropped_loss.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copies = if self.rng.gen_range(0..100) < degrade.dup_pct {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay_ms = self.rng.gen_range(0..=degrade.delay_ms_max);
            if delay_ms == 0 {
                self.send(via, to, bytes);
            } else if self.delayed.len() < DELAYED_MAX {
                self.stats.delayed.fetch_add(1, Ordering::Relaxed);
                self.seq += 1;
                let at = Instant::now() + Duration::from_millis(delay_ms.into());
                self.delayed.push(Delayed {
                    at: std::cmp::Reverse((at, self.seq)),
                    via,
                    to,
                    bytes: bytes.to_vec(),
                });
            }
        }
    }

    fn send(&self, via: Via, to: SocketAddr, bytes: &[u8]) {
        // A node that is down refuses it (ICMP), a full buffer drops it: both are the
        // network's loss, as UDP allows.
        if self.socket(via).send_to(bytes, to).is_ok() {
            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}
