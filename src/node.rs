//! The node: a thin IO shell around the lock table.
//!
//! One event-loop thread owns the UDP socket and the [`LockTable`]. It blocks in `recv_from`
//! with a read timeout equal to the table's next timer (no timer: it blocks indefinitely), so
//! an idle node uses no CPU and a busy one never spins. For each datagram it:
//!
//! 1. decodes it in place ([`Request::decode`], no allocation);
//! 2. drops what the spec says to drop (too short to answer, oversized, not ours), or answers a
//!    request it cannot decode with an ERROR_REPLY whose status says why;
//! 3. hands the request to the table together with `now`;
//! 4. drains the table's replies, encodes each into a reused buffer and sends it.
//!
//! The datagram is handled by the thread that received it and the reply is sent from there:
//! no channel, no thread hop and no lock on the per-request path. The node makes no protocol
//! decision itself; every rule lives in the table or the codec.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use socket2::{Domain, Protocol, Socket, Type};
use udplock_protocol::{Request, DATAGRAM_LEN_MAX, REQUEST_LEN_MIN};

use crate::clock::BootInstant;
use crate::core::lock_table::{self, LockTable};
pub use crate::core::node::requests::{encode_reply, error_reply, table_request};
pub use crate::core::node::NodeStats;
use crate::core::time::Instant;

/// Socket receive buffer asked of the kernel: room for a burst of a few thousand requests
/// while the loop is busy, so bursts queue instead of being dropped.
pub const RECV_BUFFER_BYTES: usize = 4 << 20;

/// What a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Address to bind the UDP socket to (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Limits and defaults of the lock table.
    pub table: lock_table::Config,
    /// Pin the event-loop thread to this CPU (`None`: let the OS place it). A pinned loop
    /// wakes on a known, warm CPU; keep other busy threads off it.
    pub cpu: Option<usize>,
    /// The lease horizon file (see [`HorizonFile`]): makes a restart at the same address safe
    /// without an operator's grace period. `None` for a node nobody can have preceded (an
    /// ephemeral port) or when the operator takes care of restarts.
    pub state_file: Option<PathBuf>,
}

impl NodeConfig {
    /// A node on `listen` with the default limits, whose fencing tokens start at the wall
    /// clock (see [`fencing_token_first_from_wall_clock`]).
    pub fn new(listen: SocketAddr) -> NodeConfig {
        NodeConfig {
            listen,
            table: lock_table::Config {
                fencing_token_first: fencing_token_first_from_wall_clock(),
                ..lock_table::Config::default()
            },
            cpu: None,
            state_file: None,
        }
    }
}

/// The first fencing token of a node that starts with an empty table: the wall clock in
/// microseconds since the Unix epoch. Every token an earlier incarnation issued is below it
/// as long as that incarnation issued fewer than one token per microsecond on average (a
/// million grants a second, sustained, from its start) and the wall clock did not step back
/// across the restart (spec §7.2.4). So tokens keep increasing across restarts with no disk.
pub fn fencing_token_first_from_wall_clock() -> u64 {
    wall_clock_micros().clamp(1, u64::MAX / 2)
}

/// A running node. Dropping it stops the node.
pub struct Node {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<NodeStats>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    /// Binds the socket and starts the event-loop thread.
    pub fn start(mut config: NodeConfig) -> io::Result<Node> {
        if let Err(e) = config.table.validate() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()));
        }
        let horizon = match &config.state_file {
            None => None,
            Some(path) => {
                let (file, grace_ms) = HorizonFile::open(path, config.table.ttl_ms_max)?;
                if grace_ms > config.table.startup_grace_ms {
                    log::warn!(
                        "udplock node: a previous node granted leases until {grace_ms} ms from \
                         now ({}); granting nothing until then",
                        path.display()
                    );
                    config.table.startup_grace_ms = grace_ms;
                }
                Some(file)
            }
        };
        let socket = bind(config.listen)?;
        let local_addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(NodeStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            let cpu = config.cpu;
            std::thread::Builder::new()
                .name("udplock-node".into())
                .spawn(move || {
                    if let Some(id) = cpu {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                            log::warn!("udplock node: could not pin the event loop to CPU {id}");
                        }
                    }
                    EventLoop::new(socket, config.table, stats, horizon).run(&stop)
                })?
        };
        log::info!("udplock node listening on {local_addr}");
        Ok(Node {
            local_addr,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The address the node answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Blocks until the node stops (it stops only through [`Node::shutdown`] or a drop from
    /// another handle; `udplock server` waits here until the process is killed).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops the event loop and waits for it.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            // Wake the loop from its blocking recv with an empty datagram (dropped as too
            // short); the loop then sees the stop flag.
            if let Ok(waker) = UdpSocket::bind(unspecified_like(self.local_addr)) {
                let _ = waker.send_to(&[], loopback_for(self.local_addr));
            }
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A UDP socket bound to `addr` with the node's receive buffer.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // A larger receive buffer is a best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
    }
}

/// Where a local waker reaches a node bound to `addr` (an unspecified bind answers on loopback).
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    let mut to = addr;
    if to.ip().is_unspecified() {
        to.set_ip(unspecified_like(addr).ip());
    }
    to
}

/// The loop's state: the socket, the core, reused buffers and the clock's epoch.
struct EventLoop {
    socket: UdpSocket,
    table: LockTable,
    stats: Arc<NodeStats>,
    /// On the suspend-aware clock (`crate::clock`): leases must count while the machine sleeps.
    epoch: BootInstant,
    read_timer: ReadTimer,
    out: [u8; DATAGRAM_LEN_MAX],
    horizon: Option<HorizonFile>,
}

impl EventLoop {
    fn new(
        socket: UdpSocket,
        table: lock_table::Config,
        stats: Arc<NodeStats>,
        horizon: Option<HorizonFile>,
    ) -> EventLoop {
        EventLoop {
            socket,
            table: LockTable::new(table),
            stats,
            epoch: BootInstant::now(),
            read_timer: ReadTimer::default(),
            out: [0; DATAGRAM_LEN_MAX],
            horizon,
        }
    }

    /// Before any reply leaves, the horizon file must cover every lease granted so far; if it
    /// cannot be written, the replies wait in the table (clients retransmit) and false is
    /// returned.
    fn horizon_persisted(&mut self) -> bool {
        let (horizon, now) = (self.table.lease_horizon(), self.now());
        let Some(file) = self.horizon.as_mut() else {
            return true;
        };
        match file.cover(horizon, now) {
            Ok(()) => true,
            Err(e) => {
                log::error!(
                    "udplock node: cannot write the lease horizon file: {e}; holding replies"
                );
                false
            }
        }
    }

    /// The core's clock: microseconds since the loop started (monotonic, suspend-aware).
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn run(mut self, stop: &AtomicBool) {
        // One byte more than the largest datagram, so an oversized one is seen as oversized
        // (the kernel truncates it to the buffer) rather than mistaken for a valid one.
        let mut buf = [0u8; DATAGRAM_LEN_MAX + 1];
        while !stop.load(Ordering::Acquire) {
            let now = self.now();
            if self.table.poll_timeout().is_some_and(|t| t <= now) {
                self.table.handle_timeout(now);
                if self.horizon_persisted() {
                    self.flush_replies();
                }
            }
            self.arm_timer();
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    NodeStats::bump(&self.stats.datagrams);
                    self.handle_datagram(&buf[..len], from);
                }
                Err(e) if recv_error_is_transient(&e) => {}
                Err(e) => {
                    log::error!("udplock node: recv failed: {e}; retrying");
                    std::thread::sleep(StdDuration::from_millis(1));
                }
            }
        }
    }

    /// Sets the socket's read timeout to the time left until the table's next timer.
    fn arm_timer(&mut self) {
        let now = self.now();
        self.read_timer
            .arm(&self.socket, self.table.poll_timeout(), now);
    }

    fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let request = match Request::decode(datagram) {
            Ok(r) => r,
            Err(e) => return self.answer_undecodable(datagram, from, e),
        };
        // Spec §2.2: a request shorter than the smallest reply is never answered.
        if datagram.len() < REQUEST_LEN_MIN {
            NodeStats::bump(&self.stats.dropped);
            return;
        }
        NodeStats::bump(&self.stats.requests);
        let now = self.now();
        self.table
            .handle_request(now, table_request(&request, from, datagram.len()));
        if self.horizon_persisted() {
            self.flush_replies();
        }
    }

    fn answer_undecodable(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        error: udplock_protocol::DecodeError,
    ) {
        match error_reply(datagram, error, &mut self.out) {
            Some(len) => {
                NodeStats::bump(&self.stats.error_replies);
                self.send(len, from);
            }
            None => NodeStats::bump(&self.stats.dropped),
        }
    }

    /// Sends every reply the table produced (each sized by the table against its own request:
    /// replies held back while the horizon file could not be written leave later, with others).
    fn flush_replies(&mut self) {
        while let Some(r) = self.table.poll_reply() {
            match encode_reply(&r, &mut self.out) {
                Ok(len) => self.send(len, r.to),
                Err(e) => {
                    // The table only produces encodable replies; a failure here is a bug,
                    // but one reply lost is better than a node down: the client retransmits.
                    log::error!("udplock node: reply did not encode: {e}");
                }
            }
        }
    }

    fn send(&mut self, len: usize, to: SocketAddr) {
        match self.socket.send_to(&self.out[..len], to) {
            Ok(_) => NodeStats::bump(&self.stats.replies),
            Err(_) => NodeStats::bump(&self.stats.send_errors),
        }
    }
}

/// The socket's read timeout, set to the time left until the next timer (the loop blocks in
/// `recv_from` until a datagram or the timer), skipping the system call while the timeout
/// already set would wake the loop close enough to the timer.
#[derive(Default)]
pub(crate) struct ReadTimer {
    current: Option<StdDuration>,
}

/// How late a timer may fire because the loop kept an earlier read timeout instead of a
/// system call: small beside every timer it serves (leases and waits in milliseconds, Raft's
/// heartbeats and elections in tens of milliseconds), and always in the safe direction (a
/// lease is freed later, never earlier).
const TIMER_LATE_MAX: StdDuration = StdDuration::from_micros(1_000);

/// How early: waking early costs one more turn of the loop.
const TIMER_EARLY_MAX: StdDuration = StdDuration::from_micros(100);

impl ReadTimer {
    /// Arms for `next` (`None`: block until a datagram).
    pub(crate) fn arm(&mut self, socket: &UdpSocket, next: Option<Instant>, now: Instant) {
        let timeout = next.map(|t| {
            let us = t.saturating_since(now).as_micros();
            // A zero timeout means "block forever" to the OS; wait at least 1 µs instead.
            StdDuration::from_micros(us.max(1))
        });
        let differs = match (timeout, self.current) {
            (Some(wanted), Some(set)) => {
                set > wanted + TIMER_LATE_MAX || set + TIMER_EARLY_MAX < wanted
            }
            (None, None) => false,
            _ => true,
        };
        if differs && socket.set_read_timeout(timeout).is_ok() {
            self.current = timeout;
        }
    }
}

/// Whether a `recv_from` error only means "nothing to read now" (or concerns one peer).
pub(crate) fn recv_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            // An ICMP error for an earlier datagram surfaces on Linux as a refused connection
            // on the next recv; it concerns that peer only.
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

/// The lease horizon file (spec §7.2.4): one line holding a wall-clock time, in microseconds
/// since the Unix epoch, after which no lease this node granted can still be valid.
///
/// The node keeps its locks in memory. If it is killed and restarted at the same address, its
/// successor must not grant a lock some client still believes it holds. So before any reply
/// that grants or extends a lease leaves the node, the file is made to cover that lease
/// (written one second ahead, so under steady traffic it is rewritten about once a second),
/// and a node starting with the file grants nothing until the time it names. The write is a
/// plain `pwrite` of a fixed-width line, not fsynced: it survives a crash or kill of the
/// process, not the loss of the machine's memory (power loss); a replicated cluster
/// (`crate::cluster`, `--durability`) is the durable option.
pub struct HorizonFile {
    file: File,
    /// Up to which core instant the file covers leases.
    covered: Instant,
}

/// How far past the latest lease the file is written, so a steady stream of grants rewrites
/// it about once per this period instead of on every grant.
const HORIZON_AHEAD: crate::core::time::Duration = crate::core::time::Duration::from_millis(1_000);

impl HorizonFile {
    /// Opens (or creates) the file and returns it with the grace, in ms, the node must keep
    /// before granting: the time left until the horizon a previous node wrote. A file that
    /// cannot be read as a horizon means the worst: `ttl_ms_max`.
    pub fn open(path: &Path, ttl_ms_max: u32) -> io::Result<(HorizonFile, u32)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let previous = std::fs::read_to_string(path).ok();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let grace_ms = match previous.as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(line) => match line.parse::<u64>() {
                Ok(horizon_us) => {
                    let left_us = horizon_us.saturating_sub(wall_clock_micros());
                    u32::try_from(left_us.div_ceil(1_000)).unwrap_or(u32::MAX)
                }
                Err(_) => {
                    log::warn!(
                        "udplock node: {} is not a lease horizon; assuming the longest lease",
                        path.display()
                    );
                    ttl_ms_max
                }
            },
        };
        Ok((
            HorizonFile {
                file,
                covered: Instant::ZERO,
            },
            grace_ms,
        ))
    }

    /// Makes the file cover leases up to `horizon` (a core instant; `now` is the core's now).
    fn cover(&mut self, horizon: Instant, now: Instant) -> io::Result<()> {
        if horizon <= self.covered {
            return Ok(());
        }
        let target = horizon + HORIZON_AHEAD;
        // Converted with a fresh reading of the wall clock, so drift between the monotonic
        // and the wall clock over a long run does not accumulate.
        let wall_us = wall_clock_micros() + target.saturating_since(now).as_micros();
        // Fixed width: the write never changes the file's length, so it replaces the line in
        // one system call.
        self.file
            .write_all_at(format!("{wall_us:020}\n").as_bytes(), 0)?;
        self.covered = target;
        Ok(())
    }
}

pub(crate) fn wall_clock_micros() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}
