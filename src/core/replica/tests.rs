//! Scenario tests of one shard replicated over 1 or 3 replicas, messages delivered by hand.

use std::collections::VecDeque;
use std::net::SocketAddr;

use udplock_protocol::Status;

use super::*;
use crate::core::lock_table::{Reply, Request, RequestId};
use crate::core::raft::{HardState, Message, NodeId, Role};
use crate::core::time::{Duration, Instant};
use udplock_protocol::{RequestBody, RequestKind};

/// The replicas' wall clock in microseconds since the Unix epoch, at core time `now`.
fn wall_clock_us(now: Instant) -> u64 {
    1_700_000_000_000_000 + now.as_micros()
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn addr() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn config(id: NodeId, voters: u64) -> Config {
    Config {
        shard: 0,
        raft: raft::Config {
            id,
            voters: (1..=voters).collect(),
            // As a node without a store runs them: nothing to report stored.
            appended_is_durable: true,
            ..raft::Config::default()
        },
        table: lock_table::Config::default(),
    }
}

/// Replicas of one shard; messages wait in `net` until delivered.
struct Cluster {
    now: Instant,
    replicas: Vec<Option<Replica>>,
    net: VecDeque<(NodeId, NodeId, Message)>,
    /// Replies sent, with the replica that sent them.
    replies: Vec<(NodeId, Reply)>,
    /// Replicas whose messages are dropped both ways.
    isolated: Vec<NodeId>,
}

impl Cluster {
    fn new(voters: u64) -> Cluster {
        Cluster::with(voters, |_, _| {})
    }

    /// Replicas whose configs `tweak` adjusts (node id, config).
    fn with(voters: u64, tweak: impl Fn(NodeId, &mut Config)) -> Cluster {
        let now = Instant::from_micros(1_000_000);
        let replicas = (1..=voters)
            .map(|id| {
                let mut config = config(id, voters);
                tweak(id, &mut config);
                Some(Replica::new(
                    config,
                    id,
                    HardState::default(),
                    Vec::new(),
                    now,
                ))
            })
            .collect();
        let mut cluster = Cluster {
            now,
            replicas,
            net: VecDeque::new(),
            replies: Vec::new(),
            isolated: Vec::new(),
        };
        cluster.drain();
        cluster
    }

    fn shard(&mut self, id: NodeId) -> &mut Replica {
        self.replicas[(id - 1) as usize].as_mut().unwrap()
    }

    fn drain(&mut self) {
        for position in 0..self.replicas.len() {
            let id = position as NodeId + 1;
            let Some(shard) = self.replicas[position].as_mut() else {
                continue;
            };
            // As a node's shell does after every input.
            if shard.wants_wall_clock() {
                shard.propose_init(self.now, wall_clock_us(self.now));
            }
            while let Some((to, msg)) = shard.poll_message() {
                self.net.push_back((id, to, msg));
            }
            while let Some(reply) = shard.poll_reply() {
                self.replies.push((id, reply));
            }
        }
    }

    /// Delivers every message until none is left.
    fn deliver(&mut self) {
        while let Some((from, to, msg)) = self.net.pop_front() {
            if self.isolated.contains(&from) || self.isolated.contains(&to) {
                continue;
            }
            let now = self.now;
            if let Some(shard) = self.replicas[(to - 1) as usize].as_mut() {
                shard.handle_message(now, from, msg);
            }
            self.drain();
        }
    }

    /// Advances time in 1 ms steps, firing timers and delivering messages at once.
    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now = self.now + ms(1);
            let now = self.now;
            for shard in self.replicas.iter_mut().flatten() {
                if shard.poll_timeout() <= now {
                    shard.handle_timeout(now);
                }
            }
            self.drain();
            self.deliver();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .replicas
            .iter()
            .flatten()
            .filter(|s| {
                s.raft().role() == Role::Leader && !self.isolated.contains(&s.config().raft.id)
            })
            .map(|s| s.config().raft.id)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn elect(&mut self) -> NodeId {
        for _ in 0..100 {
            self.run(ms(10));
            if let Some(leader) = self.leader() {
                // Let the no-op and INIT commit everywhere.
                self.run(ms(100));
                return leader;
            }
        }
        panic!("no leader elected");
    }

    fn send(
        &mut self,
        to: NodeId,
        session: u64,
        request: u64,
        attempt: u16,
        (body, datagram_len): Sent<'_>,
    ) -> Result<(), NotLeader> {
        let now = self.now;
        let result = self.shard(to).handle_request(
            now,
            Request {
                id: RequestId { session, request },
                attempt,
                reply_to: addr(),
                body,
                datagram_len,
            },
        );
        self.drain();
        result
    }

    fn take_replies(&mut self) -> Vec<(NodeId, Reply)> {
        std::mem::take(&mut self.replies)
    }
}

/// An operation and the length of the datagram that carries it.
type Sent<'a> = (RequestBody<'a>, u16);

/// An ACQUIRE padded for a WAITING and a final answer (spec §2.2).
fn acquire<'a>(resource: &'a [u8], client: &'a [u8], wait_ms: u32, ttl_ms: u32) -> Sent<'a> {
    let body = RequestBody::Acquire {
        resource,
        client,
        wait_ms,
        ttl_ms,
    };
    (body, udplock_protocol::ACQUIRE_WAIT_REQUEST_LEN as u16)
}

/// A STATUS padded as the spec asks (§2.2 rule 4), so the reply may name any holder.
fn status(resource: &[u8]) -> Sent<'_> {
    status_in(resource, udplock_protocol::STATUS_REQUEST_LEN as u16)
}

/// A STATUS carried by a datagram of `datagram_len` bytes.
fn status_in(resource: &[u8], datagram_len: u16) -> Sent<'_> {
    (RequestBody::Status { resource }, datagram_len)
}

#[test]
fn single_replica_grants_with_the_init_token() {
    let mut c = Cluster::new(1);
    let started = wall_clock_us(c.now);
    let leader = c.elect();
    assert_eq!(leader, 1);
    c.send(1, 7, 1, 0, acquire(b"r", b"a", 0, 1_000)).unwrap();
    let replies = c.take_replies();
    assert_eq!(replies.len(), 1);
    let reply = replies[0].1;
    assert_eq!(reply.kind, RequestKind::Acquire);
    assert_eq!(reply.answer.status, Status::Ok);
    // The INIT token (the wall clock at the election), the first one granted.
    let token = reply.answer.fencing_token;
    assert!((started..=wall_clock_us(c.now)).contains(&token), "{token}");
    let table = c.shard(1).table().unwrap();
    assert_eq!(table.stats().fencing_token_last, token);
}

#[test]
fn replies_leave_only_after_a_majority_stored_the_command() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 1_000))
        .unwrap();
    assert!(c.take_replies().is_empty(), "answered before replication");
    c.deliver();
    let replies = c.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, leader, "only the leader answers");
    assert_eq!(replies[0].1.answer.status, Status::Ok);
    // Followers apply it once the commit index reaches them (next heartbeat).
    c.run(ms(50));
    for id in 1..=3 {
        let stats = c.shard(id).stats();
        assert_eq!(stats.table.held, 1, "replica {id}");
    }
}

/// Issue 7 item 15: INIT's first fencing token is the wall clock of the leader when it proposes
/// INIT (spec §8.8), not when its node started: tokens must stay above every token an earlier
/// incarnation of the shard issued until then (spec §7.2.4).
#[test]
fn the_first_token_is_the_wall_clock_when_init_is_proposed() {
    let mut c = Cluster::new(3);
    // No replica can reach another for 10 s: nobody is elected.
    c.isolated = vec![1, 2, 3];
    c.run(ms(10_000));
    c.isolated.clear();
    let before = wall_clock_us(c.now);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 1_000))
        .unwrap();
    c.deliver();
    let token = c.take_replies()[0].1.answer.fencing_token;
    assert!(
        (before..=wall_clock_us(c.now)).contains(&token),
        "token {token}: the wall clock was {before} when the election began"
    );
}

#[test]
fn a_follower_names_the_leader() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let err = c
        .send(follower, 7, 1, 0, acquire(b"r", b"a", 0, 1_000))
        .unwrap_err();
    assert_eq!(err.leader_hint, Some(leader));
    let err = c.send(follower, 7, 2, 0, status(b"r")).unwrap_err();
    assert_eq!(err.leader_hint, Some(leader));
}

#[test]
fn a_retransmit_after_failover_gets_the_first_answer() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    c.send(old, 7, 1, 0, acquire(b"r", b"a", 0, 60_000))
        .unwrap();
    c.deliver();
    let first = c.take_replies()[0].1;
    assert_eq!(first.answer.status, Status::Ok);
    c.run(ms(50));
    // The old leader dies; the others elect a new one.
    c.isolated.push(old);
    let new = c.elect();
    assert_ne!(new, old);
    // The client never saw the grant and retransmits to the new leader.
    c.send(new, 7, 1, 1, acquire(b"r", b"a", 0, 60_000))
        .unwrap();
    c.deliver();
    let again = c.take_replies();
    assert_eq!(again.len(), 1);
    let again = again[0].1;
    assert_eq!(again.answer.status, Status::Ok);
    assert_eq!(again.answer.fencing_token, first.answer.fencing_token);
    assert_eq!(again.answer.hold_count, 1, "no second re-entrant hold");
    // Another client is refused: the hold survived the failover.
    c.send(new, 8, 1, 0, acquire(b"r", b"b", 0, 60_000))
        .unwrap();
    c.deliver();
    assert_eq!(
        c.take_replies()[0].1.answer.status,
        Status::LockAcquisitionTimeout
    );
}

#[test]
fn the_leader_expires_a_lease_through_the_log_and_hands_the_lock_on() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 200))
        .unwrap();
    c.deliver();
    let granted = c.take_replies()[0].1;
    c.send(leader, 8, 1, 0, acquire(b"r", b"b", 5_000, 1_000))
        .unwrap();
    c.deliver();
    let waiting = c.take_replies();
    assert_eq!(waiting[0].1.answer.status, Status::Waiting);
    c.run(ms(150));
    assert!(c.take_replies().is_empty(), "expired early");
    c.run(ms(100));
    let handed = c.take_replies();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].1.id.session, 8);
    assert_eq!(handed[0].1.answer.status, Status::Ok);
    assert!(handed[0].1.answer.fencing_token > granted.answer.fencing_token);
    // Every replica agrees on the new holder.
    c.run(ms(50));
    for id in 1..=3 {
        let table = c.shard(id).table().unwrap();
        let (answer, holder) = table.read_status(Instant::ZERO, b"r");
        assert_eq!(holder.as_slice(), b"b", "replica {id}");
        assert_eq!(answer.fencing_token, handed[0].1.answer.fencing_token);
    }
}

#[test]
fn log_time_pauses_across_a_leader_change() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    c.send(old, 7, 1, 0, acquire(b"r", b"a", 0, 1_000)).unwrap();
    c.deliver();
    c.take_replies();
    c.run(ms(50));
    // No majority: nobody can lead while the outage lasts longer than the lease.
    let other = (1..=3).find(|&id| id != old).unwrap();
    c.isolated.extend([old, other]);
    c.run(ms(1_500));
    c.isolated.retain(|&id| id != other);
    let new = c.elect();
    assert_ne!(new, old);
    // ...but log time paused, so the lock is still held at the new leader.
    c.send(new, 8, 1, 0, acquire(b"r", b"b", 0, 1_000)).unwrap();
    c.deliver();
    assert_eq!(
        c.take_replies()[0].1.answer.status,
        Status::LockAcquisitionTimeout
    );
    // And it expires later, on the new leader's clock.
    c.run(ms(1_100));
    c.send(new, 8, 2, 0, acquire(b"r", b"b", 0, 1_000)).unwrap();
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.status, Status::Ok);
}

#[test]
fn status_needs_the_lease() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 60_000))
        .unwrap();
    c.deliver();
    c.take_replies();
    c.send(leader, 9, 1, 0, status(b"r")).unwrap();
    let answered = c.take_replies();
    assert_eq!(answered[0].1.holder.as_slice(), b"a");
    // Cut off, the leader's lease runs out and it stops answering reads.
    c.isolated.push(leader);
    c.run(ms(200));
    let result = c.send(leader, 9, 2, 0, status(b"r"));
    assert!(result.is_err());
    // (A new leader may re-send answers of commands it applied; the old one sends nothing.)
    assert!(c.take_replies().iter().all(|&(from, _)| from != leader));
}

#[test]
fn a_retransmit_of_an_uncommitted_request_is_not_proposed_twice() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let before = c.shard(leader).raft().last_index();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 1_000))
        .unwrap();
    c.send(leader, 7, 1, 1, acquire(b"r", b"a", 0, 1_000))
        .unwrap();
    assert_eq!(c.shard(leader).raft().last_index(), before + 1);
    c.deliver();
    assert_eq!(c.take_replies().len(), 1);
}

/// A request proposed before the replica counts into its node's in-flight counts is taken
/// out of them under the node's key when it applies (its source was hashed under the old).
#[test]
fn a_request_in_flight_when_the_counts_are_shared_applies_under_the_nodes_key() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 1_000))
        .unwrap();
    let node = in_flight::InFlight::new(8);
    c.shard(leader).share_in_flight(node.clone());
    assert_eq!(node.count(addr().ip()), 1, "carried over");
    c.deliver();
    assert_eq!(c.take_replies().len(), 1);
    assert_eq!((node.count(addr().ip()), node.sources()), (0, 0));
}

#[test]
fn without_a_lease_status_waits_for_a_confirmed_round() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 60_000))
        .unwrap();
    c.deliver();
    c.take_replies();
    // While a transfer to an unreachable node runs (until it is abandoned at 150 ms), the
    // lease is given up.
    let target = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.push(target);
    let now = c.now;
    c.shard(leader).transfer_leadership(now, target).unwrap();
    c.drain();
    c.run(ms(50));
    let now = c.now;
    assert!(!c.shard(leader).raft().lease_valid(now));
    assert_eq!(c.leader(), Some(leader));
    // STATUS is held until a majority acknowledged a heartbeat round started after it.
    c.send(leader, 9, 1, 0, status(b"r")).unwrap();
    assert!(
        c.take_replies().is_empty(),
        "answered without confirming leadership"
    );
    c.deliver();
    let replies = c.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].1.holder.as_slice(), b"a");
    // Cut off from the majority, it never answers (the read would be stale).
    c.isolated.retain(|&id| id != target);
    c.isolated.push(leader);
    c.send(leader, 9, 2, 0, status(b"r")).unwrap();
    c.deliver();
    assert!(c.take_replies().iter().all(|&(from, _)| from != leader));
}

/// Issue 7 item 9: a STATUS held for ReadIndex is answered within its own request's length
/// (spec §2.2 rule 5), also when STATUS requests of other lengths wait with it: the reply
/// names the holder exactly when `76 + its length` fits, and is never larger than its request.
#[test]
fn a_status_held_for_read_index_keeps_its_own_byte_budget() {
    let mut c = Cluster::new(3);
    let holder = [b'h'; 200];
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", &holder, 0, 60_000))
        .unwrap();
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.status, Status::Ok);
    let leader = {
        // The same leader, now without its lease.
        let target = (1..=3).find(|&id| id != leader).unwrap();
        c.isolated.push(target);
        let now = c.now;
        c.shard(leader).transfer_leadership(now, target).unwrap();
        c.drain();
        assert!(!c.shard(leader).raft().lease_valid(now));
        leader
    };
    // 331: the spec's length; 276 = 76 + 200 exactly; 275 one byte short; 76 the least.
    let lens: [u16; 4] = [331, 276, 275, 76];
    for (n, &len) in lens.iter().enumerate() {
        c.send(leader, 9, n as u64 + 1, 0, status_in(b"r", len))
            .unwrap();
    }
    assert!(c.take_replies().is_empty(), "answered before ReadIndex");
    c.deliver();
    let replies = c.take_replies();
    assert_eq!(replies.len(), lens.len(), "{replies:?}");
    for (from, reply) in replies {
        assert_eq!(from, leader);
        let len = usize::from(lens[reply.id.request as usize - 1]);
        let fits = 76 + holder.len() <= len;
        assert_eq!(
            (reply.holder.as_slice(), reply.holder_truncated),
            (if fits { &holder[..] } else { &[][..] }, !fits),
            "STATUS of {len} bytes"
        );
        assert!(76 + reply.holder.len() <= len, "larger than its request");
        assert_eq!(reply.answer.hold_count, 1);
    }
}

/// Issue 7 item 15: a leader answered STATUS from its applied state without firing the
/// timers due by then (spec §7.2.1), so a lease that had ended showed as held with 0 ms left
/// until the TICK that expires it committed. The answer must be the state after every timer
/// due at the STATUS's receipt.
#[test]
fn a_status_fires_the_timers_due_first() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 100))
        .unwrap();
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.status, Status::Ok);
    c.run(ms(99));
    assert!(c.take_replies().is_empty(), "expired early");
    // 2 ms later the lease has ended in log time; the leader's timer has not run yet, so no
    // TICK expires it in the log.
    c.now = c.now + ms(2);
    let now = c.now;
    assert!(c.shard(leader).raft().lease_valid(now));
    c.send(leader, 9, 1, 0, status(b"r")).unwrap();
    c.deliver();
    let replies = c.take_replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(
        (replies[0].1.answer, replies[0].1.holder.as_slice()),
        (Answer::bare(Status::Ok), &b""[..]),
        "free, not held with 0 ms left"
    );
}

/// The same on the ReadIndex path, and with a waiter: the answer shows the waiter holding the
/// lock it was handed at the expiry, not the old holder.
#[test]
fn a_status_through_read_index_fires_the_timers_due_first() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 100))
        .unwrap();
    c.send(leader, 8, 1, 0, acquire(b"r", b"b", 5_000, 60_000))
        .unwrap();
    c.deliver();
    assert_eq!(c.take_replies().len(), 2);
    c.run(ms(99));
    assert!(c.take_replies().is_empty(), "expired early");
    // The lease is given up (a transfer to a node it cannot reach), then the hold's lease ends.
    let target = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.push(target);
    let now = c.now;
    c.shard(leader).transfer_leadership(now, target).unwrap();
    c.drain();
    c.now = c.now + ms(2);
    c.send(leader, 9, 1, 0, status(b"r")).unwrap();
    c.deliver();
    // Abandoned after election_timeout_min: the leader proposes the TICK, and answers.
    c.run(ms(200));
    let replies = c.take_replies();
    let status = replies
        .iter()
        .find(|(_, r)| r.kind == RequestKind::Status)
        .expect("STATUS answered");
    assert_eq!(status.1.holder.as_slice(), b"b", "{replies:?}");
    assert_eq!(status.1.answer.waiter_count, 0);
}

#[test]
fn a_timer_due_while_handing_over_waits_for_the_new_leader() {
    // Review finding: the leader used to propose a TICK that Raft refuses during a transfer.
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 100))
        .unwrap();
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.status, Status::Ok);
    let target = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.push(target);
    let now = c.now;
    c.shard(leader).transfer_leadership(now, target).unwrap();
    c.drain();
    // The 100 ms lease falls due while the transfer runs; nothing is proposed, no spin.
    c.run(ms(120));
    let now = c.now;
    assert!(c.shard(leader).poll_timeout() > now);
    // Abandoned at 150 ms: the leader proposes the TICK and the lock frees.
    c.run(ms(100));
    c.send(leader, 8, 1, 0, acquire(b"r", b"b", 0, 1_000))
        .unwrap();
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.status, Status::Ok);
}

fn append(term: u64, prev_log_index: u64, prev_log_term: u64, leader_commit: u64) -> Message {
    Message::Append {
        term,
        prev_log_index,
        prev_log_term,
        entries: Default::default(),
        leader_commit,
        round: 1,
        transfer_to: None,
    }
}

#[test]
fn appends_that_contradict_raft_from_a_faulty_peer_are_dropped() {
    // Review finding: each of these used to reach an assert and kill the node.
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let third = (1..=3).find(|&id| id != leader && id != follower).unwrap();
    let term = c.shard(leader).raft().term();
    let now = c.now;
    // A second leader of the leader's own term, as seen by the leader and by a follower.
    c.shard(leader)
        .handle_message(now, follower, append(term, 0, 0, 0));
    c.shard(follower)
        .handle_message(now, third, append(term, 0, 0, 0));
    // A disagreement at a committed index.
    assert!(c.shard(follower).raft().commit_index() >= 1);
    c.shard(follower)
        .handle_message(now, leader, append(term, 1, 0, 0));
    // A term that would leave no room for another election.
    let last = c.shard(follower).raft().last_index();
    c.shard(follower)
        .handle_message(now, leader, append(u64::MAX, last, term, 0));
    assert_eq!(c.shard(follower).raft().term(), term);
    assert_eq!(c.shard(leader).raft().role(), Role::Leader);
    // Each was counted as coming from a faulty peer (the simulator requires none among
    // correct nodes).
    assert_eq!(c.shard(leader).raft().faulty_drops(), 1);
    assert_eq!(c.shard(follower).raft().faulty_drops(), 3);
    // The cluster carries on.
    c.drain();
    c.deliver();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 1_000))
        .unwrap();
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.status, Status::Ok);
}

#[test]
fn a_follower_far_behind_catches_up_from_the_leaders_snapshot() {
    let mut c = Cluster::new(3);
    for id in 1..=3 {
        c.shard(id).set_compaction(8, 2);
    }
    let leader = c.elect();
    let behind = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.push(behind);
    // Enough commands that the leader's log no longer holds what `behind` lacks.
    for n in 1..=40u64 {
        let resource = format!("r{}", n % 5);
        c.send(
            leader,
            7,
            n,
            0,
            acquire(resource.as_bytes(), b"a", 0, 60_000),
        )
        .unwrap();
        c.deliver();
    }
    c.take_replies();
    let now = c.now;
    assert!(c.shard(leader).raft().snapshot_meta().index > c.shard(behind).raft().last_index());
    let _ = now;
    c.isolated.clear();
    c.run(ms(200));
    // Same state everywhere: holds and hold counts (re-entrant acquires of one client).
    let views: Vec<Vec<(u32, u64)>> = (1..=3)
        .map(|id| {
            let table = c.shard(id).table().expect("INIT applied");
            (0..5)
                .map(|r| {
                    let (answer, _) = table.read_status(Instant::ZERO, format!("r{r}").as_bytes());
                    (answer.hold_count, answer.fencing_token)
                })
                .collect()
        })
        .collect();
    assert_eq!(views[0], views[1]);
    assert_eq!(views[1], views[2]);
    assert!(views[0].iter().all(|&(count, _)| count == 8));
    assert!(
        c.shard(behind).raft().snapshot_meta().index > 0,
        "installed a snapshot"
    );
    // A replica restarted from its snapshot and log resumes with the same state.
    let snapshot = c.shard(behind).raft().snapshot_meta();
    let data = c.shard(behind).raft().snapshot_data().cloned().unwrap();
    let hard = c.shard(behind).hard_state();
    let log = c.shard(behind).raft().log().to_vec();
    let now = c.now;
    let restarted = Replica::restore(
        config(behind, 3),
        99,
        hard,
        Some((snapshot, data)),
        log,
        now,
    )
    .unwrap();
    let table = restarted.table().unwrap();
    let (answer, _) = table.read_status(Instant::ZERO, b"r1");
    assert_eq!((answer.hold_count, answer.fencing_token), views[0][1]);
}

/// Review finding: a snapshot whose header stamp is behind its table's clock used to pass
/// decoding and then crash the replica (the table's clock would have gone back). Such a
/// snapshot from a faulty or forged peer is now refused before Raft installs it (issue 8):
/// the replica keeps its state, and never crashes.
#[test]
fn a_snapshot_stamped_behind_its_tables_clock_is_refused_not_a_crash() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let term = c.shard(leader).raft().term();
    let last = c.shard(leader).raft().last_index();
    assert_eq!(c.shard(follower).raft().commit_index(), last);
    // A table whose clock is far ahead (year ~2^50 us), header stamp 0.
    let mut table = LockTable::new(lock_table::Config {
        fencing_token_first: 5,
        ..lock_table::Config::default()
    });
    table.handle_timeout(Instant::from_micros(1 << 50));
    let mut data = Vec::new();
    data.extend_from_slice(&SHARD_SNAPSHOT_MAGIC);
    data.push(1);
    data.extend_from_slice(&0u64.to_be_bytes());
    data.push(1);
    table.snapshot(&mut data);
    assert!(decode_snapshot(c.shard(follower).config(), &data).is_err());
    let now = c.now;
    c.shard(follower).handle_message(
        now,
        leader,
        Message::InstallSnapshot {
            term,
            last_index: last + 1,
            last_term: term,
            offset: 0,
            total_len: data.len() as u64,
            data: data.clone(),
            round: 0,
        },
    );
    assert_eq!(c.shard(follower).raft().snapshot_meta().index, 0);
    assert_eq!(c.shard(follower).raft().faulty_drops(), 1);
    c.drain();
    // Two ordinary requests: the second entry follows the snapshot and is applied.
    for n in 1..=3u64 {
        c.send(leader, 7, n, 0, acquire(b"r", b"a", 0, 60_000))
            .unwrap();
        c.deliver();
        c.run(ms(20));
    }
}

/// Review finding: a follower behind the leader's snapshot never caught up while the leader
/// compacted again before each transfer completed (a new snapshot restarts the transfer from
/// byte 0). The leader now holds off compaction while a transfer runs. Scaled down: a
/// snapshot every 8 entries, a table of tens of KB, a one-step delay on the follower's link,
/// steady load.
#[test]
fn a_follower_behind_a_snapshot_catches_up_under_steady_load() {
    let mut c = Cluster::new(3);
    for id in 1..=3 {
        c.shard(id).set_compaction(8, 2);
    }
    let leader = c.elect();
    let behind = (1..=3).find(|&id| id != leader).unwrap();
    c.isolated.push(behind);
    // A table of a few tens of KB: 250 held resources with long ids.
    for n in 1..=250u64 {
        let resource = format!("{n:0>200}");
        c.send(
            leader,
            7,
            n,
            0,
            acquire(resource.as_bytes(), b"a", 0, 600_000),
        )
        .unwrap();
        c.deliver();
    }
    c.take_replies();
    let size = c.shard(leader).raft().snapshot_data().unwrap().len();
    assert!(size > 30_000, "snapshot {size} bytes");
    c.isolated.clear();
    // Steady load; messages to or from `behind` take one iteration (a round trip = 2).
    let mut in_flight: Vec<(NodeId, NodeId, Message)> = Vec::new();
    let mut request = 1_000u64;
    for _ in 0..400 {
        let per = 4;
        for _ in 0..per {
            request += 1;
            let _ = c.send(leader, 8, request, 0, acquire(b"hot", b"b", 0, 0));
        }
        c.now = c.now + ms(1);
        let now = c.now;
        for shard in c.replicas.iter_mut().flatten() {
            if shard.poll_timeout() <= now {
                shard.handle_timeout(now);
            }
        }
        c.drain();
        let arrived = std::mem::take(&mut in_flight);
        for (from, to, msg) in arrived {
            c.shard(to).handle_message(now, from, msg);
            c.drain();
        }
        while let Some((from, to, msg)) = c.net.pop_front() {
            if from == behind || to == behind {
                in_flight.push((from, to, msg));
                continue;
            }
            c.shard(to).handle_message(now, from, msg);
            c.drain();
        }
        c.take_replies();
    }
    let leader_applied = c.shard(leader).applied_index();
    let behind_applied = c.shard(behind).applied_index();
    assert!(
        leader_applied - behind_applied < 100,
        "follower stuck: leader applied {leader_applied}, follower {behind_applied}, \
         follower snapshot {:?}",
        c.shard(behind).raft().snapshot_meta()
    );
}

/// Issue 7 item 10: the default TTL, the OVERLOADED retry hint and the startup grace may
/// differ between replicas (a rolling restart that changes them): the leader logs the values
/// it applies with, so every replica applies each command the same way, and a failover to a
/// replica with other values changes no lease already granted.
#[test]
fn replicas_with_other_defaults_apply_every_command_with_the_leaders() {
    let mut c = Cluster::with(3, |id, config| {
        config.table.ttl_default_ms = 10_000 * id as u32;
        config.table.retry_after_ms = id as u32;
    });
    let leader = c.elect();
    // ttl_ms 0: the server's default, which is the leader's.
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 0)).unwrap();
    c.deliver();
    let granted = c.take_replies()[0].1.answer;
    assert_eq!(granted.status, Status::Ok);
    assert_eq!(granted.lease_ms, 10_000 * leader as u32);
    c.run(ms(50));
    let views: Vec<_> = (1..=3)
        .map(|id| {
            let table = c.shard(id).table().unwrap();
            table.read_status(table.clock(), b"r").0
        })
        .collect();
    assert!(
        views.iter().all(|v| *v == views[0]),
        "replicas disagree about one grant: {views:?}"
    );
    // A failover to a replica with another default: the hold is the one granted.
    c.isolated.push(leader);
    let new = c.elect();
    c.send(new, 8, 1, 0, acquire(b"r", b"b", 0, 0)).unwrap();
    c.deliver();
    let refused = c.take_replies()[0].1.answer;
    assert_eq!(refused.status, Status::LockAcquisitionTimeout);
    // Its own grants use its own default from now on.
    c.send(new, 8, 2, 0, acquire(b"s", b"b", 0, 0)).unwrap();
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.lease_ms, 10_000 * new as u32);
}

/// The chunks of `data` as a leader of `term` sends a snapshot through `last_index`.
fn snapshot_chunks(term: u64, last_index: u64, data: &[u8]) -> Vec<Message> {
    data.chunks(udplock_protocol::SNAPSHOT_CHUNK_MAX)
        .enumerate()
        .map(|(n, chunk)| Message::InstallSnapshot {
            term,
            last_index,
            last_term: term,
            offset: (n * udplock_protocol::SNAPSHOT_CHUNK_MAX) as u64,
            total_len: data.len() as u64,
            data: chunk.to_vec(),
            round: 1,
        })
        .collect()
}

/// Issue 8 item 4: a junk INSTALL_SNAPSHOT (valid framing, garbage bytes) replaced a
/// follower's state: Raft installed it, the replica then served nothing, and the node that
/// stored it could not restart ("not a shard snapshot"). A follower now decodes the complete
/// snapshot as its table would restore it before anything replaces its state: a bad one is
/// dropped and counted, and the replica keeps its state, its snapshot and its log.
#[test]
fn a_junk_snapshot_is_dropped_and_the_replica_keeps_its_state() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    c.send(leader, 7, 1, 0, acquire(b"r", b"a", 0, 60_000))
        .unwrap();
    c.deliver();
    let granted = c.take_replies()[0].1.answer;
    c.run(ms(50));
    let term = c.shard(leader).raft().term();
    let last = c.shard(follower).raft().last_index();
    let (meta, commit) = {
        let raft = c.shard(follower).raft();
        (raft.snapshot_meta(), raft.commit_index())
    };
    // Three chunks of garbage, as the leader of the term would send a snapshot.
    let junk: Vec<u8> = (0..3_000u32).map(|n| (n * 7 + 3) as u8).collect();
    let now = c.now;
    for chunk in snapshot_chunks(term, last + 5, &junk) {
        c.shard(follower).handle_message(now, leader, chunk);
    }
    // Its answers would only puzzle the leader: drop them.
    while c.shard(follower).poll_message().is_some() {}
    let raft = c.shard(follower).raft();
    assert_eq!(
        raft.snapshot_meta(),
        meta,
        "the junk snapshot was installed"
    );
    assert_eq!(raft.commit_index(), commit);
    assert_eq!(raft.last_index(), last);
    assert_eq!(raft.faulty_drops(), 1, "the junk snapshot was not counted");
    let (held, _) = c
        .shard(follower)
        .table()
        .expect("the table survived")
        .read_status(Instant::ZERO, b"r");
    assert_eq!(held.fencing_token, granted.fencing_token);
    // The replica keeps working: it applies what commits next.
    c.send(leader, 7, 2, 0, acquire(b"s", b"a", 0, 60_000))
        .unwrap();
    c.deliver();
    c.run(ms(50));
    let stats = c.shard(follower).stats();
    assert_eq!(stats.table.held, 2);
    assert_eq!(stats.applied_index, c.shard(leader).applied_index());
}

// ---- The replica's invariants fire (each check can fail) ----

/// A replica of a 3-replica shard that served one ACQUIRE (its leader if `leader`, else a
/// follower), broken by `mutate`, then checked as after an input.
fn check_broken(leader: bool, mutate: impl FnOnce(&mut Replica)) {
    let mut cluster = Cluster::new(3);
    let leader_id = cluster.elect();
    cluster
        .send(leader_id, 1, 1, 0, acquire(b"r", b"a", 0, 10_000))
        .unwrap();
    cluster.run(ms(50));
    let id = if leader { leader_id } else { leader_id % 3 + 1 };
    let shard = cluster.shard(id);
    assert!(shard.table().is_some() && shard.applied_index() > 0);
    shard.check_invariants();
    mutate(shard);
    shard.check_invariants();
}

#[test]
fn the_check_passes_on_a_replica_left_alone() {
    check_broken(true, |_| {});
    check_broken(false, |_| {});
}

#[test]
#[should_panic(expected = "applied")]
fn an_applied_index_behind_the_commit_index_is_a_bug() {
    check_broken(false, |shard| shard.applied_index -= 1);
}

#[test]
#[should_panic(expected = "assertion failed: self.raft.role() != Role::Leader")]
fn a_leader_without_its_log_clock_is_a_bug() {
    check_broken(true, |shard| shard.clock = None);
}

#[test]
#[should_panic(expected = "clock.term == self.raft.term()")]
fn a_log_clock_of_an_earlier_term_is_a_bug() {
    check_broken(true, |shard| {
        if let Some(clock) = shard.clock.as_mut() {
            clock.term -= 1;
        }
    });
}

#[test]
#[should_panic(expected = "self.applied_stamp <= clock.stamped")]
fn an_applied_stamp_beyond_the_leaders_log_time_is_a_bug() {
    check_broken(true, |shard| {
        shard.applied_stamp = shard.applied_stamp + ms(1_000)
    });
}

#[test]
#[should_panic(expected = "self.replies.is_empty()")]
fn a_reply_waiting_on_a_follower_is_a_bug() {
    check_broken(false, |shard| {
        let reply = Reply {
            to: addr(),
            id: RequestId {
                session: 1,
                request: 2,
            },
            attempt: 0,
            kind: RequestKind::Status,
            answer: lock_table::Answer::bare(Status::Ok),
            holder: IdBuf::EMPTY,
            holder_truncated: false,
        };
        shard.replies.push_back(reply);
    });
}

#[test]
#[should_panic(expected = "applied < tick")]
fn a_pending_tick_already_applied_is_a_bug() {
    check_broken(true, |shard| shard.tick_pending = Some(shard.applied_index));
}

#[test]
#[should_panic(expected = "applied > 0")]
fn a_table_before_init_applied_is_a_bug() {
    let config = config(1, 3);
    let mut shard = Replica::new(
        config.clone(),
        1,
        HardState::default(),
        Vec::new(),
        Instant::ZERO,
    );
    shard.check_invariants();
    shard.table = Some(LockTable::new(lock_table::Config {
        fencing_token_first: 1,
        ..config.table
    }));
    shard.check_invariants();
}

#[test]
#[should_panic(expected = "self.proposed.len() as u64 <= last - applied")]
fn more_proposed_requests_than_unapplied_entries_is_a_bug() {
    check_broken(true, |shard| {
        let id = RequestId {
            session: 9,
            request: 9,
        };
        let proposed = Proposed {
            index: shard.applied_index + 1,
            source: shard.in_flight.key(std::net::Ipv4Addr::LOCALHOST.into()),
        };
        shard.proposed.insert(id, proposed);
    });
}

/// Walks the proposed requests, which only debug builds do.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "applied < index")]
fn a_proposed_request_at_an_applied_index_is_a_bug() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    // Cut off, the leader keeps its proposal uncommitted.
    cluster.isolated = (1..=3).filter(|&id| id != leader).collect();
    cluster
        .send(leader, 1, 1, 0, acquire(b"r", b"a", 0, 10_000))
        .unwrap();
    let shard = cluster.shard(leader);
    shard.check_invariants();
    let applied = shard.applied_index;
    let proposed = shard.proposed.values_mut().next().expect("proposed");
    assert!(proposed.index == applied + 1);
    proposed.index = applied;
    shard.check_invariants();
}

/// The one conversion left at the log boundary: a client request proposed as a REQUEST
/// command ([`log_command`]) and read back from the entry's bytes ([`logged_request`]) is the
/// same request (the same operation, ids, attempt and reply address, and the same answers:
/// the datagram length keeps whether it pays for a WAITING), at the stamp it was logged with.
mod log_round_trip {
    use proptest::prelude::*;

    use super::*;

    fn id() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 1..=255)
    }

    fn body() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>, u32, u32)> {
        (0u8..4, id(), id(), any::<u32>(), any::<u32>())
    }

    fn view<'a>(
        &(op, ref resource, ref client, a, b): &'a (u8, Vec<u8>, Vec<u8>, u32, u32),
    ) -> RequestBody<'a> {
        match op {
            0 => RequestBody::Acquire {
                resource,
                client,
                wait_ms: a,
                ttl_ms: b,
            },
            1 => RequestBody::Release { resource, client },
            2 => RequestBody::Renew {
                resource,
                client,
                ttl_ms: a,
            },
            _ => RequestBody::Configure {
                resource,
                default_ttl_ms: a,
            },
        }
    }

    proptest! {
        #[test]
        fn a_logged_request_reads_back_as_itself(
            b in body(),
            (session, request) in (1..=u64::MAX, 1..=u64::MAX),
            attempt in any::<u16>(),
            (ip, port) in (any::<[u8; 4]>(), any::<u16>()),
            datagram_len in (udplock_protocol::REQUEST_LEN_MIN as u16)..=(udplock_protocol::DATAGRAM_LEN_MAX as u16),
            stamp_us in 0..=u64::MAX / 2,
        ) {
            let sent = Request {
                id: RequestId { session, request },
                attempt,
                reply_to: SocketAddr::from((ip, port)),
                body: view(&b),
                datagram_len,
            };
            let command = log_command(Instant::from_micros(stamp_us), &sent);
            let mut entry = [0u8; LOG_COMMAND_LEN_MAX];
            let n = command.encode(&mut entry).unwrap();
            let decoded = LogCommand::decode(&entry[..n]).unwrap();
            let (stamp, applied) = logged_request(&decoded).unwrap();
            prop_assert_eq!(stamp, stamp_us);
            prop_assert_eq!(applied.body, sent.body);
            prop_assert_eq!((applied.id, applied.attempt, applied.reply_to), (sent.id, sent.attempt, sent.reply_to));
            prop_assert_eq!(applied.room_for_waiting(), sent.room_for_waiting());
            prop_assert!(applied.datagram_len <= sent.datagram_len);
            prop_assert_eq!(logged_request(&LogCommand::Tick { stamp: stamp_us }), None);
        }
    }
}

/// Spec §8.5, "Configuration": a snapshot records the configuration as of its last index, so
/// a follower that installs it, and a replica that restarts from it, use that configuration
/// once the CONFIG entries are compacted away.
#[test]
fn a_snapshot_records_the_configuration_and_a_follower_that_installs_it_adopts_it() {
    let mut c = Cluster::with(4, |_, config| config.raft.voters = vec![1, 2, 3]);
    for id in 1..=4 {
        c.shard(id).set_compaction(8, 2);
    }
    c.isolated.push(4);
    let leader = c.elect();
    assert_ne!(leader, 4);
    let now = c.now;
    let added = c
        .shard(leader)
        .change_membership(now, raft::MembershipChange::AddLearner(4))
        .expect("added");
    c.drain();
    c.deliver();
    c.run(ms(50));
    // Each member named with the replica id the leader heard from it (spec §8.5, "Replica
    // identities"); node 4, not heard from yet, with 0.
    let with_learner = c.shard(leader).raft().membership().clone();
    assert_eq!(
        (&with_learner.voters[..], &with_learner.learners[..]),
        (&[1, 2, 3][..], &[4][..])
    );
    assert_eq!(with_learner.replica_of(4), Some(0));
    for n in 1..=40u64 {
        c.send(leader, 7, n, 0, acquire(b"r", b"a", 0, 60_000))
            .unwrap();
        c.deliver();
    }
    assert!(
        c.shard(leader).raft().snapshot_meta().index >= added,
        "the CONFIG entry is compacted away"
    );
    assert_eq!(
        c.shard(4).raft().last_index(),
        0,
        "node 4 heard nothing yet"
    );
    c.isolated.clear();
    c.run(ms(300));
    assert!(
        c.shard(4).raft().snapshot_meta().index > 0,
        "node 4 installed a snapshot"
    );
    assert_eq!(c.shard(4).raft().membership(), &with_learner);
    assert_eq!(
        c.shard(4).raft().commit_index(),
        c.shard(leader).raft().commit_index()
    );
    // Restarted from their snapshots (the CONFIG entry compacted away), leader and learner
    // keep the configuration.
    for id in [leader, 4] {
        let shard = c.shard(id);
        let snapshot = shard.raft().snapshot_meta();
        let first = shard.raft().first_index();
        assert!(
            (first..=shard.raft().last_index())
                .all(
                    |i| raft::Membership::of_entry(&shard.raft().entry(i).unwrap().data).is_none()
                ),
            "no CONFIG left in the log of node {id}"
        );
        let data = shard.raft().snapshot_data().cloned().unwrap();
        let hard = shard.hard_state();
        let log = shard.raft().log().to_vec();
        let config = shard.config().clone();
        let restarted =
            Replica::restore(config, 99, hard, Some((snapshot, data)), log, c.now).unwrap();
        assert_eq!(restarted.raft().membership(), &with_learner, "node {id}");
    }
}

/// Issue 12 item 4: the default table limits used to allow snapshots of gigabytes, far past
/// SNAPSHOT_LEN_MAX; a shard pushed past it stopped compacting for good. Now the limits must
/// keep the longest snapshot within it.
#[test]
fn limits_whose_snapshot_could_pass_snapshot_len_max_are_refused() {
    let valid = |table: lock_table::Config| {
        Config {
            table,
            ..config(1, 1)
        }
        .validate()
    };
    assert_eq!(valid(lock_table::Config::default()), Ok(()));
    // The limits before issue 12: 2.2 GB of resources alone.
    let before = lock_table::Config {
        resources_max: 4_000_000,
        waiters_max: 1_000_000,
        sessions_max: 16_384,
        ..lock_table::Config::default()
    };
    assert!(before.snapshot_len_max() > udplock_protocol::SNAPSHOT_LEN_MAX);
    assert_eq!(valid(before).map_err(|e| e.field), Err("resources_max"));
    // Exactly at the bound is allowed, one resource more is not.
    let room = udplock_protocol::SNAPSHOT_LEN_MAX
        - SNAPSHOT_ENVELOPE_LEN_MAX
        - lock_table::Config {
            resources_max: 0,
            ..lock_table::Config::default()
        }
        .snapshot_len_max();
    let resources_max = u32::try_from(room / 544).unwrap();
    let at_bound = lock_table::Config {
        resources_max,
        ..lock_table::Config::default()
    };
    assert!(
        at_bound.snapshot_len_max() + SNAPSHOT_ENVELOPE_LEN_MAX
            <= udplock_protocol::SNAPSHOT_LEN_MAX
    );
    assert_eq!(valid(at_bound.clone()), Ok(()));
    let over = lock_table::Config {
        resources_max: resources_max + 1,
        ..at_bound
    };
    assert!(valid(over).is_err());
}

/// Acquires `count` distinct locks from session 7 at the leader, delivering each; returns
/// the statuses answered.
fn acquire_many(c: &mut Cluster, leader: NodeId, first: u64, count: u64) -> Vec<Status> {
    let mut statuses = Vec::new();
    for n in first..first + count {
        let resource = format!("resource-{n:06}");
        c.send(
            leader,
            7,
            n,
            0,
            acquire(resource.as_bytes(), b"a", 0, 60_000),
        )
        .unwrap();
        c.deliver();
        statuses.extend(c.take_replies().iter().map(|(_, r)| r.answer.status));
    }
    statuses
}

/// Issue 12 item 4: a shard that cannot compact (here: snapshots off) refuses requests once
/// its log passes its log-bytes limit, changing nothing, so its log stops growing; once it
/// can compact, it serves again. Without the limit its log grew by every request for good.
#[test]
fn the_log_bytes_limit_refuses_requests_until_the_log_compacts() {
    let mut c = Cluster::new(3);
    let log_bytes_max = 16 * 1024;
    for id in 1..=3 {
        c.shard(id).set_compaction(0, 0);
        c.shard(id).set_log_bytes_max(log_bytes_max);
    }
    let leader = c.elect();
    let statuses = acquire_many(&mut c, leader, 1, 400);
    let granted = statuses.iter().filter(|&&s| s == Status::Ok).count();
    let refused = statuses
        .iter()
        .filter(|&&s| s == Status::Overloaded)
        .count();
    assert_eq!(granted + refused, 400, "{statuses:?}");
    assert!(
        granted > 0 && refused > 0,
        "granted {granted}, refused {refused}"
    );
    // Every refusal came after the last grant: the limit holds once reached.
    let first_refusal = statuses
        .iter()
        .position(|&s| s == Status::Overloaded)
        .unwrap();
    assert!(statuses[first_refusal..]
        .iter()
        .all(|&s| s == Status::Overloaded));
    let bytes = c.shard(leader).raft().log_bytes();
    let entry_max = (LOG_COMMAND_LEN_MAX + raft::ENTRY_MEMORY_OVERHEAD) as u64;
    assert!(bytes <= log_bytes_max + entry_max, "log of {bytes} bytes");
    // Refused requests changed nothing: the table holds exactly the granted locks.
    c.run(ms(50));
    for id in 1..=3 {
        assert_eq!(
            c.shard(id).stats().table.held,
            granted as u64,
            "replica {id}"
        );
    }
    // Compaction back on: the log shrinks and the leader serves again.
    for id in 1..=3 {
        c.shard(id)
            .set_compaction(COMPACT_EVERY_DEFAULT, COMPACT_KEEP_DEFAULT);
    }
    c.run(ms(50));
    assert!(c.shard(leader).raft().log_bytes() < log_bytes_max / 2);
    let statuses = acquire_many(&mut c, leader, 1_000, 10);
    assert_eq!(statuses, vec![Status::Ok; 10]);
}

/// Issue 12 item 4: past half its log-bytes limit a shard compacts whatever its cadence, so
/// a steady stream of requests never meets the limit while compaction works.
#[test]
fn a_shard_compacts_by_log_bytes_before_its_cadence() {
    let mut c = Cluster::new(3);
    let log_bytes_max = 16 * 1024;
    for id in 1..=3 {
        c.shard(id).set_log_bytes_max(log_bytes_max);
    }
    let leader = c.elect();
    let statuses = acquire_many(&mut c, leader, 1, 1_000);
    assert_eq!(statuses, vec![Status::Ok; 1_000]);
    c.run(ms(50));
    for id in 1..=3 {
        let raft = c.shard(id).raft();
        assert!(raft.snapshot_meta().index > 0, "replica {id} compacted");
        assert!(
            raft.log_bytes() < log_bytes_max,
            "replica {id}: {}",
            raft.log_bytes()
        );
        assert_eq!(c.shard(id).stats().table.held, 1_000);
    }
}

/// Issue 12 item 4: one source address cannot take a shard's whole window of uncommitted
/// proposals: past IN_FLIGHT_PER_SOURCE_MAX in flight (any port), its next request gets
/// OVERLOADED, while another address's is still proposed; once they commit, it is served.
#[test]
fn one_source_gets_overloaded_past_its_requests_in_flight() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let followers: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    c.isolated = followers.clone();
    let send_from = |c: &mut Cluster, from: &str, request: u64| -> Vec<Status> {
        let resource = format!("r{request}");
        let (body, datagram_len) = acquire(resource.as_bytes(), b"a", 0, 60_000);
        let now = c.now;
        c.shard(leader)
            .handle_request(
                now,
                Request {
                    id: RequestId {
                        session: 7,
                        request,
                    },
                    attempt: 0,
                    reply_to: from.parse().unwrap(),
                    body,
                    datagram_len,
                },
            )
            .unwrap();
        c.drain();
        c.take_replies()
            .iter()
            .map(|(_, r)| r.answer.status)
            .collect()
    };
    let max = u64::from(IN_FLIGHT_PER_SOURCE_MAX);
    for n in 1..=max {
        let port = 1_000 + n % 7;
        assert_eq!(send_from(&mut c, &format!("10.0.0.1:{port}"), n), vec![]);
    }
    assert_eq!(
        send_from(&mut c, "10.0.0.1:2000", max + 1),
        vec![Status::Overloaded]
    );
    assert_eq!(send_from(&mut c, "10.0.0.2:2000", max + 2), vec![]);
    // Once the followers are back, everything in flight commits and the source is served.
    c.isolated.clear();
    c.run(ms(100));
    let granted = c.take_replies().len() as u64;
    assert_eq!(granted, max + 1);
    assert_eq!(send_from(&mut c, "10.0.0.1:2000", max + 3), vec![]);
    c.deliver();
    assert_eq!(c.take_replies()[0].1.answer.status, Status::Ok);
}
