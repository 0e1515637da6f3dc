//! Who holds what, a page at a time (HOLDS, spec §4.13): the table's holds in fencing-token
//! order from a cursor, filtered by a client-id prefix, as many as fit in a byte budget.
//!
//! The walk reads `holds` (token → slot, ordered), so a page costs O(log n) to find the
//! cursor plus O(1) per hold examined, and at most [`HOLDS_EXAMINED_MAX`] holds are examined
//! per page whatever the filter skips: the work one datagram causes is bounded, never
//! O(all locks). Tokens are replicated state and a hold keeps its token while it lasts, so a
//! walk resumed at another replica (a new leader) goes on where it stopped.

use udplock_protocol::{HoldEntry, HOLDS_ENTRIES_MAX};

use super::LockTable;
use crate::core::time::Instant;

/// Most holds one HOLDS request examines (spec §4.13, §9): a prefix that matches few holds
/// still costs a bounded walk per datagram, and the reply's `next_cursor` says where to go on.
/// 1024 entries of the ordered index take a few microseconds.
pub const HOLDS_EXAMINED_MAX: usize = 1024;

/// One page of a walk ([`LockTable::holds_page`]).
#[derive(Debug, PartialEq, Eq)]
pub struct HoldsPage<'t> {
    /// The holds listed, in increasing token order; ids borrowed from the table.
    pub entries: Vec<HoldEntry<'t>>,
    /// The cursor to go on from: the token of the first hold not examined, or not fitted; 0
    /// when the walk examined the table's last hold.
    pub next_cursor: u64,
    /// Holds examined (at most [`HOLDS_EXAMINED_MAX`]).
    pub examined: usize,
}

impl LockTable {
    /// The holds whose token is at least `cursor` and whose holder's client id starts with
    /// `prefix`, in token order, as of `now`, as many as fit in `budget` bytes of entries
    /// (the request's length less the reply's fixed part: spec §2.2 rule 5) and
    /// [`HOLDS_ENTRIES_MAX`]. Examines at most [`HOLDS_EXAMINED_MAX`] holds. A hold whose
    /// lease has ended by `now` is not listed (its expiry timer may not have fired yet: a
    /// Raft leader fires it only when the TICK applies), so no page shows a lease of 0 ms.
    /// Reads only: changes nothing, remembers nothing.
    pub fn holds_page(
        &self,
        now: Instant,
        cursor: u64,
        prefix: &[u8],
        budget: usize,
    ) -> HoldsPage<'_> {
        let mut entries = Vec::new();
        let mut used = 0;
        let mut examined = 0;
        let mut next_cursor = 0;
        for (&token, &slot) in self.holds.range(cursor..) {
            if examined == HOLDS_EXAMINED_MAX {
                next_cursor = token;
                break;
            }
            let s = &self.slots[slot as usize];
            assert_eq!(s.token, token, "the holds index names the slot's own token");
            let holder = s.holder().expect("the holds index names only held locks");
            if s.expiry <= now || !holder.starts_with(prefix) {
                examined += 1;
                continue;
            }
            let remaining_ms = s.expiry.saturating_since(now).as_millis();
            let entry = HoldEntry {
                fencing_token: token,
                hold_count: s.hold_count,
                lease_ms: u32::try_from(remaining_ms).expect("a lease is at most ttl_ms_max"),
                waiter_count: s.live_waiters(),
                resource: s.resource(),
                client: holder,
            };
            if used + entry.encoded_len() > budget || entries.len() == HOLDS_ENTRIES_MAX {
                next_cursor = token;
                break;
            }
            examined += 1;
            used += entry.encoded_len();
            entries.push(entry);
        }
        // Postconditions the reply's decoder checks (spec §5.10): tokens at least the cursor
        // and increasing, the next cursor past them all.
        debug_assert!(entries
            .windows(2)
            .all(|w| w[0].fencing_token < w[1].fencing_token));
        assert!(entries.iter().all(|e| e.fencing_token >= cursor));
        assert!(next_cursor == 0 || entries.last().is_none_or(|e| next_cursor > e.fencing_token));
        assert!(used <= budget && examined <= HOLDS_EXAMINED_MAX);
        HoldsPage {
            entries,
            next_cursor,
            examined,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{Ipv4Addr, SocketAddr};

    use proptest::prelude::*;
    use udplock_protocol::{
        HoldEntries, HoldsReply, RequestBody, Status, DATAGRAM_LEN_MAX, HEADER_LEN,
        HOLDS_REPLY_FIXED_LEN, REQUEST_LEN_MIN,
    };

    use super::*;
    use crate::core::lock_table::{Config, Request, RequestId};
    use crate::core::time::Duration;

    /// The entry budget of a HOLDS padded to 1200 bytes.
    const BUDGET: usize = DATAGRAM_LEN_MAX - HEADER_LEN - HOLDS_REPLY_FIXED_LEN;

    fn ms(ms: u64) -> Instant {
        Instant::from_micros(ms * 1_000)
    }

    /// Sends `body` as a new request of session 1 at `now` and returns the answer's status.
    fn send(table: &mut LockTable, now: Instant, request: u64, body: RequestBody<'_>) -> Status {
        table.handle_request(
            now,
            Request {
                id: RequestId {
                    session: 1,
                    request,
                },
                attempt: 0,
                reply_to: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
                body,
                datagram_len: DATAGRAM_LEN_MAX as u16,
            },
        );
        let reply = table.poll_reply().expect("an answer");
        while table.poll_reply().is_some() {}
        reply.answer.status
    }

    fn acquire(table: &mut LockTable, now: Instant, request: u64, resource: &str, client: &str) {
        let body = RequestBody::Acquire {
            resource: resource.as_bytes(),
            client: client.as_bytes(),
            wait_ms: 0,
            ttl_ms: 10_000,
        };
        assert_eq!(send(table, now, request, body), Status::Ok);
    }

    /// One hold a walk saw: (resource, client, token).
    type Seen = (Vec<u8>, Vec<u8>, u64);

    /// Every page of a walk from cursor 0, and how many pages it took.
    fn walk(table: &LockTable, now: Instant, prefix: &[u8], budget: usize) -> (Vec<Seen>, usize) {
        let (mut cursor, mut seen, mut pages) = (0, Vec::new(), 0);
        loop {
            let page = table.holds_page(now, cursor, prefix, budget);
            pages += 1;
            seen.extend(
                page.entries
                    .iter()
                    .map(|e| (e.resource.to_vec(), e.client.to_vec(), e.fencing_token)),
            );
            if page.next_cursor == 0 {
                return (seen, pages);
            }
            assert!(
                page.next_cursor > cursor || !page.entries.is_empty(),
                "no progress"
            );
            cursor = page.next_cursor;
        }
    }

    #[test]
    fn pages_cover_every_hold_exactly_once_in_token_order() {
        let mut table = LockTable::new(Config::default());
        for i in 0..200u64 {
            acquire(
                &mut table,
                ms(1),
                i + 1,
                &format!("orders/{i:03}"),
                &format!("w-{}", i % 7),
            );
        }
        // A re-entry and a renewal keep the token; a release frees a hold.
        acquire(&mut table, ms(2), 1_000, "orders/005", "w-5");
        let body = RequestBody::Release {
            resource: b"orders/010",
            client: b"w-3",
        };
        assert_eq!(send(&mut table, ms(2), 1_001, body), Status::Ok);
        let (seen, pages) = walk(&table, ms(3), b"", BUDGET);
        assert_eq!(seen.len(), 199);
        assert!(
            pages > 1,
            "200 holds of 33 bytes take several 1,124-byte pages"
        );
        let tokens: Vec<u64> = seen.iter().map(|h| h.2).collect();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "token order, no repeat"
        );
        let resources: BTreeSet<&[u8]> = seen.iter().map(|h| h.0.as_slice()).collect();
        assert_eq!(resources.len(), 199);
        assert!(!resources.contains(&b"orders/010"[..]));
        let five = table.holds_page(ms(3), 0, b"", BUDGET);
        let e = five
            .entries
            .iter()
            .find(|e| e.resource == b"orders/005")
            .unwrap();
        assert_eq!((e.hold_count, e.client), (2, &b"w-5"[..]));
        assert_eq!(e.lease_ms, 9_999, "10 s from 2 ms, read at 3 ms");
    }

    #[test]
    fn a_prefix_lists_only_its_holders_and_bounds_the_work_per_page() {
        let mut table = LockTable::new(Config::default());
        // 3,000 holds of "team-b", then two of "team-a" with the largest tokens.
        for i in 0..3_000u64 {
            acquire(&mut table, ms(1), i + 1, &format!("r{i}"), "team-b/7");
        }
        acquire(&mut table, ms(1), 5_000, "x", "team-a/1");
        acquire(&mut table, ms(1), 5_001, "y", "team-a/2");
        let first = table.holds_page(ms(2), 0, b"team-a", BUDGET);
        assert!(first.entries.is_empty());
        assert_eq!(first.examined, HOLDS_EXAMINED_MAX);
        assert!(
            first.next_cursor > 0,
            "a page that examined its bound goes on"
        );
        let (seen, pages) = walk(&table, ms(2), b"team-a", BUDGET);
        let clients: Vec<&[u8]> = seen.iter().map(|h| h.1.as_slice()).collect();
        assert_eq!(clients, [&b"team-a/1"[..], b"team-a/2"]);
        assert_eq!(pages, 3, "3,002 holds at 1,024 examined per page");
        // A prefix equal to a whole id matches it; a longer one does not.
        assert_eq!(walk(&table, ms(2), b"team-a/2", BUDGET).0.len(), 1);
        assert_eq!(walk(&table, ms(2), b"team-a/22", BUDGET).0.len(), 0);
    }

    #[test]
    fn a_cursor_past_the_last_token_ends_the_walk_and_ended_leases_are_left_out() {
        let mut table = LockTable::new(Config::default());
        acquire(&mut table, ms(0), 1, "a", "c");
        acquire(&mut table, ms(0), 2, "b", "c");
        let last = table.stats().fencing_token_last;
        let past = table.holds_page(ms(1), last + 1, b"", BUDGET);
        assert_eq!((past.entries.len(), past.next_cursor), (0, 0));
        let at_last = table.holds_page(ms(1), last, b"", BUDGET);
        assert_eq!((at_last.entries.len(), at_last.next_cursor), (1, 0));
        let huge = table.holds_page(ms(1), u64::MAX, b"", BUDGET);
        assert_eq!((huge.entries.len(), huge.next_cursor), (0, 0));
        // At the leases' end (10 s) the holds are over even before their timers fire.
        let ended = table.holds_page(ms(0) + Duration::from_millis(10_000), 0, b"", BUDGET);
        assert_eq!((ended.entries.len(), ended.next_cursor), (0, 0));
    }

    #[test]
    fn a_budget_too_small_for_the_first_hold_stays_at_its_cursor() {
        let mut table = LockTable::new(Config::default());
        acquire(&mut table, ms(0), 1, "a", "c");
        let token = table.stats().fencing_token_last;
        // A 76-byte request pays for the reply's fixed part only.
        let page = table.holds_page(
            ms(1),
            0,
            b"",
            REQUEST_LEN_MIN - HEADER_LEN - HOLDS_REPLY_FIXED_LEN,
        );
        assert_eq!((page.entries.len(), page.next_cursor), (0, token));
        // One byte short of the entry (22 + 1 + 1), then exactly enough.
        assert!(table.holds_page(ms(1), 0, b"", 23).entries.is_empty());
        assert_eq!(table.holds_page(ms(1), 0, b"", 24).entries.len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Spec §2.2 rule 5: whatever the holds, the ids' lengths and the request's length,
        /// the HOLDS_REPLY built from a page is never longer than the request, and encodes
        /// (it keeps every rule its decoder checks).
        #[test]
        fn a_reply_is_never_larger_than_its_request(
            ids in prop::collection::vec((1..=255usize, 1..=255usize, 0..3u8), 1..40),
            request_len in REQUEST_LEN_MIN..=DATAGRAM_LEN_MAX,
            cursor_skip in 0..5u64,
        ) {
            let mut table = LockTable::new(Config::default());
            for (i, (rlen, clen, who)) in ids.iter().enumerate() {
                let mut resource = vec![b'r'; *rlen];
                resource[..8.min(*rlen)].copy_from_slice(&format!("{i:08}").as_bytes()[..8.min(*rlen)]);
                let mut client = vec![b'a' + who; *clen];
                client[0] = b'a' + who;
                let body = RequestBody::Acquire { resource: &resource, client: &client, wait_ms: 0, ttl_ms: 5_000 };
                send(&mut table, ms(1), i as u64 + 1, body);
            }
            let cursor = cursor_skip * 2;
            let budget = request_len - HEADER_LEN - HOLDS_REPLY_FIXED_LEN;
            for prefix in [&b""[..], b"a", b"b"] {
                let page = table.holds_page(ms(2), cursor, prefix, budget);
                let reply = HoldsReply {
                    session_id: 1,
                    request_id: 1,
                    attempt: 0,
                    status: Status::Ok,
                    hint: udplock_protocol::Hint::None,
                    shard: 0,
                    shards: 1,
                    cursor,
                    next_cursor: page.next_cursor,
                    entries: HoldEntries::from_slice(&page.entries),
                };
                let mut out = [0u8; DATAGRAM_LEN_MAX];
                let len = reply.encode(&mut out).unwrap();
                prop_assert!(len <= request_len, "{len} > {request_len}");
                prop_assert!(page.entries.iter().all(|e| e.client.starts_with(prefix)));
            }
        }
    }
}
