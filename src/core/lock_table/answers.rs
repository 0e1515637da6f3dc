//! A session's remembered final answers, by request id (Raft dissertation §6.3: the state
//! machine keeps each session's latest responses so a retried command is answered, not
//! applied again).
//!
//! Clients number their requests upwards (spec §4.2), so answers almost always arrive in
//! increasing request id order and the oldest is the one evicted. A `VecDeque` kept sorted by
//! request id serves exactly that: a new answer is pushed at the back, the oldest popped at the
//! front, and "is this request new?" is one comparison with the back, each touching one place
//! in memory. A B-tree did the same in O(log n) but walked three levels of nodes for each: with
//! many sessions those nodes are out of the cache, and the walk was the node's single largest
//! cost with 64 clients (perf, one-cpu bench, 2026-12-07).
//!
//! An answer that arrives out of order — a queued acquire granted late, or two requests of one
//! session that crossed on the network — is inserted at its place (found by binary search),
//! moving the answers on the shorter side of it: at most half of `answers_per_session_max`, a
//! per-session bound, independent of the number of locks.

use std::collections::VecDeque;

use super::Remembered;

/// One remembered answer costs 48 bytes in the buffer on 64-bit targets, and a buffer holds
/// at most twice its answers (it doubles when full): at most ~96 bytes an answer, the budget
/// of the README's memory table.
const _: () = assert!(std::mem::size_of::<(u64, Remembered)>() <= 48);

/// Final answers of one session, in strictly increasing request id order.
#[derive(Default)]
pub(super) struct Answers {
    entries: VecDeque<(u64, Remembered)>,
}

impl Answers {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The answer remembered for `request`, if any. A request above every remembered one (a
    /// new request, the common case) is told apart by the last entry alone.
    pub(super) fn get(&self, request: u64) -> Option<&Remembered> {
        match self.entries.back() {
            Some(&(newest, _)) if request <= newest => {}
            _ => return None,
        }
        let at = self.find(request).ok()?;
        Some(&self.entries[at].1)
    }

    pub(super) fn contains(&self, request: u64) -> bool {
        self.get(request).is_some()
    }

    /// Stores the answer to `request`, which must not be remembered yet.
    pub(super) fn insert(&mut self, request: u64, remembered: Remembered) {
        match self.entries.back() {
            Some(&(newest, _)) if request <= newest => {
                let at = self
                    .find(request)
                    .expect_err("a request id is answered at most once");
                self.entries.insert(at, (request, remembered));
            }
            _ => self.entries.push_back((request, remembered)),
        }
    }

    /// Forgets the answer with the smallest request id, and returns that id.
    pub(super) fn pop_oldest(&mut self) -> Option<u64> {
        self.entries.pop_front().map(|(request, _)| request)
    }

    /// Every answer, in increasing request id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Remembered)> {
        self.entries
            .iter()
            .map(|(request, remembered)| (*request, remembered))
    }

    fn find(&self, request: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&request, |&(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lock_table::{Answer, Status};
    use udplock_protocol::RequestKind;

    fn answer(token: u64) -> Remembered {
        Remembered {
            kind: RequestKind::Acquire,
            answer: Answer {
                fencing_token: token,
                ..Answer::bare(Status::Ok)
            },
            attempt: 0,
        }
    }

    fn ids(answers: &Answers) -> Vec<u64> {
        answers.iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn answers_stay_in_request_id_order_whatever_order_they_arrive_in() {
        let mut answers = Answers::default();
        for id in [5, 9, 7, 12, 1, 8, 20] {
            answers.insert(id, answer(id * 10));
        }
        assert_eq!(ids(&answers), [1, 5, 7, 8, 9, 12, 20]);
        for id in [1, 5, 7, 8, 9, 12, 20] {
            assert_eq!(
                answers.get(id).map(|r| r.answer.fencing_token),
                Some(id * 10)
            );
            assert!(answers.contains(id));
        }
        for id in [0, 2, 6, 10, 13, 21, u64::MAX] {
            assert!(answers.get(id).is_none(), "{id}");
        }
        assert_eq!(answers.pop_oldest(), Some(1));
        assert_eq!(answers.pop_oldest(), Some(5));
        assert_eq!(ids(&answers), [7, 8, 9, 12, 20]);
        assert_eq!(answers.len(), 5);
    }

    #[test]
    #[should_panic(expected = "answered at most once")]
    fn an_answer_stored_twice_is_a_bug() {
        let mut answers = Answers::default();
        answers.insert(3, answer(1));
        answers.insert(4, answer(2));
        answers.insert(3, answer(3));
    }

    #[test]
    fn an_empty_session_remembers_nothing() {
        let mut answers = Answers::default();
        assert!(answers.get(1).is_none());
        assert_eq!(answers.pop_oldest(), None);
        assert_eq!(answers.len(), 0);
    }
}
