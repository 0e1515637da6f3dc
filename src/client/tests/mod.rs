//! Unit tests of the client against scripted fake servers on loopback, one file per
//! concern; the fake server and the reply builders they share are here.

mod admin;
mod api;
mod doubts;
mod guard;
mod holds;
mod keys;
mod limits;
mod operation;
mod receiving;
mod routing;

use super::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use udplock_protocol::{
    shard_of, Hint, MessageType, Reply, Request, Status, DATAGRAM_LEN_MAX, SHARDS_DEFAULT,
    SHARDS_MAX,
};

use crate::core::call::{Call, CallRequest};
use crate::core::retransmit::RetransmitConfig;

/// What a fake server's handler sees: a request (with its receipt time), or an idle tick.
enum Event<'a> {
    Request(Request<'a>, BootInstant),
    Idle,
}

/// A scripted stand-in for `udplock server`: decodes requests with the codec and sends
/// whatever datagrams the handler returns to the last client address.
struct FakeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn spawn<F>(mut handler: F) -> FakeServer
    where
        F: FnMut(Event<'_>) -> Vec<Vec<u8>> + Send + 'static,
    {
        FakeServer::spawn_raw(move |datagram| match datagram {
            Some(bytes) => match Request::decode(bytes) {
                Ok(req) => handler(Event::Request(req, BootInstant::now())),
                Err(_) => Vec::new(),
            },
            None => handler(Event::Idle),
        })
    }

    /// The same over raw datagrams (`None`: an idle tick), for the requests the lock codec
    /// does not read (the operators' queries).
    fn spawn_raw<F>(mut handler: F) -> FakeServer
    where
        F: FnMut(Option<&[u8]>) -> Vec<Vec<u8>> + Send + 'static,
    {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(StdDuration::from_millis(1)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut peer = None;
            while !stop_flag.load(Ordering::Relaxed) {
                let out = match socket.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        peer = Some(from);
                        handler(Some(&buf[..len]))
                    }
                    Err(_) => handler(None),
                };
                if let Some(peer) = peer {
                    for d in out {
                        socket.send_to(&d, peer).unwrap();
                    }
                }
            }
        });
        FakeServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply a server would send to `req`, adjusted by `edit`. With status OK it starts as
/// a genuine one (spec §7.1.4 rule 6: a grant or renewal of one hold under token 5, a
/// release of it), which `edit` may change.
fn reply_to(req: &Request<'_>, status: Status, edit: impl FnOnce(&mut Reply<'_>)) -> Vec<u8> {
    reply_with_holder(req, status, b"", edit)
}

fn reply_with_holder(
    req: &Request<'_>,
    status: Status,
    holder: &[u8],
    edit: impl FnOnce(&mut Reply<'_>),
) -> Vec<u8> {
    let mut reply = Reply {
        holder,
        ..Reply::bare(
            req.body.msg_type().reply_type().unwrap(),
            req.session_id,
            req.request_id,
            req.attempt,
            status,
        )
    };
    match (status, req.body.msg_type()) {
        (Status::Ok, MessageType::Acquire | MessageType::Renew) => {
            reply.hold_count = 1;
            reply.fencing_token = 5;
        }
        (Status::Ok, MessageType::Release) => reply.fencing_token = 5,
        _ => {}
    }
    edit(&mut reply);
    let mut buf = [0u8; DATAGRAM_LEN_MAX];
    let len = reply.encode(&mut buf).unwrap();
    buf[..len].to_vec()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn client_for(server: &FakeServer, edit: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig::new(vec![server.addr]);
    edit(&mut config);
    Client::new(config).unwrap()
}

/// What one fake node saw: (session id, request id, attempt, resource) per request.
type Seen = Arc<Mutex<Vec<(u64, u64, u16, Vec<u8>)>>>;

/// A fake cluster node that logs every request in `seen` and answers with `answer`.
fn node<F>(seen: &Seen, mut answer: F) -> FakeServer
where
    F: FnMut(&Request<'_>) -> Vec<Vec<u8>> + Send + 'static,
{
    let log = Arc::clone(seen);
    FakeServer::spawn(move |event| {
        let Event::Request(req, _) = event else {
            return Vec::new();
        };
        log.lock().unwrap().push((
            req.session_id,
            req.request_id,
            req.attempt,
            req.body.resource().to_vec(),
        ));
        answer(&req)
    })
}

fn seen(log: &Seen) -> Vec<(u64, u64, u16, Vec<u8>)> {
    log.lock().unwrap().clone()
}

/// The answer of the shard's leader: OK, one hold, token 5.
fn grant(req: &Request<'_>) -> Vec<u8> {
    reply_to(req, Status::Ok, |r| {
        r.hold_count = 1;
        r.fencing_token = 5;
        r.lease_ms = 1_000;
    })
}

fn not_leader(req: &Request<'_>, leader: Option<SocketAddr>) -> Vec<u8> {
    reply_to(req, Status::NotLeader, |r| {
        if let Some(addr) = leader {
            r.hint = Hint::Leader(addr);
        }
    })
}

/// A client of these nodes with one shard (every resource starts at `servers[0]`) and a
/// fixed 100 ms RTO, so that a slow test machine causes no retransmission the test does
/// not expect.
fn client_of(servers: &[&FakeServer], edit: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig::new(servers.iter().map(|s| s.addr).collect());
    config.shards = 1;
    config.retransmit = fixed_rto(Duration::from_millis(100));
    edit(&mut config);
    Client::new(config).unwrap()
}

/// Retransmission settings with one RTO throughout: RTT samples do not move it and it never
/// doubles, so the pace of the copies is the test's, not the RTT estimator's.
fn fixed_rto(rto: Duration) -> RetransmitConfig {
    RetransmitConfig {
        rto_initial: rto,
        rto_min: rto,
        rto_max: rto,
    }
}

/// A node that shares a late-bound address (a peer's, or the client's) with a handler.
fn late_addr() -> (Arc<OnceLock<SocketAddr>>, Arc<OnceLock<SocketAddr>>) {
    let addr = Arc::new(OnceLock::new());
    (Arc::clone(&addr), addr)
}
