//! A RELEASE whose outcome the client cannot rule out stays a doubt (spec §7.1.5), end to
//! end: a real node, and a UDP relay between the client and the node that holds back one
//! copy of a request and delivers it when the test says so. Nothing here waits for time to
//! pass except the client's own deadlines; the test waits for states (a waiter queued, a lock
//! freed), never for a duration.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udplock::single::{SingleConfig, SingleNode};
use udplock::{Client, ClientConfig, LockError};
use udplock_protocol::{MessageType, Reply, Request, Status};

/// What the relay does with one request datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Forward,
    /// Keep it; the test delivers it later with [`Relay::deliver_held`].
    Hold,
    Drop,
}

/// A request copy as the relay saw it.
#[derive(Clone, Debug)]
struct Seen {
    msg_type: MessageType,
    request_id: u64,
    attempt: u16,
    resource: Vec<u8>,
}

type Rule = Box<dyn FnMut(&Seen) -> Verdict + Send>;

#[derive(Default)]
struct RelayState {
    client: Option<SocketAddr>,
    rule: Option<Rule>,
    held: Vec<Vec<u8>>,
    requests: Vec<Seen>,
    /// (request id, status) of every reply passed back to the client.
    replies: Vec<(u64, Status)>,
}

/// Forwards datagrams between one client and one node, asking `rule` about every request.
struct Relay {
    addr: SocketAddr,
    back: Arc<UdpSocket>,
    node: SocketAddr,
    state: Arc<Mutex<RelayState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(node: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        }
        let state: Arc<Mutex<RelayState>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (front, back, state, stop) =
                (front.clone(), back.clone(), state.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Acquire) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    let datagram = &buf[..n];
                    let mut state = state.lock().unwrap();
                    state.client = Some(from);
                    let verdict = match Request::decode(datagram) {
                        Ok(req) => {
                            let seen = Seen {
                                msg_type: req.body.msg_type(),
                                request_id: req.request_id,
                                attempt: req.attempt,
                                resource: req.body.resource().to_vec(),
                            };
                            let verdict = match state.rule.as_mut() {
                                Some(rule) => rule(&seen),
                                None => Verdict::Forward,
                            };
                            state.requests.push(seen);
                            verdict
                        }
                        Err(_) => Verdict::Forward,
                    };
                    match verdict {
                        Verdict::Forward => {
                            let _ = back.send_to(datagram, node);
                        }
                        Verdict::Hold => state.held.push(datagram.to_vec()),
                        Verdict::Drop => {}
                    }
                }
            }));
        }
        {
            let (front, back, state, stop) =
                (front.clone(), back.clone(), state.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Acquire) {
                    let Ok((n, _)) = back.recv_from(&mut buf) else {
                        continue;
                    };
                    let mut state = state.lock().unwrap();
                    if let Ok(reply) = Reply::decode(&buf[..n]) {
                        state.replies.push((reply.request_id, reply.status));
                    }
                    if let Some(client) = state.client {
                        let _ = front.send_to(&buf[..n], client);
                    }
                }
            }));
        }
        let addr = front.local_addr().unwrap();
        Relay {
            addr,
            back,
            node,
            state,
            stop,
            threads,
        }
    }

    fn set_rule(&self, rule: impl FnMut(&Seen) -> Verdict + Send + 'static) {
        self.state.lock().unwrap().rule = Some(Box::new(rule));
    }

    /// Delivers every held copy to the node now, in the order they were held.
    fn deliver_held(&self) -> usize {
        let held = std::mem::take(&mut self.state.lock().unwrap().held);
        for d in &held {
            self.back.send_to(d, self.node).unwrap();
        }
        held.len()
    }

    fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    fn replies(&self) -> Vec<(u64, Status)> {
        self.state.lock().unwrap().replies.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits until `condition` holds (a state, not a duration; the bound only turns a hang into
/// a failure).
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Issue 7 item 2. A RELEASE answered only OVERLOADED (which no server remembers) until its
/// deadline may still take effect through a copy in flight. Here it does: the node queued an
/// ACQUIRE of the client's lane that the client had given up on, so every RELEASE copy the
/// node sees is answered OVERLOADED (one queued request per session), while the relay holds
/// back the first copy and delivers it once the queue entry is gone. The node executes it and
/// frees the lock, and another client is granted it. The caller of `release` must therefore
/// have been told that the outcome is unknown (it must not go on believing it holds the lock),
/// and the client must settle that RELEASE before it touches the lock again.
#[test]
fn a_release_answered_only_overloaded_stays_a_doubt_until_settled() {
    let mut config = SingleConfig::new("127.0.0.1:0".parse().unwrap());
    // One queued ACQUIRE per session: a second request of that session gets OVERLOADED.
    config.table.answers_per_session_max = 1;
    let node = SingleNode::start(config).unwrap();
    let relay = Relay::start(node.local_addr());
    let mut c_config = ClientConfig::new(vec![relay.addr]);
    // (Also the deadline of C's last acquire, which first settles its doubt: generous.)
    c_config.grace_ms = 1_000;
    c_config.request_timeout_ms = 300;
    let c = Client::new(c_config).unwrap();
    let direct = || Client::connect(&[node.local_addr()]).unwrap();
    let (d, e) = (direct(), direct());

    d.acquire("busy", "d", 0, Some(600_000)).unwrap();
    let held = c.acquire("lock", "c", 0, Some(600_000)).unwrap();
    assert!(held.is_valid());

    // C asks for "busy"; the first copy is held back and the others are lost, so C gives up.
    let mut first = true;
    relay.set_rule(
        move |seen| match (seen.msg_type, seen.resource.as_slice()) {
            (MessageType::Acquire, b"busy") if std::mem::take(&mut first) => Verdict::Hold,
            (MessageType::Acquire, b"busy") => Verdict::Drop,
            _ => Verdict::Forward,
        },
    );
    assert_eq!(
        c.acquire("busy", "c", 2_500, Some(1_000)),
        Err(LockError::Unavailable)
    );
    // The late copy reaches the node, which queues it in C's session behind D.
    assert_eq!(relay.deliver_held(), 1);
    wait_for("C's late ACQUIRE queued", || {
        d.status("busy").is_ok_and(|s| s.waiter_count == 1)
    });

    // C releases "lock" in the same session: the first copy is held back, the others are
    // answered OVERLOADED until C's deadline.
    let mut first = true;
    relay.set_rule(
        move |seen| match (seen.msg_type, seen.resource.as_slice()) {
            (MessageType::Release, b"lock") if std::mem::take(&mut first) => Verdict::Hold,
            _ => Verdict::Forward,
        },
    );
    let released = c.release("lock", "c");
    let release_id = relay
        .requests()
        .iter()
        .find(|s| s.msg_type == MessageType::Release)
        .map(|s| s.request_id)
        .unwrap();
    assert!(
        relay
            .replies()
            .iter()
            .any(|&(id, status)| id == release_id && status == Status::Overloaded),
        "the situation never arose: the release was not answered OVERLOADED ({released:?})"
    );
    let error = released.expect_err("the node never executed a copy before the deadline");
    // What the caller may believe: an error whose outcome is known left the hold in place.
    let c_believes_it_holds = error.outcome_known() && held.is_valid();

    // The queued ACQUIRE leaves the queue (granted to C's lane, which no longer listens), and
    // then the held RELEASE copy arrives: the node executes it and frees the lock.
    d.release("busy", "d").unwrap();
    assert_eq!(relay.deliver_held(), 1);
    wait_for(
        "the late RELEASE executed",
        || !matches!(e.status("lock"), Ok(s) if s.holder.is_some()),
    );
    let e_lease = e.acquire("lock", "e", 0, Some(600_000)).unwrap();
    assert!(
        !(c_believes_it_holds && e_lease.is_valid()),
        "two holders of \"lock\": C was told {error:?} (outcome known, so still held) and E \
         was granted it"
    );

    // The doubt is settled before C touches the lock again: the same RELEASE goes out first
    // (same request id, the next attempt number), then C's new ACQUIRE.
    let before = relay.requests().len();
    let last_attempt = relay
        .requests()
        .iter()
        .filter(|s| s.request_id == release_id)
        .map(|s| s.attempt)
        .max()
        .unwrap();
    assert_eq!(
        c.acquire("lock", "c", 0, None),
        Err(LockError::LockAcquisitionTimeout)
    );
    let after: Vec<Seen> = relay.requests()[before..].to_vec();
    assert_eq!(after[0].request_id, release_id, "{after:?}");
    assert_eq!(after[0].attempt, last_attempt + 1, "{after:?}");
    let acquire = after
        .iter()
        .position(|s| s.msg_type == MessageType::Acquire);
    assert!(
        acquire.is_some_and(|i| after[..i].iter().all(|s| s.request_id == release_id)),
        "{after:?}"
    );

    // The ACQUIRE C gave up on was granted after all, when D released "busy": a phantom hold
    // of C's client id that C never believed in. Like any hold it ends at its TTL (1 s), and
    // the lock goes on to the next waiter (spec §7.1.5).
    let next = d.acquire("busy", "d", 10_000, Some(1_000)).unwrap();
    assert_eq!(next.hold_count, 1);
}
