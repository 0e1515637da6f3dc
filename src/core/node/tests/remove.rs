//! REMOVE (spec §4.10, §5.9, issue 10 §2): an operator's authenticated removal of a member
//! that is gone, over bytes between three node cores.

use std::sync::atomic::Ordering::Relaxed;

use udplock_protocol::SwimState::{Alive, Dead, Left};
use udplock_protocol::{
    remove_field, ClusterKey, RemoveOutcome, RemoveReply, RemoveRequest, REMOVE_REQUEST_LEN,
};

use super::*;

/// The cluster key of `test_keys`.
fn key() -> ClusterKey {
    ClusterKey::new(&[7; 32])
}

/// A REMOVE of `member` at `incarnation`, authenticated with `key`, copy `attempt`.
fn removal(member: NodeId, incarnation: u64, key: &ClusterKey, attempt: u16) -> Vec<u8> {
    let request = RemoveRequest {
        session_id: 0x0E11,
        request_id: 1,
        attempt,
        member_id: member,
        incarnation,
        key_id: 0,
    };
    let mut out = vec![0u8; DATAGRAM_LEN_MAX];
    let n = request.encode(&mut out, key).unwrap();
    out.truncate(n);
    out
}

/// Sends `datagram` to node `i` from the client; its answers, each checked to be no longer
/// than the request (spec §2.2) and decoded.
fn ask_remove(trio: &mut Trio, i: usize, datagram: &[u8]) -> Vec<RemoveReply> {
    trio.ask(i, datagram)
        .into_iter()
        .map(|(_, bytes)| {
            assert!(bytes.len() <= datagram.len(), "a reply longer than REMOVE");
            RemoveReply::decode(&bytes)
                .unwrap_or_else(|e| panic!("not a REMOVE_REPLY ({e}): {bytes:02x?}"))
        })
        .collect()
}

/// The one answer to `datagram` at node `i`.
fn remove_at(trio: &mut Trio, i: usize, datagram: &[u8]) -> RemoveReply {
    let replies = ask_remove(trio, i, datagram);
    assert_eq!(replies.len(), 1, "one answer to one REMOVE: {replies:?}");
    replies[0]
}

/// A trio whose nodes hold each other alive, then node 3 cut off until both others hold it
/// dead: a machine that died. Returns the incarnation they hold it at.
fn trio_with_a_dead_node(keys: KeySet) -> (Trio, u64) {
    let mut trio = Trio::new(1, keys);
    let all_alive = |trio: &Trio| {
        (0..3)
            .all(|i| (0..3).all(|j| i == j || member_state(trio, i, j).map(|m| m.0) == Some(Alive)))
    };
    assert!(periods_until(&mut trio, 3, all_alive).is_some());
    trio.cut = Some(2);
    let dead = |trio: &Trio| (0..2).all(|i| member_state(trio, i, 2).map(|m| m.0) == Some(Dead));
    assert!(periods_until(&mut trio, 60, dead).is_some());
    let incarnation = member_state(&trio, 0, 2).unwrap().1;
    assert_eq!(member_state(&trio, 1, 2).unwrap().1, incarnation);
    (trio, incarnation)
}

/// Issue 10 §2, spec §4.10: a valid REMOVE of a member held dead at its incarnation makes the
/// node hold it left there, answered REMOVED; the news spreads by gossip to the other node;
/// a retransmission is answered ALREADY_REMOVED (idempotent) and changes nothing.
#[test]
fn a_removal_of_a_dead_member_marks_it_left_and_it_spreads() {
    let (mut trio, incarnation) = trio_with_a_dead_node(test_keys());
    while trio.nodes[0].poll_member_event().is_some() {}
    let reply = remove_at(&mut trio, 0, &removal(3, incarnation, &key(), 0));
    assert_eq!(reply.outcome, Some(RemoveOutcome::Removed));
    assert_eq!(
        (
            reply.node_id,
            reply.member_id,
            reply.state,
            reply.incarnation
        ),
        (1, 3, Left, incarnation)
    );
    assert_eq!(member_state(&trio, 0, 2), Some((Left, incarnation)));
    let events: Vec<swim::Event> =
        std::iter::from_fn(|| trio.nodes[0].poll_member_event()).collect();
    assert!(
        events.contains(&swim::Event::Left { id: 3 }),
        "no Left event: {events:?}"
    );
    assert_eq!(trio.nodes[0].stats().members_left.load(Relaxed), 1);
    // Gossip carries it to node 2 within a few periods (λ·log n retransmissions).
    let spread = |trio: &Trio| member_state(trio, 1, 2) == Some((Left, incarnation));
    assert!(
        periods_until(&mut trio, 5, spread).is_some(),
        "node 2 holds {:?}",
        member_state(&trio, 1, 2)
    );
    // Idempotent: a retransmission, at either node, finds it removed.
    for i in 0..2 {
        let again = remove_at(&mut trio, i, &removal(3, incarnation, &key(), 1));
        assert_eq!(again.outcome, Some(RemoveOutcome::AlreadyRemoved));
        assert_eq!((again.state, again.incarnation), (Left, incarnation));
    }
    assert_eq!(member_state(&trio, 0, 2), Some((Left, incarnation)));
}

/// Spec §4.10: a node never removes a member it holds alive, nor itself (stop a live node
/// first, or with a leave), nor one it holds at another incarnation; a member it does
/// not know is UNKNOWN_MEMBER. Nothing changes in any case.
#[test]
fn a_removal_of_a_live_member_itself_or_an_unknown_one_is_refused() {
    let mut trio = Trio::new(1, test_keys());
    let all_alive = |trio: &Trio| {
        (0..3)
            .all(|i| (0..3).all(|j| i == j || member_state(trio, i, j).map(|m| m.0) == Some(Alive)))
    };
    assert!(periods_until(&mut trio, 3, all_alive).is_some());
    let held = member_state(&trio, 0, 1).unwrap();
    let reply = remove_at(&mut trio, 0, &removal(2, held.1, &key(), 0));
    assert_eq!(reply.outcome, Some(RemoveOutcome::Alive));
    assert_eq!((reply.state, reply.incarnation), held);
    let own = trio.nodes[0].swim().incarnation();
    let reply = remove_at(&mut trio, 0, &removal(1, own, &key(), 0));
    assert_eq!(reply.outcome, Some(RemoveOutcome::Alive));
    assert_eq!((reply.state, reply.incarnation), (Alive, own));
    let reply = remove_at(&mut trio, 0, &removal(99, 5, &key(), 0));
    assert_eq!(reply.outcome, Some(RemoveOutcome::UnknownMember));
    assert_eq!((reply.member_id, reply.incarnation), (99, 0));
    trio.run_for(3_000);
    assert!(all_alive(&trio), "{:?}", trio.nodes[0].members());
    assert_eq!(trio.nodes[0].swim().incarnation(), own);

    // A dead member at another incarnation than the request's.
    let (mut trio, incarnation) = trio_with_a_dead_node(test_keys());
    for wrong in [incarnation - 1, incarnation + 1] {
        let reply = remove_at(&mut trio, 0, &removal(3, wrong, &key(), 0));
        assert_eq!(reply.outcome, Some(RemoveOutcome::OtherIncarnation));
        assert_eq!((reply.state, reply.incarnation), (Dead, incarnation));
    }
    assert_eq!(member_state(&trio, 0, 2), Some((Dead, incarnation)));
}

/// Spec §4.10, §12: a REMOVE the node cannot authenticate is dropped without an answer and
/// removes nothing, and is counted: a wrong MAC, one made with a key the node does not hold
/// (unknown key id), one whose key id was changed to the node's, one cut short, one with a
/// byte more, and any REMOVE at a node that holds no key.
#[test]
fn a_forged_removal_is_dropped_and_removes_nothing() {
    let (mut trio, incarnation) = trio_with_a_dead_node(test_keys());
    let valid = removal(3, incarnation, &key(), 0);
    let mut bad_mac = valid.clone();
    bad_mac[REMOVE_REQUEST_LEN - 1] ^= 0x80;
    let other_key = removal(3, incarnation, &ClusterKey::new(&[8; 32]), 0);
    let mut relabelled = other_key.clone();
    let key_id = udplock_protocol::HEADER_LEN + remove_field::KEY_ID.start;
    relabelled[key_id..key_id + 4].copy_from_slice(&key().id().to_be_bytes());
    let truncated = valid[..REMOVE_REQUEST_LEN - 1].to_vec();
    let mut longer = valid.clone();
    longer.push(0);
    let forged = [bad_mac, other_key, relabelled, truncated, longer];
    for (k, datagram) in forged.iter().enumerate() {
        let before = trio.nodes[0].stats().remove_dropped.load(Relaxed);
        let replies = trio.ask(0, datagram);
        assert!(replies.is_empty(), "forgery {k} was answered: {replies:?}");
        assert_eq!(
            trio.nodes[0].stats().remove_dropped.load(Relaxed),
            before + 1,
            "forgery {k} not counted"
        );
        assert_eq!(member_state(&trio, 0, 2), Some((Dead, incarnation)));
    }
    // The valid one still works afterwards.
    let reply = remove_at(&mut trio, 0, &valid);
    assert_eq!(reply.outcome, Some(RemoveOutcome::Removed));

    // Without a key, a node has nothing to check a removal with: it takes none.
    let (mut trio, incarnation) = trio_with_a_dead_node(KeySet::unauthenticated());
    let replies = trio.ask(0, &removal(3, incarnation, &key(), 0));
    assert!(replies.is_empty(), "answered without a key: {replies:?}");
    assert_eq!(trio.nodes[0].stats().remove_dropped.load(Relaxed), 1);
    assert_eq!(member_state(&trio, 0, 2), Some((Dead, incarnation)));
}

/// Spec §12: a replayed removal never removes a node that came back. Node 3 is removed at its
/// incarnation, restarts (a fresh core at a higher incarnation, spec §8.11) and is alive
/// again; the captured REMOVE, replayed, is refused (ALIVE) — and once the node fails again,
/// refused still (OTHER_INCARNATION), at both nodes.
#[test]
fn a_replayed_removal_removes_no_node_that_came_back() {
    let (mut trio, incarnation) = trio_with_a_dead_node(test_keys());
    let captured = removal(3, incarnation, &key(), 0);
    let reply = remove_at(&mut trio, 0, &captured);
    assert_eq!(reply.outcome, Some(RemoveOutcome::Removed));
    // The machine is replaced in place: a fresh core, a new life.
    trio.cut = None;
    let config = trio.nodes[2].config().clone();
    trio.nodes[2] = Node::new(
        config,
        vec![Some(Start::Rejoin)],
        test_keys(),
        1_700_000_100_000_000,
        4242,
        Arc::new(NodeStats::default()),
        trio.now,
    )
    .unwrap();
    trio.written[2] = 0;
    let back = |trio: &Trio| (0..2).all(|i| member_state(trio, i, 2).map(|m| m.0) == Some(Alive));
    assert!(
        periods_until(&mut trio, 3 * u64::from(SWIM_RECONNECT_PERIODS), back).is_some(),
        "node 3 is not back: {:?}",
        trio.nodes[0].members()
    );
    let newer = member_state(&trio, 0, 2).unwrap().1;
    assert!(newer > incarnation);
    for i in 0..2 {
        let reply = remove_at(&mut trio, i, &captured);
        assert_eq!(reply.outcome, Some(RemoveOutcome::Alive), "at node {i}");
    }
    assert!(back(&trio));
    // It fails again: the replay still names the old life.
    trio.cut = Some(2);
    let dead = |trio: &Trio| (0..2).all(|i| member_state(trio, i, 2).map(|m| m.0) == Some(Dead));
    assert!(periods_until(&mut trio, 60, dead).is_some());
    for i in 0..2 {
        let reply = remove_at(&mut trio, i, &captured);
        assert_eq!(reply.outcome, Some(RemoveOutcome::OtherIncarnation));
        assert_eq!(reply.state, Dead);
        assert!(reply.incarnation > incarnation);
    }
    assert!(dead(&trio));
}

/// Spec §4.10, §8.12: a mistaken removal of a node that is in fact alive (here: cut off long
/// enough to be held dead, then reachable again) heals: it hears it is held left and refutes
/// with a higher incarnation, and both others hold it alive again.
#[test]
fn a_mistaken_removal_of_a_live_node_heals() {
    let (mut trio, incarnation) = trio_with_a_dead_node(test_keys());
    let reply = remove_at(&mut trio, 0, &removal(3, incarnation, &key(), 0));
    assert_eq!(reply.outcome, Some(RemoveOutcome::Removed));
    trio.cut = None;
    let healed = |trio: &Trio| {
        (0..2).all(|i| {
            member_state(trio, i, 2).is_some_and(|(s, inc)| s == Alive && inc > incarnation)
        })
    };
    assert!(
        periods_until(&mut trio, 3 * u64::from(SWIM_RECONNECT_PERIODS), healed).is_some(),
        "not healed: {:?} / {:?}",
        member_state(&trio, 0, 2),
        member_state(&trio, 1, 2)
    );
}

/// Spec §4.10: a member held suspect (not yet dead) may be removed too, at its incarnation:
/// the operator knows the machine is gone before SWIM's suspicion times out.
#[test]
fn a_suspected_member_can_be_removed() {
    use udplock_protocol::SwimState::Suspect;
    let mut trio = Trio::new(1, test_keys());
    let all_alive = |trio: &Trio| {
        (0..3)
            .all(|i| (0..3).all(|j| i == j || member_state(trio, i, j).map(|m| m.0) == Some(Alive)))
    };
    assert!(periods_until(&mut trio, 3, all_alive).is_some());
    trio.cut = Some(2);
    let suspect = |trio: &Trio| member_state(trio, 0, 2).map(|m| m.0) == Some(Suspect);
    assert!(periods_until(&mut trio, 30, suspect).is_some());
    let incarnation = member_state(&trio, 0, 2).unwrap().1;
    let reply = remove_at(&mut trio, 0, &removal(3, incarnation, &key(), 0));
    assert_eq!(reply.outcome, Some(RemoveOutcome::Removed));
    assert_eq!(member_state(&trio, 0, 2), Some((Left, incarnation)));
    // Its suspicion ended with it: it never becomes dead later.
    trio.run_for(60_000);
    assert_eq!(member_state(&trio, 0, 2), Some((Left, incarnation)));
}
