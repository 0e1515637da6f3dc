//! The node's event loop: the socket, the clock, the disk and the key file around the node's
//! core (see the module docs of [`super`] for what it does in which order). Everything here
//! is IO; every protocol decision is the core's.

use std::collections::BTreeMap;
use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use super::horizon::HorizonFile;
use super::keys::{KeyFileCheck, KeyFileWatch, KeySet};
use super::log_keys;
use super::socket::{
    recv_error_is_transient, wall_clock_micros, ReadTimer, RecvBatch, SendBatch, RECV_BATCH_MAX,
};
use super::storage::{DataDir, Wal};
use super::writer::{Job, Writer};
use crate::clock::BootInstant;
use crate::core::node::settings::PeerSettingsView;
use crate::core::node::{Node, NodeStats, ShardWrite};
use crate::core::raft::{Entry, NodeId, SnapshotMeta};
use crate::core::replica::ShardStats;
use crate::core::swim::{self, MemberInfo};
use crate::core::time::Instant;

/// Datagrams handled between two flushes at most: bounds how long the first one's answer
/// waits behind the others.
const DRAIN_MAX: usize = 64;

/// How often the loop publishes its shards' state for
/// [`ClusterNode::shard_stats`](super::ClusterNode::shard_stats).
const STATS_PERIOD: crate::core::time::Duration = crate::core::time::Duration::from_millis(5);

/// The loop's state: the node's core and what it needs from the machine.
pub(super) struct ClusterLoop {
    pub(super) node: Node,
    pub(super) socket: UdpSocket,
    /// The key file, checked for changes (`None`: keys fixed at start).
    pub(super) key_watch: Option<KeyFileWatch>,
    /// The client key file (spec §7.2.6), checked for changes (`None`: none, or fixed).
    pub(super) client_key_watch: Option<ClientKeyWatch>,
    /// The keys in force, for [`ClusterNode::keys`](super::ClusterNode::keys).
    pub(super) keys: Arc<Mutex<KeySet>>,
    /// The node's write-ahead log (`os`; `None` under `memory`; the writer's under `fsync`).
    pub(super) wal: Option<Wal<crate::store::FsDisk>>,
    /// The data directory (`fsync`, `os`), locked while the loop runs.
    pub(super) dir: Option<Arc<DataDir>>,
    /// The writer thread that stores and syncs (`fsync`): see [`super::writer`].
    pub(super) writer: Option<Writer>,
    /// Writes taken from the core, for the writer.
    pub(super) batch: Vec<Job>,
    /// The lease horizon file of a single node in memory mode ([`horizon`](super::horizon)).
    pub(super) horizon: Option<HorizonFile>,
    /// The last write stored (its `seq`).
    pub(super) stored: u64,
    /// The last write reported stored to the core ([`Node::stored`]).
    pub(super) reported: u64,
    pub(super) stats: Arc<NodeStats>,
    pub(super) shard_stats: Arc<Mutex<Vec<ShardStats>>>,
    pub(super) peer_settings: Arc<Mutex<BTreeMap<NodeId, PeerSettingsView>>>,
    /// The members SWIM knows (spec §8.12), for
    /// [`ClusterNode::members`](super::ClusterNode::members).
    pub(super) members: Arc<Mutex<Vec<MemberInfo>>>,
    /// Per other node, the limits its live load report says reached (spec §8.14), for
    /// [`ClusterNode::peer_loads`](super::ClusterNode::peer_loads) and the metrics.
    pub(super) peer_loads: Arc<Mutex<Vec<(NodeId, u16)>>>,
    pub(super) stats_published: Instant,
    /// [`Node::shard_stats_version`] of the shard stats last published (`None`: never):
    /// unchanged, the copy is skipped.
    pub(super) shard_stats_version: Option<u64>,
    /// An input came since the views were last published: the loop wakes to publish them
    /// within [`STATS_PERIOD`] of the last input even if nothing else is due (the metrics
    /// endpoint reads them).
    pub(super) stats_dirty: bool,
    /// On the suspend-aware clock (`crate::clock`): Raft leases and lock leases must count
    /// while the machine sleeps.
    pub(super) epoch: BootInstant,
    pub(super) read_timer: ReadTimer,
    /// The datagrams of the flush under way.
    pub(super) out: SendBatch,
    /// Whether the loop takes several datagrams per wake-up at all: not for a single node,
    /// which has nothing to batch (it commits each command inside the input that brings it),
    /// so handling more before its flush would only delay the answer already made.
    pub(super) drains: bool,
}

impl ClusterLoop {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Serves until `stop`; `graceful` (a `GRACEFUL_*` value) asks it to hand its shards
    /// over first, announcing a leave or not.
    pub(super) fn run(mut self, stop: &AtomicBool, graceful: &AtomicU8) -> Result<(), String> {
        // Room for the largest datagram of either kind, plus one byte to see oversized ones.
        // Made here, on the loop's thread: its headers hold pointers (not `Send`).
        let mut batch = RecvBatch::default();
        // The time of the turn: the clock is read once when the receive returns (and once
        // more before the flush if datagrams came: `receive_batches`), and that reading
        // serves everything the turn does (timers, flush, views, key files) but the read
        // timeout's arming, which reads it again after the flush.
        let mut now = self.now();
        // Datagrams received since the last flush (the last turn's, if a stop ends the loop
        // after its receive): a writer's wake-up among them says something was stored.
        let mut unflushed = false;
        while !stop.load(Ordering::Acquire) {
            NodeStats::bump(&self.stats.loop_turns);
            match graceful.load(Ordering::Relaxed) {
                super::GRACEFUL_STOP => self.node.start_stopping(now),
                super::GRACEFUL_LEAVE => self.node.start_leaving(now),
                _ => {}
            }
            if self.node.poll_timeout() <= now {
                self.node.set_wall_clock(now, wall_clock_micros());
                self.node.handle_timeout(now);
            }
            // One flush per turn: for the datagrams received and the timers handled above.
            self.flush()?;
            unflushed = false;
            self.publish_stats(now);
            self.record_members(now);
            self.check_key_file(now);
            self.check_client_key_file(now);
            let next = self.node.poll_timeout();
            let next = self
                .key_watch
                .as_ref()
                .map_or(next, |w| next.min(w.next_check()));
            // Wakes at least once per LOOP_TURN_INTERVAL_MAX_MS (the health endpoint watches
            // the turns), and to publish views an input changed.
            let turn_max =
                crate::core::time::Duration::from_millis(super::metrics::LOOP_TURN_INTERVAL_MAX_MS);
            let mut next = next.min(now + turn_max);
            if self.stats_dirty {
                // Within STATS_PERIOD of the last input when nothing else comes (while inputs
                // come, their turns publish every STATS_PERIOD): a deadline that slides with
                // the inputs keeps the read timeout set (`ReadTimer`), a fixed one every
                // STATS_PERIOD would set it again as it nears.
                next = next.min(now + STATS_PERIOD);
            }
            // Read again: the read timeout is relative to the receive's start, after the
            // flush, so a deadline is not passed late by the flush's time.
            self.read_timer.arm(&self.socket, Some(next), self.now());
            // One datagram per flush for a single node (see `drains`).
            let limit = if self.drains { DRAIN_MAX } else { 1 };
            let came;
            (now, came) = self.receive_batches(&mut batch, limit);
            unflushed |= came;
        }
        if unflushed {
            // As the turn would have: what the last inputs produced is stored and sent.
            self.flush()?;
        }
        Ok(())
    }

    /// Waits for datagrams (until the read timeout) and hands the core every one queued, up
    /// to `limit` ([`DRAIN_MAX`], or 1 for a single node), before the turn's one flush: under
    /// load many proposals then travel in one Append and many answers in one PEER datagram
    /// (batching). One `recvmmsg` takes up to [`RECV_BATCH_MAX`] (`socket::RecvBatch`): it
    /// blocks for the first and takes the others already queued, so a wake-up for a lone
    /// datagram costs one system call, and a full batch is followed by another that does
    /// not wait.
    ///
    /// Returns the time the turn goes on at, and whether any datagram came (an empty one
    /// too: the writer's wake-up, for the flush to hear what was stored). The
    /// clock is read once per receive that returns (every datagram it took arrived before
    /// that reading, which is the time each is handled at: as if the loop had paused before
    /// the later ones, which the core must bear anyway), and once more after the last
    /// datagram is handled: the time the replies' latency runs to ([`Node::set_time`], so it
    /// includes the work of the turn's inputs), and the rest of the turn's.
    fn receive_batches(&mut self, batch: &mut RecvBatch, limit: usize) -> (Instant, bool) {
        let mut handled = 0;
        let mut taken = false;
        let mut wait = true;
        // Read when the first receive (which waits) returns.
        let mut now = Instant::ZERO;
        assert!(limit > 0, "a turn receives");
        while handled < limit {
            let asked = (limit - handled).min(RECV_BATCH_MAX);
            let count = match batch.recv(&self.socket, wait, asked) {
                Ok(count) => count,
                Err(e) if recv_error_is_transient(&e) => 0,
                Err(e) => {
                    log::error!("udplock node: recv failed: {e}; retrying");
                    std::thread::sleep(StdDuration::from_millis(1));
                    0
                }
            };
            if wait || count > 0 {
                now = self.now();
            }
            for i in 0..count {
                // An empty datagram carries nothing: the writer's wake-up (or a stop's),
                // after which the turn's flush hears what was stored.
                let (datagram, from) = batch.get(i);
                let Some(from) = from.filter(|_| !datagram.is_empty()) else {
                    continue;
                };
                NodeStats::bump(&self.stats.datagrams);
                self.node.handle_datagram(now, from, datagram);
                self.stats_dirty = true;
                taken = true;
            }
            handled += count;
            if count < asked {
                break;
            }
            wait = false;
        }
        if taken {
            // The replies' latency runs to here (`NodeStats::latency`).
            now = self.now();
            self.node.set_time(now);
        }
        (now, handled > 0)
    }

    /// Stores every write the core hands out (or hands them to the writer thread) and
    /// reports what is stored ([`Node::stored`]: a leader counts its own entries toward a
    /// majority only then, Raft thesis §10.2.1), then sends its datagrams, each once the
    /// writes it depends on are stored (the writer sends those that must wait: a leader's
    /// Appends need not wait for its own new entries, a follower's acknowledgement must). A
    /// write that fails stops the node before anything that depends on it leaves
    /// (fail-stop): Raft's state in memory is already ahead of the disk, so going on could
    /// acknowledge what a crash would lose; stopping is a crash the cluster already survives.
    fn flush(&mut self) -> Result<(), String> {
        loop {
            let mut handed = self.stored;
            while let Some(write) = self.node.poll_persist() {
                if self.writer.is_some() {
                    self.batch.push(Job::Write(write));
                    continue;
                }
                if let Err(e) = self.store(&write) {
                    let why = format!(
                        "shard {}: cannot persist its state: {e}; stopping",
                        write.shard
                    );
                    log::error!("udplock node: {why}");
                    return Err(why);
                }
                handed = write.seq;
            }
            if let Some(writer) = &self.writer {
                writer.submit(&mut self.batch);
                let holding_back = writer.take_news().inspect_err(|why| {
                    log::error!("udplock node: {why}; stopping");
                })?;
                self.stored = writer.stored();
                // As below, on the writer's log: a relocation is the writer's job, after
                // every write handed to it so far.
                let batch = &mut self.batch;
                compact_or_relocate(&mut self.node, &holding_back, |shard, snapshot, log| {
                    batch.push(Job::Relocate {
                        shard,
                        snapshot,
                        log: log.to_vec(),
                    })
                });
                writer.submit(&mut self.batch);
            }
            // Group commit: everything stored above in one write and (under `fsync`) one sync.
            if let (Some(dir), Some(wal)) = (&self.dir, self.wal.as_mut()) {
                if let Err(e) = dir.commit(wal) {
                    let why = format!("cannot write the write-ahead log: {e}; stopping");
                    log::error!("udplock node: {why}");
                    return Err(why);
                }
                let holding_back = wal.holding_back();
                compact_or_relocate(&mut self.node, &holding_back, |shard, snapshot, log| {
                    wal.relocate(shard, snapshot, log)
                });
            }
            if self.writer.is_none() {
                self.stored = handed;
            }
            if self.stored == self.reported {
                break;
            }
            // The report may commit, apply and answer, and hand out more writes.
            self.reported = self.stored;
            let now = self.now();
            self.node.stored(now, self.stored);
        }
        // Gathered and sent together: one `sendmmsg` for a leader's APPENDs to its
        // followers and the answers of one flush, instead of one `sendto` each.
        while let Some(t) = self.node.poll_transmit(self.out.next_buf()) {
            let send = match &self.writer {
                // Held by the writer until the writes it depends on are stored.
                Some(writer) => {
                    writer.send_or_hold(t.after, t.to, &self.out.next_buf()[..t.len], t.to_peer)
                }
                None => {
                    // Stored inline: every write is stored before anything is sent.
                    assert!(
                        t.after <= self.stored,
                        "a datagram before the write it needs"
                    );
                    true
                }
            };
            if !send {
                continue;
            }
            self.out.push(t.to, t.len, t.to_peer);
            if self.out.is_full() {
                self.send_batch();
            }
        }
        self.send_batch();
        while let Some(event) = self.node.poll_member_event() {
            log_member_event(self.node.node_id(), event);
        }
        Ok(())
    }

    /// Sends the datagrams the flush has gathered (one system call for many).
    fn send_batch(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.out.send(&self.socket).count_in(&self.stats);
    }

    /// One write, in the order [`ShardWrite`] gives.
    fn store(&mut self, write: &ShardWrite) -> io::Result<()> {
        if let (Some(dir), Some(wal)) = (&self.dir, self.wal.as_mut()) {
            dir.apply(wal, write)?;
        }
        if let (Some(wall_us), Some(file)) = (write.lease_horizon_us, self.horizon.as_mut()) {
            file.write(wall_us)?;
        }
        Ok(())
    }

    /// About every [`keys::KEY_FILE_CHECK_MS`](super::keys::KEY_FILE_CHECK_MS): applies a
    /// changed key file, or keeps the keys in force and says why the new file is refused.
    fn check_key_file(&mut self, now: Instant) {
        let Some(watch) = self.key_watch.as_mut() else {
            return;
        };
        match watch.check(now) {
            KeyFileCheck::Unchanged => {}
            KeyFileCheck::Refused(e) => {
                NodeStats::bump(&self.stats.key_file_errors);
                log::error!(
                    "udplock node {}: the key file {} changed but is refused, the keys in \
                     force stay ({}): {e}",
                    self.node.node_id(),
                    watch.path().display(),
                    self.node.keys().describe()
                );
            }
            KeyFileCheck::Changed(keys) => {
                let from = format!(" reloaded from {}", watch.path().display());
                log_keys(self.node.node_id(), &keys, &from);
                if let Ok(mut shared) = self.keys.lock() {
                    *shared = keys.clone();
                }
                self.node.set_keys(keys);
                NodeStats::bump(&self.stats.key_reloads);
            }
        }
    }

    /// About every [`KEY_FILE_CHECK_MS`](super::keys::KEY_FILE_CHECK_MS): applies a changed
    /// client key file (counted in `key_reloads`), or keeps the keys in force and says why
    /// the new one is refused (counted in `key_file_errors`, logged once per content).
    fn check_client_key_file(&mut self, now: Instant) {
        let Some(watch) = self.client_key_watch.as_mut() else {
            return;
        };
        if now < watch.next_check {
            return;
        }
        watch.next_check =
            now + crate::core::time::Duration::from_millis(super::keys::KEY_FILE_CHECK_MS);
        match crate::client_keys::ClientKeyFile::read_with_text(&watch.path) {
            Ok((_, text)) if text == watch.text => {}
            Ok((file, text)) => {
                watch.text = text;
                let ids: Vec<String> = file.key_ids().map(|id| format!("{id:08x}")).collect();
                log::info!(
                    target: super::keys::LOG_TARGET,
                    "udplock node {}: client keys reloaded from {}: {}",
                    self.node.node_id(),
                    watch.path.display(),
                    ids.join(",")
                );
                self.node.set_client_keys(Arc::new(file));
                NodeStats::bump(&self.stats.key_reloads);
            }
            Err(e) => {
                // The error as the text: reported once, not every check.
                let marker = format!("\u{0}{e}");
                if marker != watch.text {
                    watch.text = marker;
                    NodeStats::bump(&self.stats.key_file_errors);
                    log::error!(
                        "udplock node {}: the client key file changed but is refused, the \
                         keys in force stay: {e}",
                        self.node.node_id()
                    );
                }
            }
        }
    }

    /// The members file of a joined node's data directory (`storage`, "members"), when its
    /// core hands out a new view. A hint: a failed write is logged and the node goes on.
    fn record_members(&mut self, now: Instant) {
        let Some(members) = self.node.poll_members_record(now) else {
            return;
        };
        if let Some(dir) = &self.dir {
            if let Err(e) = dir.record_members(&members) {
                log::warn!(
                    "udplock node {}: could not record the members in {}: {e}",
                    self.node.node_id(),
                    dir.path().display()
                );
            }
        }
    }

    fn publish_stats(&mut self, now: Instant) {
        if now < self.stats_published + STATS_PERIOD {
            return;
        }
        self.stats_published = now;
        self.stats_dirty = false;
        let version = self.node.shard_stats_version();
        if self.shard_stats_version != Some(version) {
            if let Ok(mut stats) = self.shard_stats.lock() {
                *stats = self.node.shard_stats();
                self.shard_stats_version = Some(version);
            }
        }
        if let Ok(mut views) = self.peer_settings.lock() {
            views.clone_from(self.node.peer_settings());
        }
        if let Ok(mut members) = self.members.lock() {
            *members = self.node.members();
        }
        if let Ok(mut loads) = self.peer_loads.lock() {
            *loads = self.node.peer_loads(now);
        }
    }
}

/// The shards whose live entries hold the write-ahead log's oldest segment back
/// (`store::Wal::holding_back`): each is snapshotted, which moves them into the current
/// segment (its write is stored at the next turn); one that cannot be (nothing applied since
/// its snapshot) has its live entries written again through `relocate` (its snapshot meta
/// and log as the core holds them).
fn compact_or_relocate(
    node: &mut Node,
    shards: &[u32],
    mut relocate: impl FnMut(u32, SnapshotMeta, &[Entry]),
) {
    for &shard in shards {
        if !node.compact(shard) {
            if let Some(raft) = node.replica(shard).map(|r| r.raft()) {
                relocate(shard, raft.snapshot_meta(), raft.log());
            }
        }
    }
}

/// One line per membership event (spec §8.12): news of others at `info`, a death or a
/// suspicion at `warn` (an operator looks at those). All under [`super::MEMBERS_LOG_TARGET`],
/// which the `udplock` command logs at `info` by default: members come and go rarely, and an
/// operator replacing a machine waits for the line saying the new one is alive.
fn log_member_event(me: NodeId, event: swim::Event) {
    use swim::Event::*;
    match event {
        Joined { id, addr } => {
            log::info!(target: super::MEMBERS_LOG_TARGET, "udplock node {me}: node {id} at {addr} is alive")
        }
        Alive { id, incarnation } => {
            log::info!(target: super::MEMBERS_LOG_TARGET,
                "udplock node {me}: node {id} is alive again (incarnation {incarnation}: it refuted the suspicion, or restarted)"
            )
        }
        Suspect { id, incarnation } => {
            log::warn!(target: super::MEMBERS_LOG_TARGET, "udplock node {me}: node {id} is suspected (incarnation {incarnation})")
        }
        Dead { id } => {
            log::warn!(target: super::MEMBERS_LOG_TARGET, "udplock node {me}: node {id} is dead (SWIM)")
        }
        Left { id } => {
            log::info!(target: super::MEMBERS_LOG_TARGET, "udplock node {me}: node {id} left")
        }
        Forgotten { id } => {
            log::info!(target: super::MEMBERS_LOG_TARGET, "udplock node {me}: node {id}, dead or gone, is forgotten (SWIM)")
        }
        Refuted { incarnation } => log::warn!(target: super::MEMBERS_LOG_TARGET,
            "udplock node {me}: others suspected this node; refuted (incarnation {incarnation})"
        ),
    }
}

/// The client key file as the loop watches it (spec §7.2.6).
#[derive(Debug)]
pub(super) struct ClientKeyWatch {
    pub(super) path: std::path::PathBuf,
    /// The text last read (or the error last reported): a change is a different text.
    pub(super) text: String,
    pub(super) next_check: Instant,
}
