//! Many threads, one `Client`: the client is `Send + Sync` and is meant to be shared (one
//! socket; each thread's reply is read by that thread whenever possible, so a call costs no
//! thread hop).
//!
//! Eight threads take turns on one lock, each with its own client id, and increment a counter
//! that only the holder may touch; a flag checks that no two threads are ever inside at once.
//!
//! Runs against a single node started in this process:
//! `cargo run --release --example threads`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use udplock::single::{SingleConfig, SingleNode};
use udplock::Client;

const THREADS: usize = 8;
const ROUNDS: u64 = 200;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = SingleNode::start(SingleConfig::new("127.0.0.1:0".parse()?))?;
    let client = Arc::new(Client::connect(&[node.local_addr()])?);
    let inside = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));

    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let (client, inside, counter) = (client.clone(), inside.clone(), counter.clone());
            thread::spawn(move || -> Result<(), udplock::LockError> {
                // A client id per thread: the same id on two threads would be one re-entrant
                // holder, not two contenders.
                let me = format!("thread-{i}");
                for _ in 0..ROUNDS {
                    // Wait up to 5 s in the server's FIFO queue; a 5 s lease.
                    let lease = client.acquire("counter", &me, 5_000, Some(5_000))?;
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    counter.fetch_add(1, Ordering::Relaxed);
                    assert!(lease.is_valid());
                    inside.store(false, Ordering::SeqCst);
                    client.release("counter", &me)?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker panicked")?;
    }
    let elapsed = started.elapsed();

    let total = counter.load(Ordering::Relaxed);
    assert_eq!(total, THREADS as u64 * ROUNDS);
    println!(
        "{THREADS} threads, {total} turns in {elapsed:.2?}: {:.0} acquire+release per second; \
         {} retransmits",
        total as f64 / elapsed.as_secs_f64(),
        client.stats().retransmits
    );
    Ok(())
}
