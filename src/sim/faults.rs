//! Drawing and applying the random faults of the safety phase (see the module docs of
//! [`super`]): partitions of every shape, an isolated leader, crashes and restarts (with lost
//! state, a lost directory or a power loss), pauses, clock steps, leadership transfers,
//! graceful stops (with a leave or without), junk snapshots; and healing them all.

use super::disk::{FSYNC_POWER_LOSS_PROBABILITY, POWER_LOSS_PROBABILITY};
use super::*;

/// How long a stopping node tries to hand its leadership over before it stops anyway (the
/// shell's `udplock server` waits about as long on SIGTERM).
pub(super) const LEAVE_WITHIN: Duration = Duration::from_millis(2_000);

impl Sim {
    /// A crashed node restarts, maybe after losing its state, its directory or its
    /// machine's power (see the module docs).
    pub(super) fn restart(&mut self, node: NodeId) -> Result<(), SimFailure> {
        if self.node(node).node.is_none() {
            // Lost state (see the module docs). A `memory` node loses it on every
            // restart, so it restarts only while a majority of the others are up and
            // hold theirs (else it waits); a disk node may come back without its
            // directory once. Nodes without state — `memory` ones, and disk ones
            // marked as rejoining — stay a minority: no protocol survives more.
            let whole = self
                .nodes
                .iter()
                .filter(|n| n.id != node && n.whole())
                .count();
            let others_whole = whole > self.nodes.len() / 2;
            // A node whose replica a configuration still names with its old replica id (it
            // lost its state since) counts for nothing there until it is replaced
            // (`membership.rs`): as good as without state.
            let replaced = self.replaced_nodes();
            let stateless_others = self
                .nodes
                .iter()
                .filter(|n| n.id != node && (n.stateless() || replaced.contains(&n.id)))
                .count();
            // With membership changes a shard may have one voter fewer than the nodes
            // (`membership.rs`), whose minority is smaller: one less may be without state.
            // A joined run's shards pass through configurations of two voters on the way to
            // three (`placement.rs`): the same.
            let changing = self.config.membership_changes || self.config.joined;
            let spare = if changing { 2 } else { 1 };
            let room = stateless_others < (self.nodes.len() - spare) / 2
                && (!changing || self.state_loss_keeps_majorities(node));
            // A joined run's bootstrap node is the one voter of every shard: its state is
            // all there is, so it never loses it (a minority of one voter is nobody).
            let sole_voter = self.config.joined && node == BOOTSTRAP_NODE;
            let (others_whole, room) = (others_whole && !sole_voter, room && !sole_voter);
            let memory = self.node(node).memory;
            if memory && (!others_whole || (changing && !room)) {
                self.schedule(Duration::from_millis(200), Event::Restart { node });
                return Ok(());
            }
            if self.config.scenario.is_none() && self.rng.gen_bool(0.2) {
                // Restarted with other settings (a rolling change).
                let settings = logged_settings(&mut self.rng);
                self.node(node).settings = settings;
            }
            let os = self.node(node).os;
            if memory {
                self.report.amnesia_restarts += 1;
            } else if os && others_whole && room && self.rng.gen_bool(POWER_LOSS_PROBABILITY) {
                // The node crashed with its machine: the files hold what the kernel
                // had written back, and the machine boots again.
                let n = self.node(node);
                n.disk.lose_power();
                n.boot += 1;
                self.report.power_losses += 1;
            } else if self.config.scenario.is_none()
                && others_whole
                && room
                && self.rng.gen_bool(0.3)
            {
                let n = self.node(node);
                n.disk.wipe();
                if self.rng.gen_bool(0.5) {
                    // From now on a `memory` node.
                    self.node(node).memory = true;
                    self.report.amnesia_restarts += 1;
                } else {
                    self.report.disk_losses += 1;
                }
            } else if !os
                && self.config.scenario.is_none()
                && self.rng.gen_bool(FSYNC_POWER_LOSS_PROBABILITY)
            {
                // An `fsync` node's machine lost power: its files hold what it synced,
                // which is everything it acknowledged, so any number of these may
                // happen at once.
                let n = self.node(node);
                n.disk.lose_power();
                n.boot += 1;
                self.report.fsync_power_losses += 1;
            }
            self.start_node(node)?;
        }
        Ok(())
    }

    /// The shard a fault aimed at a leader picks: half the time the shard of a resource the
    /// clients use, else any.
    pub(super) fn fault_shard(&mut self) -> usize {
        let shards = self.config.shards;
        if self.rng.gen_bool(0.5) {
            let resource = RESOURCES[self.rng.gen_range(0..self.config.resources)];
            udplock_protocol::shard_of(resource, shards) as usize
        } else {
            self.rng.gen_range(0..shards as usize)
        }
    }

    pub(super) fn pause(&mut self, node: NodeId, for_: Duration) -> bool {
        let (now, until) = (self.now, self.now + for_);
        let n = self.node(node);
        if n.paused_until.is_some() || n.node.is_none() {
            return false;
        }
        n.paused_until = Some(until);
        n.paused_since = Some(now);
        self.report.pauses += 1;
        self.schedule_at(until, Event::Resume { node });
        true
    }

    pub(super) fn inject_fault(&mut self) -> Result<(), SimFailure> {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let fault = self.rng.gen_range(0..13);
        // The shard whose leader the leader-aimed faults (3, 5, 9, 10, 12) pick.
        let shard = if self.config.shards > 1 && matches!(fault, 3 | 5 | 9 | 10 | 12) {
            self.fault_shard()
        } else {
            0
        };
        match fault {
            // Symmetric partition into two groups.
            0 => {
                self.blocked.clear();
                let split: Vec<bool> = ids.iter().map(|_| self.rng.gen_bool(0.5)).collect();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if split[i] != split[j] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
                self.report.partitions += 1;
            }
            // Asymmetric: one node can send but not receive, or the reverse.
            1 => {
                let victim = ids[self.rng.gen_range(0..ids.len())];
                let inbound = self.rng.gen_bool(0.5);
                for &other in &ids {
                    if other != victim {
                        let pair = if inbound {
                            (other, victim)
                        } else {
                            (victim, other)
                        };
                        self.blocked.insert(pair);
                    }
                }
                self.report.partitions += 1;
            }
            // Partial: two nodes cannot talk to each other, both talk to the rest.
            2 => {
                let a = ids[self.rng.gen_range(0..ids.len())];
                let b = ids[self.rng.gen_range(0..ids.len())];
                if a != b {
                    self.block_both(a, b);
                }
                self.report.partitions += 1;
            }
            // Isolate whoever leads from the other replicas, and sometimes from clients too
            // (else clients keep reaching a leader that cannot commit).
            3 => {
                let with_clients = self.rng.gen_bool(0.5);
                for l in self.leaders_now(shard) {
                    for &other in &ids {
                        if other != l {
                            self.block_both(l, other);
                        }
                    }
                    if with_clients {
                        for c in 0..self.clients.len() {
                            self.block_both(l, CLIENT_ENDPOINT + c as u64);
                        }
                    }
                }
                self.report.partitions += 1;
            }
            // Crash a node (keeping a majority up most of the time), restart it later.
            4 => {
                let running = self.running();
                if !running.is_empty()
                    && (running.len() * 2 > ids.len() + 1 || self.rng.gen_bool(0.2))
                {
                    let victim = running[self.rng.gen_range(0..running.len())];
                    // A `memory` node's crash loses its state: in a joined run, only where
                    // every shard keeps a majority without it (`membership.rs`).
                    let changing = self.config.joined || self.config.membership_changes;
                    let loses_state = changing && self.node(victim).memory;
                    if !loses_state || self.state_loss_keeps_majorities(victim) {
                        self.crash(victim);
                        let down = Duration::from_millis(self.rng.gen_range(50..2_000));
                        self.schedule(down, Event::Restart { node: victim });
                    }
                }
            }
            // Pause a node (a GC pause, a stopped VM): it wakes believing what it believed.
            // Pausing the leader is the interesting case, so it is chosen half the time.
            5 => {
                let leaders = self.leaders_now(shard);
                let victim = if !leaders.is_empty() && self.rng.gen_bool(0.5) {
                    leaders[0]
                } else {
                    ids[self.rng.gen_range(0..ids.len())]
                };
                let for_ = Duration::from_millis(self.rng.gen_range(50..1_500));
                self.pause(victim, for_);
            }
            // Cut one client off from one node (a partial partition between client and
            // cluster: it must find another way in).
            6 => {
                if !self.clients.is_empty() {
                    let c = self.rng.gen_range(0..self.clients.len()) as u64;
                    let node = ids[self.rng.gen_range(0..ids.len())];
                    self.block_both(CLIENT_ENDPOINT + c, node);
                    self.report.partitions += 1;
                }
            }
            // A leader hands leadership to another node (graceful leave, leader spreading),
            // under whatever faults are on: its TimeoutNow may be lost or come late.
            9 => {
                if let Some(&from) = self.leaders_now(shard).first() {
                    let others: Vec<NodeId> =
                        ids.iter().copied().filter(|&id| id != from).collect();
                    let to = others[self.rng.gen_range(0..others.len())];
                    let shard = shard as u32;
                    self.schedule(Duration::ZERO, Event::Transfer { from, to, shard });
                    self.report.transfers += 1;
                }
            }
            // A node stops gracefully (SIGTERM on `udplock server`): it declines to take
            // shards over, hands over what it leads, stops, and is restarted later. Half the
            // time it announces a SWIM leave as well (`--leave-on-stop`): then the others
            // hold it left and a joined cluster replaces its replicas at once; else they find
            // it dead, and placement waits dead-after.
            10 => {
                let running = self.running();
                let leaders = self.leaders_now(shard);
                if running.len() * 2 > ids.len() + 1 {
                    // The leader half the time: handing over is the interesting part.
                    let node = match leaders.first() {
                        Some(&leader) if self.rng.gen_bool(0.5) => leader,
                        _ => running[self.rng.gen_range(0..running.len())],
                    };
                    if self.node(node).paused_until.is_none() {
                        let announce = self.rng.gen_bool(0.5);
                        let now = self.now;
                        let n = self.node(node);
                        let incarnation = n.crashes;
                        let local = n.clock.local(now);
                        let mut led = false;
                        if let Some(core) = n.node.as_mut() {
                            stop_gracefully(core, local, announce);
                            led = core.leading() > 0;
                        }
                        let leave = Event::Leave {
                            node,
                            announce,
                            until: now + LEAVE_WITHIN,
                            led,
                            incarnation,
                        };
                        self.schedule(Duration::ZERO, leave);
                    }
                }
            }
            // A faulty peer (or a forger, on a cluster without a key) sends a follower a
            // complete snapshot of garbage, as if from its leader: the follower must drop it
            // and keep its state, and still restart from what it persisted (issue 8).
            // In a joined cluster, half the time a forger's join instead (spec §8.3 rule 3).
            11 if self.config.joined && self.rng.gen_bool(0.5) => return self.send_forged_join(),
            11 => return self.send_junk_snapshot(),
            // A node's clock changes rate (or, in an experiment, stalls or jumps).
            12 => return self.clock_fault(shard),
            // Heal the network for a while.
            _ => self.blocked.clear(),
        }
        Ok(())
    }

    /// Fault 12 (see `inject_fault`): a node's clock changes (see `clock.rs`). Within the
    /// drift bound, as in every random run: one clock's rate steps to another rate within ±
    /// half the bound; or, half the time when `shard` has a leader, the leader's clock steps
    /// to the slowest rate and every other node's to the fastest, so the leader's lease lasts
    /// longest in true time while its followers' patience is shortest — the edge the lease's
    /// margin is for (spec §8.5, "Leader lease"). Beyond the bound (the
    /// `clock_faults_beyond_bound` experiment): the leader's clock stands still for 50 ms to
    /// 1.5 s while it runs, or a node's clock jumps forward by as much.
    pub(super) fn clock_fault(&mut self, shard: usize) -> Result<(), SimFailure> {
        let half = i64::from(self.shard_config.raft.drift_bound_ppm / 2);
        let leader = self.leaders_now(shard).first().copied();
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let now = self.now;
        let adversarial = leader.is_some() && self.rng.gen_bool(0.5);
        if self.config.clock_faults_beyond_bound {
            let by = Duration::from_millis(self.rng.gen_range(50..1_500));
            match leader {
                Some(leader) if adversarial => self.node(leader).clock.stand_still(now, now + by),
                _ => {
                    let victim = ids[self.rng.gen_range(0..ids.len())];
                    self.node(victim).clock.jump(now, by);
                }
            }
        } else if let (Some(leader), true) = (leader, adversarial) {
            for &id in &ids {
                let rate = if id == leader { -half } else { half };
                self.node(id).clock.set_rate(now, rate);
            }
        } else {
            let victim = ids[self.rng.gen_range(0..ids.len())];
            let rate = self.rng.gen_range(-half..=half);
            self.node(victim).clock.set_rate(now, rate);
        }
        self.report.clock_faults += 1;
        // Timers were set on the old clocks: set them again (a paused node's are at resume).
        for id in ids {
            if self.node(id).paused_until.is_none() {
                self.after_call(id)?;
            }
        }
        Ok(())
    }

    /// Fault 11 (see `inject_fault`): one chunk holding a whole snapshot of garbage (it does
    /// not even start with the snapshot magic), beyond the follower's commit index, of its
    /// term, from the leader it follows, in a PEER datagram from the leader's address but
    /// without a trailer; round 0, so its answer counts for nothing at the leader. A node
    /// with a key drops it as unauthenticated (spec §8.11); one without lets Raft judge it.
    pub(super) fn send_junk_snapshot(&mut self) -> Result<(), SimFailure> {
        let shards = self.config.shards as usize;
        // (follower, its leader, shard)
        let followers: Vec<(NodeId, NodeId, usize)> = self
            .nodes
            .iter()
            .filter(|n| n.paused_until.is_none())
            .flat_map(|n| (0..shards).map(move |shard| (n, shard)))
            .filter_map(|(n, shard)| {
                let raft = n.replica(shard)?.raft();
                let leader = raft.leader().filter(|_| raft.role() == Role::Follower)?;
                Some((n.id, leader, shard))
            })
            .collect();
        if followers.is_empty() {
            return Ok(());
        }
        let (to, from, shard) = followers[self.rng.gen_range(0..followers.len())];
        let len = self.rng.gen_range(1..=udplock_protocol::SNAPSHOT_CHUNK_MAX);
        let mut data: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
        data[0] = 0;
        let ahead = self.rng.gen_range(1..100);
        let now = self.now;
        let (cluster_id, keyed) = (self.cluster_id, self.keys.is_authenticated());
        let n = &mut self.nodes[(to - 1) as usize];
        let local = n.clock.local(now);
        let raft = n.replica(shard).expect("a running follower").raft();
        let (term, commit) = (raft.term(), raft.commit_index());
        let junk = Message::InstallSnapshot {
            term,
            last_index: commit + ahead,
            last_term: term,
            offset: 0,
            total_len: len as u64,
            data,
            round: 0,
        };
        let datagram = wire::peer_datagram(cluster_id, from, &[(shard as u16, junk)]);
        self.trace.bytes(&datagram);
        if keyed {
            n.junk_unauthenticated += 1;
        } else {
            n.junk_snapshots += 1;
        }
        let core = n.node.as_mut().expect("a running follower");
        core.handle_datagram(local, wire::node_addr(from), &datagram);
        if keyed && n.stats.auth_dropped(AuthDrop::Unauthenticated) < n.junk_unauthenticated {
            return Err(self.fail(format!(
                "node {to} with a cluster key took an unauthenticated datagram (spec §8.11)"
            )));
        }
        self.report.junk_snapshots += 1;
        self.after_call(to)
    }

    /// The nodes that run and are not paused: those a datagram sent now reaches.
    pub(super) fn awake(&self) -> Vec<NodeId> {
        let awake = self
            .nodes
            .iter()
            .filter(|n| n.node.is_some() && n.paused_until.is_none());
        awake.map(|n| n.id).collect()
    }

    /// Fault 11 in a joined cluster (see `inject_fault`): a stranger without the key asks a
    /// running node to let it join — an unsealed PEER datagram whose SWIM PUSH_PULL announces
    /// node [`FORGED_JOINER`] at the address it comes from (spec §8.3 rule 3). The node drops
    /// it as unauthenticated (spec §8.11) and answers nothing (a datagram to an address no
    /// node has fails the run), and the forger never becomes a member (checked at the end,
    /// `check_members`).
    pub(super) fn send_forged_join(&mut self) -> Result<(), SimFailure> {
        use udplock_protocol::{PeerWriter, SwimMessage, SwimState, SwimUpdate};
        let targets = self.awake();
        if targets.is_empty() {
            return Ok(());
        }
        let to = targets[self.rng.gen_range(0..targets.len())];
        let from = wire::node_addr(FORGED_JOINER);
        let join: crate::core::swim::Message = SwimMessage::PushPull {
            reply: true,
            members: vec![SwimUpdate {
                id: FORGED_JOINER,
                addr: from,
                incarnation: self.rng.gen_range(0..1_000),
                state: SwimState::Alive,
                from: 0,
            }],
        };
        let header = udplock_protocol::PeerHeader {
            cluster_id: self.cluster_id,
            from: FORGED_JOINER,
        };
        let mut datagram = vec![0u8; udplock_protocol::PEER_DATAGRAM_LEN_MAX];
        let mut writer = PeerWriter::new(&mut datagram, header);
        writer.push_swim(&join).expect("one update fits");
        let len = writer.finish();
        datagram.truncate(len);
        self.trace.bytes(&datagram);
        let now = self.now;
        let n = self.node(to);
        n.junk_unauthenticated += 1;
        let local = n.clock.local(now);
        let core = n.node.as_mut().expect("a running node");
        core.handle_datagram(local, from, &datagram);
        if n.stats.auth_dropped(AuthDrop::Unauthenticated) < n.junk_unauthenticated {
            return Err(self.fail(format!(
                "node {to} took a forged join without the cluster key (spec §8.3 rule 3, §8.11)"
            )));
        }
        self.report.forged_joins += 1;
        self.after_call(to)
    }

    /// One turn of a graceful stop (see `Event::Leave`): `ClusterNode::stop` or
    /// `ClusterNode::leave` — the node's core hands each shard it leads to a caught-up peer
    /// on every input, and the shell stops it once it leads none or its patience ends.
    pub(super) fn leave_step(&mut self, leave: Event) -> Result<(), SimFailure> {
        let Event::Leave {
            node,
            announce,
            until,
            led,
            incarnation,
        } = leave
        else {
            unreachable!("a Leave event");
        };
        let (now, healed) = (self.now, self.healed);
        let interval = self.shard_config.raft.heartbeat_interval;
        let n = self.node(node);
        if n.crashes != incarnation || healed {
            // It crashed meanwhile (and may run again as a new process), or the run is in its
            // healed phase, where nothing stops: the leave ends here.
            return Ok(());
        }
        if let Some(paused) = n.paused_until {
            self.schedule_at(paused, leave);
            return Ok(());
        }
        let local = n.clock.local(now);
        let Some(core) = n.node.as_mut() else {
            return Ok(());
        };
        stop_gracefully(core, local, announce);
        let leads = core.leading() > 0;
        if leads && now < until {
            self.after_call(node)?;
            self.schedule(interval, leave);
            return Ok(());
        }
        let handed_over = led && !leads;
        let changing = self.config.joined || self.config.membership_changes;
        let loses_state = changing && self.node(node).memory;
        if loses_state && !self.state_loss_keeps_majorities(node) {
            // A `memory` node's stop loses its state (see the crash fault): it stays up.
            return Ok(());
        }
        self.crash(node);
        if announce {
            self.report.leaves += 1;
        } else {
            self.report.stops += 1;
        }
        self.report.stops_handed_over += u64::from(handed_over);
        let down = Duration::from_millis(self.rng.gen_range(50..2_000));
        self.schedule(down, Event::Restart { node });
        Ok(())
    }

    pub(super) fn heal(&mut self) -> Result<(), SimFailure> {
        self.healed = true;
        self.blocked.clear();
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let changing = self.config.joined || self.config.membership_changes;
        for id in ids {
            // A node whose stop (with or without a leave) the heal cut short would stop
            // within its patience and be started again by its operator: it restarts now, as
            // a crashed one does (a stopping node declines shards and runs no placement, so
            // one left running holds what it leads for good). Not a `memory` node whose state
            // the cluster cannot spare (see `leave_step`): it runs on, stopping.
            let stopping = self.node(id).node.as_ref().is_some_and(Node::is_stopping);
            let loses_state = changing && self.node(id).memory;
            if stopping && (!loses_state || self.state_loss_keeps_majorities(id)) {
                self.crash(id);
            }
            if self.node(id).node.is_none() {
                // A node that keeps no state comes back without it (`start_node`), whenever
                // it restarts.
                if self.node(id).memory {
                    self.report.amnesia_restarts += 1;
                }
                self.start_node(id)?;
            }
            if self.node(id).paused_until.is_some() {
                self.resume(id)?;
            }
        }
        Ok(())
    }
}

/// What the shell's graceful stop asks of the core (`ClusterNode::stop` or, with `announce`,
/// `ClusterNode::leave`): called on every turn, as the shell's loop does.
fn stop_gracefully(core: &mut Node, local: Instant, announce: bool) {
    if announce {
        core.start_leaving(local);
    } else {
        core.start_stopping(local);
    }
}
