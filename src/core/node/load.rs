//! Load reports (spec node-protocol §8.14, client-protocol §9.1 "The bound"): a node tells
//! the leaders of the shards it holds which of its limits per node it has reached
//! (PEER_LOAD), and a leader refuses what would raise a count another replica's node
//! reports reached.
//!
//! A leader checks its own node's counts when it admits a request (`super::limits`). In a
//! joined cluster of more nodes than replicas per shard, a node that leads none of the
//! shards it holds never has its counts checked by anyone; with these reports its leaders
//! stop growing it. The bound is approximate (spec §8.14 rule 5): a report leaves with the
//! node's next input and takes a trip, and the leaders' entries then in flight still apply.
//!
//! Pure: what to send and what was heard, by node id and time; the node builds, seals and
//! sends the datagrams.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::raft::NodeId;
use crate::core::time::{Duration, Instant};

/// While a node has reached a limit, and for [`LOAD_REPORT_LIFETIME`] after, it tells the
/// leaders of its shards again this often (spec §8.14 rule 2), so that a lost report (a lost
/// zero too), or a new leader, is caught up within it.
pub const LOAD_REPORT_PERIOD: Duration = Duration::from_millis(500);

/// A report older than this counts as zero at a leader (spec §8.14 rule 3): three periods,
/// so two lost reports in a row do not let a full node grow, while a node that went away
/// stops refusing within it.
pub const LOAD_REPORT_LIFETIME: Duration = Duration::from_millis(1_500);

/// How often a node whose limits are reached looks for leaders it has not told (new ones):
/// between two looks it reports only on a change, which costs nothing to detect.
pub const LOAD_LEADERS_LOOK_INTERVAL: Duration = Duration::from_millis(100);

/// What a node told the leaders of its shards, and what the other nodes told it.
#[derive(Debug, Default)]
pub struct LoadReports {
    /// Per leader told: the value and when.
    told: BTreeMap<NodeId, (u16, Instant)>,
    /// Per node heard from (a node of the address book): its value and when it arrived.
    heard: BTreeMap<NodeId, (u16, Instant)>,
    /// The value this node last computed, and when it last looked for new leaders.
    last: u16,
    looked: Option<Instant>,
    /// When the value was last not zero: zero is repeated for [`LOAD_REPORT_LIFETIME`] after.
    nonzero_last: Option<Instant>,
}

impl LoadReports {
    /// Whether [`LoadReports::due`] has anything to do with `reached` at `now`: a change, or
    /// a value not zero whose leaders are due a look (cheap: called on every input).
    pub fn wants_look(&self, now: Instant, reached: u16) -> bool {
        reached != self.last
            || (self.active(now, reached)
                && self
                    .looked
                    .is_none_or(|at| now >= at + LOAD_LEADERS_LOOK_INTERVAL))
    }

    /// Whether reports of `reached` are repeated every period at `now`: while it is not
    /// zero, and for a lifetime after it was last not zero (a lost zero costs one period).
    fn active(&self, now: Instant, reached: u16) -> bool {
        reached != 0
            || self
                .nonzero_last
                .is_some_and(|at| now < at + LOAD_REPORT_LIFETIME)
    }

    /// The leaders to send `reached` to now (spec §8.14 rule 2), given `leaders`, every
    /// other node that leads a shard this node holds: each whose last value differs (a
    /// leader never told counts as told zero), and, while `reached` is not zero and for
    /// [`LOAD_REPORT_LIFETIME`] after, each told [`LOAD_REPORT_PERIOD`] ago. Marks them told; forgets nodes that lead none of its
    /// shards any more (told again if they do), telling them zero first when `reached` is
    /// zero and they were told otherwise.
    pub fn due(&mut self, now: Instant, reached: u16, leaders: &BTreeSet<NodeId>) -> Vec<NodeId> {
        self.last = reached;
        self.looked = Some(now);
        if reached != 0 {
            self.nonzero_last = Some(now);
        }
        let active = self.active(now, reached);
        let mut due = Vec::new();
        // A node that leads none of this node's shards any more is forgotten, once told zero
        // if it was told otherwise (it may lead one again before its report would expire).
        self.told.retain(|&id, &mut (value, _)| {
            if leaders.contains(&id) {
                return true;
            }
            if value != 0 && reached == 0 {
                due.push(id);
            }
            false
        });
        for &leader in leaders {
            let told = self.told.get(&leader).copied();
            let (value, at) = told.unwrap_or((0, Instant::ZERO));
            let repeat = told.is_some() && active && now >= at + LOAD_REPORT_PERIOD;
            if value != reached || repeat {
                self.told.insert(leader, (reached, now));
                due.push(leader);
            }
        }
        due
    }

    /// A report from `from` (a listed node at its address, authenticated as the node's
    /// other datagrams are), arrived at `now`.
    pub fn heard(&mut self, now: Instant, from: NodeId, reached: u16) {
        if reached == 0 {
            self.heard.remove(&from);
        } else {
            self.heard.insert(from, (reached, now));
        }
    }

    /// The limits `nodes` report reached and still live at `now` (spec §8.14 rules 3, 4).
    pub fn reached_by(&self, now: Instant, nodes: impl Iterator<Item = NodeId>) -> u16 {
        if self.heard.is_empty() {
            return 0;
        }
        nodes
            .filter_map(|id| self.heard.get(&id))
            .filter(|&&(_, at)| now < at + LOAD_REPORT_LIFETIME)
            .fold(0, |bits, &(reached, _)| bits | reached)
    }

    /// The reports live at `now` and not zero, by node id (for metrics).
    pub fn live(&self, now: Instant) -> impl Iterator<Item = (NodeId, u16)> + '_ {
        self.heard
            .iter()
            .filter(move |&(_, &(_, at))| now < at + LOAD_REPORT_LIFETIME)
            .map(|(&id, &(reached, _))| (id, reached))
    }

    /// Node `id` left the address book: nothing of it is kept.
    pub fn forget(&mut self, id: NodeId) {
        self.told.remove(&id);
        self.heard.remove(&id);
    }

    /// Nodes with a report kept (tests).
    pub fn heard_count(&self) -> usize {
        self.heard.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// Spec §8.14 rule 2: a change goes to every leader, a value not zero again every
    /// period, and zero too for a lifetime after the value was last not zero; a leader that
    /// leads none of the node's shards is forgotten (told zero first, if it was told a
    /// value), and told again if it comes back.
    #[test]
    fn reports_go_on_change_and_every_period_while_not_zero() {
        let mut r = LoadReports::default();
        let leaders: BTreeSet<NodeId> = [2, 3].into();
        let only: BTreeSet<NodeId> = [3].into();
        let none = Vec::<NodeId>::new();
        assert!(!r.wants_look(at(0), 0));
        assert_eq!(r.due(at(0), 0, &leaders), none, "nothing to clear");
        assert!(r.wants_look(at(1), 4));
        assert_eq!(r.due(at(1), 4, &leaders), [2, 3]);
        assert!(!r.wants_look(at(50), 4), "no change, no look due");
        assert_eq!(r.due(at(300), 4, &leaders), none);
        assert_eq!(r.due(at(501), 4, &leaders), [2, 3], "again after a period");
        assert_eq!(r.due(at(600), 4, &only), none);
        assert_eq!(
            r.due(at(700), 4, &leaders),
            [2],
            "2 leads again: told at once"
        );
        assert_eq!(r.due(at(800), 0, &leaders), [2, 3], "zero");
        assert_eq!(r.due(at(900), 0, &leaders), none);
        assert!(r.wants_look(at(1_301), 0));
        assert_eq!(r.due(at(1_301), 0, &leaders), [2, 3], "zero again");
        assert!(
            !r.wants_look(at(2_300), 0),
            "a lifetime after the last value"
        );
        assert_eq!(r.due(at(2_300), 0, &leaders), none);
        // A former leader told a value is told zero, then forgotten.
        assert_eq!(r.due(at(2_400), 1, &leaders), [2, 3]);
        assert_eq!(
            r.due(at(2_450), 0, &only),
            [2, 3],
            "2 leads no more: told zero"
        );
        assert_eq!(r.due(at(2_500), 0, &leaders), none);
    }

    /// Spec §8.14 rules 3 and 4: a leader counts the live reports of the nodes asked about;
    /// one older than the lifetime counts as zero, as does a zero.
    #[test]
    fn reports_live_for_their_lifetime() {
        let mut r = LoadReports::default();
        r.heard(at(0), 2, 0x0001);
        r.heard(at(10), 3, 0x0004);
        assert_eq!(r.reached_by(at(100), [2, 3].into_iter()), 0x0005);
        assert_eq!(r.reached_by(at(100), [3, 4].into_iter()), 0x0004);
        assert_eq!(r.reached_by(at(1_505), [2, 3].into_iter()), 0x0004);
        assert_eq!(r.live(at(1_505)).collect::<Vec<_>>(), [(3, 0x0004)]);
        r.heard(at(1_506), 3, 0);
        assert_eq!(r.reached_by(at(1_507), [2, 3].into_iter()), 0);
        assert_eq!(r.live(at(1_507)).count(), 0, "a zero is not kept");
        r.forget(2);
        assert_eq!(r.heard_count(), 0);
    }
}
