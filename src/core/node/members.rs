//! MEMBERS (spec §4.9, §5.8): the page of this node's SWIM member table ([`Node::members`])
//! that a MEMBERS request asks for. Read-only, like SHARD_STATUS: any node answers from its
//! own table at that instant, nothing is logged, remembered or changed, and the page is no
//! longer than the request (spec §2.2). SWIM informs operators here; it decides no lock.

use std::net::SocketAddr;

use udplock_protocol::{
    MemberEntries, MemberEntry, MembersReply, MembersRequest, Status, DATAGRAM_LEN_MAX,
};

use super::Node;
use crate::core::swim::{MemberInfo, Swim};

/// One page of a member table: the entries it lists, the id to ask from for the rest (0:
/// none left), and the whole table's size.
#[derive(Debug, PartialEq, Eq)]
pub struct MembersPage {
    pub entries: Vec<MemberEntry>,
    pub next_id: u64,
    pub members_total: u32,
}

/// The member table sorted by id, as MEMBERS pages it, kept until SWIM's table version
/// (`Swim::version`) moves: a MEMBERS request needs no authentication, so answering one must
/// not list and sort the whole table each time (O(n log n) at 1,000 members, per request);
/// with the view it costs a binary search and the page.
#[derive(Debug, Default)]
pub struct MembersView {
    version: Option<u64>,
    sorted: Vec<MemberInfo>,
}

impl MembersView {
    /// The table of `swim`, sorted by id (ids are unique).
    pub fn get(&mut self, swim: &Swim) -> &[MemberInfo] {
        if self.version != Some(swim.version()) {
            self.sorted = swim.members();
            self.sorted.sort_unstable_by_key(|m| m.id);
            self.version = Some(swim.version());
        }
        &self.sorted
    }
}

/// The page of `members` (any order) from id `first_id` on, at most `fit` entries, in id
/// order (spec §5.8). An IPv6 address loses its flow label and scope id, which the wire has
/// no room for (spec §8.12): the entry still names the member's address.
pub fn page(members: &[MemberInfo], first_id: u64, fit: usize) -> MembersPage {
    let mut sorted = members.to_vec();
    sorted.sort_unstable_by_key(|m| m.id);
    page_sorted(&sorted, first_id, fit)
}

/// [`page`] of a table already sorted by id ([`MembersView`]).
pub fn page_sorted(sorted: &[MemberInfo], first_id: u64, fit: usize) -> MembersPage {
    debug_assert!(sorted.windows(2).all(|w| w[0].id < w[1].id));
    let from = &sorted[sorted.partition_point(|m| m.id < first_id)..];
    let entries: Vec<MemberEntry> = from
        .iter()
        .take(fit)
        .map(|m| MemberEntry {
            id: m.id,
            incarnation: m.incarnation,
            state: m.state,
            addr: match m.addr {
                SocketAddr::V6(a) => SocketAddr::new((*a.ip()).into(), a.port()),
                a => a,
            },
        })
        .collect();
    // Ids are unique in a SWIM table, so the first member left out comes after the page.
    let next_id = from.get(entries.len()).map_or(0, |m| m.id);
    assert!(next_id == 0 || entries.last().is_none_or(|e| e.id < next_id));
    MembersPage {
        entries,
        next_id,
        members_total: u32::try_from(sorted.len()).unwrap_or(u32::MAX),
    }
}

impl Node {
    /// MEMBERS (spec §4.9, §5.8): this node's member table from `first_id` on, as many
    /// members as fit in a reply no longer than the request (§2.2). Changes nothing.
    pub(super) fn answer_members(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(request) = self.admit(datagram, from, MembersRequest::decode) else {
            return;
        };
        let fit = MembersReply::entries_that_fit(datagram.len());
        let page = page_sorted(self.members_view.get(&self.swim), request.first_id, fit);
        let reply = MembersReply {
            session_id: request.session_id,
            request_id: request.request_id,
            attempt: request.attempt,
            status: Status::Ok,
            node_id: self.config.node_id,
            members_total: page.members_total,
            first_id: request.first_id,
            next_id: page.next_id,
            entries: MemberEntries::from_slice(&page.entries),
        };
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        match reply.encode(&mut out) {
            Ok(len) => {
                assert!(len <= datagram.len(), "members reply larger than request");
                self.answer(&out[..len], from);
            }
            // Only an address with port 0 has no wire form: a member the node could not
            // reach either. The client's request times out; the log says why.
            Err(e) => log::error!("udplock node: members reply did not encode: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use udplock_protocol::SwimState;

    fn member(id: u64) -> MemberInfo {
        MemberInfo {
            id,
            addr: SocketAddr::from(([10, 0, 0, id as u8], 7000)),
            incarnation: id * 10,
            state: SwimState::Alive,
            since: crate::core::time::Instant::ZERO,
        }
    }

    /// Pages walk the table in id order whatever order it is held in, each stopping where
    /// the room ends and naming the next id, until `next_id` is 0 (spec §4.9).
    #[test]
    fn pages_walk_the_table_in_id_order() {
        let members: Vec<MemberInfo> = [7, 2, 9, 4, 1].map(member).to_vec();
        let mut seen = Vec::new();
        let mut first_id = 0;
        loop {
            let p = page(&members, first_id, 2);
            assert_eq!(p.members_total, 5);
            assert!(p.entries.len() <= 2);
            seen.extend(p.entries.iter().map(|e| e.id));
            if p.next_id == 0 {
                break;
            }
            first_id = p.next_id;
        }
        assert_eq!(seen, [1, 2, 4, 7, 9]);
        // A page from an id nobody has starts at the next one; past the last, it is empty.
        assert_eq!(page(&members, 5, 10).entries.len(), 2);
        let past = page(&members, 10, 10);
        assert_eq!((past.entries.len(), past.next_id), (0, 0));
        // No room: no entry, but where the table continues.
        let none = page(&members, 3, 0);
        assert_eq!((none.entries.len(), none.next_id), (0, 4));
    }

    /// The view sorts the table once per version, and pages of it are the pages of the
    /// table in any order.
    #[test]
    fn the_sorted_view_pages_as_the_table_does() {
        let members: Vec<MemberInfo> = [7, 2, 9, 4, 1, 12, 3].map(member).to_vec();
        let mut sorted = members.clone();
        sorted.sort_by_key(|m| m.id);
        for first_id in 0..14 {
            for fit in 0..9 {
                assert_eq!(
                    page_sorted(&sorted, first_id, fit),
                    page(&members, first_id, fit),
                    "from {first_id}, {fit} entries"
                );
            }
        }
    }

    /// The view follows the table: a member added shows in the next page, and the table
    /// is listed again only when its version moved.
    #[test]
    fn the_sorted_view_follows_the_table_version() {
        use crate::core::swim::{self, Message, Update};
        use crate::core::time::Instant;
        let mut s = Swim::new(swim::Config::new(5, member(5).addr), 1, Instant::ZERO).unwrap();
        let news = |ids: &[u64]| Message::PushPull {
            reply: false,
            members: ids
                .iter()
                .map(|&id| Update {
                    id,
                    addr: member(id).addr,
                    incarnation: 0,
                    state: SwimState::Alive,
                    from: 0,
                })
                .collect(),
        };
        s.handle_message(Instant::ZERO, 9, member(9).addr, news(&[9, 2]));
        let mut view = MembersView::default();
        let ids = |v: &[MemberInfo]| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(view.get(&s)), [2, 5, 9]);
        let version = view.version;
        s.handle_message(Instant::ZERO, 9, member(9).addr, news(&[2]));
        assert_eq!(ids(view.get(&s)), [2, 5, 9]);
        assert_eq!(view.version, version, "nothing changed");
        s.handle_message(Instant::ZERO, 9, member(9).addr, news(&[7]));
        assert_eq!(ids(view.get(&s)), [2, 5, 7, 9]);
        assert_ne!(view.version, version);
    }

    /// The wire has no room for an IPv6 scope id or flow label (spec §8.12): they are left
    /// out, and the page still encodes.
    #[test]
    fn an_ipv6_scope_id_is_left_out() {
        let scoped = MemberInfo {
            addr: "[fe80::1%3]:7000".parse().unwrap(),
            ..member(1)
        };
        let p = page(&[scoped], 0, 1);
        assert_eq!(
            p.entries[0].addr,
            "[fe80::1]:7000".parse::<SocketAddr>().unwrap()
        );
    }
}
