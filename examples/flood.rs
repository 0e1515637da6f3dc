//! A flood of lock requests against running nodes, for measuring memory per node under
//! load (README, "Memory per node"): every datagram goes to every node given (each shard's
//! leader takes its own, the others answer NOT_LEADER), paced, and the answers are counted
//! by status.
//!
//! ```text
//! cargo run --release --example flood -- MODE COUNT RATE_PER_S ADDR[,ADDR...]
//! ```
//!
//! MODE `resources`: COUNT ACQUIREs of distinct resources with 255-byte names and a 1 h TTL,
//! from 64 sessions. MODE `sessions`: COUNT RELEASEs of a lock nobody holds, each from a new
//! session (each leaves a session and a remembered answer). RATE_PER_S: requests a second
//! (each sent to every node).
//!
//! The flood behaves as an attacker at its own address would against address validation
//! (spec §7.1.9): a RETRY is answered at once by the same request with the node's token, and
//! later requests of that session to that node carry the token. (Spoofed sources would get
//! no further than the RETRY; this measures what a real address can do.)

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udplock_protocol::{AddressToken, Hint, Reply, Request, RequestBody, Status, DATAGRAM_LEN_MAX};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: flood resources|sessions COUNT RATE_PER_S ADDR[,ADDR...]");
        std::process::exit(2);
    }
    let mode = args[0].clone();
    let count: u64 = args[1].parse().expect("COUNT");
    let rate: u64 = args[2].parse().expect("RATE_PER_S");
    let servers: Vec<SocketAddr> = args[3]
        .split(',')
        .map(|a| a.parse().expect("ADDR"))
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    // (node, session) -> the token that node gave the session.
    let tokens: Arc<Mutex<HashMap<(SocketAddr, u64), AddressToken>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (socket, statuses, tokens, done, mode) = (
            socket.try_clone().unwrap(),
            statuses.clone(),
            tokens.clone(),
            done.clone(),
            mode.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut out = [0u8; DATAGRAM_LEN_MAX];
            while !done.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let status = match Reply::decode(&buf[..len]) {
                    Ok(reply) => {
                        if let (Status::Retry, Hint::AddressToken(token)) =
                            (reply.status, reply.hint)
                        {
                            tokens
                                .lock()
                                .unwrap()
                                .insert((from, reply.session_id), token);
                            if let Some(n) = number_of(&mode, reply.session_id, reply.request_id) {
                                let len = encode(&mode, n, Some(&token), &mut out);
                                let _ = socket.send_to(&out[..len], from);
                            }
                        }
                        format!("{:?}", reply.status)
                    }
                    Err(e) => format!("undecodable {e:?}"),
                };
                *statuses.lock().unwrap().entry(status).or_default() += 1;
            }
        })
    };
    let start = Instant::now();
    let mut out = [0u8; DATAGRAM_LEN_MAX];
    for n in 0..count {
        // Pace: request n leaves at n / rate seconds.
        let due = Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let session_id = ids(&mode, n).0;
        for server in &servers {
            let token = tokens.lock().unwrap().get(&(*server, session_id)).copied();
            let len = encode(&mode, n, token.as_ref(), &mut out);
            let _ = socket.send_to(&out[..len], server);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
    println!(
        "sent {count} requests to {} nodes in {:.1} s; answers by status: {:?}",
        servers.len(),
        start.elapsed().as_secs_f64(),
        statuses.lock().unwrap()
    );
}

const SESSIONS_BASE: u64 = 0x5E55_0000_0000;

/// Request `n`'s (session id, request id).
fn ids(mode: &str, n: u64) -> (u64, u64) {
    match mode {
        "resources" => (1 + n % 64, 1 + n / 64),
        "sessions" => (SESSIONS_BASE + n, 1),
        _ => panic!("MODE is resources or sessions"),
    }
}

/// The request number whose ids these are (the inverse of [`ids`]).
fn number_of(mode: &str, session_id: u64, request_id: u64) -> Option<u64> {
    match mode {
        "resources" => (1..=64)
            .contains(&session_id)
            .then(|| (request_id.checked_sub(1)? * 64).checked_add(session_id - 1))
            .flatten(),
        _ => session_id.checked_sub(SESSIONS_BASE),
    }
}

/// Encodes request `n` into `out`, with `token` if given; returns its length.
fn encode(mode: &str, n: u64, token: Option<&AddressToken>, out: &mut [u8]) -> usize {
    let mut resource = format!("flood/{n:012}/").into_bytes();
    resource.resize(255, b'x');
    let (session_id, request_id) = ids(mode, n);
    let body = match mode {
        "resources" => RequestBody::Acquire {
            resource: &resource,
            client: b"flood",
            wait_ms: 0,
            ttl_ms: 3_600_000,
        },
        _ => RequestBody::Release {
            resource: &resource[..40],
            client: b"flood",
        },
    };
    let request = Request {
        session_id,
        request_id,
        attempt: 0,
        body,
    };
    request.encode_with_token(out, token).expect("encodes")
}
