//! Log compaction and snapshot transfer (Raft §7, thesis §5): the shell's `compact`, the
//! leader's InstallSnapshot chunks within `SNAPSHOT_CHUNKS_IN_FLIGHT_MAX`, the follower's one
//! partial transfer (bounded by the node's shared budget, dropped once it stalls), the state
//! machine's check of a complete snapshot and its installation (spec §8.5, "Receiving a
//! snapshot").
//!
//! # Log compaction and InstallSnapshot (Raft §7, thesis §5)
//!
//! Compaction is opt-in: a node whose shell never calls [`Raft::compact`] behaves exactly as
//! without it. Once the shell has applied the committed entries through some index and taken
//! a snapshot of its state machine there, it calls `compact(index, data)`: Raft drops those
//! entries, remembers the snapshot's last index and term (for the consistency check of the
//! next Append and for the election restriction) and keeps `data` to send.
//!
//! A leader that no longer holds the entries a follower needs (`next <= snapshot index`)
//! sends its snapshot instead, in InstallSnapshot chunks of at most `snapshot_chunk_max`
//! bytes, at most `SNAPSHOT_CHUNKS_IN_FLIGHT_MAX` unacknowledged at a time. The follower keeps
//! one partial transfer in memory, appends a chunk only at the offset where its buffer ends,
//! and answers with how many contiguous bytes it holds; the leader resumes from there on each
//! answer, or from the latest answer on a heartbeat round that brought no progress. Chunks
//! carry the heartbeat round and their answers count for the lease and CheckQuorum exactly
//! like AppendReplies (the follower treats a chunk as leader contact, like an Append). When
//! the whole snapshot has arrived the follower runs the state machine's check on it
//! ([`Raft::set_snapshot_check`]: the shard decodes it as it would restore it), and drops one
//! that fails, changing nothing else (spec §8.5); otherwise it installs it: it keeps the
//! entries after the snapshot if its log holds the snapshot's last entry with the same term,
//! else discards its log (Raft §7); its commit index moves to the snapshot's last index, and
//! the shell gets the snapshot from `poll_snapshot` — before any later committed entry, which
//! `poll_committed` holds back until then. The leader then continues with Appends after the snapshot. A
//! follower that has already committed through the snapshot's last index (a leader that
//! compacted less recently than the follower sends an older snapshot than the follower's
//! own) never installs it: it answers at once that it holds all of it, which counts as
//! contact like any chunk, and the leader goes on with Appends. If the
//! leader compacts again meanwhile, it starts over with the new snapshot (the follower drops
//! a partial transfer of another snapshot).
//!
//! Persistence: the shell persists the snapshot (meta and data), the hard state and the log
//! after the snapshot before it sends what an input produced, as for the log; a restarted
//! node is built with [`Raft::restore`] from them, and its commit index starts at the
//! snapshot's last index (the shell loads its state machine from the snapshot itself).

use std::fmt;
use std::sync::Arc;

use super::replication::Sending;
use super::shared::Reservation;
use super::{
    Membership, MembershipOf, Message, NodeId, PeerLogKind, Raft, ReplicaId, Role, SnapshotCheck,
    SnapshotMeta, SNAPSHOT_CHUNKS_IN_FLIGHT_MAX, SNAPSHOT_LEN_MAX, SNAPSHOT_RECEIVE_STALL_TIMEOUTS,
};
use crate::core::time::{Duration, Instant};

/// A [`SnapshotCheck`] in a `Raft` (which is `Debug`).
#[derive(Clone)]
pub(super) struct Check(pub(super) SnapshotCheck);

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotCheck")
    }
}

/// The leader's side of one snapshot transfer to one follower. Offsets are bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SnapshotSend {
    /// The snapshot these offsets refer to (0: none yet); another one restarts the transfer.
    pub(super) index: u64,
    /// Most bytes the follower has said it holds.
    pub(super) acked: u64,
    /// What its latest answer said (lower than `acked` after it restarted and lost its
    /// partial transfer, or for a reordered answer).
    pub(super) reported: u64,
    /// `acked` at the previous heartbeat round: no progress since then resumes the transfer
    /// from `reported`.
    pub(super) acked_at_round: u64,
    /// Offset of the next chunk to send.
    pub(super) sent: u64,
    /// `acked` when the transfer last went back to it: an answer without progress while
    /// later chunks are in flight means the follower dropped one out of order (a chunk was
    /// lost or overtaken), so the leader resends from there, once per position.
    pub(super) resent_from: Option<u64>,
}

/// A follower's partial snapshot transfer.
#[derive(Debug)]
pub(super) struct SnapshotReceive {
    pub(super) meta: SnapshotMeta,
    pub(super) total_len: u64,
    /// The first `buffer.len()` bytes of the snapshot; its capacity never exceeds
    /// `total_len`, which `reservation` holds of the node's budget.
    pub(super) buffer: Vec<u8>,
    /// When the buffer last grew (or the transfer started): see `Raft::snapshot_stall`.
    pub(super) progress_at: Instant,
    pub(super) reservation: Reservation,
}

impl Raft {
    /// The shell has a snapshot of its state machine through `index` (which it has applied:
    /// `poll_committed` returned it, so `index <= commit_index`). Raft drops the entries
    /// through `index` and keeps `data` to send to followers that need entries it no longer
    /// has (Raft §7). A no-op if `index` is not after the current snapshot. Panics if `index`
    /// is beyond what `poll_committed` returned (in particular beyond `commit_index`). The
    /// shell persists the snapshot before sending anything else, as for the log.
    pub fn compact(&mut self, index: u64, data: Arc<Vec<u8>>) {
        assert!(
            index <= self.commit_index && index <= self.returned_index,
            "compacting through {index}, beyond commit {} or applied {}",
            self.commit_index,
            self.returned_index
        );
        if index <= self.log.snapshot().index {
            return;
        }
        self.log.compact(index);
        self.snapshot_data = Some(data);
        assert!(self.log.snapshot().index == index);
        self.check_invariants();
    }

    /// A follower finished receiving a snapshot from its leader: the shell must replace its
    /// state machine with the data (the state after the entries through `meta.index`) before
    /// acting on any later `poll_committed` entry (which returns none until this is taken),
    /// and persist snapshot and log before sending, as for the log. Each installed snapshot
    /// is returned once; one installed before the previous was taken replaces it (it covers
    /// more).
    pub fn poll_snapshot(&mut self) -> Option<(SnapshotMeta, Arc<Vec<u8>>)> {
        self.snapshot_installed.take()
    }

    /// The state machine's check of a complete snapshot from a leader, run before it is
    /// installed: one it refuses is dropped (counted in [`Raft::faulty_drops`]) and changes
    /// nothing, so a faulty or forged snapshot never replaces the replica's state nor reaches
    /// its disk (spec §8.5, "Receiving a snapshot"). Without one, any snapshot is installed.
    pub fn set_snapshot_check(&mut self, check: SnapshotCheck) {
        self.snapshot_check = Some(Check(check));
    }

    /// Bytes the partial snapshot transfer in progress holds in memory (0 without one).
    pub fn snapshot_receive_bytes(&self) -> u64 {
        self.snapshot_receive
            .as_ref()
            .map_or(0, |r| r.buffer.capacity() as u64)
    }

    /// How long a partial snapshot transfer may go without growing before it is dropped
    /// ([`SNAPSHOT_RECEIVE_STALL_TIMEOUTS`] longest election timeouts).
    pub(super) fn snapshot_stall(&self) -> Duration {
        Duration::from_micros(
            self.config
                .election_timeout_max
                .as_micros()
                .saturating_mul(SNAPSHOT_RECEIVE_STALL_TIMEOUTS),
        )
    }

    /// Drops a partial snapshot transfer that has not grown for `snapshot_stall`, giving its
    /// bytes back to the node's budget (spec §8.5, "Receiving a snapshot").
    pub(super) fn drop_stalled_snapshot(&mut self, now: Instant) {
        let stall = self.snapshot_stall();
        if self
            .snapshot_receive
            .as_ref()
            .is_some_and(|r| now >= r.progress_at + stall)
        {
            let receive = self.snapshot_receive.take().expect("checked");
            peer_log!(
                self,
                now,
                SnapshotStalled,
                info,
                "raft {}: dropping a snapshot transfer through {} that has not grown for \
                 {stall:?} ({} of {} bytes)",
                self.config.id,
                receive.meta.index,
                receive.buffer.len(),
                receive.total_len
            );
        }
    }

    /// Leader: whether some follower is receiving the current snapshot. The shell holds off
    /// the next compaction meanwhile: a new snapshot would restart that transfer from its
    /// first byte, and under steady load a slow follower would then never catch up.
    pub fn sending_snapshot(&self) -> bool {
        let snapshot = self.log.snapshot().index;
        self.role == Role::Leader
            && snapshot > 0
            && self.progress.iter().any(|p| p.next <= snapshot)
    }

    /// Sends follower `position`, which needs entries compacted away, chunks of the current
    /// snapshot within the window (`SNAPSHOT_CHUNKS_IN_FLIGHT_MAX`), one chunk at most in
    /// answer to the follower (see `Sending`). A heartbeat always sends at least one chunk, and
    /// resumes from the follower's latest answer if the previous round brought no progress
    /// (lost chunks, or a follower that restarted and lost its partial transfer).
    pub(super) fn send_snapshot(&mut self, position: usize, why: Sending) {
        let heartbeat = why == Sending::Round;
        assert!(self.role == Role::Leader);
        let meta = self.log.snapshot();
        assert!(meta.index > 0 && self.progress[position].next <= meta.index);
        let data = Arc::clone(self.snapshot_data.as_ref().expect("a snapshot has data"));
        let total_len = data.len() as u64;
        let chunk_max = self.config.snapshot_chunk_max as u64;
        let window = chunk_max.saturating_mul(SNAPSHOT_CHUNKS_IN_FLIGHT_MAX);
        let progress = &mut self.progress[position];
        if progress.snapshot.index != meta.index {
            // A new transfer, or the leader compacted again since the last one started.
            progress.snapshot = SnapshotSend {
                index: meta.index,
                ..SnapshotSend::default()
            };
        }
        let transfer = &mut progress.snapshot;
        if heartbeat {
            if transfer.acked == transfer.acked_at_round {
                transfer.acked = transfer.reported;
                transfer.sent = transfer.reported;
                transfer.resent_from = Some(transfer.acked);
            }
            transfer.acked_at_round = transfer.acked;
        }
        let id = progress.id;
        let mut must_send = heartbeat;
        loop {
            let transfer = &mut self.progress[position].snapshot;
            assert!(transfer.acked <= transfer.sent && transfer.sent <= total_len);
            let window_open = transfer.sent < total_len && transfer.sent - transfer.acked < window;
            if !window_open && !must_send {
                return;
            }
            // Without room in the window, a heartbeat resends the first unacknowledged chunk.
            let offset = if window_open {
                transfer.sent
            } else {
                transfer.acked
            };
            let end = total_len.min(offset + chunk_max);
            if window_open {
                transfer.sent = end;
            }
            must_send = false;
            let msg = Message::InstallSnapshot {
                term: self.hard.term,
                last_index: meta.index,
                last_term: meta.term,
                offset,
                total_len,
                data: data[offset as usize..end as usize].to_vec(),
                round: self.round,
            };
            self.send(id, msg);
            if why == Sending::Answer {
                return;
            }
        }
    }

    /// A chunk of the leader's snapshot (Raft §7): the same term rules and leader contact as
    /// an Append; one partial transfer is kept; the complete snapshot is installed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_install_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
        round: u64,
    ) {
        if term < self.hard.term {
            // A deposed leader: tell it the newer term so it steps down. Round 0: this
            // answers no round of a leader of `self.hard.term` (see `answering_follower`).
            let reply = Message::InstallSnapshotReply {
                term: self.hard.term,
                last_index: meta.index,
                received: 0,
                round: 0,
                life: self.life,
                replica: self.hard.replica,
            };
            self.send(from, reply);
            return;
        }
        let well_formed = meta.index > 0
            && meta.term > 0
            && meta.term <= term
            && offset
                .checked_add(data.len() as u64)
                .is_some_and(|end| end <= total_len);
        if !well_formed {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed InstallSnapshot from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        if total_len > SNAPSHOT_LEN_MAX {
            peer_log!(
                self,
                now,
                SnapshotRefused,
                error,
                "raft {}: refusing a snapshot of {total_len} bytes from {from} (more than \
                 SNAPSHOT_LEN_MAX)",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        // As for an Append: a second leader of this term comes from a faulty or forged peer.
        let second_leader = term == self.hard.term
            && (self.role == Role::Leader || self.leader.is_some_and(|leader| leader != from));
        // A snapshot that disagrees with this node's own snapshot or with a committed entry
        // contradicts Raft's log matching: also faulty or forged. Terms never decrease along
        // a log, so an older snapshot (a leader that compacted less recently) has a term at
        // most this node's snapshot term, and a newer one at least (spec §8.5, "Receiving a
        // snapshot").
        let own = self.log.snapshot();
        let contradicts_own = match meta.index.cmp(&own.index) {
            std::cmp::Ordering::Equal => meta.term != own.term,
            std::cmp::Ordering::Less => meta.term > own.term,
            std::cmp::Ordering::Greater => meta.term < own.term,
        };
        let contradicts = contradicts_own
            || (meta.index <= self.commit_index
                && self.log.term_at(meta.index).is_some_and(|t| t != meta.term));
        if second_leader || contradicts {
            peer_log!(
                self,
                now,
                Contradicts,
                error,
                "raft {}: dropping an InstallSnapshot of term {term} from {from} that \
                 contradicts {} (faulty peer?)",
                self.config.id,
                if second_leader {
                    "the leader of this term"
                } else {
                    "this node's log"
                }
            );
            self.faulty_drops += 1;
            return;
        }
        if term > self.hard.term || self.role != Role::Follower {
            self.become_follower(now, term, Some(from));
        }
        self.leader = Some(from);
        self.leader_contact = now;
        self.reset_election_timer(now);
        // A chunk names no transfer target: a follower still receiving a snapshot is no
        // target, and for its vote, naming nobody is the safe reading.
        self.note_round(round, None);

        let mut reply = Message::InstallSnapshotReply {
            term: self.hard.term,
            last_index: meta.index,
            received: total_len,
            round,
            life: self.life,
            replica: self.hard.replica,
        };
        if meta.index <= self.commit_index {
            // Already committed here (and so stored or snapshotted): nothing to install, and
            // the leader may count these entries as matched.
            self.snapshot_receive = None;
            self.send(from, reply);
            return;
        }
        let same_transfer = self
            .snapshot_receive
            .as_ref()
            .is_some_and(|r| r.meta == meta && r.total_len == total_len);
        if !same_transfer {
            // The transfer it replaces gives its bytes back first.
            self.snapshot_receive = None;
            let Some(reservation) = self.shared.snapshots.reserve(total_len) else {
                // Spec §8.5: the node's transfers already hold its budget. Refused: the
                // leader tries again from the start at its next round, by when another
                // transfer may have ended (or stalled and been dropped).
                peer_log!(
                    self,
                    now,
                    SnapshotNoRoom,
                    warn,
                    "raft {}: no room for a snapshot of {total_len} bytes from {from}: the \
                     node's transfers hold {} of SNAPSHOT_RECEIVE_BYTES_MAX {}; it waits",
                    self.config.id,
                    self.shared.snapshots.reserved(),
                    self.shared.snapshots.bytes_max()
                );
                if let Message::InstallSnapshotReply { received, .. } = &mut reply {
                    *received = 0;
                }
                self.send(from, reply);
                return;
            };
            assert!(reservation.bytes() == total_len);
            self.snapshot_receive = Some(SnapshotReceive {
                meta,
                total_len,
                buffer: Vec::new(),
                progress_at: now,
                reservation,
            });
        }
        let receive = self.snapshot_receive.as_mut().expect("set above");
        if offset == receive.buffer.len() as u64 && !data.is_empty() {
            // Grow by doubling, but never beyond `total_len`: what the reservation covers.
            let needed = receive.buffer.len() + data.len();
            if needed > receive.buffer.capacity() {
                let target = needed
                    .max(receive.buffer.capacity().saturating_mul(2))
                    .min(total_len as usize);
                receive.buffer.reserve_exact(target - receive.buffer.len());
            }
            receive.buffer.extend_from_slice(&data);
            receive.progress_at = now;
        }
        assert!(receive.buffer.len() as u64 <= receive.reservation.bytes());
        let mut received = receive.buffer.len() as u64;
        assert!(received <= total_len);
        if received == total_len {
            let receive = self.snapshot_receive.take().expect("set above");
            let refused = match &self.snapshot_check {
                Some(Check(check)) => check(&receive.buffer).err(),
                None => None,
            };
            match refused {
                None => self.install_snapshot(receive.meta, Arc::new(receive.buffer)),
                Some(error) => {
                    // Spec §8.5: checked before it replaces anything. The follower keeps its
                    // state and holds none of this snapshot now; a leader that sent it starts
                    // over at its next round (and a faulty one is refused again).
                    peer_log!(
                        self,
                        now,
                        SnapshotRefused,
                        error,
                        "raft {}: dropping a snapshot through {} from {from} that does not \
                         decode ({error}; faulty peer?)",
                        self.config.id,
                        meta.index
                    );
                    self.faulty_drops += 1;
                    received = 0;
                }
            }
        }
        if let Message::InstallSnapshotReply { received: r, .. } = &mut reply {
            *r = received;
        }
        self.send(from, reply);
    }

    /// Installs a complete snapshot from the leader, which covers more than this node has
    /// committed.
    fn install_snapshot(&mut self, meta: SnapshotMeta, data: Arc<Vec<u8>>) {
        assert!(self.role == Role::Follower);
        assert!(meta.index > self.commit_index && meta.term <= self.hard.term);
        let membership = self
            .snapshot_membership
            .as_ref()
            .and_then(|MembershipOf(of)| of(&data));
        let fallback = Membership::of_voters(&self.config.voters);
        let kept = self.log.install(meta, membership, &fallback);
        if !kept {
            // The stored log disagrees with the snapshot at its index (or ends before it)
            // until the snapshot is stored: it still holds what this node had committed
            // (which matches every leader's log, Leader Completeness), no more is known.
            self.durable = self.durable.min(self.commit_index);
        }
        // Kept: the stored log holds the entries through `durable` that this log holds
        // after the snapshot, and the snapshot stands for committed entries it agreed with.
        log::info!(
            "raft {}: installed a snapshot through {} of term {} ({} bytes, log suffix {})",
            self.config.id,
            meta.index,
            meta.term,
            data.len(),
            if kept { "kept" } else { "discarded" }
        );
        self.commit_index = meta.index;
        self.returned_index = meta.index;
        self.snapshot_data = Some(Arc::clone(&data));
        self.snapshot_installed = Some((meta, data));
        assert!(self.log.last_index() >= self.commit_index);
    }

    /// The follower's answer to a chunk: counts for the lease and CheckQuorum like an
    /// AppendReply of the same round; moves the transfer on, and to Appends once complete.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_install_snapshot_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        last_index: u64,
        received: u64,
        (round, life, replica): (u64, u64, ReplicaId),
    ) {
        let Some(position) = self.answering_follower(now, from, term, round) else {
            return;
        };
        let meta = self.log.snapshot();
        let total_len = self
            .snapshot_data
            .as_ref()
            .map_or(0, |data| data.len() as u64);
        if round > self.round || last_index > self.log.last_index() {
            peer_log!(
                self,
                now,
                Malformed,
                warn,
                "raft {}: dropping a malformed InstallSnapshotReply from {from}",
                self.config.id
            );
            self.faulty_drops += 1;
            return;
        }
        if !self.current_life(now, position, life, round, replica) {
            return;
        }
        let progress = &mut self.progress[position];
        progress.heard_at = progress.heard_at.max(now);
        progress.acked_round = progress.acked_round.max(round);
        let mut matched_more = false;
        let current = last_index == meta.index
            && progress.snapshot.index == meta.index
            && progress.next <= meta.index
            && received <= total_len;
        if current {
            let transfer = &mut progress.snapshot;
            transfer.reported = received;
            if received <= transfer.acked
                && transfer.sent > transfer.acked
                && transfer.resent_from != Some(transfer.acked)
            {
                // Go back to the first byte the follower lacks (see `resent_from`).
                transfer.sent = transfer.acked;
                transfer.resent_from = Some(transfer.acked);
            }
            transfer.acked = transfer.acked.max(received);
            transfer.sent = transfer.sent.max(transfer.acked);
            if received == total_len {
                // The follower holds (or had already committed) everything the snapshot
                // covers, and those entries match the leader's: continue after it.
                progress.snapshot = SnapshotSend::default();
                if meta.index > progress.matched {
                    progress.matched = meta.index;
                    matched_more = true;
                }
                progress.next = progress.next.max(meta.index + 1);
                progress.probing = false;
                progress.probe_sent = false;
            }
        }
        let last = self.log.last_index();
        let progress = &self.progress[position];
        assert!(progress.matched < progress.next && progress.next <= last + 1);
        self.refresh_after_answer(now, matched_more);
        let mut timeout_now_to = None;
        if matched_more {
            timeout_now_to = self.send_timeout_now_if_caught_up();
        }
        // At most one message back to the follower (see `Sending`).
        if timeout_now_to != Some(from) {
            self.send_append(position, Sending::Answer);
        }
    }
}
