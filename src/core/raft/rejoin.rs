//! A node that lost its state rejoins without contradicting what it did before (spec §8.5,
//! "Rejoining without state"): it asks the others for their terms (TermQuery), answers their
//! questions (TermReply, NoStateReply), and goes through the recovery states (asking, then
//! catching up) before it votes or campaigns.
//!
//! # Rejoining without state (spec §8.5)
//!
//! A node that lost its persisted state (durability `memory`, a replaced disk, an emptied or
//! mistyped data directory, a rejoin cut short) is built with [`Raft::rejoin`], or with
//! [`Raft::start_new`] when its operator says this start may create the cluster. Either way
//! it first asks every other voter (TermQuery) and acts on nothing else; nodes that hold
//! state answer TermReply (term, last index), nodes that hold none NoStateReply (new or not).
//!
//! - *Rejoin* (rules 3 and 4): once `q` of the OTHERS answered TermReply, every quorum the
//!   node took part in before (a vote, an acknowledgement, in some term `T`) had `q - 1`
//!   members besides it, and `(q - 1) + q > n - 1`, so some replier took part in it too and
//!   its term is at least `T`. The node takes the largest term as its own, with a vote in it,
//!   so it never votes twice in a term nor acknowledges an older leader; and it votes only once
//!   its commit index holds an entry of the current leader's term (and, under the leader of
//!   the very term it rejoined at, reaches the largest last index the repliers reported: every
//!   committed entry it acknowledged is held by a replier, so lies at or below it). If all
//!   `q` said term 0, it never took part in anything: it starts fresh.
//! - *New* (rule 6): only when EVERY other voter answered, after this node lost its state,
//!   that it holds nothing beyond term 0. A node that took part in anything has a term of at
//!   least 1 from then on while it keeps its state, so each of them had lost its state when it
//!   answered: nothing any quorum decided survives anywhere (a new cluster, or a total loss),
//!   so this node's fresh start contradicts nothing. With only `q` such answers, a node that
//!   keeps an acknowledged entry but is down could be outvoted by nodes that lost theirs (the
//!   test `a_new_node_waits_while_any_other_node_may_hold_state` shows two leaders of one term
//!   then); so a node that may hold state, even an unreachable one, keeps a new node asking.

use rand::Rng;

use super::{Config, HardState, Message, NodeId, Raft, Role};
use crate::core::time::Instant;

/// The rejoin rule's progress (spec §8.5, "Rejoining without state").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Recovery {
    /// A node with its state, or one that finished rejoining.
    None,
    /// Asking the others for their terms: the latest answer of each other voter so far.
    Querying {
        replies: Vec<(NodeId, TermAnswer)>,
        next_query: Instant,
        /// Random per rejoin: only answers echoing it count (not those to a query of an
        /// earlier life of this node, delivered late).
        nonce: u64,
        /// This node is *new* (spec §8.5 rule 6, see `Raft::start_new`): it never held
        /// state for the shard and may help create the cluster.
        new: bool,
    },
    /// Knows a safe term (`term`); acknowledges entries, but neither votes nor campaigns
    /// until caught up: its commit index at an entry of the current leader's own term, and,
    /// while that leader is of `term` itself, at least `target`, the largest last index the
    /// repliers reported. (Every committed entry it acknowledged before it lost its state is
    /// held by some replier: the repliers meet every quorum it was part of.)
    CatchingUp { term: u64, target: u64 },
}

/// What another voter answered a TermQuery (spec §8.5, rules 2, 3 and 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TermAnswer {
    /// It holds state for the shard (TermReply): its current term and last index.
    State { term: u64, last_index: u64 },
    /// It holds none (NoStateReply); `new`: it never did, and may help create the cluster.
    NoState { new: bool },
}

impl Raft {
    /// A node that restarts WITHOUT its state (durability `memory`, lost or emptied files,
    /// a rejoin cut short). It must not act as the node it was: it could vote a second time
    /// in a term it voted in, acknowledge a stale leader, or help elect a leader lacking an
    /// entry it acknowledged and then forgot. So (spec §8.5, "Rejoining without state"):
    /// 1. it asks every other voter for its term (TermQuery) and acts on nothing else until
    ///    a quorum-sized set of the OTHERS that hold state answered (TermReply): any quorum
    ///    it took part in before, in some term T, shares a member with that set
    ///    (quorum - 1 + quorum > n - 1), whose term is at least T;
    /// 2. it takes the largest term reported and counts itself as having voted in it, so it
    ///    never votes twice in a term and refuses leaders of older terms;
    /// 3. it acknowledges entries but neither votes nor campaigns until its commit index
    ///    reaches an entry of the current leader's own term (its log then holds everything
    ///    committed before that term) and, in the term it rejoined at, the largest last
    ///    index the repliers reported;
    /// 4. if every one of those replies says term 0, it never took part in a quorum: it
    ///    starts fresh.
    ///
    /// Nodes that hold no state answer too (NoStateReply) but do not count: they cannot
    /// vouch for a term. So a cluster whose nodes ALL start without state waits, whatever its
    /// size (a single voter too: nobody else can vouch for anything): that is a new cluster,
    /// whose nodes start with [`Raft::start_new`], or a total loss, which needs an operator.
    pub fn rejoin(config: Config, rng_seed: u64, now: Instant) -> Raft {
        Raft::recovering(config, rng_seed, now, false)
    }

    /// A node WITHOUT state that is *new* (spec §8.5 rule 6): it never held state for this
    /// shard, and its operator lets it help create the cluster (`--new-cluster`). It asks
    /// like [`Raft::rejoin`] and answers others' queries that it is new. It starts fresh only
    /// when EVERY other voter answered, after this node lost whatever state it had, that it
    /// holds no state beyond term 0 (a TermReply of term 0, or a NoStateReply saying new):
    /// then no node held anything a quorum ever decided, so there is nothing this node could
    /// contradict — a new cluster, or a total loss, which nothing can undo. If instead a
    /// quorum of the others answer with their state, it rejoins by the rule as any node
    /// without state does: next to a running cluster, a node started as new simply rejoins.
    pub fn start_new(config: Config, rng_seed: u64, now: Instant) -> Raft {
        Raft::recovering(config, rng_seed, now, true)
    }

    fn recovering(config: Config, rng_seed: u64, now: Instant, new: bool) -> Raft {
        let mut raft = Raft::new(config, rng_seed, HardState::default(), Vec::new(), now);
        // The replica id it drew (spec §8.5, "Replica identities") travels in no message it
        // sends while asking (TermQuery, NoStateReply), so it is stored only when it stops
        // asking (`decide_rejoin`). Storing nothing before keeps a replica that stops while
        // asking exactly as it started: its mark says what it is (`core::restart`).
        raft.hard_changed = false;
        let nonce = raft.rng.gen::<u64>();
        raft.recovery = Recovery::Querying {
            replies: Vec::new(),
            next_query: now + raft.config.heartbeat_interval,
            nonce,
            new,
        };
        raft.broadcast(Message::TermQuery { term: 0, nonce });
        // A single new voter has nobody to wait for (rule 6 holds at once).
        raft.decide_rejoin(now);
        raft
    }

    /// Whether the node is still rejoining (see `rejoin`): asking, or catching up.
    pub fn rejoining(&self) -> bool {
        self.recovery != Recovery::None
    }

    /// Whether the node is still asking the others for their terms (see `rejoin`): it then
    /// acts on nothing else.
    pub fn asking(&self) -> bool {
        matches!(self.recovery, Recovery::Querying { .. })
    }

    /// Whether the node is still asking as a *new* node (see `start_new`). It stops being
    /// new once it starts fresh or rejoins by the rule.
    pub fn asking_as_new(&self) -> bool {
        matches!(self.recovery, Recovery::Querying { new: true, .. })
    }

    /// While the node is still asking (see `rejoin`): what each other voter answered so far,
    /// for the shell's logs: `(voter, Some(term))` for a node that holds state,
    /// `(voter, None)` for one that holds none (new or not). Voters that never answered are
    /// missing. Empty once the node no longer asks.
    pub fn rejoin_answers(&self) -> Vec<(NodeId, Option<u64>, bool)> {
        match &self.recovery {
            Recovery::Querying { replies, .. } => replies
                .iter()
                .map(|&(id, answer)| match answer {
                    TermAnswer::State { term, .. } => (id, Some(term), false),
                    TermAnswer::NoState { new } => (id, None, new),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A TermQuery from a node that lost its state (spec §8.5, rule 2): answered with this
    /// node's term, and a leader starts over with the asker.
    pub(super) fn handle_term_query(&mut self, from: NodeId, nonce: u64) {
        // Spec §8.5, rule 2. A node still asking has no term worth telling, so it says
        // only that it holds no state, and whether it is new (rule 6); a node that
        // holds state tells its term and last index.
        let answer = match self.recovery {
            Recovery::Querying { new, .. } => Message::NoStateReply {
                term: self.hard.term,
                nonce,
                new,
            },
            _ => Message::TermReply {
                term: self.hard.term,
                last_index: self.log.last_index(),
                nonce,
            },
        };
        self.send(from, answer);
        // Only a node that lost its state asks: whatever it acknowledged is gone, so
        // the leader starts over with it (a late copy of the question only makes it
        // resend what the node already has), and no answer of its earlier life,
        // which answers a round up to this one, counts any more (see
        // `current_life`; issue 7 B5).
        if self.role == Role::Leader {
            let (last, round) = (self.log.last_index(), self.round);
            if let Some(p) = self.progress.iter_mut().find(|p| p.id == from) {
                p.start_over(last);
                p.life = None;
                p.life_floor = round;
            }
        }
    }

    /// A TermReply or NoStateReply: kept (the latest per voter) if it echoes this life's
    /// nonce, then the rules of spec §8.5 decide whether the node can stop asking.
    pub(super) fn handle_term_answer(
        &mut self,
        now: Instant,
        from: NodeId,
        nonce: u64,
        answer: TermAnswer,
    ) {
        let Recovery::Querying {
            replies,
            nonce: asked,
            ..
        } = &mut self.recovery
        else {
            // Not asking (any more): late or duplicated answers change nothing.
            return;
        };
        if nonce != *asked {
            return;
        }
        match replies.iter_mut().find(|(id, _)| *id == from) {
            Some((_, kept)) => *kept = answer,
            None => replies.push((from, answer)),
        }
        self.decide_rejoin(now);
    }

    /// Spec §8.5 rules 3, 5 and 6, on the answers held so far.
    fn decide_rejoin(&mut self, now: Instant) {
        let Recovery::Querying { replies, new, .. } = &self.recovery else {
            return;
        };
        // Rules 3 and 5: a quorum of the others that hold state.
        let states: Vec<(u64, u64)> = replies
            .iter()
            .filter_map(|&(_, a)| match a {
                TermAnswer::State { term, last_index } => Some((term, last_index)),
                TermAnswer::NoState { .. } => None,
            })
            .collect();
        // Rule 6: a new node, and every other voter holds nothing beyond term 0.
        let others = self.config.voters.len() - 1;
        let all_new = *new
            && replies.len() == others
            && replies.iter().all(|&(_, a)| {
                matches!(
                    a,
                    TermAnswer::State {
                        term: 0,
                        last_index: 0
                    } | TermAnswer::NoState { new: true }
                )
            });
        if states.len() >= self.quorum {
            let max = states.iter().map(|&(t, _)| t).max().unwrap_or(0);
            let target = states.iter().map(|&(_, i)| i).max().unwrap_or(0);
            if max == 0 {
                log::info!(
                    "raft {}: rejoining: no quorum ever formed with this node; starting fresh",
                    self.config.id
                );
                self.recovery = Recovery::None;
                // Its replica id goes out in its answers from now on: store it first.
                self.hard_changed = true;
            } else {
                log::info!(
                    "raft {}: rejoining at term {max}; no vote until caught up",
                    self.config.id
                );
                self.set_hard(HardState {
                    term: max,
                    voted_for: Some(self.config.id),
                    replica: self.hard.replica,
                });
                self.recovery = Recovery::CatchingUp { term: max, target };
            }
        } else if all_new {
            log::info!(
                "raft {}: every other node is new too: starting a new cluster",
                self.config.id
            );
            self.recovery = Recovery::None;
            self.hard_changed = true;
        } else {
            return;
        }
        self.reset_election_timer(now);
        self.campaign_at_once_if_alone(now);
    }

    /// Rejoin step 3 (see `Recovery::CatchingUp`).
    pub(super) fn check_caught_up(&mut self) {
        let Recovery::CatchingUp { term, target } = self.recovery else {
            return;
        };
        let at_leaders_term = self.leader.is_some()
            && self.commit_index > 0
            && self.log.term_at(self.commit_index) == Some(self.hard.term);
        let caught_up = at_leaders_term && (self.hard.term > term || self.commit_index >= target);
        if caught_up {
            log::info!(
                "raft {}: rejoined: caught up in term {}",
                self.config.id,
                self.hard.term
            );
            self.recovery = Recovery::None;
        }
    }
}
