//! Client keys (spec §7.1.10, issue 12 item 2): every lock request sealed with the client's
//! key, each copy with its own MAC; only replies that key sealed believed (an unsealed
//! UNAUTHENTICATED aside); UNAUTHENTICATED and FORBIDDEN final.

use super::*;
use udplock_protocol::{
    AddressToken, ClientKey, RequestBody, AUTH_ACQUIRE_WAIT_REQUEST_LEN, AUTH_REQUEST_LEN_MIN,
    AUTH_STATUS_REQUEST_LEN,
};

fn key(n: u8) -> ClientKey {
    ClientKey::new([n; 32])
}

/// What the fake server saw of one copy: its type, length, attempt, address token, and
/// whether it verified with the server's copy of the client's key.
#[derive(Clone, Debug)]
struct SeenCopy {
    msg_type: MessageType,
    len: usize,
    attempt: u16,
    token: Option<AddressToken>,
    verified: bool,
}

type Copies = Arc<Mutex<Vec<SeenCopy>>>;

/// `reply` encoded, sealed with `key` if any.
fn sealed(reply: &Reply<'_>, key: Option<&ClientKey>) -> Vec<u8> {
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    let len = reply.encode_sealed(&mut buf, key).unwrap();
    buf[..len].to_vec()
}

/// The genuine answer to `req` with `status` (a grant of token `token` for an ACQUIRE or
/// RENEW, a release of it, a KEEPALIVE renewing its first token).
fn answer<'a>(req: &Request<'a>, status: Status, token: u64) -> Reply<'a> {
    let mut reply = Reply::bare(
        req.body.msg_type().reply_type().unwrap(),
        req.session_id,
        req.request_id,
        req.attempt,
        status,
    );
    if status == Status::Ok {
        match req.body {
            RequestBody::Acquire { .. } | RequestBody::Renew { .. } => {
                reply.hold_count = 1;
                reply.fencing_token = token;
                reply.lease_ms = 1_000;
            }
            RequestBody::Release { .. } => reply.fencing_token = token,
            RequestBody::Keepalive { .. } => {
                reply.hold_count = 1;
                reply.fencing_token = 1;
                reply.lease_ms = 1_000;
            }
            _ => {}
        }
    }
    reply
}

/// A fake server holding `server_key` (the client's, or another): logs every copy and
/// answers it with what `respond` returns for the decoded request.
fn keyed_server<F>(server_key: ClientKey, copies: &Copies, mut respond: F) -> FakeServer
where
    F: FnMut(&Request<'_>, Option<AddressToken>, &ClientKey) -> Vec<Vec<u8>> + Send + 'static,
{
    let log = Arc::clone(copies);
    FakeServer::spawn_raw(move |datagram| {
        let Some(bytes) = datagram else {
            return Vec::new();
        };
        let Ok((req, token, _auth)) = Request::decode_authenticated(bytes) else {
            return Vec::new();
        };
        log.lock().unwrap().push(SeenCopy {
            msg_type: req.body.msg_type(),
            len: bytes.len(),
            attempt: req.attempt,
            token,
            verified: server_key.verify_request(bytes),
        });
        respond(&req, token, &server_key)
    })
}

fn copies_of(copies: &Copies) -> Vec<SeenCopy> {
    copies.lock().unwrap().clone()
}

/// Every lock request of a keyed client is sealed with its key and padded so that its
/// sealed reply fits (100 bytes, 200 for an ACQUIRE that may wait, 355 for STATUS), and a
/// forged unsealed answer or one sealed with another key, sent first, is dropped: the
/// call takes the sealed one after it.
#[test]
fn every_lock_request_is_sealed_and_only_its_keys_replies_are_believed() {
    let copies = Copies::default();
    let server = keyed_server(key(1), &copies, |req, _token, server_key| {
        let genuine = answer(req, Status::Ok, 9);
        let forged = answer(req, Status::Ok, 666);
        vec![
            sealed(&forged, None),
            sealed(&forged, Some(&key(2))),
            sealed(&genuine, Some(server_key)),
        ]
    });
    let client = client_of(&[&server], |c| *c = c.clone().with_client_key(key(1)));
    assert_eq!(
        client
            .acquire("a/1", "a/w", 0, Some(1_000))
            .unwrap()
            .fencing_token,
        9
    );
    assert_eq!(
        client
            .acquire("a/1", "a/w", 500, Some(1_000))
            .unwrap()
            .fencing_token,
        9
    );
    assert_eq!(
        client
            .renew("a/1", "a/w", Some(1_000))
            .unwrap()
            .fencing_token,
        9
    );
    client.status("a/1").unwrap();
    client.configure("a/1", Some(1_000)).unwrap();
    assert_eq!(client.keepalive(0, &[9], None).unwrap().renewed_bitmap, 1);
    assert_eq!(client.release("a/1", "a/w").unwrap(), 0);
    let copies = copies_of(&copies);
    // One entry per request: a retransmission (a slow machine) repeats its request's.
    let mut lens: Vec<(MessageType, usize)> = copies.iter().map(|c| (c.msg_type, c.len)).collect();
    lens.dedup();
    let t = |t: MessageType, len: usize| (t, len);
    assert_eq!(
        lens,
        [
            t(MessageType::Acquire, AUTH_REQUEST_LEN_MIN),
            t(MessageType::Acquire, AUTH_ACQUIRE_WAIT_REQUEST_LEN),
            t(MessageType::Renew, AUTH_REQUEST_LEN_MIN),
            t(MessageType::Status, AUTH_STATUS_REQUEST_LEN),
            t(MessageType::Configure, AUTH_REQUEST_LEN_MIN),
            t(MessageType::Keepalive, AUTH_REQUEST_LEN_MIN),
            t(MessageType::Release, AUTH_REQUEST_LEN_MIN),
        ]
    );
    assert!(copies.iter().all(|c| c.verified), "{copies:?}");
    // Two forgeries per call, none believed.
    assert!(
        client.stats().dropped_datagrams >= 14,
        "{:?}",
        client.stats()
    );
}

/// Each copy is sealed anew: the MAC covers the attempt number and the address token, so
/// the copy that follows a RETRY (sealed, as every reply to a sealed request) carries the
/// token and its own attempt, and still verifies.
#[test]
fn every_copy_is_sealed_with_its_own_attempt_and_token() {
    let copies = Copies::default();
    let token = AddressToken([0x5a; 16]);
    let server = keyed_server(key(1), &copies, move |req, got, key| {
        let reply = if got != Some(token) {
            Reply {
                hint: Hint::AddressToken(token),
                ..answer(req, Status::Retry, 0)
            }
        } else {
            answer(req, Status::Ok, 9)
        };
        vec![sealed(&reply, Some(key))]
    });
    let client = client_of(&[&server], |c| *c = c.clone().with_client_key(key(1)));
    assert_eq!(
        client.acquire("a/1", "a/w", 0, None).unwrap().fencing_token,
        9
    );
    let copies = copies_of(&copies);
    // The first copy, without the token; then, after the RETRY, copies with it, each with
    // its own attempt (a slow machine may add retransmissions on either side).
    assert_eq!((copies[0].attempt, copies[0].token), (0, None));
    let last = copies.last().unwrap();
    assert!(last.attempt >= 1 && last.token == Some(token), "{copies:?}");
    assert!(copies
        .iter()
        .all(|c| c.verified && c.len == AUTH_REQUEST_LEN_MIN));
}

/// UNAUTHENTICATED (unsealed: the server knows no key to seal with) ends an ACQUIRE, and
/// FORBIDDEN (sealed) any call, with their errors, naming the client id the key does not
/// cover; a FORBIDDEN that is not sealed is a forgery, dropped, and the call ends at its
/// deadline. An unsealed UNAUTHENTICATED may be forged too, so it ends no RELEASE (spec
/// §7.1.10 rule 2): the release stays in doubt, and is kept to be settled.
#[test]
fn unauthenticated_and_forbidden_end_the_call() {
    let copies = Copies::default();
    let server = keyed_server(key(1), &copies, |req, _token, key| {
        let (status, seal) = match req.body.client() {
            Some(b"a/unknown") => (Status::Unauthenticated, None),
            Some(b"a/forged") => (Status::Forbidden, None),
            _ => (Status::Forbidden, Some(key)),
        };
        vec![sealed(&answer(req, status, 0), seal)]
    });
    let client = client_of(&[&server], |c| {
        *c = c.clone().with_client_key(key(1));
        c.request_timeout_ms = 300;
    });
    assert_eq!(
        client.acquire("b/1", "a/unknown", 10_000, None).map(drop),
        Err(LockError::Unauthenticated),
        "final, long before the 10 s wait"
    );
    assert_eq!(
        client.release("b/1", "a/unknown"),
        Err(LockError::ReleaseInDoubt)
    );
    assert_eq!(
        client.acquire("b/1", "a/unknown", 0, None).map(drop),
        Err(LockError::ReleaseInDoubt),
        "the doubt is sent again first, and an unsealed refusal does not settle it"
    );
    let last = copies_of(&copies).last().unwrap().msg_type;
    assert_eq!(last, MessageType::Release, "the acquire was never sent");
    assert_eq!(
        client.acquire("b/1", "b/w", 10_000, None).map(drop),
        Err(LockError::Forbidden {
            client_id: Some("b/w".into())
        }),
        "final, long before the 10 s wait"
    );
    assert_eq!(
        client.renew("b/1", "a/forged", None).map(drop),
        Err(LockError::Unavailable)
    );
}

/// A client without a key sends today's bytes and drops a sealed reply (a seal answering a
/// request that carried none is a contradiction), taking the unsealed one after it.
#[test]
fn a_client_without_a_key_drops_sealed_replies() {
    let copies = Copies::default();
    let server = keyed_server(key(1), &copies, |req, _token, key| {
        vec![
            sealed(&answer(req, Status::Ok, 666), Some(key)),
            sealed(&answer(req, Status::Ok, 9), None),
        ]
    });
    let client = client_of(&[&server], |_| {});
    assert_eq!(
        client.acquire("a/1", "a/w", 0, None).unwrap().fencing_token,
        9
    );
    let copies = copies_of(&copies);
    assert!(!copies[0].verified);
    assert_eq!(copies[0].len, udplock_protocol::REQUEST_LEN_MIN);
}

/// The async client seals the same way and believes the same replies: a forged unsealed
/// grant and one sealed with another key are dropped, the sealed one is taken; FORBIDDEN
/// names the client id.
#[cfg(feature = "tokio")]
#[test]
fn the_async_client_seals_and_checks_alike() {
    let copies = Copies::default();
    let server = keyed_server(key(1), &copies, |req, _token, server_key| {
        if req.body.client() == Some(b"b/w") {
            return vec![sealed(&answer(req, Status::Forbidden, 0), Some(server_key))];
        }
        vec![
            sealed(&answer(req, Status::Ok, 666), None),
            sealed(&answer(req, Status::Ok, 666), Some(&key(2))),
            sealed(&answer(req, Status::Ok, 9), Some(server_key)),
        ]
    });
    let mut config = ClientConfig::new(vec![server.addr]).with_client_key(key(1));
    config.shards = 1;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = super::super::AsyncClient::new(config).await.unwrap();
        let lease = client.acquire("a/1", "a/w", 0, None).await.unwrap();
        assert_eq!(lease.fencing_token, 9);
        assert_eq!(client.release("a/1", "a/w").await, Ok(0));
        assert_eq!(
            client.acquire("b/1", "b/w", 0, None).await.map(drop),
            Err(LockError::Forbidden {
                client_id: Some("b/w".into())
            })
        );
        assert!(client.stats().dropped_datagrams >= 4);
    });
    let copies = copies_of(&copies);
    assert!(copies.len() >= 3, "{copies:?}");
    assert!(copies
        .iter()
        .all(|c| c.verified && c.len == AUTH_REQUEST_LEN_MIN));
}

/// The async client follows the same rule (spec §7.1.10 rule 2): an unsealed
/// UNAUTHENTICATED ends its ACQUIRE, but not its RELEASE, which stays in doubt and holds
/// back the next call on the lock.
#[cfg(feature = "tokio")]
#[test]
fn the_async_client_keeps_a_release_refused_unsealed_in_doubt() {
    let copies = Copies::default();
    let server = keyed_server(key(1), &copies, |req, _token, _key| {
        vec![sealed(&answer(req, Status::Unauthenticated, 0), None)]
    });
    let mut config = ClientConfig::new(vec![server.addr]).with_client_key(key(1));
    config.shards = 1;
    config.request_timeout_ms = 300;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = super::super::AsyncClient::new(config).await.unwrap();
        assert_eq!(
            client.acquire("a/1", "a/w", 0, None).await.map(drop),
            Err(LockError::Unauthenticated)
        );
        assert_eq!(
            client.release("a/1", "a/w").await,
            Err(LockError::ReleaseInDoubt)
        );
        assert_eq!(
            client.acquire("a/1", "a/w", 0, None).await.map(drop),
            Err(LockError::ReleaseInDoubt),
            "the doubt is not settled by an unsealed refusal"
        );
    });
}

/// A RELEASE left in doubt is kept as its sealed first copy and sent again before the next
/// call on its lock (spec §7.1.5): each resent copy is sealed anew with its own attempt, and
/// the server verifies every one.
#[test]
fn a_release_in_doubt_is_resent_sealed() {
    let copies = Copies::default();
    let answering = Arc::new(AtomicBool::new(false));
    let answer_now = Arc::clone(&answering);
    let server = keyed_server(key(1), &copies, move |req, _token, server_key| {
        let silent =
            !answer_now.load(Ordering::Relaxed) && req.body.msg_type() == MessageType::Release;
        if silent {
            return Vec::new();
        }
        vec![sealed(&answer(req, Status::Ok, 9), Some(server_key))]
    });
    let client = client_of(&[&server], |c| {
        *c = c.clone().with_client_key(key(1));
        c.request_timeout_ms = 150;
    });
    assert_eq!(client.release("a/1", "a/w"), Err(LockError::Unavailable));
    answering.store(true, Ordering::Relaxed);
    assert_eq!(
        client.acquire("a/1", "a/w", 0, None).unwrap().fencing_token,
        9,
        "the doubt settled first"
    );
    let copies = copies_of(&copies);
    let releases: Vec<&SeenCopy> = copies
        .iter()
        .filter(|c| c.msg_type == MessageType::Release)
        .collect();
    assert!(releases.len() >= 2, "{copies:?}");
    assert!(releases.last().unwrap().attempt >= 1);
    assert!(copies.iter().all(|c| c.verified), "{copies:?}");
    assert_eq!(copies.last().unwrap().msg_type, MessageType::Acquire);
}
