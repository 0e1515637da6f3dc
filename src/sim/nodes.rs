//! A simulated node: the node core a real node runs, its disk, its clock, its incarnation;
//! starting it (from what its disk holds, as a real start does), crashing it, resuming it
//! after a pause, and the shell's work after every call into it (store, then send).

use super::*;
use crate::cluster::storage::{self, DataDir, Identity};
use crate::core::node::{ShardWrite, Transmit, JOIN_SEEDS_MAX};

/// One node of the simulated cluster, across its crashes and restarts.
pub(super) struct SimNode {
    pub(super) id: NodeId,
    /// The node's core while it runs: the code a real node runs, fed bytes.
    pub(super) node: Option<Node>,
    /// Its counters (this incarnation's).
    pub(super) stats: Arc<NodeStats>,
    /// A static voter of every shard (see [`SimNode::holds_replicas`]).
    pub(super) voter: bool,
    /// A node of a joined cluster (spec §8.1): it holds the shards it has state of.
    pub(super) joined: bool,
    /// Its data directory: the shards' files and recovery marks, written by the real
    /// storage code (see the module docs).
    pub(super) disk: SimDisk,
    /// Its write-ahead log, open while the node runs (`None` under `memory`).
    pub(super) wal: Option<Wal<SimDisk>>,
    /// The shards of the cluster.
    pub(super) shards: u32,
    /// Durability `os`: its stores do not sync; the kernel writes back at random moments.
    pub(super) os: bool,
    /// The data directory on `disk`, open while the node runs (`None` under `memory`).
    pub(super) dir: Option<DataDir<SimDisk>>,
    /// The machine's boot id: a power loss starts another boot.
    pub(super) boot: u64,
    /// This node keeps no state (durability `memory`): every restart loses it.
    pub(super) memory: bool,
    /// Snapshot cadence `(every, keep)` in random runs: each node its own, as real nodes
    /// compact independently (thesis §5), so a follower's snapshot may be newer than its
    /// leader's.
    pub(super) compaction: (u64, u64),
    /// Its command line has `--new-cluster` (kept in a unit file for every start, or not).
    pub(super) new_cluster: bool,
    /// Its own values of the settings a leader logs (spec §8.8), which differ between nodes
    /// and may change at a restart (a rolling change); every replica must apply each command
    /// with the logged ones.
    pub(super) settings: replica::LoggedSettings,
    pub(super) clock: Clock,
    pub(super) paused_until: Option<Instant>,
    /// When the current pause began.
    pub(super) paused_since: Option<Instant>,
    pub(super) timer_generation: u64,
    /// How often this node crashed (or stopped).
    pub(super) crashes: u64,
    /// Entries this incarnation applied, per shard (the replica's applied index, as last
    /// observed).
    pub(super) applied: Vec<u64>,
    /// Per shard, whether this incarnation held a replica of it as of the last call (a
    /// joined node's come and go: `placement.rs` counts them).
    pub(super) held: Vec<bool>,
    /// Per shard, the term this incarnation's replica was last seen leading.
    pub(super) was_leader_in: Vec<Option<u64>>,
    /// Per shard, the latest Append or snapshot chunk this node accepted from a leader:
    /// (term, leader, true time). Kept across crashes: it records what the node received.
    pub(super) heard_leader: Vec<Option<(u64, NodeId, Instant)>>,
    /// Junk snapshots (valid framing, garbage bytes, as if from its leader: a faulty peer, or
    /// a forgery on a cluster without a key) delivered to this incarnation, to any shard:
    /// each may be dropped as faulty, and must change nothing else (issue 8).
    pub(super) junk_snapshots: u64,
    /// Unauthenticated junk datagrams sent to this incarnation of a node that has a key: each
    /// must be dropped by the authentication checks (spec §8.11) and counted as such.
    pub(super) junk_unauthenticated: u64,
    /// The last write of this incarnation's core that was stored (its `seq`).
    pub(super) stored_seq: u64,
    /// The last write this incarnation's core handed out (its `seq`), and the last one it
    /// was told is stored (`Node::stored`).
    pub(super) handed_seq: u64,
    pub(super) reported_seq: u64,
    /// Writes handed out and not yet stored (a disk node stores them a moment later, in one
    /// [`Event::Store`]: see `disk.rs`); lost if it crashes first.
    pub(super) unstored: Vec<ShardWrite>,
    /// Datagrams handed out that wait for their writes (`Transmit::after`), in order; lost
    /// if it crashes first.
    pub(super) waiting: Vec<(Transmit, Vec<u8>)>,
    /// Numbers this incarnation's [`Event::Store`]s: one of an earlier life, or one already
    /// handled, does nothing.
    pub(super) store_generation: u64,
    /// An [`Event::Store`] of this generation is scheduled.
    pub(super) store_scheduled: bool,
    /// The shards its replicas lead (in some term), as of the last call into it.
    pub(super) leading: Vec<usize>,
}

impl SimNode {
    /// Its replica of `shard`, while it runs.
    pub(crate) fn replica(&self, shard: usize) -> Option<&Replica> {
        self.node.as_ref().and_then(|n| n.replica(shard as u32))
    }

    /// It is a static voter of every shard: a static cluster's node, or the node that
    /// bootstrapped a joined one (the others hold the shards a leader added them to, see
    /// [`SimConfig::joined`]).
    pub(super) fn holds_replicas(&self) -> bool {
        self.voter
    }

    /// Every shard replica runs with the state it persisted (none rejoins by spec §8.5).
    pub(super) fn whole(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| n.replicas().all(|(_, s)| !s.raft().rejoining()))
    }

    /// Opens its data directory and the shards' files and decides how each replica starts,
    /// through the code a real node's start runs (`ClusterNode::start_with`:
    /// [`storage::open_shards`], then [`storage::settle_start`]).
    pub(super) fn open_stores(
        &mut self,
        identity: &Identity,
    ) -> std::io::Result<Vec<Option<restart::Start>>> {
        self.disk.restart();
        self.wal = None;
        self.dir = None;
        let mut dir = match self.memory {
            true => None,
            false => Some(DataDir::open_on(
                self.disk.clone(),
                std::path::Path::new(&format!("(node {}'s simulated disk)", self.id)),
                None,
                identity,
                !self.os,
                Some(&self.boot.to_string()),
            )?),
        };
        if let Some(d) = dir.as_mut() {
            // Tiny segments: every run rolls the log over and retires segments.
            d.set_segment_bytes(super::disk::SIM_SEGMENT_BYTES);
        }
        let (starts, mut wal) =
            storage::open_shards(dir.as_ref(), self.shards, self.new_cluster, self.joined)?;
        if let (Some(d), Some(wal)) = (dir.as_mut(), wal.as_mut()) {
            storage::settle_start(d, identity, &starts, wal)?;
        }
        self.wal = wal;
        self.dir = dir;
        Ok(starts)
    }

    /// Some shard of it is without state: its node keeps none, or a shard's storage is
    /// marked as recovering.
    pub(super) fn stateless(&self) -> bool {
        self.memory || (0..self.shards).any(|s| store::shard_mark(&self.disk, s).is_some())
    }
}

impl Sim {
    pub(super) fn start_node(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let seed = self.rng.gen();
        let mut config = cluster_config(&self.config, &self.shard_config, id);
        let now = self.now;
        let overload = overload_seed(&self.config);
        let random = self.config.scenario.is_none();
        // What the node's data directory records (what `ClusterConfig::identity` gives a
        // real node).
        let identity = match &config.joined {
            // As `ClusterConfig::identity` records a joined node's.
            Some(j) => Identity {
                membership: config.membership(),
                membership_id: udplock_protocol::shard_hash(config.membership().as_bytes()).max(1),
                node: id,
                joined: Some(j.cluster_id),
            },
            None => Identity {
                membership: format!(
                    "{} simulated nodes/{}",
                    self.nodes.len(),
                    self.config.shards
                ),
                membership_id: self.cluster_id,
                node: id,
                joined: None,
            },
        };
        let n = self.node(id);
        config.table.ttl_default_ms = n.settings.ttl_default_ms;
        config.table.retry_after_ms = n.settings.retry_after_ms;
        config.table.startup_grace_ms = n.settings.startup_grace_ms;
        if overload {
            // Every node answers with the long hint of those seeds (see `overload_seed`).
            config.table.retry_after_ms = OVERLOAD_RETRY_AFTER_MS;
        }
        config.stores_state = !n.memory;
        // As a real node's: its writer thread syncs under `fsync` (`cluster::writer`).
        config.stores_in_background = !n.memory && !n.os;
        if random {
            // Random runs snapshot often, so compaction, InstallSnapshot and restarts from a
            // snapshot happen under every fault; most scenarios keep whole logs to point at
            // entries.
            (config.compact_every, config.compact_keep) = n.compaction;
        }
        let local = n.clock.local(now);
        // What the node's data directory shows it, and its decision, as a real node's start
        // reads them (`ClusterNode::start_with`).
        let starts = n
            .open_stores(&identity)
            .map_err(|e| format!("node {id} cannot start on its files: {e}"));
        let starts = starts.map_err(|what| self.fail(what))?;
        if let Some(shard) = self.config.watch {
            let start = match starts.get(shard as usize) {
                Some(Some(restart::Start::Restore { .. })) => "restores its state",
                Some(Some(restart::Start::Rejoin)) => "rejoins (spec §8.5 rules 1-5)",
                Some(Some(restart::Start::New)) => "starts new (spec §8.5 rule 6)",
                Some(Some(restart::Start::Fresh)) => "starts fresh (a created replica)",
                Some(None) | None => "holds no replica",
            };
            let flag = self.node(id).new_cluster;
            eprintln!(
                "{:>10}us node {id} starts (new_cluster {flag}): shard {shard} {start}",
                now.as_micros()
            );
        }
        // A joined node restarts asking the members its directory recorded as well as its
        // seed (`udplock server`): the first node, which has no seed, takes them as seeds.
        let n = self.node(id);
        if let (Some(joined), Some(dir)) = (config.joined.as_mut(), n.dir.as_ref()) {
            for (member, addr) in dir.recorded_members() {
                let known = joined.seeds.iter().any(|&(s, _)| s == member);
                if member != id && !known && joined.seeds.len() < JOIN_SEEDS_MAX {
                    joined.seeds.push((member, addr));
                }
            }
        }
        let stats = Arc::new(NodeStats::default());
        // Spec §8.11: a number this node never used before (the wall clock at its start).
        let incarnation = self.wall_clock_base_us + local.as_micros() + 1;
        let keys = self.keys.clone();
        let mut core = Node::new(
            config,
            starts,
            keys,
            incarnation,
            seed,
            stats.clone(),
            local,
        )
        .expect("the node starts: its configuration is valid, its snapshot decodes");
        core.set_wall_clock(local, self.wall_clock_us(id, now));
        // The counters of its previous life end here.
        let expired = self
            .node(id)
            .stats
            .address_tokens_expired
            .load(std::sync::atomic::Ordering::Relaxed);
        self.report.address_tokens_expired += expired;
        let n = self.node(id);
        n.node = Some(core);
        n.stats = stats;
        n.applied.fill(0);
        n.was_leader_in.fill(None);
        n.held = (0..n.held.len()).map(|s| n.replica(s).is_some()).collect();
        n.junk_snapshots = 0;
        n.junk_unauthenticated = 0;
        n.stored_seq = 0;
        n.handed_seq = 0;
        n.reported_seq = 0;
        n.unstored.clear();
        n.waiting.clear();
        n.store_generation += 1;
        n.store_scheduled = false;
        self.after_call(id)
    }

    pub(super) fn crash(&mut self, id: NodeId) {
        let n = self.node(id);
        n.node = None;
        n.leading.clear();
        // A paused process killed is no longer paused: its restart is a new one, on a clock
        // that did not stand still for it (else its clock would go back under the new core
        // at the resume the pause had scheduled).
        n.paused_until = None;
        n.paused_since = None;
        // What it had not stored yet, and what waited for it, is gone (see `disk.rs`).
        n.unstored.clear();
        n.waiting.clear();
        n.store_generation += 1;
        n.store_scheduled = false;
        n.timer_generation += 1;
        n.crashes += 1;
        let joined = !n.holds_replicas();
        self.report.crashes += 1;
        self.report.joined_crashes += u64::from(joined);
    }

    pub(super) fn resume(&mut self, node: NodeId) -> Result<(), SimFailure> {
        let (now, stops) = (self.now, self.config.clock_stops_during_pauses);
        let n = self.node(node);
        if let (true, Some(since)) = (stops, n.paused_since) {
            n.clock.stand_still(since, now);
        }
        n.paused_until = None;
        n.paused_since = None;
        if let Some(mut script) = self.script.take() {
            let result = script.on_resume(self, node);
            self.script = Some(script);
            result?;
        }
        if self.node(node).node.is_some() {
            self.after_call(node)?;
        }
        Ok(())
    }

    /// After any call into a node: take what its core hands out to store (a `memory` node
    /// drops it at once, a disk node stores it a moment later, `disk.rs`), send what it
    /// hands out to send once what it waits for is stored, re-arm its timer, observe what it
    /// applied.
    pub(super) fn after_call(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let now = self.now;
        let i = (id - 1) as usize;
        if self.nodes[i].node.is_none() {
            return Ok(());
        }
        self.check_drops(id)?;
        if let Some(core) = self.nodes[i].node.as_ref() {
            for (shard, replica) in core.replicas() {
                let raft = replica.raft();
                if raft.role() == Role::Leader {
                    self.leader_configs[shard as usize] = Some(raft.membership().clone());
                }
            }
        }
        // The writes first, in order: nothing below leaves before what it depends on is
        // stored (the core names it, `Transmit::after`).
        if self.hand_out_writes(id)? {
            return Ok(());
        }
        let mut transmits = Vec::new();
        let mut deaths = Vec::new();
        let timer_local;
        let record;
        {
            let n = &mut self.nodes[i];
            let core = n.node.as_mut().expect("running");
            let mut buf = vec![0u8; udplock_protocol::PEER_DATAGRAM_LEN_MAX];
            while let Some(t) = core.poll_transmit(&mut buf) {
                transmits.push((t, buf[..t.len].to_vec()));
            }
            timer_local = core.poll_timeout();
            n.timer_generation += 1;
            record = core.poll_members_record(n.clock.local(now));
            while let Some(event) = core.poll_member_event() {
                if let crate::core::swim::Event::Dead { id } = event {
                    deaths.push(id);
                }
            }
        }
        // The members file, as the shell keeps it: unsynced (the simulated disk may lose it,
        // as a real one may), and a failed write only logged there (a hint).
        if let (Some(members), Some(dir)) = (record, &self.nodes[i].dir) {
            let _ = dir.record_members(&members);
        }
        for dead in deaths {
            self.report.swim_deaths += 1;
            let i = (dead - 1) as usize;
            // After the heal every such death so far completed a suspicion (or spread news)
            // from before it: the suspect was unreachable from the suspecter when it began,
            // and its timeout ran out before the suspect, reachable again, could refute. With
            // the suspecter asking the suspect again every half shortest timeout
            // (`Swim::check_suspects`), those counted end within about two asks of the heal
            // (at most 0.47 s at 100 ms periods over seeds 0..300 of 3 and 5 nodes; 1.6 s when
            // it asked once). A suspicion begun after the heal and ending in a death would be
            // a real false positive; none was seen over those seeds.
            if self.healed
                && self
                    .nodes
                    .get(i)
                    .is_some_and(|n| n.node.is_some() && n.paused_until.is_none())
            {
                self.report.swim_deaths_healed += 1;
            }
        }
        for (t, _) in &transmits {
            if t.after > self.nodes[i].handed_seq {
                return Err(self.fail(format!(
                    "node {id} handed out a datagram that depends on write {}, which it did \
                     not hand out",
                    t.after
                )));
            }
        }
        self.nodes[i].waiting.extend(transmits);
        self.send_stored(id)?;
        let n = self.node(id);
        let at = n.clock.true_time(timer_local).max(now);
        let generation = n.timer_generation;
        self.schedule_at(
            at,
            Event::Timer {
                node: id,
                generation,
            },
        );
        self.observe_applied(id)?;
        self.compact_held_back(id);
        Ok(())
    }

    /// Sends, in order, every datagram of node `id` whose writes are stored; the others wait.
    pub(super) fn send_stored(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let i = (id - 1) as usize;
        // The `sends_before_stored` experiment waits for nothing.
        let stored = match self.config.sends_before_stored {
            false => self.nodes[i].stored_seq,
            true => u64::MAX,
        };
        let waiting = std::mem::take(&mut self.nodes[i].waiting);
        let (ready, wait): (Vec<_>, Vec<_>) =
            waiting.into_iter().partition(|(t, _)| t.after <= stored);
        self.nodes[i].waiting = wait;
        if self.nodes[i].stored_seq < self.nodes[i].handed_seq {
            self.report.sent_before_own_write += ready.len() as u64;
        }
        for (t, datagram) in ready {
            self.send_transmit(id, t, datagram)?;
        }
        Ok(())
    }

    /// One datagram node `id` sends: to a peer over the network, to a client, or to the
    /// judges of operators' and HOLDS answers.
    fn send_transmit(
        &mut self,
        id: NodeId,
        t: Transmit,
        datagram: Vec<u8>,
    ) -> Result<(), SimFailure> {
        let now = self.now;
        if t.to == removal::OPERATOR_ADDR {
            // The answer to an operator's REMOVE: `removal.rs` judges it.
            self.removals.answered(datagram);
            return Ok(());
        }
        if t.to == super::holds::HOLDS_ADDR {
            // The answer to a HOLDS read: `holds.rs` judges it.
            self.holds_answered(id, &datagram)?;
            return Ok(());
        }
        if t.to_peer {
            let Some(to) = wire::node_at(t.to, self.nodes.len()) else {
                return Err(self.fail(format!("node {id} sent a peer datagram to {}", t.to)));
            };
            self.send_peer(id, to, datagram);
            return Ok(());
        }
        if let Some(asked) = wire::members_reply_id(&datagram) {
            // A page of the member table for a client's discovery (spec §4.9): the
            // client reads the bytes itself.
            match self.request_lens.get(&asked) {
                Some(&len) if datagram.len() <= len => {}
                len => {
                    return Err(self.fail(format!(
                        "node {id} answered a MEMBERS request of {len:?} bytes with {} \
                         bytes (spec §2.2)",
                        datagram.len()
                    )));
                }
            }
            let Some(&client) = self.client_by_addr.get(&t.to) else {
                return Err(self.fail(format!(
                    "node {id} sent a MEMBERS_REPLY to {}, which no client has",
                    t.to
                )));
            };
            let msg = ReplyMsg::Members(datagram.as_slice().into());
            self.send_reply(id, client, msg, &datagram);
            return Ok(());
        }
        let Some(msg) = wire::reply_msg(&datagram, t.to, self.nodes.len()) else {
            return Err(self.fail(format!(
                "node {id} sent {} a datagram no client can read",
                t.to
            )));
        };
        let asked = match &msg {
            ReplyMsg::Answer(r) => r.id,
            ReplyMsg::NotLeader { id, .. } | ReplyMsg::Retry { id, .. } => *id,
            ReplyMsg::Members(_) => unreachable!("a lock reply"),
        };
        match self.request_lens.get(&asked) {
            Some(&len) if datagram.len() > len => {
                return Err(self.fail(format!(
                    "amplification: node {id} answered a request of {len} bytes with {} \
                     bytes ({msg:?}; spec §2.2)",
                    datagram.len()
                )));
            }
            Some(_) => {}
            None => {
                return Err(self.fail(format!(
                    "node {id} answered a request no node received: {msg:?}"
                )));
            }
        }
        if t.to == PROBE_ADDR {
            if let ReplyMsg::Answer(reply) = msg {
                if let Some(&op) = self.probes.get(&reply.id) {
                    self.hist.answered(op, now, *reply);
                    self.report.reads += 1;
                }
            }
            return Ok(());
        }
        let Some(&client) = self.client_by_addr.get(&t.to) else {
            return Err(self.fail(format!(
                "node {id} answered an address no client has: {msg:?}"
            )));
        };
        self.send_reply(id, client, msg, &datagram);
        Ok(())
    }

    pub(super) fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The nodes whose replica of `shard` leads (in some term).
    pub(super) fn leaders_now(&self, shard: usize) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| {
                n.replica(shard)
                    .is_some_and(|s| s.raft().role() == Role::Leader)
            })
            .map(|n| n.id)
            .collect()
    }
}
