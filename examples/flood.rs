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

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udplock_protocol::{Reply, Request, RequestBody, DATAGRAM_LEN_MAX};

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
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (socket, statuses, done) =
            (socket.try_clone().unwrap(), statuses.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok(len) = socket.recv(&mut buf) {
                    let status = match Reply::decode(&buf[..len]) {
                        Ok(reply) => format!("{:?}", reply.status),
                        Err(e) => format!("undecodable {e:?}"),
                    };
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                }
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
        let mut resource = format!("flood/{n:012}/").into_bytes();
        resource.resize(255, b'x');
        let (session_id, request_id, body) = match mode.as_str() {
            "resources" => (
                1 + n % 64,
                1 + n / 64,
                RequestBody::Acquire {
                    resource: &resource,
                    client: b"flood",
                    wait_ms: 0,
                    ttl_ms: 3_600_000,
                },
            ),
            "sessions" => (
                0x5E55_0000_0000 + n,
                1,
                RequestBody::Release {
                    resource: &resource[..40],
                    client: b"flood",
                },
            ),
            _ => panic!("MODE is resources or sessions"),
        };
        let request = Request {
            session_id,
            request_id,
            attempt: 0,
            body,
        };
        let len = request.encode(&mut out).expect("encodes");
        for server in &servers {
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
