//! The simulated network: datagrams in flight between nodes and clients, with latency,
//! loss, duplication and rare delay spikes (which also reorder), partitions (cut links, both
//! ways or one), and delivery into a node's core (a paused node's datagrams wait in its
//! socket buffer; a crashed one's are lost). Under a scenario the script sees each Raft
//! message a node sends and may hold one back.

use super::*;

/// Network model: per-message latency, loss, duplication, rare spikes (which also reorder).
pub(super) const LATENCY_MIN: Duration = Duration::from_micros(50);
pub(super) const LATENCY_MAX: Duration = Duration::from_micros(2_000);
pub(super) const SPIKE_PROBABILITY: f64 = 0.01;
pub(super) const SPIKE_MAX: Duration = Duration::from_micros(80_000);
pub(super) const LOSS: f64 = 0.02;
pub(super) const DUPLICATION: f64 = 0.02;

impl Sim {
    /// Delivers a request the history recorded for client `from` (a scenario replays one),
    /// encoded as the client encodes it.
    pub(super) fn deliver_request(
        &mut self,
        to: NodeId,
        from: usize,
        request: Request<'static>,
    ) -> Result<(), SimFailure> {
        // A copy of client `from`'s request carries the address token its session holds for
        // the node, as every copy the client sent there did (spec §7.1.9).
        let token = self.clients[from].address_token(wire::node_addr(to), request.id.session);
        let datagram = wire::request_datagram(&request, None, token.as_ref());
        self.deliver_request_datagram(to, from, request.id, &datagram)
    }

    /// Delivers a client's request datagram to node `to`'s core (lost if it is down).
    pub(super) fn deliver_request_datagram(
        &mut self,
        to: NodeId,
        from: usize,
        id: lock_table::RequestId,
        datagram: &[u8],
    ) -> Result<(), SimFailure> {
        let now = self.now;
        self.report.messages_delivered += 1;
        self.trace.bytes(datagram);
        let len = self.request_lens.entry(id).or_insert(datagram.len());
        *len = (*len).min(datagram.len());
        let reply_to = self.clients[from].addr;
        let n = self.node(to);
        let local = n.clock.local(now);
        let Some(core) = n.node.as_mut() else {
            return Ok(());
        };
        core.handle_datagram(local, reply_to, datagram);
        self.after_call(to)
    }

    /// Delivers a node-to-node datagram: to the node's core, unless the link is cut (then
    /// lost), the node is paused (then it waits) or down (then lost).
    pub(super) fn deliver_peer(
        &mut self,
        to: NodeId,
        from: NodeId,
        datagram: Arc<Vec<u8>>,
    ) -> Result<(), SimFailure> {
        if self.blocked.contains(&(from, to)) {
            return Ok(());
        }
        if let Some(until) = self.node(to).paused_until {
            // A frozen process: the datagram waits in its socket buffer.
            self.schedule_at(until, Event::Peer { to, from, datagram });
            return Ok(());
        }
        // What it carries, read by the checkers (the node reads it itself): the
        // (shard, term) of each Append or snapshot chunk from a leader.
        let mut from_leader = std::mem::take(&mut self.from_leader_buf);
        let ack = wire::peer_glance(&datagram, &mut from_leader);
        let now = self.now;
        let n = self.node(to);
        let local = n.clock.local(now);
        let Some(core) = n.node.as_mut() else {
            return Ok(()); // crashed: lost
        };
        core.handle_datagram(local, wire::node_addr(from), &datagram);
        for &(shard, term) in &from_leader {
            let Some(replica) = core.replica(u32::from(shard)) else {
                continue;
            };
            let raft = replica.raft();
            if raft.term() == term && raft.leader() == Some(from) {
                n.heard_leader[usize::from(shard)] = Some((term, from, now));
            }
        }
        self.from_leader_buf = from_leader;
        self.report.messages_delivered += 1;
        self.after_call(to)?;
        if let Some(mut script) = self.script.take() {
            let result = script.after_peer(self, to, from, ack);
            self.script = Some(script);
            result?;
        }
        Ok(())
    }

    /// Latency, loss, duplication for one datagram; `None` if it is lost.
    pub(super) fn copies(&mut self, from: u64, to: u64) -> Vec<Duration> {
        if from == to || self.blocked.contains(&(from, to)) || self.rng.gen_bool(LOSS) {
            return Vec::new();
        }
        let copies = if self.rng.gen_bool(DUPLICATION) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let mut latency = self
                    .rng
                    .gen_range(LATENCY_MIN.as_micros()..=LATENCY_MAX.as_micros());
                if self.rng.gen_bool(SPIKE_PROBABILITY) {
                    latency += self.rng.gen_range(0..=SPIKE_MAX.as_micros());
                }
                Duration::from_micros(latency)
            })
            .collect()
    }

    /// A node-to-node datagram from `from` to `to`, through the network. Under a scenario
    /// (whose clusters have no key) the script sees each Raft message it carries and may
    /// hold one back to deliver late itself; each message then travels alone, as its own
    /// datagram.
    pub(super) fn send_peer(&mut self, from: NodeId, to: NodeId, datagram: Vec<u8>) {
        let Some(mut script) = self.script.take() else {
            let datagram = Arc::new(datagram);
            for latency in self.copies(from, to) {
                let datagram = datagram.clone();
                self.schedule(latency, Event::Peer { to, from, datagram });
            }
            return;
        };
        let messages = wire::peer_messages(&datagram);
        if messages.is_empty() {
            // PEER_SETTINGS: no Raft message in it, nothing for a script to see.
            self.script = Some(script);
            let datagram = Arc::new(datagram);
            for latency in self.copies(from, to) {
                let datagram = datagram.clone();
                self.schedule(latency, Event::Peer { to, from, datagram });
            }
            return;
        }
        assert!(
            !self.keys.is_authenticated(),
            "scenarios run without keys: held datagrams are rebuilt"
        );
        // The SWIM records beside the Raft ones go on, in a datagram of their own.
        if let Some(swim) = wire::swim_datagram(self.cluster_id, from, &datagram) {
            let swim = Arc::new(swim);
            for latency in self.copies(from, to) {
                let datagram = swim.clone();
                self.schedule(latency, Event::Peer { to, from, datagram });
            }
        }
        let mut deliver = Vec::new();
        for (shard, msg) in messages {
            // A scenario may hold a message back (to deliver it late itself) or copy it.
            if script.on_send(self, from, to, &msg) {
                deliver.push((shard, msg));
            }
        }
        self.script = Some(script);
        for message in deliver {
            let datagram = Arc::new(wire::peer_datagram(self.cluster_id, from, &[message]));
            for latency in self.copies(from, to) {
                let datagram = datagram.clone();
                self.schedule(latency, Event::Peer { to, from, datagram });
            }
        }
    }

    /// Delivers `msg` from `from` to `to` after `after`, as a datagram the network delayed
    /// (partitions apply at delivery, as to any datagram).
    pub(crate) fn deliver_late(&mut self, from: NodeId, to: NodeId, msg: Message, after: Duration) {
        let datagram = Arc::new(wire::peer_datagram(self.cluster_id, from, &[(0, msg)]));
        self.schedule(after, Event::Peer { to, from, datagram });
    }

    pub(super) fn send_reply(&mut self, from: NodeId, to: usize, msg: ReplyMsg, datagram: &[u8]) {
        let digest = Trace::of(datagram);
        // What the client's key makes of the datagram's client-auth trailer (spec §7.1.10).
        let seal = crate::core::call::seal_of(self.clients[to].key(), datagram);
        for latency in self.copies(from, CLIENT_ENDPOINT + to as u64) {
            let msg = msg.clone();
            self.schedule(
                latency,
                Event::Reply {
                    to,
                    from,
                    msg,
                    seal,
                    digest,
                },
            );
        }
    }

    pub(super) fn send_requests(&mut self, from: usize, out: &mut Vec<Outgoing>) {
        for sent in out.drain(..) {
            if !sent.members {
                self.hist.copy_sent(sent.id, self.now);
            }
            let Some(to) = sent.to else {
                // An address no node has (a member table listed it): lost.
                continue;
            };
            let (id, datagram) = (sent.id, Arc::new(sent.datagram));
            for latency in self.copies(CLIENT_ENDPOINT + from as u64, to) {
                let datagram = datagram.clone();
                self.schedule(
                    latency,
                    Event::Request {
                        to,
                        from,
                        id,
                        datagram,
                    },
                );
            }
        }
    }

    pub(super) fn block_both(&mut self, a: u64, b: u64) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }
}
