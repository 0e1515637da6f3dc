//! The floors of the replicated path, measured in the same run as the figures they bound
//! (issue 13 item 5): the message pattern of one replicated operation, and the disk's
//! `fdatasync`.
//!
//! # The replication message-pattern floor
//!
//! One replicated acquire is client → leader, leader → every follower (an APPEND), follower →
//! leader (its APPEND_REPLY), leader → client. [`ReplicationFloor`] is that pattern and
//! nothing else: a "leader" thread and one "follower" thread per follower, each a blocking
//! thread that owns its loopback UDP socket (like a node's event loop), pinned where the
//! placement pins the nodes, and the calling thread as the client, blocking in `recv` (like
//! the client). The leader, on a client datagram, sends one APPEND-sized datagram to each
//! follower; each follower answers every datagram with an APPEND_REPLY-sized one; the leader
//! answers the client with a reply-sized datagram as soon as it holds
//! [`acks_needed`] acknowledgements, and takes the later ones in as they come (drops them).
//! The sizes are those the protocol crate's encoders give a typical acquire of this
//! benchmark ([`FloorSizes::typical_acquire`]).
//!
//! Why the *first* acknowledgement of three nodes: an entry is committed once it is stored on
//! a majority of the voters (Raft §5.3, thesis §3.5), and the leader is one of them (in
//! memory mode, its own log append is done before it sends). With 3 voters the leader plus
//! one follower are a majority, so the leader can answer on the first APPEND_REPLY; the
//! second follower's acknowledgement arrives after the answer and is off the critical path
//! (it still costs CPU, which on a shared vCPU competes with the next request, as the real
//! node's does). In general the leader waits for `nodes / 2` acknowledgements of `nodes - 1`
//! followers. What the floor leaves out is exactly the node's own work: decoding, the lock
//! table, the Raft core, encoding, and any extra wake-up or system call; an acquire's ratio
//! to this floor is that overhead (issue 13's target: ≤ 1.15×).
//!
//! The runner measures it interleaved with the raw round trip and the acquire (one of each
//! per iteration), so all three meet the same scheduling and load. Its row also gives the
//! CPU time its threads spent per operation (leader and followers together, system calls and
//! wake-ups included): the CPU floor of one replicated operation, beside which the nodes' CPU
//! per grant is measured (issue 13's target: within 1.5× of it).
//!
//! # The disk floor
//!
//! `--disk-floor [DIR]` (default: the current directory; give the file system the nodes'
//! data directories are on): the latency of writing 128 bytes at the end of a file's records
//! and making them durable with `fdatasync` (`File::sync_data`), about one acquire's log
//! record as a node that syncs (`--durability fsync`) writes it — into space reserved ahead
//! (`fallocate`, as the write-ahead log reserves it: `store::PREALLOCATE_BYTES`) — first
//! with one writer alone and then with one writer per node
//! syncing its own file at once (the nodes of one machine share its disk, as the benchmark's
//! three do). The embedded cluster of `udplock bench` runs in memory mode and never syncs,
//! so the disk floor is only measured when asked for: it is the floor of a service started
//! with `--durability fsync` and measured with `--servers`, which must then be on the same
//! machine and file system as DIR.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use udplock_protocol::{
    AuthTrailer, ClusterKey, LogCommand, MessageType, PeerEntry, PeerHeader, PeerWriter,
    RaftMessage, Reply, Request, RequestBody, Status, AUTH_TRAILER_LEN, CLUSTER_KEY_LEN,
    DATAGRAM_LEN_MAX, PEER_DATAGRAM_LEN_MAX,
};

use crate::error::LockError;
use crate::store::DiskFile;

use super::placement::pin_current;
use super::report::{histogram, record, summarize, PhaseReport};
use super::usage::NodeCpu;

/// Acknowledgements from followers a leader of `nodes` voters needs before an entry is
/// committed: a majority of the voters (`nodes / 2 + 1`, Raft §5.3) less the leader itself.
pub(super) const fn acks_needed(nodes: usize) -> usize {
    nodes / 2
}

/// The datagram sizes of one replicated acquire, in bytes (UDP payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FloorSizes {
    /// The client's ACQUIRE (padded to let it wait, spec §2.2: the benchmark's acquires may).
    pub(super) request: usize,
    /// The leader's PEER datagram carrying one APPEND of the one entry that logs the request,
    /// sealed with a cluster key.
    pub(super) append: usize,
    /// A follower's PEER datagram carrying the APPEND_REPLY, sealed with a cluster key.
    pub(super) ack: usize,
    /// The leader's ACQUIRE_REPLY granting the lock.
    pub(super) reply: usize,
}

impl FloorSizes {
    /// The sizes the protocol crate's encoders give the uncontended phase's acquire (its
    /// resource and client ids, its wait and TTL): the client's datagrams without a client
    /// key, the nodes' sealed with a cluster key (spec §8.11), as the embedded cluster sends
    /// them by default (`start_local_cluster` gives its nodes a fresh key) and as a secured
    /// cluster does.
    pub(super) fn typical_acquire() -> FloorSizes {
        let body = RequestBody::Acquire {
            resource: b"bench/uncontended/0",
            client: b"bench-client",
            wait_ms: 1_000,
            ttl_ms: 10_000,
        };
        let (session_id, request_id, term, index) = (0x5EED, 1_000, 2, 5_000);
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let request = Request {
            session_id,
            request_id,
            attempt: 0,
            body,
        }
        .encode(&mut buf)
        .expect("the bench's acquire encodes");
        let command = LogCommand::Request {
            stamp: 1_000_000,
            session_id,
            request_id,
            attempt: 0,
            room_for_waiting: true,
            reply_to: SocketAddr::from(([127, 0, 0, 1], 40_000)),
            body,
        };
        let mut data = [0u8; DATAGRAM_LEN_MAX];
        let data_len = command
            .encode(&mut data)
            .expect("the logged acquire encodes");
        let peers = PeerHeader {
            cluster_id: 7,
            from: 1,
        };
        let key = ClusterKey::new(&[0x42; CLUSTER_KEY_LEN]);
        let trailer = |to| AuthTrailer {
            to,
            incarnation: 1,
            peer_incarnation: 1,
            seq: 1,
            key_id: 0,
        };
        let mut writer = PeerWriter::with_trailer_room(&mut buf, peers, AUTH_TRAILER_LEN);
        let entry = PeerEntry {
            term,
            data: &data[..data_len],
        };
        writer
            .push_append(
                3,
                term,
                index - 1,
                term,
                index - 1,
                (9, 0),
                std::iter::once(entry),
            )
            .expect("one APPEND of one entry fits");
        let len = writer.finish();
        let append = (key.seal(&mut buf, len, &trailer(2))).expect("the APPEND seals");
        let mut writer = PeerWriter::with_trailer_room(
            &mut buf,
            PeerHeader { from: 2, ..peers },
            AUTH_TRAILER_LEN,
        );
        let ack: RaftMessage<udplock_protocol::PeerEntries<'static>, &[u8]> =
            RaftMessage::AppendReply {
                term,
                success: true,
                match_index: index,
                round: 9,
                life: 0xF00D,
                replica: 2,
            };
        writer.push(3, &ack).expect("an APPEND_REPLY fits");
        let len = writer.finish();
        let ack = (key.seal(&mut buf, len, &trailer(1))).expect("the APPEND_REPLY seals");
        let reply = Reply {
            hold_count: 1,
            fencing_token: 1_795_675_829_629_711,
            lease_ms: 10_000,
            ..Reply::bare(
                MessageType::AcquireReply,
                session_id,
                request_id,
                0,
                Status::Ok,
            )
        }
        .encode(&mut buf)
        .expect("a grant encodes");
        FloorSizes {
            request,
            append,
            ack,
            reply,
        }
    }
}

/// Where the pattern's datagrams carry the operation's sequence number, so that a late
/// acknowledgement of an earlier operation is never counted for a later one. Inside the
/// smallest datagram.
const SEQ: std::ops::Range<usize> = 0..8;

fn seq_of(datagram: &[u8]) -> Option<u64> {
    let bytes = datagram.get(SEQ)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The message pattern of one replicated operation, through threads that do nothing else
/// (see the module docs).
pub(super) struct ReplicationFloor {
    sock: UdpSocket,
    leader: SocketAddr,
    followers: Vec<SocketAddr>,
    sizes: FloorSizes,
    seq: std::cell::Cell<u64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Followers, and acknowledgements the leader waits for.
    pub(super) shape: (usize, usize),
}

impl ReplicationFloor {
    /// Starts a leader and `followers` follower threads, pinned to `cpu` if given (where the
    /// nodes run); the leader answers after `acks` acknowledgements.
    pub(super) fn start(
        followers: usize,
        acks: usize,
        cpu: Option<usize>,
    ) -> Result<ReplicationFloor, LockError> {
        assert!(
            acks >= 1 && acks <= followers,
            "a replicated leader waits for 1 to {followers} acknowledgements, not {acks}"
        );
        let io =
            |e: std::io::Error| LockError::InternalError(format!("replication floor socket: {e}"));
        let sizes = FloorSizes::typical_acquire();
        let bind = || UdpSocket::bind("127.0.0.1:0").map_err(io);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut follower_addrs = Vec::new();
        for i in 0..followers {
            let sock = bind()?;
            follower_addrs.push(sock.local_addr().map_err(io)?);
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("udplock-floor-f{}", i + 1))
                    .spawn(move || {
                        pin_current(cpu);
                        follower_loop(&sock, sizes.ack, &stop)
                    })
                    .map_err(io)?,
            );
        }
        let leader_sock = bind()?;
        let leader = leader_sock.local_addr().map_err(io)?;
        {
            let (stop, to) = (stop.clone(), follower_addrs.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("udplock-floor-leader".into())
                    .spawn(move || {
                        pin_current(cpu);
                        leader_loop(&leader_sock, &to, acks, sizes, &stop)
                    })
                    .map_err(io)?,
            );
        }
        let sock = bind()?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(io)?;
        Ok(ReplicationFloor {
            sock,
            leader,
            followers: follower_addrs,
            sizes,
            seq: std::cell::Cell::new(0),
            stop,
            threads,
            shape: (followers, acks),
        })
    }

    /// One replicated operation's pattern; `None` if a datagram was lost (loopback does not
    /// lose, but never hang).
    pub(super) fn round_trip(&self) -> Option<Duration> {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let mut msg = [0u8; DATAGRAM_LEN_MAX];
        msg[SEQ].copy_from_slice(&seq.to_be_bytes());
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let t0 = Instant::now();
        self.sock
            .send_to(&msg[..self.sizes.request], self.leader)
            .ok()?;
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).ok()?;
            // An answer to an earlier, timed-out operation is not this one's.
            if seq_of(&buf[..n]) == Some(seq) {
                return Some(t0.elapsed());
            }
        }
    }

    /// CPU time of the pattern's threads (the leader's and every follower's), which do nothing
    /// but the pattern: their CPU per operation is the CPU floor of one replicated operation
    /// (system calls and wake-ups included), to hold the nodes' CPU per grant against.
    pub(super) fn threads_cpu(&self) -> NodeCpu {
        // Thread names are at most 15 bytes in Linux's `comm`: "udplock-floor-l" and
        // "udplock-floor-f1" cut to "udplock-floor-f".
        NodeCpu::threads(|comm| comm.starts_with("udplock-floor"))
    }

    /// The row's name: how many acknowledgements of how many followers the leader waits for.
    pub(super) fn label(&self) -> String {
        let (followers, acks) = self.shape;
        format!("replication floor ({acks} of {followers} acks)")
    }
}

impl Drop for ReplicationFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes each blocked thread; a one-byte datagram carries no sequence number.
        for to in self.followers.iter().chain([&self.leader]) {
            let _ = self.sock.send_to(&[0], to);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A follower: answers every datagram with an acknowledgement of `ack_len` bytes carrying
/// its sequence number.
fn follower_loop(sock: &UdpSocket, ack_len: usize, stop: &AtomicBool) {
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut ack = [0u8; PEER_DATAGRAM_LEN_MAX];
    while !stop.load(Ordering::Acquire) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if n >= SEQ.end {
            ack[SEQ].copy_from_slice(&buf[SEQ]);
            let _ = sock.send_to(&ack[..ack_len], from);
        }
    }
}

/// The leader: a client datagram starts an operation (an APPEND to every follower); the
/// `acks`-th acknowledgement of that operation answers the client; the others are taken in
/// and dropped.
fn leader_loop(
    sock: &UdpSocket,
    followers: &[SocketAddr],
    acks: usize,
    sizes: FloorSizes,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut append = [0u8; PEER_DATAGRAM_LEN_MAX];
    let mut reply = [0u8; PEER_DATAGRAM_LEN_MAX];
    // The operation in progress: its sequence number, its client, acknowledgements so far.
    let mut current: Option<(u64, SocketAddr, usize)> = None;
    while !stop.load(Ordering::Acquire) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Some(seq) = seq_of(&buf[..n]) else {
            continue;
        };
        if followers.contains(&from) {
            if let Some((op, client, got)) = &mut current {
                if *op == seq && *got < acks {
                    *got += 1;
                    if *got == acks {
                        reply[SEQ].copy_from_slice(&seq.to_be_bytes());
                        let _ = sock.send_to(&reply[..sizes.reply], *client);
                    }
                }
            }
        } else {
            current = Some((seq, from, 0));
            append[SEQ].copy_from_slice(&seq.to_be_bytes());
            for f in followers {
                let _ = sock.send_to(&append[..sizes.append], f);
            }
        }
    }
}

/// Bytes of one disk-floor append: about one small log record (an acquire's entry and its
/// framing).
pub(super) const DISK_APPEND_LEN: usize = 128;

/// The disk floor (see the module docs): the rows `fdatasync 128 B (1 writer)` and
/// `fdatasync 128 B ({writers} writers at once)`, `samples` syncs per writer, in `dir`; and a
/// note saying where it was measured.
pub(super) fn disk_floor(
    dir: &Path,
    writers: usize,
    samples: u64,
) -> Result<(Vec<PhaseReport>, String), LockError> {
    assert!(writers >= 1 && samples >= 1);
    let alone = sync_run(dir, 1, samples)?;
    let together = sync_run(dir, writers, samples)?;
    let row = |(h, elapsed): (hdrhistogram::Histogram<u64>, Duration), label: String| {
        summarize(
            &format!("fdatasync {DISK_APPEND_LEN} B ({label})"),
            &h,
            elapsed,
            0.0,
        )
    };
    let rows = vec![
        row(alone, "1 writer".into()),
        row(together, format!("{writers} writers at once")),
    ];
    let tmpfs = if on_tmpfs(dir) {
        " — a tmpfs: nothing reaches a disk, this is no disk floor"
    } else {
        ""
    };
    let note = format!(
        "fdatasync rows: {DISK_APPEND_LEN}-byte writes into space reserved ahead (fallocate, as \
         the write-ahead log does), each followed by fdatasync, to files in {}{tmpfs}; ops/s \
         counts every writer's syncs",
        dir.canonicalize().as_deref().unwrap_or(dir).display()
    );
    Ok((rows, note))
}

/// `writers` threads, each writing to a file of its own, its space reserved first, and syncing
/// it `samples` times (after a few unrecorded ones), started together; every sync in one
/// histogram.
fn sync_run(
    dir: &Path,
    writers: usize,
    samples: u64,
) -> Result<(hdrhistogram::Histogram<u64>, Duration), LockError> {
    const WARMUP: u64 = 10;
    let io = |what: &str, path: &Path, e: std::io::Error| {
        LockError::InvalidArgument(format!("--disk-floor: {what} {}: {e}", path.display()))
    };
    let paths: Vec<PathBuf> = (0..writers)
        .map(|i| {
            dir.join(format!(
                ".udplock-bench-fdatasync-{}-{i}",
                std::process::id()
            ))
        })
        .collect();
    let files = paths
        .iter()
        .map(|p| {
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(p)
                .and_then(|file| {
                    // Room for every write, as the log reserves its own ahead of its records.
                    let len = (WARMUP + samples) * DISK_APPEND_LEN as u64;
                    DiskFile::allocate(&file, len).map(|()| file)
                })
                .map_err(|e| io("cannot create", p, e))
        })
        .collect::<Result<Vec<File>, _>>();
    let result = files.and_then(|files| {
        let barrier = Barrier::new(writers);
        let started = std::sync::OnceLock::new();
        let histograms = std::thread::scope(|s| {
            let handles: Vec<_> = (files.into_iter().zip(&paths))
                .map(|(mut file, path)| {
                    let (barrier, started) = (&barrier, &started);
                    s.spawn(move || -> Result<_, LockError> {
                        let record_bytes = [0xA5u8; DISK_APPEND_LEN];
                        let mut h = histogram();
                        for i in 0..WARMUP + samples {
                            if i == WARMUP {
                                barrier.wait();
                                started.get_or_init(Instant::now);
                            }
                            let t0 = Instant::now();
                            file.write_all(&record_bytes)
                                .and_then(|()| file.sync_data())
                                .map_err(|e| io("cannot append to", path, e))?;
                            if i >= WARMUP {
                                record(&mut h, t0.elapsed());
                            }
                        }
                        Ok(h)
                    })
                })
                .collect();
            (handles.into_iter())
                .map(|h| h.join().expect("fdatasync writer thread"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let elapsed = started.get().map_or(Duration::ZERO, Instant::elapsed);
        let mut all = histogram();
        for h in &histograms {
            all.add(h).expect("histograms of the same bounds add");
        }
        Ok((all, elapsed))
    });
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Whether `dir` is on a tmpfs, where `fdatasync` returns without any disk write.
fn on_tmpfs(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as u64 == TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use udplock_protocol::{PeerDatagram, HEADER_LEN, REPLY_LEN_MIN};

    /// Raft §5.3: the leader plus `nodes / 2` followers are a majority of `nodes`.
    #[test]
    fn the_leader_waits_for_a_majority_less_itself() {
        assert_eq!(acks_needed(2), 1);
        assert_eq!(
            acks_needed(3),
            1,
            "3 nodes: only the first ack is on the path"
        );
        assert_eq!(acks_needed(4), 2);
        assert_eq!(acks_needed(5), 2);
        for nodes in 2..=9 {
            let majority = nodes / 2 + 1;
            assert_eq!(acks_needed(nodes) + 1, majority);
            assert!(acks_needed(nodes) < nodes);
        }
    }

    /// The floor's datagrams are the sizes the encoders give, and those are what a typical
    /// acquire sends: an ACQUIRE padded for waiting, a grant no longer than it, one APPEND of
    /// one entry and one APPEND_REPLY.
    #[test]
    fn the_floor_sends_the_sizes_of_a_replicated_acquire() {
        let s = FloorSizes::typical_acquire();
        assert_eq!(s.request, udplock_protocol::ACQUIRE_WAIT_REQUEST_LEN);
        assert_eq!(s.reply, REPLY_LEN_MIN);
        // Header, record header, APPEND's fixed part, one entry header and the logged
        // acquire: 57 fixed bytes and the two ids.
        let logged = udplock_protocol::LOG_REQUEST_FIXED_LEN
            + "bench/uncontended/0".len()
            + "bench-client".len();
        assert_eq!(
            s.append,
            HEADER_LEN + udplock_protocol::append_record_len(logged, 1) + AUTH_TRAILER_LEN
        );
        // Header, record header, APPEND_REPLY body, trailer.
        assert_eq!(s.ack, HEADER_LEN + 6 + 41 + AUTH_TRAILER_LEN);
        assert_eq!((s.request, s.append, s.ack, s.reply), (152, 242, 135, 76));
        // A reply is never longer than its request (spec §2.2), nor an ack than its APPEND.
        assert!(s.reply <= s.request && s.ack <= s.append);
    }

    /// The encoder's APPEND decodes as one APPEND record of one entry (so the size is of a
    /// datagram a node accepts).
    #[test]
    fn the_floors_append_is_a_valid_peer_datagram() {
        let s = FloorSizes::typical_acquire();
        // Rebuild it as typical_acquire does and decode it.
        let mut data = [0u8; DATAGRAM_LEN_MAX];
        let n = LogCommand::Request {
            stamp: 1,
            session_id: 1,
            request_id: 1,
            attempt: 0,
            room_for_waiting: true,
            reply_to: SocketAddr::from(([127, 0, 0, 1], 1)),
            body: RequestBody::Acquire {
                resource: b"bench/uncontended/0",
                client: b"bench-client",
                wait_ms: 1,
                ttl_ms: 1,
            },
        }
        .encode(&mut data)
        .unwrap();
        let mut buf = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(
            &mut buf,
            PeerHeader {
                cluster_id: 1,
                from: 1,
            },
        );
        let entry = PeerEntry {
            term: 1,
            data: &data[..n],
        };
        w.push_append(0, 1, 0, 0, 0, (1, 0), std::iter::once(entry))
            .unwrap();
        let len = w.finish();
        assert_eq!(len + AUTH_TRAILER_LEN, s.append);
        let d = PeerDatagram::decode(&buf[..len]).unwrap();
        let records: Vec<_> = d.records().collect();
        assert_eq!(records.len(), 1);
        assert!(
            matches!(records[0].1, RaftMessage::Append { ref entries, .. } if entries.len() == 1)
        );
    }

    /// Every operation of the pattern is answered, for any shape of cluster, and each once:
    /// the later acknowledgements of an operation never answer the next one early (a stale
    /// answer would carry the wrong sequence number and be skipped, and then the next
    /// operation's own answer would be left over for the one after it).
    #[test]
    fn the_pattern_answers_every_operation_once() {
        for (followers, acks) in [(2, 1), (2, 2), (4, 2)] {
            let floor = ReplicationFloor::start(followers, acks, None).unwrap();
            for _ in 0..50 {
                assert!(
                    floor.round_trip().is_some(),
                    "{followers} followers, {acks} acks"
                );
            }
            // Nothing is left in the client's socket: one answer per operation.
            floor.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            assert!(floor.sock.recv_from(&mut buf).is_err());
            floor.sock.set_nonblocking(false).unwrap();
            assert_eq!(
                floor.label(),
                format!("replication floor ({acks} of {followers} acks)")
            );
        }
    }

    /// The disk floor gives its two rows, with every sync of every writer counted, and leaves
    /// no file behind.
    #[test]
    fn the_disk_floor_reports_one_writer_then_all_at_once() {
        let dir = std::env::temp_dir().join(format!("udplock-disk-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (rows, note) = disk_floor(&dir, 3, 5).unwrap();
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fdatasync 128 B (1 writer)",
                "fdatasync 128 B (3 writers at once)"
            ]
        );
        assert_eq!((rows[0].samples, rows[1].samples), (5, 15));
        assert!(
            note.contains(&*dir.canonicalize().unwrap().to_string_lossy()),
            "{note}"
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_datagram_shorter_than_a_sequence_number_has_none() {
        assert_eq!(seq_of(&[0]), None);
        assert_eq!(seq_of(&7u64.to_be_bytes()), Some(7));
    }
}
