//! The operators' queries (SHARD_STATUS, NODE_SETTINGS) against a scripted node: pages put
//! together, replies to other requests ignored, error statuses and ERROR_REPLY mapped.

use super::*;
use udplock_protocol::{
    DecodeError, NodeSettingsReply, NodeSettingsRequest, Setting, SettingValue, SettingValues,
    ShardRole, ShardStatusEntries, ShardStatusEntry, ShardStatusReply, ShardStatusRequest,
};

/// Shards of the scripted node, and how many it lists per page.
const SHARDS: u16 = 5;
const PAGE: u16 = 2;
/// A term no real entry has: the entries of replies to other requests carry it.
const STRAY_TERM: u64 = 666;

fn encoded(len: Result<usize, udplock_protocol::EncodeError>, buf: &[u8]) -> Vec<u8> {
    buf[..len.unwrap()].to_vec()
}

/// The entry the scripted node reports for `shard`.
fn entry(shard: u16, term: u64) -> ShardStatusEntry {
    ShardStatusEntry {
        shard,
        role: if shard % 2 == 0 {
            ShardRole::Leader
        } else {
            ShardRole::Follower
        },
        leader_id: u64::from(shard % 2), // shard 0, 2, 4: no leader known (0)
        term,
        commit_index: u64::from(shard) * 10,
        applied_index: u64::from(shard) * 10 - u64::from(shard % 2),
        held: u32::from(shard),
        waiters: 1,
    }
}

/// A SHARD_STATUS_REPLY page from node 7 to `req` (or, with `stray`, to another request of
/// its session, with other entries).
fn page(req: &ShardStatusRequest, stray: bool) -> Vec<u8> {
    let first = req.first_shard.min(SHARDS);
    let end = (first + PAGE).min(SHARDS);
    let term = if stray { STRAY_TERM } else { 3 };
    let entries: Vec<ShardStatusEntry> = (first..end).map(|s| entry(s, term)).collect();
    let reply = ShardStatusReply {
        session_id: req.session_id,
        request_id: req.request_id + u64::from(stray) * 1_000,
        attempt: req.attempt,
        status: Status::Ok,
        node_id: 7,
        shards_total: SHARDS,
        first_shard: first,
        entries: ShardStatusEntries::from_slice(&entries),
    };
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    encoded(reply.encode(&mut buf), &buf)
}

/// A node that answers each request `decode` reads with what `answer` returns for it, and
/// ignores any other datagram.
fn node_of<R: 'static>(
    decode: fn(&[u8]) -> Result<R, DecodeError>,
    mut answer: impl FnMut(R) -> Vec<Vec<u8>> + Send + 'static,
) -> FakeServer {
    FakeServer::spawn_raw(move |datagram| match datagram.map(decode) {
        Some(Ok(req)) => answer(req),
        _ => Vec::new(),
    })
}

/// An ERROR_REPLY with `status` to the request `(session_id, request_id, attempt)`.
fn error_reply((session_id, request_id, attempt): (u64, u64, u16), status: Status) -> Vec<u8> {
    let reply = Reply::bare(
        MessageType::ErrorReply,
        session_id,
        request_id,
        attempt,
        status,
    );
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    encoded(reply.encode(&mut buf), &buf)
}

#[test]
fn shard_status_reads_every_page_and_ignores_replies_to_other_requests() {
    let node = node_of(ShardStatusRequest::decode, |req| {
        // First a page answering another request id, and an ERROR_REPLY to another one:
        // both must be dropped, not taken for this page's answer.
        let ids = (req.session_id, req.request_id + 2_000, req.attempt);
        vec![
            page(&req, true),
            error_reply(ids, Status::Unsupported),
            page(&req, false),
        ]
    });
    let client = client_for(&node, |_| {});
    let report = client.shard_status(node.addr).unwrap();
    assert_eq!(report.node_id, 7);
    let expected: Vec<ShardInfo> = (0..SHARDS)
        .map(|s| {
            let e = entry(s, 3);
            ShardInfo {
                shard: s,
                role: e.role,
                leader_id: (s % 2 == 1).then_some(1),
                term: 3,
                commit_index: e.commit_index,
                applied_index: e.applied_index,
                held: e.held,
                waiters: 1,
            }
        })
        .collect();
    assert_eq!(report.shards, expected);
    // Three pages, each preceded by two replies to other requests.
    assert!(
        client.stats().dropped_datagrams >= 6,
        "{:?}",
        client.stats()
    );
}

/// Spec §3.2 check 5 and §11: a page naming a role this client does not know (6 and up are
/// reserved; a later revision may assign them, as role 5, learner, was) fails to decode and
/// is dropped like any such datagram: the client neither crashes nor believes it, takes the
/// next good page, and without one reports no answer (Unavailable).
#[test]
fn a_page_with_an_unknown_role_is_dropped() {
    // Byte 2 of the first entry, after the 32-byte header and the 16-byte fixed part.
    const FIRST_ROLE: usize = 32 + 16 + 2;
    let with_unknown_role = |req: &ShardStatusRequest| {
        let mut bad = page(req, false);
        bad[FIRST_ROLE] = 6;
        assert_eq!(
            ShardStatusReply::decode(&bad).err(),
            Some(DecodeError::BadShardStatus)
        );
        bad
    };
    let node = node_of(ShardStatusRequest::decode, move |req| {
        vec![with_unknown_role(&req), page(&req, false)]
    });
    let client = client_for(&node, |_| {});
    let report = client.shard_status(node.addr).unwrap();
    assert_eq!(report.shards.len(), usize::from(SHARDS));
    assert!(report.shards.iter().all(|info| info.term == 3));
    assert!(
        client.stats().dropped_datagrams >= 3,
        "{:?}",
        client.stats()
    );

    let only_unknown = node_of(ShardStatusRequest::decode, move |req| {
        vec![with_unknown_role(&req)]
    });
    let client = client_for(&only_unknown, |c| c.request_timeout_ms = 300);
    assert_eq!(
        client.shard_status(only_unknown.addr),
        Err(LockError::Unavailable)
    );
}

#[test]
fn an_error_status_or_an_error_reply_ends_a_shard_status() {
    let node = node_of(ShardStatusRequest::decode, |req| {
        let reply = ShardStatusReply {
            session_id: req.session_id,
            request_id: req.request_id,
            attempt: req.attempt,
            status: Status::RequestExpired,
            node_id: 0,
            shards_total: 0,
            first_shard: 0,
            entries: ShardStatusEntries::empty(),
        };
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        vec![encoded(reply.encode(&mut buf), &buf)]
    });
    let client = client_for(&node, |_| {});
    assert_eq!(
        client.shard_status(node.addr),
        Err(LockError::OutcomeUnknown)
    );

    let unsupported = node_of(ShardStatusRequest::decode, |req| {
        let ids = (req.session_id, req.request_id, req.attempt);
        vec![error_reply(ids, Status::Unsupported)]
    });
    match client.shard_status(unsupported.addr) {
        Err(LockError::InternalError(message)) => {
            assert!(message.contains("UNSUPPORTED"), "{message}");
            assert!(message.contains("SHARD_STATUS"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn node_settings_reports_the_settings_it_knows_and_maps_errors() {
    let node = node_of(NodeSettingsRequest::decode, |req| {
        let values = [
            SettingValue {
                setting: Setting::Shards.to_wire(),
                value: 64,
            },
            SettingValue {
                setting: 0xfffe, // a code this client does not know
                value: 1,
            },
            SettingValue {
                setting: Setting::WaitMsMax.to_wire(),
                value: 300_000,
            },
        ];
        let reply = |request_id, status, values| NodeSettingsReply {
            session_id: req.session_id,
            request_id,
            attempt: req.attempt,
            status,
            node_id: if status == Status::Ok { 3 } else { 0 },
            cluster_id: if status == Status::Ok { 0xc1 } else { 0 },
            values: SettingValues::from_slice(values),
        };
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        let stray = encoded(
            reply(req.request_id + 1, Status::Ok, &values[..1]).encode(&mut buf),
            &buf,
        );
        let answer = encoded(
            reply(req.request_id, Status::Ok, &values).encode(&mut buf),
            &buf,
        );
        vec![stray, answer]
    });
    let client = client_for(&node, |_| {});
    let report = client.node_settings(node.addr).unwrap();
    assert_eq!(
        report,
        NodeSettingsReport {
            node_id: 3,
            cluster_id: 0xc1,
            settings: vec![(Setting::Shards, 64), (Setting::WaitMsMax, 300_000)],
        }
    );
    assert!(client.stats().dropped_datagrams >= 1);

    let refusing = node_of(NodeSettingsRequest::decode, |req| {
        let reply = NodeSettingsReply {
            session_id: req.session_id,
            request_id: req.request_id,
            attempt: req.attempt,
            status: Status::RequestExpired,
            node_id: 0,
            cluster_id: 0,
            values: SettingValues::from_slice(&[]),
        };
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        vec![encoded(reply.encode(&mut buf), &buf)]
    });
    assert_eq!(
        client.node_settings(refusing.addr),
        Err(LockError::OutcomeUnknown)
    );
}

/// Issue 12: a node whose pages do not start where they were asked (here: always at shard
/// 0) made the report list more shards than the cluster has (4,108 of 4,096). The first
/// such page now ends the read with an error that says what came.
#[test]
fn a_shard_status_page_that_starts_elsewhere_ends_the_read() {
    let node = node_of(ShardStatusRequest::decode, |req| {
        vec![page(
            &ShardStatusRequest {
                first_shard: 0,
                ..req
            },
            false,
        )]
    });
    let client = client_for(&node, |_| {});
    let error = client.shard_status(node.addr).unwrap_err();
    let LockError::InternalError(what) = &error else {
        panic!("{error:?}");
    };
    assert!(
        what.contains("from shard 2 with a page of 2 shards from shard 0 of 5"),
        "{what}"
    );
}

/// Spec §7.1.4 rule 5 for the operators' queries: only the node asked answers. A page
/// from another address is dropped (and counted), so the read ends without an answer.
#[test]
fn a_shard_status_page_from_another_address_is_dropped() {
    let node = UdpSocket::bind("127.0.0.1:0").unwrap();
    node.set_read_timeout(Some(StdDuration::from_millis(1)))
        .unwrap();
    let node_addr = node.local_addr().unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = Arc::clone(&stop);
    // Answers every SHARD_STATUS correctly, but from `other`.
    let thread = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop_flag.load(Ordering::Relaxed) {
            if let Ok((len, from)) = node.recv_from(&mut buf) {
                if let Ok(req) = ShardStatusRequest::decode(&buf[..len]) {
                    other.send_to(&page(&req, false), from).unwrap();
                }
            }
        }
    });
    let mut config = ClientConfig::new(vec![node_addr]);
    config.request_timeout_ms = 200;
    let client = Client::new(config).unwrap();
    assert_eq!(
        client.shard_status(node_addr).unwrap_err(),
        LockError::Unavailable
    );
    assert!(
        client.stats().dropped_datagrams >= 1,
        "{:?}",
        client.stats()
    );
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

/// The same flaw in MEMBERS paging: a page that does not start at the member id asked for
/// (here: the second page starts at 0 again) ends the read with an error.
#[test]
fn a_members_page_that_starts_elsewhere_ends_the_read() {
    use udplock_protocol::{MemberEntries, MemberEntry, MembersReply, MembersRequest, SwimState};
    let node = node_of(MembersRequest::decode, |req| {
        let entries = [MemberEntry {
            id: 1,
            incarnation: 0,
            state: SwimState::Alive,
            addr: "127.0.0.1:7101".parse().unwrap(),
        }];
        let reply = MembersReply {
            session_id: req.session_id,
            request_id: req.request_id,
            attempt: req.attempt,
            status: Status::Ok,
            node_id: 1,
            members_total: 3,
            first_id: 0,
            next_id: 2,
            entries: MemberEntries::from_slice(&entries),
        };
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        vec![encoded(reply.encode(&mut buf), &buf)]
    });
    let client = client_for(&node, |_| {});
    let error = client.members(node.addr).unwrap_err();
    let LockError::InternalError(what) = &error else {
        panic!("{error:?}");
    };
    assert!(
        what.contains("from member 2 with a page from member 0"),
        "{what}"
    );
}
