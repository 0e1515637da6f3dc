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

/// While a node has reached a limit, it tells the leaders of its shards again this often
/// (spec §8.14 rule 2), so that a lost report, or a new leader, is caught up within it.
pub const LOAD_REPORT_PERIOD: Duration = Duration::from_millis(1_000);

/// A report older than this counts as zero at a leader (spec §8.14 rule 3): three periods,
/// so two lost reports in a row do not let a full node grow, while a lost "no limit
/// reached" or a node that went away stops refusing within it.
pub const LOAD_REPORT_LIFETIME: Duration = Duration::from_millis(3_000);

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
}

impl LoadReports {
    /// Whether [`LoadReports::due`] has anything to do with `reached` at `now`: a change, or
    /// a value not zero whose leaders are due a look (cheap: called on every input).
    pub fn wants_look(&self, now: Instant, reached: u16) -> bool {
        reached != self.last
            || (reached != 0
                && self
                    .looked
                    .is_none_or(|at| now >= at + LOAD_LEADERS_LOOK_INTERVAL))
    }

    /// The leaders to send `reached` to now (spec §8.14 rule 2), given `leaders`, every
    /// other node that leads a shard this node holds: each whose last value differs (a
    /// leader never told counts as told zero), and, while `reached` is not zero, each told
    /// [`LOAD_REPORT_PERIOD`] ago. Marks them told; forgets nodes that lead none of its
    /// shards any more (told again if they do).
    pub fn due(&mut self, now: Instant, reached: u16, leaders: &BTreeSet<NodeId>) -> Vec<NodeId> {
        self.last = reached;
        self.looked = Some(now);
        self.told.retain(|id, _| leaders.contains(id));
        let mut due = Vec::new();
        for &leader in leaders {
            let (value, at) = self
                .told
                .get(&leader)
                .copied()
                .unwrap_or((0, Instant::ZERO));
            let repeat = reached != 0 && now >= at + LOAD_REPORT_PERIOD;
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
    /// period, zero once; a leader that leads none of the node's shards is forgotten, and
    /// told again if it comes back.
    #[test]
    fn reports_go_on_change_and_every_period_while_not_zero() {
        let mut r = LoadReports::default();
        let leaders: BTreeSet<NodeId> = [2, 3].into();
        assert!(!r.wants_look(at(0), 0));
        assert_eq!(
            r.due(at(0), 0, &leaders),
            Vec::<NodeId>::new(),
            "nothing to clear"
        );
        assert!(r.wants_look(at(1), 4));
        assert_eq!(r.due(at(1), 4, &leaders), [2, 3]);
        assert!(!r.wants_look(at(50), 4), "no change, no look due");
        assert_eq!(r.due(at(500), 4, &leaders), Vec::<NodeId>::new());
        assert_eq!(
            r.due(at(1_001), 4, &leaders),
            [2, 3],
            "again after a period"
        );
        let only: BTreeSet<NodeId> = [3].into();
        assert_eq!(r.due(at(1_100), 4, &only), Vec::<NodeId>::new());
        assert_eq!(
            r.due(at(1_200), 4, &leaders),
            [2],
            "2 leads again: told at once"
        );
        assert_eq!(r.due(at(1_300), 0, &leaders), [2, 3], "zero, once");
        assert_eq!(r.due(at(5_000), 0, &leaders), Vec::<NodeId>::new());
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
        assert_eq!(r.reached_by(at(3_005), [2, 3].into_iter()), 0x0004);
        r.heard(at(3_006), 3, 0);
        assert_eq!(r.reached_by(at(3_007), [2, 3].into_iter()), 0);
        r.forget(2);
        assert_eq!(r.heard_count(), 0);
    }
}
