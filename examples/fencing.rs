//! Fencing a write to storage: why a lease alone is not enough, and what the token adds.
//!
//! A holder can stall (a GC pause, a swapped-out process, a suspended VM) past its lease; the
//! lock service then grants the lock to someone else, and the stalled holder wakes up still
//! believing it holds the lock. The fencing token, which strictly increases per resource,
//! lets the storage itself refuse the late write: it remembers the highest token it has seen
//! and rejects anything older (Kleppmann, "How to do distributed locking", 2016).
//!
//! Runs against a single node started in this process:
//! `cargo run --example fencing`.

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use udplock::single::{SingleConfig, SingleNode};
use udplock::Client;

/// A storage service that checks fencing tokens: every write names the token of the lock it
/// was made under, and a token lower than one already seen is refused.
struct FencedStore {
    /// (highest token seen, the value).
    state: Mutex<(u64, String)>,
}

impl FencedStore {
    fn write(&self, token: u64, value: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if token < state.0 {
            return Err(format!(
                "refused {value:?}: token {token} is older than {} (a newer holder wrote)",
                state.0
            ));
        }
        *state = (token, value.to_owned());
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = SingleNode::start(SingleConfig::new("127.0.0.1:0".parse()?))?;
    let client = Client::connect(&[node.local_addr()])?;
    let store = FencedStore {
        state: Mutex::new((0, String::new())),
    };

    // Worker A takes the lock with a short lease (300 ms)...
    let a = client.acquire("report", "worker-a", 1_000, Some(300))?;
    println!("A holds the lock, token {}", a.fencing_token);

    // ...and stalls past it. The lease runs out; the server frees the lock.
    thread::sleep(Duration::from_millis(500));
    assert!(!a.is_valid(), "A's own lease says it is over");

    // Worker B waits for the lock, gets it with a higher token, and writes.
    let b = client.acquire("report", "worker-b", 2_000, Some(10_000))?;
    println!("B holds the lock, token {}", b.fencing_token);
    assert!(b.fencing_token > a.fencing_token);
    store.write(b.fencing_token, "B's report")?;

    // A wakes up and, had it not checked `is_valid()`, would write now: the storage refuses.
    match store.write(a.fencing_token, "A's late report") {
        Ok(()) => unreachable!("the store accepted a stale holder's write"),
        Err(why) => println!("storage: {why}"),
    }

    client.release("report", "worker-b")?;
    println!("stored: {:?}", store.state.lock().unwrap().1);
    Ok(())
}
