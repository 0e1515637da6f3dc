//! The writer thread of an `fsync` node: syncing off the event loop (issue 13, item 3).
//!
//! A disk sync takes from a hundred microseconds to milliseconds; on the event loop it would
//! stop the node from receiving and answering every other shard's traffic meanwhile, and the
//! writes that arrive during one sync would each wait for their own. Here the loop hands the
//! writes its core produced to this thread and goes on; the thread stores every write handed
//! to it so far, syncs once for all of them (group commit: whatever was handed over while a
//! sync ran goes into the next one, so a node syncs at most once at a time, whatever its
//! number of shards and clients), then:
//!
//! 1. publishes the last write stored ([`Writer::stored`]);
//! 2. sends, itself, every datagram the loop held for a write now stored
//!    ([`Writer::send_or_hold`]): an acknowledgement leaves right after the sync, without a
//!    hop back to the loop;
//! 3. wakes the loop with an empty datagram to its own socket, so that its core hears of the
//!    stored writes ([`crate::core::node::Node::stored`]: a leader counts its own log only
//!    once stored) at once rather than at its next timer. An empty datagram carries nothing
//!    (anyone may send one; the loop only looks at [`Writer::stored`] again).
//!
//! The datagrams of 2 and the wake-up of 3 leave together, in one `sendmmsg` (as many as
//! fit, `SendBatch`): a follower's acknowledgement and its loop's wake-up cost one system
//! call.
//!
//! ```text
//!   event loop:  poll_persist ──submit──> [writes] ──> writer: store all, sync once
//!                poll_transmit ─after ≤ stored?─ yes: send ─┐           │
//!                                             no: hold ──> [held] ──> sent by the writer
//!                node.stored(seq) <── wake (empty datagram) <───────────┘
//! ```
//!
//! A write that fails stops the node (fail-stop, as the inline path does): the thread stores
//! nothing more, sends nothing that was held, and reports the error ([`Writer::failed`]);
//! the loop then stops.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::socket::SendBatch;
use crate::core::node::{NodeStats, ShardWrite};
use crate::core::raft::{Entry, SnapshotMeta};

/// Datagrams held for writes not yet stored, at most: a sync's worth of traffic at the
/// node's peak many times over. Past it a datagram is dropped (counted in `dropped`) and its
/// sender retransmits, as when the core's own queue is full.
pub const HELD_MAX: usize = 65_536;

/// What the loop hands the writer, done in order.
pub enum Job {
    /// A write of the node's core.
    Write(ShardWrite),
    /// Write `shard`'s live entries again at the log's end (`store::Wal::relocate`): the
    /// replica's snapshot and log as they were when every write before this job was handed
    /// over.
    Relocate {
        shard: u32,
        snapshot: SnapshotMeta,
        log: Vec<Entry>,
    },
}

/// Stores a batch of jobs, in order, and makes them durable (the shell's storage: the data
/// directory and its log); returns the shards that hold the log's oldest segment back
/// (`store::Wal::holding_back`).
pub type StoreBatch = Box<dyn FnMut(&[Job]) -> io::Result<Vec<u32>> + Send>;

/// The handle the event loop keeps; dropping it lets the thread store what it was handed
/// and stop.
pub(super) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    /// The last write stored (its `seq`); only grows. Written under `queue`'s lock.
    stored: AtomicU64,
    /// `queue` holds a failure or shards holding the log back for the loop
    /// ([`Writer::take_news`]): the loop takes the lock only then. Written under the lock.
    news: AtomicBool,
    socket: UdpSocket,
    /// The loop's own address, for the wake-up datagram.
    wake_to: SocketAddr,
    stats: Arc<NodeStats>,
}

#[derive(Default)]
struct Queue {
    writes: Vec<Job>,
    /// What the last store said holds the log's oldest segment back.
    holding_back: Vec<u32>,
    held: VecDeque<Held>,
    stop: bool,
    failed: Option<String>,
}

/// A datagram that may leave once the write `after` is stored.
struct Held {
    after: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
    to_peer: bool,
}

impl Writer {
    /// Starts the thread: it stores with `store` and sends held datagrams from a clone of
    /// `socket` (the loop's, bound to `local`).
    pub(super) fn spawn(
        name: String,
        store: StoreBatch,
        socket: &UdpSocket,
        local: SocketAddr,
        stats: Arc<NodeStats>,
    ) -> io::Result<Writer> {
        let mut wake_to = local;
        if wake_to.ip().is_unspecified() {
            wake_to.set_ip(if local.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            stored: AtomicU64::new(0),
            news: AtomicBool::new(false),
            socket: socket.try_clone()?,
            wake_to,
            stats,
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || shared.run(store))?
        };
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands `writes` (in `seq` order, after every write handed before) to the thread.
    pub(super) fn submit(&self, writes: &mut Vec<Job>) {
        if writes.is_empty() {
            return;
        }
        let mut queue = self.shared.lock();
        queue.writes.append(writes);
        drop(queue);
        self.shared.work.notify_one();
    }

    /// The last write stored and synced.
    pub(super) fn stored(&self) -> u64 {
        self.shared.stored.load(Ordering::Acquire)
    }

    /// What the thread has for the loop, checked at every turn without a lock unless there
    /// is something: `Err` why it stopped storing (the node must stop), or the shards the
    /// last store said hold the log's oldest segment back (each once; usually none).
    pub(super) fn take_news(&self) -> Result<Vec<u32>, String> {
        if !self.shared.news.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let mut queue = self.shared.lock();
        if let Some(why) = &queue.failed {
            return Err(why.clone());
        }
        self.shared.news.store(false, Ordering::Release);
        Ok(std::mem::take(&mut queue.holding_back))
    }

    /// A datagram that may leave once write `after` is stored: `true` if it is stored
    /// already (the caller sends it now); else it is held, and the thread sends it after the
    /// sync that stores `after`.
    pub(super) fn send_or_hold(
        &self,
        after: u64,
        to: SocketAddr,
        bytes: &[u8],
        to_peer: bool,
    ) -> bool {
        if after <= self.stored() {
            return true;
        }
        let mut queue = self.shared.lock();
        // Checked again under the lock: the thread publishes `stored` and takes the held
        // datagrams under it, so none is left behind by a sync that ended just now.
        if after <= self.stored() {
            return true;
        }
        if queue.held.len() >= HELD_MAX {
            NodeStats::bump(&self.shared.stats.dropped);
            return false;
        }
        queue.held.push_back(Held {
            after,
            to,
            bytes: bytes.to_vec(),
            to_peer,
        });
        false
    }
}

impl Drop for Writer {
    /// Lets the thread store (and sync) every write it was handed, then joins it.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic of the other thread while it held the lock leaves the queue usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, mut store: StoreBatch) {
        let mut writes = Vec::new();
        let mut ready = Vec::new();
        let mut keep = VecDeque::new();
        let mut out = SendBatch::default();
        loop {
            {
                let mut queue = self.lock();
                while queue.writes.is_empty() && !queue.stop {
                    queue = self.work.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                if queue.writes.is_empty() {
                    return;
                }
                std::mem::swap(&mut writes, &mut queue.writes);
            }
            let last = writes
                .iter()
                .rev()
                .find_map(|job| match job {
                    Job::Write(w) => Some(w.seq),
                    Job::Relocate { .. } => None,
                })
                .unwrap_or_else(|| self.stored.load(Ordering::Acquire));
            let holding_back = match store(&writes) {
                Ok(shards) => shards,
                Err(e) => {
                    let why = format!("cannot persist its state: {e}");
                    self.lock().failed = Some(why);
                    self.news.store(true, Ordering::Release);
                    self.wake();
                    return;
                }
            };
            writes.clear();
            {
                let mut queue = self.lock();
                if !holding_back.is_empty() {
                    queue.holding_back = holding_back;
                    self.news.store(true, Ordering::Release);
                }
                self.stored.store(last, Ordering::Release);
                // Every one now due, in the order the loop held them; the rest stay, in
                // order (`keep`'s room is reused from sync to sync).
                for h in queue.held.drain(..) {
                    if h.after <= last {
                        ready.push(h);
                    } else {
                        keep.push_back(h);
                    }
                }
                std::mem::swap(&mut queue.held, &mut keep);
            }
            // The held datagrams, then the loop's wake-up, in as few `sendmmsg`s as fit.
            for held in ready.drain(..) {
                let len = held.bytes.len();
                out.next_buf()[..len].copy_from_slice(&held.bytes);
                out.push(held.to, len, held.to_peer);
                if out.is_full() {
                    out.send(&self.socket).count_in(&self.stats);
                }
            }
            out.push(self.wake_to, 0, true);
            out.send(&self.socket).count_in(&self.stats);
        }
    }

    /// An empty datagram to the loop's socket: it wakes and reads [`Writer::stored`].
    fn wake(&self) {
        let _ = self.socket.send_to(&[], self.wake_to);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn write(seq: u64) -> Job {
        Job::Write(ShardWrite {
            seq,
            ..ShardWrite::of(0)
        })
    }

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Generous: only a broken writer makes a test wait this long.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    /// A writer whose store reports each batch's sequence numbers on the returned channel as
    /// it takes the batch, then waits for `gate` (and fails if `gate` says so).
    fn gated(loop_socket: &UdpSocket) -> (Writer, mpsc::Sender<bool>, mpsc::Receiver<Vec<u64>>) {
        let (gate_tx, gate_rx) = mpsc::channel::<bool>();
        let (batch_tx, batch_rx) = mpsc::channel();
        let store: StoreBatch = Box::new(move |jobs| {
            let seqs = jobs.iter().map(|job| match job {
                Job::Write(w) => w.seq,
                Job::Relocate { .. } => 0,
            });
            let _ = batch_tx.send(seqs.collect());
            if gate_rx.recv().unwrap_or(false) {
                Ok(Vec::new())
            } else {
                Err(io::Error::other("the disk is gone"))
            }
        });
        let local = loop_socket.local_addr().unwrap();
        let stats = Arc::new(NodeStats::default());
        let writer = Writer::spawn("test-writer".into(), store, loop_socket, local, stats).unwrap();
        (writer, gate_tx, batch_rx)
    }

    #[test]
    fn a_datagram_waits_for_its_write_and_the_writer_sends_it_after_the_sync() {
        let (node, peer) = (socket(), socket());
        let (writer, gate, batches) = gated(&node);
        writer.submit(&mut vec![write(1)]);
        assert_eq!(batches.recv().unwrap(), vec![1]);
        // Write 1 is not stored (its store waits for the gate): held, not sent.
        let to = peer.local_addr().unwrap();
        assert!(!writer.send_or_hold(1, to, b"ack of 1", true));
        // One that needs no write leaves now.
        assert!(writer.send_or_hold(0, to, b"x", true));
        assert_eq!(writer.stored(), 0);
        gate.send(true).unwrap();
        let mut buf = [0u8; 64];
        let (len, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"ack of 1");
        assert_eq!(
            from,
            node.local_addr().unwrap(),
            "sent from the node's socket"
        );
        assert_eq!(
            writer.stored(),
            1,
            "published before the held datagrams leave"
        );
        // The loop is woken with an empty datagram.
        let (len, _) = node.recv_from(&mut buf).unwrap();
        assert_eq!(len, 0);
        // Stored now: a datagram after 1 leaves at once.
        assert!(writer.send_or_hold(1, to, b"later", true));
        assert_eq!(
            writer.take_news(),
            Ok(Vec::new()),
            "no failure, nothing held back"
        );
    }

    #[test]
    fn writes_handed_over_during_a_sync_share_the_next_one() {
        let node = socket();
        let (writer, gate, batches) = gated(&node);
        writer.submit(&mut vec![write(1)]);
        // Write 1 is being stored: everything handed over meanwhile goes in one more store.
        assert_eq!(batches.recv().unwrap(), vec![1]);
        writer.submit(&mut vec![write(2)]);
        writer.submit(&mut vec![write(3), write(4)]);
        gate.send(true).unwrap();
        assert_eq!(batches.recv().unwrap(), vec![2, 3, 4]);
        gate.send(true).unwrap();
        drop(writer);
    }

    #[test]
    fn a_failed_write_stops_the_writer_and_what_waits_for_it_never_leaves() {
        let (node, peer) = (socket(), socket());
        let (writer, gate, batches) = gated(&node);
        writer.submit(&mut vec![write(1)]);
        let to = peer.local_addr().unwrap();
        assert_eq!(batches.recv().unwrap(), vec![1]);
        assert!(!writer.send_or_hold(1, to, b"ack of 1", true));
        gate.send(false).unwrap();
        // The loop is woken to hear of the failure.
        let mut buf = [0u8; 64];
        let (len, _) = node.recv_from(&mut buf).unwrap();
        assert_eq!(len, 0);
        let why = writer.take_news().expect_err("the failure is reported");
        assert!(why.contains("the disk is gone"), "{why}");
        assert_eq!(writer.stored(), 0);
        assert_eq!(writer.shared.lock().held.len(), 1, "held, never sent");
        // Nothing more is stored: a later write is not taken.
        writer.submit(&mut vec![write(2)]);
        drop(writer);
        assert!(batches.try_recv().is_err());
    }

    #[test]
    fn shards_holding_the_log_back_reach_the_loop_once() {
        let node = socket();
        let store: StoreBatch = Box::new(|_| Ok(vec![7]));
        let local = node.local_addr().unwrap();
        let stats = Arc::new(NodeStats::default());
        let writer = Writer::spawn("test-writer".into(), store, &node, local, stats).unwrap();
        writer.submit(&mut vec![write(1)]);
        // The wake-up comes after the store's news is in place.
        let mut buf = [0u8; 8];
        assert_eq!(node.recv_from(&mut buf).unwrap().0, 0);
        assert_eq!(writer.take_news(), Ok(vec![7]));
        assert_eq!(writer.take_news(), Ok(Vec::new()), "taken once");
    }
}
