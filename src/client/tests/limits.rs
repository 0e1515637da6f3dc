//! An INVALID_ARGUMENT refusal made to name the field and the server's limit (`limits.rs`,
//! issue 11 item 6), against a scripted node that refuses every lock request and answers
//! NODE_SETTINGS with its limits, or not at all.

use super::*;
use udplock_protocol::{
    NodeSettingsReply, NodeSettingsRequest, Setting, SettingValue, SettingValues,
};

/// A node that answers every lock request INVALID_ARGUMENT and, if `limits` (wait_ms_max,
/// ttl_ms_max), NODE_SETTINGS with them; counts the NODE_SETTINGS requests it got.
fn refusing_node(limits: Option<(u64, u64)>, asked: Arc<AtomicU64>) -> FakeServer {
    FakeServer::spawn_raw(move |datagram| {
        let Some(bytes) = datagram else {
            return Vec::new();
        };
        if let Ok(req) = Request::decode(bytes) {
            return vec![reply_to(&req, Status::InvalidArgument, |_| {})];
        }
        let Ok(req) = NodeSettingsRequest::decode(bytes) else {
            return Vec::new();
        };
        asked.fetch_add(1, Ordering::Relaxed);
        let Some((wait_max, ttl_max)) = limits else {
            return Vec::new();
        };
        let values = [
            SettingValue {
                setting: Setting::WaitMsMax.to_wire(),
                value: wait_max,
            },
            SettingValue {
                setting: Setting::TtlMsMax.to_wire(),
                value: ttl_max,
            },
        ];
        let reply = NodeSettingsReply {
            session_id: req.session_id,
            request_id: req.request_id,
            attempt: req.attempt,
            status: Status::Ok,
            node_id: 1,
            cluster_id: 0xc1,
            values: SettingValues::from_slice(&values),
        };
        let mut buf = [0u8; DATAGRAM_LEN_MAX];
        let len = reply.encode(&mut buf).unwrap();
        vec![buf[..len].to_vec()]
    })
}

fn message(r: Result<impl std::fmt::Debug, LockError>) -> String {
    match r {
        Err(LockError::InvalidArgument(text)) => text,
        other => panic!("not an invalid argument: {other:?}"),
    }
}

#[test]
fn a_refused_field_is_named_with_the_servers_limit() {
    let asked = Arc::new(AtomicU64::new(0));
    let node = refusing_node(Some((10_000, 300_000)), Arc::clone(&asked));
    let client = client_for(&node, |_| {});
    let text = message(client.acquire("r", "c", 60_000, Some(600_000)));
    assert!(
        text.contains("wait 60000 ms is above the server's maximum of 10000 ms"),
        "{text}"
    );
    assert!(
        text.contains("ttl 600000 ms is above the server's maximum of 300000 ms"),
        "{text}"
    );
    let text = message(client.renew("r", "c", Some(400_000)));
    assert!(text.contains("ttl 400000 ms is above"), "{text}");
    let text = message(client.configure("r", Some(300_001)));
    assert!(text.contains("default ttl 300001 ms is above"), "{text}");
    // Asked only after a refusal: once per refused call.
    assert_eq!(asked.load(Ordering::Relaxed), 3);
}

/// A refusal no asked value explains (a limit changed in between), or a node that does not
/// answer NODE_SETTINGS, keeps the generic message.
#[test]
fn an_unexplained_refusal_keeps_the_generic_message() {
    let generic = LockError::from_status(Status::InvalidArgument).unwrap();
    let node = refusing_node(Some((10_000, 300_000)), Arc::default());
    let client = client_for(&node, |_| {});
    assert_eq!(
        client.acquire("r", "c", 5_000, Some(1_000)),
        Err(generic.clone())
    );
    let silent = refusing_node(None, Arc::default());
    let client = client_for(&silent, |c| c.request_timeout_ms = 200);
    assert_eq!(client.renew("r", "c", Some(400_000)), Err(generic));
}

/// A request that succeeds asks nothing more.
#[test]
fn a_granted_request_asks_for_no_limits() {
    let asked = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&asked);
    let node = FakeServer::spawn_raw(move |datagram| {
        let Some(bytes) = datagram else {
            return Vec::new();
        };
        match Request::decode(bytes) {
            Ok(req) => vec![reply_to(&req, Status::Ok, |r| {
                r.hold_count = 1;
                r.fencing_token = 7;
                r.lease_ms = 1_000;
            })],
            Err(_) => {
                if NodeSettingsRequest::decode(bytes).is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Vec::new()
            }
        }
    });
    let client = client_for(&node, |_| {});
    client.acquire("r", "c", 1_000, Some(1_000)).unwrap();
    assert_eq!(asked.load(Ordering::Relaxed), 0);
}
