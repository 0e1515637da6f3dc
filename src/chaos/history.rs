//! What the chaos workload's clients saw, and its judgement by the simulator's checkers.
//!
//! Pure: the workload threads read one monotonic clock (`BootInstant`, the clock the client's
//! leases are counted on) and hand this module microseconds since the run began. Each thread
//! records its own operations in order; [`History::check`] runs the simulator's mutual
//! exclusion and fencing checkers (`crate::sim::check`) over the beliefs and grants
//! (`Belief`, `Grant`) built here, by the same client rules the simulator's clients follow:
//!
//! - a client believes it holds a lock from the moment an acquire or renew returned OK to the
//!   lease's `valid_until` (its send time plus the lease, minus the drift bound: spec §6.4,
//!   §7.1.6), cut short when it sends the release that ends its hold, or any release whose
//!   outcome it does not learn (spec §7.1.5: stop relying on the lock);
//! - a grant counts for fencing order if it was still valid when it returned.

use crate::core::time::Instant;
use crate::sim::check::{self, Belief, Grant};

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Acquire,
    Renew,
    Release,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// An acquire or renew answered OK: the grant's fencing token, hold count, lease (ms)
    /// and the client's own end of the lease (µs since the run began).
    Granted {
        token: u64,
        hold_count: u32,
        lease_ms: u32,
        valid_until_us: u64,
    },
    /// A release answered OK, with the holds left.
    Released { holds_left: u32 },
    /// Any error, as the client reported it.
    Failed(String),
}

/// One operation of one client, with invoke and complete times in µs since the run began.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub resource: usize,
    pub kind: OpKind,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub result: OpResult,
}

/// The recorded history of a run over `resources`.
#[derive(Default)]
pub struct History {
    pub resources: Vec<String>,
    pub ops: Vec<Op>,
    beliefs: Vec<Belief>,
    /// Per belief: cut short by a release (false: it ran to the lease's end).
    cut: Vec<bool>,
    grants: Vec<Grant>,
}

fn at(us: u64) -> Instant {
    Instant::from_micros(us)
}

impl History {
    pub fn new(resources: Vec<String>) -> History {
        History {
            resources,
            ..History::default()
        }
    }

    /// Valid grants received (what fencing order is judged on).
    pub fn grants_valid(&self) -> usize {
        self.grants.iter().filter(|g| g.valid).count()
    }

    /// Records `op`; for an OK acquire or renew, the belief it starts (and for an acquire,
    /// the grant), given the token of the hold `op.client` believed in when it returned
    /// (`held_token`, for the re-entry rule of the fencing checker). Returns its index.
    pub fn record(&mut self, op: Op, held_token: Option<u64>) -> usize {
        let n = self.ops.len();
        assert!(op.resource < self.resources.len());
        assert!(op.invoke_us <= op.complete_us, "{op:?}");
        if let OpResult::Granted {
            token,
            hold_count,
            valid_until_us,
            ..
        } = op.result
        {
            let valid = op.complete_us < valid_until_us;
            if op.kind == OpKind::Acquire {
                self.grants.push(Grant {
                    client: op.client,
                    resource: op.resource,
                    token,
                    hold_count,
                    held_token,
                    valid,
                    at: at(op.complete_us),
                    op: n,
                });
            }
            if valid {
                self.cut.push(false);
                self.beliefs.push(Belief {
                    client: op.client,
                    resource: op.resource,
                    start: at(op.complete_us),
                    end: at(valid_until_us),
                    op: n,
                });
            }
        }
        self.ops.push(op);
        n
    }

    /// `client` stops believing it holds `resource` at `at_us` (it sent a release that ends
    /// its hold, or whose outcome it may never learn).
    pub fn cut(&mut self, client: usize, resource: usize, at_us: u64) {
        for (b, cut) in self.beliefs.iter_mut().zip(self.cut.iter_mut()) {
            if b.client == client && b.resource == resource && b.end > at(at_us) {
                b.end = at(at_us).max(b.start);
                *cut = true;
            }
        }
    }

    /// Valid grants whose previous holder (another client) never released: its last lease
    /// ran out first. The dangerous case for the lease rule (spec §6.4), counted so that a
    /// run shows it arose.
    pub fn expiry_handovers(&self) -> usize {
        let mut last: Vec<Option<(usize, Instant, bool)>> = vec![None; self.resources.len()];
        let mut events: Vec<(Instant, bool, usize)> = Vec::new();
        for (n, g) in self.grants.iter().enumerate() {
            if g.valid {
                events.push((g.at, true, n));
            }
        }
        for (n, b) in self.beliefs.iter().enumerate() {
            events.push((b.end, false, n));
        }
        // Ends before grants at one instant: a belief that ended then is over.
        events.sort_by_key(|&(t, grant, _)| (t, grant));
        let mut count = 0;
        for (_, grant, n) in events {
            if grant {
                let g = &self.grants[n];
                if let Some((client, _, cut)) = last[g.resource] {
                    if client != g.client && !cut {
                        count += 1;
                    }
                }
                last[g.resource] = None;
            } else {
                let b = &self.beliefs[n];
                last[b.resource] = Some((b.client, b.end, self.cut[n]));
            }
        }
        count
    }

    /// Every violation the checkers find (empty: none): mutual exclusion, then fencing order.
    pub fn check(&self) -> Vec<String> {
        let names: Vec<&[u8]> = self.resources.iter().map(|r| r.as_bytes()).collect();
        let describe = |op: usize| {
            let o = &self.ops[op];
            format!(
                "{op}: client {}, {:?} {} invoked {} µs, completed {} µs: {:?}",
                o.client, o.kind, self.resources[o.resource], o.invoke_us, o.complete_us, o.result
            )
        };
        // The threads recorded their grants as they came; the checker wants receipt order.
        let mut grants = self.grants.clone();
        grants.sort_by_key(|g| g.at);
        let mut violations = Vec::new();
        if let Err((_, what)) = check::mutual_exclusion(&self.beliefs, &names, &describe) {
            violations.push(what);
        }
        if let Err((_, what)) = check::fencing(&grants, &names, &describe) {
            violations.push(what);
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(client: usize, token: u64, from_us: u64, until_us: u64) -> Op {
        Op {
            client,
            resource: 0,
            kind: OpKind::Acquire,
            invoke_us: from_us.saturating_sub(100),
            complete_us: from_us,
            result: OpResult::Granted {
                token,
                hold_count: 1,
                lease_ms: 1_000,
                valid_until_us: until_us,
            },
        }
    }

    fn history() -> History {
        History::new(vec!["hot/0".into(), "hot/1".into()])
    }

    #[test]
    fn holders_one_after_the_other_pass() {
        let mut h = history();
        h.record(grant(0, 5, 1_000, 900_000), None);
        h.cut(0, 0, 2_000);
        h.record(grant(1, 6, 2_500, 900_000), None);
        assert_eq!(h.check(), Vec::<String>::new());
        assert_eq!(h.grants_valid(), 2);
        assert_eq!(h.expiry_handovers(), 0);
    }

    /// The checkers fire: two clients believing they hold one lock at once.
    #[test]
    fn two_overlapping_holders_are_a_violation() {
        let mut h = history();
        h.record(grant(0, 5, 1_000, 900_000), None);
        h.record(grant(1, 6, 2_500, 900_000), None);
        let v = h.check();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("mutual exclusion"), "{v:?}");
        assert!(v[0].contains("hot/0"), "{v:?}");
    }

    /// The checkers fire: a later valid grant with a smaller token.
    #[test]
    fn a_decreasing_token_is_a_violation() {
        let mut h = history();
        h.record(grant(0, 6, 1_000, 900_000), None);
        h.cut(0, 0, 2_000);
        h.record(grant(1, 5, 2_500, 900_000), None);
        let v = h.check();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("fencing"), "{v:?}");
    }

    /// A grant that returned after its own lease ended is believed by nobody and not judged
    /// for order; a lease that ran out ends the belief without a release.
    #[test]
    fn expired_leases_end_beliefs() {
        let mut h = history();
        h.record(grant(0, 6, 1_000, 2_000), None);
        h.record(grant(1, 7, 2_000, 900_000), None);
        h.record(grant(0, 3, 5_000, 4_000), None);
        assert_eq!(h.check(), Vec::<String>::new());
        assert_eq!(h.grants_valid(), 2);
        assert_eq!(h.expiry_handovers(), 1);
    }

    /// Holds on different resources never conflict, and a re-entry keeps its token.
    #[test]
    fn other_resources_and_reentries_pass() {
        let mut h = history();
        h.record(grant(0, 6, 1_000, 900_000), None);
        let mut other = grant(1, 2, 1_500, 900_000);
        other.resource = 1;
        h.record(other, None);
        let mut again = grant(0, 6, 3_000, 900_000);
        again.result = OpResult::Granted {
            token: 6,
            hold_count: 2,
            lease_ms: 1_000,
            valid_until_us: 900_000,
        };
        h.record(again.clone(), Some(6));
        assert_eq!(h.check(), Vec::<String>::new());
        // A re-entry under another token breaks the fencing rule.
        if let OpResult::Granted { token, .. } = &mut again.result {
            *token = 9;
        }
        h.record(again, Some(6));
        assert!(h.check()[0].starts_with("fencing"));
    }
}
