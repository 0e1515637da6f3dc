//! The checkers that read the replicas (see the module docs of [`super`]): after every call
//! into a node, election safety, state machine safety, leader completeness and no false
//! forgery; after every event, lease safety; at the end, liveness and the shards' final logs
//! against the clients' history (`check.rs`).

use super::*;

/// An entry some replica applied: the term and data, and when it first was.
pub(super) struct Applied {
    pub(super) term: u64,
    pub(super) data: Arc<[u8]>,
    pub(super) at: Instant,
    /// The current term of the first replica that applied it: at least the term in which the
    /// entry was committed (that replica learned the commit from a leader of that term or a
    /// later one).
    pub(super) committed_by_term: u64,
}

impl Sim {
    /// No false forgery (see the module docs): node `id` dropped no datagram of a correct
    /// peer as faulty, malformed, forged or undecodable.
    pub(super) fn check_drops(&self, id: NodeId) -> Result<(), SimFailure> {
        let n = &self.nodes[(id - 1) as usize];
        let Some(core) = n.node.as_ref() else {
            return Ok(());
        };
        // Every node here is correct: a message one of them dropped as faulty or
        // malformed was a correct message misjudged (but for the junk snapshots a faulty
        // peer sent it, to any of its shards).
        let drops: u64 = core.replicas().map(|(_, s)| s.raft().faulty_drops()).sum();
        if drops > n.junk_snapshots {
            return Err(self.fail(format!(
                "node {id} dropped {drops} message(s) of correct peers as faulty or \
                 malformed (its log says which)"
            )));
        }
        // Nor does a correct peer's datagram fail the authentication checks for anything
        // but its age (a duplicate, one from an earlier life of either end: spec §8.11).
        let misjudged: u64 = [
            AuthDrop::Unauthenticated,
            AuthDrop::UnknownKey,
            AuthDrop::BadMac,
            AuthDrop::WrongReceiver,
        ]
        .iter()
        .map(|&r| n.stats.auth_dropped(r))
        .sum();
        if misjudged > n.junk_unauthenticated {
            return Err(self.fail(format!(
                "node {id} dropped {misjudged} datagram(s) of correct peers as forged \
                 (spec §8.11): {:?}",
                AuthDrop::ALL.map(|r| (r, n.stats.auth_dropped(r)))
            )));
        }
        // A datagram from a node it has not heard of (`NodeStats::peer_unknown`) is expected
        // only in a joined cluster, whose members learn of each other one after the other; in
        // a static one every node knows every other from the start.
        let unknown = n
            .stats
            .peer_unknown
            .load(std::sync::atomic::Ordering::Relaxed);
        if unknown > 0 && !self.config.joined {
            return Err(self.fail(format!(
                "node {id} dropped {unknown} datagram(s) of correct peers as from unknown \
                 nodes in a static cluster (NodeStats::peer_unknown)"
            )));
        }
        // Nor does its core drop one as undecodable, not for it, or too long
        // (`NodeStats::dropped`): the simulator sends no such junk, every datagram here comes
        // from a correct node or client through the real encoders.
        let undecodable = n.stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if undecodable > 0 {
            return Err(self.fail(format!(
                "node {id} dropped {undecodable} datagram(s) of correct peers or clients as \
                 undecodable, not for it, or too long (NodeStats::dropped)"
            )));
        }
        Ok(())
    }

    /// After a call into node `id` (only an input changes a replica): state machine safety
    /// (every replica applies the same entries, in order), election safety and leader
    /// completeness, for each of its shards; and which shards it leads now, for the lease
    /// checker.
    pub(super) fn observe_applied(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let i = (id - 1) as usize;
        for shard in 0..self.applied.len() {
            self.observe_applied_shard(id, shard)?;
            self.check_leader(i, shard)?;
        }
        let n = &mut self.nodes[i];
        n.leading.clear();
        if let Some(core) = n.node.as_ref() {
            n.leading.extend(
                core.replicas()
                    .filter(|(_, r)| r.raft().role() == Role::Leader)
                    .map(|(s, _)| s as usize),
            );
        }
        Ok(())
    }

    /// State machine safety for node `id`'s replica of `shard`.
    pub(super) fn observe_applied_shard(&mut self, id: NodeId, s: usize) -> Result<(), SimFailure> {
        let now = self.now;
        let i = (id - 1) as usize;
        let held = self.nodes[i].replica(s).is_some();
        if held != self.nodes[i].held[s] {
            self.nodes[i].held[s] = held;
            match held {
                true => self.report.replicas_created += 1,
                false => self.report.replicas_dropped += 1,
            }
        }
        let Some(shard) = self.nodes[i].replica(s) else {
            // Not held (a joined node): a replica created later starts from nothing.
            self.nodes[i].applied[s] = 0;
            self.nodes[i].was_leader_in[s] = None;
            return Ok(());
        };
        let applied_index = shard.applied_index();
        let current_term = shard.raft().term();
        let from = self.nodes[i].applied[s] + 1;
        if applied_index + 1 < from {
            return Err(self.fail(format!(
                "node {id} shard {s}: applied index went back from {} to {applied_index}",
                from - 1
            )));
        }
        let applied = &mut self.applied[s];
        // A snapshot (installed from the leader, or restored at restart) stands for the
        // entries it covers: others applied those, and they are no longer in this log.
        let snapshot = shard.raft().snapshot_meta();
        if snapshot.index >= from {
            self.report.snapshots_received += 1;
            if let Some(a) = applied.get((snapshot.index - 1) as usize) {
                if a.term != snapshot.term {
                    let what = format!(
                        "state machine safety: node {id} shard {s} holds a snapshot through {} \
                         of term {}, where term {} was applied",
                        snapshot.index, snapshot.term, a.term
                    );
                    return Err(self.fail(what));
                }
            }
        }
        let from = from.max(snapshot.index + 1);
        for index in from..=applied_index {
            let entry = shard
                .raft()
                .entry(index)
                .expect("an applied entry is in the log");
            match applied.get((index - 1) as usize) {
                Some(a) if (a.term, &a.data) != (entry.term, &entry.data) => {
                    let what = format!(
                        "state machine safety: node {id} shard {s} applied (term {}) at index \
                         {index} where another applied (term {})",
                        entry.term, a.term
                    );
                    return Err(self.fail(what));
                }
                Some(_) => {}
                None => {
                    assert_eq!(applied.len() as u64, index - 1);
                    if crate::core::raft::Membership::of_entry(&entry.data).is_some() {
                        self.report.membership_changes += 1;
                    }
                    applied.push(Applied {
                        term: entry.term,
                        data: entry.data.clone(),
                        at: now,
                        committed_by_term: current_term,
                    });
                    self.report.entries_applied += 1;
                }
            }
        }
        self.nodes[i].applied[s] = applied_index;
        Ok(())
    }

    /// Election safety, and leader completeness at the moment a node becomes leader: node
    /// `i`'s replica of shard `s`.
    pub(super) fn check_leader(&mut self, i: usize, s: usize) -> Result<(), SimFailure> {
        let (id, term, newly) = {
            let n = &self.nodes[i];
            let Some(shard) = n.replica(s) else {
                return Ok(());
            };
            if shard.raft().role() != Role::Leader {
                return Ok(());
            }
            let term = shard.raft().term();
            (n.id, term, n.was_leader_in[s] != Some(term))
        };
        match self.leaders[s].get(&term) {
            Some(&other) if other != id => {
                return Err(self.fail(format!(
                    "election safety: nodes {other} and {id} both lead term {term} of shard {s}"
                )));
            }
            Some(_) => {}
            None => {
                self.leaders[s].insert(term, id);
                self.report.leaders_elected += 1;
            }
        }
        if newly {
            self.nodes[i].was_leader_in[s] = Some(term);
            let raft = self.nodes[i].replica(s).expect("running").raft();
            // Raft §5.4: an entry committed in a term is in the log of every leader of every
            // LATER term. A node may still win an older term late (a vote granted long ago,
            // delivered after a pause); it need not hold what later terms committed, and can
            // never commit anything over it.
            for (position, a) in self.applied[s].iter().enumerate() {
                let index = position as u64 + 1;
                if a.committed_by_term >= term || index <= raft.snapshot_meta().index {
                    continue;
                }
                let held = raft.entry(index);
                if held.is_none_or(|e| e.term != a.term || e.data != a.data) {
                    return Err(self.fail(format!(
                        "leader completeness: node {id}, leader of term {term} of shard {s}, \
                         lacks applied entry {index} (term {})",
                        a.term
                    )));
                }
            }
        }
        Ok(())
    }

    /// Lease safety, per shard: two nodes never both hold a valid lease at one instant of
    /// true time.
    pub(super) fn check_leases(&mut self) -> Result<(), SimFailure> {
        // Every valid lease: only a leader holds one, and a replica becomes leader only on
        // an input, after which `observe_applied` lists it. A paused node acts on nothing,
        // its lease included.
        let event = self.report.events;
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.paused_until.is_some() || n.leading.is_empty() {
                continue;
            }
            let local = n.clock.local(self.now);
            for k in 0..n.leading.len() {
                let n = &self.nodes[i];
                let s = n.leading[k];
                let raft = n.replica(s).expect("running").raft();
                if !raft.lease_valid(local) {
                    continue;
                }
                let (id, term) = (n.id, raft.term());
                let (seen_at, other, other_term) = self.lease_seen[s];
                if seen_at == event {
                    return Err(self.fail(format!(
                        "lease safety: nodes {:?} (id, term) all hold a valid leader lease of \
                         shard {s}",
                        [(other, other_term), (id, term)]
                    )));
                }
                self.lease_seen[s] = (event, id, term);
                self.check_lease_backed(s, id, term)?;
            }
        }
        Ok(())
    }

    /// Node `id`'s valid lease of shard `s` in `term` rests on a majority that heard from it
    /// in its term since the start of an acknowledged round, which is less than
    /// `election_timeout_min` of true time ago (the lease is shorter by the drift bound):
    /// check that such a majority exists.
    pub(super) fn check_lease_backed(
        &mut self,
        s: usize,
        id: NodeId,
        term: u64,
    ) -> Result<(), SimFailure> {
        let window = self.shard_config.raft.election_timeout_min;
        // A majority of the voters of the leader's configuration (raft `membership.rs`):
        // every node while the configuration is the static one.
        let voters = self.nodes[(id - 1) as usize]
            .replica(s)
            .map(|r| r.raft().membership().voters.clone())
            .unwrap_or_default();
        let heard = self
            .nodes
            .iter()
            .filter(|n| voters.contains(&n.id))
            .filter(|n| {
                n.id == id
                    || n.heard_leader[s].is_some_and(|(t, leader, at)| {
                        (t, leader) == (term, id) && at + window > self.now
                    })
            })
            .count();
        if heard * 2 <= voters.len() {
            return Err(self.fail(format!(
                "lease safety: node {id} holds a lease in term {term} of shard {s}, but only \
                 {heard} node(s), itself included, heard from it in that term within the last \
                 {window:?}"
            )));
        }
        if self.healed && self.leader_after_heal[s].is_none() {
            self.leader_after_heal[s] = Some(self.now);
        }
        Ok(())
    }

    /// What each node's replica of shard `s` is doing, for a liveness failure: its role and
    /// term, or how it recovers (spec §8.5: asking as new, asking, catching up), or that the
    /// node is down or holds no replica. A shard that never elects usually shows why here.
    fn replicas_described(&self, s: usize) -> String {
        let replicas: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let what = match (&n.node, n.replica(s).map(|r| r.raft())) {
                    (None, _) => "down".to_string(),
                    (Some(_), None) => "no replica".to_string(),
                    (Some(_), Some(raft)) if raft.asking_as_new() => "asking as new".to_string(),
                    (Some(_), Some(raft)) if raft.asking() => "asking (rejoin)".to_string(),
                    (Some(_), Some(raft)) => format!(
                        "{:?} of term {}{} (replica {:x}, log {}, commit {}, {})",
                        raft.role(),
                        raft.term(),
                        if raft.rejoining() {
                            ", catching up"
                        } else {
                            ""
                        },
                        raft.replica(),
                        raft.last_index(),
                        raft.commit_index(),
                        membership_described(raft.membership()),
                    ),
                };
                format!("node {} {what}", n.id)
            })
            .collect();
        replicas.join(", ")
    }

    /// The checkers that judge the whole run.
    pub(super) fn finish(&mut self) -> Result<(), SimFailure> {
        for op in &self.hist.ops {
            if op.client != PROBE && matches!(op.outcome, Outcome::Answered { .. }) {
                let read = matches!(
                    op.request.body,
                    udplock_protocol::RequestBody::Status { .. }
                );
                self.report.reads += u64::from(read);
            }
            match op.outcome {
                Outcome::Answered { .. } if op.client != PROBE => self.report.ops_answered += 1,
                Outcome::GaveUp { .. } => self.report.ops_gave_up += 1,
                _ => {}
            }
        }
        self.report.ops = self.hist.ops.iter().filter(|o| o.client != PROBE).count() as u64;
        self.report.grants = self.hist.grants.len() as u64;
        for c in &self.clients {
            self.report.members_pages += c.members_pages;
            self.report.rings_adopted += c.rings_adopted;
            self.report.replies_from_unknown += c.replies_from_unknown;
            self.report.keepalives_renewed += c.keepalives_renewed;
            self.report.keepalives_dropped += c.keepalives_dropped;
            self.report.cancels += c.cancels;
            self.report.cancels_removed += c.cancels_removed;
            self.report.cancels_crossed += c.cancels_crossed;
            self.report.unauthenticated += c.unauthenticated;
            let beyond = c.answered_by.iter().any(|node| !c.given.contains(node));
            self.report.clients_beyond_given += u64::from(beyond);
        }
        let fail = |sim: &Sim, (at, what): (Instant, String)| sim.fail_at(at, what);
        check::check_mutual_exclusion(&self.hist).map_err(|e| fail(self, e))?;
        check::check_fencing(&self.hist).map_err(|e| fail(self, e))?;
        check::check_doubts(&self.hist).map_err(|e| fail(self, e))?;
        // Nothing a node says contradicts the request (spec §7.1.4 rule 6): no reply of
        // theirs may be rejected as forged or broken.
        if let Some((at, what)) = self.hist.rejected.first() {
            return Err(fail(self, (*at, what.clone())));
        }
        // Each resource's shard: its log holds every logged request on the resource.
        let resource_shards: Vec<u32> = RESOURCES
            .iter()
            .map(|r| udplock_protocol::shard_of(r, self.config.shards))
            .collect();
        for s in 0..self.applied.len() {
            self.check_shard_log(s, &resource_shards)?;
        }
        if let Some(mut script) = self.script.take() {
            let result = script.finish(self);
            self.script = Some(script);
            result?;
        }
        // Liveness.
        for (s, &after_heal) in self.leader_after_heal.iter().enumerate() {
            match after_heal {
                Some(at) if at <= self.heal_at + LEADER_AFTER_HEAL_MAX => {}
                at => {
                    return Err(self.fail(format!(
                        "liveness: no replica of shard {s} held a valid leader lease within \
                         {LEADER_AFTER_HEAL_MAX:?} of healing (first at {at:?}); at the end: {}",
                        self.replicas_described(s)
                    )));
                }
            }
        }
        check::check_liveness(&self.hist, self.heal_at, self.end).map_err(|e| fail(self, e))?;
        self.check_members()?;
        // The random mover both adds and removes; the driver adds (shards spread from node
        // 1) and removes where a node was displaced or replaced, which a 3-node run may never
        // need: its drops are counted over the sweep.
        let driver = self.config.placement_driver();
        let placed =
            self.report.replicas_created > 0 && (driver || self.report.replicas_dropped > 0);
        if self.config.joined && self.config.scenario.is_none() && self.nodes.len() > 1 && !placed {
            return Err(self.fail(format!(
                "placement: no replica was both created and dropped ({} created, {} dropped; \
                 {} changes proposed, {} refused)",
                self.report.replicas_created,
                self.report.replicas_dropped,
                self.report.placement_proposed,
                self.report.placement_refused
            )));
        }
        if driver {
            self.check_placed()?;
        }
        if self.config.membership_changes && self.report.membership_changes == 0 {
            return Err(self.fail(format!(
                "membership: no change committed ({} proposed, {} refused)",
                self.report.membership_proposed, self.report.membership_refused
            )));
        }
        for (s, &mark) in self.catch_up_index.iter().enumerate() {
            let Some(mark) = mark else { continue };
            // Every node the shard's configuration names (its leader's; a joined node
            // holds some shards only, spec §8.1).
            let leader = self.shard_leader(s, false).map(|(_, m, _)| m);
            let members: Vec<&SimNode> = self
                .nodes
                .iter()
                .filter(|n| match &leader {
                    Some(m) => m.contains(n.id),
                    None => n.holds_replicas(),
                })
                .collect();
            for n in members {
                if n.applied[s] < mark {
                    return Err(self.fail(format!(
                        "liveness: node {} applied only up to {} of the {mark} entries of \
                         shard {s} committed {CATCH_UP:?} before the end",
                        n.id, n.applied[s]
                    )));
                }
            }
        }
        Ok(())
    }

    /// Issue 10: with the placement driver, every shard ends on as many voters as it wants
    /// (`R` = 3, or every node of a smaller cluster), its leader's configuration naming
    /// each with the replica its node holds now, and no learner left: the nodes are all
    /// alive after the heal, so nothing is left to move or to catch up.
    fn check_placed(&self) -> Result<(), SimFailure> {
        let wanted = self.nodes.len().min(3);
        for shard in 0..self.config.shards as usize {
            let Some((leader, membership, replaced)) = self.shard_leader(shard, false) else {
                return Err(self.fail(format!("placement: shard {shard} has no leader at the end")));
            };
            let current = membership.voters.iter().all(|&v| {
                let held = self
                    .nodes
                    .iter()
                    .find(|n| n.id == v)
                    .and_then(|n| n.replica(shard));
                held.is_some_and(|r| membership.replica_of(v) == Some(r.raft().replica()))
            });
            if membership.voters.len() != wanted
                || !membership.learners.is_empty()
                || !replaced.is_empty()
                || !current
            {
                return Err(self.fail(format!(
                    "placement: at the end shard {shard} (led by node {leader}) is on {membership}, \
                     not on {wanted} current voters"
                )));
            }
        }
        Ok(())
    }

    /// Liveness of the membership (spec §8.12): at the end, every running node holds every
    /// other alive (or suspect, not yet refuted: a probe may have just failed to loss), none
    /// dead, gone or unknown — but a node whose leave the heal cut short (it runs on, leaving)
    /// is rightly held gone, and its own view is no one's business: the others hold it left
    /// and send it nothing, so it never hears that a node it saw die came back (found by
    /// `udplock sim --seed 189 --nodes 5 --joined`). (One whose stop without a leave the heal
    /// cut short runs on as a member: it must be held alive like any.)
    fn check_members(&self) -> Result<(), SimFailure> {
        use crate::core::swim::State;
        for n in &self.nodes {
            let Some(core) = n.node.as_ref().filter(|core| !core.is_leaving()) else {
                continue;
            };
            let members = core.members();
            if members.iter().any(|m| m.id == FORGED_JOINER) {
                return Err(self.fail(format!(
                    "node {} holds the forger {FORGED_JOINER} as a member (spec §8.3 rule 3): \
                     {members:?}",
                    n.id
                )));
            }
            for other in &self.nodes {
                let leaving = other.node.as_ref().is_none_or(Node::is_leaving);
                if other.id == n.id || leaving {
                    continue;
                }
                let held = members.iter().find(|m| m.id == other.id).map(|m| m.state);
                if !matches!(held, Some(State::Alive | State::Suspect)) {
                    return Err(self.fail(format!(
                        "liveness: at the end node {} holds running node {} as {held:?} \
                         (SWIM, spec §8.12): {members:?}",
                        n.id, other.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// State machine safety of shard `s`'s final log, then durability and linearizability of
    /// the operations on its resources against it.
    pub(super) fn check_shard_log(
        &self,
        s: usize,
        resource_shards: &[u32],
    ) -> Result<(), SimFailure> {
        let fail = |(at, what): (Instant, String)| self.fail_at(at, what);
        // The final committed log: the longest committed prefix (all agree, see above).
        let best = self
            .nodes
            .iter()
            .filter_map(|n| n.replica(s))
            .max_by_key(|r| r.raft().commit_index())
            .expect("every node runs after healing");
        let commit = best.raft().commit_index() as usize;
        if std::env::var("SIM_DEBUG_LOGS").is_ok() {
            for n in &self.nodes {
                if let Some(r) = n.replica(s) {
                    let raft = r.raft();
                    eprintln!(
                        "shard {s} node {}: {:?} term {} commit {} last {} applied {} {}",
                        n.id,
                        raft.role(),
                        raft.term(),
                        raft.commit_index(),
                        raft.last_index(),
                        r.applied_index(),
                        raft.membership()
                    );
                }
            }
        }
        let applied = &self.applied[s];
        let effect: Vec<Instant> = applied.iter().map(|a| a.at).collect();
        if effect.len() < commit {
            return Err(self.fail(format!(
                "committed index {commit} of shard {s} was never applied by any replica \
                 (applied {})",
                effect.len()
            )));
        }
        // The committed log as applied (the best replica may have compacted its prefix);
        // the part it still holds must agree with it.
        let log: Vec<Entry> = applied[..commit]
            .iter()
            .enumerate()
            .map(|(position, a)| Entry {
                term: a.term,
                index: position as u64 + 1,
                data: a.data.clone(),
            })
            .collect();
        let held = best
            .raft()
            .log()
            .iter()
            .filter(|e| e.index as usize <= commit);
        for (e, a) in held.map(|e| (e, &applied[e.index as usize - 1])) {
            if e.term != a.term || e.data != a.data {
                return Err(self.fail(format!(
                    "state machine safety: the final log of shard {s} holds term {} at index \
                     {}, where term {} was applied",
                    e.term, e.index, a.term
                )));
            }
        }
        let on_shard = |resource: usize| resource_shards[resource] as usize == s;
        check::check_log(
            &self.hist,
            &log,
            &effect,
            &self.shard_config.table,
            on_shard,
        )
        .map_err(fail)
    }
}

/// A configuration as a failure message shows it: `voters [1:r1, 4:r4] learners [5:r5]`,
/// each member with the replica id it is named with, in hex as the logs show them (none for
/// the static configuration): which voters a shard without a leader waits for.
fn membership_described(m: &crate::core::raft::Membership) -> String {
    let named = |ids: &[NodeId]| -> String {
        let ids: Vec<String> = ids
            .iter()
            .map(|&id| match m.replica_of(id) {
                Some(replica) => format!("{id}:{replica:x}"),
                None => id.to_string(),
            })
            .collect();
        ids.join(", ")
    };
    format!(
        "voters [{}] learners [{}]",
        named(&m.voters),
        named(&m.learners)
    )
}
