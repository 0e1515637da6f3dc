//! Retransmission through a lossy, duplicating, reordering relay: every operation completes,
//! and no retransmitted request takes effect twice (hold counts stay at one, releases free).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use udplock::{Client, ClientConfig};

use super::start_node;

/// Forwards datagrams between one client and a node, dropping `loss` of them in each
/// direction, sending `dup` of them twice, and holding some back to deliver after the next
/// one (reordering). Also used by it::guard.
pub(super) struct Relay {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub(super) dropped: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub(super) fn start(node: SocketAddr, loss: f64, dup: f64, seed: u64) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (front, back) = (Arc::new(front), Arc::new(back));
        let mut threads = Vec::new();
        for direction in 0..2u64 {
            let (front, back, client, stop, dropped) = (
                front.clone(),
                back.clone(),
                client.clone(),
                stop.clone(),
                dropped.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed + direction);
                let mut held: Option<Vec<u8>> = None;
                let mut buf = [0u8; 2048];
                let (from_sock, to_sock) = if direction == 0 {
                    (&front, &back)
                } else {
                    (&back, &front)
                };
                while !stop.load(Ordering::Acquire) {
                    let Ok((n, from)) = from_sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let to = if direction == 0 {
                        *client.lock().unwrap() = Some(from);
                        node
                    } else {
                        match *client.lock().unwrap() {
                            Some(c) => c,
                            None => continue,
                        }
                    };
                    if rng.gen_bool(loss) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let copies = if rng.gen_bool(dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        let _ = to_sock.send_to(&buf[..n], to);
                    }
                    // Reorder: sometimes deliver the previously held datagram after this one,
                    // sometimes hold this one back.
                    if let Some(old) = held.take() {
                        let _ = to_sock.send_to(&old, to);
                    } else if rng.gen_bool(0.1) {
                        held = Some(buf[..n].to_vec());
                    }
                }
            }));
        }
        Relay {
            addr,
            stop,
            dropped,
            threads,
        }
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

#[test]
fn operations_complete_exactly_once_through_a_lossy_relay() {
    let node = start_node();
    let relay = Relay::start(node.local_addr(), 0.25, 0.1, 0x5eed);
    let mut config = ClientConfig::new(vec![relay.addr]);
    config.request_timeout_ms = 10_000;
    let client = Arc::new(Client::new(config).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let resource = format!("lossy/{t}");
                let me = format!("thread-{t}");
                let mut last_token = 0;
                for _ in 0..50 {
                    let lease = client
                        .acquire(&resource, &me, 10_000, Some(30_000))
                        .unwrap();
                    // A duplicate acquire taking effect would show as a second re-entrant hold.
                    assert_eq!(lease.hold_count, 1);
                    assert!(lease.fencing_token > last_token);
                    last_token = lease.fencing_token;
                    // A duplicate release taking effect would free someone else's later hold;
                    // a lost one would leave this hold in place for the next acquire.
                    assert_eq!(client.release(&resource, &me).unwrap(), 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        relay.dropped.load(Ordering::Relaxed) > 20,
        "the relay lost too little to test anything"
    );
    // The node saw duplicates (retransmits and relay copies) and still holds nothing.
    let direct = Client::connect(&[node.local_addr()]).unwrap();
    for t in 0..4 {
        let status = direct.status(&format!("lossy/{t}")).unwrap();
        assert_eq!(
            (status.hold_count, status.waiter_count),
            (0, 0),
            "{status:?}"
        );
    }
}
